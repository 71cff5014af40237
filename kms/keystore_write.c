/* Keystore editing and writing: JKS, PKCS#12 and PEM serialisers, atomic
 * file replacement. The layouts are those kms/jks.c and kms/p12.c read. */
#include "kms/keystore_write.h"

#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/objects.h>
#include <openssl/pem.h>
#include <openssl/pkcs12.h>
#include <openssl/rand.h>
#include <openssl/x509.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "common/file.h"
#include "common/secret.h"
#include "kms/keystore_int.h"

#define SHA1_LEN 20
#define MAX_PASSWORD 4096u
#define P12_ITER 10000 /* keytool's default on Java 17 */
#define SUN_JKS_OID "1.3.6.1.4.1.42.2.17.1.1"
#define ORACLE_TRUSTED_KEY_USAGE "2.16.840.1.113894.746875.1.1"
#define ANY_EKU "2.5.29.37.0"

/* ---- editing ------------------------------------------------------------ */

kms_rc kms_keystore_new(enum kms_keystore_format f, const char *name, struct kms_keystore **out)
{
    *out = NULL;
    struct kms_keystore *ks = calloc(1, sizeof(*ks));
    if (ks == NULL || (ks->path = strdup(name != NULL ? name : "<new keystore>")) == NULL) {
        free(ks);
        return kms_fail(KMS_ERR_NO_MEMORY, "out of memory");
    }
    ks->format = f;
    *out = ks;
    return KMS_OK;
}

void kms_keystore_set_format(struct kms_keystore *ks, enum kms_keystore_format f) { ks->format = f; }

kms_rc kms_keystore_add(struct kms_keystore *ks, const char *alias, X509 *cert, STACK_OF(X509) *chain,
                        EVP_PKEY *key)
{
    if (alias == NULL || cert == NULL)
        return kms_fail(KMS_ERR_INVALID_FIELD, "an entry needs an alias and a certificate");
    char *a = kms_ks_alias_dup(alias, strlen(alias));
    if (a == NULL)
        return kms_fail(KMS_ERR_INVALID_FIELD,
                        "alias '%s' is not usable: empty, longer than %u bytes, not UTF-8 or has control characters",
                        alias, KMS_KS_MAX_ALIAS);
    if (kms_keystore_find(ks, alias) != NULL) {
        free(a);
        return kms_fail(KMS_ERR_INVALID_FIELD, "%s: alias '%s' already exists (aliases are case-insensitive)",
                        ks->path, alias);
    }
    if (key != NULL) {
        EVP_PKEY *pub = X509_get0_pubkey(cert);
        if (pub == NULL || EVP_PKEY_eq(pub, key) != 1) {
            ERR_clear_error();
            free(a);
            return kms_fail(KMS_ERR_INVALID_FIELD, "the private key does not match the certificate of '%s'", alias);
        }
    }
    STACK_OF(X509) *ch = chain != NULL ? X509_chain_up_ref(chain) : sk_X509_new_null();
    if (ch == NULL || !X509_up_ref(cert)) {
        sk_X509_pop_free(ch, X509_free);
        free(a);
        return kms_fail(KMS_ERR_NO_MEMORY, "out of memory");
    }
    if (key != NULL && !EVP_PKEY_up_ref(key)) {
        X509_free(cert);
        sk_X509_pop_free(ch, X509_free);
        free(a);
        return kms_fail(KMS_ERR_NO_MEMORY, "out of memory");
    }
    kms_rc rc = kms_ks_add_entry(ks, a, cert, ch, key);
    if (rc == KMS_ERR_KEYSTORE_CORRUPT)
        rc = KMS_ERR_INVALID_FIELD;
    return rc;
}

