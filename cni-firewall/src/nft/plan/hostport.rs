//! Port mappings (portmap): table `inet cnirs_hostport2`.
//!
//! ```text
//! map dnat4    { type inet_proto . inet_service : ipv4_addr . inet_service }            proto . host port -> container address . port
//! map hostip4  { type ipv4_addr . inet_proto . inet_service : ipv4_addr . inet_service } host IP . proto . host port -> the same
//! map owner4   { type ipv4_addr : mark . mark . mark }                                   container address -> owner
//! set hairpin4_24 { type ipv4_addr . ipv4_addr }          container address . source network address, one set per prefix length in use
//! (dnat6, hostip6, owner6, hairpin6_<n> likewise)
//! chain hostports {
//!     dnat ip to ip daddr . meta l4proto . th dport map @hostip4
//!     meta nfproto ipv4 dnat ip to meta l4proto . th dport map @dnat4
//!     dnat ip6 to ip6 daddr . meta l4proto . th dport map @hostip6
//!     meta nfproto ipv6 dnat ip6 to meta l4proto . th dport map @dnat6 }
//! chain prerouting  { type nat hook prerouting priority -100; policy accept; fib daddr type local jump hostports }
//! chain output      { type nat hook output priority -100; policy accept;     fib daddr type local jump hostports }
//! chain postrouting { type nat hook postrouting priority 100; policy accept;
//!     ct status dnat ip daddr . ip saddr & 255.255.255.0 @hairpin4_24 masquerade     (one rule per prefix length in use)
//!     ct status dnat ip daddr . ip saddr @hairpin4_32 masquerade
//!     ct status dnat ip6 daddr . ip6 saddr & ffff:ffff:ffff:ffff:: @hairpin6_64 masquerade }
//! ```
//!
//! A mapping with a host IP takes precedence over one without (as the reference's rule order
//! does). Hairpin (`snat`): the container's subnet and, for IPv4, 127.0.0.1 are masqueraded
//! towards it; `masqAll`: every source (`0.0.0.0/0`, `::/0`). An attachment owns its container
//! address (`owner` element), and with it every DNAT element whose target is that address and
//! every `hairpin` element that starts with it. A host port another attachment maps later is
//! taken over (last writer wins, as in the reference): its element is re-pointed, and the former
//! owner's DEL leaves it alone (its data no longer names the former owner's address). A table made
//! by the previous release keeps its interval set `hairpin4` and the rule looking it up, for the
//! attachments made then (see [`super::PairSets`]).

use super::*;
use crate::{PortMapSpec, PortMapping};
use std::collections::{BTreeMap, BTreeSet};

pub const HOSTPORT_TABLE: &str = "cnirs_hostport2";

pub fn hostport_table() -> TableRef {
    TableRef::inet(HOSTPORT_TABLE)
}

pub fn dnat_map(fam: Family) -> String {
    format!("dnat{}", fam_suffix(fam))
}

pub fn hostip_map(fam: Family) -> String {
    format!("hostip{}", fam_suffix(fam))
}

pub fn owner_map(fam: Family) -> String {
    format!("owner{}", fam_suffix(fam))
}

/// Base name of the hairpin sets.
const HAIRPIN: &str = "hairpin";

/// The previous release's interval set of hairpin sources.
pub fn hairpin_set(fam: Family) -> String {
    format!("{HAIRPIN}{}", fam_suffix(fam))
}

/// The hairpin sources of prefix length `n`.
pub fn hairpin_len_set(fam: Family, n: u8) -> String {
    len_set(HAIRPIN, fam, n)
}

fn hostports_rules() -> Vec<Rule> {
    let mut v = Vec::new();
    for f in Family::BOTH {
        v.push(Rule::new(vec![Expr::DnatMap {
            family: f,
            key: vec![Field::Daddr(f), Field::L4proto, Field::ThDport],
            map: hostip_map(f),
        }]));
        v.push(Rule::new(vec![
            Expr::Nfproto(f),
            Expr::DnatMap { family: f, key: vec![Field::L4proto, Field::ThDport], map: dnat_map(f) },
        ]));
    }
    v
}

fn entry_rule() -> Rule {
    Rule::new(vec![Expr::FibDaddrLocal, Expr::Verdict(Verdict::Jump("hostports".into()))])
}

