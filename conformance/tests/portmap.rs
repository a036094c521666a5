//! Our `portmap` plugin chained after our `bridge` (+ `host-local`), through the runner, inside
//! sandboxes, on both firewall backends: real TCP and UDP traffic from an external namespace, hairpin,
//! localhost, IPv6, two containers, CHECK/DEL/GC/STATUS, bad input, the UDP conntrack flush, and a
//! differential run and interop against the reference /usr/lib/cni/portmap (v1.1.1, iptables only).
//!
//! Topology of every sandbox: the sandbox host has a bridge with the containers (isDefaultGateway,
//! hairpinMode) and a veth `ext0` to an "external" namespace: host 198.51.100.1/24, 203.0.113.1/24 and
//! 2001:db8:1::1/64, external .2 / ::2. The external side has no route to the container subnets, so
//! only DNAT-ed connections reach the containers. Listeners are sockets bound inside the container
//! namespace by the test thread before the client connects: no sleeps.
//!
//! Every test makes its own sandbox, so they run in parallel; they fail — never skip — without root
//! or without the plugin binaries. Per-backend tests are `<name>::iptables` and `<name>::nftables`.
//! SCTP is not exercised: this kernel has no SCTP sockets.

mod common;

use std::path::Path;

use common::lab::*;
use common::net::*;
use conformance::diff::{self, Case, SideEnv, Step};
use conformance::plugins::{our_plugins, require_plugins};
use conformance::runner::{Attachment, NetworkConfigList, RuntimeConf};
use conformance::{require_root, ContainerNs, REFERENCE_PLUGIN_DIR};
use serde_json::{json, Value};

/// A second host address (same veth), for hostIP tests.
const HOST4B: &str = "203.0.113.1";

/// One port mapping as runtimes send it (`hostIP` omitted when empty).
fn pmap(host_port: i64, container_port: i64, protocol: &str, host_ip: &str) -> Value {
    let mut m = json!({"hostPort": host_port, "containerPort": container_port, "protocol": protocol});
    if !host_ip.is_empty() {
        m["hostIP"] = json!(host_ip);
    }
    m
}

/// A sandbox with our bridge + host-local + portmap, an external namespace, and one network.
struct Pm {
    lab: Lab,
    ext: ContainerNs,
    backend: &'static str,
    net: String,
    bridge: String,
    ranges: Value,
}

impl Pm {
    /// Network `pm-<tag>` on bridge `br-pm<tag>` with the host-local `ranges`.
    fn new(backend: &'static str, tag: &str, ranges: Value) -> Pm {
        let lab = Lab::with_plugins(&["bridge", "host-local", "portmap"]);
        let ext = lab.container();
        wire_external_addrs(
            lab.host(),
            &ext,
            "ext0",
            &[&format!("{HOST4}/24"), &format!("{HOST4B}/24"), &format!("{HOST6}/64")],
            &[&format!("{EXT4}/24"), "203.0.113.2/24", &format!("{EXT6}/64")],
        );
        let ranges = lab.ipam(ranges)["ranges"].clone();
        Pm { ext, backend, net: format!("pm-{tag}"), bridge: format!("br-pm{tag}"), ranges, lab }
    }

    /// IPv4 only: one subnet.
    fn v4(backend: &'static str, tag: &str, subnet: &str) -> Pm {
        Pm::new(backend, tag, json!([[{"subnet": subnet}]]))
    }

    fn host(&self) -> &conformance::sandbox::NamedNetns {
        self.lab.host()
    }

    fn host_path(&self) -> &Path {
        self.lab.sb.host_path()
    }

    /// bridge (isDefaultGateway, hairpinMode, no ipMasq: the only NAT is portmap's) + portmap.
    fn list(&self, version: &str) -> NetworkConfigList {
        self.lab.chain(
            version,
            &self.net,
            json!({"bridge": self.bridge, "isDefaultGateway": true, "hairpinMode": true, "ipam": self.lab.ipam(self.ranges.clone())}),
            &[json!({"type": "portmap", "backend": self.backend, "capabilities": {"portMappings": true}})],
        )
    }

    fn rc(&self, cid: &str, c: &ContainerNs, mappings: Value) -> RuntimeConf {
        let mut rc = self.lab.rc(cid, c);
        rc.capability_args.insert("portMappings".into(), mappings);
        rc
    }

    /// Firewall lines (nft and iptables, every table) mentioning `needle`.
    fn state(&self, needle: &str) -> Vec<String> {
        firewall_lines_mentioning(self.host(), needle)
    }

