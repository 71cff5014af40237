/* hsm/kmip/kmip_client.c against a scripted KMIP server in a thread: what
 * PyKMIP cannot be made to do on purpose. A server without KMIP 1.4, one that
 * drops a pooled connection, one that never answers, answers garbage or a
 * frame too large, answers GCM without a tag, and a pool with no free
 * connection. The fake speaks real TLS with a throwaway PKI. */
#include "hsm/kmip/kmip_client.h"

#include <criterion/criterion.h>
#include <netinet/in.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "common/log.h"

#define T 60

enum mode {
    FAKE_OK,      /* answers like a KMIP 1.4 server */
    FAKE_OLD,     /* a 1.2 server: refuses 1.4 headers, lists 1.2, 1.1, 1.0 */
    FAKE_SILENT,  /* reads requests, never answers */
    FAKE_GARBAGE, /* answers bytes that are not TTLV */
    FAKE_HUGE,    /* answers a header announcing a 1 MiB message */
    FAKE_NO_TAG,  /* Encrypt answered without a tag (GCM before KMIP 1.4) */
};

struct fake {
    SSL_CTX *ctx;
    int lfd;
    uint16_t port;
    pthread_t thr;
    atomic_int stop;
    atomic_int mode;
    atomic_int drop_request; /* close instead of answering this request (1-based, all connections) */
    atomic_int close_after;  /* close right after answering this request */
    atomic_int requests;
    atomic_int connections;
    atomic_int delay_ms; /* wait this long before answering each request */
    pthread_mutex_t cn_mu;
    char cn[64][64]; /* the client certificate's CN, per accepted connection */
    int n_cn;
};

static char dir[64];
static struct fake fk;
static X509 *client_cert;
static EVP_PKEY *client_key;
static X509_STORE *trust;

/* ---- PKI --------------------------------------------------------------- */

/* CA, server certificate for 127.0.0.1 (serverAuth), client certificate (clientAuth). */
#define MAKE_PKI                                                                                                 \
    "openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout ca.key -out ca.crt "           \
    "-days 2 -subj /CN=fake-ca -addext basicConstraints=critical,CA:TRUE 2>/dev/null && "                         \
    "openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout s.key -out s.csr -subj /CN=fake "    \
    "2>/dev/null && printf 'subjectAltName=IP:127.0.0.1\\nextendedKeyUsage=serverAuth\\n' > s.ext && "            \
    "openssl x509 -req -in s.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days 2 -extfile s.ext -out s.crt "    \
    "2>/dev/null && "                                                                                            \
    "openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout c.key -out c.csr -subj /CN=kmsClient " \
    "2>/dev/null && printf 'extendedKeyUsage=clientAuth\\n' > c.ext && "                                          \
    "openssl x509 -req -in c.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days 2 -extfile c.ext -out c.crt "    \
    "2>/dev/null"

static X509 *cert_at(const char *name)
{
    char p[128];
    snprintf(p, sizeof(p), "%s/%s", dir, name);
    FILE *f = fopen(p, "r");
    cr_assert_not_null(f, "%s", p);
    X509 *x = PEM_read_X509(f, NULL, NULL, NULL);
    fclose(f);
    cr_assert_not_null(x);
    return x;
}

static EVP_PKEY *key_at(const char *name)
{
    char p[128];
    snprintf(p, sizeof(p), "%s/%s", dir, name);
    FILE *f = fopen(p, "r");
    cr_assert_not_null(f, "%s", p);
    EVP_PKEY *k = PEM_read_PrivateKey(f, NULL, NULL, NULL);
    fclose(f);
    cr_assert_not_null(k);
    return k;
}

/* ---- the fake server --------------------------------------------------- */

/* Reads n bytes, checking stop every 100 ms. 0 ok, -1 EOF/error/stop. */
static int fake_read(SSL *s, int fd, uint8_t *p, size_t n)
{
    size_t off = 0;
    while (off < n) {
        if (SSL_pending(s) == 0) {
            struct pollfd pf = {.fd = fd, .events = POLLIN, .revents = 0};
            int r = poll(&pf, 1, 100);
            if (atomic_load(&fk.stop))
                return -1;
            if (r <= 0)
                continue;
        }
        size_t got = 0;
        if (SSL_read_ex(s, p + off, n - off, &got) != 1)
            return -1;
        off += got;
    }
    return 0;
}

static void put_header(struct kms_ttlv_enc *e, int minor)
{
    cr_assert_eq(kms_ttlv_begin(e, KMS_KMIP_TAG_RESPONSE_MESSAGE), KMS_OK);
    cr_assert_eq(kms_ttlv_begin(e, KMS_KMIP_TAG_RESPONSE_HEADER), KMS_OK);
    cr_assert_eq(kms_ttlv_begin(e, KMS_KMIP_TAG_PROTOCOL_VERSION), KMS_OK);
    cr_assert_eq(kms_ttlv_put_int(e, KMS_KMIP_TAG_PROTOCOL_VERSION_MAJOR, 1), KMS_OK);
    cr_assert_eq(kms_ttlv_put_int(e, KMS_KMIP_TAG_PROTOCOL_VERSION_MINOR, minor), KMS_OK);
    cr_assert_eq(kms_ttlv_end(e), KMS_OK);
    cr_assert_eq(kms_ttlv_put_datetime(e, KMS_KMIP_TAG_TIME_STAMP, (int64_t)time(NULL)), KMS_OK);
    cr_assert_eq(kms_ttlv_put_int(e, KMS_KMIP_TAG_BATCH_COUNT, 1), KMS_OK);
    cr_assert_eq(kms_ttlv_end(e), KMS_OK);
}

