/* A PKCS#11 module, its token, and the lanes (p11.h). */
#include "hsm/pkcs11/p11.h"

#include <dlfcn.h>
#include <openssl/crypto.h>
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "common/clock.h"
#include "common/log.h"
#include "common/secret.h"

#define BACKOFF_MIN_MS 100
#define BACKOFF_MAX_MS 5000
#define PIN_MAX 256

/* One call waiting for, or on, a lane. The caller waits on cv; when it gives
 * up on a call already running, the lane frees the job and its argument. */
struct job {
    struct job *next;
    kms_p11_fn fn;
    void *arg; /* kms_p11_job_new's */
    size_t len;
    pthread_cond_t cv;
    int started, done, abandoned;
    CK_RV rv;
    kms_rc rc; /* KMS_OK: fn ran (rv); else why it could not */
    char why[256];
};

struct lane {
    struct kms_p11 *p;
    pthread_t thread;
    int started;
    CK_SESSION_HANDLE session; /* CK_INVALID_HANDLE: none open */
};

struct kms_p11 {
    void *dl;
    CK_FUNCTION_LIST *f;
    int initialized;
    CK_SLOT_ID slot;
    struct kms_secret *pin;
    char library[256];
    char label[33];
    unsigned timeout_ms;
    pthread_mutex_t mu;
    /* calls not yet taken by a lane, oldest first: why one queue for all
     * lanes: a lane that finishes takes the next call at once, without
     * waiting for a caller's thread to wake up and hand it one */
    struct job *head, *tail;
    pthread_cond_t queued;
    struct lane *lanes;
    unsigned n;
    int stop;
    /* under mu: reopening with backoff */
    uint64_t next_open_ms;
    unsigned backoff_ms;
    int degraded;
    char last_error[256];
    unsigned long opened, logins;
};

