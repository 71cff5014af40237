/* Rate limits per client identity (issue 15, SPEC §9): each certificate
 * (by fingerprint) has a budget per kind of request (creating keys,
 * unwrapping, the rest), a rate per second and a burst, with defaults per
 * role. The algorithm is GCRA (a token bucket kept as one "theoretical
 * arrival time"). With a remote (the cluster's Redis, cluster/ratelimit_redis.c)
 * the bucket is cluster-wide: a node leases a few tokens at a time in one
 * atomic round trip and spends them locally, so most requests cost no round
 * trip; when the remote is away the node falls back to its share of the
 * budget (rate and burst divided by the nodes last seen alive). */
#ifndef KMS_KMS_RATELIMIT_H
#define KMS_KMS_RATELIMIT_H

#include <stddef.h>
#include <stdint.h>

#include "common/error.h"
#include "kms/identity.h"

enum kms_rl_budget { KMS_RL_CREATE = 0, KMS_RL_UNWRAP, KMS_RL_OTHER, KMS_RL_BUDGETS };
/* indexed by enum kms_role; KMS_ROLE_NONE: keys that are client addresses,
 * not certificates (the front door's new connections, budget other) */
#define KMS_RL_ROLES 4

struct kms_rl_limit {
    double rate;    /* tokens per second; 0: not limited */
    unsigned burst; /* tokens at once (>= 1 when rate > 0) */
};

const char *kms_rl_budget_name(enum kms_rl_budget b); /* "create", "unwrap", "other" */

/* Parses one role's limits: "create=100:200, unwrap=1000, other=50:100"
 * (budget=rate[:burst], rate per second, burst defaulting to the rate
 * rounded up); budgets not named are not limited; "" limits nothing. On
 * failure why names the item. */
kms_rc kms_rl_parse(const char *text, struct kms_rl_limit out[KMS_RL_BUDGETS], char *why, size_t cap)
    KMS_MUST_CHECK;

/* Parses one limit, "rate[:burst]" as above; "" limits nothing. */
kms_rc kms_rl_parse_limit(const char *text, struct kms_rl_limit *out, char *why, size_t cap) KMS_MUST_CHECK;

/* The cluster-wide part. lease asks for up to want tokens of the bucket
 * named key (rate given as T_us, the microseconds per token, and tau_us,
 * the burst tolerance (burst - 1) * T_us): 0 with *granted (0 when none is
 * available, then *retry_us says when one will be), or -1 when the remote
 * cannot be reached. nodes: the nodes last seen alive (>= 1). */
struct kms_rl_remote {
    int (*lease)(void *ctx, const char *key, uint64_t T_us, uint64_t tau_us, unsigned want, unsigned *granted,
                 uint64_t *retry_us);
    unsigned (*nodes)(void *ctx);
    void *ctx;
};

struct kms_ratelimit;

/* limits[role][budget] (copied); remote may be NULL (this node alone), copied. */
kms_rc kms_ratelimit_new(struct kms_rl_limit limits[KMS_RL_ROLES][KMS_RL_BUDGETS],
                         const struct kms_rl_remote *remote, struct kms_ratelimit **out) KMS_MUST_CHECK;
void kms_ratelimit_free(struct kms_ratelimit **rl);

/* Spends one token of fingerprint's budget at now_ns (a monotonic clock):
 * 1 when allowed, 0 when over the limit with *retry_ms (>= 1) until the
 * next token. Thread-safe. */
int kms_ratelimit_take(struct kms_ratelimit *rl, const char *fingerprint, enum kms_role role, enum kms_rl_budget b,
                       uint64_t now_ns, uint64_t *retry_ms);

/* Whether the last remote call failed (the node is on its share). */
int kms_ratelimit_degraded(struct kms_ratelimit *rl);

#endif
