/* kmsctl keystore list|show, driven as an operator would: the built binary
 * ($KMS_BINARY_DIR/cli/kmsctl) against keystores that openssl writes at test
 * time (tests/unit/kms/make_keystores.sh --openssl-only).
 *
 * No per-test .timeout: see tests/unit/kms/test_keystore.c (Criterion's
 * runner leaks a timer record under ASan); ctest's TIMEOUT bounds a hang. */
#include <criterion/criterion.h>
#include <criterion/hooks.h>
#include <fcntl.h>
#include <jansson.h>
#include <openssl/evp.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "tests/unit/keystore_fixtures.h"

#define PASSWORD "S3cret-pw!"
#define WRONG "wrong-Pa55"

ReportHook(PRE_ALL)(struct criterion_test_set *set)
{
    (void)set;
    fixtures_build("kmsctl-test-", "KMSCTL_FIXTURES", PASSWORD, 1);
}

ReportHook(POST_ALL)(struct criterion_global_stats *stats)
{
    (void)stats;
    fixtures_remove();
}

struct result {
    int status;
    char out[65536];
    char err[8192];
};

static void fx(char *out, size_t cap, const char *name)
{
    const char *d = getenv("KMSCTL_FIXTURES");
    cr_assert_not_null(d, "fixtures were not built");
    snprintf(out, cap, "%s/%s", d, name);
}

static void slurp(const char *path, char *out, size_t cap)
{
    FILE *f = fopen(path, "r");
    cr_assert_not_null(f);
    size_t n = fread(out, 1, cap - 1, f);
    out[n] = '\0';
    fclose(f);
}

