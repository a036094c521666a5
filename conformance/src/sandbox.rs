//! Throwaway network namespaces for tests.
//!
//! A [`Sandbox`] is a named "host" namespace (`lo` up) standing in for the machine's main namespace,
//! plus a private data directory; [`Sandbox::container`] makes "container" namespaces (`lo` left
//! down). Names carry the process id and a process-wide counter (`cnit-<pid>-<n>-h`), so tests can run
//! in parallel, and everything is deleted on drop, also while a panic unwinds. Leftovers of killed
//! test processes (their pid is gone) are reaped when the first sandbox of a process is made.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Once;

use crate::nsexec::NsTarget;
use crate::runner::Runtime;

/// Prefix of every namespace and directory a sandbox makes.
const PREFIX: &str = "cnit-";
const NETNS_DIR: &str = "/run/netns";
/// The tmpfs where cnibench keeps each round's result cache beside the sandbox (named after it).
pub const SHM_DIR: &str = "/dev/shm";

static COUNTER: AtomicU64 = AtomicU64::new(0);
static REAP: Once = Once::new();

#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    #[error("{what}: {source}")]
    Io { what: String, source: std::io::Error },
    #[error("`{cmd}` failed ({status}): {stderr}")]
    Command { cmd: String, status: String, stderr: String },
    #[error("`{cmd}` printed invalid JSON: {reason}")]
    Json { cmd: String, reason: String },
}

pub type Result<T, E = SandboxError> = std::result::Result<T, E>;

/// Panic unless we run as root: namespaces need it. Tests call this first so that they fail loudly
/// instead of skipping.
pub fn require_root() {
    if !nix::unistd::geteuid().is_root() {
        panic!("this test needs root (network namespaces): run as root");
    }
}

/// A named network namespace (`/run/netns/NAME`), deleted on drop.
#[derive(Debug)]
pub struct NamedNetns {
    name: String,
    path: PathBuf,
}

/// A container's network namespace. `lo` starts down (bringing it up is the loopback plugin's job).
pub type ContainerNs = NamedNetns;

impl NamedNetns {
    /// `ip netns add NAME`, retried a few times: parallel first uses of `/run/netns` can race inside
    /// iproute2 while it sets up the shared mount.
    fn create(name: String) -> Result<NamedNetns> {
        let mut last = None;
        for attempt in 0..5 {
            match run_host("ip", ["netns", "add", name.as_str()]) {
                Ok(_) => {
                    let path = Path::new(NETNS_DIR).join(&name);
                    return Ok(NamedNetns { name, path });
                }
                Err(e) => {
                    // A half-made namespace must not survive a retry.
                    let _ = run_host("ip", ["netns", "del", name.as_str()]);
                    last = Some(e);
                    std::thread::sleep(std::time::Duration::from_millis(20 * (attempt + 1)));
                }
            }
        }
        Err(last.unwrap_or_else(|| SandboxError::Command {
            cmd: format!("ip netns add {name}"),
            status: "not run".into(),
            stderr: String::new(),
        }))
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// `/run/netns/NAME`.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Run `program args...` inside this namespace (like `ip netns exec`, with the namespace's own
    /// sysfs on `/sys` when mounting is allowed) and return its output, whatever its exit status.
    pub fn run<I, S>(&self, program: &str, args: I) -> Result<Output>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let target = NsTarget::open(&self.path)
            .map_err(|source| SandboxError::Io { what: format!("open {}", self.path.display()), source })?;
        let mut cmd = Command::new(program);
        cmd.args(args);
        target.apply(&mut cmd);
        let line = describe(&cmd);
        cmd.output().map_err(|source| SandboxError::Io { what: format!("run `{line}` in {}", self.name), source })
    }

