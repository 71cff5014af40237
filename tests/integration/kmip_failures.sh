#!/usr/bin/env bash
# kmsd with a real PyKMIP server, the failures an operator meets (issue 3):
# unknown master key and untrusted client certificate at startup, the HSM
# killed and restarted under a running kmsd, master-key rotation and rewrap,
# and no KMIP Get (which would fetch key material) ever sent.
# Runs after it_kmip_api on the harness's folder. Prints "N passed, N failed".
#   kmip_failures.sh KMSD KMSCTL IT_DIR
set -u
kmsd=$1 kmsctl=$2 dir=$3
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
pykmip=$root/tests/stand-ins/pykmip/pykmip.sh
# shellcheck disable=SC1091
. "$dir/it.env"
pw=$KMS_IT_PASSWORD
url=https://127.0.0.1:$KMS_IT_PORT
pass=0 fail=0
ok() { echo "ok   $1"; pass=$((pass + 1)); }
ko() { echo "FAIL $1"; fail=$((fail + 1)); }
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

api() { # api CERT METHOD PATH [JSON] -> body in $tmp/body, prints the status
  local args=(-sS -o "$tmp/body" -w '%{http_code}' --max-time 30 --cacert "$dir/pki/rootCA.crt"
              --cert "$dir/pki/$1.p12:$pw" --cert-type P12 -X "$2")
  [ $# -ge 4 ] && args+=(-H 'Content-Type: application/json' --data "$4")
  curl "${args[@]}" "$url$3" 2>/dev/null || echo 000
}
field() { /usr/bin/python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))[sys.argv[2]])' "$tmp/body" "$1"; }

