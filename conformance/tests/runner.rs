//! The libcni-like runner against the reference loopback (/usr/lib/cni/loopback) and against fake
//! plugins that record what they were given.

mod common;

use common::{fake_plugins, loopback_list, ns_id, records, REF_DIR};
use conformance::runner::{Attachment, NetworkConfigList, RunError, RuntimeConf};
use conformance::{require_root, Sandbox};
use serde_json::{json, Value};

#[test]
fn reference_loopback_add_check_del() {
    require_root();
    let sb = Sandbox::new().unwrap();
    let c = sb.container().unwrap();
    let rt = sb.runtime(REF_DIR);
    let list = loopback_list("1.0.0");
    let rc = RuntimeConf::new("cid-1", c.path().to_str().unwrap(), "eth0");
    assert!(!c.link_is_up("lo").unwrap());

    let result = rt.add_list(&list, &rc).unwrap();
    assert_eq!(result["cniVersion"], "1.0.0");
    assert_eq!(result["interfaces"][0]["name"], "lo");
    assert_eq!(result["interfaces"][0]["sandbox"], c.path().to_str().unwrap());
    assert_eq!(result["ips"][0]["address"], "127.0.0.1/8");
    assert!(c.link_is_up("lo").unwrap());
    assert!(sb.host().link_is_up("lo").unwrap());

    // cache written
    let cache = rt.cache_path("lo-test", &rc);
    assert_eq!(cache, sb.tempdir().join("cni-cache/results/lo-test-cid-1-eth0"));
    let cached: Value = serde_json::from_slice(&std::fs::read(&cache).unwrap()).unwrap();
    assert_eq!(cached["kind"], "cniCacheV1");
    assert_eq!(cached["containerId"], "cid-1");
    assert_eq!(cached["ifName"], "eth0");
    assert_eq!(cached["networkName"], "lo-test");
    assert_eq!(cached["netns"], c.path().to_str().unwrap());
    assert_eq!(cached["result"], result);
    assert!(cached["config"].is_string());
    assert_eq!(rt.cached_result(&list, &rc).unwrap(), Some(result.clone()));

    rt.check_list(&list, &rc).unwrap();

    rt.del_list(&list, &rc).unwrap();
    assert!(!c.link_is_up("lo").unwrap());
    assert!(!cache.exists(), "cache not removed after DEL");
    // repeated DEL, and DEL without a netns, succeed
    rt.del_list(&list, &rc).unwrap();
    rt.del_list(&list, &RuntimeConf::new("cid-1", "", "eth0")).unwrap();
}

#[test]
fn reference_loopback_check_fails_when_lo_down() {
    require_root();
    let sb = Sandbox::new().unwrap();
    let c = sb.container().unwrap();
    let rt = sb.runtime(REF_DIR);
    let list = loopback_list("1.0.0");
    let rc = RuntimeConf::new("cid-2", c.path().to_str().unwrap(), "eth0");
    rt.add_list(&list, &rc).unwrap();
    c.run_ok("ip", ["link", "set", "lo", "down"]).unwrap();
    let err = rt.check_list(&list, &rc).unwrap_err();
    let failure = err.plugin_failure().expect("a plugin failure");
    assert_eq!(failure.plugin, "loopback");
    assert_eq!(failure.command, "CHECK");
    assert_eq!(failure.exit_code, Some(1));
    assert!(err.code().is_some());
    assert!(err.to_string().contains("loopback"), "{err}");
    rt.del_list(&list, &rc).unwrap();
}

#[test]
fn check_rules_by_version() {
    require_root();
    let sb = Sandbox::new().unwrap();
    let c = sb.container().unwrap();
    let rt = sb.runtime(REF_DIR);
    let rc = RuntimeConf::new("cid-3", c.path().to_str().unwrap(), "eth0");
    let old = loopback_list("0.3.1");
    rt.add_list(&old, &rc).unwrap();
    match rt.check_list(&old, &rc) {
        Err(RunError::Unsupported { version, command }) => assert_eq!((version.as_str(), command.as_str()), ("0.3.1", "CHECK")),
        other => panic!("expected Unsupported, got {other:?}"),
    }
    rt.del_list(&old, &rc).unwrap();
    // disableCheck: CHECK is not sent, so it succeeds even though lo is down.
    let no_check = NetworkConfigList::from_json(&json!({
        "cniVersion": "1.0.0", "name": "lo-test", "disableCheck": true, "plugins": [{"type": "loopback"}]}))
    .unwrap();
    rt.check_list(&no_check, &rc).unwrap();
}

