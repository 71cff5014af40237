/* OCSP for client certificates (ocsp.h). The request carries a nonce; the
 * answer must be signed by the certificate's issuer or a responder it
 * delegated to, and be current (thisUpdate/nextUpdate, 5 min of clock skew). */
#include "server/ocsp.h"

#include <openssl/err.h>
#include <openssl/ocsp.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "common/log.h"
#include "server/http_client.h"

#define ENTRIES 256
#define ANSWER_MAX (64u << 10)
#define RETRY_UNKNOWN_S 10 /* a responder that failed is asked again after this (or the refresh, if sooner) */
#define SKEW_S 300

struct entry {
    char fp[65];
    X509 *cert, *issuer;
    enum kms_ocsp_status st;
    time_t next_check, used;
};

struct kms_ocsp {
    enum kms_ocsp_mode mode;
    char url[512];
    unsigned timeout_ms, refresh_s;
    pthread_mutex_t mu;
    struct entry e[ENTRIES];
    unsigned long epoch; /* atomic */
    pthread_t thread;
    pthread_cond_t wake;
    int stop, started;
};

/* The responder of cert: the configured one, else the first http URL of its AIA. */
static int responder(const struct kms_ocsp *o, X509 *cert, char *url, size_t cap)
{
    if (o->url[0] != '\0') {
        (void)snprintf(url, cap, "%s", o->url);
        return 0;
    }
    STACK_OF(OPENSSL_STRING) *aia = X509_get1_ocsp(cert);
    int found = -1;
    for (int i = 0; aia != NULL && i < sk_OPENSSL_STRING_num(aia) && found < 0; i++) {
        const char *u = sk_OPENSSL_STRING_value(aia, i);
        if (strncmp(u, "http://", 7) == 0 || strncmp(u, "https://", 8) == 0) {
            (void)snprintf(url, cap, "%s", u);
            found = 0;
        }
    }
    X509_email_free(aia);
    return found;
}

/* Asks the responder: the status, and until when it holds. */
static enum kms_ocsp_status ask(const struct kms_ocsp *o, X509 *cert, X509 *issuer, time_t *until, char *why,
                                size_t cap)
{
    time_t now = time(NULL);
    *until = now + (o->refresh_s < RETRY_UNKNOWN_S ? (time_t)o->refresh_s : RETRY_UNKNOWN_S);
    char url[512];
    if (issuer == NULL) {
        (void)snprintf(why, cap, "the keystore holds no certificate of its issuer, needed to ask and to check "
                                 "an OCSP answer");
        return KMS_OCSP_UNKNOWN;
    }
    if (responder(o, cert, url, sizeof(url)) != 0) {
        (void)snprintf(why, cap, "no responder: kms.auth.ocsp.url is empty and the certificate names none (AIA)");
        return KMS_OCSP_UNKNOWN;
    }
    enum kms_ocsp_status st = KMS_OCSP_UNKNOWN;
    OCSP_CERTID *id = OCSP_cert_to_id(NULL, cert, issuer);
    OCSP_REQUEST *req = OCSP_REQUEST_new();
    OCSP_RESPONSE *resp = NULL;
    OCSP_BASICRESP *bs = NULL;
    X509_STORE *store = X509_STORE_new();
    STACK_OF(X509) *certs = sk_X509_new_null();
    unsigned char *der = NULL;
    struct kms_http_body b = {NULL, 0};
    int len;
    if (id == NULL || req == NULL || store == NULL || certs == NULL ||
        OCSP_request_add0_id(req, OCSP_CERTID_dup(id)) == NULL || !OCSP_request_add1_nonce(req, NULL, -1) ||
        (len = i2d_OCSP_REQUEST(req, &der)) <= 0) {
        (void)snprintf(why, cap, "cannot build the OCSP request");
        goto done;
    }
    if (kms_http_fetch(url, "application/ocsp-request", der, (size_t)len, ANSWER_MAX, o->timeout_ms, &b, why, cap) !=
        0)
        goto done;
    const unsigned char *p = b.p;
    resp = d2i_OCSP_RESPONSE(NULL, &p, (long)b.len);
    if (resp == NULL || OCSP_response_status(resp) != OCSP_RESPONSE_STATUS_SUCCESSFUL ||
        (bs = OCSP_response_get1_basic(resp)) == NULL) {
        (void)snprintf(why, cap, "%s: not a successful OCSP answer (%s)", url,
                       resp ? OCSP_response_status_str(OCSP_response_status(resp)) : "unreadable");
        goto done;
    }
    if (OCSP_check_nonce(req, bs) <= 0) {
        (void)snprintf(why, cap, "%s: the answer's nonce is not the request's", url);
        goto done;
    }
    /* why PARTIAL_CHAIN: the issuer is often an intermediate; it is the anchor here */
    X509_STORE_add_cert(store, issuer);
    X509_STORE_set_flags(store, X509_V_FLAG_PARTIAL_CHAIN);
    sk_X509_push(certs, issuer);
    if (OCSP_basic_verify(bs, certs, store, 0) != 1) {
        (void)snprintf(why, cap, "%s: the answer is not signed by the issuer or a responder it delegated to", url);
        goto done;
    }
    int status = 0, reason = 0;
    ASN1_GENERALIZEDTIME *rev = NULL, *thisupd = NULL, *nextupd = NULL;
    if (!OCSP_resp_find_status(bs, id, &status, &reason, &rev, &thisupd, &nextupd) ||
        !OCSP_check_validity(thisupd, nextupd, SKEW_S, -1)) {
        (void)snprintf(why, cap, "%s: no current answer for this certificate", url);
        goto done;
    }
    st = status == V_OCSP_CERTSTATUS_GOOD ? KMS_OCSP_GOOD
         : status == V_OCSP_CERTSTATUS_REVOKED ? KMS_OCSP_REVOKED : KMS_OCSP_UNKNOWN;
    if (st == KMS_OCSP_UNKNOWN)
        (void)snprintf(why, cap, "%s: the responder does not know this certificate", url);
    *until = now + (time_t)o->refresh_s;
    struct tm tm;
    if (nextupd != NULL && ASN1_TIME_to_tm(nextupd, &tm) == 1 && timegm(&tm) < *until)
        *until = timegm(&tm) > now ? timegm(&tm) : now + 1;
done:
    ERR_clear_error();
    free(b.p);
    OPENSSL_free(der);
    sk_X509_free(certs);
    X509_STORE_free(store);
    OCSP_BASICRESP_free(bs);
    OCSP_RESPONSE_free(resp);
    OCSP_REQUEST_free(req);
    OCSP_CERTID_free(id);
    return st;
}

