/* The TLS listener's front door. kmsd accepts connections itself and hands
 * each to libmicrohttpd (MHD_add_connection) with the address it should
 * know the client by: behind a load balancer named in
 * kms.server.proxy.trusted, the one its PROXY header gives (libmicrohttpd
 * reads no PROXY headers). The same thread keeps the request-head deadline
 * (kms.server.header.timeout) for every open connection, and shuts down
 * kept-alive connections whose certificate has become refused (revoked by a
 * new CRL or OCSP answer, a stale CRL, removed from the keystore): conns.c.
 *
 * why one thread that polls, not a read per connection: a peer that sends
 * its PROXY header slowly (or not at all) must not hold up anyone else's
 * accept. Headers are consumed exactly: the TLS ClientHello that follows
 * stays in the socket for GnuTLS. */
#define _GNU_SOURCE /* accept4, pipe2 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <microhttpd.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "common/clock.h"
#include "common/log.h"
#include "server/front_int.h"
#include "server/proxy.h"

#define PENDING_MAX 256         /* connections waiting for their PROXY header */
#define ACCEPT_BURST 64         /* accepts per wake-up, so pending headers are read in between */
#define SWEEP_NS 250000000ull   /* head deadlines and kept-alive identities are checked this often */
#define LOG_GAP_NS 1000000000ull /* at most one warning per second and reason */

struct pending {
    int fd;
    int trusted;
    uint64_t deadline_ns;
    struct sockaddr_storage peer;
    socklen_t peer_len;
    size_t got; /* header bytes consumed so far */
    uint8_t buf[KMS_PROXY_MAX];
};


void kms_front_addr_text(const struct sockaddr *sa, char *out, size_t cap)
{
    out[0] = '\0';
    if (sa->sa_family == AF_INET)
        (void)inet_ntop(AF_INET, &((const struct sockaddr_in *)(const void *)sa)->sin_addr, out, (socklen_t)cap);
    else if (sa->sa_family == AF_INET6)
        (void)inet_ntop(AF_INET6, &((const struct sockaddr_in6 *)(const void *)sa)->sin6_addr, out, (socklen_t)cap);
}

/* Counts a closed connection and warns, at most once a second per reason
 * (a flood must not become a flood of log lines); the warning says how many
 * went unlogged since the last one. */
void kms_front_closed(struct kms_front *f, enum kms_conn_close why, const char *peer, const char *detail)
{
    kms_metrics_conn_closed(why);
    uint64_t now = kms_now_ns();
    if (f->last_log[why] != 0 && now - f->last_log[why] < LOG_GAP_NS) {
        f->unlogged[why]++;
        return;
    }
    char more[24];
    (void)snprintf(more, sizeof(more), "%llu", (unsigned long long)f->unlogged[why]);
    kms_log(KMS_LOG_WARN, "conn.closed", NULL, "reason", kms_conn_close_name(why), "peer", peer, "detail", detail,
            "unlogged_since_last", more, NULL);
    f->last_log[why] = now;
    f->unlogged[why] = 0;
}

