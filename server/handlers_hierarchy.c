/* POST /v1/customer-keys, /v1/user-keys, /v1/workspace-keys,
 * /v1/workspace-keys/unwrap (SPEC §2, §4). */
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kms/hierarchy.h"
#include "kms/wrapped.h"
#include "server/decode.h"
#include "server/internal.h"

/* The bodies of these endpoints, one table each (decode.h). */
struct hierarchy_req {
    struct kms_text site_id;
    struct kms_text customer_key;
    struct kms_text user_key;
    struct kms_text workspace_key;
};

#define SITE_ID_FIELD                                                                                        \
    {.name = "site_id", .kind = KMS_FIELD_TEXT, .offset = offsetof(struct hierarchy_req, site_id),           \
     .required = 1, .min_len = 1, .max_len = KMS_SITE_ID_MAX, .valid = kms_site_id_valid,                     \
     .rule = KMS_SITE_ID_RULE}
#define WRAPPED_FIELD(member, what)                                                                          \
    {.name = #member, .kind = KMS_FIELD_TEXT, .offset = offsetof(struct hierarchy_req, member), .required = 1, \
     .rule = "must be the wrapped " what " key string that kmsd returned"}

static const struct kms_field customer_fields[] = {SITE_ID_FIELD};
static const struct kms_field user_fields[] = {SITE_ID_FIELD, WRAPPED_FIELD(customer_key, "customer")};
static const struct kms_field workspace_fields[] = {SITE_ID_FIELD, WRAPPED_FIELD(customer_key, "customer"),
                                                    WRAPPED_FIELD(user_key, "user")};
static const struct kms_field unwrap_fields[] = {SITE_ID_FIELD, WRAPPED_FIELD(customer_key, "customer"),
                                                 WRAPPED_FIELD(user_key, "user"),
                                                 WRAPPED_FIELD(workspace_key, "workspace")};
#define SCHEMA(f) {f, KMS_ARRAY_LEN(f), sizeof(struct hierarchy_req)}
static const struct kms_schema customer_schema = SCHEMA(customer_fields);
static const struct kms_schema user_schema = SCHEMA(user_fields);
static const struct kms_schema workspace_schema = SCHEMA(workspace_fields);
static const struct kms_schema unwrap_schema = SCHEMA(unwrap_fields);

static kms_rc parse(struct kms_request *r, const struct kms_schema *schema, struct hierarchy_req *out)
{
    KMS_GUARD(kms_request_decode(r, schema, out));
    memcpy(r->site_id, out->site_id.s, out->site_id.len + 1);
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
    char id[2 * KMS_KEY_ID_LEN + 1];
    if (wrapped != NULL && kms_wrapped_peek_key_id(wrapped, id) == KMS_OK)
        memcpy(r->key_ref, id, sizeof(id));
}

kms_rc kms_handle_customer_create(struct kms_server *s, struct kms_request *r)
{
    struct hierarchy_req q;
    char *out = NULL;
    kms_rc rc = parse(r, &customer_schema, &q);
    if (rc == KMS_OK)
        rc = kms_hierarchy_create_customer(s->d.hierarchy, q.site_id.s, &out);
    if (rc == KMS_OK) {
        note_key(r, out);
        rc = reply_wrapped(r, 201, q.site_id.s, "customer_key", out);
    }
    free(out);
    return rc;
}

kms_rc kms_handle_user_create(struct kms_server *s, struct kms_request *r)
{
    struct hierarchy_req q;
    char *out = NULL;
    kms_rc rc = parse(r, &user_schema, &q);
    if (rc == KMS_OK)
        rc = kms_hierarchy_create_user(s->d.hierarchy, q.site_id.s, q.customer_key.s, &out);
    if (rc == KMS_OK) {
        note_key(r, out);
        rc = reply_wrapped(r, 201, q.site_id.s, "user_key", out);
    }
    free(out);
    return rc;
}

kms_rc kms_handle_workspace_create(struct kms_server *s, struct kms_request *r)
{
    struct hierarchy_req q;
    char *out = NULL;
    kms_rc rc = parse(r, &workspace_schema, &q);
    if (rc == KMS_OK)
        rc = kms_hierarchy_create_workspace(s->d.hierarchy, q.site_id.s, q.customer_key.s, q.user_key.s, &out);
    if (rc == KMS_OK) {
        note_key(r, out);
        rc = reply_wrapped(r, 201, q.site_id.s, "workspace_key", out);
    }
    free(out);
    return rc;
}

kms_rc kms_handle_workspace_unwrap(struct kms_server *s, struct kms_request *r)
{
    struct hierarchy_req q;
    struct kms_secret *key = NULL;
    kms_rc rc = parse(r, &unwrap_schema, &q);
    if (rc == KMS_OK) {
        note_key(r, q.workspace_key.s);
        rc = kms_hierarchy_unwrap_workspace(s->d.hierarchy, q.site_id.s, q.customer_key.s, q.user_key.s,
                                            q.workspace_key.s, &key);
    }
    if (rc == KMS_OK) {
        kms_jsonw_obj_begin(&r->reply);
        kms_jsonw_kv(&r->reply, "site_id", q.site_id.s);
        /* why: "plaintext", as the generic unwrap says it: the request's
         * workspace_key is the wrapped form, so the reply must not reuse the name */
        kms_jsonw_key(&r->reply, "plaintext");
        kms_jsonw_b64(&r->reply, kms_secret_cdata(key), kms_secret_len(key));
        kms_jsonw_obj_end(&r->reply);
    }
    kms_secret_free(&key);
    return rc;
}
