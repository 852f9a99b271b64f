#!/usr/bin/env bash
# Policy enforcement on a real three-cell platform (control, agents, c2c-cni, nftables), all in
# network namespaces created and removed by the run:
#   - policy add -> enforced on the destination cell, p50/p99 over ROUNDS adds and deletes;
#   - 10,000 policies posted at once -> applied by the destination cell's agent;
#   - TCP connect latency across cells with 10,010 policies vs 10, paired: connects alternate
#     between two destinations on two cells, one holding the 10,000 (which one swaps each round).
#
#   bash bench/policy.sh [ROUNDS] [CONNECTS]        (root; default 100 2000: 100 repetitions, as BENCHMARKS.md asks)
#   REPLICAS=2 bash bench/policy.sh ...              (two control replicas on PostgreSQL: the
#                                                     destination cell watches the replica not written to)
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
[ "$(id -u)" = 0 ] || { echo "bench/policy.sh needs root (network namespaces)" >&2; exit 1; }
cd "$ROOT"
cargo build --release -q --workspace --bins
cargo build --release -q -p c2c-integration --example policy_bench
# The example finds the binaries next to its own directory (target/release).
exec "$ROOT/target/release/examples/policy_bench" "${1:-100}" "${2:-2000}"
