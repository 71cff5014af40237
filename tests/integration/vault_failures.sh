#!/usr/bin/env bash
# kmsd with the Vault stand-in (tests/stand-ins/vault: written from Vault's
# documented API, not Vault), what an operator meets (issue 4): token renewal
# over a run longer than the token's TTL, the namespace header on transit and
# auth calls but not on sys/health, Vault sealed / answering garbage /
# truncated / oversized / down, recovery, and rotation with rewrap.
# Runs after it_vault_api on the harness's folder. Prints "N passed, N failed".
#   vault_failures.sh IT_DIR
set -u
dir=$1
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
standin=$root/tests/stand-ins/vault/standin.sh
# shellcheck disable=SC1091
. "$dir/it.env"
# shellcheck disable=SC1091
. "$dir/vault-run/vault.env"
pw=$KMS_IT_PASSWORD
url=https://127.0.0.1:$KMS_IT_PORT
ns=kmsd-ns
pass=0 fail=0
ok() { echo "ok   $1"; pass=$((pass + 1)); }
ko() { echo "FAIL $1"; fail=$((fail + 1)); }
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

api() { # api METHOD PATH [JSON] -> body in $tmp/body, prints the status
  local args=(-sS -o "$tmp/body" -w '%{http_code}' --max-time 30 --cacert "$dir/pki/rootCA.crt"
              --cert "$dir/pki/cmxBackend.p12:$pw" --cert-type P12 -X "$1")
  [ $# -ge 3 ] && args+=(-H 'Content-Type: application/json' --data "$3")
  curl "${args[@]}" "$url$2" 2>/dev/null || echo 000
}
field() { /usr/bin/python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))[sys.argv[2]])' "$tmp/body" "$1"; }
control() { curl -fsS --max-time 10 -X "$1" -H 'Content-Type: application/json' ${3:+--data "$3"} "$VAULT_ADDR/stand-in/$2"; }
ready() { curl -s -o /dev/null -w '%{http_code}' --max-time 10 --cacert "$dir/pki/rootCA.crt" "$url/health/ready"; }
wait_ready() { # wait_ready STATUS: /health/ready reaches STATUS within 15 s
  local r=000
  for _ in $(seq 30); do r=$(ready); [ "$r" = "$1" ] && return 0; sleep 0.5; done
  return 1
}
unwrap() { api POST /v1/keys/kms-master/unwrap "{\"wrapped\":\"$1\",\"site_id\":\"v1\"}"; }

[ "$(api POST /v1/keys/kms-master/wrap '{"plaintext":"c2VjcmV0","site_id":"v1"}')" = 200 ] && w1=$(field wrapped) || w1=
[ -n "$w1" ] && ok "wrap through Vault" || ko "wrap through Vault: $(cat "$tmp/body")"

# 1. Renewal: the token lives 12 s (renewed 8 s before expiry); 16 s of requests must all succeed.
# (Sealed or down phases below stay well under 8 s: a token that expires while
# Vault is away is dead, and token auth cannot log in again.)
control POST stats/reset >/dev/null
failures=0 n=0 end=$((SECONDS + 16))
while [ $SECONDS -lt $end ]; do
  [ "$(unwrap "$w1")" = 200 ] || failures=$((failures + 1))
  n=$((n + 1)); sleep 0.3
done
renewals=$(control GET stats | /usr/bin/python3 -c 'import json,sys; e=json.load(sys.stdin)["endpoints"]; print(sum(v["by_status"].get("200",0) for k,v in e.items() if "renew-self" in k))')
if [ $failures -eq 0 ] && [ "$renewals" -ge 2 ]; then ok "renewal: $n requests over 16 s, $renewals renewals, 0 failures"
else ko "renewal: $failures of $n failed, $renewals renewals"; fi

# 2. Namespace header: on transit and auth calls, never on sys/health.
ready >/dev/null; sleep 5.5; ready >/dev/null   # the readiness probe (sys/health) runs at most every 5 s
control GET requests | /usr/bin/python3 -c '
import json,sys
reqs=[r for r in json.load(sys.stdin)["requests"] if r["listener"]=="vault"]
bad=[(r["path"],r["namespace"]) for r in reqs if ("/transit/" in r["path"] or "/auth/" in r["path"]) and r["namespace"]!=sys.argv[1]]
health=[r for r in reqs if r["path"]=="/v1/sys/health"]
bad+=[(r["path"],r["namespace"]) for r in health if r["namespace"] is not None]
print("ok" if not bad and health else "bad %r (health calls: %d)" % (bad[:3], len(health)))' "$ns" > "$tmp/ns"
[ "$(cat "$tmp/ns")" = ok ] && ok "namespace header on transit/auth, absent on sys/health" || ko "namespace: $(cat "$tmp/ns")"

# 2b. A batch unwrap is one Transit call with batch_input (issue 4), per-item errors kept.
control POST stats/reset >/dev/null
body="{\"batch\":[{\"wrapped\":\"$w1\",\"site_id\":\"v1\"},{\"wrapped\":\"$w1\",\"site_id\":\"v1\"},{\"wrapped\":\"$w1\",\"site_id\":\"other\"},{\"wrapped\":\"$w1\",\"site_id\":\"v1\"}]}"
s=$(api POST /v1/keys/kms-master/unwrap "$body")
calls=$(control GET stats | /usr/bin/python3 -c 'import json,sys; e=json.load(sys.stdin)["endpoints"]; print(sum(v["count"] for k,v in e.items() if "transit/decrypt" in k))')
items=$(/usr/bin/python3 -c 'import json,sys; b=json.load(open(sys.argv[1]))["batch"]; print(",".join("pt" if "plaintext" in x else x["error"]["code"] for x in b))' "$tmp/body" 2>/dev/null)
[ "$s" = 200 ] && [ "$calls" = 1 ] && [ "$items" = "pt,pt,unwrap_failed,pt" ] \
  && ok "batch unwrap of 4: one Transit decrypt call (batch_input), per-item results $items" \
  || ko "batch unwrap: $s, $calls decrypt calls, items $items"

