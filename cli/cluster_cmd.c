/* kmsctl cluster (SPEC §11, issue 12): the state of every node of a kmsd
 * cluster, its cluster key, and the publishing half of keystore
 * distribution that `kmsctl keystore … --cluster` uses. Works from any
 * machine with a node's kms.properties, the keystore password and Redis;
 * no kmsd needs to run there. */
#include "cli/kmsctl.h"

#include <errno.h>
#include <jansson.h>
#include <pwd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "cluster/cluster_status.h"
#include "cluster/keystore_dist.h"
#include "cluster/redis_cache.h"
#include "cluster/redis_config.h"
#include "common/base64.h"
#include "common/file.h"
#include "common/hex.h"
#include "common/log.h"
#include "kms/cache.h"
#include "kms/cluster_key.h"
#include "kms/config.h"
#include "kms/keystore_write.h"
#include "kms/ksgen.h"

extern char **environ;

#define NODES_MAX 64
#define WAIT_STEP_US (100 * 1000)

void kmsctl_cluster_usage(FILE *f)
{
    fprintf(f,
            "Usage: kmsctl cluster [--config FILE] COMMAND [OPTIONS]\n\n"
            "The cluster is the one a node's kms.properties names (--config FILE, else $KMS_CONFIG, else\n"
            "/etc/kmsd/kms.properties): its Redis (kms.cache.redis.*), its cluster key and its name.\n\n"
            "Commands:\n"
            "  status [--json]      every node: state, keystore generation and SHA-256, earliest certificate\n"
            "                       expiry, last apply error, version, last heartbeat; exit 1 when a node is\n"
            "                       silent, nodes disagree, or the newest generation is not applied everywhere\n"
            "  key create --out FILE [--from-plain OLD] [--force]\n"
            "                       a new random cluster key (or the base64 key in OLD), sealed under the\n"
            "                       keystore password, written to FILE (mode 0600); point\n"
            "                       kms.cache.cluster.key.file at it on every node\n\n"
            "The keystore password: --password-file FILE, else $KMS_KEYSTORE_PASSWORD, else the config's\n"
            "kms.keystore.password.\n"
            "Keystore changes for the whole cluster: kmsctl keystore COMMAND --cluster (see kmsctl help keystore).\n");
}

static void warn_cb(void *ctx, const char *msg)
{
    (void)ctx;
    fprintf(stderr, "kmsctl: warning: %s\n", msg);
}

static int fail(const char *what, kms_rc rc)
{
    fprintf(stderr, "kmsctl: %s: %s\n", what, kms_error_detail()[0] ? kms_error_detail() : kms_error_message(rc));
    return KMSCTL_EXIT_ERROR;
}

const char *kmsctl_config_path(const char *config)
{
    if (config == NULL || config[0] == '\0')
        config = getenv("KMS_CONFIG");
    return config != NULL && config[0] != '\0' ? config : "/etc/kmsd/kms.properties";
}

int kmsctl_cluster_open(const char *config, const char *password, struct kmsctl_cluster *c)
{
    memset(c, 0, sizeof(*c));
    c->config_path = kmsctl_config_path(config);
    kms_log_set_level(KMS_LOG_ERROR);
    kms_error_clear();
    kms_rc rc = kms_config_load(c->config_path, environ, warn_cb, NULL, &c->cfg);
    if (rc != KMS_OK)
        return fail(c->config_path, rc);
    if (strcmp(kms_config_str(c->cfg, KMS_CFG_CACHE_TYPE), "distributed") != 0) {
        fprintf(stderr, "kmsctl: %s: kms.cache.type is '%s'; a cluster needs kms.cache.type=distributed (its Redis "
                        "carries the keystore generations)\n",
                c->config_path, kms_config_str(c->cfg, KMS_CFG_CACHE_TYPE));
        return KMSCTL_EXIT_ERROR;
    }
    rc = kms_redis_config_cluster_key(c->cfg, password, &c->key);
    if (rc != KMS_OK)
        return fail("cluster key", rc);
    struct kms_cache *local = NULL;
    rc = kms_cache_local_new(1, 0, 0, &local);
    if (rc == KMS_OK)
        rc = kms_redis_config_open(c->cfg, "kmsctl", c->key, local, &c->cache); /* takes local */
    if (rc != KMS_OK)
        return fail("redis", rc);
    rc = kms_ksdist_open(c->cache, &c->dist);
    if (rc != KMS_OK) {
        fprintf(stderr, "kmsctl: Redis is unreachable, nothing was read or published: %s\n", kms_error_detail());
        return KMSCTL_EXIT_ERROR;
    }
    return KMSCTL_EXIT_OK;
}

