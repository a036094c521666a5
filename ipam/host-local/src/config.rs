//! The `ipam` section of the config and the requested addresses: parsed and validated into typed
//! values. Pure: no I/O, so every rule is unit-tested.
//!
//! Keys of the `ipam` object, of ranges and of routes are matched case-insensitively when no exact
//! match exists, as Go's `encoding/json` (the reference) does, so configs that work with the
//! reference keep working. Unknown keys are ignored, as the reference ignores them.

use crate::range::{canonical, Family, Range, RangeSet};
use cni_common::error::CniError;
use cni_common::result::Route;
use cni_common::version::Version;
use ipnetwork::IpNetwork;
use serde_json::{Map, Value};
use std::collections::HashSet;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

/// Where state lives when `dataDir` is not set.
pub const DEFAULT_DATA_DIR: &str = "/var/lib/cni/networks";

/// Where a requested address came from (named in errors).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    CniArgs,
    ArgsCniIps,
    RuntimeConfigIps,
}

impl std::fmt::Display for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Source::CniArgs => "CNI_ARGS IP",
            Source::ArgsCniIps => "args.cni.ips",
            Source::RuntimeConfigIps => "runtimeConfig.ips",
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Requested {
    pub ip: IpAddr,
    pub source: Source,
}

/// Where the network's state lives: all DEL and GC need.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Storage {
    /// `<dataDir>`
    pub data_dir: PathBuf,
    /// The network name: the directory under `data_dir`.
    pub network: String,
}

impl Storage {
    pub fn dir(&self) -> PathBuf {
        self.data_dir.join(&self.network)
    }
}

/// The complete, validated configuration.
#[derive(Debug, Clone)]
pub struct IpamConfig {
    pub storage: Storage,
    pub resolv_conf: Option<PathBuf>,
    pub routes: Vec<Route>,
    /// In order: `runtimeConfig.ipRanges`, legacy top-level range, `ranges`. The index is `N` of
    /// `last_reserved_ip.N`.
    pub range_sets: Vec<RangeSet>,
    pub requested: Vec<Requested>,
}

/// What the request brings besides the JSON.
pub struct Input<'a> {
    /// The whole config as received on stdin.
    pub raw: &'a Value,
    /// `name` of the config (already checked by skel).
    pub network: &'a str,
    pub version: Version,
    /// `CNI_ARGS` `IP=` value, if any.
    pub cni_args_ip: Option<&'a str>,
}

fn cfg(msg: impl Into<String>) -> CniError {
    CniError::config(msg)
}

/// JSON text of a value, for error messages (short).
fn show(v: &Value) -> String {
    let s = v.to_string();
    if s.len() > 120 {
        format!("{}...", &s[..s.char_indices().take_while(|(i, _)| *i < 117).last().map(|(i, c)| i + c.len_utf8()).unwrap_or(0)])
    } else {
        s
    }
}

/// Look `key` up in `obj`: exact match first, else an ASCII case-insensitive one. `null` counts as
/// absent.
fn get<'a>(obj: &'a Map<String, Value>, key: &str) -> Option<(&'a str, &'a Value)> {
    let found = match obj.get_key_value(key) {
        Some((k, v)) => Some((k.as_str(), v)),
        None => obj.iter().find(|(k, _)| k.eq_ignore_ascii_case(key)).map(|(k, v)| (k.as_str(), v)),
    };
    found.filter(|(_, v)| !v.is_null())
}

/// A string field; an empty string counts as absent (Go decodes `""` to a nil IP or empty path).
fn get_str<'a>(obj: &'a Map<String, Value>, key: &str, path: &str) -> Result<Option<&'a str>, CniError> {
    match get(obj, key) {
        None => Ok(None),
        Some((_, Value::String(s))) => Ok(if s.is_empty() { None } else { Some(s.as_str()) }),
        Some((k, v)) => Err(cfg(format!("{path}.{k}: expected a string, got {}", show(v)))),
    }
}

