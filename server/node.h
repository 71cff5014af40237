/* One kmsd node: what kmsd's main loop holds (configuration, keystore,
 * backend, cache, hierarchy, audit, server, keystore sync) and the steps
 * that start it and keep it current (reloads, file watches, heartbeats). */
#ifndef KMS_SERVER_NODE_H
#define KMS_SERVER_NODE_H

#include <openssl/x509.h>
#include <stddef.h>

#include "common/error.h"
#include "kms/ratelimit.h"

#define KMS_NODE_HEARTBEAT_EVERY_S 5
/* why: a stopped node's heartbeat stays listed (as silent) for this long, so
 * `kmsctl cluster status` can name it; KMS_CLUSTER_SILENT_AFTER intervals
 * without one make it silent */
#define KMS_NODE_HEARTBEAT_TTL_S 600
#define KMS_NODE_WATCHED 3 /* the keystore, the CRL, kms.properties */

struct kms_node {
    struct kms_config *cfg;
    struct kms_keystore *ks;
    STACK_OF(X509_CRL) *crls;
    struct kms_rolemap *roles;
    struct kms_backend *backend;
    struct kms_backend *hsm; /* backend unwrapped (borrowed from it): kms_backend_reload_identity */
    struct kms_cache *cache;
    struct kms_hierarchy *hierarchy;
    struct kms_audit *audit;
    struct kms_secret *cluster_key; /* distributed: TLS session tickets shared by the nodes */
    struct kms_server *server;
    struct kms_ksync *ksync; /* distributed: the cluster's keystore generations (SPEC §11) */
    struct kms_ratelimit *ratelimit; /* kms.ratelimit.enabled */
    struct kms_rl_limit conn_rate;   /* kms.ratelimit.connections, when enabled */
    struct kms_rl_redis *rl_redis;   /* its cluster-wide buckets (distributed cache) */
    struct kms_crl_fetch *crl_fetch; /* kms.auth.crl.url */
    struct kms_ocsp *ocsp;           /* kms.auth.ocsp */
    const char *config_path; /* NULL: defaults and environment only */
    /* why: the server and the backend keep pointers into the configuration
     * they started with; a replaced one lives until exit */
    struct kms_config *retired[64];
    size_t n_retired;
    char name[256];
};

/* node.c: start and stop */
void kms_node_free(struct kms_node *n);
/* The keystore and CRLs of n->cfg into n (also what --check-config checks). */
kms_rc kms_node_load_keystore(struct kms_node *n) KMS_MUST_CHECK;
/* Everything after the configuration: keystore, roles, backend, cache,
 * hierarchy, audit, the cluster keystore's newest generation, the server. */
kms_rc kms_node_start(struct kms_node *n) KMS_MUST_CHECK;

/* node_reload.c: keeping a running node current */
void kms_node_warn_expiry(struct kms_node *n);
kms_rc kms_node_reload(struct kms_node *n, const char *why);
void kms_node_reload_config(struct kms_node *n, const char *why);
/* inotify on the watched files' folders: the fd, or -1 */
int kms_node_watch_files(struct kms_node *n, const char *names[KMS_NODE_WATCHED]);
/* bit i set: names[i] changed since the last call */
int kms_node_files_changed(int fd, const char *names[KMS_NODE_WATCHED]);
int kms_node_cluster_keystore(struct kms_node *n, int wfd, const char *names[KMS_NODE_WATCHED], int *pending,
                              int *pending_config);
kms_rc kms_node_heartbeat(struct kms_node *n);

#endif
