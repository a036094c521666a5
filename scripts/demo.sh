#!/usr/bin/env bash
# The main job, end to end: build the plugins, then attach throwaway "containers" (network namespaces)
# to two networks made by our plugins, inside a throwaway "host" namespace, prove connectivity,
# published ports, masquerade and isolation, and tear everything down. Needs root. Touches nothing
# outside the namespaces and the temporary directory it creates.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "$(id -u)" != 0 ]; then
  echo "the demo needs root (it creates throwaway network namespaces): sudo bash scripts/demo.sh" >&2
  exit 1
fi
bash scripts/deps.sh
echo "== building (release, static)"
BIN="$(bash scripts/build-release.sh -q)"

ID="cnidemo-$$"
HOST="$ID-host"
EXT="$ID-ext"
C1="$ID-c1" C2="$ID-c2" C3="$ID-c3"
WORK="$(mktemp -d "/tmp/$ID.XXXXXX")"
NAMESPACES=()
cleanup() {
  set +e
  jobs -p | xargs -r kill 2>/dev/null
  for n in "${NAMESPACES[@]}"; do ip netns del "$n" 2>/dev/null; done
  ip netns del "$HOST" 2>/dev/null
  rm -rf "$WORK"
}
trap cleanup EXIT INT TERM

step() { printf '\n== %s\n' "$*"; }
ok() { printf '   ok: %s\n' "$*"; }
fail() { printf '   FAILED: %s\n' "$*" >&2; exit 1; }
in_ns() { local ns=$1; shift; ip netns exec "$ns" "$@"; }

# Run cnitool with our plugins, inside the sandbox host namespace.
cni() {
  NETCONFPATH="$WORK/net.d" CNI_PATH="$BIN" CNI_CACHE_DIR="$WORK/cache" \
    CNI_EXEC_NETNS="/run/netns/$HOST" "$BIN/cnitool" "$@"
}

# Wait (up to 2 s) until something listens on TCP port $2 in namespace $1.
wait_listen() {
  for _ in $(seq 40); do
    [ -n "$(in_ns "$1" ss -Hltn "sport = :$2")" ] && return 0
    sleep 0.05
  done
  return 1
}

# Serve one greeting line on port 80 of container $1, then fetch a line from $3:$4 out of namespace $2.
fetch_published() {
  local server=$1 client=$2 addr=$3 port=$4
  echo "hello from $server" | in_ns "$server" timeout 5 nc -l -p 80 >/dev/null 2>&1 &
  local srv=$!
  wait_listen "$server" 80 || { kill "$srv" 2>/dev/null; return 1; }
  local line
  line=$(in_ns "$client" timeout 3 bash -c "exec 3<>/dev/tcp/$addr/$port && head -n1 <&3" 2>/dev/null) || true
  kill "$srv" 2>/dev/null; wait "$srv" 2>/dev/null || true
  [ "$line" = "hello from $server" ]
}

# Connect from container $1 to port 9000 of the outside namespace; print the peer address the
# outside saw.
source_seen_outside() {
  local client=$1
  in_ns "$EXT" timeout 5 nc -l -p 9000 </dev/null >/dev/null 2>&1 &
  local srv=$!
  wait_listen "$EXT" 9000 || { kill "$srv" 2>/dev/null; return 1; }
  in_ns "$client" timeout 3 bash -c 'exec 3<>/dev/tcp/198.51.100.2/9000 && sleep 1' 2>/dev/null &
  local cli=$! peer=""
  for _ in $(seq 40); do
    peer=$(in_ns "$EXT" ss -Htn state established '( sport = :9000 )' | awk '{print $4}' | head -n1)
    [ -n "$peer" ] && break
    sleep 0.05
  done
  kill "$cli" "$srv" 2>/dev/null; wait "$cli" "$srv" 2>/dev/null || true
  echo "${peer%:*}"
}

step "sandbox host namespace $HOST"
ip netns add "$HOST"
ip -n "$HOST" link set lo up

# Two networks, each: loopback + bridge (gateway on the bridge, masquerade) + portmap + isolation.
mkdir -p "$WORK/net.d"
netconf() { # name bridge subnet
  cat >"$WORK/net.d/$1.conflist" <<JSON
{
  "cniVersion": "1.1.0",
  "name": "$1",
  "plugins": [
    {"type": "loopback"},
    {
      "type": "bridge",
      "bridge": "$2",
      "isGateway": true,
      "ipMasq": true,
      "hairpinMode": true,
      "ipam": {
        "type": "host-local",
        "dataDir": "$WORK/ipam",
        "ranges": [[{"subnet": "$3"}]],
        "routes": [{"dst": "0.0.0.0/0"}]
      }
    },
    {"type": "portmap", "capabilities": {"portMappings": true}},
    {"type": "isolation"}
  ]
}
JSON
}
netconf front demo0 10.88.0.0/24
netconf back demo1 10.89.0.0/24
echo "   network \"front\": bridge demo0, 10.88.0.0/24    network \"back\": bridge demo1, 10.89.0.0/24"
echo "   plugins: loopback, bridge + host-local, portmap, isolation"

for c in "$C1" "$C2" "$C3" "$EXT"; do
  ip netns add "$c"
  NAMESPACES+=("$c")
done

# An "outside world" namespace wired to the host (host 198.51.100.1, outside 198.51.100.2), with no
# route back to the container subnets: replies reach the containers only because their traffic is
# masqueraded.
ip -n "$HOST" link add ext0 type veth peer name ext1 netns "$EXT"
ip -n "$HOST" addr add 198.51.100.1/24 dev ext0
ip -n "$HOST" link set ext0 up
ip -n "$EXT" addr add 198.51.100.2/24 dev ext1
ip -n "$EXT" link set ext1 up
ip -n "$EXT" link set lo up

