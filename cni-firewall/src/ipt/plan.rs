//! Pure planning for the iptables backend: the reference layouts, as `iptables-restore --noflush`
//! transactions computed from a spec (blind, for the first attempt) or from a spec and an
//! `iptables-save` dump (exact, for the fallback and for DEL/GC).
//!
//! Rules are written in the canonical form `iptables-save` prints, so what was written can be
//! compared argument by argument with what is read back, whoever wrote it.

use super::save::{RestoreScript, SavedRule, SavedTable};
use crate::names::{dnat_comment, format_chain_name, format_chain_name_with_prefix, masq_comment, parse_comment};
use crate::{AttachmentKey, Family, IsolationSpec, MasqSpec, PortMapSpec, Protocol};
use ipnetwork::IpNetwork;
use std::collections::BTreeSet;
use std::net::IpAddr;

fn sv(items: &[&str]) -> Vec<String> {
    items.iter().map(|s| s.to_string()).collect()
}

/// `a/32` or `a/128`, as iptables-save prints a host.
pub fn host_cidr(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(a) => format!("{a}/32"),
        IpAddr::V6(a) => format!("{a}/128"),
    }
}

/// The network of an address with prefix, as iptables-save prints it.
pub fn subnet_str(a: &IpNetwork) -> String {
    format!("{}/{}", a.network(), a.prefix())
}

fn multicast(fam: Family) -> &'static str {
    match fam {
        Family::V4 => "224.0.0.0/4",
        Family::V6 => "ff00::/8",
    }
}

fn of_family(addrs: &[IpNetwork], fam: Family) -> Vec<IpNetwork> {
    addrs.iter().filter(|a| Family::of_net(a) == fam).cloned().collect()
}

/// Delete every rule (in any chain) jumping to `chain`, then flush and delete `chain` if present.
fn remove_chain(saved: &SavedTable, chain: &str, s: &mut RestoreScript) {
    for r in saved.rules.iter().filter(|r| r.target() == Some(chain) && r.chain != chain) {
        s.delete(r);
    }
    if saved.has_chain(chain) {
        s.flush_chain(chain);
        s.delete_chain(chain);
    }
}

fn some(s: RestoreScript) -> Option<RestoreScript> {
    if s.is_empty() {
        None
    } else {
        Some(s)
    }
}

// ---------------------------------------------------------------------------------------------
// Masquerade (reference pkg/ip ipmasq, table nat):
//   :CNI-<24 hex sha512(net+cid)> -
//   -A POSTROUTING -s <ip>/32 -m comment --comment "name: \"<net>\" id: \"<cid>\"" -j CNI-<hash>
//   -A CNI-<hash> -d <subnet> -m comment --comment "..." -j ACCEPT
//   -A CNI-<hash> ! -d 224.0.0.0/4 -m comment --comment "..." -j MASQUERADE     (v6: ff00::/8)
// ---------------------------------------------------------------------------------------------

pub fn masq_chain(key: &AttachmentKey) -> String {
    format_chain_name(&key.network, &key.container_id)
}

pub fn masq_jump(key: &AttachmentKey, ip: IpAddr) -> SavedRule {
    let c = masq_comment(&key.network, &key.container_id);
    SavedRule::new("POSTROUTING", sv(&["-s", &host_cidr(ip), "-m", "comment", "--comment", &c, "-j", &masq_chain(key)]))
}

pub fn masq_accept(key: &AttachmentKey, subnet: &str) -> SavedRule {
    let c = masq_comment(&key.network, &key.container_id);
    SavedRule::new(&masq_chain(key), sv(&["-d", subnet, "-m", "comment", "--comment", &c, "-j", "ACCEPT"]))
}

pub fn masq_masquerade(key: &AttachmentKey, fam: Family) -> SavedRule {
    let c = masq_comment(&key.network, &key.container_id);
    SavedRule::new(&masq_chain(key), sv(&["!", "-d", multicast(fam), "-m", "comment", "--comment", &c, "-j", "MASQUERADE"]))
}

fn unique_subnets(addrs: &[IpNetwork]) -> Vec<String> {
    let mut v: Vec<String> = Vec::new();
    for a in addrs {
        let s = subnet_str(a);
        if !v.contains(&s) {
            v.push(s);
        }
    }
    v
}

fn unique_ips(addrs: &[IpNetwork]) -> Vec<IpAddr> {
    let mut v: Vec<IpAddr> = Vec::new();
    for a in addrs {
        if !v.contains(&a.ip()) {
            v.push(a.ip());
        }
    }
    v
}

/// ADD without reading: `-N` makes the whole transaction fail (atomically, nothing applied) when
/// the chain exists already (repeated ADD, stale state): then use [`plan_masq_add`].
pub fn plan_masq_add_blind(spec: &MasqSpec, fam: Family) -> Option<RestoreScript> {
    let addrs = of_family(&spec.addrs, fam);
    if addrs.is_empty() {
        return None;
    }
    let chain = masq_chain(&spec.key);
    let mut s = RestoreScript::new("nat");
    s.new_chain(&chain);
    for sub in unique_subnets(&addrs) {
        s.append(&masq_accept(&spec.key, &sub));
    }
    s.append(&masq_masquerade(&spec.key, fam));
    for ip in unique_ips(&addrs) {
        s.append(&masq_jump(&spec.key, ip));
    }
    Some(s)
}

/// ADD knowing the table: (re)writes the chain as ACCEPTs for the union of the subnets already
/// there and ours, then MASQUERADE; adds the missing POSTROUTING jumps. `None`: already in place.
pub fn plan_masq_add(spec: &MasqSpec, fam: Family, saved: &SavedTable) -> Option<RestoreScript> {
    let addrs = of_family(&spec.addrs, fam);
    if addrs.is_empty() {
        return None;
    }
    let chain = masq_chain(&spec.key);
    if !saved.has_chain(&chain) {
        return plan_masq_add_blind(spec, fam);
    }
    let mut s = RestoreScript::new("nat");
    let current: Vec<&SavedRule> = saved.rules_of(&chain).collect();
    let mut subnets: Vec<String> = current
        .iter()
        .filter(|r| r.target() == Some("ACCEPT") && r.args.first().map(String::as_str) == Some("-d"))
        .filter_map(|r| r.value("-d").map(str::to_string))
        .collect();
    for sub in unique_subnets(&addrs) {
        if !subnets.contains(&sub) {
            subnets.push(sub);
        }
    }
    let mut desired: Vec<SavedRule> = subnets.iter().map(|sub| masq_accept(&spec.key, sub)).collect();
    desired.push(masq_masquerade(&spec.key, fam));
    let current_owned: Vec<SavedRule> = current.into_iter().cloned().collect();
    if current_owned != desired {
        s.flush_chain(&chain);
        for r in &desired {
            s.append(r);
        }
    }
    for ip in unique_ips(&addrs) {
        let j = masq_jump(&spec.key, ip);
        if !saved.contains(&j) {
            s.append(&j);
        }
    }
    some(s)
}