const char *kms_p11_rv_name(CK_RV rv, char *buf, size_t cap)
{
    static const struct {
        CK_RV rv;
        const char *name;
    } names[] = {
        {CKR_OK, "CKR_OK"},
        {CKR_HOST_MEMORY, "CKR_HOST_MEMORY"},
        {CKR_SLOT_ID_INVALID, "CKR_SLOT_ID_INVALID"},
        {CKR_GENERAL_ERROR, "CKR_GENERAL_ERROR"},
        {CKR_FUNCTION_FAILED, "CKR_FUNCTION_FAILED"},
        {CKR_ARGUMENTS_BAD, "CKR_ARGUMENTS_BAD"},
        {CKR_ATTRIBUTE_SENSITIVE, "CKR_ATTRIBUTE_SENSITIVE"},
        {CKR_ATTRIBUTE_TYPE_INVALID, "CKR_ATTRIBUTE_TYPE_INVALID"},
        {CKR_ATTRIBUTE_VALUE_INVALID, "CKR_ATTRIBUTE_VALUE_INVALID"},
        {CKR_DATA_LEN_RANGE, "CKR_DATA_LEN_RANGE"},
        {CKR_DEVICE_ERROR, "CKR_DEVICE_ERROR"},
        {CKR_DEVICE_MEMORY, "CKR_DEVICE_MEMORY"},
        {CKR_DEVICE_REMOVED, "CKR_DEVICE_REMOVED"},
        {CKR_ENCRYPTED_DATA_INVALID, "CKR_ENCRYPTED_DATA_INVALID"},
        {CKR_ENCRYPTED_DATA_LEN_RANGE, "CKR_ENCRYPTED_DATA_LEN_RANGE"},
        {CKR_FUNCTION_NOT_SUPPORTED, "CKR_FUNCTION_NOT_SUPPORTED"},
        {CKR_KEY_HANDLE_INVALID, "CKR_KEY_HANDLE_INVALID"},
        {CKR_KEY_FUNCTION_NOT_PERMITTED, "CKR_KEY_FUNCTION_NOT_PERMITTED"},
        {CKR_MECHANISM_INVALID, "CKR_MECHANISM_INVALID"},
        {CKR_MECHANISM_PARAM_INVALID, "CKR_MECHANISM_PARAM_INVALID"},
        {CKR_OBJECT_HANDLE_INVALID, "CKR_OBJECT_HANDLE_INVALID"},
        {CKR_OPERATION_ACTIVE, "CKR_OPERATION_ACTIVE"},
        {CKR_PIN_INCORRECT, "CKR_PIN_INCORRECT"},
        {CKR_PIN_LOCKED, "CKR_PIN_LOCKED"},
        {CKR_PIN_EXPIRED, "CKR_PIN_EXPIRED"},
        {CKR_SESSION_CLOSED, "CKR_SESSION_CLOSED"},
        {CKR_SESSION_COUNT, "CKR_SESSION_COUNT"},
        {CKR_SESSION_HANDLE_INVALID, "CKR_SESSION_HANDLE_INVALID"},
        {CKR_SESSION_READ_ONLY, "CKR_SESSION_READ_ONLY"},
        {CKR_TEMPLATE_INCOMPLETE, "CKR_TEMPLATE_INCOMPLETE"},
        {CKR_TEMPLATE_INCONSISTENT, "CKR_TEMPLATE_INCONSISTENT"},
        {CKR_TOKEN_NOT_PRESENT, "CKR_TOKEN_NOT_PRESENT"},
        {CKR_TOKEN_NOT_RECOGNIZED, "CKR_TOKEN_NOT_RECOGNIZED"},
        {CKR_TOKEN_WRITE_PROTECTED, "CKR_TOKEN_WRITE_PROTECTED"},
        {CKR_USER_ALREADY_LOGGED_IN, "CKR_USER_ALREADY_LOGGED_IN"},
        {CKR_USER_NOT_LOGGED_IN, "CKR_USER_NOT_LOGGED_IN"},
        {CKR_USER_PIN_NOT_INITIALIZED, "CKR_USER_PIN_NOT_INITIALIZED"},
        {CKR_USER_TYPE_INVALID, "CKR_USER_TYPE_INVALID"},
        {CKR_BUFFER_TOO_SMALL, "CKR_BUFFER_TOO_SMALL"},
        {CKR_CRYPTOKI_NOT_INITIALIZED, "CKR_CRYPTOKI_NOT_INITIALIZED"},
        {CKR_CRYPTOKI_ALREADY_INITIALIZED, "CKR_CRYPTOKI_ALREADY_INITIALIZED"},
    };
    for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++)
        if (names[i].rv == rv)
            return names[i].name;
    (void)snprintf(buf, cap, "CKR_0x%lx", (unsigned long)rv);
    return buf;
}

/* Errors after which the session is gone: tried again at once on a new one. */
static int session_lost(CK_RV rv)
{
    return rv == CKR_SESSION_HANDLE_INVALID || rv == CKR_SESSION_CLOSED || rv == CKR_USER_NOT_LOGGED_IN;
}

/* Errors of the device: the session is closed and opened again with backoff. */
static int device_lost(CK_RV rv)
{
    return rv == CKR_DEVICE_ERROR || rv == CKR_DEVICE_REMOVED || rv == CKR_TOKEN_NOT_PRESENT ||
           rv == CKR_DEVICE_MEMORY;
}

/* A blank-padded PKCS#11 string as C text. */
static void trimmed(const unsigned char *s, size_t n, char *out)
{
    while (n > 0 && (s[n - 1] == ' ' || s[n - 1] == '\0'))
        n--;
    memcpy(out, s, n);
    out[n] = '\0';
}

/* Under mu: records a failure to open a session (or a device error) and
 * when to try again. */
static void note_failure(struct kms_p11 *p, const char *why)
{
    p->degraded = 1;
    (void)snprintf(p->last_error, sizeof(p->last_error), "%s", why);
    p->backoff_ms = p->backoff_ms == 0 ? BACKOFF_MIN_MS
                    : p->backoff_ms * 2 > BACKOFF_MAX_MS ? BACKOFF_MAX_MS
                                                         : p->backoff_ms * 2;
    p->next_open_ms = kms_now_ms() + p->backoff_ms;
}

