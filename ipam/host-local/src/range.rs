//! Address ranges and range sets: validation with the defaults of the reference, membership, and the
//! round-robin candidate order. Pure: no I/O.
//!
//! Addresses are handled as `u128` inside one family so arithmetic is the same for IPv4 and IPv6.

use ipnetwork::IpNetwork;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Family {
    V4,
    V6,
}

impl Family {
    pub fn of(ip: IpAddr) -> Family {
        match ip {
            IpAddr::V4(_) => Family::V4,
            IpAddr::V6(_) => Family::V6,
        }
    }

    pub fn bits(self) -> u8 {
        match self {
            Family::V4 => 32,
            Family::V6 => 128,
        }
    }
}

impl fmt::Display for Family {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Family::V4 => "IPv4",
            Family::V6 => "IPv6",
        })
    }
}

pub fn to_u128(ip: IpAddr) -> u128 {
    match ip {
        IpAddr::V4(a) => u32::from(a) as u128,
        IpAddr::V6(a) => u128::from(a),
    }
}

pub fn from_u128(v: u128, fam: Family) -> IpAddr {
    match fam {
        Family::V4 => IpAddr::V4(Ipv4Addr::from(v as u32)),
        Family::V6 => IpAddr::V6(Ipv6Addr::from(v)),
    }
}

/// An IPv4-mapped IPv6 address (`::ffff:a.b.c.d`) is the IPv4 address, as Go's `net.IP` treats it.
pub fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(a) => match a.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => ip,
        },
        v4 => v4,
    }
}

/// Why a range is invalid, and which of its fields is at fault.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RangeError {
    /// `subnet`, `rangeStart`, `rangeEnd` or `gateway`.
    pub field: &'static str,
    pub reason: String,
}

fn err(field: &'static str, reason: impl Into<String>) -> RangeError {
    RangeError { field, reason: reason.into() }
}

/// One contiguous pool inside a subnet. Every field is filled in (defaults applied).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Range {
    /// The subnet, always its network address.
    pub subnet: IpNetwork,
    /// First address of the pool, inclusive.
    pub start: IpAddr,
    /// Last address of the pool, inclusive.
    pub end: IpAddr,
    /// Returned in results and never handed out.
    pub gateway: IpAddr,
}

