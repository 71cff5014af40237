#include "common/netconn.h"

#include <arpa/inet.h>
#include <errno.h>
#include <limits.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <openssl/bio.h>
#include <openssl/err.h>
#include <openssl/x509v3.h>

#include "common/clock.h"

struct kms_netconn {
    int fd;
    SSL *ssl; /* NULL for plain TCP */
    int broken;
};

/* 1 ready, 0 deadline passed, -1 poll failed. */
static int wait_fd(int fd, short events, uint64_t deadline)
{
    for (;;) {
        uint64_t now = kms_now_ms();
        if (now >= deadline)
            return 0;
        uint64_t left = deadline - now;
        struct pollfd p = {.fd = fd, .events = events, .revents = 0};
        int r = poll(&p, 1, left > INT_MAX ? INT_MAX : (int)left);
        if (r > 0)
            return 1;
        if (r == 0)
            return 0;
        if (errno != EINTR)
            return -1;
    }
}

/* ---- a socket BIO that cannot raise SIGPIPE ------------------------------
 * why: OpenSSL's socket BIO writes with write(2), and a peer that closed the
 * connection makes that raise SIGPIPE. kmsd ignores the signal, but a
 * library must not depend on it, and masking it around every call costs
 * four system calls. send(MSG_NOSIGNAL) costs none. */

static int bio_write(BIO *b, const char *p, size_t len, size_t *n)
{
    BIO_clear_retry_flags(b);
    for (;;) {
        ssize_t r = send((int)(intptr_t)BIO_get_data(b), p, len, MSG_NOSIGNAL);
        if (r >= 0) {
            *n = (size_t)r;
            return 1;
        }
        if (errno == EINTR)
            continue;
        if (errno == EAGAIN || errno == EWOULDBLOCK)
            BIO_set_retry_write(b);
        return 0;
    }
}

static int bio_read(BIO *b, char *p, size_t cap, size_t *n)
{
    BIO_clear_retry_flags(b);
    for (;;) {
        ssize_t r = recv((int)(intptr_t)BIO_get_data(b), p, cap, 0);
        if (r > 0) {
            *n = (size_t)r;
            return 1;
        }
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
            BIO_set_retry_read(b);
        return 0; /* EOF or error: SSL reports it as SSL_ERROR_SYSCALL */
    }
}

static long bio_ctrl(BIO *b, int cmd, long num, void *ptr)
{
    (void)b;
    (void)num;
    (void)ptr;
    return cmd == BIO_CTRL_FLUSH ? 1 : 0; /* why: SSL flushes after each flight; nothing is buffered here */
}

static BIO_METHOD *bio_method;
static pthread_once_t bio_once = PTHREAD_ONCE_INIT;

static void bio_method_make(void)
{
    BIO_METHOD *m = BIO_meth_new(BIO_get_new_index() | BIO_TYPE_SOURCE_SINK, "kms socket");
    if (m != NULL && (BIO_meth_set_write_ex(m, bio_write) != 1 || BIO_meth_set_read_ex(m, bio_read) != 1 ||
                      BIO_meth_set_ctrl(m, bio_ctrl) != 1)) {
        BIO_meth_free(m);
        m = NULL;
    }
    bio_method = m; /* why: kept for the process's life, like OpenSSL's own methods */
}

static BIO *bio_for(int fd)
{
    pthread_once(&bio_once, bio_method_make);
    BIO *b = bio_method != NULL ? BIO_new(bio_method) : NULL;
    if (b != NULL) {
        BIO_set_data(b, (void *)(intptr_t)fd);
        BIO_set_init(b, 1);
    }
    return b;
}

/* ---- context ------------------------------------------------------------- */

/* why: an encrypted key file must fail, not prompt on a terminal */
static int no_passphrase(char *buf, int size, int rwflag, void *u)
{
    (void)buf;
    (void)size;
    (void)rwflag;
    (void)u;
    return 0;
}

kms_rc kms_netconn_tls_ctx(SSL_CTX **out)
{
    *out = NULL;
    SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
    if (ctx == NULL || SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION) != 1) {
        SSL_CTX_free(ctx);
        kms_fail(KMS_ERR_CRYPTO, "TLS client context");
        kms_error_add_openssl();
        return KMS_ERR_CRYPTO;
    }
    SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, NULL);
    SSL_CTX_set_default_passwd_cb(ctx, no_passphrase);
    SSL_CTX_set_mode(ctx, SSL_MODE_RELEASE_BUFFERS);
    *out = ctx;
    return KMS_OK;
}

