//! Decoding: nf_tables dump replies (tables, chains, sets, elements, rules) into the
//! [`TableState`] the planner reads, and kernel expressions back into [`Expr`]s.
//!
//! Rules are raised to the statements they were lowered from (see `encode`), following `nft`'s
//! own reading: a `meta nfproto` compare right before an `ip`/`ip6` field load is that field's
//! dependency, a `meta l4proto` compare right before a port load makes it `tcp|udp|sctp dport`.
//! A rule's statements are then rendered as the JSON `nft -j list` prints, so a table read here
//! and one read through `nft` compare equal. A rule with an expression outside that vocabulary
//! reads as `[{"unparsed": [<expression names>]}]`: it matches no rule of ours.
//!
//! Elements of interval sets are read back as `nft` prints them: a field whose range is one
//! value as that value, a range that is exactly a prefix as the prefix; an element with any
//! other range is skipped, as the JSON reader skips it.

use super::consts::*;
use super::encode::{addr_field, dnat_map_regs, slot_of_reg, type_of_id, ImmData, Low};
use crate::nft::ops::{DataType, Element, Expr, Field, Rule, SetData, TableFamily, Value, Verdict};
use crate::nft::state::{ChainState, RuleExprs, RuleState, SetState, TableState};
use crate::{CniError, Family, Protocol};
use cni_common::netlink::socket::{nfgen_parts, parse_attrs};
use cni_common::netlink::NlError;
use serde_json::{json, Value as J};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

fn find<'a>(attrs: &[(u16, &'a [u8])], kind: u16) -> Option<&'a [u8]> {
    attrs.iter().find(|(k, _)| *k == kind).map(|(_, v)| *v)
}

fn be32(v: Option<&[u8]>) -> Option<u32> {
    v.and_then(|b| b.get(..4)).map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
}

fn be64(v: Option<&[u8]>) -> Option<u64> {
    v.and_then(|b| b.get(..8)).map(|b| u64::from_be_bytes(b.try_into().expect("8 bytes")))
}

/// A NUL-terminated string attribute.
fn string(v: Option<&[u8]>) -> Option<String> {
    let v = v?;
    let end = v.iter().position(|&b| b == 0).unwrap_or(v.len());
    Some(String::from_utf8_lossy(&v[..end]).into_owned())
}

/// The `NFTA_DATA_VALUE` of a data attribute.
fn data_value(v: Option<&[u8]>) -> Result<Option<Vec<u8>>, NlError> {
    let Some(v) = v else { return Ok(None) };
    Ok(find(&parse_attrs(v)?, NFTA_DATA_VALUE).map(<[u8]>::to_vec))
}

/// The verdict of a data attribute (`NFTA_DATA_VERDICT`), `None` for other data or codes.
fn data_verdict(v: &[u8]) -> Result<Option<Verdict>, NlError> {
    let Some(vd) = find(&parse_attrs(v)?, NFTA_DATA_VERDICT) else { return Ok(None) };
    let a = parse_attrs(vd)?;
    let Some(code) = be32(find(&a, NFTA_VERDICT_CODE)) else { return Ok(None) };
    let chain = string(find(&a, NFTA_VERDICT_CHAIN));
    Ok(match (code as i32, chain) {
        (NF_ACCEPT, _) => Some(Verdict::Accept),
        (NF_DROP, _) => Some(Verdict::Drop),
        (NFT_RETURN, _) => Some(Verdict::Return),
        (NFT_JUMP, Some(c)) => Some(Verdict::Jump(c)),
        (NFT_GOTO, Some(c)) => Some(Verdict::Goto(c)),
        _ => None,
    })
}

/// Attributes of a message: (type, value).
pub type Attrs<'a> = Vec<(u16, &'a [u8])>;

/// The family byte and attributes of an nf_tables message of type `msg` (`None` for another type).
pub fn body(raw: &[u8], msg: u16) -> Result<Option<(u8, Attrs<'_>)>, NlError> {
    let Some((kind, family, attrs)) = nfgen_parts(raw) else {
        return Err(NlError::decode(format!("nf_tables message of {} bytes", raw.len())));
    };
    if kind != nft_type(msg) {
        return Ok(None);
    }
    Ok(Some((family, parse_attrs(attrs)?)))
}

// ---------------------------------------------------------------------------------------------
// Objects
// ---------------------------------------------------------------------------------------------

/// A table of a `NEWTABLE` reply: (family, name).
pub fn parse_table(raw: &[u8]) -> Result<Option<(u8, String)>, NlError> {
    let Some((fam, a)) = body(raw, NFT_MSG_NEWTABLE)? else { return Ok(None) };
    Ok(string(find(&a, NFTA_TABLE_NAME)).map(|n| (fam, n)))
}

/// The generation id of a `NEWGEN` reply.
pub fn parse_gen(raw: &[u8]) -> Result<Option<u32>, NlError> {
    let Some((_, a)) = body(raw, NFT_MSG_NEWGEN)? else { return Ok(None) };
    Ok(be32(find(&a, NFTA_GEN_ID)))
}

/// A chain of a `NEWCHAIN` reply: (table, chain).
pub fn parse_chain(raw: &[u8]) -> Result<Option<(String, ChainState)>, NlError> {
    let Some((_, a)) = body(raw, NFT_MSG_NEWCHAIN)? else { return Ok(None) };
    let (Some(table), Some(name)) = (string(find(&a, NFTA_CHAIN_TABLE)), string(find(&a, NFTA_CHAIN_NAME))) else {
        return Err(NlError::decode("chain without table or name"));
    };
    let hook = match find(&a, NFTA_CHAIN_HOOK) {
        Some(h) => be32(find(&parse_attrs(h)?, NFTA_HOOK_HOOKNUM)).map(|n| hook_name(n).to_string()),
        None => None,
    };
    Ok(Some((table, ChainState { name, hook, rules: Vec::new() })))
}

fn hook_name(n: u32) -> &'static str {
    match n {
        NF_INET_PRE_ROUTING => "prerouting",
        NF_INET_LOCAL_IN => "input",
        NF_INET_FORWARD => "forward",
        NF_INET_LOCAL_OUT => "output",
        NF_INET_POST_ROUTING => "postrouting",
        5 => "ingress",
        _ => "unknown",
    }
}

/// A set of a `NEWSET` reply: (table, set without elements, set flags).
pub fn parse_set(raw: &[u8]) -> Result<Option<(String, SetState, u32)>, NlError> {
    let Some((_, a)) = body(raw, NFT_MSG_NEWSET)? else { return Ok(None) };
    let (Some(table), Some(name)) = (string(find(&a, NFTA_SET_TABLE)), string(find(&a, NFTA_SET_NAME))) else {
        return Err(NlError::decode("set without table or name"));
    };
    let flags = be32(find(&a, NFTA_SET_FLAGS)).unwrap_or(0);
    let key = key_types(be32(find(&a, NFTA_SET_KEY_TYPE)).unwrap_or(0));
    let data = if flags & NFT_SET_MAP != 0 {
        match be32(find(&a, NFTA_SET_DATA_TYPE)) {
            Some(NFT_DATA_VERDICT) => SetData::Verdict,
            Some(t) => SetData::Values(key_types(t)),
            None => SetData::Values(Vec::new()),
        }
    } else if flags & NFT_SET_OBJECT != 0 {
        // an object map: `nft -j` lists it as a map of a type the JSON reader does not know
        SetData::Values(Vec::new())
    } else {
        SetData::None
    };
    let interval = flags & NFT_SET_INTERVAL != 0;
    Ok(Some((table, SetState { name, key, data, interval, elems: Vec::new() }, flags)))
}

