/* server/jsonparse.c: the request-body parser, checked against jansson's
 * json_loadb(..., JSON_REJECT_DUPLICATES, ...) on every case: same verdict,
 * and json_equal trees when both accept. The two deliberate differences
 * (jsonparse.h) have their own tests. */
#include <criterion/criterion.h>
#include <jansson.h>
#include <limits.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "server/jsonparse.h"

struct tcase {
    const char *in;
    size_t len;
    int ok;
    const char *reason; /* a rejection's reason, as our error text ends */
};

#define OK(s) {s, sizeof(s) - 1, 1, NULL}
#define BAD(s, r) {s, sizeof(s) - 1, 0, r}

static const struct tcase cases[] = {
    /* structure */
    OK("{}"), OK("[]"), OK(" \t\r\n{ \t\r\n} \t\r\n"), OK("{\"a\":1}"), OK("[1,2,3]"),
    OK("{\"a\":{\"b\":[{},[],\"\",0]}}"), OK("[[],[[]],{\"x\":[]}]"),
    OK("{ \"a\" : \"b\" , \"c\" :\n\"d\" }"),
    BAD("", "unexpected end of input"), BAD(" \n ", "unexpected end of input"),
    BAD("\"x\"", "expected '{' or '['"), BAD("1", "expected '{' or '['"), BAD("true", "expected '{' or '['"),
    BAD("null", "expected '{' or '['"), BAD("-1", "expected '{' or '['"),
    BAD("{", "unexpected end of input"), BAD("[", "unexpected end of input"), BAD("}", NULL), BAD("]", NULL),
    BAD("{,}", NULL), BAD("[,1]", NULL), BAD("[1,]", NULL), BAD("{\"a\":1,}", NULL), BAD("{\"a\" 1}", "expected ':'"),
    BAD("{\"a\":}", "unexpected character"), BAD("{1:2}", "expected a string key or '}'"), BAD("[1 2]", NULL),
    BAD("[]]", "trailing content"), BAD("[][]", "trailing content"), BAD("{} {}", "trailing content"),
    BAD("{\"a\":1} x", "trailing content"), BAD("{'a':1}", NULL), BAD("{a:1}", NULL), BAD("[1,,2]", NULL),
    BAD("{\"a\":1 \"b\":2}", NULL), BAD("[}", NULL), BAD("{]", NULL), BAD("{\"a\"}", NULL),
    /* whitespace is space, tab, CR, LF only */
    BAD("[\f]", NULL), BAD("[\v]", NULL), BAD("[\xc2\xa0]", NULL), BAD("\xef\xbb\xbf{}", NULL), BAD("{}\f", NULL),
    /* duplicates, also spelled differently */
    BAD("{\"a\":1,\"a\":2}", "duplicate key"), BAD("{\"a\":1,\"\\u0061\":2}", "duplicate key"),
    BAD("{\"\":1,\"\":2}", "duplicate key"), OK("{\"a\":{\"a\":1},\"b\":{\"a\":2}}"), OK("{\"a\":1,\"A\":2}"),
    /* literals */
    OK("[true,false,null]"), BAD("[True]", NULL), BAD("[nul]", NULL), BAD("[nulll]", NULL),
    BAD("[truefalse]", NULL), BAD("[tru", NULL), BAD("[NaN]", NULL), BAD("[Infinity]", NULL),
    BAD("[-Infinity]", NULL), BAD("[undefined]", NULL),
    /* integers: json_int_t, strtoll's range */
    OK("[0,-0,1,-1,42,1234567890]"), OK("[9223372036854775807,-9223372036854775808]"),
    BAD("[9223372036854775808]", "number out of range"), BAD("[-9223372036854775809]", "number out of range"),
    BAD("[99999999999999999999999999]", "number out of range"), BAD("[01]", "leading zero"),
    BAD("[-01]", "leading zero"), BAD("[00]", "leading zero"), BAD("[-]", "invalid number"),
    BAD("[+1]", NULL), BAD("[.5]", NULL), BAD("[0x10]", NULL), BAD("[1-2]", NULL), BAD("[--1]", NULL),
    /* reals: strtod; overflow is an error, underflow is not */
    OK("[1.5,-0.0,0.0,1e5,1E5,1e+5,1e-5,2.5E-3,-1.25e10,0e0,-0e-0,1e05]"),
    OK("[1.7976931348623157e308,4.9e-324,1e-400,-1e-400]"), OK("[99999999999999999999999999.0]"),
    OK("[123456789012345678901234567890e-10]"),
    BAD("[1e400]", "number out of range"), BAD("[-1e400]", "number out of range"),
    BAD("[1.8e308]", "number out of range"), BAD("[1.]", "invalid number"), BAD("[1.e5]", "invalid number"),
    BAD("[1e]", "invalid number"), BAD("[1e+]", "invalid number"), BAD("[1E-]", "invalid number"),
    BAD("[1.5.5]", NULL), BAD("[1e5e5]", NULL), BAD("[1.5e]", "invalid number"),
    /* strings: escapes */
    OK("[\"\\\" \\\\ \\/ \\b \\f \\n \\r \\t\"]"), OK("[\"\\u0041\\u00e9\\u00E9\\u20ac\\uFFFF\\u0001\\u001f\"]"),
    OK("[\"\\ud83d\\ude00\",\"\\uD83D\\uDE00\",\"\\udbff\\udfff\",\"\\ud800\\udc00\"]"),
    OK("{\"\\u006b\\u0065\\u0079\":\"v\",\"k\\n\":\"\\t\"}"), OK("[\"\",\"a\"]"),
    BAD("[\"\\x\"]", "invalid escape"), BAD("[\"\\'\"]", "invalid escape"), BAD("[\"\\U0041\"]", "invalid escape"),
    BAD("[\"\\u00g0\"]", "invalid escape"), BAD("[\"\\u00\"]", "invalid escape"), BAD("[\"\\u", NULL),
    BAD("[\"\\", "unterminated string"), BAD("[\"\\ \"]", "invalid escape"),
    BAD("[\"\\ud800\"]", "invalid surrogate"), BAD("[\"\\udc00\"]", "invalid surrogate"),
    BAD("[\"\\udfff\\ud800\"]", "invalid surrogate"), BAD("[\"\\ud800\\u0041\"]", "invalid surrogate"),
    BAD("[\"\\ud800\\ud800\"]", "invalid surrogate"), BAD("[\"\\ud800x\"]", "invalid surrogate"),
    BAD("[\"\\ud800\\n\"]", "invalid surrogate"), BAD("[\"\\ud800\\u12\"]", "invalid escape"),
    BAD("[\"\\u0000\"]", "\\u0000 not allowed"), BAD("{\"\\u0000\":1}", "\\u0000 not allowed"),
    BAD("{\"a\\u0000b\":1}", "\\u0000 not allowed"), BAD("[\"x\\u0000\"]", "\\u0000 not allowed"),
    /* strings: raw bytes */
    OK("[\"\x7f\"]"), OK("[\" ~!#$%&'()*+,-./:;<=>?@[]^_`{|}\"]"),
    BAD("[\"\x01\"]", "control character in string"), BAD("[\"\x1f\"]", "control character in string"),
    BAD("[\"a\tb\"]", "control character in string"), BAD("[\"a\nb\"]", "control character in string"),
    BAD("{\"k\x01\":1}", "control character in string"),
    BAD("[\"abc", "unterminated string"), BAD("[\"", "unterminated string"), BAD("{\"a", "unterminated string"),
    /* UTF-8: valid, overlong, surrogates, out of range, truncated, stray */
    OK("[\"caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80 \xef\xbf\xbf \xf4\x8f\xbf\xbf \xed\x9f\xbf \xee\x80\x80\"]"),
    OK("{\"\xc3\xa9\":\"\xc2\x80\xdf\xbf\xe0\xa0\x80\xf0\x90\x80\x80\"}"),
    BAD("[\"\xc0\x80\"]", "invalid UTF-8"), BAD("[\"\xc1\xbf\"]", "invalid UTF-8"),
    BAD("[\"\xe0\x80\x80\"]", "invalid UTF-8"), BAD("[\"\xe0\x9f\xbf\"]", "invalid UTF-8"),
    BAD("[\"\xf0\x80\x80\x80\"]", "invalid UTF-8"), BAD("[\"\xf0\x8f\xbf\xbf\"]", "invalid UTF-8"),
    BAD("[\"\xed\xa0\x80\"]", "invalid UTF-8"), BAD("[\"\xed\xbf\xbf\"]", "invalid UTF-8"),
    BAD("[\"\xf4\x90\x80\x80\"]", "invalid UTF-8"), BAD("[\"\xf5\x80\x80\x80\"]", "invalid UTF-8"),
    BAD("[\"\xf8\x88\x80\x80\x80\"]", "invalid UTF-8"), BAD("[\"\xff\"]", "invalid UTF-8"),
    BAD("[\"\xfe\"]", "invalid UTF-8"), BAD("[\"\x80\"]", "invalid UTF-8"), BAD("[\"\xbf\"]", "invalid UTF-8"),
    BAD("[\"\xe2\x82\"]", "invalid UTF-8"), BAD("[\"\xc3\"]", "invalid UTF-8"), BAD("[\"\xc3", "invalid UTF-8"),
    BAD("[\"\xf0\x9f\x98\"]", "invalid UTF-8"), BAD("[\"\xc3\x28\"]", "invalid UTF-8"),
    BAD("{\"\xff\":1}", "invalid UTF-8"), BAD("[\xc3\xa9]", "unexpected character"),
    BAD("[1]\xff", "trailing content"),
    /* embedded NUL bytes: jansson refuses these too */
    BAD("\0{}", "NUL byte"), BAD("{}\0", "NUL byte"), BAD("[\"a\0b\"]", "NUL byte"), BAD("{\"a\0\":1}", "NUL byte"),
    BAD("[1,\0 2]", "NUL byte"), BAD("[ \0]", "NUL byte"), BAD("{\"a\"\0:1}", "NUL byte"),
    BAD("{\"a\":\0 1}", "NUL byte"), BAD("[1 \0]", "NUL byte"), BAD("[1\0\0]", "NUL byte"),
};

