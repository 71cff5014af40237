/* The keystore fixtures shared by the keystore, keystore-writer and kmsctl
 * tests: tests/unit/kms/make_keystores.sh run once per test binary (from a
 * Criterion PRE_ALL hook) into a fresh /tmp folder, removed at POST_ALL.
 * Header-only test helper: each test binary includes it once. */
#ifndef KMS_TESTS_UNIT_KEYSTORE_FIXTURES_H
#define KMS_TESTS_UNIT_KEYSTORE_FIXTURES_H

#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>

extern char **environ;

static char fixture_dir[64];
static char fixture_prefix[48];

/* Runs argv (argv[0] an absolute path) and returns its exit status, -1 when
 * it could not run or died of a signal. */
__attribute__((unused)) static int run_plain(char *const argv[])
{
    pid_t pid;
    int status;
    if (posix_spawn(&pid, argv[0], NULL, NULL, argv, environ) != 0 || waitpid(pid, &status, 0) != pid)
        return -1;
    return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

/* Builds the fixtures with password in /tmp/<prefix>XXXXXX and exports the
 * folder as env_name (left unset on failure, which the tests report).
 * openssl_only: skip the keytool-made stores (faster). */
static void fixtures_build(const char *prefix, const char *env_name, const char *password, int openssl_only)
{
    const char *src = getenv("KMS_SOURCE_DIR");
    char script[4096];
    snprintf(fixture_prefix, sizeof(fixture_prefix), "/tmp/%s", prefix);
    snprintf(fixture_dir, sizeof(fixture_dir), "%sXXXXXX", fixture_prefix);
    snprintf(script, sizeof(script), "%s/tests/unit/kms/make_keystores.sh", src ? src : ".");
    if (mkdtemp(fixture_dir) == NULL)
        return;
    char *argv[] = {"/bin/sh", script, fixture_dir, (char *)password, openssl_only ? "--openssl-only" : NULL, NULL};
    if (run_plain(argv) == 0)
        setenv(env_name, fixture_dir, 1);
}

/* Removes the folder fixtures_build made (and nothing else). */
static void fixtures_remove(void)
{
    if (fixture_prefix[0] != '\0' && strncmp(fixture_dir, fixture_prefix, strlen(fixture_prefix)) == 0) {
        char *argv[] = {"/bin/rm", "-rf", fixture_dir, NULL};
        (void)run_plain(argv);
    }
}

#endif