void kmsctl_cluster_close(struct kmsctl_cluster *c)
{
    kms_ksdist_free(&c->dist);
    kms_cache_free(&c->cache);
    kms_secret_free(&c->key);
    kms_config_free(&c->cfg);
}

int kmsctl_cluster_generation(struct kmsctl_cluster *c, uint64_t gen, struct kms_ksgen_meta *m, uint8_t **ks,
                              size_t *len)
{
    uint8_t *blob = NULL;
    size_t blob_len = 0;
    kms_error_clear();
    kms_rc rc = kms_ksdist_fetch(c->dist, gen, &blob, &blob_len);
    if (rc != KMS_OK)
        return fail("redis", rc);
    enum kms_ksgen_reject why;
    rc = kms_ksgen_open(c->key, kms_config_str(c->cfg, KMS_CFG_CLUSTER_NAME), gen, blob, blob_len, m, ks, len, &why);
    free(blob);
    if (rc != KMS_OK)
        return fail("keystore generation", rc);
    return KMSCTL_EXIT_OK;
}

int kmsctl_cluster_current(struct kmsctl_cluster *c, uint64_t *head, uint8_t **ks, size_t *len)
{
    *ks = NULL;
    *len = 0;
    kms_error_clear();
    kms_rc rc = kms_ksdist_head(c->dist, head);
    if (rc != KMS_OK)
        return fail("redis", rc);
    if (*head > 0) {
        struct kms_ksgen_meta m;
        int code = kmsctl_cluster_generation(c, *head, &m, ks, len);
        if (code != KMSCTL_EXIT_OK)
            fprintf(stderr, "kmsctl: the newest generation (%llu) cannot be edited; nodes refuse it too. Find a good one "
                            "with 'kmsctl keystore history --cluster' and republish it with 'kmsctl keystore restore "
                            "--cluster GEN'\n",
                    (unsigned long long)*head);
        return code;
    }
    const char *file = kms_config_str(c->cfg, KMS_CFG_KEYSTORE_FILE);
    rc = kms_file_read(file, KMS_FILE_MAX, "the keystore", ks, len, NULL);
    if (rc != KMS_OK) {
        fprintf(stderr, "kmsctl: nothing published yet, and the seed keystore (kms.keystore.file = %s) cannot be "
                        "read: %s\n",
                file, kms_error_detail());
        return KMSCTL_EXIT_ERROR;
    }
    return KMSCTL_EXIT_OK;
}

/* user@host of whoever runs this (sudo's user when there is one). */
static void who_am_i(char *out, size_t cap)
{
    const char *user = getenv("SUDO_USER");
    struct passwd *pw = user == NULL ? getpwuid(getuid()) : NULL;
    if (user == NULL)
        user = pw != NULL ? pw->pw_name : "unknown";
    char host[256] = "unknown";
    if (gethostname(host, sizeof(host) - 1) != 0)
        (void)snprintf(host, sizeof(host), "unknown");
    host[sizeof(host) - 1] = '\0';
    (void)snprintf(out, cap, "%.60s@%.60s", user, host);
}

static int fetch_nodes(struct kmsctl_cluster *c, struct kms_cluster_node *nodes, size_t *n)
{
    kms_error_clear();
    kms_rc rc = kms_cluster_nodes(c->cache, nodes, NODES_MAX, n);
    return rc == KMS_OK ? KMSCTL_EXIT_OK : fail("redis (node heartbeats)", rc);
}

