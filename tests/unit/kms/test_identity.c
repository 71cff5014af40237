/* kms/identity.c: role mapping and the per-connection identity decision. */
#include <criterion/criterion.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509v3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "kms/identity.h"
#include "kms/keystore.h"

Test(identity, builtin_prefixes_are_case_insensitive)
{
    struct kms_rolemap *m = NULL;
    cr_assert_eq(kms_rolemap_parse("", &m), KMS_OK);
    cr_assert_eq(kms_rolemap_lookup(m, "cmxBackend", 0), KMS_ROLE_BACKEND);
    cr_assert_eq(kms_rolemap_lookup(m, "CMXBACKEND2", 0), KMS_ROLE_BACKEND);
    cr_assert_eq(kms_rolemap_lookup(m, "cmxdevice", 0), KMS_ROLE_DEVICE);
    cr_assert_eq(kms_rolemap_lookup(m, "cmxDevice20261122", 0), KMS_ROLE_DEVICE);
    cr_assert_eq(kms_rolemap_lookup(m, "kmipsigningca", 0), KMS_ROLE_NONE);
    cr_assert_eq(kms_rolemap_lookup(m, "mycmxbackend", 0), KMS_ROLE_NONE, "prefix, not substring");
    /* a CA entry gets no role from the built-in prefixes */
    cr_assert_eq(kms_rolemap_lookup(m, "cmxBackendCA", 1), KMS_ROLE_NONE);
    kms_rolemap_free(&m);
    cr_assert_null(m);
    kms_rolemap_free(&m); /* takes NULL */
}

Test(identity, configured_mappings_win_and_can_name_a_ca)
{
    struct kms_rolemap *m = NULL;
    cr_assert_eq(kms_rolemap_parse(" ops* = admin , exporter=device,cmxbackend-legacy=device", &m), KMS_OK);
    cr_assert_eq(kms_rolemap_lookup(m, "ops-team", 0), KMS_ROLE_ADMIN);
    cr_assert_eq(kms_rolemap_lookup(m, "OPS", 0), KMS_ROLE_ADMIN);
    cr_assert_eq(kms_rolemap_lookup(m, "exporter", 0), KMS_ROLE_DEVICE);
    cr_assert_eq(kms_rolemap_lookup(m, "exporter2", 0), KMS_ROLE_NONE, "exact alias, not a prefix");
    cr_assert_eq(kms_rolemap_lookup(m, "cmxbackend-legacy", 0), KMS_ROLE_DEVICE, "configured beats built-in");
    cr_assert_eq(kms_rolemap_lookup(m, "exporter", 1), KMS_ROLE_DEVICE, "explicit mapping covers a CA entry");
    kms_rolemap_free(&m);
}

Test(identity, bad_role_maps_are_config_errors)
{
    const char *bad[] = {"ops", "ops=root", "=backend", "a=backend,,b=device", "a=backend,", "*=device x"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        struct kms_rolemap *m = NULL;
        cr_assert_eq(kms_rolemap_parse(bad[i], &m), KMS_ERR_CONFIG, "accepted '%s'", bad[i]);
        cr_assert_null(m);
    }
}

/* A self-signed EC certificate valid from now+nb_days to now+na_days. */
static X509 *make_cert(const char *cn, int ca, long nb_days, long na_days, EVP_PKEY **key_out)
{
    EVP_PKEY *key = EVP_EC_gen("P-256");
    cr_assert_not_null(key);
    X509 *x = X509_new();
    ASN1_INTEGER_set(X509_get_serialNumber(x), 1);
    X509_gmtime_adj(X509_getm_notBefore(x), nb_days * 86400);
    X509_gmtime_adj(X509_getm_notAfter(x), na_days * 86400);
    X509_NAME *n = X509_get_subject_name(x);
    X509_NAME_add_entry_by_txt(n, "CN", MBSTRING_ASC, (const unsigned char *)cn, -1, -1, 0);
    X509_set_issuer_name(x, n);
    X509_set_pubkey(x, key);
    if (ca) {
        X509V3_CTX ctx;
        X509V3_set_ctx(&ctx, x, x, NULL, NULL, 0);
        X509_EXTENSION *ext = X509V3_EXT_conf_nid(NULL, &ctx, NID_basic_constraints, "critical,CA:TRUE");
        X509_add_ext(x, ext, -1);
        X509_EXTENSION_free(ext);
    }
    cr_assert(X509_sign(x, key, EVP_sha256()) > 0);
    *key_out = key;
    return x;
}

struct fixture {
    char dir[64];
    char path[128];
    X509 *backend, *device, *expired, *future, *ca, *other, *server;
    EVP_PKEY *keys[7];
    struct kms_keystore *ks;
    struct kms_rolemap *m;
};

