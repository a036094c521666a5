//! Port mappings on nftables, iptables (host alternative) and iptables-legacy, both families, in
//! throwaway network namespaces. Requires root.

mod common;

use cni_firewall::ipt::plan as ipt;
use cni_firewall::exec::ProcessRunner;
use cni_firewall::nft::plan::{legacy, HOSTPORT_TABLE};
use cni_firewall::nft::{NftCli, NftExecutor};
use cni_firewall::{AttachmentKey, Family, PortMapSpec, Protocol};
use common::*;
use serde_json::json;

const NET: &str = "pmnet";

fn spec(cid: &str, n: u8, ports: &[(u16, u16, Protocol, Option<&str>)]) -> PortMapSpec {
    portmap_spec(NET, cid, n, ports)
}

fn web(cid: &str, n: u8) -> PortMapSpec {
    spec(
        cid,
        n,
        &[(8080, 80, Protocol::Tcp, None), (8443, 443, Protocol::Tcp, Some("192.0.2.1")), (5353, 53, Protocol::Udp, None), (9000, 9000, Protocol::Sctp, Some("2001:db8::1"))],
    )
}

type Elem = (serde_json::Value, serde_json::Value);

/// `proto . host port : container address . port` (maps dnat4/6).
fn dn(proto: &str, port: u16, addr: &str, cport: u16) -> Elem {
    (json!({"concat": [proto, port]}), json!({"concat": [addr, cport]}))
}

/// `host IP . proto . host port : container address . port` (maps hostip4/6).
fn hip(host: &str, proto: &str, port: u16, addr: &str, cport: u16) -> Elem {
    (json!({"concat": [host, proto, port]}), json!({"concat": [addr, cport]}))
}

/// `container address : owner marks` (maps owner4/6).
fn own(addr: &str, k: &AttachmentKey) -> Elem {
    (json!(addr), nft_owner(k))
}

/// What an attachment at 10.66.0.n/24 and fd66::n/64 with mappings in both families and the
/// default hairpin (snat, no masqAll) owns besides its DNAT elements: its owner elements, and
/// as hairpin sources its subnet (`10.66.0.n . 10.66.0.0` in the set of /24) and, for IPv4,
/// 127.0.0.1 (in the set of /32).
fn owned(n: u8, k: &AttachmentKey) -> Vec<(&'static str, Elem)> {
    let (a4, a6) = (format!("10.66.0.{n}"), format!("fd66::{n}"));
    vec![
        ("owner4", own(&a4, k)),
        ("owner6", own(&a6, k)),
        ("hairpin4_24", nft_pair(&a4, "10.66.0.0")),
        ("hairpin4_32", nft_pair(&a4, "127.0.0.1")),
        ("hairpin6_64", nft_pair(&a6, "fd66::")),
    ]
}

/// The sets of `inet cnirs_hostport2` besides the hairpin sets.
const HOSTPORT_SETS: [&str; 6] = ["dnat4", "hostip4", "owner4", "dnat6", "hostip6", "owner6"];

/// The hairpin sources' prefix lengths of attachments with the default hairpin (snat): /24 and
/// /32 (127.0.0.1) for IPv4, /64 for IPv6.
const SNAT4: Pairs<'static> = Pairs { legacy: false, lens: &[24, 32] };
const SNAT6: Pairs<'static> = Pairs { legacy: false, lens: &[64] };

/// The rules of the chains of `inet cnirs_hostport2`, as `nft -j` prints them (postrouting: see
/// [`nft_hairpin_rules`]).
fn nft_chain_rules(chain: &str) -> Vec<serde_json::Value> {
    let pl = |p: &str, f: &str| json!({"payload": {"protocol": p, "field": f}});
    let l4 = json!({"meta": {"key": "l4proto"}});
    let dport = pl("th", "dport");
    let nfproto = |v: &str| json!({"match": {"op": "==", "left": {"meta": {"key": "nfproto"}}, "right": v}});
    let dnat = |fam: &str, key: serde_json::Value, map: &str| json!({"dnat": {"family": fam, "addr": {"map": {"key": {"concat": key}, "data": map}}}});
    let entry = json!([{"match": {"op": "==", "left": {"fib": {"result": "type", "flags": ["daddr"]}}, "right": "local"}}, {"jump": {"target": "hostports"}}]);
    match chain {
        "hostports" => vec![
            json!([dnat("ip", json!([pl("ip", "daddr"), l4, dport]), "@hostip4")]),
            json!([nfproto("ipv4"), dnat("ip", json!([l4, dport]), "@dnat4")]),
            json!([dnat("ip6", json!([pl("ip6", "daddr"), l4, dport]), "@hostip6")]),
            json!([nfproto("ipv6"), dnat("ip6", json!([l4, dport]), "@dnat6")]),
        ],
        "prerouting" | "output" => vec![entry],
        _ => unreachable!("{chain}"),
    }
}

/// Assert table `inet cnirs_hostport2` holds exactly the elements `want` (set, element) — sets
/// not named are empty — behind its constant chains and the hairpin rules of `v4` and `v6` (the
/// earlier release's interval set, the prefix lengths with a rule; their sets and nothing else);
/// and that the earlier layout's table was not made. An absent table holds nothing.
fn assert_nft_hostport(v4: Pairs, v6: Pairs, want: &[(&str, Elem)]) {
    let rs = nft_ruleset();
    assert!(!nft_has_table(&rs, legacy::HOSTPORT_TABLE), "the earlier layout's table made");
    assert_nft_hostport_in(&rs, v4, v6, want);
}