kms_rc kms_keystore_remove(struct kms_keystore *ks, const char *alias)
{
    for (size_t i = 0; alias != NULL && i < ks->count; i++) {
        struct kms_ks_entry *e = &ks->entries[i];
        if (strcasecmp(e->alias, alias) != 0)
            continue;
        free(e->alias);
        X509_free(e->cert);
        sk_X509_pop_free(e->chain, X509_free);
        EVP_PKEY_free(e->key);
        OPENSSL_free(e->der);
        memmove(&ks->entries[i], &ks->entries[i + 1], (ks->count - i - 1) * sizeof(*e));
        ks->count--;
        return KMS_OK;
    }
    return kms_fail(KMS_ERR_ALIAS_NOT_FOUND, "%s: no entry with alias '%s'", ks->path, alias ? alias : "(null)");
}

/* ---- output buffer ------------------------------------------------------ */

struct obuf {
    uint8_t *d;
    size_t n, cap;
    int oom;
};

static void put(struct obuf *b, const void *p, size_t n)
{
    if (b->oom)
        return;
    if (b->n + n > b->cap) {
        size_t cap = b->cap ? b->cap : 4096;
        while (cap < b->n + n)
            cap *= 2;
        uint8_t *d = realloc(b->d, cap);
        if (d == NULL) {
            b->oom = 1;
            return;
        }
        b->d = d;
        b->cap = cap;
    }
    memcpy(b->d + b->n, p, n);
    b->n += n;
}

static void put_u16(struct obuf *b, uint32_t v)
{
    uint8_t x[2] = {(uint8_t)(v >> 8), (uint8_t)v};
    put(b, x, 2);
}

static void put_u32(struct obuf *b, uint32_t v)
{
    uint8_t x[4] = {(uint8_t)(v >> 24), (uint8_t)(v >> 16), (uint8_t)(v >> 8), (uint8_t)v};
    put(b, x, 4);
}

static void put_u64(struct obuf *b, uint64_t v)
{
    put_u32(b, (uint32_t)(v >> 32));
    put_u32(b, (uint32_t)v);
}

/* ---- JKS ------------------------------------------------------------------ */

/* UTF-8 to UTF-16 code units; n_units set. Returns 0 when not UTF-8. */
static int utf8_to_utf16(const char *s, uint16_t *units, size_t cap, size_t *n_units)
{
    const uint8_t *u = (const uint8_t *)s;
    size_t n = strlen(s), o = 0;
    for (size_t i = 0; i < n;) {
        uint32_t cp;
        size_t k;
        if (u[i] < 0x80)
            cp = u[i], k = 1;
        else if ((u[i] & 0xE0) == 0xC0)
            cp = u[i] & 0x1Fu, k = 2;
        else if ((u[i] & 0xF0) == 0xE0)
            cp = u[i] & 0x0Fu, k = 3;
        else if ((u[i] & 0xF8) == 0xF0)
            cp = u[i] & 0x07u, k = 4;
        else
            return 0;
        if (i + k > n)
            return 0;
        for (size_t m = 1; m < k; m++) {
            if ((u[i + m] & 0xC0) != 0x80)
                return 0;
            cp = (cp << 6) | (u[i + m] & 0x3Fu);
        }
        i += k;
        if (cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF))
            return 0;
        if (o + 2 > cap)
            return 0;
        if (cp >= 0x10000) {
            uint32_t v = cp - 0x10000u;
            units[o++] = (uint16_t)(0xD800u + (v >> 10));
            units[o++] = (uint16_t)(0xDC00u + (v & 0x3FFu));
        } else {
            units[o++] = (uint16_t)cp;
        }
    }
    *n_units = o;
    return 1;
}

/* The password as Java's char[] bytes (UTF-16BE), in a secret. */
static kms_rc password_utf16(const char *pw, struct kms_secret **out)
{
    size_t n = strlen(pw), nu = 0;
    *out = NULL;
    if (n > MAX_PASSWORD)
        return kms_fail(KMS_ERR_KEYSTORE_PASSWORD, "the keystore password is longer than %u bytes", MAX_PASSWORD);
    struct kms_secret *units = NULL;
    KMS_GUARD(kms_secret_new((n + 1) * sizeof(uint16_t), &units));
    uint16_t *u = (uint16_t *)(void *)kms_secret_data(units);
    if (!utf8_to_utf16(pw, u, n + 1, &nu)) {
        kms_secret_free(&units);
        return kms_fail(KMS_ERR_KEYSTORE_PASSWORD, "the keystore password is not valid UTF-8");
    }
    kms_rc rc = kms_secret_new(2 * nu + 1, out);
    if (rc == KMS_OK) {
        uint8_t *o = kms_secret_data(*out);
        for (size_t i = 0; i < nu; i++)
            o[2 * i] = (uint8_t)(u[i] >> 8), o[2 * i + 1] = (uint8_t)u[i];
        kms_secret_truncate(*out, 2 * nu);
    }
    kms_secret_free(&units);
    return rc;
}

