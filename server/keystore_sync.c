#include "server/keystore_sync.h"

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "cluster/keystore_dist.h"
#include "common/clock.h"
#include "common/file.h"
#include "common/hex.h"
#include "common/log.h"
#include "kms/keystore_backup.h"
#include "kms/keystore_write.h"
#include "server/metrics.h"

#define LISTEN_WAIT_MS 500
#define RESUBSCRIBE_MIN_MS 200
#define RESUBSCRIBE_MAX_MS 5000
#define STATE_MAX 256

struct kms_ksync {
    const struct kms_config *cfg;
    struct kms_cache *cache;
    struct kms_secret *cluster_key;
    char path[4096], state_path[4200];
    struct kms_ksdist *link; /* checks and fetches; reopened after a failure */
    uint64_t generation;     /* what the file holds */
    char sha256[65];
    char error[256];
    pthread_mutex_t mu;      /* guards generation, sha256, error against kms_ksync_status */
    uint64_t next_check_ms;
    uint64_t stale_seen; /* the older head last reported, so it is counted once */
    /* the write in flight, for kms_ksync_reloaded */
    uint8_t *prev;
    size_t prev_len;
    int had_prev;
    uint64_t prev_gen;
    /* listener */
    pthread_t thread;
    int thread_started;
    int stop;  /* __atomic */
    int poked; /* __atomic */
};

static void set_error(struct kms_ksync *s, const char *e)
{
    pthread_mutex_lock(&s->mu);
    (void)snprintf(s->error, sizeof(s->error), "%s", e);
    /* why: heartbeats carry printable ASCII only */
    for (char *p = s->error; *p; p++)
        if (*p < 0x20 || *p > 0x7e)
            *p = '?';
    pthread_mutex_unlock(&s->mu);
}

/* "generation=N\nsha256=HEX\n"; a missing file is generation 0. */
static kms_rc read_state(struct kms_ksync *s)
{
    uint8_t *d = NULL;
    size_t n = 0;
    int absent = 0;
    kms_rc rc = kms_file_read(s->state_path, STATE_MAX, "the keystore generation state file", &d, &n, &absent);
    if (rc != KMS_OK || absent)
        return rc == KMS_ERR_TOO_LARGE ? kms_fail(KMS_ERR_IO, "%s: not a keystore generation state file (too long)",
                                                  s->state_path)
                                       : rc;
    /* why: kms_file_read leaves a NUL after the bytes it read */
    const char *text = (const char *)d;
    unsigned long long g = 0;
    const char *p = strncmp(text, "generation=", 11) == 0 ? text + 11 : NULL;
    int digits = 0;
    for (; p != NULL && *p >= '0' && *p <= '9' && digits < 19; p++, digits++)
        g = g * 10 + (unsigned long long)(*p - '0');
    int ok = p != NULL && digits > 0 && *p == '\n';
    free(d);
    if (!ok)
        return kms_fail(KMS_ERR_IO, "%s: line 1 must be generation=N (a keystore generation state file)",
                        s->state_path);
    s->generation = g;
    return KMS_OK;
}

static kms_rc write_state(struct kms_ksync *s, uint64_t gen, const char *sha)
{
    char buf[STATE_MAX];
    int n = snprintf(buf, sizeof(buf), "generation=%llu\nsha256=%s\n", (unsigned long long)gen, sha);
    return kms_file_write_atomic(s->state_path, (const uint8_t *)buf, (size_t)n, 0600, NULL);
}

void kms_ksync_note_file(struct kms_ksync *s)
{
    uint8_t *d = NULL;
    size_t n = 0;
    char sha[65] = "";
    if (kms_file_read(s->path, KMS_FILE_MAX, "the keystore", &d, &n, NULL) == KMS_OK)
        kms_hex_sha256(d, n, sha);
    kms_wipe(d, n);
    free(d);
    pthread_mutex_lock(&s->mu);
    memcpy(s->sha256, sha, sizeof(sha));
    pthread_mutex_unlock(&s->mu);
}

