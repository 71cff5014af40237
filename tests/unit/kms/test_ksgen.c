#define _GNU_SOURCE /* why: memmem */
/* Keystore generations (kms/ksgen.h, SPEC §11): what a node opens from Redis,
 * and the checks it makes before serving with a keystore. Redis is untrusted:
 * a changed byte, another cluster, another generation or another key must all
 * be refused with their reason, and never crash the parser. */
#include <criterion/criterion.h>

#include <openssl/ec.h>
#include <openssl/evp.h>
#include <openssl/x509.h>
#include <stdlib.h>
#include <string.h>

#include "common/hex.h"
#include "kms/keystore_write.h"
#include "kms/ksgen.h"

static struct kms_secret *key_of(uint8_t fill)
{
    uint8_t k[32];
    memset(k, fill, sizeof(k));
    struct kms_secret *s = NULL;
    cr_assert_eq(kms_secret_from(k, sizeof(k), &s), KMS_OK);
    return s;
}

/* A self-signed EC certificate valid from now+from_s to now+to_s. */
static X509 *cert_for(EVP_PKEY *pk, const char *cn, long from_s, long to_s)
{
    X509 *x = X509_new();
    cr_assert_not_null(x);
    X509_set_version(x, 2);
    ASN1_INTEGER_set(X509_get_serialNumber(x), 1);
    X509_gmtime_adj(X509_getm_notBefore(x), from_s);
    X509_gmtime_adj(X509_getm_notAfter(x), to_s);
    X509_NAME *n = X509_get_subject_name(x);
    X509_NAME_add_entry_by_txt(n, "CN", MBSTRING_ASC, (const unsigned char *)cn, -1, -1, 0);
    X509_set_issuer_name(x, n);
    X509_set_pubkey(x, pk);
    cr_assert(X509_sign(x, pk, EVP_sha256()) > 0);
    return x;
}

/* A PKCS#12 keystore with kmsServer (validity as given) and a device
 * certificate, serialised with password. */
static uint8_t *make_keystore(long from_s, long to_s, const char *server_alias, size_t *len)
{
    EVP_PKEY *pk = EVP_EC_gen("P-256");
    cr_assert_not_null(pk);
    X509 *server = cert_for(pk, "kmsServer", from_s, to_s);
    EVP_PKEY *dk = EVP_EC_gen("P-256");
    X509 *dev = cert_for(dk, "cmxDevice", -60, 86400);
    struct kms_keystore *ks = NULL;
    cr_assert_eq(kms_keystore_new(KMS_KEYSTORE_PKCS12, "test", &ks), KMS_OK);
    cr_assert_eq(kms_keystore_add(ks, server_alias, server, NULL, pk), KMS_OK);
    cr_assert_eq(kms_keystore_add(ks, "cmxDevice", dev, NULL, NULL), KMS_OK);
    uint8_t *out = NULL;
    cr_assert_eq(kms_keystore_serialize(ks, "pw-test", &out, len), KMS_OK);
    kms_keystore_free(&ks);
    X509_free(server);
    X509_free(dev);
    EVP_PKEY_free(pk);
    EVP_PKEY_free(dk);
    return out;
}

static const uint8_t content[] = "the keystore file's bytes, any format";

static uint8_t *seal(const struct kms_secret *k, const char *cluster, uint64_t gen, size_t *len)
{
    struct kms_ksgen_meta m = {.generation = gen, .time = 1764800000, .format = KMS_KEYSTORE_PKCS12};
    snprintf(m.who, sizeof(m.who), "alice@ops1");
    snprintf(m.edit, sizeof(m.edit), "import-cert cmxDevice2 dev2.crt");
    uint8_t *blob = NULL;
    cr_assert_eq(kms_ksgen_seal(k, cluster, &m, content, sizeof(content), &blob, len), KMS_OK);
    return blob;
}