/// The data types of a key (or data) type number (6 bits per part of a concatenation); none
/// when a part is unknown, as the JSON reader reads a type with an unknown name.
pub fn key_types(id: u32) -> Vec<DataType> {
    let mut parts = Vec::new();
    let mut t = id;
    loop {
        parts.push(t & ((1 << TYPE_BITS) - 1));
        t >>= TYPE_BITS;
        if t == 0 {
            break;
        }
    }
    parts.reverse();
    parts.into_iter().map(type_of_id).collect::<Option<Vec<_>>>().unwrap_or_default()
}

/// The elements of a `NEWSETELEM` reply that parse for `set` (its key types, what it maps to,
/// whether it is an interval set; its elements are not looked at): a verdict map's with a
/// verdict, a data map's with data of its types. Others are skipped, like the JSON reader skips
/// them.
pub fn parse_elems(raw: &[u8], set: &SetState) -> Result<Vec<Element>, NlError> {
    let Some((_, a)) = body(raw, NFT_MSG_NEWSETELEM)? else { return Ok(Vec::new()) };
    let Some(list) = find(&a, NFTA_SET_ELEM_LIST_ELEMENTS) else { return Ok(Vec::new()) };
    let mut out = Vec::new();
    for (kind, e) in parse_attrs(list)? {
        if kind != NFTA_LIST_ELEM {
            continue;
        }
        let ea = parse_attrs(e)?;
        if be32(find(&ea, NFTA_SET_ELEM_FLAGS)).unwrap_or(0) & NFT_SET_ELEM_INTERVAL_END != 0 {
            continue;
        }
        let Some(first) = data_value(find(&ea, NFTA_SET_ELEM_KEY))? else { continue };
        let key = if set.interval {
            // segment-tree intervals (sets of single fields, no last key) are not read
            let Some(last) = data_value(find(&ea, NFTA_SET_ELEM_KEY_END))? else { continue };
            parse_range_key(&first, &last, &set.key)
        } else {
            parse_key(&first, &set.key)
        };
        let Some(key) = key else { continue };
        let elem = match (&set.data, find(&ea, NFTA_SET_ELEM_DATA)) {
            (SetData::Verdict, Some(d)) => match data_verdict(d)? {
                Some(v) => Element::verdict(key, v),
                None => continue,
            },
            (SetData::Values(types), Some(d)) => match data_value(Some(d))?.and_then(|b| parse_key(&b, types)) {
                Some(values) => Element::data(key, values),
                None => continue,
            },
            (SetData::None, None) => Element::key(key),
            _ => continue,
        };
        out.push(elem);
    }
    Ok(out)
}

/// The parts of a key (or data) of `types`: the whole value for one type, else each part at its
/// natural length, parts padded to 4 bytes.
fn split_parts<'a>(b: &'a [u8], types: &[DataType]) -> Option<Vec<&'a [u8]>> {
    if types.is_empty() {
        return None;
    }
    if types.len() == 1 {
        return Some(vec![b]);
    }
    let mut out = Vec::new();
    let mut off = 0;
    for t in types {
        let len = super::encode::type_len(*t);
        out.push(b.get(off..off + len)?);
        off += len.next_multiple_of(4);
    }
    (off == b.len()).then_some(out)
}

fn parse_key(b: &[u8], types: &[DataType]) -> Option<Vec<Value>> {
    split_parts(b, types)?.into_iter().zip(types).map(|(p, t)| parse_value(p, *t)).collect()
}

/// The key of an interval set's element from its first and last keys: per field, the value
/// when its range is one value, the prefix when its range is exactly a prefix; `None` for any
/// other range.
pub fn parse_range_key(first: &[u8], last: &[u8], types: &[DataType]) -> Option<Vec<Value>> {
    let firsts = split_parts(first, types)?;
    let lasts = split_parts(last, types)?;
    let mut out = Vec::new();
    for ((f, l), t) in firsts.into_iter().zip(lasts).zip(types) {
        if f == l {
            out.push(parse_value(f, *t)?);
            continue;
        }
        let (bits, start) = match t {
            DataType::Ipv4Addr | DataType::Ipv6Addr if f.len() == l.len() => {
                let to_u128 = |b: &[u8]| b.iter().fold(0u128, |n, &x| (n << 8) | u128::from(x));
                (f.len() as u32 * 8, (to_u128(f), to_u128(l)))
            }
            _ => return None,
        };
        let (s, e) = start;
        // a prefix: the last address is the first with every host bit set, and the first has none
        let host = s ^ e;
        if host & host.wrapping_add(1) != 0 || s & host != 0 {
            return None;
        }
        let len = bits - host.count_ones();
        let Value::Addr(addr) = parse_value(f, *t)? else { return None };
        out.push(Value::Prefix(ipnetwork::IpNetwork::new(addr, len as u8).ok()?));
    }
    Some(out)
}

fn parse_value(b: &[u8], t: DataType) -> Option<Value> {
    match t {
        DataType::Ipv4Addr => Some(Value::Addr(IpAddr::V4(Ipv4Addr::from(<[u8; 4]>::try_from(b).ok()?)))),
        DataType::Ipv6Addr => Some(Value::Addr(IpAddr::V6(Ipv6Addr::from(<[u8; 16]>::try_from(b).ok()?)))),
        DataType::InetProto => match b {
            [n] => proto_of(*n).map(Value::Proto),
            _ => None,
        },
        DataType::InetService => Some(Value::Port(u16::from_be_bytes(b.try_into().ok()?))),
        DataType::Ifname => ifname_of(b, true).map(Value::Ifname),
        DataType::Mark => Some(Value::Mark(u32::from_ne_bytes(b.try_into().ok()?))),
    }
}

fn proto_of(n: u8) -> Option<Protocol> {
    match n {
        6 => Some(Protocol::Tcp),
        17 => Some(Protocol::Udp),
        132 => Some(Protocol::Sctp),
        _ => None,
    }
}

/// An interface name from key or compare bytes. In a compare, bytes without a NUL are a prefix
/// (what `nft` writes for `"name*"`).
fn ifname_of(b: &[u8], exact: bool) -> Option<String> {
    if b.len() > IFNAMSIZ || b.is_empty() {
        return None;
    }
    match b.iter().position(|&c| c == 0) {
        Some(0) => None,
        Some(end) => Some(String::from_utf8_lossy(&b[..end]).into_owned()),
        None if !exact && b.len() < IFNAMSIZ => Some(format!("{}*", String::from_utf8_lossy(b))),
        None => None,
    }
}

