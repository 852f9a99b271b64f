#!/usr/bin/env bash
# Cell DNS beside dnsmasq and unbound, in one run: the same zone (20 apps, 70 instances: 90
# names, 140 A records; the query file asks each name once and one in ten that does not exist)
# served by the agent's DNS code (shim/examples/dns_bench.rs), dnsmasq and unbound (Debian
# packages, one thread each), each pinned to CPU 1, driven by dnsperf (Debian package) pinned to
# CPU 0, all inside a network namespace this script makes (loopback only) and removes.
# For each server and load: queries per second, latency, and the server's CPU per query (its
# utime + stime over the run, from /proc, divided by the queries answered). Medians of ROUNDS.
#
# Usage (root): bench/dns.sh [RESULTS_DIR]
# env: ROUNDS (5), DURATION (seconds per run, 10), SERVERS ("c2c dnsmasq unbound"),
#      BEFORE (another build's target/release/examples/dns_bench: adds the server "before", to
#      show a change's effect in the same run)
# Needs: apt-get install -y dnsperf dnsmasq-base unbound
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
RESULTS=${1:-/tmp/c2c-bench}
ROUNDS=${ROUNDS:-5}
DURATION=${DURATION:-10}
SERVERS=${SERVERS:-"c2c dnsmasq unbound"}
BEFORE=${BEFORE:-}
[ -n "$BEFORE" ] && SERVERS="before $SERVERS"
mkdir -p "$RESULTS"
for t in dnsperf dnsmasq unbound taskset; do
  command -v "$t" >/dev/null || { echo "needs $t: apt-get install -y dnsperf dnsmasq-base unbound" >&2; exit 1; }
done
[ "$(id -u)" = 0 ] || { echo "run as root (it makes a network namespace)" >&2; exit 1; }

cargo build --release -q -p c2c-shim --example dns_bench
BIN=${CARGO_TARGET_DIR:-$ROOT/target}/release/examples/dns_bench

NS=c2cdns-$$
WORK=$(mktemp -d /tmp/c2c-bench-dns.XXXXXX)
SERVER_PID=""
cleanup() {
  [ -n "$SERVER_PID" ] && kill "$SERVER_PID" 2>/dev/null && wait "$SERVER_PID" 2>/dev/null
  ip netns del "$NS" 2>/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT
ip netns add "$NS"
ip -n "$NS" link set lo up
ADDR=127.0.0.1
"$BIN" files "$WORK"

cat >"$WORK/unbound.conf" <<EOF
server:
    interface: $ADDR
    port: 53
    num-threads: 1
    do-daemonize: no
    use-syslog: no
    logfile: ""
    username: ""
    chroot: ""
    directory: "$WORK"
    pidfile: ""
    access-control: 127.0.0.0/8 allow
    do-ip6: no
    verbosity: 0
include: "$WORK/unbound-zone.conf"
EOF

start_server() { # name -> sets SERVER_PID
  case $1 in
    c2c) ip netns exec "$NS" taskset -c 1 "$BIN" serve "$ADDR:53" "$WORK" >"$WORK/c2c.log" 2>&1 & ;;
    before) ip netns exec "$NS" taskset -c 1 "$BEFORE" serve "$ADDR:53" "$WORK" >"$WORK/before.log" 2>&1 & ;;
    dnsmasq) ip netns exec "$NS" taskset -c 1 dnsmasq --keep-in-foreground --no-daemon \
        --no-resolv --no-hosts --addn-hosts="$WORK/hosts" --local=/apps.internal/ \
        --listen-address=$ADDR --bind-interfaces --port=53 --cache-size=0 --user=root \
        --pid-file= --log-facility=- >"$WORK/dnsmasq.log" 2>&1 & ;;
    unbound) ip netns exec "$NS" taskset -c 1 unbound -d -c "$WORK/unbound.conf" >"$WORK/unbound.log" 2>&1 & ;;
  esac
  SERVER_PID=$!
  # The real server process (ip netns exec and taskset exec it: same PID).
  for _ in $(seq 100); do
    ip netns exec "$NS" dnsperf -s $ADDR -d "$WORK/queries" -n 1 -t 1 >/dev/null 2>&1 && return 0
    sleep 0.05
  done
  echo "$1 did not answer; its log:" >&2; cat "$WORK/$1.log" >&2; exit 1
}

