/* OCSP for client certificates (kms.auth.ocsp, issue 15): asked when a
 * connection's identity is decided, answers cached until their nextUpdate
 * (at most kms.auth.ocsp.refresh seconds), re-asked in the background so
 * that a kept-alive connection of a certificate found revoked is closed
 * (front.c) within the refresh interval. */
#ifndef KMS_SERVER_OCSP_H
#define KMS_SERVER_OCSP_H

#include <openssl/x509.h>

#include "common/error.h"

enum kms_ocsp_mode { KMS_OCSP_OFF = 0, KMS_OCSP_SOFT, KMS_OCSP_HARD };
enum kms_ocsp_status { KMS_OCSP_GOOD = 0, KMS_OCSP_REVOKED, KMS_OCSP_UNKNOWN };

struct kms_ocsp;

/* url: the responder for every certificate ("" : each certificate's AIA). */
kms_rc kms_ocsp_new(enum kms_ocsp_mode mode, const char *url, unsigned timeout_ms, unsigned refresh_s,
                    struct kms_ocsp **out) KMS_MUST_CHECK;
void kms_ocsp_free(struct kms_ocsp **o);

/* The status of cert (issued by issuer; NULL when the keystore holds no
 * issuer) for the fingerprint fp: from the cache, else asked now. A responder
 * that cannot be asked or answers badly gives KMS_OCSP_UNKNOWN and why. */
enum kms_ocsp_status kms_ocsp_check(struct kms_ocsp *o, X509 *cert, X509 *issuer, const char *fp, char *why,
                                    size_t cap);
/* The cached status of fp, never asking (KMS_OCSP_GOOD when nothing is
 * cached): for deciding kept-alive connections again off the request path. */
enum kms_ocsp_status kms_ocsp_cached(struct kms_ocsp *o, const char *fp);
/* Bumped whenever a cached answer changes (a certificate found revoked, a
 * responder that stopped answering): connections decided under an older
 * epoch are decided again. */
unsigned long kms_ocsp_epoch(const struct kms_ocsp *o);

#endif
