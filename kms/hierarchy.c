#include "kms/hierarchy.h"

#include "common/aead.h"
#include "common/hex.h"
#include "common/token.h"

#include <openssl/evp.h>
#include <stdlib.h>
#include <string.h>

#include "common/buf.h"
#include "kms/wrapped.h"

struct kms_hierarchy {
    struct kms_backend *b;   /* borrowed */
    struct kms_cache *cache; /* borrowed, may be NULL */
    char master[KMS_MASTER_NAME_MAX + 1];
};

_Static_assert(KMS_SITE_ID_MAX == 128, "KMS_SITE_ID_RULE names the bound");

int kms_site_id_valid(const char *site_id) { return kms_token_valid(site_id, KMS_SITE_ID_MAX, "._:@-"); }

/* The generic primitive allows no site at all. */
static int generic_site_valid(const char *site_id)
{
    return site_id != NULL && (site_id[0] == '\0' || kms_site_id_valid(site_id));
}

kms_rc kms_hierarchy_new(struct kms_backend *b, struct kms_cache *cache, const char *master_key,
                         struct kms_hierarchy **out)
{
    *out = NULL;
    if (b == NULL || b->ops == NULL)
        return kms_fail(KMS_ERR_INTERNAL, "hierarchy: no backend");
    if (!kms_master_name_valid(master_key))
        return kms_fail(KMS_ERR_CONFIG, "hierarchy: invalid master key name");
    struct kms_hierarchy *h = calloc(1, sizeof(*h));
    if (h == NULL)
        return kms_fail(KMS_ERR_NO_MEMORY, "hierarchy");
    h->b = b;
    h->cache = cache;
    memcpy(h->master, master_key, strlen(master_key) + 1);
    *out = h;
    return KMS_OK;
}

void kms_hierarchy_free(struct kms_hierarchy **h)
{
    if (h == NULL || *h == NULL)
        return;
    free(*h);
    *h = NULL;
}

/* SPEC §3: one unwrap error, no oracle. What the backend says about a
 * ciphertext (bad tag, unknown key or version, garbage) becomes
 * KMS_ERR_UNWRAP; that it could not be asked (availability) and our own
 * resource failures stay what they are. The detail is kept for the log. */
static kms_rc collapse(kms_rc rc)
{
    switch (rc) {
    case KMS_OK:
    case KMS_ERR_BACKEND:
    case KMS_ERR_BACKEND_UNAVAILABLE:
    case KMS_ERR_BACKEND_TIMEOUT:
    case KMS_ERR_NO_MEMORY:
    case KMS_ERR_CRYPTO:
    case KMS_ERR_INTERNAL:
        return rc;
    default:
        return KMS_ERR_UNWRAP;
    }
}


_Static_assert(KMS_GCM_NONCE_LEN == KMS_AEAD_NONCE_LEN && KMS_GCM_TAG_LEN == KMS_AEAD_TAG_LEN &&
                   KMS_KEY_BYTES == KMS_AEAD_KEY_LEN,
               "the kms:v1 payload is common/aead's AES-256-GCM");

/* AES-256-GCM of pt under key (SPEC §2: user and workspace keys are wrapped
 * by kmsd). nonce is drawn here; ct receives len(pt) bytes. */
static kms_rc gcm_seal(const struct kms_secret *key, const uint8_t *aad, size_t aad_len,
                       const struct kms_secret *pt, uint8_t nonce[KMS_GCM_NONCE_LEN], uint8_t *ct,
                       uint8_t tag[KMS_GCM_TAG_LEN])
{
    if (kms_secret_len(key) != KMS_KEY_BYTES)
        return kms_fail(KMS_ERR_INTERNAL, "gcm: key of %zu bytes", kms_secret_len(key));
    KMS_GUARD(kms_random(nonce, KMS_GCM_NONCE_LEN));
    return kms_aead_encrypt(kms_secret_cdata(key), nonce, aad, aad_len, kms_secret_cdata(pt), kms_secret_len(pt),
                            ct, tag);
}

