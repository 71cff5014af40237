#!/usr/bin/env bash
# The libmicrohttpd floor of tests/bench/compare-nginx.sh answers as the
# comparison needs it to: its fixed body over mutual TLS with the dev PKI, on
# one kept-alive connection (a floor that closed after each reply would
# measure handshakes), and it stops cleanly on SIGTERM.
# Prints "N passed, N failed".   mhd_floor.sh MHD_FLOOR PKI_DIR
set -u
floor=$1 pki=$2
pass=0 fail=0
ok() { echo "ok   $1"; pass=$((pass + 1)); }
bad() { echo "FAIL $1"; fail=$((fail + 1)); }
work=$(mktemp -d /tmp/mhd-floor-XXXXXX)
pid=""
cleanup() {
  [ -n "$pid" ] && kill -TERM "$pid" 2>/dev/null && wait "$pid" 2>/dev/null
  rm -rf "$work"
}
trap cleanup EXIT

port=$(/usr/bin/python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()')
body='{"status":"ok","note":"the floor"}'
"$floor" "$port" "$pki/kmsServer-chain.crt" "$pki/kmsServer.key" "$body" > "$work/out" 2> "$work/err" &
pid=$!
deadline=$((SECONDS + 10))
until grep -q ready "$work/out" 2>/dev/null; do
  if ! kill -0 "$pid" 2>/dev/null || [ $SECONDS -ge $deadline ]; then
    bad "mhd_floor did not come up: $(cat "$work/err")"
    echo "$pass passed, $fail failed"
    exit 1
  fi
  sleep 0.1
done

url=https://127.0.0.1:$port
got=$(curl -sS --max-time 10 --cacert "$pki/rootCA.crt" --cert "$pki/cmxBackend.crt" --key "$pki/cmxBackend.key" \
  -w '\n%{http_code} %{num_connects}\n' "$url/health/live" "$url/v1/anything" "$url/x" 2>&1)
[ "$(grep -c -F "$body" <<<"$got")" = 3 ] && ok "three requests get the fixed body" || bad "replies: $got"
# why the sum: curl reports the connections each transfer opened; one kept-alive connection is 1 + 0 + 0
conns=$(awk 'NF == 2 && $1 == 200 { n += $2 } END { print n + 0 }' <<<"$got")
[ "$conns" = 1 ] && ok "one connection served all three (kept alive)" || bad "connections opened: $conns"

kill -TERM "$pid"
wait "$pid"
rc=$?
pid=""
[ "$rc" = 0 ] && ok "stops with status 0 on SIGTERM" || bad "exit status $rc on SIGTERM"

"$floor" 0 "$pki/kmsServer-chain.crt" "$pki/kmsServer.key" x > /dev/null 2> "$work/err"
rc=$?
[ "$rc" = 2 ] && grep -q 'PORT must be' "$work/err" && ok "a bad port is refused, naming PORT" ||
  bad "bad port: status $rc, $(cat "$work/err")"

echo "$pass passed, $fail failed"
[ "$fail" = 0 ]
