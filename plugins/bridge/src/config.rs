//! The bridge plugin's configuration: parsing and validation, free of system calls.

use cni_common::config::{check_ifname, parse_typed};
use cni_common::error::CniError;
use cni_common::netlink::parse_mac;
use cni_common::skel::Request;
use serde::Deserialize;

pub const DEFAULT_BRIDGE: &str = "cni0";
const MAX_VLAN: u16 = 4094;

#[derive(Debug, Clone, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct Raw {
    #[serde(default)]
    bridge: Option<String>,
    #[serde(default)]
    is_gateway: bool,
    #[serde(default)]
    is_default_gateway: bool,
    #[serde(default)]
    force_address: bool,
    #[serde(default)]
    ip_masq: bool,
    #[serde(default)]
    ip_masq_backend: Option<String>,
    #[serde(default)]
    mtu: Option<u32>,
    #[serde(default)]
    hairpin_mode: bool,
    #[serde(default)]
    promisc_mode: bool,
    #[serde(default)]
    vlan: Option<i64>,
    #[serde(default)]
    vlan_trunk: Vec<RawTrunk>,
    #[serde(default)]
    preserve_default_vlan: bool,
    #[serde(default, rename = "enabledad")]
    enable_dad: bool,
    #[serde(default, rename = "macspoofchk")]
    mac_spoof_chk: bool,
    #[serde(default)]
    disable_container_interface: bool,
    #[serde(default)]
    port_isolation: bool,
    #[serde(default, rename = "linkLocalIPv6")]
    link_local_ipv6: bool,
}

#[derive(Debug, Clone, Deserialize, Default)]
struct RawTrunk {
    #[serde(default)]
    id: Option<i64>,
    #[serde(default, rename = "minID")]
    min_id: Option<i64>,
    #[serde(default, rename = "maxID")]
    max_id: Option<i64>,
}

/// The validated configuration of one bridge attachment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BridgeConf {
    pub bridge: String,
    pub is_gateway: bool,
    pub is_default_gateway: bool,
    pub force_address: bool,
    pub ip_masq: bool,
    pub ip_masq_backend: Option<String>,
    pub mtu: Option<u32>,
    pub hairpin: bool,
    pub promisc: bool,
    /// Access VLAN (PVID, untagged) of the container port; 0 = none.
    pub vlan: u16,
    /// Tagged VLANs of the container port.
    pub vlan_trunk: Vec<u16>,
    pub preserve_default_vlan: bool,
    pub enable_dad: bool,
    pub mac_spoof_chk: bool,
    pub disable_container_interface: bool,
    pub port_isolation: bool,
    /// Keep IPv6 (with its link-local address) on a container interface that gets IPv4 addresses
    /// only; by default IPv6 is turned off on it, as Docker does in IPv4-only networks.
    pub link_local_ipv6: bool,
    /// MAC of the container interface (CNI_ARGS MAC, args.cni.mac, runtimeConfig.mac; later wins).
    pub mac: Option<[u8; 6]>,
    /// The IPAM plugin to delegate to; `None` for `ipam: {}` (L2 only).
    pub ipam_type: Option<String>,
}

impl BridgeConf {
    /// Whether VLAN filtering is needed on the bridge.
    pub fn uses_vlans(&self) -> bool {
        self.vlan != 0 || !self.vlan_trunk.is_empty()
    }
}

fn vlan_id(field: &str, v: i64) -> Result<u16, CniError> {
    if !(1..=MAX_VLAN as i64).contains(&v) {
        return Err(CniError::config(format!("field {field:?}: VLAN ID {v} is outside 1..{MAX_VLAN}")));
    }
    Ok(v as u16)
}

fn trunk_ids(raw: &[RawTrunk]) -> Result<Vec<u16>, CniError> {
    let mut ids = Vec::new();
    for (i, t) in raw.iter().enumerate() {
        let field = |name: &str| format!("vlanTrunk[{i}].{name}");
        match (t.id, t.min_id, t.max_id) {
            (Some(id), None, None) => ids.push(vlan_id(&field("id"), id)?),
            (None, Some(min), Some(max)) => {
                let (lo, hi) = (vlan_id(&field("minID"), min)?, vlan_id(&field("maxID"), max)?);
                if lo > hi {
                    return Err(CniError::config(format!("field \"vlanTrunk[{i}]\": minID {lo} is greater than maxID {hi}")));
                }
                ids.extend(lo..=hi);
            }
            (None, Some(_), None) | (None, None, Some(_)) => {
                return Err(CniError::config(format!("field \"vlanTrunk[{i}]\": minID and maxID must be given together")))
            }
            (None, None, None) => {
                return Err(CniError::config(format!("field \"vlanTrunk[{i}]\": needs \"id\" or \"minID\"/\"maxID\"")))
            }
            _ => {
                return Err(CniError::config(format!("field \"vlanTrunk[{i}]\": \"id\" excludes \"minID\"/\"maxID\"")))
            }
        }
    }
    ids.sort_unstable();
    ids.dedup();
    Ok(ids)
}