static void put_failure(struct kms_ttlv_enc *e, uint32_t reason, const char *msg)
{
    cr_assert_eq(kms_ttlv_put_enum(e, KMS_KMIP_TAG_RESULT_STATUS, KMS_KMIP_STATUS_OPERATION_FAILED), KMS_OK);
    cr_assert_eq(kms_ttlv_put_enum(e, KMS_KMIP_TAG_RESULT_REASON, reason), KMS_OK);
    cr_assert_eq(kms_ttlv_put_text(e, KMS_KMIP_TAG_RESULT_MESSAGE, msg, strlen(msg)), KMS_OK);
}

static void put_versions(struct kms_ttlv_enc *e, const int (*v)[2], size_t n)
{
    for (size_t i = 0; i < n; i++) {
        cr_assert_eq(kms_ttlv_begin(e, KMS_KMIP_TAG_PROTOCOL_VERSION), KMS_OK);
        cr_assert_eq(kms_ttlv_put_int(e, KMS_KMIP_TAG_PROTOCOL_VERSION_MAJOR, v[i][0]), KMS_OK);
        cr_assert_eq(kms_ttlv_put_int(e, KMS_KMIP_TAG_PROTOCOL_VERSION_MINOR, v[i][1]), KMS_OK);
        cr_assert_eq(kms_ttlv_end(e), KMS_OK);
    }
}

