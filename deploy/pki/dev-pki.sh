#!/usr/bin/env bash
# Development PKI for kmsd, made the way the CMX-KMS install guide makes it:
# a root CA and an intermediate CA; keys, CSRs and CA-signed certificates for
# kmsServer (TLS server), kmsClient (kmsd's identity toward the HSM),
# cmxBackend and cmxDevice (API clients); chain files; .p12 files; and the
# keystore (kms.jks, written by keytool: PKCS#12 inside, as Java 9+ does) with
#   kmsserver, kmsclient   private-key entries (with chains)
#   kmipsigningca          trusted CA entry (the CA that signs the HSM's certificate)
#   cmxbackend, cmxdevice  certificate entries (pinned API clients)
#
# usage: dev-pki.sh OUTDIR            (password: $KMS_PKI_PASSWORD, else a new random one
#                                      written to OUTDIR/password.txt, mode 0600)
# env:   KMS_PKI_KEY=ec|rsa (default ec: P-256 handshakes cost a third of RSA-2048's)
#        KMS_PKI_SERVER_NAMES="DNS:kms.example.com,IP:10.0.0.5" extra server SANs
# Idempotent: an OUTDIR that already holds kms.jks is left as it is.
set -euo pipefail
# why: keytool's JVM spends most of a short run in its C2 compiler threads;
# C1 alone with the serial collector takes about half the CPU
keytool() { command keytool -J-XX:TieredStopAtLevel=1 -J-XX:+UseSerialGC "$@"; }

out=${1:?usage: dev-pki.sh OUTDIR}
keytype=${KMS_PKI_KEY:-ec}
mkdir -p "$out"
cd "$out"
if [ -f kms.jks ] && [ -f password.txt ]; then
  echo "dev-pki: $PWD already holds a PKI (kms.jks); remove the folder to make a new one"
  exit 0
fi
umask 077

if [ -n "${KMS_PKI_PASSWORD:-}" ]; then
  printf '%s' "$KMS_PKI_PASSWORD" > password.txt
else
  openssl rand -hex 12 | tr -d '\n' > password.txt
fi
pw=$(cat password.txt)
export DEVPKI_PW="$pw"   # passed to openssl as env:DEVPKI_PW, never on a command line

newkey() { # newkey FILE
  if [ "$keytype" = rsa ]; then
    openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out "$1" 2>/dev/null
  else
    openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$1"
  fi
}

cat > ext.cnf <<EXT
[intermediate_ca]
basicConstraints = critical, CA:TRUE, pathlen:0
keyUsage = critical, keyCertSign, cRLSign
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
[server]
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature, keyEncipherment
extendedKeyUsage = serverAuth
subjectAltName = DNS:localhost, DNS:kmsd, IP:127.0.0.1, IP:::1${KMS_PKI_SERVER_NAMES:+,$KMS_PKI_SERVER_NAMES}
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
[client]
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature, keyEncipherment
extendedKeyUsage = clientAuth
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
EXT

# 1. Root CA and intermediate CA.
newkey rootCA.key
openssl req -new -x509 -key rootCA.key -sha256 -days 3650 -subj "/O=kmsd dev/CN=kmsd Dev Root CA" \
  -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" \
  -addext "subjectKeyIdentifier=hash" -out rootCA.crt
newkey intermediateCA.key
openssl req -new -key intermediateCA.key -subj "/O=kmsd dev/CN=kmsd Dev Intermediate CA" -out intermediateCA.csr
openssl x509 -req -in intermediateCA.csr -CA rootCA.crt -CAkey rootCA.key -CAcreateserial -sha256 -days 1825 \
  -extfile ext.cnf -extensions intermediate_ca -out intermediateCA.crt 2>/dev/null
cat intermediateCA.crt rootCA.crt > ca-chain.crt

# 2. End-entity keys, CSRs, certificates, chains and .p12 files.
issue() { # issue NAME CN PROFILE
  local name=$1 cn=$2 profile=$3
  newkey "$name.key"
  openssl req -new -key "$name.key" -subj "/O=kmsd dev/OU=$name/CN=$cn" -out "$name.csr"
  openssl x509 -req -in "$name.csr" -CA intermediateCA.crt -CAkey intermediateCA.key -CAcreateserial -sha256 \
    -days 825 -extfile ext.cnf -extensions "$profile" -out "$name.crt" 2>/dev/null
  cat "$name.crt" intermediateCA.crt rootCA.crt > "$name-chain.crt"
  openssl pkcs12 -export -name "$name" -inkey "$name.key" -in "$name.crt" -certfile ca-chain.crt \
    -passout env:DEVPKI_PW -out "$name.p12"
}
issue kmsServer localhost server
issue kmsClient kmsClient client
issue cmxBackend cmxBackend client
issue cmxDevice cmxDevice client

# 3. The keystore, with keytool as the install guide does it.
for name in kmsServer kmsClient; do
  keytool -importkeystore -noprompt -srckeystore "$name.p12" -srcstoretype pkcs12 -srcstorepass:env DEVPKI_PW \
    -srcalias "$name" -destkeystore kms.jks -deststorepass:env DEVPKI_PW -destalias "$name" >/dev/null 2>&1
done
keytool -importcert -noprompt -trustcacerts -alias kmipSigningCA -file rootCA.crt -keystore kms.jks \
  -storepass:env DEVPKI_PW >/dev/null 2>&1
for name in cmxBackend cmxDevice; do
  keytool -importcert -noprompt -alias "$name" -file "$name.crt" -keystore kms.jks -storepass:env DEVPKI_PW \
    >/dev/null 2>&1
done
rm -f ./*.srl ext.cnf
chmod 600 ./*.key ./*.p12 kms.jks password.txt
echo "dev-pki: wrote $PWD (keystore kms.jks, clients cmxBackend.p12 and cmxDevice.p12, password in password.txt)"