static json_t *jansson(const void *in, size_t len)
{
    json_error_t err;
    return json_loadb(in, len, JSON_REJECT_DUPLICATES, &err);
}

/* Both parsers on in; asserts they agree (verdict, tree) and returns ours'
 * verdict, with our error text in err. */
static int both(const void *in, size_t len, char *err, size_t cap)
{
    json_t *mine = (json_t *)1;
    kms_rc rc = kms_json_parse(in, len, &mine, err, cap);
    json_t *theirs = jansson(in, len);
    cr_assert(rc == KMS_OK || rc == KMS_ERR_BAD_JSON, "rc %s", kms_error_name(rc));
    cr_assert_eq(rc == KMS_OK, mine != NULL, "*out must be set iff OK");
    cr_assert_eq(theirs != NULL, mine != NULL, "verdicts differ on input of %zu bytes: jansson %s, ours %s (%s)",
                 len, theirs ? "accepts" : "rejects", mine ? "accepts" : "rejects", mine ? "" : err);
    if (mine != NULL) {
        cr_assert(json_equal(mine, theirs), "trees differ on input of %zu bytes", len);
        char *a = json_dumps(mine, JSON_COMPACT), *b = json_dumps(theirs, JSON_COMPACT);
        cr_assert(a != NULL && b != NULL && strcmp(a, b) == 0, "dumps differ: %s vs %s", a, b);
        free(a);
        free(b);
    }
    int ok = mine != NULL;
    json_decref(mine);
    json_decref(theirs);
    return ok;
}

