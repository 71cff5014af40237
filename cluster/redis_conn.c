#include "cluster/redis_conn.h"
#include "common/clock.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/x509v3.h>

#define READ_CHUNK 16384

struct kms_redis_conn {
    int fd;
    SSL *ssl;
    redisReader *reader;
    unsigned command_ms;
    char err[160];
};

/* Waits until fd is ready for events or the deadline passes: 0 ready, -1 not. */
static int wait_fd(int fd, short events, uint64_t deadline)
{
    for (;;) {
        uint64_t now = kms_now_ms();
        if (now >= deadline) {
            errno = ETIMEDOUT;
            return -1;
        }
        struct pollfd p = {.fd = fd, .events = events};
        int n = poll(&p, 1, (int)(deadline - now));
        if (n > 0)
            return 0;
        if (n < 0 && errno != EINTR)
            return -1;
    }
}

/* ---- TLS context ----------------------------------------------------------- */

/* why: an encrypted key file must fail, not prompt on a terminal */
static int no_passphrase(char *buf, int size, int rwflag, void *u)
{
    (void)buf;
    (void)size;
    (void)rwflag;
    (void)u;
    return 0;
}

kms_rc kms_redis_conn_tls_new(const char *ca_file, const char *cert_file, const char *key_file, SSL_CTX **out)
{
    *out = NULL;
    if ((cert_file == NULL) != (key_file == NULL))
        return kms_fail(KMS_ERR_CONFIG, "redis tls: a client certificate needs its key file, and a key its certificate");
    SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
    if (ctx == NULL) {
        kms_error_add_openssl();
        return kms_fail(KMS_ERR_CRYPTO, "redis tls: SSL_CTX_new");
    }
    SSL_CTX_set_default_passwd_cb(ctx, no_passphrase);
    SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, NULL);
    kms_rc rc = KMS_OK;
    if (SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION) != 1) {
        rc = kms_fail(KMS_ERR_CRYPTO, "redis tls: cannot require TLS 1.2");
    } else if (ca_file != NULL ? SSL_CTX_load_verify_locations(ctx, ca_file, NULL) != 1
                               : SSL_CTX_set_default_verify_paths(ctx) != 1) {
        kms_error_add_openssl();
        rc = kms_fail(KMS_ERR_CONFIG, "redis tls: cannot load the CA file %s", ca_file ? ca_file : "(system)");
    } else if (cert_file != NULL && SSL_CTX_use_certificate_chain_file(ctx, cert_file) != 1) {
        kms_error_add_openssl();
        rc = kms_fail(KMS_ERR_CONFIG, "redis tls: cannot load the client certificate %s", cert_file);
    } else if (key_file != NULL && (SSL_CTX_use_PrivateKey_file(ctx, key_file, SSL_FILETYPE_PEM) != 1 ||
                                    SSL_CTX_check_private_key(ctx) != 1)) {
        kms_error_add_openssl();
        rc = kms_fail(KMS_ERR_CONFIG,
                      "redis tls: cannot load the client key %s (unencrypted PEM matching the certificate)", key_file);
    }
    ERR_clear_error();
    if (rc != KMS_OK) {
        SSL_CTX_free(ctx);
        return rc;
    }
    *out = ctx;
    return KMS_OK;
}

/* ---- SIGPIPE --------------------------------------------------------------------
 * why: OpenSSL writes with write(2), which raises SIGPIPE on a closed peer;
 * kmsd ignores it, but a library must not depend on that. Block it in this
 * thread around TLS writes and swallow one that became pending. */

static void sigpipe_block(sigset_t *old)
{
    sigset_t s;
    sigemptyset(&s);
    sigaddset(&s, SIGPIPE);
    pthread_sigmask(SIG_BLOCK, &s, old);
}

static void sigpipe_restore(const sigset_t *old)
{
    if (!sigismember(old, SIGPIPE)) {
        sigset_t s, pending;
        sigemptyset(&s);
        sigaddset(&s, SIGPIPE);
        if (sigpending(&pending) == 0 && sigismember(&pending, SIGPIPE)) {
            struct timespec zero = {0, 0};
            (void)sigtimedwait(&s, NULL, &zero);
        }
    }
    pthread_sigmask(SIG_SETMASK, old, NULL);
}

/* ---- connect --------------------------------------------------------------------- */

