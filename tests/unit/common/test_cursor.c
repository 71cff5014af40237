/* Bounded reader (common/cursor.h): every read checks first and moves only on success. */
#include <criterion/criterion.h>

#include <stdint.h>
#include <string.h>

#include "common/cursor.h"

static const uint8_t data[9] = {0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07, 0x08, 0x09};

/* Reads of size 1, 2, 4, 8 at every offset of every length: success iff the
 * bytes are there; a failure leaves pos where it was. */
Test(cursor, fixed_width_reads_at_every_boundary, .timeout = 60)
{
    static const size_t widths[] = {1, 2, 4, 8};
    for (size_t len = 0; len <= sizeof(data); len++) {
        for (size_t start = 0; start <= len; start++) {
            for (size_t w = 0; w < 4; w++) {
                struct kms_cursor c;
                kms_cursor_init(&c, data, len);
                cr_assert_eq(kms_cursor_skip(&c, start), KMS_OK);
                size_t width = widths[w];
                kms_rc rc;
                uint64_t got = 0, want = 0;
                if (width == 1) {
                    uint8_t v = 0xee;
                    rc = kms_cursor_u8(&c, &v);
                    got = v;
                } else if (width == 2) {
                    uint16_t v = 0xeeee;
                    rc = kms_cursor_u16be(&c, &v);
                    got = v;
                } else if (width == 4) {
                    uint32_t v = 0xeeeeeeee;
                    rc = kms_cursor_u32be(&c, &v);
                    got = v;
                } else {
                    uint64_t v = 0xeeeeeeeeeeeeeeeeull;
                    rc = kms_cursor_u64be(&c, &v);
                    got = v;
                }
                if (start + width <= len) {
                    for (size_t i = 0; i < width; i++)
                        want = (want << 8) | data[start + i];
                    cr_assert_eq(rc, KMS_OK, "len %zu start %zu width %zu", len, start, width);
                    cr_assert_eq(got, want);
                    cr_assert_eq(c.pos, start + width);
                    cr_assert_eq(kms_cursor_remaining(&c), len - start - width);
                } else {
                    cr_assert_eq(rc, KMS_ERR_MALFORMED, "len %zu start %zu width %zu", len, start, width);
                    cr_assert_eq(c.pos, start, "cursor moved on failure");
                    cr_assert_eq(kms_cursor_remaining(&c), len - start);
                }
            }
        }
    }
}

Test(cursor, big_endian_values, .timeout = 60)
{
    static const uint8_t b[] = {0xff, 0x80, 0x00, 0x01, 0xde, 0xad, 0xbe, 0xef, 0x12, 0x34, 0x56, 0x78, 0x9a};
    struct kms_cursor c;
    uint8_t u8;
    uint16_t u16;
    uint32_t u32;
    uint64_t u64;
    kms_cursor_init(&c, b, sizeof(b));
    cr_assert_eq(kms_cursor_u8(&c, &u8), KMS_OK);
    cr_assert_eq(u8, 0xff);
    cr_assert_eq(kms_cursor_u16be(&c, &u16), KMS_OK);
    cr_assert_eq(u16, 0x8000);
    cr_assert_eq(kms_cursor_u32be(&c, &u32), KMS_OK);
    cr_assert_eq(u32, 0x01deadbeu);
    cr_assert_eq(kms_cursor_u32be(&c, &u32), KMS_OK);
    cr_assert_eq(u32, 0xef123456u);
    cr_assert_eq(kms_cursor_u16be(&c, &u16), KMS_OK);
    cr_assert_eq(u16, 0x789a);
    cr_assert_eq(kms_cursor_remaining(&c), 0);
    kms_cursor_init(&c, b + 4, 8);
    cr_assert_eq(kms_cursor_u64be(&c, &u64), KMS_OK);
    cr_assert_eq(u64, 0xdeadbeef12345678ull);
}

