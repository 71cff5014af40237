#include "hsm/soft/soft.h"

#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "common/aead.h"

#include "common/buf.h"
#include "common/cursor.h"
#include "common/file.h"
#include "common/secret.h"

#define MAGIC "KMSSOFT1"
#define MAGIC_LEN 8
#define KDF_PBKDF2_SHA256 1
#define MAX_ITERATIONS 100000000u
#define SALT_LEN 16
#define CHECK_LEN 32
#define NONCE_LEN 12
#define TAG_LEN 16
#define KEY_LEN 32
#define ENTRY_MAX (1 + KMS_MASTER_NAME_MAX + 4 + 8 + KEY_LEN)
#define PLAIN_MAX (2 + KMS_SOFT_MAX_VERSIONS * ENTRY_MAX)
#define HEADER_LEN (MAGIC_LEN + 1 + 4 + SALT_LEN + CHECK_LEN + NONCE_LEN + 4)
#define FILE_MAX (HEADER_LEN + PLAIN_MAX + TAG_LEN)

static const char label_enc[] = "kmsd soft keystore v1 enc";
static const char label_check[] = "kmsd soft keystore v1 check";

struct soft_key {
    char name[KMS_MASTER_NAME_MAX + 1];
    uint32_t version;
    uint64_t created;
    struct kms_secret *key;
};

struct soft {
    struct kms_backend base;
    pthread_rwlock_t lock; /* around keys/nkeys and the file */
    char *path;
    uint32_t iterations;
    uint8_t salt[SALT_LEN];
    uint8_t check[CHECK_LEN];
    struct kms_secret *enc; /* seals the file; the password itself is not kept */
    struct soft_key keys[KMS_SOFT_MAX_VERSIONS];
    size_t nkeys;
};

static const struct kms_backend_ops soft_ops;


static kms_rc openssl_fail(kms_rc rc, const char *what)
{
    kms_fail(rc, "%s", what);
    kms_error_add_openssl();
    return rc;
}

/* ---- AES-256-GCM: common/aead (the file and each wrap lay out nonce and tag) */

_Static_assert(NONCE_LEN == KMS_AEAD_NONCE_LEN && TAG_LEN == KMS_AEAD_TAG_LEN && KEY_LEN == KMS_AEAD_KEY_LEN,
               "the soft formats are common/aead's AES-256-GCM");

/* ---- key derivation ---------------------------------------------------- */

/* prk = PBKDF2-HMAC-SHA256(password, salt, iterations); enc and check are
 * HKDF-Expand(prk, label) for one block: HMAC(prk, label || 0x01). */
static kms_rc derive(const char *password, const uint8_t salt[SALT_LEN], uint32_t iterations,
                     struct kms_secret **enc, uint8_t check[CHECK_LEN])
{
    struct kms_secret *prk = NULL;
    uint8_t info[64];
    unsigned int n = 0;
    *enc = NULL;
    KMS_GUARD(kms_secret_new(KEY_LEN, &prk));
    kms_rc rc = kms_secret_new(KEY_LEN, enc);
    if (rc == KMS_OK && PKCS5_PBKDF2_HMAC(password, (int)strlen(password), salt, SALT_LEN, (int)iterations,
                                          EVP_sha256(), KEY_LEN, kms_secret_data(prk)) != 1)
        rc = openssl_fail(KMS_ERR_CRYPTO, "soft: PBKDF2 failed");
    if (rc == KMS_OK) {
        memcpy(info, label_enc, sizeof(label_enc) - 1);
        info[sizeof(label_enc) - 1] = 1;
        if (HMAC(EVP_sha256(), kms_secret_cdata(prk), KEY_LEN, info, sizeof(label_enc), kms_secret_data(*enc),
                 &n) == NULL ||
            n != KEY_LEN)
            rc = openssl_fail(KMS_ERR_CRYPTO, "soft: HKDF-Expand failed");
    }
    if (rc == KMS_OK) {
        memcpy(info, label_check, sizeof(label_check) - 1);
        info[sizeof(label_check) - 1] = 1;
        if (HMAC(EVP_sha256(), kms_secret_cdata(prk), KEY_LEN, info, sizeof(label_check), check, &n) == NULL ||
            n != CHECK_LEN)
            rc = openssl_fail(KMS_ERR_CRYPTO, "soft: HKDF-Expand failed");
    }
    kms_secret_free(&prk);
    if (rc != KMS_OK)
        kms_secret_free(enc);
    return rc;
}

