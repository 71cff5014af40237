/* libmicrohttpd glue: daemon, TLS, per-connection identity, body collection,
 * responses. See shared/reference/libmicrohttpd-mtls.md for the MHD/GnuTLS
 * behaviours relied on here (cert request, keep-alive, socket context). */
#include "server/server.h"

#include <arpa/inet.h>
#include <errno.h>
#include <gnutls/abstract.h>
#include <gnutls/gnutls.h>
#include <microhttpd.h>
#include <netinet/in.h>
#include <openssl/core_names.h>
#include <openssl/kdf.h>
#include <openssl/params.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/uio.h>

#include "common/hex.h"
#include "common/log.h"
#include "common/secret.h"
#include "server/internal.h"
#include "server/metrics.h"
#include "cluster/redis_cache.h"

/* A refused request's body is read and dropped up to this many bytes so the
 * answer is not lost to a reset (see on_request); past it the connection closes. */
#define DRAIN_MAX ((unsigned long long)4 << 20)
/* A connection keeps its body buffer between requests up to this capacity. */
#define BODY_KEEP 4096

/* ---- connections ---------------------------------------------------------------- */

static void free_ticket_key(struct kms_server *s)
{
    if (s->ticket_key.data != NULL) {
        gnutls_memset(s->ticket_key.data, 0, s->ticket_key.size);
        gnutls_free(s->ticket_key.data);
        s->ticket_key.data = NULL;
    }
    kms_secret_free(&s->ticket_secret);
    pthread_mutex_destroy(&s->ticket_lock);
}

#define TICKET_KEY_LEN 64 /* GnuTLS's session-ticket master key: name, cipher and MAC keys */

/* A session-ticket master key for rotation period `epoch`: random, or with a
 * cluster secret HKDF-SHA256(salt "kmsd tls ticket v1", secret, info epoch as
 * 8 bytes big-endian), the same on every node in the same period. */
static kms_rc make_ticket_key(const struct kms_server *s, uint64_t epoch, gnutls_datum_t *out)
{
    out->data = NULL;
    out->size = 0;
    if (s->ticket_secret == NULL)
        return gnutls_session_ticket_key_generate(out) == GNUTLS_E_SUCCESS
                   ? KMS_OK
                   : kms_fail(KMS_ERR_CRYPTO, "gnutls_session_ticket_key_generate failed");
    static const char salt[] = "kmsd tls ticket v1";
    uint8_t info[8];
    for (int i = 0; i < 8; i++)
        info[i] = (uint8_t)(epoch >> (56 - 8 * i));
    out->data = gnutls_malloc(TICKET_KEY_LEN);
    if (out->data == NULL)
        return KMS_ERR_NO_MEMORY;
    EVP_KDF *kdf = EVP_KDF_fetch(NULL, "HKDF", NULL);
    EVP_KDF_CTX *ctx = kdf ? EVP_KDF_CTX_new(kdf) : NULL;
    OSSL_PARAM params[] = {
        OSSL_PARAM_construct_utf8_string(OSSL_KDF_PARAM_DIGEST, (char *)"SHA256", 0),
        OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_KEY, (void *)kms_secret_cdata(s->ticket_secret),
                                          kms_secret_len(s->ticket_secret)),
        OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_SALT, (void *)salt, sizeof(salt) - 1),
        OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_INFO, info, sizeof(info)),
        OSSL_PARAM_construct_end(),
    };
    int ok = ctx != NULL && EVP_KDF_derive(ctx, out->data, TICKET_KEY_LEN, params) == 1;
    EVP_KDF_CTX_free(ctx);
    EVP_KDF_free(kdf);
    if (!ok) {
        gnutls_memset(out->data, 0, TICKET_KEY_LEN);
        gnutls_free(out->data);
        out->data = NULL;
        return kms_fail(KMS_ERR_CRYPTO, "HKDF of the ticket key failed");
    }
    out->size = TICKET_KEY_LEN;
    return KMS_OK;
}

static uint64_t ticket_epoch(const struct kms_server *s, time_t now)
{
    return s->d.ticket_rotation_s > 0 && now > 0 ? (uint64_t)now / s->d.ticket_rotation_s : 0;
}

