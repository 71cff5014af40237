/* PKCS#12 (RFC 7292) as keytool and openssl write it: modern (PBES2 AES-256-CBC,
 * PBKDF2, HMAC-SHA256 MAC: Java 17 and OpenSSL 3 defaults) and legacy
 * (RC2-40 / 3DES, SHA-1 MAC), the latter through OpenSSL's legacy provider.
 *
 * The safe bags are walked here rather than by PKCS12_parse so that
 * friendlyName becomes the alias and localKeyId pairs keys with their
 * certificates; kms_ks_assemble then builds the entries. keytool marks its
 * certificate entries with Oracle's trustedKeyUsage attribute
 * (2.16.840.1.113894.746875.1.1). */
#include "kms/keystore_int.h"

#include <openssl/err.h>
#include <openssl/pkcs12.h>
#include <openssl/pkcs7.h>
#include <stdlib.h>
#include <string.h>

#define MAX_NESTING 4

struct p12 {
    struct kms_keystore *ks;
    struct kms_ks_items items;
    const char *pw;
    int pwlen;
    int mac_verified;
    size_t bags;
    ASN1_OBJECT *trusted_oid;
};

static int is_legacy_pbe(const X509_ALGOR *alg)
{
    const ASN1_OBJECT *oid = NULL;
    if (alg == NULL)
        return 0;
    X509_ALGOR_get0(&oid, NULL, NULL, alg);
    switch (OBJ_obj2nid(oid)) {
    case NID_pbe_WithSHA1And40BitRC2_CBC:
    case NID_pbe_WithSHA1And128BitRC2_CBC:
    case NID_pbe_WithSHA1And40BitRC4:
    case NID_pbe_WithSHA1And128BitRC4:
        return 1;
    default:
        return 0;
    }
}

static kms_rc legacy_missing(struct p12 *p, const char *what)
{
    return kms_fail(KMS_ERR_KEYSTORE_FORMAT,
                    "%s: the %s use legacy RC2/RC4 encryption and OpenSSL's legacy provider could not be loaded "
                    "(install it, set OPENSSL_MODULES, or convert the keystore with keytool -importkeystore)",
                    p->ks->path, what);
}

/* A password failure that the MAC did not already rule out. */
static kms_rc decrypt_failed(struct p12 *p, const char *what)
{
    if (p->mac_verified) {
        kms_rc rc = kms_fail(KMS_ERR_KEYSTORE_CORRUPT, "%s: the %s cannot be decrypted although the MAC is valid",
                             p->ks->path, what);
        kms_error_add_openssl();
        return rc;
    }
    ERR_clear_error();
    return kms_fail(KMS_ERR_KEYSTORE_PASSWORD, "%s: keystore password is incorrect (cannot decrypt the %s)",
                    p->ks->path, what);
}

/* BMPString (UTF-16BE) to UTF-8; a single trailing U+0000, which some
 * writers add, is dropped. NULL when invalid or with an embedded NUL. */
static char *bmp_to_utf8(const uint8_t *s, size_t n)
{
    if (n % 2 != 0)
        return NULL;
    if (n >= 2 && s[n - 2] == 0 && s[n - 1] == 0)
        n -= 2;
    char *out = malloc(n / 2 * 3 + 1);
    size_t o = 0;
    if (out == NULL)
        return NULL;
    for (size_t i = 0; i < n; i += 2) {
        uint32_t u = (uint32_t)s[i] << 8 | s[i + 1];
        if (u == 0 || (u >= 0xDC00 && u <= 0xDFFF))
            goto bad;
        if (u >= 0xD800 && u <= 0xDBFF) {
            if (i + 3 >= n)
                goto bad;
            uint32_t lo = (uint32_t)s[i + 2] << 8 | s[i + 3];
            if (lo < 0xDC00 || lo > 0xDFFF)
                goto bad;
            u = 0x10000u + ((u - 0xD800u) << 10) + (lo - 0xDC00u);
            i += 2;
        }
        if (u < 0x80) {
            out[o++] = (char)u;
        } else if (u < 0x800) {
            out[o++] = (char)(0xC0 | (u >> 6));
            out[o++] = (char)(0x80 | (u & 0x3F));
        } else if (u < 0x10000) {
            out[o++] = (char)(0xE0 | (u >> 12));
            out[o++] = (char)(0x80 | ((u >> 6) & 0x3F));
            out[o++] = (char)(0x80 | (u & 0x3F));
        } else {
            out[o++] = (char)(0xF0 | (u >> 18));
            out[o++] = (char)(0x80 | ((u >> 12) & 0x3F));
            out[o++] = (char)(0x80 | ((u >> 6) & 0x3F));
            out[o++] = (char)(0x80 | (u & 0x3F));
        }
    }
    out[o] = '\0';
    return out;
bad:
    free(out);
    return NULL;
}