static void write_entry(FILE *f, const char *alias, X509 *x, EVP_PKEY *key)
{
    fprintf(f, "Bag Attributes\n    friendlyName: %s\n", alias);
    if (key)
        PEM_write_PrivateKey(f, key, NULL, NULL, 0, NULL, NULL);
    if (key)
        fprintf(f, "Bag Attributes\n    friendlyName: %s\n", alias);
    PEM_write_X509(f, x);
}

static void setup(struct fixture *fx)
{
    memset(fx, 0, sizeof(*fx));
    snprintf(fx->dir, sizeof(fx->dir), "/tmp/kms-identity-XXXXXX");
    cr_assert_not_null(mkdtemp(fx->dir));
    snprintf(fx->path, sizeof(fx->path), "%s/ks.pem", fx->dir);
    fx->server = make_cert("localhost", 0, -1, 365, &fx->keys[0]);
    fx->backend = make_cert("cmxBackend", 0, -1, 365, &fx->keys[1]);
    fx->device = make_cert("cmxDevice", 0, -1, 365, &fx->keys[2]);
    fx->expired = make_cert("old device", 0, -30, -1, &fx->keys[3]);
    fx->future = make_cert("future device", 0, 5, 365, &fx->keys[4]);
    fx->ca = make_cert("Some CA", 1, -1, 365, &fx->keys[5]);
    fx->other = make_cert("cmxBackend", 0, -1, 365, &fx->keys[6]);
    FILE *f = fopen(fx->path, "w");
    write_entry(f, "kmsserver", fx->server, fx->keys[0]);
    write_entry(f, "cmxBackend", fx->backend, NULL);
    write_entry(f, "cmxDevice", fx->device, NULL);
    write_entry(f, "cmxDeviceOld", fx->expired, NULL);
    write_entry(f, "cmxDeviceNext", fx->future, NULL);
    write_entry(f, "kmipSigningCA", fx->ca, NULL);
    fclose(f);
    cr_assert_eq(kms_keystore_load(fx->path, NULL, &fx->ks), KMS_OK, "%s", kms_error_detail());
    cr_assert_eq(kms_rolemap_parse("", &fx->m), KMS_OK);
}

static void teardown(struct fixture *fx)
{
    X509 *certs[] = {fx->server, fx->backend, fx->device, fx->expired, fx->future, fx->ca, fx->other};
    for (size_t i = 0; i < 7; i++) {
        X509_free(certs[i]);
        EVP_PKEY_free(fx->keys[i]);
    }
    kms_keystore_free(&fx->ks);
    kms_rolemap_free(&fx->m);
    unlink(fx->path);
    rmdir(fx->dir);
}

static void decide(struct fixture *fx, X509 *x, struct kms_identity *id)
{
    unsigned char *der = NULL;
    int len = i2d_X509(x, &der);
    cr_assert(len > 0);
    kms_identity_decide(fx->ks, fx->m, NULL, der, (size_t)len, time(NULL), id);
    OPENSSL_free(der);
}

Test(identity, decisions_for_each_kind_of_certificate)
{
    struct fixture fx;
    setup(&fx);
    struct kms_identity id;

    decide(&fx, fx.backend, &id);
    cr_assert_eq(id.status, KMS_AUTH_OK);
    cr_assert_eq(id.role, KMS_ROLE_BACKEND);
    cr_assert_str_eq(id.alias, "cmxBackend");
    cr_assert_eq(strlen(id.fingerprint), 64);
    cr_assert(strstr(id.subject, "cmxBackend") != NULL);

    decide(&fx, fx.device, &id);
    cr_assert_eq(id.status, KMS_AUTH_OK);
    cr_assert_eq(id.role, KMS_ROLE_DEVICE);

    decide(&fx, fx.expired, &id);
    cr_assert_eq(id.status, KMS_AUTH_EXPIRED);
    cr_assert_eq(id.role, KMS_ROLE_NONE);

    decide(&fx, fx.future, &id);
    cr_assert_eq(id.status, KMS_AUTH_NOT_YET_VALID);

    decide(&fx, fx.ca, &id);
    cr_assert_eq(id.status, KMS_AUTH_CA_ENTRY);

    /* same subject as the pinned backend certificate, different key: unknown */
    decide(&fx, fx.other, &id);
    cr_assert_eq(id.status, KMS_AUTH_UNKNOWN);
    cr_assert_eq(id.role, KMS_ROLE_NONE);

    /* the server's own private-key entry certificate is not a client pin */
    decide(&fx, fx.server, &id);
    cr_assert_eq(id.status, KMS_AUTH_UNKNOWN);

    kms_identity_decide(fx.ks, fx.m, NULL, NULL, 0, time(NULL), &id);
    cr_assert_eq(id.status, KMS_AUTH_NO_CERT);

    /* every refusal has operator words */
    for (int s = KMS_AUTH_NO_CERT; s <= KMS_AUTH_LAST; s++)
        cr_assert(strlen(kms_auth_status_text((enum kms_auth_status)s)) > 20);
    teardown(&fx);
}

