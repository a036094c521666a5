//! Pure planning: from the config and the IPAM result to the addresses, routes and result of an
//! attachment. No system calls, unit-tested without root.

use crate::config::BridgeConf;
use cni_common::error::CniError;
use cni_common::result::{CniResult, Dns, Interface, IpConfig, Route};
use ipnetwork::IpNetwork;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// Indexes of the interfaces in a bridge result.
pub const IF_BRIDGE: usize = 0;
pub const IF_HOST: usize = 1;
pub const IF_CONTAINER: usize = 2;

/// What the container interface gets.
#[derive(Debug, Clone, PartialEq)]
pub struct ContainerPlan {
    pub addrs: Vec<IpNetwork>,
    pub routes: Vec<Route>,
    /// Turn IPv6 off on the interface (`disable_ipv6`) before it comes up.
    pub disable_ipv6: bool,
}

/// The gateway address each IP's gateway puts on the bridge: the gateway with the prefix of the
/// container's subnet.
pub fn bridge_gateways(ips: &[IpConfig]) -> Vec<IpNetwork> {
    let mut out: Vec<IpNetwork> = Vec::new();
    for ip in ips {
        if let Some(gw) = ip.gateway {
            if let Ok(net) = IpNetwork::new(gw, ip.address.prefix()) {
                if !out.contains(&net) {
                    out.push(net);
                }
            }
        }
    }
    out
}

/// The gateway a family falls back to (first IP of that family with a gateway).
fn family_gateway(ips: &[IpConfig], v4: bool) -> Option<IpAddr> {
    ips.iter().filter(|ip| ip.address.is_ipv4() == v4).find_map(|ip| ip.gateway)
}

fn default_dst(v4: bool) -> IpNetwork {
    if v4 {
        IpNetwork::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), 0).unwrap_or_else(|_| unreachable!())
    } else {
        IpNetwork::new(IpAddr::V6(Ipv6Addr::UNSPECIFIED), 0).unwrap_or_else(|_| unreachable!())
    }
}

/// Fill in the gateway each IP should use when `isGateway` is set and IPAM gave none: the first
/// address of the subnet (as the reference does).
pub fn default_gateways(conf: &BridgeConf, ips: &mut [IpConfig]) {
    if !conf.is_gateway {
        return;
    }
    for ip in ips.iter_mut().filter(|ip| ip.gateway.is_none()) {
        let net = ip.address.network();
        ip.gateway = match net {
            IpAddr::V4(a) => Some(IpAddr::V4(Ipv4Addr::from(u32::from(a).wrapping_add(1)))),
            IpAddr::V6(a) => Some(IpAddr::V6(Ipv6Addr::from(u128::from(a).wrapping_add(1)))),
        };
    }
}

/// Routes for the container: IPAM's routes, plus a default route per family through the gateway
/// when `isDefaultGateway` is set and IPAM gave no default for that family.
pub fn container_routes(conf: &BridgeConf, ipam: &CniResult) -> Result<Vec<Route>, CniError> {
    let mut routes = ipam.routes.clone();
    if conf.is_default_gateway {
        for v4 in [true, false] {
            let has_family = ipam.ips.iter().any(|ip| ip.address.is_ipv4() == v4);
            let has_default = routes.iter().any(|r| r.dst.is_ipv4() == v4 && r.dst.prefix() == 0);
            if !has_family || has_default {
                continue;
            }
            let gw = family_gateway(&ipam.ips, v4).ok_or_else(|| {
                CniError::config(format!(
                    "isDefaultGateway: no IPv{} gateway to route through",
                    if v4 { 4 } else { 6 }
                ))
            })?;
            routes.push(Route::new(default_dst(v4), Some(gw)));
        }
    }
    Ok(routes)
}

/// The gateway a route uses inside the container: its own, else its family's IPAM gateway.
pub fn route_gateway(route: &Route, ips: &[IpConfig]) -> Option<IpAddr> {
    route.gw.or_else(|| family_gateway(ips, route.dst.is_ipv4()))
}

