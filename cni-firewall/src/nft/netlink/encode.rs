//! Encoding: [`Op`]s into nf_tables netlink messages, rule statements ([`Expr`]) into kernel
//! expressions.
//!
//! Everything is laid out the way `nft` 1.x lays it out for the same script line, so that a table
//! written here and one written by `nft -f` hold the same objects (same set key types, lengths
//! and user data, same expressions and registers) and `nft list` prints them identically:
//!
//! - payload matches of `ip`/`ip6` fields in an `inet` table carry the `meta nfproto` dependency,
//!   `tcp|udp|sctp dport` the `meta l4proto` one, each once per rule; `th dport` none;
//! - a prefix on a byte boundary is a shorter load, any other prefix a full load, a mask and a
//!   compare;
//! - concatenated keys are loaded into consecutive 4-byte register slots (slot 0 = `NFT_REG_1`,
//!   every 16-byte-aligned slot as the 16-byte register, the others as `NFT_REG32_*`), each field
//!   padded to 4 bytes, and looked up from the first;
//! - NAT takes the address in `NFT_REG_1` and the port in `NFT_REG_2`; a NAT from a map
//!   (`dnat ip to <key> map @m`) looks the key up into `NFT_REG_1` and takes the port from the
//!   slot right after the address (`NFT_REG32_01` for IPv4, `NFT_REG_2` for IPv6);
//! - sets carry `nft`'s user data (key/data byte order, the typeof marker of concatenated keys
//!   and data); comments of chains and rules are `NFTNL_UDATA_*_COMMENT` TLVs holding the text
//!   and a NUL;
//! - interval sets with concatenated keys (the kernel's pipapo backend) are flagged
//!   `NFT_SET_INTERVAL | NFT_SET_CONCAT` and describe their fields' lengths (`NFTA_SET_DESC`);
//!   each element names its first (`NFTA_SET_ELEM_KEY`) and last (`NFTA_SET_ELEM_KEY_END`) key,
//!   in additions and deletions alike; marks are in host byte order.

use super::consts::*;
use crate::nft::ops::{
    comment_text, BaseChain, ChainType, DataType, Element, Expr, Field, Hook, Op, Rule, SetData, SetDef, TableFamily, TableRef, Value,
    Verdict,
};
use crate::{CniError, Family, Protocol};
use cni_common::netlink::socket::{nfgen_message, put_attr, put_nested, HEADER_LEN, NFGENMSG_LEN};
use ipnetwork::IpNetwork;
use std::collections::HashMap;
use std::net::IpAddr;

/// Data an immediate expression loads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ImmData {
    Value(Vec<u8>),
    Verdict(Verdict),
}

/// One kernel expression, with the attributes this crate uses (values in wire byte order).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Low {
    /// `meta load <key> => reg`
    Meta { key: u32, dreg: u32 },
    /// `payload load <len>b @ <base> header + <offset> => reg`
    Payload { base: u32, offset: u32, len: u32, dreg: u32 },
    /// `cmp <op> reg <data>`
    Cmp { sreg: u32, op: u32, data: Vec<u8> },
    /// `bitwise reg = (reg & mask) ^ xor` (length = mask length)
    Bitwise { sreg: u32, dreg: u32, mask: Vec<u8>, xor: Vec<u8> },
    /// `lookup reg set <set> [dreg]` (`dreg` 0 for verdict maps), `flags` 1 = inverted
    Lookup { set: String, sreg: u32, dreg: Option<u32>, flags: u32 },
    /// `immediate reg <data>`
    Immediate { dreg: u32, data: ImmData },
    /// `nat <kind> <family> addr_min reg proto_min reg flags`
    Nat { kind: u32, family: u32, addr: Option<u32>, proto: Option<u32>, flags: u32 },
    /// `masq [flags]`
    Masq { flags: u32 },
    /// `ct load <key> => reg`
    Ct { key: u32, dreg: u32 },
    /// `fib <flags> <result> => reg`
    Fib { dreg: u32, result: u32, flags: u32 },
    /// `counter` (read back only; no layout uses counters)
    Counter,
    /// Any other expression, by name (read back only).
    Other(String),
}

impl Low {
    /// The kernel's name of the expression.
    pub fn name(&self) -> &str {
        match self {
            Low::Meta { .. } => "meta",
            Low::Payload { .. } => "payload",
            Low::Cmp { .. } => "cmp",
            Low::Bitwise { .. } => "bitwise",
            Low::Lookup { .. } => "lookup",
            Low::Immediate { .. } => "immediate",
            Low::Nat { .. } => "nat",
            Low::Masq { .. } => "masq",
            Low::Ct { .. } => "ct",
            Low::Fib { .. } => "fib",
            Low::Counter => "counter",
            Low::Other(n) => n,
        }
    }
}

fn unsupported(what: impl std::fmt::Display) -> CniError {
    CniError::Firewall(format!("nf_tables encoding: {what}"))
}

// ---------------------------------------------------------------------------------------------
// Registers, fields and values
// ---------------------------------------------------------------------------------------------

/// The register of 4-byte slot `slot` (nft's numbering: slot 0 = `NFT_REG_1`).
pub fn reg_of_slot(slot: u32) -> u32 {
    if slot.is_multiple_of(4) {
        NFT_REG_1 + slot / 4
    } else {
        NFT_REG32_00 + slot
    }
}

/// The 4-byte slot register `reg` starts at (inverse of [`reg_of_slot`]).
pub fn slot_of_reg(reg: u32) -> Option<u32> {
    match reg {
        1..=4 => Some((reg - NFT_REG_1) * 4),
        8..=23 => Some(reg - NFT_REG32_00),
        _ => None,
    }
}

/// Bytes a field occupies in a register.
pub fn field_len(f: Field) -> usize {
    match f.unmasked().0 {
        Field::Saddr(Family::V4) | Field::Daddr(Family::V4) => 4,
        Field::Saddr(Family::V6) | Field::Daddr(Family::V6) => 16,
        Field::Nfproto | Field::L4proto => 1,
        Field::ThDport | Field::Dport(_) => 2,
        Field::Iifname | Field::Oifname => IFNAMSIZ,
        Field::SaddrMasked(..) | Field::DaddrMasked(..) => unreachable!("unmasked above"),
    }
}

/// The mask of the first `plen` bits of a `len`-byte field.
pub fn prefix_mask(len: u32, plen: u32) -> Vec<u8> {
    (0..len)
        .map(|i| {
            let bits = plen.saturating_sub(i * 8).min(8);
            if bits == 0 {
                0
            } else {
                0xffu8 << (8 - bits)
            }
        })
        .collect()
}

/// (offset, length) of an address field (masked or not) in the network header.
pub fn addr_field(f: Field) -> Option<(u32, u32)> {
    match f.unmasked().0 {
        Field::Saddr(Family::V4) => Some((12, 4)),
        Field::Daddr(Family::V4) => Some((16, 4)),
        Field::Saddr(Family::V6) => Some((8, 16)),
        Field::Daddr(Family::V6) => Some((24, 16)),
        _ => None,
    }
}

/// The expression that loads `f` into `dreg` (a masked address: the whole address; the mask is
/// the caller's).
fn load(f: Field, dreg: u32) -> Low {
    match f.unmasked().0 {
        Field::Saddr(_) | Field::Daddr(_) => {
            let (offset, len) = addr_field(f).expect("address field");
            Low::Payload { base: NFT_PAYLOAD_NETWORK_HEADER, offset, len, dreg }
        }
        Field::Nfproto => Low::Meta { key: NFT_META_NFPROTO, dreg },
        Field::L4proto => Low::Meta { key: NFT_META_L4PROTO, dreg },
        Field::ThDport | Field::Dport(_) => Low::Payload { base: NFT_PAYLOAD_TRANSPORT_HEADER, offset: 2, len: 2, dreg },
        Field::Iifname => Low::Meta { key: NFT_META_IIFNAME, dreg },
        Field::Oifname => Low::Meta { key: NFT_META_OIFNAME, dreg },
        Field::SaddrMasked(..) | Field::DaddrMasked(..) => unreachable!("unmasked above"),
    }
}

pub fn nfproto_of(f: Family) -> u8 {
    match f {
        Family::V4 => NFPROTO_IPV4,
        Family::V6 => NFPROTO_IPV6,
    }
}

pub fn proto_number(p: Protocol) -> u8 {
    match p {
        Protocol::Tcp => 6,
        Protocol::Udp => 17,
        Protocol::Sctp => 132,
    }
}

/// An interface name as the kernel compares it: 16 bytes, NUL-padded. Names are data here: a `*`
/// is a character, not a wildcard.
pub fn ifname_bytes(name: &str) -> Result<Vec<u8>, CniError> {
    if name.is_empty() || name.len() >= IFNAMSIZ || name.as_bytes().contains(&0) {
        return Err(unsupported(format!("interface name {name:?} is not 1 to 15 bytes without NUL")));
    }
    let mut b = name.as_bytes().to_vec();
    b.resize(IFNAMSIZ, 0);
    Ok(b)
}

fn addr_bytes(a: &IpAddr) -> Vec<u8> {
    match a {
        IpAddr::V4(a) => a.octets().to_vec(),
        IpAddr::V6(a) => a.octets().to_vec(),
    }
}

/// A value of a key part or a compare, in wire order and natural length; `ty` checks its type.
fn value_bytes(v: &Value, ty: DataType) -> Result<Vec<u8>, CniError> {
    let bad = || unsupported(format!("value {} is not of type {}", v.text(), ty.as_str()));
    match (v, ty) {
        (Value::Addr(a @ IpAddr::V4(_)), DataType::Ipv4Addr) | (Value::Addr(a @ IpAddr::V6(_)), DataType::Ipv6Addr) => {
            Ok(addr_bytes(a))
        }
        (Value::Proto(p), DataType::InetProto) => Ok(vec![proto_number(*p)]),
        (Value::Port(p), DataType::InetService) => Ok(p.to_be_bytes().to_vec()),
        (Value::Ifname(n), DataType::Ifname) => ifname_bytes(n),
        // nft keeps marks in host byte order
        (Value::Mark(m), DataType::Mark) => Ok(m.to_ne_bytes().to_vec()),
        _ => Err(bad()),
    }
}

