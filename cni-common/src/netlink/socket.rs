//! The synchronous netlink transport: send one request, read its replies.
//!
//! The loop is protocol-independent ([`Socket::open_protocol`], [`Socket::request_raw`],
//! [`Socket::dump_raw`] and [`Socket::send_batch`] work on whole messages as bytes);
//! `Socket::open`, `Socket::request` and `Socket::dump` are its NETLINK_ROUTE face, used by the
//! rest of this module. Conntrack ([`crate::conntrack`]) uses the raw face over NETLINK_NETFILTER,
//! and so does the nf_tables executor of the firewall crate (batches of messages, each
//! acknowledged). [`put_attr`], [`put_nested`], [`parse_attrs`], [`find_attr`],
//! [`nfgen_message`] and [`nfgen_parts`] build and read such hand-made messages.
//!
//! Requests are sent with `NLM_F_ACK` and read until the acknowledgement (or the error that
//! replaces it); dumps are read until `NLMSG_DONE` and repeated, up to [`DUMP_ATTEMPTS`] times in
//! all, while the kernel flags a reply with `NLM_F_DUMP_INTR` (the table changed during the dump,
//! so the result may be inconsistent). Control messages (ack, error, done) are decoded here, with
//! the kernel's extended-ack text; link messages by the small parser in `link.rs`, the others by
//! `netlink-packet-route`.

use netlink_packet_core::{
    NetlinkMessage, NetlinkPayload, NLMSG_DONE, NLMSG_ERROR, NLMSG_NOOP, NLMSG_OVERRUN, NLM_F_ACK, NLM_F_ACK_TLVS,
    NLM_F_CAPPED, NLM_F_DUMP, NLM_F_DUMP_INTR, NLM_F_REQUEST,
};
use netlink_packet_route::RouteNetlinkMessage;
use netlink_sys::{protocols::NETLINK_ROUTE, Socket as SysSocket};

use super::NlError;

/// How many times a dump is attempted while the kernel reports it as interrupted.
pub const DUMP_ATTEMPTS: usize = 5;

/// Length of `struct nlmsghdr`.
pub const HEADER_LEN: usize = 16;
/// Length of `struct nfgenmsg`, the header after `struct nlmsghdr` in every nfnetlink message.
pub const NFGENMSG_LEN: usize = 4;
/// Length of `struct nlattr`.
pub const NLA_HDRLEN: usize = 4;
/// `NLA_F_NESTED`, set on the type of an attribute holding attributes.
pub const NLA_F_NESTED: u16 = 1 << 15;
/// `NLMSGERR_ATTR_MSG`: the extended-ack attribute holding the kernel's error text.
const NLMSGERR_ATTR_MSG: u16 = 1;
/// `NLMSGERR_ATTR_OFFS`: the extended-ack attribute holding the offset of the attribute at fault.
const NLMSGERR_ATTR_OFFS: u16 = 2;
/// Receive-buffer room counted per acknowledgement of a batch (an ack is a small message, but
/// the buffer is charged the whole socket buffer it sits in).
const ACK_TRUESIZE: usize = 2048;
/// How long [`Socket::send_batch`] waits for the kernel's answers before giving up.
const BATCH_REPLY_TIMEOUT_MS: i32 = 30_000;
/// Receive buffer: twice the largest dump datagram the kernel builds (32 KiB).
const RECV_BUF: usize = 64 * 1024;

/// A netlink socket, bound to the network namespace it was created in (for its whole life).
///
/// Not `Sync`: one request at a time. Open one per thread (and namespace) that needs it.
pub struct Socket {
    sock: SysSocket,
    seq: u32,
    buf: Vec<u8>,
}

impl Socket {
    /// Open and bind a NETLINK_ROUTE socket in the calling thread's network namespace.
    ///
    /// The socket asks for strict checking of dump requests (kernels since 4.20), so the kernel
    /// filters dumps by the fields a request sets (an address dump by link index, a link dump by
    /// master) instead of sending every object of the namespace. Callers still filter what they get
    /// back, so an older kernel that ignores the option only costs time.
    pub(crate) fn open() -> Result<Socket, NlError> {
        let sock = Socket::open_protocol(NETLINK_ROUTE, "NETLINK_ROUTE")?;
        let _ = sock.sock.set_netlink_get_strict_chk(true);
        Ok(sock)
    }

    /// Open and bind a NETLINK_NETFILTER socket (nfnetlink: conntrack, nf_tables) in the calling
    /// thread's network namespace.
    pub fn open_netfilter() -> Result<Socket, NlError> {
        Socket::open_protocol(netlink_sys::protocols::NETLINK_NETFILTER, "NETLINK_NETFILTER")
    }

