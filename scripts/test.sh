#!/usr/bin/env bash
# Run every test of the suite. Needs root: tests create throwaway network namespaces.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "$(id -u)" != 0 ]; then
  echo "the tests need root (they create throwaway network namespaces); run: sudo bash scripts/test.sh" >&2
  exit 1
fi
bash scripts/deps.sh
# Integration tests run the plugin binaries, so build them all first.
cargo build --workspace --bins --examples
cargo test --workspace "$@"
