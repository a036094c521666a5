//! Links: listing, lookup, creation of veth pairs, deletion and attribute changes.

use std::os::fd::{AsRawFd, BorrowedFd};

use netlink_packet_core::{NLM_F_CREATE, NLM_F_ECHO, NLM_F_EXCL};
use netlink_packet_route::link::{
    AfSpecInet6, AfSpecUnspec, In6AddrGenMode,
    InfoData, InfoKind, InfoVeth, LinkAttribute, LinkExtentMask, LinkFlags, LinkInfo, LinkMessage,
};
use netlink_packet_route::RouteNetlinkMessage;

use super::socket::{encode, put_attr, put_nested, raw_message, Socket, HEADER_LEN};
use super::{check_ifname, format_mac, Netlink, NlError};

/// `IPV4_DEVCONF_ARP_NOTIFY` (`include/uapi/linux/ip.h`): `net.ipv4.conf.<link>.arp_notify`.
pub const IPV4_DEVCONF_ARP_NOTIFY: u16 = 22;
/// `IPV4_DEVCONF_ROUTE_LOCALNET`: `net.ipv4.conf.<link>.route_localnet`.
pub const IPV4_DEVCONF_ROUTE_LOCALNET: u16 = 26;
/// `RTM_SETLINK`.
const RTM_SETLINK: u16 = 19;
/// `IFLA_AF_SPEC`, and `IFLA_INET_CONF` inside its `AF_INET` part.
const IFLA_AF_SPEC: u16 = 26;
const IFLA_INET_CONF: u16 = 1;
/// Length of `struct ifinfomsg`.
const IFINFOMSG_LEN: usize = 16;

/// A network interface as the kernel reports it (`RTM_NEWLINK`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Link {
    pub index: u32,
    pub name: String,
    /// `IFLA_INFO_KIND`: `"bridge"`, `"veth"`, ...; `None` for devices without one (loopback,
    /// physical NICs).
    pub kind: Option<String>,
    /// Hardware address, when it is a 6-byte one.
    pub mac: Option<[u8; 6]>,
    pub mtu: u32,
    /// Administratively up (`IFF_UP`).
    pub up: bool,
    /// Operationally up (`IFLA_OPERSTATE` is `UP`).
    pub oper_up: bool,
    /// Index of the master device (bridge), if enslaved.
    pub master: Option<u32>,
    /// `IFLA_LINK`: for a veth, the peer's index (in the peer's namespace).
    pub link: Option<u32>,
    /// `IFLA_LINK_NETNSID`: the id, in this namespace, of the namespace `link` refers to.
    pub link_netnsid: Option<i32>,
    /// Promiscuous mode requested by user space (`IFF_PROMISC`).
    pub promisc: bool,
}


/// `RTM_NEWLINK`, and the `IFLA_*` attributes [`Link`] is made of.
const RTM_NEWLINK: u16 = 16;
/// `RTM_DELLINK`.
pub(crate) const RTM_DELLINK: u16 = 17;
const IFLA_ADDRESS: u16 = 1;
const IFLA_IFNAME: u16 = 3;
const IFLA_MTU: u16 = 4;
const IFLA_LINK: u16 = 5;
const IFLA_MASTER: u16 = 10;
const IFLA_OPERSTATE: u16 = 16;
const IFLA_LINKINFO: u16 = 18;
const IFLA_INFO_KIND: u16 = 1;
const IFLA_LINK_NETNSID: u16 = 37;
/// `IF_OPER_UP` (RFC 2863 operational state).
const IF_OPER_UP: u8 = 6;

