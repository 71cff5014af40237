#include "kms/identity.h"

#include "common/hex.h"

#include <ctype.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509v3.h>
#include <openssl/sha.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define ROLEMAP_MAX 64

struct rule {
    char pattern[128];
    int prefix;
    enum kms_role role;
    int explicit_rule;
};

struct kms_rolemap {
    size_t n;
    struct rule rules[ROLEMAP_MAX];
};

const char *kms_role_name(enum kms_role r)
{
    switch (r) {
    case KMS_ROLE_BACKEND: return "backend";
    case KMS_ROLE_DEVICE: return "device";
    case KMS_ROLE_ADMIN: return "admin";
    default: return "none";
    }
}

static int role_parse(const char *s, size_t len, enum kms_role *out)
{
    static const enum kms_role roles[] = {KMS_ROLE_BACKEND, KMS_ROLE_DEVICE, KMS_ROLE_ADMIN};
    for (size_t i = 0; i < KMS_ARRAY_LEN(roles); i++) {
        const char *name = kms_role_name(roles[i]);
        if (strlen(name) == len && strncasecmp(s, name, len) == 0) {
            *out = roles[i];
            return 1;
        }
    }
    return 0;
}

static kms_rc add_rule(struct kms_rolemap *m, const char *pat, size_t len, enum kms_role role, int explicit_rule)
{
    if (m->n == ROLEMAP_MAX)
        return kms_fail(KMS_ERR_CONFIG, "kms.auth.roles: more than %d mappings", ROLEMAP_MAX);
    struct rule *r = &m->rules[m->n];
    r->prefix = len > 0 && pat[len - 1] == '*';
    if (r->prefix)
        len--;
    if (len == 0 || len >= sizeof(r->pattern))
        return kms_fail(KMS_ERR_CONFIG, "kms.auth.roles: empty or over-long alias pattern");
    memcpy(r->pattern, pat, len);
    r->pattern[len] = '\0';
    r->role = role;
    r->explicit_rule = explicit_rule;
    m->n++;
    return KMS_OK;
}

static void trim(const char **s, size_t *len)
{
    while (*len && isspace((unsigned char)**s)) {
        (*s)++;
        (*len)--;
    }
    while (*len && isspace((unsigned char)(*s)[*len - 1]))
        (*len)--;
}

kms_rc kms_rolemap_parse(const char *spec, struct kms_rolemap **out)
{
    *out = NULL;
    struct kms_rolemap *m = calloc(1, sizeof(*m));
    if (m == NULL)
        return KMS_ERR_NO_MEMORY;
    kms_rc rc = KMS_OK;
    /* Configured rules first, so they win over the built-ins. */
    const char *p = spec ? spec : "";
    size_t speclen = strlen(p);
    trim(&p, &speclen);
    /* why: every comma-separated segment counts, so "a=x," and "a=x,,b=y" are errors */
    for (int more = speclen > 0; more && rc == KMS_OK;) {
        const char *end = strchr(p, ',');
        size_t len = end ? (size_t)(end - p) : strlen(p);
        const char *seg = p;
        more = end != NULL;
        p = end ? end + 1 : p + len;
        trim(&seg, &len);
        const char *eq = len ? memchr(seg, '=', len) : NULL;
        enum kms_role role;
        const char *rs = eq ? eq + 1 : NULL;
        size_t rlen = eq ? (size_t)(seg + len - rs) : 0;
        size_t plen = eq ? (size_t)(eq - seg) : 0;
        if (eq) {
            trim(&rs, &rlen);
            trim(&seg, &plen);
        }
        if (eq == NULL || !role_parse(rs, rlen, &role)) {
            rc = kms_fail(KMS_ERR_CONFIG,
                          "kms.auth.roles: mapping %zu is not alias=backend|device|admin", m->n + 1);
            break;
        }
        rc = add_rule(m, seg, plen, role, 1);
    }
    if (rc == KMS_OK)
        rc = add_rule(m, "cmxbackend*", 11, KMS_ROLE_BACKEND, 0);
    if (rc == KMS_OK)
        rc = add_rule(m, "cmxdevice*", 10, KMS_ROLE_DEVICE, 0);
    if (rc != KMS_OK) {
        free(m);
        return rc;
    }
    *out = m;
    return KMS_OK;
}

