/* Keystore reader (SPEC §6): file loading, format detection by content, the
 * entry table and the pairing of keys with certificates shared by the PKCS#12
 * and PEM parsers. The formats themselves are in jks.c, p12.c, pem_bundle.c.
 *
 * Aliases are compared with strcasecmp: ASCII letters only fold, which is
 * what keytool's JKS lower-casing does for the aliases operators use; other
 * UTF-8 bytes must match exactly. */
#include "kms/keystore.h"

#include <errno.h>
#include <fcntl.h>
#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/provider.h>
#include <openssl/x509v3.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/file.h"
#include "common/secret.h"
#include "common/utf8.h"
#include "kms/keystore_int.h"

#define JKS_MAGIC 0xFEEDFEEDu
#define JCEKS_MAGIC 0xCECECECEu

enum { ROLE_NONE, ROLE_LEAF, ROLE_ENTRY, ROLE_CHAIN };

/* ---- providers ---------------------------------------------------------- */

static pthread_once_t provider_once = PTHREAD_ONCE_INIT;
static OSSL_PROVIDER *provider_legacy, *provider_default;

/* why: OPENSSL_cleanup frees the provider store but not the reference that
 * OSSL_PROVIDER_load handed us; drop it first (atexit runs in reverse order,
 * and OpenSSL registered its cleanup before we could load anything). */
static void unload_providers(void)
{
    if (provider_legacy != NULL)
        (void)OSSL_PROVIDER_unload(provider_legacy);
    if (provider_default != NULL)
        (void)OSSL_PROVIDER_unload(provider_default);
    provider_legacy = provider_default = NULL;
}

static void load_providers(void)
{
    /* why: loading any provider explicitly stops OpenSSL from auto-loading
     * "default", so load it too. The providers stay loaded for the process. */
    provider_default = OSSL_PROVIDER_load(NULL, "default");
    provider_legacy = OSSL_PROVIDER_load(NULL, "legacy");
    (void)atexit(unload_providers);
    ERR_clear_error(); /* why: a missing legacy module is reported per file, when needed */
}

int kms_ks_legacy_provider(void)
{
    (void)pthread_once(&provider_once, load_providers);
    return provider_legacy != NULL;
}

/* ---- password-based encryption parameters ------------------------------ */

kms_rc kms_ks_pbe_check(const struct kms_keystore *ks, const X509_ALGOR *alg, const char *what)
{
    long iter = -1;
    if (alg == NULL || alg->parameter == NULL)
        return kms_fail(KMS_ERR_KEYSTORE_CORRUPT, "%s: the %s have no encryption parameters", ks->path, what);
    if (OBJ_obj2nid(alg->algorithm) == NID_pbes2) {
        PBE2PARAM *p2 = ASN1_TYPE_unpack_sequence(ASN1_ITEM_rptr(PBE2PARAM), alg->parameter);
        if (p2 != NULL && p2->keyfunc != NULL && OBJ_obj2nid(p2->keyfunc->algorithm) != NID_id_pbkdf2) {
            PBE2PARAM_free(p2);
            ERR_clear_error();
            return kms_fail(KMS_ERR_KEYSTORE_FORMAT, "%s: the %s use a key derivation other than PBKDF2", ks->path,
                            what);
        }
        PBKDF2PARAM *kdf = NULL;
        if (p2 != NULL && p2->keyfunc != NULL && p2->keyfunc->parameter != NULL)
            kdf = ASN1_TYPE_unpack_sequence(ASN1_ITEM_rptr(PBKDF2PARAM), p2->keyfunc->parameter);
        if (kdf != NULL && kdf->iter != NULL)
            iter = ASN1_INTEGER_get(kdf->iter);
        PBKDF2PARAM_free(kdf);
        PBE2PARAM_free(p2);
    } else {
        PBEPARAM *pbe = ASN1_TYPE_unpack_sequence(ASN1_ITEM_rptr(PBEPARAM), alg->parameter);
        if (pbe != NULL && pbe->iter != NULL)
            iter = ASN1_INTEGER_get(pbe->iter);
        PBEPARAM_free(pbe);
    }
    ERR_clear_error();
    if (iter < 1)
        return kms_fail(KMS_ERR_KEYSTORE_CORRUPT, "%s: the encryption parameters of the %s are unreadable",
                        ks->path, what);
    if (iter > KMS_KS_MAX_ITERATIONS)
        return kms_fail(KMS_ERR_KEYSTORE_CORRUPT,
                        "%s: the %s ask for %ld key-derivation iterations (limit %ld); refusing to spend that long",
                        ks->path, what, iter, KMS_KS_MAX_ITERATIONS);
    return KMS_OK;
}

