/* KMIP client (SPEC §8): TTLV over TLS 1.2+ to one KMIP server, with a pool
 * of persistent connections.
 *
 * TLS: the client presents a certificate + key (+ chain) given as OpenSSL
 * objects (kmsd takes them from the keystore's kms.keystore.alias entry) and
 * verifies the server's chain against a given X509_STORE (the keystore's
 * trusted CA entries, e.g. kmipSigningCA; a trusted intermediate is an
 * anchor too) and the server's name against the host it connects to (DNS
 * name or IP address in the subjectAltName).
 *
 * Pool: up to pool_size connections. A request takes an idle connection
 * (checked first: one the server closed is dropped), or opens a new one while
 * fewer than pool_size exist, or waits for one, at most pool_wait_ms. A
 * request that finds its reused connection dead before any byte of the
 * answer arrived is sent once more on a new connection (not Create/Activate,
 * which are not idempotent). When connecting fails, the client backs off:
 * for backoff_min_ms, doubling up to backoff_max_ms, every request fails at
 * once with KMS_ERR_BACKEND_UNAVAILABLE; the first connection that succeeds
 * resets it. So after the server comes back the pool recovers by itself.
 *
 * Protocol version: negotiated once, with DiscoverVersions (KMIP 1.4 §4.26),
 * before the first other request (in kms_kmip_client_open unless
 * defer_connect). The client speaks KMIP 1.4, the first version with the
 * AES-GCM fields; a server without 1.4 is refused with a message naming the
 * versions it has.
 *
 * Every function is thread-safe. Errors are the error table's codes with a
 * detail starting "KMIP server host:port: ":
 *   KMS_ERR_BACKEND_UNAVAILABLE  cannot connect (refused, unreachable, DNS,
 *                                TLS handshake failure, in backoff), or the
 *                                connection broke
 *   KMS_ERR_BACKEND_TIMEOUT      no answer within io_timeout_ms, or no free
 *                                connection within pool_wait_ms
 *   KMS_ERR_BACKEND              the server answered an error, or garbage
 *   KMS_ERR_KEY_NOT_FOUND        Item Not Found
 *   KMS_ERR_UNWRAP               Decrypt: the tag did not verify
 *   KMS_ERR_INVALID_FIELD        a bad argument (name, UID, lengths)
 *   KMS_ERR_NO_MEMORY, KMS_ERR_CRYPTO, KMS_ERR_CONFIG (open: bad options)
 *
 * The process should ignore SIGPIPE (kmsd does); the client also blocks it
 * around its own socket writes. */
#ifndef KMS_HSM_KMIP_CLIENT_H
#define KMS_HSM_KMIP_CLIENT_H

#include <openssl/evp.h>
#include <openssl/x509.h>
#include <stddef.h>
#include <stdint.h>

#include "common/error.h"
#include "common/secret.h"
#include "hsm/kmip/kmip_msg.h"

#define KMS_KMIP_DEFAULT_POOL 4
#define KMS_KMIP_DEFAULT_CONNECT_MS 5000
#define KMS_KMIP_DEFAULT_IO_MS 10000
#define KMS_KMIP_DEFAULT_BACKOFF_MIN_MS 100
#define KMS_KMIP_DEFAULT_BACKOFF_MAX_MS 5000
#define KMS_KMIP_MAX_POOL 64

struct kms_kmip_client_options {
    const char *host;            /* DNS name or IP literal; what the server certificate must name */
    uint16_t port;               /* 0: 5696 */
    X509 *cert;                  /* client certificate (borrowed; the client takes a reference) */
    EVP_PKEY *key;               /* its private key (borrowed, referenced) */
    STACK_OF(X509) *chain;       /* intermediates to send after cert; may be NULL (borrowed, copied) */
    X509_STORE *trust;           /* CAs that may sign the server certificate (borrowed, referenced) */
    unsigned pool_size;          /* 0: KMS_KMIP_DEFAULT_POOL; at most KMS_KMIP_MAX_POOL */
    unsigned connect_timeout_ms; /* TCP connect + TLS handshake; 0: KMS_KMIP_DEFAULT_CONNECT_MS */
    unsigned io_timeout_ms;      /* one request: send + whole answer; 0: KMS_KMIP_DEFAULT_IO_MS */
    unsigned pool_wait_ms;       /* wait for a free connection; 0: io_timeout_ms */
    unsigned backoff_min_ms;     /* 0: KMS_KMIP_DEFAULT_BACKOFF_MIN_MS */
    unsigned backoff_max_ms;     /* 0: KMS_KMIP_DEFAULT_BACKOFF_MAX_MS */
    int defer_connect;           /* non-zero: open does not connect; the first request negotiates */
};

struct kms_kmip_client;

/* Creates a client (*out is the caller's: kms_kmip_client_free) and, unless
 * defer_connect, connects and negotiates the protocol version, so that a
 * wrong address, an untrusted certificate or a server without KMIP 1.4 fail
 * here with a clear detail. KMS_ERR_CONFIG for missing or inconsistent
 * options (no host, cert/key mismatch, pool_size too large). */
kms_rc kms_kmip_client_open(const struct kms_kmip_client_options *o, struct kms_kmip_client **out) KMS_MUST_CHECK;
/* Closes every connection and frees the client. No call may be in progress.
 * Takes NULL; sets *c = NULL. */
void kms_kmip_client_free(struct kms_kmip_client **c);

