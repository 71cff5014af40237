#include "hsm/vault/vault_backend.h"
#include "hsm/vault/vault_auth.h"
#include "hsm/vault/vault_json.h"

#include <curl/curl.h>
#include <openssl/bio.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "common/base64.h"
#include "common/buf.h"
#include "common/clock.h"
#include "common/log.h"
#include "hsm/vault/vault_client.h"

#define DIGEST_LEN 32
#define CACHE_SLOTS 16
#define PT_MAX (65536 - DIGEST_LEN) /* a kms_secret holds at most 64 KiB */
#define SINGLE_BODY_MAX (256 * 1024)
#define BATCH_BODY_MAX (4 * 1024 * 1024)
#define PATH_MAX_LEN (KMS_MASTER_NAME_MAX + 64)

struct key_entry {
    char name[KMS_MASTER_NAME_MAX + 1]; /* "" when the slot is free */
    uint32_t latest;
    int derived;
    int usable;       /* an AEAD type kmsd can wrap with */
    char type[KMS_VAULT_TYPE_MAX];
    long long fetched_ms;
};

struct vault {
    struct kms_backend base;
    struct kms_vault_client *client;
    struct kms_vault_auth *auth;
    long long cache_ms;
    pthread_mutex_t cache_lock;
    struct key_entry cache[CACHE_SLOTS];
};

static const struct kms_backend_ops vault_ops;

static kms_rc refail(kms_rc rc, const char *prefix)
{
    char prev[512];
    snprintf(prev, sizeof(prev), "%s", kms_error_detail());
    return kms_fail(rc, "%s: %s", prefix, prev);
}

static int word_char(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_';
}

int kms_vault_key_name_valid(const char *name)
{
    if (name == NULL)
        return 0;
    size_t n = strnlen(name, KMS_MASTER_NAME_MAX + 1);
    if (n == 0 || n > KMS_MASTER_NAME_MAX || !word_char(name[0]) || !word_char(name[n - 1]))
        return 0;
    for (size_t i = 1; i + 1 < n; i++)
        if (!word_char(name[i]) && name[i] != '-' && name[i] != '.')
            return 0;
    return 1;
}

void kms_vault_options_init(struct kms_vault_options *o)
{
    memset(o, 0, sizeof(*o));
    o->auth = KMS_VAULT_AUTH_TOKEN;
    o->renew_before_expiry = 30;
    o->azure_path = KMS_VAULT_AZURE_PATH_DEFAULT;
    o->azure_resource = KMS_VAULT_AZURE_RESOURCE_DEFAULT;
    o->imds_address = KMS_VAULT_IMDS_DEFAULT;
    o->connect_timeout_ms = 3000;
    o->timeout_ms = 10000;
    o->max_response = KMS_VAULT_RESPONSE_MAX;
    o->key_cache_ms = 5000;
}

kms_rc kms_vault_address(const char *url, long port, char *out, size_t cap)
{
    if (cap > 0)
        out[0] = '\0';
    if (url == NULL || url[0] == '\0')
        return kms_fail(KMS_ERR_CONFIG, "Vault address is empty (kms.hsm.server.url)");
    CURLU *u = curl_url();
    char *got_port = NULL, *full = NULL;
    kms_rc rc = KMS_OK;
    if (u == NULL)
        return kms_fail(KMS_ERR_NO_MEMORY, "vault address");
    if (curl_url_set(u, CURLUPART_URL, url, CURLU_DEFAULT_SCHEME) != CURLUE_OK)
        rc = kms_fail(KMS_ERR_CONFIG, "Vault address '%s' is not a URL", url);
    if (rc == KMS_OK && port > 0 && curl_url_get(u, CURLUPART_PORT, &got_port, 0) != CURLUE_OK) {
        char p[24]; /* why: room for any long, so the format cannot truncate */
        snprintf(p, sizeof(p), "%ld", port);
        if (port > 65535 || curl_url_set(u, CURLUPART_PORT, p, 0) != CURLUE_OK)
            rc = kms_fail(KMS_ERR_CONFIG, "Vault port %ld is invalid", port);
    }
    if (rc == KMS_OK && curl_url_get(u, CURLUPART_URL, &full, 0) != CURLUE_OK)
        rc = kms_fail(KMS_ERR_CONFIG, "Vault address '%s' is not a URL", url);
    if (rc == KMS_OK) {
        size_t n = strlen(full);
        while (n > 0 && full[n - 1] == '/')
            n--;
        if (n >= cap)
            rc = kms_fail(KMS_ERR_CONFIG, "Vault address too long");
        else {
            memcpy(out, full, n);
            out[n] = '\0';
        }
    }
    curl_free(got_port);
    curl_free(full);
    curl_url_cleanup(u);
    return rc;
}

/* ---- requests ---------------------------------------------------------- */

/* One Vault request with the current token; a 403 makes the auth refresh
 * once (token: lookup-self; Azure: log in again) and the request go again. */
static kms_rc call(struct vault *v, const char *method, const char *path, const uint8_t *body, size_t len,
                   struct kms_vault_response *r)
{
    char tok[KMS_VAULT_TOKEN_MAX + 1];
    uint64_t gen = 0;
    kms_rc rc = KMS_OK;
    memset(r, 0, sizeof(*r));
    for (int attempt = 0; attempt < 2; attempt++) {
        rc = kms_vault_auth_token(v->auth, tok, sizeof(tok), &gen);
        if (rc != KMS_OK)
            break;
        const char *redact[] = {tok, NULL};
        struct kms_vault_request req = {KMS_VAULT_TARGET_VAULT, method, path, tok, redact, 0, body, len};
        rc = kms_vault_client_send(v->client, &req, r);
        if (rc != KMS_OK || r->status != 403 || attempt > 0)
            break;
        kms_log(KMS_LOG_WARN, "vault.forbidden", NULL, "path", path, "error", r->error,
                "action", "re-authenticating once", NULL);
        kms_vault_response_clear(r);
        rc = kms_vault_auth_refresh(v->auth, gen);
        if (rc != KMS_OK)
            break;
    }
    kms_wipe(tok, sizeof(tok));
    if (rc != KMS_OK)
        kms_vault_response_clear(r);
    return rc;
}

