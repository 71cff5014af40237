/* kmsd: the key-management server. Loads kms.properties, the keystore and the
 * backend, then serves HTTPS until SIGTERM/SIGINT. */
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <sys/inotify.h>
#include <time.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/log.h"
#include "common/secret.h"
#include "common/version.h"
#include "cluster/redis_cache.h"
#include "cluster/redis_config.h"
#include "common/base64.h"
#include "kms/audit.h"
#include "kms/backend_select.h"
#include "kms/cache.h"
#include "kms/config.h"
#include "kms/hierarchy.h"
#include "kms/identity.h"
#include "kms/keystore.h"
#include "server/keystore_sync.h"
#include "server/metrics.h"
#include "server/server.h"

#define SECURE_HEAP_BYTES (4u << 20)
#define HEARTBEAT_EVERY_S 5
/* why: a stopped node's heartbeat stays listed (as silent) for this long, so
 * `kmsctl cluster status` can name it; KMS_CLUSTER_SILENT_AFTER intervals
 * without one make it silent */
#define HEARTBEAT_TTL_S 600
#define DEFAULT_CONFIG "/etc/kmsd/kms.properties"
#define WATCHED 3 /* the keystore, the CRL, kms.properties */

extern char **environ;

static void usage(FILE *f)
{
    (void)fprintf(f,
                  "usage: kmsd [--config FILE] [--check-config] [--version]\n"
                  "  --config FILE    kms.properties to load (default: $KMS_CONFIG, else " DEFAULT_CONFIG
                  " if it exists)\n"
                  "  --check-config   validate the configuration and the keystore, print the effective\n"
                  "                   settings (secrets redacted) and exit 0, or exit 1 naming the problem\n"
                  "Environment variables override the file: KMS_SERVER_PORT=9443 sets kms.server.port.\n");
}

static void warn_cb(void *ctx, const char *msg)
{
    (void)ctx;
    kms_log(KMS_LOG_WARN, "config.warning", NULL, "msg", msg, NULL);
}

static int fail(const char *event, kms_rc rc)
{
    kms_log(KMS_LOG_ERROR, event, NULL, "code", kms_error_code(rc), "detail", kms_error_detail(), NULL);
    return 1;
}

struct node {
    struct kms_config *cfg;
    struct kms_keystore *ks;
    STACK_OF(X509_CRL) *crls;
    struct kms_rolemap *roles;
    struct kms_backend *backend;
    struct kms_backend *hsm; /* backend unwrapped (borrowed from it): kms_backend_reload_identity */
    struct kms_cache *cache;
    struct kms_hierarchy *hierarchy;
    struct kms_audit *audit;
    struct kms_secret *cluster_key; /* distributed: TLS session tickets shared by the nodes */
    struct kms_server *server;
    struct kms_ksync *ksync; /* distributed: the cluster's keystore generations (SPEC §11) */
    const char *config_path; /* NULL: defaults and environment only */
    /* why: the server and the backend keep pointers into the configuration
     * they started with; a replaced one lives until exit */
    struct kms_config *retired[64];
    size_t n_retired;
    char name[256];
};

static void node_free(struct node *n)
{
    kms_ksync_free(&n->ksync);
    kms_server_stop(&n->server);
    for (size_t i = 0; i < n->n_retired; i++)
        kms_config_free(&n->retired[i]);
    kms_hierarchy_free(&n->hierarchy);
    kms_cache_free(&n->cache);
    kms_backend_free(&n->backend);
    kms_audit_close(&n->audit);
    kms_secret_free(&n->cluster_key);
    kms_rolemap_free(&n->roles);
    kms_keystore_free(&n->ks);
    if (n->crls != NULL)
        sk_X509_CRL_pop_free(n->crls, X509_CRL_free);
    n->crls = NULL;
    kms_config_free(&n->cfg);
}

