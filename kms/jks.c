/* JKS, Java's proprietary keystore (sun.security.provider.JavaKeyStore),
 * versions 1 and 2, read through the bounded cursor (STYLE.md: untrusted
 * input). Layout, all integers big-endian:
 *
 *   u32 magic 0xFEEDFEED, u32 version (1|2), u32 count, count entries, 20-byte digest
 *   entry: u32 tag; UTF alias; u64 creation time (ms)
 *     tag 1 (private key): u32 len + EncryptedPrivateKeyInfo DER; u32 n;
 *                          n x ((v2) UTF type "X.509", u32 len + certificate DER)
 *     tag 2 (trusted cert): (v2) UTF type, u32 len + certificate DER
 *   UTF = u16 length + Java modified UTF-8 (DataInputStream.readUTF)
 *   digest = SHA1(UTF-16BE(password) || "Mighty Aphrodite" || every preceding byte)
 *
 * Private keys use Sun's KeyProtector (OID 1.3.6.1.4.1.42.2.17.1.1):
 * salt(20) || ciphertext || check(20); keystream blocks SHA1(pw || previous),
 * the first "previous" being the salt; check = SHA1(pw || plaintext PKCS#8).
 * Like keytool, the key password is the store password. */
#include "kms/keystore_int.h"

#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/objects.h>
#include <openssl/x509.h>
#include <stdlib.h>
#include <string.h>

#include "common/cursor.h"
#include "common/secret.h"
#include "common/utf8.h"

#define SHA1_LEN 20
#define TAG_KEY 1u
#define TAG_CERT 2u
/* tag + alias length + timestamp + (cert length | key length + chain count) */
#define MIN_ENTRY_LEN (4u + 2u + 8u + 4u)
#define MAX_PROTECTED_KEY (64u * 1024u)
#define MAX_PASSWORD 4096u

struct jks_entry {
    char *alias;
    uint32_t tag;
    const uint8_t *epki; /* borrowed from the file */
    size_t epki_len;
    STACK_OF(X509) *certs;
};

struct jks {
    struct kms_keystore *ks;
    struct kms_cursor c;
    uint32_t version;
    uint32_t index; /* 1-based entry being read, for messages */
    struct jks_entry *e;
    uint32_t n;
};

static kms_rc truncated(struct jks *j, const char *what)
{
    return kms_fail(KMS_ERR_KEYSTORE_CORRUPT, "%s: JKS file truncated at byte %zu in entry %u (reading %s)",
                    j->ks->path, j->c.pos, j->index, what);
}

#define READ(j, expr, what)                  \
    do {                                     \
        if ((expr) != KMS_OK)                \
            return truncated((j), (what));   \
    } while (0)

/* Decodes one UTF-16 unit of modified UTF-8 at s[*i..n); -1 when invalid. */
static int32_t mutf8_unit(const uint8_t *s, size_t n, size_t *i)
{
    uint8_t a = s[*i];
    if (a < 0x80) {
        *i += 1;
        return a;
    }
    if ((a & 0xE0) == 0xC0 && *i + 1 < n && (s[*i + 1] & 0xC0) == 0x80) {
        int32_t u = ((a & 0x1F) << 6) | (s[*i + 1] & 0x3F);
        *i += 2;
        return u;
    }
    if ((a & 0xF0) == 0xE0 && *i + 2 < n && (s[*i + 1] & 0xC0) == 0x80 && (s[*i + 2] & 0xC0) == 0x80) {
        int32_t u = ((a & 0x0F) << 12) | ((s[*i + 1] & 0x3F) << 6) | (s[*i + 2] & 0x3F);
        *i += 3;
        return u;
    }
    return -1;
}

/* Java modified UTF-8 (surrogate pairs as two 3-byte sequences, U+0000 as
 * C0 80) to standard UTF-8. NULL when invalid or when it contains NUL. */