fn parse_ip(s: &str, what: &str) -> Result<IpAddr, CniError> {
    s.trim()
        .parse::<IpAddr>()
        .map(canonical)
        .map_err(|_| cfg(format!("{what}: {s:?} is not an IP address")))
}

/// An address, or an address with a prefix length (`10.1.2.3/24`; the prefix is ignored, as the
/// reference ignores it).
fn parse_ip_or_cidr(s: &str, what: &str) -> Result<IpAddr, CniError> {
    let addr = s.split_once('/').map(|(a, p)| (a, Some(p))).unwrap_or((s, None));
    if let Some(p) = addr.1 {
        let max = if addr.0.contains(':') { 128 } else { 32 };
        if p.parse::<u8>().ok().filter(|n| *n <= max).is_none() {
            return Err(cfg(format!("{what}: {s:?} has an invalid prefix length")));
        }
    }
    parse_ip(addr.0, what).map_err(|_| cfg(format!("{what}: {s:?} is not an IP address")))
}

fn parse_cidr(s: &str, what: &str) -> Result<IpNetwork, CniError> {
    if !s.contains('/') {
        return Err(cfg(format!("{what}: {s:?} is not a CIDR (expected e.g. \"10.1.0.0/16\")")));
    }
    let n: IpNetwork = s.trim().parse().map_err(|e| cfg(format!("{what}: {s:?} is not a CIDR: {e}")))?;
    if let IpAddr::V6(a) = n.ip() {
        if a.to_ipv4_mapped().is_some() {
            return Err(cfg(format!("{what}: {s:?}: IPv4-mapped IPv6 subnets are not supported; write the IPv4 subnet")));
        }
    }
    Ok(n)
}

/// The `ipam` object.
fn ipam_object(raw: &Value) -> Result<&Map<String, Value>, CniError> {
    let obj = raw.as_object().ok_or_else(|| cfg("config is not a JSON object"))?;
    match get(obj, "ipam") {
        None => Err(cfg("missing \"ipam\" section: host-local needs its configuration there")),
        Some((_, Value::Object(m))) => Ok(m),
        Some((k, v)) => Err(cfg(format!("{k}: expected an object, got {}", show(v)))),
    }
}

/// The network directory must stay inside `dataDir`.
pub fn check_network_name(name: &str) -> Result<(), CniError> {
    let bad = |why: &str| cfg(format!("network name {name:?} {why}: it names the state directory under dataDir"));
    if name.is_empty() {
        return Err(bad("is empty"));
    }
    if name == "." || name == ".." {
        return Err(bad("is a relative directory reference"));
    }
    if name.contains('/') || name.contains('\0') {
        return Err(bad("contains '/' or NUL"));
    }
    if name.len() > 255 {
        return Err(bad("is longer than 255 bytes"));
    }
    Ok(())
}

/// `dataDir` and the network name only: what DEL and GC need, so that a config whose ranges were
/// broken after ADD can still release its addresses.
pub fn parse_storage(raw: &Value, network: &str) -> Result<Storage, CniError> {
    check_network_name(network)?;
    let ipam = ipam_object(raw)?;
    let data_dir = match get_str(ipam, "dataDir", "ipam")? {
        None => PathBuf::from(DEFAULT_DATA_DIR),
        Some(d) => {
            let p = Path::new(d);
            if !p.is_absolute() {
                return Err(cfg(format!("ipam.dataDir: {d:?} is not an absolute path")));
            }
            if d.contains('\0') {
                return Err(cfg(format!("ipam.dataDir: {d:?} contains NUL")));
            }
            p.to_path_buf()
        }
    };
    Ok(Storage { data_dir, network: network.to_string() })
}

