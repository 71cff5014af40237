/* A node's side of keystore distribution (SPEC §11, issue 12): learn of a
 * new generation (pub/sub, and a periodic check for missed messages or a
 * node that was down), open and check it, write it over the node's own
 * keystore file atomically with a backup of the old one (so the node also
 * restarts without Redis), and let the caller swap it in through the
 * ordinary hot-reload path.
 *
 * State kept beside the keystore, in "<keystore file>.generation":
 * "generation=N\nsha256=HEX\n" — the generation this node's file holds,
 * so a restarted node still refuses older generations (no rollback).
 *
 * Threads: one listener thread (pub/sub) sets a flag; everything else runs
 * on the caller's thread (kmsd's main loop). */
#ifndef KMS_SERVER_KEYSTORE_SYNC_H
#define KMS_SERVER_KEYSTORE_SYNC_H

#include <stddef.h>
#include <stdint.h>

#include "common/error.h"
#include "kms/cache.h"
#include "kms/config.h"
#include "kms/ksgen.h"

struct kms_ksync;

/* For a node with cfg (borrowed, must outlive it) whose distributed cache
 * is cache (borrowed) and whose opened cluster key is cluster_key (copied).
 * Reads the state file (missing: generation 0). Errors: KMS_ERR_IO (state file unreadable or
 * malformed: the detail names it), KMS_ERR_NO_MEMORY. Caller owns *out. */
kms_rc kms_ksync_new(const struct kms_config *cfg, struct kms_cache *cache, const struct kms_secret *cluster_key,
                     struct kms_ksync **out) KMS_MUST_CHECK;

/* The configuration in force changed (SIGHUP): cfg (borrowed) replaces the
 * one given to kms_ksync_new. Main-loop thread only. */
void kms_ksync_set_config(struct kms_ksync *s, const struct kms_config *cfg);

/* Starts the pub/sub listener thread. KMS_ERR_INTERNAL. */
kms_rc kms_ksync_listen(struct kms_ksync *s) KMS_MUST_CHECK;

/* Non-zero when a check is due: an announcement arrived, or the periodic
 * interval (kms.cluster.keystore.check.ms) passed. */
int kms_ksync_due(struct kms_ksync *s);

/* Checks Redis for a generation above the node's and, when one passes
 * every check, writes it over the keystore file (after a backup) and the
 * state file. *wrote = 1 then: the caller reloads and reports the result
 * with kms_ksync_reloaded. A refused generation is logged, counted
 * (kms_metrics_keystore_rejected) and recorded as the last error; the
 * file is untouched. Errors: KMS_ERR_BACKEND_UNAVAILABLE (Redis), the
 * refusal's code, KMS_ERR_IO (writing). */
kms_rc kms_ksync_poll(struct kms_ksync *s, int *wrote) KMS_MUST_CHECK;

/* The reload after a write: on failure the previous file and state are
 * put back (nothing is half-applied) and the error recorded. */
void kms_ksync_reloaded(struct kms_ksync *s, kms_rc rc, const char *detail);

/* The keystore file was (re)loaded for whatever reason: recompute its
 * SHA-256 for status. */
void kms_ksync_note_file(struct kms_ksync *s);

struct kms_ksync_status {
    uint64_t generation;
    char sha256[65];
    char error[256];
};
void kms_ksync_status(struct kms_ksync *s, struct kms_ksync_status *out);

/* Stops the listener and frees. Takes NULL. */
void kms_ksync_free(struct kms_ksync **s);

#endif
