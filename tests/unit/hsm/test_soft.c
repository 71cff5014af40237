/* hsm/soft/soft.c: the password-sealed key file (SPEC §8 "soft") and its
 * backend operations. */
#include "hsm/soft/soft.h"

#include <criterion/criterion.h>
#include <dirent.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "common/secret.h"

#define PW "correct horse battery staple"

static char dir[64];
static char path[128];

static void setup(void)
{
    snprintf(dir, sizeof(dir), "/tmp/kms-test-soft-XXXXXX");
    cr_assert_not_null(mkdtemp(dir));
    snprintf(path, sizeof(path), "%s/master.keys", dir);
}

static void teardown(void)
{
    DIR *d = opendir(dir);
    struct dirent *e;
    char p[384];
    while (d != NULL && (e = readdir(d)) != NULL) {
        if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0)
            continue;
        snprintf(p, sizeof(p), "%s/%s", dir, e->d_name);
        unlink(p);
    }
    if (d != NULL)
        closedir(d);
    rmdir(dir);
}

static size_t files_in_dir(void)
{
    DIR *d = opendir(dir);
    struct dirent *e;
    size_t n = 0;
    while ((e = readdir(d)) != NULL)
        if (strcmp(e->d_name, ".") != 0 && strcmp(e->d_name, "..") != 0)
            n++;
    closedir(d);
    return n;
}

static uint8_t *read_all(const char *p, size_t *len)
{
    FILE *f = fopen(p, "rb");
    cr_assert_not_null(f);
    uint8_t *buf = malloc(1 << 20);
    *len = fread(buf, 1, 1 << 20, f);
    fclose(f);
    return buf;
}

static void write_all(const char *p, const uint8_t *data, size_t len)
{
    FILE *f = fopen(p, "wb");
    cr_assert_not_null(f);
    cr_assert_eq(fwrite(data, 1, len, f), len);
    fclose(f);
}

static struct kms_backend *open_ok(const char *default_key)
{
    struct kms_backend *b = NULL;
    cr_assert_eq(kms_soft_open(path, PW, default_key, &b), KMS_OK, "%s", kms_error_detail());
    cr_assert_not_null(b);
    return b;
}

static void encrypt(struct kms_backend *b, const char *name, uint32_t version, const char *aad, const char *msg,
                    uint8_t *ct, size_t *ct_len)
{
    struct kms_master_ref ref;
    struct kms_secret *pt = NULL;
    memset(&ref, 0, sizeof(ref));
    snprintf(ref.name, sizeof(ref.name), "%s", name);
    ref.version = version;
    cr_assert_eq(kms_secret_from((const uint8_t *)msg, strlen(msg), &pt), KMS_OK);
    cr_assert_eq(b->ops->encrypt(b, &ref, (const uint8_t *)aad, strlen(aad), pt, ct, 4096, ct_len), KMS_OK, "%s",
                 kms_error_detail());
    cr_assert_eq(*ct_len, 12 + strlen(msg) + 16);
    kms_secret_free(&pt);
}

static kms_rc decrypt(struct kms_backend *b, const char *name, uint32_t version, const char *aad,
                      const uint8_t *ct, size_t ct_len, const char *expect)
{
    struct kms_master_ref ref;
    struct kms_secret *pt = NULL;
    memset(&ref, 0, sizeof(ref));
    snprintf(ref.name, sizeof(ref.name), "%s", name);
    ref.version = version;
    kms_rc rc = b->ops->decrypt(b, &ref, (const uint8_t *)aad, strlen(aad), ct, ct_len, &pt);
    if (rc == KMS_OK) {
        cr_assert_eq(kms_secret_len(pt), strlen(expect));
        cr_assert_arr_eq(kms_secret_cdata(pt), expect, strlen(expect));
    } else {
        cr_assert_null(pt);
    }
    kms_secret_free(&pt);
    return rc;
}

