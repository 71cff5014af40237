#!/usr/bin/env bash
# The cluster of issue 5 on loopback (deploy/local-cluster.sh): HAProxy + 3 kmsd
# nodes sharing customer keys through a real redis-server, PyKMIP as the HSM.
#   (a) a customer key unwrapped on node 1 is served by nodes 2 and 3 with no KMIP Decrypt
#   (e) GET /v1/cluster (admin) lists the 3 nodes; a backend certificate gets 403
#   (b) through HAProxy under load: a node stopped leaves rotation, started again rejoins
#   (d) Redis holds none of the plaintext keys the test saw (scan of every key and value)
#   (c) Redis stopped: no client-visible error, readiness 200 with the cache degraded;
#       Redis back: sharing resumes
# Everything it started is stopped by PID on exit, failure included.
# Prints ok/FAIL lines and "cluster: N passed, N failed"; exit 1 on a failure.
#   cluster.sh KMSD KMSCTL DIR
set -u
kmsd=${1:?KMSD} kmsctl=${2:?KMSCTL} dir=${3:?DIR}
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
lc=$root/deploy/local-cluster.sh
build=$(cd "$(dirname "$kmsd")/.." && pwd)
[ "$(cd "$(dirname "$kmsctl")/.." && pwd)" = "$build" ] || { echo "cluster: kmsd and kmsctl from different builds" >&2; exit 2; }
pass=0 fail=0
ok() { echo "ok   $1"; pass=$((pass + 1)); }
ko() { echo "FAIL $1"; fail=$((fail + 1)); }
load_pid=
finish() {
  [ -n "$load_pid" ] && kill "$load_pid" 2>/dev/null
  "$lc" down "$dir" >/dev/null 2>&1 || { echo "FAIL down: sanitizer report in a node's log"; fail=$((fail + 1)); }
  echo "cluster: $pass passed, $fail failed"
  [ "$fail" -eq 0 ] && exit 0 || exit 1
}
trap finish EXIT
trap 'exit 1' INT TERM

rm -rf "$dir"
if ! KMS_BUILD_DIR=$build timeout 240 "$lc" up "$dir" > "$dir.up.log" 2>&1; then
  cat "$dir.up.log"; ko "local-cluster.sh up"; exit 1
fi
ok "local-cluster.sh up: HAProxy, 3 kmsd, redis-server, PyKMIP"
# shellcheck disable=SC1091
. "$dir/cluster.env"
pw=$CLUSTER_PASSWORD
ha=https://$CLUSTER_HAPROXY_ADDR:$CLUSTER_HAPROXY_PORT
node_url() { local a=CLUSTER_NODE$1_ADDR p=CLUSTER_NODE$1_PORT; echo "https://${!a}:${!p}"; }
n1=$(node_url 1) n2=$(node_url 2) n3=$(node_url 3)
tmp=$dir/t
mkdir -p "$tmp"
secrets=$tmp/secrets   # every plaintext key the test saw, base64, one a line
: > "$secrets"

api() { # api URL CERT METHOD PATH [JSON] -> body in $tmp/body, prints the status
  local args=(-sS -o "$tmp/body" -w '%{http_code}' --max-time 20 --cacert "$CLUSTER_PKI/rootCA.crt"
              --cert "$CLUSTER_PKI/$2.p12:$pw" --cert-type P12 -X "$3")
  [ $# -ge 5 ] && args+=(-H 'Content-Type: application/json' --data "$5")
  curl "${args[@]}" "$1$4" 2>/dev/null || echo 000
}
field() { /usr/bin/python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))[sys.argv[2]])' "$tmp/body" "$1" 2>/dev/null; }
decrypts() { grep -c "Processing operation: Decrypt" "$CLUSTER_PYKMIP_LOG" || true; }
ready_json() { # readiness with its details: those need the admin certificate (issue 15)
  curl -sS --max-time 5 --cacert "$CLUSTER_PKI/rootCA.crt" --cert "$CLUSTER_PKI/cmxAdmin.p12:$pw" --cert-type P12 \
    -o "$tmp/ready" -w '%{http_code}' "$1/health/ready" 2>/dev/null || echo 000
}
cache_status() { /usr/bin/python3 -c 'import json,sys; c=json.load(open(sys.argv[1]))["cache"]; print(c["type"]+"/"+c["status"])' "$tmp/ready" 2>/dev/null; }

