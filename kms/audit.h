/* Audit trail (SPEC §10): one JSON line per request touching keys or
 * identity — time, request id, node, client alias and fingerprint, operation,
 * site id, key reference, outcome, latency. Never key material. Lines are
 * written with one write(2) on an O_APPEND descriptor, so concurrent writers
 * never interleave. A failed write never fails the request. */
#ifndef KMS_KMS_AUDIT_H
#define KMS_KMS_AUDIT_H

#include "common/error.h"

struct kms_audit;

struct kms_audit_record {
    const char *req_id;
    const char *client_alias; /* NULL when unauthenticated */
    const char *client_fp;
    const char *operation;    /* "customer-key.create", "keys.wrap", ... */
    const char *site_id;      /* may be NULL */
    const char *key_ref;      /* key id / master key name; may be NULL */
    const char *outcome;      /* "ok" or the error code */
    int status;               /* HTTP status */
    double latency_ms;
};

/* path "" or NULL: audit lines go to the application log stream (stderr).
 * Otherwise the file is opened O_APPEND|O_CREAT, mode 0600; KMS_ERR_IO when it
 * cannot be. node is copied. Caller owns *out. */
kms_rc kms_audit_open(const char *path, const char *node, struct kms_audit **out) KMS_MUST_CHECK;
void kms_audit_close(struct kms_audit **a);
void kms_audit_write(struct kms_audit *a, const struct kms_audit_record *r);

#endif
