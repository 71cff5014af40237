/* kmsctl bench: a closed-loop HTTPS load generator with a client certificate
 * (issue 7). No Debian tool does keep-alive mutual TLS at rate
 * (docs/benchmarks.md), so this one does: OpenSSL, non-blocking sockets,
 * edge-triggered epoll, N connections over T threads, HTTP/1.1 keep-alive or a
 * new TLS connection per request (with or without session resumption), and
 * nanosecond latencies sorted for the percentiles. --idle N holds N more
 * mutual-TLS keep-alive connections open and quiet beside the load (one
 * request each, then a cheap ping every --idle-ping seconds so that the
 * server's idle timeout does not close them), to measure what idle clients
 * cost a server.
 *
 * Limits: HTTP/1.1 responses with Content-Length only (kmsd and nginx send
 * it); closed loop, so latency under overload is understated (coordinated
 * omission). */
#define _GNU_SOURCE /* memmem, timersub */
#include "cli/kmsctl.h"

#include <arpa/inet.h>
#include <errno.h>
#include <getopt.h>
#include <jansson.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/pkcs12.h>
#include <openssl/rand.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#include "common/clock.h"
#include "common/error.h"

#define RBUF_CAP 65536
#define BODY_MAX (1u << 20)
#define MAX_CONNS 10000
#define MAX_THREADS 64
#define HARD_STOP_SLACK_S 10
#define IDLE_RBUF 8192
#define IDLE_INFLIGHT 64 /* idle connections being set up at once */
#define IDLE_ATTEMPTS 3
#define IDLE_SETUP_S 60 /* the load starts after the idle set is up, or after this */
#define IDLE_ATTEMPT_S 10 /* a handshake and first answer that take longer failed */

enum op { OP_HEALTH, OP_WHOAMI, OP_UNWRAP_WS, OP_CREATE_CUSTOMER, OP_UNWRAP, OP_CUSTOM };

static const char *const op_names[] = {"health", "whoami", "unwrap-workspace", "create-customer", "unwrap", "custom"};

struct opts {
    const char *url, *cert, *cert_pem, *key_pem, *password_file, *cacert;
    const char *method, *path, *body_file, *key_name, *site;
    int conns, threads, new_conn, resume, allow_remote, json, idle;
    double duration, warmup, idle_ping;
    long requests;
    enum op op;
};

/* Everything the workers share, read-only once they start (but the atomics). */
struct bench {
    const struct opts *o;
    struct sockaddr_storage addr;
    socklen_t addrlen;
    char host[256];
    X509 *cert;
    EVP_PKEY *key;
    STACK_OF(X509) *chain;
    char *req; /* the request bytes, sent as they are for every request */
    size_t req_len;
    atomic_int phase; /* 0 warm-up, 1 measuring, 2 stop */
    atomic_long measured;
};

/* The exchange every connection runs, the load's and --idle's alike: the
 * TLS handshake, one request written, one response read whole (xchg_run). */
enum xstep { X_HANDSHAKE, X_WRITE, X_READ };
enum xresult { X_AGAIN, X_HANDSHAKEN, X_ANSWERED, X_BROKEN };

struct xchg {
    enum xstep st;
    const char *req;
    size_t req_len;
    size_t rlen;
    int status, close_conn; /* of the response just read (X_ANSWERED) */
};

enum cstate { S_DEAD, S_LIVE };

struct conn {
    struct worker *w;
    int fd;
    SSL *ssl;
    SSL_SESSION *sess; /* the latest ticket the server gave this slot */
    enum cstate st;
    struct xchg x;
    uint64_t t_start;
    char rbuf[RBUF_CAP];
};

struct worker {
    struct bench *b;
    pthread_t tid;
    SSL_CTX *ctx;
    int ep;
    int nconns;
    struct conn *conns;
    uint64_t *lat;
    size_t nlat, caplat;
    uint64_t status[600];
    uint64_t transport, handshakes, resumed;
    int failed; /* the worker could not start (reported on stderr) */
};

/* --idle: connections that make one request, then stay open and quiet but
 * for a ping. One thread of their own, so the load's latencies do not wait
 * on them. */
enum istate { I_WAIT, I_EXCHANGE, I_IDLE, I_CLOSED, I_FAILED };

struct idle_conn {
    int fd;
    SSL *ssl;
    enum istate st;
    int attempts;
    int established; /* its first request was answered 2xx */
    struct xchg x;
    uint64_t t_open, next_ping;
    char rbuf[IDLE_RBUF];
};

struct idle {
    struct bench *b;
    pthread_t tid;
    SSL_CTX *ctx;
    int ep;
    int n, next, inflight;
    struct idle_conn *c;
    char first[512], ping[512];
    size_t first_len, ping_len;
    atomic_int ready; /* every slot is open or has failed */
    uint64_t opened, closed, failed, refused, pings, ping_errors;
    int open_at_end, pending_at_end;
};

static void usage(FILE *f)
{
    fprintf(f,
            "Usage: kmsctl bench --url https://127.0.0.1:PORT (--cert FILE.p12 [--password-file F] |\n"
            "                    --cert-pem FILE --key-pem FILE) [OPTIONS]\n\n"
            "A load generator for kmsd (or any HTTPS server answering with Content-Length)\n"
            "over mutual TLS. Prints requests/s, latency percentiles, errors by status,\n"
            "handshakes and its own CPU use.\n\n"
            "  --url URL            https://HOST:PORT; loopback only unless --allow-remote\n"
            "  --cert FILE.p12      client certificate and key (password: --password-file,\n"
            "                       else KMS_KEYSTORE_PASSWORD, else empty)\n"
            "  --cert-pem F --key-pem F   the same from PEM files\n"
            "  --cacert FILE        verify the server against FILE (else: no verification)\n"
            "  -c N                 connections (default 16)\n"
            "  -t N                 threads (default 1)\n"
            "  -d SECONDS           measured duration (default 10)\n"
            "  -n REQUESTS          stop after this many measured requests (bounded by -d, default 60 then)\n"
            "  -w SECONDS           warm-up, not measured (default 1)\n"
            "  --new-conn           a new TLS connection per request\n"
            "  --resume             with --new-conn: resume the previous TLS session\n"
            "  --op OP              health (default), whoami, unwrap-workspace, create-customer,\n"
            "                       unwrap, custom\n"
            "  --key NAME           master key of --op unwrap (default kms-master)\n"
            "  --site ID            site_id used by the setup of unwrap ops (default bench)\n"
            "  --method M --path P  request of --op custom\n"
            "  --body-file F        request body (custom; unwrap-workspace: skips the setup)\n"
            "  --idle N             also hold N idle keep-alive connections open (0..%d): each\n"
            "                       does its handshake and one GET /v1/whoami before the warm-up,\n"
            "                       then only pings; -c 0 runs the idle connections alone\n"
            "  --idle-ping SECONDS  an idle connection sends GET /health/live this often, so that\n"
            "                       the server's idle timeout (kmsd: kms.server.connection.timeout,\n"
            "                       30 s) does not close it (default 10; 0: never)\n"
            "  --json               one JSON object on stdout\n"
            "  --allow-remote       allow a non-loopback address\n\n"
            "unwrap-workspace first creates a customer, user and workspace key with the same\n"
            "certificate (it must be a backend certificate); unwrap first wraps 32 random bytes.\n"
            "The report of --idle: idle connections opened, still open at the end, closed by the\n"
            "server (or lost) after they were open, failed to open (%d attempts of %d s each) and\n"
            "still opening.\n"
            "SIGINT or SIGTERM ends the measurement early and still prints the report.\n"
            "The process stops by itself at warm-up + duration + %d s at the latest (+ %d s\n"
            "with --idle, the most it waits for the idle connections before the load).\n",
            MAX_CONNS, IDLE_ATTEMPTS, IDLE_ATTEMPT_S, HARD_STOP_SLACK_S, IDLE_SETUP_S);
}

void kmsctl_bench_usage(FILE *f)
{
    usage(f);
}

