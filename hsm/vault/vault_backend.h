/* The Vault Transit backend (SPEC §8 "VAULT"; reference/vault-transit.md;
 * docs/vault.md for operators).
 *
 * The master key is a Transit key; kmsd never sees it. encrypt/decrypt are
 * POST transit/encrypt|decrypt/:name with the key version the wrapped key
 * records, so rotation in Vault keeps old wrapped keys unwrapping. The
 * ciphertext a wrapped key stores is Vault's own "vault:v<N>:<base64>" string.
 *
 * Associated data: Transit's encrypt takes no AAD that survives transit/rewrap
 * and that every Vault version honours, so kmsd binds its AAD itself (see
 * docs/vault.md, "AAD binding"):
 *   - key not derived: the plaintext sent is SHA-256(aad) || key, and after
 *     decrypt the first 32 bytes must equal SHA-256(aad) (CRYPTO_memcmp);
 *   - key derived: context = base64(SHA-256(aad)), so Vault derives a
 *     different key for another AAD and its GCM tag check fails.
 * Either way a wrong AAD is KMS_ERR_UNWRAP.
 *
 * Error mapping (all ops): Vault's {"errors":[...]} -> KMS_ERR_BACKEND with the
 * first error in the detail; 403 -> re-authenticate once and retry, then
 * KMS_ERR_BACKEND; "encryption key not found" / GET 404 / "key not found" ->
 * KMS_ERR_KEY_NOT_FOUND; 503 (sealed), 429, connection refused, TLS failure ->
 * KMS_ERR_BACKEND_UNAVAILABLE; timeout -> KMS_ERR_BACKEND_TIMEOUT; on decrypt
 * "cipher: message authentication failed", "invalid ciphertext...", a version
 * below min_decryption_version, an AAD digest mismatch -> KMS_ERR_UNWRAP; a
 * reply that is not the JSON expected, truncated or larger than max_response
 * -> KMS_ERR_BACKEND. The token never appears in a detail or a log line. */
#ifndef KMS_HSM_VAULT_BACKEND_H
#define KMS_HSM_VAULT_BACKEND_H

#include <openssl/x509.h>
#include <stddef.h>
#include <stdint.h>

#include "common/error.h"
#include "common/secret.h"
#include "hsm/backend.h"
#include "hsm/vault/vault_types.h"

#define KMS_VAULT_IMDS_DEFAULT "http://169.254.169.254"
#define KMS_VAULT_AZURE_PATH_DEFAULT "/v1/auth/azure/login"
#define KMS_VAULT_AZURE_RESOURCE_DEFAULT "https://vault.hashicorp.com/"
#define KMS_VAULT_BATCH_MAX 256 /* items per batch call: keeps replies under the 1 MiB cap */

/* Everything borrowed; the backend copies what it keeps. Fill with
 * kms_vault_options_init, then set what the configuration says. */
struct kms_vault_options {
    const char *address;            /* kms.hsm.server.url (+ port): "https://vault.example:8200" */
    const char *ns;                 /* kms.hsm.vault.namespace; NULL or "" for none */
    enum kms_vault_auth_kind auth;  /* kms.hsm.vault.auth: token (default) or azure */
    const char *token;              /* kms.hsm.vault.token (.file / env): token auth */
    unsigned renew_before_expiry;   /* kms.hsm.vault.auth.renew-before-expiry, default 30 */
    const char *azure_role;         /* kms.hsm.vault.auth.azure.role */
    const char *azure_path;         /* kms.hsm.vault.auth.azure.path, default /v1/auth/azure/login */
    const char *azure_resource;     /* kms.hsm.vault.auth.azure.resource, default https://vault.hashicorp.com/ */
    const char *imds_address;       /* NULL or "": http://169.254.169.254 (tests: loopback) */
    /* Trusted CAs for an https address, any combination; none: the system store. */
    STACK_OF(X509) *ca_certs;       /* e.g. the keystore's trusted (CA) entries */
    const uint8_t *ca_pem;          /* PEM bytes */
    size_t ca_pem_len;
    const char *ca_file;            /* a PEM file (used only when the two above are empty) */
    long connect_timeout_ms;        /* default 3000 */
    long timeout_ms;                /* whole request, default 10000 */
    size_t max_response;            /* reply cap, default 1 MiB */
    unsigned key_cache_ms;          /* how long resolve() trusts a key's latest version, default 5000 */
};

/* Defaults as documented above, everything else NULL/0. */
void kms_vault_options_init(struct kms_vault_options *o);

/* Builds a Vault base address from kms.hsm.server.url and .port: the scheme
 * defaults to https, and port (when > 0) is added when the URL has none.
 * KMS_ERR_CONFIG when url is not a URL or the result is longer than cap - 1. */
kms_rc kms_vault_address(const char *url, long port, char *out, size_t cap) KMS_MUST_CHECK;

