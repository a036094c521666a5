//! Host-side helpers of portmap that are not firewall rules: flushing stale UDP conntrack entries
//! for newly published ports, and `route_localnet` for IPv4 localhost → hostPort.

use cni_common::error::CniError;
use cni_common::netlink::{IpFamily, Netlink};
use cni_common::sysctl;
use cni_firewall::{PortMapping, Protocol};
use std::net::IpAddr;

const IPPROTO_UDP: u8 = 17;

/// Delete UDP conntrack entries aimed at the mapped host ports, so existing flows are NATed anew.
pub fn flush_udp(mappings: &[PortMapping]) -> Result<(), CniError> {
    let ports: Vec<u16> = mappings.iter().filter(|m| m.protocol == Protocol::Udp).map(|m| m.host_port).collect();
    if ports.is_empty() {
        return Ok(());
    }
    cni_common::conntrack::delete_by_dport(IPPROTO_UDP, &ports)?;
    Ok(())
}

/// Let the interface that routes to the container accept packets from 127.0.0.1 (localhost →
/// hostPort is DNAT-ed to the container, then masqueraded). Only that one interface is changed.
pub fn enable_route_localnet(container: IpAddr) -> Result<(), CniError> {
    let IpAddr::V4(target) = container else { return Ok(()) };
    let mut nl = Netlink::open()?;
    let best = nl
        .routes(IpFamily::V4, Some(cni_common::netlink::TABLE_MAIN))?
        .into_iter()
        .filter(|r| r.oif.is_some() && r.dst.is_some_and(|d| d.contains(IpAddr::V4(target))))
        .max_by_key(|r| r.dst.map(|d| d.prefix()).unwrap_or(0));
    let Some(oif) = best.and_then(|r| r.oif) else { return Ok(()) };
    let Some(link) = nl.link_by_index(oif)? else { return Ok(()) };
    sysctl::write_if_different(&format!("net/ipv4/conf/{}/route_localnet", link.name), "1")?;
    Ok(())
}
