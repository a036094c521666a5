//! Delegation: run another plugin (IPAM) found in `CNI_PATH` with the same environment and the full
//! config on stdin, pass its stderr through, and read its result or error object.
//!
//! A plugin may link the code of a plugin it delegates to and register it as a [`Builtin`]. When
//! the file found in `CNI_PATH` is that same build (its identity note, [`crate::elfnote`], says
//! so), the delegated call runs on a thread of the caller, through the same entry point
//! ([`skel::serve`]) with the same environment and stdin, instead of an exec: the same code
//! with the same input, without a process's start and exit. Any other file is executed.

use crate::elfnote;
use crate::error::{CniError, ErrorObject};
use crate::result::CniResult;
use crate::skel::{self, Command, Plugin, Request, Served};
use serde_json::Value;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::OnceLock;

/// A plugin linked into the calling executable, run in place of an exec of `name` when the
/// executable found in `CNI_PATH` carries the identity note `identity`.
pub struct Builtin {
    /// The plugin's file name in `CNI_PATH`, e.g. `host-local`.
    pub name: &'static str,
    /// The build identity its executable carries (see [`crate::identity_note!`]).
    pub identity: &'static str,
    pub plugin: &'static (dyn Plugin + Sync),
}

static BUILTINS: OnceLock<&'static [Builtin]> = OnceLock::new();

/// Register the plugins this executable links (once, from `main`, before [`skel::run`]).
pub fn set_builtins(builtins: &'static [Builtin]) {
    let _ = BUILTINS.set(builtins);
}

/// The registered builtin that `binary` (found in `CNI_PATH` for `plugin`) is a build of. A file
/// that cannot be read or has no execute bit is left to the exec, which reports it.
fn builtin_for(plugin: &str, binary: &Path) -> Option<&'static Builtin> {
    use std::os::unix::fs::PermissionsExt;
    let b = BUILTINS.get()?.iter().find(|b| b.name == plugin)?;
    if std::fs::metadata(binary).ok()?.permissions().mode() & 0o111 == 0 {
        return None;
    }
    let ids = elfnote::read_identities(binary).ok()?;
    ids.iter().any(|id| id == b.identity.as_bytes()).then_some(b)
}

/// How often an exec that fails with ETXTBSY (binary being replaced) is retried.
const TXTBSY_RETRIES: usize = 5;

/// Find `plugin` in the directories of `CNI_PATH`.
pub fn find_in_path(plugin: &str, path: &[PathBuf]) -> Result<PathBuf, CniError> {
    if plugin.is_empty() || plugin.contains('/') || plugin == "." || plugin == ".." {
        return Err(CniError::config(format!("plugin type {plugin:?} is not a valid plugin name")));
    }
    if path.is_empty() {
        return Err(CniError::invalid_env("CNI_PATH", format!("is empty; cannot find plugin {plugin:?}")));
    }
    path.iter()
        .map(|dir| dir.join(plugin))
        .find(|p| p.is_file())
        .ok_or_else(|| {
            let dirs: Vec<String> = path.iter().map(|p| p.display().to_string()).collect();
            CniError::config(format!("failed to find plugin {plugin:?} in CNI_PATH [{}]", dirs.join(":")))
        })
}

/// A delegated plugin that has been started and given its stdin; [`Running::finish`] waits for it.
pub struct Running {
    process: Process,
    plugin: String,
    command: Command,
}

enum Process {
    Child(std::process::Child),
    /// A [`Builtin`] serving the call on a thread of this process.
    Thread(std::thread::JoinHandle<Served>),
    /// A [`Builtin`] that has served the call on the calling thread.
    Served(Served),
}

/// Start `binary` with `command`, the caller's environment and `stdin` (written and closed before
/// returning; a config larger than the pipe waits until the plugin reads it), or its builtin.
fn spawn(binary: &Path, plugin: &str, command: Command, stdin: &[u8]) -> Result<Running, CniError> {
    let process = match builtin_for(plugin, binary) {
        Some(b) => Process::Thread(spawn_builtin(b, command, stdin)?),
        None => Process::Child(spawn_child(binary, plugin, command, stdin)?),
    };
    Ok(Running { process, plugin: plugin.into(), command })
}

