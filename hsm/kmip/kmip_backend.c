#include "hsm/kmip/kmip_backend.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "common/clock.h"
#include "common/secret.h"

#define NONCE_LEN KMS_KMIP_GCM_NONCE_LEN
#define TAG_LEN KMS_KMIP_GCM_TAG_LEN
#define CACHE_SLOTS 16
#define LOCATE_SHOWN 4

struct entry {
    char name[KMS_MASTER_NAME_MAX + 1];
    char uid[KMS_KMIP_UID_MAX + 1];
    struct kms_kmip_attributes attrs; /* State, algorithm, length at lookup time */
    uint64_t expires;                 /* monotonic ms; 0: free slot */
};

struct kmip_backend {
    struct kms_backend base;
    struct kms_kmip_client *client;
    unsigned cache_ms, probe_ms;
    pthread_mutex_t mu; /* cache */
    struct entry cache[CACHE_SLOTS];
};

static const struct kms_backend_ops kmip_ops;

/* What struct kms_master_ref and the wrapped-key format can hold: 1..255
 * printable ASCII bytes without space. */
static int ref_name_valid(const char *s)
{
    size_t n = strnlen(s, KMS_MASTER_NAME_MAX + 1);
    if (n == 0 || n > KMS_MASTER_NAME_MAX)
        return 0;
    for (size_t i = 0; i < n; i++)
        if (s[i] < 0x21 || s[i] > 0x7e)
            return 0;
    return 1;
}

static int cache_get(struct kmip_backend *k, const char *name, struct entry *out)
{
    uint64_t now = kms_now_ms();
    int hit = 0;
    pthread_mutex_lock(&k->mu);
    for (size_t i = 0; i < CACHE_SLOTS && !hit; i++) {
        if (k->cache[i].expires > now && strcmp(k->cache[i].name, name) == 0) {
            *out = k->cache[i];
            hit = 1;
        }
    }
    pthread_mutex_unlock(&k->mu);
    return hit;
}

static void cache_put(struct kmip_backend *k, const struct entry *e)
{
    size_t slot = 0;
    pthread_mutex_lock(&k->mu);
    /* the slot holding name, else the one expiring first (free slots: 0) */
    for (size_t i = 0; i < CACHE_SLOTS; i++) {
        if (strcmp(k->cache[i].name, e->name) == 0) {
            slot = i;
            break;
        }
        if (k->cache[i].expires < k->cache[slot].expires)
            slot = i;
    }
    k->cache[slot] = *e;
    pthread_mutex_unlock(&k->mu);
}

void kms_kmip_backend_flush(struct kms_backend *b)
{
    if (b == NULL || b->ops != &kmip_ops)
        return;
    struct kmip_backend *k = (struct kmip_backend *)b;
    pthread_mutex_lock(&k->mu);
    memset(k->cache, 0, sizeof(k->cache));
    pthread_mutex_unlock(&k->mu);
}

/* name -> UID (+ state): as a UID if one exists, else by Locate(Name). */
static kms_rc lookup(struct kmip_backend *k, const char *name, struct entry *out)
{
    memset(out, 0, sizeof(*out));
    if (name == NULL || !ref_name_valid(name))
        return kms_fail(KMS_ERR_KEY_NOT_FOUND, "kmip: invalid master key name");
    if (cache_get(k, name, out))
        return KMS_OK;
    memcpy(out->name, name, strlen(name) + 1);
    kms_rc rc = kms_kmip_get_key_state(k->client, name, &out->attrs);
    if (rc == KMS_OK) {
        memcpy(out->uid, name, strlen(name) + 1);
    } else if (rc == KMS_ERR_KEY_NOT_FOUND || rc == KMS_ERR_BACKEND) {
        /* why: not a UID; some servers answer a foreign UID with other
         * errors than Item Not Found, so Locate decides */
        char uids[LOCATE_SHOWN][KMS_KMIP_UID_MAX + 1];
        size_t found = 0;
        KMS_GUARD(kms_kmip_locate(k->client, name, uids, LOCATE_SHOWN, &found));
        if (found == 0)
            return kms_fail(KMS_ERR_KEY_NOT_FOUND,
                            "KMIP server %s: no key with unique identifier or Name \"%s\" (visible to this client)",
                            kms_kmip_client_endpoint(k->client), name);
        if (found > 1) {
            char list[LOCATE_SHOWN * 24 + 8] = "";
            size_t used = 0;
            for (size_t i = 0; i < found && i < LOCATE_SHOWN; i++) {
                int w = snprintf(list + used, sizeof(list) - used, "%s%.20s", i ? ", " : "", uids[i]);
                if (w > 0 && (size_t)w < sizeof(list) - used)
                    used += (size_t)w;
            }
            return kms_fail(KMS_ERR_BACKEND,
                            "KMIP server %s: Name \"%s\" matches %zu keys (%s%s); configure the master key by its "
                            "unique identifier",
                            kms_kmip_client_endpoint(k->client), name, found, list,
                            found > LOCATE_SHOWN ? ", ..." : "");
        }
        if (!ref_name_valid(uids[0]))
            return kms_fail(KMS_ERR_BACKEND, "KMIP server %s: unique identifier of \"%s\" is not printable ASCII "
                            "without spaces, which a wrapped key cannot record",
                            kms_kmip_client_endpoint(k->client), name);
        memcpy(out->uid, uids[0], sizeof(out->uid));
        KMS_GUARD(kms_kmip_get_key_state(k->client, out->uid, &out->attrs));
    } else {
        return rc;
    }
    out->expires = kms_now_ms() + k->cache_ms;
    cache_put(k, out);
    return KMS_OK;
}