/// The first and last value a key part of an interval set covers, in wire order and natural
/// length: a prefix spans its network's addresses, any other value only itself.
fn range_bytes(v: &Value, ty: DataType) -> Result<(Vec<u8>, Vec<u8>), CniError> {
    match (v, ty) {
        (Value::Prefix(p @ IpNetwork::V4(_)), DataType::Ipv4Addr) | (Value::Prefix(p @ IpNetwork::V6(_)), DataType::Ipv6Addr) => {
            Ok((addr_bytes(&p.network()), addr_bytes(&p.broadcast())))
        }
        _ => {
            let b = value_bytes(v, ty)?;
            Ok((b.clone(), b))
        }
    }
}

/// Natural key length of a data type.
pub fn type_len(t: DataType) -> usize {
    match t {
        DataType::Ipv4Addr => 4,
        DataType::Ipv6Addr => 16,
        DataType::InetProto => 1,
        DataType::InetService => 2,
        DataType::Ifname => IFNAMSIZ,
        DataType::Mark => 4,
    }
}

/// nft's type number of a data type.
pub fn type_id(t: DataType) -> u32 {
    match t {
        DataType::Ipv4Addr => TYPE_IPADDR,
        DataType::Ipv6Addr => TYPE_IP6ADDR,
        DataType::InetProto => TYPE_INET_PROTOCOL,
        DataType::InetService => TYPE_INET_SERVICE,
        DataType::Ifname => TYPE_IFNAME,
        DataType::Mark => TYPE_MARK,
    }
}

/// The data type of nft's type number.
pub fn type_of_id(id: u32) -> Option<DataType> {
    Some(match id {
        TYPE_IPADDR => DataType::Ipv4Addr,
        TYPE_IP6ADDR => DataType::Ipv6Addr,
        TYPE_INET_PROTOCOL => DataType::InetProto,
        TYPE_INET_SERVICE => DataType::InetService,
        TYPE_IFNAME => DataType::Ifname,
        TYPE_MARK => DataType::Mark,
        _ => return None,
    })
}

/// The byte order nft records for a key of this type.
fn type_byteorder(t: DataType) -> u32 {
    match t {
        DataType::Ifname | DataType::Mark => BYTEORDER_HOST_ENDIAN,
        _ => BYTEORDER_BIG_ENDIAN,
    }
}

/// Parts laid out as a key or map data: one part at its natural length, or every part padded
/// to 4 bytes (a concatenation).
fn concat(mut parts: Vec<Vec<u8>>) -> Vec<u8> {
    if parts.len() == 1 {
        return parts.pop().unwrap_or_default();
    }
    let mut out = Vec::new();
    for p in parts {
        out.extend(p);
        out.resize(out.len().next_multiple_of(4), 0);
    }
    out
}

fn check_parts(key: &[Value], types: &[DataType]) -> Result<(), CniError> {
    if key.len() != types.len() || key.is_empty() {
        return Err(unsupported(format!("key of {} parts for a type of {}", key.len(), types.len())));
    }
    Ok(())
}

/// Key bytes of an element (or the data of a data map's element): one part at its natural
/// length, or every part padded to 4 bytes.
pub fn key_bytes(key: &[Value], types: &[DataType]) -> Result<Vec<u8>, CniError> {
    check_parts(key, types)?;
    Ok(concat(key.iter().zip(types).map(|(v, t)| value_bytes(v, *t)).collect::<Result<_, _>>()?))
}

/// The first and last key an element of an interval set covers (`NFTA_SET_ELEM_KEY` and
/// `NFTA_SET_ELEM_KEY_END`): every part's first values, and every part's last values.
pub fn key_range_bytes(key: &[Value], types: &[DataType]) -> Result<(Vec<u8>, Vec<u8>), CniError> {
    check_parts(key, types)?;
    let (first, last): (Vec<_>, Vec<_>) = key.iter().zip(types).map(|(v, t)| range_bytes(v, *t)).collect::<Result<Vec<_>, _>>()?.into_iter().unzip();
    Ok((concat(first), concat(last)))
}

/// The data types of an element's key (or data), guessed from its values (for an element
/// operation on a set the transaction does not define and that was not looked up).
fn types_of(key: &[Value]) -> Result<Vec<DataType>, CniError> {
    key.iter()
        .map(|v| match v {
            Value::Addr(IpAddr::V4(_)) | Value::Prefix(IpNetwork::V4(_)) => Ok(DataType::Ipv4Addr),
            Value::Addr(IpAddr::V6(_)) | Value::Prefix(IpNetwork::V6(_)) => Ok(DataType::Ipv6Addr),
            Value::Proto(_) => Ok(DataType::InetProto),
            Value::Port(_) => Ok(DataType::InetService),
            Value::Ifname(_) => Ok(DataType::Ifname),
            Value::Mark(_) => Ok(DataType::Mark),
        })
        .collect()
}

// ---------------------------------------------------------------------------------------------
// Statements into expressions
// ---------------------------------------------------------------------------------------------

/// Lowering state of one rule: what the earlier statements established about the packet.
struct Lowering {
    table: TableFamily,
    nfproto: Option<Family>,
    l4: Option<Protocol>,
    out: Vec<Low>,
}

impl Lowering {
    fn need_nfproto(&mut self, fam: Family) -> Result<(), CniError> {
        match (self.table, fam) {
            (TableFamily::Inet, _) => {
                if self.nfproto != Some(fam) {
                    self.out.push(Low::Meta { key: NFT_META_NFPROTO, dreg: NFT_REG_1 });
                    self.out.push(Low::Cmp { sreg: NFT_REG_1, op: NFT_CMP_EQ, data: vec![nfproto_of(fam)] });
                    self.nfproto = Some(fam);
                }
                Ok(())
            }
            (TableFamily::Ip, Family::V4) | (TableFamily::Ip6, Family::V6) => Ok(()),
            (t, f) => Err(unsupported(format!("an {f:?} match in a table of family {}", t.as_str()))),
        }
    }

    fn need_l4(&mut self, p: Protocol) {
        if self.l4 != Some(p) {
            self.out.push(Low::Meta { key: NFT_META_L4PROTO, dreg: NFT_REG_1 });
            self.out.push(Low::Cmp { sreg: NFT_REG_1, op: NFT_CMP_EQ, data: vec![proto_number(p)] });
            self.l4 = Some(p);
        }
    }

    fn deps(&mut self, f: Field) -> Result<(), CniError> {
        match f.unmasked().0 {
            Field::Saddr(fam) | Field::Daddr(fam) => self.need_nfproto(fam),
            Field::Dport(p) => {
                self.need_l4(p);
                Ok(())
            }
            _ => Ok(()),
        }
    }

    fn cmp(&mut self, field: Field, negate: bool, value: &Value) -> Result<(), CniError> {
        let op = if negate { NFT_CMP_NEQ } else { NFT_CMP_EQ };
        let r = NFT_REG_1;
        self.deps(field)?;
        match field {
            Field::Saddr(fam) | Field::Daddr(fam) => {
                let (offset, full) = addr_field(field).expect("address field");
                let (addr, plen) = match value {
                    Value::Addr(a) => (*a, full * 8),
                    Value::Prefix(p) => (p.network(), u32::from(p.prefix())),
                    _ => return Err(unsupported(format!("{} compared with {}", Expr::Cmp { field, negate, value: value.clone() }.text(), value.text()))),
                };
                if Family::of(&addr) != fam {
                    return Err(unsupported(format!("address {addr} in a match of the other family")));
                }
                let bytes = addr_bytes(&addr);
                let base = NFT_PAYLOAD_NETWORK_HEADER;
                if plen == full * 8 {
                    self.out.push(Low::Payload { base, offset, len: full, dreg: r });
                    self.out.push(Low::Cmp { sreg: r, op, data: bytes });
                } else if plen % 8 == 0 && plen > 0 {
                    let n = plen / 8;
                    self.out.push(Low::Payload { base, offset, len: n, dreg: r });
                    self.out.push(Low::Cmp { sreg: r, op, data: bytes[..n as usize].to_vec() });
                } else {
                    let mask = prefix_mask(full, plen);
                    let net: Vec<u8> = bytes.iter().zip(&mask).map(|(a, m)| a & m).collect();
                    self.out.push(Low::Payload { base, offset, len: full, dreg: r });
                    self.out.push(Low::Bitwise { sreg: r, dreg: r, xor: vec![0; mask.len()], mask });
                    self.out.push(Low::Cmp { sreg: r, op, data: net });
                }
            }
            Field::L4proto => {
                let Value::Proto(p) = value else { return Err(unsupported(format!("meta l4proto compared with {}", value.text()))) };
                self.out.push(load(field, r));
                self.out.push(Low::Cmp { sreg: r, op, data: vec![proto_number(*p)] });
                if !negate {
                    self.l4 = Some(*p);
                }
            }
            Field::ThDport | Field::Dport(_) => {
                let Value::Port(p) = value else { return Err(unsupported(format!("a port compared with {}", value.text()))) };
                self.out.push(load(field, r));
                self.out.push(Low::Cmp { sreg: r, op, data: p.to_be_bytes().to_vec() });
            }
            Field::Iifname | Field::Oifname => {
                let Value::Ifname(n) = value else { return Err(unsupported(format!("an interface name compared with {}", value.text()))) };
                self.out.push(load(field, r));
                self.out.push(Low::Cmp { sreg: r, op, data: ifname_bytes(n)? });
            }
            Field::Nfproto => return Err(unsupported("meta nfproto in a compare (use the nfproto statement)")),
            Field::SaddrMasked(..) | Field::DaddrMasked(..) => {
                return Err(unsupported(format!("{} in a compare (compare with a prefix instead)", Expr::Cmp { field, negate, value: value.clone() }.text())))
            }
        }
        Ok(())
    }

    /// Load `key` into consecutive register slots; returns the first register.
    fn concat(&mut self, key: &[Field]) -> Result<u32, CniError> {
        if key.is_empty() {
            return Err(unsupported("lookup without a key"));
        }
        for f in key {
            self.deps(*f)?;
        }
        let mut slot = 0u32;
        for f in key {
            let reg = reg_of_slot(slot);
            self.out.push(load(*f, reg));
            if let (_, Some(plen)) = f.unmasked() {
                let len = field_len(*f) as u32;
                let mask = prefix_mask(len, u32::from(plen));
                self.out.push(Low::Bitwise { sreg: reg, dreg: reg, xor: vec![0; mask.len()], mask });
            }
            slot += field_len(*f).div_ceil(4) as u32;
        }
        if slot > 16 {
            return Err(unsupported("key longer than the 64 bytes of registers"));
        }
        Ok(reg_of_slot(0))
    }

