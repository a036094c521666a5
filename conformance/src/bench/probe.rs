//! Things measured outside the timed rounds: processes spawned per operation (strace), the exec
//! floor of the harness, binary sizes, and how busy the machine is.

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use serde::Serialize;

use super::scenario::{self, IPAM};
use super::stats::Summary;
use crate::runner::NetworkConfigList;
use crate::sandbox::Sandbox;

/// How process counts are obtained (printed with them).
pub const SPAWN_METHOD: &str = "strace -f -e trace=execve,clone,clone3,fork,vfork around each plugin of one steady-state \
     sample ADD and DEL (second container, first still attached); count = successful execve calls of the plugin's process \
     tree minus the plugin itself, plus processes forked that never exec (listed as \"fork\"). The same sample gives each program's own peak RSS: strace delays every exit_group \
     by 20 ms while a sampler reads VmHWM of the processes in the sandbox namespace";

/// `name` on `$PATH` (or the usual sbin directories).
pub fn which(name: &str) -> Option<PathBuf> {
    let path = std::env::var("PATH").unwrap_or_default();
    let found = path
        .split(':')
        .chain(["/usr/sbin", "/sbin", "/usr/bin", "/bin"])
        .filter(|d| !d.is_empty())
        .map(|d| Path::new(d).join(name))
        .find(|p| std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0));
    found
}

/// Size of a plugin binary.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Binary {
    pub name: String,
    pub bytes: u64,
}

pub fn binary_sizes(dir: &Path, names: &[String]) -> Vec<Binary> {
    names
        .iter()
        .filter_map(|n| Some(Binary { name: n.clone(), bytes: std::fs::metadata(dir.join(n)).ok()?.len() }))
        .collect()
}

/// Processes one plugin execution started (its own process excluded).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SpawnCount {
    pub plugin: String,
    pub command: String,
    /// All processes started below the plugin.
    pub total: usize,
    /// Of which IPAM plugin executions (delegation).
    pub ipam: usize,
    /// `total - ipam`.
    pub besides_ipam: usize,
    /// Program basename → executions; `"fork"` for processes that never exec'd (helpers).
    pub programs: BTreeMap<String, usize>,
}

/// Peak RSS of one program's own process (not its children), max over the sample.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ProgramRss {
    pub program: String,
    pub kib: u64,
    pub processes: usize,
}

/// What the untimed strace sample measured.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ProcSample {
    pub spawns: Vec<SpawnCount>,
    pub own_rss: Vec<ProgramRss>,
}