enum op { OP_READ, OP_WRITE, OP_DECRYPT };

static int is_unwrap_error(const char *e)
{
    return strstr(e, "cipher: message authentication failed") != NULL || strncmp(e, "invalid ciphertext", 18) == 0 ||
           strstr(e, "disallowed by policy") != NULL || strstr(e, "could not decode base64") != NULL;
}

static int is_not_found_error(const char *e)
{
    return strstr(e, "encryption key not found") != NULL || strcmp(e, "key not found") == 0 ||
           strstr(e, "no existing key named") != NULL;
}

/* An item error string of a batch, or a whole reply's first error, as a code. */
static kms_rc error_code(const char *e, enum op op)
{
    if (is_not_found_error(e))
        return KMS_ERR_KEY_NOT_FOUND;
    if (op == OP_DECRYPT && is_unwrap_error(e))
        return KMS_ERR_UNWRAP;
    return KMS_ERR_BACKEND;
}

/* The reply as a code; KMS_OK for 2xx with a JSON object (or 204). */
static kms_rc check_reply(const struct kms_vault_response *r, enum op op, const char *method, const char *path)
{
    const char *e = r->error;
    if (r->status >= 200 && r->status <= 299) {
        if (r->json != NULL || (r->status == 204 && !r->body_invalid))
            return KMS_OK;
        return kms_fail(KMS_ERR_BACKEND, "Vault %s %s: HTTP %ld: %s", method, path, r->status,
                        r->body_invalid ? e : "no JSON body");
    }
    if (r->status == 503 || r->status == 429)
        return kms_fail(KMS_ERR_BACKEND_UNAVAILABLE, "Vault %s %s: HTTP %ld: %s", method, path, r->status,
                        e[0] ? e : "unavailable");
    int has_errors = r->json != NULL && json_is_array(json_object_get(r->json, "errors"));
    if (r->status == 404 && op == OP_READ && has_errors && e[0] == '\0')
        return kms_fail(KMS_ERR_KEY_NOT_FOUND, "Vault %s %s: no such key", method, path);
    if (r->status == 403)
        return kms_fail(KMS_ERR_BACKEND, "Vault %s %s: HTTP 403 after re-authenticating: %s", method, path,
                        e[0] ? e : "permission denied");
    kms_rc rc = r->status == 400 ? error_code(e, op) : KMS_ERR_BACKEND;
    return kms_fail(rc, "Vault %s %s: HTTP %ld: %s", method, path, r->status,
                    e[0] ? e : (r->body_invalid ? "invalid body" : "no error text"));
}

static kms_rc key_path(char *out, const char *prefix, const char *name, const char *suffix)
{
    int n = snprintf(out, PATH_MAX_LEN, "/v1/transit/%s/%s%s", prefix, name, suffix);
    return n > 0 && n < PATH_MAX_LEN ? KMS_OK : kms_fail(KMS_ERR_INTERNAL, "vault path too long");
}

/* ---- key metadata cache -------------------------------------------------- */

static int type_usable(const char *type)
{
    return strcmp(type, "aes256-gcm96") == 0 || strcmp(type, "aes128-gcm96") == 0 ||
           strcmp(type, "chacha20-poly1305") == 0;
}

static kms_rc fetch_meta(struct vault *v, const char *name, struct kms_vault_key_meta *m)
{
    char path[PATH_MAX_LEN];
    struct kms_vault_response r;
    KMS_GUARD(key_path(path, "keys", name, ""));
    KMS_GUARD(call(v, "GET", path, NULL, 0, &r));
    kms_rc rc = check_reply(&r, OP_READ, "GET", path);
    if (rc == KMS_OK && r.json == NULL)
        rc = kms_fail(KMS_ERR_BACKEND, "Vault GET %s: no body", path);
    if (rc == KMS_OK)
        rc = kms_vault_json_key(r.json, m);
    kms_vault_response_clear(&r);
    return rc;
}

static void cache_put(struct vault *v, const char *name, const struct kms_vault_key_meta *m)
{
    pthread_mutex_lock(&v->cache_lock);
    struct key_entry *slot = NULL, *oldest = &v->cache[0];
    for (size_t i = 0; i < CACHE_SLOTS && slot == NULL; i++) {
        if (strcmp(v->cache[i].name, name) == 0 || v->cache[i].name[0] == '\0')
            slot = &v->cache[i];
        else if (v->cache[i].fetched_ms < oldest->fetched_ms)
            oldest = &v->cache[i];
    }
    if (slot == NULL)
        slot = oldest;
    memcpy(slot->name, name, strlen(name) + 1);
    slot->latest = m->latest_version;
    slot->derived = m->derived;
    slot->usable = type_usable(m->type) && m->supports_encryption && m->supports_decryption;
    memcpy(slot->type, m->type, sizeof(slot->type));
    slot->fetched_ms = (long long)kms_now_ms();
    pthread_mutex_unlock(&v->cache_lock);
}

static void cache_drop(struct vault *v, const char *name)
{
    pthread_mutex_lock(&v->cache_lock);
    for (size_t i = 0; i < CACHE_SLOTS; i++)
        if (strcmp(v->cache[i].name, name) == 0)
            memset(&v->cache[i], 0, sizeof(v->cache[i]));
    pthread_mutex_unlock(&v->cache_lock);
}

/* The key's entry, fetched when absent or older than max_age_ms (< 0: any
 * age will do, for the derived flag, which a key keeps for life). */
