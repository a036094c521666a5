//! The entry point every plugin calls: read the environment and stdin, validate them, negotiate the
//! version, dispatch the verb, and print the result or the error object.
//!
//! [`parse_request`] is pure (environment and stdin in, [`Request`] out) so it is unit-tested without
//! root; [`run`] wires it to the real process.

use serde::Deserialize;
use crate::args::CniArgs;
use crate::config::{check_ifname, valid_name, PluginConf};
use crate::error::CniError;
use crate::netns::NetNs;
use crate::result::CniResult;
use crate::version::{self, Version};
use serde_json::Value;
use std::io::{Read, Write};
use std::path::PathBuf;

/// Largest config accepted on stdin.
pub const MAX_STDIN: usize = 1 << 20;
pub use crate::config::MAX_IFNAME;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    Add,
    Del,
    Check,
    Status,
    Gc,
    Version,
}

impl Command {
    pub fn parse(s: &str) -> Result<Command, CniError> {
        Ok(match s {
            "ADD" => Command::Add,
            "DEL" => Command::Del,
            "CHECK" => Command::Check,
            "STATUS" => Command::Status,
            "GC" => Command::Gc,
            "VERSION" => Command::Version,
            other => {
                return Err(CniError::invalid_env(
                    "CNI_COMMAND",
                    format!("unknown command {other:?} (expected ADD, DEL, CHECK, STATUS, GC or VERSION)"),
                ))
            }
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Command::Add => "ADD",
            Command::Del => "DEL",
            Command::Check => "CHECK",
            Command::Status => "STATUS",
            Command::Gc => "GC",
            Command::Version => "VERSION",
        }
    }

    /// Verbs that act on one attachment and so need container ID and interface name.
    fn per_attachment(self) -> bool {
        matches!(self, Command::Add | Command::Del | Command::Check)
    }
}

/// One validated invocation.
#[derive(Debug, Clone)]
pub struct Request {
    pub command: Command,
    pub container_id: String,
    /// `CNI_NETNS`; may be empty on DEL.
    pub netns: String,
    pub ifname: String,
    pub args: CniArgs,
    /// `CNI_PATH` split on ':'.
    pub path: Vec<PathBuf>,
    /// The config exactly as received, for delegation.
    pub stdin: Vec<u8>,
    /// The parsed config, for the plugin's own typed parsing.
    pub raw: Value,
    /// The fields every plugin config has.
    pub conf: PluginConf,
    /// The negotiated version results and errors are printed in.
    pub cni_version: String,
}

impl Request {
    pub fn version(&self) -> Version {
        Version::parse(&self.cni_version).unwrap_or(Version::V1_1_0)
    }

    /// The previous result in the chain, converted to the current shape.
    pub fn prev_result(&self) -> Result<Option<CniResult>, CniError> {
        match &self.conf.prev_result {
            None | Some(Value::Null) => Ok(None),
            Some(v) => CniResult::parse(v, &self.cni_version).map(Some).map_err(|e| e.context("prevResult")),
        }
    }
}

/// What a plugin implements. Every verb has the request; ADD returns the result to print.
pub trait Plugin {
    /// The plugin's `type`, used in the "about" text.
    fn name(&self) -> &'static str;
    /// Keys of `CNI_ARGS` the plugin understands.
    fn known_args(&self) -> &'static [&'static str] {
        &[]
    }
    fn supported_versions(&self) -> &'static [&'static str] {
        version::SUPPORTED
    }
    fn add(&self, req: &Request) -> Result<CniResult, CniError>;
    fn del(&self, req: &Request) -> Result<(), CniError>;
    fn check(&self, req: &Request) -> Result<(), CniError>;
    fn status(&self, _req: &Request) -> Result<(), CniError> {
        Ok(())
    }
    fn gc(&self, _req: &Request) -> Result<(), CniError> {
        Ok(())
    }
}

/// What came in: the environment (as a lookup) and stdin.
pub struct Input<'a> {
    pub env: &'a dyn Fn(&str) -> Option<String>,
    pub stdin: Vec<u8>,
}

