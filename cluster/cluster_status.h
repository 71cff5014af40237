/* The cluster's health as an operator reads it (SPEC §11): from the nodes'
 * heartbeats, which node is silent and which disagrees with the others on
 * its keystore. One judgement for GET /v1/cluster and `kmsctl cluster
 * status`, so the two never differ. */
#ifndef KMS_CLUSTER_CLUSTER_STATUS_H
#define KMS_CLUSTER_CLUSTER_STATUS_H

#include <stddef.h>
#include <stdint.h>

#include "cluster/redis_cache.h"

#define KMS_CLUSTER_SILENT_AFTER 3      /* heartbeat intervals without one */
#define KMS_CLUSTER_DEFAULT_INTERVAL 5  /* seconds, for nodes that do not say */

enum kms_node_state {
    KMS_NODE_OK,       /* heard from, and holds the keystore most nodes hold */
    KMS_NODE_SILENT,   /* no heartbeat for KMS_CLUSTER_SILENT_AFTER intervals */
    KMS_NODE_DIVERGED, /* another keystore generation or file than the majority */
};
const char *kms_node_state_name(enum kms_node_state s); /* "ok", "silent", "diverged" */

struct kms_cluster_verdict {
    uint64_t generation; /* what the majority of live nodes hold (ties: the newest) */
    char sha256[65];
    size_t silent, diverged;
    int healthy; /* no node silent or diverged, at least one node */
};

/* Judges nodes[0..n) at time now (Unix seconds): states[i] for each node
 * and the verdict. */
void kms_cluster_assess(const struct kms_cluster_node *nodes, size_t n, int64_t now, enum kms_node_state *states,
                        struct kms_cluster_verdict *out);

#endif