Test(ksgen, a_sealed_generation_opens_with_its_metadata, .timeout = 60)
{
    struct kms_secret *k = key_of(1);
    size_t len = 0, n = 0;
    uint8_t *blob = seal(k, "prod-eu", 42, &len), *ks = NULL;
    cr_assert_null(memmem(blob, len, content, sizeof(content)), "the keystore bytes are in clear");
    struct kms_ksgen_meta m;
    enum kms_ksgen_reject why;
    cr_assert_eq(kms_ksgen_open(k, "prod-eu", 42, blob, len, &m, &ks, &n, &why), KMS_OK);
    cr_assert_eq(n, sizeof(content));
    cr_assert_eq(memcmp(ks, content, n), 0);
    cr_assert_eq(m.generation, 42);
    cr_assert_eq(m.time, 1764800000);
    cr_assert_str_eq(m.who, "alice@ops1");
    cr_assert_str_eq(m.edit, "import-cert cmxDevice2 dev2.crt");
    cr_assert_eq(m.format, KMS_KEYSTORE_PKCS12);
    char sha[65];
    kms_hex_sha256(content, sizeof(content), sha);
    cr_assert_str_eq(m.sha256, sha);
    kms_ksgen_free_bytes(&ks, n);
    free(blob);
    kms_secret_free(&k);
}

Test(ksgen, another_cluster_generation_or_key_is_refused_with_its_reason, .timeout = 60)
{
    struct kms_secret *k = key_of(1), *other = key_of(2);
    size_t len = 0, n = 0;
    uint8_t *blob = seal(k, "prod-eu", 7, &len), *ks = NULL;
    struct kms_ksgen_meta m;
    enum kms_ksgen_reject why;
    cr_assert_eq(kms_ksgen_open(k, "prod-us", 7, blob, len, &m, &ks, &n, &why), KMS_ERR_UNWRAP);
    cr_assert_eq(why, KMS_KSGEN_CLUSTER);
    cr_assert_eq(kms_ksgen_open(k, "prod-eu", 8, blob, len, &m, &ks, &n, &why), KMS_ERR_UNWRAP);
    cr_assert_eq(why, KMS_KSGEN_GENERATION, "a blob replayed under another generation number");
    cr_assert_eq(kms_ksgen_open(other, "prod-eu", 7, blob, len, &m, &ks, &n, &why), KMS_ERR_UNWRAP);
    cr_assert_eq(why, KMS_KSGEN_AUTH);
    /* the header's generation rewritten to match where it is stored: the AAD no longer fits */
    blob[6 + 1 + 7 + 7] ^= 0x0f; /* low byte of the u64 generation after "KMSKS1", len, "prod-eu" */
    cr_assert_eq(kms_ksgen_open(k, "prod-eu", 7 ^ 0x0f, blob, len, &m, &ks, &n, &why), KMS_ERR_UNWRAP);
    cr_assert_eq(why, KMS_KSGEN_AUTH);
    cr_assert_null(ks);
    cr_assert_str_eq(kms_ksgen_reject_name(KMS_KSGEN_AUTH), "authentication");
    free(blob);
    kms_secret_free(&k);
    kms_secret_free(&other);
}

Test(ksgen, every_changed_byte_and_every_truncation_is_refused, .timeout = 60)
{
    struct kms_secret *k = key_of(3);
    size_t len = 0, n = 0;
    uint8_t *blob = seal(k, "c", 1, &len), *ks = NULL;
    struct kms_ksgen_meta m;
    enum kms_ksgen_reject why;
    for (size_t i = 0; i < len; i++) {
        blob[i] ^= 0x01;
        cr_assert_neq(kms_ksgen_open(k, "c", 1, blob, len, &m, &ks, &n, &why), KMS_OK, "byte %zu", i);
        cr_assert_neq(why, KMS_KSGEN_OK);
        cr_assert_null(ks);
        blob[i] ^= 0x01;
    }
    for (size_t cut = 0; cut < len; cut++) {
        cr_assert_eq(kms_ksgen_open(k, "c", 1, blob, cut, &m, &ks, &n, &why), KMS_ERR_UNWRAP, "cut at %zu", cut);
        cr_assert_null(ks);
    }
    uint8_t *longer = malloc(len + 1);
    memcpy(longer, blob, len);
    longer[len] = 0;
    cr_assert_eq(kms_ksgen_open(k, "c", 1, longer, len + 1, &m, &ks, &n, &why), KMS_ERR_UNWRAP, "trailing byte");
    free(longer);
    free(blob);
    kms_secret_free(&k);
}

