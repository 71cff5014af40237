/* common/utf8.c: the one UTF-8 check and encoder (Unicode 15 table 3-7). */
#include <criterion/criterion.h>
#include <string.h>

#include "common/error.h"
#include "common/utf8.h"

static size_t seq(const char *s)
{
    return kms_utf8_seq((const uint8_t *)s, strlen(s));
}

Test(utf8, well_formed_sequences_and_their_lengths)
{
    cr_assert_eq(seq("a"), 1);
    cr_assert_eq(seq("\x7f"), 1);
    cr_assert_eq(seq("\xc2\x80"), 2);
    cr_assert_eq(seq("\xdf\xbf"), 2);
    cr_assert_eq(seq("\xe0\xa0\x80"), 3);
    cr_assert_eq(seq("\xed\x9f\xbf"), 3, "U+D7FF, just below the surrogates");
    cr_assert_eq(seq("\xee\x80\x80"), 3, "U+E000, just above them");
    cr_assert_eq(seq("\xef\xbf\xbf"), 3);
    cr_assert_eq(seq("\xf0\x90\x80\x80"), 4);
    cr_assert_eq(seq("\xf4\x8f\xbf\xbf"), 4, "U+10FFFF");
    cr_assert_eq(seq("\xc3\xa9tail"), 2, "only the first sequence counts");
}

Test(utf8, ill_formed_sequences_are_refused)
{
    static const char *bad[] = {
        "\x80", "\xbf", "\xc0\x80", "\xc1\xbf", "\xe0\x80\x80", "\xe0\x9f\xbf", "\xed\xa0\x80", "\xed\xbf\xbf",
        "\xf0\x80\x80\x80", "\xf0\x8f\xbf\xbf", "\xf4\x90\x80\x80", "\xf5\x80\x80\x80", "\xf8\x88\x80\x80\x80",
        "\xfe", "\xff", "\xc3", "\xe2\x82", "\xf0\x9f\x98", "\xc3\x28", "\xe2\x28\xa1",
    };
    for (size_t i = 0; i < KMS_ARRAY_LEN(bad); i++)
        cr_assert_eq(seq(bad[i]), 0, "case %zu", i);
    cr_assert_eq(kms_utf8_seq((const uint8_t *)"a", 0), 0, "nothing to read");
}

Test(utf8, every_code_point_encodes_to_what_the_check_accepts)
{
    for (uint32_t cp = 1; cp <= 0x10FFFF; cp++) {
        if (cp >= 0xD800 && cp <= 0xDFFF)
            continue;
        uint8_t b[4];
        size_t n = kms_utf8_encode(cp, b);
        size_t want = cp < 0x80 ? 1 : cp < 0x800 ? 2 : cp < 0x10000 ? 3 : 4;
        cr_assert_eq(n, want, "U+%04X", cp);
        cr_assert_eq(kms_utf8_seq(b, n), n, "U+%04X", cp);
        if (n > 1)
            cr_assert_eq(kms_utf8_seq(b, n - 1), 0, "U+%04X truncated", cp);
    }
}