    /// Like [`run`](Self::run) but fails on a non-zero exit; returns stdout.
    pub fn run_ok<I, S>(&self, program: &str, args: I) -> Result<String>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let args: Vec<S> = args.into_iter().collect();
        let out = self.run(program, &args)?;
        let line = std::iter::once(OsStr::new(program))
            .chain(args.iter().map(|a| a.as_ref()))
            .map(|a| a.to_string_lossy())
            .collect::<Vec<_>>()
            .join(" ");
        check_output(&line, out)
    }

    /// Run a `sh -c` script inside this namespace; fails on a non-zero exit.
    pub fn sh(&self, script: &str) -> Result<String> {
        self.run_ok("sh", ["-c", script])
    }

    /// `ip -j ARGS...` inside this namespace, parsed. Empty output gives `Null`.
    pub fn ip_json<I, S>(&self, args: I) -> Result<serde_json::Value>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let mut all: Vec<std::ffi::OsString> = vec!["-j".into()];
        all.extend(args.into_iter().map(|a| a.as_ref().to_os_string()));
        let line = format!("ip {}", all.iter().map(|a| a.to_string_lossy()).collect::<Vec<_>>().join(" "));
        let stdout = self.run_ok("ip", &all)?;
        if stdout.trim().is_empty() {
            return Ok(serde_json::Value::Null);
        }
        serde_json::from_str(&stdout).map_err(|e| SandboxError::Json { cmd: line, reason: e.to_string() })
    }

    /// The link `name` as `ip -j link show` reports it, or `None` if it does not exist.
    pub fn link(&self, name: &str) -> Result<Option<serde_json::Value>> {
        let out = self.run("ip", ["-j", "link", "show", "dev", name])?;
        if !out.status.success() {
            return Ok(None);
        }
        let v: serde_json::Value = serde_json::from_slice(&out.stdout)
            .map_err(|e| SandboxError::Json { cmd: format!("ip -j link show dev {name}"), reason: e.to_string() })?;
        Ok(v.as_array().and_then(|a| a.first()).cloned())
    }

    /// Whether the link `name` exists and is administratively up.
    pub fn link_is_up(&self, name: &str) -> Result<bool> {
        Ok(self.link(name)?.is_some_and(|l| {
            l["flags"].as_array().is_some_and(|f| f.iter().any(|x| x == "UP"))
        }))
    }
}

impl Drop for NamedNetns {
    fn drop(&mut self) {
        // Never panic here: this also runs while unwinding.
        if let Err(e) = run_host("ip", ["netns", "del", self.name.as_str()]) {
            if self.path.exists() {
                eprintln!("conformance: could not delete netns {}: {e}", self.name);
            }
        }
    }
}

/// A "host" namespace with `lo` up, a private data directory and the containers made from it.
#[derive(Debug)]
pub struct Sandbox {
    host: NamedNetns,
    tempdir: PathBuf,
    id: String,
    containers: AtomicUsize,
}

impl Sandbox {
    /// Make the host namespace `cnit-<pid>-<n>-h` (with `lo` up) and the directory `/tmp/cnit-<pid>-<n>`.
    pub fn new() -> Result<Sandbox> {
        REAP.call_once(reap_stale);
        let id = format!("{PREFIX}{}-{}", std::process::id(), COUNTER.fetch_add(1, Ordering::SeqCst));
        let tempdir = std::env::temp_dir().join(&id);
        std::fs::create_dir_all(&tempdir)
            .map_err(|source| SandboxError::Io { what: format!("create {}", tempdir.display()), source })?;
        let host = match NamedNetns::create(format!("{id}-h")) {
            Ok(h) => h,
            Err(e) => {
                let _ = std::fs::remove_dir_all(&tempdir);
                return Err(e);
            }
        };
        // From here on, Drop cleans up everything.
        let sandbox = Sandbox { host, tempdir, id, containers: AtomicUsize::new(0) };
        sandbox.host.run_ok("ip", ["link", "set", "lo", "up"])?;
        Ok(sandbox)
    }

    /// Unique id of this sandbox (`cnit-<pid>-<n>`), the prefix of all its names.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The host namespace.
    pub fn host(&self) -> &NamedNetns {
        &self.host
    }

    pub fn host_name(&self) -> &str {
        self.host.name()
    }

    /// `/run/netns/<host name>`.
    pub fn host_path(&self) -> &Path {
        self.host.path()
    }

    /// A new container namespace `cnit-<pid>-<n>-c<k>`, `lo` down. It is deleted when dropped.
    pub fn container(&self) -> Result<ContainerNs> {
        let k = self.containers.fetch_add(1, Ordering::SeqCst);
        NamedNetns::create(format!("{}-c{k}", self.id))
    }

    /// A directory private to this sandbox (IPAM dataDir, result cache, ...), removed on drop.
    pub fn tempdir(&self) -> &Path {
        &self.tempdir
    }

    /// A libcni-like runtime running plugins from `plugin_dir` inside this sandbox's host namespace,
    /// with its result cache under [`tempdir`](Self::tempdir).
    pub fn runtime(&self, plugin_dir: impl Into<PathBuf>) -> Runtime {
        Runtime {
            plugin_dirs: vec![plugin_dir.into()],
            cache_dir: self.tempdir.join("cni-cache"),
            exec_netns: Some(self.host_path().to_path_buf()),
        }
    }

