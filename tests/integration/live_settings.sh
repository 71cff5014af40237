#!/usr/bin/env bash
# Settings that change live (issue 12): kmsd --check-config marks each setting
# live or restart; SIGHUP, or kms.properties changing on disk, applies the live
# ones (here the cache TTL, seen as a miss where a cached key would have hit,
# and the log level) and logs a changed restart-only setting as pending without
# applying it; a kms.properties that does not load changes nothing. Its own
# kmsd (tests/integration/harness.sh, soft backend), stopped by PID on exit.
#   live_settings.sh KMSD DIR
set -u
kmsd=${1:?KMSD} dir=${2:?DIR}
here=$(cd "$(dirname "$0")" && pwd)
pass=0 fail=0
ok() { echo "ok   $1"; pass=$((pass + 1)); }
ko() { echo "FAIL $1"; fail=$((fail + 1)); }
finish() {
  "$here/harness.sh" stop "$dir" > "$dir.stop.log" 2>&1 || { cat "$dir.stop.log"; ko "harness stop"; }
  echo "live_settings: $pass passed, $fail failed"
  [ "$fail" -eq 0 ]
}
"$here/harness.sh" start "$dir" "$kmsd" soft > "$dir.start.log" 2>&1 || { cat "$dir.start.log"; exit 1; }
trap 'finish; exit $?' EXIT
# shellcheck disable=SC1091
. "$dir/it.env"
conf=$dir/kms.properties
base=https://127.0.0.1:$KMS_IT_PORT
api() { # api PATH JSON -> status, body in $dir/body
  curl -sS -o "$dir/body" -w '%{http_code}' --max-time 10 --cacert "$KMS_IT_PKI/rootCA.crt" \
    --cert "$KMS_IT_PKI/cmxBackend.p12:$KMS_IT_PASSWORD" --cert-type P12 -H 'Content-Type: application/json' \
    --data "$2" "$base$1" 2>/dev/null || echo 000
}
misses() { curl -s --max-time 5 "http://127.0.0.1:$KMS_IT_ADMIN_PORT/metrics" |
  awk '$1 == "kms_cache_total{tier=\"all\",result=\"miss\"}" { print $2 }'; }
wait_log() { # wait_log PATTERN SECONDS: 0 when the log shows it
  local n=$(($2 * 10))
  while [ $n -gt 0 ]; do grep -q "$1" "$dir/kmsd.log" && return 0; sleep 0.1; n=$((n - 1)); done
  return 1
}
set_prop() { # set_prop NAME VALUE: replaces or appends NAME in kms.properties, in place
  local tmp=$conf.edit
  { grep -v "^$1 *=" "$conf"; echo "$1 = $2"; } > "$tmp" && cat "$tmp" > "$conf" && rm -f "$tmp"
}

# --- --check-config marks each setting
out=$("$kmsd" --config "$conf" --check-config 2>&1)
grep -q '^# live: ' <<< "$out" && grep -B1 '^kms.cache.ttl = ' <<< "$out" | grep -q '^# live:' &&
  grep -B1 '^kms.server.port = ' <<< "$out" | grep -q '^# restart:' &&
  ok "--check-config marks kms.cache.ttl live and kms.server.port restart" || ko "--check-config marks: $out"

# --- SIGHUP: a shorter cache TTL takes effect; a new port is pending, not applied
[ "$(api /v1/customer-keys '{"site_id":"live"}')" = 201 ] || ko "customer key"
ck=$(/usr/bin/python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["customer_key"])' "$dir/body")
user_key() { api /v1/user-keys "{\"site_id\":\"live\",\"customer_key\":\"$ck\"}"; }
user_key > /dev/null; user_key > /dev/null
m0=$(misses)
set_prop kms.cache.ttl 1
set_prop kms.server.port 1
kill -HUP "$(cat "$dir/kmsd.pid")"
wait_log '"config.reloaded".*"applied":"kms.cache.ttl"' 5 && ok "SIGHUP: config.reloaded applies kms.cache.ttl" ||
  ko "SIGHUP: no config.reloaded with kms.cache.ttl: $(grep config. "$dir/kmsd.log" | tail -2)"
wait_log '"config.pending_restart".*kms.server.port' 2 &&
  ok "SIGHUP: kms.server.port logged as pending a restart" || ko "no config.pending_restart for kms.server.port"
sleep 1.5
s=$(user_key); m1=$(misses)
[ "$s" = 201 ] && [ "$m1" -gt "$m0" ] && ok "the cached customer key expired under the new 1 s TTL (misses $m0 -> $m1)" ||
  ko "TTL not live: status $s, misses $m0 -> $m1"
[ "$(api /v1/customer-keys '{"site_id":"live2"}')" = 201 ] && ok "kmsd still serves on its old port" ||
  ko "kmsd stopped serving on its port"

# --- kms.properties changed on disk, no signal: the log level (debug -> info; at
# warn or error kmsd would not log the info line that shows it)
set_prop kms.log.level info
wait_log '"config.reloaded".*"trigger":"kms.properties changed".*"applied":"kms.log.level"' 5 &&
  ok "kms.properties changed on disk: the log level applied without a signal" ||
  ko "file change: $(grep config. "$dir/kmsd.log" | tail -2)"

# --- a broken kms.properties changes nothing
set_prop kms.cache.ttl banana
kill -HUP "$(cat "$dir/kmsd.pid")"
wait_log '"config.reload_refused"' 5 && grep '"config.reload_refused"' "$dir/kmsd.log" | grep -q 'kms.cache.ttl' &&
  ok "an invalid kms.properties: config.reload_refused names the key, nothing changes" ||
  ko "broken file: $(grep config. "$dir/kmsd.log" | tail -2)"
[ "$(api /v1/customer-keys '{"site_id":"live3"}')" = 201 ] && ok "kmsd serves on after a refused reload" ||
  ko "kmsd after a refused reload"
grep -qF "$KMS_IT_PASSWORD" "$dir/kmsd.log" && ko "the keystore password is in the log" || ok "no password in the log"
