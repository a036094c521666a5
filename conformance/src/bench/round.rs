//! One timed round of one side: fresh sandbox, N container namespaces (untimed), ADD phase with P
//! workers, DEL phase with P workers, post-run checks.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::path::{Path, PathBuf};
use std::sync::Barrier;
use std::time::{Duration, Instant};

use serde_json::Value;

use super::checks::{self, Handed};
use super::control::Controls;
use super::probe;
use super::scenario::{self, BRIDGE};
use super::{interrupted, BenchError, Side};
use crate::runner::{
    start_exec_recording, stop_exec_recording, take_exec_records, ExecRecord, NetworkConfigList, RunError, Runtime, RuntimeConf,
};
use crate::nsexec::ThreadInNs;
use crate::sandbox::{ContainerNs, Sandbox};

/// One timed runtime operation (a whole ADD or DEL list).
#[derive(Debug, Clone)]
pub struct OpSample {
    /// 1-based position in which this operation started within its phase (across all workers).
    pub order: usize,
    pub wall: Duration,
    /// The plugin processes the operation ran.
    pub execs: Vec<ExecRecord>,
    /// The machine's speed just after the operation, outside its wall time
    /// ([`probe::cpu_probe`]): taken after the last ADD of each by-order bucket at P=1, so that
    /// its pause comes before an ADD outside the bucket (or after the phase).
    pub cpu_probe: Option<Duration>,
    /// The control ADDs run just before and just after this operation ([`Controls::around`]):
    /// empty but around the first and the last ADD of each by-order bucket at P=1.
    pub control: Vec<Duration>,
}

/// Everything measured in one round.
#[derive(Debug, Clone, Default)]
pub struct RoundResult {
    pub adds: Vec<OpSample>,
    pub dels: Vec<OpSample>,
    pub add_phase: Duration,
    pub del_phase: Duration,
    /// `getrusage(RUSAGE_CHILDREN)` user+sys delta over the phase.
    pub add_children_cpu: Duration,
    pub del_children_cpu: Duration,
    /// Busy time of all cores over the ADD phase (its wall time times the cores, less their idle
    /// time: everything the machine did, plugins, runtime, kernel threads, anything foreign),
    /// less the CPU probes' time; `None` without `/proc/timer_list` or with control ADDs.
    pub add_machine_busy: Option<Duration>,
    /// This process's own CPU time (user + sys of all its threads, the runtime's part of the
    /// machine's busy time: configs, spawning and reaping, results, cache files) over the ADD
    /// phase, less the CPU probes' time; `None` with control ADDs (as `add_machine_busy`).
    pub add_harness_cpu: Option<Duration>,
    /// Firewall objects seen in the sandbox host after the ADD phase.
    pub firewall_seen: Vec<String>,
    pub violations: Vec<String>,
    /// CPU used on the machine by anything but this benchmark during the two phases, in % of all cores.
    pub foreign_cpu_pct: f64,
    pub loadavg: String,
}

/// A sandbox made ready for the chain of a side: container namespaces (made before anything is
/// timed), the conflist with host-local's leases under the sandbox's directory, a runtime (its
/// result cache under `cache_base` when given) and the runtime config of each container. Fields
/// drop in order: the container namespaces before their sandbox.
pub(crate) struct Rig {
    /// Held until the rig is dropped, which removes them (the namespaces the `rcs` point to).
    _containers: Vec<ContainerNs>,
    pub(crate) rt: Runtime,
    /// Held until the rig is dropped, which removes it.
    _cache: Option<super::ScratchDir>,
    pub(crate) list: NetworkConfigList,
    pub(crate) rcs: Vec<RuntimeConf>,
    pub(crate) data_dir: PathBuf,
    pub(crate) sb: Sandbox,
}

impl Rig {
    pub(crate) fn new(side: &Side, round: usize, n: usize, cni_version: &str, cache_base: Option<&Path>) -> Result<Rig, BenchError> {
        let setup = |what: &str, e: &dyn std::fmt::Display| BenchError::Setup(format!("side {}: {what}: {e}", side.label));
        let sb = Sandbox::new().map_err(|e| setup("sandbox", &e))?;
        let containers = make_containers(&sb, n).map_err(|e| setup("container namespaces", &e))?;
        let data_dir = sb.tempdir().join("ipam");
        let list = NetworkConfigList::from_json(&scenario::conflist(&side.chain, cni_version, &data_dir))
            .map_err(|e| setup("conflist", &e))?;
        let mut rt = sb.runtime(&side.dir);
        let cache = match cache_base {
            Some(base) => Some(super::ScratchDir::new(base.join(format!("{}-cni-cache", sb.id()))).map_err(|e| setup("result cache", &e))?),
            None => None,
        };
        if let Some(c) = &cache {
            rt.cache_dir.clone_from(&c.path);
        }
        let rcs = containers.iter().enumerate().map(|(i, c)| scenario::runtime_conf(&side.chain, round, i, c.path())).collect();
        Ok(Rig { _containers: containers, rt, _cache: cache, list, rcs, data_dir, sb })
    }
}

