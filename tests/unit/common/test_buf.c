/* Bounded growable buffer (common/buf.h): the maximum is checked before every append. */
#include <criterion/criterion.h>

#include <stdint.h>
#include <string.h>

#include "common/buf.h"

Test(buf, appends_up_to_max_and_not_beyond, .timeout = 60)
{
    struct kms_buf b;
    kms_buf_init(&b, 10);
    cr_assert_eq(kms_buf_append(&b, "0123456", 7), KMS_OK);
    cr_assert_eq(kms_buf_append(&b, "789x", 4), KMS_ERR_TOO_LARGE);
    cr_assert_eq(b.len, 7, "failed append changed len");
    cr_assert_eq(kms_buf_append(&b, "789", 3), KMS_OK); /* exactly max */
    cr_assert_eq(b.len, 10);
    cr_assert_eq(memcmp(b.data, "0123456789", 10), 0);
    cr_assert_eq(kms_buf_append(&b, "x", 1), KMS_ERR_TOO_LARGE);
    cr_assert_eq(kms_buf_append(&b, "", 0), KMS_OK);
    cr_assert_eq(b.len, 10);
    cr_assert(b.cap <= 10, "allocated past max: %zu", b.cap);
    kms_buf_free(&b);
}

Test(buf, huge_lengths_do_not_wrap, .timeout = 60)
{
    struct kms_buf b;
    kms_buf_init(&b, 100);
    cr_assert_eq(kms_buf_append(&b, "abc", 3), KMS_OK);
    cr_assert_eq(kms_buf_append(&b, "abc", SIZE_MAX), KMS_ERR_TOO_LARGE);
    cr_assert_eq(kms_buf_append(&b, "abc", SIZE_MAX - 2), KMS_ERR_TOO_LARGE);
    cr_assert_eq(kms_buf_append(&b, "abc", 98), KMS_ERR_TOO_LARGE);
    cr_assert_eq(b.len, 3);
    kms_buf_free(&b);
}

Test(buf, growth_keeps_contents, .timeout = 60)
{
    struct kms_buf b;
    kms_buf_init(&b, 5000);
    for (int i = 0; i < 5000; i++) {
        uint8_t v = (uint8_t)(i * 31);
        cr_assert_eq(kms_buf_append_u8(&b, v), KMS_OK, "i=%d", i);
    }
    cr_assert_eq(kms_buf_append_u8(&b, 0), KMS_ERR_TOO_LARGE);
    for (int i = 0; i < 5000; i++)
        cr_assert_eq(b.data[i], (uint8_t)(i * 31));
    cr_assert(b.cap <= 5000);
    kms_buf_free(&b);
}

Test(buf, integers_are_big_endian, .timeout = 60)
{
    static const uint8_t want[] = {0xab, 0x12, 0x34, 0xde, 0xad, 0xbe, 0xef,
                                   0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07, 0x08};
    struct kms_buf b;
    kms_buf_init(&b, 64);
    cr_assert_eq(kms_buf_append_u8(&b, 0xab), KMS_OK);
    cr_assert_eq(kms_buf_append_u16be(&b, 0x1234), KMS_OK);
    cr_assert_eq(kms_buf_append_u32be(&b, 0xdeadbeef), KMS_OK);
    cr_assert_eq(kms_buf_append_u64be(&b, 0x0102030405060708ull), KMS_OK);
    cr_assert_eq(b.len, sizeof(want));
    cr_assert_eq(memcmp(b.data, want, sizeof(want)), 0);
    kms_buf_free(&b);
}

/* A fixed-width append that does not fit must leave the buffer as it was. */
Test(buf, integer_appends_are_all_or_nothing, .timeout = 60)
{
    struct kms_buf b;
    for (size_t room = 0; room < 8; room++) {
        kms_buf_init(&b, 2 + room);
        cr_assert_eq(kms_buf_append(&b, "hd", 2), KMS_OK);
        cr_assert_eq(kms_buf_append_u64be(&b, 0x1122334455667788ull), KMS_ERR_TOO_LARGE, "room %zu", room);
        cr_assert_eq(b.len, 2, "u64 append left %zu stray bytes (room %zu)", b.len - 2, room);
        if (room < 4) {
            cr_assert_eq(kms_buf_append_u32be(&b, 1), KMS_ERR_TOO_LARGE);
            cr_assert_eq(b.len, 2);
        }
        if (room < 2) {
            cr_assert_eq(kms_buf_append_u16be(&b, 1), KMS_ERR_TOO_LARGE);
            cr_assert_eq(b.len, 2);
        }
        kms_buf_free(&b);
    }
}

Test(buf, append_str, .timeout = 60)
{
    struct kms_buf b;
    kms_buf_init(&b, 8);
    cr_assert_eq(kms_buf_append_str(&b, "hello"), KMS_OK);
    cr_assert_eq(kms_buf_append_str(&b, "world"), KMS_ERR_TOO_LARGE);
    cr_assert_eq(kms_buf_append_str(&b, ""), KMS_OK);
    cr_assert_eq(b.len, 5);
    cr_assert_eq(memcmp(b.data, "hello", 5), 0);
    kms_buf_free(&b);
}

Test(buf, reset_keeps_the_allocation_and_free_clears, .timeout = 60)
{
    struct kms_buf b;
    kms_buf_init(&b, 1024);
    cr_assert_eq(kms_buf_append(&b, "secret", 6), KMS_OK);
    uint8_t *data = b.data;
    size_t cap = b.cap;
    kms_buf_reset(&b);
    cr_assert_eq(b.len, 0);
    cr_assert_eq(b.data, data);
    cr_assert_eq(b.cap, cap);
    cr_assert_eq(memcmp(b.data, "\0\0\0\0\0\0", 6), 0, "reset did not wipe");
    cr_assert_eq(kms_buf_append(&b, "again", 5), KMS_OK);
    cr_assert_eq(memcmp(b.data, "again", 5), 0);
    kms_buf_free(&b);
    cr_assert_null(b.data);
    cr_assert_eq(b.len, 0);
    cr_assert_eq(b.cap, 0);
    kms_buf_free(&b); /* twice is harmless */
    kms_buf_reset(&b);

    kms_buf_init(&b, 0); /* a zero maximum holds nothing */
    cr_assert_eq(kms_buf_append(&b, "x", 1), KMS_ERR_TOO_LARGE);
    cr_assert_eq(kms_buf_append(&b, NULL, 0), KMS_OK);
    cr_assert_eq(b.len, 0);
    kms_buf_free(&b);
}