kms_rc kms_ksync_new(const struct kms_config *cfg, struct kms_cache *cache, const struct kms_secret *cluster_key,
                     struct kms_ksync **out)
{
    *out = NULL;
    struct kms_ksync *s = calloc(1, sizeof(*s));
    if (s == NULL)
        return kms_fail(KMS_ERR_NO_MEMORY, "keystore sync");
    s->cfg = cfg;
    s->cache = cache;
    (void)pthread_mutex_init(&s->mu, NULL);
    (void)snprintf(s->path, sizeof(s->path), "%s", kms_config_str(cfg, KMS_CFG_KEYSTORE_FILE));
    (void)snprintf(s->state_path, sizeof(s->state_path), "%s.generation", s->path);
    kms_rc rc = kms_secret_from(kms_secret_cdata(cluster_key), kms_secret_len(cluster_key), &s->cluster_key);
    if (rc == KMS_OK)
        rc = read_state(s);
    if (rc != KMS_OK) {
        kms_ksync_free(&s);
        return rc;
    }
    kms_ksync_note_file(s);
    kms_metrics_keystore_cluster_generation(s->generation);
    *out = s;
    return KMS_OK;
}

static void *listen_main(void *arg)
{
    struct kms_ksync *s = arg;
    struct kms_ksdist *sub = NULL;
    unsigned backoff = RESUBSCRIBE_MIN_MS;
    while (!__atomic_load_n(&s->stop, __ATOMIC_RELAXED)) {
        if (sub == NULL) {
            if (kms_ksdist_subscribe(s->cache, &sub) != KMS_OK) {
                for (unsigned w = 0; w < backoff && !__atomic_load_n(&s->stop, __ATOMIC_RELAXED); w += 100)
                    (void)usleep(100 * 1000);
                backoff = backoff * 2 > RESUBSCRIBE_MAX_MS ? RESUBSCRIBE_MAX_MS : backoff * 2;
                continue;
            }
            backoff = RESUBSCRIBE_MIN_MS;
            /* why: an announcement may have been missed while unsubscribed */
            __atomic_store_n(&s->poked, 1, __ATOMIC_RELAXED);
        }
        uint64_t gen = 0;
        int w = kms_ksdist_wait(sub, LISTEN_WAIT_MS, &gen);
        if (w == 1)
            __atomic_store_n(&s->poked, 1, __ATOMIC_RELAXED);
        else if (w < 0)
            kms_ksdist_free(&sub);
    }
    kms_ksdist_free(&sub);
    return NULL;
}

void kms_ksync_set_config(struct kms_ksync *s, const struct kms_config *cfg)
{
    s->cfg = cfg; /* why: only the main loop reads s->cfg; the listener never does */
}

kms_rc kms_ksync_listen(struct kms_ksync *s)
{
    if (pthread_create(&s->thread, NULL, listen_main, s) != 0)
        return kms_fail(KMS_ERR_INTERNAL, "keystore sync: cannot start the listener thread");
    s->thread_started = 1;
    return KMS_OK;
}

int kms_ksync_due(struct kms_ksync *s)
{
    if (__atomic_exchange_n(&s->poked, 0, __ATOMIC_RELAXED))
        return 1;
    return kms_now_ms() >= s->next_check_ms;
}

/* Logs, counts and records a refused generation. */
static kms_rc refused(struct kms_ksync *s, uint64_t gen, enum kms_ksgen_reject why, kms_rc rc)
{
    char detail[512], g[24], have[24];
    (void)snprintf(detail, sizeof(detail), "%s", kms_error_detail());
    (void)snprintf(g, sizeof(g), "%llu", (unsigned long long)gen);
    (void)snprintf(have, sizeof(have), "%llu", (unsigned long long)s->generation);
    kms_metrics_keystore_rejected(why);
    kms_log(KMS_LOG_ERROR, "keystore.generation_refused", NULL, "generation", g, "reason",
            kms_ksgen_reject_name(why), "detail", detail, "generation_in_force", have, "msg",
            "the node keeps its keystore", NULL);
    char e[256];
    (void)snprintf(e, sizeof(e), "generation %s refused (%s): %.180s", g, kms_ksgen_reject_name(why), detail);
    set_error(s, e);
    return kms_fail(rc, "%s", e);
}