    fn expr(&mut self, e: &Expr) -> Result<(), CniError> {
        match e {
            Expr::Cmp { field, negate, value } => self.cmp(*field, *negate, value)?,
            Expr::Nfproto(fam) => {
                self.out.push(Low::Meta { key: NFT_META_NFPROTO, dreg: NFT_REG_1 });
                self.out.push(Low::Cmp { sreg: NFT_REG_1, op: NFT_CMP_EQ, data: vec![nfproto_of(*fam)] });
                self.nfproto = Some(*fam);
            }
            Expr::Lookup { key, set, negate } => {
                let sreg = self.concat(key)?;
                let flags = if *negate { NFT_LOOKUP_F_INV } else { 0 };
                self.out.push(Low::Lookup { set: set.clone(), sreg, dreg: None, flags });
            }
            Expr::Vmap { key, map } => {
                let sreg = self.concat(key)?;
                self.out.push(Low::Lookup { set: map.clone(), sreg, dreg: Some(NFT_REG_VERDICT), flags: 0 });
            }
            Expr::FibDaddrLocal => {
                self.out.push(Low::Fib { dreg: NFT_REG_1, result: NFT_FIB_RESULT_ADDRTYPE, flags: NFTA_FIB_F_DADDR });
                self.out.push(Low::Cmp { sreg: NFT_REG_1, op: NFT_CMP_EQ, data: RTN_LOCAL.to_ne_bytes().to_vec() });
            }
            Expr::CtStatusDnat => {
                self.out.push(Low::Ct { key: NFT_CT_STATUS, dreg: NFT_REG_1 });
                self.out.push(Low::Bitwise {
                    sreg: NFT_REG_1,
                    dreg: NFT_REG_1,
                    mask: IPS_DST_NAT.to_ne_bytes().to_vec(),
                    xor: vec![0; 4],
                });
                self.out.push(Low::Cmp { sreg: NFT_REG_1, op: NFT_CMP_NEQ, data: vec![0; 4] });
            }
            Expr::CtDirectionReply => {
                self.out.push(Low::Ct { key: NFT_CT_KEY_DIRECTION, dreg: NFT_REG_1 });
                self.out.push(Low::Cmp { sreg: NFT_REG_1, op: NFT_CMP_EQ, data: vec![IP_CT_DIR_REPLY] });
            }
            Expr::Masquerade => self.out.push(Low::Masq { flags: 0 }),
            Expr::Dnat { addr, port } => {
                let fam = Family::of(addr);
                if matches!((self.table, fam), (TableFamily::Ip, Family::V6) | (TableFamily::Ip6, Family::V4)) {
                    return Err(unsupported(format!("dnat to {addr} in a table of family {}", self.table.as_str())));
                }
                // nft takes a whole 16-byte register for each of address and port.
                let (ra, rp) = (NFT_REG_1, NFT_REG_1 + 1);
                self.out.push(Low::Immediate { dreg: ra, data: ImmData::Value(addr_bytes(addr)) });
                self.out.push(Low::Immediate { dreg: rp, data: ImmData::Value(port.to_be_bytes().to_vec()) });
                self.out.push(Low::Nat {
                    kind: NFT_NAT_DNAT,
                    family: u32::from(nfproto_of(fam)),
                    addr: Some(ra),
                    proto: Some(rp),
                    flags: NF_NAT_RANGE_PROTO_SPECIFIED,
                });
            }
            Expr::DnatMap { family, key, map } => {
                if matches!((self.table, family), (TableFamily::Ip, Family::V6) | (TableFamily::Ip6, Family::V4)) {
                    return Err(unsupported(format!("{} in a table of family {}", e.text(), self.table.as_str())));
                }
                let sreg = self.concat(key)?;
                let (ra, rp) = dnat_map_regs(*family);
                self.out.push(Low::Lookup { set: map.clone(), sreg, dreg: Some(ra), flags: 0 });
                // nft sends no flags here: the kernel derives them from the registers given
                self.out.push(Low::Nat { kind: NFT_NAT_DNAT, family: u32::from(nfproto_of(*family)), addr: Some(ra), proto: Some(rp), flags: 0 });
            }
            Expr::Verdict(v) => self.out.push(Low::Immediate { dreg: NFT_REG_VERDICT, data: ImmData::Verdict(v.clone()) }),
        }
        Ok(())
    }
}

/// The registers of a NAT from a map of `ipvX_addr . inet_service` data: the lookup writes the
/// data from `NFT_REG_1`, the address first, the port in the 4-byte slot right after it.
pub fn dnat_map_regs(family: Family) -> (u32, u32) {
    let addr_slots = match family {
        Family::V4 => 1,
        Family::V6 => 4,
    };
    (NFT_REG_1, reg_of_slot(addr_slots))
}

/// The kernel expressions of a rule in a table of family `table`.
pub fn lower_rule(table: TableFamily, rule: &Rule) -> Result<Vec<Low>, CniError> {
    let mut l = Lowering { table, nfproto: None, l4: None, out: Vec::new() };
    for e in &rule.exprs {
        l.expr(e)?;
    }
    Ok(l.out)
}

// ---------------------------------------------------------------------------------------------
// Expressions into attributes
// ---------------------------------------------------------------------------------------------

fn put_u32(out: &mut Vec<u8>, kind: u16, v: u32) {
    put_attr(out, kind, &v.to_be_bytes());
}

/// A string attribute (NUL-terminated, as the kernel's `NLA_STRING`s are sent by nft).
pub fn put_str(out: &mut Vec<u8>, kind: u16, s: &str) {
    let mut b = Vec::with_capacity(s.len() + 1);
    b.extend_from_slice(s.as_bytes());
    b.push(0);
    put_attr(out, kind, &b);
}

fn put_value(out: &mut Vec<u8>, kind: u16, value: &[u8]) {
    put_nested(out, kind, |d| put_attr(d, NFTA_DATA_VALUE, value));
}

/// `NFTA_DATA_VERDICT { CODE, [CHAIN] }` inside attribute `kind`.
pub fn put_verdict(out: &mut Vec<u8>, kind: u16, v: &Verdict) {
    let (code, chain) = match v {
        Verdict::Accept => (NF_ACCEPT, None),
        Verdict::Drop => (NF_DROP, None),
        Verdict::Return => (NFT_RETURN, None),
        Verdict::Jump(c) => (NFT_JUMP, Some(c)),
        Verdict::Goto(c) => (NFT_GOTO, Some(c)),
    };
    put_nested(out, kind, |d| {
        put_nested(d, NFTA_DATA_VERDICT, |v| {
            put_attr(v, NFTA_VERDICT_CODE, &code.to_be_bytes());
            if let Some(c) = chain {
                put_str(v, NFTA_VERDICT_CHAIN, c);
            }
        })
    });
}

/// Append expression `low` as one `NFTA_LIST_ELEM { NAME, DATA }`.
pub fn put_expr(out: &mut Vec<u8>, low: &Low) {
    put_nested(out, NFTA_LIST_ELEM, |e| {
        put_str(e, NFTA_EXPR_NAME, low.name());
        put_nested(e, NFTA_EXPR_DATA, |d| match low {
            Low::Meta { key, dreg } => {
                put_u32(d, NFTA_META_KEY, *key);
                put_u32(d, NFTA_META_DREG, *dreg);
            }
            Low::Payload { base, offset, len, dreg } => {
                put_u32(d, NFTA_PAYLOAD_DREG, *dreg);
                put_u32(d, NFTA_PAYLOAD_BASE, *base);
                put_u32(d, NFTA_PAYLOAD_OFFSET, *offset);
                put_u32(d, NFTA_PAYLOAD_LEN, *len);
            }
            Low::Cmp { sreg, op, data } => {
                put_u32(d, NFTA_CMP_SREG, *sreg);
                put_u32(d, NFTA_CMP_OP, *op);
                put_value(d, NFTA_CMP_DATA, data);
            }
            Low::Bitwise { sreg, dreg, mask, xor } => {
                put_u32(d, NFTA_BITWISE_SREG, *sreg);
                put_u32(d, NFTA_BITWISE_DREG, *dreg);
                put_u32(d, NFTA_BITWISE_LEN, mask.len() as u32);
                put_value(d, NFTA_BITWISE_MASK, mask);
                put_value(d, NFTA_BITWISE_XOR, xor);
            }
            Low::Lookup { set, sreg, dreg, flags } => {
                put_u32(d, NFTA_LOOKUP_SREG, *sreg);
                if let Some(r) = dreg {
                    put_u32(d, NFTA_LOOKUP_DREG, *r);
                }
                put_str(d, NFTA_LOOKUP_SET, set);
                if *flags != 0 {
                    put_u32(d, NFTA_LOOKUP_FLAGS, *flags);
                }
            }
            Low::Immediate { dreg, data } => {
                put_u32(d, NFTA_IMMEDIATE_DREG, *dreg);
                match data {
                    ImmData::Value(v) => put_value(d, NFTA_IMMEDIATE_DATA, v),
                    ImmData::Verdict(v) => put_verdict(d, NFTA_IMMEDIATE_DATA, v),
                }
            }
            Low::Nat { kind, family, addr, proto, flags } => {
                put_u32(d, NFTA_NAT_TYPE, *kind);
                put_u32(d, NFTA_NAT_FAMILY, *family);
                if let Some(r) = addr {
                    put_u32(d, NFTA_NAT_REG_ADDR_MIN, *r);
                }
                if let Some(r) = proto {
                    put_u32(d, NFTA_NAT_REG_PROTO_MIN, *r);
                }
                if *flags != 0 {
                    put_u32(d, NFTA_NAT_FLAGS, *flags);
                }
            }
            Low::Masq { flags } => {
                if *flags != 0 {
                    put_u32(d, NFTA_MASQ_FLAGS, *flags);
                }
            }
            Low::Ct { key, dreg } => {
                put_u32(d, NFTA_CT_KEY, *key);
                put_u32(d, NFTA_CT_DREG, *dreg);
            }
            Low::Fib { dreg, result, flags } => {
                put_u32(d, NFTA_FIB_DREG, *dreg);
                put_u32(d, NFTA_FIB_RESULT, *result);
                put_u32(d, NFTA_FIB_FLAGS, *flags);
            }
            Low::Counter => {
                put_attr(d, NFTA_COUNTER_BYTES, &0u64.to_be_bytes());
                put_attr(d, NFTA_COUNTER_PACKETS, &0u64.to_be_bytes());
            }
            Low::Other(_) => {}
        });
    });
}

// ---------------------------------------------------------------------------------------------
// Operations into messages
// ---------------------------------------------------------------------------------------------

