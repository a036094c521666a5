//! A sandbox with a runtime for our plugins ([`Lab`]) and the assertions on plugin failures that the
//! plugin test files share.

use std::path::PathBuf;

use conformance::plugins::our_plugins;
use conformance::runner::{NetworkConfigList, PluginFailure, RunError, RuntimeConf};
use conformance::sandbox::NamedNetns;
use conformance::{require_root, ContainerNs, PluginOutput, Runtime, Sandbox};
use serde_json::{json, Value};

use super::net::*;

/// A sandbox with a runtime for our plugins (bridge + host-local, or the named ones).
pub struct Lab {
    pub sb: Sandbox,
    pub rt: Runtime,
}

impl Lab {
    /// Our bridge + host-local.
    pub fn new() -> Lab {
        Lab::with_plugins(&["bridge", "host-local"])
    }

    /// Fails (never skips) without root or without any of `plugins` built.
    pub fn with_plugins(plugins: &[&str]) -> Lab {
        require_root();
        let dir = our_plugins(plugins);
        let sb = Sandbox::new().unwrap();
        let rt = sb.runtime(&dir);
        Lab { sb, rt }
    }

    pub fn host(&self) -> &NamedNetns {
        self.sb.host()
    }

    pub fn container(&self) -> ContainerNs {
        self.sb.container().unwrap()
    }

    /// host-local's dataDir, private to this sandbox.
    pub fn data_dir(&self) -> PathBuf {
        self.sb.tempdir().join("ipam")
    }

    pub fn ipam(&self, ranges: Value) -> Value {
        json!({"type": "host-local", "ranges": ranges, "dataDir": self.data_dir()})
    }

    /// host-local with one IPv4 subnet.
    pub fn ipam4(&self, subnet: &str) -> Value {
        self.ipam(json!([[{"subnet": subnet}]]))
    }

    /// A one-plugin conflist: `{"type": "bridge"}` plus `fields`.
    pub fn list(&self, version: &str, name: &str, fields: Value) -> NetworkConfigList {
        NetworkConfigList::from_json(&list_json(version, name, fields)).unwrap()
    }

    /// A conflist of `{"type": "bridge"}` plus `bridge_fields`, followed by `chained` plugin objects.
    pub fn chain(&self, version: &str, name: &str, bridge_fields: Value, chained: &[Value]) -> NetworkConfigList {
        let mut v = list_json(version, name, bridge_fields);
        v["plugins"].as_array_mut().unwrap().extend(chained.iter().cloned());
        NetworkConfigList::from_json(&v).unwrap()
    }

    pub fn rc(&self, cid: &str, c: &ContainerNs) -> RuntimeConf {
        RuntimeConf::new(cid, c.path().to_str().unwrap(), "eth0")
    }

    #[track_caller]
    pub fn add(&self, l: &NetworkConfigList, rc: &RuntimeConf) -> Value {
        self.rt.add_list(l, rc).unwrap_or_else(|e| panic!("ADD {} failed: {e}", rc.container_id))
    }

    #[track_caller]
    pub fn del(&self, l: &NetworkConfigList, rc: &RuntimeConf) {
        self.rt.del_list(l, rc).unwrap_or_else(|e| panic!("DEL {} failed: {e}", rc.container_id))
    }

    #[track_caller]
    pub fn check(&self, l: &NetworkConfigList, rc: &RuntimeConf) {
        self.rt.check_list(l, rc).unwrap_or_else(|e| panic!("CHECK {} failed: {e}", rc.container_id))
    }

    /// Forget the cached result of `(l, rc)`, so that DEL runs without prevResult and GC does not
    /// DEL the attachment itself.
    pub fn forget(&self, l: &NetworkConfigList, rc: &RuntimeConf) {
        std::fs::remove_file(self.rt.cache_path(&l.name, rc)).unwrap();
    }

    pub fn leases(&self, network: &str) -> Vec<String> {
        lease_files(&self.data_dir(), network)
    }

