/* Where the audit trail's checkpoint key comes from (kms.audit.*, docs/audit.md):
 * a secret-key entry of the keystore (kms.audit.key.alias; keytool -genseckey
 * into a PKCS#12 keystore, so that a cluster's keystore carries it to every
 * node), or a key sealed under the keystore password (kms.audit.key, made by
 * kmsctl audit key create). kmsd and kmsctl audit verify read it alike. */
#ifndef KMS_KMS_AUDIT_KEY_H
#define KMS_KMS_AUDIT_KEY_H

#include "common/error.h"
#include "common/secret.h"
#include "kms/config.h"
#include "kms/keystore.h"

/* The key the configuration names: *key is the caller's, NULL when it names
 * none. ks may be NULL when kms.audit.key.alias is unset. Errors name the
 * property, the keystore and the alias. */
kms_rc kms_audit_key_configured(const struct kms_config *cfg, const struct kms_keystore *ks, struct kms_secret **key)
    KMS_MUST_CHECK;

#endif