kms_rc kms_front_listen(struct kms_server *s)
{
    const struct kms_server_deps *d = &s->d;
    struct kms_front *f = calloc(1, sizeof(*f));
    if (f == NULL)
        return KMS_ERR_NO_MEMORY;
    f->listen_fd = -1;
    f->wake[0] = f->wake[1] = -1;
    pthread_mutex_init(&f->lock, NULL);
    s->front = f;
    char why[160];
    if (kms_addrlist_parse(d->proxy_trusted != NULL ? d->proxy_trusted : "", &f->trusted, why, sizeof(why)) != KMS_OK)
        return kms_fail(KMS_ERR_CONFIG, "kms.server.proxy.trusted: %s", why);
    f->proxy = f->trusted.n > 0;
    f->head_ns = (uint64_t)(d->header_timeout_s > 0 ? d->header_timeout_s : 10) * 1000000000ull;
    if (f->proxy && (f->pending = calloc(PENDING_MAX, sizeof(*f->pending))) == NULL)
        return KMS_ERR_NO_MEMORY;
    if (d->conn_rate.rate > 0) {
        struct kms_rl_limit lim[KMS_RL_ROLES][KMS_RL_BUDGETS];
        memset(lim, 0, sizeof(lim));
        lim[KMS_ROLE_NONE][KMS_RL_OTHER] = d->conn_rate;
        KMS_GUARD(kms_ratelimit_new(lim, NULL, &f->conn_rl));
    }

    struct sockaddr_storage ss;
    memset(&ss, 0, sizeof(ss));
    socklen_t len;
    struct sockaddr_in *v4 = (struct sockaddr_in *)(void *)&ss;
    struct sockaddr_in6 *v6 = (struct sockaddr_in6 *)(void *)&ss;
    if (inet_pton(AF_INET, d->address, &v4->sin_addr) == 1) {
        v4->sin_family = AF_INET;
        v4->sin_port = htons(d->port);
        len = sizeof(*v4);
    } else if (inet_pton(AF_INET6, d->address, &v6->sin6_addr) == 1) {
        v6->sin6_family = AF_INET6;
        v6->sin6_port = htons(d->port);
        len = sizeof(*v6);
    } else {
        return kms_fail(KMS_ERR_CONFIG, "kms.server.address '%s' is not an IPv4 or IPv6 address", d->address);
    }
    int fd = socket(ss.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return kms_fail(KMS_ERR_IO, "cannot make a socket for %s:%u: %s", d->address, (unsigned)d->port,
                        strerror(errno));
    int on = 1;
    (void)setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &on, sizeof(on));
    if (ss.ss_family == AF_INET6)
        (void)setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &on, sizeof(on));
    if (bind(fd, (struct sockaddr *)&ss, len) != 0 || listen(fd, 1024) != 0) {
        int e = errno;
        close(fd);
        return kms_fail(KMS_ERR_IO, "cannot listen on %s:%u: %s", d->address, (unsigned)d->port, strerror(e));
    }
    f->listen_fd = fd;
    len = sizeof(ss);
    if (getsockname(fd, (struct sockaddr *)&ss, &len) == 0)
        s->port = ntohs(ss.ss_family == AF_INET ? v4->sin_port : v6->sin6_port);
    if (pipe2(f->wake, O_CLOEXEC | O_NONBLOCK) != 0)
        return kms_fail(KMS_ERR_IO, "cannot make the listener's wake-up pipe: %s", strerror(errno));
    return KMS_OK;
}

/* libmicrohttpd takes the socket, and closes it when it refuses it. A
 * client address over kms.ratelimit.connections is closed here, before its
 * TLS handshake costs anything; limited 0: a load balancer's own health
 * check (PROXY LOCAL), never limited. */
static void hand_over(struct kms_server *s, int fd, const struct sockaddr *sa, socklen_t len, int limited)
{
    char peer[INET6_ADDRSTRLEN];
    uint64_t retry_ms;
    if (limited && s->front->conn_rl != NULL) {
        kms_front_addr_text(sa, peer, sizeof(peer));
        if (!kms_ratelimit_take(s->front->conn_rl, peer, KMS_ROLE_NONE, KMS_RL_OTHER, kms_now_ns(), &retry_ms)) {
            kms_front_closed(s->front, KMS_CLOSE_RATE_LIMITED, peer,
                             "this client address opens connections faster than kms.ratelimit.connections");
            close(fd);
            return;
        }
    }
    if (MHD_add_connection(s->daemon, fd, sa, len) == MHD_YES)
        return;
    int e = errno;
    kms_front_addr_text(sa, peer, sizeof(peer));
    if (e == ENFILE)
        kms_front_closed(s->front, KMS_CLOSE_LIMIT, peer,
                         "kms.server.connection.limit or kms.server.connection.per.address reached");
    else
        kms_log(KMS_LOG_WARN, "conn.refused", NULL, "peer", peer, "detail", strerror(e), NULL);
}

