//! The layouts of earlier versions: a chain per attachment behind verdict maps, in tables
//! `inet cnirs_masquerade` and `inet cnirs_hostport`. Nothing is added to them any more; DEL,
//! CHECK and GC still read them, so attachments made before an upgrade are checked and torn
//! down as before. (The planners of ADD stay for the tests that make such state.)
//!
//! ```text
//! table inet cnirs_masquerade {
//!   map masq4 { type ipv4_addr : verdict }   container address -> goto m-<12 hex sha512(net)>-<16 hex sha512(net\0cid\0ifname)>
//!   chain postrouting { nat postrouting 100: ip saddr vmap @masq4; ip6 saddr vmap @masq6 }
//!   chain m-<net>-<key> { ip daddr <subnet> return; ip daddr 224.0.0.0/4 return; ...; masquerade } }
//! table inet cnirs_hostport {
//!   map hostip4 { type ipv4_addr . inet_proto . inet_service : verdict }, any4, snat4 (and 6)
//!   chain prerouting/output { fib daddr type local jump hostports }
//!   chain hostports { ip daddr . meta l4proto . th dport vmap @hostip4; meta nfproto ipv4 meta l4proto . th dport vmap @any4; ... }
//!   chain postrouting { ct status dnat ip daddr vmap @snat4; ... }
//!   chain p-<net>-<key> { [ip daddr H] tcp dport 8080 dnat ip to C:80 ... }
//!   chain s-<net>-<key> { ip saddr <subnet> masquerade; ip saddr 127.0.0.1 masquerade } }
//! ```

use super::*;
use crate::names::{nft_key_comment, nft_key_name, nft_network_hash};
use crate::{MasqSpec, PortMapSpec};
use std::collections::BTreeSet;

pub const MASQ_TABLE: &str = "cnirs_masquerade";
pub const HOSTPORT_TABLE: &str = "cnirs_hostport";
// ---------------------------------------------------------------------------------------------
// Masquerade: table inet cnirs_masquerade
//
//   map masq4 { type ipv4_addr : verdict }   container address -> goto m-<net>-<key>
//   map masq6 { type ipv6_addr : verdict }
//   chain postrouting { type nat hook postrouting priority 100; ip saddr vmap @masq4; ip6 saddr vmap @masq6 }
//   chain m-<12 hex sha512(net)>-<16 hex sha512(net\0cid\0ifname)> {
//       ip daddr <subnet> return ... ; ip daddr 224.0.0.0/4 return
//       ip6 daddr <subnet6> return ... ; ip6 daddr ff00::/8 return
//       masquerade
//   }
// ---------------------------------------------------------------------------------------------

pub fn masq_table() -> TableRef {
    TableRef::inet(MASQ_TABLE)
}

pub fn masq_map(fam: Family) -> String {
    format!("masq{}", fam_suffix(fam))
}

pub fn masq_chain(key: &AttachmentKey) -> String {
    nft_key_name('m', key)
}

fn masq_base_rules() -> Vec<Rule> {
    Family::BOTH
        .iter()
        .map(|f| Rule::new(vec![Expr::Vmap { key: vec![Field::Saddr(*f)], map: masq_map(*f) }]))
        .collect()
}

fn masq_skeleton(ops: &mut Vec<Op>) {
    let t = masq_table();
    ops.push(Op::AddTable(t.clone()));
    for f in Family::BOTH {
        ops.push(vmap_def(&t, masq_map(f), vec![DataType::addr(f)]));
    }
    ops.push(base(&t, "postrouting", ChainType::Nat, Hook::Postrouting, PRIO_SRCNAT));
    ops.push(Op::FlushChain { table: t.clone(), name: "postrouting".into() });
    for r in masq_base_rules() {
        ops.push(Op::AddRule { table: t.clone(), chain: "postrouting".into(), rule: r });
    }
}