/* Turns on session tickets for a new session under the current master key,
 * first replacing (and wiping) the key of a rotation period that has ended
 * (periods are counted from the Unix epoch, so nodes sharing a cluster
 * secret change keys together). GnuTLS copies the key into the session and
 * derives the ticket encryption keys from it, rotating them every ticket
 * lifetime; a new master key ends resumption of every ticket issued under the
 * old one (those clients do one full handshake). */
static void enable_tickets(struct kms_server *s, gnutls_session_t tls)
{
    pthread_mutex_lock(&s->ticket_lock);
    uint64_t epoch = ticket_epoch(s, time(NULL));
    if (s->ticket_key.data != NULL && epoch != s->ticket_epoch) {
        gnutls_datum_t fresh;
        if (make_ticket_key(s, epoch, &fresh) == KMS_OK) {
            gnutls_memset(s->ticket_key.data, 0, s->ticket_key.size);
            gnutls_free(s->ticket_key.data);
            s->ticket_key = fresh;
            s->ticket_epoch = epoch;
            kms_metrics_ticket_rotation();
            kms_log(KMS_LOG_INFO, "tls.ticket_key_rotated", NULL, "shared",
                    s->ticket_secret != NULL ? "cluster" : "no", NULL);
        } else {
            kms_log(KMS_LOG_WARN, "tls.ticket_key_rotation_failed", NULL, NULL);
        }
    }
    if (s->ticket_key.data != NULL) {
        (void)gnutls_session_ticket_enable_server(tls, &s->ticket_key);
        if (s->d.ticket_lifetime_s > 0)
            gnutls_db_set_cache_expiration(tls, (int)s->d.ticket_lifetime_s);
    }
    pthread_mutex_unlock(&s->ticket_lock);
}

static void on_connection(void *cls, struct MHD_Connection *c, void **socket_context,
                          enum MHD_ConnectionNotificationCode code)
{
    struct kms_server *s = cls;
    if (code == MHD_CONNECTION_NOTIFY_STARTED) {
        struct kms_conn *conn = calloc(1, sizeof(*conn));
        if (conn != NULL) {
            kms_buf_init(&conn->body, s->d.max_body);
            conn->fd = -1;
        }
        *socket_context = conn;
        const union MHD_ConnectionInfo *ci = MHD_get_connection_info(c, MHD_CONNECTION_INFO_GNUTLS_SESSION);
        if (ci != NULL && ci->tls_session != NULL) {
            gnutls_session_t tls = ci->tls_session;
            /* why: request (not require) a client certificate so the /health paths work
             * without one; MHD only requests with MEM_TRUST, which would also
             * advertise a stale CA list after a keystore reload (reference 2.1, option E). */
            gnutls_certificate_server_set_request(tls, GNUTLS_CERT_REQUEST);
            enable_tickets(s, tls);
        }
    } else if (code == MHD_CONNECTION_NOTIFY_CLOSED) {
        struct kms_conn *conn = *socket_context;
        if (conn != NULL) {
            kms_buf_free(&conn->body);
            kms_trust_unref(&conn->tls);
            free(conn);
        }
        *socket_context = NULL;
    }
}

/* ---- one TCP segment per small reply ---------------------------------------------- */

/* GnuTLS's push for sessions past their handshake (installed by install_push).
 * A record pushed while conn->hold is set (the reply's header, queued by
 * send_reply) is kept and sent together with the next push (the body), in
 * one sendmsg: one segment and one wake-up of the client instead of two.
 * Partial writes keep what is left of the held bytes and report EAGAIN, so
 * GnuTLS retries once the socket is writable; order is never changed. */