fn parse_range(v: &Value, path: &str) -> Result<Range, CniError> {
    let obj = v.as_object().ok_or_else(|| cfg(format!("{path}: expected a range object, got {}", show(v))))?;
    let subnet_s = get_str(obj, "subnet", path)?.ok_or_else(|| cfg(format!("{path}.subnet: missing")))?;
    let subnet = parse_cidr(subnet_s, &format!("{path}.subnet"))?;
    let ip_field = |key: &str| -> Result<Option<IpAddr>, CniError> {
        get_str(obj, key, path)?.map(|s| parse_ip(s, &format!("{path}.{key}"))).transpose()
    };
    let start = ip_field("rangeStart")?;
    let end = ip_field("rangeEnd")?;
    let gateway = ip_field("gateway")?;
    Range::new(subnet, start, end, gateway).map_err(|e| {
        let value = match e.field {
            "subnet" => Some(subnet_s.to_string()),
            f => get_str(obj, f, path).ok().flatten().map(str::to_string),
        };
        match value {
            Some(val) => cfg(format!("{path}.{} {val:?}: {}", e.field, e.reason)),
            None => cfg(format!("{path}.{}: {}", e.field, e.reason)),
        }
    })
}

fn parse_range_set(v: &Value, path: &str) -> Result<RangeSet, CniError> {
    let items = v.as_array().ok_or_else(|| cfg(format!("{path}: expected a list of ranges, got {}", show(v))))?;
    let ranges = items
        .iter()
        .enumerate()
        .map(|(i, r)| parse_range(r, &format!("{path}[{i}]")))
        .collect::<Result<Vec<_>, _>>()?;
    RangeSet::new(ranges).map_err(|(i, why)| match i {
        Some(i) => cfg(format!("{path}[{i}]: {why}")),
        None => cfg(format!("{path}: {why}")),
    })
}

fn parse_range_sets(v: &Value, path: &str) -> Result<Vec<RangeSet>, CniError> {
    let items = v.as_array().ok_or_else(|| cfg(format!("{path}: expected a list of range sets, got {}", show(v))))?;
    items.iter().enumerate().map(|(i, s)| parse_range_set(s, &format!("{path}[{i}]"))).collect()
}

fn parse_route(v: &Value, path: &str) -> Result<Route, CniError> {
    let obj = v.as_object().ok_or_else(|| cfg(format!("{path}: expected a route object, got {}", show(v))))?;
    // Put known keys under their canonical spelling, then let serde read the 1.1 fields.
    let mut canon = Map::new();
    for (k, val) in obj {
        let known = ["dst", "gw", "mtu", "advmss", "priority", "table", "scope"].into_iter().find(|c| c.eq_ignore_ascii_case(k));
        match known {
            Some(c) if !obj.contains_key(c) || c == k => {
                canon.insert(c.to_string(), val.clone());
            }
            _ => {
                canon.entry(k.clone()).or_insert_with(|| val.clone());
            }
        }
    }
    let dst_s = match canon.get("dst") {
        Some(Value::String(s)) => s.clone(),
        None | Some(Value::Null) => return Err(cfg(format!("{path}.dst: missing"))),
        Some(other) => return Err(cfg(format!("{path}.dst: expected a CIDR string, got {}", show(other)))),
    };
    let dst = parse_cidr(&dst_s, &format!("{path}.dst"))?;
    // Like Go's ParseCIDR, keep the network address only.
    let dst = IpNetwork::new(dst.network(), dst.prefix()).expect("valid prefix");
    let gw = match canon.get("gw") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) if s.is_empty() => None,
        Some(Value::String(s)) => Some(parse_ip(s, &format!("{path}.gw"))?),
        Some(other) => return Err(cfg(format!("{path}.gw: expected an IP address string, got {}", show(other)))),
    };
    if let Some(g) = gw {
        if Family::of(g) != Family::of(dst.ip()) {
            return Err(cfg(format!("{path}.gw {g}: not of the family of dst {dst}")));
        }
    }
    canon.remove("dst");
    canon.remove("gw");
    canon.insert("dst".into(), Value::String(dst.to_string()));
    if let Some(g) = gw {
        canon.insert("gw".into(), Value::String(g.to_string()));
    }
    serde_json::from_value::<Route>(Value::Object(canon)).map_err(|e| cfg(format!("{path}: {e} (value {})", show(v))))
}

