/* libFuzzer target for the Java properties parser (common/properties.h).
 *
 *   clang -g -O1 -fsanitize=fuzzer,address,undefined -I. tests/fuzz/fuzz_properties.c \
 *       common/properties.c common/buf.c common/secret.c common/error.c -lcrypto -o fuzz_properties
 *   ./fuzz_properties tests/fuzz/corpus/properties
 *
 * Checks beyond "no crash": a success holds only NUL-free keys and values that
 * kms_props_get finds again, and line numbers are consistent. */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "common/properties.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct kms_props *p = NULL;
    kms_rc rc = kms_props_parse((const char *)data, size, "fuzz", &p);
    if (rc != KMS_OK) {
        if (p != NULL || (rc != KMS_ERR_MALFORMED && rc != KMS_ERR_NO_MEMORY))
            abort();
        return 0;
    }
    size_t n = kms_props_count(p);
    if (n > 4096)
        abort();
    for (size_t i = 0; i < n; i++) {
        const char *k = kms_props_key(p, i), *v = kms_props_value(p, i);
        if (k == NULL || v == NULL || kms_props_get(p, k) != v)
            abort();
        /* Output never outgrows the input (escapes only shrink). */
        if (strlen(k) > size || strlen(v) > size)
            abort();
        unsigned line = kms_props_line(p, i), first = kms_props_first_line(p, i);
        if (line == 0 || first == 0 || first > line)
            abort();
    }
    kms_props_free(&p);
    return 0;
}
