/* Keystore editing and writing (SPEC §6, issue 6): change the entries of a
 * loaded keystore and write it back in its own format, as keytool would:
 *
 *   JKS     version 2, Sun's KeyProtector (key password = store password),
 *           "Mighty Aphrodite" SHA-1 integrity digest, aliases lower-cased
 *   PKCS12  as keytool writes it on Java 17: AES-256-CBC/PBKDF2-HMAC-SHA256
 *           shrouded key bags and encrypted certificate safe, HMAC-SHA256 MAC,
 *           friendlyName per bag, localKeyId pairing key and leaf; certificate
 *           entries carry Oracle's trustedKeyUsage (anyExtendedKeyUsage) so
 *           keytool lists them as trustedCertEntry
 *   PEM     "Bag Attributes / friendlyName" headers; keys as PKCS#8,
 *           encrypted with the password (AES-256-CBC) when there is one
 *
 * Writes are atomic: temporary file in the same directory, fsync, rename,
 * fsync of the directory; the replaced file's owner (when running as root)
 * and mode are kept. */
#ifndef KMS_KMS_KEYSTORE_WRITE_H
#define KMS_KMS_KEYSTORE_WRITE_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "kms/keystore.h"

/* New empty keystore of format f; name is used in messages and as
 * kms_keystore_path. The caller owns *out. KMS_ERR_NO_MEMORY. */
kms_rc kms_keystore_new(enum kms_keystore_format f, const char *name, struct kms_keystore **out) KMS_MUST_CHECK;

/* Changes the format the keystore is written in (convert). */
void kms_keystore_set_format(struct kms_keystore *ks, enum kms_keystore_format f);

/* Appends an entry: a private-key entry when key is non-NULL (cert is its
 * leaf, chain the issuers after it, may be NULL), else a certificate entry.
 * Takes its own references; the caller keeps its own. Errors:
 *   KMS_ERR_INVALID_FIELD  alias unusable (empty, control characters, not
 *                          UTF-8, too long) or already present (ignoring case)
 *   KMS_ERR_INVALID_FIELD  key does not match cert
 *   KMS_ERR_NO_MEMORY */
kms_rc kms_keystore_add(struct kms_keystore *ks, const char *alias, X509 *cert, STACK_OF(X509) *chain,
                        EVP_PKEY *key) KMS_MUST_CHECK;

/* Removes the entry with this alias (case-insensitive). KMS_ERR_ALIAS_NOT_FOUND. */
kms_rc kms_keystore_remove(struct kms_keystore *ks, const char *alias) KMS_MUST_CHECK;

/* Serialises ks in its format with password (NULL or "" only for PEM, whose
 * keys are then written unencrypted). *out is malloc'd, owned by the caller.
 * KMS_ERR_KEYSTORE_PASSWORD (JKS/PKCS#12 without a password, or a password
 * that is not UTF-8), KMS_ERR_CRYPTO, KMS_ERR_NO_MEMORY. */
kms_rc kms_keystore_serialize(const struct kms_keystore *ks, const char *password, uint8_t **out,
                              size_t *len) KMS_MUST_CHECK;

/* Serialises ks and writes it atomically to path (kms_file_write_atomic).
 * Errors of both. */
kms_rc kms_keystore_save(const struct kms_keystore *ks, const char *path, const char *password) KMS_MUST_CHECK;

/* kms_file_read and kms_file_write_atomic: common/file.h. */
#include "common/file.h"

#endif
