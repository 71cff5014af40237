/* server/decode.c: the request decoder.
 *
 * Its grammar is checked against jansson's json_loadb(...,
 * JSON_REJECT_DUPLICATES, ...) on every case of the table: a body is refused
 * as malformed_json exactly when jansson refuses it (the probe schema knows
 * the keys the duplicate cases use). The deliberate differences (decode.h)
 * have their own tests; so do the tables: types, bounds, rules, required and
 * unknown fields, batches, and errors that name the field. */
#include <criterion/criterion.h>
#include <jansson.h>
#include <limits.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include <stddef.h>

#include "server/decode.h"

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

/* The probe: fields of every kind, and the keys the table's duplicates use. */
struct probe {
    struct kms_text a, empty, s, site;
    long long n;
    struct kms_batch batch;
};
static const struct kms_field probe_item_fields[] = {
    {.name = "s", .kind = KMS_FIELD_TEXT, .offset = offsetof(struct probe, s), .rule = "must be text"},
    {.name = "n", .kind = KMS_FIELD_INT, .offset = offsetof(struct probe, n), .min = -5, .max = 1000, .def = 7,
     .rule = "must be an integer of -5..1000"},
};
static const struct kms_schema probe_item = {probe_item_fields, 2, sizeof(struct probe)};
static int site_ok(const char *s) { return strchr(s, ' ') == NULL; }
static const struct kms_field probe_fields[] = {
    {.name = "a", .kind = KMS_FIELD_TEXT, .offset = offsetof(struct probe, a), .rule = "must be text"},
    {.name = "", .kind = KMS_FIELD_TEXT, .offset = offsetof(struct probe, empty), .rule = "must be text"},
    {.name = "s", .kind = KMS_FIELD_TEXT, .offset = offsetof(struct probe, s), .rule = "must be text"},
    {.name = "site_id", .kind = KMS_FIELD_TEXT, .offset = offsetof(struct probe, site), .min_len = 1, .max_len = 8,
     .valid = site_ok, .rule = "must be 1..8 characters without a space"},
    {.name = "n", .kind = KMS_FIELD_INT, .offset = offsetof(struct probe, n), .min = -5, .max = 1000, .def = 7,
     .rule = "must be an integer of -5..1000"},
    {.name = "batch", .kind = KMS_FIELD_BATCH, .offset = offsetof(struct probe, batch), .items = &probe_item,
     .max_items = 4, .rule = "must be an array of 1..4 objects"},
};
static const struct kms_schema probe = {probe_fields, KMS_ARRAY_LEN(probe_fields), sizeof(struct probe)};

/* Decodes a copy of in[0..len) (the decoder writes into its input). The
 * decoded strings point into that copy: pass copy to keep it (and free it),
 * or NULL when no string of out is read afterwards. */
static kms_rc decode(const struct kms_schema *schema, const void *in, size_t len, void *out,
                     struct kms_decode_error *e, uint8_t **copy)
{
    uint8_t *c = malloc(len + 1);
    cr_assert_not_null(c);
    memcpy(c, in, len);
    kms_rc rc = kms_decode(c, len, schema, out, e);
    if (copy != NULL)
        *copy = c;
    else
        free(c);
    return rc;
}

/* Our verdict on the grammar against jansson's; returns ours (1: JSON), with
 * the error text in err. */
static int both(const void *in, size_t len, char *err, size_t cap)
{
    struct probe out;
    struct kms_decode_error e;
    kms_rc rc = decode(&probe, in, len, &out, &e, NULL);
    kms_decode_free(&probe, &out);
    json_t *theirs = jansson(in, len);
    cr_assert(rc == KMS_OK || rc == KMS_ERR_BAD_JSON || rc == KMS_ERR_INVALID_FIELD, "rc %s", kms_error_name(rc));
    cr_assert_eq(theirs != NULL, rc != KMS_ERR_BAD_JSON,
                 "verdicts differ on input of %zu bytes: jansson %s, ours %s (%s)", len,
                 theirs ? "accepts" : "rejects", rc != KMS_ERR_BAD_JSON ? "accepts" : "rejects", e.message);
    json_decref(theirs);
    (void)snprintf(err, cap, "%.*s", (int)(cap > 0 ? cap - 1 : 0), e.message);
    return rc != KMS_ERR_BAD_JSON;
}