/* The answer to one request, by mode and operation. */
static void answer(const uint8_t *req, size_t len, struct kms_buf *out)
{
    struct kms_ttlv_doc *d = NULL;
    cr_assert_eq(kms_ttlv_decode(req, len, &d), KMS_OK, "the client sent bad TTLV: %s", kms_error_detail());
    const struct kms_ttlv *root = kms_ttlv_doc_root(d);
    const struct kms_ttlv *hdr = kms_ttlv_first(root, KMS_KMIP_TAG_REQUEST_HEADER);
    const struct kms_ttlv *pv = kms_ttlv_first(hdr, KMS_KMIP_TAG_PROTOCOL_VERSION);
    int minor = (int)kms_ttlv_first(pv, KMS_KMIP_TAG_PROTOCOL_VERSION_MINOR)->num;
    cr_assert_null(kms_ttlv_first(hdr, KMS_KMIP_TAG_TIME_STAMP), "the client sends no TimeStamp");
    const struct kms_ttlv *bi = kms_ttlv_first(root, KMS_KMIP_TAG_BATCH_ITEM);
    uint32_t op = (uint32_t)kms_ttlv_first(bi, KMS_KMIP_TAG_OPERATION)->num;
    const struct kms_ttlv *pl = kms_ttlv_first(bi, KMS_KMIP_TAG_REQUEST_PAYLOAD);
    int mode = atomic_load(&fk.mode);

    struct kms_ttlv_enc e;
    kms_ttlv_enc_init(&e, out);
    if (mode == FAKE_OLD && minor > 2) {
        /* as PyKMIP answers a version it does not know: 1.0, no Operation */
        put_header(&e, 0);
        cr_assert_eq(kms_ttlv_begin(&e, KMS_KMIP_TAG_BATCH_ITEM), KMS_OK);
        put_failure(&e, KMS_KMIP_REASON_INVALID_MESSAGE, "Error parsing request message.");
        cr_assert_eq(kms_ttlv_end(&e), KMS_OK);
        cr_assert_eq(kms_ttlv_end(&e), KMS_OK);
        kms_ttlv_doc_free(&d);
        return;
    }
    put_header(&e, minor);
    cr_assert_eq(kms_ttlv_begin(&e, KMS_KMIP_TAG_BATCH_ITEM), KMS_OK);
    cr_assert_eq(kms_ttlv_put_enum(&e, KMS_KMIP_TAG_OPERATION, op), KMS_OK);
    const struct kms_ttlv *uid = kms_ttlv_first(pl, KMS_KMIP_TAG_UNIQUE_IDENTIFIER);
    const struct kms_ttlv *data = kms_ttlv_first(pl, KMS_KMIP_TAG_DATA);
    if (op == KMS_KMIP_OP_DISCOVER_VERSIONS) {
        static const int old[][2] = {{1, 2}, {1, 1}, {1, 0}}, now[][2] = {{1, 4}, {1, 2}};
        cr_assert_eq(kms_ttlv_put_enum(&e, KMS_KMIP_TAG_RESULT_STATUS, 0), KMS_OK);
        cr_assert_eq(kms_ttlv_begin(&e, KMS_KMIP_TAG_RESPONSE_PAYLOAD), KMS_OK);
        if (mode == FAKE_OLD)
            put_versions(&e, old, 3);
        else if (kms_ttlv_first(pl, KMS_KMIP_TAG_PROTOCOL_VERSION) != NULL)
            put_versions(&e, now, 1); /* offered 1.4: 1.4 */
        else
            put_versions(&e, now, 2);
        cr_assert_eq(kms_ttlv_end(&e), KMS_OK);
    } else if (op == KMS_KMIP_OP_CREATE || op == KMS_KMIP_OP_ACTIVATE) {
        cr_assert_eq(kms_ttlv_put_enum(&e, KMS_KMIP_TAG_RESULT_STATUS, 0), KMS_OK);
        cr_assert_eq(kms_ttlv_begin(&e, KMS_KMIP_TAG_RESPONSE_PAYLOAD), KMS_OK);
        cr_assert_eq(kms_ttlv_put_text(&e, KMS_KMIP_TAG_UNIQUE_IDENTIFIER, "u-1", 3), KMS_OK);
        cr_assert_eq(kms_ttlv_end(&e), KMS_OK);
    } else if (op == KMS_KMIP_OP_ENCRYPT || op == KMS_KMIP_OP_DECRYPT) {
        const struct kms_ttlv *tag = kms_ttlv_first(pl, KMS_KMIP_TAG_AE_TAG);
        uint8_t x[256], t[16];
        cr_assert_leq(data->len, sizeof(x));
        for (size_t i = 0; i < data->len; i++)
            x[i] = data->value[i] ^ 0x5a; /* a toy cipher: enough to see bytes come back */
        memset(t, 0xAA, sizeof(t));
        if (op == KMS_KMIP_OP_DECRYPT && (tag == NULL || tag->len != 16 || memcmp(tag->value, t, 16) != 0)) {
            put_failure(&e, KMS_KMIP_REASON_CRYPTOGRAPHIC_FAILURE, "tag mismatch");
        } else {
            cr_assert_eq(kms_ttlv_put_enum(&e, KMS_KMIP_TAG_RESULT_STATUS, 0), KMS_OK);
            cr_assert_eq(kms_ttlv_begin(&e, KMS_KMIP_TAG_RESPONSE_PAYLOAD), KMS_OK);
            cr_assert_eq(kms_ttlv_put_text(&e, KMS_KMIP_TAG_UNIQUE_IDENTIFIER, (const char *)uid->value, uid->len),
                         KMS_OK);
            cr_assert_eq(kms_ttlv_put_bytes(&e, KMS_KMIP_TAG_DATA, x, data->len), KMS_OK);
            if (op == KMS_KMIP_OP_ENCRYPT && mode != FAKE_NO_TAG)
                cr_assert_eq(kms_ttlv_put_bytes(&e, KMS_KMIP_TAG_AE_TAG, t, 16), KMS_OK);
            cr_assert_eq(kms_ttlv_end(&e), KMS_OK);
        }
    } else {
        put_failure(&e, KMS_KMIP_REASON_OPERATION_NOT_SUPPORTED, "not in this fake");
    }
    cr_assert_eq(kms_ttlv_end(&e), KMS_OK);
    cr_assert_eq(kms_ttlv_end(&e), KMS_OK);
    kms_ttlv_doc_free(&d);
}

/* Serves one connection until EOF, stop, or a scripted close. */
static void serve(SSL *s, int fd)
{
    struct kms_buf req, resp;
    kms_buf_init(&req, KMS_TTLV_MAX_MESSAGE);
    kms_buf_init(&resp, KMS_TTLV_MAX_MESSAGE);
    for (;;) {
        uint8_t hdr[8], *rest;
        size_t total;
        kms_buf_reset(&req);
        kms_buf_reset(&resp);
        if (fake_read(s, fd, hdr, 8) != 0 || kms_ttlv_frame_len(hdr, KMS_TTLV_MAX_MESSAGE, &total) != KMS_OK ||
            kms_buf_append(&req, hdr, 8) != KMS_OK || kms_buf_extend(&req, total - 8, &rest) != KMS_OK ||
            fake_read(s, fd, rest, total - 8) != 0)
            break;
        int n = atomic_fetch_add(&fk.requests, 1) + 1;
        if (n == atomic_load(&fk.drop_request))
            break;
        int mode = atomic_load(&fk.mode);
        int delay = atomic_load(&fk.delay_ms);
        if (delay > 0)
            usleep((useconds_t)delay * 1000u);
        if (mode == FAKE_SILENT)
            continue;
        if (mode == FAKE_GARBAGE) {
            static const char junk[] = "HTTP/1.1 400 Bad Request\r\n\r\n";
            (void)SSL_write(s, junk, (int)sizeof(junk) - 1);
            continue;
        }
        if (mode == FAKE_HUGE) {
            static const uint8_t big[8] = {0x42, 0x00, 0x7B, 0x01, 0x00, 0x10, 0x00, 0x00};
            (void)SSL_write(s, big, 8);
            continue;
        }
        answer(req.data, req.len, &resp);
        if (SSL_write(s, resp.data, (int)resp.len) != (int)resp.len)
            break;
        if (n == atomic_load(&fk.close_after))
            break;
    }
    kms_buf_free(&req);
    kms_buf_free(&resp);
}

