use super::*;
use std::collections::HashMap;

fn parse(env: &[(&str, &str)], stdin: &str) -> Result<Parsed, CniError> {
    let map: HashMap<String, String> = env.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    let lookup = move |k: &str| map.get(k).cloned();
    parse_request(Input { env: &lookup, stdin: stdin.as_bytes().to_vec() }, version::SUPPORTED, &["IP"])
}

const ADD: &[(&str, &str)] =
    &[("CNI_COMMAND", "ADD"), ("CNI_CONTAINERID", "c1"), ("CNI_NETNS", "/run/netns/x"), ("CNI_IFNAME", "eth0")];
const CONF: &str = r#"{"cniVersion":"1.1.0","name":"net1","type":"loopback"}"#;

fn code(r: Result<Parsed, CniError>) -> u32 {
    r.unwrap_err().code()
}

fn with(base: &[(&'static str, &'static str)], k: &'static str, v: &'static str) -> Vec<(&'static str, &'static str)> {
    let mut e: Vec<_> = base.iter().filter(|(x, _)| *x != k).cloned().collect();
    e.push((k, v));
    e
}

#[test]
fn valid_add() {
    match parse(ADD, CONF).unwrap() {
        Parsed::Request(r) => {
            assert_eq!(r.command, Command::Add);
            assert_eq!(r.cni_version, "1.1.0");
            assert_eq!(r.conf.name, "net1");
        }
        _ => panic!("expected a request"),
    }
}

#[test]
fn version_command() {
    match parse(&[("CNI_COMMAND", "VERSION")], r#"{"cniVersion":"0.4.0"}"#).unwrap() {
        Parsed::Version(v) => {
            assert_eq!(v["cniVersion"], "0.4.0");
            assert_eq!(v["supportedVersions"].as_array().unwrap().len(), version::SUPPORTED.len());
        }
        _ => panic!("expected version"),
    }
    // stdin is not needed for VERSION
    assert!(matches!(parse(&[("CNI_COMMAND", "VERSION")], "").unwrap(), Parsed::Version(_)));
}

