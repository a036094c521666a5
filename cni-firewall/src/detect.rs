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
/// an `InvalidConfig` error naming the value); otherwise iptables when the host already has
/// iptables rules and usable iptables tools, else nftables (iptables when `nft` is missing).
pub fn choose_backend(configured: Option<&str>) -> Result<Backend, CniError> {
    choose_backend_with(configured, &ProcessRunner::new())
}

/// [`choose_backend`] spawning through `runner` (at most two `iptables-save` processes, only when
/// no backend is configured).
pub fn choose_backend_with(configured: Option<&str>, runner: &dyn CommandRunner) -> Result<Backend, CniError> {
    match configured {
        Some("nftables") => return Ok(Backend::Nftables),
        Some("iptables") => return Ok(Backend::Iptables),
        Some("") | None => {}
        Some(other) => {
            return Err(CniError::InvalidConfig(format!(
                "unknown firewall backend {other:?} (expected \"nftables\" or \"iptables\")"
            )))
        }
    }
    let ipt = IptablesTools::detect();
    if let Some(tools) = &ipt {
        for fam in Family::BOTH {
            if let Some(t) = tools.family(fam) {
                if let Ok(out) = runner.run(&t.save, &[], None) {
                    if out.success && save_shows_rules(&out.stdout) {
                        return Ok(Backend::Iptables);
                    }
                }
            }
        }
    }
    if find_program("nft").is_some() {
        return Ok(Backend::Nftables);
    }
    if ipt.map(|t| t.v4.is_some() || t.v6.is_some()).unwrap_or(false) {
        return Ok(Backend::Iptables);
    }
    Err(CniError::NotAvailable("no firewall tool found: neither nft nor iptables-restore is installed".into()))
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
}
