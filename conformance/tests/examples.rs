//! Every conflist under `examples/` runs end to end with our plugins, the way its runtime runs it.
//!
//! Each example is loaded by the runner from its file (`NetworkConfigList::from_file`) and rewritten
//! only where a test must: host-local's `dataDir` goes to the sandbox's private directory. Bridge names,
//! subnets and everything else stay as the user would install them: each sandbox has its own host
//! namespace, so the tests run in parallel. The runtime's habits are reproduced where they matter
//! (containerd's extra `cni-loopback` network and parallel setup, the `CNI_ARGS` each runtime sends,
//! nerdctl's DEL before ADD, CRI-O's GC, podman's static IPs), then ADD / CHECK / DEL, and the
//! connectivity the README promises for the example is checked: containers of one network ping each
//! other, a published port answers from an outside namespace through the host address, masquerade
//! (or, for the kubelet example, its absence), isolation between the Docker-like networks and
//! `icc: false` inside one. Every test ends by checking that DEL left nothing behind.
//!
//! The tests need root and fail (never skip) without it or without the plugin binaries.

mod common;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use common::lab::Lab;
use common::net::*;
use conformance::runner::{Attachment, NetworkConfigList, RuntimeConf};
use conformance::sandbox::NamedNetns;
use conformance::ContainerNs;
use serde_json::{json, Map, Value};
use sha2::{Digest, Sha256};

/// Every example file, relative to `examples/`, with the cniVersion the runner must select.
const EXAMPLES: &[(&str, &str)] = &[
    ("containerd/10-containerd-net.conflist", "1.1.0"),
    ("cri-o/11-crio-bridge.conflist", "1.1.0"),
    ("nerdctl/nerdctl-bridge.conflist", "1.1.0"),
    ("kubelet-podcidr/10-k8s-pods.conflist", "1.1.0"),
    ("podman4/webnet.conflist", "1.0.0"),
    ("dual-stack/20-dualstack.conflist", "1.1.0"),
    ("docker-like/30-docker-default.conflist", "1.1.0"),
    ("docker-like/31-appnet.conflist", "1.1.0"),
];

const PLUGINS: &[&str] = &["loopback", "bridge", "host-local", "portmap", "isolation"];

fn examples_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join("examples")
}

/// A 64-hex container id, as containerd, CRI-O and podman make them.
fn container_id(seed: &str) -> String {
    Sha256::digest(seed.as_bytes()).iter().map(|b| format!("{b:02x}")).collect()
}

/// One attached container.
struct Ctr {
    ns: ContainerNs,
    rc: RuntimeConf,
    result: Value,
}

impl Ctr {
    fn ip4(&self) -> String {
        result_ip(&self.result, false)
    }

    fn ip6(&self) -> String {
        result_ip(&self.result, true)
    }
}

/// A sandbox host running our plugins, with an "outside" namespace wired to it (both families:
/// host [`HOST4`] / [`HOST6`], outside [`EXT4`] / [`EXT6`]).
struct Site {
    lab: Lab,
    outside: ContainerNs,
}

impl Site {
    fn new() -> Site {
        let lab = Lab::with_plugins(PLUGINS);
        let outside = lab.container();
        let (host, ext) = ([format!("{HOST4}/24"), format!("{HOST6}/64")], [format!("{EXT4}/24"), format!("{EXT6}/64")]);
        wire_external_addrs(lab.host(), &outside, "uplink0", &[&host[0], &host[1]], &[&ext[0], &ext[1]]);
        Site { lab, outside }
    }

    fn host(&self) -> &NamedNetns {
        self.lab.host()
    }

