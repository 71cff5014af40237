/* libFuzzer target for sealed keystore generations (kms/ksgen.h, SPEC §11):
 * the bytes a node reads from Redis, which anyone with write access to Redis
 * controls.
 *
 * Checks beyond "no crash": opening arbitrary bytes fails with
 * KMS_ERR_UNWRAP, a reason and no output (no tag can be forged by the
 * fuzzer); and the same bytes sealed as a keystore open again to exactly
 * themselves with their metadata. */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "kms/ksgen.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static struct kms_secret *key;

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (key == NULL) {
        uint8_t raw[32];
        memset(raw, 0x42, sizeof(raw));
        if (kms_secret_from(raw, sizeof(raw), &key) != KMS_OK)
            abort();
    }
    struct kms_ksgen_meta m;
    enum kms_ksgen_reject why;
    uint8_t *ks = NULL;
    size_t n = 0;
    kms_rc rc = kms_ksgen_open(key, "fuzz", 1, data, size, &m, &ks, &n, &why);
    if (rc == KMS_OK || ks != NULL || n != 0 || (rc == KMS_ERR_UNWRAP && why == KMS_KSGEN_OK))
        abort();
    if (size == 0 || size > 65536)
        return 0;
    struct kms_ksgen_meta in = {.generation = 1 + (size & 0xff), .time = (int64_t)size, .format = KMS_KEYSTORE_JKS};
    memcpy(in.who, "fuzz@here", 10);
    uint8_t *blob = NULL;
    size_t blen = 0;
    if (kms_ksgen_seal(key, "fuzz", &in, data, size, &blob, &blen) != KMS_OK)
        abort();
    if (kms_ksgen_open(key, "fuzz", in.generation, blob, blen, &m, &ks, &n, &why) != KMS_OK || n != size ||
        memcmp(ks, data, size) != 0 || m.generation != in.generation || strcmp(m.who, "fuzz@here") != 0)
        abort();
    kms_ksgen_free_bytes(&ks, n);
    free(blob);
    return 0;
}