__attribute__((format(printf, 1, 2))) static int bad_usage(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "kmsctl bench: ");
    vfprintf(stderr, fmt, ap);
    fprintf(stderr, "\n(kmsctl help bench)\n");
    va_end(ap);
    return KMSCTL_EXIT_USAGE;
}

static int parse_long(const char *s, long lo, long hi, long *out)
{
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno != 0 || end == s || *end != '\0' || v < lo || v > hi)
        return -1;
    *out = v;
    return 0;
}

static int parse_seconds(const char *s, double *out)
{
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (errno != 0 || end == s || *end != '\0' || !(v >= 0.0) || v > 86400.0)
        return -1;
    *out = v;
    return 0;
}

static void ssl_errors(const char *what)
{
    unsigned long e = ERR_get_error();
    char buf[256] = "";
    if (e != 0)
        ERR_error_string_n(e, buf, sizeof(buf));
    ERR_clear_error();
    fprintf(stderr, "kmsctl bench: %s%s%s\n", what, buf[0] ? ": " : "", buf);
}

/* ---- target address ---------------------------------------------------- */

static int is_loopback(const struct sockaddr_storage *ss)
{
    if (ss->ss_family == AF_INET) {
        const struct sockaddr_in *in = (const struct sockaddr_in *)ss;
        return (ntohl(in->sin_addr.s_addr) >> 24) == 127;
    }
    if (ss->ss_family == AF_INET6) {
        const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)ss;
        return IN6_IS_ADDR_LOOPBACK(&in6->sin6_addr);
    }
    return 0;
}

static int resolve_url(struct bench *b)
{
    const char *u = b->o->url;
    if (strncmp(u, "https://", 8) != 0)
        return bad_usage("--url must start with https:// (got '%s')", u);
    const char *h = u + 8, *hend, *port;
    if (*h == '[') {
        hend = strchr(h, ']');
        if (hend == NULL)
            return bad_usage("--url: unterminated [address] in '%s'", u);
        h++;
        port = hend + 1;
    } else {
        hend = h + strcspn(h, ":/");
        port = hend;
    }
    if (hend == h || (size_t)(hend - h) >= sizeof(b->host))
        return bad_usage("--url: no host in '%s'", u);
    memcpy(b->host, h, (size_t)(hend - h));
    b->host[hend - h] = '\0';
    char portbuf[8] = "443";
    if (*port == ':') {
        size_t n = strcspn(port + 1, "/");
        long p;
        if (n == 0 || n >= sizeof(portbuf))
            return bad_usage("--url: bad port in '%s'", u);
        memcpy(portbuf, port + 1, n);
        portbuf[n] = '\0';
        if (parse_long(portbuf, 1, 65535, &p) != 0)
            return bad_usage("--url: bad port in '%s'", u);
        port += 1 + n;
    }
    if (*port != '\0' && strcmp(port, "/") != 0)
        return bad_usage("--url takes no path (use --op or --path): '%s'", u);
    struct addrinfo hints = {.ai_socktype = SOCK_STREAM}, *res = NULL;
    int rc = getaddrinfo(b->host, portbuf, &hints, &res);
    if (rc != 0 || res == NULL) {
        fprintf(stderr, "kmsctl bench: cannot resolve %s: %s\n", b->host, gai_strerror(rc));
        return KMSCTL_EXIT_ERROR;
    }
    memcpy(&b->addr, res->ai_addr, res->ai_addrlen);
    b->addrlen = res->ai_addrlen;
    freeaddrinfo(res);
    if (!b->o->allow_remote && !is_loopback(&b->addr))
        return bad_usage("%s is not a loopback address; add --allow-remote to load another machine", b->host);
    return KMSCTL_EXIT_OK;
}

/* ---- credentials and TLS ----------------------------------------------- */

static int load_credentials(struct bench *b)
{
    const struct opts *o = b->o;
    if (o->cert != NULL) {
        struct kmsctl_password_source src = {.file = o->password_file};
        char *pw = NULL;
        if (kmsctl_password_get(&src, &pw) != KMSCTL_EXIT_OK)
            return KMSCTL_EXIT_ERROR;
        FILE *f = fopen(o->cert, "rb");
        PKCS12 *p12 = f ? d2i_PKCS12_fp(f, NULL) : NULL;
        if (f != NULL)
            fclose(f);
        int ok = p12 != NULL && PKCS12_parse(p12, pw ? pw : "", &b->key, &b->cert, &b->chain) == 1;
        PKCS12_free(p12);
        kmsctl_password_free(&pw);
        if (!ok || b->cert == NULL || b->key == NULL) {
            ERR_clear_error();
            fprintf(stderr, "kmsctl bench: %s: cannot read the certificate and key (wrong password, or not PKCS#12)\n",
                    o->cert);
            return KMSCTL_EXIT_ERROR;
        }
        return KMSCTL_EXIT_OK;
    }
    FILE *f = fopen(o->cert_pem, "r");
    if (f == NULL) {
        fprintf(stderr, "kmsctl bench: %s: %s\n", o->cert_pem, strerror(errno));
        return KMSCTL_EXIT_ERROR;
    }
    b->cert = PEM_read_X509(f, NULL, NULL, NULL);
    b->chain = sk_X509_new_null();
    X509 *x;
    while (b->chain != NULL && (x = PEM_read_X509(f, NULL, NULL, NULL)) != NULL)
        if (sk_X509_push(b->chain, x) <= 0)
            X509_free(x);
    fclose(f);
    ERR_clear_error();
    f = fopen(o->key_pem, "r");
    if (f == NULL) {
        fprintf(stderr, "kmsctl bench: %s: %s\n", o->key_pem, strerror(errno));
        return KMSCTL_EXIT_ERROR;
    }
    b->key = PEM_read_PrivateKey(f, NULL, NULL, NULL);
    fclose(f);
    if (b->cert == NULL || b->key == NULL) {
        ERR_clear_error();
        fprintf(stderr, "kmsctl bench: cannot read %s\n", b->cert == NULL ? o->cert_pem : o->key_pem);
        return KMSCTL_EXIT_ERROR;
    }
    return KMSCTL_EXIT_OK;
}

/* Keeps the newest ticket per connection slot for --resume. */
static int on_new_session(SSL *ssl, SSL_SESSION *s)
{
    struct conn *c = SSL_get_app_data(ssl);
    if (c == NULL)
        return 0;
    SSL_SESSION_free(c->sess);
    c->sess = s;
    return 1; /* why: we keep the reference */
}

static SSL_CTX *make_ctx(const struct bench *b)
{
    SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
    if (ctx == NULL)
        return NULL;
    int ok = SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION) == 1 && SSL_CTX_use_certificate(ctx, b->cert) == 1 &&
             SSL_CTX_use_PrivateKey(ctx, b->key) == 1 && SSL_CTX_check_private_key(ctx) == 1;
    for (int i = 0; ok && b->chain != NULL && i < sk_X509_num(b->chain); i++)
        ok = SSL_CTX_add1_chain_cert(ctx, sk_X509_value(b->chain, i)) == 1;
    if (ok && b->o->cacert != NULL) {
        ok = SSL_CTX_load_verify_locations(ctx, b->o->cacert, NULL) == 1;
        SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, NULL);
    }
    if (!ok) {
        SSL_CTX_free(ctx);
        return NULL;
    }
    SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_CLIENT | SSL_SESS_CACHE_NO_INTERNAL_STORE);
    SSL_CTX_sess_set_new_cb(ctx, on_new_session);
    return ctx;
}

static SSL *new_ssl(SSL_CTX *ctx, const struct bench *b, int fd)
{
    SSL *ssl = SSL_new(ctx);
    if (ssl == NULL)
        return NULL;
    int ok = SSL_set_fd(ssl, fd) == 1;
    if (ok && b->o->cacert != NULL) {
        X509_VERIFY_PARAM *vp = SSL_get0_param(ssl);
        if (X509_VERIFY_PARAM_set1_ip_asc(vp, b->host) != 1) {
            ERR_clear_error();
            ok = SSL_set1_host(ssl, b->host) == 1;
        }
    }
    if (ok && b->o->cacert == NULL && strchr(b->host, ':') == NULL && inet_addr(b->host) == INADDR_NONE)
        ok = SSL_set_tlsext_host_name(ssl, b->host) == 1;
    if (!ok) {
        SSL_free(ssl);
        return NULL;
    }
    SSL_set_connect_state(ssl);
    return ssl;
}

