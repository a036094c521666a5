//! The chain bridge (ipMasq, nftables) + portmap (nftables) + isolation (nftables) with no `nft`
//! binary: the nftables backend talks to nf_tables over netlink and spawns no firewall tool.
//!
//! Plugins run with `PATH` set (through the runner's `exec_plugin` environment) to a directory
//! holding every tool of the system directories except `nft`, and, since the firewall layer also
//! looks in the usual system directories, from a thread whose private mount namespace has a
//! tripwire bind-mounted over `nft` and every iptables binary: a script that records its call and
//! fails. Every ADD, CHECK, DEL, GC and STATUS must succeed and the tripwire must never fire (no
//! firewall process at all: the only process a plugin spawns is the IPAM delegate), while the
//! traffic shows the rules work: ping across the bridge and to the outside (masqueraded), a
//! published port reached from an external namespace, networks isolated from each other.
//!
//! The test thread itself keeps the real tools, to look at the result with `nft`.
//! Requires root and the built plugins.

mod common;

use std::net::{IpAddr, SocketAddr};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use common::lab::*;
use common::net::*;
use conformance::runner::{Attachment, NetworkConfigList, RuntimeConf};
use conformance::{ContainerNs, PluginOutput};
use nix::mount::{mount, MsFlags};
use nix::sched::{unshare, CloneFlags};
use serde_json::{json, Value};

const HOST4: &str = "198.51.100.1";
const EXT4: &str = "198.51.100.2";

/// Where the firewall layer looks for tools after `PATH`.
const SYSTEM_DIRS: &[&str] = &["/usr/local/sbin", "/usr/local/bin", "/usr/sbin", "/usr/bin", "/sbin", "/bin"];

/// Firewall tools that must never run.
const FIREWALL_TOOLS: &[&str] = &[
    "nft",
    "iptables",
    "ip6tables",
    "iptables-restore",
    "ip6tables-restore",
    "iptables-save",
    "ip6tables-save",
    "iptables-nft",
    "iptables-legacy",
    "xtables-nft-multi",
    "xtables-legacy-multi",
];

/// A host without `nft`, as far as plugins can tell.
struct NoNft {
    /// `PATH` for the plugins: links to every system tool but `nft`.
    path: PathBuf,
    tripwire: PathBuf,
    log: PathBuf,
}

impl NoNft {
    fn new(tmp: &Path) -> NoNft {
        let path = tmp.join("path-without-nft");
        std::fs::create_dir_all(&path).unwrap();
        for dir in SYSTEM_DIRS {
            let Ok(entries) = std::fs::read_dir(dir) else { continue };
            for e in entries.flatten() {
                let name = e.file_name();
                let link = path.join(&name);
                if name != "nft" && !link.exists() {
                    let _ = std::os::unix::fs::symlink(e.path(), link);
                }
            }
        }
        assert!(!path.join("nft").exists());
        let log = tmp.join("tripwire.log");
        let tripwire = tmp.join("tripwire");
        std::fs::write(&tripwire, format!("#!/bin/sh\necho \"$0 $*\" >> {}\necho 'firewall tool called' >&2\nexit 127\n", log.display())).unwrap();
        std::fs::set_permissions(&tripwire, std::fs::Permissions::from_mode(0o755)).unwrap();
        NoNft { path, tripwire, log }
    }

    /// The binaries (symlinks resolved) the tripwire replaces.
    fn targets() -> Vec<PathBuf> {
        let mut v: Vec<PathBuf> = SYSTEM_DIRS
            .iter()
            .flat_map(|d| FIREWALL_TOOLS.iter().map(move |t| Path::new(d).join(t)))
            .filter_map(|p| std::fs::canonicalize(p).ok())
            .collect();
        v.sort();
        v.dedup();
        v
    }

