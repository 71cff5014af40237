#include "common/file.h"

#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/secret.h"

static kms_rc read_file(const char *path, size_t max, const char *what, uint8_t **out, size_t *len, int *absent,
                        int any_kind)
{
    *out = NULL;
    *len = 0;
    if (absent != NULL)
        *absent = 0;
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY);
    if (fd < 0) {
        if (errno == ENOENT && absent != NULL) {
            *absent = 1;
            return KMS_OK;
        }
        return kms_fail(KMS_ERR_IO, "%s: cannot open %s: %s", path, what, strerror(errno));
    }
    struct stat st;
    if (fstat(fd, &st) != 0) {
        int e = errno;
        close(fd);
        return kms_fail(KMS_ERR_IO, "%s: cannot stat %s: %s", path, what, strerror(e));
    }
    int regular = S_ISREG(st.st_mode);
    if (!regular && !any_kind) {
        close(fd);
        return kms_fail(KMS_ERR_IO, "%s: %s is not a regular file", path, what);
    }
    if (regular && (unsigned long long)st.st_size > max) {
        close(fd);
        char limit[48];
        if (max >= (1u << 20) && max % (1u << 20) == 0)
            (void)snprintf(limit, sizeof(limit), "%zu MiB", max >> 20);
        else
            (void)snprintf(limit, sizeof(limit), "%zu bytes", max);
        return kms_fail(KMS_ERR_TOO_LARGE, "%s: %s is %lld bytes, larger than the %s limit; is it the right file?",
                        path, what, (long long)st.st_size, limit);
    }
    /* why: one byte more than fstat said, so that a file growing under us is
     * noticed rather than silently cut (and no realloc leaves bytes behind);
     * a pipe or device gets the whole bound at once, for the same reason */
    size_t cap = regular ? (size_t)st.st_size + 1 : max + 1, n = 0;
    uint8_t *buf = malloc(cap);
    if (buf == NULL) {
        close(fd);
        return kms_fail(KMS_ERR_NO_MEMORY, "%s: out of memory reading %s", path, what);
    }
    kms_rc rc = KMS_OK;
    while (rc == KMS_OK) {
        ssize_t r = n < cap ? read(fd, buf + n, cap - n) : 0;
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0)
            rc = kms_fail(KMS_ERR_IO, "%s: cannot read %s: %s", path, what, strerror(errno));
        else if (r == 0)
            break;
        else
            n += (size_t)r;
    }
    close(fd);
    if (rc == KMS_OK && n == cap)
        rc = regular ? kms_fail(KMS_ERR_IO, "%s: %s changed while it was read", path, what)
                     : kms_fail(KMS_ERR_TOO_LARGE, "%s: %s is larger than %zu bytes", path, what, max);
    if (rc != KMS_OK) {
        kms_wipe(buf, cap);
        free(buf);
        return rc;
    }
    buf[n] = 0;
    *out = buf;
    *len = n;
    return KMS_OK;
}

kms_rc kms_file_read_secret(const char *path, size_t max, const char *what, struct kms_secret **out)
{
    *out = NULL;
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY);
    if (fd < 0)
        return kms_fail(KMS_ERR_IO, "%s: cannot open %s: %s", path, what, strerror(errno));
    struct kms_secret *buf = NULL;
    kms_rc rc = kms_secret_new(max > 0 ? max : 1, &buf);
    if (rc != KMS_OK) {
        close(fd);
        return rc;
    }
    uint8_t *d = kms_secret_data(buf);
    size_t len = 0;
    while (rc == KMS_OK) {
        /* why: one extra byte in a probe, so "exactly max" differs from "more" */
        uint8_t probe = 0;
        ssize_t n = len < max ? read(fd, d + len, max - len) : read(fd, &probe, 1);
        kms_wipe(&probe, sizeof(probe));
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            rc = kms_fail(KMS_ERR_IO, "%s: cannot read %s: %s", path, what, strerror(errno));
        else if (n == 0)
            break;
        else if (len == max)
            rc = kms_fail(KMS_ERR_TOO_LARGE, "%s: %s is larger than %zu bytes", path, what, max);
        else
            len += (size_t)n;
    }
    close(fd);
    if (rc != KMS_OK) {
        kms_secret_free(&buf);
        return rc;
    }
    kms_secret_truncate(buf, len);
    *out = buf;
    return KMS_OK;
}

kms_rc kms_file_read(const char *path, size_t max, const char *what, uint8_t **out, size_t *len, int *absent)
{
    return read_file(path, max, what, out, len, absent, 0);
}

kms_rc kms_file_read_any(const char *path, size_t max, const char *what, uint8_t **out, size_t *len)
{
    return read_file(path, max, what, out, len, NULL, 1);
}

static int write_all(int fd, const uint8_t *d, size_t n)
{
    while (n > 0) {
        ssize_t w = write(fd, d, n);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            return -1;
        d += w;
        n -= (size_t)w;
    }
    return 0;
}

kms_rc kms_file_write_atomic(const char *path, const uint8_t *data, size_t len, mode_t new_mode, int *exists)
{
    char tmp[4096], dir[4096];
    if (exists != NULL)
        *exists = 0;
    int n = snprintf(tmp, sizeof(tmp), "%s.tmp-XXXXXX", path);
    if (n < 0 || (size_t)n >= sizeof(tmp) || strlen(path) >= sizeof(dir))
        return kms_fail(KMS_ERR_IO, "%s: path too long", path);
    memcpy(dir, path, strlen(path) + 1);
    const char *d = dirname(dir);
    struct stat st;
    int have = stat(path, &st) == 0;
    if (have && exists != NULL) {
        *exists = 1;
        return KMS_OK;
    }
    if (have && !S_ISREG(st.st_mode))
        return kms_fail(KMS_ERR_IO, "%s: not a regular file", path);
    int fd = mkstemp(tmp);
    if (fd < 0)
        return kms_fail(KMS_ERR_IO, "%s: cannot create a temporary file beside it: %s", path, strerror(errno));
    const char *step = "write";
    if (fchmod(fd, have ? (st.st_mode & 07777) : new_mode) != 0) {
        step = "chmod";
        goto fail;
    }
    if (have && geteuid() == 0 && fchown(fd, st.st_uid, st.st_gid) != 0) {
        step = "chown";
        goto fail;
    }
    if (write_all(fd, data, len) != 0)
        goto fail;
    step = "fsync";
    if (fsync(fd) != 0)
        goto fail;
    step = "close";
    if (close(fd) != 0) {
        fd = -1;
        goto fail;
    }
    fd = -1;
    if (exists != NULL) {
        /* why: link fails with EEXIST, so two first runs cannot both create it */
        step = "link";
        if (link(tmp, path) != 0) {
            if (errno != EEXIST)
                goto fail;
            *exists = 1;
        }
        (void)unlink(tmp);
    } else {
        step = "rename";
        if (rename(tmp, path) != 0)
            goto fail;
    }
    int dfd = open(d, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd >= 0) {
        (void)fsync(dfd); /* why: best effort; some filesystems refuse fsync on directories */
        close(dfd);
    }
    return KMS_OK;
fail:;
    int e = errno;
    if (fd >= 0)
        close(fd);
    unlink(tmp);
    return kms_fail(KMS_ERR_IO, "%s: cannot %s the file (%s failed: %s); it is unchanged", path,
                    exists != NULL ? "create" : "replace", step, strerror(e));
}