static kms_rc gcm_open(const struct kms_secret *key, const struct kms_wrapped *w, struct kms_secret **out)
{
    struct kms_secret *pt = NULL;
    *out = NULL;
    if (kms_secret_len(key) != KMS_KEY_BYTES)
        return kms_fail(KMS_ERR_INTERNAL, "gcm: key of %zu bytes", kms_secret_len(key));
    KMS_GUARD(kms_secret_new(w->ct_len, &pt));
    kms_rc rc = kms_aead_decrypt(kms_secret_cdata(key), w->nonce, w->blob, w->header_len, w->ct, w->ct_len, w->tag,
                                 kms_secret_data(pt));
    if (rc != KMS_OK) {
        kms_secret_free(&pt);
        if (rc == KMS_ERR_UNWRAP)
            return kms_fail(KMS_ERR_UNWRAP, "%s key %s: authentication failed", kms_key_level_name(w->hdr.level),
                            kms_wrapper_name(w->hdr.wrapper));
        return rc;
    }
    *out = pt;
    return KMS_OK;
}

/* Parses text and checks that it is a key of `level` for `site_id`. */
static kms_rc parse_expect(const char *text, unsigned level, const char *site_id, struct kms_wrapped **out)
{
    struct kms_wrapped *w = NULL;
    KMS_GUARD(kms_wrapped_parse(text, &w));
    if (w->hdr.level != level) {
        kms_fail(KMS_ERR_UNWRAP, "expected a %s key, got a %s key", kms_key_level_name(level),
                 kms_key_level_name(w->hdr.level));
        kms_wrapped_free(&w);
        return KMS_ERR_UNWRAP;
    }
    if (strcmp(w->hdr.site_id, site_id) != 0) {
        kms_fail(KMS_ERR_UNWRAP, "%s key is for another site", kms_key_level_name(level));
        kms_wrapped_free(&w);
        return KMS_ERR_UNWRAP;
    }
    *out = w;
    return KMS_OK;
}

/* Backend decrypt of a master-wrapped key, header as AAD. */
static kms_rc master_open(struct kms_hierarchy *h, const struct kms_wrapped *w, struct kms_secret **out)
{
    *out = NULL;
    if (w->hdr.wrapper != (unsigned)h->b->ops->kind)
        return kms_fail(KMS_ERR_UNWRAP, "%s key wrapped by a %s backend, this server uses %s",
                        kms_key_level_name(w->hdr.level), kms_wrapper_name(w->hdr.wrapper), h->b->ops->name);
    kms_rc rc = h->b->ops->decrypt(h->b, &w->hdr.master, w->blob, w->header_len, w->ct, w->ct_len, out);
    if (rc != KMS_OK) {
        kms_secret_free(out);
        return collapse(rc);
    }
    return KMS_OK;
}

/* Wraps pt under master key `name` (its current version) as a key of `level`. */
static kms_rc master_seal(struct kms_hierarchy *h, const char *name, unsigned level,
                          const uint8_t key_id[KMS_KEY_ID_LEN], const char *site_id, const struct kms_secret *pt,
                          char **out)
{
    struct kms_wrapped_header hdr;
    memset(&hdr, 0, sizeof(hdr));
    KMS_GUARD(h->b->ops->resolve(h->b, name, &hdr.master));
    hdr.level = (uint8_t)level;
    hdr.wrapper = (uint8_t)h->b->ops->kind;
    memcpy(hdr.key_id, key_id, KMS_KEY_ID_LEN);
    memcpy(hdr.site_id, site_id, strlen(site_id) + 1);

    struct kms_buf blob;
    kms_buf_init(&blob, KMS_WRAPPED_BLOB_MAX);
    uint8_t *ct = malloc(KMS_BACKEND_CT_MAX);
    size_t ct_len = 0;
    kms_rc rc = ct == NULL ? kms_fail(KMS_ERR_NO_MEMORY, "wrap") : kms_wrapped_header_encode(&hdr, &blob);
    if (rc == KMS_OK)
        rc = h->b->ops->encrypt(h->b, &hdr.master, blob.data, blob.len, pt, ct, KMS_BACKEND_CT_MAX, &ct_len);
    if (rc == KMS_OK)
        rc = kms_wrapped_append_master_payload(&blob, ct, ct_len);
    if (rc == KMS_OK)
        rc = kms_wrapped_to_text(blob.data, blob.len, out);
    free(ct);
    kms_buf_free(&blob);
    return rc;
}

