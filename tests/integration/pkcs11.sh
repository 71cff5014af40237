#!/usr/bin/env bash
# The PKCS#11 backend against a real SoftHSM2 token (issue 16), on the
# harness's pkcs11 fixture (its token in DIR/softhsm, made by softhsm2-util):
#   - the master key as pkcs11-tool reads it back: sensitive, never
#     extractable, its value refused (CKR_ATTRIBUTE_SENSITIVE);
#   - rotation with kmsctl hsm rotate: new wrapped keys use version 2, keys
#     wrapped under version 1 keep unwrapping, rewrap moves them;
#   - 4 threads of load on the cache-miss unwrap path: no error;
#   - refused at start, each with its reason and never the PIN: a wrong PIN,
#     a missing token, a missing key, an extractable key, a PIN in clear.
# Every wait is bounded. Prints "N passed, N failed".
#   pkcs11.sh KMSD KMSCTL DIR
set -u
kmsd=${1:?KMSD} kmsctl=${2:?KMSCTL} dir=${3:?DIR}
pass=0 fail=0
ok() { echo "ok   $1"; pass=$((pass + 1)); }
ko() { echo "FAIL $1"; fail=$((fail + 1)); }
# shellcheck disable=SC1091
. "$dir/it.env"
export SOFTHSM2_CONF
pki=$KMS_IT_PKI
pin=$(cat "$dir/softhsm/pin")
work=$dir.pkcs11
rm -rf "$work" && mkdir -p "$work"

p11tool() { pkcs11-tool --module "$SOFTHSM2_MODULE" --token-label kmsd-it --login --pin "$pin" "$@" 2>&1; }
api() { # api METHOD PATH [BODY]: the body of the answer, HTTP status on the last line
  curl -s --max-time 10 --cacert "$pki/rootCA.crt" --cert "$pki/cmxBackend.p12:$KMS_IT_PASSWORD" --cert-type P12 \
    -X "$1" -H 'Content-Type: application/json' ${3:+-d "$3"} -w '\n%{http_code}' "https://127.0.0.1:$KMS_IT_PORT$2"
}
field() { /usr/bin/python3 -c 'import json,sys; print(json.loads(sys.stdin.read().strip().rsplit("\n",1)[0])[sys.argv[1]])' "$1"; }
master_of() { # the wrapper kind and master key version a wrapped key records (docs/wrapped-key-format.md)
  /usr/bin/python3 - "$1" <<'PY'
import base64, struct, sys
b = base64.b64decode(sys.argv[1].split(":", 2)[2] + "==")
s = b[35]; n = b[36 + s]
print(b[2], struct.unpack(">I", b[37 + s + n:41 + s + n])[0])
PY
}

# --- the key on the token, as another tool sees it
objs=$(p11tool --list-objects --type secrkey)
block=$(echo "$objs" | awk '/^Secret Key Object/{k=0} /label: *kms-master$/{k=1} k')
echo "$block" | grep -q "Access: *sensitive, always sensitive, never extractable" &&
  ! echo "$block" | grep -Eq "Access:.*[^r] extractable" &&
  ok "pkcs11-tool reads kms-master back: sensitive, always sensitive, never extractable" ||
  ko "kms-master's attributes as pkcs11-tool lists them: $block"
p11tool --read-object --type secrkey --label kms-master -o "$work/value.bin" | grep -q "CKR_ATTRIBUTE_SENSITIVE" &&
  [ ! -s "$work/value.bin" ] && ok "its value cannot be read (CKR_ATTRIBUTE_SENSITIVE)" ||
  ko "reading the key's value: $(ls -la "$work/value.bin" 2>&1)"

# --- rotation
secret=$(head -c 32 /dev/urandom | base64)
r=$(api POST /v1/keys/kms-master/wrap "{\"plaintext\":\"$secret\"}")
w1=$(echo "$r" | field wrapped 2>/dev/null)
[ "$(master_of "$w1")" = "4 1" ] && ok "a key wrapped through the token records wrapper 4 (pkcs11), version 1" ||
  ko "wrap before rotation: $r"
out=$(KMS_CONFIG=$dir/kms.properties "$kmsctl" hsm rotate kms-master 2>&1)
echo "$out" | grep -q "new version 2" && ok "kmsctl hsm rotate kms-master: $out" || ko "rotate: $out"
v=; start=$SECONDS
while [ $((SECONDS - start)) -le 10 ]; do
  r=$(api POST /v1/keys/kms-master/wrap "{\"plaintext\":\"$secret\"}")
  w2=$(echo "$r" | field wrapped 2>/dev/null) && v=$(master_of "$w2")
  [ "$v" = "4 2" ] && break
  sleep 0.5
done
[ "$v" = "4 2" ] && ok "new wrapped keys use version 2 (after $((SECONDS - start)) s, without a restart)" ||
  ko "after the rotation new keys record: $v"
r=$(api POST /v1/keys/kms-master/unwrap "{\"wrapped\":\"$w1\"}")
[ "$(echo "$r" | field plaintext 2>/dev/null)" = "$secret" ] && ok "a key wrapped under version 1 still unwraps" ||
  ko "unwrap of the version-1 key: $r"
