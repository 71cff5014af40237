/* The one name check (common/token.h): bounds and alphabet. */
#include <criterion/criterion.h>

#include <string.h>

#include "common/token.h"

Test(token, letters_digits_and_the_extra_bytes_only)
{
    cr_assert(kms_token_valid("acme", 64, "._-"));
    cr_assert(kms_token_valid("A.b_c-9", 64, "._-"));
    cr_assert(kms_token_valid("user@site:1", 128, "._:@-"));
    cr_assert_not(kms_token_valid("user@site", 64, "._-"), "@ is not in extra");
    cr_assert_not(kms_token_valid("a b", 64, "._-"));
    cr_assert_not(kms_token_valid("a/b", 64, "._-"));
    cr_assert_not(kms_token_valid("caf\xc3\xa9", 64, "._-"), "non-ASCII letters are refused");
    cr_assert_not(kms_token_valid("a\nb", 64, "._-"));
    cr_assert(kms_token_valid("abc", 64, NULL));
    cr_assert_not(kms_token_valid("a.c", 64, NULL));
}

Test(token, empty_null_and_too_long_are_refused)
{
    cr_assert_not(kms_token_valid(NULL, 64, "._-"));
    cr_assert_not(kms_token_valid("", 64, "._-"));
    char s[200];
    memset(s, 'a', sizeof(s) - 1);
    s[sizeof(s) - 1] = '\0';
    s[64] = '\0';
    cr_assert(kms_token_valid(s, 64, "._-"), "exactly max");
    s[64] = 'a';
    s[65] = '\0';
    cr_assert_not(kms_token_valid(s, 64, "._-"), "max + 1");
}
