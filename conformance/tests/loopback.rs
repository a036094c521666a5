//! Our `loopback` plugin (target/<profile>/loopback): through the runner, differentially against the
//! reference /usr/lib/cni/loopback, and with bad input through `exec_plugin`.
//!
//! These tests fail with "plugin binary `loopback` not found ...: run `cargo build --workspace` first"
//! until our plugin is built.

mod common;

use std::path::PathBuf;

use common::lab::{expect_code, refs, Lab};
use conformance::diff::{self, Case, Normalize, Step};
use conformance::plugins::our_plugins;
use conformance::runner::{NetworkConfigList, RuntimeConf};
use conformance::{require_root, ContainerNs};
use serde_json::{json, Value};

fn ours() -> PathBuf {
    our_plugins(&["loopback"])
}

fn list(version: &str) -> NetworkConfigList {
    common::loopback_list(version)
}

#[test]
fn our_loopback_add_check_del() {
    let lab = Lab::with_plugins(&["loopback"]);
    let (c, rt) = (lab.container(), &lab.rt);
    let rc = RuntimeConf::new("lo-ours", c.path().to_str().unwrap(), "eth0");
    let l = list("1.0.0");

    let result = rt.add_list(&l, &rc).unwrap();
    assert!(c.link_is_up("lo").unwrap());
    assert_eq!(result["cniVersion"], "1.0.0");
    assert_eq!(result["interfaces"], json!([{"name": "lo", "mac": "00:00:00:00:00:00", "sandbox": rc.netns}]));
    let addrs: Vec<&str> = result["ips"].as_array().unwrap().iter().map(|i| i["address"].as_str().unwrap()).collect();
    assert!(addrs.contains(&"127.0.0.1/8"), "{result}");
    assert!(rt.cache_path("lo-test", &rc).exists());

    rt.check_list(&l, &rc).unwrap();
    rt.del_list(&l, &rc).unwrap();
    assert!(!c.link_is_up("lo").unwrap());
    assert!(!rt.cache_path("lo-test", &rc).exists());
    rt.del_list(&l, &rc).unwrap();
    rt.del_list(&l, &RuntimeConf::new("lo-ours", "", "eth0")).unwrap();
}

#[test]
fn our_loopback_check_fails_when_lo_down() {
    let lab = Lab::with_plugins(&["loopback"]);
    let (c, rt) = (lab.container(), &lab.rt);
    let rc = RuntimeConf::new("lo-down", c.path().to_str().unwrap(), "eth0");
    rt.add_list(&list("1.0.0"), &rc).unwrap();
    c.run_ok("ip", ["link", "set", "lo", "down"]).unwrap();
    let err = rt.check_list(&list("1.0.0"), &rc).unwrap_err();
    let p = err.plugin_failure().expect("plugin failure");
    assert!(p.error.is_some(), "no error object on stdout: {:?}", p.stdout);
    rt.del_list(&list("1.0.0"), &rc).unwrap();
}

#[test]
fn our_loopback_passes_prev_result_through() {
    let lab = Lab::with_plugins(&["loopback"]);
    let (c, rt) = (lab.container(), &lab.rt);
    let rc = RuntimeConf::new("lo-chain", c.path().to_str().unwrap(), "eth0");
    let prev = json!({"cniVersion": "1.0.0", "interfaces": [{"name": "eth0", "mac": "aa:bb:cc:dd:ee:ff", "sandbox": rc.netns}],
                      "ips": [{"address": "10.1.2.3/24", "interface": 0, "gateway": "10.1.2.1"}], "dns": {}});
    let mut cfg = json!({"cniVersion": "1.0.0", "name": "lo-test", "type": "loopback"});
    cfg["prevResult"] = prev.clone();
    let env = rc.env();
    let out = rt.exec_plugin("loopback", "ADD", cfg.to_string().as_bytes(), &refs(&env)).unwrap();
    assert!(out.success(), "{}", out.stdout_str());
    assert_eq!(out.json().unwrap(), prev);
    assert!(c.link_is_up("lo").unwrap());
}

