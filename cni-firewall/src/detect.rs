//! Backend choice and iptables tool discovery.

use crate::exec::{find_program, CommandRunner, ProcessRunner};
use crate::{Backend, CniError, Family};
use std::path::{Path, PathBuf};

/// Which iptables implementation the binaries drive.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IptablesVariant {
    /// iptables-nft (xtables-nft-multi): rules live in nf_tables tables `ip nat`, `ip6 nat`, ...
    Nft,
    /// iptables-legacy (xtables-legacy-multi): the x_tables kernel API, serialised by the xtables lock.
    Legacy,
    /// A plain `iptables-restore` we could not classify; used as is.
    Unknown,
}

/// save/restore binaries for one family.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FamilyTools {
    pub save: PathBuf,
    pub restore: PathBuf,
}

/// The iptables tools of the host, per family.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IptablesTools {
    pub variant: IptablesVariant,
    pub v4: Option<FamilyTools>,
    pub v6: Option<FamilyTools>,
}

impl IptablesTools {
    pub fn family(&self, fam: Family) -> Option<&FamilyTools> {
        match fam {
            Family::V4 => self.v4.as_ref(),
            Family::V6 => self.v6.as_ref(),
        }
    }

    /// The tools the host's `iptables-restore` alternative points at (`None` without any iptables).
    pub fn detect() -> Option<IptablesTools> {
        let restore = find_program("iptables-restore").or_else(|| find_program("ip6tables-restore"))?;
        Some(Self::for_variant(classify(&restore)))
    }

    /// Tools of one variant, e.g. to force iptables-legacy on an iptables-nft host.
    pub fn for_variant(variant: IptablesVariant) -> IptablesTools {
        let pick = |fam: Family| -> Option<FamilyTools> {
            let p = match fam {
                Family::V4 => "iptables",
                Family::V6 => "ip6tables",
            };
            let find = |suffix: &str| {
                let specific = match variant {
                    IptablesVariant::Nft => find_program(&format!("{p}-nft-{suffix}")),
                    IptablesVariant::Legacy => find_program(&format!("{p}-legacy-{suffix}")),
                    IptablesVariant::Unknown => None,
                };
                specific.or_else(|| find_program(&format!("{p}-{suffix}")))
            };
            Some(FamilyTools { save: find("save")?, restore: find("restore")? })
        };
        IptablesTools { variant, v4: pick(Family::V4), v6: pick(Family::V6) }
    }
}

/// Classify an `iptables-restore` by where its symlinks lead (`xtables-nft-multi`, `iptables-legacy-restore`, ...).
pub fn classify(path: &Path) -> IptablesVariant {
    let mut names = Vec::new();
    let mut cur = path.to_path_buf();
    for _ in 0..16 {
        if let Some(n) = cur.file_name() {
            names.push(n.to_string_lossy().into_owned());
        }
        match std::fs::read_link(&cur) {
            Ok(next) => {
                cur = if next.is_absolute() { next } else { cur.parent().unwrap_or(Path::new("/")).join(next) };
            }
            Err(_) => break,
        }
    }
    if let Ok(c) = std::fs::canonicalize(path) {
        if let Some(n) = c.file_name() {
            names.push(n.to_string_lossy().into_owned());
        }
    }
    for n in names.iter().rev() {
        if n.contains("legacy") {
            return IptablesVariant::Legacy;
        }
        if n.contains("nft") {
            return IptablesVariant::Nft;
        }
    }
    IptablesVariant::Unknown
}

/// Whether an `iptables-save` dump shows rules in use: any rule, any user chain, or a builtin chain
/// whose policy is not ACCEPT.
pub fn save_shows_rules(dump: &str) -> bool {
    for line in dump.lines() {
        let line = line.trim();
        if line.starts_with("-A ") {
            return true;
        }
        if let Some(rest) = line.strip_prefix(':') {
            let mut it = rest.split_whitespace();
            let _name = it.next();
            match it.next() {
                Some("ACCEPT") => {}
                Some(_) => return true, // "-" (user chain) or DROP/REJECT policy
                None => {}
            }
        }
    }
    false
}

/// Pick the backend: the configured one when given (`"nftables"` / `"iptables"`, anything else is
/// an `InvalidConfig` error naming the value); otherwise, and stable across calls: nftables when
/// this project's nftables tables already exist, iptables when the host already uses iptables and
/// has usable iptables tools, else nftables (iptables when nf_tables cannot be used).
pub fn choose_backend(configured: Option<&str>) -> Result<Backend, CniError> {
    choose_backend_with(configured, &ProcessRunner::new())
}