    /// The mappings of `cid` exist, in the configured backend only.
    #[track_caller]
    fn assert_mapped(&self, cid: &str) {
        let nat: Vec<String> = cni_nat_lines(self.host(), false).into_iter().chain(cni_nat_lines(self.host(), true)).collect();
        match self.backend {
            "iptables" => {
                let chain = dnat_chain_name(&self.net, cid);
                assert!(nat.iter().any(|l| *l == format!(":{chain} -")), "no chain {chain} for {cid}: {nat:#?}");
                let comment = format!(r#"dnat name: \"{}\" id: \"{cid}\""#, self.net);
                assert!(
                    nat.iter().any(|l| l.starts_with("-A CNI-HOSTPORT-DNAT ") && l.contains(&comment) && l.ends_with(&chain)),
                    "no CNI-HOSTPORT-DNAT rule for {cid}: {nat:#?}"
                );
                assert!(nft_table(self.host(), "inet", HOSTPORT_TABLE).is_none(), "iptables backend made an nftables table");
            }
            "nftables" => {
                // the container's addresses owned by the attachment, each the target of at least
                // one DNAT element of its family; the constant chains; nothing of the earlier layout
                let dump = || nft_table(self.host(), "inet", HOSTPORT_TABLE).unwrap_or_default();
                let sets = nft_sets(self.host(), HOSTPORT_TABLE)
                    .unwrap_or_else(|| panic!("no table inet {HOSTPORT_TABLE}:\n{}", nft_ruleset(self.host())));
                let owner = format!(" : {}", owner_marks(&self.net, cid, "eth0"));
                let mut owned = 0;
                for fam in ["4", "6"] {
                    let get = |set: &str| sets.get(&format!("{set}{fam}")).cloned().unwrap_or_default();
                    for addr in get("owner").iter().filter_map(|e| e.strip_suffix(&owner)) {
                        owned += 1;
                        let target = format!(" : {addr} . ");
                        let dnat: Vec<String> = get("dnat").into_iter().chain(get("hostip")).filter(|e| e.contains(&target)).collect();
                        assert!(!dnat.is_empty(), "no DNAT element of {cid} ({addr}) in inet {HOSTPORT_TABLE}:\n{}", dump());
                    }
                }
                assert!(owned > 0, "no owner element of {cid} in inet {HOSTPORT_TABLE}:\n{}", dump());
                // the constant chains, and a hairpin rule for each hairpin set (per prefix length)
                assert_eq!(nft_chains(self.host(), HOSTPORT_TABLE).unwrap_or_default(), hostport_chains(&sets), "{}", dump());
                assert!(nft_table(self.host(), "inet", LEGACY_HOSTPORT_TABLE).is_none(), "a table of the earlier layout was made");
                assert!(nat.is_empty(), "nftables backend wrote iptables rules: {nat:#?}");
            }
            _ => unreachable!(),
        }
    }

    /// Nothing in the firewall mentions `cid` or its address `ip`, and no nftables element is
    /// owned by `cid` or holds `ip`.
    #[track_caller]
    fn assert_unmapped(&self, cid: &str, ip: &str) {
        let left: Vec<String> = self.state(cid).into_iter().chain(firewall_lines_with_addr(self.host(), ip)).collect();
        assert!(left.is_empty(), "state of {cid} ({ip}) left: {left:#?}");
        let owner = owner_marks(&self.net, cid, "eth0");
        for table in [HOSTPORT_TABLE, LEGACY_HOSTPORT_TABLE] {
            let left = nft_elements_of(self.host(), table, &owner, ip);
            assert!(left.is_empty(), "elements of {cid} ({ip}) left in inet {table}: {left:#?}");
        }
        if self.backend == "iptables" {
            let chain = dnat_chain_name(&self.net, cid);
            let nat = nat_lines(self.host(), false);
            assert!(!nat.iter().any(|l| l.contains(&chain)), "chain {chain} of {cid} left: {nat:#?}");
        }
    }

    /// nftables backend: table `inet cnirs_hostport2` is exactly the constant chains and the
    /// hairpin rules of the hairpin sets named, with the elements `elems` (the sets not named are
    /// empty). Nothing to look at with iptables.
    #[track_caller]
    fn assert_layout(&self, elems: &[(String, Vec<String>)]) {
        if self.backend == "nftables" {
            assert_hostport_layout(self.host(), &hostport_sets_with(elems));
        }
    }

    /// No element left in our nftables tables (both backends: with iptables there is none).
    #[track_caller]
    fn assert_no_attachment_state(&self) {
        let left = nft_attachment_leftovers(self.host());
        assert!(left.is_empty(), "nftables attachment state left: {left:#?}\n{}", nft_ruleset(self.host()));
    }

    /// The elements one attachment with the IPv4 address `ip` in `subnet` owns besides its DNAT
    /// elements: its owner element and its hairpin sources (its subnet in the set of the subnet's
    /// prefix length, 127.0.0.1 in the set of /32).
    fn owned4(&self, cid: &str, ip: &str, subnet: &str) -> Vec<(String, Vec<String>)> {
        let mut v = vec![("owner4".to_string(), vec![format!("{ip} : {}", owner_marks(&self.net, cid, "eth0"))])];
        v.extend(pair_sets(&[pair_elem("hairpin", ip, subnet), pair_elem("hairpin", ip, "127.0.0.1/32")]));
        v
    }

    /// Flush (`delete`: remove) our state behind the plugin's back: the nftables table, or every
    /// rule of the iptables nat table (and with `delete`, its user chains).
    fn wipe(&self, delete: bool) {
        match (self.backend, delete) {
            ("nftables", false) => self.host().run_ok("nft", ["flush", "table", "inet", HOSTPORT_TABLE]).map(drop).unwrap(),
            ("nftables", true) => self.host().run_ok("nft", ["delete", "table", "inet", HOSTPORT_TABLE]).map(drop).unwrap(),
            (_, _) => {
                for tool in ["iptables", "ip6tables"] {
                    self.host().run_ok(tool, ["-t", "nat", "-F"]).unwrap();
                    if delete {
                        self.host().run_ok(tool, ["-t", "nat", "-X"]).unwrap();
                    }
                }
            }
        }
    }
}

both_backends!(
    external_tcp_udp_and_host_ip,
    hairpin_and_localhost,
    ipv6_mappings,
    two_containers_del_one,
    check_detects_removed_rules,
    del_idempotent_without_prev_result_and_after_flush,
    no_port_mappings_no_firewall_state,
    gc_and_status,
    bad_input_names_the_field,
    udp_conntrack_flushed_on_add,
);

// ---------------------------------------------------------------------------------------------
// traffic
// ---------------------------------------------------------------------------------------------

/// External client → hostIP:hostPort → container, TCP and UDP; `hostIP` restricts the address.
fn external_tcp_udp_and_host_ip(backend: &'static str) {
    let pm = Pm::v4(backend, "ext", "10.40.1.0/24");
    let l = pm.list("1.0.0");
    let c = pm.lab.container();
    let maps = json!([
        pmap(8080, 80, "tcp", ""),
        pmap(5353, 53, "udp", ""),
        pmap(8081, 81, "tcp", HOST4),
        pmap(8082, 82, "tcp", HOST4B),
        pmap(5354, 54, "udp", HOST4B),
    ]);
    let rc = pm.rc("ctr-ext", &c, maps);
    let t80 = tcp_listen(c.path(), sa("0.0.0.0", 80));
    let t81 = tcp_listen(c.path(), sa("0.0.0.0", 81));
    let t82 = tcp_listen(c.path(), sa("0.0.0.0", 82));
    let u53 = udp_bind(c.path(), sa("0.0.0.0", 53));
    let u54 = udp_bind(c.path(), sa("0.0.0.0", 54));
    let r = pm.lab.add(&l, &rc);
    let ip = result_ip(&r, false);
    pm.assert_mapped("ctr-ext");
    let mut elems = pm.owned4("ctr-ext", &ip, "10.40.1.0/24");
    elems.push(("dnat4".to_string(), vec![format!("tcp . 8080 : {ip} . 80"), format!("udp . 5353 : {ip} . 53")]));
    elems.push(("hostip4".to_string(),
        vec![
            format!("{HOST4} . tcp . 8081 : {ip} . 81"),
            format!("{HOST4B} . tcp . 8082 : {ip} . 82"),
            format!("{HOST4B} . udp . 5354 : {ip} . 54"),
        ],
    ));
    pm.assert_layout(&elems);
    let ext = pm.ext.path();

    let seen = reach_tcp(&t80, ext, sa(HOST4, 8080));
    assert_eq!(seen.ip().to_string(), EXT4, "external clients are not masqueraded");
    reach_tcp(&t80, ext, sa(HOST4B, 8080));
    let seen = reach_udp(&u53, ext, sa(HOST4, 5353));
    assert_eq!(seen.ip().to_string(), EXT4);
    reach_udp(&u53, ext, sa(HOST4B, 5353));

    reach_tcp(&t81, ext, sa(HOST4, 8081));
    no_tcp(&t81, ext, sa(HOST4B, 8081));
    reach_tcp(&t82, ext, sa(HOST4B, 8082));
    no_tcp(&t82, ext, sa(HOST4, 8082));
    reach_udp(&u54, ext, sa(HOST4B, 5354));
    no_udp(&u54, ext, sa(HOST4, 5354));

    pm.lab.check(&l, &rc);
    pm.lab.del(&l, &rc);
    pm.assert_unmapped("ctr-ext", &ip);
    pm.assert_layout(&emptied(&elems));
    pm.assert_no_attachment_state();
    no_tcp(&t80, ext, sa(HOST4, 8080));
    no_udp(&u53, ext, sa(HOST4, 5353));
}

/// The container reaches its own published port through the host address (hairpin, masqueraded to
/// the gateway address), and the host reaches it through 127.0.0.1 and its own address.
fn hairpin_and_localhost(backend: &'static str) {
    let pm = Pm::v4(backend, "hp", "10.40.2.0/24");
    let l = pm.list("1.0.0");
    let c = pm.lab.container();
    let rc = pm.rc("ctr-hp", &c, json!([pmap(8080, 80, "tcp", ""), pmap(5353, 53, "udp", "")]));
    let t80 = tcp_listen(c.path(), sa("0.0.0.0", 80));
    let u53 = udp_bind(c.path(), sa("0.0.0.0", 53));
    let ip = result_ip(&pm.lab.add(&l, &rc), false);
    let gw = "10.40.2.1";

    let seen = reach_tcp(&t80, c.path(), sa(HOST4, 8080));
    assert_eq!(seen.ip().to_string(), gw, "hairpin connections are masqueraded to the bridge address");
    let seen = reach_udp(&u53, c.path(), sa(HOST4, 5353));
    assert_eq!(seen.ip().to_string(), gw, "hairpin datagrams are masqueraded to the bridge address");

    let seen = reach_tcp(&t80, pm.host_path(), sa("127.0.0.1", 8080));
    assert_eq!(seen.ip().to_string(), gw, "localhost connections are masqueraded to the bridge address");
    reach_udp(&u53, pm.host_path(), sa("127.0.0.1", 5353));
    reach_tcp(&t80, pm.host_path(), sa(HOST4, 8080));
    assert_eq!(sysctl(pm.host(), &format!("net/ipv4/conf/{}/route_localnet", pm.bridge)), "1", "route_localnet on the bridge");
    assert_eq!(sysctl(pm.host(), "net/ipv4/conf/all/route_localnet"), "0", "route_localnet only where needed");
    assert_eq!(sysctl(pm.host(), "net/ipv4/conf/ext0/route_localnet"), "0", "route_localnet only where needed");

    let mut elems = pm.owned4("ctr-hp", &ip, "10.40.2.0/24");
    elems.push(("dnat4".to_string(), vec![format!("tcp . 8080 : {ip} . 80"), format!("udp . 5353 : {ip} . 53")]));
    pm.assert_layout(&elems);
    pm.lab.check(&l, &rc);
    pm.lab.del(&l, &rc);
    pm.assert_unmapped("ctr-hp", &ip);
    pm.assert_layout(&emptied(&elems));
    no_tcp(&t80, pm.host_path(), sa("127.0.0.1", 8080));
}

/// Dual-stack container: IPv6 mappings from the external namespace and hairpin, hostIP per family.
fn ipv6_mappings(backend: &'static str) {
    let pm = Pm::new(backend, "v6", json!([[{"subnet": "10.40.3.0/24"}], [{"subnet": "fd00:40:3::/64"}]]));
    let l = pm.list("1.0.0");
    let c = pm.lab.container();
    let maps = json!([pmap(8080, 80, "tcp", ""), pmap(5353, 53, "udp", ""), pmap(8443, 443, "tcp", HOST6), pmap(8444, 444, "tcp", HOST4)]);
    let rc = pm.rc("ctr-v6", &c, maps);
    let r = pm.lab.add(&l, &rc);
    let (ip4, ip6) = (result_ip(&r, false), result_ip(&r, true));
    let t80_4 = tcp_listen(c.path(), sa(&ip4, 80));
    let t80_6 = tcp_listen(c.path(), sa(&ip6, 80));
    let u53_6 = udp_bind(c.path(), sa(&ip6, 53));
    let t443 = tcp_listen(c.path(), sa("::", 443));
    let t444 = tcp_listen(c.path(), sa("::", 444));
    pm.assert_mapped("ctr-v6");
    let mut elems = pm.owned4("ctr-v6", &ip4, "10.40.3.0/24");
    elems.extend([
        ("dnat4".to_string(), vec![format!("tcp . 8080 : {ip4} . 80"), format!("udp . 5353 : {ip4} . 53")]),
        ("hostip4".to_string(), vec![format!("{HOST4} . tcp . 8444 : {ip4} . 444")]),
        ("owner6".to_string(), vec![format!("{ip6} : {}", owner_marks(&pm.net, "ctr-v6", "eth0"))]),
        ("hairpin6_64".to_string(), vec![format!("{ip6} . fd00:40:3::")]),
        ("dnat6".to_string(), vec![format!("tcp . 8080 : {ip6} . 80"), format!("udp . 5353 : {ip6} . 53")]),
        ("hostip6".to_string(), vec![format!("{HOST6} . tcp . 8443 : {ip6} . 443")]),
    ]);
    pm.assert_layout(&elems);
    let ext = pm.ext.path();

    let seen = reach_tcp(&t80_6, ext, sa(HOST6, 8080));
    assert_eq!(seen.ip().to_string(), EXT6, "external clients are not masqueraded");
    reach_tcp(&t80_4, ext, sa(HOST4, 8080));
    let seen = reach_udp(&u53_6, ext, sa(HOST6, 5353));
    assert_eq!(seen.ip().to_string(), EXT6);
    reach_tcp(&t443, ext, sa(HOST6, 8443));
    no_tcp(&t443, ext, sa(HOST4, 8443));
    reach_tcp(&t444, ext, sa(HOST4, 8444));
    no_tcp(&t444, ext, sa(HOST6, 8444));
    let seen = reach_tcp(&t80_6, c.path(), sa(HOST6, 8080));
    assert_eq!(seen.ip().to_string(), "fd00:40:3::1", "IPv6 hairpin is masqueraded to the bridge address");

    // (the reference v1.1.1 CHECK fails on IPv4-only containers; ours passes here and below)
    pm.lab.check(&l, &rc);
    pm.lab.del(&l, &rc);
    pm.assert_unmapped("ctr-v6", &ip4);
    pm.assert_unmapped("ctr-v6", &ip6);
    pm.assert_layout(&emptied(&elems));
    no_tcp(&t80_6, ext, sa(HOST6, 8080));
}

/// Two containers with different host ports; DEL of one leaves the other working.
fn two_containers_del_one(backend: &'static str) {
    let pm = Pm::v4(backend, "two", "10.40.4.0/24");
    let l = pm.list("1.0.0");
    let (c1, c2) = (pm.lab.container(), pm.lab.container());
    let rc1 = pm.rc("ctr-one", &c1, json!([pmap(8080, 80, "tcp", ""), pmap(5353, 53, "udp", "")]));
    let rc2 = pm.rc("ctr-two", &c2, json!([pmap(9090, 80, "tcp", ""), pmap(6363, 53, "udp", "")]));
    let (t1, u1) = (tcp_listen(c1.path(), sa("0.0.0.0", 80)), udp_bind(c1.path(), sa("0.0.0.0", 53)));
    let (t2, u2) = (tcp_listen(c2.path(), sa("0.0.0.0", 80)), udp_bind(c2.path(), sa("0.0.0.0", 53)));
    let ip1 = result_ip(&pm.lab.add(&l, &rc1), false);
    let ip2 = result_ip(&pm.lab.add(&l, &rc2), false);
    let dnat1 = [format!("tcp . 8080 : {ip1} . 80"), format!("udp . 5353 : {ip1} . 53")];
    let dnat2 = [format!("tcp . 9090 : {ip2} . 80"), format!("udp . 6363 : {ip2} . 53")];
    let mut both = pm.owned4("ctr-one", &ip1, "10.40.4.0/24");
    both.extend(pm.owned4("ctr-two", &ip2, "10.40.4.0/24"));
    both.push(("dnat4".to_string(), dnat1.iter().chain(&dnat2).cloned().collect()));
    pm.assert_layout(&both);
    let mut only2 = pm.owned4("ctr-two", &ip2, "10.40.4.0/24");
    only2.push(("dnat4".to_string(), dnat2.to_vec()));
    let ext = pm.ext.path();
    reach_tcp(&t1, ext, sa(HOST4, 8080));
    reach_udp(&u1, ext, sa(HOST4, 5353));
    reach_tcp(&t2, ext, sa(HOST4, 9090));
    reach_udp(&u2, ext, sa(HOST4, 6363));
    pm.lab.check(&l, &rc1);
    pm.lab.check(&l, &rc2);

    pm.lab.del(&l, &rc1);
    pm.assert_unmapped("ctr-one", &ip1);
    pm.assert_mapped("ctr-two");
    pm.assert_layout(&only2);
    no_tcp(&t1, ext, sa(HOST4, 8080));
    no_udp(&u1, ext, sa(HOST4, 5353));
    reach_tcp(&t2, ext, sa(HOST4, 9090));
    reach_udp(&u2, ext, sa(HOST4, 6363));
    reach_tcp(&t2, c2.path(), sa(HOST4, 9090));
    pm.lab.check(&l, &rc2);
    pm.lab.del(&l, &rc2);
    pm.assert_unmapped("ctr-two", &ip2);
    pm.assert_layout(&emptied(&both));
    pm.assert_no_attachment_state();
}

// ---------------------------------------------------------------------------------------------
// CHECK, DEL
// ---------------------------------------------------------------------------------------------

/// CHECK passes after ADD and fails once the container's rules are removed by hand; removing one
/// container's rules does not fail the other's CHECK.
fn check_detects_removed_rules(backend: &'static str) {
    let pm = Pm::v4(backend, "chk", "10.40.5.0/24");
    let l = pm.list("1.0.0");
    let (c1, c2) = (pm.lab.container(), pm.lab.container());
    let rc1 = pm.rc("ctr-chk1", &c1, json!([pmap(8080, 80, "tcp", "")]));
    let rc2 = pm.rc("ctr-chk2", &c2, json!([pmap(9090, 80, "tcp", ""), pmap(5353, 53, "udp", "")]));
    let ip1 = result_ip(&pm.lab.add(&l, &rc1), false);
    let ip2 = result_ip(&pm.lab.add(&l, &rc2), false);
    pm.lab.check(&l, &rc1);
    pm.lab.check(&l, &rc2);
    let nft = |args: &[&str]| pm.host().run_ok("nft", args).map(drop).unwrap();

    // 1: only container 1's own rules (iptables: its chain flushed; nftables: its DNAT element)
    match backend {
        "iptables" => {
            pm.host().run_ok("iptables", ["-t", "nat", "-F", &dnat_chain_name(&pm.net, "ctr-chk1")]).unwrap();
        }
        _ => {
            let before = nft_sets(pm.host(), HOSTPORT_TABLE).unwrap_or_default();
            assert!(before["dnat4"].contains(&format!("tcp . 8080 : {ip1} . 80")), "{before:?}");
            nft(&["delete", "element", "inet", HOSTPORT_TABLE, "dnat4", "{ tcp . 8080 }"]);
        }
    }
    let p = failure(pm.lab.rt.check_list(&l, &rc1), "CHECK with the container's rules removed");
    eprintln!("CHECK ctr-chk1 after removing its rules: {}", text_of(&p));
    pm.lab.check(&l, &rc2);
    if backend == "nftables" {
        // a mapping of container 2 pointed at another container port: CHECK compares the data
        nft(&["delete", "element", "inet", HOSTPORT_TABLE, "dnat4", "{ udp . 5353 }"]);
        nft(&["add", "element", "inet", HOSTPORT_TABLE, "dnat4", &format!("{{ udp . 5353 : {ip2} . 54 }}")]);
        let p = failure(pm.lab.rt.check_list(&l, &rc2), "CHECK with a mapping re-pointed");
        eprintln!("CHECK ctr-chk2 with its mapping re-pointed: {}", text_of(&p));
        nft(&["delete", "element", "inet", HOSTPORT_TABLE, "dnat4", "{ udp . 5353 }"]);
        nft(&["add", "element", "inet", HOSTPORT_TABLE, "dnat4", &format!("{{ udp . 5353 : {ip2} . 53 }}")]);
        pm.lab.check(&l, &rc2);
        // its hairpin element gone
        nft(&["delete", "element", "inet", HOSTPORT_TABLE, "hairpin4_32", &format!("{{ {ip2} . 127.0.0.1 }}")]);
        let p = failure(pm.lab.rt.check_list(&l, &rc2), "CHECK without a hairpin element");
        eprintln!("CHECK ctr-chk2 without a hairpin element: {}", text_of(&p));
        nft(&["add", "element", "inet", HOSTPORT_TABLE, "hairpin4_32", &format!("{{ {ip2} . 127.0.0.1 }}")]);
        pm.lab.check(&l, &rc2);
    }

    // 2: everything flushed
    pm.wipe(false);
    let p = failure(pm.lab.rt.check_list(&l, &rc2), "CHECK with the table flushed");
    eprintln!("CHECK ctr-chk2 after flushing everything: {}", text_of(&p));

    pm.lab.del(&l, &rc1);
    pm.lab.del(&l, &rc2);
    pm.assert_unmapped("ctr-chk1", &ip1);
    pm.assert_unmapped("ctr-chk2", &ip2);
    pm.assert_no_attachment_state();
}

/// DEL without prevResult removes exactly that container's mappings; DEL repeats; DEL works after
/// the rules were flushed and after the table/chains were deleted behind the plugin's back, and ADD
/// recreates everything afterwards.
fn del_idempotent_without_prev_result_and_after_flush(backend: &'static str) {
    let pm = Pm::v4(backend, "del", "10.40.6.0/24");
    let l = pm.list("1.0.0");
    let (c1, c2, c3) = (pm.lab.container(), pm.lab.container(), pm.lab.container());
    let rc1 = pm.rc("ctr-del1", &c1, json!([pmap(8080, 80, "tcp", "")]));
    let rc2 = pm.rc("ctr-del2", &c2, json!([pmap(9090, 80, "tcp", ""), pmap(6363, 53, "udp", "")]));
    let (t1, t2, t3) = (
        tcp_listen(c1.path(), sa("0.0.0.0", 80)),
        tcp_listen(c2.path(), sa("0.0.0.0", 80)),
        tcp_listen(c3.path(), sa("0.0.0.0", 80)),
    );
    let ip1 = result_ip(&pm.lab.add(&l, &rc1), false);
    let ip2 = result_ip(&pm.lab.add(&l, &rc2), false);
    let ext = pm.ext.path();
    reach_tcp(&t1, ext, sa(HOST4, 8080));

    // portmap's DEL alone, without prevResult (a runtime that lost its cache)
    let cfg = l.plugin_config(1, Some(&rc1), None, &[]).unwrap();
    let env = env_of(&rc1);
    let out = pm.lab.raw("portmap", "DEL", &cfg, &refs(&env));
    expect_ok(&out, "portmap DEL without prevResult");
    assert!(out.stdout.is_empty(), "DEL prints nothing: {:?}", out.stdout_str());
    pm.assert_unmapped("ctr-del1", &ip1);
    no_tcp(&t1, ext, sa(HOST4, 8080));
    reach_tcp(&t2, ext, sa(HOST4, 9090));
    pm.lab.check(&l, &rc2);
    // again, and without netns
    let env: Vec<(&str, &str)> = vec![("CNI_CONTAINERID", "ctr-del1"), ("CNI_NETNS", ""), ("CNI_IFNAME", "eth0")];
    expect_ok(&pm.lab.raw("portmap", "DEL", &cfg, &env), "repeated portmap DEL without prevResult and netns");
    pm.lab.del(&l, &rc1);
    pm.lab.del(&l, &rc1);

    // rules flushed behind our back
    pm.wipe(false);
    pm.lab.del(&l, &rc2);
    pm.assert_unmapped("ctr-del2", &ip2);
    // tables/chains deleted behind our back
    pm.wipe(true);
    pm.lab.del(&l, &rc2);
    let cfg2 = l.plugin_config(1, Some(&rc2), None, &[]).unwrap();
    let env2 = env_of(&rc2);
    expect_ok(&pm.lab.raw("portmap", "DEL", &cfg2, &refs(&env2)), "portmap DEL after the table was deleted");

    // and ADD builds everything anew
    let rc3 = pm.rc("ctr-del3", &c3, json!([pmap(9090, 80, "tcp", "")]));
    let ip3 = result_ip(&pm.lab.add(&l, &rc3), false);
    pm.assert_mapped("ctr-del3");
    let mut elems = pm.owned4("ctr-del3", &ip3, "10.40.6.0/24");
    elems.push(("dnat4".to_string(), vec![format!("tcp . 9090 : {ip3} . 80")]));
    pm.assert_layout(&elems);
    reach_tcp(&t3, ext, sa(HOST4, 9090));
    pm.lab.check(&l, &rc3);
    pm.lab.del(&l, &rc3);
    pm.assert_no_attachment_state();
}

/// Without port mappings, ADD passes prevResult through and no firewall state is made at all (no
/// table, no chain: the reference fix #509); CHECK and DEL pass and leave nothing either.
fn no_port_mappings_no_firewall_state(backend: &'static str) {
    let pm = Pm::v4(backend, "none", "10.40.7.0/24");
    let l = pm.list("1.0.0");
    let c = pm.lab.container();
    let rc = pm.lab.rc("ctr-none", &c); // no capability args at all
    let r = pm.lab.add(&l, &rc);
    let nothing = |when: &str| {
        assert!(nft_tables(pm.host()).is_empty(), "{when}: firewall tables exist: {:?}\n{}", nft_tables(pm.host()), nft_ruleset(pm.host()));
        let nat: Vec<String> = nat_lines(pm.host(), false).into_iter().chain(nat_lines(pm.host(), true)).collect();
        assert!(!nat.iter().any(|x| x.contains("CNI-")), "{when}: iptables chains: {nat:#?}");
    };
    nothing("after ADD");

    // the plugin alone: its output is its prevResult, with and without an empty portMappings
    for (what, caps) in [("no runtimeConfig", None), ("empty portMappings", Some(json!([])))] {
        let mut rc2 = rc.clone();
        if let Some(m) = caps {
            rc2.capability_args.insert("portMappings".into(), m);
        }
        let cfg = l.plugin_config(1, Some(&rc2), Some(&r), &[]).unwrap();
        let env = env_of(&rc2);
        let out = pm.lab.raw("portmap", "ADD", &cfg, &refs(&env));
        expect_ok(&out, what);
        assert_eq!(out.json(), Some(r.clone()), "{what}: ADD must pass prevResult through");
        nothing(what);
    }
    pm.lab.check(&l, &rc);
    pm.lab.del(&l, &rc);
    nothing("after DEL");
}

// ---------------------------------------------------------------------------------------------
// GC, STATUS
// ---------------------------------------------------------------------------------------------

fn gc_and_status(backend: &'static str) {
    let pm = Pm::v4(backend, "gc", "10.40.8.0/24");
    let l = pm.list("1.1.0");
    let (c0, c1) = (pm.lab.container(), pm.lab.container());
    let rc0 = pm.rc("ctr-gc0", &c0, json!([pmap(8080, 80, "tcp", "")]));
    let rc1 = pm.rc("ctr-gc1", &c1, json!([pmap(9090, 80, "tcp", ""), pmap(6363, 53, "udp", "")]));
    let (t0, t1) = (tcp_listen(c0.path(), sa("0.0.0.0", 80)), tcp_listen(c1.path(), sa("0.0.0.0", 80)));
    let ip0 = result_ip(&pm.lab.add(&l, &rc0), false);
    let ip1 = result_ip(&pm.lab.add(&l, &rc1), false);
    pm.lab.rt.status_list(&l).unwrap_or_else(|e| panic!("STATUS: {e}"));
    let ext = pm.ext.path();
    reach_tcp(&t1, ext, sa(HOST4, 9090));

    // container 1 forgotten by the runtime: only the plugins' GC can clean up after it
    pm.lab.forget(&l, &rc1);
    pm.lab.rt.gc_list(&l, &[Attachment::new("ctr-gc0", "eth0")]).unwrap_or_else(|e| panic!("GC: {e}"));
    pm.assert_unmapped("ctr-gc1", &ip1);
    no_tcp(&t1, ext, sa(HOST4, 9090));
    pm.assert_mapped("ctr-gc0");
    let mut elems = pm.owned4("ctr-gc0", &ip0, "10.40.8.0/24");
    elems.push(("dnat4".to_string(), vec![format!("tcp . 8080 : {ip0} . 80")]));
    pm.assert_layout(&elems);
    reach_tcp(&t0, ext, sa(HOST4, 8080));
    pm.lab.check(&l, &rc0);
    pm.lab.rt.status_list(&l).unwrap_or_else(|e| panic!("STATUS after GC: {e}"));

    // GC with nothing valid (the runner DELs the cached attachment first; GC then finds nothing)
    pm.lab.rt.gc_list(&l, &[]).unwrap_or_else(|e| panic!("GC: {e}"));
    pm.assert_unmapped("ctr-gc0", &ip0);
    pm.assert_layout(&emptied(&elems));
    pm.assert_no_attachment_state();
    no_tcp(&t0, ext, sa(HOST4, 8080));
}

// ---------------------------------------------------------------------------------------------
// bad input
// ---------------------------------------------------------------------------------------------

fn bad_input_names_the_field(backend: &'static str) {
    let lab = Lab::with_plugins(&["portmap"]);
    let c = lab.container();
    let netns = c.path().to_str().unwrap();
    let prev = |ips: Value| {
        json!({"cniVersion": "1.0.0",
               "interfaces": [{"name": "br-bad"}, {"name": "veth01234567"}, {"name": "eth0", "sandbox": netns}],
               "ips": ips})
    };
    let prev4 = prev(json!([{"address": "10.40.9.2/24", "gateway": "10.40.9.1", "interface": 2}]));
    let prev6 = prev(json!([{"address": "fd00:40:9::2/64", "gateway": "fd00:40:9::1", "interface": 2}]));
    let cfg = |maps: Value, prev: Option<&Value>, backend: &str| {
        let mut v = json!({"cniVersion": "1.0.0", "name": "pm-bad", "type": "portmap", "backend": backend,
                           "capabilities": {"portMappings": true}, "runtimeConfig": {"portMappings": maps}});
        if let Some(p) = prev {
            v["prevResult"] = p.clone();
        }
        serde_json::to_vec(&v).unwrap()
    };
    let good = json!([pmap(8080, 80, "tcp", "")]);
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        ("hostPort 0", cfg(json!([pmap(0, 80, "tcp", "")]), Some(&prev4), backend), "hostPort"),
        ("hostPort 70000", cfg(json!([pmap(70000, 80, "tcp", "")]), Some(&prev4), backend), "hostPort"),
        ("hostPort -1", cfg(json!([pmap(-1, 80, "tcp", "")]), Some(&prev4), backend), "hostPort"),
        ("containerPort 0", cfg(json!([pmap(8080, 0, "tcp", "")]), Some(&prev4), backend), "containerPort"),
        ("containerPort 65536", cfg(json!([pmap(8080, 65536, "tcp", "")]), Some(&prev4), backend), "containerPort"),
        ("protocol icmp", cfg(json!([pmap(8080, 80, "icmp", "")]), Some(&prev4), backend), "protocol"),
        ("IPv6 hostIP, IPv4-only container", cfg(json!([pmap(8080, 80, "tcp", "2001:db8::1")]), Some(&prev4), backend), "hostIP"),
        ("IPv4 hostIP, IPv6-only container", cfg(json!([pmap(8080, 80, "tcp", HOST4)]), Some(&prev6), backend), "hostIP"),
        ("hostIP not an address", cfg(json!([pmap(8080, 80, "tcp", "host.example")]), Some(&prev4), backend), "hostIP"),
        (
            "second mapping bad",
            cfg(json!([pmap(8080, 80, "tcp", ""), pmap(8081, 99999, "udp", "")]), Some(&prev4), backend),
            "portMappings[1]",
        ),
        ("missing prevResult", cfg(good.clone(), None, backend), "prevResult"),
        ("unknown backend", cfg(good, Some(&prev4), "pf"), "backend"),
    ];
    let env = [("CNI_CONTAINERID", "ctr-bad"), ("CNI_NETNS", netns), ("CNI_IFNAME", "eth0")];
    for (what, bytes, field) in &cases {
        let out = lab.raw("portmap", "ADD", bytes, &env);
        let obj = expect_code(&out, 7, what);
        let text = format!("{} {}", obj["msg"].as_str().unwrap_or_default(), obj["details"].as_str().unwrap_or_default());
        assert!(text.contains(field), "{what}: the error must name {field:?}: {text}");
    }
    assert!(nft_tables(lab.host()).is_empty(), "bad input made firewall state: {}", nft_ruleset(lab.host()));
}