static kms_rc bag_attributes(struct p12 *p, const PKCS12_SAFEBAG *bag, struct kms_ks_item *it)
{
    const ASN1_TYPE *fn = PKCS12_SAFEBAG_get0_attr(bag, NID_friendlyName);
    if (fn != NULL) {
        if (fn->type != V_ASN1_BMPSTRING ||
            (it->name = bmp_to_utf8(ASN1_STRING_get0_data(fn->value.bmpstring),
                                    (size_t)ASN1_STRING_length(fn->value.bmpstring))) == NULL)
            return kms_fail(KMS_ERR_KEYSTORE_CORRUPT,
                            "%s: the friendlyName of PKCS#12 bag %zu is not a valid BMPString (or contains NUL)",
                            p->ks->path, it->pos);
    }
    const ASN1_TYPE *id = PKCS12_SAFEBAG_get0_attr(bag, NID_localKeyID);
    if (id != NULL && id->type == V_ASN1_OCTET_STRING) {
        int n = ASN1_STRING_length(id->value.octet_string);
        if (n > 0 && (size_t)n <= KMS_KS_MAX_KEYID) {
            memcpy(it->keyid, ASN1_STRING_get0_data(id->value.octet_string), (size_t)n);
            it->keyid_len = (size_t)n;
        }
    }
    const STACK_OF(X509_ATTRIBUTE) *attrs = PKCS12_SAFEBAG_get0_attrs(bag);
    for (int i = 0; i < sk_X509_ATTRIBUTE_num(attrs); i++)
        if (OBJ_cmp(X509_ATTRIBUTE_get0_object(sk_X509_ATTRIBUTE_value(attrs, i)), p->trusted_oid) == 0)
            it->trusted = 1;
    return KMS_OK;
}

static kms_rc key_from_p8(struct p12 *p, const PKCS8_PRIV_KEY_INFO *p8, struct kms_ks_item *it)
{
    it->key = EVP_PKCS82PKEY(p8);
    if (it->key == NULL) {
        kms_rc rc = kms_fail(KMS_ERR_KEYSTORE_CORRUPT, "%s: the private key in PKCS#12 bag %zu is not usable",
                             p->ks->path, it->pos);
        kms_error_add_openssl();
        return rc;
    }
    return KMS_OK;
}

static kms_rc walk_bags(struct p12 *p, const STACK_OF(PKCS12_SAFEBAG) *bags, int depth);

/* A secret bag as keytool -genseckey writes it: a pkcs8ShroudedKeyBag whose
 * PrivateKeyInfo holds the key's algorithm and its raw bytes. Other secret
 * types are skipped (they hold nothing kmsd uses). */
