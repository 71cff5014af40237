#include "kms/config.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "common/addrlist.h"
#include "common/file.h"
#include "common/properties.h"
#include "common/secret.h"
#include "common/token.h"
#include "kms/ksgen.h"
#include "kms/ratelimit.h"

/* why: the secret type tops out at 64 KiB and we keep a NUL after the value */
#define SECRET_MAX_LEN (64 * 1024 - 1)
#define SECRET_FILE_MAX (64 * 1024)
#define NAME_MAX_LEN 64   /* longest property name + "_FILE" fits */
#define SUGGEST_MAX_LEN 128 /* unknown names longer than this get no suggestion */
#define SHOW_MAX 64       /* characters of an invalid value quoted in a detail */

enum type { T_STR = 1, T_INT, T_BOOL, T_ENUM, T_SECRET };

/* Extra validation of a string value: 0 = fine (may set *canon to a
 * normalised, malloc'd replacement), -1 = invalid with the reason in why. */
typedef int (*check_fn)(const char *v, char **canon, char *why, size_t cap);

struct row {
    enum type type;
    const char *def; /* default, as text: it goes through the same parser */
    long long min, max;
    const char *const *allowed; /* ENUM: canonical spellings, NULL-terminated */
    check_fn check;
    const char *desc;
};

static int check_address(const char *v, char **canon, char *why, size_t cap);
static int check_roles(const char *v, char **canon, char *why, size_t cap);
static int check_sentinels(const char *v, char **canon, char *why, size_t cap);
static int check_cluster_name(const char *v, char **canon, char *why, size_t cap);
static int check_trusted(const char *v, char **canon, char *why, size_t cap);
static int check_rates(const char *v, char **canon, char *why, size_t cap);
static int check_rate(const char *v, char **canon, char *why, size_t cap);
static int check_slot(const char *v, char **canon, char *why, size_t cap);

static const char *const protocols[] = {"kmip1", "VAULT", "pkcs11", "soft", NULL};
static const char *const vault_auths[] = {"token", "azure", NULL};
static const char *const cache_types[] = {"none", "local", "distributed", NULL};
static const char *const log_levels[] = {"debug", "info", "warn", "error", NULL};
static const char *const audit_failures[] = {"refuse", "continue", NULL};
static const char *const crl_stale_modes[] = {"refuse", "accept", NULL};
static const char *const ocsp_modes[] = {"off", "soft", "hard", NULL};

#define STR(d, desc) {T_STR, d, 0, 0, NULL, NULL, desc}
#define INT(d, lo, hi, desc) {T_INT, d, lo, hi, NULL, NULL, desc}
#define ENUM(d, list, desc) {T_ENUM, d, 0, 0, list, NULL, desc}
#define SECRET(desc) {T_SECRET, NULL, 0, 0, NULL, NULL, desc}