static void drop_pending(struct kms_front *f, size_t i, int close_fd)
{
    if (close_fd)
        close(f->pending[i].fd);
    f->npending--;
    if (i != f->npending)
        f->pending[i] = f->pending[f->npending];
}

/* Bytes arrived on a connection waiting for its PROXY header (trusted peer)
 * or for its first byte (anyone else: a PROXY header from them is refused).
 * Returns 1 when the connection is done with (handed over or closed). */
static int on_pending(struct kms_server *s, struct pending *p)
{
    struct kms_front *f = s->front;
    char peer[INET6_ADDRSTRLEN];
    kms_front_addr_text((const struct sockaddr *)&p->peer, peer, sizeof(peer));
    uint8_t look[KMS_PROXY_MAX];
    size_t room = sizeof(p->buf) - p->got;
    ssize_t n = recv(p->fd, look, room, MSG_PEEK);
    if (n < 0 && (errno == EAGAIN || errno == EINTR))
        return 0;
    if (n <= 0) {
        close(p->fd);
        return 1; /* went away before a byte */
    }
    if (!p->trusted) {
        if (kms_proxy_may_start(look, (size_t)n)) {
            kms_front_closed(f, KMS_CLOSE_PROXY_UNTRUSTED, peer,
                             "a PROXY header from an address not in kms.server.proxy.trusted");
            close(p->fd);
            return 1;
        }
        hand_over(s, p->fd, (const struct sockaddr *)&p->peer, p->peer_len, 1);
        return 1;
    }
    memcpy(p->buf + p->got, look, (size_t)n);
    struct kms_proxy_header h;
    char why[160];
    enum kms_proxy_result r = kms_proxy_parse(p->buf, p->got + (size_t)n, &h, why, sizeof(why));
    if (r == KMS_PROXY_INVALID) {
        kms_front_closed(f, KMS_CLOSE_PROXY_INVALID, peer, why);
        close(p->fd);
        return 1;
    }
    /* consume the header's bytes only: NEED_MORE means every byte seen is the header's */
    size_t take = r == KMS_PROXY_OK ? h.len - p->got : (size_t)n;
    if (recv(p->fd, look, take, 0) != (ssize_t)take) {
        close(p->fd);
        return 1;
    }
    p->got += take;
    if (r == KMS_PROXY_NEED_MORE)
        return 0;
    if (h.local)
        hand_over(s, p->fd, (const struct sockaddr *)&p->peer, p->peer_len, 0);
    else
        hand_over(s, p->fd, (const struct sockaddr *)&h.src, h.src_len, 1);
    return 1;
}

static void accept_some(struct kms_server *s, uint64_t now)
{
    struct kms_front *f = s->front;
    for (int i = 0; i < ACCEPT_BURST; i++) {
        struct sockaddr_storage peer;
        socklen_t len = sizeof(peer);
        int fd = accept4(f->listen_fd, (struct sockaddr *)&peer, &len, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) {
            if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS || errno == ENOMEM) {
                /* why: the backlog stays readable; without a pause this thread would spin */
                f->accept_pause_until = now + 100000000ull;
                kms_log(KMS_LOG_ERROR, "conn.accept_failed", NULL, "detail", strerror(errno), NULL);
            }
            return;
        }
        if (!f->proxy) {
            hand_over(s, fd, (const struct sockaddr *)&peer, len, 1);
            continue;
        }
        if (f->npending == PENDING_MAX) {
            char text[INET6_ADDRSTRLEN];
            kms_front_addr_text((const struct sockaddr *)&peer, text, sizeof(text));
            kms_front_closed(f, KMS_CLOSE_BUSY, text, "256 connections are already waiting for their first bytes");
            close(fd);
            continue;
        }
        struct pending *p = &f->pending[f->npending++];
        p->fd = fd;
        p->peer = peer;
        p->peer_len = len;
        p->got = 0;
        p->deadline_ns = now + f->head_ns;
        p->trusted = kms_addrlist_match(&f->trusted, (const struct sockaddr *)&peer);
    }
}

