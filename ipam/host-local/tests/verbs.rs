//! Every verb through the built binary, in a throwaway data directory.

mod common;

use common::*;
use serde_json::{json, Value};
use std::os::unix::fs::PermissionsExt;

fn v4_conf(sb: &Sandbox, version: &str, subnet: &str) -> Value {
    conf(version, "net1", &sb.data_dir(), json!({"ranges": [[{"subnet": subnet}]]}))
}

fn dual_conf(sb: &Sandbox, version: &str) -> Value {
    conf(
        version,
        "net1",
        &sb.data_dir(),
        json!({"ranges": [[{"subnet": "10.10.0.0/24"}], [{"subnet": "fd10::/64"}]],
               "routes": [{"dst": "0.0.0.0/0"}, {"dst": "::/0", "gw": "fd10::1"}]}),
    )
}

#[test]
fn add_del_check_dual_stack() {
    let sb = Sandbox::new("dual");
    let c = dual_conf(&sb, "1.0.0");
    let r = add(OURS, "c1", &c);
    let v = r.json();
    assert_eq!(r.ips(), ["10.10.0.2/24", "fd10::2/64"]);
    assert_eq!(v["cniVersion"], "1.0.0");
    assert_eq!(v["ips"][0]["gateway"], "10.10.0.1");
    assert_eq!(v["ips"][1]["gateway"], "fd10::1");
    assert!(v["ips"][0].get("interface").is_none() && v.get("interfaces").is_none());
    assert_eq!(v["routes"], json!([{"dst": "0.0.0.0/0"}, {"dst": "::/0", "gw": "fd10::1"}]));
    let dir = sb.net_dir("net1");
    let l = leases(&dir);
    assert_eq!(l["10.10.0.2"], "c1\r\neth0");
    assert_eq!(l["fd10::2"], "c1\r\neth0");
    let snap = snapshot(&dir);
    assert_eq!(snap["10.10.0.2"].mode, 0o600);
    assert_eq!(snap["last_reserved_ip.0"].content, "10.10.0.2");
    assert_eq!(snap["last_reserved_ip.1"].content, "fd10::2");
    assert!(dir.join("lock").is_file());

    // CHECK without and with a matching prevResult.
    check(OURS, "c1", &c).assert_ok();
    let mut with_prev = c.clone();
    with_prev["prevResult"] = v.clone();
    Call::new(OURS, "CHECK", "c1", &with_prev).run().assert_ok();
    // A prevResult with a different address from our range fails.
    let mut bad_prev = with_prev.clone();
    bad_prev["prevResult"]["ips"][0]["address"] = json!("10.10.0.9/24");
    let o = Call::new(OURS, "CHECK", "c1", &bad_prev).run();
    assert_eq!(o.code(), 105, "{}", o.details());
    // A prevResult with the wrong prefix fails.
    let mut bad_prefix = with_prev.clone();
    bad_prefix["prevResult"]["ips"][0]["address"] = json!("10.10.0.2/16");
    assert_eq!(Call::new(OURS, "CHECK", "c1", &bad_prefix).run().code(), 105);
    // CHECK of an attachment that has nothing.
    let o = check(OURS, "nobody", &c);
    assert_eq!(o.code(), 105);
    assert!(o.details().contains("nobody"));

    // Second attachment gets the next addresses; another ifname of c1 is a new attachment.
    assert_eq!(add(OURS, "c2", &c).ips(), ["10.10.0.3/24", "fd10::3/64"]);
    assert_eq!(Call::new(OURS, "ADD", "c1", &c).ifname("eth1").run().ips(), ["10.10.0.4/24", "fd10::4/64"]);

    // DEL releases both families; repeated DEL succeeds; DEL without netns succeeds.
    del(OURS, "c1", &c).assert_ok();
    del(OURS, "c1", &c).assert_ok();
    let o = Call::new(OURS, "DEL", "c2", &c).env("CNI_NETNS", "").run();
    o.assert_ok();
    assert_eq!(o.stdout.trim(), "");
    let l = leases(&dir);
    assert_eq!(l.keys().collect::<Vec<_>>(), ["10.10.0.4", "fd10::4"]);
    assert_eq!(check(OURS, "c1", &c).code(), 105);
    Call::new(OURS, "CHECK", "c1", &c).ifname("eth1").run().assert_ok();
}