/// A rule of a `NEWRULE` reply: (table, chain, rule), its expressions raised for a table of
/// family `table`.
pub fn parse_rule(raw: &[u8]) -> Result<Option<(String, String, RuleState)>, NlError> {
    let Some((fam, a)) = body(raw, NFT_MSG_NEWRULE)? else { return Ok(None) };
    let (Some(table), Some(chain)) = (string(find(&a, NFTA_RULE_TABLE)), string(find(&a, NFTA_RULE_CHAIN))) else {
        return Err(NlError::decode("rule without table or chain"));
    };
    let handle = be64(find(&a, NFTA_RULE_HANDLE)).unwrap_or(0);
    let mut lows = Vec::new();
    if let Some(list) = find(&a, NFTA_RULE_EXPRESSIONS) {
        for (kind, e) in parse_attrs(list)? {
            if kind == NFTA_LIST_ELEM {
                lows.push(parse_expr(e)?);
            }
        }
    }
    let family = match fam {
        NFPROTO_IPV4 => TableFamily::Ip,
        NFPROTO_IPV6 => TableFamily::Ip6,
        _ => TableFamily::Inet,
    };
    let exprs = match raise(family, &lows) {
        Some(exprs) => RuleExprs::Decoded(exprs),
        None => RuleExprs::Json(json!([{"unparsed": lows.iter().map(Low::name).collect::<Vec<_>>()}])),
    };
    let comment = match find(&a, NFTA_RULE_USERDATA) {
        Some(u) => udata_comment(u, UDATA_RULE_COMMENT),
        None => None,
    };
    Ok(Some((table, chain, RuleState { handle, exprs, comment })))
}

/// The comment TLV of user data.
pub fn udata_comment(mut u: &[u8], kind: u8) -> Option<String> {
    while u.len() >= 2 {
        let (k, len) = (u[0], usize::from(u[1]));
        let v = u.get(2..2 + len)?;
        if k == kind {
            return string(Some(v));
        }
        u = &u[2 + len..];
    }
    None
}

/// One expression (`NFTA_LIST_ELEM` content) into its low form.
pub fn parse_expr(e: &[u8]) -> Result<Low, NlError> {
    let a = parse_attrs(e)?;
    let name = string(find(&a, NFTA_EXPR_NAME)).ok_or_else(|| NlError::decode("expression without a name"))?;
    let d = match find(&a, NFTA_EXPR_DATA) {
        Some(d) => parse_attrs(d)?,
        None => Vec::new(),
    };
    let u = |k| be32(find(&d, k));
    let missing = |what: &str| NlError::decode(format!("{name} expression without {what}"));
    Ok(match name.as_str() {
        "meta" => match (u(NFTA_META_KEY), u(NFTA_META_DREG)) {
            (Some(key), Some(dreg)) => Low::Meta { key, dreg },
            _ => Low::Other(name), // meta set (sreg) or malformed
        },
        "payload" => match (u(NFTA_PAYLOAD_DREG), u(NFTA_PAYLOAD_BASE), u(NFTA_PAYLOAD_OFFSET), u(NFTA_PAYLOAD_LEN)) {
            (Some(dreg), Some(base), Some(offset), Some(len)) => Low::Payload { base, offset, len, dreg },
            _ => Low::Other(name), // payload write
        },
        "cmp" => Low::Cmp {
            sreg: u(NFTA_CMP_SREG).ok_or_else(|| missing("sreg"))?,
            op: u(NFTA_CMP_OP).ok_or_else(|| missing("op"))?,
            data: data_value(find(&d, NFTA_CMP_DATA))?.ok_or_else(|| missing("data"))?,
        },
        "bitwise" if u(NFTA_BITWISE_OP).unwrap_or(NFT_BITWISE_BOOL) == NFT_BITWISE_BOOL => Low::Bitwise {
            sreg: u(NFTA_BITWISE_SREG).ok_or_else(|| missing("sreg"))?,
            dreg: u(NFTA_BITWISE_DREG).ok_or_else(|| missing("dreg"))?,
            mask: data_value(find(&d, NFTA_BITWISE_MASK))?.unwrap_or_default(),
            xor: data_value(find(&d, NFTA_BITWISE_XOR))?.unwrap_or_default(),
        },
        "lookup" => Low::Lookup {
            set: string(find(&d, NFTA_LOOKUP_SET)).ok_or_else(|| missing("set"))?,
            sreg: u(NFTA_LOOKUP_SREG).ok_or_else(|| missing("sreg"))?,
            dreg: u(NFTA_LOOKUP_DREG),
            flags: u(NFTA_LOOKUP_FLAGS).unwrap_or(0),
        },
        "immediate" => {
            let dreg = u(NFTA_IMMEDIATE_DREG).ok_or_else(|| missing("dreg"))?;
            let data = find(&d, NFTA_IMMEDIATE_DATA).ok_or_else(|| missing("data"))?;
            match data_verdict(data)? {
                Some(v) => Low::Immediate { dreg, data: ImmData::Verdict(v) },
                None => match data_value(Some(data))? {
                    Some(v) => Low::Immediate { dreg, data: ImmData::Value(v) },
                    None => Low::Other(name),
                },
            }
        }
        // a range (a maximum other than the minimum) is not in the vocabulary; the kernel reports
        // the maximum registers equal to the minimum ones when none was given
        "nat" if u(NFTA_NAT_REG_ADDR_MAX).is_some_and(|r| Some(r) != u(NFTA_NAT_REG_ADDR_MIN))
            || u(NFTA_NAT_REG_PROTO_MAX).is_some_and(|r| Some(r) != u(NFTA_NAT_REG_PROTO_MIN)) =>
        {
            Low::Other(name)
        }
        "nat" => Low::Nat {
            kind: u(NFTA_NAT_TYPE).ok_or_else(|| missing("type"))?,
            family: u(NFTA_NAT_FAMILY).ok_or_else(|| missing("family"))?,
            addr: u(NFTA_NAT_REG_ADDR_MIN),
            proto: u(NFTA_NAT_REG_PROTO_MIN),
            flags: u(NFTA_NAT_FLAGS).unwrap_or(0),
        },
        "masq" if u(NFTA_MASQ_REG_PROTO_MIN).is_none() => Low::Masq { flags: u(NFTA_MASQ_FLAGS).unwrap_or(0) },
        "ct" if find(&d, NFTA_CT_DIRECTION).is_none() => match (u(NFTA_CT_KEY), u(NFTA_CT_DREG)) {
            (Some(key), Some(dreg)) => Low::Ct { key, dreg },
            _ => Low::Other(name),
        },
        "fib" => Low::Fib {
            dreg: u(NFTA_FIB_DREG).ok_or_else(|| missing("dreg"))?,
            result: u(NFTA_FIB_RESULT).ok_or_else(|| missing("result"))?,
            flags: u(NFTA_FIB_FLAGS).unwrap_or(0),
        },
        "counter" => Low::Counter,
        _ => Low::Other(name),
    })
}

// ---------------------------------------------------------------------------------------------
// Expressions into statements
// ---------------------------------------------------------------------------------------------