new_chain() { # new_chain URL SITE -> ck uk wk in globals; the customer key created on URL
  ck='' uk='' wk=''
  [ "$(api "$1" cmxBackend POST /v1/customer-keys "{\"site_id\":\"$2\"}")" = 201 ] && ck=$(field customer_key)
}
unwrap_ws() { # unwrap_ws URL SITE -> status; records the plaintext
  local s; s=$(api "$1" cmxDevice POST /v1/workspace-keys/unwrap \
    "{\"site_id\":\"$2\",\"customer_key\":\"$ck\",\"user_key\":\"$uk\",\"workspace_key\":\"$wk\"}")
  [ "$s" = 200 ] && field plaintext >> "$secrets"
  echo "$s"
}

# --- (a) node 1 unwraps through the HSM; nodes 2 and 3 are served from Redis
new_chain "$n1" site-a
d0=$(decrypts)
s1=$(api "$n1" cmxBackend POST /v1/user-keys "{\"site_id\":\"site-a\",\"customer_key\":\"$ck\"}"); uk=$(field user_key)
s2=$(api "$n1" cmxBackend POST /v1/workspace-keys \
  "{\"site_id\":\"site-a\",\"customer_key\":\"$ck\",\"user_key\":\"$uk\"}"); wk=$(field workspace_key)
s3=$(unwrap_ws "$n1" site-a)
d1=$(decrypts)
if [ -n "$ck" ] && [ "$s1$s2$s3" = 201201200 ]; then ok "(a) chain made and unwrapped on node 1 (KMIP Decrypts: $((d1 - d0)))"
else ko "(a) chain on node 1: $s1 $s2 $s3 $(cat "$tmp/body")"; fi
s4=$(unwrap_ws "$n2" site-a)
s5=$(unwrap_ws "$n3" site-a)
s6=$(api "$n3" cmxBackend POST /v1/user-keys "{\"site_id\":\"site-a\",\"customer_key\":\"$ck\"}")
d2=$(decrypts)
[ "$s4$s5$s6" = 200200201 ] && ok "(a) nodes 2 and 3 unwrap the same chain" || ko "(a) nodes 2 and 3: $s4 $s5 $s6"
[ "$d2" -eq "$d1" ] && ok "(a) no KMIP Decrypt for nodes 2 and 3 (PyKMIP log: $d1 before, $d2 after)" ||
  ko "(a) nodes 2 and 3 went to the HSM: Decrypts $d1 -> $d2"
[ "$(sort -u "$secrets" | wc -l)" -eq 1 ] && ok "(a) the three nodes return the same workspace key" ||
  ko "(a) the nodes disagree on the workspace key"
# a data key's plaintext, for the Redis scan
[ "$(api "$n2" cmxBackend POST /v1/keys/kms-master/datakey '{"site_id":"site-a"}')" = 200 ] && field plaintext >> "$secrets"

# --- (e) GET /v1/cluster with the admin certificate
s=$(api "$ha" cmxAdmin GET /v1/cluster)
names=$(/usr/bin/python3 -c 'import json,sys; print(" ".join(sorted(n["name"] for n in json.load(open(sys.argv[1]))["nodes"])))' "$tmp/body" 2>/dev/null)
[ "$s" = 200 ] && [ "$names" = "node1 node2 node3" ] && ok "(e) GET /v1/cluster lists node1 node2 node3" ||
  ko "(e) GET /v1/cluster: $s [$names] $(head -c 300 "$tmp/body")"
s=$(api "$ha" cmxBackend GET /v1/cluster)
[ "$s" = 403 ] && ok "(e) GET /v1/cluster with a backend certificate: 403" || ko "(e) backend on /v1/cluster: $s"

# --- (f) HAProxy's PROXY v2 header: the audit line names the client, not HAProxy
if [ -n "${CLUSTER_PROXY_SOURCE:-}" ]; then
  peers=''
  for src in 127.0.0.41 127.0.0.42 127.0.0.43; do
    s=$(curl -sS -o /dev/null -w '%{http_code}' --max-time 20 --interface "$src" --cacert "$CLUSTER_PKI/rootCA.crt" \
        --cert "$CLUSTER_PKI/cmxBackend.p12:$pw" --cert-type P12 -H 'Content-Type: application/json' \
        --data "{\"site_id\":\"peer-$src\"}" "$ha/v1/customer-keys" 2>/dev/null || echo 000)
    [ "$s" = 201 ] || peers="$peers $src:$s"
  done
  sleep 0.5 # the audit writer flushes within 100 ms
  got=$(cat "$dir"/node*/audit.log | /usr/bin/python3 -c '
import json, sys
for line in sys.stdin:
    r = json.loads(line)
    if (r.get("site_id") or "").startswith("peer-127.0.0.4"):
        print(r["site_id"][5:], r.get("peer"))' | sort | tr '\n' ' ')
  want="127.0.0.41 127.0.0.41 127.0.0.42 127.0.0.42 127.0.0.43 127.0.0.43 "
  [ -z "$peers" ] && [ "$got" = "$want" ] && ok "(f) through HAProxy's PROXY v2 header, each audit line names its client (127.0.0.41-43)" ||
    ko "(f) audit peers [$got] want [$want] ${peers:+failed:$peers}"
  s=$(curl -sS -o /dev/null -w '%{http_code}' --max-time 10 --haproxy-protocol --cacert "$CLUSTER_PKI/rootCA.crt" \
      "$n1/health/live" 2>/dev/null || true)
  [ "$s" != 200 ] && ok "(f) a PROXY header from an address other than HAProxy's is refused" ||
    ko "(f) a PROXY header from 127.0.0.1 was served: $s"
fi

# --- (b) load through HAProxy; node 2 stopped, then started again
load() { # one unwrap per connection through HAProxy until $tmp/stop exists (60 s at most)
  local end=$((SECONDS + 60)) s
  while [ ! -f "$tmp/stop" ] && [ $SECONDS -lt $end ]; do
    s=$(curl -sS -o /dev/null -w '%{http_code}' --max-time 10 --cacert "$CLUSTER_PKI/rootCA.crt" \
        --cert "$CLUSTER_PKI/cmxDevice.p12:$pw" --cert-type P12 -H 'Content-Type: application/json' \
        --data "{\"site_id\":\"site-a\",\"customer_key\":\"$ck\",\"user_key\":\"$uk\",\"workspace_key\":\"$wk\"}" \
        "$ha/v1/workspace-keys/unwrap" 2>/dev/null) || true
    echo "$(date +%s.%N) ${s:-000}"
  done
}
stats_of() { curl -fsS --max-time 3 "http://127.0.0.1:$CLUSTER_STATS_PORT/stats;csv" 2>/dev/null |
  awk -F, -v n="$1" '$1 == "kmsd_nodes" && $2 == n { print $18 }'; }
rm -f "$tmp/stop"
load > "$tmp/load.log" & load_pid=$!
sleep 2
t_stop=$(date +%s.%N)
"$lc" stop-node "$dir" 2 >/dev/null
# why: fall 2 x inter 1 s, plus one check's timeout, then a margin
sleep 4
t_out=$(date +%s.%N)
st=$(stats_of node2)
case "$st" in DOWN*) ok "(b) HAProxy took node 2 out of rotation ($st)" ;; *) ko "(b) node 2 stopped, HAProxy says '$st'" ;; esac
sleep 4
t_back=$(date +%s.%N)
KMS_BUILD_DIR=$build "$lc" start-node "$dir" 2 >/dev/null || ko "(b) node 2 did not start again"
st=
for _ in $(seq 40); do st=$(stats_of node2); [ "$st" = UP ] && break; sleep 0.25; done
[ "$st" = UP ] && ok "(b) node 2 rejoined rotation (HAProxy stats: UP)" || ko "(b) node 2 back: HAProxy says '$st'"
seen=no
for _ in $(seq 9); do
  [ "$(ready_json "$ha")" = 200 ] && grep -q '"node":"node2"' "$tmp/ready" && { seen=yes; break; }