Test(jsonparse, table_matches_jansson)
{
    for (size_t i = 0; i < KMS_ARRAY_LEN(cases); i++) {
        char err[160];
        const struct tcase *c = &cases[i];
        int ok = both(c->in, c->len, err, sizeof(err));
        cr_assert_eq(ok, c->ok, "case %zu: expected %s, got %s (%s)", i, c->ok ? "accept" : "reject",
                     ok ? "accept" : "reject", ok ? "" : err);
        if (!ok) {
            cr_assert(strncmp(err, "line ", 5) == 0, "case %zu: %s", i, err);
            if (c->reason != NULL) {
                size_t el = strlen(err), rl = strlen(c->reason);
                cr_assert(el > rl + 2 && strcmp(err + el - rl, c->reason) == 0 && err[el - rl - 2] == ':',
                          "case %zu: error \"%s\", expected reason \"%s\"", i, err, c->reason);
            }
        }
    }
}

Test(jsonparse, values_are_the_expected_types)
{
    static const char in[] = "{\"i\":-9223372036854775808,\"z\":-0,\"r\":1e2,\"nz\":-0.0,\"s\":\"\\u00e9\\ud83d\\ude00\","
                             "\"t\":true,\"f\":false,\"n\":null,\"a\":[1.5],\"u\":1e-400}";
    json_t *j = NULL;
    char err[128];
    cr_assert_eq(kms_json_parse((const uint8_t *)in, sizeof(in) - 1, &j, err, sizeof(err)), KMS_OK, "%s", err);
    cr_assert(json_is_integer(json_object_get(j, "i")));
    cr_assert_eq(json_integer_value(json_object_get(j, "i")), LLONG_MIN);
    cr_assert(json_is_integer(json_object_get(j, "z")));
    cr_assert_eq(json_integer_value(json_object_get(j, "z")), 0);
    cr_assert(json_is_real(json_object_get(j, "r")));
    cr_assert(json_real_value(json_object_get(j, "r")) == 100.0);
    cr_assert(json_is_real(json_object_get(j, "nz")));
    cr_assert(signbit(json_real_value(json_object_get(j, "nz"))));
    cr_assert(json_is_real(json_object_get(j, "u")));
    cr_assert(json_real_value(json_object_get(j, "u")) == 0.0);
    const char *s = json_string_value(json_object_get(j, "s"));
    cr_assert_eq(json_string_length(json_object_get(j, "s")), 6);
    cr_assert(memcmp(s, "\xc3\xa9\xf0\x9f\x98\x80", 7) == 0);
    cr_assert(json_is_true(json_object_get(j, "t")));
    cr_assert(json_is_false(json_object_get(j, "f")));
    cr_assert(json_is_null(json_object_get(j, "n")));
    cr_assert_eq(json_object_size(j), 10);
    json_decref(j);
}

