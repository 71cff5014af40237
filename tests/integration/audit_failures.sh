#!/usr/bin/env bash
# A failing audit write (issue 13): kmsd with kms.audit.file on /dev/full (every
# write fails, ENOSPC) keeps answering, logs audit.write_failed once, and counts
# each failure in kms_audit_write_failures_total (what KmsAuditWriteFailures
# alerts on). Stops its kmsd by PID.   audit_failures.sh KMSD DIR
set -u
kmsd=${1:?KMSD} dir=${2:?DIR}
root=$(cd "$(dirname "$0")/../.." && pwd)
pass=0 fail=0 pid=
ok() { echo "ok   $1"; pass=$((pass + 1)); }
ko() { echo "FAIL $1"; fail=$((fail + 1)); }
finish() {
  [ -n "$pid" ] && { kill -TERM "$pid" 2>/dev/null; wait "$pid" 2>/dev/null; }
  echo "audit failures: $pass passed, $fail failed"
  [ "$fail" -eq 0 ]
}
trap 'finish; exit $?' EXIT
[ -w /dev/full ] || { echo "FAIL: no writable /dev/full to make audit writes fail"; exit 1; }
free_port() { /usr/bin/python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'; }
rm -rf "$dir" && mkdir -p "$dir"
"$root/deploy/pki/dev-pki.sh" "$dir/pki" >/dev/null
port=$(free_port) admin=$(free_port)
cat > "$dir/kms.properties" <<PROPS
kms.server.address = 127.0.0.1
kms.server.port = $port
kms.admin.port = $admin
kms.keystore.file = $dir/pki/kms.jks
kms.keystore.password.file = $dir/pki/password.txt
kms.hsm.protocol = soft
kms.hsm.soft.file = $dir/soft-keys.bin
kms.audit.file = /dev/full
kms.audit.on_failure = continue
PROPS
"$kmsd" --config "$dir/kms.properties" 2>"$dir/kmsd.log" &
pid=$!
for _ in $(seq 100); do
  curl -fsS --max-time 2 --cacert "$dir/pki/rootCA.crt" "https://127.0.0.1:$port/health/live" >/dev/null 2>&1 && break
  kill -0 "$pid" 2>/dev/null || { ko "kmsd did not start: $(tail -3 "$dir/kmsd.log")"; exit 1; }
  sleep 0.2
done
pw=$(cat "$dir/pki/password.txt")
codes=
for _ in 1 2 3; do
  codes="$codes $(curl -sS -o /dev/null -w '%{http_code}' --max-time 5 --cacert "$dir/pki/rootCA.crt" \
                --cert "$dir/pki/cmxBackend.p12:$pw" --cert-type P12 "https://127.0.0.1:$port/v1/whoami")"
done
[ "$codes" = " 200 200 200" ] && ok "requests still answered while every audit write fails" || ko "answers: $codes"
# why: the audit writer batches lines for kms.audit.flush.ms; wait for it (5 s at most)
for _ in $(seq 25); do
  v=$(curl -fsS --max-time 5 "http://127.0.0.1:$admin/metrics" | awk '$1 == "kms_audit_write_failures_total" {print $2}')
  [ "${v:-0}" -ge 3 ] 2>/dev/null && break
  sleep 0.2
done
[ "${v:-0}" -ge 3 ] 2>/dev/null && ok "kms_audit_write_failures_total = $v (one per lost line)" || ko "kms_audit_write_failures_total = '$v', want >= 3"
n=$(grep -c '"event":"audit.write_failed"' "$dir/kmsd.log")
[ "$n" = 1 ] && ok "audit.write_failed logged once, not per line" || ko "audit.write_failed logged $n times"
grep -q '"event":"audit.write_failed".*No space left' "$dir/kmsd.log" && ok "the log line says why (No space left on device)" ||
  ko "audit.write_failed without the reason: $(grep audit.write_failed "$dir/kmsd.log")"
