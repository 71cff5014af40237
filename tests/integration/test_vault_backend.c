/* hsm/vault/: the Vault Transit backend, its client and auth, driven against
 * the VAULT STAND-IN (tests/stand-ins/vault/, not HashiCorp Vault).
 *
 * One shared stand-in is started for the whole binary (PRE_ALL) and stopped by
 * PID afterwards (POST_ALL); tests that change global state (seal, health,
 * stop/restart, TLS) start their own. Every test uses its own key names, so
 * tests running in parallel do not see each other's keys. */
#include "hsm/vault/vault_backend.h"

#include <criterion/criterion.h>
#include <curl/curl.h>
#include <fcntl.h>
#include <jansson.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <pthread.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "common/base64.h"
#include "common/log.h"
#include "common/secret.h"
#include "kms/hierarchy.h"
#include "kms/wrapped.h"

#define TMO .timeout = 90

extern char **environ;

/* ---- the stand-in ------------------------------------------------------- */

struct standin {
    char dir[64];
    char addr[128];
    char imds[128];
    char control[160];
    char token[128];
    char cacert[160];
    long pid;
};

static char shared_dir[64];

static int run(char *const argv[])
{
    pid_t pid;
    int status;
    if (posix_spawn(&pid, argv[0], NULL, NULL, argv, environ) != 0)
        return -1;
    if (waitpid(pid, &status, 0) != pid)
        return -1;
    return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

static void script_path(char *out, size_t cap)
{
    const char *src = getenv("KMS_SOURCE_DIR");
    snprintf(out, cap, "%s/tests/stand-ins/vault/standin.sh", src ? src : ".");
}

static void rm_tree(const char *dir)
{
    if (strncmp(dir, "/tmp/kms-test-vault-", 20) == 0) {
        char *argv[] = {"/bin/rm", "-rf", (char *)dir, NULL};
        (void)run(argv);
    }
}

static int env_get(const char *file, const char *key, char *out, size_t cap)
{
    FILE *f = fopen(file, "r");
    char line[512];
    size_t klen = strlen(key);
    int found = 0;
    out[0] = '\0';
    while (f != NULL && fgets(line, sizeof(line), f) != NULL) {
        if (strncmp(line, key, klen) == 0 && line[klen] == '=') {
            line[strcspn(line, "\n")] = '\0';
            snprintf(out, cap, "%s", line + klen + 1);
            found = 1;
            break;
        }
    }
    if (f != NULL)
        fclose(f);
    return found;
}

static int standin_load(const char *dir, struct standin *s)
{
    char env[128], tokfile[160], pid[32];
    memset(s, 0, sizeof(*s));
    snprintf(s->dir, sizeof(s->dir), "%s", dir);
    snprintf(env, sizeof(env), "%s/vault.env", dir);
    if (!env_get(env, "VAULT_ADDR", s->addr, sizeof(s->addr)) || !env_get(env, "IMDS_ADDR", s->imds, sizeof(s->imds)) ||
        !env_get(env, "STANDIN_CONTROL", s->control, sizeof(s->control)) ||
        !env_get(env, "VAULT_TOKEN_FILE", tokfile, sizeof(tokfile)) || !env_get(env, "PID", pid, sizeof(pid)))
        return -1;
    env_get(env, "VAULT_CACERT", s->cacert, sizeof(s->cacert));
    s->pid = strtol(pid, NULL, 10);
    FILE *f = fopen(tokfile, "r");
    if (f == NULL)
        return -1;
    size_t n = fread(s->token, 1, sizeof(s->token) - 1, f);
    fclose(f);
    s->token[n] = '\0';
    return n > 0 ? 0 : -1;
}

static int standin_spawn(const char *dir, int tls)
{
    char script[4096];
    script_path(script, sizeof(script));
    char *argv[] = {"/bin/bash", script, "start", (char *)dir, tls ? "--tls" : NULL, NULL};
    return run(argv);
}

/* why not kill(pid, 0) alone: the stand-in is not our child, and once it
 * exits it stays a zombie until PID 1 reaps it (a second or more in some
 * containers) */
static int running(long pid)
{
    char path[64], stat[512];
    if (kill((pid_t)pid, 0) != 0)
        return 0;
    snprintf(path, sizeof(path), "/proc/%ld/stat", pid);
    FILE *f = fopen(path, "r");
    if (f == NULL)
        return 0;
    size_t n = fread(stat, 1, sizeof(stat) - 1, f);
    fclose(f);
    stat[n] = '\0';
    const char *state = strrchr(stat, ')');
    return state == NULL || state[1] == '\0' || state[2] != 'Z';
}

static void stop_pid(long pid)
{
    if (pid <= 0 || kill((pid_t)pid, SIGTERM) != 0)
        return;
    for (int i = 0; i < 100 && running(pid); i++)
        usleep(50000);
    if (running(pid))
        kill((pid_t)pid, SIGKILL);
}

ReportHook(PRE_ALL)(struct criterion_test_set *set)
{
    (void)set;
    snprintf(shared_dir, sizeof(shared_dir), "/tmp/kms-test-vault-XXXXXX");
    if (mkdtemp(shared_dir) == NULL) {
        shared_dir[0] = '\0';
        return;
    }
    char d[96];
    snprintf(d, sizeof(d), "%s/shared", shared_dir);
    if (standin_spawn(d, 0) == 0)
        setenv("KMS_TEST_VAULT_DIR", d, 1);
}

ReportHook(POST_ALL)(struct criterion_global_stats *stats)
{
    (void)stats;
    const char *d = getenv("KMS_TEST_VAULT_DIR");
    struct standin s;
    if (d != NULL && standin_load(d, &s) == 0)
        stop_pid(s.pid);
    if (shared_dir[0] != '\0')
        rm_tree(shared_dir);
}

static struct standin *shared(void)
{
    static struct standin s;
    static int loaded;
    if (!loaded) {
        const char *d = getenv("KMS_TEST_VAULT_DIR");
        cr_assert_not_null(d, "the VAULT STAND-IN did not start (see tests/stand-ins/vault/standin.sh)");
        cr_assert_eq(standin_load(d, &s), 0, "cannot read %s/vault.env", d);
        loaded = 1;
    }
    return &s;
}

/* A private stand-in for a test that seals, restarts or reconfigures it. */
static void standin_start(struct standin *s, int tls)
{
    char dir[64];
    snprintf(dir, sizeof(dir), "/tmp/kms-test-vault-XXXXXX");
    cr_assert_not_null(mkdtemp(dir));
    char d[96];
    snprintf(d, sizeof(d), "%s/v", dir);
    cr_assert_eq(standin_spawn(d, tls), 0, "VAULT STAND-IN did not start");
    cr_assert_eq(standin_load(d, s), 0);
    snprintf(s->dir, sizeof(s->dir), "%s", dir); /* the mkdtemp root, removed by stop */
}

static void standin_stop(struct standin *s)
{
    stop_pid(s->pid);
    rm_tree(s->dir);
}

static void standin_restart(struct standin *s)
{
    char script[4096], d[96];
    script_path(script, sizeof(script));
    snprintf(d, sizeof(d), "%s/v", s->dir);
    char *argv[] = {"/bin/bash", script, "restart", d, NULL};
    cr_assert_eq(run(argv), 0, "VAULT STAND-IN did not restart");
    char root[64];
    snprintf(root, sizeof(root), "%s", s->dir);
    cr_assert_eq(standin_load(d, s), 0);
    snprintf(s->dir, sizeof(s->dir), "%s", root);
}

/* ---- raw HTTP to the stand-in (control endpoints and direct Vault calls) */

struct body {
    char *data;
    size_t len;
};

static size_t collect(char *p, size_t size, size_t n, void *ud)
{
    struct body *b = ud;
    char *d = realloc(b->data, b->len + size * n + 1);
    if (d == NULL)
        return 0;
    memcpy(d + b->len, p, size * n);
    b->len += size * n;
    d[b->len] = '\0';
    b->data = d;
    return size * n;
}

/* method url [token] [namespace] [body] -> status; *out (may be NULL) the parsed JSON reply. */
static long http(const struct standin *s, const char *method, const char *url, const char *token, const char *ns,
                 const char *body, json_t **out)
{
    CURL *h = curl_easy_init();
    struct curl_slist *hdr = NULL;
    struct body b = {NULL, 0};
    char line[300];
    long status = 0;
    cr_assert_not_null(h);
    if (token != NULL) {
        snprintf(line, sizeof(line), "X-Vault-Token: %s", token);
        hdr = curl_slist_append(hdr, line);
    }
    if (ns != NULL) {
        snprintf(line, sizeof(line), "X-Vault-Namespace: %s", ns);
        hdr = curl_slist_append(hdr, line);
    }
    curl_easy_setopt(h, CURLOPT_URL, url);
    curl_easy_setopt(h, CURLOPT_CUSTOMREQUEST, method);
    curl_easy_setopt(h, CURLOPT_HTTPHEADER, hdr);
    curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, collect);
    curl_easy_setopt(h, CURLOPT_WRITEDATA, &b);
    curl_easy_setopt(h, CURLOPT_TIMEOUT, 20L);
    if (s->cacert[0] != '\0')
        curl_easy_setopt(h, CURLOPT_CAINFO, s->cacert);
    if (body != NULL)
        curl_easy_setopt(h, CURLOPT_POSTFIELDS, body);
    CURLcode cc = curl_easy_perform(h);
    cr_assert_eq(cc, CURLE_OK, "%s %s: %s", method, url, curl_easy_strerror(cc));
    curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &status);
    curl_slist_free_all(hdr);
    curl_easy_cleanup(h);
    if (out != NULL) {
        json_error_t err;
        *out = b.len ? json_loadb(b.data, b.len, 0, &err) : NULL;
    }
    free(b.data);
    return status;
}

static void control(const struct standin *s, const char *method, const char *path, const char *body)
{
    char url[300];
    snprintf(url, sizeof(url), "%s%s", s->control, path);
    long st = http(s, method, url, NULL, NULL, body, NULL);
    cr_assert(st >= 200 && st < 300, "stand-in control %s %s: HTTP %ld", method, path, st);
}

/* Raw Vault call with the root token. */
static long vault_raw(const struct standin *s, const char *method, const char *path, const char *ns,
                      const char *body, json_t **out)
{
    char url[300];
    snprintf(url, sizeof(url), "%s%s", s->addr, path);
    return http(s, method, url, s->token, ns, body, out);
}