    /// Open and bind a socket of netlink `protocol` (called `name` in errors) in the calling
    /// thread's network namespace.
    pub fn open_protocol(protocol: isize, name: &str) -> Result<Socket, NlError> {
        let mut sock = SysSocket::new(protocol).map_err(|e| NlError::io(e).with_op(format!("open {name} socket")))?;
        sock.bind_auto().map_err(|e| NlError::io(e).with_op(format!("bind {name} socket")))?;
        // Both options are optional comforts (kernels since 4.3 and 4.12): error replies without a
        // copy of the request, and with the kernel's explanation. Failing to set them loses only that.
        let _ = sock.set_cap_ack(true);
        let _ = sock.set_ext_ack(true);
        Ok(Socket { sock, seq: 0, buf: Vec::with_capacity(RECV_BUF) })
    }

    /// The socket's file descriptor (for ioctls that any socket of the namespace answers).
    pub(crate) fn raw_fd(&self) -> std::os::fd::RawFd {
        use std::os::fd::AsRawFd;
        self.sock.as_raw_fd()
    }

    /// Join netlink multicast group `group` (`RTNLGRP_*`): the socket then also receives the
    /// kernel's notifications of that group (read them with [`Socket::try_recv_notification`]).
    pub(crate) fn subscribe(&mut self, group: u32) -> Result<(), NlError> {
        self.sock.add_membership(group).map_err(|e| NlError::io(e).with_op(format!("join netlink group {group}")))
    }

    /// Take one queued datagram without waiting: `None` when none is queued, else whether any
    /// message in it (whole, header included) satisfies `wanted`. An error (`ENOBUFS`: the
    /// kernel dropped notifications for lack of room) is returned as such.
    pub(crate) fn try_recv_notification(&mut self, wanted: impl Fn(&[u8]) -> bool) -> Result<Option<bool>, NlError> {
        let n = match self.recv_flags(libc::MSG_DONTWAIT) {
            Ok(n) => n,
            Err(e) if e.errno == Some(libc::EAGAIN) => return Ok(None),
            Err(e) => return Err(e),
        };
        Ok(Some(messages(&self.buf[..n]).any(|m| m.is_ok_and(&wanted))))
    }

    /// Send a request (with `NLM_F_ACK` added to `flags`) and wait for its acknowledgement.
    /// Returns the messages the kernel sent before it: the reply to a GET, nothing for changes.
    pub(crate) fn request(
        &mut self,
        msg: RouteNetlinkMessage,
        flags: u16,
    ) -> Result<Vec<RouteNetlinkMessage>, NlError> {
        self.request_raw(encode(msg, 0, 0), flags, decode_route)
    }

    /// Dump: send `msg` with `NLM_F_DUMP` and collect every reply until `NLMSG_DONE`, repeating
    /// the whole dump when it was interrupted by a concurrent change.
    pub(crate) fn dump(&mut self, msg: RouteNetlinkMessage) -> Result<Vec<RouteNetlinkMessage>, NlError> {
        self.dump_raw(encode(msg, 0, 0), decode_route)
    }

    /// Send a request with `NLM_F_ACK` and wait for its acknowledgement, for any protocol; returns
    /// what the kernel sent before the ack (the reply to a GET). `msg` is a whole netlink message
    /// (header included, its length filled in); its flags (`NLM_F_REQUEST | NLM_F_ACK | flags`) and sequence number
    /// are set here. Every data message of the reply (whole, header included) goes through
    /// `parse`; the values it keeps (`Some`) are returned.
    pub fn request_raw<T>(
        &mut self,
        mut msg: Vec<u8>,
        flags: u16,
        mut parse: impl FnMut(&[u8]) -> Result<Option<T>, NlError>,
    ) -> Result<Vec<T>, NlError> {
        let seq = self.send(&mut msg, NLM_F_REQUEST | NLM_F_ACK | flags)?;
        self.collect(seq, &mut parse).map(|(out, _)| out)
    }

    /// Dump (`NLM_F_DUMP`, read until `NLMSG_DONE`) for any protocol, repeated while the kernel
    /// flags the dump as interrupted by a concurrent change; `msg` and `parse` as for
    /// [`Socket::request_raw`]. The values of an interrupted attempt are discarded.
    pub fn dump_raw<T>(
        &mut self,
        mut msg: Vec<u8>,
        mut parse: impl FnMut(&[u8]) -> Result<Option<T>, NlError>,
    ) -> Result<Vec<T>, NlError> {
        for _ in 0..DUMP_ATTEMPTS {
            let seq = self.send(&mut msg, NLM_F_REQUEST | NLM_F_DUMP)?;
            let (out, interrupted) = self.collect(seq, &mut parse)?;
            if !interrupted {
                return Ok(out);
            }
        }
        Err(NlError::os(
            libc::EINTR,
            Some(format!("dump interrupted by concurrent changes {DUMP_ATTEMPTS} times in a row")),
        ))
    }