static kms_rc key_entry(struct vault *v, const char *name, long long max_age_ms, struct key_entry *out)
{
    int hit = 0;
    pthread_mutex_lock(&v->cache_lock);
    for (size_t i = 0; i < CACHE_SLOTS; i++) {
        if (strcmp(v->cache[i].name, name) == 0 &&
            (max_age_ms < 0 || (long long)kms_now_ms() - v->cache[i].fetched_ms <= max_age_ms)) {
            *out = v->cache[i];
            hit = 1;
            break;
        }
    }
    pthread_mutex_unlock(&v->cache_lock);
    if (hit)
        return KMS_OK;
    struct kms_vault_key_meta m;
    KMS_GUARD(fetch_meta(v, name, &m));
    cache_put(v, name, &m);
    memset(out, 0, sizeof(*out));
    memcpy(out->name, name, strlen(name) + 1);
    out->latest = m.latest_version;
    out->derived = m.derived;
    out->usable = type_usable(m.type) && m.supports_encryption && m.supports_decryption;
    memcpy(out->type, m.type, sizeof(out->type));
    return KMS_OK;
}

/* ---- AAD binding (docs/vault.md "AAD binding") --------------------------- */

static kms_rc aad_digest(const uint8_t *aad, size_t aad_len, uint8_t out[DIGEST_LEN])
{
    unsigned int n = 0;
    static const uint8_t empty[1] = {0};
    if (EVP_Digest(aad_len ? aad : empty, aad_len, out, &n, EVP_sha256(), NULL) != 1 || n != DIGEST_LEN) {
        kms_fail(KMS_ERR_CRYPTO, "vault: SHA-256 failed");
        kms_error_add_openssl();
        return KMS_ERR_CRYPTO;
    }
    return KMS_OK;
}

/* Appends "name":"<base64 of data>" (base64 written straight into b). */
static kms_rc append_b64_field(struct kms_buf *b, const char *name, const uint8_t *data, size_t len)
{
    size_t enc = kms_b64_encoded_len(len);
    uint8_t *at = NULL;
    KMS_GUARD(kms_vault_json_append_str(b, name, strlen(name)));
    KMS_GUARD(kms_buf_append(b, ":\"", 2));
    KMS_GUARD(kms_buf_extend(b, enc + 1, &at));
    KMS_GUARD(kms_b64_encode(data, len, (char *)at, enc + 1));
    b->len -= 1; /* drop the NUL */
    return kms_buf_append_u8(b, '"');
}

static kms_rc append_u32_field(struct kms_buf *b, const char *name, uint32_t v)
{
    char num[16];
    int n = snprintf(num, sizeof(num), "%u", v);
    KMS_GUARD(kms_vault_json_append_str(b, name, strlen(name)));
    KMS_GUARD(kms_buf_append_u8(b, ':'));
    return kms_buf_append(b, num, (size_t)n);
}

/* One encrypt item's fields (no braces): plaintext (digest-prefixed unless
 * derived), context (derived), key_version. */
static kms_rc append_encrypt_fields(struct kms_buf *b, int derived, const uint8_t *aad, size_t aad_len,
                                    const struct kms_secret *pt, uint32_t version)
{
    uint8_t digest[DIGEST_LEN];
    size_t len = kms_secret_len(pt);
    if (len == 0 || len > PT_MAX)
        return kms_fail(KMS_ERR_INTERNAL, "vault: plaintext of %zu bytes", len);
    KMS_GUARD(aad_digest(aad, aad_len, digest));
    kms_rc rc;
    if (derived) {
        rc = append_b64_field(b, "plaintext", kms_secret_cdata(pt), len);
        if (rc == KMS_OK)
            rc = kms_buf_append_u8(b, ',');
        if (rc == KMS_OK)
            rc = append_b64_field(b, "context", digest, DIGEST_LEN);
    } else {
        struct kms_secret *bound = NULL;
        rc = kms_secret_new(DIGEST_LEN + len, &bound);
        if (rc == KMS_OK) {
            memcpy(kms_secret_data(bound), digest, DIGEST_LEN);
            memcpy(kms_secret_data(bound) + DIGEST_LEN, kms_secret_cdata(pt), len);
            rc = append_b64_field(b, "plaintext", kms_secret_cdata(bound), DIGEST_LEN + len);
        }
        kms_secret_free(&bound);
    }
    if (rc == KMS_OK)
        rc = kms_buf_append_u8(b, ',');
    if (rc == KMS_OK)
        rc = append_u32_field(b, "key_version", version);
    return rc;
}

/* One decrypt/rewrap item's fields: ciphertext and (derived) context. */
static kms_rc append_decrypt_fields(struct kms_buf *b, int derived, const uint8_t *aad, size_t aad_len,
                                    const uint8_t *ct, size_t ct_len)
{
    KMS_GUARD(kms_vault_json_append_str(b, "ciphertext", 10));
    KMS_GUARD(kms_buf_append_u8(b, ':'));
    KMS_GUARD(kms_vault_json_append_str(b, (const char *)ct, ct_len));
    if (!derived)
        return KMS_OK;
    uint8_t digest[DIGEST_LEN];
    KMS_GUARD(aad_digest(aad, aad_len, digest));
    KMS_GUARD(kms_buf_append_u8(b, ','));
    return append_b64_field(b, "context", digest, DIGEST_LEN);
}

/* Checks and strips the AAD digest of a non-derived plaintext; *out is new. */
static kms_rc unbind(int derived, const uint8_t *aad, size_t aad_len, struct kms_secret **pt)
{
    if (derived)
        return KMS_OK;
    uint8_t digest[DIGEST_LEN];
    size_t len = kms_secret_len(*pt);
    KMS_GUARD(aad_digest(aad, aad_len, digest));
    if (len <= DIGEST_LEN || CRYPTO_memcmp(kms_secret_cdata(*pt), digest, DIGEST_LEN) != 0) {
        kms_secret_free(pt);
        return kms_fail(KMS_ERR_UNWRAP, "vault: the associated data does not match the ciphertext's");
    }
    struct kms_secret *rest = NULL;
    kms_rc rc = kms_secret_from(kms_secret_cdata(*pt) + DIGEST_LEN, len - DIGEST_LEN, &rest);
    kms_secret_free(pt);
    *pt = rest;
    return rc;
}

