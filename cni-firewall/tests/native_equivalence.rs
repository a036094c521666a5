//! The native (netlink) nftables executor against the `nft` executor: for every rule set the
//! plugins create, the same calls are made through each executor in its own throwaway network
//! namespace, and
//!
//! - `nft -j list ruleset` prints the same (handles aside);
//! - the kernel holds the same objects, attribute for attribute (chains, sets with their user
//!   data, elements, rules with their expressions; handles aside), read raw over netlink;
//! - the native reader's [`TableState`] equals the `nft -j` reader's, in both namespaces;
//! - each executor's CHECK passes on what the other wrote.
//!
//! Requires root and the `nft` binary (the reference to compare with).

mod common;

use cni_common::netlink::socket::{nfgen_message, parse_attrs, put_attr, Socket};
use cni_firewall::exec::ProcessRunner;
use cni_firewall::nft::netlink::consts::*;
use cni_firewall::nft::netlink::NftNetlink;
use cni_firewall::nft::ops::TableRef;
use cni_firewall::nft::plan::{hostport_table, isolation_table, masq_table};
use cni_firewall::nft::state::TableState;
use cni_firewall::nft::{NftCli, NftExecutor, NftFirewall};
use cni_firewall::{Family, Firewall, IsolationSpec, MasqSpec, PortMapSpec, Protocol};
use common::*;
use serde_json::Value;
use std::collections::BTreeMap;
use std::sync::Arc;

/// One firewall call a plugin makes.
#[derive(Clone, Debug)]
enum Call {
    Masq(MasqSpec),
    DelMasq(MasqSpec),
    Port(PortMapSpec),
    DelPort(PortMapSpec),
    Iso(IsolationSpec),
    DelIso(String),
    /// A script run by `nft -f` in both namespaces (the state an earlier release left).
    Nft(String),
}

fn pm(cid: &str, n: u8, ports: &[(u16, u16, Protocol, Option<&str>)]) -> PortMapSpec {
    portmap_spec("pmnet", cid, n, ports)
}

fn iso(br: &str, allow_published: bool) -> IsolationSpec {
    IsolationSpec { bridge: br.into(), families: vec![Family::V4, Family::V6], allow_published }
}

/// Every rule set the plugins create (bridge ipMasq, portmap with its options, isolation), alone
/// and together.
fn scenarios() -> Vec<(&'static str, Vec<Call>)> {
    use Protocol::*;
    let masq_v4 = masq("net1", "a", &["10.88.0.5/24"]);
    let masq_v6 = masq("net1", "b", &["fd88::5/64"]);
    let masq_dual = masq("net2", "c", &["10.89.0.5/20", "fd89::5/61", "10.90.0.5/16"]);
    // hosts: the exemption rules without a mask (`ip saddr . ip daddr @exempt4_32`)
    let masq_hosts = masq("net3", "h", &["10.91.0.5/32", "fd91::5/128"]);
    // three networks of different prefix lengths in one table: a rule each, in order
    let masq_lens = [masq("net4", "l1", &["10.92.0.5/24"]), masq("net5", "l2", &["10.93.0.5/8", "fd93::5/48"]), masq("net6", "l3", &["172.16.5.5/12"])];
    // an attachment ADDed again with another prefix length: its earlier exemption goes
    let masq_again = [masq("net7", "r", &["10.94.0.5/24", "fd94::5/64"]), masq("net7", "r", &["10.94.0.5/16", "fd94::5/56"])];
    // a table the previous release made (interval sets), upgraded: its rules and sets kept, the
    // new attachment's per length, the earlier attachment's DEL from the interval sets
    let old = masq("net1", "old", &["10.88.0.6/24", "fd88::6/64"]);
    let pold = pm("pold", 5, &[(8080, 80, Tcp, None), (8443, 443, Tcp, Some("192.0.2.1"))]);
    let upgraded = vec![
        Call::Nft(previous_release_masq(&[&old])),
        Call::Nft(previous_release_hostport(&[&pold])),
        Call::Masq(masq("net1", "new", &["10.88.0.7/24", "fd88::7/64"])),
        Call::Masq(masq("net9", "w", &["10.95.0.7/16"])),
        Call::Port(pm("pnew", 9, &[(8089, 80, Protocol::Tcp, None)])),
        Call::DelMasq(old),
        Call::DelPort(pold),
    ];
    let plain = pm("p1", 5, &[(8080, 80, Tcp, None), (5353, 53, Udp, None), (9000, 9000, Sctp, None)]);
    let hostip = pm("p2", 6, &[(8443, 443, Tcp, Some("192.0.2.1")), (8444, 443, Sctp, Some("2001:db8::1")), (8081, 81, Tcp, Some("0.0.0.0"))]);
    let mut nosnat = pm("p3", 7, &[(7000, 70, Udp, None)]);
    nosnat.snat = false;
    let mut masq_all = pm("p4", 8, &[(7001, 71, Tcp, None), (7002, 72, Tcp, Some("192.0.2.2"))]);
    masq_all.masq_all = true;
    let mut v4only = pm("p5", 9, &[(7003, 73, Tcp, None)]);
    v4only.container_v6 = None;
    let mut all = vec![
        Call::Masq(masq_v4.clone()),
        Call::Masq(masq_v6.clone()),
        Call::Masq(masq_dual.clone()),
        Call::Masq(masq_hosts.clone()),
        Call::Port(plain.clone()),
        Call::Port(hostip.clone()),
        Call::Port(nosnat.clone()),
        Call::Port(masq_all.clone()),
        Call::Port(v4only.clone()),
        Call::Iso(iso("br1", true)),
        Call::Iso(iso("br2", false)),
        Call::Iso(iso("br3", true)),
    ];
    // and some teardown in the mix
    all.extend([Call::DelMasq(masq_v6.clone()), Call::DelPort(hostip.clone()), Call::DelIso("br3".into())]);
    vec![
        ("masquerade v4", vec![Call::Masq(masq_v4)]),
        ("masquerade v6", vec![Call::Masq(masq_v6)]),
        ("masquerade dual stack, unaligned prefixes", vec![Call::Masq(masq_dual)]),
        ("masquerade of hosts (/32, /128)", vec![Call::Masq(masq_hosts)]),
        ("masquerade, three prefix lengths", masq_lens.iter().cloned().map(Call::Masq).collect()),
        ("masquerade ADDed again with other prefix lengths", masq_again.iter().cloned().map(Call::Masq).collect()),
        ("upgrade from the interval sets", upgraded),
        ("portmap without hostIP", vec![Call::Port(plain)]),
        ("portmap with hostIP", vec![Call::Port(hostip)]),
        ("portmap snat false", vec![Call::Port(nosnat)]),
        ("portmap masqAll", vec![Call::Port(masq_all)]),
        ("portmap v4 only", vec![Call::Port(v4only)]),
        ("isolation allowPublished true", vec![Call::Iso(iso("br1", true))]),
        ("isolation allowPublished false", vec![Call::Iso(iso("br1", false))]),
        ("isolation both, then flipped", vec![Call::Iso(iso("br1", true)), Call::Iso(iso("br2", false)), Call::Iso(iso("br1", false)), Call::Iso(iso("br2", true))]),
        ("everything together", all),
    ]
}

