#include "common/cursor.h"

#include <string.h>

void kms_cursor_init(struct kms_cursor *c, const uint8_t *data, size_t len)
{
    c->data = data;
    c->len = data ? len : 0;
    c->pos = 0;
}

size_t kms_cursor_remaining(const struct kms_cursor *c) { return c->len - c->pos; }

kms_rc kms_cursor_bytes(struct kms_cursor *c, size_t n, const uint8_t **out)
{
    if (n > kms_cursor_remaining(c))
        return KMS_ERR_MALFORMED;
    /* why: NULL + 0 is undefined behaviour (clang's UBSan reports it) */
    *out = c->data ? c->data + c->pos : c->data;
    c->pos += n;
    return KMS_OK;
}

kms_rc kms_cursor_copy(struct kms_cursor *c, uint8_t *out, size_t n)
{
    const uint8_t *p;
    KMS_GUARD(kms_cursor_bytes(c, n, &p));
    if (n)
        memcpy(out, p, n);
    return KMS_OK;
}

kms_rc kms_cursor_skip(struct kms_cursor *c, size_t n)
{
    const uint8_t *p;
    return kms_cursor_bytes(c, n, &p);
}

kms_rc kms_cursor_sub(struct kms_cursor *c, size_t n, struct kms_cursor *sub)
{
    const uint8_t *p;
    KMS_GUARD(kms_cursor_bytes(c, n, &p));
    kms_cursor_init(sub, p, n);
    return KMS_OK;
}

kms_rc kms_cursor_u8(struct kms_cursor *c, uint8_t *out)
{
    const uint8_t *p;
    KMS_GUARD(kms_cursor_bytes(c, 1, &p));
    *out = p[0];
    return KMS_OK;
}

kms_rc kms_cursor_u16be(struct kms_cursor *c, uint16_t *out)
{
    const uint8_t *p;
    KMS_GUARD(kms_cursor_bytes(c, 2, &p));
    *out = (uint16_t)((p[0] << 8) | p[1]);
    return KMS_OK;
}

kms_rc kms_cursor_u32be(struct kms_cursor *c, uint32_t *out)
{
    const uint8_t *p;
    KMS_GUARD(kms_cursor_bytes(c, 4, &p));
    *out = ((uint32_t)p[0] << 24) | ((uint32_t)p[1] << 16) | ((uint32_t)p[2] << 8) | p[3];
    return KMS_OK;
}

kms_rc kms_cursor_u64be(struct kms_cursor *c, uint64_t *out)
{
    uint32_t hi, lo;
    size_t save = c->pos;
    if (kms_cursor_u32be(c, &hi) != KMS_OK || kms_cursor_u32be(c, &lo) != KMS_OK) {
        c->pos = save;
        return KMS_ERR_MALFORMED;
    }
    *out = ((uint64_t)hi << 32) | lo;
    return KMS_OK;
}