    /// Whether a dump of `msg` has a data message `found` accepts, read only until the first: the
    /// kernel fills a dump one buffer at a time, as it is read, so the answer costs the first
    /// buffers of a long dump, not all of it. The socket is consumed: a dump left unread must not
    /// meet the next request (it is dropped with the socket). When the answer is no and the dump
    /// was interrupted by a concurrent change, it is asked again.
    pub fn dump_finds(mut self, mut msg: Vec<u8>, mut found: impl FnMut(&[u8]) -> Result<bool, NlError>) -> Result<bool, NlError> {
        for _ in 0..DUMP_ATTEMPTS {
            let seq = self.send(&mut msg, NLM_F_REQUEST | NLM_F_DUMP)?;
            let mut hit = false;
            let (_, interrupted) = self.collect(seq, &mut |raw: &[u8]| -> Result<Option<()>, NlError> {
                if found(raw)? {
                    hit = true;
                    // ends `collect` at once: the rest of the dump is left unread
                    return Err(NlError::os(libc::ECANCELED, None));
                }
                Ok(None)
            }).or_else(|e| if hit { Ok((Vec::new(), false)) } else { Err(e) })?;
            if hit {
                return Ok(true);
            }
            if !interrupted {
                return Ok(false);
            }
        }
        Err(NlError::os(
            libc::EINTR,
            Some(format!("dump interrupted by concurrent changes {DUMP_ATTEMPTS} times in a row")),
        ))
    }

    /// Send `msgs` — whole messages with their extra header flags — in one datagram, each with its
    /// own sequence number (`NLM_F_REQUEST` is added to every one), and collect the kernel's
    /// acknowledgements and errors.
    ///
    /// Returns once every message sent with `NLM_F_ACK` is answered and nothing more is queued (a
    /// protocol that processes the datagram synchronously — nfnetlink batches — has then said all
    /// it will say). The kernel answers a message without `NLM_F_ACK` only when it fails, so a
    /// batch can ask for one acknowledgement (its last message) and still learn which message
    /// failed. Errors for messages without `NLM_F_ACK` (e.g. a batch header) are returned too.
    /// Replies carrying data (echoes) are skipped. The socket's send buffer is enlarged when the
    /// datagram needs it.
    pub fn send_batch(&mut self, msgs: Vec<(Vec<u8>, u16)>) -> Result<Vec<BatchReply>, NlError> {
        let mut datagram = Vec::with_capacity(msgs.iter().map(|(m, _)| align4(m.len())).sum());
        let first_seq = self.seq.wrapping_add(1);
        let mut expected = Vec::with_capacity(msgs.len());
        let mut offsets = Vec::with_capacity(msgs.len());
        for (i, (mut msg, flags)) in msgs.into_iter().enumerate() {
            if msg.len() < HEADER_LEN || u32_at(&msg, 0) as usize != msg.len() {
                return Err(NlError::invalid(
                    "send netlink batch",
                    format!("message {i}: {} bytes with a header length of {}", msg.len(), msg.get(..4).map_or(0, |b| u32_at(b, 0))),
                ));
            }
            self.seq = self.seq.wrapping_add(1);
            msg[6..8].copy_from_slice(&(NLM_F_REQUEST | flags).to_ne_bytes());
            msg[8..12].copy_from_slice(&self.seq.to_ne_bytes());
            if flags & NLM_F_ACK != 0 {
                expected.push(i);
            }
            offsets.push(datagram.len());
            datagram.extend_from_slice(&msg);
            datagram.resize(align4(datagram.len()), 0);
        }
        let count = offsets.len();
        if count == 0 {
            return Ok(Vec::new());
        }
        self.ensure_buf(libc::SO_SNDBUF, libc::SO_SNDBUFFORCE, datagram.len() + 4096);
        // Protocols that process the datagram synchronously (nfnetlink) queue every answer before
        // the send returns: the receive buffer must hold them all, or they are dropped (ENOBUFS).
        self.ensure_buf(libc::SO_RCVBUF, libc::SO_RCVBUFFORCE, count.saturating_mul(ACK_TRUESIZE) + RECV_BUF);
        loop {
            match self.sock.send(&datagram, 0) {
                Ok(n) if n == datagram.len() => break,
                Ok(n) => return Err(NlError::decode(format!("short netlink send: {n} of {} bytes", datagram.len()))),
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(NlError::io(e).with_op("send netlink batch")),
            }
        }
        let index_of = |seq: u32| -> Option<usize> {
            let i = seq.wrapping_sub(first_seq) as usize;
            (i < count).then_some(i)
        };
        let mut replies: Vec<BatchReply> = Vec::new();
        let mut answered = vec![false; count];
        loop {
            let lost = |e: NlError| {
                if e.errno == Some(libc::ENOBUFS) {
                    e.with_op(format!("receive the answers to a batch of {count} messages (some were dropped: the batch may have been applied)"))
                } else {
                    e
                }
            };
            // A protocol that handles the datagram while it is sent (nfnetlink) has queued every
            // answer by now; read until the queue is empty, waiting only while an acknowledgement
            // asked for is still missing. An error (a commit error comes first) is kept with
            // everything else the kernel said.
            let waiting = !expected.iter().all(|&i| answered[i]);
            let n = match self.recv_ready(if waiting { BATCH_REPLY_TIMEOUT_MS } else { 0 }).map_err(lost)? {
                Some(n) => n,
                None if waiting => {
                    return Err(NlError::os(libc::ETIMEDOUT, Some(format!("no answer to a batch of {count} messages"))))
                }
                None => break,
            };
            for raw in messages(&self.buf[..n]) {
                let raw = raw?;
                let (kind, flags, seq) = (u16_at(raw, 4), u16_at(raw, 6), u32_at(raw, 8));
                let Some(index) = index_of(seq) else { continue };
                if kind != NLMSG_ERROR {
                    continue;
                }
                if raw.len() < HEADER_LEN + 4 {
                    return Err(NlError::decode("truncated netlink error message"));
                }
                let code = i32_at(raw, HEADER_LEN);
                let payload = &raw[HEADER_LEN + 4..];
                let (error, bad_attr) = if code == 0 {
                    (None, None)
                } else {
                    let tlvs = error_ext_ack_tlvs(flags, payload);
                    let text = tlvs.and_then(|t| ext_ack_tlv(t, NLMSGERR_ATTR_MSG)).map(tlv_string);
                    let offs = tlvs.and_then(|t| ext_ack_tlv(t, NLMSGERR_ATTR_OFFS)).filter(|v| v.len() >= 4).map(|v| u32_at(v, 0));
                    (Some(NlError::os(code.saturating_neg(), text)), offs)
                };
                answered[index] = true;
                replies.push(BatchReply { index, error, bad_attr });
            }
        }
        replies.sort_by_key(|r| r.index);
        Ok(replies)
    }

