#!/usr/bin/env bash
# What issue #23's checks cost, against the build before them in the same run: host-port
# connect latency with 1 and 1,000 host ports on the cell, cross-cell connect latency under a
# policy (every VXLAN packet's tag and inner source now checked), policy add/remove ->
# enforced. Each build runs the same example (integration/examples/checks_bench.rs) on a fresh
# two-cell platform in network namespaces; builds alternate, RUNS times each.
#
#   bash bench/checks.sh [ROUNDS] [CONNECTS]     (root; default 50 2000)
#   BASELINE_BIN=DIR   the other build's binaries (default: the commit before issue #23's
#                      work, 119acd8, built in a worktree under /tmp)
#   RUNS=N             runs per build (default 2)
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
[ "$(id -u)" = 0 ] || { echo "bench/checks.sh needs root (network namespaces)" >&2; exit 1; }
cd "$ROOT"
cargo build --release -q --workspace --bins
cargo build --release -q -p c2c-integration --example checks_bench
if [ -z "${BASELINE_BIN:-}" ]; then
  base=/tmp/c2c-checks-baseline
  [ -d "$base" ] || git worktree add -q "$base" 119acd8
  (cd "$base" && CARGO_TARGET_DIR="$base-target" cargo build --release -q --workspace --bins)
  BASELINE_BIN="$base-target/release"
fi
out=$(mktemp -d)
for run in $(seq 1 "${RUNS:-2}"); do
  for build in before after; do
    if [ "$build" = before ]; then dir="$BASELINE_BIN"; else dir="$ROOT/target/release"; fi
    echo "run $run: $build ($dir)" >&2
    C2C_BIN_DIR="$dir" "$ROOT/target/release/examples/checks_bench" "${1:-50}" "${2:-2000}" \
      | tee -a "$out/$build"
  done
done
# Side by side: the median over runs of each measure's p50 and p99, and after/before.
python3 - "$out" <<'PY'
import sys, statistics, collections
d = sys.argv[1]
def load(name):
    m = collections.defaultdict(lambda: collections.defaultdict(list))
    for line in open(f"{d}/{name}"):
        key, *kv = line.split()
        for x in kv:
            k, v = x.split("=")
            if k != "n":
                m[key][k].append(float(v))
    return m
b, a = load("before"), load("after")
print(f"{'measure':32} {'before p50':>11} {'after p50':>10} {'ratio':>6} {'before p99':>11} {'after p99':>10} {'ratio':>6}")
for key in b:
    bb, aa = b[key], a[key]
    p50b, p50a = statistics.median(bb["p50"]), statistics.median(aa["p50"])
    p99b, p99a = statistics.median(bb["p99"]), statistics.median(aa["p99"])
    print(f"{key:32} {p50b:11.1f} {p50a:10.1f} {p50a/p50b:6.2f} {p99b:11.1f} {p99a:10.1f} {p99a/p99b:6.2f}")
PY
