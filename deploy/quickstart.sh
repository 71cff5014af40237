#!/usr/bin/env bash
# README command 1: install what is missing, build, make a development PKI the
# way the install guide does, start kmsd on 127.0.0.1:8443 with the soft
# backend, and show the key hierarchy with plain curl and the client .p12 files.
#
#   deploy/quickstart.sh          set up (once) and start, then run the demo
#   deploy/quickstart.sh stop     stop the kmsd it started (by PID)
# env: KMS_RUN_DIR (default ./run), KMS_PORT (default 8443)
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
run=${KMS_RUN_DIR:-$root/run}
port=${KMS_PORT:-8443}

if [ "${1:-}" = stop ]; then
  if [ -f "$run/kmsd.pid" ] && kill -0 "$(cat "$run/kmsd.pid")" 2>/dev/null; then
    kill -TERM "$(cat "$run/kmsd.pid")"
    for _ in $(seq 50); do kill -0 "$(cat "$run/kmsd.pid")" 2>/dev/null || break; sleep 0.2; done
    rm -f "$run/kmsd.pid"
    echo "kmsd stopped"
  else
    echo "kmsd is not running (no live PID in $run/kmsd.pid)"
  fi
  exit 0
fi

"$root/deploy/install-deps.sh"
echo "== building kmsd"
# why: a build tree of its own; the test suite's build/ keeps its tests (README command 2)
bld="$root/build-run"
cmake -S "$root" -B "$bld" -DKMS_TESTS=OFF -DKMS_SANITIZE=OFF -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build "$bld" -j"$(nproc)" >/dev/null
echo "== development PKI"
"$root/deploy/pki/dev-pki.sh" "$run/pki"
pw=$(cat "$run/pki/password.txt")

cat > "$run/kms.properties" <<PROPS
# Development configuration written by deploy/quickstart.sh.
# The soft backend keeps master keys in a password-sealed file: NOT an HSM.
kms.server.address = 127.0.0.1
kms.server.port = $port
kms.keystore.file = $run/pki/kms.jks
kms.keystore.password.file = $run/pki/password.txt
kms.keystore.alias = kmsClient
kms.hsm.protocol = soft
kms.hsm.soft.file = $run/soft-master-keys.bin
kms.cache.type = local
kms.audit.file = $run/audit.log
PROPS

if [ -f "$run/kmsd.pid" ] && kill -0 "$(cat "$run/kmsd.pid")" 2>/dev/null; then
  echo "== kmsd already running (pid $(cat "$run/kmsd.pid")); restarting it"
  "$0" stop >/dev/null
fi
echo "== starting kmsd on https://127.0.0.1:$port"
nohup "$bld/server/kmsd" --config "$run/kms.properties" >/dev/null 2>"$run/kmsd.log" &
echo $! > "$run/kmsd.pid"
for i in $(seq 100); do
  curl -fsS --max-time 2 --cacert "$run/pki/rootCA.crt" "https://127.0.0.1:$port/health/live" >/dev/null 2>&1 && break
  if ! kill -0 "$(cat "$run/kmsd.pid")" 2>/dev/null || [ "$i" = 100 ]; then
    echo "kmsd did not start; its log ($run/kmsd.log):" >&2
    tail -20 "$run/kmsd.log" >&2
    exit 1
  fi
  sleep 0.1
done

field() { /usr/bin/env python3 -c 'import json,sys; print(json.load(sys.stdin)[sys.argv[1]])' "$1"; }
api() { # api CERT PATH JSON
  curl -sS --cacert "$run/pki/rootCA.crt" --cert "$run/pki/$1.p12:$pw" --cert-type P12 \
       -H 'Content-Type: application/json' --data "$3" "https://127.0.0.1:$port$2"
}
cd "$run/pki"
show() { printf '\n$ %s\n' "$1"; }

show "curl --cacert rootCA.crt --cert cmxBackend.p12:\$PW --cert-type P12 https://127.0.0.1:$port/v1/whoami"
curl -sS --cacert rootCA.crt --cert "cmxBackend.p12:$pw" --cert-type P12 "https://127.0.0.1:$port/v1/whoami"; echo
show "curl ... --cert cmxBackend.p12:\$PW --cert-type P12 -H 'Content-Type: application/json' -d '{\"site_id\":\"acme\"}' https://127.0.0.1:$port/v1/customer-keys"
out=$(api cmxBackend /v1/customer-keys '{"site_id":"acme"}'); echo "$out"
ck=$(echo "$out" | field customer_key)
show "curl ... --cert cmxBackend.p12:\$PW ... -d '{\"site_id\":\"acme\",\"customer_key\":\"\$CK\"}' .../v1/user-keys"
out=$(api cmxBackend /v1/user-keys "{\"site_id\":\"acme\",\"customer_key\":\"$ck\"}"); echo "$out"
uk=$(echo "$out" | field user_key)
show "curl ... --cert cmxBackend.p12:\$PW ... -d '{\"site_id\":\"acme\",\"customer_key\":\"\$CK\",\"user_key\":\"\$UK\"}' .../v1/workspace-keys"
out=$(api cmxBackend /v1/workspace-keys "{\"site_id\":\"acme\",\"customer_key\":\"$ck\",\"user_key\":\"$uk\"}"); echo "$out"
wk=$(echo "$out" | field workspace_key)
show "curl ... --cert cmxDevice.p12:\$PW ... -d '{\"site_id\":\"acme\",\"customer_key\":\"\$CK\",\"user_key\":\"\$UK\",\"workspace_key\":\"\$WK\"}' .../v1/workspace-keys/unwrap"
api cmxDevice /v1/workspace-keys/unwrap \
  "{\"site_id\":\"acme\",\"customer_key\":\"$ck\",\"user_key\":\"$uk\",\"workspace_key\":\"$wk\"}"; echo
show "the device may not create keys:"
api cmxDevice /v1/customer-keys '{"site_id":"acme"}'; echo

cat <<INFO

kmsd is running (pid $(cat "$run/kmsd.pid")) on https://127.0.0.1:$port with the SOFT backend (not an HSM).
  configuration   $run/kms.properties
  keystore        $run/pki/kms.jks   (password in $run/pki/password.txt)
  client certs    $run/pki/cmxBackend.p12, $run/pki/cmxDevice.p12 (same password); CA: $run/pki/rootCA.crt
  logs            $run/kmsd.log (application), $run/audit.log (audit)
  inspect         build-run/cli/kmsctl keystore list --keystore $run/pki/kms.jks --password-file $run/pki/password.txt
  stop            deploy/quickstart.sh stop
INFO
