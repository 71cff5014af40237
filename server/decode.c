/* Request bodies to typed structs (decode.h): one pass over the bytes that
 * checks the whole grammar (jsonlex.c) and fills the struct, then a second
 * over the struct that undoes escapes in place and checks each value
 * against its row. The body is not changed until it is known to be JSON, so
 * a syntax error's line and column count the bytes as the client sent them. */
#include "server/decode.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/secret.h"
#include "common/token.h"
#include "server/jsonlex.h"

#define KEY_MAX 64 /* longer keys match no field (and are not named in errors) */

struct dec {
    struct kms_jsonlex lx;
    kms_rc field_rc; /* the first field error (or KMS_ERR_NO_MEMORY) */
    struct kms_decode_error *err;
};

static void field_error(struct dec *d, kms_rc rc, const char *prefix, const char *name, const char *fmt, ...)
    KMS_PRINTF(5, 6);

/* Records the first field error; parsing goes on, since a syntax error
 * further on wins. name "" is the object itself (prefix without its dot). */
static void field_error(struct dec *d, kms_rc rc, const char *prefix, const char *name, const char *fmt, ...)
{
    if (d->field_rc != KMS_OK)
        return;
    d->field_rc = rc;
    size_t pl = strlen(prefix);
    if (name[0] == '\0' && pl > 0 && prefix[pl - 1] == '.')
        pl--;
    (void)snprintf(d->err->field, sizeof(d->err->field), "%.*s%s", (int)pl, prefix, name);
    va_list ap;
    va_start(ap, fmt);
    (void)vsnprintf(d->err->message, sizeof(d->err->message), fmt, ap);
    va_end(ap);
}

static const char *type_of(uint8_t c)
{
    switch (c) {
    case '"': return "a string";
    case '{': return "an object";
    case '[': return "an array";
    case 't': case 'f': return "a boolean";
    case 'n': return "null";
    default: return "a number";
    }
}

static void apply_defaults(const struct kms_schema *schema, void *out)
{
    memset(out, 0, schema->size);
    for (size_t i = 0; i < schema->n_fields; i++) {
        const struct kms_field *f = &schema->fields[i];
        if (f->kind == KMS_FIELD_INT)
            memcpy((uint8_t *)out + f->offset, &f->def, sizeof(f->def));
    }
}

/* "site_id, customer_key, user_key": the fields a schema takes, for errors. */
static void field_list(const struct kms_schema *schema, char *buf, size_t cap)
{
    size_t n = 0;
    buf[0] = '\0';
    for (size_t i = 0; i < schema->n_fields && n < cap; i++) {
        int w = snprintf(buf + n, cap - n, "%s%s", i ? ", " : "", schema->fields[i].name);
        if (w < 0)
            break;
        n += (size_t)w;
    }
}

static int decode_object(struct dec *d, const struct kms_schema *schema, void *out, const char *prefix);

/* "batch[3]." under prefix: where item i of batch field name is, in errors. */
static void item_prefix(char out[64], const char *prefix, const char *name, size_t i)
{
    (void)snprintf(out, 64, "%s%s[%zu].", prefix, name, i);
}

