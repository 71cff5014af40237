/* Keystore writers, editing, atomic writes and backups (kms/keystore_write.h,
 * kms/keystore_backup.h). Fixtures from make_keystores.sh --openssl-only,
 * built once per binary; keytool's reading of what we write is tested in
 * tests/unit/cli/test_kmsctl_keystore_edit.c.
 *
 * No per-test .timeout: see tests/unit/kms/test_keystore.c. */
#include <criterion/criterion.h>
#include <criterion/hooks.h>
#include <dirent.h>
#include <openssl/evp.h>
#include <openssl/x509.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "kms/keystore.h"
#include "kms/keystore_backup.h"
#include "kms/keystore_write.h"

#include "tests/unit/keystore_fixtures.h"
#include "common/file.h"

#define PASSWORD "S3cret-pw!"

ReportHook(PRE_ALL)(struct criterion_test_set *set)
{
    (void)set;
    fixtures_build("kswrite-test-", "KSWRITE_FIXTURES", PASSWORD, 1);
}

ReportHook(POST_ALL)(struct criterion_global_stats *stats)
{
    (void)stats;
    fixtures_remove();
}

static void fx(char *out, size_t cap, const char *name)
{
    const char *d = getenv("KSWRITE_FIXTURES");
    cr_assert_not_null(d, "fixtures were not built");
    snprintf(out, cap, "%s/%s", d, name);
}

static struct kms_keystore *load_fx(const char *name)
{
    char p[512];
    struct kms_keystore *ks = NULL;
    fx(p, sizeof(p), name);
    cr_assert_eq(kms_keystore_load(p, PASSWORD, &ks), KMS_OK, "%s: %s", name, kms_error_detail());
    return ks;
}

static void same_entries(const struct kms_keystore *a, const struct kms_keystore *b)
{
    cr_assert_eq(kms_keystore_count(a), kms_keystore_count(b));
    for (size_t i = 0; i < kms_keystore_count(a); i++) {
        const struct kms_ks_entry *x = kms_keystore_entry(a, i);
        const struct kms_ks_entry *y = kms_keystore_find(b, kms_ks_entry_alias(x));
        cr_assert_not_null(y, "alias %s lost", kms_ks_entry_alias(x));
        cr_assert_eq(kms_ks_entry_type(x), kms_ks_entry_type(y));
        cr_assert_eq(memcmp(kms_ks_entry_sha256(x), kms_ks_entry_sha256(y), 32), 0);
        cr_assert_eq(sk_X509_num(kms_ks_entry_chain(x)), sk_X509_num(kms_ks_entry_chain(y)), "%s",
                     kms_ks_entry_alias(x));
        for (int k = 0; k < sk_X509_num(kms_ks_entry_chain(x)); k++)
            cr_assert_eq(X509_cmp(sk_X509_value(kms_ks_entry_chain(x), k), sk_X509_value(kms_ks_entry_chain(y), k)),
                         0);
        if (kms_ks_entry_key(x) != NULL)
            cr_assert_eq(EVP_PKEY_eq(kms_ks_entry_key(x), kms_ks_entry_key(y)), 1);
        else
            cr_assert_null(kms_ks_entry_key(y));
    }
}

static void round_trip(enum kms_keystore_format f, const char *pw)
{
    struct kms_keystore *ks = load_fx("ossl-modern.p12"), *back = NULL;
    kms_keystore_set_format(ks, f);
    uint8_t *d = NULL;
    size_t n = 0;
    cr_assert_eq(kms_keystore_serialize(ks, pw, &d, &n), KMS_OK, "%s", kms_error_detail());
    cr_assert_gt(n, 100);
    cr_assert_eq(kms_keystore_load_mem(d, n, "written", pw, &back), KMS_OK, "%s", kms_error_detail());
    cr_assert_eq(kms_keystore_format(back), f);
    same_entries(ks, back);
    if (f == KMS_KEYSTORE_JKS) /* keytool lower-cases JKS aliases */
        cr_assert_not_null(kms_keystore_find(back, "kmsserver"));
    kms_keystore_free(&back);
    /* wrong password and truncation are told apart (PEM without a key password has neither) */
    if (pw != NULL) {
        kms_rc r = kms_keystore_load_mem(d, n, "written", "wrong-Pa55", &back);
        cr_assert_eq(r, KMS_ERR_KEYSTORE_PASSWORD, "%s", kms_error_detail());
        cr_assert_null(back);
        if (f != KMS_KEYSTORE_PEM) {
            cr_assert_neq(kms_keystore_load_mem(d, n - 7, "written", pw, &back), KMS_OK);
            cr_assert_null(back);
        }
    }
    free(d);
    kms_keystore_free(&ks);
}

