/* common/netconn.c against a peer in a thread on 127.0.0.1: plain TCP and
 * real TLS with a throwaway PKI. What the KMIP client and the Redis
 * connection rely on: every wait bounded by its deadline, the server's
 * certificate checked against the address dialled, failures in words, a
 * closed peer never killing the process with SIGPIPE, and an idle connection
 * the peer closed seen as unusable. */
#include "common/netconn.h"

#include <criterion/criterion.h>
#include <netinet/in.h>
#include <openssl/err.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "common/clock.h"
#include "tests/unit/loopback.h"

#define T 30

enum mode {
    PEER_ECHO,   /* echoes what it reads until EOF */
    PEER_SILENT, /* accepts (and for TLS handshakes), then says nothing */
    PEER_RESET,  /* accepts, reads one byte, then closes with a reset */
    PEER_CLOSE,  /* accepts (and handshakes), then closes (FIN) */
    PEER_JUNK,   /* accepts (and handshakes), then sends bytes nobody asked for */
    PEER_MUTE,   /* accepts TCP, never speaks TLS */
};

static char dir[64];
static SSL_CTX *server_ctx;
static int lfd = -1;
static uint16_t port;
static pthread_t thr;
static atomic_int stop;
static enum mode mode;
static int peer_tls;

#define MAKE_PKI                                                                                                 \
    "openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout ca.key -out ca.crt "           \
    "-days 2 -subj /CN=netconn-ca -addext basicConstraints=critical,CA:TRUE 2>/dev/null && "                      \
    "openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout s.key -out s.csr -subj /CN=peer "    \
    "2>/dev/null && printf 'subjectAltName=IP:127.0.0.1\\nextendedKeyUsage=serverAuth\\n' > s.ext && "            \
    "openssl x509 -req -in s.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days 2 -extfile s.ext -out s.crt "    \
    "2>/dev/null"

static void pki(void)
{
    snprintf(dir, sizeof(dir), "/tmp/kms-netconn-XXXXXX");
    cr_assert_not_null(mkdtemp(dir));
    char cmd[2048];
    snprintf(cmd, sizeof(cmd), "cd %s && %s", dir, MAKE_PKI);
    cr_assert_eq(system(cmd), 0, "openssl could not make the test PKI");
    char crt[128], key[128];
    snprintf(crt, sizeof(crt), "%s/s.crt", dir);
    snprintf(key, sizeof(key), "%s/s.key", dir);
    server_ctx = SSL_CTX_new(TLS_server_method());
    cr_assert_not_null(server_ctx);
    cr_assert_eq(SSL_CTX_use_certificate_file(server_ctx, crt, SSL_FILETYPE_PEM), 1);
    cr_assert_eq(SSL_CTX_use_PrivateKey_file(server_ctx, key, SSL_FILETYPE_PEM), 1);
}

/* A client context trusting the test CA (or nothing, with trust_ca 0). */
static SSL_CTX *client_ctx(int trust_ca)
{
    SSL_CTX *ctx = NULL;
    cr_assert_eq(kms_netconn_tls_ctx(&ctx), KMS_OK);
    if (trust_ca) {
        char ca[128];
        snprintf(ca, sizeof(ca), "%s/ca.crt", dir);
        cr_assert_eq(SSL_CTX_load_verify_locations(ctx, ca, NULL), 1);
    }
    return ctx;
}

/* ---- the peer -------------------------------------------------------------- */

/* Waits for fd to be readable, checking stop every 50 ms: 1 readable, 0 stop. */
static int peer_wait(int fd)
{
    while (!atomic_load(&stop)) {
        struct pollfd p = {.fd = fd, .events = POLLIN, .revents = 0};
        if (poll(&p, 1, 50) > 0)
            return 1;
    }
    return 0;
}

