//! portmap configuration: parsing and validation, free of system calls.

use cni_common::config::parse_typed;
use cni_common::error::CniError;
use cni_common::result::CniResult;
use cni_common::skel::Request;
use cni_firewall::{AttachmentKey, PortMapSpec, PortMapping, Protocol};
use ipnetwork::IpNetwork;
use serde::Deserialize;
use std::net::IpAddr;

#[derive(Debug, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct Raw {
    #[serde(default)]
    backend: Option<String>,
    #[serde(default)]
    snat: Option<bool>,
    #[serde(default)]
    masq_all: bool,
    #[serde(default)]
    mark_masq_bit: Option<i64>,
    #[serde(default)]
    external_set_mark_chain: Option<String>,
    #[serde(default, rename = "conditionsV4")]
    conditions_v4: Option<Vec<String>>,
    #[serde(default, rename = "conditionsV6")]
    conditions_v6: Option<Vec<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawMapping {
    host_port: i64,
    container_port: i64,
    #[serde(default)]
    protocol: String,
    #[serde(default, rename = "hostIP")]
    host_ip: String,
}

/// The validated config of one portmap invocation.
#[derive(Debug, Clone, PartialEq)]
pub struct PortmapConf {
    pub backend: Option<String>,
    pub snat: bool,
    pub masq_all: bool,
    pub mark_masq_bit: u8,
    pub external_set_mark_chain: Option<String>,
    pub conditions_v4: Option<Vec<String>>,
    pub conditions_v6: Option<Vec<String>>,
    pub mappings: Vec<PortMapping>,
}

pub const DEFAULT_MARK_BIT: u8 = 13;

fn port(field: String, v: i64) -> Result<u16, CniError> {
    if !(1..=65535).contains(&v) {
        return Err(CniError::config(format!("field {field:?}: port {v} is outside 1..65535")));
    }
    Ok(v as u16)
}

fn mappings(req: &Request) -> Result<Vec<PortMapping>, CniError> {
    let Some(v) = req.conf.runtime("portMappings") else { return Ok(vec![]) };
    let raw: Vec<RawMapping> = Vec::<RawMapping>::deserialize(v)
        .map_err(|e| CniError::config(format!("field \"runtimeConfig.portMappings\": {e}")))?;
    raw.into_iter()
        .enumerate()
        .map(|(i, m)| {
            let f = |name: &str| format!("runtimeConfig.portMappings[{i}].{name}");
            let host_ip = match m.host_ip.as_str() {
                "" => None,
                s => Some(s.parse::<IpAddr>().map_err(|_| {
                    CniError::config(format!("field {:?}: {s:?} is not an IP address", f("hostIP")))
                })?),
            };
            Ok(PortMapping {
                host_port: port(f("hostPort"), m.host_port)?,
                container_port: port(f("containerPort"), m.container_port)?,
                protocol: Protocol::parse(&m.protocol).map_err(|_| {
                    CniError::config(format!(
                        "field {:?}: {:?} is not tcp, udp or sctp",
                        f("protocol"),
                        m.protocol
                    ))
                })?,
                host_ip: host_ip.filter(|ip| !ip.is_unspecified()),
            })
        })
        .collect()
}

/// Parse and validate the request's config.
pub fn parse(req: &Request) -> Result<PortmapConf, CniError> {
    let raw: Raw = parse_typed(&req.raw)?;
    if let Some(b) = &raw.backend {
        if b != "iptables" && b != "nftables" {
            return Err(CniError::config(format!("field \"backend\": {b:?} is not \"iptables\" or \"nftables\"")));
        }
    }
    if raw.mark_masq_bit.is_some() && raw.external_set_mark_chain.is_some() {
        return Err(CniError::config("fields \"markMasqBit\" and \"externalSetMarkChain\" exclude each other"));
    }
    let mark_masq_bit = match raw.mark_masq_bit {
        None => DEFAULT_MARK_BIT,
        Some(b) if (0..=31).contains(&b) => b as u8,
        Some(b) => return Err(CniError::config(format!("field \"markMasqBit\": {b} is outside 0..31"))),
    };
    if let Some(chain) = &raw.external_set_mark_chain {
        let ok = !chain.is_empty()
            && chain.len() <= 28
            && chain.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
        if !ok {
            return Err(CniError::config(format!("field \"externalSetMarkChain\": {chain:?} is not a valid chain name")));
        }
    }
    Ok(PortmapConf {
        backend: raw.backend,
        snat: raw.snat.unwrap_or(true),
        masq_all: raw.masq_all,
        mark_masq_bit,
        external_set_mark_chain: raw.external_set_mark_chain,
        conditions_v4: raw.conditions_v4,
        conditions_v6: raw.conditions_v6,
        mappings: mappings(req)?,
    })
}

/// The first IPv4 and first IPv6 address of the sandbox interface named `ifname` in `prev`.
pub fn container_addrs(prev: &CniResult, ifname: &str) -> (Option<IpNetwork>, Option<IpNetwork>) {
    let on_iface = |idx: Option<usize>| match idx {
        Some(i) => prev.interfaces.get(i).is_some_and(|f| f.name == ifname && !f.sandbox.is_empty()),
        // A result without interfaces (IPAM-only chains) names no interface: take its addresses.
        None => prev.interfaces.is_empty(),
    };
    let first = |v4: bool| prev.ips.iter().filter(|ip| on_iface(ip.interface)).map(|ip| ip.address).find(|a| a.is_ipv4() == v4);
    (first(true), first(false))
}

/// Build the firewall spec; every mapping must have a container address of its host IP's family.
pub fn spec(req: &Request, conf: &PortmapConf, v4: Option<IpNetwork>, v6: Option<IpNetwork>) -> Result<PortMapSpec, CniError> {
    if v4.is_none() && v6.is_none() {
        return Err(CniError::config(format!(
            "prevResult has no address on container interface {:?} to map ports to",
            req.ifname
        )));
    }
    for (i, m) in conf.mappings.iter().enumerate() {
        if let Some(ip) = m.host_ip {
            let have = if ip.is_ipv4() { v4.is_some() } else { v6.is_some() };
            if !have {
                return Err(CniError::config(format!(
                    "field \"runtimeConfig.portMappings[{i}].hostIP\": {ip} is IPv{} but the container has no such address",
                    if ip.is_ipv4() { 4 } else { 6 }
                )));
            }
        }
    }
    let key = AttachmentKey::new(req.conf.name.clone(), req.container_id.clone(), req.ifname.clone());
    let mut spec = PortMapSpec::new(key, conf.mappings.clone());
    spec.container_v4 = v4;
    spec.container_v6 = v6;
    spec.snat = conf.snat;
    spec.masq_all = conf.masq_all;
    spec.mark_masq_bit = conf.mark_masq_bit;
    spec.external_setmark_chain = conf.external_set_mark_chain.clone();
    spec.conditions_v4 = conf.conditions_v4.clone();
    spec.conditions_v6 = conf.conditions_v6.clone();
    Ok(spec)
}

#[cfg(test)]
mod tests;
