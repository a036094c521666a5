//! Masquerade (bridge `ipMasq`): table `inet cnirs_masquerade2`.
//!
//! ```text
//! map masq4   { type ipv4_addr : mark . mark . mark }       container address -> owner
//! set exempt4 { type ipv4_addr . ipv4_addr; flags interval } container address . its subnet
//! (masq6, exempt6 likewise)
//! chain postrouting { type nat hook postrouting priority 100; policy accept;
//!     ip daddr 224.0.0.0/4 return
//!     ip saddr . ip daddr @exempt4 return
//!     ip saddr @masq4 masquerade
//!     ip6 daddr ff00::/8 return
//!     ip6 saddr . ip6 daddr @exempt6 return
//!     ip6 saddr @masq6 masquerade }
//! ```
//!
//! The same packets are masqueraded as by the reference's chain per container (`-d <subnet>
//! ACCEPT`, `! -d 224.0.0.0/4 MASQUERADE`): traffic from a container's address, except to its
//! subnets and to multicast. An attachment's exemptions are its addresses times its subnets;
//! its `masq` elements carry its owner (see [`super::owner_data`]), and everything with its
//! address as the first key field is its own.

use super::*;
use crate::MasqSpec;
use std::collections::BTreeSet;

pub const MASQ_TABLE: &str = "cnirs_masquerade2";

pub fn masq_table() -> TableRef {
    TableRef::inet(MASQ_TABLE)
}

pub fn masq_map(fam: Family) -> String {
    format!("masq{}", fam_suffix(fam))
}

pub fn exempt_set(fam: Family) -> String {
    format!("exempt{}", fam_suffix(fam))
}

fn postrouting_rules() -> Vec<Rule> {
    let mut v = Vec::new();
    for f in Family::BOTH {
        v.push(Rule::new(vec![
            Expr::Cmp { field: Field::Daddr(f), negate: false, value: Value::Prefix(multicast(f)) },
            Expr::Verdict(Verdict::Return),
        ]));
        v.push(Rule::new(vec![
            Expr::Lookup { key: vec![Field::Saddr(f), Field::Daddr(f)], set: exempt_set(f), negate: false },
            Expr::Verdict(Verdict::Return),
        ]));
        v.push(Rule::new(vec![
            Expr::Lookup { key: vec![Field::Saddr(f)], set: masq_map(f), negate: false },
            Expr::Masquerade,
        ]));
    }
    v
}

fn skeleton(ops: &mut Vec<Op>) {
    let t = masq_table();
    ops.push(Op::AddTable(t.clone()));
    for f in Family::BOTH {
        let a = DataType::addr(f);
        ops.push(Op::AddSet { table: t.clone(), set: SetDef::map(masq_map(f), vec![a], owner_type()) });
        ops.push(Op::AddSet { table: t.clone(), set: SetDef::interval_set(exempt_set(f), vec![a, a]) });
    }
    fill_base(&t, "postrouting", (ChainType::Nat, Hook::Postrouting, PRIO_SRCNAT), &postrouting_rules(), ops);
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

/// The `exempt` elements of an attachment in family `fam`: each address with each subnet.
pub fn exempt_elems(spec: &MasqSpec, fam: Family) -> Vec<Element> {
    let subnets = outer_subnets(&spec.addrs, fam);
    let set: BTreeSet<Element> = spec
        .addrs
        .iter()
        .filter(|a| Family::of_net(a) == fam)
        .flat_map(|a| subnets.iter().map(move |s| Element::key(vec![Value::Addr(a.ip()), s.clone()])))
        .collect();
    set.into_iter().collect()
}

/// The ADD's plan. Without a state: what an empty table needs. With the state read for it
/// (the `masq` elements of the addresses, the `exempt` elements around them), also the removal of
/// what stands in the way: an address owned by another attachment (compare-and-delete of that
/// element, and its exemptions), exemptions of the address that are not this attachment's.
pub fn plan_masq_add_with_state(spec: &MasqSpec, st: Option<&TableState>) -> Vec<Op> {
    if spec.addrs.is_empty() {
        return Vec::new();
    }
    let t = masq_table();
    let mut ops = Vec::new();
    skeleton(&mut ops);
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
            let stale = |e: &Element| key_addr(e).is_some_and(|a| ours.contains(&a)) && !exempt.contains(e);
            delete_matching(&t, st, &exempt_set(fam), stale, &mut ops);
        }
        ops.push(Op::AddElements { table: t.clone(), set: masq_map(fam), elems: masq });
        ops.push(Op::AddElements { table: t.clone(), set: exempt_set(fam), elems: exempt });
    }
    ops
}

