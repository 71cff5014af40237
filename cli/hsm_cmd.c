/* kmsctl hsm: check and manage the master-key backend that kms.properties
 * names (KMIP HSM, Vault Transit, a PKCS#11 token, or the soft development
 * backend), so that setting up a site needs no other KMIP, Vault or PKCS#11
 * tool. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cli/kmsctl.h"
#include "cluster/redis_cache.h"
#include "cluster/redis_config.h"
#include "common/log.h"
#include "hsm/kmip/kmip_backend.h"
#include "hsm/pkcs11/pkcs11_backend.h"
#include "hsm/soft/soft.h"
#include "hsm/vault/vault_backend.h"
#include "kms/backend_select.h"
#include "kms/cache.h"
#include "kms/config.h"
#include "kms/keystore.h"

extern char **environ;

/* why: a rotation that happened but did not reach the cluster cache needs
 * the operator, and scripts must tell it from a failed rotation (1) */
#define EXIT_NOT_INVALIDATED 3

void kmsctl_hsm_usage(FILE *f)
{
    fprintf(f,
            "Usage: kmsctl hsm [--config FILE] COMMAND [ARGS]\n\n"
            "The backend, the HSM address and kmsd's identity toward it come from kms.properties\n"
            "(--config FILE, else $KMS_CONFIG, else /etc/kmsd/kms.properties).\n\n"
            "Commands:\n"
            "  status             reach the backend: KMIP versions and server information, Vault health\n"
            "                     and token state, or the PKCS#11 module, token and sessions; exit 1 when it\n"
            "                     cannot be reached\n"
            "  create-key NAME    create an AES-256 master key NAME (KMIP: Create + Activate, prints the UID;\n"
            "                     PKCS#11: a token object labelled NAME, sensitive, never extractable)\n"
            "  show NAME|UID      master key metadata (state, algorithm, versions; PKCS#11: every version's\n"
            "                     attributes) - never key material\n"
            "  locate NAME        KMIP: the unique identifiers carrying Name NAME; PKCS#11: the objects\n"
            "                     labelled NAME (version, CKA_ID, handle)\n"
            "  rotate NAME        Vault, soft, PKCS#11: add a new version of NAME (old wrapped keys keep\n"
            "                     unwrapping);\n"
            "                     with kms.cache.type=distributed also invalidates the cluster cache (Redis\n"
            "                     generation +1, as POST /v1/cluster/cache/invalidate); exit 3 when the key\n"
            "                     was rotated but Redis could not be told\n");
}

static void warn_cb(void *ctx, const char *msg)
{
    (void)ctx;
    fprintf(stderr, "kmsctl: warning: %s\n", msg);
}

static int fail(const char *what, kms_rc rc)
{
    fprintf(stderr, "kmsctl hsm: %s: %s (%s)\n", what, kms_error_detail()[0] ? kms_error_detail() : kms_error_message(rc),
            kms_error_code(rc));
    return KMSCTL_EXIT_ERROR;
}

static int pkcs11_status(struct kms_backend *b)
{
    struct kms_pkcs11_info in;
    kms_rc rc = kms_pkcs11_info(b, &in);
    if (rc != KMS_OK)
        return fail("status", rc);
    printf("module:    %s (%s, Cryptoki %u.%u)\n", in.library, in.module_description, in.cryptoki_major,
           in.cryptoki_minor);
    printf("token:     '%s' in slot %lu: %s %s, serial %s\n", in.label, in.slot, in.manufacturer, in.model, in.serial);
    rc = b->ops->probe(b);
    printf("sessions:  %u open of %u, logged in %s\n", in.sessions_open, in.sessions, rc == KMS_OK ? "yes" : "no");
    if (rc != KMS_OK)
        return fail("probe", rc);
    printf("status:    ok\n");
    return KMSCTL_EXIT_OK;
}

static const char *yes_no(int flag) { return flag == 1 ? "yes" : flag == 0 ? "no" : "unknown"; }

/* Every version of a PKCS#11 master key, with the attributes that make it
 * one (what pkcs11-tool --list-objects would show of it). */
