#!/usr/bin/env bash
# Cluster keystore distribution (SPEC §11, issue 12) on the loopback cluster of
# deploy/local-cluster.sh: HAProxy + 3 kmsd, each with its own keystore file,
# a real redis-server, PyKMIP. Driven as an operator would, with kmsctl and a
# copy of node 1's kms.properties in a folder where no kmsd runs:
#   (a) a device certificate imported with --cluster: every node, directly and
#       through HAProxy, accepts it within 5 s
#   (b) a backend certificate deleted with --cluster: every node refuses it within 5 s
#   (c) kmsServer renewed with --cluster: every node presents the new certificate
#       to new connections
#   (a-c) throughout, load through HAProxy with an unchanged client certificate
#       (keep-alive and new connections) has 0 failed requests
#   (d) a node stopped during a change holds the new generation when it is started,
#       before it reports ready
#   (e) Redis down during the command: a clear failure, nothing published, nodes
#       keep serving; Redis back (empty): the next edit still gets a generation
#       above the nodes'
#   (f) tampering: a modified blob, a replayed older generation, a head set back, a
#       blob sealed under another cluster key: refused on every node, keystore file
#       unchanged, kms_keystore_rejected_total{reason} incremented
#   (g) a node's keystore file replaced by hand: kmsctl cluster status exits 1 and
#       names it; a new generation brings it back
#   (h) history lists the generations; restore --cluster GEN republishes one
#   (i) the cluster key appears in clear in no node directory and nowhere in Redis
# Everything it started is stopped by PID on exit. Every wait is bounded.
#   cluster_keystore.sh KMSD KMSCTL DIR
set -u
kmsd=${1:?KMSD} kmsctl=${2:?KMSCTL} dir=${3:?DIR}
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
lc=$root/deploy/local-cluster.sh
py=/usr/bin/python3
build=$(cd "$(dirname "$kmsd")/.." && pwd)
pass=0 fail=0
ok() { echo "ok   $1"; pass=$((pass + 1)); }
ko() { echo "FAIL $1"; fail=$((fail + 1)); }
load_pids=()
finish() {
  for p in "${load_pids[@]}"; do kill "$p" 2>/dev/null; done
  "$lc" down "$dir" >/dev/null 2>&1 || { echo "FAIL down: sanitizer report in a node's log"; fail=$((fail + 1)); }
  echo "cluster_keystore: $pass passed, $fail failed"
  [ "$fail" -eq 0 ] && exit 0 || exit 1
}
trap finish EXIT
trap 'exit 1' INT TERM

# why: the cluster key is made here from known bytes, so that (i) can look for them
rm -rf "$dir" && mkdir -p "$dir" && chmod 700 "$dir"
export KMS_PKI_PASSWORD; KMS_PKI_PASSWORD=$(openssl rand -hex 12)
printf '%s\n' "$KMS_PKI_PASSWORD" > "$dir.pw" && chmod 600 "$dir.pw"
openssl rand 32 > "$dir.rawkey"
base64 -w0 < "$dir.rawkey" > "$dir.plainkey" && echo >> "$dir.plainkey"
"$kmsctl" cluster key create --password-file "$dir.pw" --from-plain "$dir.plainkey" --out "$dir/cluster.key" \
  > /dev/null || { ko "kmsctl cluster key create --from-plain"; exit 1; }
if ! KMS_BUILD_DIR=$build timeout 240 "$lc" up "$dir" > "$dir.up.log" 2>&1; then
  cat "$dir.up.log"; ko "local-cluster.sh up"; exit 1
fi
unset KMS_PKI_PASSWORD
# shellcheck disable=SC1091
. "$dir/cluster.env"
pw=$CLUSTER_PASSWORD pki=$CLUSTER_PKI
grep -q '^kmsd-cluster-key:v1:' "$dir/cluster.key" && ok "up: the nodes share a sealed cluster key" ||
  ko "cluster.key is not sealed"