/// One round of `side` with `p` workers: `opts.n` containers, ADD then DEL.
pub fn run_round(side: &Side, round: usize, p: usize, opts: &super::Options) -> Result<RoundResult, BenchError> {
    let (n, cni_version, reap, settle) = (opts.n, opts.cni_version.as_str(), opts.reap_orphans, opts.settle);
    let rig = Rig::new(side, round, n, cni_version, opts.cache_dir.as_deref())?;
    // At P=1 only, like the CPU probe: with other workers running, the control ADDs would share
    // the machine with them.
    let controls = match (opts.control, p) {
        (true, 1) => Some(Controls::new(side, round, opts)?),
        _ => None,
    };
    if let Some(quiet) = settle {
        probe::settle(&[rig.sb.tempdir(), Path::new("/run/netns")], quiet);
    }
    let Rig { ref sb, ref rt, ref list, ref rcs, ref data_dir, .. } = rig;

    let mut res = RoundResult { loadavg: probe::loadavg(), ..RoundResult::default() };
    let idle0 = probe::machine_idle();
    let own0 = probe::own_cpu();
    let t0 = Instant::now();

    let op_err = |command: &str, i: usize, e: String| BenchError::Op {
        side: side.label.clone(),
        round,
        command: command.to_string(),
        container: rcs[i].container_id.clone(),
        error: e,
    };

    // ADD phase.
    // At P=1 only: with other workers running, the probe would measure them.
    let buckets = super::growth_buckets(n);
    let probe_at = |order: usize| p == 1 && buckets.iter().any(|&(_, to)| to == order);
    let add = phase(n, p, sb.host_path(), reap, probe_at, controls.as_ref(), |i| rt.add_list(list, &rcs[i]).map(Some));
    let add = add.map_err(|(i, e)| op_err("ADD", i, e))?;
    res.add_phase = add.wall;
    res.add_children_cpu = add.children_cpu;
    res.add_machine_busy = add.machine_busy;
    res.add_harness_cpu = add.harness_cpu;
    let mut handed = Handed::default();
    for (i, v) in &add.values {
        handed.add_result(&rcs[*i].container_id, v, BRIDGE);
    }
    res.adds = add.samples;
    res.firewall_seen = firewall_seen(sb);

    // DEL phase.
    let del = phase(n, p, sb.host_path(), reap, |_| false, None, |i| rt.del_list(list, &rcs[i]).map(|()| None));
    let del = del.map_err(|(i, e)| op_err("DEL", i, e))?;
    res.del_phase = del.wall;
    res.del_children_cpu = del.children_cpu;
    res.dels = del.samples;

    let wall = t0.elapsed();
    let own1 = probe::own_cpu();
    let ours = (own1.0 + own1.1).saturating_sub(own0.0 + own0.1);
    let busy = probe::machine_busy_since(idle0, wall).unwrap_or_default();
    let foreign = busy.saturating_sub(ours);
    let cores = probe::cores() as f64;
    res.foreign_cpu_pct = 100.0 * foreign.as_secs_f64() / (wall.as_secs_f64() * cores).max(1e-9);

    res.violations = checks::after_del(sb, rt, data_dir, &handed);
    if add.orphans_left || del.orphans_left {
        res.violations.push(format!(
            "processes left by the plugins still running {} s after the phase ended",
            probe::ORPHAN_LIMIT.as_secs()
        ));
    }
    // The control ADDs' containers are deleted after the timed phases, and checked like the round's.
    if let Some(c) = controls {
        res.violations.extend(c.finish(reap));
    }
    drop(rig);
    Ok(res)
}

