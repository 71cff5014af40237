/* cluster/keystore_dist against a real redis-server (tests/stand-ins/redis,
 * started once for this binary, stopped by PID in POST_ALL): generation
 * numbers, the compare-and-publish script, pruning, pub/sub, limits. Each
 * test uses its own key prefix. */
#include "cluster/keystore_dist.h"

#include <criterion/criterion.h>
#include <criterion/hooks.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cluster/redis_cache.h"
#include "kms/cache.h"

static char own_dir[128];

static int harness(const char *verb, const char *dir)
{
    const char *src = getenv("KMS_SOURCE_DIR");
    char cmd[1024];
    snprintf(cmd, sizeof(cmd), "%s/tests/stand-ins/redis/redis.sh %s %s >> %s.out 2>&1", src ? src : ".", verb, dir,
             dir);
    return system(cmd);
}

ReportHook(PRE_ALL)(struct criterion_test_set *set)
{
    (void)set;
    snprintf(own_dir, sizeof(own_dir), "/tmp/kms-test-ksdist-XXXXXX");
    if (mkdtemp(own_dir) == NULL) {
        own_dir[0] = '\0';
        return;
    }
    char dir[256];
    snprintf(dir, sizeof(dir), "%s/redis", own_dir);
    if (harness("start", dir) == 0)
        setenv("KMS_TEST_KSDIST_DIR", own_dir, 1);
}

ReportHook(POST_ALL)(struct criterion_global_stats *stats)
{
    (void)stats;
    if (own_dir[0] == '\0')
        return;
    char dir[256], cmd[512];
    snprintf(dir, sizeof(dir), "%s/redis", own_dir);
    (void)!harness("stop", dir);
    snprintf(cmd, sizeof(cmd), "rm -rf %s", own_dir);
    (void)!system(cmd);
}

static unsigned redis_port(void)
{
    const char *root = getenv("KMS_TEST_KSDIST_DIR");
    cr_assert_not_null(root, "redis.sh did not start");
    char path[512], line[256];
    snprintf(path, sizeof(path), "%s/redis/redis.env", root);
    FILE *f = fopen(path, "r");
    cr_assert_not_null(f);
    unsigned port = 0;
    while (fgets(line, sizeof(line), f) != NULL)
        if (strncmp(line, "REDIS_PORT=", 11) == 0)
            port = (unsigned)strtoul(line + 11, NULL, 10);
    fclose(f);
    cr_assert(port > 0);
    return port;
}

/* A distributed cache on prefix (port 0: the test's Redis). */
static struct kms_cache *cache_on(const char *prefix, unsigned port)
{
    uint8_t raw[32];
    memset(raw, 0x5a, sizeof(raw));
    struct kms_secret *key = NULL;
    cr_assert_eq(kms_secret_from(raw, sizeof(raw), &key), KMS_OK);
    struct kms_cache *local = NULL, *c = NULL;
    cr_assert_eq(kms_cache_local_new(16, 0, 0, &local), KMS_OK);
    struct kms_redis_options o = {.host = "127.0.0.1",
                                  .port = port ? port : redis_port(),
                                  .prefix = prefix,
                                  .cluster_key = key,
                                  .connect_timeout_ms = 1000,
                                  .command_timeout_ms = 2000};
    cr_assert_eq(kms_cache_redis_new(&o, local, &c), KMS_OK);
    kms_secret_free(&key);
    return c;
}

static void publish(struct kms_ksdist *d, uint64_t base, uint64_t *gen, const char *blob, unsigned keep)
{
    cr_assert_eq(kms_ksdist_reserve(d, 0, gen), KMS_OK);
    cr_assert_eq(kms_ksdist_publish(d, base, *gen, (const uint8_t *)blob, strlen(blob), keep), KMS_OK, "%s",
                 kms_error_detail());
}

Test(ksdist, publish_moves_the_head_and_keeps_the_newest, .timeout = 60)
{
    struct kms_cache *c = cache_on("t-ksd1:", 0);
    struct kms_ksdist *d = NULL;
    cr_assert_eq(kms_ksdist_open(c, &d), KMS_OK);
    uint64_t head = 99, g = 0, base = 0;
    cr_assert_eq(kms_ksdist_head(d, &head), KMS_OK);
    cr_assert_eq(head, 0, "nothing published yet");
    char blob[32];
    for (int i = 0; i < 5; i++) {
        snprintf(blob, sizeof(blob), "blob-%d", i);
        publish(d, base, &g, blob, 3);
        base = g;
    }
    cr_assert_eq(kms_ksdist_head(d, &head), KMS_OK);
    cr_assert_eq(head, g);
    uint8_t *got = NULL;
    size_t len = 0;
    cr_assert_eq(kms_ksdist_fetch(d, g, &got, &len), KMS_OK);
    cr_assert_eq(len, 6);
    cr_assert_eq(memcmp(got, "blob-4", 6), 0);
    free(got);
    uint64_t gens[8];
    size_t n = 0;
    cr_assert_eq(kms_ksdist_list(d, gens, 8, &n), KMS_OK);
    cr_assert_eq(n, 3, "keep = 3");
    cr_assert(gens[0] == g && gens[1] < gens[0] && gens[2] < gens[1], "newest first");
    cr_assert_eq(kms_ksdist_fetch(d, gens[2] - 1, &got, &len), KMS_ERR_NOT_FOUND, "pruned");
    kms_ksdist_free(&d);
    kms_cache_free(&c);
}

