//! The native (netlink) nftables executor on its own: ADD, CHECK, DEL by key, GC, teardown after a
//! flush, concurrent writers, transactions too large for one message, atomicity and errors that
//! name the object, interoperation with the `nft` executor, no process spawned, backend detection
//! over netlink. Each test in its own throwaway network namespace; requires root (the `nft` binary
//! only for looking at the result and for the interop test).

mod common;

use cni_firewall::detect::{choose_backend_with, observe_host};
use cni_firewall::exec::ProcessRunner;
use cni_firewall::nft::netlink::{list_tables, NftNetlink};
use cni_firewall::nft::ops::{Element, Op, TableRef, Value, Verdict};
use cni_firewall::nft::plan::{exempt_elems, isolation_chain, masq_elems, masq_table, owner_data, HOSTPORT_TABLE, ISOLATION_TABLE, MASQ_TABLE};
use cni_firewall::nft::{NftExecutor, NftFirewall};
use cni_firewall::{firewall_with_runner, AttachmentKey, Backend, Family, Firewall, IsolationSpec, PortMapSpec, PortMapping, Protocol};
use common::*;
use std::sync::Arc;

const NET: &str = "natnet";

fn native() -> NftFirewall {
    NftFirewall::native()
}

fn exec_fw() -> NftFirewall {
    NftFirewall::new(Arc::new(ProcessRunner::new()))
}

fn ms(cid: &str, n: u16) -> cni_firewall::MasqSpec {
    masq(NET, cid, &[&format!("10.77.{}.{}/16", n / 200, n % 200 + 2), &format!("fd77::{n:x}/64")])
}

fn pm(cid: &str, n: u8) -> PortMapSpec {
    let mut s = PortMapSpec::new(
        key(NET, cid),
        vec![
            PortMapping { host_port: 8000 + u16::from(n), container_port: 80, protocol: Protocol::Tcp, host_ip: None },
            PortMapping { host_port: 9000 + u16::from(n), container_port: 53, protocol: Protocol::Udp, host_ip: Some("192.0.2.1".parse().unwrap()) },
        ],
    );
    s.container_v4 = Some(format!("10.66.0.{n}/24").parse().unwrap());
    s.container_v6 = Some(format!("fd66::{n}/64").parse().unwrap());
    s
}

fn iso(br: &str, allow_published: bool) -> IsolationSpec {
    IsolationSpec { bridge: br.into(), families: vec![Family::V4, Family::V6], allow_published }
}

fn chains(table: &str) -> Vec<String> {
    let mut v = nft_chain_names(&nft_ruleset(), table);
    v.sort();
    v
}

/// Whether `cnirs_masquerade2` holds anything of the attachment `s`: an element owned by it, or
/// an exemption of one of its addresses.
fn masq_present(s: &cni_firewall::MasqSpec) -> bool {
    let rs = nft_ruleset();
    let owner = nft_owner(&s.key);
    let addrs: Vec<serde_json::Value> = s.addrs.iter().map(|a| serde_json::json!(a.ip().to_string())).collect();
    let owns = ["masq4", "masq6"].iter().any(|m| nft_elems(&rs, MASQ_TABLE, m).iter().any(|(_, d)| *d == owner));
    let exempt = nft_pair_sets(&rs, MASQ_TABLE, "exempt").iter().any(|m| nft_elems(&rs, MASQ_TABLE, m).iter().any(|(k, _)| addrs.contains(&k["concat"][0])));
    owns || exempt
}

/// Whether `cnirs_hostport2` holds anything of the attachment `s`: its owner elements, mappings
/// to its container addresses, hairpin elements of them.
fn portmap_present(s: &PortMapSpec) -> bool {
    let rs = nft_ruleset();
    let owner = nft_owner(&s.key);
    let addrs: Vec<serde_json::Value> = [s.container_v4, s.container_v6].iter().flatten().map(|a| serde_json::json!(a.ip().to_string())).collect();
    let elems = |sets: &[&str]| -> Vec<(serde_json::Value, serde_json::Value)> { sets.iter().flat_map(|m| nft_elems(&rs, HOSTPORT_TABLE, m)).collect() };
    elems(&["owner4", "owner6"]).iter().any(|(_, d)| *d == owner)
        || elems(&["dnat4", "hostip4", "dnat6", "hostip6"]).iter().any(|(_, d)| addrs.contains(&d["concat"][0]))
        || nft_pair_sets(&rs, HOSTPORT_TABLE, "hairpin").iter().flat_map(|m| nft_elems(&rs, HOSTPORT_TABLE, m)).any(|(k, _)| addrs.contains(&k["concat"][0]))
}