/* ---- the key set ------------------------------------------------------- */

static void keys_clear(struct soft_key *keys, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        kms_secret_free(&keys[i].key);
        kms_wipe(&keys[i], sizeof(keys[i]));
    }
}

static struct soft_key *find_key(struct soft *s, const char *name, uint32_t version)
{
    for (size_t i = 0; i < s->nkeys; i++)
        if (s->keys[i].version == version && strcmp(s->keys[i].name, name) == 0)
            return &s->keys[i];
    return NULL;
}

/* The newest version of name, or NULL. */
static struct soft_key *find_current(struct soft *s, const char *name)
{
    struct soft_key *best = NULL;
    for (size_t i = 0; i < s->nkeys; i++)
        if (strcmp(s->keys[i].name, name) == 0 && (best == NULL || s->keys[i].version > best->version))
            best = &s->keys[i];
    return best;
}

static void put_u32(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)(v >> 24);
    p[1] = (uint8_t)(v >> 16);
    p[2] = (uint8_t)(v >> 8);
    p[3] = (uint8_t)v;
}

/* Serializes keys[0..n) (plus extra, if not NULL) into a new secret. */
static kms_rc keys_serialize(const struct soft_key *keys, size_t n, const struct soft_key *extra,
                             struct kms_secret **out)
{
    size_t total = n + (extra != NULL);
    size_t len = 2;
    for (size_t i = 0; i < total; i++) {
        const struct soft_key *k = i < n ? &keys[i] : extra;
        len += 1 + strlen(k->name) + 4 + 8 + KEY_LEN;
    }
    KMS_GUARD(kms_secret_new(len, out));
    uint8_t *p = kms_secret_data(*out);
    p[0] = (uint8_t)(total >> 8);
    p[1] = (uint8_t)total;
    p += 2;
    for (size_t i = 0; i < total; i++) {
        const struct soft_key *k = i < n ? &keys[i] : extra;
        size_t name_len = strlen(k->name);
        *p++ = (uint8_t)name_len;
        memcpy(p, k->name, name_len);
        p += name_len;
        put_u32(p, k->version);
        put_u32(p + 4, (uint32_t)(k->created >> 32));
        put_u32(p + 8, (uint32_t)k->created);
        p += 12;
        memcpy(p, kms_secret_cdata(k->key), KEY_LEN);
        p += KEY_LEN;
    }
    return KMS_OK;
}

static kms_rc keys_parse(struct soft *s, const uint8_t *data, size_t len)
{
    struct kms_cursor c;
    uint16_t count;
    kms_cursor_init(&c, data, len);
    if (kms_cursor_u16be(&c, &count) != KMS_OK || count > KMS_SOFT_MAX_VERSIONS)
        return kms_fail(KMS_ERR_KEYSTORE_CORRUPT, "soft key file %s: bad key count", s->path);
    for (size_t i = 0; i < count; i++) {
        struct soft_key *k = &s->keys[s->nkeys];
        uint8_t name_len;
        const uint8_t *name, *key;
        if (kms_cursor_u8(&c, &name_len) != KMS_OK || kms_cursor_bytes(&c, name_len, &name) != KMS_OK ||
            kms_cursor_u32be(&c, &k->version) != KMS_OK || kms_cursor_u64be(&c, &k->created) != KMS_OK ||
            kms_cursor_bytes(&c, KEY_LEN, &key) != KMS_OK)
            return kms_fail(KMS_ERR_KEYSTORE_CORRUPT, "soft key file %s: truncated key entry", s->path);
        memcpy(k->name, name, name_len);
        k->name[name_len] = '\0';
        if (!kms_master_name_valid(k->name) || strlen(k->name) != name_len || k->version == 0)
            return kms_fail(KMS_ERR_KEYSTORE_CORRUPT, "soft key file %s: invalid key entry", s->path);
        if (find_key(s, k->name, k->version) != NULL)
            return kms_fail(KMS_ERR_KEYSTORE_CORRUPT, "soft key file %s: duplicate key %s version %u", s->path,
                            k->name, k->version);
        KMS_GUARD(kms_secret_from(key, KEY_LEN, &k->key));
        s->nkeys++;
    }
    if (kms_cursor_remaining(&c) != 0)
        return kms_fail(KMS_ERR_KEYSTORE_CORRUPT, "soft key file %s: trailing bytes in the key set", s->path);
    return KMS_OK;
}

