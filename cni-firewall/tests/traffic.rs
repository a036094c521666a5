//! Packets, not just rules: a three-namespace topology (container — sandbox router — outside
//! host) inside throwaway namespaces, checking that masquerade and port mappings programmed by each
//! backend really translate traffic, for IPv4 and IPv6, and stop doing so after DEL. Requires root.
//!
//!   ctr  eth0 10.55.0.5/24 fd55::5/64  ── vc 10.55.0.1 fd55::1 [router = sandbox] ve 203.0.113.1 2001:db8:55::1 ── eth0 203.0.113.2 2001:db8:55::2  ext
//!
//! `ext` has no route back to the container subnets: only masquerade lets the container reach it.
//!
//! Exemptions per prefix length: two networks of different prefix lengths on one host, and a
//! `peer` holding an address in each container's subnet behind the router (routed, not on the
//! containers' links), with a route back to everything:
//!
//!   ctra eth0 10.55.0.5/24 fd55::5/64       ── vca 10.55.0.1/24 fd55::1/64 ┐
//!   ctrb eth0 10.56.3.5/16 fd56:0:0:3::5/48 ── vcb 10.56.0.1/16 fd56::1/48 ┤ [router]
//!   peer eth0 198.51.100.2 2001:db8:77::2   ── vp 198.51.100.1 2001:db8:77::1 ┤
//!        lo 10.55.0.200 fd55::200 10.56.200.9 fd56:0:0:200::9             │
//!   ext  (as above)                         ── ve ┘
//!
//! Traffic from a container to its own subnet keeps its source; to the other network's subnet and
//! outside it is masqueraded.

mod common;

use cni_firewall::{MasqSpec, PortMapSpec, PortMapping, Protocol};
use common::*;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::time::{Duration, Instant};

/// `ip netns exec <ns> <args>`.
fn inns(ns: &NamedNs, args: &[&str]) {
    let mut a = vec!["netns", "exec", ns.name.as_str()];
    a.extend_from_slice(args);
    sh("ip", &a);
}

struct Topo {
    ctr: NamedNs,
    ext: NamedNs,
}

