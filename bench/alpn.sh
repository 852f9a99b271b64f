#!/usr/bin/env bash
# What offering the app's protocols in ALPN costs the sidecar (issue #29): CPU per full TLS 1.3
# handshake and per keep-alive request with the app's protocol http1 (no ALPN, the sidecar as
# it was) and http1,http2 (h2 agreed), rounds alternating in one run; prints each mode's mean
# and min-max over the rounds, and the ratio beside the reference's own spread.
#
# Usage: bench/alpn.sh [SECS_PER_WINDOW (5)] [ROUNDS (3)]
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release -q -p c2c-proxy --bins --example alpn_cost
BIN=${CARGO_TARGET_DIR:-$PWD/target}/release
"$BIN/examples/alpn_cost" "$BIN/c2c-proxy" "${1:-5}" "${2:-3}"
