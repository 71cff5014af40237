/* hsm/kmip against a real KMIP server: PyKMIP 0.10.0 started once for this
 * binary by tests/stand-ins/pykmip/pykmip.sh (loopback, its own PKI from
 * deploy/pki/dev-pki.sh, stopped by PID). The client, the backend ops, the
 * key hierarchy on top of them, rotation, an outage and the recovery after
 * it, and the TLS failures an operator must be told about in words.
 *
 * KMS_PYKMIP_DIR, when set, names a directory where pykmip.sh already runs
 * a server (e.g. a ctest fixture); otherwise the binary starts its own in a
 * mkdtemp directory (PRE_ALL) and kills it and removes the directory at the
 * end (POST_ALL). Tests that stop a server start a private one in a
 * subdirectory, so parallel tests keep theirs. */
#include "hsm/kmip/kmip_backend.h"

#include <criterion/criterion.h>
#include <criterion/hooks.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "common/log.h"
#include "common/secret.h"
#include "kms/hierarchy.h"
#include "kms/wrapped.h"

#define T 180 /* the same timeout everywhere (Criterion + ASan leak when they differ) */

/* ---- the harness ------------------------------------------------------- */

static char own_dir[128];

static void harness(const char *verb, const char *dir, const char *extra_env)
{
    const char *src = getenv("KMS_SOURCE_DIR");
    char cmd[1024];
    snprintf(cmd, sizeof(cmd), "%s %s/tests/stand-ins/pykmip/pykmip.sh %s %s >> %s/harness.out 2>&1",
             extra_env ? extra_env : "", src ? src : ".", verb, dir, dir);
    int rc = system(cmd);
    if (rc != 0) {
        char out[256];
        snprintf(out, sizeof(out), "tail -n 30 %s/harness.out >&2", dir);
        (void)!system(out);
    }
    cr_assert_eq(rc, 0, "pykmip.sh %s %s failed (see %s/harness.out)", verb, dir, dir);
}

ReportHook(PRE_ALL)(struct criterion_test_set *set)
{
    (void)set;
    if (getenv("KMS_PYKMIP_DIR") != NULL)
        return;
    snprintf(own_dir, sizeof(own_dir), "/tmp/kms-test-pykmip-XXXXXX");
    if (mkdtemp(own_dir) == NULL) {
        own_dir[0] = '\0';
        return;
    }
    const char *src = getenv("KMS_SOURCE_DIR");
    char cmd[1024];
    snprintf(cmd, sizeof(cmd), "%s/tests/stand-ins/pykmip/pykmip.sh start %s > %s/harness.out 2>&1",
             src ? src : ".", own_dir, own_dir);
    if (system(cmd) != 0) {
        snprintf(cmd, sizeof(cmd), "cat %s/harness.out >&2", own_dir);
        (void)!system(cmd);
    }
    setenv("KMS_PYKMIP_DIR", own_dir, 1);
}

ReportHook(POST_ALL)(struct criterion_global_stats *stats)
{
    (void)stats;
    if (own_dir[0] == '\0')
        return;
    const char *src = getenv("KMS_SOURCE_DIR");
    static const char *const subdirs[] = {"", "/outage", "/wrongname"};
    char cmd[1024];
    for (size_t i = 0; i < KMS_ARRAY_LEN(subdirs); i++) {
        snprintf(cmd, sizeof(cmd),
                 "[ ! -f %s%s/pykmip.env ] || %s/tests/stand-ins/pykmip/pykmip.sh kill %s%s >/dev/null", own_dir,
                 subdirs[i], src ? src : ".", own_dir, subdirs[i]);
        (void)!system(cmd);
    }
    if (getenv("KMS_KEEP_PYKMIP") == NULL) {
        snprintf(cmd, sizeof(cmd), "rm -rf %s", own_dir);
        (void)!system(cmd);
    }
}

struct env {
    char dir[512];
    char host[64];
    unsigned port;
    char cert[600], key[600], chain[600], ca[600], log[600];
};

static void read_env(const char *dir, struct env *e)
{
    char path[700], line[800];
    memset(e, 0, sizeof(*e));
    snprintf(e->dir, sizeof(e->dir), "%s", dir);
    snprintf(path, sizeof(path), "%s/pykmip.env", dir);
    FILE *f = fopen(path, "r");
    cr_assert_not_null(f, "no %s: the PyKMIP harness did not start", path);
    while (fgets(line, sizeof(line), f) != NULL) {
        line[strcspn(line, "\n")] = '\0';
        char *eq = strchr(line, '=');
        if (eq == NULL)
            continue;
        *eq = '\0';
        const char *v = eq + 1;
        if (strcmp(line, "PYKMIP_HOST") == 0)
            snprintf(e->host, sizeof(e->host), "%s", v);
        else if (strcmp(line, "PYKMIP_PORT") == 0)
            e->port = (unsigned)strtoul(v, NULL, 10);
        else if (strcmp(line, "PYKMIP_CLIENT_CERT") == 0)
            snprintf(e->cert, sizeof(e->cert), "%s", v);
        else if (strcmp(line, "PYKMIP_CLIENT_KEY") == 0)
            snprintf(e->key, sizeof(e->key), "%s", v);
        else if (strcmp(line, "PYKMIP_CLIENT_CHAIN") == 0)
            snprintf(e->chain, sizeof(e->chain), "%s", v);
        else if (strcmp(line, "PYKMIP_CA") == 0)
            snprintf(e->ca, sizeof(e->ca), "%s", v);
        else if (strcmp(line, "PYKMIP_LOG") == 0)
            snprintf(e->log, sizeof(e->log), "%s", v);
    }
    fclose(f);
    cr_assert(e->port > 0 && e->host[0] && e->cert[0] && e->ca[0], "incomplete %s", path);
}