/* Opens a session on the lane, logging the user in when the token says the
 * application is not (the first session, or after every session closed).
 * Called on the lane's thread, without mu. */
static kms_rc open_session(struct lane *l, char *why, size_t cap)
{
    struct kms_p11 *p = l->p;
    char nb[32];
    pthread_mutex_lock(&p->mu);
    uint64_t now = kms_now_ms();
    if (now < p->next_open_ms) {
        (void)snprintf(why, cap, "PKCS#11 token '%.32s' unavailable (%.120s); next attempt in %llu ms", p->label,
                       p->last_error, (unsigned long long)(p->next_open_ms - now));
        pthread_mutex_unlock(&p->mu);
        return KMS_ERR_BACKEND_UNAVAILABLE;
    }
    pthread_mutex_unlock(&p->mu);
    CK_SESSION_HANDLE s = CK_INVALID_HANDLE;
    CK_RV rv = p->f->C_OpenSession(p->slot, CKF_SERIAL_SESSION | CKF_RW_SESSION, NULL, NULL, &s);
    const char *step = "C_OpenSession";
    if (rv == CKR_OK) {
        CK_SESSION_INFO si;
        rv = p->f->C_GetSessionInfo(s, &si);
        step = "C_GetSessionInfo";
        if (rv == CKR_OK && (si.state == CKS_RO_PUBLIC_SESSION || si.state == CKS_RW_PUBLIC_SESSION)) {
            rv = p->f->C_Login(s, CKU_USER, kms_secret_data(p->pin), kms_secret_len(p->pin));
            step = "C_Login";
            if (rv == CKR_USER_ALREADY_LOGGED_IN)
                rv = CKR_OK;
            if (rv == CKR_OK)
                __atomic_add_fetch(&p->logins, 1, __ATOMIC_RELAXED);
        }
        if (rv != CKR_OK)
            (void)p->f->C_CloseSession(s);
    }
    pthread_mutex_lock(&p->mu);
    if (rv != CKR_OK) {
        char e[128];
        (void)snprintf(e, sizeof(e), "%s: %s", step, kms_p11_rv_name(rv, nb, sizeof(nb)));
        note_failure(p, e);
        (void)snprintf(why, cap, "PKCS#11 token '%s': %s", p->label, e);
        pthread_mutex_unlock(&p->mu);
        return KMS_ERR_BACKEND_UNAVAILABLE;
    }
    l->session = s;
    p->opened++;
    p->backoff_ms = 0;
    p->next_open_ms = 0;
    pthread_mutex_unlock(&p->mu);
    return KMS_OK;
}

static void close_session(struct lane *l)
{
    if (l->session == CK_INVALID_HANDLE)
        return;
    (void)l->p->f->C_CloseSession(l->session);
    pthread_mutex_lock(&l->p->mu);
    l->session = CK_INVALID_HANDLE;
    pthread_mutex_unlock(&l->p->mu);
}

/* Runs job on the lane's thread: a session first if none, one more try on
 * a new session after a session error. */
static void run_job(struct lane *l, struct job *job)
{
    struct kms_p11 *p = l->p;
    char nb[32];
    job->rc = KMS_OK;
    job->why[0] = '\0';
    for (int attempt = 0; attempt < 2; attempt++) {
        if (l->session == CK_INVALID_HANDLE &&
            (job->rc = open_session(l, job->why, sizeof(job->why))) != KMS_OK)
            return;
        job->rv = job->fn(p->f, l->session, job->arg);
        if (session_lost(job->rv) && attempt == 0) {
            close_session(l);
            continue;
        }
        break;
    }
    if (session_lost(job->rv) || device_lost(job->rv)) {
        close_session(l);
        char e[128];
        (void)snprintf(e, sizeof(e), "%s", kms_p11_rv_name(job->rv, nb, sizeof(nb)));
        pthread_mutex_lock(&p->mu);
        note_failure(p, e);
        pthread_mutex_unlock(&p->mu);
        job->rc = KMS_ERR_BACKEND_UNAVAILABLE;
        (void)snprintf(job->why, sizeof(job->why), "PKCS#11 token '%s' answered %s; its session is opened again",
                       p->label, e);
        return;
    }
    pthread_mutex_lock(&p->mu);
    p->degraded = 0;
    pthread_mutex_unlock(&p->mu);
}

