//! `cnibench`: drive plugin directories exactly as a runtime does (the [`crate::runner`] execs every
//! plugin of a conflist for ADD and DEL) and compare two directories — ours and the reference — in one
//! run, interleaving rounds A, B, then B, A, and so on.
//!
//! Every round of every side gets a fresh [`Sandbox`](crate::sandbox::Sandbox) (its own host
//! namespace, data directory and result cache); the N container namespaces are made before the timed
//! phases; P worker threads each ADD (then DEL) their own share of the containers. Plugin processes
//! are timed inside the runner ([`crate::runner::ExecRecord`]: wall, `wait4` CPU and peak RSS). After
//! each round the sandbox must be clean again (IPs unique, leases released, no veth, no firewall
//! leftovers); any violation is reported and makes [`Report::checks_passed`] false. Sandboxes are
//! removed on drop, also on error and while a panic unwinds.

pub mod checks;
pub mod control;
pub mod probe;
pub mod report;
pub mod round;
pub mod scenario;
pub mod stats;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

pub use report::{Report, Target};
pub use scenario::Scenario;

use report::{GrowthBucket, PluginRatio, PluginStats, Ratios, RoundStats, RunReport, SideInfo, SideRun};
use round::RoundResult;
use stats::{median, ratio, Summary};

static INTERRUPTED: AtomicBool = AtomicBool::new(false);

/// Ask a running benchmark to stop at the next operation (e.g. from a SIGINT handler: only an
/// atomic store, async-signal-safe).
pub fn interrupt() {
    INTERRUPTED.store(true, Ordering::SeqCst);
}

pub fn interrupted() -> bool {
    INTERRUPTED.load(Ordering::SeqCst)
}

#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    #[error("setup failed: {0}")]
    Setup(String),
    #[error("side {side}, round {round}: {command} of {container} failed: {error}")]
    Op { side: String, round: usize, command: String, container: String, error: String },
    #[error("interrupted")]
    Interrupted,
}

/// What to run.
#[derive(Debug, Clone)]
pub struct Options {
    pub scenario: Scenario,
    /// Containers per round.
    pub n: usize,
    /// Worker counts; the whole set of rounds runs once per entry.
    pub parallel: Vec<usize>,
    /// Rounds per side and worker count.
    pub rounds: usize,
    /// Side A plugin directory.
    pub dir: PathBuf,
    /// Side B plugin directory (`--vs`).
    pub vs: Option<PathBuf>,
    pub cni_version: String,
    /// Count spawned processes with strace (one extra untimed sample per side).
    pub count_spawns: bool,
    /// Progress lines on stderr.
    pub progress: bool,
    /// This process is the child subreaper of the plugins it runs (`PR_SET_CHILD_SUBREAPER`, set
    /// by `cnibench`): after each phase, reap the processes plugins left running (bridge DEL's
    /// helper, which outlives the plugin while the kernel finishes deleting the veth pair), so
    /// their CPU counts in the phase's and they cannot spill into the next one. Only for a
    /// process whose children are all the benchmark's (not a test binary running tests in
    /// parallel).
    pub reap_orphans: bool,
    /// Write every operation (side, P, round, ADD/DEL, order, wall and each plugin's wall and CPU)
    /// to this file as CSV, for looking at how latencies move within a round.
    pub samples_file: Option<PathBuf>,
    /// Before each round's timed phases, write back the file systems the round uses and wait
    /// this long (see [`probe::settle`]); `None` starts at once.
    pub settle: Option<Duration>,
    /// Where each round keeps the runtime's result cache (libcni's `CacheDir`, one file per
    /// attachment written on ADD); `None`: the round's sandbox directory under `TMPDIR`, with
    /// the plugins' data. By default a tmpfs ([`probe::tmpfs_dir`]): the cache is the runtime's
    /// work, the same for both sides, and on ext4 without a journal its file creations pass over
    /// every inode freed in the last minutes, a cost that grows through a round and the rounds
    /// before it and would count as the chain's growth.
    pub cache_dir: Option<PathBuf>,
    /// At P=1, just before the first and just after the last ADD of each by-order bucket, run
    /// control ADDs: the same chain into an empty bridge of a sandbox of their own ([`control`]),
    /// outside the phase's time, to show how the machine's speed for the chain moved during the
    /// round. Off by default: the kernel work an ADD leaves behind then falls on a control ADD
    /// rather than on the next ADD, and is left out of the phase's time, which could make the P=1
    /// throughput look higher than a runtime gets.
    pub control: bool,
}