fn assert_nft_hostport_in(rs: &[serde_json::Value], v4: Pairs, v6: Pairs, want: &[(&str, Elem)]) {
    let mut sets: Vec<String> = HOSTPORT_SETS.iter().map(|s| s.to_string()).collect();
    for (sfx, p) in [("4", v4), ("6", v6)] {
        if p.legacy {
            sets.push(format!("hairpin{sfx}"));
        }
        sets.extend(p.lens.iter().map(|n| format!("hairpin{sfx}_{n}")));
    }
    sets.sort();
    for (set, _) in want {
        assert!(sets.iter().any(|s| s == set), "{set} is not a set of the layout");
    }
    if !nft_has_table(rs, HOSTPORT_TABLE) {
        assert!(want.is_empty(), "table {HOSTPORT_TABLE} missing");
        return;
    }
    assert_eq!(nft_chains_sorted(rs, HOSTPORT_TABLE), vec!["hostports", "output", "postrouting", "prerouting"], "no chain per attachment");
    for (chain, hook, prio) in [("prerouting", "prerouting", -100), ("output", "output", -100), ("postrouting", "postrouting", 100)] {
        assert_eq!(nft_base_chain(rs, HOSTPORT_TABLE, chain), ("nat".into(), hook.into(), prio, "accept".into()));
    }
    for chain in ["hostports", "prerouting", "output"] {
        assert_eq!(nft_rules(rs, HOSTPORT_TABLE, chain), nft_chain_rules(chain), "rules of {chain}");
    }
    assert_eq!(nft_rules(rs, HOSTPORT_TABLE, "postrouting"), nft_hairpin_rules(v4, v6), "rules of postrouting");
    assert_eq!(nft_set_names(rs, HOSTPORT_TABLE), sets, "sets of {HOSTPORT_TABLE}");
    for set in &sets {
        let w: Vec<Elem> = want.iter().filter(|(s, _)| s == set).map(|(_, e)| e.clone()).collect();
        assert_eq!(nft_elems_sorted(rs, HOSTPORT_TABLE, set), sorted_elems(w), "{set}");
    }
}

/// Per-attachment state present for `s` (iptables: its chain; nftables: an element it owns, one
/// mapping to its container addresses or a hairpin element of them)?
fn present(flavor: Flavor, s: &PortMapSpec) -> bool {
    let k = &s.key;
    match flavor {
        Flavor::Nft => {
            let rs = nft_ruleset();
            let owner = nft_owner(k);
            let addrs: Vec<serde_json::Value> = [s.container_v4, s.container_v6].iter().flatten().map(|a| json!(a.ip().to_string())).collect();
            let elems = |sets: &[&str]| -> Vec<Elem> { sets.iter().flat_map(|m| nft_elems(&rs, HOSTPORT_TABLE, m)).collect() };
            let owns = elems(&["owner4", "owner6"]).iter().any(|(_, d)| *d == owner);
            let mapped = elems(&["dnat4", "hostip4", "dnat6", "hostip6"]).iter().any(|(_, d)| addrs.contains(&d["concat"][0]));
            let hairpin = nft_pair_sets(&rs, HOSTPORT_TABLE, "hairpin").iter().flat_map(|m| nft_elems(&rs, HOSTPORT_TABLE, m)).any(|(e, _)| addrs.contains(&e["concat"][0]));
            owns || mapped || hairpin
        }
        _ => Family::BOTH.iter().any(|f| {
            let dn = ipt::dn_chain(k);
            ipt_rules(flavor, *f, "nat").iter().any(|l| l.contains(&dn)) || ipt_user_chains(flavor, *f, "nat").contains(&dn)
        }),
    }
}