ks_sums=$(for n in 1 2 3; do sha256sum < "$dir/node$n/keystore/kms.jks"; done | sort -u | wc -l)
[ -f "$dir/node1/keystore/kms.jks" ] && [ -f "$dir/node3/keystore/kms.jks" ] && [ "$ks_sums" = 1 ] &&
  ok "up: each node has its own keystore file, seeded from one" || ko "per-node keystore files"

# The operator: a copy of node 1's configuration in a folder where no kmsd runs
op=$dir/operator && mkdir -p "$op"
cp "$dir/node1/kms.properties" "$op/kms.properties"
kc() { KMS_CONFIG=$op/kms.properties "$kmsctl" "$@"; }
ha=https://$CLUSTER_HAPROXY_ADDR:$CLUSTER_HAPROXY_PORT
node_url() { local a=CLUSTER_NODE$1_ADDR p=CLUSTER_NODE$1_PORT; echo "https://${!a}:${!p}"; }
addr_of() { local a=CLUSTER_NODE$1_ADDR p=CLUSTER_NODE$1_PORT; echo "${!a}:${!p}"; }
urls=("$(node_url 1)" "$(node_url 2)" "$(node_url 3)" "$ha")
whoami() { # whoami P12 URL -> status
  curl -s -o /dev/null -w '%{http_code}' --max-time 5 --cacert "$pki/rootCA.crt" --cert "$1:$pw" --cert-type P12 \
    "$2/v1/whoami" 2>/dev/null || echo 000
}
# every URL answers CODE for P12 within LIMIT s: prints the seconds taken, or "timeout <codes>"
all_answer() { # all_answer P12 CODE LIMIT
  local start=$SECONDS t0 codes u
  t0=$(date +%s.%N)
  while :; do
    codes=""
    for u in "${urls[@]}"; do codes="$codes$(whoami "$1" "$u") "; done
    if [ "$codes" = "$2 $2 $2 $2 " ]; then
      $py -c 'import sys,time; print("%.2f" % (time.time() - float(sys.argv[1])))' "$t0"; return 0
    fi
    [ $((SECONDS - start)) -lt "$3" ] || { echo "timeout $codes"; return 1; }
    sleep 0.1
  done
}
metric() { # metric N NAME{labels} -> value on node N's admin listener
  local a=CLUSTER_NODE$1_ADDR
  curl -s --max-time 5 "http://${!a}:9843/metrics" 2>/dev/null | awk -v m="$2" '$1 == m { print $2 }'
}
sums() { for n in 1 2 3; do sha256sum < "$dir/node$n/keystore/kms.jks" | cut -c1-64; done | tr '\n' ' '; }
gens() { for n in 1 2 3; do sed -n 's/^generation=//p' "$dir/node$n/keystore/kms.jks.generation" 2>/dev/null || echo 0; done | tr '\n' ' '; }

issue() { # issue NAME CN [SAN]: a certificate from the dev intermediate CA, NAME.p12 + NAME.crt in $op
  ( cd "$op" && export DEVPKI_PW=$pw &&
    openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$1.key" 2>/dev/null &&
    openssl req -new -key "$1.key" -subj "/O=kmsd dev/CN=$2" -out "$1.csr" 2>/dev/null &&
    { echo 'basicConstraints = critical, CA:FALSE'; echo 'keyUsage = critical, digitalSignature';
      if [ -n "${3:-}" ]; then echo 'extendedKeyUsage = serverAuth'; echo "subjectAltName = $3"
      else echo 'extendedKeyUsage = clientAuth'; fi; } > "$1.ext" &&
    openssl x509 -req -in "$1.csr" -CA "$pki/intermediateCA.crt" -CAkey "$pki/intermediateCA.key" \
      -CAcreateserial -CAserial "$op/ca.srl" -days 60 -sha256 -extfile "$1.ext" -out "$1.crt" 2>/dev/null &&
    cat "$1.crt" "$pki/intermediateCA.crt" "$pki/rootCA.crt" > "$1-chain.crt" &&
    openssl pkcs12 -export -name "$1" -inkey "$1.key" -in "$1-chain.crt" -passout env:DEVPKI_PW -out "$1.p12" )
}
issue dev2 cmxDevice2 && issue oldBackend cmxBackendOld ||  { ko "test certificates"; exit 1; }
printf '%s\n' "$pw" > "$op/p12-password"

