/* The one AEAD (common/aead.h): AES-256-GCM, nonce ‖ ciphertext ‖ tag through
 * a bounded buffer and a cursor. Every changed byte, a wrong key or wrong
 * associated data must fail to open, and a failure must leave nothing behind. */
#include <criterion/criterion.h>

#include <string.h>

#include "common/aead.h"

static struct kms_secret *key_of(uint8_t fill)
{
    uint8_t k[KMS_AEAD_KEY_LEN];
    memset(k, fill, sizeof(k));
    struct kms_secret *s = NULL;
    cr_assert_eq(kms_secret_from(k, sizeof(k), &s), KMS_OK);
    return s;
}

static const uint8_t aad[] = "header";
static const uint8_t msg[] = "a keystore file, or a cluster key";

static void seal(const struct kms_secret *k, struct kms_buf *out)
{
    kms_buf_init(out, 4096);
    cr_assert_eq(kms_aead_seal(k, aad, sizeof(aad), msg, sizeof(msg), out), KMS_OK);
}

Test(aead, seals_and_opens_with_the_documented_layout, .timeout = 60)
{
    struct kms_secret *k = key_of(7);
    struct kms_buf b;
    kms_buf_init(&b, 4096);
    cr_assert_eq(kms_buf_append(&b, "prefix", 6), KMS_OK);
    cr_assert_eq(kms_aead_seal(k, aad, sizeof(aad), msg, sizeof(msg), &b), KMS_OK);
    cr_assert_eq(b.len, 6 + KMS_AEAD_NONCE_LEN + sizeof(msg) + KMS_AEAD_TAG_LEN);
    cr_assert_eq(memcmp(b.data, "prefix", 6), 0, "seal appends");
    cr_assert_neq(memcmp(b.data + 6 + KMS_AEAD_NONCE_LEN, msg, sizeof(msg)), 0, "ciphertext is not the plaintext");
    struct kms_cursor c;
    kms_cursor_init(&c, b.data, b.len);
    cr_assert_eq(kms_cursor_skip(&c, 6), KMS_OK);
    uint8_t out[64];
    size_t n = 0;
    cr_assert_eq(kms_aead_open(k, aad, sizeof(aad), &c, b.len - 6, out, sizeof(out), &n), KMS_OK);
    cr_assert_eq(n, sizeof(msg));
    cr_assert_eq(memcmp(out, msg, n), 0);
    cr_assert_eq(kms_cursor_remaining(&c), 0, "the cursor advanced past the sealed bytes");
    kms_buf_free(&b);
    kms_secret_free(&k);
}

Test(aead, every_seal_has_a_fresh_nonce, .timeout = 60)
{
    struct kms_secret *k = key_of(1);
    struct kms_buf a, b;
    seal(k, &a);
    seal(k, &b);
    cr_assert_neq(memcmp(a.data, b.data, KMS_AEAD_NONCE_LEN), 0);
    cr_assert_neq(memcmp(a.data + KMS_AEAD_NONCE_LEN, b.data + KMS_AEAD_NONCE_LEN, sizeof(msg)), 0);
    kms_buf_free(&a);
    kms_buf_free(&b);
    kms_secret_free(&k);
}

Test(aead, any_changed_byte_wrong_key_or_aad_fails_and_wipes, .timeout = 60)
{
    struct kms_secret *k = key_of(2), *other = key_of(3);
    struct kms_buf b;
    seal(k, &b);
    uint8_t out[64];
    size_t n = 99;
    for (size_t i = 0; i < b.len; i++) {
        b.data[i] ^= 0x80;
        struct kms_cursor c;
        kms_cursor_init(&c, b.data, b.len);
        memset(out, 0xAA, sizeof(out));
        cr_assert_eq(kms_aead_open(k, aad, sizeof(aad), &c, b.len, out, sizeof(out), &n), KMS_ERR_UNWRAP,
                     "byte %zu changed and still opened", i);
        cr_assert_eq(n, 0);
        cr_assert_eq(c.pos, 0, "a failed open moved the cursor");
        for (size_t j = 0; j < sizeof(msg); j++)
            cr_assert_eq(out[j], 0, "plaintext left behind after a failed open");
        b.data[i] ^= 0x80;
    }
    struct kms_cursor c;
    kms_cursor_init(&c, b.data, b.len);
    cr_assert_eq(kms_aead_open(other, aad, sizeof(aad), &c, b.len, out, sizeof(out), &n), KMS_ERR_UNWRAP);
    cr_assert_eq(kms_aead_open(k, (const uint8_t *)"other", 5, &c, b.len, out, sizeof(out), &n), KMS_ERR_UNWRAP);
    cr_assert_eq(kms_aead_open(k, NULL, 0, &c, b.len, out, sizeof(out), &n), KMS_ERR_UNWRAP);
    cr_assert_eq(kms_aead_open(k, aad, sizeof(aad), &c, b.len, out, sizeof(out), &n), KMS_OK);
    kms_buf_free(&b);
    kms_secret_free(&k);
    kms_secret_free(&other);
}

