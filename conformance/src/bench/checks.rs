//! Post-run checks: after every container of a round was deleted, nothing may be left behind.

use std::collections::{HashMap, HashSet};
use std::net::IpAddr;
use std::path::Path;

use serde_json::Value;

use super::scenario::NETWORK;
use crate::runner::Runtime;
use crate::sandbox::Sandbox;

/// What the ADDs of one round handed out.
#[derive(Debug, Default)]
pub struct Handed {
    /// Container id → its addresses (from the ADD results).
    pub ips: Vec<(String, Vec<IpAddr>)>,
    /// Host-side interface names from the ADD results (veths).
    pub host_ifaces: HashSet<String>,
}

impl Handed {
    /// Pull addresses and host interfaces out of one ADD result.
    pub fn add_result(&mut self, container_id: &str, result: &Value, bridge: &str) {
        let ips = result["ips"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|ip| ip["address"].as_str())
                    .filter_map(|s| s.split('/').next()?.parse().ok())
                    .collect()
            })
            .unwrap_or_default();
        self.ips.push((container_id.to_string(), ips));
        if let Some(ifs) = result["interfaces"].as_array() {
            for i in ifs {
                let in_container = i.get("sandbox").and_then(Value::as_str).is_some_and(|s| !s.is_empty());
                if let Some(name) = i["name"].as_str() {
                    if !in_container && name != bridge {
                        self.host_ifaces.insert(name.to_string());
                    }
                }
            }
        }
    }

    /// Every container got at least one address, and no address twice.
    pub fn unique_ips(&self) -> Vec<String> {
        let mut seen: HashMap<IpAddr, &str> = HashMap::new();
        let mut bad = Vec::new();
        for (cid, ips) in &self.ips {
            if ips.is_empty() {
                bad.push(format!("{cid}: ADD result has no IP address"));
            }
            for ip in ips {
                if let Some(other) = seen.insert(*ip, cid) {
                    bad.push(format!("IP {ip} handed to both {other} and {cid}"));
                }
            }
        }
        bad
    }

    fn all_ips(&self) -> HashSet<IpAddr> {
        self.ips.iter().flat_map(|(_, v)| v.iter().copied()).collect()
    }
}

/// Chains the reference plugins (and our iptables backend) keep between containers on purpose.
const SHARED_CHAIN_PREFIXES: &[&str] = &["CNI-HOSTPORT-", "CNI-ISOLATION-", "CNI-FORWARD", "CNI-ADMIN"];

/// Our nftables tables (family inet) whose sets and maps hold nothing but per-attachment elements:
/// masquerade and port mappings, in the current layout (`…2`: data maps and hash sets of address
/// pairs keyed by the containers' addresses and ports; sets of the previous release's interval
/// sets on tables it made) and in the earlier one (verdict maps into a chain per
/// attachment, only torn down now). After every DEL they hold no element and no per-attachment
/// chain. (`cnirs_isolation` keeps per-bridge state while the bridge exists.)
pub const NFT_PER_ATTACHMENT_TABLES: &[&str] = &["cnirs_masquerade2", "cnirs_hostport2", "cnirs_masquerade", "cnirs_hostport"];

/// Name prefixes of the earlier layout's per-attachment chains (`m-<net>-<key>`, `p-…`, `s-…`).
const NFT_ATTACHMENT_CHAIN_PREFIXES: &[&str] = &["m-", "p-", "s-"];

