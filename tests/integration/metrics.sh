#!/usr/bin/env bash
# The admin listener's Prometheus metrics after the API suite ran (issue 7):
# requests by route and status, latency histograms, backend calls, cache,
# handshakes, refused certificates by reason, keystore generation and expiry.
# Prints "N passed, N failed".   metrics.sh IT_DIR
set -u
dir=$1
# shellcheck disable=SC1091
. "$dir/it.env"
pass=0 fail=0
out=$(curl -fsS --max-time 10 "http://127.0.0.1:$KMS_IT_ADMIN_PORT/metrics") || { echo "FAIL no /metrics"; exit 1; }
value() { grep -v '^#' <<<"$out" | grep -F "$1" | head -1 | awk '{print $NF}'; }
check() { # check NAME SERIES OP NUMBER
  local v; v=$(value "$2")
  if [ -n "$v" ] && awk -v v="$v" -v n="$4" -v op="$3" 'BEGIN{exit !((op==">=" && v>=n) || (op=="==" && v==n))}'; then
    echo "ok   $1 ($2 = $v)"; pass=$((pass + 1))
  else
    echo "FAIL $1: $2 = '${v}', want $3 $4"; fail=$((fail + 1))
  fi
}
check "customer keys created" 'kms_requests_total{route="/v1/customer-keys",status="201"}' ">=" 1
check "unwrap failures counted" 'kms_requests_total{route="/v1/workspace-keys/unwrap",status="400"}' ">=" 1
check "latency histogram" 'kms_request_duration_seconds_count{route="/v1/whoami"}' ">=" 1
check "backend encrypts" 'kms_backend_calls_total{backend="soft",op="encrypt",result="ok"}' ">=" 1
check "backend auth failures" 'kms_backend_calls_total{backend="soft",op="decrypt",result="auth_failed"}' ">=" 1
check "cache hits" 'kms_cache_total{tier="local",result="hit"}' ">=" 1
check "full handshakes" 'kms_tls_handshakes_total{kind="full"}' ">=" 5
check "refused: unknown" 'kms_client_certificates_refused_total{reason="unknown"}' ">=" 1
check "refused: expired" 'kms_client_certificates_refused_total{reason="expired"}' ">=" 1
check "refused: none" 'kms_client_certificates_refused_total{reason="no_certificate"}' ">=" 1
check "keystore loads" 'kms_keystore_loads' ">=" 1
check "earliest expiry" 'kms_certificate_earliest_expiry_seconds' ">=" 1
version=$(sed -n 's/^project(kmsd VERSION \([0-9.]*\).*/\1/p' "$(cd "$(dirname "$0")/../.." && pwd)/CMakeLists.txt")
check "build info carries CMake's version" "kms_build_info{version=\"$version\"," "==" 1
check "the backend answers its probe" 'kms_backend_up{backend="soft"}' "==" 1
check "no audit write failed" 'kms_audit_write_failures_total' "==" 0
s=$(curl -s -o /dev/null -w '%{http_code}' --max-time 10 "http://127.0.0.1:$KMS_IT_ADMIN_PORT/other")
[ "$s" = 404 ] && { echo "ok   other admin paths: 404"; pass=$((pass + 1)); } || { echo "FAIL admin /other: $s"; fail=$((fail + 1)); }
echo "metrics: $pass passed, $fail failed"
[ "$fail" -eq 0 ]
