/* Who is calling (SPEC §5): a client certificate is accepted when its DER
 * exactly matches a certificate entry of the keystore (pinning), it is inside
 * its validity period, and the entry's alias maps to a role. The decision is
 * made once per TLS connection by the server and cached there. */
#ifndef KMS_KMS_IDENTITY_H
#define KMS_KMS_IDENTITY_H

#include <stddef.h>
#include <stdint.h>
#include <time.h>

#include "common/error.h"
#include "kms/keystore.h"

enum kms_role { KMS_ROLE_NONE, KMS_ROLE_BACKEND, KMS_ROLE_DEVICE, KMS_ROLE_ADMIN };

/* Why a certificate was refused; KMS_AUTH_OK when it was not. */
enum kms_auth_status {
    KMS_AUTH_OK,
    KMS_AUTH_NO_CERT,
    KMS_AUTH_UNKNOWN,
    KMS_AUTH_EXPIRED,
    KMS_AUTH_NOT_YET_VALID,
    KMS_AUTH_CA_ENTRY,
    KMS_AUTH_NO_ROLE,
    KMS_AUTH_REVOKED,
    KMS_AUTH_CRL_STALE, /* its issuer's CRL is past nextUpdate (kms.auth.crl.stale=refuse) */
    KMS_AUTH_OCSP_UNKNOWN, /* kms.auth.ocsp=hard and no answer said "good" */
};
#define KMS_AUTH_LAST KMS_AUTH_OCSP_UNKNOWN

struct kms_identity {
    enum kms_auth_status status;
    enum kms_role role;
    char alias[128];
    char subject[256];
    char fingerprint[65]; /* SHA-256 of the presented DER, lower-case hex */
    char not_after[32];   /* RFC 3339 */
    time_t not_after_t;
};

struct kms_rolemap;

/* Parses "prefix=role,prefix=role" (role: backend|device|admin; prefixes
 * case-insensitive; an entry ending in '*' is a prefix, otherwise an exact
 * alias) on top of the built-in cmxbackend* -> backend, cmxdevice* -> device.
 * KMS_ERR_CONFIG on bad syntax. Caller owns *out. */
kms_rc kms_rolemap_parse(const char *spec, struct kms_rolemap **out) KMS_MUST_CHECK;
void kms_rolemap_free(struct kms_rolemap **m);
/* Role of alias. Built-ins apply to certificate entries that are not CAs;
 * a CA entry only gets a role from an explicit configured mapping. */
enum kms_role kms_rolemap_lookup(const struct kms_rolemap *m, const char *alias, int is_ca);

/* Decides the identity of a client presenting der[0..len) (NULL: none) at
 * time now; a certificate listed by one of crls (may be NULL) whose issuer
 * is the certificate's issuer is KMS_AUTH_REVOKED. Always fills *out; never
 * fails. */
void kms_identity_decide(const struct kms_keystore *ks, const struct kms_rolemap *m,
                         const STACK_OF(X509_CRL) *crls, const uint8_t *der, size_t len, time_t now,
                         struct kms_identity *out);
/* kms_identity_decide with flags: KMS_ID_ACCEPT_STALE_CRL accepts a
 * certificate whose issuer's CRL is past its nextUpdate (else such a
 * certificate is KMS_AUTH_CRL_STALE: revocation fails closed). */
#define KMS_ID_ACCEPT_STALE_CRL 1u
void kms_identity_decide_ex(const struct kms_keystore *ks, const struct kms_rolemap *m,
                            const STACK_OF(X509_CRL) *crls, const uint8_t *der, size_t len, time_t now,
                            unsigned flags, struct kms_identity *out);
/* How many of crls are past their nextUpdate at now (a CRL without one never
 * is); *earliest: the earliest nextUpdate of them all (0 when none). */
int kms_crl_stale_count(const STACK_OF(X509_CRL) *crls, time_t now, time_t *earliest);
/* The CA certificate of ks (an entry or in a chain) that issued cert, or NULL. */
X509 *kms_keystore_issuer_of(const struct kms_keystore *ks, X509 *cert);
/* 0 when crl is signed by a CA of ks; else -1 and why names its issuer. */
int kms_crl_verify(const struct kms_keystore *ks, X509_CRL *crl, char *why, size_t cap);

/* Loads the CRLs of a PEM (one or more) or DER file (kms.auth.crl.file).
 * Each must be signed by a CA certificate entry of ks when ks names its
 * issuer; one that is not is refused. KMS_ERR_IO / KMS_ERR_CONFIG with a
 * detail naming the file. The caller owns *out (sk_X509_CRL_pop_free). */
kms_rc kms_crl_load(const char *path, const struct kms_keystore *ks, STACK_OF(X509_CRL) **out) KMS_MUST_CHECK;

const char *kms_role_name(enum kms_role r);
/* Operator-facing explanation of a refusal ("certificate is not in the keystore ..."). */
const char *kms_auth_status_text(enum kms_auth_status s);
/* Short stable reason for logs/metrics ("unknown", "expired", ...). */
const char *kms_auth_status_name(enum kms_auth_status s);

#endif