#[test]
fn bad_stdin() {
    assert_eq!(code(parse(ADD, "{not json")), 6);
    assert_eq!(code(parse(ADD, "")), 6);
    assert_eq!(code(parse(ADD, "[1,2]")), 6);
    let big = format!(r#"{{"cniVersion":"1.1.0","name":"n","type":"t","pad":"{}"}}"#, "x".repeat(MAX_STDIN));
    let e = parse(ADD, &big).unwrap_err();
    assert_eq!(e.code(), 5);
    assert!(e.to_string().contains("limit"));
}

#[test]
fn bad_config() {
    assert_eq!(code(parse(ADD, r#"{"cniVersion":"1.1.0","type":"loopback"}"#)), 7);
    assert_eq!(code(parse(ADD, r#"{"cniVersion":"1.1.0","name":"n"}"#)), 7);
    assert_eq!(code(parse(ADD, r#"{"cniVersion":"1.1.0","name":"../x","type":"t"}"#)), 7);
    assert_eq!(code(parse(ADD, r#"{"cniVersion":"9.9.9","name":"n","type":"t"}"#)), 1);
    assert_eq!(code(parse(&with(ADD, "CNI_COMMAND", "CHECK"), r#"{"cniVersion":"0.3.1","name":"n","type":"t"}"#)), 1);
    assert_eq!(code(parse(&[("CNI_COMMAND", "GC")], r#"{"cniVersion":"1.0.0","name":"n","type":"t"}"#)), 1);
    assert_eq!(code(parse(&[("CNI_COMMAND", "STATUS")], r#"{"cniVersion":"1.0.0","name":"n","type":"t"}"#)), 1);
    assert!(parse(&[("CNI_COMMAND", "STATUS")], CONF).is_ok());
}

#[test]
fn bad_env() {
    assert_eq!(code(parse(&with(ADD, "CNI_COMMAND", "FOO"), CONF)), 4);
    assert_eq!(code(parse(&with(ADD, "CNI_CONTAINERID", ""), CONF)), 4);
    assert_eq!(code(parse(&with(ADD, "CNI_CONTAINERID", "-bad"), CONF)), 4);
    assert_eq!(code(parse(&with(ADD, "CNI_NETNS", ""), CONF)), 4);
    for ifname in ["", "a/b", "a:b", "a b", ".", "..", "abcdefghijklmnop"] {
        let e = parse(&with(ADD, "CNI_IFNAME", ifname), CONF).unwrap_err();
        assert_eq!(e.code(), 4, "{ifname:?}");
        assert!(e.to_string().contains("CNI_IFNAME"));
    }
    assert_eq!(code(parse(&with(ADD, "CNI_ARGS", "FOO=1"), CONF)), 4);
    assert!(parse(&with(ADD, "CNI_ARGS", "IP=10.0.0.2"), CONF).is_ok());
    // DEL tolerates an empty netns
    assert!(parse(&with(&with(ADD, "CNI_NETNS", ""), "CNI_COMMAND", "DEL"), CONF).is_ok());
}

#[test]
fn missing_version_is_0_1_0() {
    match parse(ADD, r#"{"name":"n","type":"t"}"#).unwrap() {
        Parsed::Request(r) => assert_eq!(r.cni_version, "0.1.0"),
        _ => panic!(),
    }
}

#[test]
fn error_version_falls_back() {
    assert_eq!(error_version(b"{\"cniVersion\":\"0.4.0\"}"), "0.4.0");
    assert_eq!(error_version(b"junk"), version::CURRENT);
    assert_eq!(error_version(b"{\"cniVersion\":\"7.7.7\"}"), version::CURRENT);
}

/// In a forked child (so that the test process's own descriptors stay as they are): with 0 and 2
/// closed, the plugins' entry point puts /dev/null on both, and leaves 1 alone.
#[test]
fn closed_standard_descriptors_are_opened_on_dev_null() {
    const LINKS: [&std::ffi::CStr; 3] = [c"/proc/self/fd/0", c"/proc/self/fd/1", c"/proc/self/fd/2"];
    fn target(fd: usize, buf: &mut [u8; 64]) -> &[u8] {
        // SAFETY: a NUL-terminated path and a buffer of the given length.
        let n = unsafe { libc::readlink(LINKS[fd].as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
        &buf[..n.max(0) as usize]
    }
    let mut before = [0u8; 64];
    let before_1 = target(1, &mut before);
    // SAFETY: the child only makes system calls and works on its stack (no allocation) before _exit.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0, "fork failed");
    if pid == 0 {
        unsafe {
            libc::close(0);
            libc::close(2);
        }
        super::keep_std_fds_open();
        let (mut b0, mut b1, mut b2) = ([0u8; 64], [0u8; 64], [0u8; 64]);
        let ok = target(0, &mut b0) == b"/dev/null" && target(2, &mut b2) == b"/dev/null" && target(1, &mut b1) == before_1;
        unsafe { libc::_exit(if ok { 0 } else { 1 }) };
    }
    let mut status = 0;
    // SAFETY: waiting for our own child.
    unsafe { libc::waitpid(pid, &mut status, 0) };
    assert!(libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0, "descriptors 0 and 2 not on /dev/null after keep_std_fds_open (status {status:#x})");
}

/// A plugin whose ADD succeeds with an empty result, counting its calls.
struct Counting(std::sync::atomic::AtomicUsize);

impl Plugin for Counting {
    fn name(&self) -> &'static str {
        "counting"
    }
    fn add(&self, _: &Request) -> Result<CniResult, CniError> {
        self.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        Ok(CniResult::default())
    }
    fn del(&self, _: &Request) -> Result<(), CniError> {
        Ok(())
    }
    fn check(&self, _: &Request) -> Result<(), CniError> {
        Ok(())
    }
}

#[test]
fn own_namespace_is_refused_unless_overridden_or_already_checked() {
    // The namespace of the test's thread stands in for the plugin's own (no root needed: only
    // opened and compared).
    let own = format!("/proc/{}/task/{}/ns/net", std::process::id(), nix::unistd::gettid());
    let plugin = Counting(std::sync::atomic::AtomicUsize::new(0));
    let env_with = |extra: Option<(&'static str, &'static str)>| {
        let mut map: HashMap<String, String> =
            with(ADD, "CNI_NETNS", "").into_iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        map.insert("CNI_NETNS".into(), own.clone());
        if let Some((k, v)) = extra {
            map.insert(k.into(), v.into());
        }
        move |k: &str| map.get(k).cloned()
    };
    let served = serve(&plugin, &env_with(None), CONF.as_bytes().to_vec());
    assert_eq!(served.code, 1, "{}", served.stdout);
    let e: serde_json::Value = serde_json::from_str(&served.stdout).unwrap();
    assert_eq!(e["code"], 8, "{e}");
    assert!(e["details"].as_str().unwrap().contains("own network namespace"), "{e}");
    assert_eq!(plugin.0.load(std::sync::atomic::Ordering::SeqCst), 0, "the verb must not run");

    let served = serve(&plugin, &env_with(Some(("CNI_NETNS_OVERRIDE", "1"))), CONF.as_bytes().to_vec());
    assert_eq!(served.code, 0, "{}", served.stdout);
    // A delegation served in-process was checked with its caller's request.
    let served = serve_delegated(&plugin, &env_with(None), CONF.as_bytes().to_vec());
    assert_eq!(served.code, 0, "{}", served.stdout);
    assert_eq!(plugin.0.load(std::sync::atomic::Ordering::SeqCst), 2);
}
