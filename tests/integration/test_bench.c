/* kmsctl bench against a real kmsd (tests/integration/harness.sh, soft
 * backend, dev PKI), checked through its --json output: it must measure
 * something, count no error where none happened, count the errors where they
 * do, resume sessions when asked, and refuse what it must refuse.
 *
 * No per-test .timeout (Criterion's runner leaks a timer record under ASan);
 * ctest's TIMEOUT bounds a hang, and kmsctl bench stops by itself. */
#include "bench_fixture.h"

#include <criterion/hooks.h>

ReportHook(PRE_ALL)(struct criterion_test_set *set)
{
    (void)set;
    fixture_start("/tmp/kmsbench-test-XXXXXX", "test_bench");
}

ReportHook(POST_ALL)(struct criterion_global_stats *stats)
{
    (void)stats;
    fixture_stop("/tmp/kmsbench-test-", "test_bench");
}

static json_int_t jint(json_t *j, const char *k)
{
    json_t *v = json_object_get(j, k);
    cr_assert(json_is_integer(v), "no integer \"%s\" in the output", k);
    return json_integer_value(v);
}

static double jlat(json_t *j, const char *k)
{
    json_t *v = json_object_get(json_object_get(j, "latency_ms"), k);
    cr_assert(json_is_real(v), "no latency_ms.%s in the output", k);
    return json_real_value(v);
}

/* The checks every clean run must pass. */
static void assert_clean(const struct result *r, int status)
{
    cr_assert_eq(r->status, 0, "exit %d: %s", r->status, r->out);
    cr_assert_not_null(r->json, "not one JSON object: %s", r->out);
    json_int_t n = jint(r->json, "requests");
    cr_assert_gt(n, 0, "%s", r->out);
    cr_assert_eq(jint(r->json, "errors"), 0, "%s", r->out);
    cr_assert_eq(jint(r->json, "transport_errors"), 0, "%s", r->out);
    char code[8];
    snprintf(code, sizeof(code), "%d", status);
    cr_assert_eq(json_integer_value(json_object_get(json_object_get(r->json, "status"), code)), n,
                 "every request answered %d: %s", status, r->out);
    double p50 = jlat(r->json, "p50"), p90 = jlat(r->json, "p90"), p99 = jlat(r->json, "p99"),
           mx = jlat(r->json, "max");
    cr_assert(p50 > 0.0 && p50 <= p90 && p90 <= p99 && p99 <= mx && mx < 10000.0, "percentiles: %s", r->out);
    double rps = json_real_value(json_object_get(r->json, "requests_per_s"));
    double secs = json_real_value(json_object_get(r->json, "duration_s"));
    cr_assert(secs > 0.0 && rps > 0.0 && rps * secs > (double)n * 0.99 && rps * secs < (double)n * 1.01, "%s",
              r->out);
}

Test(bench, health_keep_alive_measures_without_errors)
{
    struct result r = {0};
    const char *extra[] = {"-c", "4", "-d", "2", "-w", "0.5", NULL};
    bench(&r, "cmxBackend", extra);
    assert_clean(&r, 200);
    cr_assert_eq(jint(r.json, "handshakes"), 0, "keep-alive: the handshakes were in the warm-up: %s", r.out);
    cr_assert(json_is_false(json_object_get(r.json, "verified")));
    json_decref(r.json);
}

Test(bench, unwrap_workspace_sets_up_its_keys_and_verifies_the_server)
{
    struct result r = {0};
    const char *extra[] = {"--op", "unwrap-workspace", "--cacert", "@cacert", "-c", "2", "-t", "2", "-d", "1",
                           "-w", "0.2", NULL};
    bench(&r, "cmxBackend", extra);
    assert_clean(&r, 200);
    cr_assert_str_eq(json_string_value(json_object_get(r.json, "path")), "/v1/workspace-keys/unwrap");
    cr_assert(json_is_true(json_object_get(r.json, "verified")));
    json_decref(r.json);
}