static ssize_t push_vec(gnutls_transport_ptr_t ptr, const giovec_t *iov, int iovcnt)
{
    struct kms_conn *conn = ptr;
    size_t total = 0;
    for (int i = 0; i < iovcnt; i++)
        total += iov[i].iov_len;
    if (conn->hold && conn->held_len == 0 && total <= sizeof(conn->held)) {
        for (int i = 0; i < iovcnt; i++) {
            memcpy(conn->held + conn->held_len, iov[i].iov_base, iov[i].iov_len);
            conn->held_len += iov[i].iov_len;
        }
        conn->hold = 0;
        return (ssize_t)total;
    }
    conn->hold = 0;
    struct iovec v[17];
    int n = 0;
    if (conn->held_len > 0)
        v[n++] = (struct iovec){conn->held, conn->held_len};
    for (int i = 0; i < iovcnt && n < (int)(sizeof(v) / sizeof(v[0])); i++)
        v[n++] = (struct iovec){iov[i].iov_base, iov[i].iov_len};
    struct msghdr msg = {.msg_iov = v, .msg_iovlen = (size_t)n};
    ssize_t sent = sendmsg(conn->fd, &msg, MSG_NOSIGNAL);
    if (sent < 0 || conn->held_len == 0)
        return sent;
    if ((size_t)sent <= conn->held_len) {
        memmove(conn->held, conn->held + sent, conn->held_len - (size_t)sent);
        conn->held_len -= (size_t)sent;
        errno = EAGAIN; /* why: nothing of this record left; GnuTLS pushes it again */
        return -1;
    }
    sent -= (ssize_t)conn->held_len;
    conn->held_len = 0;
    return sent;
}

/* Installs push_vec on a session whose handshake is done (so MHD has set
 * its transport): the receive side keeps MHD's transport untouched. */
static void install_push(struct MHD_Connection *c, struct kms_conn *conn)
{
    conn->fd = -1;
    const union MHD_ConnectionInfo *ti = MHD_get_connection_info(c, MHD_CONNECTION_INFO_GNUTLS_SESSION);
    const union MHD_ConnectionInfo *fi = MHD_get_connection_info(c, MHD_CONNECTION_INFO_CONNECTION_FD);
    if (ti == NULL || ti->tls_session == NULL || fi == NULL)
        return;
    gnutls_session_t tls = ti->tls_session;
    gnutls_transport_ptr_t recv_ptr = NULL, send_ptr = NULL;
    gnutls_transport_get_ptr2(tls, &recv_ptr, &send_ptr);
    conn->fd = fi->connect_fd;
    gnutls_transport_set_ptr2(tls, recv_ptr, conn);
    gnutls_transport_set_vec_push_function(tls, push_vec);
}

/* Sends what push_vec still holds, for a reply whose body never came (an
 * error path of MHD's): the client must not wait for a header. */
static void flush_held(struct kms_conn *conn)
{
    conn->hold = 0;
    while (conn->held_len > 0) {
        ssize_t n = send(conn->fd, conn->held, conn->held_len, MSG_NOSIGNAL | MSG_DONTWAIT);
        if (n <= 0) {
            if (n < 0 && errno == EINTR)
                continue;
            break; /* why: the socket is full or gone; MHD closes a connection it cannot write */
        }
        memmove(conn->held, conn->held + n, conn->held_len - (size_t)n);
        conn->held_len -= (size_t)n;
    }
}

static void decide_identity(struct kms_server *s, struct MHD_Connection *c, struct kms_conn *conn,
                            const char *req_id)
{
    const uint8_t *der = NULL;
    size_t len = 0;
    const union MHD_ConnectionInfo *ci = MHD_get_connection_info(c, MHD_CONNECTION_INFO_GNUTLS_SESSION);
    if (ci != NULL && ci->tls_session != NULL) {
        unsigned n = 0;
        const gnutls_datum_t *peers = gnutls_certificate_get_peers(ci->tls_session, &n);
        if (peers != NULL && n > 0) {
            der = peers[0].data;
            len = peers[0].size;
        }
    }
    struct kms_trust *t = kms_server_trust(s);
    kms_identity_decide(t->ks, s->d.roles, t->crls, der, len, time(NULL), &conn->id);
    conn->id_generation = t->generation;
    kms_trust_unref(&t);
    conn->decided = 1;
    const struct kms_identity *id = &conn->id;
    if (id->status == KMS_AUTH_OK) {
        kms_log(KMS_LOG_DEBUG, "auth.accepted", req_id, "alias", id->alias, "role", kms_role_name(id->role),
                "fingerprint", id->fingerprint, NULL);
    } else {
        kms_metrics_refused(id->status);
        const union MHD_ConnectionInfo *ai = MHD_get_connection_info(c, MHD_CONNECTION_INFO_CLIENT_ADDRESS);
        char peer[INET6_ADDRSTRLEN] = "";
        if (ai != NULL && ai->client_addr != NULL) {
            const struct sockaddr *sa = ai->client_addr;
            if (sa->sa_family == AF_INET)
                inet_ntop(AF_INET, &((const struct sockaddr_in *)(const void *)sa)->sin_addr, peer, sizeof(peer));
            else if (sa->sa_family == AF_INET6)
                inet_ntop(AF_INET6, &((const struct sockaddr_in6 *)(const void *)sa)->sin6_addr, peer,
                          sizeof(peer));
        }
        kms_log(KMS_LOG_WARN, "auth.refused", req_id, "reason", kms_auth_status_name(id->status), "detail",
                kms_auth_status_text(id->status), "alias", id->alias[0] ? id->alias : NULL, "subject",
                id->subject[0] ? id->subject : NULL, "fingerprint", id->fingerprint[0] ? id->fingerprint : NULL,
                "not_after", id->not_after[0] ? id->not_after : NULL, "peer", peer, NULL);
    }
}

