//! Packets, not just rules: a three-namespace topology (container — sandbox router — outside
//! host) inside throwaway namespaces, checking that masquerade and port mappings programmed by each
//! backend really translate traffic, for IPv4 and IPv6, and stop doing so after DEL. Requires root.
//!
//!   ctr  eth0 10.55.0.5/24 fd55::5/64  ── vc 10.55.0.1 fd55::1 [router = sandbox] ve 203.0.113.1 2001:db8:55::1 ── eth0 203.0.113.2 2001:db8:55::2  ext
//!
//! `ext` has no route back to the container subnets: only masquerade lets the container reach it.

mod common;

use cni_firewall::{MasqSpec, PortMapSpec, PortMapping, Protocol};
use common::*;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::time::{Duration, Instant};

struct Topo {
    ctr: NamedNs,
    ext: NamedNs,
}

fn topology() -> Topo {
    let ctr = NamedNs::new();
    let ext = NamedNs::new();
    let inns = |ns: &NamedNs, args: &[&str]| {
        let mut a = vec!["netns", "exec", ns.name.as_str()];
        a.extend_from_slice(args);
        sh("ip", &a);
    };
    // no duplicate address detection anywhere: link-local addresses usable at once (no tentative
    // phase during which neighbour discovery stalls)
    for sysctl in ["net.ipv6.conf.all.accept_dad=0", "net.ipv6.conf.default.accept_dad=0"] {
        sh("sysctl", &["-q", "-w", sysctl]);
        inns(&ctr, &["sysctl", "-q", "-w", sysctl]);
        inns(&ext, &["sysctl", "-q", "-w", sysctl]);
    }
    sh("ip", &["link", "add", "vc", "type", "veth", "peer", "name", "eth0", "netns", &ctr.name]);
    sh("ip", &["link", "add", "ve", "type", "veth", "peer", "name", "eth0", "netns", &ext.name]);
    sh("ip", &["addr", "add", "10.55.0.1/24", "dev", "vc"]);
    sh("ip", &["addr", "add", "fd55::1/64", "dev", "vc", "nodad"]);
    sh("ip", &["addr", "add", "203.0.113.1/24", "dev", "ve"]);
    sh("ip", &["addr", "add", "2001:db8:55::1/64", "dev", "ve", "nodad"]);
    sh("ip", &["link", "set", "vc", "up"]);
    sh("ip", &["link", "set", "ve", "up"]);
    sh("sysctl", &["-q", "-w", "net.ipv4.ip_forward=1"]);
    sh("sysctl", &["-q", "-w", "net.ipv6.conf.all.forwarding=1"]);
    for (ns, a4, a6) in [(&ctr, "10.55.0.5/24", "fd55::5/64"), (&ext, "203.0.113.2/24", "2001:db8:55::2/64")] {
        inns(ns, &["ip", "link", "set", "lo", "up"]);
        inns(ns, &["ip", "addr", "add", a4, "dev", "eth0"]);
        inns(ns, &["ip", "addr", "add", a6, "dev", "eth0", "nodad"]);
        inns(ns, &["ip", "link", "set", "eth0", "up"]);
    }
    inns(&ctr, &["ip", "route", "add", "default", "via", "10.55.0.1"]);
    inns(&ctr, &["ip", "-6", "route", "add", "default", "via", "fd55::1"]);
    Topo { ctr, ext }
}

fn ping(ns: &NamedNs, dst: &str) -> bool {
    ok("ip", &["netns", "exec", &ns.name, "ping", "-c", "1", "-W", "2", dst])
}

/// Serve `n` connections on [::]:80 inside `ns`: each gets the peer address the container saw.
fn serve(ns: &NamedNs, n: usize) -> std::thread::JoinHandle<()> {
    NsHandle::open(&ns.path()).spawn(move || {
        let l = TcpListener::bind("[::]:80").expect("bind [::]:80 in ctr");
        l.set_nonblocking(true).unwrap();
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut served = 0;
        while served < n && Instant::now() < deadline {
            match l.accept() {
                Ok((mut s, peer)) => {
                    let ip = match peer.ip() {
                        std::net::IpAddr::V6(v6) => v6.to_ipv4_mapped().map(|a| a.to_string()).unwrap_or(v6.to_string()),
                        v4 => v4.to_string(),
                    };
                    let _ = s.write_all(ip.as_bytes());
                    served += 1;
                }
                Err(_) => std::thread::sleep(Duration::from_millis(5)),
            }
        }
    })
}