    /// Run `f` in a thread of its own whose mount namespace has the tripwire over every firewall
    /// binary (the mounts are private to that thread: the machine's binaries are untouched).
    fn run<T: Send>(&self, f: impl FnOnce() -> T + Send) -> T {
        std::thread::scope(|s| {
            s.spawn(|| {
                unshare(CloneFlags::CLONE_NEWNS).expect("unshare(CLONE_NEWNS)");
                mount(None::<&str>, "/", None::<&str>, MsFlags::MS_REC | MsFlags::MS_PRIVATE, None::<&str>).expect("make / private");
                let targets = NoNft::targets();
                assert!(targets.iter().any(|t| t.ends_with("nft")), "no nft binary to hide: {targets:?}");
                for t in &targets {
                    mount(Some(&self.tripwire), t, None::<&str>, MsFlags::MS_BIND, None::<&str>)
                        .unwrap_or_else(|e| panic!("bind the tripwire over {}: {e}", t.display()));
                }
                f()
            })
            .join()
            .unwrap_or_else(|e| std::panic::resume_unwind(e))
        })
    }

    /// Calls the tripwire recorded.
    fn tripped(&self) -> Vec<String> {
        std::fs::read_to_string(&self.log).unwrap_or_default().lines().map(String::from).collect()
    }
}

/// A conflist run like a runtime would, with an extra `PATH` for the plugins.
struct Chain<'a> {
    lab: &'a Lab,
    list: NetworkConfigList,
    path: String,
}

impl Chain<'_> {
    #[track_caller]
    fn invoke(&self, idx: usize, command: &str, rc: Option<&RuntimeConf>, cfg: &[u8]) -> PluginOutput {
        let mut env = rc.cloned().unwrap_or_default().env();
        env.push(("PATH", self.path.clone()));
        let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let plugin = self.list.plugin_type(idx);
        let out = self.lab.rt.exec_plugin(plugin, command, cfg, &env).unwrap();
        assert!(out.success(), "{command} {plugin} failed: {} {}", out.stdout_str(), out.stderr_str());
        out
    }

    #[track_caller]
    fn add(&self, rc: &RuntimeConf) -> Value {
        let mut prev: Option<Value> = None;
        for idx in 0..self.list.plugins.len() {
            let cfg = self.list.plugin_config(idx, Some(rc), prev.as_ref(), &[]).unwrap();
            let out = self.invoke(idx, "ADD", Some(rc), &cfg);
            prev = Some(out.json().unwrap_or_else(|| panic!("ADD result of {} is not JSON", self.list.plugin_type(idx))));
        }
        prev.unwrap()
    }

    #[track_caller]
    fn check(&self, rc: &RuntimeConf, result: &Value) {
        for idx in 0..self.list.plugins.len() {
            let cfg = self.list.plugin_config(idx, Some(rc), Some(result), &[]).unwrap();
            self.invoke(idx, "CHECK", Some(rc), &cfg);
        }
    }

    #[track_caller]
    fn del(&self, rc: &RuntimeConf, result: Option<&Value>) {
        for idx in (0..self.list.plugins.len()).rev() {
            let cfg = self.list.plugin_config(idx, Some(rc), result, &[]).unwrap();
            self.invoke(idx, "DEL", Some(rc), &cfg);
        }
    }

    #[track_caller]
    fn gc(&self, valid: &[Attachment]) {
        let v = serde_json::to_value(valid).unwrap();
        let extra = [("cni.dev/valid-attachments", v.clone()), ("cni.dev/attachments", v)];
        for idx in 0..self.list.plugins.len() {
            let cfg = self.list.plugin_config(idx, None, None, &extra).unwrap();
            self.invoke(idx, "GC", None, &cfg);
        }
    }

    #[track_caller]
    fn status(&self) {
        for idx in 0..self.list.plugins.len() {
            let cfg = self.list.plugin_config(idx, None, None, &[]).unwrap();
            self.invoke(idx, "STATUS", None, &cfg);
        }
    }
}

