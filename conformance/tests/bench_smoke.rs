//! Smoke test of the benchmark library: a tiny run against our debug plugins must produce a sane
//! report and pass its post-run checks. Not a timed test: nothing here asserts on speed.

use conformance::bench::{self, Options, Scenario};
use conformance::plugins::our_plugins;

/// A file or directory of the test's own, removed when dropped (also when an assertion fails).
struct Removed(std::path::PathBuf);

impl Drop for Removed {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
        let _ = std::fs::remove_file(&self.0);
    }
}

/// Options for one round of `n` containers of the bridge scenario against our debug plugins.
fn tiny(n: usize) -> Options {
    conformance::require_root();
    let dir = our_plugins(&["bridge", "host-local"]);
    let mut opts = Options::new(Scenario::Bridge, &dir);
    opts.n = n;
    opts.rounds = 1;
    opts
}

#[test]
fn bench_bridge_tiny_run_reports_sane_numbers_and_leaves_nothing_behind() {
    let mut opts = tiny(3);
    opts.parallel = vec![1, 2];
    // scripts/deps.sh installs strace; without it the spawn sample fails and says so.
    opts.count_spawns = true;
    // Write back the file systems before each round, without the 5 s wait.
    opts.settle = Some(std::time::Duration::ZERO);
    let samples = Removed(std::env::temp_dir().join(format!("cnibench-smoke-{}.csv", std::process::id())));
    opts.samples_file = Some(samples.0.clone());
    let cache_base = Removed(std::env::temp_dir().join(format!("cnibench-smoke-cache-{}", std::process::id())));
    std::fs::create_dir_all(&cache_base.0).expect("cache base");
    opts.cache_dir = Some(cache_base.0.clone());
    opts.control = true;

    let report = bench::run(&opts).expect("benchmark run");
    let left: Vec<_> = std::fs::read_dir(&cache_base.0).expect("cache base").collect();
    assert!(left.is_empty(), "the rounds' result caches were not removed: {left:?}");
    let csv = std::fs::read_to_string(&samples.0).expect("samples file");
    let lines: Vec<&str> = csv.lines().collect();
    assert_eq!(lines.first(), Some(&"side,p,round,op,order,wall_ms,plugins,control_ms"), "{csv}");
    // Both worker counts, 3 ADDs and 3 DELs each, every one with its bridge exec and no other
    // (the control ADDs' execs are not the operation's).
    assert_eq!(lines.len(), 1 + 2 * 6, "{csv}");
    for p in ["1", "2"] {
        for op in ["ADD", "DEL"] {
            let rows: Vec<&&str> = lines.iter().filter(|l| l.starts_with(&format!("A,{p},1,{op},"))).collect();
            assert_eq!(rows.len(), 3, "P={p} {op}: {csv}");
            assert!(rows.iter().all(|l| l.matches("bridge:").count() == 1), "{csv}");
        }
    }
    // The control ADDs: at P=1 only, around the bucket (#1-3): 2 before its first ADD, 1 after
    // its last.
    let control = |l: &&str| l.rsplit(',').next().unwrap_or("").to_string();
    for l in lines.iter().skip(1) {
        let want = if l.starts_with("A,1,1,ADD,1,") {
            2
        } else if l.starts_with("A,1,1,ADD,3,") {
            1
        } else {
            0
        };
        assert_eq!(control(l).split(';').filter(|x| !x.is_empty()).count(), want, "{l}");
    }
    assert!(report.checks_passed(), "post-run checks failed:\n{}", report.violations.join("\n"));
    assert_eq!(report.n, 3);
    assert_eq!(report.sides.len(), 1);
    let side = &report.sides[0];
    assert_eq!(side.chain, vec!["bridge".to_string()]);
    assert!(side.binaries.iter().any(|b| b.name == "bridge" && b.bytes > 0), "{:?}", side.binaries);
    assert!(side.binaries.iter().any(|b| b.name == "host-local" && b.bytes > 0), "{:?}", side.binaries);
    {
        let spawns = side.spawns.as_ref().unwrap_or_else(|| panic!("spawn sample failed: {:?}", side.spawns_error));
        let add = spawns.iter().find(|c| c.plugin == "bridge" && c.command == "ADD").expect("bridge ADD sample");
        // Our host-local is in the directory: bridge runs that build of it in-process.
        assert_eq!(add.ipam, 0, "bridge executes no host-local of its own build: {add:?}");
        let del = spawns.iter().find(|c| c.plugin == "bridge" && c.command == "DEL").expect("bridge DEL sample");
        assert_eq!(del.ipam, 0, "{del:?}");
        assert!(side.own_rss.iter().any(|r| r.program == "bridge" && r.kib > 0), "{:?}", side.own_rss);
    }

    assert_eq!(report.runs.len(), 2);
    for run in &report.runs {
        assert!(run.ratios.is_none());
        let s = &run.sides[0];
        for (what, sum) in [("ADD", &s.add), ("DEL", &s.del)] {
            assert_eq!(sum.count, 3, "P={} {what}: {sum:?}", run.parallel);
            assert!(sum.p50_ms > 0.0 && sum.p50_ms <= sum.p90_ms, "{what}: {sum:?}");
            assert!(sum.p90_ms <= sum.p99_ms && sum.p99_ms <= sum.max_ms, "{what}: {sum:?}");
            assert!(sum.max_ms < 60_000.0, "{what}: {sum:?}");
        }
        let bridge = s.plugins.iter().find(|p| p.plugin == "bridge").expect("bridge stats");
        assert_eq!(bridge.add.count, 3);
        assert_eq!(bridge.del.count, 3);
        // A plugin exec cannot take longer than the chain around it.
        assert!(bridge.add.max_ms <= s.add.max_ms + 1e-6);
        assert!(bridge.rss_kib_p50 > 0 && bridge.rss_kib_p50 <= bridge.rss_kib_max);
        assert!(bridge.add_cpu_ms > 0.0);
        assert!(s.add_per_s > 0.0 && s.del_per_s > 0.0);
        assert!(s.cpu_per_add_ms > 0.0 && s.cpu_per_del_ms > 0.0);
        assert!(s.wait4_cpu_per_add_ms > 0.0);
        // The harness's own CPU is measured where the machine's is: not with control ADDs (P=1).
        assert_eq!(s.harness_cpu_per_add_ms.is_some(), run.parallel != 1, "P={}: {:?}", run.parallel, s.harness_cpu_per_add_ms);
        if let (Some(h), Some(m)) = (s.harness_cpu_per_add_ms, s.machine_cpu_per_add_ms) {
            assert!(h > 0.0 && h <= m, "harness {h} ms vs machine {m} ms per ADD");
        }
        assert_eq!(s.growth.len(), 1);
        assert_eq!((s.growth[0].from, s.growth[0].to), (1, 3));
        assert!(s.growth[0].add_p50_ms > 0.0);
        // The machine's speed is probed after the bucket's last ADD, at P=1 only.
        assert_eq!(s.growth[0].cpu_probe_p50_us.is_some(), run.parallel == 1, "P={}: {:?}", run.parallel, s.growth[0]);
        assert_eq!(s.rounds[0].cpu_probe_first_last_us.is_some(), run.parallel == 1, "P={}: {:?}", run.parallel, s.rounds[0]);
        if let Some(us) = s.growth[0].cpu_probe_p50_us {
            assert!(us > 0.0 && us < 1e6, "CPU probe {us} us");
        }
        // So are the control ADDs run.
        assert_eq!(s.growth[0].control_add_p50_ms.is_some(), run.parallel == 1, "P={}: {:?}", run.parallel, s.growth[0]);
        assert_eq!(s.rounds[0].control_first_last_ms.is_some(), run.parallel == 1, "P={}: {:?}", run.parallel, s.rounds[0]);
        if let Some(c) = s.growth[0].control_add_p50_ms {
            assert!(c > 0.0 && c < 60_000.0, "control ADD {c} ms");
        }
        let runtime = s.growth[0].runtime_p50_ms;
        assert!(runtime > 0.0 && runtime < s.growth[0].add_p50_ms, "runtime's own part {runtime} ms: {:?}", s.growth[0]);
        assert_eq!(s.rounds.len(), 1);
    }
    let text = report.render();
    assert!(text.contains("checks: PASSED"), "{text}");
    assert!(text.contains(&format!("the runtime's result cache is under {}", cache_base.0.display())), "{text}");
    assert!(text.contains("runtime's own p50 ms, ADDs #1-3"), "{text}");
    assert!(text.contains("control ADD p50 ms, empty bridge, around ADDs #1-3"), "{text}");
    let json = serde_json::to_value(&report).expect("report serialises");
    assert_eq!(json["scenario"], "bridge");
    assert!(json["runs"][0]["sides"][0]["add"]["p50_ms"].as_f64().unwrap() > 0.0);
}

