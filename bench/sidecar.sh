#!/usr/bin/env bash
# Sidecar benchmark: c2c-proxy beside HAProxy (1 thread) and plaintext-direct, in one run, via
# ../shared/bench/tls-peers.sh, then the sidecar's memory idle and with 1,000 idle TLS
# connections. Prints ratios against the references measured in the same run.
#
# Usage: bench/sidecar.sh [RESULTS_DIR]      env: PROXIES (default "direct haproxy c2c-proxy"),
#        N_IDLE (1000), and every knob of tls-peers.sh (DURATION, BULK_REPS, ...).
# Needs: apt-get install -y haproxy nginx libnginx-mod-stream stunnel4 hitch wrk curl
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
RESULTS=${1:-/tmp/c2c-bench}
mkdir -p "$RESULTS"
PEERS=${PEERS_SCRIPT:-$ROOT/../shared/bench/tls-peers.sh}
N_IDLE=${N_IDLE:-1000}

cargo build --release -q -p c2c-proxy -p c2c --examples --bins
BIN=$ROOT/target/release

# ---- 1. throughput, handshakes, bulk: side by side
CSV=$RESULTS/sidecar-$(date -u +%Y%m%dT%H%M%SZ).csv
PROXIES=${PROXIES:-"direct haproxy c2c-proxy"} CANDIDATE_NAME=c2c-proxy \
CANDIDATE_CMD="$BIN/c2c-proxy --listen \$LISTEN_ADDR --upstream \$BACKEND_ADDR --cert-dir \$CERTDIR" \
  bash "$PEERS" "$CSV"

python3 - "$CSV" <<'PY'
import csv, sys
rows = {r["proxy"]: r for r in csv.DictReader(open(sys.argv[1]))}
def f(name, col):
    try: return float(rows[name][col])
    except (KeyError, ValueError): return float("nan")
c, h, d = "c2c-proxy", "haproxy", "direct"
print("\nratios (c2c-proxy / reference, same run):")
print(f"  keep-alive req/s      vs haproxy: {f(c,'ka_rps')/f(h,'ka_rps'):.2f}x   (goal >= 1.2x)")
print(f"  proxy CPU us/request  vs haproxy: {f(c,'ka_proxy_cpu_us_per_req')/f(h,'ka_proxy_cpu_us_per_req'):.2f}x   (goal <= 0.8x)")
print(f"  new handshakes/s      vs haproxy: {f(c,'hs_per_s')/f(h,'hs_per_s'):.2f}x   (goal >= 1.0x)")
print(f"  proxy CPU us/handshake vs haproxy: {f(c,'hs_proxy_cpu_us_per_conn')/f(h,'hs_proxy_cpu_us_per_conn'):.2f}x   (goal <= 0.7x)")
print(f"  bulk MB/s             vs direct:  {f(c,'bulk_MBps_med')/f(d,'bulk_MBps_med'):.2f}x   (goal >= 0.8x)")
print(f"  bulk MB/s             vs haproxy: {f(c,'bulk_MBps_med')/f(h,'bulk_MBps_med'):.2f}x   (goal >= 1.2x)")
print(f"  peak RSS under load: c2c-proxy {f(c,'rss_hwm_kb_max')/1024:.1f} MiB, haproxy {f(h,'rss_hwm_kb_max')/1024:.1f} MiB")
PY

# ---- 2. memory: idle, and with N_IDLE idle TLS connections
WORK=$(mktemp -d /tmp/c2c-bench-mem.XXXXXX)
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$WORK"; }
trap cleanup EXIT
ulimit -n 65536 2>/dev/null || true
"$BIN/c2c" certs ca init --dir "$WORK/ca" >/dev/null
"$BIN/c2c" certs issue --ca-dir "$WORK/ca" --out "$WORK/certs" --dns appb.apps.internal --ip 127.0.0.1 >/dev/null

mkfifo "$WORK/backend.in" "$WORK/clients.in"
"$BIN/examples/idle_conns" backend <"$WORK/backend.in" >"$WORK/backend.out" & PIDS+=($!)
exec 7>"$WORK/backend.in"
for _ in $(seq 100); do grep -q listening "$WORK/backend.out" && break; sleep 0.05; done
BACKEND=$(awk '/listening/{print $2}' "$WORK/backend.out")

"$BIN/c2c-proxy" --listen 127.0.0.1:0 --upstream "$BACKEND" --cert-dir "$WORK/certs" 2>"$WORK/proxy.log" & PPID_=$!; PIDS+=($PPID_)
for _ in $(seq 100); do grep -q ' ready ' "$WORK/proxy.log" && break; sleep 0.05; done
ADDR=$(grep -o 'listen=[0-9.:]*' "$WORK/proxy.log" | head -1 | cut -d= -f2)
kb() { awk -v k="$2:" '$1==k{print $2}' "/proc/$1/status"; }
sleep 0.5
IDLE_RSS=$(kb $PPID_ VmRSS)

"$BIN/examples/idle_conns" "$ADDR" "$N_IDLE" "$WORK/ca/ca.pem" appb.apps.internal <"$WORK/clients.in" >"$WORK/clients.out" & PIDS+=($!)
exec 8>"$WORK/clients.in"
for _ in $(seq 600); do grep -q '^open' "$WORK/clients.out" && break; sleep 0.1; done
grep -q '^open' "$WORK/clients.out" || { echo "idle clients did not connect" >&2; exit 1; }
sleep 1
CONN_RSS=$(kb $PPID_ VmRSS); CONN_HWM=$(kb $PPID_ VmHWM)
echo
echo "memory (c2c-proxy, 1 worker):"
echo "  RSS idle:                      $(awk -v k=$IDLE_RSS 'BEGIN{printf "%.1f", k/1024}') MiB   (goal <= 4 MiB)"
echo "  RSS with $N_IDLE idle TLS conns:  $(awk -v k=$CONN_RSS 'BEGIN{printf "%.1f", k/1024}') MiB   (goal <= 16 MiB; peak $(awk -v k=$CONN_HWM 'BEGIN{printf "%.1f", k/1024}') MiB)"
echo "  per idle connection:           $(awk -v a=$IDLE_RSS -v b=$CONN_RSS -v n=$N_IDLE 'BEGIN{printf "%.1f", (b-a)/n}') KiB"

# ---- 3. hot reload: final write of a new pair -> first handshake served with it
echo
"$BIN/examples/rotation_latency" "$BIN/c2c-proxy" 100
