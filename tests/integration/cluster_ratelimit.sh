#!/usr/bin/env bash
# Rate limits across the cluster (issue 15): 3 kmsd nodes behind HAProxy with
# PROXY v2 (deploy/local-cluster.sh), kms.ratelimit.device unwrap=30:30.
#   - a device certificate unwrapping through HAProxy as fast as it can, on 6
#     connections spread over the 3 nodes: its 200s come at the cluster-wide
#     30/s (+-10 %), the rest are 429 with Retry-After and the JSON error
#     rate_limited, audited, counted per client;
#   - a backend certificate unwrapping at the same time is never refused;
#   - Redis stopped: each node keeps its share (10/s here), still bounded.
# Everything it started is stopped by PID on exit. Prints ok/FAIL lines and
# "cluster_ratelimit: N passed, N failed".
#   cluster_ratelimit.sh KMSD KMSCTL DIR
set -u
kmsd=${1:?KMSD} kmsctl=${2:?KMSCTL} dir=${3:?DIR}
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
lc=$root/deploy/local-cluster.sh
build=$(cd "$(dirname "$kmsd")/.." && pwd)
pass=0 fail=0
ok() { echo "ok   $1"; pass=$((pass + 1)); }
ko() { echo "FAIL $1"; fail=$((fail + 1)); }
finish() {
  "$lc" down "$dir" >/dev/null 2>&1 || { echo "FAIL down: sanitizer report in a node's log"; fail=$((fail + 1)); }
  echo "cluster_ratelimit: $pass passed, $fail failed"
  [ "$fail" -eq 0 ] && exit 0 || exit 1
}
trap finish EXIT
trap 'exit 1' INT TERM

RATE=30
rm -rf "$dir"
if ! KMS_BUILD_DIR=$build KMS_RATELIMIT_ENABLED=true KMS_RATELIMIT_DEVICE="unwrap=$RATE:$RATE, other=$RATE:$RATE" \
     KMS_RATELIMIT_BACKEND="create=1000:1000, unwrap=1000000:1000000, other=1000:1000" \
     timeout 240 "$lc" up "$dir" > "$dir.up.log" 2>&1; then
  cat "$dir.up.log"; ko "local-cluster.sh up"; exit 1
fi
# shellcheck disable=SC1091
. "$dir/cluster.env"
[ -n "${CLUSTER_PROXY_SOURCE:-}" ] || { ko "HAProxy has no source address of its own here: no PROXY headers"; exit 1; }
ok "local-cluster.sh up with rate limits: HAProxy (PROXY v2), 3 kmsd, redis-server, PyKMIP"
pw=$CLUSTER_PASSWORD
ha=https://$CLUSTER_HAPROXY_ADDR:$CLUSTER_HAPROXY_PORT
tmp=$dir/t && mkdir -p "$tmp"
api() { # api CERT PATH JSON -> body in $tmp/body, prints the status
  curl -sS -o "$tmp/body" -w '%{http_code}' --max-time 20 --cacert "$CLUSTER_PKI/rootCA.crt" \
    --cert "$CLUSTER_PKI/$1.p12:$pw" --cert-type P12 -H 'Content-Type: application/json' --data "$3" "$ha$2" \
    2>/dev/null || echo 000
}
field() { /usr/bin/python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))[sys.argv[2]])' "$tmp/body" "$1"; }
api cmxBackend /v1/customer-keys '{"site_id":"rl"}' >/dev/null && ck=$(field customer_key)
api cmxBackend /v1/user-keys "{\"site_id\":\"rl\",\"customer_key\":\"$ck\"}" >/dev/null && uk=$(field user_key)
api cmxBackend /v1/workspace-keys "{\"site_id\":\"rl\",\"customer_key\":\"$ck\",\"user_key\":\"$uk\"}" >/dev/null &&
  wk=$(field workspace_key)
printf '{"site_id":"rl","customer_key":"%s","user_key":"%s","workspace_key":"%s"}' "$ck" "$uk" "$wk" > "$tmp/unwrap.json"

bench() { # bench CERT SECONDS CONNECTIONS OUT: unwraps through HAProxy, JSON in OUT
  "$kmsctl" bench --url "$ha" --cacert "$CLUSTER_PKI/rootCA.crt" --cert "$CLUSTER_PKI/$1.p12" \
    --password-file "$CLUSTER_PKI/password.txt" -c "$3" -d "$2" -w 1 --op unwrap-workspace \
    --body-file "$tmp/unwrap.json" --json > "$4" 2>"$4.err" || true
}
count() { # count FILE STATUS -> requests answered with STATUS; rate FILE -> its 200s per second
  /usr/bin/python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["status"].get(sys.argv[2], 0))' "$1" "$2" \
    2>/dev/null || echo -1
}
rate() {
  /usr/bin/python3 -c 'import json,sys; j=json.load(open(sys.argv[1])); print("%.1f" % (j["status"].get("200", 0) / j["duration_s"]))' \
    "$1" 2>/dev/null || echo -1
}
within() { /usr/bin/python3 -c 'import sys; v,lo,hi=map(float,sys.argv[1:]); sys.exit(0 if lo <= v <= hi else 1)' "$@"; }

