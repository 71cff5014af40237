/* libFuzzer target: cache values as Redis holds them (cluster/redis_cache.h,
 * kms_redis_value_open / _seal). A peer that can write to Redis controls
 * these bytes, so:
 *   - any input opened under the node's key is refused (-1, nothing out),
 *     except one this key sealed: no forgery from the fuzzer's bytes;
 *   - a value sealed from the input opens to exactly the input, under the
 *     same name only; any one byte changed, or another name, is refused;
 *   - lengths outside 1..1024 are refused when sealing.
 * Seeds: none needed (any bytes). */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "cluster/redis_cache.h"
#include "common/secret.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void check(int ok)
{
    if (!ok)
        abort();
}

static struct kms_secret *key(void)
{
    static struct kms_secret *k;
    if (k == NULL) {
        uint8_t raw[32];
        for (int i = 0; i < 32; i++)
            raw[i] = (uint8_t)(i * 7 + 1);
        check(kms_secret_from(raw, sizeof(raw), &k) == KMS_OK);
    }
    return k;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static const char name[] = "kms:g1:00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff";
    struct kms_secret *out = NULL;
    /* the input as a stored value: never accepted */
    check(kms_redis_value_open(key(), name, data, size, &out) == -1 && out == NULL);

    /* the input as a value to cache */
    struct kms_secret *v = NULL;
    if (size == 0 || size > 1024 || kms_secret_from(data, size, &v) != KMS_OK) {
        if (size > 1024 && kms_secret_from(data, size, &v) == KMS_OK) {
            uint8_t big[2048];
            size_t n = 0;
            check(kms_redis_value_seal(key(), name, v, big, &n) == -1);
            kms_secret_free(&v);
        }
        return 0;
    }
    uint8_t sealed[1024 + KMS_REDIS_VALUE_OVERHEAD];
    size_t n = 0;
    check(kms_redis_value_seal(key(), name, v, sealed, &n) == 0 && n == size + KMS_REDIS_VALUE_OVERHEAD);
    check(kms_redis_value_open(key(), name, sealed, n, &out) == 0);
    check(kms_secret_len(out) == size && memcmp(kms_secret_cdata(out), data, size) == 0);
    kms_secret_free(&out);
    check(kms_redis_value_open(key(), "kms:g2:other", sealed, n, &out) == -1 && out == NULL);
    size_t at = data[0] % n;
    sealed[at] ^= (uint8_t)(1u << (data[size - 1] % 8));
    check(kms_redis_value_open(key(), name, sealed, n, &out) == -1 && out == NULL);
    check(kms_redis_value_open(key(), name, sealed, n - 1, &out) == -1 && out == NULL);
    kms_secret_free(&v);
    return 0;
}
