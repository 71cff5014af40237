/* The PKCS#11 backend (pkcs11_backend.h). Every token call runs on one of
 * p11.c's lanes, with its argument copied there: the structs below carry
 * everything a call needs inline, and nothing of the caller's. */
#include "hsm/pkcs11/pkcs11_backend.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/clock.h"
#include "common/hex.h"
#include "common/secret.h"
#include "hsm/pkcs11/p11.h"

#define IV_LEN 12
#define TAG_LEN 16
#define AAD_MAX 1024
#define DATA_MAX 2048 /* bytes in or out of one call: the API wraps at most 1024 */
#define VERSIONS_MAX 64
#define CACHE_SLOTS 8
#define CACHE_MS 5000 /* a version made by another process (kmsctl hsm rotate) is used for new keys within this */

struct version {
    uint32_t version;
    CK_OBJECT_HANDLE h;
    int usable; /* AES-256, sensitive, not extractable, may encrypt and decrypt */
    char problem[160];
};

struct keyset {
    char name[KMS_MASTER_NAME_MAX + 1];
    unsigned n;
    struct version v[VERSIONS_MAX];
    uint64_t expires; /* monotonic ms; 0: free */
};

struct p11_backend {
    struct kms_backend base;
    struct kms_p11 *p;
    pthread_mutex_t mu; /* cache */
    struct keyset cache[CACHE_SLOTS];
};

static const struct kms_backend_ops p11_ops;

/* ---- the calls, as lane jobs ---------------------------------------------------- */

struct find_job {
    char label[KMS_MASTER_NAME_MAX + 1];
    CK_ULONG n;
    CK_OBJECT_HANDLE h[VERSIONS_MAX + 1];
};

static CK_RV find_fn(CK_FUNCTION_LIST *f, CK_SESSION_HANDLE s, void *arg)
{
    struct find_job *j = arg;
    CK_OBJECT_CLASS cls = CKO_SECRET_KEY;
    CK_ATTRIBUTE t[] = {{CKA_CLASS, &cls, sizeof(cls)}, {CKA_LABEL, j->label, strlen(j->label)}};
    CK_RV rv = f->C_FindObjectsInit(s, t, 2);
    if (rv != CKR_OK)
        return rv;
    rv = f->C_FindObjects(s, j->h, VERSIONS_MAX + 1, &j->n);
    CK_RV fin = f->C_FindObjectsFinal(s);
    return rv != CKR_OK ? rv : fin;
}

struct attr_job {
    CK_OBJECT_HANDLE h;
    CK_KEY_TYPE type;
    CK_ULONG value_len;
    CK_BBOOL b[10]; /* TOKEN PRIVATE SENSITIVE EXTRACTABLE NEVER_EXTRACTABLE ALWAYS_SENSITIVE ENCRYPT DECRYPT WRAP UNWRAP */
    CK_ULONG b_len[10];
    CK_ULONG type_len, value_len_len, id_len;
    uint8_t id[32];
};

static const CK_ATTRIBUTE_TYPE bool_attrs[10] = {
    CKA_TOKEN,          CKA_PRIVATE, CKA_SENSITIVE, CKA_EXTRACTABLE, CKA_NEVER_EXTRACTABLE,
    CKA_ALWAYS_SENSITIVE, CKA_ENCRYPT, CKA_DECRYPT,   CKA_WRAP,        CKA_UNWRAP,
};

static CK_RV attr_fn(CK_FUNCTION_LIST *f, CK_SESSION_HANDLE s, void *arg)
{
    struct attr_job *j = arg;
    CK_ATTRIBUTE t[13];
    t[0] = (CK_ATTRIBUTE){CKA_KEY_TYPE, &j->type, sizeof(j->type)};
    t[1] = (CK_ATTRIBUTE){CKA_VALUE_LEN, &j->value_len, sizeof(j->value_len)};
    t[2] = (CK_ATTRIBUTE){CKA_ID, j->id, sizeof(j->id)};
    for (int i = 0; i < 10; i++)
        t[3 + i] = (CK_ATTRIBUTE){bool_attrs[i], &j->b[i], sizeof(CK_BBOOL)};
    CK_RV rv = f->C_GetAttributeValue(s, j->h, t, 13);
    j->type_len = t[0].ulValueLen;
    j->value_len_len = t[1].ulValueLen;
    j->id_len = t[2].ulValueLen;
    for (int i = 0; i < 10; i++)
        j->b_len[i] = t[3 + i].ulValueLen;
    /* why: a token that will not say one attribute still fills the others */
    return rv == CKR_ATTRIBUTE_TYPE_INVALID || rv == CKR_ATTRIBUTE_SENSITIVE || rv == CKR_BUFFER_TOO_SMALL ? CKR_OK
                                                                                                             : rv;
}

