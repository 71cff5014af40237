/* server/jsonlex.c: the lexer under the request decoder, against RFC 8259
 * (strings §7, numbers §6, structure §2-5) and the limits kmsd keeps
 * (integers fit long long, 32 levels). The decoder's own behaviour, and the
 * agreement with jansson, are in test_decode.c and fuzz_request_decode. */
#include "server/jsonlex.h"

#include <criterion/criterion.h>
#include <limits.h>
#include <stdint.h>
#include <string.h>

static struct kms_jsonlex lex(const char *s)
{
    struct kms_jsonlex d;
    memset(&d, 0, sizeof(d));
    d.begin = d.p = (const uint8_t *)s;
    d.end = d.p + strlen(s);
    return d;
}

/* Skips one value; on failure returns its reason, else NULL. */
static const char *skip(const char *s, size_t *consumed)
{
    struct kms_jsonlex d = lex(s);
    int rc = kms_jsonlex_skip(&d);
    if (consumed != NULL)
        *consumed = (size_t)(d.p - d.begin);
    cr_assert_eq(rc == 0, d.reason == NULL, "%s: rc %d, reason %s", s, rc, d.reason ? d.reason : "-");
    return d.reason;
}

Test(jsonlex, every_kind_of_value_is_skipped_whole)
{
    static const char *const ok[] = {
        "{}", "[]", "\"\"", "true", "false", "null", "0", "-0", "12", "-1.5e+3", "0.25E-2",
        "{\"a\": [1, {\"b\": null}, \"c\"], \"d\" :true}", "[ [ [ ] ] ]", "\"\\u00e9\\n\\\"\\/\"",
        "\"\xc3\xa9\xe2\x82\xac\xf0\x9f\x94\x91\"", "[1 ,2 ]",
    };
    for (size_t i = 0; i < sizeof(ok) / sizeof(ok[0]); i++) {
        size_t n = 0;
        const char *why = skip(ok[i], &n);
        cr_assert_null(why, "%s: %s", ok[i], why);
        cr_assert_eq(n, strlen(ok[i]), "%s: consumed %zu", ok[i], n);
    }
}

Test(jsonlex, what_rfc_8259_forbids_is_refused_with_its_reason)
{
    static const struct {
        const char *in, *reason;
    } bad[] = {
        {"01", "leading zero"},
        {"-", "invalid number"},
        {"1.", "invalid number"},
        {".5", "unexpected character"},
        {"1e", "invalid number"},
        {"+1", "unexpected character"},
        {"\"abc", "unterminated string"},
        {"\"a\\x\"", "invalid escape"},
        {"\"\\u12\"", "invalid escape"},
        {"\"\\u0000\"", "\\u0000 not allowed"},
        {"\"\\ud800\"", "invalid surrogate"},
        {"\"\\udc00\"", "invalid surrogate"},
        {"\"\\ud800\\u0041\"", "invalid surrogate"},
        {"\"a\tb\"", "control character in string"},
        {"\"\xc3\"", "invalid UTF-8"},
        {"\"\xed\xa0\x80\"", "invalid UTF-8"}, /* a surrogate encoded in UTF-8 */
        {"\"\xc0\xaf\"", "invalid UTF-8"},     /* overlong '/' */
        {"tru", "unexpected character"},
        {"nul", "unexpected character"},
        {"[1,]", "unexpected character"},
        {"[1 2]", "expected ',' or ']'"},
        {"{\"a\" 1}", "expected ':'"},
        {"{1:2}", "expected a string key or '}'"},
        {"{\"a\":1,}", "expected a string key or '}'"},
        {"", "unexpected end of input"},
        {"[", "unexpected end of input"},
        {"9223372036854775808", "number out of range"},
        {"-9223372036854775809", "number out of range"},
        {"1e400", "number out of range"},
        {"'a'", "unexpected character"},
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        const char *why = skip(bad[i].in, NULL);
        cr_assert_not_null(why, "%s was accepted", bad[i].in);
        cr_assert(strstr(why, bad[i].reason) != NULL, "%s: said \"%s\", want \"%s\"", bad[i].in, why, bad[i].reason);
    }
}

Test(jsonlex, a_nul_byte_is_named_inside_and_outside_strings)
{
    static const uint8_t in[] = {'[', '"', 'a', 0, '"', ']'};
    struct kms_jsonlex d;
    memset(&d, 0, sizeof(d));
    d.begin = d.p = in;
    d.end = in + sizeof(in);
    cr_assert_eq(kms_jsonlex_skip(&d), -1);
    cr_assert_str_eq(d.reason, "NUL byte");
    cr_assert_eq(d.err_at, in + 3);
}

Test(jsonlex, integers_keep_their_value_and_reals_are_marked)
{
    static const struct {
        const char *in;
        int is_int;
        long long v;
    } n[] = {
        {"0", 1, 0},
        {"-0", 1, 0},
        {"42", 1, 42},
        {"9223372036854775807", 1, LLONG_MAX},
        {"-9223372036854775808", 1, LLONG_MIN},
        {"1.0", 0, 0},
        {"1e2", 0, 0},
    };
    for (size_t i = 0; i < sizeof(n) / sizeof(n[0]); i++) {
        struct kms_jsonlex d = lex(n[i].in);
        int is_int = -1;
        long long v = -1;
        cr_assert_eq(kms_jsonlex_number(&d, &is_int, &v), 0, "%s: %s", n[i].in, d.reason);
        cr_assert_eq(is_int, n[i].is_int, "%s", n[i].in);
        if (is_int)
            cr_assert_eq(v, n[i].v, "%s: %lld", n[i].in, v);
    }
}

