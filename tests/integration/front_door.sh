#!/usr/bin/env bash
# Starts a kmsd of its own for front_door.py (PROXY headers trusted from
# 127.0.1.200, a 2 s request-head deadline, 6 connections per client address,
# 10 new connections per second per client address),
# runs it, and stops kmsd by PID whatever happened.
#   front_door.sh KMSD_BINARY IT_DIR
set -u
here=$(cd "$(dirname "$0")" && pwd)
kmsd=$1 dir=$2
cleanup() { "$here/harness.sh" stop "$dir" >/dev/null 2>&1 || true; }
trap cleanup EXIT
KMS_SERVER_PROXY_TRUSTED=127.0.1.200 KMS_SERVER_HEADER_TIMEOUT=2 KMS_SERVER_CONNECTION_PER_ADDRESS=6 \
  KMS_RATELIMIT_ENABLED=true KMS_RATELIMIT_CONNECTIONS=10:10 \
  "$here/harness.sh" start "$dir" "$kmsd" soft > "$dir.harness.out" 2>&1 || { cat "$dir.harness.out"; exit 1; }
timeout 120 /usr/bin/python3 "$here/front_door.py" "$dir/it.env"
rc=$?
trap - EXIT
"$here/harness.sh" stop "$dir" >/dev/null || { echo "FAIL kmsd did not stop cleanly: $(tail -5 "$dir/kmsd.log")"; exit 1; }
exit $rc
