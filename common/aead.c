#include "common/aead.h"

#include <limits.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <string.h>

static int key_ok(const struct kms_secret *key)
{
    return key != NULL && kms_secret_len(key) == KMS_AEAD_KEY_LEN;
}

kms_rc kms_aead_encrypt(const uint8_t key[KMS_AEAD_KEY_LEN], const uint8_t nonce[KMS_AEAD_NONCE_LEN],
                        const uint8_t *aad, size_t aad_len, const uint8_t *pt, size_t len, uint8_t *ct,
                        uint8_t tag[KMS_AEAD_TAG_LEN])
{
    KMS_ENSURE(len <= KMS_AEAD_MAX_PLAINTEXT && aad_len <= INT_MAX, KMS_ERR_INVALID_FIELD);
    const EVP_CIPHER *gcm = kms_aes256gcm();
    EVP_CIPHER_CTX *x = gcm != NULL ? EVP_CIPHER_CTX_new() : NULL;
    int n = 0;
    int ok = x != NULL && EVP_EncryptInit_ex2(x, gcm, key, nonce, NULL) == 1 &&
             (aad_len == 0 || EVP_EncryptUpdate(x, NULL, &n, aad, (int)aad_len) == 1);
    /* why: EVP takes int lengths; feed large plaintexts in slices */
    for (size_t off = 0; ok && off < len;) {
        size_t step = len - off > (1u << 30) ? (1u << 30) : len - off;
        ok = EVP_EncryptUpdate(x, ct + off, &n, pt + off, (int)step) == 1 && (size_t)n == step;
        off += step;
    }
    ok = ok && EVP_EncryptFinal_ex(x, tag, &n) == 1 &&
         EVP_CIPHER_CTX_ctrl(x, EVP_CTRL_GCM_GET_TAG, KMS_AEAD_TAG_LEN, tag) == 1;
    EVP_CIPHER_CTX_free(x); /* why: also cleanses the key schedule */
    if (!ok) {
        kms_wipe(ct, len);
        kms_fail(KMS_ERR_CRYPTO, "aead: AES-256-GCM encryption failed");
        kms_error_add_openssl();
        return KMS_ERR_CRYPTO;
    }
    return KMS_OK;
}

kms_rc kms_aead_decrypt(const uint8_t key[KMS_AEAD_KEY_LEN], const uint8_t nonce[KMS_AEAD_NONCE_LEN],
                        const uint8_t *aad, size_t aad_len, const uint8_t *ct, size_t len,
                        const uint8_t tag[KMS_AEAD_TAG_LEN], uint8_t *pt)
{
    KMS_ENSURE(len <= KMS_AEAD_MAX_PLAINTEXT && aad_len <= INT_MAX, KMS_ERR_INVALID_FIELD);
    const EVP_CIPHER *gcm = kms_aes256gcm();
    uint8_t t[KMS_AEAD_TAG_LEN];
    memcpy(t, tag, sizeof(t)); /* why: the ctrl takes a non-const pointer */
    EVP_CIPHER_CTX *x = gcm != NULL ? EVP_CIPHER_CTX_new() : NULL;
    int n = 0;
    int ok = x != NULL && EVP_DecryptInit_ex2(x, gcm, key, nonce, NULL) == 1 &&
             (aad_len == 0 || EVP_DecryptUpdate(x, NULL, &n, aad, (int)aad_len) == 1);
    for (size_t off = 0; ok && off < len;) {
        size_t step = len - off > (1u << 30) ? (1u << 30) : len - off;
        ok = EVP_DecryptUpdate(x, pt + off, &n, ct + off, (int)step) == 1 && (size_t)n == step;
        off += step;
    }
    int crypto_ok = ok && EVP_CIPHER_CTX_ctrl(x, EVP_CTRL_GCM_SET_TAG, KMS_AEAD_TAG_LEN, t) == 1;
    int auth_ok = crypto_ok && EVP_DecryptFinal_ex(x, pt + len, &n) == 1;
    EVP_CIPHER_CTX_free(x);
    if (auth_ok)
        return KMS_OK;
    kms_wipe(pt, len);
    if (!crypto_ok) {
        kms_fail(KMS_ERR_CRYPTO, "aead: AES-256-GCM decryption failed");
        kms_error_add_openssl();
        return KMS_ERR_CRYPTO;
    }
    return kms_fail(KMS_ERR_UNWRAP, "aead: authentication failed (wrong key, associated data or a changed byte)");
}