/* A batch field's array at d->lx.p: each item an object of f->items. */
static int decode_batch(struct dec *d, const struct kms_field *f, struct kms_batch *b, const char *prefix)
{
    const struct kms_schema *is = f->items;
    size_t cap = 0;
    if (kms_jsonlex_enter(&d->lx) != 0)
        return -1;
    d->lx.p++;
    kms_jsonlex_ws(&d->lx);
    if (d->lx.p < d->lx.end && *d->lx.p == ']') {
        d->lx.p++;
        d->lx.depth--;
        field_error(d, KMS_ERR_INVALID_FIELD, prefix, f->name, "%s %s", f->name, f->rule);
        return 0;
    }
    for (size_t i = 0;; i++) {
        char at[64];
        item_prefix(at, prefix, f->name, i);
        if (i == f->max_items)
            field_error(d, KMS_ERR_INVALID_FIELD, prefix, f->name, "%s %s", f->name, f->rule);
        if (d->lx.p < d->lx.end && *d->lx.p == '{' && i < f->max_items && d->field_rc == KMS_OK) {
            if (b->n == cap) {
                size_t ncap = cap == 0 ? 8 : cap * 2;
                if (ncap > f->max_items)
                    ncap = f->max_items;
                void *grown = realloc(b->items, ncap * is->size);
                if (grown == NULL) {
                    field_error(d, KMS_ERR_NO_MEMORY, prefix, f->name, "out of memory");
                    return kms_jsonlex_fail(&d->lx, d->lx.p, "out of memory");
                }
                b->items = grown;
                cap = ncap;
            }
            void *item = (uint8_t *)b->items + b->n * is->size;
            apply_defaults(is, item);
            b->n++;
            if (decode_object(d, is, item, at) != 0)
                return -1;
        } else {
            if (d->lx.p < d->lx.end && *d->lx.p != '{' && d->lx.reason == NULL)
                field_error(d, KMS_ERR_INVALID_FIELD, at, "", "%s%s[%zu] must be an object, not %s",
                            prefix, f->name, i, type_of(*d->lx.p));
            if (kms_jsonlex_skip(&d->lx) != 0)
                return -1;
        }
        int more = kms_jsonlex_next(&d->lx, ']');
        if (more <= 0)
            return more;
    }
}

/* The value of field f at d->lx.p, into out. */
static int decode_field(struct dec *d, const struct kms_field *f, void *out, const char *prefix)
{
    uint8_t *at = (uint8_t *)out + f->offset;
    uint8_t c = *d->lx.p;
    switch (f->kind) {
    case KMS_FIELD_TEXT:
        if (c == '"') {
            const uint8_t *s;
            size_t n;
            unsigned esc;
            if (kms_jsonlex_string(&d->lx, &s, &n, &esc) != 0)
                return -1;
            struct kms_text t = {(const char *)s, n, esc};
            memcpy(at, &t, sizeof(t));
            return 0;
        }
        break;
    case KMS_FIELD_INT:
        if (c == '-' || kms_jsonlex_is_digit(c)) {
            int is_int;
            long long v;
            if (kms_jsonlex_number(&d->lx, &is_int, &v) != 0)
                return -1;
            if (!is_int || v < f->min || v > f->max)
                field_error(d, KMS_ERR_INVALID_FIELD, prefix, f->name, "%s %s", f->name, f->rule);
            else
                memcpy(at, &v, sizeof(v));
            return 0;
        }
        break;
    case KMS_FIELD_BATCH:
        if (c == '[')
            return decode_batch(d, f, (struct kms_batch *)(void *)at, prefix);
        break;
    }
    if (c != 0 && strchr("\"{[tfn-0123456789", c) != NULL)
        field_error(d, KMS_ERR_INVALID_FIELD, prefix, f->name, "%s must be %s, not %s", f->name,
                    f->kind == KMS_FIELD_TEXT ? "a string" : f->kind == KMS_FIELD_INT ? "an integer" : "an array",
                    type_of(c));
    return kms_jsonlex_skip(&d->lx);
}

