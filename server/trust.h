/* One generation of what the server trusts and presents: the keystore, the
 * CRLs and the TLS identity (the kms.server.key.alias entry as GnuTLS
 * objects). Generations are reference-counted: a reload swaps the current one
 * while handshakes and identity decisions in progress keep theirs, so a
 * reload drops no connection and fails no request (SPEC §6). */
#ifndef KMS_SERVER_TRUST_H
#define KMS_SERVER_TRUST_H

#include <gnutls/abstract.h>
#include <gnutls/gnutls.h>
#include <openssl/x509.h>
#include <time.h>

#include "common/error.h"
#include "kms/keystore.h"

struct kms_trust {
    int refs; /* atomic */
    unsigned long generation;
    time_t loaded_at;
    struct kms_keystore *ks;  /* owned */
    STACK_OF(X509_CRL) *crls; /* owned; may be NULL */
    gnutls_pcert_st *pcerts;  /* leaf first */
    unsigned n_pcerts;
    gnutls_privkey_t key;
    time_t earliest_not_after; /* over every certificate of the keystore */
    char earliest_alias[128];
};

/* Builds a generation, taking ownership of ks and crls (also on failure).
 * KMS_ERR_ALIAS_NOT_FOUND when ks has no private-key entry server_alias;
 * KMS_ERR_CRYPTO when GnuTLS refuses the key or chain. */
kms_rc kms_trust_new(struct kms_keystore *ks, STACK_OF(X509_CRL) *crls, const char *server_alias,
                     unsigned long generation, struct kms_trust **out) KMS_MUST_CHECK;
void kms_trust_ref(struct kms_trust *t);
/* Drops a reference; the last one frees. Takes NULL; sets *t = NULL. */
void kms_trust_unref(struct kms_trust **t);

#endif
