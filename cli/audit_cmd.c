/* kmsctl audit: verify the audit trail's hash chain and HMAC checkpoints
 * (kms/audit.h), make its checkpoint key. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli/kmsctl.h"
#include "common/secret.h"
#include "kms/audit.h"
#include "kms/audit_key.h"
#include "kms/cluster_key.h"
#include "kms/config.h"

extern char **environ;

void kmsctl_audit_usage(FILE *f)
{
    fprintf(f, "Usage: kmsctl audit verify [--config FILE | --no-key] FILE...\n"
               "       kmsctl audit key create --out FILE [--config FILE | --password-file F] [--force]\n\n"
               "  verify FILE...       checks the chain of audit lines (each line's seq follows the one before\n"
               "                       and its prev is the SHA-256 of that line) across the files, oldest\n"
               "                       first (kms.audit.file.N ... .1, then kms.audit.file), and each\n"
               "                       checkpoint's HMAC under kms.audit.key of the configuration (--config,\n"
               "                       else $KMS_CONFIG, else /etc/kmsd/kms.properties). Names the first line\n"
               "                       that breaks it. --no-key: the chain only\n"
               "  key create --out FILE\n"
               "                       a random audit checkpoint key sealed under the keystore password\n"
               "                       (mode 0600); point kms.audit.key.file of every node at it\n\n"
               "Exit status: 0 the chain holds, 1 it breaks (or a file cannot be read), 2 usage.\n");
}

/* The audit key of the configuration (kms.audit.key.alias in its keystore,
 * or kms.audit.key opened with the keystore password): 0 and *key (NULL when
 * the configuration sets none), or an exit code. */
static int load_key(const char *config, int explicit_config, struct kms_secret **key)
{
    *key = NULL;
    const char *path = kmsctl_config_path(config);
    if (!explicit_config && access(path, R_OK) != 0)
        return KMSCTL_EXIT_OK;
    struct kms_config *cfg = NULL;
    kms_rc rc = kms_config_load(path, environ, NULL, NULL, &cfg);
    if (rc != KMS_OK) {
        fprintf(stderr, "kmsctl audit verify: %s: %s\n", path, kms_error_detail());
        return KMSCTL_EXIT_ERROR;
    }
    struct kms_keystore *ks = NULL;
    if (kms_config_str(cfg, KMS_CFG_AUDIT_KEY_ALIAS)[0] != '\0')
        rc = kms_keystore_load(kms_config_str(cfg, KMS_CFG_KEYSTORE_FILE),
                               kms_config_secret(cfg, KMS_CFG_KEYSTORE_PASSWORD), &ks);
    if (rc == KMS_OK)
        rc = kms_audit_key_configured(cfg, ks, key);
    kms_keystore_free(&ks);
    kms_config_free(&cfg);
    if (rc != KMS_OK) {
        fprintf(stderr, "kmsctl audit verify: %s\n", kms_error_detail());
        return KMSCTL_EXIT_ERROR;
    }
    return KMSCTL_EXIT_OK;
}

struct verify_state {
    uint64_t seq, first_seq;
    char prev[65], first_prev[65];
    unsigned checkpoints;
    unsigned long long lines, skipped, unchained, since_checkpoint;
};

/* One file, going on from the state of the files before it. */
static int verify_file(const char *path, const struct kms_secret *key, struct verify_state *st)
{
    FILE *f = fopen(path, "r");
    if (f == NULL) {
        fprintf(stderr, "kmsctl audit verify: %s: %s\n", path, strerror(errno));
        return KMSCTL_EXIT_ERROR;
    }
    char *line = NULL;
    size_t cap = 0;
    ssize_t got;
    unsigned long no = 0;
    int code = KMSCTL_EXIT_OK;
    while ((got = getline(&line, &cap, f)) > 0) {
        no++;
        size_t len = (size_t)got;
        if (line[len - 1] != '\n') {
            printf("%s:%lu: the last line is unfinished (no newline): written while kmsd stopped, or cut\n", path,
                   no);
            code = KMSCTL_EXIT_ERROR;
            break;
        }
        len--;
        char why[256];
        unsigned before = st->checkpoints;
        int r = kms_audit_verify_line(line, len, &st->seq, st->prev, key, &st->checkpoints, why, sizeof(why));
        if (r == 1) {
            st->skipped++;
            continue;
        }
        if (r == 2 && st->lines == 0) {
            st->unchained++; /* before the chain existed */
            continue;
        }
        if (r != 0) {
            printf("%s:%lu: %s\n", path, no, why);
            code = KMSCTL_EXIT_ERROR;
            break;
        }
        if (st->lines == 0) {
            st->first_seq = st->seq;
            const char *p = strstr(line, ",\"prev\":\"");
            (void)snprintf(st->first_prev, sizeof(st->first_prev), "%.64s", p != NULL ? p + 9 : "");
        }
        st->lines++;
        st->since_checkpoint = st->checkpoints != before ? 0 : st->since_checkpoint + 1;
    }
    free(line);
    fclose(f);
    return code;
}

