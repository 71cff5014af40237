#!/usr/bin/env bash
# The cluster topology of deploy/docker-compose.yml without Docker, on loopback:
# HAProxy + 3 kmsd nodes + Redis + a KMIP server (PyKMIP), one dev PKI.
#
#   local-cluster.sh up DIR           PKI, cluster key, redis-server, PyKMIP (master key
#                                     kms-master made once with kmsctl hsm create-key),
#                                     kmsd on 127.0.1.11, .12, .13 (one port), HAProxy on
#                                     127.0.1.10; writes DIR/cluster.env. DIR must not hold
#                                     a running cluster.
#   local-cluster.sh down DIR         everything stopped by PID (bounded waits)
#   local-cluster.sh status DIR       what runs, node readiness, HAProxy's view
#   local-cluster.sh stop-node DIR N  / start-node DIR N     one kmsd node (N = 1..3)
#   local-cluster.sh stop-redis DIR   / start-redis DIR      Redis (same port on restart)
#
# Binaries: $KMS_BUILD_DIR/server/kmsd and $KMS_BUILD_DIR/cli/kmsctl (default build/).
# env: KMS_CLUSTER_CACHE=distributed (default) | local   the nodes' kms.cache.type
#      KMS_CLUSTER_LOOPBACK=127.0.1 (default) | 127.0.0.1: with 127.0.0.1 (or when
#      127.0.1.x cannot be bound) every server listens on 127.0.0.1 with its own port.
# Needs: redis-server, redis-cli, haproxy, /usr/bin/python3 + python3-pykmip, openssl,
# keytool, curl. Every server binds loopback only; every wait is bounded.
#
# DIR/cluster.env (shell syntax): CLUSTER_DIR CLUSTER_PKI CLUSTER_PASSWORD
#   CLUSTER_HAPROXY_ADDR CLUSTER_HAPROXY_PORT CLUSTER_HAPROXY_PID CLUSTER_STATS_PORT
#   CLUSTER_NODE{1,2,3}_ADDR _PORT _PID _DIR  CLUSTER_REDIS_PORT CLUSTER_REDIS_PID
#   CLUSTER_REDIS_PASSWORD_FILE (Redis: ACL user kmsd, this password; the default user too)
#   CLUSTER_PYKMIP_PORT CLUSTER_PYKMIP_PID CLUSTER_PYKMIP_LOG CLUSTER_KMSD CLUSTER_KMSCTL
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/.." && pwd)
cmd=${1:-}
dir=${2:-}
[ -n "$cmd" ] && [ -n "$dir" ] || {
  echo "usage: local-cluster.sh up|down|status DIR | stop-node|start-node DIR N | stop-redis|start-redis DIR" >&2
  exit 2
}
mkdir -p "$dir"
dir=$(cd "$dir" && pwd)
env_file=$dir/cluster.env
py=/usr/bin/python3
redis_sh=$root/tests/stand-ins/redis/redis.sh
pykmip_sh=$root/tests/stand-ins/pykmip/pykmip.sh
render=$here/templates/render.sh
# why: kmsd warns about (or, strict, refuses) KMS_* variables it does not know
scrub="env -u KMS_BUILD_DIR -u KMS_CLUSTER_CACHE -u KMS_CLUSTER_LOOPBACK -u KMS_CLUSTER_LOG_LEVEL -u KMS_CLUSTER_NAME"

log() { echo "local-cluster: $*"; }
die() { echo "local-cluster: $*" >&2; exit 1; }
alive() { # alive PID: running; why not kill -0 alone: a daemon that exited stays a
  # zombie until PID 1 reaps it, a second or more in some containers
  [ -n "${1:-}" ] && kill -0 "$1" 2>/dev/null || return 1
  case $(sed 's/.*) //' "/proc/$1/stat" 2>/dev/null) in Z*) return 1 ;; esac
}

wait_gone() { # wait_gone PID TENTHS -> 0 when gone
  local pid=$1 n=$2
  while [ "$n" -gt 0 ]; do
    alive "$pid" || return 0
    sleep 0.1
    n=$((n - 1))
  done
  ! alive "$pid"
}

