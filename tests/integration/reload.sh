#!/usr/bin/env bash
# Keystore and CRL hot reload under a bounded load, against the real kmsd
# (issue 6): the server certificate replaced and a new device certificate
# added, then a corrupted keystore, then a CRL revoking one device, while
# clients keep calling: zero failed requests, the new certificate is served
# and the new device works right after, the corrupted keystore is refused
# with its reason logged, the revoked device is refused and others work.
# Runs last on the soft fixture. Prints "N passed, N failed".
#   reload.sh IT_DIR
set -u
dir=$1
# shellcheck disable=SC1091
. "$dir/it.env"
pki=$dir/pki
pw=$KMS_IT_PASSWORD
port=$KMS_IT_PORT
url=https://127.0.0.1:$port
export DEVPKI_PW=$pw
pass=0 fail=0
ok() { echo "ok   $1"; pass=$((pass + 1)); }
ko() { echo "FAIL $1"; fail=$((fail + 1)); }
work=$(mktemp -d)
loaders=()
cleanup() { touch "$work/stop"; for p in "${loaders[@]}"; do kill "$p" 2>/dev/null; done; rm -rf "$work"; }
trap cleanup EXIT

status() { # status CERT PATH -> HTTP status (new connection each time)
  curl -s -o /dev/null -w '%{http_code}' --max-time 10 --cacert "$pki/rootCA.crt" \
       --cert "$pki/$1.p12:$pw" --cert-type P12 "$url$2" || true
}
generation() {
  curl -s --max-time 10 "http://127.0.0.1:$KMS_IT_ADMIN_PORT/health/ready" |
    /usr/bin/python3 -c 'import json,sys; print(json.load(sys.stdin)["keystore"]["generation"])' 2>/dev/null || echo 0
}
wait_generation() { # wait_generation N: bounded 15 s
  for _ in $(seq 60); do [ "$(generation)" = "$1" ] && return 0; sleep 0.25; done
  return 1
}
served_fingerprint() {
  openssl s_client -connect "127.0.0.1:$port" -CAfile "$pki/rootCA.crt" </dev/null 2>/dev/null |
    openssl x509 -noout -fingerprint -sha256 2>/dev/null
}

# Bounded load: two loops of new connections, one keep-alive client; each
# records every status; all stop at $work/stop or after 60 s.
for i in 1 2; do
  ( end=$((SECONDS + 60)); while [ ! -f "$work/stop" ] && [ $SECONDS -lt $end ]; do
      echo "$(status cmxBackend /v1/whoami)" >> "$work/load$i"; done ) &
  loaders+=($!)