/* ---- aliases and names -------------------------------------------------- */

static int alias_ok(const char *s, size_t len)
{
    if (s == NULL || len == 0 || len > KMS_KS_MAX_ALIAS)
        return 0;
    const unsigned char *u = (const unsigned char *)s;
    for (size_t i = 0; i < len;) {
        if (u[i] < 0x20 || u[i] == 0x7F)
            return 0; /* why: aliases reach logs and terminals; NUL would truncate */
        size_t n = kms_utf8_seq(u + i, len - i);
        if (n == 0)
            return 0;
        i += n;
    }
    return 1;
}

char *kms_ks_alias_dup(const char *s, size_t len)
{
    if (!alias_ok(s, len))
        return NULL;
    char *out = malloc(len + 1);
    if (out == NULL)
        return NULL;
    memcpy(out, s, len);
    out[len] = '\0';
    return out;
}

char *kms_ks_cn_alias(X509 *cert)
{
    const X509_NAME *name = X509_get_subject_name(cert);
    int idx = -1, last = -1;
    while ((idx = X509_NAME_get_index_by_NID(name, NID_commonName, idx)) >= 0)
        last = idx;
    if (last < 0)
        return NULL;
    const ASN1_STRING *v = X509_NAME_ENTRY_get_data(X509_NAME_get_entry(name, last));
    unsigned char *utf8 = NULL;
    int n = ASN1_STRING_to_UTF8(&utf8, v);
    if (n <= 0) {
        ERR_clear_error();
        return NULL;
    }
    for (int i = 0; i < n; i++)
        if (utf8[i] >= 'A' && utf8[i] <= 'Z')
            utf8[i] = (unsigned char)(utf8[i] - 'A' + 'a');
    char *alias = kms_ks_alias_dup((const char *)utf8, (size_t)n);
    OPENSSL_free(utf8);
    return alias;
}

char *kms_ks_subject(X509 *cert)
{
    BIO *b = BIO_new(BIO_s_mem());
    char *out = NULL;
    if (b != NULL &&
        X509_NAME_print_ex(b, X509_get_subject_name(cert), 0, XN_FLAG_RFC2253 & ~ASN1_STRFLGS_ESC_MSB) >= 0) {
        char *p;
        long n = BIO_get_mem_data(b, &p);
        if (n >= 0 && (out = malloc((size_t)n + 1)) != NULL) {
            memcpy(out, p, (size_t)n);
            out[n] = '\0';
        }
    }
    BIO_free(b);
    if (out == NULL) {
        ERR_clear_error();
        out = strdup("?");
    }
    return out;
}

/* ---- entries ------------------------------------------------------------ */

static void entry_clear(struct kms_ks_entry *e)
{
    free(e->alias);
    X509_free(e->cert);
    sk_X509_pop_free(e->chain, X509_free);
    EVP_PKEY_free(e->key);
    OPENSSL_free(e->der);
    memset(e, 0, sizeof(*e));
}

/* The secret-key entry of alias (case-insensitive), or NULL. */
static const struct kms_ks_secret *find_secret(const struct kms_keystore *ks, const char *alias)
{
    for (size_t i = 0; i < ks->nsecrets; i++)
        if (strcasecmp(ks->secrets[i].alias, alias) == 0)
            return &ks->secrets[i];
    return NULL;
}