static int tcp_connect(const char *host, int port, uint64_t deadline, char *err, size_t cap)
{
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM, .ai_flags = AI_ADDRCONFIG};
    struct addrinfo *ai = NULL;
    char service[16];
    snprintf(service, sizeof(service), "%d", port);
    int g = getaddrinfo(host, service, &hints, &ai);
    if (g != 0) {
        snprintf(err, cap, "cannot resolve %s: %s", host, gai_strerror(g));
        return -1;
    }
    int fd = -1;
    snprintf(err, cap, "no address for %s", host);
    for (struct addrinfo *a = ai; a != NULL && fd < 0; a = a->ai_next) {
        fd = socket(a->ai_family, a->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC, a->ai_protocol);
        if (fd < 0) {
            snprintf(err, cap, "socket: %s", strerror(errno));
            continue;
        }
        int soerr = 0;
        socklen_t sl = sizeof(soerr);
        if (connect(fd, a->ai_addr, a->ai_addrlen) != 0) {
            if (errno != EINPROGRESS)
                soerr = errno;
            else if (wait_fd(fd, POLLOUT, deadline) != 0)
                soerr = errno;
            else if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &soerr, &sl) != 0)
                soerr = errno;
        }
        if (soerr != 0) {
            snprintf(err, cap, "connect %s:%d: %s", host, port, strerror(soerr));
            close(fd);
            fd = -1;
        }
    }
    freeaddrinfo(ai);
    if (fd >= 0) {
        int one = 1;
        (void)setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    }
    return fd;
}

static int is_ip_literal(const char *host)
{
    struct in6_addr a6;
    struct in_addr a4;
    return inet_pton(AF_INET, host, &a4) == 1 || inet_pton(AF_INET6, host, &a6) == 1;
}

static int tls_handshake(struct kms_redis_conn *c, SSL_CTX *tls, const char *host, uint64_t deadline)
{
    c->ssl = SSL_new(tls);
    if (c->ssl == NULL || SSL_set_fd(c->ssl, c->fd) != 1) {
        snprintf(c->err, sizeof(c->err), "tls: SSL_new");
        return -1;
    }
    /* why: the certificate must name the address we dialled (SPEC §9: the
     * cache link is verified like the HSM link) */
    int ok = is_ip_literal(host) ? X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(c->ssl), host)
                                 : SSL_set1_host(c->ssl, host) && SSL_set_tlsext_host_name(c->ssl, host);
    if (ok != 1) {
        snprintf(c->err, sizeof(c->err), "tls: cannot set the expected host %s", host);
        return -1;
    }
    for (;;) {
        int r = SSL_connect(c->ssl);
        if (r == 1)
            break;
        int e = SSL_get_error(c->ssl, r);
        short ev = e == SSL_ERROR_WANT_READ ? POLLIN : e == SSL_ERROR_WANT_WRITE ? POLLOUT : 0;
        if (ev != 0 && wait_fd(c->fd, ev, deadline) == 0)
            continue;
        long v = SSL_get_verify_result(c->ssl);
        if (v != X509_V_OK)
            snprintf(c->err, sizeof(c->err), "tls: server certificate not accepted for %s: %s", host,
                     X509_verify_cert_error_string(v));
        else if (ev != 0)
            snprintf(c->err, sizeof(c->err), "tls: handshake with %s timed out", host);
        else
            snprintf(c->err, sizeof(c->err), "tls: handshake with %s failed: %s", host,
                     ERR_reason_error_string(ERR_peek_last_error()) ? ERR_reason_error_string(ERR_peek_last_error())
                                                                    : "connection closed");
        ERR_clear_error();
        return -1;
    }
    return 0;
}

kms_rc kms_redis_conn_open(const char *host, int port, SSL_CTX *tls, unsigned connect_ms, unsigned command_ms,
                           redisReplyObjectFunctions *fns, struct kms_redis_conn **out)
{
    *out = NULL;
    struct kms_redis_conn *c = calloc(1, sizeof(*c));
    if (c == NULL)
        return kms_fail(KMS_ERR_NO_MEMORY, "redis connection");
    c->fd = -1;
    c->command_ms = command_ms;
    c->reader = redisReaderCreateWithFunctions(fns);
    if (c->reader == NULL) {
        kms_redis_conn_free(&c);
        return kms_fail(KMS_ERR_NO_MEMORY, "redis reader");
    }
    uint64_t deadline = kms_now_ms() + connect_ms;
    c->fd = tcp_connect(host, port, deadline, c->err, sizeof(c->err));
    if (c->fd < 0 || (tls != NULL && tls_handshake(c, tls, host, deadline) != 0)) {
        kms_rc rc = kms_fail(KMS_ERR_BACKEND_UNAVAILABLE, "redis %s:%d: %s", host, port, c->err);
        kms_redis_conn_free(&c);
        return rc;
    }
    *out = c;
    return KMS_OK;
}

