//! Running a case on one side.

use std::path::Path;

use serde_json::Value;

use super::report::{DiffReport, Outcome, SideReport, StepRecord};
use super::{Action, Case, Side, SideEnv, Step, Target};
use crate::plugins::{our_plugin_dir, require_plugins, REFERENCE_PLUGIN_DIR};
use crate::runner::{Attachment, NetworkConfigList, RunError, RuntimeConf};
use crate::sandbox::{Sandbox, SandboxError};

#[derive(Debug, thiserror::Error)]
pub enum DiffError {
    #[error("{side:?} side: sandbox: {source}")]
    Sandbox { side: Side, source: SandboxError },
    #[error("{side:?} side: conflist: {source}")]
    Conflist { side: Side, source: RunError },
    #[error("{side:?} side: setup: {reason}")]
    Setup { side: Side, reason: String },
}

/// [`run_case`] with our plugin dir ([`our_plugin_dir`]) against the reference dir (/usr/lib/cni).
pub fn run(case: &Case) -> Result<DiffReport, DiffError> {
    run_case(case, &our_plugin_dir(), Path::new(REFERENCE_PLUGIN_DIR))
}

/// Run `case` against the plugins in `ours` and in `reference`, each in a fresh sandbox, one after
/// the other. Panics with a clear message if a plugin binary the case needs is missing.
pub fn run_case(case: &Case, ours: &Path, reference: &Path) -> Result<DiffReport, DiffError> {
    let types = case.plugin_types();
    let types: Vec<&str> = types.iter().map(String::as_str).collect();
    require_plugins(ours, &types);
    require_plugins(reference, &types);
    Ok(DiffReport {
        case: case.name.clone(),
        ours: run_side(case, Side::Ours, ours)?,
        reference: run_side(case, Side::Reference, reference)?,
    })
}

/// Placeholder values of one side, for the step's container.
struct Vars(Vec<(String, String)>);

impl Vars {
    fn subst(&self, s: &str) -> String {
        let mut s = s.to_string();
        for (k, v) in &self.0 {
            s = s.replace(k.as_str(), v);
        }
        s
    }

    fn subst_json(&self, v: &Value) -> Value {
        match v {
            Value::String(s) => Value::String(self.subst(s)),
            Value::Array(a) => Value::Array(a.iter().map(|x| self.subst_json(x)).collect()),
            Value::Object(o) => Value::Object(o.iter().map(|(k, x)| (k.clone(), self.subst_json(x))).collect()),
            other => other.clone(),
        }
    }

    fn subst_bytes(&self, b: &[u8]) -> Vec<u8> {
        match std::str::from_utf8(b) {
            Ok(s) => self.subst(s).into_bytes(),
            Err(_) => b.to_vec(),
        }
    }
}

fn run_side(case: &Case, side: Side, plugin_dir: &Path) -> Result<SideReport, DiffError> {
    let sb_err = |source| DiffError::Sandbox { side, source };
    let sandbox = Sandbox::new().map_err(sb_err)?;
    let containers = (0..case.containers).map(|_| sandbox.container()).collect::<Result<Vec<_>, _>>().map_err(sb_err)?;
    let runtime = sandbox.runtime(plugin_dir);

    let mut base = vec![
        ("{{host}}".to_string(), sandbox.host_path().display().to_string()),
        ("{{tmp}}".to_string(), sandbox.tempdir().display().to_string()),
    ];
    for (i, c) in containers.iter().enumerate() {
        base.push((format!("{{{{netns{i}}}}}"), c.path().display().to_string()));
    }
    let base_vars = Vars(base.clone());
    let rcs: Vec<RuntimeConf> = containers
        .iter()
        .enumerate()
        .map(|(i, c)| {
            let mut rc = case.rc.clone();
            if i > 0 {
                rc.container_id = format!("{}-{i}", rc.container_id);
            }
            rc.netns = c.path().display().to_string();
            rc.args = rc.args.iter().map(|(k, v)| (k.clone(), base_vars.subst(v))).collect();
            if let Value::Object(m) = base_vars.subst_json(&Value::Object(rc.capability_args.clone())) {
                rc.capability_args = m;
            }
            rc
        })
        .collect();
    let list = NetworkConfigList::from_json(&base_vars.subst_json(&case.conflist))
        .map_err(|source| DiffError::Conflist { side, source })?;

    // Masks for what differs between the sides: longest strings first.
    let mut replacements = vec![(sandbox.tempdir().display().to_string(), "<tmp>".to_string())];
    for (i, c) in containers.iter().enumerate() {
        let tag = if i == 0 { String::new() } else { i.to_string() };
        replacements.push((c.path().display().to_string(), format!("<netns{tag}>")));
        replacements.push((c.name().to_string(), format!("<container{tag}>")));
    }
    replacements.push((sandbox.host_path().display().to_string(), "<host-netns>".into()));
    replacements.push((sandbox.host_name().to_string(), "<host>".into()));
    replacements.push((sandbox.id().to_string(), "<sandbox>".into()));

    let env = SideEnv { side, sandbox: &sandbox, containers: &containers, runtime: &runtime, list: &list, rcs: &rcs };
    if let Some(setup) = &case.setup {
        setup(&env).map_err(|reason| DiffError::Setup { side, reason })?;
    }
    let snap = |env: &SideEnv| case.snapshot.as_ref().map_or(Value::Null, |f| f(env));
    let initial = snap(&env);
    let mut steps = Vec::new();
    for step in &case.steps {
        let outcome = run_step(&env, step, &base);
        steps.push(StepRecord { label: step.label.clone(), outcome, snapshot: snap(&env) });
    }
    Ok(SideReport { side, plugin_dir: plugin_dir.to_path_buf(), replacements, initial, steps })
}

