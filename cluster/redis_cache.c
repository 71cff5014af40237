#include "cluster/redis_cache.h"

#include <errno.h>
#include <hiredis/hiredis.h>
#include <openssl/ssl.h>
#include <jansson.h>
#include <openssl/evp.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cluster/redis_conn.h"
#include "common/aead.h"
#include "common/clock.h"
#include "common/hex.h"
#include "common/log.h"
#include "common/token.h"

#define NS_PER_MS 1000000ull
#define VALUE_VERSION 0x01
#define NONCE_LEN KMS_AEAD_NONCE_LEN
#define TAG_LEN KMS_AEAD_TAG_LEN
#define VALUE_MAX 1024 /* the largest secret the hierarchy caches (SPEC §2: 1..1024) */
/* why: values are at most 1+12+1024+16 bytes and heartbeats well under 1 KiB,
 * so anything bigger is not ours; SCAN pages stay far below 64 names. */
#define REPLY_MAX_BULK 4096
#define REPLY_MAX_ELEMENTS 64
#define SCAN_COUNT "16"
#define SCAN_MAX_CALLS 256
#define NAME_MAX_LEN 160 /* prefix (64) + "g" + 20 digits + ":" + 64 hex */
#define BAD_VALUE_LOG_EVERY 100
#define SENTINELS_MAX 8
#define HOST_MAX 255

struct rcache {
    struct kms_cache base;
    struct kms_cache *local;
    pthread_mutex_t mu; /* guards ctx, gen, backoff and link fields below */
    struct kms_redis_conn *ctx;
    char host[HOST_MAX + 1]; /* with sentinels: the master last found */
    int port;
    SSL_CTX *tls; /* NULL: plain TCP */
    unsigned connect_ms, command_ms;
    struct {
        char host[HOST_MAX + 1];
        int port;
    } sentinels[SENTINELS_MAX];
    size_t n_sentinels, sentinel_next; /* sentinel_next: the one that answered last */
    char master_name[65];
    struct kms_secret *sentinel_password;
    unsigned db;
    char user[129];
    struct kms_secret *password;
    char prefix[65];
    char node[KMS_CLUSTER_NAME_MAX + 1];
    unsigned ttl_s;
    uint64_t backoff_min_ns, backoff_max_ns, backoff_ns, retry_at_ns;
    uint64_t gen_check_ns, next_gen_check_ns; /* next_gen_check_ns: atomic */
    uint64_t gen;
    int ever_connected, link_logged_down;
    struct kms_secret *k_name, *k_value; /* derived from the cluster key */
    int64_t started;
    /* counters: __atomic, relaxed */
    uint64_t hits_local, hits_redis, misses, errors, bad_values, reconnects;
    int link; /* enum kms_redis_link, __atomic */
};

static const struct kms_cache_ops redis_ops;

static void count(uint64_t *ctr)
{
    __atomic_fetch_add(ctr, 1, __ATOMIC_RELAXED);
}

static uint64_t load(const uint64_t *ctr)
{
    return __atomic_load_n(ctr, __ATOMIC_RELAXED);
}

/* ---- bounded replies ------------------------------------------------------
 * why: hiredis 0.14 has no maxbulklen/maxelements, so the reader's object
 * functions refuse big strings and arrays (the reader then fails, and the
 * connection is dropped), and bounded_reply() caps the bytes it buffers
 * while waiting for one reply. */

static redisReplyObjectFunctions default_fns;
static redisReplyObjectFunctions bounded_fns;
static redisReplyObjectFunctions blob_fns; /* kms_cluster_connect: keystore generations */
static pthread_once_t fns_once = PTHREAD_ONCE_INIT;

static void *bounded_string(const redisReadTask *t, char *s, size_t len)
{
    if (len > REPLY_MAX_BULK)
        return NULL;
    return default_fns.createString(t, s, len);
}

static void *bounded_array(const redisReadTask *t, int elements)
{
    if (elements < 0 || elements > REPLY_MAX_ELEMENTS)
        return NULL;
    return default_fns.createArray(t, elements);
}

/* why: a keystore generation is at most KMS_CLUSTER_BLOB_MAX bytes; a reply
 * of generation numbers at most KMS_CLUSTER_ARRAY_MAX long */
static void *blob_string(const redisReadTask *t, char *s, size_t len)
{
    if (len > KMS_CLUSTER_BLOB_MAX)
        return NULL;
    return default_fns.createString(t, s, len);
}

static void *blob_array(const redisReadTask *t, int elements)
{
    if (elements < 0 || elements > KMS_CLUSTER_ARRAY_MAX)
        return NULL;
    return default_fns.createArray(t, elements);
}

static void init_fns(void)
{
    redisReader *r = redisReaderCreate();
    if (r == NULL)
        return;
    default_fns = *r->fn;
    redisReaderFree(r);
    bounded_fns = default_fns;
    bounded_fns.createString = bounded_string;
    bounded_fns.createArray = bounded_array;
    blob_fns = default_fns;
    blob_fns.createString = blob_string;
    blob_fns.createArray = blob_array;
}

/* ---- the link -------------------------------------------------------------- */

static void set_link(struct rcache *c, int up)
{
    __atomic_store_n(&c->link, up ? KMS_REDIS_CONNECTED : KMS_REDIS_DEGRADED, __ATOMIC_RELAXED);
}

static void drop_link(struct rcache *c, const char *why)
{
    if (c->ctx != NULL) {
        if (!c->link_logged_down)
            kms_log(KMS_LOG_WARN, "cache_redis_down", NULL, "node", c->node, "reason", why, "detail",
                    kms_redis_conn_error(c->ctx), NULL);
        c->link_logged_down = 1;
        kms_redis_conn_free(&c->ctx);
    }
    count(&c->errors);
    set_link(c, 0);
}

/* One command on conn (argv form, so no byte is ever interpreted), the
 * reply bounded. NULL when the link failed; the caller frees a reply. */
static redisReply *conn_command(struct kms_redis_conn *conn, int argc, const char **argv, const size_t *lens)
{
    return kms_redis_conn_command(conn, argc, argv, lens, REPLY_MAX_BULK + 64);
}

static int is_error(const redisReply *r, const char *code)
{
    size_t n = strlen(code);
    return r != NULL && r->type == REDIS_REPLY_ERROR && r->len >= n && memcmp(r->str, code, n) == 0;
}

/* One command on the locked link. NULL when the link failed (then
 * dropped); the caller frees a reply. */
static redisReply *command(struct rcache *c, int argc, const char **argv, const size_t *lens)
{
    if (c->ctx == NULL)
        return NULL;
    redisReply *r = conn_command(c->ctx, argc, argv, lens);
    if (r == NULL)
        drop_link(c, "reply");
    else if (c->n_sentinels > 0 && is_error(r, "READONLY"))
        drop_link(c, "master demoted"); /* why: after a failover; the next operation asks the sentinels */
    return r;
}

