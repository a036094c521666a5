//! Allocation over a [`Store`]: duplicate detection, requested addresses, round-robin search,
//! rollback. Pure logic: the disk store is one implementation, [`MemStore`] another (for tests).

use crate::config::Requested;
use crate::range::RangeSet;
use cni_common::error::CniError;
use std::collections::BTreeMap;
use std::net::IpAddr;

/// Who holds a lease, as written in its file.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Owner {
    /// `<container ID>\r\n<ifname>`
    Attachment { container_id: String, ifname: String },
    /// A file of an old version holding only the container ID.
    Legacy { container_id: String },
    /// Empty or unreadable content (e.g. a writer crashed mid-write).
    Unknown,
}

impl Owner {
    pub fn attachment(cid: &str, ifname: &str) -> Owner {
        Owner::Attachment { container_id: cid.to_string(), ifname: ifname.to_string() }
    }

    /// Parse lease file content the way the reference matches it (surrounding whitespace ignored).
    pub fn parse(content: &[u8]) -> Owner {
        let text = String::from_utf8_lossy(content);
        let t = text.trim();
        if t.is_empty() {
            return Owner::Unknown;
        }
        match t.split_once("\r\n") {
            Some((cid, ifname)) => Owner::Attachment { container_id: cid.trim().to_string(), ifname: ifname.to_string() },
            None => Owner::Legacy { container_id: t.to_string() },
        }
    }

    /// File content for a new lease.
    pub fn content(cid: &str, ifname: &str) -> String {
        format!("{}\r\n{}", cid.trim(), ifname)
    }

    pub fn container_id(&self) -> Option<&str> {
        match self {
            Owner::Attachment { container_id, .. } | Owner::Legacy { container_id } => Some(container_id),
            Owner::Unknown => None,
        }
    }

    pub fn describe(&self) -> String {
        match self {
            Owner::Attachment { container_id, ifname } => format!("container {container_id} interface {ifname}"),
            Owner::Legacy { container_id } => format!("container {container_id}"),
            Owner::Unknown => "an unknown holder".to_string(),
        }
    }
}

/// What allocation needs from the state. Called with the network's lock held.
pub trait Store {
    /// Leases held by the attachment: those written for exactly (cid, ifname), else legacy ones
    /// holding only `cid`.
    fn held_by(&mut self, cid: &str, ifname: &str) -> Result<Vec<IpAddr>, CniError>;
    /// Cheap test: nothing occupies the address's name.
    fn is_free(&mut self, ip: IpAddr) -> Result<bool, CniError>;
    /// Create the lease; `false` if the address is already taken.
    fn reserve(&mut self, ip: IpAddr, cid: &str, ifname: &str) -> Result<bool, CniError>;
    /// Undo a `reserve` of this call.
    fn unreserve(&mut self, ip: IpAddr) -> Result<(), CniError>;
    /// Holder of a taken address (for messages).
    fn owner_of(&mut self, ip: IpAddr) -> Result<Option<Owner>, CniError>;
    fn last_reserved(&mut self, set: usize) -> Result<Option<IpAddr>, CniError>;
    fn set_last_reserved(&mut self, set: usize, ip: IpAddr) -> Result<(), CniError>;
    /// All addresses of the attachment are reserved: record them (the disk store's index). A
    /// failure rolls the allocation back.
    fn commit(&mut self, _cid: &str, _ifname: &str, _ips: &[IpAddr]) -> Result<(), CniError> {
        Ok(())
    }
}

/// One allocated address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    pub ip: IpAddr,
    /// Index of the range set.
    pub set: usize,
    /// Index of the range in the set (for the prefix length and gateway).
    pub range: usize,
}