static void *front_main(void *arg)
{
    struct kms_server *s = arg;
    struct kms_front *f = s->front;
    struct pollfd *pfd = calloc(2 + PENDING_MAX, sizeof(*pfd));
    if (pfd == NULL) {
        kms_log(KMS_LOG_ERROR, "conn.front_failed", NULL, "detail", "out of memory: no connections accepted", NULL);
        return NULL;
    }
    uint64_t next_sweep = kms_now_ns() + SWEEP_NS;
    for (;;) {
        uint64_t now = kms_now_ns();
        uint64_t until = next_sweep;
        int accepting = now >= f->accept_pause_until;
        if (!accepting && f->accept_pause_until < until)
            until = f->accept_pause_until;
        pfd[0] = (struct pollfd){.fd = accepting ? f->listen_fd : -1, .events = POLLIN};
        pfd[1] = (struct pollfd){.fd = f->wake[0], .events = POLLIN};
        size_t np = f->npending;
        for (size_t i = 0; i < np; i++) {
            pfd[2 + i] = (struct pollfd){.fd = f->pending[i].fd, .events = POLLIN};
            if (f->pending[i].deadline_ns < until)
                until = f->pending[i].deadline_ns;
        }
        int ms = until > now ? (int)((until - now) / 1000000u) + 1 : 0;
        if (poll(pfd, 2 + np, ms) < 0 && errno != EINTR)
            kms_log(KMS_LOG_ERROR, "conn.poll_failed", NULL, "detail", strerror(errno), NULL);
        if (pfd[1].revents != 0)
            break;
        now = kms_now_ns();
        /* why backwards: drop_pending moves the last entry into the freed slot */
        for (size_t i = np; i-- > 0;) {
            struct pending *p = &f->pending[i];
            int done = 0;
            if (pfd[2 + i].revents != 0) {
                done = on_pending(s, p);
            } else if (now >= p->deadline_ns) {
                char peer[INET6_ADDRSTRLEN];
                kms_front_addr_text((const struct sockaddr *)&p->peer, peer, sizeof(peer));
                if (p->trusted)
                    kms_front_closed(f, KMS_CLOSE_PROXY_TIMEOUT, peer,
                                     "no complete PROXY header within kms.server.header.timeout");
                else
                    kms_front_closed(f, KMS_CLOSE_HEAD_TIMEOUT, peer, "not a byte within kms.server.header.timeout");
                close(p->fd);
                done = 1;
            }
            if (done)
                drop_pending(f, i, 0);
        }
        if (pfd[0].fd >= 0 && (pfd[0].revents & POLLIN))
            accept_some(s, now);
        if (now >= next_sweep) {
            kms_front_sweep(f, now);
            kms_front_recheck(s, f);
            next_sweep = now + SWEEP_NS;
        }
    }
    free(pfd);
    return NULL;
}

kms_rc kms_front_start(struct kms_server *s)
{
    struct kms_front *f = s->front;
    if (pthread_create(&f->thread, NULL, front_main, s) != 0)
        return kms_fail(KMS_ERR_NO_MEMORY, "cannot start the listener's thread");
    f->started = 1;
    return KMS_OK;
}

void kms_front_stop(struct kms_server *s)
{
    struct kms_front *f = s->front;
    if (f == NULL)
        return;
    if (f->started) {
        (void)!write(f->wake[1], "x", 1);
        pthread_join(f->thread, NULL);
        f->started = 0;
    }
    if (f->listen_fd >= 0)
        close(f->listen_fd);
    f->listen_fd = -1;
    while (f->npending > 0)
        drop_pending(f, f->npending - 1, 1);
}

void kms_front_free(struct kms_server *s)
{
    struct kms_front *f = s->front;
    if (f == NULL)
        return;
    kms_front_stop(s);
    for (int i = 0; i < 2; i++)
        if (f->wake[i] >= 0)
            close(f->wake[i]);
    pthread_mutex_destroy(&f->lock);
    kms_ratelimit_free(&f->conn_rl);
    free(f->pending);
    free(f);
    s->front = NULL;
}