/* Opens the backend: checks the options, authenticates (token lookup-self or
 * Azure login), starts the renewal thread. *out is the caller's
 * (kms_backend_free). Does not check that any key exists. Errors:
 * KMS_ERR_CONFIG (invalid address, namespace, CA material, missing token or
 * role), KMS_ERR_BACKEND (Vault refused the token or the login; the reason in
 * the detail), KMS_ERR_BACKEND_UNAVAILABLE, KMS_ERR_BACKEND_TIMEOUT,
 * KMS_ERR_NO_MEMORY. */
kms_rc kms_vault_backend_open(const struct kms_vault_options *opts, struct kms_backend **out) KMS_MUST_CHECK;

/* ---- batches (Transit batch_input, §1.5) --------------------------------- */

/* One item of a batch encrypt: in aad, pt (borrowed); out ct[0..ct_len) in
 * the caller's ct buffer of ct_cap bytes, and rc. */
struct kms_vault_enc_item {
    const uint8_t *aad;
    size_t aad_len;
    const struct kms_secret *pt;
    uint8_t *ct;
    size_t ct_cap;
    size_t ct_len;
    kms_rc rc;
};

/* One item of a batch decrypt: in aad, the version the wrapped key records
 * and the ciphertext (borrowed); out pt (a new secret the caller frees) and rc. */
struct kms_vault_dec_item {
    const uint8_t *aad;
    size_t aad_len;
    uint32_t version;
    const uint8_t *ct;
    size_t ct_len;
    struct kms_secret *pt;
    kms_rc rc;
};

/* Encrypts items[0..n) (1..KMS_VAULT_BATCH_MAX) under ref in one request.
 * KMS_OK when Vault answered per item: each item's rc is then KMS_OK or its
 * own error (as the single-item encrypt would map it). Otherwise the whole
 * call's error (as encrypt), also copied into every item's rc;
 * KMS_ERR_INVALID_FIELD when b is not a Vault backend or n is out of range. */
kms_rc kms_vault_encrypt_batch(struct kms_backend *b, const struct kms_master_ref *ref,
                               struct kms_vault_enc_item *items, size_t n) KMS_MUST_CHECK;
/* Decrypts items[0..n) made under key `name` in one request; as above. An
 * item whose ciphertext is malformed or not of its version fails alone with
 * KMS_ERR_UNWRAP and is not sent. */
kms_rc kms_vault_decrypt_batch(struct kms_backend *b, const char *name, struct kms_vault_dec_item *items,
                               size_t n) KMS_MUST_CHECK;

/* ---- rewrap and administration (kmsctl hsm) ------------------------------ */

/* transit/rewrap: ct (made under ref with aad) re-encrypted by Vault under
 * the key's latest version without the plaintext leaving Vault; the result
 * goes to out[0..cap), *out_len, and *new_ref names its version. It decrypts
 * with the same aad under *new_ref. Errors as decrypt (KMS_ERR_UNWRAP for a
 * malformed ct or one of another version than ref). Note: a kms:v1 wrapped
 * key records the master version inside its authenticated header, so the
 * hierarchy's rewrap must re-seal (decrypt + encrypt) instead. */
kms_rc kms_vault_rewrap(struct kms_backend *b, const struct kms_master_ref *ref, const uint8_t *aad,
                        size_t aad_len, const uint8_t *ct, size_t ct_len, uint8_t *out, size_t cap,
                        size_t *out_len, struct kms_master_ref *new_ref) KMS_MUST_CHECK;

struct kms_vault_status {
    char address[KMS_VAULT_URL_MAX];
    struct kms_vault_health health;    /* health.status 0 when Vault could not be reached */
    struct kms_vault_auth_state auth;
};
/* GET sys/health (no token, no namespace) plus the token's state. KMS_OK
 * when Vault answered the health check (sealed, standby, ... are in *out);
 * otherwise the transport error (KMS_ERR_BACKEND_UNAVAILABLE, ...), with
 * address and auth still filled. */
kms_rc kms_vault_status(struct kms_backend *b, struct kms_vault_status *out) KMS_MUST_CHECK;

/* Creates an aes256-gcm96 Transit key (not derived, not exportable).
 * KMS_ERR_INVALID_FIELD when the name is invalid or the key exists;
 * otherwise the request errors above. */
kms_rc kms_vault_create_key(struct kms_backend *b, const char *name) KMS_MUST_CHECK;
/* Key metadata, never material. KMS_ERR_KEY_NOT_FOUND when absent. */
kms_rc kms_vault_show_key(struct kms_backend *b, const char *name, struct kms_vault_key_meta *out) KMS_MUST_CHECK;
/* transit/keys/:name/rotate; *new_version (may be NULL) is the new latest
 * version, which resolve() returns from now on. KMS_ERR_KEY_NOT_FOUND. */
kms_rc kms_vault_rotate_key(struct kms_backend *b, const char *name, uint32_t *new_version) KMS_MUST_CHECK;

/* Vault key names (framework.GenericNameRegex, §0): 1..KMS_MASTER_NAME_MAX of
 * [A-Za-z0-9_.-], starting and ending with [A-Za-z0-9_]. */
int kms_vault_key_name_valid(const char *name);

#endif