/* Waits until every live node reports gen (or wait_s passes). */
static int wait_converged(struct kmsctl_cluster *c, uint64_t gen, unsigned wait_s)
{
    struct timespec t0, t;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    struct kms_cluster_node *nodes = calloc(NODES_MAX, sizeof(*nodes));
    enum kms_node_state states[NODES_MAX];
    if (nodes == NULL)
        return KMSCTL_EXIT_ERROR;
    size_t n = 0, behind = 0;
    double elapsed = 0;
    for (;;) {
        behind = 0;
        n = 0;
        if (fetch_nodes(c, nodes, &n) == KMSCTL_EXIT_OK) {
            struct kms_cluster_verdict v;
            kms_cluster_assess(nodes, n, (int64_t)time(NULL), states, &v);
            for (size_t i = 0; i < n; i++)
                if (states[i] != KMS_NODE_SILENT && nodes[i].ks_generation < gen)
                    behind++;
        }
        clock_gettime(CLOCK_MONOTONIC, &t);
        elapsed = (double)(t.tv_sec - t0.tv_sec) + (double)(t.tv_nsec - t0.tv_nsec) / 1e9;
        if ((n > 0 && behind == 0) || elapsed >= (double)wait_s)
            break;
        (void)usleep(WAIT_STEP_US);
    }
    int rc = KMSCTL_EXIT_OK;
    if (n > 0 && behind == 0) {
        printf("Converged: every live node (%zu) holds generation %llu after %.2f s\n", n, (unsigned long long)gen,
               elapsed);
    } else {
        fprintf(stderr, "kmsctl: after %u s, %zu of %zu live nodes do not hold generation %llu yet:", wait_s, behind,
                n, (unsigned long long)gen);
        for (size_t i = 0; i < n; i++)
            if (nodes[i].ks_generation < gen)
                fprintf(stderr, " %s (generation %llu%s%s)", nodes[i].name, (unsigned long long)nodes[i].ks_generation,
                        nodes[i].ks_error[0] ? ": " : "", nodes[i].ks_error);
        fprintf(stderr, "\n");
        rc = KMSCTL_EXIT_ERROR;
    }
    free(nodes);
    return rc;
}

int kmsctl_cluster_publish(struct kmsctl_cluster *c, uint64_t base, const uint8_t *ks, size_t len,
                           const char *password, const char *edit, unsigned wait_s)
{
    kms_error_clear();
    struct kms_keystore *chk = NULL;
    kms_rc rc = kms_ksgen_check(ks, len, "the new cluster keystore", password,
                                kms_config_str(c->cfg, KMS_CFG_SERVER_KEY_ALIAS),
                                kms_config_str(c->cfg, KMS_CFG_KEYSTORE_ALIAS), &chk);
    if (rc != KMS_OK) {
        fprintf(stderr, "kmsctl: refused, nothing was published: a node would not load it: %s\n",
                kms_error_detail());
        return KMSCTL_EXIT_ERROR;
    }
    struct kms_ksgen_meta m;
    memset(&m, 0, sizeof(m));
    m.format = kms_keystore_format(chk);
    kms_keystore_free(&chk);
    m.time = (int64_t)time(NULL);
    who_am_i(m.who, sizeof(m.who));
    (void)snprintf(m.edit, sizeof(m.edit), "%s", edit);
    /* why: after Redis lost its data, a new number must still be above what the nodes hold */
    struct kms_cluster_node *nodes = calloc(NODES_MAX, sizeof(*nodes));
    size_t n = 0;
    uint64_t floor = base;
    if (nodes != NULL && fetch_nodes(c, nodes, &n) == KMSCTL_EXIT_OK)
        for (size_t i = 0; i < n; i++)
            if (nodes[i].ks_generation > floor)
                floor = nodes[i].ks_generation;
    free(nodes);
    rc = kms_ksdist_reserve(c->dist, floor, &m.generation);
    if (rc != KMS_OK)
        return fail("redis (reserving a generation)", rc);
    uint8_t *blob = NULL;
    size_t blob_len = 0;
    rc = kms_ksgen_seal(c->key, kms_config_str(c->cfg, KMS_CFG_CLUSTER_NAME), &m, ks, len, &blob, &blob_len);
    if (rc != KMS_OK)
        return fail("sealing", rc);
    rc = kms_ksdist_publish(c->dist, base, m.generation, blob, blob_len,
                            (unsigned)kms_config_int(c->cfg, KMS_CFG_CLUSTER_KEYSTORE_KEEP));
    free(blob);
    if (rc != KMS_OK)
        return fail("publish", rc);
    char sha[65];
    kms_hex_sha256(ks, len, sha);
    printf("Published keystore generation %llu of cluster '%s' (%s, %zu bytes, sha256 %s): %s\n",
           (unsigned long long)m.generation, kms_config_str(c->cfg, KMS_CFG_CLUSTER_NAME),
           kms_keystore_format_name(m.format), len, sha, edit);
    if (wait_s > 0)
        return wait_converged(c, m.generation, wait_s);
    return KMSCTL_EXIT_OK;
}

