//! Bridges: creation, VLAN filtering, port flags (hairpin, isolation) and port VLANs.
//!
//! Port flags and VLANs are `RTM_SETLINK`/`RTM_DELLINK` requests in the `AF_BRIDGE` family, handled
//! by the port's master. Requests that need bridge VLAN filtering are marked with the feature
//! [`VLAN_FILTERING`]: on a kernel built without it they fail with `EOPNOTSUPP` (or `EINVAL`), and
//! the [`NlError`] then converts into [`crate::CniError::UnsupportedKernel`].

use netlink_packet_core::{DefaultNla, NLM_F_CREATE, NLM_F_EXCL};
use netlink_packet_route::link::{
    AfSpecBridge, BridgeVlanInfo, BridgeVlanInfoFlags, InfoBridge, InfoBridgePort, InfoData, InfoKind, InfoPortData,
    LinkAttribute, LinkInfo, LinkMessage, LinkProtoInfoBridge,
};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};

use super::link::link_msg;
use super::{check_ifname, Netlink, NlError};

/// The feature name carried by errors of VLAN-filtering requests.
pub const VLAN_FILTERING: &str = "bridge VLAN filtering";

/// `IFLA_BRPORT_MODE`: hairpin mode of a bridge port.
const IFLA_BRPORT_MODE: u16 = 4;
/// `IFLA_BRPORT_ISOLATED`: an isolated port only talks to non-isolated ports.
const IFLA_BRPORT_ISOLATED: u16 = 33;

/// Bridge port flags. In [`Netlink::set_brport`], `None` leaves a flag unchanged; from
/// [`Netlink::brport`] both are `Some`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BrPortFlags {
    /// Hairpin mode: frames may be sent back out of the port they came in on.
    pub hairpin: Option<bool>,
    /// Port isolation (`IFLA_BRPORT_ISOLATED`).
    pub isolated: Option<bool>,
}

/// `RTM_NEWLINK` creating a bridge.
pub(crate) fn bridge_message(name: &str, mtu: Option<u32>, vlan_filtering: bool) -> RouteNetlinkMessage {
    let mut msg = LinkMessage::default();
    msg.attributes.push(LinkAttribute::IfName(name.to_string()));
    if let Some(mtu) = mtu {
        msg.attributes.push(LinkAttribute::Mtu(mtu));
    }
    let mut info = vec![LinkInfo::Kind(InfoKind::Bridge)];
    if vlan_filtering {
        // Sent only when asked for: kernels without VLAN filtering refuse the attribute outright.
        info.push(LinkInfo::Data(InfoData::Bridge(vec![InfoBridge::VlanFiltering(true)])));
    }
    msg.attributes.push(LinkAttribute::LinkInfo(info));
    RouteNetlinkMessage::NewLink(msg)
}

/// `RTM_SETLINK` (`AF_BRIDGE`) setting bridge port flags in `IFLA_PROTINFO`.
pub(crate) fn brport_message(index: u32, flags: &BrPortFlags) -> RouteNetlinkMessage {
    let mut msg = bridge_family_msg(index);
    let mut protinfo = Vec::new();
    if let Some(on) = flags.hairpin {
        protinfo.push(LinkProtoInfoBridge::Other(DefaultNla::new(IFLA_BRPORT_MODE, vec![u8::from(on)])));
    }
    if let Some(on) = flags.isolated {
        protinfo.push(LinkProtoInfoBridge::Other(DefaultNla::new(IFLA_BRPORT_ISOLATED, vec![u8::from(on)])));
    }
    // The crate emits IFLA_PROTINFO with NLA_F_NESTED, which the bridge requires to read port flags.
    msg.attributes.push(LinkAttribute::ProtoInfoBridge(protinfo));
    RouteNetlinkMessage::SetLink(msg)
}

