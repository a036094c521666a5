//! Executing one plugin binary.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::Duration;

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

        let mut child = spawn_retrying(&path, &env_all, target.as_ref()).map_err(exec_err)?;
        drop(target);
        let writer = child.stdin.take().map(|mut stdin| {
            let data = config.to_vec();
            // A plugin may exit without reading all of stdin: a broken pipe is not our error.
            std::thread::spawn(move || {
                let _ = stdin.write_all(&data);
            })
        });
        let out = child.wait_with_output().map_err(exec_err)?;
        if let Some(w) = writer {
            let _ = w.join();
        }
        if !out.stderr.is_empty() {
            eprint!("{}", String::from_utf8_lossy(&out.stderr));
        }
        Ok(PluginOutput { status: out.status, stdout: out.stdout, stderr: out.stderr })
    }
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
