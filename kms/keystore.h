/* Keystore reader (SPEC §6): JKS, PKCS#12 (modern and legacy), PEM bundle,
 * the format detected by content, never by file name.
 *
 * A loaded keystore is immutable and may be shared between threads. Entries
 * are either private-key entries (key + certificate chain, leaf first) or
 * certificate entries (one certificate: keytool's trustedCertEntry, or a
 * PKCS#12 certificate bag with a friendly name). Aliases are compared
 * case-insensitively (keytool lower-cases them in JKS; PKCS#12 keeps case). */
#ifndef KMS_KMS_KEYSTORE_H
#define KMS_KMS_KEYSTORE_H

#include <openssl/evp.h>
#include <openssl/x509.h>
#include <stddef.h>
#include <stdint.h>

#include "common/error.h"
#include "common/secret.h"

enum kms_keystore_format { KMS_KEYSTORE_JKS, KMS_KEYSTORE_PKCS12, KMS_KEYSTORE_PEM };
enum kms_ks_entry_type { KMS_KS_PRIVATE_KEY, KMS_KS_CERTIFICATE };

struct kms_keystore;
struct kms_ks_entry;

/* Loads path with password (may be NULL or "" for none). Detects the format
 * from the first bytes. A NULL password loads a JKS file without its
 * integrity check (as Java's KeyStore.load(in, null) does) and then fails on
 * any private-key entry. Errors, each with a detail naming the file:
 *   KMS_ERR_IO               the file cannot be read (or is larger than 16 MiB)
 *   KMS_ERR_KEYSTORE_FORMAT  not JKS, PKCS#12 or PEM (includes the empty file)
 *   KMS_ERR_KEYSTORE_PASSWORD the integrity check/MAC fails with this password
 *   KMS_ERR_KEYSTORE_CORRUPT truncated, trailing bytes, bad structure
 * The caller owns *out (kms_keystore_free). Nothing is logged. */
kms_rc kms_keystore_load(const char *path, const char *password, struct kms_keystore **out) KMS_MUST_CHECK;
/* Same, from memory; name is used in error details only. */
kms_rc kms_keystore_load_mem(const uint8_t *data, size_t len, const char *name, const char *password,
                             struct kms_keystore **out) KMS_MUST_CHECK;
void kms_keystore_free(struct kms_keystore **ks);

enum kms_keystore_format kms_keystore_format(const struct kms_keystore *ks);
const char *kms_keystore_format_name(enum kms_keystore_format f); /* "JKS", "PKCS12", "PEM" */
const char *kms_keystore_path(const struct kms_keystore *ks);

size_t kms_keystore_count(const struct kms_keystore *ks);
/* Entries in file order; i < count. Borrowed from ks. */
const struct kms_ks_entry *kms_keystore_entry(const struct kms_keystore *ks, size_t i);
/* Case-insensitive alias lookup (strcasecmp: ASCII letters fold, other UTF-8
 * bytes must match exactly); NULL when absent. Aliases are unique under this
 * comparison (a file with duplicates is KMS_ERR_KEYSTORE_CORRUPT). */
const struct kms_ks_entry *kms_keystore_find(const struct kms_keystore *ks, const char *alias);
/* Secret-key entries (keytool -genseckey, PKCS#12 keystores only) are not
 * entries of the kinds above: a copy of the key of alias (case-insensitive),
 * else KMS_ERR_ALIAS_NOT_FOUND. */
kms_rc kms_keystore_secret_key(const struct kms_keystore *ks, const char *alias, struct kms_secret **out)
    KMS_MUST_CHECK;
size_t kms_keystore_secret_count(const struct kms_keystore *ks);
/* The alias of secret-key entry i (< kms_keystore_secret_count). */
const char *kms_keystore_secret_alias(const struct kms_keystore *ks, size_t i);
/* The certificate entry whose certificate DER is byte-for-byte der[0..len);
 * NULL when none (private-key entries' certificates are not pinned clients).
 * CA certificate entries are found too: check kms_ks_entry_is_ca before
 * granting anything (SPEC §5). */
const struct kms_ks_entry *kms_keystore_find_cert_der(const struct kms_keystore *ks, const uint8_t *der,
                                                      size_t len);

/* Entry accessors; all borrowed from the keystore. */
const char *kms_ks_entry_alias(const struct kms_ks_entry *e); /* as stored */
enum kms_ks_entry_type kms_ks_entry_type(const struct kms_ks_entry *e);
/* The certificate (leaf for private-key entries). Never NULL. */
X509 *kms_ks_entry_cert(const struct kms_ks_entry *e);
/* The chain after the leaf (may be empty, never NULL). */
STACK_OF(X509) *kms_ks_entry_chain(const struct kms_ks_entry *e);
/* The private key, or NULL for certificate entries. */
EVP_PKEY *kms_ks_entry_key(const struct kms_ks_entry *e);
/* The leaf certificate DER and its SHA-256. */
const uint8_t *kms_ks_entry_der(const struct kms_ks_entry *e, size_t *len);
const uint8_t *kms_ks_entry_sha256(const struct kms_ks_entry *e); /* 32 bytes */
/* Non-zero when the certificate is a CA (basicConstraints CA:TRUE). */
int kms_ks_entry_is_ca(const struct kms_ks_entry *e);

/* One-line RFC 2253 subject of cert, malloc'd (free), for messages; NULL when
 * out of memory. */
char *kms_ks_subject(X509 *cert);

#endif
