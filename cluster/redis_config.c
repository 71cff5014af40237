#include "cluster/redis_config.h"

#include <string.h>

#include "cluster/redis_cache.h"
#include <stdio.h>

#include "kms/cluster_key.h"
#include "common/secret.h"

kms_rc kms_redis_config_cluster_key(const struct kms_config *cfg, const char *password, struct kms_secret **out)
{
    *out = NULL;
    const char *text = kms_config_secret(cfg, KMS_CFG_CACHE_CLUSTER_KEY);
    if (text == NULL || text[0] == '\0')
        return kms_fail(KMS_ERR_CONFIG, "kms.cache.type=distributed needs kms.cache.cluster.key.file: the cluster key "
                                        "sealed under the keystore password, the same on every node (make one with "
                                        "'kmsctl cluster key create --config kms.properties --out FILE')");
    char what[512];
    (void)snprintf(what, sizeof(what), "kms.cache.cluster.key (%s)", kms_config_source(cfg, KMS_CFG_CACHE_CLUSTER_KEY));
    if (password == NULL)
        password = kms_config_secret(cfg, KMS_CFG_KEYSTORE_PASSWORD);
    KMS_GUARD(kms_cluster_key_open(text, password, what, out));
    return KMS_OK;
}

/* A secret property as a kms_secret, or NULL when unset or empty. */
static kms_rc secret_of(const struct kms_config *cfg, enum kms_config_key k, struct kms_secret **out)
{
    *out = NULL;
    const char *v = kms_config_secret(cfg, k);
    if (v == NULL || v[0] == '\0')
        return KMS_OK;
    return kms_secret_from((const uint8_t *)v, strlen(v), out);
}

static const char *or_null(const char *s)
{
    return s != NULL && s[0] != '\0' ? s : NULL;
}

kms_rc kms_redis_config_open(const struct kms_config *cfg, const char *node, const struct kms_secret *cluster_key,
                             struct kms_cache *local, struct kms_cache **out)
{
    *out = NULL;
    struct kms_secret *key = NULL, *password = NULL, *sentinel_password = NULL;
    kms_rc rc = cluster_key != NULL
                    ? kms_secret_from(kms_secret_cdata(cluster_key), kms_secret_len(cluster_key), &key)
                    : kms_redis_config_cluster_key(cfg, NULL, &key);
    if (rc == KMS_OK)
        rc = secret_of(cfg, KMS_CFG_CACHE_REDIS_PASSWORD, &password);
    if (rc == KMS_OK)
        rc = secret_of(cfg, KMS_CFG_CACHE_REDIS_SENTINEL_PASSWORD, &sentinel_password);
    if (rc != KMS_OK) {
        kms_secret_free(&key);
        kms_secret_free(&password);
        kms_cache_free(&local);
        return rc;
    }
    const char *sentinels = or_null(kms_config_str(cfg, KMS_CFG_CACHE_REDIS_SENTINELS));
    const char *url = kms_config_str(cfg, KMS_CFG_CACHE_REDIS_URL);
    /* why: the default url names a host; with sentinels they name the master */
    if (sentinels != NULL && strcmp(kms_config_source(cfg, KMS_CFG_CACHE_REDIS_URL), "default") == 0)
        url = "redis://";
    long long ttl = kms_config_int(cfg, KMS_CFG_CACHE_TTL);
    struct kms_redis_options o = {
        .url = url,
        .password = password,
        .ttl_s = ttl > 0 && ttl < 0x7fffffff ? (unsigned)ttl : 0,
        .cluster_key = key,
        .node = node,
        .tls_ca_file = or_null(kms_config_str(cfg, KMS_CFG_CACHE_REDIS_TLS_CA_FILE)),
        .tls_cert_file = or_null(kms_config_str(cfg, KMS_CFG_CACHE_REDIS_TLS_CERT_FILE)),
        .tls_key_file = or_null(kms_config_str(cfg, KMS_CFG_CACHE_REDIS_TLS_KEY_FILE)),
        .sentinels = sentinels,
        .sentinel_master = sentinels ? kms_config_str(cfg, KMS_CFG_CACHE_REDIS_SENTINEL_MASTER) : NULL,
        .sentinel_password = sentinel_password,
    };
    rc = kms_cache_redis_new(&o, local, out); /* takes local */
    kms_secret_free(&key);
    kms_secret_free(&password);
    kms_secret_free(&sentinel_password);
    return rc;
}
