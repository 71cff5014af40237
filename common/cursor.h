/* Bounded reads over untrusted binary input (s2n's stuffer, OpenSSH's sshbuf).
 *
 * A cursor borrows its bytes; every read checks the remaining length first and
 * advances only on success. Failures return KMS_ERR_MALFORMED and leave the
 * cursor where it was. */
#ifndef KMS_COMMON_CURSOR_H
#define KMS_COMMON_CURSOR_H

#include <stddef.h>
#include <stdint.h>

#include "common/error.h"

struct kms_cursor {
    const uint8_t *data;
    size_t len;
    size_t pos;
};

void kms_cursor_init(struct kms_cursor *c, const uint8_t *data, size_t len);
size_t kms_cursor_remaining(const struct kms_cursor *c);
kms_rc kms_cursor_u8(struct kms_cursor *c, uint8_t *out) KMS_MUST_CHECK;
kms_rc kms_cursor_u16be(struct kms_cursor *c, uint16_t *out) KMS_MUST_CHECK;
kms_rc kms_cursor_u32be(struct kms_cursor *c, uint32_t *out) KMS_MUST_CHECK;
kms_rc kms_cursor_u64be(struct kms_cursor *c, uint64_t *out) KMS_MUST_CHECK;
/* Borrows n bytes: *out points into the cursor's data. */
kms_rc kms_cursor_bytes(struct kms_cursor *c, size_t n, const uint8_t **out) KMS_MUST_CHECK;
kms_rc kms_cursor_copy(struct kms_cursor *c, uint8_t *out, size_t n) KMS_MUST_CHECK;
kms_rc kms_cursor_skip(struct kms_cursor *c, size_t n) KMS_MUST_CHECK;
/* A sub-cursor over the next n bytes; the parent advances past them. */
kms_rc kms_cursor_sub(struct kms_cursor *c, size_t n, struct kms_cursor *sub) KMS_MUST_CHECK;

#endif
