/* A growable byte buffer with a hard maximum, checked before every append
 * (STYLE.md: limits come before buffers). Optionally wiped when reset/freed. */
#ifndef KMS_COMMON_BUF_H
#define KMS_COMMON_BUF_H

#include <stddef.h>
#include <stdint.h>

#include "common/error.h"

struct kms_buf {
    uint8_t *data;
    size_t len;
    size_t cap;
    size_t max; /* appends past this fail with KMS_ERR_TOO_LARGE */
};

void kms_buf_init(struct kms_buf *b, size_t max);
kms_rc kms_buf_append(struct kms_buf *b, const void *data, size_t len) KMS_MUST_CHECK;
kms_rc kms_buf_append_str(struct kms_buf *b, const char *s) KMS_MUST_CHECK;
kms_rc kms_buf_append_u8(struct kms_buf *b, uint8_t v) KMS_MUST_CHECK;
kms_rc kms_buf_append_u16be(struct kms_buf *b, uint16_t v) KMS_MUST_CHECK;
kms_rc kms_buf_append_u32be(struct kms_buf *b, uint32_t v) KMS_MUST_CHECK;
kms_rc kms_buf_append_u64be(struct kms_buf *b, uint64_t v) KMS_MUST_CHECK;
/* Appends n zero bytes and points *at to them (valid until the next append). */
kms_rc kms_buf_extend(struct kms_buf *b, size_t n, uint8_t **at) KMS_MUST_CHECK;
/* Wipes the contents and sets len to 0, keeping the allocation for reuse. */
void kms_buf_reset(struct kms_buf *b);
/* Wipes and frees the storage; the struct can be reused after kms_buf_init. */
void kms_buf_free(struct kms_buf *b);

#endif