static int reply_ok(const redisReply *r)
{
    return r != NULL && r->type == REDIS_REPLY_STATUS && r->len == 2 && memcmp(r->str, "OK", 2) == 0;
}

/* Reads prefix "gen" on the locked, connected link; clears the local tier
 * when it changed. -1 when the link failed or Redis refused the command. */
static int refresh_gen(struct rcache *c)
{
    char name[NAME_MAX_LEN];
    snprintf(name, sizeof(name), "%sgen", c->prefix);
    const char *argv[] = {"GET", name};
    size_t lens[] = {3, strlen(name)};
    redisReply *r = command(c, 2, argv, lens);
    if (r == NULL)
        return -1;
    uint64_t g;
    int refused = r->type == REDIS_REPLY_ERROR; /* e.g. NOAUTH: the link is of no use */
    int bad = kms_redis_reply_u64(r, &g);
    freeReplyObject(r);
    if (refused) {
        count(&c->errors);
        return -1;
    }
    if (bad) {
        count(&c->errors);
        return 0; /* why: a garbage generation keeps the one we have */
    }
    if (g != c->gen) {
        if (c->ever_connected)
            kms_cache_local_clear(c->local);
        c->gen = g;
    }
    __atomic_store_n(&c->next_gen_check_ns, kms_now_ns() + c->gen_check_ns, __ATOMIC_RELAXED);
    return 0;
}

static void connect_failed(struct rcache *c, const char *why, const char *detail)
{
    char copy[256];
    snprintf(copy, sizeof(copy), "%s", detail); /* why: detail may be the thread's error record */
    kms_redis_conn_free(&c->ctx);
    count(&c->errors);
    set_link(c, 0);
    c->backoff_ns = c->backoff_ns == 0 ? c->backoff_min_ns : c->backoff_ns * 2;
    if (c->backoff_ns > c->backoff_max_ns)
        c->backoff_ns = c->backoff_max_ns;
    c->retry_at_ns = kms_now_ns() + c->backoff_ns;
    if (!c->link_logged_down) {
        char port[16];
        snprintf(port, sizeof(port), "%d", c->port);
        kms_log(KMS_LOG_WARN, "cache_redis_unreachable", NULL, "node", c->node, "host", c->host, "port", port,
                "reason", why, "detail", copy, NULL);
        c->link_logged_down = 1;
    }
}

/* AUTH [user] password on conn; 0 when accepted. The password travels in
 * argv form and is wiped from the formatted command; Redis's error text
 * never echoes it. */
static int auth(struct kms_redis_conn *conn, const char *user, const struct kms_secret *password)
{
    const char *argv[3];
    size_t lens[3];
    int argc = 0;
    argv[argc] = "AUTH";
    lens[argc++] = 4;
    if (user != NULL && user[0]) {
        argv[argc] = user;
        lens[argc++] = strlen(user);
    }
    argv[argc] = (const char *)kms_secret_cdata(password);
    lens[argc++] = kms_secret_len(password);
    redisReply *r = conn_command(conn, argc, argv, lens);
    int ok = reply_ok(r);
    freeReplyObject(r);
    return ok ? 0 : -1;
}

static int valid_host(const char *s, size_t len);

/* Asks one sentinel for the master's address (SENTINEL
 * get-master-addr-by-name); 0 with host/port filled in. */
static int ask_sentinel(struct rcache *c, size_t i, char host[HOST_MAX + 1], int *port)
{
    struct kms_redis_conn *s = NULL;
    if (kms_redis_conn_open(c->sentinels[i].host, c->sentinels[i].port, c->tls, c->connect_ms, c->command_ms,
                            &bounded_fns, &s) != KMS_OK)
        return -1;
    int rc = -1;
    if (c->sentinel_password == NULL || auth(s, NULL, c->sentinel_password) == 0) {
        const char *argv[] = {"SENTINEL", "get-master-addr-by-name", c->master_name};
        size_t lens[] = {8, 23, strlen(c->master_name)};
        redisReply *r = conn_command(s, 3, argv, lens);
        unsigned long p = 0;
        char *end = NULL;
        if (r != NULL && r->type == REDIS_REPLY_ARRAY && r->elements == 2 &&
            r->element[0]->type == REDIS_REPLY_STRING && r->element[1]->type == REDIS_REPLY_STRING &&
            valid_host(r->element[0]->str, r->element[0]->len) && r->element[1]->len > 0 &&
            r->element[1]->len <= 5 && r->element[1]->str[0] != '-' && r->element[1]->str[0] != '+') {
            p = strtoul(r->element[1]->str, &end, 10);
            if (end == r->element[1]->str + r->element[1]->len && p > 0 && p <= 65535) {
                memcpy(host, r->element[0]->str, r->element[0]->len);
                host[r->element[0]->len] = '\0';
                *port = (int)p;
                rc = 0;
            }
        }
        if (rc != 0)
            kms_error_set_detail("sentinel %s:%d does not know master '%s' or answered garbage",
                                 c->sentinels[i].host, c->sentinels[i].port, c->master_name);
        freeReplyObject(r);
    } else {
        kms_error_set_detail("sentinel %s:%d refused AUTH", c->sentinels[i].host, c->sentinels[i].port);
    }
    kms_redis_conn_free(&s);
    return rc;
}

/* The master's address from the first sentinel that knows it, starting
 * with the one that answered last; c->host/port are set. 0 or -1. */
static int find_master(struct rcache *c)
{
    for (size_t k = 0; k < c->n_sentinels; k++) {
        size_t i = (c->sentinel_next + k) % c->n_sentinels;
        char host[HOST_MAX + 1];
        int port = 0;
        if (ask_sentinel(c, i, host, &port) != 0)
            continue;
        c->sentinel_next = i;
        if (strcmp(host, c->host) != 0 || port != c->port) {
            char ps[16];
            snprintf(ps, sizeof(ps), "%d", port);
            kms_log(KMS_LOG_INFO, "cache_redis_master", NULL, "node", c->node, "master", c->master_name, "host",
                    host, "port", ps, NULL);
            snprintf(c->host, sizeof(c->host), "%s", host);
            c->port = port;
        }
        return 0;
    }
    return -1;
}

/* ROLE on a fresh connection: 0 when the server is a master. */
static int is_master(struct kms_redis_conn *conn)
{
    const char *argv[] = {"ROLE"};
    size_t lens[] = {4};
    redisReply *r = conn_command(conn, 1, argv, lens);
    int ok = r != NULL && r->type == REDIS_REPLY_ARRAY && r->elements >= 1 &&
             r->element[0]->type == REDIS_REPLY_STRING && r->element[0]->len == 6 &&
             memcmp(r->element[0]->str, "master", 6) == 0;
    freeReplyObject(r);
    return ok ? 0 : -1;
}