void kms_rolemap_free(struct kms_rolemap **m)
{
    if (m == NULL || *m == NULL)
        return;
    free(*m);
    *m = NULL;
}

enum kms_role kms_rolemap_lookup(const struct kms_rolemap *m, const char *alias, int is_ca)
{
    for (size_t i = 0; i < m->n; i++) {
        const struct rule *r = &m->rules[i];
        if (is_ca && !r->explicit_rule)
            continue;
        size_t plen = strlen(r->pattern);
        int match = r->prefix ? strncasecmp(alias, r->pattern, plen) == 0 : strcasecmp(alias, r->pattern) == 0;
        if (match)
            return r->role;
    }
    return KMS_ROLE_NONE;
}

const char *kms_auth_status_name(enum kms_auth_status s)
{
    switch (s) {
    case KMS_AUTH_OK: return "ok";
    case KMS_AUTH_NO_CERT: return "no_certificate";
    case KMS_AUTH_UNKNOWN: return "unknown";
    case KMS_AUTH_EXPIRED: return "expired";
    case KMS_AUTH_NOT_YET_VALID: return "not_yet_valid";
    case KMS_AUTH_CA_ENTRY: return "ca_entry";
    case KMS_AUTH_NO_ROLE: return "no_role";
    case KMS_AUTH_REVOKED: return "revoked";
    case KMS_AUTH_CRL_STALE: return "crl_stale";
    case KMS_AUTH_OCSP_UNKNOWN: return "ocsp_unknown";
    }
    return "unknown";
}

const char *kms_auth_status_text(enum kms_auth_status s)
{
    switch (s) {
    case KMS_AUTH_OK: return "accepted";
    case KMS_AUTH_NO_CERT: return "the client presented no certificate";
    case KMS_AUTH_UNKNOWN:
        return "the client certificate matches no certificate entry of the keystore "
               "(import it with kmsctl keystore import-cert or keytool -importcert)";
    case KMS_AUTH_EXPIRED: return "the client certificate is in the keystore but has expired; issue and import a new one";
    case KMS_AUTH_NOT_YET_VALID: return "the client certificate is in the keystore but is not valid yet (check clocks)";
    case KMS_AUTH_CA_ENTRY:
        return "the client certificate is a CA entry of the keystore, which grants no API access "
               "unless kms.auth.roles maps its alias";
    case KMS_AUTH_NO_ROLE:
        return "the client certificate's keystore alias maps to no role "
               "(aliases cmxBackend*/cmxDevice*, or configure kms.auth.roles)";
    case KMS_AUTH_REVOKED:
        return "the client certificate is in the keystore but is revoked by the CRL (kms.auth.crl.file); "
               "remove its entry or issue a new certificate";
    case KMS_AUTH_CRL_STALE:
        return "the CRL of the client certificate's issuer is past its nextUpdate, so whether the certificate "
               "is revoked is not known (revocation fails closed): publish a new CRL or fix its fetching "
               "(kms.auth.crl.url), or set kms.auth.crl.stale=accept";
    case KMS_AUTH_OCSP_UNKNOWN:
        return "kms.auth.ocsp=hard and the OCSP responder gave no answer saying the certificate is good "
               "(down, unknown certificate, or a bad answer; the log says which)";
    }
    return "refused";
}

static void asn1_time_rfc3339(const ASN1_TIME *t, char *out, size_t cap, time_t *as_time)
{
    struct tm tm;
    memset(&tm, 0, sizeof(tm));
    out[0] = '\0';
    *as_time = 0;
    if (ASN1_TIME_to_tm(t, &tm) != 1)
        return;
    strftime(out, cap, "%Y-%m-%dT%H:%M:%SZ", &tm);
    *as_time = timegm(&tm);
}