#[test]
fn result_shapes_of_old_versions() {
    let sb = Sandbox::new("versions");
    let c = dual_conf(&sb, "0.2.0");
    let v = add(OURS, "c1", &c).assert_ok().json();
    assert_eq!(v["ip4"]["ip"], "10.10.0.2/24");
    assert_eq!(v["ip6"]["ip"], "fd10::2/64");
    assert_eq!(v["ip4"]["routes"], json!([{"dst": "0.0.0.0/0"}]));
    let c = dual_conf(&sb, "0.4.0");
    let v = add(OURS, "c2", &c).assert_ok().json();
    assert_eq!(v["ips"][0]["version"], "4");
    assert_eq!(v["ips"][1]["version"], "6");
    let c = dual_conf(&sb, "1.1.0");
    let v = add(OURS, "c3", &c).assert_ok().json();
    assert_eq!(v["cniVersion"], "1.1.0");
    // 0.2.0 cannot carry two v4 addresses.
    let c2 = conf("0.2.0", "n2", &sb.data_dir(), json!({"ranges": [[{"subnet": "10.1.0.0/24"}], [{"subnet": "10.2.0.0/24"}]]}));
    let o = add(OURS, "c1", &c2);
    assert_eq!(o.code(), 7);
    assert!(o.details().contains("one address per family"));
}

#[test]
fn legacy_top_level_range_and_options() {
    let sb = Sandbox::new("legacy");
    let resolv = sb.root.join("resolv.conf");
    std::fs::write(&resolv, "nameserver 10.0.0.53\nsearch example.com\noptions ndots:2\ndomain ex\n").unwrap();
    let c = conf(
        "1.0.0",
        "net1",
        &sb.data_dir(),
        json!({"subnet": "10.20.0.0/16", "rangeStart": "10.20.5.10", "rangeEnd": "10.20.5.11", "gateway": "10.20.0.254",
               "resolvConf": resolv}),
    );
    let v = add(OURS, "a", &c).assert_ok().json();
    assert_eq!(v["ips"][0]["address"], "10.20.5.10/16");
    assert_eq!(v["ips"][0]["gateway"], "10.20.0.254");
    assert_eq!(v["dns"], json!({"nameservers": ["10.0.0.53"], "domain": "ex", "search": ["example.com"], "options": ["ndots:2"]}));
    assert_eq!(add(OURS, "b", &c).ips(), ["10.20.5.11/16"]);
    let o = add(OURS, "c", &c);
    assert_eq!(o.code(), 102);
    // Missing resolv.conf is an I/O error naming the path.
    let mut c2 = c.clone();
    c2["ipam"]["resolvConf"] = json!("/nonexistent/resolv.conf");
    let o = add(OURS, "d", &c2);
    assert_eq!(o.code(), 5);
    assert!(o.details().contains("/nonexistent/resolv.conf"));
}

#[test]
fn runtime_ip_ranges_are_prepended() {
    let sb = Sandbox::new("iprange");
    let mut c = v4_conf(&sb, "1.0.0", "10.30.0.0/24");
    c["runtimeConfig"] = json!({"ipRanges": [[{"subnet": "10.31.0.0/24"}]]});
    assert_eq!(add(OURS, "a", &c).ips(), ["10.31.0.2/24", "10.30.0.2/24"]);
    assert_eq!(snapshot(&sb.net_dir("net1"))["last_reserved_ip.0"].content, "10.31.0.2");
}