/// Count the processes each plugin of `chain` (from `dir`) spawns on a steady-state ADD and DEL, and
/// sample every program's own peak RSS.
pub fn sample_processes(dir: &Path, chain: &[String], cni_version: &str, reap: bool) -> Result<ProcSample, String> {
    let strace = which("strace").ok_or("strace is not installed (apt-get install -y strace)")?;
    let sb = Sandbox::new().map_err(|e| format!("sandbox: {e}"))?;
    let shim = sb.tempdir().join("strace-shim");
    let traces = sb.tempdir().join("traces");
    for d in [&shim, &traces] {
        std::fs::create_dir_all(d).map_err(|e| format!("create {}: {e}", d.display()))?;
    }
    let real = dir.canonicalize().map_err(|e| format!("{}: {e}", dir.display()))?;
    for p in chain {
        // The wrapper restores CNI_PATH to the real directory so delegated IPAM runs unwrapped (but
        // still traced, as a child of the plugin).
        let script = format!(
            "#!/bin/sh\nCNI_PATH='{real}'; export CNI_PATH\nexec '{strace}' -f -qq -s 4096 -e trace=execve,exit_group,clone,clone3,fork,vfork -e signal=none \
             -e inject=exit_group:delay_enter=20000 -o \"{traces}/$CNI_COMMAND.{p}.$$\" '{real}/{p}' \"$@\"\n",
            real = real.display(),
            strace = strace.display(),
            traces = traces.display(),
        );
        let f = shim.join(p);
        std::fs::write(&f, script).map_err(|e| format!("write {}: {e}", f.display()))?;
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o755)).map_err(|e| e.to_string())?;
    }
    let rt = sb.runtime(&shim);
    let list = NetworkConfigList::from_json(&scenario::conflist(chain, cni_version, &sb.tempdir().join("ipam")))
        .map_err(|e| e.to_string())?;
    let c0 = sb.container().map_err(|e| e.to_string())?;
    let c1 = sb.container().map_err(|e| e.to_string())?;
    let rc0 = scenario::runtime_conf(chain, 0, 0, c0.path());
    let rc1 = scenario::runtime_conf(chain, 0, 1, c1.path());
    let clear = || {
        if let Ok(rd) = std::fs::read_dir(&traces) {
            for e in rd.flatten() {
                let _ = std::fs::remove_file(e.path());
            }
        }
    };
    let netns_ino = std::fs::metadata(sb.host_path())
        .map(|m| std::os::unix::fs::MetadataExt::ino(&m))
        .map_err(|e| e.to_string())?;
    let stop = AtomicBool::new(false);
    let (counts, rss) = std::thread::scope(|s| {
        let sampler = s.spawn(|| sample_rss(netns_ino, &stop));
        let run = || -> Result<Vec<SpawnCount>, String> {
            rt.add_list(&list, &rc0).map_err(|e| format!("sample ADD 0: {e}"))?;
            clear();
            rt.add_list(&list, &rc1).map_err(|e| format!("sample ADD 1: {e}"))?;
            let mut counts = read_traces(&traces)?;
            clear();
            rt.del_list(&list, &rc1).map_err(|e| format!("sample DEL 1: {e}"))?;
            counts.extend(read_traces(&traces)?);
            rt.del_list(&list, &rc0).map_err(|e| format!("sample DEL 0: {e}"))?;
            Ok(counts)
        };
        let counts = run();
        if reap {
            reap_orphans(ORPHAN_LIMIT);
        }
        stop.store(true, Ordering::SeqCst);
        (counts, sampler.join().unwrap_or_default())
    });
    let mut counts = counts?;
    // Chain order, ADD first.
    let pos = |p: &str| chain.iter().position(|c| c == p).unwrap_or(usize::MAX);
    counts.sort_by_key(|c| (c.command != "ADD", pos(&c.plugin)));
    let mut own_rss: Vec<ProgramRss> = rss
        .into_iter()
        .map(|(program, v)| ProgramRss { program, kib: v.iter().copied().max().unwrap_or(0), processes: v.len() })
        .collect();
    own_rss.sort_by_key(|r| (pos(&r.program), r.program.clone()));
    Ok(ProcSample { spawns: counts, own_rss })
}

/// Until `stop`: poll the VmHWM of every process in the network namespace `netns_ino` (strace and
/// shells excluded); returns program basename → the peak of each process seen.
fn sample_rss(netns_ino: u64, stop: &AtomicBool) -> BTreeMap<String, Vec<u64>> {
    use std::os::unix::fs::MetadataExt;
    let me = std::process::id();
    let my_exe = std::env::current_exe().ok().and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()));
    let mut peak: BTreeMap<u32, (String, u64)> = BTreeMap::new();
    while !stop.load(Ordering::SeqCst) {
        if let Ok(rd) = std::fs::read_dir("/proc") {
            for e in rd.flatten() {
                let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else { continue };
                if pid == me {
                    continue;
                }
                let base = Path::new("/proc").join(pid.to_string());
                if !std::fs::metadata(base.join("ns/net")).is_ok_and(|m| m.ino() == netns_ino) {
                    continue;
                }
                let Ok(exe) = std::fs::read_link(base.join("exe")) else { continue };
                let name = exe.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
                if matches!(name.as_str(), "strace" | "sh" | "dash" | "bash") {
                    continue;
                }
                let Ok(status) = std::fs::read_to_string(base.join("status")) else { continue };
                let hwm = status
                    .lines()
                    .find_map(|l| l.strip_prefix("VmHWM:"))
                    .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok());
                if let Some(hwm) = hwm {
                    let ent = peak.entry(pid).or_insert((name.clone(), 0));
                    if ent.0 != name {
                        // exec: a new program (and a new mm) in the same process.
                        *ent = (name, hwm);
                    } else {
                        ent.1 = ent.1.max(hwm);
                    }
                }
            }
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    let mut out: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    for (_, (name, hwm)) in peak {
        // The runner's own forked child before it execs the plugin.
        if Some(&name) == my_exe.as_ref() {
            continue;
        }
        out.entry(name).or_default().push(hwm);
    }
    out
}