/// For each set, the requested address it must hand out, if any. Every requested address must fall
/// in a set, not be reserved there (gateway, network, broadcast), and at most one per set.
pub fn assign_requested(sets: &[RangeSet], requested: &[Requested]) -> Result<Vec<Option<IpAddr>>, CniError> {
    let mut out: Vec<Option<(IpAddr, &Requested)>> = vec![None; sets.len()];
    for req in requested {
        let Some((si, set)) = sets.iter().enumerate().find(|(_, s)| s.contains(req.ip)) else {
            // Name the gateway case precisely even when the gateway lies outside the pool.
            if let Some(set) = sets.iter().find(|s| s.ranges.iter().any(|r| r.gateway == req.ip)) {
                return Err(CniError::config(format!(
                    "requested IP {} ({}) is the gateway of range set {set} and cannot be allocated",
                    req.ip, req.source
                )));
            }
            let all: Vec<String> = sets.iter().map(|s| s.to_string()).collect();
            return Err(CniError::config(format!(
                "requested IP {} ({}) is not in any range set ({})",
                req.ip,
                req.source,
                all.join("; ")
            )));
        };
        let (_, r) = set.range_for(req.ip).expect("contains");
        if let Some(why) = r.reserved_reason(req.ip) {
            return Err(CniError::config(format!(
                "requested IP {} ({}) is {why} of range {r} and cannot be allocated",
                req.ip, req.source
            )));
        }
        if let Some((other, o)) = out[si] {
            return Err(CniError::config(format!(
                "requested IPs {other} ({}) and {} ({}) both fall in range set {si} ({set}); a range set yields one address",
                o.source, req.ip, req.source
            )));
        }
        out[si] = Some((req.ip, req));
    }
    Ok(out.into_iter().map(|o| o.map(|(ip, _)| ip)).collect())
}

/// Allocate one address per set for (cid, ifname). On any error every lease made by this call is
/// removed and `last_reserved_ip` is untouched: the state is as before.
pub fn allocate(
    sets: &[RangeSet],
    requested: &[Requested],
    cid: &str,
    ifname: &str,
    store: &mut dyn Store,
) -> Result<Vec<Lease>, CniError> {
    let held = store.held_by(cid, ifname)?;
    if let Some(first) = held.first() {
        let list: Vec<String> = held.iter().map(|ip| ip.to_string()).collect();
        let who = store.owner_of(*first)?.map(|o| o.describe()).unwrap_or_else(|| format!("container {cid} interface {ifname}"));
        return Err(CniError::Conflict(format!(
            "{} {} been allocated to {who}: duplicate allocation is not allowed (DEL the attachment first)",
            list.join(", "),
            if list.len() == 1 { "has" } else { "have" }
        )));
    }
    let wanted = assign_requested(sets, requested)?;
    let mut made: Vec<Lease> = Vec::new();
    let result = (|| -> Result<(), CniError> {
        for (si, set) in sets.iter().enumerate() {
            let lease = match wanted[si] {
                Some(ip) => {
                    if !store.reserve(ip, cid, ifname)? {
                        let who = store.owner_of(ip)?.map(|o| format!(" (held by {})", o.describe())).unwrap_or_default();
                        return Err(CniError::Conflict(format!(
                            "requested IP {ip} is not available in range set {si} ({set}): already allocated{who}"
                        )));
                    }
                    Lease { ip, set: si, range: set.range_for(ip).expect("assigned").0 }
                }
                None => {
                    let last = store.last_reserved(si)?;
                    let mut got = None;
                    for (ip, range) in set.candidates(last) {
                        if store.is_free(ip)? && store.reserve(ip, cid, ifname)? {
                            got = Some(Lease { ip, set: si, range });
                            break;
                        }
                    }
                    got.ok_or_else(|| {
                        CniError::RangeExhausted(format!(
                            "no IP addresses available in range set {si} ({set}): all {} addresses are allocated",
                            set.capacity()
                        ))
                    })?
                }
            };
            made.push(lease);
        }
        Ok(())
    })()
    .and_then(|()| {
        let ips: Vec<IpAddr> = made.iter().map(|l| l.ip).collect();
        store.commit(cid, ifname, &ips)
    });
    if let Err(e) = result {
        let mut e = e;
        for l in &made {
            if let Err(u) = store.unreserve(l.ip) {
                e = e.context(format!("(rolling back {} also failed: {u})", l.ip));
            }
        }
        return Err(e);
    }
    for l in &made {
        store.set_last_reserved(l.set, l.ip)?;
    }
    Ok(made)
}