done
[ $seen = yes ] && ok "(b) node 2 answers through HAProxy again" || ko "(b) node 2 never answered through HAProxy"
sleep 2
touch "$tmp/stop"; wait "$load_pid"; load_pid=
total=$(wc -l < "$tmp/load.log")
failed=$(awk '$2 != 200' "$tmp/load.log" | wc -l)
switch=$(awk -v a="$t_stop" -v b="$t_out" '$1 >= a && $1 < b && $2 != 200' "$tmp/load.log" | wc -l)
after=$(awk -v b="$t_out" '$1 >= b && $2 != 200' "$tmp/load.log" | wc -l)
during=$(awk -v b="$t_out" -v c="$t_back" '$1 >= b && $1 < c' "$tmp/load.log" | wc -l)
echo "     load: $total requests through HAProxy, $failed failed; $switch failed during the switch" \
     "(stop to detection), $after after it; $during served while node 2 was out"
[ "$total" -ge 20 ] && ok "(b) bounded load ran ($total requests)" || ko "(b) only $total requests under load"
[ "$after" -eq 0 ] && [ "$during" -gt 0 ] && ok "(b) after HAProxy's check interval every request succeeded" ||
  ko "(b) $after failed requests after detection ($during while node 2 was out)"

# --- (d) Redis holds no key material (before Redis is restarted empty)
scan() {
  local out
  out=$(REDIS_PASSWORD=$(cat "$CLUSTER_REDIS_PASSWORD_FILE") /usr/bin/python3 "$here/redis_scan.py" \
    "$CLUSTER_REDIS_PORT" "$secrets" 2>&1); local rc=$?
  case "$out" in *cache_entries=0*) rc=3 ;; esac
  [ $rc -eq 0 ] && ok "(d) $1: no plaintext key in Redis ($out)" || ko "(d) $1: rc $rc: $out"
}
scan "after (a) and (b)"