    /// Make sure socket buffer `opt` (`SO_SNDBUF` / `SO_RCVBUF`) holds at least `len` bytes,
    /// raising it with `force` (`SO_*BUFFORCE`, which needs CAP_NET_ADMIN — programming the
    /// firewall needs it anyway) or else `opt`. Never lowers it; failing to raise it is left to
    /// show as the error of the send or receive that needed it.
    fn ensure_buf(&self, opt: libc::c_int, force: libc::c_int, len: usize) {
        use std::os::fd::AsRawFd;
        let fd = self.sock.as_raw_fd();
        let mut cur: libc::c_int = 0;
        let mut optlen = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
        // SAFETY: getsockopt writes at most `optlen` bytes into `cur`.
        let got = unsafe { libc::getsockopt(fd, libc::SOL_SOCKET, opt, (&mut cur as *mut libc::c_int).cast(), &mut optlen) };
        // The kernel reports the doubled value it uses (half of it for its own bookkeeping).
        if got == 0 && usize::try_from(cur).unwrap_or(0) / 2 >= len {
            return;
        }
        let want = libc::c_int::try_from(len).unwrap_or(libc::c_int::MAX / 2);
        for o in [force, opt] {
            // SAFETY: setsockopt reads an int from a valid pointer of the given length.
            let r = unsafe {
                libc::setsockopt(
                    fd,
                    libc::SOL_SOCKET,
                    o,
                    (&want as *const libc::c_int).cast(),
                    std::mem::size_of::<libc::c_int>() as libc::socklen_t,
                )
            };
            if r == 0 {
                return;
            }
        }
    }

    /// Receive a datagram, waiting up to `timeout_ms` for one (see [`Socket::recv`]); `None` when
    /// none came in time. A datagram already queued is taken without a `poll`.
    fn recv_ready(&mut self, timeout_ms: i32) -> Result<Option<usize>, NlError> {
        use std::os::fd::AsRawFd;
        match self.recv_flags(libc::MSG_DONTWAIT) {
            Ok(n) => return Ok(Some(n)),
            Err(e) if e.errno == Some(libc::EAGAIN) => {}
            Err(e) => return Err(e),
        }
        if timeout_ms == 0 {
            return Ok(None);
        }
        let mut pfd = libc::pollfd { fd: self.sock.as_raw_fd(), events: libc::POLLIN, revents: 0 };
        loop {
            // SAFETY: one valid pollfd.
            let r = unsafe { libc::poll(&mut pfd, 1, timeout_ms) };
            if r < 0 {
                let e = std::io::Error::last_os_error();
                if e.kind() == std::io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(NlError::io(e));
            }
            if r == 0 {
                return Ok(None);
            }
            return self.recv().map(Some);
        }
    }

    /// Stamp `bytes` (a whole message) with `flags` and the next sequence number, and send it.
    fn send(&mut self, bytes: &mut [u8], flags: u16) -> Result<u32, NlError> {
        if bytes.len() < HEADER_LEN {
            return Err(NlError::invalid(
                "send netlink message",
                format!("{} bytes, shorter than a header", bytes.len()),
            ));
        }
        self.seq = self.seq.wrapping_add(1);
        bytes[6..8].copy_from_slice(&flags.to_ne_bytes());
        bytes[8..12].copy_from_slice(&self.seq.to_ne_bytes());
        loop {
            match self.sock.send(bytes, 0) {
                Ok(n) if n == bytes.len() => return Ok(self.seq),
                Ok(n) => return Err(NlError::decode(format!("short netlink send: {n} of {} bytes", bytes.len()))),
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(NlError::io(e)),
            }
        }
    }

