/* Keeping a running node current (node.h): keystore and CRL reloads, live
 * settings, file watches, the cluster keystore and heartbeats. */
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/inotify.h>
#include <time.h>
#include <unistd.h>

#include "cluster/redis_cache.h"
#include "cluster/redis_config.h"
#include "common/base64.h"
#include "common/log.h"
#include "common/secret.h"
#include "common/version.h"
#include "kms/audit.h"
#include "kms/backend_select.h"
#include "kms/cache.h"
#include "kms/config.h"
#include "kms/hierarchy.h"
#include "kms/identity.h"
#include "kms/keystore.h"
#include "server/keystore_sync.h"
#include "server/metrics.h"
#include "server/node.h"
#include "server/server.h"

extern char **environ;

static void warn_cb(void *ctx, const char *msg)
{
    (void)ctx;
    kms_log(KMS_LOG_WARN, "config.warning", NULL, "msg", msg, NULL);
}

void kms_node_warn_expiry(struct kms_node *n)
{
    long long days = kms_config_int(n->cfg, KMS_CFG_AUTH_EXPIRY_WARN_DAYS);
    char alias[128];
    time_t na = kms_server_earliest_expiry(n->server, alias, sizeof(alias));
    if (na == 0 || days == 0)
        return;
    double left = difftime(na, time(NULL)) / 86400.0;
    if (left > (double)days)
        return;
    char when[32], left_s[32];
    struct tm tm;
    gmtime_r(&na, &tm);
    strftime(when, sizeof(when), "%Y-%m-%dT%H:%M:%SZ", &tm);
    (void)snprintf(left_s, sizeof(left_s), "%.1f", left);
    kms_log(KMS_LOG_WARN, "keystore.expiry", NULL, "alias", alias, "not_after", when, "days_left", left_s, "msg",
            left < 0 ? "a keystore certificate has expired: replace it" : "a keystore certificate expires soon: renew it",
            NULL);
}

/* kmsd's certificate toward the HSM (kms.keystore.alias) follows the
 * keystore too; a failure leaves the old one in force and the server part
 * of the reload applies anyway. */
static void reload_hsm_identity(struct kms_node *n, const struct kms_keystore *ks)
{
    struct kms_backend_identity id;
    kms_rc rc = kms_backend_reload_identity(n->cfg, ks, n->hsm, &id);
    if (rc != KMS_OK)
        kms_log(KMS_LOG_WARN, "hsm.identity_reload_failed", NULL, "code", kms_error_code(rc), "detail",
                kms_error_detail(), "msg", "kmsd keeps presenting its previous certificate to the HSM", NULL);
    else if (id.changed)
        kms_log(KMS_LOG_INFO, "hsm.identity_reloaded", NULL, "alias", kms_config_str(n->cfg, KMS_CFG_KEYSTORE_ALIAS),
                "sha256", id.sha256, "not_after", id.not_after, NULL);
}

/* Loads the keystore and CRL again and hands them to the server; a keystore
 * that does not load or lacks the server entry is refused and the old one
 * stays in force (SPEC §6). */
kms_rc kms_node_reload(struct kms_node *n, const char *why)
{
    kms_error_clear();
    kms_rc rc = kms_node_load_keystore(n);
    if (rc == KMS_OK) {
        /* why: the server holds ks as its current generation until the next reload */
        const struct kms_keystore *ks = n->ks;
        rc = kms_server_reload(n->server, n->ks, n->crls);
        n->ks = NULL;
        n->crls = NULL;
        if (rc == KMS_OK)
            reload_hsm_identity(n, ks);
    } else {
        char detail[256];
        (void)snprintf(detail, sizeof(detail), "%s", kms_error_detail());
        kms_server_note_reload(n->server, rc, detail);
        kms_error_set_detail("%s", detail);
        kms_keystore_free(&n->ks);
        if (n->crls != NULL)
            sk_X509_CRL_pop_free(n->crls, X509_CRL_free);
        n->crls = NULL;
    }
    char gen[32];
    (void)snprintf(gen, sizeof(gen), "%lu", kms_server_generation(n->server));
    if (rc == KMS_OK) {
        kms_log(KMS_LOG_INFO, "keystore.reloaded", NULL, "trigger", why, "generation", gen, "keystore",
                kms_config_str(n->cfg, KMS_CFG_KEYSTORE_FILE), NULL);
        kms_node_warn_expiry(n);
    } else {
        kms_log(KMS_LOG_ERROR, "keystore.reload_refused", NULL, "trigger", why, "code", kms_error_code(rc), "detail",
                kms_error_detail(), "generation_in_force", gen, "msg",
                "the new keystore or CRL was refused; the previous one stays in force", NULL);
    }
    if (n->ksync != NULL)
        kms_ksync_note_file(n->ksync);
    return rc;
}

