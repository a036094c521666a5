//! The native nftables executor: nf_tables over netlink (NETLINK_NETFILTER), no `nft` process.
//!
//! Writes are one batch per operation ([`batch`]): the messages of every [`Op`] between
//! `NFNL_MSG_BATCH_BEGIN` and `NFNL_MSG_BATCH_END`, atomic in the kernel, the last message
//! acknowledged and every failing one answered, errors naming the table, chain, set or element
//! at fault (an element operation on a set the batch does not make, whose keys do not tell an
//! interval set from another, first looks the table's sets up). Messages are laid out
//! as `nft` lays them out ([`encode`]), so the kernel holds the same objects whichever executor
//! wrote them and both can tear down what the other made. Reads ([`decode`]) dump the table's
//! chains, sets, elements and rules (`NFT_MSG_GET*`) between two reads of the ruleset
//! generation, retried when a concurrent writer changed it, into the same [`TableState`] the
//! `nft -j` reader produces.
//!
//! The transport is the suite's one netlink loop ([`cni_common::netlink::socket`]). Each thread
//! keeps one socket per network namespace for the life of the process ([`with_socket`]): releasing
//! a socket whose transaction deleted objects waits for the kernel to destroy them (one RCU grace
//! period, ~15 ms on a small VM), and a kept socket lets a plugin do its remaining work meanwhile
//! instead of waiting at the release. The release at exit still waits while that destruction (or
//! another writer's) is pending or running, holding the ruleset's commit mutex; bridge DEL
//! therefore hands its socket ([`take_kept_socket`]) to the helper process of its veth deletion,
//! which outlives the plugin.

pub mod batch;
pub mod consts;
pub mod decode;
pub mod encode;

use super::ops::{Op, SetData, SetDef, TableRef};
use super::state::{RuleState, SetState, TableState};
use super::NftExecutor;
use crate::CniError;
use cni_common::netlink::socket::Socket;
use cni_common::netlink::NlError;
use consts::*;
use encode::{family_byte, put_str};

/// How many times a read is started over because the ruleset changed while it was read.
const READ_ATTEMPTS: usize = 10;

/// The executor talking nf_tables directly (see the module documentation).
#[derive(Debug, Default, Clone, Copy)]
pub struct NftNetlink;

impl NftNetlink {
    pub fn new() -> Self {
        NftNetlink
    }
}

/// A new NETLINK_NETFILTER socket in the calling thread's network namespace.
pub fn open() -> Result<Socket, CniError> {
    Socket::open_netfilter().map_err(|e| CniError::NotAvailable(format!("nftables backend: {e}")))
}

thread_local! {
    /// The socket [`with_socket`] keeps, with the network namespace it was opened in.
    static KEPT: std::cell::RefCell<Option<((u64, u64), Socket)>> = const { std::cell::RefCell::new(None) };
}

/// Run `f` on this thread's socket for its current network namespace, opened on first use and
/// kept afterwards (see the module documentation). A call that fails drops the socket, so no
/// half-read reply is left for the next one. (A kept socket pins its namespace, so the inode
/// cannot be reused by another namespace while it is kept.)
pub fn with_socket<T>(f: impl FnOnce(&mut Socket) -> Result<T, CniError>) -> Result<T, CniError> {
    let ns = cni_common::netns::NetNs::current_id().ok();
    let kept = KEPT.with(|k| k.borrow_mut().take()).filter(|(id, _)| Some(*id) == ns);
    let mut sock = match kept {
        Some((_, sock)) => sock,
        None => open()?,
    };
    let out = f(&mut sock);
    if let (Ok(_), Some(id)) = (&out, ns) {
        KEPT.with(|k| *k.borrow_mut() = Some((id, sock)));
    }
    out
}

/// Take this thread's kept socket (if any) out of [`with_socket`]'s keeping, e.g. to hand it to
/// a process that outlives this one (`cni_common::netlink::DetachedDelete::hand_over`) before
/// it is closed here.
pub fn take_kept_socket() -> Option<Socket> {
    KEPT.with(|k| k.borrow_mut().take()).map(|(_, sock)| sock)
}

/// The ruleset generation (changes with every committed transaction).
pub fn generation(sock: &mut Socket) -> Result<u32, NlError> {
    let g = sock.request_raw(encode::message(NFT_MSG_GETGEN, NFPROTO_UNSPEC, &[]), 0, decode::parse_gen)?;
    g.into_iter().next().ok_or_else(|| NlError::decode("no generation in the reply"))
}