fn add_check_del(flavor: Flavor) {
    in_sandbox(move || {
        let (fw, runner) = make(flavor);
        let a = web("a", 5);
        let n = count(&runner, || fw.add_portmap(&a).unwrap());
        // first ever ADD on iptables: guards fail (no shared chains yet) -> read + write per family;
        // nftables: the table read (missing), read again under the namespace's lock, made in one
        // transaction (postrouting depends on the hairpin prefix lengths the table has)
        assert_eq!(n, if flavor == Flavor::Nft { 3 } else { 6 }, "first ADD");
        fw.check_portmap(&a).unwrap();
        let b = spec("b", 6, &[(8081, 81, Protocol::Tcp, None)]);
        let n = count(&runner, || fw.add_portmap(&b).unwrap());
        // iptables: one transaction per family; nftables: a read and one transaction
        assert_eq!(n, 2, "later ADD");
        fw.check_portmap(&b).unwrap();

        match flavor {
            Flavor::Nft => {
                // the first mapping of a host port counts; 8443 (host IP v4) and 9000 (v6) in one family each
                let mut want = web_elements(&a.key);
                want.extend([("dnat4", dn("tcp", 8081, "10.66.0.6", 81)), ("dnat6", dn("tcp", 8081, "fd66::6", 81))]);
                want.extend(owned(6, &b.key));
                assert_nft_hostport(SNAT4, SNAT6, &want);
            }
            _ => {
                let r4 = ipt_rules(flavor, Family::V4, "nat");
                let dn = ipt::dn_chain(&a.key);
                assert!(r4.contains(&format!("-A {dn} -d 192.0.2.1/32 -p tcp -m tcp --dport 8443 -j DNAT --to-destination 10.66.0.5:443")));
                assert!(r4.contains(&format!("-A {dn} -s 127.0.0.1/32 -p tcp -m tcp --dport 8080 -j CNI-HOSTPORT-SETMARK")));
                let r6 = ipt_rules(flavor, Family::V6, "nat");
                assert!(r6.contains(&format!("-A {dn} -d 2001:db8::1/128 -p sctp -m sctp --dport 9000 -j DNAT --to-destination [fd66::5]:9000")));
                assert!(!r6.iter().any(|l| l.contains("127.0.0.1") || l.contains("192.0.2.1")));
                // entries in ADD order, as the reference appends them: the first container keeps a contested port
                let entries: Vec<&String> = r4.iter().filter(|l| l.starts_with("-A CNI-HOSTPORT-DNAT")).collect();
                assert!(entries[0].contains(&ipt::dn_chain(&a.key)), "{entries:?}");
                assert!(entries.last().is_some_and(|l| l.contains(&ipt::dn_chain(&b.key))), "{entries:?}");
                assert!(r4.contains(&"-A PREROUTING -m addrtype --dst-type LOCAL -j CNI-HOSTPORT-DNAT".to_string()));
                assert!(r4.contains(&"-A OUTPUT -m addrtype --dst-type LOCAL -j CNI-HOSTPORT-DNAT".to_string()));
            }
        }

        let n = count(&runner, || fw.del_portmap(&a.key).unwrap());
        // iptables: one read + one write per family; nftables: read + write, and a read of the
        // earlier layout's table (absent)
        assert_eq!(n, if flavor == Flavor::Nft { 3 } else { 4 }, "DEL");
        assert!(!present(flavor, &a));
        if flavor == Flavor::Nft {
            let mut want = vec![("dnat4", dn("tcp", 8081, "10.66.0.6", 81)), ("dnat6", dn("tcp", 8081, "fd66::6", 81))];
            want.extend(owned(6, &b.key));
            assert_nft_hostport(SNAT4, SNAT6, &want);
        }
        let n = count(&runner, || assert_eq!(fw.check_portmap(&a).unwrap_err().code(), 105));
        if flavor == Flavor::Nft {
            assert_eq!(n, 2, "failing CHECK: both layouts' tables read");
        }
        let n = count(&runner, || fw.check_portmap(&b).unwrap());
        assert_eq!(n, if flavor == Flavor::Nft { 1 } else { 2 }, "CHECK");
        let n = count(&runner, || fw.del_portmap(&a.key).unwrap());
        if flavor == Flavor::Nft {
            assert_eq!(n, 2, "DEL with nothing to do: reads only");
        }
        fw.del_portmap(&b.key).unwrap();
        assert!(!present(flavor, &b));
        match flavor {
            // the hairpin sets and rules of the lengths used stay
            Flavor::Nft => assert_nft_hostport(SNAT4, SNAT6, &[]),
            _ => {
                for fam in Family::BOTH {
                    let mut chains = ipt_user_chains(flavor, fam, "nat");
                    chains.sort();
                    assert_eq!(chains, vec!["CNI-HOSTPORT-DNAT", "CNI-HOSTPORT-MASQ", "CNI-HOSTPORT-SETMARK"]);
                    assert!(ipt_rules(flavor, fam, "nat").iter().all(|l| !l.contains("CNI-DN-")));
                }
            }
        }
    });
}

/// The nft elements of `web(_, 5)` (container 10.66.0.5 / fd66::5) owned by `k`.
fn web_elements(k: &AttachmentKey) -> Vec<(&'static str, Elem)> {
    let mut v = vec![
        ("dnat4", dn("tcp", 8080, "10.66.0.5", 80)),
        ("dnat4", dn("udp", 5353, "10.66.0.5", 53)),
        ("hostip4", hip("192.0.2.1", "tcp", 8443, "10.66.0.5", 443)),
        ("dnat6", dn("tcp", 8080, "fd66::5", 80)),
        ("dnat6", dn("udp", 5353, "fd66::5", 53)),
        ("hostip6", hip("2001:db8::1", "sctp", 9000, "fd66::5", 9000)),
    ];
    v.extend(owned(5, k));
    v
}

