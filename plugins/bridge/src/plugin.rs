//! The bridge verbs: parse, plan, apply, with rollback of everything an ADD made when it fails.

use crate::config::{self, BridgeConf};
use crate::{container, host, plan};
use cni_common::error::CniError;
use cni_common::invoke;
use cni_common::netlink::{Link, Netlink};
use cni_common::netns::NetNs;
use cni_common::result::CniResult;
use cni_common::skel::{Command, Plugin, Request};
use cni_common::sysctl::Sysctls;
use cni_firewall::{AttachmentKey, MasqSpec};
use ipnetwork::IpNetwork;
use std::os::fd::AsFd;

pub struct Bridge;

fn key(req: &Request) -> AttachmentKey {
    AttachmentKey { network: req.conf.name.clone(), container_id: req.container_id.clone(), ifname: req.ifname.clone() }
}

fn firewall(conf: &BridgeConf) -> Result<Box<dyn cni_firewall::Firewall>, CniError> {
    Ok(cni_firewall::firewall(cni_firewall::choose_backend(conf.ip_masq_backend.as_deref())?))
}

/// What an ADD has made so far, undone in reverse order when a later step fails.
#[derive(Default)]
struct Undo {
    bridge_created: Option<u32>,
    host_veth: Option<u32>,
    ipam: Option<String>,
    masq: Option<Vec<IpNetwork>>,
}

impl Undo {
    /// Best effort: every step is tried; the original error is what the caller reports.
    fn run(self, req: &Request, conf: &BridgeConf, nl: &mut Netlink) {
        if let Some(addrs) = self.masq {
            if let Ok(fw) = firewall(conf) {
                if let Err(e) = fw.del_masquerade(&key(req), &addrs) {
                    eprintln!("bridge: rollback: removing masquerade rules: {e}");
                }
            }
        }
        if let Some(ipam) = self.ipam {
            if let Err(e) = invoke::delegate(&ipam, Command::Del, req) {
                eprintln!("bridge: rollback: releasing addresses through {ipam}: {e}");
            }
        }
        if let Some(index) = self.host_veth {
            if let Err(e) = nl.delete_link(index) {
                if !e.is_not_found() {
                    eprintln!("bridge: rollback: deleting host veth {index}: {e}");
                }
            }
        }
        if let Some(index) = self.bridge_created {
            if matches!(nl.has_ports(index, None), Ok(false)) {
                if let Err(e) = nl.delete_link(index) {
                    eprintln!("bridge: rollback: deleting bridge {:?}: {e}", conf.bridge);
                }
            }
        }
    }
}

/// The bridge (made if missing) and the host end of a new veth pair whose other end is `ifname` in
/// the container, configured as a bridge port.
fn host_side(
    req: &Request,
    conf: &BridgeConf,
    nl: &mut Netlink,
    netns: &NetNs,
    undo: &mut Undo,
) -> Result<(host::BridgeLink, Link), CniError> {
    let bridge = host::ensure_bridge(nl, conf)?;
    if bridge.created {
        undo.bridge_created = Some(bridge.link.index);
    }
    let host_veth = host::create_veth(nl, conf, &bridge.link, netns, &req.ifname)?;
    undo.host_veth = Some(host_veth.index);
    host::configure_port(nl, conf, &host_veth)?;
    Ok((bridge, host_veth))
}

/// The addresses of an ADD, and what follows from them alone.
struct Addressed {
    /// The IPAM result, with the default gateways `isDefaultGateway` adds.
    ipam: CniResult,
    cplan: plan::ContainerPlan,
}

/// What [`address_and_masquerade`] did: its outcome and, for the undo list, what it made.
struct Addressing {
    outcome: Result<Addressed, CniError>,
    /// IPAM allocated addresses (to release if the ADD fails later).
    allocated: bool,
    /// The masquerade added for these addresses (to remove if the ADD fails later).
    masq: Option<Vec<IpNetwork>>,
}

impl Addressing {
    fn failed(e: CniError) -> Addressing {
        Addressing { outcome: Err(e), allocated: false, masq: None }
    }
}

/// IPAM (`ipam_type`, or none), the container plan, and the masquerade of the container's
/// addresses: everything of an ADD that needs the addresses but no interface. With an IPAM that
/// never looks at the container's interface it runs on a second thread while the first makes the
/// veth pair, so that the masquerade's nf_tables work is off the ADD's path.
fn address_and_masquerade(req: &Request, conf: &BridgeConf, ipam_type: Option<&str>) -> Addressing {
    let ipam = match ipam_type {
        Some(t) => match invoke::delegate_add(t, req) {
            Ok(r) => r,
            Err(e) => return Addressing::failed(e),
        },
        None => CniResult::default(),
    };
    let mut masq = None;
    let outcome = plan_and_masquerade(req, conf, ipam_type, ipam, &mut masq);
    Addressing { outcome, allocated: ipam_type.is_some(), masq }
}