static kms_rc load_keystore(struct node *n)
{
    const char *file = kms_config_str(n->cfg, KMS_CFG_KEYSTORE_FILE);
    if (file[0] == '\0')
        return kms_fail(KMS_ERR_CONFIG, "kms.keystore.file is not set");
    KMS_GUARD(kms_keystore_load(file, kms_config_secret(n->cfg, KMS_CFG_KEYSTORE_PASSWORD), &n->ks));
    const char *crl = kms_config_str(n->cfg, KMS_CFG_AUTH_CRL_FILE);
    if (crl[0] != '\0')
        KMS_GUARD(kms_crl_load(crl, n->ks, &n->crls));
    const char *alias = kms_config_str(n->cfg, KMS_CFG_SERVER_KEY_ALIAS);
    const struct kms_ks_entry *e = kms_keystore_find(n->ks, alias);
    if (e == NULL || kms_ks_entry_type(e) != KMS_KS_PRIVATE_KEY)
        return kms_fail(KMS_ERR_ALIAS_NOT_FOUND, "%s has no private-key entry '%s' (kms.server.key.alias)", file,
                        alias);
    return KMS_OK;
}

static kms_rc open_backend(struct node *n)
{
    struct kms_backend *raw = NULL;
    KMS_GUARD(kms_backend_open_configured(n->cfg, n->ks, &raw));
    KMS_GUARD(kms_metrics_wrap_backend(raw, &n->backend)); /* takes raw */
    n->hsm = raw;
    if (n->backend->ops->kind == KMS_BACKEND_SOFT)
        kms_log(KMS_LOG_WARN, "backend.soft", NULL, "msg",
                "kms.hsm.protocol=soft: master keys are held by kmsd itself in a password-sealed file, NOT in an "
                "HSM. For development only; never use it in production.",
                "file", kms_config_str(n->cfg, KMS_CFG_HSM_SOFT_FILE), NULL);
    /* why: fail at start, not on the first request, when the master key is missing */
    struct kms_master_ref ref;
    kms_rc rc = n->backend->ops->resolve(n->backend, kms_config_str(n->cfg, KMS_CFG_HSM_MASTER_KEY), &ref);
    if (rc != KMS_OK) {
        char why[512];
        (void)snprintf(why, sizeof(why), "%s", kms_error_detail()); /* why: kms_fail rewrites the detail */
        return kms_fail(rc, "master key '%s' (kms.hsm.master.key) cannot be used: %s",
                        kms_config_str(n->cfg, KMS_CFG_HSM_MASTER_KEY), why);
    }
    kms_log(KMS_LOG_INFO, "backend.ready", NULL, "backend", n->backend->ops->name, "master_key",
            kms_config_str(n->cfg, KMS_CFG_HSM_MASTER_KEY), "master_ref", ref.name, NULL);
    return KMS_OK;
}

static kms_rc open_cache(struct node *n)
{
    const char *type = kms_config_str(n->cfg, KMS_CFG_CACHE_TYPE);
    if (strcmp(type, "none") == 0)
        return KMS_OK;
    struct kms_cache *local = NULL;
    KMS_GUARD(kms_cache_local_new((size_t)kms_config_int(n->cfg, KMS_CFG_CACHE_MAX_ENTRIES),
                                  (unsigned)kms_config_int(n->cfg, KMS_CFG_CACHE_TTL),
                                  (unsigned)kms_config_int(n->cfg, KMS_CFG_CACHE_IDLE), &local));
    if (strcmp(type, "local") == 0) {
        n->cache = local;
        return KMS_OK;
    }
    /* distributed: the local tier in front of Redis, values sealed under the cluster key */
    /* why: opened once (a PBKDF2); the cache, the shared TLS ticket keys and
     * the keystore sync all derive from it */
    kms_rc rc = kms_redis_config_cluster_key(n->cfg, NULL, &n->cluster_key);
    if (rc != KMS_OK) {
        kms_cache_free(&local);
        return rc;
    }
    return kms_redis_config_open(n->cfg, n->name, n->cluster_key, local, &n->cache); /* takes local */
}

/* SPEC §11: a node applies the newest keystore generation before it
 * reports ready; without Redis it starts on its file and says so. */
