#include "cluster/keystore_dist.h"

#include <hiredis/hiredis.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cluster/redis_cache.h"
#include "cluster/redis_conn.h"

#define NAME_LEN 160
#define SMALL_REPLY 4096

struct kms_ksdist {
    struct kms_redis_conn *conn;
    char seq[NAME_LEN], head[NAME_LEN], gens[NAME_LEN], blob_prefix[NAME_LEN], channel[NAME_LEN];
};

/* Publish: KEYS = head, blob, gens list; ARGV = base, gen, blob, channel,
 * keep, blob prefix. Atomic in Redis, so two operators editing at once
 * cannot lose each other's change. */
static const char PUBLISH_LUA[] =
    "local cur = tonumber(redis.call('GET', KEYS[1]) or '0')\n"
    "if cur ~= tonumber(ARGV[1]) then return redis.error_reply('CONFLICT ' .. cur) end\n"
    "redis.call('SET', KEYS[2], ARGV[3])\n"
    "redis.call('SET', KEYS[1], ARGV[2])\n"
    "redis.call('LPUSH', KEYS[3], ARGV[2])\n"
    "while redis.call('LLEN', KEYS[3]) > tonumber(ARGV[5]) do\n"
    "  local old = redis.call('RPOP', KEYS[3])\n"
    "  redis.call('DEL', ARGV[6] .. old)\n"
    "end\n"
    "redis.call('PUBLISH', ARGV[4], ARGV[2])\n"
    "return cur\n";

/* Reserve: KEYS = seq, head; ARGV = floor. */
static const char RESERVE_LUA[] = "local s = redis.call('INCR', KEYS[1])\n"
                                  "local h = tonumber(redis.call('GET', KEYS[2]) or '0')\n"
                                  "local f = tonumber(ARGV[1])\n"
                                  "if h > f then f = h end\n"
                                  "if s <= f then s = f + 1; redis.call('SET', KEYS[1], s) end\n"
                                  "return s\n";

static kms_rc names(struct kms_ksdist *d, const char *prefix)
{
    snprintf(d->seq, sizeof(d->seq), "%sks:seq", prefix);
    snprintf(d->head, sizeof(d->head), "%sks:head", prefix);
    snprintf(d->gens, sizeof(d->gens), "%sks:gens", prefix);
    snprintf(d->blob_prefix, sizeof(d->blob_prefix), "%sks:g:", prefix);
    snprintf(d->channel, sizeof(d->channel), "%sks:events", prefix);
    return KMS_OK;
}

static kms_rc open_conn(struct kms_cache *c, struct kms_ksdist **out)
{
    *out = calloc(1, sizeof(**out));
    if (*out == NULL)
        return kms_fail(KMS_ERR_NO_MEMORY, "keystore distribution");
    kms_rc rc = kms_cluster_connect(c, &(*out)->conn);
    if (rc == KMS_OK)
        rc = names(*out, kms_cluster_prefix(c));
    if (rc != KMS_OK)
        kms_ksdist_free(out);
    return rc;
}

kms_rc kms_ksdist_open(struct kms_cache *c, struct kms_ksdist **out)
{
    return open_conn(c, out);
}

void kms_ksdist_free(struct kms_ksdist **p)
{
    if (*p == NULL)
        return;
    kms_redis_conn_free(&(*p)->conn);
    free(*p);
    *p = NULL;
}

static kms_rc unavailable(struct kms_ksdist *d, const char *what)
{
    return kms_fail(KMS_ERR_BACKEND_UNAVAILABLE, "redis: %s failed: %s", what, kms_redis_conn_error(d->conn));
}

/* One command whose reply is a generation number. */
static kms_rc gen_command(struct kms_ksdist *d, const char *what, int argc, const char **argv, const size_t *lens,
                          uint64_t *gen)
{
    redisReply *r = kms_redis_conn_command(d->conn, argc, argv, lens, SMALL_REPLY);
    if (r == NULL)
        return unavailable(d, what);
    kms_rc rc = KMS_OK;
    if (r->type == REDIS_REPLY_ERROR)
        rc = kms_fail(KMS_ERR_BACKEND_UNAVAILABLE, "redis: %s refused: %.*s", what, (int)(r->len > 200 ? 200 : r->len),
                      r->str);
    else if (kms_redis_reply_u64(r, gen) != 0)
        rc = kms_fail(KMS_ERR_BACKEND_UNAVAILABLE, "redis: %s: not a generation number", what);
    freeReplyObject(r);
    return rc;
}

kms_rc kms_ksdist_head(struct kms_ksdist *d, uint64_t *gen)
{
    *gen = 0;
    const char *argv[] = {"GET", d->head};
    size_t lens[] = {3, strlen(d->head)};
    return gen_command(d, "GET head", 2, argv, lens, gen);
}

kms_rc kms_ksdist_fetch(struct kms_ksdist *d, uint64_t gen, uint8_t **blob, size_t *len)
{
    *blob = NULL;
    *len = 0;
    char name[NAME_LEN + 24];
    snprintf(name, sizeof(name), "%s%llu", d->blob_prefix, (unsigned long long)gen);
    const char *argv[] = {"GET", name};
    size_t lens[] = {3, strlen(name)};
    redisReply *r = kms_redis_conn_command(d->conn, 2, argv, lens, KMS_CLUSTER_BLOB_MAX + 64);
    if (r == NULL)
        return unavailable(d, "GET generation");
    kms_rc rc = KMS_OK;
    if (r->type == REDIS_REPLY_NIL)
        rc = kms_fail(KMS_ERR_NOT_FOUND, "redis has no keystore generation %llu (pruned, or never published)",
                      (unsigned long long)gen);
    else if (r->type != REDIS_REPLY_STRING || r->len == 0)
        rc = kms_fail(KMS_ERR_BACKEND_UNAVAILABLE, "redis: generation %llu is not a string",
                      (unsigned long long)gen);
    else if ((*blob = malloc(r->len)) == NULL)
        rc = kms_fail(KMS_ERR_NO_MEMORY, "keystore generation");
    else {
        memcpy(*blob, r->str, r->len);
        *len = r->len;
    }
    freeReplyObject(r);
    return rc;
}

