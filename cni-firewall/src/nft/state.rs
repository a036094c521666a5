//! What the kernel holds: one table parsed from `nft -j list table`.

use super::ops::{DataType, Element, Expr, Rule, SetData, Value, Verdict};
use crate::{CniError, Protocol};
use serde_json::Value as J;
use std::collections::BTreeMap;
use std::net::IpAddr;

#[derive(Debug, Clone, Default, PartialEq)]
pub struct TableState {
    pub chains: BTreeMap<String, ChainState>,
    pub sets: BTreeMap<String, SetState>,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct ChainState {
    pub name: String,
    /// Hook name for base chains.
    pub hook: Option<String>,
    pub rules: Vec<RuleState>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct RuleState {
    pub handle: u64,
    pub exprs: RuleExprs,
    pub comment: Option<String>,
}

/// A rule's statements as its reader got them. Two are equal when they print the same.
#[derive(Debug, Clone)]
pub enum RuleExprs {
    /// Decoded from netlink into the statements plans are written in (compared as they are).
    Decoded(Vec<Expr>),
    /// The `expr` array as `nft -j` prints it, or the netlink reader's placeholder for a rule it
    /// cannot raise to statements (compared as JSON).
    Json(J),
}

impl PartialEq for RuleExprs {
    fn eq(&self, other: &RuleExprs) -> bool {
        match (self, other) {
            (RuleExprs::Decoded(a), RuleExprs::Decoded(b)) => a == b,
            (RuleExprs::Json(a), RuleExprs::Json(b)) => a == b,
            _ => self.json() == other.json(),
        }
    }
}

impl RuleExprs {
    /// The `expr` array as `nft -j` prints it.
    pub fn json(&self) -> J {
        match self {
            RuleExprs::Decoded(exprs) => Rule::new(exprs.clone()).exprs_json(),
            RuleExprs::Json(j) => j.clone(),
        }
    }
}

impl RuleState {
    /// The names of the sets and maps the rule looks up (`@name`): from the statements when the
    /// rule was decoded to them (no JSON built), else from its `nft -j` form.
    pub fn sets_used(&self) -> Vec<String> {
        fn walk(j: &J, out: &mut Vec<String>) {
            match j {
                J::String(s) => {
                    if let Some(name) = s.strip_prefix('@') {
                        out.push(name.to_string());
                    }
                }
                J::Array(a) => a.iter().for_each(|x| walk(x, out)),
                J::Object(o) => o.values().for_each(|x| walk(x, out)),
                _ => {}
            }
        }
        match &self.exprs {
            RuleExprs::Decoded(exprs) => exprs.iter().filter_map(Expr::set_used).map(str::to_string).collect(),
            RuleExprs::Json(j) => {
                let mut out = Vec::new();
                walk(j, &mut out);
                out
            }
        }
    }

    /// Whether this is `rule` (same statements and comment).
    pub fn matches(&self, rule: &Rule) -> bool {
        self.comment == rule.comment
            && match &self.exprs {
                RuleExprs::Decoded(exprs) => *exprs == rule.exprs,
                RuleExprs::Json(j) => *j == rule.exprs_json(),
            }
    }
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct SetState {
    pub name: String,
    pub key: Vec<DataType>,
    /// What elements map to (nothing, a verdict, values).
    pub data: SetData,
    /// `flags interval`.
    pub interval: bool,
    /// Elements we could parse (keys and data of the types above).
    pub elems: Vec<Element>,
}

impl SetState {
    /// Elements whose verdict jumps/goes to `chain`.
    pub fn pointing_to<'a>(&'a self, chain: &'a str) -> impl Iterator<Item = &'a Element> + 'a {
        self.elems.iter().filter(move |e| e.verdict.as_ref().and_then(|v| v.target()) == Some(chain))
    }
    pub fn get(&self, key: &[Value]) -> Option<&Element> {
        self.elems.iter().find(|e| e.key == key)
    }
}

impl TableState {
    /// Parse the output of `nft -j list table <family> <name>`.
    pub fn parse(json_text: &str) -> Result<TableState, CniError> {
        let v: J = serde_json::from_str(json_text)
            .map_err(|e| CniError::Firewall(format!("cannot parse nft JSON output: {e}")))?;
        let items = v
            .get("nftables")
            .and_then(J::as_array)
            .ok_or_else(|| CniError::Firewall("nft JSON output has no \"nftables\" array".into()))?;
        let mut st = TableState::default();
        for item in items {
            if let Some(c) = item.get("chain") {
                let name = c.get("name").and_then(J::as_str).unwrap_or_default().to_string();
                let hook = c.get("hook").and_then(J::as_str).map(str::to_string);
                st.chains.entry(name.clone()).or_insert_with(|| ChainState { name, hook, rules: Vec::new() });
            } else if let Some(s) = item.get("set").or_else(|| item.get("map")) {
                let set = parse_set(s, item.get("map").is_some());
                st.sets.insert(set.name.clone(), set);
            } else if let Some(r) = item.get("rule") {
                let chain = r.get("chain").and_then(J::as_str).unwrap_or_default().to_string();
                let rule = RuleState {
                    handle: r.get("handle").and_then(J::as_u64).unwrap_or(0),
                    exprs: RuleExprs::Json(r.get("expr").cloned().unwrap_or(J::Array(vec![]))),
                    comment: r.get("comment").and_then(J::as_str).map(str::to_string),
                };
                st.chains
                    .entry(chain.clone())
                    .or_insert_with(|| ChainState { name: chain, hook: None, rules: Vec::new() })
                    .rules
                    .push(rule);
            }
        }
        Ok(st)
    }

    pub fn chain(&self, name: &str) -> Option<&ChainState> {
        self.chains.get(name)
    }
    pub fn set(&self, name: &str) -> Option<&SetState> {
        self.sets.get(name)
    }
}

fn type_of_name(s: &str) -> Option<DataType> {
    match s {
        "ipv4_addr" => Some(DataType::Ipv4Addr),
        "ipv6_addr" => Some(DataType::Ipv6Addr),
        "inet_proto" => Some(DataType::InetProto),
        "inet_service" => Some(DataType::InetService),
        "ifname" => Some(DataType::Ifname),
        "mark" => Some(DataType::Mark),
        _ => None,
    }
}

/// A type as `nft -j` prints it: `"ipv4_addr"`, `["inet_proto", "inet_service"]` (keys) or
/// `"ipv4_addr . inet_service"` (map data). `None` when a part is a type our layouts do not use.
fn parse_type(t: Option<&J>) -> Option<Vec<DataType>> {
    match t {
        Some(J::String(s)) => s.split(" . ").map(type_of_name).collect(),
        Some(J::Array(a)) => a.iter().map(|x| x.as_str().and_then(type_of_name)).collect(),
        _ => None,
    }
}

fn parse_set(s: &J, is_map: bool) -> SetState {
    let name = s.get("name").and_then(J::as_str).unwrap_or_default().to_string();
    let key = parse_type(s.get("type")).unwrap_or_default();
    let data = match s.get("map") {
        Some(J::String(v)) if is_map && v == "verdict" => SetData::Verdict,
        Some(m) if is_map => SetData::Values(parse_type(Some(m)).unwrap_or_default()),
        _ => SetData::None,
    };
    let interval = s.get("flags").and_then(J::as_array).is_some_and(|f| f.iter().any(|x| x.as_str() == Some("interval")));
    let mut elems = Vec::new();
    if let Some(list) = s.get("elem").and_then(J::as_array) {
        for e in list {
            let (k, d) = if is_map {
                match e.as_array() {
                    Some(pair) if pair.len() == 2 => (&pair[0], Some(&pair[1])),
                    _ => continue,
                }
            } else {
                (e, None)
            };
            let Some(keyv) = parse_key(k, &key) else { continue };
            let elem = match (&data, d) {
                (SetData::Verdict, Some(d)) => match parse_verdict(d) {
                    Some(v) => Element::verdict(keyv, v),
                    None => continue,
                },
                (SetData::Values(types), Some(d)) => match parse_key(d, types) {
                    Some(values) => Element::data(keyv, values),
                    None => continue,
                },
                (SetData::None, None) => Element::key(keyv),
                _ => continue,
            };
            elems.push(elem);
        }
    }
    SetState { name, key, data, interval, elems }
}

fn parse_key(k: &J, types: &[DataType]) -> Option<Vec<Value>> {
    // {"elem": {"val": ..., "comment": ...}} wraps keys carrying element options.
    let k = k.get("elem").and_then(|e| e.get("val")).unwrap_or(k);
    if let Some(parts) = k.get("concat").and_then(J::as_array) {
        if parts.len() != types.len() {
            return None;
        }
        parts.iter().zip(types).map(|(p, t)| parse_value(p, *t)).collect()
    } else if types.len() == 1 {
        Some(vec![parse_value(k, types[0])?])
    } else {
        None
    }
}

fn parse_value(v: &J, t: DataType) -> Option<Value> {
    match t {
        DataType::Ipv4Addr | DataType::Ipv6Addr => {
            if let Some(s) = v.as_str() {
                return s.parse::<IpAddr>().ok().map(Value::Addr);
            }
            let p = v.get("prefix")?;
            let addr: IpAddr = p.get("addr")?.as_str()?.parse().ok()?;
            let len = u8::try_from(p.get("len")?.as_u64()?).ok()?;
            Some(Value::Prefix(ipnetwork::IpNetwork::new(addr, len).ok()?))
        }
        DataType::InetProto => match v.as_str()? {
            "tcp" => Some(Value::Proto(Protocol::Tcp)),
            "udp" => Some(Value::Proto(Protocol::Udp)),
            "sctp" => Some(Value::Proto(Protocol::Sctp)),
            _ => None,
        },
        DataType::InetService => Some(Value::Port(u16::try_from(v.as_u64()?).ok()?)),
        DataType::Ifname => Some(Value::Ifname(v.as_str()?.to_string())),
        DataType::Mark => Some(Value::Mark(u32::try_from(v.as_u64()?).ok()?)),
    }
}

fn parse_verdict(d: &J) -> Option<Verdict> {
    if let Some(j) = d.get("jump") {
        return Some(Verdict::Jump(j.get("target")?.as_str()?.to_string()));
    }
    if let Some(g) = d.get("goto") {
        return Some(Verdict::Goto(g.get("target")?.as_str()?.to_string()));
    }
    let o = d.as_object()?;
    if o.contains_key("accept") {
        Some(Verdict::Accept)
    } else if o.contains_key("drop") {
        Some(Verdict::Drop)
    } else if o.contains_key("return") {
        Some(Verdict::Return)
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Captured from nft 1.0.6 (`nft -j list table inet t`), trimmed.
    const SAMPLE: &str = r#"{"nftables": [{"metainfo": {"version": "1.0.6", "json_schema_version": 1}},
 {"table": {"family": "inet", "name": "t", "handle": 1}},
 {"map": {"family": "inet", "name": "any4", "table": "t", "type": ["inet_proto", "inet_service"], "handle": 8, "map": "verdict", "elem": [[{"concat": ["tcp", 8080]}, {"goto": {"target": "c"}}]]}},
 {"map": {"family": "inet", "name": "v6", "table": "t", "type": "ipv6_addr", "handle": 4, "map": "verdict", "elem": [["fd00::5", {"goto": {"target": "c1"}}], [{"elem": {"val": "fd00::6", "comment": "x"}}, {"jump": {"target": "c2"}}]]}},
 {"set": {"family": "inet", "name": "iso", "table": "t", "type": "ifname", "handle": 14, "elem": ["br1", "br2"]}},
 {"chain": {"family": "inet", "table": "t", "name": "c", "handle": 1}},
 {"chain": {"family": "inet", "table": "t", "name": "post", "handle": 10, "type": "nat", "hook": "postrouting", "prio": 100, "policy": "accept"}},
 {"rule": {"family": "inet", "table": "t", "chain": "c", "handle": 5, "comment": "k", "expr": [{"match": {"op": "==", "left": {"payload": {"protocol": "ip", "field": "saddr"}}, "right": "127.0.0.1"}}, {"masquerade": null}]}}
]}"#;

    #[test]
    fn parse_sample() {
        let st = TableState::parse(SAMPLE).unwrap();
        assert_eq!(st.chains.len(), 2);
        assert_eq!(st.chain("post").unwrap().hook.as_deref(), Some("postrouting"));
        let c = st.chain("c").unwrap();
        assert_eq!(c.rules.len(), 1);
        assert_eq!(c.rules[0].comment.as_deref(), Some("k"));
        let any4 = st.set("any4").unwrap();
        assert_eq!(any4.data, SetData::Verdict);
        assert_eq!(any4.elems[0].key, vec![Value::Proto(Protocol::Tcp), Value::Port(8080)]);
        assert_eq!(any4.pointing_to("c").count(), 1);
        let v6 = st.set("v6").unwrap();
        assert_eq!(v6.elems.len(), 2);
        assert_eq!(v6.elems[1].verdict, Some(Verdict::Jump("c2".into())));
        let iso = st.set("iso").unwrap();
        assert_eq!(iso.elems.len(), 2);
        assert_eq!(iso.elems[1].key, vec![Value::Ifname("br2".into())]);
    }

    #[test]
    fn sets_used_names_the_sets_a_rule_looks_up_whichever_form_it_was_read_in() {
        use crate::Family;
        use super::super::ops::Field;
        let exprs = vec![
            // an interface named like a set reference is a value, not a set
            Expr::Cmp { field: Field::Iifname, negate: false, value: Value::Ifname("@br".into()) },
            Expr::Lookup { key: vec![Field::Saddr(Family::V4)], set: "pairs4".into(), negate: true },
            Expr::DnatMap { family: Family::V4, key: vec![Field::L4proto, Field::ThDport], map: "dnat4".into() },
            Expr::Vmap { key: vec![Field::Daddr(Family::V4)], map: "jumps".into() },
            Expr::Masquerade,
        ];
        let decoded = RuleState { handle: 1, exprs: RuleExprs::Decoded(exprs.clone()), comment: None };
        assert_eq!(decoded.sets_used(), vec!["pairs4", "dnat4", "jumps"]);
        // The nft -j form of the same statements (the reader of `nft -j`): the same sets, and the
        // interface too, which that form cannot tell from a set reference.
        let json = RuleState { handle: 1, exprs: RuleExprs::Json(Rule::new(exprs).exprs_json()), comment: None };
        assert_eq!(json.sets_used(), vec!["br", "pairs4", "dnat4", "jumps"]);
    }
}
