//! Network configuration lists: loading, validation, version selection and the per-plugin request
//! config libcni builds.
//!
//! Only inlined plugins are loaded: the `loadOnlyInlinedPlugins: false` behaviour of libcni (also
//! appending `<confdir>/<netname>/*.conf`) is not implemented; the flag is parsed and kept.

use std::path::{Path, PathBuf};

use cni_common::version::Version;
use serde_json::{Map, Value};

use super::{validate, RunError, RuntimeConf};

/// The newest spec version this runner speaks (what libcni's `version.Current()` is).
pub const RUNTIME_VERSION: &str = "1.1.0";

/// A parsed network configuration list.
#[derive(Debug, Clone, PartialEq)]
pub struct NetworkConfigList {
    pub name: String,
    /// The version in effect: `cniVersion`, or the highest entry of `cniVersions` ≤ 1.1.0 (merged with
    /// `cniVersion`). Injected into every plugin's request config.
    pub cni_version: String,
    pub disable_check: bool,
    pub disable_gc: bool,
    pub load_only_inlined_plugins: bool,
    /// Plugin objects as written (each has a string `type`).
    pub plugins: Vec<Map<String, Value>>,
    /// The bytes the list was parsed from (stored in the result cache).
    pub bytes: Vec<u8>,
}

impl NetworkConfigList {
    /// Parse and validate a conflist.
    pub fn from_bytes(bytes: &[u8]) -> Result<NetworkConfigList, RunError> {
        let raw: Value = serde_json::from_slice(bytes)
            .map_err(|e| RunError::config(format!("error parsing configuration list: {e}")))?;
        let top = raw.as_object().ok_or_else(|| RunError::config("configuration list is not a JSON object"))?;
        let name = match top.get("name") {
            Some(Value::String(s)) => s.clone(),
            None => return Err(RunError::config("error parsing configuration list: no name")),
            Some(_) => return Err(RunError::config("error parsing configuration list: invalid name type")),
        };
        validate::network_name(&name)?;
        let cni_version = match top.get("cniVersion") {
            None | Some(Value::Null) => String::new(),
            Some(Value::String(s)) => s.clone(),
            Some(_) => return Err(RunError::config("error parsing configuration list: invalid cniVersion type")),
        };
        let cni_version = select_version(&cni_version, top.get("cniVersions"))?;
        let load_only_inlined_plugins = flag(top, "loadOnlyInlinedPlugins")?;
        let plugins = match top.get("plugins") {
            Some(Value::Array(a)) => a,
            None => return Err(RunError::config("error parsing configuration list: no 'plugins' key")),
            Some(_) => return Err(RunError::config("error parsing configuration list: invalid 'plugins' type")),
        };
        if plugins.is_empty() {
            return Err(RunError::config("error parsing configuration list: no plugins in list"));
        }
        let plugins = plugins
            .iter()
            .enumerate()
            .map(|(i, p)| {
                let obj = p.as_object().ok_or_else(|| RunError::config(format!("plugin {i} is not a JSON object")))?;
                match obj.get("type") {
                    Some(Value::String(t)) if !t.is_empty() && !t.contains('/') => Ok(obj.clone()),
                    Some(Value::String(t)) if t.contains('/') => {
                        Err(RunError::config(format!("plugin {i}: invalid type {t:?} (contains '/')")))
                    }
                    _ => Err(RunError::config(format!("error parsing configuration: plugin {i}: missing 'type'"))),
                }
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(NetworkConfigList {
            name,
            cni_version,
            disable_check: flag(top, "disableCheck")?,
            disable_gc: flag(top, "disableGC")?,
            load_only_inlined_plugins,
            plugins,
            bytes: bytes.to_vec(),
        })
    }

    /// Parse a conflist given as a JSON value.
    pub fn from_json(v: &Value) -> Result<NetworkConfigList, RunError> {
        let bytes = serde_json::to_vec(v).map_err(|e| RunError::config(e.to_string()))?;
        NetworkConfigList::from_bytes(&bytes)
    }

    /// Read and parse a conflist file.
    pub fn from_file(path: impl AsRef<Path>) -> Result<NetworkConfigList, RunError> {
        let path = path.as_ref();
        let bytes = std::fs::read(path).map_err(|e| RunError::config(format!("read {}: {e}", path.display())))?;
        NetworkConfigList::from_any_bytes(&bytes).map_err(|e| RunError::config(format!("{}: {e}", path.display())))
    }

    /// Wrap a single plugin configuration (a `.conf` file) into a list, as libcni's `ConfListFromConf`.
    pub fn from_conf_bytes(bytes: &[u8]) -> Result<NetworkConfigList, RunError> {
        let conf: Value = serde_json::from_slice(bytes)
            .map_err(|e| RunError::config(format!("error parsing configuration: {e}")))?;
        let obj = conf.as_object().ok_or_else(|| RunError::config("configuration is not a JSON object"))?;
        let mut list = Map::new();
        list.insert("name".into(), obj.get("name").cloned().unwrap_or(Value::Null));
        if let Some(v) = obj.get("cniVersion") {
            list.insert("cniVersion".into(), v.clone());
        }
        list.insert("plugins".into(), Value::Array(vec![conf.clone()]));
        NetworkConfigList::from_json(&Value::Object(list))
    }

    /// A conflist if the object has `plugins`, else a single plugin conf wrapped into a list.
    pub fn from_any_bytes(bytes: &[u8]) -> Result<NetworkConfigList, RunError> {
        let v: Value = serde_json::from_slice(bytes)
            .map_err(|e| RunError::config(format!("error parsing configuration: {e}")))?;
        if v.get("plugins").is_some() {
            NetworkConfigList::from_bytes(bytes)
        } else {
            NetworkConfigList::from_conf_bytes(bytes)
        }
    }

    /// Find the network `name` in `dir` like libcni's `LoadConfList`: `*.conflist` files first, then
    /// `*.conf` / `*.json` (wrapped into lists), each group in lexical order. Files that do not parse
    /// are skipped with a warning on stderr (libcni stops at them).
    pub fn load_from_dir(dir: impl AsRef<Path>, name: &str) -> Result<NetworkConfigList, RunError> {
        let dir = dir.as_ref();
        let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
            .map_err(|e| RunError::config(format!("read {}: {e}", dir.display())))?
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.is_file())
            .collect();
        files.sort();
        let ext = |p: &Path| p.extension().and_then(|e| e.to_str()).unwrap_or("").to_string();
        let lists = files.iter().filter(|p| ext(p) == "conflist");
        let confs = files.iter().filter(|p| ext(p) == "conf" || ext(p) == "json");
        for path in lists.chain(confs) {
            match NetworkConfigList::from_file(path) {
                Ok(list) if list.name == name => return Ok(list),
                Ok(_) => {}
                Err(e) => eprintln!("cnitool: skipping {}: {e}", path.display()),
            }
        }
        Err(RunError::config(format!("no net configuration with name {name:?} in {}", dir.display())))
    }

    /// The `type` of plugin `idx`.
    pub fn plugin_type(&self, idx: usize) -> &str {
        self.plugins.get(idx).and_then(|p| p.get("type")).and_then(Value::as_str).unwrap_or("")
    }

    /// Types of all plugins, in order.
    pub fn plugin_types(&self) -> Vec<&str> {
        (0..self.plugins.len()).map(|i| self.plugin_type(i)).collect()
    }

    /// Whether the list's version is at least `min` (an empty version counts as 0.1.0; an unparsable
    /// one as older than everything).
    pub fn version_at_least(&self, min: Version) -> bool {
        parse_version(&self.cni_version).is_some_and(|v| v >= min)
    }

    /// The request config of plugin `idx`: the plugin object plus `name`, `cniVersion`, then
    /// `runtimeConfig` (its enabled capabilities ∩ `rc.capability_args`, only when non-empty),
    /// `prevResult` when given, and `extra` keys (GC's `cni.dev/*`).
    pub fn plugin_config(
        &self,
        idx: usize,
        rc: Option<&RuntimeConf>,
        prev: Option<&Value>,
        extra: &[(&str, Value)],
    ) -> Result<Vec<u8>, RunError> {
        let mut obj = self
            .plugins
            .get(idx)
            .cloned()
            .ok_or_else(|| RunError::config(format!("no plugin {idx} in list {}", self.name)))?;
        obj.insert("name".into(), Value::String(self.name.clone()));
        obj.insert("cniVersion".into(), Value::String(self.cni_version.clone()));
        if let Some(rc) = rc {
            let runtime_config = runtime_config(&obj, &rc.capability_args);
            if !runtime_config.is_empty() {
                obj.insert("runtimeConfig".into(), Value::Object(runtime_config));
            }
        }
        if let Some(prev) = prev {
            obj.insert("prevResult".into(), prev.clone());
        }
        for (k, v) in extra {
            obj.insert((*k).to_string(), v.clone());
        }
        serde_json::to_vec(&Value::Object(obj)).map_err(|e| RunError::config(e.to_string()))
    }
}

impl std::str::FromStr for NetworkConfigList {
    type Err = RunError;
    fn from_str(s: &str) -> Result<Self, RunError> {
        NetworkConfigList::from_bytes(s.as_bytes())
    }
}

/// Capabilities the plugin enables (`"capabilities": {"x": true}`) that the runtime has args for.
fn runtime_config(plugin: &Map<String, Value>, capability_args: &Map<String, Value>) -> Map<String, Value> {
    let Some(caps) = plugin.get("capabilities").and_then(Value::as_object) else {
        return Map::new();
    };
    caps.iter()
        .filter(|(_, enabled)| **enabled == Value::Bool(true))
        .filter_map(|(cap, _)| capability_args.get(cap).map(|v| (cap.clone(), v.clone())))
        .collect()
}

/// A spec version; "" is 0.1.0 (what skel assumes for a config without `cniVersion`).
pub fn parse_version(s: &str) -> Option<Version> {
    if s.is_empty() {
        return Some(Version::V0_1_0);
    }
    Version::parse(s).ok()
}

/// libcni: the highest of `cniVersions` not newer than the runtime's version, merged with `cniVersion`.
fn select_version(cni_version: &str, versions: Option<&Value>) -> Result<String, RunError> {
    let Some(versions) = versions.filter(|v| !v.is_null()) else {
        return Ok(cni_version.to_string());
    };
    let list = versions.as_array().ok_or_else(|| RunError::config("cniVersions must be a list of strings"))?;
    let current = Version::parse(RUNTIME_VERSION).map_err(|e| RunError::config(e.to_string()))?;
    let mut best: Option<(Version, String)> = None;
    let candidates = list.iter().map(Some).chain(std::iter::once(None));
    for entry in candidates {
        let s = match entry {
            Some(Value::String(s)) => s.as_str(),
            Some(other) => return Err(RunError::config(format!("cniVersions: {other} is not a string"))),
            None if cni_version.is_empty() => continue,
            None => cni_version,
        };
        let v = Version::parse(s).map_err(|_| RunError::config(format!("cniVersions: invalid version {s:?}")))?;
        if v > current {
            continue;
        }
        if !matches!(&best, Some((b, _)) if v <= *b) {
            best = Some((v, s.to_string()));
        }
    }
    best.map(|(_, s)| s).ok_or_else(|| {
        RunError::config(format!("no supported version in cniVersions (this runtime speaks up to {RUNTIME_VERSION})"))
    })
}

/// A boolean flag; libcni also accepts the strings "true"/"false".
fn flag(top: &Map<String, Value>, key: &str) -> Result<bool, RunError> {
    match top.get(key) {
        None | Some(Value::Null) => Ok(false),
        Some(Value::Bool(b)) => Ok(*b),
        Some(Value::String(s)) if s.eq_ignore_ascii_case("true") => Ok(true),
        Some(Value::String(s)) if s.eq_ignore_ascii_case("false") => Ok(false),
        Some(other) => Err(RunError::config(format!("{key}: invalid value {other}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn list(v: Value) -> Result<NetworkConfigList, RunError> {
        NetworkConfigList::from_json(&v)
    }

    #[test]
    fn validates() {
        assert!(list(json!({"cniVersion": "1.0.0", "plugins": [{"type": "x"}]})).is_err());
        assert!(list(json!({"name": "n", "plugins": []})).is_err());
        assert!(list(json!({"name": "n"})).is_err());
        assert!(list(json!({"name": "n", "plugins": [{"a": 1}]})).is_err());
        assert!(list(json!({"name": "n", "plugins": [{"type": "a/b"}]})).is_err());
        assert!(list(json!({"name": "-n", "plugins": [{"type": "x"}]})).is_err());
        let l = list(json!({"name": "n", "cniVersion": "1.0.0", "disableCheck": "true",
                            "plugins": [{"type": "x"}, {"type": "y"}]}))
        .unwrap();
        assert_eq!(l.plugin_types(), ["x", "y"]);
        assert!(l.disable_check && !l.disable_gc);
    }

    #[test]
    fn picks_highest_supported_version() {
        let l = list(json!({"name": "n", "cniVersion": "0.4.0", "cniVersions": ["1.0.0", "9.0.0", "0.3.1"],
                            "plugins": [{"type": "x"}]}))
        .unwrap();
        assert_eq!(l.cni_version, "1.0.0");
        let l = list(json!({"name": "n", "cniVersion": "1.1.0", "cniVersions": ["1.0.0"], "plugins": [{"type": "x"}]}))
            .unwrap();
        assert_eq!(l.cni_version, "1.1.0");
        assert!(list(json!({"name": "n", "cniVersions": ["2.0.0"], "plugins": [{"type": "x"}]})).is_err());
        assert!(list(json!({"name": "n", "cniVersions": ["x"], "plugins": [{"type": "x"}]})).is_err());
    }

    #[test]
    fn request_config() {
        let l = list(json!({"name": "n", "cniVersion": "1.0.0", "plugins": [
            {"type": "portmap", "capabilities": {"portMappings": true, "bandwidth": false}}]}))
        .unwrap();
        let mut rc = RuntimeConf::new("c", "/run/netns/x", "eth0");
        rc.capability_args.insert("portMappings".into(), json!([{"hostPort": 80}]));
        rc.capability_args.insert("bandwidth".into(), json!({}));
        rc.capability_args.insert("other".into(), json!(1));
        let prev = json!({"cniVersion": "1.0.0"});
        let cfg: Value = serde_json::from_slice(&l.plugin_config(0, Some(&rc), Some(&prev), &[]).unwrap()).unwrap();
        assert_eq!(cfg["name"], "n");
        assert_eq!(cfg["cniVersion"], "1.0.0");
        assert_eq!(cfg["runtimeConfig"], json!({"portMappings": [{"hostPort": 80}]}));
        assert_eq!(cfg["prevResult"], prev);
        let cfg: Value = serde_json::from_slice(&l.plugin_config(0, None, None, &[]).unwrap()).unwrap();
        assert!(cfg.get("runtimeConfig").is_none() && cfg.get("prevResult").is_none());
    }

    #[test]
    fn wraps_plain_conf() {
        let l = NetworkConfigList::from_any_bytes(br#"{"cniVersion":"0.4.0","name":"lo","type":"loopback"}"#).unwrap();
        assert_eq!(l.name, "lo");
        assert_eq!(l.cni_version, "0.4.0");
        assert_eq!(l.plugin_types(), ["loopback"]);
    }
}
