/* Fetching CRLs (kms.auth.crl.url, issue 15): every kms.auth.crl.refresh
 * seconds a thread GETs each URL (or each distribution point the keystore's
 * certificates name, for "cdp"), checks every CRL against the keystore's CAs
 * and, when all of them came and their bytes differ from kms.auth.crl.file,
 * replaces that file atomically. The node's file watcher then reloads it as
 * any CRL change: new identity decisions use it, and kept-alive connections
 * are decided again (a revoked device's is closed within the interval, no
 * restart). A failed fetch changes nothing: the file
 * in force stays, until its nextUpdate passes (kms.auth.crl.stale). */
#include "server/crl_fetch.h"

#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/x509v3.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "common/file.h"
#include "common/log.h"
#include "server/http_client.h"
#include "server/internal.h"
#include "server/metrics.h"

#define URLS_MAX 16
#define CRL_MAX (16u << 20) /* bytes per fetched CRL file */
#define FETCH_TIMEOUT_S 10

struct kms_crl_fetch {
    struct kms_server *server;
    char urls[1024];
    char file[4096];
    unsigned refresh_s;
    pthread_t thread;
    pthread_mutex_t mu;
    pthread_cond_t wake;
    int stop;
};

/* The CRLs of a PEM or DER body, appended to out. */
static int parse(const struct kms_http_body *b, STACK_OF(X509_CRL) *out)
{
    BIO *bio = BIO_new_mem_buf(b->p, (int)b->len);
    if (bio == NULL)
        return -1;
    int n = 0;
    X509_CRL *crl;
    while ((crl = PEM_read_bio_X509_CRL(bio, NULL, NULL, NULL)) != NULL) {
        if (sk_X509_CRL_push(out, crl))
            n++;
        else
            X509_CRL_free(crl);
    }
    ERR_clear_error();
    if (n == 0) {
        const unsigned char *p = b->p;
        crl = d2i_X509_CRL(NULL, &p, (long)b->len);
        if (crl != NULL && sk_X509_CRL_push(out, crl))
            n++;
        else
            X509_CRL_free(crl);
        ERR_clear_error();
    }
    BIO_free(bio);
    return n;
}

static void add_url(char list[URLS_MAX][512], size_t *n, const char *url, size_t len)
{
    if (len == 0 || len >= 512 || *n == URLS_MAX)
        return;
    for (size_t i = 0; i < *n; i++)
        if (strlen(list[i]) == len && strncmp(list[i], url, len) == 0)
            return;
    memcpy(list[*n], url, len);
    list[*n][len] = '\0';
    (*n)++;
}

/* The http(s) distribution points named by cert. */
static void cdp_of(X509 *cert, char list[URLS_MAX][512], size_t *n)
{
    STACK_OF(DIST_POINT) *dps = X509_get_ext_d2i(cert, NID_crl_distribution_points, NULL, NULL);
    for (int i = 0; dps != NULL && i < sk_DIST_POINT_num(dps); i++) {
        DIST_POINT *dp = sk_DIST_POINT_value(dps, i);
        if (dp->distpoint == NULL || dp->distpoint->type != 0)
            continue;
        GENERAL_NAMES *names = dp->distpoint->name.fullname;
        for (int k = 0; k < sk_GENERAL_NAME_num(names); k++) {
            GENERAL_NAME *g = sk_GENERAL_NAME_value(names, k);
            if (g->type != GEN_URI)
                continue;
            const char *u = (const char *)ASN1_STRING_get0_data(g->d.uniformResourceIdentifier);
            size_t len = (size_t)ASN1_STRING_length(g->d.uniformResourceIdentifier);
            if ((len > 7 && strncmp(u, "http://", 7) == 0) || (len > 8 && strncmp(u, "https://", 8) == 0))
                add_url(list, n, u, len);
        }
    }
    sk_DIST_POINT_pop_free(dps, DIST_POINT_free);
}

