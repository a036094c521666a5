//! Isolation: table `inet cnirs_isolation`, per bridge (not per attachment).

use super::*;
use crate::names::hash_parts;
use crate::IsolationSpec;
use std::collections::BTreeSet;

pub const ISOLATION_TABLE: &str = "cnirs_isolation";
// ---------------------------------------------------------------------------------------------
// Isolation: table inet cnirs_isolation
//
//   set isolated { type ifname }                   every isolated bridge
//   set published { type ifname }                  isolated bridges whose published ports others reach
//   map by_iif { type ifname : verdict }           bridge -> goto b-<16 hex sha512(bridge)>
//   chain forward { filter forward 0: ct status dnat oifname @published accept;
//                   ct direction reply ct status dnat iifname @published accept; iifname vmap @by_iif }
//   chain b-<hash> { oifname != "<bridge>" oifname @isolated drop }
// ---------------------------------------------------------------------------------------------

pub fn isolation_table() -> TableRef {
    TableRef::inet(ISOLATION_TABLE)
}

pub fn isolation_chain(bridge: &str) -> String {
    format!("b-{}", hash_parts(&[bridge], 16))
}

fn isolation_forward_rules() -> [Rule; 3] {
    [
        // to a published port of an allowPublished bridge...
        Rule::new(vec![
            Expr::CtStatusDnat,
            Expr::Lookup { key: vec![Field::Oifname], set: "published".into(), negate: false },
            Expr::Verdict(Verdict::Accept),
        ]),
        // ...and its answers, whatever the client's bridge says
        Rule::new(vec![
            Expr::CtDirectionReply,
            Expr::CtStatusDnat,
            Expr::Lookup { key: vec![Field::Iifname], set: "published".into(), negate: false },
            Expr::Verdict(Verdict::Accept),
        ]),
        Rule::new(vec![Expr::Vmap { key: vec![Field::Iifname], map: "by_iif".into() }]),
    ]
}

fn published_elem(bridge: &str) -> Element {
    Element::key(vec![Value::Ifname(bridge.into())])
}

fn isolation_bridge_rule(bridge: &str) -> Rule {
    Rule::new(vec![
        Expr::Cmp { field: Field::Oifname, negate: true, value: Value::Ifname(bridge.into()) },
        Expr::Lookup { key: vec![Field::Oifname], set: "isolated".into(), negate: false },
        Expr::Verdict(Verdict::Drop),
    ])
}

fn isolation_elems(bridge: &str) -> (Element, Element) {
    (
        Element::key(vec![Value::Ifname(bridge.into())]),
        Element::verdict(vec![Value::Ifname(bridge.into())], Verdict::Goto(isolation_chain(bridge))),
    )
}

pub fn plan_isolation_add(spec: &IsolationSpec) -> Vec<Op> {
    plan_isolation_add_with_state(spec, None)
}

pub fn plan_isolation_add_with_state(spec: &IsolationSpec, st: Option<&TableState>) -> Vec<Op> {
    let t = isolation_table();
    let br = &spec.bridge;
    let mut ops = vec![
        Op::AddTable(t.clone()),
        Op::AddSet { table: t.clone(), set: SetDef::set("isolated", vec![DataType::Ifname]) },
        Op::AddSet { table: t.clone(), set: SetDef::set("published", vec![DataType::Ifname]) },
        vmap_def(&t, "by_iif".into(), vec![DataType::Ifname]),
        base(&t, "forward", ChainType::Filter, Hook::Forward, PRIO_FILTER),
        Op::FlushChain { table: t.clone(), name: "forward".into() },
    ];
    for rule in isolation_forward_rules() {
        ops.push(Op::AddRule { table: t.clone(), chain: "forward".into(), rule });
    }
    fill_chain(&t, &isolation_chain(br), Some(format!("bridge: {}", crate::names::sanitize(br))), &[isolation_bridge_rule(br)], &mut ops);
    let (iso, by) = isolation_elems(br);
    if let Some(st) = st {
        evict_conflicts(&t, st, "by_iif", std::slice::from_ref(&by), &mut ops);
    }
    ops.push(Op::AddElements { table: t.clone(), set: "isolated".into(), elems: vec![iso] });
    ops.push(Op::AddElements { table: t.clone(), set: "published".into(), elems: vec![published_elem(br)] });
    if !spec.allow_published {
        // add + delete in one transaction: absent afterwards whether it was there or not
        ops.push(Op::DeleteElements { table: t.clone(), set: "published".into(), elems: vec![published_elem(br)] });
    }
    ops.push(Op::AddElements { table: t, set: "by_iif".into(), elems: vec![by] });
    ops
}

/// DEL without reading: fails atomically when part of the bridge's state is already gone.
pub fn plan_isolation_del_blind(bridge: &str) -> Vec<Op> {
    let t = isolation_table();
    let (iso, by) = isolation_elems(bridge);
    vec![
        Op::DeleteElements { table: t.clone(), set: "by_iif".into(), elems: vec![by] },
        Op::DeleteElements { table: t.clone(), set: "isolated".into(), elems: vec![iso] },
        // `published` may or may not hold the bridge: add + delete removes it either way
        Op::AddElements { table: t.clone(), set: "published".into(), elems: vec![published_elem(bridge)] },
        Op::DeleteElements { table: t.clone(), set: "published".into(), elems: vec![published_elem(bridge)] },
        Op::DeleteChain { table: t, name: isolation_chain(bridge) },
    ]
}

