/* A node's start and stop (node.h). */
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/inotify.h>
#include <time.h>
#include <unistd.h>

#include "cluster/redis_cache.h"
#include "cluster/ratelimit_redis.h"
#include "cluster/redis_config.h"
#include "common/base64.h"
#include "common/log.h"
#include "common/secret.h"
#include "common/version.h"
#include "kms/audit.h"
#include "kms/audit_key.h"
#include "kms/backend_select.h"
#include "kms/cache.h"
#include "kms/cluster_key.h"
#include "kms/config.h"
#include "kms/hierarchy.h"
#include "kms/identity.h"
#include "kms/keystore.h"
#include "kms/ratelimit.h"
#include "server/crl_fetch.h"
#include "server/ocsp.h"
#include "server/keystore_sync.h"
#include "server/metrics.h"
#include "server/node.h"
#include "server/server.h"

void kms_node_free(struct kms_node *n)
{
    kms_ksync_free(&n->ksync);
    kms_crl_fetch_stop(&n->crl_fetch);
    kms_server_stop(&n->server);
    kms_ocsp_free(&n->ocsp);
    kms_ratelimit_free(&n->ratelimit);
    kms_rl_redis_free(&n->rl_redis);
    for (size_t i = 0; i < n->n_retired; i++)
        kms_config_free(&n->retired[i]);
    kms_hierarchy_free(&n->hierarchy);
    kms_cache_free(&n->cache);
    kms_backend_free(&n->backend);
    kms_audit_close(&n->audit);
    kms_secret_free(&n->cluster_key);
    kms_rolemap_free(&n->roles);
    kms_keystore_free(&n->ks);
    if (n->crls != NULL)
        sk_X509_CRL_pop_free(n->crls, X509_CRL_free);
    n->crls = NULL;
    kms_config_free(&n->cfg);
}

kms_rc kms_node_load_keystore(struct kms_node *n)
{
    const char *file = kms_config_str(n->cfg, KMS_CFG_KEYSTORE_FILE);
    if (file[0] == '\0')
        return kms_fail(KMS_ERR_CONFIG, "kms.keystore.file is not set");
    KMS_GUARD(kms_keystore_load(file, kms_config_secret(n->cfg, KMS_CFG_KEYSTORE_PASSWORD), &n->ks));
    const char *crl = kms_config_str(n->cfg, KMS_CFG_AUTH_CRL_FILE);
    if (crl[0] != '\0')
        KMS_GUARD(kms_crl_load(crl, n->ks, &n->crls));
    const char *alias = kms_config_str(n->cfg, KMS_CFG_SERVER_KEY_ALIAS);
    const struct kms_ks_entry *e = kms_keystore_find(n->ks, alias);
    if (e == NULL || kms_ks_entry_type(e) != KMS_KS_PRIVATE_KEY)
        return kms_fail(KMS_ERR_ALIAS_NOT_FOUND, "%s has no private-key entry '%s' (kms.server.key.alias)", file,
                        alias);
    return KMS_OK;
}

static kms_rc open_backend(struct kms_node *n)
{
    struct kms_backend *raw = NULL;
    KMS_GUARD(kms_backend_open_configured(n->cfg, n->ks, &raw));
    KMS_GUARD(kms_metrics_wrap_backend(raw, &n->backend)); /* takes raw */
    n->hsm = raw;
    if (n->backend->ops->kind == KMS_BACKEND_SOFT)
        kms_log(KMS_LOG_WARN, "backend.soft", NULL, "msg",
                "kms.hsm.protocol=soft: master keys are held by kmsd itself in a password-sealed file, NOT in an "
                "HSM. For development only; never use it in production.",
                "file", kms_config_str(n->cfg, KMS_CFG_HSM_SOFT_FILE), NULL);
    /* why: fail at start, not on the first request, when the master key is missing */
    struct kms_master_ref ref;
    kms_rc rc = n->backend->ops->resolve(n->backend, kms_config_str(n->cfg, KMS_CFG_HSM_MASTER_KEY), &ref);
    if (rc != KMS_OK) {
        char why[512];
        (void)snprintf(why, sizeof(why), "%s", kms_error_detail()); /* why: kms_fail rewrites the detail */
        return kms_fail(rc, "master key '%s' (kms.hsm.master.key) cannot be used: %s",
                        kms_config_str(n->cfg, KMS_CFG_HSM_MASTER_KEY), why);
    }
    kms_log(KMS_LOG_INFO, "backend.ready", NULL, "backend", n->backend->ops->name, "master_key",
            kms_config_str(n->cfg, KMS_CFG_HSM_MASTER_KEY), "master_ref", ref.name, NULL);
    return KMS_OK;
}

