//! Kernel-state helpers for plugin tests: links, addresses, sysctls, IPAM leases, NAT rules and
//! connectivity, all read inside sandbox namespaces with `ip -j`, `iptables-save`, `nft` and
//! `/proc/sys`. Connectivity: an external namespace wired to the sandbox host, pings, TCP and UDP
//! through published ports (sockets bound inside one namespace, the client in another, the source
//! the server saw returned), and traffic that must be blocked, probed concurrently.

use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::path::Path;
use std::time::Duration;

use cni_common::error::CniError;
use cni_common::netns::NetNs;
use conformance::sandbox::NamedNetns;
use serde_json::Value;
use sha2::{Digest, Sha512};

// ---- links ----

/// `ip -j -d link show dev NAME` in `ns`, or `None` when there is no such link.
pub fn link_details(ns: &NamedNetns, name: &str) -> Option<Value> {
    let out = ns.run("ip", ["-j", "-d", "link", "show", "dev", name]).unwrap();
    if !out.status.success() {
        return None;
    }
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    v.as_array().and_then(|a| a.first()).cloned()
}

/// `ip -j -d link show` in `ns`: every link.
pub fn links(ns: &NamedNetns) -> Vec<Value> {
    match ns.ip_json(["-d", "link", "show"]).unwrap() {
        Value::Array(a) => a,
        _ => vec![],
    }
}

/// Names of every link in `ns`.
pub fn link_names(ns: &NamedNetns) -> Vec<String> {
    links(ns).iter().filter_map(|l| l["ifname"].as_str().map(String::from)).collect()
}

/// Names of the links of kind `kind` (`veth`, `bridge`, ...) in `ns`.
pub fn links_of_kind(ns: &NamedNetns, kind: &str) -> Vec<String> {
    links(ns)
        .iter()
        .filter(|l| l["linkinfo"]["info_kind"] == kind)
        .filter_map(|l| l["ifname"].as_str().map(String::from))
        .collect()
}

/// The link `name` in `ns`; panics when it does not exist.
pub fn must_link(ns: &NamedNetns, name: &str) -> Value {
    link_details(ns, name).unwrap_or_else(|| panic!("no link {name:?} in {}: {:?}", ns.name(), link_names(ns)))
}

pub fn mac_of(ns: &NamedNetns, name: &str) -> String {
    must_link(ns, name)["address"].as_str().unwrap_or_default().to_string()
}

pub fn mtu_of(ns: &NamedNetns, name: &str) -> u64 {
    must_link(ns, name)["mtu"].as_u64().unwrap_or_default()
}

pub fn has_flag(link: &Value, flag: &str) -> bool {
    link["flags"].as_array().is_some_and(|f| f.iter().any(|x| x == flag))
}

/// `true` for names the reference gives host veths: `veth` + 8 lower-case hex digits.
pub fn is_host_veth_name(name: &str) -> bool {
    name.len() == 12
        && name.starts_with("veth")
        && name[4..].chars().all(|c| c.is_ascii_digit() || ('a'..='f').contains(&c))
}

// ---- addresses, routes, sysctls ----

/// The `addr_info` entries of `ip -j ARGS` (an `addr show`) in `ns`, over every link listed.
fn addr_info(ns: &NamedNetns, args: &[&str]) -> Vec<Value> {
    let v = ns.ip_json(args).unwrap();
    v.as_array().into_iter().flatten().flat_map(|l| l["addr_info"].as_array().cloned().unwrap_or_default()).collect()
}

/// `addr/prefix` of every address on `dev` in `ns` (`family` "-4", "-6" or "" for both).
pub fn addrs(ns: &NamedNetns, family: &str, dev: &str) -> Vec<String> {
    let mut args = vec![];
    if !family.is_empty() {
        args.push(family);
    }
    args.extend(["addr", "show", "dev", dev]);
    addr_info(ns, &args)
        .iter()
        .map(|a| format!("{}/{}", a["local"].as_str().unwrap_or_default(), a["prefixlen"]))
        .collect()
}

/// Addresses on `dev` carrying `flag` (e.g. `tentative`), as `ip -j addr` reports them.
pub fn addrs_flagged(ns: &NamedNetns, dev: &str, flag: &str) -> Vec<String> {
    addr_info(ns, &["addr", "show", "dev", dev])
        .iter()
        .filter(|a| a[flag] == true)
        .map(|a| a["local"].as_str().unwrap_or_default().to_string())
        .collect()
}

/// `ip -j [-6] route show default` in `ns`.
pub fn default_routes(ns: &NamedNetns, v6: bool) -> Vec<Value> {
    let args: &[&str] = if v6 { &["-6", "route", "show", "default"] } else { &["route", "show", "default"] };
    match ns.ip_json(args).unwrap() {
        Value::Array(a) => a,
        _ => vec![],
    }
}

/// A sysctl as the namespace sees it: `cat /proc/sys/<key with />`.
pub fn sysctl(ns: &NamedNetns, key: &str) -> String {
    ns.run_ok("cat", [format!("/proc/sys/{key}")]).unwrap().trim().to_string()
}

// ---- IPAM leases (host-local layout: one file per address under <dataDir>/<network>) ----

/// Names of the lease files (those named by an IP address) under `<data_dir>/<network>`.
pub fn lease_files(data_dir: &Path, network: &str) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir(data_dir.join(network)) else { return vec![] };
    let mut out: Vec<String> = entries
        .flatten()
        .filter_map(|e| e.file_name().to_str().map(String::from))
        .filter(|n| n.parse::<IpAddr>().is_ok())
        .collect();
    out.sort();
    out
}