/// Every table of the ruleset as (family name, table name): `("inet", "cnirs_masquerade")`.
pub fn list_tables() -> Result<Vec<(String, String)>, CniError> {
    let tables = with_socket(|sock| {
        sock.dump_raw(encode::message(NFT_MSG_GETTABLE, NFPROTO_UNSPEC, &[]), decode::parse_table)
            .map_err(|e| decode::read_error("list tables", e))
    })?;
    Ok(tables.into_iter().map(|(f, n)| (family_name(f).to_string(), n)).collect())
}

/// `nft`'s name of a family number.
pub fn family_name(f: u8) -> &'static str {
    match f {
        NFPROTO_INET => "inet",
        NFPROTO_IPV4 => "ip",
        NFPROTO_ARP => "arp",
        NFPROTO_NETDEV => "netdev",
        NFPROTO_BRIDGE => "bridge",
        NFPROTO_IPV6 => "ip6",
        _ => "unknown",
    }
}

/// `ENOENT`: the table, chain or set does not exist.
fn is_enoent(e: &NlError) -> bool {
    e.is_not_found()
}

/// Whether `table` exists (`NFT_MSG_GETTABLE` by name).
fn table_exists(sock: &mut Socket, table: &TableRef, fam: u8) -> Result<bool, NlError> {
    let mut a = Vec::new();
    put_str(&mut a, NFTA_TABLE_NAME, &table.name);
    match sock.request_raw(encode::message(NFT_MSG_GETTABLE, fam, &a), 0, decode::parse_table) {
        Ok(_) => Ok(true),
        Err(e) if is_enoent(&e) => Ok(false),
        Err(e) => Err(e),
    }
}

/// The named sets of `table`, from one dump of its sets.
fn table_sets(sock: &mut Socket, table: &TableRef) -> Result<Vec<SetState>, NlError> {
    let mut a = Vec::new();
    put_str(&mut a, NFTA_SET_TABLE, &table.name);
    Ok(sock
        .dump_raw(encode::message(NFT_MSG_GETSET, family_byte(table.family), &a), decode::parse_set)?
        .into_iter()
        .filter(|(t, _, flags)| *t == table.name && flags & NFT_SET_ANONYMOUS == 0)
        .map(|(_, s, _)| s)
        .collect())
}

/// The rules of `table` with the names of their chains, from one dump of its rules.
fn table_rules(sock: &mut Socket, table: &TableRef) -> Result<Vec<(String, RuleState)>, NlError> {
    let mut a = Vec::new();
    put_str(&mut a, NFTA_RULE_TABLE, &table.name);
    Ok(sock
        .dump_raw(encode::message(NFT_MSG_GETRULE, family_byte(table.family), &a), decode::parse_rule)?
        .into_iter()
        .filter(|(t, _, _)| *t == table.name)
        .map(|(_, c, r)| (c, r))
        .collect())
}

/// Read `table` once (not checking the generation): `None` when it does not exist.
fn read_once(sock: &mut Socket, table: &TableRef) -> Result<Option<TableState>, NlError> {
    let fam = family_byte(table.family);
    if !table_exists(sock, table, fam)? {
        return Ok(None);
    }
    let chains: Vec<_> = sock
        .dump_raw(encode::message(NFT_MSG_GETCHAIN, fam, &[]), decode::parse_chain)?
        .into_iter()
        .filter(|(t, _)| *t == table.name)
        .map(|(_, c)| c)
        .collect();
    let sets = table_sets(sock, table)?;
    let mut full_sets = Vec::with_capacity(sets.len());
    for mut set in sets {
        let mut a = Vec::new();
        put_str(&mut a, NFTA_SET_ELEM_LIST_TABLE, &table.name);
        put_str(&mut a, NFTA_SET_ELEM_LIST_SET, &set.name);
        let shape = set.clone();
        let elems = sock.dump_raw(encode::message(NFT_MSG_GETSETELEM, fam, &a), |raw| decode::parse_elems(raw, &shape).map(Some))?;
        set.elems = elems.into_iter().flatten().collect();
        // the kernel's order is its hash order; nft lists elements sorted by key
        set.elems.sort();
        full_sets.push(set);
    }
    let rules = table_rules(sock, table)?;
    Ok(Some(decode::assemble(chains, full_sets, rules)))
}

/// Run `read` until the ruleset generation is the same before and after it (no writer committed
/// in between); a table or set vanishing between two dumps also means "read again".
fn consistent<T>(
    sock: &mut Socket,
    what: &str,
    mut read: impl FnMut(&mut Socket) -> Result<T, NlError>,
) -> Result<T, CniError> {
    for _ in 0..READ_ATTEMPTS {
        let before = generation(sock).map_err(|e| decode::read_error(what, e))?;
        let st = match read(sock) {
            Ok(st) => st,
            Err(e) if is_enoent(&e) => continue,
            Err(e) => return Err(decode::read_error(what, e)),
        };
        if generation(sock).map_err(|e| decode::read_error(what, e))? == before {
            return Ok(st);
        }
    }
    Err(CniError::Firewall(format!("nf_tables: {what}: the ruleset kept changing during {READ_ATTEMPTS} reads")))
}

