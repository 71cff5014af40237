/* hsm/pkcs11/p11.c: the module, the token and the session threads, against a
 * real SoftHSM2 token made for this binary (softhsm2-util --init-token under
 * its own SOFTHSM2_CONF in a /tmp folder). The calls handed to the sessions
 * are the tests' own, so that a slow call, a lost session and a device error
 * can be made to order. */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "common/clock.h"
#include "common/error.h"
#include "hsm/pkcs11/p11.h"

static char dir[64];
static char module[128];
static const char *pin = "4242424242";

static void setup_token(void)
{
    const char *candidates[] = {"/usr/lib/softhsm/libsofthsm2.so", "/usr/lib/x86_64-linux-gnu/softhsm/libsofthsm2.so"};
    for (size_t i = 0; i < 2 && module[0] == '\0'; i++)
        if (access(candidates[i], R_OK) == 0)
            (void)snprintf(module, sizeof(module), "%s", candidates[i]);
    cr_assert(module[0] != '\0', "SoftHSM2 is not installed (apt-get install softhsm2)");
    (void)snprintf(dir, sizeof(dir), "/tmp/kms-p11-XXXXXX");
    cr_assert_not_null(mkdtemp(dir));
    char cmd[1024];
    (void)snprintf(cmd, sizeof(cmd),
                   "mkdir -p %s/tokens && printf 'directories.tokendir = %s/tokens\\nobjectstore.backend = file\\n"
                   "log.level = ERROR\\n' > %s/softhsm2.conf && SOFTHSM2_CONF=%s/softhsm2.conf softhsm2-util "
                   "--init-token --free --label unit-p11 --so-pin 1234567812345678 --pin %s >/dev/null",
                   dir, dir, dir, dir, pin);
    cr_assert_eq(system(cmd), 0, "softhsm2-util --init-token");
    char conf[128];
    (void)snprintf(conf, sizeof(conf), "%s/softhsm2.conf", dir);
    setenv("SOFTHSM2_CONF", conf, 1);
}

static void remove_token(void)
{
    char cmd[128];
    (void)snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
    cr_assert_eq(system(cmd), 0, "%s", cmd);
}

TestSuite(p11, .init = setup_token, .fini = remove_token);

static struct kms_p11 *open_token(unsigned sessions, unsigned timeout_ms)
{
    struct kms_p11_options o = {module, "unit-p11", -1, pin, sessions, timeout_ms};
    struct kms_p11 *p = NULL;
    cr_assert_eq(kms_p11_open(&o, &p), KMS_OK, "%s", kms_error_detail());
    return p;
}

/* ---- calls made to order ---------------------------------------------------- */

struct job {
    long sleep_ms;
    CK_RV answer;         /* what the call says */
    int lose_first;       /* the first call on a session says CKR_SESSION_HANDLE_INVALID */
    CK_SESSION_INFO info; /* filled by the call */
    int ran;
};

static int lost_once;

static CK_RV job_fn(CK_FUNCTION_LIST *f, CK_SESSION_HANDLE s, void *arg)
{
    struct job *j = arg;
    j->ran++;
    if (j->sleep_ms > 0) {
        struct timespec ts = {j->sleep_ms / 1000, (j->sleep_ms % 1000) * 1000000L};
        nanosleep(&ts, NULL);
    }
    if (j->lose_first && __atomic_exchange_n(&lost_once, 1, __ATOMIC_ACQ_REL) == 0)
        return CKR_SESSION_HANDLE_INVALID;
    CK_RV rv = f->C_GetSessionInfo(s, &j->info);
    return rv != CKR_OK ? rv : j->answer;
}

static struct job *job_new(long sleep_ms, CK_RV answer)
{
    struct job *j = kms_p11_job_new(sizeof(*j));
    cr_assert_not_null(j);
    j->sleep_ms = sleep_ms;
    j->answer = answer;
    return j;
}

