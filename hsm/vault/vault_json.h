/* Strict readers of Vault's JSON replies (reference/vault-transit.md §0-5).
 *
 * Every reply is parsed once with jansson (duplicate keys refused, one JSON
 * object, no trailing bytes) and then read by one function per reply kind,
 * which checks the type of every field it uses; fields it does not use are
 * ignored, as Vault adds fields between releases. A reply that does not have
 * the expected shape is the backend's fault: KMS_ERR_BACKEND with the reason
 * (never a value that may be secret) in the detail.
 *
 * No curl here, so tests/fuzz/fuzz_vault_json.c drives these directly. */
#ifndef KMS_HSM_VAULT_JSON_H
#define KMS_HSM_VAULT_JSON_H

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

#include "common/buf.h"
#include "common/error.h"
#include "common/secret.h"
#include "hsm/backend.h"
#include "hsm/vault/vault_types.h"

#define KMS_VAULT_ERROR_MAX 256    /* first Vault error kept for the detail */
#define KMS_VAULT_TOKEN_MAX 1024   /* longest Vault/Azure token accepted */
#define KMS_VAULT_JWT_MAX 16384    /* longest IMDS access token accepted */
#define KMS_VAULT_AZURE_FIELD_MAX 256

/* Parses body[0..len) as one JSON object into a new *out (json_decref).
 * KMS_ERR_BACKEND when it is not JSON, not an object, has a duplicate key or
 * an embedded NUL, or is nested deeper than jansson's limit. */
kms_rc kms_vault_json_load(const uint8_t *body, size_t len, json_t **out) KMS_MUST_CHECK;

/* The first string of {"errors":[...]} into out (cap >= 1), control
 * characters turned into spaces, truncated. Returns 1 when root has an
 * "errors" array (possibly empty: out is then ""), 0 otherwise. */
int kms_vault_json_first_error(const json_t *root, char *out, size_t cap);

/* GET transit/keys/:name, data object (§1.2), into out (vault_types.h). */
kms_rc kms_vault_json_key(const json_t *root, struct kms_vault_key_meta *out) KMS_MUST_CHECK;

/* Checks that ct[0..len) is "vault:v<N>:" + strict standard base64 of at
 * least nonce + tag (28 bytes), N in 1..UINT32_MAX without leading zeros, and
 * returns N. KMS_ERR_MALFORMED otherwise. */
kms_rc kms_vault_ct_parse(const uint8_t *ct, size_t len, uint32_t *version) KMS_MUST_CHECK;

/* An encrypt/rewrap result object ({"ciphertext","key_version"?}): the
 * ciphertext (checked with kms_vault_ct_parse) copied into out[0..cap) without
 * a NUL, its length and version. A key_version field, when present, must agree
 * with the prefix. KMS_ERR_BACKEND otherwise (too long for cap included). */
kms_rc kms_vault_json_ct_item(const json_t *item, uint8_t *out, size_t cap, size_t *len,
                              uint32_t *version) KMS_MUST_CHECK;
/* Same, from a whole reply (its data object). */
kms_rc kms_vault_json_ciphertext(const json_t *root, uint8_t *out, size_t cap, size_t *len,
                                 uint32_t *version) KMS_MUST_CHECK;

/* A decrypt result object ({"plaintext":"<base64>"}): *out is a new secret
 * with the decoded bytes (1..65536 of them). The base64 text inside the JSON
 * value is wiped. KMS_ERR_BACKEND when absent, not a string, not base64 or
 * empty; KMS_ERR_NO_MEMORY. */
kms_rc kms_vault_json_pt_item(json_t *item, struct kms_secret **out) KMS_MUST_CHECK;
kms_rc kms_vault_json_plaintext(json_t *root, struct kms_secret **out) KMS_MUST_CHECK;

/* data.batch_results of a batch reply (§1.5): the array, borrowed from root,
 * and its size, which must equal expected. */
kms_rc kms_vault_json_batch(const json_t *root, size_t expected, json_t **results) KMS_MUST_CHECK;
/* The "error" string of one batch item into out; returns 1 when the item has a
 * non-empty error (out then holds it), 0 when not. */
int kms_vault_json_item_error(const json_t *item, char *out, size_t cap);

/* GET auth/token/lookup-self (§2): remaining ttl (0 = never expires with
 * expire_time null), renewable. */
struct kms_vault_token_info {
    long long ttl;
    int renewable;
};
kms_rc kms_vault_json_lookup_self(const json_t *root, struct kms_vault_token_info *out) KMS_MUST_CHECK;

/* The "auth" object of renew-self or a login (§2, §3): lease_duration and
 * renewable; with token != NULL also auth.client_token as a new secret
 * (printable ASCII, 1..KMS_VAULT_TOKEN_MAX bytes). */
kms_rc kms_vault_json_auth(json_t *root, struct kms_secret **token, long long *lease,
                           int *renewable) KMS_MUST_CHECK;

/* IMDS token reply (§3): access_token as a new secret, expires_in seconds (a
 * JSON string of digits, as IMDS sends it). */
kms_rc kms_vault_json_imds_token(json_t *root, struct kms_secret **jwt, long long *expires_in) KMS_MUST_CHECK;

/* IMDS instance reply (§3): compute.subscriptionId, resourceGroupName, name,
 * vmScaleSetName (optional). Printable ASCII strings. */
struct kms_vault_instance {
    char subscription_id[KMS_VAULT_AZURE_FIELD_MAX];
    char resource_group[KMS_VAULT_AZURE_FIELD_MAX];
    char vm_name[KMS_VAULT_AZURE_FIELD_MAX];
    char vmss_name[KMS_VAULT_AZURE_FIELD_MAX];
};
kms_rc kms_vault_json_imds_instance(const json_t *root, struct kms_vault_instance *out) KMS_MUST_CHECK;

kms_rc kms_vault_json_health(const json_t *root, struct kms_vault_health *out) KMS_MUST_CHECK;

/* Appends s[0..len) to b as a quoted JSON string ("\"", "\\" and control
 * characters escaped). For request bodies built without jansson because they
 * carry secrets (b is wiped on free). KMS_ERR_TOO_LARGE / KMS_ERR_NO_MEMORY. */
kms_rc kms_vault_json_append_str(struct kms_buf *b, const char *s, size_t len) KMS_MUST_CHECK;

#endif