/* ---- status ------------------------------------------------------------ */

static void iso(int64_t t, char out[32])
{
    if (t <= 0) {
        (void)snprintf(out, 32, "-");
        return;
    }
    struct tm tm;
    time_t tt = (time_t)t;
    gmtime_r(&tt, &tm);
    strftime(out, 32, "%Y-%m-%dT%H:%M:%SZ", &tm);
}

static int cmd_status(struct kmsctl_cluster *c, int json)
{
    uint64_t head = 0;
    kms_error_clear();
    kms_rc rc = kms_ksdist_head(c->dist, &head);
    if (rc != KMS_OK)
        return fail("redis", rc);
    struct kms_cluster_node *nodes = calloc(NODES_MAX, sizeof(*nodes));
    enum kms_node_state states[NODES_MAX];
    size_t n = 0;
    if (nodes == NULL)
        return KMSCTL_EXIT_ERROR;
    int code = fetch_nodes(c, nodes, &n);
    if (code != KMSCTL_EXIT_OK) {
        free(nodes);
        return code;
    }
    int64_t now = (int64_t)time(NULL);
    struct kms_cluster_verdict v;
    kms_cluster_assess(nodes, n, now, states, &v);
    size_t behind = 0;
    for (size_t i = 0; i < n; i++)
        if (states[i] != KMS_NODE_SILENT && head > 0 && nodes[i].ks_generation != head)
            behind++;
    int healthy = v.healthy && behind == 0;
    if (json) {
        json_t *arr = json_array();
        for (size_t i = 0; i < n; i++) {
            char seen[32], exp[32];
            iso(nodes[i].last_seen, seen);
            iso(nodes[i].ks_expiry, exp);
            json_array_append_new(
                arr, json_pack("{s:s, s:s, s:s, s:I, s:s, s:s, s:s, s:s, s:s, s:I}", "name", nodes[i].name, "state",
                               kms_node_state_name(states[i]), "version", nodes[i].version, "keystore_generation",
                               (json_int_t)nodes[i].ks_generation, "keystore_sha256", nodes[i].ks_sha256,
                               "earliest_expiry", exp, "earliest_expiry_alias", nodes[i].ks_expiry_alias,
                               "last_error", nodes[i].ks_error, "last_seen", seen, "seconds_since_seen",
                               (json_int_t)(now - nodes[i].last_seen)));
        }
        json_t *j = json_pack("{s:s, s:I, s:I, s:s, s:b, s:o}", "cluster", kms_config_str(c->cfg, KMS_CFG_CLUSTER_NAME),
                              "published_generation", (json_int_t)head, "majority_generation",
                              (json_int_t)v.generation, "majority_sha256", v.sha256, "healthy", healthy, "nodes", arr);
        char *s = j ? json_dumps(j, JSON_INDENT(2) | JSON_SORT_KEYS) : NULL;
        if (s != NULL)
            printf("%s\n", s);
        json_decref(j);
        json_malloc_t jm;
        json_free_t jf;
        json_get_alloc_funcs(&jm, &jf);
        jf(s);
    } else {
        printf("cluster %s: published keystore generation %llu; %zu node%s\n\n",
               kms_config_str(c->cfg, KMS_CFG_CLUSTER_NAME), (unsigned long long)head, n, n == 1 ? "" : "s");
        printf("%-16s %-9s %5s  %-16s  %-20s %-16s %-8s %-12s %s\n", "NODE", "STATE", "GEN", "SHA256", "EARLIEST EXPIRY",
               "ALIAS", "SEEN", "VERSION", "LAST ERROR");
        for (size_t i = 0; i < n; i++) {
            char exp[32], seen[24];
            iso(nodes[i].ks_expiry, exp);
            (void)snprintf(seen, sizeof(seen), "%llds ago", (long long)(now - nodes[i].last_seen));
            const char *state = kms_node_state_name(states[i]);
            if (states[i] == KMS_NODE_OK && head > 0 && nodes[i].ks_generation != head)
                state = "behind";
            printf("%-16s %-9s %5llu  %-16.16s  %-20s %-16.16s %-8s %-12s %s\n", nodes[i].name, state,
                   (unsigned long long)nodes[i].ks_generation, nodes[i].ks_sha256[0] ? nodes[i].ks_sha256 : "-",
                   exp, nodes[i].ks_expiry_alias[0] ? nodes[i].ks_expiry_alias : "-", seen, nodes[i].version,
                   nodes[i].ks_error[0] ? nodes[i].ks_error : "-");
        }
        printf("\n");
        if (n == 0)
            printf("UNHEALTHY: no node has sent a heartbeat\n");
        else if (healthy)
            printf("OK: every node holds generation %llu (sha256 %.16s…)\n", (unsigned long long)v.generation,
                   v.sha256);
        else {
            printf("UNHEALTHY:");
            for (size_t i = 0; i < n; i++) {
                if (states[i] == KMS_NODE_SILENT)
                    printf(" %s is silent (no heartbeat for %llds);", nodes[i].name,
                           (long long)(now - nodes[i].last_seen));
                else if (states[i] == KMS_NODE_DIVERGED)
                    printf(" %s holds another keystore (generation %llu, sha256 %.16s…) than the others;",
                           nodes[i].name, (unsigned long long)nodes[i].ks_generation, nodes[i].ks_sha256);
                else if (head > 0 && nodes[i].ks_generation != head)
                    printf(" %s has not applied generation %llu;", nodes[i].name, (unsigned long long)head);
            }
            printf("\n");
        }
    }
    free(nodes);
    return healthy ? KMSCTL_EXIT_OK : KMSCTL_EXIT_ERROR;
}

