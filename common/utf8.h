/* UTF-8, once for the project (issue 14): the check that request bodies,
 * keystore aliases and names share, and the encoder of code points that the
 * JSON, properties and JKS readers share. */
#ifndef KMS_COMMON_UTF8_H
#define KMS_COMMON_UTF8_H

#include <stddef.h>
#include <stdint.h>

/* Length (1..4) of the well-formed UTF-8 sequence at p[0..avail), or 0 when
 * there is none (avail 0, a stray or truncated byte, an overlong form, a
 * surrogate, or a code point past U+10FFFF): Unicode 15 table 3-7. */
size_t kms_utf8_seq(const uint8_t *p, size_t avail);

/* Writes code point cp (at most U+10FFFF, not a surrogate) as UTF-8 into
 * out and returns its length (1..4). */
size_t kms_utf8_encode(uint32_t cp, uint8_t out[4]);

#endif