// ---- NAT rules ----

/// The reference `utils.MustFormatChainNameWithPrefix`:
/// `("CNI-" + prefix + hex(sha512(network + containerID)))[:28]`.
pub fn cni_chain_name(prefix: &str, network: &str, container_id: &str) -> String {
    let digest = Sha512::digest(format!("{network}{container_id}").as_bytes());
    let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
    let mut s = format!("CNI-{prefix}{hex}");
    s.truncate(28);
    s
}

/// The reference `utils.FormatChainName`: `("CNI-" + hex(sha512(network + containerID)))[:28]`
/// (the iptables backend's masquerade chain, as the reference names it).
pub fn masq_chain_name(network: &str, container_id: &str) -> String {
    cni_chain_name("", network, container_id)
}

/// The reference portmap per-container chain `CNI-DN-<hash>` (the iptables backend's).
pub fn dnat_chain_name(network: &str, container_id: &str) -> String {
    cni_chain_name("DN-", network, container_id)
}

/// The reference ipMasq rule comment as `iptables-save` prints it: `"name: \"<net>\" id: \"<cid>\""`.
pub fn masq_comment_saved(network: &str, container_id: &str) -> String {
    format!(r#""name: \"{network}\" id: \"{container_id}\"""#)
}

/// `iptables-save -t nat` (`ip6tables-save` with `v6`) in `ns`, as rule lines: chain declarations
/// without counters (`:NAME POLICY`) and `-A` rules; comments and `*nat`/`COMMIT` dropped.
pub fn nat_lines(ns: &NamedNetns, v6: bool) -> Vec<String> {
    save_lines(ns, v6, "nat")
}

/// Like [`nat_lines`] for any table (`filter`, `nat`, ...).
pub fn save_lines(ns: &NamedNetns, v6: bool, table: &str) -> Vec<String> {
    let tool = if v6 { "ip6tables-save" } else { "iptables-save" };
    let out = ns.run_ok(tool, ["-t", table]).unwrap();
    out.lines()
        .filter_map(|l| {
            if let Some(decl) = l.strip_prefix(':') {
                let mut parts = decl.split_whitespace();
                Some(format!(":{} {}", parts.next().unwrap_or_default(), parts.next().unwrap_or_default()))
            } else if l.starts_with("-A ") {
                Some(l.to_string())
            } else {
                None
            }
        })
        .collect()
}

/// The `nat_lines` that mention a `CNI-` chain.
pub fn cni_nat_lines(ns: &NamedNetns, v6: bool) -> Vec<String> {
    nat_lines(ns, v6).into_iter().filter(|l| l.contains("CNI-")).collect()
}

/// `nft list ruleset` in `ns`.
pub fn nft_ruleset(ns: &NamedNetns) -> String {
    ns.run_ok("nft", ["list", "ruleset"]).unwrap()
}

/// `nft -j list ruleset` in `ns`, the `nftables` array.
pub fn nft_json(ns: &NamedNetns) -> Vec<Value> {
    let v: Value = serde_json::from_str(&ns.run_ok("nft", ["-j", "list", "ruleset"]).unwrap()).unwrap();
    v["nftables"].as_array().cloned().unwrap_or_default()
}

/// `table <family> <name>` of every nftables table in `ns` (iptables-nft's included).
pub fn nft_tables(ns: &NamedNetns) -> Vec<String> {
    ns.run_ok("nft", ["list", "tables"]).unwrap().lines().map(|l| l.trim().to_string()).filter(|l| !l.is_empty()).collect()
}

/// `nft -j list table FAMILY NAME` in `ns`, the `nftables` array; `None` when there is no such table.
pub fn nft_table_json(ns: &NamedNetns, family: &str, name: &str) -> Option<Vec<Value>> {
    let out = ns.run("nft", ["-j", "list", "table", family, name]).unwrap();
    if !out.status.success() {
        return None;
    }
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    Some(v["nftables"].as_array().cloned().unwrap_or_default())
}

/// `nft list table FAMILY NAME` in `ns` (text); `None` when there is no such table.
pub fn nft_table(ns: &NamedNetns, family: &str, name: &str) -> Option<String> {
    let out = ns.run("nft", ["list", "table", family, name]).unwrap();
    out.status.success().then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

// ---- our nftables layout (cni-firewall's nftables backend) ----
//
// Masquerade: `inet cnirs_masquerade2`; port mappings: `inet cnirs_hostport2`; isolation:
// `inet cnirs_isolation`. No chain per attachment: attachments are elements of data maps and of
// hash sets of `address . network address` pairs, one set per prefix length in use (`exempt4_24`,
// `hairpin4_32`), each looked up by a rule of its own with the other address masked to that
// length (`ip saddr . ip daddr & 255.255.255.0 @exempt4_24 return`); sets and rules stay once
// made. Each container address is owned by `mark . mark . mark` (see
// `cni_firewall::nft::plan::owner_data`). The previous release's interval sets (`exempt4`,
// `hairpin4`) and their rules stay on tables it made. The layout of earlier versions
// (`cnirs_masquerade`, `cnirs_hostport`, chains `m-…`, `p-…`, `s-…` behind verdict maps) is only
// torn down.

/// The masquerade table (bridge `ipMasq`, nftables backend).
pub const MASQ_TABLE: &str = "cnirs_masquerade2";
/// The port mapping table (portmap, nftables backend).
pub const HOSTPORT_TABLE: &str = "cnirs_hostport2";
/// The isolation table.
pub const ISOLATION_TABLE: &str = "cnirs_isolation";
/// The masquerade table of the earlier layout (only torn down).
pub const LEGACY_MASQ_TABLE: &str = "cnirs_masquerade";
/// The port mapping table of the earlier layout (only torn down).
pub const LEGACY_HOSTPORT_TABLE: &str = "cnirs_hostport";
/// Tables whose sets hold per-attachment elements: empty once every attachment is deleted.
pub const PER_ATTACHMENT_TABLES: [&str; 4] = [MASQ_TABLE, HOSTPORT_TABLE, LEGACY_MASQ_TABLE, LEGACY_HOSTPORT_TABLE];

/// The owner data of attachment `(network, container_id, ifname)` as nft prints it:
/// `0x........ . 0x........ . 0x........`.
pub fn owner_marks(network: &str, container_id: &str, ifname: &str) -> String {
    let key = cni_firewall::AttachmentKey::new(network, container_id, ifname);
    cni_firewall::nft::plan::owner_data(&key).iter().map(|v| v.text()).collect::<Vec<_>>().join(" . ")
}

/// One value of an `nft -j` element as `nft list` prints it, given its type (`mark` is printed in
/// hex, `0x%08x`).
fn nft_json_value(v: &Value, ty: &str) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Number(n) if ty == "mark" => format!("0x{:08x}", n.as_u64().unwrap_or_default()),
        Value::Number(n) => n.to_string(),
        Value::Object(o) if o.contains_key("prefix") => {
            format!("{}/{}", o["prefix"]["addr"].as_str().unwrap_or_default(), o["prefix"]["len"])
        }
        Value::Object(o) if o.contains_key("range") => {
            let r = &o["range"];
            format!("{}-{}", nft_json_value(&r[0], ty), nft_json_value(&r[1], ty))
        }
        Value::Object(o) if o.contains_key("elem") => nft_json_value(&o["elem"]["val"], ty),
        Value::Object(o) => match o.iter().next() {
            // verdicts: {"goto": {"target": "c"}}, {"accept": null}
            Some((verdict, target)) => match target["target"].as_str() {
                Some(t) => format!("{verdict} {t}"),
                None => verdict.clone(),
            },
            None => String::new(),
        },
        other => other.to_string(),
    }
}

