//! Transactions: the messages of every operation between `NFNL_MSG_BATCH_BEGIN` and
//! `NFNL_MSG_BATCH_END`, sent as one datagram. The kernel applies the whole batch or nothing.
//!
//! The kernel answers every message that fails, with its sequence number, so an error is tied to
//! the message, hence to the object, it concerns; when the kernel names the attribute at fault
//! (extended ack), an error on an element list is narrowed to that element. Only the last message
//! asks for an acknowledgement (`NLM_F_ACK`): one answer for a batch that succeeds, instead of one
//! per message (each costs the kernel an allocation and the plugin a `recv`). An error on the batch
//! header itself is the commit failing.

use super::consts::*;
use super::encode::{op_messages_in, Msg, SetCatalog};
use crate::nft::ops::{Op, TableRef, Value};
use crate::CniError;
use cni_common::netlink::socket::{nfgen_message, BatchReply, Socket};

/// The messages of a transaction doing `ops` in order, each knowing its operation's index;
/// elements are laid out for the sets `ops` make (others: from their values).
pub fn messages(ops: &[Op]) -> Result<Vec<Msg>, CniError> {
    messages_in(ops, &SetCatalog::of_ops(ops))
}

/// [`messages`], elements laid out for the sets `sets` defines.
pub fn messages_in(ops: &[Op], sets: &SetCatalog) -> Result<Vec<Msg>, CniError> {
    let mut out = Vec::new();
    for (i, op) in ops.iter().enumerate() {
        out.extend(op_messages_in(op, sets)?.into_iter().map(|m| Msg { op: i, ..m }));
    }
    Ok(out)
}

/// The sets an element operation of `ops` works on whose kind its elements do not tell and
/// `ops` do not make: concatenated keys of single values (`10.0.0.1 . 10.0.0.2`) are one key in
/// a set of single values and a range in an interval set, whose elements also name their last
/// key (`NFTA_SET_ELEM_KEY_END`) — `nft` knows from its cache of the ruleset. A key holding a
/// prefix is an interval set's; a key of one field is not (those interval sets are not encoded).
pub fn sets_to_look_up(ops: &[Op]) -> Vec<(TableRef, String)> {
    let known = SetCatalog::of_ops(ops);
    let mut out: Vec<(TableRef, String)> = Vec::new();
    for op in ops {
        let (Op::AddElements { table, set, elems } | Op::DeleteElements { table, set, elems }) = op else { continue };
        let concat = elems.iter().any(|e| e.key.len() > 1);
        let prefix = elems.iter().any(|e| e.key.iter().any(|v| matches!(v, Value::Prefix(_))));
        if concat && !prefix && known.get(table, set).is_none() && !out.iter().any(|(t, s)| t == table && s == set) {
            out.push((table.clone(), set.clone()));
        }
    }
    out
}

/// `NFNL_MSG_BATCH_BEGIN` (or `END`) for the nf_tables subsystem.
pub fn batch_marker(kind: u16) -> Vec<u8> {
    nfgen_message(kind, NFPROTO_UNSPEC, NFNL_SUBSYS_NFTABLES, &[])
}

/// The whole transaction as sent: (message, flags besides `NLM_F_REQUEST`).
pub fn wire(msgs: &[Msg]) -> Vec<(Vec<u8>, u16)> {
    let mut w = Vec::with_capacity(msgs.len() + 2);
    w.push((batch_marker(NFNL_MSG_BATCH_BEGIN), 0));
    let last = msgs.len().saturating_sub(1);
    w.extend(msgs.iter().enumerate().map(|(i, m)| (m.bytes.clone(), if i == last { m.flags | NLM_F_ACK } else { m.flags })));
    w.push((batch_marker(NFNL_MSG_BATCH_END), 0));
    w
}

/// Send `msgs` (the [`messages`] of `ops`) as one transaction and wait for the kernel's verdict.
pub fn commit(sock: &mut Socket, ops: &[Op], msgs: &[Msg]) -> Result<(), CniError> {
    if msgs.is_empty() {
        return Ok(());
    }
    let replies =
        sock.send_batch(wire(msgs)).map_err(|e| CniError::Firewall(format!("nft transaction failed: {e}")))?;
    check(ops, msgs, &replies)
}