cpu_ticks() { awk '{print $14, $15}' "/proc/$1/stat"; }  # user, system

CSV=$RESULTS/dns-$(date -u +%Y%m%dT%H%M%SZ).csv
echo "server,load,round,qps,completed,lost,avg_latency_ms,cpu_us_per_query,user_us_per_query,sys_us_per_query" >"$CSV"
HZ=$(getconf CLK_TCK)
LOADS=("flight100:-q 100" "flight4x64:-c 4 -q 256" "fixed50k:-q 500 -Q 50000" "flight1:-q 1")
for round in $(seq "$ROUNDS"); do
  for server in $SERVERS; do
    start_server "$server"
    for load in "${LOADS[@]}"; do
      name=${load%%:*}; opts=${load#*:}
      before=$(cpu_ticks "$SERVER_PID")
      # shellcheck disable=SC2086
      out=$(ip netns exec "$NS" taskset -c 0 dnsperf -s $ADDR -d "$WORK/queries" -l "$DURATION" $opts 2>&1)
      after=$(cpu_ticks "$SERVER_PID")
      completed=$(awk '/Queries completed:/{print $3}' <<<"$out")
      lost=$(awk '/Queries lost:/{print $3}' <<<"$out")
      qps=$(awk '/Queries per second:/{print $4}' <<<"$out")
      lat=$(awk '/Average Latency/{print $4}' <<<"$out")
      read -r cpu usr sys < <(python3 -c "
b, a, n = '$before'.split(), '$after'.split(), max($completed, 1)
u, s = (int(a[0]) - int(b[0])) / $HZ * 1e6 / n, (int(a[1]) - int(b[1])) / $HZ * 1e6 / n
print(round(u + s, 2), round(u, 2), round(s, 2))")
      echo "$server,$name,$round,$qps,$completed,$lost,$(python3 -c "print(round($lat*1000,3))"),$cpu,$usr,$sys" >>"$CSV"
      printf '%-8s %-10s round %s: %9s qps, avg %6.3f ms, %6s us CPU/query (user %s, sys %s)\n' "$server" "$name" "$round" "$qps" "$(python3 -c "print($lat*1000)")" "$cpu" "$usr" "$sys"
    done
    kill "$SERVER_PID"; wait "$SERVER_PID" 2>/dev/null || true; SERVER_PID=""
  done
done

python3 - "$CSV" <<'PY'
import csv, statistics, sys
rows = list(csv.DictReader(open(sys.argv[1])))
servers = list(dict.fromkeys(r["server"] for r in rows))
loads = list(dict.fromkeys(r["load"] for r in rows))
med = lambda s, l, c: statistics.median(float(r[c]) for r in rows if r["server"] == s and r["load"] == l)
print(f"\nmedians of {len({r['round'] for r in rows})} rounds ({sys.argv[1]}):")
print("| load | " + " | ".join(f"{s} qps | {s} us CPU/query" for s in servers) + " | c2c / best peer (CPU) |")
print("|---" * (2 * len(servers) + 2) + "|")
for l in loads:
    cells = []
    for s in servers:
        cells += [f"{med(s, l, 'qps'):,.0f}", f"{med(s, l, 'cpu_us_per_query'):.2f} ({med(s, l, 'user_us_per_query'):.2f} user)"]
    peers = [med(s, l, "cpu_us_per_query") for s in servers if s not in ("c2c", "before")]
    ratio = f"{med('c2c', l, 'cpu_us_per_query') / min(peers):.2f}x" if "c2c" in servers and peers else "-"
    print(f"| {l} | " + " | ".join(cells) + f" | {ratio} |")
PY
