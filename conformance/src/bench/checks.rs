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
        assert_eq!(token_ip("10.88.0.2:80"), Some("10.88.0.2".parse().unwrap()));
        assert_eq!(token_ip("2001:db8::1/128"), Some("2001:db8::1".parse().unwrap()));
        assert_eq!(token_ip("dport"), None);
    }
}
