/* cluster/redis_cache against a real redis-server, started once for this
 * binary by tests/stand-ins/redis/redis.sh (loopback, no persistence,
 * stopped by PID in POST_ALL). Each test uses its own key prefix on the
 * shared server; tests that stop Redis or need a password start a private
 * one in a subdirectory. Two cache instances with separate local tiers play
 * two kmsd nodes. The raw hiredis connection below is the test's view of
 * what Redis holds (TLS servers keep a plain port for it). TLS uses a PKI
 * made by redis.sh pki in PRE_ALL; Sentinel tests run a primary, a replica
 * and a sentinel of their own. */
#define _GNU_SOURCE /* memmem */
#include "cluster/redis_cache.h"

#include <criterion/criterion.h>
#include <criterion/hooks.h>
#include <hiredis/hiredis.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "common/hex.h"
#include "kms/cache.h"

/* ---- the harness ------------------------------------------------------- */

static char own_dir[128];

static int harness(const char *verb, const char *dir, const char *extra_env)
{
    const char *src = getenv("KMS_SOURCE_DIR");
    char cmd[1024];
    snprintf(cmd, sizeof(cmd), "%s %s/tests/stand-ins/redis/redis.sh %s %s >> %s.out 2>&1", extra_env ? extra_env : "",
             src ? src : ".", verb, dir, dir);
    return system(cmd);
}

ReportHook(PRE_ALL)(struct criterion_test_set *set)
{
    (void)set;
    snprintf(own_dir, sizeof(own_dir), "/tmp/kms-test-redis-XXXXXX");
    if (mkdtemp(own_dir) == NULL) {
        own_dir[0] = '\0';
        return;
    }
    char dir[256];
    snprintf(dir, sizeof(dir), "%s/shared", own_dir);
    if (harness("start", dir, NULL) != 0) {
        char cmd[512];
        snprintf(cmd, sizeof(cmd), "cat %s.out >&2", dir);
        (void)!system(cmd);
    }
    snprintf(dir, sizeof(dir), "%s/pki", own_dir);
    (void)!harness("pki", dir, NULL);
    setenv("KMS_TEST_REDIS_DIR", own_dir, 1);
}

ReportHook(POST_ALL)(struct criterion_global_stats *stats)
{
    (void)stats;
    if (own_dir[0] == '\0')
        return;
    static const char *const subdirs[] = {"shared",   "outage",    "auth",       "tls",       "mtls",
                                          "s-master", "s-replica", "s-sentinel", "ts-master", "ts-replica",
                                          "ts-sentinel"};
    char dir[256], cmd[512];
    for (size_t i = 0; i < KMS_ARRAY_LEN(subdirs); i++) {
        snprintf(dir, sizeof(dir), "%s/%s", own_dir, subdirs[i]);
        (void)!harness("stop", dir, NULL);
    }
    snprintf(cmd, sizeof(cmd), "rm -rf %s", own_dir);
    (void)!system(cmd);
}

struct env {
    unsigned port;
    unsigned tls_port;
    char password[256];
};

static void read_env(const char *sub, struct env *e)
{
    const char *root = getenv("KMS_TEST_REDIS_DIR");
    cr_assert_not_null(root, "PRE_ALL did not create a directory");
    char path[512], line[256];
    memset(e, 0, sizeof(*e));
    snprintf(path, sizeof(path), "%s/%s/redis.env", root, sub);
    FILE *f = fopen(path, "r");
    cr_assert_not_null(f, "no %s: redis.sh did not start", path);
    while (fgets(line, sizeof(line), f) != NULL) {
        line[strcspn(line, "\n")] = '\0';
        if (strncmp(line, "REDIS_PORT=", 11) == 0)
            e->port = (unsigned)strtoul(line + 11, NULL, 10);
        else if (strncmp(line, "REDIS_TLS_PORT=", 15) == 0)
            e->tls_port = (unsigned)strtoul(line + 15, NULL, 10);
        else if (strncmp(line, "REDIS_PASSWORD=", 15) == 0)
            snprintf(e->password, sizeof(e->password), "%s", line + 15);
    }
    fclose(f);
    cr_assert(e->port > 0, "no port in %s", path);
}

/* Starts (or restarts) a private server in own_dir/sub. */
static void private_server(const char *sub, const char *extra_env, struct env *e)
{
    const char *root = getenv("KMS_TEST_REDIS_DIR");
    cr_assert_not_null(root);
    char dir[256];
    snprintf(dir, sizeof(dir), "%s/%s", root, sub);
    cr_assert_eq(harness("start", dir, extra_env), 0, "redis.sh start %s failed", dir);
    read_env(sub, e);
}

static void stop_private(const char *sub)
{
    char dir[256];
    snprintf(dir, sizeof(dir), "%s/%s", getenv("KMS_TEST_REDIS_DIR"), sub);
    cr_assert_eq(harness("stop", dir, NULL), 0, "redis.sh stop %s failed", dir);
}

/* ---- helpers ---------------------------------------------------------------- */

static struct kms_secret *cluster_key(uint8_t fill)
{
    uint8_t raw[KMS_CLUSTER_KEY_LEN];
    memset(raw, fill, sizeof(raw));
    raw[0] = 0xA5;
    struct kms_secret *s = NULL;
    cr_assert_eq(kms_secret_from(raw, sizeof(raw), &s), KMS_OK);
    return s;
}

struct node_opts {
    unsigned port;
    const char *prefix;
    uint8_t key_fill;
    const char *password;
    const char *url;
    unsigned ttl_s;
    unsigned gen_check_ms;
    const char *tls_ca, *tls_cert, *tls_key; /* file names under the test PKI */
    const char *sentinels, *sentinel_master, *sentinel_password;
};

/* own_dir/pki/file into out. */
static const char *pki_path(const char *file, char *out, size_t cap)
{
    const char *root = getenv("KMS_TEST_REDIS_DIR");
    cr_assert_not_null(root);
    snprintf(out, cap, "%s/pki/%s", root, file);
    return out;
}

static kms_rc try_node(const struct node_opts *no, struct kms_cache **out)
{
    struct kms_cache *local = NULL;
    cr_assert_eq(kms_cache_local_new(64, 0, 0, &local), KMS_OK);
    struct kms_secret *ck = cluster_key(no->key_fill ? no->key_fill : 0x11);
    struct kms_secret *pw = NULL, *spw = NULL;
    if (no->password != NULL)
        cr_assert_eq(kms_secret_from((const uint8_t *)no->password, strlen(no->password), &pw), KMS_OK);
    if (no->sentinel_password != NULL)
        cr_assert_eq(
            kms_secret_from((const uint8_t *)no->sentinel_password, strlen(no->sentinel_password), &spw), KMS_OK);
    char ca[512], cert[512], key[512];
    int fixed = no->url == NULL && no->sentinels == NULL;
    struct kms_redis_options o = {
        .url = no->url,
        .host = fixed ? "127.0.0.1" : NULL,
        .port = fixed ? no->port : 0,
        .password = pw,
        .prefix = no->prefix,
        .ttl_s = no->ttl_s,
        .connect_timeout_ms = 300,
        .command_timeout_ms = 300,
        .backoff_min_ms = 50,
        .backoff_max_ms = 400,
        .gen_check_ms = no->gen_check_ms,
        .cluster_key = ck,
        .node = "test-node",
        .tls_ca_file = no->tls_ca ? pki_path(no->tls_ca, ca, sizeof(ca)) : NULL,
        .tls_cert_file = no->tls_cert ? pki_path(no->tls_cert, cert, sizeof(cert)) : NULL,
        .tls_key_file = no->tls_key ? pki_path(no->tls_key, key, sizeof(key)) : NULL,
        .sentinels = no->sentinels,
        .sentinel_master = no->sentinel_master,
        .sentinel_password = spw,
    };
    kms_rc rc = kms_cache_redis_new(&o, local, out);
    kms_secret_free(&ck);
    kms_secret_free(&pw);
    kms_secret_free(&spw);
    return rc;
}

static struct kms_cache *node(const struct node_opts *no)
{
    struct kms_cache *c = NULL;
    kms_rc rc = try_node(no, &c);
    cr_assert_eq(rc, KMS_OK, "kms_cache_redis_new: %s (%s)", kms_error_name(rc), kms_error_detail());
    return c;
}

static struct kms_cache *shared_node(const char *prefix)
{
    struct env e;
    read_env("shared", &e);
    struct node_opts no = {.port = e.port, .prefix = prefix};
    return node(&no);
}

