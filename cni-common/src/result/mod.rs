//! CNI results for every spec version.
//!
//! [`CniResult`] is the newest (1.1.0) shape and the one plugins work with. [`CniResult::parse`]
//! reads a result of any version (0.1.0 … 1.1.0) and [`CniResult::to_value`] emits it in the version
//! a config asks for. Unknown fields are kept in `extra` maps so results pass through chains intact.

mod legacy;

use crate::error::CniError;
use crate::version::Version;
use ipnetwork::IpNetwork;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::net::IpAddr;

/// A success result, in the 1.1.0 shape.
#[derive(Debug, Clone, Serialize, Deserialize, Default, PartialEq)]
pub struct CniResult {
    #[serde(rename = "cniVersion", default)]
    pub cni_version: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub interfaces: Vec<Interface>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ips: Vec<IpConfig>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub routes: Vec<Route>,
    /// Always emitted (as `{}` when empty), as the reference library does.
    #[serde(default)]
    pub dns: Dns,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

#[derive(Debug, Clone, Serialize, Deserialize, Default, PartialEq)]
pub struct Interface {
    pub name: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub mac: String,
    /// 1.1.0 only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mtu: Option<u32>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub sandbox: String,
    /// 1.1.0 only.
    #[serde(rename = "socketPath", default, skip_serializing_if = "String::is_empty")]
    pub socket_path: String,
    /// 1.1.0 only.
    #[serde(rename = "pciID", default, skip_serializing_if = "String::is_empty")]
    pub pci_id: String,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct IpConfig {
    /// Index into `interfaces`; absent in IPAM results.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interface: Option<usize>,
    pub address: IpNetwork,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway: Option<IpAddr>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Route {
    pub dst: IpNetwork,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gw: Option<IpAddr>,
    /// 1.1.0 only (also `advmss`, `priority`, `table`, `scope`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mtu: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub advmss: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub table: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scope: Option<u8>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

#[derive(Debug, Clone, Serialize, Deserialize, Default, PartialEq, Eq)]
pub struct Dns {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub nameservers: Vec<String>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub domain: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub search: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub options: Vec<String>,
}

impl Dns {
    pub fn is_empty(&self) -> bool {
        self.nameservers.is_empty() && self.domain.is_empty() && self.search.is_empty() && self.options.is_empty()
    }
}

impl Route {
    pub fn new(dst: IpNetwork, gw: Option<IpAddr>) -> Route {
        Route { dst, gw, mtu: None, advmss: None, priority: None, table: None, scope: None, extra: Map::new() }
    }
}

impl IpConfig {
    pub fn new(address: IpNetwork, gateway: Option<IpAddr>, interface: Option<usize>) -> IpConfig {
        IpConfig { interface, address, gateway, extra: Map::new() }
    }
}

/// Keys of `ips[]` entries that exist only below 1.0.0.
const IP_VERSION_KEY: &str = "version";

impl CniResult {
    /// Parse a result of any supported version. An empty `cniVersion` is taken as `default_version`
    /// (libcni fixes empty versions up to the config's).
    pub fn parse(v: &Value, default_version: &str) -> Result<CniResult, CniError> {
        let obj = v.as_object().ok_or_else(|| CniError::decode("result", "not a JSON object"))?;
        let ver_s = obj.get("cniVersion").and_then(Value::as_str).filter(|s| !s.is_empty()).unwrap_or(default_version);
        let ver = Version::supported(ver_s)?;
        let mut r = if ver < Version::V0_3_0 {
            legacy::from_v02(obj)?
        } else {
            let mut r: CniResult =
                CniResult::deserialize(v).map_err(|e| CniError::decode(format!("result (version {ver_s})"), e))?;
            for ip in &mut r.ips {
                ip.extra.remove(IP_VERSION_KEY);
            }
            r
        };
        r.cni_version = ver_s.to_string();
        Ok(r)
    }

    /// Emit the result in `version`, converting as needed.
    pub fn to_value(&self, version: &str) -> Result<Value, CniError> {
        let ver = Version::supported(version)?;
        if ver < Version::V0_3_0 {
            return legacy::to_v02(self, version);
        }
        let mut r = self.clone();
        r.cni_version = version.to_string();
        if ver < Version::V1_1_0 {
            for i in &mut r.interfaces {
                i.mtu = None;
                i.socket_path.clear();
                i.pci_id.clear();
            }
            for rt in &mut r.routes {
                rt.mtu = None;
                rt.advmss = None;
                rt.priority = None;
                rt.table = None;
                rt.scope = None;
            }
        }
        let mut v = serde_json::to_value(&r).map_err(|e| CniError::Internal(format!("encode result: {e}")))?;
        if ver < Version::V1_0_0 {
            if let Some(ips) = v.get_mut("ips").and_then(Value::as_array_mut) {
                for ip in ips {
                    let fam = match ip.get("address").and_then(Value::as_str) {
                        Some(a) if a.contains(':') => "6",
                        _ => "4",
                    };
                    if let Some(o) = ip.as_object_mut() {
                        o.insert(IP_VERSION_KEY.into(), Value::String(fam.into()));
                    }
                }
            }
        }
        Ok(v)
    }

    /// Serialized result text in `version`.
    pub fn to_json(&self, version: &str) -> Result<String, CniError> {
        let v = self.to_value(version)?;
        serde_json::to_string(&v).map_err(|e| CniError::Internal(format!("encode result: {e}")))
    }

    /// Index of the interface named `name` inside a sandbox (container side).
    pub fn sandbox_interface(&self, name: &str) -> Option<usize> {
        self.interfaces.iter().position(|i| i.name == name && !i.sandbox.is_empty())
    }
}

#[cfg(test)]
mod tests;