/// In-memory store for tests and for reasoning about the disk store.
#[derive(Debug, Default, Clone)]
pub struct MemStore {
    pub leases: BTreeMap<IpAddr, Owner>,
    pub last: BTreeMap<usize, IpAddr>,
    /// Addresses occupied by something that is not a lease (e.g. a symlink).
    pub blocked: Vec<IpAddr>,
    /// Make the n-th `reserve` fail with an I/O error (fault injection).
    pub fail_reserve_at: Option<usize>,
    pub reserves: usize,
}

impl MemStore {
    pub fn release(&mut self, cid: &str, ifname: &str) -> Vec<IpAddr> {
        let ips = self.held_by(cid, ifname).unwrap();
        for ip in &ips {
            self.leases.remove(ip);
        }
        ips
    }
}

impl Store for MemStore {
    fn held_by(&mut self, cid: &str, ifname: &str) -> Result<Vec<IpAddr>, CniError> {
        let exact: Vec<IpAddr> =
            self.leases.iter().filter(|(_, o)| **o == Owner::attachment(cid, ifname)).map(|(ip, _)| *ip).collect();
        if !exact.is_empty() {
            return Ok(exact);
        }
        let legacy = Owner::Legacy { container_id: cid.to_string() };
        Ok(self.leases.iter().filter(|(_, o)| **o == legacy).map(|(ip, _)| *ip).collect())
    }
    fn is_free(&mut self, ip: IpAddr) -> Result<bool, CniError> {
        Ok(!self.leases.contains_key(&ip) && !self.blocked.contains(&ip))
    }
    fn reserve(&mut self, ip: IpAddr, cid: &str, ifname: &str) -> Result<bool, CniError> {
        self.reserves += 1;
        if self.fail_reserve_at == Some(self.reserves) {
            return Err(CniError::Io("injected failure".into()));
        }
        if !self.is_free(ip)? {
            return Ok(false);
        }
        self.leases.insert(ip, Owner::attachment(cid, ifname));
        Ok(true)
    }
    fn unreserve(&mut self, ip: IpAddr) -> Result<(), CniError> {
        self.leases.remove(&ip);
        Ok(())
    }
    fn owner_of(&mut self, ip: IpAddr) -> Result<Option<Owner>, CniError> {
        Ok(self.leases.get(&ip).cloned())
    }
    fn last_reserved(&mut self, set: usize) -> Result<Option<IpAddr>, CniError> {
        Ok(self.last.get(&set).copied())
    }
    fn set_last_reserved(&mut self, set: usize, ip: IpAddr) -> Result<(), CniError> {
        self.last.insert(set, ip);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Source;
    use crate::range::Range;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }
    fn set(subnet: &str, start: Option<&str>, end: Option<&str>) -> RangeSet {
        RangeSet::new(vec![Range::new(subnet.parse().unwrap(), start.map(ip), end.map(ip), None).unwrap()]).unwrap()
    }
    fn req(s: &str) -> Requested {
        Requested { ip: ip(s), source: Source::RuntimeConfigIps }
    }
    fn ips(l: &[Lease]) -> Vec<String> {
        l.iter().map(|l| l.ip.to_string()).collect()
    }

    #[test]
    fn first_allocation_skips_gateway() {
        let sets = [set("10.0.0.0/24", None, None)];
        let mut st = MemStore::default();
        let l = allocate(&sets, &[], "c1", "eth0", &mut st).unwrap();
        assert_eq!(ips(&l), ["10.0.0.2"]);
        assert_eq!(st.last[&0], ip("10.0.0.2"));
        assert_eq!(ips(&allocate(&sets, &[], "c2", "eth0", &mut st).unwrap()), ["10.0.0.3"]);
    }

    #[test]
    fn round_robin_does_not_reuse_released_immediately() {
        let sets = [set("10.0.0.0/24", None, None)];
        let mut st = MemStore::default();
        allocate(&sets, &[], "c1", "eth0", &mut st).unwrap();
        st.release("c1", "eth0");
        assert_eq!(ips(&allocate(&sets, &[], "c2", "eth0", &mut st).unwrap()), ["10.0.0.3"]);
    }