/// Connect from `ns` to `dst`, return what the server answered (the peer it saw), None on failure.
fn fetch(ns: &NamedNs, dst: &str) -> Option<String> {
    let dst: SocketAddr = dst.parse().unwrap();
    NsHandle::open(&ns.path())
        .spawn(move || {
            let mut s = TcpStream::connect_timeout(&dst, Duration::from_secs(2)).ok()?;
            s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
            let mut out = String::new();
            s.read_to_string(&mut out).ok()?;
            Some(out)
        })
        .join()
        .unwrap()
}

fn masquerade(flavor: Flavor) {
    in_sandbox(move || {
        let t = topology();
        assert!(ping(&t.ctr, "10.55.0.1"), "topology broken");
        assert!(!ping(&t.ctr, "203.0.113.2"), "outside reachable without masquerade?");
        assert!(!ping(&t.ctr, "2001:db8:55::2"));
        let (fw, _) = make(flavor);
        let spec = MasqSpec { key: key("trafnet", "ctr1"), addrs: vec!["10.55.0.5/24".parse().unwrap(), "fd55::5/64".parse().unwrap()] };
        fw.add_masquerade(&spec).unwrap();
        assert!(ping(&t.ctr, "203.0.113.2"), "v4 masquerade does not work");
        assert!(ping(&t.ctr, "2001:db8:55::2"), "v6 masquerade does not work");
        fw.del_masquerade(&spec.key, &[]).unwrap();
        assert!(!ping(&t.ctr, "203.0.113.2"), "v4 still masqueraded after DEL");
        assert!(!ping(&t.ctr, "2001:db8:55::2"), "v6 still masqueraded after DEL");
    });
}

fn port_mappings(flavor: Flavor) {
    in_sandbox(move || {
        let t = topology();
        let (fw, _) = make(flavor);
        let mut spec = PortMapSpec::new(
            key("trafnet", "ctr1"),
            vec![PortMapping { host_port: 8080, container_port: 80, protocol: Protocol::Tcp, host_ip: None }],
        );
        spec.container_v4 = Some("10.55.0.5/24".parse().unwrap());
        spec.container_v6 = Some("fd55::5/64".parse().unwrap());
        let server = serve(&t.ctr, 4);
        std::thread::sleep(Duration::from_millis(100));
        assert_eq!(fetch(&t.ext, "203.0.113.1:8080"), None, "port open before ADD?");
        fw.add_portmap(&spec).unwrap();
        // outside clients reach the container, unmasqueraded
        assert_eq!(fetch(&t.ext, "203.0.113.1:8080").as_deref(), Some("203.0.113.2"), "v4 DNAT");
        assert_eq!(fetch(&t.ext, "[2001:db8:55::1]:8080").as_deref(), Some("2001:db8:55::2"), "v6 DNAT");
        // hairpin: the container reaches itself through the host port, masqueraded (snat)
        assert_eq!(fetch(&t.ctr, "203.0.113.1:8080").as_deref(), Some("10.55.0.1"), "v4 hairpin");
        assert_eq!(fetch(&t.ctr, "[2001:db8:55::1]:8080").as_deref(), Some("fd55::1"), "v6 hairpin");
        fw.del_portmap(&spec.key).unwrap();
        assert_eq!(fetch(&t.ext, "203.0.113.1:8080"), None, "v4 port still mapped after DEL");
        assert_eq!(fetch(&t.ext, "[2001:db8:55::1]:8080"), None, "v6 port still mapped after DEL");
        server.join().unwrap();
    });
}

macro_rules! per_flavor {
    ($($f:ident),*) => {
        mod nft { use super::*; $( #[test] fn $f() { super::$f(Flavor::Nft) } )* }
        mod iptables { use super::*; $( #[test] fn $f() { super::$f(Flavor::IptHost) } )* }
        mod iptables_legacy { use super::*; $( #[test] fn $f() { super::$f(Flavor::IptLegacy) } )* }
    };
}

per_flavor!(masquerade, port_mappings);
