#!/usr/bin/env bash
# Where the sidecar's time per keep-alive request goes: syscalls per request (strace -c on the
# proxy while wrk runs; strace slows it, the counts per request stay what they are), and a
# cpu-clock profile of user and kernel time by symbol (perf record; no hardware counters
# needed). nginx serves /hello as the app; wrk keeps KA_CONNS TLS connections open to the
# sidecar. Everything on 127.0.0.1; every process is this script's and ended by PID.
#
# Usage: bench/sidecar-syscalls.sh [RESULTS_DIR]   env: KA_CONNS (50), DURATION (5)
# Needs: apt-get install -y nginx wrk strace linux-perf
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
RESULTS=${1:-/tmp/c2c-bench}
KA_CONNS=${KA_CONNS:-50}
DURATION=${DURATION:-5}
mkdir -p "$RESULTS"
for t in nginx wrk strace perf taskset; do
  command -v "$t" >/dev/null || { echo "needs $t: apt-get install -y nginx wrk strace linux-perf" >&2; exit 1; }
done
cargo build --release -q -p c2c-proxy -p c2c
BIN=${CARGO_TARGET_DIR:-$ROOT/target}/release

WORK=$(mktemp -d /tmp/c2c-sidecar-prof.XXXXXX)
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$WORK"; }
trap cleanup EXIT

"$BIN/c2c" certs ca init --dir "$WORK/ca" >/dev/null
"$BIN/c2c" certs issue --ca-dir "$WORK/ca" --out "$WORK/certs" --dns appb.apps.internal --ip 127.0.0.1 >/dev/null
cat >"$WORK/nginx.conf" <<EOF
daemon off; worker_processes 1; pid $WORK/nginx.pid; error_log $WORK/nginx.err;
events { worker_connections 4096; }
http { access_log off; keepalive_requests 1000000;
  server { listen 127.0.0.1:18080; location /hello { return 200 "hello\n"; } } }
EOF
taskset -c 0 nginx -c "$WORK/nginx.conf" -p "$WORK" & PIDS+=($!)
taskset -c 1 "$BIN/c2c-proxy" --listen 127.0.0.1:18443 --upstream 127.0.0.1:18080 \
  --cert-dir "$WORK/certs" --admin 127.0.0.1:18003 2>"$WORK/proxy.log" & PROXY=$!; PIDS+=($PROXY)
for _ in $(seq 100); do grep -q ' ready ' "$WORK/proxy.log" && break; sleep 0.05; done
URL=https://127.0.0.1:18443/hello
taskset -c 0 wrk -t1 -c"$KA_CONNS" -d2s "$URL" >/dev/null   # warm up: connections, handshakes

requests() { awk '/requests in/{print $1}' "$1"; }

# 1. syscalls per request
strace -c -f -q -p "$PROXY" -o "$WORK/strace.txt" & ST=$!
sleep 0.5
taskset -c 0 wrk -t1 -c"$KA_CONNS" -d"${DURATION}s" "$URL" >"$WORK/wrk-strace.txt"
kill -INT "$ST"; wait "$ST" 2>/dev/null || true
N=$(requests "$WORK/wrk-strace.txt")
echo "syscalls per keep-alive request ($N requests, $KA_CONNS connections, under strace):"
awk -v n="$N" '$NF ~ /^[a-z_0-9]+$/ && $4 ~ /^[0-9]+$/ && $NF != "total" {
  calls=$4; errs=($5 ~ /^[0-9]+$/ && NF==6) ? $5 : 0;
  printf "  %-16s %6.2f per request (%s of them errors, e.g. EAGAIN)\n", $NF, calls/n, errs ? sprintf("%.2f", errs/n) : "none" }' "$WORK/strace.txt" | sort -k2 -rn
awk -v n="$N" '$NF == "total" { printf "  %-16s %6.2f per request\n", "all", $4/n }' "$WORK/strace.txt"

# 2. where the CPU goes (no strace): user and kernel symbols, sampled
perf record -q -e cpu-clock -F 4999 -g -p "$PROXY" -o "$WORK/perf.data" -- sleep "$DURATION" 2>/dev/null & PR=$!
taskset -c 0 wrk -t1 -c"$KA_CONNS" -d"${DURATION}s" "$URL" >"$WORK/wrk-perf.txt"
wait "$PR" 2>/dev/null || true
N=$(requests "$WORK/wrk-perf.txt")
echo
echo "proxy CPU by object while serving $N requests (perf, cpu-clock):"
perf report -q -i "$WORK/perf.data" --no-children --sort dso --stdio 2>/dev/null \
  | grep -E '^ +[0-9.]+%' | head -8
echo "by symbol (self time):"
perf report -q -i "$WORK/perf.data" --no-children --sort dso,symbol --percent-limit 1.5 --stdio 2>/dev/null \
  | grep -E '^ +[0-9.]+%' | sed -E 's/ +- +- +$//' | head -30
cp "$WORK/strace.txt" "$RESULTS/sidecar-strace-$(date -u +%Y%m%dT%H%M%SZ).txt"
