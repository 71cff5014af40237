#!/usr/bin/env bash
# Integration harness: starts and stops a real kmsd for the integration tests.
#
#   harness.sh start DIR KMSD_BINARY [BACKEND]
#        PKI (dev-pki.sh) + extra client certificates, the backend's peer, kms.properties,
#        kmsd on 127.0.0.1:<free port>. BACKEND: soft (default); kmip (a real PyKMIP
#        server, tests/stand-ins/pykmip); vault, vault-azure (the Vault stand-in,
#        tests/stand-ins/vault, with token or Azure/IMDS auth); pkcs11 (a SoftHSM2
#        token made in DIR/softhsm). The master key is created with kmsctl hsm
#        (KMIP, PKCS#11) or the Vault API before kmsd starts.
#   harness.sh restart DIR KMSD_BINARY
#        stops kmsd by PID and starts it again on DIR's files (same port, keys, peer),
#        with whatever KMS_* environment the caller sets now.
#   harness.sh stop DIR
#        SIGTERM to kmsd by PID, bounded wait, then checks the exit status and that
#        the log holds no sanitizer report; stops the backend's peer by PID.
#
# DIR/it.env is what the tests read: KMS_IT_PORT, KMS_IT_PKI, KMS_IT_PASSWORD, ...
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
cmd=${1:?start|stop}
dir=${2:?DIR}

# SoftHSM2's module, as Debian installs it (the first that exists)
SOFTHSM2_MODULE=
for m in /usr/lib/softhsm/libsofthsm2.so /usr/lib/x86_64-linux-gnu/softhsm/libsofthsm2.so; do
  [ -f "$m" ] && { SOFTHSM2_MODULE=$m; break; }
done
export SOFTHSM2_MODULE

# why: keytool's JVM spends most of a short run in its C2 compiler threads;
# C1 alone with the serial collector takes about half the CPU
keytool() { command keytool -J-XX:TieredStopAtLevel=1 -J-XX:+UseSerialGC "$@"; }

free_port() {
  /usr/bin/python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'
}

make_extra_certs() { # the certificates the negative tests present
  local pki=$1
  cd "$pki"
  export DEVPKI_PW; DEVPKI_PW=$(cat password.txt)
  cat > extra.cnf <<'CNF'
[client]
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature
extendedKeyUsage = clientAuth
[ca]
default_ca = it_ca
[it_ca]
database = it-ca/index.txt
new_certs_dir = it-ca
serial = it-ca/serial
default_md = sha256
policy = any
copy_extensions = none
[any]
organizationName = optional
organizationalUnitName = optional
commonName = supplied
CNF
  mkdir -p it-ca && : > it-ca/index.txt && echo 1000 > it-ca/serial
  sign() { # sign NAME SUBJECT [CA-ARGS...]: a client cert from the intermediate CA
    local name=$1 subj=$2; shift 2
    openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$name.key"
    openssl req -new -key "$name.key" -subj "$subj" -out "$name.csr"
    openssl ca -batch -config extra.cnf -cert intermediateCA.crt -keyfile intermediateCA.key -notext \
      -extfile extra.cnf -extensions client -in "$name.csr" -out "$name.crt" "$@" >/dev/null 2>&1
    openssl pkcs12 -export -name "$name" -inkey "$name.key" -in "$name.crt" -passout env:DEVPKI_PW -out "$name.p12"
  }
  # CA-signed, never imported: must get 401.
  sign stranger "/O=kmsd dev/OU=cmxBackend/CN=cmxBackend" -days 30
  # Expired, imported into the keystore: must get 401.
  sign expiredDevice "/O=kmsd dev/OU=cmxDevice/CN=cmxDevice expired" -startdate 20200101000000Z -enddate 20210101000000Z
  # A rotated device certificate beside the first: must work.
  sign cmxDevice20261122 "/O=kmsd dev/OU=cmxDevice/CN=cmxDevice 2026" -days 30
  # Self-signed with the real device's subject: must get 401.
  openssl req -new -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout rogue.key \
    -subj "/O=kmsd dev/OU=cmxDevice/CN=cmxDevice" -days 30 -out rogue.crt 2>/dev/null
  openssl pkcs12 -export -name rogue -inkey rogue.key -in rogue.crt -passout env:DEVPKI_PW -out rogue.p12
  # An (empty) CRL of the intermediate CA: kmsd loads it at start (kms.auth.crl.file)
  # and reloads it when reload.sh revokes a certificate.
  openssl ca -batch -config extra.cnf -cert intermediateCA.crt -keyfile intermediateCA.key -gencrl -crldays 30 \
    -out crl.pem >/dev/null 2>&1
  keytool -importcert -noprompt -alias cmxDeviceExpired -file expiredDevice.crt -keystore kms.jks \
    -storepass:env DEVPKI_PW >/dev/null 2>&1
  keytool -importcert -noprompt -alias cmxDevice20261122 -file cmxDevice20261122.crt -keystore kms.jks \
    -storepass:env DEVPKI_PW >/dev/null 2>&1
  cd - >/dev/null
}