# --- load through HAProxy for (a)-(c): keep-alive and a new connection per request
bench() { # bench OUT ARGS...
  "$kmsctl" bench --url "$ha" --cert "$pki/cmxBackend.p12" --password-file "$op/p12-password" --op whoami \
    -w 0 -d 120 --json "${@:2}" > "$1" 2>&1 &
  load_pids+=($!)
}
bench "$op/load-keepalive.json" -c 2
bench "$op/load-newconn.json" -c 1 --new-conn
sleep 1

# --- (a) a new device certificate, and a backend certificate to delete in (b)
[ "$(whoami "$op/dev2.p12" "$ha")" = 401 ] && ok "(a) before: cmxDevice2 is unknown (401)" || ko "(a) before: dev2 not 401"
out=$(kc keystore import-cert cmxBackendOld "$op/oldBackend.crt" --cluster 2>&1) ||
  ko "(a) import-cert cmxBackendOld: $out"
out=$(kc keystore import-cert cmxDevice2 "$op/dev2.crt" --cluster 2>&1); rc=$?
t=$(all_answer "$op/dev2.p12" 200 5)
if [ $rc -eq 0 ] && grep -q "Published keystore generation" <<< "$out" && [ "${t%% *}" != timeout ]; then
  ok "(a) import-cert --cluster: every node and HAProxy accept cmxDevice2 after $t s (limit 5)"
else ko "(a) import-cert --cluster: status $rc, $t: $out"; fi
[ "$(whoami "$op/oldBackend.p12" "$ha")" = 200 ] && ok "(a) cmxBackendOld accepted too" || ko "(a) cmxBackendOld"
gen_a=$(kc keystore history --cluster --json 2>/dev/null | $py -c 'import json,sys; print(json.load(sys.stdin)["head"])')
grep -q 'keystore.reload_refused\|generation_refused' "$dir"/node*/kmsd.log &&
  ko "(a) a node refused something: $(grep -h 'refused' "$dir"/node*/kmsd.log | head -2)" || true

# --- (b) the backend certificate deleted
out=$(kc keystore delete cmxBackendOld --cluster 2>&1); rc=$?
t=$(all_answer "$op/oldBackend.p12" 401 5)
[ $rc -eq 0 ] && [ "${t%% *}" != timeout ] && ok "(b) delete --cluster: every node refuses cmxBackendOld after $t s" ||
  ko "(b) delete --cluster: status $rc, $t: $out"

# --- (c) kmsServer renewed: new connections see the new certificate
sans="IP:$CLUSTER_HAPROXY_ADDR,IP:$CLUSTER_NODE1_ADDR,IP:$CLUSTER_NODE2_ADDR,IP:$CLUSTER_NODE3_ADDR,IP:127.0.0.1"
issue newServer kmsServer "$sans" || ko "(c) new server certificate"
want=$(openssl x509 -in "$op/newServer.crt" -noout -fingerprint -sha256 | cut -d= -f2)
presented() { # presented HOST:PORT -> SHA-256 fingerprint of the certificate the server sends
  timeout 5 openssl s_client -connect "$1" -CAfile "$pki/rootCA.crt" </dev/null 2>/dev/null |
    openssl x509 -noout -fingerprint -sha256 2>/dev/null | cut -d= -f2
}
out=$(kc keystore import-p12 kmsServer "$op/newServer.p12" --p12-password-file "$op/p12-password" --force \
  --cluster --wait 10 2>&1); rc=$?
seen=""
for n in 1 2 3; do [ "$(presented "$(addr_of "$n")")" = "$want" ] && seen="$seen$n"; done
[ "$(presented "$CLUSTER_HAPROXY_ADDR:$CLUSTER_HAPROXY_PORT")" = "$want" ] && seen="${seen}h"
[ $rc -eq 0 ] && [ "$seen" = 123h ] && ok "(c) kmsServer renewed with --cluster: nodes 1-3 and HAProxy present it" ||
  ko "(c) renewal: status $rc, presented by [$seen]: $out"