#[test]
fn bench_keeps_the_result_cache_where_it_is_told() {
    let mut opts = tiny(1);
    opts.count_spawns = false;
    opts.settle = None;
    // A path under a regular file cannot be made: the round must fail there, before any ADD.
    let file = Removed(std::env::temp_dir().join(format!("cnibench-smoke-file-{}", std::process::id())));
    std::fs::write(&file.0, b"").expect("file");
    opts.cache_dir = Some(file.0.join("below"));
    let err = bench::run(&opts).expect_err("a cache directory that cannot be made");
    let msg = err.to_string();
    assert!(msg.contains("result cache") && msg.contains("below"), "{msg}");
}

#[test]
fn bench_runs_no_control_adds_unless_asked() {
    let mut opts = tiny(2);
    opts.count_spawns = false;
    opts.settle = None;
    assert!(!opts.control, "control ADDs are off by default");
    let report = bench::run(&opts).expect("benchmark run");
    assert!(report.checks_passed(), "post-run checks failed:\n{}", report.violations.join("\n"));
    let s = &report.runs[0].sides[0];
    assert!(s.growth.iter().all(|g| g.control_add_p50_ms.is_none()), "{:?}", s.growth);
    assert!(s.rounds.iter().all(|r| r.control_first_last_ms.is_none()), "{:?}", s.rounds);
    assert!(s.growth[0].cpu_probe_p50_us.is_some(), "the CPU probe does not depend on the control ADDs");
}
