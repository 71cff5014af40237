/* The CMX key hierarchy (SPEC §2) and the generic wrap primitive.
 *
 *   master key (backend) -> customer key -> user key -> workspace key
 *
 * Every wrapped key is a "kms:v1:" string (kms/wrapped.h, docs/wrapped-key-format.md).
 * The hierarchy is stateless about keys: callers keep the wrapped forms. Only
 * the customer-key step touches the backend; unwrapped customer keys may be
 * kept in the cache (kms/cache.h).
 *
 * All functions are thread-safe. Strings returned through char ** are
 * malloc'd and owned by the caller (free()); secrets by the caller
 * (kms_secret_free). Every unwrap failure, whatever its cause (tampering,
 * wrong level, wrong site, wrong parent, wrong master key), is KMS_ERR_UNWRAP;
 * a master key the backend does not know on *wrap* is KMS_ERR_KEY_NOT_FOUND;
 * backend failures pass through (KMS_ERR_BACKEND*). Invalid site ids or
 * sizes are KMS_ERR_INVALID_FIELD. */
#ifndef KMS_KMS_HIERARCHY_H
#define KMS_KMS_HIERARCHY_H

#include <stddef.h>
#include <stdint.h>

#include "common/error.h"
#include "common/secret.h"
#include "hsm/backend.h"
#include "kms/cache.h"

#define KMS_SITE_ID_MAX 128
/* What a site id must be, said to a caller (decode.h rules). */
#define KMS_SITE_ID_RULE "must be 1..128 characters of A-Z a-z 0-9 . _ : @ -"
#define KMS_KEY_BYTES 32         /* customer, user and workspace keys: AES-256 */
#define KMS_DATA_MAX 1024        /* generic wrap: 1..1024 bytes */

struct kms_hierarchy;

/* b and cache are borrowed and must outlive h (cache may be NULL: no cache).
 * master_key is the name new customer keys are wrapped under. */
kms_rc kms_hierarchy_new(struct kms_backend *b, struct kms_cache *cache, const char *master_key,
                         struct kms_hierarchy **out) KMS_MUST_CHECK;
void kms_hierarchy_free(struct kms_hierarchy **h);

/* Site ids: 1..KMS_SITE_ID_MAX bytes of [A-Za-z0-9._:@-]. */
int kms_site_id_valid(const char *site_id);

kms_rc kms_hierarchy_create_customer(struct kms_hierarchy *h, const char *site_id, char **customer_key) KMS_MUST_CHECK;
kms_rc kms_hierarchy_create_user(struct kms_hierarchy *h, const char *site_id, const char *customer_key,
                                 char **user_key) KMS_MUST_CHECK;
kms_rc kms_hierarchy_create_workspace(struct kms_hierarchy *h, const char *site_id, const char *customer_key,
                                      const char *user_key, char **workspace_key) KMS_MUST_CHECK;
kms_rc kms_hierarchy_unwrap_workspace(struct kms_hierarchy *h, const char *site_id, const char *customer_key,
                                      const char *user_key, const char *workspace_key,
                                      struct kms_secret **key) KMS_MUST_CHECK;

/* Generic primitive under master key `name`. site_id may be "" (none).
 * unwrap also fails with KMS_ERR_UNWRAP when the wrapped key was not made
 * under `name`. rewrap moves a key made under any master key of the backend
 * (an older version of name, or another key: KMIP rotation) to name's current
 * version, keeping its key id; it also takes customer keys, since it never
 * returns plaintext. */
kms_rc kms_hierarchy_wrap(struct kms_hierarchy *h, const char *name, const char *site_id, const uint8_t *pt,
                          size_t pt_len, char **wrapped) KMS_MUST_CHECK;
kms_rc kms_hierarchy_unwrap(struct kms_hierarchy *h, const char *name, const char *site_id, const char *wrapped,
                            struct kms_secret **pt) KMS_MUST_CHECK;
/* The generic unwrap of several keys under master key `name`: per-item
 * results in items[i].rc / .pt (the caller frees each pt), decrypted in one
 * backend round trip when the backend can (Vault: batch_input). Fails as a
 * whole only for n outside 1..KMS_BACKEND_BATCH_MAX or on memory. */
struct kms_unwrap_item {
    const char *site_id; /* "" for none */
    const char *wrapped;
    struct kms_secret *pt;
    kms_rc rc;
};
kms_rc kms_hierarchy_unwrap_batch(struct kms_hierarchy *h, const char *name, struct kms_unwrap_item *items,
                                  size_t n) KMS_MUST_CHECK;

/* The generic wrap of several plaintexts under master key `name`: per-item
 * results in items[i].rc / .wrapped (malloc'd; the caller frees each),
 * encrypted in one backend round trip when the backend can. An item with pt
 * NULL fails with KMS_ERR_INVALID_FIELD. Fails as a whole only for an
 * invalid name, n outside 1..KMS_BACKEND_BATCH_MAX, or on memory. */
struct kms_wrap_item {
    const char *site_id; /* "" for none */
    const struct kms_secret *pt;
    char *wrapped;
    kms_rc rc;
};
kms_rc kms_hierarchy_wrap_batch(struct kms_hierarchy *h, const char *name, struct kms_wrap_item *items,
                                size_t n) KMS_MUST_CHECK;

kms_rc kms_hierarchy_rewrap(struct kms_hierarchy *h, const char *name, const char *site_id, const char *wrapped,
                            char **rewrapped) KMS_MUST_CHECK;
kms_rc kms_hierarchy_datakey(struct kms_hierarchy *h, const char *name, const char *site_id, size_t nbytes,
                             struct kms_secret **pt, char **wrapped) KMS_MUST_CHECK;
kms_rc kms_hierarchy_key_info(struct kms_hierarchy *h, const char *name, struct kms_key_info *out) KMS_MUST_CHECK;

#endif
