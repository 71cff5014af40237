/* common/error.c: the one code table (status, public code and message) and
 * the thread-local detail that only logs read. What a client is told never
 * depends on the detail; what an operator reads keeps OpenSSL's reasons. */
#include "common/error.h"

#include <criterion/criterion.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <pthread.h>
#include <string.h>

Test(error, every_code_has_a_status_a_public_code_and_a_sentence)
{
    for (int rc = 0; rc < KMS_ERR_COUNT; rc++) {
        int st = kms_error_status((kms_rc)rc);
        cr_assert(st >= 200 && st <= 599, "%s: status %d", kms_error_name((kms_rc)rc), st);
        cr_assert(rc == KMS_OK ? st == 200 : st >= 400, "%s: status %d", kms_error_name((kms_rc)rc), st);
        const char *code = kms_error_code((kms_rc)rc), *msg = kms_error_message((kms_rc)rc);
        cr_assert(code != NULL && code[0] != '\0' && strspn(code, "abcdefghijklmnopqrstuvwxyz_") == strlen(code),
                  "%s: code %s", kms_error_name((kms_rc)rc), code);
        cr_assert(msg != NULL && (rc == KMS_OK || msg[strlen(msg) - 1] == '.'), "%s: a sentence: %s",
                  kms_error_name((kms_rc)rc), msg);
        cr_assert_eq(strncmp(kms_error_name((kms_rc)rc), "KMS_", 4), 0);
    }
    cr_assert_eq(kms_error_status(KMS_ERR_RATE_LIMITED), 429);
    cr_assert_eq(kms_error_status(KMS_ERR_BACKEND_TIMEOUT), 504);
    cr_assert_str_eq(kms_error_code(KMS_ERR_INVALID_FIELD), "invalid_field");
}

Test(error, a_code_out_of_the_table_is_an_internal_error)
{
    cr_assert_eq(kms_error_status((kms_rc)KMS_ERR_COUNT), 500);
    cr_assert_eq(kms_error_status((kms_rc)-1), 500);
    cr_assert_str_eq(kms_error_code((kms_rc)9999), "internal_error");
}

Test(error, fail_records_the_detail_and_returns_the_code)
{
    kms_error_clear();
    cr_assert_str_eq(kms_error_detail(), "");
    cr_assert_eq(kms_fail(KMS_ERR_CONFIG, "kms.server.port=%d: out of range", 70000), KMS_ERR_CONFIG);
    cr_assert_str_eq(kms_error_detail(), "kms.server.port=70000: out of range");
    char longer[2000];
    memset(longer, 'x', sizeof(longer) - 1);
    longer[sizeof(longer) - 1] = '\0';
    kms_error_set_detail("%s", longer);
    cr_assert_lt(strlen(kms_error_detail()), sizeof(longer), "bounded, not overflowing");
}

Test(error, openssl_reasons_are_appended_and_the_queue_drained)
{
    /* an unknown cipher name puts a reason on the queue */
    EVP_CIPHER *c = EVP_CIPHER_fetch(NULL, "NO-SUCH-CIPHER", NULL);
    cr_assert_null(c);
    cr_assert_neq(ERR_peek_error(), 0);
    kms_error_set_detail("cannot load the cipher");
    kms_error_add_openssl();
    cr_assert_eq(strncmp(kms_error_detail(), "cannot load the cipher; error:", 30), 0, "%s", kms_error_detail());
    cr_assert_eq(ERR_peek_error(), 0, "the queue is drained so a later failure is not blamed on this one");
}

static void *other_thread(void *arg)
{
    (void)arg;
    kms_error_set_detail("the other thread's failure");
    return NULL;
}

Test(error, the_detail_belongs_to_its_thread)
{
    kms_error_set_detail("this thread's failure");
    pthread_t t;
    cr_assert_eq(pthread_create(&t, NULL, other_thread, NULL), 0);
    pthread_join(t, NULL);
    cr_assert_str_eq(kms_error_detail(), "this thread's failure");
}