/* A new connection to the master (asking the sentinels when there are),
 * authenticated and on the configured database, with reader limits fns.
 * Locked (may update c->host/port). NULL with *why and the thread's detail
 * set when it fails. */
static struct kms_redis_conn *open_link(struct rcache *c, redisReplyObjectFunctions *fns, const char **why)
{
    struct kms_redis_conn *conn = NULL;
    if (c->n_sentinels > 0 && find_master(c) != 0) {
        *why = "sentinel";
        return NULL;
    }
    if (kms_redis_conn_open(c->host, c->port, c->tls, c->connect_ms, c->command_ms, fns, &conn) != KMS_OK) {
        *why = "connect";
        return NULL;
    }
    const char *fail = NULL;
    if (c->password != NULL && auth(conn, c->user, c->password) != 0)
        fail = "auth";
    else if (c->n_sentinels > 0 && is_master(conn) != 0)
        fail = "role";
    else if (c->db > 0) {
        char db[16];
        snprintf(db, sizeof(db), "%u", c->db);
        const char *argv[] = {"SELECT", db};
        size_t lens[] = {6, strlen(db)};
        redisReply *r = conn_command(conn, 2, argv, lens);
        if (!reply_ok(r))
            fail = "select";
        freeReplyObject(r);
    }
    if (fail != NULL) {
        kms_error_set_detail("redis: %s refused (%s)", fail,
                             strcmp(fail, "role") == 0 ? "the address the sentinels gave is not a master (yet)"
                                                        : kms_redis_conn_error(conn));
        kms_redis_conn_free(&conn);
        *why = fail;
        return NULL;
    }
    return conn;
}

/* The connected link, connecting when none and not in backoff. Locked. */
static struct kms_redis_conn *link_get(struct rcache *c)
{
    if (c->ctx != NULL)
        return c->ctx;
    if (c->backoff_ns != 0 && kms_now_ns() < c->retry_at_ns)
        return NULL;
    const char *why = NULL;
    c->ctx = open_link(c, &bounded_fns, &why);
    if (c->ctx == NULL) {
        connect_failed(c, why, kms_error_detail());
        return NULL;
    }
    if (c->ctx == NULL || refresh_gen(c) != 0) {
        connect_failed(c, "generation", "GET generation failed");
        return NULL;
    }
    if (c->ever_connected)
        count(&c->reconnects);
    c->ever_connected = 1;
    c->backoff_ns = 0;
    if (c->link_logged_down) {
        kms_log(KMS_LOG_INFO, "cache_redis_connected", NULL, "node", c->node, NULL);
        c->link_logged_down = 0;
    }
    set_link(c, 1);
    return c->ctx;
}

/* ---- names and values --------------------------------------------------- */

static int hmac(const struct kms_secret *k, const uint8_t *data, size_t len, uint8_t out[32])
{
    size_t n = 0;
    if (EVP_Q_mac(NULL, "HMAC", NULL, "SHA256", NULL, kms_secret_cdata(k), kms_secret_len(k), data, len, out, 32,
                  &n) == NULL ||
        n != 32)
        return -1;
    return 0;
}

/* prefix "g<gen>:" hex(HMAC-SHA256(K_name, key)). Locked (reads gen). */
static int entry_name(struct rcache *c, const uint8_t key[KMS_CACHE_KEY_LEN], char out[NAME_MAX_LEN])
{
    uint8_t mac[32];
    if (hmac(c->k_name, key, KMS_CACHE_KEY_LEN, mac) != 0)
        return -1;
    int n = snprintf(out, NAME_MAX_LEN, "%sg%llu:", c->prefix, (unsigned long long)c->gen);
    if (n < 0 || (size_t)n + 65 > NAME_MAX_LEN)
        return -1;
    kms_hex_encode(mac, sizeof(mac), out + n, NAME_MAX_LEN - (size_t)n);
    return 0;
}

/* version ‖ nonce ‖ AES-256-GCM(K_value, value, AAD = name) ‖ tag into out
 * (common/aead's layout after the version byte). */
int kms_redis_value_seal(const struct kms_secret *k_value, const char *name, const struct kms_secret *v,
                         uint8_t *out, size_t *out_len)
{
    size_t len = kms_secret_len(v);
    if (len == 0 || len > VALUE_MAX)
        return -1;
    out[0] = VALUE_VERSION;
    uint8_t *nonce = out + 1, *ct = nonce + NONCE_LEN, *tag = ct + len;
    if (kms_random(nonce, NONCE_LEN) != KMS_OK ||
        kms_aead_encrypt(kms_secret_cdata(k_value), nonce, (const uint8_t *)name, strlen(name),
                         kms_secret_cdata(v), len, ct, tag) != KMS_OK)
        return -1;
    *out_len = 1 + NONCE_LEN + len + TAG_LEN;
    return 0;
}

/* Inverse of kms_redis_value_seal; any mismatch (length, version, tag) is -1. */
int kms_redis_value_open(const struct kms_secret *k_value, const char *name, const uint8_t *in, size_t in_len,
                         struct kms_secret **out)
{
    *out = NULL;
    if (in_len < 1 + NONCE_LEN + 1 + TAG_LEN || in_len > 1 + NONCE_LEN + VALUE_MAX + TAG_LEN ||
        in[0] != VALUE_VERSION)
        return -1;
    size_t len = in_len - 1 - NONCE_LEN - TAG_LEN;
    struct kms_secret *s = NULL;
    if (kms_secret_new(len, &s) != KMS_OK)
        return -1;
    const uint8_t *nonce = in + 1, *ct = nonce + NONCE_LEN, *tag = ct + len;
    if (kms_aead_decrypt(kms_secret_cdata(k_value), nonce, (const uint8_t *)name, strlen(name), ct, len, tag,
                         kms_secret_data(s)) != KMS_OK) {
        kms_secret_free(&s);
        return -1;
    }
    *out = s;
    return 0;
}

static void bad_value(struct rcache *c, const char *why)
{
    uint64_t n = __atomic_add_fetch(&c->bad_values, 1, __ATOMIC_RELAXED);
    if (n == 1 || n % BAD_VALUE_LOG_EVERY == 0) {
        char cnt[24];
        snprintf(cnt, sizeof(cnt), "%llu", (unsigned long long)n);
        kms_log(KMS_LOG_WARN, "cache_redis_bad_value", NULL, "node", c->node, "reason", why, "count", cnt, NULL);
    }
}

/* ---- the cache ops ---------------------------------------------------- */