/// A port VLAN change: `RTM_SETLINK` (add) or `RTM_DELLINK` (delete) in the `AF_BRIDGE` family,
/// carrying `IFLA_AF_SPEC { IFLA_BRIDGE_VLAN_INFO { flags, vid } }`.
pub(crate) fn vlan_message(add: bool, port_index: u32, vid: u16, pvid: bool, untagged: bool) -> RouteNetlinkMessage {
    let mut flags = BridgeVlanInfoFlags::empty();
    if pvid {
        flags |= BridgeVlanInfoFlags::Pvid;
    }
    if untagged {
        flags |= BridgeVlanInfoFlags::Untagged;
    }
    let mut msg = bridge_family_msg(port_index);
    msg.attributes.push(LinkAttribute::AfSpecBridge(vec![AfSpecBridge::VlanInfo(BridgeVlanInfo { flags, vid })]));
    if add {
        RouteNetlinkMessage::SetLink(msg)
    } else {
        RouteNetlinkMessage::DelLink(msg)
    }
}

/// `RTM_NEWLINK` changing a bridge's `IFLA_BR_VLAN_FILTERING`.
pub(crate) fn vlan_filtering_message(bridge_index: u32, on: bool) -> RouteNetlinkMessage {
    let mut msg = link_msg(bridge_index);
    msg.attributes.push(LinkAttribute::LinkInfo(vec![
        LinkInfo::Kind(InfoKind::Bridge),
        LinkInfo::Data(InfoData::Bridge(vec![InfoBridge::VlanFiltering(on)])),
    ]));
    RouteNetlinkMessage::NewLink(msg)
}

fn bridge_family_msg(index: u32) -> LinkMessage {
    let mut msg = link_msg(index);
    msg.header.interface_family = AddressFamily::Bridge;
    msg
}

fn check_vid(op: &str, vid: u16) -> Result<(), NlError> {
    if (1..=4094).contains(&vid) {
        Ok(())
    } else {
        Err(NlError::invalid(op, format!("VLAN id {vid} is outside 1-4094")))
    }
}

impl Netlink {
    /// Create a bridge, with `mtu` and VLAN filtering if asked. It is left down. `EEXIST` is
    /// returned as an error: the caller decides whether an existing link is acceptable (and
    /// checks that it is a bridge). With `vlan_filtering`, the error is marked [`VLAN_FILTERING`].
    pub fn create_bridge(&mut self, name: &str, mtu: Option<u32>, vlan_filtering: bool) -> Result<(), NlError> {
        let op = || format!("add bridge {name:?}");
        check_ifname(&op(), name)?;
        self.sock.request(bridge_message(name, mtu, vlan_filtering), NLM_F_CREATE | NLM_F_EXCL).map(drop).map_err(|e| {
            let e = e.with_op(op());
            if vlan_filtering {
                e.with_feature(VLAN_FILTERING)
            } else {
                e
            }
        })
    }

    /// Turn VLAN filtering on or off on an existing bridge. Errors are marked [`VLAN_FILTERING`].
    pub fn set_bridge_vlan_filtering(&mut self, bridge_index: u32, on: bool) -> Result<(), NlError> {
        match self.sock.request(vlan_filtering_message(bridge_index, on), 0) {
            Ok(_) => Ok(()),
            Err(e) => {
                let what = if on { "on" } else { "off" };
                let op = format!("set bridge {} vlan_filtering {what}", self.link_label(bridge_index));
                Err(e.with_op(op).with_feature(VLAN_FILTERING))
            }
        }
    }

    /// Set bridge port flags (hairpin, isolated) on an enslaved link; `None` fields are left
    /// unchanged. Fails with `EOPNOTSUPP` when the link is not a bridge port.
    pub fn set_brport(&mut self, index: u32, flags: &BrPortFlags) -> Result<(), NlError> {
        if flags.hairpin.is_none() && flags.isolated.is_none() {
            return Ok(());
        }
        match self.sock.request(brport_message(index, flags), 0) {
            Ok(_) => Ok(()),
            Err(e) => {
                let mut what = String::new();
                if let Some(on) = flags.hairpin {
                    what.push_str(if on { " hairpin on" } else { " hairpin off" });
                }
                if let Some(on) = flags.isolated {
                    what.push_str(if on { " isolated on" } else { " isolated off" });
                }
                let op = format!("set bridge port {}{what}", self.link_label(index));
                Err(self.explain_not_port(e.with_op(op), index))
            }
        }
    }

