#!/usr/bin/env bash
# curl and openssl s_client against c2c-proxy, with certs from `c2c certs`.
# Env: C2C, C2C_PROXY (binaries), APP_ADDR (plaintext app on loopback), WORK (scratch dir).
set -euo pipefail
cd "$WORK"
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; done; }
trap cleanup EXIT
ok() { echo "ok - $*"; }
fail() { echo "not ok - $*"; exit 1; }

# start_proxy CERT_DIR LOG: starts the sidecar on an ephemeral port; sets PORT and PID.
start_proxy() {
  "$C2C_PROXY" --listen 127.0.0.1:0 --upstream "$APP_ADDR" --cert-dir "$1" 2>"$2" &
  PID=$!; pids+=("$PID")
  for _ in $(seq 200); do grep -q ' ready ' "$2" && break; sleep 0.05; done
  grep -q ' ready ' "$2" || { cat "$2"; fail "proxy did not start"; }
  PORT=$(grep -o 'listen=127.0.0.1:[0-9]*' "$2" | head -1 | cut -d: -f2)
}
# san_of PORT [SNI]: the served leaf's subjectAltName line.
san_of() {
  local sni=(-noservername); [ -n "${2:-}" ] && sni=(-servername "$2")
  openssl s_client -connect "127.0.0.1:$1" "${sni[@]}" </dev/null 2>/dev/null \
    | openssl x509 -noout -ext subjectAltName | tail -n +2
}

"$C2C" certs ca init --dir ca >/dev/null
"$C2C" certs issue --ca-dir ca --out certs --dns appb.apps.internal --ip 127.0.0.1 --instance-id inst-0 >/dev/null
start_proxy certs proxy.log
pid0=$PID
url="https://appb.apps.internal:$PORT/"
resolve=(--resolve "appb.apps.internal:$PORT:127.0.0.1")

body=$(curl -sS --cacert ca/ca.pem "${resolve[@]}" "$url")
[ "$body" = "hello from app" ] && ok "curl verifies appb.apps.internal against the platform CA" || fail "curl: $body"

curl -sS -o /dev/null "${resolve[@]}" "$url" 2>/dev/null && fail "curl trusted the cert without the CA"
ok "curl without the platform CA refuses the cert"

for v in tls1_2 tls1_3; do
  out=$(openssl s_client -connect "127.0.0.1:$PORT" -servername appb.apps.internal -"$v" \
        -CAfile ca/ca.pem -verify_hostname appb.apps.internal -verify_return_error </dev/null 2>&1)
  grep -q 'Verify return code: 0 (ok)' <<<"$out" || fail "s_client -$v: $out"
  ok "openssl s_client -$v verifies"
done

# Session resumption: a ticket (TLS 1.3) or session (TLS 1.2) from one connection resumes the
# next one without a full handshake.
for v in tls1_2 tls1_3; do
  s_client=(openssl s_client -connect "127.0.0.1:$PORT" -servername appb.apps.internal -"$v" -CAfile ca/ca.pem)
  # stdin held open briefly: a TLS 1.3 ticket arrives after the handshake.
  (sleep 0.3) | "${s_client[@]}" -sess_out "sess-$v.pem" >/dev/null 2>&1 || true
  [ -s "sess-$v.pem" ] || fail "s_client -$v saved no session"
  out=$((sleep 0.3) | "${s_client[@]}" -sess_in "sess-$v.pem" 2>&1)
  grep -q "^Reused, " <<<"$out" || fail "s_client -$v did not resume: $(grep -E '^(New|Reused)' <<<"$out")"
  ok "openssl s_client -$v resumes a session"
done

for v in tls1 tls1_1; do
  if openssl s_client -connect "127.0.0.1:$PORT" -"$v" -cipher 'DEFAULT:@SECLEVEL=0' </dev/null >/dev/null 2>&1; then
    fail "s_client -$v got a session"
  fi
  ok "openssl s_client -$v is refused"
done
curl -sS -o /dev/null --cacert ca/ca.pem "${resolve[@]}" --tlsv1.1 --tls-max 1.1 "$url" 2>/dev/null && fail "curl TLS 1.1 got through"
ok "curl --tls-max 1.1 is refused"

san_of "$PORT" | grep -q 'DNS:appb.apps.internal' && ok "no SNI: the same cert is served" || fail "no-SNI cert"

"$C2C" certs issue --ca-dir ca --out certs --dns appb.apps.internal --dns appb-v2.apps.internal --ip 127.0.0.1 >/dev/null
for _ in $(seq 200); do san_of "$PORT" appb.apps.internal | grep -q appb-v2.apps.internal && break; sleep 0.02; done
san_of "$PORT" appb.apps.internal | grep -q 'DNS:appb-v2.apps.internal' || fail "new SAN not served"
kill -0 "$pid0" && [ "$PID" = "$pid0" ] || fail "proxy restarted"
body=$(curl -sS --cacert ca/ca.pem --resolve "appb-v2.apps.internal:$PORT:127.0.0.1" "https://appb-v2.apps.internal:$PORT/")
[ "$body" = "hello from app" ] && ok "re-issued cert with a second route served by the same process" || fail "curl v2: $body"

# Key formats: RSA in PKCS#1, ECDSA in SEC1 (both "traditional" PEM), served as plain files.
"$C2C" certs issue --ca-dir ca --out rsa --dns rsa.apps.internal --key-type rsa-2048 >/dev/null
mkdir -p rsa-plain ec-plain
cp rsa/cert.pem rsa-plain/cert.pem
openssl rsa -in rsa/key.pem -traditional -out rsa-plain/key.pem 2>/dev/null
grep -q 'BEGIN RSA PRIVATE KEY' rsa-plain/key.pem || fail "no PKCS#1 key made"
start_proxy rsa-plain rsa.log
body=$(curl -sS --cacert ca/ca.pem --resolve "rsa.apps.internal:$PORT:127.0.0.1" "https://rsa.apps.internal:$PORT/")
[ "$body" = "hello from app" ] && ok "RSA cert with a PKCS#1 key" || fail "rsa: $body"

cp certs/cert.pem ec-plain/cert.pem
openssl ec -in certs/key.pem -out ec-plain/key.pem 2>/dev/null
grep -q 'BEGIN EC PRIVATE KEY' ec-plain/key.pem || fail "no SEC1 key made"
start_proxy ec-plain ec.log
body=$(curl -sS --cacert ca/ca.pem --resolve "appb.apps.internal:$PORT:127.0.0.1" "https://appb.apps.internal:$PORT/")
[ "$body" = "hello from app" ] && ok "ECDSA cert with a SEC1 key" || fail "ec: $body"