static kms_rc kmip_resolve(struct kms_backend *b, const char *name, struct kms_master_ref *out)
{
    struct kmip_backend *k = (struct kmip_backend *)b;
    struct entry e;
    memset(out, 0, sizeof(*out));
    KMS_GUARD(lookup(k, name, &e));
    const struct kms_kmip_attributes *a = &e.attrs;
    const char *ep = kms_kmip_client_endpoint(k->client);
    if (a->state != 0 && a->state != KMS_KMIP_STATE_ACTIVE)
        return kms_fail(KMS_ERR_BACKEND, "KMIP server %s: master key %s (\"%s\") is %s, not Active%s", ep, e.uid, name,
                        kms_kmip_state_name(a->state),
                        a->state == KMS_KMIP_STATE_PRE_ACTIVE ? " (it was never activated: send it KMIP Activate)"
                                                               : "");
    if (a->algorithm != 0 && a->algorithm != KMS_KMIP_ALG_AES)
        return kms_fail(KMS_ERR_BACKEND, "KMIP server %s: master key %s is %s, not AES", ep, e.uid,
                        kms_kmip_algorithm_name(a->algorithm));
    if (a->length != 0 && a->length != 256)
        return kms_fail(KMS_ERR_BACKEND, "KMIP server %s: master key %s is %d bits, not 256", ep, e.uid,
                        (int)a->length);
    memcpy(out->name, e.uid, sizeof(out->name));
    out->version = 0;
    return KMS_OK;
}

static kms_rc kmip_encrypt(struct kms_backend *b, const struct kms_master_ref *ref, const uint8_t *aad,
                           size_t aad_len, const struct kms_secret *pt, uint8_t *ct, size_t ct_cap, size_t *ct_len)
{
    struct kmip_backend *k = (struct kmip_backend *)b;
    size_t len = kms_secret_len(pt);
    *ct_len = 0;
    if (len == 0 || len > KMS_BACKEND_CT_MAX - NONCE_LEN - TAG_LEN || ct_cap < NONCE_LEN + len + TAG_LEN)
        return kms_fail(KMS_ERR_INTERNAL, "kmip: ciphertext buffer of %zu bytes for %zu bytes", ct_cap, len);
    if (!ref_name_valid(ref->name) || ref->version != 0)
        return kms_fail(KMS_ERR_KEY_NOT_FOUND, "kmip: invalid master key reference");
    /* why: a fresh random nonce per encryption; GCM is broken by reuse */
    KMS_GUARD(kms_random(ct, NONCE_LEN));
    kms_rc rc = kms_kmip_encrypt_gcm(k->client, ref->name, ct, aad, aad_len, kms_secret_cdata(pt), len,
                                     ct + NONCE_LEN, ct + NONCE_LEN + len);
    if (rc != KMS_OK) {
        kms_wipe(ct, NONCE_LEN + len + TAG_LEN);
        return rc;
    }
    *ct_len = NONCE_LEN + len + TAG_LEN;
    return KMS_OK;
}

static kms_rc kmip_decrypt(struct kms_backend *b, const struct kms_master_ref *ref, const uint8_t *aad,
                           size_t aad_len, const uint8_t *ct, size_t ct_len, struct kms_secret **pt)
{
    struct kmip_backend *k = (struct kmip_backend *)b;
    *pt = NULL;
    if (ct_len <= NONCE_LEN + TAG_LEN || ct_len > KMS_BACKEND_CT_MAX)
        return kms_fail(KMS_ERR_UNWRAP, "kmip: ciphertext of %zu bytes", ct_len);
    if (!ref_name_valid(ref->name) || ref->version != 0)
        return kms_fail(KMS_ERR_KEY_NOT_FOUND, "kmip: invalid master key reference");
    size_t len = ct_len - NONCE_LEN - TAG_LEN;
    return kms_kmip_decrypt_gcm(k->client, ref->name, ct, aad, aad_len, ct + NONCE_LEN, len, ct + NONCE_LEN + len, pt);
}

