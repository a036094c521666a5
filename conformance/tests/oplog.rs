//! The operator log: one line per operation in the file named by `logFile` or `CNI_LOG_FILE`,
//! never on stdout.

mod common;

use common::lab::{refs, Lab};
use conformance::runner::RuntimeConf;
use serde_json::json;

#[test]
fn one_line_per_operation_and_stdout_untouched() {
    let lab = Lab::with_plugins(&["loopback"]);
    let (sb, c, rt) = (&lab.sb, lab.container(), &lab.rt);
    let log = sb.tempdir().join("ops.log");
    let rc = RuntimeConf::new("oplog-1", c.path().to_str().unwrap(), "eth0");
    let mut env = rc.env();
    env.push(("CNI_LOG_FILE", log.to_str().unwrap().to_string()));
    let env = refs(&env);

    let cfg = json!({"cniVersion": "1.1.0", "name": "oplog-net", "type": "loopback"}).to_string();
    let add = rt.exec_plugin("loopback", "ADD", cfg.as_bytes(), &env).unwrap();
    assert!(add.success(), "{}", add.stdout_str());
    // stdout is exactly the result
    let result: serde_json::Value = serde_json::from_slice(&add.stdout).unwrap();
    assert_eq!(result["interfaces"][0]["name"], "lo");

    // a failing operation, with the log named by the config field instead
    let log2 = sb.tempdir().join("ops2.log");
    let bad = json!({"cniVersion": "1.1.0", "name": "oplog-net", "type": "loopback", "logFile": log2.to_str().unwrap()});
    let env_no_ns: Vec<(&str, &str)> =
        env.iter().map(|(k, v)| if *k == "CNI_NETNS" { (*k, "/run/netns/does-not-exist") } else { (*k, *v) }).collect();
    let out = rt.exec_plugin("loopback", "ADD", bad.to_string().as_bytes(), &env_no_ns).unwrap();
    assert!(!out.success());
    assert_eq!(out.error_object().expect("error object").code, 8);

    let del = rt.exec_plugin("loopback", "DEL", cfg.as_bytes(), &env).unwrap();
    assert!(del.success() && del.stdout.is_empty(), "DEL printed {:?}", del.stdout_str());

    let text = std::fs::read_to_string(&log).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 2, "{text}");
    assert!(lines[0].contains(" loopback ADD net=\"oplog-net\" cid=\"oplog-1\" if=\"eth0\" ok "), "{}", lines[0]);
    assert!(lines[1].contains(" loopback DEL ") && lines[1].ends_with("ms"), "{}", lines[1]);
    let text2 = std::fs::read_to_string(&log2).unwrap();
    assert!(text2.contains("loopback ADD") && text2.contains("error code=8"), "{text2}");
}

/// bridge with our host-local: host-local runs in-process (its own build is in the directory) and
/// still logs its own line for each verb, as the process it stands in for would.
#[test]
fn delegated_host_local_logs_its_own_lines() {
    let lab = Lab::new();
    let log = lab.sb.tempdir().join("ops.log");
    let l = lab.list(
        "1.1.0",
        "oplog-br",
        json!({"bridge": "br-oplog", "ipam": lab.ipam4("10.10.34.0/24"), "logFile": log.to_str().unwrap()}),
    );
    let c = lab.container();
    let rc = lab.rc("oplog-br-0", &c);
    lab.add(&l, &rc);
    lab.del(&l, &rc);
    let text = std::fs::read_to_string(&log).unwrap();
    let verbs: Vec<&str> = text
        .lines()
        .filter_map(|line| ["host-local ADD", "bridge ADD", "host-local DEL", "bridge DEL"].into_iter().find(|v| line.contains(&format!(" {v} "))))
        .collect();
    assert_eq!(verbs, ["host-local ADD", "bridge ADD", "host-local DEL", "bridge DEL"], "{text}");
    assert!(text.lines().all(|l| l.contains("cid=\"oplog-br-0\"") && l.contains(" ok ")), "{text}");
}
