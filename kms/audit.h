/* Audit trail (SPEC §10): one JSON line per request touching keys or
 * identity — time, request id, node, client alias and fingerprint, operation,
 * site id, key reference, outcome, latency, and the client's address (behind
 * a trusted load balancer, the PROXY header's). Never key material. Lines reach
 * the descriptor (O_APPEND) in whole lines, so concurrent writers never split
 * one. A failed write never fails the request. */
#ifndef KMS_KMS_AUDIT_H
#define KMS_KMS_AUDIT_H

#include <stdint.h>

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
    const char *peer;         /* the client's IP address; NULL: not known (the line has no "peer") */
};

/* path "" or NULL: audit lines go to the application log stream (stderr).
 * Otherwise the file is opened O_APPEND|O_CREAT, mode 0600; KMS_ERR_IO when it
 * cannot be. node is copied. Caller owns *out.
 * flush_ms 0: kms_audit_write does one write(2) per line. flush_ms > 0: lines
 * go to a 256 KiB buffer that a writer thread writes out at most flush_ms
 * after its first line (sooner when half full); a caller waits only when the
 * buffer is full. A crash loses at most flush_ms of lines; kms_audit_close
 * writes everything pending first. KMS_ERR_NO_MEMORY when the writer cannot
 * start. */
kms_rc kms_audit_open(const char *path, const char *node, unsigned flush_ms, struct kms_audit **out) KMS_MUST_CHECK;
void kms_audit_close(struct kms_audit **a);
void kms_audit_write(struct kms_audit *a, const struct kms_audit_record *r);
/* Audit lines lost to failed writes since open (the first failure is logged
 * as audit.write_failed). */
uint64_t kms_audit_failures(const struct kms_audit *a);

#endif
