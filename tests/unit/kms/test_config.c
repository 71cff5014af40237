/* kmsd configuration: defaults, sources and precedence, secrets, validation,
 * warnings and the dump (kms/config.h, SPEC §7). */
#define _GNU_SOURCE /* nftw, open_memstream */
#include <criterion/criterion.h>

#include <ftw.h>
#include <sys/stat.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "kms/config.h"

static char tmpdir[64];
static char props_path[128];

static int rm_entry(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
    (void)sb;
    (void)flag;
    (void)ftw;
    return remove(path);
}

static void setup(void)
{
    snprintf(tmpdir, sizeof(tmpdir), "/tmp/kms_config_XXXXXX");
    cr_assert_not_null(mkdtemp(tmpdir));
    snprintf(props_path, sizeof(props_path), "%s/kms.properties", tmpdir);
}

static void teardown(void)
{
    if (tmpdir[0])
        nftw(tmpdir, rm_entry, 8, FTW_DEPTH | FTW_PHYS);
}

static void write_at(const char *path, const char *text)
{
    FILE *f = fopen(path, "wb");
    cr_assert_not_null(f, "cannot write %s", path);
    cr_assert_eq(fwrite(text, 1, strlen(text), f), strlen(text));
    cr_assert_eq(fclose(f), 0);
}

static void write_props(const char *text) { write_at(props_path, text); }

/* Warnings collected from kms_config_load. */
struct warnings {
    char text[8192];
    int count;
};

static void collect(void *ctx, const char *msg)
{
    struct warnings *w = ctx;
    size_t used = strlen(w->text);
    snprintf(w->text + used, sizeof(w->text) - used, "%s\n", msg);
    w->count++;
}

static struct kms_config *load_ok(const char *path, char *const *envp, struct warnings *w)
{
    struct kms_config *c = NULL;
    kms_rc rc = kms_config_load(path, envp, w ? collect : NULL, w, &c);
    cr_assert_eq(rc, KMS_OK, "load failed: %s: %s", kms_error_name(rc), kms_error_detail());
    cr_assert_not_null(c);
    return c;
}

/* Expects rc with every string of want[] in the detail and none of deny[]. */
static void load_fails(const char *path, char *const *envp, kms_rc want_rc, const char *const *want,
                       const char *const *deny)
{
    struct kms_config *c = (struct kms_config *)&c; /* must come back NULL */
    kms_rc rc = kms_config_load(path, envp, NULL, NULL, &c);
    cr_assert_eq(rc, want_rc, "expected %s, got %s (%s)", kms_error_name(want_rc), kms_error_name(rc),
                 kms_error_detail());
    cr_assert_null(c);
    for (size_t i = 0; want && want[i]; i++)
        cr_assert(strstr(kms_error_detail(), want[i]) != NULL, "detail '%s' lacks '%s'", kms_error_detail(),
                  want[i]);
    for (size_t i = 0; deny && deny[i]; i++)
        cr_assert(strstr(kms_error_detail(), deny[i]) == NULL, "detail '%s' leaks '%s'", kms_error_detail(),
                  deny[i]);
}

static char *const soft_env[] = {"KMS_HSM_PROTOCOL=soft", NULL};

TestSuite(config, .init = setup, .fini = teardown);

Test(config, defaults)
{
    struct kms_config *c = load_ok(NULL, soft_env, NULL);
    cr_assert_str_eq(kms_config_str(c, KMS_CFG_SERVER_ADDRESS), "0.0.0.0");
    cr_assert_eq(kms_config_int(c, KMS_CFG_SERVER_PORT), 8443);
    cr_assert_str_eq(kms_config_str(c, KMS_CFG_SERVER_KEY_ALIAS), "kmsserver");
    cr_assert_eq(kms_config_int(c, KMS_CFG_SERVER_THREADS), 2);
    cr_assert_eq(kms_config_int(c, KMS_CFG_SERVER_MAX_BODY), 65536);
    cr_assert_eq(kms_config_int(c, KMS_CFG_SERVER_CONN_TIMEOUT), 30);
    cr_assert_eq(kms_config_int(c, KMS_CFG_SERVER_CONN_LIMIT), 1024);
    cr_assert_str_eq(kms_config_str(c, KMS_CFG_KEYSTORE_FILE), "");
    cr_assert_null(kms_config_secret(c, KMS_CFG_KEYSTORE_PASSWORD));
    cr_assert_str_eq(kms_config_str(c, KMS_CFG_KEYSTORE_ALIAS), "kmsclient");
    cr_assert_str_eq(kms_config_str(c, KMS_CFG_HSM_PROTOCOL), "soft");
    cr_assert_str_eq(kms_config_str(c, KMS_CFG_HSM_SERVER_URL), "");
    cr_assert_eq(kms_config_int(c, KMS_CFG_HSM_SERVER_PORT), 5696);
    cr_assert_str_eq(kms_config_str(c, KMS_CFG_KMIP_SERVER_URL), "");
    cr_assert_eq(kms_config_int(c, KMS_CFG_KMIP_SERVER_PORT), 5696);
    cr_assert_str_eq(kms_config_str(c, KMS_CFG_HSM_MASTER_KEY), "kms-master");
    cr_assert_str_eq(kms_config_str(c, KMS_CFG_HSM_SOFT_FILE), "kms-soft-keys.bin");
    cr_assert_str_eq(kms_config_str(c, KMS_CFG_HSM_VAULT_NAMESPACE), "");
    cr_assert_str_eq(kms_config_str(c, KMS_CFG_HSM_VAULT_AUTH), "token");
    cr_assert_null(kms_config_secret(c, KMS_CFG_HSM_VAULT_TOKEN));
    cr_assert_eq(kms_config_int(c, KMS_CFG_HSM_VAULT_RENEW), 30);
    cr_assert_str_eq(kms_config_str(c, KMS_CFG_HSM_VAULT_AZURE_ROLE), "");
    cr_assert_str_eq(kms_config_str(c, KMS_CFG_HSM_VAULT_AZURE_PATH), "/v1/auth/azure/login");
    cr_assert_str_eq(kms_config_str(c, KMS_CFG_HSM_VAULT_AZURE_RESOURCE), "https://vault.hashicorp.com/");
    cr_assert_str_eq(kms_config_str(c, KMS_CFG_CACHE_TYPE), "none");
    cr_assert_str_eq(kms_config_str(c, KMS_CFG_CACHE_CONFIG_FILE), "");
    cr_assert_eq(kms_config_int(c, KMS_CFG_CACHE_TTL), 3600);
    cr_assert_eq(kms_config_int(c, KMS_CFG_CACHE_IDLE), 900);
    cr_assert_eq(kms_config_int(c, KMS_CFG_CACHE_MAX_ENTRIES), 10000);
    cr_assert_str_eq(kms_config_str(c, KMS_CFG_AUTH_ROLES), "");
    cr_assert_str_eq(kms_config_str(c, KMS_CFG_LOG_LEVEL), "info");
    cr_assert_str_eq(kms_config_str(c, KMS_CFG_AUDIT_FILE), "");
    cr_assert_str_eq(kms_config_str(c, KMS_CFG_NODE_NAME), "");
    cr_assert_eq(kms_config_bool(c, KMS_CFG_CONFIG_STRICT), 0);
    cr_assert_str_eq(kms_config_source(c, KMS_CFG_SERVER_PORT), "default");
    cr_assert_str_eq(kms_config_source(c, KMS_CFG_KEYSTORE_PASSWORD), "default");
    cr_assert_str_eq(kms_config_source(c, KMS_CFG_HSM_PROTOCOL), "env KMS_HSM_PROTOCOL");
    kms_config_free(&c);
    cr_assert_null(c);
    kms_config_free(&c);
    kms_config_free(NULL);
}

Test(config, every_key_has_a_name_and_description)
{
    for (int k = 0; k < KMS_CFG_COUNT; k++) {
        cr_assert(strncmp(kms_config_name((enum kms_config_key)k), "km", 2) == 0);
        cr_assert(strlen(kms_config_description((enum kms_config_key)k)) > 10, "key %d", k);
    }
    cr_assert_str_eq(kms_config_name(KMS_CFG_HSM_VAULT_RENEW), "kms.hsm.vault.auth.renew-before-expiry");
}

