use super::*;
use cni_common::skel::request_from;
use serde_json::json;

fn req_with(conf: serde_json::Value, cni_args: &str) -> Request {
    let env = [
        ("CNI_COMMAND", "ADD"),
        ("CNI_CONTAINERID", "c1"),
        ("CNI_NETNS", "/run/netns/x"),
        ("CNI_IFNAME", "eth0"),
        ("CNI_ARGS", cni_args),
    ];
    request_from(&env, &conf, &["MAC", "IP"]).unwrap()
}

fn conf(extra: serde_json::Value) -> serde_json::Value {
    let mut c = json!({"cniVersion": "1.0.0", "name": "net", "type": "bridge", "ipam": {"type": "host-local"}});
    for (k, v) in extra.as_object().unwrap() {
        c[k] = v.clone();
    }
    c
}

fn parse_ok(extra: serde_json::Value) -> BridgeConf {
    parse(&req_with(conf(extra), "")).unwrap()
}

fn parse_err(extra: serde_json::Value) -> CniError {
    parse(&req_with(conf(extra), "")).unwrap_err()
}

#[test]
fn defaults() {
    let c = parse_ok(json!({}));
    assert_eq!(c.bridge, "cni0");
    assert!(!c.is_gateway && !c.ip_masq && !c.hairpin);
    assert_eq!(c.mtu, None);
    assert_eq!(c.vlan, 0);
    assert_eq!(c.ipam_type.as_deref(), Some("host-local"));
}

#[test]
fn link_local_ipv6_is_off_unless_asked_and_must_be_a_bool() {
    assert!(!parse_ok(json!({})).link_local_ipv6);
    assert!(parse_ok(json!({"linkLocalIPv6": true})).link_local_ipv6);
    let e = parse_err(json!({"linkLocalIPv6": "yes"}));
    assert_eq!(e.code(), 7);
    assert!(e.to_string().contains("linkLocalIPv6"), "{e}");
}

#[test]
fn default_gateway_implies_gateway() {
    let c = parse_ok(json!({"isDefaultGateway": true}));
    assert!(c.is_gateway && c.is_default_gateway);
}

#[test]
fn rejects_bad_values_naming_the_field() {
    let e = parse_err(json!({"hairpinMode": true, "promiscMode": true}));
    assert_eq!(e.code(), 7);
    assert!(e.to_string().contains("hairpinMode"));
    assert!(parse_err(json!({"bridge": "a-very-long-bridge-name"})).to_string().contains("\"bridge\""));
    assert!(parse_err(json!({"mtu": 70000})).to_string().contains("mtu"));
    assert!(parse_err(json!({"mtu": "big"})).to_string().contains("mtu"));
    assert!(parse_err(json!({"vlan": 5000})).to_string().contains("vlan"));
    assert!(parse_err(json!({"vlanTrunk": [{"minID": 10}]})).to_string().contains("vlanTrunk[0]"));
    assert!(parse_err(json!({"vlanTrunk": [{"minID": 20, "maxID": 10}]})).to_string().contains("minID"));
    assert!(parse_err(json!({"ipMasqBackend": "pf"})).to_string().contains("ipMasqBackend"));
    assert!(parse_err(json!({"disableContainerInterface": true})).to_string().contains("disableContainerInterface"));
    assert!(parse_err(json!({"isGateway": "yes"})).to_string().contains("isGateway"));
    assert_eq!(parse_err(json!({"macspoofchk": true})).code(), 2);
}

#[test]
fn vlans() {
    let c = parse_ok(json!({"vlan": 100, "vlanTrunk": [{"id": 5}, {"minID": 10, "maxID": 12}, {"id": 11}]}));
    assert_eq!(c.vlan, 100);
    assert_eq!(c.vlan_trunk, vec![5, 10, 11, 12]);
    assert!(c.uses_vlans());
    assert!(parse_err(json!({"vlan": 11, "vlanTrunk": [{"minID": 10, "maxID": 12}]})).to_string().contains("access VLAN"));
}

#[test]
fn l2_only_and_container_interface() {
    let mut c = conf(json!({"disableContainerInterface": true}));
    c["ipam"] = json!({});
    let b = parse(&req_with(c, "")).unwrap();
    assert!(b.ipam_type.is_none() && b.disable_container_interface);
}

#[test]
fn mac_sources_later_wins() {
    let c = conf(json!({"args": {"cni": {"mac": "02:00:00:00:00:02"}}}));
    let b = parse(&req_with(c.clone(), "MAC=02:00:00:00:00:01")).unwrap();
    assert_eq!(b.mac, Some([2, 0, 0, 0, 0, 2]));
    let mut c2 = c;
    c2["runtimeConfig"] = json!({"mac": "02:00:00:00:00:03"});
    assert_eq!(parse(&req_with(c2, "MAC=02:00:00:00:00:01")).unwrap().mac, Some([2, 0, 0, 0, 0, 3]));
    assert_eq!(parse(&req_with(conf(json!({})), "MAC=02:00:00:00:00:01")).unwrap().mac, Some([2, 0, 0, 0, 0, 1]));
    let e = parse(&req_with(conf(json!({})), "MAC=zz")).unwrap_err();
    assert!(e.to_string().contains("CNI_ARGS MAC"));
    let e = parse(&req_with(conf(json!({})), "MAC=01:00:00:00:00:01")).unwrap_err();
    assert!(e.to_string().contains("multicast"));
}