/* ---- I/O ----------------------------------------------------------------------- */

/* Writes all of buf before the deadline: 0, or -1 with c->err set. */
static int send_all(struct kms_redis_conn *c, const char *buf, size_t len, uint64_t deadline)
{
    size_t off = 0;
    while (off < len) {
        if (c->ssl != NULL) {
            sigset_t old;
            sigpipe_block(&old);
            size_t n = 0;
            int r = SSL_write_ex(c->ssl, buf + off, len - off, &n);
            int e = r == 1 ? SSL_ERROR_NONE : SSL_get_error(c->ssl, r);
            sigpipe_restore(&old);
            if (r == 1) {
                off += n;
                continue;
            }
            short ev = e == SSL_ERROR_WANT_READ ? POLLIN : e == SSL_ERROR_WANT_WRITE ? POLLOUT : 0;
            ERR_clear_error();
            if (ev == 0) {
                snprintf(c->err, sizeof(c->err), "tls write failed");
                return -1;
            }
            if (wait_fd(c->fd, ev, deadline) != 0) {
                snprintf(c->err, sizeof(c->err), "write timed out");
                return -1;
            }
        } else {
            ssize_t n = send(c->fd, buf + off, len - off, MSG_NOSIGNAL);
            if (n > 0) {
                off += (size_t)n;
                continue;
            }
            if (n < 0 && errno == EINTR)
                continue;
            if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
                if (wait_fd(c->fd, POLLOUT, deadline) != 0) {
                    snprintf(c->err, sizeof(c->err), "write timed out");
                    return -1;
                }
                continue;
            }
            snprintf(c->err, sizeof(c->err), "write: %s", strerror(errno));
            return -1;
        }
    }
    return 0;
}

/* Reads what is available (waiting until the deadline) into buf: bytes read,
 * or -1 with c->err set (EOF included). */
static ssize_t recv_some(struct kms_redis_conn *c, char *buf, size_t cap, uint64_t deadline)
{
    for (;;) {
        short ev;
        if (c->ssl != NULL) {
            size_t n = 0;
            int r = SSL_read_ex(c->ssl, buf, cap, &n);
            if (r == 1)
                return (ssize_t)n;
            int e = SSL_get_error(c->ssl, r);
            ERR_clear_error();
            ev = e == SSL_ERROR_WANT_READ ? POLLIN : e == SSL_ERROR_WANT_WRITE ? POLLOUT : 0;
            if (ev == 0) {
                snprintf(c->err, sizeof(c->err), e == SSL_ERROR_ZERO_RETURN ? "connection closed" : "tls read failed");
                return -1;
            }
        } else {
            ssize_t n = recv(c->fd, buf, cap, 0);
            if (n > 0)
                return n;
            if (n == 0) {
                snprintf(c->err, sizeof(c->err), "connection closed");
                return -1;
            }
            if (errno == EINTR)
                continue;
            if (errno != EAGAIN && errno != EWOULDBLOCK) {
                snprintf(c->err, sizeof(c->err), "read: %s", strerror(errno));
                return -1;
            }
            ev = POLLIN;
        }
        if (wait_fd(c->fd, ev, deadline) != 0) {
            snprintf(c->err, sizeof(c->err), "read timed out");
            return -1;
        }
    }
}

/* Drops a connection whose stream can no longer be trusted. */
static void broken(struct kms_redis_conn *c)
{
    if (c->ssl != NULL) {
        SSL_free(c->ssl);
        c->ssl = NULL;
    }
    close(c->fd);
    c->fd = -1;
    kms_error_set_detail("redis: %s", c->err);
}

/* Reads one reply before deadline. With idle_ok, a deadline reached with
 * no byte of a reply buffered is not a failure: *idle = 1 and NULL, the
 * connection intact. Otherwise NULL means broken (closed, c->err set). */
