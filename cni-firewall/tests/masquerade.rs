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

/// Assert table `inet cnirs_masquerade2` in `rs` is exactly the base chain `postrouting` looking
/// up the exemptions `v4` and `v6` (the earlier release's interval set, the prefix lengths with a
/// rule), the sets those rules name plus `masq4` and `masq6`, and in them exactly the elements
/// `want` (set, element; the sets not named are empty).
fn assert_nft_masq_table(rs: &[serde_json::Value], v4: Pairs, v6: Pairs, want: &[(String, (serde_json::Value, serde_json::Value))]) {
    assert_eq!(nft_chains_sorted(rs, MASQ_TABLE), vec!["postrouting"], "no chain per attachment");
    assert_eq!(nft_base_chain(rs, MASQ_TABLE, "postrouting"), ("nat".into(), "postrouting".into(), 100, "accept".into()));
    assert_eq!(nft_rules(rs, MASQ_TABLE, "postrouting"), nft_masq_rules(v4, v6), "rules of postrouting");
    let mut sets: Vec<String> = vec!["masq4".into(), "masq6".into()];
    for (sfx, p) in [("4", v4), ("6", v6)] {
        if p.legacy {
            sets.push(format!("exempt{sfx}"));
        }
        sets.extend(p.lens.iter().map(|n| format!("exempt{sfx}_{n}")));
    }
    sets.sort();
    assert_eq!(nft_set_names(rs, MASQ_TABLE), sets, "sets of {MASQ_TABLE}");
    for (set, _) in want {
        assert!(sets.contains(set), "{set} is not a set of the layout");
    }
    for set in &sets {
        let w: Vec<_> = want.iter().filter(|(s, _)| s == set).map(|(_, e)| e.clone()).collect();
        assert_eq!(nft_elems_sorted(rs, MASQ_TABLE, set), sorted_elems(w), "{set}");
    }
}

/// The elements of containers (cid, v4 ip, v6 ip) of network NET in the /24 and /64 subnets of
/// 10.88.0.0 and fd88::: each address owned by its container, exempt towards its subnet.
fn masq_elements(ctrs: &[(&str, &str, &str)]) -> Vec<(String, (serde_json::Value, serde_json::Value))> {
    let mut v = Vec::new();
    for (cid, ip4, ip6) in ctrs {
        let owner = nft_owner(&key(NET, cid));
        v.push(("masq4".to_string(), (json!(ip4), owner.clone())));
        v.push(("masq6".to_string(), (json!(ip6), owner)));
        v.push(("exempt4_24".to_string(), nft_pair(ip4, "10.88.0.0")));
        v.push(("exempt6_64".to_string(), nft_pair(ip6, "fd88::")));
    }
    v
}