fn hairpin_rule(key: Vec<Field>, set: String) -> Rule {
    Rule::new(vec![Expr::CtStatusDnat, Expr::Lookup { key, set, negate: false }, Expr::Masquerade])
}

/// The rule masquerading the hairpin sources of prefix length `n`.
fn len_hairpin_rule(f: Family, n: u8) -> Rule {
    hairpin_rule(vec![Field::Daddr(f), masked(Field::Saddr(f), n)], hairpin_len_set(f, n))
}

/// The postrouting rules for the hairpin sets `sets` (per family).
fn post_rules(sets: &[(Family, PairSets)]) -> Vec<Rule> {
    let mut v = Vec::new();
    for (f, used) in sets {
        let f = *f;
        if used.legacy {
            v.push(hairpin_rule(vec![Field::Daddr(f), Field::Saddr(f)], hairpin_set(f)));
        }
        v.extend(used.lengths.iter().map(|n| len_hairpin_rule(f, *n)));
    }
    v
}

/// The hairpin sets postrouting must look up after an ADD of `spec`: those it has (in `st`) and
/// the attachment's.
fn sets_after_add(per_fam: &[(Family, FamilyElems)], st: Option<&TableState>) -> Vec<(Family, PairSets)> {
    per_fam.iter().map(|(f, e)| (*f, PairSets::in_table(st, "postrouting", HAIRPIN, *f).with(&e.hairpin))).collect()
}

fn skeleton(per_fam: &[(Family, FamilyElems)], st: Option<&TableState>, ops: &mut Vec<Op>) {
    let t = hostport_table();
    ops.push(Op::AddTable(t.clone()));
    for f in Family::BOTH {
        let a = DataType::addr(f);
        let target = vec![a, DataType::InetService];
        ops.push(Op::AddSet { table: t.clone(), set: SetDef::map(dnat_map(f), vec![DataType::InetProto, DataType::InetService], target.clone()) });
        ops.push(Op::AddSet { table: t.clone(), set: SetDef::map(hostip_map(f), vec![a, DataType::InetProto, DataType::InetService], target) });
        ops.push(Op::AddSet { table: t.clone(), set: SetDef::map(owner_map(f), vec![a], owner_type()) });
    }
    for (f, e) in per_fam {
        let a = DataType::addr(*f);
        for n in e.hairpin.keys() {
            ops.push(Op::AddSet { table: t.clone(), set: SetDef::set(hairpin_len_set(*f, *n), vec![a, a]) });
        }
    }
    fill_chain(&t, "hostports", None, &hostports_rules(), ops);
    for (name, hook) in [("prerouting", Hook::Prerouting), ("output", Hook::Output)] {
        fill_base(&t, name, (ChainType::Nat, hook, PRIO_DSTNAT), &[entry_rule()], ops);
    }
    fill_base(&t, "postrouting", (ChainType::Nat, Hook::Postrouting, PRIO_SRCNAT), &post_rules(&sets_after_add(per_fam, st)), ops);
}

/// Host IP of a mapping when it restricts the destination (unspecified = any).
fn host_ip(m: &PortMapping) -> Option<IpAddr> {
    m.host_ip.filter(|h| !h.is_unspecified())
}

/// Mappings that apply to family `fam`: no host IP, or a host IP of that family.
fn mappings_for(spec: &PortMapSpec, fam: Family) -> impl Iterator<Item = &PortMapping> {
    spec.mappings.iter().filter(move |m| m.host_ip.is_none() || m.host_ip.is_some_and(|h| Family::of(&h) == fam))
}

/// What one attachment owns in one family.
#[derive(Debug, Default, PartialEq)]
pub struct FamilyElems {
    pub dnat: Vec<Element>,
    pub hostip: Vec<Element>,
    pub owner: Vec<Element>,
    /// By prefix length of the source network.
    pub hairpin: BTreeMap<u8, Vec<Element>>,
}

impl FamilyElems {
    fn sets(&self, fam: Family) -> Vec<(String, &Vec<Element>)> {
        let mut v = vec![(dnat_map(fam), &self.dnat), (hostip_map(fam), &self.hostip), (owner_map(fam), &self.owner)];
        v.extend(self.hairpin.iter().map(|(n, e)| (hairpin_len_set(fam, *n), e)));
        v
    }
}

