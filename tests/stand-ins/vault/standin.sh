#!/usr/bin/env bash
# VAULT STAND-IN (not HashiCorp Vault): start and stop the stand-in (and its IMDS stand-in)
# for a test, on free 127.0.0.1 ports.
#
#   standin.sh start DIR [--tls] [-- EXTRA vault_standin.py ARGS...]
#   standin.sh stop DIR
#   standin.sh restart DIR      same ports, token, certificates and key state (Vault "comes back")
#
# start writes DIR/token (random root token, mode 0600), DIR/vault.env (sourceable:
# VAULT_ADDR, VAULT_TOKEN_FILE, IMDS_ADDR, PID, VAULT_CACERT with --tls, ...), DIR/standin.log,
# DIR/state.json, and waits (bounded) until the stand-in answers sys/health.
# stop sends SIGTERM to the recorded PID, waits up to 5 s, then SIGKILL.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
PY=/usr/bin/python3
START_TIMEOUT_S=15
STOP_TIMEOUT_S=5

die() { echo "standin.sh: $*" >&2; exit 1; }

is_ours() { # is_ours PID: the PID is alive and runs vault_standin.py
  local pid=$1
  [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null || return 1
  tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -q 'vault_standin\.py'
}

make_certs() { # make_certs DIR: a CA and a server certificate for 127.0.0.1/localhost
  local d=$1
  [ -s "$d/ca.crt" ] && [ -s "$d/server.crt" ] && [ -s "$d/server.key" ] && return 0
  ( umask 077
    openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$d/ca.key" 2>/dev/null
    openssl req -x509 -new -key "$d/ca.key" -subj "/CN=Vault stand-in test CA (not Vault)" -days 3 \
      -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" \
      -out "$d/ca.crt" 2>/dev/null
    openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$d/server.key" 2>/dev/null
    openssl req -new -key "$d/server.key" -subj "/CN=127.0.0.1" -out "$d/server.csr" 2>/dev/null
    printf '%s\n' "basicConstraints=critical,CA:FALSE" "keyUsage=critical,digitalSignature" \
      "extendedKeyUsage=serverAuth" "subjectAltName=IP:127.0.0.1,DNS:localhost" >"$d/server.ext"
    openssl x509 -req -in "$d/server.csr" -CA "$d/ca.crt" -CAkey "$d/ca.key" -CAcreateserial \
      -days 3 -extfile "$d/server.ext" -out "$d/server.crt" 2>/dev/null
    rm -f "$d/server.csr" "$d/server.ext" "$d/ca.srl" )
  chmod 644 "$d/ca.crt" "$d/server.crt"
}

do_stop() { # do_stop DIR
  local d=$1 pid
  [ -f "$d/pid" ] || return 0
  pid=$(cat "$d/pid")
  if is_ours "$pid"; then
    kill -TERM "$pid" 2>/dev/null || true
    local i=0
    # why is_ours, not kill -0: an exited stand-in is a zombie until PID 1 reaps it
    while is_ours "$pid" && [ $i -lt $((STOP_TIMEOUT_S * 10)) ]; do
      sleep 0.1; i=$((i + 1))
    done
    if is_ours "$pid"; then
      echo "standin.sh: PID $pid ignored SIGTERM for ${STOP_TIMEOUT_S}s, sending SIGKILL" >&2
      kill -KILL "$pid" 2>/dev/null || true
    fi
  fi
  rm -f "$d/pid"
}

do_start() { # do_start DIR TLS(0|1) VPORT IPORT KEEP(0|1) EXTRA...
  local d=$1 tls=$2 vport=$3 iport=$4 keep=$5
  shift 5
  mkdir -p "$d"
  chmod 700 "$d"
  d=$(cd "$d" && pwd)
  if [ -f "$d/pid" ] && is_ours "$(cat "$d/pid")"; then
    die "a stand-in already runs for $d (PID $(cat "$d/pid"))"
  fi
  if [ "$keep" = 0 ] || [ ! -s "$d/token" ]; then
    ( umask 077
      "$PY" -c 'import secrets,string; a=string.ascii_letters+string.digits; print("hvs."+"".join(secrets.choice(a) for _ in range(24)), end="")' >"$d/token" )
  fi
  chmod 600 "$d/token"
  [ "$keep" = 1 ] || rm -f "$d/state.json"
  local args=(--port "$vport" --port-file "$d/port" --imds-port "$iport" --imds-port-file "$d/imds-port"
              --token-file "$d/token" --state "$d/state.json" --azure-role kmsd)
  local scheme=http
  if [ "$tls" = 1 ]; then
    make_certs "$d"
    args+=(--tls-cert "$d/server.crt" --tls-key "$d/server.key")
    scheme=https
  fi
  rm -f "$d/port" "$d/imds-port" "$d/vault.env"
  # why: restart must come back with the same extra arguments.
  if [ $# -gt 0 ]; then printf '%s\0' "$@" >"$d/extra-args"; else : >"$d/extra-args"; fi
  "$PY" "$here/vault_standin.py" "${args[@]}" "$@" </dev/null >>"$d/standin.log" 2>&1 &
  local pid=$!
  echo "$pid" >"$d/pid"
  local i=0
  while { [ ! -s "$d/port" ] || [ ! -s "$d/imds-port" ]; } && [ $i -lt $((START_TIMEOUT_S * 10)) ]; do
    kill -0 "$pid" 2>/dev/null || { tail -20 "$d/standin.log" >&2; rm -f "$d/pid"; die "the stand-in exited during start"; }
    sleep 0.1; i=$((i + 1))
  done
  [ -s "$d/port" ] && [ -s "$d/imds-port" ] || { do_stop "$d"; die "the stand-in did not listen within ${START_TIMEOUT_S}s"; }
  vport=$(cat "$d/port"); iport=$(cat "$d/imds-port")
  local addr="$scheme://127.0.0.1:$vport"
  local curl_tls=()
  [ "$tls" = 1 ] && curl_tls=(--cacert "$d/ca.crt")
  i=0
  until curl -s -o /dev/null --max-time 2 "${curl_tls[@]}" "$addr/v1/sys/health"; do
    i=$((i + 1))
    [ $i -lt $((START_TIMEOUT_S * 5)) ] || { do_stop "$d"; die "the stand-in does not answer at $addr"; }
    sleep 0.2
  done
  {
    echo "# VAULT STAND-IN (not HashiCorp Vault), started by tests/stand-ins/vault/standin.sh"
    echo "VAULT_ADDR=$addr"
    echo "VAULT_TOKEN_FILE=$d/token"
    echo "IMDS_ADDR=http://127.0.0.1:$iport"
    echo "PID=$pid"
    [ "$tls" = 1 ] && echo "VAULT_CACERT=$d/ca.crt"
    echo "VAULT_PORT=$vport"
    echo "IMDS_PORT=$iport"
    echo "STANDIN_DIR=$d"
    echo "STANDIN_CONTROL=$addr/stand-in"
    echo "AZURE_ROLE=kmsd"
    echo "AZURE_RESOURCE=https://vault.hashicorp.com/"
    echo "TLS=$tls"
  } >"$d/vault.env.tmp"
  mv "$d/vault.env.tmp" "$d/vault.env"
  echo "VAULT STAND-IN (not HashiCorp Vault) running: $addr (PID $pid), IMDS http://127.0.0.1:$iport; env in $d/vault.env"
}

env_get() { # env_get FILE KEY
  sed -n "s/^$2=//p" "$1" | head -1
}

cmd=${1:-}
dir=${2:-}
[ -n "$cmd" ] && [ -n "$dir" ] || die "usage: standin.sh start DIR [--tls] [-- ARGS...] | stop DIR | restart DIR"
shift 2
case "$cmd" in
  start)
    tls=0
    while [ $# -gt 0 ]; do
      case "$1" in
        --tls) tls=1; shift ;;
        --) shift; break ;;
        *) die "unknown option $1 (extra stand-in arguments go after --)" ;;
      esac
    done
    do_start "$dir" "$tls" 0 0 0 "$@"
    ;;
  stop)
    do_stop "$dir"
    ;;
  restart)
    [ -f "$dir/vault.env" ] || die "no $dir/vault.env: start it first"
    vport=$(env_get "$dir/vault.env" VAULT_PORT)
    iport=$(env_get "$dir/vault.env" IMDS_PORT)
    tls=$(env_get "$dir/vault.env" TLS)
    extra=()
    if [ -s "$dir/extra-args" ]; then mapfile -d '' extra <"$dir/extra-args"; fi
    do_stop "$dir"
    do_start "$dir" "${tls:-0}" "$vport" "$iport" 1 "${extra[@]}"
    ;;
  *)
    die "unknown command $cmd"
    ;;
esac
