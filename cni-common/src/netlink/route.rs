//! Routes: listing, adding, replacing and deleting.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnetwork::IpNetwork;
use netlink_packet_core::{NLM_F_APPEND, NLM_F_CREATE, NLM_F_EXCL, NLM_F_REPLACE};
use netlink_packet_route::route::{RouteAddress, RouteAttribute, RouteHeader, RouteMessage, RouteMetric};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};

use super::{IpFamily, Netlink, NlError};

/// `RT_TABLE_MAIN`.
pub const TABLE_MAIN: u32 = 254;
/// `RT_SCOPE_LINK`.
pub const SCOPE_LINK: u8 = 253;
/// `RT_SCOPE_NOWHERE`: in a delete request, any scope matches.
const SCOPE_NOWHERE: u8 = 255;
/// `RTPROT_BOOT`: the protocol `ip route add` gives routes.
const PROTO_BOOT: u8 = 3;
/// `RTN_UNICAST`.
const TYPE_UNICAST: u8 = 1;

/// A unicast route. To add one, fill what matters and leave the rest `None`; routes read from the
/// kernel have `dst`, `table` and `scope` filled. A multipath route is listed as one `Route` per
/// next hop. Routes are added with protocol `RTPROT_BOOT` (as by `ip route add`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Route {
    /// Destination; `None` means the default route of the gateway's family. Host bits are
    /// ignored (`10.1.2.3/8` is `10.0.0.0/8`).
    pub dst: Option<IpNetwork>,
    /// Gateway (`RTA_GATEWAY`), same family as `dst`.
    pub gw: Option<IpAddr>,
    /// Output link index (`RTA_OIF`).
    pub oif: Option<u32>,
    /// Table; `None` is the main table (254).
    pub table: Option<u32>,
    /// `RT_SCOPE_*`. When adding, `None` is link scope without a gateway and universe with one
    /// (what `ip route add` does); when deleting, `None` matches any scope.
    pub scope: Option<u8>,
    /// Metric (`RTA_PRIORITY`).
    pub priority: Option<u32>,
    /// Path MTU (`RTAX_MTU` in `RTA_METRICS`).
    pub mtu: Option<u32>,
    /// Advertised TCP MSS (`RTAX_ADVMSS` in `RTA_METRICS`).
    pub advmss: Option<u32>,
    /// Preferred source address (`RTA_PREFSRC`).
    pub src: Option<IpAddr>,
}

impl Route {
    /// The route's family: that of `dst`, else of `gw`, else of `src`.
    pub fn family(&self) -> Option<IpFamily> {
        self.dst
            .map(|d| IpFamily::of(&d.ip()))
            .or_else(|| self.gw.as_ref().map(IpFamily::of))
            .or_else(|| self.src.as_ref().map(IpFamily::of))
    }

    fn text(&self, dev: Option<&str>) -> String {
        let mut s = match self.dst {
            Some(d) if d.prefix() > 0 => normalized(d).to_string(),
            _ => "default".to_string(),
        };
        if let Some(gw) = self.gw {
            s.push_str(&format!(" via {gw}"));
        }
        match (dev, self.oif) {
            (Some(dev), _) => s.push_str(&format!(" dev {dev}")),
            (None, Some(oif)) => s.push_str(&format!(" dev index {oif}")),
            (None, None) => {}
        }
        if let Some(src) = self.src {
            s.push_str(&format!(" src {src}"));
        }
        if let Some(table) = self.table {
            s.push_str(&format!(" table {table}"));
        }
        if let Some(p) = self.priority {
            s.push_str(&format!(" metric {p}"));
        }
        s
    }
}

impl fmt::Display for Route {
    /// `ip route` style: `10.1.0.0/24 via 10.0.0.1 dev index 3 table 100 metric 50`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text(None))
    }
}

/// `net` with its host bits cleared.
fn normalized(net: IpNetwork) -> IpNetwork {
    IpNetwork::new(net.network(), net.prefix()).unwrap_or(net)
}

fn af(family: IpFamily) -> AddressFamily {
    match family {
        IpFamily::V4 => AddressFamily::Inet,
        IpFamily::V6 => AddressFamily::Inet6,
    }
}

fn ip_of(addr: &RouteAddress) -> Option<IpAddr> {
    match addr {
        RouteAddress::Inet(v4) => Some(IpAddr::V4(*v4)),
        RouteAddress::Inet6(v6) => Some(IpAddr::V6(*v6)),
        _ => None,
    }
}