static kms_rc sync_at_start(struct node *n)
{
    KMS_GUARD(kms_ksync_new(n->cfg, n->cache, n->cluster_key, &n->ksync));
    int wrote = 0;
    kms_error_clear();
    kms_rc rc = kms_ksync_poll(n->ksync, &wrote);
    struct kms_ksync_status st;
    kms_ksync_status(n->ksync, &st);
    char gen[24];
    (void)snprintf(gen, sizeof(gen), "%llu", (unsigned long long)st.generation);
    if (rc == KMS_ERR_BACKEND_UNAVAILABLE)
        kms_log(KMS_LOG_WARN, "keystore.cluster_unreachable", NULL, "detail", kms_error_detail(), "generation", gen,
                "msg", "Redis is unreachable: starting on the keystore file; the cluster's generation is applied "
                       "when Redis answers",
                NULL);
    else if (rc != KMS_OK)
        kms_log(KMS_LOG_WARN, "keystore.cluster_generation_not_applied", NULL, "detail", kms_error_detail(),
                "generation", gen, "msg", "starting on the keystore file", NULL);
    else
        kms_log(KMS_LOG_INFO, "keystore.cluster_sync", NULL, "generation", gen, "applied", wrote ? "yes" : "no",
                NULL);
    if (wrote)
        kms_ksync_reloaded(n->ksync, KMS_OK, "");
    return KMS_OK;
}

/* The admin listener stays on loopback unless configured otherwise. */
static const char *admin_address(struct node *n)
{
    const char *a = kms_config_str(n->cfg, KMS_CFG_ADMIN_ADDRESS);
    if (a[0] != '\0')
        return a;
    const char *server = kms_config_str(n->cfg, KMS_CFG_SERVER_ADDRESS);
    return strncmp(server, "127.", 4) == 0 ? server : "127.0.0.1";
}