struct gcm_job {
    CK_OBJECT_HANDLE h;
    int decrypt;
    uint8_t iv[IV_LEN];
    uint8_t aad[AAD_MAX];
    CK_ULONG aad_len;
    uint8_t in[DATA_MAX];
    CK_ULONG in_len;
    uint8_t out[DATA_MAX];
    CK_ULONG out_len;
};

static CK_RV gcm_fn(CK_FUNCTION_LIST *f, CK_SESSION_HANDLE s, void *arg)
{
    struct gcm_job *j = arg;
    CK_GCM_PARAMS gp = {j->iv, IV_LEN, IV_LEN * 8, j->aad_len > 0 ? j->aad : NULL, j->aad_len, TAG_LEN * 8};
    CK_MECHANISM m = {CKM_AES_GCM, &gp, sizeof(gp)};
    j->out_len = sizeof(j->out);
    CK_RV rv = j->decrypt ? f->C_DecryptInit(s, &m, j->h) : f->C_EncryptInit(s, &m, j->h);
    if (rv != CKR_OK)
        return rv;
    return j->decrypt ? f->C_Decrypt(s, j->in, j->in_len, j->out, &j->out_len)
                      : f->C_Encrypt(s, j->in, j->in_len, j->out, &j->out_len);
}

struct gen_job {
    char label[KMS_MASTER_NAME_MAX + 1];
    uint8_t id[4];
    CK_OBJECT_HANDLE h;
};

static CK_RV gen_fn(CK_FUNCTION_LIST *f, CK_SESSION_HANDLE s, void *arg)
{
    struct gen_job *j = arg;
    CK_OBJECT_CLASS cls = CKO_SECRET_KEY;
    CK_KEY_TYPE kt = CKK_AES;
    CK_ULONG len = 32;
    CK_BBOOL yes = CK_TRUE, no = CK_FALSE;
    CK_ATTRIBUTE t[] = {
        {CKA_CLASS, &cls, sizeof(cls)},       {CKA_KEY_TYPE, &kt, sizeof(kt)},
        {CKA_VALUE_LEN, &len, sizeof(len)},   {CKA_LABEL, j->label, strlen(j->label)},
        {CKA_ID, j->id, sizeof(j->id)},       {CKA_TOKEN, &yes, sizeof(yes)},
        {CKA_PRIVATE, &yes, sizeof(yes)},     {CKA_SENSITIVE, &yes, sizeof(yes)},
        {CKA_EXTRACTABLE, &no, sizeof(no)},   {CKA_ENCRYPT, &yes, sizeof(yes)},
        {CKA_DECRYPT, &yes, sizeof(yes)},     {CKA_WRAP, &no, sizeof(no)},
        {CKA_UNWRAP, &no, sizeof(no)},        {CKA_SIGN, &no, sizeof(no)},
        {CKA_VERIFY, &no, sizeof(no)},        {CKA_DERIVE, &no, sizeof(no)},
    };
    CK_MECHANISM m = {CKM_AES_KEY_GEN, NULL, 0};
    return f->C_GenerateKey(s, &m, t, sizeof(t) / sizeof(t[0]), &j->h);
}

static CK_RV info_fn(CK_FUNCTION_LIST *f, CK_SESSION_HANDLE s, void *arg)
{
    CK_SESSION_INFO *si = arg;
    return f->C_GetSessionInfo(s, si);
}

/* ---- the master keys on the token ----------------------------------------------- */