/// The container plan for `ipam`'s addresses, and their masquerade (in `masq` once it is added).
fn plan_and_masquerade(
    req: &Request,
    conf: &BridgeConf,
    ipam_type: Option<&str>,
    mut ipam: CniResult,
    masq: &mut Option<Vec<IpNetwork>>,
) -> Result<Addressed, CniError> {
    if let (true, Some(t)) = (ipam.ips.is_empty(), ipam_type) {
        return Err(CniError::Delegate { plugin: t.to_string(), reason: "IPAM returned no IP addresses".into() });
    }
    plan::default_gateways(conf, &mut ipam.ips);
    let cplan = plan::container_plan(conf, &ipam)?;
    if conf.ip_masq && !cplan.addrs.is_empty() {
        firewall(conf)?.add_masquerade(&MasqSpec { key: key(req), addrs: cplan.addrs.clone() })?;
        *masq = Some(cplan.addrs.clone());
    }
    Ok(Addressed { ipam, cplan })
}

fn add(req: &Request, conf: &BridgeConf, nl: &mut Netlink, undo: &mut Undo) -> Result<CniResult, CniError> {
    let netns = NetNs::open(&req.netns)?;
    let ipam_type = conf.ipam_type.as_deref();
    // An IPAM plugin that never looks at the container's interface runs, with the masquerade that
    // needs only its addresses, while the veth pair is made (two threads, two cores); any other
    // (dhcp, ...) runs after it, as in the reference.
    let early = ipam_type.filter(|t| plan::ipam_independent_of_interface(t));
    let (made, sysctls, addressing) = std::thread::scope(|s| {
        let thread = early.map(|t| {
            std::thread::Builder::new().name("ipam".into()).spawn_scoped(s, move || address_and_masquerade(req, conf, Some(t)))
        });
        let made = host_side(req, conf, nl, &netns, undo);
        // Made while IPAM runs (~0.05 ms, idle time here), used by the container thread.
        let sysctls = if conf.disable_container_interface { Sysctls::shared() } else { Sysctls::private() };
        let addressing = thread.map(|t| match t {
            Ok(handle) => handle
                .join()
                .unwrap_or_else(|_| Addressing::failed(CniError::Internal("IPAM thread panicked".into()))),
            Err(e) => Addressing::failed(CniError::Internal(format!("start the IPAM thread: {e}"))),
        });
        (made, sysctls, addressing)
    });
    let record = |a: &Addressing, undo: &mut Undo| {
        if a.allocated {
            undo.ipam = ipam_type.map(str::to_string);
        }
        undo.masq.clone_from(&a.masq);
    };
    if let Some(a) = &addressing {
        record(a, undo);
    }
    let (bridge, host_veth) = made?;
    let addressing = addressing.unwrap_or_else(|| {
        let a = address_and_masquerade(req, conf, ipam_type);
        record(&a, undo);
        a
    });
    let Addressed { ipam, cplan } = addressing.outcome?;
    // The container side and the bridge's gateway addresses do not depend on each other: configure
    // the container from a second thread (it enters the container namespace) while this one does
    // the gateways.
    let (ctr, host) = std::thread::scope(|s| {
        let (give_back, given_back) = std::sync::mpsc::sync_channel(1);
        let ctr = s.spawn(|| {
            let sysctls = sysctls;
            let give_back = give_back;
            netns.run(|| {
                container::configure(conf, &req.ifname, &cplan, &ipam.ips, sysctls, |done| drop(give_back.send(done)))
            })
        });
        let host = if conf.is_gateway {
            let gws = plan::bridge_gateways(&ipam.ips);
            host::set_gateway_addrs(nl, conf, &bridge.link, &gws).and_then(|()| host::enable_forwarding(nl, &gws))
        } else {
            Ok(())
        };
        // The private procfs instance goes here, once the container thread has written its sysctls:
        // dropping it waits for a grace period, which this thread can spend while that one goes on.
        drop(given_back.recv());
        let ctr = ctr.join().unwrap_or_else(|_| Err(CniError::Internal("container configuration thread panicked".into())));
        (ctr, host)
    });
    let ctr = ctr?;
    host?;
    // Read MACs as they are now: the bridge's may have changed when the port joined.
    let bridge_now = nl.link_by_index(bridge.link.index)?.unwrap_or(bridge.link);
    let links = plan::Links {
        bridge: &conf.bridge,
        bridge_mac: host::mac_string(&bridge_now),
        host: &host_veth.name,
        host_mac: host::mac_string(&host_veth),
        container: &req.ifname,
        container_mac: host::mac_string(&ctr),
        netns: &req.netns,
        mtu: None,
    };
    Ok(plan::result(&links, &ipam, cplan.routes, req.conf.dns.as_ref()))
}

