#!/usr/bin/env bash
# kmsd --check-config as an operator uses it, against the harness's PKI and
# kms.properties (run after it_setup). Prints "N passed, N failed".
#   check_config.sh KMSD IT_DIR
set -u
kmsd=$1 dir=$2
pass=0 fail=0
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
pw=$(cat "$dir/pki/password.txt")

check() { # check NAME EXPECTED_STATUS PATTERN [env...] -- runs kmsd --check-config on $tmp/kms.properties
  local name=$1 want=$2 pattern=$3; shift 3
  local out status
  out=$(env "$@" "$kmsd" --config "$tmp/kms.properties" --check-config 2>&1); status=$?
  if [ "$status" -ne "$want" ]; then
    echo "FAIL $name: exit $status, wanted $want"; echo "$out" | tail -5; fail=$((fail + 1)); return
  fi
  if ! grep -qE -- "$pattern" <<<"$out"; then
    echo "FAIL $name: output lacks /$pattern/"; echo "$out" | tail -5; fail=$((fail + 1)); return
  fi
  if grep -qF -- "$pw" <<<"$out"; then
    echo "FAIL $name: the keystore password appears in the output"; fail=$((fail + 1)); return
  fi
  echo "ok   $name"; pass=$((pass + 1))
}

cp "$dir/kms.properties" "$tmp/kms.properties"
check valid 0 'is valid; keystore .*kms.jks \(PKCS12\) has 7 entries'
check redacted 0 'kms.keystore.password = <redacted>' KMS_KEYSTORE_PASSWORD_FILE= KMS_KEYSTORE_PASSWORD="$pw"
check env_override 0 'kms.server.port = 9443 +# env KMS_SERVER_PORT' KMS_SERVER_PORT=9443
check env_invalid 1 'kms.server.port' KMS_SERVER_PORT=abc

cp "$dir/kms.properties" "$tmp/kms.properties"; echo 'kms.server.prot = 1' >> "$tmp/kms.properties"
check unknown_key_warns 0 "did you mean 'kms.server.port'"

cp "$dir/kms.properties" "$tmp/kms.properties"; echo 'kms.server.threads = many' >> "$tmp/kms.properties"
check bad_value 1 "invalid value 'many' for kms.server.threads"

grep -v '^kms.keystore.password' "$dir/kms.properties" > "$tmp/kms.properties"
printf 'wrong-password' > "$tmp/pw"; echo "kms.keystore.password.file = $tmp/pw" >> "$tmp/kms.properties"
check wrong_password 1 'kms.jks.*password'

grep -v '^kms.keystore.file' "$dir/kms.properties" > "$tmp/kms.properties"
echo "kms.keystore.file = $tmp/missing.jks" >> "$tmp/kms.properties"
check missing_keystore 1 'missing.jks'

cp "$dir/kms.properties" "$tmp/kms.properties"; echo 'kms.server.key.alias = nosuchalias' >> "$tmp/kms.properties"
check missing_server_alias 1 "no private-key entry 'nosuchalias'"

echo "check_config: $pass passed, $fail failed"
[ "$fail" -eq 0 ]