static const char *main_dir(void)
{
    const char *d = getenv("KMS_PYKMIP_DIR");
    cr_assert_not_null(d, "KMS_PYKMIP_DIR not set: PRE_ALL could not create a directory");
    return d;
}

/* ---- PKI as OpenSSL objects (kmsd takes them from its keystore) -------- */

struct pki {
    X509 *cert;
    EVP_PKEY *key;
    STACK_OF(X509) *chain;
    X509_STORE *trust;
};

static X509 *read_cert(const char *path)
{
    FILE *f = fopen(path, "r");
    cr_assert_not_null(f, "%s", path);
    X509 *x = PEM_read_X509(f, NULL, NULL, NULL);
    fclose(f);
    cr_assert_not_null(x, "%s", path);
    return x;
}

static void pki_load(const char *cert, const char *key, const char *chain, const char *ca, struct pki *p)
{
    p->cert = read_cert(cert);
    FILE *f = fopen(key, "r");
    cr_assert_not_null(f, "%s", key);
    p->key = PEM_read_PrivateKey(f, NULL, NULL, NULL);
    fclose(f);
    cr_assert_not_null(p->key);
    p->chain = sk_X509_new_null();
    cr_assert_eq(sk_X509_push(p->chain, read_cert(chain)) > 0, 1);
    p->trust = X509_STORE_new();
    X509 *root = read_cert(ca);
    cr_assert_eq(X509_STORE_add_cert(p->trust, root), 1);
    X509_free(root);
}

static void pki_free(struct pki *p)
{
    X509_free(p->cert);
    EVP_PKEY_free(p->key);
    sk_X509_pop_free(p->chain, X509_free);
    X509_STORE_free(p->trust);
    memset(p, 0, sizeof(*p));
}

static struct kms_kmip_client_options options(const struct env *e, const struct pki *p)
{
    struct kms_kmip_client_options o;
    memset(&o, 0, sizeof(o));
    o.host = e->host;
    o.port = (uint16_t)e->port;
    o.cert = p->cert;
    o.key = p->key;
    o.chain = p->chain;
    o.trust = p->trust;
    return o;
}

struct fixture {
    struct env env;
    struct pki pki;
    struct kms_kmip_client *client;
};

static void quiet(void)
{
    signal(SIGPIPE, SIG_IGN);
    kms_log_set_level(KMS_LOG_ERROR);
}

static void open_main(struct fixture *fx)
{
    quiet();
    read_env(main_dir(), &fx->env);
    pki_load(fx->env.cert, fx->env.key, fx->env.chain, fx->env.ca, &fx->pki);
    struct kms_kmip_client_options o = options(&fx->env, &fx->pki);
    cr_assert_eq(kms_kmip_client_open(&o, &fx->client), KMS_OK, "%s", kms_error_detail());
}

static void close_main(struct fixture *fx)
{
    kms_kmip_client_free(&fx->client);
    cr_assert_null(fx->client);
    pki_free(&fx->pki);
}

/* A name no other test (or earlier run against the same server) uses. */
static void unique_name(const char *prefix, char *out, size_t cap)
{
    uint8_t r[6];
    cr_assert_eq(kms_random(r, sizeof(r)), KMS_OK);
    snprintf(out, cap, "%s-%02x%02x%02x%02x%02x%02x", prefix, r[0], r[1], r[2], r[3], r[4], r[5]);
}

static uint64_t ms_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

/* ---- the client -------------------------------------------------------- */

Test(kmip_pykmip, discover_versions_and_query, .timeout = T)
{
    struct fixture fx;
    open_main(&fx);
    struct kms_kmip_version v[8], neg;
    size_t n = 0;
    cr_assert_eq(kms_kmip_discover(fx.client, v, 8, &n), KMS_OK, "%s", kms_error_detail());
    int has14 = 0, has20 = 0;
    for (size_t i = 0; i < n; i++) {
        has14 |= v[i].major == 1 && v[i].minor == 4;
        has20 |= v[i].major == 2 && v[i].minor == 0;
    }
    cr_assert(has14 && has20, "PyKMIP 0.10 lists 2.0 and 1.4 (%zu versions)", n);
    cr_assert_eq(kms_kmip_client_version(fx.client, &neg), KMS_OK);
    cr_assert(neg.major == 1 && neg.minor == 4, "negotiated %d.%d", neg.major, neg.minor);

    struct kms_kmip_server_info info;
    cr_assert_eq(kms_kmip_query(fx.client, &info), KMS_OK, "%s", kms_error_detail());
    cr_assert(strstr(info.vendor, "PyKMIP") != NULL, "vendor %s", info.vendor);
    int enc = 0, dec = 0;
    for (size_t i = 0; i < info.n_operations; i++) {
        enc |= info.operations[i] == KMS_KMIP_OP_ENCRYPT;
        dec |= info.operations[i] == KMS_KMIP_OP_DECRYPT;
    }
    cr_assert(enc && dec);
    cr_assert_eq(kms_kmip_client_probe(fx.client, 0), KMS_OK, "%s", kms_error_detail());
    cr_assert_eq(strncmp(kms_kmip_client_endpoint(fx.client), "127.0.0.1:", 10), 0);
    struct kms_kmip_client_stats st;
    kms_kmip_client_stats(fx.client, &st);
    cr_assert_eq(st.connects, 1, "one persistent connection for %llu requests", (unsigned long long)st.requests);
    cr_assert_geq(st.requests, 4);
    close_main(&fx);
}