# A second kmsd on a free port with one property changed must refuse to start.
refuses_start() { # refuses_start NAME PATTERN PROPERTY=VALUE
  local name=$1 pattern=$2 prop=${3%%=*} value=${3#*=}
  local port; port=$(/usr/bin/python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
  grep -v -e "^$prop " -e '^kms.server.port' -e '^kms.audit.file' "$dir/kms.properties" > "$tmp/kms.properties"
  printf '%s = %s\nkms.server.port = %s\n' "$prop" "$value" "$port" >> "$tmp/kms.properties"
  local out status
  out=$(timeout 60 "$kmsd" --config "$tmp/kms.properties" 2>&1); status=$?
  if [ $status -eq 0 ] || [ $status -eq 124 ]; then ko "$name: kmsd started (status $status)"; return; fi
  if grep -qE -- "$pattern" <<<"$out"; then ok "$name"; else ko "$name: no /$pattern/ in: $(tail -2 <<<"$out")"; fi
}

refuses_start unknown_master_key "startup.failed.*no-such-master-key" "kms.hsm.master.key=no-such-master-key"
# kmsServer's certificate lacks clientAuth, which PyKMIP requires of its clients
refuses_start untrusted_client_cert "startup.failed.*(TLS|handshake)" "kms.keystore.alias=kmsServer"

# A customer key, a user key and an unwrap while PyKMIP is up.
[ "$(api cmxBackend POST /v1/customer-keys '{"site_id":"hsm-down"}')" = 201 ] && ck=$(field customer_key) || ck=
[ -n "$ck" ] && ok "customer key through PyKMIP" || ko "customer key through PyKMIP"

# Kill PyKMIP: answers within the timeout are 503, readiness goes 503.
"$pykmip" kill "$dir" >/dev/null
start=$SECONDS
status=$(api cmxBackend POST /v1/customer-keys '{"site_id":"hsm-down"}')
took=$((SECONDS - start))
if [ "$status" = 503 ] && [ $took -le 15 ]; then ok "HSM down: 503 in ${took}s"; else ko "HSM down: $status after ${took}s"; fi
ready=000
for _ in $(seq 30); do
  ready=$(curl -s -o /dev/null -w '%{http_code}' --max-time 10 --cacert "$dir/pki/rootCA.crt" "$url/health/ready")
  [ "$ready" = 503 ] && break
  sleep 0.5
done
[ "$ready" = 503 ] && ok "HSM down: /health/ready 503" || ko "HSM down: /health/ready $ready"

# Restart PyKMIP (same port, same database): kmsd recovers by itself.
"$pykmip" start "$dir" >/dev/null
recovered=no
for _ in $(seq 60); do
  if [ "$(api cmxBackend POST /v1/user-keys "{\"site_id\":\"hsm-down\",\"customer_key\":\"$ck\"}")" = 201 ]; then
    recovered=yes; break
  fi
  sleep 0.5
done
[ $recovered = yes ] && ok "HSM back: kmsd recovered without a restart" || ko "HSM back: no recovery in 30 s"
for _ in $(seq 30); do
  ready=$(curl -s -o /dev/null -w '%{http_code}' --max-time 10 --cacert "$dir/pki/rootCA.crt" "$url/health/ready")
  [ "$ready" = 200 ] && break
  sleep 0.5
done
[ "$ready" = 200 ] && ok "HSM back: /health/ready 200" || ko "HSM back: /health/ready $ready"

# Rotation: a new master key; the old customer key still works; rewrap moves it.
if KMS_CONFIG="$dir/kms.properties" "$kmsctl" hsm create-key kms-master-2 > "$tmp/create.out" 2>&1; then
  ok "kmsctl hsm create-key kms-master-2"
else
  ko "kmsctl hsm create-key: $(cat "$tmp/create.out")"
fi
s=$(api cmxBackend POST /v1/keys/kms-master-2/rewrap "{\"wrapped\":\"$ck\",\"site_id\":\"hsm-down\"}")
ck2=; [ "$s" = 200 ] && ck2=$(field wrapped)
if [ -n "$ck2" ] && [ "$ck2" != "$ck" ]; then ok "rewrap to the new master key"; else ko "rewrap: $s $(cat "$tmp/body")"; fi
s1=$(api cmxBackend POST /v1/user-keys "{\"site_id\":\"hsm-down\",\"customer_key\":\"$ck\"}")
s2=$(api cmxBackend POST /v1/user-keys "{\"site_id\":\"hsm-down\",\"customer_key\":\"$ck2\"}")
uk2=$(field user_key)
[ "$s1" = 201 ] && [ "$s2" = 201 ] && ok "old and rewrapped customer keys both unwrap" || ko "after rotation: $s1 $s2"
# a user key made under the rewrapped customer key still belongs to the same customer key (same key id)
s=$(api cmxBackend POST /v1/workspace-keys "{\"site_id\":\"hsm-down\",\"customer_key\":\"$ck\",\"user_key\":\"$uk2\"}")
[ "$s" = 201 ] && ok "rewrap keeps the key id: children made under either form agree" || ko "children after rewrap: $s"

# Renewal of kmsd's own client certificate: a new key and certificate for
# kmsClient (same subject, same dev CA) in kmsd's keystore, then SIGHUP. kmsd
# logs hsm.identity_reloaded with the new fingerprint and keeps reaching the
# HSM with it: a new customer key (KMIP Encrypt) and its rewrap (KMIP
# Decrypt: rewrap bypasses the cache, which holds keys kmsd made or unwrapped).
export DEVPKI_PW=$pw
(
  cd "$dir/pki" || exit 1
  openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out kmsClientRenewed.key 2>/dev/null
  openssl req -new -key kmsClientRenewed.key -subj "/O=kmsd dev/OU=kmsClient/CN=kmsClient" \
    -out kmsClientRenewed.csr 2>/dev/null
  printf 'basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment\nextendedKeyUsage=clientAuth\n' \
    > kmsClientRenewed.ext
  openssl x509 -req -in kmsClientRenewed.csr -CA intermediateCA.crt -CAkey intermediateCA.key -CAcreateserial \
    -sha256 -days 30 -extfile kmsClientRenewed.ext -out kmsClientRenewed.crt 2>/dev/null
  openssl pkcs12 -export -name kmsClient -inkey kmsClientRenewed.key -in kmsClientRenewed.crt -certfile ca-chain.crt \
    -passout env:DEVPKI_PW -out kmsClientRenewed.p12
  cp kms.jks renewed.jks
  keytool -delete -alias kmsClient -keystore renewed.jks -storepass:env DEVPKI_PW >/dev/null 2>&1
  keytool -importkeystore -noprompt -srckeystore kmsClientRenewed.p12 -srcstoretype pkcs12 \
    -srcstorepass:env DEVPKI_PW -srcalias kmsClient -destkeystore renewed.jks -deststorepass:env DEVPKI_PW \
    -destalias kmsClient >/dev/null 2>&1
  mv renewed.jks kms.jks
) || ko "could not renew kmsClient in the keystore"
old_fp=$(openssl x509 -in "$dir/pki/kmsClient.crt" -noout -fingerprint -sha256 | sed 's/.*=//; s/://g' | tr 'A-F' 'a-f')
new_fp=$(openssl x509 -in "$dir/pki/kmsClientRenewed.crt" -noout -fingerprint -sha256 | sed 's/.*=//; s/://g' | tr 'A-F' 'a-f')
sessions_before=$(grep -c "Session client identity: kmsClient" "$dir/server.log")
kill -HUP "$(cat "$dir/kmsd.pid")"
for _ in $(seq 60); do grep -q '"event":"hsm.identity_reloaded"' "$dir/kmsd.log" && break; sleep 0.25; done
line=$(grep '"event":"hsm.identity_reloaded"' "$dir/kmsd.log" | tail -1)
if grep -q "\"sha256\":\"$new_fp\"" <<<"$line" && grep -q '"not_after":"20' <<<"$line" && [ "$new_fp" != "$old_fp" ]; then
  ok "SIGHUP: hsm.identity_reloaded with the renewed certificate's fingerprint"
else
  ko "no hsm.identity_reloaded for $new_fp: ${line:-none}; $(grep -E 'hsm.identity_reload_failed|reload_refused' "$dir/kmsd.log" | tail -1)"
fi
grep -q '"event":"hsm.identity_reload_failed"' "$dir/kmsd.log" && ko "hsm.identity_reload_failed logged" \
  || ok "no hsm.identity_reload_failed"
decrypts_before=$(grep -c "Processing operation: Decrypt" "$dir/server.log")
ck3=; [ "$(api cmxBackend POST /v1/customer-keys '{"site_id":"renewed"}')" = 201 ] && ck3=$(field customer_key)
s3=$(api cmxBackend POST /v1/keys/kms-master-2/rewrap "{\"wrapped\":\"$ck3\",\"site_id\":\"renewed\"}")
for _ in $(seq 20); do # why: PyKMIP's log may trail its answer
  decrypts_after=$(grep -c "Processing operation: Decrypt" "$dir/server.log")
  [ "$decrypts_after" -gt "$decrypts_before" ] && break; sleep 0.25
done
if [ -n "$ck3" ] && [ "$s3" = 200 ] && [ "$decrypts_after" -gt "$decrypts_before" ]; then
  ok "after the renewal: a new customer key and its rewrap (KMIP Encrypt, Decrypt) work"
else
  ko "after the renewal: customer key '${ck3:0:12}', rewrap $s3, Decrypts $decrypts_before -> $decrypts_after"
fi
s3=$(api cmxBackend POST /v1/user-keys "{\"site_id\":\"renewed\",\"customer_key\":\"$ck3\"}")
[ "$s3" = 201 ] && ok "after the renewal: a user key under the new customer key" || ko "user key after renewal: $s3"
sessions=$(grep -c "Session client identity: kmsClient" "$dir/server.log")
# why: the old identity's pooled connections were closed at the reload, so
# these sessions were opened with the renewed certificate
[ "$sessions" -gt "$sessions_before" ] && ok "PyKMIP accepted new kmsClient sessions after the renewal" \
  || ko "PyKMIP sessions as kmsClient: $sessions_before before the renewal, $sessions after"
s4=$(api cmxBackend POST /v1/user-keys "{\"site_id\":\"hsm-down\",\"customer_key\":\"$ck2\"}")
[ "$s4" = 201 ] && ok "keys made before the renewal keep working" || ko "old customer key after renewal: $s4"

# The master key never leaves the HSM: kmsd never sent Get.
if grep -q "Processing operation: Get$" "$dir/server.log"; then ko "a KMIP Get was sent"; else ok "no KMIP Get in PyKMIP's log"; fi
grep -q "Processing operation: Decrypt" "$dir/server.log" && ok "Decrypt went through PyKMIP" || ko "no Decrypt in PyKMIP's log"

echo "kmip_failures: $pass passed, $fail failed"
[ "$fail" -eq 0 ]
