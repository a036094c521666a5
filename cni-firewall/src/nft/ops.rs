//! Abstract nftables operations and rules, rendered as `nft -f` script text (for the exec executor)
//! and as the JSON `nft -j list` prints (to compare with what the kernel holds).
//!
//! Only the small vocabulary the layouts need exists here; every value is typed (addresses, ports,
//! validated names), so the rendered script cannot be steered by data.

use crate::{Family, Protocol};
use ipnetwork::IpNetwork;
use serde_json::{json, Value as J};
use std::net::IpAddr;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TableFamily {
    Inet,
    Ip,
    Ip6,
}

impl TableFamily {
    pub fn as_str(&self) -> &'static str {
        match self {
            TableFamily::Inet => "inet",
            TableFamily::Ip => "ip",
            TableFamily::Ip6 => "ip6",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct TableRef {
    pub family: TableFamily,
    pub name: String,
}

impl TableRef {
    pub fn inet(name: &str) -> Self {
        TableRef { family: TableFamily::Inet, name: name.to_string() }
    }
    fn text(&self) -> String {
        format!("{} {}", self.family.as_str(), self.name)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChainType {
    Nat,
    Filter,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hook {
    Prerouting,
    Input,
    Forward,
    Output,
    Postrouting,
}

impl Hook {
    pub fn as_str(&self) -> &'static str {
        match self {
            Hook::Prerouting => "prerouting",
            Hook::Input => "input",
            Hook::Forward => "forward",
            Hook::Output => "output",
            Hook::Postrouting => "postrouting",
        }
    }
}

/// A base chain: attached to a hook with a priority, policy accept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BaseChain {
    pub kind: ChainType,
    pub hook: Hook,
    /// Numeric priority (dstnat = -100, filter = 0, srcnat = 100).
    pub priority: i32,
}

/// Element/key data types of sets and maps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DataType {
    Ipv4Addr,
    Ipv6Addr,
    InetProto,
    InetService,
    Ifname,
    /// A 32-bit mark (`mark`): the parts of an owner id in map data.
    Mark,
}

impl DataType {
    pub fn as_str(&self) -> &'static str {
        match self {
            DataType::Ipv4Addr => "ipv4_addr",
            DataType::Ipv6Addr => "ipv6_addr",
            DataType::InetProto => "inet_proto",
            DataType::InetService => "inet_service",
            DataType::Ifname => "ifname",
            DataType::Mark => "mark",
        }
    }
    pub fn addr(fam: Family) -> DataType {
        match fam {
            Family::V4 => DataType::Ipv4Addr,
            Family::V6 => DataType::Ipv6Addr,
        }
    }
}

/// What the elements of a set map to.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum SetData {
    /// Nothing: a set.
    #[default]
    None,
    /// A verdict: a verdict map.
    Verdict,
    /// Values of these types (a concatenation when several): a data map.
    Values(Vec<DataType>),
}

/// A set or map definition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SetDef {
    pub name: String,
    pub key: Vec<DataType>,
    pub data: SetData,
    /// `flags interval`: keys are ranges, one per field (written as prefixes or single values).
    pub interval: bool,
}

