/* The audit checkpoint key of a configuration (audit_key.h). */
#include "kms/audit_key.h"

#include <stdio.h>

#include "kms/cluster_key.h"

#define AUDIT_KEY_MIN 16 /* bytes: an HMAC-SHA256 key shorter than this is refused */

kms_rc kms_audit_key_configured(const struct kms_config *cfg, const struct kms_keystore *ks, struct kms_secret **key)
{
    *key = NULL;
    const char *alias = kms_config_str(cfg, KMS_CFG_AUDIT_KEY_ALIAS);
    if (alias[0] != '\0') {
        if (ks == NULL)
            return kms_fail(KMS_ERR_CONFIG, "kms.audit.key.alias '%s' needs the keystore (kms.keystore.file)", alias);
        kms_rc rc = kms_keystore_secret_key(ks, alias, key);
        if (rc != KMS_OK) {
            char why[400];
            (void)snprintf(why, sizeof(why), "%s", kms_error_detail());
            return kms_fail(rc, "kms.audit.key.alias (%s): %s", kms_config_source(cfg, KMS_CFG_AUDIT_KEY_ALIAS), why);
        }
        if (kms_secret_len(*key) < AUDIT_KEY_MIN) {
            size_t n = kms_secret_len(*key);
            kms_secret_free(key);
            return kms_fail(KMS_ERR_CONFIG, "%s: the secret-key entry '%s' holds %zu bytes; the audit key needs at "
                                            "least %d (keytool -genseckey -keyalg HmacSHA256 -keysize 256)",
                            kms_keystore_path(ks), alias, n, AUDIT_KEY_MIN);
        }
        return KMS_OK;
    }
    const char *text = kms_config_secret(cfg, KMS_CFG_AUDIT_KEY);
    if (text == NULL || text[0] == '\0')
        return KMS_OK;
    char what[512];
    (void)snprintf(what, sizeof(what), "kms.audit.key (%s)", kms_config_source(cfg, KMS_CFG_AUDIT_KEY));
    return kms_cluster_key_open(text, kms_config_secret(cfg, KMS_CFG_KEYSTORE_PASSWORD), what, key);
}
