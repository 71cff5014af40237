#!/usr/bin/env bash
# The distributed cache over TLS with an ACL user, and `kmsctl hsm rotate`'s
# cluster invalidation, driven as an operator would (SPEC §9, issue 5):
#
#   - Redis (tests/stand-ins/redis) on TLS only, client certificates required,
#     an ACL user whose password kmsd and kmsctl read from a file;
#   - kmsd (tests/integration/harness.sh, soft backend) with
#     kms.cache.type=distributed and the kms.cache.redis.tls.* files, given
#     through the environment;
#   - kmsd --check-config refuses inconsistent Redis settings;
#   - a customer key is cached; `kmsctl hsm rotate kms-master` with the same
#     configuration rotates and INCRs the generation; kmsd re-reads it and
#     drops its cached keys (the next unwrap is a miss, then cached under
#     the new generation); with Redis stopped, rotate says the cache was NOT
#     invalidated and exits 3.
#
# usage: cluster_rotate.sh KMSD KMSCTL DIR
set -uo pipefail
kmsd=${1:?KMSD} kmsctl=${2:?KMSCTL} dir=${3:?DIR}
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
redis_sh=$root/tests/stand-ins/redis/redis.sh
fails=0
ok() { echo "ok   $*"; }
ko() { echo "FAIL $*"; fails=$((fails + 1)); }

finish() {
  [ -f "$dir/kmsd/kmsd.pid" ] && "$here/harness.sh" stop "$dir/kmsd" > "$dir/stop.log" 2>&1
  "$redis_sh" stop "$dir/redis" > /dev/null 2>&1
}
trap finish EXIT
trap 'exit 1' INT TERM

rm -rf "$dir" && mkdir -p "$dir" && chmod 700 "$dir"
"$redis_sh" pki "$dir/redis-pki" || { ko "redis.sh pki"; exit 1; }
pki=$dir/redis-pki
KMS_REDIS_TLS=$pki KMS_REDIS_TLS_ONLY=1 KMS_REDIS_TLS_AUTH_CLIENTS=yes KMS_REDIS_USER=kmsd \
  KMS_REDIS_PASSWORD=rot-Pw.1 "$redis_sh" start "$dir/redis" > "$dir/redis.out" 2>&1 ||
  { cat "$dir/redis.out"; ko "redis.sh start"; exit 1; }
# shellcheck disable=SC1091
. "$dir/redis/redis.env"
printf 'rot-Pw.1\n' > "$dir/redis-password" && chmod 600 "$dir/redis-password"
# why: the cluster key is sealed under the keystore password (SPEC §11), so the
# harness's dev PKI gets a password known here
export KMS_PKI_PASSWORD; KMS_PKI_PASSWORD=$(openssl rand -hex 12)
printf '%s\n' "$KMS_PKI_PASSWORD" > "$dir/ks-password" && chmod 600 "$dir/ks-password"
"$kmsctl" cluster key create --password-file "$dir/ks-password" --out "$dir/cluster.key" > /dev/null ||
  { ko "kmsctl cluster key create"; exit 1; }
rcli() { REDISCLI_AUTH=rot-Pw.1 timeout 5 redis-cli --tls --cacert "$pki/ca.crt" --cert "$pki/client.crt" \
  --key "$pki/client.key" --user kmsd -h 127.0.0.1 -p "$REDIS_PORT" --no-auth-warning "$@"; }
[ "$(rcli ping)" = PONG ] && ok "redis-server: TLS only, client certificates, ACL user kmsd" || ko "redis-cli ping"

export KMS_CACHE_TYPE=distributed
export KMS_CACHE_REDIS_URL=rediss://kmsd@127.0.0.1:$REDIS_PORT/0
export KMS_CACHE_REDIS_PASSWORD_FILE=$dir/redis-password
export KMS_CACHE_REDIS_TLS_CA_FILE=$pki/ca.crt
export KMS_CACHE_REDIS_TLS_CERT_FILE=$pki/client.crt
export KMS_CACHE_REDIS_TLS_KEY_FILE=$pki/client.key
export KMS_CACHE_CLUSTER_KEY_FILE=$dir/cluster.key

# --- kmsd --check-config refuses what does not fit together
check_bad() { # check_bad WHAT EXPECTED-TEXT VAR=VALUE...
  local what=$1 want=$2; shift 2
  local out; out=$(env "$@" "$kmsd" --config /dev/null --check-config 2>&1); local rc=$?
  if [ $rc -eq 1 ] && grep -qF -- "$want" <<< "$out"; then ok "--check-config refuses $what"
  else ko "--check-config on $what: status $rc: $(head -c 400 <<< "$out")"; fi
}
check_bad "TLS files with redis://" "is not rediss://" KMS_CACHE_REDIS_URL=redis://127.0.0.1:1
check_bad "a certificate without its key" "go together" KMS_CACHE_REDIS_TLS_KEY_FILE=
check_bad "sentinels and a host in the url" "are exclusive" KMS_CACHE_REDIS_SENTINELS=127.0.0.1:1 \
  KMS_CACHE_REDIS_SENTINEL_MASTER=m
check_bad "sentinels without a master name" "needs kms.cache.redis.sentinel.master" \
  KMS_CACHE_REDIS_URL=rediss:// KMS_CACHE_REDIS_SENTINELS=127.0.0.1:1
