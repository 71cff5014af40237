/* kmsctl: the operator's command-line tool (STYLE.md layout: cli/).
 *
 * kmsctl.c dispatches "kmsctl GROUP ..." to one command group per file
 * (keystore_cmd.c, ...). A group's entry point gets argv starting at the
 * group name and returns a process exit code. Adding a group: one .c file
 * with a kmsctl_<group>_main, one line in kmsctl.c's table. */
#ifndef KMS_CLI_KMSCTL_H
#define KMS_CLI_KMSCTL_H

#include <stdio.h>

/* Exit codes, shared by every command. */
enum {
    KMSCTL_EXIT_OK = 0,
    KMSCTL_EXIT_ERROR = 1, /* operational: the message on stderr names the file and the reason */
    KMSCTL_EXIT_USAGE = 2, /* bad command line */
};

/* Command groups. argv[0] is the group name. */
int kmsctl_keystore_main(int argc, char **argv);
void kmsctl_keystore_usage(FILE *f);
int kmsctl_hsm_main(int argc, char **argv);
void kmsctl_hsm_usage(FILE *f);
int kmsctl_bench_main(int argc, char **argv);
void kmsctl_bench_usage(FILE *f);

/* Where a keystore password comes from, in this order of precedence:
 * --password-file FILE (first line), the environment variable
 * KMS_KEYSTORE_PASSWORD, --storepass PASS (warned about: visible to other
 * users in the process list). */
struct kmsctl_password_source {
    const char *file;     /* --password-file, or NULL */
    const char *argument; /* --storepass, or NULL */
};

/* Resolves the password into *out (malloc'd, the caller frees it with
 * kmsctl_password_free; NULL when no source gave one). Prints the reason to
 * stderr and returns KMSCTL_EXIT_ERROR when the password file cannot be read.
 * Never prints the password. */
int kmsctl_password_get(const struct kmsctl_password_source *src, char **out);
/* Wipes and frees *pw; takes NULL and sets *pw = NULL. */
void kmsctl_password_free(char **pw);

#endif