Test(config, file_values_in_every_syntax)
{
    write_props("# kmsd\n"
                "kms.hsm.protocol = soft\n"
                "kms.server.port:9443\n"
                "kms.server.address  127.0.0.2\n"
                "kms.keystore.file=/etc/kms/kms.jks\n"
                "kms.keystore.password=hunter2\n"
                "kms.cache.type=Distributed\n"
                "kms.cache.ttl = 0\n"
                "kms.log.level=WARN\n"
                "kms.config.strict=Yes\n"
                "kms.server.threads=8   \n"
                "kms.hsm.master.key=site-\\\n"
                "    master\n");
    struct warnings w = {{0}, 0};
    struct kms_config *c = load_ok(props_path, NULL, &w);
    cr_assert_eq(w.count, 0, "warnings: %s", w.text);
    cr_assert_eq(kms_config_int(c, KMS_CFG_SERVER_PORT), 9443);
    cr_assert_str_eq(kms_config_str(c, KMS_CFG_SERVER_ADDRESS), "127.0.0.2");
    cr_assert_str_eq(kms_config_str(c, KMS_CFG_KEYSTORE_FILE), "/etc/kms/kms.jks");
    cr_assert_str_eq(kms_config_secret(c, KMS_CFG_KEYSTORE_PASSWORD), "hunter2");
    cr_assert_str_eq(kms_config_str(c, KMS_CFG_CACHE_TYPE), "distributed");
    cr_assert_eq(kms_config_int(c, KMS_CFG_CACHE_TTL), 0);
    cr_assert_str_eq(kms_config_str(c, KMS_CFG_LOG_LEVEL), "warn");
    cr_assert_eq(kms_config_bool(c, KMS_CFG_CONFIG_STRICT), 1);
    cr_assert_eq(kms_config_int(c, KMS_CFG_SERVER_THREADS), 8);
    cr_assert_str_eq(kms_config_str(c, KMS_CFG_HSM_MASTER_KEY), "site-master");
    char want[160];
    snprintf(want, sizeof(want), "%s:3", props_path);
    cr_assert_str_eq(kms_config_source(c, KMS_CFG_SERVER_PORT), want);
    snprintf(want, sizeof(want), "%s:12", props_path);
    cr_assert_str_eq(kms_config_source(c, KMS_CFG_HSM_MASTER_KEY), want);
    kms_config_free(&c);
}

Test(config, enums_match_case_insensitively_and_store_canonical)
{
    static const struct {
        const char *in, *canon;
    } cases[] = {{"KMIP1", "kmip1"}, {"vault", "VAULT"}, {"Soft", "soft"}, {"VAULT", "VAULT"}};
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        char text[128];
        snprintf(text, sizeof(text), "kms.hsm.protocol=%s\nkms.hsm.server.url=hsm.example\n", cases[i].in);
        write_props(text);
        struct kms_config *c = load_ok(props_path, NULL, NULL);
        cr_assert_str_eq(kms_config_str(c, KMS_CFG_HSM_PROTOCOL), cases[i].canon);
        kms_config_free(&c);
    }
}

Test(config, bool_spellings)
{
    static const struct {
        const char *in;
        int v;
    } cases[] = {{"true", 1}, {"FALSE", 0}, {"yes", 1}, {"No", 0}, {"on", 1}, {"OFF", 0}, {"1", 1}, {"0", 0}};
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        char env0[64];
        snprintf(env0, sizeof(env0), "KMS_CONFIG_STRICT=%s", cases[i].in);
        char *const env[] = {"KMS_HSM_PROTOCOL=soft", env0, NULL};
        struct kms_config *c = load_ok(NULL, env, NULL);
        cr_assert_eq(kms_config_bool(c, KMS_CFG_CONFIG_STRICT), cases[i].v, "'%s'", cases[i].in);
        kms_config_free(&c);
    }
}

Test(config, environment_beats_file)
{
    write_props("kms.hsm.protocol=soft\n"
                "kms.server.port=9000\n"
                "kms.hsm.vault.auth.renew-before-expiry=10\n"
                "kms.node.name=from-file\n");
    char *const env[] = {"PATH=/usr/bin",
                         "KMS_SERVER_PORT=9443",
                         "KMS_HSM_VAULT_AUTH_RENEW_BEFORE_EXPIRY=60",
                         "KMS_SERVER_PORT=1", /* a later duplicate: getenv() sees the first */
                         NULL};
    struct warnings w = {{0}, 0};
    struct kms_config *c = load_ok(props_path, env, &w);
    cr_assert_eq(w.count, 0, "warnings: %s", w.text);
    cr_assert_eq(kms_config_int(c, KMS_CFG_SERVER_PORT), 9443);
    cr_assert_str_eq(kms_config_source(c, KMS_CFG_SERVER_PORT), "env KMS_SERVER_PORT");
    cr_assert_eq(kms_config_int(c, KMS_CFG_HSM_VAULT_RENEW), 60);
    cr_assert_str_eq(kms_config_source(c, KMS_CFG_HSM_VAULT_RENEW), "env KMS_HSM_VAULT_AUTH_RENEW_BEFORE_EXPIRY");
    cr_assert_str_eq(kms_config_str(c, KMS_CFG_NODE_NAME), "from-file");
    kms_config_free(&c);
}

Test(config, legacy_kmip_server_url_fills_the_hsm_url)
{
    write_props("kmip.server.url=hsm.example.com\n"
                "kmip.server.port=5697\n");
    struct kms_config *c = load_ok(props_path, NULL, NULL); /* kmip1 default is satisfied */
    cr_assert_str_eq(kms_config_str(c, KMS_CFG_HSM_PROTOCOL), "kmip1");
    cr_assert_str_eq(kms_config_str(c, KMS_CFG_HSM_SERVER_URL), "hsm.example.com");
    cr_assert_eq(kms_config_int(c, KMS_CFG_HSM_SERVER_PORT), 5697);
    char want[200];
    snprintf(want, sizeof(want), "legacy kmip.server.url (%s:1)", props_path);
    cr_assert_str_eq(kms_config_source(c, KMS_CFG_HSM_SERVER_URL), want);
    snprintf(want, sizeof(want), "legacy kmip.server.port (%s:2)", props_path);
    cr_assert_str_eq(kms_config_source(c, KMS_CFG_HSM_SERVER_PORT), want);
    kms_config_free(&c);

    /* The new names win when both are given. */
    write_props("kmip.server.url=old.example\nkmip.server.port=5697\n"
                "kms.hsm.server.url=new.example\nkms.hsm.server.port=5700\n");
    c = load_ok(props_path, NULL, NULL);
    cr_assert_str_eq(kms_config_str(c, KMS_CFG_HSM_SERVER_URL), "new.example");
    cr_assert_eq(kms_config_int(c, KMS_CFG_HSM_SERVER_PORT), 5700);
    kms_config_free(&c);

    /* From the environment too. */
    char *const env[] = {"KMIP_SERVER_URL=env-hsm.example", NULL};
    c = load_ok(NULL, env, NULL);
    cr_assert_str_eq(kms_config_str(c, KMS_CFG_HSM_SERVER_URL), "env-hsm.example");
    cr_assert_str_eq(kms_config_source(c, KMS_CFG_HSM_SERVER_URL), "legacy kmip.server.url (env KMIP_SERVER_URL)");
    cr_assert_eq(kms_config_int(c, KMS_CFG_HSM_SERVER_PORT), 5696);
    cr_assert_str_eq(kms_config_source(c, KMS_CFG_HSM_SERVER_PORT), "default");
    kms_config_free(&c);
}

/* The install guide writes kms.hsm.server.url=https://kmshsm.myCorp.com for a
 * KMIP HSM: the host and port are taken from it, whatever form it takes. */