    #[test]
    fn wraps_and_fills_holes() {
        let sets = [set("10.0.0.0/29", None, None)]; // .2 - .6
        let mut st = MemStore::default();
        for i in 0..5 {
            allocate(&sets, &[], &format!("c{i}"), "eth0", &mut st).unwrap();
        }
        st.release("c1", "eth0"); // frees .3
        assert_eq!(ips(&allocate(&sets, &[], "x", "eth0", &mut st).unwrap()), ["10.0.0.3"]);
    }

    #[test]
    fn dual_stack_gives_one_per_set() {
        let sets = [set("10.0.0.0/24", None, None), set("fd00::/64", None, None)];
        let mut st = MemStore::default();
        let l = allocate(&sets, &[], "c1", "eth0", &mut st).unwrap();
        assert_eq!(ips(&l), ["10.0.0.2", "fd00::2"]);
        assert_eq!((l[0].set, l[1].set), (0, 1));
    }

    #[test]
    fn duplicate_add_names_address() {
        let sets = [set("10.0.0.0/24", None, None)];
        let mut st = MemStore::default();
        allocate(&sets, &[], "c1", "eth0", &mut st).unwrap();
        let before = st.clone();
        let e = allocate(&sets, &[], "c1", "eth0", &mut st).unwrap_err();
        assert_eq!(e.code(), 103);
        assert!(e.to_string().contains("10.0.0.2") && e.to_string().contains("duplicate"), "{e}");
        assert_eq!(st.leases, before.leases);
        // Another interface of the same container is a different attachment.
        assert!(allocate(&sets, &[], "c1", "eth1", &mut st).is_ok());
    }

    #[test]
    fn legacy_lease_counts_as_held() {
        let sets = [set("10.0.0.0/24", None, None)];
        let mut st = MemStore::default();
        st.leases.insert(ip("10.0.0.7"), Owner::Legacy { container_id: "old".into() });
        let e = allocate(&sets, &[], "old", "eth0", &mut st).unwrap_err();
        assert!(e.to_string().contains("10.0.0.7") && e.to_string().contains("container old:"), "{e}");
        assert_eq!(st.release("old", "eth0"), vec![ip("10.0.0.7")]);
    }

    #[test]
    fn exhaustion_changes_nothing() {
        let sets = [set("10.0.0.0/24", None, None), set("10.1.0.0/30", None, None)]; // second: 1 address
        let mut st = MemStore::default();
        allocate(&sets, &[], "c1", "eth0", &mut st).unwrap();
        let before = st.clone();
        let e = allocate(&sets, &[], "c2", "eth0", &mut st).unwrap_err();
        assert_eq!(e.code(), 102, "{e}");
        assert!(e.to_string().contains("range set 1"), "{e}");
        assert_eq!(st.leases, before.leases);
        assert_eq!(st.last, before.last);
    }

    #[test]
    fn requested_addresses() {
        let sets = [set("10.0.0.0/24", None, None), set("fd00::/64", None, None)];
        let mut st = MemStore::default();
        let l = allocate(&sets, &[req("fd00::42"), req("10.0.0.42")], "c1", "eth0", &mut st).unwrap();
        assert_eq!(ips(&l), ["10.0.0.42", "fd00::42"]);
        // Taken.
        let e = allocate(&sets, &[req("10.0.0.42")], "c2", "eth0", &mut st).unwrap_err();
        assert_eq!(e.code(), 103);
        assert!(e.to_string().contains("10.0.0.42") && e.to_string().contains("c1"), "{e}");
        assert!(st.held_by("c2", "eth0").unwrap().is_empty());
        // Gateway, outside, two in one set.
        assert_eq!(allocate(&sets, &[req("10.0.0.1")], "c3", "eth0", &mut st).unwrap_err().code(), 7);
        let e = allocate(&sets, &[req("10.9.0.1")], "c3", "eth0", &mut st).unwrap_err();
        assert!(e.to_string().contains("not in any range set"), "{e}");
        let e = allocate(&sets, &[req("10.0.0.50"), req("10.0.0.51")], "c3", "eth0", &mut st).unwrap_err();
        assert!(e.to_string().contains("both fall in range set 0"), "{e}");
        assert!(st.held_by("c3", "eth0").unwrap().is_empty());
    }