static kms_rc start(struct node *n)
{
    const char *node = kms_config_str(n->cfg, KMS_CFG_NODE_NAME);
    if (node[0] != '\0')
        (void)snprintf(n->name, sizeof(n->name), "%s", node);
    else if (gethostname(n->name, sizeof(n->name) - 1) != 0)
        (void)snprintf(n->name, sizeof(n->name), "kmsd");
    /* why: the cache (Redis) first, so that a node applies the cluster's
     * newest keystore generation before it loads its file and serves */
    KMS_GUARD(open_cache(n));
    if (strcmp(kms_config_str(n->cfg, KMS_CFG_CACHE_TYPE), "distributed") == 0)
        KMS_GUARD(sync_at_start(n));
    KMS_GUARD(load_keystore(n));
    KMS_GUARD(kms_rolemap_parse(kms_config_str(n->cfg, KMS_CFG_AUTH_ROLES), &n->roles));
    KMS_GUARD(kms_audit_open(kms_config_str(n->cfg, KMS_CFG_AUDIT_FILE), n->name,
                             (unsigned)kms_config_int(n->cfg, KMS_CFG_AUDIT_FLUSH_MS), &n->audit));
    KMS_GUARD(open_backend(n));
    KMS_GUARD(kms_hierarchy_new(n->backend, n->cache, kms_config_str(n->cfg, KMS_CFG_HSM_MASTER_KEY), &n->hierarchy));
    struct kms_server_deps d = {
        .address = kms_config_str(n->cfg, KMS_CFG_SERVER_ADDRESS),
        .port = (uint16_t)kms_config_int(n->cfg, KMS_CFG_SERVER_PORT),
        .server_alias = kms_config_str(n->cfg, KMS_CFG_SERVER_KEY_ALIAS),
        .threads = (unsigned)kms_config_int(n->cfg, KMS_CFG_SERVER_THREADS),
        .max_body = (size_t)kms_config_int(n->cfg, KMS_CFG_SERVER_MAX_BODY),
        .conn_timeout_s = (unsigned)kms_config_int(n->cfg, KMS_CFG_SERVER_CONN_TIMEOUT),
        .conn_limit = (unsigned)kms_config_int(n->cfg, KMS_CFG_SERVER_CONN_LIMIT),
        .conn_memory = (size_t)kms_config_int(n->cfg, KMS_CFG_SERVER_CONN_MEMORY),
        .ticket_lifetime_s = (unsigned)kms_config_int(n->cfg, KMS_CFG_TLS_TICKET_LIFETIME),
        .ticket_rotation_s = (unsigned)kms_config_int(n->cfg, KMS_CFG_TLS_TICKET_ROTATION),
        .ticket_secret = n->cluster_key,
        .admin_address = admin_address(n),
        .admin_port = (uint16_t)kms_config_int(n->cfg, KMS_CFG_ADMIN_PORT),
        .node = n->name,
        .master_key = kms_config_str(n->cfg, KMS_CFG_HSM_MASTER_KEY),
        .cache_type = kms_config_str(n->cfg, KMS_CFG_CACHE_TYPE),
        .backend_name = n->backend->ops->name,
        .keystore = n->ks, /* the server takes it (and the CRLs), also on failure */
        .crls = n->crls,
        .roles = n->roles,
        .backend = n->backend,
        .cache = n->cache,
        .hierarchy = n->hierarchy,
        .audit = n->audit,
    };
    n->ks = NULL;
    n->crls = NULL;
    KMS_GUARD(kms_server_start(&d, &n->server));
    if (n->ksync != NULL)
        KMS_GUARD(kms_ksync_listen(n->ksync));
    char port[16], admin[16];
    (void)snprintf(port, sizeof(port), "%u", (unsigned)kms_server_port(n->server));
    (void)snprintf(admin, sizeof(admin), "%u", (unsigned)kms_server_admin_port(n->server));
    kms_log(KMS_LOG_INFO, "server.started", NULL, "address", d.address, "port", port, "node", n->name, "keystore",
            kms_config_str(n->cfg, KMS_CFG_KEYSTORE_FILE), "admin_port", admin, "backend", d.backend_name, "master_key", d.master_key, "cache", d.cache_type,
            NULL);
    return KMS_OK;
}

/* Warns about certificates of the keystore expiring within the configured
 * number of days (SPEC §6 verify; issue: expiry warnings at start and daily). */
