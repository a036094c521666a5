//! nftables backend: project-owned tables, one transaction per write.
//!
//! [`plan`] is pure; [`NftExecutor`] applies a list of [`ops::Op`] as one transaction and reads a
//! table back. Two executors:
//!
//! - [`netlink::NftNetlink`], the default: nf_tables over netlink, no process at all, works
//!   without the `nft` binary;
//! - [`NftCli`]: runs `nft -f -` / `nft -j list table` (one process per transaction or read),
//!   selected with `CNI_NFT_EXEC=1` in the environment (see [`exec_selected`]) or explicitly
//!   through [`NftFirewall::new`] (the equivalence tests compare the two).
//!
//! Both write the same kernel objects and read them into the same [`state::TableState`].

pub mod netlink;
pub mod ops;
pub mod plan;
pub mod state;

use crate::exec::{find_program, short_err, CommandRunner};
use crate::names::{validate_ifname, validate_key};
use crate::{AttachmentKey, Backend, CniError, Firewall, IpNetwork, IsolationSpec, MasqSpec, PortMapSpec};
use ops::{render_script, Op, TableRef};
use plan::legacy;
use state::TableState;
use std::path::PathBuf;
use std::sync::Arc;

/// Applies operations and reads tables.
pub trait NftExecutor: Send + Sync {
    /// Apply `ops` as one atomic transaction (nothing happens when it fails). Empty = no-op.
    fn apply(&self, ops: &[Op]) -> Result<(), CniError>;
    /// The current content of a table, `None` when it does not exist.
    fn list_table(&self, table: &TableRef) -> Result<Option<TableState>, CniError>;
    /// Whether nftables can be used at all (`NotAvailable` when not).
    fn probe(&self) -> Result<(), CniError>;
    /// Whether the executor has a way to reach the kernel at all (binary installed, ...).
    fn present(&self) -> bool;
    /// Whether reading a table is cheap (no process). ADD then plans from a read and leaves the
    /// chains whose rules are already in place untouched (see [`keep_intact_chains`]).
    fn cheap_reads(&self) -> bool {
        false
    }
    /// What an ADD whose blind plan is `ops` depends on: the chains it fills and, in the sets it
    /// adds elements to, the elements with those keys (the whole table by default).
    fn read_for_add(&self, table: &TableRef, ops: &[Op]) -> Result<Option<TableState>, CniError> {
        let _ = ops;
        self.list_table(table)
    }
}

/// Executor running `nft -f -` (writes, script on stdin) and `nft -j list table` (reads).
pub struct NftCli {
    runner: Arc<dyn CommandRunner>,
    nft: Option<PathBuf>,
}

impl NftCli {
    pub fn new(runner: Arc<dyn CommandRunner>) -> Self {
        NftCli { runner, nft: find_program("nft") }
    }

    fn bin(&self) -> Result<&std::path::Path, CniError> {
        self.nft
            .as_deref()
            .ok_or_else(|| CniError::NotAvailable("nftables backend: the nft binary is not installed".into()))
    }
}

impl NftExecutor for NftCli {
    fn apply(&self, ops: &[Op]) -> Result<(), CniError> {
        let script = render_script(ops);
        if script.is_empty() {
            return Ok(());
        }
        let out = self.runner.run(self.bin()?, &["-f", "-"], Some(script.as_bytes()))?;
        if out.success {
            Ok(())
        } else {
            Err(CniError::Firewall(format!("nft transaction failed: {}", short_err(&out))))
        }
    }

    fn list_table(&self, table: &TableRef) -> Result<Option<TableState>, CniError> {
        let out = self.runner.run(self.bin()?, &["-j", "list", "table", table.family.as_str(), &table.name], None)?;
        if !out.success {
            if out.stderr.contains("No such file or directory") {
                return Ok(None);
            }
            return Err(CniError::Firewall(format!(
                "nft list table {} {}: {}",
                table.family.as_str(),
                table.name,
                short_err(&out)
            )));
        }
        TableState::parse(&out.stdout).map(Some)
    }

