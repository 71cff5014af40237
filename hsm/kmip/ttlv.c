#include "hsm/kmip/ttlv.h"

#include <stdlib.h>
#include <string.h>

#include "common/cursor.h"

struct kms_ttlv_doc {
    size_t count;
    struct kms_ttlv nodes[];
};

/* One decoding pass: the first counts (nodes NULL), the second fills. */
struct pass {
    const uint8_t *msg; /* for offsets in error details */
    struct kms_ttlv *nodes;
    size_t n;
};

static size_t padded(size_t len) { return (len + 7u) & ~(size_t)7u; }

static int tag_valid(uint32_t tag)
{
    /* KMIP 1.4 §9.1.1.1: 0x42xxxx defined tags, 0x54xxxx extensions */
    return (tag >> 16) == 0x42 || (tag >> 16) == 0x54;
}

/* Exact value length of the fixed-size types; 0 for the others. */
static size_t fixed_len(unsigned type)
{
    switch (type) {
    case KMS_TTLV_INTEGER:
    case KMS_TTLV_ENUMERATION:
    case KMS_TTLV_INTERVAL:
        return 4;
    case KMS_TTLV_LONG_INTEGER:
    case KMS_TTLV_BOOLEAN:
    case KMS_TTLV_DATE_TIME:
    case KMS_TTLV_DATE_TIME_EXTENDED:
        return 8;
    default:
        return 0;
    }
}

const char *kms_ttlv_type_name(unsigned type)
{
    static const char *const names[] = {
        "unknown",     "Structure", "Integer", "Long Integer", "Big Integer", "Enumeration", "Boolean",
        "Text String", "Byte String", "Date-Time", "Interval", "Date-Time Extended",
    };
    return type < KMS_ARRAY_LEN(names) ? names[type] : "unknown";
}

int kms_ttlv_text_valid(const uint8_t *s, size_t len)
{
    size_t i = 0;
    while (i < len) {
        uint8_t b = s[i];
        size_t n;
        uint32_t cp, min;
        if (b == 0)
            return 0;
        if (b < 0x80) {
            i++;
            continue;
        }
        if ((b & 0xE0) == 0xC0) {
            n = 1, cp = b & 0x1Fu, min = 0x80;
        } else if ((b & 0xF0) == 0xE0) {
            n = 2, cp = b & 0x0Fu, min = 0x800;
        } else if ((b & 0xF8) == 0xF0) {
            n = 3, cp = b & 0x07u, min = 0x10000;
        } else {
            return 0;
        }
        if (len - i - 1 < n)
            return 0;
        for (size_t k = 1; k <= n; k++) {
            if ((s[i + k] & 0xC0) != 0x80)
                return 0;
            cp = (cp << 6) | (s[i + k] & 0x3Fu);
        }
        if (cp < min || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF))
            return 0;
        i += n + 1;
    }
    return 1;
}

static size_t offset_of(const struct pass *p, const struct kms_cursor *c)
{
    return (size_t)(c->data + c->pos - p->msg);
}

static uint64_t be(const uint8_t *p, size_t n)
{
    uint64_t v = 0;
    for (size_t i = 0; i < n; i++)
        v = (v << 8) | p[i];
    return v;
}

/* Decodes the item at c (advancing past it and its padding) at nesting level
 * depth (1 = the message); in the filling pass *out is its node. */