/// Read `table` consistently: the ruleset generation is the same before and after the dumps.
/// A missing table costs one request (no generation reads): DEL, CHECK and GC look at the earlier
/// layout's tables every time, and those are missing on every host that never had them.
pub fn read_table(sock: &mut Socket, table: &TableRef) -> Result<Option<TableState>, CniError> {
    let what = format!("list table {} {}", table.family.as_str(), table.name);
    if !table_exists(sock, table, family_byte(table.family)).map_err(|e| decode::read_error(&what, e))? {
        return Ok(None);
    }
    consistent(sock, &what, |sock| read_once(sock, table))
}

/// Read once what an ADD of `ops` depends on (not checking the generation).
fn read_for_once(sock: &mut Socket, table: &TableRef, ops: &[Op]) -> Result<Option<TableState>, NlError> {
    use cni_common::netlink::socket::put_nested;
    let fam = family_byte(table.family);
    // The chains it fills, each asked for by name, and their rules, in one dump of the table's
    // rules: the tables of this layout hold a few chains of a few rules each, however many
    // attachments they serve. A chain found says the table exists; only when none is (or none is
    // wanted) is the table asked for.
    let mut chains = Vec::new();
    let mut wanted_chains = std::collections::BTreeSet::new();
    for op in ops {
        let Op::AddChain { name, .. } = op else { continue };
        if !wanted_chains.insert(name.as_str()) {
            continue;
        }
        let mut a = Vec::new();
        put_str(&mut a, NFTA_CHAIN_TABLE, &table.name);
        put_str(&mut a, NFTA_CHAIN_NAME, name);
        match sock.request_raw(encode::message(NFT_MSG_GETCHAIN, fam, &a), 0, decode::parse_chain) {
            Ok(c) => chains.extend(c.into_iter().map(|(_, c)| c)),
            Err(e) if is_enoent(&e) => continue,
            Err(e) => return Err(e),
        }
    }
    if chains.is_empty() && !table_exists(sock, table, fam)? {
        return Ok(None);
    }
    let mut rules = if chains.is_empty() { Vec::new() } else { table_rules(sock, table)? };
    rules.retain(|(c, _)| wanted_chains.contains(c.as_str()));
    // The sets it adds elements to, from one dump of the table's sets.
    let wanted_sets: Vec<&str> = ops
        .iter()
        .filter_map(|op| match op {
            Op::AddElements { set, .. } => Some(set.as_str()),
            _ => None,
        })
        .collect();
    let mut sets = if wanted_sets.is_empty() { Vec::new() } else { table_sets(sock, table)? };
    sets.retain(|s| wanted_sets.contains(&s.name.as_str()));
    for op in ops {
        let Op::AddElements { set: name, elems, .. } = op else { continue };
        // a set that does not exist has no elements to find
        let Some(idx) = sets.iter().position(|s| s.name == *name) else { continue };
        let shape = SetState { elems: Vec::new(), ..sets[idx].clone() };
        for e in elems {
            // The keys to ask for. An interval set is asked for the points of the wanted range:
            // its first key (every field's first value) and its last one; the kernel answers
            // with the element containing each, with its own range, whatever it is.
            let points = if shape.interval {
                match encode::key_range_bytes(&e.key, &shape.key) {
                    Ok((first, last)) if first == last => vec![first],
                    Ok((first, last)) => vec![first, last],
                    Err(_) => continue,
                }
            } else {
                // a key that does not fit the set's type cannot be in it
                match encode::key_bytes(&e.key, &shape.key) {
                    Ok(key) => vec![key],
                    Err(_) => continue,
                }
            };
            for key in points {
                let mut a = Vec::new();
                put_str(&mut a, NFTA_SET_ELEM_LIST_TABLE, &table.name);
                put_str(&mut a, NFTA_SET_ELEM_LIST_SET, name);
                put_nested(&mut a, NFTA_SET_ELEM_LIST_ELEMENTS, |l| {
                    put_nested(l, NFTA_LIST_ELEM, |el| {
                        put_nested(el, NFTA_SET_ELEM_KEY, |k| cni_common::netlink::socket::put_attr(k, NFTA_DATA_VALUE, &key))
                    })
                });
                match sock.request_raw(encode::message(NFT_MSG_GETSETELEM, fam, &a), 0, |raw| decode::parse_elems(raw, &shape).map(Some)) {
                    Ok(found) => {
                        let found = found.into_iter().flatten();
                        if shape.interval {
                            sets[idx].elems.extend(found);
                        } else {
                            sets[idx].elems.extend(found.filter(|x| x.key == e.key));
                        }
                    }
                    Err(e) if is_enoent(&e) => {}
                    Err(e) => return Err(e),
                }
            }
        }
        sets[idx].elems.sort();
        sets[idx].elems.dedup();
    }
    Ok(Some(decode::assemble(chains, sets, rules)))
}

