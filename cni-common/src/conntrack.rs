//! Conntrack entries over ctnetlink (NETLINK_NETFILTER, subsystem `NFNL_SUBSYS_CTNETLINK`):
//! list them, and delete those of a protocol bound for given destination ports.
//!
//! The portmap plugin needs the second: after it publishes host ports, UDP "connections" already
//! tracked towards those ports keep their old (un-NATed) translation until they time out, so their
//! entries are deleted and the next datagram is tracked — and translated — afresh.
//!
//! Requests are built and replies parsed here, by hand (a `struct nlmsghdr`, a `struct nfgenmsg`
//! and netlink attributes), with the hand-built message helpers of [`crate::netlink::socket`];
//! the transport is that module's socket, the suite's one netlink loop, which acknowledges
//! requests and retries interrupted dumps.
//! Like every netlink socket, the one opened here works on the calling thread's network namespace.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use crate::error::CniError;
use crate::netlink::socket::{find_attr, nfgen_message, nfgen_parts, put_attr, put_nested, Socket};
#[cfg(test)]
use crate::netlink::socket::NLA_F_NESTED;
use crate::netlink::{IpFamily, NlError};

/// `NFNL_SUBSYS_CTNETLINK`: the conntrack subsystem of nfnetlink (high byte of the message type).
const NFNL_SUBSYS_CTNETLINK: u16 = 1;
/// `IPCTNL_MSG_CT_NEW`: the message type of every entry in a dump.
const IPCTNL_MSG_CT_NEW: u16 = 0;
const IPCTNL_MSG_CT_GET: u16 = 1;
const IPCTNL_MSG_CT_DELETE: u16 = 2;

// enum ctattr_type (top level of an entry).
const CTA_TUPLE_ORIG: u16 = 1;
const CTA_ZONE: u16 = 18;
// enum ctattr_tuple.
const CTA_TUPLE_IP: u16 = 1;
const CTA_TUPLE_PROTO: u16 = 2;
// enum ctattr_ip.
const CTA_IP_V4_SRC: u16 = 1;
const CTA_IP_V4_DST: u16 = 2;
const CTA_IP_V6_SRC: u16 = 3;
const CTA_IP_V6_DST: u16 = 4;
// enum ctattr_l4proto.
const CTA_PROTO_NUM: u16 = 1;
const CTA_PROTO_SRC_PORT: u16 = 2;
const CTA_PROTO_DST_PORT: u16 = 3;

/// A conntrack entry, as seen in its original direction.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Entry {
    pub family: IpFamily,
    /// IP protocol number (6 TCP, 17 UDP, ...).
    pub proto: u8,
    pub src: IpAddr,
    pub dst: IpAddr,
    /// Source and destination ports; 0 for protocols without ports (ICMP, ...).
    pub sport: u16,
    pub dport: u16,
    /// Conntrack zone (0, the default, for almost every entry); part of the entry's identity.
    pub zone: u16,
}

impl fmt::Display for Entry {
    /// `udp 10.0.0.1:40000 -> 10.0.0.2:53`, `proto 1 [::1]:0 -> [::1]:0 zone 3`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.proto {
            6 => f.write_str("tcp")?,
            17 => f.write_str("udp")?,
            132 => f.write_str("sctp")?,
            n => write!(f, "proto {n}")?,
        }
        write!(f, " {} -> {}", SocketAddr::new(self.src, self.sport), SocketAddr::new(self.dst, self.dport))?;
        if self.zone != 0 {
            write!(f, " zone {}", self.zone)?;
        }
        Ok(())
    }
}