/* ---- HTTP response framing ----------------------------------------------- */

/* 1: a whole response of *total bytes is in buf; 0: need more; -1: not a
 * response this tool can frame (no Content-Length, chunked, garbage). */
static int parse_response(const char *buf, size_t len, int *status, size_t *total, int *close_conn)
{
    const char *end = memmem(buf, len, "\r\n\r\n", 4);
    if (end == NULL)
        return len >= RBUF_CAP ? -1 : 0;
    if (len < 12 || memcmp(buf, "HTTP/1.", 7) != 0 || buf[8] != ' ')
        return -1;
    int st = 0;
    for (int i = 9; i < 12; i++) {
        if (buf[i] < '0' || buf[i] > '9')
            return -1;
        st = st * 10 + (buf[i] - '0');
    }
    if (st < 100 || st > 599)
        return -1;
    long clen = -1;
    int cl = buf[7] == '0'; /* HTTP/1.0 closes unless told otherwise; we do not ask */
    const char *p = memchr(buf, '\n', (size_t)(end - buf));
    while (p != NULL && p < end) {
        const char *line = p + 1;
        const char *eol = memchr(line, '\r', (size_t)(end + 2 - line));
        if (eol == NULL)
            break;
        size_t n = (size_t)(eol - line);
        if (n > 15 && strncasecmp(line, "content-length:", 15) == 0) {
            const char *v = line + 15;
            while (v < eol && (*v == ' ' || *v == '\t'))
                v++;
            long x = 0;
            if (v == eol)
                return -1;
            for (; v < eol && *v >= '0' && *v <= '9'; v++) {
                x = x * 10 + (*v - '0');
                if (x > (long)BODY_MAX)
                    return -1;
            }
            if (v != eol || clen >= 0)
                return -1;
            clen = x;
        } else if (n > 11 && strncasecmp(line, "connection:", 11) == 0) {
            const char *v = line + 11;
            while (v < eol && *v == ' ')
                v++;
            cl = (size_t)(eol - v) >= 5 && strncasecmp(v, "close", 5) == 0;
        }
        p = eol + 1;
    }
    if (clen < 0)
        return -1;
    size_t need = (size_t)(end + 4 - buf) + (size_t)clen;
    if (need > RBUF_CAP)
        return -1;
    if (len < need)
        return 0;
    *status = st;
    *total = need;
    *close_conn = cl;
    return 1;
}

/* ---- setup requests (blocking, before the load) --------------------------- */

/* One request on a fresh blocking connection; the JSON reply in *out
 * (caller decrefs). Returns the HTTP status, or -1. */
/* Runs x on ssl until OpenSSL wants the socket (X_AGAIN), the handshake has
 * just completed (X_HANDSHAKEN: call again to go on), a whole response is in
 * rbuf (X_ANSWERED: x->status, x->close_conn), or the connection broke. */
static enum xresult xchg_run(SSL *ssl, struct xchg *x, char *rbuf, size_t cap)
{
    for (;;) {
        int r;
        switch (x->st) {
        case X_HANDSHAKE:
            r = SSL_connect(ssl);
            if (r != 1)
                break;
            x->st = X_WRITE;
            return X_HANDSHAKEN;
        case X_WRITE:
            r = SSL_write(ssl, x->req, (int)x->req_len);
            if (r <= 0)
                break;
            x->st = X_READ;
            x->rlen = 0;
            continue;
        default: {
            r = SSL_read(ssl, rbuf + x->rlen, (int)(cap - x->rlen));
            if (r <= 0)
                break;
            x->rlen += (size_t)r;
            size_t total;
            int p = parse_response(rbuf, x->rlen, &x->status, &total, &x->close_conn);
            if (p == 0 && x->rlen < cap)
                continue;
            if (p != 1 || total != x->rlen)
                return X_BROKEN;
            x->st = X_WRITE; /* why: ready for the next request on this connection */
            return X_ANSWERED;
        }
        }
        int err = SSL_get_error(ssl, r);
        return err == SSL_ERROR_WANT_READ || err == SSL_ERROR_WANT_WRITE ? X_AGAIN : X_BROKEN;
    }
}

static int setup_request(const struct bench *b, SSL_CTX *ctx, const char *method, const char *path, json_t *body,
                         json_t **out)
{
    *out = NULL;
    char *text = body ? json_dumps(body, JSON_COMPACT) : NULL;
    size_t blen = text ? strlen(text) : 0;
    int status = -1;
    char *req = NULL;
    SSL *ssl = NULL;
    int fd = socket(b->addr.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct timeval tv = {.tv_sec = 5};
    if (fd < 0 || setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv)) != 0 ||
        setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv)) != 0 ||
        connect(fd, (const struct sockaddr *)&b->addr, b->addrlen) != 0) {
        fprintf(stderr, "kmsctl bench: setup: cannot connect to %s: %s\n", b->o->url, strerror(errno));
        goto out;
    }
    ssl = new_ssl(ctx, b, fd);
    if (ssl == NULL || SSL_connect(ssl) != 1) {
        ssl_errors("setup: TLS handshake failed");
        goto out;
    }
    size_t cap = blen + 512;
    req = malloc(cap);
    if (req == NULL)
        goto out;
    int n = snprintf(req, cap,
                     "%s %s HTTP/1.1\r\nHost: %s\r\nUser-Agent: kmsctl-bench\r\nContent-Type: application/json\r\n"
                     "Content-Length: %zu\r\nConnection: close\r\n\r\n%s",
                     method, path, b->host, blen, text ? text : "");
    if (n < 0 || (size_t)n >= cap || SSL_write(ssl, req, n) != n) {
        ssl_errors("setup: cannot send the request");
        goto out;
    }
    static char buf[RBUF_CAP];
    size_t len = 0, total = 0;
    int st = 0, cl = 0, r = 0;
    while (len < sizeof(buf) && (r = parse_response(buf, len, &st, &total, &cl)) == 0) {
        int got = SSL_read(ssl, buf + len, (int)(sizeof(buf) - len));
        if (got <= 0)
            break;
        len += (size_t)got;
    }
    if (r != 1) {
        ERR_clear_error();
        fprintf(stderr, "kmsctl bench: setup: %s %s: no complete HTTP response\n", method, path);
        goto out;
    }
    const char *hend = memmem(buf, total, "\r\n\r\n", 4);
    json_error_t jerr;
    *out = json_loadb(hend + 4, total - (size_t)(hend + 4 - buf), 0, &jerr);
    status = st;
    (void)SSL_shutdown(ssl);
out:
    SSL_free(ssl);
    if (fd >= 0)
        close(fd);
    free(req);
    free(text);
    return status;
}

/* POSTs body and returns the string field `field` of the reply (malloc'd). */
static char *setup_field(const struct bench *b, SSL_CTX *ctx, const char *path, json_t *body, const char *field)
{
    json_t *reply;
    int st = setup_request(b, ctx, "POST", path, body, &reply);
    json_decref(body);
    const char *v = json_string_value(json_object_get(reply, field));
    char *copy = (st >= 200 && st <= 299 && v != NULL) ? strdup(v) : NULL;
    if (copy == NULL && st > 0)
        fprintf(stderr, "kmsctl bench: setup: POST %s answered %d without \"%s\"%s\n", path, st, field,
                st == 403 ? " (this operation's setup needs a backend certificate)" : "");
    json_decref(reply);
    return copy;
}

