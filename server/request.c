/* Request assembly: the first call routes, authenticates and checks what is
 * announced; later calls collect (or drain) the body; the last runs the
 * handler. Also the helpers handlers use to decode and refuse. */
#include <errno.h>
#include <gnutls/gnutls.h>
#include <microhttpd.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "common/clock.h"
#include "common/hex.h"
#include "common/secret.h"
#include "server/internal.h"
#include "server/metrics.h"
#include "server/ocsp.h"

/* A refused request's body is read and dropped up to this many bytes so the
 * answer is not lost to a reset (see kms_request_on_request); past it the connection closes. */
#define DRAIN_MAX ((unsigned long long)4 << 20)
/* kmsd's own bounds on a request's head, answered in JSON (414, 431); a head
 * past kms.server.connection.memory gets libmicrohttpd's own answer first. */
#define URL_MAX 2048
#define HEADERS_MAX 8192
#define HEADER_FIELDS_MAX 64 /* SPEC §10: the header count is bounded too */
/* A connection keeps its body buffer between requests up to this capacity. */
#define BODY_KEEP 4096

/* why: one RAND_bytes call per request showed in profiles; ids are drawn
 * from a per-thread pool refilled every 32 requests instead. */
#define REQ_ID_POOL (32 * (KMS_REQ_ID_LEN / 2))

static void new_request_id(char out[KMS_REQ_ID_LEN + 1])
{
    static __thread uint8_t pool[REQ_ID_POOL];
    static __thread size_t pool_used = REQ_ID_POOL;
    if (pool_used == REQ_ID_POOL) {
        if (kms_random(pool, sizeof(pool)) != KMS_OK)
            memset(pool, 0, sizeof(pool));
        pool_used = 0;
    }
    kms_hex_encode(pool + pool_used, KMS_REQ_ID_LEN / 2, out, KMS_REQ_ID_LEN + 1);
    pool_used += KMS_REQ_ID_LEN / 2;
}

kms_rc kms_request_reject(struct kms_request *r, kms_rc rc, const char *field, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    (void)vsnprintf(r->reject_message, sizeof(r->reject_message), fmt, ap);
    va_end(ap);
    (void)snprintf(r->reject_field, sizeof(r->reject_field), "%s", field);
    r->reject_rc = rc;
    return kms_fail(rc, "%s", r->reject_message);
}

kms_rc kms_request_decode(struct kms_request *r, const struct kms_schema *schema, void *out)
{
    struct kms_decode_error e;
    kms_rc rc = kms_decode(r->body->data, r->body->len, schema, out, &e);
    if (rc == KMS_OK || rc == KMS_ERR_NO_MEMORY)
        return rc;
    return kms_request_reject(r, rc, e.field, "%s", e.message);
}

/* Keeps the failure's detail with the request: the thread-local record may be
 * overwritten by other connections before the answer is sent. */
static void keep_detail(struct kms_request *r)
{
    (void)snprintf(r->detail, sizeof(r->detail), "%s", kms_error_detail());
}

static int is_json_type(const char *ct)
{
    if (ct == NULL)
        return 0;
    static const char want[] = "application/json";
    if (strncasecmp(ct, want, sizeof(want) - 1) != 0)
        return 0;
    char next = ct[sizeof(want) - 1];
    return next == '\0' || next == ';' || next == ' ';
}

/* First call for a request: route, authenticate, authorize, check the
 * announced body. Returns the error to answer with, or KMS_OK. */
struct header_size {
    size_t bytes, fields;
};

static enum MHD_Result add_header_size(void *cls, enum MHD_ValueKind kind, const char *key, const char *value)
{
    (void)kind;
    struct header_size *sum = cls;
    sum->bytes += strlen(key) + (value != NULL ? strlen(value) : 0) + 4; /* ": " and CRLF */
    sum->fields++;
    return MHD_YES;
}

/* why: a CRL passing its nextUpdate changes what a decision would be
 * without a reload; a connection decided before that (or at that very
 * second, when it was not stale yet) is decided again, once. */
static int crl_turned_stale(struct kms_server *s, const struct kms_conn *conn)
{
    time_t next;
    return kms_server_crls_stale(s, time(NULL), &next) && conn->decided_at <= next;
}

