#include "server/trust.h"

#include <openssl/crypto.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/secret.h"

static void free_trust(struct kms_trust *t)
{
    for (unsigned i = 0; i < t->n_pcerts; i++)
        gnutls_pcert_deinit(&t->pcerts[i]);
    free(t->pcerts);
    if (t->key != NULL)
        gnutls_privkey_deinit(t->key);
    if (t->crls != NULL)
        sk_X509_CRL_pop_free(t->crls, X509_CRL_free);
    kms_keystore_free(&t->ks);
    free(t);
}

static kms_rc add_pcert(struct kms_trust *t, X509 *x)
{
    unsigned char *der = NULL;
    int len = i2d_X509(x, &der);
    if (len <= 0)
        return kms_fail(KMS_ERR_CRYPTO, "cannot encode the server certificate chain");
    gnutls_datum_t d = {der, (unsigned)len};
    int r = gnutls_pcert_import_x509_raw(&t->pcerts[t->n_pcerts], &d, GNUTLS_X509_FMT_DER, 0);
    OPENSSL_free(der);
    if (r < 0)
        return kms_fail(KMS_ERR_CRYPTO, "GnuTLS refuses the server certificate: %s", gnutls_strerror(r));
    t->n_pcerts++;
    return KMS_OK;
}

static kms_rc import_key(struct kms_trust *t, EVP_PKEY *pkey)
{
    /* why: the DER of the private key lives on the secure heap and is wiped */
    int len = i2d_PrivateKey(pkey, NULL);
    if (len <= 0)
        return kms_fail(KMS_ERR_CRYPTO, "cannot encode the server private key");
    unsigned char *der = OPENSSL_secure_malloc((size_t)len);
    if (der == NULL)
        return KMS_ERR_NO_MEMORY;
    unsigned char *p = der;
    kms_rc rc = KMS_OK;
    if (i2d_PrivateKey(pkey, &p) != len) {
        rc = kms_fail(KMS_ERR_CRYPTO, "cannot encode the server private key");
    } else if (gnutls_privkey_init(&t->key) < 0) {
        rc = KMS_ERR_NO_MEMORY;
    } else {
        gnutls_datum_t d = {der, (unsigned)len};
        int r = gnutls_privkey_import_x509_raw(t->key, &d, GNUTLS_X509_FMT_DER, NULL, 0);
        if (r < 0)
            rc = kms_fail(KMS_ERR_CRYPTO, "GnuTLS refuses the server private key: %s", gnutls_strerror(r));
    }
    OPENSSL_secure_clear_free(der, (size_t)len);
    return rc;
}

static void note_expiry(struct kms_trust *t, const char *alias, X509 *x)
{
    struct tm tm;
    if (ASN1_TIME_to_tm(X509_get0_notAfter(x), &tm) != 1)
        return;
    time_t na = timegm(&tm);
    if (t->earliest_not_after == 0 || na < t->earliest_not_after) {
        t->earliest_not_after = na;
        (void)snprintf(t->earliest_alias, sizeof(t->earliest_alias), "%s", alias);
    }
}

kms_rc kms_trust_new(struct kms_keystore *ks, STACK_OF(X509_CRL) *crls, const char *server_alias,
                     unsigned long generation, struct kms_trust **out)
{
    *out = NULL;
    struct kms_trust *t = calloc(1, sizeof(*t));
    if (t == NULL) {
        kms_keystore_free(&ks);
        if (crls != NULL)
            sk_X509_CRL_pop_free(crls, X509_CRL_free);
        return KMS_ERR_NO_MEMORY;
    }
    t->refs = 1;
    t->generation = generation;
    t->loaded_at = time(NULL);
    t->ks = ks;
    t->crls = crls;
    kms_rc rc = KMS_OK;
    const struct kms_ks_entry *e = kms_keystore_find(ks, server_alias);
    if (e == NULL || kms_ks_entry_type(e) != KMS_KS_PRIVATE_KEY)
        rc = kms_fail(KMS_ERR_ALIAS_NOT_FOUND,
                      "keystore %s has no private-key entry '%s' for the TLS server (kms.server.key.alias)",
                      kms_keystore_path(ks), server_alias);
    STACK_OF(X509) *chain = e ? kms_ks_entry_chain(e) : NULL;
    if (rc == KMS_OK) {
        t->pcerts = calloc((size_t)sk_X509_num(chain) + 1, sizeof(*t->pcerts));
        if (t->pcerts == NULL)
            rc = KMS_ERR_NO_MEMORY;
    }
    if (rc == KMS_OK)
        rc = add_pcert(t, kms_ks_entry_cert(e));
    for (int i = 0; rc == KMS_OK && i < sk_X509_num(chain); i++)
        rc = add_pcert(t, sk_X509_value(chain, i));
    if (rc == KMS_OK)
        rc = import_key(t, kms_ks_entry_key(e));
    for (size_t i = 0; rc == KMS_OK && i < kms_keystore_count(ks); i++) {
        const struct kms_ks_entry *x = kms_keystore_entry(ks, i);
        note_expiry(t, kms_ks_entry_alias(x), kms_ks_entry_cert(x));
    }
    if (rc != KMS_OK) {
        free_trust(t);
        return rc;
    }
    *out = t;
    return KMS_OK;
}

void kms_trust_ref(struct kms_trust *t) { __atomic_add_fetch(&t->refs, 1, __ATOMIC_RELAXED); }

void kms_trust_unref(struct kms_trust **t)
{
    if (t == NULL || *t == NULL)
        return;
    if (__atomic_sub_fetch(&(*t)->refs, 1, __ATOMIC_ACQ_REL) == 0)
        free_trust(*t);
    *t = NULL;
}