static int pkcs11_show(struct kms_backend *b, const char *name, int brief)
{
    struct kms_pkcs11_key keys[64];
    size_t n = 0;
    kms_rc rc = kms_pkcs11_key_versions(b, name, keys, KMS_ARRAY_LEN(keys), &n);
    if (rc != KMS_OK)
        return fail(brief ? "locate" : "show", rc);
    if (n == 0) {
        fprintf(stderr, "kmsctl hsm: no key labelled '%s' on the token\n", name);
        return KMSCTL_EXIT_ERROR;
    }
    if (!brief)
        printf("name:      %s\nbackend:   pkcs11\nversions:  %zu (current %u)\n", name, n, keys[n - 1].version);
    for (size_t i = 0; i < n && i < KMS_ARRAY_LEN(keys); i++) {
        const struct kms_pkcs11_key *k = &keys[i];
        if (brief) {
            printf("version %u  CKA_ID %s  handle %lu\n", k->version, k->id_hex[0] ? k->id_hex : "(none)", k->handle);
            continue;
        }
        printf("version %u:\n  CKA_ID %s, handle %lu\n  CKA_KEY_TYPE %s, CKA_VALUE_LEN %ld\n", k->version,
               k->id_hex[0] ? k->id_hex : "(none)", k->handle, k->aes == 1 ? "AES" : "not AES", k->value_len);
        printf("  CKA_TOKEN %s, CKA_PRIVATE %s, CKA_SENSITIVE %s, CKA_EXTRACTABLE %s\n", yes_no(k->token),
               yes_no(k->private_), yes_no(k->sensitive), yes_no(k->extractable));
        printf("  CKA_ALWAYS_SENSITIVE %s, CKA_NEVER_EXTRACTABLE %s\n", yes_no(k->always_sensitive),
               yes_no(k->never_extractable));
        printf("  CKA_ENCRYPT %s, CKA_DECRYPT %s, CKA_WRAP %s, CKA_UNWRAP %s\n", yes_no(k->encrypt), yes_no(k->decrypt),
               yes_no(k->wrap), yes_no(k->unwrap));
    }
    return KMSCTL_EXIT_OK;
}

static int status(struct kms_backend *b)
{
    printf("backend:   %s\n", b->ops->name);
    if (b->ops->kind == KMS_BACKEND_KMIP) {
        struct kms_kmip_client *c = kms_kmip_backend_client(b);
        struct kms_kmip_version v[16];
        size_t n = 0;
        printf("endpoint:  %s\n", kms_kmip_client_endpoint(c));
        kms_rc rc = kms_kmip_discover(c, v, KMS_ARRAY_LEN(v), &n);
        if (rc != KMS_OK)
            return fail("DiscoverVersions", rc);
        printf("versions: ");
        for (size_t i = 0; i < n; i++)
            printf(" %d.%d", v[i].major, v[i].minor);
        struct kms_kmip_version nv;
        if (kms_kmip_client_version(c, &nv) == KMS_OK)
            printf("   (kmsd speaks %d.%d)", nv.major, nv.minor);
        printf("\n");
        struct kms_kmip_server_info *info = calloc(1, sizeof(*info));
        if (info == NULL)
            return fail("Query", KMS_ERR_NO_MEMORY);
        rc = kms_kmip_query(c, info);
        if (rc != KMS_OK) {
            free(info);
            return fail("Query", rc);
        }
        printf("vendor:    %s\n", info->vendor[0] ? info->vendor : "(not given)");
        printf("operations:");
        for (size_t i = 0; i < info->n_operations; i++)
            printf(" %s", kms_kmip_operation_name(info->operations[i]));
        printf("\nobjects:   ");
        for (size_t i = 0; i < info->n_objects; i++)
            printf(" %s", kms_kmip_object_type_name(info->objects[i]));
        printf("\n");
        free(info);
        return KMSCTL_EXIT_OK;
    }
    if (b->ops->kind == KMS_BACKEND_VAULT) {
        struct kms_vault_status st;
        kms_rc rc = kms_vault_status(b, &st);
        printf("address:   %s\n", st.address);
        if (rc != KMS_OK)
            return fail("sys/health", rc);
        printf("health:    HTTP %ld, initialized %s, sealed %s, standby %s, version %s\n", st.health.status,
               st.health.initialized ? "yes" : "no", st.health.sealed ? "yes" : "no",
               st.health.standby ? "yes" : "no", st.health.version);
        printf("token:     %s, %s, ttl %lld s, %lu renewals, %lu logins\n", st.auth.valid ? "valid" : "NOT valid",
               st.auth.renewable ? "renewable" : "not renewable", st.auth.ttl, st.auth.renewals, st.auth.logins);
        return st.health.sealed || !st.auth.valid ? KMSCTL_EXIT_ERROR : KMSCTL_EXIT_OK;
    }
    if (b->ops->kind == KMS_BACKEND_PKCS11)
        return pkcs11_status(b);
    kms_rc rc = b->ops->probe(b);
    if (rc != KMS_OK)
        return fail("probe", rc);
    printf("status:    ok (soft backend: master keys in a sealed file, NOT an HSM)\n");
    return KMSCTL_EXIT_OK;
}

