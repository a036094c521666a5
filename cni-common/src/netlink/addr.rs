//! IP addresses of links.

use ipnetwork::IpNetwork;
use netlink_packet_core::{NLM_F_CREATE, NLM_F_EXCL, NLM_F_REPLACE};
use netlink_packet_route::address::{AddressAttribute, AddressFlags, AddressHeaderFlags, AddressMessage};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};

use super::{IpFamily, Netlink, NlError};

/// An address assigned to a link.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Addr {
    /// Index of the link.
    pub index: u32,
    /// The address with its prefix length (host bits kept: `10.0.0.2/24`).
    pub addr: IpNetwork,
    /// `RT_SCOPE_*`: 0 universe, 253 link, 254 host.
    pub scope: u8,
    /// `IFA_F_*` flags (`IFA_FLAGS`, or the header's 8 bits when absent).
    pub flags: u32,
}

impl Addr {
    /// IPv6 duplicate address detection is still running (`IFA_F_TENTATIVE`).
    pub fn is_tentative(&self) -> bool {
        self.flags & libc::IFA_F_TENTATIVE != 0
    }

    /// IPv6 duplicate address detection failed (`IFA_F_DADFAILED`).
    pub fn is_dad_failed(&self) -> bool {
        self.flags & libc::IFA_F_DADFAILED != 0
    }

    fn from_message(msg: &AddressMessage) -> Option<Addr> {
        // IFA_LOCAL is the interface's own address; IFA_ADDRESS is the peer's on point-to-point
        // links and the same as IFA_LOCAL elsewhere. IPv6 only sends IFA_ADDRESS.
        let mut local = None;
        let mut address = None;
        let mut flags = u32::from(msg.header.flags.bits());
        for attr in &msg.attributes {
            match attr {
                AddressAttribute::Local(ip) => local = Some(*ip),
                AddressAttribute::Address(ip) => address = Some(*ip),
                AddressAttribute::Flags(f) => flags = f.bits(),
                _ => {}
            }
        }
        let ip = local.or(address)?;
        let addr = IpNetwork::new(ip, msg.header.prefix_len).ok()?;
        Some(Addr { index: msg.header.index, addr, scope: u8::from(msg.header.scope), flags })
    }
}

/// Options of [`Netlink::add_addr`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct AddrOpts {
    /// Skip IPv6 duplicate address detection (`IFA_F_NODAD`): the address is usable at once.
    pub nodad: bool,
    /// Replace an existing identical address (its flags) instead of failing with `EEXIST`.
    pub replace: bool,
}

fn family_of(net: &IpNetwork) -> AddressFamily {
    match net {
        IpNetwork::V4(_) => AddressFamily::Inet,
        IpNetwork::V6(_) => AddressFamily::Inet6,
    }
}

/// The header and address attributes shared by add and delete.
fn addr_msg(index: u32, net: &IpNetwork) -> AddressMessage {
    let mut msg = AddressMessage::default();
    msg.header.family = family_of(net);
    msg.header.prefix_len = net.prefix();
    msg.header.index = index;
    msg.attributes.push(AddressAttribute::Local(net.ip()));
    msg.attributes.push(AddressAttribute::Address(net.ip()));
    msg
}

/// `RTM_NEWADDR` for `net` on `index`. IPv4 gets the subnet's broadcast address, as `ip addr add
/// ... brd +` would, unless the prefix is /31 or /32.
pub(crate) fn add_addr_message(index: u32, net: &IpNetwork, opts: AddrOpts) -> RouteNetlinkMessage {
    let mut msg = addr_msg(index, net);
    if let IpNetwork::V4(v4) = net {
        if v4.prefix() < 31 {
            msg.attributes.push(AddressAttribute::Broadcast(v4.broadcast()));
        }
    }
    if opts.nodad {
        msg.header.flags = AddressHeaderFlags::Nodad;
        msg.attributes.push(AddressAttribute::Flags(AddressFlags::Nodad));
    }
    RouteNetlinkMessage::NewAddress(msg)
}

/// The request flags of an address addition with `opts`.
pub(crate) fn add_addr_flags(opts: AddrOpts) -> u16 {
    if opts.replace {
        NLM_F_CREATE | NLM_F_REPLACE
    } else {
        NLM_F_CREATE | NLM_F_EXCL
    }
}

/// How the addition of `addr` to the link `label` names itself in its error.
pub(crate) fn add_addr_op(addr: &IpNetwork, label: &str) -> String {
    format!("add address {addr} to link {label}")
}

impl Netlink {
    /// Addresses of the namespace, of link `index` only and/or of `family` only.
    ///
    /// Always asked per family (both families: two dumps): the kernel serves an `AF_INET` or
    /// `AF_INET6` address dump without RTNL (since 6.9), while an `AF_UNSPEC` one holds RTNL for
    /// its whole length, queued behind every link change of every namespace of the machine (with
    /// parallel ADDs, behind other plugins' veth creations).
    pub fn addrs(&mut self, index: Option<u32>, family: Option<IpFamily>) -> Result<Vec<Addr>, NlError> {
        match family {
            Some(f) => self.addrs_of_family(index, f),
            None => {
                let mut v = self.addrs_of_family(index, IpFamily::V4)?;
                v.extend(self.addrs_of_family(index, IpFamily::V6)?);
                Ok(v)
            }
        }
    }