static void *fake_main(void *arg)
{
    (void)arg;
    while (!atomic_load(&fk.stop)) {
        struct pollfd pf = {.fd = fk.lfd, .events = POLLIN, .revents = 0};
        if (poll(&pf, 1, 100) <= 0)
            continue;
        int fd = accept(fk.lfd, NULL, NULL);
        if (fd < 0)
            continue;
        atomic_fetch_add(&fk.connections, 1);
        SSL *s = SSL_new(fk.ctx);
        SSL_set_fd(s, fd);
        if (SSL_accept(s) == 1) {
            X509 *peer = SSL_get1_peer_certificate(s);
            pthread_mutex_lock(&fk.cn_mu);
            if (fk.n_cn < (int)KMS_ARRAY_LEN(fk.cn)) {
                fk.cn[fk.n_cn][0] = '\0';
                if (peer != NULL)
                    X509_NAME_get_text_by_NID(X509_get_subject_name(peer), NID_commonName, fk.cn[fk.n_cn],
                                              (int)sizeof(fk.cn[0]));
                fk.n_cn++;
            }
            pthread_mutex_unlock(&fk.cn_mu);
            X509_free(peer);
            serve(s, fd);
        }
        SSL_free(s); /* why: no close_notify, the client must cope with a bare close */
        close(fd);
        ERR_clear_error();
    }
    return NULL;
}

static void setup(void)
{
    signal(SIGPIPE, SIG_IGN);
    kms_log_set_level(KMS_LOG_ERROR);
    snprintf(dir, sizeof(dir), "/tmp/kms-test-kmipc-XXXXXX");
    cr_assert_not_null(mkdtemp(dir));
    char cmd[2048];
    snprintf(cmd, sizeof(cmd), "cd %s && " MAKE_PKI, dir);
    cr_assert_eq(system(cmd), 0, "%s", cmd);
    X509 *ca = cert_at("ca.crt");
    trust = X509_STORE_new();
    cr_assert_eq(X509_STORE_add_cert(trust, ca), 1);
    client_cert = cert_at("c.crt");
    client_key = key_at("c.key");

    memset(&fk, 0, sizeof(fk));
    cr_assert_eq(pthread_mutex_init(&fk.cn_mu, NULL), 0);
    fk.ctx = SSL_CTX_new(TLS_server_method());
    X509 *sc = cert_at("s.crt");
    EVP_PKEY *sk = key_at("s.key");
    cr_assert_eq(SSL_CTX_use_certificate(fk.ctx, sc), 1);
    cr_assert_eq(SSL_CTX_use_PrivateKey(fk.ctx, sk), 1);
    X509_free(sc);
    EVP_PKEY_free(sk);
    SSL_CTX_set1_cert_store(fk.ctx, trust);
    SSL_CTX_set_verify(fk.ctx, SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT, NULL);
    X509_free(ca);

    fk.lfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_in a;
    memset(&a, 0, sizeof(a));
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t al = sizeof(a);
    cr_assert_eq(bind(fk.lfd, (struct sockaddr *)&a, sizeof(a)), 0);
    cr_assert_eq(listen(fk.lfd, 8), 0);
    cr_assert_eq(getsockname(fk.lfd, (struct sockaddr *)&a, &al), 0);
    fk.port = ntohs(a.sin_port);
    cr_assert_eq(pthread_create(&fk.thr, NULL, fake_main, NULL), 0);
}

static void teardown(void)
{
    atomic_store(&fk.stop, 1);
    pthread_join(fk.thr, NULL);
    close(fk.lfd);
    SSL_CTX_free(fk.ctx);
    pthread_mutex_destroy(&fk.cn_mu);
    X509_free(client_cert);
    EVP_PKEY_free(client_key);
    X509_STORE_free(trust);
    char cmd[128];
    snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
    (void)!system(cmd);
}

static struct kms_kmip_client_options opts(void)
{
    struct kms_kmip_client_options o;
    memset(&o, 0, sizeof(o));
    o.host = "127.0.0.1";
    o.port = fk.port;
    o.cert = client_cert;
    o.key = client_key;
    o.trust = trust;
    o.connect_timeout_ms = 2000;
    o.io_timeout_ms = 2000;
    return o;
}

static uint64_t ms_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

static struct kms_kmip_client *open_ok(struct kms_kmip_client_options o)
{
    struct kms_kmip_client *c = NULL;
    cr_assert_eq(kms_kmip_client_open(&o, &c), KMS_OK, "%s", kms_error_detail());
    return c;
}

/* ---- tests ------------------------------------------------------------- */