/// Check the sandbox after all DELs of a round; one message per violation.
pub fn after_del(sb: &Sandbox, rt: &Runtime, data_dir: &Path, handed: &Handed) -> Vec<String> {
    let mut bad = handed.unique_ips();

    // Leases: host-local keeps one file per address in <dataDir>/<network>/.
    let lease_dir = data_dir.join(NETWORK);
    if let Ok(entries) = std::fs::read_dir(&lease_dir) {
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if name.parse::<IpAddr>().is_ok() {
                bad.push(format!("lease not released: {}", lease_dir.join(&name).display()));
            }
        }
    }

    // Result cache.
    match rt.cached_attachments(NETWORK) {
        Ok(left) => {
            for a in left {
                bad.push(format!("result cache entry left for {} {}", a.container_id, a.ifname));
            }
        }
        Err(e) => bad.push(format!("cannot list the result cache: {e}")),
    }

    // veths in the host.
    match sb.ip_json(["link", "show", "type", "veth"]) {
        Ok(Value::Array(links)) => {
            for l in links {
                bad.push(format!("veth left in the host: {}", l["ifname"].as_str().unwrap_or("?")));
            }
        }
        Ok(_) => {}
        Err(e) => bad.push(format!("cannot list host links: {e}")),
    }

    // Firewall state: no per-container chain, and no container address, id or host veth anywhere.
    let ips = handed.all_ips();
    let ids: Vec<&str> = handed.ips.iter().map(|(c, _)| c.as_str()).collect();
    for (tool, args) in [("iptables-save", &[][..]), ("ip6tables-save", &[][..]), ("nft", &["list", "ruleset"][..])] {
        if crate::bench::probe::which(tool).is_none() {
            continue;
        }
        let out = match sb.run(tool, args) {
            Ok(o) => o,
            Err(e) => {
                bad.push(format!("cannot run {tool}: {e}"));
                continue;
            }
        };
        if !out.status.success() {
            // e.g. ip6tables without the kernel module: nothing can be left there.
            continue;
        }
        let text = String::from_utf8_lossy(&out.stdout);
        bad.extend(firewall_leftovers(tool, &text, &ips, &ids, &handed.host_ifaces));
    }

    // Our nftables tables: no element at all (an owner's marks name no address or id, so the
    // text scan above cannot be the only check), no per-attachment chain.
    if crate::bench::probe::which("nft").is_some() {
        match sb.run("nft", ["-j", "list", "ruleset"]) {
            Ok(out) if out.status.success() => match serde_json::from_slice::<Value>(&out.stdout) {
                Ok(v) => bad.extend(nft_attachment_leftovers(&v)),
                Err(e) => bad.push(format!("nft -j list ruleset: not JSON: {e}")),
            },
            Ok(out) => bad.push(format!("nft -j list ruleset failed: {}", String::from_utf8_lossy(&out.stderr).trim())),
            Err(e) => bad.push(format!("cannot run nft: {e}")),
        }
    }
    bad
}

/// Violations in `nft -j list ruleset` output: any element of a set or map, and any chain of the
/// earlier layout's per-attachment kinds, in [`NFT_PER_ATTACHMENT_TABLES`].
pub fn nft_attachment_leftovers(ruleset: &Value) -> Vec<String> {
    let mut bad = Vec::new();
    for obj in ruleset["nftables"].as_array().into_iter().flatten() {
        let (kind, o) = match obj.as_object().and_then(|m| m.iter().next()) {
            Some((k, o)) if ["set", "map", "chain"].contains(&k.as_str()) => (k.as_str(), o),
            _ => continue,
        };
        let table = o["table"].as_str().unwrap_or_default();
        if o["family"] != "inet" || !NFT_PER_ATTACHMENT_TABLES.contains(&table) {
            continue;
        }
        let name = o["name"].as_str().unwrap_or_default();
        if kind == "chain" {
            if NFT_ATTACHMENT_CHAIN_PREFIXES.iter().any(|p| name.starts_with(p)) {
                bad.push(format!("nft: per-attachment chain left: inet {table} {name}"));
            }
            continue;
        }
        let n = o["elem"].as_array().map_or(0, Vec::len);
        if n > 0 {
            bad.push(format!("nft: {n} element(s) left in {kind} inet {table} {name}: {}", o["elem"]));
        }
    }
    bad
}

