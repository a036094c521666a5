//! A libcni-like runtime on JSON, independent of plugin internals.
//!
//! Behaviour mirrored from libcni (libcni/api.go), including where it surprises:
//! - ADD runs the plugins in order, each getting the previous result as `prevResult`; the final result
//!   is cached. If plugin k fails, **no DEL is run automatically**: the runtime is expected to call
//!   [`Runtime::del_list`] later (the spec's "ADD is eventually followed by DEL").
//! - CHECK needs cniVersion ≥ 0.4.0, is skipped with `disableCheck`, and gives every plugin the cached
//!   result as `prevResult` (none when nothing is cached, as libcni).
//! - DEL runs in reverse with the cached result as `prevResult` (≥ 0.4.0; an unreadable cache entry is
//!   dropped and DEL runs without it); the first error stops the list and keeps the cache entry; on
//!   success the entry is removed. An empty netns is allowed.
//! - GC (skipped entirely with `disableGC`, like libcni's early return) DELs every cached attachment of
//!   the network that is not in the valid set, then (≥ 1.1.0) sends GC to every plugin with
//!   `cni.dev/valid-attachments` and `cni.dev/attachments`; errors are collected and joined.
//! - STATUS is only sent for cniVersion ≥ 1.1.0; the first error is returned.

mod cache;
mod config;
mod error;
mod exec;
pub mod validate;

use std::path::PathBuf;

use cni_common::version::Version;
use serde_json::{Map, Value};

pub use cache::{CachedAttachment, CACHE_KIND};
pub use config::{parse_version, NetworkConfigList, RUNTIME_VERSION};
pub use error::{PluginError, PluginFailure, RunError};
pub use exec::{start_exec_recording, stop_exec_recording, take_exec_records, ExecRecord, PluginOutput};

/// Where plugins are found and results cached, and in which namespace plugins run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Runtime {
    /// Searched in order for `<dir>/<type>`; also passed as `CNI_PATH`.
    pub plugin_dirs: Vec<PathBuf>,
    /// libcni's `CacheDir` (default /var/lib/cni); results go to `<cache_dir>/results/`.
    pub cache_dir: PathBuf,
    /// Run plugin processes inside this network namespace (e.g. a sandbox's host) instead of ours.
    pub exec_netns: Option<PathBuf>,
}

/// The per-attachment parameters (libcni's `RuntimeConf`).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RuntimeConf {
    pub container_id: String,
    /// Netns path; may be empty for DEL.
    pub netns: String,
    pub ifname: String,
    /// `CNI_ARGS` pairs, sent as `K=V;K=V`.
    pub args: Vec<(String, String)>,
    /// Capability args; a plugin gets those of its enabled `capabilities` as `runtimeConfig`.
    pub capability_args: Map<String, Value>,
}

impl RuntimeConf {
    pub fn new(container_id: impl Into<String>, netns: impl Into<String>, ifname: impl Into<String>) -> RuntimeConf {
        RuntimeConf {
            container_id: container_id.into(),
            netns: netns.into(),
            ifname: ifname.into(),
            ..RuntimeConf::default()
        }
    }

    /// `K=V;K=V`.
    pub fn cni_args(&self) -> String {
        self.args.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(";")
    }

    /// The environment libcni sets for ADD/CHECK/DEL (besides `CNI_COMMAND` and `CNI_PATH`).
    pub fn env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("CNI_CONTAINERID", self.container_id.clone()),
            ("CNI_NETNS", self.netns.clone()),
            ("CNI_IFNAME", self.ifname.clone()),
            ("CNI_ARGS", self.cni_args()),
        ]
    }

    fn validate(&self, network: &str) -> Result<(), RunError> {
        validate::container_id(&self.container_id)?;
        validate::network_name(network)?;
        validate::interface_name(&self.ifname)
    }
}

/// A `(containerID, ifname)` pair, as GC's `cni.dev/valid-attachments` entries.
#[derive(Debug, Clone, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub struct Attachment {
    #[serde(rename = "containerID")]
    pub container_id: String,
    pub ifname: String,
}