Test(soft, first_open_creates_the_file, .init = setup, .fini = teardown, .timeout = 60)
{
    struct kms_backend *b = open_ok("master-a");
    struct stat st;
    cr_assert_eq(stat(path, &st), 0);
    cr_assert_eq(st.st_mode & 0777, 0600, "mode %o", st.st_mode & 0777);
    cr_assert_eq(files_in_dir(), 1, "no temporary file left");

    size_t len = 0;
    uint8_t *data = read_all(path, &len);
    cr_assert_eq(memcmp(data, "KMSSOFT1", 8), 0);
    cr_assert_eq(data[8], 1, "PBKDF2-HMAC-SHA256");
    uint32_t iter = ((uint32_t)data[9] << 24) | ((uint32_t)data[10] << 16) | ((uint32_t)data[11] << 8) | data[12];
    cr_assert_geq(iter, 200000);
    cr_assert_eq(iter, KMS_SOFT_ITERATIONS);
    free(data);

    struct kms_master_ref ref;
    cr_assert_eq(b->ops->resolve(b, "master-a", &ref), KMS_OK);
    cr_assert_str_eq(ref.name, "master-a");
    cr_assert_eq(ref.version, 1);
    cr_assert_eq(b->ops->resolve(b, "other", &ref), KMS_ERR_KEY_NOT_FOUND);
    cr_assert_eq(b->ops->probe(b), KMS_OK);

    struct kms_key_info ki;
    cr_assert_eq(b->ops->describe(b, "master-a", &ki), KMS_OK);
    cr_assert_str_eq(ki.name, "master-a");
    cr_assert_str_eq(ki.backend, "soft");
    cr_assert_eq(ki.current_version, 1);
    cr_assert_eq(ki.min_version, 1);
    cr_assert_str_eq(ki.state, "active");
    cr_assert_str_eq(ki.algorithm, "AES-256-GCM");
    cr_assert_leq(llabs(ki.created - (long long)time(NULL)), 5);
    cr_assert_eq(b->ops->describe(b, "other", &ki), KMS_ERR_KEY_NOT_FOUND);
    cr_assert_eq(b->ops->kind, KMS_BACKEND_SOFT);
    cr_assert_str_eq(b->ops->name, "soft");
    kms_backend_free(&b);
    cr_assert_null(b);
    kms_backend_free(&b);
}

Test(soft, reopen_gives_the_same_keys, .init = setup, .fini = teardown, .timeout = 60)
{
    uint8_t ct[4096];
    size_t ct_len = 0;
    struct kms_backend *a = open_ok("master-a");
    encrypt(a, "master-a", 1, "aad-1", "a secret message", ct, &ct_len);
    cr_assert_eq(decrypt(a, "master-a", 1, "aad-1", ct, ct_len, "a secret message"), KMS_OK);
    /* a second instance, default key name irrelevant now */
    struct kms_backend *b = NULL;
    cr_assert_eq(kms_soft_open(path, PW, NULL, &b), KMS_OK, "%s", kms_error_detail());
    cr_assert_eq(decrypt(b, "master-a", 1, "aad-1", ct, ct_len, "a secret message"), KMS_OK);
    kms_backend_free(&a);
    kms_backend_free(&b);
}