fn run(fw: &dyn Firewall, calls: &[Call]) {
    for c in calls {
        match c {
            Call::Masq(s) => fw.add_masquerade(s).unwrap(),
            Call::DelMasq(s) => fw.del_masquerade(&s.key, &s.addrs).unwrap(),
            Call::Port(s) => fw.add_portmap(s).unwrap(),
            Call::DelPort(s) => fw.del_portmap(&s.key).unwrap(),
            Call::Iso(s) => fw.add_isolation(s).unwrap(),
            Call::DelIso(b) => fw.del_isolation(b).unwrap(),
            Call::Nft(script) => {
                sh_in("nft", &["-f", "-"], script);
            }
        }
    }
}

/// The final state of each call's object must pass CHECK (deleted ones: fail it).
fn check_all(fw: &dyn Firewall, calls: &[Call]) {
    let mut last_iso: BTreeMap<String, Option<IsolationSpec>> = BTreeMap::new();
    for c in calls {
        match c {
            Call::Iso(s) => {
                last_iso.insert(s.bridge.clone(), Some(s.clone()));
            }
            Call::DelIso(b) => {
                last_iso.insert(b.clone(), None);
            }
            _ => {}
        }
    }
    let deleted = |k: &cni_firewall::AttachmentKey| {
        calls.iter().any(|c| matches!(c, Call::DelMasq(s) if s.key == *k) || matches!(c, Call::DelPort(s) if s.key == *k))
    };
    // an attachment ADDed again with other addresses or prefixes: only the last ADD holds
    let superseded = |i: usize| match &calls[i] {
        Call::Masq(s) => calls[i + 1..].iter().any(|c| matches!(c, Call::Masq(t) if t.key == s.key)),
        Call::Port(s) => calls[i + 1..].iter().any(|c| matches!(c, Call::Port(t) if t.key == s.key)),
        _ => false,
    };
    for (i, c) in calls.iter().enumerate() {
        match c {
            Call::Masq(s) => assert_eq!(fw.check_masquerade(s).is_ok(), !deleted(&s.key) && !superseded(i), "{s:?}"),
            Call::Port(s) => assert_eq!(fw.check_portmap(s).is_ok(), !deleted(&s.key) && !superseded(i), "{s:?}"),
            Call::DelMasq(s) => assert!(fw.check_masquerade(s).is_err(), "deleted {s:?}"),
            Call::DelPort(s) => assert!(fw.check_portmap(s).is_err(), "deleted {s:?}"),
            _ => {}
        }
    }
    for (b, s) in last_iso {
        match s {
            Some(s) => fw.check_isolation(&s).unwrap_or_else(|e| panic!("{b}: {e}")),
            None => assert!(fw.check_isolation(&iso(&b, false)).is_err() && fw.check_isolation(&iso(&b, true)).is_err()),
        }
    }
}

/// A kernel object as its attributes (type, value).
type Obj = Vec<(u16, Vec<u8>)>;

/// What a namespace holds, seen every way.
#[derive(Debug)]
struct Seen {
    ruleset: Value,
    raw: BTreeMap<String, Vec<Obj>>,
    native: Vec<Option<TableState>>,
    cli: Vec<Option<TableState>>,
}

