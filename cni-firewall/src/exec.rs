//! Spawning the firewall tools: the one place processes are started, so they can be counted.
//!
//! Data reaches the tools only through stdin (restore scripts, nft scripts) or as fixed arguments;
//! nothing goes through a shell. Children inherit the calling thread's network namespace.

use crate::CniError;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};

/// What a finished process left behind.
#[derive(Debug, Clone, Default)]
pub struct CmdOutput {
    pub success: bool,
    /// Exit code, or -1 when killed by a signal.
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

/// Runs a program to completion. Implementations must run it in the caller's network namespace.
pub trait CommandRunner: Send + Sync {
    /// Run `program args...`, feeding `stdin` when given. `Err` only when the process could not be
    /// started; a failing process is `Ok` with `success == false`.
    fn run(&self, program: &Path, args: &[&str], stdin: Option<&[u8]>) -> Result<CmdOutput, CniError>;
}

/// The real runner: `std::process::Command`, counting every spawn.
#[derive(Debug, Default)]
pub struct ProcessRunner {
    spawned: AtomicUsize,
}

impl ProcessRunner {
    pub fn new() -> Self {
        ProcessRunner { spawned: AtomicUsize::new(0) }
    }
    /// Processes spawned so far by this runner.
    pub fn spawned(&self) -> usize {
        self.spawned.load(Ordering::SeqCst)
    }
}

impl CommandRunner for ProcessRunner {
    fn run(&self, program: &Path, args: &[&str], stdin: Option<&[u8]>) -> Result<CmdOutput, CniError> {
        let mut cmd = Command::new(program);
        cmd.args(args)
            .env("LC_ALL", "C")
            .stdin(if stdin.is_some() { Stdio::piped() } else { Stdio::null() })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd
            .spawn()
            .map_err(|e| CniError::Firewall(format!("cannot run {}: {e}", program.display())))?;
        self.spawned.fetch_add(1, Ordering::SeqCst);
        let out = std::thread::scope(|s| {
            if let (Some(data), Some(mut pipe)) = (stdin, child.stdin.take()) {
                // Write from another thread so a large input cannot deadlock against full output pipes.
                s.spawn(move || {
                    let _ = pipe.write_all(data);
                    // pipe dropped here: EOF for the child
                });
            }
            child.wait_with_output()
        })
        .map_err(|e| CniError::Firewall(format!("waiting for {}: {e}", program.display())))?;
        Ok(CmdOutput {
            success: out.status.success(),
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        })
    }
}

/// Directories searched after `PATH` (runtimes often call plugins with a PATH lacking sbin).
const FALLBACK_DIRS: &[&str] = &["/usr/local/sbin", "/usr/sbin", "/sbin", "/usr/local/bin", "/usr/bin", "/bin"];

/// Find an executable by name in `PATH`, then in the usual system directories.
pub fn find_program(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    let dirs = std::env::split_paths(&path).chain(FALLBACK_DIRS.iter().map(PathBuf::from));
    for dir in dirs {
        if dir.as_os_str().is_empty() {
            continue;
        }
        let p = dir.join(name);
        if is_executable(&p) {
            return Some(p);
        }
    }
    None
}

fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    match std::fs::metadata(p) {
        Ok(m) => m.is_file() && m.permissions().mode() & 0o111 != 0,
        Err(_) => false,
    }
}

/// First line(s) of a tool's stderr, for error messages.
pub(crate) fn short_err(out: &CmdOutput) -> String {
    let s = out.stderr.trim();
    let s = if s.is_empty() { out.stdout.trim() } else { s };
    let mut s: String = s.lines().take(4).collect::<Vec<_>>().join("; ");
    if s.len() > 600 {
        let mut cut = 600;
        while !s.is_char_boundary(cut) {
            cut -= 1;
        }
        s.truncate(cut);
    }
    if s.is_empty() {
        format!("exit code {}", out.code)
    } else {
        s
    }
}
