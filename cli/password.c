/* Keystore password sources for kmsctl commands. */
#include "cli/kmsctl.h"

#include <errno.h>
#include <fcntl.h>
#include <openssl/crypto.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/file.h"
#include "common/secret.h"

#define PASSWORD_FILE_MAX 4096
#define PASSWORD_FILE_READ 65536 /* the file may hold more lines; only the first is read */

static char *dup_len(const char *s, size_t n)
{
    char *p = malloc(n + 1);
    if (p != NULL) {
        memcpy(p, s, n);
        p[n] = '\0';
    }
    return p;
}

/* First line of the file, without its line end. */
static int read_password_file(const char *path, char **out)
{
    struct kms_secret *sec = NULL;
    if (kms_file_read_secret(path, PASSWORD_FILE_READ, "the password file", &sec) != KMS_OK) {
        fprintf(stderr, "kmsctl: %s\n", kms_error_detail());
        return KMSCTL_EXIT_ERROR;
    }
    const char *buf = (const char *)kms_secret_cdata(sec);
    size_t len = kms_secret_len(sec);
    size_t end = 0;
    while (end < len && buf[end] != '\n' && buf[end] != '\0')
        end++;
    if (end > PASSWORD_FILE_MAX) {
        kms_secret_free(&sec);
        fprintf(stderr, "kmsctl: %s: the password file's first line is longer than %d bytes\n", path,
                PASSWORD_FILE_MAX);
        return KMSCTL_EXIT_ERROR;
    }
    if (end > 0 && buf[end - 1] == '\r')
        end--;
    *out = dup_len(buf, end);
    kms_secret_free(&sec);
    if (*out == NULL) {
        fprintf(stderr, "kmsctl: out of memory\n");
        return KMSCTL_EXIT_ERROR;
    }
    return KMSCTL_EXIT_OK;
}

int kmsctl_password_get(const struct kmsctl_password_source *src, char **out)
{
    *out = NULL;
    if (src->value != NULL) { /* why: --cluster edits take kms.keystore.password from the node's config */
        if ((*out = dup_len(src->value, strlen(src->value))) == NULL) {
            fprintf(stderr, "kmsctl: out of memory\n");
            return KMSCTL_EXIT_ERROR;
        }
        return KMSCTL_EXIT_OK;
    }
    if (src->argument != NULL)
        fprintf(stderr, "kmsctl: warning: a password on the command line (--storepass) is visible to other users; "
                        "use --password-file or KMS_KEYSTORE_PASSWORD\n");
    if (src->file != NULL)
        return read_password_file(src->file, out);
    const char *env = getenv("KMS_KEYSTORE_PASSWORD");
    const char *pw = env != NULL ? env : src->argument;
    if (pw == NULL)
        return KMSCTL_EXIT_OK;
    if ((*out = dup_len(pw, strlen(pw))) == NULL) {
        fprintf(stderr, "kmsctl: out of memory\n");
        return KMSCTL_EXIT_ERROR;
    }
    return KMSCTL_EXIT_OK;
}

void kmsctl_password_free(char **pw)
{
    if (pw == NULL || *pw == NULL)
        return;
    OPENSSL_cleanse(*pw, strlen(*pw));
    free(*pw);
    *pw = NULL;
}