step "ADD: containers 1 and 2 to \"front\" (container 1 publishes host port 8080 -> 80), container 3 to \"back\""
declare -A ADDR NET CAPS
attach() { # container network [CAP_ARGS]
  local c=$1 net=$2 out addr peer hostveth bridge
  out=$(CAP_ARGS="${3:-}" cni add "$net" "/run/netns/$c") || fail "ADD $c to $net"
  addr=$(echo "$out" | grep -o '"address": *"[^"]*"' | head -1 | cut -d'"' -f4)
  [ -n "$addr" ] || fail "ADD $c: no address in the result"
  ADDR[$c]=${addr%/*}
  NET[$c]=$net
  CAPS[$c]=${3:-}
  # The container's eth0 is one end of a veth pair; its peer index names the host end.
  peer=$(ip -n "$c" -o link show eth0 | sed -n 's/.*eth0@if\([0-9]*\).*/\1/p')
  hostveth=$(ip -n "$HOST" -o link show | awk -F': ' -v i="$peer" '$1 == i {print $2}' | cut -d@ -f1)
  bridge=$(ip -n "$HOST" -o link show "$hostveth" | sed -n 's/.* master \([^ ]*\).*/\1/p')
  printf '   %-17s %-6s eth0 %-15s host end %s on bridge %s\n' "$c" "$net" "$addr" "$hostveth" "$bridge"
}
attach "$C1" front '{"portMappings": [{"hostPort": 8080, "containerPort": 80, "protocol": "tcp"}]}'
attach "$C2" front
attach "$C3" back
for br in demo0 demo1; do
  ip -n "$HOST" -br addr show "$br" | awk '{print "   bridge " $1 " (gateway): " $3}'
done

step "ping within a network"
in_ns "$C1" ping -c1 -W2 "${ADDR[$C2]}" >/dev/null || fail "container 1 -> container 2"
ok "container 1 pings container 2 (${ADDR[$C2]}) across bridge demo0"
in_ns "$C2" ping -c1 -W2 "${ADDR[$C1]}" >/dev/null || fail "container 2 -> container 1"
ok "container 2 pings container 1 (${ADDR[$C1]})"
in_ns "$C3" ping -c1 -W2 10.89.0.1 >/dev/null || fail "container 3 -> its gateway"
ok "container 3 pings its gateway 10.89.0.1"

step "published port (portmap): host port 8080 -> container 1 port 80"
fetch_published "$C1" "$EXT" 198.51.100.1 8080 || fail "outside -> 198.51.100.1:8080 -> container 1"
ok "the outside namespace reaches container 1 through the host address 198.51.100.1:8080"
fetch_published "$C1" "$C3" 198.51.100.1 8080 || fail "container 3 -> 198.51.100.1:8080 -> container 1"
ok "container 3 (network \"back\") reaches it too through the host address, as with Docker"

step "isolation between the networks (these pings must fail)"
if in_ns "$C3" ping -c1 -W1 "${ADDR[$C1]}" >/dev/null 2>&1; then fail "container 3 reached container 1 across networks"; fi
ok "container 3 (back) cannot reach container 1 (front, ${ADDR[$C1]}): blocked"
if in_ns "$C1" ping -c1 -W1 "${ADDR[$C3]}" >/dev/null 2>&1; then fail "container 1 reached container 3 across networks"; fi
ok "container 1 (front) cannot reach container 3 (back, ${ADDR[$C3]}): blocked"

step "masquerade to the outside (the outside namespace has no route to the containers)"
for c in "$C1" "$C3"; do
  in_ns "$c" ping -c1 -W2 198.51.100.2 >/dev/null || fail "$c -> outside"
  seen=$(source_seen_outside "$c") || fail "$c -> outside over TCP"
  [ "$seen" = 198.51.100.1 ] || fail "the outside saw ${seen:-nothing} instead of the host address for $c"
  ok "${NET[$c]}: $c (${ADDR[$c]}) reaches 198.51.100.2, which sees the host address $seen"
done

step "CHECK"
# A runtime passes the same capability args (here the port mapping) to CHECK and DEL as to ADD.
for c in "$C1" "$C2" "$C3"; do CAP_ARGS="${CAPS[$c]}" cni check "${NET[$c]}" "/run/netns/$c" || fail "CHECK $c"; done
ok "CHECK passes for all three containers"

step "DEL"
CAP_ARGS="${CAPS[$C1]}" cni del front "/run/netns/$C1" || fail "DEL $C1"
# a published port goes away with its container
if fetch_published "$C1" "$EXT" 198.51.100.1 8080; then fail "host port 8080 still forwarded after DEL"; fi
ok "host port 8080 no longer forwarded once container 1 is gone"
for c in "$C2" "$C3"; do CAP_ARGS="${CAPS[$c]}" cni del "${NET[$c]}" "/run/netns/$c" || fail "DEL $c"; done
left=$(ip -n "$HOST" -o link show type veth | grep -vc ext0 || true)
[ "$left" = 0 ] || fail "$left veth(s) left in the host"
leases=$(find "$WORK/ipam" -mindepth 2 -maxdepth 2 -name '10.*' | wc -l)
[ "$leases" = 0 ] || fail "$leases lease(s) left"
rules=$({ in_ns "$HOST" nft list ruleset; in_ns "$HOST" iptables-save; } 2>/dev/null | grep -E '10\.8[89]\.|demo[01]' || true)
[ -z "$rules" ] || fail "firewall rules still name the containers or bridges:"$'\n'"$rules"
ok "no veth, no lease, no NAT, port or isolation rule left; bridges demo0/demo1 stay for the next container (as with Docker)"

step "teardown"
cleanup
trap - EXIT
ok "namespaces and files removed"
echo
echo "demo passed"
