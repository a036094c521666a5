//! Masquerade (bridge `ipMasq`): table `inet cnirs_masquerade2`.
//!
//! ```text
//! map masq4      { type ipv4_addr : mark . mark . mark }   container address -> owner
//! set exempt4_24 { type ipv4_addr . ipv4_addr }            container address . subnet address, one set per prefix length in use
//! (masq6, exempt6_<n> likewise)
//! chain postrouting { type nat hook postrouting priority 100; policy accept;
//!     ip daddr 224.0.0.0/4 return
//!     ip saddr . ip daddr & 255.255.255.0 @exempt4_24 return     (one rule per prefix length in use)
//!     ip saddr @masq4 masquerade
//!     ip6 daddr ff00::/8 return
//!     ip6 saddr . ip6 daddr & ffff:ffff:ffff:ffff:: @exempt6_64 return
//!     ip6 saddr @masq6 masquerade }
//! ```
//!
//! The same packets are masqueraded as by the reference's chain per container (`-d <subnet>
//! ACCEPT`, `! -d 224.0.0.0/4 MASQUERADE`): traffic from a container's address, except to its
//! subnets and to multicast. An attachment's exemptions are its addresses times its subnets;
//! its `masq` elements carry its owner (see [`super::owner_data`]), and everything with its
//! address as the first key field is its own. A table made by the previous release also keeps
//! its interval set `exempt4` (`address . subnet` ranges) and the rule looking it up, before the
//! per-length ones, for the attachments made then; nothing adds to it any more.

use super::*;
use crate::MasqSpec;
use std::collections::{BTreeMap, BTreeSet};

pub const MASQ_TABLE: &str = "cnirs_masquerade2";

/// Base name of the exemption sets.
const EXEMPT: &str = "exempt";

pub fn masq_table() -> TableRef {
    TableRef::inet(MASQ_TABLE)
}

pub fn masq_map(fam: Family) -> String {
    format!("masq{}", fam_suffix(fam))
}

/// The previous release's interval set of exemptions.
pub fn exempt_set(fam: Family) -> String {
    format!("{EXEMPT}{}", fam_suffix(fam))
}

/// The exemptions to subnets of prefix length `n`.
pub fn exempt_len_set(fam: Family, n: u8) -> String {
    len_set(EXEMPT, fam, n)
}

fn exempt_rule(f: Family, n: u8) -> Rule {
    Rule::new(vec![
        Expr::Lookup { key: vec![Field::Saddr(f), masked(Field::Daddr(f), n)], set: exempt_len_set(f, n), negate: false },
        Expr::Verdict(Verdict::Return),
    ])
}

/// The previous release's rule looking up its interval set of exemptions.
fn legacy_exempt_rule(f: Family) -> Rule {
    Rule::new(vec![
        Expr::Lookup { key: vec![Field::Saddr(f), Field::Daddr(f)], set: exempt_set(f), negate: false },
        Expr::Verdict(Verdict::Return),
    ])
}

/// The base chain's rules for the exemption sets `sets` (per family).
fn postrouting_rules(sets: &[(Family, PairSets)]) -> Vec<Rule> {
    let mut v = Vec::new();
    for (f, used) in sets {
        let f = *f;
        v.push(Rule::new(vec![
            Expr::Cmp { field: Field::Daddr(f), negate: false, value: Value::Prefix(multicast(f)) },
            Expr::Verdict(Verdict::Return),
        ]));
        if used.legacy {
            v.push(legacy_exempt_rule(f));
        }
        v.extend(used.lengths.iter().map(|n| exempt_rule(f, *n)));
        v.push(Rule::new(vec![
            Expr::Lookup { key: vec![Field::Saddr(f)], set: masq_map(f), negate: false },
            Expr::Masquerade,
        ]));
    }
    v
}

/// The exemption sets the base chain must look up after an ADD of `spec`: those it has (in `st`)
/// and the attachment's.
fn sets_after_add(spec: &MasqSpec, st: Option<&TableState>) -> Vec<(Family, PairSets)> {
    Family::BOTH.iter().map(|f| (*f, PairSets::in_table(st, "postrouting", EXEMPT, *f).with(&exempt_elems(spec, *f)))).collect()
}