/// The statements of a rule of a table of family `table`; `None` when an expression (or a
/// sequence) is not one of the vocabulary.
pub fn raise(table: TableFamily, lows: &[Low]) -> Option<Vec<Expr>> {
    let mut out = Vec::new();
    let mut nfproto = match table {
        TableFamily::Ip => Some(Family::V4),
        TableFamily::Ip6 => Some(Family::V6),
        TableFamily::Inet => None,
    };
    let mut l4dep: Option<Protocol> = None;
    let mut i = 0;
    while i < lows.len() {
        let rest = &lows[i..];
        match rest {
            [Low::Meta { key: NFT_META_NFPROTO, dreg }, Low::Cmp { sreg, op: NFT_CMP_EQ, data }, ..] if sreg == dreg && data.len() == 1 => {
                let fam = match data[0] {
                    NFPROTO_IPV4 => Family::V4,
                    NFPROTO_IPV6 => Family::V6,
                    _ => return None,
                };
                nfproto = Some(fam);
                // before a network header load: the load's dependency, not a statement
                if !matches!(rest.get(2), Some(Low::Payload { base: NFT_PAYLOAD_NETWORK_HEADER, .. })) {
                    out.push(Expr::Nfproto(fam));
                }
                i += 2;
            }
            [Low::Meta { key: NFT_META_L4PROTO, dreg }, Low::Cmp { sreg, op: NFT_CMP_EQ, data }, Low::Payload { base: NFT_PAYLOAD_TRANSPORT_HEADER, offset: 2, len: 2, .. }, Low::Cmp { .. }, ..]
                if sreg == dreg && data.len() == 1 =>
            {
                l4dep = Some(proto_of(data[0])?);
                i += 2;
            }
            [Low::Ct { key: NFT_CT_STATUS, dreg }, Low::Bitwise { sreg: b1, dreg: b2, mask, xor }, Low::Cmp { sreg, op: NFT_CMP_NEQ, data }, ..]
                if b1 == dreg && b2 == dreg && sreg == dreg && *mask == IPS_DST_NAT.to_ne_bytes() && xor.iter().all(|&x| x == 0) && *data == [0; 4] =>
            {
                out.push(Expr::CtStatusDnat);
                i += 3;
            }
            [Low::Ct { key: NFT_CT_KEY_DIRECTION, dreg }, Low::Cmp { sreg, op: NFT_CMP_EQ, data }, ..]
                if sreg == dreg && *data == [IP_CT_DIR_REPLY] =>
            {
                out.push(Expr::CtDirectionReply);
                i += 2;
            }
            [Low::Fib { dreg, result: NFT_FIB_RESULT_ADDRTYPE, flags: NFTA_FIB_F_DADDR }, Low::Cmp { sreg, op: NFT_CMP_EQ, data }, ..]
                if sreg == dreg && *data == RTN_LOCAL.to_ne_bytes() =>
            {
                out.push(Expr::FibDaddrLocal);
                i += 2;
            }
            [Low::Masq { flags: 0 }, ..] => {
                out.push(Expr::Masquerade);
                i += 1;
            }
            [Low::Immediate { dreg: ra, data: ImmData::Value(a) }, Low::Immediate { dreg: rp, data: ImmData::Value(p) }, Low::Nat { kind: NFT_NAT_DNAT, family, addr: Some(na), proto: Some(np), .. }, ..]
                if ra == na && rp == np =>
            {
                let addr = match (*family, a.len()) {
                    (f, 4) if f == u32::from(NFPROTO_IPV4) => IpAddr::V4(Ipv4Addr::from(<[u8; 4]>::try_from(a.as_slice()).ok()?)),
                    (f, 16) if f == u32::from(NFPROTO_IPV6) => IpAddr::V6(Ipv6Addr::from(<[u8; 16]>::try_from(a.as_slice()).ok()?)),
                    _ => return None,
                };
                let port = u16::from_be_bytes(p.as_slice().try_into().ok()?);
                out.push(Expr::Dnat { addr, port });
                i += 3;
            }
            [Low::Immediate { dreg: NFT_REG_VERDICT, data: ImmData::Verdict(v) }, ..] => {
                out.push(Expr::Verdict(v.clone()));
                i += 1;
            }
            [Low::Meta { .. } | Low::Payload { .. }, ..] => {
                // A key's loads, each address load possibly masked (`ip daddr & 255.255.255.0`)
                // when a lookup follows; otherwise a bitwise belongs to a compare.
                let is_load = |l: &Low| matches!(l, Low::Meta { .. } | Low::Payload { .. });
                let with_masks = rest.iter().take_while(|l| is_load(l) || matches!(l, Low::Bitwise { .. })).count();
                let n = if matches!(rest.get(with_masks), Some(Low::Lookup { .. })) {
                    with_masks
                } else {
                    rest.iter().take_while(|l| is_load(l)).count()
                };
                let loads = &rest[..n];
                match rest.get(n) {
                    Some(Low::Lookup { set, sreg, dreg, flags }) => {
                        let mut fields = Vec::new();
                        let mut slot = 0;
                        let mut j = 0;
                        while j < loads.len() {
                            let (mut f, reg) = field_of(&loads[j], nfproto, &mut l4dep)?;
                            if slot_of_reg(reg) != Some(slot) {
                                return None;
                            }
                            if let Some(Low::Bitwise { sreg: b1, dreg: b2, mask, xor }) = loads.get(j + 1) {
                                f = masked_field(f, &loads[j], (*b1, *b2, mask, xor), reg)?;
                                j += 1;
                            }
                            slot += super::encode::field_len(f).div_ceil(4) as u32;
                            fields.push(f);
                            j += 1;
                        }
                        if slot_of_reg(*sreg) != Some(0) {
                            return None;
                        }
                        match (dreg, flags) {
                            (Some(NFT_REG_VERDICT), 0) => {
                                out.push(Expr::Vmap { key: fields, map: set.clone() });
                                i += n + 1;
                            }
                            (None, f) if *f & !NFT_LOOKUP_F_INV == 0 => {
                                out.push(Expr::Lookup { key: fields, set: set.clone(), negate: *f & NFT_LOOKUP_F_INV != 0 });
                                i += n + 1;
                            }
                            // a lookup into registers, then a NAT from them: `dnat ip to <key> map @m`
                            (Some(r), 0) => {
                                let Some(Low::Nat { kind: NFT_NAT_DNAT, family, addr: Some(a), proto: Some(p), flags }) = rest.get(n + 1) else {
                                    return None;
                                };
                                let fam = match u8::try_from(*family).ok()? {
                                    NFPROTO_IPV4 => Family::V4,
                                    NFPROTO_IPV6 => Family::V6,
                                    _ => return None,
                                };
                                // the kernel records the registers given as flags; any other flag is another statement
                                if (*r, *a, *p) != (dnat_map_regs(fam).0, dnat_map_regs(fam).0, dnat_map_regs(fam).1)
                                    || flags & !(NF_NAT_RANGE_MAP_IPS | NF_NAT_RANGE_PROTO_SPECIFIED) != 0
                                {
                                    return None;
                                }
                                out.push(Expr::DnatMap { family: fam, key: fields, map: set.clone() });
                                i += n + 2;
                            }
                            _ => return None,
                        }
                    }
                    Some(Low::Cmp { .. } | Low::Bitwise { .. }) if n == 1 => {
                        let (f, reg) = field_of(&loads[0], nfproto, &mut l4dep)?;
                        let (value, negate, used) = compare(&rest[1..], f, &loads[0], reg)?;
                        out.push(Expr::Cmp { field: f, negate, value });
                        i += 1 + used;
                    }
                    _ => return None,
                }
            }
            _ => return None,
        }
    }
    Some(out)
}