/// Delete conntrack entries (both families) of `protocol` (17 = UDP) whose original-direction
/// destination port is in `ports`. Returns how many were deleted. Entries vanishing between dump
/// and delete are fine (`ENOENT` ignored). With no ports, nothing is asked of the kernel.
pub fn delete_by_dport(protocol: u8, ports: &[u16]) -> Result<usize, CniError> {
    if ports.is_empty() {
        return Ok(0);
    }
    let mut sock = open()?;
    let stale = dump(&mut sock, |p| p.has_ports && p.entry.proto == protocol && ports.contains(&p.entry.dport))
        .map_err(|e| e.with_op(format!("list conntrack entries of protocol {protocol} to ports {ports:?}")))?;
    let mut deleted = 0;
    for entry in &stale {
        match sock.request_raw(delete_message(entry), 0, |_| Ok(None::<()>)) {
            Ok(_) => deleted += 1,
            Err(e) if e.errno() == Some(libc::ENOENT) => {}
            Err(e) => return Err(e.with_op(format!("delete conntrack entry {entry}")).into()),
        }
    }
    Ok(deleted)
}

/// List (family, proto, orig src, orig dst, orig sport, orig dport) of entries — for tests and
/// CHECK tooling. `protocol` keeps only entries of that IP protocol.
pub fn list(protocol: Option<u8>) -> Result<Vec<Entry>, CniError> {
    let mut sock = open()?;
    let entries = dump(&mut sock, |p| protocol.is_none() || protocol == Some(p.entry.proto))
        .map_err(|e| e.with_op("list conntrack entries"))?;
    Ok(entries)
}

fn open() -> Result<Socket, CniError> {
    Ok(Socket::open_netfilter()?)
}

/// Dump the table (every family) and keep the entries `keep` accepts.
fn dump(sock: &mut Socket, keep: impl Fn(&Parsed) -> bool) -> Result<Vec<Entry>, NlError> {
    sock.dump_raw(get_message(), |raw| Ok(parse_entry(raw)?.filter(|p| keep(p)).map(|p| p.entry)))
}

/// An entry of a dump, with whether its tuple carries ports (ICMP's does not).
#[derive(Debug, PartialEq, Eq)]
struct Parsed {
    entry: Entry,
    has_ports: bool,
}

/// `IPCTNL_MSG_CT_GET` for every family (`AF_UNSPEC`); the socket adds `NLM_F_DUMP`.
fn get_message() -> Vec<u8> {
    message(IPCTNL_MSG_CT_GET, libc::AF_UNSPEC as u8, &[])
}

/// `IPCTNL_MSG_CT_DELETE` of `entry`, named by its original tuple (and zone).
///
/// The tuple is never omitted: a delete without one flushes the whole table of the family.
fn delete_message(entry: &Entry) -> Vec<u8> {
    let mut attrs = Vec::new();
    put_nested(&mut attrs, CTA_TUPLE_ORIG, |tuple| {
        put_nested(tuple, CTA_TUPLE_IP, |ip| {
            for (addr, v4, v6) in [(entry.src, CTA_IP_V4_SRC, CTA_IP_V6_SRC), (entry.dst, CTA_IP_V4_DST, CTA_IP_V6_DST)]
            {
                match addr {
                    IpAddr::V4(a) => put_attr(ip, v4, &a.octets()),
                    IpAddr::V6(a) => put_attr(ip, v6, &a.octets()),
                }
            }
        });
        put_nested(tuple, CTA_TUPLE_PROTO, |proto| {
            put_attr(proto, CTA_PROTO_NUM, &[entry.proto]);
            put_attr(proto, CTA_PROTO_SRC_PORT, &entry.sport.to_be_bytes());
            put_attr(proto, CTA_PROTO_DST_PORT, &entry.dport.to_be_bytes());
        });
    });
    if entry.zone != 0 {
        put_attr(&mut attrs, CTA_ZONE, &entry.zone.to_be_bytes());
    }
    message(IPCTNL_MSG_CT_DELETE, entry.family.af(), &attrs)
}

/// A ctnetlink message: header (flags and sequence number left for the socket to fill in),
/// `nfgenmsg { family, version 0, res_id 0 }`, then `attrs`.
fn message(kind: u16, family: u8, attrs: &[u8]) -> Vec<u8> {
    nfgen_message((NFNL_SUBSYS_CTNETLINK << 8) | kind, family, 0, attrs)
}