static char *mutf8_to_utf8(const uint8_t *s, size_t n)
{
    char *out = malloc(n + 1); /* why: every unit shrinks or keeps its size */
    size_t o = 0;
    if (out == NULL)
        return NULL;
    for (size_t i = 0; i < n;) {
        int32_t u = mutf8_unit(s, n, &i);
        uint32_t cp;
        if (u <= 0)
            goto bad;
        if (u >= 0xD800 && u <= 0xDBFF) {
            int32_t lo = i < n ? mutf8_unit(s, n, &i) : -1;
            if (lo < 0xDC00 || lo > 0xDFFF)
                goto bad;
            cp = 0x10000u + (((uint32_t)u - 0xD800u) << 10) + ((uint32_t)lo - 0xDC00u);
        } else if (u >= 0xDC00 && u <= 0xDFFF) {
            goto bad;
        } else {
            cp = (uint32_t)u;
        }
        o += kms_utf8_encode(cp, (uint8_t *)(out + o));
    }
    out[o] = '\0';
    return out;
bad:
    free(out);
    return NULL;
}

/* The password as Java's char[] bytes: UTF-16BE, in a secret. */
static kms_rc password_utf16(struct kms_keystore *ks, const char *pw, struct kms_secret **out)
{
    size_t n = strlen(pw);
    *out = NULL;
    if (n > MAX_PASSWORD)
        return kms_fail(KMS_ERR_KEYSTORE_PASSWORD, "%s: the keystore password is longer than %u bytes", ks->path,
                        MAX_PASSWORD);
    KMS_GUARD(kms_secret_new(2 * n + 2, out));
    uint8_t *o = kms_secret_data(*out);
    const uint8_t *s = (const uint8_t *)pw;
    size_t len = 0;
    for (size_t i = 0; i < n;) {
        uint32_t cp;
        uint8_t a = s[i];
        size_t k;
        if (a < 0x80)
            cp = a, k = 1;
        else if ((a & 0xE0) == 0xC0)
            cp = a & 0x1Fu, k = 2;
        else if ((a & 0xF0) == 0xE0)
            cp = a & 0x0Fu, k = 3;
        else if ((a & 0xF8) == 0xF0)
            cp = a & 0x07u, k = 4;
        else
            goto bad;
        if (i + k > n)
            goto bad;
        for (size_t m = 1; m < k; m++) {
            if ((s[i + m] & 0xC0) != 0x80)
                goto bad;
            cp = (cp << 6) | (s[i + m] & 0x3Fu);
        }
        i += k;
        if (cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF))
            goto bad;
        if (cp >= 0x10000) {
            uint32_t v = cp - 0x10000u, hi = 0xD800u + (v >> 10), lo = 0xDC00u + (v & 0x3FFu);
            o[len++] = (uint8_t)(hi >> 8), o[len++] = (uint8_t)hi;
            o[len++] = (uint8_t)(lo >> 8), o[len++] = (uint8_t)lo;
        } else {
            o[len++] = (uint8_t)(cp >> 8), o[len++] = (uint8_t)cp;
        }
    }
    kms_secret_truncate(*out, len);
    return KMS_OK;
bad:
    kms_secret_free(out);
    return kms_fail(KMS_ERR_KEYSTORE_PASSWORD, "%s: the keystore password is not valid UTF-8", ks->path);
}

static kms_rc read_utf(struct jks *j, const char *what, char **out)
{
    uint16_t n;
    const uint8_t *p;
    *out = NULL;
    READ(j, kms_cursor_u16be(&j->c, &n), what);
    READ(j, kms_cursor_bytes(&j->c, n, &p), what);
    *out = mutf8_to_utf8(p, n);
    if (*out == NULL)
        return kms_fail(KMS_ERR_KEYSTORE_CORRUPT,
                        "%s: %s of entry %u is not valid modified UTF-8 or contains a NUL character", j->ks->path,
                        what, j->index);
    return KMS_OK;
}