/* The unwrap body of docs/wrapped-key-format.md's worked example. */
static const char unwrap_body[] =
    "{\"site_id\":\"acme-prod\","
    "\"customer_key\":\"kms:v1:AQEBtvpnVNmwW/POSK5W21C/8gAAAAAAAAAAAAAAAAAAAAAJYWNtZS1wcm9kCmNteC1tYXN0ZXIAAAABADyjTB4mpTRL"
    "tshhAjbTvGZMkQyu1HsvZ6XcafbPM84Vnx9vTqsyRuiaKAF9bLVTAr3zIPcwOcy9Zjg6MHE=\","
    "\"user_key\":\"kms:v1:AQKANPxRp6D/cqj8yfBuW0lIPrb6Z1TZsFvzzkiuVttQv/IJYWNtZS1wcm9kAAAAAAA+s1/L7/mw2mEp1TwAIECitoOzQoTM"
    "Nu9289DQHkEx4JvBDAaj8UYi3JOGIaQAncqLjwAtQHRihGAZSnflsQ==\","
    "\"workspace_key\":\"kms:v1:AQOAcfgmQohqOIRI2ad1LzLKejT8Uaeg/3Ko/MnwbltJSD4JYWNtZS1wcm9kAAAAAACMaxAqW+lP43dniYoAIOxWK4q3"
    "Y64gyU9mZkARkpQ1g2N5RUuA8MdQbfgfZtn3GO98Vfp2J3RiZ+JX/jvLhQ==\"}";

