//! Our `isolation` plugin chained after our `bridge` (+ `host-local`, and `portmap` where ports are
//! published), through the runner, inside sandboxes, on both firewall backends, with real traffic
//! (ping and TCP): isolation between networks, icc=false, published ports across networks, cleanup
//! on DEL and GC, CHECK, and the O(1) nftables structure.
//!
//! Topology of every sandbox: bridges (isDefaultGateway, ipMasq on the backend under test) with
//! distinct subnets in the sandbox host, and a veth `ext0` to an "external" namespace (host
//! 198.51.100.1/24, external .2, no route back to the containers: only masqueraded traffic gets
//! answered). Networks A, B (and D, icc=false) use isolation, C does not. There is no reference
//! isolation plugin.
//!
//! Every test makes its own sandbox, so they run in parallel; they fail — never skip — without root
//! or without the plugin binaries. Per-backend tests are `<name>::iptables` and `<name>::nftables`.

mod common;

use common::lab::*;
use common::net::*;
use conformance::runner::{Attachment, NetworkConfigList, RuntimeConf};
use conformance::sandbox::NamedNetns;
use conformance::ContainerNs;
use serde_json::{json, Value};

const STAGE1: &str = "CNI-ISOLATION-STAGE-1";
const STAGE2: &str = "CNI-ISOLATION-STAGE-2";

/// A bridge network of the sandbox.
struct Net {
    name: &'static str,
    bridge: &'static str,
    subnet: &'static str,
    gw: &'static str,
}

const A: Net = Net { name: "iso-a", bridge: "br-isoa", subnet: "10.50.1.0/24", gw: "10.50.1.1" };
const B: Net = Net { name: "iso-b", bridge: "br-isob", subnet: "10.50.2.0/24", gw: "10.50.2.1" };
const C: Net = Net { name: "iso-c", bridge: "br-isoc", subnet: "10.50.3.0/24", gw: "10.50.3.1" };
const D: Net = Net { name: "iso-d", bridge: "br-isod", subnet: "10.50.4.0/24", gw: "10.50.4.1" };

/// One attached container.
struct Ctr {
    ns: ContainerNs,
    rc: RuntimeConf,
    ip: String,
    /// Host end of its veth.
    veth: String,
}

/// A sandbox with our bridge + host-local + portmap + isolation and an external namespace.
struct Iso {
    lab: Lab,
    ext: ContainerNs,
    backend: &'static str,
}

impl Iso {
    fn new(backend: &'static str) -> Iso {
        let lab = Lab::with_plugins(&["bridge", "host-local", "portmap", "isolation"]);
        let ext = lab.container();
        wire_external(lab.host(), &ext, "ext0", &format!("{HOST4}/24"), &format!("{EXT4}/24"));
        Iso { lab, ext, backend }
    }

    fn host(&self) -> &NamedNetns {
        self.lab.host()
    }

    /// bridge (+ portmap when `portmap`) + isolation with `isolation` fields (none: no isolation).
    fn list(&self, version: &str, net: &Net, portmap: bool, isolation: Option<Value>) -> NetworkConfigList {
        let mut chained = vec![];
        if portmap {
            chained.push(json!({"type": "portmap", "backend": self.backend, "capabilities": {"portMappings": true}}));
        }
        if let Some(fields) = isolation {
            let mut iso = json!({"type": "isolation", "backend": self.backend});
            for (k, v) in fields.as_object().expect("isolation fields are an object") {
                iso[k] = v.clone();
            }
            chained.push(iso);
        }
        self.lab.chain(
            version,
            net.name,
            json!({"bridge": net.bridge, "isDefaultGateway": true, "ipMasq": true, "ipMasqBackend": self.backend,
                   "ipam": self.lab.ipam4(net.subnet)}),
            &chained,
        )
    }

    fn attach(&self, l: &NetworkConfigList, cid: &str) -> Ctr {
        self.attach_with(l, cid, None)
    }

    fn attach_with(&self, l: &NetworkConfigList, cid: &str, port_mappings: Option<Value>) -> Ctr {
        let ns = self.lab.container();
        let mut rc = self.lab.rc(cid, &ns);
        if let Some(m) = port_mappings {
            rc.capability_args.insert("portMappings".into(), m);
        }
        let r = self.lab.add(l, &rc);
        let ip = result_ip(&r, false);
        let veth = r["interfaces"][1]["name"].as_str().unwrap_or_else(|| panic!("no host veth in {r}")).to_string();
        Ctr { ns, rc, ip, veth }
    }