curl -fsS --max-time 5 --cacert "$pki/rootCA.crt" "$ha/health/ready" > /dev/null &&
  ok "(c) the new certificate verifies against the root CA through HAProxy" || ko "(c) health through HAProxy"

# --- (a-c) the load: 0 failed requests
for p in "${load_pids[@]}"; do kill -INT "$p" 2>/dev/null; done
for p in "${load_pids[@]}"; do
  for _ in $(seq 100); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
done
load_pids=()
for f in load-keepalive load-newconn; do
  line=$($py - "$op/$f.json" <<'PY'
import json, sys
j = json.loads(open(sys.argv[1]).read().strip().splitlines()[-1])
bad = j["errors"] + j["transport_errors"] + sum(v for k, v in j["status"].items() if k != "200")
print("%d %d %d" % (j["requests"], bad, j["handshakes"]))
PY
  ) || line="0 -1 0"
  read -r nreq nbad nhs <<< "$line"
  [ "$nreq" -gt 0 ] && [ "$nbad" -eq 0 ] &&
    ok "(a-c) load through HAProxy ($f): $nreq requests, $nbad failed, $nhs handshakes" ||
    ko "(a-c) load ($f): $nreq requests, $nbad failed: $(tail -c 400 "$op/$f.json")"
done

# --- (d) a node stopped during a change converges when started, before it is ready
issue dev3 cmxDevice3 || ko "(d) certificate"
"$lc" stop-node "$dir" 3 > /dev/null
out=$(kc keystore import-cert cmxDevice3 "$op/dev3.crt" --cluster 2>&1) || ko "(d) import-cert: $out"
"$lc" start-node "$dir" 3 > /dev/null || ko "(d) start node 3"
s3=$(whoami "$op/dev3.p12" "$(node_url 3)")
applied=$(grep '"keystore.cluster_sync"' "$dir/node3/kmsd.log" | tail -1)
[ "$s3" = 200 ] && grep -q '"applied":"yes"' <<< "$applied" &&
  ok "(d) node 3, down during the change, applied it at start and accepts cmxDevice3 at once" ||
  ko "(d) node 3: whoami $s3; $applied"
t=$(all_answer "$op/dev3.p12" 200 5)
[ "${t%% *}" != timeout ] && ok "(d) every node accepts cmxDevice3" || ko "(d) $t"

# --- (h) history, and restore --cluster: roll back by going forward
hist=$(kc keystore history --cluster 2>&1)
grep -q "import-cert cmxDevice2 dev2.crt" <<< "$hist" && grep -q "delete cmxBackendOld" <<< "$hist" &&
  grep -q "root@\|@" <<< "$hist" && ok "(h) history lists the edits, who ran them and when" ||
  ko "(h) history: $hist"
out=$(kc keystore restore "$gen_a" --cluster --wait 10 2>&1); rc=$?
# generation gen_a had cmxBackendOld and cmxDevice2, but not cmxDevice3
t=$(all_answer "$op/oldBackend.p12" 200 5)
[ $rc -eq 0 ] && [ "${t%% *}" != timeout ] && [ "$(whoami "$op/dev3.p12" "$ha")" = 401 ] &&
  ok "(h) restore --cluster $gen_a: republished as a new generation, every node back to it" ||
  ko "(h) restore: status $rc, $t: $out"

# --- (e) Redis down during the command
issue dev4 cmxDevice4 || ko "(e) certificate"
before=$(sums)
"$lc" stop-redis "$dir" > /dev/null
out=$(timeout 30 env KMS_CONFIG="$op/kms.properties" "$kmsctl" keystore import-cert cmxDevice4 "$op/dev4.crt" \
  --cluster 2>&1); rc=$?
[ $rc -ne 0 ] && grep -qi "redis" <<< "$out" && grep -qi "nothing was" <<< "$out" &&
  ok "(e) Redis down: the command fails and says so ($(head -1 <<< "$out" | cut -c1-110))" ||
  ko "(e) Redis down: status $rc: $out"
