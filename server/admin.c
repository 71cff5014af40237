/* The admin listener: plain HTTP on kms.admin.address (loopback or a
 * management network): GET /metrics, with the gauges read from the server's
 * state at scrape time, and GET /health/live and /health/ready with every
 * detail (the TLS listener shows those only to an admin certificate). */
#include <arpa/inet.h>
#include <microhttpd.h>
#include <netinet/in.h>
#include <string.h>
#include <time.h>

#include "cluster/redis_cache.h"
#include "common/buf.h"
#include "server/internal.h"
#include "server/metrics.h"

static void gauges(struct kms_server *s, struct kms_metrics_gauges *g)
{
    memset(g, 0, sizeof(*g));
    struct kms_trust *t = kms_server_trust(s);
    g->keystore_generation = t->generation;
    g->earliest_not_after = (long long)t->earliest_not_after;
    time_t next = 0;
    g->crls_stale = kms_crl_stale_count(t->crls, time(NULL), &next);
    g->crl_next_update = (long long)next;
    kms_trust_unref(&t);
    time_t checked;
    g->backend = s->d.backend_name;
    g->backend_up = kms_server_backend_probe(s, &checked) == KMS_OK;
    g->audit_failures = kms_audit_failures(s->d.audit);
    if (s->d.cache == NULL)
        return;
    if (strcmp(s->d.cache_type, "distributed") == 0) {
        struct kms_redis_state st;
        kms_cache_redis_state(s->d.cache, &st);
        g->cache_kind = 2;
        g->cache_hits_local = st.hits_local;
        g->cache_hits_remote = st.hits_redis;
        g->cache_misses = st.misses;
        g->cache_remote_up = st.link == KMS_REDIS_CONNECTED;
    } else {
        struct kms_cache_stats st;
        kms_cache_local_stats(s->d.cache, &st);
        g->cache_kind = 1;
        g->cache_hits_local = st.hits;
        g->cache_misses = st.misses;
        g->cache_evictions = st.evictions;
    }
}

static enum MHD_Result on_admin(void *cls, struct MHD_Connection *c, const char *url, const char *method,
                                const char *version, const char *upload_data, size_t *upload_data_size,
                                void **req_cls)
{
    (void)version;
    (void)upload_data;
    struct kms_server *s = cls;
    if (*req_cls == NULL) { /* why: answer on the second call to keep keep-alive (reference §3.1) */
        *req_cls = (void *)1;
        return MHD_YES;
    }
    *upload_data_size = 0;
    struct kms_buf out;
    kms_buf_init(&out, 1 << 20);
    unsigned status = MHD_HTTP_OK;
    kms_rc rc = KMS_OK;
    const char *type = "application/json";
    int known = strcmp(url, "/metrics") == 0 || strcmp(url, "/health/live") == 0 || strcmp(url, "/health/ready") == 0;
    if (!known) {
        status = MHD_HTTP_NOT_FOUND;
        type = "text/plain";
        rc = kms_buf_append_str(&out, "not found: the admin listener serves GET /metrics, /health/live and "
                                      "/health/ready\n");
    } else if (strcmp(method, "GET") != 0) {
        status = MHD_HTTP_METHOD_NOT_ALLOWED;
        type = "text/plain";
        rc = kms_buf_append_str(&out, "method not allowed\n");
    } else if (strcmp(url, "/metrics") == 0) {
        struct kms_metrics_gauges g;
        gauges(s, &g);
        type = "text/plain; version=0.0.4";
        rc = kms_metrics_render(&g, &out);
    } else if (strcmp(url, "/health/live") == 0) {
        rc = kms_buf_append_str(&out, "{\"status\":\"live\"}");
    } else {
        struct kms_jsonw w;
        kms_jsonw_init(&w, 64 * 1024);
        status = (unsigned)kms_health_ready_write(s, &w, 1);
        rc = kms_jsonw_finish(&w);
        if (rc == KMS_OK)
            rc = kms_buf_append(&out, w.buf.data, w.buf.len);
        kms_jsonw_free(&w);
    }
    if (rc != KMS_OK) {
        kms_buf_free(&out);
        return MHD_NO;
    }
    struct MHD_Response *resp = MHD_create_response_from_buffer(out.len, out.data, MHD_RESPMEM_MUST_COPY);
    kms_buf_free(&out);
    if (resp == NULL)
        return MHD_NO;
    (void)MHD_add_response_header(resp, "Content-Type", type);
    enum MHD_Result ret = MHD_queue_response(c, status, resp);
    MHD_destroy_response(resp);
    return ret;
}

kms_rc kms_admin_start(struct kms_server *s)
{
    const struct kms_server_deps *d = &s->d;
    if (d->admin_port == 0 || d->admin_address == NULL)
        return KMS_OK;
    struct sockaddr_in v4;
    memset(&v4, 0, sizeof(v4));
    v4.sin_family = AF_INET;
    v4.sin_port = htons(d->admin_port);
    if (inet_pton(AF_INET, d->admin_address, &v4.sin_addr) != 1)
        return kms_fail(KMS_ERR_CONFIG, "kms.admin.address '%s' is not an IPv4 address", d->admin_address);
    s->admin = MHD_start_daemon(MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_EPOLL | MHD_USE_ERROR_LOG, d->admin_port,
                                NULL, NULL, on_admin, s, MHD_OPTION_SOCK_ADDR, &v4, MHD_OPTION_CONNECTION_TIMEOUT,
                                (unsigned)10, MHD_OPTION_CONNECTION_LIMIT, (unsigned)64, MHD_OPTION_END);
    if (s->admin == NULL)
        return kms_fail(KMS_ERR_IO, "cannot listen on %s:%u for the admin listener (kms.admin.port)",
                        d->admin_address, (unsigned)d->admin_port);
    const union MHD_DaemonInfo *di = MHD_get_daemon_info(s->admin, MHD_DAEMON_INFO_BIND_PORT);
    s->admin_port = di ? di->port : d->admin_port;
    return KMS_OK;
}