static kms_rc secret_bag(struct p12 *p, const PKCS12_SAFEBAG *bag, struct kms_ks_item *it)
{
    if (PKCS12_SAFEBAG_get_bag_nid(bag) != NID_pkcs8ShroudedKeyBag)
        return KMS_OK;
    const ASN1_TYPE *v = PKCS12_SAFEBAG_get0_bag_obj(bag);
    if (v == NULL || v->type != V_ASN1_OCTET_STRING)
        return kms_fail(KMS_ERR_KEYSTORE_CORRUPT, "%s: the secret key in PKCS#12 bag %zu is damaged", p->ks->path,
                        it->pos);
    const unsigned char *der = ASN1_STRING_get0_data(v->value.octet_string);
    X509_SIG *sig = d2i_X509_SIG(NULL, &der, ASN1_STRING_length(v->value.octet_string));
    const X509_ALGOR *alg = NULL;
    if (sig != NULL)
        X509_SIG_get0(sig, &alg, NULL);
    kms_rc rc = sig == NULL ? kms_fail(KMS_ERR_KEYSTORE_CORRUPT, "%s: the secret key in PKCS#12 bag %zu is damaged",
                                       p->ks->path, it->pos)
                            : kms_ks_pbe_check(p->ks, alg, "secret key");
    PKCS8_PRIV_KEY_INFO *p8 = NULL;
    if (rc == KMS_OK && (p8 = PKCS8_decrypt(sig, p->pw, p->pwlen)) == NULL)
        rc = decrypt_failed(p, "secret key");
    X509_SIG_free(sig);
    const ASN1_OBJECT *obj = NULL;
    const unsigned char *raw = NULL;
    int rawlen = 0;
    if (rc == KMS_OK && (PKCS8_pkey_get0(&obj, &raw, &rawlen, NULL, p8) != 1 || rawlen <= 0 || rawlen > 1024))
        rc = kms_fail(KMS_ERR_KEYSTORE_CORRUPT, "%s: the secret key in PKCS#12 bag %zu is empty or too long",
                      p->ks->path, it->pos);
    struct kms_secret *key = NULL;
    ASN1_OBJECT *alg_dup = NULL;
    if (rc == KMS_OK)
        rc = kms_secret_from(raw, (size_t)rawlen, &key);
    if (rc == KMS_OK && (alg_dup = OBJ_dup(obj)) == NULL)
        rc = KMS_ERR_NO_MEMORY;
    PKCS8_PRIV_KEY_INFO_free(p8); /* why: its ASN.1 free callback wipes the key octets */
    if (rc == KMS_OK)
        rc = bag_attributes(p, bag, it);
    if (rc != KMS_OK) {
        kms_secret_free(&key);
        ASN1_OBJECT_free(alg_dup);
        free(it->name);
        it->name = NULL;
        return rc;
    }
    char *alias = it->name;
    it->name = NULL;
    return kms_ks_add_secret(p->ks, alias, alg_dup, key);
}

static kms_rc one_bag(struct p12 *p, const PKCS12_SAFEBAG *bag, int depth)
{
    struct kms_ks_item it = {.pos = ++p->bags};
    kms_rc rc = KMS_OK;
    switch (PKCS12_SAFEBAG_get_nid(bag)) {
    case NID_keyBag:
        rc = key_from_p8(p, PKCS12_SAFEBAG_get0_p8inf(bag), &it);
        break;
    case NID_pkcs8ShroudedKeyBag: {
        const X509_SIG *sig = PKCS12_SAFEBAG_get0_pkcs8(bag);
        const X509_ALGOR *alg = NULL;
        if (sig != NULL)
            X509_SIG_get0(sig, &alg, NULL);
        if (is_legacy_pbe(alg) && !kms_ks_legacy_provider())
            return legacy_missing(p, "private keys");
        PKCS8_PRIV_KEY_INFO *p8 = PKCS12_decrypt_skey(bag, p->pw, p->pwlen);
        if (p8 == NULL)
            return decrypt_failed(p, "private key");
        rc = key_from_p8(p, p8, &it);
        PKCS8_PRIV_KEY_INFO_free(p8); /* why: its ASN.1 free callback wipes the key octets */
        break;
    }
    case NID_certBag:
        if (PKCS12_SAFEBAG_get_bag_nid(bag) != NID_x509Certificate)
            return kms_fail(KMS_ERR_KEYSTORE_CORRUPT,
                            "%s: PKCS#12 bag %zu holds a certificate type other than X.509", p->ks->path, it.pos);
        if ((it.cert = PKCS12_SAFEBAG_get1_cert(bag)) == NULL) {
            ERR_clear_error();
            return kms_fail(KMS_ERR_KEYSTORE_CORRUPT, "%s: the certificate in PKCS#12 bag %zu is damaged",
                            p->ks->path, it.pos);
        }
        break;
    case NID_safeContentsBag:
        if (depth >= MAX_NESTING)
            return kms_fail(KMS_ERR_KEYSTORE_CORRUPT, "%s: PKCS#12 safe contents nested more than %d deep",
                            p->ks->path, MAX_NESTING);
        return walk_bags(p, PKCS12_SAFEBAG_get0_safes(bag), depth + 1);
    case NID_secretBag:
        return secret_bag(p, bag, &it);
    default:
        return KMS_OK; /* why: CRL bags hold nothing kmsd uses */
    }
    if (rc == KMS_OK)
        rc = bag_attributes(p, bag, &it);
    if (rc != KMS_OK) {
        X509_free(it.cert);
        EVP_PKEY_free(it.key);
        free(it.name);
        return rc;
    }
    return kms_ks_items_add(p->ks, &p->items, &it);
}