#[test]
fn gc_removes_stale_cached_attachments() {
    require_root();
    let sb = Sandbox::new().unwrap();
    let (c1, c2) = (sb.container().unwrap(), sb.container().unwrap());
    let rt = sb.runtime(REF_DIR);
    let list = loopback_list("1.0.0");
    let rc1 = RuntimeConf::new("keep", c1.path().to_str().unwrap(), "eth0");
    let rc2 = RuntimeConf::new("stale", c2.path().to_str().unwrap(), "eth0");
    rt.add_list(&list, &rc1).unwrap();
    rt.add_list(&list, &rc2).unwrap();
    assert_eq!(rt.cached_attachments("lo-test").unwrap().len(), 2);

    rt.gc_list(&list, &[Attachment::new("keep", "eth0")]).unwrap();
    let left = rt.cached_attachments("lo-test").unwrap();
    assert_eq!(left.len(), 1);
    assert_eq!(left[0].container_id, "keep");
    assert!(!rt.cache_path("lo-test", &rc2).exists());
    // the stale attachment got a real DEL (with its cached netns): its lo is down again
    assert!(!c2.link_is_up("lo").unwrap());
    assert!(c1.link_is_up("lo").unwrap());

    // no valid attachments: everything goes
    rt.gc_list(&list, &[]).unwrap();
    assert!(rt.cached_attachments("lo-test").unwrap().is_empty());
    assert!(!c1.link_is_up("lo").unwrap());
}

#[test]
fn plugin_not_found_and_version() {
    require_root();
    let sb = Sandbox::new().unwrap();
    let c = sb.container().unwrap();
    let rt = sb.runtime(REF_DIR);
    let list = NetworkConfigList::from_json(&json!({
        "cniVersion": "1.0.0", "name": "n", "plugins": [{"type": "no-such-plugin"}]}))
    .unwrap();
    let err = rt.add_list(&list, &RuntimeConf::new("c", c.path().to_str().unwrap(), "eth0")).unwrap_err();
    assert!(matches!(err, RunError::PluginNotFound { .. }), "{err:?}");
    let v = rt.version("loopback").unwrap();
    assert!(v.supported_versions.iter().any(|s| s == "1.0.0"), "{v:?}");
    // invalid runtime conf is refused before any plugin runs
    let bad = rt.add_list(&loopback_list("1.0.0"), &RuntimeConf::new("c", c.path().to_str().unwrap(), "a/b"));
    assert!(matches!(bad, Err(RunError::RuntimeConf(_))), "{bad:?}");
}

#[test]
fn chaining_env_and_runtime_config() {
    require_root();
    let sb = Sandbox::new().unwrap();
    let c = sb.container().unwrap();
    let (dir, rec) = fake_plugins(&sb, &["first", "second"]);
    let mut rt = sb.runtime(&dir);
    rt.plugin_dirs.push("/nonexistent-extra".into());
    let list = NetworkConfigList::from_json(&json!({
        "cniVersion": "1.1.0", "name": "chain", "plugins": [
            {"type": "first", "capabilities": {"portMappings": true, "mac": false}, "custom": 1},
            {"type": "second"}]}))
    .unwrap();
    let mut rc = RuntimeConf::new("cid-chain", c.path().to_str().unwrap(), "net1");
    rc.args = vec![("IgnoreUnknown".into(), "1".into()), ("K8S_POD_NAME".into(), "p".into())];
    rc.capability_args.insert("portMappings".into(), json!([{"hostPort": 8080, "containerPort": 80, "protocol": "tcp"}]));
    rc.capability_args.insert("mac".into(), json!("c2:11:22:33:44:55"));

    let result = rt.add_list(&list, &rc).unwrap();
    assert_eq!(result["interfaces"][0]["name"], "second");
    rt.check_list(&list, &rc).unwrap();
    rt.del_list(&list, &rc).unwrap();

    let r = records(&rec);
    let seq: Vec<(&str, &str)> = r.iter().map(|x| (x.command.as_str(), x.plugin.as_str())).collect();
    assert_eq!(
        seq,
        [("ADD", "first"), ("ADD", "second"), ("CHECK", "first"), ("CHECK", "second"), ("DEL", "second"), ("DEL", "first")]
    );
    // ADD #1: no prevResult, runtimeConfig only for enabled capabilities, name/cniVersion injected
    let a1 = &r[0].stdin;
    assert!(a1.get("prevResult").is_none());
    assert_eq!(a1["name"], "chain");
    assert_eq!(a1["cniVersion"], "1.1.0");
    assert_eq!(a1["custom"], 1);
    assert_eq!(a1["runtimeConfig"], json!({"portMappings": [{"hostPort": 8080, "containerPort": 80, "protocol": "tcp"}]}));
    // ADD #2 gets #1's result; no runtimeConfig (no capabilities)
    assert_eq!(r[1].stdin["prevResult"]["interfaces"][0]["name"], "first");
    assert!(r[1].stdin.get("runtimeConfig").is_none());
    // CHECK and DEL get the final (cached) result
    for x in &r[2..] {
        assert_eq!(x.stdin["prevResult"], result, "{} {}", x.command, x.plugin);
    }
    // environment
    let e = &r[0];
    assert_eq!(e.env("CNI_COMMAND"), Some("ADD"));
    assert_eq!(e.env("CNI_CONTAINERID"), Some("cid-chain"));
    assert_eq!(e.env("CNI_NETNS"), c.path().to_str());
    assert_eq!(e.env("CNI_IFNAME"), Some("net1"));
    assert_eq!(e.env("CNI_ARGS"), Some("IgnoreUnknown=1;K8S_POD_NAME=p"));
    assert_eq!(e.env("CNI_PATH"), Some(format!("{}:/nonexistent-extra", dir.display()).as_str()));
    // plugins ran inside the sandbox host namespace
    assert_eq!(e.netns, ns_id(sb.host_path()));
    assert!(!rt.cache_path("chain", &rc).exists());
}

