#!/usr/bin/env bash
# Revocation that stays current (issue 15), against a real kmsd (the harness's
# PKI: an intermediate CA run with `openssl ca`) fetching its CRL every second
# from a local HTTP server (python3 -m http.server, started and stopped here):
#   - a CRL about to pass its nextUpdate: once past it, the intermediate CA's
#     device is refused (crl_stale: fail closed), its idle kept-alive
#     connection closed by kmsd, and so is every certificate of that CA; readiness names
#     "revocation", kms_crl_stale counts it;
#   - the HTTP server down: the fetch failures are counted, still refused;
#   - the server back with a fresh CRL: the device is served again;
#   - `openssl ca -revoke`: its idle kept-alive connection closed by kmsd
#     within the interval, refused on a new one, no restart, while the backend (not revoked) is served.
# Every wait is bounded. Prints "N passed, N failed".
#   revocation.sh KMSD DIR
set -u
kmsd=${1:?KMSD} dir=${2:?DIR}
here=$(cd "$(dirname "$0")" && pwd)
pass=0 fail=0 http_pid=
www=$dir.www
ok() { echo "ok   $1"; pass=$((pass + 1)); }
ko() { echo "FAIL $1"; fail=$((fail + 1)); }
http_stop() { [ -n "$http_pid" ] && kill "$http_pid" 2>/dev/null && wait "$http_pid" 2>/dev/null; http_pid=; }
finish() {
  http_stop
  "$here/harness.sh" stop "$dir" >/dev/null 2>&1 || ko "kmsd did not stop cleanly (or a sanitizer report)"
  echo "revocation: $pass passed, $fail failed"
  [ "$fail" -eq 0 ]
}
trap 'finish; exit $?' EXIT
free_port() { /usr/bin/python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'; }
hport=$(free_port)
rm -rf "$www" && mkdir -p "$www"
http_start() {
  /usr/bin/python3 -m http.server "$hport" --bind 127.0.0.1 --directory "$www" >/dev/null 2>&1 &
  http_pid=$!
  for _ in $(seq 50); do curl -s -o /dev/null "http://127.0.0.1:$hport/" && return 0; sleep 0.1; done
  return 1
}
http_start || { ko "the HTTP server did not start"; exit 1; }
KMS_AUTH_CRL_URL="http://127.0.0.1:$hport/crl.pem" KMS_AUTH_CRL_REFRESH=1 \
  "$here/harness.sh" start "$dir" "$kmsd" soft > "$dir.harness.out" 2>&1 || { cat "$dir.harness.out"; exit 1; }
# shellcheck disable=SC1091
. "$dir/it.env"
pki=$KMS_IT_PKI
pid=$(cat "$dir/kmsd.pid")
gencrl() { # gencrl OUT [ARGS]: a CRL of the intermediate CA
  local out=$1; shift
  (cd "$pki" && openssl ca -batch -config extra.cnf -cert intermediateCA.crt -keyfile intermediateCA.key -gencrl \
     -out "$out.tmp" "$@" >/dev/null 2>&1) && mv "$out.tmp" "$out"
}
metric() { curl -s --max-time 5 "http://127.0.0.1:$KMS_IT_ADMIN_PORT/metrics" | awk -v m="$1" '$1 == m {print $2}'; }

start_dev() {
  [ -n "${DEV_PID:-}" ] && { eval "exec ${DEV[1]}>&-"; wait "$DEV_PID" 2>/dev/null; }
  coproc DEV { /usr/bin/python3 -u "$here/keepalive_client.py" "$pki" "$KMS_IT_PORT" cmxDevice20261122; }
}
start_dev
kept() { echo >&"${DEV[1]}"; local r; read -r -t 15 r <&"${DEV[0]}" || r=timeout; echo "$r"; }
idle() { echo idle >&"${DEV[1]}"; local r; read -r -t 20 r <&"${DEV[0]}" || r=timeout; echo "$r"; }
status() { # status CERT: GET /v1/whoami on a new connection
  curl -s -o /dev/null -w '%{http_code}' --max-time 10 --cacert "$pki/rootCA.crt" --cert "$pki/$1.p12:$KMS_IT_PASSWORD" \
    --cert-type P12 "https://127.0.0.1:$KMS_IT_PORT/v1/whoami" || true
}
until_status() { # until_status WANT SECONDS CMD...: the seconds it took, or "never"
  local want=$1 limit=$2 start=$SECONDS; shift 2
  while [ $((SECONDS - start)) -le "$limit" ]; do [ "$("$@")" = "$want" ] && { echo $((SECONDS - start)); return 0; }; sleep 0.25; done
  echo never; return 1
}

gencrl "$www/crl.pem" -crldays 30
[ "$(kept)" = 200 ] && ok "the intermediate CA's device is served (kept-alive connection)" || ko "device before: $(kept)"

# --- a CRL that goes stale in 3 s
gencrl "$www/crl.pem" -crlsec 3
w=$(idle) # why idle: kmsd must close the connection itself, not wait for its next request
[ "${w%% *}" = closed ] && grep -q '"reason":"identity_refused".*crl_stale' "$dir/kmsd.log" &&
  ok "past the CRL's nextUpdate kmsd closes the device's idle kept-alive connection (crl_stale, fail closed; after ${w#* } s)" ||
  ko "stale CRL: the idle kept-alive connection is $w; $(grep conn.closed "$dir/kmsd.log" | tail -1)"
[ "$(status cmxDevice20261122)" = 401 ] && grep -q '"reason":"crl_stale"' "$dir/kmsd.log" &&
  ok "and a new connection of the device is refused (crl_stale)" || ko "stale CRL, new connection: $(status cmxDevice20261122)"
ready=$(curl -s --max-time 5 --cacert "$pki/rootCA.crt" "https://127.0.0.1:$KMS_IT_PORT/health/ready")
echo "$ready" | grep -q '"revocation"' && ok "readiness names it: $ready" || ko "readiness: $ready"
[ "$(metric kms_crl_stale)" = 1 ] && ok "kms_crl_stale 1" || ko "kms_crl_stale $(metric kms_crl_stale)"
[ "$(status cmxBackend)" = 401 ] && ok "so is every certificate of that CA (the backend too: fail closed)" ||
  ko "backend with its CA's CRL stale: $(status cmxBackend)"

# --- the CRL's server down: counted, still refused
before=$(metric 'kms_crl_fetches_total{result="failed"}')
http_stop
sleep 2
after=$(metric 'kms_crl_fetches_total{result="failed"}')
[ "${after:-0}" -gt "${before:-0}" ] && grep -q '"event":"crl.fetch_failed"' "$dir/kmsd.log" &&
  ok "the CRL's server down: fetch failures counted ($before -> $after) and logged" || ko "fetch failures $before -> $after"
[ "$(status cmxDevice20261122)" = 401 ] && ok "meanwhile the device stays refused (no fresh CRL)" ||
  ko "device with the server down: $(status cmxDevice20261122)"

# --- back, with a fresh CRL: served again
gencrl "$www/crl.pem" -crldays 30
http_start || ko "the HTTP server did not start again"
t=$(until_status 200 15 status cmxDevice20261122) && ok "a fresh CRL fetched: the device is served again (${t} s)" ||
  ko "after a fresh CRL: $(status cmxDevice20261122)"

# --- revoked with openssl ca: refused within the interval, no restart
start_dev
[ "$(kept)" = 200 ] && ok "a new kept-alive connection of the device is served" || ko "new kept-alive: $(kept)"
(cd "$pki" && openssl ca -batch -config extra.cnf -cert intermediateCA.crt -keyfile intermediateCA.key \
   -revoke cmxDevice20261122.crt >/dev/null 2>&1) || ko "openssl ca -revoke"
gencrl "$www/crl.pem" -crldays 30
w=$(idle)
[ "${w%% *}" = closed ] && ok "openssl ca -revoke: kmsd closes the device's idle kept-alive connection ${w#* } s later (refresh 1 s)" ||
  ko "revoked device's kept-alive connection is $w"
grep -q '"reason":"identity_refused".*revoked' "$dir/kmsd.log" && ok "logged: conn.closed identity_refused (revoked)" ||
  ko "no conn.closed identity_refused: $(grep conn.closed "$dir/kmsd.log" | tail -1)"
[ "$(status cmxDevice20261122)" = 401 ] && grep -q '"reason":"revoked"' "$dir/kmsd.log" &&
  ok "and refused on a new connection (auth.refused, revoked)" || ko "new connection: $(status cmxDevice20261122)"
[ "$(status cmxBackend)" = 200 ] && ok "the backend, not revoked, is served" || ko "backend after the revocation: $(status cmxBackend)"
[ "$(cat "$dir/kmsd.pid")" = "$pid" ] && kill -0 "$pid" && ok "all without a restart (pid $pid)" || ko "kmsd restarted"