Test(cursor, bytes_copy_skip_at_the_boundary, .timeout = 60)
{
    struct kms_cursor c;
    const uint8_t *p = NULL;
    uint8_t out[9];
    for (size_t n = 0; n <= sizeof(data) + 1; n++) {
        kms_cursor_init(&c, data, sizeof(data));
        kms_rc rc = kms_cursor_bytes(&c, n, &p);
        if (n <= sizeof(data)) {
            cr_assert_eq(rc, KMS_OK);
            cr_assert_eq(p, data); /* borrowed, not copied */
            cr_assert_eq(c.pos, n);
        } else {
            cr_assert_eq(rc, KMS_ERR_MALFORMED);
            cr_assert_eq(c.pos, 0);
        }
        kms_cursor_init(&c, data, sizeof(data));
        cr_assert_eq(kms_cursor_skip(&c, 2), KMS_OK);
        memset(out, 0xee, sizeof(out));
        rc = kms_cursor_copy(&c, out, n);
        if (n <= sizeof(data) - 2) {
            cr_assert_eq(rc, KMS_OK);
            cr_assert_eq(memcmp(out, data + 2, n), 0);
            cr_assert_eq(c.pos, 2 + n);
        } else {
            cr_assert_eq(rc, KMS_ERR_MALFORMED);
            cr_assert_eq(c.pos, 2);
            cr_assert_eq(out[0], 0xee, "copy wrote on failure");
        }
        kms_cursor_init(&c, data, sizeof(data));
        rc = kms_cursor_skip(&c, n);
        cr_assert_eq(rc, n <= sizeof(data) ? KMS_OK : KMS_ERR_MALFORMED);
        cr_assert_eq(c.pos, n <= sizeof(data) ? n : 0);
    }
}

Test(cursor, huge_lengths_do_not_wrap, .timeout = 60)
{
    struct kms_cursor c;
    const uint8_t *p;
    kms_cursor_init(&c, data, sizeof(data));
    cr_assert_eq(kms_cursor_skip(&c, 1), KMS_OK);
    cr_assert_eq(kms_cursor_bytes(&c, SIZE_MAX, &p), KMS_ERR_MALFORMED);
    cr_assert_eq(kms_cursor_skip(&c, SIZE_MAX - 0), KMS_ERR_MALFORMED);
    cr_assert_eq(kms_cursor_skip(&c, (size_t)-1 / 2 + 2), KMS_ERR_MALFORMED);
    cr_assert_eq(c.pos, 1);
}

Test(cursor, sub_cursor, .timeout = 60)
{
    struct kms_cursor c, sub;
    uint16_t v;
    kms_cursor_init(&c, data, sizeof(data));
    cr_assert_eq(kms_cursor_skip(&c, 1), KMS_OK);
    cr_assert_eq(kms_cursor_sub(&c, 4, &sub), KMS_OK);
    cr_assert_eq(c.pos, 5);
    cr_assert_eq(kms_cursor_remaining(&sub), 4);
    cr_assert_eq(kms_cursor_u16be(&sub, &v), KMS_OK);
    cr_assert_eq(v, 0x0203);
    cr_assert_eq(kms_cursor_u16be(&sub, &v), KMS_OK);
    cr_assert_eq(v, 0x0405);
    cr_assert_eq(kms_cursor_u8(&sub, (uint8_t *)&v), KMS_ERR_MALFORMED); /* cannot read past its window */

    struct kms_cursor untouched = {NULL, 77, 77};
    sub = untouched;
    cr_assert_eq(kms_cursor_sub(&c, 5, &sub), KMS_ERR_MALFORMED);
    cr_assert_eq(c.pos, 5);
    cr_assert_eq(sub.len, 77, "sub written on failure");
    cr_assert_eq(kms_cursor_sub(&c, 4, &sub), KMS_OK);
    cr_assert_eq(kms_cursor_remaining(&c), 0);
    cr_assert_eq(kms_cursor_sub(&c, 0, &sub), KMS_OK); /* empty tail is fine */
    cr_assert_eq(kms_cursor_remaining(&sub), 0);
}

Test(cursor, empty_and_null_input, .timeout = 60)
{
    struct kms_cursor c;
    uint8_t v;
    const uint8_t *p;
    kms_cursor_init(&c, NULL, 10); /* NULL data never claims bytes */
    cr_assert_eq(kms_cursor_remaining(&c), 0);
    cr_assert_eq(kms_cursor_u8(&c, &v), KMS_ERR_MALFORMED);
    cr_assert_eq(kms_cursor_skip(&c, 0), KMS_OK);
    cr_assert_eq(kms_cursor_bytes(&c, 0, &p), KMS_OK);
    cr_assert_eq(kms_cursor_copy(&c, NULL, 0), KMS_OK);
    kms_cursor_init(&c, data, 0);
    cr_assert_eq(kms_cursor_u8(&c, &v), KMS_ERR_MALFORMED);
    cr_assert_eq(c.pos, 0);
}
