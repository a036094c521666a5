//! cni-firewall: the host firewall layer of the suite.
//!
//! Plugins say *what* they need — masquerade a container's addresses (bridge `ipMasq`), map host
//! ports to a container (portmap), isolate a bridge from other isolated bridges — keyed by
//! [`AttachmentKey`] (network name, container ID, ifname). A [`Backend`] decides *how*:
//!
//! - [`Backend::Iptables`]: exactly the reference plugins' chain layout (`CNI-<hash>` masquerade
//!   chains, portmap's `CNI-HOSTPORT-*` and `CNI-DN-<hash>`, `CNI-ISOLATION-STAGE-1/2`), so rules
//!   made by the reference are torn down by this crate and the reverse. Every write is one
//!   `iptables-restore --noflush` (`ip6tables-restore` for IPv6) transaction.
//! - [`Backend::Nftables`]: tables owned by this project (`inet cnirs_masquerade`,
//!   `inet cnirs_hostport`, `inet cnirs_isolation`) where per-packet cost is a map lookup; every
//!   write is one nf_tables transaction, sent over netlink by default (no process, no `nft`
//!   binary needed; [`nft::netlink`]) or through `nft -f -` with `CNI_NFT_EXEC=1`.
//!
//! Planning is pure ([`ipt::plan`], [`nft::plan`]) and unit-tested without root; execution goes
//! through [`exec::CommandRunner`] (spawn counting) and, for nftables, [`nft::NftExecutor`].
//! See README.md for the layouts.

pub mod detect;
pub mod exec;
pub mod ipt;
pub mod names;
pub mod nft;

use std::net::IpAddr;
use std::sync::Arc;

pub use cni_common::error::CniError;
pub use ipnetwork::IpNetwork;

pub use detect::{choose_backend, teardown_backends};

/// Which tool programs the firewall.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Backend {
    Nftables,
    Iptables,
}

impl Backend {
    pub fn as_str(&self) -> &'static str {
        match self {
            Backend::Nftables => "nftables",
            Backend::Iptables => "iptables",
        }
    }
}

impl std::fmt::Display for Backend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// IP address family.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Family {
    V4,
    V6,
}

impl Family {
    pub fn of(addr: &IpAddr) -> Family {
        match addr {
            IpAddr::V4(_) => Family::V4,
            IpAddr::V6(_) => Family::V6,
        }
    }
    pub fn of_net(net: &IpNetwork) -> Family {
        Family::of(&net.ip())
    }
    pub const BOTH: [Family; 2] = [Family::V4, Family::V6];
}

/// Identifies one attachment of a container to a network: the key every operation is made by.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct AttachmentKey {
    pub network: String,
    pub container_id: String,
    pub ifname: String,
}

impl AttachmentKey {
    pub fn new(network: impl Into<String>, container_id: impl Into<String>, ifname: impl Into<String>) -> Self {
        AttachmentKey { network: network.into(), container_id: container_id.into(), ifname: ifname.into() }
    }
}

/// Masquerade (bridge/ptp `ipMasq`) for one attachment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MasqSpec {
    pub key: AttachmentKey,
    /// Container addresses with their prefix length: the subnet (network of each address) is not
    /// masqueraded, everything else except multicast is.
    pub addrs: Vec<IpNetwork>,
}

/// Transport protocol of a port mapping.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Protocol {
    Tcp,
    Udp,
    Sctp,
}

impl Protocol {
    pub fn as_str(&self) -> &'static str {
        match self {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
            Protocol::Sctp => "sctp",
        }
    }
    /// Parse a runtime's protocol string (case-insensitive; empty means tcp, like the reference).
    pub fn parse(s: &str) -> Result<Protocol, CniError> {
        match s.to_ascii_lowercase().as_str() {
            "" | "tcp" => Ok(Protocol::Tcp),
            "udp" => Ok(Protocol::Udp),
            "sctp" => Ok(Protocol::Sctp),
            other => Err(CniError::InvalidConfig(format!("unknown port mapping protocol {other:?}"))),
        }
    }
}

/// One published port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortMapping {
    pub host_port: u16,
    pub container_port: u16,
    pub protocol: Protocol,
    /// Only traffic to this host address is forwarded (`None` or unspecified address: any local address).
    pub host_ip: Option<IpAddr>,
}

/// Port mappings (portmap) for one attachment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortMapSpec {
    pub key: AttachmentKey,
    pub mappings: Vec<PortMapping>,
    /// Container address with prefix (the prefix gives the hairpin source subnet), per family.
    pub container_v4: Option<IpNetwork>,
    pub container_v6: Option<IpNetwork>,
    /// Masquerade hairpin and localhost connections to the mapped ports (reference default true).
    pub snat: bool,
    /// Masquerade every source, not only the container subnet (ipvlan/macvlan setups).
    pub masq_all: bool,
    /// Mark bit (0-31) used by the iptables layout (reference default 13 = 0x2000).
    pub mark_masq_bit: u8,
    /// iptables only: jump to this chain instead of `CNI-HOSTPORT-SETMARK` (e.g. `KUBE-MARK-MASQ`).
    pub external_setmark_chain: Option<String>,
    /// iptables only: extra match arguments for the `CNI-HOSTPORT-DNAT` entry rules, per family.
    pub conditions_v4: Option<Vec<String>>,
    pub conditions_v6: Option<Vec<String>>,
}