impl Attachment {
    pub fn new(container_id: impl Into<String>, ifname: impl Into<String>) -> Attachment {
        Attachment { container_id: container_id.into(), ifname: ifname.into() }
    }
}

/// `VERSION` output.
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
pub struct VersionInfo {
    #[serde(rename = "cniVersion", default)]
    pub cni_version: String,
    #[serde(rename = "supportedVersions", default)]
    pub supported_versions: Vec<String>,
}

impl Runtime {
    pub fn new(plugin_dirs: Vec<PathBuf>, cache_dir: impl Into<PathBuf>) -> Runtime {
        Runtime { plugin_dirs, cache_dir: cache_dir.into(), exec_netns: None }
    }

    /// Run plugin `idx` of `list` for an attachment command; a non-zero exit becomes `RunError::Plugin`.
    fn invoke(
        &self,
        list: &NetworkConfigList,
        idx: usize,
        command: &str,
        rc: Option<&RuntimeConf>,
        config: &[u8],
    ) -> Result<PluginOutput, RunError> {
        let plugin = list.plugin_type(idx);
        // libcni passes all variables, empty ones included (GC/STATUS get an empty RuntimeConf).
        let env = rc.cloned().unwrap_or_default().env();
        let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let out = self.exec_plugin(plugin, command, config, &env)?;
        if out.success() {
            Ok(out)
        } else {
            Err(RunError::Plugin(Box::new(out.failure(plugin, command))))
        }
    }

    /// ADD every plugin in order, chaining results; cache and return the final result.
    pub fn add_list(&self, list: &NetworkConfigList, rc: &RuntimeConf) -> Result<Value, RunError> {
        rc.validate(&list.name)?;
        let mut prev: Option<Value> = None;
        for idx in 0..list.plugins.len() {
            let cfg = list.plugin_config(idx, Some(rc), prev.as_ref(), &[])?;
            let out = self.invoke(list, idx, "ADD", Some(rc), &cfg)?;
            prev = Some(parse_result(list, idx, &out)?);
        }
        let result = prev.ok_or_else(|| RunError::config("no plugins in list"))?;
        cache::write(&self.cache_dir, &list.name, &list.bytes, rc, &result)?;
        Ok(result)
    }

    /// CHECK every plugin in order with the cached result as `prevResult`.
    pub fn check_list(&self, list: &NetworkConfigList, rc: &RuntimeConf) -> Result<(), RunError> {
        if !list.version_at_least(Version::V0_4_0) {
            return Err(RunError::Unsupported { version: list.cni_version.clone(), command: "CHECK".into() });
        }
        if list.disable_check {
            return Ok(());
        }
        rc.validate(&list.name)?;
        let cached = cache::read(&self.cache_dir, &list.name, rc)?.and_then(|a| a.result);
        for idx in 0..list.plugins.len() {
            let cfg = list.plugin_config(idx, Some(rc), cached.as_ref(), &[])?;
            self.invoke(list, idx, "CHECK", Some(rc), &cfg)?;
        }
        Ok(())
    }

    /// DEL every plugin in reverse order with the cached result as `prevResult`, then drop the cache
    /// entry.
    pub fn del_list(&self, list: &NetworkConfigList, rc: &RuntimeConf) -> Result<(), RunError> {
        rc.validate(&list.name)?;
        let cached = if list.version_at_least(Version::V0_4_0) {
            match cache::read(&self.cache_dir, &list.name, rc) {
                Ok(a) => a.and_then(|a| a.result),
                Err(e) => {
                    eprintln!("conformance: dropping unreadable result cache: {e}");
                    cache::remove(&self.cache_dir, &list.name, rc)?;
                    None
                }
            }
        } else {
            None
        };
        for idx in (0..list.plugins.len()).rev() {
            let cfg = list.plugin_config(idx, Some(rc), cached.as_ref(), &[])?;
            self.invoke(list, idx, "DEL", Some(rc), &cfg)?;
        }
        cache::remove(&self.cache_dir, &list.name, rc)
    }

