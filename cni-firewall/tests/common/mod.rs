//! Sandbox helpers for the root integration tests.
//!
//! Every test runs its body in a thread that has unshared its network namespace: the firewall
//! layer's children (iptables-restore, nft) inherit that thread's namespace, so nothing ever
//! touches the machine's own netns. Named namespaces (for the reference bridge's CNI_NETNS) are
//! deleted by a Drop guard.
#![allow(dead_code)]

use cni_firewall::detect::{IptablesTools, IptablesVariant};
use cni_firewall::exec::{CommandRunner, ProcessRunner};
use cni_firewall::ipt::IptablesFirewall;
use cni_firewall::nft::NftFirewall;
use cni_firewall::{AttachmentKey, Family, Firewall, MasqSpec, PortMapSpec, PortMapping, Protocol};
use nix::sched::{setns, unshare, CloneFlags};
use serde_json::Value;
use std::fs::File;
use std::os::fd::AsFd;
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

pub fn require_root() {
    if !nix::unistd::geteuid().is_root() {
        panic!(
            "these integration tests need root (they create throwaway network namespaces and program \
             nftables/iptables inside them); run `sudo cargo test -p cni-firewall`"
        );
    }
}

/// Run `f` in a fresh network namespace (in a dedicated thread); panics propagate.
pub fn in_sandbox<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    require_root();
    std::thread::spawn(move || {
        unshare(CloneFlags::CLONE_NEWNET).expect("unshare(CLONE_NEWNET)");
        cni_common::netns::NetNs::forget_current();
        sh("ip", &["link", "set", "lo", "up"]);
        f()
    })
    .join()
    .unwrap_or_else(|e| std::panic::resume_unwind(e))
}

/// A handle on the calling thread's netns, to enter from other threads (concurrent writers).
pub struct NsHandle(File);

impl NsHandle {
    pub fn current() -> NsHandle {
        let tid = nix::unistd::gettid();
        NsHandle(File::open(format!("/proc/self/task/{tid}/ns/net")).expect("open own netns"))
    }
    /// A namespace by path (e.g. `/run/netns/x`).
    pub fn open(path: &str) -> NsHandle {
        NsHandle(File::open(path).unwrap_or_else(|e| panic!("open {path}: {e}")))
    }
    /// Spawn a thread that runs `f` inside this namespace.
    pub fn spawn<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> std::thread::JoinHandle<T> {
        let fd = self.0.try_clone().unwrap();
        std::thread::spawn(move || {
            setns(fd.as_fd(), CloneFlags::CLONE_NEWNET).expect("setns");
            cni_common::netns::NetNs::forget_current();
            f()
        })
    }
}

static NS_COUNTER: AtomicUsize = AtomicUsize::new(0);

/// A named netns (`ip netns add cnifw-<pid>-<n>`) deleted on drop.
pub struct NamedNs {
    pub name: String,
}

impl NamedNs {
    pub fn new() -> NamedNs {
        let name = format!("cnifw-{}-{}", std::process::id(), NS_COUNTER.fetch_add(1, Ordering::SeqCst));
        sh("ip", &["netns", "add", &name]);
        NamedNs { name }
    }
    pub fn path(&self) -> String {
        format!("/run/netns/{}", self.name)
    }
}

impl Drop for NamedNs {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.name]).status();
    }
}