Test(keystore_write, round_trip_jks) { round_trip(KMS_KEYSTORE_JKS, PASSWORD); }
Test(keystore_write, round_trip_pkcs12) { round_trip(KMS_KEYSTORE_PKCS12, PASSWORD); }
Test(keystore_write, round_trip_pem_encrypted) { round_trip(KMS_KEYSTORE_PEM, PASSWORD); }
Test(keystore_write, round_trip_pem_plain) { round_trip(KMS_KEYSTORE_PEM, NULL); }

Test(keystore_write, jks_and_p12_need_a_password)
{
    struct kms_keystore *ks = load_fx("ossl-modern.p12");
    uint8_t *d = NULL;
    size_t n = 0;
    kms_keystore_set_format(ks, KMS_KEYSTORE_JKS);
    cr_assert_eq(kms_keystore_serialize(ks, NULL, &d, &n), KMS_ERR_KEYSTORE_PASSWORD);
    kms_keystore_set_format(ks, KMS_KEYSTORE_PKCS12);
    cr_assert_eq(kms_keystore_serialize(ks, "", &d, &n), KMS_ERR_KEYSTORE_PASSWORD);
    cr_assert_null(d);
    kms_keystore_set_format(ks, KMS_KEYSTORE_JKS);
    cr_assert_eq(kms_keystore_serialize(ks, "bad\xff utf8", &d, &n), KMS_ERR_KEYSTORE_PASSWORD);
    kms_keystore_free(&ks);
}

Test(keystore_write, add_and_remove)
{
    struct kms_keystore *src = load_fx("ossl-modern.p12"), *ks = NULL, *back = NULL;
    const struct kms_ks_entry *srv = kms_keystore_find(src, "kmsserver");
    const struct kms_ks_entry *dev = kms_keystore_find(src, "cmxdevice");
    cr_assert_not_null(srv);
    cr_assert_not_null(dev);
    cr_assert_eq(kms_keystore_new(KMS_KEYSTORE_PKCS12, "new", &ks), KMS_OK);
    cr_assert_eq(kms_keystore_add(ks, "kmsServer", kms_ks_entry_cert(srv), kms_ks_entry_chain(srv),
                                  kms_ks_entry_key(srv)),
                 KMS_OK);
    /* duplicate ignoring case, unusable aliases, key that does not match */
    cr_assert_eq(kms_keystore_add(ks, "KMSSERVER", kms_ks_entry_cert(dev), NULL, NULL), KMS_ERR_INVALID_FIELD);
    cr_assert_eq(kms_keystore_add(ks, "", kms_ks_entry_cert(dev), NULL, NULL), KMS_ERR_INVALID_FIELD);
    cr_assert_eq(kms_keystore_add(ks, "a\nb", kms_ks_entry_cert(dev), NULL, NULL), KMS_ERR_INVALID_FIELD);
    cr_assert_eq(kms_keystore_add(ks, "bad\xc3", kms_ks_entry_cert(dev), NULL, NULL), KMS_ERR_INVALID_FIELD);
    cr_assert_eq(kms_keystore_add(ks, "dev", kms_ks_entry_cert(dev), NULL, kms_ks_entry_key(srv)),
                 KMS_ERR_INVALID_FIELD);
    cr_assert_eq(kms_keystore_add(ks, "cmxDevice20261122", kms_ks_entry_cert(dev), NULL, NULL), KMS_OK);
    cr_assert_eq(kms_keystore_count(ks), 2);
    cr_assert_eq(kms_ks_entry_type(kms_keystore_find(ks, "cmxdevice20261122")), KMS_KS_CERTIFICATE);
    cr_assert_eq(kms_keystore_remove(ks, "nosuch"), KMS_ERR_ALIAS_NOT_FOUND);
    cr_assert_eq(kms_keystore_remove(ks, "KMSserver"), KMS_OK);
    cr_assert_eq(kms_keystore_count(ks), 1);
    cr_assert_null(kms_keystore_find(ks, "kmsserver"));
    /* the source keystore still owns its objects */
    kms_keystore_free(&src);
    uint8_t *d = NULL;
    size_t n = 0;
    cr_assert_eq(kms_keystore_serialize(ks, PASSWORD, &d, &n), KMS_OK);
    cr_assert_eq(kms_keystore_load_mem(d, n, "x", PASSWORD, &back), KMS_OK, "%s", kms_error_detail());
    cr_assert_eq(kms_keystore_count(back), 1);
    cr_assert_str_eq(kms_ks_entry_alias(kms_keystore_entry(back, 0)), "cmxDevice20261122");
    free(d);
    kms_keystore_free(&back);
    kms_keystore_free(&ks);
}