#[test]
fn requested_ips_three_ways() {
    let sb = Sandbox::new("requested");
    let c = dual_conf(&sb, "1.0.0");
    // CNI_ARGS IP=
    let o = Call::new(OURS, "ADD", "a", &c).args("IgnoreUnknown=1;K8S_POD_NAME=x;IP=10.10.0.50").run();
    assert_eq!(o.ips(), ["10.10.0.50/24", "fd10::2/64"]);
    // args.cni.ips
    let mut c2 = c.clone();
    c2["args"] = json!({"cni": {"ips": ["10.10.0.60", "fd10::60/64"]}});
    assert_eq!(add(OURS, "b", &c2).ips(), ["10.10.0.60/24", "fd10::60/64"]);
    // runtimeConfig.ips (capability "ips")
    let mut c3 = c.clone();
    c3["runtimeConfig"] = json!({"ips": ["10.10.0.70/24"]});
    // Round-robin continues after the last reserved address (fd10::60).
    assert_eq!(add(OURS, "c", &c3).ips(), ["10.10.0.70/24", "fd10::61/64"]);
    // Taken: conflict naming the address and holder; nothing of "d" left behind.
    let before = leases(&sb.net_dir("net1"));
    let o = Call::new(OURS, "ADD", "d", &c).args("IP=10.10.0.50").run();
    assert_eq!(o.code(), 103);
    assert!(o.details().contains("10.10.0.50") && o.details().contains('a'), "{}", o.details());
    assert_eq!(leases(&sb.net_dir("net1")), before);
    // The gateway, an address outside every range, garbage.
    let o = Call::new(OURS, "ADD", "d", &c).args("IP=10.10.0.1").run();
    assert_eq!(o.code(), 7);
    assert!(o.details().contains("gateway"));
    let o = Call::new(OURS, "ADD", "d", &c).args("IP=192.168.1.1").run();
    assert_eq!(o.code(), 7);
    assert!(o.details().contains("192.168.1.1"));
    assert_eq!(Call::new(OURS, "ADD", "d", &c).args("IP=notanip").run().code(), 4);
    assert_eq!(leases(&sb.net_dir("net1")), before);
    // args.cni.ips supersedes CNI_ARGS IP (CNI conventions).
    let o = Call::new(OURS, "ADD", "e", &c2).args("IP=10.10.0.99").run();
    assert_eq!(o.code(), 103, "{}", o.stdout); // 10.10.0.60 is b's
}

#[test]
fn duplicate_add_names_the_address_and_changes_nothing() {
    let sb = Sandbox::new("dup");
    let c = dual_conf(&sb, "1.0.0");
    add(OURS, "c1", &c).assert_ok();
    let before = snapshot(&sb.net_dir("net1"));
    let o = add(OURS, "c1", &c);
    assert_eq!(o.code(), 103);
    assert!(o.details().contains("10.10.0.2") && o.details().contains("fd10::2") && o.details().contains("duplicate"), "{}", o.details());
    assert_eq!(snapshot(&sb.net_dir("net1")), before);
}

#[test]
fn exhausted_range_error_and_no_state_change() {
    let sb = Sandbox::new("exhaust");
    // Set 0 has room, set 1 holds one address: the second ADD fails in set 1 after set 0 reserved.
    let c = conf("1.0.0", "net1", &sb.data_dir(), json!({"ranges": [[{"subnet": "10.40.0.0/24"}], [{"subnet": "10.41.0.0/30"}]]}));
    assert_eq!(add(OURS, "a", &c).ips(), ["10.40.0.2/24", "10.41.0.2/30"]);
    let before = snapshot(&sb.net_dir("net1"));
    let o = add(OURS, "b", &c);
    assert_eq!(o.code(), 102, "{}", o.stdout);
    assert!(o.details().contains("range set 1") && o.details().contains("10.41.0.2-10.41.0.2"), "{}", o.details());
    assert_eq!(snapshot(&sb.net_dir("net1")), before, "state changed by a failed ADD");
    // After a DEL there is room again.
    del(OURS, "a", &c).assert_ok();
    assert_eq!(add(OURS, "b", &c).ips(), ["10.40.0.3/24", "10.41.0.2/30"]);
}