static void fetch_once(struct kms_crl_fetch *f)
{
    char urls[URLS_MAX][512];
    size_t n = 0;
    struct kms_trust *t = kms_server_trust(f->server);
    for (const char *p = f->urls; *p != '\0';) {
        while (*p == ',' || *p == ' ')
            p++;
        size_t len = strcspn(p, ", ");
        if (len == 3 && strncmp(p, "cdp", 3) == 0) {
            for (size_t i = 0; i < kms_keystore_count(t->ks); i++)
                cdp_of(kms_ks_entry_cert(kms_keystore_entry(t->ks, i)), urls, &n);
        } else {
            add_url(urls, &n, p, len);
        }
        p += len;
    }
    STACK_OF(X509_CRL) *crls = sk_X509_CRL_new_null();
    const char *failed = NULL;
    char why[1024] = "";
    for (size_t i = 0; i < n && failed == NULL && crls != NULL; i++) {
        struct kms_http_body b = {NULL, 0};
        int got = kms_http_fetch(urls[i], NULL, NULL, 0, CRL_MAX, FETCH_TIMEOUT_S * 1000u, &b, why, sizeof(why));
        if (got == 0 && parse(&b, crls) <= 0) {
            got = -1;
            (void)snprintf(why, sizeof(why), "the answer holds no CRL (PEM or DER)");
        }
        free(b.p);
        for (int k = 0; got == 0 && k < sk_X509_CRL_num(crls); k++)
            if (kms_crl_verify(t->ks, sk_X509_CRL_value(crls, k), why, sizeof(why)) != 0)
                got = -1;
        if (got != 0)
            failed = urls[i];
    }
    if (n == 0) {
        failed = "";
        (void)snprintf(why, sizeof(why), "no URL: kms.auth.crl.url names none, and no certificate of the keystore "
                                         "names an http(s) distribution point");
    }
    kms_trust_unref(&t);
    if (crls == NULL || failed != NULL) {
        kms_metrics_crl_fetch(0);
        kms_log(KMS_LOG_WARN, "crl.fetch_failed", NULL, "url", failed ? failed : "", "detail",
                crls == NULL ? "out of memory" : why, "msg", "the CRLs in force stay until their nextUpdate", NULL);
        if (crls != NULL)
            sk_X509_CRL_pop_free(crls, X509_CRL_free);
        return;
    }
    BIO *out = BIO_new(BIO_s_mem());
    for (int k = 0; out != NULL && k < sk_X509_CRL_num(crls); k++)
        (void)PEM_write_bio_X509_CRL(out, sk_X509_CRL_value(crls, k));
    int count = sk_X509_CRL_num(crls);
    sk_X509_CRL_pop_free(crls, X509_CRL_free);
    char *pem = NULL;
    long len = out != NULL ? BIO_get_mem_data(out, &pem) : 0;
    uint8_t *cur = NULL;
    size_t cur_len = 0;
    int absent = 0;
    int same = kms_file_read(f->file, CRL_MAX * URLS_MAX, "the CRL file", &cur, &cur_len, &absent) == KMS_OK &&
               cur != NULL && cur_len == (size_t)len && memcmp(cur, pem, cur_len) == 0;
    free(cur);
    kms_rc rc = KMS_OK;
    if (!same && len > 0)
        rc = kms_file_write_atomic(f->file, (const uint8_t *)pem, (size_t)len, 0644, NULL);
    BIO_free(out);
    kms_metrics_crl_fetch(rc == KMS_OK);
    char cnt[16];
    (void)snprintf(cnt, sizeof(cnt), "%d", count);
    if (rc != KMS_OK)
        kms_log(KMS_LOG_ERROR, "crl.fetch_failed", NULL, "file", f->file, "detail", kms_error_detail(), NULL);
    else if (!same)
        kms_log(KMS_LOG_INFO, "crl.fetched", NULL, "crls", cnt, "file", f->file, "msg",
                "new CRLs written; the file watcher reloads them", NULL);
}

static void *fetch_main(void *arg)
{
    struct kms_crl_fetch *f = arg;
    pthread_mutex_lock(&f->mu);
    while (!f->stop) {
        pthread_mutex_unlock(&f->mu);
        fetch_once(f);
        pthread_mutex_lock(&f->mu);
        struct timespec until;
        clock_gettime(CLOCK_REALTIME, &until);
        until.tv_sec += (time_t)f->refresh_s;
        while (!f->stop && pthread_cond_timedwait(&f->wake, &f->mu, &until) == 0) {
        }
    }
    pthread_mutex_unlock(&f->mu);
    return NULL;
}

kms_rc kms_crl_fetch_start(struct kms_server *s, const char *urls, const char *file, unsigned refresh_s,
                           struct kms_crl_fetch **out)
{
    *out = NULL;
    struct kms_crl_fetch *f = calloc(1, sizeof(*f));
    if (f == NULL)
        return KMS_ERR_NO_MEMORY;
    f->server = s;
    (void)snprintf(f->urls, sizeof(f->urls), "%s", urls);
    (void)snprintf(f->file, sizeof(f->file), "%s", file);
    f->refresh_s = refresh_s > 0 ? refresh_s : 300;
    pthread_mutex_init(&f->mu, NULL);
    pthread_cond_init(&f->wake, NULL);
    if (kms_http_init() != 0 || pthread_create(&f->thread, NULL, fetch_main, f) != 0) {
        pthread_cond_destroy(&f->wake);
        pthread_mutex_destroy(&f->mu);
        free(f);
        return kms_fail(KMS_ERR_NO_MEMORY, "cannot start the CRL fetcher (kms.auth.crl.url)");
    }
    *out = f;
    return KMS_OK;
}

void kms_crl_fetch_stop(struct kms_crl_fetch **pf)
{
    if (pf == NULL || *pf == NULL)
        return;
    struct kms_crl_fetch *f = *pf;
    pthread_mutex_lock(&f->mu);
    f->stop = 1;
    pthread_cond_signal(&f->wake);
    pthread_mutex_unlock(&f->mu);
    pthread_join(f->thread, NULL);
    pthread_cond_destroy(&f->wake);
    pthread_mutex_destroy(&f->mu);
    free(f);
    *pf = NULL;
}
