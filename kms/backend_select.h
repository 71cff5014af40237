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
/* As kms_backend_open_configured, for kmsctl hsm: a PKCS#11 token is opened
 * without looking for kms.hsm.master.key (create-key makes it). */
kms_rc kms_backend_open_for_admin(const struct kms_config *cfg, const struct kms_keystore *ks,
                                  struct kms_backend **out) KMS_MUST_CHECK;

/* What kmsd --check-config can tell without reaching the backend: for kmip1,
 * that ks holds kmsd's identity toward the HSM (the kms.keystore.alias
 * private-key entry) and a CA to verify the HSM with (a trusted CA entry or
 * kms.hsm.ca.file), read exactly as kms_backend_open_configured reads them.
 * pkcs11 (a local token): opens it as the node would - module, token, login,
 * the master key fit to be one - and closes it. soft and VAULT: KMS_OK.
 * Errors as kms_backend_open_configured's. */
kms_rc kms_backend_check_configured(const struct kms_config *cfg, const struct kms_keystore *ks) KMS_MUST_CHECK;

struct kms_backend_identity {
    int kmip;           /* 1: b is a KMIP backend and its identity was (re)installed */
    int changed;        /* its certificate differs from the one it presented before */
    char sha256[65];    /* SHA-256 of the certificate now presented, lowercase hex */
    char not_after[32]; /* its notAfter, "YYYY-MM-DDTHH:MM:SSZ" */
};

/* After a keystore reload: re-reads kmsd's identity toward the HSM and the
 * CAs trusted for it from ks exactly as kms_backend_open_configured does,
 * and installs them in b (the unwrapped backend it returned). KMIP: the
 * client presents the new certificate on its next connections, pooled
 * connections of the old one are closed after their request, no request
 * fails (kms_kmip_client_set_identity). soft and VAULT: nothing to do
 * (Vault authenticates by token or Azure identity; its CA list is read at
 * start only), KMS_OK with out->kmip = 0. Errors: KMS_ERR_ALIAS_NOT_FOUND
 * (no kms.keystore.alias private-key entry), KMS_ERR_CONFIG (no trusted CA,
 * unreadable kms.hsm.ca.file, certificate and key do not match), with a
 * detail naming the keystore and entry; the old identity then stays. */
kms_rc kms_backend_reload_identity(const struct kms_config *cfg, const struct kms_keystore *ks, struct kms_backend *b,
                                   struct kms_backend_identity *out) KMS_MUST_CHECK;

#endif
