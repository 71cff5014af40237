#!/usr/bin/env bash
# The Compose cluster, built and run for real (issue 13): HAProxy + 3 kmsd + Redis
# + PyKMIP + Prometheus, every image built here from debian:bookworm-slim and
# Debian's packages (no registry). The same smoke test as the local cluster:
# the hierarchy through HAProxy on the published loopback port, an unwrap via
# each node, one node stopped -> requests keep succeeding and Prometheus fires
# KmsNodeDown for it; `down` leaves nothing behind. Also: one version everywhere
# (kmsd --version in the image, the image label, /v1/cluster, kms_build_info).
#   tests/container/compose.sh WORKDIR
# Starts dockerd when none answers, and stops (by PID) only what it started.
# Exits 77 (ctest: skipped), saying so loudly, only where no engine can start.
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
work=${1:?usage: compose.sh WORKDIR}
rm -rf "$work"; mkdir -p "$work"
deadline_total=$((SECONDS + 600))
fail() { echo "FAIL: $*" >&2; exit 1; }
ok() { echo "ok: $*"; }
skip_loudly() {
  printf '\n!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!\n' >&2
  printf '!!! SKIPPED: the container stage did not run: %s\n' "$*" >&2
  printf '!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!\n\n' >&2
  exit 77
}

# --- the engine ---------------------------------------------------------------------
dockerd_pid=
project=kmsdit$$
compose() { docker-compose -p "$project" -f "$root/deploy/docker-compose.yml" "$@"; }
cleanup() {
  local rc=$?
  if [ -n "${project_up:-}" ]; then
    if [ $rc -ne 0 ]; then
      compose ps >"$work/ps.txt" 2>&1 || true
      compose logs --no-color --tail 60 >"$work/compose.log" 2>&1 || true
      echo "--- compose logs (tail; all in $work/compose.log)" >&2
      tail -80 "$work/compose.log" >&2 || true
    fi
    compose down -v --remove-orphans >/dev/null 2>&1 || true
  fi
  if [ -n "$dockerd_pid" ]; then
    kill -TERM "$dockerd_pid" 2>/dev/null || true
    for _ in $(seq 100); do kill -0 "$dockerd_pid" 2>/dev/null || break; sleep 0.2; done
  fi
  exit $rc
}
trap cleanup EXIT
command -v docker >/dev/null || skip_loudly "no docker client (apt-get install docker.io)"
command -v docker-compose >/dev/null || skip_loudly "no docker-compose (apt-get install docker-compose)"
if ! docker info >/dev/null 2>&1; then
  command -v dockerd >/dev/null || skip_loudly "no docker engine (apt-get install docker.io)"
  [ "$(id -u)" = 0 ] || skip_loudly "dockerd is not running and only root can start it"
  echo "starting dockerd (log: $work/dockerd.log)"
  dockerd --pidfile "$work/dockerd.pid" >"$work/dockerd.log" 2>&1 &
  dockerd_pid=$!
  for _ in $(seq 150); do docker info >/dev/null 2>&1 && break; kill -0 "$dockerd_pid" 2>/dev/null || break; sleep 0.2; done
  docker info >/dev/null 2>&1 || { tail -20 "$work/dockerd.log" >&2; skip_loudly "dockerd would not start (its log above)"; }
fi
ok "docker engine $(docker version --format '{{.Server.Version}}' 2>/dev/null) ($(docker info --format '{{.Driver}}' 2>/dev/null))"