/* A ciphertext a wrapped key carries: Vault's syntax and the recorded version. */
static kms_rc check_ct(const uint8_t *ct, size_t ct_len, uint32_t version)
{
    uint32_t got = 0;
    if (kms_vault_ct_parse(ct, ct_len, &got) != KMS_OK)
        return refail(KMS_ERR_UNWRAP, "vault");
    if (got != version)
        return kms_fail(KMS_ERR_UNWRAP, "vault: ciphertext is of key version %u, the wrapped key says %u", got,
                        version);
    return KMS_OK;
}

static struct vault *as_vault(struct kms_backend *b)
{
    return b != NULL && b->ops == &vault_ops ? (struct vault *)b : NULL;
}

/* ---- ops --------------------------------------------------------------- */

static kms_rc vault_resolve(struct kms_backend *b, const char *name, struct kms_master_ref *out)
{
    struct vault *v = (struct vault *)b;
    struct key_entry e;
    memset(out, 0, sizeof(*out));
    if (!kms_vault_key_name_valid(name))
        return kms_fail(KMS_ERR_KEY_NOT_FOUND, "vault: invalid key name");
    KMS_GUARD(key_entry(v, name, v->cache_ms, &e));
    if (!e.usable)
        return kms_fail(KMS_ERR_BACKEND,
                        "vault: key %s is of type %s; kmsd wraps with aes256-gcm96, aes128-gcm96 or chacha20-poly1305",
                        name, e.type);
    memcpy(out->name, name, strlen(name) + 1);
    out->version = e.latest;
    return KMS_OK;
}

static kms_rc vault_encrypt(struct kms_backend *b, const struct kms_master_ref *ref, const uint8_t *aad,
                            size_t aad_len, const struct kms_secret *pt, uint8_t *ct, size_t ct_cap, size_t *ct_len)
{
    struct vault *v = (struct vault *)b;
    struct key_entry e;
    char path[PATH_MAX_LEN];
    *ct_len = 0;
    if (!kms_vault_key_name_valid(ref->name) || ref->version == 0)
        return kms_fail(KMS_ERR_KEY_NOT_FOUND, "vault: invalid key reference");
    KMS_GUARD(key_entry(v, ref->name, -1, &e));
    KMS_GUARD(key_path(path, "encrypt", ref->name, ""));
    struct kms_buf body;
    kms_buf_init(&body, SINGLE_BODY_MAX);
    kms_rc rc = kms_buf_append_u8(&body, '{');
    if (rc == KMS_OK)
        rc = append_encrypt_fields(&body, e.derived, aad, aad_len, pt, ref->version);
    if (rc == KMS_OK)
        rc = kms_buf_append_u8(&body, '}');
    if (rc != KMS_OK) {
        kms_buf_free(&body);
        return rc == KMS_ERR_TOO_LARGE ? kms_fail(KMS_ERR_INTERNAL, "vault: encrypt body too large") : rc;
    }
    struct kms_vault_response r;
    rc = call(v, "POST", path, body.data, body.len, &r);
    kms_buf_free(&body); /* why: wiped; it held the plaintext */
    if (rc == KMS_OK)
        rc = check_reply(&r, OP_WRITE, "POST", path);
    uint32_t got = 0;
    if (rc == KMS_OK && r.json == NULL)
        rc = kms_fail(KMS_ERR_BACKEND, "Vault POST %s: no body", path);
    if (rc == KMS_OK)
        rc = kms_vault_json_ciphertext(r.json, ct, ct_cap, ct_len, &got);
    if (rc == KMS_OK && got != ref->version) {
        *ct_len = 0;
        rc = kms_fail(KMS_ERR_BACKEND, "Vault encrypted %s with version %u, not the %u asked for", ref->name, got,
                      ref->version);
    }
    kms_vault_response_clear(&r);
    return rc;
}

/* POST transit/{op}/:name with a ciphertext made under ref (decrypt and
 * rewrap send the same fields); *r holds Vault's checked reply and *derived
 * whether the key is derived. The caller clears *r. */
static kms_rc post_ciphertext(struct vault *v, const char *op, const struct kms_master_ref *ref, const uint8_t *aad,
                              size_t aad_len, const uint8_t *ct, size_t ct_len, struct kms_vault_response *r,
                              int *derived)
{
    struct key_entry e;
    char path[PATH_MAX_LEN];
    memset(r, 0, sizeof(*r));
    if (!kms_vault_key_name_valid(ref->name))
        return kms_fail(KMS_ERR_KEY_NOT_FOUND, "vault: invalid key name");
    KMS_GUARD(check_ct(ct, ct_len, ref->version));
    KMS_GUARD(key_entry(v, ref->name, -1, &e));
    KMS_GUARD(key_path(path, op, ref->name, ""));
    *derived = e.derived;
    struct kms_buf body;
    kms_buf_init(&body, SINGLE_BODY_MAX);
    kms_rc rc = kms_buf_append_u8(&body, '{');
    if (rc == KMS_OK)
        rc = append_decrypt_fields(&body, e.derived, aad, aad_len, ct, ct_len);
    if (rc == KMS_OK)
        rc = kms_buf_append_u8(&body, '}');
    if (rc == KMS_OK)
        rc = call(v, "POST", path, body.data, body.len, r);
    kms_buf_free(&body);
    if (rc == KMS_OK)
        rc = check_reply(r, OP_DECRYPT, "POST", path);
    if (rc == KMS_OK && r->json == NULL)
        rc = kms_fail(KMS_ERR_BACKEND, "Vault POST %s: no body", path);
    return rc;
}

