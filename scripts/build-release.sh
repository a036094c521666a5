#!/usr/bin/env bash
# Build the release binaries the way they ship: statically linked, as the reference Go plugins are.
# A plugin is exec'd for every ADD and DEL, so its start-up and resident memory matter. Preferred:
# the musl target (rustup installs it on first use; the plugins bring their own allocator,
# cni_common::arena): bridge starts in 0.57 ms and peaks at 1.8 MiB. Where the musl target cannot be
# had (no rustup, offline): static-pie against glibc's libc.a, 0.83 ms and 2.6 MiB. See
# conformance/BENCH.md. Extra arguments go to cargo (e.g. -q). Prints the directory of the binaries.
set -euo pipefail
cd "$(dirname "$0")/.."

host="$(rustc -vV | sed -n 's/^host: //p')"
arch="${host%%-*}"
musl="$arch-unknown-linux-musl"
triple="$host"
if [[ "$host" == *-linux-gnu ]]; then
  if rustup target list --installed 2>/dev/null | grep -qx "$musl" \
     || rustup target add "$musl" >&2 2>/dev/null; then
    triple="$musl"
  else
    echo "build-release: the $musl target is not available; building static-pie against glibc" >&2
  fi
fi
# musl's memcpy/memmove pay a fixed `rep movsq` cost that dominates the short copies netlink
# messages are made of: route them through cni_common::smallcopy (copies up to 32 bytes inline,
# longer ones to musl). Encoding a portmap ADD's batch: 115 -> 42 us.
# Position-dependent (ET_EXEC, as the reference's binaries are), not static-pie: a static-pie
# plugin relocates itself at every start, writing ~1900 pointers into 10 pages of .data.rel.ro and
# the GOT, each a copy-on-write fault, on every ADD and DEL. Without it a bridge ADD faults 70 pages
# instead of 78, and the paired bridge+portmap chain takes 0.97-0.99x the time (conformance/BENCH.md,
# sessions 18 and 19). What it gives up: the executable's own code and data are not placed at random
# (its stack, heap and mappings still are).
# SHA-512 (the firewall's owner marks and chain names) in plain code: the sha2 crate's default
# picks its AVX2 code at run time with `cpuid`, which a virtual machine traps (three of them took
# ~30 us of every bridge, portmap and isolation process here; BENCH.md, session 19). The digests
# are of a few short strings; the portable code hashes them in about a microsecond.
extra='--cfg sha2_backend="soft"'
if [[ "$triple" == *-musl ]]; then
  extra="$extra -C relocation-model=static --cfg cni_wrap_memcpy -C link-arg=-Wl,--wrap=memcpy -C link-arg=-Wl,--wrap=memmove"
fi
# An explicit --target keeps the flags off build scripts and proc-macros, which must stay dynamic.
RUSTFLAGS="${RUSTFLAGS:-} -C target-feature=+crt-static $extra" \
  cargo build --release --target "$triple" --workspace --bins "$@" >&2
echo "${CARGO_TARGET_DIR:-$PWD/target}/$triple/release"
