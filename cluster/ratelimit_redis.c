/* Rate-limit buckets in Redis (ratelimit_redis.h). */
#include "cluster/ratelimit_redis.h"

#include <hiredis/hiredis.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cluster/redis_cache.h"
#include "cluster/redis_conn.h"
#include "common/clock.h"
#include "common/log.h"

#define NODES_REFRESH_S 10
#define REPLY_MAX 4096

/* KEYS[1] the bucket; ARGV: microseconds per token, burst tolerance in
 * microseconds, tokens wanted. Returns {granted, retry_us}. The theoretical
 * arrival time is kept as a decimal string (a Lua number would be written
 * in exponent form and lose digits) and expires once the bucket is full. */
static const char LEASE_LUA[] =
    "local t = redis.call('TIME')\n"
    "local now = tonumber(t[1]) * 1000000 + tonumber(t[2])\n"
    "local T, tau, want = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])\n"
    "local tat = tonumber(redis.call('GET', KEYS[1]) or now) or now\n"
    "if tat < now then tat = now end\n"
    "if now + tau < tat then return {0, tat - tau - now} end\n"
    "local avail = math.floor((now + tau - tat) / T) + 1\n"
    "local grant = math.min(want, avail)\n"
    "tat = tat + grant * T\n"
    "redis.call('SET', KEYS[1], string.format('%.0f', tat), 'PX', math.floor((tat - now) / 1000) + 1000)\n"
    "return {grant, 0}\n";

struct kms_rl_redis {
    struct kms_cache *cache;
    struct kms_redis_conn *conn; /* NULL until needed, or after a failure */
    char prefix[96];
    unsigned nodes;             /* atomic */
    time_t nodes_at;
    int logged_down;
};

static void refresh_nodes(struct kms_rl_redis *r)
{
    time_t now = time(NULL);
    if (r->nodes_at != 0 && now - r->nodes_at < NODES_REFRESH_S)
        return;
    r->nodes_at = now;
    struct kms_cluster_node nodes[64];
    size_t n = 0;
    if (kms_cluster_nodes(r->cache, nodes, 64, &n) == KMS_OK && n > 0)
        __atomic_store_n(&r->nodes, (unsigned)n, __ATOMIC_RELAXED);
}

static int lease(void *ctx, const char *key, uint64_t T_us, uint64_t tau_us, unsigned want, unsigned *granted,
                 uint64_t *retry_us)
{
    struct kms_rl_redis *r = ctx;
    refresh_nodes(r);
    if (r->conn == NULL && kms_cluster_connect(r->cache, &r->conn) != KMS_OK) {
        if (!r->logged_down)
            kms_log(KMS_LOG_WARN, "ratelimit.degraded", NULL, "detail", kms_error_detail(), "fallback",
                    "each node keeps its share of every budget", NULL);
        r->logged_down = 1;
        return -1;
    }
    char name[256], t[24], tau[24], w[16];
    (void)snprintf(name, sizeof(name), "%srl:%s", r->prefix, key);
    (void)snprintf(t, sizeof(t), "%llu", (unsigned long long)T_us);
    (void)snprintf(tau, sizeof(tau), "%llu", (unsigned long long)tau_us);
    (void)snprintf(w, sizeof(w), "%u", want);
    const char *argv[] = {"EVAL", LEASE_LUA, "1", name, t, tau, w};
    size_t lens[] = {4, sizeof(LEASE_LUA) - 1, 1, strlen(name), strlen(t), strlen(tau), strlen(w)};
    redisReply *rep = kms_redis_conn_command(r->conn, 7, argv, lens, REPLY_MAX);
    int ok = rep != NULL && rep->type == REDIS_REPLY_ARRAY && rep->elements == 2 &&
             rep->element[0]->type == REDIS_REPLY_INTEGER && rep->element[1]->type == REDIS_REPLY_INTEGER &&
             rep->element[0]->integer >= 0 && rep->element[1]->integer >= 0;
    if (!ok) {
        if (!r->logged_down)
            kms_log(KMS_LOG_WARN, "ratelimit.degraded", NULL, "detail",
                    rep == NULL ? kms_redis_conn_error(r->conn)
                                : (rep->type == REDIS_REPLY_ERROR ? rep->str : "unexpected reply to the script"),
                    "fallback", "each node keeps its share of every budget", NULL);
        r->logged_down = 1;
        if (rep != NULL)
            freeReplyObject(rep);
        kms_redis_conn_free(&r->conn);
        return -1;
    }
    if (r->logged_down)
        kms_log(KMS_LOG_INFO, "ratelimit.recovered", NULL, "detail", "budgets are cluster-wide again", NULL);
    r->logged_down = 0;
    *granted = (unsigned)rep->element[0]->integer;
    *retry_us = (uint64_t)rep->element[1]->integer;
    freeReplyObject(rep);
    return 0;
}

static unsigned nodes(void *ctx)
{
    struct kms_rl_redis *r = ctx;
    return __atomic_load_n(&r->nodes, __ATOMIC_RELAXED);
}

kms_rc kms_rl_redis_new(struct kms_cache *cache, struct kms_rl_redis **out, struct kms_rl_remote *remote)
{
    struct kms_rl_redis *r = calloc(1, sizeof(*r));
    if (r == NULL)
        return KMS_ERR_NO_MEMORY;
    r->cache = cache;
    r->nodes = 1;
    (void)snprintf(r->prefix, sizeof(r->prefix), "%s", kms_cluster_prefix(cache));
    *remote = (struct kms_rl_remote){lease, nodes, r};
    *out = r;
    return KMS_OK;
}

void kms_rl_redis_free(struct kms_rl_redis **r)
{
    if (r == NULL || *r == NULL)
        return;
    kms_redis_conn_free(&(*r)->conn);
    free(*r);
    *r = NULL;
}
