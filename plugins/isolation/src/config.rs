//! isolation configuration and the bridge/veth names taken from prevResult: pure.

use cni_common::config::parse_typed;
use cni_common::error::CniError;
use cni_common::result::CniResult;
use cni_common::skel::Request;
use serde::Deserialize;

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Raw {
    #[serde(default)]
    icc: Option<bool>,
    #[serde(default)]
    allow_published: Option<bool>,
    #[serde(default)]
    backend: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IsolationConf {
    /// Containers of one bridge may talk to each other (default true).
    pub icc: bool,
    /// Connections DNAT-ed by portmap (published ports) pass isolation (default true).
    pub allow_published: bool,
    pub backend: Option<String>,
}

pub fn parse(req: &Request) -> Result<IsolationConf, CniError> {
    let raw: Raw = parse_typed(&req.raw)?;
    if let Some(b) = &raw.backend {
        if b != "iptables" && b != "nftables" {
            return Err(CniError::config(format!("field \"backend\": {b:?} is not \"iptables\" or \"nftables\"")));
        }
    }
    Ok(IsolationConf {
        icc: raw.icc.unwrap_or(true),
        allow_published: raw.allow_published.unwrap_or(true),
        backend: raw.backend,
    })
}

/// The attachment's host side as prevResult names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostSide {
    /// Host-side interfaces (no sandbox): the bridge is among them.
    pub candidates: Vec<String>,
    /// The host end of the container's veth, when the result names one (bridge: interfaces[1]).
    pub host_veth: Option<String>,
}

/// Host-side interface names of prevResult, the first being the bridge for our `bridge` plugin.
pub fn host_side(prev: &CniResult) -> HostSide {
    let candidates: Vec<String> =
        prev.interfaces.iter().filter(|i| i.sandbox.is_empty()).map(|i| i.name.clone()).collect();
    let host_veth = candidates.get(1).cloned();
    HostSide { candidates, host_veth }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cni_common::skel::request_from;
    use serde_json::json;

    fn req(extra: serde_json::Value) -> Request {
        let mut c = json!({"cniVersion": "1.1.0", "name": "net", "type": "isolation"});
        for (k, v) in extra.as_object().unwrap() {
            c[k] = v.clone();
        }
        let env = [("CNI_COMMAND", "ADD"), ("CNI_CONTAINERID", "c1"), ("CNI_NETNS", "/run/netns/x"), ("CNI_IFNAME", "eth0")];
        request_from(&env, &c, &[]).unwrap()
    }

    #[test]
    fn defaults_and_errors() {
        let c = parse(&req(json!({}))).unwrap();
        assert!(c.icc && c.allow_published && c.backend.is_none());
        let c = parse(&req(json!({"icc": false, "allowPublished": false, "backend": "iptables"}))).unwrap();
        assert!(!c.icc && !c.allow_published);
        assert!(parse(&req(json!({"icc": "no"}))).unwrap_err().to_string().contains("icc"));
        assert!(parse(&req(json!({"backend": "pf"}))).unwrap_err().to_string().contains("backend"));
    }

    #[test]
    fn host_side_from_bridge_result() {
        let prev = CniResult::parse(
            &json!({"cniVersion": "1.1.0", "interfaces": [{"name": "br0"}, {"name": "veth01234567"}, {"name": "eth0", "sandbox": "/x"}]}),
            "1.1.0",
        )
        .unwrap();
        let h = host_side(&prev);
        assert_eq!(h.candidates, vec!["br0".to_string(), "veth01234567".to_string()]);
        assert_eq!(h.host_veth.as_deref(), Some("veth01234567"));
    }
}