check_bad "a malformed sentinel list" "kms.cache.redis.sentinels" KMS_CACHE_REDIS_URL=rediss:// \
  KMS_CACHE_REDIS_SENTINELS=127.0.0.1 KMS_CACHE_REDIS_SENTINEL_MASTER=m
check_bad "a url without a host and no sentinels" "names no host" KMS_CACHE_REDIS_URL=rediss://kmsd@/0

# --- kmsd over rediss:// with a client certificate and the password file
if ! "$here/harness.sh" start "$dir/kmsd" "$kmsd" soft > "$dir/harness.out" 2>&1; then
  cat "$dir/harness.out"; ko "harness start"; exit 1
fi
# shellcheck disable=SC1091
. "$dir/kmsd/it.env"
base=https://127.0.0.1:$KMS_IT_PORT
tmp=$dir/t && mkdir -p "$tmp"
api() { # api CERT METHOD PATH [JSON] -> body in $tmp/body, prints the status
  local args=(-sS -o "$tmp/body" -w '%{http_code}' --max-time 20 --cacert "$KMS_IT_PKI/rootCA.crt"
              --cert "$KMS_IT_PKI/$1.p12:$KMS_IT_PASSWORD" --cert-type P12 -X "$2")
  [ $# -ge 4 ] && args+=(-H 'Content-Type: application/json' --data "$4")
  curl "${args[@]}" "$base$3" 2>/dev/null || echo 000
}
field() { /usr/bin/python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))[sys.argv[2]])' "$tmp/body" "$1" 2>/dev/null; }
cache() { # cache FIELD -> the /health/ready cache field, as the admin listener shows it
  curl -sS --max-time 5 "http://127.0.0.1:$KMS_IT_ADMIN_PORT/health/ready" 2>/dev/null |
    /usr/bin/python3 -c 'import json,sys; print(json.load(sys.stdin)["cache"][sys.argv[1]])' "$1" 2>/dev/null
}
gen() { rcli GET kms:cache:v1:gen | tr -d '\r'; }

[ "$(cache status)" = ok ] && ok "kmsd reaches Redis over rediss:// (client certificate, ACL user, password file)" ||
  ko "kmsd cache status: $(cache status); log: $(grep -m3 cache_redis "$dir/kmsd/kmsd.log")"
ck='' uk=''
[ "$(api cmxBackend POST /v1/customer-keys '{"site_id":"site-r"}')" = 201 ] && ck=$(field customer_key)
user_key() { api cmxBackend POST /v1/user-keys "{\"site_id\":\"site-r\",\"customer_key\":\"$ck\"}"; }
s1=$(user_key); s2=$(user_key)
m0=$(cache misses); h0=$(cache hits_local)
[ -n "$ck" ] && [ "$s1$s2" = 201201 ] && ok "customer key made and used twice (local hits $h0, misses $m0)" ||
  ko "customer key: $s1 $s2 $(head -c 300 "$tmp/body")"
n_entries() { rcli --scan --pattern "kms:cache:v1:g$1:*" | grep -c . ; }
g0=$(gen); g0=${g0:-0}
[ "$(n_entries "$g0")" -ge 1 ] && ok "the customer key is in Redis under generation $g0" ||
  ko "no entry under generation $g0"

# --- kmsctl hsm rotate: rotates and invalidates the cluster cache
out=$(KMS_CONFIG=$dir/kmsd/kms.properties "$kmsctl" hsm rotate kms-master 2>&1); rc=$?
g1=$(gen)
if [ $rc -eq 0 ] && grep -q "rotated 'kms-master'" <<< "$out" && grep -q "cluster cache invalidated" <<< "$out" &&
   [ "$g1" = $((g0 + 1)) ]; then ok "kmsctl hsm rotate: rotated, generation $g0 -> $g1"
else ko "kmsctl hsm rotate: status $rc, generation $g0 -> $g1: $out"; fi
sleep 1.5 # kmsd re-reads the generation at most every second
s3=$(user_key)
m1=$(cache misses); h1=$(cache hits_local)
[ "$s3" = 201 ] && [ "$m1" -gt "$m0" ] && [ "$h1" -eq "$h0" ] &&
  ok "kmsd re-read the generation: the next use is a miss (misses $m0 -> $m1), not a local hit" ||
  ko "after rotate: $s3, misses $m0 -> $m1, local hits $h0 -> $h1"
[ "$(n_entries "$g1")" -ge 1 ] && ok "the key is cached again under generation $g1" || ko "nothing under generation $g1"

# --- Redis down: the rotation happens, the invalidation cannot, and rotate says so
"$redis_sh" stop "$dir/redis" > /dev/null
out=$(KMS_CONFIG=$dir/kmsd/kms.properties "$kmsctl" hsm rotate kms-master 2>&1); rc=$?
if [ $rc -eq 3 ] && grep -q "rotated 'kms-master'" <<< "$out" && grep -q "was NOT invalidated" <<< "$out" &&
   grep -q "POST /v1/cluster/cache/invalidate" <<< "$out"; then
  ok "kmsctl hsm rotate with Redis down: rotated, says NOT invalidated, exit 3"
else ko "kmsctl hsm rotate with Redis down: status $rc: $out"; fi
grep -q "rot-Pw.1" "$dir/kmsd/kmsd.log" "$dir/kmsd/audit.log" && ko "the Redis password is in a log" ||
  ok "the Redis password is in no log"

echo "cluster_rotate.sh: $fails failure(s)"
[ "$fails" -eq 0 ]
