//! rtnetlink operations every plugin needs (links, addresses, routes, bridge ports), over a
//! synchronous socket.
//!
//! A [`Netlink`] handle owns one NETLINK_ROUTE socket. A netlink socket belongs to the network
//! namespace it was created in, for its whole life: open a handle per namespace, from a thread that
//! is inside it (see [`crate::netns`]). Every request is acknowledged before the call returns; dumps
//! are retried when a concurrent change interrupts them (like the reference plugins' `netlinksafe`).
//!
//! Every failure is an [`NlError`] that names the operation and the object at fault; it converts into
//! [`crate::CniError`].
//!
//! ```no_run
//! use cni_common::netlink::{Netlink, VethSpec};
//! # fn main() -> Result<(), cni_common::netlink::NlError> {
//! let mut nl = Netlink::open()?;
//! nl.create_bridge("cni0", Some(1500), false)?;
//! let br = nl.link_by_name("cni0")?.expect("just created");
//! nl.set_up(br.index)?;
//! nl.create_veth(&VethSpec { master: Some(br.index), up: true, ..VethSpec::new("veth1a2b3c4d", "eth0") })?;
//! # Ok(()) }
//! ```

mod addr;
mod bridge;
mod changes;
mod error;
mod handoff;
mod link;
mod mac;
mod netconf;
mod route;
pub mod socket;

pub use addr::{Addr, AddrOpts};
pub use bridge::{BrPortFlags, VLAN_FILTERING};
pub use changes::Changes;
pub use error::NlError;
pub use handoff::DetachedDelete;
pub use link::{Link, VethSpec, IPV4_DEVCONF_ARP_NOTIFY, IPV4_DEVCONF_ROUTE_LOCALNET};
pub use mac::{format_mac, parse_mac, random_mac, random_veth_name};
pub use route::{Route, SCOPE_LINK, TABLE_MAIN};

use std::net::IpAddr;

/// An IP address family.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum IpFamily {
    V4,
    V6,
}

impl IpFamily {
    /// The family of `addr`.
    pub fn of(addr: &IpAddr) -> IpFamily {
        match addr {
            IpAddr::V4(_) => IpFamily::V4,
            IpAddr::V6(_) => IpFamily::V6,
        }
    }

    /// `AF_INET` or `AF_INET6`.
    pub fn af(self) -> u8 {
        match self {
            IpFamily::V4 => libc::AF_INET as u8,
            IpFamily::V6 => libc::AF_INET6 as u8,
        }
    }
}

impl std::fmt::Display for IpFamily {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            IpFamily::V4 => "IPv4",
            IpFamily::V6 => "IPv6",
        })
    }
}

/// A synchronous rtnetlink handle on one network namespace.
pub struct Netlink {
    sock: socket::Socket,
}

impl Netlink {
    /// Open a NETLINK_ROUTE socket bound to the calling thread's current network namespace.
    pub fn open() -> Result<Netlink, NlError> {
        Ok(Netlink { sock: socket::Socket::open()? })
    }

    /// `"eth0" (index 3)` when the link exists, else `index 3`: how error messages name a link
    /// known by index. Only called on error paths.
    fn link_label(&mut self, index: u32) -> String {
        match self.link_by_index(index) {
            Ok(Some(link)) => format!("{:?} (index {index})", link.name),
            _ => format!("index {index}"),
        }
    }
}

impl std::fmt::Debug for Netlink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Netlink").finish_non_exhaustive()
    }
}

/// Check an interface name the way the kernel does (`dev_valid_name`), so that a bad name is
/// reported as such rather than as a bare `EINVAL`.
fn check_ifname(op: &str, name: &str) -> Result<(), NlError> {
    let reason = if name.is_empty() {
        "empty interface name"
    } else if name.len() > 15 {
        "interface name longer than 15 bytes"
    } else if name == "." || name == ".." {
        "interface name cannot be \".\" or \"..\""
    } else if name.bytes().any(|b| b == b'/' || b == b':' || b == 0 || b.is_ascii_whitespace()) {
        "interface name contains '/', ':', NUL or whitespace"
    } else {
        return Ok(());
    };
    Err(NlError::invalid(op, format!("{reason}: {name:?}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ifname_rules() {
        assert!(check_ifname("op", "eth0").is_ok());
        assert!(check_ifname("op", "veth0123456789a").is_ok()); // 15 bytes
        for bad in ["", "veth0123456789ab", ".", "..", "a/b", "a:b", "a b", "a\tb"] {
            let e = check_ifname("create link", bad).expect_err(bad);
            assert_eq!(e.errno(), Some(libc::EINVAL));
            assert!(e.to_string().starts_with("create link: "), "{e}");
        }
    }
}
