/* A keystore generation (SPEC §11): the whole keystore file of a cluster,
 * sealed under the cluster key for distribution through Redis, and the
 * checks a node makes before it uses one.
 *
 * Sealed layout (every integer big-endian):
 *
 *   header = "KMSKS1" ‖ u8 n ‖ cluster name (n bytes, 1..64) ‖ u64 generation ‖ u8 format
 *   blob   = header ‖ nonce (12) ‖ AES-256-GCM(K_ks, plaintext, AAD = header) ‖ tag (16)
 *   plaintext = u64 time ‖ u8 n ‖ who (user@host) ‖ u16 n ‖ edit (the command) ‖ keystore file bytes
 *
 * K_ks = kms_aead_derive(cluster key, "kmsd cluster keystore v1"). The
 * header is the associated data, so the cluster name, the generation and
 * the format cannot be changed, and a blob sealed for another cluster,
 * another generation or under another key does not open. Metadata (who, what,
 * when) is inside the seal: `kmsctl keystore history` shows only what the
 * cluster key vouches for. */
#ifndef KMS_KMS_KSGEN_H
#define KMS_KMS_KSGEN_H

#include <stddef.h>
#include <stdint.h>
#include <time.h>

#include "common/error.h"
#include "common/secret.h"
#include "kms/keystore.h"

#define KMS_KSGEN_NAME_MAX 64
#define KMS_KSGEN_WHO_MAX 128
#define KMS_KSGEN_EDIT_MAX 512
#define KMS_KSGEN_BLOB_MAX ((16u << 20) + 1024u) /* a keystore file is at most 16 MiB */

struct kms_ksgen_meta {
    uint64_t generation;
    int64_t time; /* Unix seconds, when it was sealed */
    char who[KMS_KSGEN_WHO_MAX + 1];
    char edit[KMS_KSGEN_EDIT_MAX + 1];
    enum kms_keystore_format format;
    char sha256[65]; /* of the keystore file bytes, lower-case hex (not sealed: computed on open) */
};

/* Why a blob was refused; also the label of kms_keystore_rejected_total. */
enum kms_ksgen_reject {
    KMS_KSGEN_OK = 0,
    KMS_KSGEN_MALFORMED,  /* not a sealed generation, truncated, too large */
    KMS_KSGEN_CLUSTER,    /* sealed for another cluster name */
    KMS_KSGEN_GENERATION, /* the header's generation is not the one it was stored as */
    KMS_KSGEN_AUTH,       /* does not authenticate: other cluster key, changed bytes */
    KMS_KSGEN_STALE,      /* not above the generation this node has (replay, rollback) */
    KMS_KSGEN_INVALID,    /* opens, but the keystore fails a node's checks */
};
const char *kms_ksgen_reject_name(enum kms_ksgen_reject r); /* "malformed", "cluster", ... */

/* Seals ks[0..ks_len) as generation m->generation of cluster (with m's time,
 * who, edit, format). *out is malloc'd (free with kms_ksgen_free_bytes).
 * Errors: KMS_ERR_INVALID_FIELD (cluster name, who/edit too long, keystore
 * empty or too large), KMS_ERR_CRYPTO, KMS_ERR_NO_MEMORY. */
kms_rc kms_ksgen_seal(const struct kms_secret *cluster_key, const char *cluster, const struct kms_ksgen_meta *m,
                      const uint8_t *ks, size_t ks_len, uint8_t **out, size_t *out_len) KMS_MUST_CHECK;

/* Opens a blob stored as generation expect_gen of cluster. On success fills
 * *m (sha256 included) and *ks (malloc'd, wiped by kms_ksgen_free_bytes).
 * Errors: KMS_ERR_UNWRAP with *why set to the reason (never a key byte in
 * the detail), KMS_ERR_NO_MEMORY, KMS_ERR_CRYPTO. */
kms_rc kms_ksgen_open(const struct kms_secret *cluster_key, const char *cluster, uint64_t expect_gen,
                      const uint8_t *blob, size_t len, struct kms_ksgen_meta *m, uint8_t **ks, size_t *ks_len,
                      enum kms_ksgen_reject *why) KMS_MUST_CHECK;

/* Wipes and frees bytes from seal/open. */
void kms_ksgen_free_bytes(uint8_t **p, size_t len);

/* The checks a node makes on a keystore before it serves with it, the same
 * for a file at start, a reload and a distributed generation: it loads
 * with password; server_alias is a private-key entry whose key matches its
 * certificate; that certificate, and client_alias's when client_alias is
 * non-NULL and present, are inside their validity period now. name is used
 * in details. *out (may be NULL) receives the loaded keystore. Errors: the
 * loader's, KMS_ERR_ALIAS_NOT_FOUND, KMS_ERR_INVALID_FIELD (key mismatch,
 * expired or not yet valid; the detail names the alias and date). */
kms_rc kms_ksgen_check(const uint8_t *ks, size_t len, const char *name, const char *password,
                       const char *server_alias, const char *client_alias, struct kms_keystore **out) KMS_MUST_CHECK;

#endif