TestSuite(kmip_client, .init = setup, .fini = teardown, .timeout = T);

Test(kmip_client, negotiates_1_4_then_round_trips)
{
    struct kms_kmip_client *c = open_ok(opts());
    struct kms_kmip_version v;
    cr_assert_eq(kms_kmip_client_version(c, &v), KMS_OK);
    cr_assert(v.major == 1 && v.minor == 4);
    uint8_t nonce[12] = {0}, pt[32], ct[32], tag[16];
    memset(pt, 0x11, sizeof(pt));
    cr_assert_eq(kms_kmip_encrypt_gcm(c, "u-1", nonce, (const uint8_t *)"aad", 3, pt, 32, ct, tag), KMS_OK, "%s",
                 kms_error_detail());
    cr_assert_eq(ct[0], 0x11 ^ 0x5a);
    struct kms_secret *out = NULL;
    cr_assert_eq(kms_kmip_decrypt_gcm(c, "u-1", nonce, NULL, 0, ct, 32, tag, &out), KMS_OK);
    cr_assert_eq(memcmp(kms_secret_cdata(out), pt, 32), 0);
    kms_secret_free(&out);
    tag[0] ^= 1;
    cr_assert_eq(kms_kmip_decrypt_gcm(c, "u-1", nonce, NULL, 0, ct, 32, tag, &out), KMS_ERR_UNWRAP,
                 "Cryptographic Failure on Decrypt");
    cr_assert_null(out);
    struct kms_kmip_server_info info;
    cr_assert_eq(kms_kmip_query(c, &info), KMS_ERR_BACKEND, "the fake has no Query");
    cr_assert(strstr(kms_error_detail(), "Operation Not Supported: not in this fake") != NULL, "%s",
              kms_error_detail());
    kms_kmip_client_free(&c);
    kms_kmip_client_free(&c);
}

Test(kmip_client, a_server_without_1_4_is_refused_by_name)
{
    atomic_store(&fk.mode, FAKE_OLD);
    struct kms_kmip_client_options o = opts();
    struct kms_kmip_client *c = NULL;
    cr_assert_eq(kms_kmip_client_open(&o, &c), KMS_ERR_BACKEND);
    cr_assert_null(c);
    char want[128];
    snprintf(want, sizeof(want), "KMIP server at 127.0.0.1:%u supports only 1.2, 1.1, 1.0; AES-GCM needs KMIP 1.4",
             (unsigned)fk.port);
    cr_assert_str_eq(kms_error_detail(), want);
    cr_assert_eq(atomic_load(&fk.requests), 2, "asked as 1.4, then as 1.2");
}

Test(kmip_client, a_dead_pooled_connection_is_retried_once)
{
    struct kms_kmip_client *c = open_ok(opts());
    cr_assert_eq(kms_kmip_client_probe(c, 0), KMS_OK);
    atomic_store(&fk.drop_request, atomic_load(&fk.requests) + 1);
    cr_assert_eq(kms_kmip_client_probe(c, 0), KMS_OK, "%s", kms_error_detail());
    struct kms_kmip_client_stats st;
    kms_kmip_client_stats(c, &st);
    cr_assert_eq(st.retries, 1);
    cr_assert_eq(st.connects, 2);
    cr_assert_eq(st.open, 1);
    cr_assert_eq(atomic_load(&fk.connections), 2);
    kms_kmip_client_free(&c);
}

Test(kmip_client, create_is_not_sent_twice)
{
    struct kms_kmip_client *c = open_ok(opts());
    char uid[KMS_KMIP_UID_MAX + 1];
    atomic_store(&fk.drop_request, atomic_load(&fk.requests) + 1);
    cr_assert_eq(kms_kmip_create_key(c, "k", uid), KMS_ERR_BACKEND_UNAVAILABLE);
    cr_assert_str_eq(uid, "");
    struct kms_kmip_client_stats st;
    kms_kmip_client_stats(c, &st);
    cr_assert_eq(st.retries, 0);
    cr_assert_eq(kms_kmip_create_key(c, "k", uid), KMS_OK, "%s", kms_error_detail());
    cr_assert_str_eq(uid, "u-1");
    kms_kmip_client_free(&c);
}

Test(kmip_client, a_connection_the_server_closed_is_not_reused)
{
    struct kms_kmip_client *c = open_ok(opts());
    atomic_store(&fk.close_after, atomic_load(&fk.requests) + 1);
    cr_assert_eq(kms_kmip_client_probe(c, 0), KMS_OK);
    usleep(100 * 1000);
    cr_assert_eq(kms_kmip_client_probe(c, 0), KMS_OK, "%s", kms_error_detail());
    struct kms_kmip_client_stats st;
    kms_kmip_client_stats(c, &st);
    cr_assert_eq(st.dropped, 1, "found closed before use");
    cr_assert_eq(st.retries, 0);
    cr_assert_eq(st.connects, 2);
    kms_kmip_client_free(&c);
}

