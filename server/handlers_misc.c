/* GET /health/live, /health/ready, /v1/whoami (SPEC §4). */
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "cluster/cluster_status.h"
#include "cluster/redis_cache.h"
#include "server/trust.h"

#include "common/log.h"
#include "server/internal.h"

#define PROBE_INTERVAL_S 5

static int is_distributed(const struct kms_server *s)
{
    return s->d.cache != NULL && strcmp(s->d.cache_type, "distributed") == 0;
}

kms_rc kms_handle_health_live(struct kms_server *s, struct kms_request *r)
{
    (void)s;
    kms_jsonw_obj_begin(&r->reply);
    kms_jsonw_kv(&r->reply, "status", "live");
    kms_jsonw_obj_end(&r->reply);
    return KMS_OK;
}

/* The backend probe, run at most once per PROBE_INTERVAL_S whatever the
 * health-check rate (HAProxy checks every node every few seconds). */
kms_rc kms_server_backend_probe(struct kms_server *s, time_t *checked)
{
    time_t now = time(NULL);
    pthread_mutex_lock(&s->probe_lock);
    if (s->probe_at == 0 || now - s->probe_at >= PROBE_INTERVAL_S) {
        s->probe_rc = s->d.backend->ops->probe(s->d.backend);
        s->probe_at = now;
        if (s->probe_rc != KMS_OK)
            kms_log(KMS_LOG_WARN, "backend.probe_failed", NULL, "backend", s->d.backend_name, "code",
                    kms_error_code(s->probe_rc), "detail", kms_error_detail(), NULL);
    }
    kms_rc rc = s->probe_rc;
    *checked = s->probe_at;
    pthread_mutex_unlock(&s->probe_lock);
    return rc;
}

/* The parts that are not fully well, for anyone who asks: "backend" (its
 * probe failed: not ready), "cache" (Redis away: served from the local tier
 * and the backend), "keystore" (the last reload failed: the previous
 * generation still serves), "audit" (lines wait for a failing audit file:
 * with kms.audit.on_failure=refuse, audited requests get 503), "revocation"
 * (a CRL is past its nextUpdate: its issuer's certificates are refused, or
 * accepted with kms.auth.crl.stale=accept). */
static void write_degraded(struct kms_jsonw *w, kms_rc backend, int cache_down, int reload_failed, int audit_down,
                           int crls_stale)
{
    kms_jsonw_key(w, "degraded");
    kms_jsonw_arr_begin(w);
    if (backend != KMS_OK)
        kms_jsonw_str(w, "backend");
    if (cache_down)
        kms_jsonw_str(w, "cache");
    if (reload_failed)
        kms_jsonw_str(w, "keystore");
    if (audit_down)
        kms_jsonw_str(w, "audit");
    if (crls_stale)
        kms_jsonw_str(w, "revocation");
    kms_jsonw_arr_end(w);
}

static void write_keystore(struct kms_jsonw *w, const struct kms_trust *t, time_t reload_at, kms_rc reload_rc,
                           const char *reload_detail)
{
    char loaded[32], expiry[32], at[32];
    struct tm tm;
    gmtime_r(&t->loaded_at, &tm);
    strftime(loaded, sizeof(loaded), "%Y-%m-%dT%H:%M:%SZ", &tm);
    gmtime_r(&t->earliest_not_after, &tm);
    strftime(expiry, sizeof(expiry), "%Y-%m-%dT%H:%M:%SZ", &tm);
    kms_jsonw_key(w, "keystore");
    kms_jsonw_obj_begin(w);
    kms_jsonw_kv(w, "file", kms_keystore_path(t->ks));
    kms_jsonw_kv(w, "format", kms_keystore_format_name(kms_keystore_format(t->ks)));
    kms_jsonw_key(w, "entries");
    kms_jsonw_int(w, (long long)kms_keystore_count(t->ks));
    kms_jsonw_key(w, "generation");
    kms_jsonw_int(w, (long long)t->generation);
    kms_jsonw_kv(w, "loaded_at", loaded);
    kms_jsonw_key(w, "crls");
    kms_jsonw_int(w, t->crls ? sk_X509_CRL_num(t->crls) : 0);
    time_t next = 0;
    kms_jsonw_key(w, "crls_stale");
    kms_jsonw_int(w, kms_crl_stale_count(t->crls, time(NULL), &next));
    if (next != 0) {
        char nu[32];
        gmtime_r(&next, &tm);
        strftime(nu, sizeof(nu), "%Y-%m-%dT%H:%M:%SZ", &tm);
        kms_jsonw_kv(w, "crl_next_update", nu);
    }
    kms_jsonw_kv(w, "earliest_not_after", expiry);
    kms_jsonw_kv(w, "earliest_not_after_alias", t->earliest_alias);
    kms_jsonw_key(w, "last_reload");
    if (reload_at == 0) {
        kms_jsonw_null(w);
    } else {
        gmtime_r(&reload_at, &tm);
        strftime(at, sizeof(at), "%Y-%m-%dT%H:%M:%SZ", &tm);
        kms_jsonw_obj_begin(w);
        kms_jsonw_kv(w, "at", at);
        kms_jsonw_kv(w, "result", reload_rc == KMS_OK ? "ok" : kms_error_code(reload_rc));
        if (reload_rc != KMS_OK)
            kms_jsonw_kv(w, "detail", reload_detail);
        kms_jsonw_obj_end(w);
    }
    kms_jsonw_obj_end(w);
}

