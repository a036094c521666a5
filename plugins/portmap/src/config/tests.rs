use super::*;
use cni_common::skel::request_from;
use serde_json::json;

fn req(extra: serde_json::Value) -> Request {
    let mut c = json!({"cniVersion": "1.0.0", "name": "net", "type": "portmap"});
    for (k, v) in extra.as_object().unwrap() {
        c[k] = v.clone();
    }
    let env = [("CNI_COMMAND", "ADD"), ("CNI_CONTAINERID", "c1"), ("CNI_NETNS", "/run/netns/x"), ("CNI_IFNAME", "eth0")];
    request_from(&env, &c, &[]).unwrap()
}

fn maps(m: serde_json::Value) -> serde_json::Value {
    json!({"runtimeConfig": {"portMappings": m}})
}

#[test]
fn defaults_and_mappings() {
    let c = parse(&req(maps(json!([{"hostPort": 8080, "containerPort": 80}, {"hostPort": 53, "containerPort": 53, "protocol": "UDP", "hostIP": "0.0.0.0"}])))).unwrap();
    assert!(c.snat && !c.masq_all);
    assert_eq!(c.mark_masq_bit, 13);
    assert_eq!(c.mappings.len(), 2);
    assert_eq!(c.mappings[0].protocol, Protocol::Tcp);
    assert_eq!(c.mappings[1].protocol, Protocol::Udp);
    assert_eq!(c.mappings[1].host_ip, None);
    assert!(parse(&req(json!({}))).unwrap().mappings.is_empty());
}

#[test]
fn rejects_naming_the_field() {
    let e = |v| parse(&req(v)).unwrap_err().to_string();
    assert!(e(maps(json!([{"hostPort": 0, "containerPort": 80}]))).contains("portMappings[0].hostPort"));
    assert!(e(maps(json!([{"hostPort": 80, "containerPort": 70000}]))).contains("containerPort"));
    assert!(e(maps(json!([{"hostPort": 80, "containerPort": 80, "protocol": "icmp"}]))).contains("protocol"));
    assert!(e(maps(json!([{"hostPort": 80, "containerPort": 80, "hostIP": "nope"}]))).contains("hostIP"));
    assert!(e(json!({"backend": "pf"})).contains("backend"));
    assert!(e(json!({"markMasqBit": 32})).contains("markMasqBit"));
    assert!(e(json!({"markMasqBit": 3, "externalSetMarkChain": "KUBE-MARK-MASQ"})).contains("exclude"));
    assert!(e(json!({"externalSetMarkChain": "bad chain"})).contains("externalSetMarkChain"));
    assert!(e(json!({"snat": "yes"})).contains("snat"));
}

#[test]
fn container_addresses_and_families() {
    let prev = CniResult::parse(
        &json!({"cniVersion": "1.0.0",
                "interfaces": [{"name": "cni0"}, {"name": "veth1"}, {"name": "eth0", "sandbox": "/x"}, {"name": "eth1", "sandbox": "/x"}],
                "ips": [{"address": "10.0.1.5/24", "interface": 3}, {"address": "10.0.0.5/24", "interface": 2},
                        {"address": "10.0.0.6/24", "interface": 2}, {"address": "fd00::5/64", "interface": 2}]}),
        "1.0.0",
    )
    .unwrap();
    let (v4, v6) = container_addrs(&prev, "eth0");
    assert_eq!(v4, Some("10.0.0.5/24".parse().unwrap()));
    assert_eq!(v6, Some("fd00::5/64".parse().unwrap()));
    let r = req(maps(json!([{"hostPort": 80, "containerPort": 80, "hostIP": "fd00::1"}])));
    let conf = parse(&r).unwrap();
    assert!(spec(&r, &conf, v4, v6).is_ok());
    let e = spec(&r, &conf, v4, None).unwrap_err();
    assert!(e.to_string().contains("hostIP"), "{e}");
    assert!(spec(&r, &conf, None, None).is_err());
}
