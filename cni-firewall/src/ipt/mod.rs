//! iptables backend: the reference layouts, one `iptables-restore --noflush` per family per write.
//!
//! Writes go first as a blind transaction (no read) built so that it fails atomically whenever its
//! assumption does not hold (`-N` of a chain that exists, `-C` guards, `-D` of a rule that is
//! gone). On failure, the table is read once with `iptables-save -t <table>` and an exact
//! transaction computed from it is applied, retried a few times if a concurrent writer changed the
//! table in between (the restore then fails atomically, nothing half-applied).

pub mod plan;
pub mod save;

use crate::detect::{IptablesTools, IptablesVariant};
use crate::exec::{short_err, CommandRunner};
use crate::names::{validate_chain, validate_ifname, validate_key, validate_name};
use crate::{AttachmentKey, Backend, CniError, Family, Firewall, IpNetwork, IsolationSpec, MasqSpec, PortMapSpec};
use save::{parse_table, RestoreScript, SavedTable};
use std::sync::Arc;

const ATTEMPTS: usize = 5;

/// The iptables [`Firewall`].
pub struct IptablesFirewall {
    runner: Arc<dyn CommandRunner>,
    tools: Option<IptablesTools>,
}

impl IptablesFirewall {
    /// Use the host's `iptables-restore` alternative (iptables-nft or iptables-legacy).
    pub fn new(runner: Arc<dyn CommandRunner>) -> Self {
        IptablesFirewall { runner, tools: IptablesTools::detect() }
    }

    /// Use given tools (e.g. [`IptablesTools::for_variant`] to force a variant).
    pub fn with_tools(runner: Arc<dyn CommandRunner>, tools: IptablesTools) -> Self {
        IptablesFirewall { runner, tools: Some(tools) }
    }

    pub fn variant(&self) -> Option<IptablesVariant> {
        self.tools.as_ref().map(|t| t.variant)
    }

    fn has(&self, fam: Family) -> bool {
        self.tools.as_ref().and_then(|t| t.family(fam)).is_some()
    }

    fn tools(&self, fam: Family) -> Result<&crate::detect::FamilyTools, CniError> {
        self.tools.as_ref().and_then(|t| t.family(fam)).ok_or_else(|| {
            CniError::NotAvailable(format!(
                "iptables backend: {} not installed",
                match fam {
                    Family::V4 => "iptables-save/iptables-restore",
                    Family::V6 => "ip6tables-save/ip6tables-restore",
                }
            ))
        })
    }

    /// One `iptables-save -t <table>`.
    pub fn save(&self, fam: Family, table: &str) -> Result<SavedTable, CniError> {
        let t = self.tools(fam)?;
        let out = self.runner.run(&t.save, &["-t", table], None)?;
        if !out.success {
            return Err(CniError::Firewall(format!("{} -t {table}: {}", t.save.display(), short_err(&out))));
        }
        Ok(parse_table(&out.stdout, table))
    }

    /// One `iptables-restore -w --noflush` with `script` on stdin.
    pub fn restore(&self, fam: Family, script: &RestoreScript) -> Result<(), CniError> {
        let t = self.tools(fam)?;
        let out = self.runner.run(&t.restore, &["-w", "--noflush"], Some(script.render().as_bytes()))?;
        if out.success {
            Ok(())
        } else {
            Err(CniError::Firewall(format!("{}: {}", t.restore.display(), short_err(&out))))
        }
    }

    /// Blind attempt (if any), then read-plan-write rounds. `plan` returning `None` = nothing to do.
    fn write(
        &self,
        fam: Family,
        table: &str,
        blind: Option<RestoreScript>,
        plan: impl Fn(&SavedTable) -> Option<RestoreScript>,
    ) -> Result<(), CniError> {
        let mut last = None;
        if let Some(b) = blind {
            match self.restore(fam, &b) {
                Ok(()) => return Ok(()),
                Err(e) => last = Some(e),
            }
        }
        for _ in 0..ATTEMPTS {
            let saved = self.save(fam, table)?;
            let Some(script) = plan(&saved) else { return Ok(()) };
            match self.restore(fam, &script) {
                Ok(()) => return Ok(()),
                Err(e) => last = Some(e),
            }
        }
        Err(last.unwrap_or_else(|| CniError::Firewall("iptables: retries exhausted".into())))
    }

    fn families_of(addrs: &[IpNetwork]) -> Vec<Family> {
        Family::BOTH.into_iter().filter(|f| addrs.iter().any(|a| Family::of_net(a) == *f)).collect()
    }
}

fn validate_portmap(spec: &PortMapSpec) -> Result<(), CniError> {
    validate_key(&spec.key)?;
    if let Some(c) = &spec.external_setmark_chain {
        validate_chain(c)?;
    }
    if spec.mark_masq_bit > 31 {
        return Err(CniError::InvalidConfig(format!("markMasqBit {} is out of range 0-31", spec.mark_masq_bit)));
    }
    for c in spec.conditions_v4.iter().chain(spec.conditions_v6.iter()).flatten() {
        if c.is_empty() || c.chars().any(|ch| ch.is_control()) {
            return Err(CniError::InvalidConfig(format!("invalid iptables condition argument {c:?}")));
        }
    }
    Ok(())
}

impl Firewall for IptablesFirewall {
    fn backend(&self) -> Backend {
        Backend::Iptables
    }

    fn add_masquerade(&self, spec: &MasqSpec) -> Result<(), CniError> {
        validate_key(&spec.key)?;
        for fam in Self::families_of(&spec.addrs) {
            self.write(fam, "nat", plan::plan_masq_add_blind(spec, fam), |t| plan::plan_masq_add(spec, fam, t))
                .map_err(|e| e.context("masquerade"))?;
        }
        Ok(())
    }

