#include "server/jsonw.h"

#include <stdio.h>
#include <string.h>

#include "common/base64.h"
#include "common/log.h"
#include "common/secret.h"

void kms_jsonw_init(struct kms_jsonw *w, size_t max)
{
    memset(w, 0, sizeof(*w));
    kms_buf_init(&w->buf, max);
}

static void put(struct kms_jsonw *w, const char *s, size_t n)
{
    if (w->rc == KMS_OK)
        w->rc = kms_buf_append(&w->buf, s, n);
}

static void value_prefix(struct kms_jsonw *w)
{
    /* need_comma: 0 first member, 1 after a value, 2 right after a key */
    if (w->need_comma[w->depth] == 1)
        put(w, ",", 1);
    w->need_comma[w->depth] = 1;
}

static void open_(struct kms_jsonw *w, char c)
{
    value_prefix(w);
    put(w, &c, 1);
    if (w->depth + 1 >= KMS_JSONW_DEPTH) {
        if (w->rc == KMS_OK)
            w->rc = KMS_ERR_INTERNAL;
        return;
    }
    w->depth++;
    w->need_comma[w->depth] = 0;
}

static void close_(struct kms_jsonw *w, char c)
{
    if (w->depth == 0) {
        if (w->rc == KMS_OK)
            w->rc = KMS_ERR_INTERNAL;
        return;
    }
    w->depth--;
    put(w, &c, 1);
}

void kms_jsonw_obj_begin(struct kms_jsonw *w) { open_(w, '{'); }
void kms_jsonw_obj_end(struct kms_jsonw *w) { close_(w, '}'); }
void kms_jsonw_arr_begin(struct kms_jsonw *w) { open_(w, '['); }
void kms_jsonw_arr_end(struct kms_jsonw *w) { close_(w, ']'); }

static void quoted(struct kms_jsonw *w, const char *s)
{
    char esc[1024];
    size_t len = strlen(s);
    put(w, "\"", 1);
    /* why: escape in bounded pieces so long values are never truncated; a
     * piece ends between characters, never inside one */
    while (len > 0 && w->rc == KMS_OK) {
        size_t used = kms_json_escape_n(s, len, esc, sizeof(esc));
        put(w, esc, strlen(esc));
        s += used;
        len -= used;
    }
    kms_wipe(esc, sizeof(esc)); /* why: values may be key material */
    put(w, "\"", 1);
}

void kms_jsonw_key(struct kms_jsonw *w, const char *key)
{
    value_prefix(w);
    quoted(w, key);
    put(w, ":", 1);
    w->need_comma[w->depth] = 2;
}

void kms_jsonw_str(struct kms_jsonw *w, const char *s)
{
    value_prefix(w);
    quoted(w, s);
}

void kms_jsonw_int(struct kms_jsonw *w, long long v)
{
    char num[32];
    int n = snprintf(num, sizeof(num), "%lld", v);
    value_prefix(w);
    put(w, num, (size_t)n);
}

void kms_jsonw_bool(struct kms_jsonw *w, int v)
{
    value_prefix(w);
    if (v)
        put(w, "true", 4);
    else
        put(w, "false", 5);
}

void kms_jsonw_null(struct kms_jsonw *w)
{
    value_prefix(w);
    put(w, "null", 4);
}

void kms_jsonw_b64(struct kms_jsonw *w, const uint8_t *p, size_t len)
{
    value_prefix(w);
    put(w, "\"", 1);
    size_t need = kms_b64_encoded_len(len) + 1;
    uint8_t *at;
    if (w->rc == KMS_OK)
        w->rc = kms_buf_extend(&w->buf, need, &at);
    /* why: encode straight into the wiped-on-free buffer, no copy elsewhere */
    if (w->rc == KMS_OK) {
        w->rc = kms_b64_encode(p, len, (char *)at, need);
        w->buf.len--; /* drop the NUL */
    }
    put(w, "\"", 1);
}

void kms_jsonw_kv(struct kms_jsonw *w, const char *key, const char *s)
{
    kms_jsonw_key(w, key);
    kms_jsonw_str(w, s);
}

kms_rc kms_jsonw_finish(struct kms_jsonw *w)
{
    if (w->rc == KMS_OK && w->depth != 0)
        w->rc = KMS_ERR_INTERNAL;
    return w->rc;
}

void kms_jsonw_free(struct kms_jsonw *w) { kms_buf_free(&w->buf); }