/// Run a command (in the calling thread's netns), panic on failure, return stdout.
pub fn sh(prog: &str, args: &[&str]) -> String {
    let out = Command::new(prog).args(args).output().unwrap_or_else(|e| panic!("{prog}: {e}"));
    assert!(out.status.success(), "{prog} {args:?} failed: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Run a command, report success.
pub fn ok(prog: &str, args: &[&str]) -> bool {
    Command::new(prog).args(args).output().map(|o| o.status.success()).unwrap_or(false)
}

/// Run a command with stdin.
pub fn sh_in(prog: &str, args: &[&str], input: &str) -> String {
    let runner = ProcessRunner::new();
    let out = runner.run(std::path::Path::new(prog), args, Some(input.as_bytes())).unwrap();
    assert!(out.success, "{prog} {args:?} failed: {}", out.stderr);
    out.stdout
}

/// Backends under test: nftables, iptables as the host's alternative, and iptables-legacy explicitly.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flavor {
    Nft,
    IptHost,
    IptLegacy,
}

pub const FLAVORS: [Flavor; 3] = [Flavor::Nft, Flavor::IptHost, Flavor::IptLegacy];

impl Flavor {
    pub fn variant(&self) -> IptablesVariant {
        match self {
            Flavor::IptLegacy => IptablesVariant::Legacy,
            _ => IptablesTools::detect().expect("iptables installed").variant,
        }
    }
    pub fn save_bin(&self, fam: Family) -> String {
        let t = IptablesTools::for_variant(self.variant());
        t.family(fam).expect("iptables tools").save.display().to_string()
    }
    pub fn restore_bin(&self, fam: Family) -> String {
        let t = IptablesTools::for_variant(self.variant());
        t.family(fam).expect("iptables tools").restore.display().to_string()
    }
    pub fn cmd_bin(&self, fam: Family) -> String {
        let base = match fam {
            Family::V4 => "iptables",
            Family::V6 => "ip6tables",
        };
        match self.variant() {
            IptablesVariant::Legacy => format!("{base}-legacy"),
            IptablesVariant::Nft => format!("{base}-nft"),
            IptablesVariant::Unknown => base.to_string(),
        }
    }
}

/// A firewall of `flavor` with its own spawn counter.
pub fn make(flavor: Flavor) -> (Box<dyn Firewall>, Arc<ProcessRunner>) {
    let runner = Arc::new(ProcessRunner::new());
    let fw: Box<dyn Firewall> = match flavor {
        Flavor::Nft => Box::new(NftFirewall::new(runner.clone())),
        Flavor::IptHost => Box::new(IptablesFirewall::new(runner.clone())),
        Flavor::IptLegacy => {
            Box::new(IptablesFirewall::with_tools(runner.clone(), IptablesTools::for_variant(IptablesVariant::Legacy)))
        }
    };
    (fw, runner)
}

/// The nftables firewall: the native executor, or the `nft` one.
pub fn nft_firewall(native: bool) -> Box<dyn Firewall> {
    if native {
        Box::new(NftFirewall::native())
    } else {
        make(Flavor::Nft).0
    }
}

/// Run `f(0..n)` in `n` threads of the calling thread's namespace, started together (each with
/// its own firewall from `fw`), and panic with the first error.
pub fn all_at_once<E: std::fmt::Display + Send + 'static>(
    n: usize,
    fw: impl Fn() -> Box<dyn Firewall> + Send + Sync + Copy + 'static,
    f: impl Fn(&dyn Firewall, usize) -> Result<(), E> + Send + Sync + Copy + 'static,
) {
    let ns = NsHandle::current();
    let start = Arc::new(std::sync::Barrier::new(n));
    let hs: Vec<_> = (0..n)
        .map(|i| {
            let start = start.clone();
            ns.spawn(move || {
                let fw = fw();
                start.wait();
                f(fw.as_ref(), i)
            })
        })
        .collect();
    for (i, h) in hs.into_iter().enumerate() {
        h.join().unwrap().unwrap_or_else(|e| panic!("writer {i}: {e}"));
    }
}

/// Processes spawned by `f` through `runner`.
pub fn count(runner: &ProcessRunner, f: impl FnOnce()) -> usize {
    let before = runner.spawned();
    f();
    runner.spawned() - before
}

pub fn key(net: &str, cid: &str) -> AttachmentKey {
    AttachmentKey::new(net, cid, "eth0")
}

