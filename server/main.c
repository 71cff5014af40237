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
#include "server/node.h"
#include "server/server.h"

#define SECURE_HEAP_BYTES (4u << 20)
#define DEFAULT_CONFIG "/etc/kmsd/kms.properties"

extern char **environ;

static void usage(FILE *f)
{
    (void)fprintf(f,
                  "usage: kmsd [--config FILE] [--check-config] [--config-doc] [--version]\n"
                  "  --config FILE    kms.properties to load (default: $KMS_CONFIG, else " DEFAULT_CONFIG
                  " if it exists)\n"
                  "  --check-config   validate the configuration and the keystore, print the effective\n"
                  "                   settings (secrets redacted) and exit 0, or exit 1 naming the problem\n"
                  "  --config-doc     print the reference of every property (docs/configuration.md)\n"
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
        } else if (strcmp(argv[i], "--config-doc") == 0) {
            kms_config_doc(stdout);
            return 0;
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

    struct kms_node n;
    memset(&n, 0, sizeof(n));
    path = config_path(path);
    n.config_path = path;
    kms_rc rc = kms_config_load(path, environ, warn_cb, NULL, &n.cfg);
    if (rc != KMS_OK)
        return fail("config.invalid", rc);
    int lvl = kms_log_level_parse(kms_config_str(n.cfg, KMS_CFG_LOG_LEVEL));
    kms_log_set_level(lvl < 0 ? KMS_LOG_INFO : (enum kms_log_level)lvl);

    if (check) {
        rc = kms_node_load_keystore(&n);
        if (rc == KMS_OK)
            rc = kms_rolemap_parse(kms_config_str(n.cfg, KMS_CFG_AUTH_ROLES), &n.roles);
        if (rc == KMS_OK)
            rc = kms_backend_check_configured(n.cfg, n.ks);
        if (rc != KMS_OK) {
            (void)fprintf(stderr, "kmsd: configuration %s is NOT valid: %s\n", path ? path : "(defaults)",
                          kms_error_detail());
            kms_node_free(&n);
            return 1;
        }
        kms_config_dump(n.cfg, stdout);
        if (strcmp(kms_config_str(n.cfg, KMS_CFG_HSM_PROTOCOL), "pkcs11") == 0)
            (void)printf("# pkcs11: module loaded, token found, user logged in, master key '%s' found fit "
                         "(AES-256, sensitive, not extractable)\n",
                         kms_config_str(n.cfg, KMS_CFG_HSM_MASTER_KEY));
        (void)printf("# configuration %s is valid; keystore %s (%s) has %zu entries\n", path ? path : "(defaults)",
                     kms_keystore_path(n.ks), kms_keystore_format_name(kms_keystore_format(n.ks)),
                     kms_keystore_count(n.ks));
        kms_node_free(&n);
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

    rc = kms_node_start(&n);
    if (rc != KMS_OK) {
        int code = fail("startup.failed", rc);
        kms_node_free(&n);
        return code;
    }
    kms_node_warn_expiry(&n);
    const char *names[KMS_NODE_WATCHED];
    int wfd = kms_node_watch_files(&n, names);
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
            kms_node_reload_config(&n, "SIGHUP");
            (void)kms_node_reload(&n, "SIGHUP");
            continue;
        }
        if (sig == SIGTERM || sig == SIGINT) {
            kms_log(KMS_LOG_INFO, "server.stopping", NULL, "signal", sig == SIGTERM ? "SIGTERM" : "SIGINT", NULL);
            break;
        }
        /* why: wait for writes to settle (keytool rewrites in place) before loading */
        int changed = wfd >= 0 ? kms_node_files_changed(wfd, names) : 0;
        if (changed != 0) {
            pending = 2;
            pending_config |= changed & 4;
        } else if (pending > 0 && --pending == 0) {
            if (pending_config)
                kms_node_reload_config(&n, "kms.properties changed");
            pending_config = 0;
            (void)kms_node_reload(&n, "file changed");
        }
        /* why: a heartbeat right after a swap tells the cluster at once */
        if (n.ksync != NULL && kms_ksync_due(n.ksync) && kms_node_cluster_keystore(&n, wfd, names, &pending, &pending_config))
            next_heartbeat = 0;
        /* SPEC §9: nodes register a heartbeat in Redis (also what reconnects an idle node) */
        if (distributed && time(NULL) >= next_heartbeat) {
            if (kms_node_heartbeat(&n) != KMS_OK)
                kms_log(KMS_LOG_DEBUG, "cluster.heartbeat_failed", NULL, "detail", kms_error_detail(), NULL);
            next_heartbeat = time(NULL) + KMS_NODE_HEARTBEAT_EVERY_S;
        }
        if (time(NULL) >= next_expiry_check) {
            kms_node_warn_expiry(&n);
            next_expiry_check = time(NULL) + 86400;
        }
    }
    if (wfd >= 0)
        close(wfd);
    kms_node_free(&n);
    kms_log(KMS_LOG_INFO, "server.stopped", NULL, NULL);
    return 0;
}