impl Options {
    pub fn new(scenario: Scenario, dir: impl Into<PathBuf>) -> Options {
        Options {
            scenario,
            n: 50,
            parallel: vec![1],
            rounds: 3,
            dir: dir.into(),
            vs: None,
            cni_version: "1.0.0".into(),
            count_spawns: true,
            progress: false,
            reap_orphans: false,
            samples_file: None,
            settle: Some(probe::SETTLE),
            cache_dir: probe::tmpfs_dir(),
            control: false,
        }
    }
}

/// One plugin directory under test.
#[derive(Debug, Clone)]
pub struct Side {
    pub label: String,
    pub dir: PathBuf,
    pub chain: Vec<String>,
    pub notes: Vec<String>,
}

/// Run the benchmark. `Err` for setup failures and failed operations; post-run check failures are
/// in the report (`violations`).
pub fn run(opts: &Options) -> Result<Report, BenchError> {
    if opts.n == 0 || opts.rounds == 0 || opts.parallel.is_empty() || opts.parallel.contains(&0) {
        return Err(BenchError::Setup("N, rounds and every P must be at least 1".into()));
    }
    let mut dirs = vec![("A", opts.dir.clone())];
    if let Some(b) = &opts.vs {
        dirs.push(("B", b.clone()));
    }
    // One per run: runs of one process (tests) may overlap.
    static RUNS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let run_no = RUNS.fetch_add(1, Ordering::SeqCst);
    let snapshot = ScratchDir::new(std::env::temp_dir().join(format!("cnibench-{}-{run_no}", std::process::id())))
        .map_err(BenchError::Setup)?;
    let mut sides = Vec::new();
    let mut shown_dirs = Vec::new();
    for (label, dir) in dirs {
        let dir = dir.canonicalize().map_err(|e| BenchError::Setup(format!("plugin dir {}: {e}", dir.display())))?;
        let (chain, notes) = opts.scenario.chain_for(&dir).map_err(BenchError::Setup)?;
        // Copy the binaries so that a rebuild during the run cannot change what is measured.
        let copy = snapshot.path.join(label);
        let mut names = chain.clone();
        names.push(scenario::IPAM.to_string());
        snapshot_plugins(&dir, &copy, &names).map_err(BenchError::Setup)?;
        shown_dirs.push(dir.display().to_string());
        sides.push(Side { label: label.to_string(), dir: copy, chain, notes });
    }
    let mut machine = probe::machine();
    let progress = |s: String| {
        if opts.progress {
            eprintln!("cnibench: {s}");
        }
    };

    let mut infos = Vec::new();
    for (s, shown) in sides.iter().zip(&shown_dirs) {
        let mut names = s.chain.clone();
        names.push(scenario::IPAM.to_string());
        let (spawns, spawns_error, own_rss) = if opts.count_spawns {
            progress(format!("side {}: counting spawned processes (strace, untimed)", s.label));
            match probe::sample_processes(&s.dir, &s.chain, &opts.cni_version, opts.reap_orphans) {
                Ok(v) => (Some(v.spawns), None, v.own_rss),
                Err(e) => (None, Some(e), Vec::new()),
            }
        } else {
            (None, Some("disabled (--no-spawn-count)".into()), Vec::new())
        };
        infos.push(SideInfo {
            label: s.label.clone(),
            dir: shown.clone(),
            chain: s.chain.clone(),
            notes: s.notes.clone(),
            binaries: probe::binary_sizes(&s.dir, &names),
            spawns,
            spawns_error,
            own_rss,
            firewall_seen: Vec::new(),
        });
    }
    let exec_floor = probe::exec_floor(30).ok();

    let mut violations = Vec::new();
    let mut runs = Vec::new();
    for &p in &opts.parallel {
        let mut per_side: Vec<Vec<RoundResult>> = vec![Vec::new(); sides.len()];
        for r in 0..opts.rounds {
            // A, B in even rounds and B, A in odd ones: what one side leaves behind for the kernel
            // and the file system to clean up (namespaces, deleted files) slows whichever runs next.
            let order: Vec<usize> =
                if r % 2 == 0 { (0..sides.len()).collect() } else { (0..sides.len()).rev().collect() };
            for si in order {
                let s = &sides[si];
                if interrupted() {
                    return Err(BenchError::Interrupted);
                }
                let res = round::run_round(s, r, p, opts).map_err(|e| {
                    if interrupted() {
                        BenchError::Interrupted
                    } else {
                        e
                    }
                })?;
                progress(format!(
                    "P={p} round {}/{} side {}: {} ADDs in {:.2}s, {} DELs in {:.2}s{}",
                    r + 1,
                    opts.rounds,
                    s.label,
                    opts.n,
                    res.add_phase.as_secs_f64(),
                    opts.n,
                    res.del_phase.as_secs_f64(),
                    if res.violations.is_empty() {
                        String::new()
                    } else {
                        format!(", {} CHECK FAILURES", res.violations.len())
                    }
                ));
                for v in &res.violations {
                    violations.push(format!("side {} P={p} round {}: {v}", s.label, r + 1));
                }
                if infos[si].firewall_seen.is_empty() {
                    infos[si].firewall_seen = res.firewall_seen.clone();
                }
                per_side[si].push(res);
            }
        }
        if let Some(path) = &opts.samples_file {
            let first = runs.is_empty();
            let rows = sample_rows(&sides, &per_side, p, first);
            let written = std::fs::OpenOptions::new()
                .create(true)
                .append(!first)
                .write(true)
                .truncate(first)
                .open(path)
                .and_then(|mut f| std::io::Write::write_all(&mut f, rows.as_bytes()));
            if let Err(e) = written {
                return Err(BenchError::Setup(format!("write samples to {}: {e}", path.display())));
            }
        }
        let side_runs: Vec<SideRun> = sides.iter().zip(&per_side).map(|(s, rs)| aggregate(s, rs, opts.n)).collect();
        let ratios = (side_runs.len() == 2).then(|| ratios(&side_runs[0], &side_runs[1]));
        runs.push(RunReport { parallel: p, sides: side_runs, ratios });
    }
    machine.loadavg_end = probe::loadavg();

    let mut notes = Vec::new();
    if opts.scenario == Scenario::Full && sides.len() == 2 {
        notes.push("scenario full: the reference side runs WITHOUT isolation (v1.1.1 has no isolation plugin)".into());
    }
    notes.push(
        "plugin binaries are copied to a private directory at start (a rebuild during the run cannot change them)"
            .into(),
    );
    notes.push(match &opts.cache_dir {
        Some(d) => format!(
            "the runtime's result cache is under {} (--cache-dir), the plugins' data (host-local's leases) under {}",
            d.display(),
            std::env::temp_dir().display()
        ),
        None => format!("the runtime's result cache and the plugins' data are under {}", std::env::temp_dir().display()),
    });
    notes.push(
        "per-plugin times are runner-measured process lifetimes (spawn to reap); bridge includes its delegated \
         host-local; \"wait4 RSS\" is wait4's ru_maxrss, an upper bound: the largest of the plugin and the helpers \
         it waited for, and the kernel also carries the spawning process's own peak RSS into it (a vfork or fork \
         child's memory before exec), so it rises with the harness's size; the own peak RSS below is the plugin alone"
            .into(),
    );
    notes.push(if opts.reap_orphans {
        "processes a plugin leaves running when it exits (bridge DEL's helper, in the kernel until the veth pair \
         is freed) are reparented to cnibench (a child subreaper, as a runtime's shim is) and reaped after each \
         phase, outside its wall time: \"CPU ms per ADD/DEL\" includes theirs"
            .into()
    } else {
        "processes a plugin leaves running when it exits (bridge DEL's helper) are not reaped by this process: \
         \"CPU ms per ADD/DEL\" leaves their CPU out"
            .into()
    });
    let mut report = Report {
        scenario: opts.scenario.name().into(),
        n: opts.n,
        rounds: opts.rounds,
        cni_version: opts.cni_version.clone(),
        machine,
        spawn_method: probe::SPAWN_METHOD.into(),
        exec_floor,
        sides: infos,
        runs,
        targets: Vec::new(),
        violations,
        notes,
    };
    report.targets = targets(opts, &report);
    Ok(report)
}

