#include "hsm/kmip/kmip_client.h"

#include <errno.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "common/buf.h"
#include "common/clock.h"
#include "common/log.h"
#include "common/netconn.h"

#define ENDPOINT_MAX 300
#define PROBE_DEFAULT_MS 2000

struct conn {
    struct kms_netconn *net;
    uint64_t gen;      /* the identity generation it was made under */
    struct conn *next; /* in the idle list */
};

struct kms_kmip_client {
    char *host;
    uint16_t port;
    char endpoint[ENDPOINT_MAX];
    unsigned pool_size, connect_ms, io_ms, pool_wait_ms, backoff_min_ms, backoff_max_ms;

    pthread_mutex_t mu; /* everything below */
    pthread_cond_t cv;  /* a connection was released or a slot freed */
    SSL_CTX *ctx;       /* the current identity; SSL_new takes a reference under mu */
    uint64_t gen;       /* bumped by every kms_kmip_client_set_identity */
    struct conn *idle;
    unsigned live;           /* connections that exist or are being opened */
    uint64_t down_until;     /* monotonic ms: no connect attempt before this */
    unsigned backoff_ms;     /* 0 while the server is reachable */
    char down_reason[256];
    struct kms_kmip_client_stats stats;

    pthread_mutex_t neg_mu; /* serialises negotiation */
    int negotiated;         /* read under mu */
    struct kms_kmip_version version;
};

static const struct kms_kmip_version v14 = {1, 4};

/* ---- error details ----------------------------------------------------- */

/* Re-records the current detail with the endpoint (and what failed, when
 * not NULL) in front. */
static kms_rc at_endpoint(const struct kms_kmip_client *c, kms_rc rc, const char *what)
{
    char why[400];
    snprintf(why, sizeof(why), "%s", kms_error_detail());
    return kms_fail(rc, "KMIP server %s: %s%s%s", c->endpoint, what ? what : "", what ? ": " : "", why);
}

/* ---- connections ------------------------------------------------------- */

static void conn_close(struct conn *k)
{
    if (k == NULL)
        return;
    kms_netconn_free(&k->net);
    free(k);
}

static kms_rc conn_open(struct kms_kmip_client *c, uint64_t deadline, struct conn **out)
{
    *out = NULL;
    struct conn *k = calloc(1, sizeof(*k));
    if (k == NULL)
        return kms_fail(KMS_ERR_NO_MEMORY, "KMIP connection");
    /* why: kms_kmip_client_set_identity may swap c->ctx meanwhile; the
     * reference keeps this one alive through SSL_new */
    pthread_mutex_lock(&c->mu);
    SSL_CTX *ctx = c->ctx;
    k->gen = c->gen;
    int ref_ok = SSL_CTX_up_ref(ctx) == 1;
    pthread_mutex_unlock(&c->mu);
    if (!ref_ok) {
        free(k);
        return kms_fail(KMS_ERR_CRYPTO, "KMIP client TLS context reference");
    }
    kms_rc rc = kms_netconn_open(c->host, c->port, ctx, deadline, &k->net);
    SSL_CTX_free(ctx); /* the SSL holds its own reference */
    if (rc != KMS_OK) {
        conn_close(k);
        return rc;
    }
    *out = k;
    return KMS_OK;
}

/* ---- the pool ---------------------------------------------------------- */

/* Takes an idle connection, or opens one (*fresh = 1). force_new skips the
 * idle ones (closing one if the pool is full). */
