//! Port mappings on nftables, iptables (host alternative) and iptables-legacy, both families, in
//! throwaway network namespaces. Requires root.

mod common;

use cni_firewall::ipt::plan as ipt;
use cni_firewall::nft::plan::{hostport_dnat_chain, hostport_snat_chain, HOSTPORT_TABLE};
use cni_firewall::{Family, PortMapSpec, Protocol};
use common::*;
use serde_json::json;

const NET: &str = "pmnet";

fn spec(cid: &str, n: u8, ports: &[(u16, u16, Protocol, Option<&str>)]) -> PortMapSpec {
    portmap_spec(NET, cid, n, ports)
}

fn web(cid: &str, n: u8) -> PortMapSpec {
    spec(
        cid,
        n,
        &[(8080, 80, Protocol::Tcp, None), (8443, 443, Protocol::Tcp, Some("192.0.2.1")), (5353, 53, Protocol::Udp, None), (9000, 9000, Protocol::Sctp, Some("2001:db8::1"))],
    )
}

/// Per-attachment state present for `cid`?
fn present(flavor: Flavor, cid: &str) -> bool {
    let k = key(NET, cid);
    match flavor {
        Flavor::Nft => {
            let rs = nft_ruleset();
            let chains = nft_chain_names(&rs, HOSTPORT_TABLE);
            let p = hostport_dnat_chain(&k);
            let has_chain = chains.contains(&p) || chains.contains(&hostport_snat_chain(&k));
            let has_elem = ["hostip4", "any4", "hostip6", "any6"]
                .iter()
                .any(|m| nft_elems(&rs, HOSTPORT_TABLE, m).iter().any(|(_, v)| v["goto"]["target"] == p));
            has_chain || has_elem
        }
        _ => Family::BOTH.iter().any(|f| {
            let dn = ipt::dn_chain(&k);
            ipt_rules(flavor, *f, "nat").iter().any(|l| l.contains(&dn)) || ipt_user_chains(flavor, *f, "nat").contains(&dn)
        }),
    }
}