/// One message of a transaction. What it does is described only when needed (an error): the
/// text of a rule or an element costs more to build than the message itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Msg {
    /// The whole message (flags and sequence number are stamped when sent).
    pub bytes: Vec<u8>,
    /// Header flags besides `NLM_F_REQUEST` and `NLM_F_ACK`.
    pub flags: u16,
    /// Index of the operation it was made from in its transaction (0 from [`op_messages`]).
    pub op: usize,
    /// For a set element message, which elements of its operation it carries: the index of the
    /// first, and the offset of each one's attribute from the start of the message (to name the
    /// element the kernel blames).
    pub elems: Option<(usize, Vec<u32>)>,
}

impl Msg {
    /// What the message does to which object, `op` being the operation it was made from:
    /// `add rule inet t c ip saddr vmap @m`, `add element inet t m { 10.0.0.1 : goto c }`.
    pub fn what(&self, op: &Op) -> String {
        match (op, &self.elems) {
            (Op::AddElements { table, set, elems } | Op::DeleteElements { table, set, elems }, Some((first, offs))) => {
                let add = matches!(op, Op::AddElements { .. });
                let mine = elems.get(*first..first + offs.len()).unwrap_or_default();
                if mine.len() <= 3 {
                    let shown: Vec<String> = mine.iter().map(|e| elem_text(e, add)).collect();
                    format!("{} element {} {set} {{ {} }}", verb(add), table_text(table), shown.join(", "))
                } else {
                    format!("{} {} elements of {} {set}", verb(add), mine.len(), table_text(table))
                }
            }
            _ => op_text(op),
        }
    }

    /// The element whose attribute holds offset `off` (the last one starting at or before it), as
    /// the text of its own message; `None` for other messages.
    pub fn blamed(&self, op: &Op, off: u32) -> Option<String> {
        let (Op::AddElements { table, set, elems } | Op::DeleteElements { table, set, elems }) = op else { return None };
        let (first, offs) = self.elems.as_ref()?;
        let i = offs.iter().rposition(|&start| start <= off)?;
        let add = matches!(op, Op::AddElements { .. });
        let e = elems.get(first + i)?;
        Some(format!("{} element {} {set} {{ {} }}", verb(add), table_text(table), elem_text(e, add)))
    }
}

fn verb(add: bool) -> &'static str {
    if add {
        "add"
    } else {
        "delete"
    }
}

/// An element as `nft` writes it: with its verdict or data when added, the key alone when
/// deleted.
fn elem_text(e: &Element, add: bool) -> String {
    if add {
        e.text()
    } else {
        e.key_only().text()
    }
}

/// What an operation other than an element list does, naming its object.
fn op_text(op: &Op) -> String {
    match op {
        Op::AddTable(t) => format!("add table {}", table_text(t)),
        Op::CreateTable(t) => format!("create table {}", table_text(t)),
        Op::DeleteTable(t) => format!("delete table {}", table_text(t)),
        Op::AddChain { table, name, .. } => format!("add chain {} {name}", table_text(table)),
        Op::FlushChain { table, name } => format!("flush chain {} {name}", table_text(table)),
        Op::DeleteChain { table, name } => format!("delete chain {} {name}", table_text(table)),
        Op::AddRule { table, chain, rule } => format!("add rule {} {chain} {}", table_text(table), rule.text()),
        Op::AddSet { table, set } => {
            format!("add {} {} {}", if set.is_map() { "map" } else { "set" }, table_text(table), set.name)
        }
        Op::AddElements { table, set, elems } => format!("add {} elements of {} {set}", elems.len(), table_text(table)),
        Op::DeleteElements { table, set, elems } => format!("delete {} elements of {} {set}", elems.len(), table_text(table)),
    }
}

pub fn family_byte(f: TableFamily) -> u8 {
    match f {
        TableFamily::Inet => NFPROTO_INET,
        TableFamily::Ip => NFPROTO_IPV4,
        TableFamily::Ip6 => NFPROTO_IPV6,
    }
}

/// An nf_tables message of type `msg` (flags and sequence number left for the socket).
pub fn message(msg: u16, family: u8, attrs: &[u8]) -> Vec<u8> {
    nfgen_message(nft_type(msg), family, 0, attrs)
}

/// One user-data TLV: type, length, value.
fn udata(kind: u8, value: &[u8]) -> Vec<u8> {
    let mut v = vec![kind, value.len() as u8];
    v.extend_from_slice(value);
    v
}

/// Comment user data (`NFTNL_UDATA_*_COMMENT`): the text as nft stores it, NUL-terminated.
pub fn comment_udata(kind: u8, comment: &str) -> Result<Vec<u8>, CniError> {
    let mut text = comment_text(comment).into_bytes();
    // nft refuses comments over 128 bytes (NUL included); so does this encoder.
    if text.len() >= 128 {
        return Err(unsupported(format!("comment {comment:?} is longer than 127 bytes")));
    }
    text.push(0);
    Ok(udata(kind, &text))
}

/// The user data nft 1.x stores in a set of these key types mapping to `data`, TLVs in this
/// order: the key's byte order; for maps the data's byte order; for a concatenated key, and for
/// concatenated data, the "typeof" marker; for maps the data-interval flag (0).
/// A concatenation's byte order is recorded as invalid (0), a verdict's too.
pub fn set_udata(key: &[DataType], data: &SetData) -> Vec<u8> {
    let order = |types: &[DataType]| if types.len() == 1 { type_byteorder(types[0]) } else { BYTEORDER_INVALID };
    // What nft records as the "typeof" of a concatenation declared by type: an expression
    // marker (13) and no sub-expressions.
    let concat_typeof = || {
        let mut inner = udata(0, &13u32.to_ne_bytes());
        inner.extend(udata(1, &[]));
        inner
    };
    let mut u = Vec::new();
    u.extend(udata(UDATA_SET_KEYBYTEORDER, &order(key).to_ne_bytes()));
    match data {
        SetData::None => {}
        SetData::Verdict => u.extend(udata(UDATA_SET_DATABYTEORDER, &BYTEORDER_INVALID.to_ne_bytes())),
        SetData::Values(d) => u.extend(udata(UDATA_SET_DATABYTEORDER, &order(d).to_ne_bytes())),
    }
    if key.len() > 1 {
        u.extend(udata(UDATA_SET_KEY_TYPEOF, &concat_typeof()));
    }
    if matches!(data, SetData::Values(d) if d.len() > 1) {
        u.extend(udata(UDATA_SET_DATA_TYPEOF, &concat_typeof()));
    }
    if *data != SetData::None {
        u.extend(udata(UDATA_SET_DATA_INTERVAL, &0u32.to_ne_bytes()));
    }
    u
}

/// Type number and length of a set key or map data (concatenations: 6 bits per part, parts
/// padded to 4).
pub fn set_key_type(key: &[DataType]) -> (u32, u32) {
    if key.len() == 1 {
        return (type_id(key[0]), type_len(key[0]) as u32);
    }
    let ty = key.iter().fold(0u32, |t, d| (t << TYPE_BITS) | type_id(*d));
    let len = key.iter().map(|d| type_len(*d).next_multiple_of(4) as u32).sum();
    (ty, len)
}

fn hook_number(h: Hook) -> u32 {
    match h {
        Hook::Prerouting => NF_INET_PRE_ROUTING,
        Hook::Input => NF_INET_LOCAL_IN,
        Hook::Forward => NF_INET_FORWARD,
        Hook::Output => NF_INET_LOCAL_OUT,
        Hook::Postrouting => NF_INET_POST_ROUTING,
    }
}

fn table_text(t: &TableRef) -> String {
    format!("{} {}", t.family.as_str(), t.name)
}

fn check_name(what: &str, name: &str) -> Result<(), CniError> {
    // NFT_NAME_MAXLEN is 256 bytes with the NUL; names never contain NUL.
    if name.is_empty() || name.len() > 255 || name.contains('\0') {
        return Err(unsupported(format!("{what} name {name:?}")));
    }
    Ok(())
}

/// Largest element list put in one message (the list is one attribute: under 64 KiB).
const ELEMS_BYTES_MAX: usize = 32 * 1024;

/// Definitions of sets and maps the encoder of element operations knows, by table and name: the
/// sets a transaction makes, and those looked up in the kernel. The elements of an interval set
/// carry their last key too, which the elements alone do not tell (`10.0.0.1 . 10.0.0.2` is
/// a single key in either kind of set).
#[derive(Debug, Clone, Default)]
pub struct SetCatalog(HashMap<(TableRef, String), SetDef>);

impl SetCatalog {
    /// The sets `ops` make.
    pub fn of_ops(ops: &[Op]) -> SetCatalog {
        let mut c = SetCatalog::default();
        for op in ops {
            if let Op::AddSet { table, set } = op {
                c.insert(table, set.clone());
            }
        }
        c
    }
    pub fn insert(&mut self, table: &TableRef, set: SetDef) {
        self.0.insert((table.clone(), set.name.clone()), set);
    }
    pub fn get(&self, table: &TableRef, name: &str) -> Option<&SetDef> {
        self.0.get(&(table.clone(), name.to_string()))
    }
}

/// The messages of one operation (none for an empty element list); element operations are laid
/// out from their values alone (see [`op_messages_in`]).
pub fn op_messages(op: &Op) -> Result<Vec<Msg>, CniError> {
    op_messages_in(op, &SetCatalog::default())
}

