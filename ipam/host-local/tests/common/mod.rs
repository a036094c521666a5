//! Helpers for the integration tests: run the built binary (or the reference) with an environment
//! and stdin, a throwaway data directory removed on drop, snapshots of the files on disk.
#![allow(dead_code)]

use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};

pub const OURS: &str = env!("CARGO_BIN_EXE_host-local");
pub const REFERENCE: &str = "/usr/lib/cni/host-local";

/// Differential tests need the reference binary: without it they fail, saying how to install it.
pub fn require_reference() {
    assert!(
        Path::new(REFERENCE).exists(),
        "reference plugin {REFERENCE} not installed: apt-get install containernetworking-plugins (scripts/deps.sh does)"
    );
}

/// A unique temporary directory, removed when dropped (also when the test panics).
pub struct Sandbox {
    pub root: PathBuf,
}

impl Sandbox {
    pub fn new(tag: &str) -> Sandbox {
        static N: AtomicU32 = AtomicU32::new(0);
        let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().subsec_nanos();
        let root = std::env::temp_dir().join(format!(
            "host-local-test-{tag}-{}-{}-{nanos}",
            std::process::id(),
            N.fetch_add(1, Ordering::SeqCst)
        ));
        std::fs::create_dir_all(&root).unwrap();
        Sandbox { root }
    }

    /// The dataDir to put in configs.
    pub fn data_dir(&self) -> PathBuf {
        self.root.join("data")
    }

    /// `<dataDir>/<net>`
    pub fn net_dir(&self, net: &str) -> PathBuf {
        self.data_dir().join(net)
    }
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.root);
    }
}

/// What a run produced.
#[derive(Debug)]
pub struct Out {
    pub ok: bool,
    pub stdout: String,
    pub stderr: String,
}

impl Out {
    pub fn json(&self) -> Value {
        serde_json::from_str(self.stdout.trim()).unwrap_or_else(|e| panic!("stdout is not JSON ({e}): {:?}\nstderr: {}", self.stdout, self.stderr))
    }

    /// The error code (panics on success).
    pub fn code(&self) -> u64 {
        assert!(!self.ok, "expected a failure, got success: {}", self.stdout);
        self.json()["code"].as_u64().unwrap()
    }

    pub fn details(&self) -> String {
        let v = self.json();
        format!("{} {}", v["msg"].as_str().unwrap_or(""), v["details"].as_str().unwrap_or(""))
    }

    /// Result addresses (`ips[].address`).
    pub fn ips(&self) -> Vec<String> {
        assert!(self.ok, "expected success, got: {} {}", self.stdout, self.stderr);
        self.json()["ips"].as_array().map(|a| a.iter().map(|i| i["address"].as_str().unwrap().to_string()).collect()).unwrap_or_default()
    }

    pub fn assert_ok(&self) -> &Self {
        assert!(self.ok, "expected success, got stdout {:?} stderr {:?}", self.stdout, self.stderr);
        self
    }

    /// Full scans reported with HOST_LOCAL_DEBUG.
    pub fn scans(&self) -> u32 {
        self.stderr
            .lines()
            .find_map(|l| l.strip_prefix("host-local: full scans: "))
            .map(|n| n.trim().parse().unwrap())
            .unwrap_or_else(|| panic!("no scan count in stderr {:?}", self.stderr))
    }
}

/// One invocation.
pub struct Call<'a> {
    pub bin: &'a str,
    pub command: &'a str,
    pub cid: &'a str,
    pub ifname: &'a str,
    pub conf: &'a Value,
    pub cni_args: Option<&'a str>,
    pub stdin_override: Option<&'a [u8]>,
    pub env: Vec<(&'a str, &'a str)>,
}