pub fn masq(net: &str, cid: &str, addrs: &[&str]) -> MasqSpec {
    MasqSpec { key: key(net, cid), addrs: addrs.iter().map(|a| a.parse().unwrap()).collect() }
}

// ---- reading the state back, independently of the crate's own parsers ----

/// `-A` lines of `iptables-save -t <table>` (comments and counters stripped).
pub fn ipt_rules(flavor: Flavor, fam: Family, table: &str) -> Vec<String> {
    sh(&flavor.save_bin(fam), &["-t", table]).lines().filter(|l| l.starts_with("-A ")).map(str::to_string).collect()
}

/// User chains (`:NAME - [..]`) of `iptables-save -t <table>`.
pub fn ipt_user_chains(flavor: Flavor, fam: Family, table: &str) -> Vec<String> {
    sh(&flavor.save_bin(fam), &["-t", table])
        .lines()
        .filter_map(|l| l.strip_prefix(':'))
        .filter(|l| l.split_whitespace().nth(1) == Some("-"))
        .map(|l| l.split_whitespace().next().unwrap().to_string())
        .collect()
}

/// The `nftables` array of `nft -j list ruleset`.
pub fn nft_ruleset() -> Vec<Value> {
    let v: Value = serde_json::from_str(&sh("nft", &["-j", "list", "ruleset"])).unwrap();
    v["nftables"].as_array().unwrap().clone()
}

pub fn nft_objects<'a>(rs: &'a [Value], kind: &str, table: &str) -> Vec<&'a Value> {
    rs.iter().filter_map(|o| o.get(kind)).filter(|o| o["table"] == table).collect()
}

pub fn nft_chain_names(rs: &[Value], table: &str) -> Vec<String> {
    nft_objects(rs, "chain", table).iter().map(|c| c["name"].as_str().unwrap().to_string()).collect()
}

/// Rules of a chain, rendered as JSON strings of their `expr` arrays.
pub fn nft_rules(rs: &[Value], table: &str, chain: &str) -> Vec<Value> {
    nft_objects(rs, "rule", table).into_iter().filter(|r| r["chain"] == chain).map(|r| r["expr"].clone()).collect()
}

/// Elements of a map/set as (key JSON, data JSON or null).
pub fn nft_elems(rs: &[Value], table: &str, set: &str) -> Vec<(Value, Value)> {
    let mut out = Vec::new();
    for kind in ["map", "set"] {
        for s in nft_objects(rs, kind, table).into_iter().filter(|s| s["name"] == set) {
            for e in s["elem"].as_array().cloned().unwrap_or_default() {
                match e.as_array() {
                    Some(pair) if kind == "map" => out.push((pair[0].clone(), pair[1].clone())),
                    _ => out.push((e.clone(), Value::Null)),
                }
            }
        }
    }
    out
}

/// A port-mapping spec on network `net`: container addresses 10.66.0.N/24 and fd66::N/64, mappings
/// as (host port, container port, protocol, host IP).
pub fn portmap_spec(net: &str, cid: &str, n: u8, ports: &[(u16, u16, Protocol, Option<&str>)]) -> PortMapSpec {
    let mut s = PortMapSpec::new(
        key(net, cid),
        ports
            .iter()
            .map(|(h, c, p, ip)| PortMapping { host_port: *h, container_port: *c, protocol: *p, host_ip: ip.map(|x| x.parse().unwrap()) })
            .collect(),
    );
    s.container_v4 = Some(format!("10.66.0.{n}/24").parse().unwrap());
    s.container_v6 = Some(format!("fd66::{n}/64").parse().unwrap());
    s
}

// ---- the nftables layouts, as `nft -j` prints them ----

/// Whether the ruleset holds table `inet <name>`.
pub fn nft_has_table(rs: &[Value], name: &str) -> bool {
    rs.iter().filter_map(|o| o.get("table")).any(|t| t["family"] == "inet" && t["name"] == name)
}