/// The `RTM_NEWROUTE` (or `RTM_DELROUTE` when `delete`) message for `route`; `Err` explains why the
/// route is not a valid request.
/// How a change `verb` of `route` names itself in its error (`add route default via 10.0.0.1 dev
/// "eth0" (index 2)`); `dev` is the label of its device.
pub(crate) fn route_op(verb: &str, route: &Route, dev: Option<&str>) -> String {
    format!("{verb} route {}", route.text(dev))
}

pub(crate) fn route_message(route: &Route, delete: bool) -> Result<RouteNetlinkMessage, String> {
    let family = route.family().ok_or("a route needs a destination or a gateway")?;
    for (what, ip) in [("gateway", route.gw), ("source", route.src)] {
        if let Some(ip) = ip {
            if IpFamily::of(&ip) != family {
                return Err(format!("{what} {ip} is not {family} like the destination"));
            }
        }
    }
    let table = route.table.unwrap_or(TABLE_MAIN);

    let mut msg = RouteMessage::default();
    let h = &mut msg.header;
    h.address_family = af(family);
    h.destination_prefix_length = route.dst.map_or(0, |d| d.prefix());
    // Tables above 255 only fit RTA_TABLE; the header then says RT_TABLE_UNSPEC.
    h.table = u8::try_from(table).unwrap_or(RouteHeader::RT_TABLE_UNSPEC);
    // A delete leaves protocol and type unspecified (0): they then match any route.
    if delete {
        h.scope = route.scope.unwrap_or(SCOPE_NOWHERE).into();
    } else {
        h.protocol = PROTO_BOOT.into();
        h.scope = route.scope.unwrap_or(if route.gw.is_some() { 0 } else { SCOPE_LINK }).into();
        h.kind = TYPE_UNICAST.into();
    }

    let attrs = &mut msg.attributes;
    if let Some(dst) = route.dst.filter(|d| d.prefix() > 0) {
        attrs.push(RouteAttribute::Destination(normalized(dst).ip().into()));
    }
    if let Some(gw) = route.gw {
        attrs.push(RouteAttribute::Gateway(gw.into()));
    }
    if let Some(oif) = route.oif {
        attrs.push(RouteAttribute::Oif(oif));
    }
    if let Some(src) = route.src {
        attrs.push(RouteAttribute::PrefSource(src.into()));
    }
    if let Some(priority) = route.priority {
        attrs.push(RouteAttribute::Priority(priority));
    }
    attrs.push(RouteAttribute::Table(table));
    // Metrics are left out of deletes: the kernel would then only delete a route whose metrics match.
    if !delete {
        let mut metrics = Vec::new();
        if let Some(mtu) = route.mtu {
            metrics.push(RouteMetric::Mtu(mtu));
        }
        if let Some(advmss) = route.advmss {
            metrics.push(RouteMetric::Advmss(advmss));
        }
        if !metrics.is_empty() {
            attrs.push(RouteAttribute::Metrics(metrics));
        }
    }
    Ok(if delete { RouteNetlinkMessage::DelRoute(msg) } else { RouteNetlinkMessage::NewRoute(msg) })
}

/// The routes a `RTM_NEWROUTE` describes: one, or one per next hop of a multipath route.
pub(crate) fn routes_from_message(msg: &RouteMessage) -> Vec<Route> {
    let h = &msg.header;
    let unspecified = match h.address_family {
        AddressFamily::Inet => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
        AddressFamily::Inet6 => IpAddr::V6(Ipv6Addr::UNSPECIFIED),
        _ => return Vec::new(),
    };
    let mut route = Route { table: Some(u32::from(h.table)), scope: Some(h.scope.into()), ..Route::default() };
    let mut dst = unspecified;
    let mut hops = None;
    for attr in &msg.attributes {
        match attr {
            RouteAttribute::Destination(a) => dst = ip_of(a).unwrap_or(unspecified),
            RouteAttribute::Gateway(a) => route.gw = ip_of(a),
            RouteAttribute::Oif(oif) => route.oif = Some(*oif),
            RouteAttribute::PrefSource(a) => route.src = ip_of(a),
            RouteAttribute::Priority(p) => route.priority = Some(*p),
            RouteAttribute::Table(t) => route.table = Some(*t),
            RouteAttribute::Metrics(metrics) => {
                for m in metrics {
                    match m {
                        RouteMetric::Mtu(mtu) => route.mtu = Some(*mtu),
                        RouteMetric::Advmss(mss) => route.advmss = Some(*mss),
                        _ => {}
                    }
                }
            }
            RouteAttribute::MultiPath(nh) => hops = Some(nh),
            _ => {}
        }
    }
    route.dst = IpNetwork::new(dst, h.destination_prefix_length).ok();
    match hops {
        None => vec![route],
        Some(hops) => hops
            .iter()
            .map(|hop| {
                let mut r = route.clone();
                r.oif = (hop.interface_index != 0).then_some(hop.interface_index);
                r.gw = hop.attributes.iter().find_map(|a| match a {
                    RouteAttribute::Gateway(g) => ip_of(g),
                    _ => None,
                });
                r
            })
            .collect(),
    }
}

