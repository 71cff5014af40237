#!/usr/bin/env bash
# kmsd's memory with 1,000 idle keep-alive clients, then under load for MINUTES (issue 7:
# "1,000 idle keep-alive connections: kmsd RSS <= 64 MiB; no growth over a 10-minute soak").
#
#   tests/bench/idle-soak.sh BUILD_DIR [MINUTES]        (default 10)
#
# Starts a kmsd (tests/integration/harness.sh, soft backend, kms.cache.type=local, the default
# 2 worker threads and 30 s idle timeout, kms.server.connection.limit=1100), then:
#   1. `kmsctl bench --idle 1000 -c 0`: 1,000 mutual-TLS connections, each one GET /v1/whoami,
#      then idle but for a GET /health/live every 10 s (so the 30 s timeout keeps them);
#   2. 30 s with only those (the idle-only RSS);
#   3. MINUTES of load beside them: 16 keep-alive connections doing the cached workspace-key
#      unwrap, and 2 connections doing GET /v1/whoami with a new TLS connection (full
#      handshake) per request (connection setup and teardown);
#   4. 20 s idle-only again, then the idle client ends.
# Every ~10 s it samples kmsd's VmRSS/VmHWM (/proc/PID/status), threads, open fds, the requests
# it served (admin /metrics, kms_requests_total) and the idle client's open sockets, and prints
# a table, the clients' reports, kmsd's /proc/PID/smaps_rollup under load, and a verdict:
# RSS with the idle set before load, the peak, the growth from the first minute of load to
# its end, and the errors. Memory is what this measures; the req/s depend on what else the
# machine runs. Stops everything it started by PID, on any exit.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
build=$(cd "${1:?usage: idle-soak.sh BUILD_DIR [MINUTES]}" && pwd)
minutes=${2:-10}
case "$minutes" in '' | *[!0-9]*) echo "idle-soak: MINUTES must be a whole number" >&2; exit 2 ;; esac
[ "$minutes" -ge 1 ] || { echo "idle-soak: MINUTES must be at least 1" >&2; exit 2; }
idle_n=${IDLE_SOAK_IDLE:-1000}
load_c=16
newconn_c=2
limit_mib=64
kmsd=$build/server/kmsd
kmsctl=$build/cli/kmsctl
if [ ! -x "$kmsd" ] || [ ! -x "$kmsctl" ]; then
  echo "idle-soak: build $build first (kmsd, kmsctl)" >&2
  exit 2
fi

# kmsd holds idle_n + load connections, plus its own files: raise the soft fd limit it inherits
need_fds=$((idle_n + load_c + newconn_c + 256))
if [ "$(ulimit -n)" != unlimited ] && [ "$(ulimit -n)" -lt "$need_fds" ]; then
  ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
  [ "$(ulimit -n)" = unlimited ] || [ "$(ulimit -n)" -ge "$need_fds" ] ||
    { echo "idle-soak: needs $need_fds file descriptors, the hard limit is $(ulimit -Hn)" >&2; exit 2; }
fi