/// The owner data of `k` (the three marks of `plan::owner_data`) as `nft -j` prints an element's
/// data: `{"concat": [mark, mark, mark]}`, the marks as numbers.
pub fn nft_owner(k: &AttachmentKey) -> Value {
    let marks: Vec<Value> = cni_firewall::nft::plan::owner_data(k)
        .into_iter()
        .map(|v| match v {
            cni_firewall::nft::ops::Value::Mark(m) => serde_json::json!(m),
            other => panic!("owner data holds {other:?}, not a mark"),
        })
        .collect();
    serde_json::json!({ "concat": marks })
}

/// `{"prefix": {"addr": .., "len": ..}}` of a network given as `addr/len`.
pub fn nft_prefix(net: &str) -> Value {
    let (addr, len) = net.split_once('/').expect("addr/len");
    serde_json::json!({"prefix": {"addr": addr, "len": len.parse::<u8>().unwrap()}})
}

/// An interval-set element `addr . range` (a range `a/len` as a prefix, a bare address as it is).
pub fn nft_pair(addr: &str, range: &str) -> (Value, Value) {
    let r = if range.contains('/') { nft_prefix(range) } else { serde_json::json!(range) };
    (serde_json::json!({"concat": [addr, r]}), Value::Null)
}

/// Pairs sorted by their JSON text (element order in a listing is the set's, not ours).
pub fn sorted_elems(mut v: Vec<(Value, Value)>) -> Vec<(Value, Value)> {
    v.sort_by_key(|(k, d)| format!("{k} {d}"));
    v
}

/// Elements of a map/set, sorted (see [`sorted_elems`]).
pub fn nft_elems_sorted(rs: &[Value], table: &str, set: &str) -> Vec<(Value, Value)> {
    sorted_elems(nft_elems(rs, table, set))
}

/// Chains of a table, sorted.
pub fn nft_chains_sorted(rs: &[Value], table: &str) -> Vec<String> {
    let mut v = nft_chain_names(rs, table);
    v.sort();
    v
}

/// The properties of base chain `name` as (type, hook, prio, policy).
pub fn nft_base_chain(rs: &[Value], table: &str, name: &str) -> (String, String, i64, String) {
    let c = nft_objects(rs, "chain", table).into_iter().find(|c| c["name"] == name).unwrap_or_else(|| panic!("chain {table} {name} missing"));
    let s = |f: &str| c[f].as_str().unwrap_or_else(|| panic!("{name}: no {f}")).to_string();
    (s("type"), s("hook"), c["prio"].as_i64().unwrap(), s("policy"))
}

// ---- pairs `address . network address`, one hash set per prefix length ----

/// The netmask of the first `n` bits of an address (v4 or v6), as `nft` prints it.
pub fn netmask(v6: bool, n: u8) -> String {
    if v6 {
        std::net::Ipv6Addr::from(u128::MAX.checked_shl(128 - u32::from(n)).unwrap_or(0)).to_string()
    } else {
        std::net::Ipv4Addr::from(u32::MAX.checked_shl(32 - u32::from(n)).unwrap_or(0)).to_string()
    }
}

/// `{"payload": {"protocol": .., "field": ..}}`.
pub fn nft_payload(proto: &str, field: &str) -> Value {
    serde_json::json!({"payload": {"protocol": proto, "field": field}})
}

/// Address field `field` (`saddr`/`daddr`) of `proto` (`ip`/`ip6`) masked to its first `n` bits
/// as `nft -j` prints it in a concatenation (`{"&": [payload, "255.255.255.0"]}`); the field
/// itself at full length (32 or 128: no mask).
pub fn nft_masked(proto: &str, field: &str, n: u8) -> Value {
    let v6 = proto == "ip6";
    if n == if v6 { 128 } else { 32 } {
        nft_payload(proto, field)
    } else {
        serde_json::json!({"&": [nft_payload(proto, field), netmask(v6, n)]})
    }
}