    fn probe(&self) -> Result<(), CniError> {
        let out = self.runner.run(self.bin()?, &["-j", "list", "tables"], None)?;
        if out.success {
            Ok(())
        } else {
            Err(CniError::NotAvailable(format!("nftables backend unusable: {}", short_err(&out))))
        }
    }

    fn present(&self) -> bool {
        self.nft.is_some()
    }
}

/// How many read-plan-write rounds a write retries when a concurrent writer changed the table.
const ATTEMPTS: usize = 5;

/// The nftables [`Firewall`].
pub struct NftFirewall {
    exec: Arc<dyn NftExecutor>,
}

/// Environment variable selecting the `nft`-process executor for [`Backend::Nftables`]
/// (`CNI_NFT_EXEC=1`); without it the netlink executor is used.
pub const EXEC_ENV: &str = "CNI_NFT_EXEC";

/// Whether `CNI_NFT_EXEC=1` selects the executor running the `nft` binary.
pub fn exec_selected() -> bool {
    std::env::var_os(EXEC_ENV).is_some_and(|v| v == "1")
}

/// Whether nftables can be programmed here by the selected executor: nf_tables answers over
/// netlink (or, with `CNI_NFT_EXEC=1`, the `nft` binary is installed).
pub fn usable() -> bool {
    if exec_selected() {
        find_program("nft").is_some()
    } else {
        netlink::NftNetlink.probe().is_ok()
    }
}

impl NftFirewall {
    /// The firewall running the `nft` binary through `runner` (the exec executor).
    pub fn new(runner: Arc<dyn CommandRunner>) -> Self {
        NftFirewall { exec: Arc::new(NftCli::new(runner)) }
    }

    /// The firewall programming nf_tables over netlink (no process).
    pub fn native() -> Self {
        NftFirewall { exec: Arc::new(netlink::NftNetlink) }
    }

    /// The default: [`NftFirewall::native`], or [`NftFirewall::new`] with `runner` when
    /// `CNI_NFT_EXEC=1`.
    pub fn default_with_runner(runner: Arc<dyn CommandRunner>) -> Self {
        if exec_selected() {
            NftFirewall::new(runner)
        } else {
            NftFirewall::native()
        }
    }

    pub fn with_executor(exec: Arc<dyn NftExecutor>) -> Self {
        NftFirewall { exec }
    }

    /// Read what the ADD touches (with cheap reads; the whole table otherwise), plan from that
    /// state, keep intact chains, write (retried when the table keeps changing); when
    /// `needs_full` says the plan needs more than that read (another attachment's state to
    /// evict), read the whole table. A plan that makes the table or changes a chain is read
    /// again (the whole table), planned and written under the namespace's lock
    /// ([`creation_lock`]), so that two ADDs each adding a rule (a new prefix length) cannot
    /// refill a chain without the other's, and a flushed chain gets all its rules back.
    /// With `blind` and the `nft` executor, a first transaction goes without a read (one
    /// process), and the read-plan-write follows only if it fails: for plans that are right
    /// whatever the table holds.
    fn add(
        &self,
        table: &TableRef,
        plan: impl Fn(Option<&TableState>) -> Vec<Op>,
        needs_full: impl Fn(&TableState) -> bool,
        blind: bool,
    ) -> Result<(), CniError> {
        let blind_ops = plan(None);
        if blind_ops.is_empty() {
            return Ok(());
        }
        let mut last = None;
        if blind && !self.exec.cheap_reads() {
            match self.exec.apply(&blind_ops) {
                Ok(()) => return Ok(()),
                Err(e) => last = Some(e),
            }
        }
        let mut turn = None;
        let mut locked = false;
        for _ in 0..ATTEMPTS {
            // a chain change is planned from the whole table: a chain that lost rules (flushed)
            // gets back those of every set it serves
            let mut st = if locked { self.exec.list_table(table)? } else { self.exec.read_for_add(table, &blind_ops)? };
            if st.is_none() && !locked {
                // No table: make it under the lock, so that plugins racing to make it (the
                // first ADDs on a host, in parallel) take turns instead of failing on it.
                (turn, locked) = (creation_lock(), true);
                st = self.exec.list_table(table)?;
            }
            if st.as_ref().is_some_and(&needs_full) {
                st = self.exec.list_table(table)?;
            }
            let ops = match &st {
                Some(st) => {
                    let full = plan(Some(st));
                    let ops = keep_intact_chains(&full, st);
                    if changes_nothing(&ops, &full, st) {
                        return Ok(());
                    }
                    ops
                }
                None => create_exclusively(blind_ops.clone()),
            };
            if ops.is_empty() {
                return Ok(());
            }
            if !locked && changes_chains(&ops) {
                // read again under the lock: the chain as the last writer left it
                (turn, locked) = (creation_lock(), true);
                continue;
            }
            match self.exec.apply(&ops) {
                Ok(()) => return Ok(()),
                Err(e) => last = Some(e),
            }
        }
        drop(turn);
        Err(last.unwrap_or_else(|| CniError::Firewall("nft: retries exhausted".into())))
    }