fn repeated_add_and_options(flavor: Flavor) {
    in_sandbox(move || {
        let (fw, _) = make(flavor);
        let mut a = web("a", 5);
        let a_full = || web_elements(&key(NET, "a"));
        fw.add_portmap(&a).unwrap();
        fw.add_portmap(&a).unwrap();
        if flavor == Flavor::Nft {
            assert_nft_hostport(SNAT4, SNAT6, &a_full());
        }
        fw.check_portmap(&a).unwrap();
        // changed options on a repeated ADD replace the attachment's rules
        a.masq_all = true;
        a.mark_masq_bit = 14;
        fw.add_portmap(&a).unwrap();
        fw.check_portmap(&a).unwrap();
        // masqAll: every source towards the container is masqueraded on hairpin (the sets and
        // rules of /0); the earlier hairpin elements are replaced (the ADD reads the whole table
        // when the container address has an owner), their sets and rules stay
        let (all4, all6) = (Pairs { legacy: false, lens: &[0, 24, 32] }, Pairs { legacy: false, lens: &[0, 64] });
        if flavor == Flavor::Nft {
            let mut want = a_full();
            want.retain(|(set, _)| !set.starts_with("hairpin"));
            want.extend([("hairpin4_0", nft_pair("10.66.0.5", "0.0.0.0")), ("hairpin6_0", nft_pair("fd66::5", "::"))]);
            assert_nft_hostport(all4, all6, &want);
        }
        a.snat = false;
        a.mappings.truncate(1);
        fw.add_portmap(&a).unwrap();
        fw.check_portmap(&a).unwrap();
        if flavor == Flavor::Nft {
            // fewer mappings without snat: the attachment's elements replaced, the dropped
            // mappings (udp 5353, 8443 on 192.0.2.1, sctp 9000) and the hairpin sources gone (as
            // the old layout's refill of the attachment's chains did)
            let k = key(NET, "a");
            let want = [
                ("dnat4", dn("tcp", 8080, "10.66.0.5", 80)),
                ("dnat6", dn("tcp", 8080, "fd66::5", 80)),
                ("owner4", own("10.66.0.5", &k)),
                ("owner6", own("fd66::5", &k)),
            ];
            assert_nft_hostport(all4, all6, &want);
        }
        if flavor == Flavor::Nft {
            let mut c = a.clone();
            c.conditions_v4 = Some(vec!["ip".into(), "saddr".into(), "10.0.0.0/8".into()]);
            assert_eq!(fw.add_portmap(&c).unwrap_err().code(), 2, "conditions refused, not ignored");
        } else {
            // the external mark chain must exist for iptables to accept the jump
            for fam in Family::BOTH {
                sh(&flavor.cmd_bin(fam), &["-w", "-t", "nat", "-N", "KUBE-MARK-MASQ"]);
            }
            a.snat = true;
            a.external_setmark_chain = Some("KUBE-MARK-MASQ".into());
            a.conditions_v4 = Some(vec!["!".into(), "-s".into(), "10.99.0.0/16".into()]);
            fw.add_portmap(&a).unwrap();
            fw.check_portmap(&a).unwrap();
            let r4 = ipt_rules(flavor, Family::V4, "nat");
            assert!(r4.iter().any(|l| l.contains("! -s 10.99.0.0/16") && l.contains("CNI-HOSTPORT-DNAT")), "{r4:?}");
            assert!(r4.iter().any(|l| l.ends_with("-j KUBE-MARK-MASQ")));
        }
        fw.del_portmap(&a.key).unwrap();
        assert!(!present(flavor, &a));
        if flavor == Flavor::Nft {
            assert_nft_hostport(all4, all6, &[]);
        }
    });
}

fn host_port_takeover(flavor: Flavor) {
    in_sandbox(move || {
        let (fw, _) = make(flavor);
        // A's DEL never ran; B takes the same host port (last writer wins, like the reference)
        let a = spec("a", 5, &[(8080, 80, Protocol::Tcp, None)]);
        let b = spec("b", 6, &[(8080, 8080, Protocol::Tcp, None)]);
        fw.add_portmap(&a).unwrap();
        fw.add_portmap(&b).unwrap();
        fw.check_portmap(&b).unwrap();
        if flavor == Flavor::Nft {
            // the port's element re-pointed to B; A keeps its address (owner, hairpin)
            let mut want = vec![("dnat4", dn("tcp", 8080, "10.66.0.6", 8080)), ("dnat6", dn("tcp", 8080, "fd66::6", 8080))];
            want.extend(owned(5, &a.key));
            want.extend(owned(6, &b.key));
            assert_nft_hostport(SNAT4, SNAT6, &want);
            assert_eq!(fw.check_portmap(&a).unwrap_err().code(), 105, "A lost its port");
        }
        // A's late DEL leaves B's port
        fw.del_portmap(&a.key).unwrap();
        fw.check_portmap(&b).unwrap();
        assert!(!present(flavor, &a));
        if flavor == Flavor::Nft {
            let mut want = vec![("dnat4", dn("tcp", 8080, "10.66.0.6", 8080)), ("dnat6", dn("tcp", 8080, "fd66::6", 8080))];
            want.extend(owned(6, &b.key));
            assert_nft_hostport(SNAT4, SNAT6, &want);
        }
    });
}

fn concurrent_writers(flavor: Flavor) {
    in_sandbox(move || {
        let ns = NsHandle::current();
        let s = |i: u8| spec(&format!("c{i}"), 10 + i, &[(10000 + i as u16, 80, Protocol::Tcp, None), (11000 + i as u16, 53, Protocol::Udp, None)]);
        let hs: Vec<_> = (0..8).map(|i| ns.spawn(move || make(flavor).0.add_portmap(&s(i)))).collect();
        for h in hs {
            h.join().unwrap().unwrap();
        }
        let hs: Vec<_> = (0..8)
            .map(|i| ns.spawn(move || if i % 2 == 0 { make(flavor).0.del_portmap(&s(i).key) } else { Ok(()) }))
            .chain((8..12).map(|i| ns.spawn(move || make(flavor).0.add_portmap(&s(i)))))
            .collect();
        for h in hs {
            h.join().unwrap().unwrap();
        }
        let (fw, _) = make(flavor);
        for i in 0..12u8 {
            let ok = fw.check_portmap(&s(i)).is_ok();
            assert_eq!(ok, i >= 8 || i % 2 == 1, "c{i}");
            assert_eq!(present(flavor, &s(i)), ok, "c{i}");
        }
    });
}