Test(p11, a_call_runs_on_a_logged_in_session)
{
    struct kms_p11 *p = open_token(2, 2000);
    struct job *j = job_new(0, CKR_OK);
    CK_RV rv = CKR_GENERAL_ERROR;
    cr_assert_eq(kms_p11_call(p, "test", job_fn, (void **)&j, sizeof(*j), &rv), KMS_OK, "%s", kms_error_detail());
    cr_assert_eq(rv, CKR_OK);
    cr_assert_eq(j->ran, 1);
    cr_assert(j->info.state == CKS_RW_USER_FUNCTIONS, "the session is logged in (state %lu)", j->info.state);
    kms_p11_job_free(j, sizeof(*j));
    struct kms_pkcs11_info in;
    kms_p11_get_info(p, &in);
    cr_assert_str_eq(in.label, "unit-p11");
    cr_assert_eq(in.sessions, 2);
    cr_assert_eq(in.sessions_open, 2);
    cr_assert_eq(in.logins, 1, "one login for every session");
    kms_p11_free(&p);
    cr_assert_null(p);
}

Test(p11, a_slow_call_times_out_and_its_session_serves_again)
{
    struct kms_p11 *p = open_token(2, 150);
    struct job *slow = job_new(500, CKR_OK);
    CK_RV rv;
    uint64_t t0 = kms_now_ms();
    cr_assert_eq(kms_p11_call(p, "C_Slow", job_fn, (void **)&slow, sizeof(*slow), &rv), KMS_ERR_BACKEND_TIMEOUT);
    uint64_t took = kms_now_ms() - t0;
    cr_assert(took >= 140 && took < 400, "gave up after %llu ms (timeout 150)", (unsigned long long)took);
    cr_assert_null(slow, "the session took the abandoned argument");
    cr_assert(strstr(kms_error_detail(), "C_Slow did not return within 150 ms") != NULL, "%s", kms_error_detail());
    cr_assert(kms_p11_degraded(p));
    /* the other session serves meanwhile */
    struct job *j = job_new(0, CKR_OK);
    cr_assert_eq(kms_p11_call(p, "test", job_fn, (void **)&j, sizeof(*j), &rv), KMS_OK, "%s", kms_error_detail());
    cr_assert_not(kms_p11_degraded(p), "a call that worked clears degraded");
    usleep(450000);
    /* both sessions free again: two slow-ish calls at once both succeed */
    struct job *a = job_new(50, CKR_OK);
    cr_assert_eq(kms_p11_call(p, "test", job_fn, (void **)&a, sizeof(*a), &rv), KMS_OK, "%s", kms_error_detail());
    kms_p11_job_free(a, sizeof(*a));
    kms_p11_job_free(j, sizeof(*j));
    kms_p11_free(&p); /* waits for nothing: the slow call ended, its argument was freed (ASan: no leak) */
}

Test(p11, a_call_that_never_started_is_given_back)
{
    struct kms_p11 *p = open_token(1, 150);
    struct job *slow = job_new(400, CKR_OK), *queued = job_new(0, CKR_OK);
    CK_RV rv;
    cr_assert_eq(kms_p11_call(p, "C_Slow", job_fn, (void **)&slow, sizeof(*slow), &rv), KMS_ERR_BACKEND_TIMEOUT);
    cr_assert_eq(kms_p11_call(p, "C_Queued", job_fn, (void **)&queued, sizeof(*queued), &rv),
                 KMS_ERR_BACKEND_TIMEOUT);
    cr_assert_not_null(queued, "a call no session took stays the caller's");
    cr_assert_eq(queued->ran, 0);
    cr_assert(strstr(kms_error_detail(), "C_Queued found no free session") != NULL, "%s", kms_error_detail());
    kms_p11_job_free(queued, sizeof(*queued));
    kms_p11_free(&p);
}