fn add_check_del(flavor: Flavor) {
    in_sandbox(move || {
        let (fw, runner) = make(flavor);
        let a = web("a", 5);
        let n = count(&runner, || fw.add_portmap(&a).unwrap());
        // first ever ADD on iptables: guards fail (no shared chains yet) -> read + write per family
        assert_eq!(n, if flavor == Flavor::Nft { 1 } else { 6 }, "first ADD");
        fw.check_portmap(&a).unwrap();
        let b = spec("b", 6, &[(8081, 81, Protocol::Tcp, None)]);
        let n = count(&runner, || fw.add_portmap(&b).unwrap());
        assert_eq!(n, if flavor == Flavor::Nft { 1 } else { 2 }, "later ADD: one transaction per family");
        fw.check_portmap(&b).unwrap();

        match flavor {
            Flavor::Nft => {
                let rs = nft_ruleset();
                let p = hostport_dnat_chain(&a.key);
                assert!(nft_elems(&rs, HOSTPORT_TABLE, "any4").contains(&(json!({"concat": ["tcp", 8080]}), json!({"goto": {"target": p}}))));
                assert!(nft_elems(&rs, HOSTPORT_TABLE, "hostip4").contains(&(json!({"concat": ["192.0.2.1", "tcp", 8443]}), json!({"goto": {"target": p}}))));
                assert!(nft_elems(&rs, HOSTPORT_TABLE, "hostip6").contains(&(json!({"concat": ["2001:db8::1", "sctp", 9000]}), json!({"goto": {"target": p}}))));
                assert!(nft_elems(&rs, HOSTPORT_TABLE, "snat4").contains(&(json!("10.66.0.5"), json!({"goto": {"target": hostport_snat_chain(&a.key)}}))));
                let rules = nft_rules(&rs, HOSTPORT_TABLE, &p);
                assert!(rules.contains(&json!([
                    {"match": {"op": "==", "left": {"payload": {"protocol": "ip", "field": "daddr"}}, "right": "192.0.2.1"}},
                    {"match": {"op": "==", "left": {"payload": {"protocol": "tcp", "field": "dport"}}, "right": 8443}},
                    {"dnat": {"family": "ip", "addr": "10.66.0.5", "port": 443}}
                ])));
                assert_eq!(rules.len(), 6, "3 mappings v4 (sctp one is v6-only) + 3 v6 (8443 is v4-only)");
            }
            _ => {
                let r4 = ipt_rules(flavor, Family::V4, "nat");
                let dn = ipt::dn_chain(&a.key);
                assert!(r4.contains(&format!("-A {dn} -d 192.0.2.1/32 -p tcp -m tcp --dport 8443 -j DNAT --to-destination 10.66.0.5:443")));
                assert!(r4.contains(&format!("-A {dn} -s 127.0.0.1/32 -p tcp -m tcp --dport 8080 -j CNI-HOSTPORT-SETMARK")));
                let r6 = ipt_rules(flavor, Family::V6, "nat");
                assert!(r6.contains(&format!("-A {dn} -d 2001:db8::1/128 -p sctp -m sctp --dport 9000 -j DNAT --to-destination [fd66::5]:9000")));
                assert!(!r6.iter().any(|l| l.contains("127.0.0.1") || l.contains("192.0.2.1")));
                // entries in ADD order, as the reference appends them: the first container keeps a contested port
                let entries: Vec<&String> = r4.iter().filter(|l| l.starts_with("-A CNI-HOSTPORT-DNAT")).collect();
                assert!(entries[0].contains(&ipt::dn_chain(&a.key)), "{entries:?}");
                assert!(entries.last().is_some_and(|l| l.contains(&ipt::dn_chain(&b.key))), "{entries:?}");
                assert!(r4.contains(&"-A PREROUTING -m addrtype --dst-type LOCAL -j CNI-HOSTPORT-DNAT".to_string()));
                assert!(r4.contains(&"-A OUTPUT -m addrtype --dst-type LOCAL -j CNI-HOSTPORT-DNAT".to_string()));
            }
        }

        let n = count(&runner, || fw.del_portmap(&a.key).unwrap());
        assert_eq!(n, if flavor == Flavor::Nft { 2 } else { 4 }, "DEL: one read + one write (per family)");
        assert!(!present(flavor, "a"));
        assert_eq!(fw.check_portmap(&a).unwrap_err().code(), 105);
        fw.check_portmap(&b).unwrap();
        fw.del_portmap(&a.key).unwrap();
        fw.del_portmap(&b.key).unwrap();
        assert!(!present(flavor, "b"));
        match flavor {
            Flavor::Nft => {
                let rs = nft_ruleset();
                for m in ["hostip4", "any4", "snat4", "hostip6", "any6", "snat6"] {
                    assert!(nft_elems(&rs, HOSTPORT_TABLE, m).is_empty(), "{m}");
                }
            }
            _ => {
                for fam in Family::BOTH {
                    let mut chains = ipt_user_chains(flavor, fam, "nat");
                    chains.sort();
                    assert_eq!(chains, vec!["CNI-HOSTPORT-DNAT", "CNI-HOSTPORT-MASQ", "CNI-HOSTPORT-SETMARK"]);
                    assert!(ipt_rules(flavor, fam, "nat").iter().all(|l| !l.contains("CNI-DN-")));
                }
            }
        }
    });
}

fn repeated_add_and_options(flavor: Flavor) {
    in_sandbox(move || {
        let (fw, _) = make(flavor);
        let mut a = web("a", 5);
        fw.add_portmap(&a).unwrap();
        fw.add_portmap(&a).unwrap();
        fw.check_portmap(&a).unwrap();
        // changed options on a repeated ADD replace the attachment's rules
        a.masq_all = true;
        a.mark_masq_bit = 14;
        fw.add_portmap(&a).unwrap();
        fw.check_portmap(&a).unwrap();
        a.snat = false;
        a.mappings.truncate(1);
        fw.add_portmap(&a).unwrap();
        fw.check_portmap(&a).unwrap();
        if flavor == Flavor::Nft {
            let mut c = a.clone();
            c.conditions_v4 = Some(vec!["ip".into(), "saddr".into(), "10.0.0.0/8".into()]);
            assert_eq!(fw.add_portmap(&c).unwrap_err().code(), 2, "conditions refused, not ignored");
        } else {
            // the external mark chain must exist for iptables to accept the jump
            for fam in Family::BOTH {
                sh(&flavor.cmd_bin(fam), &["-w", "-t", "nat", "-N", "KUBE-MARK-MASQ"]);
            }
            a.snat = true;
            a.external_setmark_chain = Some("KUBE-MARK-MASQ".into());
            a.conditions_v4 = Some(vec!["!".into(), "-s".into(), "10.99.0.0/16".into()]);
            fw.add_portmap(&a).unwrap();
            fw.check_portmap(&a).unwrap();
            let r4 = ipt_rules(flavor, Family::V4, "nat");
            assert!(r4.iter().any(|l| l.contains("! -s 10.99.0.0/16") && l.contains("CNI-HOSTPORT-DNAT")), "{r4:?}");
            assert!(r4.iter().any(|l| l.ends_with("-j KUBE-MARK-MASQ")));
        }
        fw.del_portmap(&a.key).unwrap();
        assert!(!present(flavor, "a"));
    });
}