/* ---- key create ------------------------------------------------------------ */

int kmsctl_sealed_key_create(const char *kind, const char *config, const char *password, const char *out,
                             const char *from_plain, int force)
{
    int audit = strcmp(kind, "audit") == 0;
    if (out == NULL) {
        fprintf(stderr, "kmsctl %s key create: --out FILE is required\n", kind);
        return KMSCTL_EXIT_USAGE;
    }
    if (!force && access(out, F_OK) == 0) {
        fprintf(stderr, "kmsctl: %s exists; a new %s key there would %s (use --force to replace it)\n", out, kind,
                audit ? "leave the audit trail's checkpoints so far unverifiable with it"
                      : "cut its nodes off the cluster");
        return KMSCTL_EXIT_ERROR;
    }
    struct kms_config *cfg = NULL;
    const char *pw = password;
    if (pw == NULL) {
        const char *path = kmsctl_config_path(config);
        kms_rc rc = kms_config_load(path, environ, warn_cb, NULL, &cfg);
        if (rc != KMS_OK)
            return fail(path, rc);
        pw = kms_config_secret(cfg, KMS_CFG_KEYSTORE_PASSWORD);
        if (pw == NULL || pw[0] == '\0') {
            fprintf(stderr, "kmsctl: %s has no kms.keystore.password: give --password-file\n", path);
            kms_config_free(&cfg);
            return KMSCTL_EXIT_ERROR;
        }
    }
    struct kms_secret *key = NULL;
    kms_rc rc;
    if (from_plain != NULL) {
        struct kms_secret *text = NULL;
        size_t n = 0;
        rc = kms_file_read_secret(from_plain, 256, "the key file", &text);
        if (rc == KMS_OK)
            rc = kms_secret_new(64, &key);
        if (rc == KMS_OK) {
            const char *t = (const char *)kms_secret_cdata(text);
            size_t len = kms_secret_len(text);
            while (len > 0 && (t[len - 1] == '\n' || t[len - 1] == '\r' || t[len - 1] == ' '))
                len--;
            rc = kms_b64_decode(t, len, kms_secret_data(key), 64, &n);
            if (rc != KMS_OK || n != KMS_CLUSTER_KEY_BYTES)
                rc = kms_fail(KMS_ERR_CONFIG, "%s is not base64 of %d bytes", from_plain, KMS_CLUSTER_KEY_BYTES);
            else
                kms_secret_truncate(key, n);
        }
        kms_secret_free(&text);
    } else {
        rc = kms_secret_random(KMS_CLUSTER_KEY_BYTES, &key);
    }
    char *line = NULL;
    if (rc == KMS_OK)
        rc = kms_cluster_key_seal(key, pw, KMS_CLUSTER_KEY_ITERATIONS, &line);
    kms_secret_free(&key);
    kms_config_free(&cfg);
    if (rc == KMS_OK)
        rc = kms_file_write_atomic(out, (const uint8_t *)line, strlen(line), 0600, NULL);
    free(line);
    if (rc != KMS_OK)
        return fail(out, rc);
    printf("Wrote %s: a%s key sealed under the keystore password (mode 0600). Give every node this file as "
           "%s.\n",
           out, audit ? "n audit" : " cluster", audit ? "kms.audit.key.file" : "kms.cache.cluster.key.file");
    return KMSCTL_EXIT_OK;
}