#[test]
fn gc_releases_everything_not_valid() {
    let sb = Sandbox::new("gc");
    let c = dual_conf(&sb, "1.1.0");
    for cid in ["keep", "drop1", "drop2"] {
        add(OURS, cid, &c).assert_ok();
    }
    Call::new(OURS, "ADD", "keep", &c).ifname("eth1").run().assert_ok();
    let dir = sb.net_dir("net1");
    // Leases written by someone else: a legacy one of a kept container, one of a gone container,
    // an empty (crashed writer) one.
    write_lease(&dir, "10.10.0.100", "keep");
    write_lease(&dir, "10.10.0.101", "gone\r\neth0");
    write_lease(&dir, "10.10.0.102", "");
    let mut g = c.clone();
    g["cni.dev/valid-attachments"] = json!([{"containerID": "keep", "ifname": "eth0"}, {"containerID": "other", "ifname": "eth0"}]);
    let o = Call::new(OURS, "GC", "", &g).run();
    o.assert_ok();
    assert_eq!(o.stdout.trim(), "");
    let l = leases(&dir);
    let names: Vec<&str> = l.keys().map(String::as_str).collect();
    assert_eq!(names, ["10.10.0.100", "10.10.0.2", "fd10::2"], "{l:?}");
    // The index follows: DEL of a released attachment is a no-op, ADD of it works again.
    del(OURS, "drop1", &c).assert_ok();
    assert_eq!(add(OURS, "drop1", &c).ips().len(), 2);
    check(OURS, "keep", &c).assert_ok();
    // cni.dev/attachments is accepted too; GC without either key is refused.
    let mut g2 = c.clone();
    g2["cni.dev/attachments"] = json!([]);
    Call::new(OURS, "GC", "", &g2).run().assert_ok();
    assert!(leases(&dir).keys().all(|k| k == "10.10.0.100"), "{:?}", leases(&dir));
    assert_eq!(Call::new(OURS, "GC", "", &c).run().code(), 7);
    // GC on a network that never had state succeeds and creates nothing.
    let c3 = conf("1.1.0", "never", &sb.data_dir(), json!({"ranges": [[{"subnet": "10.9.0.0/24"}]]}));
    let mut g3 = c3.clone();
    g3["cni.dev/valid-attachments"] = json!([]);
    Call::new(OURS, "GC", "", &g3).run().assert_ok();
    assert!(!sb.net_dir("never").exists());
    // GC needs 1.1.0.
    let mut g4 = dual_conf(&sb, "1.0.0");
    g4["cni.dev/valid-attachments"] = json!([]);
    assert_eq!(Call::new(OURS, "GC", "", &g4).run().code(), 1);
}

#[test]
fn status_reports_usable_or_full() {
    let sb = Sandbox::new("status");
    let c = conf("1.1.0", "net1", &sb.data_dir(), json!({"ranges": [[{"subnet": "10.50.0.0/24"}], [{"subnet": "10.51.0.0/30"}]]}));
    // No state yet: usable, and STATUS creates nothing.
    let o = Call::new(OURS, "STATUS", "", &c).run();
    o.assert_ok();
    assert_eq!(o.stdout.trim(), "");
    assert!(!sb.data_dir().exists());
    add(OURS, "a", &c).assert_ok();
    let o = Call::new(OURS, "STATUS", "", &c).run();
    assert_eq!(o.code(), 50);
    assert!(o.details().contains("range set 1") && o.details().contains("full"), "{}", o.details());
    del(OURS, "a", &c).assert_ok();
    Call::new(OURS, "STATUS", "", &c).run().assert_ok();
    // Unusable paths: dataDir is a file; the network directory is a symlink.
    let file = sb.root.join("afile");
    std::fs::write(&file, "x").unwrap();
    let bad = conf("1.1.0", "net1", &file, json!({"ranges": [[{"subnet": "10.50.0.0/24"}]]}));
    let o = Call::new(OURS, "STATUS", "", &bad).run();
    assert_eq!(o.code(), 50);
    assert!(o.details().contains("afile"), "{}", o.details());
    std::os::unix::fs::symlink("/tmp", sb.net_dir("linked")).unwrap();
    let linked = conf("1.1.0", "linked", &sb.data_dir(), json!({"ranges": [[{"subnet": "10.50.0.0/24"}]]}));
    let o = Call::new(OURS, "STATUS", "", &linked).run();
    assert_eq!(o.code(), 50);
    assert!(o.details().contains("symlink"), "{}", o.details());
    // STATUS needs 1.1.0; invalid config is code 7.
    assert_eq!(Call::new(OURS, "STATUS", "", &v4_conf(&sb, "1.0.0", "10.50.0.0/24")).run().code(), 1);
    assert_eq!(Call::new(OURS, "STATUS", "", &v4_conf(&sb, "1.1.0", "10.50.0.1/24")).run().code(), 7);
}

