/* Secret bytes: plaintext keys, passwords. STYLE.md: key material.
 *
 * A kms_secret lives on OpenSSL's secure heap (mlocked, excluded from core
 * dumps), is wiped on free, and is never printed. kms_secmem_init must run
 * (and succeed) before any secret is created in a server process. */
#ifndef KMS_COMMON_SECRET_H
#define KMS_COMMON_SECRET_H

#include <openssl/evp.h>
#include <stddef.h>
#include <stdint.h>

#include "common/error.h"

struct kms_secret;

/* Initialise OpenSSL's secure heap of heap_size bytes (power of two) and turn
 * off core dumps (prctl(PR_SET_DUMPABLE, 0), RLIMIT_CORE 0) as ssh-agent does.
 * Returns KMS_ERR_CRYPTO when the secure heap cannot be set up. */
kms_rc kms_secmem_init(size_t heap_size) KMS_MUST_CHECK;

/* Tests and CLI tools that must not mlock: only disables core dumps. */
void kms_secmem_disable_core_dumps(void);

/* New zeroed secret of len bytes (1..65536). The caller owns *out. */
kms_rc kms_secret_new(size_t len, struct kms_secret **out) KMS_MUST_CHECK;
/* New secret holding a copy of data[0..len). */
kms_rc kms_secret_from(const uint8_t *data, size_t len, struct kms_secret **out) KMS_MUST_CHECK;
/* New secret of len random bytes (RAND_priv_bytes). */
kms_rc kms_secret_random(size_t len, struct kms_secret **out) KMS_MUST_CHECK;
/* Wipes and frees *s, sets *s = NULL. Takes NULL and *s == NULL. */
void kms_secret_free(struct kms_secret **s);

uint8_t *kms_secret_data(struct kms_secret *s);
const uint8_t *kms_secret_cdata(const struct kms_secret *s);
size_t kms_secret_len(const struct kms_secret *s);
/* Shrinks the visible length (e.g. after decrypting into a larger buffer). */
void kms_secret_truncate(struct kms_secret *s, size_t len);
/* Constant-time equality (CRYPTO_memcmp); lengths are not secret. */
int kms_secret_equal(const struct kms_secret *a, const struct kms_secret *b);

/* Random bytes for non-secret values (nonces, ids). */
kms_rc kms_random(uint8_t *out, size_t len) KMS_MUST_CHECK;

/* AES-256-GCM from the default provider, fetched once for the process
 * (why: EVP_aes_256_gcm() makes every EVP_*Init_ex do a locked provider
 * lookup). NULL when the fetch failed. Not owned by the caller. */
const EVP_CIPHER *kms_aes256gcm(void);
/* SHA-256, fetched once likewise (EVP_sha256() showed as 2% of the cached
 * unwrap in profiles: one lookup per cache key). */
const EVP_MD *kms_sha256(void);

/* Wipe a buffer in a way the compiler cannot elide. */
void kms_wipe(void *p, size_t len);

#endif