impl Netlink {
    /// The unicast routes of `family`, in `table` only or in every table (`None`). Local,
    /// broadcast, multicast and reject (blackhole, unreachable, prohibit) routes are left out.
    pub fn routes(&mut self, family: IpFamily, table: Option<u32>) -> Result<Vec<Route>, NlError> {
        let mut req = RouteMessage::default();
        req.header.address_family = af(family);
        let op = || match table {
            Some(t) => format!("list {family} routes of table {t}"),
            None => format!("list {family} routes"),
        };
        let msgs = self.sock.dump(RouteNetlinkMessage::GetRoute(req)).map_err(|e| e.with_op(op()))?;
        Ok(msgs
            .iter()
            .filter_map(|m| match m {
                RouteNetlinkMessage::NewRoute(r)
                    if r.header.address_family == af(family) && u8::from(r.header.kind) == TYPE_UNICAST =>
                {
                    Some(r)
                }
                _ => None,
            })
            .flat_map(routes_from_message)
            .filter(|r| table.is_none() || r.table == table)
            .collect())
    }

    /// The output interface of the route the kernel picks for `dst` (`ip route get`): one lookup
    /// through the routing rules and tables, not a dump. `None` when `dst` is unreachable or the
    /// route has no single output interface.
    pub fn route_get_oif(&mut self, dst: IpAddr) -> Result<Option<u32>, NlError> {
        let family = IpFamily::of(&dst);
        let mut req = RouteMessage::default();
        req.header.address_family = af(family);
        req.header.destination_prefix_length = if family == IpFamily::V4 { 32 } else { 128 };
        req.attributes.push(RouteAttribute::Destination(dst.into()));
        match self.sock.request(RouteNetlinkMessage::GetRoute(req), 0) {
            Ok(msgs) => Ok(msgs.iter().find_map(|m| match m {
                RouteNetlinkMessage::NewRoute(r) => r.attributes.iter().find_map(|a| match a {
                    RouteAttribute::Oif(i) => Some(*i),
                    _ => None,
                }),
                _ => None,
            })),
            Err(e) if matches!(e.errno(), Some(libc::ENETUNREACH | libc::EHOSTUNREACH | libc::ENETDOWN)) => Ok(None),
            Err(e) => Err(e.with_op(format!("look up the route to {dst}"))),
        }
    }

    /// Add a route; `EEXIST` if it exists (`NLM_F_CREATE | NLM_F_EXCL`).
    pub fn add_route(&mut self, route: &Route) -> Result<(), NlError> {
        self.change_route(route, false, NLM_F_CREATE | NLM_F_EXCL, "add")
    }

    /// Add a route or replace the one with the same destination, table and metric
    /// (`NLM_F_CREATE | NLM_F_REPLACE`).
    pub fn replace_route(&mut self, route: &Route) -> Result<(), NlError> {
        self.change_route(route, false, NLM_F_CREATE | NLM_F_REPLACE, "replace")
    }

    /// Add a route next to existing ones with the same destination and metric
    /// (`NLM_F_CREATE | NLM_F_APPEND`); for IPv6 this adds a next hop (ECMP).
    pub fn append_route(&mut self, route: &Route) -> Result<(), NlError> {
        self.change_route(route, false, NLM_F_CREATE | NLM_F_APPEND, "append")
    }

    /// Delete a route. Fields left `None` match anything, except `table` (main table).
    pub fn del_route(&mut self, route: &Route) -> Result<(), NlError> {
        self.change_route(route, true, 0, "delete")
    }