// ---------------------------------------------------------------------------------------------
// UDP conntrack flush
// ---------------------------------------------------------------------------------------------

fn udp_conntrack(host: &Path) -> Vec<cni_common::conntrack::Entry> {
    cni_common::netns::NetNs::open(host)
        .and_then(|ns| ns.run(|| cni_common::conntrack::list(Some(17))))
        .unwrap_or_else(|e| panic!("conntrack list in {}: {e}", host.display()))
}

/// A UDP flow towards a host port, tracked before the port is published (un-NATed, answered by the
/// host's ICMP port unreachable), is deleted by the ADD that publishes the port, so the same flow
/// (same source port) reaches the container at once instead of after the conntrack timeout.
fn udp_conntrack_flushed_on_add(backend: &'static str) {
    let pm = Pm::v4(backend, "ct", "10.40.10.0/24");
    let l = pm.list("1.0.0");
    let (c0, c1) = (pm.lab.container(), pm.lab.container());
    // a first mapping: NAT (and so connection tracking) is active in the sandbox host
    pm.lab.add(&l, &pm.rc("ctr-ct0", &c0, json!([pmap(8080, 80, "tcp", "")])));
    let src = sa(EXT4, 40000);
    let target = sa(HOST4, 5300);
    udp_send(pm.ext.path(), src, target).unwrap();
    let is_flow = |e: &cni_common::conntrack::Entry| {
        e.src.to_string() == EXT4 && e.sport == 40000 && e.dst.to_string() == HOST4 && e.dport == 5300
    };
    let deadline = std::time::Instant::now() + REACH_TIMEOUT;
    while !udp_conntrack(pm.host_path()).iter().any(is_flow) {
        let now = udp_conntrack(pm.host_path());
        assert!(std::time::Instant::now() < deadline, "premise: no conntrack entry for {src} -> {target}: {now:?}");
        std::thread::sleep(std::time::Duration::from_millis(5));
    }

    let server = udp_bind(c1.path(), sa("0.0.0.0", 53));
    let rc1 = pm.rc("ctr-ct1", &c1, json!([pmap(5300, 53, "udp", "")]));
    pm.lab.add(&l, &rc1);
    let left: Vec<String> = udp_conntrack(pm.host_path()).iter().filter(|e| is_flow(e)).map(|e| e.to_string()).collect();
    assert!(left.is_empty(), "ADD left the stale conntrack entry: {left:?}");
    let seen = udp_exchange(&server, pm.ext.path(), Some(src), target, REACH_TIMEOUT)
        .unwrap_or_else(|e| panic!("the old flow does not reach the container after ADD: {e}"));
    assert_eq!(seen, src);
    pm.lab.del(&l, &rc1);
}

