#!/usr/bin/env bash
# Issue 12's performance figures for keystore distribution, on the loopback
# cluster of deploy/local-cluster.sh (HAProxy + 3 kmsd + Redis + PyKMIP):
#   1. publish-to-converged: N edits (import-cert / delete of one certificate,
#      alternating) with `kmsctl keystore ... --cluster --wait`; the time from the
#      publish until every node's heartbeat reports the new generation
#      (median, p90, max). Target: median <= 2 s.
#   2. swapping a keystore of 1,000 certificate entries under load: `kmsctl bench`
#      (whoami, keep-alive, 4 connections) against node 1 for D seconds without a
#      swap, then D seconds during which the 1,000-entry keystore is published
#      and every node applies it; p99 of each. Target: <= 50 ms above the p99
#      without a swap.
# Prints its numbers; asserts nothing (docs/benchmarks.md records them).
#   tests/bench/keystore-distribution.sh BUILD_DIR [N=10] [D=10]
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
build=$(cd "${1:?BUILD_DIR}" && pwd)
n=${2:-10} d=${3:-10}
kmsctl=$build/cli/kmsctl
dir=$(mktemp -d /tmp/kms-bench-ksdist.XXXXXX)
lc=$root/deploy/local-cluster.sh
cleanup() { "$lc" down "$dir" > /dev/null 2>&1 || true; rm -rf "$dir"; }
trap cleanup EXIT
KMS_BUILD_DIR=$build KMS_CLUSTER_LOG_LEVEL=warn "$lc" up "$dir" > "$dir.up.log" 2>&1 || { cat "$dir.up.log"; exit 1; }
rm -f "$dir.up.log"
# shellcheck disable=SC1091
. "$dir/cluster.env"
pki=$CLUSTER_PKI pw=$CLUSTER_PASSWORD
export KMS_CONFIG=$dir/node1/kms.properties
work=$dir/bench && mkdir -p "$work"
printf '%s\n' "$pw" > "$work/pw"

# --- 1. publish-to-converged
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout /dev/null -subj "/CN=cmxDeviceBench" \
  -days 30 -out "$work/dev.crt" 2>/dev/null
times=()
for i in $(seq "$n"); do
  if [ $((i % 2)) = 1 ]; then out=$("$kmsctl" keystore import-cert cmxDeviceBench "$work/dev.crt" --cluster --wait 30)
  else out=$("$kmsctl" keystore delete cmxDeviceBench --cluster --wait 30); fi
  t=$(sed -n 's/^Converged: .* after \([0-9.]*\) s$/\1/p' <<< "$out")
  [ -n "$t" ] || { echo "edit $i did not converge: $out" >&2; exit 1; }
  times+=("$t")
done
printf '%s\n' "${times[@]}" | sort -n | awk -v n="$n" '{ a[NR] = $1 } END {
  printf "publish-to-converged over %d edits (3 nodes): median %.2f s, p90 %.2f s, max %.2f s\n",
         n, a[int((n + 1) / 2)], a[int(n * 0.9 + 0.999)], a[n] }'

# --- 2. a 1,000-entry keystore swapped under load
"$kmsctl" keystore convert --to pem --keystore "$dir/node1/keystore/kms.jks" --password-file "$work/pw" \
  --out "$work/big.pem" > /dev/null
( cd "$work" && for i in $(seq 1000); do
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout /dev/null \
      -subj "/CN=cmxDevice$i" -days 30 2>/dev/null | { printf 'Bag Attributes\n    friendlyName: cmxDeviceBulk%04d\n' "$i"; cat; }
  done >> big.pem )
"$kmsctl" keystore convert --to pkcs12 --keystore "$work/big.pem" --password-file "$work/pw" --out "$work/big.p12" \
  > /dev/null
entries=$("$kmsctl" keystore list --keystore "$work/big.p12" --password-file "$work/pw" | grep -cE 'PrivateKeyEntry|trustedCertEntry')
bench() { # bench OUT: D seconds of keep-alive whoami against node 1
  "$kmsctl" bench --url "https://$CLUSTER_NODE1_ADDR:$CLUSTER_NODE1_PORT" --cert "$pki/cmxBackend.p12" \
    --password-file "$work/pw" --op whoami -c 4 -w 1 -d "$d" --json > "$1"
}
p99() { /usr/bin/python3 -c 'import json,sys; j=json.loads(open(sys.argv[1]).read().strip().splitlines()[-1]); bad=j["errors"]+j["transport_errors"]+sum(v for k,v in j["status"].items() if k!="200"); print("%.3f %.3f %d %.0f %d" % (j["latency_ms"]["p99"], j["latency_ms"]["max"], j["requests"], j["requests_per_s"], bad))' "$1"; }
bench "$work/quiet.json"
bench "$work/swap.json" &
bpid=$!
sleep $((d / 3 + 1))
t0=$(date +%s.%N)
"$kmsctl" keystore create --cluster --force --from "$work/big.p12" --wait 60 > "$work/swap.out"
t1=$(date +%s.%N)
wait "$bpid"
read -r q99 qmax qn qrps qbad <<< "$(p99 "$work/quiet.json")"
read -r s99 smax sn srps sbad <<< "$(p99 "$work/swap.json")"
conv=$(sed -n 's/^Converged: .* after \([0-9.]*\) s$/\1/p' "$work/swap.out")
echo "swap of a $(stat -c %s "$work/big.p12")-byte keystore ($entries entries) published and applied by 3 nodes in" \
     "$(/usr/bin/python3 -c "print('%.2f' % ($t1 - $t0))") s (converged $conv s after the publish)"
echo "node 1 under load without a swap: p99 $q99 ms, max $qmax ms, $qn requests ($qrps req/s), $qbad failed"
echo "node 1 under load during the swap: p99 $s99 ms, max $smax ms, $sn requests ($srps req/s), $sbad failed"
/usr/bin/python3 -c "print('p99 during the swap minus p99 without: %+.3f ms (target <= 50 ms)' % ($s99 - $q99))"