int kms_health_ready_write(struct kms_server *s, struct kms_jsonw *w, int detail)
{
    time_t checked;
    kms_rc prc = kms_server_backend_probe(s, &checked);
    pthread_mutex_lock(&s->trust_lock);
    time_t rat = s->reload_at;
    kms_rc rrc = s->reload_rc;
    char rdetail[sizeof(s->reload_detail)];
    memcpy(rdetail, s->reload_detail, sizeof(rdetail));
    pthread_mutex_unlock(&s->trust_lock);
    struct kms_redis_state st;
    memset(&st, 0, sizeof(st));
    int cache_down = 0;
    if (is_distributed(s)) {
        /* SPEC §9: without Redis the node keeps serving (local tier + backend): degraded, still ready */
        kms_cache_redis_state(s->d.cache, &st);
        cache_down = st.link != KMS_REDIS_CONNECTED;
    }

    kms_jsonw_obj_begin(w);
    kms_jsonw_kv(w, "status", prc == KMS_OK ? "ready" : "not_ready");
    time_t crl_next;
    int stale = kms_server_crls_stale(s, time(NULL), &crl_next);
    write_degraded(w, prc, cache_down, rat != 0 && rrc != KMS_OK, !kms_audit_ready(s->d.audit), stale);
    if (!detail) {
        /* why: a caller without an admin certificate learns no path, alias,
         * node name or date (issue 15): those help an attacker, not a load balancer */
        kms_jsonw_obj_end(w);
        return prc == KMS_OK ? 200 : 503;
    }
    char at[32];
    struct tm tm;
    gmtime_r(&checked, &tm);
    strftime(at, sizeof(at), "%Y-%m-%dT%H:%M:%SZ", &tm);
    kms_jsonw_kv(w, "node", s->d.node);
    struct kms_trust *t = kms_server_trust(s);
    write_keystore(w, t, rat, rrc, rdetail);
    kms_trust_unref(&t);
    kms_jsonw_key(w, "backend");
    kms_jsonw_obj_begin(w);
    kms_jsonw_kv(w, "kind", s->d.backend_name);
    kms_jsonw_kv(w, "status", prc == KMS_OK ? "ok" : kms_error_code(prc));
    kms_jsonw_kv(w, "checked_at", at);
    kms_jsonw_obj_end(w);
    kms_jsonw_key(w, "cache");
    kms_jsonw_obj_begin(w);
    kms_jsonw_kv(w, "type", s->d.cache_type);
    if (is_distributed(s)) {
        kms_jsonw_kv(w, "status", cache_down ? "degraded" : "ok");
        kms_jsonw_key(w, "hits_local");
        kms_jsonw_int(w, (long long)st.hits_local);
        kms_jsonw_key(w, "hits_redis");
        kms_jsonw_int(w, (long long)st.hits_redis);
        kms_jsonw_key(w, "misses");
        kms_jsonw_int(w, (long long)st.misses);
    } else {
        kms_jsonw_kv(w, "status", "ok");
    }
    kms_jsonw_obj_end(w);
    kms_jsonw_obj_end(w);
    return prc == KMS_OK ? 200 : 503;
}

/* Details for an admin certificate; the admin listener always shows them. */
kms_rc kms_handle_health_ready(struct kms_server *s, struct kms_request *r)
{
    const struct kms_identity *id = kms_request_identity(r);
    int admin = r->conn->decided && id->status == KMS_AUTH_OK && id->role == KMS_ROLE_ADMIN;
    r->status = kms_health_ready_write(s, &r->reply, admin);
    return KMS_OK;
}