/// Requested addresses: `args.cni.ips` and `runtimeConfig.ips`, plus `CNI_ARGS IP=` when
/// `args.cni.ips` is absent (the CNI conventions: `args.cni.ips` supersedes `CNI_ARGS`).
/// `CNI_ARGS IP=` may hold several comma-separated addresses. Duplicates are dropped.
pub fn parse_requested(raw: &Value, cni_args_ip: Option<&str>) -> Result<Vec<Requested>, CniError> {
    let list = |v: Option<&Value>, path: &str, source: Source| -> Result<Vec<Requested>, CniError> {
        match v {
            None | Some(Value::Null) => Ok(vec![]),
            Some(Value::Array(items)) => items
                .iter()
                .enumerate()
                .map(|(i, it)| match it {
                    Value::String(s) => Ok(Requested { ip: parse_ip_or_cidr(s, &format!("{path}[{i}]"))?, source }),
                    other => Err(cfg(format!("{path}[{i}]: expected an address string, got {}", show(other)))),
                })
                .collect(),
            Some(other) => Err(cfg(format!("{path}: expected a list of addresses, got {}", show(other)))),
        }
    };
    let args_ips = list(raw.get("args").and_then(|a| a.get("cni")).and_then(|c| c.get("ips")), "args.cni.ips", Source::ArgsCniIps)?;
    let rt_ips = list(raw.get("runtimeConfig").and_then(|r| r.get("ips")), "runtimeConfig.ips", Source::RuntimeConfigIps)?;
    let mut out = Vec::new();
    if args_ips.is_empty() {
        if let Some(s) = cni_args_ip.filter(|s| !s.trim().is_empty()) {
            for part in s.split(',').filter(|p| !p.trim().is_empty()) {
                let ip = parse_ip_or_cidr(part.trim(), "CNI_ARGS IP")
                    .map_err(|_| CniError::invalid_env("CNI_ARGS", format!("IP={s:?}: {part:?} is not an IP address")))?;
                out.push(Requested { ip, source: Source::CniArgs });
            }
        }
    }
    out.extend(args_ips);
    out.extend(rt_ips);
    let mut seen = HashSet::new();
    out.retain(|r| seen.insert(r.ip));
    Ok(out)
}