static kms_rc acquire(struct kms_kmip_client *c, uint64_t deadline, int force_new, struct conn **out, int *fresh)
{
    *out = NULL;
    *fresh = 0;
    uint64_t wait_until = kms_now_ms() + c->pool_wait_ms;
    if (wait_until > deadline)
        wait_until = deadline;
    pthread_mutex_lock(&c->mu);
    for (;;) {
        if (c->idle != NULL && (!force_new || c->live >= c->pool_size)) {
            struct conn *k = c->idle;
            c->idle = k->next;
            k->next = NULL;
            if (k->gen != c->gen) {
                /* made under an identity that has been replaced */
                c->live--;
                c->stats.retired++;
                pthread_mutex_unlock(&c->mu);
                conn_close(k);
                pthread_mutex_lock(&c->mu);
                continue;
            }
            pthread_mutex_unlock(&c->mu);
            if (!force_new && kms_netconn_idle_usable(k->net)) {
                *out = k;
                return KMS_OK;
            }
            conn_close(k);
            pthread_mutex_lock(&c->mu);
            c->live--;
            if (!force_new)
                c->stats.dropped++;
            continue;
        }
        if (c->live < c->pool_size) {
            uint64_t now = kms_now_ms();
            if (now < c->down_until) {
                unsigned left = (unsigned)(c->down_until - now);
                kms_fail(KMS_ERR_BACKEND_UNAVAILABLE, "KMIP server %s: unreachable (%s); next attempt in %u ms",
                         c->endpoint, c->down_reason, left);
                pthread_mutex_unlock(&c->mu);
                return KMS_ERR_BACKEND_UNAVAILABLE;
            }
            c->live++;
            pthread_mutex_unlock(&c->mu);
            uint64_t conn_deadline = now + c->connect_ms;
            struct conn *k = NULL;
            kms_rc rc = conn_open(c, conn_deadline < deadline ? conn_deadline : deadline, &k);
            pthread_mutex_lock(&c->mu);
            if (rc != KMS_OK) {
                c->live--;
                c->stats.connect_failures++;
                unsigned was = c->backoff_ms;
                c->backoff_ms = was == 0 ? c->backoff_min_ms
                                         : (was > c->backoff_max_ms / 2 ? c->backoff_max_ms : was * 2);
                c->down_until = kms_now_ms() + c->backoff_ms;
                snprintf(c->down_reason, sizeof(c->down_reason), "%s", kms_error_detail());
                pthread_cond_broadcast(&c->cv);
                pthread_mutex_unlock(&c->mu);
                if (was == 0)
                    kms_log(KMS_LOG_WARN, "kmip_unreachable", NULL, "endpoint", c->endpoint, "detail",
                            kms_error_detail(), NULL);
                return at_endpoint(c, rc, NULL);
            }
            int recovered = c->backoff_ms != 0;
            c->backoff_ms = 0;
            c->down_until = 0;
            c->stats.connects++;
            pthread_mutex_unlock(&c->mu);
            if (recovered)
                kms_log(KMS_LOG_INFO, "kmip_reconnected", NULL, "endpoint", c->endpoint, NULL);
            *out = k;
            *fresh = 1;
            return KMS_OK;
        }
        struct timespec ts;
        ts.tv_sec = (time_t)(wait_until / 1000u);
        ts.tv_nsec = (long)(wait_until % 1000u) * 1000000L;
        if (kms_now_ms() >= wait_until ||
            (pthread_cond_timedwait(&c->cv, &c->mu, &ts) == ETIMEDOUT && kms_now_ms() >= wait_until)) {
            pthread_mutex_unlock(&c->mu);
            return kms_fail(KMS_ERR_BACKEND_TIMEOUT, "KMIP server %s: no free connection within %u ms (pool of %u)",
                            c->endpoint, c->pool_wait_ms, c->pool_size);
        }
    }
}

static void release(struct kms_kmip_client *c, struct conn *k, int healthy)
{
    if (!healthy)
        conn_close(k);
    pthread_mutex_lock(&c->mu);
    int stale = healthy && k->gen != c->gen;
    if (healthy && !stale) {
        k->next = c->idle;
        c->idle = k;
    } else {
        c->live--;
        if (stale)
            c->stats.retired++;
        else
            c->stats.dropped++;
    }
    pthread_cond_signal(&c->cv);
    pthread_mutex_unlock(&c->mu);
    if (stale)
        conn_close(k); /* why: finished its request under the old identity; not back to the pool */
}

/* Sends req and reads one whole message into resp (reset first). */
static kms_rc exchange(struct kms_kmip_client *c, struct conn *k, const struct kms_buf *req, struct kms_buf *resp,
                       uint64_t deadline, int *got_any)
{
    uint8_t hdr[KMS_TTLV_HEADER_LEN], *rest;
    size_t total = 0;
    *got_any = 0;
    kms_buf_reset(resp);
    kms_rc rc = kms_netconn_write(k->net, req->data, req->len, deadline);
    if (rc == KMS_OK)
        rc = kms_netconn_read_full(k->net, hdr, sizeof(hdr), deadline, got_any);
    if (rc == KMS_OK) {
        if (kms_ttlv_frame_len(hdr, resp->max, &total) != KMS_OK)
            return at_endpoint(c, KMS_ERR_BACKEND, "unusable answer");
        if (kms_buf_append(resp, hdr, sizeof(hdr)) != KMS_OK ||
            kms_buf_extend(resp, total - sizeof(hdr), &rest) != KMS_OK)
            return kms_fail(KMS_ERR_NO_MEMORY, "KMIP server %s: answer of %zu bytes", c->endpoint, total);
        rc = kms_netconn_read_full(k->net, rest, total - sizeof(hdr), deadline, got_any);
    }
    if (rc == KMS_ERR_BACKEND_TIMEOUT)
        return kms_fail(rc, "KMIP server %s: no answer within %u ms", c->endpoint, c->io_ms);
    return rc == KMS_OK ? KMS_OK : at_endpoint(c, rc, "connection broken");
}

