//! The cnitool CLI end to end, against the reference loopback, with plugins run inside a sandbox
//! host namespace (`CNI_EXEC_NETNS`).

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use conformance::{require_root, ContainerNs, Sandbox};
use serde_json::Value;
use sha2::{Digest, Sha512};

struct Cli {
    netconf: PathBuf,
    cache: PathBuf,
    host: PathBuf,
}

impl Cli {
    fn new(sb: &Sandbox) -> Cli {
        let netconf = sb.tempdir().join("net.d");
        std::fs::create_dir_all(&netconf).unwrap();
        std::fs::write(
            netconf.join("10-lo.conflist"),
            r#"{"cniVersion":"1.0.0","name":"lo-net","plugins":[{"type":"loopback"}]}"#,
        )
        .unwrap();
        std::fs::write(netconf.join("20-plain.conf"), r#"{"cniVersion":"0.4.0","name":"plain-lo","type":"loopback"}"#)
            .unwrap();
        std::fs::write(netconf.join("30-broken.conflist"), "{ not json").unwrap();
        Cli { netconf, cache: sb.tempdir().join("cache"), host: sb.host_path().to_path_buf() }
    }

    fn cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_cnitool"));
        c.args(args)
            .env("NETCONFPATH", &self.netconf)
            .env("CNI_PATH", conformance::REFERENCE_PLUGIN_DIR)
            .env("CNI_CACHE_DIR", &self.cache)
            .env("CNI_EXEC_NETNS", &self.host)
            .env_remove("CNI_IFNAME")
            .env_remove("CNI_ARGS")
            .env_remove("CAP_ARGS")
            .env_remove("CNI_VALID_ATTACHMENTS");
        c
    }

    fn run(&self, args: &[&str]) -> Output {
        self.cmd(args).output().unwrap()
    }
}

fn cid_for(netns: &Path) -> String {
    let d = Sha512::digest(netns.to_str().unwrap().as_bytes());
    format!("cnitool-{}", d.iter().take(10).map(|b| format!("{b:02x}")).collect::<String>())
}

fn ok(out: &Output) -> String {
    assert!(
        out.status.success(),
        "cnitool failed: {}\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn path_str(c: &ContainerNs) -> &str {
    c.path().to_str().unwrap()
}

#[test]
fn add_check_del_through_the_cli() {
    require_root();
    let sb = Sandbox::new().unwrap();
    let c = sb.container().unwrap();
    let cli = Cli::new(&sb);

    let out = ok(&cli.run(&["add", "lo-net", path_str(&c)]));
    let result: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(result["interfaces"][0]["name"], "lo");
    assert_eq!(result["interfaces"][0]["sandbox"], path_str(&c));
    assert!(c.link_is_up("lo").unwrap());
    let cache = cli.cache.join("results").join(format!("lo-net-{}-eth0", cid_for(c.path())));
    assert!(cache.exists(), "{} missing", cache.display());

    ok(&cli.run(&["check", "lo-net", path_str(&c)]));
    c.run_ok("ip", ["link", "set", "lo", "down"]).unwrap();
    let out = cli.run(&["check", "lo-net", path_str(&c)]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("loopback"), "{stderr}");

    ok(&cli.run(&["del", "lo-net", path_str(&c)]));
    assert!(!cache.exists());
    ok(&cli.run(&["del", "lo-net", path_str(&c)]));
}

#[test]
fn plain_conf_ifname_args_and_relative_netns() {
    require_root();
    let sb = Sandbox::new().unwrap();
    let c = sb.container().unwrap();
    let cli = Cli::new(&sb);
    // relative netns path: the container id hashes the absolute path
    let out = cli
        .cmd(&["add", "plain-lo", c.name()])
        .current_dir("/run/netns")
        .env("CNI_IFNAME", "net9")
        .env("CNI_ARGS", "IgnoreUnknown=1;FOO=bar")
        .env("CAP_ARGS", r#"{"portMappings":[]}"#)
        .output()
        .unwrap();
    let result: Value = serde_json::from_str(&ok(&out)).unwrap();
    assert_eq!(result["cniVersion"], "0.4.0");
    let cache = cli.cache.join("results").join(format!("plain-lo-{}-net9", cid_for(c.path())));
    let cached: Value = serde_json::from_slice(&std::fs::read(&cache).unwrap()).unwrap();
    assert_eq!(cached["cniArgs"], serde_json::json!([["IgnoreUnknown", "1"], ["FOO", "bar"]]));
    assert_eq!(cached["capabilityArgs"], serde_json::json!({"portMappings": []}));
    assert_eq!(cached["netns"], path_str(&c));
    ok(&cli.cmd(&["del", "plain-lo", path_str(&c)]).env("CNI_IFNAME", "net9").output().unwrap());
    assert!(!cache.exists());
}

#[test]
fn gc_and_status_through_the_cli() {
    require_root();
    let sb = Sandbox::new().unwrap();
    let (c1, c2) = (sb.container().unwrap(), sb.container().unwrap());
    let cli = Cli::new(&sb);
    ok(&cli.run(&["add", "lo-net", path_str(&c1)]));
    ok(&cli.run(&["add", "lo-net", path_str(&c2)]));
    let valid = format!(r#"[{{"containerID":"{}","ifname":"eth0"}}]"#, cid_for(c1.path()));
    ok(&cli.cmd(&["gc", "lo-net"]).env("CNI_VALID_ATTACHMENTS", valid).output().unwrap());
    assert!(c1.link_is_up("lo").unwrap());
    assert!(!c2.link_is_up("lo").unwrap(), "stale attachment not deleted");
    ok(&cli.run(&["gc", "lo-net"]));
    assert!(!c1.link_is_up("lo").unwrap());
    // 1.0.0 list: STATUS is not sent, success
    ok(&cli.run(&["status", "lo-net"]));
}

#[test]
fn cli_errors() {
    require_root();
    let sb = Sandbox::new().unwrap();
    let c = sb.container().unwrap();
    let cli = Cli::new(&sb);
    let usage = cli.run(&[]);
    assert!(!usage.status.success());
    assert!(String::from_utf8_lossy(&usage.stderr).contains("add"));
    assert!(!cli.run(&["add", "lo-net"]).status.success());
    assert!(!cli.run(&["frobnicate", "lo-net", path_str(&c)]).status.success());
    let missing = cli.run(&["add", "nope", path_str(&c)]);
    assert!(!missing.status.success());
    assert!(String::from_utf8_lossy(&missing.stderr).contains("no net configuration with name \"nope\""));
    let bad_cap = cli.cmd(&["add", "lo-net", path_str(&c)]).env("CAP_ARGS", "[").output().unwrap();
    assert!(!bad_cap.status.success());
    assert!(String::from_utf8_lossy(&bad_cap.stderr).contains("CAP_ARGS"));
    let bad_args = cli.cmd(&["add", "lo-net", path_str(&c)]).env("CNI_ARGS", "novalue").output().unwrap();
    assert!(!bad_args.status.success());
    // nothing was added by the failed calls
    assert!(!c.link_is_up("lo").unwrap());
}