#[test]
fn failed_add_is_typed_and_not_rolled_back() {
    require_root();
    let sb = Sandbox::new().unwrap();
    let c = sb.container().unwrap();
    let (dir, rec) = fake_plugins(&sb, &["ok", "failing", "silent"]);
    let rt = sb.runtime(&dir);
    let rc = RuntimeConf::new("cid-f", c.path().to_str().unwrap(), "eth0");
    let list = NetworkConfigList::from_json(&json!({
        "cniVersion": "1.0.0", "name": "f", "plugins": [{"type": "ok"}, {"type": "failing"}, {"type": "ok"}]}))
    .unwrap();
    let err = rt.add_list(&list, &rc).unwrap_err();
    let p = err.plugin_failure().unwrap();
    assert_eq!((p.plugin.as_str(), p.command.as_str(), p.exit_code), ("failing", "ADD", Some(1)));
    let obj = p.error.as_ref().unwrap();
    assert_eq!((obj.code, obj.msg.as_str(), obj.details.as_str()), (11, "fake failure", "ADD"));
    assert_eq!(err.to_string(), "plugin type=\"failing\" failed (add): fake failure; ADD");
    // libcni runs no DEL by itself, and caches nothing
    let seq: Vec<String> = records(&rec).iter().map(|x| format!("{} {}", x.command, x.plugin)).collect();
    assert_eq!(seq, ["ADD ok", "ADD failing"]);
    assert!(!rt.cache_path("f", &rc).exists());

    // empty stdout: the message comes from stderr
    let list = NetworkConfigList::from_json(&json!({"cniVersion": "1.0.0", "name": "s", "plugins": [{"type": "silent"}]}))
        .unwrap();
    let err = rt.add_list(&list, &rc).unwrap_err();
    let p = err.plugin_failure().unwrap();
    assert!(p.error.is_none());
    assert!(p.stderr.contains("silent plugin broke"));
    assert!(err.to_string().contains("netplugin failed: \"silent plugin broke\\n\""), "{err}");
}

#[test]
fn del_stops_at_first_error_and_keeps_cache() {
    require_root();
    let sb = Sandbox::new().unwrap();
    let c = sb.container().unwrap();
    let (dir, rec) = fake_plugins(&sb, &["a", "b"]);
    let rt = sb.runtime(&dir);
    let rc = RuntimeConf::new("cid-d", c.path().to_str().unwrap(), "eth0");
    let good = NetworkConfigList::from_json(&json!({
        "cniVersion": "1.0.0", "name": "d", "plugins": [{"type": "a"}, {"type": "b"}]}))
    .unwrap();
    rt.add_list(&good, &rc).unwrap();
    fake_plugins(&sb, &["fail-del"]);
    let bad = NetworkConfigList::from_json(&json!({
        "cniVersion": "1.0.0", "name": "d", "plugins": [{"type": "a"}, {"type": "fail-del"}]}))
    .unwrap();
    assert!(rt.del_list(&bad, &rc).is_err());
    assert!(rt.cache_path("d", &rc).exists());
    let seq: Vec<String> = records(&rec).iter().map(|x| format!("{} {}", x.command, x.plugin)).collect();
    assert_eq!(seq, ["ADD a", "ADD b", "DEL fail-del"]);
    rt.del_list(&good, &rc).unwrap();
    assert!(!rt.cache_path("d", &rc).exists());
}

