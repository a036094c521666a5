#!/usr/bin/env bash
# Install the Debian packages the tests and the demo need, when they are missing. Needs root.
set -euo pipefail

need=()
command -v ip >/dev/null 2>&1 || need+=(iproute2)
command -v nft >/dev/null 2>&1 || need+=(nftables)
command -v iptables-restore >/dev/null 2>&1 || need+=(iptables)
command -v ping >/dev/null 2>&1 || need+=(iputils-ping)
command -v nc >/dev/null 2>&1 || need+=(netcat-openbsd)
command -v strace >/dev/null 2>&1 || need+=(strace)
command -v cc >/dev/null 2>&1 || need+=(gcc libc6-dev)
# The static release build (scripts/build-release.sh) links glibc's libc.a.
command -v cc >/dev/null 2>&1 && [ "$(cc -print-file-name=libc.a)" = libc.a ] && need+=(libc6-dev)
[ -x /usr/lib/cni/loopback ] || need+=(containernetworking-plugins)

if [ ${#need[@]} -gt 0 ]; then
  if [ "$(id -u)" != 0 ]; then
    echo "missing packages: ${need[*]}; run as root (or install them) first" >&2
    exit 1
  fi
  echo "installing: ${need[*]}" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq "${need[@]}" >/dev/null
fi

if ! command -v cargo >/dev/null 2>&1; then
  echo "cargo not found: install a Rust toolchain (1.88 or later), e.g. with rustup" >&2
  exit 1
fi