fn tables() -> [TableRef; 3] {
    [masq_table(), hostport_table(), isolation_table()]
}

fn strip_handles(v: &mut Value) {
    match v {
        Value::Object(o) => {
            o.remove("handle");
            o.values_mut().for_each(strip_handles);
        }
        Value::Array(a) => a.iter_mut().for_each(strip_handles),
        _ => {}
    }
}

/// `nft -j list ruleset` without handles (and without the version line).
fn ruleset() -> Value {
    let mut v: Value = serde_json::from_str(&sh("nft", &["-j", "list", "ruleset"])).unwrap();
    strip_handles(&mut v);
    let items: Vec<Value> = v["nftables"].as_array().unwrap().iter().filter(|o| o.get("metainfo").is_none()).cloned().collect();
    Value::Array(items)
}

fn sorted_elems(st: Option<TableState>) -> Option<TableState> {
    st.map(|mut st| {
        for s in st.sets.values_mut() {
            s.elems.sort();
        }
        st
    })
}

/// Dump `msg` (with `attrs`) for family inet and keep the attributes of each reply, without
/// `drop` (handles). Nothing when the table asked for does not exist.
fn dump(sock: &mut Socket, msg: u16, attrs: &[u8], drop: &[u16]) -> Vec<Obj> {
    let req = nfgen_message(nft_type(msg), NFPROTO_INET, 0, attrs);
    let r = sock.dump_raw(req, |raw| {
        let a = parse_attrs(&raw[20..])?;
        Ok(Some(a.into_iter().filter(|(k, _)| !drop.contains(k)).map(|(k, v)| (k, v.to_vec())).collect()))
    });
    match r {
        Err(e) if e.errno() == Some(2) => Vec::new(),
        r => r.unwrap(),
    }
}

fn str_attr(kind: u16, s: &str) -> Vec<u8> {
    let mut a = Vec::new();
    put_attr(&mut a, kind, format!("{s}\0").as_bytes());
    a
}

fn name_of(a: &[(u16, Vec<u8>)], kind: u16) -> String {
    let v = &a.iter().find(|(k, _)| *k == kind).unwrap().1;
    String::from_utf8_lossy(&v[..v.len() - 1]).into_owned()
}

/// The objects of `tables` (family inet) as the kernel holds them, attribute by attribute.
fn raw_objects_of(tables: &[TableRef]) -> BTreeMap<String, Vec<Obj>> {
    let mut sock = Socket::open_netfilter().unwrap();
    let mut out = BTreeMap::new();
    let ours: Vec<String> = tables.iter().map(|t| t.name.clone()).collect();
    for c in dump(&mut sock, NFT_MSG_GETCHAIN, &[], &[NFTA_CHAIN_HANDLE]) {
        let table = name_of(&c, NFTA_CHAIN_TABLE);
        if ours.contains(&table) {
            out.insert(format!("chain {table} {}", name_of(&c, NFTA_CHAIN_NAME)), vec![c]);
        }
    }
    for t in &ours {
        for s in dump(&mut sock, NFT_MSG_GETSET, &str_attr(NFTA_SET_TABLE, t), &[16 /* NFTA_SET_HANDLE */]) {
            let name = name_of(&s, NFTA_SET_NAME);
            let mut req = str_attr(NFTA_SET_ELEM_LIST_TABLE, t);
            req.extend(str_attr(NFTA_SET_ELEM_LIST_SET, &name));
            let mut elems: Vec<Obj> = Vec::new();
            for msg in dump(&mut sock, NFT_MSG_GETSETELEM, &req, &[]) {
                for (k, list) in msg {
                    if k == NFTA_SET_ELEM_LIST_ELEMENTS {
                        for (_, e) in parse_attrs(&list).unwrap() {
                            elems.push(vec![(0, e.to_vec())]);
                        }
                    }
                }
            }
            elems.sort();
            out.insert(format!("set {t} {name}"), vec![s]);
            out.insert(format!("elements {t} {name}"), elems);
        }
        // handles, and positions (the handle of the rule before), differ with the history
        for r in dump(&mut sock, NFT_MSG_GETRULE, &str_attr(NFTA_RULE_TABLE, t), &[NFTA_RULE_HANDLE, 6 /* NFTA_RULE_POSITION */]) {
            let chain = name_of(&r, NFTA_RULE_CHAIN);
            out.entry(format!("rules {t} {chain}")).or_insert_with(Vec::new).push(r);
        }
    }
    out
}

fn seen() -> Seen {
    seen_of(&tables())
}

fn seen_of(tables: &[TableRef]) -> Seen {
    let cli = NftCli::new(Arc::new(ProcessRunner::new()));
    Seen {
        ruleset: ruleset(),
        raw: raw_objects_of(tables),
        native: tables.iter().map(|t| sorted_elems(NftNetlink.list_table(t).unwrap())).collect(),
        cli: tables.iter().map(|t| sorted_elems(cli.list_table(t).unwrap())).collect(),
    }
}

fn exec_fw() -> NftFirewall {
    NftFirewall::new(Arc::new(ProcessRunner::new()))
}