/* A token from the stand-in's /stand-in/tokens, into out. */
static void make_token(const struct standin *s, const char *spec, char *out, size_t cap)
{
    char url[300];
    json_t *j = NULL;
    snprintf(url, sizeof(url), "%s/tokens", s->control);
    cr_assert_eq(http(s, "POST", url, NULL, NULL, spec, &j), 200);
    const char *id = json_string_value(json_object_get(j, "id"));
    cr_assert_not_null(id);
    snprintf(out, cap, "%s", id);
    json_decref(j);
}

static long long last_seq(const struct standin *s)
{
    char url[300];
    json_t *j = NULL;
    snprintf(url, sizeof(url), "%s/requests", s->control);
    cr_assert_eq(http(s, "GET", url, NULL, NULL, NULL, &j), 200);
    json_t *arr = json_object_get(j, "requests");
    long long seq = 0;
    size_t n = json_array_size(arr);
    if (n > 0)
        seq = json_integer_value(json_object_get(json_array_get(arr, n - 1), "seq"));
    json_decref(j);
    return seq;
}

/* Requests recorded since seq (a new array the caller decrefs). */
static json_t *requests_since(const struct standin *s, long long seq)
{
    char url[300];
    json_t *j = NULL;
    snprintf(url, sizeof(url), "%s/requests?since=%lld", s->control, seq);
    cr_assert_eq(http(s, "GET", url, NULL, NULL, NULL, &j), 200);
    json_t *arr = json_incref(json_object_get(j, "requests"));
    json_decref(j);
    cr_assert(json_is_array(arr));
    return arr;
}

/* ---- backend helpers ---------------------------------------------------- */

static void opts_for(const struct standin *s, struct kms_vault_options *o)
{
    kms_log_set_level(KMS_LOG_ERROR);
    kms_vault_options_init(o);
    o->address = s->addr;
    o->token = s->token;
    o->imds_address = s->imds;
    o->timeout_ms = 8000;
    if (s->cacert[0] != '\0')
        o->ca_file = s->cacert;
}

static struct kms_backend *open_ok(const struct kms_vault_options *o)
{
    struct kms_backend *b = NULL;
    kms_rc rc = kms_vault_backend_open(o, &b);
    cr_assert_eq(rc, KMS_OK, "open: %s: %s", kms_error_name(rc), kms_error_detail());
    cr_assert_not_null(b);
    return b;
}

static struct kms_backend *open_shared(const char *ns)
{
    struct kms_vault_options o;
    opts_for(shared(), &o);
    o.ns = ns;
    return open_ok(&o);
}

static struct kms_secret *secret_of(const char *s)
{
    struct kms_secret *k = NULL;
    cr_assert_eq(kms_secret_from((const uint8_t *)s, strlen(s), &k), KMS_OK);
    return k;
}

#define AAD(s) (const uint8_t *)(s), strlen(s)

struct wrapped_ct {
    uint8_t ct[KMS_BACKEND_CT_MAX];
    size_t len;
    struct kms_master_ref ref;
};

static void wrap(struct kms_backend *b, const char *name, const char *aad, const struct kms_secret *pt,
                 struct wrapped_ct *w)
{
    kms_rc rc = b->ops->resolve(b, name, &w->ref);
    cr_assert_eq(rc, KMS_OK, "resolve %s: %s: %s", name, kms_error_name(rc), kms_error_detail());
    rc = b->ops->encrypt(b, &w->ref, AAD(aad), pt, w->ct, sizeof(w->ct), &w->len);
    cr_assert_eq(rc, KMS_OK, "encrypt: %s: %s", kms_error_name(rc), kms_error_detail());
}

static kms_rc unwrap(struct kms_backend *b, const struct wrapped_ct *w, const char *aad, struct kms_secret **pt)
{
    return b->ops->decrypt(b, &w->ref, AAD(aad), w->ct, w->len, pt);
}

static void unwrap_equals(struct kms_backend *b, const struct wrapped_ct *w, const char *aad,
                          const struct kms_secret *want)
{
    struct kms_secret *pt = NULL;
    kms_rc rc = unwrap(b, w, aad, &pt);
    cr_assert_eq(rc, KMS_OK, "decrypt: %s: %s", kms_error_name(rc), kms_error_detail());
    cr_assert(kms_secret_equal(pt, want), "decrypted bytes differ");
    kms_secret_free(&pt);
}

static void expect_rc(kms_rc got, kms_rc want, const char *what)
{
    cr_assert_eq(got, want, "%s: got %s, want %s (%s)", what, kms_error_name(got), kms_error_name(want),
                 kms_error_detail());
}

static void create_key(struct kms_backend *b, const char *name)
{
    kms_rc rc = kms_vault_create_key(b, name);
    cr_assert_eq(rc, KMS_OK, "create %s: %s: %s", name, kms_error_name(rc), kms_error_detail());
}

