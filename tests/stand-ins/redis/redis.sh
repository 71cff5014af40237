#!/usr/bin/env bash
# A real Redis for the tests: redis-server (Debian redis-server) on 127.0.0.1,
# no persistence, in DIR.
#
#   redis.sh start DIR  writes DIR/redis.conf (a free port, no RDB/AOF, optional
#                       requirepass from KMS_REDIS_PASSWORD, read on the first
#                       start only), starts redis-server in its own process
#                       group, waits (10 s at most) until it answers PING;
#                       writes DIR/redis.env. Idempotent: a running server is
#                       left alone; a stopped one starts again on the same
#                       port with the same configuration (and no data).
#   redis.sh stop DIR   SIGTERM to the PID, up to 10 s, then SIGKILL.
#
# DIR/redis.env (shell syntax): REDIS_HOST REDIS_PORT REDIS_PID REDIS_DIR
# REDIS_LOG, REDIS_PASSWORD (only when one was set; the file is mode 600).
# Every wait is bounded.
set -euo pipefail

cmd=${1:-}
dir=${2:-}
[ -n "$cmd" ] && [ -n "$dir" ] || { echo "usage: redis.sh start|stop DIR" >&2; exit 2; }
mkdir -p "$dir"
dir=$(cd "$dir" && pwd)
env_file=$dir/redis.env
conf=$dir/redis.conf
umask 077

alive() { [ -n "${1:-}" ] && kill -0 "$1" 2>/dev/null; }

read_env() {
  REDIS_PID=""
  REDIS_PORT=""
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
  local out
  if [ -n "${REDIS_PASSWORD:-}" ]; then
    out=$(REDISCLI_AUTH=$REDIS_PASSWORD timeout 2 redis-cli -h 127.0.0.1 -p "$REDIS_PORT" ping 2>/dev/null || true)
  else
    out=$(timeout 2 redis-cli -h 127.0.0.1 -p "$REDIS_PORT" ping 2>/dev/null || true)
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
    [ -z "${REDIS_PASSWORD:-}" ] || echo "REDIS_PASSWORD=$REDIS_PASSWORD"
  } > "$env_file.tmp"
  mv "$env_file.tmp" "$env_file"
}

start() {
  read_env
  if alive "$REDIS_PID"; then
    return 0
  fi
  if [ ! -f "$conf" ]; then
    REDIS_PORT=$(free_port)
    REDIS_PASSWORD=${KMS_REDIS_PASSWORD:-}
    case "$REDIS_PASSWORD" in
      *[!A-Za-z0-9._-]*) echo "redis.sh: KMS_REDIS_PASSWORD must be [A-Za-z0-9._-]" >&2; exit 2 ;;
    esac
    {
      echo "bind 127.0.0.1"
      echo "port $REDIS_PORT"
      echo "protected-mode yes"
      echo "daemonize no"
      echo "save \"\""
      echo "appendonly no"
      echo "dir $dir"
      echo "logfile $dir/redis.log"
      echo "databases 16"
      [ -z "$REDIS_PASSWORD" ] || echo "requirepass $REDIS_PASSWORD"
    } > "$conf"
  fi
  setsid redis-server "$conf" < /dev/null > /dev/null 2>&1 &
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
  *) echo "usage: redis.sh start|stop DIR" >&2; exit 2 ;;
esac