/* ---- connect ------------------------------------------------------------- */

static kms_rc tcp_connect(const char *host, uint16_t port, uint64_t deadline, int *out)
{
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM, .ai_flags = AI_NUMERICSERV};
    struct addrinfo *res = NULL;
    char service[8];
    *out = -1;
    snprintf(service, sizeof(service), "%u", (unsigned)port);
    /* why: getaddrinfo has no timeout; an IP literal or an /etc/hosts name does not block */
    int gai = getaddrinfo(host, service, &hints, &res);
    if (gai != 0)
        return kms_fail(KMS_ERR_BACKEND_UNAVAILABLE, "cannot resolve %s: %s", host, gai_strerror(gai));
    char why[160] = "no address";
    int fd = -1;
    for (struct addrinfo *ai = res; ai != NULL && fd < 0; ai = ai->ai_next) {
        fd = socket(ai->ai_family, ai->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC, ai->ai_protocol);
        if (fd < 0) {
            snprintf(why, sizeof(why), "socket: %s", strerror(errno));
            continue;
        }
        int err = 0;
        if (connect(fd, ai->ai_addr, ai->ai_addrlen) != 0) {
            err = errno;
            if (err == EINPROGRESS) {
                int w = wait_fd(fd, POLLOUT, deadline);
                socklen_t len = sizeof(err);
                if (w == 0)
                    err = ETIMEDOUT;
                else if (w < 0)
                    err = errno;
                else if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len) != 0)
                    err = errno;
            }
        }
        if (err != 0) {
            snprintf(why, sizeof(why), "connect: %s", err == ETIMEDOUT ? "timed out" : strerror(err));
            close(fd);
            fd = -1;
        }
    }
    freeaddrinfo(res);
    if (fd < 0)
        return kms_fail(KMS_ERR_BACKEND_UNAVAILABLE, "%s", why);
    int one = 1;
    /* why: small requests and small answers: Nagle + delayed ACK would add 40 ms */
    (void)setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    *out = fd;
    return KMS_OK;
}

static int is_ip_literal(const char *host)
{
    struct in6_addr a6;
    struct in_addr a4;
    return inet_pton(AF_INET, host, &a4) == 1 || inet_pton(AF_INET6, host, &a6) == 1;
}

/* A handshake failure in words an operator can act on. */
static kms_rc handshake_failed(SSL *ssl, int err, int timed_out)
{
    if (timed_out) {
        ERR_clear_error();
        return kms_fail(KMS_ERR_BACKEND_UNAVAILABLE, "TLS handshake timed out");
    }
    long vr = SSL_get_verify_result(ssl);
    if (vr != X509_V_OK) {
        ERR_clear_error();
        return kms_fail(KMS_ERR_BACKEND_UNAVAILABLE, "TLS handshake failed: server certificate not accepted: %s",
                        X509_verify_cert_error_string(vr));
    }
    unsigned long e = ERR_peek_last_error();
    int reason = ERR_GET_REASON(e);
    const char *hint = "";
    if (reason == SSL_R_TLSV1_ALERT_UNKNOWN_CA || reason == SSL_R_SSLV3_ALERT_BAD_CERTIFICATE ||
        reason == SSL_R_SSLV3_ALERT_UNSUPPORTED_CERTIFICATE || reason == SSL_R_SSLV3_ALERT_CERTIFICATE_UNKNOWN ||
        reason == SSL_R_TLSV13_ALERT_CERTIFICATE_REQUIRED)
        hint = " (the server refused our client certificate: is its CA trusted by the server, and does it carry "
               "extendedKeyUsage clientAuth?)";
    else if (reason == SSL_R_SSLV3_ALERT_HANDSHAKE_FAILURE || reason == SSL_R_TLSV1_ALERT_PROTOCOL_VERSION)
        hint = " (no common TLS version or cipher suite, or no client certificate accepted)";
    if (e == 0 && err == SSL_ERROR_SYSCALL)
        return kms_fail(KMS_ERR_BACKEND_UNAVAILABLE, "TLS handshake failed: connection closed by the server");
    kms_fail(KMS_ERR_BACKEND_UNAVAILABLE, "TLS handshake failed%s", hint);
    kms_error_add_openssl();
    return KMS_ERR_BACKEND_UNAVAILABLE;
}

