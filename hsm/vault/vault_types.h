/* Vault types that callers outside hsm/vault/ see (through vault_backend.h),
 * kept apart from the JSON and HTTP layers so that including the backend's
 * header does not pull jansson or libcurl into kms/ or cli/ (issue 14). */
#ifndef KMS_HSM_VAULT_TYPES_H
#define KMS_HSM_VAULT_TYPES_H

#include <stddef.h>
#include <stdint.h>

#include "hsm/backend.h"

#define KMS_VAULT_TYPE_MAX 32

#define KMS_VAULT_URL_MAX 2048

enum kms_vault_auth_kind { KMS_VAULT_AUTH_TOKEN = 1, KMS_VAULT_AUTH_AZURE = 2 };

/* GET transit/keys/:name, data object (§1.2). */
struct kms_vault_key_meta {
    char name[KMS_MASTER_NAME_MAX + 1];
    char type[KMS_VAULT_TYPE_MAX];     /* "aes256-gcm96", ... */
    uint32_t latest_version;           /* >= 1 */
    uint32_t min_decryption_version;
    uint32_t min_encryption_version;   /* 0 = latest */
    uint32_t min_available_version;
    size_t versions;                   /* entries in data.keys */
    long long latest_created;          /* unix seconds of the latest version, 0 if unknown */
    long long auto_rotate_period;      /* seconds, 0 = off */
    int derived, convergent, exportable, deletion_allowed, allow_plaintext_backup;
    int supports_encryption, supports_decryption;
};

/* GET sys/health body (§5). */
struct kms_vault_health {
    long status; /* HTTP status, filled by the caller */
    int initialized, sealed, standby, performance_standby;
    char version[64];
    char cluster_name[128];
};

struct kms_vault_auth_state {
    enum kms_vault_auth_kind kind;
    int valid;               /* a token is held and not known to be expired or refused */
    int renewable;
    long long ttl;           /* seconds left; -1 when the token never expires */
    unsigned long renewals;  /* successful renew-self calls */
    unsigned long logins;    /* successful Azure logins */
    unsigned long lookups;   /* successful lookup-self calls */
};

#endif
