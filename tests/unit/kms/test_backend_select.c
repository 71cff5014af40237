/* kms/backend_select.c: kms.properties to a backend, as kmsd and kmsctl
 * both reach it. What --check-config can tell before dialling anything
 * (kmsd's identity toward the HSM and a CA to verify it, each missing piece
 * named), the soft backend sealed with the keystore password and given its
 * master key, a Vault without a token refused by property, and a keystore
 * reload that has nothing to install for soft. KMIP and Vault against real
 * peers are it_kmip_* and it_vault_*. */
#include "kms/backend_select.h"

#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/secret.h"
#include "hsm/soft/soft.h"
#include "tests/unit/keystore_fixtures.h"

#define PASSWORD "changeit"

static char work[64];

ReportHook(PRE_ALL)(struct criterion_test_set *set)
{
    (void)set;
    fixtures_build("bsel-test-", "BSEL_FIXTURES", PASSWORD, 1);
}

ReportHook(POST_ALL)(struct criterion_global_stats *stats)
{
    (void)stats;
    fixtures_remove();
}

static void setup(void)
{
    cr_assert_eq(kms_secmem_init(1 << 16), KMS_OK);
    cr_assert_not_null(getenv("BSEL_FIXTURES"), "the keystore fixtures were not built");
    snprintf(work, sizeof(work), "/tmp/kms-test-bsel-XXXXXX");
    cr_assert_not_null(mkdtemp(work));
}

static void teardown(void)
{
    char cmd[128];
    snprintf(cmd, sizeof(cmd), "rm -rf %s", work);
    (void)!system(cmd);
}

TestSuite(backend_select, .init = setup, .fini = teardown, .timeout = 60);

/* Writes kms.properties (the fixture keystore KEYSTORE, then extra) and loads
 * it and the keystore it names. */
static void load(const char *keystore, const char *extra, struct kms_config **cfg, struct kms_keystore **ks)
{
    char props[128];
    snprintf(props, sizeof(props), "%s/kms.properties", work);
    FILE *f = fopen(props, "w");
    cr_assert_not_null(f);
    fprintf(f, "kms.keystore.file = %s/%s\nkms.keystore.password = %s\n%s", getenv("BSEL_FIXTURES"), keystore,
            PASSWORD, extra);
    fclose(f);
    char *const envp[] = {NULL};
    cr_assert_eq(kms_config_load(props, envp, NULL, NULL, cfg), KMS_OK, "%s", kms_error_detail());
    cr_assert_eq(kms_keystore_load(kms_config_str(*cfg, KMS_CFG_KEYSTORE_FILE), PASSWORD, ks), KMS_OK, "%s",
                 kms_error_detail());
}

static void unload(struct kms_config **cfg, struct kms_keystore **ks)
{
    kms_keystore_free(ks);
    kms_config_free(cfg);
}

#define KMIP "kms.hsm.protocol = kmip1\nkms.hsm.server.url = 127.0.0.1\n"

Test(backend_select, kmip_with_its_identity_and_a_keystore_ca_passes_the_check)
{
    struct kms_config *cfg = NULL;
    struct kms_keystore *ks = NULL;
    load("bundle.pem", KMIP "kms.keystore.alias = kmsserver\n", &cfg, &ks);
    cr_assert_eq(kms_backend_check_configured(cfg, ks), KMS_OK, "%s", kms_error_detail());
    unload(&cfg, &ks);
}

Test(backend_select, a_missing_identity_names_the_alias_and_the_property)
{
    struct kms_config *cfg = NULL;
    struct kms_keystore *ks = NULL;
    load("bundle.pem", KMIP "kms.keystore.alias = kmsClient\n", &cfg, &ks);
    cr_assert_eq(kms_backend_check_configured(cfg, ks), KMS_ERR_ALIAS_NOT_FOUND);
    const char *d = kms_error_detail();
    cr_assert(strstr(d, "'kmsClient'") != NULL && strstr(d, "kms.keystore.alias") != NULL &&
                  strstr(d, "bundle.pem") != NULL,
              "%s", d);
    unload(&cfg, &ks);

    /* a certificate entry of that name is not an identity: it has no key */
    load("bundle.pem", KMIP "kms.keystore.alias = cmxbackend\n", &cfg, &ks);
    cr_assert_eq(kms_backend_check_configured(cfg, ks), KMS_ERR_ALIAS_NOT_FOUND);
    unload(&cfg, &ks);
}