/// One attached container.
struct Ctr {
    ns: ContainerNs,
    rc: RuntimeConf,
    result: Value,
    ip: String,
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

/// bridge (ipMasq) + portmap + isolation; `backend` on each (`None`: the automatic choice).
fn list(lab: &Lab, name: &str, bridge: &str, subnet: &str, backend: Option<&str>) -> NetworkConfigList {
    let mut br = json!({"bridge": bridge, "isDefaultGateway": true, "ipMasq": true, "ipam": lab.ipam4(subnet)});
    let mut pm = json!({"type": "portmap", "capabilities": {"portMappings": true}});
    let mut iso = json!({"type": "isolation"});
    if let Some(b) = backend {
        br["ipMasqBackend"] = json!(b);
        pm["backend"] = json!(b);
        iso["backend"] = json!(b);
    }
    lab.chain("1.1.0", name, br, &[pm, iso])
}

fn attach(lab: &Lab, chain: &Chain, nonft: &NoNft, cid: &str, ports: Option<Value>) -> Ctr {
    let ns = lab.container();
    let mut rc = lab.rc(cid, &ns);
    if let Some(p) = ports {
        rc.capability_args.insert("portMappings".into(), p);
    }
    let result = nonft.run(|| chain.add(&rc));
    let ip = result_ip(&result, false);
    Ctr { ns, rc, result, ip }
}

/// Every `(from, to)` pair blocked: no ping answer, no TCP connection (probes run at once).
#[track_caller]
fn assert_blocked(pairs: &[(&Ctr, &Ctr)]) {
    let errors: Vec<String> = std::thread::scope(|s| {
        let mut probes = Vec::new();
        for (from, to) in pairs {
            probes.push(s.spawn(move || ping_within(&from.ns, &to.ip, BLOCKED_TIMEOUT).is_ok().then(|| format!("ping {} -> {}", from.ip, to.ip))));
            probes.push(s.spawn(move || {
                tcp_source_seen_within(to.ns.path(), ip(&to.ip), from.ns.path(), BLOCKED_TIMEOUT)
                    .ok()
                    .map(|_| format!("tcp {} -> {}", from.ip, to.ip))
            }));
        }
        probes.into_iter().filter_map(|p| p.join().unwrap()).collect()
    });
    assert!(errors.is_empty(), "traffic that must be blocked got through: {errors:?}");
}

/// The tables of the layout without a chain per attachment (and none of the earlier layout's).
const OUR_TABLES: [&str; 3] = ["table inet cnirs_hostport2", "table inet cnirs_isolation", "table inet cnirs_masquerade2"];

fn our_tables(lab: &Lab) -> Vec<String> {
    let mut t: Vec<String> = nft_tables(lab.host()).into_iter().filter(|t| t.contains("cnirs_")).collect();
    t.sort();
    t
}

#[test]
fn chain_works_without_nft() {
    let lab = Lab::with_plugins(&["bridge", "host-local", "portmap", "isolation"]);
    let nonft = NoNft::new(lab.sb.tempdir());
    // the harness itself: nft is gone for the plugins' thread, whatever the path
    nonft.run(|| {
        // ETXTBSY: another test thread may fork (to spawn) while the tripwire file was open for
        // writing; its child holds that descriptor until it execs. Retry as a runtime does.
        let mut tries = 0;
        let out = loop {
            match std::process::Command::new("/usr/sbin/nft").arg("list").arg("tables").output() {
                Err(e) if e.raw_os_error() == Some(libc::ETXTBSY) && tries < 100 => {
                    tries += 1;
                    std::thread::sleep(std::time::Duration::from_millis(10));
                }
                other => break other.expect("run /usr/sbin/nft (the tripwire)"),
            }
        };
        assert!(!out.status.success(), "the tripwire must fail: {out:?}");
    });
    assert_eq!(nonft.tripped().len(), 1, "the tripwire works");
    std::fs::remove_file(&nonft.log).unwrap();

    let ext = lab.container();
    wire_external(lab.host(), &ext, "ext0", &format!("{HOST4}/24"), &format!("{EXT4}/24"));
    let path = nonft.path.display().to_string();
    let a = Chain { lab: &lab, list: list(&lab, "nat-a", "br-nata", "10.60.1.0/24", Some("nftables")), path: path.clone() };
    // (network b a /16: the masquerade table gets an exemption set and rule per prefix length)
    let b = Chain { lab: &lab, list: list(&lab, "nat-b", "br-natb", "10.62.0.0/16", Some("nftables")), path };

    let a1 = attach(&lab, &a, &nonft, "ctr-a1", Some(json!([{"hostPort": 8080, "containerPort": 80, "protocol": "tcp"}])));
    let a2 = attach(&lab, &a, &nonft, "ctr-a2", None);
    let b1 = attach(&lab, &b, &nonft, "ctr-b1", None);
    assert_eq!(our_tables(&lab), OUR_TABLES);
    // what netlink wrote reads back, through `nft`, as the layout: elements with their owners
    let own = |net: &str, c: &Ctr| owner_marks(net, &c.rc.container_id, "eth0");
    assert_masq_layout(
        lab.host(),
        &masq_sets_with(&[
            (
                "masq4",
                vec![
                    format!("{} : {}", a1.ip, own("nat-a", &a1)),
                    format!("{} : {}", a2.ip, own("nat-a", &a2)),
                    format!("{} : {}", b1.ip, own("nat-b", &b1)),
                ],
            ),
            ("exempt4_24", vec![format!("{} . 10.60.1.0", a1.ip), format!("{} . 10.60.1.0", a2.ip)]),
            ("exempt4_16", vec![format!("{} . 10.62.0.0", b1.ip)]),
        ]),
    );
    assert_hostport_layout(
        lab.host(),
        &hostport_sets_with(&[
            ("dnat4", vec![format!("tcp . 8080 : {} . 80", a1.ip)]),
            ("owner4", vec![format!("{} : {}", a1.ip, own("nat-a", &a1))]),
            ("hairpin4_24", vec![format!("{} . 10.60.1.0", a1.ip)]),
            ("hairpin4_32", vec![format!("{} . 127.0.0.1", a1.ip)]),
        ]),
    );

    // across the bridge, to the gateway, to the outside (masqueraded: the outside has no route back)
    assert_ping(&a1.ns, &a2.ip);
    assert_ping(&a1.ns, "10.60.1.1");
    assert_ping(&a2.ns, EXT4);
    let seen = tcp_source_seen(ext.path(), ip(EXT4), a2.ns.path()).unwrap();
    assert_eq!(seen.ip().to_string(), HOST4, "masqueraded to the host address");
    // the published port from the external namespace
    let l80 = tcp_listen(a1.ns.path(), SocketAddr::new(ip("0.0.0.0"), 80));
    let seen = tcp_connect_seen(&l80, ext.path(), SocketAddr::new(ip(HOST4), 8080), REACH_TIMEOUT).unwrap();
    assert_eq!(seen.ip().to_string(), EXT4);
    // isolation between the two networks
    assert_blocked(&[(&a1, &b1), (&b1, &a1), (&a2, &b1)]);

    nonft.run(|| {
        a.check(&a1.rc, &a1.result);
        a.check(&a2.rc, &a2.result);
        b.check(&b1.rc, &b1.result);
        a.status();
        b.status();
    });

    // DEL of the publishing container: its mapping goes, the rest stays
    nonft.run(|| a.del(&a1.rc, Some(&a1.result)));
    assert!(tcp_connect_seen(&l80, ext.path(), SocketAddr::new(ip(HOST4), 8080), BLOCKED_TIMEOUT).is_err());
    assert!(firewall_lines_mentioning(lab.host(), "ctr-a1").is_empty(), "{:?}", firewall_lines_mentioning(lab.host(), "ctr-a1"));
    // (the sets of the lengths used, and their rules, stay)
    let hairpin_sets = hostport_sets_with(&[("hairpin4_24", vec![]), ("hairpin4_32", vec![])]);
    assert_hostport_layout(lab.host(), &hairpin_sets);
    assert_masq_layout(
        lab.host(),
        &masq_sets_with(&[
            ("masq4", vec![format!("{} : {}", a2.ip, own("nat-a", &a2)), format!("{} : {}", b1.ip, own("nat-b", &b1))]),
            ("exempt4_24", vec![format!("{} . 10.60.1.0", a2.ip)]),
            ("exempt4_16", vec![format!("{} . 10.62.0.0", b1.ip)]),
        ]),
    );
    assert_ping(&a2.ns, EXT4);
    assert_blocked(&[(&a2, &b1)]);
    // GC keeps the valid, DEL without prevResult cleans by key
    nonft.run(|| {
        a.gc(&[Attachment::new("ctr-a2", "eth0")]);
        a.check(&a2.rc, &a2.result);
        b.del(&b1.rc, None);
        a.del(&a2.rc, Some(&a2.result));
        a.gc(&[]);
        b.gc(&[]);
    });
    for cid in ["ctr-a1", "ctr-a2", "ctr-b1"] {
        assert!(firewall_lines_mentioning(lab.host(), cid).is_empty(), "{cid}: {:?}", firewall_lines_mentioning(lab.host(), cid));
    }
    assert!(firewall_lines_mentioning(lab.host(), "br-nat").is_empty(), "{:?}", firewall_lines_mentioning(lab.host(), "br-nat"));
    for c in [&a1, &a2, &b1] {
        assert!(firewall_lines_with_addr(lab.host(), &c.ip).is_empty(), "{:?}", firewall_lines_with_addr(lab.host(), &c.ip));
    }
    assert_masq_layout(lab.host(), &masq_sets_with(&[("exempt4_16", vec![]), ("exempt4_24", vec![])]));
    assert_hostport_layout(lab.host(), &hairpin_sets);
    let left = nft_attachment_leftovers(lab.host());
    assert!(left.is_empty(), "{left:#?}");

    let tripped = nonft.tripped();
    assert!(tripped.is_empty(), "firewall tools were called: {tripped:?}");
}

/// Without a configured backend the automatic choice finds nf_tables over netlink: nftables,
/// not iptables, even with `nft` missing (and the iptables binaries tripwired: choosing them
/// would fail the ADD).
#[test]
fn automatic_choice_without_nft_is_nftables() {
    let lab = Lab::with_plugins(&["bridge", "host-local", "portmap", "isolation"]);
    let nonft = NoNft::new(lab.sb.tempdir());
    let c = Chain { lab: &lab, list: list(&lab, "nat-auto", "br-natauto", "10.61.1.0/24", None), path: nonft.path.display().to_string() };
    let x = attach(&lab, &c, &nonft, "ctr-auto", Some(json!([{"hostPort": 8081, "containerPort": 81, "protocol": "tcp"}])));
    assert_eq!(our_tables(&lab), OUR_TABLES);
    assert!(cni_nat_lines(lab.host(), false).is_empty(), "iptables used: {:?}", cni_nat_lines(lab.host(), false));
    assert_hostport_layout(
        lab.host(),
        &hostport_sets_with(&[
            ("dnat4", vec![format!("tcp . 8081 : {} . 81", x.ip)]),
            ("owner4", vec![format!("{} : {}", x.ip, owner_marks("nat-auto", "ctr-auto", "eth0"))]),
            ("hairpin4_24", vec![format!("{} . 10.61.1.0", x.ip)]),
            ("hairpin4_32", vec![format!("{} . 127.0.0.1", x.ip)]),
        ]),
    );
    assert_ping(&x.ns, "10.61.1.1");
    nonft.run(|| {
        c.check(&x.rc, &x.result);
        c.del(&x.rc, Some(&x.result));
        c.gc(&[]);
    });
    assert!(firewall_lines_mentioning(lab.host(), "ctr-auto").is_empty());
    assert!(firewall_lines_with_addr(lab.host(), &x.ip).is_empty(), "{:?}", firewall_lines_with_addr(lab.host(), &x.ip));
    let left = nft_attachment_leftovers(lab.host());
    assert!(left.is_empty(), "{left:#?}");
    let tripped = nonft.tripped();
    assert!(tripped.is_empty(), "firewall tools were called: {tripped:?}");
}