static kms_rc vault_decrypt(struct kms_backend *b, const struct kms_master_ref *ref, const uint8_t *aad,
                            size_t aad_len, const uint8_t *ct, size_t ct_len, struct kms_secret **pt)
{
    struct vault *v = (struct vault *)b;
    struct kms_vault_response r;
    int derived = 0;
    *pt = NULL;
    kms_rc rc = post_ciphertext(v, "decrypt", ref, aad, aad_len, ct, ct_len, &r, &derived);
    if (rc == KMS_OK)
        rc = kms_vault_json_plaintext(r.json, pt);
    kms_vault_response_clear(&r);
    if (rc == KMS_OK)
        rc = unbind(derived, aad, aad_len, pt);
    if (rc != KMS_OK)
        kms_secret_free(pt);
    return rc;
}

static const char *algorithm_name(const char *type)
{
    if (strcmp(type, "aes256-gcm96") == 0)
        return "AES-256-GCM";
    if (strcmp(type, "aes128-gcm96") == 0)
        return "AES-128-GCM";
    if (strcmp(type, "chacha20-poly1305") == 0)
        return "ChaCha20-Poly1305";
    return type;
}

static kms_rc vault_describe(struct kms_backend *b, const char *name, struct kms_key_info *out)
{
    struct vault *v = (struct vault *)b;
    struct kms_vault_key_meta m;
    memset(out, 0, sizeof(*out));
    if (!kms_vault_key_name_valid(name))
        return kms_fail(KMS_ERR_KEY_NOT_FOUND, "vault: invalid key name");
    KMS_GUARD(fetch_meta(v, name, &m));
    cache_put(v, name, &m);
    memcpy(out->name, name, strlen(name) + 1);
    out->backend = "vault";
    out->current_version = m.latest_version;
    out->min_version = m.min_decryption_version;
    snprintf(out->state, sizeof(out->state), "%s",
             !(m.supports_encryption && m.supports_decryption) ? "not-usable" : "active");
    snprintf(out->algorithm, sizeof(out->algorithm), "%s", algorithm_name(m.type));
    out->created = m.latest_created;
    return KMS_OK;
}

/* GET sys/health: no token and no namespace (restricted-root endpoint, §4-5). */
static kms_rc health(struct vault *v, struct kms_vault_health *out)
{
    struct kms_vault_request req = {KMS_VAULT_TARGET_VAULT, "GET", "/v1/sys/health", NULL, NULL,
                                    KMS_VAULT_NO_NAMESPACE, NULL, 0};
    struct kms_vault_response r;
    memset(out, 0, sizeof(*out));
    KMS_GUARD(kms_vault_client_send(v->client, &req, &r));
    out->status = r.status;
    kms_rc rc = r.json != NULL ? kms_vault_json_health(r.json, out)
                               : kms_fail(KMS_ERR_BACKEND, "Vault sys/health: HTTP %ld without a JSON body", r.status);
    kms_vault_response_clear(&r);
    return rc;
}

static kms_rc vault_probe(struct kms_backend *b)
{
    struct vault *v = (struct vault *)b;
    struct kms_vault_health h;
    kms_rc rc = health(v, &h);
    if (rc != KMS_OK && h.status == 503)
        return kms_fail(KMS_ERR_BACKEND_UNAVAILABLE, "Vault sys/health: HTTP 503 (sealed)");
    KMS_GUARD(rc);
    switch (h.status) {
    case 200: /* active */
    case 429: /* unsealed standby: forwards requests to the active node */
    case 473: /* performance standby */
        break;
    case 503:
        return kms_fail(KMS_ERR_BACKEND_UNAVAILABLE, "Vault is sealed");
    case 501:
        return kms_fail(KMS_ERR_BACKEND_UNAVAILABLE, "Vault is not initialized");
    case 472:
        return kms_fail(KMS_ERR_BACKEND_UNAVAILABLE, "Vault is a DR secondary and cannot serve requests");
    default:
        return kms_fail(KMS_ERR_BACKEND, "Vault sys/health: HTTP %ld", h.status);
    }
    if (h.sealed)
        return kms_fail(KMS_ERR_BACKEND_UNAVAILABLE, "Vault is sealed");
    struct kms_vault_auth_state st;
    kms_vault_auth_get_state(v->auth, &st);
    if (!st.valid)
        return kms_fail(KMS_ERR_BACKEND, "Vault token is expired or was refused");
    return KMS_OK;
}

static void vault_destroy(struct kms_backend *b)
{
    struct vault *v = (struct vault *)b;
    kms_vault_auth_free(&v->auth); /* first: its thread uses the client */
    kms_vault_client_free(&v->client);
    pthread_mutex_destroy(&v->cache_lock);
    free(v);
}

/* The ops table's batch decrypt: one Transit call with batch_input (issue 4). */
static kms_rc vault_decrypt_batch(struct kms_backend *b, const char *name, struct kms_backend_batch_item *items,
                                  size_t n)
{
    if (n == 0 || n > KMS_VAULT_BATCH_MAX)
        return kms_fail(KMS_ERR_INTERNAL, "vault batch of %zu items", n);
    struct kms_vault_dec_item *v = calloc(n, sizeof(*v));
    if (v == NULL)
        return KMS_ERR_NO_MEMORY;
    for (size_t i = 0; i < n; i++)
        v[i] = (struct kms_vault_dec_item){.aad = items[i].aad, .aad_len = items[i].aad_len,
                                           .version = items[i].ref->version, .ct = items[i].ct,
                                           .ct_len = items[i].ct_len};
    kms_rc rc = kms_vault_decrypt_batch(b, name, v, n);
    for (size_t i = 0; i < n; i++) {
        items[i].pt = rc == KMS_OK ? v[i].pt : NULL;
        items[i].rc = rc == KMS_OK ? v[i].rc : rc;
        if (rc != KMS_OK)
            kms_secret_free(&v[i].pt);
    }
    free(v);
    return rc;
}