/// `table` has exactly the sets `sets`, all empty.
fn all_empty(table: &str, sets: &[&str]) {
    let rs = nft_ruleset();
    let mut want: Vec<String> = sets.iter().map(|s| s.to_string()).collect();
    want.sort();
    assert_eq!(nft_set_names(&rs, table), want, "sets of {table}");
    for m in sets {
        assert!(nft_elems(&rs, table, m).is_empty(), "{table} {m}: {:?}", nft_elems(&rs, table, m));
    }
}

/// The sets of `cnirs_masquerade2` after attachments of [`ms`] (/16 and /64).
const MASQ_SETS: [&str; 4] = ["masq4", "masq6", "exempt4_16", "exempt6_64"];
/// The sets of `cnirs_hostport2` after attachments of [`pm`] (snat: /24, 127.0.0.1 and /64).
const HOSTPORT_SETS: [&str; 9] = ["dnat4", "hostip4", "owner4", "hairpin4_24", "hairpin4_32", "dnat6", "hostip6", "owner6", "hairpin6_64"];

#[test]
fn masquerade_add_check_del_gc() {
    in_sandbox(|| {
        let fw = native();
        let (a, b, c) = (ms("a", 1), ms("b", 2), ms("c", 3));
        for s in [&a, &b, &c] {
            fw.add_masquerade(s).unwrap();
            fw.add_masquerade(s).unwrap(); // idempotent
            fw.check_masquerade(s).unwrap();
        }
        assert_eq!(nft_elems(&nft_ruleset(), MASQ_TABLE, "masq4").len(), 3);
        // DEL by key, without addresses
        fw.del_masquerade(&a.key, &[]).unwrap();
        assert_eq!(fw.check_masquerade(&a).unwrap_err().code(), 105);
        fw.check_masquerade(&b).unwrap();
        assert!(!masq_present(&a));
        assert!(masq_present(&b));
        fw.del_masquerade(&a.key, &a.addrs).unwrap(); // already gone
        // an address reused by another attachment: the new owner wins, the old one's DEL spares it
        let d = masq(NET, "d", &["10.77.0.4/16"]); // b's v4 address
        fw.add_masquerade(&d).unwrap();
        fw.check_masquerade(&d).unwrap();
        fw.del_masquerade(&b.key, &b.addrs).unwrap();
        fw.check_masquerade(&d).unwrap();
        // GC: other networks untouched
        let other = masq("othernet", "x", &["10.99.0.5/24"]);
        fw.add_masquerade(&other).unwrap();
        fw.gc_masquerade(NET, std::slice::from_ref(&c.key)).unwrap();
        fw.check_masquerade(&c).unwrap();
        assert!(fw.check_masquerade(&d).is_err());
        fw.check_masquerade(&other).unwrap();
        fw.gc_masquerade(NET, &[]).unwrap();
        assert!(fw.check_masquerade(&c).is_err());
        // what is left: the other network's attachment, behind the base chain alone, which keeps
        // the rules of every prefix length used (/16, /24, /64), as their sets stay
        assert_eq!(chains(MASQ_TABLE), vec!["postrouting"]);
        let rs = nft_ruleset();
        assert_eq!(nft_rules(&rs, MASQ_TABLE, "postrouting"), nft_masq_rules(lens(&[16, 24]), lens(&[64])));
        assert_eq!(nft_set_names(&rs, MASQ_TABLE), vec!["exempt4_16", "exempt4_24", "exempt6_64", "masq4", "masq6"]);
        assert_eq!(nft_elems(&rs, MASQ_TABLE, "masq4"), vec![(serde_json::json!("10.99.0.5"), nft_owner(&other.key))]);
        assert_eq!(nft_elems(&rs, MASQ_TABLE, "exempt4_24"), vec![nft_pair("10.99.0.5", "10.99.0.0")]);
        for set in ["masq6", "exempt4_16", "exempt6_64"] {
            assert!(nft_elems(&rs, MASQ_TABLE, set).is_empty(), "{set}");
        }
    });
}

#[test]
fn portmap_add_check_del_gc() {
    in_sandbox(|| {
        let fw = native();
        let (a, b) = (pm("a", 5), pm("b", 6));
        fw.add_portmap(&a).unwrap();
        fw.add_portmap(&b).unwrap();
        fw.check_portmap(&a).unwrap();
        // a port taken over by another container: its element is re-pointed (last writer wins)
        let mut c = pm("c", 7);
        c.mappings[0].host_port = 8005; // a's port
        fw.add_portmap(&c).unwrap();
        fw.check_portmap(&c).unwrap();
        assert!(fw.check_portmap(&a).is_err());
        fw.del_portmap(&a.key).unwrap();
        fw.check_portmap(&c).unwrap();
        assert!(!portmap_present(&a));
        assert!(portmap_present(&c));
        // changed options replace the attachment's rules
        let mut b2 = b.clone();
        b2.masq_all = true;
        fw.add_portmap(&b2).unwrap();
        fw.check_portmap(&b2).unwrap();
        assert!(fw.check_portmap(&b).is_err());
        fw.gc_portmap(NET, std::slice::from_ref(&c.key)).unwrap();
        assert!(fw.check_portmap(&b2).is_err());
        fw.check_portmap(&c).unwrap();
        fw.del_portmap(&c.key).unwrap();
        // b2's masqAll made the sets and rules of /0, which stay
        let mut sets = HOSTPORT_SETS.to_vec();
        sets.extend(["hairpin4_0", "hairpin6_0"]);
        all_empty(HOSTPORT_TABLE, &sets);
        assert_eq!(chains(HOSTPORT_TABLE), vec!["hostports", "output", "postrouting", "prerouting"]);
        assert_eq!(nft_rules(&nft_ruleset(), HOSTPORT_TABLE, "postrouting"), nft_hairpin_rules(lens(&[0, 24, 32]), lens(&[0, 64])));
    });
}