static kms_rc read_cert(struct jks *j, STACK_OF(X509) *certs)
{
    uint32_t n;
    const uint8_t *der;
    if (j->version == 2) {
        char *type;
        KMS_GUARD(read_utf(j, "certificate type", &type));
        int x509 = strcmp(type, "X.509") == 0;
        free(type);
        if (!x509)
            return kms_fail(KMS_ERR_KEYSTORE_CORRUPT,
                            "%s: entry %u holds a certificate that is not X.509 (byte %zu)", j->ks->path, j->index,
                            j->c.pos);
    }
    READ(j, kms_cursor_u32be(&j->c, &n), "certificate length");
    READ(j, kms_cursor_bytes(&j->c, n, &der), "certificate");
    const uint8_t *p = der;
    X509 *x = d2i_X509(NULL, &p, (long)n);
    if (x == NULL || p != der + n) {
        X509_free(x);
        ERR_clear_error();
        return kms_fail(KMS_ERR_KEYSTORE_CORRUPT, "%s: the certificate ending at byte %zu in entry %u is damaged",
                        j->ks->path, j->c.pos, j->index);
    }
    if (!sk_X509_push(certs, x)) {
        X509_free(x);
        return kms_fail(KMS_ERR_NO_MEMORY, "%s: out of memory", j->ks->path);
    }
    return KMS_OK;
}

static kms_rc read_entry(struct jks *j, struct jks_entry *e)
{
    uint64_t when;
    READ(j, kms_cursor_u32be(&j->c, &e->tag), "the entry tag");
    if (e->tag != TAG_KEY && e->tag != TAG_CERT)
        return kms_fail(KMS_ERR_KEYSTORE_CORRUPT,
                        "%s: entry %u has tag %u at byte %zu; JKS knows 1 (private key) and 2 (certificate)",
                        j->ks->path, j->index, e->tag, j->c.pos - 4);
    KMS_GUARD(read_utf(j, "alias", &e->alias));
    READ(j, kms_cursor_u64be(&j->c, &when), "the creation time");
    if ((e->certs = sk_X509_new_null()) == NULL)
        return kms_fail(KMS_ERR_NO_MEMORY, "%s: out of memory", j->ks->path);
    if (e->tag == TAG_CERT)
        return read_cert(j, e->certs);

    uint32_t klen, ncerts;
    READ(j, kms_cursor_u32be(&j->c, &klen), "the private key length");
    if (klen > MAX_PROTECTED_KEY)
        return kms_fail(KMS_ERR_KEYSTORE_CORRUPT,
                        "%s: the private key of entry %u claims %u bytes (limit %u) at byte %zu", j->ks->path,
                        j->index, klen, MAX_PROTECTED_KEY, j->c.pos - 4);
    READ(j, kms_cursor_bytes(&j->c, klen, &e->epki), "the private key");
    e->epki_len = klen;
    READ(j, kms_cursor_u32be(&j->c, &ncerts), "the chain length");
    if (ncerts == 0 || ncerts > KMS_KS_MAX_CHAIN || ncerts > kms_cursor_remaining(&j->c) / 4)
        return kms_fail(KMS_ERR_KEYSTORE_CORRUPT,
                        "%s: entry %u claims a chain of %u certificates at byte %zu (1 to %u expected)",
                        j->ks->path, j->index, ncerts, j->c.pos - 4, KMS_KS_MAX_CHAIN);
    for (uint32_t i = 0; i < ncerts; i++)
        KMS_GUARD(read_cert(j, e->certs));
    return KMS_OK;
}

