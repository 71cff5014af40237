/* kmsctl bench --idle against a real kmsd (tests/integration/harness.sh, soft
 * backend) whose idle timeout is 2 s (KMS_SERVER_CONNECTION_TIMEOUT): the
 * idle connections must open, stay open past that timeout when they ping,
 * be seen closed by the server when they do not, and the option's bad
 * values must be refused. A smoke test of the tool, not a measurement
 * (tests/bench/idle-soak.sh measures).
 *
 * No per-test .timeout (Criterion's runner leaks a timer record under ASan);
 * ctest's TIMEOUT bounds a hang, and kmsctl bench stops by itself. */
#include "bench_fixture.h"

#include <criterion/hooks.h>

ReportHook(PRE_ALL)(struct criterion_test_set *set)
{
    (void)set;
    /* why: kmsd reads its properties from the environment; a short idle
     * timeout lets a 3 s run show what pings are for */
    setenv("KMS_SERVER_CONNECTION_TIMEOUT", "2", 1);
    setenv("KMS_LOG_LEVEL", "info", 1);
    fixture_start("/tmp/kmsbench-idle-XXXXXX", "test_bench_idle");
    unsetenv("KMS_SERVER_CONNECTION_TIMEOUT");
    unsetenv("KMS_LOG_LEVEL");
}

ReportHook(POST_ALL)(struct criterion_global_stats *stats)
{
    (void)stats;
    fixture_stop("/tmp/kmsbench-idle-", "test_bench_idle");
}

static json_int_t idle_int(const struct result *r, const char *k)
{
    json_t *v = json_object_get(json_object_get(r->json, "idle"), k);
    cr_assert(json_is_integer(v), "no integer idle.%s in the output: %s", k, r->out);
    return json_integer_value(v);
}

Test(bench_idle, pinged_idle_connections_outlive_the_server_timeout_beside_the_load)
{
    struct result r = {0};
    const char *extra[] = {"--idle", "20", "--idle-ping", "0.5", "-c", "2", "-d", "3", "-w", "0", NULL};
    bench(&r, "cmxBackend", extra);
    cr_assert_eq(r.status, 0, "exit %d: %s", r.status, r.out);
    cr_assert_not_null(r.json, "%s", r.out);
    cr_assert_eq(idle_int(&r, "requested"), 20);
    cr_assert_eq(idle_int(&r, "opened"), 20, "%s", r.out);
    cr_assert_eq(idle_int(&r, "open_at_end"), 20, "3 s > kmsd's 2 s timeout: %s", r.out);
    cr_assert_eq(idle_int(&r, "closed_by_server"), 0, "%s", r.out);
    cr_assert_eq(idle_int(&r, "failed"), 0, "%s", r.out);
    cr_assert_eq(idle_int(&r, "pending_at_end"), 0, "%s", r.out);
    cr_assert_gt(idle_int(&r, "pings"), 20, "every connection pinged at least once: %s", r.out);
    cr_assert_eq(idle_int(&r, "ping_errors"), 0, "%s", r.out);
    json_t *req = json_object_get(r.json, "requests");
    cr_assert(json_is_integer(req) && json_integer_value(req) > 0, "the load ran beside them: %s", r.out);
    cr_assert_eq(json_integer_value(json_object_get(r.json, "errors")), 0, "%s", r.out);
    json_decref(r.json);
}

Test(bench_idle, without_pings_the_server_timeout_closes_them)
{
    struct result r = {0};
    const char *extra[] = {"--idle", "8", "--idle-ping", "0", "-c", "0", "-d", "4", NULL};
    bench(&r, "cmxBackend", extra);
    cr_assert_eq(r.status, 0, "idle-only run: exit %d: %s", r.status, r.out);
    cr_assert_not_null(r.json, "%s", r.out);
    cr_assert_eq(idle_int(&r, "opened"), 8, "%s", r.out);
    cr_assert_eq(idle_int(&r, "closed_by_server"), 8, "kmsd's 2 s timeout closed each: %s", r.out);
    cr_assert_eq(idle_int(&r, "open_at_end"), 0, "%s", r.out);
    cr_assert_eq(idle_int(&r, "pings"), 0, "%s", r.out);
    cr_assert_eq(json_integer_value(json_object_get(r.json, "requests")), 0, "-c 0: no load: %s", r.out);
    json_decref(r.json);
}

Test(bench_idle, idle_only_run_holds_them_open)
{
    struct result r = {0};
    const char *extra[] = {"--idle", "5", "--idle-ping", "0.4", "-c", "0", "-d", "2.5", NULL};
    bench(&r, "cmxBackend", extra);
    cr_assert_eq(r.status, 0, "exit %d: %s", r.status, r.out);
    cr_assert_eq(idle_int(&r, "open_at_end"), 5, "%s", r.out);
    cr_assert_eq(idle_int(&r, "closed_by_server"), 0, "%s", r.out);
    cr_assert_gt(idle_int(&r, "pings"), 5, "%s", r.out);
    cr_assert_eq(json_integer_value(json_object_get(r.json, "requests")), 0, "-c 0: no load: %s", r.out);
    json_decref(r.json);
}

Test(bench_idle, refuses_bad_idle_options)
{
    struct result r = {0};
    const char *const bad[][5] = {
        {"-c", "0", NULL},                       /* no load and nothing idle */
        {"--idle", "-1", NULL},                  {"--idle", "10001", NULL},
        {"--idle", "5x", NULL},                  {"--idle", "", NULL},
        {"--idle", "2", "--idle-ping", "0.01", NULL}, /* that is load */
        {"--idle", "2", "--idle-ping", "x", NULL},    {"--idle", "2", "--idle-ping", "-1", NULL},
        {"-c", "-1", "--idle", "2", NULL},
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        bench(&r, "cmxBackend", bad[i]);
        cr_assert_eq(r.status, 2, "case %zu: exit %d: %s", i, r.status, r.out);
        cr_assert_null(r.json, "case %zu", i);
    }
}

Test(bench_idle, no_server_is_an_error)
{
    struct result r = {0};
    const char *extra[] = {"--url", "https://127.0.0.1:1", "--idle", "3", "-c", "0", "-d", "0.3", NULL};
    bench(&r, "cmxBackend", extra);
    cr_assert_eq(r.status, 1, "no idle connection opened: %s", r.out);
    cr_assert_not_null(r.json, "%s", r.out);
    cr_assert_eq(idle_int(&r, "opened"), 0, "%s", r.out);
    cr_assert_eq(idle_int(&r, "failed"), 3, "each slot failed its attempts: %s", r.out);
    json_decref(r.json);
}
