#!/usr/bin/env bash
# A real Redis for the tests: redis-server (Debian redis-server) on 127.0.0.1,
# no persistence, in DIR.
#
#   redis.sh start DIR  writes DIR/redis.conf (a free port, no RDB/AOF, read on
#                       the first start only), starts redis-server in its own
#                       process group, waits (10 s at most) until it answers
#                       PING; writes DIR/redis.env. Idempotent: a running
#                       server is left alone; a stopped one starts again on
#                       the same port with the same configuration (and no data).
#   redis.sh stop DIR   SIGTERM to the PID, up to 10 s, then SIGKILL.
#   redis.sh pki DIR    test PKI (openssl) in DIR: ca.crt/.key, server.crt/.key
#                       (SANs IP:127.0.0.1, DNS:redis.test), client.crt/.key
#                       (signed by ca), other-ca.crt (a CA that signed nothing
#                       here). Keys unencrypted, mode 600. Idempotent.
#
# Options of the first start (environment):
#   KMS_REDIS_PASSWORD=pw       requirepass (or the ACL user's password), [A-Za-z0-9._-]
#   KMS_REDIS_USER=name         with a password: an ACL user holding it (least
#                               privilege: the commands kmsd and a replica or
#                               sentinel send, keys under kms:* and t-*); the
#                               default user keeps full access with the same
#                               password, for the tests' own inspection
#   KMS_REDIS_TLS=PKIDIR        also a TLS port (tls-port; the plain port stays
#                               for the tests' own checks) with PKIDIR's server
#                               certificate; replication over TLS
#   KMS_REDIS_TLS_ONLY=1        with KMS_REDIS_TLS: no plain port
#   KMS_REDIS_TLS_AUTH_CLIENTS=yes|no   require a client certificate (default no)
#   KMS_REDIS_REPLICAOF="host port"     start as a replica
#   KMS_REDIS_SENTINEL="name host port" run as a Sentinel (quorum 1,
#                               down-after 1000 ms) monitoring that master
#                               (KMS_REDIS_PASSWORD/USER: the master's)
#   KMS_REDIS_SENTINEL_PASSWORD=pw      the Sentinel's own requirepass
#
# DIR/redis.env (shell syntax): REDIS_HOST REDIS_PORT REDIS_PID REDIS_DIR
# REDIS_LOG, REDIS_TLS_PORT (with TLS), REDIS_USER, REDIS_PASSWORD (only when
# set; the file is mode 600). REDIS_PORT is the plain port (the TLS port when
# TLS_ONLY). Every wait is bounded.
set -euo pipefail

cmd=${1:-}
dir=${2:-}
[ -n "$cmd" ] && [ -n "$dir" ] || { echo "usage: redis.sh start|stop|pki DIR" >&2; exit 2; }
mkdir -p "$dir"
dir=$(cd "$dir" && pwd)
env_file=$dir/redis.env
conf=$dir/redis.conf
umask 077

alive() { # alive PID: running; why not kill -0 alone: a daemon that exited stays a
  # zombie until PID 1 reaps it, a second or more in some containers
  [ -n "${1:-}" ] && kill -0 "$1" 2>/dev/null || return 1
  case $(sed 's/.*) //' "/proc/$1/stat" 2>/dev/null) in Z*) return 1 ;; esac
}

read_env() {
  REDIS_PID=""
  REDIS_PORT=""
  REDIS_TLS_PORT=""
  REDIS_TLS_DIR=""
  REDIS_TLS_ONLY=""
  REDIS_USER=""
  REDIS_PASSWORD=""
  if [ -f "$env_file" ]; then
    # shellcheck disable=SC1090
    . "$env_file"
  fi
}

wait_gone() {
  local pid=$1 n=$2
  while [ "$n" -gt 0 ]; do
    alive "$pid" || return 0
    sleep 0.1
    n=$((n - 1))
  done
  ! alive "$pid"
}

free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()'
}