/// `n` container namespaces, made by a few threads in parallel.
fn make_containers(sb: &Sandbox, n: usize) -> Result<Vec<ContainerNs>, String> {
    let threads = n.clamp(1, 4);
    let made: Vec<Result<Vec<(usize, ContainerNs)>, String>> = std::thread::scope(|s| {
        let hs: Vec<_> = (0..threads)
            .map(|t| {
                s.spawn(move || {
                    let mut v = Vec::new();
                    for i in (t..n).step_by(threads) {
                        if interrupted() {
                            return Err("interrupted".to_string());
                        }
                        v.push((i, sb.container().map_err(|e| e.to_string())?));
                    }
                    Ok(v)
                })
            })
            .collect();
        hs.into_iter().map(|h| h.join().unwrap_or_else(|_| Err("thread panicked".into()))).collect()
    });
    let mut all: Vec<(usize, ContainerNs)> = Vec::with_capacity(n);
    let mut first_err = None;
    for m in made {
        match m {
            Ok(v) => all.extend(v),
            Err(e) => first_err = first_err.or(Some(e)),
        }
    }
    if let Some(e) = first_err {
        return Err(e);
    }
    all.sort_by_key(|(i, _)| *i);
    Ok(all.into_iter().map(|(_, c)| c).collect())
}

struct Phase {
    samples: Vec<OpSample>,
    values: Vec<(usize, Value)>,
    wall: Duration,
    /// Includes the processes plugins left behind when `reap` (reaped after the phase's wall time).
    children_cpu: Duration,
    /// Some of those were still running after [`probe::ORPHAN_LIMIT`].
    orphans_left: bool,
    /// All cores' busy time from the workers' start to the last one's end (see
    /// [`RoundResult::add_machine_busy`]).
    machine_busy: Option<Duration>,
    /// This process's own CPU time over the same span (see [`RoundResult::add_harness_cpu`]).
    harness_cpu: Option<Duration>,
}