/// The field a load reads, and its register. A transport port load consumes the pending
/// protocol dependency.
fn field_of(l: &Low, nfproto: Option<Family>, l4dep: &mut Option<Protocol>) -> Option<(Field, u32)> {
    match *l {
        Low::Meta { key, dreg } => Some((
            match key {
                NFT_META_NFPROTO => Field::Nfproto,
                NFT_META_L4PROTO => Field::L4proto,
                NFT_META_IIFNAME => Field::Iifname,
                NFT_META_OIFNAME => Field::Oifname,
                _ => return None,
            },
            dreg,
        )),
        Low::Payload { base: NFT_PAYLOAD_NETWORK_HEADER, offset, len, dreg } => {
            let candidates = [Field::Saddr(Family::V4), Field::Daddr(Family::V4), Field::Saddr(Family::V6), Field::Daddr(Family::V6)];
            // a full-length load names its field; a shorter one (prefix) needs the family
            let f = candidates.into_iter().find(|f| {
                let (o, full) = addr_field(*f).expect("address field");
                let fam = match f {
                    Field::Saddr(x) | Field::Daddr(x) => *x,
                    _ => unreachable!(),
                };
                o == offset && (len == full || (len < full && nfproto == Some(fam)))
            })?;
            Some((f, dreg))
        }
        Low::Payload { base: NFT_PAYLOAD_TRANSPORT_HEADER, offset: 2, len: 2, dreg } => {
            Some((l4dep.take().map_or(Field::ThDport, Field::Dport), dreg))
        }
        _ => None,
    }
}

/// `f` (just loaded by `load` into `reg`) masked by a bitwise `(sreg, dreg, mask, xor)` on that
/// register: a whole address ANDed with a netmask shorter than it.
fn masked_field(f: Field, load: &Low, (sreg, dreg, mask, xor): (u32, u32, &[u8], &[u8]), reg: u32) -> Option<Field> {
    let (_, full) = addr_field(f)?;
    let Low::Payload { len, .. } = *load else { return None };
    if sreg != reg || dreg != reg || len != full || mask.len() != full as usize || xor.len() != mask.len() || xor.iter().any(|&x| x != 0) {
        return None;
    }
    let ones: u32 = mask.iter().map(|b| b.count_ones()).sum();
    if ones >= full * 8 || mask != super::encode::prefix_mask(full, ones).as_slice() {
        return None;
    }
    match f {
        Field::Saddr(fam) => Some(Field::SaddrMasked(fam, ones as u8)),
        Field::Daddr(fam) => Some(Field::DaddrMasked(fam, ones as u8)),
        _ => None,
    }
}

/// The compare (with its optional mask) after a load of `f`: (value, negated, expressions used).
fn compare(rest: &[Low], f: Field, load: &Low, reg: u32) -> Option<(Value, bool, usize)> {
    let (mask, cmp) = match rest {
        [Low::Bitwise { sreg, dreg, mask, xor }, c @ Low::Cmp { .. }, ..] if *sreg == reg && *dreg == reg && xor.iter().all(|&x| x == 0) => {
            (Some(mask), c)
        }
        [c @ Low::Cmp { .. }, ..] => (None, c),
        _ => return None,
    };
    let Low::Cmp { sreg, op, data } = cmp else { return None };
    if *sreg != reg {
        return None;
    }
    let negate = match *op {
        NFT_CMP_EQ => false,
        NFT_CMP_NEQ => true,
        _ => return None,
    };
    let used = if mask.is_some() { 2 } else { 1 };
    let value = match f {
        Field::Saddr(fam) | Field::Daddr(fam) => {
            let (_, full) = addr_field(f)?;
            let Low::Payload { len, .. } = *load else { return None };
            let full = full as usize;
            let mut bytes = data.clone();
            let prefix = match mask {
                Some(m) => {
                    if m.len() != full || data.len() != full || len as usize != full {
                        return None;
                    }
                    let ones: u32 = m.iter().map(|b| b.count_ones()).sum();
                    // contiguous leading ones only
                    if *m != super::encode::prefix_mask(full as u32, ones) {
                        return None;
                    }
                    ones as u8
                }
                None => {
                    if data.len() != len as usize || data.is_empty() || data.len() > full {
                        return None;
                    }
                    bytes.resize(full, 0);
                    (data.len() * 8) as u8
                }
            };
            let addr = match fam {
                Family::V4 => IpAddr::V4(Ipv4Addr::from(<[u8; 4]>::try_from(bytes.as_slice()).ok()?)),
                Family::V6 => IpAddr::V6(Ipv6Addr::from(<[u8; 16]>::try_from(bytes.as_slice()).ok()?)),
            };
            if mask.is_none() && data.len() == full {
                Value::Addr(addr)
            } else {
                Value::Prefix(ipnetwork::IpNetwork::new(addr, prefix).ok()?)
            }
        }
        _ if mask.is_some() => return None,
        Field::L4proto => match data.as_slice() {
            [n] => Value::Proto(proto_of(*n)?),
            _ => return None,
        },
        Field::ThDport | Field::Dport(_) => Value::Port(u16::from_be_bytes(data.as_slice().try_into().ok()?)),
        Field::Iifname | Field::Oifname => Value::Ifname(ifname_of(data, false)?),
        Field::Nfproto | Field::SaddrMasked(..) | Field::DaddrMasked(..) => return None,
    };
    Some((value, negate, used))
}

/// The rule JSON of `lows` as the reader stores it (for tests).
pub fn rule_json(table: TableFamily, lows: &[Low]) -> J {
    match raise(table, lows) {
        Some(exprs) => Rule::new(exprs).exprs_json(),
        None => json!([{"unparsed": lows.iter().map(Low::name).collect::<Vec<_>>()}]),
    }
}

/// Assemble a table's state from its dumped objects.
pub fn assemble(chains: Vec<ChainState>, sets: Vec<SetState>, rules: Vec<(String, RuleState)>) -> TableState {
    let mut st = TableState::default();
    for c in chains {
        st.chains.insert(c.name.clone(), c);
    }
    for s in sets {
        st.sets.insert(s.name.clone(), s);
    }
    for (chain, r) in rules {
        st.chains
            .entry(chain.clone())
            .or_insert_with(|| ChainState { name: chain, hook: None, rules: Vec::new() })
            .rules
            .push(r);
    }
    st
}

/// A decoding failure as a firewall error naming what was being read.
pub fn read_error(what: &str, e: NlError) -> CniError {
    CniError::Firewall(format!("nf_tables: {what}: {}", e.reason))
}

#[cfg(test)]
mod tests {
    use super::super::encode::{lower_rule, op_messages, op_messages_in, put_str, SetCatalog};
    use super::*;
    use crate::nft::ops::{Op, SetDef, TableRef};
    use crate::nft::plan;
    use crate::{AttachmentKey, IsolationSpec, MasqSpec, PortMapSpec, PortMapping};