Test(soft, encrypt_decrypt_checks, .init = setup, .fini = teardown, .timeout = 60)
{
    uint8_t ct[4096];
    size_t ct_len = 0;
    struct kms_backend *b = open_ok("master-a");
    encrypt(b, "master-a", 1, "aad", "hello", ct, &ct_len);
    uint8_t ct2[4096];
    size_t ct2_len = 0;
    encrypt(b, "master-a", 1, "aad", "hello", ct2, &ct2_len);
    cr_assert_arr_neq(ct, ct2, ct_len, "a fresh nonce each time");

    cr_assert_eq(decrypt(b, "master-a", 1, "aae", ct, ct_len, NULL), KMS_ERR_UNWRAP, "other AAD");
    cr_assert_eq(decrypt(b, "master-a", 1, "", ct, ct_len, NULL), KMS_ERR_UNWRAP, "no AAD");
    cr_assert_eq(decrypt(b, "master-a", 2, "aad", ct, ct_len, NULL), KMS_ERR_KEY_NOT_FOUND, "unknown version");
    cr_assert_eq(decrypt(b, "master-b", 1, "aad", ct, ct_len, NULL), KMS_ERR_KEY_NOT_FOUND, "unknown key");
    cr_assert_eq(decrypt(b, "master-a", 1, "aad", ct, 28, NULL), KMS_ERR_UNWRAP, "no ciphertext");
    cr_assert_eq(decrypt(b, "master-a", 1, "aad", ct, 3, NULL), KMS_ERR_UNWRAP, "short");
    cr_assert_eq(decrypt(b, "master-a", 1, "aad", ct, ct_len - 1, NULL), KMS_ERR_UNWRAP, "truncated");
    for (size_t i = 0; i < ct_len; i++) {
        ct[i] ^= 0x10;
        cr_assert_eq(decrypt(b, "master-a", 1, "aad", ct, ct_len, NULL), KMS_ERR_UNWRAP, "byte %zu", i);
        ct[i] ^= 0x10;
    }
    cr_assert_eq(decrypt(b, "master-a", 1, "aad", ct, ct_len, "hello"), KMS_OK);

    /* encrypt: unknown key, too small a buffer */
    struct kms_master_ref ref = {"master-a", 9};
    struct kms_secret *pt = NULL;
    cr_assert_eq(kms_secret_from((const uint8_t *)"hello", 5, &pt), KMS_OK);
    cr_assert_eq(b->ops->encrypt(b, &ref, NULL, 0, pt, ct, sizeof(ct), &ct_len), KMS_ERR_KEY_NOT_FOUND);
    ref.version = 1;
    cr_assert_eq(b->ops->encrypt(b, &ref, NULL, 0, pt, ct, 32, &ct_len), KMS_ERR_INTERNAL);
    cr_assert_eq(b->ops->encrypt(b, &ref, NULL, 0, pt, ct, 33, &ct_len), KMS_OK);
    cr_assert_eq(ct_len, 33);
    kms_secret_free(&pt);
    kms_backend_free(&b);
}

Test(soft, wrong_password, .init = setup, .fini = teardown, .timeout = 60)
{
    struct kms_backend *b = open_ok("master-a");
    kms_backend_free(&b);
    size_t len0 = 0, len1 = 0;
    uint8_t *before = read_all(path, &len0);
    cr_assert_eq(kms_soft_open(path, "wrong password", "master-a", &b), KMS_ERR_KEYSTORE_PASSWORD);
    cr_assert_null(b);
    cr_assert(strstr(kms_error_detail(), path) != NULL, "names the file: %s", kms_error_detail());
    cr_assert(strstr(kms_error_detail(), "wrong password") != NULL, "%s", kms_error_detail());
    cr_assert(strstr(kms_error_detail(), "wrong password") != NULL);
    cr_assert_eq(kms_soft_open(path, PW "x", "master-a", &b), KMS_ERR_KEYSTORE_PASSWORD);
    uint8_t *after = read_all(path, &len1);
    cr_assert_eq(len0, len1);
    cr_assert_arr_eq(before, after, len0, "the file is left alone");
    free(before);
    free(after);
    cr_assert_eq(kms_soft_open(path, "", "master-a", &b), KMS_ERR_CONFIG, "empty password");
    cr_assert_eq(kms_soft_open(path, NULL, "master-a", &b), KMS_ERR_CONFIG);
    cr_assert_null(b);
}

Test(soft, bad_arguments, .init = setup, .fini = teardown, .timeout = 60)
{
    struct kms_backend *b = NULL;
    cr_assert_eq(kms_soft_open(path, PW, NULL, &b), KMS_ERR_CONFIG, "absent and no default key");
    cr_assert_eq(kms_soft_open(path, PW, "bad name", &b), KMS_ERR_CONFIG);
    cr_assert_eq(kms_soft_open(path, PW, "", &b), KMS_ERR_CONFIG);
    cr_assert_eq(kms_soft_open("", PW, "k", &b), KMS_ERR_CONFIG);
    cr_assert_eq(kms_soft_open(NULL, PW, "k", &b), KMS_ERR_CONFIG);
    cr_assert_null(b);
    cr_assert_eq(files_in_dir(), 0);
    cr_assert_eq(kms_soft_open(dir, PW, "k", &b), KMS_ERR_IO, "a directory");
    char nodir[256];
    snprintf(nodir, sizeof(nodir), "%s/missing/keys", dir);
    cr_assert_eq(kms_soft_open(nodir, PW, "k", &b), KMS_ERR_IO);
    cr_assert_null(b);
}