/* Runs fn with *job (kms_p11_job_new); a call abandoned at the timeout
 * takes the job with it (*job becomes NULL: kms_p11_job_free takes that). */
static kms_rc call(struct p11_backend *k, const char *what, kms_p11_fn fn, void **job, size_t len, CK_RV *rv)
{
    return kms_p11_call(k->p, what, fn, job, len, rv);
}

static kms_rc token_error(const char *what, CK_RV rv, const char *name)
{
    char nb[32];
    return kms_fail(KMS_ERR_BACKEND, "PKCS#11: %s for master key '%s': %s", what, name,
                    kms_p11_rv_name(rv, nb, sizeof(nb)));
}

static int flag(const struct attr_job *a, int i) { return a->b_len[i] == sizeof(CK_BBOOL) ? a->b[i] != 0 : -1; }

static void to_key(const struct attr_job *a, uint32_t version, struct kms_pkcs11_key *out)
{
    memset(out, 0, sizeof(*out));
    out->version = version;
    out->handle = (unsigned long)a->h;
    if (a->id_len != CK_UNAVAILABLE_INFORMATION && a->id_len <= sizeof(a->id))
        kms_hex_encode(a->id, a->id_len, out->id_hex, sizeof(out->id_hex));
    out->aes = a->type_len == sizeof(CK_KEY_TYPE) ? a->type == CKK_AES : -1;
    out->value_len = a->value_len_len == sizeof(CK_ULONG) ? (long)a->value_len : -1;
    int *flags[10] = {&out->token,   &out->private_, &out->sensitive, &out->extractable, &out->never_extractable,
                      &out->always_sensitive, &out->encrypt, &out->decrypt, &out->wrap, &out->unwrap};
    for (int i = 0; i < 10; i++)
        *flags[i] = flag(a, i);
}

/* Why a key may not be a master key ("" when it may). */
static void judge(const struct kms_pkcs11_key *key, char *problem, size_t cap)
{
    problem[0] = '\0';
    if (key->aes != 1 || key->value_len != 32)
        (void)snprintf(problem, cap, "is not an AES-256 key (CKA_KEY_TYPE %s, CKA_VALUE_LEN %ld)",
                       key->aes == 1 ? "AES" : "not AES", key->value_len);
    else if (key->extractable != 0)
        (void)snprintf(problem, cap, "is extractable (CKA_EXTRACTABLE %s): a master key must never leave the token",
                       key->extractable == 1 ? "true" : "unknown");
    else if (key->sensitive != 1)
        (void)snprintf(problem, cap, "is not sensitive (CKA_SENSITIVE false)");
    else if (key->token != 1)
        (void)snprintf(problem, cap, "is a session object (CKA_TOKEN false), gone when the session closes");
    else if (key->encrypt != 1 || key->decrypt != 1)
        (void)snprintf(problem, cap, "may not encrypt and decrypt (CKA_ENCRYPT, CKA_DECRYPT)");
}