static kms_rc admit(struct kms_server *s, struct MHD_Connection *c, struct kms_request *r, const char *url,
                    const char *method)
{
    size_t url_len = strlen(url);
    if (url_len > URL_MAX)
        return kms_request_reject(r, KMS_ERR_URI_TOO_LONG, "", "the path is %zu bytes; at most %d are read",
                                  url_len, URL_MAX);
    struct header_size headers = {0, 0};
    (void)MHD_get_connection_values(c, MHD_HEADER_KIND, add_header_size, &headers);
    if (headers.bytes > HEADERS_MAX)
        return kms_request_reject(r, KMS_ERR_HEADERS_TOO_LARGE, "",
                                  "the header fields are %zu bytes; at most %d are read", headers.bytes, HEADERS_MAX);
    if (headers.fields > HEADER_FIELDS_MAX)
        return kms_request_reject(r, KMS_ERR_HEADERS_TOO_LARGE, "",
                                  "the request has %zu header fields; at most %d are read", headers.fields,
                                  HEADER_FIELDS_MAX);
    int wrong_method = 0;
    r->route = kms_router_match(method, url, r->param, sizeof(r->param), &wrong_method);
    if (r->route == NULL)
        return wrong_method ? kms_fail(KMS_ERR_METHOD, "%s %s", method, url) : kms_fail(KMS_ERR_NOT_FOUND, "%s", url);
    if (r->route->roles != 0 || (r->route->identify && kms_conn_has_certificate(c))) {
        /* why: once per connection, and again only after a keystore or CRL
         * reload, so a revoked or removed client is refused on its next request */
        if (!r->conn->decided || r->conn->id_generation != __atomic_load_n(&s->generation, __ATOMIC_ACQUIRE) ||
            crl_turned_stale(s, r->conn) ||
            (s->d.ocsp != NULL && r->conn->ocsp_epoch != kms_ocsp_epoch(s->d.ocsp)))
            kms_conn_decide_identity(s, c, r->conn, r->id);
    }
    if (r->route->roles != 0) {
        if (r->conn->id.status != KMS_AUTH_OK)
            return kms_fail(KMS_ERR_UNAUTHENTICATED, "%s", kms_auth_status_name(r->conn->id.status));
        if ((r->route->roles & (1u << r->conn->id.role)) == 0)
            return kms_fail(KMS_ERR_FORBIDDEN, "role %s may not %s %s", kms_role_name(r->conn->id.role), method,
                            r->route->pattern);
        /* why before the handler: with kms.audit.on_failure=refuse a request
         * that cannot be audited must touch no key */
        if (r->route->op != NULL && !kms_audit_ready(s->d.audit))
            return kms_request_reject(r, KMS_ERR_AUDIT_UNAVAILABLE, "",
                                      "the audit trail cannot be written (kms.audit.on_failure=refuse): nothing "
                                      "was done; retry later");
        if (s->d.ratelimit != NULL) {
            uint64_t retry_ms = 0;
            const struct kms_identity *id = &r->conn->id;
            if (!kms_ratelimit_take(s->d.ratelimit, id->fingerprint, id->role, (enum kms_rl_budget)r->route->budget,
                                    kms_now_ns(), &retry_ms)) {
                r->retry_after_s = (unsigned)((retry_ms + 999) / 1000);
                kms_metrics_rate_limited(id->alias, kms_rl_budget_name((enum kms_rl_budget)r->route->budget));
                return kms_request_reject(r, KMS_ERR_RATE_LIMITED, "",
                                          "this client certificate is over its %s budget (kms.ratelimit.%s); "
                                          "retry after %u s",
                                          kms_rl_budget_name((enum kms_rl_budget)r->route->budget),
                                          kms_role_name(id->role), r->retry_after_s);
            }
        }
    }
    if (r->route->body == KMS_BODY_JSON) {
        const char *cl = MHD_lookup_connection_value(c, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_LENGTH);
        if (cl != NULL) {
            char *end = NULL;
            errno = 0;
            unsigned long long n = strtoull(cl, &end, 10);
            if (errno != 0 || end == cl || *end != '\0')
                return kms_fail(KMS_ERR_BAD_REQUEST, "invalid Content-Length");
            r->announced = n;
            if (n > s->d.max_body)
                return kms_fail(KMS_ERR_TOO_LARGE, "Content-Length %s > %zu", cl, s->d.max_body);
        }
        if (!is_json_type(MHD_lookup_connection_value(c, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_TYPE)))
            return kms_fail(KMS_ERR_MEDIA_TYPE, "Content-Type is not application/json");
    }
    return KMS_OK;
}