static void iso_time(int64_t t, char out[32])
{
    struct tm tm;
    time_t tt = (time_t)t;
    gmtime_r(&tt, &tm);
    strftime(out, 32, "%Y-%m-%dT%H:%M:%SZ", &tm);
}

/* SPEC §4, §11: every node, its keystore and whether it agrees. */
kms_rc kms_handle_cluster(struct kms_server *s, struct kms_request *r)
{
    struct kms_jsonw *w = &r->reply;
    struct kms_cluster_node nodes[64];
    enum kms_node_state states[64];
    size_t n = 0;
    if (!is_distributed(s))
        return kms_fail(KMS_ERR_NOT_FOUND, "kms.cache.type=%s: no cluster to list", s->d.cache_type);
    KMS_GUARD(kms_cluster_nodes(s->d.cache, nodes, KMS_ARRAY_LEN(nodes), &n));
    struct kms_cluster_verdict v;
    kms_cluster_assess(nodes, n, (int64_t)time(NULL), states, &v);
    kms_jsonw_obj_begin(w);
    kms_jsonw_kv(w, "node", s->d.node);
    kms_jsonw_key(w, "healthy");
    kms_jsonw_bool(w, v.healthy);
    kms_jsonw_key(w, "keystore_generation");
    kms_jsonw_int(w, (long long)v.generation);
    kms_jsonw_kv(w, "keystore_sha256", v.sha256);
    kms_jsonw_key(w, "nodes");
    kms_jsonw_arr_begin(w);
    for (size_t i = 0; i < n; i++) {
        char seen[32], started[32], expiry[32];
        iso_time(nodes[i].last_seen, seen);
        iso_time(nodes[i].started, started);
        kms_jsonw_obj_begin(w);
        kms_jsonw_kv(w, "name", nodes[i].name);
        kms_jsonw_kv(w, "version", nodes[i].version);
        kms_jsonw_kv(w, "state", kms_node_state_name(states[i]));
        kms_jsonw_kv(w, "started", started);
        kms_jsonw_kv(w, "last_seen", seen);
        kms_jsonw_key(w, "keystore_generation");
        kms_jsonw_int(w, (long long)nodes[i].ks_generation);
        kms_jsonw_kv(w, "keystore_sha256", nodes[i].ks_sha256);
        if (nodes[i].ks_expiry > 0) {
            iso_time(nodes[i].ks_expiry, expiry);
            kms_jsonw_kv(w, "earliest_expiry", expiry);
            kms_jsonw_kv(w, "earliest_expiry_alias", nodes[i].ks_expiry_alias);
        }
        kms_jsonw_kv(w, "last_error", nodes[i].ks_error);
        kms_jsonw_obj_end(w);
    }
    kms_jsonw_arr_end(w);
    kms_jsonw_obj_end(w);
    return KMS_OK;
}

/* After a master key is revoked or a customer key must stop working at once:
 * every node drops its cached customer keys (SPEC §9: invalidation
 * cluster-wide; the Redis generation moves, the local tiers are cleared). */
kms_rc kms_handle_cache_invalidate(struct kms_server *s, struct kms_request *r)
{
    if (s->d.cache == NULL)
        return kms_fail(KMS_ERR_NOT_FOUND, "kms.cache.type=none: nothing to invalidate");
    if (is_distributed(s))
        KMS_GUARD(kms_cache_redis_invalidate_all(s->d.cache));
    else
        kms_cache_local_clear(s->d.cache);
    struct kms_jsonw *w = &r->reply;
    kms_jsonw_obj_begin(w);
    kms_jsonw_kv(w, "invalidated", is_distributed(s) ? "cluster" : "node");
    kms_jsonw_obj_end(w);
    return KMS_OK;
}

kms_rc kms_handle_whoami(struct kms_server *s, struct kms_request *r)
{
    (void)s;
    const struct kms_identity *id = kms_request_identity(r);
    struct kms_jsonw *w = &r->reply;
    kms_jsonw_obj_begin(w);
    kms_jsonw_kv(w, "alias", id->alias);
    kms_jsonw_kv(w, "role", kms_role_name(id->role));
    kms_jsonw_kv(w, "subject", id->subject);
    kms_jsonw_kv(w, "fingerprint_sha256", id->fingerprint);
    kms_jsonw_kv(w, "not_after", id->not_after);
    kms_jsonw_obj_end(w);
    return KMS_OK;
}
