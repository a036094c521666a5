#!/usr/bin/env bash
# Paired A/B of two builds of the plugins on the bridge+portmap ADD chain, for changes too small for
# cnibench's round-level --vs on a VM whose CPU speed drifts (BENCH.md, session 12).
#
#   sudo bash scripts/ab-pair.sh DIR_A DIR_B [N]
#
# Both builds work in one throwaway host namespace, side A on bridge cnipa0 (10.251.0.0/16) and
# side B on cnipb0 (10.252.0.0/16), each with N container namespaces of its own. For container i
# the chain of A and the chain of B run one right after the other, in the order A,B for odd i and
# B,A for even i, so that both sides see the same machine speed. Each plugin is timed from just
# before its exec to its exit. Prints the medians of the per-pair ratios A/B (bridge, portmap,
# chain) and of each side's times, and with N >= 20 the same for the first and the last tenth of
# the containers (growth with the ports attached). Everything it made is removed on exit, also on
# failure.
set -euo pipefail

if [ "$(id -u)" != 0 ]; then
  echo "ab-pair needs root (it creates throwaway network namespaces)" >&2
  exit 1
fi
if [ $# -lt 2 ]; then
  echo "usage: $0 DIR_A DIR_B [N]" >&2
  exit 2
fi
DA=$(realpath "$1")
DB=$(realpath "$2")
N=${3:-60}
for d in "$DA" "$DB"; do
  for p in bridge portmap host-local; do
    [ -x "$d/$p" ] || { echo "ab-pair: no executable $d/$p" >&2; exit 2; }
  done
done

id="abp$$"
work=$(mktemp -d)
host="$id-h"
cleanup() {
  for s in a b; do
    for i in $(seq 1 "$N"); do ip netns del "$id-$s$i" 2>/dev/null || true; done
  done
  ip netns del "$host" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

# Each side runs fresh copies of its plugins. On the VMs this is measured on, where a file's pages
# sit in memory biased one build by up to 5 % for as long as the file stayed put (the same
# binaries came out 4 % slower from one file and 2 % faster from a new copy; BENCH.md, session
# 19): new copies every run, and runs in both orders, keep that from passing for a difference.
for s in a b; do
  src=$([ "$s" = a ] && echo "$DA" || echo "$DB")
  mkdir "$work/bin-$s"
  cp "$src/bridge" "$src/portmap" "$src/host-local" "$work/bin-$s/"
done

ip netns add "$host"
ip -n "$host" link set lo up
for s in a b; do
  for i in $(seq 1 "$N"); do ip netns add "$id-$s$i"; done
done
for s in a b; do
  net=$([ "$s" = a ] && echo 251 || echo 252)
  cat > "$work/bridge-$s.json" <<EOF
{"cniVersion":"1.0.0","name":"abp$s","type":"bridge","bridge":"cnip${s}0","isGateway":true,"ipMasq":true,
 "ipam":{"type":"host-local","ranges":[[{"subnet":"10.$net.0.0/16"}]],"dataDir":"$work/ipam"}}
EOF
done

# One chain: bridge ADD, then portmap ADD with two published ports and bridge's result as
# prevResult. Prints "<bridge us> <portmap us>".
cat > "$work/chain.sh" <<'EOF'
set -euo pipefail
side=$1; dir=$2; i=$3; id=$4; work=$5
ports=$([ "$side" = a ] && echo 20000 || echo 30000)
export CNI_CONTAINERID="c$i" CNI_NETNS="/run/netns/$id-$side$i" CNI_IFNAME=eth0 CNI_PATH="$dir" CNI_COMMAND=ADD
t0=$EPOCHREALTIME
result=$("$dir/bridge" < "$work/bridge-$side.json")
t1=$EPOCHREALTIME
printf '{"cniVersion":"1.0.0","name":"abp%s","type":"portmap","capabilities":{"portMappings":true},"runtimeConfig":{"portMappings":[{"hostPort":%d,"containerPort":80,"protocol":"tcp"},{"hostPort":%d,"containerPort":443,"protocol":"tcp"}]},"prevResult":%s}' \
  "$side" $((ports + 2 * i)) $((ports + 2 * i + 1)) "$result" > "$work/portmap-$side.json"
t2=$EPOCHREALTIME
"$dir/portmap" < "$work/portmap-$side.json" > /dev/null
t3=$EPOCHREALTIME
us() { echo $(( ${2//[.,]/} - ${1//[.,]/} )); }
echo "$(us "$t0" "$t1") $(us "$t2" "$t3")"
EOF

cat > "$work/loop.sh" <<'EOF'
set -euo pipefail
DA=$1; DB=$2; N=$3; id=$4; work=$5
for i in $(seq 1 "$N"); do
  if [ $((i % 2)) = 1 ]; then
    a=$(bash "$work/chain.sh" a "$DA" "$i" "$id" "$work"); b=$(bash "$work/chain.sh" b "$DB" "$i" "$id" "$work")
  else
    b=$(bash "$work/chain.sh" b "$DB" "$i" "$id" "$work"); a=$(bash "$work/chain.sh" a "$DA" "$i" "$id" "$work")
  fi
  echo "$a $b"
done
EOF

ip netns exec "$host" bash "$work/loop.sh" "$work/bin-a" "$work/bin-b" "$N" "$id" "$work" > "$work/pairs"

# Columns: bridge A, portmap A, bridge B, portmap B (us). Medians with sort.
median() { sort -g | awk '{v[NR] = $1} END {if (NR % 2) print v[(NR + 1) / 2]; else print (v[NR / 2] + v[NR / 2 + 1]) / 2}'; }
# col EXPR [FILE]: the median of an awk expression over the pairs (default: all of them).
col() { awk "{print $1}" "${2:-$work/pairs}" | median; }
echo "pairs: $N (A = $DA, B = $DB)"
printf 'median of the pair ratios A/B: bridge %.3f  portmap %.3f  chain %.3f\n' \
  "$(col '$1/$3')" "$(col '$2/$4')" "$(col '($1+$2)/($3+$4)')"
printf 'median ms, A / B: bridge %.2f / %.2f  portmap %.2f / %.2f  chain %.2f / %.2f\n' \
  "$(col '$1/1000')" "$(col '$3/1000')" "$(col '$2/1000')" "$(col '$4/1000')" "$(col '($1+$2)/1000')" "$(col '($3+$4)/1000')"

# By order: the first and the last tenth of the containers, to compare how each side grows with
# the ports attached to its bridge (with N of a few hundred).
if [ "$N" -ge 20 ]; then
  tenth=$((N / 10))
  head -n "$tenth" "$work/pairs" > "$work/first"
  tail -n "$tenth" "$work/pairs" > "$work/last"
  for part in first last; do
    f="$work/$part"
    printf '%-5s tenth: pair ratio A/B bridge %.3f  chain %.3f;  median ms A / B: bridge %.2f / %.2f  chain %.2f / %.2f\n' \
      "$part" "$(col '$1/$3' "$f")" "$(col '($1+$2)/($3+$4)' "$f")" "$(col '$1/1000' "$f")" "$(col '$3/1000' "$f")" \
      "$(col '($1+$2)/1000' "$f")" "$(col '($3+$4)/1000' "$f")"
  done
fi