static kms_rc open_cache(struct kms_node *n)
{
    const char *type = kms_config_str(n->cfg, KMS_CFG_CACHE_TYPE);
    if (strcmp(type, "none") == 0)
        return KMS_OK;
    struct kms_cache *local = NULL;
    KMS_GUARD(kms_cache_local_new((size_t)kms_config_int(n->cfg, KMS_CFG_CACHE_MAX_ENTRIES),
                                  (unsigned)kms_config_int(n->cfg, KMS_CFG_CACHE_TTL),
                                  (unsigned)kms_config_int(n->cfg, KMS_CFG_CACHE_IDLE), &local));
    if (strcmp(type, "local") == 0) {
        n->cache = local;
        return KMS_OK;
    }
    /* distributed: the local tier in front of Redis, values sealed under the cluster key */
    /* why: opened once (a PBKDF2); the cache, the shared TLS ticket keys and
     * the keystore sync all derive from it */
    kms_rc rc = kms_redis_config_cluster_key(n->cfg, NULL, &n->cluster_key);
    if (rc != KMS_OK) {
        kms_cache_free(&local);
        return rc;
    }
    return kms_redis_config_open(n->cfg, n->name, n->cluster_key, local, &n->cache); /* takes local */
}

/* SPEC §11: a node applies the newest keystore generation before it
 * reports ready; without Redis it starts on its file and says so. */
static kms_rc sync_at_start(struct kms_node *n)
{
    KMS_GUARD(kms_ksync_new(n->cfg, n->cache, n->cluster_key, &n->ksync));
    int wrote = 0;
    kms_error_clear();
    kms_rc rc = kms_ksync_poll(n->ksync, &wrote);
    struct kms_ksync_status st;
    kms_ksync_status(n->ksync, &st);
    char gen[24];
    (void)snprintf(gen, sizeof(gen), "%llu", (unsigned long long)st.generation);
    if (rc == KMS_ERR_BACKEND_UNAVAILABLE)
        kms_log(KMS_LOG_WARN, "keystore.cluster_unreachable", NULL, "detail", kms_error_detail(), "generation", gen,
                "msg", "Redis is unreachable: starting on the keystore file; the cluster's generation is applied "
                       "when Redis answers",
                NULL);
    else if (rc != KMS_OK)
        kms_log(KMS_LOG_WARN, "keystore.cluster_generation_not_applied", NULL, "detail", kms_error_detail(),
                "generation", gen, "msg", "starting on the keystore file", NULL);
    else
        kms_log(KMS_LOG_INFO, "keystore.cluster_sync", NULL, "generation", gen, "applied", wrote ? "yes" : "no",
                NULL);
    if (wrote)
        kms_ksync_reloaded(n->ksync, KMS_OK, "");
    return KMS_OK;
}

/* The admin listener stays on loopback unless configured otherwise. */
static const char *admin_address(struct kms_node *n)
{
    const char *a = kms_config_str(n->cfg, KMS_CFG_ADMIN_ADDRESS);
    if (a[0] != '\0')
        return a;
    const char *server = kms_config_str(n->cfg, KMS_CFG_SERVER_ADDRESS);
    return strncmp(server, "127.", 4) == 0 ? server : "127.0.0.1";
}

/* The audit trail (kms.audit.*): its chain's checkpoint key is a secret-key
 * entry of the keystore, or sealed under the keystore password. */
static kms_rc open_audit(struct kms_node *n)
{
    struct kms_secret *key = NULL;
    KMS_GUARD(kms_audit_key_configured(n->cfg, n->ks, &key));
    struct kms_audit_options o = {
        .path = kms_config_str(n->cfg, KMS_CFG_AUDIT_FILE),
        .node = n->name,
        .flush_ms = (unsigned)kms_config_int(n->cfg, KMS_CFG_AUDIT_FLUSH_MS),
        .refuse = strcmp(kms_config_str(n->cfg, KMS_CFG_AUDIT_ON_FAILURE), "refuse") == 0,
        .max_size = (unsigned long long)kms_config_int(n->cfg, KMS_CFG_AUDIT_MAX_SIZE),
        .keep = (unsigned)kms_config_int(n->cfg, KMS_CFG_AUDIT_KEEP),
        .checkpoint_lines = (unsigned)kms_config_int(n->cfg, KMS_CFG_AUDIT_CHECKPOINT_LINES),
        .key = key,
    };
    int signed_chain = key != NULL;
    kms_rc rc = kms_audit_open_with(&o, &n->audit);
    kms_secret_free(&key);
    if (rc == KMS_OK && !signed_chain)
        kms_log(KMS_LOG_WARN, "audit.unsigned", NULL, "detail",
                "kms.audit.key and kms.audit.key.alias are not set: the audit chain has no HMAC checkpoints, so "
                "whoever can write the file can rewrite it whole (docs/audit.md)", NULL);
    return rc;
}

