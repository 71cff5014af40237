/* The one table every key backend implements (SPEC §8), as curl's TLS
 * backends do (lib/vtls/vtls_int.h). The master key never leaves a backend:
 * callers hand it plaintext to encrypt under a named master key, or a
 * ciphertext it produced earlier to decrypt.
 *
 * Errors a backend returns: KMS_ERR_KEY_NOT_FOUND (no such master key or
 * version), KMS_ERR_UNWRAP (authentication failed: wrong key, AAD or
 * ciphertext), KMS_ERR_BACKEND (it answered an error), KMS_ERR_BACKEND_UNAVAILABLE
 * (unreachable), KMS_ERR_BACKEND_TIMEOUT, KMS_ERR_NO_MEMORY, KMS_ERR_CRYPTO. */
#ifndef KMS_HSM_BACKEND_H
#define KMS_HSM_BACKEND_H

#include <stddef.h>
#include <stdint.h>

#include "common/error.h"
#include "common/secret.h"

/* Recorded in every wrapped key: do not renumber. */
enum kms_backend_kind {
    KMS_BACKEND_SOFT = 1,
    KMS_BACKEND_KMIP = 2,
    KMS_BACKEND_VAULT = 3,
    KMS_BACKEND_PKCS11 = 4,
};

#define KMS_MASTER_NAME_MAX 255
#define KMS_BACKEND_CT_MAX 4096 /* largest ciphertext a backend may return */

/* Which master key (and version) wrapped something. For KMIP the name is the
 * unique identifier and the version is 0; for soft, Vault and PKCS#11, name
 * (PKCS#11: the key objects' CKA_LABEL) + version. */
struct kms_master_ref {
    char name[KMS_MASTER_NAME_MAX + 1];
    uint32_t version;
};

struct kms_key_info {
    char name[KMS_MASTER_NAME_MAX + 1];
    const char *backend;     /* "soft", "kmip", "vault", "pkcs11" (static) */
    uint32_t current_version;
    uint32_t min_version;    /* oldest version that still decrypts */
    char state[32];          /* "active", "deactivated", ... */
    char algorithm[32];      /* "AES-256-GCM" */
    long long created;       /* unix seconds of the current version, 0 if unknown */
};

struct kms_backend;

/* One ciphertext of a batch decrypt: inputs borrowed, pt and rc set by the call. */
struct kms_backend_batch_item {
    const struct kms_master_ref *ref;
    const uint8_t *aad;
    size_t aad_len;
    const uint8_t *ct;
    size_t ct_len;
    struct kms_secret *pt; /* new secret on success, else NULL */
    kms_rc rc;             /* this item's result */
};

/* One plaintext of a batch encrypt: inputs borrowed, ct filled by the call. */
struct kms_backend_seal_item {
    const uint8_t *aad;
    size_t aad_len;
    const struct kms_secret *pt;
    uint8_t *ct; /* ct_cap bytes, the caller's */
    size_t ct_cap;
    size_t ct_len;
    kms_rc rc;
};

#define KMS_BACKEND_BATCH_MAX 256

struct kms_backend_ops {
    const char *name;
    enum kms_backend_kind kind;
    /* Resolve name to the version new ciphertexts are made with. */
    kms_rc (*resolve)(struct kms_backend *b, const char *name, struct kms_master_ref *out);
    /* Encrypt pt under ref with associated data aad; ct gets at most ct_cap
     * bytes (backend-specific layout: nonce, ciphertext, tag). */
    kms_rc (*encrypt)(struct kms_backend *b, const struct kms_master_ref *ref, const uint8_t *aad,
                      size_t aad_len, const struct kms_secret *pt, uint8_t *ct, size_t ct_cap,
                      size_t *ct_len);
    /* Decrypt ct made by encrypt under ref with aad; *pt is a new secret. */
    kms_rc (*decrypt)(struct kms_backend *b, const struct kms_master_ref *ref, const uint8_t *aad,
                      size_t aad_len, const uint8_t *ct, size_t ct_len, struct kms_secret **pt);
    /* Metadata, never material. */
    kms_rc (*describe)(struct kms_backend *b, const char *name, struct kms_key_info *out);
    /* Cheap liveness check for /health/ready. */
    kms_rc (*probe)(struct kms_backend *b);
    /* Frees everything the backend holds (wiping keys). */
    void (*destroy)(struct kms_backend *b);
    /* Optional (NULL: callers loop over decrypt): decrypts n (1..KMS_BACKEND_BATCH_MAX)
     * ciphertexts made under master key `name` in one round trip, each
     * item's result in items[i].rc; returns an error only when the whole
     * call failed (then every item carries it). */
    kms_rc (*decrypt_batch)(struct kms_backend *b, const char *name, struct kms_backend_batch_item *items, size_t n);
    /* Optional likewise: encrypts n plaintexts under ref in one round trip. */
    kms_rc (*encrypt_batch)(struct kms_backend *b, const struct kms_master_ref *ref,
                            struct kms_backend_seal_item *items, size_t n);
};

/* Every backend struct begins with this header. */
struct kms_backend {
    const struct kms_backend_ops *ops;
};

/* Master key names, as every backend and the wrapped-key format accept them:
 * 1..KMS_MASTER_NAME_MAX printable ASCII characters, no space. */
int kms_master_name_valid(const char *name);

/* Calls ops->destroy and sets *b = NULL; takes NULL. */
void kms_backend_free(struct kms_backend **b);

#endif
