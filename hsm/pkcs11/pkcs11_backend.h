/* The PKCS#11 backend (SPEC §12, docs/pkcs11.md): master keys are AES-256
 * secret-key objects on a token (CKA_TOKEN, CKA_SENSITIVE true,
 * CKA_EXTRACTABLE false), found by CKA_LABEL = the master key's name.
 *
 * Versions: every version of a master key is its own object with the same
 * label; CKA_ID holds the version as 4 bytes big-endian (00000001, 00000002,
 * ...). A key made by another tool, whose CKA_ID is not 4 bytes, is version
 * 1. New wrapped keys use the highest version; older ones keep unwrapping
 * while their object exists.
 *
 * Wrapping is CKM_AES_GCM on the token: a 12-byte IV kmsd draws at random
 * for each call (OpenSSL's DRBG; never reused in practice below 2^32 calls
 * per key), a 128-bit tag and the wrapped-key format's associated data. The
 * ciphertext is IV || ciphertext || tag, as for the other backends.
 *
 * Nothing outside hsm/pkcs11/ knows PKCS#11: the functions below take and
 * give plain C types. */
#ifndef KMS_HSM_PKCS11_BACKEND_H
#define KMS_HSM_PKCS11_BACKEND_H

#include <stddef.h>
#include <stdint.h>

#include "hsm/backend.h"

struct kms_pkcs11_options {
    const char *library;     /* the module's path (kms.hsm.pkcs11.library) */
    const char *token_label; /* kms.hsm.pkcs11.token.label; "" : by slot */
    long slot;               /* kms.hsm.pkcs11.slot; -1: none */
    const char *pin;         /* the user PIN, borrowed during open */
    unsigned sessions;       /* sessions kept open (the worker threads) */
    unsigned timeout_ms;     /* one call, waiting for a session included */
};

kms_rc kms_pkcs11_backend_open(const struct kms_pkcs11_options *o, struct kms_backend **out) KMS_MUST_CHECK;

/* What kmsctl hsm status shows. */
struct kms_pkcs11_info {
    char library[256];
    char module_description[33];
    unsigned cryptoki_major, cryptoki_minor;
    char manufacturer[33], model[17], serial[17], label[33];
    unsigned long slot;
    unsigned sessions, sessions_open;
    unsigned long sessions_opened, logins;
    int degraded;
};
kms_rc kms_pkcs11_info(struct kms_backend *b, struct kms_pkcs11_info *out) KMS_MUST_CHECK;

/* One version of a master key, as the token describes it. A flag is -1
 * when the token would not say. */
struct kms_pkcs11_key {
    uint32_t version;
    unsigned long handle;
    char id_hex[65];
    int aes;           /* CKK_AES */
    long value_len;    /* bytes; -1 unknown */
    int token, private_, sensitive, extractable, never_extractable, always_sensitive;
    int encrypt, decrypt, wrap, unwrap;
};

/* Every version of name (at most cap, oldest first); *n may exceed cap. */
kms_rc kms_pkcs11_key_versions(struct kms_backend *b, const char *name, struct kms_pkcs11_key *out, size_t cap,
                               size_t *n) KMS_MUST_CHECK;
/* A new master key name, version 1; refused when the label is taken. */
kms_rc kms_pkcs11_create_key(struct kms_backend *b, const char *name) KMS_MUST_CHECK;
/* A new version of name (*version); the older ones stay for unwrapping. */
kms_rc kms_pkcs11_rotate(struct kms_backend *b, const char *name, uint32_t *version) KMS_MUST_CHECK;

#endif