/// A key or data of an `nft -j` element (`{"concat": [...]}` or one value) as `nft list` prints
/// it: the fields joined with ` . `.
fn nft_json_fields(v: &Value, types: &[String]) -> String {
    let ty = |i: usize| types.get(i).map(String::as_str).unwrap_or_default();
    match v.get("concat").and_then(Value::as_array) {
        Some(parts) => parts.iter().enumerate().map(|(i, p)| nft_json_value(p, ty(i))).collect::<Vec<_>>().join(" . "),
        None => match v.get("elem") {
            Some(e) => nft_json_fields(&e["val"], types),
            None => nft_json_value(v, ty(0)),
        },
    }
}

/// A set's `type` or a map's `map` in `nft -j` output (a string, `a . b`, or an array).
fn nft_json_types(v: &Value) -> Vec<String> {
    match v {
        Value::String(s) => s.split(" . ").map(String::from).collect(),
        Value::Array(a) => a.iter().filter_map(Value::as_str).map(String::from).collect(),
        _ => vec![],
    }
}

/// The sets and maps of nftables table `inet NAME` in `ns`, each with its elements as `nft list`
/// prints them (`key . key` or `key . key : data . data`), sorted; `None` without the table.
pub fn nft_sets(ns: &NamedNetns, table: &str) -> Option<std::collections::BTreeMap<String, Vec<String>>> {
    let objs = nft_table_json(ns, "inet", table)?;
    let mut out = std::collections::BTreeMap::new();
    for o in &objs {
        let Some(set) = o.get("set").or_else(|| o.get("map")) else { continue };
        let key_types = nft_json_types(&set["type"]);
        let data_types = nft_json_types(&set["map"]);
        let mut elems: Vec<String> = set["elem"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|e| match e.as_array() {
                Some(kv) if kv.len() == 2 => {
                    format!("{} : {}", nft_json_fields(&kv[0], &key_types), nft_json_fields(&kv[1], &data_types))
                }
                _ => nft_json_fields(e, &key_types),
            })
            .collect();
        elems.sort();
        out.insert(set["name"].as_str().unwrap_or_default().to_string(), elems);
    }
    Some(out)
}

/// The chains of nftables table `inet NAME` in `ns`, each with its lines as `nft list table`
/// prints them (a base chain's `type … hook … priority …; policy …;` first, then the rules);
/// `None` without the table.
pub fn nft_chains(ns: &NamedNetns, table: &str) -> Option<std::collections::BTreeMap<String, Vec<String>>> {
    let text = nft_table(ns, "inet", table)?;
    let mut out: std::collections::BTreeMap<String, Vec<String>> = std::collections::BTreeMap::new();
    let mut current: Option<String> = None;
    for line in text.lines().map(str::trim) {
        if let Some(rest) = line.strip_prefix("chain ") {
            let name = rest.trim_end_matches('{').trim().to_string();
            out.insert(name.clone(), vec![]);
            current = Some(name);
        } else if line.starts_with("set ") || line.starts_with("map ") || line == "}" {
            current = None;
        } else if let Some(c) = &current {
            if !line.is_empty() {
                out.get_mut(c).unwrap().push(line.to_string());
            }
        }
    }
    Some(out)
}