/* All versions of name, read from the token. */
static kms_rc read_versions(struct p11_backend *k, const char *name, struct kms_pkcs11_key *keys, size_t *n)
{
    *n = 0;
    struct find_job *fj = kms_p11_job_new(sizeof(*fj));
    struct attr_job *aj = kms_p11_job_new(sizeof(*aj));
    if (fj == NULL || aj == NULL) {
        kms_p11_job_free(fj, sizeof(*fj));
        kms_p11_job_free(aj, sizeof(*aj));
        return KMS_ERR_NO_MEMORY;
    }
    (void)snprintf(fj->label, sizeof(fj->label), "%s", name);
    CK_RV rv;
    kms_rc rc = call(k, "C_FindObjects", find_fn, (void **)&fj, sizeof(*fj), &rv);
    if (rc == KMS_OK && rv != CKR_OK)
        rc = token_error("C_FindObjects", rv, name);
    if (rc == KMS_OK && fj->n > VERSIONS_MAX)
        rc = kms_fail(KMS_ERR_BACKEND, "PKCS#11: more than %d keys are labelled '%s'", VERSIONS_MAX, name);
    int unversioned = 0;
    for (CK_ULONG i = 0; rc == KMS_OK && i < fj->n; i++) {
        memset(aj, 0, sizeof(*aj));
        aj->h = fj->h[i];
        rc = call(k, "C_GetAttributeValue", attr_fn, (void **)&aj, sizeof(*aj), &rv);
        if (rc == KMS_OK && rv != CKR_OK)
            rc = token_error("C_GetAttributeValue", rv, name);
        if (rc != KMS_OK)
            break;
        uint32_t version = 1;
        if (aj->id_len == 4)
            version = (uint32_t)aj->id[0] << 24 | (uint32_t)aj->id[1] << 16 | (uint32_t)aj->id[2] << 8 | aj->id[3];
        else
            unversioned++;
        if (version == 0 || unversioned > 1) {
            rc = kms_fail(KMS_ERR_BACKEND, "PKCS#11: keys labelled '%s' do not tell their versions apart (CKA_ID "
                                           "must be 4 bytes, 00000001 and up; at most one key without)",
                          name);
            break;
        }
        for (size_t j = 0; j < *n; j++)
            if (keys[j].version == version)
                rc = kms_fail(KMS_ERR_BACKEND, "PKCS#11: two keys labelled '%s' are version %u (CKA_ID)", name,
                              version);
        to_key(aj, version, &keys[(*n)++]);
    }
    kms_p11_job_free(fj, sizeof(*fj));
    kms_p11_job_free(aj, sizeof(*aj));
    if (rc != KMS_OK)
        return rc;
    /* oldest first */
    for (size_t i = 1; i < *n; i++)
        for (size_t j = i; j > 0 && keys[j - 1].version > keys[j].version; j--) {
            struct kms_pkcs11_key t = keys[j];
            keys[j] = keys[j - 1];
            keys[j - 1] = t;
        }
    return KMS_OK;
}

static kms_rc load_keyset(struct p11_backend *k, const char *name, struct keyset *out)
{
    struct kms_pkcs11_key *keys = calloc(VERSIONS_MAX, sizeof(*keys));
    if (keys == NULL)
        return KMS_ERR_NO_MEMORY;
    size_t n = 0;
    kms_rc rc = read_versions(k, name, keys, &n);
    if (rc == KMS_OK) {
        memset(out, 0, sizeof(*out));
        (void)snprintf(out->name, sizeof(out->name), "%s", name);
        out->n = (unsigned)n;
        for (size_t i = 0; i < n; i++) {
            out->v[i].version = keys[i].version;
            out->v[i].h = (CK_OBJECT_HANDLE)keys[i].handle;
            judge(&keys[i], out->v[i].problem, sizeof(out->v[i].problem));
            out->v[i].usable = out->v[i].problem[0] == '\0';
        }
        out->expires = kms_now_ms() + CACHE_MS;
    }
    free(keys);
    return rc;
}

/* Under mu: the cached keyset of name, or NULL. */
static struct keyset *cached(struct p11_backend *k, const char *name, uint64_t now)
{
    for (size_t i = 0; i < CACHE_SLOTS; i++)
        if (k->cache[i].expires > now && strcmp(k->cache[i].name, name) == 0)
            return &k->cache[i];
    return NULL;
}

/* Reads the versions of name from the token into the cache (the slot
 * holding name, else the one expiring first). */
static kms_rc refresh(struct p11_backend *k, const char *name)
{
    struct keyset *ks = malloc(sizeof(*ks));
    if (ks == NULL)
        return KMS_ERR_NO_MEMORY;
    kms_rc rc = load_keyset(k, name, ks);
    if (rc == KMS_OK) {
        pthread_mutex_lock(&k->mu);
        size_t slot = 0;
        for (size_t i = 0; i < CACHE_SLOTS; i++) {
            if (strcmp(k->cache[i].name, name) == 0) {
                slot = i;
                break;
            }
            if (k->cache[i].expires < k->cache[slot].expires)
                slot = i;
        }
        k->cache[slot] = *ks;
        pthread_mutex_unlock(&k->mu);
    }
    free(ks);
    return rc;
}

/* One version of name (version 0: the newest) as the cache has it, read
 * from the token on a miss (or first, when fresh): *out (its version 0 when
 * name has no such version) and *n, how many versions name has (0: none).
 * why not a copy of the whole keyset: this runs for every wrap and unwrap. */
