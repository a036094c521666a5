//! Netlink layer against the real kernel. Every test runs on its own thread inside fresh, unnamed
//! network namespaces (`unshare(CLONE_NEWNET)`), which vanish when the thread ends: the machine's
//! own namespace is never touched, and the tests can run in parallel. Results are checked through
//! our own dumps and through `ip -j` run inside the same namespace. Root is required.

use std::fs::File;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::process::Command;

use cni_common::netlink::{
    format_mac, parse_mac, AddrOpts, BrPortFlags, Changes, IpFamily, Link, Netlink, NlError, Route, VethSpec,
};
use cni_common::CniError;
use cni_common::netns::NetNs;
use ipnetwork::IpNetwork;
use nix::sched::{setns, unshare, CloneFlags};
use serde_json::Value;

/// Run `f` on a new thread, inside a new network namespace of its own.
fn in_netns<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    assert!(
        nix::unistd::geteuid().is_root(),
        "the netlink integration tests need root (CAP_NET_ADMIN, CAP_SYS_ADMIN) to create network namespaces; \
         run `cargo test` as root"
    );
    let thread = std::thread::spawn(move || {
        unshare(CloneFlags::CLONE_NEWNET).expect("unshare(CLONE_NEWNET)");
        f()
    });
    thread.join().unwrap_or_else(|panic| std::panic::resume_unwind(panic))
}

/// The calling thread's network namespace.
fn this_netns() -> OwnedFd {
    let path = format!("/proc/self/task/{}/ns/net", nix::unistd::gettid());
    File::open(&path).unwrap_or_else(|e| panic!("open {path}: {e}")).into()
}

/// Move the calling thread into a new network namespace and return it.
fn new_netns() -> OwnedFd {
    unshare(CloneFlags::CLONE_NEWNET).expect("unshare(CLONE_NEWNET)");
    cni_common::netns::NetNs::forget_current();
    this_netns()
}

fn enter(ns: &OwnedFd) {
    setns(ns.as_fd(), CloneFlags::CLONE_NEWNET).expect("setns");
    cni_common::netns::NetNs::forget_current();
}

/// Taken shared while a test runs a process, and exclusively by the test that checks which
/// processes hold a pipe it made without `O_CLOEXEC`: `ip` forked meanwhile by a test on another
/// thread would hold that pipe until it exits.
static FORKING: std::sync::RwLock<()> = std::sync::RwLock::new(());