static int cmd_verify(int nfiles, char **files, const char *config, int explicit_config, int no_key)
{
    if (nfiles == 0) {
        fprintf(stderr, "kmsctl audit verify: name the audit files, oldest first\n");
        return KMSCTL_EXIT_USAGE;
    }
    struct kms_secret *key = NULL;
    if (!no_key) {
        int code = load_key(config, explicit_config, &key);
        if (code != KMSCTL_EXIT_OK)
            return code;
    }
    struct verify_state st;
    memset(&st, 0, sizeof(st));
    int code = KMSCTL_EXIT_OK;
    for (int i = 0; i < nfiles && code == KMSCTL_EXIT_OK; i++)
        code = verify_file(files[i], key, &st);
    if (code == KMSCTL_EXIT_OK) {
        int from_start = st.first_seq == 1 && strspn(st.first_prev, "0") == 64;
        printf("ok: %llu chained lines in %d file%s, seq %llu..%llu%s\n", st.lines, nfiles, nfiles == 1 ? "" : "s",
               (unsigned long long)st.first_seq, (unsigned long long)st.seq,
               st.lines == 0 ? " (none)" : from_start ? ", from the first line ever written"
                                                      : " (earlier lines are in files not given)");
        if (key != NULL)
            printf("checkpoints: %u verified under the audit key%s\n", st.checkpoints,
                   st.since_checkpoint > 0 ? "; the lines after the last one are covered by the hash chain only"
                                           : "");
        else
            printf("checkpoints: not verified (%s): the hash chain alone shows edits, not a rewrite of the whole "
                   "file\n",
                   no_key ? "--no-key" : "the configuration sets no kms.audit.key or kms.audit.key.alias");
        if (st.unchained > 0)
            printf("%llu audit lines at the start predate the chain and were not checked\n", st.unchained);
    }
    kms_secret_free(&key);
    return code;
}

int kmsctl_audit_main(int argc, char **argv)
{
    const char *config = NULL, *out = NULL;
    struct kmsctl_password_source src = {0};
    int no_key = 0, force = 0;
    char *words[64];
    int nwords = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        int more = i + 1 < argc;
        if (strcmp(a, "--config") == 0 && more)
            config = argv[++i];
        else if (strcmp(a, "--password-file") == 0 && more)
            src.file = argv[++i];
        else if (strcmp(a, "--out") == 0 && more)
            out = argv[++i];
        else if (strcmp(a, "--no-key") == 0)
            no_key = 1;
        else if (strcmp(a, "--force") == 0)
            force = 1;
        else if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
            kmsctl_audit_usage(stdout);
            return KMSCTL_EXIT_OK;
        } else if (a[0] != '-' && nwords < (int)(sizeof(words) / sizeof(words[0])))
            words[nwords++] = argv[i];
        else {
            fprintf(stderr, "kmsctl audit: unknown or incomplete option '%s'\n\n", a);
            kmsctl_audit_usage(stderr);
            return KMSCTL_EXIT_USAGE;
        }
    }
    if (nwords >= 1 && strcmp(words[0], "verify") == 0)
        return cmd_verify(nwords - 1, words + 1, config, config != NULL, no_key);
    if (nwords == 2 && strcmp(words[0], "key") == 0 && strcmp(words[1], "create") == 0) {
        char *pw = NULL;
        int code;
        if ((src.file != NULL || getenv("KMS_KEYSTORE_PASSWORD") != NULL) &&
            (code = kmsctl_password_get(&src, &pw)) != KMSCTL_EXIT_OK)
            return code;
        code = kmsctl_sealed_key_create("audit", config, pw, out, NULL, force);
        kmsctl_password_free(&pw);
        return code;
    }
    fprintf(stderr, "kmsctl audit: expected 'verify FILE...' or 'key create'\n\n");
    kmsctl_audit_usage(stderr);
    return KMSCTL_EXIT_USAGE;
}