/* SPEC §7. The install guide's properties keep their meaning and defaults. */
static const struct row rows[KMS_CFG_COUNT] = {
    [KMS_CFG_SERVER_ADDRESS] = {T_STR, "0.0.0.0", 0, 0, NULL, check_address,
                                "address the HTTPS API listens on (IPv4/IPv6 literal or host name)"},
    [KMS_CFG_SERVER_PORT] = INT("8443", 1, 65535, "TCP port of the HTTPS API"),
    [KMS_CFG_SERVER_KEY_ALIAS] = STR("kmsserver", "keystore alias of the TLS server identity (private-key entry)"),
    [KMS_CFG_SERVER_THREADS] = INT("2", 1, 64, "worker threads serving requests"),
    [KMS_CFG_SERVER_MAX_BODY] = INT("65536", 1024, 16777216, "largest accepted request body, in bytes"),
    [KMS_CFG_SERVER_CONN_TIMEOUT] = INT("30", 1, 3600, "seconds before an idle or slow client connection is closed"),
    [KMS_CFG_SERVER_CONN_LIMIT] = INT("1024", 1, 100000, "most concurrent client connections"),
    [KMS_CFG_SERVER_CONN_MEMORY] = INT("16384", 8192, 1048576, "bytes of per-connection memory (request line, headers, read buffer)"),
    [KMS_CFG_SERVER_CONN_PER_ADDRESS] = INT("256", 0, 100000, "most concurrent connections from one client address "
                                              "(the PROXY header's, behind a trusted load balancer); 0: no cap"),
    [KMS_CFG_SERVER_HEADER_TIMEOUT] = INT("10", 1, 3600, "seconds a client has to send a request's head: from "
                                          "connecting (TLS handshake included), or from a request's first byte"),
    [KMS_CFG_SERVER_PROXY_TRUSTED] = {T_STR, "", 0, 0, NULL, check_trusted,
                                      "addresses or networks (a.b.c.d/n, x::/n; comma-separated) of load balancers "
                                      "that must send a PROXY v1 or v2 header; nobody else may. Empty: PROXY off"},
    [KMS_CFG_RATELIMIT_ENABLED] = {T_BOOL, "false", 0, 0, NULL, NULL,
                                   "rate limits per client certificate (kms.ratelimit.<role>), cluster-wide "
                                   "through Redis with kms.cache.type=distributed, else per node"},
    [KMS_CFG_RATELIMIT_BACKEND] = {T_STR, "create=100:200, unwrap=2000:4000, other=2000:4000", 0, 0, NULL,
                                   check_rates, "each backend certificate's budgets: budget=rate[:burst], rate "
                                   "per second; budgets create, unwrap and other; one not named is not limited"},
    [KMS_CFG_RATELIMIT_DEVICE] = {T_STR, "unwrap=50:100, other=50:100", 0, 0, NULL, check_rates,
                                  "each device certificate's budgets, as kms.ratelimit.backend"},
    [KMS_CFG_RATELIMIT_ADMIN] = {T_STR, "other=20:40", 0, 0, NULL, check_rates,
                                 "each admin certificate's budgets, as kms.ratelimit.backend"},
    [KMS_CFG_RATELIMIT_CONNECTIONS] = {T_STR, "100:200", 0, 0, NULL, check_rate,
                                       "new connections per second from one client address (the PROXY "
                                       "header's behind a trusted load balancer), rate[:burst], on each node, "
                                       "before the TLS handshake; over it the connection is closed. Empty: none"},
    [KMS_CFG_TLS_TICKET_LIFETIME] = INT("3600", 1, 86400, "seconds a TLS session ticket resumes; its encryption key is re-derived as often"),
    [KMS_CFG_TLS_TICKET_ROTATION] = INT("43200", 0, 2592000, "seconds between new TLS session-ticket master keys; 0: one per process"),
    [KMS_CFG_ADMIN_ADDRESS] = STR("", "address of the admin listener (GET /metrics, plain HTTP); empty: "
                                      "kms.server.address when that is a loopback address, else 127.0.0.1"),
    [KMS_CFG_ADMIN_PORT] = INT("9843", 0, 65535, "port of the admin listener; 0: no admin listener"),
    [KMS_CFG_KEYSTORE_FILE] = STR("", "keystore (JKS, PKCS#12 or PEM) with kmsServer, kmsClient, the HSM CA and "
                                      "the client certificates; required to start the server"),
    [KMS_CFG_KEYSTORE_PASSWORD] = SECRET("keystore password (or kms.keystore.password.file, a file holding it)"),
    [KMS_CFG_KEYSTORE_ALIAS] = STR("kmsclient", "keystore alias of the identity presented to the HSM (kmsClient)"),
    [KMS_CFG_HSM_PROTOCOL] = ENUM("kmip1", protocols,
                                  "master-key backend: kmip1 (KMIP HSM), VAULT (Vault Transit), pkcs11 (a PKCS#11 "
                                  "token) or soft (development)"),
    [KMS_CFG_HSM_SERVER_URL] = STR("", "KMIP HSM as host, host:port or https://host[:port] (kmip1), or the Vault address such as https://vault:8200 (VAULT)"),
    [KMS_CFG_HSM_SERVER_PORT] = INT("5696", 1, 65535, "HSM KMIP port"),
    [KMS_CFG_KMIP_SERVER_URL] = STR("", "legacy name of kms.hsm.server.url, used when that is unset"),
    [KMS_CFG_KMIP_SERVER_PORT] = INT("5696", 1, 65535, "legacy name of kms.hsm.server.port, used when that is unset"),
    [KMS_CFG_HSM_MASTER_KEY] = STR("kms-master", "name of the master key in the HSM or Vault (pkcs11: its CKA_LABEL)"),
    [KMS_CFG_HSM_SOFT_FILE] = STR("kms-soft-keys.bin", "sealed master-key file of the soft backend"),
    [KMS_CFG_HSM_POOL_SIZE] = INT("4", 1, 64, "persistent connections kept to the HSM (KMIP)"),
    [KMS_CFG_HSM_CONNECT_TIMEOUT] = INT("3000", 100, 120000, "milliseconds to connect (TCP + TLS) to the HSM or Vault"),
    [KMS_CFG_HSM_TIMEOUT] = INT("10000", 100, 300000, "milliseconds one HSM or Vault request may take (pkcs11: "
                                                      "one token call, waiting for a free session included)"),
    [KMS_CFG_HSM_CA_FILE] = STR("", "PEM file of CAs trusted for the HSM/Vault server certificate; empty: the "
                                    "keystore's trusted CA entries"),
    [KMS_CFG_HSM_VAULT_NAMESPACE] = STR("", "Vault namespace (X-Vault-Namespace); empty for none"),
    [KMS_CFG_HSM_VAULT_AUTH] = ENUM("token", vault_auths, "Vault authentication: token or azure"),
    [KMS_CFG_HSM_VAULT_TOKEN] = SECRET("Vault token for token auth (or kms.hsm.vault.token.file)"),
    [KMS_CFG_HSM_VAULT_RENEW] = INT("30", 0, 86400, "renew the Vault token this many seconds before it expires"),
    [KMS_CFG_HSM_VAULT_AZURE_ROLE] = STR("", "Vault role for Azure auth (required when kms.hsm.vault.auth=azure)"),
    [KMS_CFG_HSM_VAULT_AZURE_PATH] = STR("/v1/auth/azure/login", "Vault login path for Azure auth"),
    [KMS_CFG_HSM_VAULT_AZURE_RESOURCE] = STR("https://vault.hashicorp.com/",
                                             "resource asked of the Azure instance metadata service for Vault login"),
    [KMS_CFG_HSM_VAULT_AZURE_IMDS] = STR("http://169.254.169.254",
                                         "Azure instance metadata service address (Azure auth)"),
    [KMS_CFG_HSM_PKCS11_LIBRARY] = STR("", "pkcs11: path of the token's PKCS#11 module, loaded with dlopen "
                                           "(SoftHSM2: /usr/lib/softhsm/libsofthsm2.so)"),
    [KMS_CFG_HSM_PKCS11_TOKEN_LABEL] = STR("", "pkcs11: label of the token holding the master keys"),
    [KMS_CFG_HSM_PKCS11_SLOT] = {T_STR, "", 0, 0, NULL, check_slot,
                                 "pkcs11: slot id of the token (a whole number), when kms.hsm.pkcs11.token.label "
                                 "is empty"},
    [KMS_CFG_HSM_PKCS11_SESSIONS] = INT("0", 0, 256, "pkcs11: sessions kept open on the token (one thread "
                                                     "each); 0: one per worker thread (kms.server.threads)"),
    [KMS_CFG_HSM_PKCS11_PIN] = SECRET("pkcs11: the token's user PIN, from kms.hsm.pkcs11.pin.file or "
                                      "KMS_HSM_PKCS11_PIN; in clear in the properties file it is refused"),
    [KMS_CFG_CACHE_TYPE] = ENUM("none", cache_types,
                                "customer-key cache: none, local (this node) or distributed (Redis, encrypted)"),
    [KMS_CFG_CACHE_CONFIG_FILE] = STR("", "properties file holding the distributed cache's kms.cache.* "
                                          "settings (Redis), instead of kms.properties; not Hazelcast XML"),
    [KMS_CFG_CACHE_TTL] = INT("3600", 0, 604800, "seconds a cached customer key lives (0: no limit)"),
    [KMS_CFG_CACHE_IDLE] = INT("900", 0, 604800, "seconds an unused cached customer key is kept (0: no limit)"),
    [KMS_CFG_CACHE_MAX_ENTRIES] = INT("10000", 0, 10000000, "most customer keys held in the local cache"),
    [KMS_CFG_CACHE_REDIS_URL] = STR("redis://127.0.0.1:6379",
                                    "Redis of the distributed cache: redis[s]://[user@]host:port/db (rediss: TLS); "
                                    "with sentinels no host: redis:// or rediss://[user@]/db"),
    [KMS_CFG_CACHE_REDIS_PASSWORD] = SECRET("Redis password (or kms.cache.redis.password.file)"),
    [KMS_CFG_CACHE_REDIS_TLS_CA_FILE] = STR("", "rediss://: PEM file of CAs trusted for Redis (and Sentinel) "
                                                "certificates; empty: the system's trusted CAs"),
    [KMS_CFG_CACHE_REDIS_TLS_CERT_FILE] = STR("", "rediss://: PEM client certificate for Redis's tls-auth-clients "
                                                  "(with kms.cache.redis.tls.key.file)"),
    [KMS_CFG_CACHE_REDIS_TLS_KEY_FILE] = STR("", "rediss://: its private key, unencrypted PEM readable only by kmsd"),
    [KMS_CFG_CACHE_REDIS_SENTINELS] = {T_STR, "", 0, 0, NULL, check_sentinels,
                                       "Redis Sentinels host:port,host:port (at most 8) asked for the master's "
                                       "address; empty: the host in kms.cache.redis.url"},
    [KMS_CFG_CACHE_REDIS_SENTINEL_MASTER] = STR("", "master name the sentinels monitor (required with sentinels)"),
    [KMS_CFG_CACHE_REDIS_SENTINEL_PASSWORD] = SECRET("password of the Sentinels themselves (or "
                                                     "kms.cache.redis.sentinel.password.file); unset: none"),
    [KMS_CFG_CACHE_CLUSTER_KEY] = SECRET("cluster key shared by every node, sealed under the keystore password "
                                         "(kmsctl cluster key create; usually kms.cache.cluster.key.file); a key "
                                         "in clear is refused. Redis only ever sees values sealed under it"),
    [KMS_CFG_CLUSTER_NAME] = {T_STR, "kmsd", 0, 0, NULL, check_cluster_name,
                              "name of the cluster, bound into every keystore generation it distributes "
                              "(1..64 of A-Z a-z 0-9 . _ -)"},
    [KMS_CFG_CLUSTER_KEYSTORE_CHECK_MS] = INT("2000", 100, 600000, "milliseconds between checks for a new "
                                                                   "keystore generation (besides pub/sub)"),
    [KMS_CFG_CLUSTER_KEYSTORE_KEEP] = INT("32", 2, 1000, "keystore generations kept in Redis for history and "
                                                         "restore"),
    [KMS_CFG_AUTH_ROLES] = {T_STR, "", 0, 0, NULL, check_roles,
                            "extra alias-prefix to role mappings: prefix=role,... with role backend, device or admin"},
    [KMS_CFG_AUTH_CRL_FILE] = STR("", "CRL file (PEM or DER) signed by a keystore CA; revoked client certificates "
                                      "are refused; reloaded with the keystore"),
    [KMS_CFG_AUTH_CRL_URL] = STR("", "where to fetch CRLs (http:// or https://, comma-separated; \"cdp\": the "
                                     "distribution points named by the keystore's certificates); they are verified "
                                     "and written to kms.auth.crl.file, which then reloads. Empty: no fetching"),
    [KMS_CFG_AUTH_CRL_REFRESH] = INT("300", 1, 86400, "seconds between two fetches of kms.auth.crl.url"),
    [KMS_CFG_AUTH_CRL_STALE] = ENUM("refuse", crl_stale_modes,
                                    "a CRL past its nextUpdate: refuse (the certificates of its issuer are refused "
                                    "until a fresh CRL arrives: revocation fails closed) or accept (logged)"),
    [KMS_CFG_AUTH_OCSP] = ENUM("off", ocsp_modes,
                               "OCSP for client certificates when a connection's identity is decided: off, soft "
                               "(no answer: accepted, logged) or hard (no answer: refused)"),
    [KMS_CFG_AUTH_OCSP_URL] = STR("", "the OCSP responder (http:// or https://) for every client certificate; "
                                      "empty: each certificate's own (AIA)"),
    [KMS_CFG_AUTH_OCSP_TIMEOUT] = INT("2000", 100, 30000, "milliseconds an OCSP query may take"),
    [KMS_CFG_AUTH_OCSP_REFRESH] = INT("300", 1, 86400, "seconds an OCSP answer is used at most (less when its "
                                                       "nextUpdate is sooner); then it is asked again, in the "
                                                       "background for certificates in use"),
    [KMS_CFG_AUTH_EXPIRY_WARN_DAYS] = INT("30", 0, 3650, "warn (at start and daily) about certificates expiring "
                                                         "within this many days"),
    [KMS_CFG_LOG_LEVEL] = ENUM("info", log_levels, "log level: debug, info, warn or error"),
    [KMS_CFG_AUDIT_FILE] = STR("", "audit log file (JSON lines); empty: audit lines go to the application log"),
    [KMS_CFG_AUDIT_FLUSH_MS] = INT("100", 0, 10000, "audit lines are written by a writer thread within this many ms; 0: one write per line"),
    [KMS_CFG_AUDIT_ON_FAILURE] = ENUM("refuse", audit_failures,
                                      "when audit lines cannot be written: refuse (audited requests get 503 and "
                                      "touch no key until the lines are written) or continue (lines are lost and "
                                      "counted)"),
    [KMS_CFG_AUDIT_KEY] = SECRET("audit checkpoint key, sealed under the keystore password (make one with "
                                 "'kmsctl audit key create --out FILE'; set kms.audit.key.file); unset: the "
                                 "chain has no HMAC checkpoints"),
    [KMS_CFG_AUDIT_KEY_ALIAS] = STR("", "alias of a secret-key entry of the keystore to use as the audit checkpoint "
                                        "key (keytool -genseckey -keyalg HmacSHA256 -keysize 256, PKCS#12 "
                                        "keystores); instead of kms.audit.key"),
    [KMS_CFG_AUDIT_CHECKPOINT_LINES] = INT("1000", 1, 1000000, "audit lines between two HMAC checkpoints"),
    [KMS_CFG_AUDIT_MAX_SIZE] = INT("104857600", 0, 1099511627776LL, "rotate the audit file past this many bytes "
                                                                    "(the chain goes on in the next file); 0: never"),
    [KMS_CFG_AUDIT_KEEP] = INT("10", 1, 1000, "rotated audit files kept (kms.audit.file.1 is the newest)"),
    [KMS_CFG_NODE_NAME] = STR("", "node name in logs, audit and cluster heartbeats; empty: the host name"),
    [KMS_CFG_CONFIG_STRICT] = {T_BOOL, "false", 0, 0, NULL, NULL,
                               "refuse to start on unknown properties or KMS_* variables instead of warning"},
};

#undef STR
#undef INT
#undef ENUM
#undef SECRET

static const char *const names[KMS_CFG_COUNT] = {
#define KMS_CFG_NAME(id, name) [KMS_CFG_##id] = name,
    KMS_CONFIG_KEYS(KMS_CFG_NAME)
#undef KMS_CFG_NAME
};

struct slot {
    char *str;                 /* STR, ENUM: owned, never NULL after a successful load */
    long long num;             /* INT, BOOL */
    struct kms_secret *secret; /* SECRET: NUL-terminated, on the secure heap; NULL = unset */
    char *source;              /* owned */
    int set;                   /* given by the file or the environment */
};

struct kms_config {
    struct slot v[KMS_CFG_COUNT];
};

