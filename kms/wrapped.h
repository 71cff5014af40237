/* The wrapped-key format (SPEC §3; byte layout in docs/wrapped-key-format.md).
 *
 *   text = "kms:v1:" base64(blob)          blob = header || payload
 *
 * The header names the format version, the key level, who wrapped it (a
 * backend kind, or kmsd itself under the parent key), the key's own id, its
 * parent's id, the site id and the master key reference. The header bytes,
 * exactly as they appear in the blob, are the AEAD associated data of the
 * payload, so none of them can be changed or replayed in another context
 * without the unwrap failing authentication.
 *
 * This module only encodes and parses; kms/hierarchy.c does the crypto. Every
 * parse failure is KMS_ERR_UNWRAP (one error, no oracle) with the reason in
 * the thread-local detail for the log. */
#ifndef KMS_KMS_WRAPPED_H
#define KMS_KMS_WRAPPED_H

#include <stddef.h>
#include <stdint.h>

#include "common/buf.h"
#include "common/error.h"
#include "hsm/backend.h"
#include "kms/hierarchy.h"

#define KMS_WRAPPED_PREFIX "kms:v1:"
#define KMS_WRAPPED_VERSION 1
#define KMS_WRAPPED_TEXT_MAX 8192 /* whole text, prefix included, without the NUL */
#define KMS_WRAPPED_BLOB_MAX ((KMS_WRAPPED_TEXT_MAX - (sizeof(KMS_WRAPPED_PREFIX) - 1)) / 4 * 3)
#define KMS_KEY_ID_LEN 16
#define KMS_GCM_NONCE_LEN 12
#define KMS_GCM_TAG_LEN 16

/* Recorded in every wrapped key: do not renumber. */
enum kms_key_level {
    KMS_LEVEL_CUSTOMER = 1,
    KMS_LEVEL_USER = 2,
    KMS_LEVEL_WORKSPACE = 3,
    KMS_LEVEL_DATA = 4,
};

/* Wrapper kind: enum kms_backend_kind (1..3) for keys wrapped by a backend's
 * master key, or this value for keys wrapped by kmsd under the parent key
 * (AES-256-GCM). */
#define KMS_WRAPPER_PARENT 0x80

struct kms_wrapped_header {
    uint8_t level;                      /* enum kms_key_level */
    uint8_t wrapper;                    /* enum kms_backend_kind or KMS_WRAPPER_PARENT */
    uint8_t key_id[KMS_KEY_ID_LEN];     /* random, stable across rewrap */
    uint8_t parent_id[KMS_KEY_ID_LEN];  /* parent's key id; zeros under a master key */
    char site_id[KMS_SITE_ID_MAX + 1];  /* "" only for level data */
    struct kms_master_ref master;       /* name "" and version 0 when parent-wrapped */
};

/* A parsed wrapped key. The pointers point into blob, which it owns. */
struct kms_wrapped {
    struct kms_wrapped_header hdr;
    uint8_t *blob;
    size_t blob_len;
    size_t header_len;     /* the AAD is blob[0..header_len) */
    const uint8_t *nonce;  /* KMS_GCM_NONCE_LEN bytes; NULL when master-wrapped */
    const uint8_t *ct;     /* parent-wrapped: the GCM ciphertext; else the backend's ciphertext */
    size_t ct_len;
    const uint8_t *tag;    /* KMS_GCM_TAG_LEN bytes; NULL when master-wrapped */
};

/* Appends the serialized header h to out (the caller's buffer, which then
 * holds the AAD). Checks every field: KMS_ERR_INVALID_FIELD for an invalid
 * level/wrapper combination, site id or master name; KMS_ERR_TOO_LARGE /
 * KMS_ERR_NO_MEMORY from the buffer. */
kms_rc kms_wrapped_header_encode(const struct kms_wrapped_header *h, struct kms_buf *out) KMS_MUST_CHECK;

/* Payload of a parent-wrapped key, appended after the header:
 * nonce (12) || u16 ct_len || ct || tag (16). ct_len 1..KMS_DATA_MAX. */
kms_rc kms_wrapped_append_parent_payload(struct kms_buf *out, const uint8_t nonce[KMS_GCM_NONCE_LEN],
                                         const uint8_t *ct, size_t ct_len,
                                         const uint8_t tag[KMS_GCM_TAG_LEN]) KMS_MUST_CHECK;

/* Payload of a master-wrapped key: u16 ct_len || ct, ct_len 1..KMS_BACKEND_CT_MAX. */
kms_rc kms_wrapped_append_master_payload(struct kms_buf *out, const uint8_t *ct, size_t ct_len) KMS_MUST_CHECK;

/* "kms:v1:" + base64(blob) into a new malloc'd string the caller frees.
 * KMS_ERR_TOO_LARGE past KMS_WRAPPED_TEXT_MAX, KMS_ERR_NO_MEMORY. */
kms_rc kms_wrapped_to_text(const uint8_t *blob, size_t blob_len, char **text) KMS_MUST_CHECK;

/* Parses a NUL-terminated wrapped key. Does not authenticate it: that is the
 * unwrap's job. *out is new and owned by the caller (kms_wrapped_free).
 * Every failure (NULL, missing prefix, oversized text, bad base64, truncated,
 * trailing bytes, unknown version, level or wrapper, inconsistent fields) is
 * KMS_ERR_UNWRAP with the reason in the detail; KMS_ERR_NO_MEMORY. */
kms_rc kms_wrapped_parse(const char *text, struct kms_wrapped **out) KMS_MUST_CHECK;
void kms_wrapped_free(struct kms_wrapped **w);

/* SHA-256 of the blob: the cache key of an unwrapped customer key. */
kms_rc kms_wrapped_digest(const struct kms_wrapped *w, uint8_t out[32]) KMS_MUST_CHECK;

/* kms_master_name_valid (hsm/backend.h) checks master key names. */

/* "customer", "user", "workspace", "data", or "unknown". Static strings. */
const char *kms_key_level_name(unsigned level);
/* "soft", "kmip", "vault", "parent", or "unknown". Static strings. */
const char *kms_wrapper_name(unsigned wrapper);

/* What a wrapped key says about itself, for audit lines. Not authenticated:
 * describe only parses, so an attacker chooses every field; never decide
 * anything from it. */
struct kms_wrapped_info {
    const char *level;                   /* kms_key_level_name() */
    const char *wrapper;                 /* kms_wrapper_name() */
    char key_id[2 * KMS_KEY_ID_LEN + 1]; /* lowercase hex */
    char parent_id[2 * KMS_KEY_ID_LEN + 1];
    char site_id[KMS_SITE_ID_MAX + 1];
    char master_name[KMS_MASTER_NAME_MAX + 1]; /* "" when parent-wrapped */
    uint32_t master_version;
};

/* Fills *out from text (NUL-terminated). KMS_ERR_UNWRAP when it does not
 * parse (see kms_wrapped_parse), KMS_ERR_NO_MEMORY. On error the strings of
 * *out are empty and level/wrapper are "unknown". */
kms_rc kms_wrapped_describe(const char *text, struct kms_wrapped_info *out) KMS_MUST_CHECK;
/* The key id of a wrapped key's text, as hex, from its first base64 group
 * only (no full parse, no authentication): for audit lines and logs, which
 * need the id of a key the request path parses anyway. */
kms_rc kms_wrapped_peek_key_id(const char *text, char hex[2 * KMS_KEY_ID_LEN + 1]) KMS_MUST_CHECK;

#endif