    /// Read, plan, write; nothing to do when the table or the key's state is gone.
    fn remove(&self, table: &TableRef, plan: impl Fn(&TableState) -> Vec<Op>) -> Result<(), CniError> {
        if !self.exec.present() {
            // Without the tool nothing can have been programmed through it.
            return Ok(());
        }
        let mut last = None;
        for _ in 0..ATTEMPTS {
            let Some(st) = self.exec.list_table(table)? else { return Ok(()) };
            let ops = plan(&st);
            if ops.is_empty() {
                return Ok(());
            }
            match self.exec.apply(&ops) {
                Ok(()) => return Ok(()),
                Err(e) => last = Some(e),
            }
        }
        Err(last.unwrap_or_else(|| CniError::Firewall("nft: retries exhausted".into())))
    }

    fn check(&self, table: &TableRef, check: impl Fn(Option<&TableState>) -> Result<(), String>) -> Result<(), CniError> {
        let st = self.exec.list_table(table)?;
        check(st.as_ref()).map_err(CniError::CheckFailed)
    }

    /// CHECK of the current layout; when it fails, the attachment may have been made before an
    /// upgrade: it passes if the earlier layout (`legacy`) holds it. The error is the current
    /// layout's.
    fn check_either(
        &self,
        (table, check): (&TableRef, impl Fn(Option<&TableState>) -> Result<(), String>),
        (legacy_table, legacy_check): (&TableRef, impl Fn(Option<&TableState>) -> Result<(), String>),
    ) -> Result<(), CniError> {
        let err = match self.check(table, check) {
            Ok(()) => return Ok(()),
            Err(e) => e,
        };
        match self.exec.list_table(legacy_table)? {
            Some(st) if legacy_check(Some(&st)).is_ok() => Ok(()),
            _ => Err(err),
        }
    }
}

/// `ops` without the refills of chains that already hold exactly the rules the refill would
/// write: each `add chain X; flush chain X; add rule X ...` run (how plans fill a chain) is dropped
/// when `st` has chain X with those rules, in that order. Tables, sets and elements are kept.
///
/// Why: a transaction that replaces rules destroys the old ones, and nf_tables makes the next
/// release of a netlink socket (the end of every plugin) wait for their RCU-deferred destruction,
/// 8-16 ms; re-adding a base chain counts as an update too. An ADD of one more attachment then
/// only creates objects. A chain changed between the read and the write (flushed by an admin) is
/// left as it is, as a change right after the write would be; the next ADD heals it.
pub fn keep_intact_chains(ops: &[Op], st: &TableState) -> Vec<Op> {
    let mut out = Vec::with_capacity(ops.len());
    let mut i = 0;
    while i < ops.len() {
        if let (Op::AddChain { name, .. }, Some(Op::FlushChain { name: flushed, .. })) = (&ops[i], ops.get(i + 1)) {
            if let Some(current) = st.chain(name).filter(|_| flushed == name) {
                let rules: Vec<&ops::Rule> = ops[i + 2..]
                    .iter()
                    .map_while(|o| match o {
                        Op::AddRule { chain, rule, .. } if chain == name => Some(rule),
                        _ => None,
                    })
                    .collect();
                if rules.len() == current.rules.len() && rules.iter().zip(&current.rules).all(|(r, c)| c.matches(r)) {
                    i += 2 + rules.len();
                    continue;
                }
            }
        }
        out.push(ops[i].clone());
        i += 1;
    }
    out
}

