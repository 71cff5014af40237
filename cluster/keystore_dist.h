/* Keystore distribution through Redis (SPEC §11, issue 12): where the
 * sealed generations of the cluster's keystore (kms/ksgen.h) live and how
 * nodes learn of a new one. Redis names, under the cache's prefix P:
 *
 *   P "ks:seq"      INCR counter that hands out generation numbers
 *   P "ks:head"     the newest published generation
 *   P "ks:g:" N     generation N's sealed blob
 *   P "ks:gens"     list of the generations kept, newest first
 *   P "ks:events"   pub/sub channel; each message is a generation number
 *
 * Publishing is one Lua script: it stores the blob and moves the head only
 * when the head is still the generation the edit started from (else
 * KMS_ERR_CONFLICT: nothing is written), prunes beyond `keep`, and
 * publishes. Redis is trusted with nothing: whatever it returns is opened
 * and checked by kms/ksgen before use. Every connection here is its own
 * (kms_cluster_connect): the cache's link is never held for a blob. */
#ifndef KMS_CLUSTER_KEYSTORE_DIST_H
#define KMS_CLUSTER_KEYSTORE_DIST_H

#include <stddef.h>
#include <stdint.h>

#include "common/error.h"
#include "kms/cache.h"

struct kms_ksdist;

/* A connection for generations, to the Redis of cache c (a distributed
 * cache). Errors of kms_cluster_connect. Caller owns *out. */
kms_rc kms_ksdist_open(struct kms_cache *c, struct kms_ksdist **out) KMS_MUST_CHECK;
void kms_ksdist_free(struct kms_ksdist **d);

/* The newest published generation (0: none yet). KMS_ERR_BACKEND_UNAVAILABLE
 * (then d is broken: free it and open another). */
kms_rc kms_ksdist_head(struct kms_ksdist *d, uint64_t *gen) KMS_MUST_CHECK;

/* Generation gen's sealed blob, malloc'd into *blob (free()).
 * KMS_ERR_NOT_FOUND when Redis has none, KMS_ERR_BACKEND_UNAVAILABLE. */
kms_rc kms_ksdist_fetch(struct kms_ksdist *d, uint64_t gen, uint8_t **blob, size_t *len) KMS_MUST_CHECK;

/* A new generation number, above every one handed out and above floor
 * (what nodes report having: after Redis lost its data a new number must
 * still be above theirs). KMS_ERR_BACKEND_UNAVAILABLE. */
kms_rc kms_ksdist_reserve(struct kms_ksdist *d, uint64_t floor, uint64_t *gen) KMS_MUST_CHECK;

/* Stores blob as generation gen and makes it the head when the head is
 * still base; keeps the newest `keep` generations; tells the nodes.
 * KMS_ERR_CONFLICT (the head moved: the detail says to what; nothing
 * written), KMS_ERR_BACKEND_UNAVAILABLE. */
kms_rc kms_ksdist_publish(struct kms_ksdist *d, uint64_t base, uint64_t gen, const uint8_t *blob, size_t len,
                          unsigned keep) KMS_MUST_CHECK;

/* The generations kept, newest first, into gens[0..cap). */
kms_rc kms_ksdist_list(struct kms_ksdist *d, uint64_t *gens, size_t cap, size_t *n) KMS_MUST_CHECK;

/* A subscription to the events channel on its own connection. Errors of
 * kms_cluster_connect; KMS_ERR_BACKEND_UNAVAILABLE when SUBSCRIBE fails. */
kms_rc kms_ksdist_subscribe(struct kms_cache *c, struct kms_ksdist **out) KMS_MUST_CHECK;

/* Waits up to timeout_ms for an event: 1 with *gen the generation
 * announced, 0 when none came, -1 when the subscription broke (free it). */
int kms_ksdist_wait(struct kms_ksdist *d, unsigned timeout_ms, uint64_t *gen) KMS_MUST_CHECK;

#endif