/* SIGHUP or kms.properties changed: the live settings take effect now, a
 * changed restart-only setting is logged as pending and left as it was
 * (never half-applied); a file that does not load changes nothing. */
void kms_node_reload_config(struct kms_node *n, const char *why)
{
    if (n->n_retired == KMS_ARRAY_LEN(n->retired)) {
        kms_log(KMS_LOG_WARN, "config.reload_skipped", NULL, "msg",
                "too many configuration reloads in this process; restart kmsd to reload it again", NULL);
        return;
    }
    struct kms_config *fresh = NULL, *merged = NULL;
    kms_error_clear();
    kms_rc rc = kms_config_load(n->config_path, environ, warn_cb, NULL, &fresh);
    char live[512], pending[512];
    if (rc == KMS_OK)
        rc = kms_config_merge_live(n->cfg, fresh, &merged, live, pending, sizeof(live));
    kms_config_free(&fresh);
    if (rc != KMS_OK) {
        kms_log(KMS_LOG_ERROR, "config.reload_refused", NULL, "trigger", why, "file",
                n->config_path ? n->config_path : "(none)", "detail", kms_error_detail(), "msg",
                "the configuration in force is unchanged", NULL);
        return;
    }
    n->retired[n->n_retired++] = n->cfg;
    n->cfg = merged;
    int lvl = kms_log_level_parse(kms_config_str(n->cfg, KMS_CFG_LOG_LEVEL));
    kms_log_set_level(lvl < 0 ? KMS_LOG_INFO : (enum kms_log_level)lvl);
    kms_cache_set_limits(n->cache, (unsigned)kms_config_int(n->cfg, KMS_CFG_CACHE_TTL),
                         (unsigned)kms_config_int(n->cfg, KMS_CFG_CACHE_IDLE));
    if (n->ksync != NULL)
        kms_ksync_set_config(n->ksync, n->cfg);
    kms_log(KMS_LOG_INFO, "config.reloaded", NULL, "trigger", why, "applied", live[0] ? live : "(none changed)", NULL);
    if (pending[0])
        kms_log(KMS_LOG_WARN, "config.pending_restart", NULL, "settings", pending, "msg",
                "these settings changed but take effect only when kmsd restarts; the values in force are unchanged",
                NULL);
}

/* inotify on the folders of the keystore and the CRL: a reload when either
 * file is written or renamed into place. -1 when inotify is unavailable. */
int kms_node_watch_files(struct kms_node *n, const char *names[KMS_NODE_WATCHED])
{
    int fd = inotify_init1(IN_NONBLOCK | IN_CLOEXEC);
    if (fd < 0)
        return -1;
    const char *files[KMS_NODE_WATCHED] = {kms_config_str(n->cfg, KMS_CFG_KEYSTORE_FILE),
                                  kms_config_str(n->cfg, KMS_CFG_AUTH_CRL_FILE),
                                  n->config_path ? n->config_path : ""};
    for (int i = 0; i < KMS_NODE_WATCHED; i++) {
        names[i] = NULL;
        if (files[i][0] == '\0')
            continue;
        char dir[4096];
        (void)snprintf(dir, sizeof(dir), "%s", files[i]);
        char *slash = strrchr(dir, '/');
        names[i] = slash ? files[i] + (slash - dir) + 1 : files[i];
        if (slash == dir)
            dir[1] = '\0';
        else if (slash)
            *slash = '\0';
        else
            (void)snprintf(dir, sizeof(dir), ".");
        if (inotify_add_watch(fd, dir, IN_CLOSE_WRITE | IN_MOVED_TO | IN_CREATE) < 0)
            kms_log(KMS_LOG_WARN, "keystore.watch_failed", NULL, "dir", dir, "msg",
                    "cannot watch the folder; reload with SIGHUP", NULL);
    }
    return fd;
}

