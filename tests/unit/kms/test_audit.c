/* Audit writer: every line arrives whole and in order, with and without the
 * writer thread; close writes what is pending; lines show up within the flush
 * interval without a close. */
#include <criterion/criterion.h>
#include <jansson.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "kms/audit.h"

static char dir[64];
static char path[128];

static void setup(void)
{
    (void)snprintf(dir, sizeof(dir), "/tmp/kms-audit-XXXXXX");
    cr_assert_not_null(mkdtemp(dir));
    (void)snprintf(path, sizeof(path), "%s/audit.log", dir);
}

static void teardown(void)
{
    (void)unlink(path);
    (void)rmdir(dir);
}

TestSuite(audit, .init = setup, .fini = teardown);

/* Reads the file; returns its lines (caller frees), *n their count. */
static char **read_lines(size_t *n)
{
    FILE *f = fopen(path, "r");
    *n = 0;
    if (f == NULL)
        return NULL;
    size_t cap = 1024;
    char **lines = calloc(cap, sizeof(*lines));
    char *line = NULL;
    size_t len = 0;
    while (getline(&line, &len, f) > 0) {
        if (*n == cap) {
            cap *= 2;
            lines = realloc(lines, cap * sizeof(*lines));
        }
        lines[(*n)++] = strdup(line);
    }
    free(line);
    fclose(f);
    return lines;
}

static void free_lines(char **lines, size_t n)
{
    for (size_t i = 0; i < n; i++)
        free(lines[i]);
    free(lines);
}

static void write_record(struct kms_audit *a, const char *req_id, const char *site)
{
    struct kms_audit_record r = {
        .req_id = req_id,
        .client_alias = "cmxbackend",
        .client_fp = "ab:cd",
        .operation = "workspace-key.unwrap",
        .site_id = site,
        .key_ref = NULL,
        .outcome = "ok",
        .status = 200,
        .latency_ms = 0.25,
    };
    kms_audit_write(a, &r);
}

/* Each line is one JSON object with the fields written. */
static void check_line(const char *line, const char *req_id)
{
    json_error_t err;
    json_t *o = json_loads(line, 0, &err);
    cr_assert_not_null(o, "not JSON: %s (%s)", line, err.text);
    cr_assert_str_eq(json_string_value(json_object_get(o, "req_id")), req_id);
    cr_assert_str_eq(json_string_value(json_object_get(o, "event")), "audit");
    cr_assert_str_eq(json_string_value(json_object_get(o, "node")), "node-a");
    cr_assert_eq(json_integer_value(json_object_get(o, "status")), 200);
    cr_assert(json_is_null(json_object_get(o, "key_ref")));
    json_t *lat = json_object_get(o, "latency_ms");
    cr_assert(json_is_real(lat) && json_real_value(lat) == 0.25, "latency_ms in %s", line);
    cr_assert(strstr(line, "\"latency_ms\":0.250}") != NULL, "%s", line);
    const char *ts = json_string_value(json_object_get(o, "ts"));
    cr_assert(ts != NULL && strlen(ts) == 24 && ts[10] == 'T' && ts[19] == '.' && ts[23] == 'Z', "ts %s", ts);
    json_decref(o);
}

static void check_site(const char *line, const char *site)
{
    json_t *o = json_loads(line, 0, NULL);
    cr_assert_not_null(o);
    cr_assert_str_eq(json_string_value(json_object_get(o, "site_id")), site);
    json_decref(o);
}

/* why: quotes, backslash and control characters must come back unchanged */
#define SITE "site-\"quoted\\\t\x01"

static void sequential(unsigned flush_ms)
{
    struct kms_audit *a = NULL;
    cr_assert_eq(kms_audit_open(path, "node-a", flush_ms, &a), KMS_OK);
    char id[32];
    for (int i = 0; i < 3000; i++) {
        (void)snprintf(id, sizeof(id), "id-%d", i);
        write_record(a, id, SITE);
    }
    kms_audit_close(&a);
    cr_assert_null(a);
    size_t n = 0;
    char **lines = read_lines(&n);
    cr_assert_eq(n, 3000, "%zu lines", n);
    for (size_t i = 0; i < n; i++) {
        (void)snprintf(id, sizeof(id), "id-%zu", i);
        check_line(lines[i], id);
        check_site(lines[i], SITE);
    }
    free_lines(lines, n);
}

Test(audit, unbuffered_lines_arrive_whole_and_in_order)
{
    sequential(0);
}