#define JSON_ERR "the body is not valid JSON: "

Test(decode, table_matches_jansson)
{
    for (size_t i = 0; i < KMS_ARRAY_LEN(cases); i++) {
        char err[256];
        const struct tcase *c = &cases[i];
        int ok = both(c->in, c->len, err, sizeof(err));
        cr_assert_eq(ok, c->ok, "case %zu: expected %s, got %s (%s)", i, c->ok ? "accept" : "reject",
                     ok ? "accept" : "reject", ok ? "" : err);
        if (!ok) {
            cr_assert(strncmp(err, JSON_ERR "line ", sizeof(JSON_ERR) + 4) == 0, "case %zu: %s", i, err);
            if (c->reason != NULL) {
                size_t el = strlen(err), rl = strlen(c->reason);
                cr_assert(el > rl + 2 && strcmp(err + el - rl, c->reason) == 0 && err[el - rl - 2] == ':',
                          "case %zu: error \"%s\", expected reason \"%s\"", i, err, c->reason);
            }
        }
    }
}

Test(decode, values_land_in_the_struct_unescaped_and_terminated)
{
    static const char in[] = "{\"a\":\"x\\u00e9\\ud83d\\ude00\\n\\/y\",\"s\":\"plain\",\"n\":-5,\"site_id\":\"abc\"}";
    struct probe out;
    struct kms_decode_error e;
    uint8_t *body = NULL;
    cr_assert_eq(decode(&probe, in, sizeof(in) - 1, &out, &e, &body), KMS_OK, "%s", e.message);
    cr_assert_eq(out.a.len, 10);
    cr_assert(memcmp(out.a.s, "x\xc3\xa9\xf0\x9f\x98\x80\n/y", 11) == 0);
    cr_assert_str_eq(out.s.s, "plain");
    cr_assert_eq(out.s.len, 5);
    cr_assert_str_eq(out.site.s, "abc");
    cr_assert_eq(out.n, -5);
    cr_assert_null(out.empty.s, "absent text is NULL");
    cr_assert_null(out.batch.items);
    /* the strings live in the body itself: no copy was made */
    cr_assert(out.s.s > (const char *)body && out.s.s < (const char *)body + sizeof(in));
    free(body);

    cr_assert_eq(decode(&probe, "{}", 2, &out, &e, NULL), KMS_OK);
    cr_assert_eq(out.n, 7, "an absent integer takes its default");
}

static void refused(const char *in, kms_rc want, const char *field, const char *message)
{
    struct probe out;
    struct kms_decode_error e;
    kms_rc rc = decode(&probe, in, strlen(in), &out, &e, NULL);
    cr_assert_eq(rc, want, "%s: got %s (%s)", in, kms_error_name(rc), e.message);
    cr_assert_str_eq(e.field, field, "%s", in);
    cr_assert_str_eq(e.message, message, "%s", in);
    cr_assert_null(out.batch.items, "nothing to free after a refusal");
    cr_assert_null(out.a.s);
}

