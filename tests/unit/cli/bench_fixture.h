/* The kmsd fixture the kmsctl bench suites share: a kmsd started once per
 * test binary by tests/integration/harness.sh (soft backend, dev PKI) in a
 * mkdtemp directory, and the port the tests read back from its it.env.
 * Included by one .c file each; everything here is static. */
#ifndef KMS_TESTS_BENCH_FIXTURE_H
#define KMS_TESTS_BENCH_FIXTURE_H

#include <criterion/criterion.h>
#include <jansson.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

extern char **environ;

static char fixture_dir[64];
static char port[16];

struct result {
    int status;
    char out[16384];
    json_t *json;
};

static int run_plain(char *const argv[])
{
    pid_t pid;
    int status;
    if (posix_spawn(&pid, argv[0], NULL, NULL, argv, environ) != 0 || waitpid(pid, &status, 0) != pid)
        return -1;
    return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

/* harness.sh start|stop on fixture_dir/it; name labels a failure on stderr. */
static void harness(const char *verb, const char *name)
{
    const char *src = getenv("KMS_SOURCE_DIR"), *bin = getenv("KMS_BINARY_DIR");
    char script[4096], kmsd[4096], dir[128];
    snprintf(script, sizeof(script), "%s/tests/integration/harness.sh", src ? src : ".");
    snprintf(kmsd, sizeof(kmsd), "%s/server/kmsd", bin ? bin : ".");
    snprintf(dir, sizeof(dir), "%s/it", fixture_dir);
    char *argv[] = {"/bin/bash", script, (char *)verb, dir, kmsd, "soft", NULL};
    if (strcmp(verb, "stop") == 0)
        argv[4] = NULL;
    if (run_plain(argv) != 0)
        fprintf(stderr, "%s: harness.sh %s failed\n", name, verb);
}

/* Makes fixture_dir from template (".../XXXXXX") and starts kmsd there; the
 * tests, which run in worker processes, find it through KMSBENCH_FIXTURE. */
static void fixture_start(const char *template, const char *name)
{
    snprintf(fixture_dir, sizeof(fixture_dir), "%s", template);
    if (mkdtemp(fixture_dir) == NULL)
        return;
    harness("start", name);
    setenv("KMSBENCH_FIXTURE", fixture_dir, 1);
}

/* Stops kmsd and removes fixture_dir, if it was made from prefix. */
static void fixture_stop(const char *prefix, const char *name)
{
    if (strncmp(fixture_dir, prefix, strlen(prefix)) != 0)
        return;
    harness("stop", name);
    char *argv[] = {"/bin/rm", "-rf", fixture_dir, NULL};
    (void)run_plain(argv);
}

/* In a test: fixture_dir and port from the fixture's it.env. */
static void load_port(void)
{
    const char *d = getenv("KMSBENCH_FIXTURE");
    cr_assert_not_null(d, "no fixture directory");
    snprintf(fixture_dir, sizeof(fixture_dir), "%s", d);
    char path[256], line[512];
    snprintf(path, sizeof(path), "%s/it/it.env", fixture_dir);
    FILE *f = fopen(path, "r");
    cr_assert_not_null(f, "the harness did not start kmsd (%s)", path);
    while (fgets(line, sizeof(line), f))
        if (strncmp(line, "KMS_IT_PORT=", 12) == 0)
            snprintf(port, sizeof(port), "%.*s", (int)strcspn(line + 12, "\n"), line + 12);
    fclose(f);
    cr_assert(port[0] != '\0');
}

#endif
