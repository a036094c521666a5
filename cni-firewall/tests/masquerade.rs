//! Masquerade on both backends (nftables, iptables as the host alternative, iptables-legacy),
//! both families, each test in its own throwaway network namespace. Requires root.

mod common;

use cni_firewall::names::{format_chain_name, masq_comment};
use cni_firewall::exec::ProcessRunner;
use cni_firewall::nft::plan::{legacy, MASQ_TABLE};
use cni_firewall::nft::{NftCli, NftExecutor};
use cni_firewall::{choose_backend, Backend, Family, MasqSpec};
use common::*;
use serde_json::json;

const NET: &str = "net1";

fn q(s: &str) -> String {
    s.replace('"', "\\\"")
}

/// The exact iptables-save lines of one container (reference layout).
fn expected_ipt(fam: Family, cid: &str, ip: &str, subnet: &str) -> Vec<String> {
    let chain = format_chain_name(NET, cid);
    let c = q(&masq_comment(NET, cid));
    let (host, mc) = match fam {
        Family::V4 => (format!("{ip}/32"), "224.0.0.0/4"),
        Family::V6 => (format!("{ip}/128"), "ff00::/8"),
    };
    vec![
        format!("-A POSTROUTING -s {host} -m comment --comment \"{c}\" -j {chain}"),
        format!("-A {chain} -d {subnet} -m comment --comment \"{c}\" -j ACCEPT"),
        format!("-A {chain} ! -d {mc} -m comment --comment \"{c}\" -j MASQUERADE"),
    ]
}

fn sorted(mut v: Vec<String>) -> Vec<String> {
    v.sort();
    v
}

/// The rules of the base chain `postrouting` of `inet cnirs_masquerade2`, as `nft -j` prints them:
/// multicast and the attachments' own subnets are exempt, the rest from their addresses masqueraded.
fn nft_base_rules() -> Vec<serde_json::Value> {
    let pl = |p: &str, f: &str| json!({"payload": {"protocol": p, "field": f}});
    vec![
        json!([{"match": {"op": "==", "left": pl("ip", "daddr"), "right": {"prefix": {"addr": "224.0.0.0", "len": 4}}}}, {"return": null}]),
        json!([{"match": {"op": "==", "left": {"concat": [pl("ip", "saddr"), pl("ip", "daddr")]}, "right": "@exempt4"}}, {"return": null}]),
        json!([{"match": {"op": "==", "left": pl("ip", "saddr"), "right": "@masq4"}}, {"masquerade": null}]),
        json!([{"match": {"op": "==", "left": pl("ip6", "daddr"), "right": {"prefix": {"addr": "ff00::", "len": 8}}}}, {"return": null}]),
        json!([{"match": {"op": "==", "left": {"concat": [pl("ip6", "saddr"), pl("ip6", "daddr")]}, "right": "@exempt6"}}, {"return": null}]),
        json!([{"match": {"op": "==", "left": pl("ip6", "saddr"), "right": "@masq6"}}, {"masquerade": null}]),
    ]
}

/// Assert table `inet cnirs_masquerade2` in `rs` holds exactly the given containers (cid, v4 ip,
/// v6 ip), all in /24 and /64 subnets of 10.88.0.0 and fd88:: on network NET: the base chain and
/// nothing else, each address owned by its container, each address exempt towards its subnet.
/// An absent table holds nothing.
fn assert_nft_masq(rs: &[serde_json::Value], ctrs: &[(&str, &str, &str)]) {
    if !nft_has_table(rs, MASQ_TABLE) {
        assert!(ctrs.is_empty(), "table {MASQ_TABLE} missing");
        return;
    }
    assert_eq!(nft_chains_sorted(rs, MASQ_TABLE), vec!["postrouting"], "no chain per attachment");
    assert_eq!(nft_base_chain(rs, MASQ_TABLE, "postrouting"), ("nat".into(), "postrouting".into(), 100, "accept".into()));
    assert_eq!(nft_rules(rs, MASQ_TABLE, "postrouting"), nft_base_rules());
    let (mut m4, mut m6, mut x4, mut x6) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for (cid, ip4, ip6) in ctrs {
        let owner = nft_owner(&key(NET, cid));
        m4.push((json!(ip4), owner.clone()));
        m6.push((json!(ip6), owner));
        x4.push(nft_pair(ip4, "10.88.0.0/24"));
        x6.push(nft_pair(ip6, "fd88::/64"));
    }
    for (set, want) in [("masq4", m4), ("masq6", m6), ("exempt4", x4), ("exempt6", x6)] {
        assert_eq!(nft_elems_sorted(rs, MASQ_TABLE, set), sorted_elems(want), "{set}");
    }
}