kms_rc kms_ks_add_entry(struct kms_keystore *ks, char *alias, X509 *cert, STACK_OF(X509) *chain, EVP_PKEY *key)
{
    struct kms_ks_entry e = {.alias = alias, .cert = cert, .chain = chain, .key = key};
    e.type = key != NULL ? KMS_KS_PRIVATE_KEY : KMS_KS_CERTIFICATE;
    kms_rc rc = KMS_OK;

    if (alias == NULL || cert == NULL) {
        rc = kms_fail(KMS_ERR_INTERNAL, "%s: entry without alias or certificate", ks->path);
        goto out;
    }
    if (!alias_ok(alias, strlen(alias))) {
        rc = kms_fail(KMS_ERR_KEYSTORE_CORRUPT,
                      "%s: entry %zu has an alias that is empty, longer than %u bytes or has control characters",
                      ks->path, ks->count + 1, KMS_KS_MAX_ALIAS);
        goto out;
    }
    if (e.chain == NULL && (e.chain = sk_X509_new_null()) == NULL) {
        rc = kms_fail(KMS_ERR_NO_MEMORY, "%s: out of memory", ks->path);
        goto out;
    }
    for (size_t i = 0; i < ks->count; i++) {
        if (strcasecmp(ks->entries[i].alias, alias) == 0) {
            rc = kms_fail(KMS_ERR_KEYSTORE_CORRUPT,
                          "%s: alias '%s' appears twice (entries %zu and %zu; aliases are case-insensitive)",
                          ks->path, alias, i + 1, ks->count + 1);
            goto out;
        }
    }
    if (find_secret(ks, alias) != NULL) {
        rc = kms_fail(KMS_ERR_KEYSTORE_CORRUPT, "%s: alias '%s' is a secret-key entry already", ks->path, alias);
        goto out;
    }
    int n = i2d_X509(cert, &e.der);
    if (n <= 0) {
        rc = kms_fail(KMS_ERR_KEYSTORE_CORRUPT, "%s: certificate of entry '%s' cannot be re-encoded", ks->path,
                      alias);
        kms_error_add_openssl();
        goto out;
    }
    e.der_len = (size_t)n;
    if (EVP_Digest(e.der, e.der_len, e.sha256, NULL, EVP_sha256(), NULL) != 1) {
        rc = kms_fail(KMS_ERR_CRYPTO, "%s: SHA-256 failed", ks->path);
        goto out;
    }
    /* why: X509_check_ca answers 1 only for basicConstraints CA:TRUE (3-5 are
     * v1 roots and keyUsage/Netscape hints, which the header does not promise). */
    e.is_ca = X509_check_ca(cert) == 1;
    if (ks->count == ks->cap) {
        size_t cap = ks->cap ? ks->cap * 2 : 8;
        struct kms_ks_entry *v = realloc(ks->entries, cap * sizeof(*v));
        if (v == NULL) {
            rc = kms_fail(KMS_ERR_NO_MEMORY, "%s: out of memory", ks->path);
            goto out;
        }
        ks->entries = v;
        ks->cap = cap;
    }
    ks->entries[ks->count++] = e;
    return KMS_OK;
out:
    entry_clear(&e);
    return rc;
}

/* ---- items and assembly (PKCS#12, PEM) ---------------------------------- */

kms_rc kms_ks_items_add(struct kms_keystore *ks, struct kms_ks_items *items, struct kms_ks_item *it)
{
    if (items->n >= KMS_KS_MAX_ENTRIES) {
        X509_free(it->cert);
        EVP_PKEY_free(it->key);
        free(it->name);
        return kms_fail(KMS_ERR_KEYSTORE_CORRUPT, "%s: more than %u keys and certificates", ks->path,
                        KMS_KS_MAX_ENTRIES);
    }
    if (items->n == items->cap) {
        size_t cap = items->cap ? items->cap * 2 : 16;
        struct kms_ks_item *v = realloc(items->v, cap * sizeof(*v));
        if (v == NULL) {
            X509_free(it->cert);
            EVP_PKEY_free(it->key);
            free(it->name);
            return kms_fail(KMS_ERR_NO_MEMORY, "%s: out of memory", ks->path);
        }
        items->v = v;
        items->cap = cap;
    }
    it->role = ROLE_NONE;
    items->v[items->n++] = *it;
    return KMS_OK;
}

void kms_ks_items_free(struct kms_ks_items *items)
{
    for (size_t i = 0; i < items->n; i++) {
        X509_free(items->v[i].cert);
        EVP_PKEY_free(items->v[i].key);
        free(items->v[i].name);
    }
    free(items->v);
    items->v = NULL;
    items->n = items->cap = 0;
}

/* Java names the non-leaf certificates of a chain by their subject DN
 * (RFC 2253); such a friendlyName is not an alias. */
static int name_is_own_dn(X509 *cert, const char *name)
{
    char *dn = kms_ks_subject(cert);
    int same = dn != NULL && strcasecmp(dn, name) == 0;
    free(dn);
    return same;
}

static int key_matches(EVP_PKEY *key, X509 *cert)
{
    EVP_PKEY *pub = X509_get0_pubkey(cert);
    int r = pub != NULL && EVP_PKEY_eq(pub, key) == 1;
    ERR_clear_error();
    return r;
}

static int in_chain(STACK_OF(X509) *chain, X509 *x)
{
    for (int i = 0; i < sk_X509_num(chain); i++)
        if (X509_cmp(sk_X509_value(chain, i), x) == 0)
            return 1;
    return 0;
}

