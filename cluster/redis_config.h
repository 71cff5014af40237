/* The distributed cache tier as kmsd's configuration describes it
 * (kms.cache.redis.*, kms.cache.cluster.key, kms.cache.ttl; SPEC §7, §9).
 * One place builds struct kms_redis_options from a kms_config, so kmsd and
 * kmsctl (hsm rotate's cluster invalidation) reach the same Redis the same
 * way. */
#ifndef KMS_CLUSTER_REDIS_CONFIG_H
#define KMS_CLUSTER_REDIS_CONFIG_H

#include "common/error.h"
#include "kms/cache.h"
#include "kms/config.h"

/* Opens the Redis tier in front of *local (taken over: freed with the new
 * cache, or here on failure). node names this process in logs. cluster_key
 * (borrowed): the opened cluster key, or NULL to open it here (why: opening
 * costs a PBKDF2 of the keystore password; a caller that needs the key too
 * opens it once). Redis being
 * unreachable is not an error (the cache starts degraded). Errors:
 * KMS_ERR_CONFIG (no or bad cluster key, bad Redis option or TLS file; the
 * detail names it, never a secret), KMS_ERR_NO_MEMORY, KMS_ERR_CRYPTO.
 * Caller owns *out (kms_cache_free). */
kms_rc kms_redis_config_open(const struct kms_config *cfg, const char *node, const struct kms_secret *cluster_key,
                             struct kms_cache *local,
                             struct kms_cache **out) KMS_MUST_CHECK;

/* The cluster key (kms.cache.cluster.key or .file: sealed under the
 * keystore password, kms/cluster_key.h; the same on every node), opened
 * with password (NULL: kms.keystore.password), as a new secret. KMS_ERR_CONFIG when unset, in clear or malformed,
 * KMS_ERR_KEYSTORE_PASSWORD when it does not open with kms.keystore.password
 * (the detail never holds a secret), KMS_ERR_NO_MEMORY. Caller owns *out. */
kms_rc kms_redis_config_cluster_key(const struct kms_config *cfg, const char *password, struct kms_secret **out)
    KMS_MUST_CHECK;

#endif