/// Assert the full state of table nat (iptables) / cnirs_masquerade2 (nft) holds exactly the given
/// containers (cid, v4 ip, v6 ip), all in /24 and /64 subnets of 10.88.0.0 and fd88::.
fn assert_state(flavor: Flavor, ctrs: &[(&str, &str, &str)]) {
    match flavor {
        Flavor::Nft => {
            let rs = nft_ruleset();
            assert!(!nft_has_table(&rs, legacy::MASQ_TABLE), "the earlier layout's table made");
            assert_nft_masq(&rs, ctrs);
        }
        _ => {
            for fam in Family::BOTH {
                let mut want = Vec::new();
                let mut chains = Vec::new();
                for (cid, ip4, ip6) in ctrs {
                    let (ip, sub) = match fam {
                        Family::V4 => (*ip4, "10.88.0.0/24"),
                        Family::V6 => (*ip6, "fd88::/64"),
                    };
                    want.extend(expected_ipt(fam, cid, ip, sub));
                    chains.push(format_chain_name(NET, cid));
                }
                assert_eq!(sorted(ipt_rules(flavor, fam, "nat")), sorted(want), "{fam:?} nat rules");
                assert_eq!(sorted(ipt_user_chains(flavor, fam, "nat")), sorted(chains), "{fam:?} nat chains");
            }
        }
    }
}

fn add_check_del(flavor: Flavor) {
    in_sandbox(move || {
        let (fw, runner) = make(flavor);
        assert_state(flavor, &[]);
        let spec = masq(NET, "ctr1", &["10.88.0.5/24", "fd88::5/64"]);
        let n = count(&runner, || fw.add_masquerade(&spec).unwrap());
        // one transaction per family (nftables: one for both), no reads
        assert_eq!(n, if flavor == Flavor::Nft { 1 } else { 2 }, "processes for ADD");
        assert_state(flavor, &[("ctr1", "10.88.0.5", "fd88::5")]);
        let n = count(&runner, || fw.check_masquerade(&spec).unwrap());
        assert_eq!(n, if flavor == Flavor::Nft { 1 } else { 2 }, "processes for CHECK");

        let n = count(&runner, || fw.del_masquerade(&spec.key, &spec.addrs).unwrap());
        // iptables: one blind restore per family; nftables: read + transaction on the table, and
        // a read of the earlier layout's table (absent here)
        assert_eq!(n, if flavor == Flavor::Nft { 3 } else { 2 }, "processes for DEL");
        assert_state(flavor, &[]);
        let n = count(&runner, || {
            let e = fw.check_masquerade(&spec).unwrap_err();
            assert_eq!(e.code(), 105, "{e}");
        });
        // iptables: the first family's read fails it; nftables: the table, then the earlier layout's
        assert_eq!(n, if flavor == Flavor::Nft { 2 } else { 1 }, "processes for a failing CHECK");
        // DEL again: everything already gone (nftables: the two tables read, nothing written)
        let n = count(&runner, || fw.del_masquerade(&spec.key, &spec.addrs).unwrap());
        if flavor == Flavor::Nft {
            assert_eq!(n, 2, "processes for a DEL with nothing to do");
        }
        fw.del_masquerade(&spec.key, &[]).unwrap();
        assert_state(flavor, &[]);
    });
}

fn single_family(flavor: Flavor) {
    in_sandbox(move || {
        let (fw, runner) = make(flavor);
        let v4 = masq(NET, "v4only", &["10.88.0.7/24"]);
        let v6 = masq(NET, "v6only", &["fd88::7/64"]);
        assert_eq!(count(&runner, || fw.add_masquerade(&v4).unwrap()), 1);
        assert_eq!(count(&runner, || fw.add_masquerade(&v6).unwrap()), 1);
        fw.check_masquerade(&v4).unwrap();
        fw.check_masquerade(&v6).unwrap();
        if flavor != Flavor::Nft {
            assert!(ipt_rules(flavor, Family::V6, "nat").iter().all(|l| !l.contains("v4only") && !l.contains("10.88")));
            assert!(ipt_rules(flavor, Family::V4, "nat").iter().all(|l| !l.contains("fd88")));
        }
        fw.del_masquerade(&v4.key, &[]).unwrap();
        fw.check_masquerade(&v6).unwrap();
        fw.del_masquerade(&v6.key, &v6.addrs).unwrap();
        assert_state(flavor, &[]);
    });
}