/// `ip -j <args>` run inside `ns`, parsed.
fn ip(ns: &OwnedFd, args: &[&str]) -> Value {
    let _forking = FORKING.read().unwrap_or_else(|e| e.into_inner());
    let fd = ns.as_raw_fd();
    let mut cmd = Command::new("ip");
    cmd.arg("-j").args(args);
    // SAFETY: setns(2) is async-signal-safe; `fd` stays open in the parent until `output` returns.
    unsafe {
        cmd.pre_exec(move || {
            if libc::setns(fd, libc::CLONE_NEWNET) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let out = cmd.output().expect("run ip");
    assert!(out.status.success(), "ip {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8_lossy(&out.stdout);
    if text.trim().is_empty() {
        return Value::Array(Vec::new());
    }
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("ip {args:?}: bad JSON {e}: {text}"))
}

/// The single object `ip -j -d link show dev <name>` reports.
fn ip_link(ns: &OwnedFd, name: &str) -> Value {
    ip(ns, &["-d", "link", "show", "dev", name])[0].clone()
}

fn ip_flags(link: &Value) -> Vec<String> {
    link["flags"]
        .as_array()
        .map(|a| a.iter().filter_map(|f| f.as_str().map(String::from)).collect())
        .unwrap_or_default()
}

/// `(num_tx_queues, num_rx_queues)` of an `ip -j -d link` object.
fn queue_counts(link: &Value) -> (Option<u64>, Option<u64>) {
    (link["num_tx_queues"].as_u64(), link["num_rx_queues"].as_u64())
}

fn link(nl: &mut Netlink, name: &str) -> Link {
    nl.link_by_name(name).expect("get link").unwrap_or_else(|| panic!("link {name} missing"))
}

fn net(s: &str) -> IpNetwork {
    s.parse().expect("network literal")
}

/// A veth pair with both ends in the current namespace; returns (a, b).
fn veth_pair(nl: &mut Netlink, a: &str, b: &str) -> (Link, Link) {
    nl.create_veth(&VethSpec::new(a, b)).expect("create veth");
    (link(nl, a), link(nl, b))
}

#[test]
fn link_dump_and_lookup() {
    in_netns(|| {
        let ns = this_netns();
        let mut nl = Netlink::open().expect("open");
        veth_pair(&mut nl, "dump-a", "dump-b");
        let links = nl.links().expect("dump");
        let mut names: Vec<&str> = links.iter().map(|l| l.name.as_str()).collect();
        names.sort();
        assert_eq!(names, ["dump-a", "dump-b", "lo"]);

        let lo = links.iter().find(|l| l.name == "lo").expect("lo");
        assert_eq!(lo.index, 1);
        assert_eq!(nl.link_by_name("lo").expect("get lo").as_ref(), Some(lo));
        assert_eq!(nl.link_by_index(lo.index).expect("get 1").as_ref(), Some(lo));

        let a = links.iter().find(|l| l.name == "dump-a").expect("dump-a");
        let b = links.iter().find(|l| l.name == "dump-b").expect("dump-b");
        assert_eq!(a.kind.as_deref(), Some("veth"));
        assert_eq!(a.link, Some(b.index), "IFLA_LINK of a veth is its peer");
        assert_eq!(a.link_netnsid, None, "peer in the same namespace");

        let mut ip_names: Vec<String> = ip(&ns, &["link", "show"])
            .as_array()
            .expect("array")
            .iter()
            .map(|l| l["ifname"].as_str().unwrap_or("").to_string())
            .collect();
        ip_names.sort();
        assert_eq!(ip_names, ["dump-a", "dump-b", "lo"]);
        assert_eq!(ip_link(&ns, "dump-a")["ifindex"], a.index);
        assert_eq!(ip_link(&ns, "dump-a")["address"], format_mac(&a.mac.expect("mac")));

        assert_eq!(nl.link_by_name("missing0").expect("lookup of a missing link is not an error"), None);
        assert_eq!(nl.link_by_index(99999).expect("lookup of a missing index is not an error"), None);
        let err = nl.link_by_name("a-name-that-is-too-long").expect_err("name too long");
        assert_eq!(err.errno(), Some(libc::EINVAL));
        assert!(err.to_string().contains("a-name-that-is-too-long"), "{err}");
    })
}

#[test]
fn dump_spanning_many_datagrams() {
    in_netns(|| {
        let mut nl = Netlink::open().expect("open");
        for i in 0..40 {
            nl.create_veth(&VethSpec::new(&format!("many{i}a"), &format!("many{i}b"))).expect("create veth");
        }
        let links = nl.links().expect("dump");
        assert_eq!(links.len(), 81);
        for i in 0..40 {
            assert!(links.iter().any(|l| l.name == format!("many{i}b")), "many{i}b listed");
        }
        // The socket stays usable after a long dump.
        assert!(nl.link_by_name("many39a").expect("get").is_some());
    })
}

/// `has_ports` answers from the first buffer of a long dump (its own socket, left unread), and
/// the handle it was called on stays usable.
#[test]
fn has_ports_of_a_bridge_with_many_ports() {
    in_netns(|| {
        let mut nl = Netlink::open().expect("open");
        nl.create_bridge("hp-br", None, false).expect("bridge");
        let br = link(&mut nl, "hp-br");
        assert!(!nl.has_ports(br.index, None).expect("no ports"));
        let (one, _) = veth_pair(&mut nl, "hp0a", "hp0b");
        nl.set_master(one.index, Some(br.index)).expect("enslave");
        assert!(nl.has_ports(br.index, None).expect("one port"));
        assert!(!nl.has_ports(br.index, Some(one.index)).expect("only the excepted port"));
        for i in 1..60 {
            let (a, _) = veth_pair(&mut nl, &format!("hp{i}a"), &format!("hp{i}b"));
            nl.set_master(a.index, Some(br.index)).expect("enslave");
        }
        for _ in 0..3 {
            assert!(nl.has_ports(br.index, Some(one.index)).expect("many ports"));
        }
        // a link that is no bridge has no ports
        assert!(!nl.has_ports(one.index, None).expect("a veth"));
        assert!(nl.link_by_name("hp59a").expect("get").is_some());
        assert_eq!(nl.links().expect("links").iter().filter(|l| l.master == Some(br.index)).count(), 60);
    })
}

#[test]
fn bridge_create_exists_and_delete() {
    in_netns(|| {
        let ns = this_netns();
        let mut nl = Netlink::open().expect("open");
        nl.create_bridge("br-test", Some(1400), false).expect("create bridge");
        let br = link(&mut nl, "br-test");
        assert_eq!(br.kind.as_deref(), Some("bridge"));
        assert_eq!(br.mtu, 1400);
        assert!(!br.up, "created down");

        let err = nl.create_bridge("br-test", None, false).expect_err("second create");
        assert!(err.is_exists(), "{err}");
        assert_eq!(err.op, "add bridge \"br-test\"");
        let cni: CniError = err.into();
        assert_eq!(cni.to_string(), "netlink: add bridge \"br-test\": File exists (os error 17)");

        nl.set_up(br.index).expect("set up");
        assert!(link(&mut nl, "br-test").up);
        let j = ip_link(&ns, "br-test");
        assert_eq!(j["linkinfo"]["info_kind"], "bridge");
        assert_eq!(j["mtu"], 1400);
        assert!(ip_flags(&j).contains(&"UP".to_string()));

        nl.delete_link(br.index).expect("delete");
        assert_eq!(nl.link_by_name("br-test").expect("get"), None);
        let err = nl.delete_link(br.index).expect_err("delete twice");
        assert!(err.is_not_found(), "{err}");
        assert!(err.op.contains(&format!("index {}", br.index)), "{err}");
    })
}

/// In the calling thread's new namespace (the "host"): a second namespace (the "container"), and a
/// bridge `br0` made in the host, which the thread is left in. Returns (host, container, a
/// netlink handle on the host, the bridge).
fn host_container_and_bridge() -> (OwnedFd, OwnedFd, Netlink, Link) {
    let host = this_netns();
    let container = new_netns();
    enter(&host);
    let mut nl = Netlink::open().expect("open host");
    nl.create_bridge("br0", None, false).expect("bridge");
    let br = link(&mut nl, "br0");
    (host, container, nl, br)
}

#[test]
fn veth_peer_created_in_other_netns_with_master() {
    in_netns(|| {
        let (host, container, mut nl, br) = host_container_and_bridge();
        let mac = parse_mac("02:00:00:00:aa:01").expect("mac");
        let peer_mac = parse_mac("02:00:00:00:aa:02").expect("mac");
        let spec = VethSpec {
            peer_netns: Some(container.as_fd()),
            mtu: Some(1450),
            mac: Some(mac),
            peer_mac: Some(peer_mac),
            master: Some(br.index),
            up: true,
            ..VethSpec::new("vethhost0", "eth0")
        };
        let echoed = nl.create_veth(&spec).expect("create veth");

        let h = link(&mut nl, "vethhost0");
        // Kernels since 6.3 echo the new end (before the master is set).
        if let Some(e) = &echoed {
            assert_eq!((e.index, e.name.as_str(), e.mac, e.mtu), (h.index, "vethhost0", Some(mac), 1450));
        }
        let release: Vec<u32> = std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .unwrap()
            .split(|c: char| !c.is_ascii_digit())
            .take(2)
            .map(|n| n.parse().unwrap_or(0))
            .collect();
        if release >= vec![6, 3] {
            assert!(echoed.is_some(), "kernel {release:?} should echo the new veth");
        }
        assert_eq!(h.master, Some(br.index));
        assert!(h.up);
        assert_eq!(h.mtu, 1450);
        assert_eq!(h.mac, Some(mac));
        assert!(h.link_netnsid.is_some(), "peer lives in another namespace");
        assert_eq!(nl.link_by_name("eth0").expect("get"), None, "peer not in the host namespace");
        let j = ip_link(&host, "vethhost0");
        assert_eq!(j["master"], "br0");
        assert!(ip_flags(&j).contains(&"UP".to_string()));
        // one queue each way on both ends: the kernel's one real queue, without its per-CPU extras
        assert_eq!(queue_counts(&j), (Some(1), Some(1)), "{j}");

        let err = nl.create_veth(&spec).expect_err("same names again");
        assert!(err.is_exists(), "{err}");
        assert_eq!(err.op, "add veth \"vethhost0\" (peer \"eth0\" in another netns)");

        enter(&container);
        let mut cnl = Netlink::open().expect("open container");
        let c = link(&mut cnl, "eth0");
        assert_eq!(Some(c.index), h.link, "host end's IFLA_LINK is the peer's index");
        assert_eq!(c.mtu, 1450);
        assert_eq!(c.mac, Some(peer_mac));
        assert!(!c.up);
        assert_eq!(c.master, None);
        let j = ip_link(&container, "eth0");
        assert_eq!(j["address"], "02:00:00:00:aa:02");
        assert_eq!(j["mtu"], 1450);
        assert_eq!(queue_counts(&j), (Some(1), Some(1)), "{j}");
    })
}

#[test]
fn link_attribute_changes() {
    in_netns(|| {
        let ns = this_netns();
        let mut nl = Netlink::open().expect("open");
        let (a, b) = veth_pair(&mut nl, "attr-a", "attr-b");
        nl.create_bridge("attr-br", None, false).expect("bridge");
        let br = link(&mut nl, "attr-br");

        nl.set_up(a.index).expect("up");
        nl.set_up(b.index).expect("up");
        nl.set_mtu(a.index, 1300).expect("mtu");
        let mac = parse_mac("02:11:22:33:44:55").expect("mac");
        nl.set_mac(a.index, mac).expect("mac");
        nl.set_master(a.index, Some(br.index)).expect("master");
        nl.set_promisc(a.index, true).expect("promisc");

        let got = link(&mut nl, "attr-a");
        assert!(got.up);
        assert_eq!(got.mtu, 1300);
        assert_eq!(got.mac, Some(mac));
        assert_eq!(got.master, Some(br.index));
        assert!(got.promisc);
        let j = ip_link(&ns, "attr-a");
        assert_eq!(j["mtu"], 1300);
        assert_eq!(j["address"], "02:11:22:33:44:55");
        assert_eq!(j["master"], "attr-br");
        let flags = ip_flags(&j);
        assert!(flags.contains(&"UP".to_string()) && flags.contains(&"PROMISC".to_string()), "{flags:?}");

        nl.set_promisc(a.index, false).expect("promisc off");
        nl.set_master(a.index, None).expect("nomaster");
        nl.set_down(a.index).expect("down");
        let got = link(&mut nl, "attr-a");
        assert!(!got.up && !got.promisc);
        assert_eq!(got.master, None);
        let j = ip_link(&ns, "attr-a");
        assert!(j.get("master").is_none());
        assert!(!ip_flags(&j).contains(&"UP".to_string()));

        // Errors name the link.
        let err = nl.set_mtu(a.index, 70000).expect_err("MTU too large");
        assert_eq!(err.errno(), Some(libc::EINVAL));
        assert!(err.op.contains(&format!("\"attr-a\" (index {})", a.index)) && err.op.contains("mtu 70000"), "{err}");
        let err = nl.set_up(99999).expect_err("no such link");
        assert!(err.is_not_found(), "{err}");
        assert_eq!(err.op, "set link index 99999 up");
    })
}

#[test]
fn bridge_port_hairpin_and_isolation() {
    in_netns(|| {
        let ns = this_netns();
        let mut nl = Netlink::open().expect("open");
        nl.create_bridge("bp-br", None, false).expect("bridge");
        let br = link(&mut nl, "bp-br");
        let (a, _) = veth_pair(&mut nl, "bp-a", "bp-b");

        assert_eq!(nl.brport(a.index).expect("brport"), None, "not enslaved yet");
        let err = nl.set_brport(a.index, &BrPortFlags { hairpin: Some(true), isolated: None }).expect_err("not a port");
        assert!(err.reason.contains("not a bridge port"), "{err}");
        assert!(!err.is_unsupported());

        nl.set_master(a.index, Some(br.index)).expect("master");
        assert_eq!(
            nl.brport(a.index).expect("brport"),
            Some(BrPortFlags { hairpin: Some(false), isolated: Some(false) })
        );

        nl.set_brport(a.index, &BrPortFlags { hairpin: Some(true), isolated: Some(true) }).expect("set flags");
        assert_eq!(
            nl.brport(a.index).expect("brport"),
            Some(BrPortFlags { hairpin: Some(true), isolated: Some(true) })
        );
        let data = &ip_link(&ns, "bp-a")["linkinfo"]["info_slave_data"];
        assert_eq!(data["hairpin"], true);
        assert_eq!(data["isolated"], true);

        // Only the given flag changes.
        nl.set_brport(a.index, &BrPortFlags { hairpin: None, isolated: Some(false) }).expect("clear isolated");
        assert_eq!(
            nl.brport(a.index).expect("brport"),
            Some(BrPortFlags { hairpin: Some(true), isolated: Some(false) })
        );
        let data = &ip_link(&ns, "bp-a")["linkinfo"]["info_slave_data"];
        assert_eq!(data["hairpin"], true);
        assert_eq!(data["isolated"], false);
        nl.set_brport(a.index, &BrPortFlags::default()).expect("no change is a no-op");
    })
}

/// VLAN filtering either works or, on kernels built without it (like this machine's), fails with
/// an error that converts into `CniError::UnsupportedKernel`.
#[test]
fn bridge_vlan_works_or_reports_unsupported_kernel() {
    fn ok_or_unsupported(r: Result<(), NlError>) {
        if let Err(e) = r {
            assert!(e.is_unsupported(), "{e}");
            let cni: CniError = e.into();
            assert_eq!(cni.code(), cni_common::error::code::UNSUPPORTED_KERNEL, "{cni}");
        }
    }
    in_netns(|| {
        let mut nl = Netlink::open().expect("open");
        ok_or_unsupported(nl.create_bridge("vf-br0", None, true));
        nl.create_bridge("vf-br", None, false).expect("bridge");
        let br = link(&mut nl, "vf-br");
        let (a, _) = veth_pair(&mut nl, "vf-a", "vf-b");
        nl.set_master(a.index, Some(br.index)).expect("master");
        ok_or_unsupported(nl.set_bridge_vlan_filtering(br.index, true));
        ok_or_unsupported(nl.bridge_vlan_add(a.index, 100, true, true));
        ok_or_unsupported(nl.bridge_vlan_del(a.index, 100));
        let err = nl.bridge_vlan_add(a.index, 4095, false, false).expect_err("vid out of range");
        assert_eq!(err.errno(), Some(libc::EINVAL));
        assert!(!err.is_unsupported());
    })
}

#[test]
fn addresses_v4_and_v6() {
    in_netns(|| {
        let ns = this_netns();
        let mut nl = Netlink::open().expect("open");
        let (a, b) = veth_pair(&mut nl, "addr-a", "addr-b");
        nl.set_up(a.index).expect("up");
        nl.set_up(b.index).expect("up");
        let v4 = net("10.20.0.2/24");
        let v6 = net("fd00:20::2/64");
        nl.add_addr(a.index, v4, AddrOpts::default()).expect("add v4");
        nl.add_addr(a.index, v6, AddrOpts { nodad: true, ..AddrOpts::default() }).expect("add v6");

        let mine = nl.addrs(Some(a.index), None).expect("list");
        let got4 = mine.iter().find(|x| x.addr == v4).expect("v4 listed");
        assert_eq!(got4.scope, 0);
        let got6 = mine.iter().find(|x| x.addr == v6).expect("v6 listed");
        assert!(got6.flags & libc::IFA_F_NODAD != 0, "nodad flag: {:#x}", got6.flags);
        assert!(!got6.is_tentative(), "no DAD, so never tentative");
        let only4 = nl.addrs(Some(a.index), Some(IpFamily::V4)).expect("list v4");
        assert_eq!(only4.iter().map(|x| x.addr).collect::<Vec<_>>(), [v4]);
        assert!(nl.addrs(Some(b.index), Some(IpFamily::V4)).expect("list b").is_empty());
        assert!(nl.addrs(None, None).expect("list all").iter().any(|x| x.addr == v6 && x.index == a.index));

        let j = ip(&ns, &["addr", "show", "dev", "addr-a"]);
        let infos = j[0]["addr_info"].as_array().expect("addr_info").clone();
        let j4 = infos.iter().find(|i| i["local"] == "10.20.0.2").expect("ip sees v4");
        assert_eq!(j4["prefixlen"], 24);
        assert_eq!(j4["broadcast"], "10.20.0.255");
        let j6 = infos.iter().find(|i| i["local"] == "fd00:20::2").expect("ip sees v6");
        assert_eq!(j6["prefixlen"], 64);
        assert_eq!(j6["nodad"], true);

        let err = nl.add_addr(a.index, v4, AddrOpts::default()).expect_err("duplicate");
        assert!(err.is_exists(), "{err}");
        assert_eq!(err.op, format!("add address 10.20.0.2/24 to link \"addr-a\" (index {})", a.index));
        nl.add_addr(a.index, v4, AddrOpts { replace: true, ..AddrOpts::default() }).expect("replace");

        nl.del_addr(a.index, v4).expect("del v4");
        nl.del_addr(a.index, v6).expect("del v6");
        let left = nl.addrs(Some(a.index), None).expect("list");
        assert!(!left.iter().any(|x| x.addr == v4 || x.addr == v6), "{left:?}");
        let err = nl.del_addr(a.index, v4).expect_err("already gone");
        assert!(err.is_not_found(), "{err}");
        assert!(err.op.contains("10.20.0.2/24") && err.op.contains("addr-a"), "{err}");
    })
}

#[test]
fn routes_v4_and_v6() {
    in_netns(|| {
        let ns = this_netns();
        let mut nl = Netlink::open().expect("open");
        let (a, b) = veth_pair(&mut nl, "rt-a", "rt-b");
        nl.set_up(a.index).expect("up");
        nl.set_up(b.index).expect("up");
        nl.add_addr(a.index, net("10.30.0.1/24"), AddrOpts::default()).expect("addr");
        nl.add_addr(a.index, net("fd00:30::1/64"), AddrOpts { nodad: true, ..AddrOpts::default() }).expect("addr6");

        let route = Route {
            dst: Some(net("192.168.50.0/24")),
            gw: Some("10.30.0.254".parse().expect("ip")),
            oif: Some(a.index),
            table: Some(100),
            priority: Some(50),
            mtu: Some(1400),
            advmss: Some(1360),
            ..Route::default()
        };
        nl.add_route(&route).expect("add route");
        let listed = nl.routes(IpFamily::V4, Some(100)).expect("list");
        assert_eq!(listed.len(), 1, "{listed:?}");
        let r = &listed[0];
        assert_eq!((r.dst, r.gw, r.oif, r.table), (route.dst, route.gw, route.oif, Some(100)));
        assert_eq!((r.priority, r.mtu, r.advmss), (Some(50), Some(1400), Some(1360)));
        let j = ip(&ns, &["route", "show", "table", "100"]);
        assert_eq!(j[0]["dst"], "192.168.50.0/24");
        assert_eq!(j[0]["gateway"], "10.30.0.254");
        assert_eq!(j[0]["dev"], "rt-a");
        assert_eq!(j[0]["metric"], 50);
        assert_eq!(j[0]["metrics"][0]["mtu"], 1400);
        assert_eq!(j[0]["metrics"][0]["advmss"], 1360);
        assert!(nl.routes(IpFamily::V4, Some(254)).expect("main").iter().all(|r| r.dst != route.dst), "not in main");

        let err = nl.add_route(&route).expect_err("duplicate");
        assert!(err.is_exists(), "{err}");
        assert_eq!(
            err.op,
            format!("add route 192.168.50.0/24 via 10.30.0.254 dev \"rt-a\" (index {}) table 100 metric 50", a.index)
        );
        nl.replace_route(&Route { mtu: Some(1300), ..route.clone() }).expect("replace");
        assert_eq!(nl.routes(IpFamily::V4, Some(100)).expect("list")[0].mtu, Some(1300));

        // Default route in the main table.
        let default = Route { gw: Some("10.30.0.254".parse().expect("ip")), ..Route::default() };
        nl.add_route(&default).expect("default route");
        let main = nl.routes(IpFamily::V4, None).expect("all tables");
        assert!(
            main.iter().any(|r| r.dst == Some(net("0.0.0.0/0")) && r.gw == default.gw && r.table == Some(254)),
            "{main:?}"
        );
        assert!(main.iter().any(|r| r.table == Some(100)), "None lists every table");
        assert!(!main.iter().any(|r| r.table == Some(255)), "local-table routes are not unicast: {main:?}");
        assert_eq!(ip(&ns, &["route", "show", "default"])[0]["gateway"], "10.30.0.254");

        // Unreachable gateway: the error names the route.
        let bad =
            Route { dst: Some(net("192.168.60.0/24")), gw: Some("10.99.0.1".parse().expect("ip")), ..Route::default() };
        let err = nl.add_route(&bad).expect_err("unreachable gateway");
        assert!(err.op.contains("192.168.60.0/24 via 10.99.0.1"), "{err}");

        // IPv6 route via an on-link gateway.
        let r6 = Route {
            dst: Some(net("2001:db8:1::/64")),
            gw: Some("fd00:30::fe".parse().expect("ip")),
            oif: Some(a.index),
            priority: Some(10),
            ..Route::default()
        };
        nl.add_route(&r6).expect("add v6 route");
        let v6 = nl.routes(IpFamily::V6, Some(254)).expect("list v6");
        assert!(v6.iter().any(|r| r.dst == r6.dst && r.gw == r6.gw && r.priority == Some(10)), "{v6:?}");
        let j = ip(&ns, &["-6", "route", "show", "2001:db8:1::/64"]);
        assert_eq!(j[0]["gateway"], "fd00:30::fe");
        assert_eq!(j[0]["metric"], 10);

        nl.del_route(&route).expect("del");
        nl.del_route(&default).expect("del default");
        nl.del_route(&r6).expect("del v6");
        assert!(nl.routes(IpFamily::V4, Some(100)).expect("list").is_empty());
        assert!(ip(&ns, &["route", "show", "default"]).as_array().expect("array").is_empty());
        assert!(!nl.routes(IpFamily::V6, None).expect("list").iter().any(|r| r.dst == r6.dst));
        let err = nl.del_route(&route).expect_err("already gone");
        assert!(err.is_not_found(), "{err}");
    })
}

#[test]
fn route_lookup_and_link_name() {
    in_netns(|| {
        let mut nl = Netlink::open().expect("open");
        let (a, b) = veth_pair(&mut nl, "rg-a", "rg-b");
        nl.set_up(a.index).expect("up");
        nl.set_up(b.index).expect("up");
        nl.add_addr(a.index, net("10.31.0.1/24"), AddrOpts::default()).expect("addr");
        nl.add_addr(b.index, net("10.32.0.1/16"), AddrOpts::default()).expect("addr");
        // the kernel's lookup: the connected route of each subnet, nothing for other addresses
        assert_eq!(nl.route_get_oif("10.31.0.7".parse().expect("ip")).expect("get"), Some(a.index));
        assert_eq!(nl.route_get_oif("10.32.9.9".parse().expect("ip")).expect("get"), Some(b.index));
        assert_eq!(nl.route_get_oif("192.0.2.1".parse().expect("ip")).expect("get"), None);
        // a more specific route wins, as in `ip route get`
        let route = Route { dst: Some(net("10.32.9.0/24")), oif: Some(a.index), ..Route::default() };
        nl.add_route(&route).expect("add route");
        assert_eq!(nl.route_get_oif("10.32.9.9".parse().expect("ip")).expect("get"), Some(a.index));
        assert_eq!(nl.link_name(a.index).expect("name").as_deref(), Some("rg-a"));
        assert_eq!(nl.link_name(b.index).expect("name").as_deref(), Some("rg-b"));
        assert_eq!(nl.link_name(999_999).expect("name"), None);
    });
}

#[test]
fn current_namespace_is_recorded_on_enter() {
    in_netns(|| {
        let first = NetNs::current().expect("current");
        assert_eq!(NetNs::current_id().expect("id"), first.id().expect("id"));
        // moved by a raw unshare: the record is dropped by hand, then read afresh
        let _second = new_netns();
        let second = NetNs::current().expect("current");
        assert_ne!(first.id().expect("id"), second.id().expect("id"));
        assert_eq!(NetNs::current_id().expect("id"), second.id().expect("id"));
        // moved by NetNs::enter: the record follows without reading /proc
        first.enter().expect("enter");
        assert_eq!(NetNs::current_id().expect("id"), first.id().expect("id"));
        assert!(first.is_current().expect("is_current"));
        assert!(!second.is_current().expect("is_current"));
    });
}

#[test]
fn ipv4_settings_over_netlink() {
    in_netns(|| {
        let mut nl = Netlink::open().expect("open");
        let (a, b) = veth_pair(&mut nl, "cf-a", "cf-b");
        let read = |name: &str, key: &str| {
            std::fs::read_to_string(format!("/proc/sys/net/ipv4/conf/{name}/{key}")).expect("read sysctl").trim().to_string()
        };
        assert_eq!(read("cf-a", "arp_notify"), "0");
        nl.set_ipv4_conf(a.index, &[(cni_common::netlink::IPV4_DEVCONF_ARP_NOTIFY, 1)]).expect("set");
        assert_eq!(read("cf-a", "arp_notify"), "1");
        assert_eq!(read("cf-b", "arp_notify"), "0", "only the link named");
        // other settings untouched
        assert_eq!(read("cf-a", "forwarding"), read("cf-b", "forwarding"));
        let e = nl.set_ipv4_conf(999_999, &[(cni_common::netlink::IPV4_DEVCONF_ARP_NOTIFY, 1)]).expect_err("no such link");
        assert_eq!(e.errno(), Some(libc::ENODEV), "{e}");
        assert!(e.to_string().contains("link index 999999"), "{e}");

        // Read back over netlink: what the sysctl files say, set either way.
        use cni_common::netlink::{IPV4_DEVCONF_ARP_NOTIFY, IPV4_DEVCONF_ROUTE_LOCALNET};
        assert_eq!(nl.ipv4_conf(a.index, IPV4_DEVCONF_ARP_NOTIFY).expect("get"), Some(1));
        assert_eq!(nl.ipv4_conf(a.index, IPV4_DEVCONF_ROUTE_LOCALNET).expect("get"), Some(0));
        std::fs::write("/proc/sys/net/ipv4/conf/cf-a/route_localnet", "1").expect("write sysctl");
        assert_eq!(nl.ipv4_conf(a.index, IPV4_DEVCONF_ROUTE_LOCALNET).expect("get"), Some(1));
        assert_eq!(read("cf-b", "route_localnet"), "0");
        assert_eq!(nl.ipv4_conf(b.index, IPV4_DEVCONF_ROUTE_LOCALNET).expect("get"), Some(0));
        assert_eq!(nl.ipv4_conf(999_999, IPV4_DEVCONF_ROUTE_LOCALNET).expect("get"), None, "no such link");
    });
}

#[test]
fn forwarding_over_netlink_follows_the_sysctls() {
    in_netns(|| {
        let mut nl = Netlink::open().expect("open");
        for (family, key) in [(IpFamily::V4, "/proc/sys/net/ipv4/ip_forward"), (IpFamily::V6, "/proc/sys/net/ipv6/conf/all/forwarding")] {
            assert_eq!(nl.forwarding(family).expect("read"), Some(false), "{family:?}: a new namespace does not forward");
            std::fs::write(key, "1").unwrap_or_else(|e| panic!("write {key}: {e}"));
            assert_eq!(nl.forwarding(family).expect("read"), Some(true), "{family:?} after writing {key}");
        }
    });
}

#[test]
fn ipv6_without_link_local_address() {
    in_netns(|| {
        let mut nl = Netlink::open().expect("open");
        let (a, b) = veth_pair(&mut nl, "ll-a", "ll-b");
        nl.set_ipv6_no_link_local(a.index).expect("addrgenmode none");
        let ns = this_netns();
        assert_eq!(ip_link(&ns, "ll-a")["inet6_addr_gen_mode"], "none", "{}", ip_link(&ns, "ll-a"));
        assert_eq!(ip_link(&ns, "ll-b")["inet6_addr_gen_mode"], "eui64", "only the link named");
        // Both ends up: the pair has a carrier, and only ll-b gets a link-local address.
        nl.set_up(a.index).expect("up a");
        nl.set_up(b.index).expect("up b");
        let link_local = |nl: &mut Netlink, name: &str| {
            let index = link(nl, name).index;
            nl.addrs(Some(index), Some(IpFamily::V6))
                .expect("addrs")
                .into_iter()
                .any(|x| matches!(x.addr, IpNetwork::V6(n) if n.ip().segments()[0] == 0xfe80))
        };
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while !link_local(&mut nl, "ll-b") {
            assert!(std::time::Instant::now() < deadline, "ll-b never got its link-local address");
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        assert!(!link_local(&mut nl, "ll-a"), "ll-a has a link-local address: {}", ip_link(&ns, "ll-a"));
        // It keeps IPv6: an address added by hand is taken.
        nl.add_addr(a.index, net("fd00:11::1/64"), AddrOpts { nodad: true, ..Default::default() }).expect("add v6");
        let e = nl.set_ipv6_no_link_local(999_999).expect_err("no such link");
        assert_eq!(e.errno(), Some(libc::ENODEV), "{e}");
    });
}

#[test]
fn detached_delete_returns_with_both_ends_gone_and_keeps_no_descriptor() {
    in_netns(|| {
        let (host, container, mut nl, br) = host_container_and_bridge();
        let spec = VethSpec {
            peer_netns: Some(container.as_fd()),
            master: Some(br.index),
            up: true,
            ..VethSpec::new("vethhost0", "eth0")
        };
        nl.create_veth(&spec).expect("create veth");
        // The helper must not keep a descriptor like a runtime's stdout pipe (no O_CLOEXEC here:
        // it closes every descriptor but its socket). No other test forks while the pipe is open.
        let only_fork = FORKING.write().unwrap_or_else(|e| e.into_inner());
        let mut fds = [0; 2];
        // SAFETY: a valid array of two ints.
        assert_eq!(unsafe { libc::pipe(fds.as_mut_ptr()) }, 0, "pipe");
        let (read_end, write_end) = (fds[0], fds[1]);

        enter(&container);
        let mut cnl = Netlink::open().expect("open container");
        let eth0 = link(&mut cnl, "eth0");
        let pending = cnl.delete_link_detached(eth0.index).expect("detached delete");
        // First, while the helper is most likely still in the kernel's wait. SAFETY: our own descriptors.
        unsafe {
            libc::close(write_end);
            assert_eq!(libc::fcntl(read_end, libc::F_SETFL, libc::O_NONBLOCK), 0);
            let mut b = [0u8; 1];
            let n = libc::read(read_end, b.as_mut_ptr().cast(), 1);
            let e = std::io::Error::last_os_error();
            assert_eq!(n, 0, "EOF expected on the pipe: the helper still holds its write end ({e})");
            libc::close(read_end);
        }
        drop(only_fork);
        // Gone on both sides the moment the call returns (the helper may still be in the kernel).
        assert_eq!(cnl.link_by_name("eth0").expect("get"), None);
        assert!(ip(&container, &["link", "show", "type", "veth"]).as_array().expect("list").is_empty());
        assert!(ip(&host, &["link", "show", "type", "veth"]).as_array().expect("list").is_empty());
        assert!(ip(&host, &["link", "show", "master", "br0"]).as_array().expect("list").is_empty());
        pending.wait();

        // Gone already: not found, from the synchronous request the helper's failure falls back to.
        let err = cnl.delete_link_detached(eth0.index).expect_err("second delete");
        assert!(err.is_not_found(), "{err}");
        // A link the kernel refuses to delete: its own error and text, naming the link.
        let err = cnl.delete_link_detached(1).expect_err("delete lo");
        assert_eq!(err.op, "delete link \"lo\" (index 1)", "{err}");
        assert_eq!(err.errno(), Some(libc::EOPNOTSUPP), "{err}");
        assert!(cnl.link_by_name("lo").expect("get").is_some());
    })
}

#[test]
fn changes_applied_in_one_datagram_in_order_each_with_its_result() {
    in_netns(|| {
        let ns = this_netns();
        let mut nl = Netlink::open().expect("open");
        let (a, b) = veth_pair(&mut nl, "chg-a", "chg-b");
        nl.set_up(b.index).expect("up b");
        let v4 = net("10.21.0.2/24");
        let v6 = net("fd00:21::2/64");
        let default = Route { dst: Some(net("0.0.0.0/0")), gw: Some("10.21.0.1".parse().unwrap()), oif: Some(a.index), ..Route::default() };
        let mut changes = Changes::new();
        changes.add_addr(a.index, v4, AddrOpts::default());
        changes.add_addr(a.index, v6, AddrOpts { nodad: true, ..AddrOpts::default() });
        // in order: the route's gateway needs the address, and its device up
        changes.set_up(a.index);
        changes.set_ipv4_conf(a.index, &[(cni_common::netlink::IPV4_DEVCONF_ARP_NOTIFY, 1)]);
        changes.add_route(&default).expect("a valid route");
        assert_eq!(changes.len(), 5);
        let results = nl.apply(changes).expect("apply");
        assert_eq!(results.len(), 5);
        assert!(results.iter().all(Result::is_ok), "{results:?}");

        assert!(ip_flags(&ip_link(&ns, "chg-a")).contains(&"UP".to_string()));
        let addrs = nl.addrs(Some(a.index), None).expect("list");
        assert!(addrs.iter().any(|x| x.addr == v4) && addrs.iter().any(|x| x.addr == v6), "{addrs:?}");
        assert_eq!(nl.ipv4_conf(a.index, cni_common::netlink::IPV4_DEVCONF_ARP_NOTIFY).expect("read"), Some(1));
        let routes = ip(&ns, &["-4", "route", "show", "default"]);
        assert_eq!(routes[0]["gateway"], "10.21.0.1", "{routes}");
        assert_eq!(routes[0]["dev"], "chg-a", "{routes}");

        // A failed change does not stop the next; each result names its change and the link.
        let mut changes = Changes::new();
        changes.add_addr(a.index, v4, AddrOpts::default());
        changes.add_addr(a.index, net("10.22.0.2/24"), AddrOpts::default());
        changes.add_route(&default).expect("a valid route");
        let results = nl.apply(changes).expect("apply");
        let e = results[0].as_ref().expect_err("the address exists");
        assert!(e.is_exists(), "{e}");
        assert_eq!(e.op, format!("add address 10.21.0.2/24 to link \"chg-a\" (index {})", a.index));
        assert!(results[1].is_ok(), "{:?}", results[1]);
        assert!(nl.addrs(Some(a.index), Some(IpFamily::V4)).expect("list").iter().any(|x| x.addr == net("10.22.0.2/24")));
        let e = results[2].as_ref().expect_err("the route exists");
        assert!(e.is_exists() && e.op.starts_with("add route default via 10.21.0.1 dev \"chg-a\""), "{e}");

        // A route that cannot be expressed is refused before anything is sent.
        let bad = Route { dst: Some(net("10.23.0.0/24")), gw: Some("fd00::1".parse().unwrap()), ..Route::default() };
        assert!(Changes::new().add_route(&bad).is_err());
        assert!(nl.apply(Changes::new()).expect("nothing to send").is_empty());
    })
}