#[test]
fn every_rule_set_is_the_same_through_both_executors() {
    require_root();
    for (name, calls) in scenarios() {
        let c = calls.clone();
        let by_exec = in_sandbox(move || {
            run(&exec_fw(), &c);
            // the native executor reads and checks what nft wrote
            check_all(&NftFirewall::native(), &c);
            seen()
        });
        let c = calls.clone();
        let by_native = in_sandbox(move || {
            run(&NftFirewall::native(), &c);
            check_all(&NftFirewall::native(), &c);
            check_all(&exec_fw(), &c);
            seen()
        });
        // (across namespaces, handles depend on the history: the native ADD leaves intact chains)
        same(name, &by_exec, &by_native);
    }
}

/// Set definitions, one by one, for every key type the layouts use: the kernel's view of a set
/// (flags, key type and length, user data) is what nft would have made.
#[test]
fn set_user_data_matches_nft() {
    let nft_made = in_sandbox(|| {
        sh_in(
            "nft",
            &["-f", "-"],
            "add table inet t\n\
             add map inet t a { type ipv4_addr . inet_proto . inet_service : verdict; }\n\
             add map inet t b { type inet_proto . inet_service : verdict; }\n\
             add map inet t c { type ipv6_addr : verdict; }\n\
             add set inet t d { type ifname; }\n\
             add map inet t e { type ifname : verdict; }\n\
             add set inet t f { type ipv4_addr . ipv4_addr; }\n\
             add set inet t g { type ipv6_addr . ipv6_addr; }\n",
        );
        let mut sock = Socket::open_netfilter().unwrap();
        dump(&mut sock, NFT_MSG_GETSET, &str_attr(NFTA_SET_TABLE, "t"), &[16])
    });
    let native_made = in_sandbox(|| {
        use cni_firewall::nft::ops::{DataType::*, Op, SetDef};
        let t = TableRef::inet("t");
        let set = |name: &str, key, verdict_map: bool| Op::AddSet { table: t.clone(), set: if verdict_map { SetDef::vmap(name, key) } else { SetDef::set(name, key) } };
        NftNetlink
            .apply(&[
                Op::AddTable(t.clone()),
                set("a", vec![Ipv4Addr, InetProto, InetService], true),
                set("b", vec![InetProto, InetService], true),
                set("c", vec![Ipv6Addr], true),
                set("d", vec![Ifname], false),
                set("e", vec![Ifname], true),
                set("f", vec![Ipv4Addr, Ipv4Addr], false),
                set("g", vec![Ipv6Addr, Ipv6Addr], false),
            ])
            .unwrap();
        let mut sock = Socket::open_netfilter().unwrap();
        dump(&mut sock, NFT_MSG_GETSET, &str_attr(NFTA_SET_TABLE, "t"), &[16])
    });
    assert_eq!(nft_made.len(), 7);
    let by_name = |v: &Vec<Obj>| -> BTreeMap<String, Obj> {
        v.iter().map(|s| (name_of(s, NFTA_SET_NAME), s.clone())).collect()
    };
    assert_eq!(by_name(&nft_made), by_name(&native_made));
}

// ---------------------------------------------------------------------------------------------
// Data maps (owner marks, dnat targets), concatenated interval sets, dnat from a map, hash sets of
// pairs looked up with a masked address
// ---------------------------------------------------------------------------------------------

mod v2 {
    use super::*;
    use cni_firewall::nft::ops::{BaseChain, ChainType, DataType::*, Element, Expr, Field, Hook, Op, Rule, SetData, SetDef, Value, Verdict};

    pub fn t() -> TableRef {
        TableRef::inet("t")
    }

    fn a(s: &str) -> Value {
        Value::Addr(s.parse().unwrap())
    }
    fn p(s: &str) -> Value {
        Value::Prefix(s.parse().unwrap())
    }
    fn marks(m: [u32; 3]) -> Vec<Value> {
        m.iter().map(|m| Value::Mark(*m)).collect()
    }

    pub fn sets() -> Vec<SetDef> {
        vec![
            SetDef::map("masq4", vec![Ipv4Addr], vec![Mark, Mark, Mark]),
            SetDef::map("masq6", vec![Ipv6Addr], vec![Mark, Mark, Mark]),
            SetDef::interval_set("exempt4", vec![Ipv4Addr, Ipv4Addr]),
            SetDef::interval_set("exempt6", vec![Ipv6Addr, Ipv6Addr]),
            SetDef::map("dnat4", vec![InetProto, InetService], vec![Ipv4Addr, InetService]),
            SetDef::map("dnat4h", vec![Ipv4Addr, InetProto, InetService], vec![Ipv4Addr, InetService]),
            SetDef::map("dnat6", vec![InetProto, InetService], vec![Ipv6Addr, InetService]),
            SetDef::map("dnat6h", vec![Ipv6Addr, InetProto, InetService], vec![Ipv6Addr, InetService]),
            // pairs `address . network address`, one hash set per prefix length: byte-aligned
            // masks and others, no mask (/32, /128), an empty mask (/0)
            SetDef::set("exempt4_24", vec![Ipv4Addr, Ipv4Addr]),
            SetDef::set("exempt4_20", vec![Ipv4Addr, Ipv4Addr]),
            SetDef::set("exempt4_32", vec![Ipv4Addr, Ipv4Addr]),
            SetDef::set("hairpin4_0", vec![Ipv4Addr, Ipv4Addr]),
            SetDef::set("hairpin4_16", vec![Ipv4Addr, Ipv4Addr]),
            SetDef::set("exempt6_64", vec![Ipv6Addr, Ipv6Addr]),
            SetDef::set("exempt6_61", vec![Ipv6Addr, Ipv6Addr]),
            SetDef::set("exempt6_128", vec![Ipv6Addr, Ipv6Addr]),
            SetDef::set("hairpin6_0", vec![Ipv6Addr, Ipv6Addr]),
            // a masked address first, then fields of other sizes
            SetDef::set("mixed6", vec![Ipv6Addr, InetProto, InetService]),
        ]
    }

