//! Bridge isolation on nftables, iptables (host alternative) and iptables-legacy, in throwaway
//! network namespaces. Requires root.

mod common;

use cni_firewall::ipt::plan as ipt;
use cni_firewall::nft::plan::{isolation_chain, ISOLATION_TABLE};
use cni_firewall::{Family, IsolationSpec};
use common::*;
use serde_json::json;

fn iso(br: &str) -> IsolationSpec {
    IsolationSpec { bridge: br.into(), families: vec![Family::V4, Family::V6], allow_published: false }
}

fn bridges_present(flavor: Flavor) -> Vec<String> {
    let mut v: Vec<String> = match flavor {
        Flavor::Nft => nft_elems(&nft_ruleset(), ISOLATION_TABLE, "isolated")
            .into_iter()
            .map(|(k, _)| k.as_str().unwrap().to_string())
            .collect(),
        _ => {
            let mut out = Vec::new();
            for fam in Family::BOTH {
                for l in ipt_rules(flavor, fam, "filter") {
                    if let Some(rest) = l.strip_prefix("-A CNI-ISOLATION-STAGE-2 -o ") {
                        let b = rest.split_whitespace().next().unwrap().to_string();
                        if !out.contains(&b) {
                            out.push(b);
                        }
                    }
                }
            }
            out
        }
    };
    v.sort();
    v
}

fn add_check_del(flavor: Flavor) {
    in_sandbox(move || {
        let (fw, runner) = make(flavor);
        let n = count(&runner, || fw.add_isolation(&iso("br1")).unwrap());
        // iptables, allowPublished false: read + write per family
        assert_eq!(n, if flavor == Flavor::Nft { 1 } else { 4 });
        fw.add_isolation(&iso("br2")).unwrap();
        // already in place: one read per family, nothing written
        let n = count(&runner, || fw.add_isolation(&iso("br1")).unwrap());
        assert_eq!(n, if flavor == Flavor::Nft { 1 } else { 2 });
        fw.check_isolation(&iso("br1")).unwrap();
        fw.check_isolation(&iso("br2")).unwrap();
        assert_eq!(bridges_present(flavor), vec!["br1", "br2"]);
        match flavor {
            Flavor::Nft => {
                let rs = nft_ruleset();
                let c = isolation_chain("br1");
                assert_eq!(
                    nft_rules(&rs, ISOLATION_TABLE, &c),
                    vec![json!([
                        {"match": {"op": "!=", "left": {"meta": {"key": "oifname"}}, "right": "br1"}},
                        {"match": {"op": "==", "left": {"meta": {"key": "oifname"}}, "right": "@isolated"}},
                        {"drop": null}
                    ])]
                );
                assert!(nft_elems(&rs, ISOLATION_TABLE, "by_iif").contains(&(json!("br1"), json!({"goto": {"target": c}}))));
            }
            _ => {
                for fam in Family::BOTH {
                    let r = ipt_rules(flavor, fam, "filter");
                    let c = "\"CNI firewall plugin rules (ingressPolicy: same-bridge)\"";
                    assert_eq!(
                        r,
                        vec![
                            format!("-A FORWARD -m comment --comment {c} -j CNI-ISOLATION-STAGE-1"),
                            format!("-A CNI-ISOLATION-STAGE-1 -i br2 ! -o br2 -m comment --comment {c} -j CNI-ISOLATION-STAGE-2"),
                            format!("-A CNI-ISOLATION-STAGE-1 -i br1 ! -o br1 -m comment --comment {c} -j CNI-ISOLATION-STAGE-2"),
                            format!("-A CNI-ISOLATION-STAGE-1 -m comment --comment {c} -j RETURN"),
                            format!("-A CNI-ISOLATION-STAGE-2 -o br2 -m comment --comment {c} -j DROP"),
                            format!("-A CNI-ISOLATION-STAGE-2 -o br1 -m comment --comment {c} -j DROP"),
                            format!("-A CNI-ISOLATION-STAGE-2 -m comment --comment {c} -j RETURN"),
                        ],
                        "{fam:?}"
                    );
                }
            }
        }
        let n = count(&runner, || fw.del_isolation("br1").unwrap());
        // nftables: exact delete without reading; iptables: read + write per family
        assert_eq!(n, if flavor == Flavor::Nft { 1 } else { 4 });
        assert_eq!(fw.check_isolation(&iso("br1")).unwrap_err().code(), 105);
        fw.check_isolation(&iso("br2")).unwrap();
        assert_eq!(bridges_present(flavor), vec!["br2"]);
        fw.del_isolation("br1").unwrap();
        fw.del_isolation("br2").unwrap();
        assert!(bridges_present(flavor).is_empty());
        if flavor != Flavor::Nft {
            for fam in Family::BOTH {
                assert!(ipt_rules(flavor, fam, "filter").is_empty(), "no bridge left: shared chains removed too");
                assert!(ipt_user_chains(flavor, fam, "filter").is_empty());
            }
        }
        assert_eq!(fw.add_isolation(&iso("bad\"br")).unwrap_err().code(), 7);
    });
}

