/* libFuzzer target for the keystore reader (kms/keystore.h, SPEC §6): JKS,
 * PKCS#12 and PEM, the format chosen by content as in production.
 *
 *   clang -g -O1 -fsanitize=fuzzer,address,undefined -I. tests/fuzz/fuzz_keystore.c \
 *       kms/keystore.c kms/jks.c kms/p12.c kms/pem_bundle.c \
 *       common/cursor.c common/error.c common/secret.c -lcrypto -lpthread -o fuzz_keystore
 *   ./fuzz_keystore -max_len=8192 tests/fuzz/corpus/keystore
 *
 * The seeds are keystores written by keytool and openssl with the password
 * below; tests/fuzz/make_keystore_corpus.sh regenerates them.
 *
 * Checks beyond "no crash": a failure is one of the documented codes, leaves
 * no keystore, has a detail naming the input and never showing the password;
 * a success has usable entries: valid aliases that find() returns, DER and
 * SHA-256 that match the certificate, certificate entries found by their DER,
 * private keys that match their certificate. */
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/x509.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "kms/keystore.h"

#define PASSWORD "fuzz-pass"
#define NAME "fuzz-input"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void check(int ok)
{
    if (!ok)
        abort();
}

static void check_entry(const struct kms_keystore *ks, const struct kms_ks_entry *e)
{
    const char *alias = kms_ks_entry_alias(e);
    check(alias != NULL && alias[0] != '\0');
    for (const unsigned char *p = (const unsigned char *)alias; *p; p++)
        check(*p >= 0x20 && *p != 0x7F);
    check(kms_keystore_find(ks, alias) == e);

    X509 *x = kms_ks_entry_cert(e);
    check(x != NULL && kms_ks_entry_chain(e) != NULL);
    size_t len;
    const uint8_t *der = kms_ks_entry_der(e, &len);
    uint8_t *again = NULL;
    int n = i2d_X509(x, &again);
    check(n > 0 && (size_t)n == len && memcmp(again, der, len) == 0);
    OPENSSL_free(again);
    uint8_t md[32];
    check(EVP_Digest(der, len, md, NULL, EVP_sha256(), NULL) == 1);
    check(memcmp(md, kms_ks_entry_sha256(e), 32) == 0);

    if (kms_ks_entry_type(e) == KMS_KS_PRIVATE_KEY) {
        check(kms_ks_entry_key(e) != NULL);
        check(X509_check_private_key(x, kms_ks_entry_key(e)) == 1);
        check(kms_keystore_find_cert_der(ks, der, len) != e);
    } else {
        check(kms_ks_entry_key(e) == NULL);
        check(sk_X509_num(kms_ks_entry_chain(e)) == 0);
        const struct kms_ks_entry *f = kms_keystore_find_cert_der(ks, der, len);
        check(f != NULL && kms_ks_entry_type(f) == KMS_KS_CERTIFICATE);
        size_t flen;
        const uint8_t *fder = kms_ks_entry_der(f, &flen);
        check(flen == len && memcmp(fder, der, len) == 0);
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct kms_keystore *ks = NULL;
    kms_error_clear();
    kms_rc rc = kms_keystore_load_mem(data, size, NAME, PASSWORD, &ks);
    if (rc != KMS_OK) {
        check(ks == NULL);
        check(rc == KMS_ERR_KEYSTORE_FORMAT || rc == KMS_ERR_KEYSTORE_CORRUPT ||
              rc == KMS_ERR_KEYSTORE_PASSWORD || rc == KMS_ERR_IO || rc == KMS_ERR_NO_MEMORY);
        check(strstr(kms_error_detail(), NAME) != NULL);
        check(strstr(kms_error_detail(), PASSWORD) == NULL);
        return 0;
    }
    check(strcmp(kms_keystore_path(ks), NAME) == 0);
    for (size_t i = 0; i < kms_keystore_count(ks); i++)
        check_entry(ks, kms_keystore_entry(ks, i));
    check(kms_keystore_entry(ks, kms_keystore_count(ks)) == NULL);
    kms_keystore_free(&ks);
    check(ks == NULL);
    return 0;
}