/// The outcome of parsing: a request to dispatch, or a VERSION reply.
#[derive(Debug)]
pub enum Parsed {
    Request(Box<Request>),
    Version(Value),
}

/// The version to print an error in, from whatever of the config could be read.
pub fn error_version(stdin: &[u8]) -> String {
    serde_json::from_slice::<Value>(stdin)
        .ok()
        .and_then(|v| v.get("cniVersion").and_then(Value::as_str).map(str::to_string))
        .filter(|v| version::SUPPORTED.contains(&v.as_str()))
        .unwrap_or_else(|| version::CURRENT.to_string())
}

/// Validate environment and stdin into a request. Pure: no system calls.
pub fn parse_request(input: Input, plugin_versions: &[&str], known_args: &[&str]) -> Result<Parsed, CniError> {
    let env = |k: &str| (input.env)(k).unwrap_or_default();
    let command = Command::parse(&env("CNI_COMMAND"))?;

    if command == Command::Version {
        let asked = serde_json::from_slice::<Value>(&input.stdin)
            .ok()
            .and_then(|v| v.get("cniVersion").and_then(Value::as_str).map(str::to_string))
            .filter(|v| plugin_versions.contains(&v.as_str()))
            .unwrap_or_else(|| version::CURRENT.to_string());
        return Ok(Parsed::Version(serde_json::json!({
            "cniVersion": asked,
            "supportedVersions": plugin_versions,
        })));
    }

    if input.stdin.len() > MAX_STDIN {
        return Err(CniError::Io(format!(
            "config on stdin is {} bytes, more than the limit of {MAX_STDIN} bytes",
            input.stdin.len()
        )));
    }
    let text = std::str::from_utf8(&input.stdin).map_err(|e| CniError::decode("config on stdin", format!("not UTF-8: {e}")))?;
    if text.trim().is_empty() {
        return Err(CniError::decode("config on stdin", "stdin is empty"));
    }
    let raw: Value = serde_json::from_str(text).map_err(|e| CniError::decode("config on stdin", e))?;
    if !raw.is_object() {
        return Err(CniError::decode("config on stdin", "not a JSON object"));
    }
    let conf: PluginConf = PluginConf::deserialize(&raw).map_err(|e| CniError::decode("config on stdin", e))?;

    // The reference library treats a missing cniVersion as 0.1.0.
    let cni_version = if conf.cni_version.is_empty() { "0.1.0".to_string() } else { conf.cni_version.clone() };
    let ver = Version::supported(&cni_version)?;
    if !plugin_versions.contains(&cni_version.as_str()) {
        return Err(CniError::IncompatibleVersion(format!(
            "cniVersion {cni_version:?} is not supported by this plugin (supported: {})",
            plugin_versions.join(", ")
        )));
    }
    match command {
        Command::Check if ver < Version::V0_4_0 => {
            return Err(CniError::IncompatibleVersion(format!("config version {cni_version} does not allow CHECK (needs 0.4.0 or later)")))
        }
        Command::Status | Command::Gc if ver < Version::V1_1_0 => {
            return Err(CniError::IncompatibleVersion(format!(
                "config version {cni_version} does not allow {} (needs 1.1.0 or later)",
                command.as_str()
            )))
        }
        _ => {}
    }
    if conf.name.is_empty() {
        return Err(CniError::config("missing network name (field \"name\")"));
    }
    if !valid_name(&conf.name) {
        return Err(CniError::config(format!(
            "network name {:?} is invalid: it must match ^[a-zA-Z0-9][a-zA-Z0-9_.\\-]*$",
            conf.name
        )));
    }
    if conf.plugin_type.is_empty() {
        return Err(CniError::config("missing plugin type (field \"type\")"));
    }

    let container_id = env("CNI_CONTAINERID");
    let netns = env("CNI_NETNS");
    let ifname = env("CNI_IFNAME");
    if command.per_attachment() {
        if container_id.is_empty() {
            return Err(CniError::invalid_env("CNI_CONTAINERID", "is missing or empty"));
        }
        if !valid_name(&container_id) {
            return Err(CniError::invalid_env(
                "CNI_CONTAINERID",
                format!("{container_id:?} is invalid: it must match ^[a-zA-Z0-9][a-zA-Z0-9_.\\-]*$"),
            ));
        }
        if netns.is_empty() && command != Command::Del {
            return Err(CniError::invalid_env("CNI_NETNS", "is missing or empty"));
        }
        check_ifname(&ifname).map_err(|why| CniError::invalid_env("CNI_IFNAME", why))?;
    }
    let args = CniArgs::parse(&env("CNI_ARGS"), known_args)?;
    let path = env("CNI_PATH").split(':').filter(|p| !p.is_empty()).map(PathBuf::from).collect();

    Ok(Parsed::Request(Box::new(Request {
        command,
        container_id,
        netns,
        ifname,
        args,
        path,
        stdin: input.stdin,
        raw,
        conf,
        cni_version,
    })))
}