/// The messages of one operation, element operations laid out for their set as `sets` defines
/// it; for a set it does not define, key and data types are those of the values, and the set is
/// taken for an interval set when a key holds a prefix.
pub fn op_messages_in(op: &Op, sets: &SetCatalog) -> Result<Vec<Msg>, CniError> {
    let one = |bytes: Vec<u8>, flags: u16| Ok(vec![Msg { bytes, flags, op: 0, elems: None }]);
    match op {
        Op::AddTable(t) | Op::CreateTable(t) => {
            check_name("table", &t.name)?;
            let mut a = Vec::new();
            put_str(&mut a, NFTA_TABLE_NAME, &t.name);
            put_u32(&mut a, NFTA_TABLE_FLAGS, 0);
            let flags = if matches!(op, Op::CreateTable(_)) { NLM_F_CREATE | NLM_F_EXCL } else { NLM_F_CREATE };
            one(message(NFT_MSG_NEWTABLE, family_byte(t.family), &a), flags)
        }
        Op::DeleteTable(t) => {
            check_name("table", &t.name)?;
            let mut a = Vec::new();
            put_str(&mut a, NFTA_TABLE_NAME, &t.name);
            one(message(NFT_MSG_DELTABLE, family_byte(t.family), &a), 0)
        }
        Op::AddChain { table, name, base, comment } => {
            check_name("chain", name)?;
            let mut a = Vec::new();
            put_str(&mut a, NFTA_CHAIN_TABLE, &table.name);
            put_str(&mut a, NFTA_CHAIN_NAME, name);
            if let Some(BaseChain { kind, hook, priority }) = base {
                put_str(
                    &mut a,
                    NFTA_CHAIN_TYPE,
                    match kind {
                        ChainType::Nat => "nat",
                        ChainType::Filter => "filter",
                    },
                );
                put_u32(&mut a, NFTA_CHAIN_POLICY, NF_ACCEPT as u32);
                put_nested(&mut a, NFTA_CHAIN_HOOK, |h| {
                    put_u32(h, NFTA_HOOK_HOOKNUM, hook_number(*hook));
                    put_attr(h, NFTA_HOOK_PRIORITY, &priority.to_be_bytes());
                });
            }
            if let Some(c) = comment {
                put_attr(&mut a, NFTA_CHAIN_USERDATA, &comment_udata(UDATA_CHAIN_COMMENT, c)?);
            }
            one(message(NFT_MSG_NEWCHAIN, family_byte(table.family), &a), NLM_F_CREATE)
        }
        Op::FlushChain { table, name } => {
            check_name("chain", name)?;
            let mut a = Vec::new();
            put_str(&mut a, NFTA_RULE_TABLE, &table.name);
            put_str(&mut a, NFTA_RULE_CHAIN, name);
            one(message(NFT_MSG_DELRULE, family_byte(table.family), &a), 0)
        }
        Op::DeleteChain { table, name } => {
            check_name("chain", name)?;
            let mut a = Vec::new();
            put_str(&mut a, NFTA_CHAIN_TABLE, &table.name);
            put_str(&mut a, NFTA_CHAIN_NAME, name);
            one(message(NFT_MSG_DELCHAIN, family_byte(table.family), &a), 0)
        }
        Op::AddRule { table, chain, rule } => {
            check_name("chain", chain)?;
            let lows = lower_rule(table.family, rule)?;
            let mut a = Vec::new();
            put_str(&mut a, NFTA_RULE_TABLE, &table.name);
            put_str(&mut a, NFTA_RULE_CHAIN, chain);
            put_nested(&mut a, NFTA_RULE_EXPRESSIONS, |l| {
                for low in &lows {
                    put_expr(l, low);
                }
            });
            if let Some(c) = &rule.comment {
                put_attr(&mut a, NFTA_RULE_USERDATA, &comment_udata(UDATA_RULE_COMMENT, c)?);
            }
            one(message(NFT_MSG_NEWRULE, family_byte(table.family), &a), NLM_F_CREATE | NLM_F_APPEND)
        }
        Op::AddSet { table, set } => set_message(table, set),
        Op::AddElements { table, set, elems } => elem_messages(table, set, sets.get(table, set), elems, true),
        Op::DeleteElements { table, set, elems } => elem_messages(table, set, sets.get(table, set), elems, false),
    }
}

/// A set id unique within any transaction of this process.
fn next_set_id() -> u32 {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(1);
    NEXT.fetch_add(1, Ordering::Relaxed).max(1)
}

fn set_message(table: &TableRef, set: &SetDef) -> Result<Vec<Msg>, CniError> {
    check_name("set", &set.name)?;
    let what = || format!("{} {}", if set.is_map() { "map" } else { "set" }, set.name);
    if set.key.is_empty() || set.key.len() > 5 {
        return Err(unsupported(format!("{} with a key of {} parts", what(), set.key.len())));
    }
    // nft writes interval sets of single values as segment trees (start and end elements); only
    // concatenations (one range per field, pipapo) are encoded here.
    if set.interval && set.key.len() == 1 {
        return Err(unsupported(format!("{}: interval sets with a key of one field", what())));
    }
    let (ty, len) = set_key_type(&set.key);
    let mut flags = 0;
    if set.is_map() {
        flags |= NFT_SET_MAP;
    }
    if set.interval {
        flags |= NFT_SET_INTERVAL | NFT_SET_CONCAT;
    }
    let mut a = Vec::new();
    put_str(&mut a, NFTA_SET_TABLE, &table.name);
    put_str(&mut a, NFTA_SET_NAME, &set.name);
    put_u32(&mut a, NFTA_SET_FLAGS, flags);
    put_u32(&mut a, NFTA_SET_KEY_TYPE, ty);
    put_u32(&mut a, NFTA_SET_KEY_LEN, len);
    match &set.data {
        SetData::None => {}
        SetData::Verdict => {
            put_u32(&mut a, NFTA_SET_DATA_TYPE, NFT_DATA_VERDICT);
            put_u32(&mut a, NFTA_SET_DATA_LEN, 0);
        }
        SetData::Values(d) => {
            if d.is_empty() || d.len() > 5 {
                return Err(unsupported(format!("{} with data of {} parts", what(), d.len())));
            }
            let (dty, dlen) = set_key_type(d);
            put_u32(&mut a, NFTA_SET_DATA_TYPE, dty);
            put_u32(&mut a, NFTA_SET_DATA_LEN, dlen);
        }
    }
    // Required by the kernel: a transaction-local id other messages could refer to the new set
    // by (ours refer to sets by name).
    put_u32(&mut a, NFTA_SET_ID, next_set_id());
    if set.interval {
        // the length of each field, unpadded: the kernel lays out its pipapo fields by them
        put_nested(&mut a, NFTA_SET_DESC, |d| {
            put_nested(d, NFTA_SET_DESC_CONCAT, |c| {
                for t in &set.key {
                    put_nested(c, NFTA_LIST_ELEM, |f| put_u32(f, NFTA_SET_FIELD_LEN, type_len(*t) as u32));
                }
            })
        });
    }
    put_attr(&mut a, NFTA_SET_USERDATA, &set_udata(&set.key, &set.data));
    Ok(vec![Msg { bytes: message(NFT_MSG_NEWSET, family_byte(table.family), &a), flags: NLM_F_CREATE, op: 0, elems: None }])
}

/// What the elements of one operation are laid out for: their set's definition, or types
/// guessed from each element's values.
struct ElemShape<'a> {
    set: &'a str,
    def: Option<&'a SetDef>,
    /// Without a definition: whether the set is taken for an interval set.
    interval: bool,
}

/// One element attribute: key (and last key in an interval set), and when adding, the verdict or
/// data.
fn elem_attr(e: &Element, add: bool, shape: &ElemShape) -> Result<Vec<u8>, CniError> {
    let bad = |why: &str| unsupported(format!("element {} of {}: {why}", elem_text(e, add), shape.set));
    let key_types = match shape.def {
        Some(d) => d.key.clone(),
        None => types_of(&e.key)?,
    };
    let interval = shape.def.map_or(shape.interval, |d| d.interval);
    let (key, key_end) = if interval {
        let (first, last) = key_range_bytes(&e.key, &key_types)?;
        (first, Some(last))
    } else {
        (key_bytes(&e.key, &key_types)?, None)
    };
    let data = if !add {
        None
    } else {
        match (shape.def.map(|d| &d.data), &e.verdict, e.data.is_empty()) {
            (Some(SetData::None), None, true) => None,
            (Some(SetData::None), ..) => return Err(bad("data for a set")),
            (Some(SetData::Verdict) | None, Some(v), true) => Some(ImmData::Verdict(v.clone())),
            (Some(SetData::Verdict), ..) => return Err(bad("a verdict map's element needs a verdict")),
            (Some(SetData::Values(types)), None, false) => Some(ImmData::Value(key_bytes(&e.data, types)?)),
            (Some(SetData::Values(_)), ..) => return Err(bad("a data map's element needs data and no verdict")),
            (None, None, false) => Some(ImmData::Value(key_bytes(&e.data, &types_of(&e.data)?)?)),
            (None, None, true) => None,
            (None, Some(_), false) => return Err(bad("both a verdict and data")),
        }
    };
    let mut out = Vec::new();
    put_nested(&mut out, NFTA_LIST_ELEM, |el| {
        put_value(el, NFTA_SET_ELEM_KEY, &key);
        if let Some(end) = &key_end {
            put_value(el, NFTA_SET_ELEM_KEY_END, end);
        }
        match &data {
            Some(ImmData::Verdict(v)) => put_verdict(el, NFTA_SET_ELEM_DATA, v),
            Some(ImmData::Value(d)) => put_value(el, NFTA_SET_ELEM_DATA, d),
            None => {}
        }
    });
    Ok(out)
}