    fn del_masquerade(&self, key: &AttachmentKey, addrs: &[IpNetwork]) -> Result<(), CniError> {
        validate_key(key)?;
        let fams = if addrs.is_empty() { Family::BOTH.to_vec() } else { Self::families_of(addrs) };
        for fam in fams {
            if !self.has(fam) {
                continue; // nothing can have been programmed without the tools
            }
            self.write(fam, "nat", plan::plan_masq_del_blind(key, addrs, fam), |t| plan::plan_masq_del(key, addrs, fam, t))
                .map_err(|e| e.context("masquerade teardown"))?;
        }
        Ok(())
    }

    fn check_masquerade(&self, spec: &MasqSpec) -> Result<(), CniError> {
        validate_key(&spec.key)?;
        for fam in Self::families_of(&spec.addrs) {
            let t = self.save(fam, "nat")?;
            plan::check_masq(spec, fam, &t).map_err(CniError::CheckFailed)?;
        }
        Ok(())
    }

    fn gc_masquerade(&self, network: &str, valid: &[AttachmentKey]) -> Result<(), CniError> {
        validate_name("network name", network)?;
        for fam in Family::BOTH {
            if self.has(fam) {
                self.write(fam, "nat", None, |t| plan::plan_masq_gc(network, valid, t))
                    .map_err(|e| e.context("masquerade gc"))?;
            }
        }
        Ok(())
    }

    fn add_portmap(&self, spec: &PortMapSpec) -> Result<(), CniError> {
        validate_portmap(spec)?;
        for fam in Family::BOTH {
            if spec.container(fam).is_none() || spec.mappings.is_empty() {
                continue;
            }
            self.write(fam, "nat", plan::plan_portmap_add_blind(spec, fam), |t| plan::plan_portmap_add(spec, fam, t))
                .map_err(|e| e.context("port mappings"))?;
        }
        Ok(())
    }

    fn del_portmap(&self, key: &AttachmentKey) -> Result<(), CniError> {
        validate_key(key)?;
        for fam in Family::BOTH {
            if self.has(fam) {
                self.write(fam, "nat", None, |t| plan::plan_portmap_del(key, t))
                    .map_err(|e| e.context("port mappings teardown"))?;
            }
        }
        Ok(())
    }

    fn check_portmap(&self, spec: &PortMapSpec) -> Result<(), CniError> {
        validate_portmap(spec)?;
        for fam in Family::BOTH {
            if spec.container(fam).is_none() || spec.mappings.is_empty() {
                continue;
            }
            let t = self.save(fam, "nat")?;
            plan::check_portmap(spec, fam, &t).map_err(CniError::CheckFailed)?;
        }
        Ok(())
    }

    fn gc_portmap(&self, network: &str, valid: &[AttachmentKey]) -> Result<(), CniError> {
        validate_name("network name", network)?;
        for fam in Family::BOTH {
            if self.has(fam) {
                self.write(fam, "nat", None, |t| plan::plan_portmap_gc(network, valid, t))
                    .map_err(|e| e.context("port mappings gc"))?;
            }
        }
        Ok(())
    }

    fn add_isolation(&self, spec: &IsolationSpec) -> Result<(), CniError> {
        validate_ifname("bridge name", &spec.bridge)?;
        for fam in Family::BOTH.into_iter().filter(|f| spec.families.contains(f)) {
            // With allowPublished the check-only transaction proves everything is in place; without
            // it, the absence of the published rule cannot be checked blind: read instead (also one
            // process when nothing is to be done).
            let blind = spec.allow_published.then(|| plan::plan_isolation_check_only(spec));
            self.write(fam, "filter", blind, |t| plan::plan_isolation_add(spec, t))
                .map_err(|e| e.context("isolation"))?;
        }
        Ok(())
    }

    fn del_isolation(&self, bridge: &str) -> Result<(), CniError> {
        validate_ifname("bridge name", bridge)?;
        for fam in Family::BOTH {
            if self.has(fam) {
                self.write(fam, "filter", None, |t| plan::plan_isolation_del(bridge, t))
                    .map_err(|e| e.context("isolation teardown"))?;
            }
        }
        Ok(())
    }

    fn check_isolation(&self, spec: &IsolationSpec) -> Result<(), CniError> {
        validate_ifname("bridge name", &spec.bridge)?;
        for fam in Family::BOTH.into_iter().filter(|f| spec.families.contains(f)) {
            let t = self.save(fam, "filter")?;
            plan::check_isolation(spec, fam, &t).map_err(CniError::CheckFailed)?;
        }
        Ok(())
    }

    fn gc_isolation(&self, valid_bridges: &[String]) -> Result<(), CniError> {
        for fam in Family::BOTH {
            if self.has(fam) {
                self.write(fam, "filter", None, |t| plan::plan_isolation_gc(valid_bridges, t))
                    .map_err(|e| e.context("isolation gc"))?;
            }
        }
        Ok(())
    }

    fn status(&self) -> Result<(), CniError> {
        if !self.has(Family::V4) && !self.has(Family::V6) {
            return Err(CniError::NotAvailable("iptables backend: no iptables-restore/iptables-save found".into()));
        }
        let fam = if self.has(Family::V4) { Family::V4 } else { Family::V6 };
        self.save(fam, "nat")
            .map(|_| ())
            .map_err(|e| CniError::NotAvailable(format!("iptables backend unusable: {e}")))
    }
}