/// The names of the sets and maps of table `inet <table>`, sorted.
pub fn nft_set_names(rs: &[Value], table: &str) -> Vec<String> {
    let mut v: Vec<String> =
        ["set", "map"].iter().flat_map(|k| nft_objects(rs, k, table)).map(|s| s["name"].as_str().unwrap().to_string()).collect();
    v.sort();
    v
}

/// The sets of `inet <table>` whose names start with `base` followed by the family digit (`4`
/// or `6`): the earlier release's interval set (`exempt4`) and the per-length ones (`exempt4_24`).
pub fn nft_pair_sets(rs: &[Value], table: &str, base: &str) -> Vec<String> {
    nft_set_names(rs, table).into_iter().filter(|n| n.strip_prefix(base).is_some_and(|r| r.starts_with('4') || r.starts_with('6'))).collect()
}

/// What a base chain looks up of address pairs in one family: the earlier release's interval set
/// (`exempt4`, `hairpin4`: its rule stays on tables that release made) and the prefix lengths with
/// a rule of their own (ascending).
#[derive(Debug, Clone, Copy, Default)]
pub struct Pairs<'a> {
    pub legacy: bool,
    pub lens: &'a [u8],
}

/// The prefix lengths `lens` (ascending), no earlier release's set.
pub fn lens(lens: &[u8]) -> Pairs<'_> {
    Pairs { legacy: false, lens }
}

/// The rules of the base chain `postrouting` of `inet cnirs_masquerade2` as `nft -j` prints them:
/// per family, multicast exempt, the earlier release's exemptions (where `legacy`), one rule per
/// prefix length (`ip saddr . ip daddr & 255.255.255.0 @exempt4_24 return`, the daddr unmasked at
/// /32 and /128), then the masquerade of the attachments' addresses.
pub fn nft_masq_rules(v4: Pairs, v6: Pairs) -> Vec<Value> {
    use serde_json::json;
    let mut v = Vec::new();
    for (p, sfx, mc, pairs) in [("ip", "4", ("224.0.0.0", 4), v4), ("ip6", "6", ("ff00::", 8), v6)] {
        let ret = json!({"return": null});
        v.push(json!([{"match": {"op": "==", "left": nft_payload(p, "daddr"), "right": {"prefix": {"addr": mc.0, "len": mc.1}}}}, ret]));
        if pairs.legacy {
            let key = json!({"concat": [nft_payload(p, "saddr"), nft_payload(p, "daddr")]});
            v.push(json!([{"match": {"op": "==", "left": key, "right": format!("@exempt{sfx}")}}, ret]));
        }
        for n in pairs.lens {
            let key = json!({"concat": [nft_payload(p, "saddr"), nft_masked(p, "daddr", *n)]});
            v.push(json!([{"match": {"op": "==", "left": key, "right": format!("@exempt{sfx}_{n}")}}, ret]));
        }
        v.push(json!([{"match": {"op": "==", "left": nft_payload(p, "saddr"), "right": format!("@masq{sfx}")}}, {"masquerade": null}]));
    }
    v
}

/// The rules of the base chain `postrouting` of `inet cnirs_hostport2` as `nft -j` prints them:
/// per family, the earlier release's hairpin rule (where `legacy`), then one rule per prefix
/// length of the hairpin sources (`ct status dnat ip daddr . ip saddr & 255.255.255.0
/// @hairpin4_24 masquerade`, the saddr unmasked at /32 and /128).
pub fn nft_hairpin_rules(v4: Pairs, v6: Pairs) -> Vec<Value> {
    use serde_json::json;
    let ct_dnat = json!({"match": {"op": "in", "left": {"ct": {"key": "status"}}, "right": "dnat"}});
    let mut v = Vec::new();
    for (p, sfx, pairs) in [("ip", "4", v4), ("ip6", "6", v6)] {
        if pairs.legacy {
            let key = json!({"concat": [nft_payload(p, "daddr"), nft_payload(p, "saddr")]});
            v.push(json!([ct_dnat, {"match": {"op": "==", "left": key, "right": format!("@hairpin{sfx}")}}, {"masquerade": null}]));
        }
        for n in pairs.lens {
            let key = json!({"concat": [nft_payload(p, "daddr"), nft_masked(p, "saddr", *n)]});
            v.push(json!([ct_dnat, {"match": {"op": "==", "left": key, "right": format!("@hairpin{sfx}_{n}")}}, {"masquerade": null}]));
        }
    }
    v
}