#[test]
fn symlinks_are_never_followed() {
    let sb = Sandbox::new("symlink");
    let c = v4_conf(&sb, "1.0.0", "10.60.0.0/24");
    let dir = sb.net_dir("net1");
    std::fs::create_dir_all(&dir).unwrap();
    let victim = sb.root.join("victim");
    std::fs::write(&victim, "precious").unwrap();
    // A symlink planted at the first lease path and at last_reserved_ip.0.
    std::os::unix::fs::symlink(&victim, dir.join("10.60.0.2")).unwrap();
    std::os::unix::fs::symlink(&victim, dir.join("last_reserved_ip.0")).unwrap();
    assert_eq!(add(OURS, "a", &c).ips(), ["10.60.0.3/24"]);
    assert_eq!(std::fs::read_to_string(&victim).unwrap(), "precious");
    assert!(std::fs::symlink_metadata(dir.join("10.60.0.2")).unwrap().file_type().is_symlink());
    assert!(!std::fs::symlink_metadata(dir.join("last_reserved_ip.0")).unwrap().file_type().is_symlink());
    // DEL and GC leave the symlink and its target alone.
    del(OURS, "a", &c).assert_ok();
    let mut g = v4_conf(&sb, "1.1.0", "10.60.0.0/24");
    g["cni.dev/valid-attachments"] = json!([]);
    Call::new(OURS, "GC", "", &g).run().assert_ok();
    assert!(std::fs::symlink_metadata(dir.join("10.60.0.2")).unwrap().file_type().is_symlink());
    assert_eq!(std::fs::read_to_string(&victim).unwrap(), "precious");
    // A symlinked network directory or lock file is refused (I/O error naming the path).
    let other = sb.root.join("elsewhere");
    std::fs::create_dir_all(&other).unwrap();
    std::os::unix::fs::symlink(&other, sb.net_dir("net2")).unwrap();
    let c2 = conf("1.0.0", "net2", &sb.data_dir(), json!({"ranges": [[{"subnet": "10.61.0.0/24"}]]}));
    let o = add(OURS, "a", &c2);
    assert_eq!(o.code(), 5);
    assert!(o.details().contains("symlink"), "{}", o.details());
    assert_eq!(std::fs::read_dir(&other).unwrap().count(), 0);
    let dir3 = sb.net_dir("net3");
    std::fs::create_dir_all(&dir3).unwrap();
    std::os::unix::fs::symlink(&victim, dir3.join("lock")).unwrap();
    let c3 = conf("1.0.0", "net3", &sb.data_dir(), json!({"ranges": [[{"subnet": "10.62.0.0/24"}]]}));
    assert_eq!(add(OURS, "a", &c3).code(), 5);
    assert_eq!(std::fs::read_to_string(&victim).unwrap(), "precious");
}

#[test]
fn network_names_cannot_escape_data_dir() {
    let sb = Sandbox::new("escape");
    for name in ["../escape", "a/b", "..", "."] {
        let c = conf("1.0.0", name, &sb.data_dir(), json!({"ranges": [[{"subnet": "10.70.0.0/24"}]]}));
        let o = add(OURS, "a", &c);
        assert_eq!(o.code(), 7, "{name}: {}", o.stdout);
    }
    assert!(!sb.root.join("escape").exists());
    assert!(!sb.data_dir().exists() || std::fs::read_dir(sb.data_dir()).unwrap().count() == 0);
}

#[test]
fn legacy_files_holding_only_the_id() {
    let sb = Sandbox::new("legacyfiles");
    let c = v4_conf(&sb, "1.0.0", "10.80.0.0/24");
    let dir = sb.net_dir("net1");
    write_lease(&dir, "10.80.0.2", "oldcid");
    // Seen as taken and as held by the container.
    let o = add(OURS, "oldcid", &c);
    assert_eq!(o.code(), 103);
    assert!(o.details().contains("10.80.0.2"));
    assert_eq!(add(OURS, "new", &c).ips(), ["10.80.0.3/24"]);
    check(OURS, "oldcid", &c).assert_ok();
    del(OURS, "oldcid", &c).assert_ok();
    assert!(!dir.join("10.80.0.2").exists());
    assert!(dir.join("10.80.0.3").exists());
}

