#!/usr/bin/env bash
# The install guide's kms.properties, as the guide spells it, against a real KMIP
# server (PyKMIP): every key of its property list (SPEC §7) in one file, the
# keystore password in clear as the guide writes it, the HSM given as a URL
# (kms.hsm.server.url=https://host); then the other spellings of the HSM address
# (https://host:port, a bare host, the legacy kmip.server.url/.port), and the
# two mistakes --check-config must catch for kmip1: no kmsClient entry, no CA
# for the HSM. Everything it starts is stopped by PID.
#   guide_properties.sh KMSD KMSCTL DIR
set -uo pipefail
kmsd=${1:?KMSD} kmsctl=${2:?KMSCTL} dir=${3:?DIR}
root=$(cd "$(dirname "$0")/../.." && pwd)
pass=0 fail=0
ok() { echo "ok   $1"; pass=$((pass + 1)); }
ko() { echo "FAIL $1"; fail=$((fail + 1)); }
kmsd_pid=
finish() {
  [ -n "$kmsd_pid" ] && { kill -TERM "$kmsd_pid" 2>/dev/null; wait "$kmsd_pid" 2>/dev/null; }
  [ -f "$dir/pykmip.env" ] && "$root/tests/stand-ins/pykmip/pykmip.sh" stop "$dir" >/dev/null 2>&1
  echo "guide properties: $pass passed, $fail failed"
  [ "$fail" -eq 0 ]
}
trap 'finish; exit $?' EXIT
free_port() { /usr/bin/python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'; }
rm -rf "$dir" && mkdir -p "$dir"
"$root/deploy/pki/dev-pki.sh" "$dir/pki" >/dev/null || { ko "dev PKI"; exit 1; }
"$root/tests/stand-ins/pykmip/pykmip.sh" start "$dir" >/dev/null || { ko "PyKMIP did not start"; exit 1; }
# shellcheck disable=SC1091
. "$dir/pykmip.env"
pw=$(cat "$dir/pki/password.txt")
port=$(free_port) admin=$(free_port)

guide() { # guide HSM_LINES: the guide's property list, each key as the guide spells it
  cat <<PROPS
# kms.properties as the install guide lists its keys
kms.keystore.file=$dir/pki/kms.jks
kms.keystore.password=$pw
kms.keystore.alias=kmsClient
$1
kms.hsm.protocol=kmip1
kms.hsm.vault.namespace=
kms.hsm.vault.auth=token
kms.hsm.vault.auth.renew-before-expiry=30
kms.hsm.vault.auth.azure.role=
kms.hsm.vault.auth.azure.path=/v1/auth/azure/login
kms.hsm.vault.auth.azure.resource=https://vault.hashicorp.com/
kms.cache.type=none
kms.distributed.cache.config.file=
# what this test adds: where to listen (loopback, free ports), the audit file
kms.server.address=127.0.0.1
kms.server.port=$port
kms.admin.port=$admin
kms.audit.file=$dir/audit.log
PROPS
}
check() { # check NAME CONFIG WANT_RC GREP
  local out rc
  out=$("$kmsd" --config "$2" --check-config 2>&1); rc=$?
  if [ "$rc" = "$3" ] && echo "$out" | grep -q -- "$4"; then ok "$1"
  else ko "$1: exit $rc, wanted $3 and '$4' in: $(echo "$out" | tail -3)"; fi
  if echo "$out" | grep -q "config.warning"; then ko "$1: a warning about the guide's keys: $(echo "$out" | grep config.warning | head -2)"; fi
}

# --- the guide's file, HSM as https://host
guide "kms.hsm.server.url=https://localhost
kms.hsm.server.port=$PYKMIP_PORT" > "$dir/kms.properties"
check "--check-config accepts every key of the guide (HSM as https://localhost)" "$dir/kms.properties" 0 \
  "kms.hsm.server.url read as host localhost, port $PYKMIP_PORT"
KMS_CONFIG=$dir/kms.properties "$kmsctl" hsm create-key kms-master >"$dir/create-key.out" 2>&1 &&
  ok "kmsctl hsm create-key kms-master through the guide's configuration" || ko "create-key: $(cat "$dir/create-key.out")"
"$kmsd" --config "$dir/kms.properties" 2>"$dir/kmsd.log" &
kmsd_pid=$!
up=no
for _ in $(seq 150); do
  curl -fsS --max-time 2 --cacert "$dir/pki/rootCA.crt" "https://127.0.0.1:$port/health/ready" >/dev/null 2>&1 && { up=yes; break; }
  kill -0 "$kmsd_pid" 2>/dev/null || break
  sleep 0.2
done
if [ $up = yes ]; then ok "kmsd ready with the guide's configuration against PyKMIP"; else ko "kmsd did not become ready: $(tail -3 "$dir/kmsd.log")"; fi
api() { curl -sS --max-time 10 --cacert "$dir/pki/rootCA.crt" --cert "$dir/pki/$1.p12:$pw" --cert-type P12 \
        -H 'Content-Type: application/json' --data "$3" "https://127.0.0.1:$port$2"; }
field() { /usr/bin/python3 -c 'import json,sys; print(json.load(sys.stdin).get(sys.argv[1],""))' "$1" 2>/dev/null; }
ck=$(api cmxBackend /v1/customer-keys '{"site_id":"guide"}' | field customer_key)
uk=$(api cmxBackend /v1/user-keys "{\"site_id\":\"guide\",\"customer_key\":\"$ck\"}" | field user_key)
wk=$(api cmxBackend /v1/workspace-keys "{\"site_id\":\"guide\",\"customer_key\":\"$ck\",\"user_key\":\"$uk\"}" | field workspace_key)
pt=$(api cmxDevice /v1/workspace-keys/unwrap "{\"site_id\":\"guide\",\"customer_key\":\"$ck\",\"user_key\":\"$uk\",\"workspace_key\":\"$wk\"}" | field plaintext)
[ -n "$pt" ] && ok "customer -> user -> workspace key through PyKMIP, unwrapped with cmxDevice.p12" ||
  ko "hierarchy under the guide's configuration (ck=${ck:0:20} uk=${uk:0:20} wk=${wk:0:20})"
grep -q "\"endpoint\":\"localhost:$PYKMIP_PORT\"" "$dir/kmsd.log" && ok "kmsd reached the KMIP server at localhost:$PYKMIP_PORT" ||
  ko "kmsd's log names no KMIP endpoint localhost:$PYKMIP_PORT"
grep -q "$pw" "$dir/kmsd.log" "$dir/audit.log" && ko "the keystore password reached a log"
kill -TERM "$kmsd_pid"; wait "$kmsd_pid"; rc=$?; kmsd_pid=
[ $rc = 0 ] && ok "kmsd stopped cleanly" || ko "kmsd exited $rc"

# --- the other spellings of the HSM address, each reaching PyKMIP through kmsctl hsm status
variant() { # variant NAME HSM_LINES
  guide "$2" > "$dir/variant.properties"
  check "$1: --check-config" "$dir/variant.properties" 0 "read as host localhost, port $PYKMIP_PORT"
  KMS_CONFIG=$dir/variant.properties "$kmsctl" hsm status >"$dir/status.out" 2>&1 &&
    ok "$1: kmsctl hsm status reaches PyKMIP" || ko "$1: hsm status: $(tail -2 "$dir/status.out")"
}
variant "https://host:port" "kms.hsm.server.url=https://localhost:$PYKMIP_PORT"
variant "bare host" "kms.hsm.server.url=localhost
kms.hsm.server.port=$PYKMIP_PORT"
variant "legacy kmip.server.url/.port" "kmip.server.url=localhost
kmip.server.port=$PYKMIP_PORT"
guide "kms.hsm.server.url=https://localhost:$PYKMIP_PORT
kms.hsm.server.port=5696" > "$dir/conflict.properties"
check "a URL port and another kms.hsm.server.port are refused" "$dir/conflict.properties" 1 "give the port once"
guide "kms.hsm.server.url=http://localhost" > "$dir/http.properties"
check "http:// is refused for KMIP" "$dir/http.properties" 1 "is not KMIP over TLS"

# --- --check-config catches what kmip1 needs in the keystore
cp "$dir/pki/kms.jks" "$dir/no-client.jks"
"$kmsctl" keystore delete kmsClient --keystore "$dir/no-client.jks" --password-file "$dir/pki/password.txt" --backup-dir "$dir/bk" >/dev/null 2>&1
sed "s|^kms.keystore.file=.*|kms.keystore.file=$dir/no-client.jks|" "$dir/kms.properties" > "$dir/no-client.properties"
check "--check-config fails without the kmsClient entry, naming it" "$dir/no-client.properties" 1 "no private-key entry 'kmsClient'"
cp "$dir/pki/kms.jks" "$dir/no-ca.jks"
for a in $("$kmsctl" keystore list --keystore "$dir/no-ca.jks" --password-file "$dir/pki/password.txt" --json | /usr/bin/python3 -c '
import json,sys
for e in json.load(sys.stdin)["entries"]:
    if e["type"] != "PrivateKeyEntry" and e.get("ca"): print(e["alias"])'); do
  "$kmsctl" keystore delete "$a" --keystore "$dir/no-ca.jks" --password-file "$dir/pki/password.txt" --backup-dir "$dir/bk" >/dev/null 2>&1
done
sed "s|^kms.keystore.file=.*|kms.keystore.file=$dir/no-ca.jks|" "$dir/kms.properties" > "$dir/no-ca.properties"
check "--check-config fails without a CA for the HSM, naming kmipSigningCA" "$dir/no-ca.properties" 1 "no trusted CA entry"
