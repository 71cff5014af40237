/* hsm/vault/vault_json.c: strict readers of Vault's replies
 * (reference/vault-transit.md), with their negative cases. */
#include "hsm/vault/vault_json.h"

#include <criterion/criterion.h>
#include <stdio.h>
#include <string.h>

#define TMO .timeout = 30

static json_t *load_ok(const char *text)
{
    json_t *j = NULL;
    kms_rc rc = kms_vault_json_load((const uint8_t *)text, strlen(text), &j);
    cr_assert_eq(rc, KMS_OK, "%s: %s", text, kms_error_detail());
    return j;
}

static void load_fails(const char *text, size_t len)
{
    json_t *j = (json_t *)1;
    cr_assert_eq(kms_vault_json_load((const uint8_t *)text, len, &j), KMS_ERR_BACKEND, "%.*s", (int)len, text);
    cr_assert_null(j);
}

Test(vault_json, load_is_strict, TMO)
{
    json_t *j = load_ok("{\"a\":1}");
    json_decref(j);
    load_fails("", 0);
    load_fails("{\"a\":1", 6);                     /* truncated */
    load_fails("{\"a\":1,\"a\":2}", 13);           /* duplicate key */
    load_fails("{\"a\":1} x", 9);                  /* trailing bytes */
    load_fails("{\"a\":1}\0", 8);                  /* raw NUL after the object */
    load_fails("{\"a\":\"x\\u0000y\"}", 16);        /* escaped NUL in a string */
    load_fails("{\"a\":\"x\0y\"}", 10);             /* raw NUL in a string */
    load_fails("[1,2]", 5);                        /* not an object */
    load_fails("\"text\"", 6);
    load_fails("<html>", 6);
    load_fails("{\"a\":123456789012345678901234567890}", 36); /* integer overflow */
    char deep[4200];
    size_t n = 0;
    for (int i = 0; i < 2100; i++)
        deep[n++] = '[';
    deep[n] = '\0';
    char wrapped[4300];
    snprintf(wrapped, sizeof(wrapped), "{\"a\":%s", deep);
    load_fails(wrapped, strlen(wrapped)); /* deeper than jansson's limit, and truncated */
}

Test(vault_json, parse_failure_detail_does_not_quote_the_body, TMO)
{
    static const char body[] = "{\"data\":{\"plaintext\":\"c2VjcmV0LWtleS1tYXRlcmlhbA==";
    json_t *j = NULL;
    cr_assert_eq(kms_vault_json_load((const uint8_t *)body, sizeof(body) - 1, &j), KMS_ERR_BACKEND);
    cr_assert_null(strstr(kms_error_detail(), "c2VjcmV0"), "%s", kms_error_detail());
}

Test(vault_json, first_error, TMO)
{
    char e[KMS_VAULT_ERROR_MAX];
    json_t *j = load_ok("{\"errors\":[\"2 errors occurred:\\n\\t* permission denied\\n\\t* invalid token\\n\\n\"]}");
    cr_assert_eq(kms_vault_json_first_error(j, e, sizeof(e)), 1);
    cr_assert_str_eq(e, "2 errors occurred:  * permission denied  * invalid token  ");
    json_decref(j);
    j = load_ok("{\"errors\":[]}");
    cr_assert_eq(kms_vault_json_first_error(j, e, sizeof(e)), 1);
    cr_assert_str_eq(e, "");
    json_decref(j);
    j = load_ok("{\"errors\":[42]}");
    cr_assert_eq(kms_vault_json_first_error(j, e, sizeof(e)), 1);
    cr_assert_str_eq(e, "");
    json_decref(j);
    j = load_ok("{\"errors\":\"not an array\"}");
    cr_assert_eq(kms_vault_json_first_error(j, e, sizeof(e)), 0);
    json_decref(j);
    char small[8];
    j = load_ok("{\"errors\":[\"a long error message\"]}");
    cr_assert_eq(kms_vault_json_first_error(j, small, sizeof(small)), 1);
    cr_assert_str_eq(small, "a long ");
    json_decref(j);
}

static const char key_reply[] =
    "{\"request_id\":\"x\",\"data\":{\"allow_plaintext_backup\":false,\"auto_rotate_period\":0,"
    "\"deletion_allowed\":false,\"derived\":false,\"exportable\":false,\"imported_key\":false,"
    "\"keys\":{\"1\":1442851412,\"2\":1442851999},\"latest_version\":2,\"min_available_version\":0,"
    "\"min_decryption_version\":1,\"min_encryption_version\":0,\"name\":\"k\",\"supports_decryption\":true,"
    "\"supports_derivation\":true,\"supports_encryption\":true,\"supports_signing\":false,\"type\":\"aes256-gcm96\","
    "\"future_field\":[1,2]}}";

