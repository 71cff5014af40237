#include "kms/backend_select.h"

#include <openssl/asn1.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "common/hex.h"
#include "common/log.h"
#include "hsm/kmip/kmip_backend.h"
#include "hsm/pkcs11/pkcs11_backend.h"
#include "hsm/soft/soft.h"
#include "hsm/vault/vault_backend.h"

static kms_rc open_soft(const struct kms_config *cfg, struct kms_backend **out)
{
    const char *password = kms_config_secret(cfg, KMS_CFG_KEYSTORE_PASSWORD);
    const char *master = kms_config_str(cfg, KMS_CFG_HSM_MASTER_KEY);
    KMS_GUARD(kms_soft_open(kms_config_str(cfg, KMS_CFG_HSM_SOFT_FILE), password ? password : "", master, out));
    /* why: a renamed kms.hsm.master.key would otherwise fail every customer-key
     * creation with key_not_found; in the development backend, create it. */
    struct kms_master_ref ref;
    if ((*out)->ops->resolve(*out, master, &ref) == KMS_ERR_KEY_NOT_FOUND) {
        kms_rc rc = kms_soft_create_key(*out, master);
        if (rc != KMS_OK) {
            kms_backend_free(out);
            return rc;
        }
        kms_log(KMS_LOG_INFO, "backend.soft.key_created", NULL, "master_key", master, NULL);
    }
    return KMS_OK;
}

/* The keystore's CA certificate entries: what kmsd trusts for its HSM. */
static size_t add_keystore_cas(const struct kms_keystore *ks, X509_STORE *store, STACK_OF(X509) *stack)
{
    size_t n = 0;
    for (size_t i = 0; i < kms_keystore_count(ks); i++) {
        const struct kms_ks_entry *e = kms_keystore_entry(ks, i);
        if (kms_ks_entry_type(e) != KMS_KS_CERTIFICATE || !kms_ks_entry_is_ca(e))
            continue;
        if (store != NULL)
            (void)X509_STORE_add_cert(store, kms_ks_entry_cert(e));
        if (stack != NULL && X509_up_ref(kms_ks_entry_cert(e)) == 1 && !sk_X509_push(stack, kms_ks_entry_cert(e)))
            X509_free(kms_ks_entry_cert(e));
        n++;
    }
    return n;
}

/* kmsd's identity toward the HSM (the kms.keystore.alias private-key entry)
 * and the CAs it trusts for the HSM (kms.hsm.ca.file, else the keystore's CA
 * entries): *trust is the caller's (X509_STORE_free), *id borrowed from ks.
 * Used at open and at keystore reload, so both read them alike. */
static kms_rc kmip_identity(const struct kms_config *cfg, const struct kms_keystore *ks,
                            const struct kms_ks_entry **id, X509_STORE **trust)
{
    *id = NULL;
    *trust = NULL;
    const char *alias = kms_config_str(cfg, KMS_CFG_KEYSTORE_ALIAS);
    const struct kms_ks_entry *e = kms_keystore_find(ks, alias);
    if (e == NULL || kms_ks_entry_type(e) != KMS_KS_PRIVATE_KEY)
        return kms_fail(KMS_ERR_ALIAS_NOT_FOUND,
                        "%s has no private-key entry '%s' (kms.keystore.alias, kmsd's identity toward the HSM)",
                        kms_keystore_path(ks), alias);
    X509_STORE *store = X509_STORE_new();
    if (store == NULL)
        return kms_fail(KMS_ERR_NO_MEMORY, "KMIP trust store");
    const char *ca_file = kms_config_str(cfg, KMS_CFG_HSM_CA_FILE);
    if (ca_file[0] != '\0') {
        if (X509_STORE_load_file(store, ca_file) != 1) {
            X509_STORE_free(store);
            kms_fail(KMS_ERR_CONFIG, "kms.hsm.ca.file %s: no PEM certificates could be read", ca_file);
            kms_error_add_openssl();
            return KMS_ERR_CONFIG;
        }
    } else if (add_keystore_cas(ks, store, NULL) == 0) {
        X509_STORE_free(store);
        return kms_fail(KMS_ERR_CONFIG,
                        "%s has no trusted CA entry (such as kmipSigningCA) to verify the HSM, and kms.hsm.ca.file "
                        "is not set",
                        kms_keystore_path(ks));
    }
    *id = e;
    *trust = store;
    return KMS_OK;
}

static kms_rc open_kmip(const struct kms_config *cfg, const struct kms_keystore *ks, struct kms_backend **out)
{
    const struct kms_ks_entry *id = NULL;
    X509_STORE *trust = NULL;
    KMS_GUARD(kmip_identity(cfg, ks, &id, &trust));
    struct kms_kmip_options o;
    memset(&o, 0, sizeof(o));
    char host[256];
    kms_rc rc = kms_config_kmip_endpoint(cfg, host, sizeof(host), &o.client.port);
    if (rc != KMS_OK) {
        X509_STORE_free(trust);
        return rc;
    }
    o.client.host = host;
    o.client.cert = kms_ks_entry_cert(id);
    o.client.key = kms_ks_entry_key(id);
    o.client.chain = kms_ks_entry_chain(id);
    o.client.trust = trust;
    o.client.pool_size = (unsigned)kms_config_int(cfg, KMS_CFG_HSM_POOL_SIZE);
    o.client.connect_timeout_ms = (unsigned)kms_config_int(cfg, KMS_CFG_HSM_CONNECT_TIMEOUT);
    o.client.io_timeout_ms = (unsigned)kms_config_int(cfg, KMS_CFG_HSM_TIMEOUT);
    rc = kms_kmip_backend_open(&o, out);
    X509_STORE_free(trust); /* the client holds its own reference */
    return rc;
}