// ---- the previous release's layouts of the tables (interval sets), as `nft -f` scripts ----

/// The owner marks of `k` as `nft` takes them in a script (`0x… . 0x… . 0x…`).
pub fn owner_text(k: &cni_firewall::AttachmentKey) -> String {
    cni_firewall::nft::plan::owner_data(k).iter().map(|v| v.text()).collect::<Vec<_>>().join(" . ")
}

/// The exemptions the previous release wrote for `spec` into its interval sets: (family suffix,
/// address, range as nft prints it) for each address and each of the attachment's subnets not
/// inside another of them (an interval set refuses overlapping elements); a host subnet as the
/// address.
pub fn previous_release_exemptions(spec: &MasqSpec) -> Vec<(&'static str, String, String)> {
    let mut v = Vec::new();
    for (sfx, v4) in [("4", true), ("6", false)] {
        let addrs: Vec<_> = spec.addrs.iter().filter(|a| a.is_ipv4() == v4).collect();
        let mut nets: Vec<cni_firewall::IpNetwork> = addrs.iter().map(|a| cni_firewall::IpNetwork::new(a.network(), a.prefix()).unwrap()).collect();
        nets.sort();
        nets.dedup();
        let outer: Vec<_> = nets.iter().filter(|n| !nets.iter().any(|o| o != *n && o.prefix() <= n.prefix() && o.contains(n.network()))).collect();
        for a in &addrs {
            for o in &outer {
                let range = if o.prefix() == if v4 { 32 } else { 128 } { o.ip().to_string() } else { format!("{}/{}", o.network(), o.prefix()) };
                v.push((sfx, a.ip().to_string(), range));
            }
        }
    }
    v
}

/// Table `inet cnirs_masquerade2` as the previous release made it (the interval sets `exempt4`
/// and `exempt6` of `address . subnet`, looked up by one rule each), holding the attachments
/// `specs` (see [`previous_release_exemptions`]), as an `nft -f` script.
pub fn previous_release_masq(specs: &[&MasqSpec]) -> String {
    let mut s = String::from(
        "table inet cnirs_masquerade2 {\n\
         \tmap masq4 { type ipv4_addr : mark . mark . mark; }\n\
         \tset exempt4 { type ipv4_addr . ipv4_addr; flags interval; }\n\
         \tmap masq6 { type ipv6_addr : mark . mark . mark; }\n\
         \tset exempt6 { type ipv6_addr . ipv6_addr; flags interval; }\n\
         \tchain postrouting {\n\
         \t\ttype nat hook postrouting priority 100; policy accept;\n\
         \t\tip daddr 224.0.0.0/4 return\n\
         \t\tip saddr . ip daddr @exempt4 return\n\
         \t\tip saddr @masq4 masquerade\n\
         \t\tip6 daddr ff00::/8 return\n\
         \t\tip6 saddr . ip6 daddr @exempt6 return\n\
         \t\tip6 saddr @masq6 masquerade\n\
         \t}\n\
         }\n"
    );
    for spec in specs {
        for a in &spec.addrs {
            let sfx = if a.is_ipv4() { "4" } else { "6" };
            s.push_str(&format!("add element inet cnirs_masquerade2 masq{sfx} {{ {} : {} }}\n", a.ip(), owner_text(&spec.key)));
        }
        for (sfx, a, range) in previous_release_exemptions(spec) {
            s.push_str(&format!("add element inet cnirs_masquerade2 exempt{sfx} {{ {a} . {range} }}\n"));
        }
    }
    s
}