/* Finds the issuer of cur among the items, chain material first, then named
 * certificates (keytool lists a chain's root once, as a trusted entry).
 * Among chain material a copy after the leaf comes first: two private-key
 * entries with one intermediate CA each carry their own copy of it (kmsctl's
 * PEM writer, openssl pkcs12 -nodes), and the earlier copy belongs to the
 * earlier entry. */
static struct kms_ks_item *find_issuer(struct kms_ks_items *items, struct kms_ks_item *leaf, STACK_OF(X509) *chain,
                                       X509 *cur)
{
    static const struct {
        int role, after_leaf;
    } order[] = {{ROLE_CHAIN, 1}, {ROLE_CHAIN, 0}, {ROLE_ENTRY, 0}};
    for (size_t o = 0; o < KMS_ARRAY_LEN(order); o++) {
        for (size_t i = 0; i < items->n; i++) {
            struct kms_ks_item *c = &items->v[i];
            if (c->cert == NULL || c->role != order[o].role || (order[o].after_leaf && c->pos < leaf->pos) ||
                X509_cmp(c->cert, cur) == 0 || X509_cmp(c->cert, leaf->cert) == 0 || in_chain(chain, c->cert))
                continue;
            if (X509_check_issued(c->cert, cur) == X509_V_OK)
                return c;
        }
    }
    return NULL;
}

struct pending {
    size_t pos;
    size_t item; /* the key item, or the certificate item of a certificate entry */
};

static int pending_cmp(const void *a, const void *b)
{
    const struct pending *x = a, *y = b;
    return (x->pos > y->pos) - (x->pos < y->pos);
}

static kms_rc pair_keys(struct kms_keystore *ks, struct kms_ks_items *items)
{
    for (size_t k = 0; k < items->n; k++) {
        struct kms_ks_item *key = &items->v[k];
        if (key->key == NULL)
            continue;
        struct kms_ks_item *leaf = NULL;
        for (size_t i = 0; key->keyid_len && i < items->n && leaf == NULL; i++) {
            struct kms_ks_item *c = &items->v[i];
            if (c->cert && c->role == ROLE_NONE && c->keyid_len == key->keyid_len &&
                memcmp(c->keyid, key->keyid, key->keyid_len) == 0) {
                if (!key_matches(key->key, c->cert))
                    return kms_fail(KMS_ERR_KEYSTORE_CORRUPT,
                                    "%s: the certificate in %s %zu carries the localKeyId of the private key in "
                                    "%s %zu but does not match that key",
                                    ks->path, items->unit, c->pos, items->unit, key->pos);
                leaf = c;
            }
        }
        for (size_t i = 0; i < items->n && leaf == NULL; i++) {
            struct kms_ks_item *c = &items->v[i];
            if (c->cert && c->role == ROLE_NONE && key_matches(key->key, c->cert))
                leaf = c;
        }
        if (leaf == NULL)
            return kms_fail(KMS_ERR_KEYSTORE_CORRUPT,
                            "%s: the private key in %s %zu%s%s%s has no matching certificate; a private-key "
                            "entry needs its certificate",
                            ks->path, items->unit, key->pos, key->name ? " ('" : "", key->name ? key->name : "",
                            key->name ? "')" : "");
        leaf->role = ROLE_LEAF;
        leaf->owner = k;
        key->role = ROLE_LEAF;
    }
    return KMS_OK;
}

static kms_rc build_chain(struct kms_keystore *ks, struct kms_ks_items *items, struct kms_ks_item *leaf,
                          int leaf_first, STACK_OF(X509) **out)
{
    STACK_OF(X509) *chain = sk_X509_new_null();
    if (chain == NULL)
        return kms_fail(KMS_ERR_NO_MEMORY, "%s: out of memory", ks->path);
    X509 *cur = leaf->cert;
    while (X509_check_issued(cur, cur) != X509_V_OK) {
        struct kms_ks_item *issuer = find_issuer(items, leaf, chain, cur);
        if (issuer == NULL)
            break;
        if (sk_X509_num(chain) >= (int)KMS_KS_MAX_CHAIN) {
            sk_X509_pop_free(chain, X509_free);
            return kms_fail(KMS_ERR_KEYSTORE_CORRUPT, "%s: certificate chain of %s %zu is longer than %u",
                            ks->path, items->unit, leaf->pos, KMS_KS_MAX_CHAIN);
        }
        if (leaf_first && issuer->role == ROLE_CHAIN && issuer->pos < leaf->pos) {
            char *subj = kms_ks_subject(issuer->cert);
            kms_rc rc = kms_fail(KMS_ERR_KEYSTORE_CORRUPT,
                                 "%s: %s %zu (%s) comes before the leaf certificate of its chain (%s %zu); put "
                                 "the leaf certificate first, then its issuers",
                                 ks->path, items->unit, issuer->pos, subj ? subj : "?", items->unit, leaf->pos);
            free(subj);
            sk_X509_pop_free(chain, X509_free);
            return rc;
        }
        if (!X509_up_ref(issuer->cert) || !sk_X509_push(chain, issuer->cert)) {
            sk_X509_pop_free(chain, X509_free);
            return kms_fail(KMS_ERR_NO_MEMORY, "%s: out of memory", ks->path);
        }
        ERR_clear_error();
        cur = issuer->cert;
    }
    ERR_clear_error();
    *out = chain;
    return KMS_OK;
}