impl SetDef {
    pub fn set(name: impl Into<String>, key: Vec<DataType>) -> Self {
        SetDef { name: name.into(), key, data: SetData::None, interval: false }
    }
    pub fn interval_set(name: impl Into<String>, key: Vec<DataType>) -> Self {
        SetDef { name: name.into(), key, data: SetData::None, interval: true }
    }
    pub fn vmap(name: impl Into<String>, key: Vec<DataType>) -> Self {
        SetDef { name: name.into(), key, data: SetData::Verdict, interval: false }
    }
    pub fn map(name: impl Into<String>, key: Vec<DataType>, data: Vec<DataType>) -> Self {
        SetDef { name: name.into(), key, data: SetData::Values(data), interval: false }
    }
    pub fn is_map(&self) -> bool {
        self.data != SetData::None
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Verdict {
    Accept,
    Drop,
    Return,
    Jump(String),
    Goto(String),
}

impl Verdict {
    pub fn text(&self) -> String {
        match self {
            Verdict::Accept => "accept".into(),
            Verdict::Drop => "drop".into(),
            Verdict::Return => "return".into(),
            Verdict::Jump(c) => format!("jump {c}"),
            Verdict::Goto(c) => format!("goto {c}"),
        }
    }
    pub fn json(&self) -> J {
        match self {
            Verdict::Accept => json!({"accept": null}),
            Verdict::Drop => json!({"drop": null}),
            Verdict::Return => json!({"return": null}),
            Verdict::Jump(c) => json!({"jump": {"target": c}}),
            Verdict::Goto(c) => json!({"goto": {"target": c}}),
        }
    }
    /// The chain a jump/goto leads to.
    pub fn target(&self) -> Option<&str> {
        match self {
            Verdict::Jump(c) | Verdict::Goto(c) => Some(c),
            _ => None,
        }
    }
}

/// A typed value in a rule or an element key.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Value {
    Addr(IpAddr),
    Prefix(IpNetwork),
    Proto(Protocol),
    Port(u16),
    Ifname(String),
    Mark(u32),
}

impl Value {
    pub fn text(&self) -> String {
        match self {
            Value::Addr(a) => a.to_string(),
            Value::Prefix(p) => {
                if is_host(p) {
                    p.ip().to_string()
                } else {
                    format!("{}/{}", p.network(), p.prefix())
                }
            }
            Value::Proto(p) => p.as_str().to_string(),
            Value::Port(p) => p.to_string(),
            // Interface names are validated (no quotes, backslashes, whitespace or control characters).
            Value::Ifname(s) => format!("\"{s}\""),
            Value::Mark(m) => format!("0x{m:08x}"),
        }
    }
    pub fn json(&self) -> J {
        match self {
            Value::Addr(a) => json!(a.to_string()),
            Value::Prefix(p) => {
                if is_host(p) {
                    json!(p.ip().to_string())
                } else {
                    json!({"prefix": {"addr": p.network().to_string(), "len": p.prefix()}})
                }
            }
            Value::Proto(p) => json!(p.as_str()),
            Value::Port(p) => json!(p),
            Value::Ifname(s) => json!(s),
            Value::Mark(m) => json!(m),
        }
    }
}

fn is_host(p: &IpNetwork) -> bool {
    match p {
        IpNetwork::V4(n) => n.prefix() == 32,
        IpNetwork::V6(n) => n.prefix() == 128,
    }
}

/// Packet fields rules look at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Field {
    Saddr(Family),
    Daddr(Family),
    Nfproto,
    L4proto,
    /// Transport header destination port, any protocol (`th dport`).
    ThDport,
    /// Destination port of one protocol (`tcp dport`), implies the protocol.
    Dport(Protocol),
    Iifname,
    Oifname,
    /// The source address masked to its first `n` bits (`ip saddr & 255.255.255.0`), `n` less
    /// than the address length (a whole address is [`Field::Saddr`]).
    SaddrMasked(Family, u8),
    /// The destination address masked likewise.
    DaddrMasked(Family, u8),
}

/// The netmask of the first `prefix` bits of a `fam` address.
pub fn netmask(fam: Family, prefix: u8) -> IpAddr {
    match fam {
        Family::V4 => IpAddr::from(u32::MAX.checked_shl(32 - u32::from(prefix.min(32))).unwrap_or(0).to_be_bytes()),
        Family::V6 => IpAddr::from(u128::MAX.checked_shl(128 - u32::from(prefix.min(128))).unwrap_or(0).to_be_bytes()),
    }
}

impl Field {
    fn text(&self) -> String {
        match self {
            Field::Saddr(f) => format!("{} saddr", ip_kw(*f)),
            Field::Daddr(f) => format!("{} daddr", ip_kw(*f)),
            Field::SaddrMasked(f, n) => format!("{} saddr & {}", ip_kw(*f), netmask(*f, *n)),
            Field::DaddrMasked(f, n) => format!("{} daddr & {}", ip_kw(*f), netmask(*f, *n)),
            Field::Nfproto => "meta nfproto".into(),
            Field::L4proto => "meta l4proto".into(),
            Field::ThDport => "th dport".into(),
            Field::Dport(p) => format!("{} dport", p.as_str()),
            Field::Iifname => "iifname".into(),
            Field::Oifname => "oifname".into(),
        }
    }
    fn json(&self) -> J {
        match self {
            Field::Saddr(f) => json!({"payload": {"protocol": ip_kw(*f), "field": "saddr"}}),
            Field::Daddr(f) => json!({"payload": {"protocol": ip_kw(*f), "field": "daddr"}}),
            Field::Nfproto => json!({"meta": {"key": "nfproto"}}),
            Field::L4proto => json!({"meta": {"key": "l4proto"}}),
            Field::ThDport => json!({"payload": {"protocol": "th", "field": "dport"}}),
            Field::Dport(p) => json!({"payload": {"protocol": p.as_str(), "field": "dport"}}),
            Field::Iifname => json!({"meta": {"key": "iifname"}}),
            Field::Oifname => json!({"meta": {"key": "oifname"}}),
            Field::SaddrMasked(f, n) => json!({"&": [Field::Saddr(*f).json(), netmask(*f, *n).to_string()]}),
            Field::DaddrMasked(f, n) => json!({"&": [Field::Daddr(*f).json(), netmask(*f, *n).to_string()]}),
        }
    }

