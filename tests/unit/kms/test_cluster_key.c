#define _GNU_SOURCE /* why: memmem */
/* The sealed cluster key (kms/cluster_key.h, SPEC §11): never in clear, opens
 * only with the keystore password, and a key in clear is refused with the
 * command that seals it. */
#include <criterion/criterion.h>

#include <stdlib.h>
#include <string.h>

#include "common/base64.h"
#include "kms/cluster_key.h"

#define FAST 10000 /* iterations: the minimum, to keep the tests quick */

static struct kms_secret *raw_key(void)
{
    struct kms_secret *k = NULL;
    cr_assert_eq(kms_secret_random(KMS_CLUSTER_KEY_BYTES, &k), KMS_OK);
    return k;
}

Test(cluster_key, seals_and_opens_with_the_password_only, .timeout = 60)
{
    struct kms_secret *k = raw_key(), *back = NULL;
    char *line = NULL;
    cr_assert_eq(kms_cluster_key_seal(k, "store-pw", FAST, &line), KMS_OK);
    cr_assert(kms_cluster_key_is_sealed(line));
    cr_assert_eq(strncmp(line, "kmsd-cluster-key:v1:10000:", 26), 0, "%s", line);
    cr_assert_eq(line[strlen(line) - 1], '\n');
    cr_assert_null(memmem(line, strlen(line), kms_secret_cdata(k), kms_secret_len(k)), "key bytes in the line");
    char b64[64];
    cr_assert_eq(kms_b64_encode(kms_secret_cdata(k), kms_secret_len(k), b64, sizeof(b64)), KMS_OK);
    cr_assert_null(strstr(line, b64), "the key's base64 in the line");
    cr_assert_eq(kms_cluster_key_open(line, "store-pw", "test", &back), KMS_OK);
    cr_assert(kms_secret_equal(k, back));
    kms_secret_free(&back);
    cr_assert_eq(kms_cluster_key_open(line, "other-pw", "kms.cache.cluster.key (file x)", &back),
                 KMS_ERR_KEYSTORE_PASSWORD);
    cr_assert(strstr(kms_error_detail(), "kms.cache.cluster.key (file x)") != NULL, "%s", kms_error_detail());
    cr_assert_null(strstr(kms_error_detail(), "store-pw"));
    cr_assert_null(back);
    /* two seals of one key differ (salt, nonce) */
    char *line2 = NULL;
    cr_assert_eq(kms_cluster_key_seal(k, "store-pw", FAST, &line2), KMS_OK);
    cr_assert_str_neq(line, line2);
    free(line);
    free(line2);
    kms_secret_free(&k);
}

Test(cluster_key, a_key_in_clear_is_refused_with_the_way_out, .timeout = 60)
{
    struct kms_secret *k = NULL;
    cr_assert_eq(kms_cluster_key_open("3q2+7wAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=\n", "pw", "kms.cache.cluster.key", &k),
                 KMS_ERR_CONFIG);
    cr_assert(strstr(kms_error_detail(), "kmsctl cluster key create") != NULL, "%s", kms_error_detail());
    cr_assert_null(k);
    cr_assert_eq(kms_cluster_key_open("", "pw", "x", &k), KMS_ERR_CONFIG);
}

Test(cluster_key, every_changed_character_fails, .timeout = 60)
{
    struct kms_secret *k = raw_key(), *back = NULL;
    char *line = NULL;
    cr_assert_eq(kms_cluster_key_seal(k, "pw", FAST, &line), KMS_OK);
    size_t n = strlen(line) - 1; /* not the newline */
    size_t magic = strlen(KMS_CLUSTER_KEY_MAGIC);
    for (size_t i = magic; i < n; i++) {
        char saved = line[i];
        line[i] = saved == 'A' ? 'B' : 'A';
        if (line[i] == ':' || saved == ':') {
            line[i] = saved;
            continue;
        }
        kms_rc rc = kms_cluster_key_open(line, "pw", "x", &back);
        cr_assert_neq(rc, KMS_OK, "character %zu changed and it still opened", i);
        cr_assert_null(back);
        line[i] = saved;
    }
    line[n / 2] = '\0';
    cr_assert_eq(kms_cluster_key_open(line, "pw", "x", &back), KMS_ERR_CONFIG, "truncated");
    free(line);
    kms_secret_free(&k);
}

Test(cluster_key, sealing_refuses_what_would_be_weak, .timeout = 60)
{
    struct kms_secret *k = raw_key(), *short_key = NULL;
    char *line = NULL;
    cr_assert_eq(kms_cluster_key_seal(k, "", FAST, &line), KMS_ERR_INVALID_FIELD);
    cr_assert_eq(kms_cluster_key_seal(k, "pw", 9999, &line), KMS_ERR_INVALID_FIELD);
    cr_assert_eq(kms_secret_from((const uint8_t *)"short", 5, &short_key), KMS_OK);
    cr_assert_eq(kms_cluster_key_seal(short_key, "pw", FAST, &line), KMS_ERR_INVALID_FIELD);
    cr_assert_null(line);
    kms_secret_free(&short_key);
    kms_secret_free(&k);
}