fn run_step(env: &SideEnv, step: &Step, base: &[(String, String)]) -> Outcome {
    let Some(rc0) = env.rcs.get(step.container) else {
        return Outcome::error(format!("step {:?}: no container {}", step.label, step.container));
    };
    let mut rc = rc0.clone();
    if let Some(ifname) = &step.ifname {
        rc.ifname = ifname.clone();
    }
    let mut vars = vec![
        ("{{netns}}".to_string(), rc.netns.clone()),
        ("{{cid}}".to_string(), rc.container_id.clone()),
        ("{{ifname}}".to_string(), rc.ifname.clone()),
    ];
    vars.extend(base.iter().cloned());
    let vars = Vars(vars);
    let rt = env.runtime;
    match &step.action {
        Action::Add => rt.add_list(env.list, &rc).into(),
        Action::Check => rt.check_list(env.list, &rc).map(|()| Value::Null).into(),
        Action::Del => rt.del_list(env.list, &rc).map(|()| Value::Null).into(),
        Action::Status => rt.status_list(env.list).map(|()| Value::Null).into(),
        Action::Gc { valid } => {
            let valid: Vec<Attachment> = valid
                .iter()
                .filter_map(|i| env.rcs.get(*i))
                .map(|r| Attachment::new(r.container_id.clone(), rc.ifname.clone()))
                .collect();
            rt.gc_list(env.list, &valid).map(|()| Value::Null).into()
        }
        Action::Raw { plugin, command, config, env: raw_env } => {
            let plugin = plugin.clone().unwrap_or_else(|| env.list.plugin_type(0).to_string());
            let raw_env: Vec<(String, String)> = raw_env.iter().map(|(k, v)| (k.clone(), vars.subst(v))).collect();
            let raw_env: Vec<(&str, &str)> = raw_env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
            match rt.exec_plugin(&plugin, command, &vars.subst_bytes(config), &raw_env) {
                Ok(out) => Outcome::from_output(&out),
                Err(e) => Outcome::from_run_error(&e),
            }
        }
        Action::Exec { target, argv } => {
            let ns = match target {
                Target::Host => env.sandbox.host(),
                Target::Container(i) => match env.containers.get(*i) {
                    Some(c) => c,
                    None => return Outcome::error(format!("no container {i}")),
                },
            };
            let Some((prog, args)) = argv.split_first() else {
                return Outcome::error("empty command");
            };
            let args: Vec<String> = args.iter().map(|a| vars.subst(a)).collect();
            match ns.run(prog, &args) {
                Ok(out) if out.status.success() => Outcome::Ok(Value::String(String::from_utf8_lossy(&out.stdout).into())),
                Ok(out) => Outcome::Failed {
                    code: None,
                    exit_code: out.status.code(),
                    msg: String::from_utf8_lossy(&out.stderr).trim().to_string(),
                    stdout: String::from_utf8_lossy(&out.stdout).into(),
                },
                Err(e) => Outcome::error(e.to_string()),
            }
        }
        Action::Custom(f) => match f(env) {
            Ok(v) => Outcome::Ok(v),
            Err(msg) => Outcome::error(msg),
        },
    }
}