    /// Load `examples/<rel>` as the runtime would, check (like libcni's `ValidateNetworkList`, which
    /// CRI-O runs on every file) that each plugin supports the selected version, and point
    /// host-local's `dataDir` into the sandbox.
    fn example(&self, rel: &str) -> NetworkConfigList {
        let path = examples_dir().join(rel);
        let mut list = NetworkConfigList::from_file(&path).unwrap_or_else(|e| panic!("{rel}: {e}"));
        let want = EXAMPLES.iter().find(|(r, _)| *r == rel).map(|(_, v)| *v).expect("example listed in EXAMPLES");
        assert_eq!(list.cni_version, want, "{rel}: selected cniVersion");
        for t in list.plugin_types() {
            let info = self.lab.rt.version(t).unwrap_or_else(|e| panic!("{rel}: VERSION of {t}: {e}"));
            assert!(info.supported_versions.contains(&list.cni_version), "{rel}: {t} lacks {}", list.cni_version);
        }
        let data_dir = Value::String(self.lab.data_dir().to_string_lossy().into_owned());
        let rewrite = |plugin: &mut Map<String, Value>| {
            if let Some(Value::Object(ipam)) = plugin.get_mut("ipam") {
                if ipam.get("type").and_then(Value::as_str) == Some("host-local") {
                    ipam.insert("dataDir".into(), data_dir.clone());
                }
            }
        };
        list.plugins.iter_mut().for_each(rewrite);
        // The bytes are what the result cache stores: rewrite them the same way.
        let mut raw: Value = serde_json::from_slice(&list.bytes).unwrap();
        for p in raw["plugins"].as_array_mut().unwrap() {
            rewrite(p.as_object_mut().unwrap());
        }
        list.bytes = serde_json::to_vec_pretty(&raw).unwrap();
        list
    }

    fn container(&self) -> ContainerNs {
        self.lab.container()
    }

    /// The source address the outside namespace sees for a TCP connection from `c` to its address
    /// `outside` ([`EXT4`] or [`EXT6`]).
    #[track_caller]
    fn source_seen_outside(&self, c: &Ctr, outside: &str) -> String {
        let seen = tcp_source_seen(self.outside.path(), ip_addr(outside), c.ns.path());
        seen.unwrap_or_else(|e| panic!("{} -> outside {outside}: {e}", c.rc.container_id)).ip().to_string()
    }

    #[track_caller]
    fn add(&self, list: &NetworkConfigList, rc: RuntimeConf, ns: ContainerNs) -> Ctr {
        let result = self.lab.add(list, &rc);
        Ctr { ns, rc, result }
    }

    /// Nothing of the networks is left: no veth but the uplink, no lease, no NAT rule (iptables or
    /// nftables) naming an address starting with one of `prefixes`, no firewall state naming
    /// one of `bridges` (isolation removes it with the bridge's last container), and no element in
    /// our masquerade and port mapping tables.
    #[track_caller]
    fn assert_clean(&self, networks: &[&str], prefixes: &[&str], bridges: &[&str]) {
        let veths: Vec<String> = self.lab.host_veths().into_iter().filter(|v| v != "uplink0").collect();
        assert!(veths.is_empty(), "veths left in the host: {veths:?}");
        for net in networks {
            let leases = self.lab.leases(net);
            assert!(leases.is_empty(), "leases of {net} left: {leases:?}");
        }
        for word in prefixes.iter().chain(bridges) {
            let left = firewall_lines_mentioning(self.host(), word);
            assert!(left.is_empty(), "firewall state naming {word} left: {left:#?}");
        }
        let left = nft_attachment_leftovers(self.host());
        assert!(left.is_empty(), "nftables attachment state left: {left:#?}");
    }
}

/// `{"portMappings": [{hostPort, containerPort: 80, protocol: tcp}]}`.
fn publish(host_port: u16) -> Map<String, Value> {
    let mut caps = Map::new();
    caps.insert("portMappings".into(), json!([{"hostPort": host_port, "containerPort": 80, "protocol": "tcp"}]));
    caps
}

fn args(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
}

/// The `CNI_ARGS` a CRI runtime (containerd, CRI-O, the kubelet's) sends for pod `name` of
/// `namespace` whose sandbox container is `id`.
fn k8s_args(namespace: &str, name: &str, id: &str) -> Vec<(String, String)> {
    args(&[
        ("IgnoreUnknown", "1"),
        ("K8S_POD_NAMESPACE", namespace),
        ("K8S_POD_NAME", name),
        ("K8S_POD_INFRA_CONTAINER_ID", id),
        ("K8S_POD_UID", &container_id(name)[..32]),
    ])
}

/// The interface of the result named `ifname` in a sandbox, and the addresses pointing at it (what
/// containerd's go-cni requires of `eth0`, or the sandbox setup fails).
#[track_caller]
fn sandbox_iface_addrs(result: &Value, ifname: &str) -> Vec<String> {
    let ifaces = result["interfaces"].as_array().unwrap_or_else(|| panic!("no interfaces in {result}"));
    let idx = ifaces
        .iter()
        .position(|i| i["name"] == ifname && i["sandbox"].as_str().is_some_and(|s| !s.is_empty()))
        .unwrap_or_else(|| panic!("no sandbox interface {ifname} in {result}"));
    result["ips"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|ip| ip["interface"].as_u64() == Some(idx as u64))
        .filter_map(|ip| ip["address"].as_str().map(String::from))
        .collect()
}

