//! Errors of the runner.

use std::path::PathBuf;

/// A CNI error object as a plugin prints it on stdout (`{"cniVersion","code","msg","details"}`).
pub use cni_common::error::ErrorObject as PluginError;

/// A plugin that exited non-zero: everything it said.
#[derive(Debug, Clone)]
pub struct PluginFailure {
    /// The plugin's `type`.
    pub plugin: String,
    /// `ADD`, `DEL`, ...
    pub command: String,
    /// Exit code; `None` when killed by a signal.
    pub exit_code: Option<i32>,
    /// The error object on stdout, when it parsed.
    pub error: Option<PluginError>,
    pub stdout: String,
    pub stderr: String,
}

impl std::fmt::Display for PluginFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "plugin type={:?} failed ({}): ", self.plugin, self.command.to_lowercase())?;
        match &self.error {
            Some(e) => write!(f, "{e}"),
            // libcni (pkg/invoke/raw_exec.go): empty stdout → the message comes from stderr.
            None if self.stdout.trim().is_empty() => write!(f, "netplugin failed: {:?}", self.stderr),
            None => write!(f, "netplugin failed but error parsing its diagnostic message {:?}", self.stdout),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("invalid network configuration: {0}")]
    Config(String),
    #[error("invalid runtime configuration: {0}")]
    RuntimeConf(String),
    #[error("failed to find plugin {plugin:?} in path {dirs:?}")]
    PluginNotFound { plugin: String, dirs: Vec<PathBuf> },
    #[error("failed to run plugin {plugin:?}: {source}")]
    Exec { plugin: String, source: std::io::Error },
    #[error("{0}")]
    Plugin(Box<PluginFailure>),
    #[error("plugin type={plugin:?} ({command}) printed an invalid result: {reason}")]
    BadResult { plugin: String, command: String, reason: String, stdout: String },
    #[error("configuration version {version:?} does not support the {command} command")]
    Unsupported { version: String, command: String },
    #[error("result cache {}: {reason}", path.display())]
    Cache { path: PathBuf, reason: String },
    #[error("failed to delete stale attachment {container_id} {ifname}: {source}")]
    StaleAttachment { container_id: String, ifname: String, source: Box<RunError> },
    /// Several errors (GC continues past failures and reports them all).
    #[error("{}", .0.iter().map(|e| e.to_string()).collect::<Vec<_>>().join("; "))]
    Multiple(Vec<RunError>),
}

impl RunError {
    /// The plugin failure behind this error, if a plugin failed.
    pub fn plugin_failure(&self) -> Option<&PluginFailure> {
        match self {
            RunError::Plugin(p) => Some(p),
            RunError::StaleAttachment { source, .. } => source.plugin_failure(),
            RunError::Multiple(v) => v.iter().find_map(RunError::plugin_failure),
            _ => None,
        }
    }

    /// The CNI error code a plugin reported, if any.
    pub fn code(&self) -> Option<u32> {
        self.plugin_failure().and_then(|p| p.error.as_ref()).map(|e| e.code)
    }

    /// Flatten into the list of individual errors.
    pub fn into_vec(self) -> Vec<RunError> {
        match self {
            RunError::Multiple(v) => v,
            e => vec![e],
        }
    }

    /// `Ok` for no errors, the error for one, `Multiple` for more.
    pub fn join(mut errs: Vec<RunError>) -> Result<(), RunError> {
        match errs.len() {
            0 => Ok(()),
            1 => Err(errs.remove(0)),
            _ => Err(RunError::Multiple(errs)),
        }
    }

    pub(crate) fn config(msg: impl Into<String>) -> RunError {
        RunError::Config(msg.into())
    }
}