#[test]
fn isolation_add_check_del_gc() {
    in_sandbox(|| {
        let fw = native();
        fw.add_isolation(&iso("br1", true)).unwrap();
        fw.add_isolation(&iso("br2", false)).unwrap();
        fw.check_isolation(&iso("br1", true)).unwrap();
        assert!(fw.check_isolation(&iso("br1", false)).is_err());
        fw.check_isolation(&iso("br2", false)).unwrap();
        // flip allowPublished both ways
        fw.add_isolation(&iso("br1", false)).unwrap();
        fw.add_isolation(&iso("br2", true)).unwrap();
        fw.check_isolation(&iso("br1", false)).unwrap();
        fw.check_isolation(&iso("br2", true)).unwrap();
        // DEL: the blind transaction, then again (state gone: read, nothing to do)
        fw.del_isolation("br1").unwrap();
        fw.del_isolation("br1").unwrap();
        assert!(fw.check_isolation(&iso("br1", false)).is_err());
        assert!(!chains(ISOLATION_TABLE).contains(&isolation_chain("br1")));
        for i in 3..7 {
            fw.add_isolation(&iso(&format!("br{i}"), i % 2 == 0)).unwrap();
        }
        fw.gc_isolation(&["br2".into(), "br5".into()]).unwrap();
        let mut left: Vec<String> = nft_elems(&nft_ruleset(), ISOLATION_TABLE, "isolated").into_iter().map(|(k, _)| k.as_str().unwrap().to_string()).collect();
        left.sort();
        assert_eq!(left, vec!["br2", "br5"]);
        fw.check_isolation(&iso("br5", false)).unwrap();
    });
}

#[test]
fn teardown_after_flush() {
    in_sandbox(|| {
        let fw = native();
        let (a, b) = (ms("a", 1), ms("b", 2));
        fw.add_masquerade(&a).unwrap();
        fw.add_masquerade(&b).unwrap();
        fw.add_portmap(&pm("p", 5)).unwrap();
        fw.add_isolation(&iso("br1", true)).unwrap();
        sh("nft", &["flush", "map", "inet", MASQ_TABLE, "masq4"]);
        fw.del_masquerade(&a.key, &a.addrs).unwrap();
        // a's v6 elements go; its v4 exemption (owner element flushed) waits for a GC
        let rs = nft_ruleset();
        assert!(!nft_elems(&rs, MASQ_TABLE, "masq6").iter().any(|(_, d)| *d == nft_owner(&a.key)));
        assert_eq!(nft_elems(&rs, MASQ_TABLE, "exempt6_64"), vec![nft_pair("fd77::2", "fd77::")], "b's only");
        assert_eq!(nft_elems_sorted(&rs, MASQ_TABLE, "exempt4_16"), sorted_elems(vec![nft_pair("10.77.0.3", "10.77.0.0"), nft_pair("10.77.0.4", "10.77.0.0")]));
        sh("nft", &["flush", "ruleset"]);
        fw.del_masquerade(&b.key, &[]).unwrap();
        fw.del_portmap(&pm("p", 5).key).unwrap();
        fw.del_isolation("br1").unwrap();
        fw.gc_masquerade(NET, &[]).unwrap();
        fw.gc_portmap(NET, &[]).unwrap();
        fw.gc_isolation(&[]).unwrap();
        // and the layout comes back on the next ADD
        fw.add_masquerade(&a).unwrap();
        fw.check_masquerade(&a).unwrap();
    });
}