static void maybe_refresh_gen(struct rcache *c)
{
    if (kms_now_ns() < __atomic_load_n(&c->next_gen_check_ns, __ATOMIC_RELAXED))
        return;
    pthread_mutex_lock(&c->mu);
    if (kms_now_ns() >= __atomic_load_n(&c->next_gen_check_ns, __ATOMIC_RELAXED)) {
        int fresh = c->ctx == NULL; /* why: a new link has just read it */
        if (link_get(c) != NULL && !fresh)
            (void)refresh_gen(c);
    }
    pthread_mutex_unlock(&c->mu);
}

static kms_rc redis_get(struct kms_cache *base, const uint8_t key[KMS_CACHE_KEY_LEN], struct kms_secret **out)
{
    struct rcache *c = (struct rcache *)base;
    *out = NULL;
    maybe_refresh_gen(c);
    if (kms_cache_get(c->local, key, out) == KMS_OK) {
        count(&c->hits_local);
        return KMS_OK;
    }
    char name[NAME_MAX_LEN] = "";
    redisReply *r = NULL;
    pthread_mutex_lock(&c->mu);
    if (link_get(c) != NULL && entry_name(c, key, name) == 0) {
        const char *argv[] = {"GET", name};
        size_t lens[] = {3, strlen(name)};
        r = command(c, 2, argv, lens);
    }
    pthread_mutex_unlock(&c->mu);
    struct kms_secret *v = NULL;
    if (r != NULL && r->type == REDIS_REPLY_STRING) {
        if (kms_redis_value_open(c->k_value, name, (const uint8_t *)r->str, r->len, &v) != 0)
            bad_value(c, "undecryptable");
    } else if (r != NULL && r->type != REDIS_REPLY_NIL) {
        bad_value(c, "wrong type");
    }
    freeReplyObject(r);
    if (v == NULL) {
        count(&c->misses);
        return KMS_ERR_NOT_FOUND;
    }
    count(&c->hits_redis);
    kms_rc lrc = kms_cache_put(c->local, key, v); /* why: a failed local copy only costs a later Redis GET */
    (void)lrc;
    *out = v;
    return KMS_OK;
}

static kms_rc redis_put(struct kms_cache *base, const uint8_t key[KMS_CACHE_KEY_LEN], const struct kms_secret *value)
{
    struct rcache *c = (struct rcache *)base;
    kms_rc rc = kms_cache_put(c->local, key, value);
    uint8_t sealed[1 + NONCE_LEN + VALUE_MAX + TAG_LEN];
    size_t sealed_len = 0;
    char name[NAME_MAX_LEN], ttl[16];
    pthread_mutex_lock(&c->mu);
    snprintf(ttl, sizeof(ttl), "%u", c->ttl_s); /* why: under the lock, kms_cache_set_limits changes it */
    if (link_get(c) != NULL && entry_name(c, key, name) == 0 && kms_redis_value_seal(c->k_value, name, value, sealed, &sealed_len) == 0) {
        const char *argv[] = {"SET", name, (const char *)sealed, "EX", ttl};
        size_t lens[] = {3, strlen(name), sealed_len, 2, strlen(ttl)};
        redisReply *r = command(c, 5, argv, lens);
        if (r != NULL && !reply_ok(r))
            count(&c->errors);
        freeReplyObject(r);
    }
    pthread_mutex_unlock(&c->mu);
    return rc;
}

static void redis_destroy(struct kms_cache *base)
{
    struct rcache *c = (struct rcache *)base;
    kms_redis_conn_free(&c->ctx);
    SSL_CTX_free(c->tls);
    kms_cache_free(&c->local);
    kms_secret_free(&c->password);
    kms_secret_free(&c->sentinel_password);
    kms_secret_free(&c->k_name);
    kms_secret_free(&c->k_value);
    pthread_mutex_destroy(&c->mu);
    free(c);
}

static void redis_set_limits(struct kms_cache *base, unsigned ttl_s, unsigned idle_s)
{
    struct rcache *c = (struct rcache *)base;
    kms_cache_set_limits(c->local, ttl_s, idle_s);
    pthread_mutex_lock(&c->mu);
    c->ttl_s = ttl_s > 0 && ttl_s <= 30u * 86400u ? ttl_s : 300; /* why: as at start (apply_options) */
    pthread_mutex_unlock(&c->mu);
}

static const struct kms_cache_ops redis_ops = {
    .name = "distributed",
    .get = redis_get,
    .put = redis_put,
    .destroy = redis_destroy,
    .set_limits = redis_set_limits,
};

/* ---- options ------------------------------------------------------------ */

/* One byte of a host name or address inside a longer string (URL, Sentinel
 * list); whole names go through kms_token_valid. */
