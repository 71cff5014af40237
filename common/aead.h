/* The one AEAD of kmsd (STYLE.md: one way to do each thing): AES-256-GCM
 * with a random 96-bit nonce and a 128-bit tag, laid out as
 *
 *     nonce (12) ‖ ciphertext (same length as the plaintext) ‖ tag (16)
 *
 * written through a bounded buffer and read back through a cursor. Every
 * place that seals uses this module: cluster keystore generations, the sealed
 * cluster key and Redis cache values through seal/open; the kms:v1 wrapped-key
 * payload and the soft backend (its key file and its wraps), whose formats
 * place the nonce and the tag themselves, through encrypt/decrypt. */
#ifndef KMS_COMMON_AEAD_H
#define KMS_COMMON_AEAD_H

#include <stddef.h>
#include <stdint.h>

#include "common/buf.h"
#include "common/cursor.h"
#include "common/error.h"
#include "common/secret.h"

#define KMS_AEAD_KEY_LEN 32
#define KMS_AEAD_NONCE_LEN 12
#define KMS_AEAD_TAG_LEN 16
#define KMS_AEAD_OVERHEAD (KMS_AEAD_NONCE_LEN + KMS_AEAD_TAG_LEN)
#define KMS_AEAD_MAX_PLAINTEXT (64u << 20) /* why: GCM's counter allows far more; nothing of ours is bigger */

/* AES-256-GCM with the nonce and the tag apart, for formats that lay them out
 * themselves: len bytes of pt into ct (len bytes, may be pt) and tag, under
 * the KMS_AEAD_KEY_LEN-byte key and the caller's nonce (never reuse one under
 * a key). aad may be NULL when aad_len is 0. KMS_ERR_INVALID_FIELD (len over
 * the maximum), KMS_ERR_CRYPTO (with OpenSSL's queue in the detail). */
kms_rc kms_aead_encrypt(const uint8_t key[KMS_AEAD_KEY_LEN], const uint8_t nonce[KMS_AEAD_NONCE_LEN],
                        const uint8_t *aad, size_t aad_len, const uint8_t *pt, size_t len, uint8_t *ct,
                        uint8_t tag[KMS_AEAD_TAG_LEN]) KMS_MUST_CHECK;

/* The inverse: len bytes of ct into pt. KMS_ERR_UNWRAP when the tag does not
 * authenticate (pt wiped; the detail says only that), KMS_ERR_INVALID_FIELD,
 * KMS_ERR_CRYPTO. */
kms_rc kms_aead_decrypt(const uint8_t key[KMS_AEAD_KEY_LEN], const uint8_t nonce[KMS_AEAD_NONCE_LEN],
                        const uint8_t *aad, size_t aad_len, const uint8_t *ct, size_t len,
                        const uint8_t tag[KMS_AEAD_TAG_LEN], uint8_t *pt) KMS_MUST_CHECK;

/* Appends nonce ‖ AES-256-GCM(key, pt, aad) ‖ tag to out (a fresh random
 * nonce each call, so a key may seal many messages). key is
 * KMS_AEAD_KEY_LEN bytes, borrowed. aad may be NULL when aad_len is 0.
 * Errors: KMS_ERR_INVALID_FIELD (key length, plaintext over the maximum),
 * KMS_ERR_TOO_LARGE (out's maximum), KMS_ERR_NO_MEMORY, KMS_ERR_CRYPTO.
 * On error out keeps its previous length. */
kms_rc kms_aead_seal(const struct kms_secret *key, const uint8_t *aad, size_t aad_len, const uint8_t *pt,
                     size_t pt_len, struct kms_buf *out) KMS_MUST_CHECK;

/* Reads sealed_len bytes (nonce ‖ ciphertext ‖ tag) from in and decrypts
 * them into out[0..cap) (cap >= sealed_len - KMS_AEAD_OVERHEAD), setting
 * *out_len. The cursor advances only on success. Errors:
 * KMS_ERR_MALFORMED (fewer bytes than sealed_len or than the overhead),
 * KMS_ERR_INVALID_FIELD (key length, cap too small), KMS_ERR_UNWRAP (the tag
 * does not authenticate: wrong key, wrong aad, a changed byte; out is wiped),
 * KMS_ERR_CRYPTO. */
kms_rc kms_aead_open(const struct kms_secret *key, const uint8_t *aad, size_t aad_len, struct kms_cursor *in,
                     size_t sealed_len, uint8_t *out, size_t cap, size_t *out_len) KMS_MUST_CHECK;

/* A 32-byte subkey for one purpose: HMAC-SHA256(key, label ‖ 0x01), the
 * one-block HKDF-Expand that the cluster cache already derives its keys
 * with, so that one cluster key serves several purposes without any of
 * them learning about another. The caller owns *out. KMS_ERR_CRYPTO,
 * KMS_ERR_NO_MEMORY. */
kms_rc kms_aead_derive(const struct kms_secret *key, const char *label, struct kms_secret **out) KMS_MUST_CHECK;

#endif
