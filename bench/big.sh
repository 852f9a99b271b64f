#!/usr/bin/env bash
# A platform the size of the largest foundations, on a real three-cell platform in network
# namespaces (integration/examples/big_bench.rs): APPS apps (20,000) and POLICIES policies
# (100,000), CELL (10,000) of them from or to the app on cell2. Prints how long control took
# them, cell2's agent memory and ruleset size, policy add -> enforced on cell2 with that set
# loaded (p50/p99 over ROUNDS), an agent restart until it enforces again, and control's cold
# start on that database.
#
#   bash bench/big.sh [ROUNDS]                       (root; default 50)
#   APPS=20000 POLICIES=100000 CELL=10000 bash bench/big.sh 50
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
[ "$(id -u)" = 0 ] || { echo "bench/big.sh needs root (network namespaces)" >&2; exit 1; }
cd "$ROOT"
cargo build --release -q --workspace --bins
cargo build --release -q -p c2c-integration --example big_bench
exec "$ROOT/target/release/examples/big_bench" "${1:-50}"