/* kms.ratelimit.*: per node, or cluster-wide through the cache's Redis. */
static kms_rc open_ratelimit(struct kms_node *n)
{
    if (!kms_config_bool(n->cfg, KMS_CFG_RATELIMIT_ENABLED))
        return KMS_OK;
    static const enum kms_config_key keys[KMS_RL_ROLES] = {
        [KMS_ROLE_BACKEND] = KMS_CFG_RATELIMIT_BACKEND,
        [KMS_ROLE_DEVICE] = KMS_CFG_RATELIMIT_DEVICE,
        [KMS_ROLE_ADMIN] = KMS_CFG_RATELIMIT_ADMIN,
    };
    struct kms_rl_limit lim[KMS_RL_ROLES][KMS_RL_BUDGETS];
    memset(lim, 0, sizeof(lim));
    for (int role = KMS_ROLE_BACKEND; role < KMS_RL_ROLES; role++) {
        char why[160];
        if (kms_rl_parse(kms_config_str(n->cfg, keys[role]), lim[role], why, sizeof(why)) != KMS_OK)
            return kms_fail(KMS_ERR_CONFIG, "%s: %s", kms_config_name(keys[role]), why);
    }
    char why[160];
    if (kms_rl_parse_limit(kms_config_str(n->cfg, KMS_CFG_RATELIMIT_CONNECTIONS), &n->conn_rate, why, sizeof(why)) !=
        KMS_OK)
        return kms_fail(KMS_ERR_CONFIG, "%s: %s", kms_config_name(KMS_CFG_RATELIMIT_CONNECTIONS), why);
    struct kms_rl_remote remote;
    int distributed = strcmp(kms_config_str(n->cfg, KMS_CFG_CACHE_TYPE), "distributed") == 0;
    if (distributed)
        KMS_GUARD(kms_rl_redis_new(n->cache, &n->rl_redis, &remote));
    KMS_GUARD(kms_ratelimit_new(lim, distributed ? &remote : NULL, &n->ratelimit));
    kms_log(KMS_LOG_INFO, "ratelimit.enabled", NULL, "scope", distributed ? "cluster (Redis)" : "this node",
            "backend", kms_config_str(n->cfg, KMS_CFG_RATELIMIT_BACKEND), "device",
            kms_config_str(n->cfg, KMS_CFG_RATELIMIT_DEVICE), "admin", kms_config_str(n->cfg, KMS_CFG_RATELIMIT_ADMIN),
            "connections_per_address", kms_config_str(n->cfg, KMS_CFG_RATELIMIT_CONNECTIONS), NULL);
    return KMS_OK;
}

