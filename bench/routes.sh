#!/usr/bin/env bash
# Internal routes on the local platform (release build): map-route -> new SAN served by the
# sidecar, unmap-route -> name gone (p50/p99), and the cell DNS's queries/s from a container.
#
#   bash bench/routes.sh [ROUNDS]        (root; default 100 repetitions, as BENCHMARKS.md asks)
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
[ "$(id -u)" = 0 ] || { echo "bench/routes.sh needs root (network namespaces)" >&2; exit 1; }
cd "$ROOT"
cargo build --release -q --workspace --bins
cargo build --release -q -p c2c-integration --example routes_bench
exec "$ROOT/target/release/examples/routes_bench" "${1:-100}"