backend_properties() { # the kms.properties lines of BACKEND, after starting its peer
  local backend=$1 kmsctl=$2
  case "$backend" in
    soft)
      printf 'kms.hsm.protocol = soft\nkms.hsm.soft.file = %s\n' "$dir/soft-keys.bin" ;;
    kmip)
      # why: PyKMIP runs in DIR itself so that it shares DIR/pki: its CA signs
      # kmsd's kmsClient certificate and kmsd's kmipSigningCA signs its own.
      "$root/tests/stand-ins/pykmip/pykmip.sh" start "$dir" >/dev/null
      # shellcheck disable=SC1091
      . "$dir/pykmip.env"
      printf 'kms.hsm.protocol = kmip1\nkms.hsm.server.url = 127.0.0.1\nkms.hsm.server.port = %s\n' "$PYKMIP_PORT"
      printf 'kms.keystore.alias = kmsClient\nkms.hsm.pool.size = 2\nkms.hsm.timeout.ms = 4000\n'
      printf 'kms.hsm.connect.timeout.ms = 2000\n' ;;
    vault|vault-azure)
      "$root/tests/stand-ins/vault/standin.sh" start "$dir/vault-run" >/dev/null
      # shellcheck disable=SC1091
      . "$dir/vault-run/vault.env"
      local ns=""
      [ "$backend" = vault ] && ns=kmsd-ns
      curl -fsS --max-time 10 -H "X-Vault-Token: $(cat "$VAULT_TOKEN_FILE")" ${ns:+-H "X-Vault-Namespace: $ns"} \
        -X POST "$VAULT_ADDR/v1/transit/keys/kms-master" >/dev/null
      printf 'kms.hsm.protocol = VAULT\nkms.hsm.server.url = %s\n' "$VAULT_ADDR"
      printf 'kms.hsm.timeout.ms = 4000\nkms.hsm.connect.timeout.ms = 2000\n'
      if [ "$backend" = vault ]; then
        # token auth in a namespace, with a token that lives 12 s unless renewed:
        # a run longer than that needs kmsd's renewal
        curl -fsS --max-time 10 -X POST -H 'Content-Type: application/json' \
          -d "{\"policies\":[\"transit\",\"default\"],\"ttl\":12,\"renewable\":true,\"explicit_max_ttl\":3600,\"namespace\":\"$ns\"}" \
          "$VAULT_ADDR/stand-in/tokens" | /usr/bin/python3 -c 'import json,sys; print(json.load(sys.stdin)["id"], end="")' \
          > "$dir/vault-token"
        chmod 600 "$dir/vault-token"
        printf 'kms.hsm.vault.token.file = %s\nkms.hsm.vault.namespace = %s\n' "$dir/vault-token" "$ns"
        printf 'kms.hsm.vault.auth.renew-before-expiry = 8\n'
      else
        printf 'kms.hsm.vault.auth = azure\nkms.hsm.vault.auth.azure.role = %s\n' "$AZURE_ROLE"
        printf 'kms.hsm.vault.auth.azure.imds = %s\n' "$IMDS_ADDR"
      fi ;;
    pkcs11)
      # a real SoftHSM2 token of this run's own (its own SOFTHSM2_CONF and
      # token directory); the PIN only in a file, as kmsd demands
      mkdir -p "$dir/softhsm/tokens"
      printf 'directories.tokendir = %s\nobjectstore.backend = file\nlog.level = ERROR\n' "$dir/softhsm/tokens" \
        > "$dir/softhsm/softhsm2.conf"
      export SOFTHSM2_CONF="$dir/softhsm/softhsm2.conf"
      head -c 12 /dev/urandom | od -An -tx1 | tr -d ' \n' > "$dir/softhsm/pin"
      chmod 600 "$dir/softhsm/pin"
      softhsm2-util --init-token --free --label kmsd-it --so-pin 8765432187654321 --pin "$(cat "$dir/softhsm/pin")" \
        >/dev/null
      printf 'kms.hsm.protocol = pkcs11\nkms.hsm.pkcs11.library = %s\n' "$SOFTHSM2_MODULE"
      printf 'kms.hsm.pkcs11.token.label = kmsd-it\nkms.hsm.pkcs11.pin.file = %s\n' "$dir/softhsm/pin"
      printf 'kms.hsm.timeout.ms = 4000\n' ;;
    *) echo "harness: unknown backend $backend" >&2; exit 2 ;;
  esac
}

