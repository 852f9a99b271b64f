#!/usr/bin/env bash
# CNI ADD+DEL latency: c2c-cni against Debian's reference plugins (bridge + host-local) in the
# same run, on the same machine, both run exactly as a runtime runs them (env + stdin).
#
#   bash bench/cni.sh [ITERATIONS_PER_ROUND] [ROUNDS]      (root; default 100 x 5)
#
# Needs: apt-get install -y containernetworking-plugins iproute2. Everything happens inside
# network namespaces this script creates (c2cb-*), removed on exit.
set -euo pipefail
N=${1:-100}
ROUNDS=${2:-5}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
REF_DIR=${REF_DIR:-/usr/lib/cni}
[ "$(id -u)" = 0 ] || { echo "bench/cni.sh needs root (network namespaces)" >&2; exit 1; }
[ -x "$REF_DIR/bridge" ] && [ -x "$REF_DIR/host-local" ] || {
  echo "reference plugins missing in $REF_DIR: apt-get install -y containernetworking-plugins" >&2; exit 1; }

if [ -z "${C2C_BENCH_INNER:-}" ]; then
  (cd "$ROOT" && cargo build --release -q -p c2c-shim --bin c2c-cni)
  TAG=c2cb-$$
  WORK=$(mktemp -d)
  cleanup() {
    for ns in $(ip netns list | awk '{print $1}' | grep "^$TAG-" || true); do ip netns del "$ns"; done
    rm -rf "$WORK"
  }
  trap cleanup EXIT
  ip netns add "$TAG-cell"
  for i in $(seq 1 "$N"); do ip netns add "$TAG-c$i"; done
  C2C_BENCH_INNER=1 TAG=$TAG WORK=$WORK ip netns exec "$TAG-cell" bash "$0" "$N" "$ROUNDS"
  exit 0
fi

# --- inside the cell namespace ---
C2C=$ROOT/target/release/c2c-cni
C2C_CONF='{"cniVersion":"1.0.0","name":"c2c","type":"c2c-cni","subnet":"10.255.7.0/24","mtu":1450,"data_dir":"'$WORK'/c2c"}'
REF_CONF='{"cniVersion":"1.0.0","name":"ref","type":"bridge","bridge":"cni0","isGateway":true,"ipMasq":false,"mtu":1450,"ipam":{"type":"host-local","subnet":"10.255.8.0/24","dataDir":"'$WORK'/ref"}}'

# One round of N ADD+DEL pairs; prints each pair's microseconds.
round() { # plugin conf
  local plugin=$1 conf=$2 t0 t1
  for i in $(seq 1 "$N"); do
    t0=$EPOCHREALTIME
    CNI_COMMAND=ADD CNI_CONTAINERID=b$i CNI_NETNS=/run/netns/$TAG-c$i CNI_IFNAME=eth0 CNI_PATH=$REF_DIR \
      "$plugin" <<<"$conf" >/dev/null
    CNI_COMMAND=DEL CNI_CONTAINERID=b$i CNI_NETNS=/run/netns/$TAG-c$i CNI_IFNAME=eth0 CNI_PATH=$REF_DIR \
      "$plugin" <<<"$conf" >/dev/null
    t1=$EPOCHREALTIME
    echo $(( (${t1/./} - ${t0/./}) ))
  done
}
median() { sort -n | awk '{a[NR]=$1} END {print (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2)}'; }

# Warm-up (page cache, the bridge's first creation), then alternate plugins round by round.
round "$C2C" "$C2C_CONF" >/dev/null
round "$REF_DIR/bridge" "$REF_CONF" >/dev/null
ratios=()
printf "%-6s %14s %14s %8s\n" round "c2c-cni (us)" "bridge (us)" ratio
for r in $(seq 1 "$ROUNDS"); do
  c=$(round "$C2C" "$C2C_CONF" | median)
  b=$(round "$REF_DIR/bridge" "$REF_CONF" | median)
  ratio=$(awk -v c="$c" -v b="$b" 'BEGIN {printf "%.2f", c/b}')
  ratios+=("$ratio")
  printf "%-6s %14s %14s %8s\n" "$r" "$c" "$b" "$ratio"
done
printf '%s\n' "${ratios[@]}" | sort -n | awk '{a[NR]=$1} END {printf "median ADD+DEL latency ratio c2c-cni / bridge+host-local: %.2fx (min %.2f, max %.2f) over %d rounds of %d\n", a[int((NR+1)/2)], a[1], a[NR], NR, '"$N"'}'