Test(jsonparse, real_body_parses_and_every_truncation_is_refused)
{
    char err[160];
    size_t len = sizeof(unwrap_body) - 1;
    cr_assert(both(unwrap_body, len, err, sizeof(err)));
    for (size_t n = 0; n < len; n++)
        cr_assert(!both(unwrap_body, n, err, sizeof(err)), "prefix of %zu bytes accepted", n);
    /* and with a byte dropped anywhere, the verdicts still agree */
    char *cut = malloc(len);
    cr_assert_not_null(cut);
    for (size_t i = 0; i < len; i++) {
        memcpy(cut, unwrap_body, i);
        memcpy(cut + i, unwrap_body + i + 1, len - i - 1);
        (void)both(cut, len - 1, err, sizeof(err));
    }
    free(cut);
}

Test(jsonparse, pretty_printed_body_matches)
{
    char err[160];
    json_t *j = jansson(unwrap_body, sizeof(unwrap_body) - 1);
    cr_assert_not_null(j);
    char *pretty = json_dumps(j, JSON_INDENT(4));
    cr_assert_not_null(pretty);
    cr_assert(both(pretty, strlen(pretty), err, sizeof(err)));
    free(pretty);
    json_decref(j);
}

static char *mib_buf(size_t *len)
{
    *len = (size_t)1 << 20;
    char *b = malloc(*len);
    cr_assert_not_null(b);
    return b;
}

