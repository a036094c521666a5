//! The benchmark report: serialisable (`--json`) and printable as tables.

use std::fmt::Write as _;

use serde::Serialize;

use super::probe::{Binary, Machine, ProgramRss, SpawnCount};
use super::stats::Summary;

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub scenario: String,
    pub n: usize,
    pub rounds: usize,
    pub cni_version: String,
    pub machine: Machine,
    pub spawn_method: String,
    /// Harness-only cost of one plugin exec (`/bin/true` through the same exec path).
    pub exec_floor: Option<Summary>,
    pub sides: Vec<SideInfo>,
    /// One per worker count P.
    pub runs: Vec<RunReport>,
    pub targets: Vec<Target>,
    /// Post-run check failures (empty = all passed).
    pub violations: Vec<String>,
    pub notes: Vec<String>,
}

impl Report {
    /// Whether every post-run check passed.
    pub fn checks_passed(&self) -> bool {
        self.violations.is_empty()
    }
}

/// What does not change between rounds of one side.
#[derive(Debug, Clone, Serialize)]
pub struct SideInfo {
    pub label: String,
    pub dir: String,
    /// Plugins in the chain that ran (host-local is delegated by bridge).
    pub chain: Vec<String>,
    pub notes: Vec<String>,
    pub binaries: Vec<Binary>,
    /// Processes spawned per plugin on one sample ADD/DEL; `None` when not measured.
    pub spawns: Option<Vec<SpawnCount>>,
    pub spawns_error: Option<String>,
    /// Own peak RSS per program (plugin or helper), from the same sample.
    pub own_rss: Vec<ProgramRss>,
    /// Firewall objects seen in the sandbox host after the ADD phase of the first round.
    pub firewall_seen: Vec<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct RunReport {
    pub parallel: usize,
    pub sides: Vec<SideRun>,
    /// A/B of the side medians, when there is a side B.
    pub ratios: Option<Ratios>,
}

#[derive(Debug, Clone, Serialize)]
pub struct SideRun {
    pub label: String,
    /// Whole-chain latency (runtime `add_list` / `del_list`), all rounds pooled.
    pub add: Summary,
    pub del: Summary,
    pub plugins: Vec<PluginStats>,
    /// ADD p50 by start order (1-based, inclusive).
    pub growth: Vec<GrowthBucket>,
    /// Median over rounds of N / phase wall time.
    pub add_per_s: f64,
    pub del_per_s: f64,
    /// Median over rounds of `getrusage(RUSAGE_CHILDREN)` user+sys delta / N.
    pub cpu_per_add_ms: f64,
    pub cpu_per_del_ms: f64,
    /// The same from the per-process `wait4` rusage (cross-check).
    pub wait4_cpu_per_add_ms: f64,
    pub wait4_cpu_per_del_ms: f64,
    /// Median over rounds of all cores' busy time during the ADD phase / N: the plugins, the
    /// runtime, the kernel's threads and anything foreign. At a P that keeps every core busy,
    /// the ADD throughput is the cores divided by this. `None` when a round could not measure it
    /// (no `/proc/timer_list`, or control ADDs in the phase).
    pub machine_cpu_per_add_ms: Option<f64>,
    /// Median over rounds of the harness's own CPU time during the ADD phase / N: the runtime's
    /// part of the machine's time (its threads; what its spawned children do before they exec
    /// counts as theirs). Same `None` cases as `machine_cpu_per_add_ms`.
    pub harness_cpu_per_add_ms: Option<f64>,
    pub rounds: Vec<RoundStats>,
}

#[derive(Debug, Clone, Serialize)]
pub struct PluginStats {
    pub plugin: String,
    pub add: Summary,
    pub del: Summary,
    /// Mean user+sys per exec (with the processes it waited for).
    pub add_cpu_ms: f64,
    pub del_cpu_ms: f64,
    /// Per-process peak RSS from `wait4` (ru_maxrss): an upper bound, the process or its largest
    /// waited-for descendant, and also the spawning process's own peak before exec (the kernel keeps
    /// the pre-exec memory of a vfork or fork child in it).
    pub rss_kib_p50: u64,
    pub rss_kib_max: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct GrowthBucket {
    pub from: usize,
    pub to: usize,
    pub add_p50_ms: f64,
    /// ADD p50 of each plugin of the chain over the same ADDs: (plugin, ms).
    pub plugin_add_p50_ms: Vec<(String, f64)>,
    /// p50 over the same ADDs of the runtime's own part of an ADD: the chain's wall time less its
    /// plugins' (building each plugin's config, reading its result, writing the result cache).
    pub runtime_p50_ms: f64,
    /// p50 over the rounds of the CPU probe taken right after the last of these ADDs (µs; `None`
    /// at P > 1).
    pub cpu_probe_p50_us: Option<f64>,
    /// p50 over the rounds of the control ADDs run just before the first and just after the last
    /// of these ADDs: the same chain into an empty bridge (`bench::control`; ms, `None` at P > 1
    /// or without them).
    pub control_add_p50_ms: Option<f64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct RoundStats {
    pub round: usize,
    pub add_p50_ms: f64,
    pub del_p50_ms: f64,
    pub add_per_s: f64,
    pub del_per_s: f64,
    pub cpu_per_add_ms: f64,
    pub cpu_per_del_ms: f64,
    /// All cores' busy time during the ADD phase / N (see `SideRun::machine_cpu_per_add_ms`).
    pub machine_cpu_per_add_ms: Option<f64>,
    /// The harness's own CPU during the ADD phase / N (see `SideRun::harness_cpu_per_add_ms`).
    pub harness_cpu_per_add_ms: Option<f64>,
    pub foreign_cpu_pct: f64,
    pub loadavg: String,
    /// The CPU probe after the first and after the last by-order bucket of this round's ADDs (µs;
    /// at P=1): how much the machine's own speed moved during the round.
    pub cpu_probe_first_last_us: Option<(f64, f64)>,
    /// p50 of the control ADDs around the first and around the last by-order bucket (ms; at P=1):
    /// how much the machine's speed for the chain itself moved during the round.
    pub control_first_last_ms: Option<(f64, f64)>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Ratios {
    pub add_p50: Option<f64>,
    pub add_p90: Option<f64>,
    pub add_p99: Option<f64>,
    pub del_p50: Option<f64>,
    pub del_p90: Option<f64>,
    pub del_p99: Option<f64>,
    pub add_per_s: Option<f64>,
    pub del_per_s: Option<f64>,
    pub cpu_per_add: Option<f64>,
    pub cpu_per_del: Option<f64>,
    /// Per plugin present on both sides: (plugin, ADD p50, DEL p50, RSS p50).
    pub plugins: Vec<PluginRatio>,
}

#[derive(Debug, Clone, Serialize)]
pub struct PluginRatio {
    pub plugin: String,
    pub add_p50: Option<f64>,
    pub del_p50: Option<f64>,
    pub rss_p50: Option<f64>,
}

/// One issue-8 target and whether this run shows it met (`None`: not measurable in this run).
#[derive(Debug, Clone, Serialize)]
pub struct Target {
    pub metric: String,
    pub target: String,
    pub measured: String,
    pub met: Option<bool>,
}

fn ms(v: f64) -> String {
    if v >= 100.0 {
        format!("{v:.0}")
    } else if v >= 10.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}

fn x(r: Option<f64>) -> String {
    r.map(|r| format!("{r:.3}")).unwrap_or_else(|| "-".into())
}

fn kib(v: u64) -> String {
    format!("{:.1} MiB", v as f64 / 1024.0)
}

/// A plain text table: first row is the header, columns padded, first column left-aligned, the others
/// right-aligned.
fn table(rows: &[Vec<String>]) -> String {
    table_aligned(rows, false)
}

fn table_aligned(rows: &[Vec<String>], all_left: bool) -> String {
    let cols = rows.iter().map(Vec::len).max().unwrap_or(0);
    let mut w = vec![0; cols];
    for r in rows {
        for (i, c) in r.iter().enumerate() {
            w[i] = w[i].max(c.chars().count());
        }
    }
    let mut s = String::new();
    for (ri, r) in rows.iter().enumerate() {
        let mut line = String::new();
        for (i, c) in r.iter().enumerate() {
            let pad = w[i] - c.chars().count();
            if i == 0 || all_left {
                if i > 0 {
                    line.push_str("  ");
                }
                line.push_str(c);
                line.push_str(&" ".repeat(pad));
            } else {
                line.push_str("  ");
                line.push_str(&" ".repeat(pad));
                line.push_str(c);
            }
        }
        s.push_str(line.trim_end());
        s.push('\n');
        if ri == 0 {
            s.push_str(&"-".repeat(w.iter().sum::<usize>() + 2 * cols.saturating_sub(1)));
            s.push('\n');
        }
    }
    s
}

impl Report {
    /// Human-readable report.
    pub fn render(&self) -> String {
        let mut o = String::new();
        let m = &self.machine;
        let _ = writeln!(
            o,
            "cnibench: scenario {}, N={} containers, {} round(s) per side and P, cniVersion {}",
            self.scenario, self.n, self.rounds, self.cni_version
        );
        let _ = writeln!(
            o,
            "machine: {} cores, kernel {}, loadavg {} at start, {} at end",
            m.cores, m.kernel, m.loadavg_start, m.loadavg_end
        );
        for s in &self.sides {
            let _ = writeln!(o, "side {} = {}   chain: {}", s.label, s.dir, s.chain.join(" -> "));
            for n in &s.notes {
                let _ = writeln!(o, "  NOTE: {n}");
            }
            if !s.firewall_seen.is_empty() {
                let _ = writeln!(o, "  firewall after ADD: {}", s.firewall_seen.join("; "));
            }
        }
        if let Some(f) = &self.exec_floor {
            let _ = writeln!(
                o,
                "harness exec floor (posix_spawn from a worker thread in the sandbox host netns + exec /bin/true + reap): p50 {} ms, p90 {} ms",
                ms(f.p50_ms),
                ms(f.p90_ms)
            );
        }
        for n in &self.notes {
            let _ = writeln!(o, "NOTE: {n}");
        }

        for run in &self.runs {
            let _ = writeln!(o, "\n== P={} worker(s); latencies in ms ==", run.parallel);
            let mut head = vec!["".to_string()];
            for s in &run.sides {
                for q in ["p50", "p90", "p99", "max"] {
                    head.push(format!("{} {q}", s.label));
                }
            }
            let two = run.sides.len() == 2;
            if two {
                head.push("A/B p50".into());
            }
            let mut rows = vec![head];
            let sum_row = |label: &str, pick: &dyn Fn(&SideRun) -> Option<Summary>| {
                let mut r = vec![label.to_string()];
                let mut p50s = Vec::new();
                for s in &run.sides {
                    match pick(s) {
                        Some(v) => {
                            r.extend([ms(v.p50_ms), ms(v.p90_ms), ms(v.p99_ms), ms(v.max_ms)]);
                            p50s.push(Some(v.p50_ms));
                        }
                        None => {
                            r.extend(["-", "-", "-", "-"].map(String::from));
                            p50s.push(None);
                        }
                    }
                }
                if two {
                    r.push(match (p50s[0], p50s[1]) {
                        (Some(a), Some(b)) => x(super::stats::ratio(a, b)),
                        _ => "-".into(),
                    });
                }
                r
            };
            rows.push(sum_row("ADD chain", &|s| Some(s.add.clone())));
            rows.push(sum_row("DEL chain", &|s| Some(s.del.clone())));
            let mut plugin_names: Vec<String> = Vec::new();
            for s in &run.sides {
                for p in &s.plugins {
                    if !plugin_names.contains(&p.plugin) {
                        plugin_names.push(p.plugin.clone());
                    }
                }
            }
            for cmd in ["ADD", "DEL"] {
                for p in &plugin_names {
                    let label = format!("{cmd} {p}{}", if p == "bridge" { " (+host-local)" } else { "" });
                    rows.push(sum_row(&label, &|s| {
                        s.plugins.iter().find(|x| &x.plugin == p).map(|x| {
                            if cmd == "ADD" {
                                x.add.clone()
                            } else {
                                x.del.clone()
                            }
                        })
                    }));
                }
            }
            o.push_str(&table(&rows));

            // Scalars.
            let mut head = vec!["".to_string()];
            head.extend(run.sides.iter().map(|s| s.label.clone()));
            if two {
                head.push("A/B".into());
            }
            let mut rows = vec![head];
            let scalar = |label: &str, vals: Vec<Option<f64>>, fmt: &dyn Fn(f64) -> String| {
                let mut r = vec![label.to_string()];
                r.extend(vals.iter().map(|v| v.map(fmt).unwrap_or_else(|| "-".into())));
                if vals.len() == 2 {
                    r.push(match (vals[0], vals[1]) {
                        (Some(a), Some(b)) => x(super::stats::ratio(a, b)),
                        _ => "-".into(),
                    });
                }
                r
            };
            let buckets: Vec<(usize, usize)> = run.sides[0].growth.iter().map(|g| (g.from, g.to)).collect();
            for (f, t) in buckets {
                // One value per side from its bucket f..=t.
                let per_side = |get: &dyn Fn(&GrowthBucket) -> Option<f64>| -> Vec<Option<f64>> {
                    run.sides.iter().map(|s| s.growth.iter().find(|g| g.from == f && g.to == t).and_then(get)).collect()
                };
                rows.push(scalar(&format!("ADD p50 ms, ADDs #{f}-{t}"), per_side(&|g| Some(g.add_p50_ms)), &ms));
                for p in run.sides[0].plugins.iter().map(|x| &x.plugin) {
                    let vals = per_side(&|g| g.plugin_add_p50_ms.iter().find(|(n, _)| n == p).map(|(_, v)| *v));
                    rows.push(scalar(&format!("  {p} p50 ms, ADDs #{f}-{t}"), vals, &ms));
                }
                rows.push(scalar(&format!("  runtime's own p50 ms, ADDs #{f}-{t}"), per_side(&|g| Some(g.runtime_p50_ms)), &ms));
                let vals = per_side(&|g| g.cpu_probe_p50_us);
                if vals.iter().any(Option::is_some) {
                    rows.push(scalar(&format!("  CPU probe us, after ADD #{t}"), vals, &|v: f64| format!("{v:.0}")));
                }
                let vals = per_side(&|g| g.control_add_p50_ms);
                if vals.iter().any(Option::is_some) {
                    rows.push(scalar(&format!("  control ADD p50 ms, empty bridge, around ADDs #{f}-{t}"), vals, &ms));
                }
            }
            let f1 = |v: f64| format!("{v:.1}");
            rows.push(scalar("ADD/s (throughput)", run.sides.iter().map(|s| Some(s.add_per_s)).collect(), &f1));
            rows.push(scalar("DEL/s", run.sides.iter().map(|s| Some(s.del_per_s)).collect(), &f1));
            rows.push(scalar(
                "CPU ms per ADD (RUSAGE_CHILDREN)",
                run.sides.iter().map(|s| Some(s.cpu_per_add_ms)).collect(),
                &ms,
            ));
            rows.push(scalar(
                "CPU ms per DEL (RUSAGE_CHILDREN)",
                run.sides.iter().map(|s| Some(s.cpu_per_del_ms)).collect(),
                &ms,
            ));
            rows.push(scalar(
                "CPU ms per ADD (sum of wait4)",
                run.sides.iter().map(|s| Some(s.wait4_cpu_per_add_ms)).collect(),
                &ms,
            ));
            // Rows that a run without the machine's idle accounting (or with control ADDs) lacks.
            type Get = fn(&SideRun) -> Option<f64>;
            let optional: [(&str, Get); 2] = [
                ("machine CPU ms per ADD (all cores busy / N)", |s| s.machine_cpu_per_add_ms),
                ("  of which the harness's own (runtime threads)", |s| s.harness_cpu_per_add_ms),
            ];
            for (label, get) in optional {
                let vals: Vec<Option<f64>> = run.sides.iter().map(get).collect();
                if vals.iter().any(Option::is_some) {
                    rows.push(scalar(label, vals, &ms));
                }
            }
            for p in &plugin_names {
                let vals = run
                    .sides
                    .iter()
                    .map(|s| s.plugins.iter().find(|x| &x.plugin == p).map(|x| x.rss_kib_p50 as f64))
                    .collect();
                rows.push(scalar(&format!("wait4 RSS {p} p50"), vals, &|v| kib(v as u64)));
                let vals = run
                    .sides
                    .iter()
                    .map(|s| s.plugins.iter().find(|x| &x.plugin == p).map(|x| x.rss_kib_max as f64))
                    .collect();
                rows.push(scalar(&format!("wait4 RSS {p} max"), vals, &|v| kib(v as u64)));
            }
            o.push('\n');
            o.push_str(&table(&rows));

            let _ = writeln!(
                o,
                "\nper round (ADD p50 / DEL p50 ms, ADD/s, foreign CPU % of machine during the round, loadavg; at P=1 the CPU probe after, and the control ADDs' p50 around, the first and the last by-order bucket):"
            );
            for s in &run.sides {
                for r in &s.rounds {
                    let probe = r
                        .cpu_probe_first_last_us
                        .map(|(a, b)| format!("  CPU probe {a:.0} -> {b:.0} us ({:.2}x)", b / a.max(1e-9)))
                        .unwrap_or_default();
                    let control = r
                        .control_first_last_ms
                        .map(|(a, b)| format!("  control {a:.2} -> {b:.2} ms ({:.2}x)", b / a.max(1e-9)))
                        .unwrap_or_default();
                    let _ = writeln!(
                        o,
                        "  {} round {}: {} / {}  {:.1} ADD/s  foreign CPU {:.0}%  load {}{probe}{control}",
                        s.label,
                        r.round,
                        ms(r.add_p50_ms),
                        ms(r.del_p50_ms),
                        r.add_per_s,
                        r.foreign_cpu_pct,
                        r.loadavg
                    );
                }
            }
        }

        // Static per side: binaries and spawned processes.
        let _ = writeln!(o, "\n== binaries (bytes) ==");
        let mut names: Vec<String> = Vec::new();
        for s in &self.sides {
            for b in &s.binaries {
                if !names.contains(&b.name) {
                    names.push(b.name.clone());
                }
            }
        }
        let mut head = vec!["".to_string()];
        head.extend(self.sides.iter().map(|s| s.label.clone()));
        if self.sides.len() == 2 {
            head.push("A/B".into());
        }
        let mut rows = vec![head];
        for n in &names {
            let vals: Vec<Option<u64>> =
                self.sides.iter().map(|s| s.binaries.iter().find(|b| &b.name == n).map(|b| b.bytes)).collect();
            let mut r = vec![n.clone()];
            r.extend(vals.iter().map(|v| v.map(|b| b.to_string()).unwrap_or_else(|| "-".into())));
            if vals.len() == 2 {
                r.push(match (vals[0], vals[1]) {
                    (Some(a), Some(b)) => x(super::stats::ratio(a as f64, b as f64)),
                    _ => "-".into(),
                });
            }
            rows.push(r);
        }
        o.push_str(&table(&rows));

        let _ = writeln!(o, "\n== processes spawned per plugin exec ==\nmethod: {}", self.spawn_method);
        for s in &self.sides {
            match (&s.spawns, &s.spawns_error) {
                (Some(v), _) => {
                    for c in v {
                        let progs: Vec<String> = c.programs.iter().map(|(k, n)| format!("{k} x{n}")).collect();
                        let _ = writeln!(
                            o,
                            "  {} {} {}: {} (besides IPAM: {}){}",
                            s.label,
                            c.command,
                            c.plugin,
                            c.total,
                            c.besides_ipam,
                            if progs.is_empty() { String::new() } else { format!("  [{}]", progs.join(", ")) }
                        );
                    }
                }
                (None, Some(e)) => {
                    let _ = writeln!(o, "  {}: not measured: {e}", s.label);
                }
                (None, None) => {
                    let _ = writeln!(o, "  {}: not measured", s.label);
                }
            }
        }

        let _ = writeln!(o, "\n== own peak RSS per program (VmHWM at exit, sampled; the plugin process alone) ==");
        for s in &self.sides {
            if s.own_rss.is_empty() {
                let _ = writeln!(o, "  {}: not measured", s.label);
                continue;
            }
            let v: Vec<String> = s.own_rss.iter().map(|r| format!("{} {}", r.program, kib(r.kib))).collect();
            let _ = writeln!(o, "  {}: {}", s.label, v.join(", "));
        }

        if !self.targets.is_empty() {
            let _ = writeln!(o, "\n== issue-8 targets measurable in this run ==");
            let mut rows = vec![vec!["metric".into(), "target".into(), "measured".into(), "met".into()]];
            for t in &self.targets {
                rows.push(vec![
                    t.metric.clone(),
                    t.target.clone(),
                    t.measured.clone(),
                    match t.met {
                        Some(true) => "yes".into(),
                        Some(false) => "NO".into(),
                        None => "n/a".into(),
                    },
                ]);
            }
            o.push_str(&table_aligned(&rows, true));
        }

        if self.violations.is_empty() {
            let _ = writeln!(
                o,
                "\nchecks: PASSED (IPs unique, leases released, result cache empty, no veth, no CNI chain/rule/nft element left)"
            );
        } else {
            let _ = writeln!(o, "\nchecks: FAILED ({} violation(s)):", self.violations.len());
            for v in &self.violations {
                let _ = writeln!(o, "  !! {v}");
            }
        }
        o
    }
}
