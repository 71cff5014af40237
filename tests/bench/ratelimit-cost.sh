#!/usr/bin/env bash
# What rate limiting costs the cached workspace-key unwrap (issue 15: at most
# 5 % under the limit).
#
#   tests/bench/ratelimit-cost.sh BUILD_DIR [REPETITIONS] [SECONDS]
#
# Starts two kmsd from the same build through tests/integration/harness.sh
# (soft backend, local cache, one worker thread, both pinned to CPU 1): one
# without rate limits, one with kms.ratelimit.enabled=true and budgets far
# above the load (every request still takes its token). kmsctl bench (CPU 0,
# 16 keep-alive connections, backend certificate) loads them in turn,
# REPETITIONS times (default 5) for SECONDS each (default 4). Prints each
# pair, the median of the per-pair ratios (on / off) and the lowest. Stops
# what it started by PID.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
build=$(cd "${1:?usage: ratelimit-cost.sh BUILD_DIR [REPETITIONS] [SECONDS]}" && pwd)
reps=${2:-5}
secs=${3:-4}
kmsd=$build/server/kmsd
kmsctl=$build/cli/kmsctl
[ -x "$kmsd" ] && [ -x "$kmsctl" ] || { echo "ratelimit-cost: build $build first (kmsd, kmsctl)" >&2; exit 2; }
[ "$(nproc)" -ge 2 ] || { echo "ratelimit-cost: needs 2 CPUs (servers on 1, bench on 0)" >&2; exit 2; }

work=$(mktemp -d /tmp/kmsd-rlcost-XXXXXX)
cleanup() {
  for s in off on; do
    [ -f "$work/$s/kmsd.pid" ] && "$root/tests/integration/harness.sh" stop "$work/$s" >/dev/null 2>&1
  done
  rm -rf "$work"
}
trap cleanup EXIT

KMS_SERVER_THREADS=1 KMS_LOG_LEVEL=info "$root/tests/integration/harness.sh" start "$work/off" "$kmsd" soft >/dev/null
KMS_SERVER_THREADS=1 KMS_LOG_LEVEL=info KMS_RATELIMIT_ENABLED=true \
  KMS_RATELIMIT_BACKEND="create=10000000:10000000, unwrap=10000000:10000000, other=10000000:10000000" \
  "$root/tests/integration/harness.sh" start "$work/on" "$kmsd" soft >/dev/null
grep -q '"ratelimit.enabled"' "$work/on/kmsd.log" || { echo "ratelimit-cost: rate limits did not turn on" >&2; exit 1; }
for s in off on; do
  taskset -a -p -c 1 "$(cat "$work/$s/kmsd.pid")" >/dev/null
  # shellcheck disable=SC1091
  . "$work/$s/it.env"
  pki=$KMS_IT_PKI
  api() {
    curl -fsS --max-time 10 --cacert "$pki/rootCA.crt" --cert "$pki/cmxBackend.crt" --key "$pki/cmxBackend.key" \
      -H 'Content-Type: application/json' -d "$2" "https://127.0.0.1:$KMS_IT_PORT$1"
  }
  field() { /usr/bin/python3 -c 'import json,sys; print(json.load(sys.stdin)[sys.argv[1]])' "$1"; }
  ck=$(api /v1/customer-keys '{"site_id":"bench"}' | field customer_key)
  uk=$(api /v1/user-keys "{\"site_id\":\"bench\",\"customer_key\":\"$ck\"}" | field user_key)
  wk=$(api /v1/workspace-keys "{\"site_id\":\"bench\",\"customer_key\":\"$ck\",\"user_key\":\"$uk\"}" | field workspace_key)
  printf '{"site_id":"bench","customer_key":"%s","user_key":"%s","workspace_key":"%s"}' "$ck" "$uk" "$wk" \
    > "$work/$s/unwrap.json"
done

run() { # run off|on -> requests/s
  # shellcheck disable=SC1091
  . "$work/$1/it.env"
  taskset -c 0 "$kmsctl" bench --url "https://127.0.0.1:$KMS_IT_PORT" --cert "$KMS_IT_PKI/cmxBackend.p12" \
    --password-file "$KMS_IT_PKI/password.txt" -c 16 -d "$secs" -w 1 --op unwrap-workspace \
    --body-file "$work/$1/unwrap.json" --json |
    /usr/bin/python3 -c 'import json,sys; j=json.load(sys.stdin); assert j["errors"] == 0, j; print("%.0f" % j["requests_per_s"])'
}

echo "# cached workspace-key unwrap, rate limits off / on (under the limit); $(date -u +%Y-%m-%dT%H:%MZ)," \
  "$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), $reps x $secs s"
echo "| repetition | off req/s | on req/s | on / off |"
echo "|---|---|---|---|"
ratios=()
for i in $(seq "$reps"); do
  off=$(run off) on=$(run on)
  r=$(/usr/bin/python3 -c "print('%.3f' % ($on / $off))")
  ratios+=("$r")
  echo "| $i | $off | $on | $r |"
done
/usr/bin/python3 -c '
import statistics, sys
r = [float(x) for x in sys.argv[1:]]
print("median on/off %.3f, lowest %.3f" % (statistics.median(r), min(r)))' "${ratios[@]}"