Test(kmip_pykmip, create_activate_locate_and_attributes, .timeout = T)
{
    struct fixture fx;
    char name[64], uid[KMS_KMIP_UID_MAX + 1], uids[4][KMS_KMIP_UID_MAX + 1];
    size_t found = 0;
    open_main(&fx);
    unique_name("t-create", name, sizeof(name));
    cr_assert_eq(kms_kmip_locate(fx.client, name, uids, 4, &found), KMS_OK);
    cr_assert_eq(found, 0);
    cr_assert_eq(kms_kmip_create_key(fx.client, name, uid), KMS_OK, "%s", kms_error_detail());
    cr_assert_neq(uid[0], '\0');
    cr_assert_eq(kms_kmip_locate(fx.client, name, uids, 4, &found), KMS_OK);
    cr_assert_eq(found, 1);
    cr_assert_str_eq(uids[0], uid);

    struct kms_kmip_attributes a;
    cr_assert_eq(kms_kmip_get_attributes(fx.client, uid, &a), KMS_OK, "%s", kms_error_detail());
    cr_assert_str_eq(a.uid, uid);
    cr_assert_eq(a.state, KMS_KMIP_STATE_ACTIVE);
    cr_assert_eq(a.algorithm, KMS_KMIP_ALG_AES);
    cr_assert_eq(a.length, 256);
    cr_assert_eq(a.object_type, KMS_KMIP_OBJECT_SYMMETRIC_KEY);
    cr_assert_eq(a.usage_mask, KMS_KMIP_USAGE_ENCRYPT | KMS_KMIP_USAGE_DECRYPT);
    cr_assert_eq(a.n_names, 1);
    cr_assert_str_eq(a.names[0], name);
    cr_assert_gt(a.initial_date, 1600000000);

    /* activating twice: the server's refusal, as the backend's error */
    cr_assert_eq(kms_kmip_activate(fx.client, uid), KMS_ERR_BACKEND);
    cr_assert(strstr(kms_error_detail(), "KMIP server 127.0.0.1:") != NULL, "%s", kms_error_detail());
    cr_assert_eq(kms_kmip_get_attributes(fx.client, "999999", &a), KMS_ERR_KEY_NOT_FOUND);
    close_main(&fx);
}

Test(kmip_pykmip, gcm_round_trip_and_authentication_failures, .timeout = T)
{
    struct fixture fx;
    char name[64], uid[KMS_KMIP_UID_MAX + 1];
    open_main(&fx);
    unique_name("t-gcm", name, sizeof(name));
    cr_assert_eq(kms_kmip_create_key(fx.client, name, uid), KMS_OK, "%s", kms_error_detail());

    uint8_t pt[32], nonce[12], ct[32], tag[16];
    const uint8_t aad[] = "kms:v1 customer site-42";
    cr_assert_eq(kms_random(pt, sizeof(pt)), KMS_OK);
    cr_assert_eq(kms_random(nonce, sizeof(nonce)), KMS_OK);
    cr_assert_eq(kms_kmip_encrypt_gcm(fx.client, uid, nonce, aad, sizeof(aad), pt, 32, ct, tag), KMS_OK, "%s",
                 kms_error_detail());
    cr_assert_neq(memcmp(ct, pt, 32), 0);
    struct kms_secret *out = NULL;
    cr_assert_eq(kms_kmip_decrypt_gcm(fx.client, uid, nonce, aad, sizeof(aad), ct, 32, tag, &out), KMS_OK, "%s",
                 kms_error_detail());
    cr_assert_eq(kms_secret_len(out), 32);
    cr_assert_eq(memcmp(kms_secret_cdata(out), pt, 32), 0);
    kms_secret_free(&out);

    tag[15] ^= 0x80;
    cr_assert_eq(kms_kmip_decrypt_gcm(fx.client, uid, nonce, aad, sizeof(aad), ct, 32, tag, &out), KMS_ERR_UNWRAP,
                 "flipped tag");
    cr_assert_null(out);
    tag[15] ^= 0x80;
    cr_assert_eq(kms_kmip_decrypt_gcm(fx.client, uid, nonce, aad, sizeof(aad) - 1, ct, 32, tag, &out),
                 KMS_ERR_UNWRAP, "other AAD");
    ct[0] ^= 1;
    cr_assert_eq(kms_kmip_decrypt_gcm(fx.client, uid, nonce, aad, sizeof(aad), ct, 32, tag, &out), KMS_ERR_UNWRAP,
                 "flipped ciphertext");
    ct[0] ^= 1;
    nonce[0] ^= 1;
    cr_assert_eq(kms_kmip_decrypt_gcm(fx.client, uid, nonce, aad, sizeof(aad), ct, 32, tag, &out), KMS_ERR_UNWRAP,
                 "other nonce");
    nonce[0] ^= 1;
    cr_assert_eq(kms_kmip_decrypt_gcm(fx.client, "999999", nonce, aad, sizeof(aad), ct, 32, tag, &out),
                 KMS_ERR_KEY_NOT_FOUND, "unknown UID");
    cr_assert_eq(kms_kmip_encrypt_gcm(fx.client, "999999", nonce, aad, sizeof(aad), pt, 32, ct, tag),
                 KMS_ERR_KEY_NOT_FOUND);
    /* no AAD at all is valid GCM too */
    cr_assert_eq(kms_kmip_encrypt_gcm(fx.client, uid, nonce, NULL, 0, pt, 32, ct, tag), KMS_OK, "%s",
                 kms_error_detail());
    cr_assert_eq(kms_kmip_decrypt_gcm(fx.client, uid, nonce, NULL, 0, ct, 32, tag, &out), KMS_OK);
    cr_assert_eq(memcmp(kms_secret_cdata(out), pt, 32), 0);
    kms_secret_free(&out);
    close_main(&fx);
}

/* ---- the backend ------------------------------------------------------- */

static struct kms_backend *open_backend(struct fixture *fx)
{
    struct kms_kmip_options o;
    struct kms_backend *b = NULL;
    memset(&o, 0, sizeof(o));
    o.client = options(&fx->env, &fx->pki);
    o.client.pool_size = 2;
    cr_assert_eq(kms_kmip_backend_open(&o, &b), KMS_OK, "%s", kms_error_detail());
    return b;
}