static int read_body_file(const char *path, char **out, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (f == NULL) {
        fprintf(stderr, "kmsctl bench: %s: %s\n", path, strerror(errno));
        return KMSCTL_EXIT_ERROR;
    }
    char *buf = malloc(BODY_MAX + 1);
    size_t n = buf ? fread(buf, 1, BODY_MAX + 1, f) : 0;
    int err = ferror(f);
    fclose(f);
    if (buf == NULL || err || n > BODY_MAX) {
        fprintf(stderr, "kmsctl bench: %s: unreadable or over %u bytes\n", path, BODY_MAX);
        free(buf);
        return KMSCTL_EXIT_ERROR;
    }
    *out = buf;
    *len = n;
    return KMSCTL_EXIT_OK;
}

/* Builds b->req: the operation's request, after its setup calls. */
static int build_request(struct bench *b, SSL_CTX *ctx)
{
    const struct opts *o = b->o;
    const char *method = "GET", *path = "/health/live";
    char *body = NULL, pathbuf[512];
    size_t blen = 0;
    int rc = KMSCTL_EXIT_OK;
    switch (o->op) {
    case OP_HEALTH:
        break;
    case OP_WHOAMI:
        path = "/v1/whoami";
        break;
    case OP_CREATE_CUSTOMER: {
        method = "POST";
        path = "/v1/customer-keys";
        json_t *j = json_pack("{s:s}", "site_id", o->site);
        body = j ? json_dumps(j, JSON_COMPACT) : NULL;
        json_decref(j);
        if (body == NULL)
            return KMSCTL_EXIT_ERROR;
        break;
    }
    case OP_UNWRAP_WS: {
        method = "POST";
        path = "/v1/workspace-keys/unwrap";
        if (o->body_file != NULL)
            break;
        char *ck = setup_field(b, ctx, "/v1/customer-keys", json_pack("{s:s}", "site_id", o->site), "customer_key");
        char *uk = ck ? setup_field(b, ctx, "/v1/user-keys",
                                    json_pack("{s:s,s:s}", "site_id", o->site, "customer_key", ck), "user_key")
                      : NULL;
        char *wk = uk ? setup_field(b, ctx, "/v1/workspace-keys",
                                    json_pack("{s:s,s:s,s:s}", "site_id", o->site, "customer_key", ck, "user_key", uk),
                                    "workspace_key")
                      : NULL;
        if (wk != NULL) {
            json_t *j = json_pack("{s:s,s:s,s:s,s:s}", "site_id", o->site, "customer_key", ck, "user_key", uk,
                                  "workspace_key", wk);
            body = json_dumps(j, JSON_COMPACT);
            json_decref(j);
        }
        free(ck);
        free(uk);
        free(wk);
        if (body == NULL)
            return KMSCTL_EXIT_ERROR;
        break;
    }
    case OP_UNWRAP: {
        method = "POST";
        unsigned char raw[32];
        char b64[64];
        if (RAND_bytes(raw, sizeof(raw)) != 1 || EVP_EncodeBlock((unsigned char *)b64, raw, sizeof(raw)) <= 0)
            return KMSCTL_EXIT_ERROR;
        snprintf(pathbuf, sizeof(pathbuf), "/v1/keys/%s/wrap", o->key_name);
        char *w = setup_field(b, ctx, pathbuf, json_pack("{s:s,s:s}", "plaintext", b64, "site_id", o->site), "wrapped");
        OPENSSL_cleanse(raw, sizeof(raw));
        OPENSSL_cleanse(b64, sizeof(b64));
        if (w == NULL)
            return KMSCTL_EXIT_ERROR;
        json_t *j = json_pack("{s:s,s:s}", "wrapped", w, "site_id", o->site);
        body = json_dumps(j, JSON_COMPACT);
        json_decref(j);
        free(w);
        snprintf(pathbuf, sizeof(pathbuf), "/v1/keys/%s/unwrap", o->key_name);
        path = pathbuf;
        break;
    }
    case OP_CUSTOM:
        method = o->method;
        path = o->path;
        break;
    }
    if (body != NULL)
        blen = strlen(body);
    else if (o->body_file != NULL && (rc = read_body_file(o->body_file, &body, &blen)) != KMSCTL_EXIT_OK)
        return rc;
    size_t cap = blen + strlen(method) + strlen(path) + strlen(b->host) + 256;
    b->req = malloc(cap);
    if (b->req == NULL) {
        free(body);
        return KMSCTL_EXIT_ERROR;
    }
    int n = snprintf(b->req, cap, "%s %s HTTP/1.1\r\nHost: %s\r\nUser-Agent: kmsctl-bench\r\n%s", method, path, b->host,
                     o->new_conn ? "Connection: close\r\n" : "");
    if (body != NULL || strcmp(method, "GET") != 0)
        n += snprintf(b->req + n, cap - (size_t)n, "Content-Type: application/json\r\nContent-Length: %zu\r\n", blen);
    n += snprintf(b->req + n, cap - (size_t)n, "\r\n");
    if (blen > 0)
        memcpy(b->req + n, body, blen);
    b->req_len = (size_t)n + blen;
    free(body);
    return KMSCTL_EXIT_OK;
}

/* ---- the load loop ----------------------------------------------------- */

static void conn_close(struct conn *c, int graceful)
{
    if (c->ssl != NULL) {
        /* why: freeing without SSL_shutdown marks the session not resumable
         * (ssl_clear_bad_session), which silently disables --resume */
        if (graceful)
            (void)SSL_shutdown(c->ssl);
        SSL_set_app_data(c->ssl, NULL);
        SSL_free(c->ssl);
        c->ssl = NULL;
    }
    if (c->fd >= 0)
        close(c->fd);
    c->fd = -1;
    c->st = S_DEAD;
    ERR_clear_error();
}