    /// Receive one datagram whole into `self.buf`; returns its length.
    fn recv(&mut self) -> Result<usize, NlError> {
        self.recv_flags(0)
    }

    /// [`Socket::recv`] with extra `recv(2)` flags (`MSG_DONTWAIT`).
    ///
    /// One `recv` per datagram into a buffer of [`RECV_BUF`] bytes: the kernel builds dump replies
    /// of at most 32 KiB (its cap for a reader with a large buffer), and the single-object replies
    /// this suite asks for are far smaller. `MSG_TRUNC` makes the kernel report a datagram's full
    /// size, so one that did not fit is an error naming its size, never a silent truncation; the
    /// buffer is then grown for the next request.
    fn recv_flags(&mut self, flags: libc::c_int) -> Result<usize, NlError> {
        loop {
            self.buf.clear();
            self.buf.reserve(RECV_BUF);
            let room = self.buf.capacity();
            match self.sock.recv(&mut self.buf, libc::MSG_TRUNC | flags) {
                Ok(n) if n <= room => return Ok(n),
                Ok(n) => {
                    self.buf.reserve(n);
                    return Err(NlError::decode(format!(
                        "netlink datagram of {n} bytes did not fit the {room}-byte receive buffer and was lost"
                    )));
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(NlError::io(e)),
            }
        }
    }

    /// Read replies to request `seq` until its ack, error or done. Returns what `parse` kept of the
    /// data messages and whether any reply was flagged `NLM_F_DUMP_INTR`. Replies to other
    /// (earlier, abandoned) requests are skipped.
    fn collect<T>(
        &mut self,
        seq: u32,
        parse: &mut impl FnMut(&[u8]) -> Result<Option<T>, NlError>,
    ) -> Result<(Vec<T>, bool), NlError> {
        let mut out = Vec::new();
        let mut interrupted = false;
        loop {
            let n = self.recv()?;
            for raw in messages(&self.buf[..n]) {
                let raw = raw?;
                let (kind, flags, msg_seq) = (u16_at(raw, 4), u16_at(raw, 6), u32_at(raw, 8));
                if msg_seq != seq {
                    continue;
                }
                if flags & NLM_F_DUMP_INTR != 0 {
                    interrupted = true;
                }
                match kind {
                    NLMSG_NOOP => {}
                    NLMSG_ERROR => {
                        if raw.len() < HEADER_LEN + 4 {
                            return Err(NlError::decode("truncated netlink error message"));
                        }
                        let code = i32_at(raw, HEADER_LEN);
                        if code == 0 {
                            return Ok((out, interrupted));
                        }
                        let text = error_ext_ack(flags, &raw[HEADER_LEN + 4..]);
                        return Err(NlError::os(code.saturating_neg(), text));
                    }
                    NLMSG_DONE => {
                        // The payload (an int) may be absent; a negative value is a dump error.
                        let code = if raw.len() >= HEADER_LEN + 4 { i32_at(raw, HEADER_LEN) } else { 0 };
                        if code < 0 {
                            let tlvs = &raw[HEADER_LEN + 4..];
                            let text = if flags & NLM_F_ACK_TLVS != 0 { tlv_message(tlvs) } else { None };
                            return Err(NlError::os(code.saturating_neg(), text));
                        }
                        return Ok((out, interrupted));
                    }
                    NLMSG_OVERRUN => return Err(NlError::decode("netlink overrun: data lost")),
                    _ => out.extend(parse(raw)?),
                }
            }
        }
    }
}

impl std::os::fd::AsFd for Socket {
    fn as_fd(&self) -> std::os::fd::BorrowedFd<'_> {
        // SAFETY: the descriptor is open for as long as `self` is borrowed.
        unsafe { std::os::fd::BorrowedFd::borrow_raw(self.raw_fd()) }
    }
}

/// The netlink messages of one received datagram, each whole (header included); a malformed length
/// ends the walk with an error.
fn messages(datagram: &[u8]) -> impl Iterator<Item = Result<&[u8], NlError>> + '_ {
    let mut off = 0;
    let mut broken = false;
    std::iter::from_fn(move || {
        if broken || datagram.len() - off < HEADER_LEN {
            return None;
        }
        let data = &datagram[off..];
        let len = u32_at(data, 0) as usize;
        if len < HEADER_LEN || len > data.len() {
            broken = true;
            return Some(Err(NlError::decode(format!(
                "malformed netlink message: length {len}, {} bytes left",
                data.len()
            ))));
        }
        off += align4(len).min(data.len());
        Some(Ok(&data[..len]))
    })
}

/// Decode an rtnetlink data message; control payloads are dropped.
fn decode_route(raw: &[u8]) -> Result<Option<RouteNetlinkMessage>, NlError> {
    let msg = NetlinkMessage::<RouteNetlinkMessage>::deserialize(raw)
        .map_err(|e| NlError::decode(format!("cannot decode netlink message of type {}: {e}", u16_at(raw, 4))))?;
    Ok(match msg.payload {
        NetlinkPayload::InnerMessage(inner) => Some(inner),
        _ => None,
    })
}