/* 1 revoked, 2 its issuer's CRL is stale (and it is not listed), 0 neither. */
static int revoked(const STACK_OF(X509_CRL) *crls, X509 *cert, time_t now)
{
    int stale = 0;
    for (int i = 0; i < sk_X509_CRL_num(crls); i++) {
        X509_CRL *crl = sk_X509_CRL_value(crls, i);
        X509_REVOKED *rev = NULL;
        if (X509_NAME_cmp(X509_CRL_get_issuer(crl), X509_get_issuer_name(cert)) != 0)
            continue;
        if (X509_CRL_get0_by_cert(crl, &rev, cert) == 1)
            return 1;
        const ASN1_TIME *next = X509_CRL_get0_nextUpdate(crl);
        if (next != NULL && X509_cmp_time(next, &now) < 0)
            stale = 1;
    }
    return stale ? 2 : 0;
}

int kms_crl_stale_count(const STACK_OF(X509_CRL) *crls, time_t now, time_t *earliest)
{
    int n = 0;
    *earliest = 0;
    for (int i = 0; crls != NULL && i < sk_X509_CRL_num(crls); i++) {
        const ASN1_TIME *next = X509_CRL_get0_nextUpdate(sk_X509_CRL_value(crls, i));
        if (next == NULL)
            continue;
        struct tm tm;
        if (ASN1_TIME_to_tm(next, &tm) == 1) {
            time_t t = timegm(&tm);
            if (*earliest == 0 || t < *earliest)
                *earliest = t;
        }
        n += X509_cmp_time(next, &now) < 0;
    }
    return n;
}

void kms_identity_decide(const struct kms_keystore *ks, const struct kms_rolemap *m,
                         const STACK_OF(X509_CRL) *crls, const uint8_t *der, size_t len, time_t now,
                         struct kms_identity *out)
{
    kms_identity_decide_ex(ks, m, crls, der, len, now, 0, out);
}

void kms_identity_decide_ex(const struct kms_keystore *ks, const struct kms_rolemap *m,
                            const STACK_OF(X509_CRL) *crls, const uint8_t *der, size_t len, time_t now,
                            unsigned flags, struct kms_identity *out)
{
    memset(out, 0, sizeof(*out));
    out->role = KMS_ROLE_NONE;
    if (der == NULL || len == 0) {
        out->status = KMS_AUTH_NO_CERT;
        return;
    }
    uint8_t fp[SHA256_DIGEST_LENGTH];
    SHA256(der, len, fp);
    kms_hex_encode(fp, sizeof(fp), out->fingerprint, sizeof(out->fingerprint));

    const struct kms_ks_entry *e = kms_keystore_find_cert_der(ks, der, len);
    if (e == NULL) {
        out->status = KMS_AUTH_UNKNOWN;
        return;
    }
    X509 *cert = kms_ks_entry_cert(e);
    (void)snprintf(out->alias, sizeof(out->alias), "%s", kms_ks_entry_alias(e));
    X509_NAME_oneline(X509_get_subject_name(cert), out->subject, (int)sizeof(out->subject));
    asn1_time_rfc3339(X509_get0_notAfter(cert), out->not_after, sizeof(out->not_after), &out->not_after_t);

    if (X509_cmp_time(X509_get0_notBefore(cert), &now) > 0) {
        out->status = KMS_AUTH_NOT_YET_VALID;
        return;
    }
    if (X509_cmp_time(X509_get0_notAfter(cert), &now) < 0) {
        out->status = KMS_AUTH_EXPIRED;
        return;
    }
    int rv = crls != NULL ? revoked(crls, cert, now) : 0;
    if (rv == 1 || (rv == 2 && !(flags & KMS_ID_ACCEPT_STALE_CRL))) {
        out->status = rv == 1 ? KMS_AUTH_REVOKED : KMS_AUTH_CRL_STALE;
        return;
    }
    int is_ca = kms_ks_entry_is_ca(e);
    out->role = kms_rolemap_lookup(m, out->alias, is_ca);
    if (out->role == KMS_ROLE_NONE) {
        out->status = is_ca ? KMS_AUTH_CA_ENTRY : KMS_AUTH_NO_ROLE;
        return;
    }
    out->status = KMS_AUTH_OK;
}