/* One request/answer. idempotent: may be sent twice (once more after a
 * reused connection proves dead before any answer byte arrived). */
static kms_rc roundtrip(struct kms_kmip_client *c, const struct kms_buf *req, struct kms_buf *resp, int idempotent,
                        unsigned timeout_ms)
{
    uint64_t deadline = kms_now_ms() + timeout_ms;
    for (int attempt = 0;; attempt++) {
        struct conn *k = NULL;
        int fresh = 0, got_any = 0;
        KMS_GUARD(acquire(c, deadline, attempt > 0, &k, &fresh));
        pthread_mutex_lock(&c->mu);
        c->stats.requests++;
        pthread_mutex_unlock(&c->mu);
        kms_rc rc = exchange(c, k, req, resp, deadline, &got_any);
        release(c, k, rc == KMS_OK);
        if (rc == KMS_OK)
            return KMS_OK;
        /* why: the same bytes again (for Encrypt the same nonce, plaintext
         * and AAD), so even if the first copy was processed the server
         * computes the same ciphertext: no GCM nonce reuse */
        if (rc == KMS_ERR_BACKEND_UNAVAILABLE && !fresh && !got_any && idempotent && attempt == 0) {
            pthread_mutex_lock(&c->mu);
            c->stats.retries++;
            pthread_mutex_unlock(&c->mu);
            continue;
        }
        return rc;
    }
}

/* ---- calls ------------------------------------------------------------- */

struct call {
    struct kms_buf req;
    struct kms_buf resp;
    struct kms_kmip_response r;
    const struct kms_ttlv *payload;
};

static void call_init(struct call *k)
{
    kms_buf_init(&k->req, KMS_TTLV_MAX_MESSAGE);
    kms_buf_init(&k->resp, KMS_TTLV_MAX_MESSAGE);
    memset(&k->r, 0, sizeof(k->r));
    k->payload = NULL;
}

/* Wipes both messages (Encrypt requests and Decrypt answers hold key material). */
static void call_done(struct call *k)
{
    kms_kmip_response_clear(&k->r);
    kms_buf_free(&k->req);
    kms_buf_free(&k->resp);
}

/* Sends k->req, parses the answer to op into k->r / k->payload. */
static kms_rc call_run(struct kms_kmip_client *c, struct call *k, uint32_t op, int idempotent, unsigned timeout_ms)
{
    KMS_GUARD(roundtrip(c, &k->req, &k->resp, idempotent, timeout_ms ? timeout_ms : c->io_ms));
    kms_rc rc = kms_kmip_response_parse(k->resp.data, k->resp.len, &k->r);
    if (rc == KMS_OK)
        rc = kms_kmip_response_expect(&k->r, op, &k->payload);
    return rc == KMS_OK ? KMS_OK : at_endpoint(c, rc, NULL);
}

/* The version list with header version hv (empty offer: all). */
static kms_rc discover(struct kms_kmip_client *c, struct kms_kmip_version hv, const struct kms_kmip_version *offer,
                       size_t n_offer, struct kms_kmip_version *out, size_t cap, size_t *n, unsigned timeout_ms)
{
    struct call k;
    call_init(&k);
    kms_rc rc = kms_kmip_req_discover_versions(&k.req, hv, offer, n_offer);
    if (rc == KMS_OK)
        rc = call_run(c, &k, KMS_KMIP_OP_DISCOVER_VERSIONS, 1, timeout_ms);
    if (rc == KMS_OK && kms_kmip_parse_versions(k.payload, out, cap, n) != KMS_OK)
        rc = at_endpoint(c, KMS_ERR_BACKEND, NULL);
    call_done(&k);
    return rc;
}

static int item_reason(const struct call *k, uint32_t reason)
{
    return k->r.n_items == 1 && k->r.items[0].has_reason && k->r.items[0].reason == reason;
}