// ---------------------------------------------------------------------------------------------
// the reference
// ---------------------------------------------------------------------------------------------

/// `iptables-save` lines with what legitimately differs between two runs normalised: the order in
/// which chains were created (declarations sorted; rules grouped by chain, chains by name, rule
/// order within a chain kept).
fn normalize_save(lines: Vec<String>) -> Vec<String> {
    let (mut decls, mut rules): (Vec<String>, Vec<String>) = lines.into_iter().partition(|l| l.starts_with(':'));
    decls.sort();
    rules.sort_by_key(|l| l.split_whitespace().nth(1).unwrap_or_default().to_string());
    decls.into_iter().chain(rules).collect()
}

fn pm_snapshot(env: &SideEnv) -> Value {
    let host = env.sandbox.host();
    json!({"nat4": normalize_save(nat_lines(host, false)), "nat6": normalize_save(nat_lines(host, true))})
}

/// The second container's runtime conf, with its own host ports (17 TCP ports: more than one
/// multiport rule).
fn diff_rc1(env: &SideEnv) -> RuntimeConf {
    let mut rc = env.rcs[1].clone();
    let mut maps: Vec<Value> = (9000..9017).map(|p| pmap(p, 80, "tcp", "")).collect();
    maps.push(pmap(6363, 53, "udp", ""));
    rc.capability_args.insert("portMappings".into(), Value::Array(maps));
    rc
}