Test(kmip_client, a_silent_server_times_out)
{
    struct kms_kmip_client_options o = opts();
    o.io_timeout_ms = 400;
    struct kms_kmip_client *c = open_ok(o);
    atomic_store(&fk.mode, FAKE_SILENT);
    uint64_t t0 = ms_now();
    uint8_t nonce[12] = {0}, pt[16] = {0}, ct[16], tag[16];
    cr_assert_eq(kms_kmip_encrypt_gcm(c, "u-1", nonce, NULL, 0, pt, 16, ct, tag), KMS_ERR_BACKEND_TIMEOUT);
    uint64_t took = ms_now() - t0;
    cr_assert(took >= 390 && took < 1500, "took %llu ms", (unsigned long long)took);
    cr_assert(strstr(kms_error_detail(), "no answer within 400 ms") != NULL, "%s", kms_error_detail());
    struct kms_kmip_client_stats st;
    kms_kmip_client_stats(c, &st);
    cr_assert_eq(st.open, 0, "a connection that timed out is out of step: closed");
    kms_kmip_client_free(&c);
}

Test(kmip_client, garbage_and_oversized_answers_are_the_backends_error)
{
    struct kms_kmip_client *c = open_ok(opts());
    atomic_store(&fk.mode, FAKE_GARBAGE);
    cr_assert_eq(kms_kmip_client_probe(c, 0), KMS_ERR_BACKEND);
    cr_assert(strstr(kms_error_detail(), "unusable answer") != NULL, "%s", kms_error_detail());
    atomic_store(&fk.mode, FAKE_HUGE);
    uint64_t t0 = ms_now();
    cr_assert_eq(kms_kmip_client_probe(c, 0), KMS_ERR_BACKEND);
    cr_assert_lt(ms_now() - t0, 1000, "refused from the header, not read");
    cr_assert(strstr(kms_error_detail(), "at most") != NULL, "%s", kms_error_detail());
    atomic_store(&fk.mode, FAKE_OK);
    cr_assert_eq(kms_kmip_client_probe(c, 0), KMS_OK, "%s", kms_error_detail());
    kms_kmip_client_free(&c);
}

Test(kmip_client, gcm_without_a_tag_is_refused)
{
    struct kms_kmip_client *c = open_ok(opts());
    atomic_store(&fk.mode, FAKE_NO_TAG);
    uint8_t nonce[12] = {0}, pt[16] = {0}, ct[16], tag[16];
    cr_assert_eq(kms_kmip_encrypt_gcm(c, "u-1", nonce, NULL, 0, pt, 16, ct, tag), KMS_ERR_BACKEND);
    cr_assert(strstr(kms_error_detail(), "0-byte tag") != NULL, "%s", kms_error_detail());
    kms_kmip_client_free(&c);
}

struct hold {
    struct kms_kmip_client *c;
    kms_rc rc;
};

static void *hold_connection(void *arg)
{
    struct hold *h = arg;
    uint8_t nonce[12] = {0}, pt[16] = {0}, ct[16], tag[16];
    h->rc = kms_kmip_encrypt_gcm(h->c, "u-1", nonce, NULL, 0, pt, 16, ct, tag);
    return NULL;
}

Test(kmip_client, no_free_connection_within_the_pool_wait)
{
    struct kms_kmip_client_options o = opts();
    o.pool_size = 1;
    o.pool_wait_ms = 200;
    o.io_timeout_ms = 1500;
    struct kms_kmip_client *c = open_ok(o);
    atomic_store(&fk.mode, FAKE_SILENT);
    struct hold h = {.c = c, .rc = KMS_OK};
    pthread_t t;
    cr_assert_eq(pthread_create(&t, NULL, hold_connection, &h), 0);
    usleep(200 * 1000);
    uint64_t t0 = ms_now();
    cr_assert_eq(kms_kmip_client_probe(c, 0), KMS_ERR_BACKEND_TIMEOUT);
    uint64_t took = ms_now() - t0;
    cr_assert(took >= 190 && took < 800, "took %llu ms", (unsigned long long)took);
    cr_assert(strstr(kms_error_detail(), "no free connection within 200 ms") != NULL, "%s", kms_error_detail());
    pthread_join(t, NULL);
    cr_assert_eq(h.rc, KMS_ERR_BACKEND_TIMEOUT);
    atomic_store(&fk.mode, FAKE_OK);
    cr_assert_eq(kms_kmip_client_probe(c, 0), KMS_OK, "the slot came back: %s", kms_error_detail());
    kms_kmip_client_free(&c);
}