    fn addrs_of_family(&mut self, index: Option<u32>, family: IpFamily) -> Result<Vec<Addr>, NlError> {
        let mut req = AddressMessage::default();
        req.header.family = match family {
            IpFamily::V4 => AddressFamily::Inet,
            IpFamily::V6 => AddressFamily::Inet6,
        };
        // Filtered by the kernel (strict dump checking), so the cost does not grow with the number
        // of links in the namespace.
        req.header.index = index.unwrap_or(0);
        let op = || match index {
            Some(i) => format!("list {family} addresses of link index {i}"),
            None => format!("list {family} addresses"),
        };
        let msgs = self.sock.dump(RouteNetlinkMessage::GetAddress(req)).map_err(|e| e.with_op(op()))?;
        Ok(msgs
            .iter()
            .filter_map(|m| match m {
                RouteNetlinkMessage::NewAddress(a) => Addr::from_message(a),
                _ => None,
            })
            .filter(|a| index.is_none() || index == Some(a.index))
            .filter(|a| family == IpFamily::of(&a.addr.ip()))
            .collect())
    }

    /// Add `addr` (address and prefix length, e.g. `10.0.0.2/24`) to link `index`. An existing
    /// identical address is `EEXIST` unless [`AddrOpts::replace`].
    pub fn add_addr(&mut self, index: u32, addr: IpNetwork, opts: AddrOpts) -> Result<(), NlError> {
        match self.sock.request(add_addr_message(index, &addr, opts), add_addr_flags(opts)) {
            Ok(_) => Ok(()),
            Err(e) => Err(e.with_op(add_addr_op(&addr, &self.link_label(index)))),
        }
    }

    /// Remove `addr` from link `index`.
    pub fn del_addr(&mut self, index: u32, addr: IpNetwork) -> Result<(), NlError> {
        match self.sock.request(RouteNetlinkMessage::DelAddress(addr_msg(index, &addr)), 0) {
            Ok(_) => Ok(()),
            Err(e) => Err(e.with_op(format!("delete address {addr} from link {}", self.link_label(index)))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::socket::encode;
    use super::*;
    use netlink_packet_core::NLM_F_REQUEST;

    #[test]
    fn v4_add_carries_broadcast() {
        let net: IpNetwork = "10.22.0.5/24".parse().unwrap();
        let RouteNetlinkMessage::NewAddress(msg) = add_addr_message(3, &net, AddrOpts::default()) else {
            panic!("not NEWADDR")
        };
        assert_eq!(msg.header.prefix_len, 24);
        assert_eq!(msg.header.index, 3);
        assert!(msg.attributes.contains(&AddressAttribute::Broadcast("10.22.0.255".parse().unwrap())));
        assert!(msg.attributes.contains(&AddressAttribute::Local("10.22.0.5".parse().unwrap())));
        let net: IpNetwork = "10.22.0.5/31".parse().unwrap();
        let RouteNetlinkMessage::NewAddress(msg) = add_addr_message(3, &net, AddrOpts::default()) else {
            panic!("not NEWADDR")
        };
        assert!(!msg.attributes.iter().any(|a| matches!(a, AddressAttribute::Broadcast(_))));
    }

    #[test]
    fn v6_nodad_sets_ifa_flags() {
        let net: IpNetwork = "fd00::5/64".parse().unwrap();
        let bytes = encode(add_addr_message(3, &net, AddrOpts { nodad: true, replace: false }), NLM_F_REQUEST, 1);
        // ifaddrmsg: family AF_INET6, prefix 64, flags IFA_F_NODAD, scope 0, index 3
        assert_eq!(&bytes[16..20], &[libc::AF_INET6 as u8, 64, libc::IFA_F_NODAD as u8, 0]);
        assert_eq!(&bytes[20..24], &3u32.to_ne_bytes());
        // IFA_FLAGS (8) = IFA_F_NODAD somewhere after the header
        let mut flags_attr = Vec::new();
        flags_attr.extend_from_slice(&8u16.to_ne_bytes());
        flags_attr.extend_from_slice(&8u16.to_ne_bytes());
        flags_attr.extend_from_slice(&libc::IFA_F_NODAD.to_ne_bytes());
        assert!(bytes[24..].windows(8).any(|w| w == flags_attr.as_slice()));
    }

    #[test]
    fn addr_from_message_prefers_local() {
        let mut msg = AddressMessage::default();
        msg.header.family = AddressFamily::Inet;
        msg.header.prefix_len = 32;
        msg.header.index = 4;
        msg.attributes = vec![
            AddressAttribute::Address("10.0.0.2".parse().unwrap()),
            AddressAttribute::Local("10.0.0.1".parse().unwrap()),
            AddressAttribute::Flags(AddressFlags::Permanent),
        ];
        let a = Addr::from_message(&msg).unwrap();
        assert_eq!(a.addr, "10.0.0.1/32".parse::<IpNetwork>().unwrap());
        assert_eq!(a.flags, libc::IFA_F_PERMANENT);
        assert!(!a.is_tentative());
    }
}