loadavg_before=$(cut -d' ' -f1-3 /proc/loadavg)
work=$(mktemp -d /tmp/idle-soak-XXXXXX)
idle_pid="" load_pid="" newconn_pid=""
cleanup() {
  local p
  for p in $idle_pid $load_pid $newconn_pid; do
    kill -TERM "$p" 2>/dev/null || true
  done
  for p in $idle_pid $load_pid $newconn_pid; do
    wait "$p" 2>/dev/null || true
  done
  if [ -f "$work/kmsd/kmsd.pid" ]; then
    "$root/tests/integration/harness.sh" stop "$work/kmsd" >/dev/null || echo "idle-soak: kmsd did not stop cleanly" >&2
  fi
  rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

KMS_LOG_LEVEL=info KMS_SERVER_CONNECTION_LIMIT=$((idle_n + 100)) \
  "$root/tests/integration/harness.sh" start "$work/kmsd" "$kmsd" soft >/dev/null
# shellcheck disable=SC1091
. "$work/kmsd/it.env"
port=$KMS_IT_PORT
pki=$KMS_IT_PKI
kpid=$(cat "$work/kmsd/kmsd.pid")
url="https://127.0.0.1:$port"
cert=(--cert "$pki/cmxBackend.p12" --password-file "$pki/password.txt")

# The unwrap body: a real customer/user/workspace chain made by the backend certificate.
api() {
  curl -fsS --max-time 10 --cacert "$pki/rootCA.crt" --cert "$pki/cmxBackend.crt" --key "$pki/cmxBackend.key" \
    -H 'Content-Type: application/json' -d "$2" "$url$1"
}
field() { /usr/bin/python3 -c 'import json,sys; print(json.load(sys.stdin)[sys.argv[1]])' "$1"; }
ck=$(api /v1/customer-keys '{"site_id":"soak"}' | field customer_key)
uk=$(api /v1/user-keys "{\"site_id\":\"soak\",\"customer_key\":\"$ck\"}" | field user_key)
wk=$(api /v1/workspace-keys "{\"site_id\":\"soak\",\"customer_key\":\"$ck\",\"user_key\":\"$uk\"}" | field workspace_key)
printf '{"site_id":"soak","customer_key":"%s","user_key":"%s","workspace_key":"%s"}' "$ck" "$uk" "$wk" \
  > "$work/unwrap.json"

kib() { awk -v k="$1:" '$1 == k { print $2 }' "/proc/$kpid/status"; }
served() { # requests kmsd has answered (every route and status)
  curl -fsS --max-time 5 "http://127.0.0.1:$KMS_IT_ADMIN_PORT/metrics" 2>/dev/null |
    awk '/^kms_requests_total\{/ { n += $NF } END { printf "%d\n", n }'
}
sockets_of() { # open sockets of process $1 (0 once it is gone)
  local n
  n=$(find "/proc/$1/fd" -lname 'socket:*' 2>/dev/null | wc -l) || true
  echo "${n:-0}"
}
t0=$SECONDS
samples=$work/samples.tsv
sample() { # sample PHASE: one line of the table
  [ -d "/proc/$kpid" ] || { echo "idle-soak: kmsd (pid $kpid) died; its log:" >&2; tail -20 "$work/kmsd/kmsd.log" >&2; exit 1; }
  local rss hwm thr fds req idle
  rss=$(kib VmRSS); hwm=$(kib VmHWM); thr=$(kib Threads)
  fds=$(find "/proc/$kpid/fd" -mindepth 1 -maxdepth 1 2>/dev/null | wc -l)
  req=$(served)
  idle=0
  [ -n "$idle_pid" ] && idle=$(sockets_of "$idle_pid")
  printf '%d\t%s\t%d\t%d\t%s\t%d\t%d\t%d\n' $((SECONDS - t0)) "$1" "$rss" "$hwm" "$req" "$idle" "$thr" "$fds" >> "$samples"
  awk -v t=$((SECONDS - t0)) -v ph="$1" -v rss="$rss" -v hwm="$hwm" -v req="$req" -v idle="$idle" -v thr="$thr" \
    -v fds="$fds" 'BEGIN { printf "idle-soak: t=%4ds %-6s RSS %6.1f MiB HWM %6.1f MiB requests %9d idle %4d threads %2d fds %4d\n",
      t, ph, rss / 1024, hwm / 1024, req, idle, thr, fds }' >&2
}

sample start

# 1. the idle set; its process ends at SIGINT (it then prints its report) or by itself
hold=$((90 + 30 + minutes * 60 + 60 + 20))
"$kmsctl" bench --url "$url" "${cert[@]}" --idle "$idle_n" --idle-ping 10 -c 0 -d "$hold" --json \
  > "$work/idle.json" 2> "$work/idle.err" &
idle_pid=$!
deadline=$((SECONDS + 90))
while [ "$(sockets_of "$idle_pid")" -lt "$idle_n" ]; do
  if ! kill -0 "$idle_pid" 2>/dev/null || [ $SECONDS -ge $deadline ]; then
    echo "idle-soak: only $(sockets_of "$idle_pid") of $idle_n idle connections opened" >&2
    cat "$work/idle.err" >&2
    break
  fi
  sleep 0.5
done

# 2. idle only
for _ in 1 2 3; do
  sleep 10
  sample idle
done

# 3. load beside the idle set
secs=$((minutes * 60))
"$kmsctl" bench --url "$url" "${cert[@]}" -c "$load_c" -d "$secs" -w 0 --op unwrap-workspace \
  --body-file "$work/unwrap.json" --json > "$work/load.json" 2> "$work/load.err" &
load_pid=$!
"$kmsctl" bench --url "$url" "${cert[@]}" -c "$newconn_c" -d "$secs" -w 0 --op whoami --new-conn --json \
  > "$work/newconn.json" 2> "$work/newconn.err" &
newconn_pid=$!
load_t0=$SECONDS
smaps_done=0
while kill -0 "$load_pid" 2>/dev/null || kill -0 "$newconn_pid" 2>/dev/null; do
  sleep 10
  [ $((SECONDS - load_t0)) -le $((secs + 60)) ] || { echo "idle-soak: the load did not end" >&2; exit 1; }
  sample load
  if [ "$smaps_done" = 0 ] && [ $((SECONDS - load_t0)) -ge $((secs / 2)) ]; then
    cp "/proc/$kpid/smaps_rollup" "$work/smaps_rollup.load" 2>/dev/null || true
    smaps_done=1
  fi
done
wait "$load_pid" || echo "idle-soak: the unwrap load exited with an error" >&2
load_pid=""
wait "$newconn_pid" || echo "idle-soak: the new-connection load exited with an error" >&2
newconn_pid=""

# 4. idle only again, then the idle client reports
for _ in 1 2; do
  sleep 10
  sample after
