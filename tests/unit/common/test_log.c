/* common/log.c: one JSON object per line, whatever the values hold (quotes,
 * newlines, control bytes, bytes that are not UTF-8: an attacker's CN must
 * not forge or break a line), levels filtered, and escaping that truncates
 * at a character, never inside an escape or a UTF-8 sequence. */
#include "common/log.h"

#include <criterion/criterion.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/utf8.h"

static char *out;
static size_t out_len;
static FILE *mem;

static void capture(void)
{
    mem = open_memstream(&out, &out_len);
    cr_assert_not_null(mem);
    kms_log_set_stream(mem);
    kms_log_set_level(KMS_LOG_INFO);
}

static void release(void)
{
    kms_log_set_stream(NULL);
    fclose(mem);
    free(out);
}

TestSuite(log, .init = capture, .fini = release);

/* The captured lines, each parsed as JSON (the test fails on any that is not). */
static size_t lines(json_t **objs, size_t cap)
{
    fflush(mem);
    size_t n = 0;
    char *save = NULL;
    char *copy = strdup(out);
    for (char *l = strtok_r(copy, "\n", &save); l != NULL && n < cap; l = strtok_r(NULL, "\n", &save)) {
        json_error_t e;
        objs[n] = json_loads(l, 0, &e);
        cr_assert_not_null(objs[n], "not one JSON object: %s (%s)", l, e.text);
        n++;
    }
    free(copy);
    return n;
}

Test(log, hostile_values_stay_inside_their_field_of_one_json_line)
{
    const char *cn = "evil\"},\"level\":\"error\n{\"forged\":\x01\x7f";
    const char *not_utf8 = "caf\xe9 \xff\xc0\xaf \xed\xa0\x80 ok \xc3\xa9";
    kms_log(KMS_LOG_WARN, "tls.refused", "req-1", "cn", cn, "name", not_utf8, "none", NULL, NULL);
    json_t *o[4];
    cr_assert_eq(lines(o, 4), 1, "one event, one line: %s", out);
    cr_assert_str_eq(json_string_value(json_object_get(o[0], "cn")), cn);
    cr_assert_str_eq(json_string_value(json_object_get(o[0], "name")),
                     "caf\xef\xbf\xbd \xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd "
                     "\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd ok \xc3\xa9",
                     "each byte that is not UTF-8 is U+FFFD; valid characters pass");
    cr_assert(json_is_null(json_object_get(o[0], "none")));
    cr_assert_str_eq(json_string_value(json_object_get(o[0], "level")), "warn");
    cr_assert_str_eq(json_string_value(json_object_get(o[0], "event")), "tls.refused");
    cr_assert_str_eq(json_string_value(json_object_get(o[0], "req_id")), "req-1");
    cr_assert_null(json_object_get(o[0], "forged"));
    json_decref(o[0]);
}

Test(log, levels_below_the_threshold_are_dropped)
{
    kms_log_set_level(KMS_LOG_WARN);
    kms_log(KMS_LOG_INFO, "quiet", NULL, NULL);
    kms_logf(KMS_LOG_DEBUG, "quieter", NULL, "n=%d", 1);
    kms_logf(KMS_LOG_ERROR, "loud", NULL, "n=%d", 2);
    json_t *o[4];
    cr_assert_eq(lines(o, 4), 1);
    cr_assert_str_eq(json_string_value(json_object_get(o[0], "event")), "loud");
    cr_assert_str_eq(json_string_value(json_object_get(o[0], "msg")), "n=2");
    cr_assert(json_is_null(json_object_get(o[0], "req_id")));
    json_decref(o[0]);
}

Test(log, level_names_parse_as_the_properties_file_writes_them)
{
    cr_assert_eq(kms_log_level_parse("debug"), KMS_LOG_DEBUG);
    cr_assert_eq(kms_log_level_parse("info"), KMS_LOG_INFO);
    cr_assert_eq(kms_log_level_parse("warn"), KMS_LOG_WARN);
    cr_assert_eq(kms_log_level_parse("warning"), KMS_LOG_WARN);
    cr_assert_eq(kms_log_level_parse("error"), KMS_LOG_ERROR);
    cr_assert_eq(kms_log_level_parse("INFO"), -1);
    cr_assert_eq(kms_log_level_parse(""), -1);
}

Test(log, escaping_truncates_between_characters)
{
    char small[8];
    kms_json_escape("ab\"cd", small, 5); /* a b \" = 4 bytes + NUL; c does not fit */
    cr_assert_str_eq(small, "ab\\\"");
    kms_json_escape("a\x01", small, 7); /* \u0001 needs 6: not cut in half */
    cr_assert_str_eq(small, "a");
    kms_json_escape("a\xe2\x82\xac", small, 4); /* the euro sign needs 3: not cut in half */
    cr_assert_str_eq(small, "a");
    kms_json_escape("xyz", small, 0); /* cap 0 writes nothing */
    char one[1] = {'q'};
    kms_json_escape("xyz", one, 1);
    cr_assert_eq(one[0], '\0');
}

Test(log, timestamps_are_utc_with_milliseconds)
{
    char ts[40];
    kms_log_timestamp(ts, sizeof(ts));
    cr_assert_eq(strlen(ts), 24, "%s", ts); /* 2026-12-04T08:00:00.123Z */
    cr_assert_eq(ts[10], 'T');
    cr_assert_eq(ts[19], '.');
    cr_assert_eq(ts[23], 'Z');
    char tiny[10];
    kms_log_timestamp(tiny, sizeof(tiny));
    cr_assert_str_eq(tiny, "", "too small: empty, not cut");
}