/// Serve the call with `b` on a new thread, with this process's environment but `CNI_COMMAND`,
/// as the exec would have it.
fn spawn_builtin(b: &'static Builtin, command: Command, stdin: &[u8]) -> Result<std::thread::JoinHandle<Served>, CniError> {
    let stdin = stdin.to_vec();
    std::thread::Builder::new()
        .name(b.name.into())
        .spawn(move || serve_builtin(b, command, stdin))
        .map_err(|e| CniError::Delegate { plugin: b.name.into(), reason: format!("start a thread for {}: {e}", b.name) })
}

/// Serve the call with `b` on the calling thread, with this process's environment but
/// `CNI_COMMAND`, as the exec would have it. A delegation is made from a verb of this process,
/// whose request, with the same `CNI_NETNS`, was checked against the process's own namespace.
fn serve_builtin(b: &'static Builtin, command: Command, stdin: Vec<u8>) -> Served {
    let env = |k: &str| if k == "CNI_COMMAND" { Some(command.as_str().to_string()) } else { std::env::var(k).ok() };
    skel::serve_delegated(b.plugin, &env, stdin)
}

fn spawn_child(binary: &Path, plugin: &str, command: Command, stdin: &[u8]) -> Result<std::process::Child, CniError> {
    let mut attempt = 0;
    let mut child = loop {
        let spawned = std::process::Command::new(binary)
            .env("CNI_COMMAND", command.as_str())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn();
        match spawned {
            Ok(c) => break c,
            Err(e) if e.raw_os_error() == Some(libc::ETXTBSY) && attempt < TXTBSY_RETRIES => attempt += 1,
            Err(e) => {
                return Err(CniError::Delegate { plugin: plugin.into(), reason: format!("exec {}: {e}", binary.display()) })
            }
        }
    };
    if let Some(mut input) = child.stdin.take() {
        // A plugin that exits without reading stdin closes the pipe: that is its business, not an error.
        let _ = input.write_all(stdin);
    }
    Ok(child)
}

impl Running {
    /// Wait for the plugin; its stdout on success, its error object (or a delegate error) otherwise.
    pub fn finish(self) -> Result<Vec<u8>, CniError> {
        let Running { process, plugin, command } = self;
        let served = |s: Served| (s.code == 0, format!("exit status: {}", s.code), s.stdout.into_bytes());
        let (success, status, stdout) = match process {
            Process::Child(child) => {
                let out = child
                    .wait_with_output()
                    .map_err(|e| CniError::Delegate { plugin: plugin.clone(), reason: format!("wait: {e}") })?;
                (out.status.success(), out.status.to_string(), out.stdout)
            }
            // serve() catches the plugin's panics; this is the thread itself failing.
            Process::Thread(thread) => served(thread.join().map_err(|_| CniError::Delegate {
                plugin: plugin.clone(),
                reason: format!("the thread serving {plugin} {} panicked", command.as_str()),
            })?),
            Process::Served(s) => served(s),
        };
        if success {
            return Ok(stdout);
        }
        match ErrorObject::parse(&stdout) {
            Some(obj) if obj.code != 0 => Err(CniError::Passthrough { code: obj.code, msg: obj.msg, details: obj.details }),
            _ => Err(CniError::Delegate {
                plugin: plugin.clone(),
                reason: format!("{} {} ({}): {}", plugin, command.as_str(), status, String::from_utf8_lossy(&stdout).trim()),
            }),
        }
    }
}

/// Run `binary` with `command`, the caller's environment and `stdin`; return its stdout on success.
/// Its builtin, if it has one, serves the call on the calling thread.
fn exec(binary: &Path, plugin: &str, command: Command, stdin: &[u8]) -> Result<Vec<u8>, CniError> {
    let process = match builtin_for(plugin, binary) {
        Some(b) => Process::Served(serve_builtin(b, command, stdin.to_vec())),
        None => Process::Child(spawn_child(binary, plugin, command, stdin)?),
    };
    Running { process, plugin: plugin.into(), command }.finish()
}

/// The result a delegated ADD printed, in `cni_version`.
fn parse_add_result(plugin: &str, stdout: &[u8], cni_version: &str) -> Result<CniResult, CniError> {
    let v: Value = serde_json::from_slice(stdout)
        .map_err(|e| CniError::Delegate { plugin: plugin.into(), reason: format!("result is not JSON: {e}") })?;
    CniResult::parse(&v, cni_version).map_err(|e| e.context(format!("result of {plugin}")))
}