/* The CA certificate entry of ks named issuer, or NULL. */
static X509 *issuer_in(const struct kms_keystore *ks, const X509_NAME *issuer)
{
    for (size_t i = 0; i < kms_keystore_count(ks); i++) {
        const struct kms_ks_entry *e = kms_keystore_entry(ks, i);
        X509 *x = kms_ks_entry_cert(e);
        if (kms_ks_entry_is_ca(e) && X509_NAME_cmp(X509_get_subject_name(x), issuer) == 0)
            return x;
        STACK_OF(X509) *chain = kms_ks_entry_chain(e);
        for (int k = 0; k < sk_X509_num(chain); k++) {
            X509 *c = sk_X509_value(chain, k);
            if (X509_check_ca(c) && X509_NAME_cmp(X509_get_subject_name(c), issuer) == 0)
                return c;
        }
    }
    return NULL;
}

X509 *kms_keystore_issuer_of(const struct kms_keystore *ks, X509 *cert)
{
    return issuer_in(ks, X509_get_issuer_name(cert));
}

int kms_crl_verify(const struct kms_keystore *ks, X509_CRL *crl, char *why, size_t cap)
{
    X509 *issuer = issuer_in(ks, X509_CRL_get_issuer(crl));
    /* why: a CRL can only refuse, but an unverified one would let anyone who
     * can write the file lock clients out; require the issuing CA's signature */
    if (issuer != NULL && X509_CRL_verify(crl, X509_get0_pubkey(issuer)) == 1)
        return 0;
    char name[256];
    X509_NAME_oneline(X509_CRL_get_issuer(crl), name, (int)sizeof(name));
    ERR_clear_error();
    (void)snprintf(why, cap, "of issuer %s is not signed by a CA of the keystore", name);
    return -1;
}

kms_rc kms_crl_load(const char *path, const struct kms_keystore *ks, STACK_OF(X509_CRL) **out)
{
    *out = NULL;
    BIO *bio = BIO_new_file(path, "rb");
    if (bio == NULL) {
        ERR_clear_error();
        return kms_fail(KMS_ERR_IO, "cannot read the CRL file %s (kms.auth.crl.file)", path);
    }
    STACK_OF(X509_CRL) *crls = sk_X509_CRL_new_null();
    X509_CRL *crl;
    while (crls != NULL && (crl = PEM_read_bio_X509_CRL(bio, NULL, NULL, NULL)) != NULL)
        if (!sk_X509_CRL_push(crls, crl))
            X509_CRL_free(crl);
    ERR_clear_error();
    if (crls != NULL && sk_X509_CRL_num(crls) == 0) {
        (void)BIO_reset(bio);
        crl = d2i_X509_CRL_bio(bio, NULL);
        if (crl != NULL && !sk_X509_CRL_push(crls, crl))
            X509_CRL_free(crl);
        ERR_clear_error();
    }
    BIO_free(bio);
    if (crls == NULL)
        return KMS_ERR_NO_MEMORY;
    if (sk_X509_CRL_num(crls) == 0) {
        sk_X509_CRL_free(crls);
        return kms_fail(KMS_ERR_CONFIG, "%s holds no CRL (PEM or DER)", path);
    }
    for (int i = 0; i < sk_X509_CRL_num(crls); i++) {
        char why[320];
        if (kms_crl_verify(ks, sk_X509_CRL_value(crls, i), why, sizeof(why)) != 0) {
            sk_X509_CRL_pop_free(crls, X509_CRL_free);
            return kms_fail(KMS_ERR_CONFIG, "%s: CRL %d %s", path, i + 1, why);
        }
    }
    *out = crls;
    return KMS_OK;
}