static kms_rc find_version(struct p11_backend *k, const char *name, uint32_t version, int fresh, struct version *out,
                           unsigned *n)
{
    if (!kms_master_name_valid(name))
        return kms_fail(KMS_ERR_KEY_NOT_FOUND, "PKCS#11: invalid master key name");
    memset(out, 0, sizeof(*out));
    for (int attempt = fresh ? 1 : 0; attempt < 2; attempt++) {
        if (attempt == 1)
            KMS_GUARD(refresh(k, name));
        pthread_mutex_lock(&k->mu);
        const struct keyset *ks = cached(k, name, kms_now_ms());
        int hit = 0;
        if (ks != NULL) {
            *n = ks->n;
            for (unsigned i = 0; i < ks->n && !hit; i++)
                if (version == 0 ? i == ks->n - 1 : ks->v[i].version == version) {
                    *out = ks->v[i];
                    hit = 1;
                }
        }
        pthread_mutex_unlock(&k->mu);
        /* why read again on a miss: a version made since (kmsctl hsm rotate on another host) */
        if (hit || (ks != NULL && attempt == 1))
            return KMS_OK;
    }
    return KMS_OK;
}

/* The whole keyset of name, read from the token now (the admin paths). */
static kms_rc keyset(struct p11_backend *k, const char *name, struct keyset *out)
{
    if (!kms_master_name_valid(name))
        return kms_fail(KMS_ERR_KEY_NOT_FOUND, "PKCS#11: invalid master key name");
    KMS_GUARD(refresh(k, name));
    pthread_mutex_lock(&k->mu);
    const struct keyset *ks = cached(k, name, kms_now_ms());
    if (ks != NULL)
        *out = *ks;
    else
        memset(out, 0, sizeof(*out));
    pthread_mutex_unlock(&k->mu);
    return KMS_OK;
}

static void forget(struct p11_backend *k, const char *name)
{
    pthread_mutex_lock(&k->mu);
    for (size_t i = 0; i < CACHE_SLOTS; i++)
        if (strcmp(k->cache[i].name, name) == 0)
            memset(&k->cache[i], 0, sizeof(k->cache[i]));
    pthread_mutex_unlock(&k->mu);
}

static kms_rc no_key(struct p11_backend *k, const char *name)
{
    struct kms_pkcs11_info info;
    kms_p11_get_info(k->p, &info);
    return kms_fail(KMS_ERR_KEY_NOT_FOUND,
                    "PKCS#11 token '%s' has no secret key labelled '%s' (kms.hsm.master.key; make one with kmsctl "
                    "hsm create-key %s)",
                    info.label, name, name);
}

/* The usable object of (name, version; 0: the newest), or why not. */
static kms_rc object_of(struct p11_backend *k, const char *name, uint32_t version, int fresh, struct version *v)
{
    unsigned n = 0;
    KMS_GUARD(find_version(k, name, version, fresh, v, &n));
    if (n == 0)
        return no_key(k, name);
    if (v->version == 0)
        return kms_fail(KMS_ERR_KEY_NOT_FOUND, "PKCS#11: master key '%s' has no version %u", name, version);
    if (!v->usable)
        return kms_fail(KMS_ERR_BACKEND, "PKCS#11: master key '%s' version %u %s", name, v->version, v->problem);
    return KMS_OK;
}

static kms_rc p11_resolve(struct kms_backend *b, const char *name, struct kms_master_ref *out)
{
    struct p11_backend *k = (struct p11_backend *)b;
    memset(out, 0, sizeof(*out));
    struct version v;
    KMS_GUARD(object_of(k, name, 0, 0, &v));
    (void)snprintf(out->name, sizeof(out->name), "%s", name);
    out->version = v.version;
    return KMS_OK;
}

/* One GCM call on *jp; a key handle the token no longer knows is looked up
 * again once. A call abandoned at the timeout takes the job (*jp NULL). */