Test(vault_json, key_metadata, TMO)
{
    struct kms_vault_key_meta m;
    json_t *j = load_ok(key_reply);
    cr_assert_eq(kms_vault_json_key(j, &m), KMS_OK, "%s", kms_error_detail());
    cr_assert_str_eq(m.name, "k");
    cr_assert_str_eq(m.type, "aes256-gcm96");
    cr_assert_eq(m.latest_version, 2);
    cr_assert_eq(m.min_decryption_version, 1);
    cr_assert_eq(m.versions, 2);
    cr_assert_eq(m.latest_created, 1442851999);
    cr_assert_eq(m.derived, 0);
    cr_assert_eq(m.supports_encryption, 1);
    json_decref(j);
}

static void key_fails(const char *from, const char *to)
{
    char text[2048];
    const char *at = strstr(key_reply, from);
    cr_assert_not_null(at, "%s", from);
    snprintf(text, sizeof(text), "%.*s%s%s", (int)(at - key_reply), key_reply, to, at + strlen(from));
    json_t *j = load_ok(text);
    struct kms_vault_key_meta m;
    cr_assert_eq(kms_vault_json_key(j, &m), KMS_ERR_BACKEND, "%s -> %s", from, to);
    json_decref(j);
}

Test(vault_json, key_metadata_wrong_types, TMO)
{
    key_fails("\"latest_version\":2", "\"latest_version\":\"2\"");
    key_fails("\"latest_version\":2", "\"latest_version\":0");
    key_fails("\"latest_version\":2", "\"latest_version\":-1");
    key_fails("\"latest_version\":2", "\"latest_version\":4294967296");
    key_fails("\"latest_version\":2", "\"latest_version\":2.5");
    key_fails("\"latest_version\":2,", "");
    key_fails("\"derived\":false", "\"derived\":0");
    key_fails("\"derived\":false,", "");
    key_fails("\"type\":\"aes256-gcm96\"", "\"type\":7");
    key_fails("\"type\":\"aes256-gcm96\"", "\"type\":\"aes256 gcm96\"");
    key_fails("\"type\":\"aes256-gcm96\"", "\"type\":\"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\"");
    key_fails("\"keys\":{\"1\":1442851412,", "\"keys\":{\"1\":\"soon\",");
    key_fails("\"keys\":{", "\"keys\":[],\"x\":{");
    key_fails("\"supports_encryption\":true", "\"supports_encryption\":\"yes\"");
    key_fails("\"min_decryption_version\":1", "\"min_decryption_version\":null");
    json_t *j = load_ok("{\"data\":[]}");
    struct kms_vault_key_meta m;
    cr_assert_eq(kms_vault_json_key(j, &m), KMS_ERR_BACKEND);
    json_decref(j);
    j = load_ok("{}");
    cr_assert_eq(kms_vault_json_key(j, &m), KMS_ERR_BACKEND);
    json_decref(j);
}

static kms_rc ct_parse(const char *s, uint32_t *v) { return kms_vault_ct_parse((const uint8_t *)s, strlen(s), v); }

Test(vault_json, ciphertext_syntax, TMO)
{
    uint32_t v = 0;
    /* the reference's known answer (§1.9) */
    cr_assert_eq(ct_parse("vault:v1:oKGio6SlpqeoqaqrlXEISGigZ8ZPVbbhNE716EeUYHHw1CYJ+j4XtEyfQCCqaKMWGl2T5rnfr0w3R+p9", &v),
                 KMS_OK);
    cr_assert_eq(v, 1);
    cr_assert_eq(ct_parse("vault:v4294967295:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA", &v), KMS_OK);
    cr_assert_eq(v, 4294967295u);
    static const char *const bad[] = {
        "",
        "vault:",
        "vault:v",
        "vault:v1",
        "vault:v1:",
        "vault:v0:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
        "vault:v01:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
        "vault:v4294967296:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
        "vault:v99999999999999999999:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
        "vault:vx:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
        "vault:v-1:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
        "vault:v1:AAAA",                                         /* shorter than nonce + tag */
        "vault:v1:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",      /* not a multiple of 4 */
        "vault:v1:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA-_",     /* URL alphabet */
        "vault:v1:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA AAA",     /* space */
        "vault:v1:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA:x",
        "VAULT:v1:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
        "kms:v1:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        cr_assert_eq(ct_parse(bad[i], &v), KMS_ERR_MALFORMED, "%s", bad[i]);
        cr_assert_eq(v, 0);
    }
    uint8_t nul[] = "vault:v1:AAAAAAAAAAAAAAAAAAAA\0AAAAAAAAAAAAAAAAAAA";
    cr_assert_eq(kms_vault_ct_parse(nul, sizeof(nul) - 1, &v), KMS_ERR_MALFORMED);
    cr_assert_eq(kms_vault_ct_parse(NULL, 0, &v), KMS_ERR_MALFORMED);
    static char big[KMS_BACKEND_CT_MAX + 64];
    memcpy(big, "vault:v1:", 9);
    memset(big + 9, 'A', KMS_BACKEND_CT_MAX + 4);
    big[9 + KMS_BACKEND_CT_MAX + 4] = '\0';
    cr_assert_eq(ct_parse(big, &v), KMS_ERR_MALFORMED, "oversized");
}