static int is_name_char(char ch, const char *extra)
{
    return (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
           (ch != '\0' && strchr(extra, ch) != NULL);
}

static int hexval(char ch)
{
    if (ch >= '0' && ch <= '9')
        return ch - '0';
    if (ch >= 'a' && ch <= 'f')
        return ch - 'a' + 10;
    if (ch >= 'A' && ch <= 'F')
        return ch - 'A' + 10;
    return -1;
}

/* Percent-decodes s[0..len) into out (cap bytes); -1 on a bad escape, a NUL,
 * or overflow. */
static int pct_decode(const char *s, size_t len, uint8_t *out, size_t cap, size_t *out_len)
{
    size_t n = 0;
    for (size_t i = 0; i < len; i++) {
        int ch = (unsigned char)s[i];
        if (ch == '%') {
            if (i + 2 >= len)
                return -1;
            int hi = hexval(s[i + 1]), lo = hexval(s[i + 2]);
            if (hi < 0 || lo < 0)
                return -1;
            ch = hi * 16 + lo;
            i += 2;
        }
        if (ch == 0 || n >= cap)
            return -1;
        out[n++] = (uint8_t)ch;
    }
    *out_len = n;
    return 0;
}

/* Digits only, value in 0..max. */
static int parse_uint(const char *s, size_t len, unsigned max, unsigned *out)
{
    unsigned long v = 0;
    if (len == 0 || len > 10)
        return -1;
    for (size_t i = 0; i < len; i++) {
        if (s[i] < '0' || s[i] > '9')
            return -1;
        v = v * 10 + (unsigned long)(s[i] - '0');
    }
    if (v > max)
        return -1;
    *out = (unsigned)v;
    return 0;
}

#define URL_MAX 1024

/* redis[s]://[user@ | [user]:password@]host[:port][/db]; the host is empty
 * (and no port) exactly when sentinels are used. *tls = 1 for rediss://.
 * Never puts the password into the error detail. */
static kms_rc parse_url(struct rcache *c, const char *url, int sentinels, int *tls)
{
    size_t len = strnlen(url, URL_MAX + 1);
    if (len > URL_MAX)
        return kms_fail(KMS_ERR_CONFIG, "redis url: longer than %d bytes", URL_MAX);
    const char *p;
    if (strncmp(url, "rediss://", 9) == 0) {
        *tls = 1;
        p = url + 9;
    } else if (strncmp(url, "redis://", 8) == 0) {
        *tls = 0;
        p = url + 8;
    } else {
        return kms_fail(KMS_ERR_CONFIG, "redis url: must start with redis:// or rediss://");
    }
    const char *end = url + len;
    const char *at = memchr(p, '@', (size_t)(end - p));
    if (at != NULL) {
        if (memchr(at + 1, '@', (size_t)(end - at - 1)) != NULL)
            return kms_fail(KMS_ERR_CONFIG, "redis url: more than one '@'");
        const char *colon = memchr(p, ':', (size_t)(at - p));
        if (colon == NULL) /* why: "user@": the password comes from a secret file */
            colon = at;
        size_t ulen = 0;
        if (pct_decode(p, (size_t)(colon - p), (uint8_t *)c->user, sizeof(c->user) - 1, &ulen) != 0)
            return kms_fail(KMS_ERR_CONFIG, "redis url: bad user name");
        c->user[ulen] = '\0';
        if (colon == at && ulen == 0)
            return kms_fail(KMS_ERR_CONFIG, "redis url: empty user info");
        if (colon != at) {
            size_t plen_enc = (size_t)(at - colon - 1);
            if (plen_enc == 0)
                return kms_fail(KMS_ERR_CONFIG, "redis url: empty password");
            struct kms_secret *pw = NULL;
            KMS_GUARD(kms_secret_new(plen_enc, &pw));
            size_t plen = 0;
            if (pct_decode(colon + 1, plen_enc, kms_secret_data(pw), plen_enc, &plen) != 0 || plen == 0) {
                kms_secret_free(&pw);
                return kms_fail(KMS_ERR_CONFIG, "redis url: bad password encoding");
            }
            kms_secret_truncate(pw, plen);
            c->password = pw;
        }
        p = at + 1;
    }
    /* host */
    const char *h = p;
    while (p < end && *p != ':' && *p != '/')
        p++;
    size_t hlen = (size_t)(p - h);
    if (hlen >= sizeof(c->host))
        return kms_fail(KMS_ERR_CONFIG, "redis url: host too long");
    if (hlen == 0) {
        /* why: with sentinels the master's address comes from them; the url
         * then only says TLS or not, the user and the database */
        if (!sentinels)
            return kms_fail(KMS_ERR_CONFIG, "redis url: missing host");
        if (p < end && *p == ':')
            return kms_fail(KMS_ERR_CONFIG, "redis url: a port without a host");
    } else if (sentinels) {
        return kms_fail(KMS_ERR_CONFIG, "redis url: give no host with sentinels (redis:// or rediss://, "
                                        "optionally user@ and /db); the sentinels name the master");
    }
    for (size_t i = 0; i < hlen; i++)
        if (!is_name_char(h[i], ".-"))
            return kms_fail(KMS_ERR_CONFIG, "redis url: bad character in host");
    memcpy(c->host, h, hlen);
    c->host[hlen] = '\0';
    c->port = 6379;
    if (p < end && *p == ':') {
        const char *q = ++p;
        while (p < end && *p != '/')
            p++;
        unsigned port;
        if (parse_uint(q, (size_t)(p - q), 65535, &port) != 0 || port == 0)
            return kms_fail(KMS_ERR_CONFIG, "redis url: port must be 1..65535");
        c->port = (int)port;
    }
    if (p < end && *p == '/') {
        p++;
        if (p < end && parse_uint(p, (size_t)(end - p), 9999, &c->db) != 0)
            return kms_fail(KMS_ERR_CONFIG, "redis url: database must be 0..9999");
        p = end;
    }
    if (p != end)
        return kms_fail(KMS_ERR_CONFIG, "redis url: trailing characters");
    return KMS_OK;
}

/* Any host a sentinel may name: a DNS name or an IPv4/IPv6 literal. */
static int valid_host(const char *s, size_t len)
{
    if (len == 0 || len > HOST_MAX)
        return 0;
    for (size_t i = 0; i < len; i++)
        if (!is_name_char(s[i], ".-:"))
            return 0;
    return 1;
}

/* "host:port[,host:port]..." (1..SENTINELS_MAX, spaces after commas
 * allowed; host [A-Za-z0-9.-], no IPv6 literal) into c->sentinels. */
static kms_rc parse_sentinels(struct rcache *c, const char *list)
{
    const char *p = list;
    size_t len = strnlen(list, URL_MAX + 1);
    if (len == 0 || len > URL_MAX)
        return kms_fail(KMS_ERR_CONFIG, "redis sentinels: give 1..%d host:port, comma-separated", SENTINELS_MAX);
    const char *end = list + len;
    while (p < end) {
        while (p < end && *p == ' ')
            p++;
        const char *item = p;
        const char *comma = memchr(p, ',', (size_t)(end - p));
        const char *stop = comma ? comma : end;
        const char *colon = NULL;
        for (const char *q = item; q < stop; q++)
            if (*q == ':')
                colon = q;
        if (c->n_sentinels == SENTINELS_MAX)
            return kms_fail(KMS_ERR_CONFIG, "redis sentinels: at most %d", SENTINELS_MAX);
        unsigned port = 0;
        size_t hlen = colon ? (size_t)(colon - item) : 0;
        if (colon == NULL || hlen == 0 || hlen > HOST_MAX ||
            parse_uint(colon + 1, (size_t)(stop - colon - 1), 65535, &port) != 0 || port == 0)
            return kms_fail(KMS_ERR_CONFIG, "redis sentinels: entry %zu is not host:port (port 1..65535)",
                            c->n_sentinels + 1);
        for (size_t i = 0; i < hlen; i++)
            if (!is_name_char(item[i], ".-"))
                return kms_fail(KMS_ERR_CONFIG, "redis sentinels: bad character in host of entry %zu",
                                c->n_sentinels + 1);
        memcpy(c->sentinels[c->n_sentinels].host, item, hlen);
        c->sentinels[c->n_sentinels].host[hlen] = '\0';
        c->sentinels[c->n_sentinels].port = (int)port;
        c->n_sentinels++;
        if (comma == NULL)
            break;
        p = comma + 1;
        if (p == end)
            return kms_fail(KMS_ERR_CONFIG, "redis sentinels: trailing comma");
    }
    return KMS_OK;
}

static kms_rc apply_options(struct rcache *c, const struct kms_redis_options *o)
{
    int sentinels = o->sentinels != NULL;
    if (sentinels) {
        KMS_GUARD(parse_sentinels(c, o->sentinels));
        if (!kms_token_valid(o->sentinel_master, sizeof(c->master_name) - 1, "._-"))
            return kms_fail(KMS_ERR_CONFIG, "redis: sentinels need the master's name: 1..64 of [A-Za-z0-9._-]");
        snprintf(c->master_name, sizeof(c->master_name), "%s", o->sentinel_master);
        if (o->sentinel_password != NULL)
            KMS_GUARD(kms_secret_from(kms_secret_cdata(o->sentinel_password), kms_secret_len(o->sentinel_password),
                                      &c->sentinel_password));
    } else if (o->sentinel_master != NULL || o->sentinel_password != NULL) {
        return kms_fail(KMS_ERR_CONFIG, "redis: a sentinel master name or password without sentinels");
    }
    int tls = o->tls;
    if (o->url != NULL) {
        if (o->host != NULL || o->port != 0 || o->db != 0 || o->user != NULL || o->tls)
            return kms_fail(KMS_ERR_CONFIG, "redis: give either a url or host/port/db/user/tls");
        KMS_GUARD(parse_url(c, o->url, sentinels, &tls));
        /* why: the password belongs in a secret file, not in the URL; it is used
         * when the URL carries none, and giving both is an error */
        if (o->password != NULL) {
            if (c->password != NULL)
                return kms_fail(KMS_ERR_CONFIG, "redis: the url already carries a password");
            KMS_GUARD(kms_secret_from(kms_secret_cdata(o->password), kms_secret_len(o->password), &c->password));
        }
    } else {
        if (sentinels && (o->host != NULL || o->port != 0))
            return kms_fail(KMS_ERR_CONFIG, "redis: give no host or port with sentinels; they name the master");
        const char *host = o->host ? o->host : "127.0.0.1";
        if (!kms_token_valid(host, sizeof(c->host) - 1, ".-"))
            return kms_fail(KMS_ERR_CONFIG, "redis: bad host");
        if (!sentinels)
            snprintf(c->host, sizeof(c->host), "%s", host);
        if (o->port > 65535)
            return kms_fail(KMS_ERR_CONFIG, "redis: port must be 1..65535");
        c->port = sentinels ? 0 : o->port ? (int)o->port : 6379;
        if (o->db > 9999)
            return kms_fail(KMS_ERR_CONFIG, "redis: database must be 0..9999");
        c->db = o->db;
        if (o->user != NULL) {
            if (!kms_token_valid(o->user, sizeof(c->user) - 1, "._-@"))
                return kms_fail(KMS_ERR_CONFIG, "redis: bad ACL user name");
            snprintf(c->user, sizeof(c->user), "%s", o->user);
        }
        if (o->password != NULL)
            KMS_GUARD(kms_secret_from(kms_secret_cdata(o->password), kms_secret_len(o->password), &c->password));
    }
    if (!tls && (o->tls_ca_file != NULL || o->tls_cert_file != NULL || o->tls_key_file != NULL))
        return kms_fail(KMS_ERR_CONFIG, "redis: TLS files given but TLS is off (use a rediss:// url)");
    if (tls)
        KMS_GUARD(kms_redis_conn_tls_new(o->tls_ca_file, o->tls_cert_file, o->tls_key_file, &c->tls));
    if (c->user[0] && c->password == NULL)
        return kms_fail(KMS_ERR_CONFIG, "redis: an ACL user needs a password");
    const char *prefix = o->prefix ? o->prefix : KMS_REDIS_DEFAULT_PREFIX;
    if (!kms_token_valid(prefix, sizeof(c->prefix) - 1, ":._-"))
        return kms_fail(KMS_ERR_CONFIG, "redis: key prefix must be 1..64 of [A-Za-z0-9:._-]");
    snprintf(c->prefix, sizeof(c->prefix), "%s", prefix);
    const char *node = o->node ? o->node : "kmsd";
    if (!kms_token_valid(node, KMS_CLUSTER_NAME_MAX, "._-"))
        return kms_fail(KMS_ERR_CONFIG, "redis: node name must be 1..64 of [A-Za-z0-9._-]");
    snprintf(c->node, sizeof(c->node), "%s", node);
    c->ttl_s = o->ttl_s ? o->ttl_s : 300;
    if (c->ttl_s > 30u * 86400u)
        return kms_fail(KMS_ERR_CONFIG, "redis: ttl must be 1..2592000 s");
    unsigned cto = o->connect_timeout_ms ? o->connect_timeout_ms : 500;
    unsigned mto = o->command_timeout_ms ? o->command_timeout_ms : 500;
    if (cto > 60000 || mto > 60000)
        return kms_fail(KMS_ERR_CONFIG, "redis: timeouts must be 1..60000 ms");
    c->connect_ms = cto;
    c->command_ms = mto;
    unsigned bmin = o->backoff_min_ms ? o->backoff_min_ms : 100;
    unsigned bmax = o->backoff_max_ms ? o->backoff_max_ms : 5000;
    if (bmin > bmax || bmax > 600000)
        return kms_fail(KMS_ERR_CONFIG, "redis: backoff must satisfy min <= max <= 600000 ms");
    c->backoff_min_ns = bmin * NS_PER_MS;
    c->backoff_max_ns = bmax * NS_PER_MS;
    unsigned gen_ms = o->gen_check_ms ? o->gen_check_ms : 1000;
    if (gen_ms > 3600000)
        return kms_fail(KMS_ERR_CONFIG, "redis: generation check must be 1..3600000 ms");
    c->gen_check_ns = gen_ms * NS_PER_MS;
    if (o->cluster_key == NULL || kms_secret_len(o->cluster_key) != KMS_CLUSTER_KEY_LEN)
        return kms_fail(KMS_ERR_CONFIG, "redis: the cluster cache key must be %d bytes", KMS_CLUSTER_KEY_LEN);
    /* why: one key for names and another for values, so neither use can
     * leak anything about the other (HKDF-Expand with one block). */
    static const char name_label[] = "kmsd cluster cache v1 name\x01";
    static const char value_label[] = "kmsd cluster cache v1 value\x01";
    KMS_GUARD(kms_secret_new(32, &c->k_name));
    KMS_GUARD(kms_secret_new(32, &c->k_value));
    if (hmac(o->cluster_key, (const uint8_t *)name_label, sizeof(name_label) - 1, kms_secret_data(c->k_name)) != 0 ||
        hmac(o->cluster_key, (const uint8_t *)value_label, sizeof(value_label) - 1, kms_secret_data(c->k_value)) !=
            0) {
        kms_error_add_openssl();
        return kms_fail(KMS_ERR_CRYPTO, "redis: deriving the cluster subkeys");
    }
    return KMS_OK;
}

kms_rc kms_cache_redis_new(const struct kms_redis_options *o, struct kms_cache *local, struct kms_cache **out)
{
    *out = NULL;
    if (local == NULL)
        return kms_fail(KMS_ERR_CONFIG, "redis: a local tier is required");
    pthread_once(&fns_once, init_fns);
    if (default_fns.createString == NULL) {
        kms_cache_free(&local);
        return kms_fail(KMS_ERR_NO_MEMORY, "redis: reader");
    }
    struct rcache *c = calloc(1, sizeof(*c));
    if (c == NULL) {
        kms_cache_free(&local);
        return kms_fail(KMS_ERR_NO_MEMORY, "redis cache");
    }
    c->local = local;
    if (pthread_mutex_init(&c->mu, NULL) != 0) {
        kms_cache_free(&c->local);
        free(c);
        return kms_fail(KMS_ERR_NO_MEMORY, "redis cache mutex");
    }
    c->base.ops = &redis_ops;
    c->link = KMS_REDIS_DEGRADED;
    c->link_logged_down = 1; /* why: the first successful connect is logged */
    c->started = (int64_t)time(NULL);
    kms_rc rc = apply_options(c, o);
    if (rc != KMS_OK) {
        redis_destroy(&c->base);
        return rc;
    }
    pthread_mutex_lock(&c->mu);
    (void)link_get(c);
    pthread_mutex_unlock(&c->mu);
    *out = &c->base;
    return KMS_OK;
}

static struct rcache *as_redis(struct kms_cache *c)
{
    return c != NULL && c->ops == &redis_ops ? (struct rcache *)c : NULL;
}

void kms_cache_redis_state(struct kms_cache *base, struct kms_redis_state *out)
{
    memset(out, 0, sizeof(*out));
    out->link = KMS_REDIS_DEGRADED;
    struct rcache *c = as_redis(base);
    if (c == NULL)
        return;
    out->link = (enum kms_redis_link)__atomic_load_n(&c->link, __ATOMIC_RELAXED);
    out->hits_local = load(&c->hits_local);
    out->hits_redis = load(&c->hits_redis);
    out->misses = load(&c->misses);
    out->errors = load(&c->errors);
    out->bad_values = load(&c->bad_values);
    out->reconnects = load(&c->reconnects);
    pthread_mutex_lock(&c->mu);
    out->generation = c->gen;
    pthread_mutex_unlock(&c->mu);
}

kms_rc kms_cache_redis_invalidate_all(struct kms_cache *base)
{
    struct rcache *c = as_redis(base);
    if (c == NULL)
        return kms_fail(KMS_ERR_INVALID_FIELD, "not a distributed cache");
    kms_rc rc = KMS_ERR_BACKEND_UNAVAILABLE;
    pthread_mutex_lock(&c->mu);
    kms_cache_local_clear(c->local);
    if (link_get(c) != NULL) {
        char name[NAME_MAX_LEN];
        snprintf(name, sizeof(name), "%sgen", c->prefix);
        const char *argv[] = {"INCR", name};
        size_t lens[] = {4, strlen(name)};
        redisReply *r = command(c, 2, argv, lens);
        uint64_t g;
        if (r != NULL && r->type == REDIS_REPLY_INTEGER && kms_redis_reply_u64(r, &g) == 0) {
            c->gen = g;
            rc = KMS_OK;
        }
        freeReplyObject(r);
    }
    pthread_mutex_unlock(&c->mu);
    if (rc != KMS_OK)
        return kms_fail(rc, "redis: invalidation not propagated (local tier cleared)");
    kms_log(KMS_LOG_INFO, "cache_invalidated", NULL, "node", c->node, NULL);
    return KMS_OK;
}

/* ---- heartbeat ------------------------------------------------------------ */

/* Printable ASCII only, at most max bytes (heartbeat text fields). */
static int printable(const char *s, size_t max)
{
    size_t n = 0;
    for (; s[n] != '\0'; n++)
        if (n >= max || s[n] < 0x20 || s[n] > 0x7e)
            return 0;
    return 1;
}

static int hex64_or_empty(const char *s)
{
    size_t n = strlen(s);
    if (n == 0)
        return 1;
    if (n != 64)
        return 0;
    for (size_t i = 0; i < n; i++)
        if (!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'f')))
            return 0;
    return 1;
}

