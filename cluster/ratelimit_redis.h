/* The cluster-wide part of the rate limits (kms/ratelimit.h): buckets in the
 * cache's Redis, leased by one atomic round trip (a Lua script, GCRA on
 * Redis's own clock, so the nodes' clocks do not matter), over a connection
 * of its own. The live node count comes from the cluster heartbeats. */
#ifndef KMS_CLUSTER_RATELIMIT_REDIS_H
#define KMS_CLUSTER_RATELIMIT_REDIS_H

#include "common/error.h"
#include "kms/cache.h"
#include "kms/ratelimit.h"

struct kms_rl_redis;

/* cache: a distributed cache (borrowed; must outlive the remote). Connects
 * lazily. Fills *remote to hand to kms_ratelimit_new. */
kms_rc kms_rl_redis_new(struct kms_cache *cache, struct kms_rl_redis **out, struct kms_rl_remote *remote)
    KMS_MUST_CHECK;
void kms_rl_redis_free(struct kms_rl_redis **r);

#endif