static void endpoint_is(const char *url, const char *port_prop, const char *want_host, unsigned want_port)
{
    char text[512];
    snprintf(text, sizeof(text), "kms.hsm.server.url = %s\n%s", url, port_prop);
    write_props(text);
    struct kms_config *c = load_ok(props_path, NULL, NULL);
    char host[256];
    uint16_t port = 0;
    cr_assert_eq(kms_config_kmip_endpoint(c, host, sizeof(host), &port), KMS_OK, "%s: %s", url, kms_error_detail());
    cr_assert_str_eq(host, want_host, "url %s", url);
    cr_assert_eq(port, want_port, "url %s: port %u", url, port);
    kms_config_free(&c);
}

Test(config, kmip_server_url_in_every_form_the_guide_uses)
{
    endpoint_is("https://kmshsm.myCorp.com", "", "kmshsm.myCorp.com", 5696);
    endpoint_is("https://kmshsm.myCorp.com", "kms.hsm.server.port = 5697\n", "kmshsm.myCorp.com", 5697);
    endpoint_is("https://kmshsm.myCorp.com/", "", "kmshsm.myCorp.com", 5696);
    endpoint_is("HTTPS://hsm.example:7000", "", "hsm.example", 7000);
    endpoint_is("https://hsm.example:7000", "kms.hsm.server.port = 7000\n", "hsm.example", 7000);
    endpoint_is("kmip://10.0.0.5:5696", "", "10.0.0.5", 5696);
    endpoint_is("hsm.example.com", "", "hsm.example.com", 5696);
    endpoint_is("hsm.example.com:5699", "", "hsm.example.com", 5699);
    endpoint_is("[::1]:5700", "", "::1", 5700);
    endpoint_is("https://[fd00::5]", "", "fd00::5", 5696);
    endpoint_is("fd00::5", "", "fd00::5", 5696);
}

static void endpoint_fails(const char *url, const char *port_prop, const char *want)
{
    char text[512];
    snprintf(text, sizeof(text), "kms.hsm.server.url = %s\n%s", url, port_prop);
    write_props(text);
    const char *w[] = {"kms.hsm.server.url", want, props_path, NULL};
    load_fails(props_path, NULL, KMS_ERR_CONFIG, w, NULL);
}

Test(config, kmip_server_url_that_names_no_kmip_server_is_refused_at_load)
{
    endpoint_fails("http://hsm.example", "", "scheme 'http' is not KMIP over TLS");
    endpoint_fails("https://hsm.example/kmip", "", "has a path");
    endpoint_fails("https://hsm.example?x=1", "", "has a path, query");
    endpoint_fails("https://admin@hsm.example", "", "user info");
    endpoint_fails("https://hsm.example:0", "", "port is not a number");
    endpoint_fails("https://hsm.example:99999", "", "port is not a number");
    endpoint_fails("https://hsm.example:", "", "no port after it");
    endpoint_fails("https://", "", "no host name");
    endpoint_fails("https://[::1", "", "not closed");
    endpoint_fails("https://hsm example", "", "character a host name cannot");
    endpoint_fails("https://hsm.example:7000", "kms.hsm.server.port = 5697\n", "names port 7000 but kms.hsm.server.port = 5697");
    /* VAULT keeps its URL as a URL */
    write_props("kms.hsm.protocol = VAULT\nkms.hsm.server.url = https://vault:8200/\n");
    struct kms_config *c = load_ok(props_path, NULL, NULL);
    kms_config_free(&c);
}

Test(config, secret_from_a_file_property)
{
    char pw[128], text[256];
    snprintf(pw, sizeof(pw), "%s/pw", tmpdir);
    snprintf(text, sizeof(text), "kms.hsm.protocol=soft\nkms.keystore.password.file=%s\n", pw);
    write_props(text);

    static const struct {
        const char *content, *want;
    } cases[] = {{"s3cret\n", "s3cret"},   {"s3cret\r\n", "s3cret"}, {"s3cret", "s3cret"},
                 {"s3cret\n\n", "s3cret\n"}, {" spaced \n", " spaced "}, {"", ""}};
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        write_at(pw, cases[i].content);
        struct kms_config *c = load_ok(props_path, NULL, NULL);
        cr_assert_str_eq(kms_config_secret(c, KMS_CFG_KEYSTORE_PASSWORD), cases[i].want, "case %zu", i);
        char want[160];
        snprintf(want, sizeof(want), "file %s", pw);
        cr_assert_str_eq(kms_config_source(c, KMS_CFG_KEYSTORE_PASSWORD), want);
        kms_config_free(&c);
    }
}

Test(config, secret_from_a_file_named_in_the_environment)
{
    char pw[128], env0[160];
    snprintf(pw, sizeof(pw), "%s/token", tmpdir);
    write_at(pw, "p4ss\n");
    snprintf(env0, sizeof(env0), "KMS_KEYSTORE_PASSWORD_FILE=%s", pw);
    char *const env[] = {"KMS_HSM_PROTOCOL=soft", env0, NULL};
    write_props("kms.keystore.password=from-the-file\n");
    struct kms_config *c = load_ok(props_path, env, NULL);
    cr_assert_str_eq(kms_config_secret(c, KMS_CFG_KEYSTORE_PASSWORD), "p4ss"); /* env wins over the file */
    kms_config_free(&c);
}

Test(config, secret_value_in_the_environment_beats_a_file_path_in_the_file)
{
    char text[256];
    snprintf(text, sizeof(text), "kms.hsm.protocol=soft\nkms.hsm.vault.token.file=%s/absent\n", tmpdir);
    write_props(text);
    char *const env[] = {"KMS_HSM_VAULT_TOKEN=s.tok", NULL};
    struct kms_config *c = load_ok(props_path, env, NULL);
    cr_assert_str_eq(kms_config_secret(c, KMS_CFG_HSM_VAULT_TOKEN), "s.tok");
    cr_assert_str_eq(kms_config_source(c, KMS_CFG_HSM_VAULT_TOKEN), "env KMS_HSM_VAULT_TOKEN");
    kms_config_free(&c);
}

Test(config, value_and_file_for_one_secret_is_an_error)
{
    char pw[128], text[256];
    snprintf(pw, sizeof(pw), "%s/pw", tmpdir);
    write_at(pw, "FileSecret1\n");
    snprintf(text, sizeof(text), "kms.hsm.protocol=soft\nkms.keystore.password=PlainSecret1\nkms.keystore.password.file=%s\n",
             pw);
    write_props(text);
    const char *want[] = {"kms.keystore.password", NULL};
    const char *deny[] = {"PlainSecret1", "FileSecret1", NULL};
    load_fails(props_path, NULL, KMS_ERR_CONFIG, want, deny);

    char env1[160];
    snprintf(env1, sizeof(env1), "KMS_HSM_VAULT_TOKEN_FILE=%s", pw);
    char *const env[] = {"KMS_HSM_PROTOCOL=soft", "KMS_HSM_VAULT_TOKEN=EnvSecret1", env1, NULL};
    const char *want2[] = {"kms.hsm.vault.token", "KMS_HSM_VAULT_TOKEN_FILE", NULL};
    const char *deny2[] = {"EnvSecret1", "FileSecret1", NULL};
    load_fails(NULL, env, KMS_ERR_CONFIG, want2, deny2);
}

Test(config, unreadable_or_oversized_secret_file_is_an_error)
{
    char missing[128], env0[160];
    snprintf(missing, sizeof(missing), "%s/nope", tmpdir);
    snprintf(env0, sizeof(env0), "KMS_KEYSTORE_PASSWORD_FILE=%s", missing);
    char *const env[] = {"KMS_HSM_PROTOCOL=soft", env0, NULL};
    const char *want[] = {"kms.keystore.password", missing, NULL};
    load_fails(NULL, env, KMS_ERR_CONFIG, want, NULL);

    char big[128];
    snprintf(big, sizeof(big), "%s/big", tmpdir);
    char *content = malloc(64 * 1024 + 2);
    cr_assert_not_null(content);
    memset(content, 'x', 64 * 1024 + 1);
    content[64 * 1024 + 1] = '\0';
    write_at(big, content);
    snprintf(env0, sizeof(env0), "KMS_KEYSTORE_PASSWORD_FILE=%s", big);
    const char *want2[] = {"kms.keystore.password", big, "larger than", NULL};
    const char *deny2[] = {"xxxx", NULL};
    load_fails(NULL, env, KMS_ERR_CONFIG, want2, deny2);

    /* 64 KiB - 1 plus a newline is the largest accepted. */
    content[64 * 1024 - 1] = '\n';
    content[64 * 1024] = '\0';
    write_at(big, content);
    struct kms_config *c = load_ok(NULL, env, NULL);
    cr_assert_eq(strlen(kms_config_secret(c, KMS_CFG_KEYSTORE_PASSWORD)), 64 * 1024 - 1);
    kms_config_free(&c);
    free(content);
}

