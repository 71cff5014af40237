/* server/metrics.c: the Prometheus text exposition format (0.0.4) as a
 * scraper reads it — every sample line well formed and announced by its
 * # TYPE, histogram buckets cumulative up to +Inf = _count — and each
 * recorder landing in its own series. Which events reach the recorders is
 * tests/integration/metrics.sh's. */
#include "server/metrics.h"

#include <criterion/criterion.h>
#include <regex.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static char *render(void)
{
    struct kms_metrics_gauges g = {
        .keystore_generation = 3,
        .earliest_not_after = 1900000000,
        .cache_kind = 2,
        .cache_hits_local = 5,
        .cache_remote_up = 1,
        .backend = "soft",
        .backend_up = 1,
    };
    struct kms_buf b;
    kms_buf_init(&b, 1 << 20);
    cr_assert_eq(kms_metrics_render(&g, &b), KMS_OK, "%s", kms_error_detail());
    char *s = strndup((const char *)b.data, b.len);
    kms_buf_free(&b);
    return s;
}

/* The value of the sample line starting with series (name and labels), or -1. */
static double sample(const char *text, const char *series)
{
    size_t n = strlen(series);
    for (const char *l = text; l != NULL && *l; l = strchr(l, '\n') ? strchr(l, '\n') + 1 : NULL)
        if (strncmp(l, series, n) == 0 && l[n] == ' ')
            return strtod(l + n + 1, NULL);
    return -1;
}

Test(metrics, every_line_is_in_the_text_format_and_every_family_is_typed)
{
    kms_metrics_request(0, "/health/live", 200, 0.0003);
    char *text = render();
    regex_t sample_re, type_re;
    cr_assert_eq(regcomp(&sample_re,
                         "^([a-zA-Z_:][a-zA-Z0-9_:]*)(\\{[a-zA-Z_][a-zA-Z0-9_]*=\"[^\"\\\\]*\""
                         "(,[a-zA-Z_][a-zA-Z0-9_]*=\"[^\"\\\\]*\")*\\})? -?[0-9][0-9.e+-]*$",
                         REG_EXTENDED),
                 0);
    cr_assert_eq(regcomp(&type_re, "^# TYPE ([a-zA-Z_:][a-zA-Z0-9_:]*) (counter|gauge|histogram)$", REG_EXTENDED),
                 0);
    char typed[64][80];
    size_t ntyped = 0, nsamples = 0;
    char *save = NULL;
    for (char *l = strtok_r(text, "\n", &save); l != NULL; l = strtok_r(NULL, "\n", &save)) {
        regmatch_t mt[2];
        if (strncmp(l, "# HELP ", 7) == 0)
            continue;
        if (regexec(&type_re, l, 2, mt, 0) == 0) {
            cr_assert_lt(ntyped, 64);
            snprintf(typed[ntyped++], sizeof(typed[0]), "%.*s", (int)(mt[1].rm_eo - mt[1].rm_so), l + mt[1].rm_so);
            continue;
        }
        cr_assert_eq(regexec(&sample_re, l, 2, mt, 0), 0, "not a sample line: %s", l);
        char name[80];
        snprintf(name, sizeof(name), "%.*s", (int)(mt[1].rm_eo - mt[1].rm_so), l + mt[1].rm_so);
        int found = 0;
        for (size_t i = 0; i < ntyped && !found; i++) {
            size_t tl = strlen(typed[i]);
            found = strcmp(name, typed[i]) == 0 ||
                    (strncmp(name, typed[i], tl) == 0 &&
                     (!strcmp(name + tl, "_bucket") || !strcmp(name + tl, "_sum") || !strcmp(name + tl, "_count")));
        }
        cr_assert(found, "%s has no # TYPE before it", name);
        nsamples++;
    }
    cr_assert_gt(nsamples, 20);
    regfree(&sample_re);
    regfree(&type_re);
    free(text);
}

Test(metrics, a_request_is_counted_by_route_and_status_and_timed)
{
    kms_metrics_request(5, "/v1/test-route", 414, 0.002);
    kms_metrics_request(5, "/v1/test-route", 431, 0.002);
    kms_metrics_request(5, "/v1/test-route", 200, 0.7);
    kms_metrics_request(5, "/v1/test-route", 299, 0.7);
    char *t = render();
    cr_assert_eq(sample(t, "kms_requests_total{route=\"/v1/test-route\",status=\"414\"}"), 1, "%s", t);
    cr_assert_eq(sample(t, "kms_requests_total{route=\"/v1/test-route\",status=\"431\"}"), 1);
    cr_assert_eq(sample(t, "kms_requests_total{route=\"/v1/test-route\",status=\"200\"}"), 1);
    cr_assert_eq(sample(t, "kms_requests_total{route=\"/v1/test-route\",status=\"other\"}"), 1);
    /* cumulative buckets: 2 under 2.5 ms, all 4 under 1 s and at +Inf */
    const char *h = "kms_request_duration_seconds_bucket{route=\"/v1/test-route\",le=";
    char s[200];
    snprintf(s, sizeof(s), "%s\"0.001\"}", h);
    cr_assert_eq(sample(t, s), 0);
    snprintf(s, sizeof(s), "%s\"0.0025\"}", h);
    cr_assert_eq(sample(t, s), 2);
    snprintf(s, sizeof(s), "%s\"0.5\"}", h);
    cr_assert_eq(sample(t, s), 2);
    snprintf(s, sizeof(s), "%s\"1\"}", h);
    cr_assert_eq(sample(t, s), 4);
    snprintf(s, sizeof(s), "%s\"+Inf\"}", h);
    cr_assert_eq(sample(t, s), 4);
    cr_assert_eq(sample(t, "kms_request_duration_seconds_count{route=\"/v1/test-route\"}"), 4);
    double sum = sample(t, "kms_request_duration_seconds_sum{route=\"/v1/test-route\"}");
    cr_assert(sum > 1.40 && sum < 1.41, "sum %f", sum);
    free(t);
}

Test(metrics, a_route_index_past_the_table_is_counted_as_the_last)
{
    kms_metrics_request(KMS_METRICS_ROUTES + 7, "unmatched", 404, 0.0001);
    char *t = render();
    cr_assert_eq(sample(t, "kms_requests_total{route=\"unmatched\",status=\"404\"}"), 1, "%s", t);
    free(t);
}

Test(metrics, gauges_and_counters_show_what_was_recorded)
{
    kms_metrics_handshake(0);
    kms_metrics_handshake(1);
    kms_metrics_handshake(1);
    kms_metrics_keystore_cluster_generation(42);
    kms_metrics_keystore_rejected(KMS_KSGEN_INVALID);
    kms_metrics_keystore_rejected(KMS_KSGEN_OK); /* not a rejection: not counted */
    char *t = render();
    cr_assert_eq(sample(t, "kms_tls_handshakes_total{kind=\"full\"}"), 1, "%s", t);
    cr_assert_eq(sample(t, "kms_tls_handshakes_total{kind=\"resumed\"}"), 2);
    cr_assert_eq(sample(t, "kms_keystore_generation"), 42);
    cr_assert_eq(sample(t, "kms_backend_up{backend=\"soft\"}"), 1);
    cr_assert_eq(sample(t, "kms_certificate_earliest_expiry_seconds"), 1900000000);
    cr_assert_eq(sample(t, "kms_cache_redis_up"), 1);
    free(t);
}
