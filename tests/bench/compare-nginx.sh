#!/usr/bin/env bash
# kmsd next to nginx on the same machine, in the same run (issue 7).
#
#   tests/bench/compare-nginx.sh BUILD_DIR [SECONDS] [REPETITIONS]
#
# Starts a kmsd (tests/integration/harness.sh, soft backend, kms.cache.type=local,
# one worker thread: KMS_SERVER_THREADS=1) and an nginx (tests/bench/nginx.conf.in:
# one worker, mutual TLS with the same dev PKI and ECDSA P-256 server key, session
# tickets, a fixed 100-byte body), both on loopback. The servers are pinned to
# CPU 1 and `kmsctl bench` to CPU 0. Each scenario runs REPETITIONS times (default
# 3), kmsd and nginx interleaved, SECONDS measured (default 4) after 1 s of warm-up;
# the table shows medians and the lowest ratio of a single repetition. Then the
# two-core rows (issue 14): kmsd restarted with 2 worker threads, nginx with 2
# workers, nothing pinned, the load generator's 2 threads sharing the same cores.
# Installs nginx-light from Debian when nginx is missing. Stops what it started by PID.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
build=$(cd "${1:?usage: compare-nginx.sh BUILD_DIR [SECONDS] [REPETITIONS]}" && pwd)
secs=${2:-4}
reps=${3:-3}
kmsd=$build/server/kmsd
kmsctl=$build/cli/kmsctl
[ -x "$kmsd" ] && [ -x "$kmsctl" ] || { echo "compare-nginx: build $build first (kmsd, kmsctl)" >&2; exit 2; }
[ "$(nproc)" -ge 2 ] || { echo "compare-nginx: needs 2 CPUs (server on 1, bench on 0)" >&2; exit 2; }

if ! command -v nginx >/dev/null 2>&1 && [ ! -x /usr/sbin/nginx ]; then
  echo "compare-nginx: installing nginx from Debian" >&2
  DEBIAN_FRONTEND=noninteractive apt-get install -y nginx-light >/dev/null 2>&1 ||
    DEBIAN_FRONTEND=noninteractive apt-get install -y nginx >/dev/null
fi
nginx_bin=$(command -v nginx || echo /usr/sbin/nginx)

work=$(mktemp -d /tmp/compare-nginx-XXXXXX)
nginx_pid=""
cleanup() {
  if [ -n "$nginx_pid" ]; then
    kill -TERM "$nginx_pid" 2>/dev/null || true
    wait "$nginx_pid" 2>/dev/null || true
  fi
  if [ -f "$work/kmsd/kmsd.pid" ]; then
    "$root/tests/integration/harness.sh" stop "$work/kmsd" >/dev/null || echo "compare-nginx: kmsd did not stop cleanly" >&2
  fi
  rm -rf "$work"
}
trap cleanup EXIT

free_port() {
  /usr/bin/python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'
}

# kmsd: one worker thread, info log (the harness asks for debug), pinned to CPU 1
KMS_SERVER_THREADS=1 KMS_LOG_LEVEL=info "$root/tests/integration/harness.sh" start "$work/kmsd" "$kmsd" soft >/dev/null
# shellcheck disable=SC1091
. "$work/kmsd/it.env"
kport=$KMS_IT_PORT
pki=$KMS_IT_PKI
taskset -a -p -c 1 "$(cat "$work/kmsd/kmsd.pid")" >/dev/null

# nginx, same PKI, pinned to CPU 1 (master by taskset, worker by worker_cpu_affinity)
nport=$(free_port)
body='{"status":"ok","service":"nginx-reference","note":"fixed body of exactly one hundred bytes, xxxxxx"}'
mkdir -p "$work/nginx"
sed -e "s|@WORK@|$work/nginx|g" -e "s|@PORT@|$nport|g" -e "s|@PKI@|$pki|g" -e "s|@BODY@|$body|g" \
  "$here/nginx.conf.in" > "$work/nginx/nginx.conf"
start_nginx() { # start_nginx CONF CPUS: nginx on CONF, pinned to CPUS, waited for
  taskset -c "$2" "$nginx_bin" -p "$work/nginx" -e "$work/nginx/error.log" -c "$1" </dev/null &
  nginx_pid=$!
  local deadline=$((SECONDS + 20))
  until curl -fsS --max-time 2 --cacert "$pki/rootCA.crt" --cert "$pki/cmxBackend.crt" --key "$pki/cmxBackend.key" \
    "https://127.0.0.1:$nport/" >/dev/null 2>&1; do
    if ! kill -0 "$nginx_pid" 2>/dev/null || [ $SECONDS -ge $deadline ]; then
      echo "compare-nginx: nginx did not come up; its log:" >&2
      cat "$work/nginx/error.log" >&2 || true
      exit 1
    fi
    sleep 0.2
  done
}
start_nginx "$work/nginx/nginx.conf" 1

# The workspace-key unwrap body: a real customer/user/workspace chain made by the
# backend certificate; the same bytes go to both servers.
api() { # api PATH JSON: POST as cmxBackend, prints the reply
  curl -fsS --max-time 10 --cacert "$pki/rootCA.crt" --cert "$pki/cmxBackend.crt" --key "$pki/cmxBackend.key" \
    -H 'Content-Type: application/json' -d "$2" "https://127.0.0.1:$kport$1"
}
field() { /usr/bin/python3 -c 'import json,sys; print(json.load(sys.stdin)[sys.argv[1]])' "$1"; }
ck=$(api /v1/customer-keys '{"site_id":"bench"}' | field customer_key)
uk=$(api /v1/user-keys "{\"site_id\":\"bench\",\"customer_key\":\"$ck\"}" | field user_key)
wk=$(api /v1/workspace-keys "{\"site_id\":\"bench\",\"customer_key\":\"$ck\",\"user_key\":\"$uk\"}" | field workspace_key)
printf '{"site_id":"bench","customer_key":"%s","user_key":"%s","workspace_key":"%s"}' "$ck" "$uk" "$wk" \
  > "$work/unwrap.json"

