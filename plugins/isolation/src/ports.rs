//! Netlink side of isolation: which bridge an attachment uses, its container port, the bridge-port
//! isolation flag (icc=false), and which bridges still have ports.

use cni_common::error::CniError;
use cni_common::netlink::{BrPortFlags, Link, Netlink};
use cni_common::netns::NetNs;

/// The first of `candidates` that is a bridge on this host.
pub fn find_bridge(nl: &mut Netlink, candidates: &[String]) -> Result<Option<Link>, CniError> {
    for name in candidates {
        if let Some(l) = nl.link_by_name(name)? {
            if l.kind.as_deref() == Some("bridge") {
                return Ok(Some(l));
            }
        }
    }
    Ok(None)
}

/// The host end of the container's veth: by name when prevResult gives it, else through the peer
/// index of `ifname` inside the container namespace (when that still exists).
pub fn host_port(nl: &mut Netlink, named: Option<&str>, netns: &str, ifname: &str) -> Result<Option<Link>, CniError> {
    if let Some(name) = named {
        if let Some(l) = nl.link_by_name(name)? {
            return Ok(Some(l));
        }
    }
    if netns.is_empty() {
        return Ok(None);
    }
    let Ok(ns) = NetNs::open(netns) else { return Ok(None) };
    let peer = ns.run(|| Ok(Netlink::open()?.link_by_name(ifname)?.and_then(|l| l.link)))?;
    match peer {
        Some(index) => Ok(nl.link_by_index(index)?),
        None => Ok(None),
    }
}

/// Set or check the isolated flag of a bridge port.
pub fn set_isolated(nl: &mut Netlink, port: &Link) -> Result<(), CniError> {
    nl.set_brport(port.index, &BrPortFlags { hairpin: None, isolated: Some(true) })?;
    Ok(())
}

pub fn is_isolated(nl: &mut Netlink, port: &Link) -> Result<bool, CniError> {
    Ok(nl.brport(port.index)?.and_then(|f| f.isolated).unwrap_or(false))
}

/// Names of the bridges that have at least one port other than `except`.
pub fn bridges_with_ports(nl: &mut Netlink, except: Option<u32>) -> Result<Vec<String>, CniError> {
    let links = nl.links()?;
    let mut out: Vec<String> = links
        .iter()
        .filter(|b| b.kind.as_deref() == Some("bridge"))
        .filter(|b| links.iter().any(|l| l.master == Some(b.index) && Some(l.index) != except))
        .map(|b| b.name.clone())
        .collect();
    out.sort();
    Ok(out)
}
