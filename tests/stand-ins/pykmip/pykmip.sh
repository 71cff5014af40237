#!/usr/bin/env bash
# A real KMIP server for the tests: PyKMIP 0.10.0 (Debian python3-pykmip) on
# 127.0.0.1 with its own PKI, in DIR.
#
#   pykmip.sh start DIR   PKI (deploy/pki/dev-pki.sh DIR/pki, plus a kmipServer
#                         certificate signed by the same dev CA), server.conf,
#                         policy, then the server; waits (30 s at most) until
#                         the port accepts; writes DIR/pykmip.env. Idempotent:
#                         a running server is left alone; a stopped one is
#                         started again on the same port with the same PKI
#                         and database (keys survive a restart).
#   pykmip.sh stop DIR    SIGTERM to the PID, up to 15 s, then SIGKILL to its
#                         process group (PyKMIP's Manager and monitor children).
#   pykmip.sh kill DIR    SIGKILL to the process group at once (a crash).
#
# DIR/pykmip.env (shell syntax):
#   PYKMIP_HOST PYKMIP_PORT PYKMIP_PID PYKMIP_DIR PYKMIP_LOG
#   PYKMIP_CLIENT_CERT PYKMIP_CLIENT_KEY PYKMIP_CLIENT_CHAIN PYKMIP_CA
#   (kmsClient certificate, key, intermediate CA, root CA = kmipSigningCA)
# env: KMS_PYKMIP_PKI=PATH: use that deploy/pki/dev-pki.sh folder (kmsd's own)
#      instead of a new one: PyKMIP then trusts its kmsClient certificate, and its
#      kmipSigningCA (rootCA.crt) verifies PyKMIP. Read on the first start only.
#      KMS_PYKMIP_SERVER_SAN overrides the kmipServer subjectAltName (default
#      "DNS:localhost, IP:127.0.0.1"; tests use it to check name verification).
# Needs /usr/bin/python3 with python3-pykmip (not the pyenv python3 on PATH),
# openssl, keytool (dev-pki.sh). Every wait is bounded.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../../.." && pwd)
cmd=${1:-}
dir=${2:-}
[ -n "$cmd" ] && [ -n "$dir" ] || { echo "usage: pykmip.sh start|stop|kill DIR" >&2; exit 2; }
mkdir -p "$dir"
dir=$(cd "$dir" && pwd)
env_file=$dir/pykmip.env
py=/usr/bin/python3

alive() { # alive PID: running; why not kill -0 alone: a daemon that exited stays a
  # zombie until PID 1 reaps it, a second or more in some containers
  [ -n "${1:-}" ] && kill -0 "$1" 2>/dev/null || return 1
  case $(sed 's/.*) //' "/proc/$1/stat" 2>/dev/null) in Z*) return 1 ;; esac
}

read_env() {
  PYKMIP_PID=""
  PYKMIP_PORT=""
  if [ -f "$env_file" ]; then
    # shellcheck disable=SC1090
    . "$env_file"
  fi
}

# Waits until pid is gone, at most $2 tenths of a second; 0 when gone.
wait_gone() {
  local pid=$1 n=$2
  while [ "$n" -gt 0 ]; do
    alive "$pid" || return 0
    sleep 0.1
    n=$((n - 1))
  done
  ! alive "$pid"
}

kill_group() {
  local pid=$1
  # why: setsid made the server its own process group leader (pgid = pid)
  kill -KILL -- "-$pid" 2>/dev/null || kill -KILL "$pid" 2>/dev/null || true
  wait_gone "$pid" 50 || { echo "pykmip: PID $pid did not exit after SIGKILL" >&2; return 1; }
  # the group's other members (Manager, monitor) die with it; wait for them too
  local n=50
  while [ "$n" -gt 0 ] && pgrep -g "$pid" >/dev/null 2>&1; do sleep 0.1; n=$((n - 1)); done
  return 0
}

free_port() {
  "$py" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()'
}

listening() {
  ss -Hltn "sport = :$1" 2>/dev/null | grep -q "127.0.0.1:$1"
}