/* Wraps a new random key of `level` under parent (key + parsed wrapped form). */
static kms_rc parent_seal(const struct kms_wrapped *parent, const struct kms_secret *parent_key, unsigned level,
                          char **out)
{
    struct kms_wrapped_header hdr;
    struct kms_secret *key = NULL;
    uint8_t nonce[KMS_GCM_NONCE_LEN], ct[KMS_KEY_BYTES], tag[KMS_GCM_TAG_LEN];
    memset(&hdr, 0, sizeof(hdr));
    hdr.level = (uint8_t)level;
    hdr.wrapper = KMS_WRAPPER_PARENT;
    memcpy(hdr.parent_id, parent->hdr.key_id, KMS_KEY_ID_LEN);
    memcpy(hdr.site_id, parent->hdr.site_id, sizeof(hdr.site_id));
    KMS_GUARD(kms_random(hdr.key_id, KMS_KEY_ID_LEN));

    struct kms_buf blob;
    kms_buf_init(&blob, KMS_WRAPPED_BLOB_MAX);
    kms_rc rc = kms_secret_random(KMS_KEY_BYTES, &key);
    if (rc == KMS_OK)
        rc = kms_wrapped_header_encode(&hdr, &blob);
    if (rc == KMS_OK)
        rc = gcm_seal(parent_key, blob.data, blob.len, key, nonce, ct, tag);
    if (rc == KMS_OK)
        rc = kms_wrapped_append_parent_payload(&blob, nonce, ct, sizeof(ct), tag);
    if (rc == KMS_OK)
        rc = kms_wrapped_to_text(blob.data, blob.len, out);
    kms_secret_free(&key);
    kms_buf_free(&blob);
    return rc;
}

static void cache_store(struct kms_hierarchy *h, const uint8_t digest[KMS_CACHE_KEY_LEN],
                        const struct kms_secret *key)
{
    /* why: a cache that cannot store makes kmsd slower, not wrong */
    if (kms_cache_put(h->cache, digest, key) != KMS_OK)
        kms_error_clear();
}

/* The customer key of site_id: from the cache, else from the backend (and
 * then cached). *w and *key are the caller's on success. */
static kms_rc customer_open(struct kms_hierarchy *h, const char *site_id, const char *text, struct kms_wrapped **w,
                            struct kms_secret **key)
{
    uint8_t digest[KMS_CACHE_KEY_LEN];
    *key = NULL;
    KMS_GUARD(parse_expect(text, KMS_LEVEL_CUSTOMER, site_id, w));
    kms_rc rc = kms_wrapped_digest(*w, digest);
    if (rc == KMS_OK && kms_cache_get(h->cache, digest, key) == KMS_OK) {
        if (kms_secret_len(*key) == KMS_KEY_BYTES)
            return KMS_OK;
        kms_secret_free(key); /* why: a wrong-sized value is not a usable hit */
    }
    if (rc == KMS_OK)
        rc = master_open(h, *w, key);
    if (rc == KMS_OK && kms_secret_len(*key) != KMS_KEY_BYTES)
        rc = kms_fail(KMS_ERR_UNWRAP, "customer key of %zu bytes", kms_secret_len(*key));
    if (rc != KMS_OK) {
        kms_secret_free(key);
        kms_wrapped_free(w);
        return rc;
    }
    cache_store(h, digest, *key);
    return KMS_OK;
}

/* A user or workspace key under its parent: level, site and parent id are
 * checked before the tag, and all of them are in the AAD as well. */
static kms_rc child_open(const struct kms_wrapped *parent, const struct kms_secret *parent_key, unsigned level,
                         const char *text, struct kms_wrapped **w, struct kms_secret **key)
{
    *key = NULL;
    KMS_GUARD(parse_expect(text, level, parent->hdr.site_id, w));
    kms_rc rc = KMS_OK;
    if (memcmp((*w)->hdr.parent_id, parent->hdr.key_id, KMS_KEY_ID_LEN) != 0) {
        char want[2 * KMS_KEY_ID_LEN + 1], got[2 * KMS_KEY_ID_LEN + 1];
        kms_hex_encode(parent->hdr.key_id, KMS_KEY_ID_LEN, want, sizeof(want));
        kms_hex_encode((*w)->hdr.parent_id, KMS_KEY_ID_LEN, got, sizeof(got));
        rc = kms_fail(KMS_ERR_UNWRAP, "%s key's parent is %s, not the %s key %s", kms_key_level_name(level), got,
                      kms_key_level_name(parent->hdr.level), want);
    }
    if (rc == KMS_OK)
        rc = gcm_open(parent_key, *w, key);
    if (rc != KMS_OK)
        kms_wrapped_free(w);
    return rc;
}