static kms_rc open_pkcs11(const struct kms_config *cfg, int check_master, struct kms_backend **out);

kms_rc kms_backend_check_configured(const struct kms_config *cfg, const struct kms_keystore *ks)
{
    if (strcmp(kms_config_str(cfg, KMS_CFG_HSM_PROTOCOL), "pkcs11") == 0) {
        /* why open it: a token is local, so every step (module, token, PIN,
         * key) can be checked before the node starts, and said which failed */
        struct kms_backend *b = NULL;
        KMS_GUARD(open_pkcs11(cfg, 1, &b));
        kms_backend_free(&b);
        return KMS_OK;
    }
    if (strcmp(kms_config_str(cfg, KMS_CFG_HSM_PROTOCOL), "kmip1") != 0)
        return KMS_OK;
    const struct kms_ks_entry *id = NULL;
    X509_STORE *trust = NULL;
    KMS_GUARD(kmip_identity(cfg, ks, &id, &trust));
    X509_STORE_free(trust);
    return KMS_OK;
}

static void cert_sha256(X509 *x, char hex[65])
{
    uint8_t md[32];
    unsigned len = 0;
    hex[0] = '\0';
    if (x == NULL || X509_digest(x, EVP_sha256(), md, &len) != 1 || len != sizeof(md))
        return;
    kms_hex_encode(md, sizeof(md), hex, 65);
}

kms_rc kms_backend_reload_identity(const struct kms_config *cfg, const struct kms_keystore *ks, struct kms_backend *b,
                                   struct kms_backend_identity *out)
{
    memset(out, 0, sizeof(*out));
    if (b == NULL || b->ops->kind != KMS_BACKEND_KMIP)
        return KMS_OK;
    struct kms_kmip_client *c = kms_kmip_backend_client(b);
    if (c == NULL)
        return kms_fail(KMS_ERR_CONFIG, "HSM identity reload: the KMIP backend was passed wrapped (give the one "
                                        "kms_backend_open_configured returned)");
    const struct kms_ks_entry *id = NULL;
    X509_STORE *trust = NULL;
    KMS_GUARD(kmip_identity(cfg, ks, &id, &trust));
    X509 *old = kms_kmip_client_get1_cert(c);
    char old_fp[65];
    cert_sha256(old, old_fp);
    X509_free(old);
    kms_rc rc = kms_kmip_backend_set_identity(b, kms_ks_entry_cert(id), kms_ks_entry_key(id), kms_ks_entry_chain(id),
                                              trust);
    X509_STORE_free(trust);
    if (rc != KMS_OK) {
        char why[300];
        (void)snprintf(why, sizeof(why), "%s", kms_error_detail());
        return kms_fail(rc, "%s entry '%s' (kms.keystore.alias): %s; the previous HSM identity stays in force",
                        kms_keystore_path(ks), kms_config_str(cfg, KMS_CFG_KEYSTORE_ALIAS), why);
    }
    out->kmip = 1;
    cert_sha256(kms_ks_entry_cert(id), out->sha256);
    out->changed = strcmp(old_fp, out->sha256) != 0;
    const ASN1_TIME *na = X509_get0_notAfter(kms_ks_entry_cert(id));
    struct tm tm;
    if (na != NULL && ASN1_TIME_to_tm(na, &tm) == 1)
        (void)strftime(out->not_after, sizeof(out->not_after), "%Y-%m-%dT%H:%M:%SZ", &tm);
    return KMS_OK;
}