/// The rules of an attachment's masquerade chain.
pub fn masq_chain_rules(spec: &MasqSpec) -> Vec<Rule> {
    let mut rules = Vec::new();
    for fam in Family::BOTH {
        let mut seen = BTreeSet::new();
        for a in spec.addrs.iter().filter(|a| Family::of_net(a) == fam) {
            let s = subnet(a);
            if seen.insert(s) {
                rules.push(Rule::new(vec![
                    Expr::Cmp { field: Field::Daddr(fam), negate: false, value: Value::Prefix(s) },
                    Expr::Verdict(Verdict::Return),
                ]));
            }
        }
        if !seen.is_empty() {
            rules.push(Rule::new(vec![
                Expr::Cmp { field: Field::Daddr(fam), negate: false, value: Value::Prefix(multicast(fam)) },
                Expr::Verdict(Verdict::Return),
            ]));
        }
    }
    rules.push(Rule::new(vec![Expr::Masquerade]));
    rules
}

fn masq_elems(spec: &MasqSpec, fam: Family) -> Vec<Element> {
    let chain = masq_chain(&spec.key);
    let mut v: Vec<Element> = spec
        .addrs
        .iter()
        .filter(|a| Family::of_net(a) == fam)
        .map(|a| Element::verdict(vec![addr_val(a.ip())], Verdict::Goto(chain.clone())))
        .collect();
    v.sort();
    v.dedup();
    v
}

/// ADD without reading: fails (EEXIST, atomically) only when an address still points at another
/// attachment's chain; then use [`plan_masq_add_with_state`].
pub fn plan_masq_add(spec: &MasqSpec) -> Vec<Op> {
    plan_masq_add_with_state(spec, None)
}

/// ADD knowing the current table: evicts stale owners of the addresses first.
pub fn plan_masq_add_with_state(spec: &MasqSpec, st: Option<&TableState>) -> Vec<Op> {
    if spec.addrs.is_empty() {
        return Vec::new();
    }
    let t = masq_table();
    let mut ops = Vec::new();
    masq_skeleton(&mut ops);
    let chain = masq_chain(&spec.key);
    fill_chain(&t, &chain, Some(nft_key_comment(&spec.key)), &masq_chain_rules(spec), &mut ops);
    for fam in Family::BOTH {
        let elems = masq_elems(spec, fam);
        if elems.is_empty() {
            continue;
        }
        if let Some(st) = st {
            evict_conflicts(&t, st, &masq_map(fam), &elems, &mut ops);
        }
        ops.push(Op::AddElements { table: t.clone(), set: masq_map(fam), elems });
    }
    ops
}

/// DEL by key: the map elements pointing at the attachment's chain, and the chain.
pub fn plan_masq_del(key: &AttachmentKey, st: &TableState) -> Vec<Op> {
    let mut ops = Vec::new();
    let maps: Vec<String> = Family::BOTH.iter().map(|f| masq_map(*f)).collect();
    remove_owned(&masq_table(), st, &maps, &[masq_chain(key)], &mut ops);
    ops
}

/// GC: every attachment of `network` whose key is not in `valid`.
pub fn plan_masq_gc(network: &str, valid: &[AttachmentKey], st: &TableState) -> Vec<Op> {
    let prefix = format!("m-{}-", nft_network_hash(network));
    let keep: BTreeSet<String> = valid.iter().filter(|k| k.network == network).map(masq_chain).collect();
    let stale: Vec<String> =
        st.chains.keys().filter(|c| c.starts_with(&prefix) && !keep.contains(*c)).cloned().collect();
    let mut ops = Vec::new();
    let maps: Vec<String> = Family::BOTH.iter().map(|f| masq_map(*f)).collect();
    remove_owned(&masq_table(), st, &maps, &stale, &mut ops);
    ops
}