static void job_free(struct job *job)
{
    pthread_cond_destroy(&job->cv);
    free(job);
}

static void *lane_main(void *arg)
{
    struct lane *l = arg;
    struct kms_p11 *p = l->p;
    pthread_mutex_lock(&p->mu);
    for (;;) {
        while (p->head == NULL && !p->stop)
            pthread_cond_wait(&p->queued, &p->mu);
        if (p->head == NULL)
            break;
        struct job *job = p->head;
        p->head = job->next;
        if (p->head == NULL)
            p->tail = NULL;
        job->started = 1;
        pthread_mutex_unlock(&p->mu);
        run_job(l, job);
        pthread_mutex_lock(&p->mu);
        job->done = 1;
        if (job->abandoned) {
            /* why here: the caller gave up; nothing of its call may stay */
            kms_p11_job_free(job->arg, job->len);
            job_free(job);
        } else {
            pthread_cond_signal(&job->cv);
        }
    }
    pthread_mutex_unlock(&p->mu);
    close_session(l);
    return NULL;
}

void *kms_p11_job_new(size_t len) { return OPENSSL_secure_zalloc(len); }

void kms_p11_job_free(void *job, size_t len)
{
    if (job != NULL)
        OPENSSL_secure_clear_free(job, len);
}

/* Under mu: takes job out of the queue (it was not started). */
static void unqueue(struct kms_p11 *p, struct job *job)
{
    struct job **at = &p->head, *prev = NULL;
    while (*at != NULL && *at != job) {
        prev = *at;
        at = &(*at)->next;
    }
    if (*at == NULL)
        return;
    *at = job->next;
    if (p->tail == job)
        p->tail = prev;
}

kms_rc kms_p11_call(struct kms_p11 *p, const char *what, kms_p11_fn fn, void **argp, size_t len, CK_RV *rv)
{
    *rv = CKR_GENERAL_ERROR;
    struct job *job = calloc(1, sizeof(*job));
    if (job == NULL)
        return KMS_ERR_NO_MEMORY;
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&job->cv, &ca);
    pthread_condattr_destroy(&ca);
    job->fn = fn;
    job->arg = *argp;
    job->len = len;
    /* why kms_now_ms: the job's condition variable waits on CLOCK_MONOTONIC, the one clock */
    uint64_t due = kms_now_ms() + p->timeout_ms;
    struct timespec until = {(time_t)(due / 1000u), (long)(due % 1000u) * 1000000L};
    pthread_mutex_lock(&p->mu);
    if (p->tail != NULL)
        p->tail->next = job;
    else
        p->head = job;
    p->tail = job;
    pthread_cond_signal(&p->queued);
    while (!job->done) {
        if (pthread_cond_timedwait(&job->cv, &p->mu, &until) != ETIMEDOUT || job->done)
            continue;
        int started = job->started;
        if (started) {
            job->abandoned = 1; /* the lane frees the job and its argument once the call returns */
            *argp = NULL;
        } else {
            unqueue(p, job);
        }
        p->degraded = 1;
        (void)snprintf(p->last_error, sizeof(p->last_error), "%s took longer than %u ms", what, p->timeout_ms);
        pthread_mutex_unlock(&p->mu);
        if (!started)
            job_free(job);
        kms_log(KMS_LOG_WARN, "backend.pkcs11.slow", NULL, "call", what, "detail",
                started ? "the token did not answer within kms.hsm.timeout.ms; its session returns to the pool "
                          "when the call ends"
                        : "no session of the token came free within kms.hsm.timeout.ms",
                NULL);
        return kms_fail(KMS_ERR_BACKEND_TIMEOUT, "PKCS#11 token '%s': %s %s within %u ms (kms.hsm.timeout.ms)",
                        p->label, what, started ? "did not return" : "found no free session", p->timeout_ms);
    }
    pthread_mutex_unlock(&p->mu);
    kms_rc rc = job->rc;
    if (rc == KMS_OK)
        *rv = job->rv;
    else
        kms_fail(rc, "%s: %s", what, job->why);
    job_free(job);
    return rc;
}

