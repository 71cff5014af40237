/* The cluster key (SPEC §9, §11): 32 random bytes every node of a cluster
 * holds, from which the cache's value and name keys, the shared TLS ticket
 * keys and the keystore-distribution key are derived. It is never stored in
 * clear: on disk (kms.cache.cluster.key.file) or in the environment it is one
 * line, sealed under a key derived from the keystore password, which every
 * node of a cluster shares because they share the keystore:
 *
 *   kmsd-cluster-key:v1:<iterations>:<base64 salt (16)>:<base64 nonce ‖ ct ‖ tag>
 *
 * wrapping key = PBKDF2-HMAC-SHA256(password, salt, iterations), sealed with
 * common/aead, the associated data being the line up to its last ':'.
 * `kmsctl cluster key create` writes one. */
#ifndef KMS_KMS_CLUSTER_KEY_H
#define KMS_KMS_CLUSTER_KEY_H

#include "common/error.h"
#include "common/secret.h"

#define KMS_CLUSTER_KEY_BYTES 32
#define KMS_CLUSTER_KEY_MAGIC "kmsd-cluster-key:v1:"
#define KMS_CLUSTER_KEY_ITERATIONS 600000u /* OWASP 2023 for PBKDF2-HMAC-SHA256 */

/* Non-zero when text starts like a sealed cluster key. */
int kms_cluster_key_is_sealed(const char *text);

/* Seals key (KMS_CLUSTER_KEY_BYTES) under password with iterations
 * (10000..10000000) of PBKDF2; *out is a malloc'd NUL-terminated line
 * ending in '\n'. Errors: KMS_ERR_INVALID_FIELD (key length, empty password,
 * iterations), KMS_ERR_CRYPTO, KMS_ERR_NO_MEMORY. */
kms_rc kms_cluster_key_seal(const struct kms_secret *key, const char *password, unsigned iterations, char **out)
    KMS_MUST_CHECK;

/* Opens a sealed line (surrounding white space ignored) with password.
 * what names the source in error details (a property or file name).
 * Errors: KMS_ERR_CONFIG (not a sealed key: the detail says how to make
 * one; malformed), KMS_ERR_KEYSTORE_PASSWORD (does not open with this
 * password), KMS_ERR_CRYPTO, KMS_ERR_NO_MEMORY. The detail never holds the
 * key or the password. The caller owns *out. */
kms_rc kms_cluster_key_open(const char *text, const char *password, const char *what, struct kms_secret **out)
    KMS_MUST_CHECK;

#endif