kms_rc kms_hierarchy_create_customer(struct kms_hierarchy *h, const char *site_id, char **customer_key)
{
    uint8_t key_id[KMS_KEY_ID_LEN];
    struct kms_secret *key = NULL;
    *customer_key = NULL;
    if (!kms_site_id_valid(site_id))
        return kms_fail(KMS_ERR_INVALID_FIELD, "invalid site id");
    KMS_GUARD(kms_random(key_id, sizeof(key_id)));
    KMS_GUARD(kms_secret_random(KMS_KEY_BYTES, &key));
    kms_rc rc = master_seal(h, h->master, KMS_LEVEL_CUSTOMER, key_id, site_id, key, customer_key);
    if (rc == KMS_OK) {
        /* why: the next call (create a user key) will need it unwrapped */
        struct kms_wrapped *w = NULL;
        uint8_t digest[KMS_CACHE_KEY_LEN];
        if (kms_wrapped_parse(*customer_key, &w) == KMS_OK && kms_wrapped_digest(w, digest) == KMS_OK)
            cache_store(h, digest, key);
        kms_wrapped_free(&w);
    }
    kms_secret_free(&key);
    return rc;
}

kms_rc kms_hierarchy_create_user(struct kms_hierarchy *h, const char *site_id, const char *customer_key,
                                 char **user_key)
{
    struct kms_wrapped *cw = NULL;
    struct kms_secret *ck = NULL;
    *user_key = NULL;
    if (!kms_site_id_valid(site_id))
        return kms_fail(KMS_ERR_INVALID_FIELD, "invalid site id");
    KMS_GUARD(customer_open(h, site_id, customer_key, &cw, &ck));
    kms_rc rc = parent_seal(cw, ck, KMS_LEVEL_USER, user_key);
    kms_secret_free(&ck);
    kms_wrapped_free(&cw);
    return rc;
}

/* customer -> user, shared by create_workspace and unwrap_workspace. */
static kms_rc user_open(struct kms_hierarchy *h, const char *site_id, const char *customer_key,
                        const char *user_key, struct kms_wrapped **uw, struct kms_secret **uk)
{
    struct kms_wrapped *cw = NULL;
    struct kms_secret *ck = NULL;
    if (!kms_site_id_valid(site_id))
        return kms_fail(KMS_ERR_INVALID_FIELD, "invalid site id");
    KMS_GUARD(customer_open(h, site_id, customer_key, &cw, &ck));
    kms_rc rc = child_open(cw, ck, KMS_LEVEL_USER, user_key, uw, uk);
    kms_secret_free(&ck);
    kms_wrapped_free(&cw);
    return rc;
}

kms_rc kms_hierarchy_create_workspace(struct kms_hierarchy *h, const char *site_id, const char *customer_key,
                                      const char *user_key, char **workspace_key)
{
    struct kms_wrapped *uw = NULL;
    struct kms_secret *uk = NULL;
    *workspace_key = NULL;
    KMS_GUARD(user_open(h, site_id, customer_key, user_key, &uw, &uk));
    kms_rc rc = parent_seal(uw, uk, KMS_LEVEL_WORKSPACE, workspace_key);
    kms_secret_free(&uk);
    kms_wrapped_free(&uw);
    return rc;
}

kms_rc kms_hierarchy_unwrap_workspace(struct kms_hierarchy *h, const char *site_id, const char *customer_key,
                                      const char *user_key, const char *workspace_key, struct kms_secret **key)
{
    struct kms_wrapped *uw = NULL, *ww = NULL;
    struct kms_secret *uk = NULL;
    *key = NULL;
    KMS_GUARD(user_open(h, site_id, customer_key, user_key, &uw, &uk));
    kms_rc rc = child_open(uw, uk, KMS_LEVEL_WORKSPACE, workspace_key, &ww, key);
    kms_wrapped_free(&ww);
    kms_secret_free(&uk);
    kms_wrapped_free(&uw);
    return rc;
}

/* SPEC §3: a wrapped key names its master key. For backends whose resolve
 * maps a name to another identifier (KMIP: Name -> unique identifier), the
 * resolved identifier of `name` is accepted too. */