kms_rc kms_cluster_heartbeat_node(struct kms_cache *base, const struct kms_cluster_node *self, unsigned ttl_s)
{
    struct rcache *c = as_redis(base);
    if (c == NULL)
        return kms_fail(KMS_ERR_INVALID_FIELD, "not a distributed cache");
    if (!kms_token_valid(self->name, KMS_CLUSTER_NAME_MAX, "._-") ||
        !kms_token_valid(self->version, KMS_CLUSTER_NAME_MAX, ".+_-") || ttl_s == 0 || ttl_s > 86400 ||
        !hex64_or_empty(self->ks_sha256) || !printable(self->ks_expiry_alias, 128) ||
        !printable(self->ks_error, 255))
        return kms_fail(KMS_ERR_INVALID_FIELD, "heartbeat: bad node name, version, ttl or keystore field");
    json_t *j = json_pack("{s:s, s:s, s:I, s:I, s:I, s:I, s:s, s:I, s:s, s:s}", "node", self->name, "version",
                          self->version, "started", (json_int_t)c->started, "last_seen", (json_int_t)time(NULL),
                          "interval", (json_int_t)self->interval_s, "ks_generation",
                          (json_int_t)self->ks_generation, "ks_sha256", self->ks_sha256, "ks_expiry",
                          (json_int_t)self->ks_expiry, "ks_expiry_alias", self->ks_expiry_alias, "ks_error",
                          self->ks_error);
    char *body = j ? json_dumps(j, JSON_COMPACT | JSON_SORT_KEYS) : NULL;
    json_decref(j);
    if (body == NULL)
        return kms_fail(KMS_ERR_NO_MEMORY, "heartbeat json");
    char name[NAME_MAX_LEN], ttl[16];
    snprintf(name, sizeof(name), "%snode:%s", c->prefix, self->name);
    snprintf(ttl, sizeof(ttl), "%u", ttl_s);
    kms_rc rc = KMS_ERR_BACKEND_UNAVAILABLE;
    pthread_mutex_lock(&c->mu);
    if (link_get(c) != NULL) {
        const char *argv[] = {"SET", name, body, "EX", ttl};
        size_t lens[] = {3, strlen(name), strlen(body), 2, strlen(ttl)};
        redisReply *r = command(c, 5, argv, lens);
        if (reply_ok(r))
            rc = KMS_OK;
        freeReplyObject(r);
    }
    pthread_mutex_unlock(&c->mu);
    /* why: json_dumps allocates with jansson's allocator, which kmsd replaces
     * (a wiping one); free() on it is invalid */
    json_malloc_t jm;
    json_free_t jf;
    json_get_alloc_funcs(&jm, &jf);
    jf(body);
    if (rc != KMS_OK)
        return kms_fail(rc, "heartbeat: redis unreachable or refused");
    return KMS_OK;
}