/// Assert table `inet cnirs_masquerade2` in `rs` holds exactly the given containers (cid, v4 ip,
/// v6 ip), all in /24 and /64 subnets of 10.88.0.0 and fd88:: on network NET: the base chain with
/// the exemption rules of /24 and /64 (made by the first ADDs, never removed) and nothing else,
/// each address owned by its container, each address exempt towards its subnet; no interval set.
/// An absent table holds nothing.
fn assert_nft_masq(rs: &[serde_json::Value], ctrs: &[(&str, &str, &str)]) {
    if !nft_has_table(rs, MASQ_TABLE) {
        assert!(ctrs.is_empty(), "table {MASQ_TABLE} missing");
        return;
    }
    assert_nft_masq_table(rs, lens(&[24]), lens(&[64]), &masq_elements(ctrs));
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
        // iptables: one transaction per family, no reads; nftables: the table read (missing), read
        // again under the namespace's lock (still missing), made in one transaction for both
        // families (the base chain depends on the prefix lengths the table already has)
        assert_eq!(n, if flavor == Flavor::Nft { 3 } else { 2 }, "processes for ADD");
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
        // nftables: the first ADD makes the table (read, read under the lock, write); the second
        // adds a rule for /64 (read, read again under the lock, write)
        assert_eq!(count(&runner, || fw.add_masquerade(&v4).unwrap()), if flavor == Flavor::Nft { 3 } else { 1 });
        if flavor == Flavor::Nft {
            assert_nft_masq_table(
                &nft_ruleset(),
                lens(&[24]),
                lens(&[]),
                &[("masq4".into(), (json!("10.88.0.7"), nft_owner(&v4.key))), ("exempt4_24".into(), nft_pair("10.88.0.7", "10.88.0.0"))],
            );
        }
        assert_eq!(count(&runner, || fw.add_masquerade(&v6).unwrap()), if flavor == Flavor::Nft { 3 } else { 1 });
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
                assert_eq!(owners("exempt6_64"), sorted_elems(vec![nft_pair("fd88::6", "fd88::"), nft_pair("fd88::7", "fd88::")]));
                let orphans = sorted_elems(["10.88.0.5", "10.88.0.6", "10.88.0.7"].iter().map(|a| nft_pair(a, "10.88.0.0")).collect());
                assert_eq!(owners("exempt4_24"), orphans);
                // exemptions nobody owns are collected by any GC (here of another network's); the
                // sets and rules of the prefix lengths stay
                fw.gc_masquerade("othernet", &[]).unwrap();
                let rs = nft_ruleset();
                let mut want = masq_elements(&[("b", "10.88.0.6", "fd88::6"), ("c", "10.88.0.7", "fd88::7")]);
                want.retain(|(s, _)| s != "masq4" && s != "exempt4_24");
                assert_nft_masq_table(&rs, lens(&[24]), lens(&[64]), &want);
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
            let ex4 = vec![nft_pair("10.88.0.5", "10.88.0.0"), nft_pair("10.89.0.5", "10.89.0.0")];
            assert_eq!(nft_elems_sorted(&rs, MASQ_TABLE, "exempt4_24"), sorted_elems(ex4));
            let ex6 = vec![nft_pair("fd88::5", "fd88::"), nft_pair("fd89::5", "fd89::")];
            assert_eq!(nft_elems_sorted(&rs, MASQ_TABLE, "exempt6_64"), sorted_elems(ex6));
            assert_eq!(nft_set_names(&rs, MASQ_TABLE), vec!["exempt4_24", "exempt6_64", "masq4", "masq6"]);
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
            assert_eq!(nft_elems(&rs, MASQ_TABLE, "exempt4_24"), vec![nft_pair("10.88.0.6", "10.88.0.0")]);
        }
        fw.del_masquerade(&e1.key, &e1.addrs).unwrap();
        assert_eq!(fw.check_masquerade(&e1).unwrap_err().code(), 105);
        match flavor {
            // IPv4 /24 only: no exemption set nor rule for IPv6
            Flavor::Nft => assert_nft_masq_table(&nft_ruleset(), lens(&[24]), lens(&[]), &[]),
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
        // (the new table made: read, read again under the lock, write)
        assert_eq!(count(&runner, || fw.add_masquerade(&new).unwrap()), 3, "ADD");
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

// ---------------------------------------------------------------------------------------------
// Upgrade from the previous release's layout of `cnirs_masquerade2` (interval sets), concurrent
// ADDs of new prefix lengths
// ---------------------------------------------------------------------------------------------

/// The elements of `specs` in the previous release's layout: owner elements and exemptions
/// (`address . subnet` ranges) in the interval sets.
fn previous_release_elements(specs: &[&MasqSpec]) -> Vec<(String, (serde_json::Value, serde_json::Value))> {
    let mut v = Vec::new();
    for spec in specs {
        for a in &spec.addrs {
            let sfx = if a.is_ipv4() { "4" } else { "6" };
            v.push((format!("masq{sfx}"), (json!(a.ip().to_string()), nft_owner(&spec.key))));
        }
        for (sfx, a, range) in previous_release_exemptions(spec) {
            v.push((format!("exempt{sfx}"), nft_pair(&a, &range)));
        }
    }
    v
}

/// A table the previous release made (interval sets `exempt4`/`exempt6` and their rules), then
/// upgraded: CHECK passes for its attachments; an ADD keeps the earlier release's rules (right
/// after the multicast returns) and set, and adds its own prefix lengths' sets and rules after
/// them (ascending); DEL and GC delete an earlier attachment's exemptions from the interval sets;
/// nothing new goes to them.
fn upgrade_from_the_interval_set_layout(fw: Box<dyn cni_firewall::Firewall>) {
    let old = masq(NET, "old", &["10.88.0.5/24", "fd88::5/64"]);
    let stale = masq(NET, "stale", &["10.88.0.6/24", "fd88::6/64"]);
    // nested subnets (that release wrote the outer one only) and a host subnet (an address)
    let nested = masq(NET, "nested", &["10.89.0.5/24", "10.89.1.5/16", "fd89::5/128"]);
    sh_in("nft", &["-f", "-"], &previous_release_masq(&[&old, &stale, &nested]));
    let legacy = Pairs { legacy: true, lens: &[] };
    let made_then = previous_release_elements(&[&old, &stale, &nested]);
    assert!(made_then.contains(&("exempt4".into(), nft_pair("10.89.0.5", "10.89.0.0/16"))) && made_then.contains(&("exempt6".into(), nft_pair("fd89::5", "fd89::5"))));
    assert_nft_masq_table(&nft_ruleset(), legacy, legacy, &made_then);
    for s in [&old, &stale, &nested] {
        fw.check_masquerade(s).unwrap_or_else(|e| panic!("{:?}: {e}", s.key));
    }
    // as that release's CHECK: the exemption of another subnet, wider or narrower, is not its own
    assert_eq!(fw.check_masquerade(&masq(NET, "old", &["10.88.0.5/16"])).unwrap_err().code(), 105, "a wider subnet");
    assert_eq!(fw.check_masquerade(&masq(NET, "nested", &["10.89.0.5/24"])).unwrap_err().code(), 105, "a narrower subnet");

    // a new attachment: its exemptions in the sets of its prefix lengths, the earlier rules kept
    let new = masq(NET, "new", &["10.88.0.7/24", "fd88::7/64"]);
    fw.add_masquerade(&new).unwrap();
    let mut want = made_then.clone();
    want.extend(masq_elements(&[("new", "10.88.0.7", "fd88::7")]));
    assert_nft_masq_table(&nft_ruleset(), Pairs { legacy: true, lens: &[24] }, Pairs { legacy: true, lens: &[64] }, &want);
    // another prefix length (a /16 of another network, a v4-only one): its rule goes in order
    let wide = masq("net2", "w", &["10.90.0.5/16"]);
    fw.add_masquerade(&wide).unwrap();
    want.push(("masq4".into(), (json!("10.90.0.5"), nft_owner(&wide.key))));
    want.push(("exempt4_16".into(), nft_pair("10.90.0.5", "10.90.0.0")));
    let (v4, v6) = (Pairs { legacy: true, lens: &[16, 24] }, Pairs { legacy: true, lens: &[64] });
    assert_nft_masq_table(&nft_ruleset(), v4, v6, &want);
    for s in [&old, &stale, &nested, &new, &wide] {
        fw.check_masquerade(s).unwrap_or_else(|e| panic!("{:?}: {e}", s.key));
    }
    // a repeated ADD changes nothing
    fw.add_masquerade(&new).unwrap();
    assert_nft_masq_table(&nft_ruleset(), v4, v6, &want);

    // DEL of an earlier attachment: its exemptions leave the interval sets
    fw.del_masquerade(&old.key, &[]).unwrap();
    let mut want = previous_release_elements(&[&stale, &nested]);
    want.extend(masq_elements(&[("new", "10.88.0.7", "fd88::7")]));
    want.push(("masq4".into(), (json!("10.90.0.5"), nft_owner(&wide.key))));
    want.push(("exempt4_16".into(), nft_pair("10.90.0.5", "10.90.0.0")));
    assert_nft_masq_table(&nft_ruleset(), v4, v6, &want);
    assert_eq!(fw.check_masquerade(&old).unwrap_err().code(), 105);
    fw.check_masquerade(&stale).unwrap();
    fw.check_masquerade(&nested).unwrap();
    // GC: likewise; the earlier release's sets and rules stay (empty)
    fw.gc_masquerade(NET, std::slice::from_ref(&new.key)).unwrap();
    let gone = previous_release_elements(&[&stale, &nested]);
    want.retain(|e| !gone.contains(e));
    assert!(want.iter().all(|(set, _)| set != "exempt4" && set != "exempt6"));
    assert_nft_masq_table(&nft_ruleset(), v4, v6, &want);
    assert_eq!(fw.check_masquerade(&stale).unwrap_err().code(), 105);
    assert_eq!(fw.check_masquerade(&nested).unwrap_err().code(), 105);
    fw.check_masquerade(&new).unwrap();
    fw.check_masquerade(&wide).unwrap();
    // the last ones: every set empty, every rule stays
    fw.del_masquerade(&new.key, &new.addrs).unwrap();
    fw.gc_masquerade("net2", &[]).unwrap();
    assert_nft_masq_table(&nft_ruleset(), v4, v6, &[]);
}

#[test]
fn nft_upgrade_from_the_interval_set_layout() {
    in_sandbox(|| upgrade_from_the_interval_set_layout(nft_firewall(false)));
}

#[test]
fn nft_native_upgrade_from_the_interval_set_layout() {
    in_sandbox(|| upgrade_from_the_interval_set_layout(nft_firewall(true)));
}

/// ADDs of attachments with different prefix lengths (each a rule of its own in the base chain,
/// added by a refill of the chain) started together on one table, each in a thread of its own
/// (its own socket or `nft` processes, its own open file of the namespace for the lock): every
/// length's rule ends up in the chain, once, in order, and every attachment passes CHECK. Some
/// rounds on a missing table, some on a table that has the rules of /24 and /64 already.
fn concurrent_adds_of_new_prefix_lengths(native: bool) {
    let fw = move || nft_firewall(native);
    // v4 length, v6 length of each writer
    const LENS: [(u8, u8); 8] = [(8, 48), (12, 56), (16, 60), (20, 96), (26, 100), (28, 112), (30, 120), (32, 128)];
    let spec = |i: usize| {
        let (l4, l6) = LENS[i];
        masq(NET, &format!("c{i}"), &[&format!("10.{}.0.1/{l4}", 100 + i), &format!("fd{i:02x}::1/{l6}")])
    };
    for round in 0..6 {
        in_sandbox(move || {
            let existing = round % 2 == 1;
            if existing {
                fw().add_masquerade(&masq(NET, "first", &["10.88.0.5/24", "fd88::5/64"])).unwrap();
            }
            all_at_once(LENS.len(), fw, move |fw, i| fw.add_masquerade(&spec(i)));
            let mut l4: Vec<u8> = LENS.iter().map(|l| l.0).collect();
            let mut l6: Vec<u8> = LENS.iter().map(|l| l.1).collect();
            let mut want = Vec::new();
            if existing {
                l4.push(24);
                l6.push(64);
                want.extend(masq_elements(&[("first", "10.88.0.5", "fd88::5")]));
            }
            l4.sort();
            l6.sort();
            for i in 0..LENS.len() {
                let s = spec(i);
                for a in &s.addrs {
                    let sfx = if a.is_ipv4() { "4" } else { "6" };
                    want.push((format!("masq{sfx}"), (json!(a.ip().to_string()), nft_owner(&s.key))));
                    want.push((format!("exempt{sfx}_{}", a.prefix()), nft_pair(&a.ip().to_string(), &a.network().to_string())));
                }
            }
            assert_nft_masq_table(&nft_ruleset(), lens(&l4), lens(&l6), &want);
            let fw = fw();
            for i in 0..LENS.len() {
                fw.check_masquerade(&spec(i)).unwrap_or_else(|e| panic!("round {round}, c{i}: {e}"));
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

/// An attachment with several subnets: each address is exempt towards each of them (cross
/// exemptions), each pair in the set of that subnet's prefix length, looked up by that length's
/// rule (ascending); a host subnet (/32, /128) is looked up without a mask. DEL empties the sets,
/// which stay with their rules.
fn cross_exemptions_and_host_subnets(fw: Box<dyn cni_firewall::Firewall>) {
    let multi = masq(NET, "m", &["10.88.0.5/24", "10.99.5.5/16", "fd88::5/64", "fd99::5/128"]);
    fw.add_masquerade(&multi).unwrap();
    let o = nft_owner(&multi.key);
    let e = |set: &str, pair: (serde_json::Value, serde_json::Value)| (set.to_string(), pair);
    let mut want = vec![
        e("masq4", (json!("10.88.0.5"), o.clone())),
        e("masq4", (json!("10.99.5.5"), o.clone())),
        e("masq6", (json!("fd88::5"), o.clone())),
        e("masq6", (json!("fd99::5"), o)),
        e("exempt4_24", nft_pair("10.88.0.5", "10.88.0.0")),
        e("exempt4_24", nft_pair("10.99.5.5", "10.88.0.0")),
        e("exempt4_16", nft_pair("10.88.0.5", "10.99.0.0")),
        e("exempt4_16", nft_pair("10.99.5.5", "10.99.0.0")),
        e("exempt6_64", nft_pair("fd88::5", "fd88::")),
        e("exempt6_64", nft_pair("fd99::5", "fd88::")),
        e("exempt6_128", nft_pair("fd88::5", "fd99::5")),
        e("exempt6_128", nft_pair("fd99::5", "fd99::5")),
    ];
    assert_nft_masq_table(&nft_ruleset(), lens(&[16, 24]), lens(&[64, 128]), &want);
    fw.check_masquerade(&multi).unwrap();
    let host = masq(NET, "h", &["10.77.0.9/32"]);
    fw.add_masquerade(&host).unwrap();
    want.push(e("masq4", (json!("10.77.0.9"), nft_owner(&host.key))));
    want.push(e("exempt4_32", nft_pair("10.77.0.9", "10.77.0.9")));
    assert_nft_masq_table(&nft_ruleset(), lens(&[16, 24, 32]), lens(&[64, 128]), &want);
    fw.check_masquerade(&multi).unwrap();
    fw.check_masquerade(&host).unwrap();
    fw.del_masquerade(&multi.key, &[]).unwrap();
    let want = vec![e("masq4", (json!("10.77.0.9"), nft_owner(&host.key))), e("exempt4_32", nft_pair("10.77.0.9", "10.77.0.9"))];
    assert_nft_masq_table(&nft_ruleset(), lens(&[16, 24, 32]), lens(&[64, 128]), &want);
    assert_eq!(fw.check_masquerade(&multi).unwrap_err().code(), 105);
    fw.check_masquerade(&host).unwrap();
}

#[test]
fn nft_cross_exemptions_and_host_subnets() {
    in_sandbox(|| cross_exemptions_and_host_subnets(make(Flavor::Nft).0));
}

#[test]
fn nft_native_cross_exemptions_and_host_subnets() {
    in_sandbox(|| cross_exemptions_and_host_subnets(Box::new(cni_firewall::nft::NftFirewall::native())));
}
