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
cat >"$WORK/net.d/10-demo.conflist" <<JSON
{
  "cniVersion": "1.1.0",
  "name": "demo",
  "plugins": [
    {"type": "loopback"}
  ]
}
JSON

for n in 1 2; do
  c="$ID-c$n"
  ip netns add "$c"
  CONTAINERS+=("$c")
done

step "ADD: loopback for each container"
for c in "${CONTAINERS[@]}"; do
  out=$(cni add demo "/run/netns/$c")
  state=$(ip -n "$c" -br link show lo | awk '{print $2}')
  echo "   $c: lo is $state, result ips: $(echo "$out" | grep -o '"address": *"[^"]*"' | cut -d'"' -f4 | tr '\n' ' ')"
  [ "$state" = UNKNOWN ] || [ "$state" = UP ] || fail "lo of $c is not up"
  ip netns exec "$c" ping -c1 -W1 127.0.0.1 >/dev/null || fail "ping 127.0.0.1 in $c"
done
ok "lo up and answering in every container"

step "CHECK"
for c in "${CONTAINERS[@]}"; do cni check demo "/run/netns/$c" || fail "CHECK $c"; done
ok "CHECK passes"

step "DEL"
for c in "${CONTAINERS[@]}"; do cni del demo "/run/netns/$c" || fail "DEL $c"; done
for c in "${CONTAINERS[@]}"; do
  state=$(ip -n "$c" -br link show lo | awk '{print $2}')
  [ "$state" = DOWN ] || fail "lo of $c still $state after DEL"
done
ok "lo down again, result cache empty: $(ls "$WORK/cache/results" 2>/dev/null | wc -l) entries"

step "teardown"
cleanup
trap - EXIT
ok "namespaces and files removed"
echo
echo "demo passed"
