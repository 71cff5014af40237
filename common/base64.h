/* Standard base64 (RFC 4648 §4), strict: padding required, no whitespace, no
 * URL alphabet, non-zero trailing bits refused, so each byte string has exactly
 * one accepted encoding. */
#ifndef KMS_COMMON_BASE64_H
#define KMS_COMMON_BASE64_H

#include <stddef.h>
#include <stdint.h>

#include "common/error.h"

/* Encoded length of n bytes, without the NUL. */
size_t kms_b64_encoded_len(size_t n);
/* Largest decoded length of an encoding of n characters. */
size_t kms_b64_decoded_max(size_t n);

/* Writes the encoding and a NUL into out (cap >= encoded_len + 1). */
kms_rc kms_b64_encode(const uint8_t *in, size_t len, char *out, size_t cap) KMS_MUST_CHECK;
/* Decodes in[0..len) into out (cap bytes); KMS_ERR_MALFORMED on any deviation,
 * KMS_ERR_TOO_LARGE when out is too small. */
kms_rc kms_b64_decode(const char *in, size_t len, uint8_t *out, size_t cap, size_t *out_len) KMS_MUST_CHECK;

#endif
