/* kmsctl entry point: dispatches to the command groups. */
#include "cli/kmsctl.h"

#include <stdio.h>
#include <string.h>

#include "common/secret.h"
#include "common/version.h"

struct group {
    const char *name;
    const char *summary;
    int (*main)(int argc, char **argv);
    void (*usage)(FILE *f);
};

static const struct group groups[] = {
    {"keystore", "the keystore: list, show, add, import-cert, import-p12, delete, clear, convert, verify, backups, restore, migrate",
     kmsctl_keystore_main, kmsctl_keystore_usage},
    {"hsm", "the master-key backend: status, create-key, show, locate, rotate", kmsctl_hsm_main, kmsctl_hsm_usage},
    {"cluster", "the cluster: status of every node, the cluster key", kmsctl_cluster_main, kmsctl_cluster_usage},
    {"audit", "the audit trail: verify its chain and checkpoints, make its key", kmsctl_audit_main,
     kmsctl_audit_usage},
    {"bench", "load-test a kmsd over mutual TLS: requests/s, latency percentiles", kmsctl_bench_main, kmsctl_bench_usage},
};

static void usage(FILE *f)
{
    fprintf(f, "Usage: kmsctl COMMAND [ARGS...]\n\nCommands:\n");
    for (size_t i = 0; i < KMS_ARRAY_LEN(groups); i++)
        fprintf(f, "  %-10s %s\n", groups[i].name, groups[i].summary);
    fprintf(f, "  %-10s %s\n", "help", "this text, or help COMMAND for one command");
    fprintf(f, "  %-10s %s\n", "--version", "the version of kmsctl");
    fprintf(f, "\nExit status: 0 success, 1 operational error, 2 usage error.\n");
}

static const struct group *find_group(const char *name)
{
    for (size_t i = 0; i < KMS_ARRAY_LEN(groups); i++)
        if (strcmp(groups[i].name, name) == 0)
            return &groups[i];
    return NULL;
}

int main(int argc, char **argv)
{
    /* why: a CLI must not mlock, but key material must not land in a core dump */
    kms_secmem_disable_core_dumps();
    if (argc < 2) {
        usage(stderr);
        return KMSCTL_EXIT_USAGE;
    }
    const char *cmd = argv[1];
    if (strcmp(cmd, "--version") == 0 || strcmp(cmd, "version") == 0) {
        printf("kmsctl %s (build %s)\n", kms_version(), kms_build_id());
        return KMSCTL_EXIT_OK;
    }
    if (strcmp(cmd, "help") == 0 || strcmp(cmd, "--help") == 0 || strcmp(cmd, "-h") == 0) {
        if (argc > 2) {
            const struct group *g = find_group(argv[2]);
            if (g == NULL) {
                fprintf(stderr, "kmsctl: unknown command '%s'\n\n", argv[2]);
                usage(stderr);
                return KMSCTL_EXIT_USAGE;
            }
            g->usage(stdout);
            return KMSCTL_EXIT_OK;
        }
        usage(stdout);
        return KMSCTL_EXIT_OK;
    }
    const struct group *g = find_group(cmd);
    if (g == NULL) {
        fprintf(stderr, "kmsctl: unknown command '%s'\n\n", cmd);
        usage(stderr);
        return KMSCTL_EXIT_USAGE;
    }
    return g->main(argc - 1, argv + 1);
}
