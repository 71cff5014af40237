/* kmsd configuration (SPEC §7): one table of properties — name, type,
 * default, bounds, secret flag (Redis's standardConfig) — validated at load,
 * immutable after, swapped whole on reload.
 *
 * Sources, lowest to highest precedence: the table's defaults, the
 * kms.properties file and the distributed cache's file (the properties file
 * named by kms.distributed.cache.config.file: kms.cache.* keys only, none of
 * them also in kms.properties), environment variables (KMS_SERVER_PORT for
 * kms.server.port: upper-case, '.' and '-' become '_'; KMIP_SERVER_URL for the
 * legacy kmip.server.url). A secret property P may instead be given as P.file
 * (path of a file holding it; one trailing newline is dropped), in the file or
 * the environment (KMS_KEYSTORE_PASSWORD_FILE). Legacy names
 * (kmip.server.url/.port) fill kms.hsm.server.url/.port when those are unset. */
#ifndef KMS_KMS_CONFIG_H
#define KMS_KMS_CONFIG_H

#include <stdint.h>
#include <stdio.h>

#include "common/error.h"

/* Every property kmsd knows: X(id, name). Types, defaults, bounds and the
 * secret flag are in the table in config.c. */
#define KMS_CONFIG_KEYS(X)                                                                      \
    X(SERVER_ADDRESS, "kms.server.address")                                                      \
    X(SERVER_PORT, "kms.server.port")                                                            \
    X(SERVER_KEY_ALIAS, "kms.server.key.alias")                                                  \
    X(SERVER_THREADS, "kms.server.threads")                                                      \
    X(SERVER_MAX_BODY, "kms.server.max.body")                                                    \
    X(SERVER_CONN_TIMEOUT, "kms.server.connection.timeout")                                      \
    X(SERVER_CONN_LIMIT, "kms.server.connection.limit")                                          \
    X(SERVER_CONN_MEMORY, "kms.server.connection.memory")                                        \
    X(SERVER_CONN_PER_ADDRESS, "kms.server.connection.per.address")                              \
    X(SERVER_HEADER_TIMEOUT, "kms.server.header.timeout")                                        \
    X(SERVER_PROXY_TRUSTED, "kms.server.proxy.trusted")                                          \
    X(RATELIMIT_ENABLED, "kms.ratelimit.enabled")                                                \
    X(RATELIMIT_BACKEND, "kms.ratelimit.backend")                                                \
    X(RATELIMIT_DEVICE, "kms.ratelimit.device")                                                  \
    X(RATELIMIT_ADMIN, "kms.ratelimit.admin")                                                    \
    X(RATELIMIT_CONNECTIONS, "kms.ratelimit.connections")                                        \
    X(TLS_TICKET_LIFETIME, "kms.tls.ticket.lifetime")                                            \
    X(TLS_TICKET_ROTATION, "kms.tls.ticket.rotation")                                            \
    X(ADMIN_ADDRESS, "kms.admin.address")                                                        \
    X(ADMIN_PORT, "kms.admin.port")                                                              \
    X(KEYSTORE_FILE, "kms.keystore.file")                                                        \
    X(KEYSTORE_PASSWORD, "kms.keystore.password")                                                \
    X(KEYSTORE_ALIAS, "kms.keystore.alias")                                                      \
    X(HSM_PROTOCOL, "kms.hsm.protocol")                                                          \
    X(HSM_SERVER_URL, "kms.hsm.server.url")                                                      \
    X(HSM_SERVER_PORT, "kms.hsm.server.port")                                                    \
    X(KMIP_SERVER_URL, "kmip.server.url")                                                        \
    X(KMIP_SERVER_PORT, "kmip.server.port")                                                      \
    X(HSM_MASTER_KEY, "kms.hsm.master.key")                                                      \
    X(HSM_SOFT_FILE, "kms.hsm.soft.file")                                                        \
    X(HSM_POOL_SIZE, "kms.hsm.pool.size")                                                        \
    X(HSM_CONNECT_TIMEOUT, "kms.hsm.connect.timeout.ms")                                         \
    X(HSM_TIMEOUT, "kms.hsm.timeout.ms")                                                         \
    X(HSM_CA_FILE, "kms.hsm.ca.file")                                                            \
    X(HSM_VAULT_NAMESPACE, "kms.hsm.vault.namespace")                                            \
    X(HSM_VAULT_AUTH, "kms.hsm.vault.auth")                                                      \
    X(HSM_VAULT_TOKEN, "kms.hsm.vault.token")                                                    \
    X(HSM_VAULT_RENEW, "kms.hsm.vault.auth.renew-before-expiry")                                 \
    X(HSM_VAULT_AZURE_ROLE, "kms.hsm.vault.auth.azure.role")                                     \
    X(HSM_VAULT_AZURE_PATH, "kms.hsm.vault.auth.azure.path")                                     \
    X(HSM_VAULT_AZURE_RESOURCE, "kms.hsm.vault.auth.azure.resource")                             \
    X(HSM_VAULT_AZURE_IMDS, "kms.hsm.vault.auth.azure.imds")                                     \
    X(HSM_PKCS11_LIBRARY, "kms.hsm.pkcs11.library")                                              \
    X(HSM_PKCS11_TOKEN_LABEL, "kms.hsm.pkcs11.token.label")                                      \
    X(HSM_PKCS11_SLOT, "kms.hsm.pkcs11.slot")                                                    \
    X(HSM_PKCS11_PIN, "kms.hsm.pkcs11.pin")                                                      \
    X(HSM_PKCS11_SESSIONS, "kms.hsm.pkcs11.sessions")                                            \
    X(CACHE_TYPE, "kms.cache.type")                                                              \
    X(CACHE_CONFIG_FILE, "kms.distributed.cache.config.file")                                    \
    X(CACHE_TTL, "kms.cache.ttl")                                                                \
    X(CACHE_IDLE, "kms.cache.idle")                                                              \
    X(CACHE_MAX_ENTRIES, "kms.cache.max.entries")                                                \
    X(CACHE_REDIS_URL, "kms.cache.redis.url")                                                    \
    X(CACHE_REDIS_PASSWORD, "kms.cache.redis.password")                                          \
    X(CACHE_REDIS_TLS_CA_FILE, "kms.cache.redis.tls.ca.file")                                    \
    X(CACHE_REDIS_TLS_CERT_FILE, "kms.cache.redis.tls.cert.file")                                \
    X(CACHE_REDIS_TLS_KEY_FILE, "kms.cache.redis.tls.key.file")                                  \
    X(CACHE_REDIS_SENTINELS, "kms.cache.redis.sentinels")                                        \
    X(CACHE_REDIS_SENTINEL_MASTER, "kms.cache.redis.sentinel.master")                            \
    X(CACHE_REDIS_SENTINEL_PASSWORD, "kms.cache.redis.sentinel.password")                        \
    X(CACHE_CLUSTER_KEY, "kms.cache.cluster.key")                                                \
    X(CLUSTER_NAME, "kms.cluster.name")                                                          \
    X(CLUSTER_KEYSTORE_CHECK_MS, "kms.cluster.keystore.check.ms")                                \
    X(CLUSTER_KEYSTORE_KEEP, "kms.cluster.keystore.keep")                                        \
    X(AUTH_ROLES, "kms.auth.roles")                                                              \
    X(AUTH_CRL_FILE, "kms.auth.crl.file")                                                        \
    X(AUTH_CRL_URL, "kms.auth.crl.url")                                                          \
    X(AUTH_CRL_REFRESH, "kms.auth.crl.refresh")                                                  \
    X(AUTH_CRL_STALE, "kms.auth.crl.stale")                                                      \
    X(AUTH_OCSP, "kms.auth.ocsp")                                                                \
    X(AUTH_OCSP_URL, "kms.auth.ocsp.url")                                                        \
    X(AUTH_OCSP_TIMEOUT, "kms.auth.ocsp.timeout.ms")                                             \
    X(AUTH_OCSP_REFRESH, "kms.auth.ocsp.refresh")                                                \
    X(AUTH_EXPIRY_WARN_DAYS, "kms.auth.expiry.warn.days")                                        \
    X(LOG_LEVEL, "kms.log.level")                                                                \
    X(AUDIT_FILE, "kms.audit.file")                                                              \
    X(AUDIT_FLUSH_MS, "kms.audit.flush.ms")                                                      \
    X(AUDIT_ON_FAILURE, "kms.audit.on_failure")                                                  \
    X(AUDIT_KEY, "kms.audit.key")                                                                \
    X(AUDIT_KEY_ALIAS, "kms.audit.key.alias")                                                    \
    X(AUDIT_CHECKPOINT_LINES, "kms.audit.checkpoint.lines")                                      \
    X(AUDIT_MAX_SIZE, "kms.audit.max.size")                                                      \
    X(AUDIT_KEEP, "kms.audit.keep")                                                              \
    X(NODE_NAME, "kms.node.name")                                                                \
    X(CONFIG_STRICT, "kms.config.strict")