int kms_p11_degraded(struct kms_p11 *p)
{
    pthread_mutex_lock(&p->mu);
    int d = p->degraded;
    pthread_mutex_unlock(&p->mu);
    return d;
}

CK_FUNCTION_LIST *kms_p11_functions(struct kms_p11 *p) { return p->f; }

/* The slot of the token: by label (and it must be unique), else by id. */
static kms_rc find_slot(struct kms_p11 *p, const struct kms_p11_options *o)
{
    char nb[32];
    CK_ULONG n = 0;
    CK_RV rv = p->f->C_GetSlotList(CK_TRUE, NULL, &n);
    if (rv != CKR_OK)
        return kms_fail(KMS_ERR_BACKEND_UNAVAILABLE, "%s: C_GetSlotList: %s", p->library,
                        kms_p11_rv_name(rv, nb, sizeof(nb)));
    CK_SLOT_ID *slots = calloc(n > 0 ? n : 1, sizeof(*slots));
    if (slots == NULL)
        return KMS_ERR_NO_MEMORY;
    if (n > 0 && (rv = p->f->C_GetSlotList(CK_TRUE, slots, &n)) != CKR_OK) {
        free(slots);
        return kms_fail(KMS_ERR_BACKEND_UNAVAILABLE, "%s: C_GetSlotList: %s", p->library,
                        kms_p11_rv_name(rv, nb, sizeof(nb)));
    }
    int by_label = o->token_label != NULL && o->token_label[0] != '\0';
    char seen[512] = "";
    size_t used = 0;
    unsigned found = 0;
    for (CK_ULONG i = 0; i < n; i++) {
        CK_TOKEN_INFO ti;
        if (p->f->C_GetTokenInfo(slots[i], &ti) != CKR_OK)
            continue;
        char label[33];
        trimmed(ti.label, sizeof(ti.label), label);
        int w = snprintf(seen + used, sizeof(seen) - used, "%s'%s' in slot %lu", used ? ", " : "", label,
                         (unsigned long)slots[i]);
        if (w > 0 && (size_t)w < sizeof(seen) - used)
            used += (size_t)w;
        int match = by_label ? strcmp(label, o->token_label) == 0 : (long)slots[i] == o->slot;
        if (match) {
            if (found++ == 0) {
                p->slot = slots[i];
                memcpy(p->label, label, sizeof(p->label));
            }
        }
    }
    free(slots);
    if (found == 0) {
        if (by_label)
            return kms_fail(KMS_ERR_CONFIG, "%s: no token labelled '%s' (kms.hsm.pkcs11.token.label); tokens present: %s",
                            p->library, o->token_label, used ? seen : "none");
        return kms_fail(KMS_ERR_CONFIG, "%s: no token in slot %ld (kms.hsm.pkcs11.slot); tokens present: %s",
                        p->library, o->slot, used ? seen : "none");
    }
    if (found > 1)
        return kms_fail(KMS_ERR_CONFIG, "%s: %u tokens are labelled '%s' (%s); name one by kms.hsm.pkcs11.slot",
                        p->library, found, o->token_label, seen);
    return KMS_OK;
}