Test(kmip_pykmip, backend_resolves_names_and_uids, .timeout = T)
{
    struct fixture fx;
    char name[64], dup[64], uid[KMS_KMIP_UID_MAX + 1], uid2[KMS_KMIP_UID_MAX + 1];
    struct kms_master_ref ref;
    open_main(&fx);
    unique_name("t-resolve", name, sizeof(name));
    cr_assert_eq(kms_kmip_create_key(fx.client, name, uid), KMS_OK);
    struct kms_backend *b = open_backend(&fx);
    cr_assert_str_eq(b->ops->name, "kmip");
    cr_assert_eq(b->ops->kind, KMS_BACKEND_KMIP);
    cr_assert_eq(kms_kmip_backend_client(b) != NULL, 1);

    cr_assert_eq(b->ops->resolve(b, name, &ref), KMS_OK, "%s", kms_error_detail());
    cr_assert_str_eq(ref.name, uid, "a name resolves to its UID");
    cr_assert_eq(ref.version, 0);
    cr_assert_eq(b->ops->resolve(b, uid, &ref), KMS_OK);
    cr_assert_str_eq(ref.name, uid, "a UID resolves to itself");
    cr_assert_eq(b->ops->resolve(b, "t-no-such-key", &ref), KMS_ERR_KEY_NOT_FOUND);
    cr_assert(strstr(kms_error_detail(), "t-no-such-key") != NULL, "%s", kms_error_detail());
    cr_assert_eq(b->ops->resolve(b, "bad name", &ref), KMS_ERR_KEY_NOT_FOUND);

    /* PyKMIP lets two keys share a Name: refused, naming both */
    unique_name("t-dup", dup, sizeof(dup));
    cr_assert_eq(kms_kmip_create_key(fx.client, dup, uid), KMS_OK);
    cr_assert_eq(kms_kmip_create_key(fx.client, dup, uid2), KMS_OK);
    cr_assert_eq(b->ops->resolve(b, dup, &ref), KMS_ERR_BACKEND);
    cr_assert(strstr(kms_error_detail(), "matches 2 keys") != NULL, "%s", kms_error_detail());
    cr_assert(strstr(kms_error_detail(), uid2) != NULL);
    cr_assert_eq(b->ops->resolve(b, uid2, &ref), KMS_OK, "by UID it is unambiguous");

    struct kms_key_info info;
    cr_assert_eq(b->ops->describe(b, name, &info), KMS_OK, "%s", kms_error_detail());
    cr_assert_str_eq(info.name, name);
    cr_assert_str_eq(info.backend, "kmip");
    cr_assert_str_eq(info.state, "active");
    cr_assert_str_eq(info.algorithm, "AES-256-GCM");
    cr_assert_gt(info.created, 1600000000);
    cr_assert_eq(b->ops->describe(b, "t-no-such-key", &info), KMS_ERR_KEY_NOT_FOUND);
    cr_assert_eq(b->ops->probe(b), KMS_OK, "%s", kms_error_detail());
    kms_backend_free(&b);
    cr_assert_null(b);
    close_main(&fx);
}

Test(kmip_pykmip, backend_encrypts_nonce_ciphertext_tag, .timeout = T)
{
    struct fixture fx;
    char name[64];
    char uid[KMS_KMIP_UID_MAX + 1];
    struct kms_master_ref ref;
    open_main(&fx);
    unique_name("t-backend", name, sizeof(name));
    cr_assert_eq(kms_kmip_create_key(fx.client, name, uid), KMS_OK);
    struct kms_backend *b = open_backend(&fx);
    cr_assert_eq(b->ops->resolve(b, name, &ref), KMS_OK);

    struct kms_secret *key = NULL, *out = NULL;
    cr_assert_eq(kms_secret_random(32, &key), KMS_OK);
    uint8_t ct[KMS_BACKEND_CT_MAX], ct2[KMS_BACKEND_CT_MAX];
    size_t ct_len = 0, ct2_len = 0;
    const uint8_t aad[] = "header bytes";
    cr_assert_eq(b->ops->encrypt(b, &ref, aad, sizeof(aad), key, ct, sizeof(ct), &ct_len), KMS_OK, "%s",
                 kms_error_detail());
    cr_assert_eq(ct_len, 12 + 32 + 16);
    cr_assert_eq(b->ops->encrypt(b, &ref, aad, sizeof(aad), key, ct2, sizeof(ct2), &ct2_len), KMS_OK);
    cr_assert_neq(memcmp(ct, ct2, 12), 0, "a fresh nonce for every encryption");
    cr_assert_eq(b->ops->decrypt(b, &ref, aad, sizeof(aad), ct, ct_len, &out), KMS_OK, "%s", kms_error_detail());
    cr_assert(kms_secret_equal(out, key));
    kms_secret_free(&out);
    for (size_t i = 0; i < ct_len; i += 13) { /* nonce, ciphertext and tag are all authenticated */
        ct[i] ^= 0x04;
        cr_assert_eq(b->ops->decrypt(b, &ref, aad, sizeof(aad), ct, ct_len, &out), KMS_ERR_UNWRAP, "byte %zu", i);
        cr_assert_null(out);
        ct[i] ^= 0x04;
    }
    cr_assert_eq(b->ops->decrypt(b, &ref, aad, sizeof(aad), ct, 28, &out), KMS_ERR_UNWRAP, "too short");
    cr_assert_eq(b->ops->encrypt(b, &ref, aad, sizeof(aad), key, ct, 59, &ct_len), KMS_ERR_INTERNAL, "no room");
    struct kms_master_ref unknown = {.name = "999999", .version = 0};
    cr_assert_eq(b->ops->decrypt(b, &unknown, aad, sizeof(aad), ct2, ct2_len, &out), KMS_ERR_KEY_NOT_FOUND);
    kms_secret_free(&key);
    kms_backend_free(&b);
    close_main(&fx);
}