    /// Raw invocation of our plugin `plugin`.
    pub fn raw(&self, plugin: &str, command: &str, config: &[u8], env: &[(&str, &str)]) -> PluginOutput {
        self.rt.exec_plugin(plugin, command, config, env).unwrap()
    }

    pub fn host_veths(&self) -> Vec<String> {
        links_of_kind(self.host(), "veth")
    }

    /// Nothing of network `net` is left in the host: no veth (other than `keep`), no lease, no
    /// masquerade of any address starting with `prefix` (iptables or nftables), and no element
    /// (nor chain of the earlier layout) in our per-attachment nftables tables.
    #[track_caller]
    pub fn assert_nothing_left(&self, net: &str, prefix: &str, keep: &[&str]) {
        let veths: Vec<String> = self.host_veths().into_iter().filter(|v| !keep.contains(&v.as_str())).collect();
        assert!(veths.is_empty(), "veths left in the host: {veths:?}");
        assert!(self.leases(net).is_empty(), "leases left: {:?}", self.leases(net));
        let nat: Vec<String> = cni_nat_lines(self.host(), false);
        assert!(nat.is_empty(), "iptables nat rules left: {nat:#?}");
        let nft = nft_ruleset(self.host());
        assert!(!nft.contains(prefix), "nftables rules mentioning {prefix} left:\n{nft}");
        let left = nft_attachment_leftovers(self.host());
        assert!(left.is_empty(), "nftables attachment state left: {left:#?}\n{nft}");
    }
}

/// `{"cniVersion", "name", "plugins": [{"type": "bridge", ...fields}]}`.
pub fn list_json(version: &str, name: &str, fields: Value) -> Value {
    let mut plugin = json!({"type": "bridge"});
    for (k, v) in fields.as_object().expect("bridge fields are an object") {
        plugin[k] = v.clone();
    }
    json!({"cniVersion": version, "name": name, "plugins": [plugin]})
}

/// The plugin failure behind `r`, which must be an error with a CNI error object on stdout.
#[track_caller]
pub fn failure<T: std::fmt::Debug>(r: Result<T, RunError>, what: &str) -> PluginFailure {
    let err = r.expect_err(&format!("{what}: expected a failure"));
    let p = err.plugin_failure().unwrap_or_else(|| panic!("{what}: not a plugin failure: {err}")).clone();
    assert!(p.exit_code.is_some_and(|c| c != 0), "{what}: exit code {:?}", p.exit_code);
    assert!(p.error.is_some(), "{what}: no error object on stdout: {:?} (stderr {:?})", p.stdout, p.stderr);
    p
}

pub fn code_of(p: &PluginFailure) -> u32 {
    p.error.as_ref().map(|e| e.code).unwrap_or_default()
}

pub fn text_of(p: &PluginFailure) -> String {
    p.error.as_ref().map(|e| e.to_string()).unwrap_or_default()
}

/// The error object of a raw invocation that must fail with `code`.
#[track_caller]
pub fn expect_code(out: &PluginOutput, code: u32, what: &str) -> Value {
    let desc = format!("{what}: exit {:?}, stdout {:?}, stderr {:?}", out.exit_code(), out.stdout_str(), out.stderr_str());
    assert!(!out.success(), "expected a failure: {desc}");
    let obj = out.json().unwrap_or_else(|| panic!("stdout is not JSON: {desc}"));
    let parsed = out.error_object().unwrap_or_else(|| panic!("not an error object: {desc}"));
    assert!(obj["msg"].is_string(), "no msg: {desc}");
    assert_eq!(parsed.code, code, "{desc}");
    obj
}

/// A raw invocation that must succeed.
#[track_caller]
pub fn expect_ok(out: &PluginOutput, what: &str) {
    assert!(out.success(), "{what} failed: exit {:?}, stdout {:?}, stderr {:?}", out.exit_code(), out.stdout_str(), out.stderr_str());
}

pub fn env_of(rc: &RuntimeConf) -> Vec<(&'static str, String)> {
    rc.env()
}

pub fn refs<'a>(env: &'a [(&'static str, String)]) -> Vec<(&'static str, &'a str)> {
    env.iter().map(|(k, v)| (*k, v.as_str())).collect()
}