static kms_rc parse_structure(struct jks *j)
{
    uint32_t magic, count;
    READ(j, kms_cursor_u32be(&j->c, &magic), "the header");
    READ(j, kms_cursor_u32be(&j->c, &j->version), "the header");
    if (j->version != 1 && j->version != 2)
        return kms_fail(KMS_ERR_KEYSTORE_CORRUPT, "%s: JKS version %u is unknown (1 and 2 exist)", j->ks->path,
                        j->version);
    READ(j, kms_cursor_u32be(&j->c, &count), "the entry count");
    /* why: bound the count by what the remaining bytes can hold before allocating */
    if (count > KMS_KS_MAX_ENTRIES || count > kms_cursor_remaining(&j->c) / MIN_ENTRY_LEN)
        return kms_fail(KMS_ERR_KEYSTORE_CORRUPT,
                        "%s: the JKS header claims %u entries, more than the %zu bytes that follow can hold "
                        "(truncated or damaged)",
                        j->ks->path, count, kms_cursor_remaining(&j->c));
    if (count > 0 && (j->e = calloc(count, sizeof(*j->e))) == NULL)
        return kms_fail(KMS_ERR_NO_MEMORY, "%s: out of memory", j->ks->path);
    for (uint32_t i = 0; i < count; i++) {
        j->index = i + 1;
        j->n = i + 1;
        KMS_GUARD(read_entry(j, &j->e[i]));
    }
    j->index = count + 1;
    return KMS_OK;
}

/* SHA1(pw || "Mighty Aphrodite" || data[0..len)) == expect, constant time. */
static kms_rc check_digest(struct jks *j, const struct kms_secret *pw, const uint8_t *data, size_t len,
                           const uint8_t *expect, int *ok)
{
    static const char whitener[] = "Mighty Aphrodite";
    uint8_t md[SHA1_LEN];
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    int good = ctx != NULL && EVP_DigestInit_ex(ctx, EVP_sha1(), NULL) == 1 &&
               EVP_DigestUpdate(ctx, kms_secret_cdata(pw), kms_secret_len(pw)) == 1 &&
               EVP_DigestUpdate(ctx, whitener, sizeof(whitener) - 1) == 1 &&
               EVP_DigestUpdate(ctx, data, len) == 1 && EVP_DigestFinal_ex(ctx, md, NULL) == 1;
    EVP_MD_CTX_free(ctx);
    if (!good)
        return kms_fail(KMS_ERR_CRYPTO, "%s: SHA-1 is not available", j->ks->path);
    *ok = CRYPTO_memcmp(md, expect, SHA1_LEN) == 0;
    return KMS_OK;
}

/* Sun's KeyProtector.recover: *out is the PKCS#8 plaintext (a secret) when
 * the password's check value matches, NULL when it does not. */