/* DataOutputStream.writeUTF: modified UTF-8 (surrogates encoded one by one). */
static kms_rc put_java_utf(struct obuf *b, const char *s)
{
    size_t n = strlen(s), nu = 0;
    uint16_t *u = calloc(n + 1, sizeof(*u));
    if (u == NULL)
        return kms_fail(KMS_ERR_NO_MEMORY, "out of memory");
    if (!utf8_to_utf16(s, u, n + 1, &nu)) {
        free(u);
        return kms_fail(KMS_ERR_INVALID_FIELD, "alias '%s' is not UTF-8", s);
    }
    size_t len = 0;
    for (size_t i = 0; i < nu; i++)
        len += u[i] >= 1 && u[i] < 0x80 ? 1 : u[i] < 0x800 ? 2 : 3;
    if (len > 0xFFFF) {
        free(u);
        return kms_fail(KMS_ERR_INVALID_FIELD, "alias '%s' is too long for JKS", s);
    }
    put_u16(b, (uint32_t)len);
    for (size_t i = 0; i < nu; i++) {
        uint16_t c = u[i];
        if (c >= 1 && c < 0x80) {
            uint8_t x = (uint8_t)c;
            put(b, &x, 1);
        } else if (c < 0x800) {
            uint8_t x[2] = {(uint8_t)(0xC0 | (c >> 6)), (uint8_t)(0x80 | (c & 0x3F))};
            put(b, x, 2);
        } else {
            uint8_t x[3] = {(uint8_t)(0xE0 | (c >> 12)), (uint8_t)(0x80 | ((c >> 6) & 0x3F)),
                            (uint8_t)(0x80 | (c & 0x3F))};
            put(b, x, 3);
        }
    }
    free(u);
    return KMS_OK;
}

static char *lower_dup(const char *s)
{
    char *d = strdup(s);
    for (char *p = d; p != NULL && *p; p++)
        if (*p >= 'A' && *p <= 'Z')
            *p = (char)(*p - 'A' + 'a');
    return d;
}

static int sha1_2(const uint8_t *a, size_t an, const uint8_t *b, size_t bn, uint8_t out[SHA1_LEN])
{
    EVP_MD_CTX *c = EVP_MD_CTX_new();
    int ok = c != NULL && EVP_DigestInit_ex(c, EVP_sha1(), NULL) == 1 && EVP_DigestUpdate(c, a, an) == 1 &&
             EVP_DigestUpdate(c, b, bn) == 1 && EVP_DigestFinal_ex(c, out, NULL) == 1;
    EVP_MD_CTX_free(c);
    return ok;
}

