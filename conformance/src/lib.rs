//! conformance: the suite's test harness.
//!
//! - [`sandbox`]: throwaway named network namespaces (a "host" per sandbox plus "containers"), removed on
//!   drop, also while a panic unwinds. Nothing here ever touches the machine's main network namespace.
//! - [`runner`]: a libcni-like runtime working on JSON: loads conflists, runs ADD/CHECK/DEL/GC/STATUS
//!   lists, keeps libcni's result cache, execs plugins (optionally inside a sandbox's host namespace).
//! - [`diff`]: a differential harness running the same steps against our plugins and the reference
//!   plugins, each side in its own sandbox, and normalising what legitimately differs.
//! - [`plugins`]: where our plugin binaries and the reference binaries are.
//!
//! The `cnitool` binary is a cnitool-compatible CLI on top of [`runner`].

pub mod bench;
pub mod diff;
mod nsexec;
pub mod plugins;
pub mod runner;
pub mod sandbox;

mod base64;

pub use nsexec::ThreadInNs;
pub use plugins::{our_plugin_dir, require_plugins, REFERENCE_PLUGIN_DIR};
pub use runner::{Attachment, NetworkConfigList, PluginOutput, RunError, Runtime, RuntimeConf};
pub use sandbox::{require_root, ContainerNs, Sandbox, SandboxError};