/// The plan for the container side.
pub fn container_plan(conf: &BridgeConf, ipam: &CniResult) -> Result<ContainerPlan, CniError> {
    let addrs: Vec<IpNetwork> = ipam.ips.iter().map(|ip| ip.address).collect();
    Ok(ContainerPlan { disable_ipv6: ipv6_off(conf, &addrs), routes: container_routes(conf, ipam)?, addrs })
}

/// Whether IPv6 goes off on the container interface: it gets IPv4 addresses and no IPv6 one,
/// and the config does not ask to keep it (`linkLocalIPv6`). Docker does the same for its
/// IPv4-only networks: the kernel would otherwise give the interface a link-local address, join
/// it to multicast groups and send router solicitations and MLD reports, which the bridge floods
/// to every other container, and accept router advertisements (SLAAC) from the link. An
/// interface without any IPAM address (L2 only) keeps IPv6: its addresses are someone else's.
fn ipv6_off(conf: &BridgeConf, addrs: &[IpNetwork]) -> bool {
    !conf.link_local_ipv6 && addrs.iter().any(|a| a.is_ipv4()) && !addrs.iter().any(|a| a.is_ipv6())
}

/// Names and MACs of the three links, as read after they were set up.
pub struct Links<'a> {
    pub bridge: &'a str,
    pub bridge_mac: String,
    pub host: &'a str,
    pub host_mac: String,
    pub container: &'a str,
    pub container_mac: String,
    pub netns: &'a str,
    pub mtu: Option<u32>,
}

/// The ADD result: `[bridge, host veth, container iface]`, every IP on the container interface,
/// `dns` from the config overriding IPAM's.
pub fn result(links: &Links, ipam: &CniResult, routes: Vec<Route>, conf_dns: Option<&Dns>) -> CniResult {
    let iface = |name: &str, mac: &str, sandbox: &str| Interface {
        name: name.to_string(),
        mac: mac.to_string(),
        sandbox: sandbox.to_string(),
        mtu: links.mtu,
        ..Default::default()
    };
    let dns = match conf_dns {
        Some(d) if !d.is_empty() => d.clone(),
        _ => ipam.dns.clone(),
    };
    CniResult {
        cni_version: String::new(),
        interfaces: vec![
            iface(links.bridge, &links.bridge_mac, ""),
            iface(links.host, &links.host_mac, ""),
            iface(links.container, &links.container_mac, links.netns),
        ],
        ips: ipam.ips.iter().map(|ip| IpConfig { interface: Some(IF_CONTAINER), ..ip.clone() }).collect(),
        routes,
        dns,
        extra: Default::default(),
    }
}

/// Whether IPAM plugin `ipam_type` works without the container's interface, so that its DEL may
/// run while the veth pair is deleted. Only the reference's
/// file- and config-based IPAMs qualify; `dhcp` needs the interface, and an unknown plugin is
/// assumed to.
pub fn ipam_independent_of_interface(ipam_type: &str) -> bool {
    matches!(ipam_type, "host-local" | "static")
}

#[cfg(test)]
mod tests {
    #[test]
    fn only_known_ipams_release_alongside_the_deletion() {
        assert!(super::ipam_independent_of_interface("host-local"));
        assert!(super::ipam_independent_of_interface("static"));
        assert!(!super::ipam_independent_of_interface("dhcp"));
        assert!(!super::ipam_independent_of_interface("whereabouts"));
    }

    use super::*;
    use serde_json::json;

    fn conf(gw: bool, default_gw: bool) -> BridgeConf {
        BridgeConf {
            bridge: "cni0".into(),
            is_gateway: gw || default_gw,
            is_default_gateway: default_gw,
            force_address: false,
            ip_masq: false,
            ip_masq_backend: None,
            mtu: None,
            hairpin: false,
            promisc: false,
            vlan: 0,
            vlan_trunk: vec![],
            preserve_default_vlan: false,
            enable_dad: false,
            mac_spoof_chk: false,
            disable_container_interface: false,
            port_isolation: false,
            link_local_ipv6: false,
            mac: None,
            ipam_type: Some("host-local".into()),
        }
    }

    fn ipam(v: serde_json::Value) -> CniResult {
        CniResult::parse(&v, "1.0.0").unwrap()
    }