#[test]
fn index_trusted_until_someone_else_writes() {
    let sb = Sandbox::new("index");
    let c = v4_conf(&sb, "1.0.0", "10.90.0.0/24");
    let dir = sb.net_dir("net1");
    assert_eq!(add(OURS, "a", &c).scans(), 1, "first call builds the index");
    assert_eq!(add(OURS, "b", &c).scans(), 0);
    assert_eq!(del(OURS, "a", &c).scans(), 0);
    assert_eq!(check(OURS, "b", &c).scans(), 0);
    // Another writer adds a lease for an attachment: the next call rescans and sees it.
    write_lease(&dir, "10.90.0.50", "x\r\neth0");
    let o = add(OURS, "x", &c);
    assert_eq!(o.scans(), 1);
    assert_eq!(o.code(), 103);
    assert_eq!(del(OURS, "x", &c).scans(), 0);
    assert!(!dir.join("10.90.0.50").exists());
    // Another writer removes one of ours, then reuses the address for someone else.
    std::fs::remove_file(dir.join("10.90.0.3")).unwrap();
    write_lease(&dir, "10.90.0.3", "y\r\neth0");
    let o = del(OURS, "b", &c);
    assert_eq!(o.scans(), 1);
    assert!(dir.join("10.90.0.3").exists(), "b's DEL must not remove y's lease");
    del(OURS, "y", &c).assert_ok();
    assert!(!dir.join("10.90.0.3").exists());
    // Index removed or damaged: rebuilt.
    std::fs::remove_dir_all(dir.join(".host-local-index")).unwrap();
    add(OURS, "z", &c).assert_ok();
    let idx = dir.join(".host-local-index/a/z:eth0");
    assert!(idx.exists());
    // (the entry is a hard link to z's lease: replace it rather than write through it)
    std::fs::remove_file(&idx).unwrap();
    std::fs::write(&idx, "garbage").unwrap();
    let o = del(OURS, "z", &c);
    assert_eq!(o.scans(), 1);
    assert!(leases(&dir).is_empty(), "{:?}", leases(&dir));
    // Content changed in place (no directory change): caught by verification.
    add(OURS, "p", &c).assert_ok();
    let ip = leases(&dir).keys().next().unwrap().clone();
    std::fs::write(dir.join(&ip), "q\r\neth0").unwrap();
    let o = del(OURS, "p", &c);
    o.assert_ok();
    assert!(dir.join(&ip).exists(), "p's DEL removed q's lease");
    assert_eq!(leases(&dir)[&ip], "q\r\neth0");
}

/// The index entry of an attachment is its first lease's inode (a hard link carrying the addresses
/// in an extended attribute): an ADD creates one inode per lease and none for the index, on a
/// filesystem with hard links and user extended attributes (ext4, xfs, btrfs, tmpfs since 6.6).
/// Entries of the earlier form (a file of their own) are still read without a rescan.
#[test]
fn index_entries_are_hard_links_to_the_lease() {
    use std::os::unix::fs::MetadataExt;
    let sb = Sandbox::new("idxlink");
    let c = dual_conf(&sb, "1.0.0");
    let dir = sb.net_dir("net1");
    let ips = add(OURS, "a", &c).assert_ok().ips();
    assert_eq!(ips.len(), 2, "{ips:?}");
    let entry = dir.join(".host-local-index/a/a:eth0");
    let first = dir.join(ips[0].split('/').next().unwrap());
    let (em, lm) = (std::fs::symlink_metadata(&entry).unwrap(), std::fs::symlink_metadata(&first).unwrap());
    assert_eq!(em.ino(), lm.ino(), "entry and first lease are one inode");
    assert_eq!(lm.nlink(), 2);
    let want: String = ips.iter().map(|i| format!("{}\n", i.split('/').next().unwrap())).collect();
    assert_eq!(xattr(&entry, "user.cnihl"), Some(want));
    assert_eq!(std::fs::read_to_string(&entry).unwrap(), "a\r\neth0", "the lease's content, unchanged");
    assert_eq!(check(OURS, "a", &c).scans(), 0);
    // DEL removes both names: nothing is left of the attachment
    assert_eq!(del(OURS, "a", &c).scans(), 0);
    assert!(leases(&dir).is_empty() && !entry.exists());
    // An entry written by the earlier version (a file of its own) is still read (here after the
    // rescan that replacing it by hand causes) and released.
    let b = add(OURS, "b", &c).assert_ok().ips();
    let bentry = dir.join(".host-local-index/a/b:eth0");
    std::fs::remove_file(&bentry).unwrap();
    let body: String = b.iter().map(|i| format!("{}\n", i.split('/').next().unwrap())).collect();
    std::fs::write(&bentry, format!("# cni host-local index v1\nb\neth0\n{body}")).unwrap();
    let o = del(OURS, "b", &c);
    o.assert_ok();
    assert!(leases(&dir).is_empty(), "{:?}", leases(&dir));
    assert!(!bentry.exists());
}

