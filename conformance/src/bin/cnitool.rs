//! cnitool: add, check or remove network interfaces from a network namespace, like
//! containernetworking/cni's cnitool, on top of the conformance runner.
//!
//! ```text
//! cnitool add|check|del NET NETNS-PATH
//! cnitool gc|status NET [NETNS-PATH]
//! ```
//!
//! Environment: `NETCONFPATH` (default /etc/cni/net.d), `CNI_PATH` (default /opt/cni/bin),
//! `CAP_ARGS` (JSON object), `CNI_IFNAME` (default eth0), `CNI_ARGS` (`K=V;K=V`), `CNI_CACHE_DIR`
//! (default /var/lib/cni). Extras: `CNI_EXEC_NETNS` (run the plugins inside that netns), and for gc
//! `CNI_VALID_ATTACHMENTS` (JSON list of `{"containerID","ifname"}`; default none: everything cached
//! for NET is stale). The container id is `cnitool-` + the first 20 hex digits of the SHA-512 of the
//! absolute netns path, as cnitool makes it.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use conformance::runner::{Attachment, NetworkConfigList, Runtime, RuntimeConf};
use sha2::{Digest, Sha512};

const DEFAULT_NETCONFPATH: &str = "/etc/cni/net.d";
const DEFAULT_CNI_PATH: &str = "/opt/cni/bin";
const DEFAULT_CACHE_DIR: &str = "/var/lib/cni";

#[derive(Debug, thiserror::Error)]
enum CliError {
    #[error("{0}")]
    Usage(String),
    #[error("{0}")]
    Env(String),
    #[error(transparent)]
    Run(#[from] conformance::RunError),
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(CliError::Usage(exe)) => {
            usage(&exe);
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("{e}");
            ExitCode::FAILURE
        }
    }
}

fn usage(exe: &str) {
    eprintln!("{exe}: Add, check, remove or garbage-collect network interfaces from a network namespace");
    eprintln!("  {exe} add    <net> <netns>");
    eprintln!("  {exe} check  <net> <netns>");
    eprintln!("  {exe} del    <net> <netns>");
    eprintln!("  {exe} gc     <net> [<netns>]");
    eprintln!("  {exe} status <net> [<netns>]");
}

fn env_or(key: &str, default: &str) -> String {
    std::env::var(key).ok().filter(|v| !v.is_empty()).unwrap_or_else(|| default.to_string())
}

fn run(args: &[String]) -> Result<(), CliError> {
    let exe = args.first().map(|a| Path::new(a).file_name().map_or(a.clone(), |f| f.to_string_lossy().into_owned()));
    let usage_err = || CliError::Usage(exe.clone().unwrap_or_else(|| "cnitool".into()));
    let (cmd, net) = match (args.get(1), args.get(2)) {
        (Some(c), Some(n)) => (c.as_str(), n.as_str()),
        _ => return Err(usage_err()),
    };
    let needs_netns = matches!(cmd, "add" | "check" | "del");
    if !matches!(cmd, "add" | "check" | "del" | "gc" | "status") || (needs_netns && args.len() < 4) {
        return Err(usage_err());
    }

    let list = NetworkConfigList::load_from_dir(env_or("NETCONFPATH", DEFAULT_NETCONFPATH), net)?;
    let runtime = Runtime {
        plugin_dirs: std::env::split_paths(&env_or("CNI_PATH", DEFAULT_CNI_PATH)).collect(),
        cache_dir: PathBuf::from(env_or("CNI_CACHE_DIR", DEFAULT_CACHE_DIR)),
        exec_netns: std::env::var_os("CNI_EXEC_NETNS").filter(|v| !v.is_empty()).map(PathBuf::from),
    };

    match cmd {
        "gc" => {
            let valid: Vec<Attachment> = match std::env::var("CNI_VALID_ATTACHMENTS") {
                Ok(v) if !v.trim().is_empty() => serde_json::from_str(&v)
                    .map_err(|e| CliError::Env(format!("CNI_VALID_ATTACHMENTS: {e}")))?,
                _ => Vec::new(),
            };
            return Ok(runtime.gc_list(&list, &valid)?);
        }
        "status" => return Ok(runtime.status_list(&list)?),
        _ => {}
    }

    let rc = runtime_conf(&args[3])?;
    match cmd {
        "add" => {
            let result = runtime.add_list(&list, &rc)?;
            let text = serde_json::to_string_pretty(&result).map_err(|e| CliError::Env(e.to_string()))?;
            println!("{text}");
        }
        "check" => runtime.check_list(&list, &rc)?,
        _ => runtime.del_list(&list, &rc)?,
    }
    Ok(())
}

