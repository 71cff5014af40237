/* kms/cache.c: dispatch, the local LRU tier (TTL, idle timeout, capacity,
 * stats), and that the hierarchy's customer-key step hits it (counted with a
 * wrapper backend that forwards to soft). */
#include "kms/cache.h"

#include <criterion/criterion.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "hsm/soft/soft.h"
#include "kms/hierarchy.h"

static void key_of(unsigned n, uint8_t key[KMS_CACHE_KEY_LEN])
{
    memset(key, 0, KMS_CACHE_KEY_LEN);
    /* why: vary the leading bytes (the bucket) and a trailing one */
    key[0] = (uint8_t)(n >> 8);
    key[7] = (uint8_t)n;
    key[31] = (uint8_t)(n * 13);
}

static struct kms_secret *value_of(unsigned n)
{
    uint8_t v[32];
    struct kms_secret *s = NULL;
    for (size_t i = 0; i < sizeof(v); i++)
        v[i] = (uint8_t)(n + i);
    cr_assert_eq(kms_secret_from(v, sizeof(v), &s), KMS_OK);
    return s;
}

static void put(struct kms_cache *c, unsigned n)
{
    uint8_t key[KMS_CACHE_KEY_LEN];
    struct kms_secret *v = value_of(n);
    key_of(n, key);
    cr_assert_eq(kms_cache_put(c, key, v), KMS_OK);
    kms_secret_free(&v);
}

/* 1 on a hit holding value n, 0 on a miss. */
static int hit(struct kms_cache *c, unsigned n)
{
    uint8_t key[KMS_CACHE_KEY_LEN];
    struct kms_secret *got = NULL;
    key_of(n, key);
    kms_rc rc = kms_cache_get(c, key, &got);
    if (rc == KMS_ERR_NOT_FOUND) {
        cr_assert_null(got);
        return 0;
    }
    cr_assert_eq(rc, KMS_OK);
    struct kms_secret *want = value_of(n);
    cr_assert(kms_secret_equal(got, want), "value of %u", n);
    kms_secret_free(&want);
    kms_secret_free(&got);
    return 1;
}

static void sleep_ms(long ms)
{
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) != 0)
        ;
}

static struct kms_cache_stats stats(struct kms_cache *c)
{
    struct kms_cache_stats st;
    kms_cache_local_stats(c, &st);
    return st;
}

Test(cache, no_cache_always_misses, .timeout = 60)
{
    uint8_t key[KMS_CACHE_KEY_LEN] = {0};
    struct kms_secret *v = value_of(1), *got = (struct kms_secret *)v;
    cr_assert_eq(kms_cache_put(NULL, key, v), KMS_OK);
    cr_assert_eq(kms_cache_get(NULL, key, &got), KMS_ERR_NOT_FOUND);
    cr_assert_null(got);
    struct kms_cache *none = NULL;
    kms_cache_free(&none);
    kms_cache_free(NULL);
    struct kms_cache_stats st = stats(NULL);
    cr_assert_eq(st.hits + st.misses + st.entries + st.evictions, 0);
    kms_secret_free(&v);
}

Test(cache, bad_sizes, .timeout = 60)
{
    struct kms_cache *c = NULL;
    cr_assert_eq(kms_cache_local_new(0, 10, 10, &c), KMS_ERR_CONFIG);
    cr_assert_eq(kms_cache_local_new((size_t)1 << 30, 10, 10, &c), KMS_ERR_CONFIG);
    cr_assert_null(c);
}

Test(cache, hit_miss_and_copies, .timeout = 60)
{
    struct kms_cache *c = NULL;
    uint8_t key[KMS_CACHE_KEY_LEN];
    cr_assert_eq(kms_cache_local_new(8, 0, 0, &c), KMS_OK);
    cr_assert_not(hit(c, 1));
    put(c, 1);
    cr_assert(hit(c, 1));
    cr_assert(hit(c, 1));
    cr_assert_not(hit(c, 2));

    /* the cache keeps its own copy: changing what we got changes nothing */
    struct kms_secret *got = NULL;
    key_of(1, key);
    cr_assert_eq(kms_cache_get(c, key, &got), KMS_OK);
    kms_secret_data(got)[0] ^= 0xff;
    kms_secret_free(&got);
    cr_assert(hit(c, 1));

    /* a key differing in one bit is another key */
    key[31] ^= 1;
    cr_assert_eq(kms_cache_get(c, key, &got), KMS_ERR_NOT_FOUND);

    struct kms_cache_stats st = stats(c);
    cr_assert_eq(st.hits, 4);
    cr_assert_eq(st.misses, 3);
    cr_assert_eq(st.entries, 1);
    cr_assert_eq(st.evictions, 0);
    kms_cache_free(&c);
    cr_assert_null(c);
}

