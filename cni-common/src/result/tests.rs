use super::*;
use crate::version::SUPPORTED;
use proptest::prelude::*;
use serde_json::json;

fn sample() -> CniResult {
    serde_json::from_value(json!({
        "cniVersion": "1.1.0",
        "interfaces": [
            {"name": "cni0", "mac": "aa:bb:cc:dd:ee:01", "mtu": 1500},
            {"name": "veth1234abcd", "mac": "aa:bb:cc:dd:ee:02"},
            {"name": "eth0", "mac": "aa:bb:cc:dd:ee:03", "sandbox": "/run/netns/x", "pciID": "0000:00:01.0"}
        ],
        "ips": [
            {"interface": 2, "address": "10.1.0.5/24", "gateway": "10.1.0.1"},
            {"interface": 2, "address": "fd00::5/64", "gateway": "fd00::1"}
        ],
        "routes": [{"dst": "0.0.0.0/0", "gw": "10.1.0.1", "priority": 10, "table": 100}, {"dst": "::/0"}],
        "dns": {"nameservers": ["10.1.0.1"], "search": ["example.test"]}
    }))
    .unwrap()
}

#[test]
fn v1_0_drops_1_1_fields() {
    let v = sample().to_value("1.0.0").unwrap();
    assert_eq!(v["cniVersion"], "1.0.0");
    assert!(v["interfaces"][0].get("mtu").is_none());
    assert!(v["interfaces"][2].get("pciID").is_none());
    assert!(v["routes"][0].get("priority").is_none());
    assert!(v["ips"][0].get("version").is_none());
}

#[test]
fn v040_has_ip_versions() {
    let v = sample().to_value("0.4.0").unwrap();
    assert_eq!(v["ips"][0]["version"], "4");
    assert_eq!(v["ips"][1]["version"], "6");
    let back = CniResult::parse(&v, "0.4.0").unwrap();
    assert!(back.ips.iter().all(|ip| ip.extra.is_empty()));
    assert_eq!(back.ips, sample().ips);
}

#[test]
fn v020_one_address_per_family() {
    let mut r = sample();
    r.ips.push(IpConfig::new("10.2.0.9/24".parse().unwrap(), None, Some(2)));
    let v = r.to_value("0.2.0").unwrap();
    assert_eq!(v["ip4"]["ip"], "10.1.0.5/24");
    assert_eq!(v["ip4"]["gateway"], "10.1.0.1");
    assert_eq!(v["ip4"]["routes"][0]["dst"], "0.0.0.0/0");
    assert_eq!(v["ip6"]["ip"], "fd00::5/64");
    assert_eq!(v["ip6"]["routes"][0]["dst"], "::/0");
    assert!(v.get("ips").is_none());
    let back = CniResult::parse(&v, "0.2.0").unwrap();
    assert_eq!(back.ips.len(), 2);
    assert_eq!(back.routes.len(), 2);
    assert_eq!(back.dns, r.dns);
}

#[test]
fn empty_version_defaults() {
    let r = CniResult::parse(&json!({"ips": [{"address": "10.0.0.2/24"}]}), "1.0.0").unwrap();
    assert_eq!(r.cni_version, "1.0.0");
    assert!(CniResult::parse(&json!({"cniVersion": "7.0.0"}), "1.0.0").unwrap_err().code() == 1);
    assert!(CniResult::parse(&json!([1]), "1.0.0").unwrap_err().code() == 6);
}

#[test]
fn unknown_fields_pass_through() {
    let v = json!({"cniVersion": "1.0.0", "interfaces": [{"name": "eth0", "vendor": {"x": 1}}], "custom": "y", "dns": {}});
    let r = CniResult::parse(&v, "1.0.0").unwrap();
    assert_eq!(r.to_value("1.0.0").unwrap(), v);
}

fn arb_v4() -> impl Strategy<Value = IpNetwork> {
    (any::<u32>(), 8u8..=32).prop_map(|(a, p)| IpNetwork::new(std::net::Ipv4Addr::from(a).into(), p).unwrap())
}
fn arb_v6() -> impl Strategy<Value = IpNetwork> {
    (any::<u128>(), 8u8..=128).prop_map(|(a, p)| IpNetwork::new(std::net::Ipv6Addr::from(a).into(), p).unwrap())
}
fn arb_net() -> impl Strategy<Value = IpNetwork> {
    prop_oneof![arb_v4(), arb_v6()]
}
fn arb_ip(net: IpNetwork) -> IpConfig {
    IpConfig::new(net, Some(net.ip()), None)
}