static kms_rc walk_bags(struct p12 *p, const STACK_OF(PKCS12_SAFEBAG) *bags, int depth)
{
    for (int i = 0; i < sk_PKCS12_SAFEBAG_num(bags); i++)
        KMS_GUARD(one_bag(p, sk_PKCS12_SAFEBAG_value(bags, i), depth));
    return KMS_OK;
}

static const X509_ALGOR *encdata_alg(PKCS7 *p7)
{
    if (p7->d.encrypted == NULL || p7->d.encrypted->enc_data == NULL)
        return NULL;
    return p7->d.encrypted->enc_data->algorithm;
}

static kms_rc walk_authsafes(struct p12 *p, STACK_OF(PKCS7) *asafes)
{
    for (int i = 0; i < sk_PKCS7_num(asafes); i++) {
        PKCS7 *p7 = sk_PKCS7_value(asafes, i);
        STACK_OF(PKCS12_SAFEBAG) *bags = NULL;
        switch (OBJ_obj2nid(p7->type)) {
        case NID_pkcs7_data:
            bags = PKCS12_unpack_p7data(p7);
            if (bags == NULL) {
                ERR_clear_error();
                return kms_fail(KMS_ERR_KEYSTORE_CORRUPT, "%s: PKCS#12 content %d cannot be parsed", p->ks->path,
                                i + 1);
            }
            break;
        case NID_pkcs7_encrypted:
            if (encdata_alg(p7) == NULL)
                return kms_fail(KMS_ERR_KEYSTORE_CORRUPT, "%s: encrypted PKCS#12 content %d is empty",
                                p->ks->path, i + 1);
            if (is_legacy_pbe(encdata_alg(p7)) && !kms_ks_legacy_provider())
                return legacy_missing(p, "certificates");
            bags = PKCS12_unpack_p7encdata(p7, p->pw, p->pwlen);
            if (bags == NULL)
                return decrypt_failed(p, "certificates");
            break;
        default:
            return kms_fail(KMS_ERR_KEYSTORE_CORRUPT,
                            "%s: PKCS#12 content %d is public-key encrypted or of an unknown type (only password "
                            "protection is supported)",
                            p->ks->path, i + 1);
        }
        kms_rc rc = walk_bags(p, bags, 0);
        sk_PKCS12_SAFEBAG_pop_free(bags, PKCS12_SAFEBAG_free);
        KMS_GUARD(rc);
    }
    return KMS_OK;
}

/* After a failed MAC: does the password decrypt everything that is encrypted?
 * Then the file, not the password, is wrong. */
static int password_decrypts(PKCS12 *p12, const char *pw, int pwlen)
{
    STACK_OF(PKCS7) *asafes = PKCS12_unpack_authsafes(p12);
    int encrypted = 0, ok = asafes != NULL;
    for (int i = 0; ok && i < sk_PKCS7_num(asafes); i++) {
        PKCS7 *p7 = sk_PKCS7_value(asafes, i);
        STACK_OF(PKCS12_SAFEBAG) *bags = NULL;
        if (OBJ_obj2nid(p7->type) == NID_pkcs7_encrypted && encdata_alg(p7) != NULL) {
            encrypted = 1;
            bags = PKCS12_unpack_p7encdata(p7, pw, pwlen);
        } else if (OBJ_obj2nid(p7->type) == NID_pkcs7_data) {
            bags = PKCS12_unpack_p7data(p7);
        }
        ok = bags != NULL;
        for (int b = 0; ok && b < sk_PKCS12_SAFEBAG_num(bags); b++) {
            const PKCS12_SAFEBAG *bag = sk_PKCS12_SAFEBAG_value(bags, b);
            if (PKCS12_SAFEBAG_get_nid(bag) == NID_pkcs8ShroudedKeyBag) {
                PKCS8_PRIV_KEY_INFO *p8 = PKCS12_decrypt_skey(bag, pw, pwlen);
                encrypted = 1;
                ok = p8 != NULL;
                PKCS8_PRIV_KEY_INFO_free(p8);
            }
        }
        sk_PKCS12_SAFEBAG_pop_free(bags, PKCS12_SAFEBAG_free);
    }
    sk_PKCS7_pop_free(asafes, PKCS7_free);
    ERR_clear_error();
    return ok && encrypted;
}