start() {
  local bin=${1:?KMSD_BINARY} backend=${2:-soft}
  local kmsctl; kmsctl=$(dirname "$bin")/../cli/kmsctl
  rm -rf "$dir" && mkdir -p "$dir"
  trap 'stop_peers' ERR
  "$root/deploy/pki/dev-pki.sh" "$dir/pki" >/dev/null
  make_extra_certs "$dir/pki"
  local port admin_port; port=$(free_port); admin_port=$(free_port)
  {
    echo "# written by tests/integration/harness.sh ($backend)"
    echo "kms.server.address = 127.0.0.1"
    echo "kms.server.port = $port"
    echo "kms.admin.port = $admin_port"
    echo "kms.keystore.file = $dir/pki/kms.jks"
    echo "kms.keystore.password.file = $dir/pki/password.txt"
    echo "kms.cache.type = local"
    echo "kms.audit.file = $dir/audit.log"
    echo "kms.log.level = debug"
    echo "kms.auth.crl.file = $dir/pki/crl.pem"
    backend_properties "$backend" "$kmsctl"
  } > "$dir/kms.properties"
  echo "$backend" > "$dir/backend"
  if [ "$backend" = kmip ] || [ "$backend" = pkcs11 ]; then
    # the operator's way: kmsctl hsm, with kmsd's own configuration and identity
    KMS_CONFIG="$dir/kms.properties" "$kmsctl" hsm create-key kms-master > "$dir/create-key.out"
  fi
  launch "$bin" "$port"
  cat > "$dir/it.env" <<ENV
KMS_IT_DIR=$dir
KMS_IT_PORT=$port
KMS_IT_PKI=$dir/pki
KMS_IT_PASSWORD=$(cat "$dir/pki/password.txt")
KMS_IT_BACKEND=$backend
KMS_IT_ADMIN_PORT=$admin_port
ENV
  [ "$backend" = pkcs11 ] && printf 'SOFTHSM2_CONF=%s\nSOFTHSM2_MODULE=%s\n' "$SOFTHSM2_CONF" "$SOFTHSM2_MODULE" >> "$dir/it.env"
  echo "harness: kmsd pid $(cat "$dir/kmsd.pid") on 127.0.0.1:$port"
}