/// Whether `ops`, what [`keep_intact_chains`] left of the plan `full`, would change nothing in
/// `st`: no chain work, the table there, every element there with the same data, and every set
/// there, either read or used by a rule of a chain the plan found intact (the kernel keeps a set
/// while a rule uses it). Such an ADD (isolation of a bridge already isolated, any repeated ADD)
/// writes nothing: a transaction costs the ruleset's commit mutex, and one that adds verdict-map
/// elements a validation of every chain the maps reach, however many are already in them.
pub fn changes_nothing(ops: &[Op], full: &[Op], st: &TableState) -> bool {
    let used_by_intact_chain = |name: &str| {
        full.iter().any(|o| match o {
            Op::AddRule { chain, rule, .. } => {
                !ops.iter().any(|x| matches!(x, Op::AddChain { name: c, .. } if c == chain))
                    && st.chain(chain).is_some()
                    && rule.exprs.iter().any(|e| match e {
                        ops::Expr::Lookup { set, .. } => set == name,
                        ops::Expr::Vmap { map, .. } | ops::Expr::DnatMap { map, .. } => map == name,
                        _ => false,
                    })
            }
            _ => false,
        })
    };
    ops.iter().all(|op| match op {
        Op::AddTable(_) => true,
        Op::AddSet { set, .. } => st.set(&set.name).is_some() || used_by_intact_chain(&set.name),
        Op::AddElements { set, elems, .. } => st.set(set).is_some_and(|s| elems.iter().all(|e| s.elems.contains(e))),
        _ => false,
    })
}

/// Whether `ops` add, flush or delete rules or chains.
fn changes_chains(ops: &[Op]) -> bool {
    ops.iter().any(|o| matches!(o, Op::AddRule { .. } | Op::FlushChain { .. } | Op::DeleteChain { .. }))
}

/// What [`creation_lock`] locks: the network namespace of the calling thread (its nsfs file).
const CREATION_LOCK: &str = "/proc/thread-self/ns/net";

/// An exclusive `flock` on the calling thread's network namespace ([`CREATION_LOCK`]), held while
/// a missing table, or a plan that changes a chain, is read again, planned and written; `None`
/// when it cannot be taken, and the ADD goes on without it. Every process that opens a namespace's file gets the same nsfs inode, so
/// the lock orders exactly the plugins working on that namespace's tables, and nothing is left
/// behind when it is released (no lock file).
///
/// Why: a transaction that fails (the `create table` of a plugin that lost the race to make the
/// table) is rolled back by nf_tables with an RCU grace period (`synchronize_rcu`, 10-17 ms here)
/// while it holds the ruleset's commit mutex, which every other nf_tables writer and every socket
/// release then waits for. With the lock the others wait for the winner's short transaction
/// instead, read again, find the table and only add their own objects. And a chain refilled from
/// a read (a base chain with a rule per prefix length in use) must be read after the last
/// refill, or a concurrent ADD's new rule is lost. Not taken by ADDs that only add elements.
fn creation_lock() -> Option<nix::fcntl::Flock<std::fs::File>> {
    let ns = std::fs::File::open(CREATION_LOCK).ok()?;
    nix::fcntl::Flock::lock(ns, nix::fcntl::FlockArg::LockExclusive).ok()
}

