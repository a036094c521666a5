//! Differential tests against the reference plugin (/usr/lib/cni/host-local, v1.1.1, cniVersion
//! up to 1.0.0): the same calls give the same results and the same files on disk, and each
//! implementation sees and releases the other's leases in a shared directory.

mod common;

use common::*;
use serde_json::{json, Value};
use std::collections::BTreeMap;

const V: &str = "1.0.0";

#[derive(Clone)]
enum Op<'a> {
    Add(&'a str),
    AddIf(&'a str, &'a str),
    AddArgs(&'a str, &'a str),
    Del(&'a str),
    Check(&'a str),
}

/// Run `ops` with `bin` on `conf`; per op: success, and the result for a successful ADD.
fn run_ops(bin: &str, conf: &Value, ops: &[Op]) -> Vec<(bool, Option<Value>)> {
    ops.iter()
        .map(|op| {
            let (cmd, cid, ifname, args) = match op {
                Op::Add(c) => ("ADD", *c, "eth0", None),
                Op::AddIf(c, i) => ("ADD", *c, *i, None),
                Op::AddArgs(c, a) => ("ADD", *c, "eth0", Some(*a)),
                Op::Del(c) => ("DEL", *c, "eth0", None),
                Op::Check(c) => ("CHECK", *c, "eth0", None),
            };
            let mut call = Call::new(bin, cmd, cid, conf).ifname(ifname);
            if let Some(a) = args {
                call = call.args(a);
            }
            let o = call.run();
            let res = if o.ok && cmd == "ADD" { Some(o.json()) } else { None };
            (o.ok, res)
        })
        .collect()
}

/// Lease and last_reserved files: name -> content.
fn state(dir: &std::path::Path) -> BTreeMap<String, String> {
    snapshot(dir).into_iter().map(|(n, f)| (n, f.content)).collect()
}

/// Run the same ops with both implementations in separate directories and compare everything.
fn compare(tag: &str, ipam: Value, ops: &[Op], extra: impl Fn(&mut Value)) {
    require_reference();
    let sb = Sandbox::new(tag);
    let mut ours_conf = conf(V, "net", &sb.root.join("ours"), ipam.clone());
    let mut ref_conf = conf(V, "net", &sb.root.join("ref"), ipam);
    extra(&mut ours_conf);
    extra(&mut ref_conf);
    let a = run_ops(OURS, &ours_conf, ops);
    let b = run_ops(REFERENCE, &ref_conf, ops);
    for (i, (x, y)) in a.iter().zip(b.iter()).enumerate() {
        assert_eq!(x.0, y.0, "{tag}: op {i}: success differs (ours {x:?}, reference {y:?})");
        assert_eq!(x.1, y.1, "{tag}: op {i}: result differs");
    }
    let so = state(&sb.root.join("ours/net"));
    let sr = state(&sb.root.join("ref/net"));
    assert_eq!(so, sr, "{tag}: files on disk differ");
    for (name, f) in snapshot(&sb.root.join("ours/net")) {
        assert_eq!(f.mode, 0o600, "{tag}: {name} mode");
    }
}

#[test]
fn dual_stack_lifecycle_matches() {
    let sb = Sandbox::new("resolv");
    let resolv = sb.root.join("resolv.conf");
    std::fs::write(&resolv, "# c\nnameserver 10.1.1.1\nnameserver fd00::53\nsearch a.example b.example\noptions ndots:3\ndomain example\n").unwrap();
    use Op::*;
    compare(
        "dual",
        json!({"ranges": [[{"subnet": "10.1.0.0/24"}], [{"subnet": "fd01::/64"}]],
               "routes": [{"dst": "0.0.0.0/0"}, {"dst": "192.168.0.0/16", "gw": "10.1.0.254"}, {"dst": "::/0"}],
               "resolvConf": resolv}),
        &[Add("c1"), Add("c2"), Add("c1"), Check("c1"), Del("c1"), Add("c3"), AddIf("c1", "eth1"), Del("c2"), Del("c2"), Check("c2"), Add("c4")],
        |_| {},
    );
}

#[test]
fn multi_range_wrap_and_exhaustion_match() {
    use Op::*;
    compare(
        "wrap",
        json!({"ranges": [[{"subnet": "10.2.0.0/24", "rangeStart": "10.2.0.10", "rangeEnd": "10.2.0.12"},
                           {"subnet": "10.2.1.0/24", "rangeStart": "10.2.1.1", "rangeEnd": "10.2.1.3"}]]}),
        &[Add("a"), Add("b"), Add("c"), Add("d"), Add("e"), Add("f"), Del("b"), Del("d"), Add("g"), Add("h"), Add("i"), Del("a"), Add("j")],
        |_| {},
    );
}

#[test]
fn ipv6_names_and_legacy_range_match() {
    use Op::*;
    compare(
        "v6",
        json!({"ranges": [[{"subnet": "2001:db8:0:1::/64", "rangeStart": "2001:db8:0:1:1:1:1:1", "rangeEnd": "2001:db8:0:1:1:1:1:3"}],
                          [{"subnet": "fd00:0:0:a::/120", "gateway": "fd00:0:0:a::ff"}]]}),
        &[Add("a"), Add("b"), Add("c"), Add("d"), Del("b"), Add("e")],
        |_| {},
    );
    compare(
        "legacy",
        json!({"subnet": "10.3.0.0/16", "gateway": "10.3.255.254", "rangeStart": "10.3.1.0", "rangeEnd": "10.3.1.2"}),
        &[Add("a"), Add("b"), Add("c"), Add("d")],
        |_| {},
    );
    compare(
        "runtime-ranges",
        json!({"ranges": [[{"subnet": "10.4.0.0/24"}]]}),
        &[Add("a"), Add("b"), Del("a")],
        |c| c["runtimeConfig"] = json!({"ipRanges": [[{"subnet": "10.5.0.0/24"}]]}),
    );
}

#[test]
fn requested_ips_match() {
    use Op::*;
    let ipam = json!({"ranges": [[{"subnet": "10.6.0.0/24"}], [{"subnet": "fd06::/64"}]]});
    compare(
        "req-cniargs",
        ipam.clone(),
        &[AddArgs("a", "IP=10.6.0.77"), Add("b"), AddArgs("c", "IP=10.6.0.77"), AddArgs("e", "IP=10.6.0.1")],
        |_| {},
    );
    // An address outside every range fails in both; the reference first allocates (and then
    // releases) round-robin addresses, advancing last_reserved_ip; we refuse up front.
    {
        let sb = Sandbox::new("req-outside");
        let c = conf(V, "net", &sb.data_dir(), ipam.clone());
        let o = Call::new(OURS, "ADD", "d", &c).args("IP=10.9.9.9").run();
        assert_eq!(o.code(), 7);
        assert!(state(&sb.net_dir("net")).keys().all(|k| !k.starts_with("last_reserved")));
        assert!(!Call::new(REFERENCE, "ADD", "d", &c).args("IP=10.9.9.9").run().ok);
    }
    compare("req-args", ipam.clone(), &[Add("a"), Add("b")], |c| {
        c["args"] = json!({"cni": {"ips": ["10.6.0.88", "fd06::88"]}})
    });
    // (A second ADD of a taken address is left out: the reference advances last_reserved_ip.0
    // before failing in set 1; see exhaustion_in_second_set_changes_nothing_unlike_reference.)
    compare("req-runtime", ipam.clone(), &[Add("a"), Del("a"), Add("b")], |c| {
        c["runtimeConfig"] = json!({"ips": ["fd06::99/64"]})
    });
}

#[test]
fn invalid_configs_fail_in_both() {
    require_reference();
    let sb = Sandbox::new("invalid");
    let bad = [
        json!({"ranges": [[{"subnet": "10.7.0.1/24"}]]}),
        json!({"ranges": [[{"subnet": "10.7.0.0/31"}]]}),
        json!({"ranges": [[{"subnet": "10.7.0.0/24"}], [{"subnet": "10.7.0.0/25"}]]}),
        json!({"ranges": [[{"subnet": "10.7.0.0/24", "rangeStart": "10.8.0.1"}]]}),
        json!({"ranges": [[{"subnet": "10.7.0.0/24"}, {"subnet": "fd07::/64"}]]}),
        json!({"ranges": []}),
        json!({"ranges": [[{"subnet": "10.7.0.0/24", "rangeStart": "10.7.0.50", "rangeEnd": "10.7.0.40"}]]}),
    ];
    for (i, ipam) in bad.into_iter().enumerate() {
        let c = conf(V, "net", &sb.data_dir(), ipam);
        let a = add(OURS, "a", &c);
        let b = add(REFERENCE, "a", &c);
        assert!(!a.ok && !b.ok, "case {i}: ours ok={} reference ok={}", a.ok, b.ok);
        assert_eq!(a.code(), 7, "case {i}: {}", a.stdout);
    }
    let mut c = conf(V, "net", &sb.data_dir(), json!({}));
    c.as_object_mut().unwrap().remove("ipam");
    assert!(!add(OURS, "a", &c).ok && !add(REFERENCE, "a", &c).ok);
}

/// Deliberate difference: when a later range set is exhausted the reference has already advanced
/// `last_reserved_ip` of the earlier set (and released its lease); we change nothing.
#[test]
fn exhaustion_in_second_set_changes_nothing_unlike_reference() {
    require_reference();
    let sb = Sandbox::new("exh2");
    let ipam = json!({"ranges": [[{"subnet": "10.8.0.0/24"}], [{"subnet": "10.9.0.0/30"}]]});
    let ours = conf(V, "net", &sb.root.join("ours"), ipam.clone());
    let refc = conf(V, "net", &sb.root.join("ref"), ipam);
    add(OURS, "a", &ours).assert_ok();
    add(REFERENCE, "a", &refc).assert_ok();
    let before_ours = state(&sb.root.join("ours/net"));
    let before_ref = state(&sb.root.join("ref/net"));
    assert_eq!(add(OURS, "b", &ours).code(), 102);
    assert!(!add(REFERENCE, "b", &refc).ok);
    assert_eq!(state(&sb.root.join("ours/net")), before_ours);
    let after_ref = state(&sb.root.join("ref/net"));
    assert_ne!(after_ref, before_ref, "the reference no longer advances last_reserved_ip on failure?");
    assert_eq!(after_ref["last_reserved_ip.0"], "10.8.0.3");
}

/// Deliberate difference: the network address inside rangeStart-rangeEnd is handed out by the
/// reference, never by us.
#[test]
fn network_address_never_handed_out_unlike_reference() {
    require_reference();
    let sb = Sandbox::new("netaddr");
    let ipam = json!({"ranges": [[{"subnet": "10.10.0.0/24", "rangeStart": "10.10.0.0", "rangeEnd": "10.10.0.2"}]]});
    let c = conf(V, "net", &sb.root.join("ours"), ipam.clone());
    let r = conf(V, "net", &sb.root.join("ref"), ipam);
    assert_eq!(add(REFERENCE, "a", &r).ips(), ["10.10.0.0/24"]);
    assert_eq!(add(OURS, "a", &c).ips(), ["10.10.0.2/24"]);
    assert_eq!(add(OURS, "b", &c).code(), 102);
}

#[test]
fn leases_cross_between_implementations() {
    require_reference();
    let sb = Sandbox::new("cross");
    let c = conf(V, "shared", &sb.data_dir(), json!({"ranges": [[{"subnet": "10.11.0.0/24"}], [{"subnet": "fd11::/64"}]]}));
    let dir = sb.net_dir("shared");

    // The reference allocates first; ours must not hand out the same addresses.
    let ra = add(REFERENCE, "ref-a", &c).ips();
    let rb = add(REFERENCE, "ref-b", &c).ips();
    let oc = add(OURS, "our-c", &c).ips();
    for ip in &oc {
        assert!(!ra.contains(ip) && !rb.contains(ip), "{ip} handed out twice");
    }
    // Ours detects a duplicate ADD of a reference-made attachment, naming its address.
    let o = add(OURS, "ref-a", &c);
    assert_eq!(o.code(), 103);
    assert!(o.details().contains(ra[0].split('/').next().unwrap()), "{}", o.details());
    // Ours sees (CHECK) and releases (DEL) the reference's leases.
    check(OURS, "ref-b", &c).assert_ok();
    del(OURS, "ref-a", &c).assert_ok();
    for ip in &ra {
        assert!(!dir.join(ip.split('/').next().unwrap()).exists(), "{ip} not released");
    }
    // The reference sees ours: no double allocation, duplicate detection, CHECK, DEL.
    let rd = add(REFERENCE, "ref-d", &c).ips();
    for ip in &rd {
        assert!(!oc.contains(ip) && !rb.contains(ip), "{ip} handed out twice by the reference");
    }
    assert!(!add(REFERENCE, "our-c", &c).ok, "reference missed our lease for our-c");
    check(REFERENCE, "our-c", &c).assert_ok();
    // The reference walks our index directory too; it must neither fail nor touch our entries.
    let oe = add(OURS, "our-e", &c).ips();
    let entry = dir.join(".host-local-index/a/our-e:eth0");
    let entry_before = std::fs::read(&entry).unwrap();
    del(REFERENCE, "our-c", &c).assert_ok();
    for ip in &oc {
        assert!(!dir.join(ip.split('/').next().unwrap()).exists(), "reference did not release our {ip}");
    }
    assert_eq!(std::fs::read(&entry).unwrap(), entry_before, "reference changed our index entry");
    // Ours notices the reference's release: our-c is gone, ADD of it succeeds again.
    assert_eq!(check(OURS, "our-c", &c).code(), 105);
    let oc2 = add(OURS, "our-c", &c).ips();
    // Interleave more: each implementation releases the other's.
    del(REFERENCE, "our-e", &c).assert_ok();
    del(OURS, "ref-d", &c).assert_ok();
    del(OURS, "ref-b", &c).assert_ok();
    del(REFERENCE, "our-c", &c).assert_ok();
    assert!(leases(&dir).is_empty(), "leases left: {:?}", leases(&dir));
    let _ = (oe, oc2);
    // Round-robin state is shared: both continue from the same last_reserved_ip.
    let s = state(&dir);
    let last: std::net::IpAddr = s["last_reserved_ip.0"].parse().unwrap();
    let next_ref = add(REFERENCE, "r-next", &c).ips();
    del(REFERENCE, "r-next", &c).assert_ok();
    std::fs::write(dir.join("last_reserved_ip.0"), last.to_string()).unwrap();
    std::fs::write(dir.join("last_reserved_ip.1"), &s["last_reserved_ip.1"]).unwrap();
    let next_ours = add(OURS, "o-next", &c).ips();
    assert_eq!(next_ours, next_ref);
}

#[test]
fn reference_legacy_and_our_gc() {
    require_reference();
    // Leases left by the reference (e.g. before a reboot) are recovered by our GC (spec 1.1).
    let sb = Sandbox::new("refgc");
    let c = conf(V, "n", &sb.data_dir(), json!({"ranges": [[{"subnet": "10.12.0.0/24"}]]}));
    for cid in ["live", "dead1", "dead2"] {
        add(REFERENCE, cid, &c).assert_ok();
    }
    let mut g = conf("1.1.0", "n", &sb.data_dir(), json!({"ranges": [[{"subnet": "10.12.0.0/24"}]]}));
    g["cni.dev/valid-attachments"] = json!([{"containerID": "live", "ifname": "eth0"}]);
    Call::new(OURS, "GC", "", &g).run().assert_ok();
    let l = leases(&sb.net_dir("n"));
    assert_eq!(l.len(), 1);
    assert_eq!(l.values().next().unwrap(), "live\r\neth0");
    // The reference still works in the directory afterwards.
    add(REFERENCE, "after", &c).assert_ok();
    del(REFERENCE, "live", &c).assert_ok();
    del(OURS, "after", &c).assert_ok();
    assert!(leases(&sb.net_dir("n")).is_empty());
}

/// Ours and the reference hammering one network at the same time: no address is ever held by two
/// live attachments, each releases what the other made, and nothing is left at the end.
#[test]
fn concurrent_mixed_implementations() {
    use std::collections::HashMap;
    use std::sync::{Arc, Mutex};
    require_reference();
    let sb = Sandbox::new("mixed");
    let c = Arc::new(conf(V, "mixed", &sb.data_dir(), json!({"ranges": [[{"subnet": "10.13.0.0/27"}]]})));
    let live: Arc<Mutex<HashMap<String, String>>> = Arc::new(Mutex::new(HashMap::new()));
    let handles: Vec<_> = (0..6)
        .map(|w| {
            let (c, live) = (Arc::clone(&c), Arc::clone(&live));
            std::thread::spawn(move || {
                // Workers alternate implementations per call, so each releases leases the other made.
                let pick = |i: usize| if (w + i) & 1 == 0 { OURS } else { REFERENCE };
                let mut prev: Option<(String, String)> = None;
                for i in 0..60 {
                    let cid = format!("m{w}-{i}");
                    let ip = add(pick(i), &cid, &c).ips().remove(0);
                    if let Some(other) = live.lock().unwrap().insert(ip.clone(), cid.clone()) {
                        panic!("{ip} handed to {cid} while {other} holds it");
                    }
                    if let Some((pcid, pip)) = prev.take() {
                        live.lock().unwrap().remove(&pip);
                        del(pick(i + 1), &pcid, &c).assert_ok();
                    }
                    prev = Some((cid, ip));
                }
                if let Some((pcid, pip)) = prev {
                    live.lock().unwrap().remove(&pip);
                    del(OURS, &pcid, &c).assert_ok();
                }
            })
        })
        .collect();
    for h in handles {
        h.join().expect("worker failed");
    }
    let dir = sb.net_dir("mixed");
    assert!(leases(&dir).is_empty(), "leases left: {:?}", leases(&dir));
    // Our index agrees after reconciling: no attachment is reported as holding anything.
    add(OURS, "m0-0", &c).assert_ok();
    del(OURS, "m0-0", &c).assert_ok();
    let entries: Vec<_> = std::fs::read_dir(dir.join(".host-local-index/a")).unwrap().collect();
    assert!(entries.is_empty(), "index entries left: {entries:?}");
}
