#include "kms/cache.h"
#include "common/clock.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define LOCAL_MAX_ENTRIES (1u << 20)
#define NS_PER_S 1000000000ull

/* ---- dispatch ---------------------------------------------------------- */

kms_rc kms_cache_get(struct kms_cache *c, const uint8_t key[KMS_CACHE_KEY_LEN], struct kms_secret **out)
{
    *out = NULL;
    if (c == NULL)
        return KMS_ERR_NOT_FOUND;
    return c->ops->get(c, key, out);
}

kms_rc kms_cache_put(struct kms_cache *c, const uint8_t key[KMS_CACHE_KEY_LEN], const struct kms_secret *value)
{
    if (c == NULL)
        return KMS_OK;
    return c->ops->put(c, key, value);
}

void kms_cache_free(struct kms_cache **c)
{
    if (c == NULL || *c == NULL)
        return;
    (*c)->ops->destroy(*c);
    *c = NULL;
}

/* ---- local tier: hash table + two intrusive lists ------------------------
 * LRU list: ordered by last use (head = least recently used), for capacity
 * eviction and the idle timeout. AGE list: ordered by insertion (head =
 * oldest), for the TTL. Both expiries are swept from the heads on every call,
 * so an expired key is wiped at the next cache operation at the latest. */

enum { LRU = 0, AGE = 1 };

struct entry {
    uint8_t key[KMS_CACHE_KEY_LEN];
    struct kms_secret *value;
    uint64_t inserted_ns, used_ns;
    struct entry *chain; /* next in the bucket */
    struct entry *prev[2], *next[2];
};

struct local {
    struct kms_cache base;
    pthread_mutex_t mu;
    size_t max, count, nbuckets;
    uint64_t ttl_ns, idle_ns; /* 0 = no limit */
    struct entry **buckets;
    struct entry *head[2], *tail[2];
    struct kms_cache_stats st;
};

/* why: keys are SHA-256 digests and only authenticated customer keys are
 * stored, so their leading bytes are a fine hash. */
static size_t bucket_of(const struct local *c, const uint8_t key[KMS_CACHE_KEY_LEN])
{
    uint64_t v = 0;
    for (int i = 0; i < 8; i++)
        v = (v << 8) | key[i];
    return (size_t)(v & (c->nbuckets - 1));
}

static void list_unlink(struct local *c, struct entry *e, int l)
{
    if (e->prev[l])
        e->prev[l]->next[l] = e->next[l];
    else
        c->head[l] = e->next[l];
    if (e->next[l])
        e->next[l]->prev[l] = e->prev[l];
    else
        c->tail[l] = e->prev[l];
    e->prev[l] = e->next[l] = NULL;
}

static void list_append(struct local *c, struct entry *e, int l)
{
    e->next[l] = NULL;
    e->prev[l] = c->tail[l];
    if (c->tail[l])
        c->tail[l]->next[l] = e;
    else
        c->head[l] = e;
    c->tail[l] = e;
}

static struct entry *find(struct local *c, const uint8_t key[KMS_CACHE_KEY_LEN])
{
    for (struct entry *e = c->buckets[bucket_of(c, key)]; e != NULL; e = e->chain)
        if (memcmp(e->key, key, KMS_CACHE_KEY_LEN) == 0)
            return e;
    return NULL;
}

/* Unlinks e from everything, wipes its value and frees it. */
static void drop(struct local *c, struct entry *e)
{
    struct entry **pp = &c->buckets[bucket_of(c, e->key)];
    while (*pp != e)
        pp = &(*pp)->chain;
    *pp = e->chain;
    list_unlink(c, e, LRU);
    list_unlink(c, e, AGE);
    kms_secret_free(&e->value);
    free(e);
    c->count--;
}

static void sweep(struct local *c, uint64_t now)
{
    while (c->ttl_ns && c->head[AGE] && now - c->head[AGE]->inserted_ns >= c->ttl_ns) {
        drop(c, c->head[AGE]);
        c->st.evictions++;
    }
    while (c->idle_ns && c->head[LRU] && now - c->head[LRU]->used_ns >= c->idle_ns) {
        drop(c, c->head[LRU]);
        c->st.evictions++;
    }
}

static kms_rc local_get(struct kms_cache *base, const uint8_t key[KMS_CACHE_KEY_LEN], struct kms_secret **out)
{
    struct local *c = (struct local *)base;
    kms_rc rc;
    *out = NULL;
    pthread_mutex_lock(&c->mu);
    uint64_t now = kms_now_ns();
    sweep(c, now);
    struct entry *e = find(c, key);
    if (e == NULL) {
        c->st.misses++;
        rc = KMS_ERR_NOT_FOUND;
    } else {
        c->st.hits++;
        e->used_ns = now;
        list_unlink(c, e, LRU);
        list_append(c, e, LRU);
        rc = kms_secret_from(kms_secret_cdata(e->value), kms_secret_len(e->value), out);
    }
    pthread_mutex_unlock(&c->mu);
    return rc;
}

