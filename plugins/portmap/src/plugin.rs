//! The portmap verbs: parse, plan (firewall spec), apply through the firewall layer.

use crate::config::{self, PortmapConf};
use crate::conntrack_flush;
use cni_common::error::CniError;
use cni_common::result::CniResult;
use cni_common::skel::{Plugin, Request};
use cni_firewall::{AttachmentKey, Firewall};

pub struct Portmap;

fn key(req: &Request) -> AttachmentKey {
    AttachmentKey::new(req.conf.name.clone(), req.container_id.clone(), req.ifname.clone())
}

fn firewall(conf: &PortmapConf) -> Result<Box<dyn Firewall>, CniError> {
    Ok(cni_firewall::firewall(cni_firewall::choose_backend(conf.backend.as_deref())?))
}

fn prev_required(req: &Request) -> Result<CniResult, CniError> {
    req.prev_result()?
        .ok_or_else(|| CniError::config("portmap must be chained: prevResult is missing (it needs the container's addresses)"))
}

impl Plugin for Portmap {
    fn name(&self) -> &'static str {
        "portmap"
    }

    fn add(&self, req: &Request) -> Result<CniResult, CniError> {
        let conf = config::parse(req)?;
        let prev = prev_required(req)?;
        if conf.mappings.is_empty() {
            return Ok(prev);
        }
        let (v4, v6) = config::container_addrs(&prev, &req.ifname);
        let spec = config::spec(req, &conf, v4, v6)?;
        firewall(&conf)?.add_portmap(&spec)?;
        if conf.snat {
            if let Some(v4) = v4 {
                conntrack_flush::enable_route_localnet(v4.ip())?;
            }
        }
        conntrack_flush::flush_udp(&conf.mappings)?;
        Ok(prev)
    }

    fn del(&self, req: &Request) -> Result<(), CniError> {
        let conf = config::parse(req)?;
        // No mappings: nothing was installed, and the firewall is left alone (no lock taken).
        if conf.mappings.is_empty() {
            return Ok(());
        }
        let k = key(req);
        cni_firewall::teardown_each(conf.backend.as_deref(), |fw| fw.del_portmap(&k))
    }

    fn check(&self, req: &Request) -> Result<(), CniError> {
        let conf = config::parse(req)?;
        let prev = prev_required(req)?;
        if conf.mappings.is_empty() {
            return Ok(());
        }
        let (v4, v6) = config::container_addrs(&prev, &req.ifname);
        let spec = config::spec(req, &conf, v4, v6)?;
        cni_firewall::check_any(conf.backend.as_deref(), |fw| fw.check_portmap(&spec))
    }

    fn status(&self, req: &Request) -> Result<(), CniError> {
        let conf = config::parse(req)?;
        firewall(&conf)?.status().map_err(|e| CniError::NotAvailable(format!("portmap firewall backend: {e}")))
    }

    fn gc(&self, req: &Request) -> Result<(), CniError> {
        let conf = config::parse(req)?;
        let valid: Vec<AttachmentKey> = cni_common::gc::valid_attachments(&req.raw)?
            .into_iter()
            .map(|a| AttachmentKey::new(req.conf.name.clone(), a.container_id, a.ifname))
            .collect();
        cni_firewall::teardown_each(conf.backend.as_deref(), |fw| fw.gc_portmap(&req.conf.name, &valid))
    }
}