fn gc_and_flush(flavor: Flavor) {
    in_sandbox(move || {
        let (fw, runner) = make(flavor);
        // distinct host ports: on nftables a host port has one owner (last writer wins)
        let a = web("a", 5);
        let b = spec("b", 6, &[(7080, 80, Protocol::Tcp, None), (7053, 53, Protocol::Udp, Some("fd66::1"))]);
        let mut x = spec("x", 7, &[(6080, 80, Protocol::Tcp, Some("192.0.2.7"))]);
        x.key.network = "othernet".into();
        for s in [&a, &b, &x] {
            fw.add_portmap(s).unwrap();
        }
        let a_elems = || web_elements(&a.key);
        // x maps a v4 host IP only: nothing of it in the v6 sets
        let x_elems = vec![
            ("hostip4", hip("192.0.2.7", "tcp", 6080, "10.66.0.7", 80)),
            ("owner4", own("10.66.0.7", &x.key)),
            ("hairpin4_24", nft_pair("10.66.0.7", "10.66.0.0")),
            ("hairpin4_32", nft_pair("10.66.0.7", "127.0.0.1")),
        ];
        if flavor == Flavor::Nft {
            let mut want = a_elems();
            want.extend(x_elems.clone());
            want.extend(owned(6, &b.key));
            want.extend([("dnat4", dn("tcp", 7080, "10.66.0.6", 80)), ("dnat6", dn("tcp", 7080, "fd66::6", 80))]);
            want.push(("hostip6", hip("fd66::1", "udp", 7053, "fd66::6", 53)));
            assert_nft_hostport(SNAT4, SNAT6, &want);
        }
        let n = count(&runner, || fw.gc_portmap(NET, std::slice::from_ref(&a.key)).unwrap());
        if flavor == Flavor::Nft {
            assert_eq!(n, 3, "GC: read + write, and a read of the earlier layout's table");
            let mut want = a_elems();
            want.extend(x_elems.clone());
            assert_nft_hostport(SNAT4, SNAT6, &want);
        }
        fw.check_portmap(&a).unwrap();
        fw.check_portmap(&x).unwrap();
        assert!(!present(flavor, &b));
        // an admin flushes everything; teardown still succeeds
        match flavor {
            Flavor::Nft => {
                sh("nft", &["flush", "ruleset"]);
            }
            _ => {
                for fam in Family::BOTH {
                    sh(&flavor.cmd_bin(fam), &["-w", "-t", "nat", "-F"]);
                }
            }
        }
        fw.del_portmap(&a.key).unwrap();
        fw.del_portmap(&x.key).unwrap();
        fw.gc_portmap(NET, &[]).unwrap();
        assert!(!present(flavor, &a));
        if flavor == Flavor::Nft {
            // (no table any more)
            assert_nft_hostport(SNAT4, SNAT6, &[]);
        }
        // and ADD works again afterwards (the shared parts are recreated)
        fw.add_portmap(&a).unwrap();
        fw.check_portmap(&a).unwrap();
        if flavor == Flavor::Nft {
            assert_nft_hostport(SNAT4, SNAT6, &a_elems());
        }
    });
}