    /// The bridge port flags of `index`, or `None` when it is not a bridge port. Read from the
    /// port data the kernel attaches to the link (`IFLA_INFO_SLAVE_DATA`).
    pub fn brport(&mut self, index: u32) -> Result<Option<BrPortFlags>, NlError> {
        let op = || format!("get bridge port index {index}");
        let msgs = self.sock.request(RouteNetlinkMessage::GetLink(link_msg(index)), 0).map_err(|e| e.with_op(op()))?;
        let infos = msgs.iter().find_map(|m| match m {
            RouteNetlinkMessage::NewLink(l) => l.attributes.iter().find_map(|a| match a {
                LinkAttribute::LinkInfo(infos) => Some(infos),
                _ => None,
            }),
            _ => None,
        });
        let Some(port) = infos.and_then(|infos| {
            infos.iter().find_map(|i| match i {
                LinkInfo::PortData(InfoPortData::BridgePort(port)) => Some(port),
                _ => None,
            })
        }) else {
            return Ok(None);
        };
        let mut flags = BrPortFlags { hairpin: Some(false), isolated: Some(false) };
        for attr in port {
            match attr {
                InfoBridgePort::HairpinMode(on) => flags.hairpin = Some(*on),
                InfoBridgePort::Isolated(on) => flags.isolated = Some(*on),
                _ => {}
            }
        }
        Ok(Some(flags))
    }

    /// Add VLAN `vid` to bridge port `port_index`: `pvid` makes it the VLAN of untagged ingress
    /// frames, `untagged` sends its frames out untagged. Needs VLAN filtering: on a kernel without
    /// it the error is marked [`VLAN_FILTERING`] (see the module documentation).
    pub fn bridge_vlan_add(&mut self, port_index: u32, vid: u16, pvid: bool, untagged: bool) -> Result<(), NlError> {
        check_vid(&format!("add vlan {vid} to bridge port index {port_index}"), vid)?;
        match self.sock.request(vlan_message(true, port_index, vid, pvid, untagged), 0) {
            Ok(_) => Ok(()),
            Err(e) => {
                let mut flags = String::new();
                if pvid {
                    flags.push_str(" pvid");
                }
                if untagged {
                    flags.push_str(" untagged");
                }
                let op = format!("add vlan {vid}{flags} to bridge port {}", self.link_label(port_index));
                Err(self.explain_not_port(e.with_op(op).with_feature(VLAN_FILTERING), port_index))
            }
        }
    }

    /// Remove VLAN `vid` from bridge port `port_index`. Errors are marked like
    /// [`Netlink::bridge_vlan_add`]'s.
    pub fn bridge_vlan_del(&mut self, port_index: u32, vid: u16) -> Result<(), NlError> {
        check_vid(&format!("delete vlan {vid} from bridge port index {port_index}"), vid)?;
        match self.sock.request(vlan_message(false, port_index, vid, false, false), 0) {
            Ok(_) => Ok(()),
            Err(e) => {
                let op = format!("delete vlan {vid} from bridge port {}", self.link_label(port_index));
                Err(self.explain_not_port(e.with_op(op).with_feature(VLAN_FILTERING), port_index))
            }
        }
    }

    /// The bridge answers `EOPNOTSUPP` for a link without a master: say so, and do not blame the
    /// kernel's feature set for it.
    fn explain_not_port(&mut self, mut e: NlError, index: u32) -> NlError {
        if e.errno == Some(libc::EOPNOTSUPP) {
            if let Ok(Some(link)) = self.link_by_index(index) {
                if link.master.is_none() {
                    e.reason.push_str(" (the link is not a bridge port)");
                    e.feature = None;
                }
            }
        }
        e
    }
}

#[cfg(test)]
mod tests {
    use super::super::socket::encode;
    use super::*;
    use netlink_packet_core::{NLM_F_ACK, NLM_F_REQUEST};