/// Build a request from explicit environment pairs and a config, as [`parse_request`] would from
/// the process: used by plugins' unit tests and by tools that call plugin logic in-process.
pub fn request_from(env: &[(&str, &str)], conf: &Value, known_args: &[&str]) -> Result<Request, CniError> {
    let lookup = |k: &str| env.iter().find(|(key, _)| *key == k).map(|(_, v)| v.to_string());
    let stdin = serde_json::to_vec(conf).map_err(|e| CniError::Internal(format!("encode config: {e}")))?;
    match parse_request(Input { env: &lookup, stdin }, version::SUPPORTED, known_args)? {
        Parsed::Request(r) => Ok(*r),
        Parsed::Version(_) => Err(CniError::invalid_env("CNI_COMMAND", "VERSION has no request")),
    }
}

/// Refuse a `CNI_NETNS` that is the plugin's own namespace (unless `CNI_NETNS_OVERRIDE` is set):
/// configuring it would rewire the host. Only checked when the namespace can be opened.
fn check_not_own_netns(req: &Request, override_set: bool) -> Result<(), CniError> {
    if req.netns.is_empty() || override_set || !req.command.per_attachment() {
        return Ok(());
    }
    let ns = match NetNs::open(&req.netns) {
        Ok(ns) => ns,
        // DEL tolerates a vanished namespace; ADD/CHECK report it when they open it.
        Err(_) if req.command == Command::Del => return Ok(()),
        Err(e) => return Err(e),
    };
    if ns.is_current()? {
        return Err(CniError::InvalidNetns {
            path: req.netns.clone(),
            reason: "is the plugin's own network namespace; set CNI_NETNS_OVERRIDE=1 to allow it".into(),
        });
    }
    Ok(())
}

fn about(plugin: &dyn Plugin) -> String {
    format!(
        "CNI {} plugin v{}\nCNI protocol versions supported: {}\n",
        plugin.name(),
        env!("CARGO_PKG_VERSION"),
        plugin.supported_versions().join(", ")
    )
}

/// Which checks of the request [`dispatch`] makes before the verb.
#[derive(Clone, Copy, PartialEq)]
enum Checks {
    All,
    /// All but the one of `CNI_NETNS` against the process's own namespace: for a delegation served
    /// in-process by a plugin whose own request, with the same environment, passed it.
    NetnsChecked,
}

fn dispatch(plugin: &dyn Plugin, req: &Request, env: &dyn Fn(&str) -> Option<String>, checks: Checks) -> Result<Option<String>, CniError> {
    if checks == Checks::All {
        let override_set =
            matches!(env("CNI_NETNS_OVERRIDE").map(|v| v.to_ascii_lowercase()).as_deref(), Some("1" | "true"));
        check_not_own_netns(req, override_set)?;
    }
    match req.command {
        Command::Add => plugin.add(req)?.to_json(&req.cni_version).map(Some),
        Command::Del => plugin.del(req).map(|_| None),
        Command::Check => plugin.check(req).map(|_| None),
        Command::Status => plugin.status(req).map(|_| None),
        Command::Gc => plugin.gc(req).map(|_| None),
        Command::Version => Ok(None),
    }
}