/// ADD plans from a read: chains already holding their rules are left alone (their rule handles
/// stay), a base chain lacking the rule of a new prefix length is refilled with it, a flushed
/// base chain is refilled.
#[test]
fn add_keeps_intact_chains_and_heals_flushed_ones() {
    in_sandbox(|| {
        let fw = native();
        let handles = |chain: &str| -> Vec<u64> {
            NftNetlink.list_table(&masq_table()).unwrap().unwrap().chain(chain).unwrap().rules.iter().map(|r| r.handle).collect()
        };
        fw.add_masquerade(&ms("a", 1)).unwrap();
        let base = handles("postrouting");
        assert_eq!(base.len(), 6);
        fw.add_masquerade(&ms("b", 2)).unwrap();
        fw.add_masquerade(&ms("a", 1)).unwrap();
        assert_eq!(handles("postrouting"), base, "base chain rules replaced");
        // a different address for a, of a length in use: its elements are written
        let a2 = masq(NET, "a", &["10.78.0.9/16"]);
        fw.add_masquerade(&a2).unwrap();
        fw.check_masquerade(&a2).unwrap();
        assert_eq!(handles("postrouting"), base, "base chain rules replaced");
        assert!(nft_elems(&nft_ruleset(), MASQ_TABLE, "masq4").contains(&(serde_json::json!("10.78.0.9"), nft_owner(&a2.key))));
        // a new prefix length: the chain refilled with its rule, in order
        let n = masq("net2", "n", &["10.79.0.9/24"]);
        fw.add_masquerade(&n).unwrap();
        let base = handles("postrouting");
        assert_eq!(base.len(), 7);
        assert_eq!(nft_rules(&nft_ruleset(), MASQ_TABLE, "postrouting"), nft_masq_rules(lens(&[16, 24]), lens(&[64])));
        fw.add_masquerade(&masq("net2", "n2", &["10.79.0.10/24"])).unwrap();
        assert_eq!(handles("postrouting"), base, "base chain rules replaced");
        // an admin flushes the base chain: the next ADD heals it
        sh("nft", &["flush", "chain", "inet", MASQ_TABLE, "postrouting"]);
        assert!(fw.check_masquerade(&ms("b", 2)).is_err());
        fw.add_masquerade(&ms("c", 3)).unwrap();
        // the refill is planned from the whole table: every length whose set is there gets its
        // rule back, also /24, which this ADD does not use
        assert_eq!(nft_rules(&nft_ruleset(), MASQ_TABLE, "postrouting"), nft_masq_rules(lens(&[16, 24]), lens(&[64])));
        for s in [&a2, &ms("b", 2), &ms("c", 3), &n] {
            fw.check_masquerade(s).unwrap();
        }
        // the same for portmap's and isolation's base chains
        fw.add_portmap(&pm("p", 5)).unwrap();
        fw.add_isolation(&iso("br1", true)).unwrap();
        sh("nft", &["flush", "chain", "inet", HOSTPORT_TABLE, "prerouting"]);
        sh("nft", &["flush", "chain", "inet", ISOLATION_TABLE, "forward"]);
        fw.add_portmap(&pm("q", 6)).unwrap();
        fw.add_isolation(&iso("br2", false)).unwrap();
        fw.check_portmap(&pm("p", 5)).unwrap();
        fw.check_isolation(&iso("br1", true)).unwrap();
    });
}

/// ADD reads only what it touches: the chains it fills and the elements of its keys, however
/// many attachments the table holds.
#[test]
fn add_reads_only_what_it_touches() {
    in_sandbox(|| {
        let fw = native();
        for i in 0..60u16 {
            fw.add_masquerade(&ms(&format!("c{i}"), i)).unwrap();
        }
        let mut sock = cni_firewall::nft::netlink::open().unwrap();
        let fresh = ms("new", 100);
        let st = cni_firewall::nft::netlink::read_for(&mut sock, &masq_table(), &cni_firewall::nft::plan::plan_masq_add(&fresh)).unwrap().unwrap();
        assert_eq!(st.chains.keys().collect::<Vec<_>>(), vec!["postrouting"], "only the chain the ADD fills");
        assert_eq!(st.chain("postrouting").unwrap().rules.len(), 6);
        assert!(st.sets.values().all(|s| s.elems.is_empty()), "no element of other attachments");
        // an address held by another attachment is found, so the ADD evicts it
        let reuse = masq(NET, "thief", &["10.77.0.7/16"]); // c5's v4 address
        let st = cni_firewall::nft::netlink::read_for(&mut sock, &masq_table(), &cni_firewall::nft::plan::plan_masq_add(&reuse)).unwrap().unwrap();
        let owner = owner_data(&key(NET, "c5"));
        assert_eq!(st.set("masq4").unwrap().elems, vec![Element::data(vec![Value::Addr("10.77.0.7".parse().unwrap())], owner)]);
        assert_eq!(st.set("exempt4_16").unwrap().elems, exempt_elems(&ms("c5", 5), Family::V4)[&16], "the address's exemptions");
        fw.add_masquerade(&reuse).unwrap();
        fw.check_masquerade(&reuse).unwrap();
        assert!(fw.check_masquerade(&ms("c5", 5)).is_err());
        // the focused read of an existing attachment sees the base chain and its elements
        let c9 = ms("c9", 9);
        let st = cni_firewall::nft::netlink::read_for(&mut sock, &masq_table(), &cni_firewall::nft::plan::plan_masq_add(&c9)).unwrap().unwrap();
        assert_eq!(st.chains.len(), 1);
        for fam in Family::BOTH {
            let sfx = if fam == Family::V4 { "4" } else { "6" };
            assert_eq!(st.set(&format!("masq{sfx}")).unwrap().elems, masq_elems(&c9, fam));
            let n = if fam == Family::V4 { 16 } else { 64 };
            assert_eq!(st.set(&format!("exempt{sfx}_{n}")).unwrap().elems, exempt_elems(&c9, fam)[&n]);
        }
        // no table yet: nothing to read
        assert!(cni_firewall::nft::netlink::read_for(&mut sock, &TableRef::inet("none"), &[]).unwrap().is_none());
    });
}