Test(jsonlex, nesting_stops_at_32_levels)
{
    char deep[80];
    memset(deep, '[', KMS_JSONLEX_MAX_DEPTH);
    memset(deep + KMS_JSONLEX_MAX_DEPTH, ']', KMS_JSONLEX_MAX_DEPTH);
    deep[2 * KMS_JSONLEX_MAX_DEPTH] = '\0';
    cr_assert_null(skip(deep, NULL), "32 levels are allowed");
    memset(deep, '[', KMS_JSONLEX_MAX_DEPTH + 1);
    memset(deep + KMS_JSONLEX_MAX_DEPTH + 1, ']', KMS_JSONLEX_MAX_DEPTH + 1);
    deep[2 * KMS_JSONLEX_MAX_DEPTH + 2] = '\0';
    const char *why = skip(deep, NULL);
    cr_assert(why != NULL && strcmp(why, "nesting too deep") == 0, "%s", why ? why : "accepted");
}

Test(jsonlex, strings_report_their_raw_bytes_and_whether_they_need_unescaping)
{
    const uint8_t *s = NULL;
    size_t n = 0;
    unsigned esc = 9;
    struct kms_jsonlex d = lex("\"plain\" rest");
    cr_assert_eq(kms_jsonlex_string(&d, &s, &n, &esc), 0);
    cr_assert_eq(n, 5);
    cr_assert_eq(memcmp(s, "plain", 5), 0);
    cr_assert_eq(esc, 0);
    cr_assert_eq(*d.p, ' ', "the closing quote is consumed");

    d = lex("\"a\\\"b\"");
    cr_assert_eq(kms_jsonlex_string(&d, &s, &n, &esc), 0);
    cr_assert_neq(esc, 0);
    cr_assert_eq(n, 4); /* a \ " b */
}

Test(jsonlex, unescaping_gives_utf_8_and_respects_the_capacity)
{
    static const struct {
        const char *raw, *want;
    } u[] = {
        {"a\\nb", "a\nb"},
        {"\\\"\\\\\\/\\b\\f\\r\\t", "\"\\/\b\f\r\t"},
        {"\\u0041", "A"},
        {"\\u00e9", "\xc3\xa9"},
        {"\\u20ac", "\xe2\x82\xac"},
        {"\\ud83d\\udd11", "\xf0\x9f\x94\x91"}, /* a surrogate pair: one 4-byte character */
    };
    for (size_t i = 0; i < sizeof(u) / sizeof(u[0]); i++) {
        uint8_t out[32];
        size_t n = kms_jsonlex_unescape((const uint8_t *)u[i].raw, strlen(u[i].raw), out, sizeof(out));
        cr_assert_eq(n, strlen(u[i].want), "%s: %zu bytes", u[i].raw, n);
        cr_assert_eq(memcmp(out, u[i].want, n), 0, "%s", u[i].raw);
    }
    uint8_t small[2];
    cr_assert_eq(kms_jsonlex_unescape((const uint8_t *)"\\u20ac", 6, small, sizeof(small)), SIZE_MAX);
    /* in place: the decoder unescapes inside the request body */
    char buf[] = "x\\u0041y";
    size_t n = kms_jsonlex_unescape((const uint8_t *)buf, strlen(buf), (uint8_t *)buf, sizeof(buf));
    cr_assert_eq(n, 3);
    cr_assert_eq(memcmp(buf, "xAy", 3), 0);
}

Test(jsonlex, next_walks_a_container_and_names_what_it_expected)
{
    struct kms_jsonlex d = lex(" , 2]");
    d.depth = 1;
    cr_assert_eq(kms_jsonlex_next(&d, ']'), 1, "a comma: another member");
    cr_assert_eq(*d.p, '2', "the comma and the space after it are consumed");
    d = lex(" ]x");
    d.depth = 1;
    cr_assert_eq(kms_jsonlex_next(&d, ']'), 0, "the close: done");
    cr_assert_eq(d.depth, 0);
    cr_assert_eq(*d.p, 'x');
    d = lex("}");
    cr_assert_eq(kms_jsonlex_next(&d, ']'), -1);
    cr_assert_str_eq(d.reason, "expected ',' or ']'");
    d = lex("");
    cr_assert_eq(kms_jsonlex_next(&d, '}'), -1);
    cr_assert_str_eq(d.reason, "unexpected end of input", "nothing there: not \"expected\"");
}

Test(jsonlex, the_first_error_is_kept_and_located_in_characters)
{
    /* line 2, after "  \"é\": " (2 spaces, 3 characters, a colon and a space) */
    struct kms_jsonlex d = lex("{\n  \"\xc3\xa9\": tru\n}");
    cr_assert_eq(kms_jsonlex_skip(&d), -1);
    const uint8_t *first = d.err_at;
    kms_jsonlex_fail(&d, d.end, "a later error");
    cr_assert_eq(d.err_at, first, "only the first error counts");
    cr_assert_str_eq(d.reason, "unexpected character");
    size_t line = 0, col = 0;
    kms_jsonlex_locate(&d, &line, &col);
    cr_assert_eq(line, 2);
    cr_assert_eq(col, 8, "column %zu: a two-byte character counts once", col);
}