    /// Firewall state mentioning `bridge` (nft ruleset, iptables-save of every table, both families).
    fn state(&self, bridge: &str) -> Vec<String> {
        firewall_lines_mentioning(self.host(), bridge)
    }

    /// `bridge` is in the isolation state of the configured backend (and not in the other one).
    #[track_caller]
    fn assert_isolated(&self, bridge: &str) {
        match self.backend {
            "nftables" => {
                let elems = set_elements(self.host(), "isolated");
                assert!(elems.iter().any(|e| e == bridge), "{bridge} not in the isolated set: {elems:?}");
                let by = set_elements(self.host(), "by_iif");
                assert!(by.iter().any(|e| e == bridge), "{bridge} not in the by_iif map: {by:?}");
                let ipt = iso_rules(self.host());
                assert!(ipt.is_empty(), "nftables backend wrote iptables rules: {ipt:#?}");
            }
            "iptables" => {
                for v6 in [false, true] {
                    let f = save_lines(self.host(), v6, "filter");
                    let want = format!("-A {STAGE1} -i {bridge} ! -o {bridge} ");
                    assert!(f.iter().any(|l| l.starts_with(&want)), "no `{want}` (v6 {v6}): {f:#?}");
                    let drop = format!("-A {STAGE2} -o {bridge} ");
                    assert!(f.iter().any(|l| l.starts_with(&drop) && l.ends_with("-j DROP")), "no `{drop}... DROP` (v6 {v6}): {f:#?}");
                }
                assert!(nft_table(self.host(), "inet", ISOLATION_TABLE).is_none(), "iptables backend made an nftables table");
            }
            _ => unreachable!(),
        }
    }

    /// Nothing in the firewall mentions `bridge`.
    #[track_caller]
    fn assert_not_isolated(&self, bridge: &str) {
        let left = self.state(bridge);
        assert!(left.is_empty(), "isolation state of {bridge} left: {left:#?}");
    }

    /// Remove the isolation state behind the plugin's back: the `isolated` set's elements, or the
    /// rules of `CNI-ISOLATION-STAGE-2`.
    fn flush_state(&self) {
        match self.backend {
            "nftables" => self.host().run_ok("nft", ["flush", "set", "inet", ISOLATION_TABLE, "isolated"]).map(drop).unwrap(),
            _ => {
                for tool in ["iptables", "ip6tables"] {
                    self.host().run_ok(tool, ["-F", STAGE2]).unwrap();
                }
            }
        }
    }
}

/// Keys of the elements of set/map `name` in table inet cnirs_isolation (empty when absent).
fn set_elements(host: &NamedNetns, name: &str) -> Vec<String> {
    let Some(objs) = nft_table_json(host, "inet", ISOLATION_TABLE) else { return vec![] };
    let set = objs.iter().filter_map(|o| o.get("set").or_else(|| o.get("map"))).find(|s| s["name"] == name);
    let Some(elems) = set.and_then(|s| s["elem"].as_array()) else { return vec![] };
    elems
        .iter()
        .filter_map(|e| match e {
            Value::String(s) => Some(s.clone()),
            // map elements: [key, verdict]
            Value::Array(kv) => kv.first().and_then(Value::as_str).map(String::from),
            _ => None,
        })
        .collect()
}

/// Rules of table inet cnirs_isolation's chain `chain`, as JSON.
fn chain_rules(host: &NamedNetns, chain: &str) -> Vec<Value> {
    let Some(objs) = nft_table_json(host, "inet", ISOLATION_TABLE) else { return vec![] };
    objs.iter().filter_map(|o| o.get("rule")).filter(|r| r["chain"] == chain).cloned().collect()
}

/// iptables-save lines (filter, both families) mentioning the isolation chains.
fn iso_rules(host: &NamedNetns) -> Vec<String> {
    [false, true]
        .into_iter()
        .flat_map(|v6| save_lines(host, v6, "filter"))
        .filter(|l| l.contains("CNI-ISOLATION"))
        .collect()
}