    /// Every rule the layouts create, lowered and raised again, is the same rule.
    fn all_ops() -> Vec<Op> {
        let key = AttachmentKey::new("net1", "c1", "eth0");
        let mut ops = plan::plan_masq_add(&MasqSpec {
            key: key.clone(),
            addrs: vec!["10.1.0.5/24".parse().unwrap(), "fd01::5/64".parse().unwrap(), "10.2.0.5/20".parse().unwrap(), "fd02::5/61".parse().unwrap()],
        });
        let mut spec = PortMapSpec::new(
            key.clone(),
            vec![
                PortMapping { host_port: 8080, container_port: 80, protocol: Protocol::Tcp, host_ip: None },
                PortMapping { host_port: 8443, container_port: 443, protocol: Protocol::Tcp, host_ip: Some("192.0.2.1".parse().unwrap()) },
                PortMapping { host_port: 8444, container_port: 443, protocol: Protocol::Sctp, host_ip: Some("2001:db8::1".parse().unwrap()) },
                PortMapping { host_port: 5353, container_port: 53, protocol: Protocol::Udp, host_ip: None },
            ],
        );
        spec.container_v4 = Some("10.1.0.5/24".parse().unwrap());
        spec.container_v6 = Some("fd01::5/64".parse().unwrap());
        ops.extend(plan::plan_portmap_add(&spec));
        spec.masq_all = true;
        ops.extend(plan::plan_portmap_add(&spec));
        for allow in [true, false] {
            ops.extend(plan::plan_isolation_add(&IsolationSpec { bridge: "br1".into(), families: vec![Family::V4], allow_published: allow }));
        }
        ops
    }

    #[test]
    fn every_layout_rule_roundtrips() {
        let mut n = 0;
        for op in all_ops() {
            let Op::AddRule { table, rule, .. } = &op else { continue };
            let lows = lower_rule(table.family, rule).unwrap();
            // through the wire format too
            let msg = &op_messages(&op).unwrap()[0];
            let (_, _, back) = parse_rule(&msg.bytes).unwrap().unwrap();
            assert_eq!(raise(table.family, &lows).as_ref(), Some(&rule.exprs), "{}", rule.text());
            assert_eq!(back.exprs.json(), rule.exprs_json(), "{}", rule.text());
            assert!(back.matches(rule));
            n += 1;
        }
        assert!(n > 20, "{n} rules");
    }

    #[test]
    fn dependencies_are_not_statements() {
        // `meta nfproto ipv4` kept as a statement before a port match, hidden before `ip daddr`
        let t = TableFamily::Inet;
        let r = Rule::new(vec![Expr::Nfproto(Family::V4), Expr::Cmp { field: Field::Dport(Protocol::Udp), negate: false, value: Value::Port(53) }]);
        assert_eq!(raise(t, &lower_rule(t, &r).unwrap()), Some(r.exprs.clone()));
        let r = Rule::new(vec![Expr::Cmp { field: Field::ThDport, negate: true, value: Value::Port(53) }, Expr::Verdict(Verdict::Drop)]);
        assert_eq!(raise(t, &lower_rule(t, &r).unwrap()), Some(r.exprs.clone()));
        // unknown expressions make the rule unparsed
        let j = rule_json(t, &[Low::Other("log".into())]);
        assert_eq!(j, json!([{"unparsed": ["log"]}]));
        // a prefix load without a known family cannot be read
        assert_eq!(raise(t, &[Low::Payload { base: 1, offset: 16, len: 3, dreg: 1 }, Low::Cmp { sreg: 1, op: 0, data: vec![10, 1, 0] }]), None);
    }

    #[test]
    fn keys_and_types() {
        use DataType::*;
        assert_eq!(key_types(29453), vec![Ipv4Addr, InetProto, InetService]);
        assert_eq!(key_types(41), vec![Ifname]);
        // a type with an unknown part is not read, as the JSON reader reads it
        assert_eq!(key_types(7 << 6 | 63), vec![]);
        assert_eq!(key_types(19 << 12 | 19 << 6 | 19), vec![Mark, Mark, Mark]);
        let k = super::super::encode::key_bytes(
            &[Value::Addr("2001:db8::1".parse().unwrap()), Value::Proto(Protocol::Sctp), Value::Port(8444)],
            &[Ipv6Addr, InetProto, InetService],
        )
        .unwrap();
        assert_eq!(k.len(), 24);
        assert_eq!(parse_key(&k, &[Ipv6Addr, InetProto, InetService]).unwrap()[2], Value::Port(8444));
        assert_eq!(parse_key(b"br1\0\0\0\0\0\0\0\0\0\0\0\0\0", &[Ifname]), Some(vec![Value::Ifname("br1".into())]));
        assert_eq!(parse_key(&[1], &[InetProto]), None); // icmp: not a protocol of ours, skipped
    }

    #[test]
    fn elements_and_comments_from_messages() {
        let t = TableRef::inet("t");
        let e = Element::verdict(vec![Value::Proto(Protocol::Tcp), Value::Port(8080)], Verdict::Goto("p-x".into()));
        let shape = |data| SetState { name: "any4".into(), key: vec![DataType::InetProto, DataType::InetService], data, interval: false, elems: vec![] };
        let msg = &op_messages(&Op::AddElements { table: t.clone(), set: "any4".into(), elems: vec![e.clone()] }).unwrap()[0];
        // a dump reply has the request's layout, with NEWSETELEM
        assert_eq!(parse_elems(&msg.bytes, &shape(SetData::Verdict)).unwrap(), vec![e.clone()]);
        // in a plain set, data is not expected: skipped like the JSON reader does
        assert!(parse_elems(&msg.bytes, &shape(SetData::None)).unwrap().is_empty());
        let c = op_messages(&Op::AddChain { table: t, name: "c".into(), base: None, comment: Some("net: n id: c if: eth0".into()) }).unwrap();
        let (table, chain) = parse_chain(&c[0].bytes).unwrap().unwrap();
        assert_eq!((table.as_str(), chain.name.as_str(), chain.hook), ("t", "c", None));
        assert_eq!(udata_comment(&[0, 4, b'a', b'b', b'c', 0], 0).as_deref(), Some("abc"));
        assert_eq!(udata_comment(&[7, 2, b'x', 0, 0, 2, b'y', 0], 0).as_deref(), Some("y"));
        assert_eq!(udata_comment(&[0, 9, b'x'], 0), None);
    }

    // ---- data maps, concatenated interval sets, dnat from a map ----

    fn v(s: &str) -> Value {
        if s.contains('/') {
            Value::Prefix(s.parse().unwrap())
        } else {
            Value::Addr(s.parse().unwrap())
        }
    }

