#include "kms/cluster_key.h"

#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/aead.h"
#include "common/base64.h"
#include "common/buf.h"

#define SALT_LEN 16
#define ITER_MIN 10000u
#define ITER_MAX 10000000u
#define SEALED_LEN (KMS_CLUSTER_KEY_BYTES + KMS_AEAD_OVERHEAD)
#define LINE_MAX_LEN 256

int kms_cluster_key_is_sealed(const char *text)
{
    while (text != NULL && (*text == ' ' || *text == '\t' || *text == '\n' || *text == '\r'))
        text++;
    return text != NULL && strncmp(text, KMS_CLUSTER_KEY_MAGIC, strlen(KMS_CLUSTER_KEY_MAGIC)) == 0;
}

/* PBKDF2-HMAC-SHA256(password, salt, iterations) as a new 32-byte secret. */
static kms_rc wrapping_key(const char *password, const uint8_t salt[SALT_LEN], unsigned iterations,
                           struct kms_secret **out)
{
    KMS_GUARD(kms_secret_new(KMS_AEAD_KEY_LEN, out));
    if (PKCS5_PBKDF2_HMAC(password, (int)strlen(password), salt, SALT_LEN, (int)iterations, EVP_sha256(),
                          KMS_AEAD_KEY_LEN, kms_secret_data(*out)) != 1) {
        kms_secret_free(out);
        kms_error_add_openssl();
        return kms_fail(KMS_ERR_CRYPTO, "cluster key: PBKDF2 failed");
    }
    return KMS_OK;
}

kms_rc kms_cluster_key_seal(const struct kms_secret *key, const char *password, unsigned iterations, char **out)
{
    *out = NULL;
    if (key == NULL || kms_secret_len(key) != KMS_CLUSTER_KEY_BYTES)
        return kms_fail(KMS_ERR_INVALID_FIELD, "cluster key: must be %d bytes", KMS_CLUSTER_KEY_BYTES);
    if (password == NULL || password[0] == '\0')
        return kms_fail(KMS_ERR_INVALID_FIELD, "cluster key: sealing needs the keystore password");
    if (iterations < ITER_MIN || iterations > ITER_MAX)
        return kms_fail(KMS_ERR_INVALID_FIELD, "cluster key: iterations must be %u..%u", ITER_MIN, ITER_MAX);
    uint8_t salt[SALT_LEN];
    KMS_GUARD(kms_random(salt, sizeof(salt)));
    char salt_b64[32], head[96];
    KMS_GUARD(kms_b64_encode(salt, sizeof(salt), salt_b64, sizeof(salt_b64)));
    (void)snprintf(head, sizeof(head), KMS_CLUSTER_KEY_MAGIC "%u:%s:", iterations, salt_b64);
    struct kms_secret *wk = NULL;
    KMS_GUARD(wrapping_key(password, salt, iterations, &wk));
    struct kms_buf sealed;
    kms_buf_init(&sealed, SEALED_LEN);
    kms_rc rc = kms_aead_seal(wk, (const uint8_t *)head, strlen(head), kms_secret_cdata(key),
                              kms_secret_len(key), &sealed);
    kms_secret_free(&wk);
    char *line = NULL;
    if (rc == KMS_OK) {
        size_t cap = strlen(head) + kms_b64_encoded_len(sealed.len) + 2;
        line = malloc(cap);
        if (line == NULL)
            rc = kms_fail(KMS_ERR_NO_MEMORY, "cluster key");
        else {
            memcpy(line, head, strlen(head));
            rc = kms_b64_encode(sealed.data, sealed.len, line + strlen(head), cap - strlen(head) - 1);
            if (rc == KMS_OK)
                memcpy(line + strlen(line), "\n", 2);
        }
    }
    kms_buf_free(&sealed);
    if (rc != KMS_OK) {
        free(line);
        return rc;
    }
    *out = line;
    return KMS_OK;
}