/// `from` reaches `to`: ping and a TCP connection to a listener in `to`.
#[track_caller]
fn assert_reach(from: &Ctr, to: &Ctr) {
    assert_ping(&from.ns, &to.ip);
    if let Err(e) = tcp_source_seen(to.ns.path(), ip_addr(&to.ip), from.ns.path()) {
        panic!("tcp {} -> {}: {e}", from.rc.container_id, to.rc.container_id);
    }
}

/// For every `(from, to)`: `from` does not reach `to`, no ping answer and no TCP connection. All
/// probes run at once, so the whole check waits for one timeout.
#[track_caller]
fn assert_blocked_between(pairs: &[(&Ctr, &Ctr)]) {
    let probes: Vec<Blocked> =
        pairs.iter().flat_map(|(from, to)| [Blocked::Ping(&from.ns, &to.ip), Blocked::Tcp(&from.ns, &to.ip, &to.ns)]).collect();
    assert_blocked(&probes);
}

/// `c` reaches its gateway and the external namespace (masqueraded to the host address).
#[track_caller]
fn assert_reaches_gateway_and_outside(iso: &Iso, c: &Ctr, gw: &str) {
    assert_ping(&c.ns, gw);
    assert_ping(&c.ns, EXT4);
    let seen = tcp_source_seen(iso.ext.path(), ip_addr(EXT4), c.ns.path()).unwrap_or_else(|e| panic!("{} -> external: {e}", c.rc.container_id));
    assert_eq!(seen.ip().to_string(), HOST4, "{} reaches the outside masqueraded", c.rc.container_id);
}

both_backends!(
    networks_isolated_from_each_other,
    check_fails_after_state_flushed,
    icc_false_blocks_same_bridge_only,
    published_port_default,
    published_port_blocked_by_destination,
    published_port_source_opt_out_irrelevant,
    del_of_last_container_removes_bridge_state,
    gc_after_bridge_vanishes,
);

// ---------------------------------------------------------------------------------------------
// isolation between networks
// ---------------------------------------------------------------------------------------------

/// A↔B blocked both ways; A↔C and B↔C allowed; everyone reaches its gateway and the outside. For
/// nftables: the per-packet structure is a set + a verdict map (the forward chain does not grow with
/// the number of bridges), and drops hold whatever another table accepts.
fn networks_isolated_from_each_other(backend: &'static str) {
    let iso = Iso::new(backend);
    let (la, lb, lc) = (
        iso.list("1.0.0", &A, false, Some(json!({}))),
        iso.list("1.0.0", &B, false, Some(json!({}))),
        iso.list("1.0.0", &C, false, None),
    );
    let a1 = iso.attach(&la, "ctr-a1");
    let forward_after_one = chain_rules(iso.host(), "forward").len();
    let b1 = iso.attach(&lb, "ctr-b1");
    let c1 = iso.attach(&lc, "ctr-c1");
    iso.assert_isolated(A.bridge);
    iso.assert_isolated(B.bridge);
    iso.assert_not_isolated(C.bridge);

    assert_blocked_between(&[(&a1, &b1), (&b1, &a1)]);
    for (x, y) in [(&a1, &c1), (&c1, &a1), (&b1, &c1), (&c1, &b1)] {
        assert_reach(x, y);
    }
    for (c, net) in [(&a1, &A), (&b1, &B), (&c1, &C)] {
        assert_reaches_gateway_and_outside(&iso, c, net.gw);
    }
    for (l, c) in [(&la, &a1), (&lb, &b1), (&lc, &c1)] {
        iso.lab.check(l, &c.rc);
    }

    if backend == "nftables" {
        let tbl = nft_table(iso.host(), "inet", ISOLATION_TABLE).unwrap();
        let isolated = set_elements(iso.host(), "isolated");
        let mut sorted = isolated.clone();
        sorted.sort();
        assert_eq!(sorted, [A.bridge, B.bridge], "isolated set:\n{tbl}");
        let objs = nft_table_json(iso.host(), "inet", ISOLATION_TABLE).unwrap();
        let by_iif = objs.iter().filter_map(|o| o.get("map")).find(|m| m["name"] == "by_iif");
        let by_iif = by_iif.unwrap_or_else(|| panic!("no by_iif map:\n{tbl}"));
        assert_eq!(by_iif["type"], "ifname", "by_iif is keyed by interface name:\n{tbl}");
        assert_eq!(by_iif["map"], "verdict", "by_iif is a verdict map:\n{tbl}");
        // the forward chain dispatches through the map: no rule per bridge (pair)
        let forward = chain_rules(iso.host(), "forward");
        assert_eq!(forward.len(), forward_after_one, "the forward chain grew with the second bridge:\n{tbl}");
        let text = serde_json::to_string(&forward).unwrap();
        assert!(text.contains("by_iif"), "the forward chain does not use @by_iif:\n{tbl}");
        for br in [A.bridge, B.bridge, C.bridge] {
            assert!(!text.contains(br), "the forward chain names bridge {br}:\n{tbl}");
        }
        // every per-bridge chain: one rule, a lookup in @isolated
        let chains: Vec<String> = objs.iter().filter_map(|o| o.get("chain")).filter_map(|c| c["name"].as_str().map(String::from)).collect();
        for ch in chains.iter().filter(|c| *c != "forward") {
            let rules = chain_rules(iso.host(), ch);
            assert_eq!(rules.len(), 1, "chain {ch}:\n{tbl}");
            assert!(serde_json::to_string(&rules).unwrap().contains("@isolated"), "chain {ch} does not use @isolated:\n{tbl}");
        }
        assert_eq!(chains.len(), 3, "forward + one chain per isolated bridge:\n{tbl}");

        // an accept elsewhere (firewalld, kube-proxy, ...) does not override our drop
        iso.host()
            .sh("nft add table inet other && \
                 nft add chain inet other allow_all '{ type filter hook forward priority -10; policy accept; }' && \
                 nft add rule inet other allow_all accept")
            .unwrap();
        assert_blocked_between(&[(&a1, &b1), (&b1, &a1)]);
        assert_reach(&a1, &c1);
    }

    for (l, c) in [(&la, &a1), (&lb, &b1), (&lc, &c1)] {
        iso.lab.del(l, &c.rc);
    }
    iso.assert_not_isolated(A.bridge);
    iso.assert_not_isolated(B.bridge);
}