kms_rc kms_p11_open(const struct kms_p11_options *o, struct kms_p11 **out)
{
    *out = NULL;
    char nb[32];
    struct kms_p11 *p = calloc(1, sizeof(*p));
    if (p == NULL)
        return KMS_ERR_NO_MEMORY;
    pthread_mutex_init(&p->mu, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&p->queued, &ca);
    (void)snprintf(p->library, sizeof(p->library), "%s", o->library != NULL ? o->library : "");
    p->timeout_ms = o->timeout_ms > 0 ? o->timeout_ms : 10000;
    kms_rc rc = KMS_OK;
    size_t pin_len = o->pin != NULL ? strlen(o->pin) : 0;
    if (p->library[0] == '\0') {
        rc = kms_fail(KMS_ERR_CONFIG, "kms.hsm.protocol=pkcs11 needs kms.hsm.pkcs11.library (the module's path)");
        goto fail;
    }
    if (pin_len == 0 || pin_len > PIN_MAX) {
        rc = kms_fail(KMS_ERR_CONFIG, "kms.hsm.protocol=pkcs11 needs the token's user PIN (kms.hsm.pkcs11.pin.file, "
                                      "or KMS_HSM_PKCS11_PIN), 1 to %d bytes",
                      PIN_MAX);
        goto fail;
    }
    if ((rc = kms_secret_from((const uint8_t *)o->pin, pin_len, &p->pin)) != KMS_OK)
        goto fail;
    /* why RTLD_NOW | RTLD_LOCAL: a module with missing symbols fails here, at
     * start, not in the middle of a request; its symbols stay its own */
    p->dl = dlopen(p->library, RTLD_NOW | RTLD_LOCAL);
    if (p->dl == NULL) {
        const char *e = dlerror();
        rc = kms_fail(KMS_ERR_CONFIG, "kms.hsm.pkcs11.library: cannot load %s: %s", p->library, e ? e : "?");
        goto fail;
    }
    CK_C_GetFunctionList get = NULL;
    *(void **)&get = dlsym(p->dl, "C_GetFunctionList");
    CK_RV rv = get != NULL ? get(&p->f) : CKR_FUNCTION_NOT_SUPPORTED;
    if (get == NULL || rv != CKR_OK || p->f == NULL) {
        rc = kms_fail(KMS_ERR_CONFIG, "kms.hsm.pkcs11.library: %s is not a PKCS#11 module (%s)", p->library,
                      get == NULL ? "no C_GetFunctionList" : kms_p11_rv_name(rv, nb, sizeof(nb)));
        goto fail;
    }
    CK_C_INITIALIZE_ARGS init = {NULL, NULL, NULL, NULL, CKF_OS_LOCKING_OK, NULL};
    rv = p->f->C_Initialize(&init);
    if (rv != CKR_OK && rv != CKR_CRYPTOKI_ALREADY_INITIALIZED) {
        rc = kms_fail(KMS_ERR_BACKEND_UNAVAILABLE, "%s: C_Initialize (CKF_OS_LOCKING_OK): %s", p->library,
                      kms_p11_rv_name(rv, nb, sizeof(nb)));
        goto fail;
    }
    p->initialized = rv == CKR_OK;
    if ((rc = find_slot(p, o)) != KMS_OK)
        goto fail;
    /* why before any session: a token without AES-GCM (YubiHSM 2's module
     * offers none) must be refused at start, not at the first request */
    CK_MECHANISM_INFO mi;
    rv = p->f->C_GetMechanismInfo(p->slot, CKM_AES_GCM, &mi);
    if (rv != CKR_OK || (mi.flags & (CKF_ENCRYPT | CKF_DECRYPT)) != (CKF_ENCRYPT | CKF_DECRYPT)) {
        rc = kms_fail(KMS_ERR_CONFIG, "%s: token '%s' does not offer CKM_AES_GCM for encryption and decryption (%s), "
                                      "which kmsd wraps keys with (docs/pkcs11.md)",
                      p->library, p->label, rv != CKR_OK ? kms_p11_rv_name(rv, nb, sizeof(nb)) : "flags lack them");
        goto fail;
    }
    p->n = o->sessions > 0 ? o->sessions : 1;
    if ((p->lanes = calloc(p->n, sizeof(*p->lanes))) == NULL) {
        rc = KMS_ERR_NO_MEMORY;
        goto fail;
    }
    for (unsigned i = 0; i < p->n; i++) {
        struct lane *l = &p->lanes[i];
        l->p = p;
        l->session = CK_INVALID_HANDLE;
    }
    /* the first session logs in: its failure (a wrong PIN) is the start's */
    char why[256];
    if ((rc = open_session(&p->lanes[0], why, sizeof(why))) != KMS_OK) {
        if (strstr(why, "CKR_PIN_INCORRECT") != NULL)
            rc = kms_fail(KMS_ERR_CONFIG, "%s: wrong PIN for token '%s' (C_Login: CKR_PIN_INCORRECT)", p->library,
                          p->label);
        else if (strstr(why, "CKR_PIN_LOCKED") != NULL)
            rc = kms_fail(KMS_ERR_CONFIG, "%s: the user PIN of token '%s' is locked (C_Login: CKR_PIN_LOCKED): its "
                                          "security officer must unlock it",
                          p->library, p->label);
        else
            rc = kms_fail(rc, "%s: %s", p->library, why);
        goto fail;
    }
    for (unsigned i = 1; i < p->n; i++)
        if ((rc = open_session(&p->lanes[i], why, sizeof(why))) != KMS_OK) {
            rc = kms_fail(rc, "%s: session %u of %u: %s", p->library, i + 1, p->n, why);
            goto fail;
        }
    for (unsigned i = 0; i < p->n; i++) {
        if (pthread_create(&p->lanes[i].thread, NULL, lane_main, &p->lanes[i]) != 0) {
            rc = kms_fail(KMS_ERR_NO_MEMORY, "pkcs11: cannot start session thread %u", i + 1);
            goto fail;
        }
        p->lanes[i].started = 1;
    }
    pthread_condattr_destroy(&ca);
    *out = p;
    return KMS_OK;
fail:
    pthread_condattr_destroy(&ca);
    kms_p11_free(&p);
    return rc;
}