impl Range {
    /// Build a range, applying the defaults: gateway = first address of the subnet; `rangeStart` =
    /// first address after the network address, skipping the gateway when it is that address;
    /// `rangeEnd` = the address before the IPv4 broadcast, or the last IPv6 address.
    pub fn new(
        subnet: IpNetwork,
        start: Option<IpAddr>,
        end: Option<IpAddr>,
        gateway: Option<IpAddr>,
    ) -> Result<Range, RangeError> {
        let fam = Family::of(subnet.ip());
        let bits = fam.bits();
        let prefix = subnet.prefix();
        if prefix > bits - 2 {
            return Err(err(
                "subnet",
                format!("network {subnet} is too small to allocate from (the prefix must be /{} or shorter)", bits - 2),
            ));
        }
        let network = subnet.network();
        if subnet.ip() != network {
            return Err(err(
                "subnet",
                format!("{subnet} has host bits set: for a prefix of /{prefix} the network address is {network}"),
            ));
        }
        let subnet = IpNetwork::new(network, prefix).expect("prefix already validated");
        let net_u = to_u128(network);
        let host_mask: u128 = if prefix == 0 && bits == 128 { u128::MAX } else { (1u128 << (bits - prefix)) - 1 };
        let last_u = net_u | host_mask;

        let same_family = |field: &'static str, ip: IpAddr| -> Result<IpAddr, RangeError> {
            let ip = canonical(ip);
            if Family::of(ip) != fam {
                return Err(err(field, format!("{ip} is not an {fam} address like the subnet {subnet}")));
            }
            Ok(ip)
        };
        let gateway = match gateway {
            Some(g) => same_family("gateway", g)?,
            None => from_u128(net_u + 1, fam),
        };
        let start = match start {
            Some(s) => {
                let s = same_family("rangeStart", s)?;
                if !subnet.contains(s) {
                    return Err(err("rangeStart", format!("{s} is not in the subnet {subnet}")));
                }
                s
            }
            None => {
                let first = from_u128(net_u + 1, fam);
                if first == gateway {
                    from_u128(net_u + 2, fam)
                } else {
                    first
                }
            }
        };
        let end = match end {
            Some(e) => {
                let e = same_family("rangeEnd", e)?;
                if !subnet.contains(e) {
                    return Err(err("rangeEnd", format!("{e} is not in the subnet {subnet}")));
                }
                e
            }
            None => match fam {
                Family::V4 => from_u128(last_u - 1, fam),
                Family::V6 => from_u128(last_u, fam),
            },
        };
        if to_u128(start) > to_u128(end) {
            return Err(err("rangeEnd", format!("{end} is before rangeStart {start}")));
        }
        let r = Range { subnet, start, end, gateway };
        if r.capacity() == 0 {
            return Err(err(
                "rangeStart",
                format!(
                    "range {start}-{end} of {subnet} holds no address that can be handed out (the gateway, the network \
                     and the broadcast address are never allocated)"
                ),
            ));
        }
        Ok(r)
    }

    pub fn family(&self) -> Family {
        Family::of(self.subnet.ip())
    }

    /// `ip` lies between `rangeStart` and `rangeEnd` (inclusive).
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = canonical(ip);
        Family::of(ip) == self.family() && to_u128(ip) >= to_u128(self.start) && to_u128(ip) <= to_u128(self.end)
    }

    fn network_u(&self) -> u128 {
        to_u128(self.subnet.network())
    }

    fn broadcast_u(&self) -> Option<u128> {
        match self.family() {
            Family::V4 => Some(to_u128(self.subnet.broadcast())),
            Family::V6 => None,
        }
    }

    /// Why `ip` (inside the range) may not be handed out, if it may not.
    pub fn reserved_reason(&self, ip: IpAddr) -> Option<&'static str> {
        let ip = canonical(ip);
        let u = to_u128(ip);
        if ip == self.gateway {
            Some("the gateway")
        } else if u == self.network_u() {
            Some("the network address")
        } else if Some(u) == self.broadcast_u() {
            Some("the broadcast address")
        } else {
            None
        }
    }

    /// `ip` is in the range and may be handed out.
    pub fn usable(&self, ip: IpAddr) -> bool {
        self.contains(ip) && self.reserved_reason(ip).is_none()
    }

    /// Number of addresses that may be handed out (saturating at `u128::MAX`).
    pub fn capacity(&self) -> u128 {
        let (s, e) = (to_u128(self.start), to_u128(self.end));
        let mut n = (e - s).saturating_add(1);
        let mut excluded = vec![self.network_u()];
        excluded.extend(self.broadcast_u());
        if Family::of(self.gateway) == self.family() {
            excluded.push(to_u128(self.gateway));
        }
        excluded.sort_unstable();
        excluded.dedup();
        for x in excluded {
            if x >= s && x <= e {
                n -= 1;
            }
        }
        n
    }

    /// The ranges share at least one address.
    pub fn overlaps(&self, other: &Range) -> bool {
        self.family() == other.family()
            && to_u128(self.start) <= to_u128(other.end)
            && to_u128(other.start) <= to_u128(self.end)
    }
}

impl fmt::Display for Range {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.start, self.end)
    }
}

/// A list of disjoint ranges of one family; each set yields one address per attachment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RangeSet {
    pub ranges: Vec<Range>,
}