/// `ops` (a plan for a table that was missing when read) with its `add table` turned into
/// `create table`. When plugins race to make the table (the first ADDs on a fresh host, in
/// parallel), the losers' transactions then fail on the table instead of flushing and refilling
/// the chains the winner just made; they read again and find the chains intact. (A refill
/// destroys rules, and each plugin that did one waited for an RCU grace period at exit.)
pub fn create_exclusively(mut ops: Vec<Op>) -> Vec<Op> {
    for op in ops.iter_mut() {
        if let Op::AddTable(t) = op {
            *op = Op::CreateTable(t.clone());
            break;
        }
    }
    ops
}

fn validate_network(network: &str) -> Result<(), CniError> {
    crate::names::validate_name("network name", network)
}

impl Firewall for NftFirewall {
    fn backend(&self) -> Backend {
        Backend::Nftables
    }

    fn add_masquerade(&self, spec: &MasqSpec) -> Result<(), CniError> {
        validate_key(&spec.key)?;
        // a plan without the table's state would drop the exemption rules of other prefix lengths
        self.add(&plan::masq_table(), |st| plan::plan_masq_add_with_state(spec, st), |st| plan::masq_add_needs_full_read(spec, st), false)
            .map_err(|e| e.context("masquerade"))
    }

    fn del_masquerade(&self, key: &AttachmentKey, _addrs: &[IpNetwork]) -> Result<(), CniError> {
        validate_key(key)?;
        self.remove(&plan::masq_table(), |st| plan::plan_masq_del(key, st))
            .and_then(|()| self.remove(&legacy::masq_table(), |st| legacy::plan_masq_del(key, st)))
            .map_err(|e| e.context("masquerade teardown"))
    }

    fn check_masquerade(&self, spec: &MasqSpec) -> Result<(), CniError> {
        validate_key(&spec.key)?;
        self.check_either(
            (&plan::masq_table(), |st: Option<&TableState>| plan::check_masq(spec, st)),
            (&legacy::masq_table(), |st: Option<&TableState>| legacy::check_masq(spec, st)),
        )
    }

    fn gc_masquerade(&self, network: &str, valid: &[AttachmentKey]) -> Result<(), CniError> {
        validate_network(network)?;
        self.remove(&plan::masq_table(), |st| plan::plan_masq_gc(network, valid, st))
            .and_then(|()| self.remove(&legacy::masq_table(), |st| legacy::plan_masq_gc(network, valid, st)))
            .map_err(|e| e.context("masquerade gc"))
    }

    fn add_portmap(&self, spec: &PortMapSpec) -> Result<(), CniError> {
        validate_key(&spec.key)?;
        // markMasqBit and externalSetMarkChain are iptables-only (as in the reference) and ignored;
        // conditions would restrict which traffic is forwarded: refuse rather than ignore them.
        if spec.conditions_v4.as_ref().is_some_and(|c| !c.is_empty()) || spec.conditions_v6.as_ref().is_some_and(|c| !c.is_empty()) {
            return Err(CniError::UnsupportedField(
                "conditionsV4/conditionsV6 are not supported by the nftables backend of this suite; use backend \"iptables\"".into(),
            ));
        }
        // likewise the hairpin rules
        self.add(&plan::hostport_table(), |st| plan::plan_portmap_add_with_state(spec, st), |st| plan::portmap_add_needs_full_read(spec, st), false)
            .map_err(|e| e.context("port mappings"))
    }

    fn del_portmap(&self, key: &AttachmentKey) -> Result<(), CniError> {
        validate_key(key)?;
        self.remove(&plan::hostport_table(), |st| plan::plan_portmap_del(key, st))
            .and_then(|()| self.remove(&legacy::hostport_table(), |st| legacy::plan_portmap_del(key, st)))
            .map_err(|e| e.context("port mappings teardown"))
    }