fn repeated_add(flavor: Flavor) {
    in_sandbox(move || {
        let (fw, _) = make(flavor);
        let spec = masq(NET, "ctr1", &["10.88.0.5/24", "fd88::5/64"]);
        for _ in 0..3 {
            fw.add_masquerade(&spec).unwrap();
        }
        assert_state(flavor, &[("ctr1", "10.88.0.5", "fd88::5")]);
        fw.check_masquerade(&spec).unwrap();
        // DEL by key only (no prevResult)
        fw.del_masquerade(&spec.key, &[]).unwrap();
        assert_state(flavor, &[]);
    });
}

fn concurrent_writers(flavor: Flavor) {
    in_sandbox(move || {
        let ns = NsHandle::current();
        let spec = |i: usize| masq(NET, &format!("c{i}"), &[&format!("10.88.0.{}/24", 10 + i), &format!("fd88::{:x}/64", 10 + i)]);
        // 8 containers added in parallel, each by its own plugin process stand-in
        let hs: Vec<_> = (0..8).map(|i| ns.spawn(move || make(flavor).0.add_masquerade(&spec(i)))).collect();
        for h in hs {
            h.join().unwrap().unwrap();
        }
        let (fw, _) = make(flavor);
        for i in 0..8 {
            fw.check_masquerade(&spec(i)).unwrap();
        }
        // delete the even ones while adding 8 more
        let mut hs = Vec::new();
        for i in 0..16 {
            hs.push(ns.spawn(move || {
                let (fw, _) = make(flavor);
                if i < 8 {
                    if i % 2 == 0 {
                        fw.del_masquerade(&spec(i).key, &spec(i).addrs)
                    } else {
                        Ok(())
                    }
                } else {
                    fw.add_masquerade(&spec(i))
                }
            }));
        }
        for h in hs {
            h.join().unwrap().unwrap();
        }
        let mut alive = Vec::new();
        for i in 0..16 {
            let ok = fw.check_masquerade(&spec(i)).is_ok();
            assert_eq!(ok, i >= 8 || i % 2 == 1, "container c{i}");
            if ok {
                alive.push((format!("c{i}"), format!("10.88.0.{}", 10 + i), format!("fd88::{:x}", 10 + i)));
            }
        }
        let a: Vec<(&str, &str, &str)> = alive.iter().map(|(a, b, c)| (a.as_str(), b.as_str(), c.as_str())).collect();
        assert_state(flavor, &a);
    });
}

fn teardown_after_flush(flavor: Flavor) {
    in_sandbox(move || {
        let (fw, _) = make(flavor);
        let a = masq(NET, "a", &["10.88.0.5/24", "fd88::5/64"]);
        let b = masq(NET, "b", &["10.88.0.6/24", "fd88::6/64"]);
        let c = masq(NET, "c", &["10.88.0.7/24", "fd88::7/64"]);
        for s in [&a, &b, &c] {
            fw.add_masquerade(s).unwrap();
        }
        match flavor {
            Flavor::Nft => {
                // an admin empties the v4 owner map (e.g. partial cleanup), then everything
                sh("nft", &["flush", "map", "inet", MASQ_TABLE, "masq4"]);
                fw.del_masquerade(&a.key, &a.addrs).unwrap();
                // a's v6 elements go; its v4 exemption, whose owner element is gone, stays
                let rs = nft_ruleset();
                assert!(nft_elems(&rs, MASQ_TABLE, "masq4").is_empty());
                let owners = |o: &str| nft_elems_sorted(&rs, MASQ_TABLE, o);
                assert_eq!(owners("masq6"), sorted_elems(vec![(json!("fd88::6"), nft_owner(&b.key)), (json!("fd88::7"), nft_owner(&c.key))]));
                assert_eq!(owners("exempt6"), sorted_elems(vec![nft_pair("fd88::6", "fd88::/64"), nft_pair("fd88::7", "fd88::/64")]));
                let orphans = sorted_elems(["10.88.0.5", "10.88.0.6", "10.88.0.7"].iter().map(|a| nft_pair(a, "10.88.0.0/24")).collect());
                assert_eq!(owners("exempt4"), orphans);
                // exemptions nobody owns are collected by any GC (here of another network's)
                fw.gc_masquerade("othernet", &[]).unwrap();
                let rs = nft_ruleset();
                assert!(nft_elems(&rs, MASQ_TABLE, "exempt4").is_empty());
                assert_eq!(nft_elems(&rs, MASQ_TABLE, "masq6").len(), 2, "b's and c's v6 elements stay");
                sh("nft", &["flush", "ruleset"]);
                fw.del_masquerade(&b.key, &b.addrs).unwrap();
                fw.del_masquerade(&c.key, &[]).unwrap();
            }
            _ => {
                // rules flushed, chains left (iptables -t nat -F)
                for fam in Family::BOTH {
                    sh(&flavor.cmd_bin(fam), &["-w", "-t", "nat", "-F"]);
                }
                fw.del_masquerade(&a.key, &a.addrs).unwrap();
                fw.del_masquerade(&b.key, &[]).unwrap();
                for fam in Family::BOTH {
                    let chains = ipt_user_chains(flavor, fam, "nat");
                    assert_eq!(chains, vec![format_chain_name(NET, "c")], "{fam:?}");
                    // and now chains deleted too
                    sh(&flavor.cmd_bin(fam), &["-w", "-t", "nat", "-X"]);
                }
                fw.del_masquerade(&c.key, &c.addrs).unwrap();
            }
        }
        assert_state(flavor, &[]);
        // and the layer still works afterwards
        fw.add_masquerade(&a).unwrap();
        fw.check_masquerade(&a).unwrap();
    });
}