static kms_rc local_put(struct kms_cache *base, const uint8_t key[KMS_CACHE_KEY_LEN], const struct kms_secret *value)
{
    struct local *c = (struct local *)base;
    struct kms_secret *copy = NULL;
    /* why: copy outside the lock; the secure heap has its own */
    KMS_GUARD(kms_secret_from(kms_secret_cdata(value), kms_secret_len(value), &copy));
    pthread_mutex_lock(&c->mu);
    uint64_t now = kms_now_ns();
    sweep(c, now);
    struct entry *e = find(c, key);
    if (e != NULL) {
        kms_secret_free(&e->value);
        list_unlink(c, e, LRU);
        list_unlink(c, e, AGE);
    } else {
        if (c->count >= c->max) {
            drop(c, c->head[LRU]);
            c->st.evictions++;
        }
        e = calloc(1, sizeof(*e));
        if (e == NULL) {
            pthread_mutex_unlock(&c->mu);
            kms_secret_free(&copy);
            return kms_fail(KMS_ERR_NO_MEMORY, "cache entry");
        }
        memcpy(e->key, key, KMS_CACHE_KEY_LEN);
        size_t b = bucket_of(c, key);
        e->chain = c->buckets[b];
        c->buckets[b] = e;
        c->count++;
    }
    e->value = copy;
    e->inserted_ns = e->used_ns = now;
    list_append(c, e, LRU);
    list_append(c, e, AGE);
    pthread_mutex_unlock(&c->mu);
    return KMS_OK;
}

static void local_destroy(struct kms_cache *base)
{
    struct local *c = (struct local *)base;
    while (c->head[LRU] != NULL)
        drop(c, c->head[LRU]);
    free(c->buckets);
    pthread_mutex_destroy(&c->mu);
    free(c);
}

static void local_set_limits(struct kms_cache *base, unsigned ttl_s, unsigned idle_s)
{
    struct local *c = (struct local *)base;
    pthread_mutex_lock(&c->mu);
    c->ttl_ns = (uint64_t)ttl_s * NS_PER_S;
    c->idle_ns = (uint64_t)idle_s * NS_PER_S;
    pthread_mutex_unlock(&c->mu);
}

static const struct kms_cache_ops local_ops = {
    .name = "local",
    .get = local_get,
    .put = local_put,
    .destroy = local_destroy,
    .set_limits = local_set_limits,
};

void kms_cache_set_limits(struct kms_cache *c, unsigned ttl_s, unsigned idle_s)
{
    if (c != NULL && c->ops->set_limits != NULL)
        c->ops->set_limits(c, ttl_s, idle_s);
}

kms_rc kms_cache_local_new(size_t max_entries, unsigned ttl_s, unsigned idle_s, struct kms_cache **out)
{
    *out = NULL;
    if (max_entries == 0 || max_entries > LOCAL_MAX_ENTRIES)
        return kms_fail(KMS_ERR_CONFIG, "cache: max entries %zu out of range 1..%u", max_entries,
                        LOCAL_MAX_ENTRIES);
    struct local *c = calloc(1, sizeof(*c));
    if (c == NULL)
        return kms_fail(KMS_ERR_NO_MEMORY, "cache");
    c->nbuckets = 16;
    while (c->nbuckets < max_entries)
        c->nbuckets *= 2;
    c->buckets = calloc(c->nbuckets, sizeof(*c->buckets));
    if (c->buckets == NULL || pthread_mutex_init(&c->mu, NULL) != 0) {
        free(c->buckets);
        free(c);
        return kms_fail(KMS_ERR_NO_MEMORY, "cache");
    }
    c->base.ops = &local_ops;
    c->max = max_entries;
    c->ttl_ns = (uint64_t)ttl_s * NS_PER_S;
    c->idle_ns = (uint64_t)idle_s * NS_PER_S;
    *out = &c->base;
    return KMS_OK;
}

void kms_cache_local_stats(struct kms_cache *base, struct kms_cache_stats *out)
{
    memset(out, 0, sizeof(*out));
    if (base == NULL || base->ops != &local_ops)
        return;
    struct local *c = (struct local *)base;
    pthread_mutex_lock(&c->mu);
    sweep(c, kms_now_ns());
    *out = c->st;
    out->entries = c->count;
    pthread_mutex_unlock(&c->mu);
}

void kms_cache_local_clear(struct kms_cache *base)
{
    if (base == NULL || base->ops != &local_ops)
        return;
    struct local *c = (struct local *)base;
    pthread_mutex_lock(&c->mu);
    while (c->head[LRU] != NULL) {
        drop(c, c->head[LRU]);
        c->st.evictions++;
    }
    pthread_mutex_unlock(&c->mu);
}