/* Bounds every key derivation before anything runs one (MAC, probe, walk). */
static kms_rc check_kdfs(struct p12 *p, STACK_OF(PKCS7) *asafes, PKCS12 *p12)
{
    if (PKCS12_mac_present(p12)) {
        const ASN1_INTEGER *iter = NULL;
        PKCS12_get0_mac(NULL, NULL, NULL, &iter, p12);
        long n = iter != NULL ? ASN1_INTEGER_get(iter) : 1;
        if (n < 1 || n > KMS_KS_MAX_ITERATIONS)
            return kms_fail(KMS_ERR_KEYSTORE_CORRUPT, "%s: the PKCS#12 MAC asks for %ld iterations (limit %ld)",
                            p->ks->path, n, KMS_KS_MAX_ITERATIONS);
    }
    for (int i = 0; i < sk_PKCS7_num(asafes); i++) {
        PKCS7 *p7 = sk_PKCS7_value(asafes, i);
        if (OBJ_obj2nid(p7->type) == NID_pkcs7_encrypted) {
            KMS_GUARD(kms_ks_pbe_check(p->ks, encdata_alg(p7), "encrypted certificates"));
        } else if (OBJ_obj2nid(p7->type) == NID_pkcs7_data) {
            STACK_OF(PKCS12_SAFEBAG) *bags = PKCS12_unpack_p7data(p7);
            kms_rc rc = KMS_OK;
            for (int b = 0; rc == KMS_OK && b < sk_PKCS12_SAFEBAG_num(bags); b++) {
                const PKCS12_SAFEBAG *bag = sk_PKCS12_SAFEBAG_value(bags, b);
                if (PKCS12_SAFEBAG_get_nid(bag) == NID_pkcs8ShroudedKeyBag) {
                    const X509_ALGOR *alg = NULL;
                    const X509_SIG *sig = PKCS12_SAFEBAG_get0_pkcs8(bag);
                    if (sig != NULL)
                        X509_SIG_get0(sig, &alg, NULL);
                    rc = kms_ks_pbe_check(p->ks, alg, "private keys");
                }
            }
            sk_PKCS12_SAFEBAG_pop_free(bags, PKCS12_SAFEBAG_free);
            ERR_clear_error();
            KMS_GUARD(rc);
        }
    }
    return KMS_OK;
}

