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

#include <signal.h>
#include <sys/resource.h>
#include <sys/stat.h>

#include "common/secret.h"
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
    cr_assert(strstr(line, "\"latency_ms\":0.250,\"seq\":") != NULL, "%s", line);
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

/* The client's address is the record's last field, and only when known, so
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
    cr_assert(strstr(lines[0], "\"peer\":\"127.0.0.77\",\"seq\":1,") != NULL, "after the record, before the chain: %s",
              lines[0]);
    free_lines(lines, n);
}

/* ---- the chain (issue 15) ---------------------------------------------------- */

static struct kms_secret *key_of(const char *text)
{
    struct kms_secret *k = NULL;
    cr_assert_eq(kms_secret_from((const uint8_t *)text, strlen(text), &k), KMS_OK);
    return k;
}

/* Verifies lines[0..n) as `kmsctl audit verify` does: 0 and *cps, or the
 * 1-based number of the first line that breaks the chain. */
static size_t verify(char **lines, size_t n, const struct kms_secret *key, unsigned *cps)
{
    uint64_t seq = 0;
    char prev[65] = "";
    *cps = 0;
    for (size_t i = 0; i < n; i++) {
        char why[256];
        size_t len = strlen(lines[i]);
        if (len > 0 && lines[i][len - 1] == '\n')
            len--;
        int v = kms_audit_verify_line(lines[i], len, &seq, prev, key, cps, why, sizeof(why));
        if (v != 0 && v != 1)
            return i + 1;
    }
    return 0;
}

Test(audit, lines_are_chained_from_the_first_and_across_a_restart)
{
    struct kms_audit *a = NULL;
    cr_assert_eq(kms_audit_open(path, "n1", 0, &a), KMS_OK);
    write_record(a, "one", "s");
    write_record(a, "two", "s");
    kms_audit_close(&a);
    cr_assert_eq(kms_audit_open(path, "n1", 20, &a), KMS_OK);
    write_record(a, "three", "s");
    kms_audit_close(&a);
    size_t n = 0;
    char **lines = read_lines(&n);
    cr_assert_eq(n, 3);
    cr_assert(strstr(lines[0], "\"seq\":1,\"prev\":\"0000000000000000000000000000000000000000000000000000000000000000\"}"));
    cr_assert(strstr(lines[2], "\"seq\":3,"), "the restarted writer went on: %s", lines[2]);
    unsigned cps = 0;
    cr_assert_eq(verify(lines, n, NULL, &cps), 0);
    free_lines(lines, n);
}

Test(audit, a_line_deleted_edited_or_moved_is_found)
{
    struct kms_audit *a = NULL;
    cr_assert_eq(kms_audit_open(path, "n1", 0, &a), KMS_OK);
    char id[16];
    for (int i = 0; i < 6; i++) {
        (void)snprintf(id, sizeof(id), "r%d", i);
        write_record(a, id, "s");
    }
    kms_audit_close(&a);
    size_t n = 0;
    char **lines = read_lines(&n);
    unsigned cps;
    char *saved = lines[3];
    lines[3] = lines[4]; /* line 4 deleted: the next one is out of sequence */
    cr_assert_eq(verify(lines, 5, NULL, &cps), 4);
    lines[3] = saved;
    char *edit = strstr(lines[2], "\"site_id\":\"s\"");
    edit[11] = 't'; /* line 3 edited: line 4's prev no longer matches */
    cr_assert_eq(verify(lines, n, NULL, &cps), 4);
    edit[11] = 's';
    char *t = lines[1];
    lines[1] = lines[2];
    lines[2] = t; /* lines 2 and 3 swapped */
    cr_assert_eq(verify(lines, n, NULL, &cps), 2);
    lines[2] = lines[1];
    lines[1] = t;
    cr_assert_eq(verify(lines, n, NULL, &cps), 0);
    free_lines(lines, n);
}

/* A chain rewritten from an edited line on (every hash recomputed) still
 * fails at the next checkpoint: its HMAC needs the key. */
Test(audit, checkpoints_carry_an_hmac_under_the_audit_key)
{
    struct kms_secret *key = key_of("0123456789abcdef0123456789abcdef");
    struct kms_audit_options o = {.path = path, .node = "n1", .checkpoint_lines = 3, .key = key};
    struct kms_audit *a = NULL;
    cr_assert_eq(kms_audit_open_with(&o, &a), KMS_OK);
    char id[16];
    for (int i = 0; i < 7; i++) {
        (void)snprintf(id, sizeof(id), "r%d", i);
        write_record(a, id, "s");
    }
    kms_audit_close(&a);
    size_t n = 0;
    char **lines = read_lines(&n);
    cr_assert_eq(n, 7 + 3, "7 records, a checkpoint after every 3 and one at close: %zu lines", n);
    cr_assert(strstr(lines[3], "\"event\":\"audit.checkpoint\"") && strstr(lines[3], "\"hmac\":\""), "%s", lines[3]);
    unsigned cps = 0;
    cr_assert_eq(verify(lines, n, key, &cps), 0);
    cr_assert_eq(cps, 3);
    struct kms_secret *other = key_of("another key, not the audit key..");
    cr_assert_eq(verify(lines, n, other, &cps), 4, "the first checkpoint fails under another key");
    kms_secret_free(&other);
    kms_secret_free(&key);
    free_lines(lines, n);
}