const struct kms_identity *kms_request_identity(const struct kms_request *r) { return &r->conn->id; }

/* ---- responses ------------------------------------------------------------------ */

static double elapsed_ms(const struct timespec *start);
static kms_rc start_admin(struct kms_server *s);

struct wiped {
    uint8_t *data;
    size_t len;
};

static void free_wiped(void *cls)
{
    struct wiped *w = cls;
    kms_wipe(w->data, w->len);
    free(w->data);
    free(w);
}

static enum MHD_Result send_reply(struct MHD_Connection *c, struct kms_request *r)
{
    struct wiped *w = malloc(sizeof(*w));
    if (w == NULL)
        return MHD_NO;
    /* why: hand the wiped-on-free buffer itself to MHD: no unwiped copy of key material */
    w->data = r->reply.buf.data;
    w->len = r->reply.buf.len;
    r->reply.buf.data = NULL;
    r->reply.buf.len = 0;
    r->reply.buf.cap = 0;
    struct MHD_Response *resp = MHD_create_response_from_buffer_with_free_callback_cls(w->len, w->data,
                                                                                       free_wiped, w);
    if (resp == NULL) {
        free_wiped(w);
        return MHD_NO;
    }
    (void)MHD_add_response_header(resp, "Content-Type", "application/json");
    (void)MHD_add_response_header(resp, "X-Request-Id", r->id);
    (void)MHD_add_response_header(resp, "Cache-Control", "no-store");
    if (r->status == MHD_HTTP_METHOD_NOT_ALLOWED && r->route == NULL)
        (void)MHD_add_response_header(resp, "Allow", "GET, POST");
    /* why: MHD sends no body for HEAD, 1xx, 204 and 304; only then would a held header wait */
    int bodiless = r->method_head || r->status < 200 || r->status == 204 || r->status == 304;
    if (r->conn != NULL && r->conn->fd >= 0 && w->len > 0 && !bodiless)
        r->conn->hold = 1;
    enum MHD_Result ret = MHD_queue_response(c, (unsigned)r->status, resp);
    MHD_destroy_response(resp);
    r->responded = 1;
    kms_metrics_request(kms_router_index(r->route), r->route ? r->route->pattern : "unmatched", r->status,
                        elapsed_ms(&r->start) / 1e3);
    return ret;
}

static void build_error(struct kms_request *r, kms_rc rc)
{
    kms_jsonw_free(&r->reply);
    kms_jsonw_init(&r->reply, 4096);
    r->status = kms_error_status(rc);
    kms_jsonw_obj_begin(&r->reply);
    kms_jsonw_key(&r->reply, "error");
    kms_jsonw_obj_begin(&r->reply);
    kms_jsonw_kv(&r->reply, "code", kms_error_code(rc));
    int told = r->reject_rc == rc && r->reject_message[0] != '\0';
    if (told && r->reject_field[0] != '\0')
        kms_jsonw_kv(&r->reply, "field", r->reject_field);
    kms_jsonw_kv(&r->reply, "message", told ? r->reject_message : kms_error_message(rc));
    kms_jsonw_kv(&r->reply, "request_id", r->id);
    kms_jsonw_obj_end(&r->reply);
    kms_jsonw_obj_end(&r->reply);
}

static double elapsed_ms(const struct timespec *start)
{
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    return (double)(now.tv_sec - start->tv_sec) * 1e3 + (double)(now.tv_nsec - start->tv_nsec) / 1e6;
}

