//! Differential harness: the same steps against our plugins and the reference plugins, each side in
//! its own [`Sandbox`], recording every step's outcome and a state snapshot after it.
//!
//! A plugin's tests add [`Case`]s, not harnesses:
//!
//! ```no_run
//! use conformance::diff::{self, Case, Normalize, Step};
//! let case = Case::new("loopback-basic", serde_json::json!({
//!         "cniVersion": "1.0.0", "name": "lo-net", "plugins": [{"type": "loopback"}]}))
//!     .snapshot(diff::ip_in_container(&["addr", "show", "lo"]))
//!     .steps([Step::add(), Step::check(), Step::del()]);
//! let report = diff::run(&case).unwrap();
//! report.assert_equivalent(&Normalize::new());
//! ```
//!
//! Strings in the conflist, runtime conf, raw configs and raw env may use placeholders, substituted
//! per side: `{{netns}}` (the step's container netns path), `{{netnsN}}` (container N), `{{host}}` (the
//! sandbox host netns path), `{{tmp}}` (the sandbox's private dir, e.g. for an IPAM `dataDir`),
//! `{{cid}}` and `{{ifname}}` (the step's container id and interface name). Container ids come from
//! the case's runtime conf template (container N > 0 gets `<id>-N`) and are the same on both sides;
//! side-specific strings (netns paths and names, temp dir) are masked in the comparison.

mod normalize;
mod report;
mod run;

use std::sync::Arc;

use serde_json::Value;

use crate::runner::{NetworkConfigList, Runtime, RuntimeConf};
use crate::sandbox::{ContainerNs, Sandbox};

pub use normalize::{is_mac, normalize, Normalize};
pub use report::{DiffReport, Mismatch, Outcome, SideReport, StepRecord};
pub use run::{run, run_case, DiffError};

/// Which implementation a side runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub enum Side {
    Ours,
    Reference,
}

/// Where a command runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    Host,
    Container(usize),
}

/// A state snapshot taken after every step (and once before the first).
pub type Snapshot = Arc<dyn Fn(&SideEnv) -> Value + Send + Sync>;
/// A case-specific action; its `Ok` value or `Err` message is the step's outcome.
pub type CustomAction = Arc<dyn Fn(&SideEnv) -> Result<Value, String> + Send + Sync>;

/// What a step does.
#[derive(Clone)]
pub enum Action {
    /// `add_list` for the step's container.
    Add,
    Check,
    Del,
    /// `gc_list` with the listed containers (their attachments on the step's ifname) as valid.
    Gc { valid: Vec<usize> },
    Status,
    /// `exec_plugin` with raw bytes and exactly this env (plus `CNI_COMMAND`/`CNI_PATH`); `plugin`
    /// defaults to the first plugin of the list.
    Raw { plugin: Option<String>, command: String, config: Vec<u8>, env: Vec<(String, String)> },
    /// A command (argv) inside a namespace of the side's sandbox, e.g. `ip link set lo down`.
    Exec { target: Target, argv: Vec<String> },
    Custom(CustomAction),
}

impl std::fmt::Debug for Action {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Action::Add => write!(f, "ADD"),
            Action::Check => write!(f, "CHECK"),
            Action::Del => write!(f, "DEL"),
            Action::Gc { valid } => write!(f, "GC valid={valid:?}"),
            Action::Status => write!(f, "STATUS"),
            Action::Raw { plugin, command, config, .. } => {
                write!(f, "raw {command} {} ({} bytes)", plugin.as_deref().unwrap_or("<first>"), config.len())
            }
            Action::Exec { target, argv } => write!(f, "exec in {target:?}: {}", argv.join(" ")),
            Action::Custom(_) => write!(f, "custom"),
        }
    }
}

/// One step of a case.
#[derive(Debug, Clone)]
pub struct Step {
    pub label: String,
    pub action: Action,
    /// Index of the container the step is about.
    pub container: usize,
    /// Interface name override (default: the case's runtime conf ifname).
    pub ifname: Option<String>,
}

impl Step {
    pub fn new(action: Action) -> Step {
        Step { label: format!("{action:?}"), action, container: 0, ifname: None }
    }

    pub fn add() -> Step {
        Step::new(Action::Add)
    }

    pub fn check() -> Step {
        Step::new(Action::Check)
    }

    pub fn del() -> Step {
        Step::new(Action::Del)
    }

    pub fn status() -> Step {
        Step::new(Action::Status)
    }

    pub fn gc(valid: impl IntoIterator<Item = usize>) -> Step {
        Step::new(Action::Gc { valid: valid.into_iter().collect() })
    }

    /// Raw invocation of the list's first plugin with exactly `env` (placeholders allowed).
    pub fn raw(command: &str, config: impl Into<Vec<u8>>, env: &[(&str, &str)]) -> Step {
        Step::new(Action::Raw {
            plugin: None,
            command: command.into(),
            config: config.into(),
            env: env.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
        })
    }

    /// Raw invocation with the usual `CNI_CONTAINERID`/`CNI_NETNS`/`CNI_IFNAME` of the step's container.
    pub fn raw_with_runtime_env(command: &str, config: impl Into<Vec<u8>>) -> Step {
        Step::raw(
            command,
            config,
            &[("CNI_CONTAINERID", "{{cid}}"), ("CNI_NETNS", "{{netns}}"), ("CNI_IFNAME", "{{ifname}}")],
        )
    }