/// The netmask of the first `n` bits of an address (`v6` or not) as `nft` prints it.
pub fn netmask(v6: bool, n: u8) -> String {
    if v6 {
        std::net::Ipv6Addr::from(u128::MAX.checked_shl(128 - u32::from(n)).unwrap_or(0)).to_string()
    } else {
        std::net::Ipv4Addr::from(u32::MAX.checked_shl(32 - u32::from(n)).unwrap_or(0)).to_string()
    }
}

/// The set of `base` pairs (`exempt`, `hairpin`) of family `fam` (`4`, `6`) and prefix length `n`.
pub fn pair_set(base: &str, fam: u8, n: u8) -> String {
    format!("{base}{fam}_{n}")
}

/// What set `name` is of the `base` pairs: its family (4 or 6) and prefix length, `None` for the
/// previous release's interval set (`exempt4`); not one of them: `None` at all.
fn pair_set_of(base: &str, name: &str) -> Option<(u8, Option<u8>)> {
    let rest = name.strip_prefix(base)?;
    let (fam, len) = match rest.split_once('_') {
        Some((f, n)) => (f, Some(n.parse::<u8>().ok()?)),
        None => (rest, None),
    };
    let fam: u8 = fam.parse().ok().filter(|f| *f == 4 || *f == 6)?;
    (len.is_none() || len <= Some(if fam == 4 { 32 } else { 128 })).then_some((fam, len))
}

/// An `address . network` pair of the set of the network's prefix length: (set, element as nft
/// prints it), the network given as `addr/len`.
pub fn pair_elem(base: &str, addr: &str, net: &str) -> (String, String) {
    let (na, n) = net.split_once('/').expect("addr/len");
    let fam = if addr.contains(':') { 6 } else { 4 };
    (pair_set(base, fam, n.parse().unwrap()), format!("{addr} . {na}"))
}

/// Sets of `base` pairs with the elements `elems` (set, element), grouped by set.
pub fn pair_sets(elems: &[(String, String)]) -> Vec<(String, Vec<String>)> {
    let mut out: std::collections::BTreeMap<String, Vec<String>> = std::collections::BTreeMap::new();
    for (set, e) in elems {
        out.entry(set.clone()).or_default().push(e.clone());
    }
    out.into_iter().collect()
}

/// The per-length pair sets named in `elems`, without elements: what is left of them once their
/// attachments are gone (the sets stay, and their rules).
pub fn emptied(elems: &[(String, Vec<String>)]) -> Vec<(String, Vec<String>)> {
    elems.iter().filter(|(s, _)| s.contains('_')).map(|(s, _)| (s.clone(), vec![])).collect()
}

/// The sets of the masquerade table `inet cnirs_masquerade2`: `masq4` and `masq6`, and the
/// exemption sets named in `elems` (set name, elements; per length, `exempt4_24`, or the previous
/// release's `exempt4`), with those elements; an exemption set named with no element is there,
/// empty (sets stay once made).
pub fn masq_sets_with<S: AsRef<str>>(elems: &[(S, Vec<String>)]) -> std::collections::BTreeMap<String, Vec<String>> {
    sets_with(&["masq4", "masq6"], "exempt", elems)
}

/// The sets of the port mapping table `inet cnirs_hostport2`: the DNAT and owner maps, and the
/// hairpin sets named in `elems` (per length, `hairpin4_32`, or the previous release's
/// `hairpin4`), with the elements `elems`; the sets not named are empty.
pub fn hostport_sets_with<S: AsRef<str>>(elems: &[(S, Vec<String>)]) -> std::collections::BTreeMap<String, Vec<String>> {
    sets_with(&["dnat4", "dnat6", "hostip4", "hostip6", "owner4", "owner6"], "hairpin", elems)
}

fn sets_with<S: AsRef<str>>(names: &[&str], pairs: &str, elems: &[(S, Vec<String>)]) -> std::collections::BTreeMap<String, Vec<String>> {
    let mut out: std::collections::BTreeMap<String, Vec<String>> = names.iter().map(|n| (n.to_string(), vec![])).collect();
    for (name, e) in elems {
        let name = name.as_ref();
        assert!(names.contains(&name) || pair_set_of(pairs, name).is_some(), "no set {name} in the layout");
        let set = out.entry(name.to_string()).or_default();
        set.extend(e.iter().cloned());
        set.sort();
    }
    out
}

/// The rules looking up the `base` pairs of family `fam` of the sets among `sets`: the previous
/// release's set's first, then one per prefix length, ascending, `line(address text, set)`
/// making the rule of a set from the masked address (`ip daddr & 255.255.255.0`, unmasked at /32
/// and /128).
fn pair_rules(sets: &std::collections::BTreeMap<String, Vec<String>>, base: &str, fam: u8, field: &str, line: impl Fn(String, &str) -> String) -> Vec<String> {
    let kw = if fam == 4 { "ip" } else { "ip6" };
    let mut found: Vec<(Option<u8>, &str)> = sets.keys().filter_map(|s| pair_set_of(base, s).filter(|(f, _)| *f == fam).map(|(_, n)| (n, s.as_str()))).collect();
    found.sort();
    found
        .into_iter()
        .map(|(n, set)| match n {
            Some(n) if n < if fam == 4 { 32 } else { 128 } => line(format!("{kw} {field} & {}", netmask(fam == 6, n)), set),
            _ => line(format!("{kw} {field}"), set),
        })
        .collect()
}