    pub fn postrouting_rules() -> Vec<Rule> {
        use cni_firewall::Family::{V4, V6};
        let ret = || Expr::Verdict(Verdict::Return);
        let lookup = |key: Vec<Field>, set: &str| Expr::Lookup { key, set: set.into(), negate: false };
        let cmp = |field, value| Expr::Cmp { field, negate: false, value };
        vec![
            Rule::new(vec![cmp(Field::Daddr(V4), p("224.0.0.0/4")), ret()]),
            Rule::new(vec![lookup(vec![Field::Saddr(V4), Field::Daddr(V4)], "exempt4"), ret()]),
            Rule::new(vec![lookup(vec![Field::Saddr(V4)], "masq4"), Expr::Masquerade]),
            Rule::new(vec![cmp(Field::Daddr(V6), p("ff00::/8")), ret()]),
            Rule::new(vec![lookup(vec![Field::Saddr(V6), Field::Daddr(V6)], "exempt6"), ret()]),
            Rule::new(vec![lookup(vec![Field::Saddr(V6)], "masq6"), Expr::Masquerade]),
            Rule::new(vec![Expr::CtStatusDnat, lookup(vec![Field::Daddr(V4), Field::Saddr(V4)], "exempt4"), Expr::Masquerade]),
            Rule::new(vec![Expr::CtStatusDnat, lookup(vec![Field::Daddr(V6), Field::Saddr(V6)], "exempt6"), Expr::Masquerade]),
            Rule::new(vec![lookup(vec![Field::Saddr(V4), Field::DaddrMasked(V4, 24)], "exempt4_24"), ret()]),
            Rule::new(vec![lookup(vec![Field::Saddr(V4), Field::DaddrMasked(V4, 20)], "exempt4_20"), ret()]),
            Rule::new(vec![lookup(vec![Field::Saddr(V4), Field::Daddr(V4)], "exempt4_32"), ret()]),
            Rule::new(vec![Expr::CtStatusDnat, lookup(vec![Field::Daddr(V4), Field::SaddrMasked(V4, 0)], "hairpin4_0"), Expr::Masquerade]),
            Rule::new(vec![Expr::CtStatusDnat, lookup(vec![Field::SaddrMasked(V4, 16), Field::Daddr(V4)], "hairpin4_16"), Expr::Masquerade]),
            Rule::new(vec![lookup(vec![Field::Saddr(V6), Field::DaddrMasked(V6, 64)], "exempt6_64"), ret()]),
            Rule::new(vec![lookup(vec![Field::Saddr(V6), Field::DaddrMasked(V6, 61)], "exempt6_61"), ret()]),
            Rule::new(vec![lookup(vec![Field::Saddr(V6), Field::Daddr(V6)], "exempt6_128"), ret()]),
            Rule::new(vec![Expr::CtStatusDnat, lookup(vec![Field::Daddr(V6), Field::SaddrMasked(V6, 0)], "hairpin6_0"), Expr::Masquerade]),
            Rule::new(vec![lookup(vec![Field::DaddrMasked(V6, 48), Field::L4proto, Field::ThDport], "mixed6"), Expr::Verdict(Verdict::Accept)]),
        ]
    }

    pub fn hostport_rules() -> Vec<Rule> {
        use cni_firewall::Family::{V4, V6};
        let dm = |family, key: Vec<Field>, map: &str| Expr::DnatMap { family, key, map: map.into() };
        vec![
            Rule::new(vec![dm(V4, vec![Field::Daddr(V4), Field::L4proto, Field::ThDport], "dnat4h")]),
            Rule::new(vec![Expr::Nfproto(V4), dm(V4, vec![Field::L4proto, Field::ThDport], "dnat4")]),
            Rule::new(vec![dm(V6, vec![Field::Daddr(V6), Field::L4proto, Field::ThDport], "dnat6h")]),
            Rule::new(vec![Expr::Nfproto(V6), dm(V6, vec![Field::L4proto, Field::ThDport], "dnat6")]),
        ]
    }