pub fn plan_masq_add(spec: &MasqSpec) -> Vec<Op> {
    plan_masq_add_with_state(spec, None)
}

/// Removal of the attachments owning the `masq` elements `owned` (as read): those elements
/// (compare-and-delete: another owner's newer element survives, the transaction fails and is
/// planned again) and every exemption of their addresses.
fn remove_addresses(st: &TableState, fam: Family, owned: Vec<Element>, ops: &mut Vec<Op>) {
    let t = masq_table();
    let addrs: BTreeSet<IpAddr> = owned.iter().filter_map(key_addr).collect();
    delete_if_unchanged(&t, &masq_map(fam), owned, ops);
    delete_matching(&t, st, &exempt_set(fam), |e| key_addr(e).is_some_and(|a| addrs.contains(&a)), ops);
}

/// DEL by key: the attachment's addresses (found by owner) and their exemptions.
pub fn plan_masq_del(key: &AttachmentKey, st: &TableState) -> Vec<Op> {
    let owner = owner_data(key);
    let mut ops = Vec::new();
    for fam in Family::BOTH {
        let owned: Vec<Element> =
            st.set(&masq_map(fam)).map(|m| m.elems.iter().filter(|e| e.data == owner).cloned().collect()).unwrap_or_default();
        remove_addresses(st, fam, owned, &mut ops);
    }
    ops
}

/// GC: every attachment of `network` whose key is not in `valid`, and exemptions whose address
/// nobody owns (left by hand edits; an ADD makes both in one transaction).
pub fn plan_masq_gc(network: &str, valid: &[AttachmentKey], st: &TableState) -> Vec<Op> {
    let keep: BTreeSet<Vec<Value>> = valid.iter().filter(|k| k.network == network).map(owner_data).collect();
    let mut ops = Vec::new();
    for fam in Family::BOTH {
        let all: Vec<Element> = st.set(&masq_map(fam)).map(|m| m.elems.clone()).unwrap_or_default();
        let owned_addrs: BTreeSet<IpAddr> = all.iter().filter_map(key_addr).collect();
        let stale: Vec<Element> =
            all.into_iter().filter(|e| owner_in_network(&e.data, network) && !keep.contains(&e.data)).collect();
        remove_addresses(st, fam, stale, &mut ops);
        let orphan = |e: &Element| key_addr(e).is_some_and(|a| !owned_addrs.contains(&a));
        delete_matching(&masq_table(), st, &exempt_set(fam), orphan, &mut ops);
    }
    ops
}