/// Same steps against the reference bridge + portmap and ours (iptables backend, cniVersion
/// 1.0.0, dual stack): identical `iptables-save -t nat` / `ip6tables-save -t nat` after each step.
#[test]
fn differential_iptables_layout_matches_reference() {
    require_root();
    our_plugins(&["bridge", "host-local", "portmap"]);
    let conflist = json!({
        "cniVersion": "1.0.0", "name": "pm-diff",
        "plugins": [
            {"type": "bridge", "bridge": "br-pmdiff", "isDefaultGateway": true, "hairpinMode": true,
             "ipam": {"type": "host-local", "dataDir": "{{tmp}}/ipam",
                      "ranges": [[{"subnet": "10.40.11.0/24"}], [{"subnet": "fd00:40:11::/64"}]]}},
            {"type": "portmap", "backend": "iptables", "capabilities": {"portMappings": true}}
        ]
    });
    let mut rc = RuntimeConf::new("ctr-diff", "", "eth0");
    rc.capability_args.insert(
        "portMappings".into(),
        json!([pmap(8080, 80, "tcp", ""), pmap(5353, 53, "udp", ""), pmap(8443, 443, "tcp", HOST4), pmap(8444, 444, "tcp", HOST6)]),
    );
    let case = Case::new("portmap-iptables", conflist)
        .rc(rc)
        .containers(2)
        .snapshot(std::sync::Arc::new(pm_snapshot))
        .steps([
            Step::add(),
            Step::custom("ADD container 1", |env| {
                env.runtime.add_list(env.list, &diff_rc1(env)).map(|_| json!("ok")).map_err(|e| e.to_string())
            }),
            Step::custom("DEL container 1", |env| {
                env.runtime.del_list(env.list, &diff_rc1(env)).map(|_| json!("ok")).map_err(|e| e.to_string())
            }),
            Step::del(),
            Step::del().label("repeated DEL"),
        ]);
    let report = diff::run(&case).unwrap();
    let (o, r) = (&report.ours, &report.reference);
    let mut failures = Vec::new();
    let lines = |v: &Value| -> Vec<String> { v.as_array().into_iter().flatten().filter_map(|x| x.as_str().map(String::from)).collect() };
    for (os, rs) in o.steps.iter().zip(&r.steps) {
        if os.outcome.is_ok() != rs.outcome.is_ok() {
            failures.push(format!("step {:?}: ours {:?}, reference {:?}", os.label, os.outcome, rs.outcome));
        }
        for fam in ["nat4", "nat6"] {
            let (a, b) = (lines(&os.snapshot[fam]), lines(&rs.snapshot[fam]));
            if a != b {
                let only_a: Vec<&String> = a.iter().filter(|x| !b.contains(x)).collect();
                let only_b: Vec<&String> = b.iter().filter(|x| !a.contains(x)).collect();
                failures.push(format!(
                    "step {:?}, {fam}:\n  only ours: {only_a:#?}\n  only reference: {only_b:#?}\n  ours: {a:#?}\n  reference: {b:#?}",
                    os.label
                ));
            }
        }
    }
    // the case exercised what it should
    assert!(o.steps[0].outcome.is_ok() && r.steps[0].outcome.is_ok(), "{:?} / {:?}", o.steps[0].outcome, r.steps[0].outcome);
    let dn = dnat_chain_name("pm-diff", "ctr-diff");
    assert!(lines(&r.steps[0].snapshot["nat4"]).iter().any(|l| l.contains(&dn)), "reference made no {dn}");
    assert!(lines(&r.steps[0].snapshot["nat6"]).iter().any(|l| l.contains(&dn)), "reference made no IPv6 {dn}");
    assert!(failures.is_empty(), "ours and the reference differ:\n\n{}", failures.join("\n\n"));
}

