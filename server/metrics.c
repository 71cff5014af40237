#include "server/metrics.h"

#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "common/log.h"
#include "common/version.h"

static const double buckets[] = {0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5};
#define NBUCKETS (sizeof(buckets) / sizeof(buckets[0]))
static const int statuses[] = {200, 201, 400, 401, 403, 404, 405, 409, 413, 414, 415, 429, 431, 500, 502, 503, 504};
#define NSTATUS (sizeof(statuses) / sizeof(statuses[0]))

struct histogram {
    uint64_t bucket[NBUCKETS];
    uint64_t count;
    uint64_t sum_us;
};

static struct {
    const char *pattern[KMS_METRICS_ROUTES];
    uint64_t by_status[KMS_METRICS_ROUTES][NSTATUS + 1]; /* last: other */
    struct histogram latency[KMS_METRICS_ROUTES];
    uint64_t handshakes[2]; /* full, resumed */
    uint64_t ticket_rotations;
    uint64_t refused[KMS_AUTH_LAST + 1];
    uint64_t closed[KMS_CLOSE_COUNT];
    uint64_t crl_fetch[2]; /* failed, ok */
    uint64_t ks_rejected[KMS_KSGEN_INVALID + 1];
    uint64_t ks_cluster_generation;
} m;

enum { OP_RESOLVE, OP_ENCRYPT, OP_DECRYPT, OP_DESCRIBE, OP_PROBE, NOPS };
static const char *const op_names[NOPS] = {"resolve", "encrypt", "decrypt", "describe", "probe"};
enum { RES_OK, RES_NOT_FOUND, RES_UNWRAP, RES_ERROR, RES_UNAVAILABLE, RES_TIMEOUT, NRES };
static const char *const res_names[NRES] = {"ok", "not_found", "auth_failed", "error", "unavailable", "timeout"};
static struct {
    const char *backend;
    uint64_t calls[NOPS][NRES];
    struct histogram latency[NOPS];
} bm;

static void add(uint64_t *p, uint64_t v) { __atomic_add_fetch(p, v, __ATOMIC_RELAXED); }
static uint64_t get(const uint64_t *p) { return __atomic_load_n(p, __ATOMIC_RELAXED); }

static void observe(struct histogram *h, double seconds)
{
    for (size_t i = 0; i < NBUCKETS; i++)
        if (seconds <= buckets[i]) {
            add(&h->bucket[i], 1);
            break;
        }
    add(&h->count, 1);
    add(&h->sum_us, (uint64_t)(seconds * 1e6));
}

void kms_metrics_request(size_t route, const char *pattern, int status, double seconds)
{
    if (route >= KMS_METRICS_ROUTES)
        route = KMS_METRICS_ROUTES - 1;
    if (m.pattern[route] == NULL)
        __atomic_store_n(&m.pattern[route], pattern, __ATOMIC_RELAXED);
    size_t k = NSTATUS;
    for (size_t i = 0; i < NSTATUS; i++)
        if (statuses[i] == status)
            k = i;
    add(&m.by_status[route][k], 1);
    observe(&m.latency[route], seconds);
}

void kms_metrics_handshake(int resumed) { add(&m.handshakes[resumed ? 1 : 0], 1); }
void kms_metrics_ticket_rotation(void) { add(&m.ticket_rotations, 1); }

void kms_metrics_keystore_rejected(enum kms_ksgen_reject why)
{
    if (why > KMS_KSGEN_OK && why <= KMS_KSGEN_INVALID)
        add(&m.ks_rejected[why], 1);
}

void kms_metrics_keystore_cluster_generation(uint64_t gen)
{
    __atomic_store_n(&m.ks_cluster_generation, gen, __ATOMIC_RELAXED);
}

const char *kms_conn_close_name(enum kms_conn_close why)
{
    static const char *const names[KMS_CLOSE_COUNT] = {"head_timeout",  "limit",         "proxy_untrusted",
                                                       "proxy_invalid", "proxy_timeout", "busy",
                                                       "identity_refused", "rate_limited"};
    return (unsigned)why < KMS_CLOSE_COUNT ? names[why] : "unknown";
}

void kms_metrics_crl_fetch(int ok)
{
    add(&m.crl_fetch[ok ? 1 : 0], 1);
}

