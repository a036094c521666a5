//! The benchmarked chains and the per-container runtime parameters.

use std::path::Path;

use serde_json::{json, Map, Value};

use crate::runner::RuntimeConf;

/// Network name of every benchmark conflist.
pub const NETWORK: &str = "cnibench";
/// Bridge the chain creates in the sandbox host.
pub const BRIDGE: &str = "cnibench0";
/// host-local range (room for 65k containers).
pub const SUBNET: &str = "10.88.0.0/16";
/// First published host port; container `i` publishes `BASE + 2i` and `BASE + 2i + 1`.
pub const HOST_PORT_BASE: u32 = 20000;
pub const IPAM: &str = "host-local";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scenario {
    /// bridge + host-local, isGateway, ipMasq.
    Bridge,
    /// bridge + portmap, 2 published TCP ports per container.
    BridgePortmap,
    /// bridge + portmap + isolation (isolation only where the binary exists).
    Full,
}

impl Scenario {
    pub fn parse(s: &str) -> Option<Scenario> {
        match s {
            "bridge" => Some(Scenario::Bridge),
            "bridge-portmap" => Some(Scenario::BridgePortmap),
            "full" => Some(Scenario::Full),
            _ => None,
        }
    }

    pub fn name(&self) -> &'static str {
        match self {
            Scenario::Bridge => "bridge",
            Scenario::BridgePortmap => "bridge-portmap",
            Scenario::Full => "full",
        }
    }

    /// The plugin types wanted, in chain order.
    pub fn wanted(&self) -> &'static [&'static str] {
        match self {
            Scenario::Bridge => &["bridge"],
            Scenario::BridgePortmap => &["bridge", "portmap"],
            Scenario::Full => &["bridge", "portmap", "isolation"],
        }
    }

    /// The chain that runs from `dir` and notes on what was left out. Only `isolation` may be left
    /// out (the reference has none, ours may not be built yet); any other missing binary is an error.
    pub fn chain_for(&self, dir: &Path) -> Result<(Vec<String>, Vec<String>), String> {
        let mut chain = Vec::new();
        let mut notes = Vec::new();
        let mut required: Vec<&str> = self.wanted().to_vec();
        required.push(IPAM);
        for p in required {
            if dir.join(p).is_file() {
                if p != IPAM {
                    chain.push(p.to_string());
                }
            } else if p == "isolation" {
                notes.push(format!(
                    "no `isolation` binary in {}: the full chain runs WITHOUT isolation on this side",
                    dir.display()
                ));
            } else {
                return Err(format!("plugin binary `{p}` not found in {} (build it first)", dir.display()));
            }
        }
        Ok((chain, notes))
    }
}

/// The conflist for `chain`, host-local leases under `data_dir`.
pub fn conflist(chain: &[String], cni_version: &str, data_dir: &Path) -> Value {
    let plugins: Vec<Value> = chain
        .iter()
        .map(|p| match p.as_str() {
            "bridge" => json!({
                "type": "bridge", "bridge": BRIDGE, "isGateway": true, "ipMasq": true,
                "ipam": {"type": IPAM, "ranges": [[{"subnet": SUBNET}]], "dataDir": data_dir}
            }),
            "portmap" => json!({"type": "portmap", "capabilities": {"portMappings": true}}),
            other => json!({"type": other}),
        })
        .collect();
    json!({"cniVersion": cni_version, "name": NETWORK, "plugins": plugins})
}

/// Container id of container `i` in round `round`.
pub fn container_id(round: usize, i: usize) -> String {
    format!("cnibench-r{round}-c{i:05}")
}

/// The runtime parameters of container `i` (2 published ports when `portmap` is in the chain).
pub fn runtime_conf(chain: &[String], round: usize, i: usize, netns: &Path) -> RuntimeConf {
    let mut rc = RuntimeConf::new(container_id(round, i), netns.to_string_lossy(), "eth0");
    if chain.iter().any(|p| p == "portmap") {
        let base = HOST_PORT_BASE + 2 * i as u32;
        let mut caps = Map::new();
        caps.insert(
            "portMappings".into(),
            json!([
                {"hostPort": base, "containerPort": 80, "protocol": "tcp"},
                {"hostPort": base + 1, "containerPort": 443, "protocol": "tcp"}
            ]),
        );
        rc.capability_args = caps;
    }
    rc
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conflists() {
        let chain = vec!["bridge".to_string(), "portmap".to_string()];
        let v = conflist(&chain, "1.0.0", Path::new("/tmp/x/ipam"));
        assert_eq!(v["plugins"][0]["ipMasq"], true);
        assert_eq!(v["plugins"][0]["ipam"]["dataDir"], "/tmp/x/ipam");
        assert_eq!(v["plugins"][1]["capabilities"]["portMappings"], true);
        crate::runner::NetworkConfigList::from_json(&v).unwrap();
        let rc = runtime_conf(&chain, 1, 3, Path::new("/run/netns/x"));
        assert_eq!(rc.capability_args["portMappings"][1]["hostPort"], 20007);
        assert_eq!(rc.container_id, "cnibench-r1-c00003");
        let rc = runtime_conf(&chain[..1], 1, 3, Path::new("/run/netns/x"));
        assert!(rc.capability_args.is_empty());
        assert_eq!(Scenario::parse("full"), Some(Scenario::Full));
        assert_eq!(Scenario::parse("x"), None);
    }
}