[ "$(whoami "$pki/cmxBackend.p12" "$ha")" = 200 ] && [ "$(sums)" = "$before" ] &&
  ok "(e) the nodes keep serving on their keystore" || ko "(e) nodes after the failed command"
"$lc" start-redis "$dir" > /dev/null
# why: the restarted Redis is empty (no persistence); the nodes' heartbeats come back first
for _ in $(seq 100); do kc cluster status --json 2>/dev/null | grep -q '"keystore_generation": [1-9]' && break; sleep 0.1; done
g_nodes=$(gens)
out=$(kc keystore import-cert cmxDevice4 "$op/dev4.crt" --cluster --wait 10 2>&1); rc=$?
g_new=$(sed -n 's/^Published keystore generation \([0-9]*\).*/\1/p' <<< "$out")
[ $rc -eq 0 ] && [ -n "$g_new" ] && [ "$g_new" -gt "${g_nodes%% *}" ] && [ "$(whoami "$op/dev4.p12" "$ha")" = 200 ] &&
  ok "(e) Redis back, empty: the next edit is generation $g_new, above the nodes' ($g_nodes), and applies" ||
  ko "(e) after Redis came back: status $rc, nodes $g_nodes, new $g_new: $out"

# --- (f) tampering
export REDIS_PASSWORD; REDIS_PASSWORD=$(cat "$CLUSTER_REDIS_PASSWORD_FILE")
tamper() { # tamper REASON ARGS...: every node refuses, files unchanged, metric +1
  local reason=$1; shift
  local key="kms_keystore_rejected_total{reason=\"$reason\"}" b=() n s0 ok_nodes=0
  for n in 1 2 3; do b[$n]=$(metric "$n" "$key"); done
  s0=$(sums)
  "$py" "$here/ks_redis.py" "$CLUSTER_REDIS_PORT" "$@" > /dev/null || { ko "(f) ks_redis.py $*"; return; }
  for _ in $(seq 60); do
    ok_nodes=0
    for n in 1 2 3; do [ "$(metric "$n" "$key")" -gt "${b[$n]:-0}" ] 2>/dev/null && ok_nodes=$((ok_nodes + 1)); done
    [ $ok_nodes -eq 3 ] && break
    sleep 0.1
  done
  [ $ok_nodes -eq 3 ] && [ "$(sums)" = "$s0" ] && [ "$(whoami "$pki/cmxBackend.p12" "$ha")" = 200 ] &&
    ok "(f) $* refused on every node (reason $reason), keystore files unchanged" ||
    ko "(f) $*: $ok_nodes of 3 nodes counted $reason; files $( [ "$(sums)" = "$s0" ] && echo same || echo CHANGED)"
}
good=$("$py" "$here/ks_redis.py" "$CLUSTER_REDIS_PORT" head)
tamper authentication modify
tamper generation replay "$good"
tamper stale rollback "$((good - 1))"
# a blob sealed under another cluster key (same cluster name, same Redis)
other=$dir/other && mkdir -p "$other"
"$kmsctl" cluster key create --password-file "$dir/pki/password.txt" --out "$other/cluster.key" > /dev/null
sed "s|^kms.cache.cluster.key.file = .*|kms.cache.cluster.key.file = $other/cluster.key|" "$op/kms.properties" \
  > "$other/kms.properties"
key='kms_keystore_rejected_total{reason="authentication"}'
b1=$(metric 1 "$key") b3=$(metric 3 "$key") s0=$(sums)
out=$(KMS_CONFIG=$other/kms.properties "$kmsctl" keystore create --cluster --force --from "$pki/kms.jks" 2>&1) ||
  ko "(f) publish under another key: $out"
# why both: a node that missed the pub/sub message finds the generation at its
# next check (kms.cluster.keystore.check.ms), so wait for each node, 10 s at most
for _ in $(seq 100); do
  [ "$(metric 1 "$key")" -gt "$b1" ] 2>/dev/null && [ "$(metric 3 "$key")" -gt "$b3" ] 2>/dev/null && break
  sleep 0.1
