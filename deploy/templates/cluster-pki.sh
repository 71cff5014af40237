#!/usr/bin/env bash
# The cluster's PKI and cluster key, shared by deploy/local-cluster.sh and the
# "pki" service of deploy/docker-compose.yml:
#   cluster-pki.sh DIR SERVER_NAMES [KMIP_SERVER_SAN]
# DIR/pki: deploy/pki/dev-pki.sh with SERVER_NAMES (e.g. "IP:127.0.1.10,IP:127.0.1.11")
# added to kmsServer's SANs, plus a cmxAdmin client certificate (cmxAdmin.p12) imported
# as a certificate entry (role admin with kms.auth.roles = cmxadmin=admin); with
# KMIP_SERVER_SAN, also a kmipServer certificate (kmipServer-chain.crt, kmipServer.key)
# for a KMIP server reached under that name. DIR/cluster.key: a random cluster key
# sealed under the keystore password by `kmsctl cluster key create` ($KMSCTL, default
# kmsctl on PATH), mode 0600: every node holds it, Redis never sees it, and it is
# never on disk in clear (SPEC §11).
# DIR/redis-password: 48 hex characters, mode 0600, the password of Redis's ACL
# user kmsd (kms.cache.redis.password.file).
# Idempotent: an existing DIR/pki/kms.jks, DIR/cluster.key or DIR/redis-password is kept.
set -euo pipefail
dir=${1:?usage: cluster-pki.sh DIR SERVER_NAMES [KMIP_SERVER_SAN]}
names=${2:?SERVER_NAMES}
kmip_san=${3:-}
devpki=${KMS_DEV_PKI:-$(cd "$(dirname "$0")/.." && pwd)/pki/dev-pki.sh}
pki=$dir/pki
umask 077
if [ ! -f "$pki/kms.jks" ]; then
  KMS_PKI_SERVER_NAMES=$names "$devpki" "$pki" >/dev/null
fi
cd "$pki"
export DEVPKI_PW; DEVPKI_PW=$(cat password.txt)
issue() { # issue NAME EKU SAN
  printf '%s\n' 'basicConstraints = critical, CA:FALSE' 'keyUsage = critical, digitalSignature, keyEncipherment' \
    "extendedKeyUsage = $2" 'subjectKeyIdentifier = hash' 'authorityKeyIdentifier = keyid' > "$1.ext"
  [ -z "$3" ] || echo "subjectAltName = $3" >> "$1.ext"
  openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$1.key"
  openssl req -new -key "$1.key" -subj "/O=kmsd dev/OU=$1/CN=$1" -out "$1.csr"
  openssl x509 -req -in "$1.csr" -CA intermediateCA.crt -CAkey intermediateCA.key -CAcreateserial -sha256 \
    -days 825 -extfile "$1.ext" -out "$1.crt" 2>/dev/null
  cat "$1.crt" intermediateCA.crt > "$1-chain.crt"
  rm -f "$1.ext" "$1.csr" ./*.srl
}
if [ ! -f cmxAdmin.p12 ]; then
  issue cmxAdmin clientAuth ""
  openssl pkcs12 -export -name cmxAdmin -inkey cmxAdmin.key -in cmxAdmin.crt -certfile ca-chain.crt \
    -passout env:DEVPKI_PW -out cmxAdmin.p12
  keytool -importcert -noprompt -alias cmxAdmin -file cmxAdmin.crt -keystore kms.jks -storepass:env DEVPKI_PW \
    >/dev/null 2>&1
fi
if [ -n "$kmip_san" ] && [ ! -f kmipServer-chain.crt ]; then
  issue kmipServer serverAuth "$kmip_san"
fi
[ -f "$dir/cluster.key" ] ||
  "${KMSCTL:-kmsctl}" cluster key create --password-file "$pki/password.txt" --out "$dir/cluster.key" >/dev/null
chmod 600 "$dir/cluster.key"
[ -f "$dir/redis-password" ] || openssl rand -hex 24 > "$dir/redis-password"
chmod 600 "$dir/redis-password"
