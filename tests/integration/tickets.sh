#!/usr/bin/env bash
# TLS session tickets and their master-key rotation (issue 7), driven the way
# a client sees them: kmsctl bench opens a new connection per request and
# offers the last session it got (--resume).
# With kms.tls.ticket.rotation=1 (seconds), after each rotation the client's
# ticket no longer resumes, so over a 5 s run at least 3 handshakes are full
# ones while the others resume (with the default, 12 h, all but the first
# resume); the rotations are counted in
# kms_tls_ticket_key_rotations_total and logged.
# Prints "N passed, N failed".   tickets.sh KMSD KMSCTL WORK_DIR
set -u
kmsd=$1 kmsctl=$2 work=$3
root=$(cd "$(dirname "$0")/../.." && pwd)
harness=$root/tests/integration/harness.sh
pass=0 fail=0
ok() { echo "ok   $1"; pass=$((pass + 1)); }
bad() { echo "FAIL $1"; fail=$((fail + 1)); }
rm -rf "$work"
mkdir -p "$work"
cleanup() {
  for d in "$work/rotating"; do
    [ -f "$d/kmsd.pid" ] && "$harness" stop "$d" >/dev/null 2>&1
  done
}
trap cleanup EXIT

field() { /usr/bin/python3 -c 'import json,sys; print(json.load(sys.stdin)[sys.argv[1]])' "$1"; }

# run_bench DIR: 5 s of whoami, one connection, a new TLS connection per request
run_bench() {
  # shellcheck disable=SC1091
  . "$1/it.env"
  "$kmsctl" bench --url "https://127.0.0.1:$KMS_IT_PORT" --cert "$KMS_IT_PKI/cmxBackend.p12" \
    --password-file "$KMS_IT_PKI/password.txt" --op whoami --new-conn --resume -c 1 -d 5 -w 0 --json
}

if KMS_TLS_TICKET_ROTATION=1 "$harness" start "$work/rotating" "$kmsd" soft >/dev/null; then
  out=$(run_bench "$work/rotating") || bad "bench against kmsd with rotation failed"
  hs=$(field handshakes <<<"$out") res=$(field resumed <<<"$out")
  full=$((hs - res))
  echo "     rotation every 1 s: $hs handshakes, $res resumed, $full full"
  if [ "$full" -ge 3 ] && [ "$res" -ge 10 ]; then
    ok "with rotation each new master key costs one full handshake ($full full, $res resumed)"
  else
    bad "with rotation: $full full and $res resumed handshakes, want >= 3 full and >= 10 resumed"
  fi
  # shellcheck disable=SC1091
  . "$work/rotating/it.env"
  m=$(curl -fsS --max-time 10 "http://127.0.0.1:$KMS_IT_ADMIN_PORT/metrics" |
    awk '$1 == "kms_tls_ticket_key_rotations_total" {print $2}')
  if [ -n "$m" ] && [ "$m" -ge 3 ]; then
    ok "kms_tls_ticket_key_rotations_total = $m"
  else
    bad "kms_tls_ticket_key_rotations_total = '$m', want >= 3"
  fi
  n=$(grep -c '"tls.ticket_key_rotated"' "$work/rotating/kmsd.log" || true)
  if [ "$n" -ge 3 ]; then ok "rotations logged ($n)"; else bad "rotations logged: $n, want >= 3"; fi
  "$harness" stop "$work/rotating" >/dev/null || bad "kmsd (rotation) did not stop cleanly"
else
  bad "kmsd (rotation) did not start"
fi

echo "tickets: $pass passed, $fail failed"
[ "$fail" -eq 0 ]
