#!/usr/bin/env bash
# Benchmark (not a test): kmsd's customer-key unwrap rate through a real PyKMIP
# server, next to the rate PyKMIP's own Python client reaches against the same
# server in the same run, with and without connection reuse. kmsd runs with
# kms.cache.type=none, so every workspace-key unwrap costs one KMIP Decrypt.
#   tests/bench/kmip-unwrap.sh BUILD_DIR [SECONDS]     (default 10 s per line)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
build=$(cd "${1:?BUILD_DIR}" && pwd)
secs=${2:-10}
dir=$(mktemp -d /tmp/kms-bench-kmip-XXXXXX)
trap '"$root/tests/integration/harness.sh" stop "$dir" >/dev/null 2>&1 || true; rm -rf "$dir"' EXIT

KMS_CACHE_TYPE=none "$root/tests/integration/harness.sh" start "$dir" "$build/server/kmsd" kmip >/dev/null
# shellcheck disable=SC1091
. "$dir/it.env"; . "$dir/pykmip.env"
pw=$KMS_IT_PASSWORD
api() { curl -fsS --cacert "$dir/pki/rootCA.crt" --cert "$dir/pki/cmxBackend.p12:$pw" --cert-type P12 \
          -H 'Content-Type: application/json' --data "$2" "https://127.0.0.1:$KMS_IT_PORT$1"; }
get() { /usr/bin/python3 -c 'import json,sys; print(json.load(sys.stdin)[sys.argv[1]])' "$1"; }
ck=$(api /v1/customer-keys '{"site_id":"bench"}' | get customer_key)
uk=$(api /v1/user-keys "{\"site_id\":\"bench\",\"customer_key\":\"$ck\"}" | get user_key)
wk=$(api /v1/workspace-keys "{\"site_id\":\"bench\",\"customer_key\":\"$ck\",\"user_key\":\"$uk\"}" | get workspace_key)
printf '{"site_id":"bench","customer_key":"%s","user_key":"%s","workspace_key":"%s"}' "$ck" "$uk" "$wk" > "$dir/body.json"

echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'); $secs s per line"
py=/usr/bin/python3
$py "$here/kmip_peer_client.py" 127.0.0.1 "$PYKMIP_PORT" "$PYKMIP_CLIENT_CERT" "$PYKMIP_CLIENT_KEY" \
  "$PYKMIP_CA" "$secs" reuse | tee "$dir/r1"
$py "$here/kmsd_unwrap_client.py" "$KMS_IT_PORT" "$dir/pki" "$pw" "$dir/body.json" "$secs" keepalive | tee "$dir/r2"
$py "$here/kmip_peer_client.py" 127.0.0.1 "$PYKMIP_PORT" "$PYKMIP_CLIENT_CERT" "$PYKMIP_CLIENT_KEY" \
  "$PYKMIP_CA" "$secs" new | tee "$dir/r3"
$py "$here/kmsd_unwrap_client.py" "$KMS_IT_PORT" "$dir/pki" "$pw" "$dir/body.json" "$secs" new | tee "$dir/r4"
rate() { grep -o '= [0-9]*' "$1" | grep -o '[0-9]*'; }
echo "ratio kmsd/PyKMIP-client, connection reuse:    $(awk -v a="$(rate "$dir/r2")" -v b="$(rate "$dir/r1")" 'BEGIN{printf "%.2f", a/b}')"
echo "ratio kmsd/PyKMIP-client, new connection each: $(awk -v a="$(rate "$dir/r4")" -v b="$(rate "$dir/r3")" 'BEGIN{printf "%.2f", a/b}')"
echo "(kmsd keeps its KMIP connections pooled in both lines; 'new' is the client's connection to kmsd)"