    #[test]
    fn requested_network_and_broadcast_refused() {
        let sets = [set("10.0.0.0/24", Some("10.0.0.0"), Some("10.0.0.255"))];
        let mut st = MemStore::default();
        for bad in ["10.0.0.0", "10.0.0.255", "10.0.0.1"] {
            let e = allocate(&sets, &[req(bad)], "c", "eth0", &mut st).unwrap_err();
            assert_eq!(e.code(), 7, "{bad}: {e}");
        }
    }

    #[test]
    fn requested_in_one_set_round_robin_in_other() {
        let sets = [set("10.0.0.0/24", None, None), set("fd00::/64", None, None)];
        let mut st = MemStore::default();
        let l = allocate(&sets, &[req("fd00::9")], "c1", "eth0", &mut st).unwrap();
        assert_eq!(ips(&l), ["10.0.0.2", "fd00::9"]);
    }

    #[test]
    fn failure_mid_way_rolls_back() {
        let sets = [set("10.0.0.0/24", None, None), set("fd00::/64", None, None)];
        let mut st = MemStore { fail_reserve_at: Some(2), ..Default::default() };
        let e = allocate(&sets, &[], "c1", "eth0", &mut st).unwrap_err();
        assert_eq!(e.code(), 5);
        assert!(st.leases.is_empty() && st.last.is_empty());
    }

    #[test]
    fn blocked_names_are_skipped() {
        let sets = [set("10.0.0.0/24", None, None)];
        let mut st = MemStore { blocked: vec![ip("10.0.0.2")], ..Default::default() };
        assert_eq!(ips(&allocate(&sets, &[], "c1", "eth0", &mut st).unwrap()), ["10.0.0.3"]);
    }

    #[test]
    fn owner_parsing() {
        assert_eq!(Owner::parse(b"abc\r\neth0"), Owner::attachment("abc", "eth0"));
        assert_eq!(Owner::parse(b" abc\r\neth0\n"), Owner::attachment("abc", "eth0"));
        assert_eq!(Owner::parse(b"abc"), Owner::Legacy { container_id: "abc".into() });
        assert_eq!(Owner::parse(b"abc\n"), Owner::Legacy { container_id: "abc".into() });
        assert_eq!(Owner::parse(b""), Owner::Unknown);
        assert_eq!(Owner::content(" abc ", "eth0"), "abc\r\neth0");
    }

    proptest::proptest! {
        /// Any interleaving of ADD and DEL over a small range: no address is ever held twice,
        /// allocation only fails when the range is full, and DEL releases exactly what ADD gave.
        #[test]
        fn no_double_allocation(ops in proptest::collection::vec((0u8..12, proptest::bool::ANY), 1..200)) {
            let sets = [set("10.0.0.0/28", Some("10.0.0.2"), Some("10.0.0.9"))]; // 8 addresses
            let mut st = MemStore::default();
            let mut live: BTreeMap<String, IpAddr> = BTreeMap::new();
            for (c, add) in ops {
                let cid = format!("c{c}");
                if add {
                    match allocate(&sets, &[], &cid, "eth0", &mut st) {
                        Ok(l) => {
                            proptest::prop_assert!(!live.contains_key(&cid));
                            proptest::prop_assert!(!live.values().any(|ip| *ip == l[0].ip));
                            live.insert(cid, l[0].ip);
                        }
                        Err(e) if e.code() == 103 => proptest::prop_assert!(live.contains_key(&cid)),
                        Err(e) => {
                            proptest::prop_assert_eq!(e.code(), 102);
                            proptest::prop_assert_eq!(live.len(), 8);
                        }
                    }
                } else {
                    let rel = st.release(&cid, "eth0");
                    let want: Vec<IpAddr> = live.remove(&cid).into_iter().collect();
                    proptest::prop_assert_eq!(rel, want);
                }
                proptest::prop_assert_eq!(st.leases.len(), live.len());
            }
        }
    }
}