/* One candidate assignment of a property: a value, or (secrets) a path. */
struct input {
    const char *text; /* borrowed from the parsed file or envp */
    char *where;      /* owned: "kms.properties:7" or "env KMS_SERVER_PORT" */
};

struct layer {
    struct input val[KMS_CFG_COUNT];
    struct input path[KMS_CFG_COUNT]; /* P.file / P_FILE */
};

struct loader {
    const char *path;
    char *const *envp;
    void (*warn)(void *ctx, const char *msg);
    void *ctx;
    struct kms_props *props;
    const char *cache_path;        /* kms.distributed.cache.config.file; NULL: none */
    struct kms_props *cache_props; /* its content: kms.cache.* only */
    struct layer file, cache, env;
    char env_name[KMS_CFG_COUNT][NAME_MAX_LEN];
};

/* ---- small helpers ------------------------------------------------------ */

static char *dupf(const char *fmt, ...) KMS_PRINTF(1, 2);
static char *dupf(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    if (n < 0)
        return NULL;
    char *s = malloc((size_t)n + 1);
    if (s == NULL)
        return NULL;
    va_start(ap, fmt);
    (void)vsnprintf(s, (size_t)n + 1, fmt, ap);
    va_end(ap);
    return s;
}

static char *dupn(const char *s, size_t n)
{
    char *d = malloc(n + 1);
    if (d != NULL) {
        memcpy(d, s, n);
        d[n] = '\0';
    }
    return d;
}

static int has_control(const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if ((unsigned char)s[i] < 0x20 || s[i] == 0x7f)
            return 1;
    return 0;
}

static char tolower_ascii(char c) { return (c >= 'A' && c <= 'Z') ? (char)(c - 'A' + 'a') : c; }

static const char *ellipsis(const char *v) { return strlen(v) > SHOW_MAX ? "..." : ""; }

static void emit(const struct loader *L, const char *msg)
{
    if (L->warn != NULL)
        L->warn(L->ctx, msg);
}

/* Case-insensitive Levenshtein distance; both strings at most SUGGEST_MAX_LEN. */
static size_t distance(const char *a, const char *b)
{
    size_t la = strlen(a), lb = strlen(b);
    size_t prev[SUGGEST_MAX_LEN + 1], cur[SUGGEST_MAX_LEN + 1];
    if (la > SUGGEST_MAX_LEN || lb > SUGGEST_MAX_LEN)
        return SIZE_MAX;
    for (size_t j = 0; j <= lb; j++)
        prev[j] = j;
    for (size_t i = 1; i <= la; i++) {
        cur[0] = i;
        for (size_t j = 1; j <= lb; j++) {
            size_t cost = tolower_ascii(a[i - 1]) != tolower_ascii(b[j - 1]);
            size_t best = prev[j] + 1;
            if (cur[j - 1] + 1 < best)
                best = cur[j - 1] + 1;
            if (prev[j - 1] + cost < best)
                best = prev[j - 1] + cost;
            cur[j] = best;
        }
        memcpy(prev, cur, (lb + 1) * sizeof(prev[0]));
    }
    return prev[lb];
}

/* Nearest of cands[0..n) to name, or NULL when none is close enough
 * (distance <= max(2, len/4)). */
static const char *nearest(const char *name, const char *const *cands, size_t n)
{
    size_t len = strlen(name);
    if (len > SUGGEST_MAX_LEN)
        return NULL;
    size_t limit = len / 4 > 2 ? len / 4 : 2;
    const char *best = NULL;
    size_t best_d = SIZE_MAX;
    for (size_t i = 0; i < n; i++) {
        size_t d = distance(name, cands[i]);
        if (d < best_d) {
            best_d = d;
            best = cands[i];
        }
    }
    return best_d <= limit ? best : NULL;
}

/* ---- value checks -------------------------------------------------------- */

static int is_host_char(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-';
}

/* An IPv4/IPv6 literal, or a host name (RFC 1123 labels). */
static int check_trusted(const char *v, char **canon, char *why, size_t cap)
{
    (void)canon;
    struct kms_addrlist l;
    return kms_addrlist_parse(v, &l, why, cap) == KMS_OK ? 0 : -1;
}

static int check_rates(const char *v, char **canon, char *why, size_t cap)
{
    (void)canon;
    struct kms_rl_limit l[KMS_RL_BUDGETS];
    return kms_rl_parse(v, l, why, cap) == KMS_OK ? 0 : -1;
}

/* kms.hsm.pkcs11.slot: "" (-1) or a whole number up to LONG_MAX (a
 * CK_SLOT_ID is an unsigned long); -2 for anything else. One parser for
 * the check at load and the value the backend gets. */
static long parse_slot(const char *v)
{
    if (v[0] == '\0')
        return -1;
    long slot = 0;
    for (; *v != '\0'; v++) {
        if (*v < '0' || *v > '9' || slot > (LONG_MAX - (*v - '0')) / 10)
            return -2;
        slot = slot * 10 + (*v - '0');
    }
    return slot;
}

static int check_slot(const char *v, char **canon, char *why, size_t cap)
{
    (void)canon;
    if (parse_slot(v) >= -1)
        return 0;
    (void)snprintf(why, cap, "expected a slot id (a whole number up to %ld), or nothing", LONG_MAX);
    return -1;
}

long kms_config_pkcs11_slot(const struct kms_config *c)
{
    long slot = parse_slot(kms_config_str(c, KMS_CFG_HSM_PKCS11_SLOT));
    return slot < -1 ? -1 : slot;
}

static int check_rate(const char *v, char **canon, char *why, size_t cap)
{
    (void)canon;
    struct kms_rl_limit l;
    return kms_rl_parse_limit(v, &l, why, cap) == KMS_OK ? 0 : -1;
}

static int check_address(const char *v, char **canon, char *why, size_t cap)
{
    (void)canon;
    struct in6_addr a6;
    if (inet_pton(AF_INET, v, &a6) == 1 || inet_pton(AF_INET6, v, &a6) == 1)
        return 0;
    size_t len = strlen(v), label = 0;
    int all_numeric = 1, ok = len > 0 && len <= 253;
    for (size_t i = 0; ok && i <= len; i++) {
        char c = v[i];
        if (c == '.' || c == '\0') {
            ok = label > 0 && label <= 63 && v[i - 1] != '-' && v[i - label] != '-';
            label = 0;
            continue;
        }
        if (!is_host_char(c))
            ok = 0;
        if (!(c >= '0' && c <= '9'))
            all_numeric = 0;
        label++;
    }
    if (ok && !all_numeric) /* why: "999.1.1.1" is a bad address, not a host name */
        return 0;
    snprintf(why, cap, "expected an IPv4 or IPv6 address (without brackets) or a host name");
    return -1;
}

static const char *trim(const char *s, const char *e, const char **end)
{
    while (s < e && (*s == ' ' || *s == '\t'))
        s++;
    while (e > s && (e[-1] == ' ' || e[-1] == '\t'))
        e--;
    *end = e;
    return s;
}

/* "prefix=role,prefix=role"; stored lower-cased (aliases are case-insensitive,
 * SPEC §5) without spaces, so the identity module parses a canonical form. */
static int check_roles(const char *v, char **canon, char *why, size_t cap)
{
    static const char *const roles[] = {"backend", "device", "admin"};
    size_t len = strlen(v), item = 0;
    if (len == 0)
        return 0;
    char *out = malloc(len + 1);
    if (out == NULL) {
        snprintf(why, cap, "out of memory");
        return -1;
    }
    size_t w = 0;
    const char *p = v, *end = v + len;
    while (p <= end) {
        const char *comma = memchr(p, ',', (size_t)(end - p));
        const char *ie = comma ? comma : end, *ee;
        const char *is = trim(p, ie, &ee);
        const char *eq = memchr(is, '=', (size_t)(ee - is));
        item++;
        if (is == ee || eq == NULL) {
            snprintf(why, cap, "item %zu ('%.*s') is not prefix=role; expected prefix=role[,prefix=role...]", item,
                     (int)((ee - is) > SHOW_MAX ? SHOW_MAX : (ee - is)), is);
            goto bad;
        }
        const char *pe, *re;
        const char *ps = trim(is, eq, &pe), *rs = trim(eq + 1, ee, &re);
        if (ps == pe) {
            snprintf(why, cap, "item %zu has an empty alias prefix", item);
            goto bad;
        }
        for (const char *c = ps; c < pe; c++) {
            if (*c == ' ' || *c == '\t' || *c == '=') {
                snprintf(why, cap, "item %zu: the alias prefix may not contain spaces or '='", item);
                goto bad;
            }
        }
        size_t r = 0;
        while (r < KMS_ARRAY_LEN(roles) &&
               !((size_t)(re - rs) == strlen(roles[r]) && strncasecmp(rs, roles[r], strlen(roles[r])) == 0))
            r++;
        if (r == KMS_ARRAY_LEN(roles)) {
            snprintf(why, cap, "item %zu: unknown role '%.*s'; expected backend, device or admin", item,
                     (int)((re - rs) > SHOW_MAX ? SHOW_MAX : (re - rs)), rs);
            goto bad;
        }
        size_t plen = (size_t)(pe - ps);
        /* Duplicate prefix: search what was already written, case-insensitively. */
        for (size_t k = 0; k < w;) {
            size_t ke = k;
            while (out[ke] != '=')
                ke++;
            if (ke - k == plen && strncasecmp(out + k, ps, plen) == 0) {
                snprintf(why, cap, "alias prefix '%.*s' is listed twice", (int)(plen > SHOW_MAX ? SHOW_MAX : plen),
                         ps);
                goto bad;
            }
            while (k < w && out[k] != ',')
                k++;
            k++;
        }
        if (w)
            out[w++] = ',';
        for (size_t k = 0; k < plen; k++)
            out[w++] = tolower_ascii(ps[k]);
        out[w++] = '=';
        memcpy(out + w, roles[r], strlen(roles[r]));
        w += strlen(roles[r]);
        if (comma == NULL)
            break;
        p = comma + 1;
    }
    out[w] = '\0';
    *canon = out;
    return 0;
bad:
    free(out);
    return -1;
}