done
[ "$(metric 1 "$key")" -gt "$b1" ] && [ "$(metric 3 "$key")" -gt "$b3" ] && [ "$(sums)" = "$s0" ] &&
  ok "(f) a generation sealed under another cluster key: refused, files unchanged" ||
  ko "(f) other key: metric $b1/$b3 -> $(metric 1 "$key")/$(metric 3 "$key"); sums before: $s0 after: $(sums)"
grep -q '"keystore.generation_refused"' "$dir/node2/kmsd.log" && ok "(f) the refusals are logged with their reason" ||
  ko "(f) no keystore.generation_refused in node 2's log"
out=$(kc keystore import-cert cmxDevice3 "$op/dev3.crt" --cluster 2>&1) &&
  ko "(f) an edit on top of a forged head was published: $out" ||
  { grep -q "restore --cluster" <<< "$out" && ok "(f) an edit on top of the forged head is refused, naming the way out" ||
    ko "(f) edit on a forged head: $out"; }
hist=$(kc keystore history --cluster 2>&1)
grep -q "REFUSED" <<< "$hist" && ok "(f) history flags the generation that does not open" || ko "(f) history: $hist"
out=$(kc keystore restore "$good" --cluster --wait 10 2>&1) && ok "(f) restore --cluster $good repairs the head" ||
  ko "(f) restore $good: $out"

# --- (g) divergence: a node's keystore file replaced by hand
cp "$pki/kms.jks" "$dir/node2/keystore/kms.jks.new" && mv "$dir/node2/keystore/kms.jks.new" "$dir/node2/keystore/kms.jks"
rc=0
for _ in $(seq 150); do
  out=$(kc cluster status 2>&1); rc=$?
  [ $rc -eq 1 ] && grep -q "node2 holds another keystore" <<< "$out" && break
  sleep 0.1
done
[ $rc -eq 1 ] && grep -q "node2 holds another keystore" <<< "$out" && grep -q "^node2 *diverged" <<< "$out" &&
  ok "(g) a keystore replaced by hand: cluster status exits 1 and names node2" || ko "(g) status $rc: $out"
out=$(kc keystore import-cert cmxDevice3 "$op/dev3.crt" --cluster --wait 10 2>&1) || ko "(g) republish: $out"
for _ in $(seq 100); do kc cluster status > "$op/status.txt" 2>&1 && break; sleep 0.1; done
kc cluster status > "$op/status.txt" 2>&1 && ok "(g) the next generation brings node2 back: status exits 0" ||
  ko "(g) after the next generation: $(cat "$op/status.txt")"
kc cluster status --json | $py -c 'import json,sys; j=json.load(sys.stdin); assert j["healthy"] and len(j["nodes"]) == 3' &&
  ok "(g) cluster status --json: healthy, 3 nodes" || ko "(g) status --json"

# --- (i) the cluster key in clear: in no node directory, nowhere in Redis
hits=$("$py" - "$dir.rawkey" "$dir" <<'PY'
import base64, os, sys
raw = open(sys.argv[1], "rb").read()
needles = [raw, base64.b64encode(raw), raw.hex().encode()]
hits = 0
for top in ("node1", "node2", "node3", "operator"):
    for d, _, files in os.walk(os.path.join(sys.argv[2], top)):
        for f in files:
            p = os.path.join(d, f)
            try:
                data = open(p, "rb").read()
            except OSError:
                continue
            if any(n in data for n in needles):
                print(p, file=sys.stderr)
                hits += 1
print(hits)
PY
)
[ "$hits" = 0 ] && ok "(i) the cluster key is in no file of the node and operator folders" || ko "(i) $hits files hold it"
out=$("$py" "$here/redis_scan.py" "$CLUSTER_REDIS_PORT" "$dir.plainkey" 2>&1) &&
  ok "(i) Redis: not in any key or value ($(tail -1 <<< "$out"))" || ko "(i) Redis scan: $out"
grep -qF "$pw" "$dir"/node*/kmsd.log "$dir"/node*/audit.log && ko "(i) the keystore password is in a log" ||
  ok "(i) the keystore password is in no log"
