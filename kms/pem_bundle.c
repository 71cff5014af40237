/* PEM bundle: a sequence of PEM blocks, PRIVATE KEY (PKCS#8), ENCRYPTED
 * PRIVATE KEY (decrypted with the keystore password), RSA/EC PRIVATE KEY
 * (traditional, optionally Proc-Type encrypted) and CERTIFICATE.
 *
 * The text `openssl pkcs12 -nodes` writes before a block ("Bag Attributes",
 * "    friendlyName: NAME", "    localKeyID: 01 02 ...", Oracle's
 * trustedKeyUsage OID) names it and pairs keys with certificates; other text
 * between blocks is ignored, so `openssl x509 -text` output also works. Keys
 * are then paired with the certificate holding their public key, chains are
 * ordered by issuer, and a chain certificate may not come before its leaf
 * (kms_ks_assemble). Unnamed certificates outside every chain become
 * certificate entries named by their CN. */
#include "kms/keystore_int.h"

#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/pkcs12.h>
#include <stdlib.h>
#include <string.h>

#define MAX_PASSWORD 4096

struct pem {
    struct kms_keystore *ks;
    struct kms_ks_items items;
    const char *pw;
    const uint8_t *data;
    size_t len;
    const uint8_t *line_at; /* line_of's memo: line number of line_at */
    size_t line_no;
};

static const uint8_t *find(const uint8_t *p, const uint8_t *end, const char *needle)
{
    size_t m = strlen(needle);
    for (; (size_t)(end - p) >= m; p++)
        if (*p == (uint8_t)needle[0] && memcmp(p, needle, m) == 0)
            return p;
    return NULL;
}

/* Line number of at; amortised linear because callers mostly move forward. */
static size_t line_of(struct pem *pm, const uint8_t *at)
{
    if (pm->line_at == NULL || at < pm->line_at) {
        pm->line_at = pm->data;
        pm->line_no = 1;
    }
    for (; pm->line_at < at; pm->line_at++)
        pm->line_no += *pm->line_at == '\n';
    return pm->line_no;
}

