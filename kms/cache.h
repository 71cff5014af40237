/* Cache of unwrapped customer keys (SPEC §2: what makes kmsd fast).
 *
 * One interface, several tiers behind it: "none" (every call misses), "local"
 * (in-process, TTL + idle timeout, wiped on eviction); the distributed Redis
 * tier plugs in behind the same table (cluster/). Keys are the SHA-256 of the
 * whole wrapped blob, so a tampered blob never hits. Values are secrets. */
#ifndef KMS_KMS_CACHE_H
#define KMS_KMS_CACHE_H

#include <stddef.h>
#include <stdint.h>

#include "common/error.h"
#include "common/secret.h"

#define KMS_CACHE_KEY_LEN 32

struct kms_cache;

struct kms_cache_ops {
    const char *name;
    /* KMS_OK and a new secret on a hit; KMS_ERR_NOT_FOUND on a miss. */
    kms_rc (*get)(struct kms_cache *c, const uint8_t key[KMS_CACHE_KEY_LEN], struct kms_secret **out);
    /* Stores a copy of value; failures are not fatal to callers. */
    kms_rc (*put)(struct kms_cache *c, const uint8_t key[KMS_CACHE_KEY_LEN], const struct kms_secret *value);
    void (*destroy)(struct kms_cache *c);
    /* New TTL and idle limits (seconds, 0 = none) for entries from now on
     * and at the next sweep; NULL when the kind has none. */
    void (*set_limits)(struct kms_cache *c, unsigned ttl_s, unsigned idle_s);
};

struct kms_cache {
    const struct kms_cache_ops *ops;
};

struct kms_cache_stats {
    uint64_t hits, misses, evictions, entries;
};

/* In-process LRU: at most max_entries, each living ttl_s seconds from insert
 * and idle_s seconds from last use (0 = no limit). Thread-safe. */
kms_rc kms_cache_local_new(size_t max_entries, unsigned ttl_s, unsigned idle_s, struct kms_cache **out) KMS_MUST_CHECK;
void kms_cache_local_stats(struct kms_cache *c, struct kms_cache_stats *out);
/* Changes a cache's TTL and idle limits live (kms.cache.ttl, kms.cache.idle
 * on SIGHUP). No-op for NULL or a kind without limits. */
void kms_cache_set_limits(struct kms_cache *c, unsigned ttl_s, unsigned idle_s);
/* Drops (and wipes) every entry of a local cache; counted as evictions. No-op
 * for NULL or a cache that is not a local one. */
void kms_cache_local_clear(struct kms_cache *c);

kms_rc kms_cache_get(struct kms_cache *c, const uint8_t key[KMS_CACHE_KEY_LEN], struct kms_secret **out) KMS_MUST_CHECK;
kms_rc kms_cache_put(struct kms_cache *c, const uint8_t key[KMS_CACHE_KEY_LEN], const struct kms_secret *value) KMS_MUST_CHECK;
void kms_cache_free(struct kms_cache **c);

#endif
