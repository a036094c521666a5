//! Pure planning for the nftables backend: specs (+ current state) in, operations out.
//!
//! One table per feature, per-packet dispatch by lookups keyed by what the packet carries:
//!
//! - [`masquerade`] (`inet cnirs_masquerade2`) and [`hostport`] (`inet cnirs_hostport2`): no chain
//!   per attachment. Constant base chains look the packet up in data maps and interval sets whose
//!   elements are the attachments' addresses and ports; each attachment's ownership is the data of
//!   its container address's element (three marks: the network's and the key's hash), so an
//!   element is removed only by its owner even when addresses or ports are reused. An ADD only
//!   adds elements, which nf_tables neither validates nor walks on device events: its cost does
//!   not grow with the number of attachments.
//! - [`isolation`] (`inet cnirs_isolation`): per bridge, a verdict map into a chain per bridge.
//! - [`legacy`]: the layouts of earlier versions (`cnirs_masquerade`, `cnirs_hostport`, a chain
//!   per attachment behind verdict maps), which DEL, CHECK and GC still read and tear down.

pub mod hostport;
pub mod isolation;
pub mod legacy;
pub mod masquerade;

pub use hostport::*;
pub use isolation::*;
pub use masquerade::*;

use super::ops::*;
use super::state::TableState;
use crate::names::nft_owner_marks;
use crate::{AttachmentKey, Family};
use ipnetwork::IpNetwork;
use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

pub(crate) const PRIO_DSTNAT: i32 = -100;
pub(crate) const PRIO_FILTER: i32 = 0;
pub(crate) const PRIO_SRCNAT: i32 = 100;

pub(crate) fn addr_val(a: IpAddr) -> Value {
    Value::Addr(a)
}

pub(crate) fn subnet(a: &IpNetwork) -> IpNetwork {
    IpNetwork::new(a.network(), a.prefix()).expect("prefix of a valid network")
}

pub(crate) fn multicast(fam: Family) -> IpNetwork {
    match fam {
        Family::V4 => "224.0.0.0/4".parse().unwrap(),
        Family::V6 => "ff00::/8".parse().unwrap(),
    }
}

pub(crate) fn fam_suffix(fam: Family) -> &'static str {
    match fam {
        Family::V4 => "4",
        Family::V6 => "6",
    }
}

pub(crate) fn base(table: &TableRef, name: &str, kind: ChainType, hook: Hook, priority: i32) -> Op {
    Op::AddChain {
        table: table.clone(),
        name: name.into(),
        base: Some(BaseChain { kind, hook, priority }),
        comment: None,
    }
}

/// A base chain (re)made with exactly `rules`: add (hook, priority), flush, refill.
pub(crate) fn fill_base(table: &TableRef, name: &str, (kind, hook, priority): (ChainType, Hook, i32), rules: &[Rule], ops: &mut Vec<Op>) {
    ops.push(base(table, name, kind, hook, priority));
    ops.push(Op::FlushChain { table: table.clone(), name: name.into() });
    for r in rules {
        ops.push(Op::AddRule { table: table.clone(), chain: name.into(), rule: r.clone() });
    }
}

pub(crate) fn vmap_def(table: &TableRef, name: String, key: Vec<DataType>) -> Op {
    Op::AddSet { table: table.clone(), set: SetDef::vmap(name, key) }
}

/// Replace the content of a (per-key) chain: create if missing, flush, add `rules`.
pub(crate) fn fill_chain(table: &TableRef, name: &str, comment: Option<String>, rules: &[Rule], ops: &mut Vec<Op>) {
    ops.push(Op::AddChain { table: table.clone(), name: name.into(), base: None, comment });
    ops.push(Op::FlushChain { table: table.clone(), name: name.into() });
    for r in rules {
        ops.push(Op::AddRule { table: table.clone(), chain: name.into(), rule: r.clone() });
    }
}

/// Deletes of every element of `maps` pointing at one of `chains`, then the chains themselves.
pub(crate) fn remove_owned(table: &TableRef, st: &TableState, maps: &[String], chains: &[String], ops: &mut Vec<Op>) {
    for m in maps {
        if let Some(set) = st.set(m) {
            let elems: Vec<Element> =
                set.elems.iter().filter(|e| e.verdict.as_ref().and_then(|v| v.target()).is_some_and(|t| chains.iter().any(|c| c == t))).cloned().collect();
            delete_if_unchanged(table, m, elems, ops);
        }
    }
    for c in chains {
        if st.chain(c).is_some() {
            ops.push(Op::DeleteChain { table: table.clone(), name: c.clone() });
        }
    }
}

