/* kms/ratelimit.c: per-identity budgets, GCRA on one node, leases from a
 * cluster-wide remote shared by several nodes (a fake with Redis's
 * arithmetic), the fall-back share when the remote is away. Time is virtual. */
#include "kms/ratelimit.h"

#include <criterion/criterion.h>
#include <string.h>

#define MS 1000000ull
#define FP_A "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
#define FP_B "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb"

/* The remote: the Lua script's arithmetic (cluster/ratelimit_redis.c) over a
 * few named buckets, on the test's clock. */
static uint64_t clock_ns;
static struct {
    char key[96];
    uint64_t tat_us;
} remote_b[8];
static int remote_up = 1;
static unsigned remote_nodes = 1, remote_calls;

static int fake_lease(void *ctx, const char *key, uint64_t T, uint64_t tau, unsigned want, unsigned *granted,
                      uint64_t *retry_us)
{
    (void)ctx;
    remote_calls++;
    if (!remote_up)
        return -1;
    size_t i = 0;
    while (i < 8 && remote_b[i].key[0] && strcmp(remote_b[i].key, key) != 0)
        i++;
    cr_assert(i < 8);
    snprintf(remote_b[i].key, sizeof(remote_b[i].key), "%s", key);
    uint64_t now = clock_ns / 1000;
    uint64_t tat = remote_b[i].tat_us > now ? remote_b[i].tat_us : now;
    long long avail = (long long)((now + tau - tat) / T) + 1;
    if (now + tau < tat)
        avail = 0;
    if (avail <= 0) {
        *granted = 0;
        *retry_us = tat - tau - now;
        return 0;
    }
    *granted = (unsigned)avail < want ? (unsigned)avail : want;
    remote_b[i].tat_us = tat + *granted * T;
    return 0;
}

static unsigned fake_nodes(void *ctx)
{
    (void)ctx;
    return remote_nodes;
}

static const struct kms_rl_remote remote = {fake_lease, fake_nodes, NULL};

static void reset(void)
{
    memset(remote_b, 0, sizeof(remote_b));
    remote_up = 1;
    remote_nodes = 1;
    remote_calls = 0;
    clock_ns = 1000 * MS;
}

TestSuite(ratelimit, .init = reset);

static struct kms_ratelimit *limiter(const char *backend, const struct kms_rl_remote *r)
{
    struct kms_rl_limit lim[KMS_RL_ROLES][KMS_RL_BUDGETS];
    memset(lim, 0, sizeof(lim));
    char why[128];
    cr_assert_eq(kms_rl_parse(backend, lim[KMS_ROLE_BACKEND], why, sizeof(why)), KMS_OK, "%s", why);
    struct kms_ratelimit *rl = NULL;
    cr_assert_eq(kms_ratelimit_new(lim, r, &rl), KMS_OK);
    return rl;
}

static int take(struct kms_ratelimit *rl, const char *fp, enum kms_rl_budget b, uint64_t *retry)
{
    uint64_t r = 0;
    int ok = kms_ratelimit_take(rl, fp, KMS_ROLE_BACKEND, b, clock_ns, &r);
    if (retry != NULL)
        *retry = r;
    return ok;
}

Test(ratelimit, parse_budgets_rates_and_bursts)
{
    struct kms_rl_limit l[KMS_RL_BUDGETS];
    char why[128];
    cr_assert_eq(kms_rl_parse("create=100:200, unwrap=2.5 other=7:1", l, why, sizeof(why)), KMS_OK, "%s", why);
    cr_assert_float_eq(l[KMS_RL_CREATE].rate, 100, 1e-9);
    cr_assert_eq(l[KMS_RL_CREATE].burst, 200);
    cr_assert_float_eq(l[KMS_RL_UNWRAP].rate, 2.5, 1e-9);
    cr_assert_eq(l[KMS_RL_UNWRAP].burst, 3, "the burst defaults to the rate rounded up");
    cr_assert_eq(l[KMS_RL_OTHER].burst, 1);
    cr_assert_eq(kms_rl_parse("", l, why, sizeof(why)), KMS_OK);
    cr_assert_float_eq(l[KMS_RL_CREATE].rate, 0, 1e-9, "nothing named, nothing limited");
    static const char *const bad[] = {"create", "delete=1", "create=", "create=0", "create=-1", "create=x",
                                      "create=1:0", "create=1:x", "create=1:", "unwrap=1e9"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        cr_assert_eq(kms_rl_parse(bad[i], l, why, sizeof(why)), KMS_ERR_CONFIG, "accepted %s", bad[i]);
        cr_assert(strstr(why, bad[i]) != NULL, "'%s' not named in: %s", bad[i], why);
    }
}

Test(ratelimit, parse_one_limit_for_connections_per_address)
{
    struct kms_rl_limit l;
    char why[128];
    cr_assert_eq(kms_rl_parse_limit("100:200", &l, why, sizeof(why)), KMS_OK, "%s", why);
    cr_assert_float_eq(l.rate, 100, 1e-9);
    cr_assert_eq(l.burst, 200);
    cr_assert_eq(kms_rl_parse_limit("7.5", &l, why, sizeof(why)), KMS_OK, "%s", why);
    cr_assert_eq(l.burst, 8, "the burst defaults to the rate rounded up");
    cr_assert_eq(kms_rl_parse_limit("", &l, why, sizeof(why)), KMS_OK);
    cr_assert_float_eq(l.rate, 0, 1e-9, "empty: not limited");
    static const char *const bad[] = {"0", "-1", "x", "1:0", "1:", "connect=1", "1e9"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        cr_assert_eq(kms_rl_parse_limit(bad[i], &l, why, sizeof(why)), KMS_ERR_CONFIG, "accepted %s", bad[i]);
        cr_assert(strstr(why, bad[i]) != NULL, "'%s' not named in: %s", bad[i], why);
    }
}

