#!/usr/bin/env bash
# What requiring callers' identity costs (issue #24): CPU per full TLS 1.3 handshake at the
# sidecar with client identity off (today's plain handshake) and required (mutual TLS, the
# caller's identity verified and authorized), beside HAProxy and nginx (stream) doing mutual TLS
# with the same certificates (server chain, the instances issuer as the client CA, the same
# client identity). One run, one machine; ratios against this run's own references.
#
# Each server: one process / one worker, in front of an nginx backend serving /hello. Load:
# HS_PAR parallel `openssl s_time -new` loops (a fresh full handshake per connection, never
# resumed, GET /hello). CPU is the server's utime+stime over the window (/proc), divided by the
# handshakes completed.
#
# Usage: bench/identity.sh            env: DURATION (10 s per server), HS_PAR (2), ROUNDS (2)
# Needs: apt-get install -y haproxy nginx libnginx-mod-stream openssl
set -euo pipefail
cd "$(dirname "$0")/.."
DURATION=${DURATION:-10}
HS_PAR=${HS_PAR:-2}
ROUNDS=${ROUNDS:-2}
for t in openssl nginx haproxy; do
  command -v $t >/dev/null || { echo "missing $t (apt-get install -y haproxy nginx libnginx-mod-stream)" >&2; exit 2; }
done
NGX_STREAM_MOD=/usr/lib/nginx/modules/ngx_stream_module.so
[[ -f $NGX_STREAM_MOD ]] || { echo "missing $NGX_STREAM_MOD (libnginx-mod-stream)" >&2; exit 2; }

cargo build --release -q -p c2c-proxy --bins --example identity_certs
BIN=${CARGO_TARGET_DIR:-$PWD/target}/release
W=$(mktemp -d /tmp/c2c-bench-identity.XXXXXX)
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$W"; }
trap cleanup EXIT
"$BIN/examples/identity_certs" "$W/pki"
HOST=127.0.0.1 BPORT=18480 PORT=18443
TCK=$(getconf CLK_TCK)

wait_port() { for _ in $(seq 200); do (exec 3<>/dev/tcp/$HOST/$1) 2>/dev/null && return 0; sleep 0.05; done; return 1; }

mkdir -p "$W/www" "$W/backend"; printf 'hello\n' > "$W/www/hello"
chmod a+rx "$W"; chmod -R a+rX "$W/www"
cat > "$W/backend/nginx.conf" <<EOF
worker_processes 1; daemon off; pid $W/backend/nginx.pid; error_log $W/backend/error.log warn;
events { worker_connections 4096; }
http { access_log off; client_body_temp_path $W/backend/cb; proxy_temp_path $W/backend/pt;
  fastcgi_temp_path $W/backend/ft; uwsgi_temp_path $W/backend/ut; scgi_temp_path $W/backend/st;
  server { listen $HOST:$BPORT; root $W/www; location = /hello { default_type text/plain; } } }
EOF
nginx -p "$W/backend" -e "$W/backend/error.log" -c "$W/backend/nginx.conf" &
PIDS+=($!)
wait_port $BPORT

# cpu_ticks PID...: utime+stime of each (all threads), summed
cpu_ticks() { local s=0; for p in "$@"; do s=$((s + $(awk '{print $14+$15}' /proc/$p/stat))); done; echo $s; }