ping() {
  local out args=(-h 127.0.0.1 -p "$REDIS_PORT")
  if [ "${REDIS_TLS_ONLY:-}" = 1 ]; then
    args+=(--tls --cacert "$REDIS_TLS_DIR/ca.crt" --cert "$REDIS_TLS_DIR/client.crt" --key "$REDIS_TLS_DIR/client.key")
  fi
  [ -z "${REDIS_USER:-}" ] || args+=(--user "$REDIS_USER")
  if [ -n "${REDIS_PASSWORD:-}" ]; then
    out=$(REDISCLI_AUTH=$REDIS_PASSWORD timeout 2 redis-cli "${args[@]}" ping 2>/dev/null || true)
  else
    out=$(timeout 2 redis-cli "${args[@]}" ping 2>/dev/null || true)
  fi
  [ "$out" = PONG ]
}

write_env() {
  {
    echo "REDIS_HOST=127.0.0.1"
    echo "REDIS_PORT=$REDIS_PORT"
    echo "REDIS_PID=$REDIS_PID"
    echo "REDIS_DIR=$dir"
    echo "REDIS_LOG=$dir/redis.log"
    [ -z "${REDIS_TLS_PORT:-}" ] || echo "REDIS_TLS_PORT=$REDIS_TLS_PORT"
    [ -z "${REDIS_TLS_DIR:-}" ] || echo "REDIS_TLS_DIR=$REDIS_TLS_DIR"
    [ -z "${REDIS_TLS_ONLY:-}" ] || echo "REDIS_TLS_ONLY=$REDIS_TLS_ONLY"
    [ -z "${REDIS_USER:-}" ] || echo "REDIS_USER=$REDIS_USER"
    [ -z "${REDIS_PASSWORD:-}" ] || echo "REDIS_PASSWORD=$REDIS_PASSWORD"
  } > "$env_file.tmp"
  mv "$env_file.tmp" "$env_file"
}