kms_rc kms_cluster_heartbeat(struct kms_cache *base, const char *node, const char *version, unsigned ttl_s)
{
    struct kms_cluster_node self;
    memset(&self, 0, sizeof(self));
    if (node == NULL || version == NULL || strlen(node) > KMS_CLUSTER_NAME_MAX ||
        strlen(version) > KMS_CLUSTER_NAME_MAX)
        return kms_fail(KMS_ERR_INVALID_FIELD, "heartbeat: bad node name or version");
    snprintf(self.name, sizeof(self.name), "%s", node);
    snprintf(self.version, sizeof(self.version), "%s", version);
    return kms_cluster_heartbeat_node(base, &self, ttl_s);
}

/* Strictly parses one heartbeat value; -1 when it is not one. The keystore
 * fields are optional (nodes of an older version do not send them). */
static int parse_node(const redisReply *r, struct kms_cluster_node *out)
{
    if (r == NULL || r->type != REDIS_REPLY_STRING)
        return -1;
    return kms_cluster_node_parse(r->str, r->len, out);
}

int kms_cluster_node_parse(const char *text, size_t len, struct kms_cluster_node *out)
{
    json_error_t err;
    json_t *j = json_loadb(text, len, JSON_REJECT_DUPLICATES, &err);
    const char *node = NULL, *version = NULL, *sha = "", *alias = "", *error = "";
    json_int_t started = 0, seen = 0, interval = 0, gen = 0, expiry = 0;
    int bad = j == NULL ||
              json_unpack_ex(j, &err, JSON_STRICT, "{s:s, s:s, s:I, s:I, s?I, s?I, s?s, s?I, s?s, s?s}", "node",
                             &node, "version", &version, "started", &started, "last_seen", &seen, "interval",
                             &interval, "ks_generation", &gen, "ks_sha256", &sha, "ks_expiry", &expiry,
                             "ks_expiry_alias", &alias, "ks_error", &error) != 0 ||
              !kms_token_valid(node, KMS_CLUSTER_NAME_MAX, "._-") ||
              !kms_token_valid(version, KMS_CLUSTER_NAME_MAX, ".+_-") || started < 0 || seen < 0 || interval < 0 ||
              interval > 86400 || gen < 0 || !hex64_or_empty(sha) || !printable(alias, 128) ||
              !printable(error, 255);
    if (!bad) {
        memset(out, 0, sizeof(*out));
        snprintf(out->name, sizeof(out->name), "%s", node);
        snprintf(out->version, sizeof(out->version), "%s", version);
        out->started = (int64_t)started;
        out->last_seen = (int64_t)seen;
        out->interval_s = (unsigned)interval;
        out->ks_generation = (uint64_t)gen;
        snprintf(out->ks_sha256, sizeof(out->ks_sha256), "%s", sha);
        out->ks_expiry = (int64_t)expiry;
        snprintf(out->ks_expiry_alias, sizeof(out->ks_expiry_alias), "%s", alias);
        snprintf(out->ks_error, sizeof(out->ks_error), "%s", error);
    }
    json_decref(j);
    return bad ? -1 : 0;
}

