#include "common/secret.h"

#include <openssl/crypto.h>
#include <openssl/rand.h>
#include <pthread.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/resource.h>

#define SECRET_MAX (64 * 1024)

struct kms_secret {
    size_t len;
    size_t cap;
    uint8_t data[];
};

void kms_secmem_disable_core_dumps(void)
{
    struct rlimit rl = {0, 0};
    (void)setrlimit(RLIMIT_CORE, &rl);
    (void)prctl(PR_SET_DUMPABLE, 0, 0, 0, 0);
}

kms_rc kms_secmem_init(size_t heap_size)
{
    kms_secmem_disable_core_dumps();
    if (CRYPTO_secure_malloc_initialized())
        return KMS_OK;
    /* why: returns 2 when the heap works but mlock failed (e.g. RLIMIT_MEMLOCK
     * too low): still a separate, wiped heap, so accept it and say so. */
    int r = CRYPTO_secure_malloc_init(heap_size, 64);
    if (r == 0)
        return kms_fail(KMS_ERR_CRYPTO, "CRYPTO_secure_malloc_init(%zu) failed", heap_size);
    if (r == 2)
        kms_error_set_detail("secure heap is not mlocked (raise RLIMIT_MEMLOCK)");
    return KMS_OK;
}

kms_rc kms_secret_new(size_t len, struct kms_secret **out)
{
    *out = NULL;
    if (len == 0 || len > SECRET_MAX)
        return kms_fail(KMS_ERR_INTERNAL, "secret length %zu out of range", len);
    struct kms_secret *s = OPENSSL_secure_zalloc(sizeof(*s) + len);
    if (s == NULL)
        return kms_fail(KMS_ERR_NO_MEMORY, "secure heap exhausted");
    s->len = len;
    s->cap = len;
    *out = s;
    return KMS_OK;
}

kms_rc kms_secret_from(const uint8_t *data, size_t len, struct kms_secret **out)
{
    KMS_GUARD(kms_secret_new(len, out));
    memcpy((*out)->data, data, len);
    return KMS_OK;
}

kms_rc kms_secret_random(size_t len, struct kms_secret **out)
{
    KMS_GUARD(kms_secret_new(len, out));
    if (RAND_priv_bytes((*out)->data, (int)len) != 1) {
        kms_secret_free(out);
        return kms_fail(KMS_ERR_CRYPTO, "RAND_priv_bytes failed");
    }
    return KMS_OK;
}

void kms_secret_free(struct kms_secret **s)
{
    if (s == NULL || *s == NULL)
        return;
    OPENSSL_secure_clear_free(*s, sizeof(**s) + (*s)->cap);
    *s = NULL;
}

uint8_t *kms_secret_data(struct kms_secret *s) { return s->data; }
const uint8_t *kms_secret_cdata(const struct kms_secret *s) { return s->data; }
size_t kms_secret_len(const struct kms_secret *s) { return s->len; }

void kms_secret_truncate(struct kms_secret *s, size_t len)
{
    if (len < s->len) {
        OPENSSL_cleanse(s->data + len, s->len - len);
        s->len = len;
    }
}

int kms_secret_equal(const struct kms_secret *a, const struct kms_secret *b)
{
    if (a->len != b->len)
        return 0;
    return CRYPTO_memcmp(a->data, b->data, a->len) == 0;
}

kms_rc kms_random(uint8_t *out, size_t len)
{
    if (RAND_bytes(out, (int)len) != 1)
        return kms_fail(KMS_ERR_CRYPTO, "RAND_bytes failed");
    return KMS_OK;
}

static EVP_CIPHER *aes256gcm;
static pthread_once_t aes256gcm_once = PTHREAD_ONCE_INIT;

static void fetch_aes256gcm(void)
{
    aes256gcm = EVP_CIPHER_fetch(NULL, "AES-256-GCM", NULL);
}

const EVP_CIPHER *kms_aes256gcm(void)
{
    (void)pthread_once(&aes256gcm_once, fetch_aes256gcm);
    return aes256gcm;
}

static EVP_MD *sha256;
static pthread_once_t sha256_once = PTHREAD_ONCE_INIT;

static void fetch_sha256(void)
{
    sha256 = EVP_MD_fetch(NULL, "SHA256", NULL);
}

const EVP_MD *kms_sha256(void)
{
    (void)pthread_once(&sha256_once, fetch_sha256);
    return sha256;
}

void kms_wipe(void *p, size_t len)
{
    if (p != NULL)
        OPENSSL_cleanse(p, len);
}