Test(p11, a_lost_session_is_replaced_and_the_call_tried_again)
{
    struct kms_p11 *p = open_token(1, 2000);
    struct kms_pkcs11_info before, after;
    kms_p11_get_info(p, &before);
    lost_once = 0;
    struct job *j = job_new(0, CKR_OK);
    j->lose_first = 1;
    CK_RV rv;
    cr_assert_eq(kms_p11_call(p, "test", job_fn, (void **)&j, sizeof(*j), &rv), KMS_OK, "%s", kms_error_detail());
    cr_assert_eq(rv, CKR_OK);
    cr_assert_eq(j->ran, 2, "tried twice");
    kms_p11_get_info(p, &after);
    cr_assert_eq(after.sessions_opened, before.sessions_opened + 1, "one session opened again");
    cr_assert_eq(after.sessions_open, 1);
    kms_p11_job_free(j, sizeof(*j));
    kms_p11_free(&p);
}

Test(p11, a_device_error_reopens_with_backoff)
{
    struct kms_p11 *p = open_token(1, 2000);
    struct job *j = job_new(0, CKR_DEVICE_ERROR);
    CK_RV rv;
    cr_assert_eq(kms_p11_call(p, "C_Decrypt", job_fn, (void **)&j, sizeof(*j), &rv), KMS_ERR_BACKEND_UNAVAILABLE);
    cr_assert(strstr(kms_error_detail(), "CKR_DEVICE_ERROR") != NULL, "%s", kms_error_detail());
    cr_assert(kms_p11_degraded(p));
    j->answer = CKR_OK;
    j->ran = 0;
    /* within the first backoff (100 ms) no session is opened: refused at once */
    cr_assert_eq(kms_p11_call(p, "C_Decrypt", job_fn, (void **)&j, sizeof(*j), &rv), KMS_ERR_BACKEND_UNAVAILABLE);
    cr_assert(strstr(kms_error_detail(), "next attempt in") != NULL, "%s", kms_error_detail());
    cr_assert_eq(j->ran, 0);
    usleep(150000);
    cr_assert_eq(kms_p11_call(p, "C_Decrypt", job_fn, (void **)&j, sizeof(*j), &rv), KMS_OK, "%s", kms_error_detail());
    cr_assert_eq(rv, CKR_OK);
    cr_assert_not(kms_p11_degraded(p));
    kms_p11_job_free(j, sizeof(*j));
    kms_p11_free(&p);
}

Test(p11, open_names_what_is_wrong)
{
    struct kms_p11 *p = NULL;
    struct kms_p11_options o = {module, "unit-p11", -1, "0000", 1, 1000};
    cr_assert_eq(kms_p11_open(&o, &p), KMS_ERR_CONFIG);
    cr_assert(strstr(kms_error_detail(), "wrong PIN for token 'unit-p11'") != NULL, "%s", kms_error_detail());
    cr_assert(strstr(kms_error_detail(), "0000") == NULL, "the PIN is not repeated");
    o.pin = pin;
    o.token_label = "nope";
    cr_assert_eq(kms_p11_open(&o, &p), KMS_ERR_CONFIG);
    cr_assert(strstr(kms_error_detail(), "no token labelled 'nope'") != NULL, "%s", kms_error_detail());
    cr_assert(strstr(kms_error_detail(), "'unit-p11' in slot") != NULL, "the tokens present: %s", kms_error_detail());
    o.token_label = "unit-p11";
    o.library = "/nonexistent/module.so";
    cr_assert_eq(kms_p11_open(&o, &p), KMS_ERR_CONFIG);
    cr_assert(strstr(kms_error_detail(), "cannot load /nonexistent/module.so") != NULL, "%s", kms_error_detail());
    o.library = "libc.so.6";
    cr_assert_eq(kms_p11_open(&o, &p), KMS_ERR_CONFIG);
    cr_assert(strstr(kms_error_detail(), "is not a PKCS#11 module") != NULL, "%s", kms_error_detail());
    o.library = module;
    o.pin = "";
    cr_assert_eq(kms_p11_open(&o, &p), KMS_ERR_CONFIG);
    cr_assert(strstr(kms_error_detail(), "user PIN") != NULL, "%s", kms_error_detail());
    cr_assert_null(p);
}