static redisReply *read_reply(struct kms_redis_conn *c, uint64_t deadline, size_t max_buffered, int idle_ok,
                              int *idle)
{
    void *reply = NULL;
    char buf[READ_CHUNK];
    *idle = 0;
    for (;;) {
        if (redisReaderGetReply(c->reader, &reply) != REDIS_OK) {
            snprintf(c->err, sizeof(c->err), "protocol error or reply over the limits");
            reply = NULL;
            break;
        }
        if (reply != NULL)
            break;
        if (c->reader->len - c->reader->pos > max_buffered) {
            snprintf(c->err, sizeof(c->err), "reply larger than %zu bytes", max_buffered);
            break;
        }
        /* why: SSL may hold decrypted bytes that poll() cannot see */
        if (idle_ok && c->reader->len == c->reader->pos && (c->ssl == NULL || SSL_pending(c->ssl) == 0) &&
            wait_fd(c->fd, POLLIN, deadline) != 0) {
            *idle = 1;
            return NULL;
        }
        ssize_t n = recv_some(c, buf, sizeof(buf), deadline);
        if (n < 0 || redisReaderFeed(c->reader, buf, (size_t)n) != REDIS_OK) {
            if (n >= 0)
                snprintf(c->err, sizeof(c->err), "out of memory");
            break;
        }
    }
    if (reply == NULL)
        broken(c);
    return reply;
}

redisReply *kms_redis_conn_command(struct kms_redis_conn *c, int argc, const char **argv, const size_t *lens,
                                   size_t max_buffered)
{
    if (c == NULL || c->fd < 0)
        return NULL;
    char *cmd = NULL;
    int len = redisFormatCommandArgv(&cmd, argc, argv, lens);
    if (len < 0 || cmd == NULL) {
        snprintf(c->err, sizeof(c->err), "out of memory");
        kms_error_set_detail("redis: %s", c->err);
        return NULL;
    }
    uint64_t deadline = kms_now_ms() + c->command_ms;
    int sent = send_all(c, cmd, (size_t)len, deadline);
    OPENSSL_cleanse(cmd, (size_t)len); /* why: AUTH puts the password in here */
    redisFreeCommand(cmd);
    if (sent != 0) {
        broken(c);
        return NULL;
    }
    int idle;
    return read_reply(c, deadline, max_buffered, 0, &idle);
}

int kms_redis_conn_wait(struct kms_redis_conn *c, unsigned timeout_ms, size_t max_buffered, redisReply **out)
{
    *out = NULL;
    if (c == NULL || c->fd < 0)
        return -1;
    int idle = 0;
    *out = read_reply(c, kms_now_ms() + timeout_ms, max_buffered, 1, &idle);
    if (*out != NULL)
        return 1;
    return idle ? 0 : -1;
}

int kms_redis_reply_u64(const redisReply *r, uint64_t *out)
{
    if (r->type == REDIS_REPLY_NIL) {
        *out = 0;
        return 0;
    }
    if (r->type == REDIS_REPLY_INTEGER && r->integer >= 0) {
        *out = (uint64_t)r->integer;
        return 0;
    }
    if (r->type != REDIS_REPLY_STRING || r->len == 0 || r->len > 19)
        return -1;
    uint64_t v = 0;
    for (size_t i = 0; i < r->len; i++) {
        if (r->str[i] < '0' || r->str[i] > '9')
            return -1;
        v = v * 10 + (uint64_t)(r->str[i] - '0');
    }
    *out = v;
    return 0;
}

const char *kms_redis_conn_error(const struct kms_redis_conn *c)
{
    return c != NULL ? c->err : "no connection";
}

void kms_redis_conn_free(struct kms_redis_conn **p)
{
    struct kms_redis_conn *c = *p;
    if (c == NULL)
        return;
    if (c->ssl != NULL) {
        /* why: close_notify is a courtesy; never wait for the peer's */
        sigset_t old;
        sigpipe_block(&old);
        (void)SSL_shutdown(c->ssl);
        sigpipe_restore(&old);
        SSL_free(c->ssl);
        ERR_clear_error();
    }
    if (c->fd >= 0)
        close(c->fd);
    if (c->reader != NULL)
        redisReaderFree(c->reader);
    free(c);
    *p = NULL;
}