static int conn_open(struct conn *c)
{
    struct worker *w = c->w;
    const struct bench *b = w->b;
    c->fd = socket(b->addr.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (c->fd < 0)
        return -1;
    int one = 1;
    (void)setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    if (connect(c->fd, (const struct sockaddr *)&b->addr, b->addrlen) != 0 && errno != EINPROGRESS) {
        conn_close(c, 0);
        return -1;
    }
    c->ssl = new_ssl(w->ctx, b, c->fd);
    if (c->ssl == NULL) {
        conn_close(c, 0);
        return -1;
    }
    SSL_set_app_data(c->ssl, c);
    if (b->o->resume && c->sess != NULL)
        (void)SSL_set_session(c->ssl, c->sess);
    struct epoll_event ev = {.events = EPOLLIN | EPOLLOUT | EPOLLET, .data.ptr = c};
    if (epoll_ctl(w->ep, EPOLL_CTL_ADD, c->fd, &ev) != 0) {
        conn_close(c, 0);
        return -1;
    }
    c->st = S_LIVE;
    c->x = (struct xchg){.st = X_HANDSHAKE, .req = b->req, .req_len = b->req_len};
    c->t_start = kms_now_ns();
    return 0;
}

static void record(struct worker *w, uint64_t lat, int status)
{
    struct bench *b = w->b;
    if (atomic_load_explicit(&b->phase, memory_order_relaxed) != 1)
        return;
    long before = atomic_fetch_add_explicit(&b->measured, 1, memory_order_relaxed);
    if (b->o->requests > 0 && before >= b->o->requests)
        return; /* why: -n is exact; the answers still in flight are not counted */
    w->status[status]++;
    if (w->nlat == w->caplat) {
        size_t cap = w->caplat ? w->caplat * 2 : 65536;
        uint64_t *p = realloc(w->lat, cap * sizeof(*p));
        if (p == NULL)
            return;
        w->lat = p;
        w->caplat = cap;
    }
    w->lat[w->nlat++] = lat;
}

static int measuring(const struct worker *w)
{
    return atomic_load_explicit(&w->b->phase, memory_order_relaxed) == 1;
}

/* Runs c until OpenSSL wants the socket; a failure leaves c S_DEAD for the
 * loop to reopen (never recursively). */
static void drive(struct conn *c)
{
    struct worker *w = c->w;
    const struct bench *b = w->b;
    while (c->st == S_LIVE) {
        enum xresult r = xchg_run(c->ssl, &c->x, c->rbuf, sizeof(c->rbuf));
        if (r == X_AGAIN)
            return;
        if (r == X_HANDSHAKEN) {
            if (measuring(w)) {
                w->handshakes++;
                w->resumed += SSL_session_reused(c->ssl) ? 1 : 0;
            }
            if (!b->o->new_conn)
                c->t_start = kms_now_ns();
            continue;
        }
        if (r == X_ANSWERED) {
            uint64_t t = kms_now_ns();
            record(w, t - c->t_start, c->x.status);
            if (atomic_load_explicit(&b->phase, memory_order_relaxed) == 2)
                return;
            if (!b->o->new_conn && !c->x.close_conn) {
                c->t_start = t;
                continue;
            }
            conn_close(c, 1);
            if (conn_open(c) == 0)
                continue;
        }
        if (measuring(w))
            w->transport++;
        conn_close(c, 0);
        return;
    }
}

static void *worker_main(void *arg)
{
    struct worker *w = arg;
    struct bench *b = w->b;
    struct epoll_event evs[256];
    for (int i = 0; i < w->nconns; i++)
        if (conn_open(&w->conns[i]) == 0)
            drive(&w->conns[i]);
    uint64_t last_retry = kms_now_ns();
    while (atomic_load_explicit(&b->phase, memory_order_relaxed) != 2) {
        int n = epoll_wait(w->ep, evs, (int)KMS_ARRAY_LEN(evs), 5);
        for (int i = 0; i < n; i++)
            drive(evs[i].data.ptr);
        /* why: a refused connection must not spin; dead slots retry every 10 ms */
        uint64_t t = kms_now_ns();
        if (t - last_retry >= 10000000u) {
            last_retry = t;
            for (int i = 0; i < w->nconns; i++)
                if (w->conns[i].st == S_DEAD && conn_open(&w->conns[i]) == 0)
                    drive(&w->conns[i]);
        }
    }
    for (int i = 0; i < w->nconns; i++) {
        struct conn *c = &w->conns[i];
        conn_close(c, c->st == S_LIVE && c->x.st != X_HANDSHAKE);
        SSL_SESSION_free(c->sess);
        c->sess = NULL;
    }
    OPENSSL_thread_stop();
    return NULL;
}

/* ---- idle connections (--idle) ----------------------------------------- */

static void idle_close(struct idle_conn *c, int graceful)
{
    if (c->ssl != NULL) {
        if (graceful)
            (void)SSL_shutdown(c->ssl);
        SSL_free(c->ssl);
        c->ssl = NULL;
    }
    if (c->fd >= 0)
        close(c->fd);
    c->fd = -1;
    ERR_clear_error();
}

static int idle_open(struct idle *g, struct idle_conn *c)
{
    const struct bench *b = g->b;
    c->fd = socket(b->addr.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (c->fd < 0)
        return -1;
    int one = 1;
    (void)setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    if (connect(c->fd, (const struct sockaddr *)&b->addr, b->addrlen) != 0 && errno != EINPROGRESS)
        goto fail;
    c->ssl = new_ssl(g->ctx, b, c->fd);
    if (c->ssl == NULL)
        goto fail;
    struct epoll_event ev = {.events = EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLET, .data.ptr = c};
    if (epoll_ctl(g->ep, EPOLL_CTL_ADD, c->fd, &ev) != 0)
        goto fail;
    c->st = I_EXCHANGE;
    c->x = (struct xchg){.st = X_HANDSHAKE, .req = g->first, .req_len = g->first_len};
    c->t_open = kms_now_ns();
    return 0;
fail:
    idle_close(c, 0);
    return -1;
}

/* A connection failed: before its first answer it is retried (up to
 * IDLE_ATTEMPTS), after it the server closed it (or it broke). */
static void idle_lost(struct idle *g, struct idle_conn *c)
{
    idle_close(c, 0);
    if (c->established) {
        g->closed++;
        c->st = I_CLOSED;
        return;
    }
    g->inflight--;
    c->st = ++c->attempts < IDLE_ATTEMPTS ? I_WAIT : I_FAILED;
    if (c->st == I_FAILED)
        g->failed++;
}

static uint64_t ping_ns(const struct idle *g)
{
    return (uint64_t)(g->b->o->idle_ping * 1e9);
}

/* Runs c until OpenSSL wants the socket. */
static void idle_drive(struct idle *g, struct idle_conn *c)
{
    for (;;) {
        if (c->st == I_IDLE) {
            /* why: edge-triggered; reading to WANT_READ also sees a close
             * (or a late session ticket, which OpenSSL takes in) */
            int r = SSL_read(c->ssl, c->rbuf, (int)sizeof(c->rbuf));
            if (r > 0)
                continue;
            int err = SSL_get_error(c->ssl, r);
            if (err == SSL_ERROR_WANT_READ || err == SSL_ERROR_WANT_WRITE)
                return;
            idle_lost(g, c);
            return;
        }
        if (c->st != I_EXCHANGE)
            return;
        enum xresult r = xchg_run(c->ssl, &c->x, c->rbuf, sizeof(c->rbuf));
        if (r == X_AGAIN)
            return;
        if (r == X_HANDSHAKEN)
            continue;
        if (r == X_BROKEN) {
            idle_lost(g, c);
            return;
        }
        int ok = c->x.status >= 200 && c->x.status <= 299;
        if (!c->established) {
            g->inflight--;
            if (!ok) { /* why: a refused identity is not worth retrying */
                g->refused++;
                g->failed++;
                idle_close(c, 1);
                c->st = I_FAILED;
                return;
            }
            c->established = 1;
            g->opened++;
            /* why: the set opens within a second or two; spread its pings
             * over the first period instead of sending them all at once */
            uint64_t jitter = 0, per = ping_ns(g);
            if (per > 0 && RAND_bytes((unsigned char *)&jitter, sizeof(jitter)) == 1)
                jitter %= per / 2 + 1;
            c->next_ping = kms_now_ns() + per / 2 + jitter;
        } else {
            g->pings++;
            g->ping_errors += ok ? 0 : 1;
            c->next_ping = kms_now_ns() + ping_ns(g);
        }
        if (c->x.close_conn) {
            idle_lost(g, c);
            return;
        }
        c->st = I_IDLE;
        c->x.req = g->ping;
        c->x.req_len = g->ping_len;
    }
}

static void *idle_main(void *arg)
{
    struct idle *g = arg;
    struct bench *b = g->b;
    struct epoll_event evs[256];
    uint64_t per = ping_ns(g);
    while (atomic_load_explicit(&b->phase, memory_order_relaxed) != 2) {
        /* start waiting slots (new ones, and retries), IDLE_INFLIGHT at a time */
        for (int i = 0; i < g->n && g->inflight < IDLE_INFLIGHT; i++) {
            struct idle_conn *c = &g->c[i];
            if (c->st != I_WAIT)
                continue;
            g->inflight++;
            if (idle_open(g, c) != 0) {
                g->inflight--;
                c->st = ++c->attempts < IDLE_ATTEMPTS ? I_WAIT : I_FAILED;
                g->failed += c->st == I_FAILED;
                break; /* why: out of fds or refused: retry on the next round, not in a tight loop */
            }
            idle_drive(g, c);
        }
        if (!atomic_load_explicit(&g->ready, memory_order_relaxed) && g->inflight == 0) {
            int waiting = 0;
            for (int i = 0; i < g->n && !waiting; i++)
                waiting = g->c[i].st == I_WAIT;
            if (!waiting)
                atomic_store(&g->ready, 1);
        }
        int n = epoll_wait(g->ep, evs, (int)KMS_ARRAY_LEN(evs), 20);
        for (int i = 0; i < n; i++)
            idle_drive(g, evs[i].data.ptr);
        uint64_t t = kms_now_ns();
        for (int i = 0; i < g->n; i++) {
            struct idle_conn *c = &g->c[i];
            int live = c->st == I_EXCHANGE || c->st == I_IDLE;
            /* why: a server at its connection limit may leave a connection
             * in its listen backlog, unanswered, for ever */
            if (live && !c->established && t - c->t_open > (uint64_t)IDLE_ATTEMPT_S * 1000000000u)
                idle_lost(g, c);
            else if (per > 0 && c->st == I_IDLE && t >= c->next_ping) {
                c->st = I_EXCHANGE;
                c->x.st = X_WRITE;
                idle_drive(g, c);
            }
        }
    }
    for (int i = 0; i < g->n; i++) {
        struct idle_conn *c = &g->c[i];
        int live = c->st == I_EXCHANGE || c->st == I_IDLE;
        g->open_at_end += live && c->established;
        g->pending_at_end += (live && !c->established) || c->st == I_WAIT;
        idle_close(c, live && c->established);
    }
    OPENSSL_thread_stop();
    return NULL;
}

/* The idle connections' two requests; the ping is the cheapest route. */
static int idle_init(struct idle *g, struct bench *b)
{
    g->b = b;
    g->ep = -1;
    g->n = b->o->idle;
    int n1 = snprintf(g->first, sizeof(g->first), "GET /v1/whoami HTTP/1.1\r\nHost: %s\r\nUser-Agent: kmsctl-bench\r\n\r\n",
                      b->host);
    int n2 = snprintf(g->ping, sizeof(g->ping), "GET /health/live HTTP/1.1\r\nHost: %s\r\nUser-Agent: kmsctl-bench\r\n\r\n",
                      b->host);
    if (n1 < 0 || (size_t)n1 >= sizeof(g->first) || n2 < 0 || (size_t)n2 >= sizeof(g->ping))
        return KMSCTL_EXIT_ERROR;
    g->first_len = (size_t)n1;
    g->ping_len = (size_t)n2;
    g->c = calloc((size_t)g->n, sizeof(*g->c));
    g->ctx = make_ctx(b);
    g->ep = epoll_create1(EPOLL_CLOEXEC);
    if (g->c == NULL || g->ctx == NULL || g->ep < 0) {
        ssl_errors("cannot set up the idle connections");
        return KMSCTL_EXIT_ERROR;
    }
    for (int i = 0; i < g->n; i++)
        g->c[i].fd = -1;
    return KMSCTL_EXIT_OK;
}

static void idle_free(struct idle *g)
{
    SSL_CTX_free(g->ctx);
    g->ctx = NULL;
    if (g->ep >= 0)
        close(g->ep);
    g->ep = -1;
    free(g->c);
    g->c = NULL;
}

/* One fd per connection, idle or not, plus some for epoll and the setup. */
static int raise_fd_limit(const struct opts *o)
{
    rlim_t need = (rlim_t)o->conns + (rlim_t)o->idle + 64;
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) != 0)
        return KMSCTL_EXIT_ERROR;
    if (rl.rlim_cur != RLIM_INFINITY && rl.rlim_cur < need) {
        if (rl.rlim_max != RLIM_INFINITY && rl.rlim_max < need) {
            fprintf(stderr, "kmsctl bench: %d + %d connections need %llu file descriptors; the hard limit is %llu\n",
                    o->conns, o->idle, (unsigned long long)need, (unsigned long long)rl.rlim_max);
            return KMSCTL_EXIT_ERROR;
        }
        rl.rlim_cur = rl.rlim_max;
        if (setrlimit(RLIMIT_NOFILE, &rl) != 0) {
            fprintf(stderr, "kmsctl bench: cannot raise the file descriptor limit: %s\n", strerror(errno));
            return KMSCTL_EXIT_ERROR;
        }
    }
    return KMSCTL_EXIT_OK;
}