kms_rc kms_ksdist_reserve(struct kms_ksdist *d, uint64_t floor, uint64_t *gen)
{
    char f[24];
    snprintf(f, sizeof(f), "%llu", (unsigned long long)floor);
    const char *argv[] = {"EVAL", RESERVE_LUA, "2", d->seq, d->head, f};
    size_t lens[] = {4, strlen(RESERVE_LUA), 1, strlen(d->seq), strlen(d->head), strlen(f)};
    return gen_command(d, "reserving a generation", 6, argv, lens, gen);
}

kms_rc kms_ksdist_publish(struct kms_ksdist *d, uint64_t base, uint64_t gen, const uint8_t *blob, size_t len,
                          unsigned keep)
{
    char name[NAME_LEN + 24], b[24], g[24], k[16];
    snprintf(name, sizeof(name), "%s%llu", d->blob_prefix, (unsigned long long)gen);
    snprintf(b, sizeof(b), "%llu", (unsigned long long)base);
    snprintf(g, sizeof(g), "%llu", (unsigned long long)gen);
    snprintf(k, sizeof(k), "%u", keep < 2 ? 2 : keep);
    const char *argv[] = {"EVAL", PUBLISH_LUA, "3",  d->head, name, d->gens, b, g, (const char *)blob,
                          d->channel, k, d->blob_prefix};
    size_t lens[] = {4, strlen(PUBLISH_LUA), 1, strlen(d->head), strlen(name), strlen(d->gens), strlen(b),
                     strlen(g), len, strlen(d->channel), strlen(k), strlen(d->blob_prefix)};
    redisReply *r = kms_redis_conn_command(d->conn, 12, argv, lens, SMALL_REPLY);
    if (r == NULL)
        return unavailable(d, "publishing the generation");
    kms_rc rc = KMS_OK;
    if (r->type == REDIS_REPLY_ERROR && r->len > 9 && memcmp(r->str, "CONFLICT ", 9) == 0)
        rc = kms_fail(KMS_ERR_CONFLICT,
                      "the cluster keystore changed meanwhile (now generation %.*s, this edit started from %s); "
                      "nothing was published: run the command again",
                      (int)(r->len - 9 > 20 ? 20 : r->len - 9), r->str + 9, b);
    else if (r->type == REDIS_REPLY_ERROR)
        rc = kms_fail(KMS_ERR_BACKEND_UNAVAILABLE, "redis refused the publish script: %.*s",
                      (int)(r->len > 200 ? 200 : r->len), r->str);
    freeReplyObject(r);
    return rc;
}

kms_rc kms_ksdist_list(struct kms_ksdist *d, uint64_t *gens, size_t cap, size_t *n)
{
    *n = 0;
    const char *argv[] = {"LRANGE", d->gens, "0", "-1"};
    size_t lens[] = {6, strlen(d->gens), 1, 2};
    redisReply *r = kms_redis_conn_command(d->conn, 4, argv, lens, 64 * 1024);
    if (r == NULL)
        return unavailable(d, "LRANGE generations");
    kms_rc rc = KMS_OK;
    if (r->type != REDIS_REPLY_ARRAY)
        rc = kms_fail(KMS_ERR_BACKEND_UNAVAILABLE, "redis: the generation list is not a list");
    for (size_t i = 0; rc == KMS_OK && i < r->elements && *n < cap; i++)
        if (kms_redis_reply_u64(r->element[i], &gens[*n]) == 0 && gens[*n] > 0)
            (*n)++;
    freeReplyObject(r);
    return rc;
}

kms_rc kms_ksdist_subscribe(struct kms_cache *c, struct kms_ksdist **out)
{
    KMS_GUARD(open_conn(c, out));
    const char *argv[] = {"SUBSCRIBE", (*out)->channel};
    size_t lens[] = {9, strlen((*out)->channel)};
    redisReply *r = kms_redis_conn_command((*out)->conn, 2, argv, lens, SMALL_REPLY);
    int ok = r != NULL && r->type == REDIS_REPLY_ARRAY && r->elements == 3 &&
             r->element[0]->type == REDIS_REPLY_STRING && r->element[0]->len == 9 &&
             memcmp(r->element[0]->str, "subscribe", 9) == 0;
    freeReplyObject(r);
    if (!ok) {
        kms_rc rc = unavailable(*out, "SUBSCRIBE");
        kms_ksdist_free(out);
        return rc;
    }
    return KMS_OK;
}

int kms_ksdist_wait(struct kms_ksdist *d, unsigned timeout_ms, uint64_t *gen)
{
    *gen = 0;
    redisReply *r = NULL;
    int w = kms_redis_conn_wait(d->conn, timeout_ms, SMALL_REPLY, &r);
    if (w <= 0)
        return w;
    /* ["message", channel, payload]; anything else is ignored */
    int hit = r->type == REDIS_REPLY_ARRAY && r->elements == 3 && r->element[0]->type == REDIS_REPLY_STRING &&
              r->element[0]->len == 7 && memcmp(r->element[0]->str, "message", 7) == 0 &&
              kms_redis_reply_u64(r->element[2], gen) == 0;
    freeReplyObject(r);
    return hit ? 1 : 0;
}
