//! Masquerade on both backends (nftables, iptables as the host alternative, iptables-legacy),
//! both families, each test in its own throwaway network namespace. Requires root.

mod common;

use cni_firewall::names::{format_chain_name, masq_comment};
use cni_firewall::nft::plan::{masq_chain, MASQ_TABLE};
use cni_firewall::{choose_backend, Backend, Family};
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

/// Assert the full state of table nat (iptables) / cnirs_masquerade (nft) holds exactly the given
/// containers (cid, v4 ip, v6 ip), all in /24 and /64 subnets of 10.88.0.0 and fd88::.
fn assert_state(flavor: Flavor, ctrs: &[(&str, &str, &str)]) {
    match flavor {
        Flavor::Nft => {
            let rs = nft_ruleset();
            let mut chains: Vec<String> = nft_chain_names(&rs, MASQ_TABLE).into_iter().filter(|c| c != "postrouting").collect();
            chains.sort();
            let mut want: Vec<String> = ctrs.iter().map(|(cid, _, _)| masq_chain(&key(NET, cid))).collect();
            want.sort();
            assert_eq!(chains, want, "per-container chains");
            if ctrs.is_empty() {
                for m in ["masq4", "masq6"] {
                    assert!(nft_elems(&rs, MASQ_TABLE, m).is_empty(), "{m} not empty");
                }
                return;
            }
            // base chain
            let base = rs.iter().filter_map(|o| o.get("chain")).find(|c| c["table"] == MASQ_TABLE && c["name"] == "postrouting").unwrap();
            assert_eq!(base["hook"], "postrouting");
            assert_eq!(base["type"], "nat");
            assert_eq!(
                nft_rules(&rs, MASQ_TABLE, "postrouting"),
                vec![
                    json!([{"vmap": {"key": {"payload": {"protocol": "ip", "field": "saddr"}}, "data": "@masq4"}}]),
                    json!([{"vmap": {"key": {"payload": {"protocol": "ip6", "field": "saddr"}}, "data": "@masq6"}}]),
                ]
            );
            let e4 = nft_elems(&rs, MASQ_TABLE, "masq4");
            let e6 = nft_elems(&rs, MASQ_TABLE, "masq6");
            assert_eq!(e4.len(), ctrs.len());
            assert_eq!(e6.len(), ctrs.len());
            for (cid, ip4, ip6) in ctrs {
                let chain = masq_chain(&key(NET, cid));
                assert!(e4.contains(&(json!(ip4), json!({"goto": {"target": chain}}))), "{ip4} -> {chain}");
                assert!(e6.contains(&(json!(ip6), json!({"goto": {"target": chain}}))), "{ip6} -> {chain}");
                assert_eq!(
                    nft_rules(&rs, MASQ_TABLE, &chain),
                    vec![
                        json!([{"match": {"op": "==", "left": {"payload": {"protocol": "ip", "field": "daddr"}}, "right": {"prefix": {"addr": "10.88.0.0", "len": 24}}}}, {"return": null}]),
                        json!([{"match": {"op": "==", "left": {"payload": {"protocol": "ip", "field": "daddr"}}, "right": {"prefix": {"addr": "224.0.0.0", "len": 4}}}}, {"return": null}]),
                        json!([{"match": {"op": "==", "left": {"payload": {"protocol": "ip6", "field": "daddr"}}, "right": {"prefix": {"addr": "fd88::", "len": 64}}}}, {"return": null}]),
                        json!([{"match": {"op": "==", "left": {"payload": {"protocol": "ip6", "field": "daddr"}}, "right": {"prefix": {"addr": "ff00::", "len": 8}}}}, {"return": null}]),
                        json!([{"masquerade": null}]),
                    ]
                );
            }
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
        // iptables: one blind restore per family; nftables: one read + one transaction
        assert_eq!(n, 2, "processes for DEL");
        assert_state(flavor, &[]);
        let e = fw.check_masquerade(&spec).unwrap_err();
        assert_eq!(e.code(), 105, "{e}");
        // DEL again: everything already gone
        fw.del_masquerade(&spec.key, &spec.addrs).unwrap();
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
                // an admin empties the map (e.g. partial cleanup), then everything
                sh("nft", &["flush", "map", "inet", MASQ_TABLE, "masq4"]);
                fw.del_masquerade(&a.key, &a.addrs).unwrap();
                assert!(!nft_chain_names(&nft_ruleset(), MASQ_TABLE).contains(&masq_chain(&a.key)));
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
        assert_eq!(n, if flavor == Flavor::Nft { 2 } else { 4 }, "GC: one read and one write per family");
        fw.check_masquerade(&a).unwrap();
        fw.check_masquerade(&x).unwrap();
        assert_eq!(fw.check_masquerade(&b).unwrap_err().code(), 105);
        assert_eq!(fw.check_masquerade(&c).unwrap_err().code(), 105);
        // nothing left to collect: reads only
        let n = count(&runner, || fw.gc_masquerade(NET, std::slice::from_ref(&a.key)).unwrap());
        assert_eq!(n, if flavor == Flavor::Nft { 1 } else { 2 });
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
        fw.del_masquerade(&e0.key, &e0.addrs).unwrap();
        fw.check_masquerade(&e1).unwrap();
        fw.del_masquerade(&e1.key, &e1.addrs).unwrap();
        assert_eq!(fw.check_masquerade(&e1).unwrap_err().code(), 105);
        match flavor {
            Flavor::Nft => assert!(nft_elems(&nft_ruleset(), MASQ_TABLE, "masq4").is_empty()),
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
        // first write aborted (EEXIST on the asserted element), re-read, second write removed only A's chain
        assert_eq!(runner.spawned(), 4, "read, aborted write, read, write");
        fw.check_masquerade(&b).unwrap();
        assert_state(Flavor::Nft, &[("b", "10.88.0.5", "fd88::5")]);
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