/// The elements of `spec` in family `fam` (none without a container address of that family or
/// without a mapping for it). Of two mappings of one host port, the first counts (the rule the
/// reference would match first).
pub fn hostport_elems(spec: &PortMapSpec, fam: Family) -> FamilyElems {
    let Some(ctr) = spec.container(fam) else { return FamilyElems::default() };
    let c = ctr.ip();
    let mut dnat = BTreeMap::new();
    let mut hostip = BTreeMap::new();
    for m in mappings_for(spec, fam) {
        let target = vec![Value::Addr(c), Value::Port(m.container_port)];
        let (proto, port) = (Value::Proto(m.protocol), Value::Port(m.host_port));
        match host_ip(m) {
            Some(h) => hostip.entry(vec![Value::Addr(h), proto, port]).or_insert(target),
            None => dnat.entry(vec![proto, port]).or_insert(target),
        };
    }
    if dnat.is_empty() && hostip.is_empty() {
        return FamilyElems::default();
    }
    let mut sources: Vec<IpNetwork> = Vec::new();
    if spec.snat {
        if spec.masq_all {
            let all = match fam {
                Family::V4 => "0.0.0.0/0",
                Family::V6 => "::/0",
            };
            sources.extend(all.parse::<IpNetwork>().ok());
        } else {
            sources.push(*ctr);
            let lo = IpAddr::from([127, 0, 0, 1]);
            if fam == Family::V4 && !ctr.contains(lo) {
                sources.extend(IpNetwork::new(lo, 32).ok());
            }
        }
    }
    let hairpin = pairs_by_len(c, sources);
    FamilyElems {
        dnat: dnat.into_iter().map(|(k, d)| Element::data(k, d)).collect(),
        hostip: hostip.into_iter().map(|(k, d)| Element::data(k, d)).collect(),
        owner: vec![Element::data(vec![Value::Addr(c)], owner_data(&spec.key))],
        hairpin,
    }
}

/// Whether an ADD planned from the state read for it (elements by key and by point) needs the
/// whole table: when its container address already has an owner. Another attachment's (stale
/// state of a reused address) DNAT elements are evicted with it; its own (an ADD repeated with
/// other mappings) are replaced, as the earlier layout's refill of the attachment's chain did.
/// Only a full read finds DNAT elements by their target. A first ADD reads no more than its keys.
pub fn portmap_add_needs_full_read(spec: &PortMapSpec, st: &TableState) -> bool {
    Family::BOTH.iter().any(|f| {
        let want = hostport_elems(spec, *f);
        st.set(&owner_map(*f)).is_some_and(|m| want.owner.iter().any(|o| m.get(&o.key).is_some()))
    })
}

/// The ADD's plan. Without a state: what an empty table needs. With the state read for it:
/// also compare-and-delete of the elements in the way (a host port mapped by another container,
/// a container address owned by another attachment with its DNAT and hairpin elements, hairpin
/// elements of the address that are not this attachment's).
pub fn plan_portmap_add_with_state(spec: &PortMapSpec, st: Option<&TableState>) -> Vec<Op> {
    let per_fam: Vec<(Family, FamilyElems)> = Family::BOTH.iter().map(|f| (*f, hostport_elems(spec, *f))).collect();
    if per_fam.iter().all(|(_, e)| e.owner.is_empty()) {
        return Vec::new();
    }
    let t = hostport_table();
    let mut ops = Vec::new();
    skeleton(&per_fam, st, &mut ops);
    for (fam, want) in &per_fam {
        if want.owner.is_empty() {
            continue;
        }
        if let Some(st) = st {
            evict(st, *fam, want, &mut ops);
        }
        for (set, elems) in want.sets(*fam) {
            if !elems.is_empty() {
                ops.push(Op::AddElements { table: t.clone(), set, elems: elems.clone() });
            }
        }
    }
    ops
}

pub fn plan_portmap_add(spec: &PortMapSpec) -> Vec<Op> {
    plan_portmap_add_with_state(spec, None)
}

