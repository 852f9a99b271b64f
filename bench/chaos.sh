#!/usr/bin/env bash
# The chaos soak (integration/src/chaos/) for MINUTES (default 30): a replicated platform
# (PostgreSQL, two control replicas, three cells) with probe traffic across cells, the policy
# churning several times a second, and agents and a control replica killed (-9) or paused at
# random intervals. Prints minutes run, faults by kind, probes, violations (goal 0),
# convergence p50/p99 overall and after each kind of fault heals, and memory at start and end.
# CI runs the same soak for 2 minutes (integration/tests/root_chaos.rs).
#
#   bash bench/chaos.sh [MINUTES] [SEED]        (root)
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
[ "$(id -u)" = 0 ] || { echo "bench/chaos.sh needs root (network namespaces)" >&2; exit 1; }
cd "$ROOT"
cargo build --release -q --workspace --bins
C2C_SOAK_SECS=$(( ${1:-30} * 60 )) C2C_SOAK_SEED=${2:-100000001} \
    cargo test --release -q -p c2c-integration --test root_chaos -- --nocapture 2>&1 \
    | grep -v '^running\|^$\|has been running'