Test(audit, rotation_keeps_one_chain_across_the_files)
{
    struct kms_audit_options o = {.path = path, .node = "n1", .max_size = 1500, .keep = 5};
    struct kms_audit *a = NULL;
    cr_assert_eq(kms_audit_open_with(&o, &a), KMS_OK);
    for (int i = 0; i < 12; i++)
        write_record(a, "rotating", "s");
    kms_audit_close(&a);
    /* oldest first: path.N .. path.1, path */
    char **all = calloc(64, sizeof(*all));
    size_t total = 0, files = 0;
    char keep[sizeof(path) - 8];
    (void)snprintf(keep, sizeof(keep), "%.100s", path);
    for (int k = 5; k >= 0; k--) {
        if (k > 0)
            (void)snprintf(path, sizeof(path), "%.100s.%d", keep, k);
        else
            (void)snprintf(path, sizeof(path), "%.100s", keep);
        size_t n = 0;
        char **lines = read_lines(&n);
        if (lines == NULL)
            continue;
        files++;
        for (size_t i = 0; i < n; i++)
            all[total++] = lines[i];
        free(lines);
        if (k > 0)
            (void)unlink(path);
    }
    (void)snprintf(path, sizeof(path), "%.100s", keep);
    cr_assert(files >= 3, "%zu files", files);
    cr_assert_eq(total, 12);
    unsigned cps = 0;
    cr_assert_eq(verify(all, total, NULL, &cps), 0, "one chain over %zu files", files);
    free_lines(all, total);
}

/* A disk that fills up, in-process: writes past RLIMIT_FSIZE fail (EFBIG;
 * SIGXFSZ ignored), until the limit is lifted again. */
static void disk_full(int full)
{
    signal(SIGXFSZ, SIG_IGN);
    struct stat st;
    struct rlimit rl = {RLIM_INFINITY, RLIM_INFINITY};
    if (full) {
        cr_assert_eq(stat(path, &st), 0);
        rl.rlim_cur = (rlim_t)st.st_size;
    }
    cr_assert_eq(setrlimit(RLIMIT_FSIZE, &rl), 0);
}

/* on_failure=continue: lines that cannot be written are lost and counted,
 * and once writing works again an audit.lost line says how many, chained
 * from the last line written (the chain stays whole). */
Test(audit, continue_lost_lines_are_counted_and_reported_in_the_chain)
{
    struct kms_audit *a = NULL;
    cr_assert_eq(kms_audit_open(path, "n1", 0, &a), KMS_OK);
    write_record(a, "before", "s");
    disk_full(1);
    write_record(a, "lost-1", "s");
    write_record(a, "lost-2", "s");
    cr_assert_eq(kms_audit_failures(a), 2);
    cr_assert(kms_audit_ready(a), "continue: the server goes on");
    disk_full(0);
    write_record(a, "after", "s");
    kms_audit_close(&a);
    size_t n = 0;
    char **lines = read_lines(&n);
    cr_assert_eq(n, 3, "before, audit.lost, after: %zu lines", n);
    cr_assert(strstr(lines[1], "\"event\":\"audit.lost\"") && strstr(lines[1], "\"lines\":2,"), "%s", lines[1]);
    cr_assert(strstr(lines[2], "\"req_id\":\"after\""));
    unsigned cps;
    cr_assert_eq(verify(lines, n, NULL, &cps), 0);
    free_lines(lines, n);
}

/* on_failure=refuse: a line that cannot be written waits, the audit says it
 * is not ready (the server answers 503), and once the disk takes it again it
 * is written in its place in the chain. */
Test(audit, refuse_holds_the_lines_until_the_file_takes_them)
{
    struct kms_audit_options o = {.path = path, .node = "n1", .refuse = 1};
    struct kms_audit *a = NULL;
    cr_assert_eq(kms_audit_open_with(&o, &a), KMS_OK);
    write_record(a, "before", "s");
    cr_assert(kms_audit_ready(a));
    disk_full(1);
    write_record(a, "held", "s");
    cr_assert(!kms_audit_ready(a), "a line waits: not ready");
    usleep(150000);
    cr_assert(!kms_audit_ready(a), "still full: still not ready");
    disk_full(0);
    usleep(150000);
    cr_assert(kms_audit_ready(a), "written on the next try");
    kms_audit_close(&a);
    size_t n = 0;
    char **lines = read_lines(&n);
    cr_assert_eq(n, 2);
    cr_assert(strstr(lines[1], "\"req_id\":\"held\""));
    unsigned cps;
    cr_assert_eq(verify(lines, n, NULL, &cps), 0);
    free_lines(lines, n);
}

Test(audit, an_unfinished_last_line_is_cut_before_the_chain_goes_on)
{
    struct kms_audit *a = NULL;
    cr_assert_eq(kms_audit_open(path, "n1", 0, &a), KMS_OK);
    write_record(a, "whole", "s");
    kms_audit_close(&a);
    FILE *f = fopen(path, "a");
    fputs("{\"ts\":\"2026-", f); /* a crash in the middle of a line */
    fclose(f);
    cr_assert_eq(kms_audit_open(path, "n1", 0, &a), KMS_OK);
    write_record(a, "next", "s");
    kms_audit_close(&a);
    size_t n = 0;
    char **lines = read_lines(&n);
    cr_assert_eq(n, 2);
    unsigned cps;
    cr_assert_eq(verify(lines, n, NULL, &cps), 0);
    free_lines(lines, n);
}