static kms_rc gcm(struct p11_backend *k, const struct kms_master_ref *ref, struct gcm_job **jp)
{
    for (int attempt = 0; attempt < 2; attempt++) {
        struct version v;
        KMS_GUARD(object_of(k, ref->name, ref->version, attempt, &v));
        struct gcm_job *j = *jp;
        j->h = v.h;
        int decrypt = j->decrypt;
        CK_RV rv;
        KMS_GUARD(call(k, decrypt ? "C_Decrypt" : "C_Encrypt", gcm_fn, (void **)jp, sizeof(*j), &rv));
        if (rv == CKR_OK)
            return KMS_OK;
        if ((rv == CKR_KEY_HANDLE_INVALID || rv == CKR_OBJECT_HANDLE_INVALID) && attempt == 0)
            continue;
        if (decrypt && (rv == CKR_ENCRYPTED_DATA_INVALID || rv == CKR_ENCRYPTED_DATA_LEN_RANGE ||
                        rv == CKR_GENERAL_ERROR || rv == CKR_FUNCTION_FAILED))
            /* why GENERAL_ERROR too: SoftHSM 2.6 answers a failed tag check with it */
            return kms_fail(KMS_ERR_UNWRAP, "PKCS#11: the ciphertext did not authenticate under '%s' version %u",
                            ref->name, ref->version);
        return token_error(decrypt ? "C_Decrypt" : "C_Encrypt", rv, ref->name);
    }
    return kms_fail(KMS_ERR_BACKEND, "PKCS#11: master key '%s' keeps changing its handle", ref->name);
}

static kms_rc p11_encrypt(struct kms_backend *b, const struct kms_master_ref *ref, const uint8_t *aad, size_t aad_len,
                          const struct kms_secret *pt, uint8_t *ct, size_t ct_cap, size_t *ct_len)
{
    struct p11_backend *k = (struct p11_backend *)b;
    size_t len = kms_secret_len(pt);
    *ct_len = 0;
    if (len == 0 || len + TAG_LEN > DATA_MAX || ct_cap < IV_LEN + len + TAG_LEN)
        return kms_fail(KMS_ERR_INTERNAL, "pkcs11: ciphertext buffer of %zu bytes for %zu bytes", ct_cap, len);
    if (aad_len > AAD_MAX)
        return kms_fail(KMS_ERR_INTERNAL, "pkcs11: %zu bytes of associated data (at most %d)", aad_len, AAD_MAX);
    struct gcm_job *j = kms_p11_job_new(sizeof(*j));
    if (j == NULL)
        return KMS_ERR_NO_MEMORY;
    kms_rc rc = kms_random(j->iv, IV_LEN);
    memcpy(j->aad, aad, aad_len);
    j->aad_len = aad_len;
    memcpy(j->in, kms_secret_cdata(pt), len);
    j->in_len = len;
    if (rc == KMS_OK)
        rc = gcm(k, ref, &j);
    if (rc == KMS_OK && j->out_len != len + TAG_LEN)
        rc = kms_fail(KMS_ERR_BACKEND, "PKCS#11: C_Encrypt gave %lu bytes for %zu (expected the data and a 16-byte "
                                       "tag)",
                      (unsigned long)j->out_len, len);
    if (rc == KMS_OK) {
        memcpy(ct, j->iv, IV_LEN);
        memcpy(ct + IV_LEN, j->out, j->out_len);
        *ct_len = IV_LEN + j->out_len;
    }
    kms_p11_job_free(j, sizeof(*j));
    return rc;
}

