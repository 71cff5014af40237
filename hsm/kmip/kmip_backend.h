/* The KMIP backend (SPEC §8 "kmip1"): the master key lives in a KMIP server
 * (an HSM) and never leaves it; kmsd sends it Encrypt/Decrypt with AES-256-GCM
 * (KMIP 1.4 fields) through hsm/kmip/kmip_client.h.
 *
 * Master keys are named by KMIP Unique Identifier or by Name. resolve(name)
 * uses name as a UID when a key with that UID exists, else Locates it by
 * Name (exactly one match; none is KMS_ERR_KEY_NOT_FOUND, several is
 * KMS_ERR_BACKEND naming them), checks the key is an Active AES-256 key, and
 * caches name -> UID for name_cache_ms. The reference it returns names the
 * UID (version 0), which is what wrapped keys record, so keys wrapped under
 * an older master key keep unwrapping after the configured name moves on.
 *
 * Ciphertexts this backend makes: nonce[12] | ciphertext | tag[16], the
 * nonce drawn by kmsd (RAND_bytes) for every encryption, the caller's AAD
 * sent as Authenticated Encryption Additional Data.
 *
 * describe() reports state, algorithm and creation date from GetAttributes;
 * probe() is a DiscoverVersions with probe_timeout_ms. The backend never
 * sends Get: it never sees key material. */
#ifndef KMS_HSM_KMIP_BACKEND_H
#define KMS_HSM_KMIP_BACKEND_H

#include "common/error.h"
#include "hsm/backend.h"
#include "hsm/kmip/kmip_client.h"

#define KMS_KMIP_DEFAULT_NAME_CACHE_MS 30000
#define KMS_KMIP_DEFAULT_PROBE_MS 2000

struct kms_kmip_options {
    struct kms_kmip_client_options client; /* see kmip_client.h; borrowed objects are referenced */
    unsigned name_cache_ms;                /* 0: KMS_KMIP_DEFAULT_NAME_CACHE_MS */
    unsigned probe_timeout_ms;             /* 0: KMS_KMIP_DEFAULT_PROBE_MS */
};

/* Opens the client (connecting and negotiating KMIP 1.4 unless
 * opts->client.defer_connect) and the backend; *out is the caller's
 * (kms_backend_free). Errors as kms_kmip_client_open. */
kms_rc kms_kmip_backend_open(const struct kms_kmip_options *opts, struct kms_backend **out) KMS_MUST_CHECK;

/* The backend's client (borrowed from b; NULL when b is not a KMIP backend),
 * for kmsctl-style operations and statistics. */
struct kms_kmip_client *kms_kmip_backend_client(struct kms_backend *b);

/* Replaces kmsd's TLS identity toward the KMIP server (client certificate,
 * key, chain) and the CAs trusted for the server's certificate, without
 * dropping requests: see kms_kmip_client_set_identity. KMS_ERR_CONFIG when
 * b is not a KMIP backend or the certificate and key do not match; the old
 * identity then stays in force. */
kms_rc kms_kmip_backend_set_identity(struct kms_backend *b, X509 *cert, EVP_PKEY *key, STACK_OF(X509) *chain,
                                     X509_STORE *trust) KMS_MUST_CHECK;

/* Forgets every cached name -> UID mapping (after an operator re-points a
 * Name, or for tests). */
void kms_kmip_backend_flush(struct kms_backend *b);

#endif