/* The whole hierarchy over PyKMIP, and kmsd never asks for key material:
 * the server's log shows no Get. */
Test(kmip_pykmip, hierarchy_over_kmip, .timeout = T)
{
    struct fixture fx;
    char name[64], uid[KMS_KMIP_UID_MAX + 1];
    open_main(&fx);
    unique_name("t-hier", name, sizeof(name));
    cr_assert_eq(kms_kmip_create_key(fx.client, name, uid), KMS_OK);
    struct kms_backend *b = open_backend(&fx);
    struct kms_hierarchy *h = NULL;
    cr_assert_eq(kms_hierarchy_new(b, NULL, name, &h), KMS_OK, "%s", kms_error_detail());

    char *ck = NULL, *uk = NULL, *wk = NULL, *wk2 = NULL;
    struct kms_secret *w = NULL, *w2 = NULL;
    cr_assert_eq(kms_hierarchy_create_customer(h, "site-42", &ck), KMS_OK, "%s", kms_error_detail());
    cr_assert_eq(kms_hierarchy_create_user(h, "site-42", ck, &uk), KMS_OK, "%s", kms_error_detail());
    cr_assert_eq(kms_hierarchy_create_workspace(h, "site-42", ck, uk, &wk), KMS_OK, "%s", kms_error_detail());
    cr_assert_eq(kms_hierarchy_unwrap_workspace(h, "site-42", ck, uk, wk, &w), KMS_OK, "%s", kms_error_detail());
    cr_assert_eq(kms_secret_len(w), KMS_KEY_BYTES);
    cr_assert_eq(kms_hierarchy_unwrap_workspace(h, "site-42", ck, uk, wk, &w2), KMS_OK);
    cr_assert(kms_secret_equal(w, w2), "the same workspace key every time");
    kms_secret_free(&w2);
    cr_assert_eq(kms_hierarchy_unwrap_workspace(h, "site-43", ck, uk, wk, &w2), KMS_ERR_UNWRAP, "other site");
    cr_assert_eq(kms_hierarchy_create_workspace(h, "site-42", ck, uk, &wk2), KMS_OK);

    struct kms_wrapped_info wi;
    cr_assert_eq(kms_wrapped_describe(ck, &wi), KMS_OK);
    cr_assert_str_eq(wi.wrapper, "kmip");
    cr_assert_str_eq(wi.master_name, uid, "a customer key records the master key's UID");
    cr_assert_eq(wi.master_version, 0);

    /* the generic primitive */
    char *data = NULL;
    struct kms_secret *pt = NULL;
    cr_assert_eq(kms_hierarchy_wrap(h, name, "site-42", (const uint8_t *)"arbitrary bytes", 15, &data), KMS_OK,
                 "%s", kms_error_detail());
    cr_assert_eq(kms_hierarchy_unwrap(h, name, "site-42", data, &pt), KMS_OK, "%s", kms_error_detail());
    cr_assert_eq(kms_secret_len(pt), 15);
    cr_assert_eq(memcmp(kms_secret_cdata(pt), "arbitrary bytes", 15), 0);
    kms_secret_free(&pt);
    cr_assert_eq(kms_hierarchy_unwrap(h, uid, "site-42", data, &pt), KMS_OK, "by UID as well");
    kms_secret_free(&pt);

    struct kms_key_info info;
    cr_assert_eq(kms_hierarchy_key_info(h, name, &info), KMS_OK);
    cr_assert_str_eq(info.backend, "kmip");

    /* never a Get: the master key stays in the server */
    char cmd[800];
    snprintf(cmd, sizeof(cmd), "grep -q 'Processing operation: Get$' %s", fx.env.log);
    cr_assert_neq(system(cmd), 0, "kmsd sent Get to the KMIP server (%s)", fx.env.log);
    snprintf(cmd, sizeof(cmd), "grep -q 'Processing operation: Encrypt' %s", fx.env.log);
    cr_assert_eq(system(cmd), 0, "the log does show what was sent");

    free(data);
    free(ck);
    free(uk);
    free(wk);
    free(wk2);
    kms_secret_free(&w);
    kms_hierarchy_free(&h);
    kms_backend_free(&b);
    close_main(&fx);
}

/* Rotation: the configured master key moves from key A to key B. Keys
 * wrapped under A name A's UID and keep unwrapping; new ones go to B. */