void kms_p11_free(struct kms_p11 **pp)
{
    if (pp == NULL || *pp == NULL)
        return;
    struct kms_p11 *p = *pp;
    pthread_mutex_lock(&p->mu);
    p->stop = 1;
    pthread_cond_broadcast(&p->queued);
    pthread_mutex_unlock(&p->mu);
    for (unsigned i = 0; p->lanes != NULL && i < p->n; i++) {
        struct lane *l = &p->lanes[i];
        if (l->started)
            pthread_join(l->thread, NULL); /* why: a call in flight ends first; the lane then closes its session */
        else
            close_session(l);
    }
    free(p->lanes);
    if (p->initialized)
        (void)p->f->C_Finalize(NULL);
    if (p->dl != NULL)
        dlclose(p->dl);
    kms_secret_free(&p->pin);
    pthread_cond_destroy(&p->queued);
    pthread_mutex_destroy(&p->mu);
    free(p);
    *pp = NULL;
}

void kms_p11_get_info(struct kms_p11 *p, struct kms_pkcs11_info *out)
{
    memset(out, 0, sizeof(*out));
    (void)snprintf(out->library, sizeof(out->library), "%s", p->library);
    out->slot = (unsigned long)p->slot;
    CK_INFO ci;
    if (p->f->C_GetInfo(&ci) == CKR_OK) {
        trimmed(ci.libraryDescription, sizeof(ci.libraryDescription), out->module_description);
        out->cryptoki_major = ci.cryptokiVersion.major;
        out->cryptoki_minor = ci.cryptokiVersion.minor;
    }
    CK_TOKEN_INFO ti;
    if (p->f->C_GetTokenInfo(p->slot, &ti) == CKR_OK) {
        trimmed(ti.manufacturerID, sizeof(ti.manufacturerID), out->manufacturer);
        trimmed(ti.model, sizeof(ti.model), out->model);
        trimmed(ti.serialNumber, sizeof(ti.serialNumber), out->serial);
        trimmed(ti.label, sizeof(ti.label), out->label);
    }
    pthread_mutex_lock(&p->mu);
    out->sessions = p->n;
    for (unsigned i = 0; i < p->n; i++)
        out->sessions_open += p->lanes[i].session != CK_INVALID_HANDLE;
    out->sessions_opened = p->opened;
    out->logins = __atomic_load_n(&p->logins, __ATOMIC_RELAXED);
    pthread_mutex_unlock(&p->mu);
}