static kms_rc open_vault(const struct kms_config *cfg, const struct kms_keystore *ks, struct kms_backend **out)
{
    char address[512];
    /* why: the install guide's port default (5696) is KMIP's; a Vault URL
     * carries its own port, so only an explicitly set port is added. */
    long port = strcmp(kms_config_source(cfg, KMS_CFG_HSM_SERVER_PORT), "default") == 0
                    ? 0
                    : (long)kms_config_int(cfg, KMS_CFG_HSM_SERVER_PORT);
    KMS_GUARD(kms_vault_address(kms_config_str(cfg, KMS_CFG_HSM_SERVER_URL), port, address, sizeof(address)));
    struct kms_vault_options o;
    kms_vault_options_init(&o);
    o.address = address;
    o.ns = kms_config_str(cfg, KMS_CFG_HSM_VAULT_NAMESPACE);
    o.auth = strcmp(kms_config_str(cfg, KMS_CFG_HSM_VAULT_AUTH), "azure") == 0 ? KMS_VAULT_AUTH_AZURE
                                                                             : KMS_VAULT_AUTH_TOKEN;
    o.token = kms_config_secret(cfg, KMS_CFG_HSM_VAULT_TOKEN);
    if (o.auth == KMS_VAULT_AUTH_TOKEN && (o.token == NULL || o.token[0] == '\0'))
        return kms_fail(KMS_ERR_CONFIG, "kms.hsm.vault.auth=token needs kms.hsm.vault.token (or .file, or "
                                        "KMS_HSM_VAULT_TOKEN)");
    o.renew_before_expiry = (unsigned)kms_config_int(cfg, KMS_CFG_HSM_VAULT_RENEW);
    o.azure_role = kms_config_str(cfg, KMS_CFG_HSM_VAULT_AZURE_ROLE);
    o.azure_path = kms_config_str(cfg, KMS_CFG_HSM_VAULT_AZURE_PATH);
    o.azure_resource = kms_config_str(cfg, KMS_CFG_HSM_VAULT_AZURE_RESOURCE);
    o.imds_address = kms_config_str(cfg, KMS_CFG_HSM_VAULT_AZURE_IMDS);
    o.connect_timeout_ms = (long)kms_config_int(cfg, KMS_CFG_HSM_CONNECT_TIMEOUT);
    o.timeout_ms = (long)kms_config_int(cfg, KMS_CFG_HSM_TIMEOUT);
    const char *ca_file = kms_config_str(cfg, KMS_CFG_HSM_CA_FILE);
    STACK_OF(X509) *cas = sk_X509_new_null();
    if (cas == NULL)
        return KMS_ERR_NO_MEMORY;
    if (ca_file[0] != '\0')
        o.ca_file = ca_file;
    else if (add_keystore_cas(ks, NULL, cas) > 0)
        o.ca_certs = cas;
    kms_rc rc = kms_vault_backend_open(&o, out);
    sk_X509_pop_free(cas, X509_free);
    return rc;
}

/* kms.hsm.protocol=pkcs11: the token, logged in, and (check_master) its
 * master key found and fit to be one (AES-256, sensitive, not extractable),
 * else a refusal that names the step. A session per worker thread, unless
 * kms.hsm.pkcs11.sessions says otherwise. */
static kms_rc open_pkcs11(const struct kms_config *cfg, int check_master, struct kms_backend **out)
{
    const char *pin = kms_config_secret(cfg, KMS_CFG_HSM_PKCS11_PIN);
    struct kms_pkcs11_options o = {
        .library = kms_config_str(cfg, KMS_CFG_HSM_PKCS11_LIBRARY),
        .token_label = kms_config_str(cfg, KMS_CFG_HSM_PKCS11_TOKEN_LABEL),
        .slot = kms_config_pkcs11_slot(cfg),
        .pin = pin != NULL ? pin : "",
        .sessions = (unsigned)(kms_config_int(cfg, KMS_CFG_HSM_PKCS11_SESSIONS) > 0
                                   ? kms_config_int(cfg, KMS_CFG_HSM_PKCS11_SESSIONS)
                                   : kms_config_int(cfg, KMS_CFG_SERVER_THREADS)),
        .timeout_ms = (unsigned)kms_config_int(cfg, KMS_CFG_HSM_TIMEOUT),
    };
    KMS_GUARD(kms_pkcs11_backend_open(&o, out));
    if (!check_master)
        return KMS_OK;
    struct kms_master_ref ref;
    kms_rc rc = (*out)->ops->resolve(*out, kms_config_str(cfg, KMS_CFG_HSM_MASTER_KEY), &ref);
    if (rc != KMS_OK) {
        char why[400];
        (void)snprintf(why, sizeof(why), "%s", kms_error_detail());
        kms_backend_free(out);
        return kms_fail(rc, "%s", why);
    }
    return KMS_OK;
}

kms_rc kms_backend_open_configured(const struct kms_config *cfg, const struct kms_keystore *ks,
                                   struct kms_backend **out)
{
    *out = NULL;
    const char *protocol = kms_config_str(cfg, KMS_CFG_HSM_PROTOCOL);
    if (strcmp(protocol, "soft") == 0)
        return open_soft(cfg, out);
    if (strcmp(protocol, "kmip1") == 0)
        return open_kmip(cfg, ks, out);
    if (strcmp(protocol, "VAULT") == 0)
        return open_vault(cfg, ks, out);
    if (strcmp(protocol, "pkcs11") == 0)
        return open_pkcs11(cfg, 1, out);
    return kms_fail(KMS_ERR_CONFIG, "kms.hsm.protocol=%s is not a backend kmsd knows", protocol);
}

kms_rc kms_backend_open_for_admin(const struct kms_config *cfg, const struct kms_keystore *ks,
                                  struct kms_backend **out)
{
    if (strcmp(kms_config_str(cfg, KMS_CFG_HSM_PROTOCOL), "pkcs11") == 0) {
        *out = NULL;
        return open_pkcs11(cfg, 0, out);
    }
    return kms_backend_open_configured(cfg, ks, out);
}