Test(kmip_pykmip, rotation_keeps_old_keys_unwrapping, .timeout = T)
{
    struct fixture fx;
    char a[64], bname[64], uid_a[KMS_KMIP_UID_MAX + 1], uid_b[KMS_KMIP_UID_MAX + 1];
    open_main(&fx);
    unique_name("t-rot-a", a, sizeof(a));
    unique_name("t-rot-b", bname, sizeof(bname));
    cr_assert_eq(kms_kmip_create_key(fx.client, a, uid_a), KMS_OK);
    cr_assert_eq(kms_kmip_create_key(fx.client, bname, uid_b), KMS_OK);
    struct kms_backend *b = open_backend(&fx);
    struct kms_hierarchy *old_h = NULL, *new_h = NULL;
    cr_assert_eq(kms_hierarchy_new(b, NULL, a, &old_h), KMS_OK);
    cr_assert_eq(kms_hierarchy_new(b, NULL, bname, &new_h), KMS_OK);

    char *ck = NULL, *uk = NULL, *wk = NULL, *ck_new = NULL;
    struct kms_secret *w_old = NULL, *w_new = NULL;
    cr_assert_eq(kms_hierarchy_create_customer(old_h, "site-7", &ck), KMS_OK);
    cr_assert_eq(kms_hierarchy_create_user(old_h, "site-7", ck, &uk), KMS_OK);
    cr_assert_eq(kms_hierarchy_create_workspace(old_h, "site-7", ck, uk, &wk), KMS_OK);
    cr_assert_eq(kms_hierarchy_unwrap_workspace(old_h, "site-7", ck, uk, wk, &w_old), KMS_OK);
    kms_hierarchy_free(&old_h);

    cr_assert_eq(kms_hierarchy_unwrap_workspace(new_h, "site-7", ck, uk, wk, &w_new), KMS_OK, "%s",
                 kms_error_detail());
    cr_assert(kms_secret_equal(w_old, w_new));
    cr_assert_eq(kms_hierarchy_create_customer(new_h, "site-7", &ck_new), KMS_OK);
    struct kms_wrapped_info wi;
    cr_assert_eq(kms_wrapped_describe(ck, &wi), KMS_OK);
    cr_assert_str_eq(wi.master_name, uid_a);
    cr_assert_eq(kms_wrapped_describe(ck_new, &wi), KMS_OK);
    cr_assert_str_eq(wi.master_name, uid_b);

    free(ck);
    free(uk);
    free(wk);
    free(ck_new);
    kms_secret_free(&w_old);
    kms_secret_free(&w_new);
    kms_hierarchy_free(&new_h);
    kms_backend_free(&b);
    close_main(&fx);
}

/* rewrap moves a key made under master key A to the current master key B
 * (KMIP rotation is a new key, not a new version of one name). */
Test(kmip_pykmip, rewrap_moves_a_key_to_the_new_master_key, .timeout = T)
{
    struct fixture fx;
    char a[64], bname[64], uid_a[KMS_KMIP_UID_MAX + 1], uid_b[KMS_KMIP_UID_MAX + 1];
    open_main(&fx);
    unique_name("t-rewrap-a", a, sizeof(a));
    unique_name("t-rewrap-b", bname, sizeof(bname));
    cr_assert_eq(kms_kmip_create_key(fx.client, a, uid_a), KMS_OK);
    cr_assert_eq(kms_kmip_create_key(fx.client, bname, uid_b), KMS_OK);
    struct kms_backend *b = open_backend(&fx);
    struct kms_hierarchy *h = NULL;
    cr_assert_eq(kms_hierarchy_new(b, NULL, bname, &h), KMS_OK);
    char *old = NULL, *moved = NULL;
    struct kms_secret *pt = NULL;
    cr_assert_eq(kms_hierarchy_wrap(h, a, "site-9", (const uint8_t *)"data key", 8, &old), KMS_OK);
    cr_assert_eq(kms_hierarchy_rewrap(h, bname, "site-9", old, &moved), KMS_OK, "%s", kms_error_detail());
    struct kms_wrapped_info wi;
    cr_assert_eq(kms_wrapped_describe(moved, &wi), KMS_OK);
    cr_assert_str_eq(wi.master_name, uid_b);
    cr_assert_eq(kms_hierarchy_unwrap(h, bname, "site-9", moved, &pt), KMS_OK);
    cr_assert_eq(memcmp(kms_secret_cdata(pt), "data key", 8), 0);
    kms_secret_free(&pt);
    cr_assert_eq(kms_hierarchy_unwrap(h, a, "site-9", moved, &pt), KMS_ERR_UNWRAP, "no longer under A");
    cr_assert_eq(kms_hierarchy_unwrap(h, a, "site-9", old, &pt), KMS_OK, "the old form still unwraps");
    kms_secret_free(&pt);

    /* a customer key moves too, and its user and workspace keys follow it */
    char *ck = NULL, *uk = NULL, *wk = NULL, *ck_moved = NULL;
    struct kms_secret *w1 = NULL, *w2 = NULL;
    struct kms_hierarchy *old_h = NULL;
    cr_assert_eq(kms_hierarchy_new(b, NULL, a, &old_h), KMS_OK);
    cr_assert_eq(kms_hierarchy_create_customer(old_h, "site-9", &ck), KMS_OK);
    cr_assert_eq(kms_hierarchy_create_user(old_h, "site-9", ck, &uk), KMS_OK);
    cr_assert_eq(kms_hierarchy_create_workspace(old_h, "site-9", ck, uk, &wk), KMS_OK);
    cr_assert_eq(kms_hierarchy_unwrap_workspace(old_h, "site-9", ck, uk, wk, &w1), KMS_OK);
    cr_assert_eq(kms_hierarchy_rewrap(h, bname, "site-9", ck, &ck_moved), KMS_OK, "%s", kms_error_detail());
    cr_assert_eq(kms_wrapped_describe(ck_moved, &wi), KMS_OK);
    cr_assert_str_eq(wi.master_name, uid_b);
    cr_assert_eq(kms_hierarchy_unwrap_workspace(h, "site-9", ck_moved, uk, wk, &w2), KMS_OK, "%s",
                 kms_error_detail());
    cr_assert(kms_secret_equal(w1, w2));
    kms_secret_free(&w1);
    kms_secret_free(&w2);
    free(ck);
    free(uk);
    free(wk);
    free(ck_moved);
    kms_hierarchy_free(&old_h);
    free(old);
    free(moved);
    kms_hierarchy_free(&h);
    kms_backend_free(&b);
    close_main(&fx);
}

/* ---- concurrency ------------------------------------------------------- */

struct worker {
    struct kms_backend *b;
    struct kms_master_ref ref;
    int ok;
};

