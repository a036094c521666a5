//! Delegation: run another plugin (IPAM) found in `CNI_PATH` with the same environment and the full
//! config on stdin, pass its stderr through, and read its result or error object.

use crate::error::{CniError, ErrorObject};
use crate::result::CniResult;
use crate::skel::{Command, Request};
use serde_json::Value;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Stdio;

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
    child: std::process::Child,
    plugin: String,
    command: Command,
}

/// Start `binary` with `command`, the caller's environment and `stdin` (written and closed before
/// returning; a config larger than the pipe waits until the plugin reads it).
fn spawn(binary: &Path, plugin: &str, command: Command, stdin: &[u8]) -> Result<Running, CniError> {
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
    Ok(Running { child, plugin: plugin.into(), command })
}

impl Running {
    /// Wait for the plugin; its stdout on success, its error object (or a delegate error) otherwise.
    pub fn finish(self) -> Result<Vec<u8>, CniError> {
        let Running { child, plugin, command } = self;
        let out = child
            .wait_with_output()
            .map_err(|e| CniError::Delegate { plugin: plugin.clone(), reason: format!("wait: {e}") })?;
        if out.status.success() {
            return Ok(out.stdout);
        }
        match ErrorObject::parse(&out.stdout) {
            Some(obj) if obj.code != 0 => Err(CniError::Passthrough { code: obj.code, msg: obj.msg, details: obj.details }),
            _ => Err(CniError::Delegate {
                plugin: plugin.clone(),
                reason: format!(
                    "{} {} ({}): {}",
                    plugin,
                    command.as_str(),
                    out.status,
                    String::from_utf8_lossy(&out.stdout).trim()
                ),
            }),
        }
    }
}

/// Run `binary` with `command`, the caller's environment and `stdin`; return its stdout on success.
fn exec(binary: &Path, plugin: &str, command: Command, stdin: &[u8]) -> Result<Vec<u8>, CniError> {
    spawn(binary, plugin, command, stdin)?.finish()
}

/// A delegated ADD running while the caller does other work: see [`start_add`].
pub struct PendingAdd {
    running: Running,
    cni_version: String,
}

/// Start delegating ADD to `plugin` without waiting for it; [`PendingAdd::result`] collects it.
pub fn start_add(plugin: &str, req: &Request) -> Result<PendingAdd, CniError> {
    let bin = find_in_path(plugin, &req.path)?;
    Ok(PendingAdd { running: spawn(&bin, plugin, Command::Add, &req.stdin)?, cni_version: req.cni_version.clone() })
}

impl PendingAdd {
    /// Wait for the delegated ADD and parse its result.
    pub fn result(self) -> Result<CniResult, CniError> {
        let plugin = self.running.plugin.clone();
        let stdout = self.running.finish()?;
        let v: Value = serde_json::from_slice(&stdout)
            .map_err(|e| CniError::Delegate { plugin: plugin.clone(), reason: format!("result is not JSON: {e}") })?;
        CniResult::parse(&v, &self.cni_version).map_err(|e| e.context(format!("result of {plugin}")))
    }
}

/// Delegate ADD to `plugin`; returns its result.
pub fn delegate_add(plugin: &str, req: &Request) -> Result<CniResult, CniError> {
    start_add(plugin, req)?.result()
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