/// The [`Link`] of one `RTM_NEWLINK` message (whole, header included); `None` for any other
/// message. Reads only the attributes a [`Link`] holds: a link message also carries statistics
/// and every per-protocol setting, which a full decode would parse for nothing.
pub(crate) fn link_from_raw(raw: &[u8]) -> Result<Option<Link>, NlError> {
    use super::socket::iter_attrs;
    if raw.len() < HEADER_LEN || u16::from_ne_bytes([raw[4], raw[5]]) != RTM_NEWLINK {
        return Ok(None);
    }
    let body = &raw[HEADER_LEN..];
    if body.len() < IFINFOMSG_LEN {
        return Err(NlError::decode(format!("link message of {} bytes, shorter than its header", raw.len())));
    }
    let word = |off: usize| u32::from_ne_bytes([body[off], body[off + 1], body[off + 2], body[off + 3]]);
    let flags = word(8);
    let mut link = Link {
        index: word(4),
        name: String::new(),
        kind: None,
        mac: None,
        mtu: 0,
        up: flags & libc::IFF_UP as u32 != 0,
        oper_up: false,
        master: None,
        link: None,
        link_netnsid: None,
        promisc: flags & libc::IFF_PROMISC as u32 != 0,
    };
    let u32_of = |v: &[u8]| <[u8; 4]>::try_from(v.get(..4)?).ok().map(u32::from_ne_bytes);
    let string = |v: &[u8]| {
        let end = v.iter().position(|&b| b == 0).unwrap_or(v.len());
        String::from_utf8_lossy(&v[..end]).into_owned()
    };
    for attr in iter_attrs(&body[IFINFOMSG_LEN..], "link") {
        let (kind, v) = attr?;
        match kind {
            IFLA_ADDRESS => link.mac = <[u8; 6]>::try_from(v).ok(),
            IFLA_IFNAME => link.name = string(v),
            IFLA_MTU => link.mtu = u32_of(v).unwrap_or(0),
            IFLA_OPERSTATE => link.oper_up = v.first() == Some(&IF_OPER_UP),
            IFLA_MASTER => link.master = u32_of(v).filter(|&m| m != 0),
            IFLA_LINK => link.link = u32_of(v).filter(|&l| l != 0),
            IFLA_LINK_NETNSID => link.link_netnsid = u32_of(v).map(|id| id as i32),
            IFLA_LINKINFO => {
                for info in iter_attrs(v, "link info") {
                    let (k, kv) = info?;
                    if k == IFLA_INFO_KIND {
                        link.kind = Some(string(kv));
                    }
                }
            }
            _ => {}
        }
    }
    Ok(Some(link))
}

/// A veth pair to create.
#[derive(Debug, Clone)]
pub struct VethSpec<'a> {
    /// Name of the local end (created in the handle's namespace).
    pub name: &'a str,
    /// Name of the peer end.
    pub peer_name: &'a str,
    /// Namespace to create the peer directly in (`IFLA_NET_NS_FD` in the peer's attributes, no
    /// move afterwards); `None` keeps it in the handle's namespace.
    pub peer_netns: Option<BorrowedFd<'a>>,
    /// MTU of both ends.
    pub mtu: Option<u32>,
    /// MAC address of the local end.
    pub mac: Option<[u8; 6]>,
    /// MAC address of the peer end.
    pub peer_mac: Option<[u8; 6]>,
    /// Master (bridge) of the local end, set at creation (`IFLA_MASTER`).
    pub master: Option<u32>,
    /// Bring the local end up at creation (`IFF_UP`).
    pub up: bool,
}

impl<'a> VethSpec<'a> {
    /// A pair with both ends in the handle's namespace and nothing else set.
    pub fn new(name: &'a str, peer_name: &'a str) -> VethSpec<'a> {
        VethSpec { name, peer_name, peer_netns: None, mtu: None, mac: None, peer_mac: None, master: None, up: false }
    }
}

/// `IFLA_EXT_MASK` asking the kernel to leave statistics out of link replies.
fn skip_stats() -> LinkAttribute {
    LinkAttribute::ExtMask(vec![LinkExtentMask::SkipStats])
}

/// An `AF_UNSPEC` link message for `index`.
pub(crate) fn link_msg(index: u32) -> LinkMessage {
    let mut msg = LinkMessage::default();
    msg.header.index = index;
    msg
}