/// Table `inet cnirs_hostport2` as the previous release made it (the interval sets `hairpin4` and
/// `hairpin6` of `container address . sources`, looked up by one rule each), holding the
/// attachments `specs` (snat: each container address with its subnet, and for IPv4 with
/// 127.0.0.1; masqAll: with every address), as an `nft -f` script.
pub fn previous_release_hostport(specs: &[&PortMapSpec]) -> String {
    let t = "cnirs_hostport2";
    let mut s = format!("table inet {t} {{\n");
    for (f, a) in [("4", "ipv4_addr"), ("6", "ipv6_addr")] {
        s.push_str(&format!(
            "\tmap dnat{f} {{ type inet_proto . inet_service : {a} . inet_service; }}\n\
             \tmap hostip{f} {{ type {a} . inet_proto . inet_service : {a} . inet_service; }}\n\
             \tmap owner{f} {{ type {a} : mark . mark . mark; }}\n\
             \tset hairpin{f} {{ type {a} . {a}; flags interval; }}\n"
        ));
    }
    s.push_str(
        "\tchain hostports {\n\
         \t\tdnat ip to ip daddr . meta l4proto . th dport map @hostip4\n\
         \t\tmeta nfproto ipv4 dnat ip to meta l4proto . th dport map @dnat4\n\
         \t\tdnat ip6 to ip6 daddr . meta l4proto . th dport map @hostip6\n\
         \t\tmeta nfproto ipv6 dnat ip6 to meta l4proto . th dport map @dnat6\n\
         \t}\n\
         \tchain prerouting {\n\t\ttype nat hook prerouting priority -100; policy accept;\n\t\tfib daddr type local jump hostports\n\t}\n\
         \tchain output {\n\t\ttype nat hook output priority -100; policy accept;\n\t\tfib daddr type local jump hostports\n\t}\n\
         \tchain postrouting {\n\
         \t\ttype nat hook postrouting priority 100; policy accept;\n\
         \t\tct status dnat ip daddr . ip saddr @hairpin4 masquerade\n\
         \t\tct status dnat ip6 daddr . ip6 saddr @hairpin6 masquerade\n\
         \t}\n\
         }\n",
    );
    for spec in specs {
        assert!(spec.snat, "the previous release's layout here: with snat");
        for ctr in [spec.container_v4, spec.container_v6].into_iter().flatten() {
            let (f, c) = (if ctr.is_ipv4() { "4" } else { "6" }, ctr.ip());
            let add = |set: &str, e: String| format!("add element inet {t} {set}{f} {{ {e} }}\n");
            for m in &spec.mappings {
                let to = format!("{c} . {}", m.container_port);
                match m.host_ip {
                    None => s.push_str(&add("dnat", format!("{} . {} : {to}", m.protocol.as_str(), m.host_port))),
                    Some(h) if h.is_ipv4() == ctr.is_ipv4() => s.push_str(&add("hostip", format!("{h} . {} . {} : {to}", m.protocol.as_str(), m.host_port))),
                    Some(_) => {}
                }
            }
            s.push_str(&add("owner", format!("{c} : {}", owner_text(&spec.key))));
            if spec.masq_all {
                s.push_str(&add("hairpin", format!("{c} . {}", if ctr.is_ipv4() { "0.0.0.0/0" } else { "::/0" })));
            } else {
                s.push_str(&add("hairpin", format!("{c} . {}/{}", ctr.network(), ctr.prefix())));
                if ctr.is_ipv4() {
                    s.push_str(&add("hairpin", format!("{c} . 127.0.0.1")));
                }
            }
        }
    }
    s
}

