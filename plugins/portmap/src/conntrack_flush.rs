//! Host-side helpers of portmap that are not firewall rules: flushing stale UDP conntrack entries
//! for newly published ports, and `route_localnet` for IPv4 localhost → hostPort.

use cni_common::error::CniError;
use cni_common::netlink::{Netlink, IPV4_DEVCONF_ROUTE_LOCALNET};
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
/// hostPort is DNAT-ed to the container, then masqueraded). Only that one interface is changed:
/// the one the kernel's route lookup for the container address picks, as the reference does.
/// It is read over netlink and written through `/proc/sys` only when it is off (the first ADD on
/// a bridge): the host's `/proc/sys/net/ipv4` lookup passes an entry for every pod namespace in
/// which the runtime set a `net.ipv4` key.
pub fn enable_route_localnet(container: IpAddr) -> Result<(), CniError> {
    let IpAddr::V4(_) = container else { return Ok(()) };
    let mut nl = Netlink::open()?;
    let Some(oif) = nl.route_get_oif(container)? else { return Ok(()) };
    if nl.ipv4_conf(oif, IPV4_DEVCONF_ROUTE_LOCALNET)? == Some(1) {
        return Ok(());
    }
    let Some(name) = nl.link_name(oif)? else { return Ok(()) };
    sysctl::write_if_different(&format!("net/ipv4/conf/{name}/route_localnet"), "1")?;
    Ok(())
}