Test(ratelimit, addresses_have_buckets_of_their_own)
{
    struct kms_rl_limit lim[KMS_RL_ROLES][KMS_RL_BUDGETS];
    memset(lim, 0, sizeof(lim));
    lim[KMS_ROLE_NONE][KMS_RL_OTHER] = (struct kms_rl_limit){10, 3};
    struct kms_ratelimit *rl = NULL;
    cr_assert_eq(kms_ratelimit_new(lim, NULL, &rl), KMS_OK);
    uint64_t retry = 0, now = 1000000000ull;
    for (int i = 0; i < 3; i++)
        cr_assert(kms_ratelimit_take(rl, "127.0.0.5", KMS_ROLE_NONE, KMS_RL_OTHER, now, &retry), "burst %d", i);
    cr_assert_not(kms_ratelimit_take(rl, "127.0.0.5", KMS_ROLE_NONE, KMS_RL_OTHER, now, &retry));
    cr_assert(retry >= 1 && retry <= 101, "retry %llu ms", (unsigned long long)retry);
    cr_assert(kms_ratelimit_take(rl, "127.0.0.6", KMS_ROLE_NONE, KMS_RL_OTHER, now, &retry), "another address");
    cr_assert(kms_ratelimit_take(rl, "127.0.0.5", KMS_ROLE_NONE, KMS_RL_OTHER, now + 100000000ull, &retry),
              "a token a tenth of a second later");
    kms_ratelimit_free(&rl);
}

Test(ratelimit, alone_a_burst_then_the_rate)
{
    struct kms_ratelimit *rl = limiter("unwrap=10:5", NULL);
    for (int i = 0; i < 5; i++)
        cr_assert(take(rl, FP_A, KMS_RL_UNWRAP, NULL), "burst token %d", i);
    uint64_t retry = 0;
    cr_assert(!take(rl, FP_A, KMS_RL_UNWRAP, &retry));
    cr_assert(retry >= 1 && retry <= 101, "retry %llu ms", (unsigned long long)retry);
    cr_assert(take(rl, FP_B, KMS_RL_UNWRAP, NULL), "another identity has its own budget");
    cr_assert(take(rl, FP_A, KMS_RL_CREATE, NULL), "a budget without a limit");
    clock_ns += 100 * MS;
    cr_assert(take(rl, FP_A, KMS_RL_UNWRAP, NULL), "one token per 100 ms");
    cr_assert(!take(rl, FP_A, KMS_RL_UNWRAP, NULL));
    /* 10 s at 1,000 attempts per second: the rate, within one token */
    int allowed = 0;
    for (int i = 0; i < 10000; i++) {
        clock_ns += 1 * MS;
        allowed += take(rl, FP_A, KMS_RL_UNWRAP, NULL);
    }
    cr_assert(allowed >= 99 && allowed <= 101, "%d allowed in 10 s at 10/s", allowed);
    kms_ratelimit_free(&rl);
}

/* Three nodes lease from one remote: the cluster-wide rate holds within
 * 10 % however the attempts spread, and most attempts cost no remote call. */
Test(ratelimit, three_nodes_share_one_cluster_wide_budget)
{
    remote_nodes = 3;
    struct kms_ratelimit *n[3];
    for (int i = 0; i < 3; i++)
        n[i] = limiter("unwrap=300:300", &remote);
    int allowed = 0, attempts = 0;
    for (int t = 0; t < 10000; t++) { /* 10 s, 3,000 attempts per second over the 3 nodes */
        clock_ns += 1 * MS;
        for (int i = 0; i < 3; i++, attempts++)
            allowed += take(n[i], FP_A, KMS_RL_UNWRAP, NULL);
    }
    int want = 300 + 300 * 10;
    cr_assert(allowed >= want * 0.9 && allowed <= want * 1.1, "%d allowed, want %d +-10%%", allowed, want);
    cr_assert(remote_calls < (unsigned)attempts / 10, "%u remote calls for %d attempts", remote_calls, attempts);
    for (int i = 0; i < 3; i++)
        kms_ratelimit_free(&n[i]);
}

Test(ratelimit, remote_away_each_node_keeps_its_share)
{
    remote_nodes = 2;
    struct kms_ratelimit *rl = limiter("create=100:100", &remote);
    remote_up = 0;
    int allowed = 0;
    for (int t = 0; t < 5000; t++) { /* 5 s */
        clock_ns += 1 * MS;
        allowed += take(rl, FP_A, KMS_RL_CREATE, NULL);
    }
    int want = 50 + 50 * 5; /* its half: burst 50, 50 per second */
    cr_assert(allowed >= want * 0.9 && allowed <= want * 1.1, "%d allowed on the share, want %d", allowed, want);
    cr_assert(kms_ratelimit_degraded(rl));
    cr_assert(remote_calls <= 6, "one remote attempt per second while away: %u", remote_calls);
    remote_up = 1;
    clock_ns += 2000 * MS;
    cr_assert(take(rl, FP_A, KMS_RL_CREATE, NULL));
    cr_assert(!kms_ratelimit_degraded(rl), "back on the remote");
    kms_ratelimit_free(&rl);
}