static char *default_alias(X509 *cert, size_t n)
{
    char *a = kms_ks_cn_alias(cert);
    if (a == NULL) {
        char num[32];
        int len = snprintf(num, sizeof(num), "%zu", n);
        a = kms_ks_alias_dup(num, len > 0 ? (size_t)len : 0);
    }
    return a;
}

static char *item_alias(struct kms_keystore *ks, struct kms_ks_items *items, struct kms_ks_item *it, kms_rc *rc)
{
    char *a = kms_ks_alias_dup(it->name, strlen(it->name));
    if (a == NULL)
        *rc = kms_fail(KMS_ERR_KEYSTORE_CORRUPT,
                       "%s: the friendlyName of %s %zu is not usable as an alias (empty, longer than %u bytes, "
                       "not UTF-8 or has control characters)",
                       ks->path, items->unit, it->pos, KMS_KS_MAX_ALIAS);
    return a;
}

static kms_rc add_key_entry(struct kms_keystore *ks, struct kms_ks_items *items, size_t k, size_t nkeys,
                            STACK_OF(X509) **chain)
{
    struct kms_ks_item *it = &items->v[k], *leaf = NULL;
    for (size_t i = 0; i < items->n && leaf == NULL; i++)
        if (items->v[i].cert && items->v[i].role == ROLE_LEAF && items->v[i].owner == k)
            leaf = &items->v[i];
    if (leaf == NULL)
        return kms_fail(KMS_ERR_INTERNAL, "%s: key without its certificate", ks->path);
    kms_rc rc = KMS_OK;
    char *alias;
    if (it->name != NULL)
        alias = item_alias(ks, items, it, &rc);
    else if (leaf->name != NULL && !name_is_own_dn(leaf->cert, leaf->name))
        alias = item_alias(ks, items, leaf, &rc);
    else
        alias = default_alias(leaf->cert, nkeys);
    if (rc != KMS_OK)
        return rc;
    if (alias == NULL)
        return kms_fail(KMS_ERR_NO_MEMORY, "%s: out of memory", ks->path);
    X509 *cert = leaf->cert;
    EVP_PKEY *key = it->key;
    STACK_OF(X509) *ch = *chain;
    leaf->cert = NULL;
    it->key = NULL;
    *chain = NULL;
    return kms_ks_add_entry(ks, alias, cert, ch, key);
}

static kms_rc add_cert_entry(struct kms_keystore *ks, struct kms_ks_items *items, struct kms_ks_item *it)
{
    kms_rc rc = KMS_OK;
    char *alias;
    if (it->name != NULL && !(it->role == ROLE_CHAIN && name_is_own_dn(it->cert, it->name)))
        alias = item_alias(ks, items, it, &rc);
    else
        alias = default_alias(it->cert, ks->count + 1);
    if (rc != KMS_OK)
        return rc;
    if (alias == NULL || !X509_up_ref(it->cert)) {
        free(alias);
        return kms_fail(KMS_ERR_NO_MEMORY, "%s: out of memory", ks->path);
    }
    return kms_ks_add_entry(ks, alias, it->cert, NULL, NULL);
}