/* Decimal digits only (no sign, no spaces, no 0x), through strtoll with
 * every check, then the row's bounds. */
static int parse_int(const char *v, size_t n, long long *out)
{
    char buf[32];
    if (n == 0 || n >= sizeof(buf))
        return -1;
    for (size_t i = 0; i < n; i++)
        if (v[i] < '0' || v[i] > '9')
            return -1;
    memcpy(buf, v, n);
    buf[n] = '\0';
    char *end = NULL;
    errno = 0;
    long long x = strtoll(buf, &end, 10);
    if (errno != 0 || end != buf + n)
        return -1;
    *out = x;
    return 0;
}

static int parse_bool(const char *v, size_t n, long long *out)
{
    static const char *const yes[] = {"true", "yes", "on", "1"};
    static const char *const no[] = {"false", "no", "off", "0"};
    for (size_t i = 0; i < KMS_ARRAY_LEN(yes); i++) {
        if (n == strlen(yes[i]) && strncasecmp(v, yes[i], n) == 0) {
            *out = 1;
            return 0;
        }
        if (n == strlen(no[i]) && strncasecmp(v, no[i], n) == 0) {
            *out = 0;
            return 0;
        }
    }
    return -1;
}

/* ---- storing values -------------------------------------------------------- */

static kms_rc set_source(struct slot *s, char *source)
{
    if (source == NULL)
        return kms_fail(KMS_ERR_NO_MEMORY, "config: out of memory");
    free(s->source);
    s->source = source;
    return KMS_OK;
}

/* Copies v[0..n) into a NUL-terminated secret on the secure heap. */
static kms_rc store_secret(struct slot *s, const uint8_t *v, size_t n)
{
    struct kms_secret *sec;
    KMS_GUARD(kms_secret_new(n + 1, &sec));
    if (n)
        memcpy(kms_secret_data(sec), v, n);
    kms_secret_truncate(sec, n); /* the byte after the value stays 0 */
    kms_secret_free(&s->secret);
    s->secret = sec;
    return KMS_OK;
}

/* Converts text (from where, NULL for the default) into key k's slot. */
static kms_rc set_value(struct kms_config *c, enum kms_config_key k, const char *text, const char *where)
{
    const struct row *r = &rows[k];
    struct slot *s = &c->v[k];
    const char *from = where ? where : "default";
    char why[200] = "";

    if (r->type == T_SECRET) {
        size_t n = strlen(text);
        if (n > SECRET_MAX_LEN)
            return kms_fail(KMS_ERR_CONFIG, "invalid value <redacted> for %s (from %s): longer than %d bytes",
                            names[k], from, SECRET_MAX_LEN);
        KMS_GUARD(store_secret(s, (const uint8_t *)text, n));
        return set_source(s, dupf("%s", from));
    }

    /* why: invisible trailing blanks ("8443 ") are a classic properties mistake */
    size_t n = strlen(text);
    while (n > 0 && (text[n - 1] == ' ' || text[n - 1] == '\t'))
        n--;
    char *str = NULL;
    long long num = 0;
    int bad = 0;
    if (has_control(text, n)) {
        snprintf(why, sizeof(why), "control characters are not allowed");
        bad = 1;
    } else if (r->type == T_INT) {
        if (parse_int(text, n, &num) != 0 || num < r->min || num > r->max) {
            snprintf(why, sizeof(why), "expected an integer between %lld and %lld", r->min, r->max);
            bad = 1;
        }
    } else if (r->type == T_BOOL) {
        if (parse_bool(text, n, &num) != 0) {
            snprintf(why, sizeof(why), "expected true or false (also yes/no, on/off, 1/0)");
            bad = 1;
        }
    } else if (r->type == T_ENUM) {
        size_t i = 0;
        while (r->allowed[i] != NULL && !(n == strlen(r->allowed[i]) && strncasecmp(text, r->allowed[i], n) == 0))
            i++;
        if (r->allowed[i] == NULL) {
            size_t w = (size_t)snprintf(why, sizeof(why), "expected one of");
            for (size_t j = 0; r->allowed[j] != NULL && w < sizeof(why); j++)
                w += (size_t)snprintf(why + w, sizeof(why) - w, "%s %s", j ? "," : "", r->allowed[j]);
            bad = 1;
        } else {
            str = dupn(r->allowed[i], strlen(r->allowed[i]));
        }
    } else {
        str = dupn(text, n);
        if (str != NULL && r->check != NULL) {
            char *canon = NULL;
            if (r->check(str, &canon, why, sizeof(why)) != 0) {
                bad = 1;
            } else if (canon != NULL) {
                free(str);
                str = canon;
            }
        }
    }
    if (bad) {
        free(str);
        if (where == NULL)
            return kms_fail(KMS_ERR_INTERNAL, "config: default of %s is invalid: %s", names[k], why);
        return kms_fail(KMS_ERR_CONFIG, "invalid value '%.*s%s' for %s (from %s): %s", SHOW_MAX, text,
                        ellipsis(text), names[k], from, why);
    }
    if ((r->type == T_STR || r->type == T_ENUM) && str == NULL)
        return kms_fail(KMS_ERR_NO_MEMORY, "config: out of memory");
    free(s->str);
    s->str = str;
    s->num = num;
    return set_source(s, dupf("%s", from));
}

/* A secret read from a file: at most 64 KiB, one trailing "\n" or "\r\n"
 * dropped. The detail names the key and the path, never the content. */
static kms_rc set_secret_file(struct kms_config *c, enum kms_config_key k, const char *path, const char *where)
{
    struct slot *s = &c->v[k];
    if (path[0] == '\0')
        return kms_fail(KMS_ERR_CONFIG, "cannot read %s from a file (from %s): the path is empty", names[k], where);
    struct kms_secret *buf = NULL;
    kms_rc rc = kms_file_read_secret(path, SECRET_FILE_MAX, "the secret file", &buf);
    if (rc == KMS_ERR_NO_MEMORY)
        return rc;
    if (rc == KMS_ERR_TOO_LARGE)
        return kms_fail(KMS_ERR_CONFIG, "cannot read %s from file '%s' (from %s): larger than %d bytes", names[k],
                        path, where, SECRET_FILE_MAX);
    if (rc != KMS_OK) {
        char why[320];
        (void)snprintf(why, sizeof(why), "%s", kms_error_detail());
        return kms_fail(KMS_ERR_CONFIG, "cannot read %s from file '%s' (from %s): %s", names[k], path, where, why);
    }
    const uint8_t *d = kms_secret_cdata(buf);
    size_t len = kms_secret_len(buf);
    if (len > 0 && d[len - 1] == '\n') {
        len--;
        if (len > 0 && d[len - 1] == '\r')
            len--;
    }
    if (memchr(d, '\0', len) != NULL)
        rc = kms_fail(KMS_ERR_CONFIG, "invalid value <redacted> for %s (from file '%s'): contains a NUL byte",
                      names[k], path);
    else if (len > SECRET_MAX_LEN)
        rc = kms_fail(KMS_ERR_CONFIG, "cannot read %s from file '%s' (from %s): longer than %d bytes", names[k],
                      path, where, SECRET_MAX_LEN);
    else
        rc = store_secret(s, d, len);
    kms_secret_free(&buf);
    KMS_GUARD(rc);
    return set_source(s, dupf("file %s", path));
}

/* ---- collecting the file and the environment ------------------------------ */

static int lookup_name(const char *name)
{
    for (int k = 0; k < KMS_CFG_COUNT; k++)
        if (strcmp(name, names[k]) == 0)
            return k;
    return -1;
}

/* "P.file" for a secret P: returns P's index, else -1. */
static int lookup_secret_file(const char *name)
{
    size_t n = strlen(name);
    static const char suffix[] = ".file";
    if (n <= sizeof(suffix) - 1 || strcmp(name + n - (sizeof(suffix) - 1), suffix) != 0)
        return -1;
    for (int k = 0; k < KMS_CFG_COUNT; k++)
        if (rows[k].type == T_SECRET && strlen(names[k]) == n - (sizeof(suffix) - 1) &&
            strncmp(name, names[k], n - (sizeof(suffix) - 1)) == 0)
            return k;
    return -1;
}

static kms_rc set_input(struct input *in, const char *text, char *where)
{
    if (where == NULL)
        return kms_fail(KMS_ERR_NO_MEMORY, "config: out of memory");
    free(in->where);
    in->text = text;
    in->where = where;
    return KMS_OK;
}

static kms_rc collect_file(struct loader *L)
{
    for (size_t i = 0; i < kms_props_count(L->props); i++) {
        const char *key = kms_props_key(L->props, i);
        int k = lookup_name(key);
        struct input *in = NULL;
        if (k >= 0)
            in = &L->file.val[k];
        else if ((k = lookup_secret_file(key)) >= 0)
            in = &L->file.path[k];
        if (in != NULL)
            KMS_GUARD(set_input(in, kms_props_value(L->props, i),
                                dupf("%s:%u", L->path, kms_props_line(L->props, i))));
    }
    return KMS_OK;
}

/* Environment variable name of a property: upper case, '.' and '-' -> '_'. */
static kms_rc make_env_names(struct loader *L)
{
    for (int k = 0; k < KMS_CFG_COUNT; k++) {
        size_t n = strlen(names[k]);
        if (n + sizeof("_FILE") > NAME_MAX_LEN)
            return kms_fail(KMS_ERR_INTERNAL, "config: property name %s too long", names[k]);
        for (size_t i = 0; i <= n; i++) {
            char ch = names[k][i];
            L->env_name[k][i] = (ch == '.' || ch == '-') ? '_' : (ch >= 'a' && ch <= 'z') ? (char)(ch - 32) : ch;
        }
    }
    return KMS_OK;
}