Test(cache, put_replaces, .timeout = 60)
{
    struct kms_cache *c = NULL;
    uint8_t key[KMS_CACHE_KEY_LEN];
    cr_assert_eq(kms_cache_local_new(8, 0, 0, &c), KMS_OK);
    put(c, 1);
    key_of(1, key);
    struct kms_secret *v2 = value_of(99), *got = NULL;
    cr_assert_eq(kms_cache_put(c, key, v2), KMS_OK);
    cr_assert_eq(kms_cache_get(c, key, &got), KMS_OK);
    cr_assert(kms_secret_equal(got, v2));
    cr_assert_eq(stats(c).entries, 1);
    kms_secret_free(&got);
    kms_secret_free(&v2);
    kms_cache_free(&c);
}

Test(cache, lru_eviction, .timeout = 60)
{
    struct kms_cache *c = NULL;
    cr_assert_eq(kms_cache_local_new(3, 0, 0, &c), KMS_OK);
    put(c, 1);
    put(c, 2);
    put(c, 3);
    cr_assert(hit(c, 1)); /* 2 is now the least recently used */
    put(c, 4);
    cr_assert_not(hit(c, 2));
    cr_assert(hit(c, 1));
    cr_assert(hit(c, 3));
    cr_assert(hit(c, 4));
    struct kms_cache_stats st = stats(c);
    cr_assert_eq(st.entries, 3);
    cr_assert_eq(st.evictions, 1);
    put(c, 5); /* 1 is now the least recently used */
    cr_assert_not(hit(c, 1));
    cr_assert_eq(stats(c).evictions, 2);
    kms_cache_free(&c);
}

Test(cache, many_entries, .timeout = 60)
{
    struct kms_cache *c = NULL;
    cr_assert_eq(kms_cache_local_new(100, 0, 0, &c), KMS_OK);
    for (unsigned i = 0; i < 1000; i++)
        put(c, i);
    struct kms_cache_stats st = stats(c);
    cr_assert_eq(st.entries, 100);
    cr_assert_eq(st.evictions, 900);
    for (unsigned i = 0; i < 900; i++)
        cr_assert_not(hit(c, i), "%u", i);
    for (unsigned i = 900; i < 1000; i++)
        cr_assert(hit(c, i), "%u", i);
    kms_cache_free(&c); /* frees 100 entries: ASan checks none leak */
}

Test(cache, ttl_expiry, .timeout = 60)
{
    struct kms_cache *c = NULL;
    cr_assert_eq(kms_cache_local_new(8, 2, 0, &c), KMS_OK);
    put(c, 1);
    sleep_ms(1200);
    put(c, 2);
    cr_assert(hit(c, 1), "used, but the TTL counts from insert");
    sleep_ms(1000);
    /* 2.2 s after insert: gone although used 1 s ago; 2 has 0.2 s left */
    cr_assert_not(hit(c, 1));
    cr_assert(hit(c, 2));
    struct kms_cache_stats st = stats(c);
    cr_assert_eq(st.evictions, 1);
    cr_assert_eq(st.entries, 1);
    sleep_ms(1200);
    cr_assert_eq(stats(c).entries, 0, "stats sweep expired entries");
    cr_assert_not(hit(c, 2));
    kms_cache_free(&c);
}

Test(cache, idle_expiry, .timeout = 60)
{
    struct kms_cache *c = NULL;
    cr_assert_eq(kms_cache_local_new(8, 0, 1, &c), KMS_OK);
    put(c, 1);
    put(c, 2);
    for (int i = 0; i < 3; i++) {
        sleep_ms(600);
        cr_assert(hit(c, 1), "each use restarts the idle clock");
    }
    /* 2 was not used for 1.8 s */
    cr_assert_not(hit(c, 2));
    sleep_ms(1200);
    cr_assert_not(hit(c, 1));
    struct kms_cache_stats st = stats(c);
    cr_assert_eq(st.evictions, 2);
    cr_assert_eq(st.entries, 0);
    kms_cache_free(&c);
}

static void *hammer(void *arg)
{
    struct kms_cache *c = arg;
    uint8_t key[KMS_CACHE_KEY_LEN];
    struct kms_secret *v = value_of(7);
    for (unsigned i = 0; i < 2000; i++) {
        key_of(i % 50, key);
        struct kms_secret *got = NULL;
        if (kms_cache_get(c, key, &got) != KMS_OK && kms_cache_put(c, key, v) != KMS_OK)
            return (void *)1;
        kms_secret_free(&got);
    }
    kms_secret_free(&v);
    return NULL;
}