// ---------------------------------------------------------------------------------------------
// the examples directory itself
// ---------------------------------------------------------------------------------------------

/// Every `*.conflist` under examples/ is one of [`EXAMPLES`] (so each has a test below), parses
/// with the runner, and is named in examples/README.md.
#[test]
fn every_example_is_listed_parsed_and_documented() {
    let mut found = BTreeSet::new();
    for dir in std::fs::read_dir(examples_dir()).unwrap().flatten() {
        if !dir.path().is_dir() {
            continue;
        }
        for f in std::fs::read_dir(dir.path()).unwrap().flatten() {
            let p = f.path();
            if p.extension().is_some_and(|e| e == "conflist" || e == "conf" || e == "json") {
                found.insert(p.strip_prefix(examples_dir()).unwrap().to_string_lossy().into_owned());
            }
        }
    }
    let listed: BTreeSet<String> = EXAMPLES.iter().map(|(r, _)| r.to_string()).collect();
    assert_eq!(found, listed, "examples on disk vs. examples with a test");

    let readme = std::fs::read_to_string(examples_dir().join("README.md")).unwrap();
    let mut names = BTreeSet::new();
    for (rel, version) in EXAMPLES {
        let list = NetworkConfigList::from_file(examples_dir().join(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"));
        assert_eq!(list.cni_version, *version, "{rel}");
        let file = rel.rsplit('/').next().unwrap();
        assert!(readme.contains(file), "examples/README.md does not mention {file}");
        for t in list.plugin_types() {
            assert!(PLUGINS.contains(&t), "{rel}: plugin {t} is not one of ours");
        }
        names.insert(list.name.clone());
    }
    assert_eq!(names.len(), EXAMPLES.len(), "network names must be unique across the examples");
}

// ---------------------------------------------------------------------------------------------
// containerd (CRI)
// ---------------------------------------------------------------------------------------------

/// containerd's CRI plugin: `cni-loopback` (its built-in 0.3.1 loopback network on `lo`) and the
/// first conflist on `eth0`, set up in parallel (`setup_serially = false`), with the CNI_ARGS and
/// capability args containerd sends.
#[test]
fn containerd_cri_pods_ping_publish_and_masquerade() {
    let site = Site::new();
    let list = site.example("containerd/10-containerd-net.conflist");
    let lo = NetworkConfigList::from_json(&json!({
        "cniVersion": "0.3.1", "name": "cni-loopback", "plugins": [{"type": "loopback"}]
    }))
    .unwrap();

    let mut pods = Vec::new();
    for (i, name) in ["web-0", "web-1"].iter().enumerate() {
        let ns = site.container();
        let id = container_id(&format!("containerd-{name}"));
        let path = ns.path().to_str().unwrap().to_string();
        let k8s = k8s_args("default", name, &id);
        let mut rc = RuntimeConf::new(&id, &path, "eth0");
        rc.args = k8s.clone();
        rc.capability_args = if i == 0 { publish(8080) } else { Map::new() };
        rc.capability_args.insert("io.kubernetes.cri.pod-annotations".into(), json!({"team": "web"}));
        rc.capability_args.insert("cgroupPath".into(), json!(format!("/kubepods/besteffort/pod{name}")));
        let mut lo_rc = RuntimeConf::new(&id, &path, "lo");
        lo_rc.args = k8s;

        let (lo_res, eth_res) = std::thread::scope(|s| {
            let a = s.spawn(|| site.lab.rt.add_list(&lo, &lo_rc));
            let b = s.spawn(|| site.lab.rt.add_list(&list, &rc));
            (a.join().unwrap(), b.join().unwrap())
        });
        lo_res.unwrap_or_else(|e| panic!("ADD cni-loopback for {name}: {e}"));
        let result = eth_res.unwrap_or_else(|e| panic!("ADD {name}: {e}"));
        assert!(ns.link_is_up("lo").unwrap(), "lo must be up in {name}");
        let eth0 = sandbox_iface_addrs(&result, "eth0");
        assert!(eth0.iter().any(|a| a.starts_with("10.88.")), "eth0 of {name} needs an address for go-cni: {result}");
        pods.push((Ctr { ns, rc, result }, lo_rc));
    }
    let (p0, p1) = (&pods[0].0, &pods[1].0);
    assert_eq!(addrs(site.host(), "-4", "cni0"), ["10.88.0.1/16"], "gateway on cni0");

    assert_ping(&p0.ns, &p1.ip4());
    assert_ping(&p1.ns, &p0.ip4());
    assert_ping(&p0.ns, "10.88.0.1");
    // ipMasq: the outside sees the host's address
    assert_eq!(site.source_seen_outside(p1, EXT4), HOST4, "pod traffic must leave masqueraded");
    // hostPort 8080 -> pod 0 port 80, from outside and from the other pod, through the host address
    let l80 = tcp_listen(p0.ns.path(), sa("0.0.0.0", 80));
    reach_tcp(&l80, site.outside.path(), sa(HOST4, 8080));
    reach_tcp(&l80, p1.ns.path(), sa(HOST4, 8080));

    site.lab.rt.status_list(&list).unwrap();
    for (p, _) in &pods {
        site.lab.check(&list, &p.rc);
    }
    for (p, lo_rc) in &pods {
        site.lab.del(&list, &p.rc);
        site.lab.del(&lo, lo_rc);
    }
    no_tcp(&l80, site.outside.path(), sa(HOST4, 8080));
    site.assert_clean(&["containerd-net"], &["10.88."], &[]);
}

// ---------------------------------------------------------------------------------------------
// CRI-O
// ---------------------------------------------------------------------------------------------

/// CRI-O (ocicni): lo is brought up by CRI-O itself, hostPorts by its own hostport manager; the
/// conflist gives pods addresses, routes and masquerade. CRI-O also sends STATUS and GC.
#[test]
fn crio_pods_ping_masquerade_status_and_gc() {
    let site = Site::new();
    let list = site.example("cri-o/11-crio-bridge.conflist");
    let mut pods = Vec::new();
    for name in ["db-0", "db-1"] {
        let ns = site.container();
        ns.run_ok("ip", ["link", "set", "lo", "up"]).unwrap(); // ocicni's bringUpLoopback
        let id = container_id(&format!("crio-{name}"));
        let mut rc = RuntimeConf::new(&id, ns.path().to_str().unwrap(), "eth0");
        rc.args = k8s_args("storage", name, &id);
        pods.push(site.add(&list, rc, ns));
    }
    let (p0, p1) = (&pods[0], &pods[1]);
    assert!(p0.ip4().starts_with("10.85.") && p1.ip4().starts_with("10.85."), "{} {}", p0.result, p1.result);
    assert_ping(&p0.ns, &p1.ip4());
    assert_ping(&p1.ns, &p0.ip4());
    assert_eq!(site.source_seen_outside(p0, EXT4), HOST4);
    site.lab.rt.status_list(&list).unwrap();
    site.lab.check(&list, &p0.rc);
    site.lab.check(&list, &p1.rc);

    // GC with only pod 0 valid: pod 1 is torn down (through its cached result) and its lease freed.
    site.lab.rt.gc_list(&list, &[Attachment::new(&p0.rc.container_id, "eth0")]).unwrap();
    assert_eq!(site.lab.leases("crio"), [p0.ip4()], "only pod 0 keeps its lease");
    assert!(p1.ns.link("eth0").unwrap().is_none(), "GC must remove the stale pod's eth0");
    assert_ping(&p0.ns, "10.85.0.1");
    site.lab.check(&list, &p0.rc);

    site.lab.del(&list, &p0.rc);
    site.lab.del(&list, &p1.rc); // DEL after GC is still fine
    site.assert_clean(&["crio"], &["10.85."], &[]);
}

// ---------------------------------------------------------------------------------------------
// nerdctl
// ---------------------------------------------------------------------------------------------

/// nerdctl's OCI hook: a DEL with an empty netns before every ADD (nerdctl #3355), `CNI_ARGS`
/// `IgnoreUnknown=1;NERDCTL_CNI_DHCP_HOSTNAME=…`, container ids `<namespace>-<id>`, `-p 8080:80`.
#[test]
fn nerdctl_default_network_ping_publish_and_teardown_without_netns() {
    let site = Site::new();
    let list = site.example("nerdctl/nerdctl-bridge.conflist");
    let mut ctrs = Vec::new();
    for (i, host) in ["web", "cache"].iter().enumerate() {
        let ns = site.container();
        let id = format!("default-{}", container_id(&format!("nerdctl-{host}")));
        let a = args(&[("IgnoreUnknown", "1"), ("NERDCTL_CNI_DHCP_HOSTNAME", host)]);
        let mut pre = RuntimeConf::new(&id, "", "eth0");
        pre.args = a.clone();
        site.lab.del(&list, &pre);
        let mut rc = RuntimeConf::new(&id, ns.path().to_str().unwrap(), "eth0");
        rc.args = a;
        if i == 0 {
            rc.capability_args = publish(8080);
        }
        ctrs.push(site.add(&list, rc, ns));
    }
    let (web, cache) = (&ctrs[0], &ctrs[1]);
    assert_eq!(web.result["ips"][0]["gateway"], "10.4.0.1", "{}", web.result);
    assert_ping(&web.ns, &cache.ip4());
    assert_ping(&cache.ns, &web.ip4());
    assert_eq!(site.source_seen_outside(cache, EXT4), HOST4);
    let l80 = tcp_listen(web.ns.path(), sa("0.0.0.0", 80));
    reach_tcp(&l80, site.outside.path(), sa(HOST4, 8080));
    // the container reaches its own published port (hairpinMode + portmap snat)
    reach_tcp(&l80, web.ns.path(), sa(HOST4, 8080));
    site.lab.check(&list, &web.rc);
    site.lab.check(&list, &cache.rc);

    // `nerdctl rm`: the hook's postStop DEL runs after the task's netns is gone (the listener,
    // a socket of that netns, would keep it alive).
    drop(l80);
    let Ctr { ns: web_ns, rc: web_rc, .. } = ctrs.remove(0);
    let before: Vec<String> = site.lab.host_veths();
    drop(web_ns);
    let mut gone = web_rc;
    gone.netns = String::new();
    site.lab.del(&list, &gone);
    // The kernel destroys a deleted namespace's devices in its own time (the netns cleanup work,
    // tens of milliseconds here), and web's host veth with them: wait for that, as `nerdctl rm`
    // of the next container would come later. Until then the bridge still has a port, so a DEL
    // of the last container now would rightly keep the bridge's isolation rules.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while site.lab.host_veths().len() >= before.len() && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    assert_eq!(site.lab.host_veths().len(), before.len() - 1, "web's host veth outlived its namespace: {:?}", site.lab.host_veths());
    let cache = ctrs.remove(0);
    site.lab.del(&list, &cache.rc);
    site.assert_clean(&["bridge"], &["10.4.0."], &["nerdctl0"]);
}

// ---------------------------------------------------------------------------------------------
// kubelet node with a podCIDR
// ---------------------------------------------------------------------------------------------

/// A node whose podCIDR is 10.244.1.0/24, pods routed (not masqueraded) to the rest of the
/// cluster: another node (the outside namespace, with a route to this node's podCIDR) sees pod
/// addresses; the node itself reaches its pods (kubelet probes); hostPort works.
#[test]
fn kubelet_podcidr_routed_pods_probes_and_host_port() {
    let site = Site::new();
    let list = site.example("kubelet-podcidr/10-k8s-pods.conflist");
    site.outside.run_ok("ip", ["route", "add", "10.244.1.0/24", "via", HOST4]).unwrap();
    let mut pods = Vec::new();
    for (i, name) in ["api-0", "api-1"].iter().enumerate() {
        let ns = site.container();
        let id = container_id(&format!("k8s-{name}"));
        let mut rc = RuntimeConf::new(&id, ns.path().to_str().unwrap(), "eth0");
        rc.args = k8s_args("prod", name, &id);
        if i == 0 {
            rc.capability_args = publish(30080);
        }
        pods.push(site.add(&list, rc, ns));
    }
    let (p0, p1) = (&pods[0], &pods[1]);
    for p in &pods {
        assert!(p.ip4().starts_with("10.244.1."), "{}", p.result);
        assert_eq!(p.result["ips"][0]["address"].as_str().unwrap().rsplit('/').next(), Some("24"));
    }
    assert_ping(&p0.ns, &p1.ip4());
    assert_ping(site.host(), &p0.ip4()); // kubelet probes come from the node
    assert_ping(site.host(), &p1.ip4());
    assert_eq!(site.source_seen_outside(p1, EXT4), p1.ip4(), "pod-to-node traffic keeps the pod address (no ipMasq)");
    assert_ping(&site.outside, &p0.ip4()); // another node reaches the pod directly
    reach_tcp(&tcp_listen(p0.ns.path(), sa("0.0.0.0", 80)), site.outside.path(), sa(HOST4, 30080));
    site.lab.check(&list, &p0.rc);
    site.lab.check(&list, &p1.rc);
    for p in &pods {
        site.lab.del(&list, &p.rc);
    }
    site.assert_clean(&["k8s-pod-network"], &["10.244.1."], &[]);
}

// ---------------------------------------------------------------------------------------------
// podman 4, CNI backend
// ---------------------------------------------------------------------------------------------

/// podman 4 (containers/common libnetwork/cni): `CNI_ARGS IgnoreUnknown=1;K8S_POD_NAME=<name>`, one
/// static IP as `IP=`, several through the `ips` capability, `-p 8080:80`.
#[test]
fn podman4_static_ips_ping_publish_isolation_state() {
    let site = Site::new();
    let list = site.example("podman4/webnet.conflist");
    let ns0 = site.container();
    let mut rc0 = RuntimeConf::new(container_id("podman-web"), ns0.path().to_str().unwrap(), "eth0");
    rc0.args = args(&[("IgnoreUnknown", "1"), ("K8S_POD_NAME", "web"), ("IP", "10.89.0.10")]);
    rc0.capability_args = publish(8080);
    let web = site.add(&list, rc0, ns0);
    let ns1 = site.container();
    let mut rc1 = RuntimeConf::new(container_id("podman-worker"), ns1.path().to_str().unwrap(), "eth0");
    rc1.args = args(&[("IgnoreUnknown", "1"), ("K8S_POD_NAME", "worker")]);
    rc1.capability_args.insert("ips".into(), json!(["10.89.0.20"]));
    let worker = site.add(&list, rc1, ns1);
    assert_eq!(web.ip4(), "10.89.0.10", "{}", web.result);
    assert_eq!(worker.ip4(), "10.89.0.20", "{}", worker.result);

    assert_ping(&web.ns, "10.89.0.20");
    assert_ping(&worker.ns, "10.89.0.10");
    assert_eq!(site.source_seen_outside(&worker, EXT4), HOST4);
    reach_tcp(&tcp_listen(web.ns.path(), sa("0.0.0.0", 80)), site.outside.path(), sa(HOST4, 8080));
    site.lab.check(&list, &web.rc);
    site.lab.check(&list, &worker.rc);
    site.lab.del(&list, &web.rc);
    site.lab.del(&list, &worker.rc);
    site.assert_clean(&["webnet"], &["10.89.0."], &["cni-podman1"]);
}

// ---------------------------------------------------------------------------------------------
// dual stack
// ---------------------------------------------------------------------------------------------

#[test]
fn dual_stack_both_families_ping_masquerade_and_publish() {
    let site = Site::new();
    let list = site.example("dual-stack/20-dualstack.conflist");
    let mut ctrs = Vec::new();
    for (i, name) in ["front", "back"].iter().enumerate() {
        let ns = site.container();
        let mut rc = RuntimeConf::new(container_id(&format!("ds-{name}")), ns.path().to_str().unwrap(), "eth0");
        if i == 0 {
            rc.capability_args = publish(8443);
        }
        ctrs.push(site.add(&list, rc, ns));
    }
    let (a, b) = (&ctrs[0], &ctrs[1]);
    for c in &ctrs {
        assert!(c.ip4().starts_with("10.66.0.") && c.ip6().starts_with("fd5a:7c3e:91d2:1::"), "{}", c.result);
        assert_eq!(default_routes(&c.ns, false).len(), 1);
        assert_eq!(default_routes(&c.ns, true).len(), 1);
    }
    assert_ping(&a.ns, &b.ip4());
    assert_ping(&a.ns, &b.ip6());
    assert_ping(&b.ns, &a.ip6());
    for (outside, host) in [(EXT4, HOST4), (EXT6, HOST6)] {
        assert_eq!(site.source_seen_outside(b, outside), host, "masquerade towards {outside}");
    }
    // One dual-stack listener for both families: binding [::]:80 right after a 0.0.0.0:80 listener
    // and its connection were closed failed now and then with EADDRINUSE.
    let web = tcp_listen(a.ns.path(), sa("::", 80));
    reach_tcp(&web, site.outside.path(), sa(HOST4, 8443));
    reach_tcp(&web, site.outside.path(), sa(HOST6, 8443));
    site.lab.check(&list, &a.rc);
    site.lab.check(&list, &b.rc);
    for c in &ctrs {
        site.lab.del(&list, &c.rc);
    }
    site.assert_clean(&["dualstack"], &["10.66.0.", "fd5a:7c3e:91d2:1:"], &[]);
}

// ---------------------------------------------------------------------------------------------
// Docker's default bridge + a user network with icc=false
// ---------------------------------------------------------------------------------------------

#[test]
fn docker_like_networks_are_isolated_and_icc_false_holds() {
    let site = Site::new();
    let default = site.example("docker-like/30-docker-default.conflist");
    let appnet = site.example("docker-like/31-appnet.conflist");
    let attach = |list: &NetworkConfigList, name: &str, port: Option<u16>| {
        let ns = site.container();
        let mut rc = RuntimeConf::new(container_id(&format!("docker-{name}")), ns.path().to_str().unwrap(), "eth0");
        rc.args = args(&[("IgnoreUnknown", "1")]);
        if let Some(p) = port {
            rc.capability_args = publish(p);
        }
        site.add(list, rc, ns)
    };
    let d0 = attach(&default, "d0", Some(8080));
    let d1 = attach(&default, "d1", None);
    let a0 = attach(&appnet, "a0", Some(8081));
    let a1 = attach(&appnet, "a1", None);
    for (c, prefix) in [(&d0, "172.17."), (&d1, "172.17."), (&a0, "172.18."), (&a1, "172.18.")] {
        assert!(c.ip4().starts_with(prefix), "{}", c.result);
    }

    // default bridge: icc on
    assert_ping(&d0.ns, &d1.ip4());
    assert_ping(&d1.ns, &d0.ip4());
    // appnet: icc=false, yet the gateway and the outside are reachable
    assert_ping(&a0.ns, "172.18.0.1");
    assert_ping(&a1.ns, "172.18.0.1");
    // blocked: within appnet, and across the two networks both ways
    assert_blocked(&[
        Blocked::Ping(&a0.ns, &a1.ip4()),
        Blocked::Ping(&a1.ns, &a0.ip4()),
        Blocked::Ping(&d0.ns, &a0.ip4()),
        Blocked::Ping(&d1.ns, &a1.ip4()),
        Blocked::Ping(&a0.ns, &d0.ip4()),
        Blocked::Ping(&a1.ns, &d1.ip4()),
        Blocked::Tcp(&a0.ns, &a1.ip4(), &a1.ns),
        Blocked::Tcp(&a0.ns, &d0.ip4(), &d0.ns),
    ]);
    // both networks masquerade to the outside
    for c in [&d1, &a1] {
        assert_eq!(site.source_seen_outside(c, EXT4), HOST4);
    }
    // published ports: from outside, and (as with Docker) from the other network through the host address
    let (d0_80, a0_80) = (tcp_listen(d0.ns.path(), sa("0.0.0.0", 80)), tcp_listen(a0.ns.path(), sa("0.0.0.0", 80)));
    reach_tcp(&d0_80, site.outside.path(), sa(HOST4, 8080));
    reach_tcp(&a0_80, site.outside.path(), sa(HOST4, 8081));
    reach_tcp(&d0_80, a1.ns.path(), sa(HOST4, 8080));
    reach_tcp(&a0_80, d1.ns.path(), sa(HOST4, 8081));

    for (l, c) in [(&default, &d0), (&default, &d1), (&appnet, &a0), (&appnet, &a1)] {
        site.lab.check(l, &c.rc);
    }
    for (l, c) in [(&default, &d0), (&default, &d1), (&appnet, &a0), (&appnet, &a1)] {
        site.lab.del(l, &c.rc);
    }
    site.assert_clean(&["docker-default", "appnet"], &["172.17.", "172.18."], &["cni-docker0", "br-appnet"]);
}