/* Writes ks over the keystore file (after a backup), then the state. */
static kms_rc write_generation(struct kms_ksync *s, const struct kms_ksgen_meta *m, const uint8_t *ks, size_t len)
{
    free(s->prev);
    s->prev = NULL;
    s->prev_len = 0;
    s->had_prev = kms_file_read(s->path, KMS_FILE_MAX, "the keystore", &s->prev, &s->prev_len, NULL) == KMS_OK;
    kms_error_clear();
    s->prev_gen = s->generation;
    if (s->had_prev) {
        char *dir = NULL;
        KMS_GUARD(kms_backup_default_dir(s->path, &dir));
        kms_rc rc = kms_backup_make(s->path, NULL, dir, KMS_BACKUP_DEFAULT_MAX, NULL);
        free(dir);
        KMS_GUARD(rc);
    }
    KMS_GUARD(kms_file_write_atomic(s->path, ks, len, 0600, NULL));
    kms_rc rc = write_state(s, m->generation, m->sha256);
    if (rc != KMS_OK) {
        /* why: a file without its state would be taken as the older generation */
        if (s->had_prev && kms_file_write_atomic(s->path, s->prev, s->prev_len, 0600, NULL) != KMS_OK)
            kms_log(KMS_LOG_ERROR, "keystore.restore_failed", NULL, "keystore", s->path, NULL);
        return rc;
    }
    pthread_mutex_lock(&s->mu);
    s->generation = m->generation;
    pthread_mutex_unlock(&s->mu);
    return KMS_OK;
}

kms_rc kms_ksync_poll(struct kms_ksync *s, int *wrote)
{
    *wrote = 0;
    s->next_check_ms = kms_now_ms() + (uint64_t)kms_config_int(s->cfg, KMS_CFG_CLUSTER_KEYSTORE_CHECK_MS);
    if (s->link == NULL)
        KMS_GUARD(kms_ksdist_open(s->cache, &s->link));
    uint64_t head = 0;
    kms_rc rc = kms_ksdist_head(s->link, &head);
    if (rc != KMS_OK) {
        kms_ksdist_free(&s->link);
        return rc;
    }
    if (head > 0 && head < s->generation && head != s->stale_seen) {
        /* why: a head below ours is a rollback attempt or a Redis that lost
         * its data; either way it is refused, and someone should know */
        s->stale_seen = head;
        kms_error_set_detail("Redis names generation %llu as the newest, below the %llu this node holds",
                             (unsigned long long)head, (unsigned long long)s->generation);
        return refused(s, head, KMS_KSGEN_STALE, KMS_ERR_UNWRAP);
    }
    if (head <= s->generation)
        return KMS_OK;
    uint8_t *blob = NULL, *ks = NULL;
    size_t blob_len = 0, ks_len = 0;
    rc = kms_ksdist_fetch(s->link, head, &blob, &blob_len);
    if (rc != KMS_OK) {
        if (rc == KMS_ERR_BACKEND_UNAVAILABLE)
            kms_ksdist_free(&s->link);
        return rc;
    }
    struct kms_ksgen_meta m;
    enum kms_ksgen_reject why = KMS_KSGEN_OK;
    rc = kms_ksgen_open(s->cluster_key, kms_config_str(s->cfg, KMS_CFG_CLUSTER_NAME), head, blob, blob_len, &m, &ks,
                        &ks_len, &why);
    free(blob);
    if (rc != KMS_OK)
        return why != KMS_KSGEN_OK ? refused(s, head, why, rc) : rc;
    char name[128];
    (void)snprintf(name, sizeof(name), "keystore generation %llu", (unsigned long long)head);
    rc = kms_ksgen_check(ks, ks_len, name, kms_config_secret(s->cfg, KMS_CFG_KEYSTORE_PASSWORD),
                         kms_config_str(s->cfg, KMS_CFG_SERVER_KEY_ALIAS),
                         kms_config_str(s->cfg, KMS_CFG_KEYSTORE_ALIAS), NULL);
    if (rc != KMS_OK) {
        kms_ksgen_free_bytes(&ks, ks_len);
        return refused(s, head, KMS_KSGEN_INVALID, rc);
    }
    rc = write_generation(s, &m, ks, ks_len);
    kms_ksgen_free_bytes(&ks, ks_len);
    if (rc != KMS_OK) {
        char e[256];
        (void)snprintf(e, sizeof(e), "generation %llu not written: %s", (unsigned long long)head, kms_error_detail());
        set_error(s, e);
        kms_log(KMS_LOG_ERROR, "keystore.generation_write_failed", NULL, "detail", e, NULL);
        return kms_fail(rc, "%s", e);
    }
    char g[24], t[24];
    (void)snprintf(g, sizeof(g), "%llu", (unsigned long long)head);
    (void)snprintf(t, sizeof(t), "%lld", (long long)m.time);
    kms_log(KMS_LOG_INFO, "keystore.generation_written", NULL, "generation", g, "sha256", m.sha256, "who", m.who,
            "edit", m.edit, "published", t, "keystore", s->path, NULL);
    *wrote = 1;
    return KMS_OK;
}

