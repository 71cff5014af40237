#include "cluster/cluster_status.h"

#include <string.h>

const char *kms_node_state_name(enum kms_node_state s)
{
    return s == KMS_NODE_SILENT ? "silent" : s == KMS_NODE_DIVERGED ? "diverged" : "ok";
}

static int silent(const struct kms_cluster_node *x, int64_t now)
{
    int64_t every = x->interval_s > 0 ? (int64_t)x->interval_s : KMS_CLUSTER_DEFAULT_INTERVAL;
    return now - x->last_seen > KMS_CLUSTER_SILENT_AFTER * every;
}

static int same(const struct kms_cluster_node *a, const struct kms_cluster_node *b)
{
    return a->ks_generation == b->ks_generation && strcmp(a->ks_sha256, b->ks_sha256) == 0;
}

void kms_cluster_assess(const struct kms_cluster_node *nodes, size_t n, int64_t now, enum kms_node_state *states,
                        struct kms_cluster_verdict *out)
{
    memset(out, 0, sizeof(*out));
    /* why: O(n^2) over at most a few dozen nodes; the majority keystore is
     * the reference, so a node whose file was replaced by hand stands out */
    size_t best = n, best_votes = 0;
    for (size_t i = 0; i < n; i++) {
        if (silent(&nodes[i], now))
            continue;
        size_t votes = 0;
        for (size_t j = 0; j < n; j++)
            if (!silent(&nodes[j], now) && same(&nodes[i], &nodes[j]))
                votes++;
        if (best == n || votes > best_votes ||
            (votes == best_votes && nodes[i].ks_generation > nodes[best].ks_generation)) {
            best = i;
            best_votes = votes;
        }
    }
    if (best < n) {
        out->generation = nodes[best].ks_generation;
        memcpy(out->sha256, nodes[best].ks_sha256, sizeof(out->sha256));
    }
    for (size_t i = 0; i < n; i++) {
        if (silent(&nodes[i], now)) {
            states[i] = KMS_NODE_SILENT;
            out->silent++;
        } else if (!same(&nodes[i], &nodes[best])) {
            states[i] = KMS_NODE_DIVERGED;
            out->diverged++;
        } else {
            states[i] = KMS_NODE_OK;
        }
    }
    out->healthy = n > 0 && out->silent == 0 && out->diverged == 0;
}