static kms_rc tls_connect(struct kms_netconn *c, SSL_CTX *ctx, const char *host, uint64_t deadline)
{
    BIO *bio = NULL;
    c->ssl = SSL_new(ctx);
    if (c->ssl == NULL || (bio = bio_for(c->fd)) == NULL) {
        kms_fail(KMS_ERR_NO_MEMORY, "TLS: cannot create a connection");
        kms_error_add_openssl();
        return KMS_ERR_NO_MEMORY;
    }
    SSL_set_bio(c->ssl, bio, bio);
    /* why: the certificate must name the address we dialled (SPEC §9) */
    int ok = is_ip_literal(host) ? X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(c->ssl), host) == 1
                                 : SSL_set1_host(c->ssl, host) == 1 && SSL_set_tlsext_host_name(c->ssl, host) == 1;
    if (!ok) {
        kms_fail(KMS_ERR_CONFIG, "TLS: cannot verify against host %s", host);
        kms_error_add_openssl();
        return KMS_ERR_CONFIG;
    }
    ERR_clear_error();
    for (;;) {
        int r = SSL_connect(c->ssl);
        if (r == 1)
            return KMS_OK;
        int err = SSL_get_error(c->ssl, r);
        int w = -1;
        if (err == SSL_ERROR_WANT_READ)
            w = wait_fd(c->fd, POLLIN, deadline);
        else if (err == SSL_ERROR_WANT_WRITE)
            w = wait_fd(c->fd, POLLOUT, deadline);
        if (w != 1)
            return handshake_failed(c->ssl, err, w == 0);
    }
}

kms_rc kms_netconn_open(const char *host, uint16_t port, SSL_CTX *tls, uint64_t deadline, struct kms_netconn **out)
{
    *out = NULL;
    struct kms_netconn *c = calloc(1, sizeof(*c));
    if (c == NULL)
        return kms_fail(KMS_ERR_NO_MEMORY, "connection");
    c->broken = 1; /* why: until the handshake is done, no close_notify */
    kms_rc rc = tcp_connect(host, port, deadline, &c->fd);
    if (rc == KMS_OK && tls != NULL)
        rc = tls_connect(c, tls, host, deadline);
    if (rc != KMS_OK) {
        kms_netconn_free(&c);
        return rc;
    }
    c->broken = 0;
    *out = c;
    return KMS_OK;
}

/* ---- I/O ----------------------------------------------------------------- */

/* A failed or would-block step: waits for the socket when that can help (0),
 * or marks the connection broken and fails. */
static kms_rc step_failed(struct kms_netconn *c, short want, uint64_t deadline, const char *what, int closed)
{
    if (want != 0) {
        int w = wait_fd(c->fd, want, deadline);
        if (w == 1)
            return KMS_OK;
        c->broken = 1;
        ERR_clear_error();
        if (w == 0)
            return kms_fail(KMS_ERR_BACKEND_TIMEOUT, "%s timed out", what);
        return kms_fail(KMS_ERR_BACKEND_UNAVAILABLE, "%s: poll: %s", what, strerror(errno));
    }
    c->broken = 1;
    if (closed) {
        ERR_clear_error();
        return kms_fail(KMS_ERR_BACKEND_UNAVAILABLE, "connection closed by the peer");
    }
    if (ERR_peek_error() != 0) {
        kms_fail(KMS_ERR_BACKEND_UNAVAILABLE, "%s failed", what);
        kms_error_add_openssl();
        return KMS_ERR_BACKEND_UNAVAILABLE;
    }
    return kms_fail(KMS_ERR_BACKEND_UNAVAILABLE, "%s: %s", what,
                    errno != 0 ? strerror(errno) : "connection closed or reset by the peer");
}

/* What a failed SSL call waits for: POLLIN, POLLOUT, or 0 (nothing helps). */
static short ssl_wants(SSL *ssl, int r, int *closed)
{
    int e = SSL_get_error(ssl, r);
    *closed = e == SSL_ERROR_ZERO_RETURN || (e == SSL_ERROR_SYSCALL && ERR_peek_error() == 0 && errno == 0);
    return e == SSL_ERROR_WANT_READ ? POLLIN : e == SSL_ERROR_WANT_WRITE ? POLLOUT : 0;
}