    /// Run `argv` in the step's container (see [`Step::on`]).
    pub fn in_container(argv: &[&str]) -> Step {
        Step::new(Action::Exec { target: Target::Container(0), argv: argv.iter().map(|s| s.to_string()).collect() })
    }

    pub fn in_host(argv: &[&str]) -> Step {
        Step::new(Action::Exec { target: Target::Host, argv: argv.iter().map(|s| s.to_string()).collect() })
    }

    pub fn custom(label: &str, f: impl Fn(&SideEnv) -> Result<Value, String> + Send + Sync + 'static) -> Step {
        Step { label: label.into(), ..Step::new(Action::Custom(Arc::new(f))) }
    }

    /// Target container `idx` (also moves an `in_container` command there).
    pub fn on(mut self, idx: usize) -> Step {
        self.container = idx;
        if let Action::Exec { target: t @ Target::Container(_), .. } = &mut self.action {
            *t = Target::Container(idx);
        }
        self
    }

    pub fn plugin(mut self, plugin_type: &str) -> Step {
        if let Action::Raw { plugin, .. } = &mut self.action {
            *plugin = Some(plugin_type.into());
        }
        self
    }

    pub fn ifname(mut self, name: &str) -> Step {
        self.ifname = Some(name.into());
        self
    }

    pub fn label(mut self, label: &str) -> Step {
        self.label = label.into();
        self
    }
}

/// A differential test case.
#[derive(Clone)]
pub struct Case {
    pub name: String,
    /// The conflist (placeholders allowed in strings).
    pub conflist: Value,
    /// Template runtime conf: `netns` is ignored (each container's path is used).
    pub rc: RuntimeConf,
    /// How many container namespaces each side gets.
    pub containers: usize,
    pub steps: Vec<Step>,
    pub snapshot: Option<Snapshot>,
    /// Runs once per side before the first snapshot (e.g. create a pre-existing bridge in the host).
    pub setup: Option<CustomAction>,
}

impl Case {
    /// A case with one container, container id `diff-<name>` and ifname `eth0`.
    pub fn new(name: &str, conflist: Value) -> Case {
        let cid: String =
            format!("diff-{name}").chars().map(|c| if c.is_ascii_alphanumeric() || c == '-' { c } else { '-' }).collect();
        Case {
            name: name.into(),
            conflist,
            rc: RuntimeConf::new(cid, "", "eth0"),
            containers: 1,
            steps: Vec::new(),
            snapshot: None,
            setup: None,
        }
    }

    pub fn rc(mut self, rc: RuntimeConf) -> Case {
        self.rc = rc;
        self
    }

    pub fn containers(mut self, n: usize) -> Case {
        self.containers = n.max(1);
        self
    }

    pub fn step(mut self, s: Step) -> Case {
        self.steps.push(s);
        self
    }

    pub fn steps(mut self, s: impl IntoIterator<Item = Step>) -> Case {
        self.steps.extend(s);
        self
    }

    pub fn snapshot(mut self, f: Snapshot) -> Case {
        self.snapshot = Some(f);
        self
    }

    pub fn setup(mut self, f: impl Fn(&SideEnv) -> Result<Value, String> + Send + Sync + 'static) -> Case {
        self.setup = Some(Arc::new(f));
        self
    }

    /// Plugin types the case needs: each plugin's `type` and `ipam.type`.
    pub fn plugin_types(&self) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        for p in self.conflist["plugins"].as_array().into_iter().flatten() {
            for t in [&p["type"], &p["ipam"]["type"]] {
                if let Some(t) = t.as_str() {
                    if !out.iter().any(|o| o == t) {
                        out.push(t.to_string());
                    }
                }
            }
        }
        out
    }
}

/// What a side's actions and snapshots see.
pub struct SideEnv<'a> {
    pub side: Side,
    pub sandbox: &'a Sandbox,
    pub containers: &'a [ContainerNs],
    pub runtime: &'a Runtime,
    pub list: &'a NetworkConfigList,
    /// Runtime conf of each container (same index as `containers`).
    pub rcs: &'a [RuntimeConf],
}

impl SideEnv<'_> {
    /// Container `idx`; panics if the case has fewer containers (a bug in the case).
    pub fn container(&self, idx: usize) -> &ContainerNs {
        &self.containers[idx]
    }
}

/// Snapshot: `ip -j ARGS` in container 0 (`{"error": ...}` if it fails).
pub fn ip_in_container(args: &[&str]) -> Snapshot {
    ip_in(Target::Container(0), args)
}

/// Snapshot: `ip -j ARGS` in the sandbox host.
pub fn ip_in_host(args: &[&str]) -> Snapshot {
    ip_in(Target::Host, args)
}

/// Snapshot: `ip -j ARGS` in `target`.
pub fn ip_in(target: Target, args: &[&str]) -> Snapshot {
    let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    Arc::new(move |env: &SideEnv| {
        let ns = match target {
            Target::Host => env.sandbox.host(),
            Target::Container(i) => env.container(i),
        };
        ns.ip_json(&args).unwrap_or_else(|e| serde_json::json!({ "error": e.to_string() }))
    })
}

/// Several snapshots as one object `{name: snapshot}`.
pub fn combine(parts: Vec<(&str, Snapshot)>) -> Snapshot {
    let parts: Vec<(String, Snapshot)> = parts.into_iter().map(|(n, s)| (n.to_string(), s)).collect();
    Arc::new(move |env: &SideEnv| {
        Value::Object(parts.iter().map(|(n, s)| (n.clone(), s(env))).collect())
    })
}