scenarios=(health unwrap full resumed)
declare -A label=(
  [health]="/health/live, keep-alive, 16 conn"
  [unwrap]="cached workspace-key unwrap, keep-alive, 16 conn"
  [full]="new connection per request, full handshake (ECDSA P-256), 16 conn"
  [resumed]="new connection per request, session resumption, 16 conn"
)
args_of() { # args_of SCENARIO: the kmsctl bench arguments
  case "$1" in
    health) echo "--op health" ;;
    unwrap) echo "--op unwrap-workspace --body-file $work/unwrap.json" ;;
    full) echo "--op whoami --new-conn" ;;
    resumed) echo "--op whoami --new-conn --resume" ;;
  esac
}

run_phase() { # run_phase TAG PIN BENCH_THREADS SCENARIO...: each scenario REPS times, kmsd and nginx interleaved
  local tag=$1 pin=$2 bthreads=$3; shift 3
  local rep sc srv port
  for rep in $(seq 1 "$reps"); do
    for sc in "$@"; do
      for srv in kmsd nginx; do
        port=$kport
        [ "$srv" = nginx ] && port=$nport
        # shellcheck disable=SC2046
        if ! taskset -c "$pin" "$kmsctl" bench --url "https://127.0.0.1:$port" --cert "$pki/cmxBackend.p12" \
          --password-file "$pki/password.txt" -c 16 -t "$bthreads" -d "$secs" -w 1 --json $(args_of "$sc") \
          > "$work/results/$tag$sc.$srv.$rep.json"; then
          echo "compare-nginx: $tag$sc on $srv (repetition $rep) failed" >&2
        fi
        echo "compare-nginx: $tag$sc $srv #$rep $(head -c 400 "$work/results/$tag$sc.$srv.$rep.json" 2>/dev/null)" >&2
      done
    done
  done
}

mkdir -p "$work/results"
run_phase "" 0 1 "${scenarios[@]}"

# Two cores shared (issue 14): kmsd with 2 worker threads, nginx with 2 workers,
# neither pinned, and the load generator (2 threads) on the same two cores.
kill -TERM "$nginx_pid" 2>/dev/null || true
wait "$nginx_pid" 2>/dev/null || true
nginx_pid=""
sed -e 's/^worker_processes 1;/worker_processes 2;/' -e '/^worker_cpu_affinity/d' "$work/nginx/nginx.conf" \
  > "$work/nginx/nginx2.conf"
start_nginx "$work/nginx/nginx2.conf" 0-1
KMS_SERVER_THREADS=2 KMS_LOG_LEVEL=info "$root/tests/integration/harness.sh" restart "$work/kmsd" "$kmsd" >/dev/null
taskset -a -p -c 0-1 "$(cat "$work/kmsd/kmsd.pid")" >/dev/null
two_core=(health unwrap)
run_phase "2core-" 0-1 2 "${two_core[@]}"

echo "# kmsd vs nginx, mutual TLS on loopback; servers on CPU 1, kmsctl bench on CPU 0 (2-core rows: all on CPUs 0-1)"
echo "# $(date -u +%Y-%m-%dT%H:%MZ), $(nproc) CPUs, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), $("$nginx_bin" -v 2>&1 | sed 's/^nginx version: //'), ${secs} s x ${reps} repetitions, medians"
/usr/bin/python3 - "$work/results" "$reps" "${scenarios[@]}" "${two_core[@]/#/2core-}" <<PY
import json, statistics, sys
d, reps, scs = sys.argv[1], int(sys.argv[2]), sys.argv[3:]
label = {"health": "${label[health]}", "unwrap": "${label[unwrap]}", "full": "${label[full]}", "resumed": "${label[resumed]}"}
for k in list(label):
    label["2core-" + k] = label[k] + "; 2 cores shared: kmsd 2 threads, nginx 2 workers, bench 2 threads"
def load(sc, srv):
    out = []
    for r in range(1, reps + 1):
        try:
            with open(f"{d}/{sc}.{srv}.{r}.json") as f:
                out.append(json.load(f))
        except (OSError, ValueError):
            pass
    return out
print("| scenario | kmsd req/s | nginx req/s | ratio kmsd/nginx | lowest ratio of a repetition | kmsd p99 ms | kmsd errors | nginx errors | kmsd runs (req/s) | nginx runs (req/s) |")
print("|---|---|---|---|---|---|---|---|---|---|")
for sc in scs:
    k, n = load(sc, "kmsd"), load(sc, "nginx")
    kr = [x["requests_per_s"] for x in k]; nr = [x["requests_per_s"] for x in n]
    km = statistics.median(kr) if kr else 0.0; nm = statistics.median(nr) if nr else 0.0
    p99 = statistics.median([x["latency_ms"]["p99"] for x in k]) if k else 0.0
    ratio = f"{km / nm:.2f}" if nm else "n/a"
    paired = [a / b for a, b in zip(kr, nr) if b]
    low = f"{min(paired):.2f}" if paired else "n/a"
    ke = sum(x["errors"] for x in k); ne = sum(x["errors"] for x in n)
    print(f"| {label[sc]} | {km:,.0f} | {nm:,.0f} | {ratio} | {low} | {p99:.2f} | {ke} | {ne} | "
          f"{' / '.join(f'{v:,.0f}' for v in kr)} | {' / '.join(f'{v:,.0f}' for v in nr)} |")
PY