/* An object at d->lx.p ('{') of the given schema. */
static int decode_object(struct dec *d, const struct kms_schema *schema, void *out, const char *prefix)
{
    uint32_t seen = 0;
    const struct kms_field *batch = NULL;
    if (kms_jsonlex_enter(&d->lx) != 0)
        return -1;
    d->lx.p++;
    kms_jsonlex_ws(&d->lx);
    int more = 1;
    if (d->lx.p < d->lx.end && *d->lx.p == '}') {
        d->lx.p++;
        d->lx.depth--;
        more = 0;
    }
    while (more) {
        if (d->lx.p == d->lx.end || *d->lx.p != '"')
            return kms_jsonlex_fail(&d->lx, d->lx.p, kms_jsonlex_missing(&d->lx, "expected a string key or '}'"));
        const uint8_t *key_at = d->lx.p, *raw;
        size_t raw_len;
        unsigned esc;
        if (kms_jsonlex_string(&d->lx, &raw, &raw_len, &esc) != 0)
            return -1;
        uint8_t key[KEY_MAX + 1];
        size_t key_len = esc ? kms_jsonlex_unescape(raw, raw_len, key, KEY_MAX) : raw_len <= KEY_MAX ? raw_len : SIZE_MAX;
        if (!esc && key_len != SIZE_MAX)
            memcpy(key, raw, key_len);
        const struct kms_field *f = NULL;
        size_t fi = 0;
        for (; key_len != SIZE_MAX && fi < schema->n_fields; fi++) {
            const char *name = schema->fields[fi].name;
            if (strlen(name) == key_len && memcmp(name, key, key_len) == 0) {
                f = &schema->fields[fi];
                break;
            }
        }
        if (f != NULL && (seen & (1u << fi)) != 0)
            return kms_jsonlex_fail(&d->lx, key_at, "duplicate key");
        kms_jsonlex_ws(&d->lx);
        if (d->lx.p == d->lx.end || *d->lx.p != ':')
            return kms_jsonlex_fail(&d->lx, d->lx.p, kms_jsonlex_missing(&d->lx, "expected ':'"));
        d->lx.p++;
        kms_jsonlex_ws(&d->lx);
        if (d->lx.p == d->lx.end)
            return kms_jsonlex_fail(&d->lx, d->lx.p, "unexpected end of input");
        if (f != NULL) {
            seen |= 1u << fi;
            if (f->kind == KMS_FIELD_BATCH)
                batch = f;
            if (decode_field(d, f, out, prefix) != 0)
                return -1;
        } else {
            char takes[160];
            field_list(schema, takes, sizeof(takes));
            if (key_len != SIZE_MAX) {
                key[key_len] = '\0';
                if (kms_token_valid((const char *)key, KEY_MAX, "_-."))
                    field_error(d, KMS_ERR_INVALID_FIELD, prefix, (const char *)key,
                                "unknown field %s%s; this takes %s", prefix, (const char *)key, takes);
            }
            field_error(d, KMS_ERR_INVALID_FIELD, prefix, "", "an unknown field; this takes %s", takes);
            if (kms_jsonlex_skip(&d->lx) != 0)
                return -1;
        }
        more = kms_jsonlex_next(&d->lx, '}');
        if (more < 0)
            return -1;
    }
    if (batch != NULL && (seen & ~(1u << (size_t)(batch - schema->fields))) != 0) {
        field_error(d, KMS_ERR_INVALID_FIELD, prefix, batch->name, "%s must be the only field when it is given",
                    batch->name);
        return 0;
    }
    for (size_t i = 0; batch == NULL && i < schema->n_fields; i++) {
        const struct kms_field *f = &schema->fields[i];
        if (f->required && (seen & (1u << i)) == 0)
            field_error(d, KMS_ERR_INVALID_FIELD, prefix, f->name, "%s%s is required: it %s", prefix, f->name,
                        f->rule);
    }
    return 0;
}

/* Second pass, over a body known to be JSON: escapes undone in place, each
 * string terminated (over its closing quote or inside its raw span), and
 * every value checked against its row. */