/// CHECK passes after ADD and fails once the isolation state was removed behind the plugin's back;
/// DEL still works and leaves nothing.
fn check_fails_after_state_flushed(backend: &'static str) {
    let iso = Iso::new(backend);
    let la = iso.list("1.0.0", &A, false, Some(json!({})));
    let a1 = iso.attach(&la, "ctr-a1");
    iso.lab.check(&la, &a1.rc);
    iso.flush_state();
    let p = failure(iso.lab.rt.check_list(&la, &a1.rc), "CHECK with the isolation state flushed");
    eprintln!("CHECK after flush: {}", text_of(&p));
    iso.lab.del(&la, &a1.rc);
    iso.assert_not_isolated(A.bridge);
    if backend == "iptables" {
        let left = iso_rules(iso.host());
        assert!(left.is_empty(), "no isolated bridge left, yet: {left:#?}");
    }
}

// ---------------------------------------------------------------------------------------------
// icc
// ---------------------------------------------------------------------------------------------

/// icc default: containers of one bridge talk. icc=false: they do not, while each still reaches
/// its gateway and the outside; done with bridge port isolation, so it holds with br_netfilter's
/// bridge-nf-call-iptables off. CHECK fails once a port's isolated flag is cleared.
fn icc_false_blocks_same_bridge_only(backend: &'static str) {
    let iso = Iso::new(backend);
    // (per network namespace: no effect outside the sandbox)
    iso.host().run_ok("sysctl", ["-qw", "net.bridge.bridge-nf-call-iptables=0"]).unwrap();
    let la = iso.list("1.0.0", &A, false, Some(json!({})));
    let ld = iso.list("1.0.0", &D, false, Some(json!({"icc": false})));
    let (a1, a2) = (iso.attach(&la, "ctr-a1"), iso.attach(&la, "ctr-a2"));
    let (d1, d2) = (iso.attach(&ld, "ctr-d1"), iso.attach(&ld, "ctr-d2"));

    assert_reach(&a1, &a2);
    assert_reach(&a2, &a1);
    assert_blocked_between(&[(&d1, &d2), (&d2, &d1)]);
    assert_reaches_gateway_and_outside(&iso, &d1, D.gw);
    assert_reaches_gateway_and_outside(&iso, &d2, D.gw);
    for (c, want) in [(&a1, false), (&a2, false), (&d1, true), (&d2, true)] {
        let port = &must_link(iso.host(), &c.veth)["linkinfo"]["info_slave_data"];
        assert_eq!(port["isolated"], want, "{}: {port}", c.rc.container_id);
    }
    for (l, c) in [(&la, &a1), (&la, &a2), (&ld, &d1), (&ld, &d2)] {
        iso.lab.check(l, &c.rc);
    }

    iso.host().run_ok("ip", ["link", "set", &d1.veth, "type", "bridge_slave", "isolated", "off"]).unwrap();
    let p = failure(iso.lab.rt.check_list(&ld, &d1.rc), "icc=false CHECK with the port's isolated flag cleared");
    eprintln!("CHECK after clearing the flag: {}", text_of(&p));
    iso.lab.check(&ld, &d2.rc);

    for (l, c) in [(&la, &a1), (&la, &a2), (&ld, &d1), (&ld, &d2)] {
        iso.lab.del(l, &c.rc);
    }
    iso.assert_not_isolated(A.bridge);
    iso.assert_not_isolated(D.bridge);
}