fn topology() -> Topo {
    let ctr = NamedNs::new();
    let ext = NamedNs::new();
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

struct TwoNets {
    ctra: NamedNs,
    ctrb: NamedNs,
    peer: NamedNs,
    ext: NamedNs,
}

fn two_networks() -> TwoNets {
    let t = TwoNets { ctra: NamedNs::new(), ctrb: NamedNs::new(), peer: NamedNs::new(), ext: NamedNs::new() };
    for sysctl in ["net.ipv6.conf.all.accept_dad=0", "net.ipv6.conf.default.accept_dad=0"] {
        sh("sysctl", &["-q", "-w", sysctl]);
        for ns in [&t.ctra, &t.ctrb, &t.peer, &t.ext] {
            inns(ns, &["sysctl", "-q", "-w", sysctl]);
        }
    }
    sh("sysctl", &["-q", "-w", "net.ipv4.ip_forward=1"]);
    sh("sysctl", &["-q", "-w", "net.ipv6.conf.all.forwarding=1"]);
    // (router end, its addresses, the namespace, its addresses)
    let links = [
        ("vca", ["10.55.0.1/24", "fd55::1/64"], &t.ctra, ["10.55.0.5/24", "fd55::5/64"]),
        ("vcb", ["10.56.0.1/16", "fd56::1/48"], &t.ctrb, ["10.56.3.5/16", "fd56:0:0:3::5/48"]),
        ("vp", ["198.51.100.1/24", "2001:db8:77::1/64"], &t.peer, ["198.51.100.2/24", "2001:db8:77::2/64"]),
        ("ve", ["203.0.113.1/24", "2001:db8:55::1/64"], &t.ext, ["203.0.113.2/24", "2001:db8:55::2/64"]),
    ];
    for (dev, mine, ns, theirs) in links {
        sh("ip", &["link", "add", dev, "type", "veth", "peer", "name", "eth0", "netns", &ns.name]);
        for a in mine {
            sh("ip", &["addr", "add", a, "dev", dev, "nodad"]);
        }
        sh("ip", &["link", "set", dev, "up"]);
        inns(ns, &["ip", "link", "set", "lo", "up"]);
        for a in theirs {
            inns(ns, &["ip", "addr", "add", a, "dev", "eth0", "nodad"]);
        }
        inns(ns, &["ip", "link", "set", "eth0", "up"]);
    }
    for (ns, gw4, gw6) in [(&t.ctra, "10.55.0.1", "fd55::1"), (&t.ctrb, "10.56.0.1", "fd56::1"), (&t.peer, "198.51.100.1", "2001:db8:77::1")] {
        inns(ns, &["ip", "route", "add", "default", "via", gw4]);
        inns(ns, &["ip", "-6", "route", "add", "default", "via", gw6]);
    }
    // the peer's addresses in the containers' subnets: routed by the router, and by the containers
    // through their gateway (not on their links)
    for a in ["10.55.0.200", "10.56.200.9", "fd55::200", "fd56:0:0:200::9"] {
        let host = if a.contains(':') { format!("{a}/128") } else { format!("{a}/32") };
        inns(&t.peer, &["ip", "addr", "add", &host, "dev", "lo"]);
        sh("ip", &["route", "add", &host, "via", if a.contains(':') { "2001:db8:77::2" } else { "198.51.100.2" }]);
    }
    inns(&t.ctra, &["ip", "route", "add", "10.55.0.200/32", "via", "10.55.0.1"]);
    inns(&t.ctra, &["ip", "-6", "route", "add", "fd55::200/128", "via", "fd55::1"]);
    inns(&t.ctrb, &["ip", "route", "add", "10.56.200.9/32", "via", "10.56.0.1"]);
    inns(&t.ctrb, &["ip", "-6", "route", "add", "fd56:0:0:200::9/128", "via", "fd56::1"]);
    t
}

/// The source addresses the peer sees for connections from each container to the peer's address
/// in each container's subnet: (from a to a's subnet, a to b's, b to b's, b to a's), v4 then v6.
fn sources_seen(t: &TwoNets) -> Vec<Option<String>> {
    let server = serve(&t.peer, 8);
    std::thread::sleep(Duration::from_millis(100));
    let got = [
        (&t.ctra, "10.55.0.200:80"),
        (&t.ctra, "10.56.200.9:80"),
        (&t.ctrb, "10.56.200.9:80"),
        (&t.ctrb, "10.55.0.200:80"),
        (&t.ctra, "[fd55::200]:80"),
        (&t.ctra, "[fd56:0:0:200::9]:80"),
        (&t.ctrb, "[fd56:0:0:200::9]:80"),
        (&t.ctrb, "[fd55::200]:80"),
    ]
    .iter()
    .map(|(ns, dst)| fetch(ns, dst))
    .collect();
    server.join().unwrap();
    got
}

fn some(v: &[&str]) -> Vec<Option<String>> {
    v.iter().map(|s| Some(s.to_string())).collect()
}

/// Two networks of different prefix lengths (/24 and /16, /64 and /48) masqueraded on one host:
/// traffic from each container to its own subnet is exempt (keeps its source), to the other's
/// subnet and outside masqueraded; after the DEL of one, the other's still are.
fn exemptions_per_prefix_length_with(fw: Box<dyn cni_firewall::Firewall>) {
    let t = two_networks();
    let (a_src, b_src) = (["10.55.0.5", "fd55::5"], ["10.56.3.5", "fd56:0:0:3::5"]);
    // routed without NAT at first: the peer sees the containers' addresses
    let plain = some(&[a_src[0], a_src[0], b_src[0], b_src[0], a_src[1], a_src[1], b_src[1], b_src[1]]);
    assert_eq!(sources_seen(&t), plain, "topology broken");
    assert!(!ping(&t.ctra, "203.0.113.2") && !ping(&t.ctrb, "203.0.113.2"), "outside reachable without masquerade?");
    let a = MasqSpec { key: key("neta", "a"), addrs: vec!["10.55.0.5/24".parse().unwrap(), "fd55::5/64".parse().unwrap()] };
    let b = MasqSpec { key: key("netb", "b"), addrs: vec!["10.56.3.5/16".parse().unwrap(), "fd56:0:0:3::5/48".parse().unwrap()] };
    fw.add_masquerade(&a).unwrap();
    fw.add_masquerade(&b).unwrap();
    let (r4, r6) = ("198.51.100.1", "2001:db8:77::1");
    assert_eq!(sources_seen(&t), some(&[a_src[0], r4, b_src[0], r4, a_src[1], r6, b_src[1], r6]), "own subnet exempt, the other masqueraded");
    for (ns, dst) in [(&t.ctra, "203.0.113.2"), (&t.ctrb, "203.0.113.2"), (&t.ctra, "2001:db8:55::2"), (&t.ctrb, "2001:db8:55::2")] {
        assert!(ping(ns, dst), "{dst} not reached from {} (masquerade)", ns.name);
    }
    fw.del_masquerade(&a.key, &[]).unwrap();
    assert_eq!(sources_seen(&t), some(&[a_src[0], a_src[0], b_src[0], r4, a_src[1], a_src[1], b_src[1], r6]), "after a's DEL");
    assert!(!ping(&t.ctra, "203.0.113.2") && ping(&t.ctrb, "203.0.113.2"), "after a's DEL");
    fw.del_masquerade(&b.key, &[]).unwrap();
    assert_eq!(sources_seen(&t), plain, "after both DELs");
}

#[test]
fn nft_native_exemptions_per_prefix_length() {
    in_sandbox(|| exemptions_per_prefix_length_with(Box::new(cni_firewall::nft::NftFirewall::native())));
}

macro_rules! per_flavor {
    ($($f:ident),*) => {
        mod nft { use super::*; $( #[test] fn $f() { super::$f(Flavor::Nft) } )* }
        mod iptables { use super::*; $( #[test] fn $f() { super::$f(Flavor::IptHost) } )* }
        mod iptables_legacy { use super::*; $( #[test] fn $f() { super::$f(Flavor::IptLegacy) } )* }
    };
}

fn exemptions_per_prefix_length(flavor: Flavor) {
    in_sandbox(move || exemptions_per_prefix_length_with(make(flavor).0));
}

per_flavor!(masquerade, port_mappings, exemptions_per_prefix_length);