    /// GC: DEL stale cached attachments (not in `valid`), then send GC to every plugin (≥ 1.1.0).
    pub fn gc_list(&self, list: &NetworkConfigList, valid: &[Attachment]) -> Result<(), RunError> {
        if list.disable_gc {
            return Ok(());
        }
        let mut errs = Vec::new();
        for att in cache::list(&self.cache_dir, &list.name)? {
            if valid.iter().any(|v| v.container_id == att.container_id && v.ifname == att.ifname) {
                continue;
            }
            if let Err(e) = self.del_list(list, &att.runtime_conf()) {
                errs.push(RunError::StaleAttachment {
                    container_id: att.container_id.clone(),
                    ifname: att.ifname.clone(),
                    source: Box::new(e),
                });
            }
        }
        if list.version_at_least(Version::V1_1_0) {
            let valid_json = serde_json::to_value(valid).map_err(|e| RunError::config(e.to_string()))?;
            let extra = [("cni.dev/valid-attachments", valid_json.clone()), ("cni.dev/attachments", valid_json)];
            for idx in 0..list.plugins.len() {
                let cfg = list.plugin_config(idx, None, None, &extra)?;
                if let Err(e) = self.invoke(list, idx, "GC", None, &cfg) {
                    errs.push(e);
                }
            }
        }
        RunError::join(errs)
    }

    /// STATUS to every plugin (only for ≥ 1.1.0); the first error is returned.
    pub fn status_list(&self, list: &NetworkConfigList) -> Result<(), RunError> {
        if !list.version_at_least(Version::V1_1_0) {
            return Ok(());
        }
        for idx in 0..list.plugins.len() {
            let cfg = list.plugin_config(idx, None, None, &[])?;
            self.invoke(list, idx, "STATUS", None, &cfg)?;
        }
        Ok(())
    }

    /// Run VERSION on `plugin_type` (stdin `{"cniVersion":"1.1.0"}`, as libcni).
    pub fn version(&self, plugin_type: &str) -> Result<VersionInfo, RunError> {
        let stdin = format!("{{\"cniVersion\":{RUNTIME_VERSION:?}}}");
        let out = self.exec_plugin(plugin_type, "VERSION", stdin.as_bytes(), &[])?;
        if !out.success() {
            return Err(RunError::Plugin(Box::new(out.failure(plugin_type, "VERSION"))));
        }
        serde_json::from_slice(&out.stdout).map_err(|e| RunError::BadResult {
            plugin: plugin_type.into(),
            command: "VERSION".into(),
            reason: e.to_string(),
            stdout: out.stdout_str(),
        })
    }

    /// The cached final ADD result of `(list, rc)`, if any.
    pub fn cached_result(&self, list: &NetworkConfigList, rc: &RuntimeConf) -> Result<Option<Value>, RunError> {
        Ok(cache::read(&self.cache_dir, &list.name, rc)?.and_then(|a| a.result))
    }

    /// Path of the cache entry of `(network, rc)`.
    pub fn cache_path(&self, network: &str, rc: &RuntimeConf) -> PathBuf {
        cache::path(&self.cache_dir, network, rc)
    }

    /// Every cached attachment of `network`.
    pub fn cached_attachments(&self, network: &str) -> Result<Vec<CachedAttachment>, RunError> {
        cache::list(&self.cache_dir, network)
    }
}

/// An ADD result: a JSON object; an empty `cniVersion` is set to the list's (libcni, cni #895).
fn parse_result(list: &NetworkConfigList, idx: usize, out: &PluginOutput) -> Result<Value, RunError> {
    let bad = |reason: String| RunError::BadResult {
        plugin: list.plugin_type(idx).to_string(),
        command: "ADD".into(),
        reason,
        stdout: out.stdout_str(),
    };
    let mut v: Value = serde_json::from_slice(&out.stdout).map_err(|e| bad(format!("not JSON: {e}")))?;
    let obj = v.as_object_mut().ok_or_else(|| bad("not a JSON object".into()))?;
    let empty = obj.get("cniVersion").and_then(Value::as_str).is_none_or(|s| s.is_empty());
    if empty {
        obj.insert("cniVersion".into(), Value::String(list.cni_version.clone()));
    }
    Ok(v)
}
