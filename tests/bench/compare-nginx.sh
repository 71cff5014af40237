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
# the table shows medians and the lowest ratio of a single repetition, and each
# server's CPU per request (utime+stime over the measured window / requests:
# steadier than req/s on a shared host, and it does not depend on the load
# generator keeping up). /health/live also runs against the libmicrohttpd
# floor (tests/bench/mhd_floor.c: MHD + GnuTLS with kmsd's TLS settings and a
# fixed reply, nothing else), pinned the same way: it shows what the HTTP and
# TLS libraries cost on this host, apart from kmsd's own work. Then the
# two-core rows (issue 14): kmsd restarted with 2 worker threads, nginx with 2
# workers, nothing pinned, the load generator's 2 threads sharing the same cores.
# Installs nginx-light from Debian when nginx is missing. Stops what it started by PID.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
build=$(cd "${1:?usage: compare-nginx.sh BUILD_DIR [SECONDS] [REPETITIONS]}" && pwd)
secs=${2:-4}
reps=${3:-3}
case "$secs" in ''|*[!0-9]*|0) echo "compare-nginx: SECONDS must be a whole number of at least 1" >&2; exit 2 ;; esac
kmsd=$build/server/kmsd
kmsctl=$build/cli/kmsctl
floor=$build/tests/integration/mhd_floor
[ -x "$kmsd" ] && [ -x "$kmsctl" ] && [ -x "$floor" ] ||
  { echo "compare-nginx: build $build first (kmsd, kmsctl, mhd_floor)" >&2; exit 2; }
[ "$(nproc)" -ge 2 ] || { echo "compare-nginx: needs 2 CPUs (server on 1, bench on 0)" >&2; exit 2; }

if ! command -v nginx >/dev/null 2>&1 && [ ! -x /usr/sbin/nginx ]; then
  echo "compare-nginx: installing nginx from Debian" >&2
  DEBIAN_FRONTEND=noninteractive apt-get install -y nginx-light >/dev/null 2>&1 ||
    DEBIAN_FRONTEND=noninteractive apt-get install -y nginx >/dev/null
fi
nginx_bin=$(command -v nginx || echo /usr/sbin/nginx)

work=$(mktemp -d /tmp/compare-nginx-XXXXXX)
nginx_pid=""
floor_pid=""
cleanup() {
  if [ -n "$floor_pid" ]; then
    kill -TERM "$floor_pid" 2>/dev/null || true
    wait "$floor_pid" 2>/dev/null || true
  fi
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

# the libmicrohttpd floor, same PKI and body, pinned to CPU 1
fport=$(free_port)
taskset -c 1 "$floor" "$fport" "$pki/kmsServer-chain.crt" "$pki/kmsServer.key" "$body" > "$work/floor.out" &
floor_pid=$!
deadline=$((SECONDS + 10))
until grep -q ready "$work/floor.out" 2>/dev/null; do
  if ! kill -0 "$floor_pid" 2>/dev/null || [ $SECONDS -ge $deadline ]; then
    echo "compare-nginx: mhd_floor did not come up" >&2
    exit 1
  fi
  sleep 0.1
done

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

cpu_ticks() { # cpu_ticks PID: utime + stime of the process, all its threads, in clock ticks
  awk '{print $14 + $15}' "/proc/$1/stat" 2>/dev/null || echo 0
}
server_pid() { # server_pid SERVER: the process that serves (nginx: its one worker)
  case "$1" in
    kmsd) cat "$work/kmsd/kmsd.pid" ;;
    floor) echo "$floor_pid" ;;
    nginx) pgrep -P "$nginx_pid" | head -1 ;;
  esac
}
# why the window starts 0.2 s after the warm-up and ends 0.2 s before the run
# does: the ticks are read while the load is surely on
window=$(awk -v s="$secs" 'BEGIN { print s - 0.4 }')
run_phase() { # run_phase TAG PIN BENCH_THREADS SCENARIO...: each scenario REPS times, the servers interleaved
  local tag=$1 pin=$2 bthreads=$3; shift 3
  local rep sc srv port servers bench_pid c0 c1 spid out
  for rep in $(seq 1 "$reps"); do
    for sc in "$@"; do
      servers="kmsd nginx"
      [ -z "$tag" ] && [ "$sc" = health ] && servers="kmsd floor nginx"
      for srv in $servers; do
        case "$srv" in kmsd) port=$kport ;; floor) port=$fport ;; nginx) port=$nport ;; esac
        out=$work/results/$tag$sc.$srv.$rep
        # shellcheck disable=SC2046
        taskset -c "$pin" "$kmsctl" bench --url "https://127.0.0.1:$port" --cert "$pki/cmxBackend.p12" \
          --password-file "$pki/password.txt" -c 16 -t "$bthreads" -d "$secs" -w 1 --json $(args_of "$sc") \
          > "$out.json" &
        bench_pid=$!
        # CPU per request, one-core rows only (in the two-core rows nginx has 2 workers)
        if [ -z "$tag" ]; then
          spid=$(server_pid "$srv")
          sleep 1.2
          c0=$(cpu_ticks "$spid")
          sleep "$window"
          c1=$(cpu_ticks "$spid")
          echo "$((c1 - c0)) $(getconf CLK_TCK) $window" > "$out.cpu"
        fi
        wait "$bench_pid" || echo "compare-nginx: $tag$sc on $srv (repetition $rep) failed" >&2
        echo "compare-nginx: $tag$sc $srv #$rep $(head -c 400 "$out.json" 2>/dev/null)" >&2
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

def us_per_req(sc, srv):
    """Server CPU per request in each repetition: ticks / CLK_TCK over the window, / requests in it."""
    out = []
    for r in range(1, reps + 1):
        try:
            with open(f"{d}/{sc}.{srv}.{r}.json") as f:
                x = json.load(f)
            with open(f"{d}/{sc}.{srv}.{r}.cpu") as f:
                ticks, hz, window = f.read().split()
        except (OSError, ValueError):
            continue
        reqs = x["requests_per_s"] * float(window)
        if reqs > 0:
            out.append(int(ticks) / int(hz) / reqs * 1e6)
    return out
def med(v):
    return statistics.median(v) if v else 0.0
print()
print("Server CPU per request (one-core rows; µs of utime+stime / requests, medians):")
print()
print("| scenario | kmsd µs/req | nginx µs/req | nginx/kmsd (CPU) |")
print("|---|---|---|---|")
for sc in scs:
    if sc.startswith("2core-"):
        continue
    ku, nu = med(us_per_req(sc, "kmsd")), med(us_per_req(sc, "nginx"))
    print(f"| {label[sc]} | {ku:.1f} | {nu:.1f} | {nu / ku if ku else 0:.2f} |")
fl = load("health", "floor")
if fl:
    print()
    print("The libmicrohttpd floor, /health/live (tests/bench/mhd_floor.c: MHD + GnuTLS, kmsd's TLS settings, a fixed reply):")
    print()
    print("| server | req/s (median) | µs CPU/req (median) | runs (req/s) |")
    print("|---|---|---|---|")
    rates = {}
    for srv in ("kmsd", "floor", "nginx"):
        r = [x["requests_per_s"] for x in load("health", srv)]
        rates[srv] = med(r)
        print(f"| {srv} | {med(r):,.0f} | {med(us_per_req('health', srv)):.1f} | {' / '.join(f'{v:,.0f}' for v in r)} |")
    if rates["floor"] and rates["nginx"]:
        print()
        print(f"floor/nginx {rates['floor'] / rates['nginx']:.2f}, kmsd/floor {rates['kmsd'] / rates['floor']:.2f}")
PY