/// The first ADDs on a fresh host race to make the table: a plan made when the table was missing
/// creates it exclusively, so a loser's transaction fails on the table (and the loser reads again)
/// instead of flushing and refilling the chains the winner made.
#[test]
fn a_lost_race_to_create_the_table_leaves_the_winners_chains() {
    in_sandbox(|| {
        let fw = native();
        let handles = || -> Vec<u64> {
            NftNetlink.list_table(&masq_table()).unwrap().unwrap().chain("postrouting").unwrap().rules.iter().map(|r| r.handle).collect()
        };
        // the loser planned while the table was missing...
        let late = cni_firewall::nft::create_exclusively(cni_firewall::nft::plan::plan_masq_add(&ms("late", 2)));
        // ...and the winner committed first
        fw.add_masquerade(&ms("first", 1)).unwrap();
        let base = handles();
        let e = NftNetlink.apply(&late).unwrap_err().to_string();
        assert!(e.contains("create table inet cnirs_masquerade2") && e.contains("File exists"), "{e}");
        assert_eq!(handles(), base, "the failed transaction changed nothing");
        // the ADD itself reads again and finds the table: base chain left as it is
        fw.add_masquerade(&ms("late", 2)).unwrap();
        assert_eq!(handles(), base, "base chain rules replaced");
        fw.check_masquerade(&ms("first", 1)).unwrap();
        fw.check_masquerade(&ms("late", 2)).unwrap();
    });
}

/// The native executor, counting the transactions it sent and those the kernel refused.
#[derive(Default)]
struct Counting {
    applied: std::sync::atomic::AtomicUsize,
    refused: std::sync::atomic::AtomicUsize,
}

impl NftExecutor for Counting {
    fn apply(&self, ops: &[Op]) -> Result<(), cni_firewall::CniError> {
        if !ops.is_empty() {
            self.applied.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        }
        let r = NftNetlink.apply(ops);
        if r.is_err() {
            self.refused.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        }
        r
    }
    fn list_table(&self, table: &TableRef) -> Result<Option<cni_firewall::nft::state::TableState>, cni_firewall::CniError> {
        NftNetlink.list_table(table)
    }
    fn probe(&self) -> Result<(), cni_firewall::CniError> {
        NftNetlink.probe()
    }
    fn present(&self) -> bool {
        NftNetlink.present()
    }
    fn cheap_reads(&self) -> bool {
        NftNetlink.cheap_reads()
    }
    fn read_for_add(&self, table: &TableRef, ops: &[Op]) -> Result<Option<cni_firewall::nft::state::TableState>, cni_firewall::CniError> {
        NftNetlink.read_for_add(table, ops)
    }
}

/// ADDs racing to make a missing table take turns (the creation lock) instead of failing on it:
/// a refused transaction costs the kernel an RCU grace period under the commit mutex that every
/// other writer waits for. Eight writers start together on each of the three tables.
#[test]
fn racing_adds_on_a_missing_table_take_turns() {
    in_sandbox(|| {
        let ns = NsHandle::current();
        let counter = Arc::new(Counting::default());
        let start = Arc::new(std::sync::Barrier::new(8));
        let hs: Vec<_> = (0..8u16)
            .map(|i| {
                let (counter, start) = (counter.clone(), start.clone());
                ns.spawn(move || {
                    let fw = NftFirewall::with_executor(counter);
                    start.wait();
                    fw.add_masquerade(&ms(&format!("r{i}"), i))?;
                    fw.add_portmap(&pm(&format!("r{i}"), i as u8 + 10))?;
                    fw.add_isolation(&iso(&format!("brr{}", i % 2), true))?;
                    Ok::<_, cni_firewall::CniError>(())
                })
            })
            .collect();
        for h in hs {
            h.join().unwrap().unwrap();
        }
        assert_eq!(counter.refused.load(std::sync::atomic::Ordering::SeqCst), 0, "transactions refused");
        let fw = native();
        for i in 0..8u16 {
            fw.check_masquerade(&ms(&format!("r{i}"), i)).unwrap();
            fw.check_portmap(&pm(&format!("r{i}"), i as u8 + 10)).unwrap();
        }
        fw.check_isolation(&iso("brr0", true)).unwrap();
        fw.check_isolation(&iso("brr1", true)).unwrap();
        // each base chain holds its rules once
        let masq = NftNetlink.list_table(&masq_table()).unwrap().unwrap();
        assert_eq!(masq.chain("postrouting").unwrap().rules.len(), 6);
        assert_eq!(masq.chains.len(), 1);
    });
}