fn read_traces(dir: &Path) -> Result<Vec<SpawnCount>, String> {
    let mut out = Vec::new();
    let mut files: Vec<PathBuf> =
        std::fs::read_dir(dir).map_err(|e| e.to_string())?.flatten().map(|e| e.path()).collect();
    files.sort();
    for f in files {
        let name = f.file_name().unwrap_or_default().to_string_lossy().into_owned();
        let mut parts = name.splitn(3, '.');
        let (Some(cmd), Some(plugin)) = (parts.next(), parts.next()) else { continue };
        let text = std::fs::read_to_string(&f).map_err(|e| format!("{}: {e}", f.display()))?;
        let execs = successful_execs(&text);
        // The first exec is the plugin itself (strace runs it).
        let children: Vec<&String> = execs.iter().skip(1).collect();
        let mut programs = BTreeMap::new();
        for p in &children {
            let base = p.rsplit('/').next().unwrap_or(p).to_string();
            *programs.entry(base).or_insert(0) += 1;
        }
        let forks = forked_without_exec(&text);
        if forks > 0 {
            programs.insert("fork".to_string(), forks);
        }
        let ipam = programs.get(IPAM).copied().unwrap_or(0);
        let total = children.len() + forks;
        out.push(SpawnCount {
            plugin: plugin.to_string(),
            command: cmd.to_string(),
            total,
            ipam,
            besides_ipam: total - ipam,
            programs,
        });
    }
    Ok(out)
}

/// The system calls of an `strace -f` log, each whole, as (pid, call): a call split into
/// `<unfinished ...>` and `<... name resumed>` lines is joined back. Lines without a pid (a log
/// of one process) get an empty pid.
fn strace_calls(log: &str) -> Vec<(&str, String)> {
    let mut pending: BTreeMap<&str, &str> = BTreeMap::new();
    let mut out = Vec::new();
    for line in log.lines() {
        let (pid, rest) = match line.split_once(' ') {
            Some((p, r)) if p.chars().all(|c| c.is_ascii_digit()) => (p, r.trim_start()),
            _ => ("", line),
        };
        if let Some(start) = rest.strip_suffix("<unfinished ...>") {
            pending.insert(pid, start);
        } else if rest.starts_with("<... ") {
            if let (Some(start), Some((_, tail))) = (pending.remove(pid), rest.split_once("resumed>")) {
                out.push((pid, format!("{start}{tail}")));
            }
        } else {
            out.push((pid, rest.to_string()));
        }
    }
    out
}

/// Whether a whole call returned 0.
fn returned_zero(call: &str) -> bool {
    call.trim_end().ends_with("= 0")
}

/// Paths of successful `execve` calls in an `strace -f` log, in order.
pub fn successful_execs(log: &str) -> Vec<String> {
    strace_calls(log)
        .into_iter()
        .filter(|(_, call)| returned_zero(call))
        .filter_map(|(_, call)| call.strip_prefix("execve(\"").map(|a| a.split('"').next().unwrap_or("").to_string()))
        .collect()
}

/// Processes (not threads) created in an `strace -f` log that never made a successful `execve`:
/// helpers a plugin forks.
pub fn forked_without_exec(log: &str) -> usize {
    const CALLS: [&str; 4] = ["clone(", "clone3(", "fork(", "vfork("];
    let calls = strace_calls(log);
    let exec_pids: Vec<&str> =
        calls.iter().filter(|(_, c)| c.starts_with("execve(") && returned_zero(c)).map(|(p, _)| *p).collect();
    calls
        .iter()
        .filter(|(_, c)| CALLS.iter().any(|name| c.starts_with(name)) && !c.contains("CLONE_THREAD"))
        .filter_map(|(_, c)| c.rsplit("= ").next().map(str::trim))
        .filter(|child| !child.is_empty() && child.chars().all(|d| d.is_ascii_digit()))
        .filter(|child| !exec_pids.contains(child))
        .count()
}

