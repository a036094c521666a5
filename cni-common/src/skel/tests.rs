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