fn elem_messages(table: &TableRef, set: &str, def: Option<&SetDef>, elems: &[Element], add: bool) -> Result<Vec<Msg>, CniError> {
    check_name("set", set)?;
    let shape = ElemShape { set, def, interval: elems.iter().any(|e| e.key.iter().any(|v| matches!(v, Value::Prefix(_)))) };
    let mut out = Vec::new();
    let mut done = 0;
    while done < elems.len() {
        let mut head = Vec::new();
        put_str(&mut head, NFTA_SET_ELEM_LIST_TABLE, &table.name);
        put_str(&mut head, NFTA_SET_ELEM_LIST_SET, set);
        // offsets: message header, nfgenmsg, the attributes before the list, the list header
        let base = HEADER_LEN + NFGENMSG_LEN + head.len() + 4;
        let mut list = Vec::new();
        let mut offs = Vec::new();
        for e in &elems[done..] {
            let attr = elem_attr(e, add, &shape)?;
            if !offs.is_empty() && list.len() + attr.len() > ELEMS_BYTES_MAX {
                break;
            }
            offs.push((base + list.len()) as u32);
            list.extend(attr);
        }
        let first = done;
        done += offs.len();
        let mut a = head;
        put_nested(&mut a, NFTA_SET_ELEM_LIST_ELEMENTS, |l| l.extend_from_slice(&list));
        let (msg, flags) = if add { (NFT_MSG_NEWSETELEM, NLM_F_CREATE) } else { (NFT_MSG_DELSETELEM, 0) };
        out.push(Msg { bytes: message(msg, family_byte(table.family), &a), flags, op: 0, elems: Some((first, offs)) });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nft::plan;

    fn lows(table: TableFamily, exprs: Vec<Expr>) -> Vec<Low> {
        lower_rule(table, &Rule::new(exprs)).unwrap()
    }

    fn meta(key: u32, dreg: u32) -> Low {
        Low::Meta { key, dreg }
    }
    fn cmp(op: u32, data: &[u8]) -> Low {
        Low::Cmp { sreg: 1, op, data: data.to_vec() }
    }
    fn nf4() -> [Low; 2] {
        [meta(NFT_META_NFPROTO, 1), cmp(NFT_CMP_EQ, &[2])]
    }

    #[test]
    fn registers_follow_nft() {
        assert_eq!((0..6).map(reg_of_slot).collect::<Vec<_>>(), vec![1, 9, 10, 11, 2, 13]);
        for slot in 0..16 {
            assert_eq!(slot_of_reg(reg_of_slot(slot)), Some(slot));
        }
    }

    #[test]
    fn prefixes() {
        let d4 = |v: &str| Expr::Cmp { field: Field::Daddr(Family::V4), negate: false, value: Value::Prefix(v.parse().unwrap()) };
        let pay = |off, len| Low::Payload { base: NFT_PAYLOAD_NETWORK_HEADER, offset: off, len, dreg: 1 };
        // byte-aligned: shorter load
        let mut want = nf4().to_vec();
        want.extend([pay(16, 3), cmp(0, &[10, 1, 0])]);
        assert_eq!(lows(TableFamily::Inet, vec![d4("10.1.0.0/24")]), want);
        // not aligned: full load, mask, compare
        let mut want = nf4().to_vec();
        want.extend([
            pay(16, 4),
            Low::Bitwise { sreg: 1, dreg: 1, mask: vec![0xf0, 0, 0, 0], xor: vec![0; 4] },
            cmp(0, &[224, 0, 0, 0]),
        ]);
        assert_eq!(lows(TableFamily::Inet, vec![d4("224.0.0.0/4")]), want);
        // /0 is masked too, like nft
        assert!(matches!(lows(TableFamily::Inet, vec![d4("0.0.0.0/0")])[3], Low::Bitwise { .. }));
        // host: full compare; in an ip table no dependency
        assert_eq!(lows(TableFamily::Ip, vec![d4("10.1.0.5/32")]), vec![pay(16, 4), cmp(0, &[10, 1, 0, 5])]);
        // v6 /60: mask ff.. f0
        let l = lows(TableFamily::Inet, vec![Expr::Cmp { field: Field::Daddr(Family::V6), negate: true, value: Value::Prefix("fd00::/60".parse().unwrap()) }]);
        let Low::Bitwise { mask, .. } = &l[3] else { panic!("{l:?}") };
        assert_eq!(mask[..8], [0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xf0]);
        assert_eq!(l[4], Low::Cmp { sreg: 1, op: NFT_CMP_NEQ, data: [0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0].to_vec() });
    }

    #[test]
    fn dependencies_once_per_rule() {
        // ip daddr 192.0.2.1 tcp dport 8443 dnat ip to 10.1.0.5:443
        let r = &plan::legacy::hostport_dnat_rules(&{
            let mut s = crate::PortMapSpec::new(
                crate::AttachmentKey::new("n", "c", "eth0"),
                vec![crate::PortMapping { host_port: 8443, container_port: 443, protocol: Protocol::Tcp, host_ip: Some("192.0.2.1".parse().unwrap()) }],
            );
            s.container_v4 = Some("10.1.0.5/24".parse().unwrap());
            s
        })[0];
        let l = lower_rule(TableFamily::Inet, r).unwrap();
        let names: Vec<&str> = l.iter().map(Low::name).collect();
        assert_eq!(names, ["meta", "cmp", "payload", "cmp", "meta", "cmp", "payload", "cmp", "immediate", "immediate", "nat"]);
        assert_eq!(l[5], cmp(0, &[6]));
        assert_eq!(l[7], cmp(0, &8443u16.to_be_bytes()));
        assert_eq!(l[9], Low::Immediate { dreg: 2, data: ImmData::Value(vec![0x01, 0xbb]) });
        assert_eq!(l[10], Low::Nat { kind: NFT_NAT_DNAT, family: 2, addr: Some(1), proto: Some(2), flags: NF_NAT_RANGE_PROTO_SPECIFIED });
    }

    #[test]
    fn concatenated_vmaps() {
        let v = |fam| Expr::Vmap { key: vec![Field::Daddr(fam), Field::L4proto, Field::ThDport], map: "m".into() };
        let l = lows(TableFamily::Inet, vec![v(Family::V6)]);
        let regs: Vec<u32> = l
            .iter()
            .filter_map(|x| match x {
                Low::Payload { dreg, .. } | Low::Meta { dreg, .. } => Some(*dreg),
                _ => None,
            })
            .collect();
        // nfproto dependency in reg 1, then ip6 daddr (16 bytes) in reg 1, l4proto in reg 2, th dport in reg 13
        assert_eq!(regs, vec![1, 1, 2, 13]);
        assert_eq!(l.last(), Some(&Low::Lookup { set: "m".into(), sreg: 1, dreg: Some(0), flags: 0 }));
        let l = lows(TableFamily::Inet, vec![v(Family::V4)]);
        assert_eq!(l[2..5].iter().map(|x| match x { Low::Payload { dreg, .. } | Low::Meta { dreg, .. } => *dreg, _ => 99 }).collect::<Vec<_>>(), vec![1, 9, 10]);
        let neg = lows(TableFamily::Inet, vec![Expr::Lookup { key: vec![Field::Oifname], set: "s".into(), negate: true }]);
        assert_eq!(neg, vec![meta(NFT_META_OIFNAME, 1), Low::Lookup { set: "s".into(), sreg: 1, dreg: None, flags: 1 }]);
    }

    #[test]
    fn set_types_and_udata() {
        use DataType::*;
        assert_eq!(set_key_type(&[Ipv4Addr, InetProto, InetService]), (29453, 12));
        assert_eq!(set_key_type(&[InetProto, InetService]), (781, 8));
        assert_eq!(set_key_type(&[Ipv6Addr, InetProto, InetService]), (33549, 24));
        assert_eq!(set_key_type(&[Ifname]), (41, 16));
        // Bytes captured from `nft --debug=mnl` (nft 1.0.6) for the same declarations.
        assert_eq!(set_udata(&[Ipv4Addr], &SetData::Verdict), [0, 4, 2, 0, 0, 0, 1, 4, 0, 0, 0, 0, 6, 4, 0, 0, 0, 0]);
        assert_eq!(set_udata(&[Ifname], &SetData::None), [0, 4, 1, 0, 0, 0]);
        assert_eq!(
            set_udata(&[Ipv4Addr, InetProto, InetService], &SetData::Verdict),
            [0, 4, 0, 0, 0, 0, 1, 4, 0, 0, 0, 0, 3, 8, 0, 4, 13, 0, 0, 0, 1, 0, 6, 4, 0, 0, 0, 0]
        );
        assert_eq!(comment_udata(0, "net: net1 id: c1 if: eth0").unwrap()[..2], [0, 26]);
        assert!(comment_udata(0, &"x".repeat(128)).is_err());
    }

    /// A message as it goes on the wire, checked byte by byte against the layout `nft --debug=mnl`
    /// shows for `add rule inet cnirs_masquerade postrouting ip saddr vmap @masq4`.
    #[test]
    fn rule_message_bytes() {
        let t = TableRef::inet("cnirs_masquerade");
        let op = Op::AddRule {
            table: t,
            chain: "postrouting".into(),
            rule: Rule::new(vec![Expr::Vmap { key: vec![Field::Saddr(Family::V4)], map: "masq4".into() }]),
        };
        let msgs = op_messages(&op).unwrap();
        assert_eq!(msgs.len(), 1);
        let m = &msgs[0];
        assert_eq!(m.flags, NLM_F_CREATE | NLM_F_APPEND);
        assert_eq!(m.what(&op), "add rule inet cnirs_masquerade postrouting ip saddr vmap @masq4");
        let ne16 = |v: u16| v.to_ne_bytes().to_vec();
        let be32 = |v: u32| v.to_be_bytes().to_vec();
        let attr = |kind: u16, val: &[u8]| {
            let mut v = ne16(4 + val.len() as u16);
            v.extend(ne16(kind));
            v.extend_from_slice(val);
            v.resize(v.len().next_multiple_of(4), 0);
            v
        };
        let nest = |kind: u16, parts: Vec<Vec<u8>>| attr(kind | 0x8000, &parts.concat());
        let expr = |name: &str, data: Vec<Vec<u8>>| nest(1, vec![attr(1, format!("{name}\0").as_bytes()), nest(2, data)]);
        let exprs = nest(
            NFTA_RULE_EXPRESSIONS,
            vec![
                expr("meta", vec![attr(NFTA_META_KEY, &be32(15)), attr(NFTA_META_DREG, &be32(1))]),
                expr("cmp", vec![attr(1, &be32(1)), attr(2, &be32(0)), nest(3, vec![attr(1, &[2])])]),
                expr("payload", vec![attr(1, &be32(1)), attr(2, &be32(1)), attr(3, &be32(12)), attr(4, &be32(4))]),
                expr("lookup", vec![attr(2, &be32(1)), attr(3, &be32(0)), attr(1, b"masq4\0")]),
            ],
        );
        let attrs = [attr(1, b"cnirs_masquerade\0"), attr(2, b"postrouting\0"), exprs].concat();
        let mut want = (20 + attrs.len() as u32).to_ne_bytes().to_vec();
        want.extend(ne16(0x0a06)); // NFT_MSG_NEWRULE
        want.extend([0u8; 10]); // flags, seq, port: stamped when sent
        want.extend([NFPROTO_INET, 0, 0, 0]);
        want.extend(attrs);
        assert_eq!(m.bytes, want);
        // nft's debug output shows 252 bytes for this rule: the same plus an 8-byte
        // NFTA_LOOKUP_SET_ID (a transaction-local set reference, not stored by the kernel)
        assert_eq!(m.bytes.len(), 252 - 8);
    }

    #[test]
    fn element_message_bytes_and_parts() {
        let t = TableRef::inet("cnirs_masquerade");
        let e = Element::verdict(vec![Value::Addr("10.1.0.5".parse().unwrap())], Verdict::Goto("m-8e48f37d5de6-294f9e4a4bb08eb2".into()));
        let op = Op::AddElements { table: t.clone(), set: "masq4".into(), elems: vec![e.clone()] };
        let msgs = op_messages(&op).unwrap();
        let m = &msgs[0];
        // nft --debug=mnl: 136 bytes for this element message (nft adds an 8-byte NFTA_SET_ELEM_LIST_SET_ID)
        assert_eq!(m.bytes.len(), 128);
        assert_eq!(m.what(&op), "add element inet cnirs_masquerade masq4 { 10.1.0.5 : goto m-8e48f37d5de6-294f9e4a4bb08eb2 }");
        let off = m.elems.as_ref().unwrap().1[0];
        assert_eq!(m.blamed(&op, off + 10), Some(m.what(&op)));
        assert_eq!(m.blamed(&op, off - 1), None, "an offset before the first element names none");
        // the element attribute sits at `off`: NFTA_LIST_ELEM with the nested flag
        let at = off as usize;
        assert_eq!(u16::from_ne_bytes([m.bytes[at + 2], m.bytes[at + 3]]), NFTA_LIST_ELEM | 0x8000);
        let tail = &m.bytes[at..];
        assert!(tail.windows(4).any(|w| w == [10, 1, 0, 5]));
        assert!(tail.windows(4).any(|w| w == NFT_GOTO.to_be_bytes()));
        // deletes carry keys only
        let del = Op::DeleteElements { table: t.clone(), set: "masq4".into(), elems: vec![e] };
        let d = op_messages(&del).unwrap();
        assert!(!d[0].bytes.windows(4).any(|w| w == NFT_GOTO.to_be_bytes()));
        assert_eq!(d[0].flags, 0);
        assert_eq!(d[0].what(&del), "delete element inet cnirs_masquerade masq4 { 10.1.0.5 }");
        // empty lists: no message; long lists: split under 64 KiB per message
        assert!(op_messages(&Op::AddElements { table: t.clone(), set: "s".into(), elems: vec![] }).unwrap().is_empty());
        let many: Vec<Element> =
            (0..3000u32).map(|i| Element::verdict(vec![Value::Addr(std::net::Ipv4Addr::from(0x0a00_0000 + i).into())], Verdict::Goto("c".repeat(40)))).collect();
        let op = Op::AddElements { table: t, set: "masq4".into(), elems: many };
        let msgs = op_messages(&op).unwrap();
        assert!(msgs.len() > 1);
        assert_eq!(msgs.iter().map(|m| m.elems.as_ref().unwrap().1.len()).sum::<usize>(), 3000);
        assert!(msgs.iter().all(|m| m.bytes.len() < 60 * 1024));
        // each message knows its own slice of the list
        let second = &msgs[1];
        let (first, offs) = second.elems.as_ref().unwrap();
        assert_eq!(*first, msgs[0].elems.as_ref().unwrap().1.len());
        assert_eq!(second.what(&op), format!("add {} elements of inet cnirs_masquerade masq4", offs.len()));
        let ip = std::net::Ipv4Addr::from(0x0a00_0000 + *first as u32 + 1);
        assert!(second.blamed(&op, offs[1]).unwrap().contains(&format!("{{ {ip} : goto ")));
    }

    #[test]
    fn chain_and_set_messages() {
        let t = TableRef::inet("t");
        let base = op_messages(&Op::AddChain {
            table: t.clone(),
            name: "prerouting".into(),
            base: Some(BaseChain { kind: ChainType::Nat, hook: Hook::Prerouting, priority: -100 }),
            comment: None,
        })
        .unwrap();
        let b = &base[0].bytes;
        assert!(b.windows(4).any(|w| w == (-100i32).to_be_bytes()), "priority in network order");
        assert!(b.windows(4).any(|w| w == b"nat\0"));
        let reg = op_messages(&Op::AddChain { table: t.clone(), name: "c".into(), base: None, comment: Some("a \"b\"".into()) }).unwrap();
        // comment user data: type 0, length 4, "a b" + NUL
        assert!(reg[0].bytes.windows(6).any(|w| w == [0, 4, b'a', b' ', b'b', 0]));
        let op = Op::AddSet { table: t, set: SetDef::set("iso", vec![DataType::Ifname]) };
        let set = op_messages(&op).unwrap();
        assert_eq!(set[0].what(&op), "add set inet t iso");
        assert!(!set[0].bytes.windows(4).any(|w| w == NFT_DATA_VERDICT.to_be_bytes()));
    }

    #[test]
    fn bad_values_are_refused() {
        let r = Rule::new(vec![Expr::Cmp { field: Field::Daddr(Family::V4), negate: false, value: Value::Addr("fd00::1".parse().unwrap()) }]);
        assert!(lower_rule(TableFamily::Inet, &r).is_err());
        let r = Rule::new(vec![Expr::Cmp { field: Field::Saddr(Family::V6), negate: false, value: Value::Port(1) }]);
        assert!(lower_rule(TableFamily::Inet, &r).is_err());
        assert!(lower_rule(TableFamily::Ip, &Rule::new(vec![Expr::Dnat { addr: "fd00::1".parse().unwrap(), port: 1 }])).is_err());
        assert!(ifname_bytes("0123456789abcdef").is_err());
        assert_eq!(ifname_bytes("br*").unwrap()[..4], *b"br*\0");
    }

    // ---- data maps, concatenated interval sets, dnat from a map ----

    fn hex(b: &[u8]) -> String {
        b.iter().map(|x| format!("{x:02x}")).collect()
    }

    /// The attributes of the one message of `op` as (type, value in hex), without
    /// `NFTA_SET_ID` (a number local to the transaction).
    fn attrs_hex(op: &Op, msg: u16) -> Vec<(u16, String)> {
        let msgs = op_messages(op).unwrap();
        assert_eq!(msgs.len(), 1);
        let (_, a) = super::super::decode::body(&msgs[0].bytes, msg).unwrap().unwrap();
        a.into_iter().filter(|(k, _)| *k != NFTA_SET_ID).map(|(k, v)| (k, hex(v))).collect()
    }

    /// The elements of the one message of `op`, each as its attributes (data attributes
    /// unwrapped to their `NFTA_DATA_VALUE`) in hex.
    fn elems_hex(msg: &Msg, kind: u16) -> Vec<Vec<(u16, String)>> {
        use cni_common::netlink::socket::parse_attrs;
        let (_, a) = super::super::decode::body(&msg.bytes, kind).unwrap().unwrap();
        let list = a.iter().find(|(k, _)| *k == NFTA_SET_ELEM_LIST_ELEMENTS).unwrap().1;
        parse_attrs(list)
            .unwrap()
            .into_iter()
            .map(|(_, e)| {
                parse_attrs(e)
                    .unwrap()
                    .into_iter()
                    .map(|(k, v)| {
                        let inner = parse_attrs(v).unwrap();
                        match inner.iter().find(|(ik, _)| *ik == NFTA_DATA_VALUE) {
                            Some((_, d)) => (k, hex(d)),
                            None => (k, hex(v)),
                        }
                    })
                    .collect()
            })
            .collect()
    }

    fn v(s: &str) -> Value {
        if s.contains('/') {
            Value::Prefix(s.parse().unwrap())
        } else {
            Value::Addr(s.parse().unwrap())
        }
    }

    fn owned(pairs: &[(u16, &str)]) -> Vec<(u16, String)> {
        pairs.iter().map(|(k, v)| (*k, v.to_string())).collect()
    }

    /// Set messages as `nft --debug=mnl -f` (nft 1.0.6) shows them for the same declarations.
    #[test]
    fn data_map_and_interval_set_messages_follow_nft() {
        use DataType::*;
        let t = TableRef::inet("t");
        let masq4 = Op::AddSet { table: t.clone(), set: SetDef::map("masq4", vec![Ipv4Addr], vec![Mark, Mark, Mark]) };
        assert_eq!(
            attrs_hex(&masq4, NFT_MSG_NEWSET),
            owned(&[
                (1, "7400"),
                (2, "6d6173713400"),
                (3, "00000008"),
                (4, "00000007"),
                (5, "00000004"),
                (6, "000134d3"),
                (7, "0000000c"),
                (13, "000402000000010400000000040800040d0000000100060400000000"),
            ])
        );
        let dnat6h = Op::AddSet {
            table: t.clone(),
            set: SetDef::map("dnat6h", vec![Ipv6Addr, InetProto, InetService], vec![Ipv6Addr, InetService]),
        };
        assert_eq!(
            attrs_hex(&dnat6h, NFT_MSG_NEWSET),
            owned(&[
                (1, "7400"),
                (2, "646e6174366800"),
                (3, "00000008"),
                (4, "0000830d"),
                (5, "00000018"),
                (6, "0000020d"),
                (7, "00000014"),
                (13, "000400000000010400000000030800040d0000000100040800040d0000000100060400000000"),
            ])
        );
        // flags interval on a concatenation: INTERVAL | CONCAT, the fields' lengths, no data
        let exempt4 = Op::AddSet { table: t.clone(), set: SetDef::interval_set("exempt4", vec![Ipv4Addr, Ipv4Addr]) };
        // NFTA_SET_DESC's content: CONCAT { ELEM { FIELD_LEN }, ... }, every nest flagged
        let desc = |lens: &[u32]| {
            let mut d = Vec::new();
            put_nested(&mut d, NFTA_SET_DESC_CONCAT, |c| {
                for len in lens {
                    put_nested(c, NFTA_LIST_ELEM, |f| put_u32(f, NFTA_SET_FIELD_LEN, *len));
                }
            });
            hex(&d)
        };
        assert_eq!(
            attrs_hex(&exempt4, NFT_MSG_NEWSET),
            owned(&[
                (1, "7400"),
                (2, "6578656d70743400"),
                (3, "00000084"),
                (4, "000001c7"),
                (5, "00000008"),
                (9, &desc(&[4, 4])),
                (13, "000400000000030800040d0000000100"),
            ])
        );
        // fields are described at their own length (inet_proto 1, inet_service 2)
        let g = Op::AddSet { table: t.clone(), set: SetDef::interval_set("g", vec![Ipv4Addr, InetProto, InetService]) };
        let described: Vec<String> = attrs_hex(&g, NFT_MSG_NEWSET).into_iter().filter(|(k, _)| *k == NFTA_SET_DESC).map(|(_, v)| v).collect();
        assert_eq!(described, [desc(&[4, 1, 2])]);
        // single data: its own byte order (marks host, addresses and ports network)
        assert_eq!(set_udata(&[Ipv4Addr], &SetData::Values(vec![Mark])), [0, 4, 2, 0, 0, 0, 1, 4, 1, 0, 0, 0, 6, 4, 0, 0, 0, 0]);
        assert_eq!(set_udata(&[Ipv4Addr], &SetData::Values(vec![InetService])), [0, 4, 2, 0, 0, 0, 1, 4, 2, 0, 0, 0, 6, 4, 0, 0, 0, 0]);
        assert_eq!(set_key_type(&[Mark]), (19, 4));
        // the texts name maps and sets as such
        assert_eq!(op_messages(&masq4).unwrap()[0].what(&masq4), "add map inet t masq4");
        assert_eq!(op_messages(&exempt4).unwrap()[0].what(&exempt4), "add set inet t exempt4");
        // interval sets of one field are segment trees in nft: not encoded
        let one = Op::AddSet { table: t, set: SetDef::interval_set("x", vec![Ipv4Addr]) };
        assert!(op_messages(&one).unwrap_err().to_string().contains("interval sets with a key of one field"));
    }

    /// Element messages as `nft --debug=mnl -f` shows them: data in the data attribute (marks in
    /// host order), interval elements with their last key, in deletes too.
    #[test]
    fn data_map_and_interval_elements_follow_nft() {
        use DataType::*;
        let t = TableRef::inet("t");
        let exempt4 = SetDef::interval_set("exempt4", vec![Ipv4Addr, Ipv4Addr]);
        let masq4 = SetDef::map("masq4", vec![Ipv4Addr], vec![Mark, Mark, Mark]);
        let dnat6h = SetDef::map("dnat6h", vec![Ipv6Addr, InetProto, InetService], vec![Ipv6Addr, InetService]);
        let ops = vec![
            Op::AddSet { table: t.clone(), set: exempt4 },
            Op::AddSet { table: t.clone(), set: masq4 },
            Op::AddSet { table: t.clone(), set: dnat6h },
        ];
        let sets = SetCatalog::of_ops(&ops);
        let one = |op: &Op, kind| {
            let msgs = op_messages_in(op, &sets).unwrap();
            assert_eq!(msgs.len(), 1);
            elems_hex(&msgs[0], kind)
        };
        let iv = vec![
            Element::key(vec![v("10.88.0.5"), v("10.88.0.0/24")]),
            Element::key(vec![v("10.88.0.5"), v("127.0.0.1")]),
            Element::key(vec![v("10.88.0.6"), v("0.0.0.0/0")]),
            Element::key(vec![v("10.88.0.7"), v("10.88.0.7/32")]),
        ];
        let want_iv = [
            ("0a5800050a580000", "0a5800050a5800ff"),
            ("0a5800057f000001", "0a5800057f000001"),
            ("0a58000600000000", "0a580006ffffffff"),
            ("0a5800070a580007", "0a5800070a580007"),
        ]
        .map(|(k, e)| owned(&[(NFTA_SET_ELEM_KEY, k), (NFTA_SET_ELEM_KEY_END, e)]))
        .to_vec();
        let add = Op::AddElements { table: t.clone(), set: "exempt4".into(), elems: iv.clone() };
        assert_eq!(one(&add, NFT_MSG_NEWSETELEM), want_iv);
        // a delete names the same range (nft sends both keys)
        let del = Op::DeleteElements { table: t.clone(), set: "exempt4".into(), elems: iv.clone() };
        assert_eq!(one(&del, NFT_MSG_DELSETELEM), want_iv);
        // without the set's definition, a prefix still tells an interval set
        assert_eq!(elems_hex(&op_messages(&del).unwrap()[0], NFT_MSG_DELSETELEM), want_iv);
        // a prefix with host bits is its network
        let host_bits = Op::AddElements { table: t.clone(), set: "exempt4".into(), elems: vec![Element::key(vec![v("10.88.0.5"), v("10.88.0.9/24")])] };
        assert_eq!(one(&host_bits, NFT_MSG_NEWSETELEM)[0], want_iv[0]);
        let marks = Element::data(vec![v("10.88.0.5")], vec![Value::Mark(0x0123_4567), Value::Mark(0x89ab_cdef), Value::Mark(1)]);
        let add = Op::AddElements { table: t.clone(), set: "masq4".into(), elems: vec![marks.clone()] };
        let mark_bytes: String = [0x0123_4567u32, 0x89ab_cdef, 1].iter().map(|m| hex(&m.to_ne_bytes())).collect();
        assert_eq!(one(&add, NFT_MSG_NEWSETELEM), vec![owned(&[(NFTA_SET_ELEM_KEY, "0a580005"), (NFTA_SET_ELEM_DATA, &mark_bytes)])]);
        // the same without the definition: types from the values
        assert_eq!(elems_hex(&op_messages(&add).unwrap()[0], NFT_MSG_NEWSETELEM), one(&add, NFT_MSG_NEWSETELEM));
        // deletes name the key only
        let del = Op::DeleteElements { table: t.clone(), set: "masq4".into(), elems: vec![marks] };
        let msgs = op_messages_in(&del, &sets).unwrap();
        assert_eq!(elems_hex(&msgs[0], NFT_MSG_DELSETELEM), vec![owned(&[(NFTA_SET_ELEM_KEY, "0a580005")])]);
        assert_eq!(msgs[0].what(&del), "delete element inet t masq4 { 10.88.0.5 }");
        let d6 = Element::data(vec![v("2001:db8::1"), Value::Proto(Protocol::Udp), Value::Port(53)], vec![v("fd88::5"), Value::Port(5353)]);
        let add = Op::AddElements { table: t.clone(), set: "dnat6h".into(), elems: vec![d6.clone()] };
        assert_eq!(
            one(&add, NFT_MSG_NEWSETELEM),
            vec![owned(&[
                (NFTA_SET_ELEM_KEY, "20010db80000000000000000000000011100000000350000"),
                (NFTA_SET_ELEM_DATA, "fd88000000000000000000000000000514e90000"),
            ])]
        );
        assert_eq!(op_messages_in(&add, &sets).unwrap()[0].what(&add), "add element inet t dnat6h { 2001:db8::1 . udp . 53 : fd88::5 . 5353 }");
        // elements that do not fit their set are refused
        let bad = |set: &str, e: Element| op_messages_in(&Op::AddElements { table: t.clone(), set: set.into(), elems: vec![e] }, &sets).unwrap_err().to_string();
        assert!(bad("masq4", Element::key(vec![v("10.88.0.5")])).contains("needs data"));
        assert!(bad("masq4", Element::data(vec![v("10.88.0.5")], vec![Value::Mark(1)])).contains("key of 1 parts for a type of 3"));
        assert!(bad("exempt4", Element::verdict(vec![v("10.0.0.1"), v("10.0.0.2")], Verdict::Accept)).contains("data for a set"));
        assert!(bad("dnat6h", Element::data(vec![v("2001:db8::1/64"), Value::Proto(Protocol::Udp), Value::Port(53)], vec![v("fd88::5"), Value::Port(1)])).contains("not of type"));
    }

    #[test]
    fn dnat_from_a_map_follows_nft() {
        let dm = |family, key: Vec<Field>, map: &str| Expr::DnatMap { family, key, map: map.into() };
        // nft --debug=netlink: [ lookup reg 1 set dnat4h dreg 1 ] [ nat dnat ip addr_min reg 1 proto_min reg 9 ]
        let l = lows(TableFamily::Inet, vec![dm(Family::V4, vec![Field::Daddr(Family::V4), Field::L4proto, Field::ThDport], "dnat4h")]);
        let mut want = nf4().to_vec();
        want.extend([
            Low::Payload { base: NFT_PAYLOAD_NETWORK_HEADER, offset: 16, len: 4, dreg: 1 },
            meta(NFT_META_L4PROTO, 9),
            Low::Payload { base: NFT_PAYLOAD_TRANSPORT_HEADER, offset: 2, len: 2, dreg: 10 },
            Low::Lookup { set: "dnat4h".into(), sreg: 1, dreg: Some(1), flags: 0 },
            Low::Nat { kind: NFT_NAT_DNAT, family: 2, addr: Some(1), proto: Some(9), flags: 0 },
        ]);
        assert_eq!(l, want);
        // [ meta load l4proto => reg 1 ] [ payload ... => reg 9 ] [ lookup reg 1 set dnat6 dreg 1 ] [ nat dnat ip6 addr_min reg 1 proto_min reg 2 ]
        let l = lows(TableFamily::Inet, vec![Expr::Nfproto(Family::V6), dm(Family::V6, vec![Field::L4proto, Field::ThDport], "dnat6")]);
        assert_eq!(
            l[2..],
            [
                meta(NFT_META_L4PROTO, 1),
                Low::Payload { base: NFT_PAYLOAD_TRANSPORT_HEADER, offset: 2, len: 2, dreg: 9 },
                Low::Lookup { set: "dnat6".into(), sreg: 1, dreg: Some(1), flags: 0 },
                Low::Nat { kind: NFT_NAT_DNAT, family: 10, addr: Some(1), proto: Some(2), flags: 0 },
            ]
        );
        // the nat expression carries type, family and the two registers, no flags (as nft sends it)
        let op = Op::AddRule { table: TableRef::inet("t"), chain: "c".into(), rule: Rule::new(vec![dm(Family::V6, vec![Field::L4proto, Field::ThDport], "dnat6")]) };
        let b = &op_messages(&op).unwrap()[0].bytes;
        let nat = b.windows(4).position(|w| w == b"nat\0").unwrap();
        let mut data = Vec::new();
        put_u32(&mut data, NFTA_NAT_TYPE, NFT_NAT_DNAT);
        put_u32(&mut data, NFTA_NAT_FAMILY, 10);
        put_u32(&mut data, NFTA_NAT_REG_ADDR_MIN, 1);
        put_u32(&mut data, NFTA_NAT_REG_PROTO_MIN, 2);
        assert_eq!(b[nat + 8..], data[..]);
        assert!(lower_rule(TableFamily::Ip, &Rule::new(vec![dm(Family::V6, vec![Field::ThDport], "m")])).is_err());
    }

    #[test]
    fn sets_whose_kind_only_the_kernel_tells() {
        use super::super::batch::sets_to_look_up;
        let t = TableRef::inet("t");
        let e = |key: Vec<Value>| Element::key(key);
        let del = |set: &str, elems| Op::DeleteElements { table: t.clone(), set: set.into(), elems };
        // single values in a concatenation: either kind; a prefix: interval; one field: not interval
        let ops = vec![
            del("a", vec![e(vec![v("10.0.0.1"), v("10.0.0.2")])]),
            del("b", vec![e(vec![v("10.0.0.1"), v("10.0.0.0/8")])]),
            del("c", vec![e(vec![v("10.0.0.1")])]),
            del("a", vec![e(vec![v("10.0.0.3"), v("10.0.0.4")])]),
            del("d", vec![]),
        ];
        assert_eq!(sets_to_look_up(&ops), vec![(t.clone(), "a".to_string())]);
        // a set the transaction makes is known
        let mut with_def = vec![Op::AddSet { table: t.clone(), set: SetDef::set("a", vec![DataType::Ipv4Addr, DataType::Ipv4Addr]) }];
        with_def.extend(ops);
        assert!(sets_to_look_up(&with_def).is_empty());
    }
}