void kms_metrics_conn_closed(enum kms_conn_close why)
{
    if ((unsigned)why < KMS_CLOSE_COUNT)
        add(&m.closed[why], 1);
}

/* why a table: one series per client and budget, bounded (aliases come from
 * the keystore, but a keystore may be large); past it, client="other" */
#define RL_SERIES 64
static struct {
    pthread_mutex_t lock;
    size_t n;
    struct {
        char alias[64];
        const char *budget;
        uint64_t count;
    } s[RL_SERIES + 1];
} rl = {.lock = PTHREAD_MUTEX_INITIALIZER};

void kms_metrics_rate_limited(const char *alias, const char *budget)
{
    pthread_mutex_lock(&rl.lock);
    size_t i = 0;
    while (i < rl.n && !(rl.s[i].budget == budget && strcmp(rl.s[i].alias, alias) == 0))
        i++;
    if (i == rl.n) {
        if (rl.n == RL_SERIES) {
            i = RL_SERIES; /* the overflow series */
            (void)snprintf(rl.s[i].alias, sizeof(rl.s[i].alias), "other");
            rl.s[i].budget = "any";
        } else {
            (void)snprintf(rl.s[i].alias, sizeof(rl.s[i].alias), "%s", alias);
            rl.s[i].budget = budget;
            rl.n++;
        }
    }
    rl.s[i].count++;
    pthread_mutex_unlock(&rl.lock);
}

void kms_metrics_refused(enum kms_auth_status why)
{
    if ((unsigned)why <= KMS_AUTH_LAST)
        add(&m.refused[why], 1);
}

/* ---- the metered backend -------------------------------------------------------- */

struct metered {
    struct kms_backend base;
    struct kms_backend *inner;
};

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static kms_rc count(int op, double start, kms_rc rc)
{
    int r = RES_ERROR;
    switch (rc) {
    case KMS_OK: r = RES_OK; break;
    case KMS_ERR_KEY_NOT_FOUND: r = RES_NOT_FOUND; break;
    case KMS_ERR_UNWRAP: r = RES_UNWRAP; break;
    case KMS_ERR_BACKEND_UNAVAILABLE: r = RES_UNAVAILABLE; break;
    case KMS_ERR_BACKEND_TIMEOUT: r = RES_TIMEOUT; break;
    default: break;
    }
    add(&bm.calls[op][r], 1);
    observe(&bm.latency[op], now_s() - start);
    return rc;
}

static struct kms_backend *inner(struct kms_backend *b) { return ((struct metered *)(void *)b)->inner; }

static kms_rc m_resolve(struct kms_backend *b, const char *name, struct kms_master_ref *out)
{
    double t = now_s();
    return count(OP_RESOLVE, t, inner(b)->ops->resolve(inner(b), name, out));
}

static kms_rc m_encrypt(struct kms_backend *b, const struct kms_master_ref *ref, const uint8_t *aad, size_t aad_len,
                        const struct kms_secret *pt, uint8_t *ct, size_t ct_cap, size_t *ct_len)
{
    double t = now_s();
    return count(OP_ENCRYPT, t, inner(b)->ops->encrypt(inner(b), ref, aad, aad_len, pt, ct, ct_cap, ct_len));
}

static kms_rc m_decrypt(struct kms_backend *b, const struct kms_master_ref *ref, const uint8_t *aad, size_t aad_len,
                        const uint8_t *ct, size_t ct_len, struct kms_secret **pt)
{
    double t = now_s();
    return count(OP_DECRYPT, t, inner(b)->ops->decrypt(inner(b), ref, aad, aad_len, ct, ct_len, pt));
}

static kms_rc m_describe(struct kms_backend *b, const char *name, struct kms_key_info *out)
{
    double t = now_s();
    return count(OP_DESCRIBE, t, inner(b)->ops->describe(inner(b), name, out));
}

static kms_rc m_probe(struct kms_backend *b)
{
    double t = now_s();
    return count(OP_PROBE, t, inner(b)->ops->probe(inner(b)));
}

static kms_rc m_decrypt_batch(struct kms_backend *b, const char *name, struct kms_backend_batch_item *items, size_t n)
{
    double t = now_s();
    return count(OP_DECRYPT, t, inner(b)->ops->decrypt_batch(inner(b), name, items, n));
}