static kms_rc item(struct pass *p, struct kms_cursor *c, unsigned depth, struct kms_ttlv **out)
{
    size_t at = offset_of(p, c);
    const uint8_t *hdr, *pad;
    struct kms_cursor val;
    if (kms_cursor_bytes(c, KMS_TTLV_HEADER_LEN, &hdr) != KMS_OK)
        return kms_fail(KMS_ERR_MALFORMED, "TTLV: truncated item header at offset %zu", at);
    uint32_t tag = (uint32_t)be(hdr, 3);
    uint8_t type = hdr[3];
    uint32_t len = (uint32_t)be(hdr + 4, 4);
    if (!tag_valid(tag))
        return kms_fail(KMS_ERR_MALFORMED, "TTLV: invalid tag 0x%06x at offset %zu", (unsigned)tag, at);
    if (type < KMS_TTLV_STRUCTURE || type > KMS_TTLV_DATE_TIME_EXTENDED)
        return kms_fail(KMS_ERR_MALFORMED, "TTLV: unknown type 0x%02x of tag 0x%06x at offset %zu", type,
                        (unsigned)tag, at);
    size_t want = fixed_len(type);
    if (want != 0 && len != want)
        return kms_fail(KMS_ERR_MALFORMED, "TTLV: %s of tag 0x%06x with length %u (must be %zu) at offset %zu",
                        kms_ttlv_type_name(type), (unsigned)tag, (unsigned)len, want, at);
    if (kms_cursor_sub(c, len, &val) != KMS_OK)
        return kms_fail(KMS_ERR_MALFORMED, "TTLV: tag 0x%06x of length %u overruns its container at offset %zu",
                        (unsigned)tag, (unsigned)len, at);
    size_t npad = padded(len) - len;
    if (kms_cursor_bytes(c, npad, &pad) != KMS_OK)
        return kms_fail(KMS_ERR_MALFORMED, "TTLV: padding of tag 0x%06x truncated at offset %zu", (unsigned)tag, at);
    for (size_t i = 0; i < npad; i++)
        if (pad[i] != 0)
            return kms_fail(KMS_ERR_MALFORMED, "TTLV: non-zero padding after tag 0x%06x at offset %zu",
                            (unsigned)tag, at);

    const uint8_t *v = val.data;
    int64_t num = 0;
    switch (type) {
    case KMS_TTLV_INTEGER:
        num = (int32_t)(uint32_t)be(v, 4);
        break;
    case KMS_TTLV_ENUMERATION:
    case KMS_TTLV_INTERVAL:
        num = (int64_t)be(v, 4);
        break;
    case KMS_TTLV_LONG_INTEGER:
    case KMS_TTLV_DATE_TIME:
    case KMS_TTLV_DATE_TIME_EXTENDED:
        num = (int64_t)be(v, 8);
        break;
    case KMS_TTLV_BOOLEAN:
        if (be(v, 8) > 1)
            return kms_fail(KMS_ERR_MALFORMED, "TTLV: Boolean of tag 0x%06x is neither 0 nor 1 at offset %zu",
                            (unsigned)tag, at);
        num = (int64_t)be(v, 8);
        break;
    case KMS_TTLV_BIG_INTEGER:
        if (len == 0 || len % 8 != 0)
            return kms_fail(KMS_ERR_MALFORMED, "TTLV: Big Integer of tag 0x%06x with length %u at offset %zu",
                            (unsigned)tag, (unsigned)len, at);
        break;
    case KMS_TTLV_TEXT_STRING:
        if (!kms_ttlv_text_valid(v, len))
            return kms_fail(KMS_ERR_MALFORMED, "TTLV: Text String of tag 0x%06x is not UTF-8 or holds NUL at "
                            "offset %zu", (unsigned)tag, at);
        break;
    default:
        break;
    }

    struct kms_ttlv *node = NULL;
    if (p->nodes != NULL) {
        node = &p->nodes[p->n];
        node->tag = tag;
        node->type = type;
        node->len = len;
        node->value = v != NULL ? v : p->msg; /* why: a zero-length value still points somewhere valid */
        node->num = num;
        node->child = NULL;
        node->next = NULL;
    }
    p->n++;

    if (type == KMS_TTLV_STRUCTURE) {
        if (depth >= KMS_TTLV_MAX_DEPTH && len > 0)
            return kms_fail(KMS_ERR_MALFORMED, "TTLV: nesting deeper than %u levels at offset %zu",
                            KMS_TTLV_MAX_DEPTH, at);
        struct kms_ttlv *prev = NULL;
        while (kms_cursor_remaining(&val) > 0) {
            struct kms_ttlv *ch = NULL;
            KMS_GUARD(item(p, &val, depth + 1, &ch));
            if (node != NULL) {
                if (prev == NULL)
                    node->child = ch;
                else
                    prev->next = ch;
                prev = ch;
            }
        }
    }
    *out = node;
    return KMS_OK;
}

