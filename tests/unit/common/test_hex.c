/* common/hex.c: lower-case hex, whole bytes only when the buffer is short,
 * and the SHA-256 fingerprint form used in logs and status. */
#include "common/hex.h"

#include <criterion/criterion.h>
#include <string.h>

Test(hex, bytes_become_lower_case_pairs)
{
    static const uint8_t in[] = {0x00, 0x0f, 0xa0, 0xff, 0x7e};
    char out[11];
    kms_hex_encode(in, sizeof(in), out, sizeof(out));
    cr_assert_str_eq(out, "000fa0ff7e");
    kms_hex_encode(in, 0, out, sizeof(out));
    cr_assert_str_eq(out, "");
}

Test(hex, a_short_buffer_gets_whole_bytes_and_a_nul)
{
    static const uint8_t in[] = {0xab, 0xcd, 0xef};
    char out[6] = "zzzzz";
    kms_hex_encode(in, sizeof(in), out, sizeof(out)); /* room for 2 bytes and the NUL */
    cr_assert_str_eq(out, "abcd");
    char four[4];
    kms_hex_encode(in, sizeof(in), four, sizeof(four));
    cr_assert_str_eq(four, "ab", "3 digits of room: one whole byte, never half of one");
    char none[1] = {'x'};
    kms_hex_encode(in, sizeof(in), none, 0);
    cr_assert_eq(none[0], 'x', "cap 0 writes nothing");
}

Test(hex, sha256_of_the_fips_180_2_example)
{
    char out[65];
    kms_hex_sha256((const uint8_t *)"abc", 3, out);
    cr_assert_str_eq(out, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
    kms_hex_sha256((const uint8_t *)"", 0, out);
    cr_assert_str_eq(out, "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
}
