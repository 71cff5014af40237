/* Audit trail (SPEC §10): one JSON line per request touching keys or
 * identity — time, request id, node, client alias and fingerprint, operation,
 * site id, key reference, outcome, latency, and the client's address (behind
 * a trusted load balancer, the PROXY header's). Never key material. Lines reach
 * the descriptor (O_APPEND) in whole lines, so concurrent writers never split
 * one.
 *
 * Tamper-evident (issue 15, docs/audit.md): every line ends with
 * "seq" (1, 2, ... across restarts and rotated files) and "prev", the
 * SHA-256 of the line before it (64 zeros before the first), so a line
 * deleted, edited or moved breaks the chain at that place. With a key,
 * an "audit.checkpoint" line every checkpoint_lines lines (and at close and
 * before each rotation) carries HMAC-SHA256(key, "kmsd audit checkpoint v1
"
 * seq "
" prev) of its own seq and prev: rewriting the chain needs the key.
 * kms_audit_verify_line is what `kmsctl audit verify` checks with. */
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

#include <stddef.h>

#include "common/secret.h"

struct kms_audit_options {
    const char *path;          /* "" or NULL: stderr */
    const char *node;
    unsigned flush_ms;
    /* 1: lines that cannot be written are kept (up to 1 MiB) and written once
     * the file takes them again; meanwhile kms_audit_ready says 0, so the
     * server refuses what it would have to audit (kms.audit.on_failure=refuse).
     * 0: they are dropped and counted, and an "audit.lost" line says how many
     * once writing works again (continue). */
    int refuse;
    unsigned long long max_size; /* rotate past this many bytes (regular files); 0: never */
    unsigned keep;               /* rotated files kept: path.1 .. path.keep */
    unsigned checkpoint_lines;   /* 0: 1000 */
    const struct kms_secret *key; /* checkpoint HMAC key (copied); NULL: no checkpoints */
};

/* kms_audit_open with options. On an existing file the chain continues from
 * its last line. */
kms_rc kms_audit_open_with(const struct kms_audit_options *o, struct kms_audit **out) KMS_MUST_CHECK;

/* 1 when every line so far has been written (or dropped, with refuse 0).
 * With refuse, 0 while lines wait for a failing file; each call at most every
 * 100 ms tries to write them again. */
int kms_audit_ready(struct kms_audit *a);

/* The chain's check of one line (without its newline): its seq and prev
 * against the expected ones (*seq 0 and prev NULL: take the first line's as
 * they are), then advances *seq and prev (65 bytes: hex SHA-256 of this
 * line). A checkpoint's HMAC is checked when key is not NULL (*checkpoints
 * counts those verified). 0 when the line holds; else -1 and why, or 2
 * (and why) for an audit line without chain fields (written before the
 * chain existed). Lines whose "event" does not start with "audit" are
 * skipped (1): the audit may share stderr with the log. */
int kms_audit_verify_line(const char *line, size_t len, uint64_t *seq, char prev[65], const struct kms_secret *key,
                          unsigned *checkpoints, char *why, size_t cap);

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
/* Failed writes since open (the first is logged as audit.write_failed,
 * the recovery as audit.recovered); with refuse 0, one per line lost. */
uint64_t kms_audit_failures(const struct kms_audit *a);

#endif
