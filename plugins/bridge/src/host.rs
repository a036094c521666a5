//! Host-side work: the bridge, the veth pair, bridge-port flags, gateway addresses, forwarding.

use crate::config::BridgeConf;
use cni_common::error::CniError;
use cni_common::netlink::{format_mac, random_veth_name, AddrOpts, BrPortFlags, IpFamily, Link, Netlink, VethSpec};
use cni_common::netns::NetNs;
use cni_common::sysctl;
use ipnetwork::IpNetwork;

/// How many random host-side names are tried when one is taken.
const VETH_NAME_TRIES: usize = 10;

/// The bridge as found or created.
pub struct BridgeLink {
    pub link: Link,
    pub created: bool,
}

/// Find the bridge, creating it when missing. A link of that name that is not a bridge is an error.
pub fn ensure_bridge(nl: &mut Netlink, conf: &BridgeConf) -> Result<BridgeLink, CniError> {
    let (link, created) = match nl.link_by_name(&conf.bridge)? {
        Some(l) => (l, false),
        None => match nl.create_bridge(&conf.bridge, conf.mtu, conf.uses_vlans()) {
            Ok(()) => (fetch(nl, &conf.bridge)?, true),
            // Created by a concurrent ADD between our lookup and our create.
            Err(e) if e.is_exists() => (fetch(nl, &conf.bridge)?, false),
            Err(e) if conf.uses_vlans() && e.is_unsupported() => {
                return Err(CniError::UnsupportedKernel(format!(
                    "bridge {:?}: VLAN filtering (fields \"vlan\"/\"vlanTrunk\") is not supported by this kernel: {e}",
                    conf.bridge
                )))
            }
            Err(e) => return Err(e.into()),
        },
    };
    if link.kind.as_deref() != Some("bridge") {
        return Err(CniError::config(format!(
            "field \"bridge\": {:?} already exists and is not a bridge (it is a {} link)",
            conf.bridge,
            link.kind.as_deref().unwrap_or("plain")
        )));
    }
    if created {
        // Freeze the bridge MAC: otherwise it follows the lowest port MAC and changes as ports come and go.
        if let Some(mac) = link.mac {
            nl.set_mac(link.index, mac)?;
        }
        // A bridge with router advertisements accepted would learn routes from containers.
        let _ = sysctl::write_if_different(&format!("net/ipv6/conf/{}/accept_ra", conf.bridge), "0");
    } else if conf.uses_vlans() {
        nl.set_bridge_vlan_filtering(link.index, true).map_err(|e| vlan_error(conf, e))?;
    }
    if !link.up {
        nl.set_up(link.index)?;
    }
    if conf.promisc && !link.promisc {
        nl.set_promisc(link.index, true)?;
    }
    Ok(BridgeLink { link, created })
}

fn fetch(nl: &mut Netlink, name: &str) -> Result<Link, CniError> {
    nl.link_by_name(name)?.ok_or_else(|| CniError::netlink(format!("find bridge {name:?}"), "vanished after creation"))
}

fn vlan_error(conf: &BridgeConf, e: cni_common::netlink::NlError) -> CniError {
    if e.is_unsupported() {
        CniError::UnsupportedKernel(format!(
            "bridge {:?}: VLAN filtering (fields \"vlan\"/\"vlanTrunk\") is not supported by this kernel: {e}",
            conf.bridge
        ))
    } else {
        e.into()
    }
}

/// Create the veth pair: host end (random `veth` + 8 hex name) in this namespace, enslaved to the
/// bridge at creation but down; container end named `ifname` created directly in `netns`.
///
/// The host end comes up only once the container end is up ([`crate::plugin`]). Up at creation,
/// before its peer, it joins the bridge as a forwarding port (its operational state is not known
/// yet); when the kernel's link-state worker runs before the container end is up, as it often does
/// while other ADDs run, it finds no carrier, disables the port and deactivates its queues (an
/// expedited RCU grace period under RTNL, which every other ADD's requests wait behind), and the
/// port is enabled again when the container end comes up. Brought up after its peer, it has its
/// carrier at once and the port is enabled once. (A cpu-clock profile of 400 ADDs at 8 workers:
/// no port disable and no queue deactivation left, the link-state worker's samples halved.)
pub fn create_veth(
    nl: &mut Netlink,
    conf: &BridgeConf,
    bridge: &Link,
    netns: &NetNs,
    ifname: &str,
) -> Result<Link, CniError> {
    for _ in 0..VETH_NAME_TRIES {
        let name = random_veth_name();
        let spec = VethSpec {
            name: &name,
            peer_name: ifname,
            peer_netns: Some(netns.fd()),
            mtu: conf.mtu,
            mac: None,
            peer_mac: conf.mac,
            master: Some(bridge.index),
            up: false,
        };
        match nl.create_veth(&spec) {
            Ok(Some(echoed)) => return Ok(echoed),
            Ok(None) => {
                return nl
                    .link_by_name(&name)?
                    .ok_or_else(|| CniError::netlink(format!("find veth {name:?}"), "vanished after creation"))
            }
            Err(e) if e.is_exists() => {
                // Either our random name or the container's interface name is taken: find out which.
                if container_has(netns, ifname)? {
                    return Err(CniError::Conflict(format!(
                        "container interface {ifname:?} already exists in {}",
                        netns.path().display()
                    )));
                }
            }
            Err(e) => return Err(e.into()),
        }
    }
    Err(CniError::netlink("create veth", format!("no free host-side name after {VETH_NAME_TRIES} tries")))
}

