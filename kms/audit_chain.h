/* The audit trail's hash chain and HMAC checkpoints (internal to kms/audit.c;
 * the format is in audit.h). Not thread-safe: audit.c holds its chain lock. */
#ifndef KMS_KMS_AUDIT_CHAIN_H
#define KMS_KMS_AUDIT_CHAIN_H

#include <stddef.h>
#include <stdint.h>

#include "common/error.h"
#include "common/secret.h"

#define KMS_AUDIT_LINE_MAX 4096 /* a record's line before its chain fields */

struct kms_audit_chain {
    uint64_t seq;      /* of the last line */
    char prev[65];     /* hex SHA-256 of the last line */
    unsigned since_checkpoint;
    unsigned every;    /* lines between checkpoints */
    struct kms_secret *key; /* NULL: no checkpoints */
    char node_json[260]; /* the node's name, JSON-escaped once */
};

kms_rc kms_chain_init(struct kms_audit_chain *c, const char *node, const struct kms_secret *key, unsigned every)
    KMS_MUST_CHECK;
void kms_chain_free(struct kms_audit_chain *c);

/* Continues the chain of the file open at fd (size bytes): its last line's
 * seq and hash. A last line without its newline (a crash mid-write) is cut
 * off first; *cut says how many bytes. */
kms_rc kms_chain_resume(struct kms_audit_chain *c, int fd, unsigned long long *size, size_t *cut) KMS_MUST_CHECK;

/* Appends one line chained into out (room bytes free): raw is a JSON object
 * and its newline. Returns the bytes appended, 0 (and nothing changed) when
 * they do not fit. */
size_t kms_chain_append(struct kms_audit_chain *c, const char *raw, size_t len, char *out, size_t room);
/* An "audit.checkpoint" line (0 without a key or room). */
size_t kms_chain_checkpoint(struct kms_audit_chain *c, char *out, size_t room);
/* An "audit.lost" line saying n lines could not be written. */
size_t kms_chain_lost(struct kms_audit_chain *c, unsigned long long n, char *out, size_t room);
/* 1 when a checkpoint is due. */
int kms_chain_checkpoint_due(const struct kms_audit_chain *c);

#endif