fn runtime_conf(netns_arg: &str) -> Result<RuntimeConf, CliError> {
    let netns = abs_clean(netns_arg)?;
    let mut rc = RuntimeConf::new(container_id(&netns), netns, std::env::var("CNI_IFNAME").unwrap_or_else(|_| "eth0".into()));
    if let Ok(a) = std::env::var("CNI_ARGS") {
        if !a.is_empty() {
            rc.args = parse_cni_args(&a)?;
        }
    }
    if let Ok(c) = std::env::var("CAP_ARGS") {
        if !c.is_empty() {
            rc.capability_args = serde_json::from_str(&c).map_err(|e| CliError::Env(format!("CAP_ARGS: {e}")))?;
        }
    }
    Ok(rc)
}

/// Go's `filepath.Abs`: join with the working directory, then clean lexically (`.`, `..`, `//`).
fn abs_clean(path: &str) -> Result<String, CliError> {
    let joined = if path.starts_with('/') {
        path.to_string()
    } else {
        let cwd = std::env::current_dir().map_err(|e| CliError::Env(format!("current directory: {e}")))?;
        format!("{}/{path}", cwd.display())
    };
    let mut parts: Vec<&str> = Vec::new();
    for part in joined.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            p => parts.push(p),
        }
    }
    Ok(format!("/{}", parts.join("/")))
}

/// `cnitool-` + hex of the first 10 bytes of SHA-512(netns path).
fn container_id(netns: &str) -> String {
    let digest = Sha512::digest(netns.as_bytes());
    let hex: String = digest.iter().take(10).map(|b| format!("{b:02x}")).collect();
    format!("cnitool-{hex}")
}

/// `K=V;K=V`; like cnitool, every pair needs a non-empty key and value.
fn parse_cni_args(s: &str) -> Result<Vec<(String, String)>, CliError> {
    s.split(';')
        .map(|pair| match pair.split('=').collect::<Vec<_>>()[..] {
            [k, v] if !k.is_empty() && !v.is_empty() => Ok((k.to_string(), v.to_string())),
            _ => Err(CliError::Env(format!("invalid CNI_ARGS pair {pair:?}"))),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn container_id_is_sha512_prefix() {
        // sha512("") starts with cf83e1357eefb8bdf154...
        assert_eq!(container_id(""), "cnitool-cf83e1357eefb8bdf154");
        assert_eq!(container_id("/run/netns/x").len(), "cnitool-".len() + 20);
    }

    #[test]
    fn abs_path_is_clean() {
        assert_eq!(abs_clean("/run//netns/./a/../b").unwrap(), "/run/netns/b");
        assert_eq!(abs_clean("/").unwrap(), "/");
        assert!(abs_clean("x").unwrap().ends_with("/x"));
    }

    #[test]
    fn cni_args() {
        assert_eq!(parse_cni_args("A=1;B=2").unwrap(), [("A".into(), "1".into()), ("B".into(), "2".into())]);
        assert!(parse_cni_args("A").is_err());
        assert!(parse_cni_args("A=").is_err());
        assert!(parse_cni_args("A=1=2").is_err());
    }
}
