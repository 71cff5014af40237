/* The hex codec (STYLE.md: one hex codec): lower-case, for fingerprints and
 * digests in logs, status and file names. */
#ifndef KMS_COMMON_HEX_H
#define KMS_COMMON_HEX_H

#include <stddef.h>
#include <stdint.h>

/* Writes 2 * len lower-case hex digits and a NUL into out (cap >= 2*len+1;
 * a smaller cap writes as many whole bytes as fit). */
void kms_hex_encode(const uint8_t *in, size_t len, char *out, size_t cap);

/* SHA-256 of data[0..len) as 64 hex digits and a NUL into out[65]. */
void kms_hex_sha256(const uint8_t *data, size_t len, char out[65]);

#endif