enum MHD_Result kms_request_on_request(void *cls, struct MHD_Connection *c, const char *url, const char *method,
                                  const char *version, const char *upload_data, size_t *upload_data_size,
                                  void **req_cls)
{
    (void)version;
    struct kms_server *s = cls;
    struct kms_request *r = *req_cls;

    if (r == NULL) {
        r = calloc(1, sizeof(*r));
        if (r == NULL)
            return MHD_NO;
        *req_cls = r;
        r->start_ns = kms_now_ns();
        new_request_id(r->id);
        kms_jsonw_init(&r->reply, 64 * 1024 + 4096);
        const union MHD_ConnectionInfo *ci = MHD_get_connection_info(c, MHD_CONNECTION_INFO_SOCKET_CONTEXT);
        r->conn = ci ? ci->socket_context : NULL; /* the stored pointer itself (reference §3.4) */
        if (r->conn == NULL)
            return MHD_NO; /* connection context could not be allocated: drop it */
        r->body = &r->conn->body;
        kms_buf_reset(r->body);
        kms_front_head_done(r->conn);
        if (!r->conn->counted) {
            const union MHD_ConnectionInfo *ti = MHD_get_connection_info(c, MHD_CONNECTION_INFO_GNUTLS_SESSION);
            kms_metrics_handshake(ti != NULL && ti->tls_session != NULL &&
                                  gnutls_session_is_resumed(ti->tls_session));
            r->conn->counted = 1;
            kms_conn_install_io(c, r->conn);
        }
        r->method_head = strcmp(method, MHD_HTTP_METHOD_HEAD) == 0;
        kms_error_clear();
        r->error = admit(s, c, r, url, method);
        if (r->error != KMS_OK) {
            keep_detail(r);
            /* why: answering in this first call makes MHD close the connection
             * (reference §3.1) while the client may still be sending: the
             * unread body turns the close into a reset that can destroy the
             * answer. So drain a bounded body and answer at its end; answer at
             * once only when the announced body is past the drain cap. */
            if (r->announced > DRAIN_MAX)
                return kms_reply_error(s, c, r, r->error);
        }
        return MHD_YES;
    }

    if (r->responded) {
        *upload_data_size = 0; /* discard the rest of a refused body */
        return MHD_YES;
    }

    if (*upload_data_size > 0) {
        size_t n = *upload_data_size;
        *upload_data_size = 0;
        if (r->error == KMS_OK && r->route->body != KMS_BODY_JSON) {
            r->error = kms_fail(KMS_ERR_BAD_REQUEST, "this resource takes no body");
            keep_detail(r);
        }
        if (r->error == KMS_OK) {
            kms_rc rc = kms_buf_append(r->body, upload_data, n);
            if (rc != KMS_OK) {
                r->error = rc == KMS_ERR_TOO_LARGE ? kms_fail(rc, "body over %zu bytes", s->d.max_body) : rc;
                keep_detail(r);
                r->drained = r->body->len;
                kms_buf_reset(r->body);
            }
        }
        if (r->error != KMS_OK) {
            r->drained += n;
            if (r->drained > DRAIN_MAX)
                return kms_reply_error(s, c, r, r->error);
        }
        return MHD_YES;
    }

    if (r->error != KMS_OK)
        return kms_reply_error(s, c, r, r->error);
    if (r->route->body == KMS_BODY_JSON && r->body->len == 0) {
        (void)kms_request_reject(r, KMS_ERR_BAD_JSON, "", "the body is empty: this takes a JSON object");
        keep_detail(r);
        return kms_reply_error(s, c, r, KMS_ERR_BAD_JSON);
    }

    kms_error_clear();
    r->status = 200;
    kms_rc rc = r->route->handler(s, r);
    if (rc == KMS_OK)
        rc = kms_jsonw_finish(&r->reply);
    if (rc != KMS_OK)
        return kms_reply_error(s, c, r, rc);
    kms_reply_audit(s, r, KMS_OK);
    return kms_reply_send(c, r);
}

void kms_request_on_completed(void *cls, struct MHD_Connection *c, void **req_cls, enum MHD_RequestTerminationCode toe)
{
    (void)cls;
    (void)c;
    (void)toe;
    struct kms_request *r = *req_cls;
    if (r == NULL)
        return;
    if (r->conn != NULL && r->conn->fd >= 0 && (r->conn->hold || r->conn->held_len > 0))
        kms_conn_flush_held(r->conn);
    if (r->conn != NULL)
        r->conn->awaiting_head = 1; /* the next bytes read start the next head (conn.c, pull) */
    if (r->body != NULL) {
        kms_buf_reset(r->body);
        /* why: an idle keep-alive connection should not keep a large body's buffer */
        if (r->body->cap > BODY_KEEP)
            kms_buf_free(r->body);
    }
    kms_jsonw_free(&r->reply);
    free(r);
    *req_cls = NULL;
}