fn evict(st: &TableState, fam: Family, want: &FamilyElems, ops: &mut Vec<Op>) {
    let t = hostport_table();
    let ours: BTreeSet<IpAddr> = want.owner.iter().filter_map(key_addr).collect();
    // the keys we write, held with other data
    for (set, wanted) in [(dnat_map(fam), &want.dnat), (hostip_map(fam), &want.hostip), (owner_map(fam), &want.owner)] {
        let Some(cur) = st.set(&set) else { continue };
        let mut gone: Vec<Element> = wanted.iter().filter_map(|w| cur.get(&w.key).filter(|c| *c != w)).cloned().collect();
        if set != owner_map(fam) {
            // DNAT elements targeting our address that we do not write: a former owner's, or ours
            // from an earlier ADD with other mappings (a full read found them)
            let owned_before = st.set(&owner_map(fam)).is_some_and(|o| want.owner.iter().any(|w| o.get(&w.key).is_some()));
            if owned_before {
                gone.extend(cur.elems.iter().filter(|e| data_addr(e).is_some_and(|a| ours.contains(&a)) && !wanted.contains(e)).cloned());
            }
        }
        gone.sort();
        gone.dedup();
        delete_if_unchanged(&t, &set, gone, ops);
    }
    // the address's pairs this ADD does not write (in the set of their length)
    let stale = |n: Option<u8>, e: &Element| {
        key_addr(e).is_some_and(|a| ours.contains(&a)) && !n.and_then(|n| want.hairpin.get(&n)).is_some_and(|k| k.contains(e))
    };
    delete_pairs(&t, st, (HAIRPIN, fam), stale, ops);
}

/// Removal of the container addresses `addrs` in `fam`: their owner elements as read
/// (`owners`), the DNAT elements targeting them and their hairpin elements, DNAT and owner
/// elements compare-and-delete.
fn remove_addresses(st: &TableState, fam: Family, owners: Vec<Element>, orphan_addrs: &BTreeSet<IpAddr>, ops: &mut Vec<Op>) {
    let t = hostport_table();
    let mut addrs: BTreeSet<IpAddr> = owners.iter().filter_map(key_addr).collect();
    addrs.extend(orphan_addrs.iter().copied());
    delete_if_unchanged(&t, &owner_map(fam), owners, ops);
    for set in [dnat_map(fam), hostip_map(fam)] {
        if let Some(m) = st.set(&set) {
            let gone: Vec<Element> = m.elems.iter().filter(|e| data_addr(e).is_some_and(|a| addrs.contains(&a))).cloned().collect();
            delete_if_unchanged(&t, &set, gone, ops);
        }
    }
    delete_pairs(&t, st, (HAIRPIN, fam), |_, e| key_addr(e).is_some_and(|a| addrs.contains(&a)), ops);
}

/// DEL by key: the container addresses the attachment owns and everything of theirs.
pub fn plan_portmap_del(key: &AttachmentKey, st: &TableState) -> Vec<Op> {
    let owner = owner_data(key);
    let mut ops = Vec::new();
    for fam in Family::BOTH {
        remove_addresses(st, fam, owned_by(st, &owner_map(fam), &owner), &BTreeSet::new(), &mut ops);
    }
    ops
}

/// GC: the attachments of `network` not in `valid`, and DNAT or hairpin elements whose
/// container address nobody owns (left by hand edits; an ADD writes them together).
pub fn plan_portmap_gc(network: &str, valid: &[AttachmentKey], st: &TableState) -> Vec<Op> {
    let keep: BTreeSet<Vec<Value>> = valid.iter().filter(|k| k.network == network).map(owner_data).collect();
    let mut ops = Vec::new();
    for fam in Family::BOTH {
        let all: Vec<Element> = st.set(&owner_map(fam)).map(|m| m.elems.clone()).unwrap_or_default();
        let owned: BTreeSet<IpAddr> = all.iter().filter_map(key_addr).collect();
        let stale: Vec<Element> = all.into_iter().filter(|e| owner_in_network(&e.data, network) && !keep.contains(&e.data)).collect();
        let mut orphans = BTreeSet::new();
        for set in [dnat_map(fam), hostip_map(fam)] {
            if let Some(m) = st.set(&set) {
                orphans.extend(m.elems.iter().filter_map(data_addr).filter(|a| !owned.contains(a)));
            }
        }
        for set in pair_sets_in(st, HAIRPIN, fam) {
            if let Some(h) = st.set(&set) {
                orphans.extend(h.elems.iter().filter_map(key_addr).filter(|a| !owned.contains(a)));
            }
        }
        remove_addresses(st, fam, stale, &orphans, &mut ops);
    }
    ops
}