static kms_rc m_encrypt_batch(struct kms_backend *b, const struct kms_master_ref *ref,
                              struct kms_backend_seal_item *items, size_t n)
{
    double t = now_s();
    return count(OP_ENCRYPT, t, inner(b)->ops->encrypt_batch(inner(b), ref, items, n));
}

static void m_destroy(struct kms_backend *b)
{
    struct metered *mb = (struct metered *)(void *)b;
    kms_backend_free(&mb->inner);
    free((void *)(uintptr_t)mb->base.ops);
    free(mb);
}

kms_rc kms_metrics_wrap_backend(struct kms_backend *b, struct kms_backend **out)
{
    *out = NULL;
    struct metered *mb = calloc(1, sizeof(*mb));
    struct kms_backend_ops *ops = calloc(1, sizeof(*ops));
    if (mb == NULL || ops == NULL) {
        free(mb);
        free(ops);
        kms_backend_free(&b);
        return KMS_ERR_NO_MEMORY;
    }
    /* why: the wrapper keeps the inner backend's name and kind, so callers that
     * branch on them (kmsctl, readiness) see the real backend */
    *ops = (struct kms_backend_ops){.name = b->ops->name,
                                    .kind = b->ops->kind,
                                    .resolve = m_resolve,
                                    .encrypt = m_encrypt,
                                    .decrypt = m_decrypt,
                                    .describe = m_describe,
                                    .probe = m_probe,
                                    .destroy = m_destroy,
                                    .decrypt_batch = b->ops->decrypt_batch ? m_decrypt_batch : NULL,
                                    .encrypt_batch = b->ops->encrypt_batch ? m_encrypt_batch : NULL};
    mb->base.ops = ops;
    mb->inner = b;
    bm.backend = b->ops->name;
    *out = &mb->base;
    return KMS_OK;
}

/* ---- rendering ------------------------------------------------------------------ */

static kms_rc line(struct kms_buf *out, const char *fmt, ...) KMS_PRINTF(2, 3);
static kms_rc line(struct kms_buf *out, const char *fmt, ...)
{
    char tmp[512];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(tmp, sizeof(tmp), fmt, ap);
    va_end(ap);
    if (n < 0 || (size_t)n >= sizeof(tmp))
        return KMS_ERR_INTERNAL;
    return kms_buf_append(out, tmp, (size_t)n);
}

static kms_rc histogram(struct kms_buf *out, const char *name, const char *labels, const struct histogram *h)
{
    uint64_t cum = 0;
    for (size_t i = 0; i < NBUCKETS; i++) {
        cum += get(&h->bucket[i]);
        KMS_GUARD(line(out, "%s_bucket{%s,le=\"%g\"} %llu\n", name, labels, buckets[i], (unsigned long long)cum));
    }
    KMS_GUARD(line(out, "%s_bucket{%s,le=\"+Inf\"} %llu\n", name, labels, (unsigned long long)get(&h->count)));
    KMS_GUARD(line(out, "%s_sum{%s} %.6f\n", name, labels, (double)get(&h->sum_us) / 1e6));
    return line(out, "%s_count{%s} %llu\n", name, labels, (unsigned long long)get(&h->count));
}

