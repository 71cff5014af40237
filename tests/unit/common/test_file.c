/* common/file.c: the one whole-file reader (ordinary and secure memory) and
 * the one atomic writer. */
#include <criterion/criterion.h>
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/file.h"
#include "common/secret.h"

static void tmpdir(char *out, size_t cap)
{
    snprintf(out, cap, "/tmp/kms-file-XXXXXX");
    cr_assert_not_null(mkdtemp(out));
}

static void put(const char *path, const char *s, size_t n)
{
    FILE *f = fopen(path, "wb");
    cr_assert_not_null(f);
    cr_assert_eq(fwrite(s, 1, n, f), n);
    fclose(f);
}

static int entries(const char *d)
{
    DIR *dir = opendir(d);
    cr_assert_not_null(dir);
    int n = 0;
    struct dirent *de;
    while ((de = readdir(dir)) != NULL)
        n += de->d_name[0] != '.';
    closedir(dir);
    return n;
}

static void rmtree(const char *d)
{
    char cmd[160];
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", d);
    cr_assert_eq(system(cmd), 0);
}

Test(file, read_is_bounded_and_names_the_file)
{
    char d[64], p[128];
    tmpdir(d, sizeof(d));
    snprintf(p, sizeof(p), "%s/f", d);
    put(p, "hello", 5);
    uint8_t *out = NULL;
    size_t len = 0;
    cr_assert_eq(kms_file_read(p, 5, "the thing", &out, &len, NULL), KMS_OK);
    cr_assert_eq(len, 5);
    cr_assert(memcmp(out, "hello", 5) == 0 && out[5] == 0, "a spare NUL follows");
    free(out);
    cr_assert_eq(kms_file_read(p, 4, "the thing", &out, &len, NULL), KMS_ERR_TOO_LARGE);
    cr_assert_null(out);
    cr_assert(strstr(kms_error_detail(), "the thing is 5 bytes") != NULL, "%s", kms_error_detail());
    cr_assert_eq(kms_file_read(d, 100, "the thing", &out, &len, NULL), KMS_ERR_IO);
    cr_assert(strstr(kms_error_detail(), "the thing is not a regular file") != NULL, "%s", kms_error_detail());
    snprintf(p, sizeof(p), "%s/missing", d);
    cr_assert_eq(kms_file_read(p, 100, "the thing", &out, &len, NULL), KMS_ERR_IO);
    cr_assert(strstr(kms_error_detail(), "cannot open the thing") != NULL, "%s", kms_error_detail());
    int absent = 0;
    cr_assert_eq(kms_file_read(p, 100, "the thing", &out, &len, &absent), KMS_OK);
    cr_assert(absent && out == NULL && len == 0);
    /* a configuration may come from a pipe or /dev/null; a keystore may not */
    cr_assert_eq(kms_file_read("/dev/null", 100, "the thing", &out, &len, NULL), KMS_ERR_IO);
    cr_assert_eq(kms_file_read_any("/dev/null", 100, "the thing", &out, &len), KMS_OK);
    cr_assert(out != NULL && len == 0);
    free(out);
    cr_assert_eq(kms_file_read_any("/dev/zero", 100, "the thing", &out, &len), KMS_ERR_TOO_LARGE);
    cr_assert_null(out);
    rmtree(d);
}

Test(file, secrets_are_read_into_secure_memory_up_to_their_bound)
{
    char d[64], p[128];
    tmpdir(d, sizeof(d));
    snprintf(p, sizeof(p), "%s/s", d);
    put(p, "s3cret\n", 7);
    struct kms_secret *s = NULL;
    cr_assert_eq(kms_file_read_secret(p, 7, "the secret", &s), KMS_OK, "exactly the bound");
    cr_assert_eq(kms_secret_len(s), 7);
    cr_assert(memcmp(kms_secret_cdata(s), "s3cret\n", 7) == 0);
    kms_secret_free(&s);
    cr_assert_eq(kms_file_read_secret(p, 6, "the secret", &s), KMS_ERR_TOO_LARGE);
    cr_assert_null(s);
    cr_assert_null(strstr(kms_error_detail(), "s3cret"), "never the content");
    cr_assert_eq(kms_file_read_secret("/dev/null", 16, "the secret", &s), KMS_OK, "not only regular files");
    cr_assert_eq(kms_secret_len(s), 0);
    kms_secret_free(&s);
    rmtree(d);
}

Test(file, atomic_write_keeps_mode_and_owner)
{
    char d[64], p[128];
    struct stat st;
    tmpdir(d, sizeof(d));
    snprintf(p, sizeof(p), "%s/ks", d);
    cr_assert_eq(kms_file_write_atomic(p, (const uint8_t *)"one", 3, 0600, NULL), KMS_OK);
    cr_assert_eq(stat(p, &st), 0);
    cr_assert_eq(st.st_mode & 07777, 0600);
    cr_assert_eq(chmod(p, 0640), 0);
    if (geteuid() == 0)
        cr_assert_eq(chown(p, 4321, 5432), 0);
    cr_assert_eq(kms_file_write_atomic(p, (const uint8_t *)"second", 6, 0600, NULL), KMS_OK);
    cr_assert_eq(stat(p, &st), 0);
    cr_assert_eq(st.st_mode & 07777, 0640);
    cr_assert_eq(st.st_size, 6);
    if (geteuid() == 0) {
        cr_assert_eq(st.st_uid, 4321);
        cr_assert_eq(st.st_gid, 5432);
    }
    cr_assert_eq(entries(d), 1, "a temporary file was left behind");
    /* not a regular file; a missing directory */
    cr_assert_eq(kms_file_write_atomic(d, (const uint8_t *)"x", 1, 0600, NULL), KMS_ERR_IO);
    snprintf(p, sizeof(p), "%s/nodir/ks", d);
    cr_assert_eq(kms_file_write_atomic(p, (const uint8_t *)"x", 1, 0600, NULL), KMS_ERR_IO);
    cr_assert_eq(entries(d), 1);
    rmtree(d);
}

Test(file, create_only_never_replaces)
{
    char d[64], p[128];
    tmpdir(d, sizeof(d));
    snprintf(p, sizeof(p), "%s/new", d);
    int exists = -1;
    cr_assert_eq(kms_file_write_atomic(p, (const uint8_t *)"first", 5, 0600, &exists), KMS_OK);
    cr_assert_eq(exists, 0);
    cr_assert_eq(kms_file_write_atomic(p, (const uint8_t *)"other", 5, 0600, &exists), KMS_OK);
    cr_assert_eq(exists, 1);
    uint8_t *out = NULL;
    size_t len = 0;
    cr_assert_eq(kms_file_read(p, 100, "it", &out, &len, NULL), KMS_OK);
    cr_assert(len == 5 && memcmp(out, "first", 5) == 0, "the first writer's bytes stay");
    free(out);
    cr_assert_eq(entries(d), 1);
    rmtree(d);
}