/// The chains of `inet cnirs_masquerade2` with the exemption sets `sets` (as [`masq_sets_with`]
/// gives them): one exemption rule per set, in order.
pub fn masq_chains(sets: &std::collections::BTreeMap<String, Vec<String>>) -> std::collections::BTreeMap<String, Vec<String>> {
    let mut lines = vec!["type nat hook postrouting priority srcnat; policy accept;".to_string()];
    for (fam, kw, mc) in [(4, "ip", "224.0.0.0/4"), (6, "ip6", "ff00::/8")] {
        lines.push(format!("{kw} daddr {mc} return"));
        lines.extend(pair_rules(sets, "exempt", fam, "daddr", |d, set| format!("{kw} saddr . {d} @{set} return")));
        lines.push(format!("{kw} saddr @masq{fam} masquerade"));
    }
    std::collections::BTreeMap::from([("postrouting".to_string(), lines)])
}

/// The chains of `inet cnirs_hostport2` with the hairpin sets `sets` (as [`hostport_sets_with`]
/// gives them): constant chains, and in postrouting one hairpin rule per set, in order.
pub fn hostport_chains(sets: &std::collections::BTreeMap<String, Vec<String>>) -> std::collections::BTreeMap<String, Vec<String>> {
    let lines = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<String>>();
    let mut post = lines(&["type nat hook postrouting priority srcnat; policy accept;"]);
    for (fam, kw) in [(4, "ip"), (6, "ip6")] {
        post.extend(pair_rules(sets, "hairpin", fam, "saddr", |s, set| format!("ct status dnat {kw} daddr . {s} @{set} masquerade")));
    }
    std::collections::BTreeMap::from([
        (
            "hostports".to_string(),
            lines(&[
                "dnat ip to ip daddr . meta l4proto . th dport map @hostip4",
                "meta nfproto ipv4 dnat ip to meta l4proto . th dport map @dnat4",
                "dnat ip6 to ip6 daddr . meta l4proto . th dport map @hostip6",
                "meta nfproto ipv6 dnat ip6 to meta l4proto . th dport map @dnat6",
            ]),
        ),
        (
            "prerouting".to_string(),
            lines(&["type nat hook prerouting priority dstnat; policy accept;", "fib daddr type local jump hostports"]),
        ),
        ("output".to_string(), lines(&["type nat hook output priority -100; policy accept;", "fib daddr type local jump hostports"])),
        ("postrouting".to_string(), post),
    ])
}

/// The handle of the one rule of chain `inet <table> <chain>` in `ns` whose text contains `needle`.
#[track_caller]
pub fn rule_handle(ns: &NamedNetns, table: &str, chain: &str, needle: &str) -> String {
    let text = ns.run_ok("nft", ["-a", "list", "chain", "inet", table, chain]).unwrap();
    let found: Vec<&str> = text.lines().filter(|l| l.contains(needle)).filter_map(|l| l.rsplit_once("# handle ").map(|(_, h)| h.trim())).collect();
    assert_eq!(found.len(), 1, "rules of inet {table} {chain} with {needle}:\n{text}");
    found[0].to_string()
}

/// Table `inet <table>` in `ns` holds exactly the chains `chains` and the sets `sets`.
#[track_caller]
fn assert_layout(ns: &NamedNetns, table: &str, chains: std::collections::BTreeMap<String, Vec<String>>, sets: &std::collections::BTreeMap<String, Vec<String>>) {
    let dump = || nft_table(ns, "inet", table).unwrap_or_default();
    let got = nft_sets(ns, table).unwrap_or_else(|| panic!("no table inet {table}:\n{}", nft_ruleset(ns)));
    assert_eq!(&got, sets, "sets of inet {table}:\n{}", dump());
    assert_eq!(nft_chains(ns, table).unwrap_or_default(), chains, "chains of inet {table}:\n{}", dump());
}

/// Table `inet cnirs_masquerade2` in `ns` is exactly the sets `sets` and [`masq_chains`] of them.
#[track_caller]
pub fn assert_masq_layout(ns: &NamedNetns, sets: &std::collections::BTreeMap<String, Vec<String>>) {
    assert_layout(ns, MASQ_TABLE, masq_chains(sets), sets)
}

/// Table `inet cnirs_hostport2` in `ns` is exactly the sets `sets` and [`hostport_chains`] of them.
#[track_caller]
pub fn assert_hostport_layout(ns: &NamedNetns, sets: &std::collections::BTreeMap<String, Vec<String>>) {
    assert_layout(ns, HOSTPORT_TABLE, hostport_chains(sets), sets)
}

/// What is left of attachments in our per-attachment tables (new and earlier layout) in `ns`:
/// every element of their sets and maps, and every chain of the earlier layout's kinds `m-…`,
/// `p-…`, `s-…`. Empty once every attachment is deleted (the tables and their constant chains may
/// stay).
pub fn nft_attachment_leftovers(ns: &NamedNetns) -> Vec<String> {
    let mut out = Vec::new();
    for table in PER_ATTACHMENT_TABLES {
        for (set, elems) in nft_sets(ns, table).unwrap_or_default() {
            out.extend(elems.into_iter().map(|e| format!("inet {table} {set}: element {e}")));
        }
        for chain in nft_chains(ns, table).unwrap_or_default().into_keys() {
            if ["m-", "p-", "s-"].iter().any(|p| chain.starts_with(p)) {
                out.push(format!("inet {table}: per-attachment chain {chain}"));
            }
        }
    }
    out
}

/// Every element of table `inet TABLE` in `ns` whose text contains `owner` (owner marks) or the
/// address `ip` as a whole field.
pub fn nft_elements_of(ns: &NamedNetns, table: &str, owner: &str, ip: &str) -> Vec<String> {
    let mut out = Vec::new();
    for (set, elems) in nft_sets(ns, table).unwrap_or_default() {
        for e in elems {
            let has_ip = e.split([' ', '/']).any(|w| w == ip);
            if e.contains(owner) || has_ip {
                out.push(format!("{set}: {e}"));
            }
        }
    }
    out
}