pub fn plan_isolation_del(bridge: &str, st: &TableState) -> Vec<Op> {
    plan_isolation_remove(&[bridge.to_string()], st)
}

fn plan_isolation_remove(bridges: &[String], st: &TableState) -> Vec<Op> {
    let t = isolation_table();
    let mut ops = Vec::new();
    let chains: Vec<String> = bridges.iter().map(|b| isolation_chain(b)).collect();
    // by_iif elements pointing at the chains or keyed by the bridges
    if let Some(m) = st.set("by_iif") {
        let el: Vec<Element> = m
            .elems
            .iter()
            .filter(|e| {
                e.verdict.as_ref().and_then(|v| v.target()).is_some_and(|c| chains.iter().any(|x| x == c))
                    || e.key.first().is_some_and(|k| bridges.iter().any(|b| *k == Value::Ifname(b.clone())))
            })
            .cloned()
            .collect();
        delete_if_unchanged(&t, "by_iif", el, &mut ops);
    }
    for set in ["isolated", "published"] {
        if let Some(s) = st.set(set) {
            let el: Vec<Element> = s
                .elems
                .iter()
                .filter(|e| e.key.first().is_some_and(|k| bridges.iter().any(|b| *k == Value::Ifname(b.clone()))))
                .cloned()
                .collect();
            if !el.is_empty() {
                ops.push(Op::DeleteElements { table: t.clone(), set: set.into(), elems: el });
            }
        }
    }
    for c in chains {
        if st.chain(&c).is_some() {
            ops.push(Op::DeleteChain { table: t.clone(), name: c });
        }
    }
    ops
}

pub fn plan_isolation_gc(valid_bridges: &[String], st: &TableState) -> Vec<Op> {
    let mut stale = BTreeSet::new();
    if let Some(s) = st.set("isolated") {
        for e in &s.elems {
            if let Some(Value::Ifname(b)) = e.key.first() {
                if !valid_bridges.contains(b) {
                    stale.insert(b.clone());
                }
            }
        }
    }
    if let Some(m) = st.set("by_iif") {
        for e in &m.elems {
            if let Some(Value::Ifname(b)) = e.key.first() {
                if !valid_bridges.contains(b) {
                    stale.insert(b.clone());
                }
            }
        }
    }
    let stale: Vec<String> = stale.into_iter().collect();
    let mut ops = plan_isolation_remove(&stale, st);
    // chains b-* no valid bridge maps to (orphans)
    let keep: BTreeSet<String> = valid_bridges.iter().map(|b| isolation_chain(b)).collect();
    let known: BTreeSet<String> = stale.iter().map(|b| isolation_chain(b)).collect();
    for c in st.chains.keys() {
        if c.starts_with("b-") && !keep.contains(c) && !known.contains(c) {
            let referenced = st.set("by_iif").is_some_and(|m| m.pointing_to(c).next().is_some());
            if !referenced {
                ops.push(Op::DeleteChain { table: isolation_table(), name: c.clone() });
            }
        }
    }
    ops
}

pub fn check_isolation(spec: &IsolationSpec, st: Option<&TableState>) -> Result<(), String> {
    let Some(st) = st else { return Err(format!("table inet {ISOLATION_TABLE} is missing")) };
    check_rules(st, "forward", &isolation_forward_rules(), "isolation")?;
    check_rules(st, &isolation_chain(&spec.bridge), &[isolation_bridge_rule(&spec.bridge)], "isolation")?;
    let (iso, by) = isolation_elems(&spec.bridge);
    check_elems(st, "by_iif", &[by], "isolation")?;
    let Some(s) = st.set("isolated") else { return Err("isolation: set isolated is missing".into()) };
    if s.get(&iso.key).is_none() {
        return Err(format!("isolation: bridge {} is not in set isolated", spec.bridge));
    }
    let published = st.set("published").is_some_and(|s| s.get(&published_elem(&spec.bridge).key).is_some());
    if published != spec.allow_published {
        return Err(format!(
            "isolation: bridge {} is {}in set published (allowPublished is {})",
            spec.bridge,
            if published { "" } else { "not " },
            spec.allow_published
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn isolation_plan() {
        let spec = IsolationSpec { bridge: "br1".into(), families: vec![Family::V4], allow_published: true };
        let s = render_script(&plan_isolation_add(&spec));
        let c = isolation_chain("br1");
        assert!(s.contains("add rule inet cnirs_isolation forward ct status dnat oifname @published accept"), "{s}");
        assert!(s.contains("add element inet cnirs_isolation published { \"br1\" }"), "{s}");
        let closed = render_script(&plan_isolation_add(&IsolationSpec { allow_published: false, ..spec.clone() }));
        // closed: the bridge is taken out of `published` whether it was in it or not
        let add = closed.find("add element inet cnirs_isolation published { \"br1\" }").unwrap();
        let del = closed.find("delete element inet cnirs_isolation published { \"br1\" }").unwrap();
        assert!(add < del, "{closed}");
        assert!(s.contains(&format!("add rule inet cnirs_isolation {c} oifname != \"br1\" oifname @isolated drop")));
        assert!(s.contains(&format!("add element inet cnirs_isolation by_iif {{ \"br1\" : goto {c} }}")));
        assert!(s.contains("add rule inet cnirs_isolation forward iifname vmap @by_iif"));
    }
}