Test(soft, truncated_at_every_byte, .init = setup, .fini = teardown, .timeout = 60)
{
    struct kms_backend *b = open_ok("master-a");
    kms_backend_free(&b);
    size_t len = 0;
    uint8_t *data = read_all(path, &len);
    for (size_t i = 0; i < len; i++) {
        write_all(path, data, i);
        kms_rc rc = kms_soft_open(path, PW, "master-a", &b);
        cr_assert_eq(rc, KMS_ERR_KEYSTORE_CORRUPT, "truncated to %zu of %zu: %s", i, len, kms_error_name(rc));
        cr_assert_null(b);
    }
    /* a trailing byte */
    uint8_t *longer = malloc(len + 1);
    memcpy(longer, data, len);
    longer[len] = 0;
    write_all(path, longer, len + 1);
    cr_assert_eq(kms_soft_open(path, PW, "master-a", &b), KMS_ERR_KEYSTORE_CORRUPT);
    free(longer);
    /* the intact file still opens */
    write_all(path, data, len);
    b = open_ok("master-a");
    kms_backend_free(&b);
    free(data);
}

static kms_rc open_with_byte(const uint8_t *data, size_t len, size_t off, uint8_t xor)
{
    uint8_t *copy = malloc(len);
    struct kms_backend *b = NULL;
    memcpy(copy, data, len);
    copy[off] ^= xor;
    write_all(path, copy, len);
    free(copy);
    kms_rc rc = kms_soft_open(path, PW, "master-a", &b);
    kms_backend_free(&b);
    return rc;
}

Test(soft, flipped_bits, .init = setup, .fini = teardown, .timeout = 60)
{
    struct kms_backend *b = open_ok("master-a");
    kms_backend_free(&b);
    size_t len = 0;
    uint8_t *data = read_all(path, &len);
    /* layout: magic 0..7, kdf 8, iterations 9..12, salt 13..28, check 29..60,
     * nonce 61..72, ct_len 73..76, ct 77.., tag last 16 */
    cr_assert_eq(open_with_byte(data, len, 0, 1), KMS_ERR_KEYSTORE_CORRUPT, "magic");
    cr_assert_eq(open_with_byte(data, len, 8, 2), KMS_ERR_KEYSTORE_CORRUPT, "kdf");
    cr_assert_eq(open_with_byte(data, len, 9, 0x80), KMS_ERR_KEYSTORE_CORRUPT, "absurd iterations");
    cr_assert_eq(open_with_byte(data, len, 10, 0x08), KMS_ERR_KEYSTORE_CORRUPT, "too few iterations");
    cr_assert_eq(open_with_byte(data, len, 20, 1), KMS_ERR_KEYSTORE_PASSWORD, "salt: another key");
    cr_assert_eq(open_with_byte(data, len, 40, 1), KMS_ERR_KEYSTORE_PASSWORD, "check value");
    cr_assert_eq(open_with_byte(data, len, 65, 1), KMS_ERR_KEYSTORE_CORRUPT, "nonce");
    cr_assert_eq(open_with_byte(data, len, 76, 1), KMS_ERR_KEYSTORE_CORRUPT, "ct_len");
    cr_assert_eq(open_with_byte(data, len, 80, 4), KMS_ERR_KEYSTORE_CORRUPT, "ciphertext");
    cr_assert(strstr(kms_error_detail(), "authentication failed") != NULL, "%s", kms_error_detail());
    cr_assert_eq(open_with_byte(data, len, len - 1, 1), KMS_ERR_KEYSTORE_CORRUPT, "tag");
    write_all(path, (const uint8_t *)"this is not a key file at all\n", 30);
    cr_assert_eq(kms_soft_open(path, PW, "master-a", &b), KMS_ERR_KEYSTORE_CORRUPT);
    cr_assert(strstr(kms_error_detail(), path) != NULL, "%s", kms_error_detail());
    free(data);
}

