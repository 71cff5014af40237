/* Keystore backups with an audit trail and a maximum count. */
#include "kms/keystore_backup.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "common/file.h"
#include "common/hex.h"
#include "common/secret.h"
#include "kms/keystore_write.h"

#define PATH_CAP 4096

static kms_rc split(const char *path, char *dir, char *base)
{
    char a[PATH_CAP], b[PATH_CAP];
    if (strlen(path) >= PATH_CAP)
        return kms_fail(KMS_ERR_IO, "%s: path too long", path);
    memcpy(a, path, strlen(path) + 1);
    memcpy(b, path, strlen(path) + 1);
    snprintf(dir, PATH_CAP, "%s", dirname(a));
    snprintf(base, PATH_CAP, "%s", basename(b));
    return KMS_OK;
}

kms_rc kms_backup_default_dir(const char *keystore_path, char **out)
{
    char dir[PATH_CAP], base[PATH_CAP], buf[PATH_CAP];
    *out = NULL;
    KMS_GUARD(split(keystore_path, dir, base));
    int n = snprintf(buf, sizeof(buf), "%s/../%s.backups", dir, base);
    if (n < 0 || (size_t)n >= sizeof(buf))
        return kms_fail(KMS_ERR_IO, "%s: path too long", keystore_path);
    if ((*out = strdup(buf)) == NULL)
        return kms_fail(KMS_ERR_NO_MEMORY, "out of memory");
    return KMS_OK;
}

/* <base>.YYYYMMDDTHHMMSS.mmmZ[.n].bak */
static int is_backup_of(const char *name, const char *base)
{
    size_t bl = strlen(base), nl = strlen(name);
    if (nl < bl + 1 + 20 + 4 || strncmp(name, base, bl) != 0 || name[bl] != '.')
        return 0;
    const char *t = name + bl + 1;
    for (int i = 0; i < 20; i++) {
        char c = t[i];
        int ok = (i == 8) ? c == 'T' : (i == 15) ? c == '.' : (i == 19) ? c == 'Z' : (c >= '0' && c <= '9');
        if (!ok)
            return 0;
    }
    return strcmp(name + nl - 4, ".bak") == 0;
}