static void rand_key(uint8_t k[KMS_CACHE_KEY_LEN])
{
    cr_assert_eq(kms_random(k, KMS_CACHE_KEY_LEN), KMS_OK);
}

static struct kms_secret *rand_secret(size_t len)
{
    struct kms_secret *s = NULL;
    cr_assert_eq(kms_secret_random(len, &s), KMS_OK);
    return s;
}

static void put(struct kms_cache *c, const uint8_t *k, const struct kms_secret *v)
{
    cr_assert_eq(kms_cache_put(c, k, v), KMS_OK);
}

/* Asserts a hit equal to want (want NULL: asserts a miss). */
static void expect(struct kms_cache *c, const uint8_t *k, const struct kms_secret *want)
{
    struct kms_secret *got = NULL;
    kms_rc rc = kms_cache_get(c, k, &got);
    if (want == NULL) {
        cr_assert_eq(rc, KMS_ERR_NOT_FOUND, "expected a miss, got %s", kms_error_name(rc));
        cr_assert_null(got);
        return;
    }
    cr_assert_eq(rc, KMS_OK, "expected a hit, got %s", kms_error_name(rc));
    cr_assert(kms_secret_equal(got, want), "the hit differs from what was put");
    kms_secret_free(&got);
}

static struct kms_redis_state state(struct kms_cache *c)
{
    struct kms_redis_state s;
    kms_cache_redis_state(c, &s);
    return s;
}

static redisContext *raw(unsigned port, const char *password)
{
    struct timeval tv = {2, 0};
    redisContext *r = redisConnectWithTimeout("127.0.0.1", (int)port, tv);
    cr_assert(r != NULL && r->err == 0, "raw connect to %u failed", port);
    if (password != NULL) {
        redisReply *a = redisCommand(r, "AUTH %s", password);
        cr_assert(a != NULL && a->type == REDIS_REPLY_STATUS);
        freeReplyObject(a);
    }
    return r;
}

static redisContext *raw_shared(void)
{
    struct env e;
    read_env("shared", &e);
    return raw(e.port, NULL);
}

/* The names of every key matching pattern (SCAN). Caller frees with free_names. */
static size_t scan(redisContext *r, const char *pattern, char ***out)
{
    size_t n = 0, cap = 0;
    char **names = NULL;
    char cursor[32] = "0";
    do {
        redisReply *rep = redisCommand(r, "SCAN %s MATCH %s COUNT 100", cursor, pattern);
        cr_assert(rep != NULL && rep->type == REDIS_REPLY_ARRAY && rep->elements == 2);
        snprintf(cursor, sizeof(cursor), "%s", rep->element[0]->str);
        for (size_t i = 0; i < rep->element[1]->elements; i++) {
            if (n == cap) {
                cap = cap ? cap * 2 : 16;
                names = realloc(names, cap * sizeof(*names));
                cr_assert_not_null(names);
            }
            names[n++] = strdup(rep->element[1]->element[i]->str);
        }
        freeReplyObject(rep);
    } while (strcmp(cursor, "0") != 0);
    *out = names;
    return n;
}

static void free_names(char **names, size_t n)
{
    for (size_t i = 0; i < n; i++)
        free(names[i]);
    free(names);
}

/* The one cache entry under prefix (prefix "g*"), into name. */
static void only_entry(redisContext *r, const char *prefix, char *name, size_t cap)
{
    char pattern[128];
    snprintf(pattern, sizeof(pattern), "%sg*", prefix);
    char **names = NULL;
    size_t n = scan(r, pattern, &names);
    cr_assert_eq(n, 1, "expected one entry under %s, found %zu", prefix, n);
    snprintf(name, cap, "%s", names[0]);
    free_names(names, n);
}

static void raw_set(redisContext *r, const char *name, const void *v, size_t len)
{
    redisReply *rep = redisCommand(r, "SET %s %b", name, v, len);
    cr_assert(rep != NULL && rep->type == REDIS_REPLY_STATUS);
    freeReplyObject(rep);
}

static size_t raw_get(redisContext *r, const char *name, uint8_t *out, size_t cap)
{
    redisReply *rep = redisCommand(r, "GET %s", name);
    cr_assert(rep != NULL && rep->type == REDIS_REPLY_STRING && rep->len <= cap);
    memcpy(out, rep->str, rep->len);
    size_t n = rep->len;
    freeReplyObject(rep);
    return n;
}

/* ---- sharing ------------------------------------------------------------------- */

Test(redis_cache, two_nodes_share_an_entry_through_redis)
{
    struct kms_cache *a = shared_node("t-share:"), *b = shared_node("t-share:");
    cr_assert_eq(state(a).link, KMS_REDIS_CONNECTED);
    uint8_t k[KMS_CACHE_KEY_LEN];
    rand_key(k);
    struct kms_secret *v = rand_secret(32);
    expect(b, k, NULL);
    put(a, k, v);
    expect(b, k, v);
    struct kms_redis_state s = state(b);
    cr_assert_eq(s.hits_redis, 1, "the second node's first hit comes from Redis");
    cr_assert_eq(s.hits_local, 0);
    cr_assert_eq(s.misses, 1);
    expect(b, k, v);
    s = state(b);
    cr_assert_eq(s.hits_local, 1, "a Redis hit is kept in the local tier");
    cr_assert_eq(s.hits_redis, 1);
    expect(a, k, v);
    cr_assert_eq(state(a).hits_local, 1);
    /* an overwrite is seen by the other node once its local copy is gone */
    struct kms_cache *c = shared_node("t-share:");
    struct kms_secret *v2 = rand_secret(48);
    put(a, k, v2);
    expect(c, k, v2);
    kms_secret_free(&v);
    kms_secret_free(&v2);
    kms_cache_free(&a);
    kms_cache_free(&b);
    kms_cache_free(&c);
    cr_assert_null(a);
}

Test(redis_cache, redis_holds_no_key_material_nor_cache_keys)
{
    enum { N = 12 };
    struct kms_cache *a = shared_node("t-scan:"), *b = shared_node("t-scan:");
    uint8_t keys[N][KMS_CACHE_KEY_LEN];
    struct kms_secret *vals[N];
    for (int i = 0; i < N; i++) {
        rand_key(keys[i]);
        vals[i] = rand_secret(i % 2 ? 32 : 16 + (size_t)i);
        put(i % 2 ? a : b, keys[i], vals[i]);
    }
    for (int i = 0; i < N; i++)
        expect(i % 2 ? b : a, keys[i], vals[i]);
    cr_assert_eq(kms_cluster_heartbeat(a, "scan-a", "0.1.0", 60), KMS_OK);
    struct kms_secret *ck = cluster_key(0x11);

    /* every key of the whole server, every string value */
    redisContext *r = raw_shared();
    char **names = NULL;
    size_t n = scan(r, "*", &names);
    cr_assert_geq(n, N + 1, "the entries are in Redis (%zu keys)", n);
    size_t entries = 0;
    for (size_t i = 0; i < n; i++) {
        redisReply *t = redisCommand(r, "TYPE %s", names[i]);
        cr_assert_not_null(t);
        int is_string = strcmp(t->str, "string") == 0;
        freeReplyObject(t);
        /* why: other tests write big values on this server at the same time */
        redisReply *g = is_string ? redisCommand(r, "GET %s", names[i]) : NULL;
        static const uint8_t none[1];
        const uint8_t *val = g && g->type == REDIS_REPLY_STRING ? (const uint8_t *)g->str : none;
        size_t vlen = val != none ? g->len : 0;
        if (strncmp(names[i], "t-scan:g", 8) == 0)
            entries++;
        const uint8_t *hay[2] = {(const uint8_t *)names[i], val};
        size_t hay_len[2] = {strlen(names[i]), vlen};
        for (int h = 0; h < 2; h++) {
            cr_assert_null(memmem(hay[h], hay_len[h], kms_secret_cdata(ck), kms_secret_len(ck)),
                           "the cluster key is in Redis (%s)", names[i]);
            for (int j = 0; j < N; j++) {
                char hex[2 * KMS_CACHE_KEY_LEN + 1], HEX[2 * KMS_CACHE_KEY_LEN + 1];
                for (int x = 0; x < KMS_CACHE_KEY_LEN; x++) {
                    snprintf(hex + 2 * x, 3, "%02x", keys[j][x]);
                    snprintf(HEX + 2 * x, 3, "%02X", keys[j][x]);
                }
                cr_assert_null(memmem(hay[h], hay_len[h], kms_secret_cdata(vals[j]), kms_secret_len(vals[j])),
                               "plaintext secret %d found in Redis key %s", j, names[i]);
                /* why: 8 bytes is enough to notice any copy, and a random
                 * 8-byte collision is out of the question */
                cr_assert_null(memmem(hay[h], hay_len[h], kms_secret_cdata(vals[j]), 8),
                               "a prefix of secret %d found in Redis key %s", j, names[i]);
                cr_assert_null(memmem(hay[h], hay_len[h], keys[j], KMS_CACHE_KEY_LEN), "raw cache key %d in %s", j,
                               names[i]);
                cr_assert_null(memmem(hay[h], hay_len[h], hex, 16), "hex cache key %d in %s", j, names[i]);
                cr_assert_null(memmem(hay[h], hay_len[h], HEX, 16), "HEX cache key %d in %s", j, names[i]);
            }
        }
        freeReplyObject(g);
    }
    cr_assert_eq(entries, N, "one Redis entry per cache entry");
    free_names(names, n);
    redisFree(r);
    kms_secret_free(&ck);
    for (int i = 0; i < N; i++)
        kms_secret_free(&vals[i]);
    kms_cache_free(&a);
    kms_cache_free(&b);
}

