/* Micro-benchmark: the request-body parser (server/jsonparse.c) against
 * jansson's json_loadb on the hot path's body, POST /v1/workspace-keys/unwrap
 * with the keys of docs/wrapped-key-format.md's worked example (563 bytes).
 * Prints ns/parse (parse + json_decref) for each, best of 5 rounds, under
 * kmsd's wiping allocator (or malloc with "malloc"). Not a test: numbers only.
 *   build-x/tests/bench_json_parse [ITERATIONS] [malloc] */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "server/internal.h"
#include "server/jsonparse.h"

static const char body[] =
    "{\"site_id\":\"acme-prod\","
    "\"customer_key\":\"kms:v1:AQEBtvpnVNmwW/POSK5W21C/8gAAAAAAAAAAAAAAAAAAAAAJYWNtZS1wcm9kCmNteC1tYXN0ZXIAAAABADyjTB4mpTRL"
    "tshhAjbTvGZMkQyu1HsvZ6XcafbPM84Vnx9vTqsyRuiaKAF9bLVTAr3zIPcwOcy9Zjg6MHE=\","
    "\"user_key\":\"kms:v1:AQKANPxRp6D/cqj8yfBuW0lIPrb6Z1TZsFvzzkiuVttQv/IJYWNtZS1wcm9kAAAAAAA+s1/L7/mw2mEp1TwAIECitoOzQoTM"
    "Nu9289DQHkEx4JvBDAaj8UYi3JOGIaQAncqLjwAtQHRihGAZSnflsQ==\","
    "\"workspace_key\":\"kms:v1:AQOAcfgmQohqOIRI2ad1LzLKejT8Uaeg/3Ko/MnwbltJSD4JYWNtZS1wcm9kAAAAAACMaxAqW+lP43dniYoAIOxWK4q3"
    "Y64gyU9mZkARkpQ1g2N5RUuA8MdQbfgfZtn3GO98Vfp2J3RiZ+JX/jvLhQ==\"}";

static double now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e9 + (double)ts.tv_nsec;
}

static json_t *with_jansson(void)
{
    json_error_t err;
    return json_loadb(body, sizeof(body) - 1, JSON_REJECT_DUPLICATES, &err);
}

static json_t *with_ours(void)
{
    json_t *j = NULL;
    char err[128];
    if (kms_json_parse((const uint8_t *)body, sizeof(body) - 1, &j, err, sizeof(err)) != KMS_OK)
        return NULL;
    return j;
}

/* Best of 5 rounds of n parses, in ns per parse; -1 if a parse fails. */
static double measure(json_t *(*parse)(void), long n)
{
    double best = -1;
    for (int round = 0; round < 5; round++) {
        double t0 = now_ns();
        for (long i = 0; i < n; i++) {
            json_t *j = parse();
            if (j == NULL)
                return -1;
            json_decref(j);
        }
        double per = (now_ns() - t0) / (double)n;
        if (best < 0 || per < best)
            best = per;
    }
    return best;
}

int main(int argc, char **argv)
{
    long n = argc > 1 ? strtol(argv[1], NULL, 10) : 200000;
    int wiping = !(argc > 2 && strcmp(argv[2], "malloc") == 0);
    if (n <= 0) {
        fprintf(stderr, "usage: %s [ITERATIONS > 0] [malloc]\n", argv[0]);
        return 2;
    }
    if (wiping)
        kms_json_install_allocator();
    json_t *a = with_jansson(), *b = with_ours();
    if (a == NULL || b == NULL || !json_equal(a, b)) {
        fprintf(stderr, "the parsers disagree on the benchmark body\n");
        return 1;
    }
    json_decref(a);
    json_decref(b);
    double tj = measure(with_jansson, n), to = measure(with_ours, n);
    if (tj < 0 || to < 0) {
        fprintf(stderr, "a parse failed\n");
        return 1;
    }
    printf("body: %zu bytes (unwrap request), %ld parses x 5 rounds, best round, %s allocator\n",
           sizeof(body) - 1, n, wiping ? "kmsd's wiping" : "malloc");
    printf("json_loadb      %8.0f ns/parse\n", tj);
    printf("kms_json_parse  %8.0f ns/parse  (%.1fx)\n", to, tj / to);
    return 0;
}