Test(vault_json, ciphertext_reply, TMO)
{
    uint8_t out[256];
    size_t len = 0;
    uint32_t v = 0;
    json_t *j = load_ok("{\"data\":{\"ciphertext\":\"vault:v3:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA\","
                        "\"key_version\":3}}");
    cr_assert_eq(kms_vault_json_ciphertext(j, out, sizeof(out), &len, &v), KMS_OK);
    cr_assert_eq(len, 49);
    cr_assert_eq(v, 3);
    cr_assert_eq(memcmp(out, "vault:v3:", 9), 0);
    cr_assert_eq(kms_vault_json_ciphertext(j, out, 48, &len, &v), KMS_ERR_BACKEND, "too long for cap");
    cr_assert_eq(len, 0);
    json_decref(j);
    /* key_version is optional (older Vault), but must agree when present */
    j = load_ok("{\"data\":{\"ciphertext\":\"vault:v3:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA\"}}");
    cr_assert_eq(kms_vault_json_ciphertext(j, out, sizeof(out), &len, &v), KMS_OK);
    json_decref(j);
    static const char *const bad[] = {
        "{\"data\":{\"ciphertext\":\"vault:v3:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA\",\"key_version\":2}}",
        "{\"data\":{\"ciphertext\":\"vault:v3:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA\",\"key_version\":\"3\"}}",
        "{\"data\":{\"ciphertext\":3}}",
        "{\"data\":{\"ciphertext\":null}}",
        "{\"data\":{}}",
        "{\"data\":\"x\"}",
        "{\"ciphertext\":\"vault:v3:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA\"}",
        "{\"data\":{\"ciphertext\":\"vault:v3:AAAA\"}}",
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        j = load_ok(bad[i]);
        cr_assert_eq(kms_vault_json_ciphertext(j, out, sizeof(out), &len, &v), KMS_ERR_BACKEND, "%s", bad[i]);
        cr_assert_eq(len, 0);
        json_decref(j);
    }
}

Test(vault_json, plaintext_reply_is_wiped_and_checked, TMO)
{
    struct kms_secret *pt = NULL;
    json_t *j = load_ok("{\"data\":{\"plaintext\":\"c2l0ZS1rZXk=\"}}");
    json_t *s = json_object_get(json_object_get(j, "data"), "plaintext");
    cr_assert_eq(kms_vault_json_plaintext(j, &pt), KMS_OK);
    cr_assert_eq(kms_secret_len(pt), 8);
    cr_assert_eq(memcmp(kms_secret_cdata(pt), "site-key", 8), 0);
    const char *left = json_string_value(s);
    for (size_t i = 0; i < 12; i++)
        cr_assert_eq(left[i], 0, "the base64 in the JSON tree is wiped");
    kms_secret_free(&pt);
    json_decref(j);
    static const char *const bad[] = {
        "{\"data\":{\"plaintext\":\"\"}}",          "{\"data\":{\"plaintext\":\"c2l0ZS1rZXk\"}}",
        "{\"data\":{\"plaintext\":\"c2l0ZS1rZXk==\"}}", "{\"data\":{\"plaintext\":\"c2l0 ZS1r\"}}",
        "{\"data\":{\"plaintext\":\"cal\"}}",        "{\"data\":{\"plaintext\":\"c\"}}",
        "{\"data\":{\"plaintext\":7}}",             "{\"data\":{\"plaintext\":null}}",
        "{\"data\":{}}",                             "{\"plaintext\":\"c2l0ZS1rZXk=\"}",
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        j = load_ok(bad[i]);
        cr_assert_eq(kms_vault_json_plaintext(j, &pt), KMS_ERR_BACKEND, "%s", bad[i]);
        cr_assert_null(pt);
        json_decref(j);
    }
}