/* Negotiates once (KMIP 1.4 §4.26). The DiscoverVersions request itself is
 * sent as 1.4; a server that refuses a 1.4 header is asked again as 1.2 and
 * 1.1, so that the refusal can name what it speaks. */
static kms_rc negotiate(struct kms_kmip_client *c, unsigned timeout_ms)
{
    static const struct kms_kmip_version headers[] = {{1, 4}, {1, 2}, {1, 1}};
    pthread_mutex_lock(&c->neg_mu);
    pthread_mutex_lock(&c->mu);
    int done = c->negotiated;
    pthread_mutex_unlock(&c->mu);
    kms_rc rc = KMS_OK;
    struct kms_kmip_version got[16];
    size_t n = 0;
    for (size_t i = 0; !done && i < KMS_ARRAY_LEN(headers); i++) {
        struct call k;
        call_init(&k);
        rc = kms_kmip_req_discover_versions(&k.req, headers[i], NULL, 0);
        if (rc == KMS_OK)
            rc = call_run(c, &k, KMS_KMIP_OP_DISCOVER_VERSIONS, 1, timeout_ms);
        if (rc == KMS_OK && kms_kmip_parse_versions(k.payload, got, KMS_ARRAY_LEN(got), &n) != KMS_OK)
            rc = at_endpoint(c, KMS_ERR_BACKEND, NULL);
        int retry_lower = rc == KMS_ERR_BACKEND && (item_reason(&k, KMS_KMIP_REASON_INVALID_MESSAGE) ||
                                                     item_reason(&k, KMS_KMIP_REASON_UNSUPPORTED_PROTOCOL_VERSION) ||
                                                     item_reason(&k, KMS_KMIP_REASON_OPERATION_NOT_SUPPORTED));
        call_done(&k);
        if (rc == KMS_OK || !retry_lower)
            break;
    }
    if (!done && rc == KMS_OK) {
        int has14 = 0;
        char list[128] = "";
        size_t used = 0;
        for (size_t i = 0; i < n; i++) {
            if (got[i].major == v14.major && got[i].minor == v14.minor)
                has14 = 1;
            int w = snprintf(list + used, sizeof(list) - used, "%s%d.%d", i ? ", " : "", got[i].major, got[i].minor);
            if (w > 0 && (size_t)w < sizeof(list) - used)
                used += (size_t)w;
        }
        if (!has14) {
            rc = kms_fail(KMS_ERR_BACKEND, "KMIP server at %s supports only %s; AES-GCM needs KMIP 1.4", c->endpoint,
                          n ? list : "no protocol version it would name");
        } else {
            pthread_mutex_lock(&c->mu);
            c->version = v14;
            c->negotiated = 1;
            pthread_mutex_unlock(&c->mu);
            kms_log(KMS_LOG_INFO, "kmip_negotiated", NULL, "endpoint", c->endpoint, "version", "1.4",
                    "server_versions", list, NULL);
        }
    }
    pthread_mutex_unlock(&c->neg_mu);
    return rc;
}

static kms_rc ensure_version(struct kms_kmip_client *c, struct kms_kmip_version *v)
{
    pthread_mutex_lock(&c->mu);
    int done = c->negotiated;
    *v = c->version;
    pthread_mutex_unlock(&c->mu);
    if (done)
        return KMS_OK;
    KMS_GUARD(negotiate(c, c->io_ms));
    pthread_mutex_lock(&c->mu);
    *v = c->version;
    pthread_mutex_unlock(&c->mu);
    return KMS_OK;
}

/* ---- public ------------------------------------------------------------ */

/* A TLS client context presenting cert/key (+ chain) and trusting trust for
 * the server; *out is the caller's (SSL_CTX_free). Shared by open and
 * set_identity so both identities are configured exactly alike. */
