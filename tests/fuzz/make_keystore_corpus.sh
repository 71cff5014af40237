#!/bin/sh
# Regenerates the seed corpus of tests/fuzz/fuzz_keystore.c: keystores that
# keytool and openssl write (tests/unit/kms/make_keystores.sh) under the
# fuzz target's password. The seeds hold throw-away test keys only.
#
#   tests/fuzz/make_keystore_corpus.sh
set -eu
root=$(cd "$(dirname "$0")/../.." && pwd)
out="$root/tests/fuzz/corpus/keystore"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

sh "$root/tests/unit/kms/make_keystores.sh" "$tmp" fuzz-pass
mkdir -p "$out"
rm -f "$out"/*
for f in ks.jks ks-modern.p12 ks-legacy.p12 ossl-modern.p12 ossl-legacy.p12 noname.p12 nomac.p12 \
         bundle.pem bundle-enc.pem nodes.pem; do
    cp "$tmp/$f" "$out/$f"
done
cat "$tmp/server-trad-enc.key" "$tmp/server.crt" >"$out/traditional-enc.pem"
echo "wrote $(ls "$out" | wc -l) seeds to $out"