Test(vault_json, batch_results, TMO)
{
    json_t *arr = NULL;
    char e[KMS_VAULT_ERROR_MAX];
    json_t *j = load_ok("{\"data\":{\"batch_results\":[{\"ciphertext\":\"vault:v1:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA\","
                        "\"reference\":\"\"},{\"error\":\"cipher: message authentication failed\",\"reference\":\"\"}]}}");
    cr_assert_eq(kms_vault_json_batch(j, 2, &arr), KMS_OK);
    cr_assert_eq(kms_vault_json_item_error(json_array_get(arr, 0), e, sizeof(e)), 0);
    cr_assert_eq(kms_vault_json_item_error(json_array_get(arr, 1), e, sizeof(e)), 1);
    cr_assert_str_eq(e, "cipher: message authentication failed");
    cr_assert_eq(kms_vault_json_batch(j, 3, &arr), KMS_ERR_BACKEND, "count mismatch");
    cr_assert_null(arr);
    json_decref(j);
    j = load_ok("{\"data\":{\"batch_results\":[1]}}");
    cr_assert_eq(kms_vault_json_batch(j, 1, &arr), KMS_ERR_BACKEND);
    json_decref(j);
    j = load_ok("{\"data\":{\"batch_results\":{}}}");
    cr_assert_eq(kms_vault_json_batch(j, 0, &arr), KMS_ERR_BACKEND);
    json_decref(j);
}

Test(vault_json, token_replies, TMO)
{
    struct kms_vault_token_info ti;
    json_t *j = load_ok("{\"data\":{\"ttl\":2764790,\"renewable\":true,\"expire_time\":\"2018-05-19T11:35:54.466476215-04:00\"}}");
    cr_assert_eq(kms_vault_json_lookup_self(j, &ti), KMS_OK);
    cr_assert_eq(ti.ttl, 2764790);
    cr_assert_eq(ti.renewable, 1);
    json_decref(j);
    j = load_ok("{\"data\":{\"ttl\":0,\"renewable\":false,\"expire_time\":null}}"); /* a root token */
    cr_assert_eq(kms_vault_json_lookup_self(j, &ti), KMS_OK);
    cr_assert_eq(ti.ttl, 0);
    json_decref(j);
    static const char *const bad_lookup[] = {
        "{\"data\":{\"ttl\":\"10\",\"renewable\":true}}", "{\"data\":{\"ttl\":-1,\"renewable\":true}}",
        "{\"data\":{\"renewable\":true}}",             "{\"data\":{\"ttl\":10,\"renewable\":\"true\"}}",
        "{\"data\":{\"ttl\":10,\"renewable\":true,\"expire_time\":5}}",
        "{\"data\":{\"ttl\":0,\"renewable\":false,\"expire_time\":\"2018-05-19T11:35:54Z\"}}",
        "{\"auth\":{\"ttl\":10}}",
    };
    for (size_t i = 0; i < sizeof(bad_lookup) / sizeof(bad_lookup[0]); i++) {
        j = load_ok(bad_lookup[i]);
        cr_assert_eq(kms_vault_json_lookup_self(j, &ti), KMS_ERR_BACKEND, "%s", bad_lookup[i]);
        json_decref(j);
    }

    struct kms_secret *tok = NULL;
    long long lease = 0;
    int renewable = 0;
    j = load_ok("{\"auth\":{\"client_token\":\"hvs.CAESIAbcdefghijklmnopqrstu\",\"lease_duration\":2764800,"
                "\"renewable\":true,\"policies\":[\"default\"]}}");
    json_t *ct = json_object_get(json_object_get(j, "auth"), "client_token");
    cr_assert_eq(kms_vault_json_auth(j, &tok, &lease, &renewable), KMS_OK);
    cr_assert_eq(lease, 2764800);
    cr_assert_eq(renewable, 1);
    cr_assert_eq(kms_secret_len(tok), 30);
    cr_assert_eq(json_string_value(ct)[0], 0, "the token in the JSON tree is wiped");
    kms_secret_free(&tok);
    json_decref(j);
    j = load_ok("{\"auth\":{\"lease_duration\":60,\"renewable\":false}}"); /* renew-self: no token wanted */
    cr_assert_eq(kms_vault_json_auth(j, NULL, &lease, &renewable), KMS_OK);
    cr_assert_eq(lease, 60);
    json_decref(j);
    static const char *const bad_auth[] = {
        "{\"auth\":null}",
        "{\"auth\":{\"client_token\":\"hvs.x\",\"lease_duration\":\"60\",\"renewable\":true}}",
        "{\"auth\":{\"client_token\":\"hvs.x\",\"lease_duration\":60}}",
        "{\"auth\":{\"client_token\":\"\",\"lease_duration\":60,\"renewable\":true}}",
        "{\"auth\":{\"client_token\":\"hvs x\",\"lease_duration\":60,\"renewable\":true}}",
        "{\"auth\":{\"client_token\":\"hvs.x\\n\",\"lease_duration\":60,\"renewable\":true}}",
        "{\"auth\":{\"client_token\":7,\"lease_duration\":60,\"renewable\":true}}",
        "{\"auth\":{\"lease_duration\":60,\"renewable\":true}}",
        "{\"data\":{\"client_token\":\"hvs.x\",\"lease_duration\":60,\"renewable\":true}}",
    };
    for (size_t i = 0; i < sizeof(bad_auth) / sizeof(bad_auth[0]); i++) {
        j = load_ok(bad_auth[i]);
        cr_assert_eq(kms_vault_json_auth(j, &tok, &lease, &renewable), KMS_ERR_BACKEND, "%s", bad_auth[i]);
        cr_assert_null(tok);
        json_decref(j);
    }
    char longtok[KMS_VAULT_TOKEN_MAX + 100];
    snprintf(longtok, sizeof(longtok), "{\"auth\":{\"client_token\":\"%0*d\",\"lease_duration\":1,\"renewable\":true}}",
             KMS_VAULT_TOKEN_MAX + 1, 0);
    j = load_ok(longtok);
    cr_assert_eq(kms_vault_json_auth(j, &tok, &lease, &renewable), KMS_ERR_BACKEND, "oversized token");
    json_decref(j);
}