kms_rc kms_metrics_render(const struct kms_metrics_gauges *g, struct kms_buf *out)
{
    char labels[160];
    KMS_GUARD(line(out, "# HELP kms_build_info The running kmsd: version (CMake's project version) and build.\n"
                        "# TYPE kms_build_info gauge\nkms_build_info{version=\"%s\",build=\"%s\"} 1\n",
                   kms_version(), kms_build_id()));
    KMS_GUARD(line(out, "# HELP kms_backend_up 1 when the master-key backend answered its last probe.\n"
                        "# TYPE kms_backend_up gauge\nkms_backend_up{backend=\"%s\"} %d\n",
                   g->backend != NULL ? g->backend : "none", g->backend_up));
    KMS_GUARD(line(out, "# HELP kms_audit_write_failures_total Audit lines whose write failed (the request went on).\n"
                        "# TYPE kms_audit_write_failures_total counter\nkms_audit_write_failures_total %llu\n",
                   (unsigned long long)g->audit_failures));
    KMS_GUARD(line(out, "# HELP kms_requests_total API requests by route and HTTP status.\n"
                        "# TYPE kms_requests_total counter\n"));
    for (size_t r = 0; r < KMS_METRICS_ROUTES; r++) {
        const char *p = __atomic_load_n(&m.pattern[r], __ATOMIC_RELAXED);
        if (p == NULL)
            continue;
        for (size_t k = 0; k <= NSTATUS; k++) {
            uint64_t v = get(&m.by_status[r][k]);
            if (v == 0)
                continue;
            if (k < NSTATUS)
                KMS_GUARD(line(out, "kms_requests_total{route=\"%s\",status=\"%d\"} %llu\n", p, statuses[k],
                               (unsigned long long)v));
            else
                KMS_GUARD(line(out, "kms_requests_total{route=\"%s\",status=\"other\"} %llu\n", p,
                               (unsigned long long)v));
        }
    }
    KMS_GUARD(line(out, "# HELP kms_request_duration_seconds API request latency by route.\n"
                        "# TYPE kms_request_duration_seconds histogram\n"));
    for (size_t r = 0; r < KMS_METRICS_ROUTES; r++) {
        const char *p = __atomic_load_n(&m.pattern[r], __ATOMIC_RELAXED);
        if (p == NULL)
            continue;
        (void)snprintf(labels, sizeof(labels), "route=\"%s\"", p);
        KMS_GUARD(histogram(out, "kms_request_duration_seconds", labels, &m.latency[r]));
    }
    KMS_GUARD(line(out, "# HELP kms_backend_calls_total Calls to the master-key backend by operation and result.\n"
                        "# TYPE kms_backend_calls_total counter\n"));
    for (int o = 0; o < NOPS; o++)
        for (int r = 0; r < NRES; r++)
            KMS_GUARD(line(out, "kms_backend_calls_total{backend=\"%s\",op=\"%s\",result=\"%s\"} %llu\n",
                           bm.backend ? bm.backend : "none", op_names[o], res_names[r],
                           (unsigned long long)get(&bm.calls[o][r])));
    KMS_GUARD(line(out, "# HELP kms_backend_duration_seconds Backend call latency by operation.\n"
                        "# TYPE kms_backend_duration_seconds histogram\n"));
    for (int o = 0; o < NOPS; o++) {
        (void)snprintf(labels, sizeof(labels), "backend=\"%s\",op=\"%s\"", bm.backend ? bm.backend : "none",
                       op_names[o]);
        KMS_GUARD(histogram(out, "kms_backend_duration_seconds", labels, &bm.latency[o]));
    }
    KMS_GUARD(line(out, "# HELP kms_cache_total Customer-key cache lookups by tier and result.\n"
                        "# TYPE kms_cache_total counter\n"
                        "kms_cache_total{tier=\"local\",result=\"hit\"} %llu\n"
                        "kms_cache_total{tier=\"%s\",result=\"hit\"} %llu\n"
                        "kms_cache_total{tier=\"all\",result=\"miss\"} %llu\n"
                        "kms_cache_total{tier=\"local\",result=\"eviction\"} %llu\n",
                   (unsigned long long)g->cache_hits_local, g->cache_kind == 2 ? "redis" : "remote",
                   (unsigned long long)g->cache_hits_remote, (unsigned long long)g->cache_misses,
                   (unsigned long long)g->cache_evictions));
    KMS_GUARD(line(out, "# HELP kms_cache_redis_up 1 when the distributed cache's Redis is reachable.\n"
                        "# TYPE kms_cache_redis_up gauge\nkms_cache_redis_up %d\n",
                   g->cache_kind == 2 ? g->cache_remote_up : 0));
    KMS_GUARD(line(out, "# HELP kms_tls_handshakes_total TLS connections by handshake kind.\n"
                        "# TYPE kms_tls_handshakes_total counter\n"
                        "kms_tls_handshakes_total{kind=\"full\"} %llu\nkms_tls_handshakes_total{kind=\"resumed\"} %llu\n",
                   (unsigned long long)get(&m.handshakes[0]), (unsigned long long)get(&m.handshakes[1])));
    KMS_GUARD(line(out, "# HELP kms_tls_ticket_key_rotations_total TLS session-ticket master keys replaced.\n"
                        "# TYPE kms_tls_ticket_key_rotations_total counter\n"
                        "kms_tls_ticket_key_rotations_total %llu\n",
                   (unsigned long long)get(&m.ticket_rotations)));
    KMS_GUARD(line(out, "# HELP kms_client_certificates_refused_total Refused client certificates by reason.\n"
                        "# TYPE kms_client_certificates_refused_total counter\n"));
    for (int i = KMS_AUTH_NO_CERT; i <= KMS_AUTH_LAST; i++)
        KMS_GUARD(line(out, "kms_client_certificates_refused_total{reason=\"%s\"} %llu\n",
                       kms_auth_status_name((enum kms_auth_status)i), (unsigned long long)get(&m.refused[i])));
    KMS_GUARD(line(out, "# HELP kms_crl_stale CRLs in force past their nextUpdate (their issuers' certificates "
                        "are refused unless kms.auth.crl.stale=accept).\n# TYPE kms_crl_stale gauge\nkms_crl_stale %d\n",
                   g->crls_stale));
    KMS_GUARD(line(out, "# HELP kms_crl_next_update_seconds The earliest nextUpdate of the CRLs in force (0: none).\n"
                        "# TYPE kms_crl_next_update_seconds gauge\nkms_crl_next_update_seconds %lld\n",
                   g->crl_next_update));
    KMS_GUARD(line(out, "# HELP kms_crl_fetches_total Fetches of kms.auth.crl.url by result.\n"
                        "# TYPE kms_crl_fetches_total counter\nkms_crl_fetches_total{result=\"ok\"} %llu\n"
                        "kms_crl_fetches_total{result=\"failed\"} %llu\n",
                   (unsigned long long)get(&m.crl_fetch[1]), (unsigned long long)get(&m.crl_fetch[0])));
    KMS_GUARD(line(out, "# HELP kms_rate_limited_total Requests refused with 429, by client certificate alias "
                        "and budget.\n# TYPE kms_rate_limited_total counter\n"));
    pthread_mutex_lock(&rl.lock);
    kms_rc rrc = KMS_OK;
    for (size_t i = 0; i <= RL_SERIES && rrc == KMS_OK; i++) {
        if (i == rl.n && i < RL_SERIES)
            i = RL_SERIES;
        if (rl.s[i].count == 0)
            continue;
        char alias[140];
        kms_json_escape(rl.s[i].alias, alias, sizeof(alias)); /* why: the label is quoted as JSON strings are */
        rrc = line(out, "kms_rate_limited_total{client=\"%s\",budget=\"%s\"} %llu\n", alias, rl.s[i].budget,
                   (unsigned long long)rl.s[i].count);
    }
    pthread_mutex_unlock(&rl.lock);
    KMS_GUARD(rrc);
    KMS_GUARD(line(out, "# HELP kms_connections_closed_total Connections closed unserved, by reason.\n"
                        "# TYPE kms_connections_closed_total counter\n"));
    for (int i = 0; i < KMS_CLOSE_COUNT; i++)
        KMS_GUARD(line(out, "kms_connections_closed_total{reason=\"%s\"} %llu\n",
                       kms_conn_close_name((enum kms_conn_close)i), (unsigned long long)get(&m.closed[i])));
    KMS_GUARD(line(out, "# HELP kms_keystore_rejected_total Keystore generations from the cluster refused, by reason.\n"
                        "# TYPE kms_keystore_rejected_total counter\n"));
    for (int i = KMS_KSGEN_MALFORMED; i <= KMS_KSGEN_INVALID; i++)
        KMS_GUARD(line(out, "kms_keystore_rejected_total{reason=\"%s\"} %llu\n",
                       kms_ksgen_reject_name((enum kms_ksgen_reject)i), (unsigned long long)get(&m.ks_rejected[i])));
    KMS_GUARD(line(out,
                   "# HELP kms_keystore_generation Cluster keystore generation in force (0: the node's own file, "
                   "never distributed).\n# TYPE kms_keystore_generation gauge\nkms_keystore_generation %llu\n",
                   (unsigned long long)get(&m.ks_cluster_generation)));
    KMS_GUARD(line(out,
                   "# HELP kms_keystore_loads Keystore loads by this process (1 at start, +1 per reload).\n"
                   "# TYPE kms_keystore_loads gauge\nkms_keystore_loads %lu\n",
                   g->keystore_generation));
    return line(out,
                "# HELP kms_certificate_earliest_expiry_seconds Earliest not-after of the keystore's certificates.\n"
                "# TYPE kms_certificate_earliest_expiry_seconds gauge\nkms_certificate_earliest_expiry_seconds %lld\n",
                g->earliest_not_after);
}