/* Runs kmsctl with args (NULL-terminated) and env (NULL or one "K=V"). */
static void kmsctl(struct result *r, const char *env, const char *const *args)
{
    const char *bin = getenv("KMS_BINARY_DIR");
    char path[4096], outp[256], errp[256];
    cr_assert_not_null(bin);
    snprintf(path, sizeof(path), "%s/cli/kmsctl", bin);
    cr_assert_eq(access(path, X_OK), 0, "%s is not built", path);
    char *argv[32];
    size_t n = 0;
    argv[n++] = path;
    for (; *args; args++) {
        cr_assert_lt(n, 30);
        argv[n++] = (char *)*args;
    }
    argv[n] = NULL;
    char *envp[] = {"PATH=/usr/bin:/bin", (char *)env, NULL};
    snprintf(outp, sizeof(outp), "%s/out.%d", getenv("KMSCTL_FIXTURES"), getpid());
    snprintf(errp, sizeof(errp), "%s/err.%d", getenv("KMSCTL_FIXTURES"), getpid());
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_addopen(&fa, 1, outp, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    posix_spawn_file_actions_addopen(&fa, 2, errp, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    pid_t pid;
    int st;
    cr_assert_eq(posix_spawn(&pid, path, &fa, NULL, argv, envp), 0);
    posix_spawn_file_actions_destroy(&fa);
    cr_assert_eq(waitpid(pid, &st, 0), pid);
    cr_assert(WIFEXITED(st), "kmsctl died from a signal");
    r->status = WEXITSTATUS(st);
    slurp(outp, r->out, sizeof(r->out));
    slurp(errp, r->err, sizeof(r->err));
    unlink(outp);
    unlink(errp);
    cr_assert_null(strstr(r->out, PASSWORD), "stdout shows the password");
    cr_assert_null(strstr(r->err, PASSWORD), "stderr shows the password");
    cr_assert_null(strstr(r->out, WRONG));
    cr_assert_null(strstr(r->err, WRONG));
}

static void expect(const char *hay, const char *needle)
{
    cr_assert_not_null(strstr(hay, needle), "'%s' not in:\n%s", needle, hay);
}

/* The line of out that starts with prefix (copied into line). */
static void line_starting(const char *out, const char *prefix, char *line, size_t cap)
{
    for (const char *p = out; p && *p; p = strchr(p, '\n') ? strchr(p, '\n') + 1 : NULL) {
        if (strncmp(p, prefix, strlen(prefix)) == 0) {
            size_t n = strcspn(p, "\n");
            cr_assert_lt(n, cap);
            memcpy(line, p, n);
            line[n] = '\0';
            return;
        }
    }
    cr_assert_fail("no line starting with '%s' in:\n%s", prefix, out);
}

/* keytool's fingerprint format of a DER file: AB:CD:... */
static void fingerprint_of(const char *der_file, char *out)
{
    char p[512];
    uint8_t buf[4096], md[32];
    fx(p, sizeof(p), der_file);
    FILE *f = fopen(p, "rb");
    cr_assert_not_null(f);
    size_t n = fread(buf, 1, sizeof(buf), f);
    fclose(f);
    cr_assert_eq(EVP_Digest(buf, n, md, NULL, EVP_sha256(), NULL), 1);
    for (int i = 0; i < 32; i++)
        snprintf(out + 3 * i, 4, "%02X%s", md[i], i < 31 ? ":" : "");
}

#define ENV_PW "KMS_KEYSTORE_PASSWORD=" PASSWORD

Test(kmsctl, list_prints_one_line_per_entry)
{
    struct result r;
    char ks[512], line[512], fp[100];
    fx(ks, sizeof(ks), "ossl-modern.p12");
    kmsctl(&r, ENV_PW, (const char *[]){"keystore", "list", "--keystore", ks, NULL});
    cr_assert_eq(r.status, 0, "exit %d: %s", r.status, r.err);
    expect(r.out, "(PKCS12, 4 entries)");
    line_starting(r.out, "kmsserver ", line, sizeof(line));
    expect(line, "PrivateKeyEntry");
    fingerprint_of("server.der", fp);
    expect(line, fp);
    expect(line, "not after 20");
    line_starting(r.out, "kmipsigningca ", line, sizeof(line));
    expect(line, "trustedCertEntry (CA)");
    fingerprint_of("ca.der", fp);
    expect(line, fp);
    line_starting(r.out, "cmxbackend ", line, sizeof(line));
    expect(line, "trustedCertEntry");
    cr_assert_null(strstr(line, "(CA)"));
    line_starting(r.out, "cmxdevice ", line, sizeof(line));
    int lines = 0;
    for (const char *p = r.out; (p = strchr(p, '\n')) != NULL; p++)
        lines++;
    cr_assert_eq(lines, 5, "header + 4 entries, got %d lines", lines);
}

Test(kmsctl, list_json)
{
    struct result r;
    char ks[512], fp[100];
    fx(ks, sizeof(ks), "bundle.pem");
    kmsctl(&r, NULL, (const char *[]){"keystore", "list", "--json", "--keystore", ks, NULL});
    cr_assert_eq(r.status, 0, "exit %d: %s", r.status, r.err);
    json_error_t e;
    json_t *j = json_loads(r.out, JSON_REJECT_DUPLICATES, &e);
    cr_assert_not_null(j, "not JSON: %s", e.text);
    cr_assert_str_eq(json_string_value(json_object_get(j, "format")), "PEM");
    json_t *entries = json_object_get(j, "entries");
    cr_assert_eq(json_array_size(entries), 4);
    json_t *first = json_array_get(entries, 0);
    cr_assert_str_eq(json_string_value(json_object_get(first, "alias")), "kmsserver");
    cr_assert_str_eq(json_string_value(json_object_get(first, "type")), "PrivateKeyEntry");
    fingerprint_of("server.der", fp);
    cr_assert_str_eq(json_string_value(json_object_get(first, "sha256")), fp);
    cr_assert(json_is_false(json_object_get(first, "ca")));
    cr_assert(json_is_true(json_object_get(json_array_get(entries, 1), "ca")));
    json_decref(j);
}

Test(kmsctl, show_private_key_entry_with_chain)
{
    struct result r;
    char ks[512], fp[100];
    fx(ks, sizeof(ks), "ossl-modern.p12");
    kmsctl(&r, ENV_PW, (const char *[]){"keystore", "show", "KMSSERVER", "--keystore", ks, NULL});
    cr_assert_eq(r.status, 0, "exit %d: %s", r.status, r.err);
    expect(r.out, "Alias:       kmsserver\n");
    expect(r.out, "Entry type:  PrivateKeyEntry\n");
    expect(r.out, "Subject:     CN=kmsServer,O=Example\n");
    expect(r.out, "Issuer:      CN=KMS Issuing CA,O=Example\n");
    expect(r.out, "Serial:      3003\n");
    expect(r.out, "Not before:  20");
    expect(r.out, "Not after:   20");
    fingerprint_of("server.der", fp);
    expect(r.out, fp);
    expect(r.out, "Key:         EC 256 bits (prime256v1)\n");
    expect(r.out, "Chain:       3 certificates\n");
    expect(r.out, "[2] subject: CN=KMS Issuing CA,O=Example\n      issuer:  CN=KMIP Signing CA,O=Example\n");
    expect(r.out, "[3] subject: CN=KMIP Signing CA,O=Example\n");
}

Test(kmsctl, show_json_certificate_and_key_entries)
{
    struct result r;
    char ks[512];
    fx(ks, sizeof(ks), "ossl-modern.p12");
    kmsctl(&r, ENV_PW, (const char *[]){"keystore", "show", "cmxBackend", "--keystore", ks, "--json", NULL});
    cr_assert_eq(r.status, 0, "exit %d: %s", r.status, r.err);
    json_error_t e;
    json_t *j = json_loads(r.out, JSON_REJECT_DUPLICATES, &e);
    cr_assert_not_null(j, "not JSON: %s", e.text);
    cr_assert_str_eq(json_string_value(json_object_get(j, "alias")), "cmxbackend");
    cr_assert_str_eq(json_string_value(json_object_get(j, "type")), "trustedCertEntry");
    cr_assert_str_eq(json_string_value(json_object_get(j, "serial")), "4004");
    cr_assert_str_eq(json_string_value(json_object_get(j, "subject")), "CN=cmxBackend,O=Example");
    cr_assert_str_eq(json_string_value(json_object_get(json_object_get(j, "key"), "algorithm")), "EC");
    cr_assert_null(json_object_get(j, "chain"));
    json_decref(j);

    kmsctl(&r, ENV_PW, (const char *[]){"keystore", "show", "kmsserver", "--json", "--keystore", ks, NULL});
    cr_assert_eq(r.status, 0);
    j = json_loads(r.out, 0, &e);
    cr_assert_not_null(j);
    json_t *chain = json_object_get(j, "chain");
    cr_assert_eq(json_array_size(chain), 3);
    cr_assert_str_eq(json_string_value(json_object_get(json_array_get(chain, 2), "subject")),
                     "CN=KMIP Signing CA,O=Example");
    json_decref(j);
}

Test(kmsctl, password_sources_and_precedence)
{
    struct result r;
    char ks[512], pwfile[512], badfile[512];
    fx(ks, sizeof(ks), "bundle-enc.pem");
    fx(pwfile, sizeof(pwfile), "pw.txt");
    fx(badfile, sizeof(badfile), "badpw.txt");
    FILE *f = fopen(pwfile, "w");
    cr_assert_not_null(f);
    fputs(PASSWORD "\r\n", f);
    fclose(f);
    f = fopen(badfile, "w");
    cr_assert_not_null(f);
    fputs(WRONG "\n", f);
    fclose(f);

    kmsctl(&r, NULL, (const char *[]){"keystore", "list", "--keystore", ks, "--password-file", pwfile, NULL});
    cr_assert_eq(r.status, 0, "password file: %s", r.err);
    cr_assert_eq(r.err[0], '\0', "unexpected stderr: %s", r.err);

    kmsctl(&r, NULL, (const char *[]){"keystore", "list", "--keystore", ks, "--storepass", PASSWORD, NULL});
    cr_assert_eq(r.status, 0, "--storepass: %s", r.err);
    expect(r.err, "visible to other users");

    /* the file wins over the environment, the environment over --storepass */
    kmsctl(&r, "KMS_KEYSTORE_PASSWORD=" WRONG,
           (const char *[]){"keystore", "list", "--keystore", ks, "--password-file", pwfile, NULL});
    cr_assert_eq(r.status, 0, "file over env: %s", r.err);
    kmsctl(&r, ENV_PW, (const char *[]){"keystore", "list", "--keystore", ks, "--storepass", WRONG, NULL});
    cr_assert_eq(r.status, 0, "env over --storepass: %s", r.err);
    kmsctl(&r, ENV_PW, (const char *[]){"keystore", "list", "--keystore", ks, "--password-file", badfile, NULL});
    cr_assert_eq(r.status, 1, "a wrong password file must not fall back to the environment");

    char missing[512];
    fx(missing, sizeof(missing), "no-such-password-file");
    kmsctl(&r, ENV_PW, (const char *[]){"keystore", "list", "--keystore", ks, "--password-file", missing, NULL});
    cr_assert_eq(r.status, 1);
    expect(r.err, missing);
    unlink(pwfile);
    unlink(badfile);
}

Test(kmsctl, operational_errors_exit_1_and_name_the_file)
{
    struct result r;
    char ks[512], absent[512];
    fx(ks, sizeof(ks), "ossl-legacy.p12");
    kmsctl(&r, "KMS_KEYSTORE_PASSWORD=" WRONG, (const char *[]){"keystore", "list", "--keystore", ks, NULL});
    cr_assert_eq(r.status, 1);
    expect(r.err, ks);
    expect(r.err, "password is incorrect");
    cr_assert_eq(r.out[0], '\0');

    kmsctl(&r, ENV_PW, (const char *[]){"keystore", "show", "nobody", "--keystore", ks, NULL});
    cr_assert_eq(r.status, 1);
    expect(r.err, "no entry with alias 'nobody'");
    expect(r.err, "kmsserver");

    fx(absent, sizeof(absent), "absent.p12");
    kmsctl(&r, ENV_PW, (const char *[]){"keystore", "list", "--keystore", absent, NULL});
    cr_assert_eq(r.status, 1);
    expect(r.err, absent);
    expect(r.err, "No such file");
}

Test(kmsctl, usage_errors_exit_2)
{
    static const char *const cases[][8] = {
        {NULL},
        {"frobnicate", NULL},
        {"keystore", NULL},
        {"keystore", "shred", "--keystore", "x", NULL},
        {"keystore", "list", NULL},
        {"keystore", "show", "--keystore", "x", NULL},
        {"keystore", "list", "--keystore", "x", "--bogus", NULL},
        {"keystore", "list", "--keystore", NULL},
        {"keystore", "list", "--keystore", "x", "extra", NULL},
        {"help", "frobnicate", NULL},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        struct result r;
        kmsctl(&r, NULL, cases[i]);
        cr_assert_eq(r.status, 2, "case %zu: exit %d, stderr %s", i, r.status, r.err);
        expect(r.err, "Usage: kmsctl");
        cr_assert_eq(r.out[0], '\0', "case %zu printed to stdout", i);
    }
}

Test(kmsctl, help_lists_the_commands)
{
    static const char *const cases[][4] = {
        {"help", NULL}, {"--help", NULL}, {"help", "keystore", NULL}, {"keystore", "--help", NULL},
        {"keystore", "list", "--help", NULL},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        struct result r;
        kmsctl(&r, NULL, cases[i]);
        cr_assert_eq(r.status, 0, "case %zu", i);
        expect(r.out, "keystore");
        expect(r.out, "Usage: kmsctl");
    }
}

/* A one-entry JKS (v2, trusted certificate backend.der) digested under PASSWORD. */
static void write_jks(const char *path)
{
    char der_path[512];
    uint8_t der[4096], b[8192], md[20];
    size_t n = 0;
    fx(der_path, sizeof(der_path), "backend.der");
    FILE *f = fopen(der_path, "rb");
    cr_assert_not_null(f);
    size_t dl = fread(der, 1, sizeof(der), f);
    fclose(f);
    static const uint8_t head[] = {0xFE, 0xED, 0xFE, 0xED, 0, 0, 0, 2, 0, 0, 0, 1, 0, 0, 0, 2,
                                   0, 10, 'c', 'm', 'x', 'b', 'a', 'c', 'k', 'e', 'n', 'd',
                                   0, 0, 0, 0, 0, 0, 0, 0, 0, 5, 'X', '.', '5', '0', '9'};
    memcpy(b, head, sizeof(head));
    n = sizeof(head);
    b[n++] = (uint8_t)(dl >> 24), b[n++] = (uint8_t)(dl >> 16), b[n++] = (uint8_t)(dl >> 8), b[n++] = (uint8_t)dl;
    memcpy(b + n, der, dl);
    n += dl;
    uint8_t u16[64];
    size_t k = 0;
    for (const char *p = PASSWORD; *p; p++)
        u16[k++] = 0, u16[k++] = (uint8_t)*p;
    EVP_MD_CTX *c = EVP_MD_CTX_new();
    cr_assert(EVP_DigestInit_ex(c, EVP_sha1(), NULL) == 1 && EVP_DigestUpdate(c, u16, k) == 1 &&
              EVP_DigestUpdate(c, "Mighty Aphrodite", 16) == 1 && EVP_DigestUpdate(c, b, n) == 1 &&
              EVP_DigestFinal_ex(c, md, NULL) == 1);
    EVP_MD_CTX_free(c);
    memcpy(b + n, md, 20);
    n += 20;
    f = fopen(path, "wb");
    cr_assert_not_null(f);
    cr_assert_eq(fwrite(b, 1, n, f), n);
    fclose(f);
}

Test(kmsctl, jks_without_password_warns_that_integrity_was_not_checked)
{
    struct result r;
    char ks[512];
    fx(ks, sizeof(ks), "trust.jks");
    write_jks(ks);
    kmsctl(&r, NULL, (const char *[]){"keystore", "list", "--keystore", ks, NULL});
    cr_assert_eq(r.status, 0, "exit %d: %s", r.status, r.err);
    expect(r.out, "(JKS, 1 entry)");
    expect(r.out, "cmxbackend ");
    expect(r.err, "integrity check was skipped");
    kmsctl(&r, ENV_PW, (const char *[]){"keystore", "list", "--keystore", ks, NULL});
    cr_assert_eq(r.status, 0, "exit %d: %s", r.status, r.err);
    cr_assert_eq(r.err[0], '\0', "unexpected stderr: %s", r.err);
    kmsctl(&r, "KMS_KEYSTORE_PASSWORD=" WRONG, (const char *[]){"keystore", "list", "--keystore", ks, NULL});
    cr_assert_eq(r.status, 1);
    expect(r.err, "password is incorrect");
    unlink(ks);
}