static int create_key(struct kms_backend *b, const char *name)
{
    kms_rc rc;
    if (b->ops->kind == KMS_BACKEND_KMIP) {
        char uid[KMS_KMIP_UID_MAX + 1] = "";
        rc = kms_kmip_create_key(kms_kmip_backend_client(b), name, uid);
        if (rc != KMS_OK)
            return fail("Create", rc);
        printf("created AES-256 key '%s': unique identifier %s (Active)\n", name, uid);
        return KMSCTL_EXIT_OK;
    }
    rc = b->ops->kind == KMS_BACKEND_VAULT    ? kms_vault_create_key(b, name)
         : b->ops->kind == KMS_BACKEND_PKCS11 ? kms_pkcs11_create_key(b, name)
                                              : kms_soft_create_key(b, name);
    if (rc != KMS_OK)
        return fail("create-key", rc);
    printf("created master key '%s' (version 1)\n", name);
    return KMSCTL_EXIT_OK;
}

static int show(struct kms_backend *b, const char *name)
{
    if (b->ops->kind == KMS_BACKEND_PKCS11)
        return pkcs11_show(b, name, 0);
    struct kms_key_info info;
    memset(&info, 0, sizeof(info));
    kms_rc rc = b->ops->describe(b, name, &info);
    if (rc != KMS_OK)
        return fail("show", rc);
    char created[32] = "unknown";
    if (info.created > 0) {
        time_t t = (time_t)info.created;
        struct tm tm;
        gmtime_r(&t, &tm);
        strftime(created, sizeof(created), "%Y-%m-%dT%H:%M:%SZ", &tm);
    }
    printf("name:      %s\nbackend:   %s\nstate:     %s\nalgorithm: %s\nversions:  current %u, oldest "
           "decryptable %u\ncreated:   %s\n",
           info.name, info.backend ? info.backend : b->ops->name, info.state, info.algorithm, info.current_version,
           info.min_version, created);
    return KMSCTL_EXIT_OK;
}

static int locate(struct kms_backend *b, const char *name)
{
    if (b->ops->kind == KMS_BACKEND_PKCS11)
        return pkcs11_show(b, name, 1);
    if (b->ops->kind != KMS_BACKEND_KMIP) {
        fprintf(stderr, "kmsctl hsm: locate is a KMIP operation; this node's backend is %s\n", b->ops->name);
        return KMSCTL_EXIT_USAGE;
    }
    char uids[32][KMS_KMIP_UID_MAX + 1];
    size_t found = 0;
    kms_rc rc = kms_kmip_locate(kms_kmip_backend_client(b), name, uids, KMS_ARRAY_LEN(uids), &found);
    if (rc != KMS_OK)
        return fail("Locate", rc);
    for (size_t i = 0; i < found && i < KMS_ARRAY_LEN(uids); i++)
        printf("%s\n", uids[i]);
    if (found == 0)
        fprintf(stderr, "kmsctl hsm: no key named '%s'\n", name);
    return found ? KMSCTL_EXIT_OK : KMSCTL_EXIT_ERROR;
}

static int rotate(struct kms_backend *b, const char *name)
{
    kms_rc rc;
    uint32_t version = 0;
    if (b->ops->kind == KMS_BACKEND_KMIP) {
        fprintf(stderr, "kmsctl hsm: KMIP keys have no versions: create a new key (kmsctl hsm create-key NEW), set "
                        "kms.hsm.master.key=NEW on every node, then rewrap (POST /v1/keys/NEW/rewrap); keys "
                        "wrapped under the old key keep unwrapping while it exists\n");
        return KMSCTL_EXIT_USAGE;
    }
    if (b->ops->kind == KMS_BACKEND_VAULT) {
        rc = kms_vault_rotate_key(b, name, &version);
    } else if (b->ops->kind == KMS_BACKEND_PKCS11) {
        rc = kms_pkcs11_rotate(b, name, &version);
    } else {
        rc = kms_soft_rotate(b, name);
        struct kms_master_ref ref;
        if (rc == KMS_OK && b->ops->resolve(b, name, &ref) == KMS_OK)
            version = ref.version;
    }
    if (rc != KMS_OK)
        return fail("rotate", rc);
    printf("rotated '%s': new version %u; older versions keep unwrapping\n", name, version);
    return KMSCTL_EXIT_OK;
}