/// Parse one message of a dump (header included). `None` for messages that are not conntrack
/// entries of IPv4 or IPv6.
fn parse_entry(raw: &[u8]) -> Result<Option<Parsed>, NlError> {
    let Some((kind, family, attrs)) = nfgen_parts(raw) else {
        return Err(NlError::decode(format!("conntrack message of {} bytes, shorter than its headers", raw.len())));
    };
    if kind != (NFNL_SUBSYS_CTNETLINK << 8) | IPCTNL_MSG_CT_NEW {
        return Ok(None);
    }
    let family = match i32::from(family) {
        libc::AF_INET => IpFamily::V4,
        libc::AF_INET6 => IpFamily::V6,
        _ => return Ok(None),
    };
    let tuple = find(attrs, CTA_TUPLE_ORIG)?.ok_or_else(|| missing("CTA_TUPLE_ORIG"))?;
    let ip = find(tuple, CTA_TUPLE_IP)?.ok_or_else(|| missing("CTA_TUPLE_IP"))?;
    let (src, dst) = match family {
        IpFamily::V4 => (v4(ip, CTA_IP_V4_SRC, "CTA_IP_V4_SRC")?, v4(ip, CTA_IP_V4_DST, "CTA_IP_V4_DST")?),
        IpFamily::V6 => (v6(ip, CTA_IP_V6_SRC, "CTA_IP_V6_SRC")?, v6(ip, CTA_IP_V6_DST, "CTA_IP_V6_DST")?),
    };
    let l4 = find(tuple, CTA_TUPLE_PROTO)?.ok_or_else(|| missing("CTA_TUPLE_PROTO"))?;
    let [proto] = fixed::<1>(l4, CTA_PROTO_NUM, "CTA_PROTO_NUM")?.ok_or_else(|| missing("CTA_PROTO_NUM"))?;
    let sport = fixed::<2>(l4, CTA_PROTO_SRC_PORT, "CTA_PROTO_SRC_PORT")?.map(u16::from_be_bytes);
    let dport = fixed::<2>(l4, CTA_PROTO_DST_PORT, "CTA_PROTO_DST_PORT")?.map(u16::from_be_bytes);
    let zone = fixed::<2>(attrs, CTA_ZONE, "CTA_ZONE")?.map_or(0, u16::from_be_bytes);
    Ok(Some(Parsed {
        entry: Entry { family, proto, src, dst, sport: sport.unwrap_or(0), dport: dport.unwrap_or(0), zone },
        has_ports: sport.is_some() && dport.is_some(),
    }))
}

fn missing(what: &str) -> NlError {
    NlError::decode(format!("conntrack entry without {what}"))
}

fn v4(attrs: &[u8], kind: u16, name: &str) -> Result<IpAddr, NlError> {
    let octets = fixed::<4>(attrs, kind, name)?.ok_or_else(|| missing(name))?;
    Ok(IpAddr::V4(Ipv4Addr::from(octets)))
}

fn v6(attrs: &[u8], kind: u16, name: &str) -> Result<IpAddr, NlError> {
    let octets = fixed::<16>(attrs, kind, name)?.ok_or_else(|| missing(name))?;
    Ok(IpAddr::V6(Ipv6Addr::from(octets)))
}

/// The value of attribute `kind` (called `name` in errors), which must be `N` bytes long.
fn fixed<const N: usize>(attrs: &[u8], kind: u16, name: &str) -> Result<Option<[u8; N]>, NlError> {
    match find(attrs, kind)? {
        None => Ok(None),
        Some(value) => value
            .try_into()
            .map(Some)
            .map_err(|_| NlError::decode(format!("conntrack attribute {name} of {} bytes, expected {N}", value.len()))),
    }
}

