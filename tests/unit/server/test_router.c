/* server/router.c: the route table of SPEC §4 — which method and path reach
 * which handler, who may call it, what is audited, and what does not match
 * (a wrong method is told apart from an unknown path: 405 against 404). */
#include "server/internal.h"

#include <criterion/criterion.h>
#include <string.h>

#define BACKEND (1u << KMS_ROLE_BACKEND)
#define DEVICE (1u << KMS_ROLE_DEVICE)
#define ADMIN (1u << KMS_ROLE_ADMIN)

static const struct kms_route *route(const char *method, const char *url, char *param, int *mismatch)
{
    static char scratch[KMS_PATH_PARAM_MAX + 1];
    int m = -1;
    const struct kms_route *r = kms_router_match(method, url, param ? param : scratch, KMS_PATH_PARAM_MAX + 1, &m);
    if (mismatch != NULL)
        *mismatch = m;
    return r;
}

Test(router, each_endpoint_of_the_spec_has_its_roles_and_audit_name)
{
    static const struct {
        const char *method, *url;
        unsigned roles;
        const char *op;
    } spec[] = {
        {"GET", "/health/live", 0, NULL},
        {"GET", "/health/ready", 0, NULL},
        {"GET", "/v1/whoami", BACKEND | DEVICE | ADMIN, "whoami"},
        {"POST", "/v1/customer-keys", BACKEND, "customer-key.create"},
        {"POST", "/v1/user-keys", BACKEND, "user-key.create"},
        {"POST", "/v1/workspace-keys", BACKEND, "workspace-key.create"},
        {"POST", "/v1/workspace-keys/unwrap", BACKEND | DEVICE, "workspace-key.unwrap"},
        {"POST", "/v1/keys/k1/wrap", BACKEND, "key.wrap"},
        {"POST", "/v1/keys/k1/unwrap", BACKEND | DEVICE, "key.unwrap"},
        {"POST", "/v1/keys/k1/rewrap", BACKEND, "key.rewrap"},
        {"POST", "/v1/keys/k1/datakey", BACKEND, "key.datakey"},
        {"GET", "/v1/keys/k1", BACKEND, "key.info"},
        {"GET", "/v1/cluster", ADMIN, "cluster.nodes"},
        {"POST", "/v1/cluster/cache/invalidate", ADMIN, "cache.invalidate"},
    };
    size_t seen[32] = {0};
    for (size_t i = 0; i < sizeof(spec) / sizeof(spec[0]); i++) {
        int mismatch = -1;
        const struct kms_route *r = route(spec[i].method, spec[i].url, NULL, &mismatch);
        cr_assert_not_null(r, "%s %s has no route", spec[i].method, spec[i].url);
        cr_assert_eq(mismatch, 0);
        cr_assert_eq(r->roles, spec[i].roles, "%s %s: roles %#x", spec[i].method, spec[i].url, r->roles);
        if (spec[i].op == NULL)
            cr_assert_null(r->op, "%s is not audited", spec[i].url);
        else
            cr_assert(r->op != NULL && strcmp(r->op, spec[i].op) == 0, "%s: op %s", spec[i].url, r->op);
        size_t ix = kms_router_index(r);
        cr_assert_lt(ix, 32);
        cr_assert_eq(seen[ix]++, 0, "%s %s shares route %zu with another endpoint", spec[i].method, spec[i].url,
                     ix);
    }
    cr_assert_eq(kms_router_index(NULL), sizeof(spec) / sizeof(spec[0]), "no route beyond the spec's");
}

Test(router, a_device_may_unwrap_but_never_create_or_wrap)
{
    cr_assert_eq(route("POST", "/v1/customer-keys", NULL, NULL)->roles & DEVICE, 0);
    cr_assert_eq(route("POST", "/v1/keys/k/wrap", NULL, NULL)->roles & DEVICE, 0);
    cr_assert_neq(route("POST", "/v1/keys/k/unwrap", NULL, NULL)->roles & DEVICE, 0);
    cr_assert_eq(route("POST", "/v1/cluster/cache/invalidate", NULL, NULL)->roles & (DEVICE | BACKEND), 0);
}

Test(router, the_key_id_segment_is_handed_over)
{
    char param[KMS_PATH_PARAM_MAX + 1];
    const struct kms_route *r = route("POST", "/v1/keys/site.a-1_b/rewrap", param, NULL);
    cr_assert_not_null(r);
    cr_assert_str_eq(param, "site.a-1_b");
    cr_assert_not_null(route("GET", "/v1/keys/only", param, NULL));
    cr_assert_str_eq(param, "only");
}

Test(router, a_known_path_with_another_method_is_a_mismatch_not_unknown)
{
    int mismatch = -1;
    char param[KMS_PATH_PARAM_MAX + 1];
    cr_assert_null(route("GET", "/v1/customer-keys", param, &mismatch));
    cr_assert_eq(mismatch, 1, "405, not 404");
    cr_assert_str_eq(param, "", "no parameter left behind");
    cr_assert_null(route("DELETE", "/v1/keys/k/wrap", NULL, &mismatch));
    cr_assert_eq(mismatch, 1);
    cr_assert_null(route("post", "/v1/customer-keys", NULL, &mismatch), "methods are case-sensitive (RFC 9110)");
}

Test(router, near_misses_match_nothing)
{
    static const char *const urls[] = {
        "/v1/keys//wrap",        /* empty segment */
        "/v1/keys/a/b/wrap",     /* two segments */
        "/v1/customer-keys/",    /* trailing slash */
        "/v1/customer-keysX",    /* longer */
        "/v1/customer-key",      /* shorter */
        "/V1/whoami",            /* case */
        "/v1/keys/",             /* no id */
        "",                      /* nothing */
        "/",
    };
    for (size_t i = 0; i < sizeof(urls) / sizeof(urls[0]); i++) {
        int mismatch = -1;
        cr_assert_null(route("POST", urls[i], NULL, &mismatch), "%s matched", urls[i]);
        cr_assert_null(route("GET", urls[i], NULL, &mismatch), "%s matched", urls[i]);
        cr_assert_eq(mismatch, 0, "%s is not a known path", urls[i]);
    }
}

Test(router, a_segment_longer_than_the_parameter_buffer_matches_nothing)
{
    char url[KMS_PATH_PARAM_MAX + 32], param[KMS_PATH_PARAM_MAX + 1];
    snprintf(url, sizeof(url), "/v1/keys/%0*d", KMS_PATH_PARAM_MAX + 1, 7);
    cr_assert_null(route("GET", url, param, NULL), "a segment of %d bytes does not fit", KMS_PATH_PARAM_MAX + 1);
    snprintf(url, sizeof(url), "/v1/keys/%0*d", KMS_PATH_PARAM_MAX, 7);
    cr_assert_not_null(route("GET", url, param, NULL));
    cr_assert_eq(strlen(param), KMS_PATH_PARAM_MAX);
}
