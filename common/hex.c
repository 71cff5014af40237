#include "common/hex.h"

#include <openssl/sha.h>

void kms_hex_encode(const uint8_t *in, size_t len, char *out, size_t cap)
{
    static const char digits[] = "0123456789abcdef";
    if (cap == 0)
        return;
    size_t n = 0;
    for (size_t i = 0; i < len && n + 2 <= cap - 1; i++) {
        out[n++] = digits[in[i] >> 4];
        out[n++] = digits[in[i] & 15];
    }
    out[n] = '\0';
}

void kms_hex_sha256(const uint8_t *data, size_t len, char out[65])
{
    uint8_t d[SHA256_DIGEST_LENGTH];
    SHA256(data, len, d);
    kms_hex_encode(d, sizeof(d), out, 65);
}