static kms_rc vault_encrypt_batch(struct kms_backend *b, const struct kms_master_ref *ref,
                                  struct kms_backend_seal_item *items, size_t n)
{
    if (n == 0 || n > KMS_VAULT_BATCH_MAX)
        return kms_fail(KMS_ERR_INTERNAL, "vault batch of %zu items", n);
    struct kms_vault_enc_item *v = calloc(n, sizeof(*v));
    if (v == NULL)
        return KMS_ERR_NO_MEMORY;
    for (size_t i = 0; i < n; i++)
        v[i] = (struct kms_vault_enc_item){.aad = items[i].aad, .aad_len = items[i].aad_len, .pt = items[i].pt,
                                           .ct = items[i].ct, .ct_cap = items[i].ct_cap};
    kms_rc rc = kms_vault_encrypt_batch(b, ref, v, n);
    for (size_t i = 0; i < n; i++) {
        items[i].ct_len = rc == KMS_OK ? v[i].ct_len : 0;
        items[i].rc = rc == KMS_OK ? v[i].rc : rc;
    }
    free(v);
    return rc;
}

static const struct kms_backend_ops vault_ops = {
    .decrypt_batch = vault_decrypt_batch,
    .encrypt_batch = vault_encrypt_batch,
    .name = "vault",
    .kind = KMS_BACKEND_VAULT,
    .resolve = vault_resolve,
    .encrypt = vault_encrypt,
    .decrypt = vault_decrypt,
    .describe = vault_describe,
    .probe = vault_probe,
    .destroy = vault_destroy,
};

/* ---- open -------------------------------------------------------------- */

static kms_rc certs_to_pem(STACK_OF(X509) *certs, const uint8_t *pem, size_t pem_len, struct kms_buf *out)
{
    if (pem != NULL && pem_len > 0) {
        KMS_GUARD(kms_buf_append(out, pem, pem_len));
        KMS_GUARD(kms_buf_append_u8(out, '\n'));
    }
    for (int i = 0; certs != NULL && i < sk_X509_num(certs); i++) {
        BIO *bio = BIO_new(BIO_s_mem());
        char *data = NULL;
        long n = 0;
        kms_rc rc = bio != NULL && PEM_write_bio_X509(bio, sk_X509_value(certs, i)) == 1 ? KMS_OK : KMS_ERR_CRYPTO;
        if (rc == KMS_OK && (n = BIO_get_mem_data(bio, &data)) > 0)
            rc = kms_buf_append(out, data, (size_t)n);
        BIO_free(bio);
        if (rc != KMS_OK)
            return kms_fail(rc, "Vault CA certificates: cannot encode certificate %d", i);
    }
    return KMS_OK;
}

kms_rc kms_vault_backend_open(const struct kms_vault_options *o, struct kms_backend **out)
{
    *out = NULL;
    struct vault *v = calloc(1, sizeof(*v));
    if (v == NULL)
        return kms_fail(KMS_ERR_NO_MEMORY, "vault backend");
    if (pthread_mutex_init(&v->cache_lock, NULL) != 0) {
        free(v);
        return kms_fail(KMS_ERR_NO_MEMORY, "vault backend");
    }
    v->base.ops = &vault_ops;
    v->cache_ms = o->key_cache_ms;

    struct kms_buf pem;
    kms_buf_init(&pem, 16 * 1024 * 1024);
    kms_rc rc = certs_to_pem(o->ca_certs, o->ca_pem, o->ca_pem_len, &pem);
    struct kms_vault_client_options co = {
        .address = o->address,
        .ns = o->ns,
        .imds_address = o->auth != KMS_VAULT_AUTH_AZURE                        ? NULL
                        : o->imds_address != NULL && o->imds_address[0] != '\0' ? o->imds_address
                                                                               : KMS_VAULT_IMDS_DEFAULT,
        .ca_pem = pem.len > 0 ? pem.data : NULL,
        .ca_pem_len = pem.len,
        .ca_file = pem.len > 0 ? NULL : o->ca_file,
        .connect_timeout_ms = o->connect_timeout_ms,
        .timeout_ms = o->timeout_ms,
        .max_response = o->max_response,
    };
    if (rc == KMS_OK)
        rc = kms_vault_client_new(&co, &v->client);
    kms_buf_free(&pem);
    if (rc == KMS_OK && strncmp(kms_vault_client_address(v->client), "http://", 7) == 0)
        kms_log(KMS_LOG_WARN, "vault.plain_http", NULL, "address", kms_vault_client_address(v->client), "msg",
                "the Vault address is plain http: the token and key material cross the network unencrypted", NULL);

    struct kms_secret *token = NULL;
    if (rc == KMS_OK && o->auth == KMS_VAULT_AUTH_TOKEN && o->token != NULL && o->token[0] != '\0')
        rc = kms_secret_from((const uint8_t *)o->token, strlen(o->token), &token);
    struct kms_vault_auth_options ao = {
        .kind = o->auth,
        .token = token,
        .renew_before = o->renew_before_expiry,
        .azure_role = o->azure_role,
        .azure_path = o->azure_path,
        .azure_resource = o->azure_resource,
    };
    if (rc == KMS_OK)
        rc = kms_vault_auth_new(v->client, &ao, &v->auth);
    kms_secret_free(&token);
    if (rc != KMS_OK) {
        vault_destroy(&v->base);
        return rc;
    }
    kms_log(KMS_LOG_INFO, "vault.opened", NULL, "address", kms_vault_client_address(v->client), "namespace",
            o->ns != NULL ? o->ns : "", "auth", o->auth == KMS_VAULT_AUTH_AZURE ? "azure" : "token", NULL);
    *out = &v->base;
    return KMS_OK;
}

/* ---- batches ----------------------------------------------------------- */

/* POSTs a batch body; a batch reply may carry batch_results with 400/500
 * (§1.5), so only a reply without them is an error of the whole call. */
static kms_rc batch_call(struct vault *v, const char *path, struct kms_buf *body, size_t n, enum op op,
                         struct kms_vault_response *r, json_t **results)
{
    *results = NULL;
    KMS_GUARD(call(v, "POST", path, body->data, body->len, r));
    json_t *data = r->json != NULL ? json_object_get(r->json, "data") : NULL;
    if ((r->status == 200 || r->status == 400 || r->status == 500) && json_is_object(data) &&
        json_object_get(data, "batch_results") != NULL)
        return kms_vault_json_batch(r->json, n, results);
    kms_rc rc = check_reply(r, op, "POST", path);
    return rc != KMS_OK ? rc : kms_fail(KMS_ERR_BACKEND, "Vault POST %s: no batch_results", path);
}