make_pki() {
  local pki=$dir/pki
  if [ -n "${KMS_PYKMIP_PKI:-}" ] && [ ! -d "$pki" ]; then
    # why: share kmsd's dev PKI, so PyKMIP trusts kmsd's kmsClient and kmsd's
    # kmipSigningCA (rootCA) signs PyKMIP's certificate
    mkdir -p "$pki"
    for f in rootCA.crt intermediateCA.crt intermediateCA.key ca-chain.crt kmsClient.crt kmsClient.key; do
      [ -f "$KMS_PYKMIP_PKI/$f" ] || { echo "pykmip: $KMS_PYKMIP_PKI/$f missing (a dev-pki.sh folder?)" >&2; exit 1; }
      cp -p "$KMS_PYKMIP_PKI/$f" "$pki/"
    done
  elif [ ! -f "$pki/intermediateCA.key" ]; then
    "$repo/deploy/pki/dev-pki.sh" "$pki" >/dev/null
  fi
  [ -f "$pki/kmipServer-chain.crt" ] && return 0
  (
    cd "$pki"
    umask 077
    if [ "${KMS_PKI_KEY:-ec}" = rsa ]; then
      openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out kmipServer.key 2>/dev/null
    else
      openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out kmipServer.key
    fi
    cat > kmipServer.ext <<EXT
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature, keyEncipherment
extendedKeyUsage = serverAuth
subjectAltName = ${KMS_PYKMIP_SERVER_SAN:-DNS:localhost, IP:127.0.0.1}
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
EXT
    openssl req -new -key kmipServer.key -subj "/O=kmsd dev/OU=kmipServer/CN=localhost" -out kmipServer.csr
    openssl x509 -req -in kmipServer.csr -CA intermediateCA.crt -CAkey intermediateCA.key -CAcreateserial \
      -sha256 -days 825 -extfile kmipServer.ext -out kmipServer.crt 2>/dev/null
    cat kmipServer.crt intermediateCA.crt > kmipServer-chain.crt
    rm -f kmipServer.ext kmipServer.csr ./*.srl
  )
}

start() {
  read_env
  if alive "$PYKMIP_PID"; then
    echo "pykmip: already running (PID $PYKMIP_PID, port $PYKMIP_PORT)"
    return 0
  fi
  [ -x /usr/bin/pykmip-server ] || { echo "pykmip: /usr/bin/pykmip-server missing (apt-get install python3-pykmip)" >&2; exit 1; }
  make_pki
  local port=${PYKMIP_PORT:-}
  [ -n "$port" ] || port=$(free_port)
  mkdir -p "$dir/policies"
  cp "$here/policies/"*.json "$dir/policies/"
  sed -e "s|@DIR@|$dir|g" -e "s|@PORT@|$port|g" "$here/server.conf.in" > "$dir/server.conf"
  # why: setsid makes the server a process group leader, so stop/kill reach its children
  setsid "$py" /usr/bin/pykmip-server -f "$dir/server.conf" -l "$dir/server.log" \
    > "$dir/server.stdout" 2>&1 < /dev/null &
  local pid=$!
  local n=300
  while [ "$n" -gt 0 ]; do
    if ! alive "$pid"; then
      echo "pykmip: server exited during start; see $dir/server.log and $dir/server.stdout" >&2
      tail -n 20 "$dir/server.stdout" "$dir/server.log" >&2 2>/dev/null || true
      exit 1
    fi
    listening "$port" && break
    sleep 0.1
    n=$((n - 1))
  done
  if [ "$n" -eq 0 ]; then
    echo "pykmip: port $port not listening after 30 s" >&2
    kill_group "$pid" || true
    exit 1
  fi
  cat > "$env_file" <<ENV
PYKMIP_HOST=127.0.0.1
PYKMIP_PORT=$port
PYKMIP_PID=$pid
PYKMIP_DIR=$dir
PYKMIP_LOG=$dir/server.log
PYKMIP_CLIENT_CERT=$dir/pki/kmsClient.crt
PYKMIP_CLIENT_KEY=$dir/pki/kmsClient.key
PYKMIP_CLIENT_CHAIN=$dir/pki/intermediateCA.crt
PYKMIP_CA=$dir/pki/rootCA.crt
ENV
  echo "pykmip: listening on 127.0.0.1:$port (PID $pid)"
}

stop() {
  read_env
  if ! alive "$PYKMIP_PID"; then
    echo "pykmip: not running"
    return 0
  fi
  # why SIGINT: PyKMIP's handler raises KeyboardInterrupt for it, which breaks
  # accept() at once; for SIGTERM it only sets a flag that accept() sees at its
  # 10 s timeout (kmip/services/server/server.py, KmipServer.serve). Both then
  # shut down the same way.
  kill -INT "$PYKMIP_PID" 2>/dev/null || true
  if ! wait_gone "$PYKMIP_PID" 150; then
    echo "pykmip: no exit 15 s after SIGINT; SIGKILL to process group $PYKMIP_PID" >&2
  fi
  kill_group "$PYKMIP_PID"
  echo "pykmip: stopped"
}

crash() {
  read_env
  if ! alive "$PYKMIP_PID"; then
    echo "pykmip: not running"
    return 0
  fi
  kill_group "$PYKMIP_PID"
  echo "pykmip: killed"
}

case "$cmd" in
  start) start ;;
  stop) stop ;;
  kill) crash ;;
  *) echo "usage: pykmip.sh start|stop|kill DIR" >&2; exit 2 ;;
esac