/* ---- what Redis can do to us --------------------------------------------------- */

Test(redis_cache, tampered_values_are_misses)
{
    struct kms_cache *a = shared_node("t-tamper:");
    uint8_t k[KMS_CACHE_KEY_LEN];
    rand_key(k);
    struct kms_secret *v = rand_secret(32);
    put(a, k, v);
    redisContext *r = raw_shared();
    char name[256];
    only_entry(r, "t-tamper:", name, sizeof(name));
    uint8_t good[256];
    size_t glen = raw_get(r, name, good, sizeof(good));
    cr_assert_eq(glen, 1 + 12 + 32 + 16, "version, nonce, ciphertext, tag");
    cr_assert_eq(good[0], 1);

    /* the untouched value is a hit through a fresh node: the oracle works */
    struct kms_cache *b = shared_node("t-tamper:");
    expect(b, k, v);
    kms_cache_free(&b);

    uint8_t bad[256];
    for (size_t pos = 0; pos < glen; pos += 7) {
        memcpy(bad, good, glen);
        bad[pos] ^= 0x01;
        raw_set(r, name, bad, glen);
        b = shared_node("t-tamper:");
        expect(b, k, NULL);
        cr_assert_eq(state(b).bad_values, 1, "byte %zu flipped", pos);
        cr_assert_eq(state(b).link, KMS_REDIS_CONNECTED, "a bad value does not degrade the link");
        kms_cache_free(&b);
    }
    static const char *const garbage[] = {"", "x", "\x01", "not a sealed value at all, just text"};
    for (size_t i = 0; i < KMS_ARRAY_LEN(garbage); i++) {
        raw_set(r, name, garbage[i], strlen(garbage[i]));
        b = shared_node("t-tamper:");
        expect(b, k, NULL);
        kms_cache_free(&b);
    }
    /* truncated by one byte, one extra byte */
    raw_set(r, name, good, glen - 1);
    b = shared_node("t-tamper:");
    expect(b, k, NULL);
    kms_cache_free(&b);
    memcpy(bad, good, glen);
    bad[glen] = 0;
    raw_set(r, name, bad, glen + 1);
    b = shared_node("t-tamper:");
    expect(b, k, NULL);
    kms_cache_free(&b);
    /* wrong type: a list under the entry name */
    redisReply *d = redisCommand(r, "DEL %s", name);
    freeReplyObject(d);
    d = redisCommand(r, "RPUSH %s a b", name);
    freeReplyObject(d);
    b = shared_node("t-tamper:");
    expect(b, k, NULL);
    cr_assert_eq(state(b).bad_values, 1, "a WRONGTYPE error is a bad value, not a hit");
    kms_cache_free(&b);
    /* restored: a hit again */
    d = redisCommand(r, "DEL %s", name);
    freeReplyObject(d);
    raw_set(r, name, good, glen);
    b = shared_node("t-tamper:");
    expect(b, k, v);
    kms_cache_free(&b);

    /* the node that put it still has it locally */
    expect(a, k, v);
    redisFree(r);
    kms_secret_free(&v);
    kms_cache_free(&a);
}

Test(redis_cache, value_moved_to_another_name_is_a_miss)
{
    struct kms_cache *a = shared_node("t-move:");
    redisContext *r = raw_shared();
    uint8_t k1[KMS_CACHE_KEY_LEN], k2[KMS_CACHE_KEY_LEN];
    rand_key(k1);
    rand_key(k2);
    struct kms_secret *v1 = rand_secret(32), *v2 = rand_secret(32);
    put(a, k1, v1);
    char n1[256], n2[256];
    only_entry(r, "t-move:", n1, sizeof(n1));
    put(a, k2, v2);
    char **names = NULL;
    size_t n = scan(r, "t-move:g*", &names);
    cr_assert_eq(n, 2);
    snprintf(n2, sizeof(n2), "%s", strcmp(names[0], n1) == 0 ? names[1] : names[0]);
    free_names(names, n);
    uint8_t val[256];
    size_t len = raw_get(r, n1, val, sizeof(val));
    raw_set(r, n2, val, len); /* k1's sealed value under k2's name */
    struct kms_cache *b = shared_node("t-move:");
    expect(b, k2, NULL);
    cr_assert_eq(state(b).bad_values, 1, "the AAD (the name) does not match");
    expect(b, k1, v1);
    redisFree(r);
    kms_secret_free(&v1);
    kms_secret_free(&v2);
    kms_cache_free(&a);
    kms_cache_free(&b);
}

Test(redis_cache, another_cluster_key_misses)
{
    struct env e;
    read_env("shared", &e);
    struct node_opts oa = {.port = e.port, .prefix = "t-other:", .key_fill = 0x22};
    struct node_opts ob = {.port = e.port, .prefix = "t-other:", .key_fill = 0x33};
    struct kms_cache *a = node(&oa), *b = node(&ob);
    uint8_t k[KMS_CACHE_KEY_LEN];
    rand_key(k);
    struct kms_secret *v = rand_secret(32);
    put(a, k, v);
    expect(b, k, NULL);
    /* even with the right name, the value does not open under another key */
    redisContext *r = raw_shared();
    char name[256];
    only_entry(r, "t-other:", name, sizeof(name));
    uint8_t val[256];
    size_t len = raw_get(r, name, val, sizeof(val));
    put(b, k, v);
    redisReply *d = redisCommand(r, "KEYS t-other:g*");
    cr_assert_eq(d->elements, 2, "two cluster keys, two names");
    for (size_t i = 0; i < d->elements; i++)
        if (strcmp(d->element[i]->str, name) != 0)
            raw_set(r, d->element[i]->str, val, len);
    freeReplyObject(d);
    struct kms_cache *b2 = node(&ob);
    expect(b2, k, NULL);
    cr_assert_eq(state(b2).bad_values, 1);
    redisFree(r);
    kms_secret_free(&v);
    kms_cache_free(&a);
    kms_cache_free(&b);
    kms_cache_free(&b2);
}

Test(redis_cache, oversized_reply_is_a_miss_and_the_link_recovers)
{
    struct kms_cache *a = shared_node("t-big:");
    uint8_t k[KMS_CACHE_KEY_LEN], k2[KMS_CACHE_KEY_LEN];
    rand_key(k);
    rand_key(k2);
    struct kms_secret *v = rand_secret(32), *v2 = rand_secret(32);
    put(a, k, v);
    redisContext *r = raw_shared();
    char name[256];
    only_entry(r, "t-big:", name, sizeof(name));
    static const size_t sizes[] = {4097, 20000, 3u << 20};
    for (size_t i = 0; i < KMS_ARRAY_LEN(sizes); i++) {
        uint8_t *big = malloc(sizes[i]);
        cr_assert_not_null(big);
        memset(big, 'A', sizes[i]);
        big[0] = 1;
        raw_set(r, name, big, sizes[i]);
        free(big);
        struct kms_cache *b = shared_node("t-big:");
        uint64_t errors = state(b).errors;
        expect(b, k, NULL);
        cr_assert_gt(state(b).errors, errors, "an oversized reply counts as an error (%zu bytes)", sizes[i]);
        /* the next operation reconnects at once and works */
        put(a, k2, v2);
        expect(b, k2, v2);
        cr_assert_eq(state(b).link, KMS_REDIS_CONNECTED);
        cr_assert_eq(state(b).hits_redis, 1);
        kms_cache_free(&b);
    }
    redisFree(r);
    kms_secret_free(&v);
    kms_secret_free(&v2);
    kms_cache_free(&a);
}