control POST stats/reset >/dev/null
s=$(api POST /v1/keys/kms-master/wrap '{"batch":[{"plaintext":"YQ==","site_id":"v1"},{"plaintext":"Yg==","site_id":"v1"},{"plaintext":"Yw==","site_id":"v1"}]}')
calls=$(control GET stats | /usr/bin/python3 -c 'import json,sys; e=json.load(sys.stdin)["endpoints"]; print(sum(v["count"] for k,v in e.items() if "transit/encrypt" in k))')
n=$(/usr/bin/python3 -c 'import json,sys; print(sum(1 for x in json.load(open(sys.argv[1]))["batch"] if "wrapped" in x))' "$tmp/body" 2>/dev/null)
[ "$s" = 200 ] && [ "$calls" = 1 ] && [ "$n" = 3 ] && ok "batch wrap of 3: one Transit encrypt call (batch_input)" \
  || ko "batch wrap: $s, $calls encrypt calls, $n wrapped"

# 3. Sealed: 503, readiness 503; unsealed: back.
control POST seal >/dev/null
s=$(unwrap "$w1"); [ "$s" = 503 ] && ok "sealed: 503" || ko "sealed: $s $(cat "$tmp/body")"
wait_ready 503 && ok "sealed: /health/ready 503" || ko "sealed: /health/ready $(ready)"
control POST unseal >/dev/null
s=$(unwrap "$w1"); [ "$s" = 200 ] && ok "unsealed: 200" || ko "unsealed: $s"
wait_ready 200 && ok "unsealed: /health/ready 200" || ko "unsealed: /health/ready $(ready)"

# 4. Garbage, truncated, oversized, empty answers: 502, then the next request works.
for mode in garbage truncated oversized empty; do
  control POST fault "{\"mode\":\"$mode\",\"count\":1,\"path\":\"transit/decrypt\"}" >/dev/null
  s=$(unwrap "$w1")
  s2=$(unwrap "$w1")
  [ "$s" = 502 ] && [ "$s2" = 200 ] && ok "Vault answers $mode: 502, then 200" || ko "Vault answers $mode: $s then $s2"
done

# 5. Vault down, then back.
"$standin" stop "$dir/vault-run" >/dev/null
start=$SECONDS
s=$(unwrap "$w1"); took=$((SECONDS - start))
[ "$s" = 503 ] && [ $took -le 10 ] && ok "Vault down: 503 in ${took}s" || ko "Vault down: $s after ${took}s"
"$standin" restart "$dir/vault-run" >/dev/null
back=no
for _ in $(seq 40); do [ "$(unwrap "$w1")" = 200 ] && { back=yes; break; }; sleep 0.5; done
[ $back = yes ] && ok "Vault back: kmsd recovered without a restart" || ko "Vault back: no recovery in 20 s"

# 6. Rotation in Vault: version 1 still unwraps, rewrap moves to version 2.
curl -fsS --max-time 10 -X POST -H "X-Vault-Token: $(cat "$VAULT_TOKEN_FILE")" -H "X-Vault-Namespace: $ns" \
  "$VAULT_ADDR/v1/transit/keys/kms-master/rotate" >/dev/null
v2=0
for _ in $(seq 30); do   # kmsd trusts a key's latest version for a few seconds
  api GET /v1/keys/kms-master >/dev/null; v2=$(field current_version); [ "$v2" = 2 ] && break; sleep 0.5
done
[ "$v2" = 2 ] && ok "kmsd sees version 2 after rotation" || ko "current_version $v2 after rotation"
s=$(unwrap "$w1"); [ "$s" = 200 ] && ok "a version-1 key still unwraps" || ko "version-1 unwrap: $s"
s=$(api POST /v1/keys/kms-master/rewrap "{\"wrapped\":\"$w1\",\"site_id\":\"v1\"}"); w2=$(field wrapped 2>/dev/null)
[ "$s" = 200 ] && [ "$w2" != "$w1" ] && ok "rewrap" || ko "rewrap: $s $(cat "$tmp/body")"
s=$(unwrap "$w2"); p=$(field plaintext 2>/dev/null)
[ "$s" = 200 ] && [ "$p" = c2VjcmV0 ] && ok "the rewrapped key unwraps to the same plaintext" || ko "rewrapped unwrap: $s"
grep -q 'vault:v2:' <<<"$(curl -fsS --max-time 10 -X POST -H "X-Vault-Token: $(cat "$VAULT_TOKEN_FILE")" -H "X-Vault-Namespace: $ns" -H 'Content-Type: application/json' -d '{"plaintext":"AAAA"}' "$VAULT_ADDR/v1/transit/encrypt/kms-master")" \
  && ok "the stand-in encrypts with version 2" || ko "stand-in version after rotate"

echo "vault_failures: $pass passed, $fail failed"
[ "$fail" -eq 0 ]