/// Every line of the firewall state of `ns` that contains `needle`: `nft list ruleset` (which also
/// shows iptables-nft's tables) and `iptables-save` / `ip6tables-save` of every table.
pub fn firewall_lines_mentioning(ns: &NamedNetns, needle: &str) -> Vec<String> {
    let mut out: Vec<String> = nft_ruleset(ns).lines().filter(|l| l.contains(needle)).map(|l| format!("nft: {}", l.trim())).collect();
    for tool in ["iptables-save", "ip6tables-save"] {
        let save = ns.run_ok(tool, std::iter::empty::<&str>()).unwrap();
        out.extend(save.lines().filter(|l| l.contains(needle)).map(|l| format!("{tool}: {l}")));
    }
    out
}

/// Every line of the firewall state of `ns` (as [`firewall_lines_mentioning`]) holding the address
/// `ip` as a whole token (`10.0.0.2` matches `10.0.0.2:80` and `10.0.0.2/32`, not `10.0.0.20`).
pub fn firewall_lines_with_addr(ns: &NamedNetns, ip: &str) -> Vec<String> {
    let v6 = ip.contains(':');
    let in_token = |c: char| if v6 { c.is_ascii_hexdigit() || c == ':' } else { c.is_ascii_digit() || c == '.' };
    let needle = if v6 { ip.split(':').find(|p| !p.is_empty()).unwrap_or(ip) } else { ip };
    firewall_lines_mentioning(ns, needle).into_iter().filter(|l| l.split(|c: char| !in_token(c)).any(|w| w == ip)).collect()
}

/// Whether any masquerade for `ip` exists in `ns`, whatever the backend: an iptables `-s <ip>/32`
/// jump or an nftables ruleset mentioning the address.
pub fn masq_present(ns: &NamedNetns, ip: &str) -> bool {
    let v6 = ip.contains(':');
    let prefix = if v6 { 128 } else { 32 };
    let ipt = nat_lines(ns, v6).iter().any(|l| l.contains(&format!("-s {ip}/{prefix} ")));
    ipt || nft_ruleset(ns).split(|c: char| !(c.is_ascii_hexdigit() || c == '.' || c == ':')).any(|w| w == ip)
}

// ---- connectivity ----

/// The sandbox host's end of the veth to an external namespace ([`wire_external_addrs`]), IPv4.
pub const HOST4: &str = "198.51.100.1";
/// The external namespace's end, IPv4 (same /24 as [`HOST4`]).
pub const EXT4: &str = "198.51.100.2";
/// The sandbox host's end, IPv6.
pub const HOST6: &str = "2001:db8:1::1";
/// The external namespace's end, IPv6 (same /64 as [`HOST6`]).
pub const EXT6: &str = "2001:db8:1::2";

/// How long a connection that must work may take.
pub const REACH_TIMEOUT: Duration = Duration::from_secs(3);
/// How long to wait before calling traffic that must be blocked (dropped) blocked.
pub const BLOCKED_TIMEOUT: Duration = Duration::from_secs(1);

/// An IP address literal.
pub fn ip_addr(s: &str) -> IpAddr {
    s.parse().unwrap_or_else(|e| panic!("{s:?}: {e}"))
}

/// A socket address from an IP address literal and a port.
pub fn sa(addr: &str, port: u16) -> SocketAddr {
    SocketAddr::new(ip_addr(addr), port)
}

/// `ping -c1 -W2 ADDR` (`-6` for IPv6) inside `ns`.
pub fn ping(ns: &NamedNetns, addr: &str) -> Result<(), String> {
    ping_within(ns, addr, Duration::from_secs(2))
}

