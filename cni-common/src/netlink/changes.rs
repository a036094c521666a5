//! Several changes to one namespace in one datagram ([`Changes`], [`Netlink::apply`]): the kernel
//! applies the messages of a datagram in order, each on its own, and acknowledges each, so a
//! sequence of changes costs one system call instead of a request and its answer per change.

use ipnetwork::IpNetwork;
use netlink_packet_core::{NLM_F_ACK, NLM_F_CREATE, NLM_F_EXCL};

use super::addr::{add_addr_flags, add_addr_message, add_addr_op};
use super::link::{flag_message, ipv4_conf_message, ipv4_conf_op, set_link_op};
use super::route::{route_message, route_op, Route};
use super::socket::encode;
use super::{AddrOpts, Netlink, NlError};
use netlink_packet_route::link::LinkFlags;
use netlink_packet_route::RouteNetlinkMessage;

/// What a change does, to name it in its error.
enum What {
    AddAddr { index: u32, addr: IpNetwork },
    Up { index: u32 },
    Ipv4Conf { index: u32 },
    AddRoute(Route),
}

/// Changes to send together with [`Netlink::apply`], in the order they are added.
#[derive(Default)]
pub struct Changes {
    msgs: Vec<(Vec<u8>, u16)>,
    what: Vec<What>,
}

impl Changes {
    pub fn new() -> Changes {
        Changes::default()
    }

    /// As [`Netlink::add_addr`].
    pub fn add_addr(&mut self, index: u32, addr: IpNetwork, opts: AddrOpts) -> &mut Changes {
        self.push(encode(add_addr_message(index, &addr, opts), 0, 0), add_addr_flags(opts), What::AddAddr { index, addr })
    }

    /// As [`Netlink::set_up`].
    pub fn set_up(&mut self, index: u32) -> &mut Changes {
        self.push(encode(RouteNetlinkMessage::SetLink(flag_message(index, LinkFlags::Up, true)), 0, 0), 0, What::Up { index })
    }

    /// As [`Netlink::set_ipv4_conf`].
    pub fn set_ipv4_conf(&mut self, index: u32, settings: &[(u16, u32)]) -> &mut Changes {
        self.push(ipv4_conf_message(index, settings), 0, What::Ipv4Conf { index })
    }

    /// As [`Netlink::add_route`]; a route that cannot be expressed is refused here.
    pub fn add_route(&mut self, route: &Route) -> Result<&mut Changes, NlError> {
        let msg = route_message(route, false).map_err(|why| NlError::invalid(route_op("add", route, None), why))?;
        Ok(self.push(encode(msg, 0, 0), NLM_F_CREATE | NLM_F_EXCL, What::AddRoute(route.clone())))
    }

    fn push(&mut self, msg: Vec<u8>, flags: u16, what: What) -> &mut Changes {
        self.msgs.push((msg, NLM_F_ACK | flags));
        self.what.push(what);
        self
    }

    pub fn len(&self) -> usize {
        self.msgs.len()
    }

    pub fn is_empty(&self) -> bool {
        self.msgs.is_empty()
    }
}

impl Netlink {
    /// Send `changes` in one datagram. The outer error is the exchange failing (nothing is known
    /// of what was applied); otherwise one result per change, in order, each error named as the
    /// single-change method names it. A change after a failed one is still applied: the kernel
    /// handles every message of the datagram.
    pub fn apply(&mut self, changes: Changes) -> Result<Vec<Result<(), NlError>>, NlError> {
        let Changes { msgs, what } = changes;
        let count = msgs.len();
        let replies = self.sock.send_batch(msgs).map_err(|e| e.with_op(format!("send {count} link, address and route changes")))?;
        let mut out: Vec<Option<Result<(), NlError>>> = (0..count).map(|_| None).collect();
        for r in replies {
            if let Some(slot) = out.get_mut(r.index) {
                *slot = Some(match r.error {
                    None => Ok(()),
                    Some(e) => Err(self.name_failure(&what[r.index], e)),
                });
            }
        }
        Ok(out
            .into_iter()
            .enumerate()
            .map(|(i, r)| {
                r.unwrap_or_else(|| {
                    Err(self.name_failure(&what[i], NlError::decode("no acknowledgement in the kernel's answer")))
                })
            })
            .collect())
    }

    /// `e` named as the single-change method for `what` names it.
    fn name_failure(&mut self, what: &What, e: NlError) -> NlError {
        match what {
            What::AddAddr { index, addr } => e.with_op(add_addr_op(addr, &self.link_label(*index))),
            What::Up { index } => e.with_op(set_link_op(&self.link_label(*index), "up")),
            What::Ipv4Conf { index } => e.with_op(ipv4_conf_op(*index)),
            What::AddRoute(route) => {
                let dev = route.oif.map(|i| self.link_label(i));
                e.with_op(route_op("add", route, dev.as_deref()))
            }
        }
    }
}