/* ---- the file ---------------------------------------------------------- */

/* Writes data to path atomically (common/file.h), mode 0600; with create_only, sets *exists (and writes nothing) when path
 * appeared meanwhile. */
static kms_rc atomic_write(const char *path, const uint8_t *data, size_t len, int create_only, int *exists)
{
    /* why: a key file is 0600 whatever mode it was given meanwhile; the
     * writer keeps the mode of the file it replaces */
    if (!create_only)
        (void)chmod(path, 0600);
    return kms_file_write_atomic(path, data, len, 0600, create_only ? exists : NULL);
}

/* Seals keys[0..n) + extra and writes the file (the caller holds the write
 * lock, or owns s exclusively). */
static kms_rc persist(struct soft *s, const struct soft_key *extra, int create_only, int *exists)
{
    struct kms_secret *plain = NULL;
    uint8_t nonce[NONCE_LEN], tag[TAG_LEN];
    KMS_GUARD(keys_serialize(s->keys, s->nkeys, extra, &plain));
    size_t plen = kms_secret_len(plain);
    struct kms_buf file;
    kms_buf_init(&file, FILE_MAX);
    kms_rc rc = kms_random(nonce, sizeof(nonce));
    if (rc == KMS_OK &&
        (kms_buf_append(&file, MAGIC, MAGIC_LEN) != KMS_OK || kms_buf_append_u8(&file, KDF_PBKDF2_SHA256) != KMS_OK ||
         kms_buf_append_u32be(&file, s->iterations) != KMS_OK || kms_buf_append(&file, s->salt, SALT_LEN) != KMS_OK ||
         kms_buf_append(&file, s->check, CHECK_LEN) != KMS_OK || kms_buf_append(&file, nonce, NONCE_LEN) != KMS_OK ||
         kms_buf_append_u32be(&file, (uint32_t)plen) != KMS_OK))
        rc = kms_fail(KMS_ERR_NO_MEMORY, "soft key file %s: header", s->path);
    uint8_t *ct = rc == KMS_OK ? malloc(plen) : NULL;
    if (rc == KMS_OK && ct == NULL)
        rc = kms_fail(KMS_ERR_NO_MEMORY, "soft key file %s", s->path);
    if (rc == KMS_OK)
        rc = kms_aead_encrypt(kms_secret_cdata(s->enc), nonce, file.data, file.len, kms_secret_cdata(plain), plen, ct, tag);
    if (rc == KMS_OK && (kms_buf_append(&file, ct, plen) != KMS_OK || kms_buf_append(&file, tag, TAG_LEN) != KMS_OK))
        rc = kms_fail(KMS_ERR_NO_MEMORY, "soft key file %s", s->path);
    if (rc == KMS_OK)
        rc = atomic_write(s->path, file.data, file.len, create_only, exists);
    free(ct);
    kms_buf_free(&file);
    kms_secret_free(&plain);
    return rc;
}

/* Reads the whole file (bounded). *absent is set on ENOENT. */
static kms_rc read_file(const char *path, struct kms_buf *out, int *absent)
{
    uint8_t *d = NULL;
    size_t n = 0;
    kms_rc rc = kms_file_read(path, FILE_MAX, "the soft key file", &d, &n, absent);
    if (rc == KMS_ERR_TOO_LARGE)
        rc = kms_fail(KMS_ERR_KEYSTORE_CORRUPT, "soft key file %s: larger than %d bytes", path, FILE_MAX);
    if (rc == KMS_OK && d != NULL && kms_buf_append(out, d, n) != KMS_OK)
        rc = kms_fail(KMS_ERR_KEYSTORE_CORRUPT, "soft key file %s: larger than %d bytes", path, FILE_MAX);
    if (d != NULL)
        kms_wipe(d, n);
    free(d);
    return rc;
}

