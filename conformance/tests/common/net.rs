//! Kernel-state helpers for plugin tests: links, addresses, sysctls, IPAM leases, NAT rules and
//! connectivity, all read inside sandbox namespaces with `ip -j`, `iptables-save`, `nft` and
//! `/proc/sys`.

use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream};
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

/// `addr/prefix` of every address on `dev` in `ns` (`family` "-4", "-6" or "" for both).
pub fn addrs(ns: &NamedNetns, family: &str, dev: &str) -> Vec<String> {
    let mut args = vec![];
    if !family.is_empty() {
        args.push(family);
    }
    args.extend(["addr", "show", "dev", dev]);
    let v = ns.ip_json(&args).unwrap();
    v.as_array()
        .into_iter()
        .flatten()
        .flat_map(|l| l["addr_info"].as_array().cloned().unwrap_or_default())
        .map(|a| format!("{}/{}", a["local"].as_str().unwrap_or_default(), a["prefixlen"]))
        .collect()
}

/// Addresses on `dev` carrying `flag` (e.g. `tentative`), as `ip -j addr` reports them.
pub fn addrs_flagged(ns: &NamedNetns, dev: &str, flag: &str) -> Vec<String> {
    let v = ns.ip_json(["addr", "show", "dev", dev]).unwrap();
    v.as_array()
        .into_iter()
        .flatten()
        .flat_map(|l| l["addr_info"].as_array().cloned().unwrap_or_default())
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

/// The reference `utils.FormatChainName`: `("CNI-" + hex(sha512(network + containerID)))[:28]`.
pub fn masq_chain_name(network: &str, container_id: &str) -> String {
    let digest = Sha512::digest(format!("{network}{container_id}").as_bytes());
    let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
    let mut s = format!("CNI-{hex}");
    s.truncate(28);
    s
}

/// The reference ipMasq rule comment as `iptables-save` prints it: `"name: \"<net>\" id: \"<cid>\""`.
pub fn masq_comment_saved(network: &str, container_id: &str) -> String {
    format!(r#""name: \"{network}\" id: \"{container_id}\"""#)
}

/// `iptables-save -t nat` (`ip6tables-save` with `v6`) in `ns`, as rule lines: chain declarations
/// without counters (`:NAME POLICY`) and `-A` rules; comments and `*nat`/`COMMIT` dropped.
pub fn nat_lines(ns: &NamedNetns, v6: bool) -> Vec<String> {
    let tool = if v6 { "ip6tables-save" } else { "iptables-save" };
    let out = ns.run_ok(tool, ["-t", "nat"]).unwrap();
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

/// Whether any masquerade for `ip` exists in `ns`, whatever the backend: an iptables `-s <ip>/32`
/// jump or an nftables ruleset mentioning the address.
pub fn masq_present(ns: &NamedNetns, ip: &str) -> bool {
    let v6 = ip.contains(':');
    let prefix = if v6 { 128 } else { 32 };
    let ipt = nat_lines(ns, v6).iter().any(|l| l.contains(&format!("-s {ip}/{prefix} ")));
    ipt || nft_ruleset(ns).split(|c: char| !(c.is_ascii_hexdigit() || c == '.' || c == ':')).any(|w| w == ip)
}

// ---- connectivity ----

/// `ping -c1 -W2 ADDR` (`-6` for IPv6) inside `ns`.
pub fn ping(ns: &NamedNetns, addr: &str) -> Result<(), String> {
    let mut args = vec!["-c1", "-W2"];
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

/// Wire `ext` to the sandbox host `host` with a veth pair (`<name>` in the host, `<name>p` in
/// `ext`), addresses `host_cidr` / `ext_cidr`, both ends up. `ext` gets no other route.
pub fn wire_external(host: &NamedNetns, ext: &NamedNetns, name: &str, host_cidr: &str, ext_cidr: &str) {
    let peer = format!("{name}p");
    host.run_ok("ip", ["link", "add", name, "type", "veth", "peer", "name", &peer, "netns", ext.name()]).unwrap();
    host.run_ok("ip", ["addr", "add", host_cidr, "dev", name]).unwrap();
    host.run_ok("ip", ["link", "set", name, "up"]).unwrap();
    ext.run_ok("ip", ["addr", "add", ext_cidr, "dev", &peer]).unwrap();
    ext.run_ok("ip", ["link", "set", &peer, "up"]).unwrap();
    ext.run_ok("ip", ["link", "set", "lo", "up"]).unwrap();
}

fn io(e: std::io::Error) -> CniError {
    CniError::Io(e.to_string())
}

/// Open a TCP connection from namespace `client` to `listen` (an address of namespace `server`)
/// and return the source address the server saw. The listener is bound inside `server` by this
/// thread (a socket keeps its namespace); the connection is accepted after `connect` returned, so
/// no second thread and no waiting are needed.
pub fn tcp_source_seen(server: &Path, listen: IpAddr, client: &Path) -> Result<SocketAddr, String> {
    let listener = NetNs::open(server)
        .and_then(|ns| ns.run(|| TcpListener::bind(SocketAddr::new(listen, 0)).map_err(io)))
        .map_err(|e| format!("listen on {listen} in {}: {e}", server.display()))?;
    let target = listener.local_addr().map_err(|e| e.to_string())?;
    let _stream = NetNs::open(client)
        .and_then(|ns| ns.run(|| TcpStream::connect_timeout(&target, Duration::from_secs(3)).map_err(io)))
        .map_err(|e| format!("connect to {target} from {}: {e}", client.display()))?;
    let (_conn, peer) = listener.accept().map_err(|e| format!("accept on {target}: {e}"))?;
    Ok(peer)
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