Test(decode, field_errors_name_the_field_and_the_rule)
{
    refused("{\"a\":\"x\",\"bogus\":1}", KMS_ERR_INVALID_FIELD, "bogus",
            "unknown field bogus; this takes a, , s, site_id, n, batch");
    refused("{\"S3CRET KEY\":1}", KMS_ERR_INVALID_FIELD, "",
            "an unknown field; this takes a, , s, site_id, n, batch");
    refused("{\"a\":1}", KMS_ERR_INVALID_FIELD, "a", "a must be a string, not a number");
    refused("{\"a\":null}", KMS_ERR_INVALID_FIELD, "a", "a must be a string, not null");
    refused("{\"n\":\"5\"}", KMS_ERR_INVALID_FIELD, "n", "n must be an integer, not a string");
    refused("{\"n\":1001}", KMS_ERR_INVALID_FIELD, "n", "n must be an integer of -5..1000");
    refused("{\"n\":-6}", KMS_ERR_INVALID_FIELD, "n", "n must be an integer of -5..1000");
    refused("{\"n\":5.0}", KMS_ERR_INVALID_FIELD, "n", "n must be an integer of -5..1000");
    refused("{\"site_id\":\"\"}", KMS_ERR_INVALID_FIELD, "site_id", "site_id must be 1..8 characters without a space");
    refused("{\"site_id\":\"a b\"}", KMS_ERR_INVALID_FIELD, "site_id",
            "site_id must be 1..8 characters without a space");
    refused("{\"site_id\":\"abcdefghi\"}", KMS_ERR_INVALID_FIELD, "site_id",
            "site_id must be 1..8 characters without a space");
    /* the rule is checked on the decoded value */
    refused("{\"site_id\":\"a\\u0020b\"}", KMS_ERR_INVALID_FIELD, "site_id",
            "site_id must be 1..8 characters without a space");
    refused("[{\"a\":\"x\"}]", KMS_ERR_INVALID_FIELD, "", "the body must be a JSON object");
    /* the first field error in body order */
    refused("{\"n\":\"x\",\"a\":1}", KMS_ERR_INVALID_FIELD, "n", "n must be an integer, not a string");
    /* a syntax error anywhere wins over a field error */
    refused("{\"bogus\":1,\"a\":\"x\"", KMS_ERR_BAD_JSON, "",
            "the body is not valid JSON: line 1 column 19: unexpected end of input");
    /* a known field twice is malformed, as jansson says */
    refused("{\"a\":\"x\",\"\\u0061\":\"y\"}", KMS_ERR_BAD_JSON, "",
            "the body is not valid JSON: line 1 column 10: duplicate key");
}

static const struct kms_field need_fields[] = {
    {.name = "a", .kind = KMS_FIELD_TEXT, .offset = offsetof(struct probe, a), .required = 1,
     .rule = "must be the wrapped key"},
    {.name = "batch", .kind = KMS_FIELD_BATCH, .offset = offsetof(struct probe, batch), .items = &probe_item,
     .max_items = 4, .rule = "must be an array of 1..4 objects"},
};
static const struct kms_schema need = {need_fields, 2, sizeof(struct probe)};