/// `RTM_NEWLINK` creating the veth pair of `spec`.
///
/// Each end asks for one transmit and one receive queue, the one real queue of each that the
/// kernel's default gives it too. Without the counts the kernel allocates a queue per possible CPU,
/// registers each with its sysfs directory, and then (`veth_init_queues`) lowers the real counts
/// to one on the registered device, which waits out an expedited RCU grace period per end while
/// holding RTNL, a wait that every other RTNL user (parallel ADDs and DELs, the kernel's link-state
/// worker) sits behind. What differs from the default: `ethtool -L` cannot raise the channels.
pub(crate) fn veth_message(spec: &VethSpec<'_>) -> RouteNetlinkMessage {
    let mut peer = LinkMessage::default();
    peer.attributes.push(LinkAttribute::IfName(spec.peer_name.to_string()));
    if let Some(mtu) = spec.mtu {
        peer.attributes.push(LinkAttribute::Mtu(mtu));
    }
    if let Some(mac) = spec.peer_mac {
        peer.attributes.push(LinkAttribute::Address(mac.to_vec()));
    }
    if let Some(fd) = spec.peer_netns {
        peer.attributes.push(LinkAttribute::NetNsFd(fd.as_raw_fd()));
    }
    peer.attributes.extend(single_queue());

    let mut msg = LinkMessage::default();
    if spec.up {
        msg.header.flags = LinkFlags::Up;
        msg.header.change_mask = LinkFlags::Up;
    }
    msg.attributes.push(LinkAttribute::IfName(spec.name.to_string()));
    if let Some(mtu) = spec.mtu {
        msg.attributes.push(LinkAttribute::Mtu(mtu));
    }
    if let Some(mac) = spec.mac {
        msg.attributes.push(LinkAttribute::Address(mac.to_vec()));
    }
    if let Some(master) = spec.master {
        msg.attributes.push(LinkAttribute::Controller(master));
    }
    msg.attributes.extend(single_queue());
    msg.attributes.push(LinkAttribute::LinkInfo(vec![
        LinkInfo::Kind(InfoKind::Veth),
        LinkInfo::Data(InfoData::Veth(InfoVeth::Peer(peer))),
    ]));
    RouteNetlinkMessage::NewLink(msg)
}

/// One transmit and one receive queue (see [`veth_message`]).
fn single_queue() -> [LinkAttribute; 2] {
    [LinkAttribute::NumTxQueues(1), LinkAttribute::NumRxQueues(1)]
}

/// A link dump request without statistics, of the ports of `master` if given.
fn links_request(master: Option<u32>) -> Vec<u8> {
    let mut req = LinkMessage::default();
    req.attributes.push(skip_stats());
    if let Some(m) = master {
        req.attributes.push(LinkAttribute::Controller(m));
    }
    encode(RouteNetlinkMessage::GetLink(req), 0, 0)
}

impl Netlink {
    /// Every link of the namespace.
    pub fn links(&mut self) -> Result<Vec<Link>, NlError> {
        self.sock.dump_raw(links_request(None), link_from_raw).map_err(|e| e.with_op("list links"))
    }

    /// Whether `master` has a port other than `except`. Asked on a socket of its own and read
    /// only until the first such port (see [`Socket::dump_finds`]): a bridge with hundreds of
    /// ports costs a buffer of them, not a dump of every port with all its attributes. (The
    /// kernel filters the dump by master: strict dump checking.)
    pub fn has_ports(&mut self, master: u32, except: Option<u32>) -> Result<bool, NlError> {
        Socket::open()
            .and_then(|sock| {
                sock.dump_finds(links_request(Some(master)), |raw| {
                    Ok(link_from_raw(raw)?.is_some_and(|l| l.master == Some(master) && Some(l.index) != except))
                })
            })
            .map_err(|e| e.with_op(format!("list ports of link index {master}")))
    }

    /// The link called `name`, or `None` if there is none.
    pub fn link_by_name(&mut self, name: &str) -> Result<Option<Link>, NlError> {
        let op = || format!("get link {name:?}");
        check_ifname(&op(), name)?;
        let mut req = LinkMessage::default();
        req.attributes.push(LinkAttribute::IfName(name.to_string()));
        req.attributes.push(skip_stats());
        self.get_link(req).map_err(|e| e.with_op(op()))
    }