    /// The elements of each set, as written (a host as a /32 prefix in one of them).
    pub fn elements() -> Vec<(&'static str, Vec<Element>)> {
        let tcp = Value::Proto(Protocol::Tcp);
        let udp = Value::Proto(Protocol::Udp);
        let sctp = Value::Proto(Protocol::Sctp);
        let port = Value::Port;
        vec![
            ("masq4", vec![Element::data(vec![a("10.88.0.5")], marks([0x0123_4567, 0x89ab_cdef, 1]))]),
            ("masq6", vec![Element::data(vec![a("fd88::5")], marks([0x0123_4567, 0x89ab_cdef, 2]))]),
            (
                "exempt4",
                vec![
                    Element::key(vec![a("10.88.0.5"), p("10.88.0.0/24")]),
                    Element::key(vec![a("10.88.0.5"), a("127.0.0.1")]),
                    Element::key(vec![a("10.88.0.6"), p("0.0.0.0/0")]),
                    Element::key(vec![a("10.88.0.7"), p("10.88.0.7/32")]),
                ],
            ),
            ("exempt6", vec![Element::key(vec![a("fd88::5"), p("fd88::/64")]), Element::key(vec![a("fd88::6"), p("::/0")])]),
            (
                "dnat4",
                vec![
                    Element::data(vec![tcp.clone(), port(8080)], vec![a("10.88.0.5"), port(80)]),
                    Element::data(vec![udp.clone(), port(5353)], vec![a("10.88.0.5"), port(53)]),
                    Element::data(vec![sctp, port(9000)], vec![a("10.88.0.5"), port(9000)]),
                ],
            ),
            ("dnat4h", vec![Element::data(vec![a("192.0.2.1"), tcp.clone(), port(8443)], vec![a("10.88.0.5"), port(443)])]),
            ("dnat6", vec![Element::data(vec![tcp.clone(), port(8080)], vec![a("fd88::5"), port(80)])]),
            ("dnat6h", vec![Element::data(vec![a("2001:db8::1"), udp, port(53)], vec![a("fd88::5"), port(5353)])]),
            ("exempt4_24", vec![Element::key(vec![a("10.88.0.5"), a("10.88.0.0")]), Element::key(vec![a("10.88.0.6"), a("10.88.0.0")])]),
            ("exempt4_20", vec![Element::key(vec![a("10.89.0.5"), a("10.89.0.0")])]),
            ("exempt4_32", vec![Element::key(vec![a("10.88.0.7"), a("10.88.0.7")]), Element::key(vec![a("10.88.0.5"), a("127.0.0.1")])]),
            ("hairpin4_0", vec![Element::key(vec![a("10.88.0.6"), a("0.0.0.0")])]),
            ("hairpin4_16", vec![Element::key(vec![a("10.88.0.0"), a("10.88.0.6")])]),
            ("exempt6_64", vec![Element::key(vec![a("fd88::5"), a("fd88::")])]),
            ("exempt6_61", vec![Element::key(vec![a("fd89::5"), a("fd89::")]), Element::key(vec![a("fd89::6"), a("fd89::")])]),
            ("exempt6_128", vec![Element::key(vec![a("fd88::7"), a("fd88::7")])]),
            ("hairpin6_0", vec![Element::key(vec![a("fd88::6"), a("::")])]),
            ("mixed6", vec![Element::key(vec![a("2001:db8:1::"), tcp.clone(), port(80)])]),
        ]
    }

    /// The whole layout as one transaction.
    pub fn layout() -> Vec<Op> {
        let t = t();
        let mut ops = vec![Op::AddTable(t.clone())];
        ops.extend(sets().into_iter().map(|set| Op::AddSet { table: t.clone(), set }));
        ops.push(Op::AddChain {
            table: t.clone(),
            name: "postrouting".into(),
            base: Some(BaseChain { kind: ChainType::Nat, hook: Hook::Postrouting, priority: 100 }),
            comment: None,
        });
        ops.push(Op::AddChain { table: t.clone(), name: "hostports".into(), base: None, comment: None });
        for rule in postrouting_rules() {
            ops.push(Op::AddRule { table: t.clone(), chain: "postrouting".into(), rule });
        }
        for rule in hostport_rules() {
            ops.push(Op::AddRule { table: t.clone(), chain: "hostports".into(), rule });
        }
        for (set, elems) in elements() {
            ops.push(Op::AddElements { table: t.clone(), set: set.into(), elems });
        }
        ops
    }

    /// Deletes of some elements of each kind, in operations that do not define their sets: an
    /// interval element named by prefix, one named by single values only (its set's kind must be
    /// looked up), data-map elements (named with their data, which a delete leaves out), pairs of
    /// hash sets; and an interval element of single values added (the kernel keeps its last key
    /// only if it is sent), pairs added to hash sets.
    pub fn changes() -> Vec<Op> {
        let t = t();
        let del = |set: &str, elems: Vec<Element>| Op::DeleteElements { table: t.clone(), set: set.into(), elems };
        let all = elements();
        let of = |set: &str, i: usize| all.iter().find(|(s, _)| *s == set).unwrap().1[i].clone();
        vec![
            del("exempt4", vec![of("exempt4", 0)]),
            del("exempt4", vec![Element::key(vec![a("10.88.0.7"), a("10.88.0.7")])]),
            del("exempt6", vec![of("exempt6", 1)]),
            del("dnat4", vec![of("dnat4", 1)]),
            del("dnat4h", vec![of("dnat4h", 0)]),
            del("masq4", vec![of("masq4", 0)]),
            del("exempt4_24", vec![of("exempt4_24", 0)]),
            del("exempt6_61", vec![of("exempt6_61", 1)]),
            del("hairpin4_0", vec![of("hairpin4_0", 0)]),
            Op::AddElements { table: t.clone(), set: "exempt4".into(), elems: vec![added()[0].1.clone()] },
            Op::AddElements { table: t.clone(), set: "exempt4_32".into(), elems: vec![added()[1].1.clone()] },
            Op::AddElements { table: t.clone(), set: "hairpin6_0".into(), elems: vec![added()[2].1.clone()] },
        ]
    }