Test(vault_json, imds_replies, TMO)
{
    struct kms_secret *jwt = NULL;
    long long exp = 0;
    json_t *j = load_ok("{\"access_token\":\"eyJ0eXAi.eyJhdWQi.c2ln\",\"refresh_token\":\"\",\"expires_in\":\"3599\","
                        "\"expires_on\":\"1506484173\",\"not_before\":\"1506480273\","
                        "\"resource\":\"https://vault.hashicorp.com/\",\"token_type\":\"Bearer\"}");
    cr_assert_eq(kms_vault_json_imds_token(j, &jwt, &exp), KMS_OK);
    cr_assert_eq(exp, 3599);
    cr_assert_eq(kms_secret_len(jwt), 22);
    kms_secret_free(&jwt);
    json_decref(j);
    static const char *const bad[] = {
        "{\"access_token\":\"a.b.c\",\"expires_in\":3599}", /* IMDS sends strings */
        "{\"access_token\":\"a.b.c\",\"expires_in\":\"\"}",
        "{\"access_token\":\"a.b.c\",\"expires_in\":\"-5\"}",
        "{\"access_token\":\"a.b.c\",\"expires_in\":\"12345678901\"}",
        "{\"access_token\":\"\",\"expires_in\":\"3599\"}",
        "{\"access_token\":7,\"expires_in\":\"3599\"}",
        "{\"expires_in\":\"3599\"}",
        "{\"error\":\"invalid_resource\",\"error_description\":\"x\"}",
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        j = load_ok(bad[i]);
        cr_assert_eq(kms_vault_json_imds_token(j, &jwt, &exp), KMS_ERR_BACKEND, "%s", bad[i]);
        cr_assert_null(jwt);
        json_decref(j);
    }

    struct kms_vault_instance in;
    j = load_ok("{\"compute\":{\"subscriptionId\":\"sub-1\",\"resourceGroupName\":\"rg\",\"name\":\"vm1\","
                "\"vmScaleSetName\":\"\",\"location\":\"westeurope\"},\"network\":{}}");
    cr_assert_eq(kms_vault_json_imds_instance(j, &in), KMS_OK);
    cr_assert_str_eq(in.subscription_id, "sub-1");
    cr_assert_str_eq(in.resource_group, "rg");
    cr_assert_str_eq(in.vm_name, "vm1");
    cr_assert_str_eq(in.vmss_name, "");
    json_decref(j);
    j = load_ok("{\"compute\":{\"subscriptionId\":\"s\",\"resourceGroupName\":\"rg\",\"name\":\"vmss_0\","
                "\"vmScaleSetName\":\"vmss\"}}");
    cr_assert_eq(kms_vault_json_imds_instance(j, &in), KMS_OK);
    cr_assert_str_eq(in.vmss_name, "vmss");
    json_decref(j);
    static const char *const bad_in[] = {
        "{\"compute\":{\"resourceGroupName\":\"rg\",\"name\":\"vm1\"}}",
        "{\"compute\":{\"subscriptionId\":1,\"resourceGroupName\":\"rg\",\"name\":\"vm1\"}}",
        "{\"compute\":{\"subscriptionId\":\"s\",\"resourceGroupName\":\"r g\",\"name\":\"vm1\"}}",
        "{\"compute\":{\"subscriptionId\":\"s\",\"resourceGroupName\":\"rg\",\"name\":\"vm1\",\"vmScaleSetName\":1}}",
        "{\"compute\":{\"subscriptionId\":\"s\",\"resourceGroupName\":\"rg\",\"name\":\"\"}}",
        "{\"compute\":[]}",
        "{\"subscriptionId\":\"s\",\"resourceGroupName\":\"rg\",\"name\":\"vm1\"}",
    };
    for (size_t i = 0; i < sizeof(bad_in) / sizeof(bad_in[0]); i++) {
        j = load_ok(bad_in[i]);
        cr_assert_eq(kms_vault_json_imds_instance(j, &in), KMS_ERR_BACKEND, "%s", bad_in[i]);
        json_decref(j);
    }
}