/// The outcome of a transaction from the kernel's replies (indexes: 0 the batch header, 1..=n
/// the messages, n + 1 the trailer).
pub fn check(ops: &[Op], msgs: &[Msg], replies: &[BatchReply]) -> Result<(), CniError> {
    let failed: Vec<&BatchReply> = replies.iter().filter(|r| r.error.is_some()).collect();
    let Some(first) = failed.iter().find(|r| (1..=msgs.len()).contains(&r.index)).or(failed.first()) else {
        // Success is the acknowledgement of the last change with no error before it.
        if !replies.iter().any(|r| r.index == msgs.len()) {
            return Err(CniError::Firewall(format!(
                "nft transaction: the kernel did not acknowledge the last of {} changes",
                msgs.len()
            )));
        }
        return Ok(());
    };
    let err = first.error.as_ref().expect("failed reply");
    let object = match first.index {
        0 => format!("commit of {} changes", msgs.len()),
        i if i <= msgs.len() => {
            let m = &msgs[i - 1];
            match ops.get(m.op) {
                // the element the kernel blamed, else the whole message
                Some(op) => first.bad_attr.and_then(|off| m.blamed(op, off)).unwrap_or_else(|| m.what(op)),
                None => format!("change {i} of {}", msgs.len()),
            }
        }
        _ => "end of transaction".to_string(),
    };
    let more = failed.len() - 1;
    let more = if more > 0 { format!(" (and {more} more refused change{})", if more == 1 { "" } else { "s" }) } else { String::new() };
    Err(CniError::Firewall(format!("nft transaction failed: {object}: {}{more}", err.reason)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nft::ops::{Element, TableRef, Value, Verdict};
    use cni_common::netlink::NlError;
    use nix::libc;

    fn err(errno: i32, text: &str) -> Option<NlError> {
        let reason = format!("{} (os error {errno}); kernel: {text}", std::io::Error::from_raw_os_error(errno).kind());
        Some(NlError { op: String::new(), errno: Some(errno), reason, feature: None })
    }

    fn ops() -> Vec<Op> {
        let t = TableRef::inet("t");
        let e = |a: &str, c: &str| Element::verdict(vec![Value::Addr(a.parse().unwrap())], Verdict::Goto(c.into()));
        vec![
            Op::AddTable(t.clone()),
            Op::AddElements { table: t, set: "masq4".into(), elems: vec![e("10.0.0.1", "a"), e("10.0.0.2", "b"), e("10.0.0.3", "c"), e("10.0.0.4", "d")] },
        ]
    }

    #[test]
    fn wire_layout() {
        let msgs = messages(&ops()).unwrap();
        let w = wire(&msgs);
        assert_eq!(w.len(), 4);
        // begin: type 16, AF_UNSPEC, res_id = NFNL_SUBSYS_NFTABLES in network order, no ack
        let mut want = 20u32.to_ne_bytes().to_vec();
        want.extend(16u16.to_ne_bytes());
        want.extend([0u8; 10]);
        want.extend([0, 0, 0, 10]);
        assert_eq!(w[0].0, want);
        assert_eq!(w[0].1, 0);
        assert_eq!(w[3].0[4..6], 17u16.to_ne_bytes());
        // only the last change asks for an acknowledgement; failures are answered anyway
        assert_eq!(w[1].1, NLM_F_CREATE);
        assert_eq!(w[2].1, NLM_F_CREATE | NLM_F_ACK);
    }

    #[test]
    fn errors_name_the_object() {
        let ops = ops();
        let msgs = messages(&ops).unwrap();
        let ok = |index| BatchReply { index, error: None, bad_attr: None };
        assert!(check(&ops, &msgs, &[ok(2)]).is_ok());
        // a missing acknowledgement is not a success
        assert!(check(&ops, &msgs, &[]).unwrap_err().to_string().contains("did not acknowledge the last of 2"));
        assert!(check(&ops, &msgs, &[ok(1)]).unwrap_err().to_string().contains("did not acknowledge"));
        // an element refused, the kernel pointing at the third element
        let third = msgs[1].elems.as_ref().unwrap().1[2];
        let r = [ok(1), BatchReply { index: 2, error: err(libc::EEXIST, "x"), bad_attr: Some(third) }];
        let e = check(&ops, &msgs, &r).unwrap_err().to_string();
        assert!(e.contains("10.0.0.3 : goto c"), "{e}");
        assert!(!e.contains("10.0.0.2"), "{e}");
        assert!(e.contains("inet t masq4"), "{e}");
        // without the attribute: the whole message (4 elements: summarized)
        let r = [ok(1), BatchReply { index: 2, error: err(libc::ENOENT, "y"), bad_attr: None }];
        let e = check(&ops, &msgs, &r).unwrap_err().to_string();
        assert!(e.contains("add 4 elements of inet t masq4"), "{e}");
        // a message error wins over the commit error, and others are counted
        let r = [
            BatchReply { index: 0, error: err(libc::EINVAL, "z"), bad_attr: None },
            BatchReply { index: 1, error: err(libc::EPERM, "w"), bad_attr: None },
            BatchReply { index: 2, error: err(libc::ENOENT, "v"), bad_attr: None },
        ];
        let e = check(&ops, &msgs, &r).unwrap_err();
        assert_eq!(e.code(), CniError::Firewall(String::new()).code());
        let e = e.to_string();
        assert!(e.contains("add table inet t") && e.contains("2 more refused changes"), "{e}");
        let r = [BatchReply { index: 0, error: err(libc::ENOMEM, "u"), bad_attr: None }, ok(1), ok(2)];
        assert!(check(&ops, &msgs, &r).unwrap_err().to_string().contains("commit of 2 changes"));
    }
}
