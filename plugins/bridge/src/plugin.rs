//! The bridge verbs: parse, plan, apply, with rollback of everything an ADD made when it fails.

use crate::config::{self, BridgeConf};
use crate::{container, host, plan};
use cni_common::apart::spawn_apart;
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
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};
use std::thread::JoinHandle;

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

/// The gateway addresses on the bridge, and forwarding on, for `ips` (with `isGateway`).
fn gateway(conf: &BridgeConf, nl: &mut Netlink, bridge: &Link, ips: &[cni_common::result::IpConfig]) -> Result<(), CniError> {
    if !conf.is_gateway {
        return Ok(());
    }
    let gws = plan::bridge_gateways(ips);
    host::set_gateway_addrs(nl, conf, bridge, &gws).and_then(|()| host::enable_forwarding(nl, &gws))
}

/// The second thread of an ADD whose IPAM never looks at the container's interface: IPAM and the
/// masquerade (handed to the first thread as soon as they are done), then, once the first thread
/// has made the veth pair and sent the bridge, the gateway addresses; last, it drops the private
/// procfs the first thread is done with.
fn second_thread(
    req: &Request,
    conf: &BridgeConf,
    ipam_type: &str,
    addressed: SyncSender<Addressing>,
    bridge: Receiver<Link>,
    procfs: Receiver<Sysctls>,
) -> Option<Result<(), CniError>> {
    let a = address_and_masquerade(req, conf, Some(ipam_type));
    let ips = a.outcome.as_ref().ok().map(|ad| ad.ipam.ips.clone());
    drop(addressed.send(a));
    let gw = match (ips, bridge.recv()) {
        (Some(_), Ok(_)) if !conf.is_gateway => Some(Ok(())),
        (Some(ips), Ok(bridge)) => Some(Netlink::open().map_err(CniError::from).and_then(|mut nl| gateway(conf, &mut nl, &bridge, &ips))),
        _ => None,
    };
    drop(procfs.recv());
    gw
}

/// The first thread's ends of its channels to the [`second_thread`], and that thread. Dropping it
/// closes the channels, which lets the thread finish, and then waits for it: an ADD returns (or
/// rolls back) only once the thread's IPAM and masquerade are over.
struct Second {
    addressed: Receiver<Addressing>,
    bridge: Option<SyncSender<Link>>,
    procfs: Option<SyncSender<Sysctls>>,
    thread: Option<JoinHandle<Option<Result<(), CniError>>>>,
}

impl Second {
    /// Start the second thread, on another CPU than this one's where there is one
    /// (`cni_common::apart`): sharing this thread's CPU, it would take turns with the veth
    /// creation instead of overlapping it.
    fn start(req: &Request, conf: &BridgeConf, ipam_type: &str) -> Result<Second, CniError> {
        let (addressed_tx, addressed) = sync_channel(1);
        let (bridge_tx, bridge_rx) = sync_channel(1);
        let (procfs_tx, procfs_rx) = sync_channel(1);
        let (req, conf, ipam_type) = (req.clone(), conf.clone(), ipam_type.to_string());
        let thread = spawn_apart("ipam", move || second_thread(&req, &conf, &ipam_type, addressed_tx, bridge_rx, procfs_rx))
            .map_err(|e| CniError::Internal(format!("start the IPAM thread: {e}")))?;
        Ok(Second { addressed, bridge: Some(bridge_tx), procfs: Some(procfs_tx), thread: Some(thread) })
    }

    /// The bridge, for the gateway addresses; `None`: the veth pair was not made, no gateways.
    fn send_bridge(&mut self, bridge: Option<Link>) {
        if let (Some(tx), Some(b)) = (self.bridge.take(), bridge) {
            drop(tx.send(b));
        }
    }

    /// What IPAM and the masquerade did.
    fn addressing(&self) -> Addressing {
        self.addressed.recv().unwrap_or_else(|_| Addressing::failed(CniError::Internal("IPAM thread panicked".into())))
    }

    /// Hand the private procfs over, to be dropped there (or here, when the thread is gone).
    fn send_procfs(&self, procfs: Sysctls) {
        if let Some(tx) = &self.procfs {
            drop(tx.send(procfs));
        }
    }

    /// Wait for the thread: `None` when it did not do the gateways (the first thread does them).
    fn join(mut self) -> Option<Result<(), CniError>> {
        self.finish()
    }

    fn finish(&mut self) -> Option<Result<(), CniError>> {
        self.bridge = None;
        self.procfs = None;
        let thread = self.thread.take()?;
        thread.join().unwrap_or_else(|_| Some(Err(CniError::Internal("IPAM thread panicked".into()))))
    }
}

impl Drop for Second {
    fn drop(&mut self) {
        let _ = self.finish();
    }
}

fn add(req: &Request, conf: &BridgeConf, nl: &mut Netlink, undo: &mut Undo) -> Result<CniResult, CniError> {
    let netns = NetNs::open(&req.netns)?;
    let ipam_type = conf.ipam_type.as_deref();
    let record = |a: &Addressing, undo: &mut Undo| {
        if a.allocated {
            undo.ipam = ipam_type.map(str::to_string);
        }
        undo.masq.clone_from(&a.masq);
    };
    // An IPAM plugin that never looks at the container's interface runs, with the masquerade that
    // needs only its addresses, on a second thread while this one makes the veth pair (two
    // threads, two cores); any other (dhcp, ...) runs after it, as in the reference.
    let (mut second, not_started) = match ipam_type.filter(|t| plan::ipam_independent_of_interface(t)).map(|t| Second::start(req, conf, t)) {
        Some(Ok(second)) => (Some(second), None),
        Some(Err(e)) => (None, Some(Addressing::failed(e))),
        None => (None, None),
    };
    let made = host_side(req, conf, nl, &netns, undo);
    // the gateway goes on the bridge once the veth pair is made, as in the reference
    if let Some(second) = &mut second {
        second.send_bridge(made.as_ref().ok().map(|(bridge, _)| bridge.link.clone()));
    }
    // Made while IPAM runs (~0.05 ms, idle time here), used in the container namespace.
    let sysctls = if conf.disable_container_interface { Sysctls::shared() } else { Sysctls::private() };
    let addressing = second.as_ref().map(Second::addressing).or(not_started);
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
    // The container side, from this thread in the container's namespace. The private procfs
    // goes to the second thread once the sysctls are written: dropping it waits for a grace
    // period, which that thread spends while this one goes on.
    let ctr = netns.run(|| {
        container::configure(conf, &req.ifname, &cplan, &ipam.ips, sysctls, |done| match &second {
            Some(second) => second.send_procfs(done),
            None => drop(done),
        })
    });
    // The host end comes up now that the container end is up: carrier at once, one port enable
    // (see host::create_veth).
    let host_up = match &ctr {
        Ok(_) => nl.set_up(host_veth.index).map_err(|e| CniError::netlink(format!("bring host veth {:?} up", host_veth.name), e)),
        Err(_) => Ok(()),
    };
    let gw = second.and_then(Second::join);
    let ctr = ctr?;
    host_up?;
    // without the second thread (or when it could not do them): the gateways here
    match gw {
        Some(r) => r?,
        None => gateway(conf, nl, &bridge.link, &ipam.ips)?,
    }
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
