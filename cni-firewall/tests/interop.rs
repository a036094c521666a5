//! Interop with the reference plugins (v1.1.1 in /usr/lib/cni, iptables only): rules the reference
//! made are torn down by this crate, and the reverse. Each test runs the reference binaries from a
//! thread inside a throwaway network namespace (with a second named one as CNI_NETNS). Requires root.

mod common;

use cni_firewall::{Family, PortMapSpec, PortMapping, Protocol};
use common::*;
use serde_json::{json, Value};
use std::io::Write;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};

const REF: &str = "/usr/lib/cni";
static DIRS: AtomicUsize = AtomicUsize::new(0);

fn require_reference() {
    for p in ["bridge", "host-local", "portmap"] {
        assert!(
            std::path::Path::new(REF).join(p).exists(),
            "reference plugin {REF}/{p} missing: apt-get install containernetworking-plugins"
        );
    }
}

struct TempDir(std::path::PathBuf);
impl TempDir {
    fn new() -> TempDir {
        let p = std::env::temp_dir().join(format!("cnifw-test-{}-{}", std::process::id(), DIRS.fetch_add(1, Ordering::SeqCst)));
        std::fs::create_dir_all(&p).unwrap();
        TempDir(p)
    }
}
impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Exec a reference plugin (from the calling thread, i.e. in its netns).
fn run_ref(plugin: &str, cmd: &str, cid: &str, netns: &str, conf: &Value) -> Value {
    let mut child = Command::new(format!("{REF}/{plugin}"))
        .env_clear()
        .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
        .env("CNI_COMMAND", cmd)
        .env("CNI_CONTAINERID", cid)
        .env("CNI_NETNS", netns)
        .env("CNI_IFNAME", "eth0")
        .env("CNI_PATH", REF)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(conf.to_string().as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "reference {plugin} {cmd} failed: {stdout} {}", String::from_utf8_lossy(&out.stderr));
    if stdout.trim().is_empty() {
        Value::Null
    } else {
        serde_json::from_str(&stdout).unwrap()
    }
}

fn bridge_conf(net: &str, data_dir: &str) -> Value {
    json!({
        "cniVersion": "1.0.0", "name": net, "type": "bridge", "bridge": "cnifw0",
        "isGateway": true, "ipMasq": true,
        "ipam": {"type": "host-local", "dataDir": data_dir,
                 "ranges": [[{"subnet": "10.77.0.0/24"}], [{"subnet": "fd77::/64"}]]}
    })
}

fn addrs_of(result: &Value) -> Vec<cni_firewall::IpNetwork> {
    result["ips"].as_array().unwrap().iter().map(|i| i["address"].as_str().unwrap().parse().unwrap()).collect()
}

fn cni_rules(fam: Family) -> Vec<String> {
    ipt_rules(Flavor::IptHost, fam, "nat").into_iter().filter(|l| l.contains("CNI-")).collect()
}

#[test]
fn reference_bridge_masquerade_is_removed_by_our_del() {
    require_root();
    require_reference();
    in_sandbox(|| {
        let ctr = NamedNs::new();
        let dir = TempDir::new();
        let conf = bridge_conf("refnet", dir.0.to_str().unwrap());
        let res = run_ref("bridge", "ADD", "refctr1", &ctr.path(), &conf);
        let addrs = addrs_of(&res);
        assert_eq!(addrs.len(), 2, "{res}");
        for fam in Family::BOTH {
            assert_eq!(cni_rules(fam).len(), 3, "reference made 3 rules for {fam:?}");
        }
        let (fw, runner) = make(Flavor::IptHost);
        let spec = cni_firewall::MasqSpec { key: key("refnet", "refctr1"), addrs: addrs.clone() };
        // our CHECK recognises the reference's rules as exactly ours
        fw.check_masquerade(&spec).unwrap();
        // our DEL removes them, one restore per family
        let n = count(&runner, || fw.del_masquerade(&spec.key, &addrs).unwrap());
        assert_eq!(n, 2);
        for fam in Family::BOTH {
            assert!(cni_rules(fam).is_empty(), "{fam:?}: {:?}", cni_rules(fam));
            assert!(ipt_user_chains(Flavor::IptHost, fam, "nat").is_empty());
        }

        // second container, removed by key only (no prevResult)
        let res = run_ref("bridge", "ADD", "refctr2", &NamedNs::new().path(), &conf);
        assert_eq!(addrs_of(&res).len(), 2);
        fw.del_masquerade(&key("refnet", "refctr2"), &[]).unwrap();
        for fam in Family::BOTH {
            assert!(cni_rules(fam).is_empty(), "{fam:?}");
        }
    });
}

#[test]
fn our_masquerade_is_removed_by_reference_del() {
    require_root();
    require_reference();
    in_sandbox(|| {
        let ctr = NamedNs::new();
        let dir = TempDir::new();
        let conf = bridge_conf("refnet", dir.0.to_str().unwrap());
        let res = run_ref("bridge", "ADD", "refctr1", &ctr.path(), &conf);
        let addrs = addrs_of(&res);
        let (fw, _) = make(Flavor::IptHost);
        let spec = cni_firewall::MasqSpec { key: key("refnet", "refctr1"), addrs };
        // replace the reference's rules by ours
        fw.del_masquerade(&spec.key, &[]).unwrap();
        for fam in Family::BOTH {
            assert!(cni_rules(fam).is_empty());
        }
        fw.add_masquerade(&spec).unwrap();
        for fam in Family::BOTH {
            assert_eq!(cni_rules(fam).len(), 3);
        }
        // the reference DEL (which deletes by exact rule spec) removes ours
        run_ref("bridge", "DEL", "refctr1", &ctr.path(), &conf);
        for fam in Family::BOTH {
            assert!(cni_rules(fam).is_empty(), "{fam:?}: {:?}", cni_rules(fam));
            assert!(ipt_user_chains(Flavor::IptHost, fam, "nat").is_empty());
        }
    });
}