static kms_rc run(struct pass *p, const uint8_t *msg, size_t len)
{
    struct kms_cursor c;
    struct kms_ttlv *root = NULL;
    kms_cursor_init(&c, msg, len);
    KMS_GUARD(item(p, &c, 1, &root));
    if (len >= KMS_TTLV_HEADER_LEN && msg[3] != KMS_TTLV_STRUCTURE)
        return kms_fail(KMS_ERR_MALFORMED, "TTLV: a message is a Structure, not a %s", kms_ttlv_type_name(msg[3]));
    if (kms_cursor_remaining(&c) != 0)
        return kms_fail(KMS_ERR_MALFORMED, "TTLV: %zu trailing bytes after the message", kms_cursor_remaining(&c));
    return KMS_OK;
}

kms_rc kms_ttlv_decode(const uint8_t *msg, size_t len, struct kms_ttlv_doc **out)
{
    *out = NULL;
    if (len > KMS_TTLV_MAX_MESSAGE)
        return kms_fail(KMS_ERR_TOO_LARGE, "TTLV: message of %zu bytes (at most %u)", len, KMS_TTLV_MAX_MESSAGE);
    if (msg == NULL || len == 0)
        return kms_fail(KMS_ERR_MALFORMED, "TTLV: empty message");
    struct pass count = {.msg = msg, .nodes = NULL, .n = 0};
    KMS_GUARD(run(&count, msg, len));
    struct kms_ttlv_doc *d = calloc(1, sizeof(*d) + count.n * sizeof(d->nodes[0]));
    if (d == NULL)
        return kms_fail(KMS_ERR_NO_MEMORY, "TTLV: %zu items", count.n);
    struct pass fill = {.msg = msg, .nodes = d->nodes, .n = 0};
    kms_rc rc = run(&fill, msg, len);
    if (rc != KMS_OK || fill.n != count.n) {
        free(d);
        return rc != KMS_OK ? rc : kms_fail(KMS_ERR_INTERNAL, "TTLV: passes disagree");
    }
    d->count = count.n;
    *out = d;
    return KMS_OK;
}

void kms_ttlv_doc_free(struct kms_ttlv_doc **d)
{
    if (d == NULL || *d == NULL)
        return;
    free(*d);
    *d = NULL;
}

const struct kms_ttlv *kms_ttlv_doc_root(const struct kms_ttlv_doc *d) { return d != NULL ? &d->nodes[0] : NULL; }

size_t kms_ttlv_doc_count(const struct kms_ttlv_doc *d) { return d != NULL ? d->count : 0; }

kms_rc kms_ttlv_frame_len(const uint8_t hdr[KMS_TTLV_HEADER_LEN], size_t max, size_t *total)
{
    *total = 0;
    if (max > KMS_TTLV_MAX_MESSAGE)
        max = KMS_TTLV_MAX_MESSAGE;
    uint32_t tag = (uint32_t)be(hdr, 3);
    if ((tag >> 16) != 0x42 || hdr[3] != KMS_TTLV_STRUCTURE)
        return kms_fail(KMS_ERR_MALFORMED, "TTLV: a message must start with a Structure (got tag 0x%06x type 0x%02x)",
                        (unsigned)tag, hdr[3]);
    uint64_t len = be(hdr + 4, 4);
    if (len > max - KMS_TTLV_HEADER_LEN)
        return kms_fail(KMS_ERR_TOO_LARGE, "TTLV: message of %llu bytes (at most %zu)",
                        (unsigned long long)(len + KMS_TTLV_HEADER_LEN), max);
    *total = (size_t)len + KMS_TTLV_HEADER_LEN;
    return KMS_OK;
}