/// Violations in a firewall dump (`iptables-save` or `nft list ruleset` text).
pub fn firewall_leftovers(
    tool: &str,
    text: &str,
    ips: &HashSet<IpAddr>,
    ids: &[&str],
    ifaces: &HashSet<String>,
) -> Vec<String> {
    let mut bad = Vec::new();
    for line in text.lines() {
        let t = line.trim();
        if let Some(chain) =
            t.strip_prefix(":CNI-").map(|rest| format!("CNI-{}", rest.split_whitespace().next().unwrap_or("")))
        {
            if !SHARED_CHAIN_PREFIXES.iter().any(|p| chain.starts_with(p)) {
                bad.push(format!("{tool}: per-container chain left: {chain}"));
                continue;
            }
        }
        if let Some(id) = ids.iter().find(|id| t.contains(*id)) {
            bad.push(format!("{tool}: rule/element naming container {id} left: {t}"));
            continue;
        }
        let mut hit = None;
        for tok in t.split(|c: char| c.is_whitespace() || ",{}()[]\"".contains(c)).filter(|s| !s.is_empty()) {
            if ifaces.contains(tok) {
                hit = Some(format!("host veth {tok}"));
                break;
            }
            if let Some(ip) = token_ip(tok) {
                if ips.contains(&ip) {
                    hit = Some(format!("container address {ip}"));
                    break;
                }
            }
        }
        if let Some(what) = hit {
            bad.push(format!("{tool}: rule/element with {what} left: {t}"));
        }
    }
    bad
}