static kms_rc unprotect(struct jks *j, const struct jks_entry *e, const struct kms_secret *pw,
                        struct kms_secret **out)
{
    static const char sun_jks_oid[] = "1.3.6.1.4.1.42.2.17.1.1";
    *out = NULL;
    const uint8_t *p = e->epki;
    X509_SIG *sig = d2i_X509_SIG(NULL, &p, (long)e->epki_len);
    if (sig == NULL || p != e->epki + e->epki_len) {
        X509_SIG_free(sig);
        ERR_clear_error();
        return kms_fail(KMS_ERR_KEYSTORE_CORRUPT,
                        "%s: the protected private key of entry '%s' is not an EncryptedPrivateKeyInfo",
                        j->ks->path, e->alias);
    }
    const X509_ALGOR *alg;
    const ASN1_OCTET_STRING *enc;
    X509_SIG_get0(sig, &alg, &enc);
    const ASN1_OBJECT *oid;
    X509_ALGOR_get0(&oid, NULL, NULL, alg);
    char oidtxt[80];
    if (OBJ_obj2txt(oidtxt, sizeof(oidtxt), oid, 1) <= 0 || strcmp(oidtxt, sun_jks_oid) != 0) {
        X509_SIG_free(sig);
        ERR_clear_error();
        return kms_fail(KMS_ERR_KEYSTORE_CORRUPT,
                        "%s: the private key of entry '%s' is protected with algorithm %s, not Sun's JKS "
                        "KeyProtector (%s)",
                        j->ks->path, e->alias, oidtxt, sun_jks_oid);
    }
    const uint8_t *d = ASN1_STRING_get0_data(enc);
    int dlen = ASN1_STRING_length(enc);
    if (dlen <= 2 * SHA1_LEN) {
        X509_SIG_free(sig);
        return kms_fail(KMS_ERR_KEYSTORE_CORRUPT, "%s: the protected private key of entry '%s' is too short",
                        j->ks->path, e->alias);
    }
    size_t n = (size_t)dlen - 2 * SHA1_LEN;
    const uint8_t *salt = d, *ct = d + SHA1_LEN, *check = d + SHA1_LEN + n;
    struct kms_secret *plain = NULL;
    kms_rc rc = kms_secret_new(n, &plain);
    uint8_t block[SHA1_LEN], md[SHA1_LEN];
    memcpy(block, salt, SHA1_LEN);
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    if (rc == KMS_OK && ctx == NULL)
        rc = kms_fail(KMS_ERR_NO_MEMORY, "%s: out of memory", j->ks->path);
    for (size_t off = 0; rc == KMS_OK && off < n; off += SHA1_LEN) {
        if (EVP_DigestInit_ex(ctx, EVP_sha1(), NULL) != 1 ||
            EVP_DigestUpdate(ctx, kms_secret_cdata(pw), kms_secret_len(pw)) != 1 ||
            EVP_DigestUpdate(ctx, block, SHA1_LEN) != 1 || EVP_DigestFinal_ex(ctx, block, NULL) != 1) {
            rc = kms_fail(KMS_ERR_CRYPTO, "%s: SHA-1 is not available", j->ks->path);
            break;
        }
        size_t k = n - off < SHA1_LEN ? n - off : SHA1_LEN;
        for (size_t i = 0; i < k; i++)
            kms_secret_data(plain)[off + i] = ct[off + i] ^ block[i];
    }
    if (rc == KMS_OK &&
        (EVP_DigestInit_ex(ctx, EVP_sha1(), NULL) != 1 ||
         EVP_DigestUpdate(ctx, kms_secret_cdata(pw), kms_secret_len(pw)) != 1 ||
         EVP_DigestUpdate(ctx, kms_secret_cdata(plain), n) != 1 || EVP_DigestFinal_ex(ctx, md, NULL) != 1))
        rc = kms_fail(KMS_ERR_CRYPTO, "%s: SHA-1 is not available", j->ks->path);
    if (rc == KMS_OK && CRYPTO_memcmp(md, check, SHA1_LEN) == 0) {
        *out = plain;
        plain = NULL;
    }
    kms_wipe(block, sizeof(block));
    EVP_MD_CTX_free(ctx);
    kms_secret_free(&plain);
    X509_SIG_free(sig);
    return rc;
}

static kms_rc recover_key(struct jks *j, const struct jks_entry *e, const struct kms_secret *pw, EVP_PKEY **out)
{
    struct kms_secret *plain = NULL;
    *out = NULL;
    KMS_GUARD(unprotect(j, e, pw, &plain));
    if (plain == NULL)
        return kms_fail(KMS_ERR_KEYSTORE_PASSWORD,
                        "%s: the private key of entry '%s' is protected by a password other than the keystore "
                        "password (not supported; set it with keytool -keypasswd)",
                        j->ks->path, e->alias);
    const uint8_t *p = kms_secret_cdata(plain);
    size_t n = kms_secret_len(plain);
    PKCS8_PRIV_KEY_INFO *p8 = d2i_PKCS8_PRIV_KEY_INFO(NULL, &p, (long)n);
    int exact = p8 != NULL && p == kms_secret_cdata(plain) + n;
    *out = exact ? EVP_PKCS82PKEY(p8) : NULL;
    PKCS8_PRIV_KEY_INFO_free(p8); /* why: its ASN.1 free callback wipes the key octets */
    kms_secret_free(&plain);
    if (*out == NULL) {
        ERR_clear_error();
        return kms_fail(KMS_ERR_KEYSTORE_CORRUPT,
                        "%s: the private key of entry '%s' decrypts but is not a usable PKCS#8 key", j->ks->path,
                        e->alias);
    }
    return KMS_OK;
}