static void *peer_main(void *arg)
{
    (void)arg;
    while (peer_wait(lfd)) {
        int fd = accept(lfd, NULL, NULL);
        if (fd < 0)
            continue;
        struct timeval tv = {.tv_sec = 5};
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
        SSL *ssl = NULL;
        if (peer_tls && mode != PEER_MUTE) {
            ssl = SSL_new(server_ctx);
            SSL_set_fd(ssl, fd);
            if (SSL_accept(ssl) != 1) {
                SSL_free(ssl);
                close(fd);
                continue;
            }
        }
        if (mode == PEER_RESET) {
            /* why wait for a byte: a reset before the client saw its connect
             * complete would fail the connect instead (SO_ERROR) */
            char b;
            if (peer_wait(fd))
                (void)!read(fd, &b, 1);
            struct linger lg = {.l_onoff = 1, .l_linger = 0};
            setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg));
        } else if (mode == PEER_JUNK) {
            if (ssl != NULL)
                SSL_write(ssl, "junk", 4);
            else
                (void)!write(fd, "junk", 4);
            peer_wait(fd);
        } else if (mode == PEER_ECHO) {
            char b[4096];
            while (peer_wait(fd) || (ssl != NULL && SSL_pending(ssl) > 0)) {
                int n = ssl != NULL ? SSL_read(ssl, b, sizeof(b)) : (int)read(fd, b, sizeof(b));
                if (n <= 0)
                    break;
                if (ssl != NULL ? SSL_write(ssl, b, n) != n : write(fd, b, (size_t)n) != n)
                    break;
            }
        } else if (mode != PEER_CLOSE) {
            while (!atomic_load(&stop))
                usleep(20000);
        }
        SSL_free(ssl);
        close(fd);
    }
    return NULL;
}

static void peer_start(enum mode m, int tls)
{
    mode = m;
    peer_tls = tls;
    atomic_store(&stop, 0);
    lfd = loopback_listen(&port);
    cr_assert_eq(pthread_create(&thr, NULL, peer_main, NULL), 0);
}

static void setup(void)
{
    pki();
    signal(SIGPIPE, SIG_DFL); /* why: a SIGPIPE must kill this test, as it would a program that kept the default */
}

static void teardown(void)
{
    if (lfd >= 0) {
        atomic_store(&stop, 1);
        pthread_join(thr, NULL);
        close(lfd);
        lfd = -1;
    }
    SSL_CTX_free(server_ctx);
    char cmd[128];
    snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
    (void)!system(cmd);
}

TestSuite(netconn, .init = setup, .fini = teardown, .timeout = T);

static uint64_t in_ms(unsigned ms) { return kms_now_ms() + ms; }

static void round_trip(struct kms_netconn *c)
{
    char back[6] = {0};
    int got_any = 0;
    cr_assert_eq(kms_netconn_write(c, "hello", 5, in_ms(2000)), KMS_OK, "%s", kms_error_detail());
    cr_assert_eq(kms_netconn_read_full(c, back, 5, in_ms(2000), &got_any), KMS_OK, "%s", kms_error_detail());
    cr_assert_str_eq(back, "hello");
    cr_assert_eq(got_any, 1);
}

/* ---- plain TCP --------------------------------------------------------------- */

Test(netconn, plain_tcp_round_trips_and_an_idle_connection_is_usable)
{
    peer_start(PEER_ECHO, 0);
    struct kms_netconn *c = NULL;
    cr_assert_eq(kms_netconn_open("127.0.0.1", port, NULL, in_ms(2000), &c), KMS_OK, "%s", kms_error_detail());
    round_trip(c);
    cr_assert_eq(kms_netconn_idle_usable(c), 1);
    cr_assert_eq(kms_netconn_wait_readable(c, in_ms(50)), 0, "nothing was sent: not readable");
    kms_netconn_free(&c);
    cr_assert_null(c);
    kms_netconn_free(&c); /* takes NULL */
}

