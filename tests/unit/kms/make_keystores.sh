#!/bin/sh
# Builds the keystore fixtures for tests/unit/kms/test_keystore.c and
# tests/unit/cli/test_kmsctl.c (no committed binary fixtures: STYLE.md tests).
#
#   make_keystores.sh DIR PASSWORD [--openssl-only]
#
# PKI (all EC P-256): root CA "KMIP Signing CA" -> intermediate "KMS Issuing CA"
# -> server "kmsServer"; client certificates cmxBackend and cmxDevice signed by
# the intermediate. Every keystore holds the same four entries:
#   kmsserver      private key + chain [server, intermediate, root]
#   kmipsigningca  certificate entry (the root, a CA)
#   cmxbackend     certificate entry
#   cmxdevice      certificate entry
# Files written into DIR:
#   ks.jks           keytool -storetype jks
#   ks-modern.p12    keytool, Java 17 default PKCS#12 (AES-256 + PBKDF2 + HMAC-SHA256)
#   ks-secret.p12    ks-modern.p12 plus a secret-key entry (keytool -genseckey, HmacSHA256)
#   ks-legacy.p12    keytool -J-Dkeystore.pkcs12.legacy (RC2-40 / 3DES / SHA-1)
#   ossl-modern.p12  openssl pkcs12 -export
#   ossl-legacy.p12  openssl pkcs12 -export -legacy
#   bundle.pem       PEM bundle (PKCS#8 key, chain, named certificates)
#   bundle-enc.pem   same, key as ENCRYPTED PRIVATE KEY under PASSWORD
#   nodes.pem        openssl pkcs12 -nodes output of ossl-modern.p12
#   noname.p12       openssl pkcs12 -export without -name (alias from the CN)
#   nomac.p12        no MAC, nothing encrypted, no password
#   empty-pw.p12     password ""
#   dup.p12          two entries named kmsserver (a duplicate alias)
#   server-trad.key, server-trad-enc.key  traditional "EC PRIVATE KEY", plain and
#                    AES-256 Proc-Type encrypted under PASSWORD
#   ks-keypass.jks   JKS whose key password differs from the store password
#   slow-mac.p12, slow-pbe.p12, slow.p8  1000001 KDF iterations (over the limit)
#   *.crt / *.der    the certificates (PEM / DER) for comparisons
# With --openssl-only the keytool files are skipped (faster).
set -eu
# why: keytool's JVM spends most of these short runs in its C2 compiler threads;
# C1 alone with the serial collector takes about half the CPU
keytool() { command keytool -J-XX:TieredStopAtLevel=1 -J-XX:+UseSerialGC "$@"; }

dir=$1
pass=$2
mode=${3:-all}
cd "$dir"

# why: the password reaches the tools through the environment, never argv.
KS_PASS=$pass
export KS_PASS

days=825
ossl() { openssl "$@" 2>>openssl.log; }

cat >ext.cnf <<'EOF'
[ca]
basicConstraints = critical, CA:TRUE
keyUsage = critical, keyCertSign, cRLSign
subjectKeyIdentifier = hash
[inter]
basicConstraints = critical, CA:TRUE, pathlen:0
keyUsage = critical, keyCertSign, cRLSign
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
[server]
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature
extendedKeyUsage = serverAuth
subjectAltName = DNS:localhost, IP:127.0.0.1
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
[client]
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature
extendedKeyUsage = clientAuth
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
EOF