macro_rules! per_flavor {
    ($($f:ident),*) => {
        mod nft { use super::*; $( #[test] fn $f() { super::$f(Flavor::Nft) } )* }
        mod iptables { use super::*; $( #[test] fn $f() { super::$f(Flavor::IptHost) } )* }
        mod iptables_legacy { use super::*; $( #[test] fn $f() { super::$f(Flavor::IptLegacy) } )* }
    };
}

per_flavor!(add_check_del, repeated_add_and_options, host_port_takeover, concurrent_writers, gc_and_flush);

/// Assert table `inet cnirs_hostport` (the layout of earlier versions: a `p-` and an `s-` chain per
/// attachment behind verdict maps) holds exactly the attachments `specs` (each with addresses in
/// both families and host ports of its own).
fn assert_legacy_hostport(specs: &[&PortMapSpec]) {
    let rs = nft_ruleset();
    let t = legacy::HOSTPORT_TABLE;
    let mut chains: Vec<String> = ["hostports", "output", "postrouting", "prerouting"].iter().map(|c| c.to_string()).collect();
    let mut want: Vec<(&str, Elem)> = Vec::new();
    for s in specs {
        let (p, sn) = (legacy::hostport_dnat_chain(&s.key), legacy::hostport_snat_chain(&s.key));
        chains.push(p.clone());
        let to_p = json!({"goto": {"target": p}});
        for m in &s.mappings {
            let (proto, port) = (json!(m.protocol.as_str()), json!(m.host_port));
            match m.host_ip {
                None => {
                    want.push(("any4", (json!({"concat": [proto, port]}), to_p.clone())));
                    want.push(("any6", (json!({"concat": [proto, port]}), to_p.clone())));
                }
                Some(h) => {
                    let map = if h.is_ipv4() { "hostip4" } else { "hostip6" };
                    want.push((map, (json!({"concat": [h.to_string(), proto, port]}), to_p.clone())));
                }
            }
        }
        if s.snat {
            chains.push(sn.clone());
            let to_s = json!({"goto": {"target": sn}});
            want.push(("snat4", (json!(s.container_v4.unwrap().ip().to_string()), to_s.clone())));
            want.push(("snat6", (json!(s.container_v6.unwrap().ip().to_string()), to_s)));
        }
    }
    chains.sort();
    assert_eq!(nft_chains_sorted(&rs, t), chains, "legacy chains");
    for map in ["hostip4", "any4", "snat4", "hostip6", "any6", "snat6"] {
        let w: Vec<Elem> = want.iter().filter(|(m, _)| *m == map).map(|(_, e)| e.clone()).collect();
        assert_eq!(nft_elems_sorted(&rs, t, map), sorted_elems(w), "legacy {map}");
    }
}

/// Port mappings made by an earlier version (table `cnirs_hostport`, chains per attachment) are
/// checked, torn down by DEL and collected by GC, while new attachments go to `cnirs_hostport2`.
#[test]
fn nft_upgrade_from_the_chain_per_attachment_layout() {
    in_sandbox(|| {
        let old = spec("old", 5, &[(8080, 80, Protocol::Tcp, None), (8443, 443, Protocol::Tcp, Some("192.0.2.1"))]);
        let stale = spec("stale", 6, &[(7080, 80, Protocol::Tcp, None), (7053, 53, Protocol::Udp, Some("fd66::1"))]);
        let mut other = spec("x", 7, &[(6080, 80, Protocol::Tcp, None)]);
        other.key.network = "othernet".into();
        let cli = NftCli::new(std::sync::Arc::new(ProcessRunner::new()));
        for s in [&old, &stale, &other] {
            cli.apply(&legacy::plan_portmap_add(s)).unwrap();
        }
        assert_legacy_hostport(&[&old, &stale, &other]);
        assert!(!nft_has_table(&nft_ruleset(), HOSTPORT_TABLE));

        let (fw, runner) = make(Flavor::Nft);
        // CHECK: the new table is missing, the earlier layout holds the attachment
        assert_eq!(count(&runner, || fw.check_portmap(&old).unwrap()), 2, "CHECK: both tables read");
        fw.check_portmap(&stale).unwrap();
        let mut changed = old.clone();
        changed.mappings[0].container_port = 81;
        assert_eq!(fw.check_portmap(&changed).unwrap_err().code(), 105, "held by neither layout");

        // a new attachment goes to the new table only
        let new = spec("new", 8, &[(9080, 80, Protocol::Tcp, None)]);
        // (the new table made: read, read again under the lock, write)
        assert_eq!(count(&runner, || fw.add_portmap(&new).unwrap()), 3, "ADD");
        let mut new_elems = vec![("dnat4", dn("tcp", 9080, "10.66.0.8", 80)), ("dnat6", dn("tcp", 9080, "fd66::8", 80))];
        new_elems.extend(owned(8, &new.key));
        let assert_new = || assert_nft_hostport_in(&nft_ruleset(), SNAT4, SNAT6, &new_elems);
        assert_new();
        assert_legacy_hostport(&[&old, &stale, &other]);
        assert_eq!(count(&runner, || fw.check_portmap(&new).unwrap()), 1, "CHECK held by the new layout");
        assert_eq!(count(&runner, || fw.check_portmap(&old).unwrap()), 2, "CHECK held by the earlier layout");

        // DEL of the old attachment: nothing of it in the new table (a read), its chains and
        // elements removed from the earlier one (read + write)
        assert_eq!(count(&runner, || fw.del_portmap(&old.key).unwrap()), 3, "DEL");
        assert_legacy_hostport(&[&stale, &other]);
        assert_new();
        assert_eq!(fw.check_portmap(&old).unwrap_err().code(), 105);
        fw.check_portmap(&new).unwrap();

        // GC of the network: its legacy attachments not in the list go, another network's stay
        assert_eq!(count(&runner, || fw.gc_portmap(NET, std::slice::from_ref(&new.key)).unwrap()), 3, "GC");
        assert_legacy_hostport(&[&other]);
        assert_new();
        assert_eq!(fw.check_portmap(&stale).unwrap_err().code(), 105);
        fw.check_portmap(&other).unwrap();

        // the last one: the earlier layout's maps empty, no chain of an attachment left
        fw.del_portmap(&other.key).unwrap();
        assert_legacy_hostport(&[]);
        let rs = nft_ruleset();
        assert!(nft_chain_names(&rs, legacy::HOSTPORT_TABLE).iter().all(|c| !c.starts_with("p-") && !c.starts_with("s-")));
        assert_new();
        fw.del_portmap(&new.key).unwrap();
        assert_nft_hostport_in(&nft_ruleset(), SNAT4, SNAT6, &[]);
    });
}

/// The elements of `s` (mappings without host IP or with one of a family, snat) in the previous
/// release's layout: DNAT and owner elements as now, the hairpin sources as ranges in the
/// interval sets `hairpin4`/`hairpin6`.
fn previous_release_elements(s: &PortMapSpec) -> Vec<(&'static str, Elem)> {
    let (c4, c6) = (s.container_v4.unwrap(), s.container_v6.unwrap());
    let (a4, a6) = (c4.ip().to_string(), c6.ip().to_string());
    let mut v = Vec::new();
    for m in &s.mappings {
        let p = m.protocol.as_str();
        match m.host_ip {
            None => v.extend([("dnat4", dn(p, m.host_port, &a4, m.container_port)), ("dnat6", dn(p, m.host_port, &a6, m.container_port))]),
            Some(h) if h.is_ipv4() => v.push(("hostip4", hip(&h.to_string(), p, m.host_port, &a4, m.container_port))),
            Some(h) => v.push(("hostip6", hip(&h.to_string(), p, m.host_port, &a6, m.container_port))),
        }
    }
    v.extend([("owner4", own(&a4, &s.key)), ("owner6", own(&a6, &s.key))]);
    if s.masq_all {
        v.extend([("hairpin4", nft_pair(&a4, "0.0.0.0/0")), ("hairpin6", nft_pair(&a6, "::/0"))]);
    } else {
        v.extend([
            ("hairpin4", nft_pair(&a4, &format!("{}/{}", c4.network(), c4.prefix()))),
            ("hairpin4", nft_pair(&a4, "127.0.0.1")),
            ("hairpin6", nft_pair(&a6, &format!("{}/{}", c6.network(), c6.prefix()))),
        ]);
    }
    v
}

/// A table the previous release made (interval sets `hairpin4`/`hairpin6` and their rules),
/// then upgraded: CHECK passes for its attachments; ADDs keep the earlier release's hairpin rules
/// and sets and add the rules of their own prefix lengths after them (ascending, /0 of masqAll
/// first); DEL and GC delete an earlier attachment's hairpin sources from the interval sets.
fn upgrade_from_the_interval_set_layout(fw: Box<dyn cni_firewall::Firewall>) {
    let old = spec("old", 5, &[(8080, 80, Protocol::Tcp, None), (8443, 443, Protocol::Tcp, Some("192.0.2.1"))]);
    let stale = spec("stale", 6, &[(7080, 80, Protocol::Tcp, None)]);
    let mut old_all = spec("oldall", 7, &[(7081, 81, Protocol::Tcp, None)]);
    old_all.masq_all = true;
    sh_in("nft", &["-f", "-"], &previous_release_hostport(&[&old, &stale, &old_all]));
    let legacy = Pairs { legacy: true, lens: &[] };
    let mut want = previous_release_elements(&old);
    want.extend(previous_release_elements(&stale));
    want.extend(previous_release_elements(&old_all));
    assert_nft_hostport(legacy, legacy, &want);
    fw.check_portmap(&old).unwrap();
    fw.check_portmap(&stale).unwrap();
    fw.check_portmap(&old_all).unwrap();
    let mut changed = old_all.clone();
    changed.masq_all = false;
    assert_eq!(fw.check_portmap(&changed).unwrap_err().code(), 105, "its subnet is not a hairpin source of its own");

    let new = spec("new", 8, &[(9080, 80, Protocol::Tcp, None)]);
    fw.add_portmap(&new).unwrap();
    want.extend([("dnat4", dn("tcp", 9080, "10.66.0.8", 80)), ("dnat6", dn("tcp", 9080, "fd66::8", 80))]);
    want.extend(owned(8, &new.key));
    assert_nft_hostport(Pairs { legacy: true, lens: &[24, 32] }, Pairs { legacy: true, lens: &[64] }, &want);
    let mut all = spec("all", 9, &[(9081, 80, Protocol::Tcp, None)]);
    all.masq_all = true;
    fw.add_portmap(&all).unwrap();
    want.extend([("dnat4", dn("tcp", 9081, "10.66.0.9", 80)), ("dnat6", dn("tcp", 9081, "fd66::9", 80))]);
    want.extend([("owner4", own("10.66.0.9", &all.key)), ("owner6", own("fd66::9", &all.key))]);
    want.extend([("hairpin4_0", nft_pair("10.66.0.9", "0.0.0.0")), ("hairpin6_0", nft_pair("fd66::9", "::"))]);
    let (v4, v6) = (Pairs { legacy: true, lens: &[0, 24, 32] }, Pairs { legacy: true, lens: &[0, 64] });
    assert_nft_hostport(v4, v6, &want);
    for s in [&old, &stale, &old_all, &new, &all] {
        fw.check_portmap(s).unwrap_or_else(|e| panic!("{:?}: {e}", s.key));
    }

    // DEL of an earlier attachment: its hairpin sources leave the interval sets
    fw.del_portmap(&old.key).unwrap();
    let gone = previous_release_elements(&old);
    want.retain(|e| !gone.contains(e));
    assert_nft_hostport(v4, v6, &want);
    assert_eq!(fw.check_portmap(&old).unwrap_err().code(), 105);
    fw.check_portmap(&stale).unwrap();
    // GC: likewise; the earlier release's sets and rules stay
    fw.gc_portmap(NET, &[new.key.clone(), all.key.clone()]).unwrap();
    let mut gone = previous_release_elements(&stale);
    gone.extend(previous_release_elements(&old_all));
    want.retain(|e| !gone.contains(e));
    assert!(want.iter().all(|(set, _)| *set != "hairpin4" && *set != "hairpin6"));
    assert_nft_hostport(v4, v6, &want);
    assert_eq!(fw.check_portmap(&stale).unwrap_err().code(), 105);
    assert_eq!(fw.check_portmap(&old_all).unwrap_err().code(), 105);
    fw.check_portmap(&new).unwrap();
    fw.check_portmap(&all).unwrap();
}

#[test]
fn nft_upgrade_from_the_interval_set_layout() {
    in_sandbox(|| upgrade_from_the_interval_set_layout(nft_firewall(false)));
}

#[test]
fn nft_native_upgrade_from_the_interval_set_layout() {
    in_sandbox(|| upgrade_from_the_interval_set_layout(nft_firewall(true)));
}

/// Port mappings of containers in subnets of different prefix lengths (each a hairpin rule of its
/// own in postrouting, added by a refill of the chain) ADDed together on one table, each in a
/// thread of its own: every length's rule ends up in the chain, once, in order, and every
/// attachment passes CHECK. Some rounds on a missing table, some on one with the rules of the
/// default /24 and /32, /64 already.
fn concurrent_adds_of_new_prefix_lengths(native: bool) {
    let fw = move || nft_firewall(native);
    // v4 length, v6 length of each writer (/0: masqAll)
    const LENS: [(u8, u8); 6] = [(0, 0), (8, 48), (16, 56), (20, 96), (28, 120), (30, 126)];
    let spec_of = |i: usize| {
        let (l4, l6) = LENS[i];
        let mut s = spec(&format!("c{i}"), 0, &[(10000 + i as u16, 80, Protocol::Tcp, None)]);
        s.container_v4 = Some(format!("10.{}.0.1/{}", 100 + i, l4.max(8)).parse().unwrap());
        s.container_v6 = Some(format!("fd{i:02x}::1/{}", l6.max(48)).parse().unwrap());
        s.masq_all = l4 == 0;
        s
    };
    for round in 0..6 {
        in_sandbox(move || {
            let existing = round % 2 == 1;
            let first = spec("first", 5, &[(8080, 80, Protocol::Tcp, None)]);
            if existing {
                fw().add_portmap(&first).unwrap();
            }
            all_at_once(LENS.len(), fw, move |fw, i| fw.add_portmap(&spec_of(i)));
            // every writer's loopback pair is /32; masqAll's sources /0 only
            let mut l4: Vec<u8> = vec![0, 8, 16, 20, 28, 30, 32];
            let mut l6: Vec<u8> = vec![0, 48, 56, 96, 120, 126];
            let mut want = Vec::new();
            if existing {
                l4.push(24);
                l6.push(64);
                want.extend([("dnat4", dn("tcp", 8080, "10.66.0.5", 80)), ("dnat6", dn("tcp", 8080, "fd66::5", 80))]);
                want.extend(owned(5, &first.key));
            }
            l4.sort();
            l6.sort();
            let hairpin: Vec<(String, Elem)> = (0..LENS.len())
                .flat_map(|i| {
                    let s = spec_of(i);
                    let (c4, c6) = (s.container_v4.unwrap(), s.container_v6.unwrap());
                    let (a4, a6) = (c4.ip().to_string(), c6.ip().to_string());
                    if s.masq_all {
                        vec![("hairpin4_0".to_string(), nft_pair(&a4, "0.0.0.0")), ("hairpin6_0".to_string(), nft_pair(&a6, "::"))]
                    } else {
                        vec![
                            (format!("hairpin4_{}", c4.prefix()), nft_pair(&a4, &c4.network().to_string())),
                            ("hairpin4_32".to_string(), nft_pair(&a4, "127.0.0.1")),
                            (format!("hairpin6_{}", c6.prefix()), nft_pair(&a6, &c6.network().to_string())),
                        ]
                    }
                })
                .collect();
            for i in 0..LENS.len() {
                let s = spec_of(i);
                let (a4, a6) = (s.container_v4.unwrap().ip().to_string(), s.container_v6.unwrap().ip().to_string());
                let p = 10000 + i as u16;
                want.extend([("dnat4", dn("tcp", p, &a4, 80)), ("dnat6", dn("tcp", p, &a6, 80))]);
                want.extend([("owner4", own(&a4, &s.key)), ("owner6", own(&a6, &s.key))]);
            }
            want.extend(hairpin.iter().map(|(set, e)| (set.as_str(), e.clone())));
            assert_nft_hostport(lens(&l4), lens(&l6), &want);
            let fw = fw();
            for i in 0..LENS.len() {
                fw.check_portmap(&spec_of(i)).unwrap_or_else(|e| panic!("round {round}, c{i}: {e}"));
            }
        });
    }
}

#[test]
fn nft_concurrent_adds_of_new_prefix_lengths() {
    concurrent_adds_of_new_prefix_lengths(false);
}

#[test]
fn nft_native_concurrent_adds_of_new_prefix_lengths() {
    concurrent_adds_of_new_prefix_lengths(true);
}