void kms_ksync_reloaded(struct kms_ksync *s, kms_rc rc, const char *detail)
{
    if (rc == KMS_OK) {
        set_error(s, "");
        kms_metrics_keystore_cluster_generation(s->generation);
    } else {
        char e[256];
        (void)snprintf(e, sizeof(e), "generation %llu written but refused by the reload, previous file put back: %s",
                       (unsigned long long)s->generation, detail);
        if (s->had_prev && kms_file_write_atomic(s->path, s->prev, s->prev_len, 0600, NULL) != KMS_OK)
            kms_log(KMS_LOG_ERROR, "keystore.restore_failed", NULL, "keystore", s->path, NULL);
        pthread_mutex_lock(&s->mu);
        s->generation = s->prev_gen;
        pthread_mutex_unlock(&s->mu);
        if (write_state(s, s->prev_gen, "") != KMS_OK)
            kms_log(KMS_LOG_ERROR, "keystore.state_write_failed", NULL, "file", s->state_path, NULL);
        set_error(s, e);
        kms_metrics_keystore_rejected(KMS_KSGEN_INVALID);
        kms_log(KMS_LOG_ERROR, "keystore.generation_refused", NULL, "reason", "invalid", "detail", e, NULL);
    }
    if (s->prev != NULL)
        kms_wipe(s->prev, s->prev_len);
    free(s->prev);
    s->prev = NULL;
    s->prev_len = 0;
    kms_ksync_note_file(s);
}

void kms_ksync_status(struct kms_ksync *s, struct kms_ksync_status *out)
{
    memset(out, 0, sizeof(*out));
    if (s == NULL)
        return;
    pthread_mutex_lock(&s->mu);
    out->generation = s->generation;
    memcpy(out->sha256, s->sha256, sizeof(out->sha256));
    memcpy(out->error, s->error, sizeof(out->error));
    pthread_mutex_unlock(&s->mu);
}

void kms_ksync_free(struct kms_ksync **p)
{
    struct kms_ksync *s = *p;
    if (s == NULL)
        return;
    if (s->thread_started) {
        __atomic_store_n(&s->stop, 1, __ATOMIC_RELAXED);
        (void)pthread_join(s->thread, NULL);
    }
    kms_ksdist_free(&s->link);
    kms_secret_free(&s->cluster_key);
    if (s->prev != NULL)
        kms_wipe(s->prev, s->prev_len);
    free(s->prev);
    pthread_mutex_destroy(&s->mu);
    free(s);
    *p = NULL;
}