/// The value of the first attribute `kind` among `attrs` (flag bits ignored), checking the
/// lengths of every attribute before it.
fn find(attrs: &[u8], kind: u16) -> Result<Option<&[u8]>, NlError> {
    find_attr(attrs, kind, "conntrack")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ne16(v: u16) -> [u8; 2] {
        v.to_ne_bytes()
    }

    /// A hand-written attribute header: length and type, host byte order.
    fn hdr(len: u16, kind: u16) -> Vec<u8> {
        [ne16(len), ne16(kind)].concat()
    }

    fn udp_v4() -> Entry {
        Entry {
            family: IpFamily::V4,
            proto: 17,
            src: "10.0.0.1".parse().unwrap(),
            dst: "10.0.0.2".parse().unwrap(),
            sport: 1234,
            dport: 53,
            zone: 0,
        }
    }

    /// A dump reply as the kernel lays it out: the original tuple among other attributes,
    /// nested attributes with or without `NLA_F_NESTED`, the last attribute unpadded.
    fn kernel_reply(family: u8, orig: &[u8]) -> Vec<u8> {
        let mut attrs = Vec::new();
        attrs.extend(hdr(4 + orig.len() as u16, CTA_TUPLE_ORIG)); // kernels before 5.2: no NLA_F_NESTED
        attrs.extend_from_slice(orig);
        // CTA_TUPLE_REPLY with a decoy tuple, CTA_STATUS, CTA_ID.
        attrs.extend(hdr(4 + orig.len() as u16, 2 | NLA_F_NESTED));
        attrs.extend(vec![0xee; orig.len()]);
        attrs.extend(hdr(8, 3));
        attrs.extend(8u32.to_be_bytes());
        attrs.extend(hdr(8, 12));
        attrs.extend(0xdead_beefu32.to_be_bytes());
        let mut msg = message(IPCTNL_MSG_CT_NEW, family, &attrs);
        msg[6..8].copy_from_slice(&ne16(0x2)); // NLM_F_MULTI
        msg
    }

    #[test]
    fn get_message_bytes() {
        let mut expected = Vec::new();
        expected.extend(20u32.to_ne_bytes());
        expected.extend(ne16(0x0101)); // (NFNL_SUBSYS_CTNETLINK << 8) | IPCTNL_MSG_CT_GET
        expected.extend([0; 10]); // flags, seq, pid: the socket's
        expected.extend([0, 0, 0, 0]); // AF_UNSPEC, NFNETLINK_V0, res_id
        assert_eq!(get_message(), expected);
    }

    #[test]
    fn delete_message_v4_bytes() {
        let mut expected = Vec::new();
        expected.extend(72u32.to_ne_bytes());
        expected.extend(ne16(0x0102)); // IPCTNL_MSG_CT_DELETE
        expected.extend([0; 10]);
        expected.extend([libc::AF_INET as u8, 0, 0, 0]);
        expected.extend(hdr(52, 0x8001)); // CTA_TUPLE_ORIG | NLA_F_NESTED
        expected.extend(hdr(20, 0x8001)); //   CTA_TUPLE_IP
        expected.extend(hdr(8, 1)); //           CTA_IP_V4_SRC
        expected.extend([10, 0, 0, 1]);
        expected.extend(hdr(8, 2)); //           CTA_IP_V4_DST
        expected.extend([10, 0, 0, 2]);
        expected.extend(hdr(28, 0x8002)); // CTA_TUPLE_PROTO
        expected.extend(hdr(5, 1)); //           CTA_PROTO_NUM
        expected.extend([17, 0, 0, 0]);
        expected.extend(hdr(6, 2)); //           CTA_PROTO_SRC_PORT, big endian
        expected.extend([0x04, 0xd2, 0, 0]);
        expected.extend(hdr(6, 3)); //           CTA_PROTO_DST_PORT
        expected.extend([0x00, 0x35, 0, 0]);
        assert_eq!(delete_message(&udp_v4()), expected);
    }

    #[test]
    fn delete_message_v6_with_zone_bytes() {
        let entry = Entry {
            family: IpFamily::V6,
            src: "fd00::1".parse().unwrap(),
            dst: "::1".parse().unwrap(),
            sport: 0x1122,
            dport: 0x3344,
            zone: 0x0a0b,
            ..udp_v4()
        };
        let msg = delete_message(&entry);
        let len = 16 + 4 + (4 + (4 + 20 + 20) + 28) + 8;
        assert_eq!(msg.len(), len);
        assert_eq!(msg[..4], (len as u32).to_ne_bytes());
        assert_eq!(msg[16..20], [libc::AF_INET6 as u8, 0, 0, 0]);
        let mut attrs = Vec::new();
        attrs.extend(hdr(76, 0x8001));
        attrs.extend(hdr(44, 0x8001));
        attrs.extend(hdr(20, 3)); // CTA_IP_V6_SRC
        attrs.extend([0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1]);
        attrs.extend(hdr(20, 4)); // CTA_IP_V6_DST
        attrs.extend([0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1]);
        attrs.extend(hdr(28, 0x8002));
        attrs.extend(hdr(5, 1));
        attrs.extend([17, 0, 0, 0]);
        attrs.extend(hdr(6, 2));
        attrs.extend([0x11, 0x22, 0, 0]);
        attrs.extend(hdr(6, 3));
        attrs.extend([0x33, 0x44, 0, 0]);
        attrs.extend(hdr(6, 18)); // CTA_ZONE, big endian
        attrs.extend([0x0a, 0x0b, 0, 0]);
        assert_eq!(msg[20..], attrs);
    }

    #[test]
    fn parses_kernel_reply_v4() {
        // The tuple as the kernel sends it (flag bits on the nested headers vary by version).
        let mut orig = Vec::new();
        orig.extend(hdr(20, CTA_TUPLE_IP | NLA_F_NESTED));
        orig.extend(hdr(8, 1));
        orig.extend([127, 0, 0, 1]);
        orig.extend(hdr(8, 2));
        orig.extend([127, 0, 0, 2]);
        orig.extend(hdr(28, CTA_TUPLE_PROTO));
        orig.extend(hdr(5, 1));
        orig.extend([17, 0, 0, 0]);
        orig.extend(hdr(6, 2 | (1 << 14))); // NLA_F_NET_BYTEORDER is ignored
        orig.extend([0x9c, 0x40, 0, 0]);
        orig.extend(hdr(6, 3));
        orig.extend([0x13, 0x89, 0, 0]);
        let msg = kernel_reply(libc::AF_INET as u8, &orig);
        let parsed = parse_entry(&msg).unwrap().unwrap();
        assert!(parsed.has_ports);
        assert_eq!(
            parsed.entry,
            Entry {
                family: IpFamily::V4,
                proto: 17,
                src: "127.0.0.1".parse().unwrap(),
                dst: "127.0.0.2".parse().unwrap(),
                sport: 40000,
                dport: 5001,
                zone: 0
            }
        );
        assert_eq!(parsed.entry.to_string(), "udp 127.0.0.1:40000 -> 127.0.0.2:5001");
    }

    #[test]
    fn parse_inverts_delete_message() {
        let entry = Entry {
            family: IpFamily::V6,
            proto: 6,
            src: "2001:db8::1".parse().unwrap(),
            dst: "2001:db8::2".parse().unwrap(),
            sport: 65535,
            dport: 1,
            zone: 7,
        };
        // A delete request's attributes are the same tuple (and zone) as a dump reply's.
        let mut msg = delete_message(&entry);
        msg[4..6].copy_from_slice(&ne16(0x0100));
        let parsed = parse_entry(&msg).unwrap().unwrap();
        assert_eq!(parsed, Parsed { entry: entry.clone(), has_ports: true });
        assert_eq!(entry.to_string(), "tcp [2001:db8::1]:65535 -> [2001:db8::2]:1 zone 7");
        // And the last attribute may come unpadded.
        let unpadded = &msg[..msg.len() - 2];
        let mut unpadded = unpadded.to_vec();
        unpadded[..4].copy_from_slice(&(msg.len() as u32 - 2).to_ne_bytes());
        assert_eq!(parse_entry(&unpadded).unwrap().unwrap().entry, entry);
    }

    #[test]
    fn portless_entries_have_no_ports() {
        let mut orig = Vec::new();
        orig.extend(hdr(20, CTA_TUPLE_IP | NLA_F_NESTED));
        orig.extend(hdr(8, 1));
        orig.extend([10, 1, 1, 1]);
        orig.extend(hdr(8, 2));
        orig.extend([10, 1, 1, 2]);
        orig.extend(hdr(28, CTA_TUPLE_PROTO | NLA_F_NESTED));
        orig.extend(hdr(5, 1));
        orig.extend([1, 0, 0, 0]); // ICMP
        orig.extend(hdr(6, 4)); // CTA_PROTO_ICMP_ID
        orig.extend([0, 7, 0, 0]);
        orig.extend(hdr(5, 5)); // CTA_PROTO_ICMP_TYPE
        orig.extend([8, 0, 0, 0]);
        let parsed = parse_entry(&kernel_reply(libc::AF_INET as u8, &orig)).unwrap().unwrap();
        assert!(!parsed.has_ports);
        assert_eq!((parsed.entry.proto, parsed.entry.sport, parsed.entry.dport), (1, 0, 0));
        assert_eq!(parsed.entry.to_string(), "proto 1 10.1.1.1:0 -> 10.1.1.2:0");
    }

    #[test]
    fn other_messages_are_skipped() {
        let msg = delete_message(&udp_v4());
        // A DELETE (event) message, not an entry of a dump.
        assert_eq!(parse_entry(&msg).unwrap(), None);
        // Another subsystem (expectations: NFNL_SUBSYS_CTNETLINK_EXP = 2).
        let mut exp = msg.clone();
        exp[4..6].copy_from_slice(&ne16(0x0200));
        assert_eq!(parse_entry(&exp).unwrap(), None);
        // A family other than IPv4 and IPv6.
        let mut other = msg.clone();
        other[4..6].copy_from_slice(&ne16(0x0100));
        other[16] = 7; // AF_BRIDGE
        assert_eq!(parse_entry(&other).unwrap(), None);
    }

    #[test]
    fn malformed_replies_are_errors() {
        let mut msg = delete_message(&udp_v4());
        msg[4..6].copy_from_slice(&ne16(0x0100));
        assert!(parse_entry(&msg).unwrap().is_some());
        // Header shorter than nlmsghdr + nfgenmsg.
        assert!(parse_entry(&msg[..19]).is_err());
        // Attribute longer than the message.
        let mut long = msg.clone();
        long[20..22].copy_from_slice(&ne16(200));
        assert!(parse_entry(&long).unwrap_err().reason.contains("malformed conntrack attribute"));
        // Truncated attribute header.
        assert!(parse_entry(&msg[..23]).unwrap_err().reason.contains("truncated conntrack attribute"));
        // An IPv4 address of the wrong size.
        let mut short_ip = msg.clone();
        short_ip[28..30].copy_from_slice(&ne16(6)); // CTA_IP_V4_SRC of 2 bytes
        let e = parse_entry(&short_ip).unwrap_err();
        assert!(e.reason.contains("CTA_IP_V4_SRC of 2 bytes"), "{e}");
        // An IPv6 entry carrying IPv4 addresses.
        let mut wrong_family = msg.clone();
        wrong_family[16] = libc::AF_INET6 as u8;
        assert!(parse_entry(&wrong_family).unwrap_err().reason.contains("without CTA_IP_V6_SRC"));
        // No original tuple at all.
        let bare = message(IPCTNL_MSG_CT_NEW, libc::AF_INET as u8, &[]);
        assert!(parse_entry(&bare).unwrap_err().reason.contains("without CTA_TUPLE_ORIG"));
    }

    #[test]
    fn no_ports_asks_nothing() {
        // Needs no socket (and no privileges): nothing to delete.
        assert_eq!(delete_by_dport(17, &[]).unwrap(), 0);
    }
}
