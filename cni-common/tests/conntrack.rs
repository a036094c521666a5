//! Conntrack against the real kernel. Every test runs on its own thread inside a fresh, unnamed
//! network namespace (`unshare(CLONE_NEWNET)`) that vanishes with the thread: the machine's own
//! conntrack table is never read or touched, and the tests can run in parallel. Root is required.

use std::io::Write;
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::process::{Command, Stdio};

use cni_common::conntrack::{self, Entry};
use cni_common::netlink::{IpFamily, Netlink};
use nix::sched::{unshare, CloneFlags};

const UDP: u8 = 17;
const TCP: u8 = 6;

/// Run `f` on a new thread, inside a new network namespace of its own where `lo` is up and
/// conntrack tracks the packets this namespace sends.
fn in_tracked_netns<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    assert!(
        nix::unistd::geteuid().is_root(),
        "the conntrack integration tests need root (CAP_NET_ADMIN, CAP_SYS_ADMIN) to create network \
         namespaces and read conntrack; run `cargo test` as root"
    );
    let thread = std::thread::spawn(move || {
        unshare(CloneFlags::CLONE_NEWNET).expect("unshare(CLONE_NEWNET)");
        let mut nl = Netlink::open().expect("open rtnetlink");
        let lo = nl.link_by_name("lo").expect("look up lo").expect("lo exists");
        nl.set_up(lo.index).expect("set lo up");
        // Conntrack hooks are registered in a namespace only once something there uses conntrack.
        // `nft`, a child of this thread, runs in this thread's namespace.
        nft("table inet t {\n  chain c {\n    type filter hook output priority 0;\n    ct state new accept\n  }\n}\n");
        f()
    });
    thread.join().unwrap_or_else(|panic| std::panic::resume_unwind(panic))
}

fn nft(ruleset: &str) {
    let mut child = Command::new("nft")
        .args(["-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run nft (the test needs the nft binary)");
    child.stdin.take().unwrap().write_all(ruleset.as_bytes()).expect("write ruleset to nft");
    let out = child.wait_with_output().expect("wait for nft");
    assert!(out.status.success(), "nft -f - failed: {}", String::from_utf8_lossy(&out.stderr));
}

/// Send a datagram from a fresh socket on `from` to `to`; returns the source address used.
fn send_udp(from: &str, to: SocketAddr) -> SocketAddr {
    let sock = UdpSocket::bind(from).unwrap_or_else(|e| panic!("bind {from}: {e}"));
    sock.send_to(b"ping", to).unwrap_or_else(|e| panic!("send to {to}: {e}"));
    sock.local_addr().unwrap()
}

/// The entries to `dst` on ports in `ports`, sorted.
fn entries_to(entries: &[Entry], ports: &[u16]) -> Vec<Entry> {
    let mut v: Vec<Entry> = entries.iter().filter(|e| ports.contains(&e.dport)).cloned().collect();
    v.sort_by_key(|e| (e.dport, e.family == IpFamily::V6));
    v
}

fn expected(src: SocketAddr, dst: SocketAddr) -> Entry {
    Entry {
        family: IpFamily::of(&dst.ip()),
        proto: UDP,
        src: src.ip(),
        dst: dst.ip(),
        sport: src.port(),
        dport: dst.port(),
        zone: 0,
    }
}

#[test]
fn delete_by_dport_removes_only_the_given_ports_in_both_families() {
    in_tracked_netns(|| {
        const A: u16 = 5301;
        const B: u16 = 5302;
        let lo4: IpAddr = "127.0.0.1".parse().unwrap();
        let lo6: IpAddr = "::1".parse().unwrap();
        let dsts = [SocketAddr::new(lo4, A), SocketAddr::new(lo6, A), SocketAddr::new(lo4, B), SocketAddr::new(lo6, B)];
        let want: Vec<Entry> = dsts
            .iter()
            .map(|dst| expected(send_udp(if dst.is_ipv4() { "127.0.0.1:0" } else { "[::1]:0" }, *dst), *dst))
            .collect();

        let all = conntrack::list(Some(UDP)).expect("list UDP entries");
        assert_eq!(entries_to(&all, &[A, B]), want, "tracked UDP entries: {all:#?}");
        assert!(all.iter().all(|e| e.proto == UDP), "{all:#?}");
        let everything = conntrack::list(None).expect("list all entries");
        assert_eq!(entries_to(&everything, &[A, B]), want);
        assert!(entries_to(&conntrack::list(Some(TCP)).expect("list TCP"), &[A, B]).is_empty());

        // Another protocol on the same port: nothing to delete.
        assert_eq!(conntrack::delete_by_dport(TCP, &[A, B]).expect("delete TCP"), 0);

        assert_eq!(conntrack::delete_by_dport(UDP, &[A, 9]).expect("delete port A"), 2);
        let after = conntrack::list(Some(UDP)).expect("list after delete");
        assert_eq!(entries_to(&after, &[A, B]), want[2..], "after deleting port {A}: {after:#?}");

        // Already gone: nothing more to delete.
        assert_eq!(conntrack::delete_by_dport(UDP, &[A]).expect("delete port A again"), 0);
        assert_eq!(conntrack::delete_by_dport(UDP, &[]).expect("delete no port"), 0);

        assert_eq!(conntrack::delete_by_dport(UDP, &[B]).expect("delete port B"), 2);
        assert!(entries_to(&conntrack::list(None).expect("final list"), &[A, B]).is_empty());
    });
}

#[test]
fn new_namespace_starts_empty_and_entries_are_per_namespace() {
    in_tracked_netns(|| {
        assert_eq!(conntrack::list(None).expect("list"), Vec::<Entry>::new());
        let dst: SocketAddr = "127.0.0.1:5303".parse().unwrap();
        let src = send_udp("127.0.0.1:0", dst);
        assert_eq!(conntrack::list(None).expect("list"), vec![expected(src, dst)]);
        // A namespace of its own (another thread) sees none of it.
        let other = in_tracked_netns(|| conntrack::list(None).expect("list in another namespace"));
        assert_eq!(other, Vec::<Entry>::new());
        assert_eq!(conntrack::delete_by_dport(UDP, &[5303]).expect("delete"), 1);
        assert_eq!(conntrack::list(None).expect("list"), Vec::<Entry>::new());
    });
}