kms_rc kms_ks_assemble(struct kms_keystore *ks, struct kms_ks_items *items, int unnamed_certs_are_entries,
                       int leaf_first)
{
    struct pending *todo = NULL;
    STACK_OF(X509) **chains = NULL;
    size_t ntodo = 0, nkeys = 0;
    kms_rc rc = pair_keys(ks, items);
    if (rc != KMS_OK)
        goto out;

    int java_style = 0;
    for (size_t i = 0; i < items->n; i++)
        java_style |= items->v[i].trusted;
    for (size_t i = 0; i < items->n; i++) {
        struct kms_ks_item *c = &items->v[i];
        if (c->cert == NULL || c->role == ROLE_LEAF)
            continue;
        /* why: keytool marks certificate entries with trustedKeyUsage and names
         * chain certificates by their DN; openssl -caname only names them. */
        if (c->trusted)
            c->role = ROLE_ENTRY;
        else if (!java_style && c->name != NULL && !name_is_own_dn(c->cert, c->name))
            c->role = ROLE_ENTRY;
        else
            c->role = ROLE_CHAIN;
    }

    todo = calloc(items->n ? items->n : 1, sizeof(*todo));
    chains = calloc(items->n ? items->n : 1, sizeof(*chains));
    if (todo == NULL || chains == NULL) {
        rc = kms_fail(KMS_ERR_NO_MEMORY, "%s: out of memory", ks->path);
        goto out;
    }
    /* Chains first, so that the unnamed certificates no chain uses are known. */
    for (size_t i = 0; i < items->n && rc == KMS_OK; i++) {
        struct kms_ks_item *leaf = &items->v[i];
        if (leaf->cert == NULL || leaf->role != ROLE_LEAF)
            continue;
        rc = build_chain(ks, items, leaf, leaf_first, &chains[leaf->owner]);
        size_t keypos = items->v[leaf->owner].pos;
        todo[ntodo++] = (struct pending){keypos < leaf->pos ? keypos : leaf->pos, leaf->owner};
    }
    for (size_t i = 0; i < items->n && rc == KMS_OK; i++) {
        struct kms_ks_item *c = &items->v[i];
        if (c->cert == NULL)
            continue;
        int used = 0;
        for (size_t k = 0; k < items->n && !used; k++)
            used = chains[k] != NULL && in_chain(chains[k], c->cert);
        if (c->role == ROLE_ENTRY || (c->role == ROLE_CHAIN && !used && unnamed_certs_are_entries))
            todo[ntodo++] = (struct pending){c->pos, i};
    }
    qsort(todo, ntodo, sizeof(*todo), pending_cmp);

    for (size_t t = 0; t < ntodo && rc == KMS_OK; t++) {
        struct kms_ks_item *it = &items->v[todo[t].item];
        if (it->key != NULL)
            rc = add_key_entry(ks, items, todo[t].item, ++nkeys, &chains[todo[t].item]);
        else
            rc = add_cert_entry(ks, items, it);
    }
out:
    if (chains != NULL)
        for (size_t k = 0; k < items->n; k++)
            sk_X509_pop_free(chains[k], X509_free);
    free(chains);
    free(todo);
    kms_ks_items_free(items);
    return rc;
}

/* ---- loading ------------------------------------------------------------ */

static const uint8_t *find_bytes(const uint8_t *hay, size_t n, const char *needle)
{
    size_t m = strlen(needle);
    for (size_t i = 0; m <= n && i <= n - m; i++)
        if (hay[i] == (uint8_t)needle[0] && memcmp(hay + i, needle, m) == 0)
            return hay + i;
    return NULL;
}

/* A DER SEQUENCE whose first element is INTEGER 3: PFX version v3. */
static int looks_like_pkcs12(const uint8_t *d, size_t len)
{
    size_t hdr = 2;
    if (len < 2 || d[0] != 0x30)
        return 0;
    if (d[1] & 0x80) {
        size_t nlen = d[1] & 0x7Fu;
        if (nlen > 4)
            return 0;
        hdr += nlen;
    }
    return len >= hdr + 3 && d[hdr] == 0x02 && d[hdr + 1] == 0x01 && d[hdr + 2] == 0x03;
}

kms_rc kms_keystore_load_mem(const uint8_t *data, size_t len, const char *name, const char *password,
                             struct kms_keystore **out)
{
    *out = NULL;
    if (name == NULL)
        name = "<memory>";
    if (data == NULL || len == 0)
        return kms_fail(KMS_ERR_KEYSTORE_FORMAT, "%s: keystore file is empty", name);
    if (len > KMS_KS_MAX_FILE)
        return kms_fail(KMS_ERR_IO, "%s: keystore is %zu bytes, larger than the %u MiB limit; is it the right file?",
                        name, len, KMS_KS_MAX_FILE >> 20);