stop_pid() { # stop_pid PID NAME: SIGTERM, 20 s, SIGKILL
  local pid=$1 name=$2
  alive "$pid" || return 0
  kill -TERM "$pid" 2>/dev/null || true
  if ! wait_gone "$pid" 200; then
    echo "local-cluster: $name (PID $pid) still running 20 s after SIGTERM; SIGKILL" >&2
    kill -KILL "$pid" 2>/dev/null || true
    wait_gone "$pid" 50 || true
  fi
}

can_bind() { # can_bind ADDR PORT
  "$py" -c 'import socket,sys
s=socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
try:
    s.bind((sys.argv[1], int(sys.argv[2])))
except OSError:
    sys.exit(1)' "$1" "$2" 2>/dev/null
}

free_port() { # free_port ADDR...: one port free on every ADDR
  local port a ok
  for _ in $(seq 50); do
    port=$("$py" -c 'import socket,sys; s=socket.socket(); s.bind((sys.argv[1],0)); print(s.getsockname()[1])' "$1")
    ok=1
    for a in "$@"; do can_bind "$a" "$port" || { ok=0; break; }; done
    [ $ok = 1 ] && { echo "$port"; return 0; }
  done
  die "no port free on $* after 50 tries"
}

kms_build() {
  local b=${KMS_BUILD_DIR:-$root/build}
  KMSD=$b/server/kmsd
  KMSCTL=$b/cli/kmsctl
  [ -x "$KMSD" ] || die "$KMSD missing: build first (cmake --build build) or set KMS_BUILD_DIR"
  [ -x "$KMSCTL" ] || die "$KMSCTL missing: build first or set KMS_BUILD_DIR"
}

read_env() {
  [ -f "$env_file" ] || die "no $env_file (local-cluster.sh up $dir first)"
  # shellcheck disable=SC1090
  . "$env_file"
}

set_env() { # set_env NAME VALUE: update one line of cluster.env
  local tmp=$env_file.tmp.$$
  { grep -v "^$1=" "$env_file" || true; echo "$1=$2"; } > "$tmp"
  mv "$tmp" "$env_file"
}

make_pki() { # dev PKI (kmsServer SANs: HAProxy and the nodes), cmxAdmin, cluster key
  KMSCTL=$KMSCTL "$here/templates/cluster-pki.sh" "$dir" "IP:$1,IP:$2,IP:$3,IP:$4"
}

render_node() { # render_node N: its kms.properties and its own keystore file, seeded once
  local n=$1 ndir=$dir/node$1
  mkdir -p "$ndir/keystore"
  [ -f "$ndir/keystore/kms.jks" ] || install -m 0600 "$dir/pki/kms.jks" "$ndir/keystore/kms.jks"
  local addr_var=CLUSTER_NODE${n}_ADDR port_var=CLUSTER_NODE${n}_PORT
  NODE_NAME=node$n NODE_ADDRESS=${!addr_var} NODE_PORT=${!port_var} PKI_DIR=$dir/pki \
  PROXY_TRUSTED=${CLUSTER_PROXY_SOURCE:-} \
  KEYSTORE_FILE=$ndir/keystore/kms.jks CLUSTER_NAME=${KMS_CLUSTER_NAME:-local} \
  HSM_HOST=127.0.0.1 HSM_PORT=$CLUSTER_PYKMIP_PORT CACHE_TYPE=${KMS_CLUSTER_CACHE:-distributed} \
  REDIS_URL=redis://kmsd@127.0.0.1:$CLUSTER_REDIS_PORT/0 REDIS_PASSWORD_FILE=$dir/redis-password \
  CLUSTER_KEY_FILE=$dir/cluster.key AUDIT_FILE=$ndir/audit.log LOG_LEVEL=${KMS_CLUSTER_LOG_LEVEL:-info} \
    "$render" "$here/templates/kms.properties.in" "$ndir/kms.properties"
}