Test(ksdist, a_publish_from_a_stale_base_changes_nothing, .timeout = 60)
{
    struct kms_cache *c = cache_on("t-ksd2:", 0);
    struct kms_ksdist *a = NULL, *b = NULL;
    cr_assert_eq(kms_ksdist_open(c, &a), KMS_OK);
    cr_assert_eq(kms_ksdist_open(c, &b), KMS_OK);
    uint64_t g1 = 0, g2 = 0, head = 0;
    publish(a, 0, &g1, "first", 8);
    /* operator b started from generation 0 too, before a published */
    cr_assert_eq(kms_ksdist_reserve(b, 0, &g2), KMS_OK);
    cr_assert_gt(g2, g1);
    cr_assert_eq(kms_ksdist_publish(b, 0, g2, (const uint8_t *)"second", 6, 8), KMS_ERR_CONFLICT);
    cr_assert(strstr(kms_error_detail(), "nothing was published") != NULL, "%s", kms_error_detail());
    cr_assert_eq(kms_ksdist_head(b, &head), KMS_OK);
    cr_assert_eq(head, g1);
    uint8_t *got = NULL;
    size_t len = 0;
    cr_assert_eq(kms_ksdist_fetch(b, g2, &got, &len), KMS_ERR_NOT_FOUND, "the losing blob was stored");
    kms_ksdist_free(&a);
    kms_ksdist_free(&b);
    kms_cache_free(&c);
}

Test(ksdist, new_numbers_are_above_the_head_and_the_floor, .timeout = 60)
{
    struct kms_cache *c = cache_on("t-ksd3:", 0);
    struct kms_ksdist *d = NULL;
    cr_assert_eq(kms_ksdist_open(c, &d), KMS_OK);
    uint64_t g = 0;
    cr_assert_eq(kms_ksdist_reserve(d, 0, &g), KMS_OK);
    cr_assert_eq(g, 1);
    /* Redis lost its data but the nodes hold generation 40: the next is above it */
    cr_assert_eq(kms_ksdist_reserve(d, 40, &g), KMS_OK);
    cr_assert_eq(g, 41);
    cr_assert_eq(kms_ksdist_reserve(d, 0, &g), KMS_OK);
    cr_assert_eq(g, 42);
    kms_ksdist_free(&d);
    kms_cache_free(&c);
}

Test(ksdist, subscribers_hear_of_a_new_generation, .timeout = 60)
{
    struct kms_cache *c = cache_on("t-ksd4:", 0);
    struct kms_ksdist *sub = NULL, *d = NULL;
    cr_assert_eq(kms_ksdist_subscribe(c, &sub), KMS_OK);
    cr_assert_eq(kms_ksdist_open(c, &d), KMS_OK);
    uint64_t got = 0, g = 0;
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    cr_assert_eq(kms_ksdist_wait(sub, 200, &got), 0, "nothing announced yet");
    clock_gettime(CLOCK_MONOTONIC, &t1);
    double waited = (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) / 1e9;
    cr_assert(waited >= 0.15 && waited < 2.0, "waited %.3f s for a 200 ms wait", waited);
    publish(d, 0, &g, "announced", 8);
    cr_assert_eq(kms_ksdist_wait(sub, 2000, &got), 1);
    cr_assert_eq(got, g);
    /* the subscription stays usable after a quiet wait and a message */
    cr_assert_eq(kms_ksdist_wait(sub, 50, &got), 0);
    kms_ksdist_free(&sub);
    kms_ksdist_free(&d);
    kms_cache_free(&c);
}

Test(ksdist, a_keystore_sized_blob_passes_the_limits, .timeout = 60)
{
    struct kms_cache *c = cache_on("t-ksd5:", 0);
    struct kms_ksdist *d = NULL;
    cr_assert_eq(kms_ksdist_open(c, &d), KMS_OK);
    size_t big = 2u << 20;
    uint8_t *blob = malloc(big);
    for (size_t i = 0; i < big; i++)
        blob[i] = (uint8_t)(i * 7);
    uint64_t g = 0;
    cr_assert_eq(kms_ksdist_reserve(d, 0, &g), KMS_OK);
    cr_assert_eq(kms_ksdist_publish(d, 0, g, blob, big, 4), KMS_OK, "%s", kms_error_detail());
    uint8_t *got = NULL;
    size_t len = 0;
    cr_assert_eq(kms_ksdist_fetch(d, g, &got, &len), KMS_OK, "%s", kms_error_detail());
    cr_assert_eq(len, big);
    cr_assert_eq(memcmp(got, blob, big), 0);
    free(got);
    free(blob);
    kms_ksdist_free(&d);
    kms_cache_free(&c);
}

Test(ksdist, no_redis_is_a_clear_error, .timeout = 60)
{
    struct kms_cache *c = cache_on("t-ksd6:", 1); /* nothing listens on port 1 */
    struct kms_ksdist *d = NULL;
    cr_assert_eq(kms_ksdist_open(c, &d), KMS_ERR_BACKEND_UNAVAILABLE);
    cr_assert(strstr(kms_error_detail(), "127.0.0.1:1") != NULL, "%s", kms_error_detail());
    cr_assert_null(d);
    kms_cache_free(&c);
}