genkey() { ossl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$1"; }

genkey ca.key
ossl req -new -x509 -key ca.key -subj "/O=Example/CN=KMIP Signing CA" -days $days \
    -extensions ca -config ext.cnf -out ca.crt -set_serial 0x1001
genkey inter.key
ossl req -new -key inter.key -subj "/O=Example/CN=KMS Issuing CA" -out inter.csr
ossl x509 -req -in inter.csr -CA ca.crt -CAkey ca.key -set_serial 0x2002 -days $days \
    -extfile ext.cnf -extensions inter -out inter.crt

sign() { # name CN extensions serial
    genkey "$1.key"
    ossl req -new -key "$1.key" -subj "/O=Example/CN=$2" -out "$1.csr"
    ossl x509 -req -in "$1.csr" -CA inter.crt -CAkey inter.key -set_serial "$4" -days $days \
        -extfile ext.cnf -extensions "$3" -out "$1.crt"
}
sign server kmsServer server 0x3003
sign backend cmxBackend client 0x4004
sign device cmxDevice client 0x5005

for c in ca inter server backend device; do
    ossl x509 -in $c.crt -outform DER -out $c.der
done
ossl pkcs8 -topk8 -nocrypt -in server.key -out server.p8

# openssl-written PKCS#12: key + chain (intermediate unnamed), named root and clients.
cat ca.crt backend.crt device.crt inter.crt >others.pem
ossl pkcs12 -export -in server.crt -inkey server.key -name kmsserver -certfile others.pem \
    -caname kmipsigningca -caname cmxbackend -caname cmxdevice \
    -passout env:KS_PASS -out ossl-modern.p12
ossl pkcs12 -export -legacy -in server.crt -inkey server.key -name kmsserver -certfile others.pem \
    -caname kmipsigningca -caname cmxbackend -caname cmxdevice \
    -passout env:KS_PASS -out ossl-legacy.p12
ossl pkcs12 -in ossl-modern.p12 -nodes -passin env:KS_PASS -out nodes.pem
cat inter.crt ca.crt >chain.pem
ossl pkcs12 -export -in server.crt -inkey server.key -certfile chain.pem -passout env:KS_PASS -out noname.p12
ossl pkcs12 -export -in server.crt -inkey server.key -name kmsserver -certfile chain.pem \
    -nomac -keypbe NONE -certpbe NONE -passout pass: -out nomac.p12
ossl pkcs12 -export -in server.crt -inkey server.key -name kmsserver -certfile chain.pem \
    -passout pass: -out empty-pw.p12
ossl pkcs12 -export -in server.crt -inkey server.key -name kmsserver -certfile backend.crt \
    -caname KMSServer -passout env:KS_PASS -out dup.p12
ossl ec -in server.key -out server-trad.key
ossl pkcs12 -export -in server.crt -inkey server.key -name kmsserver -keypbe NONE -certpbe NONE \
    -iter 1000001 -passout env:KS_PASS -out slow-mac.p12
ossl pkcs12 -export -in server.crt -inkey server.key -name kmsserver -certpbe NONE -iter 1000001 \
    -nomaciter -passout env:KS_PASS -out slow-pbe.p12
ossl pkcs8 -topk8 -v2 aes-256-cbc -iter 1000001 -in server.key -passout env:KS_PASS -out slow.p8
ossl ec -in server.key -aes256 -passout env:KS_PASS -out server-trad-enc.key

# PEM bundle, written by hand as an operator would: key, leaf, chain, then named certificates.
{
    cat server.p8 server.crt inter.crt ca.crt
    printf 'Bag Attributes\n    friendlyName: kmipsigningca\n'
    cat ca.crt
    printf 'Bag Attributes\n    friendlyName: cmxbackend\n'
    cat backend.crt
    printf 'Bag Attributes\n    friendlyName: cmxdevice\n'
    cat device.crt
} >bundle.pem
ossl pkcs8 -topk8 -v2 aes-256-cbc -in server.key -passout env:KS_PASS -out server-enc.p8
{
    cat server-enc.p8 server.crt inter.crt ca.crt
    printf 'Bag Attributes\n    friendlyName: kmipsigningca\n'
    cat ca.crt
    printf 'Bag Attributes\n    friendlyName: cmxbackend\n'
    cat backend.crt
    printf 'Bag Attributes\n    friendlyName: cmxdevice\n'
    cat device.crt
} >bundle-enc.pem

if [ "$mode" = "--openssl-only" ]; then
    exit 0
fi

# keytool keystores: start from a PKCS#12 holding only the key and its chain.
ossl pkcs12 -export -in server.crt -inkey server.key -name kmsserver -certfile chain.pem \
    -passout env:KS_PASS -out src.p12

kt() { # storetype file [extra JVM options...]
    type=$1
    file=$2
    shift 2
    keytool "$@" -importkeystore -noprompt -srckeystore src.p12 -srcstoretype pkcs12 \
        -srcstorepass:env KS_PASS -destkeystore "$file" -deststoretype "$type" \
        -deststorepass:env KS_PASS >>keytool.log 2>&1
    for c in ca:kmipSigningCA backend:cmxBackend device:cmxDevice; do
        keytool "$@" -importcert -noprompt -trustcacerts -alias "${c#*:}" -file "${c%%:*}.crt" \
            -keystore "$file" -storetype "$type" -storepass:env KS_PASS >>keytool.log 2>&1
    done
}
kt jks ks.jks
keytool -importkeystore -noprompt -srckeystore src.p12 -srcstoretype pkcs12 -srcstorepass:env KS_PASS \
    -srcalias kmsserver -destkeystore ks-keypass.jks -deststoretype jks -deststorepass:env KS_PASS \
    -destkeypass other-key-password >>keytool.log 2>&1
kt pkcs12 ks-modern.p12
# the same with a secret-key entry (the audit key, as an operator makes it)
cp ks-modern.p12 ks-secret.p12
keytool -genseckey -alias kmsaudit -keyalg HmacSHA256 -keysize 256 -keystore ks-secret.p12 -storetype pkcs12 \
    -storepass:env KS_PASS >>keytool.log 2>&1
kt pkcs12 ks-legacy.p12 -J-Dkeystore.pkcs12.legacy