pub fn check_portmap(spec: &PortMapSpec, st: Option<&TableState>) -> Result<(), String> {
    let per_fam: Vec<(Family, FamilyElems)> = Family::BOTH.iter().map(|f| (*f, hostport_elems(spec, *f))).collect();
    if per_fam.iter().all(|(_, e)| e.owner.is_empty()) {
        return Ok(());
    }
    let Some(st) = st else { return Err(format!("table inet {HOSTPORT_TABLE} is missing")) };
    check_rules(st, "hostports", &hostports_rules(), "portmap")?;
    check_rules(st, "prerouting", &[entry_rule()], "portmap")?;
    check_rules(st, "output", &[entry_rule()], "portmap")?;
    for (fam, want) in &per_fam {
        // the hairpin sources: per length, or in the earlier release's interval set for
        // attachments made then
        let (f, legacy) = (*fam, hairpin_rule(vec![Field::Daddr(*fam), Field::Saddr(*fam)], hairpin_set(*fam)));
        check_pairs(st, ("postrouting", HAIRPIN, f), &want.hairpin, (|n| len_hairpin_rule(f, n), legacy, &[]), "portmap")?;
        for (set, elems) in want.sets(*fam) {
            if !elems.is_empty() && len_of_set(HAIRPIN, *fam, &set).is_none() {
                check_elems(st, &set, elems, "portmap")?;
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nft::state::SetState;
    use crate::Protocol;

    fn key(cid: &str) -> AttachmentKey {
        AttachmentKey::new("net1", cid, "eth0")
    }

    fn spec(cid: &str, v4: &str, v6: Option<&str>) -> PortMapSpec {
        let mut s = PortMapSpec::new(
            key(cid),
            vec![
                PortMapping { host_port: 8080, container_port: 80, protocol: Protocol::Tcp, host_ip: None },
                PortMapping { host_port: 8443, container_port: 443, protocol: Protocol::Tcp, host_ip: Some("192.0.2.1".parse().unwrap()) },
                PortMapping { host_port: 5353, container_port: 53, protocol: Protocol::Udp, host_ip: None },
                PortMapping { host_port: 8080, container_port: 81, protocol: Protocol::Tcp, host_ip: None },
            ],
        );
        s.container_v4 = Some(v4.parse().unwrap());
        s.container_v6 = v6.map(|a| a.parse().unwrap());
        s
    }

    fn marks(k: &AttachmentKey) -> String {
        owner_data(k).iter().map(Value::text).collect::<Vec<_>>().join(" . ")
    }

    #[test]
    fn add_script() {
        let mut sp = spec("c1", "10.1.0.5/24", Some("fd01::5/64"));
        let s = render_script(&plan_portmap_add(&sp));
        let o = marks(&sp.key);
        for line in [
            "add map inet cnirs_hostport2 dnat4 { type inet_proto . inet_service : ipv4_addr . inet_service; }",
            "add map inet cnirs_hostport2 hostip4 { type ipv4_addr . inet_proto . inet_service : ipv4_addr . inet_service; }",
            "add map inet cnirs_hostport2 owner6 { type ipv6_addr : mark . mark . mark; }",
            "add set inet cnirs_hostport2 hairpin4_24 { type ipv4_addr . ipv4_addr; }",
            "add set inet cnirs_hostport2 hairpin4_32 { type ipv4_addr . ipv4_addr; }",
            "add set inet cnirs_hostport2 hairpin6_64 { type ipv6_addr . ipv6_addr; }",
            "add rule inet cnirs_hostport2 hostports dnat ip to ip daddr . meta l4proto . th dport map @hostip4",
            "add rule inet cnirs_hostport2 hostports meta nfproto ipv6 dnat ip6 to meta l4proto . th dport map @dnat6",
            "add rule inet cnirs_hostport2 prerouting fib daddr type local jump hostports",
            "add rule inet cnirs_hostport2 postrouting ct status dnat ip daddr . ip saddr & 255.255.255.0 @hairpin4_24 masquerade\n\
             add rule inet cnirs_hostport2 postrouting ct status dnat ip daddr . ip saddr @hairpin4_32 masquerade\n\
             add rule inet cnirs_hostport2 postrouting ct status dnat ip6 daddr . ip6 saddr & ffff:ffff:ffff:ffff:: @hairpin6_64 masquerade\n",
            // the first mapping of tcp 8080 counts
            "add element inet cnirs_hostport2 dnat4 { tcp . 8080 : 10.1.0.5 . 80, udp . 5353 : 10.1.0.5 . 53 }",
            "add element inet cnirs_hostport2 hostip4 { 192.0.2.1 . tcp . 8443 : 10.1.0.5 . 443 }",
            "add element inet cnirs_hostport2 hairpin4_24 { 10.1.0.5 . 10.1.0.0 }",
            "add element inet cnirs_hostport2 hairpin4_32 { 10.1.0.5 . 127.0.0.1 }",
            "add element inet cnirs_hostport2 dnat6 { tcp . 8080 : fd01::5 . 80, udp . 5353 : fd01::5 . 53 }",
            "add element inet cnirs_hostport2 hairpin6_64 { fd01::5 . fd01:: }",
        ] {
            assert!(s.contains(line), "{line}\n{s}");
        }
        assert!(s.contains(&format!("add element inet cnirs_hostport2 owner4 {{ 10.1.0.5 : {o} }}")), "{s}");
        assert!(!s.contains("add element inet cnirs_hostport2 hostip6"), "no v6 host IP mapping: {s}");
        sp.masq_all = true;
        let s = render_script(&plan_portmap_add(&sp));
        assert!(s.contains("hairpin4_0 { 10.1.0.5 . 0.0.0.0 }") && s.contains("hairpin6_0 { fd01::5 . :: }"), "{s}");
        assert!(s.contains("postrouting ct status dnat ip daddr . ip saddr & 0.0.0.0 @hairpin4_0 masquerade"), "{s}");
        assert!(!s.contains("hairpin4_24"), "{s}");
        sp.snat = false;
        let s = render_script(&plan_portmap_add(&sp));
        assert!(!s.contains("hairpin"), "{s}");
        assert!(s.contains("flush chain inet cnirs_hostport2 postrouting\nadd element"), "an empty postrouting: {s}");
        let mut none = sp.clone();
        none.mappings.clear();
        assert!(plan_portmap_add(&none).is_empty());
    }

    fn set(name: &str, data: SetData, interval: bool, elems: Vec<Element>) -> SetState {
        SetState { name: name.into(), key: vec![], data, interval, elems }
    }

    fn state(sp: &PortMapSpec) -> TableState {
        let e = hostport_elems(sp, Family::V4);
        let mut st = TableState::default();
        let target = SetData::Values(vec![DataType::Ipv4Addr, DataType::InetService]);
        st.sets.insert("dnat4".into(), set("dnat4", target.clone(), false, e.dnat));
        st.sets.insert("hostip4".into(), set("hostip4", target, false, e.hostip));
        st.sets.insert("owner4".into(), set("owner4", SetData::Values(owner_type()), false, e.owner));
        for (n, elems) in e.hairpin {
            let name = hairpin_len_set(Family::V4, n);
            st.sets.insert(name.clone(), set(&name, SetData::None, false, elems));
        }
        st
    }

    #[test]
    fn del_and_takeover() {
        let a = spec("a", "10.1.0.5/24", None);
        let st = state(&a);
        let s = render_script(&plan_portmap_del(&a.key, &st));
        for line in [
            format!("add element inet cnirs_hostport2 owner4 {{ 10.1.0.5 : {} }}", marks(&a.key)),
            "delete element inet cnirs_hostport2 owner4 { 10.1.0.5 }".into(),
            "add element inet cnirs_hostport2 dnat4 { tcp . 8080 : 10.1.0.5 . 80, udp . 5353 : 10.1.0.5 . 53 }".into(),
            "delete element inet cnirs_hostport2 dnat4 { tcp . 8080, udp . 5353 }".into(),
            "delete element inet cnirs_hostport2 hostip4 { 192.0.2.1 . tcp . 8443 }".into(),
            "delete element inet cnirs_hostport2 hairpin4_24 { 10.1.0.5 . 10.1.0.0 }".into(),
            "delete element inet cnirs_hostport2 hairpin4_32 { 10.1.0.5 . 127.0.0.1 }".into(),
        ] {
            assert!(s.contains(&line), "{line}\n{s}");
        }
        assert!(plan_portmap_del(&key("zz"), &st).is_empty());
        // b maps the same ports from another address: a's elements are re-pointed, not b's owner
        let b = spec("b", "10.1.0.6/24", None);
        assert!(!portmap_add_needs_full_read(&b, &st));
        let s = render_script(&plan_portmap_add_with_state(&b, Some(&st)));
        let del = s.find("delete element inet cnirs_hostport2 dnat4 { tcp . 8080, udp . 5353 }").unwrap();
        let add = s.find("add element inet cnirs_hostport2 dnat4 { tcp . 8080 : 10.1.0.6 . 80, udp . 5353 : 10.1.0.6 . 53 }").unwrap();
        assert!(del < add, "{s}");
        assert!(!s.contains("delete element inet cnirs_hostport2 owner4"), "{s}");
        assert!(!s.contains("delete element inet cnirs_hostport2 hairpin4"), "{s}");
        // after the takeover a's DEL leaves b's ports alone
        let mut after = state(&a);
        after.sets.get_mut("dnat4").unwrap().elems = hostport_elems(&b, Family::V4).dnat;
        let s = render_script(&plan_portmap_del(&a.key, &after));
        assert!(!s.contains("dnat4"), "{s}");
        assert!(s.contains("hostip4") && s.contains("owner4"), "{s}");
        // c reuses a's address: a full read, then a's whole state for the address goes
        let c = spec("c", "10.1.0.5/24", None);
        assert!(portmap_add_needs_full_read(&c, &st));
        let mut c2 = c.clone();
        c2.mappings.truncate(1);
        let s = render_script(&plan_portmap_add_with_state(&c2, Some(&st)));
        assert!(s.contains("delete element inet cnirs_hostport2 owner4 { 10.1.0.5 }"), "{s}");
        assert!(s.contains("delete element inet cnirs_hostport2 dnat4 { udp . 5353 }"), "{s}");
        assert!(s.contains("delete element inet cnirs_hostport2 hostip4 { 192.0.2.1 . tcp . 8443 }"), "{s}");
        assert!(!s.contains("delete element inet cnirs_hostport2 hairpin4"), "the same hairpin: kept: {s}");
        // a again with fewer mappings and masqAll (an ADD repeated without DEL): its dropped
        // mappings and hairpin sources go, as the earlier layout's chain refill did
        let mut again = a.clone();
        again.mappings.truncate(1);
        again.masq_all = true;
        assert!(portmap_add_needs_full_read(&again, &st));
        let s = render_script(&plan_portmap_add_with_state(&again, Some(&st)));
        assert!(s.contains("delete element inet cnirs_hostport2 dnat4 { udp . 5353 }"), "{s}");
        assert!(s.contains("delete element inet cnirs_hostport2 hostip4 { 192.0.2.1 . tcp . 8443 }"), "{s}");
        assert!(s.contains("delete element inet cnirs_hostport2 hairpin4_24 { 10.1.0.5 . 10.1.0.0 }"), "{s}");
        assert!(s.contains("delete element inet cnirs_hostport2 hairpin4_32 { 10.1.0.5 . 127.0.0.1 }"), "{s}");
        assert!(s.contains("add element inet cnirs_hostport2 hairpin4_0 { 10.1.0.5 . 0.0.0.0 }"), "{s}");
        assert!(!s.contains("delete element inet cnirs_hostport2 owner4"), "its own owner element stays: {s}");
        assert!(!s.contains("dnat4 { tcp . 8080 }"), "the kept mapping stays: {s}");
    }

    #[test]
    fn gc_and_check() {
        let a = spec("a", "10.1.0.5/24", None);
        let st = state(&a);
        assert!(plan_portmap_gc("net1", std::slice::from_ref(&a.key), &st).is_empty());
        assert!(plan_portmap_gc("net2", &[], &st).is_empty(), "another network's");
        let s = render_script(&plan_portmap_gc("net1", &[], &st));
        assert!(s.contains("delete element inet cnirs_hostport2 owner4 { 10.1.0.5 }"), "{s}");
        // orphans: DNAT and hairpin elements without an owner
        let mut orphan = st.clone();
        orphan.sets.get_mut("owner4").unwrap().elems.clear();
        let s = render_script(&plan_portmap_gc("net2", &[], &orphan));
        assert!(s.contains("delete element inet cnirs_hostport2 dnat4") && s.contains("delete element inet cnirs_hostport2 hairpin4_24"), "{s}");
        assert!(check_portmap(&a, None).unwrap_err().contains("missing"));
        assert!(check_portmap(&a, Some(&st)).unwrap_err().contains("hostports"));
    }
}
