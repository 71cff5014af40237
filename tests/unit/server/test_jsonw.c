/* server/jsonw.c: the response writer, and server/router.c: the route table. */
#include <criterion/criterion.h>
#include <jansson.h>
#include <string.h>

#include "server/internal.h"
#include "server/jsonw.h"

static json_t *parse(struct kms_jsonw *w)
{
    cr_assert_eq(kms_jsonw_finish(w), KMS_OK);
    json_error_t err;
    json_t *j = json_loadb((const char *)w->buf.data, w->buf.len, JSON_REJECT_DUPLICATES, &err);
    cr_assert_not_null(j, "invalid JSON: %.*s (%s)", (int)w->buf.len, (const char *)w->buf.data, err.text);
    return j;
}

Test(jsonw, nested_objects_arrays_and_escaping)
{
    struct kms_jsonw w;
    kms_jsonw_init(&w, 4096);
    kms_jsonw_obj_begin(&w);
    kms_jsonw_kv(&w, "a", "quote\" backslash\\ newline\n ctl\x01");
    kms_jsonw_key(&w, "n");
    kms_jsonw_int(&w, -42);
    kms_jsonw_key(&w, "list");
    kms_jsonw_arr_begin(&w);
    kms_jsonw_bool(&w, 1);
    kms_jsonw_null(&w);
    kms_jsonw_obj_begin(&w);
    kms_jsonw_kv(&w, "x", "y");
    kms_jsonw_obj_end(&w);
    kms_jsonw_arr_end(&w);
    kms_jsonw_key(&w, "b64");
    kms_jsonw_b64(&w, (const uint8_t *)"hello", 5);
    kms_jsonw_obj_end(&w);
    json_t *j = parse(&w);
    cr_assert_str_eq(json_string_value(json_object_get(j, "a")), "quote\" backslash\\ newline\n ctl\x01");
    cr_assert_eq(json_integer_value(json_object_get(j, "n")), -42);
    cr_assert_eq(json_array_size(json_object_get(j, "list")), 3);
    cr_assert_str_eq(json_string_value(json_object_get(j, "b64")), "aGVsbG8=");
    json_decref(j);
    kms_jsonw_free(&w);
}

Test(jsonw, long_strings_are_not_truncated)
{
    char big[5000];
    memset(big, 'k', sizeof(big) - 1);
    big[sizeof(big) - 1] = '\0';
    struct kms_jsonw w;
    kms_jsonw_init(&w, 16384);
    kms_jsonw_obj_begin(&w);
    kms_jsonw_kv(&w, "wrapped", big);
    kms_jsonw_obj_end(&w);
    json_t *j = parse(&w);
    cr_assert_str_eq(json_string_value(json_object_get(j, "wrapped")), big);
    json_decref(j);
    kms_jsonw_free(&w);
}

Test(jsonw, characters_survive_at_every_offset_of_a_long_string)
{
    /* a 4-byte character at each offset across the first 400 bytes: however
     * the writer splits a long value, it must never split a character */
    for (size_t at = 0; at < 400; at++) {
        char s[512];
        memset(s, 'k', sizeof(s) - 1);
        memcpy(s + at, "\xf0\x9f\x94\x91", 4);
        s[sizeof(s) - 1] = '\0';
        struct kms_jsonw w;
        kms_jsonw_init(&w, 4096);
        kms_jsonw_obj_begin(&w);
        kms_jsonw_kv(&w, "v", s);
        kms_jsonw_obj_end(&w);
        json_t *j = parse(&w);
        cr_assert_str_eq(json_string_value(json_object_get(j, "v")), s, "the character at offset %zu", at);
        json_decref(j);
        kms_jsonw_free(&w);
    }
}

Test(jsonw, overflow_and_unbalanced_are_errors)
{
    struct kms_jsonw w;
    kms_jsonw_init(&w, 16);
    kms_jsonw_obj_begin(&w);
    kms_jsonw_kv(&w, "key", "a value longer than sixteen bytes");
    kms_jsonw_obj_end(&w);
    cr_assert_eq(kms_jsonw_finish(&w), KMS_ERR_TOO_LARGE);
    kms_jsonw_free(&w);

    kms_jsonw_init(&w, 1024);
    kms_jsonw_obj_begin(&w);
    cr_assert_eq(kms_jsonw_finish(&w), KMS_ERR_INTERNAL, "unclosed object");
    kms_jsonw_free(&w);

    kms_jsonw_init(&w, 1024);
    kms_jsonw_obj_end(&w);
    cr_assert_eq(kms_jsonw_finish(&w), KMS_ERR_INTERNAL, "close without open");
    kms_jsonw_free(&w);
}

Test(router, matches_paths_methods_and_parameters)
{
    char param[KMS_PATH_PARAM_MAX + 1];
    int wrong = 0;
    const struct kms_route *r = kms_router_match("POST", "/v1/keys/kms-master/wrap", param, sizeof(param), &wrong);
    cr_assert_not_null(r);
    cr_assert_str_eq(param, "kms-master");
    cr_assert_str_eq(r->op, "key.wrap");

    r = kms_router_match("GET", "/v1/keys/kms-master", param, sizeof(param), &wrong);
    cr_assert_not_null(r);
    cr_assert_str_eq(r->op, "key.info");

    r = kms_router_match("GET", "/v1/customer-keys", param, sizeof(param), &wrong);
    cr_assert_null(r);
    cr_assert_eq(wrong, 1, "known path, other method: 405");

    r = kms_router_match("GET", "/v1/customer-keys/extra", param, sizeof(param), &wrong);
    cr_assert_null(r);
    cr_assert_eq(wrong, 0, "unknown path: 404");

    cr_assert_null(kms_router_match("POST", "/v1/keys//wrap", param, sizeof(param), &wrong), "empty segment");
    cr_assert_null(kms_router_match("POST", "/v1/keys/a/b/wrap", param, sizeof(param), &wrong));
    cr_assert_null(kms_router_match("GET", "/health/live/", param, sizeof(param), &wrong));

    char longname[400];
    memset(longname, 'a', sizeof(longname));
    memcpy(longname, "/v1/keys/", 9);
    longname[sizeof(longname) - 1] = '\0';
    cr_assert_null(kms_router_match("GET", longname, param, sizeof(param), &wrong), "over-long segment");

    r = kms_router_match("GET", "/health/ready", param, sizeof(param), &wrong);
    cr_assert_not_null(r);
    cr_assert_eq(r->roles, 0u, "health needs no certificate");
    r = kms_router_match("POST", "/v1/workspace-keys/unwrap", param, sizeof(param), &wrong);
    cr_assert(r->roles & (1u << KMS_ROLE_DEVICE));
    r = kms_router_match("POST", "/v1/workspace-keys", param, sizeof(param), &wrong);
    cr_assert_eq(r->roles & (1u << KMS_ROLE_DEVICE), 0u, "devices may not create");
}