    struct kms_keystore *ks = calloc(1, sizeof(*ks));
    if (ks == NULL || (ks->path = strdup(name)) == NULL) {
        free(ks);
        return kms_fail(KMS_ERR_NO_MEMORY, "%s: out of memory", name);
    }
    uint32_t magic = len >= 4 ? ((uint32_t)data[0] << 24 | (uint32_t)data[1] << 16 | (uint32_t)data[2] << 8 |
                                 data[3])
                              : 0;
    kms_rc rc;
    if (magic == JKS_MAGIC) {
        ks->format = KMS_KEYSTORE_JKS;
        rc = kms_ks_jks_parse(ks, data, len, password);
    } else if (magic == JCEKS_MAGIC) {
        rc = kms_fail(KMS_ERR_KEYSTORE_FORMAT,
                      "%s: JCEKS keystores are not supported; convert with keytool -importkeystore "
                      "-deststoretype pkcs12",
                      name);
    } else if (looks_like_pkcs12(data, len)) {
        ks->format = KMS_KEYSTORE_PKCS12;
        rc = kms_ks_p12_parse(ks, data, len, password);
    } else if (find_bytes(data, len, "-----BEGIN ") != NULL) {
        ks->format = KMS_KEYSTORE_PEM;
        rc = kms_ks_pem_parse(ks, data, len, password);
    } else if (len < 8) {
        rc = kms_fail(KMS_ERR_KEYSTORE_FORMAT, "%s: file is only %zu bytes, too short to be a keystore", name, len);
    } else if (data[0] == 0x30) {
        rc = kms_fail(KMS_ERR_KEYSTORE_FORMAT,
                      "%s: DER data that is not a PKCS#12 keystore (a certificate or key on its own?); expected "
                      "JKS, PKCS#12 or a PEM bundle",
                      name);
    } else {
        rc = kms_fail(KMS_ERR_KEYSTORE_FORMAT,
                      "%s: not a keystore: neither JKS (starts FE ED FE ED), PKCS#12 (DER) nor PEM text; it starts "
                      "with %02X %02X %02X %02X",
                      name, data[0], data[1], data[2], data[3]);
    }
    if (rc != KMS_OK) {
        kms_keystore_free(&ks);
        ERR_clear_error();
        return rc;
    }
    *out = ks;
    return KMS_OK;
}

kms_rc kms_keystore_load(const char *path, const char *password, struct kms_keystore **out)
{
    *out = NULL;
    if (path == NULL || path[0] == '\0')
        return kms_fail(KMS_ERR_IO, "no keystore file given");
    uint8_t *buf = NULL;
    size_t len = 0;
    kms_rc rc = kms_file_read(path, KMS_KS_MAX_FILE, "the keystore", &buf, &len, NULL);
    if (rc == KMS_ERR_TOO_LARGE)
        rc = KMS_ERR_IO; /* why: callers and tests know a keystore that cannot be used as an I/O error */
    if (rc != KMS_OK)
        return rc;
    rc = kms_keystore_load_mem(buf, len, path, password, out);
    /* why: a PEM bundle may hold an unencrypted private key */
    kms_wipe(buf, len);
    free(buf);
    return rc;
}

void kms_keystore_free(struct kms_keystore **ks)
{
    if (ks == NULL || *ks == NULL)
        return;
    for (size_t i = 0; i < (*ks)->count; i++)
        entry_clear(&(*ks)->entries[i]);
    free((*ks)->entries);
    for (size_t i = 0; i < (*ks)->nsecrets; i++) {
        free((*ks)->secrets[i].alias);
        ASN1_OBJECT_free((*ks)->secrets[i].alg);
        kms_secret_free(&(*ks)->secrets[i].key);
    }
    free((*ks)->secrets);
    free((*ks)->path);
    free(*ks);
    *ks = NULL;
}