/// The differential case: every step of the loopback lifecycle, `ip -j addr show lo` after each.
fn lifecycle_case(version: &str) -> Case {
    Case::new(
        &format!("loopback-{version}"),
        json!({"cniVersion": version, "name": "lo-diff", "plugins": [{"type": "loopback"}]}),
    )
    .snapshot(diff::ip_in_container(&["addr", "show", "lo"]))
    .steps([
        Step::add(),
        Step::check(),
        Step::del(),
        Step::del().label("repeated DEL"),
        Step::raw(
            "DEL",
            format!(r#"{{"cniVersion":"{version}","name":"lo-diff","type":"loopback"}}"#),
            &[("CNI_CONTAINERID", "{{cid}}"), ("CNI_NETNS", ""), ("CNI_IFNAME", "eth0")],
        )
        .label("DEL without netns"),
        Step::add().label("ADD again"),
        Step::in_container(&["ip", "link", "set", "lo", "down"]),
        Step::check().label("CHECK with lo down"),
        Step::del().label("final DEL"),
    ])
}

#[test]
fn differential_loopback() {
    require_root();
    ours();
    for version in ["0.4.0", "1.0.0"] {
        let report = diff::run(&lifecycle_case(version)).unwrap();
        // The reference (v1.1.1) prints 0.x results without `ips[].version`, which the 0.3.x/0.4.0
        // spec requires; we print it. Everything else must match.
        let norm = if version.starts_with("0.") { Normalize::new().drop_key("version") } else { Normalize::new() };
        report.assert_equivalent(&norm);
        // the harness saw what it should: ADD set lo up, CHECK with lo down failed on both sides
        let add = &report.reference.steps[0];
        assert!(add.outcome.is_ok());
        assert_eq!(add.snapshot[0]["operstate"], "UNKNOWN");
        assert!(!report.ours.steps[7].outcome.is_ok() && !report.reference.steps[7].outcome.is_ok());
    }
}

#[test]
fn differential_loopback_prev_result_and_old_versions() {
    require_root();
    ours();
    // chained: the second loopback must pass the first one's result through
    let chained = Case::new(
        "loopback-chained",
        json!({"cniVersion": "1.0.0", "name": "lo-chain", "plugins": [{"type": "loopback"}, {"type": "loopback"}]}),
    )
    .snapshot(diff::ip_in_container(&["addr", "show", "lo"]))
    .steps([Step::add(), Step::check(), Step::del()]);
    diff::run(&chained).unwrap().assert_equivalent(&Normalize::new());
    let old = |version: &str| {
        Case::new(
            &format!("loopback-{version}"),
            json!({"cniVersion": version, "name": "lo-old", "plugins": [{"type": "loopback"}]}),
        )
        .snapshot(diff::ip_in_container(&["addr", "show", "lo"]))
        .steps([Step::add(), Step::del()])
    };
    // 0.3.1: same result but for `ips[].version`, which the reference omits against the spec.
    diff::run(&old("0.3.1")).unwrap().assert_equivalent(&Normalize::new().drop_key("version"));
    // 0.2.0: the reference prints a 1.0.0-shaped result labelled 0.2.0; we print the 0.2.0 shape
    // (`ip4`/`ip6`). The kernel state after each step must still be the same.
    let report = diff::run(&old("0.2.0")).unwrap();
    for (ours, theirs) in report.ours.steps.iter().zip(&report.reference.steps) {
        assert_eq!(ours.outcome.is_ok(), theirs.outcome.is_ok(), "step {}", ours.label);
        assert_eq!(report.ours.normalize(&ours.snapshot, &Normalize::new()), report.reference.normalize(&theirs.snapshot, &Normalize::new()), "step {}", ours.label);
    }
    let add = report.ours.steps[0].outcome.value().expect("ADD result");
    assert_eq!(add["ip4"]["ip"], "127.0.0.1/8", "{add}");
    assert_eq!(add["ip6"]["ip"], "::1/128", "{add}");
    assert!(add.get("ips").is_none(), "{add}");
}

// ---- bad input against our plugin: a JSON error object on stdout, non-zero exit, nothing changed ----

struct Bad {
    lab: Lab,
    c: ContainerNs,
}

impl Bad {
    fn new() -> Bad {
        let lab = Lab::with_plugins(&["loopback"]);
        let c = lab.container();
        Bad { lab, c }
    }

    fn netns(&self) -> String {
        self.c.path().to_str().unwrap().to_string()
    }

    /// Run our loopback and check the failure; returns the error object.
    fn expect(&self, command: &str, config: &[u8], env: &[(&str, &str)], code: u32) -> Value {
        let out = self.lab.raw("loopback", command, config, env);
        let what = format!("{command} env={env:?}");
        let obj = expect_code(&out, code, &what);
        assert!(!self.c.link_is_up("lo").unwrap(), "container lo changed: {what}");
        obj
    }

    fn add_env(&self) -> Vec<(&'static str, String)> {
        vec![("CNI_CONTAINERID", "bad-input".into()), ("CNI_NETNS", self.netns()), ("CNI_IFNAME", "eth0".into())]
    }

    /// `add_env` minus `drop`, plus `set`.
    fn env_with(&self, drop: &[&str], set: &[(&'static str, &str)]) -> Vec<(&'static str, String)> {
        let mut env: Vec<(&'static str, String)> = self.add_env().into_iter().filter(|(k, _)| !drop.contains(k)).collect();
        for (k, v) in set {
            env.retain(|(e, _)| e != k);
            env.push((k, v.to_string()));
        }
        env
    }
}

const GOOD: &[u8] = br#"{"cniVersion":"1.0.0","name":"bad","type":"loopback"}"#;

#[test]
fn bad_config_bytes() {
    let b = Bad::new();
    let env = b.add_env();
    let env = refs(&env);
    b.expect("ADD", br#"{"cniVersion":"#, &env, 6);
    b.expect("ADD", b"\xff\xfe{\"cniVersion\":\"1.0.0\"}\x80", &env, 6);
    b.expect("ADD", b"", &env, 6);
    b.expect("ADD", br#"{"cniVersion":"1.0.0","type":"loopback"}"#, &env, 7);
    b.expect("ADD", br#"{"cniVersion":"1.0.0","name":"bad"}"#, &env, 7);
    b.expect("ADD", br#"{"cniVersion":"9.9.9","name":"bad","type":"loopback"}"#, &env, 1);
}

#[test]
fn bad_environment() {
    let b = Bad::new();
    for drop in ["CNI_CONTAINERID", "CNI_NETNS"] {
        b.expect("ADD", GOOD, &refs(&b.env_with(&[drop], &[])), 4);
    }
    b.expect("ADD", GOOD, &refs(&b.env_with(&[], &[("CNI_IFNAME", "a/b")])), 4);
    b.expect("ADD", GOOD, &refs(&b.env_with(&[], &[("CNI_IFNAME", "abcdefghijklmnop")])), 4);
    b.expect("FOO", GOOD, &refs(&b.add_env()), 4);
    b.expect("ADD", GOOD, &refs(&b.env_with(&[], &[("CNI_NETNS", "/run/netns/cnit-does-not-exist")])), 8);
}

#[test]
fn oversized_config() {
    let b = Bad::new();
    let pad = "x".repeat(1024 * 1024 + 16);
    let big = format!(r#"{{"cniVersion":"1.0.0","name":"bad","type":"loopback","pad":"{pad}"}}"#);
    let obj = b.expect("ADD", big.as_bytes(), &refs(&b.add_env()), 5);
    let text = format!("{} {}", obj["msg"], obj["details"]).to_lowercase();
    assert!(text.contains("limit") || text.contains("size"), "message should mention the size limit: {obj}");
}