fn configured_backend(configured: Option<&str>) -> Result<Option<Backend>, CniError> {
    match configured {
        Some("nftables") => Ok(Some(Backend::Nftables)),
        Some("iptables") => Ok(Some(Backend::Iptables)),
        Some("") | None => Ok(None),
        Some(other) => Err(CniError::InvalidConfig(format!(
            "unknown firewall backend {other:?} (expected \"nftables\" or \"iptables\")"
        ))),
    }
}

/// What the host's firewall looks like, as far as the backend choice is concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct HostFirewall {
    /// nftables can be programmed: nf_tables answers over netlink (with `CNI_NFT_EXEC=1`: the
    /// `nft` binary is installed and lists the tables).
    pub nft: bool,
    /// A table of this project (`cnirs_*`) exists in nf_tables.
    pub ours_nft: bool,
    /// iptables is in use: iptables-nft tables (`ip`/`ip6` nat, filter, mangle, raw, security) or
    /// loaded iptables-legacy tables.
    pub iptables_in_use: bool,
    /// iptables-restore / ip6tables-restore exist.
    pub iptables_tools: bool,
}

/// Whether `nft list tables` output names iptables-nft tables and tables of ours.
pub fn classify_nft_tables(listing: &str) -> (bool, bool) {
    let tables: Vec<(&str, &str)> = listing
        .lines()
        .filter_map(|line| {
            let mut it = line.split_whitespace();
            (it.next() == Some("table")).then(|| (it.next().unwrap_or(""), it.next().unwrap_or("")))
        })
        .collect();
    classify_tables(tables)
}

/// Whether tables given as (family, name) — `("inet", "cnirs_hostport")` — include tables of ours
/// and iptables-nft tables (`ip`/`ip6` `nat`, `filter`, `mangle`, `raw`, `security`).
pub fn classify_tables<'a>(tables: impl IntoIterator<Item = (&'a str, &'a str)>) -> (bool, bool) {
    let mut ours = false;
    let mut ipt = false;
    for (family, name) in tables {
        if name.starts_with("cnirs_") {
            ours = true;
        }
        if matches!(family, "ip" | "ip6") && matches!(name, "nat" | "filter" | "mangle" | "raw" | "security") {
            ipt = true;
        }
    }
    (ours, ipt)
}

fn legacy_tables_loaded() -> bool {
    // /proc/net follows the thread group leader's namespace; /proc/thread-self/net the calling
    // thread's (the one the tools are spawned from), which is what matters when a caller runs the
    // layer from a thread that entered another network namespace.
    let base = if std::path::Path::new("/proc/thread-self/net").exists() { "/proc/thread-self/net" } else { "/proc/net" };
    ["ip_tables_names", "ip6_tables_names"]
        .iter()
        .any(|f| std::fs::read_to_string(format!("{base}/{f}")).map(|s| !s.trim().is_empty()).unwrap_or(false))
}

/// Observe the host without any process: the nf_tables tables listed over netlink, two /proc
/// reads, and a look for the iptables binaries when they matter. With `CNI_NFT_EXEC=1` the tables are listed by
/// one `nft list tables` through `runner` instead.
pub fn observe_host(runner: &dyn CommandRunner) -> HostFirewall {
    observe_iptables(observe_nft(runner))
}

/// The nf_tables part of [`observe_host`]: whether nf_tables answers, and which tables it holds.
fn observe_nft(runner: &dyn CommandRunner) -> HostFirewall {
    let mut host = HostFirewall::default();
    if crate::nft::exec_selected() {
        if let Some(nft) = find_program("nft") {
            host.nft = true;
            if let Ok(out) = runner.run(&nft, &["list", "tables"], None) {
                if out.success {
                    let (ours, ipt_tables) = classify_nft_tables(&out.stdout);
                    host.ours_nft = ours;
                    host.iptables_in_use |= ipt_tables;
                }
            }
        }
    } else if let Ok(tables) = crate::nft::netlink::list_tables() {
        host.nft = true;
        let (ours, ipt_tables) = classify_tables(tables.iter().map(|(f, n)| (f.as_str(), n.as_str())));
        host.ours_nft = ours;
        host.iptables_in_use |= ipt_tables;
    }
    host
}

/// The rest of [`observe_host`]: loaded iptables-legacy tables, and the iptables tools.
fn observe_iptables(mut host: HostFirewall) -> HostFirewall {
    host.iptables_in_use |= legacy_tables_loaded();
    // The tools matter only when iptables is in use or nf_tables cannot be used (see `choose_for`
    // and `teardown_backends`); finding them walks PATH and resolves the alternatives' symlinks.
    if host.iptables_in_use || !host.nft {
        host.iptables_tools = IptablesTools::detect().is_some_and(|t| t.v4.is_some() || t.v6.is_some());
    }
    host
}