/// Serialize `msg` as a netlink message with the given header flags and sequence number.
pub(crate) fn encode(msg: RouteNetlinkMessage, flags: u16, seq: u32) -> Vec<u8> {
    let mut nl = NetlinkMessage::from(msg);
    nl.header.flags = flags;
    nl.header.sequence_number = seq;
    nl.finalize();
    let mut bytes = vec![0u8; nl.buffer_len()];
    nl.serialize(&mut bytes);
    bytes
}

/// The kernel's text in an `NLMSG_ERROR` payload (after the error code): the payload starts with
/// the failed request (only its header when `NLM_F_CAPPED`), followed by TLVs when `NLM_F_ACK_TLVS`.
pub(crate) fn error_ext_ack(flags: u16, payload: &[u8]) -> Option<String> {
    error_ext_ack_tlvs(flags, payload).and_then(tlv_message)
}

/// The extended-ack TLVs of an `NLMSG_ERROR` payload (after the error code), if any.
fn error_ext_ack_tlvs(flags: u16, payload: &[u8]) -> Option<&[u8]> {
    if flags & NLM_F_ACK_TLVS == 0 || payload.len() < HEADER_LEN {
        return None;
    }
    let request_len = if flags & NLM_F_CAPPED != 0 { HEADER_LEN } else { u32_at(payload, 0) as usize };
    payload.get(align4(request_len)..)
}

/// The `NLMSGERR_ATTR_MSG` string among extended-ack TLVs.
fn tlv_message(tlvs: &[u8]) -> Option<String> {
    ext_ack_tlv(tlvs, NLMSGERR_ATTR_MSG).map(tlv_string)
}

/// The value of extended-ack TLV `kind`; `None` when absent or when the TLVs are malformed.
fn ext_ack_tlv(mut tlvs: &[u8], kind: u16) -> Option<&[u8]> {
    while tlvs.len() >= 4 {
        let len = u16_at(tlvs, 0) as usize;
        let k = u16_at(tlvs, 2) & netlink_packet_core::NLA_TYPE_MASK;
        if len < 4 || len > tlvs.len() {
            return None;
        }
        if k == kind {
            return Some(&tlvs[4..len]);
        }
        tlvs = tlvs.get(align4(len)..)?;
    }
    None
}

/// A NUL-terminated string value, trimmed.
fn tlv_string(value: &[u8]) -> String {
    let end = value.iter().position(|&b| b == 0).unwrap_or(value.len());
    String::from_utf8_lossy(&value[..end]).trim().to_string()
}

/// `len` rounded up to the netlink alignment (4 bytes).
pub fn align4(len: usize) -> usize {
    (len + 3) & !3
}

/// The kernel's answer to one message of [`Socket::send_batch`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BatchReply {
    /// Index of the message in the batch.
    pub index: usize,
    /// `None` for an acknowledgement, the error (errno and the kernel's text) otherwise.
    pub error: Option<NlError>,
    /// For an error, the offset of the attribute the kernel blamed from the start of that message
    /// (extended ack `NLMSGERR_ATTR_OFFS`), when it named one.
    pub bad_attr: Option<u32>,
}

// ---- Hand-built messages: attributes and nfnetlink headers ----

/// Append attribute `kind` holding `value`, padded to 4 bytes.
pub fn put_attr(out: &mut Vec<u8>, kind: u16, value: &[u8]) {
    out.extend_from_slice(&((NLA_HDRLEN + value.len()) as u16).to_ne_bytes());
    out.extend_from_slice(&kind.to_ne_bytes());
    out.extend_from_slice(value);
    out.resize(align4(out.len()), 0);
}

/// Append nested attribute `kind` (with `NLA_F_NESTED`) whose content `fill` appends.
pub fn put_nested(out: &mut Vec<u8>, kind: u16, fill: impl FnOnce(&mut Vec<u8>)) {
    let start = out.len();
    out.extend_from_slice(&[0; NLA_HDRLEN]);
    fill(out);
    let len = (out.len() - start) as u16;
    out[start..start + 2].copy_from_slice(&len.to_ne_bytes());
    out[start + 2..start + 4].copy_from_slice(&(kind | NLA_F_NESTED).to_ne_bytes());
}

/// The attributes in `buf` as `(type without flag bits, value)`, in order; an error for a
/// malformed one (the last attribute may go unpadded).
pub fn parse_attrs(buf: &[u8]) -> Result<Vec<(u16, &[u8])>, NlError> {
    iter_attrs(buf, "netlink").collect()
}

/// The value of the first attribute `kind` in `buf` (flag bits ignored), reading no further than
/// it: only the attributes before it are checked. Errors name the attributes as `what`'s.
pub fn find_attr<'a>(buf: &'a [u8], kind: u16, what: &'static str) -> Result<Option<&'a [u8]>, NlError> {
    for attr in iter_attrs(buf, what) {
        let (k, value) = attr?;
        if k == kind {
            return Ok(Some(value));
        }
    }
    Ok(None)
}

