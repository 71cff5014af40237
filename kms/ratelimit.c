/* Rate limits per client identity (ratelimit.h). */
#include "kms/ratelimit.h"

#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define SLOTS 1024                 /* buckets kept: identities x budgets in use */
#define PROBE 16                   /* slots looked at per lookup; the oldest is reused */
#define LEASE_NS 1000000000ull     /* leased tokens not spent within a second are dropped */
#define REMOTE_RETRY_NS 1000000000ull /* after a failed remote call, the share for a second */
#define FP_MAX 64

struct bucket {
    char fp[FP_MAX + 1];
    int budget; /* -1: free */
    uint64_t last_ns;
    uint64_t tat_ns; /* GCRA on this node: alone, or on its share when the remote is away */
    unsigned leased;
    uint64_t lease_until_ns;
    uint64_t denied_until_ns;
};

struct kms_ratelimit {
    struct kms_rl_limit limits[KMS_RL_ROLES][KMS_RL_BUDGETS];
    struct kms_rl_remote remote;
    int has_remote;
    pthread_mutex_t lock;        /* the buckets */
    pthread_mutex_t remote_lock; /* one remote call at a time */
    uint64_t remote_down_until;
    int degraded;
    struct bucket b[SLOTS];
};

const char *kms_rl_budget_name(enum kms_rl_budget b)
{
    static const char *const names[KMS_RL_BUDGETS] = {"create", "unwrap", "other"};
    return (unsigned)b < KMS_RL_BUDGETS ? names[b] : "?";
}

static kms_rc bad(char *why, size_t cap, const char *item, size_t len, const char *what)
{
    (void)snprintf(why, cap, "'%.*s' %s", (int)(len > 48 ? 48 : len), item, what);
    return KMS_ERR_CONFIG;
}

/* "rate[:burst]" (len bytes at num) into *out; item is what errors quote. */
static kms_rc parse_limit(const char *num_text, size_t nlen, const char *item, size_t len, struct kms_rl_limit *out,
                          char *why, size_t cap)
{
    char num[48];
    if (nlen == 0 || nlen >= sizeof(num))
        return bad(why, cap, item, len, "has no rate");
    memcpy(num, num_text, nlen);
    num[nlen] = '\0';
    char *colon = strchr(num, ':');
    if (colon != NULL)
        *colon = '\0';
    char *end = NULL;
    double rate = strtod(num, &end);
    if (end == num || *end != '\0' || !(rate > 0) || rate > 1e7)
        return bad(why, cap, item, len, "has a rate that is not a number above 0 and at most 10000000 per second");
    unsigned long burst = (unsigned long)ceil(rate);
    if (colon != NULL) {
        char *bend = NULL;
        burst = strtoul(colon + 1, &bend, 10);
        if (colon[1] < '0' || colon[1] > '9' || *bend != '\0' || burst < 1 || burst > 100000000ul)
            return bad(why, cap, item, len, "has a burst that is not a whole number from 1 to 100000000");
    }
    out->rate = rate;
    out->burst = (unsigned)burst;
    return KMS_OK;
}

kms_rc kms_rl_parse_limit(const char *text, struct kms_rl_limit *out, char *why, size_t cap)
{
    memset(out, 0, sizeof(*out));
    if (why != NULL && cap > 0)
        why[0] = '\0';
    size_t len = strlen(text);
    return len == 0 ? KMS_OK : parse_limit(text, len, text, len, out, why, cap);
}

kms_rc kms_rl_parse(const char *text, struct kms_rl_limit out[KMS_RL_BUDGETS], char *why, size_t cap)
{
    memset(out, 0, sizeof(*out) * KMS_RL_BUDGETS);
    if (why != NULL && cap > 0)
        why[0] = '\0';
    const char *p = text;
    while (*p != '\0') {
        while (*p == ',' || *p == ' ')
            p++;
        if (*p == '\0')
            break;
        size_t len = strcspn(p, ", ");
        const char *eq = memchr(p, '=', len);
        if (eq == NULL)
            return bad(why, cap, p, len, "is not budget=rate[:burst] (budgets: create, unwrap, other)");
        int budget = -1;
        for (int i = 0; i < KMS_RL_BUDGETS; i++) {
            const char *name = kms_rl_budget_name((enum kms_rl_budget)i);
            if ((size_t)(eq - p) == strlen(name) && strncmp(p, name, strlen(name)) == 0)
                budget = i;
        }
        if (budget < 0)
            return bad(why, cap, p, len, "names no budget: create, unwrap or other");
        KMS_GUARD(parse_limit(eq + 1, len - (size_t)(eq + 1 - p), p, len, &out[budget], why, cap));
        p += len;
    }
    return KMS_OK;
}

kms_rc kms_ratelimit_new(struct kms_rl_limit limits[KMS_RL_ROLES][KMS_RL_BUDGETS],
                         const struct kms_rl_remote *remote, struct kms_ratelimit **out)
{
    struct kms_ratelimit *rl = calloc(1, sizeof(*rl));
    if (rl == NULL)
        return KMS_ERR_NO_MEMORY;
    memcpy(rl->limits, limits, sizeof(rl->limits));
    if (remote != NULL) {
        rl->remote = *remote;
        rl->has_remote = 1;
    }
    for (size_t i = 0; i < SLOTS; i++)
        rl->b[i].budget = -1;
    pthread_mutex_init(&rl->lock, NULL);
    pthread_mutex_init(&rl->remote_lock, NULL);
    *out = rl;
    return KMS_OK;
}

void kms_ratelimit_free(struct kms_ratelimit **rl)
{
    if (rl == NULL || *rl == NULL)
        return;
    pthread_mutex_destroy(&(*rl)->lock);
    pthread_mutex_destroy(&(*rl)->remote_lock);
    free(*rl);
    *rl = NULL;
}