/* An invalid value for key: KMS_ERR_CONFIG naming the key, the value and why. */
static void invalid(const char *line, const char *key, const char *value, const char *why)
{
    char text[512];
    snprintf(text, sizeof(text), "kms.hsm.protocol=soft\nkms.keystore.password=TopSecret9\n%s\n", line);
    write_props(text);
    char quoted[256];
    snprintf(quoted, sizeof(quoted), "invalid value '%s' for %s (from %s:3)", value, key, props_path);
    const char *want[] = {quoted, why, NULL};
    const char *deny[] = {"TopSecret9", NULL};
    load_fails(props_path, NULL, KMS_ERR_CONFIG, want, deny);
}

Test(config, invalid_integers)
{
    char exact[300];
    snprintf(exact, sizeof(exact),
             "invalid value 'abc' for kms.server.port (from %s:3): expected an integer between 1 and 65535",
             props_path);
    invalid("kms.server.port=abc", "kms.server.port", "abc", exact);
    invalid("kms.server.port=70000", "kms.server.port", "70000", "between 1 and 65535");
    invalid("kms.server.port=0", "kms.server.port", "0", "between 1 and 65535");
    invalid("kms.server.port=-1", "kms.server.port", "-1", "integer");
    invalid("kms.server.port=+80", "kms.server.port", "+80", "integer");
    invalid("kms.server.port=0x50", "kms.server.port", "0x50", "integer");
    invalid("kms.server.port=80abc", "kms.server.port", "80abc", "integer");
    invalid("kms.server.port=", "kms.server.port", "", "integer");
    invalid("kms.server.port=8 443", "kms.server.port", "8 443", "integer");
    invalid("kms.cache.ttl=99999999999999999999999", "kms.cache.ttl", "99999999999999999999999", "integer");
    invalid("kms.cache.ttl=9223372036854775808", "kms.cache.ttl", "9223372036854775808", "integer");
    invalid("kms.server.max.body=1023", "kms.server.max.body", "1023", "between 1024 and 16777216");
    invalid("kms.server.threads=65", "kms.server.threads", "65", "between 1 and 64");
}

Test(config, invalid_enums_bools_and_strings)
{
    invalid("kms.cache.type=redis", "kms.cache.type", "redis", "expected one of none, local, distributed");
    invalid("kms.hsm.protocol=kmip2", "kms.hsm.protocol", "kmip2", "kmip1, VAULT, pkcs11, soft");
    invalid("kms.log.level=verbose", "kms.log.level", "verbose", "debug");
    invalid("kms.hsm.vault.auth=ldap", "kms.hsm.vault.auth", "ldap", "token, azure");
    invalid("kms.config.strict=maybe", "kms.config.strict", "maybe", "true or false");
    invalid("kms.config.strict=", "kms.config.strict", "", "true or false");
    invalid("kms.server.address=not an address", "kms.server.address", "not an address", "host name");
    invalid("kms.server.address=999.1.1.1", "kms.server.address", "999.1.1.1", "host name");
    invalid("kms.server.address=[::1]", "kms.server.address", "[::1]", "host name");
    invalid("kms.server.address=-bad.example", "kms.server.address", "-bad.example", "host name");
    invalid("kms.node.name=a\\tb", "kms.node.name", "a\tb", "control characters");
}

Test(config, invalid_roles_syntax)
{
    invalid("kms.auth.roles=cmxops", "kms.auth.roles", "cmxops", "prefix=role");
    invalid("kms.auth.roles=ops=root", "kms.auth.roles", "ops=root", "unknown role 'root'");
    invalid("kms.auth.roles=a=backend,,b=device", "kms.auth.roles", "a=backend,,b=device", "item 2");
    invalid("kms.auth.roles=a=backend,", "kms.auth.roles", "a=backend,", "item 2");
    invalid("kms.auth.roles==admin", "kms.auth.roles", "=admin", "empty alias prefix");
    invalid("kms.auth.roles=a b=admin", "kms.auth.roles", "a b=admin", "spaces");
    invalid("kms.auth.roles=ops=admin,OPS=device", "kms.auth.roles", "ops=admin,OPS=device", "listed twice");
}

Test(config, valid_roles_and_addresses_are_normalised)
{
    write_props("kms.hsm.protocol=soft\n"
                "kms.auth.roles = Ops = Admin , svc=backend,cmxAgent=DEVICE\n"
                "kms.server.address=kms-1.example.com\n");
    struct kms_config *c = load_ok(props_path, NULL, NULL);
    cr_assert_str_eq(kms_config_str(c, KMS_CFG_AUTH_ROLES), "ops=admin,svc=backend,cmxagent=device");
    cr_assert_str_eq(kms_config_str(c, KMS_CFG_SERVER_ADDRESS), "kms-1.example.com");
    kms_config_free(&c);
    static const char *const good[] = {"127.0.0.1", "::", "fe80::1", "localhost", NULL};
    for (size_t i = 0; good[i]; i++) {
        char env0[64];
        snprintf(env0, sizeof(env0), "KMS_SERVER_ADDRESS=%s", good[i]);
        char *const env[] = {"KMS_HSM_PROTOCOL=soft", env0, NULL};
        c = load_ok(NULL, env, NULL);
        cr_assert_str_eq(kms_config_str(c, KMS_CFG_SERVER_ADDRESS), good[i]);
        kms_config_free(&c);
    }
}

Test(config, invalid_value_from_the_environment_names_the_variable)
{
    char *const env[] = {"KMS_HSM_PROTOCOL=soft", "KMS_SERVER_PORT=http", NULL};
    const char *want[] = {"invalid value 'http' for kms.server.port (from env KMS_SERVER_PORT)", NULL};
    load_fails(NULL, env, KMS_ERR_CONFIG, want, NULL);
}

Test(config, secret_values_never_reach_a_detail)
{
    char *big = malloc(70000);
    cr_assert_not_null(big);
    memset(big, 'S', 69999);
    memcpy(big, "KMS_HSM_VAULT_TOKEN=", 20);
    big[69999] = '\0';
    char *const env[] = {"KMS_HSM_PROTOCOL=soft", big, NULL};
    const char *want[] = {"<redacted>", "kms.hsm.vault.token", NULL};
    const char *deny[] = {"SSSS", NULL};
    load_fails(NULL, env, KMS_ERR_CONFIG, want, deny);
    free(big);
}

