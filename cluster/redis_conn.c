#include "cluster/redis_conn.h"
#include "common/clock.h"
#include "common/netconn.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/crypto.h>
#include <openssl/err.h>

#define READ_CHUNK 16384

struct kms_redis_conn {
    struct kms_netconn *net;
    redisReader *reader;
    unsigned command_ms;
    char err[200];
};

kms_rc kms_redis_conn_tls_new(const char *ca_file, const char *cert_file, const char *key_file, SSL_CTX **out)
{
    *out = NULL;
    if ((cert_file == NULL) != (key_file == NULL))
        return kms_fail(KMS_ERR_CONFIG,
                        "redis tls: a client certificate needs its key file, and a key its certificate");
    SSL_CTX *ctx = NULL;
    KMS_GUARD(kms_netconn_tls_ctx(&ctx));
    kms_rc rc = KMS_OK;
    if (ca_file != NULL ? SSL_CTX_load_verify_locations(ctx, ca_file, NULL) != 1
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

kms_rc kms_redis_conn_open(const char *host, int port, SSL_CTX *tls, unsigned connect_ms, unsigned command_ms,
                           redisReplyObjectFunctions *fns, struct kms_redis_conn **out)
{
    *out = NULL;
    if (port <= 0 || port > 65535)
        return kms_fail(KMS_ERR_CONFIG, "redis %s: port %d out of range", host, port);
    struct kms_redis_conn *c = calloc(1, sizeof(*c));
    if (c == NULL)
        return kms_fail(KMS_ERR_NO_MEMORY, "redis connection");
    c->command_ms = command_ms;
    c->reader = redisReaderCreateWithFunctions(fns);
    if (c->reader == NULL) {
        kms_redis_conn_free(&c);
        return kms_fail(KMS_ERR_NO_MEMORY, "redis reader");
    }
    kms_rc rc = kms_netconn_open(host, (uint16_t)port, tls, kms_now_ms() + connect_ms, &c->net);
    if (rc != KMS_OK) {
        snprintf(c->err, sizeof(c->err), "%s", kms_error_detail());
        rc = kms_fail(rc == KMS_ERR_NO_MEMORY ? rc : KMS_ERR_BACKEND_UNAVAILABLE, "redis %s:%d: %s", host, port,
                      c->err);
        kms_redis_conn_free(&c);
        return rc;
    }
    *out = c;
    return KMS_OK;
}

/* ---- I/O ----------------------------------------------------------------------- */

/* Drops a connection whose stream can no longer be trusted; why in c->err. */
static void broken(struct kms_redis_conn *c, const char *why)
{
    if (why != NULL)
        snprintf(c->err, sizeof(c->err), "%s", why);
    kms_netconn_free(&c->net);
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
            broken(c, "protocol error or reply over the limits");
            return NULL;
        }
        if (reply != NULL)
            return reply;
        if (c->reader->len - c->reader->pos > max_buffered) {
            snprintf(c->err, sizeof(c->err), "reply larger than %zu bytes", max_buffered);
            broken(c, NULL);
            return NULL;
        }
        if (idle_ok && c->reader->len == c->reader->pos) {
            int w = kms_netconn_wait_readable(c->net, deadline);
            if (w == 0) {
                *idle = 1;
                return NULL;
            }
            if (w < 0) {
                broken(c, "poll failed");
                return NULL;
            }
        }
        size_t n = 0;
        if (kms_netconn_read(c->net, buf, sizeof(buf), deadline, &n) != KMS_OK) {
            broken(c, kms_error_detail());
            return NULL;
        }
        if (redisReaderFeed(c->reader, buf, n) != REDIS_OK) {
            broken(c, "out of memory");
            return NULL;
        }
    }
}

redisReply *kms_redis_conn_command(struct kms_redis_conn *c, int argc, const char **argv, const size_t *lens,
                                   size_t max_buffered)
{
    if (c == NULL || c->net == NULL)
        return NULL;
    char *cmd = NULL;
    int len = redisFormatCommandArgv(&cmd, argc, argv, lens);
    if (len < 0 || cmd == NULL) {
        snprintf(c->err, sizeof(c->err), "out of memory");
        kms_error_set_detail("redis: %s", c->err);
        return NULL;
    }
    uint64_t deadline = kms_now_ms() + c->command_ms;
    kms_rc sent = kms_netconn_write(c->net, cmd, (size_t)len, deadline);
    OPENSSL_cleanse(cmd, (size_t)len); /* why: AUTH puts the password in here */
    redisFreeCommand(cmd);
    if (sent != KMS_OK) {
        broken(c, kms_error_detail());
        return NULL;
    }
    int idle;
    return read_reply(c, deadline, max_buffered, 0, &idle);
}

int kms_redis_conn_wait(struct kms_redis_conn *c, unsigned timeout_ms, size_t max_buffered, redisReply **out)
{
    *out = NULL;
    if (c == NULL || c->net == NULL)
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
    kms_netconn_free(&c->net);
    if (c->reader != NULL)
        redisReaderFree(c->reader);
    free(c);
    *p = NULL;
}
