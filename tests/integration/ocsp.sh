#!/usr/bin/env bash
# OCSP for client certificates (issue 15) against `openssl ocsp` as a real
# responder over the harness's intermediate CA (its `openssl ca` index):
#   - kms.auth.ocsp=soft: a device the responder calls good is served on a
#     kept-alive connection; `openssl ca -revoke`: kmsd closes that idle
#     connection within the refresh interval (1 s), no restart; the responder
#     down: accepted (soft) and logged;
#   - kms.auth.ocsp=hard: the responder down: refused (ocsp_unknown); back:
#     the revoked device stays refused.
# `openssl ocsp -port` listens on every interface, so the test runs in a
# network namespace of its own (unshare -n: only its loopback exists), kmsd
# and the responder both. Needs root (CI runs as root). Every wait is
# bounded; everything is stopped by PID. Prints "N passed, N failed".
#   ocsp.sh KMSD DIR
set -u
if [ -z "${KMS_OCSP_NETNS:-}" ]; then
  exec unshare -n env KMS_OCSP_NETNS=1 "$0" "$@"
fi
unset KMS_OCSP_NETNS # why: kmsd warns about KMS_* variables it does not know
ip link set lo up
kmsd=${1:?KMSD} dir=${2:?DIR}
here=$(cd "$(dirname "$0")" && pwd)
pass=0 fail=0 rpid=
ok() { echo "ok   $1"; pass=$((pass + 1)); }
ko() { echo "FAIL $1"; fail=$((fail + 1)); }
responder_stop() { [ -n "$rpid" ] && kill "$rpid" 2>/dev/null && wait "$rpid" 2>/dev/null; rpid=; }
finish() {
  responder_stop
  [ -n "${DEV_PID:-}" ] && kill "$DEV_PID" 2>/dev/null
  "$here/harness.sh" stop "$dir" >/dev/null 2>&1 || ko "kmsd did not stop cleanly (or a sanitizer report)"
  echo "ocsp: $pass passed, $fail failed"
  [ "$fail" -eq 0 ]
}
trap 'finish; exit $?' EXIT
port=$(/usr/bin/python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()')
KMS_AUTH_OCSP=soft KMS_AUTH_OCSP_URL="http://127.0.0.1:$port" KMS_AUTH_OCSP_REFRESH=1 \
  "$here/harness.sh" start "$dir" "$kmsd" soft > "$dir.harness.out" 2>&1 || { cat "$dir.harness.out"; exit 1; }
# shellcheck disable=SC1091
. "$dir/it.env"
pki=$KMS_IT_PKI
pid=$(cat "$dir/kmsd.pid")
responder_start() {
  (cd "$pki" && exec openssl ocsp -index it-ca/index.txt -port "$port" -rsigner intermediateCA.crt \
     -rkey intermediateCA.key -CA intermediateCA.crt -nmin 1 -ignore_err) >"$dir.ocsp.log" 2>&1 &
  rpid=$!
  # why the log and not a probe connection: the responder serves one connection at a time,
  # without a timeout, so an empty probe would hold it
  for _ in $(seq 50); do grep -q "waiting for OCSP client" "$dir.ocsp.log" 2>/dev/null && return 0; sleep 0.1; done
  return 1
}
status() { # status CERT: GET /v1/whoami on a new connection
  curl -s -o /dev/null -w '%{http_code}' --max-time 10 --cacert "$pki/rootCA.crt" --cert "$pki/$1.p12:$KMS_IT_PASSWORD" \
    --cert-type P12 "https://127.0.0.1:$KMS_IT_PORT/v1/whoami" || true
}
coproc DEV { /usr/bin/python3 -u "$here/keepalive_client.py" "$pki" "$KMS_IT_PORT" cmxDevice20261122; }
kept() { echo >&"${DEV[1]}"; local r; read -r -t 15 r <&"${DEV[0]}" || r=timeout; echo "$r"; }
idle() { echo idle >&"${DEV[1]}"; local r; read -r -t 20 r <&"${DEV[0]}" || r=timeout; echo "$r"; }
until_status() { # until_status WANT SECONDS CMD...: the seconds it took, or "never"
  local want=$1 limit=$2 start=$SECONDS; shift 2
  while [ $((SECONDS - start)) -le "$limit" ]; do [ "$("$@")" = "$want" ] && { echo $((SECONDS - start)); return 0; }; sleep 0.25; done
  echo never; return 1
}

responder_start || { ko "openssl ocsp did not start: $(cat "$dir.ocsp.log")"; exit 1; }
[ "$(kept)" = 200 ] && ! grep -q '"event":"auth.ocsp_unknown"' "$dir/kmsd.log" &&
  ok "soft: the responder says good: the device is served (kept-alive connection)" ||
  ko "device with the responder up: $(kept); $(grep ocsp_unknown "$dir/kmsd.log" | head -1)"
(cd "$pki" && openssl ca -batch -config extra.cnf -cert intermediateCA.crt -keyfile intermediateCA.key \
   -revoke cmxDevice20261122.crt >/dev/null 2>&1) || ko "openssl ca -revoke"
responder_stop
responder_start || ko "openssl ocsp did not start again"
w=$(idle) # why idle: kmsd must close the connection itself, not wait for its next request
[ "${w%% *}" = closed ] && grep -q '"reason":"identity_refused".*revoked' "$dir/kmsd.log" &&
  ok "openssl ca -revoke: kmsd closes the device's idle kept-alive connection ${w#* } s later (refresh 1 s)" ||
  ko "the revoked device's kept-alive connection is $w; $(grep conn.closed "$dir/kmsd.log" | tail -1)"
grep -q '"event":"auth.ocsp_revoked"' "$dir/kmsd.log" && ok "logged: auth.ocsp_revoked" || ko "no auth.ocsp_revoked"
[ "$(status cmxDevice20261122)" = 401 ] && ok "and refused on a new connection" ||
  ko "new connection: $(status cmxDevice20261122)"
responder_stop
[ "$(status cmxDevice)" = 200 ] && grep -q '"event":"auth.ocsp_unknown".*soft: accepted' "$dir/kmsd.log" &&
  ok "soft: the responder down: another device is accepted, and it is logged" ||
  ko "soft with the responder down: $(status cmxDevice)"
[ "$(cat "$dir/kmsd.pid")" = "$pid" ] && ok "all without a restart" || ko "kmsd restarted"

cp "$dir/kmsd.log" "$dir/kmsd-soft.log" # why: the restart starts a new log
KMS_AUTH_OCSP=hard KMS_AUTH_OCSP_URL="http://127.0.0.1:$port" KMS_AUTH_OCSP_REFRESH=1 \
  "$here/harness.sh" restart "$dir" "$kmsd" >/dev/null 2>&1 || ko "harness restart"
s=$(status cmxDevice)
[ "$s" = 401 ] && grep -q '"reason":"ocsp_unknown"' "$dir/kmsd.log" &&
  ok "hard: the responder down: the device is refused (ocsp_unknown)" || ko "hard with the responder down: $s"
responder_start || ko "openssl ocsp did not start again"
sleep 1.5 # why: kmsd asks a responder that failed again after kms.auth.ocsp.refresh (1 s here)
[ "$(status cmxDevice20261122)" = 401 ] && grep -q '"reason":"revoked","detail"' "$dir/kmsd.log" &&
  ok "hard: the responder back: the revoked device is refused as revoked" ||
  ko "hard, responder back: $(status cmxDevice20261122)"