/// An ADD whose objects are all in place (a bridge already isolated, a repeated ADD) reads and
/// writes nothing.
#[test]
fn an_add_already_in_place_writes_nothing() {
    in_sandbox(|| {
        let counter = Arc::new(Counting::default());
        let fw = NftFirewall::with_executor(counter.clone());
        let applied = || counter.applied.load(std::sync::atomic::Ordering::SeqCst);
        fw.add_isolation(&iso("brp", true)).unwrap();
        fw.add_masquerade(&ms("p1", 1)).unwrap();
        fw.add_portmap(&pm("p1", 1)).unwrap();
        assert_eq!(applied(), 3);
        fw.add_isolation(&iso("brp", true)).unwrap();
        fw.add_masquerade(&ms("p1", 1)).unwrap();
        fw.add_portmap(&pm("p1", 1)).unwrap();
        assert_eq!(applied(), 3, "a repeated ADD wrote");
        // something missing is written again
        sh("nft", &["flush", "chain", "inet", ISOLATION_TABLE, "forward"]);
        fw.add_isolation(&iso("brp", true)).unwrap();
        assert_eq!(applied(), 4);
        fw.check_isolation(&iso("brp", true)).unwrap();
        // a second bridge is a change
        fw.add_isolation(&iso("brq", false)).unwrap();
        assert_eq!(applied(), 5);
        fw.check_isolation(&iso("brq", false)).unwrap();
        fw.check_masquerade(&ms("p1", 1)).unwrap();
        fw.check_portmap(&pm("p1", 1)).unwrap();
    });
}

#[test]
fn concurrent_writers() {
    in_sandbox(|| {
        let ns = NsHandle::current();
        let hs: Vec<_> = (0..12u16)
            .map(|i| {
                ns.spawn(move || {
                    let fw = native();
                    fw.add_masquerade(&ms(&format!("c{i}"), i))?;
                    fw.add_portmap(&pm(&format!("c{i}"), i as u8 + 10))?;
                    fw.add_isolation(&iso(&format!("br{i}"), i % 2 == 0))?;
                    if i % 3 == 0 {
                        fw.del_masquerade(&ms(&format!("c{i}"), i).key, &[])?;
                    }
                    Ok::<_, cni_firewall::CniError>(())
                })
            })
            .collect();
        for h in hs {
            h.join().unwrap().unwrap();
        }
        let fw = native();
        for i in 0..12u16 {
            assert_eq!(fw.check_masquerade(&ms(&format!("c{i}"), i)).is_ok(), i % 3 != 0, "c{i}");
            fw.check_portmap(&pm(&format!("c{i}"), i as u8 + 10)).unwrap();
            fw.check_isolation(&iso(&format!("br{i}"), i % 2 == 0)).unwrap();
        }
    });
}

/// A GC of hundreds of attachments is one transaction of many messages, element lists split
/// under the 64 KiB attribute limit, larger than the default socket buffer.
#[test]
fn large_transactions() {
    in_sandbox(|| {
        let fw = native();
        let specs: Vec<_> = (0..400u16).map(|i| ms(&format!("c{i}"), i)).collect();
        let t = masq_table();
        // one transaction adding all of them (what a state-aware ADD would do at scale)
        let mut ops = Vec::new();
        for s in &specs {
            ops.extend(cni_firewall::nft::plan::plan_masq_add(s));
        }
        NftNetlink.apply(&ops).unwrap();
        let st = NftNetlink.list_table(&t).unwrap().unwrap();
        assert_eq!(st.set("masq4").unwrap().elems.len(), 400);
        assert_eq!(st.set("masq6").unwrap().elems.len(), 400);
        assert_eq!(st.set("exempt4_16").unwrap().elems.len(), 400);
        assert_eq!(st.set("exempt6_64").unwrap().elems.len(), 400);
        fw.check_masquerade(&specs[399]).unwrap();
        fw.gc_masquerade(NET, std::slice::from_ref(&specs[7].key)).unwrap();
        let st = NftNetlink.list_table(&t).unwrap().unwrap();
        assert_eq!(st.set("masq4").unwrap().elems, masq_elems(&specs[7], Family::V4));
        assert_eq!(st.set("exempt4_16").unwrap().elems, exempt_elems(&specs[7], Family::V4)[&16]);
        assert_eq!(st.set("exempt6_64").unwrap().elems, exempt_elems(&specs[7], Family::V6)[&64]);
        assert_eq!(exempt_elems(&specs[7], Family::V4).len(), 1, "one length per family");
        assert_eq!(st.set("masq6").unwrap().elems, masq_elems(&specs[7], Family::V6));
        assert_eq!(st.chains.len(), 1, "postrouting only");
        fw.check_masquerade(&specs[7]).unwrap();
    });
}

