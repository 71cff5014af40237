/* Strict standard base64 (common/base64.h, RFC 4648 §4). */
#include <criterion/criterion.h>

#include <stdint.h>
#include <string.h>

#include "common/base64.h"

static const struct {
    const char *plain, *enc;
} rfc4648[] = {
    {"", ""},         {"f", "Zg=="},         {"fo", "Zm8="},         {"foo", "Zm9v"},
    {"foob", "Zm9vYg=="}, {"fooba", "Zm9vYmE="}, {"foobar", "Zm9vYmFy"},
};

static void decode_fails(const char *in, size_t len, kms_rc want)
{
    uint8_t out[64];
    size_t out_len = 99;
    kms_rc rc = kms_b64_decode(in, len, out, sizeof(out), &out_len);
    cr_assert_eq(rc, want, "'%.*s': expected %s, got %s", (int)len, in, kms_error_name(want), kms_error_name(rc));
    cr_assert_eq(out_len, 0);
}

Test(base64, rfc4648_vectors_encode)
{
    for (size_t i = 0; i < sizeof(rfc4648) / sizeof(rfc4648[0]); i++) {
        char out[16];
        size_t n = strlen(rfc4648[i].plain);
        cr_assert_eq(kms_b64_encoded_len(n), strlen(rfc4648[i].enc));
        cr_assert_eq(kms_b64_encode((const uint8_t *)rfc4648[i].plain, n, out, sizeof(out)), KMS_OK);
        cr_assert_str_eq(out, rfc4648[i].enc);
    }
}

Test(base64, rfc4648_vectors_decode)
{
    for (size_t i = 0; i < sizeof(rfc4648) / sizeof(rfc4648[0]); i++) {
        uint8_t out[16];
        size_t len = 99, n = strlen(rfc4648[i].enc);
        cr_assert_eq(kms_b64_decode(rfc4648[i].enc, n, out, sizeof(out), &len), KMS_OK, "%s", rfc4648[i].enc);
        cr_assert_eq(len, strlen(rfc4648[i].plain));
        cr_assert_eq(memcmp(out, rfc4648[i].plain, len), 0);
        cr_assert(kms_b64_decoded_max(n) >= len);
    }
}

Test(base64, every_byte_value_and_length_round_trips)
{
    uint8_t in[300], back[300];
    char enc[404];
    for (size_t i = 0; i < sizeof(in); i++)
        in[i] = (uint8_t)(i * 7 + 3);
    for (size_t n = 0; n <= sizeof(in); n++) {
        size_t len = 0;
        cr_assert_eq(kms_b64_encode(in, n, enc, sizeof(enc)), KMS_OK);
        cr_assert_eq(strlen(enc), kms_b64_encoded_len(n));
        cr_assert_eq(kms_b64_decode(enc, strlen(enc), back, n, &len), KMS_OK, "n=%zu", n); /* exact cap */
        cr_assert_eq(len, n);
        cr_assert_eq(memcmp(in, back, n), 0);
    }
    uint8_t all[256];
    for (int i = 0; i < 256; i++)
        all[i] = (uint8_t)i;
    size_t len = 0;
    cr_assert_eq(kms_b64_encode(all, sizeof(all), enc, sizeof(enc)), KMS_OK);
    cr_assert_eq(kms_b64_decode(enc, strlen(enc), back, sizeof(back), &len), KMS_OK);
    cr_assert_eq(len, 256);
    cr_assert_eq(memcmp(all, back, 256), 0);
}

Test(base64, non_canonical_trailing_bits_rejected)
{
    decode_fails("Zh==", 4, KMS_ERR_MALFORMED); /* "f" is Zg== */
    decode_fails("Zm9=", 4, KMS_ERR_MALFORMED); /* "fo" is Zm8= */
    decode_fails("Zm9vYh==", 8, KMS_ERR_MALFORMED);
    decode_fails("AB==", 4, KMS_ERR_MALFORMED);
    decode_fails("AAB=", 4, KMS_ERR_MALFORMED);
    decode_fails("//==", 4, KMS_ERR_MALFORMED);
    uint8_t out[4];
    size_t len;
    cr_assert_eq(kms_b64_decode("AA==", 4, out, sizeof(out), &len), KMS_OK);
    cr_assert_eq(kms_b64_decode("AAA=", 4, out, sizeof(out), &len), KMS_OK);
    cr_assert_eq(kms_b64_decode("/w==", 4, out, sizeof(out), &len), KMS_OK);
    cr_assert_eq(out[0], 0xff);
}

Test(base64, bad_length_rejected)
{
    decode_fails("Z", 1, KMS_ERR_MALFORMED);
    decode_fails("Zg", 2, KMS_ERR_MALFORMED); /* padding is required */
    decode_fails("Zg=", 3, KMS_ERR_MALFORMED);
    decode_fails("Zm9vY", 5, KMS_ERR_MALFORMED);
    decode_fails("Zm9vYmFy=", 9, KMS_ERR_MALFORMED);
}