int kmsctl_cluster_main(int argc, char **argv)
{
    const char *config = NULL, *out = NULL, *from_plain = NULL;
    struct kmsctl_password_source src = {0};
    int json = 0, force = 0;
    const char *words[3] = {NULL, NULL, NULL};
    int nwords = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        int more = i + 1 < argc;
        if (strcmp(a, "--config") == 0 && more)
            config = argv[++i];
        else if (strcmp(a, "--password-file") == 0 && more)
            src.file = argv[++i];
        else if (strcmp(a, "--out") == 0 && more)
            out = argv[++i];
        else if (strcmp(a, "--from-plain") == 0 && more)
            from_plain = argv[++i];
        else if (strcmp(a, "--json") == 0)
            json = 1;
        else if (strcmp(a, "--force") == 0)
            force = 1;
        else if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
            kmsctl_cluster_usage(stdout);
            return KMSCTL_EXIT_OK;
        } else if (a[0] != '-' && nwords < 3)
            words[nwords++] = a;
        else {
            fprintf(stderr, "kmsctl cluster: unknown or incomplete option '%s'\n\n", a);
            kmsctl_cluster_usage(stderr);
            return KMSCTL_EXIT_USAGE;
        }
    }
    char *pw = NULL;
    int code;
    if ((src.file != NULL || getenv("KMS_KEYSTORE_PASSWORD") != NULL) &&
        (code = kmsctl_password_get(&src, &pw)) != KMSCTL_EXIT_OK)
        return code;
    if (nwords == 1 && strcmp(words[0], "status") == 0) {
        struct kmsctl_cluster c;
        code = kmsctl_cluster_open(config, pw, &c);
        if (code == KMSCTL_EXIT_OK)
            code = cmd_status(&c, json);
        kmsctl_cluster_close(&c);
    } else if (nwords == 2 && strcmp(words[0], "key") == 0 && strcmp(words[1], "create") == 0) {
        code = kmsctl_sealed_key_create("cluster", config, pw, out, from_plain, force);
    } else {
        fprintf(stderr, "kmsctl cluster: expected 'status' or 'key create'\n\n");
        kmsctl_cluster_usage(stderr);
        code = KMSCTL_EXIT_USAGE;
    }
    kmsctl_password_free(&pw);
    return code;
}
