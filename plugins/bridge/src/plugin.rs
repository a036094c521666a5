//! The bridge verbs: parse, plan, apply, with rollback of everything an ADD made when it fails.

use crate::config::{self, BridgeConf};
use crate::{container, host, plan};
use cni_common::error::CniError;
use cni_common::invoke;
use cni_common::netlink::{Link, Netlink};
use cni_common::netns::NetNs;
use cni_common::result::CniResult;
use cni_common::skel::{Command, Plugin, Request};
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

/// IPAM (the configured plugin, or none), the container plan, and the masquerade of the
/// container's addresses: everything of an ADD that needs the addresses. What it makes goes on the
/// undo list as it is made.
fn address_and_masquerade(req: &Request, conf: &BridgeConf, undo: &mut Undo) -> Result<Addressed, CniError> {
    let mut ipam = match conf.ipam_type.as_deref() {
        Some(t) => {
            let r = invoke::delegate_add(t, req)?;
            undo.ipam = Some(t.to_string());
            if r.ips.is_empty() {
                return Err(CniError::Delegate { plugin: t.to_string(), reason: "IPAM returned no IP addresses".into() });
            }
            r
        }
        None => CniResult::default(),
    };
    plan::default_gateways(conf, &mut ipam.ips);
    let cplan = plan::container_plan(conf, &ipam)?;
    if conf.ip_masq && !cplan.addrs.is_empty() {
        firewall(conf)?.add_masquerade(&MasqSpec { key: key(req), addrs: cplan.addrs.clone() })?;
        undo.masq = Some(cplan.addrs.clone());
    }
    Ok(Addressed { ipam, cplan })
}

/// The gateway addresses on the bridge, and forwarding on, for `ips` (with `isGateway`).
fn gateway(conf: &BridgeConf, nl: &mut Netlink, bridge: &Link, ips: &[cni_common::result::IpConfig]) -> Result<(), CniError> {
    if !conf.is_gateway {
        return Ok(());
    }
    let gws = plan::bridge_gateways(ips);
    host::set_gateway_addrs(nl, conf, bridge, &gws).and_then(|()| host::enable_forwarding(nl, &gws))
}

/// One thread, one step after the other, in the reference's order: the bridge and the veth pair,
/// IPAM, the masquerade, the container side, the gateways. (Until session 28 IPAM and the
/// masquerade ran on a second thread while this one made the veth pair. That bought no latency on
/// an idle machine and cost 7-8 % more machine time per ADD with 8 parallel ADDs: the thread's
/// start, placement and stack, a second netlink socket, and the two threads spinning on RTNL for
/// each other; conformance/BENCH.md, session 28.)
fn add(req: &Request, conf: &BridgeConf, nl: &mut Netlink, undo: &mut Undo) -> Result<CniResult, CniError> {
    let netns = NetNs::open(&req.netns)?;
    let (bridge, host_veth) = host_side(req, conf, nl, &netns, undo)?;
    let Addressed { ipam, cplan } = address_and_masquerade(req, conf, undo)?;
    // The container side, from this thread in the container's namespace.
    let ctr = netns.run(|| container::configure(conf, &req.ifname, &cplan, &ipam.ips))?;
    // The host end comes up now that the container end is up: carrier at once, one port enable
    // (see host::create_veth).
    nl.set_up(host_veth.index).map_err(|e| CniError::netlink(format!("bring host veth {:?} up", host_veth.name), e))?;
    gateway(conf, nl, &bridge.link, &ipam.ips)?;
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