static int name_cmp(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

void kms_backup_list_free(char ***names, size_t count)
{
    if (names == NULL || *names == NULL)
        return;
    for (size_t i = 0; i < count; i++)
        free((*names)[i]);
    free(*names);
    *names = NULL;
}

kms_rc kms_backup_list(const char *keystore_path, const char *backup_dir, char ***names, size_t *count)
{
    char dir[PATH_CAP], base[PATH_CAP];
    *names = NULL;
    *count = 0;
    KMS_GUARD(split(keystore_path, dir, base));
    DIR *d = opendir(backup_dir);
    if (d == NULL) {
        if (errno == ENOENT)
            return KMS_OK;
        return kms_fail(KMS_ERR_IO, "%s: cannot read the backup folder: %s", backup_dir, strerror(errno));
    }
    char **v = NULL;
    size_t n = 0, cap = 0;
    struct dirent *de;
    while ((de = readdir(d)) != NULL) {
        if (!is_backup_of(de->d_name, base))
            continue;
        if (n == cap) {
            size_t nc = cap ? cap * 2 : 16;
            char **nv = realloc(v, nc * sizeof(*nv));
            if (nv == NULL)
                goto oom;
            v = nv;
            cap = nc;
        }
        if ((v[n] = strdup(de->d_name)) == NULL)
            goto oom;
        n++;
    }
    closedir(d);
    if (n > 0)
        qsort(v, n, sizeof(*v), name_cmp);
    *names = v;
    *count = n;
    return KMS_OK;
oom:
    closedir(d);
    kms_backup_list_free(&v, n);
    return kms_fail(KMS_ERR_NO_MEMORY, "out of memory");
}

static kms_rc copy_file(const char *from, const char *to, const struct stat *st)
{
    uint8_t *d = NULL;
    size_t n = 0;
    KMS_GUARD(kms_file_read(from, KMS_FILE_MAX, "the keystore", &d, &n, NULL));
    int fd = open(to, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    if (fd < 0) {
        int e = errno;
        free(d);
        return e == EEXIST ? KMS_ERR_INTERNAL /* why: caller retries with another name */
                           : kms_fail(KMS_ERR_IO, "%s: cannot create the backup: %s", to, strerror(e));
    }
    kms_rc rc = KMS_OK;
    size_t off = 0;
    while (off < n) {
        ssize_t w = write(fd, d + off, n - off);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0) {
            rc = kms_fail(KMS_ERR_IO, "%s: cannot write the backup: %s", to, strerror(errno));
            break;
        }
        off += (size_t)w;
    }
    if (rc == KMS_OK && fchmod(fd, st->st_mode & 07777) != 0)
        rc = kms_fail(KMS_ERR_IO, "%s: cannot set the backup's mode: %s", to, strerror(errno));
    if (rc == KMS_OK && geteuid() == 0 && fchown(fd, st->st_uid, st->st_gid) != 0)
        rc = kms_fail(KMS_ERR_IO, "%s: cannot set the backup's owner: %s", to, strerror(errno));
    if (rc == KMS_OK && fsync(fd) != 0)
        rc = kms_fail(KMS_ERR_IO, "%s: cannot fsync the backup: %s", to, strerror(errno));
    close(fd);
    if (rc != KMS_OK)
        unlink(to);
    kms_wipe(d, n);
    free(d);
    return rc;
}

static kms_rc file_sha256(const char *path, char hex[65])
{
    uint8_t *d = NULL;
    size_t n = 0;
    KMS_GUARD(kms_file_read(path, KMS_FILE_MAX, "the keystore", &d, &n, NULL));
    kms_hex_sha256(d, n, hex);
    kms_wipe(d, n);
    free(d);
    return KMS_OK;
}

static kms_rc audit(const char *backup_dir, const char *iso, const char *backup, const char *keystore_path,
                    const char *hex, const struct kms_keystore *ks)
{
    char path[PATH_CAP];
    int n = snprintf(path, sizeof(path), "%s/audit.log", backup_dir);
    if (n < 0 || (size_t)n >= sizeof(path))
        return kms_fail(KMS_ERR_IO, "%s: path too long", backup_dir);
    FILE *f = fopen(path, "ae");
    if (f == NULL)
        return kms_fail(KMS_ERR_IO, "%s: cannot append to the audit log: %s", path, strerror(errno));
    fprintf(f, "%s backup=%s keystore=%s sha256=%s aliases=", iso, backup, keystore_path, hex);
    if (ks == NULL) {
        fputc('?', f);
    } else {
        for (size_t i = 0; i < kms_keystore_count(ks); i++)
            fprintf(f, "%s%s", i ? "," : "", kms_ks_entry_alias(kms_keystore_entry(ks, i)));
    }
    fputc('\n', f);
    int bad = fflush(f) != 0 || fsync(fileno(f)) != 0;
    bad |= fclose(f) != 0;
    if (bad)
        return kms_fail(KMS_ERR_IO, "%s: cannot write the audit log", path);
    return KMS_OK;
}

kms_rc kms_backup_make(const char *keystore_path, const struct kms_keystore *ks, const char *backup_dir,
                       size_t max_backups, char **made)
{
    char dir[PATH_CAP], base[PATH_CAP], to[PATH_CAP], stamp[64], iso[32], hex[65];
    if (made != NULL)
        *made = NULL;
    if (max_backups < 1)
        max_backups = 1;
    KMS_GUARD(split(keystore_path, dir, base));
    struct stat st;
    if (stat(keystore_path, &st) != 0)
        return kms_fail(KMS_ERR_IO, "%s: cannot back it up: %s", keystore_path, strerror(errno));
    if (mkdir(backup_dir, 0700) != 0 && errno != EEXIST)
        return kms_fail(KMS_ERR_IO, "%s: cannot create the backup folder: %s", backup_dir, strerror(errno));
    KMS_GUARD(file_sha256(keystore_path, hex));
    struct timespec ts;
    struct tm tm;
    clock_gettime(CLOCK_REALTIME, &ts);
    gmtime_r(&ts.tv_sec, &tm);
    strftime(iso, sizeof(iso), "%Y%m%dT%H%M%S", &tm);
    snprintf(stamp, sizeof(stamp), "%.15s.%03dZ", iso, (int)(ts.tv_nsec / 1000000L) % 1000);
    strftime(iso, sizeof(iso), "%Y-%m-%dT%H:%M:%SZ", &tm);
    kms_rc rc = KMS_ERR_INTERNAL;
    for (int k = 0; k < 1000 && rc == KMS_ERR_INTERNAL; k++) {
        int n = k == 0 ? snprintf(to, sizeof(to), "%s/%s.%s.bak", backup_dir, base, stamp)
                       : snprintf(to, sizeof(to), "%s/%s.%s_%03d.bak", backup_dir, base, stamp, k);
        if (n < 0 || (size_t)n >= sizeof(to))
            return kms_fail(KMS_ERR_IO, "%s: path too long", backup_dir);
        rc = copy_file(keystore_path, to, &st);
    }
    if (rc != KMS_OK)
        return rc == KMS_ERR_INTERNAL ? kms_fail(KMS_ERR_IO, "%s: no free backup name", backup_dir) : rc;
    int dfd = open(backup_dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd >= 0) {
        (void)fsync(dfd);
        close(dfd);
    }
    KMS_GUARD(audit(backup_dir, iso, to, keystore_path, hex, ks));

    char **names = NULL;
    size_t count = 0;
    KMS_GUARD(kms_backup_list(keystore_path, backup_dir, &names, &count));
    for (size_t i = 0; i + max_backups < count; i++) {
        char old[PATH_CAP];
        int n = snprintf(old, sizeof(old), "%s/%s", backup_dir, names[i]);
        if (n > 0 && (size_t)n < sizeof(old) && strcmp(old, to) != 0)
            (void)unlink(old);
    }
    kms_backup_list_free(&names, count);
    if (made != NULL && (*made = strdup(to)) == NULL)
        return kms_fail(KMS_ERR_NO_MEMORY, "out of memory");
    return KMS_OK;
}