/* SPEC §9: after a rotation every node drops its cached customer keys. The
 * same Redis, TLS and Sentinel settings as kmsd; INCR of the generation. */
static int invalidate_cluster(const struct kms_config *cfg)
{
    struct kms_cache *local = NULL, *c = NULL;
    kms_rc rc = kms_cache_local_new(1, 0, 0, &local);
    if (rc == KMS_OK)
        rc = kms_redis_config_open(cfg, "kmsctl", NULL, local, &c); /* takes local */
    if (rc == KMS_OK)
        rc = kms_cache_redis_invalidate_all(c);
    struct kms_redis_state st;
    kms_cache_redis_state(c, &st);
    kms_cache_free(&c);
    if (rc != KMS_OK) {
        fprintf(stderr,
                "kmsctl hsm: the master key WAS rotated, but the cluster cache was NOT invalidated: %s (%s).\n"
                "Nodes keep serving customer keys they cached until kms.cache.ttl; once Redis is reachable, call "
                "POST /v1/cluster/cache/invalidate on any node (cmxAdmin client certificate).\n",
                kms_error_detail()[0] ? kms_error_detail() : kms_error_message(rc), kms_error_code(rc));
        return EXIT_NOT_INVALIDATED;
    }
    printf("cluster cache invalidated through Redis: generation %llu; every node drops its cached keys within "
           "about a second\n",
           (unsigned long long)st.generation);
    return KMSCTL_EXIT_OK;
}

int kmsctl_hsm_main(int argc, char **argv)
{
    const char *config = getenv("KMS_CONFIG");
    int i = 1;
    for (; i < argc && argv[i][0] == '-'; i++) {
        if (strcmp(argv[i], "--config") == 0 && i + 1 < argc) {
            config = argv[++i];
        } else if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
            kmsctl_hsm_usage(stdout);
            return KMSCTL_EXIT_OK;
        } else {
            fprintf(stderr, "kmsctl hsm: unknown option '%s'\n", argv[i]);
            kmsctl_hsm_usage(stderr);
            return KMSCTL_EXIT_USAGE;
        }
    }
    if (i >= argc) {
        kmsctl_hsm_usage(stderr);
        return KMSCTL_EXIT_USAGE;
    }
    const char *cmd = argv[i];
    const char *arg = i + 1 < argc ? argv[i + 1] : NULL;
    int needs_arg = strcmp(cmd, "status") != 0;
    if ((needs_arg && arg == NULL) || i + 1 + needs_arg != argc) {
        fprintf(stderr, "kmsctl hsm: wrong arguments for '%s'\n", cmd);
        kmsctl_hsm_usage(stderr);
        return KMSCTL_EXIT_USAGE;
    }
    if (config == NULL || config[0] == '\0')
        config = "/etc/kmsd/kms.properties";
    kms_log_set_level(KMS_LOG_WARN);

    struct kms_config *cfg = NULL;
    struct kms_keystore *ks = NULL;
    struct kms_backend *b = NULL;
    int code;
    kms_rc rc = kms_config_load(config, environ, warn_cb, NULL, &cfg);
    if (rc != KMS_OK) {
        code = fail(config, rc);
        goto out;
    }
    rc = kms_keystore_load(kms_config_str(cfg, KMS_CFG_KEYSTORE_FILE),
                           kms_config_secret(cfg, KMS_CFG_KEYSTORE_PASSWORD), &ks);
    if (rc != KMS_OK) {
        code = fail("keystore", rc);
        goto out;
    }
    rc = kms_backend_open_for_admin(cfg, ks, &b);
    if (rc != KMS_OK) {
        code = fail("cannot open the backend", rc);
        goto out;
    }
    if (strcmp(cmd, "status") == 0)
        code = status(b);
    else if (strcmp(cmd, "create-key") == 0)
        code = create_key(b, arg);
    else if (strcmp(cmd, "show") == 0)
        code = show(b, arg);
    else if (strcmp(cmd, "locate") == 0)
        code = locate(b, arg);
    else if (strcmp(cmd, "rotate") == 0) {
        code = rotate(b, arg);
        if (code == KMSCTL_EXIT_OK && strcmp(kms_config_str(cfg, KMS_CFG_CACHE_TYPE), "distributed") == 0)
            code = invalidate_cluster(cfg);
    }
    else {
        fprintf(stderr, "kmsctl hsm: unknown command '%s'\n", cmd);
        kmsctl_hsm_usage(stderr);
        code = KMSCTL_EXIT_USAGE;
    }
out:
    kms_backend_free(&b);
    kms_keystore_free(&ks);
    kms_config_free(&cfg);
    return code;
}
