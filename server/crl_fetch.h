/* Fetching CRLs over HTTP(S) on a schedule (kms.auth.crl.url): see crl_fetch.c. */
#ifndef KMS_SERVER_CRL_FETCH_H
#define KMS_SERVER_CRL_FETCH_H

#include "common/error.h"

struct kms_server;
struct kms_crl_fetch;

/* Starts the thread: at once, then every refresh_s seconds, urls
 * (comma-separated; "cdp": the keystore certificates' distribution points)
 * into file when they all came, verified, and differ. */
kms_rc kms_crl_fetch_start(struct kms_server *s, const char *urls, const char *file, unsigned refresh_s,
                           struct kms_crl_fetch **out) KMS_MUST_CHECK;
void kms_crl_fetch_stop(struct kms_crl_fetch **f);

#endif