fn skeleton(spec: &MasqSpec, st: Option<&TableState>, ops: &mut Vec<Op>) {
    let t = masq_table();
    ops.push(Op::AddTable(t.clone()));
    for f in Family::BOTH {
        let a = DataType::addr(f);
        ops.push(Op::AddSet { table: t.clone(), set: SetDef::map(masq_map(f), vec![a], owner_type()) });
        for n in exempt_elems(spec, f).keys() {
            ops.push(Op::AddSet { table: t.clone(), set: SetDef::set(exempt_len_set(f, *n), vec![a, a]) });
        }
    }
    fill_base(&t, "postrouting", (ChainType::Nat, Hook::Postrouting, PRIO_SRCNAT), &postrouting_rules(&sets_after_add(spec, st)), ops);
}

/// The `masq` elements of an attachment in family `fam`: its addresses, owned by its key.
pub fn masq_elems(spec: &MasqSpec, fam: Family) -> Vec<Element> {
    let owner = owner_data(&spec.key);
    let set: BTreeSet<Element> = spec
        .addrs
        .iter()
        .filter(|a| Family::of_net(a) == fam)
        .map(|a| Element::data(vec![Value::Addr(a.ip())], owner.clone()))
        .collect();
    set.into_iter().collect()
}

/// The exemptions of an attachment in family `fam`, by prefix length: each address with each
/// subnet.
pub fn exempt_elems(spec: &MasqSpec, fam: Family) -> BTreeMap<u8, Vec<Element>> {
    let nets: Vec<IpNetwork> = spec.addrs.iter().filter(|a| Family::of_net(a) == fam).copied().collect();
    let mut out: BTreeMap<u8, Vec<Element>> = BTreeMap::new();
    for a in &nets {
        for (n, elems) in pairs_by_len(a.ip(), nets.iter().copied()) {
            out.entry(n).or_default().extend(elems);
        }
    }
    for elems in out.values_mut() {
        elems.sort();
        elems.dedup();
    }
    out
}

/// Whether an ADD planned from the state read for it (its own keys) needs the whole table: when
/// one of its addresses already has an owner. Another attachment's (a DEL that never came)
/// exemptions, in any set, go with it; this attachment's own from an earlier ADD with other
/// prefix lengths (in the sets of those lengths, or in the earlier release's interval set) are
/// replaced. Only a full read finds them: the read for the ADD holds the sets it adds to. A first
/// ADD reads no more than its keys.
pub fn masq_add_needs_full_read(spec: &MasqSpec, st: &TableState) -> bool {
    Family::BOTH.iter().any(|f| {
        let want = masq_elems(spec, *f);
        st.set(&masq_map(*f)).is_some_and(|m| want.iter().any(|w| m.get(&w.key).is_some()))
    })
}

/// The ADD's plan. Without a state: what an empty table needs. With the state read for it
/// (the base chain, the `masq` elements of the addresses, the exemptions with its keys), also
/// the removal of what stands in the way: an address owned by another attachment
/// (compare-and-delete of that element, and its exemptions), exemptions of the address that are
/// not this attachment's; and the base chain keeps the exemption rules it has.
pub fn plan_masq_add_with_state(spec: &MasqSpec, st: Option<&TableState>) -> Vec<Op> {
    if spec.addrs.is_empty() {
        return Vec::new();
    }
    let t = masq_table();
    let mut ops = Vec::new();
    skeleton(spec, st, &mut ops);
    for fam in Family::BOTH {
        let masq = masq_elems(spec, fam);
        if masq.is_empty() {
            continue;
        }
        let exempt = exempt_elems(spec, fam);
        if let Some(st) = st {
            let ours: BTreeSet<IpAddr> = masq.iter().filter_map(key_addr).collect();
            if let Some(cur) = st.set(&masq_map(fam)) {
                let foreign: Vec<Element> =
                    cur.elems.iter().filter(|e| key_addr(e).is_some_and(|a| ours.contains(&a)) && !masq.contains(e)).cloned().collect();
                delete_if_unchanged(&t, &masq_map(fam), foreign, &mut ops);
            }
            // the address's pairs this ADD does not write (in the set of their length)
            let stale = |n: Option<u8>, e: &Element| {
                key_addr(e).is_some_and(|a| ours.contains(&a)) && !n.and_then(|n| exempt.get(&n)).is_some_and(|k| k.contains(e))
            };
            delete_pairs(&t, st, (EXEMPT, fam), stale, &mut ops);
        }
        ops.push(Op::AddElements { table: t.clone(), set: masq_map(fam), elems: masq });
        for (n, elems) in exempt {
            ops.push(Op::AddElements { table: t.clone(), set: exempt_len_set(fam, n), elems });
        }
    }
    ops
}