/// DEL without reading (addresses known): fails atomically if any part is already gone or the
/// chain is still used by another jump; then use [`plan_masq_del`].
pub fn plan_masq_del_blind(key: &AttachmentKey, addrs: &[IpNetwork], fam: Family) -> Option<RestoreScript> {
    let addrs = of_family(addrs, fam);
    if addrs.is_empty() {
        return None;
    }
    let chain = masq_chain(key);
    let mut s = RestoreScript::new("nat");
    for ip in unique_ips(&addrs) {
        s.delete(&masq_jump(key, ip));
    }
    s.flush_chain(&chain);
    s.delete_chain(&chain);
    Some(s)
}

/// DEL knowing the table. With addresses: the POSTROUTING jumps from them (also the legacy
/// `-s <subnet>` form); the chain goes when no other jump uses it (another ifname of the same
/// container shares it: the reference chain name ignores ifname). Without addresses: every jump to
/// the key's chain and the chain — unless the jumps come from more than one source, i.e. several
/// interfaces of the container share the chain and this one's cannot be told apart: then nothing
/// is removed (a later DEL with addresses, or GC once the container is gone, removes it).
pub fn plan_masq_del(key: &AttachmentKey, addrs: &[IpNetwork], fam: Family, saved: &SavedTable) -> Option<RestoreScript> {
    let addrs = of_family(addrs, fam);
    let chain = masq_chain(key);
    let jumps: Vec<&SavedRule> = saved.rules.iter().filter(|r| r.target() == Some(chain.as_str()) && r.chain != chain).collect();
    let sources: BTreeSet<&str> = jumps.iter().filter_map(|r| r.value("-s")).collect();
    let (del, keep): (Vec<&SavedRule>, Vec<&SavedRule>) = if addrs.is_empty() {
        if sources.len() > 1 {
            eprintln!(
                "masquerade of {:?}: chain {chain} is shared by interfaces {sources:?} and no address of {:?} is known; left in place",
                key.container_id, key.ifname
            );
            return None;
        }
        (jumps, Vec::new())
    } else {
        let srcs: BTreeSet<String> = addrs.iter().flat_map(|a| [host_cidr(a.ip()), subnet_str(a)]).collect();
        jumps.into_iter().partition(|r| r.value("-s").is_some_and(|s| srcs.contains(s)))
    };
    let mut s = RestoreScript::new("nat");
    for r in del {
        s.delete(r);
    }
    if keep.is_empty() && saved.has_chain(&chain) {
        s.flush_chain(&chain);
        s.delete_chain(&chain);
    }
    some(s)
}

fn is_masq_chain_name(c: &str) -> bool {
    c.len() == 28 && c.starts_with("CNI-") && c[4..].chars().all(|ch| ch.is_ascii_hexdigit() && !ch.is_ascii_uppercase())
}

/// GC: remove the masquerade of every container of `network` whose ID is not in `valid`.
/// Containers are recognised by the reference comment and the chain name derived from it.
pub fn plan_masq_gc(network: &str, valid: &[AttachmentKey], saved: &SavedTable) -> Option<RestoreScript> {
    let keep: BTreeSet<String> =
        valid.iter().filter(|k| k.network == network).map(|k| format_chain_name(&k.network, &k.container_id)).collect();
    let mut stale = BTreeSet::new();
    for r in &saved.rules {
        let Some((net, cid)) = r.comment().and_then(|c| parse_comment(c, "")) else { continue };
        if net != network {
            continue;
        }
        let chain = format_chain_name(net, cid);
        let ours = r.chain == chain || (r.chain == "POSTROUTING" && r.target() == Some(chain.as_str()));
        if ours && is_masq_chain_name(&chain) && !keep.contains(&chain) {
            stale.insert(chain);
        }
    }
    let mut s = RestoreScript::new("nat");
    for chain in &stale {
        remove_chain(saved, chain, &mut s);
    }
    some(s)
}

pub fn check_masq(spec: &MasqSpec, fam: Family, saved: &SavedTable) -> Result<(), String> {
    let addrs = of_family(&spec.addrs, fam);
    if addrs.is_empty() {
        return Ok(());
    }
    let chain = masq_chain(&spec.key);
    let t = fam_name(fam);
    if !saved.has_chain(&chain) {
        return Err(format!("{t} nat chain {chain} is missing"));
    }
    let rules: Vec<&SavedRule> = saved.rules_of(&chain).collect();
    for sub in unique_subnets(&addrs) {
        if !rules.iter().any(|r| **r == masq_accept(&spec.key, &sub)) {
            return Err(format!("{t} nat chain {chain} lacks the ACCEPT rule for {sub}"));
        }
    }
    let m = masq_masquerade(&spec.key, fam);
    match rules.iter().position(|r| **r == m) {
        None => return Err(format!("{t} nat chain {chain} lacks the MASQUERADE rule")),
        Some(i) if i + 1 != rules.len() => {
            return Err(format!("{t} nat chain {chain}: MASQUERADE is not the last rule"));
        }
        _ => {}
    }
    for ip in unique_ips(&addrs) {
        if !saved.contains(&masq_jump(&spec.key, ip)) {
            return Err(format!("{t} nat POSTROUTING lacks the jump from {ip} to {chain}"));
        }
    }
    Ok(())
}

fn fam_name(fam: Family) -> &'static str {
    match fam {
        Family::V4 => "iptables",
        Family::V6 => "ip6tables",
    }
}