    /// The new statements through the wire and back, and their JSON as `nft -j list` (1.0.6)
    /// printed it for the same rules.
    #[test]
    fn dnat_maps_and_data_map_lookups_roundtrip() {
        let t = TableFamily::Inet;
        let dm = |family, key: Vec<Field>, map: &str| Expr::DnatMap { family, key, map: map.into() };
        let cases = vec![
            (
                Rule::new(vec![dm(Family::V4, vec![Field::Daddr(Family::V4), Field::L4proto, Field::ThDport], "dnat4h")]),
                r#"[{"dnat": {"family": "ip", "addr": {"map": {"key": {"concat": [{"payload": {"protocol": "ip", "field": "daddr"}}, {"meta": {"key": "l4proto"}}, {"payload": {"protocol": "th", "field": "dport"}}]}, "data": "@dnat4h"}}}}]"#,
            ),
            (
                Rule::new(vec![Expr::Nfproto(Family::V4), dm(Family::V4, vec![Field::L4proto, Field::ThDport], "dnat4")]),
                r#"[{"match": {"op": "==", "left": {"meta": {"key": "nfproto"}}, "right": "ipv4"}}, {"dnat": {"family": "ip", "addr": {"map": {"key": {"concat": [{"meta": {"key": "l4proto"}}, {"payload": {"protocol": "th", "field": "dport"}}]}, "data": "@dnat4"}}}}]"#,
            ),
            (
                Rule::new(vec![dm(Family::V6, vec![Field::Daddr(Family::V6), Field::L4proto, Field::ThDport], "dnat6h")]),
                r#"[{"dnat": {"family": "ip6", "addr": {"map": {"key": {"concat": [{"payload": {"protocol": "ip6", "field": "daddr"}}, {"meta": {"key": "l4proto"}}, {"payload": {"protocol": "th", "field": "dport"}}]}, "data": "@dnat6h"}}}}]"#,
            ),
            (
                Rule::new(vec![Expr::Lookup { key: vec![Field::Saddr(Family::V4)], set: "masq4".into(), negate: false }, Expr::Masquerade]),
                r#"[{"match": {"op": "==", "left": {"payload": {"protocol": "ip", "field": "saddr"}}, "right": "@masq4"}}, {"masquerade": null}]"#,
            ),
            (
                Rule::new(vec![
                    Expr::CtStatusDnat,
                    Expr::Lookup { key: vec![Field::Daddr(Family::V6), Field::Saddr(Family::V6)], set: "exempt6".into(), negate: false },
                    Expr::Masquerade,
                ]),
                r#"[{"match": {"op": "in", "left": {"ct": {"key": "status"}}, "right": "dnat"}}, {"match": {"op": "==", "left": {"concat": [{"payload": {"protocol": "ip6", "field": "daddr"}}, {"payload": {"protocol": "ip6", "field": "saddr"}}]}, "right": "@exempt6"}}, {"masquerade": null}]"#,
            ),
            // masked concatenations (per-length pair sets), as nft 1.0.6 printed them
            (
                Rule::new(vec![
                    Expr::Lookup { key: vec![Field::Saddr(Family::V4), Field::DaddrMasked(Family::V4, 24)], set: "e24".into(), negate: false },
                    Expr::Verdict(Verdict::Accept),
                ]),
                r#"[{"match": {"op": "==", "left": {"concat": [{"payload": {"protocol": "ip", "field": "saddr"}}, {"&": [{"payload": {"protocol": "ip", "field": "daddr"}}, "255.255.255.0"]}]}, "right": "@e24"}}, {"accept": null}]"#,
            ),
            (
                Rule::new(vec![
                    Expr::Lookup { key: vec![Field::Saddr(Family::V6), Field::DaddrMasked(Family::V6, 64)], set: "e6_64".into(), negate: false },
                    Expr::Verdict(Verdict::Accept),
                ]),
                r#"[{"match": {"op": "==", "left": {"concat": [{"payload": {"protocol": "ip6", "field": "saddr"}}, {"&": [{"payload": {"protocol": "ip6", "field": "daddr"}}, "ffff:ffff:ffff:ffff::"]}]}, "right": "@e6_64"}}, {"accept": null}]"#,
            ),
            (
                Rule::new(vec![
                    Expr::CtStatusDnat,
                    Expr::Lookup { key: vec![Field::Daddr(Family::V4), Field::SaddrMasked(Family::V4, 16)], set: "e24".into(), negate: false },
                    Expr::Masquerade,
                ]),
                r#"[{"match": {"op": "in", "left": {"ct": {"key": "status"}}, "right": "dnat"}}, {"match": {"op": "==", "left": {"concat": [{"payload": {"protocol": "ip", "field": "daddr"}}, {"&": [{"payload": {"protocol": "ip", "field": "saddr"}}, "255.255.0.0"]}]}, "right": "@e24"}}, {"masquerade": null}]"#,
            ),
            (
                Rule::new(vec![
                    Expr::CtStatusDnat,
                    Expr::Lookup { key: vec![Field::Daddr(Family::V6), Field::SaddrMasked(Family::V6, 0)], set: "h6_0".into(), negate: false },
                    Expr::Masquerade,
                ]),
                r#"[{"match": {"op": "in", "left": {"ct": {"key": "status"}}, "right": "dnat"}}, {"match": {"op": "==", "left": {"concat": [{"payload": {"protocol": "ip6", "field": "daddr"}}, {"&": [{"payload": {"protocol": "ip6", "field": "saddr"}}, "::"]}]}, "right": "@h6_0"}}, {"masquerade": null}]"#,
            ),
        ];
        for (rule, nft_json) in cases {
            let op = Op::AddRule { table: TableRef::inet("t"), chain: "c".into(), rule: rule.clone() };
            let (_, _, back) = parse_rule(&op_messages(&op).unwrap()[0].bytes).unwrap().unwrap();
            assert!(back.matches(&rule), "{}", rule.text());
            let want: J = serde_json::from_str(nft_json).unwrap();
            assert_eq!(back.exprs.json(), want, "{}", rule.text());
            // the kernel reports the flags it derived from the registers given: still the same statement
            let mut lows = lower_rule(t, &rule).unwrap();
            for l in lows.iter_mut() {
                if let Low::Nat { flags, .. } = l {
                    *flags = NF_NAT_RANGE_MAP_IPS | NF_NAT_RANGE_PROTO_SPECIFIED;
                }
            }
            assert_eq!(rule_json(t, &lows), want);
        }
        // other registers or flags are other statements
        let rule = Rule::new(vec![dm(Family::V6, vec![Field::L4proto, Field::ThDport], "m")]);
        let lows = lower_rule(t, &rule).unwrap();
        let mut wrong_port = lows.clone();
        if let Some(Low::Nat { proto, .. }) = wrong_port.last_mut() {
            *proto = Some(9);
        }
        assert_eq!(raise(t, &wrong_port), None);
        let mut random = lows.clone();
        if let Some(Low::Nat { flags, .. }) = random.last_mut() {
            *flags = 0x4; // NF_NAT_RANGE_PROTO_RANDOM
        }
        assert_eq!(raise(t, &random), None);
        let mut no_nat = lows;
        no_nat.pop();
        assert_eq!(raise(t, &no_nat), None);
    }

    /// `ip saddr . ip daddr & 255.255.255.0 @s` as `nft --debug=netlink` (1.0.6) lists it: saddr
    /// into register 1, daddr into the next 4-byte slot (9), masked there, then the lookup.
    #[test]
    fn masked_concatenation_lowers_like_nft() {
        let t = TableFamily::Inet;
        let rule = Rule::new(vec![Expr::Lookup { key: vec![Field::Saddr(Family::V4), Field::DaddrMasked(Family::V4, 24)], set: "s".into(), negate: false }]);
        let lows = lower_rule(t, &rule).unwrap();
        assert_eq!(
            lows[2..],
            [
                Low::Payload { base: NFT_PAYLOAD_NETWORK_HEADER, offset: 12, len: 4, dreg: 1 },
                Low::Payload { base: NFT_PAYLOAD_NETWORK_HEADER, offset: 16, len: 4, dreg: 9 },
                Low::Bitwise { sreg: 9, dreg: 9, mask: vec![255, 255, 255, 0], xor: vec![0; 4] },
                Low::Lookup { set: "s".into(), sreg: 1, dreg: None, flags: 0 },
            ]
        );
        assert_eq!(raise(t, &lows), Some(rule.exprs.clone()));
        // a mask that is not a prefix, or a bitwise on another register, is not this statement
        let mut holes = lows.clone();
        holes[4] = Low::Bitwise { sreg: 9, dreg: 9, mask: vec![255, 0, 255, 0], xor: vec![0; 4] };
        assert_eq!(raise(t, &holes), None);
        let mut other_reg = lows;
        other_reg[4] = Low::Bitwise { sreg: 1, dreg: 1, mask: vec![255, 255, 255, 0], xor: vec![0; 4] };
        assert_eq!(raise(t, &other_reg), None);
        // a masked field is no compare
        let cmp = Rule::new(vec![Expr::Cmp { field: Field::SaddrMasked(Family::V4, 8), negate: false, value: Value::Addr("10.0.0.0".parse().unwrap()) }]);
        assert!(lower_rule(t, &cmp).is_err());
    }