/* ---- TTL, invalidation --------------------------------------------------------- */

Test(redis_cache, ttl_is_honoured)
{
    struct env e;
    read_env("shared", &e);
    struct node_opts no = {.port = e.port, .prefix = "t-ttl:", .ttl_s = 1};
    struct kms_cache *a = node(&no);
    uint8_t k[KMS_CACHE_KEY_LEN];
    rand_key(k);
    struct kms_secret *v = rand_secret(32);
    put(a, k, v);
    redisContext *r = raw_shared();
    char name[256];
    only_entry(r, "t-ttl:", name, sizeof(name));
    redisReply *t = redisCommand(r, "PTTL %s", name);
    cr_assert(t->type == REDIS_REPLY_INTEGER && t->integer > 0 && t->integer <= 1000, "PTTL %lld", t->integer);
    freeReplyObject(t);
    struct kms_cache *b = node(&no);
    expect(b, k, v);
    kms_cache_free(&b);
    usleep(1600 * 1000);
    b = node(&no);
    expect(b, k, NULL);
    kms_cache_free(&b);
    redisFree(r);
    kms_secret_free(&v);
    kms_cache_free(&a);
}

Test(redis_cache, invalidate_all_reaches_every_node)
{
    struct env e;
    read_env("shared", &e);
    struct node_opts no = {.port = e.port, .prefix = "t-inval:", .gen_check_ms = 50};
    struct kms_cache *a = node(&no), *b = node(&no);
    uint8_t k[KMS_CACHE_KEY_LEN];
    rand_key(k);
    struct kms_secret *v = rand_secret(32);
    put(a, k, v);
    expect(b, k, v); /* now in b's local tier too */
    uint64_t gen = state(a).generation;
    cr_assert_eq(kms_cache_redis_invalidate_all(a), KMS_OK);
    cr_assert_eq(state(a).generation, gen + 1);
    expect(a, k, NULL);
    usleep(120 * 1000);
    expect(b, k, NULL);
    cr_assert_eq(state(b).generation, gen + 1, "b read the new generation");
    /* a fresh put under the new generation is shared again */
    put(a, k, v);
    struct kms_cache *c = node(&no);
    expect(c, k, v);
    cr_assert_eq(state(c).hits_redis, 1);
    cr_assert_eq(kms_cache_redis_invalidate_all(NULL), KMS_ERR_INVALID_FIELD);
    kms_secret_free(&v);
    kms_cache_free(&a);
    kms_cache_free(&b);
    kms_cache_free(&c);
}

/* ---- outage and recovery ---------------------------------------------------------- */

Test(redis_cache, redis_stopped_then_restarted)
{
    struct env e;
    private_server("outage", NULL, &e);
    struct node_opts no = {.port = e.port, .prefix = "t-out:"};
    struct kms_cache *a = node(&no), *b = node(&no);
    uint8_t k1[KMS_CACHE_KEY_LEN], k2[KMS_CACHE_KEY_LEN], k3[KMS_CACHE_KEY_LEN];
    rand_key(k1);
    rand_key(k2);
    rand_key(k3);
    struct kms_secret *v1 = rand_secret(32), *v2 = rand_secret(32), *v3 = rand_secret(32);
    put(a, k1, v1);
    expect(b, k1, v1);

    stop_private("outage");
    expect(a, k1, v1); /* local tier */
    expect(b, k1, v1);
    put(a, k2, v2); /* no error to the caller */
    expect(a, k2, v2);
    expect(b, k2, NULL);
    for (int i = 0; i < 5; i++)
        expect(b, k3, NULL);
    cr_assert_eq(state(a).link, KMS_REDIS_DEGRADED);
    cr_assert_eq(state(b).link, KMS_REDIS_DEGRADED);
    cr_assert_gt(state(b).errors, 0);
    cr_assert_eq(kms_cluster_heartbeat(a, "a", "1", 10), KMS_ERR_BACKEND_UNAVAILABLE);
    struct kms_cache *c = node(&no); /* a node starting during the outage starts degraded */
    cr_assert_eq(state(c).link, KMS_REDIS_DEGRADED);

    private_server("outage", NULL, &e);
    cr_assert_eq(e.port, no.port, "restarted on the same port");
    /* backoff is at most 400 ms here: within 5 s both nodes are back */
    int shared = 0;
    for (int i = 0; i < 100 && !shared; i++) {
        put(a, k3, v3);
        struct kms_secret *got = NULL;
        if (kms_cache_get(b, k3, &got) == KMS_OK) {
            cr_assert(kms_secret_equal(got, v3));
            shared = 1;
        }
        kms_secret_free(&got);
        if (!shared)
            usleep(50 * 1000);
    }
    cr_assert(shared, "sharing resumed after the restart");
    cr_assert_eq(state(a).link, KMS_REDIS_CONNECTED);
    cr_assert_eq(state(b).link, KMS_REDIS_CONNECTED);
    cr_assert_geq(state(a).reconnects, 1);
    cr_assert_geq(state(b).reconnects, 1);
    expect(c, k3, v3);
    cr_assert_eq(state(c).reconnects, 0, "c never connected before: its first link is not a reconnect");
    kms_secret_free(&v1);
    kms_secret_free(&v2);
    kms_secret_free(&v3);
    kms_cache_free(&a);
    kms_cache_free(&b);
    kms_cache_free(&c);
    stop_private("outage");
}

/* ---- authentication ------------------------------------------------------------ */

Test(redis_cache, password_auth_and_wrong_password)
{
    struct env e;
    private_server("auth", "KMS_REDIS_PASSWORD=pw-Redis.1", &e);
    cr_assert_str_eq(e.password, "pw-Redis.1");
    struct node_opts good = {.port = e.port, .prefix = "t-auth:", .password = "pw-Redis.1"};
    struct node_opts wrong = {.port = e.port, .prefix = "t-auth:", .password = "pw-Redis.2"};
    struct node_opts none = {.port = e.port, .prefix = "t-auth:"};
    char url[256], url_user[256], url_bad[256];
    snprintf(url, sizeof(url), "redis://:pw-Redis%%2e1@127.0.0.1:%u/0", e.port);
    snprintf(url_user, sizeof(url_user), "redis://default:pw-Redis.1@127.0.0.1:%u", e.port);
    snprintf(url_bad, sizeof(url_bad), "redis://default:nope@127.0.0.1:%u/", e.port);
    struct node_opts by_url = {.url = url, .prefix = "t-auth:"};
    struct node_opts by_url_user = {.url = url_user, .prefix = "t-auth:"};
    struct node_opts by_url_bad = {.url = url_bad, .prefix = "t-auth:"};
    char url_file[256];
    snprintf(url_file, sizeof(url_file), "redis://default@127.0.0.1:%u", e.port);
    struct node_opts by_url_file = {.url = url_file, .prefix = "t-auth:", .password = "pw-Redis.1"};
    struct kms_cache *uf = node(&by_url_file);
    cr_assert_eq(state(uf).link, KMS_REDIS_CONNECTED, "user in the url, password from the secret file");
    kms_cache_free(&uf);

    struct kms_cache *a = node(&good), *w = node(&wrong), *n = node(&none);
    struct kms_cache *u = node(&by_url), *uu = node(&by_url_user), *ub = node(&by_url_bad);
    cr_assert_eq(state(a).link, KMS_REDIS_CONNECTED);
    cr_assert_eq(state(u).link, KMS_REDIS_CONNECTED);
    cr_assert_eq(state(uu).link, KMS_REDIS_CONNECTED);
    cr_assert_eq(state(w).link, KMS_REDIS_DEGRADED);
    cr_assert_eq(state(n).link, KMS_REDIS_DEGRADED);
    cr_assert_eq(state(ub).link, KMS_REDIS_DEGRADED);
    uint8_t k[KMS_CACHE_KEY_LEN];
    rand_key(k);
    struct kms_secret *v = rand_secret(32);
    put(a, k, v);
    expect(u, k, v);
    expect(uu, k, v);
    expect(w, k, NULL);
    expect(n, k, NULL);
    put(w, k, v); /* not an error; served locally */
    expect(w, k, v);
    cr_assert_eq(state(w).link, KMS_REDIS_DEGRADED);
    cr_assert_eq(state(w).hits_local, 1);
    kms_secret_free(&v);
    kms_cache_free(&a);
    kms_cache_free(&w);
    kms_cache_free(&n);
    kms_cache_free(&u);
    kms_cache_free(&uu);
    kms_cache_free(&ub);
    stop_private("auth");
}