/// Mappings made by the reference are removed by our DEL (with and without prevResult), and ours by
/// the reference's DEL.
#[test]
fn interop_with_reference_portmap() {
    let pm = Pm::v4("iptables", "iop", "10.40.12.0/24");
    require_plugins(Path::new(REFERENCE_PLUGIN_DIR), &["bridge", "host-local", "portmap"]);
    let reference = pm.lab.sb.runtime(REFERENCE_PLUGIN_DIR); // same result cache as ours
    let l = pm.list("1.0.0");
    let (c0, c1, c2) = (pm.lab.container(), pm.lab.container(), pm.lab.container());
    let (t0, t1, t2) = (
        tcp_listen(c0.path(), sa("0.0.0.0", 80)),
        tcp_listen(c1.path(), sa("0.0.0.0", 80)),
        tcp_listen(c2.path(), sa("0.0.0.0", 80)),
    );
    let ext = pm.ext.path();

    // reference ADD, our DEL
    let rc0 = pm.rc("ctr-iop0", &c0, json!([pmap(8080, 80, "tcp", ""), pmap(5353, 53, "udp", "")]));
    let ip0 = result_ip(&reference.add_list(&l, &rc0).unwrap(), false);
    pm.assert_mapped("ctr-iop0");
    reach_tcp(&t0, ext, sa(HOST4, 8080));
    pm.lab.del(&l, &rc0);
    pm.assert_unmapped("ctr-iop0", &ip0);
    no_tcp(&t0, ext, sa(HOST4, 8080));

    // our ADD, reference DEL
    let rc1 = pm.rc("ctr-iop1", &c1, json!([pmap(9090, 80, "tcp", "")]));
    let ip1 = result_ip(&pm.lab.add(&l, &rc1), false);
    reach_tcp(&t1, ext, sa(HOST4, 9090));
    reference.del_list(&l, &rc1).unwrap();
    pm.assert_unmapped("ctr-iop1", &ip1);
    no_tcp(&t1, ext, sa(HOST4, 9090));

    // reference ADD, our portmap DEL without prevResult
    let rc2 = pm.rc("ctr-iop2", &c2, json!([pmap(7070, 80, "tcp", "")]));
    let ip2 = result_ip(&reference.add_list(&l, &rc2).unwrap(), false);
    reach_tcp(&t2, ext, sa(HOST4, 7070));
    let cfg = l.plugin_config(1, Some(&rc2), None, &[]).unwrap();
    let env = env_of(&rc2);
    expect_ok(&pm.lab.raw("portmap", "DEL", &cfg, &refs(&env)), "our portmap DEL of a reference mapping without prevResult");
    pm.assert_unmapped("ctr-iop2", &ip2);
    no_tcp(&t2, ext, sa(HOST4, 7070));
    pm.lab.del(&l, &rc2);
}