kms_rc kms_cluster_key_open(const char *text, const char *password, const char *what, struct kms_secret **out)
{
    *out = NULL;
    if (text == NULL || text[0] == '\0')
        return kms_fail(KMS_ERR_CONFIG, "%s is empty: make a cluster key with 'kmsctl cluster key create'", what);
    while (*text == ' ' || *text == '\t' || *text == '\n' || *text == '\r')
        text++;
    size_t len = strnlen(text, LINE_MAX_LEN + 1);
    while (len > 0 && (text[len - 1] == ' ' || text[len - 1] == '\t' || text[len - 1] == '\n' ||
                       text[len - 1] == '\r'))
        len--;
    if (!kms_cluster_key_is_sealed(text))
        return kms_fail(KMS_ERR_CONFIG,
                        "%s does not hold a sealed cluster key (a key in clear is refused, SPEC §11): make one "
                        "with 'kmsctl cluster key create --out FILE', or seal an existing base64 key with "
                        "'kmsctl cluster key create --from-plain OLDFILE --out FILE'",
                        what);
    if (len > LINE_MAX_LEN)
        return kms_fail(KMS_ERR_CONFIG, "%s: sealed cluster key longer than %d characters", what, LINE_MAX_LEN);
    char line[LINE_MAX_LEN + 1];
    memcpy(line, text, len);
    line[len] = '\0';
    /* <magic><iterations>:<salt>:<sealed> */
    char *p = line + strlen(KMS_CLUSTER_KEY_MAGIC);
    char *c1 = strchr(p, ':');
    char *c2 = c1 ? strchr(c1 + 1, ':') : NULL;
    unsigned long iter = 0;
    for (char *q = p; c1 != NULL && q < c1; q++) {
        if (*q < '0' || *q > '9' || iter > ITER_MAX) {
            iter = 0;
            break;
        }
        iter = iter * 10 + (unsigned long)(*q - '0');
    }
    uint8_t salt[SALT_LEN + 3], sealed[SEALED_LEN + 3];
    size_t salt_len = 0, sealed_len = 0;
    if (c2 == NULL || iter < ITER_MIN || iter > ITER_MAX ||
        kms_b64_decode(c1 + 1, (size_t)(c2 - c1 - 1), salt, sizeof(salt), &salt_len) != KMS_OK ||
        salt_len != SALT_LEN ||
        kms_b64_decode(c2 + 1, strlen(c2 + 1), sealed, sizeof(sealed), &sealed_len) != KMS_OK ||
        sealed_len != SEALED_LEN)
        return kms_fail(KMS_ERR_CONFIG, "%s: malformed sealed cluster key (expected " KMS_CLUSTER_KEY_MAGIC
                                        "ITERATIONS:SALT:SEALED)", what);
    if (password == NULL || password[0] == '\0')
        return kms_fail(KMS_ERR_CONFIG, "%s: opening the cluster key needs kms.keystore.password", what);
    struct kms_secret *wk = NULL;
    KMS_GUARD(wrapping_key(password, salt, (unsigned)iter, &wk));
    kms_rc rc = kms_secret_new(KMS_CLUSTER_KEY_BYTES, out);
    struct kms_cursor cur;
    kms_cursor_init(&cur, sealed, sealed_len);
    size_t n = 0;
    if (rc == KMS_OK)
        rc = kms_aead_open(wk, (const uint8_t *)line, (size_t)(c2 + 1 - line), &cur, sealed_len,
                           kms_secret_data(*out), KMS_CLUSTER_KEY_BYTES, &n);
    kms_secret_free(&wk);
    if (rc != KMS_OK || n != KMS_CLUSTER_KEY_BYTES) {
        kms_secret_free(out);
        if (rc == KMS_ERR_UNWRAP || rc == KMS_OK)
            return kms_fail(KMS_ERR_KEYSTORE_PASSWORD,
                            "%s: the cluster key does not open with the keystore password (wrong password, sealed "
                            "for another keystore, or changed)", what);
        return rc;
    }
    return KMS_OK;
}