// ---------------------------------------------------------------------------------------------
// published ports
// ---------------------------------------------------------------------------------------------

/// A container of A connects to a port published by a container of B (portmap in B's list) through
/// the host address: it gets through when B's `allowPublished` is on (default), whatever A's
/// setting (it governs A's own published ports); never directly to B's address.
fn published_port_default(backend: &'static str) {
    published(backend, None, None, true)
}

fn published_port_blocked_by_destination(backend: &'static str) {
    published(backend, None, Some(false), false)
}

/// A's `allowPublished: false` is about A's published ports: A still reaches B's.
fn published_port_source_opt_out_irrelevant(backend: &'static str) {
    published(backend, Some(false), None, true)
}

fn published(backend: &'static str, a_allow: Option<bool>, b_allow: Option<bool>, reachable: bool) {
    let iso = Iso::new(backend);
    let fields = |allow: Option<bool>| match allow {
        Some(a) => json!({"allowPublished": a}),
        None => json!({}),
    };
    let la = iso.list("1.0.0", &A, false, Some(fields(a_allow)));
    let lb = iso.list("1.0.0", &B, true, Some(fields(b_allow)));
    let b1 = iso.attach_with(&lb, "ctr-b1", Some(json!([{"hostPort": 8080, "containerPort": 80, "protocol": "tcp"}])));
    let a1 = iso.attach(&la, "ctr-a1");
    let listener = tcp_listen(b1.ns.path(), sa("0.0.0.0", 80));
    let published = sa(HOST4, 8080);

    reach_tcp(&listener, iso.ext.path(), published);
    // never directly to B's container address
    no_tcp(&listener, a1.ns.path(), sa(&b1.ip, 80));
    let r = tcp_connect_seen(&listener, a1.ns.path(), published, if reachable { REACH_TIMEOUT } else { BLOCKED_TIMEOUT });
    let ctx = format!("A allowPublished {a_allow:?}, B allowPublished {b_allow:?}");
    match (reachable, r) {
        (true, Err(e)) => {
            // a handshake stuck in SYN-RECV means the SYN got through and the SYN-ACK was dropped
            let ss = b1.ns.run_ok("ss", ["-tan"]).unwrap_or_default();
            panic!("{ctx}: A must reach B's published port through {published}: {e}\nsockets in B's container:\n{ss}")
        }
        (false, Ok(seen)) => panic!("{ctx}: A reached B's published port (seen from {seen}): it must be blocked"),
        _ => {}
    }
    iso.lab.check(&la, &a1.rc);
    iso.lab.check(&lb, &b1.rc);
    iso.lab.del(&la, &a1.rc);
    iso.lab.del(&lb, &b1.rc);
    iso.assert_not_isolated(A.bridge);
    iso.assert_not_isolated(B.bridge);
}

// ---------------------------------------------------------------------------------------------
// DEL, GC
// ---------------------------------------------------------------------------------------------