    /// The link with index `index`, or `None` if there is none.
    pub fn link_by_index(&mut self, index: u32) -> Result<Option<Link>, NlError> {
        let mut req = link_msg(index);
        req.attributes.push(skip_stats());
        self.get_link(req).map_err(|e| e.with_op(format!("get link index {index}")))
    }

    /// The name of link `index`, or `None` if there is none: the `SIOCGIFNAME` ioctl, which
    /// copies the name and nothing else (a GETLINK reply carries every attribute of the link).
    pub fn link_name(&mut self, index: u32) -> Result<Option<String>, NlError> {
        let Ok(ifindex) = libc::c_int::try_from(index) else { return Ok(None) };
        // SAFETY: an all-zero ifreq is valid; the kernel reads ifr_ifindex and writes ifr_name.
        let mut ifr: libc::ifreq = unsafe { std::mem::zeroed() };
        ifr.ifr_ifru.ifru_ifindex = ifindex;
        // SAFETY: SIOCGIFNAME on a socket of this namespace with a valid ifreq.
        let r = unsafe { libc::ioctl(self.sock.raw_fd(), libc::SIOCGIFNAME as _, &mut ifr) };
        if r < 0 {
            let e = std::io::Error::last_os_error();
            return match e.raw_os_error() {
                Some(libc::ENODEV) => Ok(None),
                _ => Err(NlError::io(e).with_op(format!("get the name of link index {index}"))),
            };
        }
        // SAFETY: the kernel wrote a NUL-terminated name of at most IFNAMSIZ bytes.
        let name = unsafe { std::ffi::CStr::from_ptr(ifr.ifr_name.as_ptr()) };
        Ok(Some(name.to_string_lossy().into_owned()))
    }