/* The file's structure, before any key is derived: magic, KDF, iteration
 * bounds, lengths, nothing trailing. Fills s's KDF fields (iterations, salt,
 * check); messages name s->path. */
struct layout {
    size_t header_len;
    const uint8_t *nonce, *ct, *tag;
    uint32_t ct_len;
};

static kms_rc parse_layout(struct soft *s, const uint8_t *data, size_t len, struct layout *out)
{
    struct kms_cursor c;
    const uint8_t *magic;
    uint8_t kdf;
    kms_cursor_init(&c, data, len);
    if (kms_cursor_bytes(&c, MAGIC_LEN, &magic) != KMS_OK || memcmp(magic, MAGIC, MAGIC_LEN) != 0)
        return kms_fail(KMS_ERR_KEYSTORE_CORRUPT, "soft key file %s: not a soft key file (no KMSSOFT1 magic)",
                        s->path);
    if (kms_cursor_u8(&c, &kdf) != KMS_OK || kms_cursor_u32be(&c, &s->iterations) != KMS_OK ||
        kms_cursor_copy(&c, s->salt, SALT_LEN) != KMS_OK || kms_cursor_copy(&c, s->check, CHECK_LEN) != KMS_OK ||
        kms_cursor_bytes(&c, NONCE_LEN, &out->nonce) != KMS_OK || kms_cursor_u32be(&c, &out->ct_len) != KMS_OK)
        return kms_fail(KMS_ERR_KEYSTORE_CORRUPT, "soft key file %s: truncated header", s->path);
    if (kdf != KDF_PBKDF2_SHA256)
        return kms_fail(KMS_ERR_KEYSTORE_CORRUPT, "soft key file %s: unknown KDF %u", s->path, kdf);
    if (s->iterations < KMS_SOFT_MIN_ITERATIONS || s->iterations > MAX_ITERATIONS)
        return kms_fail(KMS_ERR_KEYSTORE_CORRUPT, "soft key file %s: %u PBKDF2 iterations (%d..%u accepted)",
                        s->path, s->iterations, KMS_SOFT_MIN_ITERATIONS, MAX_ITERATIONS);
    out->header_len = c.pos;
    if (out->ct_len < 2 || out->ct_len > PLAIN_MAX)
        return kms_fail(KMS_ERR_KEYSTORE_CORRUPT, "soft key file %s: key set of %u bytes", s->path, out->ct_len);
    if (kms_cursor_bytes(&c, out->ct_len, &out->ct) != KMS_OK || kms_cursor_bytes(&c, TAG_LEN, &out->tag) != KMS_OK)
        return kms_fail(KMS_ERR_KEYSTORE_CORRUPT, "soft key file %s: truncated", s->path);
    if (kms_cursor_remaining(&c) != 0)
        return kms_fail(KMS_ERR_KEYSTORE_CORRUPT, "soft key file %s: trailing bytes", s->path);
    return KMS_OK;
}

static kms_rc load(struct soft *s, const char *password, const uint8_t *data, size_t len)
{
    struct layout l;
    uint8_t check[CHECK_LEN];
    KMS_GUARD(parse_layout(s, data, len, &l));
    const uint8_t *nonce = l.nonce, *ct = l.ct, *tag = l.tag;
    uint32_t ct_len = l.ct_len;
    size_t header_len = l.header_len;

    KMS_GUARD(derive(password, s->salt, s->iterations, &s->enc, check));
    int match = CRYPTO_memcmp(check, s->check, CHECK_LEN) == 0;
    kms_wipe(check, sizeof(check));
    if (!match)
        return kms_fail(KMS_ERR_KEYSTORE_PASSWORD, "soft key file %s: wrong password", s->path);

    struct kms_secret *plain = NULL;
    KMS_GUARD(kms_secret_new(ct_len, &plain));
    kms_rc rc = kms_aead_decrypt(kms_secret_cdata(s->enc), nonce, data, header_len, ct, ct_len, tag, kms_secret_data(plain));
    if (rc == KMS_ERR_UNWRAP)
        rc = kms_fail(KMS_ERR_KEYSTORE_CORRUPT, "soft key file %s: modified or damaged (authentication failed)",
                      s->path);
    if (rc == KMS_OK)
        rc = keys_parse(s, kms_secret_cdata(plain), ct_len);
    kms_secret_free(&plain);
    return rc;
}