kms_rc kms_vault_encrypt_batch(struct kms_backend *b, const struct kms_master_ref *ref,
                               struct kms_vault_enc_item *items, size_t n)
{
    struct vault *v = as_vault(b);
    if (v == NULL || n == 0 || n > KMS_VAULT_BATCH_MAX || ref == NULL)
        return kms_fail(KMS_ERR_INVALID_FIELD, "vault batch: not a Vault backend, or %zu items", n);
    for (size_t i = 0; i < n; i++) {
        items[i].ct_len = 0;
        items[i].rc = KMS_ERR_INTERNAL;
    }
    struct key_entry e;
    char path[PATH_MAX_LEN];
    kms_rc rc = kms_vault_key_name_valid(ref->name) && ref->version > 0
                    ? KMS_OK
                    : kms_fail(KMS_ERR_KEY_NOT_FOUND, "vault: invalid key reference");
    if (rc == KMS_OK)
        rc = key_entry(v, ref->name, -1, &e);
    if (rc == KMS_OK)
        rc = key_path(path, "encrypt", ref->name, "");
    struct kms_buf body;
    kms_buf_init(&body, BATCH_BODY_MAX);
    if (rc == KMS_OK)
        rc = kms_buf_append_str(&body, "{\"batch_input\":[");
    for (size_t i = 0; i < n && rc == KMS_OK; i++) {
        rc = kms_buf_append_str(&body, i ? ",{" : "{");
        if (rc == KMS_OK)
            rc = append_encrypt_fields(&body, e.derived, items[i].aad, items[i].aad_len, items[i].pt, ref->version);
        if (rc == KMS_OK)
            rc = kms_buf_append_u8(&body, '}');
    }
    if (rc == KMS_OK)
        rc = kms_buf_append_str(&body, "]}");
    if (rc == KMS_ERR_TOO_LARGE)
        rc = kms_fail(KMS_ERR_INTERNAL, "vault batch: request larger than %d bytes", BATCH_BODY_MAX);
    struct kms_vault_response r;
    json_t *results = NULL;
    memset(&r, 0, sizeof(r));
    if (rc == KMS_OK)
        rc = batch_call(v, path, &body, n, OP_WRITE, &r, &results);
    kms_buf_free(&body);
    for (size_t i = 0; i < n && rc == KMS_OK; i++) {
        json_t *item = json_array_get(results, i);
        char err[KMS_VAULT_ERROR_MAX];
        uint32_t got = 0;
        if (kms_vault_json_item_error(item, err, sizeof(err))) {
            items[i].rc = kms_fail(error_code(err, OP_WRITE), "Vault batch encrypt item %zu: %s", i, err);
            continue;
        }
        items[i].rc = kms_vault_json_ct_item(item, items[i].ct, items[i].ct_cap, &items[i].ct_len, &got);
        if (items[i].rc == KMS_OK && got != ref->version) {
            items[i].ct_len = 0;
            items[i].rc = kms_fail(KMS_ERR_BACKEND, "Vault batch encrypt item %zu: version %u, not %u", i, got,
                                   ref->version);
        }
    }
    kms_vault_response_clear(&r);
    if (rc != KMS_OK)
        for (size_t i = 0; i < n; i++)
            items[i].rc = rc;
    return rc;
}

kms_rc kms_vault_decrypt_batch(struct kms_backend *b, const char *name, struct kms_vault_dec_item *items, size_t n)
{
    struct vault *v = as_vault(b);
    if (v == NULL || n == 0 || n > KMS_VAULT_BATCH_MAX)
        return kms_fail(KMS_ERR_INVALID_FIELD, "vault batch: not a Vault backend, or %zu items", n);
    size_t sent = 0;
    for (size_t i = 0; i < n; i++) {
        items[i].pt = NULL;
        items[i].rc = check_ct(items[i].ct, items[i].ct_len, items[i].version);
        if (items[i].rc == KMS_OK)
            sent++;
    }
    if (sent == 0)
        return KMS_OK;
    struct key_entry e;
    char path[PATH_MAX_LEN];
    kms_rc rc = kms_vault_key_name_valid(name) ? KMS_OK : kms_fail(KMS_ERR_KEY_NOT_FOUND, "vault: invalid key name");
    if (rc == KMS_OK)
        rc = key_entry(v, name, -1, &e);
    if (rc == KMS_OK)
        rc = key_path(path, "decrypt", name, "");
    struct kms_buf body;
    kms_buf_init(&body, BATCH_BODY_MAX);
    if (rc == KMS_OK)
        rc = kms_buf_append_str(&body, "{\"batch_input\":[");
    for (size_t i = 0, k = 0; i < n && rc == KMS_OK; i++) {
        if (items[i].rc != KMS_OK)
            continue;
        rc = kms_buf_append_str(&body, k++ ? ",{" : "{");
        if (rc == KMS_OK)
            rc = append_decrypt_fields(&body, e.derived, items[i].aad, items[i].aad_len, items[i].ct,
                                       items[i].ct_len);
        if (rc == KMS_OK)
            rc = kms_buf_append_u8(&body, '}');
    }
    if (rc == KMS_OK)
        rc = kms_buf_append_str(&body, "]}");
    if (rc == KMS_ERR_TOO_LARGE)
        rc = kms_fail(KMS_ERR_INTERNAL, "vault batch: request larger than %d bytes", BATCH_BODY_MAX);
    struct kms_vault_response r;
    json_t *results = NULL;
    memset(&r, 0, sizeof(r));
    if (rc == KMS_OK)
        rc = batch_call(v, path, &body, sent, OP_DECRYPT, &r, &results);
    kms_buf_free(&body);
    for (size_t i = 0, k = 0; i < n && rc == KMS_OK; i++) {
        if (items[i].rc != KMS_OK)
            continue;
        json_t *item = json_array_get(results, k++);
        char err[KMS_VAULT_ERROR_MAX];
        if (kms_vault_json_item_error(item, err, sizeof(err))) {
            items[i].rc = kms_fail(error_code(err, OP_DECRYPT), "Vault batch decrypt item %zu: %s", i, err);
            continue;
        }
        items[i].rc = kms_vault_json_pt_item(item, &items[i].pt);
        if (items[i].rc == KMS_OK)
            items[i].rc = unbind(e.derived, items[i].aad, items[i].aad_len, &items[i].pt);
        if (items[i].rc != KMS_OK)
            kms_secret_free(&items[i].pt);
    }
    kms_vault_response_clear(&r);
    if (rc != KMS_OK)
        for (size_t i = 0; i < n; i++)
            if (items[i].rc == KMS_OK)
                items[i].rc = rc;
    return rc;
}