kms_rc kms_ks_add_secret(struct kms_keystore *ks, char *alias, ASN1_OBJECT *alg, struct kms_secret *key)
{
    kms_rc rc = KMS_OK;
    if (alias == NULL)
        rc = kms_fail(KMS_ERR_KEYSTORE_CORRUPT, "%s: a secret-key entry has no alias (friendlyName)", ks->path);
    if (rc == KMS_OK && (kms_keystore_find(ks, alias) != NULL || find_secret(ks, alias) != NULL))
        rc = kms_fail(KMS_ERR_KEYSTORE_CORRUPT, "%s: alias '%s' names two entries", ks->path, alias);
    struct kms_ks_secret *v = NULL;
    if (rc == KMS_OK && ks->count + ks->nsecrets >= KMS_KS_MAX_ENTRIES)
        rc = kms_fail(KMS_ERR_KEYSTORE_CORRUPT, "%s: more than %u entries", ks->path, KMS_KS_MAX_ENTRIES);
    if (rc == KMS_OK && (v = realloc(ks->secrets, (ks->nsecrets + 1) * sizeof(*v))) == NULL)
        rc = KMS_ERR_NO_MEMORY;
    if (rc != KMS_OK) {
        free(alias);
        ASN1_OBJECT_free(alg);
        kms_secret_free(&key);
        return rc;
    }
    ks->secrets = v;
    ks->secrets[ks->nsecrets++] = (struct kms_ks_secret){alias, alg, key};
    return KMS_OK;
}

/* ---- accessors ---------------------------------------------------------- */

kms_rc kms_keystore_secret_key(const struct kms_keystore *ks, const char *alias, struct kms_secret **out)
{
    *out = NULL;
    const struct kms_ks_secret *s = find_secret(ks, alias);
    if (s != NULL)
        return kms_secret_from(kms_secret_cdata(s->key), kms_secret_len(s->key), out);
    return kms_fail(KMS_ERR_ALIAS_NOT_FOUND,
                    "%s has no secret-key entry '%s' (make one with keytool -genseckey -alias %s -keyalg "
                    "HmacSHA256 -keysize 256 into a PKCS#12 keystore)",
                    ks->path, alias, alias);
}

size_t kms_keystore_secret_count(const struct kms_keystore *ks) { return ks->nsecrets; }

const char *kms_keystore_secret_alias(const struct kms_keystore *ks, size_t i)
{
    return i < ks->nsecrets ? ks->secrets[i].alias : NULL;
}

enum kms_keystore_format kms_keystore_format(const struct kms_keystore *ks) { return ks->format; }

const char *kms_keystore_format_name(enum kms_keystore_format f)
{
    switch (f) {
    case KMS_KEYSTORE_JKS:
        return "JKS";
    case KMS_KEYSTORE_PKCS12:
        return "PKCS12";
    case KMS_KEYSTORE_PEM:
        return "PEM";
    }
    return "unknown";
}

const char *kms_keystore_path(const struct kms_keystore *ks) { return ks->path; }
size_t kms_keystore_count(const struct kms_keystore *ks) { return ks->count; }

const struct kms_ks_entry *kms_keystore_entry(const struct kms_keystore *ks, size_t i)
{
    return i < ks->count ? &ks->entries[i] : NULL;
}

const struct kms_ks_entry *kms_keystore_find(const struct kms_keystore *ks, const char *alias)
{
    if (alias == NULL)
        return NULL;
    for (size_t i = 0; i < ks->count; i++)
        if (strcasecmp(ks->entries[i].alias, alias) == 0)
            return &ks->entries[i];
    return NULL;
}

const struct kms_ks_entry *kms_keystore_find_cert_der(const struct kms_keystore *ks, const uint8_t *der, size_t len)
{
    uint8_t h[32];
    if (der == NULL || len == 0 || EVP_Digest(der, len, h, NULL, EVP_sha256(), NULL) != 1)
        return NULL;
    for (size_t i = 0; i < ks->count; i++) {
        const struct kms_ks_entry *e = &ks->entries[i];
        if (e->type == KMS_KS_CERTIFICATE && e->der_len == len && memcmp(e->sha256, h, sizeof(h)) == 0 &&
            memcmp(e->der, der, len) == 0)
            return e;
    }
    return NULL;
}

const char *kms_ks_entry_alias(const struct kms_ks_entry *e) { return e->alias; }
enum kms_ks_entry_type kms_ks_entry_type(const struct kms_ks_entry *e) { return e->type; }
X509 *kms_ks_entry_cert(const struct kms_ks_entry *e) { return e->cert; }
STACK_OF(X509) *kms_ks_entry_chain(const struct kms_ks_entry *e) { return e->chain; }
EVP_PKEY *kms_ks_entry_key(const struct kms_ks_entry *e) { return e->key; }

const uint8_t *kms_ks_entry_der(const struct kms_ks_entry *e, size_t *len)
{
    *len = e->der_len;
    return e->der;
}

const uint8_t *kms_ks_entry_sha256(const struct kms_ks_entry *e) { return e->sha256; }
int kms_ks_entry_is_ca(const struct kms_ks_entry *e) { return e->is_ca; }