/* The bucket of (fp, budget); a new one (or the oldest of its probe run,
 * reused) starts full. Under rl->lock. */
static struct bucket *find(struct kms_ratelimit *rl, const char *fp, int budget, uint64_t now)
{
    uint64_t h = 1469598103934665603ull;
    for (const char *c = fp; *c; c++)
        h = (h ^ (uint8_t)*c) * 1099511628211ull;
    h = (h ^ (uint64_t)budget) * 1099511628211ull;
    struct bucket *oldest = NULL;
    for (size_t i = 0; i < PROBE; i++) {
        struct bucket *bk = &rl->b[(h + i) % SLOTS];
        if (bk->budget == budget && strcmp(bk->fp, fp) == 0) {
            bk->last_ns = now;
            return bk;
        }
        if (oldest == NULL || bk->budget < 0 || (oldest->budget >= 0 && bk->last_ns < oldest->last_ns))
            oldest = bk;
    }
    memset(oldest, 0, sizeof(*oldest));
    (void)snprintf(oldest->fp, sizeof(oldest->fp), "%s", fp);
    oldest->budget = budget;
    oldest->last_ns = now;
    return oldest;
}

/* GCRA on this node, for rate/share and burst/share. */
static int take_local(struct bucket *bk, const struct kms_rl_limit *lim, unsigned share, uint64_t now,
                      uint64_t *retry_ms)
{
    double rate = lim->rate / share;
    unsigned burst = lim->burst / share > 0 ? lim->burst / share : 1;
    uint64_t T = (uint64_t)(1e9 / rate);
    uint64_t tau = T * (uint64_t)(burst - 1);
    uint64_t tat = bk->tat_ns > now ? bk->tat_ns : now;
    if (tat - now > tau) {
        *retry_ms = (tat - now - tau) / 1000000u + 1;
        return 0;
    }
    bk->tat_ns = tat + T;
    return 1;
}

int kms_ratelimit_take(struct kms_ratelimit *rl, const char *fingerprint, enum kms_role role, enum kms_rl_budget b,
                       uint64_t now_ns, uint64_t *retry_ms)
{
    *retry_ms = 0;
    if ((unsigned)role >= KMS_RL_ROLES || (unsigned)b >= KMS_RL_BUDGETS)
        return 1;
    const struct kms_rl_limit *lim = &rl->limits[role][b];
    if (!(lim->rate > 0))
        return 1;
    pthread_mutex_lock(&rl->lock);
    struct bucket *bk = find(rl, fingerprint, (int)b, now_ns);
    int ok;
    if (!rl->has_remote || now_ns < rl->remote_down_until) {
        unsigned share = rl->has_remote ? rl->remote.nodes(rl->remote.ctx) : 1;
        ok = take_local(bk, lim, share > 0 ? share : 1, now_ns, retry_ms);
        pthread_mutex_unlock(&rl->lock);
        return ok;
    }
    if (bk->leased > 0 && now_ns < bk->lease_until_ns) {
        bk->leased--;
        pthread_mutex_unlock(&rl->lock);
        return 1;
    }
    if (now_ns < bk->denied_until_ns) {
        *retry_ms = (bk->denied_until_ns - now_ns) / 1000000u + 1;
        pthread_mutex_unlock(&rl->lock);
        return 0;
    }
    pthread_mutex_unlock(&rl->lock);

    /* a lease from the remote: at most a tenth of a second of the rate and a
     * share of the burst, so that idle leases waste little of the budget */
    unsigned nodes = rl->remote.nodes(rl->remote.ctx);
    nodes = nodes > 0 ? nodes : 1;
    double want_d = fmin(ceil(lim->rate / 10.0), floor((double)lim->burst / (2.0 * nodes)));
    unsigned want = want_d >= 1 ? (unsigned)want_d : 1;
    uint64_t T_us = (uint64_t)(1e6 / lim->rate);
    if (T_us == 0)
        T_us = 1;
    char key[FP_MAX + 16];
    (void)snprintf(key, sizeof(key), "%s:%s", kms_rl_budget_name(b), fingerprint);
    unsigned granted = 0;
    uint64_t retry_us = 0;
    pthread_mutex_lock(&rl->remote_lock);
    int rc = rl->remote.lease(rl->remote.ctx, key, T_us, T_us * (uint64_t)(lim->burst - 1), want, &granted, &retry_us);
    pthread_mutex_unlock(&rl->remote_lock);

    pthread_mutex_lock(&rl->lock);
    bk = find(rl, fingerprint, (int)b, now_ns);
    if (rc != 0) {
        rl->remote_down_until = now_ns + REMOTE_RETRY_NS;
        rl->degraded = 1;
        ok = take_local(bk, lim, nodes, now_ns, retry_ms);
    } else if (granted > 0) {
        rl->degraded = 0;
        bk->leased = (now_ns < bk->lease_until_ns ? bk->leased : 0) + granted - 1;
        bk->lease_until_ns = now_ns + LEASE_NS;
        ok = 1;
    } else {
        rl->degraded = 0;
        /* why wait for a whole lease, not the next token: a client over its
         * limit then costs each node a remote call per lease, not per token */
        uint64_t wait_ns = ((retry_us > 0 ? retry_us : 1) + (uint64_t)(want - 1) * T_us) * 1000u;
        bk->denied_until_ns = now_ns + wait_ns;
        *retry_ms = wait_ns / 1000000u + 1;
        ok = 0;
    }
    pthread_mutex_unlock(&rl->lock);
    return ok;
}

int kms_ratelimit_degraded(struct kms_ratelimit *rl)
{
    pthread_mutex_lock(&rl->lock);
    int d = rl->degraded;
    pthread_mutex_unlock(&rl->lock);
    return d;
}