/// Delegate ADD to `plugin`; returns its result. Its builtin, if it has one, serves the call on
/// the calling thread.
pub fn delegate_add(plugin: &str, req: &Request) -> Result<CniResult, CniError> {
    let bin = find_in_path(plugin, &req.path)?;
    parse_add_result(plugin, &exec(&bin, plugin, Command::Add, &req.stdin)?, &req.cni_version)
}

/// Delegate DEL, CHECK, STATUS or GC to `plugin`, with the request's config.
pub fn delegate(plugin: &str, command: Command, req: &Request) -> Result<(), CniError> {
    delegate_with(plugin, command, req, &req.stdin)
}

/// Delegate with a different config on stdin (e.g. CHECK with the IPAM part of a prevResult).
pub fn delegate_with(plugin: &str, command: Command, req: &Request, stdin: &[u8]) -> Result<(), CniError> {
    let bin = find_in_path(plugin, &req.path)?;
    exec(&bin, plugin, command, stdin).map(|_| ())
}

/// Start delegating `command` (DEL, ...) to `plugin` with the request's config, without waiting;
/// [`Running::finish`] collects it.
pub fn start(plugin: &str, command: Command, req: &Request) -> Result<Running, CniError> {
    let bin = find_in_path(plugin, &req.path)?;
    spawn(&bin, plugin, command, &req.stdin)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    /// A plugin linked into this test executable (which carries the identity note of
    /// `elfnote::tests`), recording the verbs it serves.
    struct Fake;
    static SERVED: Mutex<Vec<(String, String, std::thread::ThreadId)>> = Mutex::new(Vec::new());

    impl Plugin for Fake {
        fn name(&self) -> &'static str {
            "fake-builtin"
        }
        fn add(&self, req: &Request) -> Result<CniResult, CniError> {
            SERVED.lock().unwrap().push((req.command.as_str().into(), req.container_id.clone(), std::thread::current().id()));
            let v = serde_json::json!({"cniVersion": "1.0.0", "ips": [{"address": "10.1.2.3/24", "gateway": "10.1.2.1"}]});
            CniResult::parse(&v, "1.0.0")
        }
        fn del(&self, req: &Request) -> Result<(), CniError> {
            SERVED.lock().unwrap().push((req.command.as_str().into(), req.container_id.clone(), std::thread::current().id()));
            Ok(())
        }
        fn check(&self, _req: &Request) -> Result<(), CniError> {
            Err(CniError::Passthrough { code: 11, msg: "try again".into(), details: "fake".into() })
        }
    }

    static TEST_BUILTINS: [Builtin; 2] = [
        Builtin { name: "fake-builtin", identity: crate::elfnote::tests::TEST_IDENTITY, plugin: &Fake },
        Builtin { name: "fake-other-build", identity: "cni-common-tests 2 unit", plugin: &Fake },
    ];

    fn served(id: &str) -> Vec<String> {
        SERVED.lock().unwrap().iter().filter(|(_, c, _)| c == id).map(|(v, _, _)| v.clone()).collect()
    }

    /// Whether the last call served for `id` ran on the calling thread.
    fn served_here(id: &str) -> bool {
        SERVED.lock().unwrap().iter().rev().find(|(_, c, _)| c == id).is_some_and(|(_, _, t)| *t == std::thread::current().id())
    }

    #[test]
    fn builtin_serves_in_process_only_for_its_own_build() {
        use std::os::unix::fs::PermissionsExt;
        set_builtins(&TEST_BUILTINS);
        let dir = std::env::temp_dir().join(format!("cni-invoke-builtin-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let exe = std::fs::read_link("/proc/self/exe").unwrap();
        // Our build: served on a thread, with the delegated verb as CNI_COMMAND.
        std::os::unix::fs::symlink(&exe, dir.join("fake-builtin")).unwrap();
        // Another build of it: the file is executed (a script standing in for it).
        std::fs::write(
            dir.join("fake-other-build"),
            "#!/bin/sh\ncat >/dev/null\necho '{\"cniVersion\":\"1.0.0\",\"ips\":[{\"address\":\"10.9.9.9/24\"}]}'\n",
        )
        .unwrap();
        std::fs::set_permissions(dir.join("fake-other-build"), std::fs::Permissions::from_mode(0o755)).unwrap();
        // A delegated plugin gets the caller's environment, as an exec would: set what a runtime
        // sets (no other test of this binary reads these variables).
        std::env::set_var("CNI_CONTAINERID", "builtin-test");
        std::env::set_var("CNI_NETNS", "/nonexistent/netns");
        std::env::set_var("CNI_IFNAME", "eth0");
        std::env::set_var("CNI_PATH", &dir);
        std::env::set_var("CNI_NETNS_OVERRIDE", "1");
        let conf = serde_json::json!({"cniVersion": "1.0.0", "name": "n", "type": "bridge"});
        let env = [("CNI_COMMAND", "ADD"), ("CNI_CONTAINERID", "builtin-test"), ("CNI_IFNAME", "eth0")];
        let env = [&env[..], &[("CNI_NETNS", "/nonexistent/netns"), ("CNI_PATH", dir.to_str().unwrap())]].concat();
        // The caller's own verb differs from the delegated one (a rollback's DEL during ADD).
        let req = crate::skel::request_from(&env, &conf, &[]).unwrap();
        let r = delegate_add("fake-builtin", &req).unwrap();
        assert_eq!(r.ips[0].address.to_string(), "10.1.2.3/24");
        assert!(served_here("builtin-test"), "a waited-for delegation is served on the calling thread");
        delegate("fake-builtin", Command::Del, &req).unwrap();
        assert!(served_here("builtin-test"));
        let e = delegate("fake-builtin", Command::Check, &req).unwrap_err();
        assert_eq!((e.code(), e.to_string().contains("try again")), (11, true), "{e}");
        assert_eq!(served("builtin-test"), ["ADD", "DEL"]);
        // Started without waiting: served on a thread of its own.
        start("fake-builtin", Command::Del, &req).unwrap().finish().unwrap();
        assert!(!served_here("builtin-test"), "a started delegation runs on another thread");
        assert_eq!(served("builtin-test"), ["ADD", "DEL", "DEL"]);

        let r = delegate_add("fake-other-build", &req).unwrap();
        assert_eq!(r.ips[0].address.to_string(), "10.9.9.9/24");
        assert_eq!(served("builtin-test"), ["ADD", "DEL", "DEL"]);

        // Without an execute bit the exec would fail, and so does the delegation.
        std::fs::remove_file(dir.join("fake-builtin")).unwrap();
        std::fs::copy(&exe, dir.join("fake-builtin")).unwrap();
        std::fs::set_permissions(dir.join("fake-builtin"), std::fs::Permissions::from_mode(0o644)).unwrap();
        assert!(delegate_add("fake-builtin", &req).is_err());
        assert_eq!(served("builtin-test"), ["ADD", "DEL", "DEL"]);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn find_rejects_bad_names_and_empty_path() {
        assert_eq!(find_in_path("../x", &[PathBuf::from("/bin")]).unwrap_err().code(), 7);
        assert_eq!(find_in_path("x", &[]).unwrap_err().code(), 4);
        let e = find_in_path("surely-not-a-plugin", &[PathBuf::from("/bin")]).unwrap_err();
        assert!(e.to_string().contains("surely-not-a-plugin"));
        assert!(find_in_path("sh", &[PathBuf::from("/nonexistent"), PathBuf::from("/bin")]).is_ok());
    }

    #[test]
    fn error_object_passes_through() {
        let dir = std::env::temp_dir().join(format!("cni-invoke-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let bin = dir.join("fake");
        std::fs::write(&bin, "#!/bin/sh\ncat >/dev/null\necho '{\"cniVersion\":\"1.0.0\",\"code\":102,\"msg\":\"full\",\"details\":\"range 10.0.0.0/30\"}'\nexit 1\n").unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&bin, std::fs::Permissions::from_mode(0o755)).unwrap();
        let e = exec(&bin, "fake", Command::Add, b"{}").unwrap_err();
        assert_eq!(e.code(), 102);
        assert!(e.to_string().contains("range 10.0.0.0/30"));
        std::fs::write(&bin, "#!/bin/sh\necho garbage\nexit 3\n").unwrap();
        let e = exec(&bin, "fake", Command::Del, b"{}").unwrap_err();
        assert_eq!(e.code(), crate::error::code::DELEGATE);
        assert!(e.to_string().contains("garbage"));
        std::fs::write(&bin, "#!/bin/sh\ncat >/dev/null\necho '{\"ips\":[{\"address\":\"10.0.0.2/24\"}]}'\n").unwrap();
        assert!(exec(&bin, "fake", Command::Add, b"{}").is_ok());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