kms_rc kms_soft_file_inspect(const uint8_t *data, size_t len, uint32_t *iterations, size_t *keyset_len)
{
    struct soft *s = calloc(1, sizeof(*s));
    if (s == NULL)
        return KMS_ERR_NO_MEMORY;
    s->path = (char *)"(memory)";
    struct layout l;
    kms_rc rc = parse_layout(s, data, len, &l);
    if (rc == KMS_OK) {
        *iterations = s->iterations;
        *keyset_len = l.ct_len;
    }
    free(s);
    return rc;
}

kms_rc kms_soft_keyset_check(const uint8_t *plain, size_t len, size_t *n_keys)
{
    struct soft *s = calloc(1, sizeof(*s));
    if (s == NULL)
        return KMS_ERR_NO_MEMORY;
    s->path = (char *)"(memory)";
    kms_rc rc = len > PLAIN_MAX ? kms_fail(KMS_ERR_KEYSTORE_CORRUPT, "soft key set of %zu bytes", len)
                                : keys_parse(s, plain, len);
    *n_keys = rc == KMS_OK ? s->nkeys : 0;
    keys_clear(s->keys, s->nkeys);
    free(s);
    return rc;
}

static kms_rc new_key(const char *name, uint32_t version, struct soft_key *out)
{
    memset(out, 0, sizeof(*out));
    memcpy(out->name, name, strlen(name) + 1);
    out->version = version;
    out->created = (uint64_t)time(NULL);
    return kms_secret_random(KEY_LEN, &out->key);
}

/* First run: a new salt, one key. */
static kms_rc create(struct soft *s, const char *password, const char *default_key, int *exists)
{
    struct soft_key k;
    s->iterations = KMS_SOFT_ITERATIONS;
    KMS_GUARD(kms_random(s->salt, SALT_LEN));
    KMS_GUARD(derive(password, s->salt, s->iterations, &s->enc, s->check));
    KMS_GUARD(new_key(default_key, 1, &k));
    kms_rc rc = persist(s, &k, 1, exists);
    if (rc == KMS_OK && !*exists) {
        s->keys[s->nkeys++] = k;
        return KMS_OK;
    }
    keys_clear(&k, 1);
    kms_secret_free(&s->enc);
    return rc;
}

static void soft_destroy(struct kms_backend *b)
{
    struct soft *s = (struct soft *)b;
    keys_clear(s->keys, s->nkeys);
    kms_secret_free(&s->enc);
    pthread_rwlock_destroy(&s->lock);
    free(s->path);
    kms_wipe(s, sizeof(*s));
    free(s);
}

kms_rc kms_soft_open(const char *path, const char *password, const char *default_key, struct kms_backend **out)
{
    *out = NULL;
    if (path == NULL || path[0] == '\0')
        return kms_fail(KMS_ERR_CONFIG, "soft key file: no path");
    if (password == NULL || password[0] == '\0')
        return kms_fail(KMS_ERR_CONFIG, "soft key file %s: empty password", path);
    if (default_key != NULL && !kms_master_name_valid(default_key))
        return kms_fail(KMS_ERR_CONFIG, "soft key file %s: invalid default key name", path);
    struct soft *s = calloc(1, sizeof(*s));
    if (s == NULL)
        return kms_fail(KMS_ERR_NO_MEMORY, "soft backend");
    s->base.ops = &soft_ops;
    s->path = strdup(path);
    if (s->path == NULL || pthread_rwlock_init(&s->lock, NULL) != 0) {
        free(s->path);
        free(s);
        return kms_fail(KMS_ERR_NO_MEMORY, "soft backend");
    }

    struct kms_buf data;
    kms_rc rc = KMS_OK;
    for (int attempt = 0; attempt < 2; attempt++) {
        int absent = 0, exists = 0;
        kms_buf_init(&data, FILE_MAX);
        rc = read_file(path, &data, &absent);
        if (rc == KMS_OK && !absent)
            rc = load(s, password, data.data, data.len);
        kms_buf_free(&data);
        if (rc != KMS_OK || !absent)
            break;
        if (default_key == NULL) {
            rc = kms_fail(KMS_ERR_CONFIG, "soft key file %s does not exist and no default key is named", path);
            break;
        }
        rc = create(s, password, default_key, &exists);
        if (rc != KMS_OK || !exists)
            break;
        /* why: another process created it between our read and our link: read theirs */
    }
    if (rc != KMS_OK) {
        soft_destroy(&s->base);
        return rc;
    }
    *out = &s->base;
    return KMS_OK;
}