/* A CRL by issuer x (signed with key) updated `last` days ago, next update
 * in `next` days, listing serial 1 when revoke is set. */
static X509_CRL *make_crl(X509 *x, EVP_PKEY *key, long last, long next, int revoke)
{
    X509_CRL *crl = X509_CRL_new();
    X509_CRL_set_version(crl, 1);
    X509_CRL_set_issuer_name(crl, X509_get_subject_name(x));
    ASN1_TIME *t = X509_gmtime_adj(NULL, last * 86400);
    X509_CRL_set1_lastUpdate(crl, t);
    X509_gmtime_adj(t, next * 86400);
    X509_CRL_set1_nextUpdate(crl, t);
    ASN1_TIME_free(t);
    if (revoke) {
        X509_REVOKED *r = X509_REVOKED_new();
        ASN1_INTEGER *serial = ASN1_INTEGER_new();
        ASN1_INTEGER_set(serial, 1);
        X509_REVOKED_set_serialNumber(r, serial);
        ASN1_INTEGER_free(serial);
        ASN1_TIME *when = X509_gmtime_adj(NULL, -3600);
        X509_REVOKED_set_revocationDate(r, when);
        ASN1_TIME_free(when);
        X509_CRL_add0_revoked(crl, r);
    }
    cr_assert(X509_CRL_sign(crl, key, EVP_sha256()) > 0);
    return crl;
}

static enum kms_auth_status decide_with(struct fixture *fx, X509 *x, X509_CRL *crl, unsigned flags)
{
    STACK_OF(X509_CRL) *crls = sk_X509_CRL_new_null();
    sk_X509_CRL_push(crls, crl);
    unsigned char *der = NULL;
    int len = i2d_X509(x, &der);
    struct kms_identity id;
    kms_identity_decide_ex(fx->ks, fx->m, crls, der, (size_t)len, time(NULL), flags, &id);
    OPENSSL_free(der);
    sk_X509_CRL_free(crls);
    return id.status;
}

/* A CRL past its nextUpdate: its issuer's certificates are refused (fail
 * closed) unless the caller accepts stale CRLs; a listed one stays revoked. */
Test(identity, a_stale_crl_fails_closed_unless_accepted)
{
    struct fixture fx;
    setup(&fx);
    X509_CRL *stale = make_crl(fx.device, fx.keys[2], -2, -1, 0);
    X509_CRL *fresh = make_crl(fx.device, fx.keys[2], -1, 7, 0);
    X509_CRL *revoking = make_crl(fx.device, fx.keys[2], -2, -1, 1);
    cr_assert_eq(decide_with(&fx, fx.device, fresh, 0), KMS_AUTH_OK);
    cr_assert_eq(decide_with(&fx, fx.device, stale, 0), KMS_AUTH_CRL_STALE);
    cr_assert_eq(decide_with(&fx, fx.device, stale, KMS_ID_ACCEPT_STALE_CRL), KMS_AUTH_OK);
    cr_assert_eq(decide_with(&fx, fx.device, revoking, KMS_ID_ACCEPT_STALE_CRL), KMS_AUTH_REVOKED);
    cr_assert_eq(decide_with(&fx, fx.backend, stale, 0), KMS_AUTH_OK, "another issuer's CRL says nothing");
    STACK_OF(X509_CRL) *crls = sk_X509_CRL_new_null();
    sk_X509_CRL_push(crls, fresh);
    sk_X509_CRL_push(crls, stale);
    time_t earliest = 0;
    cr_assert_eq(kms_crl_stale_count(crls, time(NULL), &earliest), 1);
    cr_assert(earliest < time(NULL) && earliest > time(NULL) - 2 * 86400, "the stale one's nextUpdate");
    sk_X509_CRL_free(crls);
    char why[256];
    cr_assert_eq(kms_crl_verify(fx.ks, fresh, why, sizeof(why)), -1, "the device is no CA of the keystore");
    cr_assert(strstr(why, "not signed by a CA of the keystore") != NULL, "%s", why);
    X509_CRL_free(stale);
    X509_CRL_free(fresh);
    X509_CRL_free(revoking);
    teardown(&fx);
}