Test(config, unknown_keys_are_warned_with_the_nearest_name)
{
    write_props("kms.hsm.protocol=soft\n"
                "kms.server.prot=8443\n"
                "completely.unrelated=1\n"
                "KMS.SERVER.PORT=2\n"
                "kms.server.port.file=/x\n"
                "kms.keystore.pasword.file=/y\n");
    char *const env[] = {"KMS_SERVER_PROT=1", "KMS_CONFIG=/etc/kms.properties", "KMS_TEST_FOO=1",
                         "KMS_SOURCE_DIR=/src", "KMS_BINARY_DIR=/bin", "HOME=/root", "KMS_ZZZZZZZZ=1", NULL};
    struct warnings w = {{0}, 0};
    struct kms_config *c = load_ok(props_path, env, &w);
    cr_assert(strstr(w.text, "unknown property 'kms.server.prot'") != NULL, "%s", w.text);
    cr_assert(strstr(w.text, "(line 2); did you mean 'kms.server.port'?") != NULL, "%s", w.text);
    cr_assert(strstr(w.text, "unknown property 'completely.unrelated'") != NULL, "%s", w.text);
    cr_assert(strstr(w.text, "(line 3)\n") != NULL, "no suggestion expected: %s", w.text);
    cr_assert(strstr(w.text, "'KMS.SERVER.PORT' in") != NULL, "%s", w.text);
    cr_assert(strstr(w.text, "(line 4); did you mean 'kms.server.port'?") != NULL, "%s", w.text);
    cr_assert(strstr(w.text, "'kms.server.port.file'") != NULL && strstr(w.text, "only secrets") != NULL, "%s",
              w.text);
    cr_assert(strstr(w.text, "did you mean 'kms.keystore.password.file'?") != NULL, "%s", w.text);
    cr_assert(strstr(w.text, "unknown environment variable KMS_SERVER_PROT; did you mean KMS_SERVER_PORT?") != NULL,
              "%s", w.text);
    cr_assert(strstr(w.text, "unknown environment variable KMS_ZZZZZZZZ\n") != NULL, "%s", w.text);
    cr_assert(strstr(w.text, "KMS_CONFIG=") == NULL && strstr(w.text, "KMS_CONFIG\n") == NULL, "%s", w.text);
    cr_assert(strstr(w.text, "KMS_TEST_FOO") == NULL && strstr(w.text, "KMS_SOURCE_DIR") == NULL &&
                  strstr(w.text, "KMS_BINARY_DIR") == NULL && strstr(w.text, "HOME") == NULL,
              "%s", w.text);
    cr_assert(strstr(w.text, "8443") == NULL, "a warning shows a value: %s", w.text);
    cr_assert_eq(w.count, 7, "%s", w.text);
    cr_assert_eq(kms_config_int(c, KMS_CFG_SERVER_PORT), 8443); /* the typo set nothing */
    kms_config_free(&c);
}

Test(config, duplicate_keys_are_warned_and_the_last_wins)
{
    write_props("kms.hsm.protocol=soft\nkms.server.port=1000\nkms.server.port=2000\n");
    struct warnings w = {{0}, 0};
    struct kms_config *c = load_ok(props_path, NULL, &w);
    cr_assert_eq(kms_config_int(c, KMS_CFG_SERVER_PORT), 2000);
    cr_assert(strstr(w.text, "'kms.server.port' is set more than once") != NULL, "%s", w.text);
    cr_assert(strstr(w.text, "lines 2 and 3") != NULL, "%s", w.text);
    kms_config_free(&c);
}

Test(config, strict_mode_refuses_unknown_names)
{
    write_props("kms.hsm.protocol=soft\nkms.config.strict=true\nkms.server.prot=1\n");
    const char *want[] = {"unknown property 'kms.server.prot'", "kms.config.strict", NULL};
    load_fails(props_path, NULL, KMS_ERR_CONFIG, want, NULL);

    char *const env[] = {"KMS_HSM_PROTOCOL=soft", "KMS_CONFIG_STRICT=on", "KMS_SERVER_PROT=1", NULL};
    const char *want2[] = {"KMS_SERVER_PROT", NULL};
    load_fails(NULL, env, KMS_ERR_CONFIG, want2, NULL);

    char *const env_ok[] = {"KMS_HSM_PROTOCOL=soft", "KMS_CONFIG_STRICT=on", "KMS_TEST_X=1", NULL};
    struct kms_config *c = load_ok(NULL, env_ok, NULL);
    kms_config_free(&c);
}

Test(config, cross_field_checks)
{
    const char *want[] = {"kms.hsm.protocol=kmip1 needs kms.hsm.server.url (or legacy kmip.server.url)", NULL};
    load_fails(NULL, NULL, KMS_ERR_CONFIG, want, NULL); /* the empty config: kmip1 without an HSM */

    char *const vault[] = {"KMS_HSM_PROTOCOL=VAULT", NULL};
    const char *want2[] = {"kms.hsm.protocol=VAULT needs kms.hsm.server.url", NULL};
    load_fails(NULL, vault, KMS_ERR_CONFIG, want2, NULL);

    char *const vault_ok[] = {"KMS_HSM_PROTOCOL=VAULT", "KMS_HSM_SERVER_URL=https://vault:8200", NULL};
    struct kms_config *c = load_ok(NULL, vault_ok, NULL);
    cr_assert_str_eq(kms_config_str(c, KMS_CFG_HSM_SERVER_URL), "https://vault:8200");
    kms_config_free(&c);

    char *const azure[] = {"KMS_HSM_PROTOCOL=VAULT", "KMS_HSM_SERVER_URL=https://vault:8200",
                           "KMS_HSM_VAULT_AUTH=azure", NULL};
    const char *want3[] = {"kms.hsm.vault.auth=azure", "kms.hsm.vault.auth.azure.role", NULL};
    load_fails(NULL, azure, KMS_ERR_CONFIG, want3, NULL);

    char *const azure_ok[] = {"KMS_HSM_PROTOCOL=VAULT", "KMS_HSM_SERVER_URL=https://vault:8200",
                              "KMS_HSM_VAULT_AUTH=azure", "KMS_HSM_VAULT_AUTH_AZURE_ROLE=kms", NULL};
    c = load_ok(NULL, azure_ok, NULL);
    cr_assert_str_eq(kms_config_str(c, KMS_CFG_HSM_VAULT_AUTH), "azure");
    kms_config_free(&c);
}

/* kms.hsm.protocol=pkcs11 (issue 16): a module, a token, and a PIN from a
 * file or the environment - never in clear in the properties file. */
Test(config, pkcs11_needs_module_token_and_a_pin_not_in_clear)
{
    char *const bare[] = {"KMS_HSM_PROTOCOL=pkcs11", NULL};
    const char *want[] = {"kms.hsm.protocol=pkcs11", "kms.hsm.pkcs11.library", NULL};
    load_fails(NULL, bare, KMS_ERR_CONFIG, want, NULL);

    char *const no_token[] = {"KMS_HSM_PROTOCOL=pkcs11", "KMS_HSM_PKCS11_LIBRARY=/m.so", NULL};
    const char *want2[] = {"kms.hsm.pkcs11.token.label", NULL};
    load_fails(NULL, no_token, KMS_ERR_CONFIG, want2, NULL);

    char *const no_pin[] = {"KMS_HSM_PROTOCOL=pkcs11", "KMS_HSM_PKCS11_LIBRARY=/m.so", "KMS_HSM_PKCS11_SLOT=3", NULL};
    const char *want3[] = {"kms.hsm.pkcs11.pin.file", NULL};
    load_fails(NULL, no_pin, KMS_ERR_CONFIG, want3, NULL);

    write_props("kms.hsm.protocol=pkcs11\nkms.hsm.pkcs11.library=/m.so\nkms.hsm.pkcs11.token.label=t\n"
                "kms.hsm.pkcs11.pin=31415926\n");
    const char *want4[] = {"kms.hsm.pkcs11.pin is in clear", "kms.properties:4", "kms.hsm.pkcs11.pin.file", NULL};
    const char *deny4[] = {"31415926", NULL};
    load_fails(props_path, NULL, KMS_ERR_CONFIG, want4, deny4);

    char pin_path[600];
    snprintf(pin_path, sizeof(pin_path), "%s/pin", tmpdir);
    write_at(pin_path, "31415926\n");
    char props[900];
    snprintf(props, sizeof(props), "kms.hsm.protocol=pkcs11\nkms.hsm.pkcs11.library=/m.so\n"
                                   "kms.hsm.pkcs11.token.label=t\nkms.hsm.pkcs11.pin.file=%s\n", pin_path);
    write_props(props);
    struct kms_config *c = load_ok(props_path, NULL, NULL);
    cr_assert_str_eq(kms_config_secret(c, KMS_CFG_HSM_PKCS11_PIN), "31415926");
    kms_config_free(&c);

    char *const env_pin[] = {"KMS_HSM_PROTOCOL=pkcs11", "KMS_HSM_PKCS11_LIBRARY=/m.so", "KMS_HSM_PKCS11_SLOT=3",
                             "KMS_HSM_PKCS11_PIN=2718", NULL};
    c = load_ok(NULL, env_pin, NULL);
    cr_assert_str_eq(kms_config_str(c, KMS_CFG_HSM_PKCS11_SLOT), "3");
    cr_assert_eq(kms_config_pkcs11_slot(c), 3);
    kms_config_free(&c);

    c = load_ok(props_path, NULL, NULL); /* by label: no slot */
    cr_assert_eq(kms_config_pkcs11_slot(c), -1);
    kms_config_free(&c);

    /* the largest slot id passes whole; one more is refused, never cut short */
    char *const top_slot[] = {"KMS_HSM_PROTOCOL=pkcs11", "KMS_HSM_PKCS11_LIBRARY=/m.so",
                              "KMS_HSM_PKCS11_SLOT=9223372036854775807", "KMS_HSM_PKCS11_PIN=2718", NULL};
    c = load_ok(NULL, top_slot, NULL);
    cr_assert_eq(kms_config_pkcs11_slot(c), 9223372036854775807L);
    kms_config_free(&c);
    char *const over_slot[] = {"KMS_HSM_PKCS11_SLOT=9223372036854775808", NULL};
    const char *want6[] = {"kms.hsm.pkcs11.slot", "whole number", NULL};
    load_fails(NULL, over_slot, KMS_ERR_CONFIG, want6, NULL);

    char *const bad_slot[] = {"KMS_HSM_PKCS11_SLOT=-1", NULL};
    const char *want5[] = {"kms.hsm.pkcs11.slot", NULL};
    load_fails(NULL, bad_slot, KMS_ERR_CONFIG, want5, NULL);
}