static kms_rc add_version(struct kms_backend *b, const char *name, int must_be_new)
{
    if (b == NULL || b->ops != &soft_ops)
        return kms_fail(KMS_ERR_INVALID_FIELD, "not a soft backend");
    if (!kms_master_name_valid(name))
        return kms_fail(KMS_ERR_INVALID_FIELD, "invalid key name");
    struct soft *s = (struct soft *)b;
    struct soft_key k;
    memset(&k, 0, sizeof(k));
    pthread_rwlock_wrlock(&s->lock);
    struct soft_key *cur = find_current(s, name);
    kms_rc rc = KMS_OK;
    if (cur != NULL && must_be_new)
        rc = kms_fail(KMS_ERR_INVALID_FIELD, "soft key file %s: key %s exists", s->path, name);
    else if (s->nkeys >= KMS_SOFT_MAX_VERSIONS)
        rc = kms_fail(KMS_ERR_TOO_LARGE, "soft key file %s: %d key versions already", s->path,
                      KMS_SOFT_MAX_VERSIONS);
    else if (cur != NULL && cur->version == UINT32_MAX)
        rc = kms_fail(KMS_ERR_TOO_LARGE, "soft key file %s: key %s has no next version", s->path, name);
    if (rc == KMS_OK)
        rc = new_key(name, cur ? cur->version + 1 : 1, &k);
    if (rc == KMS_OK)
        rc = persist(s, &k, 0, NULL);
    if (rc == KMS_OK)
        s->keys[s->nkeys++] = k;
    else
        keys_clear(&k, 1);
    pthread_rwlock_unlock(&s->lock);
    return rc;
}

kms_rc kms_soft_rotate(struct kms_backend *b, const char *name) { return add_version(b, name, 0); }

kms_rc kms_soft_create_key(struct kms_backend *b, const char *name) { return add_version(b, name, 1); }

/* ---- ops --------------------------------------------------------------- */

static kms_rc soft_resolve(struct kms_backend *b, const char *name, struct kms_master_ref *out)
{
    struct soft *s = (struct soft *)b;
    memset(out, 0, sizeof(*out));
    if (!kms_master_name_valid(name))
        return kms_fail(KMS_ERR_KEY_NOT_FOUND, "soft: invalid key name");
    pthread_rwlock_rdlock(&s->lock);
    struct soft_key *k = find_current(s, name);
    if (k != NULL) {
        memcpy(out->name, k->name, sizeof(out->name));
        out->version = k->version;
    }
    pthread_rwlock_unlock(&s->lock);
    return k != NULL ? KMS_OK : kms_fail(KMS_ERR_KEY_NOT_FOUND, "soft: no key %s", name);
}