r=$(api POST /v1/keys/kms-master/rewrap "{\"wrapped\":\"$w1\"}")
w3=$(echo "$r" | field wrapped 2>/dev/null)
r=$(api POST /v1/keys/kms-master/unwrap "{\"wrapped\":\"$w3\"}")
[ "$(master_of "$w3")" = "4 2" ] && [ "$(echo "$r" | field plaintext 2>/dev/null)" = "$secret" ] &&
  ok "rewrap moves it to version 2, same key" || ko "rewrap: $(master_of "$w3") $r"
r=$(api GET /v1/keys/kms-master)
[ "$(echo "$r" | field current_version)" = 2 ] && [ "$(echo "$r" | field min_version)" = 1 ] &&
  ok "GET /v1/keys/kms-master: current_version 2, min_version 1" || ko "describe: $r"
out=$(KMS_CONFIG=$dir/kms.properties "$kmsctl" hsm show kms-master 2>&1)
[ "$(echo "$out" | grep -c "CKA_SENSITIVE yes, CKA_EXTRACTABLE no")" = 2 ] &&
  ok "kmsctl hsm show: both versions sensitive, not extractable" || ko "kmsctl hsm show: $out"

# --- 4 threads of load on the cache-miss path (every unwrap is a C_Decrypt)
out=$("$kmsctl" bench --url "https://127.0.0.1:$KMS_IT_PORT" --cert "$pki/cmxBackend.p12" \
  --password-file "$pki/password.txt" --cacert "$pki/rootCA.crt" --op unwrap -c 8 -t 4 -d 3 -w 0.5 --json 2>&1)
echo "$out" | /usr/bin/python3 -c '
import json, sys
r = json.load(sys.stdin)
ok = r["requests"] > 100 and r["errors"] == 0 and r["transport_errors"] == 0
print("%d unwraps, %.0f/s, errors %d" % (r["requests"], r["requests_per_s"], r["errors"]))
sys.exit(0 if ok else 1)' > "$work/bench.txt" 2>&1 &&
  ok "4 threads, 8 connections of cache-miss unwraps: $(cat "$work/bench.txt")" ||
  ko "load: $(cat "$work/bench.txt") $out"

# --- refused at start, each saying why, never showing the PIN
refused() { # refused WHAT WANT [ENV...]: kmsd --check-config and kmsd itself exit 1, naming WANT
  local what=$1 want=$2; shift 2
  local check run rc1 rc2
  check=$(env "$@" timeout 20 "$kmsd" --config "$dir/kms.properties" --check-config 2>&1); rc1=$?
  run=$(env "$@" KMS_SERVER_PORT="$spare" KMS_ADMIN_PORT=0 timeout 20 "$kmsd" --config "$dir/kms.properties" 2>&1); rc2=$?
  if [ $rc1 = 1 ] && [ $rc2 = 1 ] && echo "$check" | grep -q "$want" && echo "$run" | grep -q "$want" &&
     ! echo "$check$run" | grep -q "$pin"; then
    ok "$what: refused at start: $(echo "$check" | grep -o "NOT valid: .*" | head -c 200)"
  else
    ko "$what: --check-config exit $rc1, start exit $rc2: $check $run"
  fi
}
spare=$(/usr/bin/python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
echo 00000000 > "$work/wrong-pin" && chmod 600 "$work/wrong-pin"
refused "a wrong PIN" "wrong PIN for token 'kmsd-it' (C_Login: CKR_PIN_INCORRECT)" \
  KMS_HSM_PKCS11_PIN_FILE="$work/wrong-pin"
refused "a missing token" "no token labelled 'absent-token'" KMS_HSM_PKCS11_TOKEN_LABEL=absent-token
refused "a missing key" "has no secret key labelled 'absent-key'" KMS_HSM_MASTER_KEY=absent-key
p11tool --keygen --key-type AES:32 --label loose-key --id 00000001 --extractable --usage-decrypt >/dev/null
refused "an extractable key" "master key 'loose-key' version 1 is extractable" KMS_HSM_MASTER_KEY=loose-key
cp "$dir/kms.properties" "$work/clear.properties"
sed -i '/kms.hsm.pkcs11.pin.file/d' "$work/clear.properties"
echo "kms.hsm.pkcs11.pin = $pin" >> "$work/clear.properties"
out=$(timeout 20 "$kmsd" --config "$work/clear.properties" --check-config 2>&1)
echo "$out" | grep -q "kms.hsm.pkcs11.pin is in clear" && ! echo "$out" | grep -q "$pin" &&
  ok "a PIN in clear in kms.properties: refused, and not repeated" || ko "PIN in clear: $out"
grep -q "$pin" "$dir/kmsd.log" "$dir/audit.log" && ko "the PIN is in kmsd's log or audit" ||
  ok "the PIN appears in no log"

echo "pkcs11: $pass passed, $fail failed"
[ "$fail" -eq 0 ]
