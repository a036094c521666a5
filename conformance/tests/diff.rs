//! The differential harness itself, independent of our plugins: reference against reference must be
//! equivalent; two different fake plugins must show mismatches.

mod common;

use std::path::Path;

use common::REF_DIR;
use conformance::diff::{self, Case, Normalize, Outcome, Step};
use conformance::{require_root, Sandbox};
use serde_json::json;

fn loopback_case() -> Case {
    Case::new("ref-vs-ref", json!({"cniVersion": "1.0.0", "name": "lo-diff", "plugins": [{"type": "loopback"}]}))
        .containers(2)
        .snapshot(diff::combine(vec![
            ("c0", diff::ip_in_container(&["addr", "show", "lo"])),
            ("c1", diff::ip_in(diff::Target::Container(1), &["link", "show", "lo"])),
        ]))
        .steps([
            Step::add(),
            Step::add().on(1),
            Step::check(),
            Step::raw_with_runtime_env("CHECK", r#"{"cniVersion":"1.0.0","name":"lo-diff","type":"loopback"}"#)
                .label("raw CHECK"),
            Step::gc([1]),
            Step::in_container(&["ip", "link", "set", "lo", "down"]).on(1),
            Step::check().on(1).label("CHECK c1 with lo down"),
            Step::del().on(1),
            Step::custom("cache files", |env| {
                Ok(json!(env.runtime.cached_attachments("lo-diff").map_err(|e| e.to_string())?.len()))
            }),
        ])
}

#[test]
fn reference_against_itself_is_equivalent() {
    require_root();
    let report = diff::run_case(&loopback_case(), Path::new(REF_DIR), Path::new(REF_DIR)).unwrap();
    report.assert_equivalent(&Normalize::new());
    let r = &report.reference;
    // ADD result mentions the side's own netns path, masked to <netns>
    let add = r.steps[0].outcome.value().unwrap();
    assert_ne!(add["interfaces"][0]["sandbox"], "<netns>");
    assert_eq!(r.normalize(add, &Normalize::new())["interfaces"][0]["sandbox"], "<netns>");
    assert_eq!(r.normalize(r.steps[1].outcome.value().unwrap(), &Normalize::new())["interfaces"][0]["sandbox"], "<netns1>");
    // raw CHECK with the step's env succeeded, GC kept only container 1, CHECK on c1 with lo down failed
    assert!(r.steps[3].outcome.is_ok(), "{:?}", r.steps[3].outcome);
    assert!(!r.steps[6].outcome.is_ok());
    assert_eq!(r.steps[8].outcome, Outcome::Ok(json!(0)));
    // the initial snapshot shows lo down, after ADD up
    assert!(r.initial["c0"][0]["flags"].as_array().unwrap().iter().all(|f| f != "UP"));
    assert!(r.steps[0].snapshot["c0"][0]["flags"].as_array().unwrap().iter().any(|f| f == "UP"));
}

#[test]
fn differences_are_reported() {
    require_root();
    // Two fake plugin dirs whose "loopback" differs: one succeeds, one fails.
    let sb = Sandbox::new().unwrap();
    let (good, _) = common::fake_plugins(&sb, &["loopback"]);
    let bad = sb.tempdir().join("bad");
    std::fs::create_dir_all(&bad).unwrap();
    std::fs::copy(good.join("loopback"), bad.join("loopback")).unwrap();
    std::fs::write(
        bad.join("loopback"),
        "#!/bin/sh\ncat >/dev/null\necho '{\"code\":7,\"msg\":\"no\"}'\nexit 1\n",
    )
    .unwrap();
    let case = Case::new("fake", json!({"cniVersion": "1.1.0", "name": "f", "plugins": [{"type": "loopback"}]}))
        .steps([Step::add(), Step::status()]);
    let report = diff::run_case(&case, &good, &bad).unwrap();
    let m = report.mismatches(&Normalize::new());
    assert_eq!(m.len(), 2, "{m:?}");
    assert_eq!(m[0].what, "outcome");
    assert_eq!(report.reference.steps[0].outcome.code(), Some(7));
    let panic = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| report.assert_equivalent(&Normalize::new()))).unwrap_err();
    let text = panic.downcast_ref::<String>().unwrap();
    assert!(text.contains("outcome differs at step 0 (ADD)"), "{text}");
    // a missing binary is a clear panic, not a confusing failure
    let missing = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| diff::run_case(&case, Path::new("/nonexistent"), &bad))).unwrap_err();
    let text = missing.downcast_ref::<String>().unwrap();
    assert!(text.contains("run `cargo build --workspace` first"), "{text}");
}

#[test]
fn normalize_masks_macs_when_asked() {
    let v = json!({"interfaces": [{"name": "veth0", "mac": "0a:58:0a:f4:00:01"}]});
    assert_eq!(diff::normalize(&v, &Normalize::new()), v);
    assert_eq!(diff::normalize(&v, &Normalize::new().mask_macs())["interfaces"][0]["mac"], "<mac>");
}