Test(ksgen, sealing_refuses_bad_names_and_sizes, .timeout = 60)
{
    struct kms_secret *k = key_of(4);
    struct kms_ksgen_meta m = {.generation = 1};
    uint8_t *blob = NULL;
    size_t len = 0;
    cr_assert_eq(kms_ksgen_seal(k, "bad name", &m, content, sizeof(content), &blob, &len), KMS_ERR_INVALID_FIELD);
    cr_assert_eq(kms_ksgen_seal(k, "", &m, content, sizeof(content), &blob, &len), KMS_ERR_INVALID_FIELD);
    cr_assert_eq(kms_ksgen_seal(k, "ok", &m, content, 0, &blob, &len), KMS_ERR_INVALID_FIELD);
    m.generation = 0;
    cr_assert_eq(kms_ksgen_seal(k, "ok", &m, content, sizeof(content), &blob, &len), KMS_ERR_INVALID_FIELD);
    cr_assert_null(blob);
    kms_secret_free(&k);
}

Test(ksgen, a_node_checks_password_server_key_and_validity, .timeout = 60)
{
    size_t len = 0;
    uint8_t *good = make_keystore(-60, 86400, "kmsServer", &len);
    struct kms_keystore *ks = NULL;
    cr_assert_eq(kms_ksgen_check(good, len, "gen 1", "pw-test", "kmsserver", "kmsclient", &ks), KMS_OK);
    cr_assert_eq(kms_keystore_count(ks), 2);
    kms_keystore_free(&ks);
    cr_assert_eq(kms_ksgen_check(good, len, "gen 1", "wrong", "kmsserver", NULL, NULL), KMS_ERR_KEYSTORE_PASSWORD);
    cr_assert_eq(kms_ksgen_check(good, len, "gen 1", "pw-test", "otherServer", NULL, NULL), KMS_ERR_ALIAS_NOT_FOUND);
    cr_assert(strstr(kms_error_detail(), "otherServer") != NULL, "%s", kms_error_detail());
    cr_assert_eq(kms_ksgen_check(good, len, "gen 1", "pw-test", "cmxDevice", NULL, NULL), KMS_ERR_ALIAS_NOT_FOUND,
                 "a certificate entry is not a server identity");
    free(good);
    uint8_t *expired = make_keystore(-86400 * 3, -86400, "kmsServer", &len);
    cr_assert_eq(kms_ksgen_check(expired, len, "gen 2", "pw-test", "kmsserver", NULL, NULL), KMS_ERR_INVALID_FIELD);
    cr_assert(strstr(kms_error_detail(), "has expired") != NULL, "%s", kms_error_detail());
    cr_assert(strstr(kms_error_detail(), "kmsserver") != NULL, "%s", kms_error_detail());
    free(expired);
    uint8_t *future = make_keystore(86400, 86400 * 2, "kmsServer", &len);
    cr_assert_eq(kms_ksgen_check(future, len, "gen 3", "pw-test", "kmsserver", NULL, NULL), KMS_ERR_INVALID_FIELD);
    cr_assert(strstr(kms_error_detail(), "not valid yet") != NULL, "%s", kms_error_detail());
    free(future);
    cr_assert_neq(kms_ksgen_check(content, sizeof(content), "junk", "pw-test", "kmsserver", NULL, NULL), KMS_OK);
}