/// How long [`reap_orphans`] waits for processes plugins left running.
pub const ORPHAN_LIMIT: Duration = Duration::from_secs(10);

/// Reap every child of this process, waiting up to `limit` for those still running; `true` when
/// none is left. For a child subreaper with no plugin running: the children are then the
/// processes plugins left behind (see `Options::reap_orphans`), and reaping them adds their CPU
/// to `RUSAGE_CHILDREN`.
pub fn reap_orphans(limit: Duration) -> bool {
    let start = Instant::now();
    loop {
        let mut status = 0;
        // SAFETY: plain wait4 on any child, status out-parameter only.
        let pid = unsafe { libc::wait4(-1, &mut status, libc::WNOHANG, std::ptr::null_mut()) };
        if pid > 0 {
            continue;
        }
        if pid < 0 {
            // ECHILD: no child left (EINTR: try again).
            if std::io::Error::last_os_error().raw_os_error() == Some(libc::EINTR) {
                continue;
            }
            return true;
        }
        if start.elapsed() >= limit {
            return false;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// Latency of the harness alone: exec `/bin/true` through the runner the way the timed phases do,
/// from a worker thread inside the sandbox host namespace (posix_spawn, exec, reap).
pub fn exec_floor(samples: usize) -> Result<Summary, String> {
    let truth = which("true").ok_or("no `true` binary")?;
    let sb = Sandbox::new().map_err(|e| format!("sandbox: {e}"))?;
    let dir = sb.tempdir().join("floor");
    std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    std::os::unix::fs::symlink(&truth, dir.join("noop")).map_err(|e| e.to_string())?;
    let rt = sb.runtime(&dir);
    std::thread::scope(|s| {
        s.spawn(|| {
            let _in_host = crate::nsexec::ThreadInNs::enter(sb.host_path()).map_err(|e| format!("enter sandbox: {e}"))?;
            let mut v = Vec::with_capacity(samples);
            for _ in 0..samples {
                let t = Instant::now();
                rt.exec_plugin("noop", "", b"{}", &[]).map_err(|e| e.to_string())?;
                v.push(t.elapsed());
            }
            Ok(Summary::of(&v))
        })
        .join()
        .unwrap_or_else(|_| Err("exec floor thread panicked".into()))
    })
}

/// Load and noise indicators.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Machine {
    pub cores: usize,
    pub kernel: String,
    pub loadavg_start: String,
    pub loadavg_end: String,
}

/// How long a round waits, after writing back the file systems it uses, before its timed phases
/// (see [`settle`]).
pub const SETTLE: Duration = Duration::from_secs(5);

/// Let the file systems of `dirs` settle before a timed phase: write back their dirty data
/// (`syncfs`), then wait `quiet`. ext4 without a journal (this VM's root file system) skips, when
/// it allocates an inode, every free inode deleted less than 5 s ago, or 305 s ago while the
/// inode table block is not yet written back (`recently_deleted`, one buffer lookup each). The
/// previous round deleted thousands of files (leases, cache entries, namespace files); without
/// this, every file the next round creates (leases, the runtime's cache entries) scans past them,
/// and the more so the further the round gets. Errors are ignored: settling is best effort.
pub fn settle(dirs: &[&Path], quiet: Duration) {
    for d in dirs {
        if let Ok(f) = std::fs::File::open(d) {
            // SAFETY: syncfs on a descriptor we own.
            unsafe { libc::syncfs(std::os::fd::AsRawFd::as_raw_fd(&f)) };
        }
    }
    std::thread::sleep(quiet);
}

/// `/dev/shm` ([`crate::sandbox::SHM_DIR`]) when it is a tmpfs (`statfs`), for files of the
/// harness's own that should cost the same at every point of a run.
pub fn tmpfs_dir() -> Option<PathBuf> {
    let path = PathBuf::from(crate::sandbox::SHM_DIR);
    let c = std::ffi::CString::new(crate::sandbox::SHM_DIR).ok()?;
    // SAFETY: statfs on a NUL-terminated path into a zeroed struct we own.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    let ok = unsafe { libc::statfs(c.as_ptr(), &mut st) } == 0;
    // `f_type` and the magic are i64 with glibc, u64 and i64 with musl.
    #[allow(clippy::unnecessary_cast)]
    let tmpfs = st.f_type as u64 == libc::TMPFS_MAGIC as u64;
    (ok && tmpfs).then_some(path)
}

/// The machine's speed for plain computation now: the shortest of five runs of a fixed loop of
/// integer arithmetic (~0.2 ms each here), no system calls and no memory beyond registers, so that neither
/// the kernel's state nor the cache's tells in it. Compared across a round, it shows how much of a
/// change in the plugins' times is the machine's (a VM's CPU speed moves by up to 2× here).
pub fn cpu_probe() -> Duration {
    (0..5)
        .map(|_| {
            let t = Instant::now();
            let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
            for i in 0..100_000u64 {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x = x.wrapping_add(i);
            }
            std::hint::black_box(x);
            t.elapsed()
        })
        .min()
        .unwrap_or_default()
}

pub fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

/// The CPUs this process may run on (1 when that cannot be told).
pub fn cores() -> usize {
    std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1)
}

pub fn machine() -> Machine {
    Machine {
        cores: cores(),
        kernel: std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default().trim().to_string(),
        loadavg_start: loadavg(),
        loadavg_end: String::new(),
    }
}

/// All cores' busy time over the last `span`, given [`machine_idle`] read at its start: the span
/// times the cores, less the idle time since. `None` when the idle time cannot be read.
pub fn machine_busy_since(idle0: Option<Duration>, span: Duration) -> Option<Duration> {
    let idle = machine_idle()?.saturating_sub(idle0?);
    let cores = u32::try_from(cores()).unwrap_or(u32::MAX);
    Some(span.saturating_mul(cores).saturating_sub(idle))
}

/// Idle time of all cores so far, to the nanosecond, from the scheduler tick's per-CPU idle
/// accounting in `/proc/timer_list` (`idle_sleeptime` + `iowait_sleeptime`, plus the idle period
/// a core is in at the moment of reading, from `idle_entrytime` to `now`); `None` where the file
/// cannot be read (it needs root) or has no such fields. `/proc/stat` counts in 10 ms units, too
/// coarse for a phase of 50 ADDs at P=8 (60-90 ms), and cpuidle's residency counts an idle period
/// only once it ends, so a core asleep when the phase starts would add its whole sleep.
pub fn machine_idle() -> Option<Duration> {
    parse_timer_list_idle(&std::fs::read_to_string("/proc/timer_list").ok()?)
}

/// The idle time of all CPUs in the text of `/proc/timer_list` (see [`machine_idle`]).
pub fn parse_timer_list_idle(text: &str) -> Option<Duration> {
    let nsecs = |line: &str| line.split(':').nth(1)?.split_whitespace().next()?.parse::<u64>().ok();
    let now = text.lines().find_map(|l| l.strip_prefix("now at "))?.split_whitespace().next()?.parse::<u64>().ok()?;
    let mut total = 0u64;
    let mut cpus = 0;
    // One block per CPU; each field is read from the CPU's tick_sched section.
    for block in text.split("\ncpu: ").skip(1) {
        let field = |name: &str| block.lines().find(|l| l.trim_start().starts_with(name)).and_then(nsecs);
        let Some(sleep) = field(".idle_sleeptime") else { continue };
        let iowait = field(".iowait_sleeptime").unwrap_or(0);
        let entry = field(".idle_entrytime").unwrap_or(0);
        let left = field(".idle_exittime").unwrap_or(0).max(field(".idle_waketime").unwrap_or(0));
        // In an idle period now: it entered after it last left.
        let ongoing = if entry > left { now.saturating_sub(entry) } else { 0 };
        total += sleep + iowait + ongoing;
        cpus += 1;
    }
    (cpus > 0).then(|| Duration::from_nanos(total))
}

/// CPU time (user + sys) of this process itself and of its reaped children so far.
pub fn own_cpu() -> (Duration, Duration) {
    let get = |who| {
        // SAFETY: getrusage fills a plain C struct we own.
        let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
        unsafe { libc::getrusage(who, &mut ru) };
        let tv = |t: libc::timeval| Duration::from_secs(t.tv_sec as u64) + Duration::from_micros(t.tv_usec as u64);
        tv(ru.ru_utime) + tv(ru.ru_stime)
    };
    (get(libc::RUSAGE_SELF), get(libc::RUSAGE_CHILDREN))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timer_list_idle_counts_the_ongoing_idle_period() {
        // CPU 0 is running (left idle after entering), CPU 1 has been idle since 900 ns.
        let text = "Timer List Version: v0.10\nHRTIMER_MAX_CLOCK_BASES: 8\nnow at 1000 nsecs\n\ncpu: 0\n clock 0:\n  .idle_entrytime : 500 nsecs\n  .idle_waketime  : 600 nsecs\n  .idle_exittime  : 610 nsecs\n  .idle_sleeptime : 300 nsecs\n  .iowait_sleeptime: 20 nsecs\n\ncpu: 1\n  .idle_entrytime : 900 nsecs\n  .idle_waketime  : 700 nsecs\n  .idle_exittime  : 710 nsecs\n  .idle_sleeptime : 400 nsecs\n  .iowait_sleeptime: 0 nsecs\n\nTick Device: mode:     1\n";
        assert_eq!(parse_timer_list_idle(text), Some(Duration::from_nanos(300 + 20 + 400 + 100)));
        assert_eq!(parse_timer_list_idle("now at 5 nsecs\n"), None);
    }

    #[test]
    fn strace_parsing() {
        let log = r#"100 execve("/opt/bridge", ["bridge"], 0x7ff /* 9 vars */) = 0
101 execve("/usr/sbin/iptables", ["iptables"], 0x1 /* 9 vars */ <unfinished ...>
102 execve("/opt/host-local", ["host-local"], 0x1 /* 9 vars */) = 0
101 <... execve resumed>)                = 0
103 execve("/usr/local/sbin/nft", ["nft"], 0x1) = -1 ENOENT (No such file or directory)
103 execve("/usr/sbin/nft", ["nft"], 0x1) = 0
103 +++ exited with 0 +++
"#;
        assert_eq!(
            successful_execs(log),
            vec!["/opt/bridge", "/opt/host-local", "/usr/sbin/iptables", "/usr/sbin/nft"]
        );
    }

    #[test]
    fn forks_that_never_exec_are_counted() {
        let log = r#"200 execve("/opt/bridge", ["bridge"], 0x7ff /* 9 vars */) = 0
200 clone3({flags=CLONE_VM|CLONE_FS|CLONE_FILES|CLONE_SIGHAND|CLONE_THREAD|CLONE_SYSVSEM, stack=0x1}, 88) = 201
200 clone3({flags=CLONE_VM|CLONE_VFORK, exit_signal=SIGCHLD, stack=0x7f, stack_size=0x9000}, 88 <unfinished ...>
202 execve("/opt/host-local", ["host-local"], 0x1 /* 9 vars */) = 0
200 <... clone3 resumed>) = 202
201 clone3({flags=CLONE_PIDFD, pidfd=0x7ff, exit_signal=SIGCHLD, stack=NULL, stack_size=0} <unfinished ...>
201 <... clone3 resumed> => {pidfd=[12]}, 64) = 203
203 exit_group(0) = ?
"#;
        assert_eq!(forked_without_exec(log), 1);
        assert_eq!(successful_execs(log), vec!["/opt/bridge", "/opt/host-local"]);
        let only_spawns = log.lines().take(5).collect::<Vec<_>>().join("\n");
        assert_eq!(forked_without_exec(&only_spawns), 0);
    }
}