static kms_rc check_master_name(struct kms_hierarchy *h, const struct kms_wrapped *w, const char *name)
{
    if (strcmp(w->hdr.master.name, name) == 0)
        return KMS_OK;
    struct kms_master_ref ref;
    memset(&ref, 0, sizeof(ref));
    kms_rc rc = h->b->ops->resolve(h->b, name, &ref);
    if (rc == KMS_OK && strcmp(w->hdr.master.name, ref.name) == 0)
        return KMS_OK;
    if (rc == KMS_OK || collapse(rc) == KMS_ERR_UNWRAP)
        return kms_fail(KMS_ERR_UNWRAP, "wrapped key was made under master key \"%s\", not \"%s\"",
                        w->hdr.master.name, name);
    return rc;
}

static kms_rc generic_args(const char *name, const char *site_id)
{
    if (!kms_master_name_valid(name))
        return kms_fail(KMS_ERR_INVALID_FIELD, "invalid master key name");
    if (!generic_site_valid(site_id))
        return kms_fail(KMS_ERR_INVALID_FIELD, "invalid site id");
    return KMS_OK;
}

/* Parses and authenticates a master-wrapped key of one of the given levels
 * made under `name` for `site_id`. */
/* Parses a master-wrapped key and checks, without decrypting, that it is of
 * an allowed level, for site_id, and made under `name` (NULL: any master key
 * of this backend may have made it, for rewrap). */
static kms_rc generic_check(struct kms_hierarchy *h, const char *name, const char *site_id, const char *text,
                            int allow_customer, struct kms_wrapped **w)
{
    KMS_GUARD(kms_wrapped_parse(text, w));
    kms_rc rc = KMS_OK;
    unsigned level = (*w)->hdr.level;
    if (level != KMS_LEVEL_DATA && !(allow_customer && level == KMS_LEVEL_CUSTOMER))
        rc = kms_fail(KMS_ERR_UNWRAP, "a %s key is not unwrapped by the generic primitive",
                      kms_key_level_name(level));
    else if (strcmp((*w)->hdr.site_id, site_id) != 0)
        rc = kms_fail(KMS_ERR_UNWRAP, "%s key is for another site", kms_key_level_name(level));
    if (rc == KMS_OK && name != NULL)
        rc = check_master_name(h, *w, name);
    if (rc != KMS_OK)
        kms_wrapped_free(w);
    return rc;
}

static kms_rc generic_open(struct kms_hierarchy *h, const char *name, const char *site_id, const char *text,
                           int allow_customer, struct kms_wrapped **w, struct kms_secret **pt)
{
    *pt = NULL;
    KMS_GUARD(generic_check(h, name, site_id, text, allow_customer, w));
    kms_rc rc = master_open(h, *w, pt);
    if (rc != KMS_OK)
        kms_wrapped_free(w);
    return rc;
}

kms_rc kms_hierarchy_wrap(struct kms_hierarchy *h, const char *name, const char *site_id, const uint8_t *pt,
                          size_t pt_len, char **wrapped)
{
    uint8_t key_id[KMS_KEY_ID_LEN];
    struct kms_secret *s = NULL;
    *wrapped = NULL;
    KMS_GUARD(generic_args(name, site_id));
    if (pt == NULL || pt_len == 0 || pt_len > KMS_DATA_MAX)
        return kms_fail(KMS_ERR_INVALID_FIELD, "key material of %zu bytes (1..%d)", pt_len, KMS_DATA_MAX);
    KMS_GUARD(kms_random(key_id, sizeof(key_id)));
    KMS_GUARD(kms_secret_from(pt, pt_len, &s));
    kms_rc rc = master_seal(h, name, KMS_LEVEL_DATA, key_id, site_id, s, wrapped);
    kms_secret_free(&s);
    return rc;
}

kms_rc kms_hierarchy_unwrap(struct kms_hierarchy *h, const char *name, const char *site_id, const char *wrapped,
                            struct kms_secret **pt)
{
    struct kms_wrapped *w = NULL;
    *pt = NULL;
    KMS_GUARD(generic_args(name, site_id));
    /* why: customer keys are the root of a site; the generic unwrap (open to
     * devices) never hands one out */
    KMS_GUARD(generic_open(h, name, site_id, wrapped, 0, &w, pt));
    kms_wrapped_free(&w);
    return KMS_OK;
}

