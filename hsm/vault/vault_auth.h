/* Authentication to Vault (SPEC §7-8; reference/vault-transit.md §2-4):
 *
 *  - token: the operator's token. GET auth/token/lookup-self when opened (ttl,
 *    renewable); POST auth/token/renew-self renew_before seconds before it
 *    expires. A token that cannot be renewed (not renewable, or its max TTL
 *    reached) is warned about in the log: token auth cannot log in again.
 *  - azure: a managed-identity JWT from the instance metadata service (IMDS),
 *    the VM's subscription, resource group and name from IMDS's instance
 *    endpoint, then POST {path} (default /v1/auth/azure/login). The client
 *    token is renewed like a token; when renewal is impossible (not
 *    renewable, max TTL reached, refused), kmsd logs in again.
 *
 * A background thread does the renewals: it sleeps until renew_before
 * seconds before expiry (or 2/3 into a lease shorter than that, as Vault's
 * own LifetimeWatcher does), renews, and retries with a growing delay while
 * Vault cannot be reached. It never holds a lock while waiting and stops
 * within one request timeout when the auth is freed.
 *
 * Tokens and JWTs live in kms_secret buffers and never reach a log line or an
 * error detail. */
#ifndef KMS_HSM_VAULT_AUTH_H
#define KMS_HSM_VAULT_AUTH_H

#include <stddef.h>
#include <stdint.h>

#include "common/error.h"
#include "common/secret.h"
#include "hsm/vault/vault_client.h"
#include "hsm/vault/vault_types.h"

struct kms_vault_auth_options {
    enum kms_vault_auth_kind kind;
    const struct kms_secret *token; /* token auth: borrowed and copied; printable ASCII */
    unsigned renew_before;          /* seconds before expiry to renew */
    const char *azure_role;         /* azure: required */
    const char *azure_path;         /* azure: login path, "/v1/auth/azure/login" */
    const char *azure_resource;     /* azure: IMDS resource, "https://vault.hashicorp.com/" */
};


struct kms_vault_auth;

/* Authenticates through c (borrowed; must outlive *out): token lookup-self or
 * an Azure login, then starts the renewal thread. *out is the caller's
 * (kms_vault_auth_free). Errors: KMS_ERR_CONFIG (no or malformed token, no
 * role, no IMDS address for azure), KMS_ERR_BACKEND (Vault or IMDS refused:
 * invalid token, permission denied, unknown role; the reason in the detail),
 * KMS_ERR_BACKEND_UNAVAILABLE, KMS_ERR_BACKEND_TIMEOUT, KMS_ERR_NO_MEMORY. */
kms_rc kms_vault_auth_new(struct kms_vault_client *c, const struct kms_vault_auth_options *o,
                          struct kms_vault_auth **out) KMS_MUST_CHECK;
/* Stops the renewal thread (bounded by one request timeout), wipes the
 * token; takes NULL, sets *a = NULL. */
void kms_vault_auth_free(struct kms_vault_auth **a);

/* Copies the current token, NUL-terminated, into out (cap bytes, at least
 * KMS_VAULT_TOKEN_MAX + 1; the caller wipes it) and its generation (changes
 * with each new login). An Azure token already past its expiry is replaced by
 * a login first. Errors: KMS_ERR_INTERNAL (cap too small), the login's. */
kms_rc kms_vault_auth_token(struct kms_vault_auth *a, char *out, size_t cap, uint64_t *generation) KMS_MUST_CHECK;

/* Called once after Vault answered 403 to a request made with the token of
 * `generation`: token auth looks the token up again (KMS_OK: still valid, so
 * the 403 is a policy's; retry once), Azure logs in again. Another thread's
 * refresh since `generation` counts. KMS_ERR_BACKEND when the token is
 * invalid or the login refused; KMS_ERR_BACKEND_UNAVAILABLE/TIMEOUT. */
kms_rc kms_vault_auth_refresh(struct kms_vault_auth *a, uint64_t generation) KMS_MUST_CHECK;

void kms_vault_auth_get_state(struct kms_vault_auth *a, struct kms_vault_auth_state *out);

#endif