static int hexval(uint8_t c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

/* Reads "friendlyName:", "localKeyID:" and trustedKeyUsage lines of the text
 * before a block. */
static kms_rc preamble(struct pem *pm, const uint8_t *p, const uint8_t *end, struct kms_ks_item *it)
{
    static const char fn[] = "friendlyName:", kid[] = "localKeyID:", tku[] = "2.16.840.1.113894.746875.1.1:";
    while (p < end) {
        const uint8_t *eol = p;
        while (eol < end && *eol != '\n')
            eol++;
        const uint8_t *s = p, *e = eol;
        while (s < e && (*s == ' ' || *s == '\t'))
            s++;
        while (e > s && (e[-1] == ' ' || e[-1] == '\t' || e[-1] == '\r'))
            e--;
        size_t n = (size_t)(e - s);
        if (n >= sizeof(fn) - 1 && memcmp(s, fn, sizeof(fn) - 1) == 0) {
            const uint8_t *v = s + sizeof(fn) - 1;
            while (v < e && *v == ' ')
                v++;
            if (it->name != NULL)
                return kms_fail(KMS_ERR_KEYSTORE_CORRUPT, "%s: two friendlyName lines before PEM block %zu",
                                pm->ks->path, it->pos);
            if ((it->name = kms_ks_alias_dup((const char *)v, (size_t)(e - v))) == NULL)
                return kms_fail(KMS_ERR_KEYSTORE_CORRUPT,
                                "%s: the friendlyName on line %zu is not usable as an alias (empty, longer than %u "
                                "bytes, not UTF-8 or has control characters)",
                                pm->ks->path, line_of(pm, s), KMS_KS_MAX_ALIAS);
        } else if (n >= sizeof(kid) - 1 && memcmp(s, kid, sizeof(kid) - 1) == 0) {
            size_t k = 0;
            for (const uint8_t *v = s + sizeof(kid) - 1; v < e;) {
                if (*v == ' ') {
                    v++;
                    continue;
                }
                if (e - v < 2 || hexval(v[0]) < 0 || hexval(v[1]) < 0 || (e - v > 2 && v[2] != ' '))
                    return kms_fail(KMS_ERR_KEYSTORE_CORRUPT,
                                    "%s: the localKeyID on line %zu is not a list of hex bytes", pm->ks->path,
                                    line_of(pm, s));
                if (k < KMS_KS_MAX_KEYID)
                    it->keyid[k] = (uint8_t)(hexval(v[0]) << 4 | hexval(v[1]));
                k++;
                v += 2;
            }
            it->keyid_len = k <= KMS_KS_MAX_KEYID ? k : 0;
        } else if (n >= sizeof(tku) - 1 && memcmp(s, tku, sizeof(tku) - 1) == 0) {
            it->trusted = 1;
        }
        p = eol + (eol < end);
    }
    return KMS_OK;
}

static int password_cb(char *buf, int size, int rwflag, void *u)
{
    (void)rwflag;
    const char *pw = u;
    size_t n = pw != NULL ? strlen(pw) : 0;
    if (pw == NULL || n > (size_t)size)
        return -1;
    memcpy(buf, pw, n);
    return (int)n;
}

static kms_rc bad_block(struct pem *pm, struct kms_ks_item *it, size_t line, const char *name, const char *why)
{
    ERR_clear_error();
    return kms_fail(KMS_ERR_KEYSTORE_CORRUPT, "%s: PEM block %zu (%s, line %zu) %s", pm->ks->path, it->pos, name,
                    line, why);
}

static kms_rc need_password(struct pem *pm, struct kms_ks_item *it, size_t line)
{
    ERR_clear_error();
    if (pm->pw == NULL)
        return kms_fail(KMS_ERR_KEYSTORE_PASSWORD,
                        "%s: the private key in PEM block %zu (line %zu) is encrypted; a keystore password is needed",
                        pm->ks->path, it->pos, line);
    return kms_fail(KMS_ERR_KEYSTORE_PASSWORD,
                    "%s: keystore password is incorrect (cannot decrypt the private key in PEM block %zu, line %zu)",
                    pm->ks->path, it->pos, line);
}

static kms_rc decode_block(struct pem *pm, struct kms_ks_item *it, size_t line, const char *name, const char *header,
                           uint8_t *der, long len)
{
    const uint8_t *p = der;
    if (strcmp(name, PEM_STRING_X509) == 0 || strcmp(name, PEM_STRING_X509_OLD) == 0) {
        it->cert = d2i_X509(NULL, &p, len);
        if (it->cert == NULL || p != der + len)
            return bad_block(pm, it, line, name, "is not a valid certificate");
    } else if (strcmp(name, PEM_STRING_PKCS8INF) == 0) {
        PKCS8_PRIV_KEY_INFO *p8 = d2i_PKCS8_PRIV_KEY_INFO(NULL, &p, len);
        if (p8 != NULL && p == der + len)
            it->key = EVP_PKCS82PKEY(p8);
        PKCS8_PRIV_KEY_INFO_free(p8);
        if (it->key == NULL)
            return bad_block(pm, it, line, name, "is not a valid PKCS#8 private key");
    } else if (strcmp(name, PEM_STRING_PKCS8) == 0) {
        X509_SIG *sig = d2i_X509_SIG(NULL, &p, len);
        if (sig == NULL || p != der + len) {
            X509_SIG_free(sig);
            return bad_block(pm, it, line, name, "is not a valid encrypted PKCS#8 private key");
        }
        const X509_ALGOR *alg = NULL;
        X509_SIG_get0(sig, &alg, NULL);
        kms_rc rc = kms_ks_pbe_check(pm->ks, alg, "encrypted private keys");
        if (rc != KMS_OK) {
            X509_SIG_free(sig);
            return rc;
        }
        PKCS8_PRIV_KEY_INFO *p8 = pm->pw != NULL ? PKCS8_decrypt(sig, pm->pw, (int)strlen(pm->pw)) : NULL;
        X509_SIG_free(sig);
        if (p8 == NULL)
            return need_password(pm, it, line);
        it->key = EVP_PKCS82PKEY(p8);
        PKCS8_PRIV_KEY_INFO_free(p8);
        if (it->key == NULL)
            return bad_block(pm, it, line, name, "decrypts to an unusable private key");
    } else if (strcmp(name, PEM_STRING_RSA) == 0 || strcmp(name, PEM_STRING_ECPRIVATEKEY) == 0) {
        EVP_CIPHER_INFO ci;
        int encrypted = 0;
        if (header != NULL && header[0] != '\0') {
            if (!PEM_get_EVP_CIPHER_INFO((char *)header, &ci))
                return bad_block(pm, it, line, name, "has an unreadable Proc-Type/DEK-Info header");
            if (ci.cipher != NULL) {
                encrypted = 1;
                if (!PEM_do_header(&ci, der, &len, password_cb, (void *)pm->pw))
                    return need_password(pm, it, line);
            }
        }
        int type = strcmp(name, PEM_STRING_RSA) == 0 ? EVP_PKEY_RSA : EVP_PKEY_EC;
        p = der;
        it->key = d2i_PrivateKey(type, NULL, &p, len);
        if (it->key == NULL || p != der + len) {
            EVP_PKEY_free(it->key);
            it->key = NULL;
            if (encrypted) /* why: a wrong password can pass the padding check by chance */
                return need_password(pm, it, line);
            return bad_block(pm, it, line, name, "is not a valid private key");
        }
    } else {
        ERR_clear_error();
        return kms_fail(KMS_ERR_KEYSTORE_FORMAT,
                        "%s: PEM block %zu (line %zu) is a '%s'; a keystore bundle holds only PRIVATE KEY, "
                        "ENCRYPTED PRIVATE KEY, RSA/EC PRIVATE KEY and CERTIFICATE blocks",
                        pm->ks->path, it->pos, line, name);
    }
    return KMS_OK;
}

/* Reads the block that starts at begin (its BEGIN line). */
static kms_rc one_block(struct pem *pm, const uint8_t *begin, const uint8_t **next, struct kms_ks_item *it)
{
    size_t line = line_of(pm, begin);
    const uint8_t *eol = begin, *end = pm->data + pm->len;
    while (eol < end && *eol != '\n')
        eol++;
    if (eol > begin && eol[-1] == '\r')
        eol--;
    /* why: PEM_read_bio_ex would silently skip a malformed BEGIN line */
    if (eol - begin < 16 || memcmp(eol - 5, "-----", 5) != 0)
        return kms_fail(KMS_ERR_KEYSTORE_CORRUPT, "%s: line %zu has a malformed or truncated PEM BEGIN line",
                        pm->ks->path, line);
    BIO *bio = BIO_new_mem_buf(begin, (int)(pm->data + pm->len - begin));
    char *name = NULL, *header = NULL;
    unsigned char *der = NULL;
    long len = 0;
    kms_rc rc = KMS_OK;
    if (bio == NULL)
        return kms_fail(KMS_ERR_NO_MEMORY, "%s: out of memory", pm->ks->path);
    /* why: PEM_FLAG_SECURE keeps decoded key bytes on the secure heap */
    if (!PEM_read_bio_ex(bio, &name, &header, &der, &len, PEM_FLAG_SECURE | PEM_FLAG_EAY_COMPATIBLE)) {
        ERR_clear_error();
        BIO_free(bio);
        return kms_fail(KMS_ERR_KEYSTORE_CORRUPT,
                        "%s: PEM block %zu starting on line %zu is damaged or truncated (bad base64 or END line)",
                        pm->ks->path, it->pos, line);
    }
    char *rest;
    long left = BIO_get_mem_data(bio, &rest);
    *next = pm->data + pm->len - (left > 0 ? (size_t)left : 0);
    if (strcmp(name, PEM_STRING_ECPARAMETERS) == 0)
        it->pos = 0; /* why: openssl ecparam -genkey writes these before the key; nothing to keep */
    else
        rc = decode_block(pm, it, line, name, header, der, len);
    OPENSSL_secure_free(name);
    OPENSSL_secure_free(header);
    OPENSSL_secure_clear_free(der, len > 0 ? (size_t)len : 0);
    BIO_free(bio);
    return rc;
}

kms_rc kms_ks_pem_parse(struct kms_keystore *ks, const uint8_t *data, size_t len, const char *password)
{
    struct pem pm = {.ks = ks, .items = {.unit = "PEM block"}, .pw = password, .data = data, .len = len};
    const uint8_t *p = data, *end = data + len;
    kms_rc rc = KMS_OK;
    size_t blocks = 0;

    const uint8_t *nul = memchr(data, '\0', len);
    if (nul != NULL)
        return kms_fail(KMS_ERR_KEYSTORE_CORRUPT, "%s: the PEM text contains a NUL byte at offset %zu (line %zu)",
                        ks->path, (size_t)(nul - data), line_of(&pm, nul));
    if (len > (size_t)INT32_MAX)
        return kms_fail(KMS_ERR_IO, "%s: file too large", ks->path);
    if (password != NULL && strlen(password) > MAX_PASSWORD)
        return kms_fail(KMS_ERR_KEYSTORE_PASSWORD, "%s: the keystore password is longer than %d bytes", ks->path,
                        MAX_PASSWORD);

    (void)kms_ks_legacy_provider(); /* why: PBES1 RC2 PKCS#8 keys need it */
    const uint8_t *begin;
    while (rc == KMS_OK && (begin = find(p, end, "-----BEGIN ")) != NULL) {
        struct kms_ks_item it = {.pos = ++blocks};
        rc = preamble(&pm, p, begin, &it);
        if (rc == KMS_OK)
            rc = one_block(&pm, begin, &p, &it);
        if (rc != KMS_OK || it.pos == 0) {
            X509_free(it.cert);
            EVP_PKEY_free(it.key);
            free(it.name);
            continue;
        }
        rc = kms_ks_items_add(ks, &pm.items, &it);
    }
    if (rc == KMS_OK && pm.items.n == 0)
        rc = kms_fail(KMS_ERR_KEYSTORE_FORMAT, "%s: the PEM file holds no private key or certificate", ks->path);
    if (rc == KMS_OK)
        rc = kms_ks_assemble(ks, &pm.items, 1, 1);
    kms_ks_items_free(&pm.items);
    return rc;
}