static void sleep_ms(long ms)
{
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

/* ---- basic operations --------------------------------------------------- */

Test(vault, encrypt_decrypt_round_trip, TMO)
{
    struct kms_backend *b = open_shared(NULL);
    create_key(b, "t-round");
    expect_rc(kms_vault_create_key(b, "t-round"), KMS_ERR_INVALID_FIELD, "create twice");

    struct kms_secret *pt = NULL;
    cr_assert_eq(kms_secret_random(32, &pt), KMS_OK);
    struct wrapped_ct w;
    wrap(b, "t-round", "header-1", pt, &w);
    cr_assert_str_eq(w.ref.name, "t-round");
    cr_assert_eq(w.ref.version, 1);
    cr_assert(w.len > 9 && memcmp(w.ct, "vault:v1:", 9) == 0, "Vault's own ciphertext is stored");
    /* 32-byte AAD digest + 32-byte key: 12 + 64 + 16 = 92 bytes, 124 base64 characters */
    cr_assert_eq(w.len, 9 + 124);
    unwrap_equals(b, &w, "header-1", pt);

    struct kms_key_info info;
    cr_assert_eq(b->ops->describe(b, "t-round", &info), KMS_OK);
    cr_assert_str_eq(info.backend, "vault");
    cr_assert_eq(info.current_version, 1);
    cr_assert_eq(info.min_version, 1);
    cr_assert_str_eq(info.algorithm, "AES-256-GCM");
    cr_assert(info.created > 0);
    expect_rc(b->ops->probe(b), KMS_OK, "probe");
    kms_secret_free(&pt);
    kms_backend_free(&b);
    cr_assert_null(b);
}

Test(vault, wrong_aad_or_tampered_ciphertext_is_unwrap, TMO)
{
    struct kms_backend *b = open_shared(NULL);
    create_key(b, "t-aad");
    struct kms_secret *pt = secret_of("customer key material 0123456789"), *out = NULL;
    struct wrapped_ct w;
    wrap(b, "t-aad", "site-A", pt, &w);
    expect_rc(unwrap(b, &w, "site-B", &out), KMS_ERR_UNWRAP, "wrong AAD");
    cr_assert_null(out);
    expect_rc(unwrap(b, &w, "", &out), KMS_ERR_UNWRAP, "empty AAD");

    struct wrapped_ct t = w; /* a changed base64 character: Vault's GCM tag fails */
    t.ct[20] = t.ct[20] == 'A' ? 'B' : 'A';
    expect_rc(unwrap(b, &t, "site-A", &out), KMS_ERR_UNWRAP, "tampered ciphertext");
    t = w; /* a ciphertext of another version than the wrapped key records */
    t.ref.version = 2;
    expect_rc(unwrap(b, &t, "site-A", &out), KMS_ERR_UNWRAP, "version mismatch");
    t = w;
    memcpy(t.ct, "hello", 5);
    t.len = 5;
    expect_rc(unwrap(b, &t, "site-A", &out), KMS_ERR_UNWRAP, "not a Vault ciphertext");
    t = w;
    t.len -= 4; /* still base64, shorter: Vault says invalid ciphertext / authentication failed */
    expect_rc(unwrap(b, &t, "site-A", &out), KMS_ERR_UNWRAP, "shortened ciphertext");
    cr_assert_null(out);
    unwrap_equals(b, &w, "site-A", pt);
    kms_secret_free(&pt);
    kms_backend_free(&b);
}

/* docs/vault.md "AAD binding": what Vault holds is SHA-256(aad) || key for a
 * plain key, and the bare key under context = base64(SHA-256(aad)) for a
 * derived one. Checked with raw Transit calls. */
Test(vault, aad_binding_on_the_wire, TMO)
{
    struct standin *s = shared();
    struct kms_backend *b = open_shared(NULL);
    create_key(b, "t-wire");
    cr_assert_eq(vault_raw(s, "POST", "/v1/transit/keys/t-wire-derived", NULL, "{\"derived\":true}", NULL), 200);
    struct kms_secret *pt = secret_of("0123456789abcdef0123456789abcdef");
    uint8_t digest[32];
    unsigned int dn = 0;
    cr_assert_eq(EVP_Digest("hdr", 3, digest, &dn, EVP_sha256(), NULL), 1);
    char ctx[64];
    cr_assert_eq(kms_b64_encode(digest, 32, ctx, sizeof(ctx)), KMS_OK);

    for (int derived = 0; derived < 2; derived++) {
        const char *name = derived ? "t-wire-derived" : "t-wire";
        struct wrapped_ct w;
        wrap(b, name, "hdr", pt, &w);
        char body[1024], path[128];
        if (derived)
            snprintf(body, sizeof(body), "{\"ciphertext\":\"%.*s\",\"context\":\"%s\"}", (int)w.len, w.ct, ctx);
        else
            snprintf(body, sizeof(body), "{\"ciphertext\":\"%.*s\"}", (int)w.len, w.ct);
        snprintf(path, sizeof(path), "/v1/transit/decrypt/%s", name);
        json_t *j = NULL;
        cr_assert_eq(vault_raw(s, "POST", path, NULL, body, &j), 200);
        const char *b64 = json_string_value(json_object_get(json_object_get(j, "data"), "plaintext"));
        cr_assert_not_null(b64);
        uint8_t raw[128];
        size_t n = 0;
        cr_assert_eq(kms_b64_decode(b64, strlen(b64), raw, sizeof(raw), &n), KMS_OK);
        if (derived) {
            cr_assert_eq(n, 32);
            cr_assert_eq(memcmp(raw, kms_secret_cdata(pt), 32), 0);
        } else {
            cr_assert_eq(n, 64);
            cr_assert_eq(memcmp(raw, digest, 32), 0, "SHA-256 of the AAD comes first");
            cr_assert_eq(memcmp(raw + 32, kms_secret_cdata(pt), 32), 0);
        }
        json_decref(j);
        unwrap_equals(b, &w, "hdr", pt);
        struct kms_secret *out = NULL;
        expect_rc(unwrap(b, &w, "other", &out), KMS_ERR_UNWRAP, derived ? "derived, wrong AAD" : "wrong AAD");
    }
    kms_secret_free(&pt);
    kms_backend_free(&b);
}

Test(vault, unknown_key_is_key_not_found, TMO)
{
    struct kms_backend *b = open_shared(NULL);
    struct kms_master_ref ref;
    struct kms_key_info info;
    struct kms_vault_key_meta meta;
    uint32_t v = 7;
    expect_rc(b->ops->resolve(b, "t-missing", &ref), KMS_ERR_KEY_NOT_FOUND, "resolve");
    cr_assert_eq(ref.version, 0);
    expect_rc(b->ops->describe(b, "t-missing", &info), KMS_ERR_KEY_NOT_FOUND, "describe");
    expect_rc(kms_vault_show_key(b, "t-missing", &meta), KMS_ERR_KEY_NOT_FOUND, "show");
    expect_rc(kms_vault_rotate_key(b, "t-missing", &v), KMS_ERR_KEY_NOT_FOUND, "rotate");
    cr_assert_eq(v, 0);
    expect_rc(b->ops->resolve(b, "bad/name", &ref), KMS_ERR_KEY_NOT_FOUND, "invalid name");
    expect_rc(b->ops->resolve(b, "-dash", &ref), KMS_ERR_KEY_NOT_FOUND, "invalid name");
    expect_rc(kms_vault_create_key(b, "bad name"), KMS_ERR_INVALID_FIELD, "create invalid name");

    /* a ciphertext of a key that does not exist (any more): decrypt says so */
    create_key(b, "t-present");
    struct kms_secret *pt = secret_of("k"), *out = NULL;
    struct wrapped_ct w;
    wrap(b, "t-present", "a", pt, &w);
    snprintf(w.ref.name, sizeof(w.ref.name), "t-missing-2");
    expect_rc(unwrap(b, &w, "a", &out), KMS_ERR_KEY_NOT_FOUND, "decrypt under a missing key");

    /* Vault's decrypt error for a key the metadata cache still knows */
    struct kms_master_ref ghost = {"t-present", 1};
    cr_assert_eq(vault_raw(shared(), "POST", "/v1/transit/keys/t-present/config", NULL,
                           "{\"deletion_allowed\":true}", NULL), 200);
    long st = vault_raw(shared(), "DELETE", "/v1/transit/keys/t-present", NULL, NULL, NULL);
    cr_assert(st == 204 || st == 200, "delete: HTTP %ld", st);
    expect_rc(b->ops->decrypt(b, &ghost, AAD("a"), w.ct, w.len, &out), KMS_ERR_KEY_NOT_FOUND, "key deleted");
    cr_assert_null(out);
    kms_secret_free(&pt);
    kms_backend_free(&b);
}

Test(vault, rotation_keeps_old_ciphertexts_and_rewrap_moves_them, TMO)
{
    struct standin *s = shared();
    struct kms_vault_options o;
    opts_for(s, &o);
    o.key_cache_ms = 0;
    struct kms_backend *b = open_ok(&o);
    create_key(b, "t-rot");
    struct kms_secret *pt = secret_of("a customer key of thirty-two b!!");
    struct wrapped_ct v1;
    wrap(b, "t-rot", "aad-r", pt, &v1);
    cr_assert_eq(v1.ref.version, 1);

    /* rotated in Vault by someone else */
    cr_assert_eq(vault_raw(s, "POST", "/v1/transit/keys/t-rot/rotate", NULL, NULL, NULL), 200);
    struct kms_master_ref ref;
    cr_assert_eq(b->ops->resolve(b, "t-rot", &ref), KMS_OK);
    cr_assert_eq(ref.version, 2, "resolve follows Vault's latest_version");
    unwrap_equals(b, &v1, "aad-r", pt);

    uint32_t nv = 0;
    cr_assert_eq(kms_vault_rotate_key(b, "t-rot", &nv), KMS_OK, "%s", kms_error_detail());
    cr_assert_eq(nv, 3);
    struct wrapped_ct v3;
    wrap(b, "t-rot", "aad-r", pt, &v3);
    cr_assert_eq(v3.ref.version, 3);
    cr_assert(memcmp(v3.ct, "vault:v3:", 9) == 0);

    struct wrapped_ct moved;
    kms_rc rc = kms_vault_rewrap(b, &v1.ref, AAD("aad-r"), v1.ct, v1.len, moved.ct, sizeof(moved.ct), &moved.len,
                                 &moved.ref);
    cr_assert_eq(rc, KMS_OK, "rewrap: %s", kms_error_detail());
    cr_assert_eq(moved.ref.version, 3);
    cr_assert_str_eq(moved.ref.name, "t-rot");
    cr_assert(memcmp(moved.ct, "vault:v3:", 9) == 0);
    unwrap_equals(b, &moved, "aad-r", pt);
    struct kms_secret *out = NULL;
    expect_rc(unwrap(b, &moved, "aad-x", &out), KMS_ERR_UNWRAP, "rewrapped, wrong AAD");
    struct wrapped_ct bad = moved;
    bad.ref.version = 1;
    expect_rc(unwrap(b, &bad, "aad-r", &out), KMS_ERR_UNWRAP, "rewrapped under the old reference");

    /* Vault refuses versions below min_decryption_version: one unwrap error */
    cr_assert_eq(vault_raw(s, "POST", "/v1/transit/keys/t-rot/config", NULL, "{\"min_decryption_version\":2}", NULL),
                 200);
    expect_rc(unwrap(b, &v1, "aad-r", &out), KMS_ERR_UNWRAP, "version below min_decryption_version");
    expect_rc(kms_vault_rewrap(b, &v1.ref, AAD("aad-r"), v1.ct, v1.len, moved.ct, sizeof(moved.ct), &moved.len,
                               &moved.ref),
              KMS_ERR_UNWRAP, "rewrap of a disallowed version");
    struct kms_vault_key_meta m;
    cr_assert_eq(kms_vault_show_key(b, "t-rot", &m), KMS_OK);
    cr_assert_eq(m.latest_version, 3);
    cr_assert_eq(m.min_decryption_version, 2);
    cr_assert_eq(m.versions, 3);
    cr_assert_str_eq(m.type, "aes256-gcm96");
    cr_assert_eq(m.derived, 0);
    struct kms_key_info info;
    cr_assert_eq(b->ops->describe(b, "t-rot", &info), KMS_OK);
    cr_assert_eq(info.min_version, 2);
    cr_assert_eq(info.current_version, 3);
    kms_secret_free(&pt);
    kms_backend_free(&b);
}

Test(vault, resolve_caches_the_version_briefly, TMO)
{
    struct standin *s = shared();
    struct kms_vault_options o;
    opts_for(s, &o);
    o.key_cache_ms = 700;
    struct kms_backend *b = open_ok(&o);
    create_key(b, "t-cache");
    struct kms_master_ref ref;
    cr_assert_eq(b->ops->resolve(b, "t-cache", &ref), KMS_OK);
    cr_assert_eq(ref.version, 1);
    cr_assert_eq(vault_raw(s, "POST", "/v1/transit/keys/t-cache/rotate", NULL, NULL, NULL), 200);
    cr_assert_eq(b->ops->resolve(b, "t-cache", &ref), KMS_OK);
    cr_assert_eq(ref.version, 1, "cached");
    sleep_ms(900);
    cr_assert_eq(b->ops->resolve(b, "t-cache", &ref), KMS_OK);
    cr_assert_eq(ref.version, 2, "refreshed after key_cache_ms");
    kms_backend_free(&b);
}

Test(vault, key_types_kmsd_cannot_wrap_with_are_refused, TMO)
{
    struct standin *s = shared();
    struct kms_backend *b = open_shared(NULL);
    cr_assert_eq(vault_raw(s, "POST", "/v1/transit/keys/t-chacha", NULL, "{\"type\":\"chacha20-poly1305\"}", NULL),
                 200);
    struct kms_secret *pt = secret_of("chacha");
    struct wrapped_ct w;
    wrap(b, "t-chacha", "x", pt, &w);
    unwrap_equals(b, &w, "x", pt);
    struct kms_key_info info;
    cr_assert_eq(b->ops->describe(b, "t-chacha", &info), KMS_OK);
    cr_assert_str_eq(info.algorithm, "ChaCha20-Poly1305");
    kms_secret_free(&pt);
    kms_backend_free(&b);
}

/* ---- namespaces --------------------------------------------------------- */

Test(vault, namespaces_isolate_keys_and_the_header_is_sent, TMO)
{
    struct standin *s = shared();
    long long seq = last_seq(s);
    struct kms_backend *a = open_shared("t-ns1");
    struct kms_backend *b = open_shared("t-ns2");
    create_key(a, "t-nskey");
    struct kms_master_ref ref;
    expect_rc(b->ops->resolve(b, "t-nskey", &ref), KMS_ERR_KEY_NOT_FOUND, "key of another namespace");
    create_key(b, "t-nskey");
    struct kms_secret *pt = secret_of("namespaced"), *out = NULL;
    struct wrapped_ct w;
    wrap(a, "t-nskey", "n", pt, &w);
    expect_rc(unwrap(b, &w, "n", &out), KMS_ERR_UNWRAP, "same name, other namespace's key");
    unwrap_equals(a, &w, "n", pt);
    expect_rc(a->ops->probe(a), KMS_OK, "probe");
    json_t *reqs = requests_since(s, seq);
    /* the raw view agrees: the key is not in the root namespace */
    cr_assert_eq(vault_raw(s, "GET", "/v1/transit/keys/t-nskey", NULL, NULL, NULL), 404);
    cr_assert_eq(vault_raw(s, "GET", "/v1/transit/keys/t-nskey", "t-ns1", NULL, NULL), 200);

    size_t i, transit = 0, auth = 0, health = 0;
    json_t *r;
    json_array_foreach(reqs, i, r)
    {
        const char *path = json_string_value(json_object_get(r, "path"));
        json_t *ns = json_object_get(r, "namespace");
        json_t *tok = json_object_get(r, "token");
        if (strcmp(path, "/v1/sys/health") == 0) {
            health++;
            cr_assert(json_is_null(ns), "sys/health must not carry X-Vault-Namespace");
            cr_assert(json_is_null(tok), "sys/health needs no token");
        } else if (strstr(path, "t-nskey") != NULL && json_is_string(tok)) {
            transit++;
            cr_assert(json_is_string(ns), "transit call %s without namespace", path);
        } else if (strcmp(path, "/v1/auth/token/lookup-self") == 0 && json_is_string(ns) &&
                   strncmp(json_string_value(ns), "t-ns", 4) == 0) {
            auth++;
        }
    }
    cr_assert(transit >= 4, "%zu transit calls", transit);
    cr_assert_eq(auth, 2, "lookup-self in each namespace");
    cr_assert(health >= 1);
    json_decref(reqs);
    kms_secret_free(&pt);
    kms_backend_free(&a);
    kms_backend_free(&b);
}

/* ---- token auth ----------------------------------------------------------- */

struct loop_result {
    int failures;
    char first_failure[256];
};

/* encrypt + decrypt every 150 ms for ms milliseconds */
static void keep_busy(struct kms_backend *b, const char *key, long ms, struct loop_result *r)
{
    struct kms_secret *pt = secret_of("busy busy busy busy busy busy 32");
    memset(r, 0, sizeof(*r));
    for (long t = 0; t < ms; t += 150) {
        struct wrapped_ct w;
        struct kms_secret *out = NULL;
        kms_rc rc = b->ops->resolve(b, key, &w.ref);
        if (rc == KMS_OK)
            rc = b->ops->encrypt(b, &w.ref, AAD("busy"), pt, w.ct, sizeof(w.ct), &w.len);
        if (rc == KMS_OK)
            rc = unwrap(b, &w, "busy", &out);
        if (rc != KMS_OK && r->failures++ == 0)
            snprintf(r->first_failure, sizeof(r->first_failure), "%s: %s", kms_error_name(rc), kms_error_detail());
        kms_secret_free(&out);
        sleep_ms(150);
    }
    kms_secret_free(&pt);
}

static long stat_count(const struct standin *s, const char *endpoint)
{
    char url[300];
    json_t *j = NULL;
    snprintf(url, sizeof(url), "%s/stats", s->control);
    cr_assert_eq(http(s, "GET", url, NULL, NULL, NULL, &j), 200);
    long n = (long)json_integer_value(json_object_get(json_object_get(json_object_get(j, "endpoints"), endpoint),
                                                      "count"));
    json_decref(j);
    return n;
}

Test(vault, short_ttl_token_is_renewed_before_expiry, TMO)
{
    struct standin *s = shared();
    char tok[128];
    make_token(s, "{\"policies\":[\"transit\",\"default\"],\"ttl\":4,\"renewable\":true,\"explicit_max_ttl\":600}",
               tok, sizeof(tok));
    struct kms_backend *admin = open_shared(NULL);
    create_key(admin, "t-renew");
    kms_backend_free(&admin);
    long renews_before = stat_count(s, "vault POST /v1/auth/token/renew-self");
    struct kms_vault_options o;
    opts_for(s, &o);
    o.token = tok;
    o.renew_before_expiry = 2;
    struct kms_backend *b = open_ok(&o);
    struct loop_result r;
    keep_busy(b, "t-renew", 9000, &r); /* more than twice the TTL */
    cr_assert_eq(r.failures, 0, "%d failed requests; first: %s", r.failures, r.first_failure);
    struct kms_vault_status st;
    cr_assert_eq(kms_vault_status(b, &st), KMS_OK);
    cr_assert_eq(st.auth.kind, KMS_VAULT_AUTH_TOKEN);
    cr_assert(st.auth.renewals >= 3, "%lu renewals", st.auth.renewals);
    cr_assert_eq(st.auth.lookups, 1);
    cr_assert(st.auth.valid);
    cr_assert(st.auth.ttl > 0 && st.auth.ttl <= 4);
    cr_assert(stat_count(s, "vault POST /v1/auth/token/renew-self") - renews_before >= 3);
    kms_backend_free(&b);
}

/* A lease shorter than renew-before-expiry (30 s by default) is renewed 2/3
 * of the way through instead of in a tight loop. */
Test(vault, lease_shorter_than_renew_before_is_renewed_at_two_thirds, TMO)
{
    struct standin *s = shared();
    char tok[128];
    make_token(s, "{\"policies\":[\"transit\",\"default\"],\"ttl\":3,\"renewable\":true}", tok, sizeof(tok));
    struct kms_backend *admin = open_shared(NULL);
    create_key(admin, "t-renew23");
    kms_backend_free(&admin);
    struct kms_vault_options o;
    opts_for(s, &o);
    o.token = tok;
    struct kms_backend *b = open_ok(&o);
    struct loop_result r;
    keep_busy(b, "t-renew23", 7000, &r);
    cr_assert_eq(r.failures, 0, "%d failed requests; first: %s", r.failures, r.first_failure);
    struct kms_vault_status st;
    cr_assert_eq(kms_vault_status(b, &st), KMS_OK);
    cr_assert(st.auth.renewals >= 2 && st.auth.renewals <= 5, "%lu renewals in 7 s of a 3 s lease",
              st.auth.renewals);
    kms_backend_free(&b);
}

static char *read_stream(FILE *f)
{
    fflush(f);
    long n = ftell(f);
    char *buf = calloc(1, (size_t)n + 1);
    rewind(f);
    cr_assert_eq(fread(buf, 1, (size_t)n, f), (size_t)n);
    return buf;
}

Test(vault, non_renewable_token_expires_with_a_clear_error, TMO)
{
    struct standin *s = shared();
    char tok[128];
    make_token(s, "{\"policies\":[\"transit\",\"default\"],\"ttl\":2,\"renewable\":false}", tok, sizeof(tok));
    struct kms_backend *admin = open_shared(NULL);
    create_key(admin, "t-nonrenew");
    kms_backend_free(&admin);
    FILE *log = tmpfile();
    kms_log_set_stream(log);
    struct kms_vault_options o;
    opts_for(s, &o);
    kms_log_set_level(KMS_LOG_DEBUG);
    o.token = tok;
    o.renew_before_expiry = 1;
    struct kms_backend *b = open_ok(&o);
    struct kms_master_ref ref;
    cr_assert_eq(b->ops->resolve(b, "t-nonrenew", &ref), KMS_OK);
    sleep_ms(2600);
    kms_error_clear();
    struct kms_key_info info;
    expect_rc(b->ops->describe(b, "t-nonrenew", &info), KMS_ERR_BACKEND, "expired token");
    cr_assert(strstr(kms_error_detail(), "cannot log in again") != NULL, "%s", kms_error_detail());
    cr_assert_null(strstr(kms_error_detail(), tok), "the token must not be in the detail");
    expect_rc(b->ops->probe(b), KMS_ERR_BACKEND, "probe with an expired token");
    struct kms_vault_status st;
    cr_assert_eq(kms_vault_status(b, &st), KMS_OK);
    cr_assert_eq(st.auth.valid, 0);
    cr_assert_eq(st.auth.renewable, 0);
    kms_backend_free(&b);
    kms_log_set_stream(stderr);
    char *text = read_stream(log);
    fclose(log);
    cr_assert_not_null(strstr(text, "vault.token_not_renewable"), "%s", text);
    cr_assert_not_null(strstr(text, "vault.token_expiring"), "%s", text);
    cr_assert_null(strstr(text, tok), "the token must not be logged");
    free(text);
}

Test(vault, token_at_max_ttl_is_warned_about, TMO)
{
    struct standin *s = shared();
    char tok[128];
    make_token(s, "{\"policies\":[\"transit\",\"default\"],\"ttl\":2,\"renewable\":true,\"explicit_max_ttl\":3}", tok,
               sizeof(tok));
    FILE *log = tmpfile();
    kms_log_set_stream(log);
    struct kms_vault_options o;
    opts_for(s, &o);
    kms_log_set_level(KMS_LOG_DEBUG);
    o.token = tok;
    o.renew_before_expiry = 1;
    struct kms_backend *b = open_ok(&o);
    sleep_ms(4000);
    struct kms_key_info info;
    expect_rc(b->ops->describe(b, "t-maxttl", &info), KMS_ERR_BACKEND, "past its max TTL");
    struct kms_vault_status st;
    cr_assert_eq(kms_vault_status(b, &st), KMS_OK);
    cr_assert_eq(st.auth.valid, 0, "past its max TTL");
    cr_assert(st.auth.renewals >= 1);
    kms_backend_free(&b);
    kms_log_set_stream(stderr);
    char *text = read_stream(log);
    fclose(log);
    cr_assert_not_null(strstr(text, "vault.token_max_ttl"), "%s", text);
    cr_assert_null(strstr(text, tok));
    free(text);
}

Test(vault, permission_denied_reauthenticates_once_then_fails, TMO)
{
    struct standin *s = shared();
    control(s, "POST", "/config",
            "{\"policies\":{\"t-enc-only\":{\"transit/encrypt/*\":[\"update\"],\"transit/keys/*\":[\"read\"]}}}");
    char tok[128];
    make_token(s, "{\"policies\":[\"t-enc-only\",\"default\"],\"ttl\":600,\"renewable\":true}", tok, sizeof(tok));
    struct kms_backend *admin = open_shared(NULL);
    create_key(admin, "t-deny");
    kms_backend_free(&admin);
    FILE *log = tmpfile();
    kms_log_set_stream(log);
    struct kms_vault_options o;
    opts_for(s, &o);
    kms_log_set_level(KMS_LOG_DEBUG);
    o.token = tok;
    struct kms_backend *b = open_ok(&o);
    struct kms_secret *pt = secret_of("deny"), *out = NULL;
    struct wrapped_ct w;
    wrap(b, "t-deny", "d", pt, &w);
    expect_rc(unwrap(b, &w, "d", &out), KMS_ERR_BACKEND, "decrypt not allowed by policy");
    cr_assert_not_null(strstr(kms_error_detail(), "permission denied"), "%s", kms_error_detail());
    struct kms_vault_status st;
    cr_assert_eq(kms_vault_status(b, &st), KMS_OK);
    cr_assert_eq(st.auth.lookups, 2, "one lookup at open, one after the 403");
    cr_assert(st.auth.valid, "the token itself is fine");

    /* revoked: the re-authentication finds the token invalid */
    char body[200];
    snprintf(body, sizeof(body), "{\"id\":\"%s\"}", tok);
    control(s, "POST", "/tokens/revoke", body);
    struct kms_master_ref ref;
    kms_error_clear();
    expect_rc(b->ops->encrypt(b, &w.ref, AAD("d"), pt, w.ct, sizeof(w.ct), &w.len), KMS_ERR_BACKEND,
              "revoked token");
    cr_assert_not_null(strstr(kms_error_detail(), "invalid"), "%s", kms_error_detail());
    (void)ref;
    kms_backend_free(&b);
    kms_log_set_stream(stderr);
    char *text = read_stream(log);
    fclose(log);
    cr_assert_not_null(strstr(text, "vault.forbidden"));
    cr_assert_null(strstr(text, tok), "the token must not be logged");
    free(text);
    kms_secret_free(&pt);
}

/* ---- Azure auth --------------------------------------------------------- */

static void azure_opts(const struct standin *s, struct kms_vault_options *o, const char *role)
{
    opts_for(s, o);
    o->auth = KMS_VAULT_AUTH_AZURE;
    o->token = NULL;
    o->azure_role = role;
}

Test(vault, azure_login_through_imds, TMO)
{
    struct standin priv, *s = &priv; /* why: its own, so that only this test's requests are in the log */
    standin_start(s, 0);
    struct kms_vault_options o;
    opts_for(s, &o);
    struct kms_backend *admin = open_ok(&o);
    create_key(admin, "t-azure");
    kms_backend_free(&admin);
    long long seq = last_seq(s);
    azure_opts(s, &o, "kmsd");
    struct kms_backend *b = open_ok(&o);
    struct kms_secret *pt = secret_of("azure key");
    struct wrapped_ct w;
    wrap(b, "t-azure", "az", pt, &w);
    unwrap_equals(b, &w, "az", pt);
    struct kms_vault_status st;
    cr_assert_eq(kms_vault_status(b, &st), KMS_OK);
    cr_assert_eq(st.auth.kind, KMS_VAULT_AUTH_AZURE);
    cr_assert_eq(st.auth.logins, 1);
    cr_assert(st.auth.valid);

    json_t *reqs = requests_since(s, seq);
    size_t i;
    json_t *r;
    int imds_token = 0, imds_instance = 0, login = 0;
    json_array_foreach(reqs, i, r)
    {
        const char *listener = json_string_value(json_object_get(r, "listener"));
        const char *path = json_string_value(json_object_get(r, "path"));
        const char *query = json_string_value(json_object_get(r, "query"));
        if (strcmp(listener, "imds") == 0) {
            cr_assert_str_eq(json_string_value(json_object_get(r, "metadata")), "true");
            cr_assert(json_is_false(json_object_get(r, "x_forwarded_for")));
            cr_assert(json_is_null(json_object_get(r, "token")), "no Vault token to IMDS");
            if (strcmp(path, "/metadata/identity/oauth2/token") == 0) {
                imds_token++;
                cr_assert_not_null(strstr(query, "api-version=2018-02-01"), "%s", query);
                cr_assert_not_null(strstr(query, "resource=https%3A%2F%2Fvault.hashicorp.com%2F"), "%s", query);
            } else if (strcmp(path, "/metadata/instance") == 0) {
                imds_instance++;
                cr_assert_not_null(strstr(query, "api-version=2021-02-01"), "%s", query);
            }
        } else if (strcmp(path, "/v1/auth/azure/login") == 0) {
            login++;
            cr_assert(json_is_null(json_object_get(r, "token")), "login carries no token");
            cr_assert_eq(json_integer_value(json_object_get(r, "status")), 200);
        }
    }
    cr_assert_eq(imds_token, 1);
    cr_assert_eq(imds_instance, 1);
    cr_assert_eq(login, 1);
    json_decref(reqs);
    kms_secret_free(&pt);
    kms_backend_free(&b);
    standin_stop(s);
}

Test(vault, azure_non_renewable_token_leads_to_a_new_login, TMO)
{
    struct standin *s = shared();
    control(s, "POST", "/config",
            "{\"azure\":{\"roles\":{\"t-short\":{\"token_policies\":[\"transit\",\"default\"],\"token_ttl\":2,"
            "\"token_max_ttl\":10,\"renewable\":false}}}}");
    struct kms_backend *admin = open_shared(NULL);
    create_key(admin, "t-azshort");
    kms_backend_free(&admin);
    struct kms_vault_options o;
    azure_opts(s, &o, "t-short");
    o.renew_before_expiry = 1;
    struct kms_backend *b = open_ok(&o);
    struct loop_result r;
    keep_busy(b, "t-azshort", 6000, &r);
    cr_assert_eq(r.failures, 0, "%d failed requests; first: %s", r.failures, r.first_failure);
    struct kms_vault_status st;
    cr_assert_eq(kms_vault_status(b, &st), KMS_OK);
    cr_assert(st.auth.logins >= 3, "%lu logins", st.auth.logins);
    cr_assert_eq(st.auth.renewals, 0);
    kms_backend_free(&b);
}

Test(vault, azure_token_at_max_ttl_leads_to_a_new_login, TMO)
{
    struct standin *s = shared();
    control(s, "POST", "/config",
            "{\"azure\":{\"roles\":{\"t-capped\":{\"token_policies\":[\"transit\",\"default\"],\"token_ttl\":2,"
            "\"token_max_ttl\":3,\"renewable\":true}}}}");
    struct kms_backend *admin = open_shared(NULL);
    create_key(admin, "t-azcap");
    kms_backend_free(&admin);
    struct kms_vault_options o;
    azure_opts(s, &o, "t-capped");
    o.renew_before_expiry = 1;
    struct kms_backend *b = open_ok(&o);
    struct loop_result r;
    keep_busy(b, "t-azcap", 6000, &r);
    cr_assert_eq(r.failures, 0, "%d failed requests; first: %s", r.failures, r.first_failure);
    struct kms_vault_status st;
    cr_assert_eq(kms_vault_status(b, &st), KMS_OK);
    cr_assert(st.auth.logins >= 2, "%lu logins", st.auth.logins);
    cr_assert(st.auth.renewals >= 1, "%lu renewals", st.auth.renewals);
    kms_backend_free(&b);
}

Test(vault, azure_refusals_are_backend_errors, TMO)
{
    struct standin *s = shared();
    struct kms_vault_options o;
    struct kms_backend *b = NULL;
    azure_opts(s, &o, "no-such-role");
    expect_rc(kms_vault_backend_open(&o, &b), KMS_ERR_BACKEND, "unknown role");
    cr_assert_not_null(strstr(kms_error_detail(), "invalid role name"), "%s", kms_error_detail());
    cr_assert_null(b);
    azure_opts(s, &o, "kmsd");
    o.azure_resource = "https://vault.hashicorp.com"; /* no trailing slash: audience mismatch (§3) */
    expect_rc(kms_vault_backend_open(&o, &b), KMS_ERR_BACKEND, "wrong resource");
    cr_assert_null(b);
    azure_opts(s, &o, "kmsd");
    o.imds_address = "http://127.0.0.1:1";
    expect_rc(kms_vault_backend_open(&o, &b), KMS_ERR_BACKEND_UNAVAILABLE, "IMDS unreachable");
    cr_assert_not_null(strstr(kms_error_detail(), "IMDS"), "%s", kms_error_detail());
    azure_opts(s, &o, "");
    expect_rc(kms_vault_backend_open(&o, &b), KMS_ERR_CONFIG, "no role");
}

/* ---- Vault sealed, down, unhealthy ----------------------------------------- */

Test(vault, sealed_is_unavailable_and_recovers, TMO)
{
    struct standin s;
    standin_start(&s, 0);
    struct kms_vault_options o;
    opts_for(&s, &o);
    struct kms_backend *b = open_ok(&o);
    create_key(b, "t-seal");
    struct kms_secret *pt = secret_of("sealed"), *out = NULL;
    struct wrapped_ct w;
    wrap(b, "t-seal", "s", pt, &w);
    control(&s, "POST", "/seal", "{}");
    expect_rc(unwrap(b, &w, "s", &out), KMS_ERR_BACKEND_UNAVAILABLE, "decrypt while sealed");
    cr_assert_not_null(strstr(kms_error_detail(), "Vault is sealed"), "%s", kms_error_detail());
    expect_rc(b->ops->encrypt(b, &w.ref, AAD("s"), pt, w.ct, sizeof(w.ct), &w.len), KMS_ERR_BACKEND_UNAVAILABLE,
              "encrypt while sealed");
    expect_rc(b->ops->probe(b), KMS_ERR_BACKEND_UNAVAILABLE, "probe while sealed");
    struct kms_vault_status st;
    cr_assert_eq(kms_vault_status(b, &st), KMS_OK);
    cr_assert_eq(st.health.status, 503);
    cr_assert_eq(st.health.sealed, 1);
    control(&s, "POST", "/unseal", "{}");
    wrap(b, "t-seal", "s", pt, &w);
    unwrap_equals(b, &w, "s", pt);
    expect_rc(b->ops->probe(b), KMS_OK, "probe after unseal");
    kms_secret_free(&pt);
    kms_backend_free(&b);
    standin_stop(&s);
}

Test(vault, down_is_unavailable_and_recovers, TMO)
{
    struct standin s;
    standin_start(&s, 0);
    struct kms_vault_options o;
    opts_for(&s, &o);
    struct kms_backend *b = open_ok(&o);
    create_key(b, "t-down");
    struct kms_secret *pt = secret_of("down"), *out = NULL;
    struct wrapped_ct w;
    wrap(b, "t-down", "d", pt, &w);
    stop_pid(s.pid);
    expect_rc(unwrap(b, &w, "d", &out), KMS_ERR_BACKEND_UNAVAILABLE, "decrypt while down");
    expect_rc(b->ops->probe(b), KMS_ERR_BACKEND_UNAVAILABLE, "probe while down");
    struct kms_vault_status st;
    expect_rc(kms_vault_status(b, &st), KMS_ERR_BACKEND_UNAVAILABLE, "status while down");
    cr_assert_eq(st.health.status, 0);
    cr_assert_str_eq(st.address, s.addr);
    standin_restart(&s);
    unwrap_equals(b, &w, "d", pt); /* same key state: the old ciphertext still decrypts */
    expect_rc(b->ops->probe(b), KMS_OK, "probe after restart");
    kms_secret_free(&pt);
    kms_backend_free(&b);
    standin_stop(&s);

    struct kms_vault_options gone;
    opts_for(&s, &gone);
    struct kms_backend *none = NULL;
    expect_rc(kms_vault_backend_open(&gone, &none), KMS_ERR_BACKEND_UNAVAILABLE, "open while down");
    cr_assert_null(none);
}

Test(vault, health_states_map_to_probe_results, TMO)
{
    struct standin s;
    standin_start(&s, 0);
    struct kms_vault_options o;
    opts_for(&s, &o);
    struct kms_backend *b = open_ok(&o);
    struct kms_vault_status st;
    cr_assert_eq(kms_vault_status(b, &st), KMS_OK);
    cr_assert_eq(st.health.status, 200);
    cr_assert_eq(st.health.initialized, 1);
    cr_assert_str_neq(st.health.version, "");
    control(&s, "POST", "/health", "{\"standby\":true}");
    expect_rc(b->ops->probe(b), KMS_OK, "standby forwards requests");
    cr_assert_eq(kms_vault_status(b, &st), KMS_OK);
    cr_assert_eq(st.health.status, 429);
    cr_assert_eq(st.health.standby, 1);
    control(&s, "POST", "/health", "{\"standby\":false,\"performance_standby\":true}");
    expect_rc(b->ops->probe(b), KMS_OK, "performance standby");
    control(&s, "POST", "/health", "{\"performance_standby\":false,\"initialized\":false}");
    expect_rc(b->ops->probe(b), KMS_ERR_BACKEND_UNAVAILABLE, "not initialised");
    control(&s, "POST", "/health", "{\"initialized\":true}");
    expect_rc(b->ops->probe(b), KMS_OK, "healthy again");
    kms_backend_free(&b);
    standin_stop(&s);
}

/* ---- garbage, truncated, oversized, slow replies ---------------------------- */

static void fault(const struct standin *s, const char *spec)
{
    control(s, "POST", "/fault", spec);
}

static void clear_faults(const struct standin *s) { control(s, "POST", "/fault/clear", "{}"); }

Test(vault, bad_replies_are_backend_errors_without_crash, TMO)
{
    struct standin *s = shared();
    struct kms_vault_options o;
    opts_for(s, &o);
    o.timeout_ms = 1500;
    struct kms_backend *b = open_ok(&o);
    create_key(b, "t-fault");
    struct kms_secret *pt = secret_of("faulty"), *out = NULL;
    struct wrapped_ct good, w;
    wrap(b, "t-fault", "f", pt, &good);
    /* fresh: the reply is well-formed JSON with status 200, so the client keeps
     * the connection; the stand-in answers a fault without reading the request
     * body (unlike Vault), so that connection is not reused for the next case */
    static const struct {
        const char *spec;
        kms_rc want;
        int fresh;
    } cases[] = {
        {"{\"mode\":\"garbage\",\"count\":-1,\"path\":\"/decrypt/t-fault\"}", KMS_ERR_BACKEND, 0},
        {"{\"mode\":\"truncated\",\"count\":-1,\"path\":\"/decrypt/t-fault\"}", KMS_ERR_BACKEND, 0},
        {"{\"mode\":\"short\",\"count\":-1,\"path\":\"/decrypt/t-fault\"}", KMS_ERR_BACKEND, 0},
        {"{\"mode\":\"empty\",\"count\":-1,\"path\":\"/decrypt/t-fault\"}", KMS_ERR_BACKEND, 0},
        {"{\"mode\":\"oversized\",\"count\":-1,\"path\":\"/decrypt/t-fault\",\"size\":2097152}", KMS_ERR_BACKEND, 0},
        {"{\"mode\":\"close\",\"count\":-1,\"path\":\"/decrypt/t-fault\"}", KMS_ERR_BACKEND_UNAVAILABLE, 0},
        {"{\"mode\":\"delay\",\"count\":-1,\"path\":\"/decrypt/t-fault\",\"delay_ms\":2500}", KMS_ERR_BACKEND_TIMEOUT, 0},
        {"{\"mode\":\"status\",\"count\":-1,\"path\":\"/decrypt/t-fault\",\"status\":500,\"errors\":[\"boom\"]}",
         KMS_ERR_BACKEND, 0},
        {"{\"mode\":\"status\",\"count\":-1,\"path\":\"/decrypt/t-fault\",\"status\":502,\"errors\":[]}",
         KMS_ERR_BACKEND, 0},
        {"{\"mode\":\"status\",\"count\":-1,\"path\":\"/decrypt/t-fault\",\"status\":503,\"errors\":[\"overloaded, "
         "try again later\"]}",
         KMS_ERR_BACKEND_UNAVAILABLE, 0},
        {"{\"mode\":\"status\",\"count\":-1,\"path\":\"/decrypt/t-fault\",\"status\":429,\"errors\":[\"rate limit "
         "quota exceeded\"]}",
         KMS_ERR_BACKEND_UNAVAILABLE, 0},
        {"{\"mode\":\"status\",\"count\":-1,\"path\":\"/decrypt/t-fault\",\"status\":400,\"errors\":[\"encryption "
         "key not found\"]}",
         KMS_ERR_KEY_NOT_FOUND, 0},
        {"{\"mode\":\"status\",\"count\":-1,\"path\":\"/decrypt/t-fault\",\"status\":302,\"errors\":[]}",
         KMS_ERR_BACKEND, 0},
        /* well-formed JSON of the wrong shape */
        {"{\"mode\":\"garbage\",\"count\":-1,\"path\":\"/decrypt/t-fault\",\"body\":\"{\\\"data\\\":{\\\"plaintext\\\":"
         "42}}\"}",
         KMS_ERR_BACKEND, 1},
        {"{\"mode\":\"garbage\",\"count\":-1,\"path\":\"/decrypt/t-fault\",\"body\":\"{\\\"data\\\":{\\\"plaintext\\\":"
         "\\\"!!notbase64\\\"}}\"}",
         KMS_ERR_BACKEND, 1},
        {"{\"mode\":\"garbage\",\"count\":-1,\"path\":\"/decrypt/t-fault\",\"body\":\"{\\\"data\\\":{\\\"plaintext\\\":"
         "\\\"\\\"}}\"}",
         KMS_ERR_BACKEND, 1},
        {"{\"mode\":\"garbage\",\"count\":-1,\"path\":\"/decrypt/t-fault\",\"body\":\"{\\\"data\\\":[]}\"}",
         KMS_ERR_BACKEND, 1},
        {"{\"mode\":\"garbage\",\"count\":-1,\"path\":\"/decrypt/t-fault\",\"body\":\"{\\\"data\\\":{},\\\"data\\\":"
         "{}}\"}",
         KMS_ERR_BACKEND, 0},
        {"{\"mode\":\"garbage\",\"count\":-1,\"path\":\"/decrypt/t-fault\",\"body\":\"{\\\"data\\\":{}} trailing\"}",
         KMS_ERR_BACKEND, 0},
        {"{\"mode\":\"garbage\",\"count\":-1,\"path\":\"/decrypt/t-fault\",\"body\":\"[1,2,3]\"}", KMS_ERR_BACKEND, 0},
        /* a plaintext without kmsd's AAD digest in front: not what kmsd encrypted */
        {"{\"mode\":\"garbage\",\"count\":-1,\"path\":\"/decrypt/t-fault\",\"body\":\"{\\\"data\\\":{\\\"plaintext\\\":"
         "\\\"AAAA\\\"}}\"}",
         KMS_ERR_UNWRAP, 1},
    };
    for (size_t i = 0; i < KMS_ARRAY_LEN(cases); i++) {
        fault(s, cases[i].spec);
        kms_error_clear();
        kms_rc rc = unwrap(b, &good, "f", &out);
        clear_faults(s);
        cr_assert_eq(rc, cases[i].want, "case %zu (%s): got %s (%s)", i, cases[i].spec, kms_error_name(rc),
                     kms_error_detail());
        cr_assert_null(out);
        if (cases[i].fresh) {
            kms_backend_free(&b);
            b = open_ok(&o);
        }
        unwrap_equals(b, &good, "f", pt); /* recovers at once */
    }
    /* encrypt replies of the wrong shape */
    static const char *const enc_cases[] = {
        "{\"mode\":\"garbage\",\"count\":-1,\"path\":\"/encrypt/t-fault\",\"body\":\"{\\\"data\\\":{\\\"ciphertext\\\":"
        "123}}\"}",
        "{\"mode\":\"garbage\",\"count\":-1,\"path\":\"/encrypt/t-fault\",\"body\":\"{\\\"data\\\":{\\\"ciphertext\\\":"
        "\\\"vault:v1:AAAA\\\"}}\"}",
        "{\"mode\":\"garbage\",\"count\":-1,\"path\":\"/encrypt/t-fault\",\"body\":\"{\\\"data\\\":{\\\"ciphertext\\\":"
        "\\\"vault:v2:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA\\\"}}\"}",
        "{\"mode\":\"garbage\",\"count\":-1,\"path\":\"/encrypt/t-fault\",\"body\":\"{\\\"data\\\":{\\\"ciphertext\\\":"
        "\\\"vault:v1:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA\\\",\\\"key_version\\\":7}}\"}",
        "{\"mode\":\"truncated\",\"count\":-1,\"path\":\"/encrypt/t-fault\"}",
    };
    for (size_t i = 0; i < KMS_ARRAY_LEN(enc_cases); i++) {
        fault(s, enc_cases[i]);
        kms_rc rc = b->ops->encrypt(b, &good.ref, AAD("f"), pt, w.ct, sizeof(w.ct), &w.len);
        clear_faults(s);
        cr_assert_eq(rc, KMS_ERR_BACKEND, "encrypt case %zu: got %s (%s)", i, kms_error_name(rc), kms_error_detail());
        cr_assert_eq(w.len, 0);
        kms_backend_free(&b); /* why: as for the "fresh" cases above */
        b = open_ok(&o);
    }
    /* a reply larger than the cap names the cap in the detail */
    fault(s, "{\"mode\":\"oversized\",\"count\":-1,\"path\":\"/keys/t-fault\",\"size\":1100000}");
    struct kms_key_info info;
    expect_rc(b->ops->describe(b, "t-fault", &info), KMS_ERR_BACKEND, "oversized key info");
    cr_assert_not_null(strstr(kms_error_detail(), "larger than"), "%s", kms_error_detail());
    clear_faults(s);
    expect_rc(b->ops->describe(b, "t-fault", &info), KMS_OK, "describe after the fault");
    kms_secret_free(&pt);
    kms_backend_free(&b);
}

Test(vault, imds_faults_are_retried_then_reported, TMO)
{
    struct standin *s = shared();
    struct kms_vault_options o;
    struct kms_backend *b = NULL;
    azure_opts(s, &o, "kmsd");
    /* one 500 from IMDS is retried (§3): the open succeeds */
    fault(s, "{\"mode\":\"status\",\"count\":1,\"listener\":\"imds\",\"path\":\"/metadata/identity\",\"status\":500}");
    b = open_ok(&o);
    kms_backend_free(&b);
    clear_faults(s);
    fault(s, "{\"mode\":\"status\",\"count\":-1,\"listener\":\"imds\",\"path\":\"/metadata/identity\",\"status\":500}");
    expect_rc(kms_vault_backend_open(&o, &b), KMS_ERR_BACKEND_UNAVAILABLE, "IMDS keeps failing");
    clear_faults(s);
    fault(s, "{\"mode\":\"garbage\",\"count\":-1,\"listener\":\"imds\",\"path\":\"/metadata/instance\"}");
    expect_rc(kms_vault_backend_open(&o, &b), KMS_ERR_BACKEND, "IMDS garbage");
    clear_faults(s);
    fault(s, "{\"mode\":\"status\",\"count\":-1,\"listener\":\"imds\",\"path\":\"/metadata/identity\",\"status\":400}");
    expect_rc(kms_vault_backend_open(&o, &b), KMS_ERR_BACKEND, "IMDS refuses");
    clear_faults(s);
    cr_assert_null(b);
}

/* ---- TLS -------------------------------------------------------------------- */

static uint8_t *slurp(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    cr_assert_not_null(f, "%s", path);
    uint8_t *buf = malloc(65536);
    *len = fread(buf, 1, 65536, f);
    fclose(f);
    return buf;
}

Test(vault, tls_is_verified_against_the_given_cas, TMO)
{
    struct standin s;
    standin_start(&s, 1);
    cr_assert(strncmp(s.addr, "https://", 8) == 0);
    struct kms_vault_options o;
    struct kms_backend *b = NULL;

    opts_for(&s, &o); /* ca_file */
    b = open_ok(&o);
    create_key(b, "t-tls");
    kms_backend_free(&b);

    size_t len = 0;
    uint8_t *pem = slurp(s.cacert, &len);
    opts_for(&s, &o);
    o.ca_file = NULL;
    o.ca_pem = pem;
    o.ca_pem_len = len;
    b = open_ok(&o);
    struct kms_secret *pt = secret_of("over tls");
    struct wrapped_ct w;
    wrap(b, "t-tls", "t", pt, &w);
    unwrap_equals(b, &w, "t", pt);
    kms_backend_free(&b);

    BIO *bio = BIO_new_mem_buf(pem, (int)len);
    STACK_OF(X509) *certs = sk_X509_new_null();
    sk_X509_push(certs, PEM_read_bio_X509(bio, NULL, NULL, NULL));
    BIO_free(bio);
    opts_for(&s, &o);
    o.ca_file = NULL;
    o.ca_certs = certs;
    b = open_ok(&o);
    expect_rc(b->ops->probe(b), KMS_OK, "probe over TLS");
    kms_backend_free(&b);
    sk_X509_pop_free(certs, X509_free);

    opts_for(&s, &o); /* the system store does not know the test CA */
    o.ca_file = NULL;
    expect_rc(kms_vault_backend_open(&o, &b), KMS_ERR_BACKEND_UNAVAILABLE, "untrusted server certificate");
    cr_assert_null(b);

    /* another CA */
    char other[128], key[128], subj[] = "/CN=another test CA";
    snprintf(other, sizeof(other), "%s/other-ca.crt", s.dir);
    snprintf(key, sizeof(key), "%s/other-ca.key", s.dir);
    char *argv[] = {"/usr/bin/openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
                    "-nodes", "-keyout", key, "-out", other, "-subj", subj, "-days", "1", NULL};
    cr_assert_eq(run(argv), 0);
    opts_for(&s, &o);
    o.ca_file = other;
    expect_rc(kms_vault_backend_open(&o, &b), KMS_ERR_BACKEND_UNAVAILABLE, "certificate of another CA");
    cr_assert_null(b);

    /* plain http to a TLS port is not a Vault reply */
    char plain[1024];
    snprintf(plain, sizeof(plain), "http://%s", s.addr + 8);
    opts_for(&s, &o);
    o.address = plain;
    kms_rc rc = kms_vault_backend_open(&o, &b);
    cr_assert(rc == KMS_ERR_BACKEND || rc == KMS_ERR_BACKEND_UNAVAILABLE, "%s", kms_error_name(rc));
    free(pem);
    kms_secret_free(&pt);
    standin_stop(&s);
}

/* ---- the hierarchy with this backend -------------------------------------- */

static void hierarchy_flow(struct kms_backend *b, const char *master)
{
    struct kms_hierarchy *h = NULL;
    cr_assert_eq(kms_hierarchy_new(b, NULL, master, &h), KMS_OK);
    char *ck = NULL, *uk = NULL, *wk = NULL, *g = NULL, *g2 = NULL;
    kms_rc rc = kms_hierarchy_create_customer(h, "site-1", &ck);
    cr_assert_eq(rc, KMS_OK, "%s: %s", kms_error_name(rc), kms_error_detail());
    cr_assert_eq(kms_hierarchy_create_user(h, "site-1", ck, &uk), KMS_OK, "%s", kms_error_detail());
    cr_assert_eq(kms_hierarchy_create_workspace(h, "site-1", ck, uk, &wk), KMS_OK, "%s", kms_error_detail());
    struct kms_secret *k1 = NULL, *k2 = NULL;
    cr_assert_eq(kms_hierarchy_unwrap_workspace(h, "site-1", ck, uk, wk, &k1), KMS_OK, "%s", kms_error_detail());
    cr_assert_eq(kms_secret_len(k1), KMS_KEY_BYTES);
    expect_rc(kms_hierarchy_unwrap_workspace(h, "site-2", ck, uk, wk, &k2), KMS_ERR_UNWRAP, "another site");

    struct kms_wrapped_info wi;
    cr_assert_eq(kms_wrapped_describe(ck, &wi), KMS_OK);
    cr_assert_str_eq(wi.wrapper, "vault");
    cr_assert_str_eq(wi.master_name, master);
    cr_assert_eq(wi.master_version, 1);

    const uint8_t data[] = "generic secret";
    cr_assert_eq(kms_hierarchy_wrap(h, master, "site-1", data, sizeof(data), &g), KMS_OK, "%s", kms_error_detail());
    uint32_t nv = 0;
    cr_assert_eq(kms_vault_rotate_key(b, master, &nv), KMS_OK);
    cr_assert_eq(nv, 2);
    /* version-1 keys still unwrap after the rotation */
    cr_assert_eq(kms_hierarchy_unwrap_workspace(h, "site-1", ck, uk, wk, &k2), KMS_OK, "%s", kms_error_detail());
    cr_assert(kms_secret_equal(k1, k2));
    kms_secret_free(&k2);
    cr_assert_eq(kms_hierarchy_unwrap(h, master, "site-1", g, &k2), KMS_OK, "%s", kms_error_detail());
    cr_assert_eq(kms_secret_len(k2), sizeof(data));
    cr_assert_eq(memcmp(kms_secret_cdata(k2), data, sizeof(data)), 0);
    kms_secret_free(&k2);
    cr_assert_eq(kms_hierarchy_rewrap(h, master, "site-1", g, &g2), KMS_OK, "%s", kms_error_detail());
    cr_assert_eq(kms_wrapped_describe(g2, &wi), KMS_OK);
    cr_assert_eq(wi.master_version, 2, "rewrap moves to the current version");
    cr_assert_eq(kms_hierarchy_unwrap(h, master, "site-1", g2, &k2), KMS_OK, "%s", kms_error_detail());
    kms_secret_free(&k2);
    expect_rc(kms_hierarchy_unwrap(h, master, "site-9", g2, &k2), KMS_ERR_UNWRAP, "generic, another site");

    struct kms_key_info info;
    cr_assert_eq(kms_hierarchy_key_info(h, master, &info), KMS_OK);
    cr_assert_eq(info.current_version, 2);
    kms_secret_free(&k1);
    free(ck);
    free(uk);
    free(wk);
    free(g);
    free(g2);
    kms_hierarchy_free(&h);
}

Test(vault, hierarchy_with_token_auth, TMO)
{
    struct standin *s = shared();
    struct kms_vault_options o;
    opts_for(s, &o);
    o.key_cache_ms = 0;
    struct kms_backend *b = open_ok(&o);
    create_key(b, "t-hier-token");
    hierarchy_flow(b, "t-hier-token");
    kms_backend_free(&b);
}

Test(vault, hierarchy_with_azure_auth, TMO)
{
    struct standin *s = shared();
    struct kms_backend *admin = open_shared(NULL);
    create_key(admin, "t-hier-azure");
    kms_backend_free(&admin);
    struct kms_vault_options o;
    azure_opts(s, &o, "kmsd");
    o.key_cache_ms = 0;
    struct kms_backend *b = open_ok(&o);
    hierarchy_flow(b, "t-hier-azure");
    kms_backend_free(&b);
}

/* ---- batches ------------------------------------------------------------------ */

static void batch_round(struct kms_backend *b, const char *name)
{
    enum { N = 5 };
    static const char *const aads[N] = {"a0", "a1", "a2", "a3", "a4"};
    struct kms_secret *pts[N];
    uint8_t cts[N][512];
    struct kms_vault_enc_item enc[N];
    struct kms_master_ref ref;
    cr_assert_eq(b->ops->resolve(b, name, &ref), KMS_OK);
    for (int i = 0; i < N; i++) {
        cr_assert_eq(kms_secret_random(32, &pts[i]), KMS_OK);
        enc[i] = (struct kms_vault_enc_item){(const uint8_t *)aads[i], 2, pts[i], cts[i], sizeof(cts[i]), 0,
                                             KMS_ERR_INTERNAL};
    }
    cr_assert_eq(kms_vault_encrypt_batch(b, &ref, enc, N), KMS_OK, "%s", kms_error_detail());
    for (int i = 0; i < N; i++)
        cr_assert_eq(enc[i].rc, KMS_OK, "item %d", i);

    struct kms_vault_dec_item dec[N];
    for (int i = 0; i < N; i++)
        dec[i] = (struct kms_vault_dec_item){(const uint8_t *)aads[i], 2, ref.version, cts[i], enc[i].ct_len, NULL,
                                             KMS_ERR_INTERNAL};
    dec[1].aad = (const uint8_t *)"zz";            /* wrong AAD */
    dec[2].ct_len = 4;                             /* "vaul": malformed, never sent */
    dec[3].version = ref.version + 1;              /* not the version the ciphertext has */
    uint8_t tampered[512];
    memcpy(tampered, cts[4], enc[4].ct_len);
    tampered[15] = tampered[15] == 'A' ? 'B' : 'A'; /* Vault fails this item alone */
    dec[4].ct = tampered;
    cr_assert_eq(kms_vault_decrypt_batch(b, name, dec, N), KMS_OK, "%s", kms_error_detail());
    cr_assert_eq(dec[0].rc, KMS_OK);
    cr_assert(kms_secret_equal(dec[0].pt, pts[0]));
    for (int i = 1; i < N; i++) {
        cr_assert_eq(dec[i].rc, KMS_ERR_UNWRAP, "item %d: %s", i, kms_error_name(dec[i].rc));
        cr_assert_null(dec[i].pt);
    }
    for (int i = 0; i < N; i++) {
        kms_secret_free(&dec[i].pt);
        dec[i] = (struct kms_vault_dec_item){(const uint8_t *)aads[i], 2, ref.version, cts[i], enc[i].ct_len, NULL,
                                             KMS_ERR_INTERNAL};
    }
    cr_assert_eq(kms_vault_decrypt_batch(b, name, dec, N), KMS_OK, "%s", kms_error_detail());
    for (int i = 0; i < N; i++) {
        cr_assert_eq(dec[i].rc, KMS_OK, "item %d", i);
        cr_assert(kms_secret_equal(dec[i].pt, pts[i]), "item %d", i);
        kms_secret_free(&dec[i].pt);
        kms_secret_free(&pts[i]);
    }
}

Test(vault, batch_encrypt_and_decrypt, TMO)
{
    struct standin *s = shared();
    long long seq = last_seq(s);
    struct kms_backend *b = open_shared(NULL);
    create_key(b, "t-batch");
    cr_assert_eq(vault_raw(s, "POST", "/v1/transit/keys/t-batch-derived", NULL, "{\"derived\":true}", NULL), 200);
    batch_round(b, "t-batch");
    batch_round(b, "t-batch-derived");

    json_t *reqs = requests_since(s, seq);
    size_t i, calls = 0;
    json_t *r;
    json_array_foreach(reqs, i, r)
    {
        const char *path = json_string_value(json_object_get(r, "path"));
        if (strncmp(path, "/v1/transit/encrypt/t-batch", 27) == 0 || strncmp(path, "/v1/transit/decrypt/t-batch", 27) == 0)
            calls++;
    }
    cr_assert_eq(calls, 6, "one request per batch: %zu", calls);
    json_decref(reqs);

    /* whole-call failures */
    struct kms_master_ref ref = {"t-batch-missing", 1};
    struct kms_secret *pt = secret_of("x");
    uint8_t ct[256];
    struct kms_vault_enc_item one = {(const uint8_t *)"a", 1, pt, ct, sizeof(ct), 0, KMS_OK};
    expect_rc(kms_vault_encrypt_batch(b, &ref, &one, 1), KMS_ERR_KEY_NOT_FOUND, "batch on a missing key");
    cr_assert_eq(one.rc, KMS_ERR_KEY_NOT_FOUND);
    expect_rc(kms_vault_encrypt_batch(b, &ref, &one, 0), KMS_ERR_INVALID_FIELD, "empty batch");
    expect_rc(kms_vault_encrypt_batch(b, &ref, &one, KMS_VAULT_BATCH_MAX + 1), KMS_ERR_INVALID_FIELD, "too many");
    kms_secret_free(&pt);
    kms_backend_free(&b);
}

/* ---- concurrency --------------------------------------------------------------- */

struct worker {
    struct kms_backend *b;
    int failures;
};

static void *work(void *arg)
{
    struct worker *w = arg;
    struct kms_secret *pt = NULL;
    if (kms_secret_random(32, &pt) != KMS_OK)
        return NULL;
    for (int i = 0; i < 40; i++) {
        struct wrapped_ct c;
        struct kms_secret *out = NULL;
        kms_rc rc = w->b->ops->resolve(w->b, "t-threads", &c.ref);
        if (rc == KMS_OK)
            rc = w->b->ops->encrypt(w->b, &c.ref, AAD("thr"), pt, c.ct, sizeof(c.ct), &c.len);
        if (rc == KMS_OK)
            rc = w->b->ops->decrypt(w->b, &c.ref, AAD("thr"), c.ct, c.len, &out);
        if (rc != KMS_OK || !kms_secret_equal(out, pt))
            w->failures++;
        kms_secret_free(&out);
    }
    kms_secret_free(&pt);
    return NULL;
}

Test(vault, threads_share_one_backend, TMO)
{
    struct kms_backend *b = open_shared(NULL);
    create_key(b, "t-threads");
    pthread_t t[6];
    struct worker w[6];
    for (int i = 0; i < 6; i++) {
        w[i] = (struct worker){b, 0};
        cr_assert_eq(pthread_create(&t[i], NULL, work, &w[i]), 0);
    }
    for (int i = 0; i < 6; i++) {
        pthread_join(t[i], NULL);
        cr_assert_eq(w[i].failures, 0, "thread %d", i);
    }
    kms_backend_free(&b);
}

/* ---- options ------------------------------------------------------------------ */

Test(vault, invalid_options_are_config_errors, TMO)
{
    struct standin *s = shared();
    struct kms_vault_options o;
    struct kms_backend *b = NULL;
    static const char *const bad_addresses[] = {
        "", "ftp://127.0.0.1:8200", "https://user:pw@127.0.0.1", "https://127.0.0.1/v1", "https://127.0.0.1?x=1",
        "https://127.0.0.1 :8200", "127.0.0.1:8200", "https://",
    };
    for (size_t i = 0; i < KMS_ARRAY_LEN(bad_addresses); i++) {
        opts_for(s, &o);
        o.address = bad_addresses[i];
        expect_rc(kms_vault_backend_open(&o, &b), KMS_ERR_CONFIG, bad_addresses[i]);
        cr_assert_null(b);
    }
    opts_for(s, &o);
    o.ns = "bad ns";
    expect_rc(kms_vault_backend_open(&o, &b), KMS_ERR_CONFIG, "namespace with a space");
    opts_for(s, &o);
    o.ns = "ns\r\nX-Evil: 1";
    expect_rc(kms_vault_backend_open(&o, &b), KMS_ERR_CONFIG, "namespace with CRLF");
    opts_for(s, &o);
    o.token = NULL;
    expect_rc(kms_vault_backend_open(&o, &b), KMS_ERR_CONFIG, "no token");
    opts_for(s, &o);
    o.token = "hvs.abc\nX-Evil: 1";
    expect_rc(kms_vault_backend_open(&o, &b), KMS_ERR_CONFIG, "token with a newline");
    opts_for(s, &o);
    o.ca_pem = (const uint8_t *)"not a certificate";
    o.ca_pem_len = 17;
    expect_rc(kms_vault_backend_open(&o, &b), KMS_ERR_CONFIG, "CA PEM without a certificate");
    opts_for(s, &o);
    o.ca_file = "/nonexistent/ca.pem";
    expect_rc(kms_vault_backend_open(&o, &b), KMS_ERR_CONFIG, "missing CA file");
    opts_for(s, &o);
    o.timeout_ms = 0;
    expect_rc(kms_vault_backend_open(&o, &b), KMS_ERR_CONFIG, "zero timeout");
    opts_for(s, &o);
    o.token = "hvs.not-a-known-token";
    expect_rc(kms_vault_backend_open(&o, &b), KMS_ERR_BACKEND, "unknown token");
    cr_assert_null(strstr(kms_error_detail(), "hvs.not-a-known-token"), "%s", kms_error_detail());
    cr_assert_null(b);

    /* not a Vault backend */
    struct kms_vault_key_meta m;
    struct kms_backend fake = {NULL};
    expect_rc(kms_vault_show_key(&fake, "k", &m), KMS_ERR_INVALID_FIELD, "not a Vault backend");
    expect_rc(kms_vault_create_key(NULL, "k"), KMS_ERR_INVALID_FIELD, "NULL backend");
}

Test(vault, address_from_url_and_port, TMO)
{
    char out[256];
    cr_assert_eq(kms_vault_address("vault.example.com", 8200, out, sizeof(out)), KMS_OK);
    cr_assert_str_eq(out, "https://vault.example.com:8200");
    cr_assert_eq(kms_vault_address("https://vault:8201", 8200, out, sizeof(out)), KMS_OK);
    cr_assert_str_eq(out, "https://vault:8201");
    cr_assert_eq(kms_vault_address("http://vault/", 0, out, sizeof(out)), KMS_OK);
    cr_assert_str_eq(out, "http://vault");
    cr_assert_eq(kms_vault_address("https://10.0.0.1", 443, out, sizeof(out)), KMS_OK);
    cr_assert_str_eq(out, "https://10.0.0.1:443");
    expect_rc(kms_vault_address("", 8200, out, sizeof(out)), KMS_ERR_CONFIG, "empty");
    expect_rc(kms_vault_address("https://vault", 70000, out, sizeof(out)), KMS_ERR_CONFIG, "port");
    expect_rc(kms_vault_address("https://a-long-host-name", 8200, out, 10), KMS_ERR_CONFIG, "too long");
    cr_assert(kms_vault_key_name_valid("a"));
    cr_assert(kms_vault_key_name_valid("kms-master.v_2"));
    cr_assert(!kms_vault_key_name_valid("a."));
    cr_assert(!kms_vault_key_name_valid(".a"));
    cr_assert(!kms_vault_key_name_valid("a/b"));
    cr_assert(!kms_vault_key_name_valid(""));
    cr_assert(!kms_vault_key_name_valid(NULL));
}