/// One line in the operator log, when one is configured (see [`crate::oplog`]) in `conf` (the
/// config on stdin, if it is JSON) or the environment.
fn log_operation(
    plugin: &dyn Plugin,
    env: &dyn Fn(&str) -> Option<String>,
    conf: Option<&Value>,
    took: std::time::Duration,
    outcome: &Result<Option<String>, CniError>,
) {
    let Some(path) = crate::oplog::target(conf, env(crate::oplog::ENV)) else { return };
    let env = |k: &str| env(k).unwrap_or_default();
    let network = conf.and_then(|c| c.get("name")).and_then(Value::as_str).unwrap_or_default();
    let entry = crate::oplog::Entry {
        plugin: plugin.name(),
        command: &env("CNI_COMMAND"),
        network,
        container_id: &env("CNI_CONTAINERID"),
        ifname: &env("CNI_IFNAME"),
        error: outcome.as_ref().err().map(|e| (e.code(), e.to_string())),
        duration: took,
    };
    crate::oplog::append(&path, &entry);
}

/// What one invocation printed on stdout, and its exit status.
#[derive(Debug)]
pub struct Served {
    /// 0 on success, 1 when `stdout` holds an error object.
    pub code: i32,
    /// The result, the VERSION reply or the error object, with its newline; empty for a
    /// successful DEL, CHECK, STATUS or GC.
    pub stdout: String,
}

/// One invocation of `plugin`, from its environment (`env`) and config (`stdin`) to what it prints:
/// everything a plugin process does between reading stdin and writing stdout, including the
/// operator log line. [`run`] is this for the process; [`crate::invoke`] also uses it to run a
/// plugin linked into the caller in place of an exec of the same build of it.
pub fn serve(plugin: &dyn Plugin, env: &dyn Fn(&str) -> Option<String>, stdin: Vec<u8>) -> Served {
    serve_with(plugin, env, stdin, Checks::All)
}

/// [`serve`] for a delegation served in-process ([`crate::invoke`]) by a plugin whose own request
/// passed the check of `CNI_NETNS` against the process's own namespace: the same environment in
/// the same process, so the delegated request is not checked again (~0.04 ms of `/proc` lookups).
pub fn serve_delegated(plugin: &dyn Plugin, env: &dyn Fn(&str) -> Option<String>, stdin: Vec<u8>) -> Served {
    serve_with(plugin, env, stdin, Checks::NetnsChecked)
}

fn serve_with(plugin: &dyn Plugin, env: &dyn Fn(&str) -> Option<String>, stdin: Vec<u8>, checks: Checks) -> Served {
    let started = std::time::Instant::now();
    let input = Input { env, stdin: stdin.clone() };
    let (outcome, req) = match parse_request(input, plugin.supported_versions(), plugin.known_args()) {
        Err(e) => (Err(e), None),
        Ok(Parsed::Version(v)) => (Ok(Some(v.to_string())), None),
        Ok(Parsed::Request(req)) => {
            let res = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| dispatch(plugin, &req, env, checks)));
            let outcome = res.unwrap_or_else(|p| {
                let what = p
                    .downcast_ref::<&str>()
                    .map(|s| s.to_string())
                    .or_else(|| p.downcast_ref::<String>().cloned())
                    .unwrap_or_default();
                Err(CniError::Internal(format!("plugin panicked: {what}")))
            });
            (outcome, Some(req))
        }
    };
    // The config as the request parsed it; parsed here only when there is no request.
    let conf = req.map(|r| r.raw).or_else(|| serde_json::from_slice(&stdin).ok());
    conclude(plugin, env, conf.as_ref(), &stdin, started, outcome)
}