Test(bench, new_connections_resume_their_sessions)
{
    struct result r = {0};
    const char *extra[] = {"--op", "whoami", "--new-conn", "--resume", "-c", "2", "-d", "1", "-w", "0.3", NULL};
    bench(&r, "cmxDevice", extra);
    assert_clean(&r, 200);
    json_int_t hs = jint(r.json, "handshakes"), res = jint(r.json, "resumed");
    cr_assert_gt(hs, 0, "%s", r.out);
    cr_assert_eq(res, hs, "every handshake after the first is resumed: %s", r.out);
    json_decref(r.json);

    const char *full[] = {"--op", "whoami", "--new-conn", "-c", "2", "-d", "1", "-w", "0.3", NULL};
    bench(&r, "cmxDevice", full);
    assert_clean(&r, 200);
    cr_assert_gt(jint(r.json, "handshakes"), 0);
    cr_assert_eq(jint(r.json, "resumed"), 0, "no --resume, no resumption: %s", r.out);
    json_decref(r.json);
}

Test(bench, request_count_is_exact_and_unwrap_wraps_first)
{
    struct result r = {0};
    const char *extra[] = {"--op", "unwrap", "-n", "300", "-c", "3", "-w", "0", NULL};
    bench(&r, "cmxBackend", extra);
    assert_clean(&r, 200);
    cr_assert_eq(jint(r.json, "requests"), 300, "%s", r.out);
    json_decref(r.json);
}

Test(bench, error_statuses_are_counted)
{
    /* a device may not read master-key metadata: every request is a 403 */
    struct result r = {0};
    const char *extra[] = {"--op", "custom", "--method", "GET", "--path", "/v1/keys/kms-master", "-c", "2", "-d",
                           "0.5", "-w", "0", NULL};
    bench(&r, "cmxDevice", extra);
    cr_assert_not_null(r.json, "%s", r.out);
    json_int_t n = jint(r.json, "requests");
    cr_assert_gt(n, 0);
    cr_assert_eq(jint(r.json, "errors"), n, "%s", r.out);
    cr_assert_eq(json_integer_value(json_object_get(json_object_get(r.json, "status"), "403")), n, "%s", r.out);
    json_decref(r.json);
}

Test(bench, refuses_what_it_must)
{
    struct result r = {0};
    const char *remote[] = {"--url", "https://192.0.2.1:8443", NULL}; /* the later --url wins */
    bench(&r, "cmxBackend", remote);
    cr_assert_eq(r.status, 2, "a non-loopback address needs --allow-remote");
    /* a device cannot create the customer/user/workspace chain */
    const char *dev[] = {"--op", "unwrap-workspace", "-d", "1", NULL};
    bench(&r, "cmxDevice", dev);
    cr_assert_eq(r.status, 1, "%s", r.out);
    cr_assert_null(r.json);
    const char *resume_alone[] = {"--resume", NULL};
    bench(&r, "cmxBackend", resume_alone);
    cr_assert_eq(r.status, 2);
    const char *bad_d[] = {"-d", "1x", NULL};
    bench(&r, "cmxBackend", bad_d);
    cr_assert_eq(r.status, 2);
    const char *no_server[] = {"--url", "https://127.0.0.1:1", "-d", "0.3", "-w", "0", NULL};
    bench(&r, "cmxBackend", no_server);
    cr_assert_eq(r.status, 1, "no request completed: %s", r.out);
    cr_assert_gt(jint(r.json, "transport_errors"), 0, "%s", r.out);
    json_decref(r.json);
}

Test(bench, wrong_password_is_an_error)
{
    load_port();
    char pw[256];
    snprintf(pw, sizeof(pw), "%s/wrong-password", fixture_dir);
    FILE *f = fopen(pw, "w");
    cr_assert_not_null(f);
    fputs("not-the-password\n", f);
    fclose(f);
    struct result r = {0};
    const char *extra[] = {"--password-file", pw, "-d", "0.3", NULL}; /* the later one wins */
    bench(&r, "cmxBackend", extra);
    cr_assert_eq(r.status, 1);
    cr_assert_null(r.json);
}