# --- (c) Redis stopped mid-run
a_ck=$ck a_uk=$uk a_wk=$wk
"$lc" stop-redis "$dir" >/dev/null
bad=0 n=0
for i in 1 2 3; do
  for u in "$n1" "$n2" "$n3"; do
    s=$(unwrap_ws "$u" site-a); n=$((n + 1)); [ "$s" = 200 ] || bad=$((bad + 1))
  done
  s=$(unwrap_ws "$ha" site-a); n=$((n + 1)); [ "$s" = 200 ] || bad=$((bad + 1))
  # a new customer key with Redis down: made, unwrapped on the node that made it and elsewhere
  new_chain "$(node_url "$i")" "site-c$i"
  s=$(api "$(node_url $((i % 3 + 1)))" cmxBackend POST /v1/user-keys "{\"site_id\":\"site-c$i\",\"customer_key\":\"$ck\"}")
  n=$((n + 2)); [ -n "$ck" ] || bad=$((bad + 1)); [ "$s" = 201 ] || bad=$((bad + 1))
  ck=$a_ck uk=$a_uk wk=$a_wk
done
[ $bad -eq 0 ] && ok "(c) Redis down: $n requests, no client-visible error" || ko "(c) Redis down: $bad of $n failed"
st='' code=''
for _ in $(seq 30); do
  code=$(ready_json "$n2"); st=$(cache_status)
  [ "$st" = distributed/degraded ] && break
  sleep 0.5
done
[ "$code" = 200 ] && [ "$st" = distributed/degraded ] && ok "(c) Redis down: /health/ready 200, cache degraded" ||
  ko "(c) Redis down: /health/ready $code, cache $st"
