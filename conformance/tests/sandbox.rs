//! Sandbox lifecycle: namespaces and dirs exist while the sandbox lives and are gone after drop, also
//! after a panic.

use std::path::PathBuf;

use conformance::{require_root, Sandbox};

fn netns_exists(name: &str) -> bool {
    let out = std::process::Command::new("ip").args(["netns", "list"]).output().unwrap();
    String::from_utf8_lossy(&out.stdout).lines().any(|l| l.split_whitespace().next() == Some(name))
}

#[test]
fn host_and_container_created_and_removed() {
    require_root();
    let (host, container, tmp) = {
        let sb = Sandbox::new().unwrap();
        let c = sb.container().unwrap();
        let pid = std::process::id().to_string();
        assert!(sb.host_name().contains(&pid) && sb.host_name().starts_with("cnit-"), "{}", sb.host_name());
        assert_eq!(sb.host_path(), PathBuf::from("/run/netns").join(sb.host_name()));
        assert_eq!(c.path(), PathBuf::from("/run/netns").join(c.name()));
        assert!(netns_exists(sb.host_name()) && netns_exists(c.name()));
        assert!(sb.host_path().exists() && c.path().exists());
        assert!(sb.tempdir().is_dir());
        std::fs::write(sb.tempdir().join("f"), "x").unwrap();
        std::fs::create_dir_all(sb.tempdir().join("a/b")).unwrap();
        // host lo is up, container lo is down
        assert!(sb.host().link_is_up("lo").unwrap());
        assert!(!c.link_is_up("lo").unwrap());
        (sb.host_name().to_string(), c.name().to_string(), sb.tempdir().to_path_buf())
    };
    assert!(!netns_exists(&host), "host netns {host} left behind");
    assert!(!netns_exists(&container), "container netns {container} left behind");
    assert!(!tmp.exists(), "{} left behind", tmp.display());
}

#[test]
fn removed_after_panic() {
    require_root();
    let names = std::sync::Mutex::new(Vec::new());
    let r = std::panic::catch_unwind(|| {
        let sb = Sandbox::new().unwrap();
        let c = sb.container().unwrap();
        names.lock().unwrap().extend([
            sb.host_name().to_string(),
            c.name().to_string(),
            sb.tempdir().display().to_string(),
        ]);
        panic!("boom inside the sandbox");
    });
    assert!(r.is_err());
    let names = names.into_inner().unwrap();
    assert_eq!(names.len(), 3);
    assert!(!netns_exists(&names[0]));
    assert!(!netns_exists(&names[1]));
    assert!(!std::path::Path::new(&names[2]).exists());
}

#[test]
fn commands_run_inside_the_namespace() {
    require_root();
    let sb = Sandbox::new().unwrap();
    let c = sb.container().unwrap();
    // A link made in the container is visible only there.
    c.run_ok("ip", ["link", "add", "cnitdummy0", "type", "bridge"]).unwrap();
    assert!(c.link("cnitdummy0").unwrap().is_some());
    assert!(sb.host().link("cnitdummy0").unwrap().is_none());
    let links = c.ip_json(["link", "show"]).unwrap();
    let names: Vec<&str> = links.as_array().unwrap().iter().map(|l| l["ifname"].as_str().unwrap()).collect();
    assert_eq!(names, ["lo", "cnitdummy0"]);
    // sysfs shows the namespace's own devices
    let ls = c.run_ok("ls", ["/sys/class/net"]).unwrap();
    assert!(ls.contains("cnitdummy0"), "{ls}");
    // our own namespace never saw it
    let here = std::process::Command::new("ip").args(["link", "show", "cnitdummy0"]).output().unwrap();
    assert!(!here.status.success());
    // run() reports failures without erroring
    let out = c.run("ip", ["link", "show", "nonexistent0"]).unwrap();
    assert!(!out.status.success());
    assert!(c.run_ok("false", Vec::<String>::new()).is_err());
    let addr = sb.ip_json(["addr", "show", "lo"]).unwrap();
    assert_eq!(addr[0]["addr_info"][0]["local"], "127.0.0.1");
}

#[test]
fn parallel_sandboxes_are_distinct() {
    require_root();
    let handles: Vec<_> = (0..6)
        .map(|_| {
            std::thread::spawn(|| {
                let sb = Sandbox::new().unwrap();
                let c1 = sb.container().unwrap();
                let c2 = sb.container().unwrap();
                assert_ne!(c1.name(), c2.name());
                (sb.host_name().to_string(), c1.name().to_string())
            })
        })
        .collect();
    let mut names: Vec<String> = handles.into_iter().flat_map(|h| {
        let (a, b) = h.join().unwrap();
        [a, b]
    }).collect();
    let n = names.len();
    names.sort();
    names.dedup();
    assert_eq!(names.len(), n);
    for name in &names {
        assert!(!netns_exists(name));
    }
}

#[test]
fn leftovers_of_dead_processes_are_reaped() {
    require_root();
    // a pid that is not running
    let pid = (100_000..4_000_000u32).rev().find(|p| !std::path::Path::new(&format!("/proc/{p}")).exists()).unwrap();
    let name = format!("cnit-{pid}-0-h");
    let dir = std::env::temp_dir().join(format!("cnit-{pid}-0"));
    assert!(std::process::Command::new("ip").args(["netns", "add", &name]).status().unwrap().success());
    std::fs::create_dir_all(&dir).unwrap();
    // ours (live pid) must survive
    let sb = Sandbox::new().unwrap();
    conformance::sandbox::reap_stale();
    assert!(!netns_exists(&name), "stale {name} not reaped");
    assert!(!dir.exists());
    assert!(netns_exists(sb.host_name()));
    assert!(sb.tempdir().exists());
}

/// A worker thread that entered the sandbox host (as cnibench's workers do) spawns children that
/// live in that namespace and see its own sysfs; leaving puts the thread back.
#[test]
fn thread_enters_the_sandbox_host_and_leaves_it() {
    require_root();
    let sb = Sandbox::new().unwrap();
    sb.host().run_ok("ip", ["link", "add", "thr0a", "type", "veth", "peer", "name", "thr0b"]).unwrap();
    let ns_of = |p: &str| std::fs::read_link(p).unwrap();
    std::thread::scope(|s| {
        s.spawn(|| {
            let before = (ns_of("/proc/thread-self/ns/net"), ns_of("/proc/thread-self/ns/mnt"));
            {
                let _in = conformance::ThreadInNs::enter(sb.host_path()).unwrap();
                assert_ne!(ns_of("/proc/thread-self/ns/net"), before.0);
                // a plain spawn (posix_spawn) from this thread: the child is in the sandbox
                let out = std::process::Command::new("ls").arg("/sys/class/net").output().unwrap();
                let names = String::from_utf8_lossy(&out.stdout).to_string();
                assert!(names.contains("thr0a") && names.contains("thr0b"), "child's /sys/class/net: {names}");
                let out = std::process::Command::new("ip").args(["-o", "link", "show", "thr0a"]).output().unwrap();
                assert!(out.status.success(), "child not in the sandbox netns: {}", String::from_utf8_lossy(&out.stderr));
            }
            assert_eq!((ns_of("/proc/thread-self/ns/net"), ns_of("/proc/thread-self/ns/mnt")), before, "thread not moved back");
            let main_sys = std::fs::read_dir("/sys/class/net").unwrap().map(|e| e.unwrap().file_name()).collect::<Vec<_>>();
            assert!(!main_sys.iter().any(|n| n == "thr0a"), "the sandbox's sysfs leaked into our mount namespace");
        });
    });
}