Test(vault_json, health_reply, TMO)
{
    struct kms_vault_health h = {.status = 429};
    json_t *j = load_ok("{\"initialized\":true,\"sealed\":false,\"standby\":true,\"performance_standby\":false,"
                        "\"version\":\"1.20.0\",\"cluster_name\":\"vault-\\u0001cluster\",\"server_time_utc\":1}");
    cr_assert_eq(kms_vault_json_health(j, &h), KMS_OK);
    cr_assert_eq(h.status, 429);
    cr_assert_eq(h.standby, 1);
    cr_assert_str_eq(h.version, "1.20.0");
    cr_assert_str_eq(h.cluster_name, "vault- cluster", "control characters are not copied");
    json_decref(j);
    j = load_ok("{\"initialized\":true,\"sealed\":\"no\",\"standby\":false}");
    cr_assert_eq(kms_vault_json_health(j, &h), KMS_ERR_BACKEND);
    json_decref(j);
    j = load_ok("{\"initialized\":true,\"standby\":false}");
    cr_assert_eq(kms_vault_json_health(j, &h), KMS_ERR_BACKEND);
    json_decref(j);
    j = load_ok("{\"initialized\":true,\"sealed\":false,\"standby\":false,\"version\":1}");
    cr_assert_eq(kms_vault_json_health(j, &h), KMS_ERR_BACKEND);
    json_decref(j);
}

Test(vault_json, append_string_escapes, TMO)
{
    struct kms_buf b;
    kms_buf_init(&b, 64);
    cr_assert_eq(kms_vault_json_append_str(&b, "a\"b\\c\n\x01", 7), KMS_OK);
    cr_assert_eq(b.len, 21);
    cr_assert_eq(memcmp(b.data, "\"a\\\"b\\\\c\\u000a\\u0001\"", 21), 0, "%.*s", (int)b.len, b.data);
    json_t *j = NULL;
    kms_buf_reset(&b);
    cr_assert_eq(kms_buf_append_str(&b, "{\"k\":"), KMS_OK);
    cr_assert_eq(kms_vault_json_append_str(&b, "x\"}\x7f", 4), KMS_OK);
    cr_assert_eq(kms_buf_append_u8(&b, '}'), KMS_OK);
    cr_assert_eq(kms_vault_json_load(b.data, b.len, &j), KMS_OK, "round trip through a JSON parser");
    cr_assert_str_eq(json_string_value(json_object_get(j, "k")), "x\"}\x7f");
    json_decref(j);
    kms_buf_free(&b);
    kms_buf_init(&b, 4);
    cr_assert_eq(kms_vault_json_append_str(&b, "abcdef", 6), KMS_ERR_TOO_LARGE);
    kms_buf_free(&b);
}
