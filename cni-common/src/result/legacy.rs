//! The 0.1.0 / 0.2.0 result shape: `{ip4: {ip, gateway, routes}, ip6: {...}, dns}`, one address per
//! family.

use super::{CniResult, Dns, IpConfig, Route};
use crate::error::CniError;
use ipnetwork::IpNetwork;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::net::IpAddr;

#[derive(Serialize, Deserialize)]
struct IpBlock {
    ip: IpNetwork,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    gateway: Option<IpAddr>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    routes: Vec<LegacyRoute>,
}

#[derive(Serialize, Deserialize)]
struct LegacyRoute {
    dst: IpNetwork,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    gw: Option<IpAddr>,
}

#[derive(Serialize, Deserialize)]
struct V02 {
    #[serde(rename = "cniVersion", default)]
    cni_version: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    ip4: Option<IpBlock>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    ip6: Option<IpBlock>,
    #[serde(default)]
    dns: Dns,
}

pub(super) fn from_v02(obj: &Map<String, Value>) -> Result<CniResult, CniError> {
    let r: V02 = serde_json::from_value(Value::Object(obj.clone())).map_err(|e| CniError::decode("result (version 0.2.0)", e))?;
    let mut out = CniResult { dns: r.dns, ..Default::default() };
    for block in [r.ip4, r.ip6].into_iter().flatten() {
        out.ips.push(IpConfig::new(block.ip, block.gateway, None));
        out.routes.extend(block.routes.into_iter().map(|rt| Route::new(rt.dst, rt.gw)));
    }
    Ok(out)
}

pub(super) fn to_v02(r: &CniResult, version: &str) -> Result<Value, CniError> {
    let first = |v4: bool| r.ips.iter().find(|ip| ip.address.is_ipv4() == v4);
    let block = |v4: bool| {
        first(v4).map(|ip| IpBlock {
            ip: ip.address,
            gateway: ip.gateway,
            routes: r
                .routes
                .iter()
                .filter(|rt| rt.dst.is_ipv4() == v4)
                .map(|rt| LegacyRoute { dst: rt.dst, gw: rt.gw })
                .collect(),
        })
    };
    let out = V02 { cni_version: version.to_string(), ip4: block(true), ip6: block(false), dns: r.dns.clone() };
    if out.ip4.is_none() && out.ip6.is_none() && !r.ips.is_empty() {
        return Err(CniError::IncompatibleVersion(format!("cannot express the result in version {version}")));
    }
    serde_json::to_value(out).map_err(|e| CniError::Internal(format!("encode result: {e}")))
}
