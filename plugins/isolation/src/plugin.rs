//! The isolation verbs: find the bridge, then add/remove/check its isolation state through the
//! firewall layer, and the port flag for icc=false through netlink.

use crate::config::{self, IsolationConf};
use crate::ports;
use cni_common::error::CniError;
use cni_common::netlink::Netlink;
use cni_common::result::CniResult;
use cni_common::skel::{Plugin, Request};
use cni_firewall::{Family, IsolationSpec};

pub struct Isolation;

fn spec(conf: &IsolationConf, bridge: &str) -> IsolationSpec {
    IsolationSpec { bridge: bridge.to_string(), families: Family::BOTH.to_vec(), allow_published: conf.allow_published }
}

fn prev_required(req: &Request) -> Result<CniResult, CniError> {
    req.prev_result()?
        .ok_or_else(|| CniError::config("isolation must be chained after bridge: prevResult is missing"))
}

fn no_bridge(req: &Request) -> CniError {
    CniError::config(format!("prevResult of {:?} names no host-side bridge interface", req.conf.name))
}

impl Plugin for Isolation {
    fn name(&self) -> &'static str {
        "isolation"
    }

    fn add(&self, req: &Request) -> Result<CniResult, CniError> {
        let conf = config::parse(req)?;
        let prev = prev_required(req)?;
        let side = config::host_side(&prev);
        let mut nl = Netlink::open()?;
        let bridge = ports::find_bridge(&mut nl, &side.candidates)?.ok_or_else(|| no_bridge(req))?;
        let fw = cni_firewall::firewall(cni_firewall::choose_backend(conf.backend.as_deref())?);
        fw.add_isolation(&spec(&conf, &bridge.name))?;
        if !conf.icc {
            let port = ports::host_port(&mut nl, side.host_veth.as_deref(), &req.netns, &req.ifname)?
                .filter(|p| p.master == Some(bridge.index))
                .ok_or_else(|| CniError::config(format!("icc=false: no port of bridge {:?} found for {:?}", bridge.name, req.ifname)))?;
            if let Err(e) = ports::set_isolated(&mut nl, &port) {
                // Undo the bridge's isolation only if no other container uses it.
                if nl.has_ports(bridge.index, Some(port.index)).is_ok_and(|used| !used) {
                    let _ = fw.del_isolation(&bridge.name);
                }
                return Err(e);
            }
        }
        Ok(prev)
    }

    fn del(&self, req: &Request) -> Result<(), CniError> {
        let conf = config::parse(req)?;
        let side = req.prev_result().ok().flatten().map(|p| config::host_side(&p));
        let mut nl = Netlink::open()?;
        let own = ports::host_port(&mut nl, side.as_ref().and_then(|s| s.host_veth.as_deref()), &req.netns, &req.ifname)?;
        let own_index = own.as_ref().map(|l| l.index);
        let bridge = match (&side, &own) {
            (Some(s), _) => ports::find_bridge(&mut nl, &s.candidates)?,
            (None, Some(port)) => match port.master {
                Some(m) => nl.link_by_index(m)?,
                None => None,
            },
            (None, None) => None,
        };
        match bridge {
            // The last container of the bridge leaves: its isolation state goes.
            Some(b) if !nl.has_ports(b.index, own_index)? => {
                cni_firewall::teardown_each(conf.backend.as_deref(), |fw| fw.del_isolation(&b.name))
            }
            Some(_) => Ok(()),
            // Bridge unknown (no prevResult, namespace gone): sweep every bridge without ports.
            None => {
                let in_use = ports::bridges_with_ports(&mut nl, own_index)?;
                cni_firewall::teardown_each(conf.backend.as_deref(), |fw| fw.gc_isolation(&in_use))
            }
        }
    }

    fn check(&self, req: &Request) -> Result<(), CniError> {
        let conf = config::parse(req)?;
        let prev = prev_required(req)?;
        let side = config::host_side(&prev);
        let mut nl = Netlink::open()?;
        let bridge = ports::find_bridge(&mut nl, &side.candidates)?.ok_or_else(|| no_bridge(req))?;
        let s = spec(&conf, &bridge.name);
        cni_firewall::check_any(conf.backend.as_deref(), |fw| fw.check_isolation(&s))?;
        if !conf.icc {
            let port = ports::host_port(&mut nl, side.host_veth.as_deref(), &req.netns, &req.ifname)?
                .ok_or_else(|| CniError::CheckFailed(format!("no host port of bridge {:?} for {:?}", bridge.name, req.ifname)))?;
            if !ports::is_isolated(&mut nl, &port)? {
                return Err(CniError::CheckFailed(format!(
                    "icc=false: port {:?} of bridge {:?} is not isolated",
                    port.name, bridge.name
                )));
            }
        }
        Ok(())
    }

    fn status(&self, req: &Request) -> Result<(), CniError> {
        let conf = config::parse(req)?;
        let fw = cni_firewall::firewall(cni_firewall::choose_backend(conf.backend.as_deref())?);
        fw.status().map_err(|e| CniError::NotAvailable(format!("isolation firewall backend: {e}")))
    }

    fn gc(&self, req: &Request) -> Result<(), CniError> {
        let conf = config::parse(req)?;
        // Isolation state is per bridge: it stays for every bridge that still has ports.
        let in_use = ports::bridges_with_ports(&mut Netlink::open()?, None)?;
        cni_firewall::teardown_each(conf.backend.as_deref(), |fw| fw.gc_isolation(&in_use))
    }
}