fn host_port_takeover(flavor: Flavor) {
    in_sandbox(move || {
        let (fw, _) = make(flavor);
        // A's DEL never ran; B takes the same host port (last writer wins, like the reference)
        let a = spec("a", 5, &[(8080, 80, Protocol::Tcp, None)]);
        let b = spec("b", 6, &[(8080, 8080, Protocol::Tcp, None)]);
        fw.add_portmap(&a).unwrap();
        fw.add_portmap(&b).unwrap();
        fw.check_portmap(&b).unwrap();
        fw.del_portmap(&a.key).unwrap();
        fw.check_portmap(&b).unwrap();
        assert!(!present(flavor, "a"));
    });
}

fn concurrent_writers(flavor: Flavor) {
    in_sandbox(move || {
        let ns = NsHandle::current();
        let s = |i: u8| spec(&format!("c{i}"), 10 + i, &[(10000 + i as u16, 80, Protocol::Tcp, None), (11000 + i as u16, 53, Protocol::Udp, None)]);
        let hs: Vec<_> = (0..8).map(|i| ns.spawn(move || make(flavor).0.add_portmap(&s(i)))).collect();
        for h in hs {
            h.join().unwrap().unwrap();
        }
        let hs: Vec<_> = (0..8)
            .map(|i| ns.spawn(move || if i % 2 == 0 { make(flavor).0.del_portmap(&s(i).key) } else { Ok(()) }))
            .chain((8..12).map(|i| ns.spawn(move || make(flavor).0.add_portmap(&s(i)))))
            .collect();
        for h in hs {
            h.join().unwrap().unwrap();
        }
        let (fw, _) = make(flavor);
        for i in 0..12u8 {
            let ok = fw.check_portmap(&s(i)).is_ok();
            assert_eq!(ok, i >= 8 || i % 2 == 1, "c{i}");
            assert_eq!(present(flavor, &format!("c{i}")), ok, "c{i}");
        }
    });
}

fn gc_and_flush(flavor: Flavor) {
    in_sandbox(move || {
        let (fw, _) = make(flavor);
        // distinct host ports: on nftables a host port has one owner (last writer wins)
        let a = web("a", 5);
        let b = spec("b", 6, &[(7080, 80, Protocol::Tcp, None), (7053, 53, Protocol::Udp, Some("fd66::1"))]);
        let mut x = spec("x", 7, &[(6080, 80, Protocol::Tcp, Some("192.0.2.7"))]);
        x.key.network = "othernet".into();
        for s in [&a, &b, &x] {
            fw.add_portmap(s).unwrap();
        }
        fw.gc_portmap(NET, std::slice::from_ref(&a.key)).unwrap();
        fw.check_portmap(&a).unwrap();
        fw.check_portmap(&x).unwrap();
        assert!(!present(flavor, "b"));
        // an admin flushes everything; teardown still succeeds
        match flavor {
            Flavor::Nft => {
                sh("nft", &["flush", "ruleset"]);
            }
            _ => {
                for fam in Family::BOTH {
                    sh(&flavor.cmd_bin(fam), &["-w", "-t", "nat", "-F"]);
                }
            }
        }
        fw.del_portmap(&a.key).unwrap();
        fw.del_portmap(&x.key).unwrap();
        fw.gc_portmap(NET, &[]).unwrap();
        assert!(!present(flavor, "a"));
        // and ADD works again afterwards (the shared parts are recreated)
        fw.add_portmap(&a).unwrap();
        fw.check_portmap(&a).unwrap();
    });
}

macro_rules! per_flavor {
    ($($f:ident),*) => {
        mod nft { use super::*; $( #[test] fn $f() { super::$f(Flavor::Nft) } )* }
        mod iptables { use super::*; $( #[test] fn $f() { super::$f(Flavor::IptHost) } )* }
        mod iptables_legacy { use super::*; $( #[test] fn $f() { super::$f(Flavor::IptLegacy) } )* }
    };
}

per_flavor!(add_check_del, repeated_add_and_options, host_port_takeover, concurrent_writers, gc_and_flush);