/// Before adding `wanted` elements: delete those whose key exists pointing at another chain
/// (another owner had the address/port: last writer wins, like the reference).
pub(crate) fn evict_conflicts(table: &TableRef, st: &TableState, set: &str, wanted: &[Element], ops: &mut Vec<Op>) {
    let Some(cur) = st.set(set) else { return };
    let evict: Vec<Element> = wanted
        .iter()
        .filter_map(|w| cur.get(&w.key).filter(|e| e.verdict != w.verdict).cloned())
        .collect();
    delete_if_unchanged(table, set, evict, ops);
}

/// Compare-and-delete of verdict-map elements read earlier: `nft delete element` matches the key
/// only, so first re-add each element with the verdict we read. If another writer re-pointed the
/// key meanwhile (address or port reused), that add fails with EEXIST and the whole transaction
/// aborts — the other owner's element survives and the caller re-reads and re-plans. If the
/// element is unchanged the add is a no-op; if it vanished, add + delete leaves it absent.
pub(crate) fn delete_if_unchanged(table: &TableRef, set: &str, elems: Vec<Element>, ops: &mut Vec<Op>) {
    if elems.is_empty() {
        return;
    }
    let asserted: Vec<Element> = elems.iter().filter(|e| e.has_data()).cloned().collect();
    if !asserted.is_empty() {
        ops.push(Op::AddElements { table: table.clone(), set: set.into(), elems: asserted });
    }
    ops.push(Op::DeleteElements { table: table.clone(), set: set.into(), elems });
}

pub(crate) fn check_rules(st: &TableState, chain: &str, want: &[Rule], what: &str) -> Result<(), String> {
    let Some(c) = st.chain(chain) else { return Err(format!("{what}: chain {chain} is missing")) };
    for r in want {
        if !c.rules.iter().any(|x| x.matches(r)) {
            return Err(format!("{what}: chain {chain} lacks rule `{}`", r.text()));
        }
    }
    Ok(())
}

pub(crate) fn check_elems(st: &TableState, set: &str, want: &[Element], what: &str) -> Result<(), String> {
    let Some(s) = st.set(set) else { return Err(format!("{what}: map {set} is missing")) };
    for e in want {
        if s.get(&e.key) != Some(e) {
            return Err(format!("{what}: map {set} lacks element `{}`", e.text()));
        }
    }
    Ok(())
}


// ---------------------------------------------------------------------------------------------
// Owners and ranges (the layouts without per-attachment chains)
// ---------------------------------------------------------------------------------------------

/// Map data naming the owner of an element: `mark . mark . mark`.
pub(crate) fn owner_type() -> Vec<DataType> {
    vec![DataType::Mark; 3]
}

/// The owner data of `key`: the first 4 bytes of sha512(network), then the first 8 bytes of
/// sha512(network NUL containerID NUL ifname), as three marks.
pub fn owner_data(key: &AttachmentKey) -> Vec<Value> {
    nft_owner_marks(key).iter().map(|m| Value::Mark(*m)).collect()
}

/// Whether owner data belongs to `network` (its first mark).
pub(crate) fn owner_in_network(data: &[Value], network: &str) -> bool {
    let marks = nft_owner_marks(&AttachmentKey::new(network, "", ""));
    data.first() == Some(&Value::Mark(marks[0]))
}

// ---------------------------------------------------------------------------------------------
// Address-and-network pairs, one hash set per prefix length
// ---------------------------------------------------------------------------------------------
//
// Masquerade exemptions (`container address . its subnet`) and hairpin sources (`container
// address . sources`) are pairs of an address and a network. Each prefix length `n` in use has a
// plain hash set `<base><4|6>_<n>` of `address . network address`, looked up with the packet's
// second address masked to `n` bits by one rule per length (`ip saddr . ip daddr & 255.255.255.0
// @exempt4_24`). Adding or deleting an element of a hash set costs the same however many there
// are; the interval sets of the earlier release (`<base><4|6>`, concatenated ranges) copied their
// lookup tables on every change. A rule per length is added, under the namespace lock, by the
// first ADD of that length and then stays (at most 33 + 129); the interval set of the earlier
// release keeps its rule where a table already had it, so its attachments keep working.