const struct kms_ttlv *kms_ttlv_first(const struct kms_ttlv *s, uint32_t tag)
{
    if (s == NULL || s->type != KMS_TTLV_STRUCTURE)
        return NULL;
    for (const struct kms_ttlv *n = s->child; n != NULL; n = n->next)
        if (n->tag == tag)
            return n;
    return NULL;
}

const struct kms_ttlv *kms_ttlv_next_same(const struct kms_ttlv *n)
{
    if (n == NULL)
        return NULL;
    for (const struct kms_ttlv *m = n->next; m != NULL; m = m->next)
        if (m->tag == n->tag)
            return m;
    return NULL;
}

size_t kms_ttlv_count(const struct kms_ttlv *s, uint32_t tag)
{
    size_t n = 0;
    for (const struct kms_ttlv *m = kms_ttlv_first(s, tag); m != NULL; m = kms_ttlv_next_same(m))
        n++;
    return n;
}

kms_rc kms_ttlv_get_one(const struct kms_ttlv *s, uint32_t tag, enum kms_ttlv_type type, const struct kms_ttlv **out)
{
    const struct kms_ttlv *n = kms_ttlv_first(s, tag);
    *out = NULL;
    if (n == NULL)
        return KMS_OK;
    if (kms_ttlv_next_same(n) != NULL)
        return kms_fail(KMS_ERR_MALFORMED, "TTLV: tag 0x%06x occurs more than once", (unsigned)tag);
    if (n->type != type)
        return kms_fail(KMS_ERR_MALFORMED, "TTLV: tag 0x%06x is a %s, expected a %s", (unsigned)tag,
                        kms_ttlv_type_name(n->type), kms_ttlv_type_name(type));
    *out = n;
    return KMS_OK;
}

/* ---- encoder ----------------------------------------------------------- */

void kms_ttlv_enc_init(struct kms_ttlv_enc *e, struct kms_buf *out)
{
    memset(e, 0, sizeof(*e));
    e->out = out;
}

static void put_be(uint8_t *p, uint64_t v, size_t n)
{
    for (size_t i = 0; i < n; i++)
        p[i] = (uint8_t)(v >> (8 * (n - 1 - i)));
}

/* Header, value and padding in one append, so a failure leaves nothing
 * half-written. */
static kms_rc put(struct kms_ttlv_enc *e, uint32_t tag, uint8_t type, const uint8_t *v, size_t len)
{
    uint8_t *at;
    if (!tag_valid(tag))
        return kms_fail(KMS_ERR_INVALID_FIELD, "TTLV: invalid tag 0x%06x", (unsigned)tag);
    if (len > UINT32_MAX - 8)
        return kms_fail(KMS_ERR_INVALID_FIELD, "TTLV: value of %zu bytes", len);
    kms_rc rc = kms_buf_extend(e->out, KMS_TTLV_HEADER_LEN + padded(len), &at);
    if (rc != KMS_OK)
        return kms_fail(rc, "TTLV: message larger than its buffer");
    put_be(at, tag, 3);
    at[3] = type;
    put_be(at + 4, len, 4);
    if (len > 0)
        memcpy(at + KMS_TTLV_HEADER_LEN, v, len);
    return KMS_OK; /* why: kms_buf_extend zero-fills, so the padding is already zero */
}

kms_rc kms_ttlv_begin(struct kms_ttlv_enc *e, uint32_t tag)
{
    if (e->depth >= KMS_TTLV_MAX_DEPTH)
        return kms_fail(KMS_ERR_INTERNAL, "TTLV: more than %u nested structures", KMS_TTLV_MAX_DEPTH);
    size_t at = e->out->len;
    KMS_GUARD(put(e, tag, KMS_TTLV_STRUCTURE, NULL, 0));
    e->open[e->depth++] = at;
    return KMS_OK;
}

kms_rc kms_ttlv_end(struct kms_ttlv_enc *e)
{
    if (e->depth == 0)
        return kms_fail(KMS_ERR_INTERNAL, "TTLV: end without an open structure");
    size_t at = e->open[--e->depth];
    size_t len = e->out->len - at - KMS_TTLV_HEADER_LEN;
    if (len > UINT32_MAX)
        return kms_fail(KMS_ERR_INVALID_FIELD, "TTLV: structure of %zu bytes", len);
    put_be(e->out->data + at + 4, len, 4);
    return KMS_OK;
}

