//! The synchronous netlink transport: send one request, read its replies.
//!
//! The loop is protocol-independent ([`Socket::open_protocol`], [`Socket::request_raw`],
//! [`Socket::dump_raw`] work on whole messages as bytes); [`Socket::open`], [`Socket::request`]
//! and [`Socket::dump`] are its NETLINK_ROUTE face, used by the rest of this module. Conntrack
//! ([`crate::conntrack`]) uses the raw face over NETLINK_NETFILTER.
//!
//! Requests are sent with `NLM_F_ACK` and read until the acknowledgement (or the error that
//! replaces it); dumps are read until `NLMSG_DONE` and repeated, up to [`DUMP_ATTEMPTS`] times in
//! all, while the kernel flags a reply with `NLM_F_DUMP_INTR` (the table changed during the dump,
//! so the result may be inconsistent). Control messages (ack, error, done) are decoded here, with
//! the kernel's extended-ack text; the others are decoded by `netlink-packet-route`.

use netlink_packet_core::{
    NetlinkMessage, NetlinkPayload, NLMSG_DONE, NLMSG_ERROR, NLMSG_NOOP, NLMSG_OVERRUN, NLM_F_ACK, NLM_F_ACK_TLVS,
    NLM_F_CAPPED, NLM_F_DUMP, NLM_F_DUMP_INTR, NLM_F_REQUEST,
};
use netlink_packet_route::RouteNetlinkMessage;
use netlink_sys::{protocols::NETLINK_ROUTE, Socket as SysSocket};

use super::NlError;

/// How many times a dump is attempted while the kernel reports it as interrupted.
pub(crate) const DUMP_ATTEMPTS: usize = 5;

/// Length of `struct nlmsghdr`.
const HEADER_LEN: usize = 16;
/// `NLMSGERR_ATTR_MSG`: the extended-ack attribute holding the kernel's error text.
const NLMSGERR_ATTR_MSG: u16 = 1;
/// Initial receive buffer; grown when a datagram is larger.
const RECV_BUF: usize = 32 * 1024;

/// A netlink socket, bound to the network namespace it was created in.
pub(crate) struct Socket {
    sock: SysSocket,
    seq: u32,
    buf: Vec<u8>,
}

impl Socket {
    /// Open and bind a NETLINK_ROUTE socket in the calling thread's network namespace.
    pub(crate) fn open() -> Result<Socket, NlError> {
        Socket::open_protocol(NETLINK_ROUTE, "NETLINK_ROUTE")
    }

    /// Open and bind a socket of netlink `protocol` (called `name` in errors) in the calling
    /// thread's network namespace.
    pub(crate) fn open_protocol(protocol: isize, name: &str) -> Result<Socket, NlError> {
        let mut sock = SysSocket::new(protocol).map_err(|e| NlError::io(e).with_op(format!("open {name} socket")))?;
        sock.bind_auto().map_err(|e| NlError::io(e).with_op(format!("bind {name} socket")))?;
        // Both options are optional comforts (kernels since 4.3 and 4.12): error replies without a
        // copy of the request, and with the kernel's explanation. Failing to set them loses only that.
        let _ = sock.set_cap_ack(true);
        let _ = sock.set_ext_ack(true);
        Ok(Socket { sock, seq: 0, buf: Vec::with_capacity(RECV_BUF) })
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

    /// [`Socket::request`] for any protocol. `msg` is a whole netlink message (header included,
    /// its length filled in); its flags (`NLM_F_REQUEST | NLM_F_ACK | flags`) and sequence number
    /// are set here. Every data message of the reply (whole, header included) goes through
    /// `parse`; the values it keeps (`Some`) are returned.
    pub(crate) fn request_raw<T>(
        &mut self,
        mut msg: Vec<u8>,
        flags: u16,
        mut parse: impl FnMut(&[u8]) -> Result<Option<T>, NlError>,
    ) -> Result<Vec<T>, NlError> {
        let seq = self.send(&mut msg, NLM_F_REQUEST | NLM_F_ACK | flags)?;
        self.collect(seq, &mut parse).map(|(out, _)| out)
    }

    /// [`Socket::dump`] for any protocol; `msg` and `parse` as for [`Socket::request_raw`]. The
    /// values of an interrupted attempt are discarded.
    pub(crate) fn dump_raw<T>(
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

    /// Receive one datagram whole into `self.buf`, growing it when needed; returns its length.
    fn recv(&mut self) -> Result<usize, NlError> {
        loop {
            // Peek first: MSG_TRUNC makes the kernel report the datagram's full size.
            self.buf.clear();
            let size = match self.sock.recv(&mut self.buf, libc::MSG_PEEK | libc::MSG_TRUNC) {
                Ok(size) => size,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(NlError::io(e)),
            };
            self.buf.clear();
            self.buf.reserve(size);
            match self.sock.recv(&mut self.buf, 0) {
                Ok(n) if n <= self.buf.len() => return Ok(n),
                Ok(n) => return Err(NlError::decode(format!("netlink datagram of {n} bytes truncated"))),
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
            let mut off = 0;
            while n - off >= HEADER_LEN {
                let data = &self.buf[off..n];
                let len = u32_at(data, 0) as usize;
                if len < HEADER_LEN || len > data.len() {
                    return Err(NlError::decode(format!(
                        "malformed netlink message: length {len}, {} bytes left",
                        data.len()
                    )));
                }
                let raw = &data[..len];
                off += align4(len).min(data.len());
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
    if flags & NLM_F_ACK_TLVS == 0 || payload.len() < HEADER_LEN {
        return None;
    }
    let request_len = if flags & NLM_F_CAPPED != 0 { HEADER_LEN } else { u32_at(payload, 0) as usize };
    tlv_message(payload.get(align4(request_len)..)?)
}

/// The `NLMSGERR_ATTR_MSG` string among extended-ack TLVs.
fn tlv_message(mut tlvs: &[u8]) -> Option<String> {
    while tlvs.len() >= 4 {
        let len = u16_at(tlvs, 0) as usize;
        let kind = u16_at(tlvs, 2) & netlink_packet_core::NLA_TYPE_MASK;
        if len < 4 || len > tlvs.len() {
            return None;
        }
        if kind == NLMSGERR_ATTR_MSG {
            let value = &tlvs[4..len];
            let end = value.iter().position(|&b| b == 0).unwrap_or(value.len());
            return Some(String::from_utf8_lossy(&value[..end]).trim().to_string());
        }
        tlvs = tlvs.get(align4(len)..)?;
    }
    None
}

fn align4(len: usize) -> usize {
    (len + 3) & !3
}

// Callers check lengths first; these read native-endian integers at `off`.
fn u16_at(b: &[u8], off: usize) -> u16 {
    u16::from_ne_bytes([b[off], b[off + 1]])
}

fn u32_at(b: &[u8], off: usize) -> u32 {
    u32::from_ne_bytes([b[off], b[off + 1], b[off + 2], b[off + 3]])
}

fn i32_at(b: &[u8], off: usize) -> i32 {
    u32_at(b, off) as i32
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