#[test]
fn transactions_are_atomic_and_errors_name_the_object() {
    in_sandbox(|| {
        let t = TableRef::inet("t");
        let exec = NftNetlink;
        let e = exec
            .apply(&[
                Op::AddTable(t.clone()),
                Op::AddChain { table: t.clone(), name: "c".into(), base: None, comment: None },
                Op::DeleteChain { table: t.clone(), name: "missing".into() },
            ])
            .unwrap_err();
        let msg = e.to_string();
        assert!(msg.contains("delete chain inet t missing") && msg.contains("No such file or directory"), "{msg}");
        assert!(exec.list_table(&t).unwrap().is_none(), "nothing of a failed transaction stays");
        // only the last message asks for an acknowledgement: a failure before it is still
        // reported, and named, though the messages after it succeed
        let e = exec
            .apply(&[
                Op::AddTable(t.clone()),
                Op::DeleteChain { table: t.clone(), name: "missing".into() },
                Op::AddChain { table: t.clone(), name: "c".into(), base: None, comment: None },
            ])
            .unwrap_err()
            .to_string();
        assert!(e.contains("delete chain inet t missing") && e.contains("No such file or directory"), "{e}");
        assert!(exec.list_table(&t).unwrap().is_none(), "nothing of a failed transaction stays");
        // an element refused in a list of three: the kernel's extended ack points at it
        let fw = native();
        fw.add_masquerade(&ms("a", 1)).unwrap();
        fw.add_masquerade(&ms("b", 2)).unwrap();
        let (oa, ob) = (owner_data(&key(NET, "a")), owner_data(&key(NET, "b")));
        let taken = Element::data(vec![Value::Addr("10.77.0.3".parse().unwrap())], ob); // a's address, b's owner
        let elems = vec![
            Element::data(vec![Value::Addr("10.9.0.1".parse().unwrap())], oa.clone()),
            taken.clone(),
            Element::data(vec![Value::Addr("10.9.0.3".parse().unwrap())], oa),
        ];
        let e = exec.apply(&[Op::AddElements { table: masq_table(), set: "masq4".into(), elems }]).unwrap_err().to_string();
        let want = format!("add element inet cnirs_masquerade2 masq4 {{ {} }}", taken.text());
        assert!(e.contains(&want), "{e}");
        assert!(e.contains("File exists"), "{e}");
        assert!(!e.contains("10.9.0.1"), "the refused element only: {e}");
        let st = exec.list_table(&masq_table()).unwrap().unwrap();
        assert_eq!(st.set("masq4").unwrap().elems.len(), 2, "atomic: no element of the failed list added");
        // a base chain is no goto target: the kernel's refusal names the element too (the
        // isolation table's verdict map)
        fw.add_isolation(&iso("br1", true)).unwrap();
        let iso_t = cni_firewall::nft::plan::isolation_table();
        let bad = Element::verdict(vec![Value::Ifname("br9".into())], Verdict::Goto("forward".into()));
        let e = exec.apply(&[Op::AddElements { table: iso_t, set: "by_iif".into(), elems: vec![bad.clone()] }]).unwrap_err().to_string();
        assert!(e.contains(&bad.text()) && e.contains("not supported"), "{e}");
        // deleting an element that is not there
        let e = exec
            .apply(&[Op::DeleteElements { table: masq_table(), set: "masq6".into(), elems: vec![Element::key(vec![Value::Addr("fd00::9".parse().unwrap())])] }])
            .unwrap_err()
            .to_string();
        assert!(e.contains("delete element inet cnirs_masquerade2 masq6 { fd00::9 }"), "{e}");
        // a rule jumping to a chain that does not exist
        let e = exec
            .apply(&[Op::AddRule {
                table: masq_table(),
                chain: "postrouting".into(),
                rule: cni_firewall::nft::ops::Rule::new(vec![cni_firewall::nft::ops::Expr::Verdict(Verdict::Jump("nowhere".into()))]),
            }])
            .unwrap_err()
            .to_string();
        assert!(e.contains("add rule inet cnirs_masquerade2 postrouting jump nowhere"), "{e}");
        // errors reach the plugin as firewall errors
        assert_eq!(exec.apply(&[Op::DeleteTable(t)]).unwrap_err().code(), cni_firewall::CniError::Firewall(String::new()).code());
    });
}

