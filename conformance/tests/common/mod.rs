//! Helpers shared by the integration tests.
#![allow(dead_code)]

pub mod lab;
pub mod net;

/// Tests run once per firewall backend: for each `name`, `<name>::iptables` and `<name>::nftables`
/// call `name("iptables")` / `name("nftables")`.
#[macro_export]
macro_rules! both_backends {
    ($($name:ident),* $(,)?) => {$(
        mod $name {
            #[test]
            fn iptables() {
                super::$name("iptables")
            }
            #[test]
            fn nftables() {
                super::$name("nftables")
            }
        }
    )*};
}

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use conformance::{NetworkConfigList, Sandbox};
use serde_json::{json, Value};

pub const REF_DIR: &str = conformance::REFERENCE_PLUGIN_DIR;

/// A one-plugin loopback conflist.
pub fn loopback_list(version: &str) -> NetworkConfigList {
    NetworkConfigList::from_json(&json!({
        "cniVersion": version, "name": "lo-test", "plugins": [{"type": "loopback"}]
    }))
    .unwrap()
}

/// Write fake plugins (shell scripts) named `names` into `<sandbox tmp>/fake-plugins`; each records
/// every invocation under `<sandbox tmp>/records` as `NNN-COMMAND-TYPE.{stdin,env,ns}`.
///
/// Behaviour by name: `fail*` exits 1 with error object code 11 (details = the command); `silent*`
/// exits 1 with empty stdout and a message on stderr; anything else succeeds, printing on ADD
/// `{"cniVersion":"1.1.0","interfaces":[{"name":"<type>"}],"dns":{}}`.
pub fn fake_plugins(sb: &Sandbox, names: &[&str]) -> (PathBuf, PathBuf) {
    let dir = sb.tempdir().join("fake-plugins");
    let rec = sb.tempdir().join("records");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::create_dir_all(&rec).unwrap();
    let script = format!(
        r#"#!/bin/sh
rec={rec}
t=$(basename "$0")
n=$(ls "$rec" | grep -c '\.stdin$')
f="$rec/$(printf %03d "$n")-$CNI_COMMAND-$t"
cat > "$f.stdin"
env | grep '^CNI_' | sort > "$f.env"
readlink /proc/self/ns/net > "$f.ns"
case "$t" in
  fail*) echo '{{"code":11,"msg":"fake failure","details":"'"$CNI_COMMAND"'"}}'; exit 1;;
  silent*) echo "silent plugin broke" >&2; exit 1;;
esac
if [ "$CNI_COMMAND" = ADD ]; then
  echo '{{"cniVersion":"1.1.0","interfaces":[{{"name":"'"$t"'"}}],"dns":{{}}}}'
fi
exit 0
"#,
        rec = rec.display()
    );
    for name in names {
        let p = dir.join(name);
        std::fs::write(&p, &script).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    (dir, rec)
}

/// One recorded fake-plugin invocation.
#[derive(Debug)]
pub struct Record {
    pub command: String,
    pub plugin: String,
    pub stdin: Value,
    pub env: Vec<(String, String)>,
    pub netns: String,
}

impl Record {
    pub fn env(&self, key: &str) -> Option<&str> {
        self.env.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
    }
}

/// All recorded invocations, in order.
pub fn records(rec: &Path) -> Vec<Record> {
    let mut names: Vec<String> = std::fs::read_dir(rec)
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_str().and_then(|n| n.strip_suffix(".stdin")).map(String::from))
        .collect();
    names.sort();
    names
        .into_iter()
        .map(|base| {
            let mut parts = base.splitn(3, '-');
            let _seq = parts.next();
            let command = parts.next().unwrap_or_default().to_string();
            let plugin = parts.next().unwrap_or_default().to_string();
            let read = |ext: &str| std::fs::read_to_string(rec.join(format!("{base}.{ext}"))).unwrap();
            let stdin = serde_json::from_str(&read("stdin")).unwrap_or(Value::Null);
            let env = read("env")
                .lines()
                .filter_map(|l| l.split_once('=').map(|(k, v)| (k.to_string(), v.to_string())))
                .collect();
            Record { command, plugin, stdin, env, netns: read("ns").trim().to_string() }
        })
        .collect()
}

/// `net:[inode]` of a namespace file, as `readlink /proc/self/ns/net` prints it.
pub fn ns_id(path: &Path) -> String {
    use std::os::unix::fs::MetadataExt;
    format!("net:[{}]", std::fs::metadata(path).unwrap().ino())
}