Test(kmip_client, options_are_checked)
{
    struct kms_kmip_client_options o = opts();
    struct kms_kmip_client *c = NULL;
    o.host = "";
    cr_assert_eq(kms_kmip_client_open(&o, &c), KMS_ERR_CONFIG);
    o = opts();
    o.cert = NULL;
    cr_assert_eq(kms_kmip_client_open(&o, &c), KMS_ERR_CONFIG);
    o = opts();
    o.trust = NULL;
    cr_assert_eq(kms_kmip_client_open(&o, &c), KMS_ERR_CONFIG);
    o = opts();
    o.pool_size = KMS_KMIP_MAX_POOL + 1;
    cr_assert_eq(kms_kmip_client_open(&o, &c), KMS_ERR_CONFIG);
    o = opts();
    EVP_PKEY *other = EVP_EC_gen("P-256");
    o.key = other;
    cr_assert_eq(kms_kmip_client_open(&o, &c), KMS_ERR_CONFIG);
    cr_assert(strstr(kms_error_detail(), "does not match") != NULL, "%s", kms_error_detail());
    EVP_PKEY_free(other);
    cr_assert_null(c);
    cr_assert_eq(atomic_load(&fk.connections), 0, "bad options never connect");
}

/* ---- identity renewal (kms_kmip_client_set_identity) -------------------- */

static X509 *client2_cert;
static EVP_PKEY *client2_key;

/* A second client certificate from the same CA: kmsClient renewed. */
static void setup_renewal(void)
{
    setup();
    char cmd[1024];
    snprintf(cmd, sizeof(cmd),
             "cd %s && openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout c2.key -out c2.csr "
             "-subj /CN=kmsClientRenewed 2>/dev/null && openssl x509 -req -in c2.csr -CA ca.crt -CAkey ca.key "
             "-CAcreateserial -days 2 -extfile c.ext -out c2.crt 2>/dev/null",
             dir);
    cr_assert_eq(system(cmd), 0, "%s", cmd);
    client2_cert = cert_at("c2.crt");
    client2_key = key_at("c2.key");
}

static void teardown_renewal(void)
{
    X509_free(client2_cert);
    EVP_PKEY_free(client2_key);
    client2_cert = NULL;
    client2_key = NULL;
    teardown();
}

/* The CN the fake saw on its last accepted connection, and how many. */
static int last_cn(char *out, size_t cap)
{
    pthread_mutex_lock(&fk.cn_mu);
    int n = fk.n_cn;
    snprintf(out, cap, "%s", n > 0 ? fk.cn[n - 1] : "");
    pthread_mutex_unlock(&fk.cn_mu);
    return n;
}

static kms_rc one_encrypt(struct kms_kmip_client *c)
{
    uint8_t nonce[12] = {0}, pt[16] = {0}, ct[16], tag[16];
    return kms_kmip_encrypt_gcm(c, "u-1", nonce, NULL, 0, pt, 16, ct, tag);
}

TestSuite(kmip_identity, .init = setup_renewal, .fini = teardown_renewal);

Test(kmip_identity, the_next_request_presents_the_new_certificate_on_a_new_connection)
{
    struct kms_kmip_client *c = open_ok(opts());
    char cn[64];
    cr_assert_eq(one_encrypt(c), KMS_OK, "%s", kms_error_detail());
    cr_assert_eq(last_cn(cn, sizeof(cn)), 1);
    cr_assert_str_eq(cn, "kmsClient");
    struct kms_kmip_client_stats st;
    kms_kmip_client_stats(c, &st);
    cr_assert_eq(st.open, 1, "one pooled connection of the old identity");

    cr_assert_eq(kms_kmip_client_set_identity(c, client2_cert, client2_key, NULL, trust), KMS_OK, "%s",
                 kms_error_detail());
    kms_kmip_client_stats(c, &st);
    cr_assert_eq(st.open, 0, "the idle connection of the old identity is closed");
    cr_assert_eq(st.retired, 1);
    X509 *now = kms_kmip_client_get1_cert(c);
    cr_assert_eq(X509_cmp(now, client2_cert), 0);
    X509_free(now);

    cr_assert_eq(one_encrypt(c), KMS_OK, "%s", kms_error_detail());
    cr_assert_eq(last_cn(cn, sizeof(cn)), 2, "not reused: a new connection");
    cr_assert_str_eq(cn, "kmsClientRenewed");
    cr_assert_eq(one_encrypt(c), KMS_OK, "%s", kms_error_detail());
    cr_assert_eq(last_cn(cn, sizeof(cn)), 2, "the new connection is pooled");
    kms_kmip_client_stats(c, &st);
    cr_assert_eq(st.dropped, 0);
    cr_assert_eq(st.retries, 0);
    cr_assert_eq(st.connects, 2);
    kms_kmip_client_free(&c);
}

static void *encrypt_once(void *arg)
{
    struct hold *h = arg;
    h->rc = one_encrypt(h->c);
    return NULL;
}