/* Under mu: the entry of fp, or a slot for it (the least recently used). */
static struct entry *slot(struct kms_ocsp *o, const char *fp, int *found)
{
    struct entry *lru = &o->e[0];
    for (size_t i = 0; i < ENTRIES; i++) {
        if (o->e[i].cert != NULL && strcmp(o->e[i].fp, fp) == 0) {
            *found = 1;
            return &o->e[i];
        }
        if (o->e[i].cert == NULL || (lru->cert != NULL && o->e[i].used < lru->used))
            lru = &o->e[i];
    }
    *found = 0;
    return lru;
}

static void store(struct kms_ocsp *o, const char *fp, X509 *cert, X509 *issuer, enum kms_ocsp_status st, time_t until)
{
    pthread_mutex_lock(&o->mu);
    int found = 0;
    struct entry *e = slot(o, fp, &found);
    if (found && e->st != st)
        __atomic_add_fetch(&o->epoch, 1, __ATOMIC_RELEASE);
    if (!found) {
        X509_free(e->cert);
        X509_free(e->issuer);
        (void)snprintf(e->fp, sizeof(e->fp), "%s", fp);
        e->cert = X509_dup(cert);
        e->issuer = issuer != NULL ? X509_dup(issuer) : NULL;
    }
    e->st = st;
    e->next_check = until;
    e->used = time(NULL);
    pthread_mutex_unlock(&o->mu);
}

enum kms_ocsp_status kms_ocsp_check(struct kms_ocsp *o, X509 *cert, X509 *issuer, const char *fp, char *why,
                                    size_t cap)
{
    why[0] = '\0';
    time_t now = time(NULL);
    pthread_mutex_lock(&o->mu);
    int found = 0;
    struct entry *e = slot(o, fp, &found);
    if (found && now < e->next_check) {
        e->used = now;
        enum kms_ocsp_status st = e->st;
        pthread_mutex_unlock(&o->mu);
        if (st == KMS_OCSP_UNKNOWN)
            (void)snprintf(why, cap, "the responder could not say (asked less than %d s ago)",
                           o->refresh_s < RETRY_UNKNOWN_S ? (int)o->refresh_s : RETRY_UNKNOWN_S);
        return st;
    }
    pthread_mutex_unlock(&o->mu);
    time_t until;
    enum kms_ocsp_status st = ask(o, cert, issuer, &until, why, cap);
    store(o, fp, cert, issuer, st, until);
    return st;
}