    fn change_route(&mut self, route: &Route, delete: bool, flags: u16, verb: &str) -> Result<(), NlError> {
        let msg = route_message(route, delete).map_err(|why| NlError::invalid(format!("{verb} route {route}"), why))?;
        match self.sock.request(msg, flags) {
            Ok(_) => Ok(()),
            Err(e) => {
                let dev = route.oif.map(|i| self.link_label(i));
                Err(e.with_op(route_op(verb, route, dev.as_deref())))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::socket::encode;
    use super::*;
    use netlink_packet_core::NLM_F_REQUEST;

    fn net(s: &str) -> IpNetwork {
        s.parse().unwrap()
    }

    #[test]
    fn add_message_fields() {
        let route = Route {
            dst: Some(net("10.1.2.3/16")),
            gw: Some("10.0.0.1".parse().unwrap()),
            oif: Some(4),
            table: Some(1000),
            priority: Some(50),
            mtu: Some(1400),
            advmss: Some(1360),
            ..Route::default()
        };
        let RouteNetlinkMessage::NewRoute(msg) = route_message(&route, false).unwrap() else { panic!() };
        assert_eq!(msg.header.address_family, AddressFamily::Inet);
        assert_eq!(msg.header.destination_prefix_length, 16);
        assert_eq!(msg.header.table, 0, "table > 255 goes in RTA_TABLE only");
        assert_eq!(u8::from(msg.header.scope), 0);
        assert_eq!(u8::from(msg.header.protocol), PROTO_BOOT);
        assert_eq!(u8::from(msg.header.kind), TYPE_UNICAST);
        let a = &msg.attributes;
        assert!(a.contains(&RouteAttribute::Destination(RouteAddress::Inet("10.1.0.0".parse().unwrap()))));
        assert!(a.contains(&RouteAttribute::Table(1000)));
        assert!(a.contains(&RouteAttribute::Priority(50)));
        assert!(a.contains(&RouteAttribute::Metrics(vec![RouteMetric::Mtu(1400), RouteMetric::Advmss(1360)])));
        // The message serializes; RTA_METRICS (8) is present.
        let bytes = encode(RouteNetlinkMessage::NewRoute(msg), NLM_F_REQUEST, 1);
        assert_eq!(u16::from_ne_bytes([bytes[4], bytes[5]]), libc::RTM_NEWROUTE);
    }

    #[test]
    fn delete_message_matches_any_scope_and_has_no_metrics() {
        let route = Route { dst: Some(net("10.1.0.0/16")), mtu: Some(1400), ..Route::default() };
        let RouteNetlinkMessage::DelRoute(msg) = route_message(&route, true).unwrap() else { panic!() };
        assert_eq!(u8::from(msg.header.scope), SCOPE_NOWHERE);
        assert_eq!((u8::from(msg.header.protocol), u8::from(msg.header.kind)), (0, 0), "match any");
        assert_eq!(msg.header.table, 254);
        assert!(!msg.attributes.iter().any(|a| matches!(a, RouteAttribute::Metrics(_))));
    }

    #[test]
    fn default_route_family_from_gateway() {
        let route = Route { gw: Some("fd00::1".parse().unwrap()), ..Route::default() };
        let RouteNetlinkMessage::NewRoute(msg) = route_message(&route, false).unwrap() else { panic!() };
        assert_eq!(msg.header.address_family, AddressFamily::Inet6);
        assert_eq!(msg.header.destination_prefix_length, 0);
        assert!(!msg.attributes.iter().any(|a| matches!(a, RouteAttribute::Destination(_))));
        assert_eq!(route.to_string(), "default via fd00::1");
    }

    #[test]
    fn invalid_routes() {
        assert!(route_message(&Route::default(), false).is_err());
        let mixed = Route { dst: Some(net("10.0.0.0/8")), gw: Some("fd00::1".parse().unwrap()), ..Route::default() };
        let err = route_message(&mixed, false).unwrap_err();
        assert!(err.contains("gateway fd00::1 is not IPv4"), "{err}");
    }

    #[test]
    fn multipath_is_flattened() {
        use netlink_packet_route::route::RouteNextHop;
        let mut msg = RouteMessage::default();
        msg.header.address_family = AddressFamily::Inet6;
        msg.header.table = 254;
        let hop = |oif: u32, gw: &str| {
            let mut h = RouteNextHop::default();
            h.interface_index = oif;
            h.attributes = vec![RouteAttribute::Gateway(RouteAddress::Inet6(gw.parse().unwrap()))];
            h
        };
        msg.attributes =
            vec![RouteAttribute::Priority(1024), RouteAttribute::MultiPath(vec![hop(2, "fe80::1"), hop(3, "fe80::2")])];
        let routes = routes_from_message(&msg);
        assert_eq!(routes.len(), 2);
        assert_eq!(routes[0].dst, Some(net("::/0")));
        assert_eq!((routes[0].oif, routes[0].gw), (Some(2), Some("fe80::1".parse().unwrap())));
        assert_eq!((routes[1].oif, routes[1].priority), (Some(3), Some(1024)));
    }
}