/// A private directory (copies of the measured binaries, a round's result cache), made empty at
/// start and removed on drop.
pub(crate) struct ScratchDir {
    pub(crate) path: PathBuf,
}

impl ScratchDir {
    pub(crate) fn new(path: PathBuf) -> Result<ScratchDir, String> {
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).map_err(|e| format!("create {}: {e}", path.display()))?;
        Ok(ScratchDir { path })
    }
}

impl Drop for ScratchDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

fn snapshot_plugins(from: &std::path::Path, to: &std::path::Path, names: &[String]) -> Result<(), String> {
    std::fs::create_dir_all(to).map_err(|e| format!("create {}: {e}", to.display()))?;
    for n in names {
        let (src, dst) = (from.join(n), to.join(n));
        std::fs::copy(&src, &dst).map_err(|e| format!("copy {} to {}: {e}", src.display(), dst.display()))?;
    }
    Ok(())
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// CSV lines of every operation of one worker count, after a header line if `header`:
/// `side,p,round,op,order,wall_ms,plugins,control_ms`, plugins as `name:wall_ms:cpu_ms;...`,
/// control_ms the control ADDs run just before and just after this operation as `ms;ms;...`
/// (most often none).
fn sample_rows(sides: &[Side], per_side: &[Vec<RoundResult>], p: usize, header: bool) -> String {
    let mut out = String::new();
    if header {
        out.push_str("side,p,round,op,order,wall_ms,plugins,control_ms\n");
    }
    for (side, rounds) in sides.iter().zip(per_side) {
        for (ri, r) in rounds.iter().enumerate() {
            for (op, samples) in [("ADD", &r.adds), ("DEL", &r.dels)] {
                for sample in samples.iter() {
                    let execs: Vec<String> = sample
                        .execs
                        .iter()
                        .map(|e| format!("{}:{:.3}:{:.3}", e.plugin, ms(e.wall), ms(e.user + e.sys)))
                        .collect();
                    let control: Vec<String> = sample.control.iter().map(|d| format!("{:.3}", ms(*d))).collect();
                    out.push_str(&format!(
                        "{},{p},{},{op},{},{:.3},{},{}\n",
                        side.label,
                        ri + 1,
                        sample.order,
                        ms(sample.wall),
                        execs.join(";"),
                        control.join(";")
                    ));
                }
            }
        }
    }
    out
}

/// Pool the rounds of one side.
fn aggregate(side: &Side, rounds: &[RoundResult], n: usize) -> SideRun {
    let adds: Vec<Duration> = rounds.iter().flat_map(|r| r.adds.iter().map(|s| s.wall)).collect();
    let dels: Vec<Duration> = rounds.iter().flat_map(|r| r.dels.iter().map(|s| s.wall)).collect();

    struct Acc {
        walls: Vec<Duration>,
        cpu: Vec<Duration>,
        rss: Vec<u64>,
    }
    let mut acc: BTreeMap<(String, &'static str), Acc> = BTreeMap::new();
    for r in rounds {
        for (cmd, ops) in [("ADD", &r.adds), ("DEL", &r.dels)] {
            for op in ops.iter() {
                for e in &op.execs {
                    let a = acc.entry((e.plugin.clone(), cmd)).or_insert_with(|| Acc {
                        walls: Vec::new(),
                        cpu: Vec::new(),
                        rss: Vec::new(),
                    });
                    a.walls.push(e.wall);
                    a.cpu.push(e.user + e.sys);
                    a.rss.push(e.max_rss_kib);
                }
            }
        }
    }
    let mean_ms =
        |v: &[Duration]| if v.is_empty() { 0.0 } else { v.iter().map(|d| ms(*d)).sum::<f64>() / v.len() as f64 };
    let plugins: Vec<PluginStats> = side
        .chain
        .iter()
        .map(|p| {
            let get = |cmd| acc.get(&(p.clone(), cmd));
            let mut rss: Vec<u64> =
                ["ADD", "DEL"].iter().filter_map(|c| get(c)).flat_map(|a| a.rss.iter().copied()).collect();
            rss.sort_unstable();
            PluginStats {
                plugin: p.clone(),
                add: get("ADD").map(|a| Summary::of(&a.walls)).unwrap_or_default(),
                del: get("DEL").map(|a| Summary::of(&a.walls)).unwrap_or_default(),
                add_cpu_ms: get("ADD").map(|a| mean_ms(&a.cpu)).unwrap_or(0.0),
                del_cpu_ms: get("DEL").map(|a| mean_ms(&a.cpu)).unwrap_or(0.0),
                rss_kib_p50: if rss.is_empty() { 0 } else { rss[rss.len().div_ceil(2) - 1] },
                rss_kib_max: rss.last().copied().unwrap_or(0),
            }
        })
        .collect();

    let growth = growth_buckets(n)
        .into_iter()
        .map(|(from, to)| {
            let in_bucket = || rounds.iter().flat_map(|r| bucket(&r.adds, from, to));
            let v: Vec<Duration> = in_bucket().map(|s| s.wall).collect();
            let plugin_add_p50_ms = plugins
                .iter()
                .map(|p| {
                    let w: Vec<Duration> =
                        in_bucket().flat_map(|s| s.execs.iter().filter(|e| e.plugin == p.plugin)).map(|e| e.wall).collect();
                    (p.plugin.clone(), Summary::of(&w).p50_ms)
                })
                .collect();
            let runtime: Vec<Duration> =
                in_bucket().map(|s| s.wall.saturating_sub(s.execs.iter().map(|e| e.wall).sum())).collect();
            let probes: Vec<Duration> = in_bucket().filter_map(|s| s.cpu_probe).collect();
            let control: Vec<Duration> = in_bucket().flat_map(|s| s.control.iter().copied()).collect();
            GrowthBucket {
                from,
                to,
                add_p50_ms: Summary::of(&v).p50_ms,
                plugin_add_p50_ms,
                runtime_p50_ms: Summary::of(&runtime).p50_ms,
                cpu_probe_p50_us: (!probes.is_empty()).then(|| Summary::of(&probes).p50_ms * 1e3),
                control_add_p50_ms: (!control.is_empty()).then(|| Summary::of(&control).p50_ms),
            }
        })
        .collect();

    let per = |d: Duration| n as f64 / d.as_secs_f64().max(1e-9);
    let wait4_cpu = |ops: &[round::OpSample]| {
        ops.iter().flat_map(|o| o.execs.iter()).map(|e| ms(e.user + e.sys)).sum::<f64>() / n as f64
    };
    let round_stats: Vec<RoundStats> = rounds
        .iter()
        .enumerate()
        .map(|(i, r)| RoundStats {
            round: i + 1,
            add_p50_ms: Summary::of(&r.adds.iter().map(|s| s.wall).collect::<Vec<_>>()).p50_ms,
            del_p50_ms: Summary::of(&r.dels.iter().map(|s| s.wall).collect::<Vec<_>>()).p50_ms,
            add_per_s: per(r.add_phase),
            del_per_s: per(r.del_phase),
            cpu_per_add_ms: ms(r.add_children_cpu) / n as f64,
            cpu_per_del_ms: ms(r.del_children_cpu) / n as f64,
            machine_cpu_per_add_ms: r.add_machine_busy.map(|b| ms(b) / n as f64),
            harness_cpu_per_add_ms: r.add_harness_cpu.map(|c| ms(c) / n as f64),
            foreign_cpu_pct: r.foreign_cpu_pct,
            loadavg: r.loadavg.clone(),
            cpu_probe_first_last_us: {
                let probes: Vec<f64> = r.adds.iter().filter_map(|s| s.cpu_probe).map(|d| d.as_secs_f64() * 1e6).collect();
                probes.first().zip(probes.last()).map(|(a, b)| (*a, *b))
            },
            control_first_last_ms: {
                let p50s: Vec<f64> = growth_buckets(n)
                    .into_iter()
                    .map(|(from, to)| bucket(&r.adds, from, to).flat_map(|s| s.control.iter().copied()).collect::<Vec<Duration>>())
                    .filter(|c| !c.is_empty())
                    .map(|c| Summary::of(&c).p50_ms)
                    .collect();
                p50s.first().zip(p50s.last()).map(|(a, b)| (*a, *b))
            },
        })
        .collect();
    let med = |f: &dyn Fn(&RoundStats) -> f64| median(&round_stats.iter().map(f).collect::<Vec<_>>());
    // The median when every round has the value.
    let med_all = |f: &dyn Fn(&RoundStats) -> Option<f64>| {
        let v: Vec<f64> = round_stats.iter().filter_map(f).collect();
        (v.len() == round_stats.len() && !v.is_empty()).then(|| median(&v))
    };
    SideRun {
        label: side.label.clone(),
        add: Summary::of(&adds),
        del: Summary::of(&dels),
        plugins,
        growth,
        add_per_s: med(&|r| r.add_per_s),
        del_per_s: med(&|r| r.del_per_s),
        cpu_per_add_ms: med(&|r| r.cpu_per_add_ms),
        cpu_per_del_ms: med(&|r| r.cpu_per_del_ms),
        wait4_cpu_per_add_ms: median(&rounds.iter().map(|r| wait4_cpu(&r.adds)).collect::<Vec<_>>()),
        wait4_cpu_per_del_ms: median(&rounds.iter().map(|r| wait4_cpu(&r.dels)).collect::<Vec<_>>()),
        machine_cpu_per_add_ms: med_all(&|r| r.machine_cpu_per_add_ms),
        harness_cpu_per_add_ms: med_all(&|r| r.harness_cpu_per_add_ms),
        rounds: round_stats,
    }
}

/// The operations of `ops` in the by-order bucket `from..=to`.
fn bucket(ops: &[round::OpSample], from: usize, to: usize) -> impl Iterator<Item = &round::OpSample> {
    ops.iter().filter(move |s| (from..=to).contains(&s.order))
}

/// ADD order buckets: 1–10, 91–100, 491–500 where N allows, and the last ten.
pub fn growth_buckets(n: usize) -> Vec<(usize, usize)> {
    let mut b: Vec<(usize, usize)> = [(1, 10), (91, 100), (491, 500)].into_iter().filter(|&(_, to)| to <= n).collect();
    if n < 10 {
        b.push((1, n));
    } else if !b.iter().any(|&(_, to)| to == n) {
        b.push((n - 9, n));
    }
    b
}

fn ratios(a: &SideRun, b: &SideRun) -> Ratios {
    let plugins = a
        .plugins
        .iter()
        .filter_map(|pa| {
            let pb = b.plugins.iter().find(|p| p.plugin == pa.plugin)?;
            Some(PluginRatio {
                plugin: pa.plugin.clone(),
                add_p50: ratio(pa.add.p50_ms, pb.add.p50_ms),
                del_p50: ratio(pa.del.p50_ms, pb.del.p50_ms),
                rss_p50: ratio(pa.rss_kib_p50 as f64, pb.rss_kib_p50 as f64),
            })
        })
        .collect();
    Ratios {
        add_p50: ratio(a.add.p50_ms, b.add.p50_ms),
        add_p90: ratio(a.add.p90_ms, b.add.p90_ms),
        add_p99: ratio(a.add.p99_ms, b.add.p99_ms),
        del_p50: ratio(a.del.p50_ms, b.del.p50_ms),
        del_p90: ratio(a.del.p90_ms, b.del.p90_ms),
        del_p99: ratio(a.del.p99_ms, b.del.p99_ms),
        add_per_s: ratio(a.add_per_s, b.add_per_s),
        del_per_s: ratio(a.del_per_s, b.del_per_s),
        cpu_per_add: ratio(a.cpu_per_add_ms, b.cpu_per_add_ms),
        cpu_per_del: ratio(a.cpu_per_del_ms, b.cpu_per_del_ms),
        plugins,
    }
}

/// The issue-8 targets this run can say something about.
fn targets(opts: &Options, rep: &Report) -> Vec<Target> {
    let mut t = Vec::new();
    let run_p = |p: usize| rep.runs.iter().find(|r| r.parallel == p);
    // Latency targets are judged at P=1 when it ran, else at the first P.
    let base = run_p(1).or(rep.runs.first());
    let has_b = rep.sides.len() == 2;
    let pct = |r: f64| format!("A/B = {r:.3} (B/A = {:.2}x)", 1.0 / r);
    let lat = |metric: &str, goal: f64, goal_text: &str, pick: &dyn Fn(&RunReport) -> Option<(f64, f64)>| -> Target {
        let mut tg =
            Target { metric: metric.into(), target: goal_text.into(), measured: "needs --vs".into(), met: None };
        if let Some(run) = base.filter(|_| has_b) {
            if let Some((a, b)) = pick(run) {
                if let Some(r) = ratio(a, b) {
                    tg.measured = format!("{a:.2} ms vs {b:.2} ms at P={}: {}", run.parallel, pct(r));
                    tg.met = Some(r <= goal);
                }
            }
        }
        tg
    };
    match opts.scenario {
        Scenario::Bridge => {
            t.push(lat("bridge ADD p50", 1.0 / 8.0, "<= 1/8 of reference", &|r| {
                Some((r.sides[0].add.p50_ms, r.sides[1].add.p50_ms))
            }));
            t.push(lat("bridge DEL p50", 1.0 / 10.0, "<= 1/10 of reference", &|r| {
                Some((r.sides[0].del.p50_ms, r.sides[1].del.p50_ms))
            }));
        }
        Scenario::BridgePortmap => {
            t.push(lat("bridge-portmap ADD p50", 1.0 / 20.0, "<= 1/20 of reference", &|r| {
                Some((r.sides[0].add.p50_ms, r.sides[1].add.p50_ms))
            }));
        }
        Scenario::Full => {
            let with_iso = rep.sides[0].chain.iter().any(|p| p == "isolation");
            let mut tg = Target {
                metric: "full ADD p50 (with isolation)".into(),
                target: "<= 8 ms absolute".into(),
                measured: "isolation binary not built: not measurable".into(),
                met: None,
            };
            if let (true, Some(run)) = (with_iso, base) {
                let v = run.sides[0].add.p50_ms;
                tg.measured = format!("{v:.2} ms at P={}", run.parallel);
                tg.met = Some(v <= 8.0);
            }
            t.push(tg);
        }
    }
    // Growth.
    let mut g = Target {
        metric: "ADD p50 #491-500 vs #1-10".into(),
        target: "<= 1.3x".into(),
        measured: format!("needs N >= 500 (N={})", opts.n),
        met: None,
    };
    if let Some(run) = base {
        let bucket = |s: &SideRun, f: usize| s.growth.iter().find(|b| b.from == f).map(|b| b.add_p50_ms);
        if let (Some(first), Some(last)) = (bucket(&run.sides[0], 1), bucket(&run.sides[0], 491)) {
            let r = last / first.max(1e-9);
            g.measured = format!("A: {last:.2} / {first:.2} ms = {r:.2}x at P={}", run.parallel);
            if let Some(b) = run.sides.get(1) {
                if let (Some(f), Some(l)) = (bucket(b, 1), bucket(b, 491)) {
                    g.measured.push_str(&format!(" (B: {:.2}x)", l / f.max(1e-9)));
                }
            }
            let control = |s: &SideRun, f: usize| s.growth.iter().find(|b| b.from == f).and_then(|b| b.control_add_p50_ms);
            if let (Some(cf), Some(cl)) = (control(&run.sides[0], 1), control(&run.sides[0], 491)) {
                let drift = cl / cf.max(1e-9);
                g.measured.push_str(&format!(
                    "; control ADDs around them {cf:.2} -> {cl:.2} ms: the machine {drift:.2}x, growth without it {:.2}x",
                    r / drift.max(1e-9)
                ));
            }
            g.met = Some(r <= 1.3);
        }
    }
    t.push(g);
    // Throughput.
    let mut sc = Target {
        metric: "ADD/s at P=8 vs P=1".into(),
        target: ">= 1.0x".into(),
        measured: "needs -p 1,8".into(),
        met: None,
    };
    if let (Some(r1), Some(r8)) = (run_p(1), run_p(8)) {
        let r = r8.sides[0].add_per_s / r1.sides[0].add_per_s.max(1e-9);
        sc.measured = format!("A: {:.1} vs {:.1} ADD/s = {r:.2}x", r8.sides[0].add_per_s, r1.sides[0].add_per_s);
        if let (Some(b1), Some(b8)) = (r1.sides.get(1), r8.sides.get(1)) {
            sc.measured.push_str(&format!(" (B: {:.1} vs {:.1})", b8.add_per_s, b1.add_per_s));
        }
        sc.met = Some(r >= 1.0);
    }
    t.push(sc);
    let mut x8 = Target {
        metric: "ADD/s at P=8 vs reference".into(),
        target: ">= 15x".into(),
        measured: "needs -p 8 and --vs".into(),
        met: None,
    };
    if let Some(r8) = run_p(8).filter(|_| has_b) {
        let r = r8.sides[0].add_per_s / r8.sides[1].add_per_s.max(1e-9);
        // The reference's own cost per ADD grows with the containers attached (its masquerade and
        // port mappings are chains per container), so the ratio depends on N: say which N it is.
        x8.measured = format!("{:.1} vs {:.1} ADD/s = {r:.1}x with N={}", r8.sides[0].add_per_s, r8.sides[1].add_per_s, opts.n);
        x8.met = Some(r >= 15.0);
    }
    t.push(x8);
    // Spawns.
    let mut sp = Target {
        metric: "processes spawned per ADD besides IPAM".into(),
        target: "<= 1 per firewall operation (1 per plugin)".into(),
        measured: "not measured".into(),
        met: None,
    };
    if let Some(v) = &rep.sides[0].spawns {
        let adds: Vec<_> = v.iter().filter(|c| c.command == "ADD").collect();
        sp.measured = adds.iter().map(|c| format!("{} {}", c.plugin, c.besides_ipam)).collect::<Vec<_>>().join(", ");
        if let Some(b) = rep.sides.get(1).and_then(|s| s.spawns.as_ref()) {
            let bs: Vec<String> =
                b.iter().filter(|c| c.command == "ADD").map(|c| format!("{} {}", c.plugin, c.besides_ipam)).collect();
            sp.measured.push_str(&format!(" (B: {})", bs.join(", ")));
        }
        sp.met = Some(adds.iter().all(|c| c.besides_ipam <= 1));
    }
    t.push(sp);
    // RSS: the plugin process alone when sampled, else the wait4 tree peak.
    let mut rs = Target {
        metric: "peak RSS per plugin process".into(),
        target: "<= 1/2 of reference".into(),
        measured: "needs --vs".into(),
        met: None,
    };
    if has_b {
        let own = |side: &SideInfo, p: &str| side.own_rss.iter().find(|r| r.program == p).map(|r| r.kib as f64);
        let mut parts = Vec::new();
        let mut all = true;
        let mut any = false;
        for p in &rep.sides[0].chain {
            let tree = base
                .and_then(|r| r.ratios.as_ref())
                .and_then(|rat| rat.plugins.iter().find(|x| &x.plugin == p))
                .and_then(|x| x.rss_p50);
            let own_r = match (own(&rep.sides[0], p), own(&rep.sides[1], p)) {
                (Some(a), Some(b)) => ratio(a, b),
                _ => None,
            };
            if let Some(r) = own_r.or(tree) {
                any = true;
                all &= r <= 0.5;
            }
            match (own_r, tree) {
                (Some(o), Some(t)) => parts.push(format!("{p} own {o:.2} (wait4 upper bound {t:.2})")),
                (Some(o), None) => parts.push(format!("{p} own {o:.2}")),
                (None, Some(t)) => parts.push(format!("{p} wait4 upper bound {t:.2}")),
                (None, None) => {}
            }
        }
        if any {
            rs.measured = format!("A/B: {}", parts.join(", "));
            rs.met = Some(all);
        }
    }
    t.push(rs);
    t
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets() {
        assert_eq!(growth_buckets(3), vec![(1, 3)]);
        assert_eq!(growth_buckets(10), vec![(1, 10)]);
        assert_eq!(growth_buckets(50), vec![(1, 10), (41, 50)]);
        assert_eq!(growth_buckets(100), vec![(1, 10), (91, 100)]);
        assert_eq!(growth_buckets(500), vec![(1, 10), (91, 100), (491, 500)]);
        assert_eq!(growth_buckets(600), vec![(1, 10), (91, 100), (491, 500), (591, 600)]);
    }
}