kms_rc kms_netconn_write(struct kms_netconn *c, const void *p, size_t len, uint64_t deadline)
{
    const uint8_t *b = p;
    size_t off = 0;
    if (c->broken)
        return kms_fail(KMS_ERR_BACKEND_UNAVAILABLE, "connection already broken");
    while (off < len) {
        short want;
        int closed = 0;
        errno = 0;
        if (c->ssl != NULL) {
            size_t n = 0;
            ERR_clear_error();
            int r = SSL_write_ex(c->ssl, b + off, len - off, &n);
            if (r == 1) {
                off += n;
                continue;
            }
            want = ssl_wants(c->ssl, r, &closed);
        } else {
            ssize_t n = send(c->fd, b + off, len - off, MSG_NOSIGNAL);
            if (n > 0) {
                off += (size_t)n;
                continue;
            }
            if (n < 0 && errno == EINTR)
                continue;
            want = n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK) ? POLLOUT : 0;
        }
        KMS_GUARD(step_failed(c, want, deadline, "write", closed));
    }
    return KMS_OK;
}

kms_rc kms_netconn_read(struct kms_netconn *c, void *p, size_t cap, uint64_t deadline, size_t *n)
{
    *n = 0;
    if (c->broken)
        return kms_fail(KMS_ERR_BACKEND_UNAVAILABLE, "connection already broken");
    for (;;) {
        short want;
        int closed = 0;
        errno = 0;
        if (c->ssl != NULL) {
            ERR_clear_error();
            int r = SSL_read_ex(c->ssl, p, cap, n);
            if (r == 1)
                return KMS_OK;
            want = ssl_wants(c->ssl, r, &closed);
        } else {
            ssize_t r = recv(c->fd, p, cap, 0);
            if (r > 0) {
                *n = (size_t)r;
                return KMS_OK;
            }
            if (r < 0 && errno == EINTR)
                continue;
            closed = r == 0;
            want = r < 0 && (errno == EAGAIN || errno == EWOULDBLOCK) ? POLLIN : 0;
        }
        KMS_GUARD(step_failed(c, want, deadline, "read", closed));
    }
}

kms_rc kms_netconn_read_full(struct kms_netconn *c, void *p, size_t len, uint64_t deadline, int *got_any)
{
    uint8_t *b = p;
    size_t off = 0;
    while (off < len) {
        size_t n = 0;
        KMS_GUARD(kms_netconn_read(c, b + off, len - off, deadline, &n));
        off += n;
        if (got_any != NULL)
            *got_any = 1;
    }
    return KMS_OK;
}

int kms_netconn_wait_readable(struct kms_netconn *c, uint64_t deadline)
{
    if (c->broken)
        return -1;
    /* why: SSL may hold decrypted bytes that poll() cannot see */
    if (c->ssl != NULL && SSL_pending(c->ssl) > 0)
        return 1;
    int w = wait_fd(c->fd, POLLIN, deadline);
    if (w < 0)
        c->broken = 1;
    return w;
}

int kms_netconn_idle_usable(struct kms_netconn *c)
{
    if (c->broken)
        return 0;
    struct pollfd p = {.fd = c->fd, .events = POLLIN, .revents = 0};
    int r = poll(&p, 1, 0);
    if (r == 0)
        return 1;
    if (r < 0 || (p.revents & (POLLERR | POLLHUP | POLLNVAL)) != 0)
        return 0;
    if (c->ssl == NULL)
        return 0; /* readable while idle: EOF or bytes nobody asked for */
    uint8_t b;
    size_t got = 0;
    ERR_clear_error();
    int ok = SSL_read_ex(c->ssl, &b, 1, &got);
    int err = ok == 1 ? SSL_ERROR_NONE : SSL_get_error(c->ssl, ok);
    ERR_clear_error();
    return ok != 1 && err == SSL_ERROR_WANT_READ;
}

void kms_netconn_free(struct kms_netconn **pc)
{
    struct kms_netconn *c = *pc;
    if (c == NULL)
        return;
    if (c->ssl != NULL) {
        if (!c->broken)
            (void)SSL_shutdown(c->ssl); /* why: one non-blocking close_notify, no wait for the peer's */
        SSL_free(c->ssl);              /* frees the BIO too */
        ERR_clear_error();
    }
    if (c->fd >= 0)
        close(c->fd);
    free(c);
    *pc = NULL;
}