# --- images -------------------------------------------------------------------------
"$root/deploy/docker/base-image.sh"
version=$(sed -n 's/^project(kmsd VERSION \([0-9.]*\).*/\1/p' "$root/CMakeLists.txt")
[ -n "$version" ] || fail "no project(kmsd VERSION ...) in CMakeLists.txt"
export KMS_BUILD_ID; KMS_BUILD_ID=$(git -C "$root" describe --tags --always --dirty 2>/dev/null || echo unknown)
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
export KMS_HTTPS_PORT KMS_STATS_PORT KMS_PROMETHEUS_PORT
KMS_HTTPS_PORT=$(free_port); KMS_STATS_PORT=$(free_port); KMS_PROMETHEUS_PORT=$(free_port)
t0=$SECONDS
echo "building the images (log: $work/build.log)"
if ! compose build >"$work/build.log" 2>&1; then tail -40 "$work/build.log" >&2; fail "docker-compose build"; fi
ok "images built in $((SECONDS - t0)) s"
# the top-level Dockerfile as a user runs it (the layers are the ones just built)
docker build -q --network host --build-arg KMS_BUILD_ID="$KMS_BUILD_ID" -t kmsd:it-toplevel "$root" >/dev/null \
  || fail "docker build -t kmsd . from the repository root"
for img in kmsd:dev kmsd:it-toplevel; do
  got=$(docker run --rm --entrypoint /usr/local/bin/kmsd "$img" --version)
  [ "$got" = "kmsd $version (build $KMS_BUILD_ID)" ] || fail "$img: kmsd --version says '$got', CMake says $version ($KMS_BUILD_ID)"
  label=$(docker image inspect -f '{{index .Config.Labels "org.opencontainers.image.version"}}' "$img")
  [ "$label" = "$version" ] || fail "$img: label org.opencontainers.image.version=$label, CMake says $version"
  user=$(docker image inspect -f '{{.Config.User}}' "$img")
  [ -n "$user" ] && [ "$user" != root ] && [ "$user" != 0 ] || fail "$img runs as root (User='$user')"
  docker image inspect -f '{{.Config.Healthcheck.Test}}' "$img" | grep -q health/ready || fail "$img has no HEALTHCHECK"
done
docker rmi kmsd:it-toplevel >/dev/null
ok "kmsd --version, the image label: $version (build $KMS_BUILD_ID); non-root, HEALTHCHECK"
# runtime image: no compiler, no -dev package
if docker run --rm --entrypoint sh kmsd:dev -c 'command -v cc || command -v gcc || ls /usr/include/openssl' >/dev/null 2>&1; then
  fail "the kmsd image holds a compiler or headers: runtime libraries only"
fi

# --- up -----------------------------------------------------------------------------
project_up=1
compose up -d >"$work/up.log" 2>&1 || { cat "$work/up.log" >&2; fail "docker-compose up -d"; }
t0=$SECONDS
healthy() { [ "$(docker inspect -f '{{.State.Health.Status}}' "$(compose ps -q "$1")" 2>/dev/null)" = healthy ]; }
until healthy kmsd1 && healthy kmsd2 && healthy kmsd3; do
  [ $((SECONDS - t0)) -lt 240 ] || fail "the kmsd containers were not healthy within 240 s"
  sleep 2
done
ok "3 kmsd nodes healthy $((SECONDS - t0)) s after up"
# published ports: loopback only
docker ps --filter "label=com.docker.compose.project=$project" --format '{{.Ports}}' | tr ',' '\n' | grep -- '->' |
  grep -v '127.0.0.1:' && fail "a port is published beyond 127.0.0.1"
ok "published ports are on 127.0.0.1 only"

