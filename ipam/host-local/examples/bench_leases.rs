//! ADD and DEL latency with 10 and with 1,000 existing leases, for our `host-local` and for the
//! reference (`/usr/lib/cni/host-local`), in one run; prints p50/p90 and the ratios.
//!
//!     cargo run --release --example bench_leases [-- ITERATIONS]
//!
//! Each sample is one process run (spawn, config on stdin, exit), as a runtime sees it. The two
//! lease counts are measured interleaved (ADD@10, DEL@10, ADD@1000, DEL@1000, ...) so drift in
//! machine load hits both alike. Leases are preloaded as files (the reference's format), then a
//! few warm-up calls run (our first call builds its index) before measuring.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const REFERENCE: &str = "/usr/lib/cni/host-local";
const COUNTS: [usize; 2] = [10, 1000];

fn ours_binary() -> PathBuf {
    let exe = std::env::current_exe().expect("current_exe");
    let profile_dir = exe.parent().and_then(Path::parent).expect("target/<profile>").to_path_buf();
    let release = profile_dir.file_name().is_some_and(|n| n == "release");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut build = Command::new(cargo);
    build.args(["build", "-q", "-p", "host-local", "--bin", "host-local"]).current_dir(env!("CARGO_MANIFEST_DIR"));
    if release {
        build.arg("--release");
    }
    let st = build.status().expect("run cargo build");
    assert!(st.success(), "cargo build of host-local failed");
    let bin = profile_dir.join("host-local");
    assert!(bin.exists(), "{} missing", bin.display());
    if !release {
        eprintln!("note: not a release build; run with --release for meaningful numbers");
    }
    bin
}

fn config(data_dir: &Path) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({
        "cniVersion": "1.0.0",
        "name": "bench",
        "type": "host-local",
        "ipam": {"type": "host-local", "dataDir": data_dir, "ranges": [[{"subnet": "10.128.0.0/16"}]]}
    }))
    .unwrap()
}

fn run(bin: &Path, cmd: &str, cid: &str, conf: &[u8]) -> Duration {
    let t = Instant::now();
    let mut child = Command::new(bin)
        .env_clear()
        .env("CNI_COMMAND", cmd)
        .env("CNI_CONTAINERID", cid)
        .env("CNI_IFNAME", "eth0")
        .env("CNI_NETNS", "/proc/self/ns/net")
        .env("CNI_NETNS_OVERRIDE", "1")
        .env("CNI_PATH", "/usr/lib/cni")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn plugin");
    child.stdin.take().unwrap().write_all(conf).unwrap();
    let out = child.wait_with_output().unwrap();
    let d = t.elapsed();
    assert!(out.status.success(), "{} {cmd} {cid} failed: {}", bin.display(), String::from_utf8_lossy(&out.stdout));
    d
}

/// Write `n` leases as the reference would, plus its round-robin file.
fn preload(dir: &Path, n: usize) {
    std::fs::create_dir_all(dir).unwrap();
    let mut last = String::new();
    for i in 0..n {
        let ip = format!("10.128.{}.{}", (i + 2) / 256, (i + 2) % 256);
        std::fs::write(dir.join(&ip), format!("preloaded-{i}\r\neth0")).unwrap();
        last = ip;
    }
    std::fs::write(dir.join("last_reserved_ip.0"), last).unwrap();
}

fn pct(v: &mut [Duration], p: f64) -> f64 {
    v.sort();
    let i = ((v.len() as f64 - 1.0) * p).round() as usize;
    v[i].as_secs_f64() * 1e3
}

struct Stats {
    add: [Vec<Duration>; 2],
    del: [Vec<Duration>; 2],
}

fn measure(bin: &Path, root: &Path, iterations: usize) -> Stats {
    let dirs: Vec<PathBuf> = COUNTS.iter().map(|n| root.join(format!("n{n}"))).collect();
    let confs: Vec<Vec<u8>> = dirs.iter().map(|d| config(d)).collect();
    for (d, n) in dirs.iter().zip(COUNTS) {
        preload(&d.join("bench"), n);
    }
    for i in 0..5 {
        for c in &confs {
            run(bin, "ADD", &format!("warm-{i}"), c);
            run(bin, "DEL", &format!("warm-{i}"), c);
        }
    }
    let mut s = Stats { add: [vec![], vec![]], del: [vec![], vec![]] };
    for i in 0..iterations {
        let cid = format!("bench-{i}");
        for (k, c) in confs.iter().enumerate() {
            s.add[k].push(run(bin, "ADD", &cid, c));
            s.del[k].push(run(bin, "DEL", &cid, c));
        }
    }
    s
}

fn main() {
    let iterations: usize = std::env::args().nth(1).and_then(|a| a.parse().ok()).unwrap_or(300);
    let ours = ours_binary();
    let root = std::env::temp_dir().join(format!("host-local-bench-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    let mut impls: Vec<(&str, PathBuf)> = vec![("ours", ours)];
    if Path::new(REFERENCE).exists() {
        impls.push(("reference", PathBuf::from(REFERENCE)));
    } else {
        eprintln!("note: {REFERENCE} not installed; measuring ours only");
    }
    println!("host-local ADD/DEL latency per process run, {iterations} samples each (ms)");
    println!("{:<10} {:>7} {:>9} {:>9} {:>9} {:>9}", "impl", "leases", "ADD p50", "ADD p90", "DEL p50", "DEL p90");
    let mut p50 = Vec::new();
    for (name, bin) in &impls {
        let mut s = measure(bin, &root.join(name), iterations);
        let mut row = Vec::new();
        for (k, n) in COUNTS.iter().enumerate() {
            let (a50, a90) = (pct(&mut s.add[k], 0.5), pct(&mut s.add[k], 0.9));
            let (d50, d90) = (pct(&mut s.del[k], 0.5), pct(&mut s.del[k], 0.9));
            println!("{name:<10} {n:>7} {a50:>9.3} {a90:>9.3} {d50:>9.3} {d90:>9.3}");
            row.push((a50, d50));
        }
        p50.push((*name, row));
    }
    println!();
    for (name, row) in &p50 {
        println!(
            "{name}: p50 at 1000 leases / p50 at 10 leases: ADD {:.2}x, DEL {:.2}x (goal for ours: <= 1.5x)",
            row[1].0 / row[0].0,
            row[1].1 / row[0].1
        );
    }
    if p50.len() == 2 {
        for (k, n) in COUNTS.iter().enumerate() {
            println!(
                "reference / ours at {n} leases: ADD {:.2}x, DEL {:.2}x",
                p50[1].1[k].0 / p50[0].1[k].0,
                p50[1].1[k].1 / p50[0].1[k].1
            );
        }
    }
    let _ = std::fs::remove_dir_all(&root);
}