    #[test]
    fn gateways_on_bridge_take_subnet_prefix() {
        let r = ipam(json!({"ips": [{"address": "10.1.0.5/16", "gateway": "10.1.0.1"}, {"address": "fd00::5/64", "gateway": "fd00::1"}]}));
        let gws = bridge_gateways(&r.ips);
        assert_eq!(gws, vec!["10.1.0.1/16".parse::<IpNetwork>().unwrap(), "fd00::1/64".parse().unwrap()]);
    }

    #[test]
    fn default_gateway_fills_in_first_address() {
        let mut r = ipam(json!({"ips": [{"address": "10.1.2.5/24"}, {"address": "fd00::5/64"}]}));
        default_gateways(&conf(true, false), &mut r.ips);
        assert_eq!(r.ips[0].gateway, Some("10.1.2.1".parse().unwrap()));
        assert_eq!(r.ips[1].gateway, Some("fd00::1".parse().unwrap()));
        let mut r2 = ipam(json!({"ips": [{"address": "10.1.2.5/24"}]}));
        default_gateways(&conf(false, false), &mut r2.ips);
        assert_eq!(r2.ips[0].gateway, None);
    }

    #[test]
    fn default_routes_added_per_family_unless_ipam_has_one() {
        let r = ipam(json!({"ips": [{"address": "10.1.0.5/24", "gateway": "10.1.0.1"}, {"address": "fd00::5/64", "gateway": "fd00::1"}],
                            "routes": [{"dst": "::/0", "gw": "fd00::fe"}]}));
        let routes = container_routes(&conf(true, true), &r).unwrap();
        assert_eq!(routes.len(), 2);
        assert_eq!(routes[1].dst, "0.0.0.0/0".parse::<IpNetwork>().unwrap());
        assert_eq!(routes[1].gw, Some("10.1.0.1".parse().unwrap()));
        assert_eq!(container_routes(&conf(true, false), &r).unwrap().len(), 1);
    }

    #[test]
    fn ipv6_goes_off_only_on_ipv4_only_interfaces() {
        let off = |c: &BridgeConf, v: serde_json::Value| container_plan(c, &ipam(v)).unwrap().disable_ipv6;
        let v4 = json!({"ips": [{"address": "10.1.0.5/24"}]});
        let v6 = json!({"ips": [{"address": "fd00::5/64"}]});
        let dual = json!({"ips": [{"address": "10.1.0.5/24"}, {"address": "fd00::5/64"}]});
        let none = json!({"ips": []});
        let plain = conf(false, false);
        assert!(off(&plain, v4.clone()));
        assert!(!off(&plain, v6));
        assert!(!off(&plain, dual));
        assert!(!off(&plain, none), "an interface without IPAM addresses (L2 only) keeps IPv6");
        let keep = BridgeConf { link_local_ipv6: true, ..plain };
        assert!(!off(&keep, v4), "\"linkLocalIPv6\": true keeps IPv6 as the reference does");
    }

    #[test]
    fn result_shape() {
        let r = ipam(json!({"ips": [{"address": "10.1.0.5/24", "gateway": "10.1.0.1"}], "dns": {"nameservers": ["1.1.1.1"]}}));
        let links = Links {
            bridge: "cni0",
            bridge_mac: "02:00:00:00:00:01".into(),
            host: "veth0123abcd",
            host_mac: "02:00:00:00:00:02".into(),
            container: "eth0",
            container_mac: "02:00:00:00:00:03".into(),
            netns: "/run/netns/c",
            mtu: None,
        };
        let conf_dns = Dns { nameservers: vec!["10.1.0.1".into()], ..Default::default() };
        let res = result(&links, &r, r.routes.clone(), Some(&conf_dns));
        let v = res.to_value("1.0.0").unwrap();
        assert_eq!(v["interfaces"][2]["sandbox"], "/run/netns/c");
        assert_eq!(v["ips"][0]["interface"], 2);
        assert_eq!(v["dns"]["nameservers"][0], "10.1.0.1");
        let res = result(&links, &r, vec![], None);
        assert_eq!(res.dns.nameservers, vec!["1.1.1.1".to_string()]);
    }
}