KMS_BUILD_DIR=$build "$lc" start-redis "$dir" >/dev/null || ko "(c) redis-server did not start again"
# shellcheck disable=SC1091
. "$dir/cluster.env"
up_nodes=0
for u in "$n1" "$n2" "$n3"; do
  for _ in $(seq 60); do ready_json "$u" >/dev/null; [ "$(cache_status)" = distributed/ok ] && break; sleep 0.5; done
  [ "$(cache_status)" = distributed/ok ] && up_nodes=$((up_nodes + 1))
done
[ $up_nodes -eq 3 ] && ok "(c) Redis back: every node reports the cache ok again" || ko "(c) Redis back: $up_nodes of 3 nodes ok"
new_chain "$n1" site-r
s1=$(api "$n1" cmxBackend POST /v1/user-keys "{\"site_id\":\"site-r\",\"customer_key\":\"$ck\"}"); uk=$(field user_key)
s2=$(api "$n1" cmxBackend POST /v1/workspace-keys "{\"site_id\":\"site-r\",\"customer_key\":\"$ck\",\"user_key\":\"$uk\"}")
wk=$(field workspace_key)
s3=$(unwrap_ws "$n1" site-r)
d1=$(decrypts)
s4=$(unwrap_ws "$n2" site-r)
d2=$(decrypts)
[ "$s1$s2$s3$s4" = 201201200200 ] && [ "$d2" -eq "$d1" ] &&
  ok "(c) Redis back: a key unwrapped on node 1 is served by node 2 with no KMIP Decrypt" ||
  ko "(c) Redis back: $s1 $s2 $s3 $s4, Decrypts $d1 -> $d2"
scan "at the end"

# --- TLS session resumption across nodes: the ticket key is derived from the cluster key,
# so a session begun on one node resumes on the next one HAProxy's round robin picks
per_node() { for i in 1 2 3; do grep -c '"op":"whoami"' "$dir/node$i/audit.log" 2>/dev/null || true; done | tr '\n' ' '; }
before=$(per_node)
out=$(KMS_KEYSTORE_PASSWORD=$pw "$kmsctl" bench --url "$ha" --cert "$CLUSTER_PKI/cmxBackend.p12" --op whoami \
  --new-conn --resume -c 1 -d 3 -w 0 --json 2>/dev/null)
sleep 0.5 # the audit writer's flush interval
after=$(per_node)
hs=$(/usr/bin/python3 -c 'import json,sys; print(json.loads(sys.argv[1])["handshakes"])' "$out" 2>/dev/null || echo 0)
res=$(/usr/bin/python3 -c 'import json,sys; print(json.loads(sys.argv[1])["resumed"])' "$out" 2>/dev/null || echo 0)
spread=$(/usr/bin/python3 -c 'import sys; b=sys.argv[1].split(); a=sys.argv[2].split(); print(sum(1 for x, y in zip(b, a) if int(y) > int(x)))' "$before" "$after")
if [ "$hs" -ge 30 ] && [ "$res" -ge $((hs * 9 / 10)) ] && [ "$spread" -eq 3 ]; then
  ok "TLS resumption across nodes through HAProxy: $res of $hs handshakes resumed, all 3 nodes served"
else
  ko "TLS resumption across nodes: $res of $hs handshakes resumed, $spread nodes served (whoami per node $before -> $after)"
fi

# --- invalidation: the admin drops every node's cached customer keys (SPEC §9)
s=$(api "$ha" cmxAdmin POST /v1/cluster/cache/invalidate)
[ "$s" = 200 ] && ok "invalidate: POST /v1/cluster/cache/invalidate as admin" || ko "invalidate: $s $(head -c 200 "$tmp/body")"
sleep 1.5   # the other nodes re-read the Redis generation every second
d1=$(decrypts)
s3=$(unwrap_ws "$n3" site-r)
d2=$(decrypts)
[ "$s3" = 200 ] && [ "$d2" -gt "$d1" ] && ok "invalidate: node 3 goes back to the HSM for the key (Decrypts $d1 -> $d2)" ||
  ko "invalidate: $s3, Decrypts $d1 -> $d2"
s=$(api "$ha" cmxBackend POST /v1/cluster/cache/invalidate)
[ "$s" = 403 ] && ok "invalidate: a backend certificate gets 403" || ko "invalidate as backend: $s"
