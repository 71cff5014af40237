#!/usr/bin/env bash
# The tamper-evident audit trail (issue 15), against a real kmsd whose audit
# file lives on a 256 KiB tmpfs (a disk that can fill up):
#   - kmsctl audit verify passes on the files as written (rotated every 4 KiB,
#     HMAC checkpoints every 5 lines under a key from kmsctl audit key create);
#   - a line deleted, edited, or two swapped: verify names the first bad line;
#     the chain rewritten after an edit (every hash recomputed): the HMAC of
#     the next checkpoint gives it away (with --no-key it would pass);
#   - the disk full with kms.audit.on_failure=refuse: creating a key answers
#     503 audit_unavailable, the backend is not called, readiness names
#     "audit"; space again: served, and the chain verifies whole;
#   - the audit key as a secret-key entry of the keystore (keytool
#     -genseckey, kms.audit.key.alias): kept by kmsctl keystore edits, its
#     checkpoints verify, and not under another key; an alias the keystore
#     lacks is refused at start.
# Stops kmsd by PID and unmounts the tmpfs on exit. Prints "N passed, N failed".
#   audit_chain.sh KMSD KMSCTL DIR
set -u
kmsd=${1:?KMSD} kmsctl=${2:?KMSCTL} dir=${3:?DIR}
root=$(cd "$(dirname "$0")/../.." && pwd)
pass=0 fail=0 pid=
ok() { echo "ok   $1"; pass=$((pass + 1)); }
ko() { echo "FAIL $1"; fail=$((fail + 1)); }
finish() {
  if [ -n "$pid" ]; then
    kill -TERM "$pid" 2>/dev/null
    for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    grep -q 'ERROR: AddressSanitizer\|runtime error:' "$dir/kmsd.log" 2>/dev/null && ko "a sanitizer report in kmsd.log"
  fi
  mountpoint -q "$dir/disk" 2>/dev/null && umount "$dir/disk"
  echo "audit chain: $pass passed, $fail failed"
  [ "$fail" -eq 0 ]
}
trap 'finish; exit $?' EXIT
free_port() { /usr/bin/python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'; }
mountpoint -q "$dir/disk" 2>/dev/null && umount "$dir/disk"
rm -rf "$dir" && mkdir -p "$dir/disk"
mount -t tmpfs -o size=256k,mode=0700 kmsd-audit-test "$dir/disk" ||
  { ko "cannot mount a 256 KiB tmpfs for the audit file (this test runs as root)"; exit 1; }
"$root/deploy/pki/dev-pki.sh" "$dir/pki" >/dev/null
"$kmsctl" audit key create --out "$dir/audit.key" --password-file "$dir/pki/password.txt" >/dev/null ||
  { ko "kmsctl audit key create"; exit 1; }
port=$(free_port) admin=$(free_port)
cat > "$dir/kms.properties" <<PROPS
kms.server.address = 127.0.0.1
kms.server.port = $port
kms.admin.port = $admin
kms.keystore.file = $dir/pki/kms.jks
kms.keystore.password.file = $dir/pki/password.txt
kms.hsm.protocol = soft
kms.hsm.soft.file = $dir/soft-keys.bin
kms.audit.file = $dir/disk/audit.log
kms.audit.key.file = $dir/audit.key
kms.audit.checkpoint.lines = 5
kms.audit.max.size = 4096
kms.audit.keep = 40
kms.audit.flush.ms = 20
PROPS
"$kmsd" --config "$dir/kms.properties" 2>"$dir/kmsd.log" &
pid=$!
for _ in $(seq 100); do
  curl -fsS --max-time 2 --cacert "$dir/pki/rootCA.crt" "https://127.0.0.1:$port/health/live" >/dev/null 2>&1 && break
  kill -0 "$pid" 2>/dev/null || { ko "kmsd did not start: $(tail -3 "$dir/kmsd.log")"; exit 1; }
  sleep 0.2
done
pw=$(cat "$dir/pki/password.txt")
create() { # create SITE -> HTTP status; the body in $dir/body
  curl -sS -o "$dir/body" -w '%{http_code}' --max-time 10 --cacert "$dir/pki/rootCA.crt" \
    --cert "$dir/pki/cmxBackend.p12:$pw" --cert-type P12 -H 'Content-Type: application/json' \
    --data "{\"site_id\":\"$1\"}" "https://127.0.0.1:$port/v1/customer-keys" 2>/dev/null || echo 000
}
files() { # the audit files, oldest first
  local f n
  for n in $(seq 40 -1 1); do f=$dir/disk/audit.log.$n; [ -f "$f" ] && echo "$f"; done
  echo "$dir/disk/audit.log"
}
verify() { "$kmsctl" audit verify --config "$dir/kms.properties" "$@"; }
encrypts() {
  curl -fsS --max-time 5 "http://127.0.0.1:$admin/metrics" |
    awk '$1 ~ /^kms_backend_calls_total\{.*op="encrypt"/ {s += $2} END {print s + 0}'
}

codes=''
for i in $(seq 30); do codes="$codes$(create "site-$i")"; done
[ "$codes" = "$(printf '201%.0s' $(seq 30))" ] && ok "30 customer keys created" || ko "creates: $codes"
sleep 0.3
nfiles=$(files | wc -l)
out=$(verify $(files)) && echo "$out" | grep -q "checkpoints: [1-9][0-9]* verified" &&
  ok "kmsctl audit verify over $nfiles rotated files: $(echo "$out" | tr '\n' ' ')" ||
  ko "verify on the files as written: $out"
[ "$nfiles" -ge 3 ] && ok "the file rotated past 4 KiB and the chain went on ($nfiles files)" ||
  ko "only $nfiles audit files"

# --- tampering, on copies of the newest rotated file
mkdir -p "$dir/t"
src=$(files | tail -2 | head -1)
base=$(basename "$src")
tamper() { # tamper NAME PYTHON: a copy of src changed by PYTHON (lines in L), verified with what came before it
  cp "$src" "$dir/t/$1"
  /usr/bin/python3 - "$dir/t/$1" <<PY
import sys, json, hashlib
p = sys.argv[1]
L = open(p).read().splitlines()
$2
open(p, "w").write("\n".join(L) + "\n")
PY
  verify $(files | sed "\|$src|,\$d") "$dir/t/$1"
}
out=$(tamper deleted 'del L[3]')
[ $? -eq 1 ] && echo "$out" | grep -q "deleted:4: seq" && ok "a line deleted: $out" || ko "deleted line: $out"
out=$(tamper edited 'L[2] = L[2].replace("\"status\":201", "\"status\":403")')
[ $? -eq 1 ] && echo "$out" | grep -q "edited:4: its prev" && ok "a line edited: $out" || ko "edited line: $out"
out=$(tamper swapped 'L[1], L[2] = L[2], L[1]')
[ $? -eq 1 ] && echo "$out" | grep -q "swapped:2: seq" && ok "two lines swapped: $out" || ko "swapped lines: $out"
rewrite='
L[0] = L[0].replace("\"status\":201", "\"status\":403")
for i in range(1, len(L)):
    prev = hashlib.sha256(L[i - 1].encode()).hexdigest()
    L[i] = L[i][:-66] + prev + "\"}"'
out=$(tamper rewritten "$rewrite")
rc=$?
[ $rc -eq 1 ] && echo "$out" | grep -q "its HMAC does not match" &&
  ok "the chain rewritten after an edit: the next checkpoint's HMAC gives it away ($out)" ||
  ko "rewritten chain: rc $rc, $out"
out=$(verify --no-key $(files | sed "\|$src|,\$d") "$dir/t/rewritten") &&
  ok "(without the key the rewritten chain would pass: why kms.audit.key matters)" || ko "--no-key on the rewrite: $out"

# --- the disk fills up: kms.audit.on_failure=refuse (the default)
dd if=/dev/zero of="$dir/disk/filler" bs=4k 2>/dev/null
# why a loop: lines still fit in the audit file's last page; the first write that fails turns refusing on
s=''
for i in $(seq 100); do s=$(create "full-$i"); [ "$s" = 503 ] && break; done
e1=$(encrypts)
s2=$(create full-after-1) s3=$(create full-after-2)
e2=$(encrypts)
code=$(/usr/bin/python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["error"]["code"])' "$dir/body" 2>/dev/null)
[ "$s" = 503 ] && [ "$s2" = 503 ] && [ "$s3" = 503 ] && [ "$code" = audit_unavailable ] &&
  ok "disk full: creating a key answers 503 audit_unavailable (from the request after the first failed write, $i)" ||
  ko "disk full: $s $s2 $s3 $code $(cat "$dir/body")"
[ "$e2" = "$e1" ] && ok "no key is made while refusing (backend encrypt calls stay at $e1)" ||
  ko "backend encrypt calls $e1 -> $e2 while refusing"
ready=$(curl -sS --max-time 5 --cacert "$dir/pki/rootCA.crt" "https://127.0.0.1:$port/health/ready")
echo "$ready" | grep -q '"audit"' && ok "readiness names it: $ready" || ko "readiness: $ready"
rm -f "$dir/disk/filler"
s=''
for _ in $(seq 30); do s=$(create after-space); [ "$s" = 201 ] && break; sleep 0.1; done
[ "$s" = 201 ] && ok "space again: served" || ko "after freeing space: $s"
kill -TERM "$pid"
for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
pid=
out=$(verify $(files)) && ok "after the full disk the chain verifies whole: $(echo "$out" | head -1)" ||
  ko "verify after the full disk: $out"
grep -q '"outcome":"audit_unavailable"' $(files) && ok "the refusals themselves are in the trail (written once space came back)" ||
  ko "no audit line for the refused requests"

# --- the audit key as a secret-key entry of the keystore (kms.audit.key.alias)
pid=
export KS_PW=$pw
keytool -J-XX:TieredStopAtLevel=1 -J-XX:+UseSerialGC -genseckey -alias kmsaudit -keyalg HmacSHA256 -keysize 256 \
  -keystore "$dir/pki/kms.jks" -storepass:env KS_PW >/dev/null 2>&1 || ko "keytool -genseckey into the keystore"
# a kmsctl edit of the keystore keeps the secret-key entry (keytool reads it back)
out=$("$kmsctl" keystore import-cert extra-ca "$dir/pki/rootCA.crt" --config "$dir/kms.properties" 2>&1)
keytool -J-XX:TieredStopAtLevel=1 -J-XX:+UseSerialGC -list -keystore "$dir/pki/kms.jks" -storepass:env KS_PW 2>&1 |
  grep -q "^kmsaudit, .*SecretKeyEntry" && ok "kmsctl keystore import-cert keeps the secret-key entry (keytool lists it)" ||
  ko "after kmsctl keystore import-cert: $out; $(keytool -list -keystore "$dir/pki/kms.jks" -storepass:env KS_PW 2>&1 | tail -3)"
"$kmsctl" keystore list --config "$dir/kms.properties" 2>&1 | grep -q "^kmsaudit *SecretKeyEntry" &&
  ok "kmsctl keystore list shows it (never its value)" || ko "kmsctl keystore list: $("$kmsctl" keystore list --config "$dir/kms.properties" 2>&1 | tail -2)"
sed -e '/kms.audit.key.file/d' -e "s|^kms.audit.file = .*|kms.audit.file = $dir/alias-audit.log|" "$dir/kms.properties" \
  > "$dir/alias.properties"
echo "kms.audit.key.alias = kmsaudit" >> "$dir/alias.properties"
out=$(KMS_AUDIT_KEY_ALIAS=nope timeout 20 "$kmsd" --config "$dir/alias.properties" 2>&1)
echo "$out" | grep -q "kms.audit.key.alias .*has no secret-key entry 'nope'" && ok "an alias the keystore lacks: refused at start" ||
  ko "wrong kms.audit.key.alias: $out"
"$kmsd" --config "$dir/alias.properties" 2>"$dir/kmsd-alias.log" &
pid=$!
for _ in $(seq 100); do
  curl -fsS --max-time 2 --cacert "$dir/pki/rootCA.crt" "https://127.0.0.1:$port/health/live" >/dev/null 2>&1 && break
  kill -0 "$pid" 2>/dev/null || { ko "kmsd did not start with kms.audit.key.alias: $(tail -3 "$dir/kmsd-alias.log")"; exit 1; }
  sleep 0.2
done
for i in $(seq 12); do create "alias-$i" >/dev/null; done
kill -TERM "$pid"
for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
pid=
alias_files=$(for n in $(seq 40 -1 1); do f=$dir/alias-audit.log.$n; [ -f "$f" ] && echo "$f"; done; echo "$dir/alias-audit.log")
out=$("$kmsctl" audit verify --config "$dir/alias.properties" $alias_files 2>&1)
n=$(echo "$out" | sed -n 's/^checkpoints: \([0-9]*\) verified.*/\1/p')
[ "${n:-0}" -ge 2 ] && ok "checkpoints under the keystore's secret key verify: $(echo "$out" | tr '\n' ' ')" ||
  ko "verify with kms.audit.key.alias: $out"
out=$("$kmsctl" audit verify --config "$dir/kms.properties" $alias_files 2>&1) &&
  ko "the same file verified under the sealed key too: $out" ||
  ok "under another key the first checkpoint fails (the keystore's key signed them): $(echo "$out" | head -1)"
