/* libFuzzer target: the soft backend's key file (hsm/soft/soft.h). The first
 * byte picks the layer:
 *   even: the file image, checked for structure with no password
 *         (kms_soft_file_inspect): any input is refused or gives iterations
 *         within the accepted bounds and a key set that fits the file;
 *   odd:  the key set inside it as it is once opened (kms_soft_keyset_check):
 *         refused, or at most KMS_SOFT_MAX_VERSIONS keys.
 * The password step itself (PBKDF2, 200,000 iterations and more) is not
 * fuzzed: it takes no input but the password, and a forged file cannot pass
 * its AES-GCM tag.
 * Seeds: tests/fuzz/corpus/soft_file (the golden file of tests/golden). */
#include <stdint.h>
#include <stdlib.h>

#include "hsm/soft/soft.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void check(int ok)
{
    if (!ok)
        abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size == 0)
        return 0;
    kms_rc rc;
    if ((data[0] & 1) == 0) {
        uint32_t iterations = 0;
        size_t keyset = 0;
        rc = kms_soft_file_inspect(data + 1, size - 1, &iterations, &keyset);
        check(rc == KMS_OK || rc == KMS_ERR_KEYSTORE_CORRUPT || rc == KMS_ERR_NO_MEMORY);
        if (rc == KMS_OK)
            check(iterations >= KMS_SOFT_MIN_ITERATIONS && keyset >= 2 && keyset < size);
    } else {
        size_t n = 99999;
        rc = kms_soft_keyset_check(data + 1, size - 1, &n);
        check(rc == KMS_OK || rc == KMS_ERR_KEYSTORE_CORRUPT || rc == KMS_ERR_NO_MEMORY);
        check(rc == KMS_OK ? n <= KMS_SOFT_MAX_VERSIONS : n == 0);
    }
    return 0;
}