/* Sun's KeyProtector: EncryptedPrivateKeyInfo DER of key under pw16. */
static kms_rc jks_protect(EVP_PKEY *key, const struct kms_secret *pw16, uint8_t **out, int *out_len)
{
    kms_rc rc = KMS_ERR_CRYPTO;
    struct kms_secret *plain = NULL;
    uint8_t *p8der = NULL, *blob = NULL;
    X509_SIG *sig = NULL;
    PKCS8_PRIV_KEY_INFO *p8 = EVP_PKEY2PKCS8(key);
    int n = p8 != NULL ? i2d_PKCS8_PRIV_KEY_INFO(p8, &p8der) : -1;
    PKCS8_PRIV_KEY_INFO_free(p8);
    if (n <= 0) {
        rc = kms_fail(KMS_ERR_CRYPTO, "the private key cannot be encoded as PKCS#8");
        goto out;
    }
    if (kms_secret_from(p8der, (size_t)n, &plain) != KMS_OK)
        goto out;
    size_t len = (size_t)n;
    blob = malloc(SHA1_LEN + len + SHA1_LEN);
    if (blob == NULL) {
        rc = kms_fail(KMS_ERR_NO_MEMORY, "out of memory");
        goto out;
    }
    if (RAND_bytes(blob, SHA1_LEN) != 1)
        goto out;
    const uint8_t *pw = kms_secret_cdata(pw16);
    size_t pwn = kms_secret_len(pw16);
    uint8_t ks[SHA1_LEN];
    memcpy(ks, blob, SHA1_LEN);
    const uint8_t *pt = kms_secret_cdata(plain);
    for (size_t off = 0; off < len; off += SHA1_LEN) {
        if (!sha1_2(pw, pwn, ks, SHA1_LEN, ks))
            goto out;
        for (size_t i = 0; i < SHA1_LEN && off + i < len; i++)
            blob[SHA1_LEN + off + i] = pt[off + i] ^ ks[i];
    }
    OPENSSL_cleanse(ks, sizeof(ks));
    if (!sha1_2(pw, pwn, pt, len, blob + SHA1_LEN + len))
        goto out;
    sig = X509_SIG_new();
    X509_ALGOR *alg = NULL;
    ASN1_OCTET_STRING *digest = NULL;
    if (sig == NULL)
        goto out;
    X509_SIG_getm(sig, &alg, &digest);
    ASN1_OBJECT *oid = OBJ_txt2obj(SUN_JKS_OID, 1);
    if (oid == NULL || X509_ALGOR_set0(alg, oid, V_ASN1_NULL, NULL) != 1) {
        ASN1_OBJECT_free(oid);
        goto out;
    }
    if (ASN1_OCTET_STRING_set(digest, blob, (int)(SHA1_LEN + len + SHA1_LEN)) != 1)
        goto out;
    *out = NULL;
    if ((*out_len = i2d_X509_SIG(sig, out)) <= 0)
        goto out;
    rc = KMS_OK;
out:
    if (rc == KMS_ERR_CRYPTO) {
        kms_error_add_openssl();
        rc = kms_fail(KMS_ERR_CRYPTO, "protecting a private key for JKS failed");
    }
    ERR_clear_error();
    if (p8der != NULL)
        OPENSSL_clear_free(p8der, (size_t)n);
    free(blob); /* why: holds only salt, ciphertext and check */
    X509_SIG_free(sig);
    kms_secret_free(&plain);
    return rc;
}

static void put_cert(struct obuf *b, X509 *x, kms_rc *rc)
{
    uint8_t *der = NULL;
    int n = i2d_X509(x, &der);
    if (n <= 0) {
        *rc = kms_fail(KMS_ERR_CRYPTO, "a certificate cannot be encoded");
        return;
    }
    put_u16(b, 5);
    put(b, "X.509", 5);
    put_u32(b, (uint32_t)n);
    put(b, der, (size_t)n);
    OPENSSL_free(der);
}