    fn check_portmap(&self, spec: &PortMapSpec) -> Result<(), CniError> {
        validate_key(&spec.key)?;
        self.check_either(
            (&plan::hostport_table(), |st: Option<&TableState>| plan::check_portmap(spec, st)),
            (&legacy::hostport_table(), |st: Option<&TableState>| legacy::check_portmap(spec, st)),
        )
    }

    fn gc_portmap(&self, network: &str, valid: &[AttachmentKey]) -> Result<(), CniError> {
        validate_network(network)?;
        self.remove(&plan::hostport_table(), |st| plan::plan_portmap_gc(network, valid, st))
            .and_then(|()| self.remove(&legacy::hostport_table(), |st| legacy::plan_portmap_gc(network, valid, st)))
            .map_err(|e| e.context("port mappings gc"))
    }

    fn add_isolation(&self, spec: &IsolationSpec) -> Result<(), CniError> {
        validate_ifname("bridge name", &spec.bridge)?;
        self.add(&plan::isolation_table(), |st| plan::plan_isolation_add_with_state(spec, st), |_| false, true)
            .map_err(|e| e.context("isolation"))
    }

    fn del_isolation(&self, bridge: &str) -> Result<(), CniError> {
        validate_ifname("bridge name", bridge)?;
        if !self.exec.present() {
            return Ok(());
        }
        // Bridge names do not suffer the reuse races of addresses: try the exact delete first.
        if self.exec.apply(&plan::plan_isolation_del_blind(bridge)).is_ok() {
            return Ok(());
        }
        self.remove(&plan::isolation_table(), |st| plan::plan_isolation_del(bridge, st))
            .map_err(|e| e.context("isolation teardown"))
    }

    fn check_isolation(&self, spec: &IsolationSpec) -> Result<(), CniError> {
        validate_ifname("bridge name", &spec.bridge)?;
        self.check(&plan::isolation_table(), |st| plan::check_isolation(spec, st))
    }

    fn gc_isolation(&self, valid_bridges: &[String]) -> Result<(), CniError> {
        self.remove(&plan::isolation_table(), |st| plan::plan_isolation_gc(valid_bridges, st))
            .map_err(|e| e.context("isolation gc"))
    }

