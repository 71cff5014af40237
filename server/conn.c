/* Per TLS connection: its context (identity decided once, body buffer), and
 * its transport once the handshake is done: replies leave in one segment
 * (push_vec) and requests arrive in one read (pull). */
#include <arpa/inet.h>
#include <errno.h>
#include <gnutls/gnutls.h>
#include <microhttpd.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/uio.h>

#include "common/log.h"
#include "server/ocsp.h"
#include "server/internal.h"
#include "server/metrics.h"

void kms_conn_notify(void *cls, struct MHD_Connection *c, void **socket_context,
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
        if (conn != NULL)
            kms_front_conn_started(s, conn, c);
        const union MHD_ConnectionInfo *ci = MHD_get_connection_info(c, MHD_CONNECTION_INFO_GNUTLS_SESSION);
        if (ci != NULL && ci->tls_session != NULL) {
            gnutls_session_t tls = ci->tls_session;
            /* why: request (not require) a client certificate so the /health paths work
             * without one; MHD only requests with MEM_TRUST, which would also
             * advertise a stale CA list after a keystore reload (reference 2.1, option E). */
            gnutls_certificate_server_set_request(tls, GNUTLS_CERT_REQUEST);
            kms_tls_enable_tickets(s, tls);
        }
    } else if (code == MHD_CONNECTION_NOTIFY_CLOSED) {
        struct kms_conn *conn = *socket_context;
        if (conn != NULL) {
            kms_front_conn_closed(s, conn);
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

/* GnuTLS's pull for sessions past their handshake: one recv of up to
 * sizeof(conn->rd) bytes serves both of GnuTLS's reads of a record (its
 * 5-byte header, then the rest), where MHD's transport made two syscalls.
 * A read as large as the buffer goes straight to GnuTLS's.
 * why this cannot strand bytes: for TLS, MHD keeps a connection read-ready
 * until a read reports EAGAIN (connection_https.c, recv_tls_adapter), and
 * this returns EAGAIN only with the buffer empty and the socket drained, so
 * a pipelined request left here is read before MHD waits on epoll again. */
static ssize_t pull(gnutls_transport_ptr_t ptr, void *data, size_t n)
{
    struct kms_conn *conn = ptr;
    if (conn->rd_pos == conn->rd_len) {
        conn->rd_pos = conn->rd_len = 0;
        if (n >= sizeof(conn->rd)) {
            ssize_t got = recv(conn->fd, data, n, 0);
            if (got > 0 && conn->awaiting_head)
                kms_front_head_begins(conn);
            return got;
        }
        ssize_t got = recv(conn->fd, conn->rd, sizeof(conn->rd), 0);
        if (got <= 0)
            return got;
        conn->rd_len = (size_t)got;
    }
    /* why only with bytes in hand: MHD reads until EAGAIN after every reply,
     * and an idle keep-alive connection is not a late head */
    if (conn->awaiting_head)
        kms_front_head_begins(conn);
    size_t take = conn->rd_len - conn->rd_pos < n ? conn->rd_len - conn->rd_pos : n;
    memcpy(data, conn->rd + conn->rd_pos, take);
    conn->rd_pos += take;
    return (ssize_t)take;
}

/* GnuTLS asks this whether a read would find data (it must not poll the
 * transport pointer, which is no longer a socket). */
static int pull_timeout(gnutls_transport_ptr_t ptr, unsigned int ms)
{
    struct kms_conn *conn = ptr;
    if (conn->rd_pos < conn->rd_len)
        return 1;
    struct pollfd p = {.fd = conn->fd, .events = POLLIN};
    int timeout = ms == GNUTLS_INDEFINITE_TIMEOUT ? -1 : (int)ms;
    return poll(&p, 1, timeout);
}

/* Installs push_vec and pull on a session whose handshake is done (so
 * nothing MHD's transport read is still to come). */
void kms_conn_install_io(struct MHD_Connection *c, struct kms_conn *conn)
{
    conn->fd = -1;
    const union MHD_ConnectionInfo *ti = MHD_get_connection_info(c, MHD_CONNECTION_INFO_GNUTLS_SESSION);
    const union MHD_ConnectionInfo *fi = MHD_get_connection_info(c, MHD_CONNECTION_INFO_CONNECTION_FD);
    if (ti == NULL || ti->tls_session == NULL || fi == NULL)
        return;
    gnutls_session_t tls = ti->tls_session;
    conn->fd = fi->connect_fd;
    conn->rd_pos = conn->rd_len = 0;
    gnutls_transport_set_ptr(tls, conn);
    gnutls_transport_set_vec_push_function(tls, push_vec);
    gnutls_transport_set_pull_function(tls, pull);
    gnutls_transport_set_pull_timeout_function(tls, pull_timeout);
}

/* Sends what push_vec still holds, for a reply whose body never came (an
 * error path of MHD's): the client must not wait for a header. */
void kms_conn_flush_held(struct kms_conn *conn)
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

/* The DER of the client's certificate: 1 with *der and *len, or 0 when it presented none. */
static int peer_der(struct MHD_Connection *c, const uint8_t **der, size_t *len)
{
    *der = NULL;
    *len = 0;
    const union MHD_ConnectionInfo *ci = MHD_get_connection_info(c, MHD_CONNECTION_INFO_GNUTLS_SESSION);
    if (ci == NULL || ci->tls_session == NULL)
        return 0;
    unsigned n = 0;
    const gnutls_datum_t *peers = gnutls_certificate_get_peers(ci->tls_session, &n);
    if (peers == NULL || n == 0)
        return 0;
    *der = peers[0].data;
    *len = peers[0].size;
    return 1;
}

int kms_conn_has_certificate(struct MHD_Connection *c)
{
    const uint8_t *der;
    size_t len;
    return peer_der(c, &der, &len);
}

/* The certificate checks every decision makes, first or again: keystore,
 * roles, CRLs (kms.auth.crl.stale). */
static void decide(struct kms_server *s, struct kms_trust *t, const uint8_t *der, size_t len, time_t now,
                   struct kms_identity *id)
{
    kms_identity_decide_ex(t->ks, s->d.roles, t->crls, der, len, now,
                           s->d.crl_accept_stale ? KMS_ID_ACCEPT_STALE_CRL : 0, id);
}

/* What an OCSP status makes of an identity decided OK (kms.auth.ocsp=soft|hard). */
static enum kms_auth_status ocsp_verdict(const struct kms_server *s, enum kms_ocsp_status st)
{
    if (st == KMS_OCSP_REVOKED)
        return KMS_AUTH_REVOKED;
    return st == KMS_OCSP_UNKNOWN && s->d.ocsp_hard ? KMS_AUTH_OCSP_UNKNOWN : KMS_AUTH_OK;
}

/* kms.auth.ocsp: the responder's word on an identity decided OK. */
static void check_ocsp(struct kms_server *s, struct kms_trust *t, const uint8_t *der, size_t len,
                       struct kms_conn *conn, const char *req_id)
{
    conn->ocsp_epoch = kms_ocsp_epoch(s->d.ocsp);
    const unsigned char *p = der;
    X509 *cert = d2i_X509(NULL, &p, (long)len);
    if (cert == NULL)
        return;
    char why[512];
    enum kms_ocsp_status st = kms_ocsp_check(s->d.ocsp, cert, kms_keystore_issuer_of(t->ks, cert),
                                             conn->id.fingerprint, why, sizeof(why));
    X509_free(cert);
    enum kms_auth_status verdict = ocsp_verdict(s, st);
    if (verdict != KMS_AUTH_OK) {
        conn->id.status = verdict;
        conn->id.role = KMS_ROLE_NONE;
    }
    if (st == KMS_OCSP_UNKNOWN)
        kms_log(s->d.ocsp_hard ? KMS_LOG_WARN : KMS_LOG_INFO, "auth.ocsp_unknown", req_id, "alias", conn->id.alias,
                "detail", why, "kms.auth.ocsp", s->d.ocsp_hard ? "hard: refused" : "soft: accepted", NULL);
}

void kms_conn_decide_identity(struct kms_server *s, struct MHD_Connection *c, struct kms_conn *conn,
                            const char *req_id)
{
    const uint8_t *der;
    size_t len;
    (void)peer_der(c, &der, &len);
    struct kms_trust *t = kms_server_trust(s);
    time_t now = time(NULL);
    decide(s, t, der, len, now, &conn->id);
    if (conn->id.status == KMS_AUTH_OK && s->d.ocsp != NULL)
        check_ocsp(s, t, der, len, conn, req_id);
    conn->id_generation = t->generation;
    conn->decided_at = now;
    kms_trust_unref(&t);
    conn->decided = 1;
    kms_front_conn_decided(s, conn, conn->id.status == KMS_AUTH_OK ? der : NULL, len);
    const struct kms_identity *id = &conn->id;
    if (id->status == KMS_AUTH_OK) {
        kms_log(KMS_LOG_DEBUG, "auth.accepted", req_id, "alias", id->alias, "role", kms_role_name(id->role),
                "fingerprint", id->fingerprint, NULL);
    } else {
        kms_metrics_refused(id->status);
        kms_log(KMS_LOG_WARN, "auth.refused", req_id, "reason", kms_auth_status_name(id->status), "detail",
                kms_auth_status_text(id->status), "alias", id->alias[0] ? id->alias : NULL, "subject",
                id->subject[0] ? id->subject : NULL, "fingerprint", id->fingerprint[0] ? id->fingerprint : NULL,
                "not_after", id->not_after[0] ? id->not_after : NULL, "peer", conn->peer, NULL);
    }
}

/* What deciding der again would say now, off the request path: the same
 * rules as kms_conn_decide_identity, with OCSP answered from the cache only
 * (the front thread must never wait for a responder). */
enum kms_auth_status kms_conn_redecide(struct kms_server *s, struct kms_trust *t, const uint8_t *der, size_t len,
                                       time_t now)
{
    struct kms_identity id;
    decide(s, t, der, len, now, &id);
    if (id.status != KMS_AUTH_OK || s->d.ocsp == NULL)
        return id.status;
    return ocsp_verdict(s, kms_ocsp_cached(s->d.ocsp, id.fingerprint));
}

const struct kms_identity *kms_request_identity(const struct kms_request *r) { return &r->conn->id; }