static kms_rc soft_encrypt(struct kms_backend *b, const struct kms_master_ref *ref, const uint8_t *aad,
                           size_t aad_len, const struct kms_secret *pt, uint8_t *ct, size_t ct_cap, size_t *ct_len)
{
    struct soft *s = (struct soft *)b;
    size_t len = kms_secret_len(pt);
    *ct_len = 0;
    if (len > INT32_MAX - NONCE_LEN - TAG_LEN || ct_cap < NONCE_LEN + len + TAG_LEN)
        return kms_fail(KMS_ERR_INTERNAL, "soft: ciphertext buffer of %zu bytes for %zu bytes", ct_cap, len);
    if (aad_len > INT32_MAX)
        return kms_fail(KMS_ERR_INTERNAL, "soft: associated data too large");
    KMS_GUARD(kms_random(ct, NONCE_LEN));
    pthread_rwlock_rdlock(&s->lock);
    struct soft_key *k = find_key(s, ref->name, ref->version);
    kms_rc rc = k == NULL ? kms_fail(KMS_ERR_KEY_NOT_FOUND, "soft: no key %s version %u", ref->name, ref->version)
                          : kms_aead_encrypt(kms_secret_cdata(k->key), ct, aad, aad_len, kms_secret_cdata(pt), len,
                                     ct + NONCE_LEN, ct + NONCE_LEN + len);
    pthread_rwlock_unlock(&s->lock);
    if (rc == KMS_OK)
        *ct_len = NONCE_LEN + len + TAG_LEN;
    return rc;
}

static kms_rc soft_decrypt(struct kms_backend *b, const struct kms_master_ref *ref, const uint8_t *aad,
                           size_t aad_len, const uint8_t *ct, size_t ct_len, struct kms_secret **pt)
{
    struct soft *s = (struct soft *)b;
    *pt = NULL;
    if (ct_len <= NONCE_LEN + TAG_LEN || ct_len > INT32_MAX || aad_len > INT32_MAX)
        return kms_fail(KMS_ERR_UNWRAP, "soft: ciphertext of %zu bytes", ct_len);
    size_t len = ct_len - NONCE_LEN - TAG_LEN;
    KMS_GUARD(kms_secret_new(len, pt));
    pthread_rwlock_rdlock(&s->lock);
    struct soft_key *k = find_key(s, ref->name, ref->version);
    kms_rc rc = k == NULL ? kms_fail(KMS_ERR_KEY_NOT_FOUND, "soft: no key %s version %u", ref->name, ref->version)
                          : kms_aead_decrypt(kms_secret_cdata(k->key), ct, aad, aad_len, ct + NONCE_LEN, len,
                                     ct + NONCE_LEN + len, kms_secret_data(*pt));
    pthread_rwlock_unlock(&s->lock);
    if (rc == KMS_ERR_UNWRAP)
        kms_fail(rc, "soft: authentication failed under %s version %u", ref->name, ref->version);
    if (rc != KMS_OK)
        kms_secret_free(pt);
    return rc;
}

static kms_rc soft_describe(struct kms_backend *b, const char *name, struct kms_key_info *out)
{
    struct soft *s = (struct soft *)b;
    memset(out, 0, sizeof(*out));
    if (!kms_master_name_valid(name))
        return kms_fail(KMS_ERR_KEY_NOT_FOUND, "soft: invalid key name");
    pthread_rwlock_rdlock(&s->lock);
    struct soft_key *cur = find_current(s, name);
    if (cur != NULL) {
        uint32_t min = cur->version;
        for (size_t i = 0; i < s->nkeys; i++)
            if (strcmp(s->keys[i].name, name) == 0 && s->keys[i].version < min)
                min = s->keys[i].version;
        memcpy(out->name, cur->name, sizeof(out->name));
        out->backend = "soft";
        out->current_version = cur->version;
        out->min_version = min;
        memcpy(out->state, "active", sizeof("active"));
        memcpy(out->algorithm, "AES-256-GCM", sizeof("AES-256-GCM"));
        out->created = (long long)cur->created;
    }
    pthread_rwlock_unlock(&s->lock);
    return cur != NULL ? KMS_OK : kms_fail(KMS_ERR_KEY_NOT_FOUND, "soft: no key %s", name);
}

static kms_rc soft_probe(struct kms_backend *b)
{
    (void)b;
    return KMS_OK;
}

static const struct kms_backend_ops soft_ops = {
    .name = "soft",
    .kind = KMS_BACKEND_SOFT,
    .resolve = soft_resolve,
    .encrypt = soft_encrypt,
    .decrypt = soft_decrypt,
    .describe = soft_describe,
    .probe = soft_probe,
    .destroy = soft_destroy,
};
