/* Request bodies decoded from their bytes into typed structs, one table per
 * endpoint (issue 14): no JSON tree, no allocation for a body without a batch.
 *
 * The grammar is RFC 8259 as jansson 2.14's json_loadb(data, len,
 * JSON_REJECT_DUPLICATES, &err) reads it, with three deliberate differences:
 *   - nesting deeper than KMS_DECODE_MAX_DEPTH containers is refused
 *     (jansson: 2048); request bodies are never deeper than 3;
 *   - a NUL byte is refused everywhere; jansson silently drops a single NUL
 *     that directly follows a number or true/false/null;
 *   - duplicate keys are found among the schema's fields only: a body with
 *     an unknown field is refused anyway (invalid_field), so two unknown keys
 *     of the same name are not looked for.
 * A body that is not JSON is KMS_ERR_BAD_JSON and wins over any field error;
 * otherwise the first field error in body order is KMS_ERR_INVALID_FIELD,
 * naming the field ("site_id", "batch[3].wrapped") and what it must be.
 * Neither ever quotes a value: values may be key material. */
#ifndef KMS_SERVER_DECODE_H
#define KMS_SERVER_DECODE_H

#include <stddef.h>
#include <stdint.h>

#include "common/error.h"

#define KMS_DECODE_MAX_DEPTH 32 /* = KMS_JSONLEX_MAX_DEPTH */

enum kms_field_kind {
    KMS_FIELD_TEXT,  /* a JSON string -> struct kms_text */
    KMS_FIELD_INT,   /* a JSON integer -> long long */
    KMS_FIELD_BATCH, /* a JSON array of objects -> struct kms_batch; the only field when present */
};

struct kms_schema;

/* One row of an endpoint's table. */
struct kms_field {
    const char *name;
    enum kms_field_kind kind;
    size_t offset;   /* offsetof() the member in the struct the schema fills */
    int required;
    /* TEXT: decoded length in bytes (max 0: only the body's own bound), and
     * a check of the whole value (NULL: none) */
    size_t min_len, max_len;
    int (*valid)(const char *s);
    /* INT: inclusive bounds, and the value when the field is absent */
    long long min, max, def;
    /* BATCH: what each item is, and at most how many */
    const struct kms_schema *items;
    size_t max_items;
    const char *rule; /* what the value must be, said to the caller: "must be ..." */
};

struct kms_schema {
    const struct kms_field *fields;
    size_t n_fields;
    size_t size; /* sizeof the struct it fills */
};

/* A decoded string: NUL-terminated inside the request's own body buffer
 * (escapes undone in place), so it lives as long as the body. s is NULL when
 * the field was absent. */
struct kms_text {
    const char *s;
    size_t len;
    unsigned escaped; /* internal: the raw text has escapes still to undo */
};

/* The items of a batch field: n structs of the item schema's size. */
struct kms_batch {
    void *items;
    size_t n;
};

struct kms_decode_error {
    char field[96];    /* "" when about the body as a whole */
    char message[224]; /* for the caller: never a byte of a value */
};

/* Decodes body[0..len) into out (schema->size bytes, zeroed first). The body
 * is changed in place (strings unescaped and terminated) and must outlive
 * out. On failure err says what and where, and out holds nothing to free.
 * Returns KMS_OK, KMS_ERR_BAD_JSON, KMS_ERR_INVALID_FIELD or
 * KMS_ERR_NO_MEMORY (a batch's items could not be allocated). */
kms_rc kms_decode(uint8_t *body, size_t len, const struct kms_schema *schema, void *out,
                  struct kms_decode_error *err) KMS_MUST_CHECK;

/* Frees what kms_decode allocated in out (batch items); out may be all zero. */
void kms_decode_free(const struct kms_schema *schema, void *out);

#endif