Test(config, file_errors_keep_their_codes)
{
    char missing[128];
    snprintf(missing, sizeof(missing), "%s/absent.properties", tmpdir);
    const char *want[] = {missing, NULL};
    load_fails(missing, soft_env, KMS_ERR_IO, want, NULL);

    write_props("kms.hsm.protocol=soft\nkms.node.name=\\uZZZZ\n");
    char where[160];
    snprintf(where, sizeof(where), "%s:2:", props_path);
    const char *want2[] = {where, NULL};
    load_fails(props_path, NULL, KMS_ERR_MALFORMED, want2, NULL);
}

/* ---- kms.distributed.cache.config.file: the cache's own properties file ---- */

static char cache_path[128];

/* Writes the cache file and a kms.properties (soft backend, distributed cache)
 * naming it, with extra lines appended after "kms.distributed.cache.config.file"
 * (line 3). */
static void write_cache_setup(const char *cache_text, const char *extra)
{
    snprintf(cache_path, sizeof(cache_path), "%s/cache.properties", tmpdir);
    write_at(cache_path, cache_text);
    char text[1024];
    snprintf(text, sizeof(text),
             "kms.hsm.protocol=soft\n"
             "kms.cache.type=distributed\n"
             "kms.distributed.cache.config.file=%s\n"
             "%s",
             cache_path, extra);
    write_props(text);
}

Test(config, cache_file_supplies_the_redis_settings)
{
    write_cache_setup("# Redis of the cluster\n"
                      "kms.cache.redis.url = redis://kmsd@10.0.0.5:6380/2\n"
                      "kms.cache.ttl: 120\n"
                      "kms.cache.redis.password=CacheFilePw9\n",
                      "kms.node.name=n1\n");
    struct warnings w = {{0}, 0};
    struct kms_config *c = load_ok(props_path, NULL, &w);
    cr_assert_eq(w.count, 0, "warnings: %s", w.text);
    cr_assert_str_eq(kms_config_str(c, KMS_CFG_CACHE_REDIS_URL), "redis://kmsd@10.0.0.5:6380/2");
    cr_assert_eq(kms_config_int(c, KMS_CFG_CACHE_TTL), 120);
    cr_assert_str_eq(kms_config_secret(c, KMS_CFG_CACHE_REDIS_PASSWORD), "CacheFilePw9");
    cr_assert_str_eq(kms_config_str(c, KMS_CFG_CACHE_CONFIG_FILE), cache_path);
    cr_assert_str_eq(kms_config_str(c, KMS_CFG_NODE_NAME), "n1");
    char src[160];
    snprintf(src, sizeof(src), "%s:2", cache_path);
    cr_assert_str_eq(kms_config_source(c, KMS_CFG_CACHE_REDIS_URL), src);
    snprintf(src, sizeof(src), "%s:3", cache_path);
    cr_assert_str_eq(kms_config_source(c, KMS_CFG_CACHE_TTL), src);
    cr_assert_eq(kms_config_int(c, KMS_CFG_CACHE_IDLE), 900); /* untouched: the default */
    kms_config_free(&c);

    /* a secret in the cache file may itself come from a file */
    char pw[128], text[256];
    snprintf(pw, sizeof(pw), "%s/redis-pw", tmpdir);
    write_at(pw, "FromPwFile3\n");
    snprintf(text, sizeof(text), "kms.cache.redis.password.file=%s\n", pw);
    write_cache_setup(text, "");
    c = load_ok(props_path, NULL, NULL);
    cr_assert_str_eq(kms_config_secret(c, KMS_CFG_CACHE_REDIS_PASSWORD), "FromPwFile3");
    kms_config_free(&c);
}

Test(config, cache_file_bad_value_names_the_file_and_line)
{
    write_cache_setup("kms.cache.idle=60\nkms.cache.ttl=forever\n", "");
    char where[200];
    snprintf(where, sizeof(where), "invalid value 'forever' for kms.cache.ttl (from %s:2)", cache_path);
    const char *want[] = {where, NULL};
    load_fails(props_path, NULL, KMS_ERR_CONFIG, want, NULL);

    /* the cache settings' cross-checks see values from the file */
    write_cache_setup("kms.cache.redis.url=http://redis:6379\n", "");
    snprintf(where, sizeof(where), "kms.cache.redis.url (from %s:1) must start with redis://", cache_path);
    const char *want2[] = {where, NULL};
    load_fails(props_path, NULL, KMS_ERR_CONFIG, want2, NULL);

    /* one secret twice inside the cache file: the usual P and P.file clash */
    write_cache_setup("kms.cache.redis.password=TwiceA1\nkms.cache.redis.password.file=/x\n", "");
    const char *want3[] = {"kms.cache.redis.password is set twice", NULL};
    const char *deny3[] = {"TwiceA1", NULL};
    load_fails(props_path, NULL, KMS_ERR_CONFIG, want3, deny3);

    write_cache_setup("kms.cache.ttl=1\nkms.node.name=\\uZZZZ\n", "");
    snprintf(where, sizeof(where), "%s:2:", cache_path);
    const char *want4[] = {"not a valid properties file", where, NULL};
    load_fails(props_path, NULL, KMS_ERR_CONFIG, want4, NULL);
}

Test(config, cache_file_refuses_keys_that_are_not_cache_settings)
{
    write_cache_setup("kms.cache.ttl=60\nkms.cache.idle=30\nkms.server.port=NotShown77\n", "");
    char where[200];
    snprintf(where, sizeof(where), "kms.server.port is not a cache setting (cache config file %s line 3)",
             cache_path);
    const char *want[] = {where, "belong in kms.properties", NULL};
    const char *deny[] = {"NotShown77", NULL};
    load_fails(props_path, NULL, KMS_ERR_CONFIG, want, deny);

    /* a misspelt prefix gets a suggestion among the cache settings */
    write_cache_setup("kms.cahce.ttl=60\n", "");
    const char *want2[] = {"kms.cahce.ttl is not a cache setting", "did you mean 'kms.cache.ttl'?", NULL};
    load_fails(props_path, NULL, KMS_ERR_CONFIG, want2, NULL);

    /* no nesting, no switching strict mode from the cache file */
    write_cache_setup("kms.distributed.cache.config.file=/etc/other\n", "");
    const char *want3[] = {"kms.distributed.cache.config.file is not a cache setting", NULL};
    load_fails(props_path, NULL, KMS_ERR_CONFIG, want3, NULL);
    write_cache_setup("kms.config.strict=false\n", "");
    const char *want4[] = {"kms.config.strict is not a cache setting", NULL};
    load_fails(props_path, NULL, KMS_ERR_CONFIG, want4, NULL);
}