/* Index of the property whose variable is name[0..n) (or its _FILE form). */
static int lookup_env(const struct loader *L, const char *name, size_t n, int *is_file)
{
    for (int k = 0; k < KMS_CFG_COUNT; k++) {
        size_t e = strlen(L->env_name[k]);
        if (n == e && memcmp(name, L->env_name[k], n) == 0) {
            *is_file = 0;
            return k;
        }
        if (rows[k].type == T_SECRET && n == e + 5 && memcmp(name, L->env_name[k], e) == 0 &&
            memcmp(name + e, "_FILE", 5) == 0) {
            *is_file = 1;
            return k;
        }
    }
    return -1;
}

static kms_rc collect_env(struct loader *L)
{
    for (char *const *e = L->envp; e != NULL && *e != NULL; e++) {
        const char *eq = strchr(*e, '=');
        if (eq == NULL)
            continue;
        int is_file;
        int k = lookup_env(L, *e, (size_t)(eq - *e), &is_file);
        if (k < 0)
            continue;
        if (is_file && eq[1] == '\0')
            continue; /* why: KMS_X_FILE= (empty) is how a container unsets it; no path to read */
        struct input *in = is_file ? &L->env.path[k] : &L->env.val[k];
        if (in->text != NULL)
            continue; /* why: getenv() sees the first of duplicate variables; so do we */
        KMS_GUARD(set_input(in, eq + 1, dupf("env %.*s", (int)(eq - *e), *e)));
    }
    return KMS_OK;
}

/* ---- the distributed cache's own file ------------------------------------ */

#define CACHE_PREFIX "kms.cache."
#define SNIFF_LEN 256

static int is_cache_key(const char *key) { return strncmp(key, CACHE_PREFIX, sizeof(CACHE_PREFIX) - 1) == 0; }

/* Opens path once before the parser does, for two clear errors: a missing or
 * unreadable file, and the original product's Hazelcast XML (a leading '<',
 * after an optional UTF-8 BOM and blanks). from: where the path was set. */
static kms_rc sniff_cache_file(const char *path, const char *from)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY);
    if (fd < 0)
        return kms_fail(KMS_ERR_CONFIG,
                        "cannot read the distributed cache config file '%s' (kms.distributed.cache.config.file "
                        "from %s): %s",
                        path, from, strerror(errno));
    unsigned char head[SNIFF_LEN];
    size_t len = 0;
    int err = 0;
    while (len < sizeof(head)) {
        ssize_t n = read(fd, head + len, sizeof(head) - len);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0) {
            err = errno;
            break;
        }
        if (n == 0)
            break;
        len += (size_t)n;
    }
    close(fd);
    size_t i = len >= 3 && head[0] == 0xef && head[1] == 0xbb && head[2] == 0xbf ? 3 : 0;
    while (i < len && (head[i] == ' ' || head[i] == '\t' || head[i] == '\r' || head[i] == '\n' || head[i] == '\f'))
        i++;
    int xml = i < len && head[i] == '<';
    kms_wipe(head, sizeof(head)); /* why: the file may hold kms.cache.redis.password */
    if (err != 0)
        return kms_fail(KMS_ERR_CONFIG,
                        "cannot read the distributed cache config file '%s' (kms.distributed.cache.config.file "
                        "from %s): %s",
                        path, from, strerror(err));
    if (xml)
        return kms_fail(KMS_ERR_CONFIG,
                        "the distributed cache config file '%s' (kms.distributed.cache.config.file from %s) looks "
                        "like XML: kmsd's distributed cache is Redis and this file is a properties file of "
                        "kms.cache.* keys (such as kms.cache.redis.url = redis://host:6379/0), not Hazelcast XML; "
                        "see docs/cluster.md",
                        path, from);
    return KMS_OK;
}

/* " (as P)" or " (as P.file)": how key k is spelled in layer l, for a
 * detail where the two sources spell it differently; "" otherwise. */
static void spelling(const struct layer *l, const struct layer *other, enum kms_config_key k, char *buf, size_t cap)
{
    int file = l->val[k].text == NULL, other_file = other->val[k].text == NULL;
    buf[0] = '\0';
    if (file != other_file)
        snprintf(buf, cap, " (as %s%s)", names[k], file ? ".file" : "");
}

/* Fills L->cache from the cache file: only kms.cache.* keys, none of them
 * also set in kms.properties (which one would win is anybody's guess).
 * Unknown kms.cache.* names are left to report_unknown. */
static kms_rc collect_cache(struct loader *L)
{
    const char *cands[KMS_CFG_COUNT];
    size_t n = 0;
    for (int k = 0; k < KMS_CFG_COUNT; k++)
        if (is_cache_key(names[k]))
            cands[n++] = names[k];
    for (size_t i = 0; i < kms_props_count(L->cache_props); i++) {
        const char *key = kms_props_key(L->cache_props, i);
        unsigned line = kms_props_line(L->cache_props, i);
        if (!is_cache_key(key)) {
            const char *near = nearest(key, cands, n);
            return kms_fail(KMS_ERR_CONFIG, "%.128s%s is not a cache setting (cache config file %s line %u)%s%s%s",
                            key, strlen(key) > 128 ? "..." : "", L->cache_path, line,
                            near ? "; did you mean '" : ": only kms.cache.* properties go in this file; other "
                                                        "settings belong in kms.properties",
                            near ? near : "", near ? "'?" : "");
        }
        int k = lookup_name(key);
        struct input *in = NULL;
        if (k >= 0)
            in = &L->cache.val[k];
        else if ((k = lookup_secret_file(key)) >= 0)
            in = &L->cache.path[k];
        if (in != NULL)
            KMS_GUARD(set_input(in, kms_props_value(L->cache_props, i), dupf("%s:%u", L->cache_path, line)));
    }
    for (int k = 0; k < KMS_CFG_COUNT; k++) {
        const struct input *f = L->file.val[k].text ? &L->file.val[k] : &L->file.path[k];
        const struct input *q = L->cache.val[k].text ? &L->cache.val[k] : &L->cache.path[k];
        if (f->text == NULL || q->text == NULL)
            continue;
        char fs[NAME_MAX_LEN + 16], qs[NAME_MAX_LEN + 16];
        spelling(&L->file, &L->cache, (enum kms_config_key)k, fs, sizeof(fs));
        spelling(&L->cache, &L->file, (enum kms_config_key)k, qs, sizeof(qs));
        return kms_fail(KMS_ERR_CONFIG,
                        "%s is set both in %s%s and in the distributed cache config file %s%s, which is "
                        "ambiguous: keep only one",
                        names[k], f->where, fs, q->where, qs);
    }
    return KMS_OK;
}

/* kms.distributed.cache.config.file (already resolved into c): a properties
 * file, in kms.properties' syntax, of the distributed cache's kms.cache.*
 * settings. A relative path is taken from the working directory, as every
 * other path in kms.properties is. Every problem is KMS_ERR_CONFIG. */
static kms_rc load_cache_file(struct loader *L, const struct kms_config *c)
{
    const struct slot *s = &c->v[KMS_CFG_CACHE_CONFIG_FILE];
    if (s->str[0] == '\0')
        return KMS_OK;
    L->cache_path = s->str;
    KMS_GUARD(sniff_cache_file(L->cache_path, s->source));
    kms_rc rc = kms_props_load(L->cache_path, &L->cache_props);
    if (rc == KMS_ERR_NO_MEMORY)
        return rc;
    if (rc != KMS_OK) {
        char why[512]; /* why: the detail is rewritten below; copy it first */
        snprintf(why, sizeof(why), "%s", kms_error_detail());
        return kms_fail(KMS_ERR_CONFIG,
                        "the distributed cache config file (kms.distributed.cache.config.file from %s) is not a "
                        "valid properties file: %s",
                        s->source, why);
    }
    return collect_cache(L);
}

/* The environment wins over the files; kms.properties and the cache file
 * never both hold a key (collect_cache); inside one source, P and P.file clash. */
static kms_rc resolve(struct loader *L, struct kms_config *c, enum kms_config_key k)
{
    const struct layer *layers[] = {&L->env, &L->file, &L->cache};
    for (size_t i = 0; i < KMS_ARRAY_LEN(layers); i++) {
        const struct input *val = &layers[i]->val[k], *path = &layers[i]->path[k];
        if (val->text != NULL && path->text != NULL)
            return kms_fail(KMS_ERR_CONFIG, "%s is set twice, as a value (%s) and as a file (%s); keep only one",
                            names[k], val->where, path->where);
        if (val->text != NULL) {
            c->v[k].set = 1;
            return set_value(c, k, val->text, val->where);
        }
        if (path->text != NULL) {
            c->v[k].set = 1;
            return set_secret_file(c, k, path->text, path->where);
        }
    }
    if (rows[k].type == T_SECRET)
        return set_source(&c->v[k], dupf("default"));
    return set_value(c, k, rows[k].def, NULL);
}

/* Warnings for unknown names in one properties file (errors when strict),
 * and for properties set twice in it. prefix: the names it may hold ("" or
 * "kms.cache."), so suggestions stay among them. */
static kms_rc report_props(struct loader *L, const struct kms_props *props, const char *path, const char *prefix,
                           int strict)
{
    const char *cands[2 * KMS_CFG_COUNT];
    char file_names[KMS_CFG_COUNT][NAME_MAX_LEN];
    char msg[600];
    size_t n = 0;

    for (int k = 0; k < KMS_CFG_COUNT; k++) {
        if (strncmp(names[k], prefix, strlen(prefix)) != 0)
            continue;
        cands[n++] = names[k];
        if (rows[k].type == T_SECRET) {
            snprintf(file_names[k], sizeof(file_names[k]), "%s.file", names[k]);
            cands[n++] = file_names[k];
        }
    }
    for (size_t i = 0; i < kms_props_count(props); i++) {
        const char *key = kms_props_key(props, i);
        unsigned line = kms_props_line(props, i), first = kms_props_first_line(props, i);
        if (first != line) {
            snprintf(msg, sizeof(msg), "property '%.128s' is set more than once in %s (lines %u and %u); line %u wins",
                     key, path, first, line, line);
            emit(L, msg);
        }
        if (lookup_name(key) >= 0 || lookup_secret_file(key) >= 0)
            continue;
        size_t len = strlen(key);
        int base = -1;
        if (len > 5 && strcmp(key + len - 5, ".file") == 0) {
            char tmp[NAME_MAX_LEN];
            if (len - 5 < sizeof(tmp)) {
                memcpy(tmp, key, len - 5);
                tmp[len - 5] = '\0';
                base = lookup_name(tmp);
            }
        }
        if (base >= 0) {
            snprintf(msg, sizeof(msg),
                     "property '%s' in %s (line %u): only secrets (kms.keystore.password, kms.hsm.vault.token) "
                     "can be read from a file",
                     key, path, line);
        } else {
            const char *near = nearest(key, cands, n);
            snprintf(msg, sizeof(msg), "unknown property '%.128s%s' in %s (line %u)%s%s%s", key,
                     len > 128 ? "..." : "", path, line, near ? "; did you mean '" : "", near ? near : "",
                     near ? "'?" : "");
        }
        if (strict)
            return kms_fail(KMS_ERR_CONFIG, "%s (kms.config.strict is on)", msg);
        emit(L, msg);
    }
    return KMS_OK;
}