// ---------------------------------------------------------------------------------------------
// Port mappings (reference portmap, table nat):
//   -A PREROUTING -m addrtype --dst-type LOCAL -j CNI-HOSTPORT-DNAT            (appended once)
//   -A OUTPUT -m addrtype --dst-type LOCAL -j CNI-HOSTPORT-DNAT
//   -I POSTROUTING -m comment --comment "CNI portfwd requiring masquerade" -j CNI-HOSTPORT-MASQ
//   -A CNI-HOSTPORT-SETMARK -m comment --comment "CNI portfwd masquerade mark" -j MARK --set-xmark 0x2000/0x2000
//   -A CNI-HOSTPORT-MASQ -m mark --mark 0x2000/0x2000 -j MASQUERADE
//   -I CNI-HOSTPORT-DNAT -p tcp -m comment --comment "dnat name: ..." -m multiport --dports 80,443 -j CNI-DN-<hash>
//   -A CNI-DN-<hash> -s <ctr subnet> [-d hostIP/32] -p tcp -m tcp --dport 80 -j CNI-HOSTPORT-SETMARK
//   -A CNI-DN-<hash> -s 127.0.0.1/32 [-d hostIP/32] -p tcp -m tcp --dport 80 -j CNI-HOSTPORT-SETMARK    (v4)
//   -A CNI-DN-<hash> [-d hostIP/32] -p tcp -m tcp --dport 80 -j DNAT --to-destination <ip>:<port>
// ---------------------------------------------------------------------------------------------

pub const TOP_DNAT: &str = "CNI-HOSTPORT-DNAT";
pub const SETMARK: &str = "CNI-HOSTPORT-SETMARK";
pub const MARK_MASQ: &str = "CNI-HOSTPORT-MASQ";
pub const OLD_TOP_SNAT: &str = "CNI-HOSTPORT-SNAT";

pub fn dn_chain(key: &AttachmentKey) -> String {
    format_chain_name_with_prefix(&key.network, &key.container_id, "DN-")
}

pub fn old_sn_chain(key: &AttachmentKey) -> String {
    format_chain_name_with_prefix(&key.network, &key.container_id, "SN-")
}

fn mark(bit: u8) -> String {
    let v: u32 = 1u32 << (bit as u32 & 31);
    format!("{v:#x}/{v:#x}")
}

pub fn top_entry(chain: &str) -> SavedRule {
    SavedRule::new(chain, sv(&["-m", "addrtype", "--dst-type", "LOCAL", "-j", TOP_DNAT]))
}

pub fn mark_masq_entry() -> SavedRule {
    SavedRule::new("POSTROUTING", sv(&["-m", "comment", "--comment", "CNI portfwd requiring masquerade", "-j", MARK_MASQ]))
}

pub fn setmark_rule(bit: u8) -> SavedRule {
    SavedRule::new(
        SETMARK,
        sv(&["-m", "comment", "--comment", "CNI portfwd masquerade mark", "-j", "MARK", "--set-xmark", &mark(bit)]),
    )
}

pub fn mark_masq_rule(bit: u8) -> SavedRule {
    SavedRule::new(MARK_MASQ, sv(&["-m", "mark", "--mark", &mark(bit), "-j", "MASQUERADE"]))
}

fn uses_own_setmark(spec: &PortMapSpec) -> bool {
    spec.snat && spec.external_setmark_chain.is_none()
}

fn conditions(spec: &PortMapSpec, fam: Family) -> &[String] {
    let c = match fam {
        Family::V4 => &spec.conditions_v4,
        Family::V6 => &spec.conditions_v6,
    };
    c.as_deref().unwrap_or(&[])
}

/// Host ports per protocol (protocols sorted by name, ports in mapping order, deduplicated), in
/// multiport groups of at most 15.
fn port_groups(spec: &PortMapSpec) -> Vec<(Protocol, String)> {
    let mut protos: Vec<Protocol> = spec.mappings.iter().map(|m| m.protocol).collect();
    protos.sort_by_key(|p| p.as_str());
    protos.dedup();
    let mut out = Vec::new();
    for p in protos {
        let mut ports: Vec<u16> = Vec::new();
        for m in spec.mappings.iter().filter(|m| m.protocol == p) {
            if !ports.contains(&m.host_port) {
                ports.push(m.host_port);
            }
        }
        for chunk in ports.chunks(15) {
            out.push((p, chunk.iter().map(|x| x.to_string()).collect::<Vec<_>>().join(",")));
        }
    }
    out
}

/// The `CNI-HOSTPORT-DNAT` entry rules of an attachment.
pub fn dnat_entries(spec: &PortMapSpec, fam: Family) -> Vec<SavedRule> {
    let c = dnat_comment(&spec.key.network, &spec.key.container_id);
    let dn = dn_chain(&spec.key);
    port_groups(spec)
        .into_iter()
        .map(|(p, ports)| {
            let mut a = sv(&["-p", p.as_str(), "-m", "comment", "--comment", &c, "-m", "multiport", "--dports", &ports]);
            a.extend(conditions(spec, fam).iter().cloned());
            a.extend(sv(&["-j", &dn]));
            SavedRule::new(TOP_DNAT, a)
        })
        .collect()
}

/// The rules of the attachment's `CNI-DN-<hash>` chain for family `fam`.
pub fn dn_rules(spec: &PortMapSpec, fam: Family) -> Vec<SavedRule> {
    let Some(ctr) = spec.container(fam) else { return Vec::new() };
    let dn = dn_chain(&spec.key);
    let setmark = spec.external_setmark_chain.clone().unwrap_or_else(|| SETMARK.to_string());
    let mut rules = Vec::new();
    for m in &spec.mappings {
        let mut dst: Vec<String> = Vec::new();
        if let Some(h) = m.host_ip {
            if Family::of(&h) != fam {
                continue;
            }
            if !h.is_unspecified() {
                dst = sv(&["-d", &host_cidr(h)]);
            }
        }
        let p = m.protocol.as_str();
        let port = m.host_port.to_string();
        let matchp = sv(&["-p", p, "-m", p, "--dport", &port]);
        let with_src = |src: Option<String>, tail: Vec<String>| {
            let mut a = Vec::new();
            if let Some(s) = src {
                a.extend(sv(&["-s", &s]));
            }
            a.extend(dst.iter().cloned());
            a.extend(matchp.iter().cloned());
            a.extend(tail);
            SavedRule::new(&dn, a)
        };
        if spec.snat {
            // masqAll: -s 0.0.0.0/0 (::/0), which iptables-save omits
            let src = if spec.masq_all { None } else { Some(subnet_str(ctr)) };
            rules.push(with_src(src, sv(&["-j", &setmark])));
            if fam == Family::V4 && !spec.masq_all {
                rules.push(with_src(Some("127.0.0.1/32".into()), sv(&["-j", &setmark])));
            }
        }
        let to = match ctr.ip() {
            IpAddr::V4(a) => format!("{a}:{}", m.container_port),
            IpAddr::V6(a) => format!("[{a}]:{}", m.container_port),
        };
        rules.push(with_src(None, sv(&["-j", "DNAT", "--to-destination", &to])));
    }
    rules
}