kms_rc kms_node_start(struct kms_node *n)
{
    const char *node = kms_config_str(n->cfg, KMS_CFG_NODE_NAME);
    if (node[0] != '\0')
        (void)snprintf(n->name, sizeof(n->name), "%s", node);
    else if (gethostname(n->name, sizeof(n->name) - 1) != 0)
        (void)snprintf(n->name, sizeof(n->name), "kmsd");
    /* why: the cache (Redis) first, so that a node applies the cluster's
     * newest keystore generation before it loads its file and serves */
    KMS_GUARD(open_cache(n));
    if (strcmp(kms_config_str(n->cfg, KMS_CFG_CACHE_TYPE), "distributed") == 0)
        KMS_GUARD(sync_at_start(n));
    KMS_GUARD(kms_node_load_keystore(n));
    KMS_GUARD(kms_rolemap_parse(kms_config_str(n->cfg, KMS_CFG_AUTH_ROLES), &n->roles));
    KMS_GUARD(open_audit(n));
    KMS_GUARD(open_backend(n));
    KMS_GUARD(kms_hierarchy_new(n->backend, n->cache, kms_config_str(n->cfg, KMS_CFG_HSM_MASTER_KEY), &n->hierarchy));
    KMS_GUARD(open_ratelimit(n));
    const char *ocsp = kms_config_str(n->cfg, KMS_CFG_AUTH_OCSP);
    if (strcmp(ocsp, "off") != 0)
        KMS_GUARD(kms_ocsp_new(strcmp(ocsp, "hard") == 0 ? KMS_OCSP_HARD : KMS_OCSP_SOFT,
                               kms_config_str(n->cfg, KMS_CFG_AUTH_OCSP_URL),
                               (unsigned)kms_config_int(n->cfg, KMS_CFG_AUTH_OCSP_TIMEOUT),
                               (unsigned)kms_config_int(n->cfg, KMS_CFG_AUTH_OCSP_REFRESH), &n->ocsp));
    struct kms_server_deps d = {
        .address = kms_config_str(n->cfg, KMS_CFG_SERVER_ADDRESS),
        .port = (uint16_t)kms_config_int(n->cfg, KMS_CFG_SERVER_PORT),
        .server_alias = kms_config_str(n->cfg, KMS_CFG_SERVER_KEY_ALIAS),
        .threads = (unsigned)kms_config_int(n->cfg, KMS_CFG_SERVER_THREADS),
        .max_body = (size_t)kms_config_int(n->cfg, KMS_CFG_SERVER_MAX_BODY),
        .conn_timeout_s = (unsigned)kms_config_int(n->cfg, KMS_CFG_SERVER_CONN_TIMEOUT),
        .conn_limit = (unsigned)kms_config_int(n->cfg, KMS_CFG_SERVER_CONN_LIMIT),
        .conn_memory = (size_t)kms_config_int(n->cfg, KMS_CFG_SERVER_CONN_MEMORY),
        .conn_per_address = (unsigned)kms_config_int(n->cfg, KMS_CFG_SERVER_CONN_PER_ADDRESS),
        .header_timeout_s = (unsigned)kms_config_int(n->cfg, KMS_CFG_SERVER_HEADER_TIMEOUT),
        .proxy_trusted = kms_config_str(n->cfg, KMS_CFG_SERVER_PROXY_TRUSTED),
        .conn_rate = n->conn_rate,
        .crl_accept_stale = strcmp(kms_config_str(n->cfg, KMS_CFG_AUTH_CRL_STALE), "accept") == 0,
        .ocsp = n->ocsp,
        .ocsp_hard = strcmp(kms_config_str(n->cfg, KMS_CFG_AUTH_OCSP), "hard") == 0,
        .ticket_lifetime_s = (unsigned)kms_config_int(n->cfg, KMS_CFG_TLS_TICKET_LIFETIME),
        .ticket_rotation_s = (unsigned)kms_config_int(n->cfg, KMS_CFG_TLS_TICKET_ROTATION),
        .ticket_secret = n->cluster_key,
        .admin_address = admin_address(n),
        .admin_port = (uint16_t)kms_config_int(n->cfg, KMS_CFG_ADMIN_PORT),
        .node = n->name,
        .master_key = kms_config_str(n->cfg, KMS_CFG_HSM_MASTER_KEY),
        .cache_type = kms_config_str(n->cfg, KMS_CFG_CACHE_TYPE),
        .backend_name = n->backend->ops->name,
        .keystore = n->ks, /* the server takes it (and the CRLs), also on failure */
        .crls = n->crls,
        .roles = n->roles,
        .backend = n->backend,
        .cache = n->cache,
        .hierarchy = n->hierarchy,
        .audit = n->audit,
        .ratelimit = n->ratelimit,
    };
    n->ks = NULL;
    n->crls = NULL;
    KMS_GUARD(kms_server_start(&d, &n->server));
    const char *crl_url = kms_config_str(n->cfg, KMS_CFG_AUTH_CRL_URL);
    if (crl_url[0] != '\0')
        KMS_GUARD(kms_crl_fetch_start(n->server, crl_url, kms_config_str(n->cfg, KMS_CFG_AUTH_CRL_FILE),
                                      (unsigned)kms_config_int(n->cfg, KMS_CFG_AUTH_CRL_REFRESH), &n->crl_fetch));
    if (n->ksync != NULL)
        KMS_GUARD(kms_ksync_listen(n->ksync));
    char port[16], admin[16];
    (void)snprintf(port, sizeof(port), "%u", (unsigned)kms_server_port(n->server));
    (void)snprintf(admin, sizeof(admin), "%u", (unsigned)kms_server_admin_port(n->server));
    kms_log(KMS_LOG_INFO, "server.started", NULL, "address", d.address, "port", port, "node", n->name, "keystore",
            kms_config_str(n->cfg, KMS_CFG_KEYSTORE_FILE), "admin_port", admin, "backend", d.backend_name, "master_key", d.master_key, "cache", d.cache_type,
            NULL);
    return KMS_OK;
}

/* Warns about certificates of the keystore expiring within the configured
 * number of days (SPEC §6 verify; issue: expiry warnings at start and daily). */
