//! The `host-local` IPAM plugin.
//!
//! - [`config`]: the `ipam` section, requested addresses, GC attachments (pure)
//! - [`range`]: ranges, range sets, round-robin order (pure)
//! - [`allocator`]: allocation over a [`allocator::Store`] (pure; in-memory store for tests)
//! - [`disk`]: the on-disk store (reference layout, lock, index, crash-safe writes) and STATUS
//! - [`resolv`]: `resolvConf` parsing
//!
//! This module wires them to the verbs.

pub mod allocator;
pub mod config;
pub mod disk;
pub mod range;
pub mod resolv;

use allocator::{Owner, Store};
use cni_common::error::CniError;
use cni_common::result::{CniResult, Dns, IpConfig};
use cni_common::skel::{Plugin, Request};
use disk::DiskStore;
use ipnetwork::IpNetwork;
use std::collections::HashSet;
use std::net::IpAddr;

pub struct HostLocal;

include!(concat!(env!("OUT_DIR"), "/identity.rs"));

/// host-local as a builtin of a plugin that delegates to it (bridge): run in-process when the
/// `host-local` found in `CNI_PATH` is this same build.
pub const BUILTIN: cni_common::invoke::Builtin =
    cni_common::invoke::Builtin { name: "host-local", identity: IDENTITY, plugin: &HostLocal };

/// With `HOST_LOCAL_DEBUG` set, report on stderr how many full scans of the lease files a call
/// made (0 when the index was trusted). A diagnostic used by the tests.
fn debug_scans(store: &DiskStore) {
    if std::env::var_os("HOST_LOCAL_DEBUG").is_some() {
        eprintln!("host-local: full scans: {}", store.scans);
    }
}

fn full_config(req: &Request) -> Result<config::IpamConfig, CniError> {
    config::parse(&config::Input {
        raw: &req.raw,
        network: &req.conf.name,
        version: req.version(),
        cni_args_ip: req.args.get("IP"),
    })
}

impl Plugin for HostLocal {
    fn name(&self) -> &'static str {
        "host-local"
    }

    fn known_args(&self) -> &'static [&'static str] {
        &["IP"]
    }

    fn add(&self, req: &Request) -> Result<CniResult, CniError> {
        let cfg = full_config(req)?;
        let dns = match &cfg.resolv_conf {
            Some(p) => resolv::load(p)?,
            None => Dns::default(),
        };
        let mut store = DiskStore::open(&cfg.storage, true)?.ok_or_else(|| CniError::Internal("state directory vanished".into()))?;
        let leases = allocator::allocate(&cfg.range_sets, &cfg.requested, &req.container_id, &req.ifname, &mut store);
        debug_scans(&store);
        store.finish();
        let leases = leases?;
        let ips = leases
            .iter()
            .map(|l| {
                let r = &cfg.range_sets[l.set].ranges[l.range];
                let addr = IpNetwork::new(l.ip, r.subnet.prefix()).expect("prefix of a valid subnet");
                IpConfig::new(addr, Some(r.gateway), None)
            })
            .collect();
        Ok(CniResult { cni_version: req.cni_version.clone(), ips, routes: cfg.routes, dns, ..Default::default() })
    }

    fn del(&self, req: &Request) -> Result<(), CniError> {
        // Only the storage location is needed: a config whose ranges became invalid can still
        // release what it holds.
        let storage = config::parse_storage(&req.raw, &req.conf.name)?;
        let Some(mut store) = DiskStore::open(&storage, false)? else { return Ok(()) };
        let res = store.release(&req.container_id, &req.ifname);
        debug_scans(&store);
        store.finish();
        res.map(|_| ())
    }

    fn check(&self, req: &Request) -> Result<(), CniError> {
        let cfg = full_config(req)?;
        let missing = || {
            CniError::CheckFailed(format!(
                "host-local: no address is reserved for container {} interface {} in network {}",
                req.container_id, req.ifname, cfg.storage.network
            ))
        };
        let Some(mut store) = DiskStore::open(&cfg.storage, false)? else { return Err(missing()) };
        let held = store.held_by(&req.container_id, &req.ifname);
        debug_scans(&store);
        store.finish();
        let held = held?;
        if held.is_empty() {
            return Err(missing());
        }
        let Some(prev) = req.prev_result()? else { return Ok(()) };
        check_against_prev(&cfg, &held, &prev.ips)
    }

    fn status(&self, req: &Request) -> Result<(), CniError> {
        let cfg = full_config(req)?;
        disk::status(&cfg.storage, &cfg.range_sets)
    }

    fn gc(&self, req: &Request) -> Result<(), CniError> {
        let storage = config::parse_storage(&req.raw, &req.conf.name)?;
        let valid = cni_common::gc::valid_attachments(&req.raw)?;
        let Some(mut store) = DiskStore::open(&storage, false)? else { return Ok(()) };
        let pairs: HashSet<(&str, &str)> = valid.iter().map(|a| (a.container_id.trim(), a.ifname.as_str())).collect();
        let cids: HashSet<&str> = valid.iter().map(|a| a.container_id.trim()).collect();
        let keep = |o: &Owner| match o {
            Owner::Attachment { container_id, ifname } => pairs.contains(&(container_id.as_str(), ifname.as_str())),
            Owner::Legacy { container_id } => cids.contains(container_id.as_str()),
            Owner::Unknown => false,
        };
        let res = store.gc(&keep);
        store.finish();
        let (_released, errors) = res?;
        if !errors.is_empty() {
            return Err(CniError::Io(format!("GC of {}: {}", storage.dir().display(), errors.join("; "))));
        }
        Ok(())
    }
}

/// CHECK against `prevResult`: every reserved address is in it with the subnet's prefix, and every
/// address of it that lies in one of our range sets is reserved for this attachment.
fn check_against_prev(cfg: &config::IpamConfig, held: &[IpAddr], prev: &[IpConfig]) -> Result<(), CniError> {
    for ip in held {
        let Some(entry) = prev.iter().find(|p| range::canonical(p.address.ip()) == *ip) else {
            return Err(CniError::CheckFailed(format!("address {ip} is reserved for this attachment but missing from prevResult")));
        };
        if let Some((_, r)) = cfg.range_sets.iter().find_map(|s| s.range_for(*ip)) {
            if entry.address.prefix() != r.subnet.prefix() {
                return Err(CniError::CheckFailed(format!(
                    "prevResult has {} but the reservation is in subnet {}",
                    entry.address, r.subnet
                )));
            }
        }
    }
    for p in prev {
        let ip = range::canonical(p.address.ip());
        if cfg.range_sets.iter().any(|s| s.contains(ip)) && !held.contains(&ip) {
            return Err(CniError::CheckFailed(format!(
                "prevResult lists {} from this network's ranges, but it is not reserved for this attachment",
                p.address
            )));
        }
    }
    Ok(())
}