static kms_rc p11_decrypt(struct kms_backend *b, const struct kms_master_ref *ref, const uint8_t *aad, size_t aad_len,
                          const uint8_t *ct, size_t ct_len, struct kms_secret **pt)
{
    struct p11_backend *k = (struct p11_backend *)b;
    *pt = NULL;
    if (ct_len <= IV_LEN + TAG_LEN || ct_len - IV_LEN > DATA_MAX)
        return kms_fail(KMS_ERR_UNWRAP, "pkcs11: ciphertext of %zu bytes", ct_len);
    if (aad_len > AAD_MAX)
        return kms_fail(KMS_ERR_UNWRAP, "pkcs11: %zu bytes of associated data (at most %d)", aad_len, AAD_MAX);
    struct gcm_job *j = kms_p11_job_new(sizeof(*j));
    if (j == NULL)
        return KMS_ERR_NO_MEMORY;
    j->decrypt = 1;
    memcpy(j->iv, ct, IV_LEN);
    memcpy(j->aad, aad, aad_len);
    j->aad_len = aad_len;
    memcpy(j->in, ct + IV_LEN, ct_len - IV_LEN);
    j->in_len = ct_len - IV_LEN;
    kms_rc rc = gcm(k, ref, &j);
    if (rc == KMS_OK && j->out_len != ct_len - IV_LEN - TAG_LEN)
        rc = kms_fail(KMS_ERR_UNWRAP, "PKCS#11: C_Decrypt gave %lu bytes", (unsigned long)j->out_len);
    if (rc == KMS_OK)
        rc = kms_secret_from(j->out, j->out_len, pt);
    kms_p11_job_free(j, sizeof(*j));
    return rc;
}

static kms_rc p11_describe(struct kms_backend *b, const char *name, struct kms_key_info *out)
{
    struct p11_backend *k = (struct p11_backend *)b;
    memset(out, 0, sizeof(*out));
    struct keyset ks;
    KMS_GUARD(keyset(k, name, &ks));
    if (ks.n == 0)
        return no_key(k, name);
    (void)snprintf(out->name, sizeof(out->name), "%s", name);
    out->backend = "pkcs11";
    out->current_version = ks.v[ks.n - 1].version;
    for (unsigned i = ks.n; i-- > 0 && ks.v[i].usable;)
        out->min_version = ks.v[i].version;
    (void)snprintf(out->state, sizeof(out->state), "%s", ks.v[ks.n - 1].usable ? "active" : "unusable");
    (void)snprintf(out->algorithm, sizeof(out->algorithm), "AES-256-GCM");
    return KMS_OK;
}

static kms_rc p11_probe(struct kms_backend *b)
{
    struct p11_backend *k = (struct p11_backend *)b;
    CK_SESSION_INFO *si = kms_p11_job_new(sizeof(*si));
    if (si == NULL)
        return KMS_ERR_NO_MEMORY;
    CK_RV rv;
    kms_rc rc = call(k, "C_GetSessionInfo", info_fn, (void **)&si, sizeof(*si), &rv);
    char nb[32];
    if (rc == KMS_OK && rv != CKR_OK)
        rc = kms_fail(KMS_ERR_BACKEND_UNAVAILABLE, "PKCS#11: C_GetSessionInfo: %s", kms_p11_rv_name(rv, nb, sizeof(nb)));
    if (rc == KMS_OK && (si->state == CKS_RO_PUBLIC_SESSION || si->state == CKS_RW_PUBLIC_SESSION))
        rc = kms_fail(KMS_ERR_BACKEND_UNAVAILABLE, "PKCS#11: the session is not logged in");
    kms_p11_job_free(si, sizeof(*si));
    KMS_GUARD(rc);
    if (kms_p11_degraded(k->p))
        return kms_fail(KMS_ERR_BACKEND_UNAVAILABLE, "PKCS#11: sessions are being opened again after an error");
    return KMS_OK;
}

static void p11_destroy(struct kms_backend *b)
{
    struct p11_backend *k = (struct p11_backend *)b;
    kms_p11_free(&k->p);
    pthread_mutex_destroy(&k->mu);
    free(k);
}

static const struct kms_backend_ops p11_ops = {
    .name = "pkcs11",
    .kind = KMS_BACKEND_PKCS11,
    .resolve = p11_resolve,
    .encrypt = p11_encrypt,
    .decrypt = p11_decrypt,
    .describe = p11_describe,
    .probe = p11_probe,
    .destroy = p11_destroy,
};

kms_rc kms_pkcs11_backend_open(const struct kms_pkcs11_options *o, struct kms_backend **out)
{
    *out = NULL;
    struct p11_backend *k = calloc(1, sizeof(*k));
    if (k == NULL)
        return KMS_ERR_NO_MEMORY;
    pthread_mutex_init(&k->mu, NULL);
    k->base.ops = &p11_ops;
    struct kms_p11_options po = {o->library, o->token_label, o->slot, o->pin, o->sessions, o->timeout_ms};
    kms_rc rc = kms_p11_open(&po, &k->p);
    if (rc != KMS_OK) {
        p11_destroy(&k->base);
        return rc;
    }
    *out = &k->base;
    return KMS_OK;
}