Test(cache, concurrent_use, .timeout = 60)
{
    struct kms_cache *c = NULL;
    pthread_t t[4];
    cr_assert_eq(kms_cache_local_new(20, 60, 60, &c), KMS_OK);
    for (int i = 0; i < 4; i++)
        cr_assert_eq(pthread_create(&t[i], NULL, hammer, c), 0);
    for (int i = 0; i < 4; i++) {
        void *r = (void *)1;
        pthread_join(t[i], &r);
        cr_assert_null(r);
    }
    struct kms_cache_stats st = stats(c);
    cr_assert_eq(st.hits + st.misses, 8000);
    cr_assert_leq(st.entries, 20);
    kms_cache_free(&c);
}

/* ---- the hierarchy uses it ------------------------------------------------ */

struct counting {
    struct kms_backend base;
    struct kms_backend *inner;
    int decrypts;
};

static kms_rc cnt_resolve(struct kms_backend *b, const char *name, struct kms_master_ref *out)
{
    struct counting *f = (struct counting *)b;
    return f->inner->ops->resolve(f->inner, name, out);
}

static kms_rc cnt_encrypt(struct kms_backend *b, const struct kms_master_ref *ref, const uint8_t *aad,
                          size_t aad_len, const struct kms_secret *pt, uint8_t *ct, size_t ct_cap, size_t *ct_len)
{
    struct counting *f = (struct counting *)b;
    return f->inner->ops->encrypt(f->inner, ref, aad, aad_len, pt, ct, ct_cap, ct_len);
}

static kms_rc cnt_decrypt(struct kms_backend *b, const struct kms_master_ref *ref, const uint8_t *aad,
                          size_t aad_len, const uint8_t *ct, size_t ct_len, struct kms_secret **pt)
{
    struct counting *f = (struct counting *)b;
    __atomic_add_fetch(&f->decrypts, 1, __ATOMIC_SEQ_CST);
    return f->inner->ops->decrypt(f->inner, ref, aad, aad_len, ct, ct_len, pt);
}

static kms_rc cnt_describe(struct kms_backend *b, const char *name, struct kms_key_info *out)
{
    struct counting *f = (struct counting *)b;
    return f->inner->ops->describe(f->inner, name, out);
}

static kms_rc cnt_probe(struct kms_backend *b)
{
    (void)b;
    return KMS_OK;
}

static void cnt_destroy(struct kms_backend *b) { (void)b; }

static const struct kms_backend_ops cnt_ops = {
    .name = "soft",
    .kind = KMS_BACKEND_SOFT,
    .resolve = cnt_resolve,
    .encrypt = cnt_encrypt,
    .decrypt = cnt_decrypt,
    .describe = cnt_describe,
    .probe = cnt_probe,
    .destroy = cnt_destroy,
};

static char dir[64];
static char path[128];
static struct kms_backend *soft;
static struct counting counting;

static void setup(void)
{
    snprintf(dir, sizeof(dir), "/tmp/kms-test-cache-XXXXXX");
    cr_assert_not_null(mkdtemp(dir));
    snprintf(path, sizeof(path), "%s/soft.keys", dir);
    cr_assert_eq(kms_soft_open(path, "test-password", "master-a", &soft), KMS_OK, "%s", kms_error_detail());
    counting.base.ops = &cnt_ops;
    counting.inner = soft;
    counting.decrypts = 0;
}

static void teardown(void)
{
    kms_backend_free(&soft);
    unlink(path);
    rmdir(dir);
}

struct chain {
    char *c, *u, *w;
};

/* A chain made by a hierarchy without cache, so nothing is cached yet. */
static void make_chain(struct chain *ch)
{
    struct kms_hierarchy *h = NULL;
    cr_assert_eq(kms_hierarchy_new(&counting.base, NULL, "master-a", &h), KMS_OK);
    cr_assert_eq(kms_hierarchy_create_customer(h, "site-a", &ch->c), KMS_OK);
    cr_assert_eq(kms_hierarchy_create_user(h, "site-a", ch->c, &ch->u), KMS_OK);
    cr_assert_eq(kms_hierarchy_create_workspace(h, "site-a", ch->c, ch->u, &ch->w), KMS_OK);
    kms_hierarchy_free(&h);
    counting.decrypts = 0;
}

