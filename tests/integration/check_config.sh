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
redis_pw=CacheFileRedisPw-$$

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
  if grep -qF -- "$pw" <<<"$out" || grep -qF -- "$redis_pw" <<<"$out"; then
    echo "FAIL $name: a password appears in the output"; fail=$((fail + 1)); return
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

# kms.distributed.cache.config.file: the distributed cache's kms.cache.* settings
# in their own properties file (docs/cluster.md); kmsd must really read it
cache_setup() { # cache_setup LINE... -- kms.properties naming $tmp/cache.properties, which holds the lines
  sed 's/^kms.cache.type = .*/kms.cache.type = distributed/' "$dir/kms.properties" > "$tmp/kms.properties"
  echo "kms.distributed.cache.config.file = $tmp/cache.properties" >> "$tmp/kms.properties"
  printf '%s\n' "$@" > "$tmp/cache.properties"
}
cache_setup '# Redis of the cluster' 'kms.cache.redis.url = redis://kmsd@127.0.0.1:6390/0' \
  "kms.cache.redis.password = $redis_pw" 'kms.cache.ttl = 120'
check cache_file_used 0 'kms.cache.ttl = 120 +# .*/cache.properties:4'
check cache_file_url 0 'kms.cache.redis.url = redis://kmsd@127.0.0.1:6390/0 +# .*/cache.properties:2'
check cache_file_secret 0 'kms.cache.redis.password = <redacted> +# .*/cache.properties:3'
check cache_file_env_wins 0 'kms.cache.ttl = 99 +# env KMS_CACHE_TTL' KMS_CACHE_TTL=99
cache_setup 'kms.cache.idle = 60' 'kms.cache.ttl = forever'
check cache_file_bad_value 1 "invalid value 'forever' for kms.cache.ttl \(from .*/cache.properties:2\)"
cache_setup 'kms.cache.ttl = 60' 'kms.server.port = 1'
check cache_file_not_cache_key 1 'kms.server.port is not a cache setting \(cache config file .*/cache.properties line 2\)'
cache_setup 'kms.cache.type = distributed'
check cache_file_ambiguous 1 'kms.cache.type is set both in .*/kms.properties:[0-9]+ .*cache.properties:1'
cache_setup '<?xml version="1.0" encoding="UTF-8"?>' '<hazelcast><cluster-name>kms</cluster-name></hazelcast>'
check cache_file_hazelcast_xml 1 'not Hazelcast XML'
cache_setup 'kms.cache.ttl = 60'; rm "$tmp/cache.properties"
check cache_file_missing 1 'cannot read the distributed cache config file .*cache.properties'

echo "check_config: $pass passed, $fail failed"
[ "$fail" -eq 0 ]