launch() { # launch KMSD_BINARY PORT: kmsd on DIR's kms.properties, waited for
  local bin=$1 port=$2
  rm -f "$dir/kmsd.rc"
  # a pkcs11 run's token lives under DIR (kmsd finds it through SOFTHSM2_CONF)
  [ -f "$dir/softhsm/softhsm2.conf" ] && export SOFTHSM2_CONF="$dir/softhsm/softhsm2.conf"
  # The wrapper records kmsd's exit status for `stop`; kmsd's own PID is what we signal.
  # why ulimit -c: kmsd must turn core dumps off itself (process_hardening.sh checks it),
  # whatever limit it inherits
  ( ulimit -c unlimited 2>/dev/null; "$bin" --config "$dir/kms.properties" 2>"$dir/kmsd.log" & echo $! > "$dir/kmsd.pid"; wait $!; echo $? > "$dir/kmsd.rc" ) </dev/null >/dev/null 2>&1 &
  local deadline=$((SECONDS + 30))
  until curl -fsS --max-time 2 --cacert "$dir/pki/rootCA.crt" "https://127.0.0.1:$port/health/live" >/dev/null 2>&1; do
    if [ -f "$dir/kmsd.rc" ] || [ $SECONDS -ge $deadline ]; then
      echo "harness: kmsd did not come up on port $port; its log:" >&2
      cat "$dir/kmsd.log" >&2
      [ -f "$dir/kmsd.pid" ] && kill "$(cat "$dir/kmsd.pid")" 2>/dev/null || true
      stop_peers
      exit 1
    fi
    sleep 0.2
  done
}

# Stops kmsd by PID and starts it again on the same files (the benchmarks
# change KMS_* settings between runs this way; the backend's peer stays).
restart() {
  local bin=${1:?KMSD_BINARY}
  # shellcheck disable=SC1091
  . "$dir/it.env"
  local pid; pid=$(cat "$dir/kmsd.pid")
  kill -TERM "$pid" 2>/dev/null || true
  local deadline=$((SECONDS + 30))
  while [ ! -f "$dir/kmsd.rc" ] && [ $SECONDS -lt $deadline ]; do sleep 0.2; done
  [ -f "$dir/kmsd.rc" ] || { echo "harness: kmsd (pid $pid) did not stop within 30 s" >&2; exit 1; }
  launch "$bin" "$KMS_IT_PORT"
  echo "harness: kmsd pid $(cat "$dir/kmsd.pid") on 127.0.0.1:$KMS_IT_PORT"
}

stop() {
  [ -f "$dir/kmsd.pid" ] || { echo "harness: no kmsd.pid in $dir" >&2; exit 1; }
  local pid; pid=$(cat "$dir/kmsd.pid")
  kill -TERM "$pid" 2>/dev/null || true
  local deadline=$((SECONDS + 30))
  while [ ! -f "$dir/kmsd.rc" ] && [ $SECONDS -lt $deadline ]; do sleep 0.2; done
  if [ ! -f "$dir/kmsd.rc" ]; then
    echo "harness: kmsd (pid $pid) did not stop within 30 s; killing it" >&2
    kill -KILL "$pid" 2>/dev/null || true
    stop_peers
    exit 1
  fi
  local rc; rc=$(cat "$dir/kmsd.rc")
  if grep -qE 'ERROR: (AddressSanitizer|LeakSanitizer)|runtime error:' "$dir/kmsd.log"; then
    echo "harness: sanitizer report in kmsd's log:" >&2
    grep -A30 -E 'ERROR: (AddressSanitizer|LeakSanitizer)|runtime error:' "$dir/kmsd.log" >&2
    stop_peers
    exit 1
  fi
  if [ "$rc" != 0 ]; then
    echo "harness: kmsd exited with status $rc; log tail:" >&2
    tail -20 "$dir/kmsd.log" >&2
    stop_peers
    exit 1
  fi
  echo "harness: kmsd stopped cleanly (status 0)"
  stop_peers
}

stop_peers() {
  [ -f "$dir/pykmip.env" ] && "$root/tests/stand-ins/pykmip/pykmip.sh" stop "$dir" >/dev/null
  [ -f "$dir/vault-run/vault.env" ] && "$root/tests/stand-ins/vault/standin.sh" stop "$dir/vault-run" >/dev/null
  return 0
}

case "$cmd" in
  start) start "${3:-}" "${4:-soft}" ;;
  restart) restart "${3:-}" ;;
  stop) stop ;;
  *) echo "usage: harness.sh start|restart|stop DIR [KMSD]" >&2; exit 2 ;;
esac