    fn get_link(&mut self, req: LinkMessage) -> Result<Option<Link>, NlError> {
        match self.sock.request_raw(encode(RouteNetlinkMessage::GetLink(req), 0, 0), 0, link_from_raw) {
            Ok(links) => Ok(links.into_iter().next()),
            Err(e) if e.is_not_found() => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Create a veth pair. `EEXIST` (either name taken) is returned as an error for the caller to
    /// handle, e.g. by drawing another [`super::random_veth_name`]. Returns the new local end as
    /// the kernel reported it at creation (before its master was set), when the kernel echoes
    /// it (6.3 and later); `None` otherwise.
    pub fn create_veth(&mut self, spec: &VethSpec<'_>) -> Result<Option<Link>, NlError> {
        let op = || {
            let mut op = format!("add veth {:?} (peer {:?}", spec.name, spec.peer_name);
            if spec.peer_netns.is_some() {
                op.push_str(" in another netns");
            }
            op.push(')');
            op
        };
        check_ifname(&op(), spec.name)?;
        check_ifname(&op(), spec.peer_name)?;
        if spec.peer_netns.is_none() && spec.name == spec.peer_name {
            return Err(NlError::invalid(op(), "both ends have the same name"));
        }
        // NLM_F_ECHO: kernels since 6.3 send the new local end back, which spares a GETLINK. (A
        // GETLINK of a new bridge port is not free: it first runs the port's pending link-state
        // event, and with it the bridge's port state selection over every port.)
        let links = self.sock.request_raw(encode(veth_message(spec), 0, 0), NLM_F_CREATE | NLM_F_EXCL | NLM_F_ECHO, link_from_raw).map_err(|e| {
            let mut e = e.with_op(op());
            if let (Some(master), Some(libc::ENODEV | libc::EINVAL)) = (spec.master, e.errno) {
                e.reason.push_str(&format!(" (master index {master})"));
            }
            e
        })?;
        Ok(links.into_iter().find(|l| l.name == spec.name))
    }

    /// Delete a link (deleting one end of a veth deletes both).
    pub fn delete_link(&mut self, index: u32) -> Result<(), NlError> {
        match self.sock.request(RouteNetlinkMessage::DelLink(link_msg(index)), 0) {
            Ok(_) => Ok(()),
            Err(e) => Err(e.with_op(format!("delete link {}", self.link_label(index)))),
        }
    }

    /// Set per-link IPv4 settings (`net.ipv4.conf.<link>.*`), given as `IPV4_DEVCONF_*` ids and
    /// values, in one `RTM_SETLINK`. The same settings as the sysctl files, without the path
    /// walk through `/proc/sys`, whose directory entries for a name every namespace has (`eth0`)
    /// share one hash chain across all namespaces.
    pub fn set_ipv4_conf(&mut self, index: u32, settings: &[(u16, u32)]) -> Result<(), NlError> {
        self.sock
            .request_raw(ipv4_conf_message(index, settings), 0, |_| Ok(None::<()>))
            .map(drop)
            .map_err(|e| e.with_op(ipv4_conf_op(index)))
    }

    /// The per-link IPv4 setting `id` (an `IPV4_DEVCONF_*`, `net.ipv4.conf.<link>.*`) of link
    /// `index`, read from the link itself (`RTM_GETLINK`), without the path walk through
    /// `/proc/sys/net/ipv4`, whose entry in the host namespace sits behind one for every namespace
    /// in which a `net.ipv4` key was looked up (runtimes set one in every pod). `None` when the
    /// link does not exist or reports no IPv4 settings.
    pub fn ipv4_conf(&mut self, index: u32, id: u16) -> Result<Option<u32>, NlError> {
        let mut req = link_msg(index);
        req.attributes.push(skip_stats());
        match self.sock.request_raw(encode(RouteNetlinkMessage::GetLink(req), 0, 0), 0, |raw| inet_conf_value(raw, id)) {
            Ok(values) => Ok(values.into_iter().next()),
            Err(e) if e.is_not_found() => Ok(None),
            Err(e) => Err(e.with_op(format!("get IPv4 settings of link index {index}"))),
        }
    }

    /// Give the link no IPv6 link-local address (`addrgenmode none`); the link keeps IPv6 (its
    /// multicast route, addresses added by hand). Set before the link gets a carrier, this spares
    /// the kernel the link-local address with its duplicate address detection, multicast reports
    /// and router solicitations, and the `fe80::/64` routes; unlike the `disable_ipv6` sysctl,
    /// which takes RTNL with `rtnl_trylock` and restarts the system call while another holds it,
    /// this is an ordinary RTNL request. A kernel without IPv6 has nothing to stop: `Ok`.
    pub fn set_ipv6_no_link_local(&mut self, index: u32) -> Result<(), NlError> {
        let mut msg = link_msg(index);
        msg.attributes.push(LinkAttribute::AfSpecUnspec(vec![AfSpecUnspec::Inet6(vec![AfSpecInet6::AddrGenMode(
            In6AddrGenMode::None,
        )])]));
        match self.set_link(msg, index, "addrgenmode none") {
            Err(e) if e.errno() == Some(libc::EAFNOSUPPORT) => Ok(()),
            r => r,
        }
    }

    /// Bring a link up.
    pub fn set_up(&mut self, index: u32) -> Result<(), NlError> {
        self.set_flag(index, LinkFlags::Up, true, "up")
    }

    /// Bring a link down.
    pub fn set_down(&mut self, index: u32) -> Result<(), NlError> {
        self.set_flag(index, LinkFlags::Up, false, "down")
    }

    /// Turn promiscuous mode on or off.
    pub fn set_promisc(&mut self, index: u32, on: bool) -> Result<(), NlError> {
        self.set_flag(index, LinkFlags::Promisc, on, if on { "promisc on" } else { "promisc off" })
    }

    /// Set the MTU.
    pub fn set_mtu(&mut self, index: u32, mtu: u32) -> Result<(), NlError> {
        let mut msg = link_msg(index);
        msg.attributes.push(LinkAttribute::Mtu(mtu));
        self.set_link(msg, index, &format!("mtu {mtu}"))
    }

    /// Set the hardware address.
    pub fn set_mac(&mut self, index: u32, mac: [u8; 6]) -> Result<(), NlError> {
        let mut msg = link_msg(index);
        msg.attributes.push(LinkAttribute::Address(mac.to_vec()));
        self.set_link(msg, index, &format!("address {}", format_mac(&mac)))
    }

    /// Enslave the link to `master` (a bridge), or release it from its master with `None`.
    pub fn set_master(&mut self, index: u32, master: Option<u32>) -> Result<(), NlError> {
        let mut msg = link_msg(index);
        msg.attributes.push(LinkAttribute::Controller(master.unwrap_or(0)));
        let what = match master {
            Some(m) => format!("master index {m}"),
            None => "nomaster".to_string(),
        };
        self.set_link(msg, index, &what)
    }

    fn set_flag(&mut self, index: u32, flag: LinkFlags, on: bool, what: &str) -> Result<(), NlError> {
        self.set_link(flag_message(index, flag, on), index, what)
    }

    /// Send `RTM_SETLINK`; on error name the link and the change (`set link "eth0" (index 3) mtu 9000`).
    fn set_link(&mut self, msg: LinkMessage, index: u32, what: &str) -> Result<(), NlError> {
        match self.sock.request(RouteNetlinkMessage::SetLink(msg), 0) {
            Ok(_) => Ok(()),
            Err(e) => Err(e.with_op(set_link_op(&self.link_label(index), what))),
        }
    }
}

/// How a change `what` of the link `label` names itself in its error (`set link "eth0" (index 3) up`).
pub(crate) fn set_link_op(label: &str, what: &str) -> String {
    format!("set link {label} {what}")
}

/// The `RTM_SETLINK` message turning `flag` of link `index` on or off.
pub(crate) fn flag_message(index: u32, flag: LinkFlags, on: bool) -> LinkMessage {
    let mut msg = link_msg(index);
    msg.header.change_mask = flag;
    if on {
        msg.header.flags = flag;
    }
    msg
}

/// `RTM_SETLINK` of per-link IPv4 settings (see [`Netlink::set_ipv4_conf`]).
pub(crate) fn ipv4_conf_message(index: u32, settings: &[(u16, u32)]) -> Vec<u8> {
    let mut attrs = Vec::new();
    put_nested(&mut attrs, IFLA_AF_SPEC, |af| {
        put_nested(af, libc::AF_INET as u16, |inet| {
            put_nested(inet, IFLA_INET_CONF, |conf| {
                for (id, value) in settings {
                    put_attr(conf, *id, &value.to_ne_bytes());
                }
            })
        })
    });
    // struct ifinfomsg: family, pad, type, index, flags, change
    let mut ifinfomsg = [0u8; IFINFOMSG_LEN];
    ifinfomsg[4..8].copy_from_slice(&(index as i32).to_ne_bytes());
    raw_message(RTM_SETLINK, &ifinfomsg, &attrs)
}

/// How a change of per-link IPv4 settings names itself in its error.
pub(crate) fn ipv4_conf_op(index: u32) -> String {
    format!("set IPv4 settings of link index {index}")
}

/// Setting `id` in the `IFLA_INET_CONF` array (one `u32` per `IPV4_DEVCONF_*`, from id 1) of the
/// `AF_INET` part of `IFLA_AF_SPEC` in `raw`, a whole `RTM_NEWLINK` message.
fn inet_conf_value(raw: &[u8], id: u16) -> Result<Option<u32>, NlError> {
    use super::socket::{find_attr, u16_at};
    let Some(attrs) = raw.get(HEADER_LEN + IFINFOMSG_LEN..) else { return Ok(None) };
    if u16_at(raw, 4) != RTM_NEWLINK {
        return Ok(None);
    }
    let Some(af) = find_attr(attrs, IFLA_AF_SPEC, "link")? else { return Ok(None) };
    let Some(inet) = find_attr(af, libc::AF_INET as u16, "IFLA_AF_SPEC")? else { return Ok(None) };
    let Some(conf) = find_attr(inet, IFLA_INET_CONF, "AF_INET")? else { return Ok(None) };
    let at = (usize::from(id).saturating_sub(1)) * 4;
    Ok(conf.get(at..at + 4).filter(|_| id > 0).map(|b| u32::from_ne_bytes([b[0], b[1], b[2], b[3]])))
}

#[cfg(test)]
mod tests {
    use super::super::socket::encode;
    use super::*;
    use netlink_packet_core::NLM_F_REQUEST;
    use netlink_packet_route::link::State;

    /// Find the attribute `kind` at the top level of an attribute stream.
    fn find_attr(mut attrs: &[u8], kind: u16) -> Option<&[u8]> {
        while attrs.len() >= 4 {
            let len = u16::from_ne_bytes([attrs[0], attrs[1]]) as usize;
            let k = u16::from_ne_bytes([attrs[2], attrs[3]]) & 0x3fff;
            if k == kind {
                return Some(&attrs[4..len]);
            }
            attrs = attrs.get((len + 3) & !3..)?;
        }
        None
    }

    /// An `RTM_NEWLINK` whose `AF_INET` settings hold `values` (ids 1, 2, ...), after an
    /// unrelated attribute and an `AF_INET6` part.
    fn newlink_with_inet_conf(values: &[u32]) -> Vec<u8> {
        let mut attrs = Vec::new();
        put_attr(&mut attrs, 4, &1500u32.to_ne_bytes()); // IFLA_MTU
        put_nested(&mut attrs, IFLA_AF_SPEC, |af| {
            put_nested(af, libc::AF_INET6 as u16, |v6| put_attr(v6, 8, &[1])); // IFLA_INET6_ADDR_GEN_MODE
            put_nested(af, libc::AF_INET as u16, |inet| {
                let conf: Vec<u8> = values.iter().flat_map(|v| v.to_ne_bytes()).collect();
                put_attr(inet, IFLA_INET_CONF, &conf);
            })
        });
        raw_message(RTM_NEWLINK, &[0u8; IFINFOMSG_LEN], &attrs)
    }

    #[test]
    fn inet_conf_values_by_id() {
        let values: Vec<u32> = (1..=30).map(|i| i * 10).collect();
        let raw = newlink_with_inet_conf(&values);
        assert_eq!(inet_conf_value(&raw, 1).unwrap(), Some(10));
        assert_eq!(inet_conf_value(&raw, IPV4_DEVCONF_ARP_NOTIFY).unwrap(), Some(220));
        assert_eq!(inet_conf_value(&raw, IPV4_DEVCONF_ROUTE_LOCALNET).unwrap(), Some(260));
        assert_eq!(inet_conf_value(&raw, 31).unwrap(), None, "beyond the array");
        assert_eq!(inet_conf_value(&raw, 0).unwrap(), None, "ids start at 1");
        // no AF_INET part, or another message
        assert_eq!(inet_conf_value(&raw_message(RTM_NEWLINK, &[0u8; IFINFOMSG_LEN], &[]), 1).unwrap(), None);
        assert_eq!(inet_conf_value(&raw_message(RTM_DELLINK, &[0u8; IFINFOMSG_LEN], &[]), 1).unwrap(), None);
    }

    #[test]
    fn veth_message_puts_netns_fd_in_peer() {
        let file = std::fs::File::open("/dev/null").expect("open /dev/null");
        let fd = std::os::fd::AsFd::as_fd(&file);
        let spec = VethSpec {
            peer_netns: Some(fd),
            master: Some(9),
            up: true,
            mtu: Some(1400),
            ..VethSpec::new("veth1a2b3c4d", "eth0")
        };
        let bytes = encode(veth_message(&spec), NLM_F_REQUEST, 1);
        assert_eq!(u16::from_ne_bytes([bytes[4], bytes[5]]), libc::RTM_NEWLINK);
        let ifi = &bytes[16..32];
        assert_eq!(u32::from_ne_bytes(ifi[8..12].try_into().unwrap()), libc::IFF_UP as u32); // flags
        assert_eq!(u32::from_ne_bytes(ifi[12..16].try_into().unwrap()), libc::IFF_UP as u32); // change
        let attrs = &bytes[32..];
        assert_eq!(find_attr(attrs, libc::IFLA_IFNAME).unwrap(), b"veth1a2b3c4d\0");
        assert_eq!(find_attr(attrs, libc::IFLA_MASTER).unwrap(), 9u32.to_ne_bytes());
        assert!(find_attr(attrs, libc::IFLA_NET_NS_FD).is_none(), "netns fd belongs to the peer only");
        assert_eq!(find_attr(attrs, libc::IFLA_NUM_TX_QUEUES).unwrap(), 1u32.to_ne_bytes());
        assert_eq!(find_attr(attrs, libc::IFLA_NUM_RX_QUEUES).unwrap(), 1u32.to_ne_bytes());
        let info = find_attr(attrs, libc::IFLA_LINKINFO).unwrap();
        assert_eq!(find_attr(info, libc::IFLA_INFO_KIND).unwrap(), b"veth\0");
        let data = find_attr(info, libc::IFLA_INFO_DATA).unwrap();
        let peer = find_attr(data, 1 /* VETH_INFO_PEER */).unwrap();
        let peer_attrs = &peer[16..]; // after the peer's ifinfomsg
        assert_eq!(find_attr(peer_attrs, libc::IFLA_IFNAME).unwrap(), b"eth0\0");
        assert_eq!(find_attr(peer_attrs, libc::IFLA_MTU).unwrap(), 1400u32.to_ne_bytes());
        assert_eq!(find_attr(peer_attrs, libc::IFLA_NUM_TX_QUEUES).unwrap(), 1u32.to_ne_bytes());
        assert_eq!(find_attr(peer_attrs, libc::IFLA_NUM_RX_QUEUES).unwrap(), 1u32.to_ne_bytes());
        assert_eq!(
            find_attr(peer_attrs, libc::IFLA_NET_NS_FD).unwrap(),
            (std::os::fd::AsRawFd::as_raw_fd(&file) as u32).to_ne_bytes()
        );
    }

    /// A link message as the kernel sends it (built and serialized by netlink-packet-route),
    /// read back by the hand-written parser.
    #[test]
    fn link_from_raw_reads_what_a_link_holds() {
        let mut msg = LinkMessage::default();
        msg.header.index = 7;
        msg.header.flags = LinkFlags::Up | LinkFlags::Promisc | LinkFlags::Broadcast;
        msg.attributes = vec![
            LinkAttribute::IfName("veth1234abcd".into()),
            LinkAttribute::Address(vec![0x02, 0x42, 0xac, 0x11, 0x00, 0x02]),
            LinkAttribute::Mtu(1450),
            LinkAttribute::OperState(State::Up),
            LinkAttribute::Controller(3),
            LinkAttribute::Link(9),
            LinkAttribute::LinkNetNsId(2),
            LinkAttribute::LinkInfo(vec![LinkInfo::Kind(InfoKind::Veth)]),
        ];
        let raw = encode(RouteNetlinkMessage::NewLink(msg), 0, 1);
        let link = link_from_raw(&raw).expect("parse").expect("a link");
        assert_eq!(
            link,
            Link {
                index: 7,
                name: "veth1234abcd".into(),
                kind: Some("veth".into()),
                mac: Some([0x02, 0x42, 0xac, 0x11, 0x00, 0x02]),
                mtu: 1450,
                up: true,
                oper_up: true,
                master: Some(3),
                link: Some(9),
                link_netnsid: Some(2),
                promisc: true,
            }
        );
        // a link without the optional parts; master 0 means none
        let mut msg = LinkMessage::default();
        msg.header.index = 1;
        msg.attributes = vec![LinkAttribute::IfName("lo".into()), LinkAttribute::Controller(0), LinkAttribute::OperState(State::Unknown)];
        let lo = link_from_raw(&encode(RouteNetlinkMessage::NewLink(msg), 0, 1)).expect("parse").expect("a link");
        assert_eq!((lo.index, lo.name.as_str(), lo.kind, lo.mac, lo.master, lo.up, lo.oper_up), (1, "lo", None, None, None, false, false));
        // other messages are not links; a truncated one is an error
        let del = encode(RouteNetlinkMessage::DelLink(LinkMessage::default()), 0, 1);
        assert_eq!(link_from_raw(&del).expect("parse"), None);
        let mut short = raw_header(RTM_NEWLINK);
        short.extend_from_slice(&[0; 8]);
        assert!(link_from_raw(&short).is_err());
    }

    fn raw_header(kind: u16) -> Vec<u8> {
        let mut h = vec![0u8; HEADER_LEN];
        h[4..6].copy_from_slice(&kind.to_ne_bytes());
        h
    }
}
