/* The generic primitive (SPEC §2, §4): POST /v1/keys/{name}/wrap, /unwrap,
 * /rewrap, /datakey, each in single or batch form, and GET /v1/keys/{name}. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/base64.h"
#include "kms/hierarchy.h"
#include "server/internal.h"

#define BATCH_MAX 256
#define DATAKEY_DEFAULT 32

/* One item of a request, validated: its fields borrowed from the JSON. */
struct item {
    char site_id[KMS_SITE_ID_MAX + 1];
    const char *plaintext; /* base64, wrap */
    const char *wrapped;   /* unwrap, rewrap */
    json_int_t bytes;      /* datakey */
};

enum op { OP_WRAP, OP_UNWRAP, OP_REWRAP, OP_DATAKEY };

static kms_rc parse_item(json_t *obj, enum op op, struct item *out)
{
    memset(out, 0, sizeof(*out));
    out->bytes = DATAKEY_DEFAULT;
    json_error_t err;
    const char *site = NULL;
    int ok;
    if (!json_is_object(obj))
        return kms_fail(KMS_ERR_INVALID_FIELD, "each item must be a JSON object");
    switch (op) {
    case OP_WRAP:
        ok = json_unpack_ex(obj, &err, JSON_STRICT, "{s:s, s?s}", "plaintext", &out->plaintext, "site_id", &site);
        break;
    case OP_UNWRAP:
    case OP_REWRAP:
        ok = json_unpack_ex(obj, &err, JSON_STRICT, "{s:s, s?s}", "wrapped", &out->wrapped, "site_id", &site);
        break;
    default:
        ok = json_unpack_ex(obj, &err, JSON_STRICT, "{s?s, s?I}", "site_id", &site, "bytes", &out->bytes);
        break;
    }
    if (ok != 0)
        return kms_fail(KMS_ERR_INVALID_FIELD, "%s", err.text);
    if (site != NULL)
        KMS_GUARD(kms_json_site_id(obj, "site_id", 1, out->site_id, sizeof(out->site_id)));
    if (op == OP_DATAKEY && (out->bytes < 1 || out->bytes > KMS_DATA_MAX))
        return kms_fail(KMS_ERR_INVALID_FIELD, "bytes must be 1..%d", KMS_DATA_MAX);
    return KMS_OK;
}

static kms_rc decode_plaintext(const char *b64, struct kms_secret **out)
{
    size_t len = strlen(b64);
    /* why: a length that is not a multiple of 4 is not strict base64; checked
     * before sizing the secret, which refuses 0 bytes */
    if (len < 4 || len % 4 != 0 || len > kms_b64_encoded_len(KMS_DATA_MAX))
        return kms_fail(KMS_ERR_INVALID_FIELD, "plaintext must be base64 of 1..%d bytes", KMS_DATA_MAX);
    KMS_GUARD(kms_secret_new(kms_b64_decoded_max(len), out));
    size_t n = 0;
    kms_rc rc = kms_b64_decode(b64, len, kms_secret_data(*out), kms_secret_len(*out), &n);
    if (rc != KMS_OK || n == 0) {
        kms_secret_free(out);
        return kms_fail(KMS_ERR_INVALID_FIELD, "plaintext is not valid standard base64 of 1..%d bytes",
                        KMS_DATA_MAX);
    }
    kms_secret_truncate(*out, n);
    return KMS_OK;
}

/* Runs one item and writes its result object into w. */
static kms_rc run_item(struct kms_server *s, const char *name, enum op op, const struct item *it,
                       struct kms_jsonw *w)
{
    struct kms_hierarchy *h = s->d.hierarchy;
    struct kms_secret *pt = NULL;
    char *wrapped = NULL;
    kms_rc rc;
    switch (op) {
    case OP_WRAP:
        rc = decode_plaintext(it->plaintext, &pt);
        if (rc == KMS_OK)
            rc = kms_hierarchy_wrap(h, name, it->site_id, kms_secret_cdata(pt), kms_secret_len(pt), &wrapped);
        break;
    case OP_UNWRAP:
        rc = kms_hierarchy_unwrap(h, name, it->site_id, it->wrapped, &pt);
        break;
    case OP_REWRAP:
        rc = kms_hierarchy_rewrap(h, name, it->site_id, it->wrapped, &wrapped);
        break;
    default:
        rc = kms_hierarchy_datakey(h, name, it->site_id, (size_t)it->bytes, &pt, &wrapped);
        break;
    }
    if (rc == KMS_OK) {
        kms_jsonw_obj_begin(w);
        if (wrapped != NULL)
            kms_jsonw_kv(w, "wrapped", wrapped);
        if (pt != NULL && op != OP_WRAP) {
            kms_jsonw_key(w, "plaintext");
            kms_jsonw_b64(w, kms_secret_cdata(pt), kms_secret_len(pt));
        }
        kms_jsonw_obj_end(w);
    }
    kms_secret_free(&pt);
    free(wrapped);
    return rc;
}