/// The bridge's state stays while it has containers and goes with the last one (with or without
/// prevResult); another bridge's state is untouched; DEL repeats.
fn del_of_last_container_removes_bridge_state(backend: &'static str) {
    let iso = Iso::new(backend);
    let la = iso.list("1.0.0", &A, false, Some(json!({})));
    let lb = iso.list("1.0.0", &B, false, Some(json!({})));
    let (a1, a2) = (iso.attach(&la, "ctr-a1"), iso.attach(&la, "ctr-a2"));
    let (b1, b2) = (iso.attach(&lb, "ctr-b1"), iso.attach(&lb, "ctr-b2"));

    iso.lab.del(&la, &a1.rc);
    iso.assert_isolated(A.bridge);
    iso.lab.check(&la, &a2.rc);
    assert_blocked_between(&[(&a2, &b1)]);
    iso.lab.del(&la, &a2.rc);
    iso.assert_not_isolated(A.bridge);
    iso.assert_isolated(B.bridge);
    iso.lab.check(&lb, &b1.rc);
    iso.lab.del(&la, &a2.rc);
    iso.lab.del(&la, &a1.rc);

    // isolation's DEL alone without prevResult while B still has both containers: state kept
    let cfg = lb.plugin_config(1, Some(&b1.rc), None, &[]).unwrap();
    let env = env_of(&b1.rc);
    let out = iso.lab.raw("isolation", "DEL", &cfg, &refs(&env));
    expect_ok(&out, "isolation DEL without prevResult");
    assert!(out.stdout.is_empty(), "DEL prints nothing: {:?}", out.stdout_str());
    iso.assert_isolated(B.bridge);
    // the runtime lost its cache: the whole DEL without prevResult; b2 keeps B isolated
    iso.lab.forget(&lb, &b1.rc);
    iso.lab.del(&lb, &b1.rc);
    iso.assert_isolated(B.bridge);
    iso.lab.check(&lb, &b2.rc);
    // the last container of B, without prevResult: B's state goes
    iso.lab.forget(&lb, &b2.rc);
    iso.lab.del(&lb, &b2.rc);
    iso.assert_not_isolated(B.bridge);
    iso.lab.del(&lb, &b2.rc);
    // and once more, without prevResult and without netns
    let env = [("CNI_CONTAINERID", "ctr-b2"), ("CNI_NETNS", ""), ("CNI_IFNAME", "eth0")];
    expect_ok(&iso.lab.raw("isolation", "DEL", &lb.plugin_config(1, None, None, &[]).unwrap(), &env), "isolation DEL without netns");
    if backend == "iptables" {
        let left = iso_rules(iso.host());
        assert!(left.is_empty(), "no isolated bridge left, yet: {left:#?}");
    }
}

/// GC removes the state of a bridge deleted by hand, and of a bridge left without ports, and keeps
/// the others'; STATUS passes.
fn gc_after_bridge_vanishes(backend: &'static str) {
    let iso = Iso::new(backend);
    let la = iso.list("1.1.0", &A, false, Some(json!({})));
    let lb = iso.list("1.1.0", &B, false, Some(json!({})));
    let a1 = iso.attach(&la, "ctr-a1");
    let b1 = iso.attach(&lb, "ctr-b1");
    iso.lab.rt.status_list(&la).unwrap_or_else(|e| panic!("STATUS: {e}"));
    iso.assert_isolated(A.bridge);

    iso.host().run_ok("ip", ["link", "del", A.bridge]).unwrap();
    iso.lab.rt.gc_list(&la, &[Attachment::new("ctr-a1", "eth0")]).unwrap_or_else(|e| panic!("GC: {e}"));
    iso.assert_not_isolated(A.bridge);
    iso.assert_isolated(B.bridge);
    iso.lab.check(&lb, &b1.rc);
    iso.lab.rt.status_list(&lb).unwrap_or_else(|e| panic!("STATUS after GC: {e}"));

    // B left without ports (its veth deleted by hand)
    iso.host().run_ok("ip", ["link", "del", &b1.veth]).unwrap();
    iso.lab.rt.gc_list(&lb, &[Attachment::new("ctr-b1", "eth0")]).unwrap_or_else(|e| panic!("GC: {e}"));
    iso.assert_not_isolated(B.bridge);
    if backend == "iptables" {
        let left = iso_rules(iso.host());
        assert!(left.is_empty(), "no isolated bridge left, yet: {left:#?}");
    }
    drop(a1);
}