fn container_has(netns: &NetNs, ifname: &str) -> Result<bool, CniError> {
    netns.run(|| Ok(Netlink::open()?.link_by_name(ifname)?.is_some()))
}

/// Bridge-port settings of the host veth: no IPv6 link-local address; hairpin, isolation, VLANs.
pub fn configure_port(nl: &mut Netlink, conf: &BridgeConf, host: &Link) -> Result<(), CniError> {
    // A bridge port needs no address of its own. Without a link-local address the port sends no
    // duplicate address detection, multicast reports or router solicitations (which the bridge
    // floods to every other port), and adds no `fe80::/64` route to the host's IPv6 table, in
    // which the kernel walks every such route each time a port comes up. Before the container
    // end comes up, so the kernel never starts any of it. A kernel without IPv6 has nothing to
    // stop.
    nl.set_ipv6_no_link_local(host.index)?;
    if conf.hairpin || conf.port_isolation {
        let flags = BrPortFlags {
            hairpin: conf.hairpin.then_some(true),
            isolated: conf.port_isolation.then_some(true),
        };
        nl.set_brport(host.index, &flags)?;
    }
    if conf.uses_vlans() {
        if !conf.preserve_default_vlan {
            nl.bridge_vlan_del(host.index, 1).map_err(|e| vlan_error(conf, e))?;
        }
        if conf.vlan != 0 {
            nl.bridge_vlan_add(host.index, conf.vlan, true, true).map_err(|e| vlan_error(conf, e))?;
        }
        for &vid in &conf.vlan_trunk {
            nl.bridge_vlan_add(host.index, vid, false, false).map_err(|e| vlan_error(conf, e))?;
        }
    }
    Ok(())
}

/// Put the gateway addresses on the bridge. An address of the same family already there that is
/// different (IPv4) or in the same subnet (IPv6) is replaced with `forceAddress`, else an error.
pub fn set_gateway_addrs(nl: &mut Netlink, conf: &BridgeConf, bridge: &Link, gws: &[IpNetwork]) -> Result<(), CniError> {
    if gws.is_empty() {
        return Ok(());
    }
    // Only the families of the gateways matter.
    let v4 = gws.iter().any(|g| g.is_ipv4());
    let v6 = gws.iter().any(|g| g.is_ipv6());
    let family = match (v4, v6) {
        (true, false) => Some(IpFamily::V4),
        (false, true) => Some(IpFamily::V6),
        _ => None,
    };
    let existing = nl.addrs(Some(bridge.index), family)?;
    for gw in gws {
        if existing.iter().any(|a| a.addr.ip() == gw.ip() && a.addr.prefix() == gw.prefix()) {
            continue;
        }
        let conflicting: Vec<IpNetwork> = existing
            .iter()
            .map(|a| a.addr)
            .filter(|a| a.is_ipv4() == gw.is_ipv4())
            .filter(|a| if gw.is_ipv4() { true } else { a.contains(gw.ip()) || gw.contains(a.ip()) })
            .filter(|a| !a.ip().is_loopback() && !is_link_local(a))
            .collect();
        if gw.is_ipv4() || !conflicting.is_empty() {
            if let Some(other) = conflicting.first() {
                if !conf.force_address {
                    return Err(CniError::Conflict(format!(
                        "bridge {:?} already has IP address {other}, different from gateway {gw} (set \"forceAddress\" to replace it)",
                        conf.bridge
                    )));
                }
                for old in &conflicting {
                    nl.del_addr(bridge.index, *old)?;
                }
            }
        }
        match nl.add_addr(bridge.index, *gw, AddrOpts { nodad: true, ..Default::default() }) {
            Ok(()) => {}
            // A concurrent ADD put the same gateway there.
            Err(e) if e.is_exists() => {}
            Err(e) => {
                return Err(CniError::netlink(format!("add gateway address {gw} to bridge {:?}", conf.bridge), e))
            }
        }
    }
    Ok(())
}

fn is_link_local(a: &IpNetwork) -> bool {
    match a.ip() {
        std::net::IpAddr::V6(v6) => (v6.segments()[0] & 0xffc0) == 0xfe80,
        std::net::IpAddr::V4(v4) => v4.is_link_local(),
    }
}

/// Turn on forwarding for the families the gateway serves. Read over netlink, written (when off)
/// through `/proc/sys`: there, the lookup of `net/ipv4` walks the entry of every namespace that
/// has looked up one of its keys (runtimes set such keys in every pod), the host's oldest of all.
pub fn enable_forwarding(nl: &mut Netlink, gws: &[IpNetwork]) -> Result<(), CniError> {
    for (family, key) in [(IpFamily::V4, "net/ipv4/ip_forward"), (IpFamily::V6, "net/ipv6/conf/all/forwarding")] {
        if !gws.iter().any(|g| IpFamily::of(&g.ip()) == family) {
            continue;
        }
        match nl.forwarding(family)? {
            Some(true) => {}
            Some(false) => sysctl::write(key, "1")?,
            None => {
                sysctl::write_if_different(key, "1")?;
            }
        }
    }
    Ok(())
}

pub fn mac_string(link: &Link) -> String {
    link.mac.as_ref().map(format_mac).unwrap_or_default()
}