static void unwrap_ok(struct kms_hierarchy *h, struct chain *ch)
{
    struct kms_secret *k = NULL;
    cr_assert_eq(kms_hierarchy_unwrap_workspace(h, "site-a", ch->c, ch->u, ch->w, &k), KMS_OK, "%s",
                 kms_error_detail());
    kms_secret_free(&k);
}

Test(cache, hierarchy_hits_after_first_unwrap, .init = setup, .fini = teardown, .timeout = 60)
{
    struct kms_cache *c = NULL;
    struct kms_hierarchy *h = NULL;
    struct chain ch;
    make_chain(&ch);
    cr_assert_eq(kms_cache_local_new(16, 300, 300, &c), KMS_OK);
    cr_assert_eq(kms_hierarchy_new(&counting.base, c, "master-a", &h), KMS_OK);
    unwrap_ok(h, &ch);
    cr_assert_eq(counting.decrypts, 1);
    unwrap_ok(h, &ch);
    unwrap_ok(h, &ch);
    cr_assert_eq(counting.decrypts, 1, "the customer key came from the cache");
    struct kms_cache_stats st = stats(c);
    cr_assert_eq(st.misses, 1);
    cr_assert_eq(st.hits, 2);
    cr_assert_eq(st.entries, 1);

    /* creating a user key under the same customer key hits too */
    char *u2 = NULL;
    cr_assert_eq(kms_hierarchy_create_user(h, "site-a", ch.c, &u2), KMS_OK);
    cr_assert_eq(counting.decrypts, 1);
    free(u2);

    /* a new customer key is cached when created */
    char *c2 = NULL, *u3 = NULL;
    cr_assert_eq(kms_hierarchy_create_customer(h, "site-a", &c2), KMS_OK);
    cr_assert_eq(kms_hierarchy_create_user(h, "site-a", c2, &u3), KMS_OK);
    cr_assert_eq(counting.decrypts, 1);
    free(c2);
    free(u3);

    kms_hierarchy_free(&h);
    kms_cache_free(&c);
    free(ch.c);
    free(ch.u);
    free(ch.w);
}

Test(cache, hierarchy_without_cache_always_asks, .init = setup, .fini = teardown, .timeout = 60)
{
    struct kms_hierarchy *h = NULL;
    struct chain ch;
    make_chain(&ch);
    cr_assert_eq(kms_hierarchy_new(&counting.base, NULL, "master-a", &h), KMS_OK);
    unwrap_ok(h, &ch);
    unwrap_ok(h, &ch);
    cr_assert_eq(counting.decrypts, 2);
    kms_hierarchy_free(&h);
    free(ch.c);
    free(ch.u);
    free(ch.w);
}

Test(cache, hierarchy_asks_again_after_ttl, .init = setup, .fini = teardown, .timeout = 60)
{
    struct kms_cache *c = NULL;
    struct kms_hierarchy *h = NULL;
    struct chain ch;
    make_chain(&ch);
    cr_assert_eq(kms_cache_local_new(16, 1, 0, &c), KMS_OK);
    cr_assert_eq(kms_hierarchy_new(&counting.base, c, "master-a", &h), KMS_OK);
    unwrap_ok(h, &ch);
    unwrap_ok(h, &ch);
    cr_assert_eq(counting.decrypts, 1);
    sleep_ms(1100);
    unwrap_ok(h, &ch);
    cr_assert_eq(counting.decrypts, 2);
    kms_hierarchy_free(&h);
    kms_cache_free(&c);
    free(ch.c);
    free(ch.u);
    free(ch.w);
}

Test(cache, hierarchy_rechecks_site_on_a_hit, .init = setup, .fini = teardown, .timeout = 60)
{
    struct kms_cache *c = NULL;
    struct kms_hierarchy *h = NULL;
    struct chain ch;
    struct kms_secret *k = NULL;
    make_chain(&ch);
    cr_assert_eq(kms_cache_local_new(16, 300, 300, &c), KMS_OK);
    cr_assert_eq(kms_hierarchy_new(&counting.base, c, "master-a", &h), KMS_OK);
    unwrap_ok(h, &ch);
    cr_assert_eq(kms_hierarchy_unwrap_workspace(h, "site-b", ch.c, ch.u, ch.w, &k), KMS_ERR_UNWRAP);
    cr_assert_eq(kms_hierarchy_unwrap_workspace(h, "site-a", ch.c, ch.c, ch.w, &k), KMS_ERR_UNWRAP);
    cr_assert_null(k);
    kms_hierarchy_free(&h);
    kms_cache_free(&c);
    free(ch.c);
    free(ch.u);
    free(ch.w);
}