impl PortMapSpec {
    /// A spec with the reference defaults (snat, no masqAll, mark bit 13, no conditions).
    pub fn new(key: AttachmentKey, mappings: Vec<PortMapping>) -> Self {
        PortMapSpec {
            key,
            mappings,
            container_v4: None,
            container_v6: None,
            snat: true,
            masq_all: false,
            mark_masq_bit: 13,
            external_setmark_chain: None,
            conditions_v4: None,
            conditions_v6: None,
        }
    }
    pub fn container(&self, fam: Family) -> Option<&IpNetwork> {
        match fam {
            Family::V4 => self.container_v4.as_ref(),
            Family::V6 => self.container_v6.as_ref(),
        }
    }
}

/// Isolation of one bridge: traffic from an isolated bridge to another isolated bridge is dropped
/// (in both directions, since both are isolated); traffic to the uplink and within the bridge is not
/// touched.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IsolationSpec {
    pub bridge: String,
    /// Which families to program (iptables layout is per family; nftables `inet` covers both).
    pub families: Vec<Family>,
    /// Connections DNAT-ed to this bridge (published ports) pass the isolation of other bridges.
    pub allow_published: bool,
}

/// The firewall operations plugins need. One implementation per backend.
///
/// Every write is a single atomic transaction per address family (nftables: one transaction for
/// both). Operations that must find state by key read it first (one `iptables-save -t nat` per
/// family, or one netlink read of the nftables table): see README.md for the exact process counts.
pub trait Firewall: Send + Sync {
    fn backend(&self) -> Backend;

    /// Masquerade traffic from `spec.addrs` leaving their subnets (multicast excepted).
    fn add_masquerade(&self, spec: &MasqSpec) -> Result<(), CniError>;
    /// Remove the masquerade of `key`. `addrs` may be empty (no prevResult): rules are found by key.
    /// Anything already gone is fine.
    fn del_masquerade(&self, key: &AttachmentKey, addrs: &[IpNetwork]) -> Result<(), CniError>;
    /// `CheckFailed` (105) naming what is missing.
    fn check_masquerade(&self, spec: &MasqSpec) -> Result<(), CniError>;
    /// Remove the masquerade of every attachment of `network` not in `valid`.
    fn gc_masquerade(&self, network: &str, valid: &[AttachmentKey]) -> Result<(), CniError>;

    /// Forward the mapped host ports to the container.
    fn add_portmap(&self, spec: &PortMapSpec) -> Result<(), CniError>;
    /// Remove the port mappings of `key` (found by key; the mappings are not needed).
    fn del_portmap(&self, key: &AttachmentKey) -> Result<(), CniError>;
    fn check_portmap(&self, spec: &PortMapSpec) -> Result<(), CniError>;
    fn gc_portmap(&self, network: &str, valid: &[AttachmentKey]) -> Result<(), CniError>;

    /// Isolate `spec.bridge` from every other isolated bridge (idempotent; per bridge, not per container).
    fn add_isolation(&self, spec: &IsolationSpec) -> Result<(), CniError>;
    /// Remove the isolation of `bridge` (call when the bridge goes away). Anything already gone is fine.
    fn del_isolation(&self, bridge: &str) -> Result<(), CniError>;
    fn check_isolation(&self, spec: &IsolationSpec) -> Result<(), CniError>;
    /// Remove the isolation of every bridge not in `valid_bridges`.
    fn gc_isolation(&self, valid_bridges: &[String]) -> Result<(), CniError>;

    /// Whether the backend can run here (binary present, kernel answers).
    fn status(&self) -> Result<(), CniError>;
}

/// Run a teardown (DEL, GC) on every backend that may hold state of ours: the configured one, or
/// each one in use when the choice is automatic (it may have changed since ADD). Every backend is
/// tried; the first error is returned.
pub fn teardown_each(
    configured: Option<&str>,
    mut f: impl FnMut(&dyn Firewall) -> Result<(), CniError>,
) -> Result<(), CniError> {
    let mut first = None;
    for b in teardown_backends(configured)? {
        if let Err(e) = f(&*firewall(b)) {
            first.get_or_insert(e);
        }
    }
    first.map_or(Ok(()), Err)
}

/// Run a CHECK on the chosen backend; when the choice is automatic and that fails, the state may
/// live in another backend in use: it passes if any of them passes.
pub fn check_any(
    configured: Option<&str>,
    f: impl Fn(&dyn Firewall) -> Result<(), CniError>,
) -> Result<(), CniError> {
    let chosen = choose_backend(configured)?;
    let err = match f(&*firewall(chosen)) {
        Ok(()) => return Ok(()),
        Err(e) => e,
    };
    if configured.is_some_and(|c| !c.is_empty()) {
        return Err(err);
    }
    for b in teardown_backends(configured)?.into_iter().filter(|b| *b != chosen) {
        if f(&*firewall(b)).is_ok() {
            return Ok(());
        }
    }
    Err(err)
}

/// The firewall of `backend`, running the system's tools.
pub fn firewall(backend: Backend) -> Box<dyn Firewall> {
    firewall_with_runner(backend, Arc::new(exec::ProcessRunner::new()))
}

/// The firewall of `backend` spawning its processes through `runner` (tests count spawns with it).
/// nftables spawns nothing unless `CNI_NFT_EXEC=1` selects the `nft` executor.
pub fn firewall_with_runner(backend: Backend, runner: Arc<dyn exec::CommandRunner>) -> Box<dyn Firewall> {
    match backend {
        Backend::Iptables => Box::new(ipt::IptablesFirewall::new(runner)),
        Backend::Nftables => Box::new(nft::NftFirewall::default_with_runner(runner)),
    }
}