Test(base64, bad_characters_and_misplaced_padding_rejected)
{
    decode_fails("Zm9v!A==", 8, KMS_ERR_MALFORMED);
    decode_fails("Zm-_", 4, KMS_ERR_MALFORMED); /* URL alphabet */
    decode_fails("Zm=v", 4, KMS_ERR_MALFORMED);
    decode_fails("Z=9v", 4, KMS_ERR_MALFORMED);
    decode_fails("Z===", 4, KMS_ERR_MALFORMED);
    decode_fails("====", 4, KMS_ERR_MALFORMED);
    decode_fails("Zg==Zg==", 8, KMS_ERR_MALFORMED);
    decode_fails("Zm8=Zm9v", 8, KMS_ERR_MALFORMED);
    decode_fails("Zm\0v", 4, KMS_ERR_MALFORMED); /* embedded NUL */
    decode_fails("Zm9\x80", 4, KMS_ERR_MALFORMED);
}

Test(base64, whitespace_rejected)
{
    decode_fails("Zm9v\n", 5, KMS_ERR_MALFORMED);
    decode_fails("Zm\n9", 4, KMS_ERR_MALFORMED);
    decode_fails(" Zm9", 4, KMS_ERR_MALFORMED);
    decode_fails("Zm9 ", 4, KMS_ERR_MALFORMED);
    decode_fails("Zm9v\r\nYmFy", 10, KMS_ERR_MALFORMED);
    decode_fails("Zm9\tYmFy", 8, KMS_ERR_MALFORMED);
}

Test(base64, output_too_small)
{
    uint8_t out[8];
    size_t len = 99;
    cr_assert_eq(kms_b64_decode("Zm9vYmFy", 8, out, 5, &len), KMS_ERR_TOO_LARGE);
    cr_assert_eq(len, 0);
    cr_assert_eq(kms_b64_decode("Zm9vYmFy", 8, out, 6, &len), KMS_OK);
    cr_assert_eq(len, 6);
    cr_assert_eq(kms_b64_decode("Zm9vYg==", 8, out, 3, &len), KMS_ERR_TOO_LARGE);
    cr_assert_eq(kms_b64_decode("Zm9vYg==", 8, out, 4, &len), KMS_OK);

    char enc[9];
    cr_assert_eq(kms_b64_encode((const uint8_t *)"foobar", 6, enc, 8), KMS_ERR_TOO_LARGE); /* no room for NUL */
    cr_assert_eq(kms_b64_encode((const uint8_t *)"foobar", 6, enc, 9), KMS_OK);
    cr_assert_str_eq(enc, "Zm9vYmFy");
    char one[1];
    cr_assert_eq(kms_b64_encode(NULL, 0, one, sizeof(one)), KMS_OK);
    cr_assert_str_eq(one, "");
    cr_assert_eq(kms_b64_encode(NULL, 0, one, 0), KMS_ERR_TOO_LARGE);
    cr_assert_eq(kms_b64_encode((const uint8_t *)"x", SIZE_MAX, enc, sizeof(enc)), KMS_ERR_TOO_LARGE);
}

Test(base64, length_helpers)
{
    cr_assert_eq(kms_b64_encoded_len(0), 0);
    cr_assert_eq(kms_b64_encoded_len(1), 4);
    cr_assert_eq(kms_b64_encoded_len(3), 4);
    cr_assert_eq(kms_b64_encoded_len(4), 8);
    cr_assert_eq(kms_b64_decoded_max(0), 0);
    cr_assert_eq(kms_b64_decoded_max(4), 3);
    cr_assert_eq(kms_b64_decoded_max(8), 6);
    cr_assert_eq(kms_b64_decoded_max(7), 3);
}

/* Every byte value at every position of a three-group input: accepted only
 * when it is in the alphabet, and then each group decodes as it does alone
 * (the last group alone goes through the padding-aware path). */
Test(base64, every_byte_at_every_position)
{
    static const char alphabet[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    for (size_t pos = 0; pos < 12; pos++) {
        for (int b = 0; b < 256; b++) {
            char in[13] = "QUJDREVGR0hJ"; /* "ABCDEFGHI" */
            in[pos] = (char)b;
            uint8_t out[9];
            size_t n = 0;
            kms_rc rc = kms_b64_decode(in, 12, out, sizeof(out), &n);
            int in_alphabet = b != 0 && strchr(alphabet, b) != NULL;
            /* why: '=' is refused everywhere here: as the last byte it would leave
             * non-zero trailing bits ("R0h=") */
            if (in_alphabet) {
                cr_assert_eq(rc, KMS_OK, "byte %d at %zu refused", b, pos);
                cr_assert_eq(n, 9);
                /* the group holding pos decodes like a lone group would */
                size_t g = pos / 4 * 4;
                uint8_t one[3];
                size_t m = 0;
                cr_assert_eq(kms_b64_decode(in + g, 4, one, sizeof(one), &m), KMS_OK);
                cr_assert_eq(m, 3);
                cr_assert_eq(memcmp(out + g / 4 * 3, one, 3), 0, "byte %d at %zu decoded differently", b, pos);
            } else {
                cr_assert_neq(rc, KMS_OK, "byte %d at %zu accepted", b, pos);
            }
        }
    }
}