fn mac_from(field: &str, v: &serde_json::Value) -> Result<[u8; 6], CniError> {
    let s = v.as_str().ok_or_else(|| CniError::config(format!("field {field:?}: {v} is not a string")))?;
    parse_mac(s).map_err(|e| CniError::config(format!("field {field:?}: MAC {s:?} is invalid: {e}")))
}

/// The container MAC from its three sources; a later source overrides an earlier one.
fn container_mac(req: &Request) -> Result<Option<[u8; 6]>, CniError> {
    let mut mac = None;
    if let Some(s) = req.args.get("MAC") {
        mac = Some(mac_from("CNI_ARGS MAC", &serde_json::Value::String(s.to_string()))?);
    }
    if let Some(v) = req.conf.args_cni("mac") {
        mac = Some(mac_from("args.cni.mac", v)?);
    }
    if let Some(v) = req.conf.runtime("mac") {
        mac = Some(mac_from("runtimeConfig.mac", v)?);
    }
    if let Some(m) = mac {
        if m[0] & 1 == 1 {
            return Err(CniError::config(format!(
                "MAC {} is a multicast address and cannot be used for an interface",
                cni_common::netlink::format_mac(&m)
            )));
        }
    }
    Ok(mac)
}

/// Parse and validate the request's config.
pub fn parse(req: &Request) -> Result<BridgeConf, CniError> {
    let raw: Raw = parse_typed(&req.raw)?;
    let bridge = raw.bridge.filter(|b| !b.is_empty()).unwrap_or_else(|| DEFAULT_BRIDGE.to_string());
    check_ifname(&bridge).map_err(|why| CniError::config(format!("field \"bridge\": {why}")))?;
    if raw.hairpin_mode && raw.promisc_mode {
        return Err(CniError::config("fields \"hairpinMode\" and \"promiscMode\" cannot both be true"));
    }
    if let Some(mtu) = raw.mtu {
        if mtu != 0 && !(68..=65535).contains(&mtu) {
            return Err(CniError::config(format!("field \"mtu\": {mtu} is outside 68..65535")));
        }
    }
    let vlan = match raw.vlan {
        None | Some(0) => 0,
        Some(v) => vlan_id("vlan", v)?,
    };
    let vlan_trunk = trunk_ids(&raw.vlan_trunk)?;
    if vlan != 0 && vlan_trunk.contains(&vlan) {
        return Err(CniError::config(format!("field \"vlanTrunk\": includes the access VLAN {vlan}")));
    }
    if let Some(b) = &raw.ip_masq_backend {
        if b != "iptables" && b != "nftables" {
            return Err(CniError::config(format!("field \"ipMasqBackend\": {b:?} is not \"iptables\" or \"nftables\"")));
        }
    }
    if raw.mac_spoof_chk {
        return Err(CniError::UnsupportedField(
            "\"macspoofchk\": true is not supported yet by this bridge plugin".into(),
        ));
    }
    let ipam_type = req.conf.ipam_type().map(str::to_string);
    if req.conf.ipam.is_some() && ipam_type.is_none() && req.conf.ipam.as_ref().is_some_and(|m| !m.is_empty()) {
        return Err(CniError::config("field \"ipam\": has settings but no \"type\""));
    }
    if raw.disable_container_interface && ipam_type.is_some() {
        return Err(CniError::config(
            "field \"disableContainerInterface\": cannot be used with IPAM (addresses need the interface up)",
        ));
    }
    Ok(BridgeConf {
        bridge,
        is_gateway: raw.is_gateway || raw.is_default_gateway,
        is_default_gateway: raw.is_default_gateway,
        force_address: raw.force_address,
        ip_masq: raw.ip_masq,
        ip_masq_backend: raw.ip_masq_backend,
        mtu: raw.mtu.filter(|m| *m != 0),
        hairpin: raw.hairpin_mode,
        promisc: raw.promisc_mode,
        vlan,
        vlan_trunk,
        preserve_default_vlan: raw.preserve_default_vlan,
        enable_dad: raw.enable_dad,
        mac_spoof_chk: raw.mac_spoof_chk,
        disable_container_interface: raw.disable_container_interface,
        port_isolation: raw.port_isolation,
        link_local_ipv6: raw.link_local_ipv6,
        mac: container_mac(req)?,
        ipam_type,
    })
}

#[cfg(test)]
mod tests;