/// Parse and validate everything ADD, CHECK and STATUS need.
pub fn parse(input: &Input) -> Result<IpamConfig, CniError> {
    let storage = parse_storage(input.raw, input.network)?;
    let ipam = ipam_object(input.raw)?;

    let mut sets: Vec<RangeSet> = Vec::new();
    if let Some(v) = input.raw.get("runtimeConfig").and_then(|r| r.get("ipRanges")).filter(|v| !v.is_null()) {
        sets.extend(parse_range_sets(v, "runtimeConfig.ipRanges")?);
    }
    match get(ipam, "subnet") {
        Some(_) => {
            let r = parse_range(&Value::Object(ipam.clone()), "ipam")?;
            sets.push(RangeSet::new(vec![r]).map_err(|(_, why)| cfg(format!("ipam: {why}")))?);
        }
        None => {
            for key in ["rangeStart", "rangeEnd", "gateway"] {
                if let Some((k, v)) = get(ipam, key) {
                    if v.as_str().is_some_and(|s| !s.is_empty()) {
                        return Err(cfg(format!("ipam.{k} {}: given without ipam.subnet", show(v))));
                    }
                }
            }
        }
    }
    if let Some((k, v)) = get(ipam, "ranges") {
        sets.extend(parse_range_sets(v, &format!("ipam.{k}"))?);
    }
    if sets.is_empty() {
        return Err(cfg("no IP ranges specified: set ipam.ranges (or ipam.subnet, or runtimeConfig.ipRanges)"));
    }
    for i in 0..sets.len() {
        for j in i + 1..sets.len() {
            if sets[i].overlaps(&sets[j]) {
                return Err(cfg(format!("range set {j} ({}) overlaps range set {i} ({})", sets[j], sets[i])));
            }
        }
    }
    if input.version < Version::V0_3_0 {
        for fam in [Family::V4, Family::V6] {
            let n = sets.iter().filter(|s| s.family() == fam).count();
            if n > 1 {
                return Err(cfg(format!(
                    "cniVersion {} allows one address per family, but {n} {fam} range sets are configured (needs 0.3.0 or later)",
                    input.version
                )));
            }
        }
    }

    let resolv_conf = get_str(ipam, "resolvConf", "ipam")?.map(PathBuf::from);
    let routes = match get(ipam, "routes") {
        None => vec![],
        Some((k, Value::Array(items))) => items
            .iter()
            .enumerate()
            .map(|(i, r)| parse_route(r, &format!("ipam.{k}[{i}]")))
            .collect::<Result<Vec<_>, _>>()?,
        Some((k, v)) => return Err(cfg(format!("ipam.{k}: expected a list of routes, got {}", show(v)))),
    };
    let requested = parse_requested(input.raw, input.cni_args_ip)?;
    Ok(IpamConfig { storage, resolv_conf, routes, range_sets: sets, requested })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn input(raw: &Value) -> Input<'_> {
        Input { raw, network: "net1", version: Version::V1_0_0, cni_args_ip: None }
    }

    fn parse_v(raw: Value) -> Result<IpamConfig, CniError> {
        parse(&input(&raw))
    }

    fn err_of(raw: Value) -> String {
        let e = parse_v(raw).unwrap_err();
        assert_eq!(e.code(), 7, "{e}");
        e.to_string()
    }

    #[test]
    fn minimal_and_defaults() {
        let c = parse_v(json!({"ipam": {"type": "host-local", "ranges": [[{"subnet": "10.0.0.0/24"}]]}})).unwrap();
        assert_eq!(c.storage.data_dir, PathBuf::from(DEFAULT_DATA_DIR));
        assert_eq!(c.storage.dir(), PathBuf::from("/var/lib/cni/networks/net1"));
        assert_eq!(c.range_sets.len(), 1);
        let r = &c.range_sets[0].ranges[0];
        assert_eq!(r.gateway.to_string(), "10.0.0.1");
        assert_eq!(r.start.to_string(), "10.0.0.2");
        assert_eq!(r.end.to_string(), "10.0.0.254");
        assert!(c.routes.is_empty() && c.resolv_conf.is_none() && c.requested.is_empty());
    }

    #[test]
    fn order_runtime_legacy_ranges() {
        let c = parse_v(json!({
            "runtimeConfig": {"ipRanges": [[{"subnet": "10.9.0.0/24"}]]},
            "ipam": {"subnet": "10.1.0.0/24", "gateway": "10.1.0.254", "ranges": [[{"subnet": "fd00::/64"}]]}
        }))
        .unwrap();
        let subs: Vec<String> = c.range_sets.iter().map(|s| s.ranges[0].subnet.to_string()).collect();
        assert_eq!(subs, ["10.9.0.0/24", "10.1.0.0/24", "fd00::/64"]);
        assert_eq!(c.range_sets[1].ranges[0].gateway.to_string(), "10.1.0.254");
    }

    #[test]
    fn case_insensitive_keys_like_go() {
        let c = parse_v(json!({"ipam": {"Ranges": [[{"SUBNET": "10.0.0.0/24", "rangestart": "10.0.0.10"}]], "datadir": "/tmp/x"}})).unwrap();
        assert_eq!(c.range_sets[0].ranges[0].start.to_string(), "10.0.0.10");
        assert_eq!(c.storage.data_dir, PathBuf::from("/tmp/x"));
    }

    #[test]
    fn empty_strings_are_absent() {
        let c = parse_v(json!({"ipam": {"ranges": [[{"subnet": "10.0.0.0/24", "gateway": "", "rangeStart": ""}]], "dataDir": ""}})).unwrap();
        assert_eq!(c.range_sets[0].ranges[0].gateway.to_string(), "10.0.0.1");
        assert_eq!(c.storage.data_dir, PathBuf::from(DEFAULT_DATA_DIR));
    }

    #[test]
    fn validation_errors_name_field_and_value() {
        let e = err_of(json!({"ipam": {"ranges": [[{"subnet": "10.0.0.1/24"}]]}}));
        assert!(e.contains("ipam.ranges[0][0].subnet") && e.contains("10.0.0.1/24") && e.contains("host bits"), "{e}");
        let e = err_of(json!({"ipam": {"ranges": [[{"subnet": "10.0.0.0/24", "rangeStart": "10.0.1.1"}]]}}));
        assert!(e.contains("rangeStart") && e.contains("10.0.1.1"), "{e}");
        let e = err_of(json!({"ipam": {"ranges": [[{"subnet": "10.0.0.0/24", "rangeEnd": "10.0.2.1"}]]}}));
        assert!(e.contains("rangeEnd") && e.contains("10.0.2.1"), "{e}");
        let e = err_of(json!({"ipam": {"ranges": [[{"subnet": "10.0.0.0/24", "rangeStart": "10.0.0.9", "rangeEnd": "10.0.0.3"}]]}}));
        assert!(e.contains("rangeEnd") && e.contains("before"), "{e}");
        let e = err_of(json!({"ipam": {"ranges": [[{"subnet": "10.0.0.0/31"}]]}}));
        assert!(e.contains("too small") && e.contains("10.0.0.0/31"), "{e}");
        let e = err_of(json!({"ipam": {"ranges": [[{"subnet": "10.0.0.0/24"}], [{"subnet": "10.0.0.0/25"}]]}}));
        assert!(e.contains("overlaps"), "{e}");
        let e = err_of(json!({"ipam": {"ranges": [[{"subnet": "10.0.0.0/24"}, {"subnet": "10.0.0.128/25"}]]}}));
        assert!(e.contains("overlaps") && e.contains("ipam.ranges[0][1]"), "{e}");
        let e = err_of(json!({"ipam": {"ranges": [[{"subnet": "10.0.0.0/24"}, {"subnet": "fd00::/64"}]]}}));
        assert!(e.contains("families"), "{e}");
        let e = err_of(json!({"ipam": {"ranges": [[{"subnet": "nonsense"}]]}}));
        assert!(e.contains("nonsense"), "{e}");
        let e = err_of(json!({"ipam": {"ranges": [[{"subnet": "10.0.0.0/24", "gateway": "10.0.0.300"}]]}}));
        assert!(e.contains("gateway") && e.contains("10.0.0.300"), "{e}");
        let e = err_of(json!({"ipam": {"ranges": [[]]}}));
        assert!(e.contains("empty range set"), "{e}");
        let e = err_of(json!({"ipam": {"ranges": []}}));
        assert!(e.contains("no IP ranges"), "{e}");
        let e = err_of(json!({"ipam": {"rangeStart": "10.0.0.5"}}));
        assert!(e.contains("without ipam.subnet"), "{e}");
        let e = err_of(json!({"ipam": {"ranges": [[{"subnet": "10.0.0.0/24"}]], "dataDir": "relative/dir"}}));
        assert!(e.contains("dataDir") && e.contains("relative/dir"), "{e}");
        let e = err_of(json!({"ipam": {"ranges": "10.0.0.0/24"}}));
        assert!(e.contains("ipam.ranges"), "{e}");
        let e = err_of(json!({"ipam": {"ranges": [[{"subnet": "10.0.0.0/24"}]], "routes": [{"dst": "nope"}]}}));
        assert!(e.contains("routes[0].dst") && e.contains("nope"), "{e}");
        let e = err_of(json!({"ipam": {"ranges": [[{"subnet": "10.0.0.0/24"}]], "routes": [{"gw": "10.0.0.1"}]}}));
        assert!(e.contains("routes[0].dst: missing"), "{e}");
        let e = err_of(json!({"ipam": {"ranges": [[{"subnet": 5}]]}}));
        assert!(e.contains("subnet") && e.contains('5'), "{e}");
        let e = err_of(json!({"type": "host-local"}));
        assert!(e.contains("ipam"), "{e}");
        let e = err_of(json!({"ipam": {"subnet": "10.0.0.0/24", "routes": [{"dst": "0.0.0.0/0", "gw": "fd00::1"}]}}));
        assert!(e.contains("gw"), "{e}");
    }

    #[test]
    fn legacy_range_messages() {
        let e = err_of(json!({"ipam": {"subnet": "10.0.0.1/24"}}));
        assert!(e.contains("subnet") && e.contains("10.0.0.1/24"), "{e}");
    }

    #[test]
    fn one_address_per_family_before_030() {
        let raw = json!({"ipam": {"ranges": [[{"subnet": "10.0.0.0/24"}], [{"subnet": "10.1.0.0/24"}]]}});
        let mut inp = input(&raw);
        assert!(parse(&inp).is_ok());
        inp.version = Version::V0_2_0;
        let e = parse(&inp).unwrap_err();
        assert!(e.to_string().contains("one address per family"), "{e}");
        let raw = json!({"ipam": {"ranges": [[{"subnet": "10.0.0.0/24"}], [{"subnet": "fd00::/64"}]]}});
        let inp = Input { raw: &raw, network: "n", version: Version::V0_2_0, cni_args_ip: None };
        assert!(parse(&inp).is_ok());
    }

    #[test]
    fn routes_keep_network_address_and_extra_fields() {
        let c = parse_v(json!({"ipam": {"subnet": "10.0.0.0/24", "routes": [
            {"dst": "0.0.0.0/0"}, {"DST": "10.9.9.9/8", "gw": "10.0.0.7", "mtu": 1400}]}}))
        .unwrap();
        assert_eq!(c.routes[0].dst.to_string(), "0.0.0.0/0");
        assert_eq!(c.routes[1].dst.to_string(), "10.0.0.0/8");
        assert_eq!(c.routes[1].gw.unwrap().to_string(), "10.0.0.7");
        assert_eq!(c.routes[1].mtu, Some(1400));
    }

    #[test]
    fn requested_sources() {
        let raw = json!({"args": {"cni": {"ips": ["10.0.0.5/24"]}}, "runtimeConfig": {"ips": ["fd00::5", "10.0.0.5"]}});
        let r = parse_requested(&raw, Some("10.0.0.9")).unwrap();
        // args.cni.ips supersedes CNI_ARGS; duplicates dropped.
        assert_eq!(r.len(), 2);
        assert_eq!((r[0].ip.to_string(), r[0].source), ("10.0.0.5".into(), Source::ArgsCniIps));
        assert_eq!((r[1].ip.to_string(), r[1].source), ("fd00::5".into(), Source::RuntimeConfigIps));
        let r = parse_requested(&json!({}), Some("10.0.0.9,fd00::9")).unwrap();
        assert_eq!(r.len(), 2);
        assert_eq!(r[0].source, Source::CniArgs);
        let e = parse_requested(&json!({}), Some("10.0.0.999")).unwrap_err();
        assert_eq!(e.code(), 4);
        let e = parse_requested(&json!({"args": {"cni": {"ips": ["x"]}}}), None).unwrap_err();
        assert!(e.to_string().contains("args.cni.ips[0]"), "{e}");
        let e = parse_requested(&json!({"runtimeConfig": {"ips": "10.0.0.1"}}), None).unwrap_err();
        assert!(e.to_string().contains("runtimeConfig.ips"), "{e}");
        let e = parse_requested(&json!({"runtimeConfig": {"ips": ["10.0.0.1/40"]}}), None).unwrap_err();
        assert!(e.to_string().contains("prefix"), "{e}");
    }

    #[test]
    fn network_names() {
        for bad in ["", ".", "..", "a/b", "../x", "a\0b"] {
            assert_eq!(check_network_name(bad).unwrap_err().code(), 7, "{bad:?}");
        }
        assert!(check_network_name("a..b").is_ok());
        assert!(parse_storage(&json!({"ipam": {}}), "../../etc").is_err());
    }
}
