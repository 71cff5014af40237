/* HTTP transport to Vault and to Azure's instance metadata service, on
 * libcurl (SPEC §8 "Vault Transit"; reference/vault-transit.md §0, §3, §4).
 *
 * A client keeps a small pool of curl easy handles, each with its own
 * connection cache, so worker threads reuse keep-alive connections to Vault
 * without sharing a handle. Every reply is bounded (the write callback refuses
 * bytes past max_response) and, when it has a body, parsed once as a strict
 * JSON object (hsm/vault/vault_json.h). TLS is always verified (peer and host
 * name) against the CA material given, or the system's store when none is.
 * Redirects are never followed: the token must not travel to another host.
 *
 * Vault requests carry X-Vault-Namespace (when a namespace is configured and
 * the request does not ask otherwise: sys/health must not have it, §4) and the
 * token header the caller passes. IMDS requests carry "Metadata: true", never
 * a Vault header, and never go through a proxy (§3). */
#ifndef KMS_HSM_VAULT_CLIENT_H
#define KMS_HSM_VAULT_CLIENT_H

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

#include "common/error.h"
#include "hsm/vault/vault_types.h"
#include "hsm/vault/vault_json.h"

#define KMS_VAULT_RESPONSE_MAX (1024 * 1024) /* default reply cap */

struct kms_vault_client_options {
    const char *address;          /* Vault: "http[s]://host[:port]" (a trailing "/" is dropped) */
    const char *ns;               /* namespace; NULL or "" for none */
    const char *imds_address;     /* IMDS base, e.g. "http://169.254.169.254"; NULL: no IMDS */
    const uint8_t *ca_pem;        /* trusted CA certificates (PEM), copied; NULL: none */
    size_t ca_pem_len;
    const char *ca_file;          /* or a CA file; NULL: none. Neither: the system store */
    long connect_timeout_ms;      /* > 0 */
    long timeout_ms;              /* whole request, > 0 */
    size_t max_response;          /* reply body cap in bytes, > 0 */
};

struct kms_vault_client;

/* Validates o and makes a client; *out is the caller's (kms_vault_client_free).
 * KMS_ERR_CONFIG (with the reason) when the address is not an http(s) URL
 * without user, query or path, the namespace has bytes a header cannot carry,
 * ca_pem holds no certificate or ca_file cannot be read, or a bound is 0;
 * KMS_ERR_NO_MEMORY. Contacts nobody. */
kms_rc kms_vault_client_new(const struct kms_vault_client_options *o, struct kms_vault_client **out) KMS_MUST_CHECK;
/* Closes every pooled handle (and connection); takes NULL, sets *c = NULL.
 * No request may be in flight. */
void kms_vault_client_free(struct kms_vault_client **c);

/* The configured Vault base address (borrowed). */
const char *kms_vault_client_address(const struct kms_vault_client *c);

enum kms_vault_target { KMS_VAULT_TARGET_VAULT, KMS_VAULT_TARGET_IMDS };
#define KMS_VAULT_NO_NAMESPACE 1u /* sys/health: restricted-root, no namespace header */

struct kms_vault_request {
    enum kms_vault_target target;
    const char *method;          /* "GET" or "POST" */
    const char *path;            /* appended to the base: "/v1/transit/keys/k", "/metadata/instance?..." */
    const char *token;           /* Vault only: sent as X-Vault-Token; NULL for none */
    const char *const *redact;   /* NULL-terminated strings hidden from error text (tokens); may be NULL */
    unsigned flags;
    const uint8_t *body;         /* POST body (JSON), borrowed; NULL with body_len 0 for none */
    size_t body_len;
};

struct kms_vault_response {
    long status;                          /* HTTP status */
    json_t *json;                         /* the body as an object; NULL when empty or invalid */
    int body_invalid;                     /* a non-empty body that is not a JSON object */
    char error[KMS_VAULT_ERROR_MAX];      /* first of {"errors":[...]}, or why the body is invalid */
};

/* Sends req and reads the whole reply into *resp (the caller clears it with
 * kms_vault_response_clear, also after a failure). KMS_OK when an HTTP reply
 * arrived, whatever its status. Errors: KMS_ERR_BACKEND_UNAVAILABLE (cannot
 * resolve, connect or complete TLS: refused, reset, certificate not trusted),
 * KMS_ERR_BACKEND_TIMEOUT (connect or total timeout), KMS_ERR_BACKEND (reply
 * larger than max_response, truncated, not HTTP), KMS_ERR_INTERNAL (bad
 * request: no IMDS configured, URL too long), KMS_ERR_NO_MEMORY. The detail
 * names the method and path, never the token. Thread-safe. */
kms_rc kms_vault_client_send(struct kms_vault_client *c, const struct kms_vault_request *req,
                             struct kms_vault_response *resp) KMS_MUST_CHECK;
void kms_vault_response_clear(struct kms_vault_response *r);

#endif
