#!/usr/bin/env bash
# A PKCS#11 token that misbehaves (issue 16): kmsd restarted on the pkcs11
# fixture with the test shim (tests/stand-ins/pkcs11-shim, forwarding to the
# fixture's SoftHSM2 token) as its module, 2 sessions, kms.hsm.timeout.ms=1000.
# The shim injects, on command:
#   - CKR_SESSION_HANDLE_INVALID once: the request still succeeds (a new session);
#   - CKR_DEVICE_ERROR twice: those requests fail (503), later ones succeed;
#   - the device down (every call and C_OpenSession fail): requests fail fast,
#     readiness shows the backend degraded; back up: served again, ready;
#   - a call that takes 3 s: its request gets 504 at about 1 s, another
#     request is served meanwhile, and the session comes back afterwards.
# No request takes longer than the timeout and a second; at the end the
# sessions kmsd holds (counted by the shim) are exactly its 2, none leaked.
# kmsd is restarted on the real module afterwards. Every wait is bounded.
#   pkcs11_failures.sh KMSD SHIM DIR
set -u
kmsd=${1:?KMSD} shim=${2:?SHIM} dir=${3:?DIR}
here=$(cd "$(dirname "$0")" && pwd)
pass=0 fail=0
ok() { echo "ok   $1"; pass=$((pass + 1)); }
ko() { echo "FAIL $1"; fail=$((fail + 1)); }
# shellcheck disable=SC1091
. "$dir/it.env"
export SOFTHSM2_CONF
pki=$KMS_IT_PKI
ctl=$dir.shim.ctl state=$dir.shim.state
finish() {
  # the fixture's kmsd again, on the real module, for whatever runs next
  "$here/harness.sh" restart "$dir" "$kmsd" >/dev/null 2>&1 || ko "restarting kmsd on the real module"
  echo "pkcs11_failures: $pass passed, $fail failed"
  [ "$fail" -eq 0 ]
}
trap 'finish; exit $?' EXIT

echo ok > "$ctl"
rm -f "$state"
P11SHIM_TARGET=$SOFTHSM2_MODULE P11SHIM_CONTROL=$ctl P11SHIM_STATE=$state KMS_HSM_PKCS11_LIBRARY=$shim \
  KMS_HSM_TIMEOUT_MS=1000 KMS_SERVER_THREADS=2 "$here/harness.sh" restart "$dir" "$kmsd" >/dev/null ||
  { ko "kmsd did not start on the shim: $(tail -3 "$dir/kmsd.log")"; exit 1; }

command() { echo "$*" > "$ctl.tmp" && mv "$ctl.tmp" "$ctl"; }
open_sessions() { sed -n 's/.*open=\([0-9]*\) opened=.*/\1/p' "$state"; }
opened() { sed -n 's/.*opened=\([0-9]*\).*/\1/p' "$state"; }
times=$dir.shim.times
: > "$times"
unwrap() { # unwrap: HTTP status of an unwrap through the token; its time goes to $times
  local t0 t1 code
  t0=$(date +%s%N)
  code=$(curl -s -o /dev/null -w '%{http_code}' --max-time 10 --cacert "$pki/rootCA.crt" \
    --cert "$pki/cmxBackend.p12:$KMS_IT_PASSWORD" --cert-type P12 -H 'Content-Type: application/json' \
    -d "{\"wrapped\":\"$wrapped\"}" "https://127.0.0.1:$KMS_IT_PORT/v1/keys/kms-master/unwrap")
  t1=$(date +%s%N)
  echo $(((t1 - t0) / 1000000)) >> "$times"
  echo "$code"
}
until_code() { # until_code WANT SECONDS: seconds until unwrap answers WANT, or "never"
  local start=$SECONDS
  while [ $((SECONDS - start)) -le "$2" ]; do [ "$(unwrap)" = "$1" ] && { echo $((SECONDS - start)); return 0; }; sleep 0.2; done
  echo never; return 1
}
ready() { curl -s --max-time 5 "http://127.0.0.1:$KMS_IT_ADMIN_PORT/health/ready"; }