pub fn plan_masq_add(spec: &MasqSpec) -> Vec<Op> {
    plan_masq_add_with_state(spec, None)
}

/// Removal of the attachments owning the `masq` elements `owned` (as read): those elements
/// (compare-and-delete: another owner's newer element survives, the transaction fails and is
/// planned again) and every exemption of their addresses, in every exemption set.
fn remove_addresses(st: &TableState, fam: Family, owned: Vec<Element>, ops: &mut Vec<Op>) {
    let t = masq_table();
    let addrs: BTreeSet<IpAddr> = owned.iter().filter_map(key_addr).collect();
    delete_if_unchanged(&t, &masq_map(fam), owned, ops);
    delete_pairs(&t, st, (EXEMPT, fam), |_, e| key_addr(e).is_some_and(|a| addrs.contains(&a)), ops);
}

/// DEL by key: the attachment's addresses (found by owner) and their exemptions.
pub fn plan_masq_del(key: &AttachmentKey, st: &TableState) -> Vec<Op> {
    let owner = owner_data(key);
    let mut ops = Vec::new();
    for fam in Family::BOTH {
        remove_addresses(st, fam, owned_by(st, &masq_map(fam), &owner), &mut ops);
    }
    ops
}

/// GC: every attachment of `network` whose key is not in `valid`, and exemptions whose address
/// nobody owns (left by hand edits; an ADD makes both in one transaction). The sets and rules
/// of prefix lengths stay.
pub fn plan_masq_gc(network: &str, valid: &[AttachmentKey], st: &TableState) -> Vec<Op> {
    let keep: BTreeSet<Vec<Value>> = valid.iter().filter(|k| k.network == network).map(owner_data).collect();
    let mut ops = Vec::new();
    for fam in Family::BOTH {
        let all: Vec<Element> = st.set(&masq_map(fam)).map(|m| m.elems.clone()).unwrap_or_default();
        let owned_addrs: BTreeSet<IpAddr> = all.iter().filter_map(key_addr).collect();
        let stale: Vec<Element> =
            all.into_iter().filter(|e| owner_in_network(&e.data, network) && !keep.contains(&e.data)).collect();
        remove_addresses(st, fam, stale, &mut ops);
        delete_pairs(&masq_table(), st, (EXEMPT, fam), |_, e| key_addr(e).is_some_and(|a| !owned_addrs.contains(&a)), &mut ops);
    }
    ops
}