start_node() { # start_node N: kmsd in DIR/nodeN, waits (30 s) for /health/live
  local n=$1 ndir=$dir/node$1
  local addr_var=CLUSTER_NODE${n}_ADDR port_var=CLUSTER_NODE${n}_PORT
  local addr=${!addr_var} port=${!port_var}
  rm -f "$ndir/kmsd.rc" "$ndir/kmsd.pid"
  # The wrapper records kmsd's exit status; kmsd's own PID is what is signalled.
  ( $scrub "$CLUSTER_KMSD" --config "$ndir/kms.properties" 2>>"$ndir/kmsd.log" & echo $! > "$ndir/kmsd.pid"; wait $!
    echo $? > "$ndir/kmsd.rc" ) </dev/null >/dev/null 2>&1 &
  local deadline=$((SECONDS + 30))
  until curl -fsS --max-time 2 --cacert "$dir/pki/rootCA.crt" "https://$addr:$port/health/live" >/dev/null 2>&1; do
    if [ -f "$ndir/kmsd.rc" ] || [ $SECONDS -ge $deadline ]; then
      echo "local-cluster: node$n did not come up on $addr:$port; log tail:" >&2
      tail -n 15 "$ndir/kmsd.log" >&2 || true
      [ -f "$ndir/kmsd.pid" ] && stop_pid "$(cat "$ndir/kmsd.pid")" "node$n"
      return 1
    fi
    sleep 0.2
  done
  set_env "CLUSTER_NODE${n}_PID" "$(cat "$ndir/kmsd.pid")"
  log "node$n: kmsd PID $(cat "$ndir/kmsd.pid") on $addr:$port"
}

stop_node() { # stop_node N
  local ndir=$dir/node$1
  [ -f "$ndir/kmsd.pid" ] || return 0
  local pid; pid=$(cat "$ndir/kmsd.pid")
  stop_pid "$pid" "node$1"
  local n=50
  while [ ! -f "$ndir/kmsd.rc" ] && [ $n -gt 0 ]; do sleep 0.1; n=$((n - 1)); done
  rm -f "$ndir/kmsd.pid"
  log "node$1: stopped (status $(cat "$ndir/kmsd.rc" 2>/dev/null || echo '?'))"
}

start_redis() { # ACL user kmsd, password from DIR/redis-password (cluster-pki.sh)
  KMS_REDIS_USER=kmsd KMS_REDIS_PASSWORD=$(cat "$dir/redis-password") "$redis_sh" start "$dir/redis"
  # shellcheck disable=SC1091
  . "$dir/redis/redis.env"
  set_env CLUSTER_REDIS_PORT "$REDIS_PORT"
  set_env CLUSTER_REDIS_PID "$REDIS_PID"
  set_env CLUSTER_REDIS_PASSWORD_FILE "$dir/redis-password"
  log "redis-server PID $REDIS_PID on 127.0.0.1:$REDIS_PORT"
}