fn gc(flavor: Flavor) {
    in_sandbox(move || {
        let (fw, runner) = make(flavor);
        let a = masq(NET, "a", &["10.88.0.5/24", "fd88::5/64"]);
        let b = masq(NET, "b", &["10.88.0.6/24", "fd88::6/64"]);
        let c = masq(NET, "c", &["10.88.0.7/24", "fd88::7/64"]);
        let x = masq("net2", "x", &["10.89.0.5/24", "fd89::5/64"]);
        for s in [&a, &b, &c, &x] {
            fw.add_masquerade(s).unwrap();
        }
        let n = count(&runner, || fw.gc_masquerade(NET, std::slice::from_ref(&a.key)).unwrap());
        // iptables: one read and one write per family; nftables: read + write, and a read of the
        // earlier layout's table (absent)
        assert_eq!(n, if flavor == Flavor::Nft { 3 } else { 4 }, "processes for GC");
        if flavor == Flavor::Nft {
            // a's and the other network's elements stay, b's and c's are gone
            let rs = nft_ruleset();
            let want4 = vec![(json!("10.88.0.5"), nft_owner(&a.key)), (json!("10.89.0.5"), nft_owner(&x.key))];
            assert_eq!(nft_elems_sorted(&rs, MASQ_TABLE, "masq4"), sorted_elems(want4));
            let want6 = vec![(json!("fd88::5"), nft_owner(&a.key)), (json!("fd89::5"), nft_owner(&x.key))];
            assert_eq!(nft_elems_sorted(&rs, MASQ_TABLE, "masq6"), sorted_elems(want6));
            let ex4 = vec![nft_pair("10.88.0.5", "10.88.0.0/24"), nft_pair("10.89.0.5", "10.89.0.0/24")];
            assert_eq!(nft_elems_sorted(&rs, MASQ_TABLE, "exempt4"), sorted_elems(ex4));
            let ex6 = vec![nft_pair("fd88::5", "fd88::/64"), nft_pair("fd89::5", "fd89::/64")];
            assert_eq!(nft_elems_sorted(&rs, MASQ_TABLE, "exempt6"), sorted_elems(ex6));
        }
        fw.check_masquerade(&a).unwrap();
        fw.check_masquerade(&x).unwrap();
        assert_eq!(fw.check_masquerade(&b).unwrap_err().code(), 105);
        assert_eq!(fw.check_masquerade(&c).unwrap_err().code(), 105);
        // nothing left to collect: reads only (nftables: both layouts' tables)
        let n = count(&runner, || fw.gc_masquerade(NET, std::slice::from_ref(&a.key)).unwrap());
        assert_eq!(n, 2);
        fw.gc_masquerade("net2", &[]).unwrap();
        fw.check_masquerade(&a).unwrap();
        assert_eq!(fw.check_masquerade(&x).unwrap_err().code(), 105);
        fw.gc_masquerade(NET, &[]).unwrap();
        assert_state(flavor, &[]);
    });
}