Test(aead, bounds_are_checked_before_anything_is_read, .timeout = 60)
{
    struct kms_secret *k = key_of(4);
    struct kms_buf b;
    seal(k, &b);
    uint8_t out[64];
    size_t n = 0;
    struct kms_cursor c;
    kms_cursor_init(&c, b.data, b.len - 1); /* truncated */
    cr_assert_eq(kms_aead_open(k, aad, sizeof(aad), &c, b.len, out, sizeof(out), &n), KMS_ERR_MALFORMED);
    kms_cursor_init(&c, b.data, b.len);
    cr_assert_eq(kms_aead_open(k, aad, sizeof(aad), &c, KMS_AEAD_OVERHEAD - 1, out, sizeof(out), &n),
                 KMS_ERR_MALFORMED);
    cr_assert_eq(kms_aead_open(k, aad, sizeof(aad), &c, b.len, out, sizeof(msg) - 1, &n), KMS_ERR_INVALID_FIELD,
                 "output smaller than the plaintext");
    cr_assert_eq(c.pos, 0);
    /* an empty plaintext is fine: only nonce and tag */
    struct kms_buf e;
    kms_buf_init(&e, 64);
    cr_assert_eq(kms_aead_seal(k, NULL, 0, NULL, 0, &e), KMS_OK);
    cr_assert_eq(e.len, KMS_AEAD_OVERHEAD);
    kms_cursor_init(&c, e.data, e.len);
    cr_assert_eq(kms_aead_open(k, NULL, 0, &c, e.len, out, 0, &n), KMS_OK);
    cr_assert_eq(n, 0);
    /* a buffer too small for the result: error, and the buffer keeps its length */
    struct kms_buf small;
    kms_buf_init(&small, 20);
    cr_assert_eq(kms_buf_append(&small, "abc", 3), KMS_OK);
    cr_assert_eq(kms_aead_seal(k, aad, sizeof(aad), msg, sizeof(msg), &small), KMS_ERR_TOO_LARGE);
    cr_assert_eq(small.len, 3);
    /* keys of the wrong length are refused */
    struct kms_secret *short_key = NULL;
    cr_assert_eq(kms_secret_from((const uint8_t *)"0123456789abcdef", 16, &short_key), KMS_OK);
    cr_assert_eq(kms_aead_seal(short_key, aad, sizeof(aad), msg, sizeof(msg), &e), KMS_ERR_INVALID_FIELD);
    kms_secret_free(&short_key);
    kms_buf_free(&small);
    kms_buf_free(&e);
    kms_buf_free(&b);
    kms_secret_free(&k);
}

Test(aead, derived_keys_differ_by_label_and_repeat_for_one, .timeout = 60)
{
    struct kms_secret *k = key_of(5), *a = NULL, *a2 = NULL, *b = NULL;
    cr_assert_eq(kms_aead_derive(k, "one purpose", &a), KMS_OK);
    cr_assert_eq(kms_aead_derive(k, "one purpose", &a2), KMS_OK);
    cr_assert_eq(kms_aead_derive(k, "another purpose", &b), KMS_OK);
    cr_assert_eq(kms_secret_len(a), 32);
    cr_assert(kms_secret_equal(a, a2));
    cr_assert_not(kms_secret_equal(a, b));
    cr_assert_not(kms_secret_equal(a, k));
    kms_secret_free(&a);
    kms_secret_free(&a2);
    kms_secret_free(&b);
    kms_secret_free(&k);
}