Test(soft, rotate_and_create, .init = setup, .fini = teardown, .timeout = 60)
{
    uint8_t ct1[4096], ct2[4096];
    size_t ct1_len = 0, ct2_len = 0;
    struct kms_backend *b = open_ok("master-a");
    struct kms_master_ref ref;
    struct kms_key_info ki;
    encrypt(b, "master-a", 1, "x", "version one", ct1, &ct1_len);
    cr_assert_eq(kms_soft_rotate(b, "master-a"), KMS_OK, "%s", kms_error_detail());
    cr_assert_eq(b->ops->resolve(b, "master-a", &ref), KMS_OK);
    cr_assert_eq(ref.version, 2);
    encrypt(b, "master-a", 2, "x", "version two", ct2, &ct2_len);
    cr_assert_eq(decrypt(b, "master-a", 1, "x", ct1, ct1_len, "version one"), KMS_OK);
    cr_assert_eq(decrypt(b, "master-a", 2, "x", ct2, ct2_len, "version two"), KMS_OK);
    cr_assert_eq(decrypt(b, "master-a", 2, "x", ct1, ct1_len, NULL), KMS_ERR_UNWRAP, "v1 ciphertext is not v2's");
    cr_assert_eq(kms_soft_rotate(b, "master-a"), KMS_OK);
    cr_assert_eq(b->ops->describe(b, "master-a", &ki), KMS_OK);
    cr_assert_eq(ki.current_version, 3);
    cr_assert_eq(ki.min_version, 1);

    /* rotate creates a new key; create_key refuses an existing one */
    cr_assert_eq(kms_soft_rotate(b, "master-r"), KMS_OK);
    cr_assert_eq(b->ops->resolve(b, "master-r", &ref), KMS_OK);
    cr_assert_eq(ref.version, 1);
    cr_assert_eq(kms_soft_create_key(b, "master-b"), KMS_OK);
    cr_assert_eq(kms_soft_create_key(b, "master-b"), KMS_ERR_INVALID_FIELD);
    cr_assert_eq(kms_soft_create_key(b, "bad name"), KMS_ERR_INVALID_FIELD);
    cr_assert_eq(kms_soft_rotate(b, ""), KMS_ERR_INVALID_FIELD);

    struct stat st;
    cr_assert_eq(stat(path, &st), 0);
    cr_assert_eq(st.st_mode & 0777, 0600);
    cr_assert_eq(files_in_dir(), 1, "no temporary file left");

    /* persisted: another instance sees all of it */
    struct kms_backend *b2 = open_ok(NULL);
    cr_assert_eq(b2->ops->describe(b2, "master-a", &ki), KMS_OK);
    cr_assert_eq(ki.current_version, 3);
    cr_assert_eq(b2->ops->resolve(b2, "master-b", &ref), KMS_OK);
    cr_assert_eq(b2->ops->resolve(b2, "master-r", &ref), KMS_OK);
    cr_assert_eq(decrypt(b2, "master-a", 1, "x", ct1, ct1_len, "version one"), KMS_OK);
    cr_assert_eq(decrypt(b2, "master-a", 2, "x", ct2, ct2_len, "version two"), KMS_OK);
    kms_backend_free(&b2);
    kms_backend_free(&b);
}

Test(soft, rotate_keeps_the_file_mode_and_password, .init = setup, .fini = teardown, .timeout = 60)
{
    struct kms_backend *b = open_ok("master-a");
    cr_assert_eq(chmod(path, 0644), 0);
    cr_assert_eq(kms_soft_rotate(b, "master-a"), KMS_OK);
    struct stat st;
    cr_assert_eq(stat(path, &st), 0);
    cr_assert_eq(st.st_mode & 0777, 0600, "rewritten 0600");
    kms_backend_free(&b);
    cr_assert_eq(kms_soft_open(path, "wrong", NULL, &b), KMS_ERR_KEYSTORE_PASSWORD);
    b = open_ok(NULL);
    kms_backend_free(&b);
}

Test(soft, rotate_needs_a_soft_backend, .timeout = 60)
{
    struct kms_backend fake = {NULL};
    cr_assert_eq(kms_soft_rotate(&fake, "x"), KMS_ERR_INVALID_FIELD);
    cr_assert_eq(kms_soft_rotate(NULL, "x"), KMS_ERR_INVALID_FIELD);
    cr_assert_eq(kms_soft_create_key(NULL, "x"), KMS_ERR_INVALID_FIELD);
}

Test(soft, version_limit, .init = setup, .fini = teardown, .timeout = 60)
{
    struct kms_backend *b = open_ok("master-a");
    for (int i = 1; i < KMS_SOFT_MAX_VERSIONS; i++)
        cr_assert_eq(kms_soft_rotate(b, "master-a"), KMS_OK, "%d: %s", i, kms_error_detail());
    cr_assert_eq(kms_soft_rotate(b, "master-a"), KMS_ERR_TOO_LARGE);
    kms_backend_free(&b);
    b = open_ok(NULL);
    struct kms_key_info ki;
    cr_assert_eq(b->ops->describe(b, "master-a", &ki), KMS_OK);
    cr_assert_eq(ki.current_version, KMS_SOFT_MAX_VERSIONS);
    kms_backend_free(&b);
}