pub(crate) fn max_len(fam: Family) -> u8 {
    match fam {
        Family::V4 => 32,
        Family::V6 => 128,
    }
}

/// The set of `base` pairs whose network has prefix length `n`.
pub fn len_set(base: &str, fam: Family, n: u8) -> String {
    format!("{base}{}_{n}", fam_suffix(fam))
}

/// The prefix length of a set named by [`len_set`].
pub(crate) fn len_of_set(base: &str, fam: Family, name: &str) -> Option<u8> {
    let n: u8 = name.strip_prefix(&format!("{base}{}_", fam_suffix(fam)))?.parse().ok()?;
    (n <= max_len(fam)).then_some(n)
}

/// `addr` (an address field) masked to `n` bits; the field itself at full length.
pub(crate) fn masked(addr: Field, n: u8) -> Field {
    match addr {
        Field::Saddr(f) if n < max_len(f) => Field::SaddrMasked(f, n),
        Field::Daddr(f) if n < max_len(f) => Field::DaddrMasked(f, n),
        other => other,
    }
}

/// What a chain of a table looks up of `base` pairs in one family: the earlier release's interval
/// set, and the prefix lengths with a rule.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct PairSets {
    pub legacy: bool,
    pub lengths: BTreeSet<u8>,
}

impl PairSets {
    /// What `st` has (nothing without a state): the pair sets the rules of `chain` look up, and
    /// every pair set it holds. A read of the whole table thus gives a flushed or edited chain
    /// back the rules of every length whose set is there; the read for an ADD holds its own sets
    /// only.
    pub fn in_table(st: Option<&TableState>, chain: &str, base: &str, fam: Family) -> PairSets {
        let mut found = PairSets::default();
        let legacy = format!("{base}{}", fam_suffix(fam));
        let Some(st) = st else { return found };
        let used = st.chain(chain).map(|c| c.rules.as_slice()).unwrap_or_default().iter().flat_map(|r| r.sets_used());
        for set in used.chain(st.sets.keys().cloned()) {
            if set == legacy {
                found.legacy = true;
            } else if let Some(n) = len_of_set(base, fam, &set) {
                found.lengths.insert(n);
            }
        }
        found
    }

    /// These and the lengths of `elems` (per-length elements).
    pub fn with(mut self, elems: &BTreeMap<u8, Vec<Element>>) -> PairSets {
        self.lengths.extend(elems.keys().copied());
        self
    }
}

/// The sets of `st` that hold `base` pairs of `fam`: the earlier release's interval set and the
/// per-length sets.
pub(crate) fn pair_sets_in(st: &TableState, base: &str, fam: Family) -> Vec<String> {
    let legacy = format!("{base}{}", fam_suffix(fam));
    st.sets.keys().filter(|n| **n == legacy || len_of_set(base, fam, n).is_some()).cloned().collect()
}

/// CHECK of `base` pairs of `fam` (`want`, by prefix length): each pair must be found by a rule
/// of `chain`, either in the set of its length, looked up by that length's rule (`len_rule`), or
/// in the earlier release's interval set, looked up by that set's rule (`legacy_rule`): the
/// attachments made before an upgrade stay there, as that release wrote them: `address . range`
/// with the pair's network as the range, or one of `outer` holding it (the masquerade wrote only
/// the outermost of an attachment's nested subnets: an interval set refuses overlaps).
pub(crate) fn check_pairs(
    st: &TableState,
    (chain, base, fam): (&str, &str, Family),
    want: &BTreeMap<u8, Vec<Element>>,
    (len_rule, legacy_rule, outer): (impl Fn(u8) -> Rule, Rule, &[IpNetwork]),
    what: &str,
) -> Result<(), String> {
    let Some(c) = st.chain(chain) else { return Err(format!("{what}: chain {chain} is missing")) };
    let has_rule = |r: &Rule| c.rules.iter().any(|x| x.matches(r));
    let legacy = st.set(&format!("{base}{}", fam_suffix(fam))).filter(|_| has_rule(&legacy_rule));
    // a range as the readers give it back: a prefix, a host as its address
    let as_net = |v: &Value| match v {
        Value::Prefix(p) => Some(subnet(p)),
        Value::Addr(a) => IpNetwork::new(*a, max_len(fam)).ok(),
        _ => None,
    };
    let in_legacy = |e: &Element, n: u8| {
        let (Some(Value::Addr(a)), Some(Value::Addr(net))) = (e.key.first(), e.key.get(1)) else { return false };
        let Ok(pair) = IpNetwork::new(*net, n) else { return false };
        legacy.is_some_and(|s| {
            s.elems.iter().any(|l| {
                l.key.first() == Some(&Value::Addr(*a))
                    && l.key.get(1).and_then(as_net).is_some_and(|r| r == pair || (outer.contains(&r) && r.prefix() <= n && r.contains(*net)))
            })
        })
    };
    for (n, elems) in want {
        let rule = len_rule(*n);
        let set = len_set(base, fam, *n);
        let by_len = has_rule(&rule);
        for e in elems {
            if (by_len && st.set(&set).and_then(|s| s.get(&e.key)) == Some(e)) || in_legacy(e, *n) {
                continue;
            }
            return Err(if by_len {
                format!("{what}: map {set} lacks element `{}`", e.text())
            } else {
                format!("{what}: chain {chain} lacks rule `{}`", rule.text())
            });
        }
    }
    Ok(())
}