static kms_rc make_ctx(X509 *cert, EVP_PKEY *key, STACK_OF(X509) *chain, X509_STORE *trust, SSL_CTX **out)
{
    *out = NULL;
    if (cert == NULL || key == NULL)
        return kms_fail(KMS_ERR_CONFIG, "KMIP: no client certificate and key");
    if (trust == NULL)
        return kms_fail(KMS_ERR_CONFIG, "KMIP: no trusted CA for the server certificate");
    if (X509_check_private_key(cert, key) != 1) {
        ERR_clear_error();
        return kms_fail(KMS_ERR_CONFIG, "KMIP client key does not match its certificate");
    }
    SSL_CTX *ctx = NULL;
    KMS_GUARD(kms_netconn_tls_ctx(&ctx));
    kms_rc rc = KMS_ERR_CRYPTO;
    SSL_CTX_set1_cert_store(ctx, trust);
    /* why: the operator put this CA in the keystore to sign the HSM's
     * certificate; an intermediate trusted there is an anchor too */
    if (X509_VERIFY_PARAM_set_flags(SSL_CTX_get0_param(ctx), X509_V_FLAG_PARTIAL_CHAIN) != 1)
        goto fail;
    if (SSL_CTX_use_certificate(ctx, cert) != 1 || SSL_CTX_use_PrivateKey(ctx, key) != 1) {
        rc = KMS_ERR_CONFIG;
        goto fail;
    }
    if (chain != NULL && SSL_CTX_set1_chain(ctx, chain) != 1)
        goto fail;
    *out = ctx;
    return KMS_OK;
fail:
    SSL_CTX_free(ctx);
    kms_fail(rc, rc == KMS_ERR_CONFIG ? "KMIP client certificate or key not usable" : "KMIP client TLS context");
    kms_error_add_openssl();
    return rc;
}

static unsigned or_default(unsigned v, unsigned d) { return v != 0 ? v : d; }

kms_rc kms_kmip_client_open(const struct kms_kmip_client_options *o, struct kms_kmip_client **out)
{
    *out = NULL;
    if (o == NULL || o->host == NULL || o->host[0] == '\0' || strlen(o->host) > 253)
        return kms_fail(KMS_ERR_CONFIG, "KMIP: no server host name");
    if (o->cert == NULL || o->key == NULL)
        return kms_fail(KMS_ERR_CONFIG, "KMIP: no client certificate and key");
    if (o->trust == NULL)
        return kms_fail(KMS_ERR_CONFIG, "KMIP: no trusted CA for the server certificate");
    if (o->pool_size > KMS_KMIP_MAX_POOL)
        return kms_fail(KMS_ERR_CONFIG, "KMIP: pool of %u connections (at most %d)", o->pool_size, KMS_KMIP_MAX_POOL);
    struct kms_kmip_client *c = calloc(1, sizeof(*c));
    if (c == NULL)
        return kms_fail(KMS_ERR_NO_MEMORY, "KMIP client");
    c->host = strdup(o->host);
    c->port = o->port ? o->port : 5696;
    c->pool_size = or_default(o->pool_size, KMS_KMIP_DEFAULT_POOL);
    c->connect_ms = or_default(o->connect_timeout_ms, KMS_KMIP_DEFAULT_CONNECT_MS);
    c->io_ms = or_default(o->io_timeout_ms, KMS_KMIP_DEFAULT_IO_MS);
    c->pool_wait_ms = or_default(o->pool_wait_ms, c->io_ms);
    c->backoff_min_ms = or_default(o->backoff_min_ms, KMS_KMIP_DEFAULT_BACKOFF_MIN_MS);
    c->backoff_max_ms = or_default(o->backoff_max_ms, KMS_KMIP_DEFAULT_BACKOFF_MAX_MS);
    if (c->backoff_max_ms < c->backoff_min_ms)
        c->backoff_max_ms = c->backoff_min_ms;
    pthread_condattr_t ca;
    int sync_ok = pthread_condattr_init(&ca) == 0;
    if (sync_ok) {
        sync_ok = pthread_condattr_setclock(&ca, CLOCK_MONOTONIC) == 0 && pthread_cond_init(&c->cv, &ca) == 0;
        pthread_condattr_destroy(&ca);
    }
    if (c->host == NULL || !sync_ok || pthread_mutex_init(&c->mu, NULL) != 0 ||
        pthread_mutex_init(&c->neg_mu, NULL) != 0) {
        free(c->host);
        free(c);
        return kms_fail(KMS_ERR_NO_MEMORY, "KMIP client");
    }
    snprintf(c->endpoint, sizeof(c->endpoint), strchr(c->host, ':') ? "[%s]:%u" : "%s:%u", c->host,
             (unsigned)c->port);
    kms_rc rc = make_ctx(o->cert, o->key, o->chain, o->trust, &c->ctx);
    if (rc == KMS_OK && !o->defer_connect)
        rc = negotiate(c, c->io_ms);
    if (rc != KMS_OK) {
        kms_kmip_client_free(&c);
        return rc;
    }
    *out = c;
    return KMS_OK;
}