static void *opener(void *arg)
{
    struct kms_backend **out = arg;
    if (kms_soft_open(path, PW, "master-a", out) != KMS_OK)
        return (void *)1;
    return NULL;
}

Test(soft, concurrent_first_runs_agree, .init = setup, .fini = teardown, .timeout = 60)
{
    struct kms_backend *b[2] = {NULL, NULL};
    pthread_t t[2];
    for (int i = 0; i < 2; i++)
        cr_assert_eq(pthread_create(&t[i], NULL, opener, &b[i]), 0);
    for (int i = 0; i < 2; i++) {
        void *r = (void *)1;
        pthread_join(t[i], &r);
        cr_assert_null(r);
    }
    uint8_t ct[4096];
    size_t ct_len = 0;
    encrypt(b[0], "master-a", 1, "aad", "shared", ct, &ct_len);
    cr_assert_eq(decrypt(b[1], "master-a", 1, "aad", ct, ct_len, "shared"), KMS_OK,
                 "both instances hold the one key in the file");
    cr_assert_eq(files_in_dir(), 1);
    kms_backend_free(&b[0]);
    kms_backend_free(&b[1]);
}

/* The file's structure without the password, and the key set inside it: the
 * layers the fuzzer (tests/fuzz/fuzz_soft_file.c) reaches. */
Test(soft, file_structure_and_key_set_are_checked_without_the_password)
{
    const char *src = getenv("KMS_SOURCE_DIR");
    cr_assert_not_null(src, "KMS_SOURCE_DIR is not set");
    char p[512];
    snprintf(p, sizeof(p), "%s/tests/golden/soft-keys.bin", src);
    FILE *f = fopen(p, "rb");
    cr_assert_not_null(f, "cannot open %s", p);
    uint8_t file[4096];
    size_t n = fread(file, 1, sizeof(file), f);
    fclose(f);
    uint32_t iterations = 0;
    size_t keyset = 0;
    cr_assert_eq(kms_soft_file_inspect(file, n, &iterations, &keyset), KMS_OK, "%s", kms_error_detail());
    cr_assert_geq(iterations, KMS_SOFT_MIN_ITERATIONS);
    cr_assert(keyset >= 2 && keyset < n);
    cr_assert_eq(kms_soft_file_inspect(file, n - 1, &iterations, &keyset), KMS_ERR_KEYSTORE_CORRUPT, "truncated");
    file[0] ^= 1;
    cr_assert_eq(kms_soft_file_inspect(file, n, &iterations, &keyset), KMS_ERR_KEYSTORE_CORRUPT, "no magic");

    /* count 2: kms-master v1 and v2 */
    uint8_t set[2 + 2 * (1 + 10 + 4 + 8 + 32)];
    size_t o = 0;
    set[o++] = 0;
    set[o++] = 2;
    for (uint32_t v = 1; v <= 2; v++) {
        set[o++] = 10;
        memcpy(set + o, "kms-master", 10);
        o += 10;
        set[o++] = 0, set[o++] = 0, set[o++] = 0, set[o++] = (uint8_t)v;
        memset(set + o, 0, 8);
        o += 8;
        memset(set + o, 0x42, 32);
        o += 32;
    }
    size_t keys = 0;
    cr_assert_eq(kms_soft_keyset_check(set, o, &keys), KMS_OK, "%s", kms_error_detail());
    cr_assert_eq(keys, 2);
    cr_assert_eq(kms_soft_keyset_check(set, o - 1, &keys), KMS_ERR_KEYSTORE_CORRUPT);
    cr_assert_eq(keys, 0);
    set[2 + 1 + 10 + 4 + 8 + 32 + 1 + 10 + 3] = 1; /* the second entry says version 1 again */
    cr_assert_eq(kms_soft_keyset_check(set, o, &keys), KMS_ERR_KEYSTORE_CORRUPT);
    cr_assert(strstr(kms_error_detail(), "duplicate") != NULL, "%s", kms_error_detail());
}