Test(config, cache_file_typos_are_warned_or_refused_when_strict)
{
    write_cache_setup("kms.cache.redis.ulr=redis://r:6379\nkms.cache.ttl=10\nkms.cache.ttl=20\n", "");
    struct warnings w = {{0}, 0};
    struct kms_config *c = load_ok(props_path, NULL, &w);
    char where[320];
    snprintf(where, sizeof(where), "unknown property 'kms.cache.redis.ulr' in %s (line 1); did you mean "
                                   "'kms.cache.redis.url'?",
             cache_path);
    cr_assert(strstr(w.text, where) != NULL, "%s", w.text);
    cr_assert(strstr(w.text, "'kms.cache.ttl' is set more than once") != NULL, "%s", w.text);
    cr_assert(strstr(w.text, "redis://r") == NULL, "a warning shows a value: %s", w.text);
    cr_assert_eq(w.count, 2, "%s", w.text);
    cr_assert_eq(kms_config_int(c, KMS_CFG_CACHE_TTL), 20);
    cr_assert_str_eq(kms_config_str(c, KMS_CFG_CACHE_REDIS_URL), "redis://127.0.0.1:6379");
    kms_config_free(&c);

    write_cache_setup("kms.cache.redis.ulr=redis://r:6379\n", "kms.config.strict=true\n");
    const char *want[] = {"unknown property 'kms.cache.redis.ulr'", "kms.config.strict is on", NULL};
    load_fails(props_path, NULL, KMS_ERR_CONFIG, want, NULL);
}

Test(config, key_in_both_kms_properties_and_cache_file_is_ambiguous)
{
    write_cache_setup("kms.cache.ttl=20\n", "kms.cache.idle=5\nkms.cache.ttl=10\n");
    char a[160], b[160];
    snprintf(a, sizeof(a), "%s:5", props_path);
    snprintf(b, sizeof(b), "%s:1", cache_path);
    const char *want[] = {"kms.cache.ttl is set both in", a, b, "ambiguous", NULL};
    const char *deny[] = {"(as ", NULL};
    load_fails(props_path, NULL, KMS_ERR_CONFIG, want, deny);

    /* a secret as a value in one and as a file in the other: still one setting */
    write_cache_setup("kms.cache.redis.password.file=/run/pw\n", "kms.cache.redis.password=BothPlaces5\n");
    snprintf(a, sizeof(a), "%s:4", props_path);
    const char *want2[] = {"kms.cache.redis.password is set both in", a, "(as kms.cache.redis.password)", b,
                           "(as kms.cache.redis.password.file)", NULL};
    const char *deny2[] = {"BothPlaces5", NULL};
    load_fails(props_path, NULL, KMS_ERR_CONFIG, want2, deny2);
}

Test(config, environment_beats_the_cache_file)
{
    write_cache_setup("kms.cache.ttl=120\nkms.cache.redis.url=redis://from-file:6379\n", "");
    char *const env[] = {"KMS_CACHE_TTL=77", NULL};
    struct kms_config *c = load_ok(props_path, env, NULL);
    cr_assert_eq(kms_config_int(c, KMS_CFG_CACHE_TTL), 77);
    cr_assert_str_eq(kms_config_source(c, KMS_CFG_CACHE_TTL), "env KMS_CACHE_TTL");
    cr_assert_str_eq(kms_config_str(c, KMS_CFG_CACHE_REDIS_URL), "redis://from-file:6379");
    kms_config_free(&c);

    /* the cache file itself may be named by the environment, without kms.properties */
    char env0[200];
    snprintf(env0, sizeof(env0), "KMS_DISTRIBUTED_CACHE_CONFIG_FILE=%s", cache_path);
    char *const env2[] = {"KMS_HSM_PROTOCOL=soft", "KMS_CACHE_TYPE=distributed", env0, NULL};
    c = load_ok(NULL, env2, NULL);
    cr_assert_eq(kms_config_int(c, KMS_CFG_CACHE_TTL), 120);
    cr_assert_str_eq(kms_config_source(c, KMS_CFG_CACHE_CONFIG_FILE), "env KMS_DISTRIBUTED_CACHE_CONFIG_FILE");
    kms_config_free(&c);
}

Test(config, missing_or_unreadable_cache_file_is_a_config_error)
{
    char missing[160], text[512], where[200];
    snprintf(missing, sizeof(missing), "%s/absent-cache.properties", tmpdir);
    snprintf(text, sizeof(text), "kms.hsm.protocol=soft\nkms.cache.type=distributed\n"
                                 "kms.distributed.cache.config.file=%s\n", missing);
    write_props(text);
    snprintf(where, sizeof(where), "kms.distributed.cache.config.file from %s:3", props_path);
    const char *want[] = {"cannot read the distributed cache config file", missing, where, NULL};
    load_fails(props_path, NULL, KMS_ERR_CONFIG, want, NULL);

    /* a directory opens but does not read */
    snprintf(text, sizeof(text), "kms.hsm.protocol=soft\nkms.distributed.cache.config.file=%s\n", tmpdir);
    write_props(text);
    const char *want2[] = {"cannot read the distributed cache config file", tmpdir, NULL};
    load_fails(props_path, NULL, KMS_ERR_CONFIG, want2, NULL);

    /* empty means none (the sample's value) */
    write_props("kms.hsm.protocol=soft\nkms.distributed.cache.config.file=\n");
    struct kms_config *c = load_ok(props_path, NULL, NULL);
    kms_config_free(&c);
}

Test(config, hazelcast_xml_cache_file_is_refused_clearly)
{
    static const char *const docs[] = {
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<hazelcast xmlns=\"http://www.hazelcast.com/schema/config\">\n"
        "  <cluster-name>kms</cluster-name>\n</hazelcast>\n",
        "\xef\xbb\xbf\n  \t<hazelcast>\n  <network><port>5701</port></network>\n</hazelcast>\n",
        "<!-- kms cache -->\n<hazelcast/>\n",
    };
    for (size_t i = 0; i < sizeof(docs) / sizeof(docs[0]); i++) {
        write_cache_setup(docs[i], "");
        const char *want[] = {cache_path, "looks like XML",
                              "properties file of kms.cache.* keys", "not Hazelcast XML", NULL};
        load_fails(props_path, NULL, KMS_ERR_CONFIG, want, NULL);
    }
    /* a '<' inside a value is not XML */
    write_cache_setup("kms.cache.redis.url=redis://r:6379/0 \n# <not xml>\n", "");
    struct kms_config *c = load_ok(props_path, NULL, NULL);
    kms_config_free(&c);
}

Test(config, relative_cache_file_is_taken_from_the_working_directory)
{
    /* kms.properties in DIR/etc, the cache file in DIR/run (the working
     * directory), as for kms.keystore.file and the *.file secrets */
    char etc[128], run[128], path[160], text[256];
    snprintf(etc, sizeof(etc), "%s/etc", tmpdir);
    snprintf(run, sizeof(run), "%s/run", tmpdir);
    cr_assert_eq(mkdir(etc, 0700), 0);
    cr_assert_eq(mkdir(run, 0700), 0);
    snprintf(path, sizeof(path), "%s/kms.properties", etc);
    write_at(path, "kms.hsm.protocol=soft\nkms.cache.type=distributed\n"
                   "kms.distributed.cache.config.file=cache.properties\n");
    snprintf(text, sizeof(text), "%s/cache.properties", run);
    write_at(text, "kms.cache.ttl=42\n");
    snprintf(text, sizeof(text), "%s/cache.properties", etc);
    write_at(text, "kms.cache.ttl=43\n");
    cr_assert_eq(chdir(run), 0); /* a Criterion test runs in its own process */
    struct kms_config *c = load_ok(path, NULL, NULL);
    cr_assert_eq(kms_config_int(c, KMS_CFG_CACHE_TTL), 42);
    cr_assert_str_eq(kms_config_source(c, KMS_CFG_CACHE_TTL), "cache.properties:1");
    kms_config_free(&c);

    cr_assert_eq(chdir(etc), 0);
    cr_assert_eq(remove("cache.properties"), 0);
    cr_assert_eq(chdir(tmpdir), 0);
    const char *want[] = {"cannot read the distributed cache config file 'cache.properties'", NULL};
    load_fails(path, NULL, KMS_ERR_CONFIG, want, NULL);
}

