/* Internals shared by the keystore reader's format parsers (keystore.c, jks.c,
 * p12.c, pem_bundle.c), as curl's vtls_int.h is for its TLS backends. Not part
 * of the public API: include kms/keystore.h instead. */
#ifndef KMS_KMS_KEYSTORE_INT_H
#define KMS_KMS_KEYSTORE_INT_H

#include <stddef.h>
#include <stdint.h>

#include "common/secret.h"
#include "kms/keystore.h"

#define KMS_KS_MAX_FILE (16u * 1024u * 1024u)
#define KMS_KS_MAX_ENTRIES 10000u /* entries, PKCS#12 bags or PEM blocks per file */
#define KMS_KS_MAX_CHAIN 16u      /* certificates in one chain */
#define KMS_KS_MAX_ALIAS 1024u    /* bytes of UTF-8 */
#define KMS_KS_MAX_KEYID 64u      /* localKeyId bytes we pair by */
#define KMS_KS_MAX_ITERATIONS 1000000L /* PBKDF2 / PKCS#12 KDF rounds (keytool: 10000-100000) */

struct kms_ks_entry {
    char *alias;
    enum kms_ks_entry_type type;
    X509 *cert;
    STACK_OF(X509) *chain;
    EVP_PKEY *key;
    uint8_t *der;
    size_t der_len;
    uint8_t sha256[32];
    int is_ca;
};

/* A secret-key entry (keytool -genseckey into a PKCS#12 keystore): not an
 * entry of the certificate kind, so nothing that walks the entries sees it;
 * kept to be read by alias (the audit checkpoint key) and written back. */
struct kms_ks_secret {
    char *alias;
    ASN1_OBJECT *alg; /* the key's algorithm as Java named it (HmacSHA256, AES, ...) */
    struct kms_secret *key;
};

struct kms_keystore {
    enum kms_keystore_format format;
    char *path;
    struct kms_ks_entry *entries;
    size_t count;
    size_t cap;
    struct kms_ks_secret *secrets;
    size_t nsecrets;
};

/* Appends a secret-key entry, taking alias, alg and key (also on failure);
 * the alias must be new among entries and secrets. */
kms_rc kms_ks_add_secret(struct kms_keystore *ks, char *alias, ASN1_OBJECT *alg, struct kms_secret *key)
    KMS_MUST_CHECK;

/* Appends an entry. Always takes ownership of alias (malloc'd), cert, chain
 * (may be NULL: empty) and key (NULL for certificate entries), also on
 * failure. Checks the alias (non-empty, UTF-8, no control characters, not a
 * duplicate ignoring ASCII case). KMS_ERR_KEYSTORE_CORRUPT, KMS_ERR_NO_MEMORY. */
kms_rc kms_ks_add_entry(struct kms_keystore *ks, char *alias, X509 *cert, STACK_OF(X509) *chain,
                        EVP_PKEY *key) KMS_MUST_CHECK;

/* One key or certificate as a PKCS#12 bag or a PEM block presents it, before
 * keys are paired with their certificates (kms_ks_assemble). */
struct kms_ks_item {
    EVP_PKEY *key; /* exactly one of key, cert */
    X509 *cert;
    char *name; /* friendlyName, UTF-8, or NULL */
    uint8_t keyid[KMS_KS_MAX_KEYID];
    size_t keyid_len; /* 0: none (or too long to pair by) */
    int trusted;      /* Oracle trustedKeyUsage attribute present */
    size_t pos;       /* 1-based bag / block number, for messages */
    /* set by kms_ks_assemble */
    int role;
    size_t owner; /* for a leaf: index of its key item */
};

struct kms_ks_items {
    struct kms_ks_item *v;
    size_t n;
    size_t cap;
    const char *unit; /* "PEM block", "PKCS#12 bag": for messages */
};

/* Appends a copy of *it (taking ownership of its key/cert/name, also on
 * failure). KMS_ERR_KEYSTORE_CORRUPT when there are too many, NO_MEMORY. */
kms_rc kms_ks_items_add(struct kms_keystore *ks, struct kms_ks_items *items, struct kms_ks_item *it) KMS_MUST_CHECK;
void kms_ks_items_free(struct kms_ks_items *items);

/* Turns items into entries: pairs every key with its certificate (localKeyId,
 * else matching public key), orders each chain leaf -> issuer by
 * subject/issuer matching, names entries (friendlyName, else leaf CN
 * lower-cased, else a number). Certificates that are neither a leaf nor named
 * become chain material; with unnamed_certs_are_entries (PEM) unnamed
 * certificates that end up in no chain become certificate entries too.
 * leaf_first (PEM): a chain certificate may not come before its leaf.
 * Items are consumed (moved into ks or freed by kms_ks_items_free). */
kms_rc kms_ks_assemble(struct kms_keystore *ks, struct kms_ks_items *items, int unnamed_certs_are_entries,
                       int leaf_first) KMS_MUST_CHECK;

/* Format parsers: fill ks (format and path already set). Errors as
 * kms_keystore_load documents, with a detail naming ks->path. */
kms_rc kms_ks_jks_parse(struct kms_keystore *ks, const uint8_t *data, size_t len,
                        const char *password) KMS_MUST_CHECK;
kms_rc kms_ks_p12_parse(struct kms_keystore *ks, const uint8_t *data, size_t len,
                        const char *password) KMS_MUST_CHECK;
kms_rc kms_ks_pem_parse(struct kms_keystore *ks, const uint8_t *data, size_t len,
                        const char *password) KMS_MUST_CHECK;

/* Checks a password-based encryption AlgorithmIdentifier before it is used:
 * PBES2 must use PBKDF2, and no KDF may ask for more than
 * KMS_KS_MAX_ITERATIONS rounds (a crafted file must not stall the loader).
 * what names the protected thing in the detail. KMS_ERR_KEYSTORE_CORRUPT,
 * KMS_ERR_KEYSTORE_FORMAT. */
kms_rc kms_ks_pbe_check(const struct kms_keystore *ks, const X509_ALGOR *alg, const char *what) KMS_MUST_CHECK;

/* Loads OpenSSL's "legacy" and "default" providers once per process
 * (pthread_once). Returns 1 when the legacy provider is available. */
int kms_ks_legacy_provider(void);

/* Validated, malloc'd alias from UTF-8 text: NULL when it is empty, too long,
 * not UTF-8 or has control characters. */
char *kms_ks_alias_dup(const char *s, size_t len);
/* The certificate subject's last CN, lower-cased (ASCII), malloc'd; NULL when
 * there is none usable as an alias. */
char *kms_ks_cn_alias(X509 *cert);

#endif