kms_rc kms_aead_seal(const struct kms_secret *key, const uint8_t *aad, size_t aad_len, const uint8_t *pt,
                     size_t pt_len, struct kms_buf *out)
{
    KMS_ENSURE(key_ok(key), KMS_ERR_INVALID_FIELD);
    KMS_ENSURE(pt_len <= KMS_AEAD_MAX_PLAINTEXT && aad_len <= INT_MAX, KMS_ERR_INVALID_FIELD);
    size_t start = out->len;
    uint8_t *at = NULL;
    KMS_GUARD(kms_buf_extend(out, KMS_AEAD_OVERHEAD + pt_len, &at));
    uint8_t *nonce = at, *ct = at + KMS_AEAD_NONCE_LEN, *tag = ct + pt_len;
    kms_rc rc = kms_random(nonce, KMS_AEAD_NONCE_LEN);
    if (rc == KMS_OK)
        rc = kms_aead_encrypt(kms_secret_cdata(key), nonce, aad, aad_len, pt, pt_len, ct, tag);
    if (rc != KMS_OK) {
        kms_wipe(out->data + start, out->len - start);
        out->len = start;
    }
    return rc;
}

kms_rc kms_aead_open(const struct kms_secret *key, const uint8_t *aad, size_t aad_len, struct kms_cursor *in,
                     size_t sealed_len, uint8_t *out, size_t cap, size_t *out_len)
{
    *out_len = 0;
    KMS_ENSURE(key_ok(key) && aad_len <= INT_MAX, KMS_ERR_INVALID_FIELD);
    KMS_ENSURE(sealed_len >= KMS_AEAD_OVERHEAD && sealed_len <= kms_cursor_remaining(in), KMS_ERR_MALFORMED);
    size_t len = sealed_len - KMS_AEAD_OVERHEAD;
    KMS_ENSURE(len <= cap && len <= KMS_AEAD_MAX_PLAINTEXT, KMS_ERR_INVALID_FIELD);
    struct kms_cursor c = *in;
    const uint8_t *nonce, *ct, *tag;
    KMS_GUARD(kms_cursor_bytes(&c, KMS_AEAD_NONCE_LEN, &nonce));
    KMS_GUARD(kms_cursor_bytes(&c, len, &ct));
    KMS_GUARD(kms_cursor_bytes(&c, KMS_AEAD_TAG_LEN, &tag));
    KMS_GUARD(kms_aead_decrypt(kms_secret_cdata(key), nonce, aad, aad_len, ct, len, tag, out));
    *in = c;
    *out_len = len;
    return KMS_OK;
}

kms_rc kms_aead_derive(const struct kms_secret *key, const char *label, struct kms_secret **out)
{
    *out = NULL;
    KMS_ENSURE(key != NULL && label != NULL, KMS_ERR_INVALID_FIELD);
    uint8_t msg[256];
    size_t ll = strlen(label);
    KMS_ENSURE(ll + 1 <= sizeof(msg), KMS_ERR_INVALID_FIELD);
    memcpy(msg, label, ll);
    msg[ll] = 0x01;
    KMS_GUARD(kms_secret_new(32, out));
    size_t n = 0;
    if (EVP_Q_mac(NULL, "HMAC", NULL, "SHA256", NULL, kms_secret_cdata(key), kms_secret_len(key), msg, ll + 1,
                  kms_secret_data(*out), 32, &n) == NULL ||
        n != 32) {
        kms_secret_free(out);
        kms_error_add_openssl();
        return kms_fail(KMS_ERR_CRYPTO, "aead: deriving the subkey '%s'", label);
    }
    return KMS_OK;
}
