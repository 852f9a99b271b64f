#!/usr/bin/env bash
# Sidecar benchmark: c2c-proxy beside HAProxy and nginx (stream; 1 worker each) and
# plaintext-direct, in one run, via ../shared/bench/tls-peers.sh, then the sidecar's memory idle
# and with 1,000 idle TLS connections, then the hot-reload latency. Prints the figures of issue
# #15 as one table: c2c-proxy, each peer, and c2c-proxy / the best peer, all from this run.
#
# Usage: bench/sidecar.sh [RESULTS_DIR]
#   env: PROXIES (default "direct haproxy nginx-stream c2c-proxy"), N_IDLE (1000),
#        BASELINE_BIN=path/to/an/older/c2c-proxy: measured too, in the same run (a `baseline`
#        column), to show what a change moved; and every knob of tls-peers.sh (DURATION, ...).
# Needs: apt-get install -y haproxy nginx libnginx-mod-stream stunnel4 hitch wrk curl
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
RESULTS=${1:-/tmp/c2c-bench}
mkdir -p "$RESULTS"
PEERS=${PEERS_SCRIPT:-$ROOT/../shared/bench/tls-peers.sh}
N_IDLE=${N_IDLE:-1000}
BASELINE_BIN=${BASELINE_BIN:-}

cargo build --release -q -p c2c-proxy -p c2c --examples --bins
BIN=${CARGO_TARGET_DIR:-$ROOT/target}/release

# ---- 1. keep-alive requests, handshakes, bulk: side by side
CSV=$RESULTS/sidecar-$(date -u +%Y%m%dT%H%M%SZ).csv
PROXIES=${PROXIES:-"direct haproxy nginx-stream c2c-proxy"} CANDIDATE_NAME=c2c-proxy \
CANDIDATE_CMD="$BIN/c2c-proxy --listen \$LISTEN_ADDR --upstream \$BACKEND_ADDR --cert-dir \$CERTDIR" \
  bash "$PEERS" "$CSV"
if [[ -n $BASELINE_BIN ]]; then
  PROXIES=baseline CANDIDATE_NAME=baseline \
  CANDIDATE_CMD="$BASELINE_BIN --listen \$LISTEN_ADDR --upstream \$BACKEND_ADDR --cert-dir \$CERTDIR" \
    bash "$PEERS" "$CSV"
fi

# ---- 2. memory: idle, and with N_IDLE idle TLS connections
WORK=$(mktemp -d /tmp/c2c-bench-mem.XXXXXX)
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$WORK"; }
trap cleanup EXIT
ulimit -n 65536 2>/dev/null || true
"$BIN/c2c" certs ca init --dir "$WORK/ca" >/dev/null
"$BIN/c2c" certs issue --ca-dir "$WORK/ca" --out "$WORK/certs" --dns appb.apps.internal --ip 127.0.0.1 >/dev/null
kb() { awk -v k="$2:" '$1==k{print $2}' "/proc/$1/status"; }

# memory NAME PROXY_BIN: appends "NAME idle_rss_kb rss_with_conns_kb idle_anon_kb" to $WORK/mem
memory() {
  local name=$1 proxy=$2
  mkfifo "$WORK/backend-$name.in" "$WORK/clients-$name.in"
  "$BIN/examples/idle_conns" backend <"$WORK/backend-$name.in" >"$WORK/backend-$name.out" &
  local bpid=$!; PIDS+=($bpid)
  exec 7>"$WORK/backend-$name.in"
  for _ in $(seq 100); do grep -q listening "$WORK/backend-$name.out" && break; sleep 0.05; done
  local backend; backend=$(awk '/listening/{print $2}' "$WORK/backend-$name.out")
  "$proxy" --listen 127.0.0.1:0 --upstream "$backend" --cert-dir "$WORK/certs" 2>"$WORK/proxy-$name.log" &
  local pid=$!; PIDS+=($pid)
  for _ in $(seq 100); do grep -q ' ready ' "$WORK/proxy-$name.log" && break; sleep 0.05; done
  local addr; addr=$(grep -o 'listen=[0-9.:]*' "$WORK/proxy-$name.log" | head -1 | cut -d= -f2)
  sleep 0.5
  local idle anon; idle=$(kb $pid VmRSS); anon=$(kb $pid RssAnon)
  "$BIN/examples/idle_conns" "$addr" "$N_IDLE" "$WORK/ca/ca.pem" appb.apps.internal <"$WORK/clients-$name.in" >"$WORK/clients-$name.out" &
  local cpid=$!; PIDS+=($cpid)
  exec 8>"$WORK/clients-$name.in"
  for _ in $(seq 600); do grep -q '^open' "$WORK/clients-$name.out" && break; sleep 0.1; done
  grep -q '^open' "$WORK/clients-$name.out" || { echo "idle clients did not connect" >&2; exit 1; }
  sleep 1
  echo "$name $idle $(kb $pid VmRSS) $anon" >> "$WORK/mem"
  exec 7>&- 8>&-
  kill "$pid" "$cpid" "$bpid" 2>/dev/null || true
  wait "$pid" "$cpid" "$bpid" 2>/dev/null || true
}
memory c2c-proxy "$BIN/c2c-proxy"
if [[ -n $BASELINE_BIN ]]; then memory baseline "$BASELINE_BIN"; fi

# ---- the table: every figure of issue #15 from this run
python3 "$ROOT/bench/sidecar-table.py" "$CSV" "$WORK/mem" "$N_IDLE"

# ---- 3. hot reload: final write of a new pair -> first handshake served with it
echo
"$BIN/examples/rotation_latency" "$BIN/c2c-proxy" 100