fn address_reuse(flavor: Flavor) {
    in_sandbox(move || {
        let (fw, _) = make(flavor);
        // container A's DEL never ran; its address went to B
        let a = masq(NET, "a", &["10.88.0.5/24", "fd88::5/64"]);
        let b = masq(NET, "b", &["10.88.0.5/24", "fd88::5/64"]);
        fw.add_masquerade(&a).unwrap();
        fw.add_masquerade(&b).unwrap();
        fw.check_masquerade(&b).unwrap();
        // the late DEL of A (with or without addresses) must leave B intact
        fw.del_masquerade(&a.key, &a.addrs).unwrap();
        fw.del_masquerade(&a.key, &[]).unwrap();
        fw.check_masquerade(&b).unwrap();
        assert_state(flavor, &[("b", "10.88.0.5", "fd88::5")]);
    });
}

fn second_ifname(flavor: Flavor) {
    in_sandbox(move || {
        let (fw, _) = make(flavor);
        // same container, two interfaces on the same network
        let e0 = masq(NET, "ctr", &["10.88.0.5/24"]);
        let mut e1 = masq(NET, "ctr", &["10.88.0.6/24"]);
        e1.key.ifname = "eth1".into();
        fw.add_masquerade(&e0).unwrap();
        fw.add_masquerade(&e1).unwrap();
        fw.check_masquerade(&e0).unwrap();
        fw.check_masquerade(&e1).unwrap();
        if flavor == Flavor::Nft {
            // the interfaces are distinct owners
            assert_ne!(nft_owner(&e0.key), nft_owner(&e1.key));
            let want = vec![(json!("10.88.0.5"), nft_owner(&e0.key)), (json!("10.88.0.6"), nft_owner(&e1.key))];
            assert_eq!(nft_elems_sorted(&nft_ruleset(), MASQ_TABLE, "masq4"), sorted_elems(want));
        }
        fw.del_masquerade(&e0.key, &e0.addrs).unwrap();
        fw.check_masquerade(&e1).unwrap();
        if flavor == Flavor::Nft {
            let rs = nft_ruleset();
            assert_eq!(nft_elems(&rs, MASQ_TABLE, "masq4"), vec![(json!("10.88.0.6"), nft_owner(&e1.key))]);
            assert_eq!(nft_elems(&rs, MASQ_TABLE, "exempt4"), vec![nft_pair("10.88.0.6", "10.88.0.0/24")]);
        }
        fw.del_masquerade(&e1.key, &e1.addrs).unwrap();
        assert_eq!(fw.check_masquerade(&e1).unwrap_err().code(), 105);
        match flavor {
            Flavor::Nft => assert_state(flavor, &[]),
            _ => assert!(ipt_rules(flavor, Family::V4, "nat").is_empty()),
        }
    });
}

fn status_and_validation(flavor: Flavor) {
    in_sandbox(move || {
        let (fw, runner) = make(flavor);
        fw.status().unwrap();
        let before = runner.spawned();
        let bad = masq("bad\"net", "c", &["10.88.0.5/24"]);
        assert_eq!(fw.add_masquerade(&bad).unwrap_err().code(), 7);
        let bad = masq(NET, "c;rm -rf", &["10.88.0.5/24"]);
        assert_eq!(fw.add_masquerade(&bad).unwrap_err().code(), 7);
        assert_eq!(fw.del_masquerade(&bad.key, &[]).unwrap_err().code(), 7);
        assert_eq!(runner.spawned(), before, "nothing spawned for invalid input");
    });
}