/* ---- rewrap and administration ------------------------------------------ */

kms_rc kms_vault_rewrap(struct kms_backend *b, const struct kms_master_ref *ref, const uint8_t *aad,
                        size_t aad_len, const uint8_t *ct, size_t ct_len, uint8_t *out, size_t cap,
                        size_t *out_len, struct kms_master_ref *new_ref)
{
    struct vault *v = as_vault(b);
    *out_len = 0;
    memset(new_ref, 0, sizeof(*new_ref));
    if (v == NULL)
        return kms_fail(KMS_ERR_INVALID_FIELD, "not a Vault backend");
    struct kms_vault_response r;
    int derived = 0;
    uint32_t got = 0;
    kms_rc rc = post_ciphertext(v, "rewrap", ref, aad, aad_len, ct, ct_len, &r, &derived);
    if (rc == KMS_OK)
        rc = kms_vault_json_ciphertext(r.json, out, cap, out_len, &got);
    kms_vault_response_clear(&r);
    if (rc == KMS_OK) {
        memcpy(new_ref->name, ref->name, strlen(ref->name) + 1);
        new_ref->version = got;
    }
    return rc;
}

kms_rc kms_vault_status(struct kms_backend *b, struct kms_vault_status *out)
{
    struct vault *v = as_vault(b);
    memset(out, 0, sizeof(*out));
    if (v == NULL)
        return kms_fail(KMS_ERR_INVALID_FIELD, "not a Vault backend");
    snprintf(out->address, sizeof(out->address), "%s", kms_vault_client_address(v->client));
    kms_vault_auth_get_state(v->auth, &out->auth);
    return health(v, &out->health);
}

kms_rc kms_vault_show_key(struct kms_backend *b, const char *name, struct kms_vault_key_meta *out)
{
    struct vault *v = as_vault(b);
    memset(out, 0, sizeof(*out));
    if (v == NULL)
        return kms_fail(KMS_ERR_INVALID_FIELD, "not a Vault backend");
    if (!kms_vault_key_name_valid(name))
        return kms_fail(KMS_ERR_KEY_NOT_FOUND, "vault: invalid key name");
    KMS_GUARD(fetch_meta(v, name, out));
    cache_put(v, name, out);
    return KMS_OK;
}

kms_rc kms_vault_create_key(struct kms_backend *b, const char *name)
{
    struct vault *v = as_vault(b);
    struct kms_vault_key_meta m;
    if (v == NULL)
        return kms_fail(KMS_ERR_INVALID_FIELD, "not a Vault backend");
    if (!kms_vault_key_name_valid(name))
        return kms_fail(KMS_ERR_INVALID_FIELD, "invalid Vault key name (letters, digits, _ . -)");
    kms_rc rc = fetch_meta(v, name, &m);
    if (rc == KMS_OK)
        return kms_fail(KMS_ERR_INVALID_FIELD, "Vault key %s exists", name);
    if (rc != KMS_ERR_KEY_NOT_FOUND)
        return rc;
    char path[PATH_MAX_LEN];
    struct kms_vault_response r;
    static const char body[] = "{\"type\":\"aes256-gcm96\"}";
    KMS_GUARD(key_path(path, "keys", name, ""));
    KMS_GUARD(call(v, "POST", path, (const uint8_t *)body, sizeof(body) - 1, &r));
    rc = check_reply(&r, OP_WRITE, "POST", path);
    kms_vault_response_clear(&r);
    cache_drop(v, name);
    if (rc == KMS_OK)
        kms_log(KMS_LOG_INFO, "vault.key_created", NULL, "key", name, NULL);
    return rc;
}

kms_rc kms_vault_rotate_key(struct kms_backend *b, const char *name, uint32_t *new_version)
{
    struct vault *v = as_vault(b);
    if (new_version != NULL)
        *new_version = 0;
    if (v == NULL)
        return kms_fail(KMS_ERR_INVALID_FIELD, "not a Vault backend");
    if (!kms_vault_key_name_valid(name))
        return kms_fail(KMS_ERR_KEY_NOT_FOUND, "vault: invalid key name");
    char path[PATH_MAX_LEN];
    struct kms_vault_response r;
    KMS_GUARD(key_path(path, "keys", name, "/rotate"));
    KMS_GUARD(call(v, "POST", path, NULL, 0, &r));
    kms_rc rc = check_reply(&r, OP_WRITE, "POST", path);
    kms_vault_response_clear(&r);
    cache_drop(v, name);
    /* why: current Vault answers with the key info, older ones with 204: read it either way */
    struct kms_vault_key_meta m;
    if (rc == KMS_OK)
        rc = fetch_meta(v, name, &m);
    if (rc == KMS_OK) {
        cache_put(v, name, &m);
        if (new_version != NULL)
            *new_version = m.latest_version;
        char ver[16];
        snprintf(ver, sizeof(ver), "%u", m.latest_version);
        kms_log(KMS_LOG_INFO, "vault.key_rotated", NULL, "key", name, "version", ver, NULL);
    }
    return rc;
}