    #[test]
    fn nat_ranges_are_not_statements() {
        // as the kernel dumps `dnat ip to 10.0.0.1-10.0.0.2`: a maximum register other than the minimum
        let mut d = Vec::new();
        put_str(&mut d, NFTA_EXPR_NAME, "nat");
        cni_common::netlink::socket::put_nested(&mut d, NFTA_EXPR_DATA, |x| {
            for (k, val) in [(NFTA_NAT_TYPE, NFT_NAT_DNAT), (NFTA_NAT_FAMILY, 2), (NFTA_NAT_REG_ADDR_MIN, 1), (NFTA_NAT_REG_ADDR_MAX, 9)] {
                cni_common::netlink::socket::put_attr(x, k, &val.to_be_bytes());
            }
        });
        assert_eq!(parse_expr(&d).unwrap(), Low::Other("nat".into()));
    }

    #[test]
    fn data_maps_and_interval_sets_from_messages() {
        use DataType::*;
        let t = TableRef::inet("t");
        let defs = [
            SetDef::map("masq4", vec![Ipv4Addr], vec![Mark, Mark, Mark]),
            SetDef::interval_set("exempt6", vec![Ipv6Addr, Ipv6Addr]),
            SetDef::map("dnat4", vec![InetProto, InetService], vec![Ipv4Addr, InetService]),
            SetDef::vmap("v", vec![Ipv4Addr, Ipv4Addr]),
        ];
        let mut shapes = Vec::new();
        for def in &defs {
            let msg = &op_messages(&Op::AddSet { table: t.clone(), set: def.clone() }).unwrap()[0];
            let (table, st, flags) = parse_set(&msg.bytes).unwrap().unwrap();
            assert_eq!(table, "t");
            assert_eq!((&st.name, &st.key, &st.data, st.interval), (&def.name, &def.key, &def.data, def.interval));
            assert_eq!(flags & NFT_SET_CONCAT != 0, def.interval);
            shapes.push(st);
        }
        let sets = SetCatalog::of_ops(&defs.iter().map(|d| Op::AddSet { table: t.clone(), set: d.clone() }).collect::<Vec<_>>());
        let back = |set: &SetState, elems: Vec<Element>| {
            let op = Op::AddElements { table: t.clone(), set: set.name.clone(), elems };
            parse_elems(&op_messages_in(&op, &sets).unwrap()[0].bytes, set).unwrap()
        };
        let m = Element::data(vec![v("10.88.0.5")], vec![Value::Mark(0x0123_4567), Value::Mark(0x89ab_cdef), Value::Mark(1)]);
        assert_eq!(back(&shapes[0], vec![m.clone()]), vec![m.clone()]);
        // a data map's element without its data, or with data of other types, is not read
        assert!(back(&SetState { data: SetData::None, ..shapes[0].clone() }, vec![m.clone()]).is_empty());
        assert!(back(&SetState { data: SetData::Values(vec![Mark]), ..shapes[0].clone() }, vec![m]).is_empty());
        // ranges: a host written as a /128 reads as the address, prefixes as their networks
        let written = vec![
            Element::key(vec![v("fd88::5"), v("fd88::1/64")]),
            Element::key(vec![v("fd88::6"), v("::/0")]),
            Element::key(vec![v("fd88::7"), v("fd88::7/128")]),
        ];
        let read = vec![
            Element::key(vec![v("fd88::5"), v("fd88::/64")]),
            Element::key(vec![v("fd88::6"), v("::/0")]),
            Element::key(vec![v("fd88::7"), v("fd88::7")]),
        ];
        assert_eq!(back(&shapes[1], written), read);
        let d = Element::data(vec![Value::Proto(Protocol::Sctp), Value::Port(9000)], vec![v("10.88.0.5"), Value::Port(9000)]);
        assert_eq!(back(&shapes[2], vec![d.clone()]), vec![d]);
        let vm = Element::verdict(vec![v("10.0.0.1"), v("10.0.0.2")], Verdict::Jump("c".into()));
        assert_eq!(back(&shapes[3], vec![vm.clone()]), vec![vm]);
    }

    #[test]
    fn ranges_read_as_nft_prints_them() {
        use DataType::*;
        let b = |s: &str| match s.parse::<IpAddr>().unwrap() {
            IpAddr::V4(a) => a.octets().to_vec(),
            IpAddr::V6(a) => a.octets().to_vec(),
        };
        let two = |x: &str, y: &str| [b(x), b(y)].concat();
        let r = |first: Vec<u8>, last: Vec<u8>| parse_range_key(&first, &last, &[Ipv4Addr, Ipv4Addr]);
        assert_eq!(r(two("10.0.0.1", "10.1.0.0"), two("10.0.0.1", "10.1.255.255")), Some(vec![v("10.0.0.1"), v("10.1.0.0/16")]));
        assert_eq!(r(two("0.0.0.0", "10.1.0.7"), two("255.255.255.255", "10.1.0.7")), Some(vec![v("0.0.0.0/0"), v("10.1.0.7")]));
        assert_eq!(r(two("10.0.0.254", "10.1.0.7"), two("10.0.0.255", "10.1.0.7")), Some(vec![v("10.0.0.254/31"), v("10.1.0.7")]));
        // not a prefix: no element (the JSON reader skips `{"range": ...}` too)
        assert_eq!(r(two("10.0.0.1", "10.1.0.0"), two("10.0.0.2", "10.1.0.0")), None);
        assert_eq!(r(two("10.0.0.1", "10.1.0.255"), two("10.0.0.1", "10.1.0.0")), None); // last before first
        assert_eq!(r(two("10.0.0.0", "10.1.0.1"), two("10.0.0.0", "10.1.0.255")), None);
        let v6 = parse_range_key(&[b("::"), b("fd00::")].concat(), &[b("ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff"), b("fd00::ffff")].concat(), &[Ipv6Addr, Ipv6Addr]);
        assert_eq!(v6, Some(vec![v("::/0"), v("fd00::/112")]));
        // port ranges are not read; one port is
        let pp = |a: u16, z: u16| parse_range_key(&[6, 0, 0, 0, (a >> 8) as u8, a as u8, 0, 0], &[6, 0, 0, 0, (z >> 8) as u8, z as u8, 0, 0], &[InetProto, InetService]);
        assert_eq!(pp(80, 80), Some(vec![Value::Proto(Protocol::Tcp), Value::Port(80)]));
        assert_eq!(pp(80, 90), None);
    }
}