/* Drains inotify events: a bit per watched file named (1 keystore, 2 CRL,
 * 4 kms.properties). */
int kms_node_files_changed(int fd, const char *names[KMS_NODE_WATCHED])
{
    int hit = 0;
    char buf[4096] __attribute__((aligned(__alignof__(struct inotify_event))));
    for (;;) {
        ssize_t len = read(fd, buf, sizeof(buf));
        if (len <= 0)
            return hit;
        for (char *p = buf; p < buf + len;) {
            const struct inotify_event *ev = (const struct inotify_event *)(void *)p;
            for (int i = 0; i < KMS_NODE_WATCHED; i++)
                if (ev->len > 0 && names[i] != NULL && strcmp(ev->name, names[i]) == 0)
                    hit |= 1 << i;
            p += sizeof(*ev) + ev->len;
        }
    }
}

/* A new cluster keystore generation, written over the file by the sync,
 * swapped in through the ordinary reload. */
int kms_node_cluster_keystore(struct kms_node *n, int wfd, const char *names[KMS_NODE_WATCHED], int *pending, int *pending_config)
{
    int wrote = 0;
    kms_error_clear();
    kms_rc rc = kms_ksync_poll(n->ksync, &wrote);
    if (rc != KMS_OK && rc != KMS_ERR_UNWRAP)
        kms_log(KMS_LOG_DEBUG, "keystore.cluster_check_failed", NULL, "detail", kms_error_detail(), NULL);
    if (!wrote)
        return 0;
    rc = kms_node_reload(n, "cluster generation");
    char detail[256];
    (void)snprintf(detail, sizeof(detail), "%s", rc == KMS_OK ? "" : kms_error_detail());
    kms_ksync_reloaded(n->ksync, rc, detail);
    if (rc != KMS_OK && kms_node_reload(n, "previous keystore put back") != KMS_OK)
        kms_log(KMS_LOG_ERROR, "keystore.reload_refused", NULL, "msg", "the previous keystore did not load again", NULL);
    /* why: this write is already loaded; the watcher need not load it again,
     * but a change of another watched file meanwhile still counts */
    int changed = wfd >= 0 ? kms_node_files_changed(wfd, names) : 0;
    if (changed & ~1) {
        *pending = 2;
        *pending_config |= changed & 4;
    }
    return 1;
}

/* SPEC §9, §11: who this node is and which keystore it holds. */
kms_rc kms_node_heartbeat(struct kms_node *n)
{
    struct kms_cluster_node self;
    memset(&self, 0, sizeof(self));
    (void)snprintf(self.name, sizeof(self.name), "%.64s", n->name);
    (void)snprintf(self.version, sizeof(self.version), "%s", kms_version());
    self.interval_s = KMS_NODE_HEARTBEAT_EVERY_S;
    struct kms_ksync_status st;
    kms_ksync_status(n->ksync, &st);
    self.ks_generation = st.generation;
    memcpy(self.ks_sha256, st.sha256, sizeof(self.ks_sha256));
    memcpy(self.ks_error, st.error, sizeof(self.ks_error));
    self.ks_expiry = (int64_t)kms_server_earliest_expiry(n->server, self.ks_expiry_alias, sizeof(self.ks_expiry_alias));
    return kms_cluster_heartbeat_node(n->cache, &self, KMS_NODE_HEARTBEAT_TTL_S);
}
