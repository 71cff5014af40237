/* The software backend (SPEC §8 "soft"): master keys in a file sealed by a
 * password, so kmsd runs with nothing else installed. For first runs and
 * development; never the default of a production configuration.
 *
 * File (all integers big-endian):
 *   "KMSSOFT1" | u8 kdf (1 = PBKDF2-HMAC-SHA256) | u32 iterations | salt[16]
 *   | check[32] | nonce[12] | u32 ct_len | ct[ct_len] | tag[16]
 * prk = PBKDF2(password, salt, iterations, 32); enc = HKDF-Expand(prk,
 * "kmsd soft keystore v1 enc"); check = HKDF-Expand(prk, "kmsd soft keystore
 * v1 check"). The check value tells a wrong password from a damaged file.
 * ct = AES-256-GCM(enc, nonce, AAD = every byte before ct) of the key set:
 *   u16 count | count x (u8 name_len | name | u32 version | u64 created | key[32])
 *
 * Ciphertexts this backend makes: nonce[12] | ciphertext | tag[16]
 * (AES-256-GCM under the master key version, with the caller's AAD). */
#ifndef KMS_HSM_SOFT_H
#define KMS_HSM_SOFT_H

#include <stddef.h>
#include <stdint.h>

#include "common/error.h"
#include "hsm/backend.h"

#define KMS_SOFT_ITERATIONS 600000     /* written into new files */
#define KMS_SOFT_MIN_ITERATIONS 200000 /* files with fewer are refused */
#define KMS_SOFT_MAX_VERSIONS 200      /* key versions in one file, all names together */

/* Opens the key file at path with password (both borrowed), creating it with
 * one key default_key version 1 (mode 0600, atomically) when it does not
 * exist. *out is the caller's (kms_backend_free).
 * Errors: KMS_ERR_CONFIG (empty password, invalid default key name, or file
 * absent and default_key NULL), KMS_ERR_KEYSTORE_PASSWORD (wrong password),
 * KMS_ERR_KEYSTORE_CORRUPT (damaged, truncated or not a soft key file),
 * KMS_ERR_IO, KMS_ERR_NO_MEMORY, KMS_ERR_CRYPTO. The detail names the file. */
kms_rc kms_soft_open(const char *path, const char *password, const char *default_key,
                     struct kms_backend **out) KMS_MUST_CHECK;

/* Adds version n+1 of key name (version 1 when the key is new) and rewrites
 * the file atomically; in memory only once the file is written. b must come
 * from kms_soft_open. Errors: KMS_ERR_INVALID_FIELD (bad name, or b is not a
 * soft backend), KMS_ERR_TOO_LARGE (key set full: KMS_SOFT_MAX_VERSIONS),
 * KMS_ERR_IO, KMS_ERR_NO_MEMORY, KMS_ERR_CRYPTO. Another process holding the
 * same file open sees the new version only after it reopens the file. */
kms_rc kms_soft_rotate(struct kms_backend *b, const char *name) KMS_MUST_CHECK;

/* Creates key name at version 1. KMS_ERR_INVALID_FIELD when it exists; else as
 * kms_soft_rotate. */
kms_rc kms_soft_create_key(struct kms_backend *b, const char *name) KMS_MUST_CHECK;

/* The file image data[0..len) checked for structure only (magic, KDF,
 * iteration bounds, lengths), with no password: its iterations and the
 * length of its sealed key set. KMS_ERR_KEYSTORE_CORRUPT naming what is
 * wrong. For tools and the fuzzer (tests/fuzz/fuzz_soft_file.c). */
kms_rc kms_soft_file_inspect(const uint8_t *data, size_t len, uint32_t *iterations, size_t *keyset_len) KMS_MUST_CHECK;

/* The key set as the file holds it once opened (count, then name, version,
 * created, key per entry), checked as kms_soft_open checks it: *n_keys
 * entries, or KMS_ERR_KEYSTORE_CORRUPT. */
kms_rc kms_soft_keyset_check(const uint8_t *plain, size_t len, size_t *n_keys) KMS_MUST_CHECK;

#endif