static kms_rc jks_write(const struct kms_keystore *ks, const char *password, struct obuf *b)
{
    struct kms_secret *pw16 = NULL;
    KMS_GUARD(password_utf16(password, &pw16));
    kms_rc rc = KMS_OK;
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    uint64_t now = (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
    put_u32(b, 0xFEEDFEEDu);
    put_u32(b, 2);
    put_u32(b, (uint32_t)ks->count);
    for (size_t i = 0; i < ks->count && rc == KMS_OK; i++) {
        const struct kms_ks_entry *e = &ks->entries[i];
        char *alias = lower_dup(e->alias);
        if (alias == NULL) {
            rc = kms_fail(KMS_ERR_NO_MEMORY, "out of memory");
            break;
        }
        put_u32(b, e->type == KMS_KS_PRIVATE_KEY ? 1u : 2u);
        rc = put_java_utf(b, alias);
        free(alias);
        if (rc != KMS_OK)
            break;
        put_u64(b, now);
        if (e->type == KMS_KS_PRIVATE_KEY) {
            uint8_t *epki = NULL;
            int n = 0;
            rc = jks_protect(e->key, pw16, &epki, &n);
            if (rc != KMS_OK)
                break;
            put_u32(b, (uint32_t)n);
            put(b, epki, (size_t)n);
            OPENSSL_free(epki);
            put_u32(b, (uint32_t)(1 + sk_X509_num(e->chain)));
            put_cert(b, e->cert, &rc);
            for (int k = 0; k < sk_X509_num(e->chain) && rc == KMS_OK; k++)
                put_cert(b, sk_X509_value(e->chain, k), &rc);
        } else {
            put_cert(b, e->cert, &rc);
        }
    }
    if (rc == KMS_OK && !b->oom) {
        uint8_t md[SHA1_LEN];
        static const char mighty[] = "Mighty Aphrodite";
        EVP_MD_CTX *c = EVP_MD_CTX_new();
        int ok = c != NULL && EVP_DigestInit_ex(c, EVP_sha1(), NULL) == 1 &&
                 EVP_DigestUpdate(c, kms_secret_cdata(pw16), kms_secret_len(pw16)) == 1 &&
                 EVP_DigestUpdate(c, mighty, strlen(mighty)) == 1 && EVP_DigestUpdate(c, b->d, b->n) == 1 &&
                 EVP_DigestFinal_ex(c, md, NULL) == 1;
        EVP_MD_CTX_free(c);
        if (!ok)
            rc = kms_fail(KMS_ERR_CRYPTO, "SHA-1 failed");
        else
            put(b, md, sizeof(md));
    }
    kms_secret_free(&pw16);
    return rc;
}

/* ---- PKCS#12 ------------------------------------------------------------- */

static int add_name(PKCS12_SAFEBAG *bag, const char *alias)
{
    return PKCS12_add_friendlyname_utf8(bag, alias, -1) == 1;
}

/* A secret-key entry as keytool writes it: a secret bag of type
 * pkcs8ShroudedKeyBag holding the EncryptedPrivateKeyInfo of a
 * PrivateKeyInfo (the key's algorithm, its raw bytes), named by
 * friendlyName; keytool reads it back as a SecretKeyEntry. */
static int add_secret(STACK_OF(PKCS12_SAFEBAG) **bags, const struct kms_ks_secret *s, const char *password)
{
    PKCS8_PRIV_KEY_INFO *p8 = PKCS8_PRIV_KEY_INFO_new();
    unsigned char *raw = OPENSSL_secure_malloc(kms_secret_len(s->key));
    ASN1_OBJECT *alg = OBJ_dup(s->alg);
    int ok = p8 != NULL && raw != NULL && alg != NULL;
    if (ok) {
        memcpy(raw, kms_secret_cdata(s->key), kms_secret_len(s->key));
        /* why: p8 takes raw (and alg) and wipes raw when freed */
        ok = PKCS8_pkey_set0(p8, alg, 0, V_ASN1_UNDEF, NULL, raw, (int)kms_secret_len(s->key)) == 1;
        if (ok)
            raw = NULL, alg = NULL;
    }
    OPENSSL_secure_clear_free(raw, kms_secret_len(s->key));
    ASN1_OBJECT_free(alg);
    X509_SIG *sig = ok ? PKCS8_encrypt_ex(-1, EVP_aes_256_cbc(), password, -1, NULL, 0, P12_ITER, p8, NULL, NULL)
                       : NULL;
    PKCS8_PRIV_KEY_INFO_free(p8);
    unsigned char *der = NULL;
    int n = sig != NULL ? i2d_X509_SIG(sig, &der) : -1;
    X509_SIG_free(sig);
    PKCS12_SAFEBAG *bag = n > 0 ? PKCS12_SAFEBAG_create_secret(NID_pkcs8ShroudedKeyBag, V_ASN1_OCTET_STRING, der, n)
                                : NULL;
    OPENSSL_free(der);
    if (bag == NULL || !add_name(bag, s->alias) || !sk_PKCS12_SAFEBAG_push(*bags, bag)) {
        PKCS12_SAFEBAG_free(bag);
        return 0;
    }
    return 1;
}

static kms_rc p12_write(const struct kms_keystore *ks, const char *password, struct obuf *b)
{
    kms_rc rc = KMS_ERR_CRYPTO;
    STACK_OF(PKCS12_SAFEBAG) *keybags = sk_PKCS12_SAFEBAG_new_null(), *certbags = sk_PKCS12_SAFEBAG_new_null();
    STACK_OF(PKCS7) *safes = NULL;
    PKCS12 *p12 = NULL;
    ASN1_OBJECT *any_eku = OBJ_txt2obj(ANY_EKU, 1);
    uint8_t *der = NULL;
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    uint64_t now_ms = (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
    if (keybags == NULL || certbags == NULL || any_eku == NULL)
        goto out;
    for (size_t i = 0; i < ks->count; i++) {
        const struct kms_ks_entry *e = &ks->entries[i];
        PKCS12_SAFEBAG *bag;
        if (e->type == KMS_KS_PRIVATE_KEY) {
            /* why: keytool pairs key and leaf by localKeyId and, when it reads
             * "Time <ms>", shows that as the entry's creation date. */
            char keyid[48];
            int kn = snprintf(keyid, sizeof(keyid), "Time %llu", (unsigned long long)(now_ms + i));
            bag = PKCS12_add_key_ex(&keybags, e->key, 0, P12_ITER, NID_aes_256_cbc, password, NULL, NULL);
            if (bag == NULL || !add_name(bag, e->alias) ||
                PKCS12_add_localkeyid(bag, (unsigned char *)keyid, kn) != 1)
                goto out;
            bag = PKCS12_add_cert(&certbags, e->cert);
            if (bag == NULL || !add_name(bag, e->alias) ||
                PKCS12_add_localkeyid(bag, (unsigned char *)keyid, kn) != 1)
                goto out;
            for (int k = 0; k < sk_X509_num(e->chain); k++)
                if (PKCS12_add_cert(&certbags, sk_X509_value(e->chain, k)) == NULL)
                    goto out;
        } else {
            bag = PKCS12_add_cert(&certbags, e->cert);
            if (bag == NULL || !add_name(bag, e->alias) ||
                PKCS12_add1_attr_by_txt(bag, ORACLE_TRUSTED_KEY_USAGE, V_ASN1_OBJECT, (const unsigned char *)any_eku,
                                        -1) != 1)
                goto out;
        }
    }
    for (size_t i = 0; i < ks->nsecrets; i++)
        if (!add_secret(&keybags, &ks->secrets[i], password))
            goto out;
    if (sk_PKCS12_SAFEBAG_num(certbags) > 0 &&
        PKCS12_add_safe_ex(&safes, certbags, NID_aes_256_cbc, P12_ITER, password, NULL, NULL) != 1)
        goto out;
    if (sk_PKCS12_SAFEBAG_num(keybags) > 0 && PKCS12_add_safe_ex(&safes, keybags, -1, 0, NULL, NULL, NULL) != 1)
        goto out;
    if (safes == NULL && (safes = sk_PKCS7_new_null()) == NULL)
        goto out;
    p12 = PKCS12_add_safes_ex(safes, 0, NULL, NULL);
    if (p12 == NULL || PKCS12_set_mac(p12, password, -1, NULL, 0, P12_ITER, EVP_sha256()) != 1)
        goto out;
    int n = i2d_PKCS12(p12, &der);
    if (n <= 0)
        goto out;
    put(b, der, (size_t)n);
    rc = KMS_OK;
out:
    if (rc != KMS_OK) {
        kms_error_add_openssl();
        rc = kms_fail(KMS_ERR_CRYPTO, "%s: writing the PKCS#12 keystore failed", ks->path);
    }
    ERR_clear_error();
    OPENSSL_free(der);
    PKCS12_free(p12);
    sk_PKCS7_pop_free(safes, PKCS7_free);
    sk_PKCS12_SAFEBAG_pop_free(keybags, PKCS12_SAFEBAG_free);
    sk_PKCS12_SAFEBAG_pop_free(certbags, PKCS12_SAFEBAG_free);
    ASN1_OBJECT_free(any_eku);
    return rc;
}

/* ---- PEM ----------------------------------------------------------------- */

static kms_rc pem_write(const struct kms_keystore *ks, const char *password, struct obuf *b)
{
    BIO *bio = BIO_new(BIO_s_mem());
    int ok = bio != NULL;
    int enc = password != NULL && password[0] != '\0';
    for (size_t i = 0; ok && i < ks->count; i++) {
        const struct kms_ks_entry *e = &ks->entries[i];
        ok = BIO_printf(bio, "Bag Attributes\n    friendlyName: %s\n", e->alias) > 0;
        if (ok && e->type == KMS_KS_PRIVATE_KEY) {
            ok = PEM_write_bio_PKCS8PrivateKey(bio, e->key, enc ? EVP_aes_256_cbc() : NULL, password,
                                               enc ? (int)strlen(password) : 0, NULL, NULL) == 1;
        }
        ok = ok && PEM_write_bio_X509(bio, e->cert) == 1;
        for (int k = 0; ok && e->type == KMS_KS_PRIVATE_KEY && k < sk_X509_num(e->chain); k++)
            ok = PEM_write_bio_X509(bio, sk_X509_value(e->chain, k)) == 1;
    }
    if (ok) {
        char *p;
        long n = BIO_get_mem_data(bio, &p);
        if (n > 0)
            put(b, p, (size_t)n);
    }
    /* why: an unencrypted key went through the BIO */
    if (bio != NULL) {
        char *p;
        long n = BIO_get_mem_data(bio, &p);
        if (n > 0)
            OPENSSL_cleanse(p, (size_t)n);
    }
    BIO_free(bio);
    if (!ok) {
        kms_error_add_openssl();
        ERR_clear_error();
        return kms_fail(KMS_ERR_CRYPTO, "%s: writing the PEM bundle failed", ks->path);
    }
    return KMS_OK;
}

kms_rc kms_keystore_serialize(const struct kms_keystore *ks, const char *password, uint8_t **out, size_t *len)
{
    *out = NULL;
    *len = 0;
    if (ks->format != KMS_KEYSTORE_PEM && (password == NULL || password[0] == '\0'))
        return kms_fail(KMS_ERR_KEYSTORE_PASSWORD, "%s: writing a %s keystore needs a password", ks->path,
                        kms_keystore_format_name(ks->format));
    if (ks->nsecrets > 0 && ks->format != KMS_KEYSTORE_PKCS12)
        return kms_fail(KMS_ERR_KEYSTORE_FORMAT,
                        "%s: a %s keystore cannot hold secret-key entries such as '%s' (the audit key): keep it as "
                        "PKCS#12",
                        ks->path, kms_keystore_format_name(ks->format), ks->secrets[0].alias);
    (void)kms_ks_legacy_provider(); /* why: makes sure the default provider is loaded */
    struct obuf b = {0};
    kms_rc rc;
    switch (ks->format) {
    case KMS_KEYSTORE_JKS:
        rc = jks_write(ks, password, &b);
        break;
    case KMS_KEYSTORE_PKCS12:
        rc = p12_write(ks, password, &b);
        break;
    default:
        rc = pem_write(ks, password, &b);
        break;
    }
    if (rc == KMS_OK && b.oom)
        rc = kms_fail(KMS_ERR_NO_MEMORY, "out of memory");
    if (rc != KMS_OK) {
        if (b.d != NULL)
            kms_wipe(b.d, b.cap);
        free(b.d);
        return rc;
    }
    *out = b.d;
    *len = b.n;
    return KMS_OK;
}

/* ---- files --------------------------------------------------------------- */

kms_rc kms_keystore_save(const struct kms_keystore *ks, const char *path, const char *password)
{
    uint8_t *d = NULL;
    size_t n = 0;
    KMS_GUARD(kms_keystore_serialize(ks, password, &d, &n));
    kms_rc rc = kms_file_write_atomic(path, d, n, 0600, NULL);
    kms_wipe(d, n);
    free(d);
    return rc;
}