Test(backend_select, no_ca_to_verify_the_hsm_is_refused_with_the_way_out)
{
    char leaf[160], cmd[400];
    snprintf(leaf, sizeof(leaf), "%s/leaf-only.pem", getenv("BSEL_FIXTURES"));
    snprintf(cmd, sizeof(cmd), "cd %s && cat server.p8 server.crt > leaf-only.pem", getenv("BSEL_FIXTURES"));
    cr_assert_eq(system(cmd), 0);
    struct kms_config *cfg = NULL;
    struct kms_keystore *ks = NULL;
    load("leaf-only.pem", KMIP "kms.keystore.alias = kmsserver\n", &cfg, &ks);
    cr_assert_eq(kms_backend_check_configured(cfg, ks), KMS_ERR_CONFIG);
    cr_assert(strstr(kms_error_detail(), "no trusted CA entry") != NULL &&
                  strstr(kms_error_detail(), "kms.hsm.ca.file") != NULL,
              "%s", kms_error_detail());
    unload(&cfg, &ks);

    /* kms.hsm.ca.file supplies it instead */
    char extra[300];
    snprintf(extra, sizeof(extra), KMIP "kms.keystore.alias = kmsserver\nkms.hsm.ca.file = %s/ca.crt\n",
             getenv("BSEL_FIXTURES"));
    load("leaf-only.pem", extra, &cfg, &ks);
    cr_assert_eq(kms_backend_check_configured(cfg, ks), KMS_OK, "%s", kms_error_detail());
    unload(&cfg, &ks);
}

Test(backend_select, an_unreadable_ca_file_is_named)
{
    struct kms_config *cfg = NULL;
    struct kms_keystore *ks = NULL;
    load("bundle.pem", KMIP "kms.keystore.alias = kmsserver\nkms.hsm.ca.file = /nonexistent/hsm-ca.pem\n", &cfg, &ks);
    cr_assert_eq(kms_backend_check_configured(cfg, ks), KMS_ERR_CONFIG);
    cr_assert(strstr(kms_error_detail(), "kms.hsm.ca.file /nonexistent/hsm-ca.pem") != NULL, "%s",
              kms_error_detail());
    unload(&cfg, &ks);
}

Test(backend_select, soft_is_sealed_with_the_keystore_password_and_gets_its_master_key)
{
    char extra[300];
    snprintf(extra, sizeof(extra), "kms.hsm.protocol = soft\nkms.hsm.soft.file = %s/soft.keys\n"
                                   "kms.hsm.master.key = site-master\n",
             work);
    struct kms_config *cfg = NULL;
    struct kms_keystore *ks = NULL;
    load("bundle.pem", extra, &cfg, &ks);
    cr_assert_eq(kms_backend_check_configured(cfg, ks), KMS_OK, "soft needs nothing from the keystore");
    struct kms_backend *b = NULL;
    cr_assert_eq(kms_backend_open_configured(cfg, ks, &b), KMS_OK, "%s", kms_error_detail());
    struct kms_master_ref ref;
    cr_assert_eq(b->ops->resolve(b, "site-master", &ref), KMS_OK, "the master key was created: %s",
                 kms_error_detail());
    struct kms_backend_identity id;
    cr_assert_eq(kms_backend_reload_identity(cfg, ks, b, &id), KMS_OK);
    cr_assert_eq(id.kmip, 0, "nothing to install for soft");
    kms_backend_free(&b);
    char path[128];
    snprintf(path, sizeof(path), "%s/soft.keys", work);
    cr_assert_eq(access(path, F_OK), 0, "the sealed file is where kms.hsm.soft.file says");
    /* the same file under another password does not open */
    struct kms_backend *again = NULL;
    cr_assert_neq(kms_soft_open(path, "not-the-password", "site-master", &again), KMS_OK);
    cr_assert_null(again);
    unload(&cfg, &ks);
}

Test(backend_select, vault_with_token_auth_and_no_token_names_the_property)
{
    struct kms_config *cfg = NULL;
    struct kms_keystore *ks = NULL;
    load("bundle.pem", "kms.hsm.protocol = VAULT\nkms.hsm.server.url = https://127.0.0.1:8200\n", &cfg, &ks);
    cr_assert_eq(kms_backend_check_configured(cfg, ks), KMS_OK, "nothing to check before dialling");
    struct kms_backend *b = NULL;
    cr_assert_eq(kms_backend_open_configured(cfg, ks, &b), KMS_ERR_CONFIG);
    cr_assert_null(b);
    cr_assert(strstr(kms_error_detail(), "kms.hsm.vault.token") != NULL, "%s", kms_error_detail());
    unload(&cfg, &ks);
}