Test(audit, buffered_lines_arrive_whole_and_in_order_and_close_writes_the_rest)
{
    sequential(10000); /* why: the interval is never reached; only close writes them */
}

Test(audit, buffered_line_is_written_within_the_interval_without_close)
{
    struct kms_audit *a = NULL;
    cr_assert_eq(kms_audit_open(path, "node-a", 50, &a), KMS_OK);
    write_record(a, "first", "s");
    size_t n = 0;
    struct timespec pause = {0, 10 * 1000 * 1000};
    for (int tries = 0; tries < 500 && n == 0; tries++) { /* at most 5 s */
        char **seen = read_lines(&n);
        free_lines(seen, n);
        if (n == 0)
            nanosleep(&pause, NULL);
    }
    cr_assert_eq(n, 1, "the line did not reach the file while the audit was open");
    kms_audit_close(&a);
    char **lines = read_lines(&n);
    cr_assert_eq(n, 1);
    check_line(lines[0], "first");
    free_lines(lines, n);
}

struct worker {
    struct kms_audit *a;
    int index;
};

#define THREADS 4
#define PER_THREAD 20000 /* why: far more than the 256 KiB buffer holds, so writers wait for space */

static void *worker_main(void *arg)
{
    struct worker *w = arg;
    char id[32];
    for (int i = 0; i < PER_THREAD; i++) {
        (void)snprintf(id, sizeof(id), "t%d-%d", w->index, i);
        write_record(w->a, id, "site");
    }
    return NULL;
}

Test(audit, concurrent_writers_lose_and_split_nothing)
{
    struct kms_audit *a = NULL;
    cr_assert_eq(kms_audit_open(path, "node-a", 5, &a), KMS_OK);
    pthread_t t[THREADS];
    struct worker w[THREADS];
    for (int i = 0; i < THREADS; i++) {
        w[i] = (struct worker){a, i};
        cr_assert_eq(pthread_create(&t[i], NULL, worker_main, &w[i]), 0);
    }
    for (int i = 0; i < THREADS; i++)
        pthread_join(t[i], NULL);
    kms_audit_close(&a);
    size_t n = 0;
    char **lines = read_lines(&n);
    cr_assert_eq(n, (size_t)THREADS * PER_THREAD, "%zu lines", n);
    int next[THREADS] = {0};
    char id[32];
    for (size_t i = 0; i < n; i++) {
        json_t *o = json_loads(lines[i], 0, NULL);
        cr_assert_not_null(o, "line %zu is not JSON", i);
        const char *rid = json_string_value(json_object_get(o, "req_id"));
        cr_assert_not_null(rid);
        int th = rid[1] - '0';
        cr_assert(th >= 0 && th < THREADS, "%s", rid);
        (void)snprintf(id, sizeof(id), "t%d-%d", th, next[th]++);
        cr_assert_str_eq(rid, id, "one thread's lines out of order");
        json_decref(o);
    }
    free_lines(lines, n);
}

Test(audit, unopenable_file_is_an_io_error)
{
    struct kms_audit *a = NULL;
    char bad[160];
    (void)snprintf(bad, sizeof(bad), "%s/missing/audit.log", dir);
    cr_assert_eq(kms_audit_open(bad, "node-a", 100, &a), KMS_ERR_IO);
    cr_assert_null(a);
}

/* The client's address is the line's last field, and only when known, so
 * lines without one keep the form of 0.2.0 (test_golden.c). */
Test(audit, the_peer_address_is_written_when_known)
{
    struct kms_audit *a = NULL;
    cr_assert_eq(kms_audit_open(path, "n1", 0, &a), KMS_OK);
    struct kms_audit_record r = {.req_id = "r1", .operation = "key.wrap", .outcome = "ok", .status = 200,
                                 .peer = "127.0.0.77"};
    kms_audit_write(a, &r);
    r.peer = NULL;
    kms_audit_write(a, &r);
    kms_audit_close(&a);
    size_t n = 0;
    char **lines = read_lines(&n);
    cr_assert_eq(n, 2);
    json_error_t e;
    json_t *j = json_loads(lines[0], 0, &e);
    cr_assert_not_null(j, "%s", lines[0]);
    cr_assert_str_eq(json_string_value(json_object_get(j, "peer")), "127.0.0.77");
    json_decref(j);
    cr_assert(strstr(lines[1], "\"peer\"") == NULL, "%s", lines[1]);
    cr_assert(strstr(lines[0], "\"peer\":\"127.0.0.77\"}") != NULL, "last field: %s", lines[0]);
    free_lines(lines, n);
}