Test(config, cache_file_without_the_distributed_cache_is_warned)
{
    write_cache_setup("kms.cache.ttl=60\n", "");
    char *const env[] = {"KMS_CACHE_TYPE=local", NULL};
    struct warnings w = {{0}, 0};
    struct kms_config *c = load_ok(props_path, env, &w);
    cr_assert(strstr(w.text, "kms.cache.type is local, not distributed") != NULL, "%s", w.text);
    cr_assert_eq(w.count, 1, "%s", w.text);
    cr_assert_eq(kms_config_int(c, KMS_CFG_CACHE_TTL), 60); /* still applies to the local cache */
    kms_config_free(&c);
}

Test(config, dump_redacts_secrets)
{
    char *const env[] = {"KMS_HSM_PROTOCOL=soft", "KMS_KEYSTORE_PASSWORD=DumpSecret7", NULL};
    struct kms_config *c = load_ok(NULL, env, NULL);
    char *text = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&text, &len);
    cr_assert_not_null(f);
    kms_config_dump(c, f);
    cr_assert_eq(fclose(f), 0);
    cr_assert(strstr(text, "DumpSecret7") == NULL, "dump leaks the secret");
    cr_assert(strstr(text, "kms.keystore.password = <redacted>   # env KMS_KEYSTORE_PASSWORD\n") != NULL, "%s", text);
    cr_assert(strstr(text, "kms.hsm.vault.token = <unset>   # default\n") != NULL, "%s", text);
    cr_assert(strstr(text, "kms.server.port = 8443   # default\n") != NULL, "%s", text);
    cr_assert(strstr(text, "kms.hsm.protocol = soft   # env KMS_HSM_PROTOCOL\n") != NULL, "%s", text);
    cr_assert(strstr(text, "kms.config.strict = false   # default\n") != NULL, "%s", text);
    for (int k = 0; k < KMS_CFG_COUNT; k++) {
        char needle[96];
        snprintf(needle, sizeof(needle), "\n%s = ", kms_config_name((enum kms_config_key)k));
        cr_assert(strstr(text, needle) != NULL, "dump lacks %s", needle + 1);
    }
    free(text);
    kms_config_free(&c);
}

Test(config, readers_refuse_the_wrong_type)
{
    char *const env[] = {"KMS_HSM_PROTOCOL=soft", "KMS_KEYSTORE_PASSWORD=TypeSecret", NULL};
    struct kms_config *c = load_ok(NULL, env, NULL);
    cr_assert_str_eq(kms_config_str(c, KMS_CFG_KEYSTORE_PASSWORD), ""); /* never the secret */
    cr_assert_eq(kms_config_int(c, KMS_CFG_KEYSTORE_FILE), 0);
    cr_assert_eq(kms_config_bool(c, KMS_CFG_SERVER_PORT), 0);
    cr_assert_null(kms_config_secret(c, KMS_CFG_SERVER_PORT));
    cr_assert_str_eq(kms_config_secret(c, KMS_CFG_KEYSTORE_PASSWORD), "TypeSecret");
    kms_config_free(&c);
}

/* deploy/kms.properties.sample lists every property, loads cleanly and, apart
 * from its example values, holds the table's defaults. */
Test(config, sample_file_matches_the_table)
{
    const char *src = getenv("KMS_SOURCE_DIR");
    cr_assert_not_null(src, "KMS_SOURCE_DIR is not set");
    char path[512];
    snprintf(path, sizeof(path), "%s/deploy/kms.properties.sample", src);
    FILE *f = fopen(path, "rb");
    cr_assert_not_null(f, "cannot open %s", path);
    static char text[65536];
    size_t n = fread(text + 1, 1, sizeof(text) - 2, f);
    fclose(f);
    text[0] = '\n';
    text[n + 1] = '\0';
    for (int k = 0; k < KMS_CFG_COUNT; k++) {
        char a[96], b[96];
        snprintf(a, sizeof(a), "\n%s=", kms_config_name((enum kms_config_key)k));
        snprintf(b, sizeof(b), "\n#%s=", kms_config_name((enum kms_config_key)k));
        cr_assert(strstr(text, a) != NULL || strstr(text, b) != NULL, "sample lacks %s", a + 1);
    }
    struct warnings w = {{0}, 0};
    struct kms_config *c = load_ok(path, NULL, &w);
    cr_assert_eq(w.count, 0, "%s", w.text);
    struct kms_config *d = load_ok(NULL, soft_env, NULL);
    for (int k = 0; k < KMS_CFG_COUNT; k++) {
        enum kms_config_key key = (enum kms_config_key)k;
        if (key == KMS_CFG_KEYSTORE_FILE || key == KMS_CFG_HSM_SERVER_URL || key == KMS_CFG_HSM_PROTOCOL)
            continue; /* example values */
        cr_assert_str_eq(kms_config_str(c, key), kms_config_str(d, key), "%s", kms_config_name(key));
        cr_assert_eq(kms_config_int(c, key), kms_config_int(d, key), "%s", kms_config_name(key));
        cr_assert_eq(kms_config_bool(c, key), kms_config_bool(d, key), "%s", kms_config_name(key));
        cr_assert_eq(kms_config_secret(c, key), NULL, "%s", kms_config_name(key));
    }
    cr_assert_str_eq(kms_config_str(c, KMS_CFG_HSM_PROTOCOL), "kmip1");
    kms_config_free(&d);
    kms_config_free(&c);
}

Test(config, a_reload_applies_live_settings_and_holds_back_the_rest)
{
    char *const before[] = {"KMS_HSM_PROTOCOL=soft", "KMS_CACHE_TTL=60", "KMS_LOG_LEVEL=info", NULL};
    char *const after[] = {"KMS_HSM_PROTOCOL=soft", "KMS_CACHE_TTL=5", "KMS_LOG_LEVEL=debug", "KMS_SERVER_PORT=9999",
                           "KMS_KEYSTORE_PASSWORD=NewSecret1", NULL};
    struct kms_config *old = load_ok(NULL, before, NULL), *fresh = load_ok(NULL, after, NULL), *m = NULL;
    char live[256], pending[256];
    cr_assert_eq(kms_config_merge_live(old, fresh, &m, live, pending, sizeof(live)), KMS_OK);
    cr_assert_eq(kms_config_int(m, KMS_CFG_CACHE_TTL), 5, "a live setting takes the new value");
    cr_assert_str_eq(kms_config_str(m, KMS_CFG_LOG_LEVEL), "debug");
    cr_assert_eq(kms_config_int(m, KMS_CFG_SERVER_PORT), 8443, "a restart-only setting keeps the value in force");
    cr_assert_null(kms_config_secret(m, KMS_CFG_KEYSTORE_PASSWORD), "the password is restart-only too");
    cr_assert_str_eq(live, "kms.cache.ttl,kms.log.level");
    cr_assert_str_eq(pending, "kms.server.port,kms.keystore.password");
    cr_assert_null(strstr(pending, "NewSecret1"));
    cr_assert(kms_config_is_live(KMS_CFG_AUTH_CRL_FILE));
    cr_assert_not(kms_config_is_live(KMS_CFG_KEYSTORE_FILE));
    kms_config_free(&m);
    cr_assert_eq(kms_config_merge_live(old, old, &m, live, pending, sizeof(live)), KMS_OK);
    cr_assert_str_eq(live, "");
    cr_assert_str_eq(pending, "");
    kms_config_free(&m);
    kms_config_free(&old);
    kms_config_free(&fresh);
}
