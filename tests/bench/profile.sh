#!/usr/bin/env bash
# Where kmsd's CPU goes on the cached workspace-key unwrap (issue 14).
#
#   tests/bench/profile.sh BUILD_DIR [SECONDS] [SCENARIO]
#
# Starts a kmsd as compare-nginx.sh does (tests/integration/harness.sh, soft
# backend, local cache, one worker thread, pinned to CPU 1), loads it with
# `kmsctl bench` on CPU 0 (16 keep-alive connections) and records it with
# `perf record` for SECONDS (default 8). SCENARIO: unwrap (default) or health.
# Prints the share of kmsd's samples per shared object and the 25 hottest
# symbols. PROFILE_KEEP=FILE keeps perf.data there for `perf report -i FILE`.
# Needs perf (Debian: linux-perf). Stops what it started by PID.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
build=$(cd "${1:?usage: profile.sh BUILD_DIR [SECONDS] [SCENARIO]}" && pwd)
secs=${2:-8}
scenario=${3:-unwrap}
kmsd=$build/server/kmsd
kmsctl=$build/cli/kmsctl
[ -x "$kmsd" ] && [ -x "$kmsctl" ] || { echo "profile: build $build first (kmsd, kmsctl)" >&2; exit 2; }
command -v perf >/dev/null || { echo "profile: perf is missing (apt-get install linux-perf)" >&2; exit 2; }
[ "$(nproc)" -ge 2 ] || { echo "profile: needs 2 CPUs (server on 1, bench on 0)" >&2; exit 2; }

work=$(mktemp -d /tmp/kmsd-profile-XXXXXX)
bench_pid=""
cleanup() {
  [ -n "$bench_pid" ] && kill "$bench_pid" 2>/dev/null && wait "$bench_pid" 2>/dev/null
  if [ -f "$work/kmsd/kmsd.pid" ]; then
    "$root/tests/integration/harness.sh" stop "$work/kmsd" >/dev/null || echo "profile: kmsd did not stop cleanly" >&2
  fi
  rm -rf "$work"
}
trap cleanup EXIT

KMS_SERVER_THREADS=1 KMS_LOG_LEVEL=info "$root/tests/integration/harness.sh" start "$work/kmsd" "$kmsd" soft >/dev/null
# shellcheck disable=SC1091
. "$work/kmsd/it.env"
pid=$(cat "$work/kmsd/kmsd.pid")
taskset -a -p -c 1 "$pid" >/dev/null
pki=$KMS_IT_PKI

api() {
  curl -fsS --max-time 10 --cacert "$pki/rootCA.crt" --cert "$pki/cmxBackend.crt" --key "$pki/cmxBackend.key" \
    -H 'Content-Type: application/json' -d "$2" "https://127.0.0.1:$KMS_IT_PORT$1"
}
field() { /usr/bin/python3 -c 'import json,sys; print(json.load(sys.stdin)[sys.argv[1]])' "$1"; }
case "$scenario" in
  unwrap)
    ck=$(api /v1/customer-keys '{"site_id":"bench"}' | field customer_key)
    uk=$(api /v1/user-keys "{\"site_id\":\"bench\",\"customer_key\":\"$ck\"}" | field user_key)
    wk=$(api /v1/workspace-keys "{\"site_id\":\"bench\",\"customer_key\":\"$ck\",\"user_key\":\"$uk\"}" | field workspace_key)
    printf '{"site_id":"bench","customer_key":"%s","user_key":"%s","workspace_key":"%s"}' "$ck" "$uk" "$wk" \
      > "$work/unwrap.json"
    args=(--op unwrap-workspace --body-file "$work/unwrap.json") ;;
  health) args=(--op health) ;;
  *) echo "profile: SCENARIO is unwrap or health" >&2; exit 2 ;;
esac

taskset -c 0 "$kmsctl" bench --url "https://127.0.0.1:$KMS_IT_PORT" --cert "$pki/cmxBackend.p12" \
  --password-file "$pki/password.txt" -c 16 -d $((secs + 3)) -w 1 "${args[@]}" > "$work/bench.txt" &
bench_pid=$!
sleep 1.5
perf record -q -F 2999 ${PROFILE_CALLGRAPH:--g} -p "$pid" -o "$work/perf.data" -- sleep "$secs" 2>/dev/null
wait "$bench_pid" || { echo "profile: the load generator failed" >&2; cat "$work/bench.txt" >&2; exit 1; }
bench_pid=""
[ -n "${PROFILE_KEEP:-}" ] && cp "$work/perf.data" "$PROFILE_KEEP"
echo "# kmsd profile, $scenario, $(date -u +%Y-%m-%dT%H:%MZ), $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), ${secs} s"
grep -E 'requests/s|req/s' "$work/bench.txt" | head -3 || true
echo "## share of samples per shared object"
perf report -i "$work/perf.data" --no-children --sort dso --stdio 2>/dev/null | grep -E '^ +[0-9]' | head -12
echo "## hottest symbols (self)"
perf report -i "$work/perf.data" --no-children --sort dso,sym --stdio -g none 2>/dev/null | grep -E '^ +[0-9]' | head -25