enum kms_config_key {
#define KMS_CFG_ENUM(id, name) KMS_CFG_##id,
    KMS_CONFIG_KEYS(KMS_CFG_ENUM)
#undef KMS_CFG_ENUM
    KMS_CFG_COUNT
};

struct kms_config;

/* Builds a configuration from defaults, then path (NULL: no file), then the
 * environment envp (NULL-terminated "NAME=value" list; NULL: none).
 * Unknown keys in the file (and unknown KMS_* environment variables) are
 * warned about through warn(ctx, message) with the nearest known name
 * ("unknown property 'kms.server.prot' in kms.properties (line 3); did you mean
 * 'kms.server.port'?"), or refused with KMS_ERR_CONFIG when kms.config.strict
 * is true. A key set twice in the file is warned about (the later one wins).
 * Invalid values fail with KMS_ERR_CONFIG and a detail naming the key, the
 * value (secrets: <redacted>) and why; so do P and P.file both given in one
 * source, an unreadable secret file, and the cross-field checks (kmip1 and
 * VAULT need kms.hsm.server.url; azure auth needs its role). KMS_ERR_IO /
 * KMS_ERR_MALFORMED when the file cannot be read or parsed. The cache file's
 * problems are all KMS_ERR_CONFIG: unreadable, not a properties file (XML), a
 * key outside kms.cache.*, a key also set in kms.properties. Caller owns *out. */