done
kill -INT "$idle_pid" 2>/dev/null || true
wait "$idle_pid" || echo "idle-soak: the idle client exited with an error" >&2
idle_pid=""
sample end
sleep 5
sample closed

echo "# kmsd with $idle_n idle mutual-TLS keep-alive connections, then ${minutes} min of load beside them"
echo "# $(date -u +%Y-%m-%dT%H:%MZ), $(nproc) CPUs, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), load average before: $loadavg_before, at the end: $(cut -d' ' -f1-3 /proc/loadavg)"
echo "# load: $load_c keep-alive connections doing the cached workspace-key unwrap + $newconn_c doing GET /v1/whoami with a new TLS connection (full handshake) per request"
/usr/bin/python3 - "$work" "$limit_mib" "$idle_n" <<'PY'
import json, sys
work, limit_mib, idle_n = sys.argv[1], float(sys.argv[2]), int(sys.argv[3])
rows = []
with open(f"{work}/samples.tsv") as f:
    for line in f:
        t, ph, rss, hwm, req, idle, thr, fds = line.split("\t")
        rows.append(dict(t=int(t), phase=ph, rss=int(rss) / 1024, hwm=int(hwm) / 1024, req=int(req),
                         idle=int(idle), thr=int(thr), fds=int(fds)))
print("| t (s) | phase | VmRSS MiB | VmHWM MiB | requests served | idle conns open | threads | fds |")
print("|---|---|---|---|---|---|---|---|")
for r in rows:
    print(f"| {r['t']} | {r['phase']} | {r['rss']:.1f} | {r['hwm']:.1f} | {r['req']:,} | {r['idle']} | {r['thr']} | {r['fds']} |")

def load(name):
    try:
        with open(f"{work}/{name}.json") as f:
            return json.load(f)
    except (OSError, ValueError):
        return None
idle, ld, nc = load("idle"), load("load"), load("newconn")
print()
for name, j in (("unwrap keep-alive", ld), ("whoami new connection", nc)):
    if j is None:
        print(f"{name}: no report")
        continue
    print(f"{name}: {j['requests']:,} requests in {j['duration_s']:.0f} s ({j['requests_per_s']:,.0f} req/s), "
          f"p99 {j['latency_ms']['p99']:.2f} ms, errors {j['errors']} (transport {j['transport_errors']}), "
          f"handshakes {j['handshakes']}")
if idle is not None:
    i = idle["idle"]
    print(f"idle client: {i['requested']} requested, {i['opened']} opened, {i['open_at_end']} open at the end, "
          f"{i['closed_by_server']} closed by the server, {i['failed']} failed to open, {i['pings']:,} pings "
          f"({i['ping_errors']} non-2xx) every {i['ping_s']:.0f} s")
else:
    print("idle client: no report")

try:
    with open(f"{work}/smaps_rollup.load") as f:
        print("\nkmsd /proc/PID/smaps_rollup halfway through the load:")
        for line in f:
            k = line.split(":")[0]
            if k in ("Rss", "Pss_Anon", "Pss_File", "Anonymous", "Private_Dirty", "Shared_Clean", "Private_Clean", "Swap"):
                print("  " + line.rstrip())
except OSError:
    pass

idle_rows = [r for r in rows if r["phase"] == "idle"]
load_rows = [r for r in rows if r["phase"] == "load"]
errors = sum(j["errors"] for j in (ld, nc) if j) + (0 if idle is None else idle["idle"]["ping_errors"])
missing = sum(1 for j in (idle, ld, nc) if j is None)
rss_idle = idle_rows[-1]["rss"] if idle_rows else float("nan")
peak = max(r["hwm"] for r in rows)
first_min = next((r for r in load_rows if r["t"] - load_rows[0]["t"] >= 50), load_rows[0]) if load_rows else None
end = load_rows[-1] if load_rows else None
growth = (end["rss"] - first_min["rss"]) if first_min and end else float("nan")
closed = None if idle is None else idle["idle"]["closed_by_server"]
open_end = None if idle is None else idle["idle"]["open_at_end"]
print()
print(f"verdict: start {rows[0]['rss']:.1f} MiB; with {idle_n} idle connections before load {rss_idle:.1f} MiB; "
      f"peak (VmHWM) {peak:.1f} MiB; under load after ~1 min {first_min['rss'] if first_min else float('nan'):.1f} MiB, "
      f"at the end {end['rss'] if end else float('nan'):.1f} MiB (growth {growth:+.1f} MiB); "
      f"threads {max(r['thr'] for r in rows)}, fds {max(r['fds'] for r in rows)} at most; "
      f"idle connections open at the end {open_end}, closed by the server {closed}; errors {errors}"
      + (f"; {missing} client report(s) missing" if missing else ""))
ok_rss = peak <= limit_mib
ok_growth = growth <= 1.0
print(f"target RSS <= {limit_mib:.0f} MiB (peak): {'met' if ok_rss else 'NOT met'}; "
      f"no growth (<= 1 MiB from minute 1 to the end): {'met' if ok_growth else 'NOT met'}")
PY
