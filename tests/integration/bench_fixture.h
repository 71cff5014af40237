/* The kmsd fixture the kmsctl bench suites share: a kmsd started once per
 * test binary by tests/integration/harness.sh (soft backend, dev PKI) in a
 * mkdtemp directory, the port the tests read back from its it.env, and the
 * runner of kmsctl bench --json against it. Included by one .c file each;
 * everything here is static. */
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

/* In a test: runs kmsctl bench --json against the fixture with the client
 * certificate cert (base name of a .p12 in its PKI) and the extra arguments
 * (NULL-terminated; "@cacert" stands for the PKI's root CA file). */
static void bench(struct result *r, const char *cert, const char *const *extra)
{
    load_port();
    const char *bin = getenv("KMS_BINARY_DIR");
    char kmsctl[4096], url[64], p12[256], pwfile[256], cacert[256];
    snprintf(kmsctl, sizeof(kmsctl), "%s/cli/kmsctl", bin ? bin : ".");
    snprintf(url, sizeof(url), "https://127.0.0.1:%s", port);
    snprintf(p12, sizeof(p12), "%s/it/pki/%s.p12", fixture_dir, cert);
    snprintf(pwfile, sizeof(pwfile), "%s/it/pki/password.txt", fixture_dir);
    snprintf(cacert, sizeof(cacert), "%s/it/pki/rootCA.crt", fixture_dir);
    const char *argv[40] = {kmsctl, "bench", "--url", url, "--cert", p12, "--password-file", pwfile, "--json"};
    int n = 9;
    for (; extra != NULL && *extra != NULL && n < 38; extra++) {
        if (strcmp(*extra, "@cacert") == 0)
            argv[n++] = cacert;
        else
            argv[n++] = *extra;
    }
    argv[n] = NULL;

    int pfd[2];
    cr_assert(pipe(pfd) == 0);
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_adddup2(&fa, pfd[1], 1);
    posix_spawn_file_actions_addclose(&fa, pfd[0]);
    pid_t pid;
    cr_assert(posix_spawn(&pid, kmsctl, &fa, NULL, (char *const *)argv, environ) == 0);
    posix_spawn_file_actions_destroy(&fa);
    close(pfd[1]);
    size_t len = 0;
    ssize_t got;
    while ((got = read(pfd[0], r->out + len, sizeof(r->out) - 1 - len)) > 0)
        len += (size_t)got;
    close(pfd[0]);
    r->out[len] = '\0';
    int st;
    cr_assert(waitpid(pid, &st, 0) == pid);
    r->status = WIFEXITED(st) ? WEXITSTATUS(st) : -1;
    json_error_t err;
    r->json = len > 0 ? json_loads(r->out, JSON_REJECT_DUPLICATES, &err) : NULL;
}

#endif