fn portmap_conf(net: &str) -> Value {
    json!({
        "cniVersion": "1.0.0", "name": net, "type": "portmap", "snat": true,
        "capabilities": {"portMappings": true},
        "runtimeConfig": {"portMappings": [
            {"hostPort": 8080, "containerPort": 80, "protocol": "tcp"},
            {"hostPort": 8443, "containerPort": 443, "protocol": "tcp", "hostIP": "192.0.2.1"},
            {"hostPort": 5353, "containerPort": 53, "protocol": "udp"}
        ]},
        "prevResult": {"cniVersion": "1.0.0",
            "interfaces": [{"name": "cnifw0"}, {"name": "veth1"}, {"name": "eth0", "sandbox": "/x"}],
            "ips": [{"interface": 2, "address": "10.77.0.2/24", "gateway": "10.77.0.1"},
                    {"interface": 2, "address": "fd77::2/64", "gateway": "fd77::1"}]}
    })
}

fn pm_spec(net: &str, cid: &str) -> PortMapSpec {
    let mut s = PortMapSpec::new(
        key(net, cid),
        vec![
            PortMapping { host_port: 8080, container_port: 80, protocol: Protocol::Tcp, host_ip: None },
            PortMapping { host_port: 8443, container_port: 443, protocol: Protocol::Tcp, host_ip: Some("192.0.2.1".parse().unwrap()) },
            PortMapping { host_port: 5353, container_port: 53, protocol: Protocol::Udp, host_ip: None },
        ],
    );
    s.container_v4 = Some("10.77.0.2/24".parse().unwrap());
    s.container_v6 = Some("fd77::2/64".parse().unwrap());
    s
}

fn dn_rules(fam: Family) -> Vec<String> {
    ipt_rules(Flavor::IptHost, fam, "nat").into_iter().filter(|l| l.contains("CNI-DN-")).collect()
}

#[test]
fn reference_portmap_interop_both_ways() {
    require_root();
    require_reference();
    in_sandbox(|| {
        let ctr = NamedNs::new();
        let conf = portmap_conf("refnet");
        run_ref("portmap", "ADD", "pm1", &ctr.path(), &conf);
        let shared: Vec<Vec<String>> = Family::BOTH
            .iter()
            .map(|f| ipt_rules(Flavor::IptHost, *f, "nat").into_iter().filter(|l| !l.contains("CNI-DN-")).collect())
            .collect();
        assert!(!dn_rules(Family::V4).is_empty());
        let (fw, _) = make(Flavor::IptHost);
        let spec = pm_spec("refnet", "pm1");
        fw.check_portmap(&spec).unwrap();
        fw.del_portmap(&spec.key).unwrap();
        for (i, fam) in Family::BOTH.iter().enumerate() {
            assert!(dn_rules(*fam).is_empty(), "{fam:?}");
            // the shared chains and their rules stay, exactly
            assert_eq!(ipt_rules(Flavor::IptHost, *fam, "nat"), shared[i]);
        }
        // ours, torn down by the reference
        fw.add_portmap(&spec).unwrap();
        fw.check_portmap(&spec).unwrap();
        assert!(!dn_rules(Family::V6).is_empty());
        run_ref("portmap", "DEL", "pm1", &ctr.path(), &conf);
        for (i, fam) in Family::BOTH.iter().enumerate() {
            assert!(dn_rules(*fam).is_empty(), "{fam:?}: {:?}", dn_rules(*fam));
            assert_eq!(ipt_rules(Flavor::IptHost, *fam, "nat"), shared[i]);
        }
        // and ours, written on a clean table, is what the reference writes
        let mut fresh = Vec::new();
        for fam in Family::BOTH {
            sh(&Flavor::IptHost.cmd_bin(fam), &["-w", "-t", "nat", "-F"]);
            sh(&Flavor::IptHost.cmd_bin(fam), &["-w", "-t", "nat", "-X"]);
        }
        fw.add_portmap(&spec).unwrap();
        for fam in Family::BOTH {
            let mut r = ipt_rules(Flavor::IptHost, fam, "nat");
            r.sort();
            fresh.push(r);
        }
        fw.del_portmap(&spec.key).unwrap();
        for fam in Family::BOTH {
            sh(&Flavor::IptHost.cmd_bin(fam), &["-w", "-t", "nat", "-F"]);
            sh(&Flavor::IptHost.cmd_bin(fam), &["-w", "-t", "nat", "-X"]);
        }
        run_ref("portmap", "ADD", "pm1", &ctr.path(), &conf);
        for (i, fam) in Family::BOTH.iter().enumerate() {
            let mut r = ipt_rules(Flavor::IptHost, *fam, "nat");
            r.sort();
            assert_eq!(r, fresh[i], "{fam:?}: our layout differs from the reference's");
        }
    });
}