wrapped=$(curl -s --max-time 10 --cacert "$pki/rootCA.crt" --cert "$pki/cmxBackend.p12:$KMS_IT_PASSWORD" --cert-type P12 \
  -H 'Content-Type: application/json' -d "{\"plaintext\":\"$(head -c 32 /dev/urandom | base64)\"}" \
  "https://127.0.0.1:$KMS_IT_PORT/v1/keys/kms-master/wrap" | /usr/bin/python3 -c 'import json,sys; print(json.load(sys.stdin)["wrapped"])')
[ "$(unwrap)" = 200 ] && [ "$(open_sessions)" = 2 ] && ok "through the shim: served, 2 sessions open" ||
  ko "baseline through the shim: $(unwrap), state $(cat "$state")"

before=$(opened)
command CKR_SESSION_HANDLE_INVALID 1
[ "$(unwrap)" = 200 ] && [ "$(opened)" -gt "$before" ] && [ "$(open_sessions)" = 2 ] &&
  ok "CKR_SESSION_HANDLE_INVALID: the request is served on a new session ($(cat "$state"))" ||
  ko "after CKR_SESSION_HANDLE_INVALID: state $(cat "$state")"

command CKR_DEVICE_ERROR 2
a=$(unwrap) b=$(unwrap)
[ "$a" = 503 ] && [ "$b" = 503 ] && ok "CKR_DEVICE_ERROR: those two requests fail with 503" || ko "device error: $a $b"
t=$(until_code 200 8) && ok "then requests are served again (${t} s: sessions reopened with backoff)" ||
  ko "after the device errors: $(unwrap)"
grep -q "CKR_DEVICE_ERROR" "$dir/kmsd.log" && ok "the log names CKR_DEVICE_ERROR" || ko "no CKR_DEVICE_ERROR in the log"

command down
codes=$(for _ in 1 2 3 4 5; do unwrap; done | sort -u | tr '\n' ' ')
[ "$codes" = "503 " ] && ok "the token down: every request fails (503), none hangs" || ko "token down: $codes"
r=; start=$SECONDS
while [ $((SECONDS - start)) -le 8 ]; do r=$(ready); echo "$r" | grep -q '"backend"' && break; sleep 0.5; done
echo "$r" | grep -q '"backend"' && ok "readiness names the backend degraded" || ko "readiness while down: $r"
command ok
t=$(until_code 200 10) && ok "the token back: served again after ${t} s, no restart" || ko "token back: $(unwrap)"
r=; start=$SECONDS
while [ $((SECONDS - start)) -le 8 ]; do r=$(ready); echo "$r" | grep -q '"status":"ready"' && break; sleep 0.5; done
echo "$r" | grep -q '"status":"ready"' && ok "and ready again" || ko "readiness after: $r"

command slow 3000 1
t0=$(date +%s%N)
slow_code=$(unwrap)
t1=$(date +%s%N)
other=$(unwrap)
ms=$(((t1 - t0) / 1000000))
[ "$slow_code" = 504 ] && [ "$ms" -lt 2000 ] && ok "a call that takes 3 s: its request gets 504 after ${ms} ms (timeout 1 s)" ||
  ko "slow call: $slow_code after $ms ms"
[ "$other" = 200 ] && ok "meanwhile the other session serves" || ko "during the slow call: $other"
sleep 3
[ "$(unwrap)" = 200 ] && [ "$(unwrap)" = 200 ] && ok "once the slow call returned, both sessions serve" ||
  ko "after the slow call: $(unwrap)"
grep -q '"event":"backend.pkcs11.slow"' "$dir/kmsd.log" && ok "logged: backend.pkcs11.slow" || ko "no backend.pkcs11.slow"

command ok
slowest=$(sort -n "$times" | tail -1)
[ "$slowest" -lt 2000 ] && ok "no request took longer than the timeout and a second (slowest ${slowest} ms)" ||
  ko "slowest request: ${slowest} ms"
[ "$(open_sessions)" = 2 ] && ok "no session leaked: $(cat "$state")" || ko "sessions: $(cat "$state")"
pid=$(cat "$dir/kmsd.pid")
kill -TERM "$pid"
for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
[ "$(open_sessions)" = 0 ] && ok "kmsd stopped: every session closed ($(cat "$state"))" || ko "after stop: $(cat "$state")"