static void unhex(const char *h, uint8_t *out, size_t n)
{
    cr_assert_eq(strlen(h), 2 * n);
    for (size_t i = 0; i < n; i++) {
        unsigned v = 0;
        for (int j = 0; j < 2; j++) {
            char ch = h[2 * i + (size_t)j];
            v = v * 16 + (unsigned)(ch <= '9' ? ch - '0' : ch - 'a' + 10);
        }
        out[i] = (uint8_t)v;
    }
}

/* The AES-256 test case with associated data of the GCM specification (McGrew
 * and Viega, test case 16), also what python3-cryptography computes: the one
 * AEAD every sealer of kmsd now goes through is standard AES-256-GCM. */
Test(aead, detached_encrypt_and_decrypt_match_the_gcm_specification, .timeout = 60)
{
    uint8_t key[32], nonce[12], pt[60], aad16[20], want_ct[60], want_tag[16], ct[60], tag[16], back[60];
    unhex("feffe9928665731c6d6a8f9467308308feffe9928665731c6d6a8f9467308308", key, 32);
    unhex("cafebabefacedbaddecaf888", nonce, 12);
    unhex("d9313225f88406e5a55909c5aff5269a86a7a9531534f7da2e4c303d8a318a721c3c0c95956809532fcf0e24"
          "49a6b525b16aedf5aa0de657ba637b39",
          pt, 60);
    unhex("feedfacedeadbeeffeedfacedeadbeefabaddad2", aad16, 20);
    unhex("522dc1f099567d07f47f37a32a84427d643a8cdcbfe5c0c97598a2bd2555d1aa8cb08e48590dbb3da7b08b10"
          "56828838c5f61e6393ba7a0abcc9f662",
          want_ct, 60);
    unhex("76fc6ece0f4e1768cddf8853bb2d551b", want_tag, 16);
    cr_assert_eq(kms_aead_encrypt(key, nonce, aad16, sizeof(aad16), pt, sizeof(pt), ct, tag), KMS_OK);
    cr_assert_arr_eq(ct, want_ct, sizeof(ct));
    cr_assert_arr_eq(tag, want_tag, sizeof(tag));
    cr_assert_eq(kms_aead_decrypt(key, nonce, aad16, sizeof(aad16), ct, sizeof(ct), tag, back), KMS_OK);
    cr_assert_arr_eq(back, pt, sizeof(pt));
    /* one changed bit of the associated data, of the ciphertext or of the tag: refused, output wiped */
    uint8_t zero[60] = {0};
    aad16[19] ^= 1;
    cr_assert_eq(kms_aead_decrypt(key, nonce, aad16, sizeof(aad16), ct, sizeof(ct), tag, back), KMS_ERR_UNWRAP);
    cr_assert_arr_eq(back, zero, sizeof(back));
    aad16[19] ^= 1;
    ct[0] ^= 0x80;
    cr_assert_eq(kms_aead_decrypt(key, nonce, aad16, sizeof(aad16), ct, sizeof(ct), tag, back), KMS_ERR_UNWRAP);
    ct[0] ^= 0x80;
    tag[15] ^= 1;
    cr_assert_eq(kms_aead_decrypt(key, nonce, aad16, sizeof(aad16), ct, sizeof(ct), tag, back), KMS_ERR_UNWRAP);
    /* and seal's layout is exactly nonce ‖ encrypt's ciphertext ‖ its tag */
    struct kms_secret *k = NULL;
    cr_assert_eq(kms_secret_from(key, sizeof(key), &k), KMS_OK);
    struct kms_buf sealed;
    kms_buf_init(&sealed, 1024);
    cr_assert_eq(kms_aead_seal(k, aad16, sizeof(aad16), pt, sizeof(pt), &sealed), KMS_OK);
    cr_assert_eq(kms_aead_encrypt(key, sealed.data, aad16, sizeof(aad16), pt, sizeof(pt), ct, tag), KMS_OK);
    cr_assert_arr_eq(sealed.data + 12, ct, sizeof(ct));
    cr_assert_arr_eq(sealed.data + 12 + sizeof(ct), tag, sizeof(tag));
    kms_buf_free(&sealed);
    kms_secret_free(&k);
}