static void audit(struct kms_server *s, struct kms_request *r, kms_rc rc)
{
    if (r->route == NULL || r->route->op == NULL)
        return;
    const struct kms_identity *id = r->conn ? &r->conn->id : NULL;
    int authed = id != NULL && id->status == KMS_AUTH_OK;
    struct kms_audit_record rec = {
        .req_id = r->id,
        .client_alias = authed ? id->alias : NULL,
        .client_fp = (id != NULL && id->fingerprint[0]) ? id->fingerprint : NULL,
        .operation = r->route->op,
        .site_id = r->site_id[0] ? r->site_id : NULL,
        .key_ref = r->key_ref[0] ? r->key_ref : NULL,
        .outcome = rc == KMS_OK ? "ok" : kms_error_code(rc),
        .status = r->status,
        .latency_ms = elapsed_ms(&r->start),
    };
    kms_audit_write(s->d.audit, &rec);
}

static enum MHD_Result respond_error(struct kms_server *s, struct MHD_Connection *c, struct kms_request *r,
                                     kms_rc rc)
{
    build_error(r, rc);
    if (kms_jsonw_finish(&r->reply) != KMS_OK)
        return MHD_NO;
    const char *detail = r->detail[0] ? r->detail : kms_error_detail();
    if (kms_error_status(rc) >= 500)
        kms_log(KMS_LOG_ERROR, "request.failed", r->id, "code", kms_error_code(rc), "detail", detail, NULL);
    else if (rc != KMS_ERR_UNAUTHENTICATED)
        kms_log(KMS_LOG_INFO, "request.rejected", r->id, "code", kms_error_code(rc), "detail", detail, NULL);
    audit(s, r, rc);
    return send_reply(c, r);
}