void kms_kmip_client_free(struct kms_kmip_client **pc)
{
    if (pc == NULL || *pc == NULL)
        return;
    struct kms_kmip_client *c = *pc;
    while (c->idle != NULL) {
        struct conn *k = c->idle;
        c->idle = k->next;
        conn_close(k);
    }
    SSL_CTX_free(c->ctx);
    pthread_cond_destroy(&c->cv);
    pthread_mutex_destroy(&c->mu);
    pthread_mutex_destroy(&c->neg_mu);
    free(c->host);
    free(c);
    *pc = NULL;
}

const char *kms_kmip_client_endpoint(const struct kms_kmip_client *c) { return c->endpoint; }

kms_rc kms_kmip_client_set_identity(struct kms_kmip_client *c, X509 *cert, EVP_PKEY *key, STACK_OF(X509) *chain,
                                    X509_STORE *trust)
{
    SSL_CTX *ctx = NULL;
    KMS_GUARD(make_ctx(cert, key, chain, trust, &ctx));
    pthread_mutex_lock(&c->mu);
    SSL_CTX *old = c->ctx;
    c->ctx = ctx;
    c->gen++;
    /* why: idle connections presented the old certificate; close them now
     * rather than at their next use (in-flight ones close on release) */
    struct conn *idle = c->idle;
    c->idle = NULL;
    for (struct conn *k = idle; k != NULL; k = k->next) {
        c->live--;
        c->stats.retired++;
    }
    pthread_cond_broadcast(&c->cv);
    pthread_mutex_unlock(&c->mu);
    while (idle != NULL) {
        struct conn *k = idle;
        idle = k->next;
        conn_close(k);
    }
    SSL_CTX_free(old); /* connections made under it hold their own references */
    return KMS_OK;
}

X509 *kms_kmip_client_get1_cert(struct kms_kmip_client *c)
{
    pthread_mutex_lock(&c->mu);
    X509 *x = SSL_CTX_get0_certificate(c->ctx);
    if (x != NULL && X509_up_ref(x) != 1)
        x = NULL;
    pthread_mutex_unlock(&c->mu);
    return x;
}

kms_rc kms_kmip_client_version(struct kms_kmip_client *c, struct kms_kmip_version *out)
{
    return ensure_version(c, out);
}

kms_rc kms_kmip_client_probe(struct kms_kmip_client *c, unsigned timeout_ms)
{
    struct kms_kmip_version v, got[4];
    size_t n = 0;
    unsigned t = timeout_ms ? timeout_ms : PROBE_DEFAULT_MS;
    pthread_mutex_lock(&c->mu);
    int done = c->negotiated;
    v = c->version;
    pthread_mutex_unlock(&c->mu);
    if (!done)
        return negotiate(c, t);
    KMS_GUARD(discover(c, v, &v, 1, got, KMS_ARRAY_LEN(got), &n, t));
    if (n != 1 || got[0].major != v.major || got[0].minor != v.minor)
        return kms_fail(KMS_ERR_BACKEND, "KMIP server %s no longer offers KMIP %d.%d", c->endpoint, v.major, v.minor);
    return KMS_OK;
}

void kms_kmip_client_stats(struct kms_kmip_client *c, struct kms_kmip_client_stats *out)
{
    pthread_mutex_lock(&c->mu);
    *out = c->stats;
    out->open = c->live;
    pthread_mutex_unlock(&c->mu);
}

kms_rc kms_kmip_discover(struct kms_kmip_client *c, struct kms_kmip_version *out, size_t cap, size_t *n)
{
    struct kms_kmip_version v;
    *n = 0;
    KMS_GUARD(ensure_version(c, &v));
    return discover(c, v, NULL, 0, out, cap, n, c->io_ms);
}

kms_rc kms_kmip_query(struct kms_kmip_client *c, struct kms_kmip_server_info *out)
{
    static const uint32_t functions[] = {KMS_KMIP_QUERY_OPERATIONS, KMS_KMIP_QUERY_OBJECTS,
                                         KMS_KMIP_QUERY_SERVER_INFORMATION};
    struct kms_kmip_version v;
    struct call k;
    memset(out, 0, sizeof(*out));
    KMS_GUARD(ensure_version(c, &v));
    call_init(&k);
    kms_rc rc = kms_kmip_req_query(&k.req, v, functions, KMS_ARRAY_LEN(functions));
    if (rc == KMS_OK)
        rc = call_run(c, &k, KMS_KMIP_OP_QUERY, 1, 0);
    if (rc == KMS_OK && kms_kmip_parse_query(k.payload, out) != KMS_OK)
        rc = at_endpoint(c, KMS_ERR_BACKEND, NULL);
    call_done(&k);
    return rc;
}

