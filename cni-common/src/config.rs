//! Network configuration types: the conflist a runtime loads and the plugin config a plugin reads on
//! stdin. Unknown fields are kept (`extra`) so configs pass through chains intact.

use crate::error::CniError;
use crate::result::Dns;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// A network configuration list (`*.conflist`).
#[derive(Debug, Clone, Serialize, Deserialize, Default, PartialEq)]
pub struct NetConfList {
    #[serde(rename = "cniVersion", default)]
    pub cni_version: String,
    #[serde(rename = "cniVersions", default, skip_serializing_if = "Option::is_none")]
    pub cni_versions: Option<Vec<String>>,
    #[serde(default)]
    pub name: String,
    #[serde(rename = "disableCheck", default, skip_serializing_if = "is_false")]
    pub disable_check: bool,
    #[serde(rename = "disableGC", default, skip_serializing_if = "is_false")]
    pub disable_gc: bool,
    #[serde(rename = "loadOnlyInlinedPlugins", default, skip_serializing_if = "is_false")]
    pub load_only_inlined_plugins: bool,
    #[serde(default)]
    pub plugins: Vec<PluginConf>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// One plugin's configuration, as found in a conflist or received on stdin.
#[derive(Debug, Clone, Serialize, Deserialize, Default, PartialEq)]
pub struct PluginConf {
    #[serde(rename = "cniVersion", default, skip_serializing_if = "String::is_empty")]
    pub cni_version: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub name: String,
    #[serde(rename = "type", default)]
    pub plugin_type: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub capabilities: Option<Map<String, Value>>,
    #[serde(rename = "runtimeConfig", default, skip_serializing_if = "Option::is_none")]
    pub runtime_config: Option<Map<String, Value>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub args: Option<Value>,
    #[serde(rename = "prevResult", default, skip_serializing_if = "Option::is_none")]
    pub prev_result: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ipam: Option<Map<String, Value>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dns: Option<Dns>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

fn is_false(b: &bool) -> bool {
    !*b
}

/// The regular expression of network names and container IDs, `^[a-zA-Z0-9][a-zA-Z0-9_.\-]*$`.
pub fn valid_name(s: &str) -> bool {
    let mut chars = s.chars();
    match chars.next() {
        Some(c) if c.is_ascii_alphanumeric() => {}
        _ => return false,
    }
    chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.' || c == '-')
}

/// The longest interface name the kernel accepts.
pub const MAX_IFNAME: usize = 15;

/// Check an interface name: 1 to 15 bytes, not `.` or `..`, no `/`, `:` or whitespace. The error
/// says what is wrong (without naming the field, which the caller knows).
pub fn check_ifname(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err(format!("{name:?} is empty"));
    }
    if name.len() > MAX_IFNAME {
        return Err(format!("{name:?} is longer than {MAX_IFNAME} bytes"));
    }
    if name == "." || name == ".." {
        return Err(format!("{name:?} is not a valid interface name"));
    }
    if name.chars().any(|c| c == '/' || c == ':' || c.is_whitespace()) {
        return Err(format!("{name:?} contains '/', ':' or whitespace"));
    }
    Ok(())
}

impl PluginConf {
    /// The IPAM plugin type, if the config delegates to one (`ipam: {}` means none: L2 only).
    pub fn ipam_type(&self) -> Option<&str> {
        self.ipam.as_ref()?.get("type")?.as_str().filter(|t| !t.is_empty())
    }

    /// `args.cni.<key>`, the conventional place for per-attachment arguments.
    pub fn args_cni(&self, key: &str) -> Option<&Value> {
        self.args.as_ref()?.get("cni")?.get(key)
    }

    /// `runtimeConfig.<key>`.
    pub fn runtime(&self, key: &str) -> Option<&Value> {
        self.runtime_config.as_ref()?.get(key)
    }
}

/// Deserialize a plugin's own typed config from the request JSON, mapping serde errors to a
/// code-7 error that names the field at fault (e.g. `field "ipam.ranges[0][0].subnet": ...`).
pub fn parse_typed<T: serde::de::DeserializeOwned>(raw: &Value) -> Result<T, CniError> {
    serde_path_to_error::deserialize(raw).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        if path.is_empty() || path == "." {
            CniError::config(inner.to_string())
        } else {
            CniError::config(format!("field {path:?}: {inner}"))
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert!(valid_name("cni0-net_1.x"));
        assert!(!valid_name("-x"));
        assert!(!valid_name(""));
        assert!(!valid_name("a/b"));
        assert!(!valid_name("a b"));
        assert!(check_ifname("eth0").is_ok());
        for bad in ["", ".", "..", "a/b", "a:b", "a b", "0123456789abcdef"] {
            assert!(check_ifname(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn unknown_fields_survive() {
        let raw = r#"{"cniVersion":"1.1.0","name":"n","type":"bridge","bridge":"br0","ipam":{"type":"host-local","x":1},
                     "capabilities":{"portMappings":true},"custom":{"a":[1,2]}}"#;
        let p: PluginConf = serde_json::from_str(raw).unwrap();
        assert_eq!(p.ipam_type(), Some("host-local"));
        assert_eq!(p.extra["bridge"], "br0");
        let back: Value = serde_json::to_value(&p).unwrap();
        let orig: Value = serde_json::from_str(raw).unwrap();
        assert_eq!(back, orig);
    }

    #[test]
    fn typed_errors_name_the_field() {
        #[derive(serde::Deserialize, Debug)]
        #[allow(dead_code)]
        struct T {
            mtu: Option<u32>,
            ipam: Inner,
        }
        #[derive(serde::Deserialize, Debug)]
        #[allow(dead_code)]
        struct Inner {
            ranges: Vec<u8>,
        }
        let e = parse_typed::<T>(&serde_json::json!({"mtu": "big", "ipam": {"ranges": []}})).unwrap_err();
        assert_eq!(e.code(), 7);
        assert!(e.to_string().contains("\"mtu\""), "{e}");
        let e = parse_typed::<T>(&serde_json::json!({"ipam": {"ranges": [1, "x"]}})).unwrap_err();
        assert!(e.to_string().contains("ipam.ranges[1]"), "{e}");
    }

    #[test]
    fn conflist_fields() {
        let raw = r#"{"cniVersion":"1.0.0","cniVersions":["1.0.0","1.1.0"],"name":"n","disableGC":true,
                     "plugins":[{"type":"loopback"}],"future":true}"#;
        let l: NetConfList = serde_json::from_str(raw).unwrap();
        assert!(l.disable_gc && !l.disable_check);
        assert_eq!(l.cni_versions.as_ref().unwrap().len(), 2);
        assert_eq!(l.plugins[0].plugin_type, "loopback");
        assert_eq!(l.extra["future"], true);
    }
}
