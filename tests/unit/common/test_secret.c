/* common/secret.c: secrets live on OpenSSL's secure heap, and the process
 * that holds them cannot dump core (ssh-agent's rule): checked through
 * /proc and getrlimit as an operator would. Lengths are bounded, equality is
 * constant-time over equal lengths, and the fetched algorithms are shared. */
#include "common/secret.h"

#include <criterion/criterion.h>
#include <openssl/crypto.h>
#include <stdio.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/resource.h>

static void init(void) { cr_assert_eq(kms_secmem_init(1 << 16), KMS_OK, "%s", kms_error_detail()); }

TestSuite(secret, .init = init);

Test(secret, after_init_no_core_dump_is_possible)
{
    cr_assert_eq(prctl(PR_GET_DUMPABLE, 0, 0, 0, 0), 0, "PR_SET_DUMPABLE 0");
    struct rlimit rl;
    cr_assert_eq(getrlimit(RLIMIT_CORE, &rl), 0);
    cr_assert_eq(rl.rlim_cur, 0);
    cr_assert_eq(rl.rlim_max, 0, "the hard limit too: a child cannot raise it back");
    cr_assert_eq(kms_secmem_init(1 << 16), KMS_OK, "a second init is harmless");
}

Test(secret, secrets_are_on_the_secure_heap_and_zeroed_at_birth)
{
    struct kms_secret *s = NULL;
    cr_assert_eq(kms_secret_new(64, &s), KMS_OK);
    cr_assert_eq(kms_secret_len(s), 64);
    cr_assert_eq(CRYPTO_secure_allocated(kms_secret_data(s)), 1, "the bytes are on the secure heap");
    static const uint8_t zero[64];
    cr_assert_eq(memcmp(kms_secret_cdata(s), zero, 64), 0);
    kms_secret_free(&s);
    cr_assert_null(s);
    kms_secret_free(&s); /* takes NULL */
    kms_secret_free(NULL);
}

Test(secret, lengths_outside_1_to_65536_are_refused)
{
    struct kms_secret *s = NULL;
    cr_assert_neq(kms_secret_new(0, &s), KMS_OK);
    cr_assert_null(s);
    cr_assert_neq(kms_secret_new(65537, &s), KMS_OK);
    cr_assert_null(s);
    cr_assert_eq(kms_secret_random(32, &s), KMS_OK);
    kms_secret_free(&s);
}

Test(secret, copies_compare_equal_and_a_changed_byte_does_not)
{
    static const uint8_t k[32] = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16,
                                  17, 18, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 29, 30, 31, 32};
    struct kms_secret *a = NULL, *b = NULL, *c = NULL;
    cr_assert_eq(kms_secret_from(k, sizeof(k), &a), KMS_OK);
    cr_assert_eq(kms_secret_from(k, sizeof(k), &b), KMS_OK);
    cr_assert_eq(kms_secret_from(k, 31, &c), KMS_OK);
    cr_assert(kms_secret_equal(a, b));
    cr_assert_not(kms_secret_equal(a, c), "another length is another secret");
    kms_secret_data(b)[31] ^= 1;
    cr_assert_not(kms_secret_equal(a, b));
    kms_secret_truncate(a, 31);
    cr_assert_eq(kms_secret_len(a), 31);
    cr_assert(kms_secret_equal(a, c), "truncated to the same bytes");
    kms_secret_free(&a);
    kms_secret_free(&b);
    kms_secret_free(&c);
}

Test(secret, random_secrets_differ_and_random_bytes_fill)
{
    struct kms_secret *a = NULL, *b = NULL;
    cr_assert_eq(kms_secret_random(32, &a), KMS_OK);
    cr_assert_eq(kms_secret_random(32, &b), KMS_OK);
    cr_assert_not(kms_secret_equal(a, b));
    kms_secret_free(&a);
    kms_secret_free(&b);
    uint8_t n1[12] = {0}, n2[12] = {0};
    cr_assert_eq(kms_random(n1, sizeof(n1)), KMS_OK);
    cr_assert_eq(kms_random(n2, sizeof(n2)), KMS_OK);
    cr_assert_neq(memcmp(n1, n2, sizeof(n1)), 0);
}

Test(secret, wipe_clears_and_algorithms_are_fetched_once)
{
    uint8_t buf[16];
    memset(buf, 0xa5, sizeof(buf));
    kms_wipe(buf, sizeof(buf));
    static const uint8_t zero[16];
    cr_assert_eq(memcmp(buf, zero, sizeof(buf)), 0);
    cr_assert_not_null(kms_aes256gcm());
    cr_assert_eq(kms_aes256gcm(), kms_aes256gcm(), "one fetch, shared");
    cr_assert_eq(EVP_CIPHER_get_key_length(kms_aes256gcm()), 32);
    cr_assert_not_null(kms_sha256());
    cr_assert_eq(kms_sha256(), kms_sha256());
    cr_assert_eq(EVP_MD_get_size(kms_sha256()), 32);
}
