/* POST /v1/customer-keys, /v1/user-keys, /v1/workspace-keys,
 * /v1/workspace-keys/unwrap (SPEC §2, §4). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kms/hierarchy.h"
#include "kms/wrapped.h"
#include "server/internal.h"

/* The one parse function of these endpoints: a validated struct from bytes. */
struct hierarchy_req {
    char site_id[KMS_SITE_ID_MAX + 1];
    const char *customer_key;
    const char *user_key;
    const char *workspace_key;
};

enum { NEED_CUSTOMER = 1, NEED_USER = 2, NEED_WORKSPACE = 4 };

static kms_rc parse(struct kms_request *r, unsigned need, json_t **root, struct hierarchy_req *out)
{
    memset(out, 0, sizeof(*out));
    KMS_GUARD(kms_request_json(r, root));
    json_error_t err;
    const char *site = NULL;
    int ok;
    switch (need) {
    case 0:
        ok = json_unpack_ex(*root, &err, JSON_STRICT, "{s:s}", "site_id", &site);
        break;
    case NEED_CUSTOMER:
        ok = json_unpack_ex(*root, &err, JSON_STRICT, "{s:s, s:s}", "site_id", &site, "customer_key",
                            &out->customer_key);
        break;
    case NEED_CUSTOMER | NEED_USER:
        ok = json_unpack_ex(*root, &err, JSON_STRICT, "{s:s, s:s, s:s}", "site_id", &site, "customer_key",
                            &out->customer_key, "user_key", &out->user_key);
        break;
    default:
        ok = json_unpack_ex(*root, &err, JSON_STRICT, "{s:s, s:s, s:s, s:s}", "site_id", &site, "customer_key",
                            &out->customer_key, "user_key", &out->user_key, "workspace_key", &out->workspace_key);
        break;
    }
    if (ok != 0)
        return kms_fail(KMS_ERR_INVALID_FIELD, "%s", err.text);
    KMS_GUARD(kms_json_site_id(*root, "site_id", 1, out->site_id, sizeof(out->site_id)));
    memcpy(r->site_id, out->site_id, sizeof(r->site_id));
    return KMS_OK;
}

static kms_rc reply_wrapped(struct kms_request *r, int status, const char *site_id, const char *field,
                            const char *wrapped)
{
    r->status = status;
    kms_jsonw_obj_begin(&r->reply);
    kms_jsonw_kv(&r->reply, "site_id", site_id);
    kms_jsonw_kv(&r->reply, field, wrapped);
    kms_jsonw_obj_end(&r->reply);
    return KMS_OK;
}

static void note_key(struct kms_request *r, const char *wrapped)
{
    struct kms_wrapped_info info;
    if (wrapped != NULL && kms_wrapped_describe(wrapped, &info) == KMS_OK)
        (void)snprintf(r->key_ref, sizeof(r->key_ref), "%s", info.key_id);
}

kms_rc kms_handle_customer_create(struct kms_server *s, struct kms_request *r)
{
    json_t *root = NULL;
    struct hierarchy_req q;
    char *out = NULL;
    kms_rc rc = parse(r, 0, &root, &q);
    if (rc == KMS_OK)
        rc = kms_hierarchy_create_customer(s->d.hierarchy, q.site_id, &out);
    if (rc == KMS_OK) {
        note_key(r, out);
        rc = reply_wrapped(r, 201, q.site_id, "customer_key", out);
    }
    free(out);
    json_decref(root);
    return rc;
}

kms_rc kms_handle_user_create(struct kms_server *s, struct kms_request *r)
{
    json_t *root = NULL;
    struct hierarchy_req q;
    char *out = NULL;
    kms_rc rc = parse(r, NEED_CUSTOMER, &root, &q);
    if (rc == KMS_OK)
        rc = kms_hierarchy_create_user(s->d.hierarchy, q.site_id, q.customer_key, &out);
    if (rc == KMS_OK) {
        note_key(r, out);
        rc = reply_wrapped(r, 201, q.site_id, "user_key", out);
    }
    free(out);
    json_decref(root);
    return rc;
}

kms_rc kms_handle_workspace_create(struct kms_server *s, struct kms_request *r)
{
    json_t *root = NULL;
    struct hierarchy_req q;
    char *out = NULL;
    kms_rc rc = parse(r, NEED_CUSTOMER | NEED_USER, &root, &q);
    if (rc == KMS_OK)
        rc = kms_hierarchy_create_workspace(s->d.hierarchy, q.site_id, q.customer_key, q.user_key, &out);
    if (rc == KMS_OK) {
        note_key(r, out);
        rc = reply_wrapped(r, 201, q.site_id, "workspace_key", out);
    }
    free(out);
    json_decref(root);
    return rc;
}

kms_rc kms_handle_workspace_unwrap(struct kms_server *s, struct kms_request *r)
{
    json_t *root = NULL;
    struct hierarchy_req q;
    struct kms_secret *key = NULL;
    kms_rc rc = parse(r, NEED_CUSTOMER | NEED_USER | NEED_WORKSPACE, &root, &q);
    if (rc == KMS_OK) {
        note_key(r, q.workspace_key);
        rc = kms_hierarchy_unwrap_workspace(s->d.hierarchy, q.site_id, q.customer_key, q.user_key,
                                            q.workspace_key, &key);
    }
    if (rc == KMS_OK) {
        kms_jsonw_obj_begin(&r->reply);
        kms_jsonw_kv(&r->reply, "site_id", q.site_id);
        /* why: "plaintext", as the generic unwrap says it: the request's
         * workspace_key is the wrapped form, so the reply must not reuse the name */
        kms_jsonw_key(&r->reply, "plaintext");
        kms_jsonw_b64(&r->reply, kms_secret_cdata(key), kms_secret_len(key));
        kms_jsonw_obj_end(&r->reply);
    }
    kms_secret_free(&key);
    json_decref(root);
    return rc;
}