Test(jsonparse, one_mib_bodies_match)
{
    char err[160];
    size_t cap;
    char *b = mib_buf(&cap);
    static const char b64[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

    /* one long base64 string */
    size_t n = 0;
    n += (size_t)snprintf(b, cap, "{\"plaintext\":\"");
    while (n < cap - 2) {
        b[n] = b64[n % 64];
        n++;
    }
    b[n++] = '"';
    b[n++] = '}';
    cr_assert(both(b, n, err, sizeof(err)));
    b[cap / 2] = '\x01';
    cr_assert(!both(b, n, err, sizeof(err)));

    /* many keys */
    n = 0;
    b[n++] = '{';
    for (unsigned i = 0; n < cap - 40; i++)
        n += (size_t)snprintf(b + n, cap - n, "%s\"k%u\":\"v%u\"", i ? "," : "", i, i);
    b[n++] = '}';
    cr_assert(both(b, n, err, sizeof(err)));

    /* escapes and UTF-8 all the way (the scratch grows on the heap) */
    n = 0;
    b[n++] = '[';
    b[n++] = '"';
    static const char pieces[][13] = {"\\u00e9", "\\n", "\xe2\x82\xac", "\\ud83d\\ude00", "x", "\\\""};
    for (unsigned i = 0; n < cap - 16; i++) {
        const char *pc = pieces[i % KMS_ARRAY_LEN(pieces)];
        memcpy(b + n, pc, strlen(pc));
        n += strlen(pc);
    }
    b[n++] = '"';
    b[n++] = ']';
    cr_assert(both(b, n, err, sizeof(err)));

    /* numbers */
    n = 0;
    b[n++] = '[';
    for (unsigned i = 0; n < cap - 40; i++)
        n += (size_t)snprintf(b + n, cap - n, "%s%d,%u.%ue-%u", i ? "," : "", -(int)i, i, i, i % 300);
    b[n++] = ']';
    cr_assert(both(b, n, err, sizeof(err)));

    /* a number of a million digits */
    memset(b, '7', cap);
    b[0] = '[';
    b[1] = '0';
    b[2] = '.';
    b[cap - 1] = ']';
    cr_assert(both(b, cap, err, sizeof(err)));
    b[1] = '7';
    b[2] = '7';
    cr_assert(!both(b, cap, err, sizeof(err)));
    cr_assert(strstr(err, "number out of range") != NULL, "%s", err);
    free(b);
}

static size_t nested(char *buf, unsigned depth, const char *open, const char *close, const char *inner)
{
    size_t n = 0;
    for (unsigned i = 0; i < depth; i++)
        n += (size_t)snprintf(buf + n, 64, "%s", open);
    n += (size_t)snprintf(buf + n, 64, "%s", inner);
    for (unsigned i = 0; i < depth; i++)
        n += (size_t)snprintf(buf + n, 64, "%s", close);
    return n;
}

/* Deliberate difference 1: KMS_JSON_MAX_DEPTH (jansson allows 2048). */
Test(jsonparse, nesting_is_limited_to_32)
{
    char buf[1024], err[160];
    size_t n = nested(buf, KMS_JSON_MAX_DEPTH, "[", "]", "1");
    cr_assert(both(buf, n, err, sizeof(err)));
    n = nested(buf, KMS_JSON_MAX_DEPTH - 1, "{\"a\":", "}", "{}");
    cr_assert(both(buf, n, err, sizeof(err)));

    json_t *j = (json_t *)1;
    n = nested(buf, KMS_JSON_MAX_DEPTH + 1, "[", "]", "");
    cr_assert_eq(kms_json_parse((uint8_t *)buf, n, &j, err, sizeof(err)), KMS_ERR_BAD_JSON);
    cr_assert_null(j);
    cr_assert_str_eq(err, "line 1 column 33: nesting too deep");
    json_t *t = jansson(buf, n);
    cr_assert_not_null(t, "jansson accepts 33 levels");
    json_decref(t);
    n = nested(buf, KMS_JSON_MAX_DEPTH + 1, "{\"a\":", "}", "1");
    cr_assert_eq(kms_json_parse((uint8_t *)buf, n, &j, err, sizeof(err)), KMS_ERR_BAD_JSON);
    cr_assert(strstr(err, "nesting too deep") != NULL);
}

/* Deliberate difference 2: jansson drops one NUL right after a number or
 * true/false/null; we refuse NUL bytes everywhere. */
Test(jsonparse, nul_after_number_or_literal_is_refused)
{
    static const struct {
        const char *in;
        size_t len;
    } quirks[] = {
#define Q(s) {s, sizeof(s) - 1}
        Q("[1\0]"), Q("[true\0]"), Q("{\"a\":null\0}"), Q("[1.5\0, false\0 ]"), Q("[-2e5\0,0\0]"),
#undef Q
    };
    for (size_t i = 0; i < KMS_ARRAY_LEN(quirks); i++) {
        json_t *j = (json_t *)1;
        char err[160];
        cr_assert_eq(kms_json_parse((const uint8_t *)quirks[i].in, quirks[i].len, &j, err, sizeof(err)),
                     KMS_ERR_BAD_JSON, "quirk %zu", i);
        cr_assert_null(j);
        cr_assert(strstr(err, ": NUL byte") != NULL, "%s", err);
        json_t *t = jansson(quirks[i].in, quirks[i].len);
        cr_assert_not_null(t, "jansson's quirk %zu is gone: drop this difference from jsonparse.h", i);
        json_decref(t);
    }
}

Test(jsonparse, nul_at_every_offset_of_the_body_is_refused)
{
    size_t len = sizeof(unwrap_body) - 1;
    char *b = malloc(len);
    cr_assert_not_null(b);
    for (size_t i = 0; i < len; i++) {
        memcpy(b, unwrap_body, len);
        b[i] = '\0';
        json_t *j = (json_t *)1;
        char err[160];
        cr_assert_eq(kms_json_parse((uint8_t *)b, len, &j, err, sizeof(err)), KMS_ERR_BAD_JSON, "offset %zu", i);
        cr_assert_null(j);
        json_t *t = jansson(b, len);
        cr_assert_null(t, "jansson accepts a NUL at %zu", i);
    }
    free(b);
}

Test(jsonparse, error_text_locates_and_never_echoes_input)
{
    static const char in[] = "{\n  \"k\": \"S3CRETS3CRET\x01\"\n}";
    json_t *j = (json_t *)1;
    char err[160];
    cr_assert_eq(kms_json_parse((const uint8_t *)in, sizeof(in) - 1, &j, err, sizeof(err)), KMS_ERR_BAD_JSON);
    cr_assert_null(j);
    cr_assert_str_eq(err, "line 2 column 21: control character in string");
    cr_assert_null(strstr(err, "S3CRET"));

    static const char utf[] = "[\"\xc3\xa9\xe2\x82\xac\",\n\"\xf0\x9f\x98\x80\", x]";
    cr_assert_eq(kms_json_parse((const uint8_t *)utf, sizeof(utf) - 1, &j, err, sizeof(err)), KMS_ERR_BAD_JSON);
    cr_assert_str_eq(err, "line 2 column 6: unexpected character");

    static const char dup[] = "{\"secret\":1,\"secret\":2}";
    cr_assert_eq(kms_json_parse((const uint8_t *)dup, sizeof(dup) - 1, &j, err, sizeof(err)), KMS_ERR_BAD_JSON);
    cr_assert_str_eq(err, "line 1 column 13: duplicate key");

    cr_assert_eq(kms_json_parse((const uint8_t *)"[1", 2, &j, err, sizeof(err)), KMS_ERR_BAD_JSON);
    cr_assert_str_eq(err, "line 1 column 3: unexpected end of input");
}

Test(jsonparse, small_or_no_error_buffer_and_null_data)
{
    json_t *j = (json_t *)1;
    char err[8];
    memset(err, 'z', sizeof(err));
    cr_assert_eq(kms_json_parse((const uint8_t *)"[x]", 3, &j, err, sizeof(err)), KMS_ERR_BAD_JSON);
    cr_assert_null(j);
    cr_assert_str_eq(err, "line 1 ");
    j = (json_t *)1;
    cr_assert_eq(kms_json_parse((const uint8_t *)"[x]", 3, &j, NULL, 0), KMS_ERR_BAD_JSON);
    cr_assert_null(j);
    j = (json_t *)1;
    cr_assert_eq(kms_json_parse(NULL, 0, &j, err, sizeof(err)), KMS_ERR_BAD_JSON);
    cr_assert_null(j);
    cr_assert_eq(kms_json_parse((const uint8_t *)"{}", 2, &j, err, sizeof(err)), KMS_OK);
    cr_assert_str_eq(err, "");
    cr_assert(json_is_object(j) && json_object_size(j) == 0);
    json_decref(j);
}

/* Every allocation goes through jansson's allocator (kmsd's wiping one), the
 * scratch of escaped strings included, and all of it is given back. */
static long live_allocs, total_allocs;

static void *counting_malloc(size_t n)
{
    live_allocs++;
    total_allocs++;
    return malloc(n);
}

static void counting_free(void *p)
{
    if (p != NULL)
        live_allocs--;
    free(p);
}

Test(jsonparse, allocates_only_through_jansson)
{
    json_set_alloc_funcs(counting_malloc, counting_free);
    size_t cap = 4096;
    char *b = malloc(cap);
    cr_assert_not_null(b);
    size_t n = (size_t)snprintf(b, cap, "{\"k\\u00e9y\":\"");
    for (unsigned i = 0; n < cap - 8; i++) {
        if (i % 7 == 6)
            b[n++] = '\\';
        b[n++] = i % 7 == 6 ? 'n' : 'a';
    }
    n += (size_t)snprintf(b + n, cap - n, "x\"}");
    json_t *j = NULL;
    char err[160];
    cr_assert_eq(kms_json_parse((uint8_t *)b, n, &j, err, sizeof(err)), KMS_OK, "%s", err);
    cr_assert_gt(total_allocs, 3);
    cr_assert_gt(live_allocs, 0);
    json_t *t = jansson(b, n);
    cr_assert(json_equal(j, t));
    json_decref(t);
    json_decref(j);
    cr_assert_eq(live_allocs, 0, "%ld allocations not given back", live_allocs);

    /* and on failure, after a heap scratch and an escaped key were made */
    memcpy(b + n - 3, "x\",", 3);
    total_allocs = 0;
    j = (json_t *)1;
    cr_assert_eq(kms_json_parse((uint8_t *)b, n, &j, err, sizeof(err)), KMS_ERR_BAD_JSON);
    cr_assert_null(j);
    cr_assert_gt(total_allocs, 2);
    cr_assert_eq(live_allocs, 0, "%ld allocations not given back", live_allocs);
    free(b);
    json_set_alloc_funcs(malloc, free);
}