Test(kmip_identity, a_request_in_flight_finishes_and_its_connection_is_not_pooled)
{
    struct kms_kmip_client_options o = opts();
    o.pool_size = 1;
    struct kms_kmip_client *c = open_ok(o);
    int before = atomic_load(&fk.requests);
    atomic_store(&fk.delay_ms, 500);
    struct hold h = {.c = c, .rc = KMS_ERR_INTERNAL};
    pthread_t t;
    cr_assert_eq(pthread_create(&t, NULL, encrypt_once, &h), 0);
    uint64_t until = ms_now() + 3000;
    while (atomic_load(&fk.requests) == before && ms_now() < until)
        usleep(5 * 1000);
    cr_assert_eq(atomic_load(&fk.requests), before + 1, "the request reached the server");
    /* the server holds the answer for 500 ms: the swap happens while in flight */
    cr_assert_eq(kms_kmip_client_set_identity(c, client2_cert, client2_key, NULL, trust), KMS_OK, "%s",
                 kms_error_detail());
    struct kms_kmip_client_stats st;
    kms_kmip_client_stats(c, &st);
    cr_assert_eq(st.open, 1, "still in flight");
    cr_assert_eq(st.retired, 0);
    pthread_join(t, NULL);
    cr_assert_eq(h.rc, KMS_OK, "the request in flight succeeds: %s", kms_error_detail());
    kms_kmip_client_stats(c, &st);
    cr_assert_eq(st.open, 0, "closed after its request, not pooled");
    cr_assert_eq(st.retired, 1);
    atomic_store(&fk.delay_ms, 0);
    char cn[64];
    cr_assert_eq(one_encrypt(c), KMS_OK, "%s", kms_error_detail());
    cr_assert_eq(last_cn(cn, sizeof(cn)), 2);
    cr_assert_str_eq(cn, "kmsClientRenewed");
    kms_kmip_client_free(&c);
}

struct loop {
    struct kms_kmip_client *c;
    int ok, failed;
    char detail[256];
};

static void *encrypt_loop(void *arg)
{
    struct loop *l = arg;
    for (int i = 0; i < 40; i++) {
        if (one_encrypt(l->c) == KMS_OK) {
            l->ok++;
        } else {
            l->failed++;
            snprintf(l->detail, sizeof(l->detail), "%s", kms_error_detail());
        }
    }
    return NULL;
}

Test(kmip_identity, requests_keep_succeeding_across_repeated_swaps)
{
    struct kms_kmip_client_options o = opts();
    o.pool_size = 1; /* why: the fake serves one connection at a time */
    struct kms_kmip_client *c = open_ok(o);
    struct loop l[3];
    pthread_t t[3];
    memset(l, 0, sizeof(l));
    for (int i = 0; i < 3; i++) {
        l[i].c = c;
        cr_assert_eq(pthread_create(&t[i], NULL, encrypt_loop, &l[i]), 0);
    }
    for (int i = 0; i < 8; i++) {
        usleep(15 * 1000);
        X509 *x = i % 2 == 0 ? client2_cert : client_cert;
        EVP_PKEY *k = i % 2 == 0 ? client2_key : client_key;
        cr_assert_eq(kms_kmip_client_set_identity(c, x, k, NULL, trust), KMS_OK, "%s", kms_error_detail());
    }
    for (int i = 0; i < 3; i++) {
        pthread_join(t[i], NULL);
        cr_assert_eq(l[i].failed, 0, "thread %d: %d failed: %s", i, l[i].failed, l[i].detail);
        cr_assert_eq(l[i].ok, 40);
    }
    struct kms_kmip_client_stats st;
    kms_kmip_client_stats(c, &st);
    cr_assert_geq(st.retired, 1, "swaps closed connections of the old identity");
    cr_assert_eq(st.dropped, 0);
    char cn[64];
    cr_assert_eq(one_encrypt(c), KMS_OK, "%s", kms_error_detail());
    (void)last_cn(cn, sizeof(cn));
    cr_assert_str_eq(cn, "kmsClient", "the last identity set (the original) is in force");
    kms_kmip_client_free(&c);
}

Test(kmip_identity, a_mismatched_key_is_refused_and_the_old_identity_stays)
{
    struct kms_kmip_client *c = open_ok(opts());
    cr_assert_eq(one_encrypt(c), KMS_OK, "%s", kms_error_detail());
    cr_assert_eq(kms_kmip_client_set_identity(c, client2_cert, client_key, NULL, trust), KMS_ERR_CONFIG);
    cr_assert(strstr(kms_error_detail(), "does not match") != NULL, "%s", kms_error_detail());
    cr_assert_eq(kms_kmip_client_set_identity(c, client2_cert, client2_key, NULL, NULL), KMS_ERR_CONFIG);
    cr_assert_eq(kms_kmip_client_set_identity(c, NULL, client2_key, NULL, trust), KMS_ERR_CONFIG);
    struct kms_kmip_client_stats st;
    kms_kmip_client_stats(c, &st);
    cr_assert_eq(st.retired, 0);
    cr_assert_eq(st.open, 1, "the pooled connection stays");
    X509 *now = kms_kmip_client_get1_cert(c);
    cr_assert_eq(X509_cmp(now, client_cert), 0);
    X509_free(now);
    cr_assert_eq(one_encrypt(c), KMS_OK, "%s", kms_error_detail());
    char cn[64];
    cr_assert_eq(last_cn(cn, sizeof(cn)), 1, "the same connection, reused");
    cr_assert_str_eq(cn, "kmsClient");
    kms_kmip_client_free(&c);
}