kms_rc kms_config_load(const char *path, char *const *envp, void (*warn)(void *ctx, const char *msg), void *ctx,
                       struct kms_config **out) KMS_MUST_CHECK;
void kms_config_free(struct kms_config **c);

/* Typed reads; key must be of that type (STR/ENUM: never NULL, "" when unset). */
const char *kms_config_str(const struct kms_config *c, enum kms_config_key key);
long long kms_config_int(const struct kms_config *c, enum kms_config_key key);
int kms_config_bool(const struct kms_config *c, enum kms_config_key key);
/* kms.hsm.pkcs11.slot as a number, -1 when unset (the load checked its digits). */
long kms_config_pkcs11_slot(const struct kms_config *c);
/* Secret value (e.g. the keystore password), or NULL when unset. Borrowed;
 * lives on the secure heap and is wiped by kms_config_free. */
const char *kms_config_secret(const struct kms_config *c, enum kms_config_key key);
const char *kms_config_name(enum kms_config_key key);
/* One-line description of the property (for --help, dumps and docs). Never NULL. */
const char *kms_config_description(enum kms_config_key key);
/* Where the value came from: "default", "<file>:<line>", "env KMS_...", "file <path>". */
const char *kms_config_source(const struct kms_config *c, enum kms_config_key key);

/* Non-zero when a change of key takes effect on SIGHUP (or a change of
 * kms.properties on disk) without a restart: kms.log.level, the cache's
 * TTL and idle limits, the CRL file, the expiry warning, the cluster
 * keystore check interval and retention. Every other setting needs a restart. */
int kms_config_is_live(enum kms_config_key key);

/* The configuration in force after a reload: live settings from fresh,
 * every other one from old (a changed restart-only setting is never half
 * applied). changed_live / pending receive the names of the live settings
 * that changed and of the restart-only ones that changed, comma-separated
 * (truncated to cap; never a value). Caller owns *out. KMS_ERR_NO_MEMORY. */
kms_rc kms_config_merge_live(const struct kms_config *old, const struct kms_config *fresh, struct kms_config **out,
                             char *changed_live, char *pending, size_t cap) KMS_MUST_CHECK;

/* kmip1: where the HSM is, from kms.hsm.server.url as the install guide
 * writes it: a bare host ("hsm.example.com"), "host:port", "[v6]:port", or a
 * URL "https://host[:port][/]" (kmip:// and tls:// too; the scheme only says
 * TLS: the port is KMIP's, kms.hsm.server.port (5696) unless the URL names
 * one). A URL port and a different kms.hsm.server.port set explicitly is an
 * error, as is any other scheme, a path, a query or user info.
 * KMS_ERR_CONFIG naming the value, its source and what is wrong. */
kms_rc kms_config_kmip_endpoint(const struct kms_config *c, char *host, size_t host_cap, uint16_t *port) KMS_MUST_CHECK;

/* Writes every property as "name = value  # source" with secrets as
 * <redacted>, each after a comment line "# live: description" or
 * "# restart: description". */
void kms_config_dump(const struct kms_config *c, FILE *out);
/* The reference of every property (docs/configuration.md), from the same
 * table: name, type, default, bounds or allowed values, live or restart. */
void kms_config_doc(FILE *out);

#endif