/// Run `op(i)` for every container with `p` workers; worker `w` does `w, w+p, w+2p, ...`. Stops at
/// the first error (returned with the container index). Each worker enters the sandbox host
/// namespace `host_ns` before the timed section, so the runner spawns plugins from it the way a
/// runtime does (posix_spawn from the host namespace), without namespace work per exec.
///
/// Outside an operation's wall time and the phase's: the control ADDs due just before it, then
/// after it the CPU probe where `probe_at` says so and the control ADDs due just after it
/// ([`Controls::around`]); their CPU is left out of the phase's too, and their plugins out of the
/// operation's records.
fn phase<F, G>(
    n: usize,
    p: usize,
    host_ns: &Path,
    reap: bool,
    probe_at: G,
    controls: Option<&Controls>,
    op: F,
) -> Result<Phase, (usize, String)>
where
    F: Fn(usize) -> Result<Option<Value>, RunError> + Sync,
    G: Fn(usize) -> bool + Sync,
{
    let p = p.clamp(1, n.max(1));
    let barrier = Barrier::new(p + 1);
    let next = AtomicUsize::new(0);
    let abort = AtomicBool::new(false);
    // Time spent in CPU probes and control ADDs, taken out of the phase's wall time (its
    // throughput), and the control ADDs' CPU, out of the phase's.
    let paused = AtomicU64::new(0);
    let paused_cpu = AtomicU64::new(0);
    let nanos = |d: Duration| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
    type WorkerOut = Result<(Vec<OpSample>, Vec<(usize, Value)>), (usize, String)>;
    type Joined = (Vec<WorkerOut>, Duration, Duration, bool, Option<Duration>, Option<Duration>);
    let (outs, wall, children_cpu, orphans_left, machine_busy, harness_cpu): Joined = std::thread::scope(|s| {
        let hs: Vec<_> = (0..p)
            .map(|w| {
                let (barrier, next, abort, op, probe_at, paused) = (&barrier, &next, &abort, &op, &probe_at, &paused);
                let (paused_cpu, nanos) = (&paused_cpu, &nanos);
                s.spawn(move || -> WorkerOut {
                    let entered = ThreadInNs::enter(host_ns);
                    start_exec_recording();
                    barrier.wait();
                    let _in_host = entered.map_err(|e| (w, format!("worker: enter {}: {e}", host_ns.display())))?;
                    let mut samples = Vec::new();
                    let mut values = Vec::new();
                    for i in (w..n).step_by(p) {
                        if abort.load(Ordering::SeqCst) {
                            break;
                        }
                        if interrupted() {
                            abort.store(true, Ordering::SeqCst);
                            return Err((i, "interrupted".into()));
                        }
                        let order = next.fetch_add(1, Ordering::SeqCst) + 1;
                        // The control ADDs due around this operation, outside its time and the
                        // phase's; their plugins are not the operation's.
                        let around = |before: bool| {
                            let Some(controls) = controls.filter(|c| c.due(order, before)) else { return Ok(Vec::new()) };
                            let (t, cpu) = (Instant::now(), probe::own_cpu().1);
                            let c = controls.around(order, before);
                            paused_cpu.fetch_add(nanos(probe::own_cpu().1.saturating_sub(cpu)), Ordering::SeqCst);
                            paused.fetch_add(nanos(t.elapsed()), Ordering::SeqCst);
                            drop(take_exec_records());
                            c.map_err(|e| {
                                abort.store(true, Ordering::SeqCst);
                                stop_exec_recording();
                                (i, format!("control ADDs {} ADD #{order}: {e}", if before { "before" } else { "after" }))
                            })
                        };
                        let mut control = around(true)?;
                        let t = Instant::now();
                        let r = op(i);
                        let wall = t.elapsed();
                        // After the operation: the pause must not fall before one that is measured.
                        let cpu_probe = probe_at(order).then(|| {
                            let t = Instant::now();
                            let d = probe::cpu_probe();
                            paused.fetch_add(nanos(t.elapsed()), Ordering::SeqCst);
                            d
                        });
                        let execs = take_exec_records();
                        if r.is_ok() {
                            control.extend(around(false)?);
                        }
                        match r {
                            Ok(v) => {
                                samples.push(OpSample { order, wall, execs, cpu_probe, control });
                                if let Some(v) = v {
                                    values.push((i, v));
                                }
                            }
                            Err(e) => {
                                abort.store(true, Ordering::SeqCst);
                                stop_exec_recording();
                                return Err((i, e.to_string()));
                            }
                        }
                    }
                    stop_exec_recording();
                    Ok((samples, values))
                })
            })
            .collect();
        let (self0, cpu0) = probe::own_cpu();
        let idle0 = probe::machine_idle();
        barrier.wait();
        let t0 = Instant::now();
        let outs: Vec<WorkerOut> =
            hs.into_iter().map(|h| h.join().unwrap_or_else(|_| Err((0, "benchmark worker panicked".into())))).collect();
        let span = t0.elapsed();
        let busy = probe::machine_busy_since(idle0, span);
        let self_cpu = probe::own_cpu().0.saturating_sub(self0);
        let paused_ns = paused.load(Ordering::SeqCst);
        // The CPU probes keep one core busy while they run; control ADDs, an unknown share.
        let machine_busy = busy.filter(|_| controls.is_none()).map(|b| b.saturating_sub(Duration::from_nanos(paused_ns)));
        // The probes are this process's CPU too (a loop on one thread: its wall time).
        let harness_cpu = controls.is_none().then(|| self_cpu.saturating_sub(Duration::from_nanos(paused_ns)));
        let wall = span.saturating_sub(Duration::from_nanos(paused_ns));
        // No plugin runs now: with `reap`, every child left is one they left behind.
        let orphans_left = reap && !probe::reap_orphans(probe::ORPHAN_LIMIT);
        let cpu = probe::own_cpu().1.saturating_sub(cpu0).saturating_sub(Duration::from_nanos(paused_cpu.load(Ordering::SeqCst)));
        (outs, wall, cpu, orphans_left, machine_busy, harness_cpu)
    });
    let mut samples = Vec::with_capacity(n);
    let mut values = Vec::with_capacity(n);
    for o in outs {
        let (s, v) = o?;
        samples.extend(s);
        values.extend(v);
    }
    samples.sort_by_key(|s| s.order);
    Ok(Phase { samples, values, wall, children_cpu, orphans_left, machine_busy, harness_cpu })
}

/// Firewall objects in the sandbox host: nftables tables and the number of `CNI-*` iptables chains.
fn firewall_seen(sb: &Sandbox) -> Vec<String> {
    let mut seen = Vec::new();
    if probe::which("nft").is_some() {
        if let Ok(out) = sb.run("nft", ["list", "tables"]) {
            for l in String::from_utf8_lossy(&out.stdout).lines() {
                if let Some(t) = l.trim().strip_prefix("table ") {
                    seen.push(format!("nft table {t}"));
                }
            }
        }
    }
    for tool in ["iptables-save", "ip6tables-save"] {
        if probe::which(tool).is_none() {
            continue;
        }
        if let Ok(out) = sb.run(tool, [] as [&str; 0]) {
            let text = String::from_utf8_lossy(&out.stdout);
            let chains = text.lines().filter(|l| l.starts_with(":CNI-")).count();
            let rules = text.lines().filter(|l| l.starts_with("-A ")).count();
            if chains + rules > 0 {
                seen.push(format!("{tool}: {chains} CNI-* chains, {rules} rules"));
            }
        }
    }
    seen
}