    /// The field unmasked, and the prefix length it is masked to (`None` for unmasked fields).
    pub fn unmasked(self) -> (Field, Option<u8>) {
        match self {
            Field::SaddrMasked(f, n) => (Field::Saddr(f), Some(n)),
            Field::DaddrMasked(f, n) => (Field::Daddr(f), Some(n)),
            other => (other, None),
        }
    }
}

fn ip_kw(f: Family) -> &'static str {
    match f {
        Family::V4 => "ip",
        Family::V6 => "ip6",
    }
}

fn nfproto_kw(f: Family) -> &'static str {
    match f {
        Family::V4 => "ipv4",
        Family::V6 => "ipv6",
    }
}

fn fields_text(fields: &[Field]) -> String {
    fields.iter().map(Field::text).collect::<Vec<_>>().join(" . ")
}

fn fields_json(fields: &[Field]) -> J {
    if fields.len() == 1 {
        fields[0].json()
    } else {
        json!({"concat": fields.iter().map(Field::json).collect::<Vec<_>>()})
    }
}

/// One statement of a rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Expr {
    /// `field == value` / `field != value`.
    Cmp { field: Field, negate: bool, value: Value },
    /// `meta nfproto ipv4|ipv6`.
    Nfproto(Family),
    /// `field(s) [!=] @set`.
    Lookup { key: Vec<Field>, set: String, negate: bool },
    /// `field(s) vmap @map`.
    Vmap { key: Vec<Field>, map: String },
    /// `fib daddr type local`.
    FibDaddrLocal,
    /// `ct status dnat`.
    CtStatusDnat,
    /// `ct direction reply`.
    CtDirectionReply,
    Masquerade,
    /// `dnat ip to A:P` / `dnat ip6 to [A]:P`.
    Dnat { addr: IpAddr, port: u16 },
    /// `dnat ip to <key> map @map` (`ip6` for V6): address and port from the map's data
    /// (`ipvX_addr . inet_service`); no match when the key is not in the map.
    DnatMap { family: Family, key: Vec<Field>, map: String },
    Verdict(Verdict),
}

impl Expr {
    /// The set or map the statement looks up (`@name`), if any.
    pub fn set_used(&self) -> Option<&str> {
        match self {
            Expr::Lookup { set, .. } => Some(set),
            Expr::Vmap { map, .. } | Expr::DnatMap { map, .. } => Some(map),
            _ => None,
        }
    }

    pub fn text(&self) -> String {
        match self {
            Expr::Cmp { field, negate, value } => {
                format!("{} {}{}", field.text(), if *negate { "!= " } else { "" }, value.text())
            }
            Expr::Nfproto(f) => format!("meta nfproto {}", nfproto_kw(*f)),
            Expr::Lookup { key, set, negate } => {
                format!("{} {}@{set}", fields_text(key), if *negate { "!= " } else { "" })
            }
            Expr::Vmap { key, map } => format!("{} vmap @{map}", fields_text(key)),
            Expr::FibDaddrLocal => "fib daddr type local".into(),
            Expr::CtStatusDnat => "ct status dnat".into(),
            Expr::CtDirectionReply => "ct direction reply".into(),
            Expr::Masquerade => "masquerade".into(),
            Expr::Dnat { addr: IpAddr::V4(a), port } => format!("dnat ip to {a}:{port}"),
            Expr::Dnat { addr: IpAddr::V6(a), port } => format!("dnat ip6 to [{a}]:{port}"),
            Expr::DnatMap { family, key, map } => format!("dnat {} to {} map @{map}", ip_kw(*family), fields_text(key)),
            Expr::Verdict(v) => v.text(),
        }
    }