/// The attributes in `buf`, one at a time, as [`parse_attrs`] reads them; a malformed attribute
/// is an error (`"truncated {what} attribute: …"`, `"malformed {what} attribute: …"`) that ends
/// the walk.
pub fn iter_attrs<'a>(buf: &'a [u8], what: &'static str) -> AttrIter<'a> {
    AttrIter { buf, what }
}

/// The iterator of [`iter_attrs`].
#[derive(Debug, Clone)]
pub struct AttrIter<'a> {
    buf: &'a [u8],
    what: &'static str,
}

impl<'a> Iterator for AttrIter<'a> {
    type Item = Result<(u16, &'a [u8]), NlError>;

    fn next(&mut self) -> Option<Self::Item> {
        let buf = self.buf;
        if buf.is_empty() {
            return None;
        }
        let what = self.what;
        if buf.len() < NLA_HDRLEN {
            self.buf = &[];
            return Some(Err(NlError::decode(format!("truncated {what} attribute: {} bytes left", buf.len()))));
        }
        let len = usize::from(u16_at(buf, 0));
        if len < NLA_HDRLEN || len > buf.len() {
            self.buf = &[];
            return Some(Err(NlError::decode(format!("malformed {what} attribute: length {len}, {} bytes left", buf.len()))));
        }
        self.buf = &buf[align4(len).min(buf.len())..];
        Some(Ok((u16_at(buf, 2) & netlink_packet_core::NLA_TYPE_MASK, &buf[NLA_HDRLEN..len])))
    }
}

/// An nfnetlink message: header (`kind` = subsystem << 8 | message type; flags and sequence
/// number left for the socket to fill in), `nfgenmsg { family, version 0, res_id }` (`res_id` in
/// network byte order), then `attrs`.
pub fn nfgen_message(kind: u16, family: u8, res_id: u16, attrs: &[u8]) -> Vec<u8> {
    let [r0, r1] = res_id.to_be_bytes();
    let nfgenmsg: [u8; NFGENMSG_LEN] = [family, 0, r0, r1]; // version NFNETLINK_V0
    raw_message(kind, &nfgenmsg, attrs)
}

/// A netlink message of type `kind`: header (flags, sequence number and port id left for the
/// socket to fill in), the type's fixed header `fixed` (its length a multiple of 4), then `attrs`.
pub fn raw_message(kind: u16, fixed: &[u8], attrs: &[u8]) -> Vec<u8> {
    let len = HEADER_LEN + fixed.len() + attrs.len();
    let mut out = Vec::with_capacity(len);
    out.extend_from_slice(&(len as u32).to_ne_bytes());
    out.extend_from_slice(&kind.to_ne_bytes());
    out.extend_from_slice(&0u16.to_ne_bytes()); // flags
    out.extend_from_slice(&0u32.to_ne_bytes()); // sequence number
    out.extend_from_slice(&0u32.to_ne_bytes()); // port id: the kernel's
    out.extend_from_slice(fixed);
    out.extend_from_slice(attrs);
    out
}

/// The parts of an nfnetlink message (header included): its type (subsystem << 8 | message
/// type), `nfgenmsg.family` and its attributes; `None` when it is shorter than its two headers.
pub fn nfgen_parts(raw: &[u8]) -> Option<(u16, u8, &[u8])> {
    if raw.len() < HEADER_LEN + NFGENMSG_LEN {
        return None;
    }
    Some((u16_at(raw, 4), raw[HEADER_LEN], &raw[HEADER_LEN + NFGENMSG_LEN..]))
}

// Callers check lengths first; these read native-endian integers at `off`.
/// The native-endian `u16` at `off` of a message (bounds checked by the caller).
pub(crate) fn u16_at(b: &[u8], off: usize) -> u16 {
    u16::from_ne_bytes([b[off], b[off + 1]])
}

/// The native-endian `u32` at `off` of a message (bounds checked by the caller).
pub(crate) fn u32_at(b: &[u8], off: usize) -> u32 {
    u32::from_ne_bytes([b[off], b[off + 1], b[off + 2], b[off + 3]])
}

/// The native-endian `i32` at `off` of a message (bounds checked by the caller).
pub(crate) fn i32_at(b: &[u8], off: usize) -> i32 {
    u32_at(b, off) as i32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn datagram_split_into_messages() {
        let msg = |len: u32, fill: u8| {
            let mut m = len.to_ne_bytes().to_vec();
            m.resize(len as usize, fill);
            m
        };
        // 20-byte message, then an 18-byte one padded to 20, then a 16-byte one
        let mut dg = msg(20, 1);
        dg.extend(msg(18, 2));
        dg.extend([0, 0]);
        dg.extend(msg(16, 3));
        let parts: Vec<&[u8]> = messages(&dg).collect::<Result<_, _>>().unwrap();
        assert_eq!(parts.iter().map(|p| p.len()).collect::<Vec<_>>(), vec![20, 18, 16]);
        assert_eq!(parts[1][17], 2);
        // a length past the end is an error, and the walk stops there
        let mut bad = msg(16, 1);
        bad.extend(64u32.to_ne_bytes());
        bad.resize(40, 0);
        let out: Vec<_> = messages(&bad).collect();
        assert_eq!(out.len(), 2);
        assert!(out[0].is_ok() && out[1].is_err());
        assert_eq!(messages(&[0u8; 8]).count(), 0);
    }

    fn tlv(kind: u16, value: &[u8]) -> Vec<u8> {
        let mut v = Vec::new();
        v.extend_from_slice(&((4 + value.len()) as u16).to_ne_bytes());
        v.extend_from_slice(&kind.to_ne_bytes());
        v.extend_from_slice(value);
        v.resize(align4(v.len()), 0);
        v
    }

    #[test]
    fn ext_ack_after_capped_header() {
        let mut payload = vec![0u8; HEADER_LEN];
        payload[..4].copy_from_slice(&40u32.to_ne_bytes()); // request was 40 bytes, only its header echoed
        payload.extend(tlv(3, &7u32.to_ne_bytes())); // NLMSGERR_ATTR_OFFS, skipped
        payload.extend(tlv(NLMSGERR_ATTR_MSG, b"Unknown device type\0"));
        assert_eq!(error_ext_ack(NLM_F_ACK_TLVS | NLM_F_CAPPED, &payload).as_deref(), Some("Unknown device type"));
        assert_eq!(error_ext_ack(NLM_F_CAPPED, &payload), None);
    }

    #[test]
    fn ext_ack_after_full_request() {
        let mut payload = vec![0u8; 20];
        payload[..4].copy_from_slice(&20u32.to_ne_bytes());
        payload.extend(tlv(NLMSGERR_ATTR_MSG, b"bad\0"));
        assert_eq!(error_ext_ack(NLM_F_ACK_TLVS, &payload).as_deref(), Some("bad"));
        // Truncated TLVs give no text rather than a panic.
        assert_eq!(error_ext_ack(NLM_F_ACK_TLVS, &payload[..22]), None);
    }

    #[test]
    fn ext_ack_offset_of_the_bad_attribute() {
        let mut payload = vec![0u8; HEADER_LEN];
        payload[..4].copy_from_slice(&60u32.to_ne_bytes());
        payload.extend(tlv(NLMSGERR_ATTR_MSG, b"Set element exists\0"));
        payload.extend(tlv(NLMSGERR_ATTR_OFFS, &52u32.to_ne_bytes()));
        let tlvs = error_ext_ack_tlvs(NLM_F_ACK_TLVS | NLM_F_CAPPED, &payload).unwrap();
        assert_eq!(ext_ack_tlv(tlvs, NLMSGERR_ATTR_OFFS), Some(&52u32.to_ne_bytes()[..]));
        assert_eq!(tlv_message(tlvs).as_deref(), Some("Set element exists"));
    }

    #[test]
    fn hand_built_messages() {
        let mut attrs = Vec::new();
        put_attr(&mut attrs, 1, b"abc\0");
        put_nested(&mut attrs, 2, |n| put_attr(n, 1, &7u32.to_be_bytes()));
        // 4 + 4 (padded from 8) ; nested: 4 + 8
        assert_eq!(attrs.len(), 8 + 12);
        let parsed = parse_attrs(&attrs).unwrap();
        assert_eq!(parsed[0], (1, &b"abc\0"[..]));
        assert_eq!(parsed[1].0, 2, "flag bits are masked");
        assert_eq!(u16_at(&attrs, 10), 2 | NLA_F_NESTED);
        assert_eq!(parse_attrs(parsed[1].1).unwrap(), vec![(1, &7u32.to_be_bytes()[..])]);
        assert!(parse_attrs(&attrs[..6]).is_err());
        let msg = nfgen_message(0x0a10, 1, 10, &attrs);
        assert_eq!(u32_at(&msg, 0) as usize, msg.len());
        assert_eq!(u16_at(&msg, 4), 0x0a10);
        assert_eq!(msg[16..20], [1, 0, 0, 10]);
        assert_eq!(&msg[20..], &attrs[..]);
        assert_eq!(nfgen_parts(&msg), Some((0x0a10, 1, &attrs[..])));
        assert_eq!(nfgen_parts(&msg[..19]), None);
    }

    #[test]
    fn find_attr_reads_no_further_than_the_attribute() {
        let mut attrs = Vec::new();
        put_attr(&mut attrs, 1, &[1]);
        put_attr(&mut attrs, 2 | NLA_F_NESTED, &[2]);
        attrs.extend_from_slice(&[0xff, 0xff]); // a truncated third attribute
        assert_eq!(find_attr(&attrs, 2, "test").unwrap(), Some(&[2][..]));
        let e = find_attr(&attrs, 3, "test").unwrap_err();
        assert_eq!(e.reason, "truncated test attribute: 2 bytes left");
        let e = parse_attrs(&attrs).unwrap_err();
        assert_eq!(e.reason, "truncated netlink attribute: 2 bytes left");
        // A walk ends at its first error.
        assert_eq!(iter_attrs(&attrs, "test").filter(Result::is_err).count(), 1);
    }
}
