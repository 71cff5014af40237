/* Differential libFuzzer target: the request decoder (server/decode.c)
 * against jansson's json_loadb(..., JSON_REJECT_DUPLICATES, ...).
 *
 * Each input is decoded with a schema that has every kind of field (text with
 * a rule, integer with bounds and a default, a batch of objects) and compared
 * with jansson's tree:
 *   - what jansson refuses, the decoder refuses;
 *   - what jansson accepts, the decoder calls malformed only for the
 *     documented differences (decode.h): "nesting too deep", or "NUL byte"
 *     where the input without its NUL bytes is accepted by jansson;
 *   - a decoded struct holds exactly jansson's values: each text byte for
 *     byte and NUL-terminated, each integer, each batch item, and absent
 *     fields absent (integers at their default);
 *   - a refusal names its field only as the schema spells it, says why in
 *     printable ASCII, and leaves nothing allocated.
 * Seeds: tests/fuzz/seed_request_decode.sh writes them (run.sh calls it). */
#include <jansson.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "server/decode.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void check(int ok)
{
    if (!ok)
        abort();
}

struct item {
    struct kms_text site_id, wrapped;
    long long bytes;
    struct kms_batch batch;
};

static int no_space(const char *s) { return strchr(s, ' ') == NULL; }

#define FIELDS                                                                                                 \
    {.name = "site_id", .kind = KMS_FIELD_TEXT, .offset = offsetof(struct item, site_id), .min_len = 1,          \
     .max_len = 16, .valid = no_space, .rule = "must be 1..16 characters, no space"},                           \
    {.name = "wrapped", .kind = KMS_FIELD_TEXT, .offset = offsetof(struct item, wrapped), .rule = "must be text"}, \
    {.name = "bytes", .kind = KMS_FIELD_INT, .offset = offsetof(struct item, bytes), .min = 1, .max = 1024,       \
     .def = 32, .rule = "must be an integer of 1..1024"}
static const struct kms_field item_fields[] = {FIELDS};
static const struct kms_schema item_schema = {item_fields, 3, sizeof(struct item)};
static const struct kms_field body_fields[] = {
    FIELDS,
    {.name = "batch", .kind = KMS_FIELD_BATCH, .offset = offsetof(struct item, batch), .items = &item_schema,
     .max_items = 8, .rule = "must be an array of 1..8 objects"},
};
static const struct kms_schema body_schema = {body_fields, 4, sizeof(struct item)};

static void same_text(const struct kms_text *t, json_t *v)
{
    if (v == NULL) {
        check(t->s == NULL);
        return;
    }
    check(t->s != NULL && json_is_string(v) && t->len == json_string_length(v));
    check(memcmp(t->s, json_string_value(v), t->len) == 0 && t->s[t->len] == '\0');
}

static void same_item(const struct item *it, json_t *obj, int top)
{
    check(json_is_object(obj));
    same_text(&it->site_id, json_object_get(obj, "site_id"));
    same_text(&it->wrapped, json_object_get(obj, "wrapped"));
    json_t *b = json_object_get(obj, "bytes");
    check(b == NULL ? it->bytes == 32 : json_is_integer(b) && json_integer_value(b) == it->bytes);
    json_t *batch = top ? json_object_get(obj, "batch") : NULL;
    if (batch == NULL) {
        check(it->batch.items == NULL && it->batch.n == 0);
        return;
    }
    check(json_is_array(batch) && json_array_size(batch) == it->batch.n && json_object_size(obj) == 1);
    for (size_t i = 0; i < it->batch.n; i++)
        same_item((const struct item *)it->batch.items + i, json_array_get(batch, i), 0);
}

static int printable(const char *s)
{
    for (; *s; s++)
        if (*s < 0x20 || *s > 0x7e)
            return 0;
    return 1;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    json_error_t jerr;
    json_t *theirs = json_loadb((const char *)data, size, JSON_REJECT_DUPLICATES, &jerr);
    uint8_t *copy = malloc(size ? size : 1);
    check(copy != NULL);
    memcpy(copy, data, size);
    struct item out;
    struct kms_decode_error e;
    kms_rc rc = kms_decode(copy, size, &body_schema, &out, &e);
    check(rc == KMS_OK || rc == KMS_ERR_BAD_JSON || rc == KMS_ERR_INVALID_FIELD || rc == KMS_ERR_NO_MEMORY);
    if (rc != KMS_OK) {
        check(out.batch.items == NULL && out.site_id.s == NULL && out.wrapped.s == NULL);
        check(e.message[0] != '\0' && printable(e.message) && printable(e.field));
        check(rc != KMS_ERR_BAD_JSON ||
              (e.field[0] == '\0' && strncmp(e.message, "the body is not valid JSON: line ", 33) == 0));
    }
    if (theirs == NULL) {
        check(rc != KMS_OK);
    } else if (rc == KMS_OK) {
        same_item(&out, theirs, 1);
    } else if (rc == KMS_ERR_BAD_JSON && strstr(e.message, ": nesting too deep") == NULL) {
        check(strstr(e.message, ": NUL byte") != NULL);
        uint8_t *stripped = malloc(size ? size : 1);
        check(stripped != NULL);
        size_t n = 0;
        for (size_t i = 0; i < size; i++)
            if (data[i] != 0)
                stripped[n++] = data[i];
        struct item again;
        kms_rc rc2 = kms_decode(stripped, n, &body_schema, &again, &e);
        check(rc2 != KMS_ERR_BAD_JSON || strstr(e.message, ": nesting too deep") != NULL);
        kms_decode_free(&body_schema, &again);
        free(stripped);
    }
    kms_decode_free(&body_schema, &out);
    free(copy);
    json_decref(theirs);
    return 0;
}