static void write_item_error(struct kms_jsonw *w, kms_rc rc)
{
    kms_jsonw_obj_begin(w);
    kms_jsonw_key(w, "error");
    kms_jsonw_obj_begin(w);
    kms_jsonw_kv(w, "code", kms_error_code(rc));
    kms_jsonw_kv(w, "message", kms_error_message(rc));
    kms_jsonw_obj_end(w);
    kms_jsonw_obj_end(w);
}

/* A batch unwrap goes to the hierarchy in one call, so a backend that can
 * decrypt several keys in one round trip (Vault's batch_input) does. */
static kms_rc unwrap_batch(struct kms_server *s, struct kms_request *r, const struct item *items, size_t n)
{
    struct kms_unwrap_item *u = calloc(n, sizeof(*u));
    if (u == NULL)
        return KMS_ERR_NO_MEMORY;
    for (size_t i = 0; i < n; i++) {
        u[i].site_id = items[i].site_id;
        u[i].wrapped = items[i].wrapped;
    }
    kms_rc rc = kms_hierarchy_unwrap_batch(s->d.hierarchy, r->param, u, n);
    if (rc == KMS_OK) {
        struct kms_jsonw *w = &r->reply;
        kms_jsonw_obj_begin(w);
        kms_jsonw_key(w, "batch");
        kms_jsonw_arr_begin(w);
        for (size_t i = 0; i < n; i++) {
            if (u[i].rc != KMS_OK) {
                write_item_error(w, u[i].rc);
                continue;
            }
            kms_jsonw_obj_begin(w);
            kms_jsonw_key(w, "plaintext");
            kms_jsonw_b64(w, kms_secret_cdata(u[i].pt), kms_secret_len(u[i].pt));
            kms_jsonw_obj_end(w);
        }
        kms_jsonw_arr_end(w);
        kms_jsonw_obj_end(w);
    }
    for (size_t i = 0; i < n; i++)
        kms_secret_free(&u[i].pt);
    free(u);
    return rc;
}

/* A batch wrap likewise goes to the hierarchy in one call (Vault: one
 * Transit encrypt with batch_input). */
static kms_rc wrap_batch(struct kms_server *s, struct kms_request *r, const struct item *items, size_t n)
{
    struct kms_wrap_item *u = calloc(n, sizeof(*u));
    struct kms_secret **pts = calloc(n, sizeof(*pts));
    kms_rc *bad = calloc(n, sizeof(*bad));
    kms_rc rc = (u == NULL || pts == NULL || bad == NULL) ? KMS_ERR_NO_MEMORY : KMS_OK;
    for (size_t i = 0; rc == KMS_OK && i < n; i++) {
        bad[i] = decode_plaintext(items[i].plaintext, &pts[i]);
        u[i].site_id = items[i].site_id;
        u[i].pt = pts[i];
    }
    if (rc == KMS_OK)
        rc = kms_hierarchy_wrap_batch(s->d.hierarchy, r->param, u, n);
    if (rc == KMS_OK) {
        struct kms_jsonw *w = &r->reply;
        kms_jsonw_obj_begin(w);
        kms_jsonw_key(w, "batch");
        kms_jsonw_arr_begin(w);
        for (size_t i = 0; i < n; i++) {
            kms_rc irc = bad[i] != KMS_OK ? bad[i] : u[i].rc;
            if (irc != KMS_OK) {
                write_item_error(w, irc);
                continue;
            }
            kms_jsonw_obj_begin(w);
            kms_jsonw_kv(w, "wrapped", u[i].wrapped);
            kms_jsonw_obj_end(w);
        }
        kms_jsonw_arr_end(w);
        kms_jsonw_obj_end(w);
    }
    for (size_t i = 0; u != NULL && pts != NULL && i < n; i++) {
        free(u[i].wrapped);
        kms_secret_free(&pts[i]);
    }
    free(u);
    free(pts);
    free(bad);
    return rc;
}