/* ---- heartbeats ------------------------------------------------------------------ */

Test(redis_cache, heartbeats_are_listed)
{
    struct kms_cache *a = shared_node("t-hb:"), *b = shared_node("t-hb:");
    cr_assert_eq(kms_cluster_heartbeat(a, "node-1", "0.1.0", 30), KMS_OK);
    cr_assert_eq(kms_cluster_heartbeat(b, "node-2", "0.2.0+g1234", 30), KMS_OK);
    cr_assert_eq(kms_cluster_heartbeat(b, "node-2", "0.2.0+g1234", 30), KMS_OK); /* refresh: one entry */
    redisContext *r = raw_shared();
    raw_set(r, "t-hb:node:evil", "not json", 8);
    static const char dup[] = "{\"node\":\"x\",\"node\":\"y\",\"version\":\"1\",\"started\":1,\"last_seen\":1}";
    raw_set(r, "t-hb:node:dup", dup, sizeof(dup) - 1);
    static const char extra[] = "{\"node\":\"x\",\"version\":\"1\",\"started\":1,\"last_seen\":1,\"x\":1}";
    raw_set(r, "t-hb:node:extra", extra, sizeof(extra) - 1);
    static const char badname[] = "{\"node\":\"a b\",\"version\":\"1\",\"started\":1,\"last_seen\":1}";
    raw_set(r, "t-hb:node:badname", badname, sizeof(badname) - 1);
    redisReply *d = redisCommand(r, "RPUSH t-hb:node:list a");
    freeReplyObject(d);
    redisReply *t = redisCommand(r, "TTL t-hb:node:node-1");
    cr_assert(t->type == REDIS_REPLY_INTEGER && t->integer > 0 && t->integer <= 30);
    freeReplyObject(t);

    struct kms_cluster_node nodes[8];
    size_t n = 0;
    cr_assert_eq(kms_cluster_nodes(a, nodes, KMS_ARRAY_LEN(nodes), &n), KMS_OK);
    cr_assert_eq(n, 2, "two live nodes, the garbage skipped (got %zu)", n);
    int seen1 = 0, seen2 = 0;
    int64_t now = (int64_t)time(NULL);
    for (size_t i = 0; i < n; i++) {
        if (strcmp(nodes[i].name, "node-1") == 0) {
            seen1 = 1;
            cr_assert_str_eq(nodes[i].version, "0.1.0");
        } else if (strcmp(nodes[i].name, "node-2") == 0) {
            seen2 = 1;
            cr_assert_str_eq(nodes[i].version, "0.2.0+g1234");
        }
        cr_assert(nodes[i].last_seen >= now - 5 && nodes[i].last_seen <= now + 1);
        cr_assert(nodes[i].started <= nodes[i].last_seen);
    }
    cr_assert(seen1 && seen2);
    /* cap bounds the output */
    cr_assert_eq(kms_cluster_nodes(a, nodes, 1, &n), KMS_OK);
    cr_assert_eq(n, 1);
    /* bad input */
    cr_assert_eq(kms_cluster_heartbeat(a, "bad name", "1", 30), KMS_ERR_INVALID_FIELD);
    cr_assert_eq(kms_cluster_heartbeat(a, "", "1", 30), KMS_ERR_INVALID_FIELD);
    cr_assert_eq(kms_cluster_heartbeat(a, "n", "1\"}", 30), KMS_ERR_INVALID_FIELD);
    cr_assert_eq(kms_cluster_heartbeat(a, "n", "1", 0), KMS_ERR_INVALID_FIELD);
    cr_assert_eq(kms_cluster_heartbeat(NULL, "n", "1", 5), KMS_ERR_INVALID_FIELD);
    redisFree(r);
    kms_cache_free(&a);
    kms_cache_free(&b);
}

/* ---- options --------------------------------------------------------------------- */

static kms_rc url_rc(const char *url)
{
    struct node_opts no = {.url = url};
    struct kms_cache *c = NULL;
    kms_rc rc = try_node(&no, &c);
    kms_cache_free(&c);
    return rc;
}

Test(redis_cache, urls_are_parsed_strictly)
{
    static const char *const bad[] = {
        "rediss://",                         /* no host, no sentinels */
        "rediss://127.0.0.1:6379/x",
        "redis://@127.0.0.1",                /* empty user info */
        "http://127.0.0.1:6379",
        "redis:/127.0.0.1",
        "redis://",
        "redis://:6379",
        "redis://127.0.0.1:",
        "redis://127.0.0.1:0",
        "redis://127.0.0.1:65536",
        "redis://127.0.0.1:6x79",
        "redis://127.0.0.1:6379/abc",
        "redis://127.0.0.1:6379/10000",
        "redis://127.0.0.1:6379/1?timeout=1",
        "redis://127.0.0.1:6379/1/2",
        "redis://127.0.0.1:6379#x",
        "redis://user@127.0.0.1",            /* a user, and no password given */
        "redis://u:@127.0.0.1",              /* empty password */
        "redis://u:p@q@127.0.0.1",
        "redis://u:p%4@127.0.0.1",           /* truncated escape */
        "redis://u:p%zz@127.0.0.1",
        "redis://u:p%00q@127.0.0.1",         /* embedded NUL */
        "redis://127.0.0.1 :6379",
        "redis://[::1]:6379",
        " redis://127.0.0.1",
    };
    for (size_t i = 0; i < KMS_ARRAY_LEN(bad); i++)
        cr_assert_eq(url_rc(bad[i]), KMS_ERR_CONFIG, "accepted %s", bad[i]);
    char *huge = malloc(2000);
    cr_assert_not_null(huge);
    memcpy(huge, "redis://", 8);
    memset(huge + 8, 'a', 1990);
    huge[1998] = '\0';
    cr_assert_eq(url_rc(huge), KMS_ERR_CONFIG);
    free(huge);

    /* good ones (nothing listens on port 1: they start degraded) */
    static const char *const good[] = {"redis://127.0.0.1:1", "redis://127.0.0.1:1/", "redis://127.0.0.1:1/15",
                                       "redis://:pw@127.0.0.1:1/2", "redis://u:p%40ss@localhost:1",
                                       "rediss://127.0.0.1:1", "rediss://u:p@localhost:1/3"};
    for (size_t i = 0; i < KMS_ARRAY_LEN(good); i++)
        cr_assert_eq(url_rc(good[i]), KMS_OK, "refused %s: %s", good[i], kms_error_detail());
    /* the password is never in the error detail */
    cr_assert_eq(url_rc("redis://u:Sup3rSecret%zz@127.0.0.1"), KMS_ERR_CONFIG);
    cr_assert_null(strstr(kms_error_detail(), "Sup3rSecret"));
}

