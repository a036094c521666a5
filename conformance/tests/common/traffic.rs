//! Traffic helpers for end-to-end tests: an "outside" namespace wired to the sandbox host for both
//! families, negative pings run concurrently, and TCP connections through published ports (the
//! listener bound inside one namespace, the client in another, the address the server saw returned).

use std::io::ErrorKind;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::time::{Duration, Instant};

use cni_common::error::CniError;
use cni_common::netns::NetNs;
use conformance::sandbox::NamedNetns;

/// Addresses of the host side and the outside side of [`wire_outside`].
pub const HOST_V4: &str = "198.51.100.1";
pub const OUTSIDE_V4: &str = "198.51.100.2";
pub const HOST_V6: &str = "2001:db8:51::1";
pub const OUTSIDE_V6: &str = "2001:db8:51::2";

/// Wire `outside` to `host` with a veth pair (`<name>` in the host, `<name>p` outside), both
/// families: host 198.51.100.1/24 + 2001:db8:51::1/64, outside .2 / ::2 (no DAD, usable at once).
/// The outside namespace gets no route to anything behind the host, so a container's traffic is
/// answered only when it is masqueraded (or when the test adds a route).
pub fn wire_outside(host: &NamedNetns, outside: &NamedNetns, name: &str) {
    let peer = format!("{name}p");
    host.run_ok("ip", ["link", "add", name, "type", "veth", "peer", "name", &peer, "netns", outside.name()]).unwrap();
    host.run_ok("ip", ["addr", "add", &format!("{HOST_V4}/24"), "dev", name]).unwrap();
    host.run_ok("ip", ["addr", "add", &format!("{HOST_V6}/64"), "dev", name, "nodad"]).unwrap();
    host.run_ok("ip", ["link", "set", name, "up"]).unwrap();
    outside.run_ok("ip", ["addr", "add", &format!("{OUTSIDE_V4}/24"), "dev", &peer]).unwrap();
    outside.run_ok("ip", ["addr", "add", &format!("{OUTSIDE_V6}/64"), "dev", &peer, "nodad"]).unwrap();
    outside.run_ok("ip", ["link", "set", &peer, "up"]).unwrap();
    outside.run_ok("ip", ["link", "set", "lo", "up"]).unwrap();
}

/// `ping -c1 -W1 ADDR` in `ns` succeeds.
fn ping_once(ns: &NamedNetns, addr: &str) -> bool {
    let mut args = vec!["-c1", "-W1"];
    if addr.contains(':') {
        args.insert(0, "-6");
    }
    args.push(addr);
    ns.run("ping", &args).map(|o| o.status.success()).unwrap_or(false)
}

/// Every `(namespace, address)` ping must fail. The pings run concurrently, so a list of blocked
/// paths costs one ping timeout (1 s), not one per path.
#[track_caller]
pub fn assert_blocked(paths: &[(&NamedNetns, &str)]) {
    let got: Vec<bool> = std::thread::scope(|s| {
        let handles: Vec<_> = paths.iter().map(|(ns, addr)| s.spawn(move || ping_once(ns, addr))).collect();
        handles.into_iter().map(|h| h.join().unwrap_or(true)).collect()
    });
    let leaks: Vec<String> = paths
        .iter()
        .zip(got)
        .filter(|(_, reached)| *reached)
        .map(|((ns, addr), _)| format!("{} reached {addr}", ns.name()))
        .collect();
    assert!(leaks.is_empty(), "traffic that must be blocked got through: {leaks:?}");
}

fn io(e: std::io::Error) -> CniError {
    CniError::Io(e.to_string())
}

/// Listen on `bind` inside `server`, connect from `client` to `target` (e.g. the host address and a
/// published port) and return the peer address the server saw. `Err` when the connection is not
/// made within `timeout`, or arrives somewhere else than this listener.
pub fn tcp_via(server: &Path, bind: SocketAddr, client: &Path, target: SocketAddr, timeout: Duration) -> Result<SocketAddr, String> {
    let listener = NetNs::open(server)
        .and_then(|ns| ns.run(|| TcpListener::bind(bind).map_err(io)))
        .map_err(|e| format!("listen on {bind} in {}: {e}", server.display()))?;
    listener.set_nonblocking(true).map_err(|e| e.to_string())?;
    let _stream = NetNs::open(client)
        .and_then(|ns| ns.run(|| TcpStream::connect_timeout(&target, timeout).map_err(io)))
        .map_err(|e| format!("connect to {target} from {}: {e}", client.display()))?;
    let deadline = Instant::now() + Duration::from_secs(1);
    loop {
        match listener.accept() {
            Ok((_conn, peer)) => return Ok(peer),
            Err(e) if e.kind() == ErrorKind::WouldBlock && Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(5));
            }
            Err(e) => return Err(format!("connected to {target}, but nothing arrived on {bind} in {}: {e}", server.display())),
        }
    }
}

/// [`tcp_via`] that must succeed; returns the peer the server saw.
#[track_caller]
pub fn assert_tcp_via(server: &NamedNetns, bind: &str, client: &NamedNetns, target: &str) -> SocketAddr {
    let bind: SocketAddr = bind.parse().unwrap();
    let target: SocketAddr = target.parse().unwrap();
    tcp_via(server.path(), bind, client.path(), target, Duration::from_secs(3))
        .unwrap_or_else(|e| panic!("{} -> {target} -> {} {bind}: {e}", client.name(), server.name()))
}

/// [`tcp_via`] that must fail within a second.
#[track_caller]
pub fn assert_tcp_blocked(server: &NamedNetns, bind: &str, client: &NamedNetns, target: &str) {
    let bind: SocketAddr = bind.parse().unwrap();
    let target: SocketAddr = target.parse().unwrap();
    if let Ok(peer) = tcp_via(server.path(), bind, client.path(), target, Duration::from_secs(1)) {
        panic!("{} reached {} through {target} (seen as {peer}); it must be blocked", client.name(), server.name());
    }
}