kms_rc kms_hierarchy_wrap_batch(struct kms_hierarchy *h, const char *name, struct kms_wrap_item *items, size_t n)
{
    KMS_GUARD(generic_args(name, ""));
    if (n == 0 || n > KMS_BACKEND_BATCH_MAX)
        return kms_fail(KMS_ERR_INVALID_FIELD, "a batch holds 1..%d items", KMS_BACKEND_BATCH_MAX);
    struct kms_wrapped_header hdr;
    memset(&hdr, 0, sizeof(hdr));
    kms_rc resolved = h->b->ops->resolve(h->b, name, &hdr.master); /* why: once for the whole batch */
    struct kms_buf *blobs = calloc(n, sizeof(*blobs));
    struct kms_backend_seal_item *si = calloc(n, sizeof(*si));
    size_t *at = calloc(n, sizeof(*at));
    uint8_t *cts = malloc(n * KMS_BACKEND_CT_MAX);
    if (blobs == NULL || si == NULL || at == NULL || cts == NULL) {
        free(blobs);
        free(si);
        free(at);
        free(cts);
        return KMS_ERR_NO_MEMORY;
    }
    size_t pending = 0;
    for (size_t i = 0; i < n; i++) {
        kms_buf_init(&blobs[i], KMS_WRAPPED_BLOB_MAX);
        items[i].wrapped = NULL;
        items[i].rc = resolved;
        if (items[i].rc == KMS_OK && !generic_site_valid(items[i].site_id))
            items[i].rc = kms_fail(KMS_ERR_INVALID_FIELD, "invalid site id");
        if (items[i].rc == KMS_OK && (items[i].pt == NULL || kms_secret_len(items[i].pt) > KMS_DATA_MAX))
            items[i].rc = kms_fail(KMS_ERR_INVALID_FIELD, "key material of 1..%d bytes", KMS_DATA_MAX);
        if (items[i].rc != KMS_OK)
            continue;
        hdr.level = KMS_LEVEL_DATA;
        hdr.wrapper = (uint8_t)h->b->ops->kind;
        memcpy(hdr.site_id, items[i].site_id, strlen(items[i].site_id) + 1);
        items[i].rc = kms_random(hdr.key_id, sizeof(hdr.key_id));
        if (items[i].rc == KMS_OK)
            items[i].rc = kms_wrapped_header_encode(&hdr, &blobs[i]);
        if (items[i].rc != KMS_OK)
            continue;
        si[pending] = (struct kms_backend_seal_item){.aad = blobs[i].data, .aad_len = blobs[i].len,
                                                     .pt = items[i].pt, .ct = cts + i * KMS_BACKEND_CT_MAX,
                                                     .ct_cap = KMS_BACKEND_CT_MAX};
        at[pending++] = i;
    }
    if (pending > 1 && h->b->ops->encrypt_batch != NULL) {
        kms_rc rc = h->b->ops->encrypt_batch(h->b, &hdr.master, si, pending);
        for (size_t k = 0; k < pending; k++)
            si[k].rc = rc == KMS_OK ? si[k].rc : rc;
    } else {
        for (size_t k = 0; k < pending; k++)
            si[k].rc = h->b->ops->encrypt(h->b, &hdr.master, si[k].aad, si[k].aad_len, si[k].pt, si[k].ct,
                                         si[k].ct_cap, &si[k].ct_len);
    }
    for (size_t k = 0; k < pending; k++) {
        size_t i = at[k];
        items[i].rc = si[k].rc;
        if (items[i].rc == KMS_OK)
            items[i].rc = kms_wrapped_append_master_payload(&blobs[i], si[k].ct, si[k].ct_len);
        if (items[i].rc == KMS_OK)
            items[i].rc = kms_wrapped_to_text(blobs[i].data, blobs[i].len, &items[i].wrapped);
    }
    for (size_t i = 0; i < n; i++)
        kms_buf_free(&blobs[i]);
    free(blobs);
    free(si);
    free(at);
    free(cts);
    return KMS_OK;
}

