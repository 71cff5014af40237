/* Keystore reader (kms/keystore.h, SPEC §6) against keystores that keytool and
 * openssl write at test time (make_keystores.sh, run once before the tests),
 * plus hand-made damaged and hostile files.
 *
 * No per-test .timeout: Criterion 2.4.1's runner leaks a 48-byte timer record
 * when timed tests finish concurrently (--jobs 2), which fails the ASan build
 * (reproduced: the leak comes and goes with the .timeout attributes alone).
 * ctest's TIMEOUT (300 s per binary) still bounds a hang. */
#include "kms/keystore.h"
#include "kms/keystore_write.h"

#include <criterion/criterion.h>
#include <criterion/hooks.h>
#include <errno.h>
#include <fcntl.h>
#include <openssl/evp.h>
#include <openssl/pkcs12.h>
#include <openssl/rand.h>
#include <openssl/x509.h>
#include <pthread.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#define PASSWORD "S3cret-pw!"
#define WRONG "wrong-Pa55"

extern char **environ;

/* ---- fixtures ----------------------------------------------------------- */

static char fixture_dir[64];

static int run(char *const argv[])
{
    pid_t pid;
    int status;
    if (posix_spawn(&pid, argv[0], NULL, NULL, argv, environ) != 0)
        return -1;
    if (waitpid(pid, &status, 0) != pid)
        return -1;
    return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

ReportHook(PRE_ALL)(struct criterion_test_set *set)
{
    (void)set;
    const char *src = getenv("KMS_SOURCE_DIR");
    char script[4096];
    snprintf(fixture_dir, sizeof(fixture_dir), "/tmp/kms-keystore-XXXXXX");
    snprintf(script, sizeof(script), "%s/tests/unit/kms/make_keystores.sh", src ? src : ".");
    if (mkdtemp(fixture_dir) == NULL)
        return;
    char *argv[] = {"/bin/sh", script, fixture_dir, PASSWORD, NULL};
    if (run(argv) == 0)
        setenv("KMS_KS_FIXTURES", fixture_dir, 1);
}

ReportHook(POST_ALL)(struct criterion_global_stats *stats)
{
    (void)stats;
    if (fixture_dir[0] != '\0' && strncmp(fixture_dir, "/tmp/kms-keystore-", 18) == 0) {
        char *argv[] = {"/bin/rm", "-rf", fixture_dir, NULL};
        (void)run(argv);
    }
}

static const char *fx_dir(void)
{
    const char *d = getenv("KMS_KS_FIXTURES");
    cr_assert_not_null(d, "fixtures were not built (make_keystores.sh failed; see its logs)");
    return d;
}

static void fx_path(char *out, size_t cap, const char *name)
{
    snprintf(out, cap, "%s/%s", fx_dir(), name);
}

static uint8_t *read_all(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    cr_assert_not_null(f, "cannot open %s", path);
    cr_assert_eq(fseek(f, 0, SEEK_END), 0);
    long n = ftell(f);
    cr_assert_geq(n, 0);
    rewind(f);
    uint8_t *d = malloc((size_t)n + 1);
    cr_assert_not_null(d);
    cr_assert_eq(fread(d, 1, (size_t)n, f), (size_t)n);
    fclose(f);
    *len = (size_t)n;
    return d;
}

static uint8_t *fx_read(const char *name, size_t *len)
{
    char p[512];
    fx_path(p, sizeof(p), name);
    return read_all(p, len);
}

static void write_all(const char *path, const void *d, size_t n)
{
    FILE *f = fopen(path, "wb");
    cr_assert_not_null(f, "cannot create %s", path);
    cr_assert_eq(fwrite(d, 1, n, f), n);
    cr_assert_eq(fclose(f), 0);
}

/* Concatenation of fixture files (and literal text for lines starting "@"). */
static uint8_t *concat(size_t *len, const char *const *parts)
{
    size_t cap = 65536, n = 0;
    uint8_t *out = malloc(cap);
    cr_assert_not_null(out);
    for (; *parts; parts++) {
        const uint8_t *d;
        size_t dl;
        uint8_t *owned = NULL;
        if ((*parts)[0] == '@') {
            d = (const uint8_t *)*parts + 1;
            dl = strlen(*parts + 1);
        } else {
            owned = fx_read(*parts, &dl);
            d = owned;
        }
        cr_assert_lt(n + dl, cap);
        memcpy(out + n, d, dl);
        n += dl;
        free(owned);
    }
    *len = n;
    return out;
}

/* Loads data as if it came from a file called name; checks the detail on error. */
static kms_rc load_as(const uint8_t *d, size_t n, const char *name, const char *pw, struct kms_keystore **ks)
{
    kms_error_clear();
    kms_rc rc = kms_keystore_load_mem(d, n, name, pw, ks);
    if (rc != KMS_OK) {
        cr_assert_null(*ks);
        const char *det = kms_error_detail();
        cr_assert_not_null(strstr(det, name), "detail does not name the file: %s", det);
        cr_assert_null(strstr(det, PASSWORD), "detail shows the password: %s", det);
        cr_assert_null(strstr(det, WRONG), "detail shows the password: %s", det);
    }
    return rc;
}

static kms_rc load_fx(const char *file, const char *pw, struct kms_keystore **ks)
{
    size_t n;
    uint8_t *d = fx_read(file, &n);
    kms_rc rc = load_as(d, n, file, pw, ks);
    free(d);
    return rc;
}

static void expect_rc(kms_rc got, kms_rc want, const char *what)
{
    cr_assert_eq(got, want, "%s: got %s, want %s (%s)", what, kms_error_name(got), kms_error_name(want),
                 kms_error_detail());
}

static void expect_detail(const char *needle)
{
    cr_assert_not_null(strstr(kms_error_detail(), needle), "detail '%s' lacks '%s'", kms_error_detail(), needle);
}

static void fx_sha256(const char *der_file, uint8_t out[32])
{
    size_t n;
    uint8_t *d = fx_read(der_file, &n);
    cr_assert_eq(EVP_Digest(d, n, out, NULL, EVP_sha256(), NULL), 1);
    free(d);
}

static int cert_is_file(X509 *x, const char *der_file)
{
    size_t n;
    uint8_t *d = fx_read(der_file, &n);
    uint8_t *mine = NULL;
    int len = i2d_X509(x, &mine);
    int same = len == (int)n && memcmp(mine, d, n) == 0;
    OPENSSL_free(mine);
    free(d);
    return same;
}

/* ---- every format holds the same entries -------------------------------- */

static const struct {
    const char *alias;
    const char *der;
    int key;
    int ca;
} expected[] = {
    {"kmsserver", "server.der", 1, 0},
    {"kmipsigningca", "ca.der", 0, 1},
    {"cmxbackend", "backend.der", 0, 0},
    {"cmxdevice", "device.der", 0, 0},
};

static void check_same_entries(const char *file, enum kms_keystore_format fmt, const char *pw)
{
    struct kms_keystore *ks = NULL;
    expect_rc(load_fx(file, pw, &ks), KMS_OK, file);
    cr_assert_eq(kms_keystore_format(ks), fmt, "%s: format %s", file, kms_keystore_format_name(kms_keystore_format(ks)));
    cr_assert_str_eq(kms_keystore_path(ks), file);
    cr_assert_eq(kms_keystore_count(ks), KMS_ARRAY_LEN(expected), "%s: %zu entries", file, kms_keystore_count(ks));
    for (size_t i = 0; i < KMS_ARRAY_LEN(expected); i++) {
        const struct kms_ks_entry *e = kms_keystore_find(ks, expected[i].alias);
        cr_assert_not_null(e, "%s: no alias %s", file, expected[i].alias);
        cr_assert_eq(strcasecmp(kms_ks_entry_alias(e), expected[i].alias), 0);
        uint8_t h[32];
        fx_sha256(expected[i].der, h);
        cr_assert_eq(memcmp(kms_ks_entry_sha256(e), h, 32), 0, "%s: %s fingerprint", file, expected[i].alias);
        size_t dlen;
        const uint8_t *der = kms_ks_entry_der(e, &dlen);
        cr_assert(cert_is_file(kms_ks_entry_cert(e), expected[i].der));
        cr_assert_not_null(der);
        cr_assert_gt(dlen, 100);
        cr_assert_eq(kms_ks_entry_is_ca(e) != 0, expected[i].ca, "%s: %s is_ca", file, expected[i].alias);
        cr_assert_not_null(kms_ks_entry_chain(e));
        if (expected[i].key) {
            cr_assert_eq(kms_ks_entry_type(e), KMS_KS_PRIVATE_KEY);
            cr_assert_not_null(kms_ks_entry_key(e));
            cr_assert_eq(X509_check_private_key(kms_ks_entry_cert(e), kms_ks_entry_key(e)), 1);
            STACK_OF(X509) *chain = kms_ks_entry_chain(e);
            cr_assert_eq(sk_X509_num(chain), 2, "%s: chain of %d", file, sk_X509_num(chain));
            cr_assert(cert_is_file(sk_X509_value(chain, 0), "inter.der"), "%s: chain[0] is not the intermediate", file);
            cr_assert(cert_is_file(sk_X509_value(chain, 1), "ca.der"), "%s: chain[1] is not the root", file);
        } else {
            cr_assert_eq(kms_ks_entry_type(e), KMS_KS_CERTIFICATE);
            cr_assert_null(kms_ks_entry_key(e));
            cr_assert_eq(sk_X509_num(kms_ks_entry_chain(e)), 0);
        }
    }
    for (size_t i = 0; i < kms_keystore_count(ks); i++)
        cr_assert_not_null(kms_keystore_entry(ks, i));
    cr_assert_null(kms_keystore_entry(ks, kms_keystore_count(ks)));
    kms_keystore_free(&ks);
    cr_assert_null(ks);
    kms_keystore_free(&ks); /* takes NULL */
    kms_keystore_free(NULL);
}

Test(keystore, jks_from_keytool) { check_same_entries("ks.jks", KMS_KEYSTORE_JKS, PASSWORD); }
Test(keystore, pkcs12_modern_from_keytool)
{
    check_same_entries("ks-modern.p12", KMS_KEYSTORE_PKCS12, PASSWORD);
}
/* keytool -genseckey: a secret-key entry, read by alias, kept apart from the
 * certificate entries, written back as keytool wrote it; a format that
 * cannot hold it is refused rather than losing it. */
Test(keystore, secret_key_entries_are_read_and_written_back)
{
    struct kms_keystore *ks = NULL, *plain = NULL, *back = NULL;
    cr_assert_eq(load_fx("ks-secret.p12", PASSWORD, &ks), KMS_OK, "%s", kms_error_detail());
    cr_assert_eq(load_fx("ks-modern.p12", PASSWORD, &plain), KMS_OK, "%s", kms_error_detail());
    cr_assert_eq(kms_keystore_count(ks), kms_keystore_count(plain), "a secret key is no certificate entry");
    cr_assert_eq(kms_keystore_secret_count(ks), 1);
    cr_assert_eq(kms_keystore_secret_count(plain), 0);
    struct kms_secret *k1 = NULL, *k2 = NULL;
    cr_assert_eq(kms_keystore_secret_key(ks, "KMSAUDIT", &k1), KMS_OK, "aliases are case-insensitive");
    cr_assert_eq(kms_secret_len(k1), 32, "HmacSHA256, 256 bits");
    cr_assert_eq(kms_keystore_secret_key(ks, "nope", &k2), KMS_ERR_ALIAS_NOT_FOUND);
    cr_assert(strstr(kms_error_detail(), "no secret-key entry 'nope'") != NULL, "%s", kms_error_detail());
    uint8_t *der = NULL;
    size_t len = 0;
    cr_assert_eq(kms_keystore_serialize(ks, PASSWORD, &der, &len), KMS_OK, "%s", kms_error_detail());
    cr_assert_eq(kms_keystore_load_mem(der, len, "back.p12", PASSWORD, &back), KMS_OK, "%s", kms_error_detail());
    cr_assert_eq(kms_keystore_secret_key(back, "kmsaudit", &k2), KMS_OK, "%s", kms_error_detail());
    cr_assert(kms_secret_equal(k1, k2), "the same key after writing and reading back");
    cr_assert_eq(kms_keystore_count(back), kms_keystore_count(ks));
    free(der);
    for (int f = 0; f < 2; f++) {
        kms_keystore_set_format(ks, f == 0 ? KMS_KEYSTORE_JKS : KMS_KEYSTORE_PEM);
        der = NULL;
        cr_assert_eq(kms_keystore_serialize(ks, PASSWORD, &der, &len), KMS_ERR_KEYSTORE_FORMAT);
        cr_assert_null(der);
        cr_assert(strstr(kms_error_detail(), "cannot hold secret-key entries such as 'kmsaudit'") != NULL, "%s",
                  kms_error_detail());
    }
    kms_secret_free(&k1);
    kms_secret_free(&k2);
    kms_keystore_free(&ks);
    kms_keystore_free(&plain);
    kms_keystore_free(&back);
}

Test(keystore, pkcs12_legacy_from_keytool)
{
    check_same_entries("ks-legacy.p12", KMS_KEYSTORE_PKCS12, PASSWORD);
}
Test(keystore, pkcs12_modern_from_openssl)
{
    check_same_entries("ossl-modern.p12", KMS_KEYSTORE_PKCS12, PASSWORD);
}
Test(keystore, pkcs12_legacy_from_openssl)
{
    check_same_entries("ossl-legacy.p12", KMS_KEYSTORE_PKCS12, PASSWORD);
}
Test(keystore, pem_bundle) { check_same_entries("bundle.pem", KMS_KEYSTORE_PEM, NULL); }
Test(keystore, pem_bundle_encrypted_key)
{
    check_same_entries("bundle-enc.pem", KMS_KEYSTORE_PEM, PASSWORD);
}
Test(keystore, pem_from_openssl_pkcs12_nodes)
{
    check_same_entries("nodes.pem", KMS_KEYSTORE_PEM, NULL);
}

static int contains(const uint8_t *d, size_t n, const uint8_t *needle, size_t m)
{
    for (size_t i = 0; i + m <= n; i++)
        if (memcmp(d + i, needle, m) == 0)
            return 1;
    return 0;
}

/* The legacy tests prove nothing if the tools quietly wrote modern files. */
Test(keystore, fixtures_use_the_algorithms_they_claim)
{
    static const uint8_t rc2_40[] = {0x06, 0x0A, 0x2A, 0x86, 0x48, 0x86, 0xF7, 0x0D, 0x01, 0x0C, 0x01, 0x06};
    static const uint8_t aes256cbc[] = {0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x01, 0x2A};
    static const char *legacy[] = {"ks-legacy.p12", "ossl-legacy.p12"}, *modern[] = {"ks-modern.p12", "ossl-modern.p12"};
    for (size_t i = 0; i < 2; i++) {
        size_t n;
        uint8_t *d = fx_read(legacy[i], &n);
        cr_assert(contains(d, n, rc2_40, sizeof(rc2_40)), "%s has no RC2-40", legacy[i]);
        cr_assert(!contains(d, n, aes256cbc, sizeof(aes256cbc)), "%s uses AES", legacy[i]);
        free(d);
        d = fx_read(modern[i], &n);
        cr_assert(contains(d, n, aes256cbc, sizeof(aes256cbc)), "%s has no AES-256-CBC", modern[i]);
        cr_assert(!contains(d, n, rc2_40, sizeof(rc2_40)), "%s uses RC2", modern[i]);
        free(d);
    }
}

/* ---- lookups ------------------------------------------------------------ */

Test(keystore, alias_lookup_is_case_insensitive)
{
    static const char *files[] = {"ks.jks", "ks-modern.p12", "bundle.pem"};
    for (size_t f = 0; f < KMS_ARRAY_LEN(files); f++) {
        struct kms_keystore *ks = NULL;
        expect_rc(load_fx(files[f], PASSWORD, &ks), KMS_OK, files[f]);
        const struct kms_ks_entry *a = kms_keystore_find(ks, "CMXBACKEND"), *b = kms_keystore_find(ks, "cmxBackend");
        cr_assert_not_null(a);
        cr_assert_eq(a, b);
        cr_assert_eq(kms_keystore_find(ks, "KmsServer"), kms_keystore_find(ks, "kmsserver"));
        cr_assert_not_null(kms_keystore_find(ks, "KMSSERVER"));
        cr_assert_null(kms_keystore_find(ks, "cmxback"));
        cr_assert_null(kms_keystore_find(ks, "cmxbackend "));
        cr_assert_null(kms_keystore_find(ks, ""));
        cr_assert_null(kms_keystore_find(ks, NULL));
        kms_keystore_free(&ks);
    }
}

Test(keystore, find_cert_der_matches_certificate_entries_only)
{
    static const char *files[] = {"ks.jks", "ks-legacy.p12", "ossl-modern.p12", "nodes.pem"};
    for (size_t f = 0; f < KMS_ARRAY_LEN(files); f++) {
        struct kms_keystore *ks = NULL;
        expect_rc(load_fx(files[f], PASSWORD, &ks), KMS_OK, files[f]);
        size_t n;
        uint8_t *d = fx_read("backend.der", &n);
        const struct kms_ks_entry *e = kms_keystore_find_cert_der(ks, d, n);
        cr_assert_not_null(e, "%s: cmxbackend not found by DER", files[f]);
        cr_assert_eq(strcasecmp(kms_ks_entry_alias(e), "cmxbackend"), 0);
        cr_assert_null(kms_keystore_find_cert_der(ks, d, n - 1), "a prefix must not match");
        d[n / 2] ^= 1;
        cr_assert_null(kms_keystore_find_cert_der(ks, d, n), "a changed byte must not match");
        free(d);
        /* the server's certificate is a private-key entry's leaf: not a pinned client */
        d = fx_read("server.der", &n);
        cr_assert_null(kms_keystore_find_cert_der(ks, d, n), "%s: server cert matched", files[f]);
        free(d);
        /* the intermediate CA is only chain material */
        d = fx_read("inter.der", &n);
        cr_assert_null(kms_keystore_find_cert_der(ks, d, n), "%s: intermediate matched", files[f]);
        free(d);
        /* the root is the kmipsigningca certificate entry, flagged as a CA so
         * that the identity layer can refuse it (SPEC §5) */
        d = fx_read("ca.der", &n);
        e = kms_keystore_find_cert_der(ks, d, n);
        cr_assert_not_null(e);
        cr_assert(kms_ks_entry_is_ca(e));
        cr_assert_eq(strcasecmp(kms_ks_entry_alias(e), "kmipsigningca"), 0);
        free(d);
        cr_assert_null(kms_keystore_find_cert_der(ks, NULL, 0));
        kms_keystore_free(&ks);
    }
}

Test(keystore, format_names)
{
    cr_assert_str_eq(kms_keystore_format_name(KMS_KEYSTORE_JKS), "JKS");
    cr_assert_str_eq(kms_keystore_format_name(KMS_KEYSTORE_PKCS12), "PKCS12");
    cr_assert_str_eq(kms_keystore_format_name(KMS_KEYSTORE_PEM), "PEM");
}

/* ---- passwords ---------------------------------------------------------- */

Test(keystore, wrong_password_is_a_password_error)
{
    static const char *files[] = {"ks.jks",          "ks-modern.p12",   "ks-legacy.p12",
                                  "ossl-modern.p12", "ossl-legacy.p12", "bundle-enc.pem"};
    for (size_t f = 0; f < KMS_ARRAY_LEN(files); f++) {
        struct kms_keystore *ks = NULL;
        expect_rc(load_fx(files[f], WRONG, &ks), KMS_ERR_KEYSTORE_PASSWORD, files[f]);
        expect_detail("password is incorrect");
        expect_rc(load_fx(files[f], "", &ks), KMS_ERR_KEYSTORE_PASSWORD, files[f]);
        expect_rc(load_fx(files[f], NULL, &ks), KMS_ERR_KEYSTORE_PASSWORD, files[f]);
        expect_detail("password is needed");
    }
}

Test(keystore, jks_key_password_other_than_store_password)
{
    struct kms_keystore *ks = NULL;
    expect_rc(load_fx("ks-keypass.jks", PASSWORD, &ks), KMS_ERR_KEYSTORE_PASSWORD, "ks-keypass.jks");
    expect_detail("password other than the keystore password");
}

Test(keystore, jks_damaged_digest_with_right_password_is_corrupt)
{
    size_t n;
    uint8_t *d = fx_read("ks.jks", &n);
    d[n - 1] ^= 0x55;
    struct kms_keystore *ks = NULL;
    expect_rc(load_as(d, n, "ks.jks", PASSWORD, &ks), KMS_ERR_KEYSTORE_CORRUPT, "right password");
    expect_detail("modified or damaged");
    expect_rc(load_as(d, n, "ks.jks", WRONG, &ks), KMS_ERR_KEYSTORE_PASSWORD, "wrong password");
    free(d);
}

Test(keystore, pkcs12_damaged_mac_with_right_password_is_corrupt)
{
    static const char *files[] = {"ks-modern.p12", "ossl-legacy.p12"};
    for (size_t f = 0; f < KMS_ARRAY_LEN(files); f++) {
        size_t n;
        uint8_t *d = fx_read(files[f], &n);
        const uint8_t *p = d;
        PKCS12 *p12 = d2i_PKCS12(NULL, &p, (long)n);
        cr_assert_not_null(p12);
        const ASN1_OCTET_STRING *mac = NULL;
        PKCS12_get0_mac(&mac, NULL, NULL, NULL, p12);
        cr_assert_not_null(mac);
        const uint8_t *m = ASN1_STRING_get0_data(mac);
        size_t ml = (size_t)ASN1_STRING_length(mac), at = SIZE_MAX;
        for (size_t i = 0; i + ml <= n; i++)
            if (memcmp(d + i, m, ml) == 0)
                at = i;
        PKCS12_free(p12);
        cr_assert_neq(at, SIZE_MAX);
        d[at] ^= 0x01;
        struct kms_keystore *ks = NULL;
        expect_rc(load_as(d, n, files[f], PASSWORD, &ks), KMS_ERR_KEYSTORE_CORRUPT, files[f]);
        expect_detail("modified or damaged");
        expect_rc(load_as(d, n, files[f], WRONG, &ks), KMS_ERR_KEYSTORE_PASSWORD, files[f]);
        free(d);
    }
}

Test(keystore, pkcs12_empty_and_absent_passwords)
{
    struct kms_keystore *ks = NULL;
    expect_rc(load_fx("empty-pw.p12", "", &ks), KMS_OK, "empty-pw.p12 with \"\"");
    cr_assert_not_null(kms_ks_entry_key(kms_keystore_find(ks, "kmsserver")));
    kms_keystore_free(&ks);
    expect_rc(load_fx("empty-pw.p12", NULL, &ks), KMS_OK, "empty-pw.p12 with NULL");
    kms_keystore_free(&ks);
    expect_rc(load_fx("empty-pw.p12", WRONG, &ks), KMS_ERR_KEYSTORE_PASSWORD, "empty-pw.p12 with a password");
    /* no MAC and nothing encrypted: any password, or none */
    expect_rc(load_fx("nomac.p12", NULL, &ks), KMS_OK, "nomac.p12");
    cr_assert_eq(kms_keystore_count(ks), 1);
    cr_assert_eq(sk_X509_num(kms_ks_entry_chain(kms_keystore_entry(ks, 0))), 2);
    kms_keystore_free(&ks);
}

Test(keystore, pkcs12_without_friendly_name_uses_the_cn)
{
    struct kms_keystore *ks = NULL;
    expect_rc(load_fx("noname.p12", PASSWORD, &ks), KMS_OK, "noname.p12");
    cr_assert_eq(kms_keystore_count(ks), 1);
    const struct kms_ks_entry *e = kms_keystore_entry(ks, 0);
    cr_assert_str_eq(kms_ks_entry_alias(e), "kmsserver"); /* CN=kmsServer, lower-cased */
    cr_assert_eq(sk_X509_num(kms_ks_entry_chain(e)), 2);
    cr_assert(cert_is_file(sk_X509_value(kms_ks_entry_chain(e), 0), "inter.der"));
    kms_keystore_free(&ks);
}

Test(keystore, pkcs12_duplicate_alias_is_corrupt)
{
    struct kms_keystore *ks = NULL;
    expect_rc(load_fx("dup.p12", PASSWORD, &ks), KMS_ERR_KEYSTORE_CORRUPT, "dup.p12");
    expect_detail("appears twice");
}

Test(keystore, pkcs12_trailing_bytes_are_corrupt)
{
    size_t n;
    uint8_t *d = fx_read("ossl-modern.p12", &n);
    uint8_t *big = realloc(d, n + 1);
    cr_assert_not_null(big);
    big[n] = 0;
    struct kms_keystore *ks = NULL;
    expect_rc(load_as(big, n + 1, "x.p12", PASSWORD, &ks), KMS_ERR_KEYSTORE_CORRUPT, "trailing byte");
    expect_detail("unexpected bytes");
    free(big);
}

/* A crafted iteration count must not stall the loader (checked before use). */
Test(keystore, kdf_iterations_are_bounded)
{
    struct kms_keystore *ks = NULL;
    expect_rc(load_fx("slow-mac.p12", PASSWORD, &ks), KMS_ERR_KEYSTORE_CORRUPT, "slow MAC");
    expect_detail("MAC asks for 1000001 iterations");
    expect_rc(load_fx("slow-pbe.p12", PASSWORD, &ks), KMS_ERR_KEYSTORE_CORRUPT, "slow key PBE");
    expect_detail("1000001 key-derivation iterations");
    const char *pem[] = {"slow.p8", "server.crt", NULL};
    size_t n;
    uint8_t *d = concat(&n, pem);
    expect_rc(load_as(d, n, "slow.pem", PASSWORD, &ks), KMS_ERR_KEYSTORE_CORRUPT, "slow PEM key");
    expect_detail("1000001 key-derivation iterations");
    free(d);
}

/* Each test runs in its own process, so the providers are not loaded yet. */
Test(keystore, legacy_pkcs12_without_legacy_provider_says_so)
{
    setenv("OPENSSL_MODULES", "/nonexistent-kms-test-modules", 1);
    struct kms_keystore *ks = NULL;
    expect_rc(load_fx("ossl-legacy.p12", PASSWORD, &ks), KMS_ERR_KEYSTORE_FORMAT, "ossl-legacy.p12");
    expect_detail("legacy provider");
    expect_rc(load_fx("ossl-modern.p12", PASSWORD, &ks), KMS_OK, "modern files still load");
    kms_keystore_free(&ks);
}

struct thread_arg {
    const uint8_t *d;
    size_t n;
    kms_rc rc;
    size_t count;
};

static void *load_thread(void *p)
{
    struct thread_arg *a = p;
    struct kms_keystore *ks = NULL;
    a->rc = kms_keystore_load_mem(a->d, a->n, "legacy.p12", PASSWORD, &ks);
    a->count = ks ? kms_keystore_count(ks) : 0;
    kms_keystore_free(&ks);
    return NULL;
}

Test(keystore, concurrent_first_loads_share_the_provider_setup)
{
    size_t n;
    uint8_t *d = fx_read("ks-legacy.p12", &n);
    pthread_t t[4];
    struct thread_arg a[4];
    for (int i = 0; i < 4; i++) {
        a[i] = (struct thread_arg){.d = d, .n = n};
        cr_assert_eq(pthread_create(&t[i], NULL, load_thread, &a[i]), 0);
    }
    for (int i = 0; i < 4; i++) {
        cr_assert_eq(pthread_join(t[i], NULL), 0);
        cr_assert_eq(a[i].rc, KMS_OK, "thread %d: %s", i, kms_error_name(a[i].rc));
        cr_assert_eq(a[i].count, 4);
    }
    free(d);
}

/* ---- damaged files ------------------------------------------------------ */

static const char *all_files[] = {"ks.jks",          "ks-modern.p12", "ks-legacy.p12", "ossl-modern.p12",
                                  "ossl-legacy.p12", "bundle.pem",    "bundle-enc.pem", "nodes.pem"};

static int is_pem(const char *f) { return strstr(f, ".pem") != NULL; }

/* A PEM cut only fails when it falls inside a block (past its BEGIN line,
 * before its END line); moves cut forward until it does. */
static size_t inside_block(const uint8_t *d, size_t n, size_t cut)
{
    for (; cut + 3 < n; cut++) {
        size_t lb = SIZE_MAX, le = SIZE_MAX;
        for (size_t i = 0; i + 10 <= cut; i++) {
            if (memcmp(d + i, "-----BEGIN", 10) == 0)
                lb = i;
            else if (memcmp(d + i, "-----END", 8) == 0)
                le = i;
        }
        if (lb != SIZE_MAX && (le == SIZE_MAX || le < lb) && cut > lb + 40)
            return cut;
    }
    return n - 3;
}

Test(keystore, flipped_byte_in_the_middle_is_an_error)
{
    for (size_t f = 0; f < KMS_ARRAY_LEN(all_files); f++) {
        size_t n;
        uint8_t *d = fx_read(all_files[f], &n);
        size_t mid = n / 2;
        if (is_pem(all_files[f])) {
            mid = inside_block(d, n, mid);
            d[mid] = '*'; /* why: a base64 letter for another can still be a valid certificate */
        } else {
            d[mid] ^= 0xFF;
        }
        struct kms_keystore *ks = NULL;
        kms_rc rc = load_as(d, n, all_files[f], PASSWORD, &ks);
        cr_assert(rc == KMS_ERR_KEYSTORE_CORRUPT || rc == KMS_ERR_KEYSTORE_PASSWORD,
                  "%s: flipped byte at %zu gave %s (%s)", all_files[f], mid, kms_error_name(rc),
                  kms_error_detail());
        free(d);
    }
}

/* Every single-byte change of a JKS file is refused, none crashes. */
Test(keystore, jks_every_flipped_byte_is_refused)
{
    size_t n;
    uint8_t *d = fx_read("ks.jks", &n);
    for (size_t i = 0; i < n; i += 3) {
        d[i] ^= 0x20;
        struct kms_keystore *ks = NULL;
        kms_rc rc = load_as(d, n, "ks.jks", PASSWORD, &ks);
        cr_assert_neq(rc, KMS_OK, "flip at %zu accepted", i);
        d[i] ^= 0x20;
    }
    free(d);
}

/* Sampled single-byte changes of PKCS#12 files: never a crash, and an accepted
 * change never alters what was loaded (a MAC covers the contents). */
Test(keystore, pkcs12_sampled_flips_never_crash)
{
    static const char *files[] = {"ossl-modern.p12", "ks-legacy.p12"};
    for (size_t f = 0; f < KMS_ARRAY_LEN(files); f++) {
        size_t n;
        uint8_t *d = fx_read(files[f], &n);
        size_t refused = 0, tries = 0;
        for (size_t i = 0; i < n; i += n / 40 + 1, tries++) {
            d[i] ^= 0x01;
            struct kms_keystore *ks = NULL;
            kms_rc rc = load_as(d, n, files[f], PASSWORD, &ks);
            if (rc != KMS_OK)
                refused++;
            else
                cr_assert_eq(kms_keystore_count(ks), 4);
            kms_keystore_free(&ks);
            d[i] ^= 0x01;
        }
        cr_assert_gt(refused, tries / 2, "%s: only %zu of %zu damaged copies refused", files[f], refused, tries);
        free(d);
    }
}

Test(keystore, truncated_files_are_corrupt)
{
    for (size_t f = 0; f < KMS_ARRAY_LEN(all_files); f++) {
        size_t n;
        uint8_t *d = fx_read(all_files[f], &n);
        size_t cuts[] = {n / 4, n / 2, 3 * n / 4, n - 3, n - 1, 40};
        for (size_t c = 0; c < KMS_ARRAY_LEN(cuts); c++) {
            size_t cut = cuts[c];
            if (is_pem(all_files[f]))
                cut = inside_block(d, n, cut);
            struct kms_keystore *ks = NULL;
            kms_rc rc = load_as(d, cut, all_files[f], PASSWORD, &ks);
            cr_assert(rc == KMS_ERR_KEYSTORE_CORRUPT, "%s cut at %zu of %zu: %s (%s)", all_files[f], cut, n,
                      kms_error_name(rc), kms_error_detail());
        }
        for (size_t cut = 1; cut < 8; cut++) {
            struct kms_keystore *ks = NULL;
            kms_rc rc = load_as(d, cut, all_files[f], PASSWORD, &ks);
            cr_assert(rc == KMS_ERR_KEYSTORE_CORRUPT || rc == KMS_ERR_KEYSTORE_FORMAT, "%s cut at %zu: %s",
                      all_files[f], cut, kms_error_name(rc));
        }
        free(d);
    }
}

Test(keystore, jks_truncation_names_the_byte_and_entry)
{
    size_t n;
    uint8_t *d = fx_read("ks.jks", &n);
    struct kms_keystore *ks = NULL;
    expect_rc(load_as(d, n / 2, "ks.jks", PASSWORD, &ks), KMS_ERR_KEYSTORE_CORRUPT, "half");
    expect_detail("truncated at byte");
    expect_detail("in entry");
    expect_rc(load_as(d, n - 10, "ks.jks", PASSWORD, &ks), KMS_ERR_KEYSTORE_CORRUPT, "no digest");
    expect_detail("integrity digest");
    free(d);
}

/* ---- files that are not keystores --------------------------------------- */

static char tmpdir[64];

static void make_tmpdir(void)
{
    snprintf(tmpdir, sizeof(tmpdir), "/tmp/kms-ks-test-XXXXXX");
    cr_assert_not_null(mkdtemp(tmpdir));
}

static void remove_tmpdir(void)
{
    char *argv[] = {"/bin/rm", "-rf", tmpdir, NULL};
    (void)run(argv);
}

TestSuite(keystore_files, .init = make_tmpdir, .fini = remove_tmpdir);

static kms_rc load_path(const char *path, const char *pw)
{
    struct kms_keystore *ks = NULL;
    kms_error_clear();
    kms_rc rc = kms_keystore_load(path, pw, &ks);
    if (rc != KMS_OK) {
        cr_assert_null(ks);
        cr_assert_not_null(strstr(kms_error_detail(), path), "detail lacks the path: %s", kms_error_detail());
        cr_assert_null(strstr(kms_error_detail(), PASSWORD));
    }
    kms_keystore_free(&ks);
    return rc;
}

Test(keystore_files, empty_file_is_a_format_error)
{
    char p[128];
    snprintf(p, sizeof(p), "%s/empty.jks", tmpdir);
    write_all(p, "", 0);
    expect_rc(load_path(p, PASSWORD), KMS_ERR_KEYSTORE_FORMAT, "empty");
    expect_detail("empty");
}

Test(keystore_files, ten_megabytes_of_noise_is_refused)
{
    char p[128];
    snprintf(p, sizeof(p), "%s/noise.p12", tmpdir);
    size_t n = 10u * 1024 * 1024;
    uint8_t *d = malloc(n);
    cr_assert_not_null(d);
    cr_assert_eq(RAND_bytes(d, (int)n), 1);
    d[0] = 0x42; /* why: not by chance a DER SEQUENCE or JKS magic */
    write_all(p, d, n);
    kms_rc rc = load_path(p, PASSWORD);
    expect_rc(rc, KMS_ERR_KEYSTORE_FORMAT, "noise");
    expect_detail("not a keystore");
    /* the same noise behind a PKCS#12 header */
    static const uint8_t hdr[] = {0x30, 0x84, 0x00, 0xA0, 0x00, 0x00, 0x02, 0x01, 0x03};
    memcpy(d, hdr, sizeof(hdr));
    struct kms_keystore *ks = NULL;
    rc = load_as(d, n, "noise.p12", PASSWORD, &ks);
    cr_assert_eq(rc, KMS_ERR_KEYSTORE_CORRUPT, "%s", kms_error_name(rc));
    free(d);
}

Test(keystore_files, larger_than_16_mib_is_an_io_error)
{
    char p[128];
    snprintf(p, sizeof(p), "%s/huge.jks", tmpdir);
    int fd = open(p, O_CREAT | O_WRONLY | O_TRUNC, 0600);
    cr_assert_geq(fd, 0);
    cr_assert_eq(ftruncate(fd, 16 * 1024 * 1024 + 1), 0);
    close(fd);
    expect_rc(load_path(p, PASSWORD), KMS_ERR_IO, "huge");
    expect_detail("16 MiB");
}

Test(keystore_files, missing_file_and_directory_are_io_errors)
{
    char p[128];
    snprintf(p, sizeof(p), "%s/absent.jks", tmpdir);
    expect_rc(load_path(p, PASSWORD), KMS_ERR_IO, "absent");
    expect_detail("No such file");
    expect_rc(load_path(tmpdir, PASSWORD), KMS_ERR_IO, "directory");
    expect_detail("not a regular file");
    struct kms_keystore *ks = NULL;
    expect_rc(kms_keystore_load(NULL, PASSWORD, &ks), KMS_ERR_IO, "NULL path");
}

Test(keystore, recognises_jceks_and_other_things)
{
    static const uint8_t jceks[] = {0xCE, 0xCE, 0xCE, 0xCE, 0, 0, 0, 2, 0, 0, 0, 0};
    struct kms_keystore *ks = NULL;
    expect_rc(load_as(jceks, sizeof(jceks), "old.jceks", PASSWORD, &ks), KMS_ERR_KEYSTORE_FORMAT, "jceks");
    expect_detail("JCEKS keystores are not supported; convert with keytool -importkeystore -deststoretype pkcs12");
    static const char text[] = "just some text, no PEM here\n";
    expect_rc(load_as((const uint8_t *)text, sizeof(text) - 1, "notes.txt", NULL, &ks), KMS_ERR_KEYSTORE_FORMAT,
              "text");
    expect_rc(load_as((const uint8_t *)"ab", 2, "tiny", NULL, &ks), KMS_ERR_KEYSTORE_FORMAT, "tiny");
    expect_rc(kms_keystore_load_mem(NULL, 0, NULL, NULL, &ks), KMS_ERR_KEYSTORE_FORMAT, "NULL data");
    cr_assert_null(ks);
    expect_detail("<memory>");
}

Test(keystore, der_certificate_is_not_a_keystore)
{
    size_t n;
    uint8_t *d = fx_read("server.der", &n);
    struct kms_keystore *ks = NULL;
    expect_rc(load_as(d, n, "server.der", NULL, &ks), KMS_ERR_KEYSTORE_FORMAT, "DER certificate");
    expect_detail("not a PKCS#12");
    free(d);
}

/* ---- hand-made JKS ------------------------------------------------------ */

struct jw {
    uint8_t b[8192];
    size_t n;
};

static void jw_bytes(struct jw *w, const void *p, size_t n)
{
    cr_assert_leq(w->n + n, sizeof(w->b));
    memcpy(w->b + w->n, p, n);
    w->n += n;
}

static void jw_u32(struct jw *w, uint32_t v)
{
    uint8_t b[4] = {(uint8_t)(v >> 24), (uint8_t)(v >> 16), (uint8_t)(v >> 8), (uint8_t)v};
    jw_bytes(w, b, 4);
}

static void jw_utf(struct jw *w, const void *s, size_t n)
{
    uint8_t b[2] = {(uint8_t)(n >> 8), (uint8_t)n};
    jw_bytes(w, b, 2);
    jw_bytes(w, s, n);
}

static void jw_header(struct jw *w, uint32_t version, uint32_t count)
{
    w->n = 0;
    jw_u32(w, 0xFEEDFEEDu);
    jw_u32(w, version);
    jw_u32(w, count);
}

static void jw_cert_entry(struct jw *w, uint32_t version, const void *alias, size_t alen, const char *type)
{
    size_t n;
    uint8_t *der = fx_read("backend.der", &n);
    jw_u32(w, 2);
    jw_utf(w, alias, alen);
    jw_u32(w, 0x00000190), jw_u32(w, 0x12345678); /* creation time */
    if (version == 2)
        jw_utf(w, type, strlen(type));
    jw_u32(w, (uint32_t)n);
    jw_bytes(w, der, n);
    free(der);
}

/* Appends SHA1(UTF-16BE(pw) || "Mighty Aphrodite" || file); ASCII pw only. */
static void jw_finish(struct jw *w, const char *pw)
{
    uint8_t md[20], u16[128];
    size_t k = 0;
    for (const char *p = pw; *p; p++)
        u16[k++] = 0, u16[k++] = (uint8_t)*p;
    EVP_MD_CTX *c = EVP_MD_CTX_new();
    cr_assert(EVP_DigestInit_ex(c, EVP_sha1(), NULL) == 1 && EVP_DigestUpdate(c, u16, k) == 1 &&
              EVP_DigestUpdate(c, "Mighty Aphrodite", 16) == 1 && EVP_DigestUpdate(c, w->b, w->n) == 1 &&
              EVP_DigestFinal_ex(c, md, NULL) == 1);
    EVP_MD_CTX_free(c);
    jw_bytes(w, md, 20);
}

static kms_rc jw_load(struct jw *w, const char *pw, struct kms_keystore **ks)
{
    return load_as(w->b, w->n, "crafted.jks", pw, ks);
}

Test(keystore_jks, versions_1_and_2_and_supplementary_aliases)
{
    /* U+1F511 as Java writes it: a surrogate pair, each half as 3 bytes */
    static const uint8_t key_mutf8[] = {'k', 0xED, 0xA0, 0xBD, 0xED, 0xB4, 0x91};
    struct jw w;
    struct kms_keystore *ks = NULL;
    for (uint32_t v = 1; v <= 2; v++) {
        jw_header(&w, v, 1);
        jw_cert_entry(&w, v, key_mutf8, sizeof(key_mutf8), "X.509");
        jw_finish(&w, PASSWORD);
        expect_rc(jw_load(&w, PASSWORD, &ks), KMS_OK, "crafted");
        cr_assert_str_eq(kms_ks_entry_alias(kms_keystore_entry(ks, 0)), "k\xF0\x9F\x94\x91");
        kms_keystore_free(&ks);
        /* no password: Java skips the integrity check, and so do we (no keys) */
        expect_rc(jw_load(&w, NULL, &ks), KMS_OK, "no password");
        kms_keystore_free(&ks);
    }
    jw_header(&w, 2, 0);
    jw_finish(&w, "");
    expect_rc(jw_load(&w, "", &ks), KMS_OK, "empty keystore, empty password");
    cr_assert_eq(kms_keystore_count(ks), 0);
    kms_keystore_free(&ks);
}

Test(keystore_jks, duplicate_alias_ignoring_case_is_corrupt)
{
    struct jw w;
    struct kms_keystore *ks = NULL;
    jw_header(&w, 2, 2);
    jw_cert_entry(&w, 2, "cmxbackend", 10, "X.509");
    jw_cert_entry(&w, 2, "CMXbackend", 10, "X.509");
    jw_finish(&w, PASSWORD);
    expect_rc(jw_load(&w, PASSWORD, &ks), KMS_ERR_KEYSTORE_CORRUPT, "duplicate");
    expect_detail("appears twice");
}

Test(keystore_jks, bad_aliases_are_corrupt)
{
    static const struct {
        const char *what;
        const char *alias;
        size_t len;
    } bad[] = {
        {"modified UTF-8 NUL", "a\xC0\x80" "b", 4},
        {"raw NUL", "a\0b", 3},
        {"lone high surrogate", "a\xED\xA0\xBD", 4},
        {"lone low surrogate", "a\xED\xB4\x91", 4},
        {"invalid lead byte", "a\xFF", 2},
        {"truncated sequence", "a\xE2\x82", 3},
        {"control character", "a\nb", 3},
        {"empty", "", 0},
    };
    for (size_t i = 0; i < KMS_ARRAY_LEN(bad); i++) {
        struct jw w;
        struct kms_keystore *ks = NULL;
        jw_header(&w, 2, 1);
        jw_cert_entry(&w, 2, bad[i].alias, bad[i].len, "X.509");
        jw_finish(&w, PASSWORD);
        expect_rc(jw_load(&w, PASSWORD, &ks), KMS_ERR_KEYSTORE_CORRUPT, bad[i].what);
    }
}

Test(keystore_jks, structural_errors_are_corrupt)
{
    struct jw w;
    struct kms_keystore *ks = NULL;

    jw_header(&w, 2, 1);
    jw_cert_entry(&w, 2, "a", 1, "X.510");
    jw_finish(&w, PASSWORD);
    expect_rc(jw_load(&w, PASSWORD, &ks), KMS_ERR_KEYSTORE_CORRUPT, "certificate type");
    expect_detail("not X.509");

    jw_header(&w, 3, 0);
    jw_finish(&w, PASSWORD);
    expect_rc(jw_load(&w, PASSWORD, &ks), KMS_ERR_KEYSTORE_CORRUPT, "version 3");
    expect_detail("version 3");

    jw_header(&w, 2, 0x7FFFFFFF); /* must be refused before allocating */
    jw_finish(&w, PASSWORD);
    expect_rc(jw_load(&w, PASSWORD, &ks), KMS_ERR_KEYSTORE_CORRUPT, "huge count");
    expect_detail("claims 2147483647 entries");

    jw_header(&w, 2, 1);
    jw_u32(&w, 3);
    jw_utf(&w, "a", 1);
    jw_u32(&w, 0), jw_u32(&w, 0);
    jw_u32(&w, 0);
    jw_finish(&w, PASSWORD);
    expect_rc(jw_load(&w, PASSWORD, &ks), KMS_ERR_KEYSTORE_CORRUPT, "tag 3");
    expect_detail("tag 3");

    jw_header(&w, 2, 1); /* certificate length beyond the file */
    jw_u32(&w, 2);
    jw_utf(&w, "a", 1);
    jw_u32(&w, 0), jw_u32(&w, 0);
    jw_utf(&w, "X.509", 5);
    jw_u32(&w, 0xFFFFFFF0u);
    jw_finish(&w, PASSWORD);
    expect_rc(jw_load(&w, PASSWORD, &ks), KMS_ERR_KEYSTORE_CORRUPT, "long certificate");
    expect_detail("truncated at byte");

    jw_header(&w, 2, 1); /* key entry claiming a huge chain */
    jw_u32(&w, 1);
    jw_utf(&w, "a", 1);
    jw_u32(&w, 0), jw_u32(&w, 0);
    jw_u32(&w, 4);
    jw_u32(&w, 0x30020500);
    jw_u32(&w, 0x10000000);
    jw_finish(&w, PASSWORD);
    expect_rc(jw_load(&w, PASSWORD, &ks), KMS_ERR_KEYSTORE_CORRUPT, "huge chain");
    expect_detail("chain of");

    jw_header(&w, 2, 1); /* certificate bytes that are not DER */
    jw_u32(&w, 2);
    jw_utf(&w, "a", 1);
    jw_u32(&w, 0), jw_u32(&w, 0);
    jw_utf(&w, "X.509", 5);
    jw_u32(&w, 4);
    jw_u32(&w, 0x30020500);
    jw_finish(&w, PASSWORD);
    expect_rc(jw_load(&w, PASSWORD, &ks), KMS_ERR_KEYSTORE_CORRUPT, "bad certificate");
    expect_detail("damaged");
}

Test(keystore_jks, trailing_bytes_are_corrupt_even_with_a_wrong_password)
{
    size_t n;
    uint8_t *d = fx_read("ks.jks", &n);
    uint8_t *big = realloc(d, n + 2);
    cr_assert_not_null(big);
    big[n] = big[n + 1] = 0;
    struct kms_keystore *ks = NULL;
    expect_rc(load_as(big, n + 2, "ks.jks", WRONG, &ks), KMS_ERR_KEYSTORE_CORRUPT, "trailing");
    expect_detail("2 unexpected bytes after the JKS integrity digest");
    free(big);
}

/* ---- hand-made PEM ------------------------------------------------------ */

static kms_rc pem_load(const char *const *parts, const char *pw, struct kms_keystore **ks)
{
    size_t n;
    uint8_t *d = concat(&n, parts);
    kms_rc rc = load_as(d, n, "bundle-test.pem", pw, ks);
    free(d);
    return rc;
}

Test(keystore_pem, traditional_keys_plain_and_encrypted)
{
    struct kms_keystore *ks = NULL;
    const char *plain[] = {"server-trad.key", "server.crt", "inter.crt", NULL};
    expect_rc(pem_load(plain, NULL, &ks), KMS_OK, "EC PRIVATE KEY");
    cr_assert_str_eq(kms_ks_entry_alias(kms_keystore_entry(ks, 0)), "kmsserver");
    cr_assert_eq(sk_X509_num(kms_ks_entry_chain(kms_keystore_entry(ks, 0))), 1);
    kms_keystore_free(&ks);
    const char *enc[] = {"server-trad-enc.key", "server.crt", NULL};
    expect_rc(pem_load(enc, PASSWORD, &ks), KMS_OK, "encrypted EC PRIVATE KEY");
    cr_assert_not_null(kms_ks_entry_key(kms_keystore_entry(ks, 0)));
    kms_keystore_free(&ks);
    expect_rc(pem_load(enc, WRONG, &ks), KMS_ERR_KEYSTORE_PASSWORD, "wrong password");
    expect_rc(pem_load(enc, NULL, &ks), KMS_ERR_KEYSTORE_PASSWORD, "no password");
    expect_detail("password is needed");
}

Test(keystore_pem, key_last_and_unnamed_certificates)
{
    struct kms_keystore *ks = NULL;
    const char *key_last[] = {"server.crt", "inter.crt", "ca.crt", "server.p8", NULL};
    expect_rc(pem_load(key_last, NULL, &ks), KMS_OK, "key last");
    cr_assert_eq(kms_keystore_count(ks), 1);
    cr_assert_eq(sk_X509_num(kms_ks_entry_chain(kms_keystore_entry(ks, 0))), 2);
    kms_keystore_free(&ks);
    /* certificates only, no names: entries named by their CN */
    const char *certs[] = {"@Certificate:\n  (openssl x509 -text output is ignored)\n", "ca.crt", "backend.crt",
                           NULL};
    expect_rc(pem_load(certs, NULL, &ks), KMS_OK, "certificates only");
    cr_assert_eq(kms_keystore_count(ks), 2);
    cr_assert_str_eq(kms_ks_entry_alias(kms_keystore_entry(ks, 0)), "kmip signing ca");
    cr_assert_str_eq(kms_ks_entry_alias(kms_keystore_entry(ks, 1)), "cmxbackend");
    kms_keystore_free(&ks);
}

Test(keystore_pem, structural_errors)
{
    struct kms_keystore *ks = NULL;
    const char *lonely[] = {"server.p8", "backend.crt", NULL};
    expect_rc(pem_load(lonely, NULL, &ks), KMS_ERR_KEYSTORE_CORRUPT, "key without certificate");
    expect_detail("no matching certificate");

    const char *order[] = {"server.p8", "inter.crt", "server.crt", "ca.crt", NULL};
    expect_rc(pem_load(order, NULL, &ks), KMS_ERR_KEYSTORE_CORRUPT, "chain before leaf");
    expect_detail("put the leaf certificate first");

    const char *csr[] = {"server.p8", "server.crt", "server.csr", NULL};
    expect_rc(pem_load(csr, NULL, &ks), KMS_ERR_KEYSTORE_FORMAT, "certificate request");
    expect_detail("CERTIFICATE REQUEST");

    const char *twonames[] = {"@friendlyName: a\nfriendlyName: b\n", "ca.crt", NULL};
    expect_rc(pem_load(twonames, NULL, &ks), KMS_ERR_KEYSTORE_CORRUPT, "two names");

    const char *ctrl[] = {"@friendlyName: a\x01z\n", "ca.crt", NULL};
    expect_rc(pem_load(ctrl, NULL, &ks), KMS_ERR_KEYSTORE_CORRUPT, "control character in name");

    const char *badid[] = {"@localKeyID: 0G 11\n", "ca.crt", NULL};
    expect_rc(pem_load(badid, NULL, &ks), KMS_ERR_KEYSTORE_CORRUPT, "bad localKeyID");

    const char *badbegin[] = {"ca.crt", "@-----BEGIN CERTIF\n", "backend.crt", NULL};
    expect_rc(pem_load(badbegin, NULL, &ks), KMS_ERR_KEYSTORE_CORRUPT, "malformed BEGIN line");

    const char *dup[] = {"@friendlyName: cmxbackend\n", "ca.crt", "@friendlyName: CMXBACKEND\n", "backend.crt",
                         NULL};
    expect_rc(pem_load(dup, NULL, &ks), KMS_ERR_KEYSTORE_CORRUPT, "duplicate alias");
    expect_detail("appears twice");
}

Test(keystore_pem, embedded_nul_is_corrupt)
{
    size_t n;
    uint8_t *d = fx_read("bundle.pem", &n);
    d[n / 3] = '\0';
    struct kms_keystore *ks = NULL;
    expect_rc(load_as(d, n, "nul.pem", NULL, &ks), KMS_ERR_KEYSTORE_CORRUPT, "NUL");
    expect_detail("NUL byte");
    free(d);
}