/// ADD without reading. Guards (`-C`) make it fail atomically when the shared chains are not
/// fully in place; `-N` when the attachment's chain exists. Then use [`plan_portmap_add`].
pub fn plan_portmap_add_blind(spec: &PortMapSpec, fam: Family) -> Option<RestoreScript> {
    spec.container(fam)?;
    if spec.mappings.is_empty() {
        return None;
    }
    let mut s = RestoreScript::new("nat");
    let mut guard = |r: &SavedRule| s_check(&mut s, r);
    guard(&top_entry("PREROUTING"));
    guard(&top_entry("OUTPUT"));
    if uses_own_setmark(spec) {
        guard(&setmark_rule(spec.mark_masq_bit));
        guard(&mark_masq_rule(spec.mark_masq_bit));
        guard(&mark_masq_entry());
    }
    let dn = dn_chain(&spec.key);
    s.new_chain(&dn);
    for r in dn_rules(spec, fam) {
        s.append(&r);
    }
    for r in dnat_entries(spec, fam) {
        s.append(&r);
    }
    Some(s)
}

fn s_check(s: &mut RestoreScript, r: &SavedRule) {
    s.push_line(r.line("-C"));
}

/// ADD knowing the table: creates whatever shared part is missing, replaces the attachment's chain
/// and entry rules (entries appended, as the reference does: the first container keeps a host port
/// two containers map).
pub fn plan_portmap_add(spec: &PortMapSpec, fam: Family, saved: &SavedTable) -> Option<RestoreScript> {
    spec.container(fam)?;
    if spec.mappings.is_empty() {
        return None;
    }
    let mut s = RestoreScript::new("nat");
    if !saved.has_chain(TOP_DNAT) {
        s.new_chain(TOP_DNAT);
    }
    for c in ["PREROUTING", "OUTPUT"] {
        let r = top_entry(c);
        if !saved.contains(&r) {
            s.append(&r);
        }
    }
    if uses_own_setmark(spec) {
        for (chain, r) in [(SETMARK, setmark_rule(spec.mark_masq_bit)), (MARK_MASQ, mark_masq_rule(spec.mark_masq_bit))] {
            if !saved.has_chain(chain) {
                s.new_chain(chain);
            }
            if !saved.contains(&r) {
                s.append(&r);
            }
        }
        let e = mark_masq_entry();
        if !saved.contains(&e) {
            s.insert(&e);
        }
    }
    let dn = dn_chain(&spec.key);
    if saved.has_chain(&dn) {
        for r in saved.rules.iter().filter(|r| r.target() == Some(dn.as_str()) && r.chain != dn) {
            s.delete(r);
        }
        s.flush_chain(&dn);
    } else {
        s.new_chain(&dn);
    }
    for r in dn_rules(spec, fam) {
        s.append(&r);
    }
    for r in dnat_entries(spec, fam) {
        s.append(&r);
    }
    some(s)
}

/// DEL knowing the table: every rule jumping to the attachment's `CNI-DN-` (and legacy `CNI-SN-`)
/// chain, and the chains. Shared chains stay.
pub fn plan_portmap_del(key: &AttachmentKey, saved: &SavedTable) -> Option<RestoreScript> {
    let mut s = RestoreScript::new("nat");
    remove_chain(saved, &dn_chain(key), &mut s);
    remove_chain(saved, &old_sn_chain(key), &mut s);
    some(s)
}

/// GC: attachments of `network` (recognised by their `dnat name: ...` entry comment) whose
/// container is not in `valid`.
pub fn plan_portmap_gc(network: &str, valid: &[AttachmentKey], saved: &SavedTable) -> Option<RestoreScript> {
    let keep: BTreeSet<&str> = valid.iter().filter(|k| k.network == network).map(|k| k.container_id.as_str()).collect();
    let mut stale = BTreeSet::new();
    for r in &saved.rules {
        let Some((net, cid)) = r.comment().and_then(|c| parse_comment(c, "dnat ")) else { continue };
        if net == network && !keep.contains(cid) && r.target() == Some(format_chain_name_with_prefix(net, cid, "DN-").as_str()) {
            stale.insert(cid.to_string());
        }
    }
    let mut s = RestoreScript::new("nat");
    for cid in stale {
        let k = AttachmentKey::new(network, cid, "");
        remove_chain(saved, &dn_chain(&k), &mut s);
        remove_chain(saved, &old_sn_chain(&k), &mut s);
    }
    some(s)
}

