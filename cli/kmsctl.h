/* kmsctl: the operator's command-line tool (STYLE.md layout: cli/).
 *
 * kmsctl.c dispatches "kmsctl GROUP ..." to one command group per file
 * (keystore_cmd.c, ...). A group's entry point gets argv starting at the
 * group name and returns a process exit code. Adding a group: one .c file
 * with a kmsctl_<group>_main, one line in kmsctl.c's table. */
#ifndef KMS_CLI_KMSCTL_H
#define KMS_CLI_KMSCTL_H

#include <stdint.h>
#include <stdio.h>
#include <stddef.h>

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
int kmsctl_audit_main(int argc, char **argv);
void kmsctl_audit_usage(FILE *f);

/* A random key sealed under the keystore password (--password-file, else
 * kms.keystore.password of the config) into out, mode 0600: kind "cluster"
 * (kms.cache.cluster.key.file) or "audit" (kms.audit.key.file). from_plain:
 * base64 of an existing key instead. An exit code. */
int kmsctl_sealed_key_create(const char *kind, const char *config, const char *password, const char *out,
                             const char *from_plain, int force);

/* Where a keystore password comes from, in this order of precedence:
 * --password-file FILE (first line), the environment variable
 * KMS_KEYSTORE_PASSWORD, --storepass PASS (warned about: visible to other
 * users in the process list). */
struct kmsctl_password_source {
    const char *file;     /* --password-file, or NULL */
    const char *argument; /* --storepass, or NULL */
    const char *value;    /* given by the program itself (borrowed), first; NULL for the sources above */
};

/* The node's kms.properties kmsctl reads: config (--config) when given, else
 * $KMS_CONFIG, else /etc/kmsd/kms.properties. */
const char *kmsctl_config_path(const char *config);

int kmsctl_cluster_main(int argc, char **argv);
void kmsctl_cluster_usage(FILE *f);

/* A cluster reached through a node's kms.properties (SPEC §11): its
 * configuration, its Redis and its cluster key. */
struct kms_config;
struct kms_cache;
struct kms_secret;
struct kms_ksdist;
struct kmsctl_cluster {
    struct kms_config *cfg;
    struct kms_cache *cache;
    struct kms_secret *key;
    struct kms_ksdist *dist;
    const char *config_path;
};

/* Loads config (NULL: $KMS_CONFIG, else /etc/kmsd/kms.properties), which
 * must say kms.cache.type=distributed, opens the cluster key and connects
 * to Redis. password (NULL: kms.keystore.password) opens the cluster key.
 * Prints why on stderr and returns an exit code. */
int kmsctl_cluster_open(const char *config, const char *password, struct kmsctl_cluster *c);
void kmsctl_cluster_close(struct kmsctl_cluster *c);

/* The cluster's keystore now: *head (0: nothing published yet) and the
 * bytes of the newest generation, or of the config's kms.keystore.file when
 * there is none (the seed). *ks is malloc'd: free with
 * kms_ksgen_free_bytes. Prints why and returns an exit code. */
int kmsctl_cluster_current(struct kmsctl_cluster *c, uint64_t *head, uint8_t **ks, size_t *len);

/* Opens generation gen (restore, history). *ks as above; m filled. */
struct kms_ksgen_meta;
int kmsctl_cluster_generation(struct kmsctl_cluster *c, uint64_t gen, struct kms_ksgen_meta *m, uint8_t **ks,
                              size_t *len);

/* Checks ks[0..len) as a node would (password, server key, validity) and
 * publishes it as a new generation on top of base, with edit as its
 * description; waits up to wait_s seconds (0: no wait) for every live node
 * to report it. Prints the outcome; returns an exit code (1: refused, Redis
 * unreachable, conflict, or nodes not converged in time). */
int kmsctl_cluster_publish(struct kmsctl_cluster *c, uint64_t base, const uint8_t *ks, size_t len,
                           const char *password, const char *edit, unsigned wait_s);

/* Resolves the password into *out (malloc'd, the caller frees it with
 * kmsctl_password_free; NULL when no source gave one). Prints the reason to
 * stderr and returns KMSCTL_EXIT_ERROR when the password file cannot be read.
 * Never prints the password. */
int kmsctl_password_get(const struct kmsctl_password_source *src, char **out);
/* Wipes and frees *pw; takes NULL and sets *pw = NULL. */
void kmsctl_password_free(char **pw);

#endif
