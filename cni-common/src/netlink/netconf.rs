//! Namespace-wide IP settings read over netlink (`RTM_GETNETCONF`): the values of
//! `net.ipv4.conf.all.*` / `net.ipv6.conf.all.*` without a path walk through `/proc/sys`.

use super::socket::{i32_at, iter_attrs, put_attr, raw_message, u16_at, HEADER_LEN};
use super::{IpFamily, Netlink, NlError};

const RTM_NEWNETCONF: u16 = 80;
const RTM_GETNETCONF: u16 = 82;
const NETCONFA_IFINDEX: u16 = 1;
const NETCONFA_FORWARDING: u16 = 2;
/// `NETCONFA_IFINDEX_ALL`: the namespace's `all` settings.
const IFINDEX_ALL: i32 = -1;
/// `struct netconfmsg` (one byte, the family) padded to the attribute alignment.
const NETCONFMSG_LEN: usize = 4;

/// `RTM_GETNETCONF` of the `all` settings of `family`.
fn request(family: IpFamily) -> Vec<u8> {
    let mut attrs = Vec::with_capacity(8);
    put_attr(&mut attrs, NETCONFA_IFINDEX, &IFINDEX_ALL.to_ne_bytes());
    let netconfmsg: [u8; NETCONFMSG_LEN] = [family.af(), 0, 0, 0];
    raw_message(RTM_GETNETCONF, &netconfmsg, &attrs)
}

/// `NETCONFA_FORWARDING` of an `RTM_NEWNETCONF` reply; `None` for other messages or when absent.
fn forwarding_from_raw(raw: &[u8]) -> Result<Option<bool>, NlError> {
    if raw.len() < HEADER_LEN + NETCONFMSG_LEN || u16_at(raw, 4) != RTM_NEWNETCONF {
        return Ok(None);
    }
    for attr in iter_attrs(&raw[HEADER_LEN + NETCONFMSG_LEN..], "netconf") {
        let (kind, value) = attr?;
        if kind == NETCONFA_FORWARDING {
            if value.len() != 4 {
                return Err(NlError::decode(format!("netconf forwarding of {} bytes", value.len())));
            }
            return Ok(Some(i32_at(value, 0) != 0));
        }
    }
    Ok(None)
}

impl Netlink {
    /// Whether forwarding is on for `family` in the namespace (`net.ipv4.ip_forward`, which is
    /// `net.ipv4.conf.all.forwarding`, or `net.ipv6.conf.all.forwarding`). `None` when the kernel
    /// does not report it (a kernel without that family).
    pub fn forwarding(&mut self, family: IpFamily) -> Result<Option<bool>, NlError> {
        let what = match family {
            IpFamily::V4 => "IPv4",
            IpFamily::V6 => "IPv6",
        };
        match self.sock.request_raw(request(family), 0, forwarding_from_raw) {
            Ok(v) => Ok(v.into_iter().next()),
            Err(e) if matches!(e.errno(), Some(libc::EAFNOSUPPORT | libc::EOPNOTSUPP)) => Ok(None),
            Err(e) => Err(e.with_op(format!("get {what} forwarding"))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_asks_for_the_all_settings_of_the_family() {
        let m = request(IpFamily::V6);
        assert_eq!(m.len(), 28);
        assert_eq!(u32::from_ne_bytes(m[0..4].try_into().unwrap()), 28);
        assert_eq!(u16::from_ne_bytes(m[4..6].try_into().unwrap()), RTM_GETNETCONF);
        assert_eq!(m[16], libc::AF_INET6 as u8);
        assert_eq!(&m[20..24], &[8, 0, 1, 0][..]);
        assert_eq!(i32::from_ne_bytes(m[24..28].try_into().unwrap()), -1);
    }

    #[test]
    fn reply_gives_forwarding() {
        let mut raw = vec![0u8; HEADER_LEN];
        raw[4..6].copy_from_slice(&RTM_NEWNETCONF.to_ne_bytes());
        raw.extend_from_slice(&[libc::AF_INET as u8, 0, 0, 0]);
        for (kind, v) in [(NETCONFA_IFINDEX, -1i32), (NETCONFA_FORWARDING, 1)] {
            raw.extend_from_slice(&8u16.to_ne_bytes());
            raw.extend_from_slice(&kind.to_ne_bytes());
            raw.extend_from_slice(&v.to_ne_bytes());
        }
        assert_eq!(forwarding_from_raw(&raw).unwrap(), Some(true));
        let n = raw.len();
        raw[n - 4..].copy_from_slice(&0i32.to_ne_bytes());
        assert_eq!(forwarding_from_raw(&raw).unwrap(), Some(false));
        raw[4..6].copy_from_slice(&2u16.to_ne_bytes()); // an error message, not a netconf reply
        assert_eq!(forwarding_from_raw(&raw).unwrap(), None);
    }
}