/* Warnings for unknown names in kms.properties, the cache file and KMS_*
 * variables (errors when kms.config.strict is on), and for properties set
 * twice in a file. */
static kms_rc report_unknown(struct loader *L, int strict)
{
    const char *cands[2 * KMS_CFG_COUNT];
    char env_files[KMS_CFG_COUNT][NAME_MAX_LEN + 8];
    char msg[600];
    size_t n = 0;

    KMS_GUARD(report_props(L, L->props, L->path, "", strict));
    KMS_GUARD(report_props(L, L->cache_props, L->cache_path, CACHE_PREFIX, strict));
    for (int k = 0; k < KMS_CFG_COUNT; k++) {
        cands[n++] = L->env_name[k];
        if (rows[k].type == T_SECRET) {
            snprintf(env_files[k], sizeof(env_files[k]), "%s_FILE", L->env_name[k]);
            cands[n++] = env_files[k];
        }
    }
    for (char *const *e = L->envp; e != NULL && *e != NULL; e++) {
        const char *eq = strchr(*e, '=');
        int is_file;
        if (eq == NULL || strncmp(*e, "KMS_", 4) != 0 || lookup_env(L, *e, (size_t)(eq - *e), &is_file) >= 0)
            continue;
        size_t len = (size_t)(eq - *e);
        if ((len == 10 && strncmp(*e, "KMS_CONFIG", 10) == 0) || strncmp(*e, "KMS_TEST_", 9) == 0 ||
            strncmp(*e, "KMS_SOURCE_DIR", 14) == 0 || strncmp(*e, "KMS_BINARY_DIR", 14) == 0)
            continue;
        char name[SUGGEST_MAX_LEN + 1];
        const char *near = NULL;
        if (len <= SUGGEST_MAX_LEN) {
            memcpy(name, *e, len);
            name[len] = '\0';
            near = nearest(name, cands, n);
        }
        snprintf(msg, sizeof(msg), "unknown environment variable %.*s%s%s%s%s", (int)(len > 128 ? 128 : len), *e,
                 len > 128 ? "..." : "", near ? "; did you mean " : "", near ? near : "", near ? "?" : "");
        if (strict)
            return kms_fail(KMS_ERR_CONFIG, "%s (kms.config.strict is on)", msg);
        emit(L, msg);
    }
    return KMS_OK;
}

/* Legacy kmip.server.url/.port fill kms.hsm.server.url/.port (install guide). */
static kms_rc apply_legacy(struct kms_config *c)
{
    struct slot *url = &c->v[KMS_CFG_HSM_SERVER_URL], *port = &c->v[KMS_CFG_HSM_SERVER_PORT];
    const struct slot *old_url = &c->v[KMS_CFG_KMIP_SERVER_URL], *old_port = &c->v[KMS_CFG_KMIP_SERVER_PORT];
    if (url->str[0] == '\0' && old_url->set && old_url->str[0] != '\0') {
        char *copy = dupn(old_url->str, strlen(old_url->str));
        if (copy == NULL)
            return kms_fail(KMS_ERR_NO_MEMORY, "config: out of memory");
        free(url->str);
        url->str = copy;
        url->set = 1;
        KMS_GUARD(set_source(url, dupf("legacy kmip.server.url (%s)", old_url->source)));
    }
    if (!port->set && old_port->set) {
        port->num = old_port->num;
        port->set = 1;
        KMS_GUARD(set_source(port, dupf("legacy kmip.server.port (%s)", old_port->source)));
    }
    return KMS_OK;
}

/* kms.cluster.name: it is bound into sealed keystore generations (kms/ksgen.h). */
static int check_cluster_name(const char *v, char **canon, char *why, size_t cap)
{
    (void)canon;
    if (!kms_token_valid(v, KMS_KSGEN_NAME_MAX, "._-")) {
        snprintf(why, cap, "must be 1..%d of A-Z a-z 0-9 . _ -", KMS_KSGEN_NAME_MAX);
        return -1;
    }
    return 0;
}

/* "host:port[,host:port]..." (1..8; spaces after commas); the cache checks
 * it again in full (cluster/redis_cache.c). */
