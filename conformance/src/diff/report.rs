//! What each side did, and the comparison.

use std::path::PathBuf;

use serde_json::{json, Value};

use super::normalize::{normalize, Normalize};
use super::Side;
use crate::runner::{PluginOutput, RunError};

/// A step's outcome.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// Success: the ADD result, stdout of a raw call (JSON if it parses, else a string), a command's
    /// stdout, a custom value; `Null` for DEL/CHECK/GC/STATUS.
    Ok(Value),
    /// Failure: the plugin's error code when it printed an error object, its exit code, the message.
    Failed { code: Option<u32>, exit_code: Option<i32>, msg: String, stdout: String },
}

impl Outcome {
    pub(crate) fn error(msg: impl Into<String>) -> Outcome {
        Outcome::Failed { code: None, exit_code: None, msg: msg.into(), stdout: String::new() }
    }

    pub fn is_ok(&self) -> bool {
        matches!(self, Outcome::Ok(_))
    }

    /// The success value, if any.
    pub fn value(&self) -> Option<&Value> {
        match self {
            Outcome::Ok(v) => Some(v),
            Outcome::Failed { .. } => None,
        }
    }

    /// The CNI error code of a failure, if the plugin printed one.
    pub fn code(&self) -> Option<u32> {
        match self {
            Outcome::Failed { code, .. } => *code,
            Outcome::Ok(_) => None,
        }
    }

    pub(crate) fn from_output(out: &PluginOutput) -> Outcome {
        let stdout = out.json().unwrap_or_else(|| Value::String(out.stdout_str()));
        if out.success() {
            return Outcome::Ok(if out.stdout.is_empty() { Value::Null } else { stdout });
        }
        let err = out.error_object();
        Outcome::Failed {
            code: err.as_ref().map(|e| e.code),
            exit_code: out.exit_code(),
            msg: err.map_or_else(|| out.stderr_str().trim().to_string(), |e| e.to_string()),
            stdout: out.stdout_str(),
        }
    }

    pub(crate) fn from_run_error(e: &RunError) -> Outcome {
        match e.plugin_failure() {
            Some(p) => Outcome::Failed {
                code: p.error.as_ref().map(|o| o.code),
                exit_code: p.exit_code,
                msg: e.to_string(),
                stdout: p.stdout.clone(),
            },
            None => Outcome::error(e.to_string()),
        }
    }

    /// As JSON (for reports): `{"ok": value}` or `{"error": {...}}`.
    pub fn to_json(&self) -> Value {
        match self {
            Outcome::Ok(v) => json!({ "ok": v }),
            Outcome::Failed { code, exit_code, msg, .. } => json!({ "error": { "code": code, "exit": exit_code, "msg": msg } }),
        }
    }

    /// The form compared between sides: the normalized value, or "failed" (+ code when asked).
    fn comparable(&self, side: &SideReport, opts: &Normalize) -> Value {
        match self {
            Outcome::Ok(v) => json!({ "ok": side.normalize(v, opts) }),
            Outcome::Failed { code, .. } if opts.error_codes => json!({ "failed": { "code": code } }),
            Outcome::Failed { .. } => json!("failed"),
        }
    }
}

impl<E: std::borrow::Borrow<RunError>> From<Result<Value, E>> for Outcome {
    fn from(r: Result<Value, E>) -> Outcome {
        match r {
            Ok(v) => Outcome::Ok(v),
            Err(e) => Outcome::from_run_error(e.borrow()),
        }
    }
}

/// One step on one side.
#[derive(Debug, Clone, PartialEq)]
pub struct StepRecord {
    pub label: String,
    pub outcome: Outcome,
    /// The case's snapshot right after the step (`Null` without a snapshot).
    pub snapshot: Value,
}

/// Everything one side did.
#[derive(Debug, Clone, PartialEq)]
pub struct SideReport {
    pub side: Side,
    pub plugin_dir: PathBuf,
    /// Side-specific strings and their masks (netns paths and names, temp dir), applied first.
    pub replacements: Vec<(String, String)>,
    /// Snapshot before the first step.
    pub initial: Value,
    pub steps: Vec<StepRecord>,
}

impl SideReport {
    /// `v` with this side's masks, then `opts`.
    pub fn normalize(&self, v: &Value, opts: &Normalize) -> Value {
        let mut all = opts.clone();
        all.replacements = self.replacements.iter().cloned().chain(opts.replacements.iter().cloned()).collect();
        normalize(v, &all)
    }

    /// The outcome of the step labelled `label` (first match).
    pub fn step(&self, label: &str) -> Option<&StepRecord> {
        self.steps.iter().find(|s| s.label == label)
    }
}

/// A difference between the sides.
#[derive(Debug, Clone, PartialEq)]
pub struct Mismatch {
    /// Step index, `None` for the initial snapshot.
    pub step: Option<usize>,
    pub label: String,
    /// "outcome" or "snapshot".
    pub what: &'static str,
    pub ours: Value,
    pub reference: Value,
}

impl std::fmt::Display for Mismatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let pretty = |v: &Value| serde_json::to_string_pretty(v).unwrap_or_else(|_| v.to_string());
        let at = self.step.map_or_else(|| "before the first step".to_string(), |i| format!("at step {i} ({})", self.label));
        write!(f, "{} differs {at}\n--- ours:\n{}\n--- reference:\n{}", self.what, pretty(&self.ours), pretty(&self.reference))
    }
}

/// Both sides of a case.
#[derive(Debug, Clone, PartialEq)]
pub struct DiffReport {
    pub case: String,
    pub ours: SideReport,
    pub reference: SideReport,
}

impl DiffReport {
    /// Every difference after normalization: per step, the outcomes (success values compared after
    /// masking; failures compared as "failed", with codes if `opts.error_codes`) and the snapshots.
    pub fn mismatches(&self, opts: &Normalize) -> Vec<Mismatch> {
        let (o, r) = (&self.ours, &self.reference);
        let mut out = Vec::new();
        let (oi, ri) = (o.normalize(&o.initial, opts), r.normalize(&r.initial, opts));
        if oi != ri {
            out.push(Mismatch { step: None, label: "initial".into(), what: "snapshot", ours: oi, reference: ri });
        }
        for (i, (os, rs)) in o.steps.iter().zip(&r.steps).enumerate() {
            let (oo, ro) = (os.outcome.comparable(o, opts), rs.outcome.comparable(r, opts));
            if oo != ro {
                out.push(Mismatch {
                    step: Some(i),
                    label: os.label.clone(),
                    what: "outcome",
                    ours: os.outcome.to_json(),
                    reference: rs.outcome.to_json(),
                });
            }
            let (on, rn) = (o.normalize(&os.snapshot, opts), r.normalize(&rs.snapshot, opts));
            if on != rn {
                out.push(Mismatch { step: Some(i), label: os.label.clone(), what: "snapshot", ours: on, reference: rn });
            }
        }
        out
    }

    /// Panic with every mismatch, readable, unless the sides are equivalent.
    pub fn assert_equivalent(&self, opts: &Normalize) {
        let m = self.mismatches(opts);
        if !m.is_empty() {
            let text: Vec<String> = m.iter().map(|x| x.to_string()).collect();
            panic!("case {:?}: ours and the reference differ:\n\n{}", self.case, text.join("\n\n"));
        }
    }

    /// Outcomes of both sides for step `i`.
    pub fn outcomes(&self, i: usize) -> (&Outcome, &Outcome) {
        (&self.ours.steps[i].outcome, &self.reference.steps[i].outcome)
    }
}