static struct p11_backend *as_p11(struct kms_backend *b)
{
    return b != NULL && b->ops == &p11_ops ? (struct p11_backend *)b : NULL;
}

kms_rc kms_pkcs11_info(struct kms_backend *b, struct kms_pkcs11_info *out)
{
    struct p11_backend *k = as_p11(b);
    if (k == NULL)
        return kms_fail(KMS_ERR_CONFIG, "not a PKCS#11 backend");
    kms_p11_get_info(k->p, out);
    out->degraded = kms_p11_degraded(k->p);
    return KMS_OK;
}

kms_rc kms_pkcs11_key_versions(struct kms_backend *b, const char *name, struct kms_pkcs11_key *out, size_t cap,
                               size_t *n)
{
    struct p11_backend *k = as_p11(b);
    *n = 0;
    if (k == NULL)
        return kms_fail(KMS_ERR_CONFIG, "not a PKCS#11 backend");
    if (!kms_master_name_valid(name))
        return kms_fail(KMS_ERR_KEY_NOT_FOUND, "PKCS#11: invalid master key name");
    struct kms_pkcs11_key *keys = calloc(VERSIONS_MAX, sizeof(*keys));
    if (keys == NULL)
        return KMS_ERR_NO_MEMORY;
    kms_rc rc = read_versions(k, name, keys, n);
    if (rc == KMS_OK)
        memcpy(out, keys, (*n < cap ? *n : cap) * sizeof(*out));
    free(keys);
    return rc;
}

static kms_rc generate(struct p11_backend *k, const char *name, uint32_t version)
{
    struct gen_job *j = kms_p11_job_new(sizeof(*j));
    if (j == NULL)
        return KMS_ERR_NO_MEMORY;
    (void)snprintf(j->label, sizeof(j->label), "%s", name);
    for (int i = 0; i < 4; i++)
        j->id[i] = (uint8_t)(version >> (24 - 8 * i));
    CK_RV rv;
    kms_rc rc = call(k, "C_GenerateKey", gen_fn, (void **)&j, sizeof(*j), &rv);
    kms_p11_job_free(j, sizeof(*j));
    forget(k, name);
    KMS_GUARD(rc);
    return rv == CKR_OK ? KMS_OK : token_error("C_GenerateKey (CKM_AES_KEY_GEN)", rv, name);
}

kms_rc kms_pkcs11_create_key(struct kms_backend *b, const char *name)
{
    struct p11_backend *k = as_p11(b);
    if (k == NULL)
        return kms_fail(KMS_ERR_CONFIG, "not a PKCS#11 backend");
    struct keyset ks;
    KMS_GUARD(keyset(k, name, &ks));
    if (ks.n > 0)
        return kms_fail(KMS_ERR_CONFLICT, "PKCS#11: a key labelled '%s' exists already (version %u); kmsctl hsm "
                                          "rotate %s adds a version",
                        name, ks.v[ks.n - 1].version, name);
    return generate(k, name, 1);
}

kms_rc kms_pkcs11_rotate(struct kms_backend *b, const char *name, uint32_t *version)
{
    struct p11_backend *k = as_p11(b);
    *version = 0;
    if (k == NULL)
        return kms_fail(KMS_ERR_CONFIG, "not a PKCS#11 backend");
    struct keyset ks;
    KMS_GUARD(keyset(k, name, &ks));
    if (ks.n == 0)
        return no_key(k, name);
    if (ks.n >= VERSIONS_MAX)
        return kms_fail(KMS_ERR_BACKEND, "PKCS#11: '%s' has %d versions, the most kmsd reads", name, VERSIONS_MAX);
    uint32_t next = ks.v[ks.n - 1].version + 1;
    KMS_GUARD(generate(k, name, next));
    *version = next;
    return KMS_OK;
}