docker cp "$(compose ps -q kmsd1)":/cluster/pki "$work/pki" >/dev/null
pw=$(cat "$work/pki/password.txt")
base=https://127.0.0.1:$KMS_HTTPS_PORT
# haproxy is named in kmsServer's SANs; reach it on the published loopback port
api() { # api CERT PATH JSON
  curl -sS --max-time 10 --cacert "$work/pki/rootCA.crt" --resolve "haproxy:$KMS_HTTPS_PORT:127.0.0.1" \
       --cert "$work/pki/$1.p12:$pw" --cert-type P12 -H 'Content-Type: application/json' \
       -w '\n%{http_code}' --data "$3" "https://haproxy:$KMS_HTTPS_PORT$2"
}
field() { python3 -c 'import json,sys; print(json.load(sys.stdin)[sys.argv[1]])' "$1"; }
body() { sed '$d'; }
code() { tail -1; }
out=$(api cmxBackend /v1/customer-keys '{"site_id":"acme"}'); [ "$(echo "$out" | code)" = 201 ] || [ "$(echo "$out" | code)" = 200 ] || fail "customer key: $out"
ck=$(echo "$out" | body | field customer_key)
out=$(api cmxBackend /v1/user-keys "{\"site_id\":\"acme\",\"customer_key\":\"$ck\"}"); uk=$(echo "$out" | body | field user_key)
out=$(api cmxBackend /v1/workspace-keys "{\"site_id\":\"acme\",\"customer_key\":\"$ck\",\"user_key\":\"$uk\"}")
wk=$(echo "$out" | body | field workspace_key)
req="{\"site_id\":\"acme\",\"customer_key\":\"$ck\",\"user_key\":\"$uk\",\"workspace_key\":\"$wk\"}"
out=$(api cmxDevice /v1/workspace-keys/unwrap "$req"); plain=$(echo "$out" | body | field plaintext)
[ -n "$plain" ] || fail "unwrap through HAProxy: $out"
ok "customer -> user -> workspace key created and unwrapped through HAProxy on 127.0.0.1:$KMS_HTTPS_PORT"
out=$(api cmxDevice /v1/customer-keys '{"site_id":"acme"}'); [ "$(echo "$out" | code)" = 403 ] || fail "device may not create: $out"
# HAProxy's PROXY v2 header names the client: the audit line shows the client's
# address (docker's gateway, where the published port leads), not HAProxy's
peers=$(for n in kmsd1 kmsd2 kmsd3; do compose exec -T "$n" cat /var/log/kmsd/audit.log 2>/dev/null; done |
        python3 -c '
import json, sys
for line in sys.stdin:
    r = json.loads(line)
    if r.get("op") == "customer-key.create" and r.get("site_id") == "acme":
        print(r.get("peer"))')
ha_ip=${KMS_COMPOSE_HAPROXY_IP:-172.31.254.10}
[ -n "$peers" ] && ! echo "$peers" | grep -qx -e "$ha_ip" -e None || fail "audit peers '$peers' (HAProxy is $ha_ip)"
ok "the audit lines carry the client's address from HAProxy's PROXY header ($(echo "$peers" | sort -u | tr '\n' ' '))"
for n in kmsd1 kmsd2 kmsd3; do
  got=$(compose exec -T "$n" curl -sS --max-time 10 --cacert /cluster/pki/rootCA.crt \
        --cert "/cluster/pki/cmxDevice.p12:$pw" --cert-type P12 -H 'Content-Type: application/json' \
        --data "$req" "https://$n:8443/v1/workspace-keys/unwrap" | field plaintext)
  [ "$got" = "$plain" ] || fail "unwrap via $n gave another key"
done
ok "the same workspace key unwrapped via each node directly"

# one version in /v1/cluster and kms_build_info
clu=$(compose exec -T kmsd1 curl -sS --max-time 10 --cacert /cluster/pki/rootCA.crt \
      --cert "/cluster/pki/cmxAdmin.p12:$pw" --cert-type P12 https://kmsd1:8443/v1/cluster)
echo "$clu" | python3 -c '
import json,sys
d=json.load(sys.stdin); want=sys.argv[1]
vs=sorted({n["version"] for n in d["nodes"]}); names=sorted(n["name"] for n in d["nodes"])
assert names==["kmsd1","kmsd2","kmsd3"], names
assert vs==[want], (vs, want)' "$version" || fail "/v1/cluster: $clu"
metrics=$(compose exec -T kmsd2 curl -sS --max-time 10 http://127.0.0.1:9843/metrics)
echo "$metrics" | grep -qx "kms_build_info{version=\"$version\",build=\"$KMS_BUILD_ID\"} 1" ||
  fail "kms_build_info: $(echo "$metrics" | grep build_info)"
ok "/v1/cluster lists 3 nodes at $version; kms_build_info says $version ($KMS_BUILD_ID)"

# Prometheus scrapes every node
prom() { curl -sS --max-time 5 "http://127.0.0.1:$KMS_PROMETHEUS_PORT$1"; }
t0=$SECONDS
until [ "$(prom '/api/v1/query?query=sum(up%7Bjob%3D%22kmsd%22%7D)' 2>/dev/null |
          python3 -c 'import json,sys; r=json.load(sys.stdin)["data"]["result"]; print(r[0]["value"][1] if r else 0)' 2>/dev/null)" = 3 ]; do
  [ $((SECONDS - t0)) -lt 60 ] || fail "Prometheus does not see 3 kmsd targets up: $(prom /api/v1/targets | head -c 600)"
  sleep 2
done
ok "Prometheus scrapes the 3 nodes (up == 1)"

# --- one node stopped ---------------------------------------------------------------
compose stop kmsd2 >/dev/null 2>&1
# why: a request already routed to kmsd2 as it stops may fail, as with any load
# balancer; once HAProxy's health check (inter 1 s, fall 2) has taken it out,
# none may (tests/integration/cluster.sh measures the switch itself)
stats_of() { curl -fsS --max-time 3 "http://127.0.0.1:$KMS_STATS_PORT/stats;csv" 2>/dev/null |
  awk -F, -v n="$1" '$1 == "kmsd_nodes" && $2 == n { print $18 }'; }
t0=$SECONDS
until stats_of kmsd2 | grep -q '^DOWN'; do
  [ $((SECONDS - t0)) -lt 30 ] || fail "HAProxy did not take kmsd2 out within 30 s: $(stats_of kmsd2)"
  sleep 0.5
done
ok "HAProxy took kmsd2 out of rotation $((SECONDS - t0)) s after the stop"
fails=0
for i in $(seq 30); do
  c=$(api cmxDevice /v1/workspace-keys/unwrap "$req" | code)
  [ "$c" = 200 ] || fails=$((fails + 1))
done
[ $fails = 0 ] || fail "$fails of 30 requests failed with kmsd2 stopped"
ok "kmsd2 stopped: 30 of 30 unwraps through HAProxy succeeded"
t0=$SECONDS
until prom /api/v1/alerts | python3 -c '
import json,sys
a=json.load(sys.stdin)["data"]["alerts"]
sys.exit(0 if any(x["labels"]["alertname"]=="KmsNodeDown" and x["labels"]["instance"]=="kmsd2:9843" and x["state"]=="firing" for x in a) else 1)' 2>/dev/null; do
  [ $((SECONDS - t0)) -lt 120 ] || fail "KmsNodeDown did not fire for kmsd2 within 120 s: $(prom /api/v1/alerts)"
  sleep 3
done
ok "Prometheus fires KmsNodeDown for kmsd2:9843 ($((SECONDS - t0)) s after the stop)"
compose start kmsd2 >/dev/null 2>&1
t0=$SECONDS
until healthy kmsd2; do [ $((SECONDS - t0)) -lt 120 ] || fail "kmsd2 not healthy again within 120 s"; sleep 2; done
ok "kmsd2 back and healthy"

# --- down ---------------------------------------------------------------------------
compose down -v --remove-orphans >/dev/null 2>&1 || fail "docker-compose down"
project_up=
left=$(docker ps -a --filter "label=com.docker.compose.project=$project" -q)
[ -z "$left" ] || fail "containers left after down: $left"
[ -z "$(docker network ls -q --filter "label=com.docker.compose.project=$project")" ] || fail "a network is left after down"
[ -z "$(docker volume ls -q --filter "label=com.docker.compose.project=$project")" ] || fail "a volume is left after down -v"
ok "down -v leaves no container, network or volume of the project"
[ $SECONDS -lt $deadline_total ] || echo "note: the container stage took $SECONDS s (over 600)"
echo "container stage passed in $SECONDS s"