kms_rc kms_hierarchy_unwrap_batch(struct kms_hierarchy *h, const char *name, struct kms_unwrap_item *items, size_t n)
{
    if (n == 0 || n > KMS_BACKEND_BATCH_MAX)
        return kms_fail(KMS_ERR_INVALID_FIELD, "a batch holds 1..%d items", KMS_BACKEND_BATCH_MAX);
    struct kms_wrapped **w = calloc(n, sizeof(*w));
    struct kms_backend_batch_item *bi = calloc(n, sizeof(*bi));
    size_t *at = calloc(n, sizeof(*at));
    if (w == NULL || bi == NULL || at == NULL) {
        free(w);
        free(bi);
        free(at);
        return KMS_ERR_NO_MEMORY;
    }
    size_t pending = 0;
    for (size_t i = 0; i < n; i++) {
        items[i].pt = NULL;
        items[i].rc = generic_args(name, items[i].site_id);
        if (items[i].rc == KMS_OK)
            items[i].rc = generic_check(h, name, items[i].site_id, items[i].wrapped, 0, &w[i]);
        if (items[i].rc == KMS_OK && w[i]->hdr.wrapper != (unsigned)h->b->ops->kind)
            items[i].rc = kms_fail(KMS_ERR_UNWRAP, "key wrapped by another kind of backend");
        if (items[i].rc != KMS_OK)
            continue;
        bi[pending] = (struct kms_backend_batch_item){.ref = &w[i]->hdr.master, .aad = w[i]->blob,
                                                      .aad_len = w[i]->header_len, .ct = w[i]->ct,
                                                      .ct_len = w[i]->ct_len};
        at[pending++] = i;
    }
    /* why: a backend that can (Vault: batch_input) decrypts them in one round
     * trip; the others one by one, which is what they would do anyway */
    if (pending > 1 && h->b->ops->decrypt_batch != NULL) {
        const char *master = w[at[0]]->hdr.master.name;
        kms_rc rc = h->b->ops->decrypt_batch(h->b, master, bi, pending);
        for (size_t k = 0; k < pending; k++) {
            struct kms_unwrap_item *it = &items[at[k]];
            it->rc = rc == KMS_OK ? collapse(bi[k].rc) : rc;
            it->pt = it->rc == KMS_OK ? bi[k].pt : NULL;
            if (it->rc != KMS_OK)
                kms_secret_free(&bi[k].pt);
        }
    } else {
        for (size_t k = 0; k < pending; k++)
            items[at[k]].rc = master_open(h, w[at[k]], &items[at[k]].pt);
    }
    for (size_t i = 0; i < n; i++)
        kms_wrapped_free(&w[i]);
    free(w);
    free(bi);
    free(at);
    return KMS_OK;
}

kms_rc kms_hierarchy_rewrap(struct kms_hierarchy *h, const char *name, const char *site_id, const char *wrapped,
                            char **rewrapped)
{
    struct kms_wrapped *w = NULL;
    struct kms_secret *pt = NULL;
    *rewrapped = NULL;
    KMS_GUARD(generic_args(name, site_id));
    /* why: rewrap never reveals plaintext, so it also moves customer keys to
     * the current master key version; their key id, hence every user key's
     * parent reference, stays the same */
    /* why: rotation on a KMIP HSM is a new key under a new name, so rewrap
     * accepts a key made under any master key the backend still holds (the
     * blob names it) and seals it under name; it never returns plaintext. */
    KMS_GUARD(generic_open(h, NULL, site_id, wrapped, 1, &w, &pt));
    kms_rc rc = master_seal(h, name, w->hdr.level, w->hdr.key_id, site_id, pt, rewrapped);
    kms_secret_free(&pt);
    kms_wrapped_free(&w);
    return rc;
}

kms_rc kms_hierarchy_datakey(struct kms_hierarchy *h, const char *name, const char *site_id, size_t nbytes,
                             struct kms_secret **pt, char **wrapped)
{
    uint8_t key_id[KMS_KEY_ID_LEN];
    *pt = NULL;
    *wrapped = NULL;
    KMS_GUARD(generic_args(name, site_id));
    if (nbytes == 0 || nbytes > KMS_DATA_MAX)
        return kms_fail(KMS_ERR_INVALID_FIELD, "data key of %zu bytes (1..%d)", nbytes, KMS_DATA_MAX);
    KMS_GUARD(kms_random(key_id, sizeof(key_id)));
    KMS_GUARD(kms_secret_random(nbytes, pt));
    kms_rc rc = master_seal(h, name, KMS_LEVEL_DATA, key_id, site_id, *pt, wrapped);
    if (rc != KMS_OK)
        kms_secret_free(pt);
    return rc;
}

kms_rc kms_hierarchy_key_info(struct kms_hierarchy *h, const char *name, struct kms_key_info *out)
{
    memset(out, 0, sizeof(*out));
    if (!kms_master_name_valid(name))
        return kms_fail(KMS_ERR_INVALID_FIELD, "invalid master key name");
    return h->b->ops->describe(h->b, name, out);
}
