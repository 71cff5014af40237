/* kms/keystore_backup.c: what an operator finds in the backup folder after
 * kmsctl changed a keystore — a byte-for-byte copy with the keystore's
 * mode, a private folder beside (not inside) the keystore's, names that
 * sort oldest first, an audit line with the copy's SHA-256, at most N
 * backups — and only this keystore's backups listed and pruned. */
#include "kms/keystore_backup.h"

#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/file.h"
#include "common/hex.h"

static char dir[64], ks_path[128], bdir[128];

static void write_file(const char *path, const char *text, mode_t mode)
{
    FILE *f = fopen(path, "w");
    cr_assert_not_null(f, "%s", path);
    fputs(text, f);
    fclose(f);
    cr_assert_eq(chmod(path, mode), 0);
}

static void setup(void)
{
    snprintf(dir, sizeof(dir), "/tmp/kms-test-backup-XXXXXX");
    cr_assert_not_null(mkdtemp(dir));
    char sub[96];
    snprintf(sub, sizeof(sub), "%s/keystore", dir);
    cr_assert_eq(mkdir(sub, 0755), 0);
    snprintf(ks_path, sizeof(ks_path), "%s/kms.jks", sub);
    snprintf(bdir, sizeof(bdir), "%s/backups", dir);
    write_file(ks_path, "not really a keystore, bytes to copy\n", 0640);
}

static void teardown(void)
{
    char cmd[128];
    snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
    (void)!system(cmd);
}

TestSuite(backup, .init = setup, .fini = teardown);

Test(backup, the_default_folder_is_beside_the_keystores_not_in_it)
{
    char *d = NULL;
    cr_assert_eq(kms_backup_default_dir("/etc/kmsd/keystore/kms.jks", &d), KMS_OK);
    cr_assert_str_eq(d, "/etc/kmsd/keystore/../kms.jks.backups");
    free(d);
}

Test(backup, a_backup_is_an_exact_copy_with_the_mode_in_a_private_folder_and_audited)
{
    char *made = NULL;
    cr_assert_eq(kms_backup_make(ks_path, NULL, bdir, 3, &made), KMS_OK, "%s", kms_error_detail());
    cr_assert_not_null(made);
    struct stat st;
    cr_assert_eq(stat(bdir, &st), 0);
    cr_assert_eq(st.st_mode & 0777, 0700, "the backup folder is private: %o", st.st_mode & 0777);
    cr_assert_eq(stat(made, &st), 0);
    cr_assert_eq(st.st_mode & 0777, 0640, "the keystore's mode is kept: %o", st.st_mode & 0777);
    uint8_t *a = NULL, *b = NULL, *log = NULL;
    size_t alen = 0, blen = 0, loglen = 0;
    cr_assert_eq(kms_file_read(ks_path, 4096, "keystore", &a, &alen, NULL), KMS_OK);
    cr_assert_eq(kms_file_read(made, 4096, "backup", &b, &blen, NULL), KMS_OK);
    cr_assert(alen == blen && memcmp(a, b, alen) == 0, "byte for byte");
    char sha[65], audit_path[160];
    kms_hex_sha256(a, alen, sha);
    snprintf(audit_path, sizeof(audit_path), "%s/audit.log", bdir);
    cr_assert_eq(kms_file_read(audit_path, 65536, "audit", &log, &loglen, NULL), KMS_OK);
    char *text = strndup((const char *)log, loglen);
    const char *base = strrchr(made, '/') + 1;
    cr_assert(strstr(text, base) != NULL && strstr(text, sha) != NULL && strstr(text, "aliases=?") != NULL,
              "the audit line names the copy, its SHA-256 and (no keystore given) unknown aliases: %s", text);
    cr_assert(strstr(text, ks_path) != NULL, "%s", text);
    free(text);
    free(made);
    free(a);
    free(b);
    free(log);
}

Test(backup, at_most_n_are_kept_oldest_pruned_first)
{
    char *made[5] = {0};
    for (int i = 0; i < 5; i++) {
        char text[32];
        snprintf(text, sizeof(text), "version %d\n", i);
        write_file(ks_path, text, 0600);
        cr_assert_eq(kms_backup_make(ks_path, NULL, bdir, 3, &made[i]), KMS_OK, "%s", kms_error_detail());
    }
    char **names = NULL;
    size_t n = 0;
    cr_assert_eq(kms_backup_list(ks_path, bdir, &names, &n), KMS_OK);
    cr_assert_eq(n, 3, "%zu backups kept", n);
    for (size_t i = 0; i < n; i++) {
        cr_assert_str_eq(names[i], strrchr(made[i + 2], '/') + 1, "oldest first, the two oldest pruned");
        if (i > 0)
            cr_assert_lt(strcmp(names[i - 1], names[i]), 0, "names sort oldest first");
    }
    cr_assert_neq(access(made[0], F_OK), 0, "the oldest is gone");
    kms_backup_list_free(&names, n);
    cr_assert_null(names);
    for (int i = 0; i < 5; i++)
        free(made[i]);
}

Test(backup, another_keystores_backups_are_neither_listed_nor_pruned)
{
    char other[160], *made = NULL, *mine = NULL;
    snprintf(other, sizeof(other), "%s/keystore/other.p12", dir);
    write_file(other, "another keystore\n", 0600);
    cr_assert_eq(kms_backup_make(other, NULL, bdir, 1, &made), KMS_OK);
    for (int i = 0; i < 3; i++) {
        free(mine);
        cr_assert_eq(kms_backup_make(ks_path, NULL, bdir, 1, &mine), KMS_OK);
    }
    char **names = NULL;
    size_t n = 0;
    cr_assert_eq(kms_backup_list(ks_path, bdir, &names, &n), KMS_OK);
    cr_assert_eq(n, 1);
    cr_assert_str_eq(names[0], strrchr(mine, '/') + 1);
    kms_backup_list_free(&names, n);
    cr_assert_eq(access(made, F_OK), 0, "pruning kms.jks's backups left other.p12's alone");
    free(made);
    free(mine);
}

Test(backup, a_missing_folder_lists_nothing_and_a_missing_keystore_fails_by_name)
{
    char **names = NULL;
    size_t n = 7;
    cr_assert_eq(kms_backup_list(ks_path, bdir, &names, &n), KMS_OK);
    cr_assert_eq(n, 0);
    kms_backup_list_free(&names, n);
    char missing[160], *made = NULL;
    snprintf(missing, sizeof(missing), "%s/keystore/missing.jks", dir);
    cr_assert_eq(kms_backup_make(missing, NULL, bdir, 3, &made), KMS_ERR_IO);
    cr_assert_null(made);
    cr_assert(strstr(kms_error_detail(), "missing.jks") != NULL, "%s", kms_error_detail());
}