    /// The elements [`changes`] adds, with their sets.
    fn added() -> Vec<(&'static str, Element)> {
        vec![
            ("exempt4", Element::key(vec![a("10.88.0.8"), a("10.88.0.8")])),
            ("exempt4_32", Element::key(vec![a("10.88.0.8"), a("10.88.0.8")])),
            ("hairpin6_0", Element::key(vec![a("fd88::8"), a("::")])),
        ]
    }

    /// The elements a reader should find, after the [`changes`] if `changed`: as written, hosts
    /// as addresses.
    pub fn expected(changed: bool) -> BTreeMap<String, Vec<Element>> {
        let mut out = BTreeMap::new();
        for (set, elems) in elements() {
            let mut elems: Vec<Element> = elems
                .into_iter()
                .map(|mut e| {
                    for v in e.key.iter_mut() {
                        if let Value::Prefix(n) = v {
                            if n.prefix() == 32 || n.prefix() == 128 {
                                *v = Value::Addr(n.ip());
                            }
                        }
                    }
                    e
                })
                .collect();
            if changed {
                elems.extend(added().into_iter().filter(|(s, _)| *s == set).map(|(_, e)| e));
                for op in changes() {
                    if let Op::DeleteElements { set: s, elems: gone, .. } = op {
                        if s == set {
                            // `10.88.0.7 . 10.88.0.7` is deleted by the key it reads back as
                            elems.retain(|e| !gone.iter().any(|g| g.key == e.key));
                        }
                    }
                }
            }
            elems.sort();
            out.insert(set.to_string(), elems);
        }
        out
    }

    pub fn check_state(st: &TableState, changed: bool, who: &str) {
        let want = expected(changed);
        for def in sets() {
            let s = st.set(&def.name).unwrap_or_else(|| panic!("{who}: no set {}", def.name));
            assert_eq!((&s.key, &s.data, s.interval), (&def.key, &def.data, def.interval), "{who}: set {}", def.name);
            assert_eq!(s.elems, want[&def.name], "{who}: elements of {}", def.name);
        }
        assert!(matches!(st.set("masq4").unwrap().data, SetData::Values(ref d) if d.len() == 3));
        for (chain, rules) in [("postrouting", postrouting_rules()), ("hostports", hostport_rules())] {
            let c = st.chain(chain).unwrap_or_else(|| panic!("{who}: no chain {chain}"));
            assert_eq!(c.rules.len(), rules.len(), "{who}: {chain}");
            for (have, rule) in c.rules.iter().zip(&rules) {
                assert!(have.matches(rule), "{who}: {chain}: {} read as {}", rule.text(), have.exprs.json());
            }
        }
    }
}

/// Compare what two namespaces hold, every way; `what` names the step.
fn same(what: &str, by_exec: &Seen, by_native: &Seen) {
    assert_eq!(by_exec.ruleset, by_native.ruleset, "{what}: nft -j list ruleset differs");
    assert!(!by_native.raw.is_empty(), "{what}: nothing read");
    for (k, v) in &by_exec.raw {
        assert_eq!(Some(v), by_native.raw.get(k), "{what}: kernel object {k} differs");
    }
    assert_eq!(by_exec.raw.len(), by_native.raw.len(), "{what}: objects {:?} vs {:?}", by_exec.raw.keys(), by_native.raw.keys());
    for s in [by_exec, by_native] {
        assert_eq!(s.native, s.cli, "{what}: native read-back differs from the nft -j reader");
    }
    let no_handles = |v: &[Option<TableState>]| -> Vec<Option<TableState>> {
        v.iter()
            .cloned()
            .map(|st| {
                st.map(|mut st| {
                    st.chains.values_mut().flat_map(|c| c.rules.iter_mut()).for_each(|r| r.handle = 0);
                    st
                })
            })
            .collect()
    };
    assert_eq!(no_handles(&by_exec.native), no_handles(&by_native.native), "{what}");
}

/// Data maps of marks and of dnat targets, concatenated interval sets, `dnat ... map`, lookups in
/// data maps, hash sets of pairs looked up with an address masked (v4 and v6; /0, unaligned
/// lengths, none at /32 and /128; masked first or last in the concatenation): written through `nft` in one namespace and natively in another, then
/// some elements of each kind deleted (and one added) the same way; the kernel objects, `nft -j list ruleset`
/// and both readers agree at each step, and the readers find the elements with their data and
/// ranges.
#[test]
fn data_maps_and_interval_sets_are_the_same_through_both_executors() {
    require_root();
    let run_with = |native: bool| {
        in_sandbox(move || {
            let exec: Box<dyn NftExecutor> = if native { Box::new(NftNetlink) } else { Box::new(NftCli::new(Arc::new(ProcessRunner::new()))) };
            exec.apply(&v2::layout()).unwrap();
            let before = seen_of(&[v2::t()]);
            exec.apply(&v2::changes()).unwrap();
            let after = seen_of(&[v2::t()]);
            (before, after)
        })
    };
    let (exec_before, exec_after) = run_with(false);
    let (native_before, native_after) = run_with(true);
    same("layout", &exec_before, &native_before);
    same("after deletes", &exec_after, &native_after);
    for (seen, changed) in [(&exec_before, false), (&native_before, false), (&exec_after, true), (&native_after, true)] {
        for (who, st) in [("native reader", &seen.native[0]), ("nft -j reader", &seen.cli[0])] {
            v2::check_state(st.as_ref().expect("table t"), changed, &format!("{who}, changed: {changed}"));
        }
    }
}