impl Plugin for Bridge {
    fn name(&self) -> &'static str {
        "bridge"
    }

    fn known_args(&self) -> &'static [&'static str] {
        &["MAC", "IP"]
    }

    fn add(&self, req: &Request) -> Result<CniResult, CniError> {
        let conf = config::parse(req)?;
        let mut nl = Netlink::open()?;
        let mut undo = Undo::default();
        match add(req, &conf, &mut nl, &mut undo) {
            Ok(r) => Ok(r),
            Err(e) => {
                undo.run(req, &conf, &mut nl);
                Err(e)
            }
        }
    }

    fn del(&self, req: &Request) -> Result<(), CniError> {
        let conf = config::parse(req)?;
        // Three independent parts, overlapped: the IPAM release (its own process), deleting the
        // veth pair (returns once both ends are gone; the kernel's RCU wait before freeing them is
        // left to a helper process) and the masquerade teardown (whose socket release waits for
        // one too: handed to the same helper). Errors are reported in that order. An IPAM that
        // may still use the interface (dhcp releases its lease over it) finishes first, as in the
        // reference.
        let mut ipam: Result<(), CniError> = Ok(());
        let mut ipam_running = None;
        if let Some(t) = &conf.ipam_type {
            match invoke::start(t, Command::Del, req) {
                Ok(r) if plan::ipam_independent_of_interface(t) => ipam_running = Some(r),
                Ok(r) => ipam = r.finish().map(drop),
                Err(e) => ipam = Err(e),
            }
        }
        // Addresses for the masquerade teardown: from prevResult, else from the interface itself.
        let mut addrs: Vec<IpNetwork> = match req.prev_result() {
            Ok(Some(prev)) => prev.ips.iter().map(|ip| ip.address).collect(),
            _ => vec![],
        };
        // The namespace may be gone, and with it the container end of the veth pair.
        let ns = if req.netns.is_empty() { None } else { NetNs::open(&req.netns).ok() };
        let found = match &ns {
            // Its addresses are needed only when prevResult has none (for the masquerade).
            Some(ns) => ns.run(|| container::find(&req.ifname, addrs.is_empty() && conf.ip_masq)),
            None => Ok(None),
        };
        let (found, find_error) = match found {
            Ok(f) => (f, None),
            Err(e) => (None, Some(e)),
        };
        if let Some((_, a)) = &found {
            if addrs.is_empty() {
                addrs = a.clone();
            }
        }
        let (container, masq) = std::thread::scope(|s| {
            let deleting = match (&ns, &found) {
                (Some(ns), Some((index, _))) => {
                    let index = *index;
                    Some(s.spawn(move || ns.run(|| container::delete(&req.ifname, index))))
                }
                _ => None,
            };
            let masq = if conf.ip_masq {
                // Found by (network, container ID, ifname) even without addresses or netns.
                let k = key(req);
                cni_firewall::teardown_each(conf.ip_masq_backend.as_deref(), |fw| fw.del_masquerade(&k, &addrs))
            } else {
                Ok(())
            };
            let container = match deleting {
                Some(h) => h.join().unwrap_or_else(|_| Err(CniError::Internal("interface deletion thread panicked".into()))),
                None => find_error.map_or(Ok(None), Err),
            };
            (container, masq)
        });
        // The masquerade teardown's nf_tables socket waits, when released, for the kernel to
        // destroy what it deleted (a grace period): the deletion's helper, which outlives this
        // process, releases it instead of this process's exit.
        if let Ok(Some(helper)) = &container {
            if let Some(sock) = cni_firewall::nft::netlink::take_kept_socket() {
                helper.hand_over(sock.as_fd());
            }
        }
        let container = container.map(drop);
        if let Some(r) = ipam_running {
            ipam = r.finish().map(drop);
        }
        ipam.and(container).and(masq)
    }

    fn check(&self, req: &Request) -> Result<(), CniError> {
        let conf = config::parse(req)?;
        crate::check::check(req, &conf)
    }

    fn status(&self, req: &Request) -> Result<(), CniError> {
        let conf = config::parse(req)?;
        if let Some(t) = &conf.ipam_type {
            invoke::delegate(t, Command::Status, req)?;
        }
        if conf.ip_masq {
            firewall(&conf)?.status().map_err(|e| CniError::NotAvailable(format!("ipMasq firewall backend: {e}")))?;
        }
        Ok(())
    }

    fn gc(&self, req: &Request) -> Result<(), CniError> {
        let conf = config::parse(req)?;
        let mut errors = Vec::new();
        if let Some(t) = &conf.ipam_type {
            if let Err(e) = invoke::delegate(t, Command::Gc, req) {
                errors.push(e);
            }
        }
        if conf.ip_masq {
            let valid: Vec<AttachmentKey> = cni_common::gc::valid_attachments(&req.raw)?
                .into_iter()
                .map(|a| AttachmentKey { network: req.conf.name.clone(), container_id: a.container_id, ifname: a.ifname })
                .collect();
            let net = &req.conf.name;
            if let Err(e) = cni_firewall::teardown_each(conf.ip_masq_backend.as_deref(), |fw| fw.gc_masquerade(net, &valid)) {
                errors.push(e);
            }
        }
        match errors.into_iter().next() {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }
}