pub fn check_masq(spec: &MasqSpec, st: Option<&TableState>) -> Result<(), String> {
    if spec.addrs.is_empty() {
        return Ok(());
    }
    let Some(st) = st else { return Err(format!("table inet {MASQ_TABLE} is missing")) };
    check_rules(st, "postrouting", &masq_base_rules(), "masquerade")?;
    check_rules(st, &masq_chain(&spec.key), &masq_chain_rules(spec), "masquerade")?;
    for fam in Family::BOTH {
        let elems = masq_elems(spec, fam);
        if !elems.is_empty() {
            check_elems(st, &masq_map(fam), &elems, "masquerade")?;
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Port mappings: table inet cnirs_hostport
//
//   map hostip4 { type ipv4_addr . inet_proto . inet_service : verdict }  hostIP . proto . port -> goto p-<key>
//   map any4    { type inet_proto . inet_service : verdict }              proto . port -> goto p-<key>
//   map hostip6, any6 likewise; map snat4 { type ipv4_addr : verdict }, snat6: container IP -> goto s-<key>
//   chain prerouting { nat prerouting -100: fib daddr type local jump hostports }
//   chain output     { nat output -100:     fib daddr type local jump hostports }
//   chain hostports  { ip daddr . meta l4proto . th dport vmap @hostip4
//                      meta nfproto ipv4 meta l4proto . th dport vmap @any4   (same for ip6) }
//   chain postrouting { nat postrouting 100: ct status dnat ip daddr vmap @snat4; ... ip6 ... @snat6 }
//   chain p-<key> { [ip daddr H] tcp dport 8080 dnat ip to C:80 ... }          (mappings of one attachment)
//   chain s-<key> { ip saddr <ctr subnet> masquerade; ip saddr 127.0.0.1 masquerade }  (snat; masqAll: masquerade)
// ---------------------------------------------------------------------------------------------

pub fn hostport_table() -> TableRef {
    TableRef::inet(HOSTPORT_TABLE)
}

pub fn hostport_dnat_chain(key: &AttachmentKey) -> String {
    nft_key_name('p', key)
}

pub fn hostport_snat_chain(key: &AttachmentKey) -> String {
    nft_key_name('s', key)
}

fn hostip_map(fam: Family) -> String {
    format!("hostip{}", fam_suffix(fam))
}
fn any_map(fam: Family) -> String {
    format!("any{}", fam_suffix(fam))
}
fn snat_map(fam: Family) -> String {
    format!("snat{}", fam_suffix(fam))
}

fn hostport_maps() -> Vec<String> {
    let mut v = Vec::new();
    for f in Family::BOTH {
        v.push(hostip_map(f));
        v.push(any_map(f));
        v.push(snat_map(f));
    }
    v
}

fn hostports_rules() -> Vec<Rule> {
    let mut v = Vec::new();
    for f in Family::BOTH {
        v.push(Rule::new(vec![Expr::Vmap {
            key: vec![Field::Daddr(f), Field::L4proto, Field::ThDport],
            map: hostip_map(f),
        }]));
        v.push(Rule::new(vec![
            Expr::Nfproto(f),
            Expr::Vmap { key: vec![Field::L4proto, Field::ThDport], map: any_map(f) },
        ]));
    }
    v
}

fn hostport_entry_rule() -> Rule {
    Rule::new(vec![Expr::FibDaddrLocal, Expr::Verdict(Verdict::Jump("hostports".into()))])
}

fn hostport_post_rules() -> Vec<Rule> {
    Family::BOTH
        .iter()
        .map(|f| Rule::new(vec![Expr::CtStatusDnat, Expr::Vmap { key: vec![Field::Daddr(*f)], map: snat_map(*f) }]))
        .collect()
}

fn hostport_skeleton(ops: &mut Vec<Op>) {
    let t = hostport_table();
    ops.push(Op::AddTable(t.clone()));
    for f in Family::BOTH {
        let a = DataType::addr(f);
        ops.push(vmap_def(&t, hostip_map(f), vec![a, DataType::InetProto, DataType::InetService]));
        ops.push(vmap_def(&t, any_map(f), vec![DataType::InetProto, DataType::InetService]));
        ops.push(vmap_def(&t, snat_map(f), vec![a]));
    }
    ops.push(Op::AddChain { table: t.clone(), name: "hostports".into(), base: None, comment: None });
    ops.push(Op::FlushChain { table: t.clone(), name: "hostports".into() });
    for r in hostports_rules() {
        ops.push(Op::AddRule { table: t.clone(), chain: "hostports".into(), rule: r });
    }
    for (name, hook) in [("prerouting", Hook::Prerouting), ("output", Hook::Output)] {
        fill_base(&t, name, (ChainType::Nat, hook, PRIO_DSTNAT), &[hostport_entry_rule()], ops);
    }
    fill_base(&t, "postrouting", (ChainType::Nat, Hook::Postrouting, PRIO_SRCNAT), &hostport_post_rules(), ops);
}

/// Host IP of a mapping when it restricts the destination (unspecified = any).
fn host_ip(m: &crate::PortMapping) -> Option<IpAddr> {
    m.host_ip.filter(|h| !h.is_unspecified())
}

/// Mappings that apply to family `fam`: no host IP, or a host IP of that family.
fn mappings_for(spec: &PortMapSpec, fam: Family) -> impl Iterator<Item = &crate::PortMapping> {
    spec.mappings.iter().filter(move |m| m.host_ip.is_none() || m.host_ip.is_some_and(|h| Family::of(&h) == fam))
}

pub fn hostport_dnat_rules(spec: &PortMapSpec) -> Vec<Rule> {
    let mut rules = Vec::new();
    for fam in Family::BOTH {
        let Some(ctr) = spec.container(fam) else { continue };
        for m in mappings_for(spec, fam) {
            let mut ex = Vec::new();
            match host_ip(m) {
                Some(h) => ex.push(Expr::Cmp { field: Field::Daddr(fam), negate: false, value: Value::Addr(h) }),
                None => ex.push(Expr::Nfproto(fam)),
            }
            ex.push(Expr::Cmp { field: Field::Dport(m.protocol), negate: false, value: Value::Port(m.host_port) });
            ex.push(Expr::Dnat { addr: ctr.ip(), port: m.container_port });
            let r = Rule::new(ex);
            if !rules.contains(&r) {
                rules.push(r);
            }
        }
    }
    rules
}

pub fn hostport_snat_rules(spec: &PortMapSpec) -> Vec<Rule> {
    let mut rules = Vec::new();
    if !spec.snat {
        return rules;
    }
    for fam in Family::BOTH {
        let Some(ctr) = spec.container(fam) else { continue };
        if spec.masq_all {
            rules.push(Rule::new(vec![Expr::Nfproto(fam), Expr::Masquerade]));
            continue;
        }
        rules.push(Rule::new(vec![
            Expr::Cmp { field: Field::Saddr(fam), negate: false, value: Value::Prefix(subnet(ctr)) },
            Expr::Masquerade,
        ]));
        if fam == Family::V4 {
            rules.push(Rule::new(vec![
                Expr::Cmp { field: Field::Saddr(fam), negate: false, value: Value::Addr("127.0.0.1".parse().unwrap()) },
                Expr::Masquerade,
            ]));
        }
    }
    rules
}

/// (map, elements) an attachment owns.
fn hostport_elems(spec: &PortMapSpec) -> Vec<(String, Vec<Element>)> {
    let dnat = Verdict::Goto(hostport_dnat_chain(&spec.key));
    let snat = Verdict::Goto(hostport_snat_chain(&spec.key));
    let mut out = Vec::new();
    for fam in Family::BOTH {
        let Some(ctr) = spec.container(fam) else { continue };
        let mut hostip = BTreeSet::new();
        let mut any = BTreeSet::new();
        for m in mappings_for(spec, fam) {
            let proto = Value::Proto(m.protocol);
            let port = Value::Port(m.host_port);
            match host_ip(m) {
                Some(h) => hostip.insert(Element::verdict(vec![Value::Addr(h), proto, port], dnat.clone())),
                None => any.insert(Element::verdict(vec![proto, port], dnat.clone())),
            };
        }
        let has = !hostip.is_empty() || !any.is_empty();
        out.push((hostip_map(fam), hostip.into_iter().collect()));
        out.push((any_map(fam), any.into_iter().collect()));
        if spec.snat && has {
            out.push((snat_map(fam), vec![Element::verdict(vec![Value::Addr(ctr.ip())], snat.clone())]));
        }
    }
    out.retain(|(_, e)| !e.is_empty());
    out
}

pub fn plan_portmap_add(spec: &PortMapSpec) -> Vec<Op> {
    plan_portmap_add_with_state(spec, None)
}

pub fn plan_portmap_add_with_state(spec: &PortMapSpec, st: Option<&TableState>) -> Vec<Op> {
    let elems = hostport_elems(spec);
    if elems.is_empty() {
        return Vec::new();
    }
    let t = hostport_table();
    let mut ops = Vec::new();
    hostport_skeleton(&mut ops);
    let comment = Some(nft_key_comment(&spec.key));
    fill_chain(&t, &hostport_dnat_chain(&spec.key), comment.clone(), &hostport_dnat_rules(spec), &mut ops);
    let snat_rules = hostport_snat_rules(spec);
    if !snat_rules.is_empty() {
        fill_chain(&t, &hostport_snat_chain(&spec.key), comment, &snat_rules, &mut ops);
    }
    for (map, es) in elems {
        if let Some(st) = st {
            evict_conflicts(&t, st, &map, &es, &mut ops);
        }
        ops.push(Op::AddElements { table: t.clone(), set: map, elems: es });
    }
    ops
}

pub fn plan_portmap_del(key: &AttachmentKey, st: &TableState) -> Vec<Op> {
    let mut ops = Vec::new();
    remove_owned(&hostport_table(), st, &hostport_maps(), &[hostport_dnat_chain(key), hostport_snat_chain(key)], &mut ops);
    ops
}

pub fn plan_portmap_gc(network: &str, valid: &[AttachmentKey], st: &TableState) -> Vec<Op> {
    let h = nft_network_hash(network);
    let (p, s) = (format!("p-{h}-"), format!("s-{h}-"));
    let mut keep = BTreeSet::new();
    for k in valid.iter().filter(|k| k.network == network) {
        keep.insert(hostport_dnat_chain(k));
        keep.insert(hostport_snat_chain(k));
    }
    let stale: Vec<String> = st
        .chains
        .keys()
        .filter(|c| (c.starts_with(&p) || c.starts_with(&s)) && !keep.contains(*c))
        .cloned()
        .collect();
    let mut ops = Vec::new();
    remove_owned(&hostport_table(), st, &hostport_maps(), &stale, &mut ops);
    ops
}

pub fn check_portmap(spec: &PortMapSpec, st: Option<&TableState>) -> Result<(), String> {
    let elems = hostport_elems(spec);
    if elems.is_empty() {
        return Ok(());
    }
    let Some(st) = st else { return Err(format!("table inet {HOSTPORT_TABLE} is missing")) };
    check_rules(st, "hostports", &hostports_rules(), "portmap")?;
    check_rules(st, "prerouting", &[hostport_entry_rule()], "portmap")?;
    check_rules(st, "output", &[hostport_entry_rule()], "portmap")?;
    check_rules(st, "postrouting", &hostport_post_rules(), "portmap")?;
    check_rules(st, &hostport_dnat_chain(&spec.key), &hostport_dnat_rules(spec), "portmap")?;
    let snat = hostport_snat_rules(spec);
    if !snat.is_empty() {
        check_rules(st, &hostport_snat_chain(&spec.key), &snat, "portmap")?;
    }
    for (map, es) in &elems {
        check_elems(st, map, es, "portmap")?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{PortMapping, Protocol};
    use crate::nft::plan::test_util::{key, masq};

    #[test]
    fn masq_add_script() {
        let spec = masq("c1", &["10.1.0.5/24", "fd01::5/64"]);
        let s = render_script(&plan_masq_add(&spec));
        let chain = masq_chain(&spec.key);
        let expect = format!(
            "add table inet cnirs_masquerade
add map inet cnirs_masquerade masq4 {{ type ipv4_addr : verdict; }}
add map inet cnirs_masquerade masq6 {{ type ipv6_addr : verdict; }}
add chain inet cnirs_masquerade postrouting {{ type nat hook postrouting priority 100; policy accept; }}
flush chain inet cnirs_masquerade postrouting
add rule inet cnirs_masquerade postrouting ip saddr vmap @masq4
add rule inet cnirs_masquerade postrouting ip6 saddr vmap @masq6
add chain inet cnirs_masquerade {chain} {{ comment \"net: net1 id: c1 if: eth0\"; }}
flush chain inet cnirs_masquerade {chain}
add rule inet cnirs_masquerade {chain} ip daddr 10.1.0.0/24 return
add rule inet cnirs_masquerade {chain} ip daddr 224.0.0.0/4 return
add rule inet cnirs_masquerade {chain} ip6 daddr fd01::/64 return
add rule inet cnirs_masquerade {chain} ip6 daddr ff00::/8 return
add rule inet cnirs_masquerade {chain} masquerade
add element inet cnirs_masquerade masq4 {{ 10.1.0.5 : goto {chain} }}
add element inet cnirs_masquerade masq6 {{ fd01::5 : goto {chain} }}
"
        );
        assert_eq!(s, expect);
        assert!(plan_masq_add(&masq("c1", &[])).is_empty());
    }

    fn state_with(elems4: &[(&str, &str)], chains: &[&str]) -> TableState {
        let mut st = TableState::default();
        let mut set = crate::nft::state::SetState {
            name: "masq4".into(),
            key: vec![DataType::Ipv4Addr],
            data: SetData::Verdict,
            interval: false,
            elems: vec![],
        };
        for (a, c) in elems4 {
            set.elems.push(Element::verdict(vec![Value::Addr(a.parse().unwrap())], Verdict::Goto(c.to_string())));
        }
        st.sets.insert("masq4".into(), set);
        for c in chains {
            st.chains.insert(c.to_string(), Default::default());
        }
        st
    }

    #[test]
    fn masq_del_only_own_elements() {
        let a = masq_chain(&key("a"));
        let b = masq_chain(&key("b"));
        // address 10.1.0.5 was reused: now owned by b; a's DEL must not touch it
        let st = state_with(&[("10.1.0.5", &b), ("10.1.0.6", &a)], &[&a, &b]);
        let ops = plan_masq_del(&key("a"), &st);
        let s = render_script(&ops);
        assert_eq!(
            s,
            format!(
                "add element inet cnirs_masquerade masq4 {{ 10.1.0.6 : goto {a} }}\n\
                 delete element inet cnirs_masquerade masq4 {{ 10.1.0.6 }}\n\
                 delete chain inet cnirs_masquerade {a}\n"
            )
        );
        // nothing left: no ops
        assert!(plan_masq_del(&key("zz"), &st).is_empty());
    }

    #[test]
    fn masq_add_evicts_stale_owner() {
        let a = masq_chain(&key("a"));
        let st = state_with(&[("10.1.0.5", &a)], &[&a]);
        let ops = plan_masq_add_with_state(&masq("b", &["10.1.0.5/24"]), Some(&st));
        let s = render_script(&ops);
        let b = masq_chain(&key("b"));
        // compare-and-delete of A's element, then B's element
        let assert_a = s.find(&format!("add element inet cnirs_masquerade masq4 {{ 10.1.0.5 : goto {a} }}")).unwrap();
        let del = s.find("delete element inet cnirs_masquerade masq4 { 10.1.0.5 }").unwrap();
        let add = s.find(&format!("add element inet cnirs_masquerade masq4 {{ 10.1.0.5 : goto {b} }}")).unwrap();
        assert!(assert_a < del && del < add, "{s}");
        // own element: no eviction
        let ops = plan_masq_add_with_state(&masq("a", &["10.1.0.5/24"]), Some(&st));
        assert!(!render_script(&ops).contains("delete"));
    }

    #[test]
    fn masq_gc_keeps_valid_and_other_networks() {
        let a = masq_chain(&key("a"));
        let b = masq_chain(&key("b"));
        let other = masq_chain(&AttachmentKey::new("net2", "x", "eth0"));
        let st = state_with(&[("10.1.0.5", &a), ("10.1.0.6", &b), ("10.2.0.6", &other)], &[&a, &b, &other]);
        let s = render_script(&plan_masq_gc("net1", &[key("a")], &st));
        assert!(s.contains(&format!("delete chain inet cnirs_masquerade {b}")));
        assert!(s.contains("10.1.0.6"));
        assert!(!s.contains(&a));
        assert!(!s.contains(&other));
    }

    #[test]
    fn masq_check() {
        let spec = masq("c1", &["10.1.0.5/24"]);
        assert!(check_masq(&spec, None).unwrap_err().contains("missing"));
        let st = state_with(&[], &[]);
        assert!(check_masq(&spec, Some(&st)).is_err());
    }

    #[test]
    fn portmap_plan() {
        let mut spec = PortMapSpec::new(
            key("c1"),
            vec![
                PortMapping { host_port: 8080, container_port: 80, protocol: Protocol::Tcp, host_ip: None },
                PortMapping { host_port: 8443, container_port: 443, protocol: Protocol::Tcp, host_ip: Some("192.0.2.1".parse().unwrap()) },
                PortMapping { host_port: 5353, container_port: 53, protocol: Protocol::Udp, host_ip: None },
            ],
        );
        spec.container_v4 = Some("10.1.0.5/24".parse().unwrap());
        spec.container_v6 = Some("fd01::5/64".parse().unwrap());
        let rules: Vec<String> = hostport_dnat_rules(&spec).iter().map(Rule::text).collect();
        assert_eq!(
            rules,
            vec![
                "meta nfproto ipv4 tcp dport 8080 dnat ip to 10.1.0.5:80",
                "ip daddr 192.0.2.1 tcp dport 8443 dnat ip to 10.1.0.5:443",
                "meta nfproto ipv4 udp dport 5353 dnat ip to 10.1.0.5:53",
                "meta nfproto ipv6 tcp dport 8080 dnat ip6 to [fd01::5]:80",
                "meta nfproto ipv6 udp dport 5353 dnat ip6 to [fd01::5]:53",
            ]
        );
        let snat: Vec<String> = hostport_snat_rules(&spec).iter().map(Rule::text).collect();
        assert_eq!(snat, vec!["ip saddr 10.1.0.0/24 masquerade", "ip saddr 127.0.0.1 masquerade", "ip6 saddr fd01::/64 masquerade"]);
        let s = render_script(&plan_portmap_add(&spec));
        let p = hostport_dnat_chain(&spec.key);
        assert!(s.contains(&format!("add element inet cnirs_hostport hostip4 {{ 192.0.2.1 . tcp . 8443 : goto {p} }}")));
        assert!(s.contains(&format!("add element inet cnirs_hostport any4 {{ tcp . 8080 : goto {p}, udp . 5353 : goto {p} }}")));
        assert!(!s.contains("add element inet cnirs_hostport hostip6"), "{s}");
        spec.masq_all = true;
        let snat: Vec<String> = hostport_snat_rules(&spec).iter().map(Rule::text).collect();
        assert_eq!(snat, vec!["meta nfproto ipv4 masquerade", "meta nfproto ipv6 masquerade"]);
        spec.snat = false;
        assert!(hostport_snat_rules(&spec).is_empty());
        assert!(!render_script(&plan_portmap_add(&spec)).contains("add element inet cnirs_hostport snat4"));
    }

}