static int check_sentinels(const char *v, char **canon, char *why, size_t cap)
{
    (void)canon;
    size_t n = 0;
    const char *p = v;
    if (*p == '\0')
        return 0;
    for (;;) {
        while (*p == ' ')
            p++;
        size_t host = strspn(p, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.-");
        size_t digits = p[host] == ':' ? strspn(p + host + 1, "0123456789") : 0;
        long port = 0;
        for (size_t i = 0; i < digits && i < 6; i++)
            port = port * 10 + (p[host + 1 + i] - '0');
        if (host == 0 || host > 255 || digits == 0 || digits > 5 || port < 1 || port > 65535 || ++n > 8) {
            snprintf(why, cap, "give 1..8 host:port (port 1..65535), comma-separated");
            return -1;
        }
        p += host + 1 + digits;
        if (*p == '\0')
            return 0;
        if (*p != ',') {
            snprintf(why, cap, "entries are host:port separated by commas");
            return -1;
        }
        p++;
    }
}

/* The host part of a redis[s]:// url, or NULL when it is not such a url. */
static const char *redis_url_host(const char *url, int *tls, size_t *len)
{
    const char *p;
    if (strncmp(url, "rediss://", 9) == 0) {
        *tls = 1;
        p = url + 9;
    } else if (strncmp(url, "redis://", 8) == 0) {
        *tls = 0;
        p = url + 8;
    } else {
        return NULL;
    }
    const char *at = strchr(p, '@');
    if (at != NULL)
        p = at + 1;
    *len = strcspn(p, ":/");
    return p;
}

/* The distributed cache's Redis settings fit together (kmsd --check-config). */
static kms_rc cross_check_redis(const struct kms_config *c)
{
    const char *url = c->v[KMS_CFG_CACHE_REDIS_URL].str;
    const char *url_src = c->v[KMS_CFG_CACHE_REDIS_URL].source;
    const char *ca = c->v[KMS_CFG_CACHE_REDIS_TLS_CA_FILE].str;
    const char *cert = c->v[KMS_CFG_CACHE_REDIS_TLS_CERT_FILE].str;
    const char *key = c->v[KMS_CFG_CACHE_REDIS_TLS_KEY_FILE].str;
    int sentinels = c->v[KMS_CFG_CACHE_REDIS_SENTINELS].str[0] != '\0';
    int tls = 0;
    size_t hlen = 0;
    const char *host = redis_url_host(url, &tls, &hlen);
    if (host == NULL)
        return kms_fail(KMS_ERR_CONFIG, "kms.cache.redis.url (from %s) must start with redis:// or rediss://", url_src);
    if (!tls && (ca[0] || cert[0] || key[0]))
        return kms_fail(KMS_ERR_CONFIG,
                        "kms.cache.redis.tls.* files are given but kms.cache.redis.url (from %s) is not rediss://",
                        url_src);
    if ((cert[0] == '\0') != (key[0] == '\0'))
        return kms_fail(KMS_ERR_CONFIG, "kms.cache.redis.tls.cert.file and kms.cache.redis.tls.key.file go together");
    /* why: the default url names a host; with sentinels only an explicit one is a conflict */
    if (sentinels && hlen > 0 && c->v[KMS_CFG_CACHE_REDIS_URL].set)
        return kms_fail(KMS_ERR_CONFIG,
                        "kms.cache.redis.sentinels and a host in kms.cache.redis.url (from %s) are exclusive: the "
                        "sentinels name the master; use redis:// or rediss://[user@]/db",
                        url_src);
    if (sentinels && c->v[KMS_CFG_CACHE_REDIS_SENTINEL_MASTER].str[0] == '\0')
        return kms_fail(KMS_ERR_CONFIG, "kms.cache.redis.sentinels needs kms.cache.redis.sentinel.master");
    if (!sentinels && (c->v[KMS_CFG_CACHE_REDIS_SENTINEL_MASTER].str[0] != '\0' ||
                       c->v[KMS_CFG_CACHE_REDIS_SENTINEL_PASSWORD].set))
        return kms_fail(KMS_ERR_CONFIG,
                        "kms.cache.redis.sentinel.master/.password are given but kms.cache.redis.sentinels is empty");
    if (!sentinels && hlen == 0)
        return kms_fail(KMS_ERR_CONFIG, "kms.cache.redis.url (from %s) names no host and no sentinels are given",
                        url_src);
    return KMS_OK;
}

/* Splits "host", "host:port", "[v6]" or "[v6]:port" (no scheme, no path). */
static int split_authority(const char *a, size_t len, char *host, size_t cap, long *port, const char **why)
{
    const char *h = a, *colon = NULL;
    size_t hlen = len;
    if (len > 0 && a[0] == '[') {
        const char *close = memchr(a, ']', len);
        if (close == NULL) {
            *why = "an IPv6 address opened with [ is not closed with ]";
            return 0;
        }
        h = a + 1;
        hlen = (size_t)(close - h);
        if ((size_t)(close + 1 - a) < len) {
            if (close[1] != ':') {
                *why = "text follows the ] of the IPv6 address";
                return 0;
            }
            colon = close + 1;
        }
    } else {
        const char *first = memchr(a, ':', len), *last = NULL;
        for (size_t i = 0; i < len; i++)
            if (a[i] == ':')
                last = a + i;
        if (first != NULL && first == last) { /* why: several colons without brackets is a bare IPv6 address */
            colon = first;
            hlen = (size_t)(first - a);
        }
    }
    *port = 0;
    if (colon != NULL) {
        const char *p = colon + 1, *end = a + len;
        long v = 0;
        if (p == end) {
            *why = "a ':' with no port after it";
            return 0;
        }
        for (; p < end; p++) {
            if (*p < '0' || *p > '9' || v > 65535) {
                *why = "the port is not a number from 1 to 65535";
                return 0;
            }
            v = v * 10 + (*p - '0');
        }
        if (v < 1 || v > 65535) {
            *why = "the port is not a number from 1 to 65535";
            return 0;
        }
        *port = v;
    }
    if (hlen == 0) {
        *why = "no host name";
        return 0;
    }
    if (hlen >= cap) {
        *why = "the host name is too long";
        return 0;
    }
    for (size_t i = 0; i < hlen; i++) {
        char ch = h[i];
        int ok = (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') || ch == '.' ||
                 ch == '-' || ch == '_' || ch == ':' || ch == '%';
        if (!ok) {
            *why = "the host name holds a character a host name cannot (space, @, ?, # ...)";
            return 0;
        }
    }
    memcpy(host, h, hlen);
    host[hlen] = '\0';
    return 1;
}

kms_rc kms_config_kmip_endpoint(const struct kms_config *c, char *host, size_t host_cap, uint16_t *port)
{
    const struct slot *u = &c->v[KMS_CFG_HSM_SERVER_URL], *p = &c->v[KMS_CFG_HSM_SERVER_PORT];
    const char *v = u->str, *why = NULL;
    const char *sep = strstr(v, "://");
    if (sep != NULL) {
        size_t slen = (size_t)(sep - v);
        if (!((slen == 5 && strncasecmp(v, "https", 5) == 0) || (slen == 4 && strncasecmp(v, "kmip", 4) == 0) ||
              (slen == 3 && strncasecmp(v, "tls", 3) == 0)))
            return kms_fail(KMS_ERR_CONFIG,
                            "kms.hsm.server.url = %.200s (from %s): the scheme '%.*s' is not KMIP over TLS; write "
                            "https://host[:port] or the bare host name",
                            v, u->source, (int)(slen > 16 ? 16 : slen), v);
        v = sep + 3;
    }
    size_t alen = strcspn(v, "/?#");
    if (v[alen] != '\0' && strcmp(v + alen, "/") != 0)
        why = "a KMIP server is a host and a port; the URL has a path, query or fragment";
    else if (memchr(v, '@', alen) != NULL)
        why = "user info (user@) is not used by KMIP; the client certificate is the identity";
    long url_port = 0;
    if (why == NULL)
        (void)split_authority(v, alen, host, host_cap, &url_port, &why);
    if (why != NULL)
        return kms_fail(KMS_ERR_CONFIG, "kms.hsm.server.url = %.200s (from %s): %s", u->str, u->source, why);
    int port_given = strcmp(p->source, "default") != 0;
    if (url_port != 0 && port_given && url_port != p->num)
        return kms_fail(KMS_ERR_CONFIG,
                        "kms.hsm.server.url = %.200s (from %s) names port %ld but kms.hsm.server.port = %lld (from %s); "
                        "give the port once",
                        u->str, u->source, url_port, p->num, p->source);
    *port = (uint16_t)(url_port != 0 ? url_port : p->num);
    return KMS_OK;
}

/* kms.hsm.protocol=pkcs11: a module, a token, and a PIN that is not in
 * clear in a properties file (SPEC §12). */
static kms_rc cross_check_pkcs11(const struct kms_config *c, const char *psrc)
{
    if (c->v[KMS_CFG_HSM_PKCS11_LIBRARY].str[0] == '\0')
        return kms_fail(KMS_ERR_CONFIG, "kms.hsm.protocol=pkcs11 (from %s) needs kms.hsm.pkcs11.library: the path of "
                                        "the token's PKCS#11 module",
                        psrc);
    if (c->v[KMS_CFG_HSM_PKCS11_TOKEN_LABEL].str[0] == '\0' && c->v[KMS_CFG_HSM_PKCS11_SLOT].str[0] == '\0')
        return kms_fail(KMS_ERR_CONFIG, "kms.hsm.protocol=pkcs11 (from %s) needs kms.hsm.pkcs11.token.label (or "
                                        "kms.hsm.pkcs11.slot)",
                        psrc);
    const struct slot *pin = &c->v[KMS_CFG_HSM_PKCS11_PIN];
    if (pin->secret == NULL)
        return kms_fail(KMS_ERR_CONFIG, "kms.hsm.protocol=pkcs11 (from %s) needs the token's user PIN: "
                                        "kms.hsm.pkcs11.pin.file (a file holding it) or KMS_HSM_PKCS11_PIN",
                        psrc);
    if (pin->source != NULL && strncmp(pin->source, "file ", 5) != 0 && strncmp(pin->source, "env ", 4) != 0)
        return kms_fail(KMS_ERR_CONFIG, "kms.hsm.pkcs11.pin is in clear at %s: put the PIN in a file only kmsd can "
                                        "read and name it with kms.hsm.pkcs11.pin.file (or set KMS_HSM_PKCS11_PIN)",
                        pin->source);
    return KMS_OK;
}

static kms_rc cross_check(const struct kms_config *c)
{
    if (kms_config_str(c, KMS_CFG_AUTH_CRL_URL)[0] != '\0' && kms_config_str(c, KMS_CFG_AUTH_CRL_FILE)[0] == '\0')
        return kms_fail(KMS_ERR_CONFIG, "kms.auth.crl.url (from %s) needs kms.auth.crl.file: the file where the "
                                        "fetched CRLs are kept, and read again at start",
                        kms_config_source(c, KMS_CFG_AUTH_CRL_URL));
    KMS_GUARD(cross_check_redis(c));
    if (c->v[KMS_CFG_AUDIT_KEY_ALIAS].str[0] != '\0' && c->v[KMS_CFG_AUDIT_KEY].secret != NULL)
        return kms_fail(KMS_ERR_CONFIG, "kms.audit.key.alias (from %s) and kms.audit.key (from %s) both name the audit "
                                        "key: set one",
                        kms_config_source(c, KMS_CFG_AUDIT_KEY_ALIAS), kms_config_source(c, KMS_CFG_AUDIT_KEY));
    const char *proto = c->v[KMS_CFG_HSM_PROTOCOL].str;
    const char *psrc = c->v[KMS_CFG_HSM_PROTOCOL].source;
    if (c->v[KMS_CFG_HSM_SERVER_URL].str[0] == '\0') {
        if (strcmp(proto, "kmip1") == 0)
            return kms_fail(KMS_ERR_CONFIG,
                            "kms.hsm.protocol=kmip1 needs kms.hsm.server.url (or legacy kmip.server.url); "
                            "kms.hsm.protocol from %s",
                            psrc);
        if (strcmp(proto, "VAULT") == 0)
            return kms_fail(KMS_ERR_CONFIG,
                            "kms.hsm.protocol=VAULT needs kms.hsm.server.url (the Vault address); "
                            "kms.hsm.protocol from %s",
                            psrc);
    }
    if (strcmp(proto, "kmip1") == 0) {
        char host[256];
        uint16_t port;
        KMS_GUARD(kms_config_kmip_endpoint(c, host, sizeof(host), &port));
    }
    if (strcmp(proto, "pkcs11") == 0)
        KMS_GUARD(cross_check_pkcs11(c, psrc));
    if (strcmp(c->v[KMS_CFG_HSM_VAULT_AUTH].str, "azure") == 0 && c->v[KMS_CFG_HSM_VAULT_AZURE_ROLE].str[0] == '\0')
        return kms_fail(KMS_ERR_CONFIG, "kms.hsm.vault.auth=azure (from %s) needs kms.hsm.vault.auth.azure.role",
                        c->v[KMS_CFG_HSM_VAULT_AUTH].source);
    return KMS_OK;
}

static kms_rc load(struct loader *L, struct kms_config *c)
{
    for (int k = 0; k < KMS_CFG_COUNT; k++)
        if (rows[k].type == 0 || rows[k].desc == NULL || (rows[k].type != T_SECRET && rows[k].def == NULL))
            return kms_fail(KMS_ERR_INTERNAL, "config: no table row for %s", names[k]);
    KMS_GUARD(make_env_names(L));
    if (L->path != NULL) {
        KMS_GUARD(kms_props_load(L->path, &L->props));
        KMS_GUARD(collect_file(L));
    }
    KMS_GUARD(collect_env(L));
    /* why: strict decides whether unknown names are warnings or errors, so it goes first */
    KMS_GUARD(resolve(L, c, KMS_CFG_CONFIG_STRICT));
    /* why: the cache file is a source of its own; its path must be known before the rest resolves */
    KMS_GUARD(resolve(L, c, KMS_CFG_CACHE_CONFIG_FILE));
    KMS_GUARD(load_cache_file(L, c));
    KMS_GUARD(report_unknown(L, (int)c->v[KMS_CFG_CONFIG_STRICT].num));
    for (int k = 0; k < KMS_CFG_COUNT; k++)
        if (k != KMS_CFG_CONFIG_STRICT && k != KMS_CFG_CACHE_CONFIG_FILE)
            KMS_GUARD(resolve(L, c, (enum kms_config_key)k));
    KMS_GUARD(apply_legacy(c));
    if (L->cache_path != NULL && strcmp(c->v[KMS_CFG_CACHE_TYPE].str, "distributed") != 0) {
        char msg[600];
        snprintf(msg, sizeof(msg),
                 "kms.distributed.cache.config.file is set (from %.256s) but kms.cache.type is %s, not distributed: "
                 "the distributed cache is off",
                 c->v[KMS_CFG_CACHE_CONFIG_FILE].source, c->v[KMS_CFG_CACHE_TYPE].str);
        emit(L, msg);
    }
    return cross_check(c);
}

static void free_layer(struct layer *l)
{
    for (int k = 0; k < KMS_CFG_COUNT; k++) {
        free(l->val[k].where);
        free(l->path[k].where);
    }
}

kms_rc kms_config_load(const char *path, char *const *envp, void (*warn)(void *ctx, const char *msg), void *ctx,
                       struct kms_config **out)
{
    *out = NULL;
    struct loader *L = calloc(1, sizeof(*L));
    struct kms_config *c = calloc(1, sizeof(*c));
    kms_rc rc;
    if (L == NULL || c == NULL) {
        rc = kms_fail(KMS_ERR_NO_MEMORY, "config: out of memory");
    } else {
        L->path = path;
        L->envp = envp;
        L->warn = warn;
        L->ctx = ctx;
        rc = load(L, c);
    }
    if (L != NULL) {
        kms_props_free(&L->props); /* wipes the values read from the files */
        kms_props_free(&L->cache_props);
        free_layer(&L->file);
        free_layer(&L->cache);
        free_layer(&L->env);
        free(L);
    }
    if (rc != KMS_OK) {
        kms_config_free(&c);
        return rc;
    }
    *out = c;
    return KMS_OK;
}

void kms_config_free(struct kms_config **c)
{
    if (c == NULL || *c == NULL)
        return;
    for (int k = 0; k < KMS_CFG_COUNT; k++) {
        struct slot *s = &(*c)->v[k];
        free(s->str);
        free(s->source);
        kms_secret_free(&s->secret);
    }
    free(*c);
    *c = NULL;
}

/* ---- live reload ------------------------------------------------------------ */

/* why: each of these is read where it is used, each time (or has a setter
 * kmsd calls on reload); everything else was handed to a component at start */
static const enum kms_config_key live_keys[] = {
    KMS_CFG_LOG_LEVEL,         KMS_CFG_CACHE_TTL,        KMS_CFG_CACHE_IDLE,
    KMS_CFG_AUTH_CRL_FILE,     KMS_CFG_AUTH_EXPIRY_WARN_DAYS, KMS_CFG_CLUSTER_KEYSTORE_CHECK_MS,
    KMS_CFG_CLUSTER_KEYSTORE_KEEP,
};

int kms_config_is_live(enum kms_config_key key)
{
    for (size_t i = 0; i < sizeof(live_keys) / sizeof(live_keys[0]); i++)
        if (live_keys[i] == key)
            return 1;
    return 0;
}

static int slot_equal(int type, const struct slot *a, const struct slot *b)
{
    switch (type) {
    case T_INT:
    case T_BOOL:
        return a->num == b->num;
    case T_SECRET:
        if (a->secret == NULL || b->secret == NULL)
            return a->secret == b->secret;
        return kms_secret_equal(a->secret, b->secret);
    default:
        return strcmp(a->str ? a->str : "", b->str ? b->str : "") == 0;
    }
}

static kms_rc slot_copy(const struct slot *from, struct slot *to)
{
    *to = (struct slot){.num = from->num, .set = from->set};
    if ((from->str != NULL && (to->str = strdup(from->str)) == NULL) ||
        (from->source != NULL && (to->source = strdup(from->source)) == NULL) ||
        (from->secret != NULL &&
         kms_secret_from(kms_secret_cdata(from->secret), kms_secret_len(from->secret), &to->secret) != KMS_OK))
        return kms_fail(KMS_ERR_NO_MEMORY, "configuration copy");
    return KMS_OK;
}

static void add_name(char *list, size_t cap, const char *name)
{
    size_t n = strlen(list);
    if (n + strlen(name) + 2 < cap)
        snprintf(list + n, cap - n, "%s%s", n ? "," : "", name);
}

kms_rc kms_config_merge_live(const struct kms_config *old, const struct kms_config *fresh, struct kms_config **out,
                             char *changed_live, char *pending, size_t cap)
{
    *out = calloc(1, sizeof(**out));
    if (*out == NULL)
        return kms_fail(KMS_ERR_NO_MEMORY, "configuration copy");
    if (cap > 0)
        changed_live[0] = pending[0] = '\0';
    for (int k = 0; k < KMS_CFG_COUNT; k++) {
        int live = kms_config_is_live((enum kms_config_key)k);
        int same = slot_equal(rows[k].type, &old->v[k], &fresh->v[k]);
        if (!same)
            add_name(live ? changed_live : pending, cap, names[k]);
        kms_rc rc = slot_copy(live ? &fresh->v[k] : &old->v[k], &(*out)->v[k]);
        if (rc != KMS_OK) {
            kms_config_free(out);
            return rc;
        }
    }
    return KMS_OK;
}

/* ---- reading ---------------------------------------------------------------- */

static int valid(enum kms_config_key key) { return (unsigned)key < KMS_CFG_COUNT; }

const char *kms_config_str(const struct kms_config *c, enum kms_config_key key)
{
    if (c == NULL || !valid(key) || (rows[key].type != T_STR && rows[key].type != T_ENUM) || c->v[key].str == NULL)
        return ""; /* why: never hand out a secret through the plain-string reader */
    return c->v[key].str;
}

long long kms_config_int(const struct kms_config *c, enum kms_config_key key)
{
    if (c == NULL || !valid(key) || rows[key].type != T_INT)
        return 0;
    return c->v[key].num;
}

int kms_config_bool(const struct kms_config *c, enum kms_config_key key)
{
    if (c == NULL || !valid(key) || rows[key].type != T_BOOL)
        return 0;
    return c->v[key].num != 0;
}

const char *kms_config_secret(const struct kms_config *c, enum kms_config_key key)
{
    if (c == NULL || !valid(key) || rows[key].type != T_SECRET || c->v[key].secret == NULL)
        return NULL;
    return (const char *)kms_secret_cdata(c->v[key].secret);
}

const char *kms_config_name(enum kms_config_key key) { return valid(key) ? names[key] : "?"; }

const char *kms_config_description(enum kms_config_key key)
{
    return valid(key) && rows[key].desc ? rows[key].desc : "";
}

const char *kms_config_source(const struct kms_config *c, enum kms_config_key key)
{
    if (c == NULL || !valid(key) || c->v[key].source == NULL)
        return "default";
    return c->v[key].source;
}

void kms_config_dump(const struct kms_config *c, FILE *out)
{
    for (int k = 0; k < KMS_CFG_COUNT; k++) {
        const struct slot *s = &c->v[k];
        fprintf(out, "# %s: %s\n", kms_config_is_live((enum kms_config_key)k) ? "live" : "restart", rows[k].desc);
        switch (rows[k].type) {
        case T_INT: fprintf(out, "%s = %lld", names[k], s->num); break;
        case T_BOOL: fprintf(out, "%s = %s", names[k], s->num ? "true" : "false"); break;
        case T_SECRET: fprintf(out, "%s = %s", names[k], s->secret ? "<redacted>" : "<unset>"); break;
        default: fprintf(out, "%s = %s", names[k], s->str ? s->str : ""); break;
        }
        fprintf(out, "   # %s\n", kms_config_source(c, (enum kms_config_key)k));
    }
    char host[256];
    uint16_t port;
    if (strcmp(c->v[KMS_CFG_HSM_PROTOCOL].str, "kmip1") == 0 &&
        kms_config_kmip_endpoint(c, host, sizeof(host), &port) == KMS_OK)
        fprintf(out, "# kmip1: kms.hsm.server.url read as host %s, port %u (KMIP over TLS)\n", host, (unsigned)port);
}

/* A Markdown cell: '|' escaped, no newline. */
static void cell(FILE *out, const char *s)
{
    for (; *s; s++) {
        if (*s == '|')
            fputs("\\|", out);
        else if (*s != '\n')
            fputc(*s, out);
    }
}

void kms_config_doc(FILE *out)
{
    fputs("# kms.properties reference\n\n"
          "Generated by `kmsd --config-doc` from the table in `kms/config.c`, the same table that\n"
          "`kmsd --check-config` prints and the loader checks; `lint_config_doc` fails when this file\n"
          "and the table differ. Each property can also be set by the environment: upper case, dots\n"
          "and dashes as underscores (`kms.server.port` -> `KMS_SERVER_PORT`); a secret also as a\n"
          "file (`kms.keystore.password.file`, `KMS_KEYSTORE_PASSWORD_FILE`). **live**: applied on\n"
          "SIGHUP or when kms.properties changes; **restart**: logged as pending until kmsd restarts.\n\n"
          "| property | type | default | allowed | applied | meaning |\n"
          "|---|---|---|---|---|---|\n",
          out);
    for (int k = 0; k < KMS_CFG_COUNT; k++) {
        const struct row *r = &rows[k];
        static const char *const type_names[] = {"", "text", "integer", "boolean", "one of", "secret"};
        fprintf(out, "| `%s` | %s | ", names[k], type_names[r->type]);
        if (r->type == T_SECRET)
            fputs("(none)", out);
        else if (r->def == NULL || r->def[0] == '\0')
            fputs("(empty)", out);
        else {
            fputs("`", out);
            cell(out, r->def);
            fputs("`", out);
        }
        fputs(" | ", out);
        if (r->type == T_INT)
            fprintf(out, "%lld..%lld", r->min, r->max);
        else if (r->type == T_ENUM)
            for (size_t i = 0; r->allowed[i] != NULL; i++)
                fprintf(out, "%s`%s`", i ? ", " : "", r->allowed[i]);
        else if (r->type == T_BOOL)
            fputs("`true`, `false`", out);
        else if (r->type == T_SECRET)
            fputs("redacted everywhere it is shown", out);
        else if (r->check != NULL)
            fputs("checked at load", out);
        fprintf(out, " | %s | ", kms_config_is_live((enum kms_config_key)k) ? "live" : "restart");
        cell(out, r->desc);
        fputs(" |\n", out);
    }
}