/// An address in a token like `10.1.2.3`, `10.1.2.3/32`, `10.1.2.3:80`, `2001:db8::1/128`.
fn token_ip(tok: &str) -> Option<IpAddr> {
    let base = tok.split('/').next()?;
    if let Ok(ip) = base.parse() {
        return Some(ip);
    }
    let (host, port) = base.rsplit_once(':')?;
    port.parse::<u16>().ok()?;
    host.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn handed_and_unique() {
        let mut h = Handed::default();
        let r = json!({"interfaces": [{"name": "cnibench0"}, {"name": "veth1"}, {"name": "eth0", "sandbox": "/run/netns/x"}],
                       "ips": [{"address": "10.88.0.2/16"}]});
        h.add_result("a", &r, "cnibench0");
        h.add_result("b", &r, "cnibench0");
        assert_eq!(h.host_ifaces, HashSet::from(["veth1".to_string()]));
        let bad = h.unique_ips();
        assert_eq!(bad.len(), 1, "{bad:?}");
        assert!(bad[0].contains("10.88.0.2"));
    }

    #[test]
    fn leftovers() {
        let ips = HashSet::from(["10.88.0.2".parse().unwrap()]);
        let ifaces = HashSet::from(["veth1".to_string()]);
        let ids = ["cnibench-r0-c00001"];
        let clean = "*nat\n:CNI-HOSTPORT-DNAT - [0:0]\n:POSTROUTING ACCEPT [0:0]\n-A PREROUTING -m addrtype --dst-type LOCAL -j CNI-HOSTPORT-DNAT\nCOMMIT\n";
        assert!(firewall_leftovers("iptables-save", clean, &ips, &ids, &ifaces).is_empty());
        let dirty = ":CNI-0123456789abcdef01234567 - [0:0]\n-A CNI-DN-x -p tcp -j DNAT --to-destination 10.88.0.2:80\n";
        assert_eq!(firewall_leftovers("iptables-save", dirty, &ips, &ids, &ifaces).len(), 2);
        let nft = "table inet cnirs_masquerade {\n  set addrs { elements = { 10.88.0.2 } }\n  comment \"cnibench-r0-c00001\"\n iifname \"veth1\" }";
        assert_eq!(firewall_leftovers("nft", nft, &ips, &ids, &ifaces).len(), 3);
        let nft2 = "table inet cnirs_masquerade2 {\n\tmap masq4 {\n\t\ttype ipv4_addr : mark . mark . mark\n\t\telements = { 10.88.0.2 : 0x00000001 . 0x00000002 . 0x00000003 }\n\t}\n\tset exempt4_16 {\n\t\ttype ipv4_addr . ipv4_addr\n\t\telements = { 10.88.0.2 . 10.88.0.0 }\n\t}\n}";
        assert_eq!(firewall_leftovers("nft", nft2, &ips, &ids, &ifaces).len(), 2);
        let nft3 = "table inet cnirs_hostport2 {\n\tmap dnat4 {\n\t\telements = { tcp . 20000 : 10.88.0.2 . 80,\n\t\t\t     tcp . 20001 : 10.88.0.3 . 80 }\n\t}\n}";
        assert_eq!(firewall_leftovers("nft", nft3, &ips, &ids, &ifaces).len(), 1);
        assert_eq!(token_ip("10.88.0.2:80"), Some("10.88.0.2".parse().unwrap()));
        assert_eq!(token_ip("2001:db8::1/128"), Some("2001:db8::1".parse().unwrap()));
        assert_eq!(token_ip("dport"), None);
    }

    #[test]
    fn nft_leftovers() {
        let set = |table: &str, kind: &str, name: &str, elem: Value| {
            let mut o = json!({"family": "inet", "table": table, "name": name, "type": "ipv4_addr"});
            if !elem.is_null() {
                o["elem"] = elem;
            }
            json!({ kind: o })
        };
        let chain = |table: &str, name: &str| json!({"chain": {"family": "inet", "table": table, "name": name}});
        // after every DEL: the tables and their chains, empty sets (per prefix length, and the
        // previous release's interval set); isolation's elements
        let clean = json!({"nftables": [
            {"metainfo": {"version": "1.0.6"}},
            {"table": {"family": "inet", "name": "cnirs_masquerade2"}},
            set("cnirs_masquerade2", "map", "masq4", Value::Null),
            set("cnirs_masquerade2", "set", "exempt4", json!([])),
            set("cnirs_masquerade2", "set", "exempt4_16", json!([])),
            set("cnirs_hostport2", "set", "hairpin4_32", Value::Null),
            chain("cnirs_masquerade2", "postrouting"),
            set("cnirs_hostport2", "map", "dnat4", Value::Null),
            chain("cnirs_hostport2", "hostports"),
            chain("cnirs_hostport2", "prerouting"),
            chain("cnirs_hostport", "postrouting"),
            set("cnirs_isolation", "map", "bridges", json!([["cnibench0", {"goto": {"target": "b-x"}}]])),
            set("other", "set", "s", json!(["10.88.0.2"])),
        ]});
        assert!(nft_attachment_leftovers(&clean).is_empty(), "{:?}", nft_attachment_leftovers(&clean));
        let dirty = json!({"nftables": [
            // an owner element (its marks name no address of the round), exemptions (per length,
            // in the previous release's interval set), a DNAT element
            set("cnirs_masquerade2", "map", "masq4", json!([["10.88.0.9", {"concat": [1, 2, 3]}]])),
            set("cnirs_masquerade2", "set", "exempt4_16", json!([{"concat": ["10.88.0.9", "10.88.0.0"]}])),
            set("cnirs_masquerade2", "set", "exempt4", json!([{"concat": ["10.88.0.8", {"prefix": {"addr": "10.88.0.0", "len": 16}}]}])),
            set("cnirs_hostport2", "map", "dnat4", json!([[{"concat": ["tcp", 20000]}, {"concat": ["10.88.0.9", 80]}]])),
            // the earlier layout: a verdict map element and the chain it leads to
            set("cnirs_masquerade", "map", "masq4", json!([["10.88.0.9", {"goto": {"target": "m-0123456789ab-0123456789abcdef"}}]])),
            chain("cnirs_masquerade", "m-0123456789ab-0123456789abcdef"),
            chain("cnirs_hostport", "p-0123456789ab-0123456789abcdef"),
            chain("cnirs_hostport", "s-0123456789ab-0123456789abcdef"),
        ]});
        let bad = nft_attachment_leftovers(&dirty);
        assert_eq!(bad.len(), 8, "{bad:#?}");
        assert!(bad[0].contains("inet cnirs_masquerade2 masq4"), "{bad:?}");
        assert!(bad[1].contains("inet cnirs_masquerade2 exempt4_16"), "{bad:?}");
        assert!(bad[2].contains("inet cnirs_masquerade2 exempt4"), "{bad:?}");
        assert!(bad[7].contains("s-0123456789ab"), "{bad:?}");
    }
}