static kms_rc check_mac(struct p12 *p, PKCS12 *p12, const char *password)
{
    p->pw = password != NULL ? password : "";
    p->pwlen = (int)strlen(p->pw);
    if (!PKCS12_mac_present(p12))
        return KMS_OK; /* why: e.g. a password-less truststore; encrypted parts still need the password */

    const X509_ALGOR *macalg = NULL;
    PKCS12_get0_mac(NULL, &macalg, NULL, NULL, p12);
    const ASN1_OBJECT *oid = NULL;
    if (macalg != NULL)
        X509_ALGOR_get0(&oid, NULL, NULL, macalg);
    EVP_MD *md = oid != NULL ? EVP_MD_fetch(NULL, OBJ_nid2sn(OBJ_obj2nid(oid)), NULL) : NULL;
    if (md == NULL) {
        char txt[80] = "?";
        if (oid != NULL)
            (void)OBJ_obj2txt(txt, sizeof(txt), oid, 0);
        ERR_clear_error();
        return kms_fail(KMS_ERR_KEYSTORE_FORMAT, "%s: the PKCS#12 integrity MAC uses %s, which is not supported",
                        p->ks->path, txt);
    }
    EVP_MD_free(md);

    if (PKCS12_verify_mac(p12, p->pw, p->pwlen)) {
        p->mac_verified = 1;
        return KMS_OK;
    }
    /* why: an empty password is either an empty BMPString or none at all,
     * depending on the writer; OpenSSL's own tool tries both. */
    if (p->pwlen == 0 && PKCS12_verify_mac(p12, NULL, 0)) {
        p->pw = NULL;
        p->mac_verified = 1;
        return KMS_OK;
    }
    ERR_clear_error();
    if (password == NULL)
        return kms_fail(KMS_ERR_KEYSTORE_PASSWORD,
                        "%s: a keystore password is needed (the MAC does not verify without one)", p->ks->path);
    if (p->pwlen > 0 && password_decrypts(p12, p->pw, p->pwlen))
        return kms_fail(KMS_ERR_KEYSTORE_CORRUPT,
                        "%s: the MAC verification failed although the password decrypts the contents: the file "
                        "was modified or damaged",
                        p->ks->path);
    return kms_fail(KMS_ERR_KEYSTORE_PASSWORD,
                    "%s: keystore password is incorrect (MAC verification failed; or the file was modified)",
                    p->ks->path);
}

/* Total length of the DER element at d[0..len), or 0 when the header is bad
 * or indefinite. */
static size_t der_total(const uint8_t *d, size_t len)
{
    if (len < 2)
        return 0;
    if (!(d[1] & 0x80))
        return 2 + (size_t)d[1];
    size_t n = d[1] & 0x7Fu, v = 0;
    if (n == 0 || n > 4 || len < 2 + n)
        return 0;
    for (size_t i = 0; i < n; i++)
        v = v << 8 | d[2 + i];
    return 2 + n + v;
}

kms_rc kms_ks_p12_parse(struct kms_keystore *ks, const uint8_t *data, size_t len, const char *password)
{
    struct p12 p = {.ks = ks, .items = {.unit = "PKCS#12 bag"}};
    size_t total = der_total(data, len);
    if (total > len)
        return kms_fail(KMS_ERR_KEYSTORE_CORRUPT, "%s: PKCS#12 file truncated: its DER header announces %zu bytes, "
                        "the file has %zu",
                        ks->path, total, len);
    if (total != 0 && total < len)
        return kms_fail(KMS_ERR_KEYSTORE_CORRUPT, "%s: %zu unexpected bytes after the PKCS#12 structure", ks->path,
                        len - total);

    (void)kms_ks_legacy_provider();
    const uint8_t *q = data;
    PKCS12 *p12 = d2i_PKCS12(NULL, &q, (long)len);
    if (p12 == NULL || q != data + len) {
        PKCS12_free(p12);
        kms_rc rc = kms_fail(KMS_ERR_KEYSTORE_CORRUPT, "%s: the PKCS#12 structure is damaged", ks->path);
        kms_error_add_openssl();
        return rc;
    }
    kms_rc rc = KMS_OK;
    STACK_OF(PKCS7) *asafes = NULL;
    p.trusted_oid = OBJ_txt2obj("2.16.840.1.113894.746875.1.1", 1);
    if (p.trusted_oid == NULL)
        rc = kms_fail(KMS_ERR_NO_MEMORY, "%s: out of memory", ks->path);
    if (rc == KMS_OK && (asafes = PKCS12_unpack_authsafes(p12)) == NULL) {
        ERR_clear_error();
        rc = kms_fail(KMS_ERR_KEYSTORE_CORRUPT, "%s: the PKCS#12 contents cannot be parsed", ks->path);
    }
    if (rc == KMS_OK)
        rc = check_kdfs(&p, asafes, p12);
    if (rc == KMS_OK)
        rc = check_mac(&p, p12, password);
    if (rc == KMS_OK)
        rc = walk_authsafes(&p, asafes);
    if (rc == KMS_OK)
        rc = kms_ks_assemble(ks, &p.items, 0, 0);
    kms_ks_items_free(&p.items);
    sk_PKCS7_pop_free(asafes, PKCS7_free);
    ASN1_OBJECT_free(p.trusted_oid);
    PKCS12_free(p12);
    ERR_clear_error();
    return rc;
}