    /// The exact bytes of a VLAN request (this machine's kernel lacks VLAN filtering, so the
    /// message is checked here rather than against the kernel).
    #[test]
    fn vlan_add_message_bytes() {
        let bytes = encode(vlan_message(true, 7, 100, true, true), NLM_F_REQUEST | NLM_F_ACK, 42);
        let mut want = Vec::new();
        // nlmsghdr: len 44, RTM_SETLINK, REQUEST|ACK, seq 42, port 0
        want.extend_from_slice(&44u32.to_ne_bytes());
        want.extend_from_slice(&19u16.to_ne_bytes());
        want.extend_from_slice(&5u16.to_ne_bytes());
        want.extend_from_slice(&42u32.to_ne_bytes());
        want.extend_from_slice(&0u32.to_ne_bytes());
        // ifinfomsg: AF_BRIDGE (7), pad, type 0, index 7, flags 0, change 0
        want.extend_from_slice(&[7, 0, 0, 0]);
        want.extend_from_slice(&7u32.to_ne_bytes());
        want.extend_from_slice(&0u32.to_ne_bytes());
        want.extend_from_slice(&0u32.to_ne_bytes());
        // IFLA_AF_SPEC (26), len 12 { IFLA_BRIDGE_VLAN_INFO (2), len 8 { flags PVID|UNTAGGED = 6, vid 100 } }
        want.extend_from_slice(&12u16.to_ne_bytes());
        want.extend_from_slice(&26u16.to_ne_bytes());
        want.extend_from_slice(&8u16.to_ne_bytes());
        want.extend_from_slice(&2u16.to_ne_bytes());
        want.extend_from_slice(&6u16.to_ne_bytes());
        want.extend_from_slice(&100u16.to_ne_bytes());
        assert_eq!(bytes, want);
    }

    #[test]
    fn vlan_del_message_is_dellink_without_flags() {
        let bytes = encode(vlan_message(false, 7, 4094, false, false), NLM_F_REQUEST | NLM_F_ACK, 1);
        assert_eq!(u16::from_ne_bytes([bytes[4], bytes[5]]), 17); // RTM_DELLINK
        assert_eq!(bytes[16], 7); // AF_BRIDGE
        assert_eq!(bytes.len(), 44);
        assert_eq!(&bytes[40..42], &0u16.to_ne_bytes()); // no flags
        assert_eq!(&bytes[42..44], &4094u16.to_ne_bytes());
    }

    #[test]
    fn brport_message_bytes() {
        let flags = BrPortFlags { hairpin: Some(true), isolated: Some(false) };
        let bytes = encode(brport_message(5, &flags), NLM_F_REQUEST | NLM_F_ACK, 1);
        assert_eq!(u16::from_ne_bytes([bytes[4], bytes[5]]), 19); // RTM_SETLINK
        assert_eq!(bytes[16], 7); // AF_BRIDGE
        assert_eq!(u32::from_ne_bytes(bytes[20..24].try_into().unwrap()), 5);
        let attrs = &bytes[32..];
        // IFLA_PROTINFO | NLA_F_NESTED, len 4 + 8 + 8
        assert_eq!(u16::from_ne_bytes([attrs[0], attrs[1]]), 20);
        assert_eq!(u16::from_ne_bytes([attrs[2], attrs[3]]), 12 | 0x8000);
        // IFLA_BRPORT_MODE = 1, IFLA_BRPORT_ISOLATED = 0 (u8 values padded to 4)
        assert_eq!(&attrs[4..12], &[5, 0, 4, 0, 1, 0, 0, 0]);
        assert_eq!(&attrs[12..20], &[5, 0, 33, 0, 0, 0, 0, 0]);
    }

    #[test]
    fn bridge_message_only_carries_vlan_filtering_when_asked() {
        let plain = encode(bridge_message("cni0", Some(1450), false), NLM_F_REQUEST, 1);
        let vlan = encode(bridge_message("cni0", Some(1450), true), NLM_F_REQUEST, 1);
        // IFLA_INFO_DATA { IFLA_BR_VLAN_FILTERING (7) = 1 } adds 4 + 8 bytes.
        assert_eq!(vlan.len(), plain.len() + 12);
        let tail = &vlan[vlan.len() - 12..];
        assert_eq!(u16::from_ne_bytes([tail[2], tail[3]]) & 0x3fff, 2); // IFLA_INFO_DATA
        assert_eq!(&tail[4..9], &[5, 0, 7, 0, 1]);
    }

    #[test]
    fn vid_range() {
        assert!(check_vid("op", 1).is_ok());
        assert!(check_vid("op", 4094).is_ok());
        assert_eq!(check_vid("op", 0).unwrap_err().errno(), Some(libc::EINVAL));
        assert!(check_vid("op", 4095).is_err());
    }
}