enum kms_ocsp_status kms_ocsp_cached(struct kms_ocsp *o, const char *fp)
{
    pthread_mutex_lock(&o->mu);
    int found = 0;
    const struct entry *e = slot(o, fp, &found);
    enum kms_ocsp_status st = found ? e->st : KMS_OCSP_GOOD;
    pthread_mutex_unlock(&o->mu);
    return st;
}

unsigned long kms_ocsp_epoch(const struct kms_ocsp *o)
{
    return __atomic_load_n(&o->epoch, __ATOMIC_ACQUIRE);
}

/* Asks again for every answer past its time, so that a kept-alive
 * connection learns of a revocation within the refresh interval. */
static void *refresh_main(void *arg)
{
    struct kms_ocsp *o = arg;
    pthread_mutex_lock(&o->mu);
    while (!o->stop) {
        struct timespec until;
        clock_gettime(CLOCK_REALTIME, &until);
        until.tv_sec += 1;
        (void)pthread_cond_timedwait(&o->wake, &o->mu, &until);
        time_t now = time(NULL);
        for (size_t i = 0; i < ENTRIES && !o->stop; i++) {
            struct entry *e = &o->e[i];
            if (e->cert == NULL || now < e->next_check)
                continue;
            if (now - e->used > 3600) { /* unused for an hour: forget it */
                X509_free(e->cert);
                X509_free(e->issuer);
                memset(e, 0, sizeof(*e));
                continue;
            }
            X509 *cert = X509_dup(e->cert), *issuer = e->issuer ? X509_dup(e->issuer) : NULL;
            char fp[65];
            memcpy(fp, e->fp, sizeof(fp));
            time_t used = e->used;
            pthread_mutex_unlock(&o->mu);
            char why[512];
            time_t next;
            enum kms_ocsp_status st = ask(o, cert, issuer, &next, why, sizeof(why));
            if (st == KMS_OCSP_REVOKED)
                kms_log(KMS_LOG_WARN, "auth.ocsp_revoked", NULL, "fingerprint", fp, "msg",
                        "a certificate in use was found revoked: its connections are refused on their next request",
                        NULL);
            store(o, fp, cert, issuer, st, next);
            X509_free(cert);
            X509_free(issuer);
            pthread_mutex_lock(&o->mu);
            if (strcmp(e->fp, fp) == 0)
                e->used = used; /* why: a refresh is not a use */
        }
    }
    pthread_mutex_unlock(&o->mu);
    return NULL;
}

kms_rc kms_ocsp_new(enum kms_ocsp_mode mode, const char *url, unsigned timeout_ms, unsigned refresh_s,
                    struct kms_ocsp **out)
{
    *out = NULL;
    struct kms_ocsp *o = calloc(1, sizeof(*o));
    if (o == NULL)
        return KMS_ERR_NO_MEMORY;
    o->mode = mode;
    (void)snprintf(o->url, sizeof(o->url), "%s", url ? url : "");
    o->timeout_ms = timeout_ms > 0 ? timeout_ms : 2000;
    o->refresh_s = refresh_s > 0 ? refresh_s : 300;
    pthread_mutex_init(&o->mu, NULL);
    pthread_cond_init(&o->wake, NULL);
    if (kms_http_init() != 0 || pthread_create(&o->thread, NULL, refresh_main, o) != 0) {
        pthread_cond_destroy(&o->wake);
        pthread_mutex_destroy(&o->mu);
        free(o);
        return kms_fail(KMS_ERR_NO_MEMORY, "cannot start the OCSP refresher");
    }
    o->started = 1;
    *out = o;
    return KMS_OK;
}

void kms_ocsp_free(struct kms_ocsp **po)
{
    if (po == NULL || *po == NULL)
        return;
    struct kms_ocsp *o = *po;
    pthread_mutex_lock(&o->mu);
    o->stop = 1;
    pthread_cond_signal(&o->wake);
    pthread_mutex_unlock(&o->mu);
    if (o->started)
        pthread_join(o->thread, NULL);
    for (size_t i = 0; i < ENTRIES; i++) {
        X509_free(o->e[i].cert);
        X509_free(o->e[i].issuer);
    }
    pthread_cond_destroy(&o->wake);
    pthread_mutex_destroy(&o->mu);
    free(o);
    *po = NULL;
}