up() {
  kms_build
  if [ -f "$env_file" ]; then
    # shellcheck disable=SC1090
    . "$env_file"
    for p in "${CLUSTER_HAPROXY_PID:-}" "${CLUSTER_NODE1_PID:-}" "${CLUSTER_REDIS_PID:-}" "${CLUSTER_PYKMIP_PID:-}"; do
      alive "$p" && die "$dir holds a running cluster (PID $p): local-cluster.sh down $dir first"
    done
    rm -rf "$dir" && mkdir -p "$dir"
  fi
  trap 'echo "local-cluster: up failed; stopping what started" >&2; down_all' ERR
  local base=${KMS_CLUSTER_LOOPBACK:-127.0.1}
  local ha n1 n2 n3 proxy_source=''
  if [ "$base" != 127.0.0.1 ] && can_bind "$base.10" 0 && can_bind "$base.11" 0; then
    ha=$base.10 n1=$base.11 n2=$base.12 n3=$base.13
    # why a source address of its own: kmsd trusts PROXY headers from it alone,
    # while clients on other loopback addresses reach the nodes directly
    proxy_source=$base.9
  else
    [ "$base" = 127.0.0.1 ] || log "cannot bind $base.x here: every server on 127.0.0.1, one port each"
    ha=127.0.0.1 n1=127.0.0.1 n2=127.0.0.1 n3=127.0.0.1
  fi
  local node_port p1 p2 p3
  if [ "$n1" != "$n2" ]; then
    node_port=$(free_port "$n1" "$n2" "$n3"); p1=$node_port p2=$node_port p3=$node_port
  else
    p1=$(free_port "$n1"); p2=$(free_port "$n1"); p3=$(free_port "$n1")
  fi
  local ha_port stats_port
  ha_port=$(free_port "$ha"); stats_port=$(free_port 127.0.0.1)
  log "PKI in $dir/pki"
  make_pki "$ha" "$n1" "$n2" "$n3"
  cat > "$env_file" <<ENV
CLUSTER_DIR=$dir
CLUSTER_PKI=$dir/pki
CLUSTER_PASSWORD=$(cat "$dir/pki/password.txt")
CLUSTER_KMSD=$KMSD
CLUSTER_KMSCTL=$KMSCTL
CLUSTER_HAPROXY_ADDR=$ha
CLUSTER_PROXY_SOURCE=$proxy_source
CLUSTER_HAPROXY_PORT=$ha_port
CLUSTER_STATS_PORT=$stats_port
CLUSTER_NODE1_ADDR=$n1
CLUSTER_NODE1_PORT=$p1
CLUSTER_NODE1_DIR=$dir/node1
CLUSTER_NODE2_ADDR=$n2
CLUSTER_NODE2_PORT=$p2
CLUSTER_NODE2_DIR=$dir/node2
CLUSTER_NODE3_ADDR=$n3
CLUSTER_NODE3_PORT=$p3
CLUSTER_NODE3_DIR=$dir/node3
ENV
  chmod 600 "$env_file"
  start_redis
  # why: PyKMIP in its own folder, sharing DIR/pki: the dev CA signs kmsd's
  # kmsClient certificate, and kmsd's kmipSigningCA signs PyKMIP's certificate
  KMS_PYKMIP_PKI=$dir/pki "$pykmip_sh" start "$dir/pykmip" >/dev/null
  # shellcheck disable=SC1091
  . "$dir/pykmip/pykmip.env"
  set_env CLUSTER_PYKMIP_PORT "$PYKMIP_PORT"
  set_env CLUSTER_PYKMIP_PID "$PYKMIP_PID"
  set_env CLUSTER_PYKMIP_LOG "$PYKMIP_LOG"
  log "PyKMIP PID $PYKMIP_PID on 127.0.0.1:$PYKMIP_PORT"
  read_env
  local n
  for n in 1 2 3; do render_node "$n"; done
  # the operator's way: kmsctl hsm, with a node's configuration and identity
  $scrub KMS_CONFIG="$dir/node1/kms.properties" "$KMSCTL" hsm create-key kms-master > "$dir/create-key.out" 2>&1 ||
    { cat "$dir/create-key.out" >&2; false; }
  for n in 1 2 3; do start_node "$n"; done
  local proxy_opts=''
  [ -n "$CLUSTER_PROXY_SOURCE" ] && proxy_opts="send-proxy-v2 check-send-proxy source $CLUSTER_PROXY_SOURCE"
  PROXY_OPTS=$proxy_opts HAPROXY_BIND=$ha:$ha_port STATS_BIND=127.0.0.1:$stats_port \
  NODE1_NAME=node1 NODE1_ADDR=$n1:$p1 NODE2_NAME=node2 NODE2_ADDR=$n2:$p2 NODE3_NAME=node3 NODE3_ADDR=$n3:$p3 \
    "$render" "$here/templates/haproxy.cfg.in" "$dir/haproxy.cfg"
  haproxy -q -c -f "$dir/haproxy.cfg"
  setsid haproxy -db -f "$dir/haproxy.cfg" </dev/null >"$dir/haproxy.log" 2>&1 &
  local hpid=$!
  set_env CLUSTER_HAPROXY_PID "$hpid"
  local deadline=$((SECONDS + 20))
  until curl -fsS --max-time 2 --cacert "$dir/pki/rootCA.crt" "https://$ha:$ha_port/health/ready" >/dev/null 2>&1; do
    alive "$hpid" || { tail -n 20 "$dir/haproxy.log" >&2; die "haproxy exited"; }
    [ $SECONDS -lt $deadline ] || die "HAProxy on $ha:$ha_port: no ready node within 20 s"
    sleep 0.2
  done
  trap - ERR
  log "HAProxy PID $hpid on $ha:$ha_port, stats http://127.0.0.1:$stats_port/stats"
  log "up; environment in $env_file"
}