    /// The statement as `nft -j list` prints it.
    pub fn json(&self) -> J {
        let op = |negate: bool| if negate { "!=" } else { "==" };
        match self {
            Expr::Cmp { field, negate, value } => {
                json!({"match": {"op": op(*negate), "left": field.json(), "right": value.json()}})
            }
            Expr::Nfproto(f) => {
                json!({"match": {"op": "==", "left": Field::Nfproto.json(), "right": nfproto_kw(*f)}})
            }
            Expr::Lookup { key, set, negate } => {
                json!({"match": {"op": op(*negate), "left": fields_json(key), "right": format!("@{set}")}})
            }
            Expr::Vmap { key, map } => json!({"vmap": {"key": fields_json(key), "data": format!("@{map}")}}),
            Expr::FibDaddrLocal => {
                json!({"match": {"op": "==", "left": {"fib": {"result": "type", "flags": ["daddr"]}}, "right": "local"}})
            }
            Expr::CtStatusDnat => json!({"match": {"op": "in", "left": {"ct": {"key": "status"}}, "right": "dnat"}}),
            Expr::CtDirectionReply => json!({"match": {"op": "==", "left": {"ct": {"key": "direction"}}, "right": "reply"}}),
            Expr::Masquerade => json!({"masquerade": null}),
            Expr::Dnat { addr, port } => {
                let fam = if addr.is_ipv4() { "ip" } else { "ip6" };
                json!({"dnat": {"family": fam, "addr": addr.to_string(), "port": port}})
            }
            Expr::DnatMap { family, key, map } => {
                json!({"dnat": {"family": ip_kw(*family), "addr": {"map": {"key": fields_json(key), "data": format!("@{map}")}}}})
            }
            Expr::Verdict(v) => v.json(),
        }
    }
}

/// A rule: statements in order, optional comment (validated text).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    pub exprs: Vec<Expr>,
    pub comment: Option<String>,
}

impl Rule {
    pub fn new(exprs: Vec<Expr>) -> Self {
        Rule { exprs, comment: None }
    }
    pub fn text(&self) -> String {
        let mut s = self.exprs.iter().map(Expr::text).collect::<Vec<_>>().join(" ");
        if let Some(c) = &self.comment {
            s.push_str(&format!(" comment {}", quote_comment(c)));
        }
        s
    }
    pub fn exprs_json(&self) -> J {
        J::Array(self.exprs.iter().map(Expr::json).collect())
    }
}

/// One element of a set, verdict map or data map.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Element {
    /// Key (several values = concatenation). In an interval set a field may be a
    /// [`Value::Prefix`] (a range); single values are [`Value::Addr`] etc.
    pub key: Vec<Value>,
    /// The verdict of a verdict map's element.
    pub verdict: Option<Verdict>,
    /// The data of a data map's element (several values = concatenation); empty otherwise.
    pub data: Vec<Value>,
}

impl Element {
    /// An element of a set.
    pub fn key(key: Vec<Value>) -> Self {
        Element { key, verdict: None, data: Vec::new() }
    }
    /// An element of a verdict map.
    pub fn verdict(key: Vec<Value>, v: Verdict) -> Self {
        Element { key, verdict: Some(v), data: Vec::new() }
    }
    /// An element of a data map.
    pub fn data(key: Vec<Value>, data: Vec<Value>) -> Self {
        Element { key, verdict: None, data }
    }
    /// The same key without data (what a delete names).
    pub fn key_only(&self) -> Element {
        Element::key(self.key.clone())
    }
    /// Whether the element carries data (a verdict or values) that an add would compare.
    pub fn has_data(&self) -> bool {
        self.verdict.is_some() || !self.data.is_empty()
    }
    pub fn text(&self) -> String {
        let k = self.key.iter().map(Value::text).collect::<Vec<_>>().join(" . ");
        match &self.verdict {
            Some(v) => format!("{k} : {}", v.text()),
            None if !self.data.is_empty() => {
                format!("{k} : {}", self.data.iter().map(Value::text).collect::<Vec<_>>().join(" . "))
            }
            None => k,
        }
    }
}