    fn status(&self) -> Result<(), CniError> {
        self.exec.probe()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nft::state::{ChainState, RuleState};
    use crate::AttachmentKey;

    fn chain_with(name: &str, rules: &[ops::Rule]) -> ChainState {
        ChainState {
            name: name.into(),
            hook: None,
            rules: rules.iter().enumerate().map(|(i, r)| RuleState { handle: i as u64 + 1, exprs: state::RuleExprs::Decoded(r.exprs.clone()), comment: r.comment.clone() }).collect(),
        }
    }

    fn rules_of(ops: &[Op], chain: &str) -> Vec<ops::Rule> {
        ops.iter()
            .filter_map(|o| match o {
                Op::AddRule { chain: c, rule, .. } if c == chain => Some(rule.clone()),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn an_add_already_in_place_changes_nothing() {
        let spec = MasqSpec { key: AttachmentKey::new("n", "c", "eth0"), addrs: vec!["10.0.0.2/24".parse().unwrap()] };
        let ops = plan::plan_masq_add(&spec);
        let elems: Vec<(String, Vec<ops::Element>)> = ops
            .iter()
            .filter_map(|o| match o {
                Op::AddElements { set, elems, .. } => Some((set.clone(), elems.clone())),
                _ => None,
            })
            .collect();
        assert!(!elems.is_empty());
        // chains intact (dropped by keep_intact_chains), sets and elements present: nothing to do
        let left: Vec<Op> = ops.iter().filter(|o| matches!(o, Op::AddTable(_) | Op::AddSet { .. } | Op::AddElements { .. })).cloned().collect();
        let mut st = TableState::default();
        for o in &ops {
            if let Op::AddSet { set, .. } = o {
                st.sets.insert(set.name.clone(), state::SetState { name: set.name.clone(), key: set.key.clone(), data: set.data.clone(), interval: set.interval, elems: vec![] });
            }
        }
        assert!(!changes_nothing(&left, &ops, &st), "elements missing");
        for (set, es) in &elems {
            st.sets.get_mut(set).unwrap().elems.extend(es.iter().cloned());
        }
        assert!(changes_nothing(&left, &ops, &st));
        // an element pointing elsewhere, a missing set, or any chain work is a change
        let mut other = st.clone();
        let (set, _) = &elems[0];
        for e in &mut other.sets.get_mut(set).unwrap().elems {
            e.verdict = Some(ops::Verdict::Goto("m-other".into()));
        }
        assert!(!changes_nothing(&left, &ops, &other));
        let mut no_set = st.clone();
        no_set.sets.remove(set);
        assert!(!changes_nothing(&left, &ops, &no_set));
        assert!(!changes_nothing(&ops, &ops, &st), "the plan's chain refills are changes");
    }

    #[test]
    fn a_missing_table_is_created_exclusively() {
        let spec = MasqSpec { key: AttachmentKey::new("n", "c", "eth0"), addrs: vec!["10.0.0.2/24".parse().unwrap()] };
        let ops = plan::plan_masq_add(&spec);
        let created = create_exclusively(ops.clone());
        assert_eq!(created.len(), ops.len());
        assert_eq!(created[0], Op::CreateTable(plan::masq_table()));
        assert_eq!(created[0].text(), "create table inet cnirs_masquerade2");
        assert_eq!(created[1..], ops[1..], "only the table changes");
        assert!(!created.iter().any(|o| matches!(o, Op::AddTable(_))));
    }

    #[test]
    fn intact_chains_are_not_refilled() {
        let spec = MasqSpec { key: AttachmentKey::new("n", "c", "eth0"), addrs: vec!["10.0.0.2/24".parse().unwrap()] };
        let ops = legacy::plan_masq_add(&spec);
        let own = legacy::masq_chain(&spec.key);
        let base = rules_of(&ops, "postrouting");
        assert_eq!(base.len(), 2);
        let mut st = TableState::default();
        st.chains.insert("postrouting".into(), chain_with("postrouting", &base));
        let kept = keep_intact_chains(&ops, &st);
        // the base chain's add/flush/refill is gone, everything else stays in order
        assert_eq!(kept.len(), ops.len() - 4);
        assert!(!kept.iter().any(|o| matches!(o, Op::AddChain { name, .. } | Op::FlushChain { name, .. } if name == "postrouting")));
        assert!(rules_of(&kept, "postrouting").is_empty());
        assert_eq!(rules_of(&kept, &own), rules_of(&ops, &own));
        assert!(kept.iter().any(|o| matches!(o, Op::AddElements { .. })));
        assert!(matches!(kept[0], Op::AddTable(_)));
        // an existing chain with the same rules: kept out too; with different rules: refilled
        st.chains.insert(own.clone(), chain_with(&own, &rules_of(&ops, &own)));
        assert_eq!(keep_intact_chains(&ops, &st).len(), ops.len() - 4 - 2 - rules_of(&ops, &own).len());
        st.chains.insert("postrouting".into(), chain_with("postrouting", &base[..1]));
        assert_eq!(rules_of(&keep_intact_chains(&ops, &st), "postrouting"), base, "a rule missing: refill");
        let mut extra = base.clone();
        extra.push(ops::Rule::new(vec![ops::Expr::Masquerade]));
        st.chains.insert("postrouting".into(), chain_with("postrouting", &extra));
        assert_eq!(rules_of(&keep_intact_chains(&ops, &st), "postrouting"), base, "a rule too many: refill");
        let reversed: Vec<ops::Rule> = base.iter().rev().cloned().collect();
        st.chains.insert("postrouting".into(), chain_with("postrouting", &reversed));
        assert_eq!(rules_of(&keep_intact_chains(&ops, &st), "postrouting"), base, "another order: refill");
    }
}