pub fn check_masq(spec: &MasqSpec, st: Option<&TableState>) -> Result<(), String> {
    if spec.addrs.is_empty() {
        return Ok(());
    }
    let Some(st) = st else { return Err(format!("table inet {MASQ_TABLE} is missing")) };
    // the rules of the multicast returns and the masquerade; the exemptions' (per length, or the
    // earlier release's interval set for attachments made then) with the elements
    let own: Vec<(Family, PairSets)> = Family::BOTH.iter().map(|f| (*f, PairSets::default())).collect();
    check_rules(st, "postrouting", &postrouting_rules(&own), "masquerade")?;
    for fam in Family::BOTH {
        let masq = masq_elems(spec, fam);
        if !masq.is_empty() {
            check_elems(st, &masq_map(fam), &masq, "masquerade")?;
            let subnets: Vec<IpNetwork> = spec.addrs.iter().filter(|a| Family::of_net(a) == fam).map(subnet).collect();
            let rules = (|n| exempt_rule(fam, n), legacy_exempt_rule(fam), subnets.as_slice());
            check_pairs(st, ("postrouting", EXEMPT, fam), &exempt_elems(spec, fam), rules, "masquerade")?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nft::plan::test_util::{key, masq};
    use crate::nft::state::{ChainState, RuleExprs, RuleState, SetState};

    fn marks(k: &AttachmentKey) -> String {
        owner_data(k).iter().map(Value::text).collect::<Vec<_>>().join(" . ")
    }

    #[test]
    fn add_script() {
        let spec = masq("c1", &["10.1.0.5/24", "fd01::5/64", "10.2.0.5/16"]);
        let s = render_script(&plan_masq_add(&spec));
        let o = marks(&spec.key);
        let expect = format!(
            "add table inet cnirs_masquerade2
add map inet cnirs_masquerade2 masq4 {{ type ipv4_addr : mark . mark . mark; }}
add set inet cnirs_masquerade2 exempt4_16 {{ type ipv4_addr . ipv4_addr; }}
add set inet cnirs_masquerade2 exempt4_24 {{ type ipv4_addr . ipv4_addr; }}
add map inet cnirs_masquerade2 masq6 {{ type ipv6_addr : mark . mark . mark; }}
add set inet cnirs_masquerade2 exempt6_64 {{ type ipv6_addr . ipv6_addr; }}
add chain inet cnirs_masquerade2 postrouting {{ type nat hook postrouting priority 100; policy accept; }}
flush chain inet cnirs_masquerade2 postrouting
add rule inet cnirs_masquerade2 postrouting ip daddr 224.0.0.0/4 return
add rule inet cnirs_masquerade2 postrouting ip saddr . ip daddr & 255.255.0.0 @exempt4_16 return
add rule inet cnirs_masquerade2 postrouting ip saddr . ip daddr & 255.255.255.0 @exempt4_24 return
add rule inet cnirs_masquerade2 postrouting ip saddr @masq4 masquerade
add rule inet cnirs_masquerade2 postrouting ip6 daddr ff00::/8 return
add rule inet cnirs_masquerade2 postrouting ip6 saddr . ip6 daddr & ffff:ffff:ffff:ffff:: @exempt6_64 return
add rule inet cnirs_masquerade2 postrouting ip6 saddr @masq6 masquerade
add element inet cnirs_masquerade2 masq4 {{ 10.1.0.5 : {o}, 10.2.0.5 : {o} }}
add element inet cnirs_masquerade2 exempt4_16 {{ 10.1.0.5 . 10.2.0.0, 10.2.0.5 . 10.2.0.0 }}
add element inet cnirs_masquerade2 exempt4_24 {{ 10.1.0.5 . 10.1.0.0, 10.2.0.5 . 10.1.0.0 }}
add element inet cnirs_masquerade2 masq6 {{ fd01::5 : {o} }}
add element inet cnirs_masquerade2 exempt6_64 {{ fd01::5 . fd01:: }}
"
        );
        assert_eq!(s, expect);
        assert!(plan_masq_add(&masq("c1", &[])).is_empty());
        // nested subnets: a pair with each (hash sets hold both)
        let nested = render_script(&plan_masq_add(&masq("c1", &["10.1.0.5/24", "10.1.0.6/16"])));
        assert!(nested.contains("exempt4_16 { 10.1.0.5 . 10.1.0.0, 10.1.0.6 . 10.1.0.0 }"), "{nested}");
        assert!(nested.contains("exempt4_24 { 10.1.0.5 . 10.1.0.0, 10.1.0.6 . 10.1.0.0 }"), "{nested}");
        // a /32 is the address itself, looked up without a mask
        let host = render_script(&plan_masq_add(&masq("c1", &["10.1.0.5/32"])));
        assert!(host.contains("exempt4_32 { 10.1.0.5 . 10.1.0.5 }"), "{host}");
        assert!(host.contains("postrouting ip saddr . ip daddr @exempt4_32 return"), "{host}");
    }

    fn rule_state(r: Rule, handle: u64) -> RuleState {
        RuleState { handle, exprs: RuleExprs::Decoded(r.exprs), comment: None }
    }

    /// A table whose postrouting has the rules for `sets`, and the given elements.
    fn state_with(sets: &[(Family, PairSets)], masq4: &[(&str, &AttachmentKey)], pairs: &[(&str, &str, &str)]) -> TableState {
        let mut st = TableState::default();
        let rules = postrouting_rules(sets).into_iter().enumerate().map(|(i, r)| rule_state(r, i as u64)).collect();
        st.chains.insert("postrouting".into(), ChainState { name: "postrouting".into(), hook: Some("postrouting".into()), rules });
        let mut m = SetState { name: "masq4".into(), key: vec![DataType::Ipv4Addr], data: SetData::Values(owner_type()), interval: false, elems: vec![] };
        for (a, k) in masq4 {
            m.elems.push(Element::data(vec![Value::Addr(a.parse().unwrap())], owner_data(k)));
        }
        st.sets.insert("masq4".into(), m);
        for (set, a, b) in pairs {
            let legacy = *set == "exempt4";
            let e = st.sets.entry(set.to_string()).or_insert_with(|| SetState {
                name: set.to_string(),
                key: vec![DataType::Ipv4Addr; 2],
                data: SetData::None,
                interval: legacy,
                elems: vec![],
            });
            let second = if legacy { Value::Prefix(b.parse().unwrap()) } else { Value::Addr(b.parse().unwrap()) };
            e.elems.push(Element::key(vec![Value::Addr(a.parse().unwrap()), second]));
        }
        st
    }

    fn v4(legacy: bool, lengths: &[u8]) -> Vec<(Family, PairSets)> {
        vec![(Family::V4, PairSets { legacy, lengths: lengths.iter().copied().collect() }), (Family::V6, PairSets::default())]
    }

    #[test]
    fn rules_of_other_lengths_and_the_earlier_set_are_kept() {
        let st = state_with(&v4(true, &[16]), &[], &[]);
        let s = render_script(&plan_masq_add_with_state(&masq("c1", &["10.1.0.5/24"]), Some(&st)));
        let rules: Vec<&str> = s.lines().filter(|l| l.starts_with("add rule")).collect();
        assert_eq!(
            rules,
            [
                "add rule inet cnirs_masquerade2 postrouting ip daddr 224.0.0.0/4 return",
                "add rule inet cnirs_masquerade2 postrouting ip saddr . ip daddr @exempt4 return",
                "add rule inet cnirs_masquerade2 postrouting ip saddr . ip daddr & 255.255.0.0 @exempt4_16 return",
                "add rule inet cnirs_masquerade2 postrouting ip saddr . ip daddr & 255.255.255.0 @exempt4_24 return",
                "add rule inet cnirs_masquerade2 postrouting ip saddr @masq4 masquerade",
                "add rule inet cnirs_masquerade2 postrouting ip6 daddr ff00::/8 return",
                "add rule inet cnirs_masquerade2 postrouting ip6 saddr @masq6 masquerade",
            ]
        );
        // the length is in use already: the plan's refill is the chain as it is (dropped by
        // keep_intact_chains), and only elements are added
        let st = state_with(&v4(false, &[24]), &[], &[]);
        let full = plan_masq_add_with_state(&masq("c1", &["10.1.0.5/24"]), Some(&st));
        let ops = crate::nft::keep_intact_chains(&full, &st);
        assert!(ops.iter().all(|o| !matches!(o, Op::AddRule { .. } | Op::FlushChain { .. } | Op::AddChain { .. })), "{}", render_script(&ops));
    }

    #[test]
    fn del_removes_only_own_elements_in_every_exemption_set() {
        let (a, b) = (key("a"), key("b"));
        // 10.1.0.5 was reused: now owned by b; a's DEL must not touch it
        let st = state_with(
            &v4(true, &[24]),
            &[("10.1.0.5", &b), ("10.1.0.6", &a)],
            &[("exempt4_24", "10.1.0.5", "10.1.0.0"), ("exempt4_24", "10.1.0.6", "10.1.0.0"), ("exempt4", "10.1.0.6", "10.9.0.0/16")],
        );
        let s = render_script(&plan_masq_del(&a, &st));
        assert_eq!(
            s,
            format!(
                "add element inet cnirs_masquerade2 masq4 {{ 10.1.0.6 : {} }}\n\
                 delete element inet cnirs_masquerade2 masq4 {{ 10.1.0.6 }}\n\
                 delete element inet cnirs_masquerade2 exempt4 {{ 10.1.0.6 . 10.9.0.0/16 }}\n\
                 delete element inet cnirs_masquerade2 exempt4_24 {{ 10.1.0.6 . 10.1.0.0 }}\n",
                marks(&a)
            )
        );
        assert!(plan_masq_del(&key("zz"), &st).is_empty());
    }

    #[test]
    fn add_evicts_stale_owner_and_exemptions() {
        let a = key("a");
        let st = state_with(&v4(false, &[16]), &[("10.1.0.5", &a)], &[("exempt4_16", "10.1.0.5", "10.1.0.0")]);
        let spec = masq("b", &["10.1.0.5/24"]);
        assert!(masq_add_needs_full_read(&spec, &st));
        let s = render_script(&plan_masq_add_with_state(&spec, Some(&st)));
        let guard = s.find(&format!("add element inet cnirs_masquerade2 masq4 {{ 10.1.0.5 : {} }}", marks(&a))).unwrap();
        let del = s.find("delete element inet cnirs_masquerade2 masq4 { 10.1.0.5 }").unwrap();
        let del_ex = s.find("delete element inet cnirs_masquerade2 exempt4_16 { 10.1.0.5 . 10.1.0.0 }").unwrap();
        let add = s.find(&format!("add element inet cnirs_masquerade2 masq4 {{ 10.1.0.5 : {} }}", marks(&key("b")))).unwrap();
        let add_ex = s.find("add element inet cnirs_masquerade2 exempt4_24 { 10.1.0.5 . 10.1.0.0 }").unwrap();
        assert!(guard < del && del < add && del_ex < add_ex, "{s}");
        // its own, repeated: a full read (its exemptions of other lengths go), nothing deleted
        // when unchanged; a first ADD reads its keys only
        let st = state_with(&v4(false, &[24]), &[("10.1.0.5", &a)], &[("exempt4_24", "10.1.0.5", "10.1.0.0")]);
        let own = masq("a", &["10.1.0.5/24"]);
        assert!(masq_add_needs_full_read(&own, &st));
        assert!(!render_script(&plan_masq_add_with_state(&own, Some(&st))).contains("delete"));
        assert!(!masq_add_needs_full_read(&masq("a", &["10.1.0.6/24"]), &st));
    }

    /// A repeated ADD from 10.1.0.5/16 to /24: both pairs read `10.1.0.5 . 10.1.0.0`, but the /16
    /// one is stale in its set and goes; the /24 one is added.
    #[test]
    fn repeated_add_with_another_length_of_the_same_network_address() {
        let a = key("a");
        let st = state_with(&v4(false, &[16]), &[("10.1.0.5", &a)], &[("exempt4_16", "10.1.0.5", "10.1.0.0")]);
        let s = render_script(&plan_masq_add_with_state(&masq("a", &["10.1.0.5/24"]), Some(&st)));
        assert!(s.contains("delete element inet cnirs_masquerade2 exempt4_16 { 10.1.0.5 . 10.1.0.0 }"), "{s}");
        assert!(s.contains("add element inet cnirs_masquerade2 exempt4_24 { 10.1.0.5 . 10.1.0.0 }"), "{s}");
    }

    #[test]
    fn gc_keeps_valid_and_other_networks_and_drops_orphans() {
        let (a, b) = (key("a"), key("b"));
        let other = AttachmentKey::new("net2", "x", "eth0");
        let st = state_with(
            &v4(true, &[24]),
            &[("10.1.0.5", &a), ("10.1.0.6", &b), ("10.2.0.6", &other)],
            &[
                ("exempt4_24", "10.1.0.5", "10.1.0.0"),
                ("exempt4_24", "10.1.0.6", "10.1.0.0"),
                ("exempt4_24", "10.2.0.6", "10.2.0.0"),
                ("exempt4_24", "10.3.0.9", "10.3.0.0"),
                ("exempt4", "10.4.0.9", "10.4.0.0/16"),
            ],
        );
        let s = render_script(&plan_masq_gc("net1", std::slice::from_ref(&a), &st));
        assert!(s.contains("delete element inet cnirs_masquerade2 masq4 { 10.1.0.6 }"), "{s}");
        assert!(s.contains("10.1.0.6 . 10.1.0.0"), "{s}");
        assert!(s.contains("10.3.0.9 . 10.3.0.0"), "orphan: {s}");
        assert!(s.contains("exempt4 { 10.4.0.9 . 10.4.0.0/16 }"), "orphan in the earlier set: {s}");
        assert!(!s.contains("10.1.0.5") && !s.contains("10.2.0.6"), "{s}");
        assert!(!s.contains("rule") && !s.contains("chain"), "rules and chains stay: {s}");
    }

    #[test]
    fn check() {
        let spec = masq("c1", &["10.1.0.5/24"]);
        assert!(check_masq(&spec, None).unwrap_err().contains("missing"));
        let mut st = state_with(&v4(false, &[24]), &[("10.1.0.5", &spec.key)], &[("exempt4_24", "10.1.0.5", "10.1.0.0")]);
        // the v6 sets are absent, but the spec has no v6 address
        check_masq(&spec, Some(&st)).unwrap();
        let other = masq("c2", &["10.1.0.5/24"]);
        assert!(check_masq(&other, Some(&st)).unwrap_err().contains("lacks element"));
        // another length's rule does not serve this attachment
        let wider = masq("c1", &["10.1.0.5/16"]);
        assert!(check_masq(&wider, Some(&st)).unwrap_err().contains("exempt4_16"));
        st.chains.clear();
        assert!(check_masq(&spec, Some(&st)).unwrap_err().contains("postrouting"));
    }
}
