/* The route table (SPEC §4). One row per method and path; {} is one path
 * segment, handed to the handler as r->param. */
#include <string.h>

#include "server/internal.h"

#define ANYONE 0u
#define BACKEND (1u << KMS_ROLE_BACKEND)
#define DEVICE (1u << KMS_ROLE_DEVICE)
#define ADMIN (1u << KMS_ROLE_ADMIN)
#define ANY_CERT (BACKEND | DEVICE | ADMIN)

/* method, path, handler, roles, body, audit name, identify (decide a
 * certificate's identity on a route open to anyone), rate-limit budget */
static const struct kms_route routes[] = {
    {"GET", "/health/live", kms_handle_health_live, ANYONE, KMS_BODY_NONE, NULL, 0, KMS_RL_OTHER},
    {"GET", "/health/ready", kms_handle_health_ready, ANYONE, KMS_BODY_NONE, NULL, 1, KMS_RL_OTHER},
    {"GET", "/v1/whoami", kms_handle_whoami, ANY_CERT, KMS_BODY_NONE, "whoami", 0, KMS_RL_OTHER},
    {"POST", "/v1/customer-keys", kms_handle_customer_create, BACKEND, KMS_BODY_JSON, "customer-key.create", 0,
     KMS_RL_CREATE},
    {"POST", "/v1/user-keys", kms_handle_user_create, BACKEND, KMS_BODY_JSON, "user-key.create", 0, KMS_RL_CREATE},
    {"POST", "/v1/workspace-keys", kms_handle_workspace_create, BACKEND, KMS_BODY_JSON, "workspace-key.create", 0,
     KMS_RL_CREATE},
    {"POST", "/v1/workspace-keys/unwrap", kms_handle_workspace_unwrap, BACKEND | DEVICE, KMS_BODY_JSON,
     "workspace-key.unwrap", 0, KMS_RL_UNWRAP},
    {"POST", "/v1/keys/{}/wrap", kms_handle_key_wrap, BACKEND, KMS_BODY_JSON, "key.wrap", 0, KMS_RL_OTHER},
    {"POST", "/v1/keys/{}/unwrap", kms_handle_key_unwrap, BACKEND | DEVICE, KMS_BODY_JSON, "key.unwrap", 0,
     KMS_RL_UNWRAP},
    {"POST", "/v1/keys/{}/rewrap", kms_handle_key_rewrap, BACKEND, KMS_BODY_JSON, "key.rewrap", 0, KMS_RL_OTHER},
    {"POST", "/v1/keys/{}/datakey", kms_handle_key_datakey, BACKEND, KMS_BODY_JSON, "key.datakey", 0, KMS_RL_CREATE},
    {"GET", "/v1/keys/{}", kms_handle_key_info, BACKEND, KMS_BODY_NONE, "key.info", 0, KMS_RL_OTHER},
    {"GET", "/v1/cluster", kms_handle_cluster, ADMIN, KMS_BODY_NONE, "cluster.nodes", 0, KMS_RL_OTHER},
    {"POST", "/v1/cluster/cache/invalidate", kms_handle_cache_invalidate, ADMIN, KMS_BODY_NONE, "cache.invalidate",
     0, KMS_RL_OTHER},
};

/* Matches url against pattern; copies the {} segment into param. */
static int match(const char *pattern, const char *url, char *param, size_t cap)
{
    const char *p = pattern, *u = url;
    while (*p && *u) {
        if (p[0] == '{' && p[1] == '}') {
            const char *end = strchr(u, '/');
            size_t len = end ? (size_t)(end - u) : strlen(u);
            if (len == 0 || len >= cap)
                return 0;
            memcpy(param, u, len);
            param[len] = '\0';
            u += len;
            p += 2;
            continue;
        }
        if (*p != *u)
            return 0;
        p++;
        u++;
    }
    return *p == '\0' && *u == '\0';
}

const struct kms_route *kms_router_match(const char *method, const char *url, char *param, size_t param_cap,
                                         int *method_mismatch)
{
    *method_mismatch = 0;
    for (size_t i = 0; i < KMS_ARRAY_LEN(routes); i++) {
        if (!match(routes[i].pattern, url, param, param_cap))
            continue;
        if (strcmp(routes[i].method, method) == 0)
            return &routes[i];
        *method_mismatch = 1;
    }
    param[0] = '\0';
    return NULL;
}

size_t kms_router_index(const struct kms_route *r)
{
    return r == NULL ? KMS_ARRAY_LEN(routes) : (size_t)(r - routes);
}
