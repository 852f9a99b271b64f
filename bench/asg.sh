#!/usr/bin/env bash
# The external networker's figures on a real one-cell platform, all in network namespaces the
# run creates and removes: security group change -> enforced (p50/p99), connect latency with
# 1 vs 1,000 rules bound, egress throughput through NAT vs from the cell itself, and the
# traffic log lines a second the agent writes with its CPU per line.
#
#   bash bench/asg.sh [ROUNDS] [CONNECTS]        (root; default 100 2000)
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
[ "$(id -u)" = 0 ] || { echo "bench/asg.sh needs root (network namespaces)" >&2; exit 1; }
cd "$ROOT"
cargo build --release -q --workspace --bins
cargo build --release -q -p c2c-integration --example asg_bench
# The example finds the binaries next to its own directory (target/release).
exec "$ROOT/target/release/examples/asg_bench" "${1:-100}" "${2:-2000}"
