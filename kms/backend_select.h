/* Opens the master-key backend kms.properties names (SPEC §8): kmip1 (an
 * HSM over KMIP), VAULT (Vault Transit) or soft (development). Shared by
 * kmsd and kmsctl so both reach the HSM exactly the same way. */
#ifndef KMS_KMS_BACKEND_SELECT_H
#define KMS_KMS_BACKEND_SELECT_H

#include "common/error.h"
#include "hsm/backend.h"
#include "kms/config.h"
#include "kms/keystore.h"

/* Opens the backend for cfg, taking kmsd's HSM identity (kms.keystore.alias)
 * and the CAs that verify the HSM (kms.hsm.ca.file, else the keystore's CA
 * entries) from ks. The soft backend is sealed with the keystore password and
 * gets kms.hsm.master.key created if it lacks it. *out is the caller's
 * (kms_backend_free). Errors: KMS_ERR_CONFIG / KMS_ERR_ALIAS_NOT_FOUND for
 * what the configuration lacks, the backend's own errors otherwise, each
 * with a detail naming the property or the peer. */
kms_rc kms_backend_open_configured(const struct kms_config *cfg, const struct kms_keystore *ks,
                                   struct kms_backend **out) KMS_MUST_CHECK;

#endif