Test(decode, required_fields_and_batches)
{
    struct probe out;
    struct kms_decode_error e;
    cr_assert_eq(decode(&need, "{}", 2, &out, &e, NULL), KMS_ERR_INVALID_FIELD);
    cr_assert_str_eq(e.field, "a");
    cr_assert_str_eq(e.message, "a is required: it must be the wrapped key");

    static const char batch[] = "{\"batch\":[{\"s\":\"one\"},{\"n\":3},{}]}";
    uint8_t *body = NULL; /* why: the decoded strings live in it */
    cr_assert_eq(decode(&need, batch, sizeof(batch) - 1, &out, &e, &body), KMS_OK, "%s", e.message);
    cr_assert_null(out.a.s, "a batch stands in for the required fields");
    cr_assert_eq(out.batch.n, 3);
    const struct probe *it = out.batch.items;
    cr_assert_str_eq(it[0].s.s, "one");
    cr_assert_eq(it[0].n, 7);
    cr_assert_null(it[1].s.s);
    cr_assert_eq(it[1].n, 3);
    cr_assert_eq(it[2].n, 7);
    kms_decode_free(&need, &out);
    cr_assert_null(out.batch.items);
    free(body);

    static const struct {
        const char *in, *field, *message;
    } bad[] = {
        {"{\"batch\":[]}", "batch", "batch must be an array of 1..4 objects"},
        {"{\"batch\":[{},{},{},{},{}]}", "batch", "batch must be an array of 1..4 objects"},
        {"{\"batch\":{}}", "batch", "batch must be an array, not an object"},
        {"{\"batch\":[{},7]}", "batch[1]", "batch[1] must be an object, not a number"},
        {"{\"batch\":[{},{\"n\":2000}]}", "batch[1].n", "n must be an integer of -5..1000"},
        {"{\"batch\":[{\"zz\":1}]}", "batch[0].zz", "unknown field batch[0].zz; this takes s, n"},
        {"{\"a\":\"x\",\"batch\":[{}]}", "batch", "batch must be the only field when it is given"},
        {"{\"batch\":[{}],\"a\":\"x\"}", "batch", "batch must be the only field when it is given"},
    };
    for (size_t i = 0; i < KMS_ARRAY_LEN(bad); i++) {
        cr_assert_eq(decode(&need, bad[i].in, strlen(bad[i].in), &out, &e, NULL), KMS_ERR_INVALID_FIELD, "%s",
                     bad[i].in);
        cr_assert_str_eq(e.field, bad[i].field, "%s", bad[i].in);
        cr_assert_str_eq(e.message, bad[i].message, "%s", bad[i].in);
        cr_assert_null(out.batch.items, "%s: items freed on refusal", bad[i].in);
    }
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

struct unwrap_req {
    struct kms_text site_id, customer_key, user_key, workspace_key;
};
#define TEXT(m) {.name = #m, .kind = KMS_FIELD_TEXT, .offset = offsetof(struct unwrap_req, m), .required = 1, .rule = "x"}
static const struct kms_field unwrap_fields[] = {TEXT(site_id), TEXT(customer_key), TEXT(user_key),
                                                 TEXT(workspace_key)};
static const struct kms_schema unwrap_schema = {unwrap_fields, 4, sizeof(struct unwrap_req)};

Test(decode, real_body_parses_and_every_truncation_is_refused)
{
    char err[256];
    size_t len = sizeof(unwrap_body) - 1;
    cr_assert(both(unwrap_body, len, err, sizeof(err)));
    struct unwrap_req q;
    struct kms_decode_error e;
    uint8_t *body = NULL;
    cr_assert_eq(decode(&unwrap_schema, unwrap_body, len, &q, &e, &body), KMS_OK, "%s", e.message);
    json_t *j = jansson(unwrap_body, len);
    cr_assert_str_eq(q.site_id.s, json_string_value(json_object_get(j, "site_id")));
    cr_assert_str_eq(q.customer_key.s, json_string_value(json_object_get(j, "customer_key")));
    cr_assert_str_eq(q.user_key.s, json_string_value(json_object_get(j, "user_key")));
    cr_assert_str_eq(q.workspace_key.s, json_string_value(json_object_get(j, "workspace_key")));
    json_decref(j);
    free(body);
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

Test(decode, pretty_printed_body_matches)
{
    char err[256];
    json_t *j = jansson(unwrap_body, sizeof(unwrap_body) - 1);
    cr_assert_not_null(j);
    char *pretty = json_dumps(j, JSON_INDENT(4));
    cr_assert_not_null(pretty);
    cr_assert(both(pretty, strlen(pretty), err, sizeof(err)));
    struct unwrap_req q;
    struct kms_decode_error e;
    cr_assert_eq(decode(&unwrap_schema, pretty, strlen(pretty), &q, &e, NULL), KMS_OK, "%s", e.message);
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

Test(decode, one_mib_bodies_match)
{
    char err[256];
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

static kms_rc verdict(const char *in, size_t len, struct kms_decode_error *e)
{
    struct probe out;
    kms_rc rc = decode(&probe, in, len, &out, e, NULL);
    kms_decode_free(&probe, &out);
    return rc;
}

/* Deliberate difference 1: KMS_DECODE_MAX_DEPTH (jansson allows 2048). */
Test(decode, nesting_is_limited_to_32)
{
    char buf[1024], err[256];
    struct kms_decode_error e;
    size_t n = nested(buf, KMS_DECODE_MAX_DEPTH, "[", "]", "1");
    cr_assert(both(buf, n, err, sizeof(err)));
    n = nested(buf, KMS_DECODE_MAX_DEPTH - 1, "{\"a\":", "}", "{}");
    cr_assert(both(buf, n, err, sizeof(err)));

    n = nested(buf, KMS_DECODE_MAX_DEPTH + 1, "[", "]", "");
    cr_assert_eq(verdict(buf, n, &e), KMS_ERR_BAD_JSON);
    cr_assert_str_eq(e.message, JSON_ERR "line 1 column 33: nesting too deep");
    json_t *t = jansson(buf, n);
    cr_assert_not_null(t, "jansson accepts 33 levels");
    json_decref(t);
    n = nested(buf, KMS_DECODE_MAX_DEPTH + 1, "{\"a\":", "}", "1");
    cr_assert_eq(verdict(buf, n, &e), KMS_ERR_BAD_JSON);
    cr_assert(strstr(e.message, "nesting too deep") != NULL);
}

/* Deliberate difference 2: jansson drops one NUL right after a number or
 * true/false/null; we refuse NUL bytes everywhere. */
Test(decode, nul_after_number_or_literal_is_refused)
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
        struct kms_decode_error e;
        cr_assert_eq(verdict(quirks[i].in, quirks[i].len, &e), KMS_ERR_BAD_JSON, "quirk %zu", i);
        cr_assert(strstr(e.message, ": NUL byte") != NULL, "%s", e.message);
        json_t *t = jansson(quirks[i].in, quirks[i].len);
        cr_assert_not_null(t, "jansson's quirk %zu is gone: drop this difference from decode.h", i);
        json_decref(t);
    }
}

/* Deliberate difference 3: unknown keys are not checked for duplicates. */
Test(decode, unknown_duplicates_are_unknown_fields)
{
    static const char in[] = "{\"zz\":1,\"zz\":2}";
    struct kms_decode_error e;
    cr_assert_eq(verdict(in, sizeof(in) - 1, &e), KMS_ERR_INVALID_FIELD);
    cr_assert_str_eq(e.field, "zz");
    cr_assert_null(jansson(in, sizeof(in) - 1));
}

Test(decode, nul_at_every_offset_of_the_body_is_refused)
{
    size_t len = sizeof(unwrap_body) - 1;
    char *b = malloc(len);
    cr_assert_not_null(b);
    for (size_t i = 0; i < len; i++) {
        memcpy(b, unwrap_body, len);
        b[i] = '\0';
        struct kms_decode_error e;
        cr_assert_eq(verdict(b, len, &e), KMS_ERR_BAD_JSON, "offset %zu", i);
        json_t *t = jansson(b, len);
        cr_assert_null(t, "jansson accepts a NUL at %zu", i);
    }
    free(b);
}

Test(decode, error_text_locates_and_never_echoes_input)
{
    struct kms_decode_error e;
    static const char in[] = "{\n  \"s\": \"S3CRETS3CRET\x01\"\n}";
    cr_assert_eq(verdict(in, sizeof(in) - 1, &e), KMS_ERR_BAD_JSON);
    cr_assert_str_eq(e.message, JSON_ERR "line 2 column 21: control character in string");
    cr_assert_null(strstr(e.message, "S3CRET"));

    static const char utf[] = "[\"\xc3\xa9\xe2\x82\xac\",\n\"\xf0\x9f\x98\x80\", x]";
    cr_assert_eq(verdict(utf, sizeof(utf) - 1, &e), KMS_ERR_BAD_JSON);
    cr_assert_str_eq(e.message, JSON_ERR "line 2 column 6: unexpected character");

    /* an escape decoded earlier on the line does not move the column */
    static const char esc[] = "{\"s\":\"\\u00e9\\n\",\"a\":\"x\" x}";
    cr_assert_eq(verdict(esc, sizeof(esc) - 1, &e), KMS_ERR_BAD_JSON);
    cr_assert_str_eq(e.message, JSON_ERR "line 1 column 25: expected ',' or '}'");

    static const char dup[] = "{\"s\":1,\"s\":2}";
    cr_assert_eq(verdict(dup, sizeof(dup) - 1, &e), KMS_ERR_BAD_JSON);
    cr_assert_str_eq(e.message, JSON_ERR "line 1 column 8: duplicate key");

    cr_assert_eq(verdict("[1", 2, &e), KMS_ERR_BAD_JSON);
    cr_assert_str_eq(e.message, JSON_ERR "line 1 column 3: unexpected end of input");

    /* a value never appears in a field error either */
    static const char val[] = "{\"site_id\":\"S3CRET S3CRET\"}";
    cr_assert_eq(verdict(val, sizeof(val) - 1, &e), KMS_ERR_INVALID_FIELD);
    cr_assert_null(strstr(e.message, "S3CRET"));
}

Test(decode, null_data_is_an_empty_body)
{
    struct probe out;
    struct kms_decode_error e;
    cr_assert_eq(kms_decode(NULL, 0, &probe, &out, &e), KMS_ERR_BAD_JSON);
    cr_assert_str_eq(e.message, JSON_ERR "line 1 column 1: unexpected end of input");
    uint8_t two[] = "{}";
    cr_assert_eq(kms_decode(two, 2, &probe, &out, &e), KMS_OK);
    cr_assert_str_eq(e.message, "");
    cr_assert_str_eq(e.field, "");
}
