//! cnibench: benchmark CNI plugin directories the way a runtime drives them, optionally side by side
//! with another directory (e.g. the reference plugins). See conformance/BENCH.md.

use std::path::PathBuf;
use std::process::ExitCode;

use conformance::bench::{self, Options, Scenario};

const USAGE: &str = "usage: cnibench [--scenario bridge|bridge-portmap|full] [-n N] [-p P[,P...]] [--rounds R]
                [--dir DIR] [--vs DIR] [--cni-version V] [--json] [--json-file PATH]
                [--samples-file PATH] [--cache-dir DIR] [--no-spawn-count] [--no-settle]
                [--control] [--quiet]

  --scenario S      bridge (bridge+host-local, isGateway, ipMasq; default), bridge-portmap (+ portmap,
                    2 published ports per container), full (+ isolation where the binary exists)
  -n N              containers per round (default 50)
  -p P[,P...]       parallel runtime workers; a list runs everything once per value (default 1)
  --rounds R        rounds per side and P; sides interleave A,B,A,B (default 3)
  --dir DIR         plugin directory of side A (default: the directory of this executable, i.e.
                    target/release for target/release/cnibench)
  --vs DIR          plugin directory of side B, e.g. /usr/lib/cni; ratios are A/B of the medians
  --cni-version V   cniVersion of the conflist (default 1.0.0: the reference v1.1.1 supports <= 1.0.0)
  --json            print the report as JSON on stdout (instead of the tables)
  --json-file PATH  also write the JSON report to PATH
  --samples-file PATH
                    write every ADD and DEL to PATH as CSV (side, P, round, op, order, wall ms,
                    each plugin's wall and CPU ms, and the wall ms of the control ADDs run around
                    it), to see how latencies move within a round
  --cache-dir DIR   keep the runtime's result cache (one file per attachment, written on each ADD)
                    under DIR (default /dev/shm when it is a tmpfs, else the round's directory
                    under TMPDIR, where the plugins' data always is): it is the runtime's work, the
                    same for both sides, and on ext4 without a journal its file creations slow down
                    as files are deleted, which would count as the plugins' growth
  --no-spawn-count  skip counting spawned processes with strace
  --no-settle       start each round's timed phases at once, instead of after writing back the
                    file systems the round uses and waiting 5 s (so that the files the previous
                    round deleted do not slow the inode allocations of this one on ext4 without
                    a journal)
  --control         control ADDs: at P=1, just before the first and just after the last ADD of
                    each by-order bucket (ADDs #1-10, #491-500, ...), the same chain ADDed into an
                    empty bridge of a sandbox of their own, outside the measured time, to show how
                    the machine's speed for the chain moved between the buckets (for growth runs:
                    the work an ADD leaves to the kernel then falls on a control ADD, outside the
                    phase's time, which could flatter the P=1 throughput)
  --quiet           no progress lines on stderr

Needs root (network namespaces). Everything runs in throwaway namespaces, removed on exit.
Exit status: 0 ok, 1 error, 2 post-run checks failed, 130 interrupted.";

extern "C" fn on_signal(_: libc::c_int) {
    bench::interrupt();
}

fn parse(args: &[String]) -> Result<(Options, bool, Option<PathBuf>), String> {
    let mut opts = Options::new(Scenario::Bridge, PathBuf::new());
    let mut dir = None;
    let mut json = false;
    let mut json_file = None;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let mut val = |name: &str| it.next().cloned().ok_or_else(|| format!("{name} needs a value"));
        match a.as_str() {
            "--scenario" => {
                let v = val(a)?;
                opts.scenario = Scenario::parse(&v).ok_or_else(|| format!("unknown scenario {v:?}"))?;
            }
            "-n" => opts.n = val(a)?.parse().map_err(|e| format!("-n: {e}"))?,
            "-p" => {
                opts.parallel = val(a)?
                    .split(',')
                    .map(|x| x.trim().parse::<usize>().map_err(|e| format!("-p: {e}")))
                    .collect::<Result<_, _>>()?
            }
            "--rounds" => opts.rounds = val(a)?.parse().map_err(|e| format!("--rounds: {e}"))?,
            "--dir" => dir = Some(PathBuf::from(val(a)?)),
            "--vs" => opts.vs = Some(PathBuf::from(val(a)?)),
            "--cni-version" => opts.cni_version = val(a)?,
            "--json" => json = true,
            "--json-file" => json_file = Some(PathBuf::from(val(a)?)),
            "--samples-file" => opts.samples_file = Some(PathBuf::from(val(a)?)),
            "--cache-dir" => opts.cache_dir = Some(PathBuf::from(val(a)?)),
            "--no-spawn-count" => opts.count_spawns = false,
            "--no-settle" => opts.settle = None,
            "--control" => opts.control = true,
            "--quiet" => opts.progress = false,
            "-h" | "--help" => return Err(String::new()),
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    opts.dir = dir.unwrap_or_else(conformance::our_plugin_dir);
    Ok((opts, json, json_file))
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let quiet = args.iter().any(|a| a == "--quiet");
    let (mut opts, json, json_file) = match parse(&args) {
        Ok(v) => v,
        Err(e) if e.is_empty() => {
            println!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            eprintln!("cnibench: {e}\n{USAGE}");
            return ExitCode::from(1);
        }
    };
    opts.progress = !quiet;
    // Orphaned plugin helpers (bridge DEL's, see cni_common::netlink::DetachedDelete) are
    // reparented here, as to a runtime's subreaper, and reaped after each phase: their CPU counts.
    // SAFETY: prctl with an integer argument.
    opts.reap_orphans = unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) } == 0;
    if !nix::unistd::geteuid().is_root() {
        eprintln!("cnibench: needs root (it creates network namespaces)");
        return ExitCode::from(1);
    }
    // SAFETY: the handler only stores to an atomic, which is async-signal-safe.
    unsafe {
        libc::signal(libc::SIGINT, on_signal as extern "C" fn(libc::c_int) as libc::sighandler_t);
        libc::signal(libc::SIGTERM, on_signal as extern "C" fn(libc::c_int) as libc::sighandler_t);
    }
    let report = match bench::run(&opts) {
        Ok(r) => r,
        Err(bench::BenchError::Interrupted) => {
            eprintln!("cnibench: interrupted; sandboxes removed");
            return ExitCode::from(130);
        }
        Err(e) => {
            eprintln!("cnibench: {e}");
            return ExitCode::from(1);
        }
    };
    let text = serde_json::to_string_pretty(&report).unwrap_or_else(|e| format!("{{\"error\": \"{e}\"}}"));
    if let Some(p) = json_file {
        if let Err(e) = std::fs::write(&p, format!("{text}\n")) {
            eprintln!("cnibench: write {}: {e}", p.display());
        }
    }
    if json {
        println!("{text}");
    } else {
        print!("{}", report.render());
    }
    if report.checks_passed() {
        ExitCode::SUCCESS
    } else {
        eprintln!("cnibench: POST-RUN CHECKS FAILED ({} violations)", report.violations.len());
        ExitCode::from(2)
    }
}