/* After a failed integrity check: does the password open any private key? */
static int password_opens_a_key(struct jks *j, const struct kms_secret *pw)
{
    for (uint32_t i = 0; i < j->n; i++) {
        struct kms_secret *plain = NULL;
        if (j->e[i].tag == TAG_KEY && unprotect(j, &j->e[i], pw, &plain) == KMS_OK && plain != NULL) {
            kms_secret_free(&plain);
            return 1;
        }
    }
    return 0;
}

static kms_rc build_entries(struct jks *j, const struct kms_secret *pw)
{
    for (uint32_t i = 0; i < j->n; i++) {
        struct jks_entry *e = &j->e[i];
        EVP_PKEY *key = NULL;
        if (e->tag == TAG_KEY) {
            if (pw == NULL)
                return kms_fail(KMS_ERR_KEYSTORE_PASSWORD,
                                "%s: entry '%s' holds a private key; a keystore password is needed", j->ks->path,
                                e->alias);
            KMS_GUARD(recover_key(j, e, pw, &key));
            if (X509_check_private_key(sk_X509_value(e->certs, 0), key) != 1) {
                ERR_clear_error();
                EVP_PKEY_free(key);
                return kms_fail(KMS_ERR_KEYSTORE_CORRUPT,
                                "%s: the certificate of entry '%s' does not match its private key", j->ks->path,
                                e->alias);
            }
        }
        X509 *leaf = sk_X509_shift(e->certs);
        char *alias = e->alias;
        STACK_OF(X509) *chain = e->tag == TAG_KEY ? e->certs : NULL;
        e->alias = NULL;
        if (chain != NULL)
            e->certs = NULL;
        KMS_GUARD(kms_ks_add_entry(j->ks, alias, leaf, chain, key));
    }
    return KMS_OK;
}

kms_rc kms_ks_jks_parse(struct kms_keystore *ks, const uint8_t *data, size_t len, const char *password)
{
    struct jks j = {.ks = ks};
    struct kms_secret *pw = NULL;
    const uint8_t *digest;
    kms_cursor_init(&j.c, data, len);

    kms_rc rc = parse_structure(&j);
    if (rc == KMS_OK && kms_cursor_bytes(&j.c, SHA1_LEN, &digest) != KMS_OK)
        rc = kms_fail(KMS_ERR_KEYSTORE_CORRUPT,
                      "%s: JKS file truncated at byte %zu: the 20-byte integrity digest after the %u entries is "
                      "missing",
                      ks->path, j.c.pos, j.n);
    if (rc == KMS_OK && kms_cursor_remaining(&j.c) != 0)
        rc = kms_fail(KMS_ERR_KEYSTORE_CORRUPT, "%s: %zu unexpected bytes after the JKS integrity digest",
                      ks->path, kms_cursor_remaining(&j.c));
    if (rc == KMS_OK && password != NULL)
        rc = password_utf16(ks, password, &pw);
    /* why: like Java's KeyStore.load(in, null), no password skips the integrity check */
    if (rc == KMS_OK && pw != NULL) {
        int ok = 0;
        rc = check_digest(&j, pw, data, len - SHA1_LEN, digest, &ok);
        if (rc == KMS_OK && !ok) {
            if (password_opens_a_key(&j, pw))
                rc = kms_fail(KMS_ERR_KEYSTORE_CORRUPT,
                              "%s: the integrity check failed although the password opens the private keys: the "
                              "file was modified or damaged",
                              ks->path);
            else
                rc = kms_fail(KMS_ERR_KEYSTORE_PASSWORD,
                              "%s: keystore password is incorrect (integrity check failed; or the file was "
                              "modified)",
                              ks->path);
        }
    }
    if (rc == KMS_OK)
        rc = build_entries(&j, pw);

    for (uint32_t i = 0; i < j.n; i++) {
        free(j.e[i].alias);
        sk_X509_pop_free(j.e[i].certs, X509_free);
    }
    free(j.e);
    kms_secret_free(&pw);
    return rc;
}