Test(netconn, a_refused_connection_says_so)
{
    uint16_t closed = loopback_closed_port();
    struct kms_netconn *c = NULL;
    cr_assert_eq(kms_netconn_open("127.0.0.1", closed, NULL, in_ms(2000), &c),
                 KMS_ERR_BACKEND_UNAVAILABLE);
    cr_assert_null(c);
    cr_assert(strstr(kms_error_detail(), "connect: Connection refused") != NULL, "%s", kms_error_detail());
}

Test(netconn, an_unknown_host_says_so)
{
    struct kms_netconn *c = NULL;
    cr_assert_eq(kms_netconn_open("no-such-host.invalid", 1, NULL, in_ms(2000), &c), KMS_ERR_BACKEND_UNAVAILABLE);
    cr_assert(strstr(kms_error_detail(), "cannot resolve no-such-host.invalid") != NULL, "%s", kms_error_detail());
}

Test(netconn, a_silent_peer_times_out_at_the_deadline_and_the_connection_is_spent)
{
    peer_start(PEER_SILENT, 0);
    struct kms_netconn *c = NULL;
    cr_assert_eq(kms_netconn_open("127.0.0.1", port, NULL, in_ms(2000), &c), KMS_OK);
    char b[4];
    uint64_t t0 = kms_now_ms();
    cr_assert_eq(kms_netconn_read_full(c, b, sizeof(b), t0 + 300, NULL), KMS_ERR_BACKEND_TIMEOUT);
    uint64_t took = kms_now_ms() - t0;
    cr_assert(took >= 300 && took < 2000, "the read waited %llu ms for a 300 ms deadline", (unsigned long long)took);
    cr_assert(strstr(kms_error_detail(), "read timed out") != NULL, "%s", kms_error_detail());
    cr_assert_eq(kms_netconn_write(c, "x", 1, in_ms(500)), KMS_ERR_BACKEND_UNAVAILABLE,
                 "a timed-out exchange leaves the stream out of step: no further use");
    cr_assert_eq(kms_netconn_idle_usable(c), 0);
    kms_netconn_free(&c);
}

Test(netconn, a_peer_that_closed_is_seen_when_idle_and_when_reading)
{
    peer_start(PEER_RESET, 0);
    struct kms_netconn *c = NULL;
    cr_assert_eq(kms_netconn_open("127.0.0.1", port, NULL, in_ms(2000), &c), KMS_OK, "%s", kms_error_detail());
    cr_assert_eq(kms_netconn_write(c, "x", 1, in_ms(2000)), KMS_OK);
    cr_assert_eq(kms_netconn_wait_readable(c, in_ms(2000)), 1, "the close is readable");
    cr_assert_eq(kms_netconn_idle_usable(c), 0);
    char b[4];
    size_t n = 0;
    cr_assert_eq(kms_netconn_read(c, b, sizeof(b), in_ms(500), &n), KMS_ERR_BACKEND_UNAVAILABLE);
    kms_netconn_free(&c);
}

Test(netconn, writing_to_a_closed_peer_fails_without_sigpipe)
{
    for (int tls = 0; tls <= 1; tls++) {
        /* why: after a FIN, the reset our first write provokes makes the next
         * send fail with EPIPE, the error that raises SIGPIPE */
        peer_start(PEER_CLOSE, tls);
        SSL_CTX *ctx = tls ? client_ctx(1) : NULL;
        struct kms_netconn *c = NULL;
        cr_assert_eq(kms_netconn_open("127.0.0.1", port, ctx, in_ms(2000), &c), KMS_OK, "%s", kms_error_detail());
        cr_assert_eq(kms_netconn_wait_readable(c, in_ms(2000)), 1);
        usleep(50000);
        static char big[65536];
        kms_rc rc = KMS_OK;
        for (int i = 0; i < 50 && rc == KMS_OK; i++)
            rc = kms_netconn_write(c, big, sizeof(big), in_ms(1000));
        cr_assert_eq(rc, KMS_ERR_BACKEND_UNAVAILABLE, "tls=%d: the write to a reset peer fails (and we are alive)",
                     tls);
        kms_netconn_free(&c);
        SSL_CTX_free(ctx);
        atomic_store(&stop, 1);
        pthread_join(thr, NULL);
        close(lfd);
        lfd = -1;
    }
}