/* ---- requests ------------------------------------------------------------------- */

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
static kms_rc admit(struct kms_server *s, struct MHD_Connection *c, struct kms_request *r, const char *url,
                    const char *method)
{
    int wrong_method = 0;
    r->route = kms_router_match(method, url, r->param, sizeof(r->param), &wrong_method);
    if (r->route == NULL)
        return wrong_method ? kms_fail(KMS_ERR_METHOD, "%s %s", method, url) : kms_fail(KMS_ERR_NOT_FOUND, "%s", url);
    if (r->route->roles != 0) {
        /* why: once per connection, and again only after a keystore or CRL
         * reload, so a revoked or removed client is refused on its next request */
        if (!r->conn->decided || r->conn->id_generation != __atomic_load_n(&s->generation, __ATOMIC_ACQUIRE))
            decide_identity(s, c, r->conn, r->id);
        if (r->conn->id.status != KMS_AUTH_OK)
            return kms_fail(KMS_ERR_UNAUTHENTICATED, "%s", kms_auth_status_name(r->conn->id.status));
        if ((r->route->roles & (1u << r->conn->id.role)) == 0)
            return kms_fail(KMS_ERR_FORBIDDEN, "role %s may not %s %s", kms_role_name(r->conn->id.role), method,
                            r->route->pattern);
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

static enum MHD_Result on_request(void *cls, struct MHD_Connection *c, const char *url, const char *method,
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
        clock_gettime(CLOCK_MONOTONIC, &r->start);
        new_request_id(r->id);
        kms_jsonw_init(&r->reply, 64 * 1024 + 4096);
        const union MHD_ConnectionInfo *ci = MHD_get_connection_info(c, MHD_CONNECTION_INFO_SOCKET_CONTEXT);
        r->conn = ci ? ci->socket_context : NULL; /* the stored pointer itself (reference §3.4) */
        if (r->conn == NULL)
            return MHD_NO; /* connection context could not be allocated: drop it */
        r->body = &r->conn->body;
        kms_buf_reset(r->body);
        if (!r->conn->counted) {
            const union MHD_ConnectionInfo *ti = MHD_get_connection_info(c, MHD_CONNECTION_INFO_GNUTLS_SESSION);
            kms_metrics_handshake(ti != NULL && ti->tls_session != NULL &&
                                  gnutls_session_is_resumed(ti->tls_session));
            r->conn->counted = 1;
            install_push(c, r->conn);
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
                return respond_error(s, c, r, r->error);
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
                return respond_error(s, c, r, r->error);
        }
        return MHD_YES;
    }

    if (r->error != KMS_OK)
        return respond_error(s, c, r, r->error);
    if (r->route->body == KMS_BODY_JSON && r->body->len == 0) {
        (void)kms_request_reject(r, KMS_ERR_BAD_JSON, "", "the body is empty: this takes a JSON object");
        keep_detail(r);
        return respond_error(s, c, r, KMS_ERR_BAD_JSON);
    }

    kms_error_clear();
    r->status = 200;
    kms_rc rc = r->route->handler(s, r);
    if (rc == KMS_OK)
        rc = kms_jsonw_finish(&r->reply);
    if (rc != KMS_OK)
        return respond_error(s, c, r, rc);
    audit(s, r, KMS_OK);
    return send_reply(c, r);
}

static void on_completed(void *cls, struct MHD_Connection *c, void **req_cls, enum MHD_RequestTerminationCode toe)
{
    (void)cls;
    (void)c;
    (void)toe;
    struct kms_request *r = *req_cls;
    if (r == NULL)
        return;
    if (r->conn != NULL && r->conn->fd >= 0 && (r->conn->hold || r->conn->held_len > 0))
        flush_held(r->conn);
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

/* ---- daemon --------------------------------------------------------------------- */

/* ---- trust generations and the TLS identity ------------------------------------- */

static struct kms_server *the_server; /* why: GnuTLS's certificate callback has no user pointer */

struct kms_trust *kms_server_trust(struct kms_server *s)
{
    pthread_mutex_lock(&s->trust_lock);
    struct kms_trust *t = s->trust;
    kms_trust_ref(t);
    pthread_mutex_unlock(&s->trust_lock);
    return t;
}

/* Called once per full handshake (not on resumption): present the current
 * generation's certificate and keep that generation alive for as long as the
 * connection lives (reference §2.3). */
static int on_certificate(gnutls_session_t session, const struct gnutls_cert_retr_st *info, gnutls_pcert_st **certs,
                          unsigned int *certs_length, gnutls_ocsp_data_st **ocsp, unsigned int *ocsp_length,
                          gnutls_privkey_t *privkey, unsigned int *flags)
{
    (void)info;
    /* MHD sets the session pointer to its connection (an internal detail the
     * reference documents); its socket context is our kms_conn. */
    struct MHD_Connection *c = gnutls_session_get_ptr(session);
    const union MHD_ConnectionInfo *ci = c ? MHD_get_connection_info(c, MHD_CONNECTION_INFO_SOCKET_CONTEXT) : NULL;
    struct kms_conn *conn = ci ? ci->socket_context : NULL;
    if (conn == NULL || the_server == NULL)
        return -1;
    if (conn->tls == NULL)
        conn->tls = kms_server_trust(the_server);
    *certs = conn->tls->pcerts;
    *certs_length = conn->tls->n_pcerts;
    *privkey = conn->tls->key;
    *ocsp = NULL;
    *ocsp_length = 0;
    *flags = 0; /* we keep ownership: the generation outlives the session */
    return 0;
}

static void install(struct kms_server *s, struct kms_trust *t)
{
    pthread_mutex_lock(&s->trust_lock);
    struct kms_trust *old = s->trust;
    s->trust = t;
    __atomic_store_n(&s->generation, t->generation, __ATOMIC_RELEASE);
    pthread_mutex_unlock(&s->trust_lock);
    kms_trust_unref(&old);
}

void kms_server_note_reload(struct kms_server *s, kms_rc rc, const char *detail)
{
    pthread_mutex_lock(&s->trust_lock);
    s->reload_at = time(NULL);
    s->reload_rc = rc;
    (void)snprintf(s->reload_detail, sizeof(s->reload_detail), "%s", detail ? detail : "");
    pthread_mutex_unlock(&s->trust_lock);
}

kms_rc kms_server_reload(struct kms_server *s, struct kms_keystore *ks, STACK_OF(X509_CRL) *crls)
{
    struct kms_trust *t = NULL;
    unsigned long next = __atomic_load_n(&s->generation, __ATOMIC_ACQUIRE) + 1;
    kms_rc rc = kms_trust_new(ks, crls, s->d.server_alias, next, &t);
    if (rc != KMS_OK) {
        char why[256];
        (void)snprintf(why, sizeof(why), "%s", kms_error_detail());
        kms_server_note_reload(s, rc, why);
        return kms_fail(rc, "%s", why);
    }
    install(s, t);
    kms_server_note_reload(s, KMS_OK, "");
    return KMS_OK;
}

unsigned long kms_server_generation(struct kms_server *s) { return __atomic_load_n(&s->generation, __ATOMIC_ACQUIRE); }

time_t kms_server_earliest_expiry(struct kms_server *s, char *alias, size_t cap)
{
    struct kms_trust *t = kms_server_trust(s);
    time_t na = t->earliest_not_after;
    (void)snprintf(alias, cap, "%s", t->earliest_alias);
    kms_trust_unref(&t);
    return na;
}

kms_rc kms_server_start(const struct kms_server_deps *d, struct kms_server **out)
{
    *out = NULL;
    struct kms_trust *t = NULL;
    KMS_GUARD(kms_trust_new(d->keystore, d->crls, d->server_alias, 1, &t));

    union {
        struct sockaddr_in v4;
        struct sockaddr_in6 v6;
    } addr;
    memset(&addr, 0, sizeof(addr));
    unsigned flags = MHD_USE_TLS | MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_EPOLL | MHD_USE_ERROR_LOG;
    if (inet_pton(AF_INET, d->address, &addr.v4.sin_addr) == 1) {
        addr.v4.sin_family = AF_INET;
        addr.v4.sin_port = htons(d->port);
    } else if (inet_pton(AF_INET6, d->address, &addr.v6.sin6_addr) == 1) {
        addr.v6.sin6_family = AF_INET6;
        addr.v6.sin6_port = htons(d->port);
        flags |= MHD_USE_IPv6;
    } else {
        kms_trust_unref(&t);
        return kms_fail(KMS_ERR_CONFIG, "kms.server.address '%s' is not an IPv4 or IPv6 address", d->address);
    }

    struct kms_server *s = calloc(1, sizeof(*s));
    if (s == NULL) {
        kms_trust_unref(&t);
        return KMS_ERR_NO_MEMORY;
    }
    s->d = *d;
    s->d.keystore = NULL; /* owned by the trust generation now */
    s->d.crls = NULL;
    pthread_mutex_init(&s->probe_lock, NULL);
    pthread_mutex_init(&s->trust_lock, NULL);
    install(s, t);
    the_server = s;
    kms_json_install_allocator();

    pthread_mutex_init(&s->ticket_lock, NULL);
    s->d.ticket_secret = NULL; /* why: borrowed from the caller; the copy below is ours */
    if (d->ticket_secret != NULL &&
        kms_secret_from(kms_secret_cdata(d->ticket_secret), kms_secret_len(d->ticket_secret), &s->ticket_secret) !=
            KMS_OK)
    {
        s->ticket_secret = NULL; /* why: out of secure heap; fall back to a per-node random key */
        kms_log(KMS_LOG_WARN, "tls.ticket_key_not_shared", NULL, NULL);
    }
    s->ticket_epoch = ticket_epoch(s, time(NULL));
    if (make_ticket_key(s, s->ticket_epoch, &s->ticket_key) != KMS_OK) {
        s->ticket_key.data = NULL; /* why: resumption off; every handshake is a full one */
        kms_log(KMS_LOG_WARN, "tls.ticket_key_unavailable", NULL, NULL);
    }

    struct MHD_OptionItem ops[12];
    size_t n = 0;
    ops[n++] = (struct MHD_OptionItem){MHD_OPTION_HTTPS_PRIORITIES, 0,
                                       (void *)"NORMAL:-VERS-ALL:+VERS-TLS1.3:+VERS-TLS1.2"};
    ops[n++] = (struct MHD_OptionItem){MHD_OPTION_SOCK_ADDR, 0, &addr};
    ops[n++] = (struct MHD_OptionItem){MHD_OPTION_NOTIFY_CONNECTION, (intptr_t)on_connection, s};
    ops[n++] = (struct MHD_OptionItem){MHD_OPTION_NOTIFY_COMPLETED, (intptr_t)on_completed, s};
    ops[n++] = (struct MHD_OptionItem){MHD_OPTION_CONNECTION_TIMEOUT, (intptr_t)d->conn_timeout_s, NULL};
    ops[n++] = (struct MHD_OptionItem){MHD_OPTION_CONNECTION_LIMIT, (intptr_t)d->conn_limit, NULL};
    ops[n++] = (struct MHD_OptionItem){MHD_OPTION_LISTEN_BACKLOG_SIZE, 1024, NULL};
    if (d->conn_memory > 0)
        ops[n++] = (struct MHD_OptionItem){MHD_OPTION_CONNECTION_MEMORY_LIMIT, (intptr_t)d->conn_memory, NULL};
    if (d->threads > 1)
        ops[n++] = (struct MHD_OptionItem){MHD_OPTION_THREAD_POOL_SIZE, (intptr_t)d->threads, NULL};
    ops[n++] = (struct MHD_OptionItem){MHD_OPTION_END, 0, NULL};
    /* why: the certificate callback goes in the varargs, since an option
     * array item would cast a function pointer to void * */
    s->daemon = MHD_start_daemon(flags, d->port, NULL, NULL, on_request, s, MHD_OPTION_HTTPS_CERT_CALLBACK2,
                                 on_certificate, MHD_OPTION_ARRAY, ops, MHD_OPTION_END);
    int saved = errno;
    if (s->daemon == NULL) {
        the_server = NULL;
        kms_trust_unref(&s->trust);
        pthread_mutex_destroy(&s->probe_lock);
        pthread_mutex_destroy(&s->trust_lock);
        free_ticket_key(s);
        free(s);
        return kms_fail(KMS_ERR_IO, "cannot listen on %s:%u: %s", d->address, (unsigned)d->port,
                        saved ? strerror(saved) : "libmicrohttpd refused the configuration");
    }
    const union MHD_DaemonInfo *di = MHD_get_daemon_info(s->daemon, MHD_DAEMON_INFO_BIND_PORT);
    s->port = di ? di->port : d->port;
    *out = s;
    kms_rc arc = start_admin(s);
    if (arc != KMS_OK)
        kms_server_stop(out);
    return arc;
}

uint16_t kms_server_port(const struct kms_server *s) { return s->port; }
uint16_t kms_server_admin_port(const struct kms_server *s) { return s->admin_port; }

/* ---- admin listener: GET /metrics ------------------------------------------------ */

static void gauges(struct kms_server *s, struct kms_metrics_gauges *g)
{
    memset(g, 0, sizeof(*g));
    struct kms_trust *t = kms_server_trust(s);
    g->keystore_generation = t->generation;
    g->earliest_not_after = (long long)t->earliest_not_after;
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
    if (strcmp(url, "/metrics") != 0) {
        status = MHD_HTTP_NOT_FOUND;
        rc = kms_buf_append_str(&out, "not found: the admin listener serves GET /metrics\n");
    } else if (strcmp(method, "GET") != 0) {
        status = MHD_HTTP_METHOD_NOT_ALLOWED;
        rc = kms_buf_append_str(&out, "method not allowed\n");
    } else {
        struct kms_metrics_gauges g;
        gauges(s, &g);
        rc = kms_metrics_render(&g, &out);
    }
    if (rc != KMS_OK) {
        kms_buf_free(&out);
        return MHD_NO;
    }
    struct MHD_Response *resp = MHD_create_response_from_buffer(out.len, out.data, MHD_RESPMEM_MUST_COPY);
    kms_buf_free(&out);
    if (resp == NULL)
        return MHD_NO;
    (void)MHD_add_response_header(resp, "Content-Type", "text/plain; version=0.0.4");
    enum MHD_Result ret = MHD_queue_response(c, status, resp);
    MHD_destroy_response(resp);
    return ret;
}

static kms_rc start_admin(struct kms_server *s)
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

void kms_server_stop(struct kms_server **sp)
{
    if (sp == NULL || *sp == NULL)
        return;
    struct kms_server *s = *sp;
    if (s->admin != NULL)
        MHD_stop_daemon(s->admin);
    MHD_stop_daemon(s->daemon);
    the_server = NULL;
    kms_trust_unref(&s->trust);
    pthread_mutex_destroy(&s->trust_lock);
    pthread_mutex_destroy(&s->probe_lock);
    free_ticket_key(s);
    free(s);
    *sp = NULL;
}