/* ---- report ------------------------------------------------------------ */

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return (x > y) - (x < y);
}

static double pct_ms(const uint64_t *v, size_t n, double q)
{
    if (n == 0)
        return 0.0;
    size_t i = (size_t)(q * (double)(n - 1) + 0.5);
    return (double)v[i] / 1e6;
}

static double tv_s(struct timeval tv)
{
    return (double)tv.tv_sec + (double)tv.tv_usec / 1e6;
}

struct totals {
    uint64_t *lat;
    size_t n;
    uint64_t status[600];
    uint64_t transport, handshakes, resumed, errors;
    double elapsed, user, sys;
};

static json_t *idle_json(const struct idle *g)
{
    return json_pack("{s:i,s:I,s:i,s:i,s:I,s:I,s:I,s:I,s:I,s:f}", "requested", g->n, "opened",
                     (json_int_t)g->opened, "open_at_end", g->open_at_end, "pending_at_end", g->pending_at_end,
                     "closed_by_server", (json_int_t)g->closed, "failed",
                     (json_int_t)g->failed, "refused", (json_int_t)g->refused, "pings", (json_int_t)g->pings,
                     "ping_errors", (json_int_t)g->ping_errors, "ping_s", g->b->o->idle_ping);
}

static void report(const struct bench *b, const struct totals *t, const struct idle *g)
{
    const struct opts *o = b->o;
    const char *method_end = memchr(b->req, ' ', b->req_len);
    const char *path_end = method_end ? memchr(method_end + 1, ' ', b->req_len - (size_t)(method_end + 1 - b->req)) : NULL;
    int mlen = method_end ? (int)(method_end - b->req) : 0;
    int plen = path_end ? (int)(path_end - method_end - 1) : 0;
    double rps = t->elapsed > 0 ? (double)t->n / t->elapsed : 0.0;
    double cpu = t->elapsed > 0 ? 100.0 * (t->user + t->sys) / t->elapsed : 0.0;
    if (o->json) {
        json_t *st = json_object();
        char k[8];
        for (int i = 0; i < 600; i++)
            if (t->status[i] != 0) {
                snprintf(k, sizeof(k), "%d", i);
                json_object_set_new(st, k, json_integer((json_int_t)t->status[i]));
            }
        json_t *j = json_pack(
            "{s:s,s:s#,s:s#,s:i,s:i,s:b,s:b,s:b,s:f,s:I,s:f,s:{s:f,s:f,s:f,s:f},s:o,s:I,s:I,s:I,s:I,s:{s:f,s:f,s:f}}",
            "op", op_names[o->op], "method", b->req, mlen, "path", method_end ? method_end + 1 : "", plen, "connections",
            o->conns, "threads", o->threads, "new_conn", o->new_conn, "resume", o->resume, "verified",
            o->cacert != NULL, "duration_s", t->elapsed, "requests", (json_int_t)t->n, "requests_per_s", rps,
            "latency_ms", "p50", pct_ms(t->lat, t->n, 0.50), "p90", pct_ms(t->lat, t->n, 0.90), "p99",
            pct_ms(t->lat, t->n, 0.99), "max", pct_ms(t->lat, t->n, 1.0), "status", st, "errors",
            (json_int_t)t->errors, "transport_errors", (json_int_t)t->transport, "handshakes",
            (json_int_t)t->handshakes, "resumed", (json_int_t)t->resumed, "cpu", "user_s", t->user, "sys_s", t->sys,
            "percent", cpu);
        if (j == NULL)
            return;
        if (g != NULL)
            json_object_set_new(j, "idle", idle_json(g));
        char *s = json_dumps(j, JSON_COMPACT);
        if (s != NULL)
            printf("%s\n", s);
        free(s);
        json_decref(j);
        return;
    }
    if (g != NULL && o->conns == 0)
        printf("kmsctl bench: idle connections only, %.2f s\n", t->elapsed);
    if (g != NULL)
        printf("idle:        %d requested, %llu opened, %d open at the end, %llu closed by the server after "
               "opening, %llu failed to open (%llu refused), %d still opening\n"
               "idle pings:  %llu GET /health/live, %llu non-2xx, every %.1f s%s\n",
               g->n, (unsigned long long)g->opened, g->open_at_end, (unsigned long long)g->closed,
               (unsigned long long)g->failed, (unsigned long long)g->refused, g->pending_at_end,
               (unsigned long long)g->pings,
               (unsigned long long)g->ping_errors, o->idle_ping, o->idle_ping > 0 ? "" : " (never)");
    if (o->conns == 0)
        return;
    printf("kmsctl bench: %.*s %.*s, %d connections, %d thread%s, %s, %.2f s measured (warm-up %.1f s)\n", mlen,
           b->req, plen, method_end ? method_end + 1 : "", o->conns, o->threads, o->threads == 1 ? "" : "s",
           o->new_conn ? (o->resume ? "new connection per request, resumed" : "new connection per request")
                       : "keep-alive",
           t->elapsed, o->warmup);
    if (o->cacert == NULL)
        printf("server certificate: NOT verified (no --cacert)\n");
    printf("requests:    %llu (%.1f req/s)\n", (unsigned long long)t->n, rps);
    printf("latency ms:  p50 %.3f  p90 %.3f  p99 %.3f  max %.3f\n", pct_ms(t->lat, t->n, 0.50),
           pct_ms(t->lat, t->n, 0.90), pct_ms(t->lat, t->n, 0.99), pct_ms(t->lat, t->n, 1.0));
    printf("status:     ");
    for (int i = 0; i < 600; i++)
        if (t->status[i] != 0)
            printf(" %d: %llu", i, (unsigned long long)t->status[i]);
    printf("\nerrors:      %llu (non-2xx and transport; transport %llu)\n", (unsigned long long)t->errors,
           (unsigned long long)t->transport);
    printf("handshakes:  %llu (resumed %llu)\n", (unsigned long long)t->handshakes, (unsigned long long)t->resumed);
    printf("client CPU:  %.0f%% (user %.2f s, sys %.2f s)\n", cpu, t->user, t->sys);
}