macro_rules! per_flavor {
    ($($f:ident),*) => {
        mod nft { use super::*; $( #[test] fn $f() { super::$f(Flavor::Nft) } )* }
        mod iptables { use super::*; $( #[test] fn $f() { super::$f(Flavor::IptHost) } )* }
        mod iptables_legacy { use super::*; $( #[test] fn $f() { super::$f(Flavor::IptLegacy) } )* }
    };
}

per_flavor!(
    add_check_del,
    single_family,
    repeated_add,
    concurrent_writers,
    teardown_after_flush,
    gc,
    address_reuse,
    second_ifname,
    status_and_validation
);

/// nftables executor that lets another writer act between a read and the following write.
struct Interleave {
    inner: cni_firewall::nft::NftCli,
    between: std::sync::Mutex<Option<Box<dyn FnOnce() + Send>>>,
}

impl cni_firewall::nft::NftExecutor for Interleave {
    fn apply(&self, ops: &[cni_firewall::nft::ops::Op]) -> Result<(), cni_firewall::CniError> {
        self.inner.apply(ops)
    }
    fn list_table(
        &self,
        t: &cni_firewall::nft::ops::TableRef,
    ) -> Result<Option<cni_firewall::nft::state::TableState>, cni_firewall::CniError> {
        let st = self.inner.list_table(t);
        if let Some(f) = self.between.lock().unwrap().take() {
            f();
        }
        st
    }
    fn probe(&self) -> Result<(), cni_firewall::CniError> {
        self.inner.probe()
    }
    fn present(&self) -> bool {
        self.inner.present()
    }
}

#[test]
fn nft_del_is_compare_and_delete() {
    in_sandbox(|| {
        let a = masq(NET, "a", &["10.88.0.5/24", "fd88::5/64"]);
        let b = masq(NET, "b", &["10.88.0.5/24", "fd88::5/64"]);
        let (fw, _) = make(Flavor::Nft);
        fw.add_masquerade(&a).unwrap();
        // A's late DEL reads the table (10.88.0.5 -> A); before it writes, B is added with the
        // reused address. A's DEL must not take B's elements with it.
        let b2 = b.clone();
        let runner = std::sync::Arc::new(cni_firewall::exec::ProcessRunner::new());
        let exec = Interleave {
            inner: cni_firewall::nft::NftCli::new(runner.clone()),
            between: std::sync::Mutex::new(Some(Box::new(move || make(Flavor::Nft).0.add_masquerade(&b2).unwrap()))),
        };
        let late = cni_firewall::nft::NftFirewall::with_executor(std::sync::Arc::new(exec));
        use cni_firewall::Firewall;
        late.del_masquerade(&a.key, &a.addrs).unwrap();
        // the write aborted (EEXIST on the asserted element: 10.88.0.5 is B's now), the re-read
        // finds nothing of A's; then the earlier layout's table is read (absent)
        assert_eq!(runner.spawned(), 4, "read, aborted write, read, legacy read");
        fw.check_masquerade(&b).unwrap();
        assert_state(Flavor::Nft, &[("b", "10.88.0.5", "fd88::5")]);
    });
}

/// Assert table `inet cnirs_masquerade` (the layout of earlier versions: a chain per attachment
/// behind verdict maps) holds exactly the attachments `specs`.
fn assert_legacy_masq(specs: &[&MasqSpec]) {
    let rs = nft_ruleset();
    let t = legacy::MASQ_TABLE;
    let mut chains: Vec<String> = specs.iter().map(|s| legacy::masq_chain(&s.key)).collect();
    chains.push("postrouting".into());
    chains.sort();
    assert_eq!(nft_chains_sorted(&rs, t), chains, "legacy chains");
    for (map, v4) in [("masq4", true), ("masq6", false)] {
        let want: Vec<_> = specs
            .iter()
            .flat_map(|s| {
                let target = json!({"goto": {"target": legacy::masq_chain(&s.key)}});
                s.addrs.iter().filter(move |a| a.is_ipv4() == v4).map(move |a| (json!(a.ip().to_string()), target.clone()))
            })
            .collect();
        assert_eq!(nft_elems_sorted(&rs, t, map), sorted_elems(want), "legacy {map}");
    }
}

/// State made by an earlier version (table `cnirs_masquerade`, a chain per attachment) is checked,
/// torn down by DEL and collected by GC, while new attachments go to `cnirs_masquerade2`.
#[test]
fn nft_upgrade_from_the_chain_per_attachment_layout() {
    in_sandbox(|| {
        let old = masq(NET, "old", &["10.88.0.5/24", "fd88::5/64"]);
        let stale = masq(NET, "stale", &["10.88.0.6/24", "fd88::6/64"]);
        let other = masq("net2", "x", &["10.89.0.5/24", "fd89::5/64"]);
        let cli = NftCli::new(std::sync::Arc::new(ProcessRunner::new()));
        for s in [&old, &stale, &other] {
            cli.apply(&legacy::plan_masq_add(s)).unwrap();
        }
        assert_legacy_masq(&[&old, &stale, &other]);
        assert!(!nft_has_table(&nft_ruleset(), MASQ_TABLE));

        let (fw, runner) = make(Flavor::Nft);
        // CHECK: the new table is missing, the earlier layout holds the attachment
        assert_eq!(count(&runner, || fw.check_masquerade(&old).unwrap()), 2, "CHECK: both tables read");
        fw.check_masquerade(&other).unwrap();
        let moved = masq(NET, "old", &["10.88.0.9/24"]);
        assert_eq!(fw.check_masquerade(&moved).unwrap_err().code(), 105, "held by neither layout");

        // a new attachment goes to the new table only
        let new = masq(NET, "new", &["10.88.0.7/24", "fd88::7/64"]);
        assert_eq!(count(&runner, || fw.add_masquerade(&new).unwrap()), 1, "ADD");
        assert_nft_masq(&nft_ruleset(), &[("new", "10.88.0.7", "fd88::7")]);
        assert_legacy_masq(&[&old, &stale, &other]);
        assert_eq!(count(&runner, || fw.check_masquerade(&new).unwrap()), 1, "CHECK held by the new layout");
        assert_eq!(count(&runner, || fw.check_masquerade(&old).unwrap()), 2, "CHECK held by the earlier layout");

        // DEL of the old attachment: nothing of it in the new table (a read), its chain and
        // elements removed from the earlier one (read + write)
        assert_eq!(count(&runner, || fw.del_masquerade(&old.key, &[]).unwrap()), 3, "DEL");
        assert_legacy_masq(&[&stale, &other]);
        assert_nft_masq(&nft_ruleset(), &[("new", "10.88.0.7", "fd88::7")]);
        assert_eq!(fw.check_masquerade(&old).unwrap_err().code(), 105);
        fw.check_masquerade(&new).unwrap();

        // GC of the network: its legacy attachments not in the list go, another network's stay
        assert_eq!(count(&runner, || fw.gc_masquerade(NET, std::slice::from_ref(&new.key)).unwrap()), 3, "GC");
        assert_legacy_masq(&[&other]);
        assert_nft_masq(&nft_ruleset(), &[("new", "10.88.0.7", "fd88::7")]);
        assert_eq!(fw.check_masquerade(&stale).unwrap_err().code(), 105);
        fw.check_masquerade(&other).unwrap();
        fw.check_masquerade(&new).unwrap();

        // the last one: the earlier layout's maps empty, no chain of an attachment left
        fw.del_masquerade(&other.key, &other.addrs).unwrap();
        assert_legacy_masq(&[]);
        let rs = nft_ruleset();
        assert!(nft_chain_names(&rs, legacy::MASQ_TABLE).iter().all(|c| !c.starts_with("m-")));
        assert_nft_masq(&rs, &[("new", "10.88.0.7", "fd88::7")]);
        fw.del_masquerade(&new.key, &[]).unwrap();
        assert_nft_masq(&nft_ruleset(), &[]);
    });
}

#[test]
fn choose_backend_follows_host_rules() {
    in_sandbox(|| {
        assert_eq!(choose_backend(Some("iptables")).unwrap(), Backend::Iptables);
        assert_eq!(choose_backend(Some("nftables")).unwrap(), Backend::Nftables);
        assert_eq!(choose_backend(Some("pf")).unwrap_err().code(), 7);
        // empty sandbox: no iptables rules in use -> nftables
        assert_eq!(choose_backend(None).unwrap(), Backend::Nftables);
        // once the host uses iptables, stay with it
        let (fw, _) = make(Flavor::IptHost);
        fw.add_masquerade(&masq(NET, "c", &["10.88.0.5/24"])).unwrap();
        assert_eq!(choose_backend(None).unwrap(), Backend::Iptables);
    });
    in_sandbox(|| {
        // iptables-legacy rules are seen too (in this thread's namespace, not the process's)
        let (fw, _) = make(Flavor::IptLegacy);
        assert_eq!(choose_backend(None).unwrap(), Backend::Nftables);
        fw.add_masquerade(&masq(NET, "c", &["10.88.0.5/24"])).unwrap();
        assert_eq!(choose_backend(None).unwrap(), Backend::Iptables);
        // our own nftables state makes the choice sticky
        make(Flavor::Nft).0.add_masquerade(&masq(NET, "d", &["10.88.0.6/24"])).unwrap();
        assert_eq!(choose_backend(None).unwrap(), Backend::Nftables);
    });
}
