/* The registry of open connections (conn.c's notifications), kept for the
 * front thread: it shuts down connections whose request head is late
 * (kms.server.header.timeout) and kept-alive connections whose certificate
 * has become refused; libmicrohttpd then reads the end of the stream and
 * closes them (the descriptor stays its). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>

#include "common/clock.h"
#include "server/front_int.h"
#include "server/ocsp.h"

/* Shuts down connections whose request head is late; libmicrohttpd then
 * reads the end of the stream and closes them (the descriptor stays its). */
void kms_front_sweep(struct kms_front *f, uint64_t now)
{
    pthread_mutex_lock(&f->lock);
    for (struct kms_conn *c = f->conns; c != NULL; c = c->next) {
        uint64_t d = __atomic_load_n(&c->head_deadline_ns, __ATOMIC_RELAXED);
        if (d == 0 || now < d)
            continue;
        __atomic_store_n(&c->head_deadline_ns, 0, __ATOMIC_RELAXED);
        (void)shutdown(c->sock, SHUT_RDWR);
        kms_front_closed(f, KMS_CLOSE_HEAD_TIMEOUT, c->peer,
                         "no complete request head within kms.server.header.timeout");
    }
    pthread_mutex_unlock(&f->lock);
}

/* Decides again every connection whose identity was decided OK, once trust
 * (keystore, CRLs), CRL freshness or an OCSP answer changed, and shuts down
 * those now refused: a revoked device's kept-alive connection ends within
 * the refresh interval that found it revoked, not on its next request.
 * why under the lock, all at once: such changes are rare, and a connection
 * must not be freed while its certificate is read. */
void kms_front_recheck(struct kms_server *s, struct kms_front *f)
{
    time_t now = time(NULL), next;
    int stale = kms_server_crls_stale(s, now, &next);
    unsigned long gen = kms_server_generation(s);
    unsigned long epoch = s->d.ocsp != NULL ? kms_ocsp_epoch(s->d.ocsp) : 0;
    if (gen == f->seen_generation && epoch == f->seen_ocsp_epoch && stale == f->seen_stale)
        return;
    f->seen_generation = gen;
    f->seen_ocsp_epoch = epoch;
    f->seen_stale = stale;
    struct kms_trust *t = kms_server_trust(s);
    pthread_mutex_lock(&f->lock);
    for (struct kms_conn *c = f->conns; c != NULL; c = c->next) {
        if (c->ok_der == NULL)
            continue;
        enum kms_auth_status st = kms_conn_redecide(s, t, c->ok_der, c->ok_der_len, now);
        if (st == KMS_AUTH_OK)
            continue;
        free(c->ok_der);
        c->ok_der = NULL;
        (void)shutdown(c->sock, SHUT_RDWR);
        char detail[160];
        (void)snprintf(detail, sizeof(detail), "a kept-alive connection whose certificate is refused now: %s",
                       kms_auth_status_name(st));
        kms_front_closed(f, KMS_CLOSE_IDENTITY_REFUSED, c->peer, detail);
    }
    pthread_mutex_unlock(&f->lock);
    kms_trust_unref(&t);
}

void kms_front_conn_started(struct kms_server *s, struct kms_conn *conn, struct MHD_Connection *c)
{
    struct kms_front *f = s->front;
    const union MHD_ConnectionInfo *fi = MHD_get_connection_info(c, MHD_CONNECTION_INFO_CONNECTION_FD);
    const union MHD_ConnectionInfo *ai = MHD_get_connection_info(c, MHD_CONNECTION_INFO_CLIENT_ADDRESS);
    conn->sock = fi != NULL ? fi->connect_fd : -1;
    if (ai != NULL && ai->client_addr != NULL)
        kms_front_addr_text(ai->client_addr, conn->peer, sizeof(conn->peer));
    conn->head_ns = f->head_ns;
    /* why from the start: the TLS handshake and the first head share the deadline */
    __atomic_store_n(&conn->head_deadline_ns, kms_now_ns() + f->head_ns, __ATOMIC_RELAXED);
    pthread_mutex_lock(&f->lock);
    conn->prev = NULL;
    conn->next = f->conns;
    if (f->conns != NULL)
        f->conns->prev = conn;
    f->conns = conn;
    pthread_mutex_unlock(&f->lock);
}

void kms_front_conn_closed(struct kms_server *s, struct kms_conn *conn)
{
    struct kms_front *f = s->front;
    pthread_mutex_lock(&f->lock);
    if (conn->prev != NULL)
        conn->prev->next = conn->next;
    else if (f->conns == conn)
        f->conns = conn->next;
    if (conn->next != NULL)
        conn->next->prev = conn->prev;
    conn->prev = conn->next = NULL;
    free(conn->ok_der);
    conn->ok_der = NULL;
    pthread_mutex_unlock(&f->lock);
}

void kms_front_conn_decided(struct kms_server *s, struct kms_conn *conn, const uint8_t *der, size_t len)
{
    struct kms_front *f = s->front;
    uint8_t *copy = NULL;
    if (der != NULL && len > 0 && (copy = malloc(len)) != NULL)
        memcpy(copy, der, len);
    pthread_mutex_lock(&f->lock);
    free(conn->ok_der);
    conn->ok_der = copy;
    conn->ok_der_len = copy != NULL ? len : 0;
    pthread_mutex_unlock(&f->lock);
}

void kms_front_head_begins(struct kms_conn *conn)
{
    conn->awaiting_head = 0;
    __atomic_store_n(&conn->head_deadline_ns, kms_now_ns() + conn->head_ns, __ATOMIC_RELAXED);
}

void kms_front_head_done(struct kms_conn *conn)
{
    conn->awaiting_head = 0;
    __atomic_store_n(&conn->head_deadline_ns, 0, __ATOMIC_RELAXED);
}