static void warn_expiry(struct node *n)
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
static void reload_hsm_identity(struct node *n, const struct kms_keystore *ks)
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
static kms_rc reload(struct node *n, const char *why)
{
    kms_error_clear();
    kms_rc rc = load_keystore(n);
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
        warn_expiry(n);
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
static void reload_config(struct node *n, const char *why)
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
static int watch_files(struct node *n, const char *names[WATCHED])
{
    int fd = inotify_init1(IN_NONBLOCK | IN_CLOEXEC);
    if (fd < 0)
        return -1;
    const char *files[WATCHED] = {kms_config_str(n->cfg, KMS_CFG_KEYSTORE_FILE),
                                  kms_config_str(n->cfg, KMS_CFG_AUTH_CRL_FILE),
                                  n->config_path ? n->config_path : ""};
    for (int i = 0; i < WATCHED; i++) {
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
static int files_changed(int fd, const char *names[WATCHED])
{
    int hit = 0;
    char buf[4096] __attribute__((aligned(__alignof__(struct inotify_event))));
    for (;;) {
        ssize_t len = read(fd, buf, sizeof(buf));
        if (len <= 0)
            return hit;
        for (char *p = buf; p < buf + len;) {
            const struct inotify_event *ev = (const struct inotify_event *)(void *)p;
            for (int i = 0; i < WATCHED; i++)
                if (ev->len > 0 && names[i] != NULL && strcmp(ev->name, names[i]) == 0)
                    hit |= 1 << i;
            p += sizeof(*ev) + ev->len;
        }
    }
}

/* A new cluster keystore generation, written over the file by the sync,
 * swapped in through the ordinary reload. */
static int cluster_keystore(struct node *n, int wfd, const char *names[WATCHED], int *pending, int *pending_config)
{
    int wrote = 0;
    kms_error_clear();
    kms_rc rc = kms_ksync_poll(n->ksync, &wrote);
    if (rc != KMS_OK && rc != KMS_ERR_UNWRAP)
        kms_log(KMS_LOG_DEBUG, "keystore.cluster_check_failed", NULL, "detail", kms_error_detail(), NULL);
    if (!wrote)
        return 0;
    rc = reload(n, "cluster generation");
    char detail[256];
    (void)snprintf(detail, sizeof(detail), "%s", rc == KMS_OK ? "" : kms_error_detail());
    kms_ksync_reloaded(n->ksync, rc, detail);
    if (rc != KMS_OK && reload(n, "previous keystore put back") != KMS_OK)
        kms_log(KMS_LOG_ERROR, "keystore.reload_refused", NULL, "msg", "the previous keystore did not load again", NULL);
    /* why: this write is already loaded; the watcher need not load it again,
     * but a change of another watched file meanwhile still counts */
    int changed = wfd >= 0 ? files_changed(wfd, names) : 0;
    if (changed & ~1) {
        *pending = 2;
        *pending_config |= changed & 4;
    }
    return 1;
}

/* SPEC §9, §11: who this node is and which keystore it holds. */
static kms_rc heartbeat(struct node *n)
{
    struct kms_cluster_node self;
    memset(&self, 0, sizeof(self));
    (void)snprintf(self.name, sizeof(self.name), "%.64s", n->name);
    (void)snprintf(self.version, sizeof(self.version), "%s", kms_version());
    self.interval_s = HEARTBEAT_EVERY_S;
    struct kms_ksync_status st;
    kms_ksync_status(n->ksync, &st);
    self.ks_generation = st.generation;
    memcpy(self.ks_sha256, st.sha256, sizeof(self.ks_sha256));
    memcpy(self.ks_error, st.error, sizeof(self.ks_error));
    self.ks_expiry = (int64_t)kms_server_earliest_expiry(n->server, self.ks_expiry_alias, sizeof(self.ks_expiry_alias));
    return kms_cluster_heartbeat_node(n->cache, &self, HEARTBEAT_TTL_S);
}

static const char *config_path(const char *given)
{
    if (given != NULL)
        return given;
    const char *env = getenv("KMS_CONFIG");
    if (env != NULL && env[0] != '\0')
        return env;
    if (access(DEFAULT_CONFIG, R_OK) == 0)
        return DEFAULT_CONFIG;
    return NULL;
}

int main(int argc, char **argv)
{
    const char *path = NULL;
    int check = 0;
    for (int i = 1; i < argc; i++) {
        if ((strcmp(argv[i], "--config") == 0 || strcmp(argv[i], "-c") == 0) && i + 1 < argc) {
            path = argv[++i];
        } else if (strcmp(argv[i], "--check-config") == 0) {
            check = 1;
        } else if (strcmp(argv[i], "--version") == 0) {
            (void)printf("kmsd %s (build %s)\n", kms_version(), kms_build_id());
            return 0;
        } else if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
            usage(stdout);
            return 0;
        } else {
            (void)fprintf(stderr, "kmsd: unknown argument '%s'\n", argv[i]);
            usage(stderr);
            return 2;
        }
    }

    if (kms_secmem_init(SECURE_HEAP_BYTES) != KMS_OK)
        return fail("startup.secure_heap", KMS_ERR_CRYPTO);
    if (kms_error_detail()[0] != '\0')
        kms_log(KMS_LOG_WARN, "startup.secure_heap", NULL, "detail", kms_error_detail(), NULL);
    (void)signal(SIGPIPE, SIG_IGN);

    struct node n;
    memset(&n, 0, sizeof(n));
    path = config_path(path);
    n.config_path = path;
    kms_rc rc = kms_config_load(path, environ, warn_cb, NULL, &n.cfg);
    if (rc != KMS_OK)
        return fail("config.invalid", rc);
    int lvl = kms_log_level_parse(kms_config_str(n.cfg, KMS_CFG_LOG_LEVEL));
    kms_log_set_level(lvl < 0 ? KMS_LOG_INFO : (enum kms_log_level)lvl);

    if (check) {
        rc = load_keystore(&n);
        if (rc == KMS_OK)
            rc = kms_rolemap_parse(kms_config_str(n.cfg, KMS_CFG_AUTH_ROLES), &n.roles);
        if (rc == KMS_OK)
            rc = kms_backend_check_configured(n.cfg, n.ks);
        if (rc != KMS_OK) {
            (void)fprintf(stderr, "kmsd: configuration %s is NOT valid: %s\n", path ? path : "(defaults)",
                          kms_error_detail());
            node_free(&n);
            return 1;
        }
        kms_config_dump(n.cfg, stdout);
        (void)printf("# configuration %s is valid; keystore %s (%s) has %zu entries\n", path ? path : "(defaults)",
                     kms_keystore_path(n.ks), kms_keystore_format_name(kms_keystore_format(n.ks)),
                     kms_keystore_count(n.ks));
        node_free(&n);
        return 0;
    }

    /* why: block the signals before MHD starts its threads so that only the
     * sigwait loop below ever sees them. */
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGHUP);
    pthread_sigmask(SIG_BLOCK, &set, NULL);

    rc = start(&n);
    if (rc != KMS_OK) {
        int code = fail("startup.failed", rc);
        node_free(&n);
        return code;
    }
    warn_expiry(&n);
    const char *names[WATCHED];
    int wfd = watch_files(&n, names);
    struct timespec tick = {0, 250 * 1000 * 1000};
    time_t next_expiry_check = time(NULL) + 86400;
    int distributed = strcmp(kms_config_str(n.cfg, KMS_CFG_CACHE_TYPE), "distributed") == 0;
    time_t next_heartbeat = 0;
    int pending = 0; /* ticks until a debounced file-change reload */
    int pending_config = 0; /* ... which also reloads kms.properties */
    for (;;) {
        siginfo_t info;
        int sig = sigtimedwait(&set, &info, &tick);
        if (sig == SIGHUP) {
            reload_config(&n, "SIGHUP");
            (void)reload(&n, "SIGHUP");
            continue;
        }
        if (sig == SIGTERM || sig == SIGINT) {
            kms_log(KMS_LOG_INFO, "server.stopping", NULL, "signal", sig == SIGTERM ? "SIGTERM" : "SIGINT", NULL);
            break;
        }
        /* why: wait for writes to settle (keytool rewrites in place) before loading */
        int changed = wfd >= 0 ? files_changed(wfd, names) : 0;
        if (changed != 0) {
            pending = 2;
            pending_config |= changed & 4;
        } else if (pending > 0 && --pending == 0) {
            if (pending_config)
                reload_config(&n, "kms.properties changed");
            pending_config = 0;
            (void)reload(&n, "file changed");
        }
        /* why: a heartbeat right after a swap tells the cluster at once */
        if (n.ksync != NULL && kms_ksync_due(n.ksync) && cluster_keystore(&n, wfd, names, &pending, &pending_config))
            next_heartbeat = 0;
        /* SPEC §9: nodes register a heartbeat in Redis (also what reconnects an idle node) */
        if (distributed && time(NULL) >= next_heartbeat) {
            if (heartbeat(&n) != KMS_OK)
                kms_log(KMS_LOG_DEBUG, "cluster.heartbeat_failed", NULL, "detail", kms_error_detail(), NULL);
            next_heartbeat = time(NULL) + HEARTBEAT_EVERY_S;
        }
        if (time(NULL) >= next_expiry_check) {
            warn_expiry(&n);
            next_expiry_check = time(NULL) + 86400;
        }
    }
    if (wfd >= 0)
        close(wfd);
    node_free(&n);
    kms_log(KMS_LOG_INFO, "server.stopped", NULL, NULL);
    return 0;
}