    /// Run a command in the host namespace; see [`NamedNetns::run`].
    pub fn run<I, S>(&self, program: &str, args: I) -> Result<Output>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        self.host.run(program, args)
    }

    pub fn run_ok<I, S>(&self, program: &str, args: I) -> Result<String>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        self.host.run_ok(program, args)
    }

    pub fn sh(&self, script: &str) -> Result<String> {
        self.host.sh(script)
    }

    /// `ip -j ARGS...` in the host namespace.
    pub fn ip_json<I, S>(&self, args: I) -> Result<serde_json::Value>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        self.host.ip_json(args)
    }
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        if let Err(e) = std::fs::remove_dir_all(&self.tempdir) {
            if e.kind() != std::io::ErrorKind::NotFound {
                eprintln!("conformance: could not remove {}: {e}", self.tempdir.display());
            }
        }
        // `host` deletes itself when its field is dropped right after this.
    }
}

/// Run a command in our own namespace (only `ip netns add/del` use this).
fn run_host<I, S>(program: &str, args: I) -> Result<String>
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    let mut cmd = Command::new(program);
    cmd.args(args);
    let line = describe(&cmd);
    let out = cmd.output().map_err(|source| SandboxError::Io { what: format!("run `{line}`"), source })?;
    check_output(&line, out)
}

fn check_output(line: &str, out: Output) -> Result<String> {
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(SandboxError::Command {
            cmd: line.to_string(),
            status: out.status.to_string(),
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        })
    }
}

fn describe(cmd: &Command) -> String {
    std::iter::once(cmd.get_program())
        .chain(cmd.get_args())
        .map(|a| a.to_string_lossy())
        .collect::<Vec<_>>()
        .join(" ")
}

/// The pid encoded in a `cnit-<pid>-...` name.
fn owner_pid(name: &str) -> Option<u32> {
    name.strip_prefix(PREFIX)?.split('-').next()?.parse().ok()
}

/// Delete namespaces and directories left by sandbox owners that no longer run (killed test runs).
/// Runs automatically when a process makes its first sandbox.
pub fn reap_stale() {
    let dead = |name: &str| owner_pid(name).is_some_and(|pid| !Path::new(&format!("/proc/{pid}")).exists());
    if let Ok(entries) = std::fs::read_dir(NETNS_DIR) {
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if dead(&name) {
                let _ = run_host("ip", ["netns", "del", name.as_str()]);
            }
        }
    }
    // Sandbox directories, and the result caches cnibench keeps beside them on a tmpfs.
    for dir in [std::env::temp_dir(), PathBuf::from(SHM_DIR)] {
        let Ok(entries) = std::fs::read_dir(&dir) else { continue };
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if dead(&name) && e.path().is_dir() {
                let _ = std::fs::remove_dir_all(e.path());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn owner_pid_parses_names() {
        assert_eq!(owner_pid("cnit-123-4-h"), Some(123));
        assert_eq!(owner_pid("cnit-123-4"), Some(123));
        assert_eq!(owner_pid("other-123"), None);
        assert_eq!(owner_pid("cnit-x-1"), None);
        assert_eq!(owner_pid("cnit-123-4-cni-cache"), Some(123));
    }

    #[test]
    fn stale_result_cache_on_the_tmpfs_is_reaped() {
        let shm = Path::new(SHM_DIR);
        assert!(shm.is_dir(), "this test needs /dev/shm");
        // A pid that has just ended: a child we waited for.
        let mut child = std::process::Command::new("true").spawn().expect("spawn true");
        let pid = child.id();
        child.wait().expect("wait");
        let stale = shm.join(format!("{PREFIX}{pid}-0-cni-cache"));
        let mine = shm.join(format!("{PREFIX}{}-999-cni-cache", std::process::id()));
        for d in [&stale, &mine] {
            std::fs::create_dir_all(d.join("results")).expect("make dir");
        }
        reap_stale();
        let (stale_left, mine_left) = (stale.exists(), mine.exists());
        let _ = std::fs::remove_dir_all(&stale);
        let _ = std::fs::remove_dir_all(&mine);
        assert!(!stale_left, "{} was left", stale.display());
        assert!(mine_left, "a live owner's directory was removed");
    }
}