#[test]
fn gc_and_status_for_1_1_0() {
    require_root();
    let sb = Sandbox::new().unwrap();
    let c = sb.container().unwrap();
    let (dir, rec) = fake_plugins(&sb, &["p1", "p2"]);
    let rt = sb.runtime(&dir);
    let list = NetworkConfigList::from_json(&json!({
        "cniVersion": "1.1.0", "name": "g", "plugins": [{"type": "p1"}, {"type": "p2"}]}))
    .unwrap();
    let keep = RuntimeConf::new("keep", c.path().to_str().unwrap(), "eth0");
    let stale = RuntimeConf::new("stale", "", "eth1");
    rt.add_list(&list, &keep).unwrap();
    rt.add_list(&list, &stale).unwrap();
    let n_before = records(&rec).len();
    rt.gc_list(&list, &[Attachment::new("keep", "eth0")]).unwrap();
    rt.status_list(&list).unwrap();
    let r = records(&rec);
    let seq: Vec<String> = r[n_before..].iter().map(|x| format!("{} {}", x.command, x.plugin)).collect();
    assert_eq!(seq, ["DEL p2", "DEL p1", "GC p1", "GC p2", "STATUS p1", "STATUS p2"]);
    let del = &r[n_before];
    assert_eq!(del.env("CNI_CONTAINERID"), Some("stale"));
    assert_eq!(del.env("CNI_IFNAME"), Some("eth1"));
    let gc = &r[n_before + 2];
    let expected = json!([{"containerID": "keep", "ifname": "eth0"}]);
    assert_eq!(gc.stdin["cni.dev/valid-attachments"], expected);
    assert_eq!(gc.stdin["cni.dev/attachments"], expected);
    assert_eq!(gc.stdin["name"], "g");
    assert!(gc.stdin.get("prevResult").is_none());
    assert_eq!(gc.env("CNI_CONTAINERID"), Some(""));
    let status = &r[n_before + 4];
    assert_eq!(status.stdin, json!({"cniVersion": "1.1.0", "name": "g", "type": "p1"}));

    // < 1.1.0: neither GC nor STATUS is sent; disableGC: nothing at all
    let old = NetworkConfigList::from_json(&json!({"cniVersion": "1.0.0", "name": "g", "plugins": [{"type": "p1"}]}))
        .unwrap();
    let off = NetworkConfigList::from_json(&json!({
        "cniVersion": "1.1.0", "name": "g", "disableGC": true, "plugins": [{"type": "p1"}]}))
    .unwrap();
    let n = records(&rec).len();
    rt.status_list(&old).unwrap();
    rt.gc_list(&off, &[]).unwrap();
    assert_eq!(records(&rec).len(), n);
    assert!(rt.cache_path("g", &keep).exists());
    rt.gc_list(&old, &[]).unwrap();
    let seq: Vec<String> = records(&rec)[n..].iter().map(|x| format!("{} {}", x.command, x.plugin)).collect();
    assert_eq!(seq, ["DEL p1"]);
}

#[test]
fn gc_joins_errors() {
    require_root();
    let sb = Sandbox::new().unwrap();
    let (dir, _rec) = fake_plugins(&sb, &["fail-gc"]);
    let rt = sb.runtime(&dir);
    let list = NetworkConfigList::from_json(&json!({
        "cniVersion": "1.1.0", "name": "j", "plugins": [{"type": "fail-gc"}]}))
    .unwrap();
    // Fake a cached attachment so GC has a stale one whose DEL fails too.
    std::fs::create_dir_all(rt.cache_dir.join("results")).unwrap();
    std::fs::write(
        rt.cache_dir.join("results/j-old-eth0"),
        r#"{"kind":"cniCacheV1","containerId":"old","config":null,"ifName":"eth0","networkName":"j","result":{}}"#,
    )
    .unwrap();
    let err = rt.gc_list(&list, &[]).unwrap_err();
    let all = err.into_vec();
    assert_eq!(all.len(), 2, "{all:?}");
    assert!(matches!(&all[0], RunError::StaleAttachment { container_id, .. } if container_id == "old"));
    assert_eq!(all[1].code(), Some(11));
}