/// Log the operation and lay out what it prints.
fn conclude(
    plugin: &dyn Plugin,
    env: &dyn Fn(&str) -> Option<String>,
    conf: Option<&Value>,
    stdin: &[u8],
    started: std::time::Instant,
    outcome: Result<Option<String>, CniError>,
) -> Served {
    log_operation(plugin, env, conf, started.elapsed(), &outcome);
    match outcome {
        Ok(text) => Served { code: 0, stdout: text.map(|t| t + "\n").unwrap_or_default() },
        Err(e) => Served { code: 1, stdout: e.to_json(&error_version(stdin)) + "\n" },
    }
}

/// The process entry point of a plugin binary, called from the C `main` that [`crate::plugin_main`]
/// defines. The plugins skip Rust's own start-up (their crates are `no_main`): it cost ~0.1 ms per
/// process on the benchmark VM, mostly an alternate signal stack mapped (and unmapped) for the main
/// thread and for every thread spawned, and the page faults of its code. Of what it does, this
/// keeps what a plugin relies on: file descriptors 0–2 open (on `/dev/null` if the runtime closed
/// one, so that no socket or file takes its place), `SIGPIPE` ignored (a closed pipe is an error,
/// not the end of the process), and exit status 101 for a panic outside a verb (a verb's panic is
/// an error object, see [`serve`]). A stack overflow ends the process with `SIGSEGV` and no message.
pub fn process_main(plugin: &dyn Plugin) -> i32 {
    keep_std_fds_open();
    // SAFETY: setting a signal's disposition to "ignore" has no preconditions.
    unsafe { libc::signal(libc::SIGPIPE, libc::SIG_IGN) };
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| run(plugin))).unwrap_or(101)
}

/// Open `/dev/null` on any of the descriptors 0–2 that is closed.
fn keep_std_fds_open() {
    let mut fds = [0, 1, 2].map(|fd| libc::pollfd { fd, events: 0, revents: 0 });
    // SAFETY: `fds` is a valid array of three pollfd; a zero timeout does not block.
    if unsafe { libc::poll(fds.as_mut_ptr(), 3, 0) } < 0 {
        return;
    }
    for p in fds {
        if p.revents & libc::POLLNVAL != 0 {
            // The lowest free descriptor: the closed one. Kept open for the process's life.
            // SAFETY: a NUL-terminated path and plain flags.
            unsafe { libc::open(c"/dev/null".as_ptr(), libc::O_RDWR) };
        }
    }
}

/// The C `main` of a plugin binary whose crate is `no_main` (`#![cfg_attr(not(test), no_main)]`):
/// runs `$setup` (if given), then [`skel::process_main`](crate::skel::process_main) with `$plugin`.
/// (In a test build the crate has its test harness's `main`, and this is an unused function.)
#[macro_export]
macro_rules! plugin_main {
    ($plugin:expr $(, $setup:block)?) => {
        #[cfg_attr(not(test), no_mangle)]
        #[cfg_attr(test, allow(dead_code))]
        pub extern "C" fn main(_argc: ::std::ffi::c_int, _argv: *const *const ::std::ffi::c_char) -> ::std::ffi::c_int {
            $($setup)?
            $crate::skel::process_main(&$plugin)
        }
    };
}

/// Run `plugin` as the process: returns the exit code after printing the result or error object.
pub fn run(plugin: &dyn Plugin) -> i32 {
    if std::env::var_os("CNI_COMMAND").is_none() {
        eprint!("{}", about(plugin));
        return 0;
    }
    let started = std::time::Instant::now();
    let env = |k: &str| std::env::var(k).ok();
    let mut stdin = Vec::new();
    // Read one byte more than the limit so an oversized config is detected without reading it all.
    let served = match std::io::stdin().lock().take(MAX_STDIN as u64 + 1).read_to_end(&mut stdin) {
        Ok(_) => serve(plugin, &env, stdin),
        Err(e) => {
            let conf = serde_json::from_slice(&stdin).ok();
            conclude(plugin, &env, conf.as_ref(), &stdin, started, Err(CniError::Io(format!("reading config from stdin: {e}"))))
        }
    };
    let mut out = std::io::stdout().lock();
    let _ = out.write_all(served.stdout.as_bytes());
    let _ = out.flush();
    served.code
}

#[cfg(test)]
mod tests;