static void *work(void *arg)
{
    struct worker *w = arg;
    for (int i = 0; i < 10; i++) {
        struct kms_secret *k = NULL, *back = NULL;
        uint8_t ct[128];
        size_t len = 0;
        if (kms_secret_random(32, &k) != KMS_OK)
            return NULL;
        kms_rc rc = w->b->ops->encrypt(w->b, &w->ref, (const uint8_t *)"aad", 3, k, ct, sizeof(ct), &len);
        if (rc == KMS_OK)
            rc = w->b->ops->decrypt(w->b, &w->ref, (const uint8_t *)"aad", 3, ct, len, &back);
        if (rc == KMS_OK && kms_secret_equal(k, back))
            w->ok++;
        kms_secret_free(&k);
        kms_secret_free(&back);
    }
    return NULL;
}

Test(kmip_pykmip, eight_threads_share_a_pool_of_two, .timeout = T)
{
    struct fixture fx;
    char name[64], uid[KMS_KMIP_UID_MAX + 1];
    open_main(&fx);
    unique_name("t-threads", name, sizeof(name));
    cr_assert_eq(kms_kmip_create_key(fx.client, name, uid), KMS_OK);
    struct kms_backend *b = open_backend(&fx);
    struct worker w[8];
    pthread_t t[8];
    for (int i = 0; i < 8; i++) {
        memset(&w[i], 0, sizeof(w[i]));
        w[i].b = b;
        cr_assert_eq(b->ops->resolve(b, name, &w[i].ref), KMS_OK);
        cr_assert_eq(pthread_create(&t[i], NULL, work, &w[i]), 0);
    }
    int ok = 0;
    for (int i = 0; i < 8; i++) {
        pthread_join(t[i], NULL);
        ok += w[i].ok;
    }
    cr_assert_eq(ok, 80);
    struct kms_kmip_client_stats st;
    kms_kmip_client_stats(kms_kmip_backend_client(b), &st);
    cr_assert_leq(st.connects, 2, "pool of 2, %llu connections", (unsigned long long)st.connects);
    cr_assert_leq(st.open, 2);
    cr_assert_eq(st.connect_failures, 0);
    kms_backend_free(&b);
    close_main(&fx);
}

/* ---- an outage --------------------------------------------------------- */

/* A private server (so the other tests keep theirs) with the same PKI. */
static void private_server(const char *sub, const char *extra_env, struct env *e)
{
    char dir[600], cmd[1600];
    snprintf(dir, sizeof(dir), "%s/%s", main_dir(), sub);
    cr_assert(mkdir(dir, 0700) == 0);
    /* why: the same CA, so the kmsClient certificate works; a new kmipServer certificate when asked */
    if (extra_env != NULL)
        snprintf(cmd, sizeof(cmd), "cp -r %s/pki %s/pki && rm -f %s/pki/kmipServer*", main_dir(), dir, dir);
    else
        snprintf(cmd, sizeof(cmd), "cp -r %s/pki %s/pki", main_dir(), dir);
    cr_assert_eq(system(cmd), 0, "%s", cmd);
    harness("start", dir, extra_env);
    read_env(dir, e);
}

Test(kmip_pykmip, outage_fails_fast_and_the_pool_recovers, .timeout = T)
{
    struct env e;
    struct pki p;
    quiet();
    private_server("outage", NULL, &e);
    pki_load(e.cert, e.key, e.chain, e.ca, &p);
    struct kms_kmip_options o;
    memset(&o, 0, sizeof(o));
    o.client = options(&e, &p);
    o.client.connect_timeout_ms = 2000;
    o.client.io_timeout_ms = 3000;
    o.client.backoff_min_ms = 200;
    o.client.backoff_max_ms = 1000;
    o.probe_timeout_ms = 1000;
    struct kms_backend *b = NULL;
    cr_assert_eq(kms_kmip_backend_open(&o, &b), KMS_OK, "%s", kms_error_detail());
    struct kms_kmip_client *c = kms_kmip_backend_client(b);
    char uid[KMS_KMIP_UID_MAX + 1];
    cr_assert_eq(kms_kmip_create_key(c, "t-outage", uid), KMS_OK, "%s", kms_error_detail());
    struct kms_master_ref ref;
    cr_assert_eq(b->ops->resolve(b, "t-outage", &ref), KMS_OK);
    struct kms_secret *key = NULL, *out = NULL;
    cr_assert_eq(kms_secret_random(32, &key), KMS_OK);
    uint8_t ct[128];
    size_t ct_len = 0;
    cr_assert_eq(b->ops->encrypt(b, &ref, (const uint8_t *)"a", 1, key, ct, sizeof(ct), &ct_len), KMS_OK);

    harness("kill", e.dir, NULL);
    uint64_t t0 = ms_now();
    cr_assert_eq(b->ops->decrypt(b, &ref, (const uint8_t *)"a", 1, ct, ct_len, &out), KMS_ERR_BACKEND_UNAVAILABLE,
                 "%s", kms_error_detail());
    uint64_t took = ms_now() - t0;
    cr_assert_lt(took, 2500, "an outage is noticed within the connect timeout (took %llu ms)",
                 (unsigned long long)took);
    cr_assert(strstr(kms_error_detail(), e.host) != NULL, "%s", kms_error_detail());
    t0 = ms_now();
    cr_assert_eq(b->ops->probe(b), KMS_ERR_BACKEND_UNAVAILABLE);
    uint8_t ct2[128];
    size_t ct2_len = 1;
    cr_assert_eq(b->ops->encrypt(b, &ref, (const uint8_t *)"a", 1, key, ct2, sizeof(ct2), &ct2_len),
                 KMS_ERR_BACKEND_UNAVAILABLE);
    cr_assert_eq(ct2_len, 0);
    cr_assert_lt(ms_now() - t0, 200, "while backing off, requests fail at once");
    cr_assert(strstr(kms_error_detail(), "next attempt in") != NULL, "%s", kms_error_detail());

    struct kms_kmip_client_stats before, after;
    kms_kmip_client_stats(c, &before);
    harness("start", e.dir, NULL);
    /* no reopen, no restart: the pool reconnects by itself within the backoff */
    kms_rc rc = KMS_ERR_BACKEND_UNAVAILABLE;
    for (int i = 0; i < 150 && rc != KMS_OK; i++) {
        rc = b->ops->decrypt(b, &ref, (const uint8_t *)"a", 1, ct, ct_len, &out);
        if (rc != KMS_OK)
            usleep(100 * 1000);
    }
    cr_assert_eq(rc, KMS_OK, "%s", kms_error_detail());
    cr_assert(kms_secret_equal(out, key), "the key survived the restart (PyKMIP's database)");
    kms_secret_free(&out);
    cr_assert_eq(b->ops->probe(b), KMS_OK);
    kms_kmip_client_stats(c, &after);
    cr_assert_gt(after.connects, before.connects);
    cr_assert_gt(after.connect_failures, 0);

    kms_secret_free(&key);
    kms_backend_free(&b);
    pki_free(&p);
    harness("kill", e.dir, NULL);
}