/// Deletes of the pairs, in every `base` pair set of `fam` in `st`, that `pred` selects; it is
/// given the set's prefix length (`None`: the earlier release's interval set) and the element.
pub(crate) fn delete_pairs(
    table: &TableRef,
    st: &TableState,
    (base, fam): (&str, Family),
    pred: impl Fn(Option<u8>, &Element) -> bool,
    ops: &mut Vec<Op>,
) {
    for set in pair_sets_in(st, base, fam) {
        let len = len_of_set(base, fam, &set);
        delete_matching(table, st, &set, |e| pred(len, e), ops);
    }
}

/// The elements of map `map` in `st` whose data is `owner`.
pub(crate) fn owned_by(st: &TableState, map: &str, owner: &[Value]) -> Vec<Element> {
    st.set(map).map(|m| m.elems.iter().filter(|e| e.data == owner).cloned().collect()).unwrap_or_default()
}

/// The pairs `addr . net` for each of `nets`, by prefix length (network addresses, deduplicated).
pub(crate) fn pairs_by_len(addr: IpAddr, nets: impl IntoIterator<Item = IpNetwork>) -> BTreeMap<u8, Vec<Element>> {
    let mut out: BTreeMap<u8, BTreeSet<Element>> = BTreeMap::new();
    for n in nets {
        let net = subnet(&n);
        out.entry(net.prefix()).or_default().insert(Element::key(vec![Value::Addr(addr), Value::Addr(net.ip())]));
    }
    out.into_iter().map(|(n, e)| (n, e.into_iter().collect())).collect()
}

/// Deletes of the elements of `set` (as read in `st`) that `pred` selects: for sets whose elements
/// carry no data, so no compare-and-delete guard (the transaction's owner-element deletes guard them).
pub(crate) fn delete_matching(table: &TableRef, st: &TableState, set: &str, pred: impl Fn(&Element) -> bool, ops: &mut Vec<Op>) {
    let Some(cur) = st.set(set) else { return };
    let elems: Vec<Element> = cur.elems.iter().filter(|e| pred(e)).cloned().collect();
    if !elems.is_empty() {
        ops.push(Op::DeleteElements { table: table.clone(), set: set.into(), elems });
    }
}

/// Whether a map element's data is `addr` first (a DNAT target, an owner's key address...).
pub(crate) fn data_addr(e: &Element) -> Option<IpAddr> {
    match e.data.first() {
        Some(Value::Addr(a)) => Some(*a),
        _ => None,
    }
}

/// The first key field of an element as an address.
pub(crate) fn key_addr(e: &Element) -> Option<IpAddr> {
    match e.key.first() {
        Some(Value::Addr(a)) => Some(*a),
        _ => None,
    }
}

#[cfg(test)]
pub(crate) mod test_util {
    use crate::{AttachmentKey, MasqSpec};

    pub fn key(cid: &str) -> AttachmentKey {
        AttachmentKey::new("net1", cid, "eth0")
    }

    pub fn masq(cid: &str, addrs: &[&str]) -> MasqSpec {
        MasqSpec { key: key(cid), addrs: addrs.iter().map(|a| a.parse().unwrap()).collect() }
    }
}