/// The focused read of ADD: a data-map element is found by its key, with its data; an interval
/// set's elements are found by the points of the wanted range (its first and last keys), with
/// their own ranges, each once; a hash set's element by its key.
#[test]
fn read_for_add_finds_map_data_interval_and_hash_set_elements() {
    use cni_firewall::nft::ops::{Element, Op, Value};
    require_root();
    in_sandbox(|| {
        NftNetlink.apply(&v2::layout()).unwrap();
        let a = |s: &str| Value::Addr(s.parse().unwrap());
        let p = |s: &str| Value::Prefix(s.parse().unwrap());
        let add = |set: &str, elems: Vec<Element>| Op::AddElements { table: v2::t(), set: set.into(), elems };
        let read = |ops: Vec<Op>| NftNetlink.read_for_add(&v2::t(), &ops).unwrap().expect("table t");
        // data map: by key, whatever data the ADD would write
        let st = read(vec![add("dnat4", vec![Element::data(vec![Value::Proto(Protocol::Tcp), Value::Port(8080)], vec![a("10.1.1.1"), Value::Port(1)])])]);
        assert_eq!(st.set("dnat4").unwrap().elems, vec![Element::data(vec![Value::Proto(Protocol::Tcp), Value::Port(8080)], vec![a("10.88.0.5"), Value::Port(80)])]);
        let st = read(vec![add("masq6", vec![Element::key(vec![a("fd88::5")])])]);
        assert_eq!(st.set("masq6").unwrap().elems[0].data, vec![Value::Mark(0x0123_4567), Value::Mark(0x89ab_cdef), Value::Mark(2)]);
        let st = read(vec![add("dnat6", vec![Element::key(vec![Value::Proto(Protocol::Udp), Value::Port(8080)])])]);
        assert!(st.set("dnat6").unwrap().elems.is_empty());
        // interval set: a point inside an element finds it with its range
        let st = read(vec![add("exempt4", vec![Element::key(vec![a("10.88.0.5"), a("10.88.0.9")])])]);
        let s = st.set("exempt4").unwrap();
        assert!(s.interval);
        assert_eq!(s.elems, vec![Element::key(vec![a("10.88.0.5"), p("10.88.0.0/24")])]);
        // a range whose first and last keys fall in two elements finds both; one in a single element finds it once
        let st = read(vec![add("exempt4", vec![Element::key(vec![p("10.88.0.6/31"), p("10.88.0.0/29")]), Element::key(vec![a("10.88.0.6"), p("10.0.0.0/8")])])]);
        assert_eq!(
            st.set("exempt4").unwrap().elems,
            vec![Element::key(vec![a("10.88.0.6"), p("0.0.0.0/0")]), Element::key(vec![a("10.88.0.7"), a("10.88.0.7")])]
        );
        let st = read(vec![add("exempt6", vec![Element::key(vec![a("fd88::5"), a("fd88::1:2")])])]);
        assert_eq!(st.set("exempt6").unwrap().elems, vec![Element::key(vec![a("fd88::5"), p("fd88::/64")])]);
        // nothing there
        let st = read(vec![add("exempt4", vec![Element::key(vec![a("10.88.0.8"), a("10.88.0.9")])])]);
        assert!(st.set("exempt4").unwrap().elems.is_empty());
        // a hash set of pairs: the element with that very key, nothing around it; only the sets
        // added to are read
        let pair = |x: &str, y: &str| Element::key(vec![a(x), a(y)]);
        let st = read(vec![add("exempt4_24", vec![pair("10.88.0.6", "10.88.0.0"), pair("10.88.0.9", "10.88.0.0")])]);
        let s = st.set("exempt4_24").unwrap();
        assert!(!s.interval);
        assert_eq!(s.elems, vec![pair("10.88.0.6", "10.88.0.0")]);
        assert!(st.set("exempt4_20").is_none() && st.set("exempt4").is_none(), "{:?}", st.sets.keys());
        let st = read(vec![add("exempt4_24", vec![pair("10.88.0.6", "10.88.0.1")])]);
        assert!(st.set("exempt4_24").unwrap().elems.is_empty(), "a hash set has no ranges");
        let st = read(vec![add("hairpin6_0", vec![pair("fd88::6", "::")]), add("exempt6_61", vec![pair("fd89::6", "fd89::")])]);
        assert_eq!(st.set("hairpin6_0").unwrap().elems, vec![pair("fd88::6", "::")]);
        assert_eq!(st.set("exempt6_61").unwrap().elems, vec![pair("fd89::6", "fd89::")]);
    });
}