prop_compose! {
    fn arb_result()(ifaces in prop::collection::vec(("[a-z]{1,15}", prop::bool::ANY), 0..3),
                    ips in prop::collection::vec((arb_net(), prop::option::of(0usize..3)), 0..4),
                    routes in prop::collection::vec((arb_net(), prop::option::of(arb_net())), 0..4),
                    ns in prop::collection::vec("[0-9.]{1,15}", 0..2),
                    mtu in prop::option::of(576u32..9000), prio in prop::option::of(0u32..1000)) -> CniResult {
        let interfaces: Vec<Interface> = ifaces.iter().map(|(n, sb)| Interface {
            name: n.clone(), mac: "02:00:00:00:00:01".into(), mtu,
            sandbox: if *sb { "/run/netns/t".into() } else { String::new() }, ..Default::default() }).collect();
        let n = interfaces.len();
        CniResult {
            cni_version: "1.1.0".into(),
            interfaces,
            ips: ips.into_iter().map(|(a, i)| IpConfig { interface: i.filter(|i| *i < n), ..arb_ip(a) }).collect(),
            routes: routes.into_iter().map(|(d, g)| Route { priority: prio, ..Route::new(d, g.map(|g| g.ip())) }).collect(),
            dns: Dns { nameservers: ns, ..Default::default() },
            extra: Map::new(),
        }
    }
}

fn strip_1_1(mut r: CniResult) -> CniResult {
    for i in &mut r.interfaces {
        i.mtu = None;
    }
    for rt in &mut r.routes {
        rt.priority = None;
    }
    r
}

proptest! {
    /// 0.3.0 and later keep everything of the shape they know: emitting then parsing gives back the
    /// same result (minus the 1.1.0-only fields for older versions).
    #[test]
    fn roundtrip_lossless_versions(r in arb_result(), vi in 2usize..SUPPORTED.len()) {
        let ver = SUPPORTED[vi];
        let back = CniResult::parse(&r.to_value(ver).unwrap(), ver).unwrap();
        let expected = if ver == "1.1.0" { r.clone() } else { strip_1_1(r.clone()) };
        prop_assert_eq!(CniResult { cni_version: String::new(), ..back }, CniResult { cni_version: String::new(), ..expected });
    }

    /// 0.2.0 keeps the first address of each family and every route of a family that has an address;
    /// a result with one address per family and no interfaces round-trips exactly.
    #[test]
    fn roundtrip_v02(a4 in arb_v4(), a6 in arb_v6(), gw in prop::bool::ANY,
                     routes in prop::collection::vec(arb_net(), 0..4)) {
        let ips = vec![
            IpConfig::new(a4, if gw { Some(a4.ip()) } else { None }, None),
            IpConfig::new(a6, None, None),
        ];
        let mut rs: Vec<Route> = routes.into_iter().map(|d| Route::new(d, None)).collect();
        rs.sort_by_key(|r| !r.dst.is_ipv4());
        let r = CniResult { cni_version: "0.2.0".into(), ips, routes: rs, ..Default::default() };
        let back = CniResult::parse(&r.to_value("0.2.0").unwrap(), "0.2.0").unwrap();
        prop_assert_eq!(back, r);
    }

    /// Converting up from 0.2.0 and back down is the identity.
    #[test]
    fn v02_up_and_down(a4 in arb_v4(), ver in 2usize..SUPPORTED.len()) {
        let v02 = json!({"cniVersion": "0.2.0", "ip4": {"ip": a4.to_string(), "routes": [{"dst": "0.0.0.0/0"}]}, "dns": {}});
        let r = CniResult::parse(&v02, "0.2.0").unwrap();
        let up = CniResult::parse(&r.to_value(SUPPORTED[ver]).unwrap(), SUPPORTED[ver]).unwrap();
        prop_assert_eq!(up.to_value("0.2.0").unwrap(), v02);
    }
}
