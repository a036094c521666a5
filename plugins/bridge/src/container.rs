//! Container-side work, run inside the container's network namespace: sysctls, addresses, link up,
//! routes; and reading back for CHECK and DEL.

use crate::config::BridgeConf;
use crate::plan::{route_gateway, ContainerPlan};
use cni_common::error::CniError;
use cni_common::netlink::{AddrOpts, Changes, DetachedDelete, Link, Netlink, Route as NlRoute};
use cni_common::result::{IpConfig, Route};
use cni_common::sysctl;
use ipnetwork::IpNetwork;

/// Configure the container interface (already created, down) inside the current namespace;
/// returns it as it was before the configuration (name, index, MAC). The interface's sysctls are
/// written first, through a private procfs instance ([`sysctl::Sysctls::private`]), released as
/// soon as they are: the namespace is new to `/proc/sys`, and the instance spares the walk of the
/// shared hash chain of every namespace's `net/ipv6` entry.
pub fn configure(conf: &BridgeConf, ifname: &str, plan: &ContainerPlan, ips: &[IpConfig]) -> Result<Link, CniError> {
    let mut nl = Netlink::open()?;
    let link = nl
        .link_by_name(ifname)?
        .ok_or_else(|| CniError::netlink(format!("find container interface {ifname:?}"), "not found"))?;
    if conf.disable_container_interface {
        return Ok(link);
    }
    write_sysctls(conf, ifname, plan, &sysctl::Sysctls::private())?;
    // Addresses, link up, arp_notify and routes in one datagram, applied by the kernel in this
    // order (a route's gateway needs the address and the link up), each acknowledged on its own.
    let mut changes = Changes::new();
    for addr in &plan.addrs {
        changes.add_addr(link.index, *addr, AddrOpts { nodad: !conf.enable_dad, ..Default::default() });
    }
    changes.set_up(link.index);
    // arp_notify=1 (as the reference leaves it): the kernel announces the address with a
    // gratuitous ARP when the link later comes up again or changes its MAC. Set only once the
    // link is up, so ADD itself announces nothing, like the reference: an announcement is a
    // broadcast the bridge floods to every attached container, work that grows with their number.
    // Over netlink, as the sysctl file of an `eth0` is a lookup through every namespace's.
    changes.set_ipv4_conf(link.index, &[(cni_common::netlink::IPV4_DEVCONF_ARP_NOTIFY, 1)]);
    for r in &plan.routes {
        changes.add_route(&to_netlink(r, ips, link.index))?;
    }
    // Errors name the change and the interface ("add address 10.1.0.5/24 to link "eth0" (index 2)").
    let mut results = nl.apply(changes)?.into_iter();
    for _ in &plan.addrs {
        results.next().unwrap_or(Ok(()))?;
    }
    results.next().unwrap_or(Ok(()))?;
    // arp_notify: best effort, as before (a kernel without the setting is no reason to fail)
    let _ = results.next();
    for _ in &plan.routes {
        match results.next().unwrap_or(Ok(())) {
            Err(e) if !e.is_exists() => return Err(e.into()),
            _ => {}
        }
    }
    // The link as read before it went up: its MAC (all the result needs) does not change with
    // that. Reading it again now would first run its pending link-state event (a GETLINK does that)
    // while the kernel's link-watch worker may hold RTNL for the new bridge port's events.
    Ok(link)
}

/// The container interface's IPv6 sysctls, before it comes up.
fn write_sysctls(conf: &BridgeConf, ifname: &str, plan: &ContainerPlan, sysctls: &sysctl::Sysctls) -> Result<(), CniError> {
    let has_v6 = plan.addrs.iter().any(|a| a.is_ipv6());
    if has_v6 {
        // IPv6 may be administratively disabled on new interfaces; addresses need it on.
        sysctls.write_if_different(&format!("net/ipv6/conf/{ifname}/disable_ipv6"), "0")?;
        let _ = sysctls.write_if_different(&format!("net/ipv6/conf/{ifname}/keep_addr_on_down"), "1");
    }
    if plan.disable_ipv6 {
        // Before the link comes up, so the kernel never starts IPv6 on it. Absent when the kernel
        // runs without IPv6: nothing to turn off.
        sysctls.write_if_present(&format!("net/ipv6/conf/{ifname}/disable_ipv6"), "1")?;
    } else {
        // Duplicate address detection delays addresses (also the link-local one) by a second or
        // more; off unless asked, as the reference does. Absent when the kernel has IPv6
        // disabled: not an error.
        let dad = if conf.enable_dad { "1" } else { "0" };
        let dad_set = sysctls.write_if_different(&format!("net/ipv6/conf/{ifname}/accept_dad"), dad);
        if has_v6 {
            dad_set?;
        }
        if conf.enable_dad {
            let _ = sysctls.write_if_different(&format!("net/ipv6/conf/{ifname}/enhanced_dad"), "1");
        }
    }
    Ok(())
}

/// The netlink form of a result route on the container interface.
pub fn to_netlink(r: &Route, ips: &[IpConfig], oif: u32) -> NlRoute {
    NlRoute {
        dst: Some(r.dst),
        gw: route_gateway(r, ips),
        oif: Some(oif),
        table: r.table,
        scope: r.scope,
        priority: r.priority,
        mtu: r.mtu,
        advmss: r.advmss,
        src: None,
    }
}

/// The container interface `ifname` (its index) and, if `with_addrs`, its addresses; `None` if
/// it does not exist.
pub fn find(ifname: &str, with_addrs: bool) -> Result<Option<(u32, Vec<IpNetwork>)>, CniError> {
    let mut nl = Netlink::open()?;
    let Some(link) = nl.link_by_name(ifname)? else { return Ok(None) };
    let addrs = if with_addrs { nl.addrs(Some(link.index), None)?.into_iter().map(|a| a.addr).collect() } else { vec![] };
    Ok(Some((link.index, addrs)))
}

/// Delete the container interface `ifname` (link `index`), and with it the veth pair. Returns
/// once the kernel has taken both ends out of their namespaces; its wait before freeing them
/// (RCU grace periods, ~15-20 ms on a small VM) is left to a helper process (see
/// [`Netlink::delete_link_detached`]), dropped with the returned handle.
pub fn delete(ifname: &str, index: u32) -> Result<Option<DetachedDelete>, CniError> {
    match Netlink::open()?.delete_link_detached(index) {
        Ok(d) => Ok(Some(d)),
        Err(e) if e.is_not_found() => Ok(None),
        Err(e) => Err(CniError::netlink(format!("delete container interface {ifname:?}"), e)),
    }
}

/// What CHECK reads of the container interface.
pub struct Observed {
    pub link: Link,
    pub addrs: Vec<IpNetwork>,
    pub routes: Vec<NlRoute>,
}

pub fn observe(ifname: &str) -> Result<Option<Observed>, CniError> {
    let mut nl = Netlink::open()?;
    let Some(link) = nl.link_by_name(ifname)? else { return Ok(None) };
    let addrs = nl.addrs(Some(link.index), None)?.into_iter().map(|a| a.addr).collect();
    let mut routes = nl.routes(cni_common::netlink::IpFamily::V4, None)?;
    routes.extend(nl.routes(cni_common::netlink::IpFamily::V6, None)?);
    Ok(Some(Observed { link, addrs, routes }))
}
