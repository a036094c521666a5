//! Executing one plugin binary.

use std::cell::RefCell;
use std::io::{Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use super::{PluginError, PluginFailure, RunError, Runtime};
use crate::nsexec::NsTarget;

/// How often a spawn failing with ETXTBSY ("text file busy": the binary is being replaced) is retried.
const TXTBSY_RETRIES: u32 = 5;

/// What a plugin process did.
#[derive(Debug, Clone)]
pub struct PluginOutput {
    pub status: ExitStatus,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
}

impl PluginOutput {
    pub fn success(&self) -> bool {
        self.status.success()
    }

    /// Exit code; `None` when killed by a signal.
    pub fn exit_code(&self) -> Option<i32> {
        self.status.code()
    }

    pub fn stdout_str(&self) -> String {
        String::from_utf8_lossy(&self.stdout).into_owned()
    }

    pub fn stderr_str(&self) -> String {
        String::from_utf8_lossy(&self.stderr).into_owned()
    }

    /// stdout as JSON, if it is JSON.
    pub fn json(&self) -> Option<Value> {
        serde_json::from_slice(&self.stdout).ok()
    }

    /// The CNI error object on stdout, if there is one.
    pub fn error_object(&self) -> Option<PluginError> {
        PluginError::parse(&self.stdout)
    }

    /// The failure report for a non-zero exit.
    pub fn failure(&self, plugin: &str, command: &str) -> PluginFailure {
        PluginFailure {
            plugin: plugin.to_string(),
            command: command.to_string(),
            exit_code: self.exit_code(),
            error: self.error_object(),
            stdout: self.stdout_str(),
            stderr: self.stderr_str(),
        }
    }
}

/// What one plugin process cost, as measured by [`Runtime::exec_plugin`] on the calling thread while
/// recording is on (see [`start_exec_recording`]). Used by the benchmark.
#[derive(Debug, Clone, PartialEq)]
pub struct ExecRecord {
    /// The plugin type (binary name).
    pub plugin: String,
    /// `CNI_COMMAND` (empty for a bare invocation).
    pub command: String,
    /// From just before the spawn to the reaped exit (fork, namespace entry, exec, run, pipes drained).
    pub wall: Duration,
    /// CPU time of the process and of every descendant it waited for (`wait4` rusage).
    pub user: Duration,
    pub sys: Duration,
    /// `ru_maxrss` from `wait4`: the peak RSS of the process or of the largest descendant it waited
    /// for, in KiB.
    pub max_rss_kib: u64,
    pub success: bool,
}

thread_local! {
    static RECORDS: RefCell<Option<Vec<ExecRecord>>> = const { RefCell::new(None) };
}

/// Record an [`ExecRecord`] for every plugin this thread executes from now on (clears earlier
/// records of this thread).
pub fn start_exec_recording() {
    RECORDS.with(|r| *r.borrow_mut() = Some(Vec::new()));
}

/// The records of this thread since [`start_exec_recording`] (or the last take); recording stays on.
pub fn take_exec_records() -> Vec<ExecRecord> {
    RECORDS.with(|r| r.borrow_mut().as_mut().map(std::mem::take).unwrap_or_default())
}

/// Stop recording on this thread, returning what was not taken yet.
pub fn stop_exec_recording() -> Vec<ExecRecord> {
    RECORDS.with(|r| r.borrow_mut().take().unwrap_or_default())
}

fn recording() -> bool {
    RECORDS.with(|r| r.borrow().is_some())
}

fn record(rec: ExecRecord) {
    RECORDS.with(|r| {
        if let Some(v) = r.borrow_mut().as_mut() {
            v.push(rec);
        }
    });
}

impl Runtime {
    /// The binary of `plugin_type`: the first `<dir>/<type>` of `plugin_dirs` that is a file.
    pub fn find_plugin(&self, plugin_type: &str) -> Result<PathBuf, RunError> {
        let not_found = || RunError::PluginNotFound { plugin: plugin_type.to_string(), dirs: self.plugin_dirs.clone() };
        if plugin_type.is_empty() || plugin_type.contains('/') {
            return Err(not_found());
        }
        self.plugin_dirs.iter().map(|d| d.join(plugin_type)).find(|p| p.is_file()).ok_or_else(not_found)
    }

    /// `CNI_PATH` for plugins: `plugin_dirs` joined by ':'.
    pub fn cni_path(&self) -> String {
        self.plugin_dirs.iter().map(|d| d.to_string_lossy()).collect::<Vec<_>>().join(":")
    }

    /// Run plugin `plugin_type` with `config` on stdin; no interpretation of what it does.
    ///
    /// The child's environment is ours without any `CNI_*` variable, plus `CNI_COMMAND=command`
    /// (omitted when `command` is empty: a bare invocation), `CNI_PATH` (our plugin dirs, unless `env`
    /// sets it) and `env`. With `exec_netns` set it runs inside that namespace. Spawning is retried on
    /// ETXTBSY. The plugin's stderr is captured and also copied to ours.
    pub fn exec_plugin(
        &self,
        plugin_type: &str,
        command: &str,
        config: &[u8],
        env: &[(&str, &str)],
    ) -> Result<PluginOutput, RunError> {
        let path = self.find_plugin(plugin_type)?;
        let exec_err = |source| RunError::Exec { plugin: plugin_type.to_string(), source };
        let target = match &self.exec_netns {
            // A worker thread that entered the namespace itself spawns plainly (posix_spawn).
            Some(ns) if crate::nsexec::thread_is_in(ns) => None,
            Some(ns) => Some(NsTarget::open(ns).map_err(|e| {
                exec_err(std::io::Error::new(e.kind(), format!("open exec netns {}: {e}", ns.display())))
            })?),
            None => None,
        };
        let mut env_all: Vec<(&str, String)> = Vec::new();
        if !command.is_empty() {
            env_all.push(("CNI_COMMAND", command.to_string()));
        }
        if !env.iter().any(|(k, _)| *k == "CNI_PATH") {
            env_all.push(("CNI_PATH", self.cni_path()));
        }
        env_all.extend(env.iter().map(|(k, v)| (*k, v.to_string())));

        let started = Instant::now();
        let mut child = spawn_retrying(&path, &env_all, target.as_ref()).map_err(exec_err)?;
        drop(target);
        // A plugin may exit without reading all of stdin: a broken pipe is not our error. A config
        // that fits in the pipe is written at once (it cannot block); a larger one by a thread.
        let writer = child.stdin.take().and_then(|mut stdin| {
            if config.len() <= pipe_capacity(&stdin) {
                let _ = stdin.write_all(config);
                None
            } else {
                let data = config.to_vec();
                Some(std::thread::spawn(move || {
                    let _ = stdin.write_all(&data);
                }))
            }
        });
        let out = wait_with_rusage(child).map_err(exec_err)?;
        if let Some(w) = writer {
            let _ = w.join();
        }
        if recording() {
            record(ExecRecord {
                plugin: plugin_type.to_string(),
                command: command.to_string(),
                wall: started.elapsed(),
                user: timeval(out.rusage.ru_utime),
                sys: timeval(out.rusage.ru_stime),
                max_rss_kib: u64::try_from(out.rusage.ru_maxrss).unwrap_or(0),
                success: out.status.success(),
            });
        }
        if !out.stderr.is_empty() {
            eprint!("{}", String::from_utf8_lossy(&out.stderr));
        }
        Ok(PluginOutput { status: out.status, stdout: out.stdout, stderr: out.stderr })
    }
}

/// How many bytes the (empty) pipe takes without blocking the writer; 0 when unknown.
fn pipe_capacity(pipe: &std::process::ChildStdin) -> usize {
    // SAFETY: F_GETPIPE_SZ only reads the pipe's size.
    let n = unsafe { libc::fcntl(pipe.as_raw_fd(), libc::F_GETPIPE_SZ) };
    usize::try_from(n).unwrap_or(0)
}

fn timeval(tv: libc::timeval) -> Duration {
    Duration::from_secs(u64::try_from(tv.tv_sec).unwrap_or(0)) + Duration::from_micros(u64::try_from(tv.tv_usec).unwrap_or(0))
}

struct Reaped {
    status: ExitStatus,
    stdout: Vec<u8>,
    stderr: Vec<u8>,
    rusage: libc::rusage,
}

/// Like `Child::wait_with_output`, but reaps with `wait4` to get the child's resource usage.
fn wait_with_rusage(mut child: Child) -> std::io::Result<Reaped> {
    let mut stdout = Vec::new();
    let mut stderr = Vec::new();
    match (child.stdout.take(), child.stderr.take()) {
        (Some(mut o), Some(mut e)) => read_both(&mut o, &mut e, &mut stdout, &mut stderr)?,
        (Some(mut o), None) => {
            o.read_to_end(&mut stdout)?;
        }
        (None, Some(mut e)) => {
            e.read_to_end(&mut stderr)?;
        }
        (None, None) => {}
    }
    let pid = libc::pid_t::try_from(child.id()).map_err(|_| std::io::Error::other("pid out of range"))?;
    let mut status: libc::c_int = 0;
    // SAFETY: an all-zero rusage is a valid value of this plain C struct.
    let mut rusage: libc::rusage = unsafe { std::mem::zeroed() };
    loop {
        // SAFETY: plain syscall on our own child with valid out-pointers. `child` is not waited by
        // std afterwards (dropping a `Child` neither waits nor kills).
        let r = unsafe { libc::wait4(pid, &mut status, 0, &mut rusage) };
        if r == pid {
            break;
        }
        let err = std::io::Error::last_os_error();
        if err.kind() != std::io::ErrorKind::Interrupted {
            return Err(err);
        }
    }
    drop(child);
    Ok(Reaped { status: ExitStatus::from_raw(status), stdout, stderr, rusage })
}

/// Drain two pipes until both reach EOF, without a thread (poll).
fn read_both(
    o: &mut std::process::ChildStdout,
    e: &mut std::process::ChildStderr,
    out: &mut Vec<u8>,
    err: &mut Vec<u8>,
) -> std::io::Result<()> {
    let mut open = [true, true];
    let mut buf = [0u8; 16 * 1024];
    while open[0] || open[1] {
        let mut fds = [
            libc::pollfd { fd: if open[0] { o.as_raw_fd() } else { -1 }, events: libc::POLLIN, revents: 0 },
            libc::pollfd { fd: if open[1] { e.as_raw_fd() } else { -1 }, events: libc::POLLIN, revents: 0 },
        ];
        // SAFETY: `fds` is a valid array of 2 pollfd; negative fds are ignored by poll.
        let r = unsafe { libc::poll(fds.as_mut_ptr(), 2, -1) };
        if r < 0 {
            let err = std::io::Error::last_os_error();
            if err.kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            return Err(err);
        }
        for (i, fd) in fds.iter().enumerate() {
            if !open[i] || fd.revents == 0 {
                continue;
            }
            let n = if i == 0 { o.read(&mut buf) } else { e.read(&mut buf) };
            match n {
                Ok(0) => open[i] = false,
                Ok(n) => (if i == 0 { &mut *out } else { &mut *err }).extend_from_slice(&buf[..n]),
                Err(x) if x.kind() == std::io::ErrorKind::Interrupted => {}
                Err(x) => return Err(x),
            }
        }
    }
    Ok(())
}

fn spawn_retrying(path: &Path, env: &[(&str, String)], target: Option<&NsTarget>) -> std::io::Result<Child> {
    let mut attempt = 0;
    loop {
        let mut cmd = Command::new(path);
        for (k, _) in std::env::vars_os() {
            if k.to_string_lossy().starts_with("CNI_") {
                cmd.env_remove(k);
            }
        }
        cmd.envs(env.iter().map(|(k, v)| (k, v)));
        cmd.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped());
        if let Some(t) = target {
            t.apply(&mut cmd);
        }
        match cmd.spawn() {
            Err(e) if e.raw_os_error() == Some(libc::ETXTBSY) && attempt < TXTBSY_RETRIES => {
                attempt += 1;
                std::thread::sleep(Duration::from_millis(200 * u64::from(attempt)));
            }
            other => return other,
        }
    }
}
