#!/usr/bin/env bash
# The main job, end to end: build the plugins, then attach throwaway "containers" (network namespaces)
# to networks made by our plugins, inside a throwaway "host" namespace, prove connectivity, and tear
# everything down. Needs root. Touches nothing outside the namespaces it creates.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "$(id -u)" != 0 ]; then
  echo "the demo needs root (it creates throwaway network namespaces): sudo bash scripts/demo.sh" >&2
  exit 1
fi
bash scripts/deps.sh
echo "== building (release)"
cargo build --release --workspace --bins -q
BIN="$PWD/target/release"

ID="cnidemo-$$"
HOST="$ID-host"
WORK="$(mktemp -d "/tmp/$ID.XXXXXX")"
CONTAINERS=()
cleanup() {
  set +e
  for c in "${CONTAINERS[@]}"; do ip netns del "$c" 2>/dev/null; done
  ip netns del "$HOST" 2>/dev/null
  rm -rf "$WORK"
}
trap cleanup EXIT INT TERM

step() { printf '\n== %s\n' "$*"; }
ok() { printf '   ok: %s\n' "$*"; }
fail() { printf '   FAILED: %s\n' "$*" >&2; exit 1; }

# Run cnitool with our plugins, inside the sandbox host namespace.
cni() {
  NETCONFPATH="$WORK/net.d" CNI_PATH="$BIN" CNI_CACHE_DIR="$WORK/cache" \
    CNI_EXEC_NETNS="/run/netns/$HOST" "$BIN/cnitool" "$@"
}

step "sandbox host namespace $HOST"
ip netns add "$HOST"
ip -n "$HOST" link set lo up

mkdir -p "$WORK/net.d"
# Network "demo": loopback + bridge (demo0, 10.88.0.0/24, gateway on the bridge, masquerade).
cat >"$WORK/net.d/10-demo.conflist" <<JSON
{
  "cniVersion": "1.1.0",
  "name": "demo",
  "plugins": [
    {"type": "loopback"},
    {
      "type": "bridge",
      "bridge": "demo0",
      "isGateway": true,
      "ipMasq": true,
      "hairpinMode": true,
      "ipam": {
        "type": "host-local",
        "dataDir": "$WORK/ipam",
        "ranges": [[{"subnet": "10.88.0.0/24"}]],
        "routes": [{"dst": "0.0.0.0/0"}]
      }
    }
  ]
}
JSON

for n in 1 2; do
  c="$ID-c$n"
  ip netns add "$c"
  CONTAINERS+=("$c")
done

# An "outside world" namespace wired to the host, with no route back to the container subnet:
# replies reach the containers only because their traffic is masqueraded.
EXT="$ID-ext"
ip netns add "$EXT"
CONTAINERS+=("$EXT")
ip -n "$HOST" link add ext0 type veth peer name ext1 netns "$EXT"
ip -n "$HOST" addr add 198.51.100.1/24 dev ext0
ip -n "$HOST" link set ext0 up
ip -n "$EXT" addr add 198.51.100.2/24 dev ext1
ip -n "$EXT" link set ext1 up
ip -n "$EXT" link set lo up

step "ADD: attach two containers to network \"demo\" (loopback + bridge + host-local)"
declare -A ADDR
for c in "$ID-c1" "$ID-c2"; do
  out=$(cni add demo "/run/netns/$c")
  addr=$(echo "$out" | grep -o '"address": *"[^"]*"' | head -1 | cut -d'"' -f4)
  ADDR[$c]=${addr%/*}
  # The container's eth0 is one end of a veth pair; its peer index names the host end.
  peer=$(ip -n "$c" -o link show eth0 | sed -n 's/.*eth0@if\([0-9]*\).*/\1/p')
  hostveth=$(ip -n "$HOST" -o link show | awk -F': ' -v i="$peer" '$1 == i {print $2}' | cut -d@ -f1)
  printf '   %-22s eth0 %-15s  host end %s on bridge demo0\n' "$c" "$addr" "$hostveth"
done
ip -n "$HOST" -br addr show demo0 | awk '{print "   bridge demo0 (gateway):", $3}'

step "connectivity"
ip netns exec "$ID-c1" ping -c1 -W2 "${ADDR[$ID-c2]}" >/dev/null || fail "c1 -> c2"
ok "container 1 pings container 2 (${ADDR[$ID-c2]}) across the bridge"
ip netns exec "$ID-c2" ping -c1 -W2 10.88.0.1 >/dev/null || fail "c2 -> gateway"
ok "container 2 pings its gateway 10.88.0.1"
ip netns exec "$ID-c1" ping -c1 -W2 198.51.100.2 >/dev/null || fail "c1 -> outside (masquerade)"
ok "container 1 reaches the outside namespace 198.51.100.2 through masquerade"

step "CHECK"
for c in "$ID-c1" "$ID-c2"; do cni check demo "/run/netns/$c" || fail "CHECK $c"; done
ok "CHECK passes for both containers"

step "DEL"
for c in "$ID-c1" "$ID-c2"; do cni del demo "/run/netns/$c" || fail "DEL $c"; done
left=$(ip -n "$HOST" -o link show type veth | grep -vc ext0 || true)
[ "$left" = 0 ] || fail "$left veth(s) left in the host"
leases=$(find "$WORK/ipam/demo" -maxdepth 1 -name '10.*' | wc -l)
[ "$leases" = 0 ] || fail "$leases lease(s) left"
ok "no veth, no lease left; bridge demo0 stays for the next container (as with Docker)"

step "teardown"
cleanup
trap - EXIT
ok "namespaces and files removed"
echo
echo "demo passed"