/// An extended attribute of a file, as text (`None` when absent).
fn xattr(path: &std::path::Path, name: &str) -> Option<String> {
    use std::os::unix::ffi::OsStrExt;
    let p = std::ffi::CString::new(path.as_os_str().as_bytes()).unwrap();
    let n = std::ffi::CString::new(name).unwrap();
    let mut buf = vec![0u8; 1024];
    // SAFETY: NUL-terminated path and name, a writable buffer of the given length.
    let r = unsafe { libc::getxattr(p.as_ptr(), n.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
    (r >= 0).then(|| String::from_utf8_lossy(&buf[..r as usize]).into_owned())
}

#[test]
fn long_container_ids_are_indexed() {
    let sb = Sandbox::new("longid");
    let c = v4_conf(&sb, "1.0.0", "10.91.0.0/24");
    let cid = "a".repeat(300);
    add(OURS, &cid, &c).assert_ok();
    assert_eq!(add(OURS, &cid, &c).code(), 103);
    assert_eq!(check(OURS, &cid, &c).scans(), 0);
    del(OURS, &cid, &c).assert_ok();
    assert!(leases(&sb.net_dir("net1")).is_empty());
}

#[test]
fn killed_at_any_point_leaves_complete_or_no_reservation() {
    let sb = Sandbox::new("crash");
    let c = dual_conf(&sb, "1.0.0");
    let dir = sb.net_dir("net1");
    let input = serde_json::to_vec(&c).unwrap();
    for i in 0..150u64 {
        let cid = format!("k{i}");
        let mut child = std::process::Command::new(OURS)
            .env_clear()
            .env("CNI_COMMAND", if i % 3 == 2 { "DEL" } else { "ADD" })
            .env("CNI_CONTAINERID", if i % 3 == 2 { format!("k{}", i - 1) } else { cid.clone() })
            .env("CNI_IFNAME", "eth0")
            .env("CNI_NETNS", "/proc/self/ns/net")
            .env("CNI_NETNS_OVERRIDE", "1")
            .env("CNI_PATH", "/usr/lib/cni")
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        use std::io::Write;
        let _ = child.stdin.take().unwrap().write_all(&input);
        std::thread::sleep(std::time::Duration::from_micros((i * 53) % 3000));
        let _ = child.kill();
        let _ = child.wait();
        for (name, content) in leases(&dir) {
            let ok = content.split_once("\r\n").is_some_and(|(id, ifn)| id.starts_with('k') && ifn == "eth0");
            assert!(ok, "incomplete lease {name}: {content:?}");
        }
        for (name, f) in snapshot(&dir) {
            if name.starts_with("last_reserved_ip.") {
                assert!(f.content.parse::<std::net::IpAddr>().is_ok(), "{name}: {:?}", f.content);
            }
        }
    }
    // Whatever survived is consistent: every holder can be found and released.
    let holders: std::collections::BTreeSet<String> =
        leases(&dir).values().map(|c| c.split_once("\r\n").unwrap().0.to_string()).collect();
    for h in &holders {
        check(OURS, h, &c).assert_ok();
        assert_eq!(add(OURS, h, &c).code(), 103);
        del(OURS, h, &c).assert_ok();
    }
    assert!(leases(&dir).is_empty(), "{:?}", leases(&dir));
    // No temporary files are left after a call under the lock.
    add(OURS, "final", &c).assert_ok();
    let names: Vec<String> = std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    assert!(names.iter().all(|n| !n.starts_with(".host-local-tmp")), "{names:?}");
}

#[test]
fn bad_inputs() {
    let sb = Sandbox::new("bad");
    let c = v4_conf(&sb, "1.0.0", "10.95.0.0/24");
    let o = Call::new(OURS, "ADD", "a", &c).stdin(b"{not json").run();
    assert_eq!(o.code(), 6);
    assert_eq!(Call::new(OURS, "ADD", "a", &c).stdin(b"").run().code(), 6);
    assert_eq!(Call::new(OURS, "ADD", "a", &c).stdin(b"[1,2]").run().code(), 6);
    let mut v = c.clone();
    v["cniVersion"] = json!("9.9.9");
    assert_eq!(add(OURS, "a", &v).code(), 1);
    let mut v = c.clone();
    v.as_object_mut().unwrap().remove("ipam");
    let o = add(OURS, "a", &v);
    assert_eq!(o.code(), 7);
    assert!(o.details().contains("ipam"));
    let mut v = c.clone();
    v["ipam"]["ranges"] = json!([[{"subnet": "10.95.0.7/24"}]]);
    let o = add(OURS, "a", &v);
    assert_eq!(o.code(), 7);
    assert!(o.details().contains("subnet") && o.details().contains("10.95.0.7/24"), "{}", o.details());
    let mut v = c.clone();
    v["ipam"]["ranges"] = json!([[{"subnet": "10.95.0.0/24"}], [{"subnet": "10.95.0.128/25"}]]);
    assert!(add(OURS, "a", &v).details().contains("overlaps"));
    let mut v = c.clone();
    v["ipam"]["dataDir"] = json!(42);
    let o = add(OURS, "a", &v);
    assert_eq!(o.code(), 7);
    assert!(o.details().contains("dataDir") && o.details().contains("42"), "{}", o.details());
    assert_eq!(Call::new(OURS, "ADD", "", &c).run().code(), 4);
    assert_eq!(Call::new(OURS, "ADD", "a", &c).args("FOO=bar").run().code(), 4);
    assert_eq!(Call::new(OURS, "ADD", "a", &c).ifname("").run().code(), 4);
    let mut v = c.clone();
    v["cniVersion"] = json!("0.3.1");
    assert_eq!(Call::new(OURS, "CHECK", "a", &v).run().code(), 1);
    // Nothing was allocated by any of these.
    assert!(leases(&sb.net_dir("net1")).is_empty());
    // DEL with broken ranges still releases (only dataDir is needed).
    add(OURS, "a", &c).assert_ok();
    let mut v = c.clone();
    v["ipam"]["ranges"] = json!("broken");
    del(OURS, "a", &v).assert_ok();
    assert!(leases(&sb.net_dir("net1")).is_empty());
    // DEL on a network without state creates nothing.
    let n = conf("1.0.0", "nostate", &sb.data_dir(), json!({"ranges": [[{"subnet": "10.96.0.0/24"}]]}));
    del(OURS, "a", &n).assert_ok();
    assert!(!sb.net_dir("nostate").exists());
}

#[test]
fn version_and_about() {
    let sb = Sandbox::new("version");
    let c = v4_conf(&sb, "1.0.0", "10.97.0.0/24");
    let v = Call::new(OURS, "VERSION", "", &c).run().assert_ok().json();
    assert!(v["supportedVersions"].as_array().unwrap().iter().any(|x| x == "1.1.0"));
    let out = std::process::Command::new(OURS).env_clear().output().unwrap();
    assert!(String::from_utf8_lossy(&out.stderr).starts_with("CNI host-local plugin v"));
}

#[test]
fn data_dir_modes() {
    let sb = Sandbox::new("modes");
    let c = v4_conf(&sb, "1.0.0", "10.98.0.0/24");
    add(OURS, "a", &c).assert_ok();
    let m = std::fs::metadata(sb.net_dir("net1")).unwrap().permissions().mode() & 0o777;
    assert_eq!(m, 0o755);
}