pub fn check_portmap(spec: &PortMapSpec, fam: Family, saved: &SavedTable) -> Result<(), String> {
    if spec.container(fam).is_none() || spec.mappings.is_empty() {
        return Ok(());
    }
    let t = fam_name(fam);
    for c in ["PREROUTING", "OUTPUT"] {
        if !saved.contains(&top_entry(c)) {
            return Err(format!("{t} nat {c} lacks the jump to {TOP_DNAT}"));
        }
    }
    if uses_own_setmark(spec) {
        for r in [setmark_rule(spec.mark_masq_bit), mark_masq_rule(spec.mark_masq_bit), mark_masq_entry()] {
            if !saved.contains(&r) {
                return Err(format!("{t} nat chain {} lacks `{}`", r.chain, r.line("-A")));
            }
        }
    }
    let dn = dn_chain(&spec.key);
    if !saved.has_chain(&dn) {
        return Err(format!("{t} nat chain {dn} is missing"));
    }
    let have: Vec<SavedRule> = saved.rules_of(&dn).cloned().collect();
    let want = dn_rules(spec, fam);
    if have != want {
        return Err(format!("{t} nat chain {dn} does not hold the expected {} rules", want.len()));
    }
    let c = dnat_comment(&spec.key.network, &spec.key.container_id);
    for (p, ports) in port_groups(spec) {
        let found = saved.rules_of(TOP_DNAT).any(|r| {
            r.target() == Some(dn.as_str())
                && r.comment() == Some(c.as_str())
                && r.value("-p") == Some(p.as_str())
                && r.value("--dports") == Some(ports.as_str())
        });
        if !found {
            return Err(format!("{t} nat {TOP_DNAT} lacks the {} entry for ports {ports}", p.as_str()));
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Isolation (reference firewall ingressPolicy same-bridge / cni-isolation, table filter):
//   -I FORWARD -m comment --comment "CNI firewall plugin rules (ingressPolicy: same-bridge)" -j CNI-ISOLATION-STAGE-1
//   -I CNI-ISOLATION-STAGE-1 -i <br> ! -o <br> -m comment --comment "..." -j CNI-ISOLATION-STAGE-2
//   -A CNI-ISOLATION-STAGE-1 -m comment --comment "..." -j RETURN
//   -I CNI-ISOLATION-STAGE-2 -o <br> -m comment --comment "..." -j DROP
//   -A CNI-ISOLATION-STAGE-2 -m comment --comment "..." -j RETURN
// ---------------------------------------------------------------------------------------------

pub const STAGE1: &str = "CNI-ISOLATION-STAGE-1";
pub const STAGE2: &str = "CNI-ISOLATION-STAGE-2";
pub const ISOLATION_COMMENT: &str = "CNI firewall plugin rules (ingressPolicy: same-bridge)";

pub fn iso_forward_jump() -> SavedRule {
    SavedRule::new("FORWARD", sv(&["-m", "comment", "--comment", ISOLATION_COMMENT, "-j", STAGE1]))
}
pub fn iso_stage1_bridge(br: &str) -> SavedRule {
    SavedRule::new(STAGE1, sv(&["-i", br, "!", "-o", br, "-m", "comment", "--comment", ISOLATION_COMMENT, "-j", STAGE2]))
}
pub fn iso_stage2_bridge(br: &str) -> SavedRule {
    SavedRule::new(STAGE2, sv(&["-o", br, "-m", "comment", "--comment", ISOLATION_COMMENT, "-j", "DROP"]))
}
/// `allowPublished`: connections DNAT-ed to the bridge (published ports) are not dropped.
pub fn iso_stage2_published(br: &str) -> SavedRule {
    SavedRule::new(
        STAGE2,
        sv(&["-o", br, "-m", "conntrack", "--ctstate", "DNAT", "-m", "comment", "--comment", ISOLATION_COMMENT, "-j", "RETURN"]),
    )
}
/// `allowPublished`, reply direction: answers from the bridge to clients on other isolated bridges.
pub fn iso_stage1_published_reply(br: &str) -> SavedRule {
    SavedRule::new(
        STAGE1,
        sv(&["-i", br, "-m", "conntrack", "--ctstate", "DNAT", "--ctdir", "REPLY", "-m", "comment", "--comment", ISOLATION_COMMENT, "-j", "RETURN"]),
    )
}
pub fn iso_return(chain: &str) -> SavedRule {
    SavedRule::new(chain, sv(&["-m", "comment", "--comment", ISOLATION_COMMENT, "-j", "RETURN"]))
}

fn iso_rules(br: &str) -> [SavedRule; 5] {
    [iso_forward_jump(), iso_stage1_bridge(br), iso_return(STAGE1), iso_stage2_bridge(br), iso_return(STAGE2)]
}

/// ADD without writing: a transaction of `-C` checks only. It succeeds when everything is in place
/// already (every container after the first on a bridge); otherwise use [`plan_isolation_add`].
pub fn plan_isolation_check_only(spec: &IsolationSpec) -> RestoreScript {
    let mut s = RestoreScript::new("filter");
    for r in iso_rules(&spec.bridge) {
        s_check(&mut s, &r);
    }
    if spec.allow_published {
        s_check(&mut s, &iso_stage2_published(&spec.bridge));
        s_check(&mut s, &iso_stage1_published_reply(&spec.bridge));
    }
    s
}

pub fn plan_isolation_add(spec: &IsolationSpec, saved: &SavedTable) -> Option<RestoreScript> {
    let br = &spec.bridge;
    let mut s = RestoreScript::new("filter");
    for c in [STAGE1, STAGE2] {
        if !saved.has_chain(c) {
            s.new_chain(c);
        }
    }
    if !saved.contains(&iso_forward_jump()) {
        s.insert(&iso_forward_jump());
    }
    for (bridge_rule, chain) in [(iso_stage1_bridge(br), STAGE1), (iso_stage2_bridge(br), STAGE2)] {
        if !saved.contains(&bridge_rule) {
            s.insert(&bridge_rule);
        }
        if !saved.contains(&iso_return(chain)) {
            s.append(&iso_return(chain));
        }
    }
    // Inserted after the bridge's own rules so they land above them.
    for published in [iso_stage2_published(br), iso_stage1_published_reply(br)] {
        match (spec.allow_published, saved.contains(&published)) {
            (true, false) => s.insert(&published),
            (false, true) => s.delete(&published),
            _ => {}
        }
    }
    some(s)
}

fn bridge_of_stage_rule(r: &SavedRule) -> Option<&str> {
    let returns = r.target() == Some("RETURN");
    if r.chain == STAGE1 && (r.target() == Some(STAGE2) || (returns && r.value("-i").is_some())) {
        r.value("-i")
    } else if r.chain == STAGE2 && (r.target() == Some("DROP") || (returns && r.value("-o").is_some())) {
        r.value("-o")
    } else {
        None
    }
}

fn plan_isolation_remove(bridges: &BTreeSet<String>, saved: &SavedTable) -> Option<RestoreScript> {
    let mut s = RestoreScript::new("filter");
    let mut remaining = 0;
    for r in saved.rules.iter().filter(|r| r.chain == STAGE1 || r.chain == STAGE2) {
        match bridge_of_stage_rule(r) {
            Some(b) if bridges.contains(b) => s.delete(r),
            Some(_) => remaining += 1,
            None => {}
        }
    }
    if s.is_empty() {
        return None;
    }
    if remaining == 0 {
        // No isolated bridge left: take the shared chains away too.
        for r in saved.rules.iter().filter(|r| r.target() == Some(STAGE1) && r.chain != STAGE1) {
            s.delete(r);
        }
        for c in [STAGE1, STAGE2] {
            if saved.has_chain(c) {
                s.flush_chain(c);
            }
        }
        for c in [STAGE1, STAGE2] {
            if saved.has_chain(c) {
                s.delete_chain(c);
            }
        }
    }
    Some(s)
}

pub fn plan_isolation_del(bridge: &str, saved: &SavedTable) -> Option<RestoreScript> {
    plan_isolation_remove(&BTreeSet::from([bridge.to_string()]), saved)
}

pub fn plan_isolation_gc(valid_bridges: &[String], saved: &SavedTable) -> Option<RestoreScript> {
    let stale: BTreeSet<String> = saved
        .rules
        .iter()
        .filter_map(bridge_of_stage_rule)
        .filter(|b| !valid_bridges.iter().any(|v| v == b))
        .map(str::to_string)
        .collect();
    if stale.is_empty() {
        return None;
    }
    plan_isolation_remove(&stale, saved)
}

pub fn check_isolation(spec: &IsolationSpec, fam: Family, saved: &SavedTable) -> Result<(), String> {
    if !spec.families.contains(&fam) {
        return Ok(());
    }
    for r in iso_rules(&spec.bridge) {
        if !saved.contains(&r) {
            return Err(format!("{} filter chain {} lacks `{}`", fam_name(fam), r.chain, r.line("-A")));
        }
    }
    for published in [iso_stage2_published(&spec.bridge), iso_stage1_published_reply(&spec.bridge)] {
        let chain = &published.chain;
        match (spec.allow_published, saved.contains(&published)) {
            (true, false) => return Err(format!("{} filter chain {chain} lacks `{}`", fam_name(fam), published.line("-A"))),
            (false, true) => {
                return Err(format!(
                    "{} filter chain {chain} has `{}` but allowPublished is false",
                    fam_name(fam),
                    published.line("-A")
                ))
            }
            _ => {}
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::super::save::parse_table;
    use super::*;
    use crate::PortMapping;

    fn spec(addrs: &[&str]) -> MasqSpec {
        MasqSpec { key: AttachmentKey::new("probenet", "ctr1", "eth0"), addrs: addrs.iter().map(|a| a.parse().unwrap()).collect() }
    }

    /// `iptables-save -t nat` after the reference bridge (v1.1.1, ipMasq) added probenet/ctr1.
    const REF4: &str = r#"*nat
:PREROUTING ACCEPT [0:0]
:INPUT ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
:POSTROUTING ACCEPT [0:0]
:CNI-96499d5ef693007d260ed91e - [0:0]
-A POSTROUTING -s 10.99.0.2/32 -m comment --comment "name: \"probenet\" id: \"ctr1\"" -j CNI-96499d5ef693007d260ed91e
-A CNI-96499d5ef693007d260ed91e -d 10.99.0.0/24 -m comment --comment "name: \"probenet\" id: \"ctr1\"" -j ACCEPT
-A CNI-96499d5ef693007d260ed91e ! -d 224.0.0.0/4 -m comment --comment "name: \"probenet\" id: \"ctr1\"" -j MASQUERADE
COMMIT
"#;
    const REF6: &str = r#"*nat
:POSTROUTING ACCEPT [0:0]
:CNI-96499d5ef693007d260ed91e - [0:0]
-A POSTROUTING -s fd99::2/128 -m comment --comment "name: \"probenet\" id: \"ctr1\"" -j CNI-96499d5ef693007d260ed91e
-A CNI-96499d5ef693007d260ed91e -d fd99::/64 -m comment --comment "name: \"probenet\" id: \"ctr1\"" -j ACCEPT
-A CNI-96499d5ef693007d260ed91e ! -d ff00::/8 -m comment --comment "name: \"probenet\" id: \"ctr1\"" -j MASQUERADE
COMMIT
"#;

    #[test]
    fn blind_add_matches_reference_layout() {
        let s = plan_masq_add_blind(&spec(&["10.99.0.2/24", "fd99::2/64"]), Family::V4).unwrap().render();
        assert_eq!(
            s,
            "*nat\n-N CNI-96499d5ef693007d260ed91e\n\
             -A CNI-96499d5ef693007d260ed91e -d 10.99.0.0/24 -m comment --comment \"name: \\\"probenet\\\" id: \\\"ctr1\\\"\" -j ACCEPT\n\
             -A CNI-96499d5ef693007d260ed91e ! -d 224.0.0.0/4 -m comment --comment \"name: \\\"probenet\\\" id: \\\"ctr1\\\"\" -j MASQUERADE\n\
             -A POSTROUTING -s 10.99.0.2/32 -m comment --comment \"name: \\\"probenet\\\" id: \\\"ctr1\\\"\" -j CNI-96499d5ef693007d260ed91e\n\
             COMMIT\n"
        );
        // every rule we write is literally a line of the reference's iptables-save
        for l in plan_masq_add_blind(&spec(&["10.99.0.2/24"]), Family::V4).unwrap().lines().iter().filter(|l| l.starts_with("-A")) {
            assert!(REF4.contains(l.as_str()), "{l}");
        }
        for l in plan_masq_add_blind(&spec(&["fd99::2/64"]), Family::V6).unwrap().lines().iter().filter(|l| l.starts_with("-A")) {
            assert!(REF6.contains(l.as_str()), "{l}");
        }
        assert!(plan_masq_add_blind(&spec(&["10.99.0.2/24"]), Family::V6).is_none());
    }

    #[test]
    fn check_against_reference_state() {
        let t4 = parse_table(REF4, "nat");
        let t6 = parse_table(REF6, "nat");
        let sp = spec(&["10.99.0.2/24", "fd99::2/64"]);
        check_masq(&sp, Family::V4, &t4).unwrap();
        check_masq(&sp, Family::V6, &t6).unwrap();
        let e = check_masq(&spec(&["10.99.0.3/24"]), Family::V4, &t4).unwrap_err();
        assert!(e.contains("10.99.0.3"), "{e}");
        // nothing to do: ADD on existing identical state writes nothing
        assert!(plan_masq_add(&sp, Family::V4, &t4).is_none());
        assert!(check_masq(&sp, Family::V4, &SavedTable::default()).unwrap_err().contains("missing"));
    }

    #[test]
    fn add_with_state_merges() {
        let t4 = parse_table(REF4, "nat");
        // same container, second address in another subnet (e.g. second ifname on the network)
        let s = plan_masq_add(&spec(&["10.98.0.7/16"]), Family::V4, &t4).unwrap().render();
        let lines: Vec<&str> = s.lines().collect();
        assert_eq!(lines[1], "-F CNI-96499d5ef693007d260ed91e");
        assert!(lines[2].contains("-d 10.99.0.0/24") && lines[2].ends_with("ACCEPT"));
        assert!(lines[3].contains("-d 10.98.0.0/16") && lines[3].ends_with("ACCEPT"));
        assert!(lines[4].ends_with("MASQUERADE"));
        assert!(lines[5].starts_with("-A POSTROUTING -s 10.98.0.7/32"));
    }

    #[test]
    fn del_plans() {
        let t4 = parse_table(REF4, "nat");
        let key = spec(&[]).key;
        let expect = "*nat\n-D POSTROUTING -s 10.99.0.2/32 -m comment --comment \"name: \\\"probenet\\\" id: \\\"ctr1\\\"\" -j CNI-96499d5ef693007d260ed91e\n-F CNI-96499d5ef693007d260ed91e\n-X CNI-96499d5ef693007d260ed91e\nCOMMIT\n";
        // by key, no addresses
        assert_eq!(plan_masq_del(&key, &[], Family::V4, &t4).unwrap().render(), expect);
        // with the address
        let a: Vec<IpNetwork> = vec!["10.99.0.2/24".parse().unwrap()];
        assert_eq!(plan_masq_del(&key, &a, Family::V4, &t4).unwrap().render(), expect);
        assert_eq!(plan_masq_del_blind(&key, &a, Family::V4).unwrap().render(), expect);
        // another address of the same container still uses the chain: keep it
        let other: Vec<IpNetwork> = vec!["10.99.0.9/24".parse().unwrap()];
        assert!(plan_masq_del(&key, &other, Family::V4, &t4).is_none());
        // gone already
        assert!(plan_masq_del(&key, &[], Family::V4, &SavedTable::default()).is_none());
        // other container: nothing
        assert!(plan_masq_del(&AttachmentKey::new("probenet", "ctr2", "eth0"), &[], Family::V4, &t4).is_none());
    }

    #[test]
    fn gc_plan() {
        let t4 = parse_table(REF4, "nat");
        let keep = vec![AttachmentKey::new("probenet", "ctr1", "eth0")];
        assert!(plan_masq_gc("probenet", &keep, &t4).is_none());
        assert!(plan_masq_gc("othernet", &[], &t4).is_none());
        let s = plan_masq_gc("probenet", &[], &t4).unwrap().render();
        assert!(s.contains("-X CNI-96499d5ef693007d260ed91e"));
        assert!(s.contains("-D POSTROUTING -s 10.99.0.2/32"));
    }

    /// `iptables-save -t nat` after the reference portmap (v1.1.1) for probenet/ctr1 with
    /// 8080->80/tcp, 192.0.2.1:8443->443/tcp, 5353->53/udp (v4 part).
    const REF_PM4: &str = r#"*nat
:PREROUTING ACCEPT [0:0]
:INPUT ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
:POSTROUTING ACCEPT [0:0]
:CNI-DN-96499d5ef693007d260ed - [0:0]
:CNI-HOSTPORT-DNAT - [0:0]
:CNI-HOSTPORT-MASQ - [0:0]
:CNI-HOSTPORT-SETMARK - [0:0]
-A PREROUTING -m addrtype --dst-type LOCAL -j CNI-HOSTPORT-DNAT
-A OUTPUT -m addrtype --dst-type LOCAL -j CNI-HOSTPORT-DNAT
-A POSTROUTING -m comment --comment "CNI portfwd requiring masquerade" -j CNI-HOSTPORT-MASQ
-A CNI-DN-96499d5ef693007d260ed -s 10.99.0.0/24 -p tcp -m tcp --dport 8080 -j CNI-HOSTPORT-SETMARK
-A CNI-DN-96499d5ef693007d260ed -s 127.0.0.1/32 -p tcp -m tcp --dport 8080 -j CNI-HOSTPORT-SETMARK
-A CNI-DN-96499d5ef693007d260ed -p tcp -m tcp --dport 8080 -j DNAT --to-destination 10.99.0.2:80
-A CNI-DN-96499d5ef693007d260ed -s 10.99.0.0/24 -d 192.0.2.1/32 -p tcp -m tcp --dport 8443 -j CNI-HOSTPORT-SETMARK
-A CNI-DN-96499d5ef693007d260ed -s 127.0.0.1/32 -d 192.0.2.1/32 -p tcp -m tcp --dport 8443 -j CNI-HOSTPORT-SETMARK
-A CNI-DN-96499d5ef693007d260ed -d 192.0.2.1/32 -p tcp -m tcp --dport 8443 -j DNAT --to-destination 10.99.0.2:443
-A CNI-DN-96499d5ef693007d260ed -s 10.99.0.0/24 -p udp -m udp --dport 5353 -j CNI-HOSTPORT-SETMARK
-A CNI-DN-96499d5ef693007d260ed -s 127.0.0.1/32 -p udp -m udp --dport 5353 -j CNI-HOSTPORT-SETMARK
-A CNI-DN-96499d5ef693007d260ed -p udp -m udp --dport 5353 -j DNAT --to-destination 10.99.0.2:53
-A CNI-HOSTPORT-DNAT -p tcp -m comment --comment "dnat name: \"probenet\" id: \"ctr1\"" -m multiport --dports 8080,8443 -j CNI-DN-96499d5ef693007d260ed
-A CNI-HOSTPORT-DNAT -p udp -m comment --comment "dnat name: \"probenet\" id: \"ctr1\"" -m multiport --dports 5353 -j CNI-DN-96499d5ef693007d260ed
-A CNI-HOSTPORT-MASQ -m mark --mark 0x2000/0x2000 -j MASQUERADE
-A CNI-HOSTPORT-SETMARK -m comment --comment "CNI portfwd masquerade mark" -j MARK --set-xmark 0x2000/0x2000
COMMIT
"#;

    fn pm_spec() -> PortMapSpec {
        let mut s = PortMapSpec::new(
            AttachmentKey::new("probenet", "ctr1", "eth0"),
            vec![
                PortMapping { host_port: 8080, container_port: 80, protocol: Protocol::Tcp, host_ip: None },
                PortMapping { host_port: 8443, container_port: 443, protocol: Protocol::Tcp, host_ip: Some("192.0.2.1".parse().unwrap()) },
                PortMapping { host_port: 5353, container_port: 53, protocol: Protocol::Udp, host_ip: None },
            ],
        );
        s.container_v4 = Some("10.99.0.2/24".parse().unwrap());
        s.container_v6 = Some("fd99::2/64".parse().unwrap());
        s
    }

    #[test]
    fn portmap_matches_reference() {
        let t = parse_table(REF_PM4, "nat");
        let spec = pm_spec();
        check_portmap(&spec, Family::V4, &t).unwrap();
        let blind = plan_portmap_add_blind(&spec, Family::V4).unwrap();
        for l in blind.lines().iter().filter(|l| l.starts_with("-A") || l.starts_with("-I")) {
            let as_saved = format!("-A{}", &l[2..]);
            assert!(REF_PM4.contains(&as_saved), "{l}");
        }
        assert!(blind.lines().iter().any(|l| l.starts_with("-C PREROUTING")));
        // v6: the v4 host IP mapping is skipped in the DN chain but its port stays in the multiport entry
        let r6: Vec<String> = dn_rules(&spec, Family::V6).iter().map(|r| r.line("-A")).collect();
        assert_eq!(
            r6,
            vec![
                "-A CNI-DN-96499d5ef693007d260ed -s fd99::/64 -p tcp -m tcp --dport 8080 -j CNI-HOSTPORT-SETMARK",
                "-A CNI-DN-96499d5ef693007d260ed -p tcp -m tcp --dport 8080 -j DNAT --to-destination [fd99::2]:80",
                "-A CNI-DN-96499d5ef693007d260ed -s fd99::/64 -p udp -m udp --dport 5353 -j CNI-HOSTPORT-SETMARK",
                "-A CNI-DN-96499d5ef693007d260ed -p udp -m udp --dport 5353 -j DNAT --to-destination [fd99::2]:53",
            ]
        );
        assert!(dnat_entries(&spec, Family::V6)[0].line("-A").contains("--dports 8080,8443"));
        // DEL by key
        let d = plan_portmap_del(&spec.key, &t).unwrap().render();
        assert_eq!(d.matches("-D CNI-HOSTPORT-DNAT").count(), 2);
        assert!(d.contains("-X CNI-DN-96499d5ef693007d260ed"));
        assert!(!d.contains("SETMARK -"), "shared chains stay: {d}");
        // GC
        assert!(plan_portmap_gc("probenet", std::slice::from_ref(&spec.key), &t).is_none());
        assert_eq!(plan_portmap_gc("probenet", &[], &t).unwrap().render(), d);
        // ADD on existing state replaces chain and entries
        let a = plan_portmap_add(&spec, Family::V4, &t).unwrap().render();
        assert!(a.contains("-F CNI-DN-96499d5ef693007d260ed") && a.matches("-A CNI-HOSTPORT-DNAT").count() == 2);
        assert!(!a.contains("-N"));
    }

    #[test]
    fn portmap_options() {
        let mut spec = pm_spec();
        spec.masq_all = true;
        spec.mark_masq_bit = 0;
        let r: Vec<String> = dn_rules(&spec, Family::V4).iter().map(|r| r.line("-A")).collect();
        assert_eq!(r[0], "-A CNI-DN-96499d5ef693007d260ed -p tcp -m tcp --dport 8080 -j CNI-HOSTPORT-SETMARK");
        assert_eq!(r[1], "-A CNI-DN-96499d5ef693007d260ed -p tcp -m tcp --dport 8080 -j DNAT --to-destination 10.99.0.2:80");
        assert_eq!(setmark_rule(0).args.last().unwrap(), "0x1/0x1");
        spec.external_setmark_chain = Some("KUBE-MARK-MASQ".into());
        spec.conditions_v4 = Some(vec!["-s".into(), "10.0.0.0/8".into()]);
        assert!(dn_rules(&spec, Family::V4)[0].line("-A").ends_with("-j KUBE-MARK-MASQ"));
        assert!(dnat_entries(&spec, Family::V4)[0].line("-A").contains("--dports 8080,8443 -s 10.0.0.0/8 -j CNI-DN-"));
        let b = plan_portmap_add_blind(&spec, Family::V4).unwrap();
        assert!(!b.lines().iter().any(|l| l.contains("SETMARK")), "external chain: no own SETMARK guard");
        spec.snat = false;
        assert_eq!(dn_rules(&spec, Family::V4).len(), 3);
        // > 15 ports are split in multiport groups
        let many: Vec<PortMapping> =
            (1..=20).map(|p| PortMapping { host_port: p, container_port: p, protocol: Protocol::Tcp, host_ip: None }).collect();
        let s = PortMapSpec { mappings: many, ..pm_spec() };
        let e = dnat_entries(&s, Family::V4);
        assert_eq!(e.len(), 2);
        assert_eq!(e[1].value("--dports"), Some("16,17,18,19,20"));
    }

    #[test]
    fn isolation_plans() {
        let spec = IsolationSpec { bridge: "br1".into(), families: vec![Family::V4], allow_published: false };
        let s = plan_isolation_add(&spec, &SavedTable::default()).unwrap().render();
        assert_eq!(
            s,
            "*filter\n-N CNI-ISOLATION-STAGE-1\n-N CNI-ISOLATION-STAGE-2\n\
             -I FORWARD -m comment --comment \"CNI firewall plugin rules (ingressPolicy: same-bridge)\" -j CNI-ISOLATION-STAGE-1\n\
             -I CNI-ISOLATION-STAGE-1 -i br1 ! -o br1 -m comment --comment \"CNI firewall plugin rules (ingressPolicy: same-bridge)\" -j CNI-ISOLATION-STAGE-2\n\
             -A CNI-ISOLATION-STAGE-1 -m comment --comment \"CNI firewall plugin rules (ingressPolicy: same-bridge)\" -j RETURN\n\
             -I CNI-ISOLATION-STAGE-2 -o br1 -m comment --comment \"CNI firewall plugin rules (ingressPolicy: same-bridge)\" -j DROP\n\
             -A CNI-ISOLATION-STAGE-2 -m comment --comment \"CNI firewall plugin rules (ingressPolicy: same-bridge)\" -j RETURN\n\
             COMMIT\n"
        );
        let state = format!(
            "*filter\n:FORWARD ACCEPT [0:0]\n:{STAGE1} - [0:0]\n:{STAGE2} - [0:0]\n{}\n{}\n{}\n{}\n{}\n{}\n{}\nCOMMIT\n",
            iso_forward_jump().line("-A"),
            iso_stage1_bridge("br1").line("-A"),
            iso_stage1_bridge("br2").line("-A"),
            iso_return(STAGE1).line("-A"),
            iso_stage2_bridge("br1").line("-A"),
            iso_stage2_bridge("br2").line("-A"),
            iso_return(STAGE2).line("-A"),
        );
        let t = parse_table(&state, "filter");
        check_isolation(&spec, Family::V4, &t).unwrap();
        assert!(plan_isolation_add(&spec, &t).is_none());
        let d = plan_isolation_del("br1", &t).unwrap().render();
        assert_eq!(d.lines().count(), 4, "{d}");
        assert!(!d.contains("-X"));
        let g = plan_isolation_gc(&[], &t).unwrap().render();
        assert!(g.contains("-X CNI-ISOLATION-STAGE-1") && g.contains("-D FORWARD"));
        assert!(plan_isolation_gc(&["br1".into(), "br2".into()], &t).is_none());
    }
}