kms_rc kms_ttlv_put_int(struct kms_ttlv_enc *e, uint32_t tag, int32_t v)
{
    uint8_t b[4];
    put_be(b, (uint32_t)v, 4);
    return put(e, tag, KMS_TTLV_INTEGER, b, 4);
}

kms_rc kms_ttlv_put_long(struct kms_ttlv_enc *e, uint32_t tag, int64_t v)
{
    uint8_t b[8];
    put_be(b, (uint64_t)v, 8);
    return put(e, tag, KMS_TTLV_LONG_INTEGER, b, 8);
}

kms_rc kms_ttlv_put_bigint(struct kms_ttlv_enc *e, uint32_t tag, const uint8_t *v, size_t len)
{
    if (len == 0 || len % 8 != 0)
        return kms_fail(KMS_ERR_INVALID_FIELD, "TTLV: Big Integer of %zu bytes (a multiple of 8)", len);
    return put(e, tag, KMS_TTLV_BIG_INTEGER, v, len);
}

kms_rc kms_ttlv_put_enum(struct kms_ttlv_enc *e, uint32_t tag, uint32_t v)
{
    uint8_t b[4];
    put_be(b, v, 4);
    return put(e, tag, KMS_TTLV_ENUMERATION, b, 4);
}

kms_rc kms_ttlv_put_bool(struct kms_ttlv_enc *e, uint32_t tag, int v)
{
    uint8_t b[8];
    put_be(b, v ? 1 : 0, 8);
    return put(e, tag, KMS_TTLV_BOOLEAN, b, 8);
}

kms_rc kms_ttlv_put_text(struct kms_ttlv_enc *e, uint32_t tag, const char *s, size_t len)
{
    if (len > 0 && s == NULL)
        return kms_fail(KMS_ERR_INVALID_FIELD, "TTLV: NULL text");
    if (len > 0 && !kms_ttlv_text_valid((const uint8_t *)s, len))
        return kms_fail(KMS_ERR_INVALID_FIELD, "TTLV: text for tag 0x%06x is not UTF-8 or holds NUL", (unsigned)tag);
    return put(e, tag, KMS_TTLV_TEXT_STRING, (const uint8_t *)s, len);
}

kms_rc kms_ttlv_put_bytes(struct kms_ttlv_enc *e, uint32_t tag, const uint8_t *v, size_t len)
{
    if (len > 0 && v == NULL)
        return kms_fail(KMS_ERR_INVALID_FIELD, "TTLV: NULL bytes");
    return put(e, tag, KMS_TTLV_BYTE_STRING, v, len);
}

kms_rc kms_ttlv_put_datetime(struct kms_ttlv_enc *e, uint32_t tag, int64_t seconds)
{
    uint8_t b[8];
    put_be(b, (uint64_t)seconds, 8);
    return put(e, tag, KMS_TTLV_DATE_TIME, b, 8);
}

kms_rc kms_ttlv_put_interval(struct kms_ttlv_enc *e, uint32_t tag, uint32_t seconds)
{
    uint8_t b[4];
    put_be(b, seconds, 4);
    return put(e, tag, KMS_TTLV_INTERVAL, b, 4);
}

kms_rc kms_ttlv_put_datetime_ext(struct kms_ttlv_enc *e, uint32_t tag, int64_t microseconds)
{
    uint8_t b[8];
    put_be(b, (uint64_t)microseconds, 8);
    return put(e, tag, KMS_TTLV_DATE_TIME_EXTENDED, b, 8);
}

kms_rc kms_ttlv_enc_finish(const struct kms_ttlv_enc *e)
{
    if (e->depth != 0)
        return kms_fail(KMS_ERR_INTERNAL, "TTLV: %u structures still open", e->depth);
    return KMS_OK;
}