impl RangeSet {
    /// Validate a set: not empty, one family, no two ranges overlapping. On error returns the index
    /// of the range at fault and the reason.
    pub fn new(ranges: Vec<Range>) -> Result<RangeSet, (Option<usize>, String)> {
        let first = ranges.first().ok_or((None, "empty range set".to_string()))?;
        let fam = first.family();
        for (i, r) in ranges.iter().enumerate() {
            if r.family() != fam {
                return Err((Some(i), format!("mixes address families: {} is {} but {} is {fam}", r.subnet, r.family(), first.subnet)));
            }
        }
        for i in 0..ranges.len() {
            for j in i + 1..ranges.len() {
                if ranges[i].overlaps(&ranges[j]) {
                    return Err((Some(j), format!("range {} overlaps range {} ({i})", ranges[j], ranges[i])));
                }
            }
        }
        Ok(RangeSet { ranges })
    }

    pub fn family(&self) -> Family {
        self.ranges[0].family()
    }

    /// The range holding `ip`, with its index.
    pub fn range_for(&self, ip: IpAddr) -> Option<(usize, &Range)> {
        self.ranges.iter().enumerate().find(|(_, r)| r.contains(ip))
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        self.range_for(ip).is_some()
    }

    pub fn usable(&self, ip: IpAddr) -> bool {
        self.range_for(ip).is_some_and(|(_, r)| r.reserved_reason(ip).is_none())
    }

    pub fn overlaps(&self, other: &RangeSet) -> bool {
        self.ranges.iter().any(|a| other.ranges.iter().any(|b| a.overlaps(b)))
    }

    /// Number of addresses that may be handed out (saturating).
    pub fn capacity(&self) -> u128 {
        self.ranges.iter().fold(0u128, |acc, r| acc.saturating_add(r.capacity()))
    }

    /// Addresses to try, in the reference's round-robin order: starting after `last` (the last
    /// reserved address) when it lies in the set, else at the first range's start; wrapping across
    /// the ranges of the set; each address once, `last` itself at the end. Gateway, network and
    /// broadcast addresses are skipped.
    pub fn candidates(&self, last: Option<IpAddr>) -> Candidates<'_> {
        let first = match last.and_then(|l| self.range_for(l).map(|(i, _)| (i, to_u128(canonical(l))))) {
            Some((i, l)) => self.succ((i, l)),
            None => (0, to_u128(self.ranges[0].start)),
        };
        Candidates { set: self, first, cur: None, done: false }
    }

    fn succ(&self, (i, v): (usize, u128)) -> (usize, u128) {
        if v == to_u128(self.ranges[i].end) {
            let n = (i + 1) % self.ranges.len();
            (n, to_u128(self.ranges[n].start))
        } else {
            (i, v + 1)
        }
    }
}

impl fmt::Display for RangeSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, r) in self.ranges.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            write!(f, "{r}")?;
        }
        Ok(())
    }
}

/// Iterator over allocation candidates; see [`RangeSet::candidates`].
pub struct Candidates<'a> {
    set: &'a RangeSet,
    first: (usize, u128),
    cur: Option<(usize, u128)>,
    done: bool,
}