/* Sends a request whose answer is just a Unique Identifier. */
static kms_rc uid_call(struct kms_kmip_client *c, struct call *k, uint32_t op, int idempotent,
                       char uid[KMS_KMIP_UID_MAX + 1])
{
    KMS_GUARD(call_run(c, k, op, idempotent, 0));
    if (kms_kmip_parse_uid(k->payload, uid) != KMS_OK)
        return at_endpoint(c, KMS_ERR_BACKEND, NULL);
    return KMS_OK;
}

kms_rc kms_kmip_activate(struct kms_kmip_client *c, const char *uid)
{
    struct kms_kmip_version v;
    char got[KMS_KMIP_UID_MAX + 1];
    struct call k;
    KMS_GUARD(ensure_version(c, &v));
    call_init(&k);
    kms_rc rc = kms_kmip_req_activate(&k.req, v, uid);
    if (rc == KMS_OK)
        rc = uid_call(c, &k, KMS_KMIP_OP_ACTIVATE, 0, got);
    if (rc == KMS_OK && strcmp(got, uid) != 0)
        rc = kms_fail(KMS_ERR_BACKEND, "KMIP server %s: Activate of %s answered for %s", c->endpoint, uid, got);
    call_done(&k);
    return rc;
}

kms_rc kms_kmip_create_key(struct kms_kmip_client *c, const char *name, char uid[KMS_KMIP_UID_MAX + 1])
{
    struct kms_kmip_version v;
    struct call k;
    uid[0] = '\0';
    KMS_GUARD(ensure_version(c, &v));
    call_init(&k);
    kms_rc rc = kms_kmip_req_create_aes256(&k.req, v, name);
    if (rc == KMS_OK)
        rc = uid_call(c, &k, KMS_KMIP_OP_CREATE, 0, uid);
    call_done(&k);
    if (rc != KMS_OK) {
        uid[0] = '\0';
        return rc;
    }
    rc = kms_kmip_activate(c, uid);
    if (rc != KMS_OK) {
        char why[400];
        snprintf(why, sizeof(why), "%s", kms_error_detail());
        kms_fail(rc, "key %s was created (pre-active) but not activated: %s", uid, why);
    }
    return rc;
}

kms_rc kms_kmip_locate(struct kms_kmip_client *c, const char *name, char (*uids)[KMS_KMIP_UID_MAX + 1], size_t cap,
                       size_t *found)
{
    struct kms_kmip_version v;
    struct call k;
    *found = 0;
    KMS_GUARD(ensure_version(c, &v));
    call_init(&k);
    kms_rc rc = kms_kmip_req_locate_name(&k.req, v, name);
    if (rc == KMS_OK)
        rc = call_run(c, &k, KMS_KMIP_OP_LOCATE, 1, 0);
    if (rc == KMS_OK && kms_kmip_parse_locate(k.payload, uids, cap, found) != KMS_OK)
        rc = at_endpoint(c, KMS_ERR_BACKEND, NULL);
    call_done(&k);
    return rc;
}

static kms_rc get_attributes(struct kms_kmip_client *c, const char *uid, const char *const *names, size_t n,
                             struct kms_kmip_attributes *out)
{
    struct kms_kmip_version v;
    struct call k;
    memset(out, 0, sizeof(*out));
    KMS_GUARD(ensure_version(c, &v));
    call_init(&k);
    kms_rc rc = kms_kmip_req_get_attributes(&k.req, v, uid, names, n);
    if (rc == KMS_OK)
        rc = call_run(c, &k, KMS_KMIP_OP_GET_ATTRIBUTES, 1, 0);
    if (rc == KMS_OK && kms_kmip_parse_attributes(k.payload, out) != KMS_OK)
        rc = at_endpoint(c, KMS_ERR_BACKEND, NULL);
    if (rc == KMS_OK && out->uid[0] != '\0' && strcmp(out->uid, uid) != 0)
        rc = kms_fail(KMS_ERR_BACKEND, "KMIP server %s: Get Attributes of %s answered for %s", c->endpoint, uid,
                      out->uid);
    call_done(&k);
    return rc;
}

