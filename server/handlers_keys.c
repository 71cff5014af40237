/* The generic primitive (SPEC §2, §4): POST /v1/keys/{name}/wrap, /unwrap,
 * /rewrap, /datakey, each in single or batch form, and GET /v1/keys/{name}. */
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/base64.h"
#include "kms/hierarchy.h"
#include "server/decode.h"
#include "server/internal.h"

#define BATCH_MAX 256
#define DATAKEY_DEFAULT 32

/* One item of a request (or the whole body, when it has no batch), decoded
 * from the body by the tables below: its strings live in the body. */
struct item {
    struct kms_text site_id;   /* optional: "" is no site */
    struct kms_text plaintext; /* base64, wrap */
    struct kms_text wrapped;   /* unwrap, rewrap */
    long long bytes;           /* datakey */
    struct kms_batch batch;    /* the body only */
};

enum op { OP_WRAP, OP_UNWRAP, OP_REWRAP, OP_DATAKEY, OP_COUNT };

#define SITE_FIELD                                                                                          \
    {.name = "site_id", .kind = KMS_FIELD_TEXT, .offset = offsetof(struct item, site_id), .min_len = 1,      \
     .max_len = KMS_SITE_ID_MAX, .valid = kms_site_id_valid, .rule = KMS_SITE_ID_RULE}
/* why: no bounds here: a batch item's bad plaintext fails that item alone
 * (decode_plaintext), not the whole batch */
#define PLAINTEXT_FIELD                                                                                     \
    {.name = "plaintext", .kind = KMS_FIELD_TEXT, .offset = offsetof(struct item, plaintext), .required = 1, \
     .rule = "must be standard base64 of 1..1024 bytes"}
#define WRAPPED_FIELD                                                                                       \
    {.name = "wrapped", .kind = KMS_FIELD_TEXT, .offset = offsetof(struct item, wrapped), .required = 1,    \
     .rule = "must be a wrapped key string that kmsd returned"}
#define BYTES_FIELD                                                                                         \
    {.name = "bytes", .kind = KMS_FIELD_INT, .offset = offsetof(struct item, bytes), .min = 1,               \
     .max = KMS_DATA_MAX, .def = DATAKEY_DEFAULT, .rule = "must be an integer of 1..1024"}
#define BATCH_FIELD(each)                                                                                   \
    {.name = "batch", .kind = KMS_FIELD_BATCH, .offset = offsetof(struct item, batch), .items = &each,       \
     .max_items = BATCH_MAX, .rule = "must be an array of 1..256 objects"}
_Static_assert(KMS_DATA_MAX == 1024 && BATCH_MAX == 256, "the rules above name these bounds");

static const struct kms_field wrap_item[] = {PLAINTEXT_FIELD, SITE_FIELD};
static const struct kms_field unwrap_item[] = {WRAPPED_FIELD, SITE_FIELD};
static const struct kms_field datakey_item[] = {SITE_FIELD, BYTES_FIELD};
#define SCHEMA(f) {f, KMS_ARRAY_LEN(f), sizeof(struct item)}
static const struct kms_schema item_schema[OP_COUNT] = {
    [OP_WRAP] = SCHEMA(wrap_item), [OP_UNWRAP] = SCHEMA(unwrap_item),
    [OP_REWRAP] = SCHEMA(unwrap_item), [OP_DATAKEY] = SCHEMA(datakey_item)};
static const struct kms_field wrap_body[] = {PLAINTEXT_FIELD, SITE_FIELD, BATCH_FIELD(item_schema[OP_WRAP])};
static const struct kms_field unwrap_body[] = {WRAPPED_FIELD, SITE_FIELD, BATCH_FIELD(item_schema[OP_UNWRAP])};
static const struct kms_field rewrap_body[] = {WRAPPED_FIELD, SITE_FIELD, BATCH_FIELD(item_schema[OP_REWRAP])};
static const struct kms_field datakey_body[] = {SITE_FIELD, BYTES_FIELD, BATCH_FIELD(item_schema[OP_DATAKEY])};
static const struct kms_schema body_schema[OP_COUNT] = {
    [OP_WRAP] = SCHEMA(wrap_body), [OP_UNWRAP] = SCHEMA(unwrap_body),
    [OP_REWRAP] = SCHEMA(rewrap_body), [OP_DATAKEY] = SCHEMA(datakey_body)};

static const char *site_of(const struct item *it)
{
    return it->site_id.s != NULL ? it->site_id.s : "";
}

static kms_rc decode_plaintext(const struct kms_text *text, struct kms_secret **out)
{
    const char *b64 = text->s;
    size_t len = text->len;
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

/* Runs one item and writes its result object into w; wrap_pt: the decoded
 * plaintext of a wrap. */
static kms_rc run_item(struct kms_server *s, const char *name, enum op op, const struct item *it,
                       const struct kms_secret *wrap_pt, struct kms_jsonw *w)
{
    struct kms_hierarchy *h = s->d.hierarchy;
    struct kms_secret *pt = NULL;
    char *wrapped = NULL;
    kms_rc rc;
    switch (op) {
    case OP_WRAP:
        rc = kms_hierarchy_wrap(h, name, site_of(it), kms_secret_cdata(wrap_pt), kms_secret_len(wrap_pt),
                                &wrapped);
        break;
    case OP_UNWRAP:
        rc = kms_hierarchy_unwrap(h, name, site_of(it), it->wrapped.s, &pt);
        break;
    case OP_REWRAP:
        rc = kms_hierarchy_rewrap(h, name, site_of(it), it->wrapped.s, &wrapped);
        break;
    default:
        rc = kms_hierarchy_datakey(h, name, site_of(it), (size_t)it->bytes, &pt, &wrapped);
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
        u[i].site_id = site_of(&items[i]);
        u[i].wrapped = items[i].wrapped.s;
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
        bad[i] = decode_plaintext(&items[i].plaintext, &pts[i]);
        u[i].site_id = site_of(&items[i]);
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
    struct item q;
    (void)snprintf(r->key_ref, sizeof(r->key_ref), "%s", r->param);
    KMS_GUARD(kms_request_decode(r, &body_schema[op], &q));
    kms_rc rc = KMS_OK;
    const struct item *items = q.batch.items;
    size_t n = q.batch.n;
    if (items == NULL) {
        (void)snprintf(r->site_id, sizeof(r->site_id), "%s", site_of(&q));
        struct kms_secret *pt = NULL;
        if (op == OP_WRAP && decode_plaintext(&q.plaintext, &pt) != KMS_OK)
            return kms_request_reject(r, KMS_ERR_INVALID_FIELD, "plaintext", "plaintext %s", wrap_item[0].rule);
        rc = run_item(s, r->param, op, &q, pt, &r->reply);
        kms_secret_free(&pt);
        return rc;
    }
    /* Batch: array in, array out in order, per-item errors; the request itself
     * fails only when it is malformed as a whole. */
    if (op == OP_UNWRAP)
        rc = unwrap_batch(s, r, items, n);
    else if (op == OP_WRAP)
        rc = wrap_batch(s, r, items, n);
    else {
        kms_jsonw_obj_begin(&r->reply);
        kms_jsonw_key(&r->reply, "batch");
        kms_jsonw_arr_begin(&r->reply);
        for (size_t i = 0; i < n; i++) {
            kms_rc irc = run_item(s, r->param, op, &items[i], NULL, &r->reply);
            if (irc != KMS_OK)
                write_item_error(&r->reply, irc);
        }
        kms_jsonw_arr_end(&r->reply);
        kms_jsonw_obj_end(&r->reply);
    }
    kms_decode_free(&body_schema[op], &q);
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