down_all() { # stops whatever cluster.env and the PID files name; never fails
  set +e
  if [ -f "$env_file" ]; then
    # shellcheck disable=SC1090
    . "$env_file"
  fi
  [ -n "${CLUSTER_HAPROXY_PID:-}" ] && stop_pid "$CLUSTER_HAPROXY_PID" haproxy
  local n
  for n in 1 2 3; do stop_node "$n" >/dev/null; done
  [ -f "$dir/pykmip/pykmip.env" ] && "$pykmip_sh" stop "$dir/pykmip" >/dev/null
  [ -f "$dir/redis/redis.env" ] && "$redis_sh" stop "$dir/redis" >/dev/null
  set -e
  return 0
}

down() {
  down_all
  local n bad=0
  for n in 1 2 3; do
    if [ -f "$dir/node$n/kmsd.log" ] &&
       grep -qE 'ERROR: (AddressSanitizer|LeakSanitizer)|runtime error:' "$dir/node$n/kmsd.log"; then
      echo "local-cluster: sanitizer report in $dir/node$n/kmsd.log" >&2; bad=1
    fi
  done
  log "down"
  return $bad
}

status() {
  read_env
  local n addr_var port_var r
  printf '%-8s %-8s %-22s %s\n' what pid address state
  r=down; alive "${CLUSTER_HAPROXY_PID:-}" && r=running
  printf '%-8s %-8s %-22s %s\n' haproxy "${CLUSTER_HAPROXY_PID:-}" "$CLUSTER_HAPROXY_ADDR:$CLUSTER_HAPROXY_PORT" $r
  for n in 1 2 3; do
    addr_var=CLUSTER_NODE${n}_ADDR port_var=CLUSTER_NODE${n}_PORT
    r=$(curl -s -o /dev/null -w '%{http_code}' --max-time 3 --cacert "$CLUSTER_PKI/rootCA.crt" \
        "https://${!addr_var}:${!port_var}/health/ready" 2>/dev/null || true)
    alive "$(cat "$dir/node$n/kmsd.pid" 2>/dev/null)" || r="down"
    printf '%-8s %-8s %-22s %s\n' "node$n" "$(cat "$dir/node$n/kmsd.pid" 2>/dev/null)" "${!addr_var}:${!port_var}" \
      "ready=$r"
  done
  r=down; alive "${CLUSTER_REDIS_PID:-}" && r=running
  printf '%-8s %-8s %-22s %s\n' redis "${CLUSTER_REDIS_PID:-}" "127.0.0.1:$CLUSTER_REDIS_PORT" $r
  r=down; alive "${CLUSTER_PYKMIP_PID:-}" && r=running
  printf '%-8s %-8s %-22s %s\n' pykmip "${CLUSTER_PYKMIP_PID:-}" "127.0.0.1:$CLUSTER_PYKMIP_PORT" $r
  if alive "${CLUSTER_HAPROXY_PID:-}"; then
    echo "HAProxy's view (backend kmsd_nodes):"
    curl -fsS --max-time 3 "http://127.0.0.1:$CLUSTER_STATS_PORT/stats;csv" 2>/dev/null |
      awk -F, '$1 == "kmsd_nodes" && $2 != "BACKEND" { printf "  %-8s %s\n", $2, $18 }'
  fi
}

case "$cmd" in
  up) up ;;
  down) down ;;
  status) status ;;
  stop-node) read_env; stop_node "${3:?N}" ;;
  start-node) read_env; start_node "${3:?N}" ;;
  stop-redis) read_env; "$redis_sh" stop "$dir/redis"; log "redis stopped" ;;
  start-redis) read_env; start_redis ;;
  *) echo "usage: local-cluster.sh up|down|status DIR | stop-node|start-node DIR N | stop-redis|start-redis DIR" >&2
     exit 2 ;;
esac