kms_rc kms_kmip_get_attributes(struct kms_kmip_client *c, const char *uid, struct kms_kmip_attributes *out)
{
    return get_attributes(c, uid, NULL, 0, out);
}

kms_rc kms_kmip_get_key_state(struct kms_kmip_client *c, const char *uid, struct kms_kmip_attributes *out)
{
    static const char *const names[] = {"State", "Cryptographic Algorithm", "Cryptographic Length"};
    return get_attributes(c, uid, names, KMS_ARRAY_LEN(names), out);
}

kms_rc kms_kmip_encrypt_gcm(struct kms_kmip_client *c, const char *uid, const uint8_t nonce[KMS_KMIP_GCM_NONCE_LEN],
                            const uint8_t *aad, size_t aad_len, const uint8_t *pt, size_t pt_len, uint8_t *ct,
                            uint8_t tag[KMS_KMIP_GCM_TAG_LEN])
{
    struct kms_kmip_version v;
    struct call k;
    const uint8_t *data, *t;
    size_t data_len, t_len;
    KMS_GUARD(ensure_version(c, &v));
    struct kms_kmip_gcm g = {.data = pt, .data_len = pt_len, .nonce = nonce, .nonce_len = KMS_KMIP_GCM_NONCE_LEN,
                             .aad = aad, .aad_len = aad_len, .tag = NULL, .tag_len = 0};
    call_init(&k);
    kms_rc rc = kms_kmip_req_encrypt_gcm(&k.req, v, uid, &g);
    if (rc == KMS_OK)
        rc = call_run(c, &k, KMS_KMIP_OP_ENCRYPT, 1, 0);
    if (rc == KMS_OK && kms_kmip_parse_encrypt(k.payload, &data, &data_len, &t, &t_len) != KMS_OK)
        rc = at_endpoint(c, KMS_ERR_BACKEND, NULL);
    if (rc == KMS_OK && (data_len != pt_len || t_len != KMS_KMIP_GCM_TAG_LEN))
        rc = kms_fail(KMS_ERR_BACKEND,
                      "KMIP server %s: Encrypt of %zu bytes answered %zu bytes and a %zu-byte tag (expected %zu "
                      "and %d: does it speak KMIP 1.4 GCM?)",
                      c->endpoint, pt_len, data_len, t_len, pt_len, KMS_KMIP_GCM_TAG_LEN);
    if (rc == KMS_OK) {
        memcpy(ct, data, data_len);
        memcpy(tag, t, KMS_KMIP_GCM_TAG_LEN);
    }
    call_done(&k);
    return rc;
}

kms_rc kms_kmip_decrypt_gcm(struct kms_kmip_client *c, const char *uid, const uint8_t nonce[KMS_KMIP_GCM_NONCE_LEN],
                            const uint8_t *aad, size_t aad_len, const uint8_t *ct, size_t ct_len,
                            const uint8_t tag[KMS_KMIP_GCM_TAG_LEN], struct kms_secret **pt)
{
    struct kms_kmip_version v;
    struct call k;
    const uint8_t *data;
    size_t data_len;
    *pt = NULL;
    KMS_GUARD(ensure_version(c, &v));
    struct kms_kmip_gcm g = {.data = ct, .data_len = ct_len, .nonce = nonce, .nonce_len = KMS_KMIP_GCM_NONCE_LEN,
                             .aad = aad, .aad_len = aad_len, .tag = tag, .tag_len = KMS_KMIP_GCM_TAG_LEN};
    call_init(&k);
    kms_rc rc = kms_kmip_req_decrypt_gcm(&k.req, v, uid, &g);
    if (rc == KMS_OK)
        rc = call_run(c, &k, KMS_KMIP_OP_DECRYPT, 1, 0);
    if (rc == KMS_OK && kms_kmip_parse_decrypt(k.payload, &data, &data_len) != KMS_OK)
        rc = at_endpoint(c, KMS_ERR_BACKEND, NULL);
    if (rc == KMS_OK && data_len != ct_len)
        rc = kms_fail(KMS_ERR_BACKEND, "KMIP server %s: Decrypt of %zu bytes answered %zu bytes", c->endpoint, ct_len,
                      data_len);
    if (rc == KMS_OK && data_len == 0)
        rc = kms_fail(KMS_ERR_UNWRAP, "KMIP server %s: Decrypt of an empty ciphertext", c->endpoint);
    if (rc == KMS_OK)
        rc = kms_secret_from(data, data_len, pt);
    call_done(&k);
    return rc;
}