/// One step of a transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    /// Create the table if missing.
    AddTable(TableRef),
    /// Create the table; the transaction fails (`EEXIST`) if it exists (`create table`).
    CreateTable(TableRef),
    DeleteTable(TableRef),
    /// Create the chain if missing (`add chain`); a base chain's hook/priority are given each time.
    AddChain { table: TableRef, name: String, base: Option<BaseChain>, comment: Option<String> },
    FlushChain { table: TableRef, name: String },
    DeleteChain { table: TableRef, name: String },
    AddRule { table: TableRef, chain: String, rule: Rule },
    /// Create the set/map if missing.
    AddSet { table: TableRef, set: SetDef },
    /// Add elements (no error when present with the same data; error when the key maps elsewhere).
    AddElements { table: TableRef, set: String, elems: Vec<Element> },
    /// Delete elements by key (error when absent).
    DeleteElements { table: TableRef, set: String, elems: Vec<Element> },
}

/// Comments contain only validated characters; refuse anything that could break out of the quotes.
fn quote_comment(c: &str) -> String {
    format!("\"{}\"", comment_text(c))
}

/// The text of a comment as it is stored: without the characters [`quote_comment`] drops (so the
/// netlink executor stores exactly what `nft` stores for the same comment).
pub(crate) fn comment_text(c: &str) -> String {
    c.chars().filter(|ch| !matches!(ch, '"' | '\\' | '\n' | '\r' | ';' | '#')).collect()
}

impl Op {
    /// The operation as one line of an `nft -f` script.
    pub fn text(&self) -> String {
        match self {
            Op::AddTable(t) => format!("add table {}", t.text()),
            Op::CreateTable(t) => format!("create table {}", t.text()),
            Op::DeleteTable(t) => format!("delete table {}", t.text()),
            Op::AddChain { table, name, base, comment } => {
                let mut body = Vec::new();
                if let Some(b) = base {
                    let kind = match b.kind {
                        ChainType::Nat => "nat",
                        ChainType::Filter => "filter",
                    };
                    body.push(format!("type {kind} hook {} priority {}; policy accept;", b.hook.as_str(), b.priority));
                }
                if let Some(c) = comment {
                    body.push(format!("comment {};", quote_comment(c)));
                }
                if body.is_empty() {
                    format!("add chain {} {name}", table.text())
                } else {
                    format!("add chain {} {name} {{ {} }}", table.text(), body.join(" "))
                }
            }
            Op::FlushChain { table, name } => format!("flush chain {} {name}", table.text()),
            Op::DeleteChain { table, name } => format!("delete chain {} {name}", table.text()),
            Op::AddRule { table, chain, rule } => format!("add rule {} {chain} {}", table.text(), rule.text()),
            Op::AddSet { table, set } => {
                let types = |t: &[DataType]| t.iter().map(|t| t.as_str()).collect::<Vec<_>>().join(" . ");
                let key = types(&set.key);
                let flags = if set.interval { " flags interval;" } else { "" };
                match &set.data {
                    SetData::Verdict => format!("add map {} {} {{ type {key} : verdict;{flags} }}", table.text(), set.name),
                    SetData::Values(d) => {
                        format!("add map {} {} {{ type {key} : {};{flags} }}", table.text(), set.name, types(d))
                    }
                    SetData::None => format!("add set {} {} {{ type {key};{flags} }}", table.text(), set.name),
                }
            }
            Op::AddElements { table, set, elems } => format!(
                "add element {} {set} {{ {} }}",
                table.text(),
                elems.iter().map(Element::text).collect::<Vec<_>>().join(", ")
            ),
            Op::DeleteElements { table, set, elems } => format!(
                "delete element {} {set} {{ {} }}",
                table.text(),
                elems.iter().map(|e| e.key_only().text()).collect::<Vec<_>>().join(", ")
            ),
        }
    }
}