static void finish_object(struct dec *d, const struct kms_schema *schema, void *out, const char *prefix)
{
    for (size_t i = 0; i < schema->n_fields && d->field_rc == KMS_OK; i++) {
        const struct kms_field *f = &schema->fields[i];
        uint8_t *at = (uint8_t *)out + f->offset;
        if (f->kind == KMS_FIELD_BATCH) {
            struct kms_batch *b = (struct kms_batch *)(void *)at;
            for (size_t k = 0; k < b->n && d->field_rc == KMS_OK; k++) {
                char where[64];
                item_prefix(where, prefix, f->name, k);
                finish_object(d, f->items, (uint8_t *)b->items + k * f->items->size, where);
            }
            continue;
        }
        if (f->kind != KMS_FIELD_TEXT)
            continue;
        struct kms_text t;
        memcpy(&t, at, sizeof(t));
        if (t.s == NULL)
            continue;
        uint8_t *s = (uint8_t *)(uintptr_t)t.s; /* why: the body is the caller's mutable buffer */
        if (t.escaped)
            t.len = kms_jsonlex_unescape(s, t.len, s, t.len);
        s[t.len] = '\0';
        t.escaped = 0;
        memcpy(at, &t, sizeof(t));
        int bad = t.len < f->min_len || (f->max_len > 0 && t.len > f->max_len) || strlen(t.s) != t.len ||
                  (f->valid != NULL && !f->valid(t.s));
        if (bad)
            field_error(d, KMS_ERR_INVALID_FIELD, prefix, f->name, "%s%s %s", prefix, f->name, f->rule);
    }
}

kms_rc kms_decode(uint8_t *body, size_t len, const struct kms_schema *schema, void *out,
                  struct kms_decode_error *err)
{
    static uint8_t empty[1];
    err->field[0] = '\0';
    err->message[0] = '\0';
    if (body == NULL) {
        body = empty;
        len = 0;
    }
    struct dec d = {.lx = {.p = body, .end = body + len, .begin = body}, .field_rc = KMS_OK, .err = err};
    struct kms_jsonlex *lx = &d.lx;
    apply_defaults(schema, out);
    kms_jsonlex_ws(lx);
    int ok;
    if (lx->p < lx->end && *lx->p == '{') {
        ok = decode_object(&d, schema, out, "") == 0;
    } else if (lx->p < lx->end && *lx->p == '[') {
        ok = kms_jsonlex_skip(lx) == 0;
        field_error(&d, KMS_ERR_INVALID_FIELD, "", "", "the body must be a JSON object");
    } else {
        ok = kms_jsonlex_fail(lx, lx->p, kms_jsonlex_missing(lx, "expected '{' or '['")) == 0;
    }
    if (ok) {
        kms_jsonlex_ws(lx);
        if (lx->p != lx->end)
            kms_jsonlex_fail(lx, lx->p, kms_jsonlex_missing(lx, "trailing content"));
    }
    if (lx->reason == NULL && d.field_rc == KMS_OK)
        finish_object(&d, schema, out, "");
    if (lx->reason == NULL && d.field_rc == KMS_OK)
        return KMS_OK;
    kms_decode_free(schema, out);
    apply_defaults(schema, out);
    if (d.field_rc == KMS_ERR_NO_MEMORY || lx->oom)
        return KMS_ERR_NO_MEMORY;
    if (lx->reason != NULL) {
        size_t line, column;
        kms_jsonlex_locate(lx, &line, &column);
        err->field[0] = '\0';
        (void)snprintf(err->message, sizeof(err->message), "the body is not valid JSON: line %zu column %zu: %s",
                       line, column, lx->reason);
        return KMS_ERR_BAD_JSON;
    }
    return d.field_rc;
}

void kms_decode_free(const struct kms_schema *schema, void *out)
{
    for (size_t i = 0; i < schema->n_fields; i++) {
        const struct kms_field *f = &schema->fields[i];
        if (f->kind != KMS_FIELD_BATCH)
            continue;
        struct kms_batch *b = (struct kms_batch *)(void *)((uint8_t *)out + f->offset);
        if (b->items != NULL)
            kms_wipe(b->items, b->n * f->items->size);
        free(b->items);
        b->items = NULL;
        b->n = 0;
    }
}