/* Replaces the client's TLS identity (certificate, key, chain) and the CAs
 * it trusts for the server, e.g. after kmsd's keystore was renewed. The new
 * context is built exactly as kms_kmip_client_open builds it; on error
 * (KMS_ERR_CONFIG: cert/key mismatch or unusable, missing argument;
 * KMS_ERR_CRYPTO) the old identity stays in force. On success, idle pooled
 * connections are closed, connections in flight finish their request and
 * are then closed instead of pooled, and every new connection presents the
 * new certificate; no request fails because of the swap. Arguments are
 * borrowed (referenced / copied). Thread-safe. */
kms_rc kms_kmip_client_set_identity(struct kms_kmip_client *c, X509 *cert, EVP_PKEY *key, STACK_OF(X509) *chain,
                                    X509_STORE *trust) KMS_MUST_CHECK;
/* The certificate the client presents now (a new reference: X509_free), or
 * NULL. */
X509 *kms_kmip_client_get1_cert(struct kms_kmip_client *c);

/* "host:port" (static for the client's lifetime). */
const char *kms_kmip_client_endpoint(const struct kms_kmip_client *c);
/* The negotiated version (negotiating first if needed). */
kms_rc kms_kmip_client_version(struct kms_kmip_client *c, struct kms_kmip_version *out) KMS_MUST_CHECK;

/* A cheap liveness check: DiscoverVersions offering the negotiated version,
 * with at most timeout_ms (0: io_timeout_ms) of waiting. */
kms_rc kms_kmip_client_probe(struct kms_kmip_client *c, unsigned timeout_ms) KMS_MUST_CHECK;

struct kms_kmip_client_stats {
    uint64_t requests;        /* round trips attempted */
    uint64_t connects;        /* connections opened (TLS handshakes that succeeded) */
    uint64_t connect_failures;
    uint64_t retries;         /* requests sent again after a dead pooled connection */
    uint64_t dropped;         /* pooled connections found dead or broken */
    uint64_t retired;         /* connections closed because the identity was replaced */
    unsigned open;            /* connections that exist now */
};
void kms_kmip_client_stats(struct kms_kmip_client *c, struct kms_kmip_client_stats *out);

/* ---- operations (for the backend and for kmsctl hsm) ------------------- */

/* DiscoverVersions with an empty offer: every version the server speaks,
 * highest first as the server lists them; the first cap into out. */
kms_rc kms_kmip_discover(struct kms_kmip_client *c, struct kms_kmip_version *out, size_t cap,
                         size_t *n) KMS_MUST_CHECK;
/* Query Operations, Objects and Server Information. */
kms_rc kms_kmip_query(struct kms_kmip_client *c, struct kms_kmip_server_info *out) KMS_MUST_CHECK;
/* Create an AES-256 key usable for Encrypt|Decrypt named name, then
 * Activate it; uid receives its Unique Identifier. If Activate fails the key
 * exists (pre-active): the detail names its UID, and uid is set. */
kms_rc kms_kmip_create_key(struct kms_kmip_client *c, const char *name, char uid[KMS_KMIP_UID_MAX + 1]) KMS_MUST_CHECK;
/* Activate uid (a Pre-Active key). */
kms_rc kms_kmip_activate(struct kms_kmip_client *c, const char *uid) KMS_MUST_CHECK;
/* Locate by Name: the first min(cap, *found) UIDs into uids; *found = all. */
kms_rc kms_kmip_locate(struct kms_kmip_client *c, const char *name, char (*uids)[KMS_KMIP_UID_MAX + 1], size_t cap,
                       size_t *found) KMS_MUST_CHECK;
/* All attributes of uid (the ones kms_kmip_attributes knows). */
kms_rc kms_kmip_get_attributes(struct kms_kmip_client *c, const char *uid,
                               struct kms_kmip_attributes *out) KMS_MUST_CHECK;
/* GetAttributes of uid restricted to State, Cryptographic Algorithm,
 * Cryptographic Length (cheaper than all). */
kms_rc kms_kmip_get_key_state(struct kms_kmip_client *c, const char *uid,
                              struct kms_kmip_attributes *out) KMS_MUST_CHECK;

/* AES-GCM under uid with a caller-chosen 12-byte nonce and aad (may be
 * empty): ct gets pt_len bytes, tag 16. KMS_ERR_BACKEND when the server
 * answers another length or no tag. */
kms_rc kms_kmip_encrypt_gcm(struct kms_kmip_client *c, const char *uid, const uint8_t nonce[KMS_KMIP_GCM_NONCE_LEN],
                            const uint8_t *aad, size_t aad_len, const uint8_t *pt, size_t pt_len, uint8_t *ct,
                            uint8_t tag[KMS_KMIP_GCM_TAG_LEN]) KMS_MUST_CHECK;
/* The reverse; *pt is a new secret (the caller's). KMS_ERR_UNWRAP when the
 * tag does not verify. */
kms_rc kms_kmip_decrypt_gcm(struct kms_kmip_client *c, const char *uid, const uint8_t nonce[KMS_KMIP_GCM_NONCE_LEN],
                            const uint8_t *aad, size_t aad_len, const uint8_t *ct, size_t ct_len,
                            const uint8_t tag[KMS_KMIP_GCM_TAG_LEN], struct kms_secret **pt) KMS_MUST_CHECK;

#endif