/// What one executor writes, the other tears down (upgrades and rollbacks between versions).
#[test]
fn interop_with_the_nft_executor() {
    in_sandbox(|| {
        let (n, x) = (native(), exec_fw());
        let (a, b) = (ms("a", 1), ms("b", 2));
        x.add_masquerade(&a).unwrap();
        n.add_masquerade(&b).unwrap();
        x.add_portmap(&pm("pa", 5)).unwrap();
        n.add_portmap(&pm("pb", 6)).unwrap();
        x.add_isolation(&iso("br1", true)).unwrap();
        n.add_isolation(&iso("br2", false)).unwrap();
        for fw in [&n as &dyn Firewall, &x] {
            fw.check_masquerade(&a).unwrap();
            fw.check_masquerade(&b).unwrap();
            fw.check_portmap(&pm("pa", 5)).unwrap();
            fw.check_portmap(&pm("pb", 6)).unwrap();
            fw.check_isolation(&iso("br1", true)).unwrap();
            fw.check_isolation(&iso("br2", false)).unwrap();
        }
        n.del_masquerade(&a.key, &[]).unwrap();
        x.del_masquerade(&b.key, &[]).unwrap();
        n.del_portmap(&pm("pa", 5).key).unwrap();
        x.del_portmap(&pm("pb", 6).key).unwrap();
        n.del_isolation("br1").unwrap();
        x.del_isolation("br2").unwrap();
        assert_eq!(chains(MASQ_TABLE), vec!["postrouting"]);
        all_empty(MASQ_TABLE, &MASQ_SETS);
        all_empty(HOSTPORT_TABLE, &HOSTPORT_SETS);
        assert_eq!(chains(ISOLATION_TABLE), vec!["forward"]);
        assert!(nft_elems(&nft_ruleset(), ISOLATION_TABLE, "by_iif").is_empty());
    });
}

/// The default nftables firewall spawns nothing: not for writes, reads, CHECK, GC, STATUS, nor
/// for choosing the backend.
#[test]
fn no_process_is_spawned() {
    in_sandbox(|| {
        assert!(std::env::var_os("CNI_NFT_EXEC").is_none(), "the test environment selects the nft process");
        let runner = Arc::new(ProcessRunner::new());
        let fw = firewall_with_runner(Backend::Nftables, runner.clone());
        let n = count(&runner, || {
            assert_eq!(choose_backend_with(Some("nftables"), &*runner).unwrap(), Backend::Nftables);
            let host = observe_host(&*runner);
            assert!(host.nft && !host.ours_nft);
            fw.status().unwrap();
            fw.add_masquerade(&ms("a", 1)).unwrap();
            fw.check_masquerade(&ms("a", 1)).unwrap();
            fw.add_portmap(&pm("a", 5)).unwrap();
            fw.check_portmap(&pm("a", 5)).unwrap();
            fw.add_isolation(&iso("br1", true)).unwrap();
            fw.check_isolation(&iso("br1", true)).unwrap();
            assert!(observe_host(&*runner).ours_nft);
            assert_eq!(choose_backend_with(None, &*runner).unwrap(), Backend::Nftables);
            fw.del_masquerade(&ms("a", 1).key, &[]).unwrap();
            fw.del_portmap(&pm("a", 5).key).unwrap();
            fw.del_isolation("br1").unwrap();
            fw.gc_masquerade(NET, &[]).unwrap();
            fw.gc_portmap(NET, &[]).unwrap();
            fw.gc_isolation(&[]).unwrap();
        });
        assert_eq!(n, 0);
    });
}

/// Detection lists tables over netlink: ours, and iptables-nft's by name.
#[test]
fn detection_over_netlink() {
    in_sandbox(|| {
        assert!(list_tables().unwrap().is_empty());
        native().add_isolation(&iso("br1", false)).unwrap();
        sh_in("nft", &["-f", "-"], "add table ip nat\nadd table ip6 filter\nadd table bridge filter\nadd table netdev x\n");
        let mut t = list_tables().unwrap();
        t.sort();
        let want: Vec<(String, String)> = [("bridge", "filter"), ("inet", ISOLATION_TABLE), ("ip", "nat"), ("ip6", "filter"), ("netdev", "x")]
            .iter()
            .map(|(f, n)| (f.to_string(), n.to_string()))
            .collect();
        assert_eq!(t, want);
        let host = observe_host(&ProcessRunner::new());
        assert!(host.nft && host.ours_nft && host.iptables_in_use, "{host:?}");
        assert!(cni_firewall::nft::usable());
    });
}

#[test]
fn attachment_keys_are_validated() {
    in_sandbox(|| {
        let fw = native();
        let bad = cni_firewall::MasqSpec { key: AttachmentKey::new("net", "bad id\"", "eth0"), addrs: vec!["10.0.0.2/24".parse().unwrap()] };
        assert_eq!(fw.add_masquerade(&bad).unwrap_err().code(), 7);
        assert_eq!(fw.add_isolation(&iso("bad/name", false)).unwrap_err().code(), 7);
        assert!(list_tables().unwrap().is_empty());
    });
}
