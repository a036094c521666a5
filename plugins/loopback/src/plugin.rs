//! The loopback verbs: plan is trivial, so each verb is "enter the namespace, act on `lo`".

use cni_common::error::CniError;
use cni_common::netlink::Netlink;
use cni_common::netns::NetNs;
use cni_common::result::{CniResult, Interface, IpConfig};
use cni_common::skel::{Plugin, Request};
use ipnetwork::IpNetwork;

const LO: &str = "lo";

pub struct Loopback;

/// State of `lo` read inside the namespace.
struct LoState {
    up: bool,
    addrs: Vec<IpNetwork>,
}

fn with_lo<T>(netns: &str, f: impl FnOnce(&mut Netlink, u32) -> Result<T, CniError>) -> Result<T, CniError> {
    let ns = NetNs::open(netns)?;
    ns.run(|| {
        let mut nl = Netlink::open()?;
        let lo = nl
            .link_by_name(LO)?
            .ok_or_else(|| CniError::netlink(format!("find {LO:?} in {netns}"), "no such interface"))?;
        f(&mut nl, lo.index)
    })
}

fn read_state(nl: &mut Netlink, index: u32) -> Result<LoState, CniError> {
    let link = nl
        .link_by_index(index)?
        .ok_or_else(|| CniError::netlink(format!("read {LO:?}"), "interface vanished"))?;
    let addrs = nl.addrs(Some(index), None)?.into_iter().map(|a| a.addr).collect();
    Ok(LoState { up: link.up, addrs })
}

/// The result of a first-in-chain ADD: `lo` and its loopback addresses.
fn plan_result(netns: &str, addrs: &[IpNetwork]) -> CniResult {
    let lo = Interface { name: LO.into(), mac: "00:00:00:00:00:00".into(), sandbox: netns.into(), ..Default::default() };
    CniResult {
        interfaces: vec![lo],
        ips: addrs.iter().map(|a| IpConfig::new(*a, None, Some(0))).collect(),
        ..Default::default()
    }
}

/// Every address on `lo` must be a loopback address.
fn validate_addrs(addrs: &[IpNetwork]) -> Result<(), CniError> {
    match addrs.iter().find(|a| !a.ip().is_loopback()) {
        Some(a) => Err(CniError::CheckFailed(format!("interface {LO:?} has non-loopback address {a}"))),
        None => Ok(()),
    }
}

impl Plugin for Loopback {
    fn name(&self) -> &'static str {
        "loopback"
    }

    fn add(&self, req: &Request) -> Result<CniResult, CniError> {
        let state = with_lo(&req.netns, |nl, idx| {
            nl.set_up(idx)?;
            read_state(nl, idx)
        })?;
        validate_addrs(&state.addrs)?;
        match req.prev_result()? {
            Some(prev) => Ok(prev),
            None => Ok(plan_result(&req.netns, &state.addrs)),
        }
    }

    fn del(&self, req: &Request) -> Result<(), CniError> {
        if req.netns.is_empty() {
            return Ok(());
        }
        // A namespace that is already gone has nothing left to undo.
        if !std::path::Path::new(&req.netns).exists() {
            return Ok(());
        }
        with_lo(&req.netns, |nl, idx| Ok(nl.set_down(idx)?))
    }

    fn check(&self, req: &Request) -> Result<(), CniError> {
        let state = with_lo(&req.netns, read_state)?;
        if !state.up {
            return Err(CniError::CheckFailed(format!("interface {LO:?} in {} is down", req.netns)));
        }
        validate_addrs(&state.addrs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn result_lists_lo_and_its_addresses() {
        let addrs: Vec<IpNetwork> = vec!["127.0.0.1/8".parse().unwrap(), "::1/128".parse().unwrap()];
        let r = plan_result("/run/netns/x", &addrs);
        let v = r.to_value("1.0.0").unwrap();
        assert_eq!(v["interfaces"][0]["name"], "lo");
        assert_eq!(v["interfaces"][0]["sandbox"], "/run/netns/x");
        assert_eq!(v["ips"][0]["address"], "127.0.0.1/8");
        assert_eq!(v["ips"][1]["interface"], 0);
    }

    #[test]
    fn non_loopback_address_rejected() {
        assert!(validate_addrs(&["127.0.0.1/8".parse().unwrap()]).is_ok());
        let e = validate_addrs(&["10.0.0.1/8".parse().unwrap()]).unwrap_err();
        assert!(e.to_string().contains("10.0.0.1/8"));
    }
}
