/* Judging the cluster from heartbeats (cluster/cluster_status.h): which node
 * is silent and which holds another keystore than the majority. */
#include <criterion/criterion.h>

#include <string.h>

#include "cluster/cluster_status.h"

static struct kms_cluster_node node(const char *name, uint64_t gen, char sha, int64_t seen)
{
    struct kms_cluster_node n;
    memset(&n, 0, sizeof(n));
    snprintf(n.name, sizeof(n.name), "%s", name);
    n.interval_s = 5;
    n.last_seen = seen;
    n.ks_generation = gen;
    memset(n.ks_sha256, sha, 64);
    return n;
}

Test(cluster_status, agreeing_live_nodes_are_healthy, .timeout = 10)
{
    struct kms_cluster_node n[3] = {node("a", 4, 'a', 100), node("b", 4, 'a', 99), node("c", 4, 'a', 98)};
    enum kms_node_state s[3];
    struct kms_cluster_verdict v;
    kms_cluster_assess(n, 3, 101, s, &v);
    cr_assert(v.healthy);
    cr_assert_eq(v.generation, 4);
    cr_assert_eq(s[0] + s[1] + s[2], KMS_NODE_OK * 3);
}

Test(cluster_status, the_odd_node_out_is_named, .timeout = 10)
{
    /* same generation, another file (replaced by hand) */
    struct kms_cluster_node n[3] = {node("a", 4, 'a', 100), node("b", 4, 'f', 100), node("c", 4, 'a', 100)};
    enum kms_node_state s[3];
    struct kms_cluster_verdict v;
    kms_cluster_assess(n, 3, 101, s, &v);
    cr_assert_not(v.healthy);
    cr_assert_eq(s[1], KMS_NODE_DIVERGED);
    cr_assert_eq(s[0], KMS_NODE_OK);
    cr_assert_eq(v.diverged, 1);
    cr_assert_str_eq(kms_node_state_name(s[1]), "diverged");
}

Test(cluster_status, silence_is_three_intervals_without_a_heartbeat, .timeout = 10)
{
    struct kms_cluster_node n[2] = {node("a", 4, 'a', 100), node("b", 4, 'a', 84)};
    enum kms_node_state s[2];
    struct kms_cluster_verdict v;
    kms_cluster_assess(n, 2, 100, s, &v);
    cr_assert_eq(s[1], KMS_NODE_SILENT, "16 s > 3 x 5 s");
    cr_assert_not(v.healthy);
    n[1].last_seen = 85;
    kms_cluster_assess(n, 2, 100, s, &v);
    cr_assert_eq(s[1], KMS_NODE_OK, "15 s is still in time");
    cr_assert(v.healthy);
    n[1].interval_s = 0; /* older nodes: the default interval */
    n[1].last_seen = 100 - 3 * KMS_CLUSTER_DEFAULT_INTERVAL - 1;
    kms_cluster_assess(n, 2, 100, s, &v);
    cr_assert_eq(s[1], KMS_NODE_SILENT);
}

Test(cluster_status, a_tie_goes_to_the_newest_and_silent_nodes_do_not_vote, .timeout = 10)
{
    struct kms_cluster_node n[4] = {node("a", 3, 'a', 100), node("b", 5, 'b', 100), node("c", 3, 'a', 0),
                                    node("d", 3, 'a', 0)};
    enum kms_node_state s[4];
    struct kms_cluster_verdict v;
    kms_cluster_assess(n, 4, 100, s, &v);
    cr_assert_eq(v.generation, 5, "one live vote each: the newer wins");
    cr_assert_eq(s[0], KMS_NODE_DIVERGED);
    cr_assert_eq(s[2], KMS_NODE_SILENT);
    cr_assert_eq(v.silent, 2);
    kms_cluster_assess(n, 0, 100, s, &v);
    cr_assert_not(v.healthy, "no node at all is not healthy");
    struct kms_cluster_node quiet[1] = {node("q", 1, 'a', 0)};
    kms_cluster_assess(quiet, 1, 1000, s, &v);
    cr_assert_eq(s[0], KMS_NODE_SILENT);
    cr_assert_not(v.healthy);
}