static kms_rc handle(struct kms_server *s, struct kms_request *r, enum op op)
{
    json_t *root = NULL;
    (void)snprintf(r->key_ref, sizeof(r->key_ref), "%s", r->param);
    KMS_GUARD(kms_request_json(r, &root));
    kms_rc rc = KMS_OK;
    json_t *batch = json_object_get(root, "batch");
    if (batch == NULL) {
        struct item it;
        rc = parse_item(root, op, &it);
        if (rc == KMS_OK) {
            memcpy(r->site_id, it.site_id, sizeof(r->site_id));
            rc = run_item(s, r->param, op, &it, &r->reply);
        }
        json_decref(root);
        return rc;
    }
    /* Batch: array in, array out in order, per-item errors; the request itself
     * fails only when it is malformed as a whole. */
    size_t n = json_is_array(batch) ? json_array_size(batch) : 0;
    if (json_object_size(root) != 1 || n == 0 || n > BATCH_MAX) {
        json_decref(root);
        return kms_fail(KMS_ERR_INVALID_FIELD, "batch must be the only field: an array of 1..%d items", BATCH_MAX);
    }
    struct item *items = calloc(n, sizeof(*items));
    if (items == NULL) {
        json_decref(root);
        return KMS_ERR_NO_MEMORY;
    }
    for (size_t i = 0; i < n && rc == KMS_OK; i++) {
        rc = parse_item(json_array_get(batch, i), op, &items[i]);
        if (rc != KMS_OK)
            rc = kms_fail(rc, "batch item %zu: %s", i, kms_error_detail());
    }
    if (rc == KMS_OK && op == OP_UNWRAP)
        rc = unwrap_batch(s, r, items, n);
    else if (rc == KMS_OK && op == OP_WRAP)
        rc = wrap_batch(s, r, items, n);
    else if (rc == KMS_OK) {
        kms_jsonw_obj_begin(&r->reply);
        kms_jsonw_key(&r->reply, "batch");
        kms_jsonw_arr_begin(&r->reply);
        for (size_t i = 0; i < n; i++) {
            kms_rc irc = run_item(s, r->param, op, &items[i], &r->reply);
            if (irc != KMS_OK)
                write_item_error(&r->reply, irc);
        }
        kms_jsonw_arr_end(&r->reply);
        kms_jsonw_obj_end(&r->reply);
    }
    free(items);
    json_decref(root);
    return rc;
}

kms_rc kms_handle_key_wrap(struct kms_server *s, struct kms_request *r) { return handle(s, r, OP_WRAP); }
kms_rc kms_handle_key_unwrap(struct kms_server *s, struct kms_request *r) { return handle(s, r, OP_UNWRAP); }
kms_rc kms_handle_key_rewrap(struct kms_server *s, struct kms_request *r) { return handle(s, r, OP_REWRAP); }
kms_rc kms_handle_key_datakey(struct kms_server *s, struct kms_request *r) { return handle(s, r, OP_DATAKEY); }

kms_rc kms_handle_key_info(struct kms_server *s, struct kms_request *r)
{
    struct kms_key_info info;
    (void)snprintf(r->key_ref, sizeof(r->key_ref), "%s", r->param);
    KMS_GUARD(kms_hierarchy_key_info(s->d.hierarchy, r->param, &info));
    struct kms_jsonw *w = &r->reply;
    kms_jsonw_obj_begin(w);
    kms_jsonw_kv(w, "name", info.name);
    kms_jsonw_kv(w, "backend", info.backend ? info.backend : s->d.backend_name);
    kms_jsonw_key(w, "current_version");
    kms_jsonw_int(w, info.current_version);
    kms_jsonw_key(w, "min_version");
    kms_jsonw_int(w, info.min_version);
    kms_jsonw_kv(w, "state", info.state);
    kms_jsonw_kv(w, "algorithm", info.algorithm);
    kms_jsonw_key(w, "created");
    kms_jsonw_int(w, info.created);
    kms_jsonw_obj_end(w);
    return KMS_OK;
}