Test(keystore_write, empty_keystore_round_trips)
{
    static const enum kms_keystore_format fs[] = {KMS_KEYSTORE_JKS, KMS_KEYSTORE_PKCS12};
    for (size_t i = 0; i < 2; i++) {
        struct kms_keystore *ks = NULL, *back = NULL;
        uint8_t *d = NULL;
        size_t n = 0;
        cr_assert_eq(kms_keystore_new(fs[i], "empty", &ks), KMS_OK);
        cr_assert_eq(kms_keystore_serialize(ks, PASSWORD, &d, &n), KMS_OK, "%s", kms_error_detail());
        cr_assert_eq(kms_keystore_load_mem(d, n, "empty", PASSWORD, &back), KMS_OK, "%s", kms_error_detail());
        cr_assert_eq(kms_keystore_count(back), 0);
        free(d);
        kms_keystore_free(&back);
        kms_keystore_free(&ks);
    }
}

/* ---- atomic writes -------------------------------------------------------- */

static void tmpdir(char *out, size_t cap)
{
    snprintf(out, cap, "/tmp/kswrite-XXXXXX");
    cr_assert_not_null(mkdtemp(out));
}

static void rmtree(const char *d)
{
    char *argv[] = {"/bin/rm", "-rf", (char *)d, NULL};
    (void)run_plain(argv);
}

/* atomic replacement itself: tests/unit/common/test_file.c */

/* ---- backups -------------------------------------------------------------- */

Test(keystore_write, backups_audit_and_prune)
{
    char d[64], ksd[128], p[192], bk[128];
    tmpdir(d, sizeof(d));
    snprintf(ksd, sizeof(ksd), "%s/conf", d);
    cr_assert_eq(mkdir(ksd, 0700), 0);
    snprintf(p, sizeof(p), "%s/keystore.p12", ksd);
    struct kms_keystore *ks = load_fx("ossl-modern.p12");
    cr_assert_eq(kms_keystore_save(ks, p, PASSWORD), KMS_OK);
    cr_assert_eq(chmod(p, 0604), 0);

    char *def = NULL;
    cr_assert_eq(kms_backup_default_dir(p, &def), KMS_OK);
    char want[256];
    snprintf(want, sizeof(want), "%s/../keystore.p12.backups", ksd);
    cr_assert_str_eq(def, want);
    free(def);

    snprintf(bk, sizeof(bk), "%s/backups", d);
    char **names = NULL;
    size_t n = 99;
    cr_assert_eq(kms_backup_list(p, bk, &names, &n), KMS_OK, "a missing folder is an empty list");
    cr_assert_eq(n, 0);
    char *made[6] = {0};
    for (int i = 0; i < 6; i++)
        cr_assert_eq(kms_backup_make(p, i == 0 ? NULL : ks, bk, 4, &made[i]), KMS_OK, "%s", kms_error_detail());
    /* a foreign file in the folder is never listed nor pruned */
    char foreign[256];
    snprintf(foreign, sizeof(foreign), "%s/other.p12.20260101T000000.000Z.bak", bk);
    FILE *f = fopen(foreign, "w");
    cr_assert_not_null(f);
    fclose(f);
    cr_assert_eq(kms_backup_list(p, bk, &names, &n), KMS_OK);
    cr_assert_eq(n, 4);
    for (size_t i = 0; i + 1 < n; i++)
        cr_assert_lt(strcmp(names[i], names[i + 1]), 0);
    /* the 4 newest are kept */
    for (int i = 0; i < 6; i++) {
        struct stat st;
        int exists = stat(made[i], &st) == 0;
        cr_assert_eq(exists, i >= 2, "backup %d", i);
        if (exists)
            cr_assert_eq(st.st_mode & 07777, 0604);
    }
    kms_backup_list_free(&names, n);
    cr_assert_null(names);
    cr_assert_eq(access(foreign, F_OK), 0);

    char audit[192], line[2048];
    snprintf(audit, sizeof(audit), "%s/audit.log", bk);
    f = fopen(audit, "r");
    cr_assert_not_null(f);
    int lines = 0;
    while (fgets(line, sizeof(line), f) != NULL) {
        lines++;
        cr_assert_not_null(strstr(line, " backup="));
        cr_assert_not_null(strstr(line, " sha256="));
        cr_assert_not_null(strstr(line, lines == 1 ? "aliases=?" : "aliases=kmsserver,"), "%s", line);
    }
    fclose(f);
    cr_assert_eq(lines, 6);
    for (int i = 0; i < 6; i++)
        free(made[i]);
    /* a missing keystore is not backed up */
    snprintf(p, sizeof(p), "%s/nosuch.p12", ksd);
    cr_assert_eq(kms_backup_make(p, NULL, bk, 4, NULL), KMS_ERR_IO);
    kms_keystore_free(&ks);
    rmtree(d);
}