/// One ping waiting at most `wait` (whole seconds, at least one) for the answer.
pub fn ping_within(ns: &NamedNetns, addr: &str, wait: Duration) -> Result<(), String> {
    let wait = wait.as_secs().max(1).to_string();
    let mut args = vec!["-c1", "-W", wait.as_str()];
    if addr.contains(':') {
        args.insert(0, "-6");
    }
    args.push(addr);
    let out = ns.run("ping", &args).map_err(|e| e.to_string())?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "ping {addr} from {} failed: {}{}",
            ns.name(),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

#[track_caller]
pub fn assert_ping(ns: &NamedNetns, addr: &str) {
    if let Err(e) = ping(ns, addr) {
        panic!("{e}");
    }
}

/// `ip addr add CIDR dev DEV` in `ns` for each of `cidrs`; IPv6 addresses with `nodad`, so they are
/// usable at once.
pub fn add_addrs(ns: &NamedNetns, dev: &str, cidrs: &[&str]) {
    for cidr in cidrs {
        let mut args = vec!["addr", "add", cidr, "dev", dev];
        if cidr.contains(':') {
            args.push("nodad");
        }
        ns.run_ok("ip", &args).unwrap();
    }
}

/// Wire `ext` to the sandbox host `host` with a veth pair (`<name>` in the host, `<name>p` in
/// `ext`), addresses `host_cidr` / `ext_cidr`, both ends up. `ext` gets no other route.
pub fn wire_external(host: &NamedNetns, ext: &NamedNetns, name: &str, host_cidr: &str, ext_cidr: &str) {
    wire_external_addrs(host, ext, name, &[host_cidr], &[ext_cidr]);
}

/// [`wire_external`] with several addresses on each end (IPv4 and/or IPv6). The external side
/// has no route to anything behind the host, so a container's traffic is answered only when it is
/// masqueraded (or when the test adds a route).
pub fn wire_external_addrs(host: &NamedNetns, ext: &NamedNetns, name: &str, host_cidrs: &[&str], ext_cidrs: &[&str]) {
    let peer = format!("{name}p");
    host.run_ok("ip", ["link", "add", name, "type", "veth", "peer", "name", &peer, "netns", ext.name()]).unwrap();
    add_addrs(host, name, host_cidrs);
    host.run_ok("ip", ["link", "set", name, "up"]).unwrap();
    add_addrs(ext, &peer, ext_cidrs);
    ext.run_ok("ip", ["link", "set", &peer, "up"]).unwrap();
    ext.run_ok("ip", ["link", "set", "lo", "up"]).unwrap();
}

fn io(e: std::io::Error) -> CniError {
    CniError::Io(e.to_string())
}

/// Run `f` (which makes a socket) inside the namespace at `ns`: the socket keeps that namespace.
fn in_ns<T>(ns: &Path, what: &str, f: impl FnOnce() -> std::io::Result<T>) -> Result<T, String> {
    NetNs::open(ns).and_then(|n| n.run(|| f().map_err(io))).map_err(|e| format!("{what} in {}: {e}", ns.display()))
}

/// A TCP listener bound to `addr` inside the namespace at `ns` (port 0: any free port).
#[track_caller]
pub fn tcp_listen(ns: &Path, addr: SocketAddr) -> TcpListener {
    in_ns(ns, &format!("listen on tcp {addr}"), || TcpListener::bind(addr)).unwrap_or_else(|e| panic!("{e}"))
}

/// Connect from namespace `client` to `target` (which must lead to `listener`, e.g. through DNAT)
/// and return the source address the listener saw. Fails when the connection is refused, times out
/// (`timeout`), or reaches something else than `listener`.
pub fn tcp_connect_seen(listener: &TcpListener, client: &Path, target: SocketAddr, timeout: Duration) -> Result<SocketAddr, String> {
    let _stream = in_ns(client, &format!("connect to {target}"), || TcpStream::connect_timeout(&target, timeout))?;
    // The handshake's last ACK may still be on its way to the listener: poll briefly.
    listener.set_nonblocking(true).map_err(|e| e.to_string())?;
    let deadline = std::time::Instant::now() + timeout;
    loop {
        match listener.accept() {
            Ok((_conn, peer)) => return Ok(peer),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock && std::time::Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(2));
            }
            Err(e) => {
                return Err(format!("connected to {target} from {}, but the listener got nothing: {e}", client.display()))
            }
        }
    }
}

/// [`tcp_connect_seen`] that must succeed within [`REACH_TIMEOUT`]; returns the source the
/// listener saw.
#[track_caller]
pub fn reach_tcp(listener: &TcpListener, client: &Path, target: SocketAddr) -> SocketAddr {
    tcp_connect_seen(listener, client, target, REACH_TIMEOUT).unwrap_or_else(|e| panic!("tcp to {target}: {e}"))
}

/// [`tcp_connect_seen`] that must fail within [`BLOCKED_TIMEOUT`].
#[track_caller]
pub fn no_tcp(listener: &TcpListener, client: &Path, target: SocketAddr) {
    if let Ok(peer) = tcp_connect_seen(listener, client, target, BLOCKED_TIMEOUT) {
        panic!("tcp to {target} from {} reached the container (seen from {peer}): it must not", client.display());
    }
}

/// Open a TCP connection from namespace `client` to `listen` (an address of namespace `server`)
/// and return the source address the server saw. The listener is bound inside `server` by this
/// thread (a socket keeps its namespace) before the client connects, so no second thread and no
/// waiting are needed.
pub fn tcp_source_seen(server: &Path, listen: IpAddr, client: &Path) -> Result<SocketAddr, String> {
    tcp_source_seen_within(server, listen, client, REACH_TIMEOUT)
}

/// [`tcp_source_seen`] giving up after `timeout`.
pub fn tcp_source_seen_within(server: &Path, listen: IpAddr, client: &Path, timeout: Duration) -> Result<SocketAddr, String> {
    let listener = in_ns(server, &format!("listen on {listen}"), || TcpListener::bind(SocketAddr::new(listen, 0)))?;
    let target = listener.local_addr().map_err(|e| e.to_string())?;
    tcp_connect_seen(&listener, client, target, timeout)
}

/// Traffic that must not get through, probed by [`assert_blocked`].
pub enum Blocked<'a> {
    /// A ping from the namespace to the address gets no answer.
    Ping(&'a NamedNetns, &'a str),
    /// No TCP connection from the first namespace reaches a listener on the address (any free port)
    /// bound inside the second.
    Tcp(&'a NamedNetns, &'a str, &'a NamedNetns),
}

impl Blocked<'_> {
    /// What got through, if anything, within [`BLOCKED_TIMEOUT`].
    fn leak(&self) -> Option<String> {
        match *self {
            Blocked::Ping(from, to) => {
                ping_within(from, to, BLOCKED_TIMEOUT).is_ok().then(|| format!("ping {} -> {to} got an answer", from.name()))
            }
            Blocked::Tcp(from, to, server) => tcp_source_seen_within(server.path(), ip_addr(to), from.path(), BLOCKED_TIMEOUT)
                .ok()
                .map(|seen| format!("tcp {} -> {to} connected (seen from {seen})", from.name())),
        }
    }
}