impl Iterator for Candidates<'_> {
    /// The address and the index of its range in the set.
    type Item = (IpAddr, usize);

    fn next(&mut self) -> Option<Self::Item> {
        while !self.done {
            let pos = match self.cur {
                None => self.first,
                Some(c) => {
                    let p = self.set.succ(c);
                    if p == self.first {
                        self.done = true;
                        return None;
                    }
                    p
                }
            };
            self.cur = Some(pos);
            let r = &self.set.ranges[pos.0];
            let ip = from_u128(pos.1, r.family());
            if r.reserved_reason(ip).is_none() {
                return Some((ip, pos.0));
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }
    fn net(s: &str) -> IpNetwork {
        s.parse().unwrap()
    }

    #[test]
    fn defaults_v4() {
        let r = Range::new(net("10.0.0.0/24"), None, None, None).unwrap();
        assert_eq!(r.gateway, ip("10.0.0.1"));
        assert_eq!(r.start, ip("10.0.0.2"));
        assert_eq!(r.end, ip("10.0.0.254"));
        assert_eq!(r.capacity(), 253);
        let r = Range::new(net("10.0.0.0/24"), None, None, Some(ip("10.0.0.254"))).unwrap();
        assert_eq!(r.start, ip("10.0.0.1"));
        assert_eq!(r.capacity(), 253);
    }

    #[test]
    fn defaults_v6() {
        let r = Range::new(net("fd00::/120"), None, None, None).unwrap();
        assert_eq!(r.gateway, ip("fd00::1"));
        assert_eq!(r.start, ip("fd00::2"));
        assert_eq!(r.end, ip("fd00::ff"));
        assert_eq!(r.capacity(), 254);
        let r = Range::new(net("fd00::/64"), None, None, None).unwrap();
        assert_eq!(r.end, ip("fd00::ffff:ffff:ffff:ffff"));
        let r = Range::new(net("::/0"), None, None, None).unwrap();
        assert_eq!(r.end, ip("ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff"));
    }

    #[test]
    fn smallest_subnets() {
        let r = Range::new(net("10.0.0.0/30"), None, None, None).unwrap();
        assert_eq!((r.start, r.end, r.capacity()), (ip("10.0.0.2"), ip("10.0.0.2"), 1));
        assert_eq!(Range::new(net("10.0.0.0/31"), None, None, None).unwrap_err().field, "subnet");
        assert_eq!(Range::new(net("10.0.0.0/32"), None, None, None).unwrap_err().field, "subnet");
        assert!(Range::new(net("fd00::/126"), None, None, None).is_ok());
        assert!(Range::new(net("fd00::/127"), None, None, None).is_err());
    }

    #[test]
    fn invalid_ranges() {
        let e = Range::new(net("10.0.0.5/24"), None, None, None).unwrap_err();
        assert_eq!(e.field, "subnet");
        assert!(e.reason.contains("host bits") && e.reason.contains("10.0.0.0"), "{e:?}");
        let e = Range::new(net("10.0.0.0/24"), Some(ip("10.0.1.5")), None, None).unwrap_err();
        assert_eq!(e.field, "rangeStart");
        let e = Range::new(net("10.0.0.0/24"), None, Some(ip("10.0.1.5")), None).unwrap_err();
        assert_eq!(e.field, "rangeEnd");
        let e = Range::new(net("10.0.0.0/24"), Some(ip("10.0.0.50")), Some(ip("10.0.0.40")), None).unwrap_err();
        assert_eq!(e.field, "rangeEnd");
        assert!(e.reason.contains("before"));
        let e = Range::new(net("10.0.0.0/24"), None, None, Some(ip("fd00::1"))).unwrap_err();
        assert_eq!(e.field, "gateway");
        // Only the gateway in the pool.
        let e = Range::new(net("10.0.0.0/24"), Some(ip("10.0.0.1")), Some(ip("10.0.0.1")), None).unwrap_err();
        assert!(e.reason.contains("no address"));
        // Only network and broadcast.
        assert!(Range::new(net("10.0.0.0/24"), Some(ip("10.0.0.255")), Some(ip("10.0.0.255")), None).is_err());
    }

    #[test]
    fn mapped_addresses_are_v4() {
        let r = Range::new(net("10.0.0.0/24"), Some(ip("::ffff:10.0.0.10")), None, None).unwrap();
        assert_eq!(r.start, ip("10.0.0.10"));
        assert!(r.contains(ip("::ffff:10.0.0.11")));
    }

    #[test]
    fn network_and_broadcast_never_candidates() {
        let r = Range::new(net("10.0.0.0/30"), Some(ip("10.0.0.0")), Some(ip("10.0.0.3")), Some(ip("10.0.0.2"))).unwrap();
        let set = RangeSet::new(vec![r]).unwrap();
        let c: Vec<_> = set.candidates(None).map(|(a, _)| a).collect();
        assert_eq!(c, vec![ip("10.0.0.1")]);
        assert_eq!(set.capacity(), 1);
    }

    #[test]
    fn round_robin_order_wraps_across_ranges() {
        let a = Range::new(net("10.0.0.0/24"), Some(ip("10.0.0.10")), Some(ip("10.0.0.12")), None).unwrap();
        let b = Range::new(net("10.0.1.0/24"), Some(ip("10.0.1.1")), Some(ip("10.0.1.3")), None).unwrap();
        let set = RangeSet::new(vec![a, b]).unwrap();
        let all = |last: Option<&str>| -> Vec<String> {
            set.candidates(last.map(ip)).map(|(a, _)| a.to_string()).collect()
        };
        // 10.0.1.1 is the gateway of the second range and is skipped.
        assert_eq!(all(None), ["10.0.0.10", "10.0.0.11", "10.0.0.12", "10.0.1.2", "10.0.1.3"]);
        assert_eq!(all(Some("10.0.0.11")), ["10.0.0.12", "10.0.1.2", "10.0.1.3", "10.0.0.10", "10.0.0.11"]);
        assert_eq!(all(Some("10.0.1.3")), ["10.0.0.10", "10.0.0.11", "10.0.0.12", "10.0.1.2", "10.0.1.3"]);
        // A last address outside the set restarts at the beginning.
        assert_eq!(all(Some("192.168.0.1")), all(None));
    }

    #[test]
    fn set_validation() {
        let a = Range::new(net("10.0.0.0/24"), None, None, None).unwrap();
        let b = Range::new(net("10.0.0.0/25"), None, None, None).unwrap();
        let c = Range::new(net("fd00::/64"), None, None, None).unwrap();
        assert!(RangeSet::new(vec![a.clone(), b]).unwrap_err().1.contains("overlaps"));
        assert!(RangeSet::new(vec![a.clone(), c]).unwrap_err().1.contains("families"));
        assert!(RangeSet::new(vec![]).is_err());
        let d = Range::new(net("10.0.1.0/24"), None, None, None).unwrap();
        let s1 = RangeSet::new(vec![a]).unwrap();
        let s2 = RangeSet::new(vec![d]).unwrap();
        assert!(!s1.overlaps(&s2));
        assert!(s1.overlaps(&s1.clone()));
        assert_eq!(s1.to_string(), "10.0.0.2-10.0.0.254");
    }

    proptest::proptest! {
        /// Every candidate is usable and distinct, and there are exactly `capacity` of them.
        #[test]
        fn candidates_cover_the_set(prefix in 22u8..=30, s_off in 0u32..64, len in 0u32..256, gw_off in 0u32..64, last in proptest::option::of(0u32..1024)) {
            let subnet = IpNetwork::new(ip("10.1.0.0"), prefix).unwrap();
            let size = 1u32 << (32 - prefix);
            let base = u32::from("10.1.0.0".parse::<Ipv4Addr>().unwrap());
            let start = IpAddr::V4(Ipv4Addr::from(base + (s_off % size)));
            let end = IpAddr::V4(Ipv4Addr::from(base + ((s_off + len) % size).max(s_off % size)));
            let gw = IpAddr::V4(Ipv4Addr::from(base + (gw_off % size)));
            if let Ok(r) = Range::new(subnet, Some(start), Some(end), Some(gw)) {
                let set = RangeSet::new(vec![r]).unwrap();
                let last = last.map(|l| IpAddr::V4(Ipv4Addr::from(base + l)));
                let c: Vec<_> = set.candidates(last).map(|(a, _)| a).collect();
                let mut d = c.clone();
                d.sort();
                d.dedup();
                proptest::prop_assert_eq!(d.len(), c.len());
                proptest::prop_assert_eq!(c.len() as u128, set.capacity());
                for a in &c {
                    proptest::prop_assert!(set.usable(*a));
                }
                if let (Some(l), true) = (last, last.is_some_and(|l| set.contains(l))) {
                    if set.usable(l) {
                        proptest::prop_assert_eq!(*c.last().unwrap(), l);
                    }
                }
            }
        }
    }
}