static int node_cmp(const void *a, const void *b)
{
    return strcmp(((const struct kms_cluster_node *)a)->name, ((const struct kms_cluster_node *)b)->name);
}

kms_rc kms_cluster_nodes(struct kms_cache *base, struct kms_cluster_node *out, size_t cap, size_t *n)
{
    *n = 0;
    struct rcache *c = as_redis(base);
    if (c == NULL)
        return kms_fail(KMS_ERR_INVALID_FIELD, "not a distributed cache");
    char pattern[NAME_MAX_LEN], cursor[24] = "0";
    snprintf(pattern, sizeof(pattern), "%snode:*", c->prefix);
    kms_rc rc = KMS_OK;
    pthread_mutex_lock(&c->mu);
    if (link_get(c) == NULL)
        rc = KMS_ERR_BACKEND_UNAVAILABLE;
    for (int calls = 0; rc == KMS_OK && calls < SCAN_MAX_CALLS && *n < cap; calls++) {
        const char *argv[] = {"SCAN", cursor, "MATCH", pattern, "COUNT", SCAN_COUNT};
        size_t lens[] = {4, strlen(cursor), 5, strlen(pattern), 5, strlen(SCAN_COUNT)};
        redisReply *r = command(c, 6, argv, lens);
        if (r == NULL || r->type != REDIS_REPLY_ARRAY || r->elements != 2 ||
            r->element[0]->type != REDIS_REPLY_STRING || r->element[0]->len >= sizeof(cursor) ||
            r->element[1]->type != REDIS_REPLY_ARRAY) {
            freeReplyObject(r);
            rc = KMS_ERR_BACKEND_UNAVAILABLE;
            break;
        }
        memcpy(cursor, r->element[0]->str, r->element[0]->len);
        cursor[r->element[0]->len] = '\0';
        for (size_t i = 0; i < r->element[1]->elements && *n < cap && c->ctx != NULL; i++) {
            const redisReply *k = r->element[1]->element[i];
            if (k->type != REDIS_REPLY_STRING)
                continue;
            const char *gargv[] = {"GET", k->str};
            size_t glens[] = {3, k->len};
            redisReply *v = command(c, 2, gargv, glens);
            if (parse_node(v, &out[*n]) == 0)
                (*n)++;
            freeReplyObject(v);
        }
        freeReplyObject(r);
        if (c->ctx == NULL)
            rc = KMS_ERR_BACKEND_UNAVAILABLE;
        if (strcmp(cursor, "0") == 0)
            break;
    }
    pthread_mutex_unlock(&c->mu);
    if (rc != KMS_OK)
        return kms_fail(rc, "cluster nodes: redis unreachable");
    qsort(out, *n, sizeof(*out), node_cmp);
    return KMS_OK;
}

/* ---- connections of their own -------------------------------------------- */

kms_rc kms_cluster_connect(struct kms_cache *base, struct kms_redis_conn **out)
{
    *out = NULL;
    struct rcache *c = as_redis(base);
    if (c == NULL)
        return kms_fail(KMS_ERR_INVALID_FIELD, "not a distributed cache");
    const char *why = NULL;
    pthread_mutex_lock(&c->mu);
    *out = open_link(c, &blob_fns, &why);
    char port[16];
    snprintf(port, sizeof(port), "%d", c->port);
    char where[HOST_MAX + 20];
    snprintf(where, sizeof(where), "%s:%s", c->host[0] ? c->host : "(sentinels)", port);
    pthread_mutex_unlock(&c->mu);
    if (*out == NULL) {
        char detail[256];
        snprintf(detail, sizeof(detail), "%s", kms_error_detail());
        return kms_fail(KMS_ERR_BACKEND_UNAVAILABLE, "redis %s: %s failed: %s", where, why, detail);
    }
    return KMS_OK;
}

const char *kms_cluster_prefix(struct kms_cache *base)
{
    struct rcache *c = as_redis(base);
    return c != NULL ? c->prefix : KMS_REDIS_DEFAULT_PREFIX;
}