# --- cluster-wide: a device over its budget, a backend beside it
bench cmxDevice 5 6 "$tmp/device.json" &
dpid=$!
bench cmxBackend 5 2 "$tmp/backend.json"
wait "$dpid"
r=$(rate "$tmp/device.json")
lo=$(/usr/bin/python3 -c "print($RATE * 0.9)") hi=$(/usr/bin/python3 -c "print($RATE * 1.1)")
within "$r" "$lo" "$hi" && [ "$(count "$tmp/device.json" 429)" -gt 0 ] &&
  ok "a device over its budget on 6 connections over 3 nodes: $r unwraps/s served (limit $RATE/s), $(count "$tmp/device.json" 429) answered 429" ||
  ko "device: $r/s served (want $lo..$hi), 429s: $(count "$tmp/device.json" 429); $(head -c 300 "$tmp/device.json") $(head -c 300 "$tmp/device.json.err")"
b200=$(count "$tmp/backend.json" 200) b429=$(count "$tmp/backend.json" 429)
[ "$b200" -gt 0 ] && [ "$b429" = 0 ] && ok "a backend unwrapping meanwhile: $b200 served, none refused" ||
  ko "backend: $b200 served, $b429 refused; $(head -c 300 "$tmp/backend.json")"

# --- what a refused client sees: 429, Retry-After, rate_limited (one keep-alive connection, 60 requests)
args=()
for i in $(seq 60); do
  [ "$i" -gt 1 ] && args+=(--next)
  args+=(-sS -i --max-time 30 --cacert "$CLUSTER_PKI/rootCA.crt" --cert "$CLUSTER_PKI/cmxDevice.p12:$pw" --cert-type P12
         -H 'Content-Type: application/json' --data @"$tmp/unwrap.json" "$ha/v1/workspace-keys/unwrap")
done
curl "${args[@]}" > "$tmp/burst.txt" 2>/dev/null
n429=$(grep -o 'HTTP/1.1 429' "$tmp/burst.txt" | wc -l) # bodies end without a newline
ra=$(grep -i -m1 '^Retry-After:' "$tmp/burst.txt" | tr -d '\r' | awk '{print $2}')
[ "$n429" -gt 0 ] && [ "${ra:-0}" -ge 1 ] && grep -q '"code":"rate_limited"' "$tmp/burst.txt" &&
  ok "a refused request: 429, Retry-After: $ra, {\"error\":{\"code\":\"rate_limited\",...}} ($n429 of 60)" ||
  ko "burst: $n429 429s, Retry-After '$ra'; $(grep -m3 -i 'HTTP/1.1\|retry\|code' "$tmp/burst.txt" | tr '\r\n' '  ')"
sleep 0.3 # the audit writers flush within 100 ms
audited=$(cat "$dir"/node*/audit.log | grep -c '"outcome":"rate_limited"')
[ "$audited" -gt 0 ] && ok "refusals are audited (outcome rate_limited: $audited lines)" || ko "no audit line says rate_limited"
m=0
for n in 1 2 3; do
  a=CLUSTER_NODE${n}_ADDR
  v=$(curl -s --max-time 5 "http://${!a}:9843/metrics" | awk '$1 == "kms_rate_limited_total{client=\"cmxDevice\",budget=\"unwrap\"}" {print $2}')
  m=$((m + ${v:-0}))
done
[ "$m" -gt 0 ] && ok "kms_rate_limited_total{client=\"cmxDevice\",budget=\"unwrap\"} = $m over the nodes" ||
  ko "no kms_rate_limited_total for cmxDevice"

# --- Redis away: each node on its share (RATE / 3 nodes), still bounded
"$lc" stop-redis "$dir" >/dev/null 2>&1
sleep 1.5 # the leased tokens expire within a second
bench cmxDevice 4 6 "$tmp/away.json"
r=$(rate "$tmp/away.json")
lo=$(/usr/bin/python3 -c "print($RATE * 0.5)") hi=$(/usr/bin/python3 -c "print($RATE * 1.5)")
within "$r" "$lo" "$hi" && ok "Redis stopped: each node on its share, $r unwraps/s served over the 3 (limit $RATE/s)" ||
  ko "Redis stopped: $r/s served (want $lo..$hi); $(head -c 300 "$tmp/away.json")"
grep -q '"ratelimit.degraded"' "$dir"/node*/kmsd.log && ok "the nodes logged ratelimit.degraded" ||
  ko "no ratelimit.degraded in the nodes' logs"
