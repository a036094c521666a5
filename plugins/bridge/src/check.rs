//! CHECK: compare what prevResult says with what the kernel has, and name the first difference.

use crate::config::BridgeConf;
use crate::container;
use crate::plan::{IF_BRIDGE, IF_CONTAINER, IF_HOST};
use cni_common::error::CniError;
use cni_common::invoke;
use cni_common::netlink::{parse_mac, Netlink};
use cni_common::netns::NetNs;
use cni_common::result::CniResult;
use cni_common::skel::{Command, Request};

fn fail(msg: String) -> CniError {
    CniError::CheckFailed(msg)
}

fn same_mac(expected: &str, actual: Option<[u8; 6]>) -> bool {
    expected.is_empty() || parse_mac(expected).ok() == actual
}

pub fn check(req: &Request, conf: &BridgeConf) -> Result<(), CniError> {
    let prev = req
        .prev_result()?
        .ok_or_else(|| CniError::config("CHECK needs prevResult (the result of ADD)"))?;
    if let Some(t) = &conf.ipam_type {
        invoke::delegate(t, Command::Check, req)?;
    }
    check_host(req, conf, &prev)?;
    check_container(req, conf, &prev)?;
    if conf.ip_masq {
        let addrs = prev.ips.iter().map(|ip| ip.address).collect::<Vec<_>>();
        if !addrs.is_empty() {
            let key = cni_firewall::AttachmentKey {
                network: req.conf.name.clone(),
                container_id: req.container_id.clone(),
                ifname: req.ifname.clone(),
            };
            let spec = cni_firewall::MasqSpec { key, addrs };
            cni_firewall::check_any(conf.ip_masq_backend.as_deref(), |fw| fw.check_masquerade(&spec))?;
        }
    }
    Ok(())
}

fn check_host(_req: &Request, conf: &BridgeConf, prev: &CniResult) -> Result<(), CniError> {
    let mut nl = Netlink::open()?;
    let br = nl
        .link_by_name(&conf.bridge)?
        .ok_or_else(|| fail(format!("bridge {:?} does not exist", conf.bridge)))?;
    if br.kind.as_deref() != Some("bridge") {
        return Err(fail(format!("{:?} is not a bridge", conf.bridge)));
    }
    if let Some(want) = prev.interfaces.get(IF_BRIDGE) {
        if want.name != conf.bridge {
            return Err(fail(format!("prevResult names bridge {:?}, config {:?}", want.name, conf.bridge)));
        }
    }
    if conf.promisc && !br.promisc {
        return Err(fail(format!("bridge {:?} is not in promiscuous mode", conf.bridge)));
    }
    if let Some(want) = prev.interfaces.get(IF_HOST) {
        let veth = nl
            .link_by_name(&want.name)?
            .ok_or_else(|| fail(format!("host veth {:?} does not exist", want.name)))?;
        if veth.master != Some(br.index) {
            return Err(fail(format!("host veth {:?} is not a port of bridge {:?}", want.name, conf.bridge)));
        }
        if !same_mac(&want.mac, veth.mac) {
            return Err(fail(format!("host veth {:?} has MAC other than {}", want.name, want.mac)));
        }
    }
    Ok(())
}

fn check_container(req: &Request, conf: &BridgeConf, prev: &CniResult) -> Result<(), CniError> {
    let netns = NetNs::open(&req.netns)?;
    let host_peer = match prev.interfaces.get(IF_HOST) {
        Some(h) => Netlink::open()?.link_by_name(&h.name)?.map(|l| l.index),
        None => None,
    };
    let seen = netns
        .run(|| container::observe(&req.ifname))?
        .ok_or_else(|| fail(format!("container interface {:?} does not exist in {}", req.ifname, req.netns)))?;
    if let Some(want) = prev.interfaces.get(IF_CONTAINER) {
        if want.name != req.ifname {
            return Err(fail(format!("prevResult names container interface {:?}, CNI_IFNAME is {:?}", want.name, req.ifname)));
        }
        if !same_mac(&want.mac, seen.link.mac) {
            return Err(fail(format!("container interface {:?} has MAC other than {}", req.ifname, want.mac)));
        }
    }
    if seen.link.kind.as_deref() != Some("veth") {
        return Err(fail(format!("container interface {:?} is not a veth", req.ifname)));
    }
    if let (Some(peer), Some(link)) = (host_peer, seen.link.link) {
        if peer != link {
            return Err(fail(format!("container interface {:?} is not paired with the host veth", req.ifname)));
        }
    }
    if conf.disable_container_interface {
        return Ok(());
    }
    for ip in prev.ips.iter().filter(|ip| ip.interface.is_none_or(|i| i == IF_CONTAINER)) {
        if !seen.addrs.iter().any(|a| a.ip() == ip.address.ip() && a.prefix() == ip.address.prefix()) {
            return Err(fail(format!("container interface {:?} lacks address {}", req.ifname, ip.address)));
        }
    }
    for r in &prev.routes {
        let want = container::to_netlink(r, &prev.ips, seen.link.index);
        let found = seen.routes.iter().any(|have| {
            have.dst.map(|d| (d.network(), d.prefix())) == want.dst.map(|d| (d.network(), d.prefix()))
                && (want.gw.is_none() || have.gw == want.gw)
        });
        if !found {
            return Err(fail(format!("container lacks route to {} via {:?}", r.dst, want.gw)));
        }
    }
    Ok(())
}