pki() {
  [ -f "$dir/client.crt" ] && return 0
  local d=$dir
  openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj "/CN=kmsd test Redis CA" \
    -keyout "$d/ca.key" -out "$d/ca.crt" 2>/dev/null
  openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj "/CN=another CA" \
    -keyout "$d/other-ca.key" -out "$d/other-ca.crt" 2>/dev/null
  printf 'subjectAltName=IP:127.0.0.1,DNS:redis.test\nextendedKeyUsage=serverAuth,clientAuth\n' > "$d/server.ext"
  printf 'extendedKeyUsage=clientAuth\n' > "$d/client.ext"
  local who
  for who in server client; do
    openssl req -newkey rsa:2048 -nodes -subj "/CN=redis-test-$who" -keyout "$d/$who.key" -out "$d/$who.csr" 2>/dev/null
    openssl x509 -req -in "$d/$who.csr" -CA "$d/ca.crt" -CAkey "$d/ca.key" -CAcreateserial -days 2 \
      -extfile "$d/$who.ext" -out "$d/$who.crt" 2>/dev/null
  done
  chmod 600 "$d"/*.key
}

start() {
  read_env
  if alive "$REDIS_PID"; then
    return 0
  fi
  local sentinel=""
  if [ ! -f "$conf" ]; then
    REDIS_PORT=$(free_port)
    REDIS_PASSWORD=${KMS_REDIS_PASSWORD:-}
    REDIS_USER=${KMS_REDIS_USER:-}
    case "$REDIS_PASSWORD$REDIS_USER" in
      *[!A-Za-z0-9._-]*) echo "redis.sh: KMS_REDIS_PASSWORD/USER must be [A-Za-z0-9._-]" >&2; exit 2 ;;
    esac
    [ -z "$REDIS_USER" ] || [ -n "$REDIS_PASSWORD" ] || { echo "redis.sh: KMS_REDIS_USER needs KMS_REDIS_PASSWORD" >&2; exit 2; }
    local tls=${KMS_REDIS_TLS:-}
    [ -z "$tls" ] || { REDIS_TLS_DIR=$(cd "$tls" && pwd); REDIS_TLS_PORT=$(free_port); }
    {
      echo "bind 127.0.0.1"
      if [ -n "$tls" ] && [ "${KMS_REDIS_TLS_ONLY:-}" = 1 ]; then
        echo "port 0"
      else
        echo "port $REDIS_PORT"
      fi
      echo "protected-mode yes"
      echo "daemonize no"
      echo "dir $dir"
      echo "logfile $dir/redis.log"
      if [ -n "$tls" ]; then
        echo "tls-port $REDIS_TLS_PORT"
        echo "tls-cert-file $REDIS_TLS_DIR/server.crt"
        echo "tls-key-file $REDIS_TLS_DIR/server.key"
        echo "tls-ca-cert-file $REDIS_TLS_DIR/ca.crt"
        echo "tls-auth-clients ${KMS_REDIS_TLS_AUTH_CLIENTS:-no}"
        echo "tls-replication yes"
      fi
      if [ -n "${KMS_REDIS_SENTINEL:-}" ]; then
        # shellcheck disable=SC2086
        set -- $KMS_REDIS_SENTINEL
        echo "sentinel monitor $1 $2 $3 1"
        echo "sentinel down-after-milliseconds $1 1000"
        echo "sentinel failover-timeout $1 10000"
        echo "sentinel resolve-hostnames no"
        [ -z "$REDIS_PASSWORD" ] || echo "sentinel auth-pass $1 $REDIS_PASSWORD"
        [ -z "$REDIS_USER" ] || echo "sentinel auth-user $1 $REDIS_USER"
        # why: the sentinel's own password is another one; redis.env and PING use it
        REDIS_PASSWORD=${KMS_REDIS_SENTINEL_PASSWORD:-}
        REDIS_USER=""
        [ -z "$REDIS_PASSWORD" ] || echo "requirepass $REDIS_PASSWORD"
      else
        echo "save \"\""
        echo "appendonly no"
        echo "databases 16"
        [ -z "${KMS_REDIS_REPLICAOF:-}" ] || echo "replicaof $KMS_REDIS_REPLICAOF"
        if [ -n "$REDIS_USER" ]; then
          # why: the default user (same password) is the tests' and operators' full-access view;
          # kmsd logs in as the least-privilege user
          echo "user default on >$REDIS_PASSWORD ~* &* +@all"
          echo "user $REDIS_USER on >$REDIS_PASSWORD ~kms:* ~t-* resetchannels -@all +get +set +incr +scan +select +ping +role +info +psync +replconf +multi +exec +slaveof +replicaof +config|rewrite +client +subscribe +publish +script|kill +eval +time +lpush +lrange +llen +rpop +del &__sentinel__:hello &kms:*"
          echo "masteruser $REDIS_USER"
          echo "masterauth $REDIS_PASSWORD"
        elif [ -n "$REDIS_PASSWORD" ]; then
          echo "requirepass $REDIS_PASSWORD"
          echo "masterauth $REDIS_PASSWORD"
        fi
      fi
    } > "$conf"
    [ -z "${KMS_REDIS_SENTINEL:-}" ] || : > "$dir/sentinel"
    if [ -n "$tls" ] && [ "${KMS_REDIS_TLS_ONLY:-}" = 1 ]; then
      REDIS_TLS_ONLY=1
      REDIS_PORT=$REDIS_TLS_PORT
    fi
  fi
  [ ! -f "$dir/sentinel" ] || sentinel=--sentinel
  setsid redis-server "$conf" $sentinel < /dev/null > /dev/null 2>&1 &
  REDIS_PID=$!
  local n=100
  until ping; do
    if ! alive "$REDIS_PID" || [ "$n" -le 0 ]; then
      echo "redis.sh: redis-server did not answer on port $REDIS_PORT; log:" >&2
      tail -n 20 "$dir/redis.log" >&2 2>/dev/null || true
      kill -KILL "$REDIS_PID" 2>/dev/null || true
      exit 1
    fi
    sleep 0.1
    n=$((n - 1))
  done
  write_env
}

stop() {
  read_env
  alive "$REDIS_PID" || return 0
  kill -TERM "$REDIS_PID" 2>/dev/null || true
  if ! wait_gone "$REDIS_PID" 100; then
    kill -KILL "$REDIS_PID" 2>/dev/null || true
    wait_gone "$REDIS_PID" 50 || { echo "redis.sh: PID $REDIS_PID did not exit" >&2; exit 1; }
  fi
}

case "$cmd" in
  start) start ;;
  stop) stop ;;
  pki) pki ;;
  *) echo "usage: redis.sh start|stop|pki DIR" >&2; exit 2 ;;
esac