/// The whole transaction as an `nft -f -` script (empty element lists are skipped).
pub fn render_script(ops: &[Op]) -> String {
    let mut s = String::new();
    for op in ops {
        if let Op::AddElements { elems, .. } | Op::DeleteElements { elems, .. } = op {
            if elems.is_empty() {
                continue;
            }
        }
        s.push_str(&op.text());
        s.push('\n');
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn render_text() {
        let t = TableRef::inet("cnirs_masquerade");
        let ops = vec![
            Op::AddTable(t.clone()),
            Op::AddSet {
                table: t.clone(),
                set: SetDef::vmap("masq4", vec![DataType::Ipv4Addr]),
            },
            Op::AddChain {
                table: t.clone(),
                name: "postrouting".into(),
                base: Some(BaseChain { kind: ChainType::Nat, hook: Hook::Postrouting, priority: 100 }),
                comment: None,
            },
            Op::AddRule {
                table: t.clone(),
                chain: "m-x".into(),
                rule: Rule::new(vec![
                    Expr::Cmp {
                        field: Field::Daddr(Family::V4),
                        negate: false,
                        value: Value::Prefix("10.0.0.0/24".parse().unwrap()),
                    },
                    Expr::Verdict(Verdict::Return),
                ]),
            },
            Op::AddElements {
                table: t.clone(),
                set: "masq4".into(),
                elems: vec![Element::verdict(vec![Value::Addr("10.0.0.5".parse().unwrap())], Verdict::Goto("m-x".into()))],
            },
            Op::DeleteElements { table: t.clone(), set: "masq4".into(), elems: vec![] },
        ];
        let s = render_script(&ops);
        assert_eq!(
            s,
            "add table inet cnirs_masquerade\n\
             add map inet cnirs_masquerade masq4 { type ipv4_addr : verdict; }\n\
             add chain inet cnirs_masquerade postrouting { type nat hook postrouting priority 100; policy accept; }\n\
             add rule inet cnirs_masquerade m-x ip daddr 10.0.0.0/24 return\n\
             add element inet cnirs_masquerade masq4 { 10.0.0.5 : goto m-x }\n"
        );
    }

    #[test]
    fn exprs() {
        let d = Expr::Dnat { addr: "fd00::5".parse().unwrap(), port: 80 };
        assert_eq!(d.text(), "dnat ip6 to [fd00::5]:80");
        assert_eq!(d.json(), json!({"dnat": {"family": "ip6", "addr": "fd00::5", "port": 80}}));
        let v = Expr::Vmap { key: vec![Field::L4proto, Field::ThDport], map: "any4".into() };
        assert_eq!(v.text(), "meta l4proto . th dport vmap @any4");
        let host = Value::Prefix("10.0.0.5/32".parse().unwrap());
        assert_eq!(host.text(), "10.0.0.5");
        assert_eq!(host.json(), json!("10.0.0.5"));
        let mc = Expr::Cmp { field: Field::Daddr(Family::V6), negate: true, value: Value::Prefix("ff00::/8".parse().unwrap()) };
        assert_eq!(mc.text(), "ip6 daddr != ff00::/8");
        assert_eq!(quote_comment("a\"b;c"), "\"abc\"");
        let e = Element::key(vec![Value::Ifname("br0".into())]);
        assert_eq!(e.text(), "\"br0\"");
        let d = Element::data(
            vec![Value::Proto(Protocol::Tcp), Value::Port(8080)],
            vec![Value::Addr("10.0.0.5".parse().unwrap()), Value::Port(80)],
        );
        assert_eq!(d.text(), "tcp . 8080 : 10.0.0.5 . 80");
        assert_eq!(d.key_only().text(), "tcp . 8080");
        let o = Element::data(vec![Value::Addr("10.0.0.5".parse().unwrap())], vec![Value::Mark(0x12), Value::Mark(0xdeadbeef)]);
        assert_eq!(o.text(), "10.0.0.5 : 0x00000012 . 0xdeadbeef");
        let dm = Expr::DnatMap { family: Family::V4, key: vec![Field::L4proto, Field::ThDport], map: "dnat4".into() };
        assert_eq!(dm.text(), "dnat ip to meta l4proto . th dport map @dnat4");
        let def = Op::AddSet {
            table: TableRef::inet("t"),
            set: SetDef::map("dnat4", vec![DataType::InetProto, DataType::InetService], vec![DataType::Ipv4Addr, DataType::InetService]),
        };
        assert_eq!(def.text(), "add map inet t dnat4 { type inet_proto . inet_service : ipv4_addr . inet_service; }");
        let iv = Op::AddSet { table: TableRef::inet("t"), set: SetDef::interval_set("x4", vec![DataType::Ipv4Addr, DataType::Ipv4Addr]) };
        assert_eq!(iv.text(), "add set inet t x4 { type ipv4_addr . ipv4_addr; flags interval; }");
    }
}