impl<'a> Call<'a> {
    pub fn new(bin: &'a str, command: &'a str, cid: &'a str, conf: &'a Value) -> Call<'a> {
        Call { bin, command, cid, ifname: "eth0", conf, cni_args: None, stdin_override: None, env: vec![] }
    }

    pub fn ifname(mut self, i: &'a str) -> Self {
        self.ifname = i;
        self
    }

    pub fn args(mut self, a: &'a str) -> Self {
        self.cni_args = Some(a);
        self
    }

    pub fn stdin(mut self, s: &'a [u8]) -> Self {
        self.stdin_override = Some(s);
        self
    }

    pub fn env(mut self, k: &'a str, v: &'a str) -> Self {
        self.env.push((k, v));
        self
    }

    pub fn run(self) -> Out {
        let mut cmd = Command::new(self.bin);
        cmd.env_clear()
            .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
            .env("CNI_COMMAND", self.command)
            .env("CNI_PATH", "/usr/lib/cni")
            .env("HOST_LOCAL_DEBUG", "1");
        if matches!(self.command, "ADD" | "DEL" | "CHECK") {
            cmd.env("CNI_CONTAINERID", self.cid)
                .env("CNI_IFNAME", self.ifname)
                // host-local only touches files; the plugin's own netns stands in for the container's.
                .env("CNI_NETNS", "/proc/self/ns/net")
                .env("CNI_NETNS_OVERRIDE", "1");
        }
        if let Some(a) = self.cni_args {
            cmd.env("CNI_ARGS", a);
        }
        for (k, v) in &self.env {
            cmd.env(k, v);
        }
        cmd.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped());
        let mut child = cmd.spawn().unwrap_or_else(|e| panic!("spawn {}: {e}", self.bin));
        let input = match self.stdin_override {
            Some(s) => s.to_vec(),
            None => serde_json::to_vec(self.conf).unwrap(),
        };
        child.stdin.take().unwrap().write_all(&input).unwrap();
        let out = child.wait_with_output().unwrap();
        Out {
            ok: out.status.success(),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }
}

pub fn add(bin: &str, cid: &str, conf: &Value) -> Out {
    Call::new(bin, "ADD", cid, conf).run()
}
pub fn del(bin: &str, cid: &str, conf: &Value) -> Out {
    Call::new(bin, "DEL", cid, conf).run()
}
pub fn check(bin: &str, cid: &str, conf: &Value) -> Out {
    Call::new(bin, "CHECK", cid, conf).run()
}

/// A config for network `net` with `ipam` fields merged in.
pub fn conf(version: &str, net: &str, data_dir: &Path, ipam: Value) -> Value {
    let mut i = json!({"type": "host-local", "dataDir": data_dir});
    for (k, v) in ipam.as_object().unwrap() {
        i[k] = v.clone();
    }
    json!({"cniVersion": version, "name": net, "type": "host-local", "ipam": i})
}

/// One file in the network directory: content and permission bits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileState {
    pub content: String,
    pub mode: u32,
}

/// Every regular file directly in `dir` except `lock` and our index directory.
pub fn snapshot(dir: &Path) -> BTreeMap<String, FileState> {
    let mut out = BTreeMap::new();
    let Ok(rd) = std::fs::read_dir(dir) else { return out };
    for e in rd.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let meta = std::fs::symlink_metadata(e.path()).unwrap();
        if name == "lock" || !meta.is_file() {
            continue;
        }
        let content = std::fs::read_to_string(e.path()).unwrap_or_default();
        out.insert(name, FileState { content, mode: meta.permissions().mode() & 0o777 });
    }
    out
}

/// Names of lease files (those parsing as addresses) in `dir` with their content.
pub fn leases(dir: &Path) -> BTreeMap<String, String> {
    snapshot(dir)
        .into_iter()
        .filter(|(n, _)| n.parse::<std::net::IpAddr>().is_ok())
        .map(|(n, f)| (n, f.content))
        .collect()
}

/// Write a lease file the way another writer (the reference, an old version) would.
pub fn write_lease(dir: &Path, ip: &str, content: &str) {
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(dir.join(ip), content).unwrap();
}