/// What an ADD of `ops` (its blind plan) depends on: the chains it fills (asked for by name), with
/// their rules (one dump of the table's rules), and in the sets it adds elements to (one dump of
/// the table's sets), the elements with those keys (found by key, `NFT_MSG_GETSETELEM` without a
/// dump), with their verdicts or data. In an interval set the elements are found by
/// point: the first and the last key of each wanted element are asked for, and whatever elements
/// contain them are returned with their own ranges (once each), so an element overlapping the
/// wanted one is seen too. Its cost does not grow with the number of attachments in the table;
/// the planners of ADD look at nothing else.
///
/// Unlike [`read_table`] it is not checked against the ruleset generation: other writers commit
/// all the time (every ADD of every container), and an ADD's plan stays right whatever they did
/// in between. A chain it finds intact and leaves alone may be changed right after the read, as
/// it could be right after the write (the next ADD heals it); an element key taken meanwhile makes
/// the transaction fail (`EEXIST`) and the caller read again. Requiring an unchanged generation
/// made parallel ADDs read over and over.
pub fn read_for(sock: &mut Socket, table: &TableRef, ops: &[Op]) -> Result<Option<TableState>, CniError> {
    let what = format!("read table {} {}", table.family.as_str(), table.name);
    for _ in 0..READ_ATTEMPTS {
        match read_for_once(sock, table, ops) {
            Ok(st) => return Ok(st),
            // the table or a set vanished between two requests: read again
            Err(e) if is_enoent(&e) => continue,
            Err(e) => return Err(decode::read_error(&what, e)),
        }
    }
    Err(CniError::Firewall(format!("nf_tables: {what}: objects kept vanishing during {READ_ATTEMPTS} reads")))
}

/// Add to `sets` the definitions of `wanted` sets (table, name) as the kernel holds them (one
/// dump of the sets of each table); sets, or tables, that do not exist or whose types are not
/// ours are left out.
fn look_up_sets(sock: &mut Socket, wanted: &[(TableRef, String)], sets: &mut encode::SetCatalog) -> Result<(), CniError> {
    let mut tables: Vec<&TableRef> = Vec::new();
    for (t, _) in wanted {
        if !tables.contains(&t) {
            tables.push(t);
        }
    }
    for table in tables {
        let found = match table_sets(sock, table) {
            Ok(found) => found,
            Err(e) if is_enoent(&e) => continue,
            Err(e) => return Err(decode::read_error(&format!("list sets of table {} {}", table.family.as_str(), table.name), e)),
        };
        for s in found {
            let ours = !s.key.is_empty() && !matches!(&s.data, SetData::Values(d) if d.is_empty());
            if ours && wanted.iter().any(|(wt, ws)| wt == table && *ws == s.name) {
                sets.insert(table, SetDef { name: s.name, key: s.key, data: s.data, interval: s.interval });
            }
        }
    }
    Ok(())
}

impl NftExecutor for NftNetlink {
    fn apply(&self, ops: &[Op]) -> Result<(), CniError> {
        let unknown = batch::sets_to_look_up(ops);
        if unknown.is_empty() {
            let msgs = batch::messages(ops)?;
            if msgs.is_empty() {
                return Ok(());
            }
            return with_socket(|sock| batch::commit(sock, ops, &msgs));
        }
        // elements of sets whose kind only the kernel can tell: look them up first, like nft
        // fills its cache
        with_socket(|sock| {
            let mut sets = encode::SetCatalog::of_ops(ops);
            look_up_sets(sock, &unknown, &mut sets)?;
            let msgs = batch::messages_in(ops, &sets)?;
            batch::commit(sock, ops, &msgs)
        })
    }

    fn list_table(&self, table: &TableRef) -> Result<Option<TableState>, CniError> {
        with_socket(|sock| read_table(sock, table))
    }

    fn probe(&self) -> Result<(), CniError> {
        with_socket(|sock| {
            generation(sock).map(|_| ()).map_err(|e| CniError::NotAvailable(format!("nftables backend unusable: nf_tables: {}", e.reason)))
        })
    }

    fn present(&self) -> bool {
        self.probe().is_ok()
    }

    fn cheap_reads(&self) -> bool {
        true
    }

    fn read_for_add(&self, table: &TableRef, ops: &[Op]) -> Result<Option<TableState>, CniError> {
        with_socket(|sock| read_for(sock, table, ops))
    }
}