/* ---- TLS failures, in words ------------------------------------------- */

Test(kmip_pykmip, untrusted_client_certificate_is_a_clear_error, .timeout = T)
{
    struct env e;
    char dir[600], cmd[2048];
    quiet();
    read_env(main_dir(), &e);
    snprintf(dir, sizeof(dir), "%s/rogue-XXXXXX", main_dir());
    cr_assert_not_null(mkdtemp(dir));
    snprintf(cmd, sizeof(cmd),
             "cd %s && openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout ca.key "
             "-out ca.crt -days 2 -subj /CN=rogue-ca -addext basicConstraints=critical,CA:TRUE 2>/dev/null && "
             "openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout c.key -out c.csr "
             "-subj /CN=kmsClient 2>/dev/null && printf 'extendedKeyUsage=clientAuth\\n' > ext && "
             "openssl x509 -req -in c.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days 2 -extfile ext -out c.crt "
             "2>/dev/null",
             dir);
    cr_assert_eq(system(cmd), 0);
    char cert[700], key[700], ca[700];
    snprintf(cert, sizeof(cert), "%s/c.crt", dir);
    snprintf(key, sizeof(key), "%s/c.key", dir);
    snprintf(ca, sizeof(ca), "%s/ca.crt", dir);
    struct pki p;
    pki_load(cert, key, ca, e.ca, &p);
    struct kms_kmip_client_options o = options(&e, &p);
    struct kms_kmip_client *c = NULL;
    cr_assert_eq(kms_kmip_client_open(&o, &c), KMS_ERR_BACKEND_UNAVAILABLE);
    cr_assert_null(c);
    const char *d = kms_error_detail();
    cr_assert(strstr(d, "TLS handshake failed") != NULL && strstr(d, "refused our client certificate") != NULL &&
                  strstr(d, "unknown ca") != NULL,
              "%s", d);
    pki_free(&p);

    /* and the other way round: a server certificate from a CA we do not trust */
    read_env(main_dir(), &e);
    pki_load(e.cert, e.key, e.chain, ca, &p);
    o = options(&e, &p);
    cr_assert_eq(kms_kmip_client_open(&o, &c), KMS_ERR_BACKEND_UNAVAILABLE);
    d = kms_error_detail();
    cr_assert(strstr(d, "server certificate not accepted") != NULL && strstr(d, "local issuer") != NULL, "%s", d);
    pki_free(&p);
}

Test(kmip_pykmip, server_certificate_must_name_the_host, .timeout = T)
{
    struct env e;
    struct pki p;
    quiet();
    private_server("wrongname", "KMS_PYKMIP_SERVER_SAN=DNS:kms.invalid", &e);
    pki_load(e.cert, e.key, e.chain, e.ca, &p);
    struct kms_kmip_client_options o = options(&e, &p);
    struct kms_kmip_client *c = NULL;
    cr_assert_eq(kms_kmip_client_open(&o, &c), KMS_ERR_BACKEND_UNAVAILABLE);
    cr_assert(strstr(kms_error_detail(), "IP address mismatch") != NULL, "%s", kms_error_detail());
    /* by DNS name: localhost is not kms.invalid either */
    o.host = "localhost";
    cr_assert_eq(kms_kmip_client_open(&o, &c), KMS_ERR_BACKEND_UNAVAILABLE);
    cr_assert(strstr(kms_error_detail(), "hostname mismatch") != NULL ||
                  strstr(kms_error_detail(), "connect") != NULL, "%s", kms_error_detail());
    pki_free(&p);
    harness("kill", e.dir, NULL);
}

Test(kmip_pykmip, nothing_listening_is_unavailable, .timeout = T)
{
    struct fixture fx;
    quiet();
    read_env(main_dir(), &fx.env);
    pki_load(fx.env.cert, fx.env.key, fx.env.chain, fx.env.ca, &fx.pki);
    struct kms_kmip_client_options o = options(&fx.env, &fx.pki);
    o.port = 1; /* nobody listens on port 1 */
    struct kms_kmip_client *c = NULL;
    uint64_t t0 = ms_now();
    cr_assert_eq(kms_kmip_client_open(&o, &c), KMS_ERR_BACKEND_UNAVAILABLE);
    cr_assert_lt(ms_now() - t0, 2000);
    cr_assert(strstr(kms_error_detail(), "127.0.0.1:1") != NULL && strstr(kms_error_detail(), "refused") != NULL,
              "%s", kms_error_detail());
    /* deferred: open succeeds, the first request fails, in words */
    o.defer_connect = 1;
    cr_assert_eq(kms_kmip_client_open(&o, &c), KMS_OK);
    cr_assert_eq(kms_kmip_client_probe(c, 500), KMS_ERR_BACKEND_UNAVAILABLE);
    kms_kmip_client_free(&c);
    pki_free(&fx.pki);
}