/// Every probe fails. The probes run concurrently, so the whole check waits for one
/// [`BLOCKED_TIMEOUT`], not one per probe.
#[track_caller]
pub fn assert_blocked(probes: &[Blocked]) {
    let leaks: Vec<String> = std::thread::scope(|s| {
        let handles: Vec<_> = probes.iter().map(|p| s.spawn(move || p.leak())).collect();
        handles.into_iter().filter_map(|h| h.join().unwrap()).collect()
    });
    assert!(leaks.is_empty(), "traffic that must be blocked got through:\n{}", leaks.join("\n"));
}

/// A UDP socket bound to `addr` inside the namespace at `ns`.
#[track_caller]
pub fn udp_bind(ns: &Path, addr: SocketAddr) -> UdpSocket {
    in_ns(ns, &format!("bind udp {addr}"), || UdpSocket::bind(addr)).unwrap_or_else(|e| panic!("{e}"))
}

/// Send one datagram from namespace `client` (from `src`) to `target`, without waiting for anything.
pub fn udp_send(client: &Path, src: SocketAddr, target: SocketAddr) -> Result<(), String> {
    let sock = in_ns(client, &format!("bind udp {src}"), || UdpSocket::bind(src))?;
    sock.send_to(b"probe", target).map_err(|e| format!("send to {target}: {e}"))?;
    Ok(())
}

/// A request/reply over UDP: a datagram from namespace `client` (from `src`, default any address
/// and port) to `target` must reach `server` (e.g. through DNAT), and the server's reply must come
/// back to the client *from `target`* (reverse translation). Returns the source the server saw.
pub fn udp_exchange(
    server: &UdpSocket,
    client: &Path,
    src: Option<SocketAddr>,
    target: SocketAddr,
    timeout: Duration,
) -> Result<SocketAddr, String> {
    let any: SocketAddr = if target.is_ipv4() { "0.0.0.0:0" } else { "[::]:0" }.parse().unwrap();
    let sock = in_ns(client, "bind udp", || UdpSocket::bind(src.unwrap_or(any)))?;
    sock.set_read_timeout(Some(timeout)).map_err(|e| e.to_string())?;
    server.set_read_timeout(Some(timeout)).map_err(|e| e.to_string())?;
    sock.send_to(b"request", target).map_err(|e| format!("send to {target}: {e}"))?;
    let mut buf = [0u8; 64];
    let (n, peer) = server
        .recv_from(&mut buf)
        .map_err(|e| format!("udp to {target} from {}: the server got nothing ({e})", client.display()))?;
    if &buf[..n] != b"request" {
        return Err(format!("udp server got {:?} from {peer}", &buf[..n]));
    }
    server.send_to(b"reply", peer).map_err(|e| format!("reply to {peer}: {e}"))?;
    let (n, from) = sock.recv_from(&mut buf).map_err(|e| format!("udp reply from {target}: nothing came back ({e})"))?;
    if &buf[..n] != b"reply" || from != target {
        return Err(format!("udp reply {:?} came from {from}, expected {target}", &buf[..n]));
    }
    Ok(peer)
}

/// [`udp_exchange`] (from any source) that must succeed within [`REACH_TIMEOUT`]; returns the
/// source the server saw.
#[track_caller]
pub fn reach_udp(server: &UdpSocket, client: &Path, target: SocketAddr) -> SocketAddr {
    udp_exchange(server, client, None, target, REACH_TIMEOUT).unwrap_or_else(|e| panic!("udp to {target}: {e}"))
}

/// [`udp_exchange`] (from any source) that must fail within [`BLOCKED_TIMEOUT`].
#[track_caller]
pub fn no_udp(server: &UdpSocket, client: &Path, target: SocketAddr) {
    if let Ok(peer) = udp_exchange(server, client, None, target, BLOCKED_TIMEOUT) {
        panic!("udp to {target} from {} reached the container (seen from {peer}): it must not", client.display());
    }
}

// ---- results ----

/// `ips[].address` of a CNI result.
pub fn result_addrs(result: &Value) -> Vec<String> {
    result["ips"].as_array().into_iter().flatten().filter_map(|i| i["address"].as_str().map(String::from)).collect()
}

/// The first address of the family (`v6`) in the result, without its prefix length.
pub fn result_ip(result: &Value, v6: bool) -> String {
    result_addrs(result)
        .into_iter()
        .map(|a| a.split('/').next().unwrap_or_default().to_string())
        .find(|a| a.contains(':') == v6)
        .unwrap_or_else(|| panic!("no IPv{} address in result {result}", if v6 { 6 } else { 4 }))
}

/// Recursively replace host veth names (`veth` + 8 hex) by `<veth>`: they are random.
pub fn mask_veth_names(v: &Value) -> Value {
    match v {
        Value::String(s) if is_host_veth_name(s) => Value::String("<veth>".into()),
        Value::String(s) => {
            // inside longer text (error messages, `ip` output keys like "link")
            let mut out = String::new();
            let mut rest = s.as_str();
            while let Some(pos) = rest.find("veth") {
                out.push_str(&rest[..pos]);
                let cand = &rest[pos..];
                if cand.len() >= 12 && is_host_veth_name(&cand[..12]) {
                    out.push_str("<veth>");
                    rest = &cand[12..];
                } else {
                    out.push_str("veth");
                    rest = &cand[4..];
                }
            }
            out.push_str(rest);
            Value::String(out)
        }
        Value::Array(a) => Value::Array(a.iter().map(mask_veth_names).collect()),
        Value::Object(o) => Value::Object(o.iter().map(|(k, x)| (k.clone(), mask_veth_names(x))).collect()),
        other => other.clone(),
    }
}
