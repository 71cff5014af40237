/* server/trust.c: one generation of what the TLS server presents and
 * trusts. The kms.server.key.alias entry becomes GnuTLS's certificate chain
 * (leaf first) and key; a missing or key-less alias is refused by name
 * (taking ownership of what it was given either way: ASan's leak check
 * holds the test to that); the earliest expiry over the whole keystore is
 * found with its alias (the readiness report and the expiry metric); the
 * last reference frees. */
#include "server/trust.h"

#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/secret.h"
#include "tests/unit/keystore_fixtures.h"

#define PASSWORD "changeit"

ReportHook(PRE_ALL)(struct criterion_test_set *set)
{
    (void)set;
    fixtures_build("trust-test-", "TRUST_FIXTURES", PASSWORD, 1);
}

ReportHook(POST_ALL)(struct criterion_global_stats *stats)
{
    (void)stats;
    fixtures_remove();
}

static void setup(void)
{
    cr_assert_eq(kms_secmem_init(1 << 16), KMS_OK);
    cr_assert_not_null(getenv("TRUST_FIXTURES"), "the keystore fixtures were not built");
}

TestSuite(trust, .init = setup, .timeout = 60);

static struct kms_keystore *load(const char *name)
{
    char path[160];
    snprintf(path, sizeof(path), "%s/%s", getenv("TRUST_FIXTURES"), name);
    struct kms_keystore *ks = NULL;
    cr_assert_eq(kms_keystore_load(path, PASSWORD, &ks), KMS_OK, "%s: %s", name, kms_error_detail());
    return ks;
}

Test(trust, the_server_alias_becomes_the_chain_and_key_leaf_first)
{
    struct kms_trust *t = NULL;
    cr_assert_eq(kms_trust_new(load("bundle.pem"), NULL, "kmsserver", 7, &t), KMS_OK, "%s", kms_error_detail());
    cr_assert_eq(t->generation, 7);
    cr_assert_eq(t->refs, 1);
    cr_assert_geq(t->n_pcerts, 2, "the leaf and the chain behind it: %u", t->n_pcerts);
    gnutls_x509_crt_t leaf;
    cr_assert_eq(gnutls_pcert_export_x509(&t->pcerts[0], &leaf), 0);
    cr_assert_eq(gnutls_x509_crt_get_ca_status(leaf, NULL), 0, "the leaf comes first, not a CA");
    gnutls_x509_crt_deinit(leaf);
    cr_assert_not_null(t->key);
    kms_trust_ref(t);
    struct kms_trust *second = t;
    kms_trust_unref(&t);
    cr_assert_null(t);
    cr_assert_eq(second->refs, 1, "a reference still holds it");
    kms_trust_unref(&second);
    kms_trust_unref(&second); /* takes NULL */
}

Test(trust, an_alias_without_a_private_key_is_refused_by_name)
{
    struct kms_trust *t = NULL;
    cr_assert_eq(kms_trust_new(load("bundle.pem"), NULL, "nosuch", 1, &t), KMS_ERR_ALIAS_NOT_FOUND);
    cr_assert_null(t);
    cr_assert(strstr(kms_error_detail(), "'nosuch'") != NULL &&
                  strstr(kms_error_detail(), "kms.server.key.alias") != NULL,
              "%s", kms_error_detail());
    cr_assert_eq(kms_trust_new(load("bundle.pem"), NULL, "cmxbackend", 1, &t), KMS_ERR_ALIAS_NOT_FOUND,
                 "a certificate entry cannot serve TLS");
    cr_assert_null(t);
}

Test(trust, the_earliest_expiry_over_every_entry_is_found_with_its_alias)
{
    const char *fx = getenv("TRUST_FIXTURES");
    char cmd[1024];
    snprintf(cmd, sizeof(cmd),
             "cd %s && openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout soon.key "
             "-subj /CN=soon -out soon.csr 2>/dev/null && openssl x509 -req -in soon.csr -CA ca.crt -CAkey ca.key "
             "-set_serial 0x5005 -days 2 -out soon.crt 2>/dev/null && "
             "{ cat bundle.pem; printf 'Bag Attributes\\n    friendlyName: expiressoon\\n'; cat soon.crt; } "
             "> soon-bundle.pem",
             fx);
    cr_assert_eq(system(cmd), 0);
    struct kms_trust *t = NULL;
    cr_assert_eq(kms_trust_new(load("soon-bundle.pem"), NULL, "kmsserver", 1, &t), KMS_OK, "%s",
                 kms_error_detail());
    cr_assert_str_eq(t->earliest_alias, "expiressoon");
    time_t now = time(NULL);
    cr_assert(t->earliest_not_after > now + 86400 && t->earliest_not_after <= now + 2 * 86400 + 60,
              "in about two days: %lld", (long long)(t->earliest_not_after - now));
    kms_trust_unref(&t);
}