static void lower_dashed(const char *in, char *out, size_t cap)
{
    size_t i = 0;
    for (; in[i] != '\0' && i + 1 < cap; i++)
        out[i] = in[i] == ' ' ? '-' : (in[i] >= 'A' && in[i] <= 'Z') ? (char)(in[i] - 'A' + 'a') : in[i];
    out[i] = '\0';
}

static kms_rc kmip_describe(struct kms_backend *b, const char *name, struct kms_key_info *out)
{
    struct kmip_backend *k = (struct kmip_backend *)b;
    struct entry e;
    struct kms_kmip_attributes a;
    memset(out, 0, sizeof(*out));
    KMS_GUARD(lookup(k, name, &e));
    KMS_GUARD(kms_kmip_get_attributes(k->client, e.uid, &a));
    memcpy(out->name, name, strlen(name) + 1);
    out->backend = "kmip";
    out->current_version = 0;
    out->min_version = 0;
    lower_dashed(a.state ? kms_kmip_state_name(a.state) : "unknown", out->state, sizeof(out->state));
    if (a.algorithm == KMS_KMIP_ALG_AES && a.length > 0)
        snprintf(out->algorithm, sizeof(out->algorithm), "AES-%d-GCM", (int)a.length);
    else
        snprintf(out->algorithm, sizeof(out->algorithm), "%s", a.algorithm ? kms_kmip_algorithm_name(a.algorithm)
                                                                           : "unknown");
    out->created = (long long)a.initial_date;
    return KMS_OK;
}

static kms_rc kmip_probe(struct kms_backend *b)
{
    struct kmip_backend *k = (struct kmip_backend *)b;
    return kms_kmip_client_probe(k->client, k->probe_ms);
}

static void kmip_destroy(struct kms_backend *b)
{
    struct kmip_backend *k = (struct kmip_backend *)b;
    kms_kmip_client_free(&k->client);
    pthread_mutex_destroy(&k->mu);
    free(k);
}

static const struct kms_backend_ops kmip_ops = {
    .name = "kmip",
    .kind = KMS_BACKEND_KMIP,
    .resolve = kmip_resolve,
    .encrypt = kmip_encrypt,
    .decrypt = kmip_decrypt,
    .describe = kmip_describe,
    .probe = kmip_probe,
    .destroy = kmip_destroy,
};

kms_rc kms_kmip_backend_open(const struct kms_kmip_options *opts, struct kms_backend **out)
{
    *out = NULL;
    if (opts == NULL)
        return kms_fail(KMS_ERR_CONFIG, "kmip: no options");
    struct kmip_backend *k = calloc(1, sizeof(*k));
    if (k == NULL)
        return kms_fail(KMS_ERR_NO_MEMORY, "kmip backend");
    if (pthread_mutex_init(&k->mu, NULL) != 0) {
        free(k);
        return kms_fail(KMS_ERR_NO_MEMORY, "kmip backend");
    }
    k->base.ops = &kmip_ops;
    k->cache_ms = opts->name_cache_ms ? opts->name_cache_ms : KMS_KMIP_DEFAULT_NAME_CACHE_MS;
    k->probe_ms = opts->probe_timeout_ms ? opts->probe_timeout_ms : KMS_KMIP_DEFAULT_PROBE_MS;
    kms_rc rc = kms_kmip_client_open(&opts->client, &k->client);
    if (rc != KMS_OK) {
        kmip_destroy(&k->base);
        return rc;
    }
    *out = &k->base;
    return KMS_OK;
}

struct kms_kmip_client *kms_kmip_backend_client(struct kms_backend *b)
{
    if (b == NULL || b->ops != &kmip_ops)
        return NULL;
    return ((struct kmip_backend *)b)->client;
}

kms_rc kms_kmip_backend_set_identity(struct kms_backend *b, X509 *cert, EVP_PKEY *key, STACK_OF(X509) *chain,
                                     X509_STORE *trust)
{
    struct kms_kmip_client *c = kms_kmip_backend_client(b);
    if (c == NULL)
        return kms_fail(KMS_ERR_CONFIG, "KMIP identity: not a KMIP backend");
    return kms_kmip_client_set_identity(c, cert, key, chain, trust);
}