/* ---- main -------------------------------------------------------------- */

static int parse_args(int argc, char **argv, struct opts *o)
{
    enum { O_URL = 256, O_CERT, O_CERT_PEM, O_KEY_PEM, O_PWFILE, O_CACERT, O_NEW, O_RESUME, O_OP, O_METHOD, O_PATH,
           O_BODY, O_KEY, O_SITE, O_JSON, O_REMOTE, O_IDLE, O_IDLE_PING, O_HELP };
    static const struct option lo[] = {
        {"url", required_argument, NULL, O_URL},         {"cert", required_argument, NULL, O_CERT},
        {"cert-pem", required_argument, NULL, O_CERT_PEM}, {"key-pem", required_argument, NULL, O_KEY_PEM},
        {"password-file", required_argument, NULL, O_PWFILE}, {"cacert", required_argument, NULL, O_CACERT},
        {"new-conn", no_argument, NULL, O_NEW},          {"resume", no_argument, NULL, O_RESUME},
        {"op", required_argument, NULL, O_OP},           {"method", required_argument, NULL, O_METHOD},
        {"path", required_argument, NULL, O_PATH},       {"body-file", required_argument, NULL, O_BODY},
        {"key", required_argument, NULL, O_KEY},         {"site", required_argument, NULL, O_SITE},
        {"json", no_argument, NULL, O_JSON},             {"allow-remote", no_argument, NULL, O_REMOTE},
        {"idle", required_argument, NULL, O_IDLE},       {"idle-ping", required_argument, NULL, O_IDLE_PING},
        {"help", no_argument, NULL, O_HELP},             {NULL, 0, NULL, 0},
    };
    int d_set = 0, ch;
    long v;
    opterr = 0;
    optind = 1;
    while ((ch = getopt_long(argc, argv, ":c:t:d:n:w:h", lo, NULL)) != -1) {
        switch (ch) {
        case O_URL: o->url = optarg; break;
        case O_CERT: o->cert = optarg; break;
        case O_CERT_PEM: o->cert_pem = optarg; break;
        case O_KEY_PEM: o->key_pem = optarg; break;
        case O_PWFILE: o->password_file = optarg; break;
        case O_CACERT: o->cacert = optarg; break;
        case O_NEW: o->new_conn = 1; break;
        case O_RESUME: o->resume = 1; break;
        case O_METHOD: o->method = optarg; break;
        case O_PATH: o->path = optarg; break;
        case O_BODY: o->body_file = optarg; break;
        case O_KEY: o->key_name = optarg; break;
        case O_SITE: o->site = optarg; break;
        case O_JSON: o->json = 1; break;
        case O_REMOTE: o->allow_remote = 1; break;
        case O_HELP:
        case 'h': usage(stdout); return -1;
        case O_OP: {
            size_t i;
            for (i = 0; i < KMS_ARRAY_LEN(op_names) && strcmp(op_names[i], optarg) != 0; i++)
                ;
            if (i == KMS_ARRAY_LEN(op_names))
                return bad_usage("unknown --op '%s'", optarg);
            o->op = (enum op)i;
            break;
        }
        case 'c':
            if (parse_long(optarg, 0, MAX_CONNS, &v) != 0)
                return bad_usage("-c takes 1..10000 connections (0 with --idle), not '%s'", optarg);
            o->conns = (int)v;
            break;
        case O_IDLE:
            if (parse_long(optarg, 0, MAX_CONNS, &v) != 0)
                return bad_usage("--idle takes 0..10000 connections, not '%s'", optarg);
            o->idle = (int)v;
            break;
        case O_IDLE_PING:
            if (parse_seconds(optarg, &o->idle_ping) != 0)
                return bad_usage("--idle-ping takes seconds, not '%s'", optarg);
            break;
        case 't':
            if (parse_long(optarg, 1, MAX_THREADS, &v) != 0)
                return bad_usage("-t takes 1..64 threads, not '%s'", optarg);
            o->threads = (int)v;
            break;
        case 'n':
            if (parse_long(optarg, 1, 1000000000L, &o->requests) != 0)
                return bad_usage("-n takes a positive request count, not '%s'", optarg);
            break;
        case 'd':
            if (parse_seconds(optarg, &o->duration) != 0 || o->duration <= 0)
                return bad_usage("-d takes positive seconds, not '%s'", optarg);
            d_set = 1;
            break;
        case 'w':
            if (parse_seconds(optarg, &o->warmup) != 0)
                return bad_usage("-w takes seconds, not '%s'", optarg);
            break;
        case ':': return bad_usage("option %s needs a value", argv[optind - 1]);
        default: return bad_usage("unknown option '%s'", argv[optind - 1]);
        }
    }
    if (optind != argc)
        return bad_usage("unexpected argument '%s'", argv[optind]);
    if (o->url == NULL)
        return bad_usage("%s", "--url is required");
    if ((o->cert != NULL) == (o->cert_pem != NULL || o->key_pem != NULL) ||
        (o->cert == NULL && (o->cert_pem == NULL || o->key_pem == NULL)))
        return bad_usage("%s", "give either --cert FILE.p12 or both --cert-pem and --key-pem");
    if (o->conns == 0 && o->idle == 0)
        return bad_usage("%s", "-c 0 (no load) needs --idle N");
    if (o->idle_ping > 0 && o->idle_ping < 0.1)
        return bad_usage("--idle-ping %g: under 0.1 s is load, not idleness (0: never)", o->idle_ping);
    if (o->resume && !o->new_conn)
        return bad_usage("%s", "--resume needs --new-conn (keep-alive connections are not re-established)");
    if (o->op == OP_CUSTOM && (o->method == NULL || o->path == NULL || o->path[0] != '/'))
        return bad_usage("%s", "--op custom needs --method and --path /...");
    if (o->op != OP_CUSTOM && (o->method != NULL || o->path != NULL))
        return bad_usage("%s", "--method and --path go with --op custom");
    if (o->body_file != NULL && o->op != OP_CUSTOM && o->op != OP_UNWRAP_WS)
        return bad_usage("%s", "--body-file goes with --op custom or unwrap-workspace");
    for (const char *m = o->method; m != NULL && *m; m++)
        if (*m < 'A' || *m > 'Z')
            return bad_usage("--method '%s' must be upper-case letters", o->method);
    for (const char *p = o->path; p != NULL && *p; p++)
        if (*p <= ' ' || *p == 0x7f)
            return bad_usage("--path '%s' must not hold spaces or control characters", o->path);
    if (strspn(o->key_name, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.") != strlen(o->key_name))
        return bad_usage("--key '%s' is not a key name", o->key_name);
    if (o->conns < o->threads)
        o->threads = o->conns;
    if (!d_set && o->requests > 0)
        o->duration = 60.0;
    return 0;
}

static volatile sig_atomic_t stop_requested;

static void on_stop_signal(int sig)
{
    (void)sig;
    stop_requested = 1;
}

static void sleep_until(uint64_t t)
{
    uint64_t n = kms_now_ns();
    if (t <= n)
        return;
    struct timespec ts = {.tv_sec = (time_t)((t - n) / 1000000000u), .tv_nsec = (long)((t - n) % 1000000000u)};
    nanosleep(&ts, NULL);
}

/* Sleeps until t, in short steps, or until SIGINT/SIGTERM or done() says so. */
static void wait_until(uint64_t t, atomic_int *done)
{
    while (!stop_requested && kms_now_ns() < t && (done == NULL || !atomic_load(done)))
        sleep_until(kms_now_ns() + 2000000u);
}

static void bench_free(struct bench *b, struct worker *ws, int nw)
{
    for (int i = 0; ws != NULL && i < nw; i++) {
        SSL_CTX_free(ws[i].ctx);
        if (ws[i].ep >= 0)
            close(ws[i].ep);
        free(ws[i].conns);
        free(ws[i].lat);
    }
    free(ws);
    X509_free(b->cert);
    EVP_PKEY_free(b->key);
    sk_X509_pop_free(b->chain, X509_free);
    free(b->req);
}

int kmsctl_bench_main(int argc, char **argv)
{
    struct opts o = {.conns = 16, .threads = 1, .duration = 10.0, .warmup = 1.0, .key_name = "kms-master",
                     .site = "bench", .op = OP_HEALTH, .idle_ping = 10.0};
    int prc = parse_args(argc, argv, &o);
    if (prc != 0)
        return prc < 0 ? KMSCTL_EXIT_OK : prc;
    /* why: the hard stop: whatever happens (a stuck setup call, a bug), the
     * process ends by itself; SIGALRM's default action terminates it */
    unsigned limit = (unsigned)(o.warmup + o.duration) + HARD_STOP_SLACK_S + 1 + (o.idle > 0 ? IDLE_SETUP_S : 0);
    alarm(limit);
    signal(SIGPIPE, SIG_IGN);
    struct sigaction sa = {.sa_handler = on_stop_signal};
    sigemptyset(&sa.sa_mask);
    (void)sigaction(SIGINT, &sa, NULL);
    (void)sigaction(SIGTERM, &sa, NULL);

    struct bench b = {.o = &o};
    struct worker *ws = NULL;
    struct idle g = {.ep = -1};
    int idle_started = 0;
    int rc = raise_fd_limit(&o);
    if (rc == KMSCTL_EXIT_OK)
        rc = resolve_url(&b);
    if (rc == KMSCTL_EXIT_OK)
        rc = load_credentials(&b);
    SSL_CTX *setup_ctx = rc == KMSCTL_EXIT_OK ? make_ctx(&b) : NULL;
    if (rc == KMSCTL_EXIT_OK && setup_ctx == NULL) {
        ssl_errors("cannot set up TLS with this certificate, key or CA file");
        rc = KMSCTL_EXIT_ERROR;
    }
    if (rc == KMSCTL_EXIT_OK)
        rc = build_request(&b, setup_ctx);
    SSL_CTX_free(setup_ctx);
    if (rc == KMSCTL_EXIT_OK && (ws = calloc((size_t)(o.threads > 0 ? o.threads : 1), sizeof(*ws))) == NULL)
        rc = KMSCTL_EXIT_ERROR;
    if (rc == KMSCTL_EXIT_OK && o.idle > 0) {
        rc = idle_init(&g, &b);
        if (rc == KMSCTL_EXIT_OK && pthread_create(&g.tid, NULL, idle_main, &g) != 0) {
            fprintf(stderr, "kmsctl bench: cannot start a thread\n");
            rc = KMSCTL_EXIT_ERROR;
        }
        idle_started = rc == KMSCTL_EXIT_OK;
        /* why: the idle set is up before the load starts, so that the load
         * runs beside it and a server's memory can be read with it alone */
        if (rc == KMSCTL_EXIT_OK)
            wait_until(kms_now_ns() + (uint64_t)IDLE_SETUP_S * 1000000000u, &g.ready);
    }
    for (int i = 0; rc == KMSCTL_EXIT_OK && i < o.threads; i++) {
        struct worker *w = &ws[i];
        w->b = &b;
        w->ep = -1;
        w->nconns = o.conns / o.threads + (i < o.conns % o.threads ? 1 : 0);
        w->conns = calloc((size_t)w->nconns, sizeof(*w->conns));
        w->ctx = make_ctx(&b);
        w->ep = epoll_create1(EPOLL_CLOEXEC);
        if (w->conns == NULL || w->ctx == NULL || w->ep < 0) {
            ssl_errors("cannot set up a worker");
            rc = KMSCTL_EXIT_ERROR;
            break;
        }
        for (int k = 0; k < w->nconns; k++) {
            w->conns[k].w = w;
            w->conns[k].fd = -1;
        }
    }
    int started = 0;
    for (; rc == KMSCTL_EXIT_OK && started < o.threads; started++)
        if (pthread_create(&ws[started].tid, NULL, worker_main, &ws[started]) != 0) {
            fprintf(stderr, "kmsctl bench: cannot start a thread\n");
            atomic_store(&b.phase, 2);
            rc = KMSCTL_EXIT_ERROR;
            break;
        }
    struct totals t = {0};
    if (rc == KMSCTL_EXIT_OK) {
        uint64_t t0 = kms_now_ns();
        wait_until(t0 + (uint64_t)(o.warmup * 1e9), NULL);
        struct rusage r0, r1;
        getrusage(RUSAGE_SELF, &r0);
        uint64_t m0 = kms_now_ns(), end = m0 + (uint64_t)(o.duration * 1e9);
        atomic_store(&b.phase, 1);
        while (!stop_requested && kms_now_ns() < end && (o.requests == 0 || atomic_load(&b.measured) < o.requests))
            sleep_until(kms_now_ns() + 2000000u);
        atomic_store(&b.phase, 2);
        uint64_t m1 = kms_now_ns();
        getrusage(RUSAGE_SELF, &r1);
        t.elapsed = (double)(m1 - m0) / 1e9;
        struct timeval du, ds;
        timersub(&r1.ru_utime, &r0.ru_utime, &du);
        timersub(&r1.ru_stime, &r0.ru_stime, &ds);
        t.user = tv_s(du);
        t.sys = tv_s(ds);
    }
    atomic_store(&b.phase, 2);
    for (int i = 0; i < started; i++)
        pthread_join(ws[i].tid, NULL);
    if (idle_started)
        pthread_join(g.tid, NULL);
    if (rc == KMSCTL_EXIT_OK) {
        for (int i = 0; i < o.threads; i++)
            t.n += ws[i].nlat;
        t.lat = malloc((t.n ? t.n : 1) * sizeof(*t.lat));
        if (t.lat == NULL)
            rc = KMSCTL_EXIT_ERROR;
    }
    if (rc == KMSCTL_EXIT_OK) {
        size_t at = 0;
        for (int i = 0; i < o.threads; i++) {
            if (ws[i].nlat)
                memcpy(t.lat + at, ws[i].lat, ws[i].nlat * sizeof(*t.lat));
            at += ws[i].nlat;
            for (int s = 0; s < 600; s++)
                t.status[s] += ws[i].status[s];
            t.transport += ws[i].transport;
            t.handshakes += ws[i].handshakes;
            t.resumed += ws[i].resumed;
        }
        qsort(t.lat, t.n, sizeof(*t.lat), cmp_u64);
        t.errors = t.transport;
        for (int s = 0; s < 600; s++)
            if (s < 200 || s > 299)
                t.errors += t.status[s];
        report(&b, &t, o.idle > 0 ? &g : NULL);
        if ((o.conns > 0 && t.n == 0) || (o.idle > 0 && g.opened == 0))
            rc = KMSCTL_EXIT_ERROR;
    }
    free(t.lat);
    idle_free(&g);
    bench_free(&b, ws, o.threads);
    alarm(0);
    return rc;
}
