#include "common/buf.h"

#include <stdlib.h>
#include <string.h>

#include "common/secret.h"

void kms_buf_init(struct kms_buf *b, size_t max)
{
    b->data = NULL;
    b->len = 0;
    b->cap = 0;
    b->max = max;
}

kms_rc kms_buf_append(struct kms_buf *b, const void *data, size_t len)
{
    if (len > b->max || b->len > b->max - len)
        return KMS_ERR_TOO_LARGE;
    if (b->len + len > b->cap) {
        size_t cap = b->cap ? b->cap : 256;
        while (cap < b->len + len)
            cap *= 2;
        if (cap > b->max)
            cap = b->max;
        /* why: no realloc, so the old copy can be wiped (bodies hold key material) */
        uint8_t *p = malloc(cap);
        if (p == NULL)
            return KMS_ERR_NO_MEMORY;
        if (b->len)
            memcpy(p, b->data, b->len);
        kms_wipe(b->data, b->len);
        free(b->data);
        b->data = p;
        b->cap = cap;
    }
    if (len && data)
        memcpy(b->data + b->len, data, len);
    else if (len)
        memset(b->data + b->len, 0, len);
    b->len += len;
    return KMS_OK;
}

kms_rc kms_buf_append_str(struct kms_buf *b, const char *s) { return kms_buf_append(b, s, strlen(s)); }
kms_rc kms_buf_append_u8(struct kms_buf *b, uint8_t v) { return kms_buf_append(b, &v, 1); }

kms_rc kms_buf_append_u16be(struct kms_buf *b, uint16_t v)
{
    uint8_t p[2] = {(uint8_t)(v >> 8), (uint8_t)v};
    return kms_buf_append(b, p, sizeof(p));
}

kms_rc kms_buf_append_u32be(struct kms_buf *b, uint32_t v)
{
    uint8_t p[4] = {(uint8_t)(v >> 24), (uint8_t)(v >> 16), (uint8_t)(v >> 8), (uint8_t)v};
    return kms_buf_append(b, p, sizeof(p));
}

kms_rc kms_buf_append_u64be(struct kms_buf *b, uint64_t v)
{
    /* why: one append, so a value that does not fit leaves nothing half-written */
    uint8_t p[8];
    for (int i = 0; i < 8; i++)
        p[i] = (uint8_t)(v >> (56 - 8 * i));
    return kms_buf_append(b, p, sizeof(p));
}

kms_rc kms_buf_extend(struct kms_buf *b, size_t n, uint8_t **at)
{
    KMS_GUARD(kms_buf_append(b, NULL, n));
    *at = b->data + b->len - n;
    return KMS_OK;
}

void kms_buf_reset(struct kms_buf *b)
{
    kms_wipe(b->data, b->len);
    b->len = 0;
}

void kms_buf_free(struct kms_buf *b)
{
    kms_wipe(b->data, b->len);
    free(b->data);
    b->data = NULL;
    b->len = 0;
    b->cap = 0;
}