done
/usr/bin/python3 - "$port" "$pki" "$pw" "$work" <<'PY' &
import http.client, os, ssl, subprocess, sys, tempfile, time
port, pki, pw, work = sys.argv[1:5]
pem = os.path.join(work, "backend.pem")
subprocess.run(["openssl", "pkcs12", "-in", os.path.join(pki, "cmxBackend.p12"), "-nodes", "-out", pem,
                "-passin", "env:DEVPKI_PW"], check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
ctx = ssl.create_default_context(cafile=os.path.join(pki, "rootCA.crt"))
ctx.load_cert_chain(pem)
c = http.client.HTTPSConnection("127.0.0.1", int(port), context=ctx, timeout=10)
out = open(os.path.join(work, "keepalive"), "w")
end = time.monotonic() + 60
while not os.path.exists(os.path.join(work, "stop")) and time.monotonic() < end:
    try:
        c.request("GET", "/v1/whoami")
        r = c.getresponse(); r.read()
        out.write("%d\n" % r.status)
    except Exception as e:
        out.write("000 %s\n" % e)
        c = http.client.HTTPSConnection("127.0.0.1", int(port), context=ctx, timeout=10)
    out.flush()
    time.sleep(0.02)
PY
loaders+=($!)
sleep 1

gen0=$(generation)
old_fp=$(served_fingerprint)

# 1. A new server certificate and a new device certificate, renamed into place.
(
  cd "$pki" || exit 1
  openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out kmsServer2.key
  openssl req -new -key kmsServer2.key -subj "/O=kmsd dev/OU=kmsServer/CN=localhost" -out kmsServer2.csr
  printf 'subjectAltName=DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth\n' > san.ext
  openssl x509 -req -in kmsServer2.csr -CA intermediateCA.crt -CAkey intermediateCA.key -CAcreateserial \
    -days 30 -extfile san.ext -out kmsServer2.crt 2>/dev/null
  openssl pkcs12 -export -name kmsServer -inkey kmsServer2.key -in kmsServer2.crt -certfile ca-chain.crt \
    -passout env:DEVPKI_PW -out kmsServer2.p12
  openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out cmxDeviceNew.key
  openssl req -new -key cmxDeviceNew.key -subj "/O=kmsd dev/OU=cmxDevice/CN=cmxDevice new" -out cmxDeviceNew.csr
  printf 'extendedKeyUsage=clientAuth\n' > client.ext
  openssl x509 -req -in cmxDeviceNew.csr -CA intermediateCA.crt -CAkey intermediateCA.key -CAcreateserial \
    -days 30 -extfile client.ext -out cmxDeviceNew.crt 2>/dev/null
  openssl pkcs12 -export -name cmxDeviceNew -inkey cmxDeviceNew.key -in cmxDeviceNew.crt \
    -passout env:DEVPKI_PW -out cmxDeviceNew.p12
  cp kms.jks next.jks
  keytool -delete -alias kmsServer -keystore next.jks -storepass:env DEVPKI_PW >/dev/null 2>&1
  keytool -importkeystore -noprompt -srckeystore kmsServer2.p12 -srcstoretype pkcs12 -srcstorepass:env DEVPKI_PW \
    -srcalias kmsServer -destkeystore next.jks -deststorepass:env DEVPKI_PW -destalias kmsServer >/dev/null 2>&1
  keytool -importcert -noprompt -alias cmxDeviceNew -file cmxDeviceNew.crt -keystore next.jks \
    -storepass:env DEVPKI_PW >/dev/null 2>&1
  mv next.jks kms.jks
) || ko "could not build the new keystore"
gen1=$((gen0 + 1))
wait_generation $gen1 && ok "keystore reloaded on its own (generation $gen0 -> $gen1)" || ko "no reload: generation $(generation)"
[ "$(status cmxDeviceNew /v1/whoami)" = 200 ] && ok "the new device certificate works right after" || ko "new device refused"
new_fp=$(served_fingerprint)
want_fp=$(openssl x509 -in "$pki/kmsServer2.crt" -noout -fingerprint -sha256)
[ "$new_fp" = "$want_fp" ] && [ "$new_fp" != "$old_fp" ] && ok "new connections get the new server certificate" \
  || ko "served certificate: $new_fp (want $want_fp)"

# 2. A corrupted keystore: refused, the old one stays, the log says why.
cp "$pki/kms.jks" "$work/good.jks"
head -c 700 "$work/good.jks" > "$pki/kms.jks"
for _ in $(seq 40); do grep -q '"event":"keystore.reload_refused"' "$dir/kmsd.log" && break; sleep 0.25; done
grep '"event":"keystore.reload_refused"' "$dir/kmsd.log" | grep -q 'kms.jks' \
  && ok "corrupted keystore refused, the log names the file and the reason" || ko "no reload_refused line"
[ "$(generation)" = $gen1 ] && ok "the previous keystore stays in force" || ko "generation moved to $(generation)"
[ "$(status cmxDeviceNew /v1/whoami)" = 200 ] && ok "clients keep working on the old keystore" || ko "refused after a bad reload"
cp "$work/good.jks" "$pki/kms.jks.tmp" && mv "$pki/kms.jks.tmp" "$pki/kms.jks"
gen2=$((gen1 + 1))
wait_generation $gen2 || ko "the good keystore was not reloaded"

# 3. CRL: revoke cmxDevice20261122; it is refused, the other devices work.
[ "$(status cmxDevice20261122 /v1/whoami)" = 200 ] || ko "cmxDevice20261122 refused before revocation"
(
  cd "$pki" || exit 1
  openssl ca -batch -config extra.cnf -cert intermediateCA.crt -keyfile intermediateCA.key \
    -revoke cmxDevice20261122.crt >/dev/null 2>&1
  openssl ca -batch -config extra.cnf -cert intermediateCA.crt -keyfile intermediateCA.key -gencrl -crldays 30 \
    -out crl.next >/dev/null 2>&1 && mv crl.next crl.pem
) || ko "could not revoke"
gen3=$((gen2 + 1))
wait_generation $gen3 && ok "CRL reloaded" || ko "CRL not reloaded: generation $(generation)"
[ "$(status cmxDevice20261122 /v1/whoami)" = 401 ] && ok "the revoked device gets 401" || ko "revoked device not refused"
grep -q '"reason":"revoked"' "$dir/kmsd.log" && ok "the log says revoked" || ko "no 'revoked' in the log"
[ "$(status cmxDevice /v1/whoami)" = 200 ] && [ "$(status cmxDeviceNew /v1/whoami)" = 200 ] \
  && ok "the other devices keep working" || ko "other devices refused"

# The load: zero failed requests across all three reloads.
touch "$work/stop"
for p in "${loaders[@]}"; do wait "$p" 2>/dev/null; done
total=$(cat "$work"/load1 "$work"/load2 "$work"/keepalive | wc -l)
bad=$(cat "$work"/load1 "$work"/load2 "$work"/keepalive | grep -vc '^200$')
ka=$(grep -c '^200$' "$work/keepalive")
if [ "$bad" -eq 0 ] && [ "$total" -gt 50 ]; then ok "load: $total requests ($ka on one keep-alive connection), 0 failed"
else ko "load: $bad of $total requests failed: $(grep -v '^200$' "$work"/load1 "$work"/load2 "$work"/keepalive | sort | uniq -c | head -3)"; fi

echo "reload: $pass passed, $fail failed"
[ "$fail" -eq 0 ]