# measure NAME MTLS(0|1) CMD...: starts the server, loads it, prints "NAME handshakes cpu_us_per_hs"
measure() {
  local name=$1 mtls=$2; shift 2
  "$@" > "$W/$name.log" 2>&1 &
  local pid=$!; PIDS+=($pid)
  wait_port $PORT || { echo "$name did not start" >&2; cat "$W/$name.log" >&2; exit 3; }
  sleep 0.3
  local procs=($pid $(pgrep -P $pid || true))
  local client=()
  [[ $mtls == 1 ]] && client=(-cert "$W/pki/client.crt" -key "$W/pki/client.key")
  # A refused handshake would count as nothing: one request must be served first.
  printf 'GET /hello HTTP/1.0\r\n\r\n' | openssl s_client -connect $HOST:$PORT -tls1_3 \
      -CAfile "$W/pki/root.pem" "${client[@]}" -servername appb.apps.internal -quiet 2>/dev/null \
      | grep -q '^hello' || { echo "$name: GET /hello not served" >&2; cat "$W/$name.log" >&2; exit 4; }
  local before; before=$(cpu_ticks "${procs[@]}")
  local loads=()
  for k in $(seq $HS_PAR); do
    openssl s_time -connect $HOST:$PORT -new -time "$DURATION" -www /hello "${client[@]}" \
      -CAfile "$W/pki/root.pem" > "$W/$name.s_time.$k" 2>&1 &
    loads+=($!)
  done
  wait "${loads[@]}" || true
  local after; after=$(cpu_ticks "${procs[@]}")
  local n; n=$(cat "$W/$name".s_time.* | awk '/connections in [0-9.]+s;/{s+=$1} END{print s+0}')
  kill $pid 2>/dev/null || true; wait $pid 2>/dev/null || true
  for p in "${procs[@]}"; do kill $p 2>/dev/null || true; done
  rm -f "$W/$name".s_time.*
  local us; us=$(awk -v t=$((after-before)) -v n=$n -v tck=$TCK 'BEGIN{ if (n>0) printf "%.1f", t*1e6/tck/n; else print "nan" }')
  echo "$name $n $us"
  sleep 0.3
}

c2c() {
  cp "$W/pki/access-$1.json" "$W/pki/certs/access.json"
  exec "$BIN/c2c-proxy" --listen $HOST:$PORT --upstream $HOST:$BPORT --cert-dir "$W/pki/certs"
}
haproxy_mtls() {
  cat > "$W/haproxy.cfg" <<EOF
global
  nbthread 1
  maxconn 8000
defaults
  mode tcp
  timeout connect 5s
  timeout client 30s
  timeout server 30s
frontend fe
  bind $HOST:$PORT ssl crt $W/pki/server.pem ca-file $W/pki/clientca.pem verify required ssl-min-ver TLSv1.3
  default_backend be
backend be
  server app $HOST:$BPORT
EOF
  exec haproxy -db -f "$W/haproxy.cfg"
}
nginx_mtls() {
  mkdir -p "$W/ngx"
  cat > "$W/ngx/nginx.conf" <<EOF
load_module $NGX_STREAM_MOD;
worker_processes 1; daemon off; pid $W/ngx/nginx.pid; error_log $W/ngx/error.log warn;
events { worker_connections 4096; }
stream { server { listen $HOST:$PORT ssl; ssl_protocols TLSv1.3;
  ssl_certificate $W/pki/server.crt; ssl_certificate_key $W/pki/server.key;
  ssl_client_certificate $W/pki/clientca.pem; ssl_verify_client on; ssl_verify_depth 2;
  proxy_pass $HOST:$BPORT; } }
EOF
  exec nginx -p "$W/ngx" -e "$W/ngx/error.log" -c "$W/ngx/nginx.conf"
}

OUT=$W/results
for r in $(seq $ROUNDS); do
  measure c2c-plain 0 c2c off >> "$OUT"
  measure c2c-mtls 1 c2c required >> "$OUT"
  measure haproxy-mtls 1 haproxy_mtls >> "$OUT"
  measure nginx-mtls 1 nginx_mtls >> "$OUT"
done
echo "CPU per full TLS 1.3 handshake (GET /hello, HS_PAR=$HS_PAR, ${DURATION}s x $ROUNDS rounds; median of rounds)"
med() { awk -v k=$1 '$1==k{print $3}' "$OUT" | sort -n | awk '{a[NR]=$1} END{print a[int((NR+1)/2)]}'; }
total() { awk -v k=$1 '$1==k{s+=$2} END{print s+0}' "$OUT"; }
printf "%-14s %12s %18s\n" server handshakes cpu_us/handshake
for k in c2c-plain c2c-mtls haproxy-mtls nginx-mtls; do
  printf "%-14s %12d %18.1f\n" $k "$(total $k)" "$(med $k)"
done
awk -v plain="$(med c2c-plain)" -v mtls="$(med c2c-mtls)" -v h="$(med haproxy-mtls)" -v n="$(med nginx-mtls)" 'BEGIN{
  best = (h < n) ? h : n; name = (h < n) ? "haproxy" : "nginx";
  printf "\nc2c mutual TLS / c2c plain:              %.2fx (goal <= 1.3x)\n", mtls/plain;
  printf "c2c mutual TLS / best peer mutual TLS (%s): %.2fx (goal <= 0.6x)\n", name, mtls/best }'