pub fn check_masq(spec: &MasqSpec, st: Option<&TableState>) -> Result<(), String> {
    if spec.addrs.is_empty() {
        return Ok(());
    }
    let Some(st) = st else { return Err(format!("table inet {MASQ_TABLE} is missing")) };
    check_rules(st, "postrouting", &postrouting_rules(), "masquerade")?;
    for fam in Family::BOTH {
        let masq = masq_elems(spec, fam);
        if !masq.is_empty() {
            check_elems(st, &masq_map(fam), &masq, "masquerade")?;
            check_elems(st, &exempt_set(fam), &exempt_elems(spec, fam), "masquerade")?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nft::state::SetState;
    use crate::nft::plan::test_util::{key, masq};

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
add set inet cnirs_masquerade2 exempt4 {{ type ipv4_addr . ipv4_addr; flags interval; }}
add map inet cnirs_masquerade2 masq6 {{ type ipv6_addr : mark . mark . mark; }}
add set inet cnirs_masquerade2 exempt6 {{ type ipv6_addr . ipv6_addr; flags interval; }}
add chain inet cnirs_masquerade2 postrouting {{ type nat hook postrouting priority 100; policy accept; }}
flush chain inet cnirs_masquerade2 postrouting
add rule inet cnirs_masquerade2 postrouting ip daddr 224.0.0.0/4 return
add rule inet cnirs_masquerade2 postrouting ip saddr . ip daddr @exempt4 return
add rule inet cnirs_masquerade2 postrouting ip saddr @masq4 masquerade
add rule inet cnirs_masquerade2 postrouting ip6 daddr ff00::/8 return
add rule inet cnirs_masquerade2 postrouting ip6 saddr . ip6 daddr @exempt6 return
add rule inet cnirs_masquerade2 postrouting ip6 saddr @masq6 masquerade
add element inet cnirs_masquerade2 masq4 {{ 10.1.0.5 : {o}, 10.2.0.5 : {o} }}
add element inet cnirs_masquerade2 exempt4 {{ 10.1.0.5 . 10.1.0.0/24, 10.1.0.5 . 10.2.0.0/16, 10.2.0.5 . 10.1.0.0/24, 10.2.0.5 . 10.2.0.0/16 }}
add element inet cnirs_masquerade2 masq6 {{ fd01::5 : {o} }}
add element inet cnirs_masquerade2 exempt6 {{ fd01::5 . fd01::/64 }}
"
        );
        assert_eq!(s, expect);
        let s2 = render_script(&plan_masq_add(&masq("c1", &["10.1.0.5/24", "fd01::5/64"])));
        assert!(s2.contains("add element inet cnirs_masquerade2 exempt4 { 10.1.0.5 . 10.1.0.0/24 }"), "{s2}");
        assert!(plan_masq_add(&masq("c1", &[])).is_empty());
        // nested subnets: only the outer one (an interval set refuses overlaps)
        let nested = render_script(&plan_masq_add(&masq("c1", &["10.1.0.5/24", "10.1.0.6/16"])));
        assert!(nested.contains("exempt4 { 10.1.0.5 . 10.1.0.0/16, 10.1.0.6 . 10.1.0.0/16 }"), "{nested}");
        // a /32 is an address
        let host = render_script(&plan_masq_add(&masq("c1", &["10.1.0.5/32"])));
        assert!(host.contains("exempt4 { 10.1.0.5 . 10.1.0.5 }"), "{host}");
    }

    fn state(masq4: &[(&str, &AttachmentKey)], exempt4: &[(&str, &str)]) -> TableState {
        let mut st = TableState::default();
        let mut m = SetState { name: "masq4".into(), key: vec![DataType::Ipv4Addr], data: SetData::Values(owner_type()), interval: false, elems: vec![] };
        for (a, k) in masq4 {
            m.elems.push(Element::data(vec![Value::Addr(a.parse().unwrap())], owner_data(k)));
        }
        let mut e = SetState { name: "exempt4".into(), key: vec![DataType::Ipv4Addr; 2], data: SetData::None, interval: true, elems: vec![] };
        for (a, s) in exempt4 {
            e.elems.push(Element::key(vec![Value::Addr(a.parse().unwrap()), range(s.parse().unwrap())]));
        }
        st.sets.insert("masq4".into(), m);
        st.sets.insert("exempt4".into(), e);
        st
    }

    #[test]
    fn del_removes_only_own_elements() {
        let (a, b) = (key("a"), key("b"));
        // 10.1.0.5 was reused: now owned by b; a's DEL must not touch it
        let st = state(&[("10.1.0.5", &b), ("10.1.0.6", &a)], &[("10.1.0.5", "10.1.0.0/24"), ("10.1.0.6", "10.1.0.0/24")]);
        let s = render_script(&plan_masq_del(&a, &st));
        assert_eq!(
            s,
            format!(
                "add element inet cnirs_masquerade2 masq4 {{ 10.1.0.6 : {} }}\n\
                 delete element inet cnirs_masquerade2 masq4 {{ 10.1.0.6 }}\n\
                 delete element inet cnirs_masquerade2 exempt4 {{ 10.1.0.6 . 10.1.0.0/24 }}\n",
                marks(&a)
            )
        );
        assert!(plan_masq_del(&key("zz"), &st).is_empty());
    }

    #[test]
    fn add_evicts_stale_owner_and_exemptions() {
        let a = key("a");
        let st = state(&[("10.1.0.5", &a)], &[("10.1.0.5", "10.1.0.0/16")]);
        let s = render_script(&plan_masq_add_with_state(&masq("b", &["10.1.0.5/24"]), Some(&st)));
        let guard = s.find(&format!("add element inet cnirs_masquerade2 masq4 {{ 10.1.0.5 : {} }}", marks(&a))).unwrap();
        let del = s.find("delete element inet cnirs_masquerade2 masq4 { 10.1.0.5 }").unwrap();
        let del_ex = s.find("delete element inet cnirs_masquerade2 exempt4 { 10.1.0.5 . 10.1.0.0/16 }").unwrap();
        let add = s.find(&format!("add element inet cnirs_masquerade2 masq4 {{ 10.1.0.5 : {} }}", marks(&key("b")))).unwrap();
        let add_ex = s.find("add element inet cnirs_masquerade2 exempt4 { 10.1.0.5 . 10.1.0.0/24 }").unwrap();
        assert!(guard < del && del < add && del_ex < add_ex, "{s}");
        // its own, unchanged: nothing deleted
        let st = state(&[("10.1.0.5", &a)], &[("10.1.0.5", "10.1.0.0/24")]);
        assert!(!render_script(&plan_masq_add_with_state(&masq("a", &["10.1.0.5/24"]), Some(&st))).contains("delete"));
    }

    #[test]
    fn gc_keeps_valid_and_other_networks_and_drops_orphans() {
        let (a, b) = (key("a"), key("b"));
        let other = AttachmentKey::new("net2", "x", "eth0");
        let st = state(
            &[("10.1.0.5", &a), ("10.1.0.6", &b), ("10.2.0.6", &other)],
            &[("10.1.0.5", "10.1.0.0/24"), ("10.1.0.6", "10.1.0.0/24"), ("10.2.0.6", "10.2.0.0/24"), ("10.3.0.9", "10.3.0.0/24")],
        );
        let s = render_script(&plan_masq_gc("net1", std::slice::from_ref(&a), &st));
        assert!(s.contains("delete element inet cnirs_masquerade2 masq4 { 10.1.0.6 }"), "{s}");
        assert!(s.contains("10.1.0.6 . 10.1.0.0/24"), "{s}");
        assert!(s.contains("10.3.0.9 . 10.3.0.0/24"), "orphan: {s}");
        assert!(!s.contains("10.1.0.5") && !s.contains("10.2.0.6"), "{s}");
    }

    #[test]
    fn check() {
        let spec = masq("c1", &["10.1.0.5/24"]);
        assert!(check_masq(&spec, None).unwrap_err().contains("missing"));
        let mut st = state(&[("10.1.0.5", &spec.key)], &[("10.1.0.5", "10.1.0.0/24")]);
        assert!(check_masq(&spec, Some(&st)).unwrap_err().contains("postrouting"));
        st.chains.insert(
            "postrouting".into(),
            crate::nft::state::ChainState {
                name: "postrouting".into(),
                hook: Some("postrouting".into()),
                rules: postrouting_rules()
                    .into_iter()
                    .enumerate()
                    .map(|(i, r)| crate::nft::state::RuleState { handle: i as u64, exprs: crate::nft::state::RuleExprs::Decoded(r.exprs), comment: None })
                    .collect(),
            },
        );
        // the v6 sets are absent, but the spec has no v6 address
        check_masq(&spec, Some(&st)).unwrap();
        let other = masq("c2", &["10.1.0.5/24"]);
        assert!(check_masq(&other, Some(&st)).unwrap_err().contains("lacks element"));
    }
}