Test(redis_cache, options_are_checked)
{
    struct kms_cache *c = NULL, *local = NULL;
    struct kms_secret *ck = cluster_key(0x44), *short_key = NULL;
    cr_assert_eq(kms_secret_random(16, &short_key), KMS_OK);
    struct kms_redis_options base = {.port = 1, .cluster_key = ck};
    struct kms_redis_options o;

#define EXPECT_CONFIG(mutate)                                                  \
    do {                                                                       \
        o = base;                                                              \
        mutate;                                                                \
        cr_assert_eq(kms_cache_local_new(4, 0, 0, &local), KMS_OK);            \
        cr_assert_eq(kms_cache_redis_new(&o, local, &c), KMS_ERR_CONFIG, #mutate); \
        cr_assert_null(c);                                                     \
    } while (0)

    EXPECT_CONFIG(o.cluster_key = NULL);
    EXPECT_CONFIG(o.cluster_key = short_key);
    EXPECT_CONFIG(o.url = "redis://127.0.0.1:1");            /* and a port */
    EXPECT_CONFIG(o.prefix = "kms:*");
    EXPECT_CONFIG(o.prefix = "");
    EXPECT_CONFIG(o.prefix = "kms cache");
    EXPECT_CONFIG(o.node = "a/b");
    EXPECT_CONFIG(o.host = "127.0.0.1\r\nFLUSHALL");
    EXPECT_CONFIG(o.port = 70000);
    EXPECT_CONFIG(o.db = 10000);
    EXPECT_CONFIG(o.user = "alice"); /* a user without a password */
    EXPECT_CONFIG(o.backoff_min_ms = 500; o.backoff_max_ms = 100);
    EXPECT_CONFIG(o.connect_timeout_ms = 60001);
    EXPECT_CONFIG(o.ttl_s = 30u * 86400u + 1);
    /* no local tier */
    o = base;
    cr_assert_eq(kms_cache_redis_new(&o, NULL, &c), KMS_ERR_CONFIG);
    /* a good one, unreachable: created degraded, works locally */
    o = base;
    cr_assert_eq(kms_cache_local_new(4, 0, 0, &local), KMS_OK);
    cr_assert_eq(kms_cache_redis_new(&o, local, &c), KMS_OK);
    cr_assert_eq(state(c).link, KMS_REDIS_DEGRADED);
    uint8_t k[KMS_CACHE_KEY_LEN];
    rand_key(k);
    struct kms_secret *v = rand_secret(32);
    put(c, k, v);
    expect(c, k, v);
    cr_assert_eq(kms_cache_redis_invalidate_all(c), KMS_ERR_BACKEND_UNAVAILABLE);
    expect(c, k, NULL); /* the local tier was cleared all the same */
    struct kms_cluster_node nodes[2];
    size_t n = 5;
    cr_assert_eq(kms_cluster_nodes(c, nodes, 2, &n), KMS_ERR_BACKEND_UNAVAILABLE);
    cr_assert_eq(n, 0);
    /* state of something that is not a Redis cache */
    struct kms_redis_state s;
    kms_cache_redis_state(local, &s); /* local is owned by c now; only compared by ops */
    cr_assert_eq(s.link, KMS_REDIS_DEGRADED);
    kms_cache_redis_state(NULL, &s);
    cr_assert_eq(s.hits_local, 0);
    kms_secret_free(&v);
    kms_cache_free(&c);
    kms_secret_free(&ck);
    kms_secret_free(&short_key);
}

/* ---- TLS (rediss://) --------------------------------------------------------------- */

static size_t count_keys(unsigned plain_port, const char *password, const char *prefix)
{
    redisContext *r = raw(plain_port, password);
    char pattern[128], **names = NULL;
    snprintf(pattern, sizeof(pattern), "%s*", prefix);
    size_t n = scan(r, pattern, &names);
    free_names(names, n);
    redisFree(r);
    return n;
}

static void tls_server(const char *sub, const char *extra, struct env *e)
{
    char env[768], pki[512];
    snprintf(env, sizeof(env), "KMS_REDIS_TLS=%s %s", pki_path("", pki, sizeof(pki)), extra ? extra : "");
    private_server(sub, env, e);
    cr_assert_gt(e->tls_port, 0, "no TLS port in %s/redis.env", sub);
}

Test(redis_cache, tls_with_ca_verification)
{
    struct env e;
    tls_server("tls", NULL, &e);
    char url[128], url_name[128], url_plain[128];
    snprintf(url, sizeof(url), "rediss://127.0.0.1:%u", e.tls_port);
    snprintf(url_name, sizeof(url_name), "rediss://localhost:%u/0", e.tls_port); /* not in the SANs */
    snprintf(url_plain, sizeof(url_plain), "redis://127.0.0.1:%u", e.tls_port);
    struct node_opts good = {.url = url, .prefix = "t-tls:", .tls_ca = "ca.crt"};
    struct kms_cache *a = node(&good), *b = node(&good);
    cr_assert_eq(state(a).link, KMS_REDIS_CONNECTED, "rediss:// with the right CA");
    uint8_t k[KMS_CACHE_KEY_LEN];
    rand_key(k);
    struct kms_secret *v = rand_secret(32);
    put(a, k, v);
    expect(b, k, v);
    cr_assert_eq(state(b).hits_redis, 1, "served by Redis over TLS");
    cr_assert_eq(kms_cache_redis_invalidate_all(a), KMS_OK);
    cr_assert_eq(kms_cluster_heartbeat(a, "tls-node", "1", 30), KMS_OK);
    cr_assert_eq(count_keys(e.port, NULL, "t-tls:"), 3, "entry, generation and heartbeat reached Redis");

    /* fail closed: nothing is sent to a server that does not verify */
    struct node_opts wrong_ca = {.url = url, .prefix = "t-tls-ca:", .tls_ca = "other-ca.crt"};
    struct node_opts system_ca = {.url = url, .prefix = "t-tls-sys:"};
    struct node_opts wrong_name = {.url = url_name, .prefix = "t-tls-name:", .tls_ca = "ca.crt"};
    struct node_opts no_tls = {.url = url_plain, .prefix = "t-tls-plain:"};
    const struct node_opts *bad[] = {&wrong_ca, &system_ca, &wrong_name, &no_tls};
    for (size_t i = 0; i < KMS_ARRAY_LEN(bad); i++) {
        struct kms_cache *c = node(bad[i]);
        cr_assert_eq(state(c).link, KMS_REDIS_DEGRADED, "%s connected", bad[i]->prefix);
        put(c, k, v); /* not an error: served locally */
        expect(c, k, v);
        cr_assert_eq(kms_cluster_heartbeat(c, "x", "1", 30), KMS_ERR_BACKEND_UNAVAILABLE);
        cr_assert_eq(state(c).link, KMS_REDIS_DEGRADED);
        cr_assert_geq(state(c).errors, 1);
        cr_assert_eq(count_keys(e.port, NULL, bad[i]->prefix), 0, "%s: data reached Redis", bad[i]->prefix);
        kms_cache_free(&c);
    }
    kms_secret_free(&v);
    kms_cache_free(&a);
    kms_cache_free(&b);
    stop_private("tls");
}

Test(redis_cache, tls_client_certificate_when_redis_requires_one)
{
    struct env e;
    tls_server("mtls", "KMS_REDIS_TLS_AUTH_CLIENTS=yes", &e);
    char url[128];
    snprintf(url, sizeof(url), "rediss://127.0.0.1:%u/3", e.tls_port);
    struct node_opts with = {
        .url = url, .prefix = "t-mtls:", .tls_ca = "ca.crt", .tls_cert = "client.crt", .tls_key = "client.key"};
    struct node_opts without = {.url = url, .prefix = "t-mtls-no:", .tls_ca = "ca.crt"};
    struct kms_cache *a = node(&with), *n = node(&without);
    cr_assert_eq(state(a).link, KMS_REDIS_CONNECTED, "client certificate accepted");
    cr_assert_eq(state(n).link, KMS_REDIS_DEGRADED, "no client certificate: refused");
    uint8_t k[KMS_CACHE_KEY_LEN];
    rand_key(k);
    struct kms_secret *v = rand_secret(32);
    put(a, k, v);
    put(n, k, v);
    kms_cache_free(&a);
    struct kms_cache *b = node(&with);
    expect(b, k, v);
    cr_assert_eq(state(b).hits_redis, 1);
    redisContext *r = raw(e.port, NULL);
    redisReply *sel = redisCommand(r, "SELECT 3");
    freeReplyObject(sel);
    char **names = NULL;
    size_t cnt = scan(r, "t-mtls*", &names);
    cr_assert_eq(cnt, 1, "database 3 holds the one t-mtls: entry, nothing of t-mtls-no: (got %zu)", cnt);
    cr_assert_eq(strncmp(names[0], "t-mtls:g", 8), 0, "%s", names[0]);
    free_names(names, cnt);
    redisFree(r);

    /* the files are checked when the cache is made */
    struct node_opts cert_no_key = {.url = url, .tls_ca = "ca.crt", .tls_cert = "client.crt"};
    struct node_opts key_no_cert = {.url = url, .tls_ca = "ca.crt", .tls_key = "client.key"};
    struct node_opts mismatch = {.url = url, .tls_ca = "ca.crt", .tls_cert = "client.crt", .tls_key = "server.key"};
    struct node_opts missing_ca = {.url = url, .tls_ca = "nope.crt"};
    struct node_opts garbage_ca = {.url = url, .tls_ca = "client.key"};
    char plain[128];
    snprintf(plain, sizeof(plain), "redis://127.0.0.1:%u", e.port);
    struct node_opts files_no_tls = {.url = plain, .tls_ca = "ca.crt"};
    const struct node_opts *bad[] = {&cert_no_key, &key_no_cert, &mismatch, &missing_ca, &garbage_ca, &files_no_tls};
    for (size_t i = 0; i < KMS_ARRAY_LEN(bad); i++) {
        struct kms_cache *c = NULL;
        cr_assert_eq(try_node(bad[i], &c), KMS_ERR_CONFIG, "case %zu accepted", i);
        cr_assert_null(c);
    }
    kms_secret_free(&v);
    kms_cache_free(&b);
    kms_cache_free(&n);
    stop_private("mtls");
}

/* ---- Sentinel ------------------------------------------------------------------- */

/* Runs cmd on a raw connection to port until the reply satisfies ok, for at
 * most limit_ms; 1 when it did. */
static int wait_reply(unsigned port, const char *password, const char *cmd, int (*ok)(const redisReply *, const void *),
                      const void *arg, int limit_ms)
{
    for (int waited = 0; waited <= limit_ms; waited += 100) {
        struct timeval tv = {1, 0};
        redisContext *r = redisConnectWithTimeout("127.0.0.1", (int)port, tv);
        int done = 0;
        if (r != NULL && r->err == 0) {
            redisSetTimeout(r, tv);
            if (password != NULL)
                freeReplyObject(redisCommand(r, "AUTH %s", password));
            redisReply *rep = redisCommand(r, cmd);
            done = rep != NULL && ok(rep, arg);
            freeReplyObject(rep);
        }
        redisFree(r);
        if (done)
            return 1;
        usleep(100 * 1000);
    }
    return 0;
}

static int has_replica(const redisReply *r, const void *arg)
{
    (void)arg; /* SENTINEL replicas: one map per replica; flags exactly "slave" (not down) */
    if (r->type != REDIS_REPLY_ARRAY || r->elements < 1 || r->element[0]->type != REDIS_REPLY_ARRAY)
        return 0;
    const redisReply *m = r->element[0];
    for (size_t i = 0; i + 1 < m->elements; i += 2)
        if (strcmp(m->element[i]->str, "flags") == 0)
            return strcmp(m->element[i + 1]->str, "slave") == 0;
    return 0;
}

static int link_up(const redisReply *r, const void *arg)
{
    (void)arg;
    return r->type == REDIS_REPLY_STRING && strstr(r->str, "master_link_status:up") != NULL;
}

static int master_port_is(const redisReply *r, const void *arg)
{
    char want[16];
    snprintf(want, sizeof(want), "%u", *(const unsigned *)arg);
    return r->type == REDIS_REPLY_ARRAY && r->elements == 2 && strcmp(r->element[1]->str, want) == 0;
}

/* Primary + replica + sentinel, all in subdirectories prefix-*; tls: over
 * TLS only. Fills the plain ports (or TLS ports when tls) and the sentinel's. */
static void sentinel_setup(const char *prefix, int tls, const char *password, unsigned *master, unsigned *replica,
                           unsigned *sentinel)
{
    char sub[64], extra[1024], pki[512], common[768];
    struct env m, r, s;
    pki_path("", pki, sizeof(pki));
    snprintf(common, sizeof(common), "%s%s%s%s", tls ? "KMS_REDIS_TLS_ONLY=1 KMS_REDIS_TLS=" : "", tls ? pki : "",
             password ? " KMS_REDIS_PASSWORD=" : "", password ? password : "");
    snprintf(sub, sizeof(sub), "%s-master", prefix);
    private_server(sub, common, &m);
    snprintf(sub, sizeof(sub), "%s-replica", prefix);
    snprintf(extra, sizeof(extra), "%s KMS_REDIS_REPLICAOF='127.0.0.1 %u'", common, m.port);
    private_server(sub, extra, &r);
    snprintf(sub, sizeof(sub), "%s-sentinel", prefix);
    snprintf(extra, sizeof(extra), "%s KMS_REDIS_SENTINEL='kmsmaster 127.0.0.1 %u' KMS_REDIS_SENTINEL_PASSWORD=pw-sentinel",
             common, m.port);
    private_server(sub, extra, &s);
    *master = m.port;
    *replica = r.port;
    *sentinel = s.port;
}

Test(redis_cache, sentinel_finds_the_master_and_follows_a_failover)
{
    unsigned mport, rport, sport;
    sentinel_setup("s", 0, "pw-master", &mport, &rport, &sport);
    /* why: the sentinel can only promote a replica it knows and that is in sync */
    cr_assert(wait_reply(rport, "pw-master", "INFO replication", link_up, NULL, 15000), "replica never synced");
    cr_assert(wait_reply(sport, "pw-sentinel", "SENTINEL replicas kmsmaster", has_replica, NULL, 15000),
              "the sentinel never saw the replica");
    char sentinels[128];
    /* the first sentinel is down: the next one is asked */
    snprintf(sentinels, sizeof(sentinels), "127.0.0.1:1, 127.0.0.1:%u", sport);
    struct node_opts no = {.url = "redis://",
                           .prefix = "t-sen:",
                           .password = "pw-master",
                           .sentinels = sentinels,
                           .sentinel_master = "kmsmaster",
                           .sentinel_password = "pw-sentinel"};
    struct kms_cache *a = node(&no), *b = node(&no);
    cr_assert_eq(state(a).link, KMS_REDIS_CONNECTED, "the sentinel named the master");
    uint8_t k1[KMS_CACHE_KEY_LEN], k2[KMS_CACHE_KEY_LEN];
    rand_key(k1);
    rand_key(k2);
    struct kms_secret *v1 = rand_secret(32), *v2 = rand_secret(32);
    put(a, k1, v1);
    expect(b, k1, v1);
    cr_assert_eq(count_keys(mport, "pw-master", "t-sen:g"), 1, "written to the master");
    /* a node with the wrong sentinel password or master name finds nothing */
    struct node_opts bad_pw = no, bad_name = no;
    bad_pw.sentinel_password = "nope";
    bad_name.sentinel_master = "other";
    struct kms_cache *x = node(&bad_pw), *y = node(&bad_name);
    cr_assert_eq(state(x).link, KMS_REDIS_DEGRADED);
    cr_assert_eq(state(y).link, KMS_REDIS_DEGRADED);
    kms_cache_free(&x);
    kms_cache_free(&y);

    stop_private("s-master");
    cr_assert(wait_reply(sport, "pw-sentinel", "SENTINEL get-master-addr-by-name kmsmaster", master_port_is, &rport,
                         30000),
              "no failover within 30 s");
    int shared = 0;
    for (int i = 0; i < 100 && !shared; i++) { /* backoff is at most 400 ms */
        put(a, k2, v2);
        struct kms_secret *got = NULL;
        if (kms_cache_get(b, k2, &got) == KMS_OK) {
            cr_assert(kms_secret_equal(got, v2));
            shared = 1;
        }
        kms_secret_free(&got);
        if (!shared)
            usleep(50 * 1000);
    }
    cr_assert(shared, "the nodes did not follow the failover");
    cr_assert_eq(state(a).link, KMS_REDIS_CONNECTED);
    cr_assert_geq(state(a).reconnects, 1);
    cr_assert_geq(state(b).reconnects, 1);
    cr_assert_eq(count_keys(rport, "pw-master", "t-sen:g"), 2, "both entries are on the promoted replica");
    cr_assert_eq(kms_cache_redis_invalidate_all(a), KMS_OK);
    kms_secret_free(&v1);
    kms_secret_free(&v2);
    kms_cache_free(&a);
    kms_cache_free(&b);
    stop_private("s-replica");
    stop_private("s-sentinel");
}

Test(redis_cache, sentinel_over_tls)
{
    unsigned mport, rport, sport;
    sentinel_setup("ts", 1, NULL, &mport, &rport, &sport);
    char sentinels[64];
    snprintf(sentinels, sizeof(sentinels), "127.0.0.1:%u", sport);
    struct node_opts no = {.url = "rediss:///2",
                           .prefix = "t-tsen:",
                           .tls_ca = "ca.crt",
                           .sentinels = sentinels,
                           .sentinel_master = "kmsmaster",
                           .sentinel_password = "pw-sentinel"};
    struct kms_cache *a = node(&no), *b = node(&no);
    cr_assert_eq(state(a).link, KMS_REDIS_CONNECTED, "sentinel and master over TLS");
    uint8_t k[KMS_CACHE_KEY_LEN];
    rand_key(k);
    struct kms_secret *v = rand_secret(32);
    put(a, k, v);
    expect(b, k, v);
    cr_assert_eq(state(b).hits_redis, 1);
    struct node_opts plain = no, wrong_ca = no;
    plain.url = "redis:///2";
    plain.tls_ca = NULL;
    wrong_ca.tls_ca = "other-ca.crt";
    struct kms_cache *p = node(&plain), *w = node(&wrong_ca);
    cr_assert_eq(state(p).link, KMS_REDIS_DEGRADED, "plain TCP to a TLS sentinel");
    cr_assert_eq(state(w).link, KMS_REDIS_DEGRADED, "a sentinel that does not verify");
    kms_cache_free(&p);
    kms_cache_free(&w);
    kms_secret_free(&v);
    kms_cache_free(&a);
    kms_cache_free(&b);
    stop_private("ts-master");
    stop_private("ts-replica");
    stop_private("ts-sentinel");
}

static kms_rc sentinel_rc(const char *url, const char *sentinels, const char *master)
{
    struct node_opts no = {.url = url, .sentinels = sentinels, .sentinel_master = master};
    struct kms_cache *c = NULL;
    kms_rc rc = try_node(&no, &c);
    kms_cache_free(&c);
    return rc;
}

Test(redis_cache, sentinel_options_are_checked)
{
    static const struct {
        const char *url, *sentinels, *master;
    } bad[] = {
        {"redis://", "127.0.0.1:1", NULL},                    /* no master name */
        {"redis://", "127.0.0.1:1", ""},
        {"redis://", "127.0.0.1:1", "a b"},
        {"redis://127.0.0.1:6379", "127.0.0.1:1", "m"},       /* a host as well */
        {"redis://:6379", "127.0.0.1:1", "m"},
        {"redis://", "", "m"},
        {"redis://", "127.0.0.1", "m"},
        {"redis://", "127.0.0.1:0", "m"},
        {"redis://", "127.0.0.1:65536", "m"},
        {"redis://", ":1", "m"},
        {"redis://", "127.0.0.1:1,", "m"},
        {"redis://", "127.0.0.1:1,,127.0.0.1:2", "m"},
        {"redis://", "a:1,a:2,a:3,a:4,a:5,a:6,a:7,a:8,a:9", "m"}, /* more than 8 */
        {"redis://", "[::1]:1", "m"},
        {"redis://", "a b:1", "m"},
        {"redis://", "a:1x", "m"},
        {NULL, NULL, "m"},                                    /* a master name without sentinels */
    };
    for (size_t i = 0; i < KMS_ARRAY_LEN(bad); i++)
        cr_assert_eq(sentinel_rc(bad[i].url, bad[i].sentinels, bad[i].master), KMS_ERR_CONFIG, "case %zu accepted", i);
    /* nothing listens on port 1: accepted, degraded */
    cr_assert_eq(sentinel_rc("redis://", "127.0.0.1:1", "m"), KMS_OK, "%s", kms_error_detail());
    cr_assert_eq(sentinel_rc("rediss://kmsd:pw@/3", "localhost:1, 127.0.0.1:2,x.example:3", "my-master.1"), KMS_OK,
                 "%s", kms_error_detail());
    cr_assert_eq(sentinel_rc("redis://", "a:1,a:2,a:3,a:4,a:5,a:6,a:7,a:8", "m"), KMS_OK);
}

/* ---- golden value (tests/golden/cache-value.txt, issue 13) ------------------ */

/* A value as kmsd 0.2.0 put it in Redis (cluster key cluster_key(0x11), prefix
 * "golden:"), read back by this version: a change of the entry name or of the
 * sealed layout would strand every value a not-yet-upgraded node wrote. */
#define GOLDEN_PREFIX "golden:"

static void golden_field(const char *name, char *out, size_t cap)
{
    const char *src = getenv("KMS_SOURCE_DIR");
    cr_assert_not_null(src);
    char path[512], line[1024];
    snprintf(path, sizeof(path), "%s/tests/golden/cache-value.txt", src);
    FILE *f = fopen(path, "r");
    cr_assert_not_null(f, "cannot open %s", path);
    size_t nlen = strlen(name);
    int found = 0;
    while (!found && fgets(line, sizeof(line), f) != NULL)
        if (strncmp(line, name, nlen) == 0 && strncmp(line + nlen, " = ", 3) == 0) {
            line[strcspn(line, "\n")] = '\0';
            snprintf(out, cap, "%s", line + nlen + 3);
            found = 1;
        }
    fclose(f);
    cr_assert(found, "%s has no %s", path, name);
}

static size_t unhex(const char *hex, uint8_t *out, size_t cap)
{
    size_t n = strlen(hex) / 2;
    cr_assert(n <= cap);
    for (size_t i = 0; i < n; i++) {
        unsigned v;
        char two[3] = {hex[2 * i], hex[2 * i + 1], 0};
        v = (unsigned)strtoul(two, NULL, 16);
        out[i] = (uint8_t)v;
    }
    return n;
}

Test(redis_cache, golden_value_of_0_2_0_still_reads)
{
    char name[256], value_hex[512], key_hex[128], plain_hex[256];
    golden_field("entry_name", name, sizeof(name));
    golden_field("value_hex", value_hex, sizeof(value_hex));
    golden_field("cache_key_hex", key_hex, sizeof(key_hex));
    golden_field("plaintext_hex", plain_hex, sizeof(plain_hex));
    uint8_t value[256], key[KMS_CACHE_KEY_LEN], plain[128];
    size_t vlen = unhex(value_hex, value, sizeof(value));
    cr_assert_eq(unhex(key_hex, key, sizeof(key)), KMS_CACHE_KEY_LEN);
    size_t plen = unhex(plain_hex, plain, sizeof(plain));

    struct env e;
    read_env("shared", &e);
    redisContext *r = raw(e.port, NULL);
    redisReply *rep = redisCommand(r, "SET %s %b", name, value, vlen);
    cr_assert(rep != NULL && rep->type == REDIS_REPLY_STATUS);
    freeReplyObject(rep);
    redisFree(r);

    struct node_opts no = {.port = e.port, .prefix = GOLDEN_PREFIX, .key_fill = 0x11};
    struct kms_cache *c = node(&no);
    struct kms_secret *want = NULL;
    cr_assert_eq(kms_secret_from(plain, plen, &want), KMS_OK);
    expect(c, key, want);
    kms_secret_free(&want);
    kms_cache_free(&c);
}

/* KMS_GOLDEN_WRITE=DIR: puts a value through a node and writes DIR/cache-value.txt. */
Test(redis_cache, golden_write)
{
    const char *dir = getenv("KMS_GOLDEN_WRITE");
    if (dir == NULL)
        cr_skip_test("set KMS_GOLDEN_WRITE=DIR to write a new golden cache value");
    struct env e;
    read_env("shared", &e);
    struct node_opts no = {.port = e.port, .prefix = GOLDEN_PREFIX, .key_fill = 0x11};
    struct kms_cache *c = node(&no);
    uint8_t key[KMS_CACHE_KEY_LEN];
    for (size_t i = 0; i < sizeof(key); i++)
        key[i] = (uint8_t)(0xC0 + i);
    static const uint8_t plain[] = "golden customer key of 0.2.0 :)";
    struct kms_secret *v = NULL;
    cr_assert_eq(kms_secret_from(plain, sizeof(plain) - 1, &v), KMS_OK);
    put(c, key, v);
    kms_secret_free(&v);
    kms_cache_free(&c);
    redisContext *r = raw(e.port, NULL);
    redisReply *keys = redisCommand(r, "KEYS %sg*", GOLDEN_PREFIX);
    cr_assert(keys != NULL && keys->type == REDIS_REPLY_ARRAY && keys->elements == 1);
    redisReply *val = redisCommand(r, "GET %s", keys->element[0]->str);
    cr_assert(val != NULL && val->type == REDIS_REPLY_STRING);
    char path[512], hex[1024];
    snprintf(path, sizeof(path), "%s/cache-value.txt", dir);
    FILE *f = fopen(path, "w");
    cr_assert_not_null(f);
    fprintf(f, "# A distributed-cache value as kmsd 0.2.0 wrote it to Redis: cluster key 0xA5 then\n"
               "# 31 bytes 0x11, prefix " GOLDEN_PREFIX " (tests/integration/test_redis_cache.c). Test data only.\n");
    fprintf(f, "entry_name = %s\n", keys->element[0]->str);
    kms_hex_encode((const uint8_t *)val->str, val->len, hex, sizeof(hex));
    fprintf(f, "value_hex = %s\n", hex);
    kms_hex_encode(key, sizeof(key), hex, sizeof(hex));
    fprintf(f, "cache_key_hex = %s\n", hex);
    kms_hex_encode(plain, sizeof(plain) - 1, hex, sizeof(hex));
    fprintf(f, "plaintext_hex = %s\n", hex);
    fclose(f);
    freeReplyObject(val);
    freeReplyObject(keys);
    redisFree(r);
}