/// The automatic choice for an observed host.
pub fn choose_for(host: &HostFirewall) -> Result<Backend, CniError> {
    if host.ours_nft {
        return Ok(Backend::Nftables);
    }
    if host.iptables_in_use && host.iptables_tools {
        return Ok(Backend::Iptables);
    }
    if host.nft {
        return Ok(Backend::Nftables);
    }
    if host.iptables_tools {
        return Ok(Backend::Iptables);
    }
    Err(CniError::NotAvailable(
        "no firewall backend usable: nf_tables does not answer over netlink and iptables-restore is not installed".into(),
    ))
}

/// [`choose_backend`] spawning through `runner` (nothing, unless `CNI_NFT_EXEC=1`: then at most
/// one `nft list tables`, only when no backend is configured).
pub fn choose_backend_with(configured: Option<&str>, runner: &dyn CommandRunner) -> Result<Backend, CniError> {
    if let Some(b) = configured_backend(configured)? {
        return Ok(b);
    }
    let host = observe_nft(runner);
    // A table of ours decides (the first rule of `choose_for`): the rest is not looked at, which
    // spares every ADD on a host that has them the /proc reads.
    choose_for(&if host.ours_nft { host } else { observe_iptables(host) })
}

/// Backends to remove an attachment's state from (DEL, GC): the configured one, or, when the choice
/// is automatic (and may have changed since ADD), every backend that may hold state of ours.
pub fn teardown_backends(configured: Option<&str>) -> Result<Vec<Backend>, CniError> {
    if let Some(b) = configured_backend(configured)? {
        return Ok(vec![b]);
    }
    let host = observe_host(&ProcessRunner::new());
    let mut out = Vec::new();
    if host.ours_nft {
        out.push(Backend::Nftables);
    }
    if host.iptables_in_use && host.iptables_tools {
        out.push(Backend::Iptables);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn configured_backend() {
        let r = ProcessRunner::new();
        assert_eq!(choose_backend_with(Some("nftables"), &r).unwrap(), Backend::Nftables);
        assert_eq!(choose_backend_with(Some("iptables"), &r).unwrap(), Backend::Iptables);
        let e = choose_backend_with(Some("ebtables"), &r).unwrap_err();
        assert_eq!(e.code(), 7);
        assert!(e.to_string().contains("ebtables"));
        assert_eq!(r.spawned(), 0);
    }

    #[test]
    fn rules_in_use() {
        let empty = "# Generated\n*nat\n:PREROUTING ACCEPT [0:0]\n:POSTROUTING ACCEPT [0:0]\nCOMMIT\n";
        assert!(!save_shows_rules(empty));
        assert!(!save_shows_rules(""));
        assert!(save_shows_rules("*nat\n:CNI-abc - [0:0]\nCOMMIT\n"));
        assert!(save_shows_rules("*filter\n:FORWARD DROP [0:0]\nCOMMIT\n"));
        assert!(save_shows_rules("*filter\n:FORWARD ACCEPT [0:0]\n-A FORWARD -j DOCKER\nCOMMIT\n"));
    }

    #[test]
    fn nft_listing_classified() {
        assert_eq!(classify_nft_tables(""), (false, false));
        assert_eq!(classify_nft_tables("table inet cnirs_masquerade\n"), (true, false));
        assert_eq!(classify_nft_tables("table ip nat\ntable inet firewalld\n"), (false, true));
        assert_eq!(classify_nft_tables("table ip6 filter\ntable inet cnirs_hostport\n"), (true, true));
        assert_eq!(classify_nft_tables("table inet nat\n"), (false, false));
        assert_eq!(classify_tables([("ip6", "nat"), ("inet", "cnirs_isolation")]), (true, true));
        assert_eq!(classify_tables([("bridge", "filter")]), (false, false));
    }

    #[test]
    fn automatic_choice_is_sticky() {
        let h = |nft, ours_nft, iptables_in_use, iptables_tools| HostFirewall { nft, ours_nft, iptables_in_use, iptables_tools };
        // our nftables state wins over iptables that appeared later
        assert_eq!(choose_for(&h(true, true, true, true)).unwrap(), Backend::Nftables);
        assert_eq!(choose_for(&h(true, false, true, true)).unwrap(), Backend::Iptables);
        assert_eq!(choose_for(&h(true, false, false, true)).unwrap(), Backend::Nftables);
        assert_eq!(choose_for(&h(false, false, false, true)).unwrap(), Backend::Iptables);
        // iptables in use but no tools: nftables
        assert_eq!(choose_for(&h(true, false, true, false)).unwrap(), Backend::Nftables);
        assert_eq!(choose_for(&h(false, false, false, false)).unwrap_err().code(), 50);
    }
}