/* ---- TLS ------------------------------------------------------------------- */

Test(netconn, tls_round_trips_with_the_server_checked_against_the_ip_dialled)
{
    peer_start(PEER_ECHO, 1);
    SSL_CTX *ctx = client_ctx(1);
    struct kms_netconn *c = NULL;
    cr_assert_eq(kms_netconn_open("127.0.0.1", port, ctx, in_ms(2000), &c), KMS_OK, "%s", kms_error_detail());
    round_trip(c);
    round_trip(c);
    cr_assert_eq(kms_netconn_idle_usable(c), 1, "session tickets are not data");
    kms_netconn_free(&c);
    SSL_CTX_free(ctx);
}

Test(netconn, a_certificate_for_another_name_is_refused_in_words)
{
    peer_start(PEER_ECHO, 1);
    SSL_CTX *ctx = client_ctx(1);
    struct kms_netconn *c = NULL;
    /* localhost reaches the same peer, but its certificate names only IP:127.0.0.1 */
    cr_assert_eq(kms_netconn_open("localhost", port, ctx, in_ms(2000), &c), KMS_ERR_BACKEND_UNAVAILABLE);
    cr_assert_null(c);
    const char *d = kms_error_detail();
    cr_assert(strstr(d, "server certificate not accepted") != NULL && strstr(d, "mismatch") != NULL, "%s", d);
    SSL_CTX_free(ctx);
}

Test(netconn, an_untrusted_server_is_refused_in_words)
{
    peer_start(PEER_ECHO, 1);
    SSL_CTX *ctx = client_ctx(0);
    struct kms_netconn *c = NULL;
    cr_assert_eq(kms_netconn_open("127.0.0.1", port, ctx, in_ms(2000), &c), KMS_ERR_BACKEND_UNAVAILABLE);
    const char *d = kms_error_detail();
    cr_assert(strstr(d, "server certificate not accepted") != NULL && strstr(d, "local issuer") != NULL, "%s", d);
    SSL_CTX_free(ctx);
}

Test(netconn, a_peer_that_never_speaks_tls_times_out_the_handshake)
{
    peer_start(PEER_MUTE, 1);
    SSL_CTX *ctx = client_ctx(1);
    struct kms_netconn *c = NULL;
    uint64_t t0 = kms_now_ms();
    cr_assert_eq(kms_netconn_open("127.0.0.1", port, ctx, t0 + 300, &c), KMS_ERR_BACKEND_UNAVAILABLE);
    uint64_t took = kms_now_ms() - t0;
    cr_assert(took >= 300 && took < 2000, "took %llu ms", (unsigned long long)took);
    cr_assert(strstr(kms_error_detail(), "TLS handshake timed out") != NULL, "%s", kms_error_detail());
    SSL_CTX_free(ctx);
}

Test(netconn, unasked_bytes_on_an_idle_tls_connection_make_it_unusable)
{
    peer_start(PEER_JUNK, 1);
    SSL_CTX *ctx = client_ctx(1);
    struct kms_netconn *c = NULL;
    cr_assert_eq(kms_netconn_open("127.0.0.1", port, ctx, in_ms(2000), &c), KMS_OK, "%s", kms_error_detail());
    /* why: the session tickets may come before the junk; usable until it arrives */
    int usable = 1;
    for (uint64_t end = in_ms(2000); usable && kms_now_ms() < end; usleep(10000))
        usable = kms_netconn_idle_usable(c);
    cr_assert_eq(usable, 0);
    kms_netconn_free(&c);
    SSL_CTX_free(ctx);
}