fn gc_flush_concurrent(flavor: Flavor) {
    in_sandbox(move || {
        let ns = NsHandle::current();
        let hs: Vec<_> = (0..6).map(|i| ns.spawn(move || make(flavor).0.add_isolation(&iso(&format!("br{i}"))))).collect();
        for h in hs {
            h.join().unwrap().unwrap();
        }
        let (fw, _) = make(flavor);
        assert_eq!(bridges_present(flavor), (0..6).map(|i| format!("br{i}")).collect::<Vec<_>>());
        fw.gc_isolation(&["br1".into(), "br4".into()]).unwrap();
        assert_eq!(bridges_present(flavor), vec!["br1", "br4"]);
        fw.check_isolation(&iso("br4")).unwrap();
        match flavor {
            Flavor::Nft => {
                sh("nft", &["flush", "ruleset"]);
            }
            _ => {
                for fam in Family::BOTH {
                    sh(&flavor.cmd_bin(fam), &["-w", "-t", "filter", "-F"]);
                }
            }
        }
        fw.del_isolation("br1").unwrap();
        fw.gc_isolation(&[]).unwrap();
        assert!(bridges_present(flavor).is_empty());
        fw.add_isolation(&iso("br1")).unwrap();
        fw.check_isolation(&iso("br1")).unwrap();
        if flavor != Flavor::Nft {
            // the reference's other user of these chains: ingressPolicy's rules are recognised as ours
            let r = ipt_rules(flavor, Family::V4, "filter");
            assert!(r.contains(&ipt::iso_stage1_bridge("br1").line("-A")));
        }
    });
}

fn allow_published_toggles(flavor: Flavor) {
    in_sandbox(move || {
        let (fw, runner) = make(flavor);
        let open = IsolationSpec { allow_published: true, ..iso("br1") };
        let n = count(&runner, || fw.add_isolation(&open).unwrap());
        // iptables, first bridge: the check-only transaction fails, then read + write, per family
        assert_eq!(n, if flavor == Flavor::Nft { 1 } else { 6 });
        // already in place: one check-only transaction per family
        let n = count(&runner, || fw.add_isolation(&open).unwrap());
        assert_eq!(n, if flavor == Flavor::Nft { 1 } else { 2 });
        fw.check_isolation(&open).unwrap();
        assert_eq!(fw.check_isolation(&iso("br1")).unwrap_err().code(), 105);
        // switched off by a later ADD without reading first
        fw.add_isolation(&iso("br1")).unwrap();
        fw.check_isolation(&iso("br1")).unwrap();
        fw.add_isolation(&open).unwrap();
        // DEL removes the published mark too; a re-created closed bridge is closed
        fw.del_isolation("br1").unwrap();
        fw.add_isolation(&iso("br1")).unwrap();
        fw.check_isolation(&iso("br1")).unwrap();
        fw.del_isolation("br1").unwrap();
        assert!(bridges_present(flavor).is_empty());
        if flavor == Flavor::Nft {
            assert!(nft_elems(&nft_ruleset(), ISOLATION_TABLE, "published").is_empty());
        }
    });
}

macro_rules! per_flavor {
    ($($f:ident),*) => {
        mod nft { use super::*; $( #[test] fn $f() { super::$f(Flavor::Nft) } )* }
        mod iptables { use super::*; $( #[test] fn $f() { super::$f(Flavor::IptHost) } )* }
        mod iptables_legacy { use super::*; $( #[test] fn $f() { super::$f(Flavor::IptLegacy) } )* }
    };
}

per_flavor!(add_check_del, gc_flush_concurrent, allow_published_toggles);
