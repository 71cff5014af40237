/* Request bodies to typed structs (decode.h): one pass over the bytes that
 * checks the whole grammar and fills the struct, then a second over the
 * struct that undoes escapes in place and checks each value against its row.
 *
 * Strings are only scanned in the first pass (8 bytes at a time when they
 * hold nothing special), and their spans kept; the body is not changed until
 * it is known to be JSON, so a syntax error's line and column count the bytes
 * as the client sent them. */
#include "server/decode.h"

#include <errno.h>
#include <limits.h>
#include <locale.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/secret.h"
#include "common/token.h"

#define NUMBER_STACK 64
#define KEY_MAX 64 /* longer keys match no field (and are not named in errors) */

struct dec {
    const uint8_t *p;
    const uint8_t *end;
    const uint8_t *begin;
    const uint8_t *err_at;
    const char *reason; /* the first syntax error; NULL while the body is JSON */
    unsigned depth;
    kms_rc field_rc;    /* the first field error (or KMS_ERR_NO_MEMORY) */
    struct kms_decode_error *err;
};


static int fail(struct dec *d, const uint8_t *at, const char *reason)
{
    if (d->reason == NULL) {
        d->reason = reason;
        d->err_at = at;
    }
    return -1;
}

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

static int is_digit(uint8_t c)
{
    return c >= '0' && c <= '9';
}

static void skip_ws(struct dec *d)
{
    const uint8_t *p = d->p;
    while (p < d->end && (*p == ' ' || *p == '\n' || *p == '\r' || *p == '\t'))
        p++;
    d->p = p;
}

static const char *missing(const struct dec *d, const char *expected)
{
    if (d->p == d->end)
        return "unexpected end of input";
    if (*d->p == 0)
        return "NUL byte";
    return expected;
}

/* 1 for the bytes a string cannot hold as they are: controls (RFC 8259 §7),
 * '"', '\\', and every byte >= 0x80 (checked as UTF-8 on their own path). */
static const uint8_t special[256] = {
    1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, /* 0x00 */
    0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, /* 0x20 */
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, /* 0x40 */
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, /* 0x60 */
    1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, /* 0x80 */
    1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, /* 0xa0 */
    1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, /* 0xc0 */
    1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, /* 0xe0 */
};

/* Nonzero when none of the 8 bytes is special (exact: the classic "has a
 * byte less than n" / "has a zero byte" word tests, n <= 128). */
static int word_is_plain(uint64_t x)
{
    const uint64_t ones = 0x0101010101010101ULL, high = 0x8080808080808080ULL;
    uint64_t q = x ^ (ones * '"'), b = x ^ (ones * '\\');
    uint64_t hit = ((x - ones * 0x20) & ~x) | ((q - ones) & ~q) | ((b - ones) & ~b) | x;
    return (hit & high) == 0;
}

/* First special byte in [p, end), or end. */
static const uint8_t *skip_plain(const uint8_t *p, const uint8_t *end)
{
    while (end - p >= 8) {
        uint64_t x;
        memcpy(&x, p, sizeof(x));
        if (!word_is_plain(x))
            break;
        p += 8;
    }
    while (p < end && !special[*p])
        p++;
    return p;
}

static int is_cont(uint8_t c)
{
    return (c & 0xC0) == 0x80;
}

/* Length of the well-formed UTF-8 sequence at p (p[0] >= 0x80), 0 if it is
 * not one: Unicode 15 table 3-7, which is what jansson's utf8_check_full
 * accepts (no overlongs, no surrogates, nothing above U+10FFFF). */
static size_t utf8_seq(const uint8_t *p, const uint8_t *end)
{
    uint8_t c = p[0];
    size_t avail = (size_t)(end - p);
    if (c >= 0xC2 && c <= 0xDF)
        return avail >= 2 && is_cont(p[1]) ? 2 : 0;
    if (c >= 0xE0 && c <= 0xEF) {
        uint8_t lo = c == 0xE0 ? 0xA0 : 0x80, hi = c == 0xED ? 0x9F : 0xBF;
        return avail >= 3 && p[1] >= lo && p[1] <= hi && is_cont(p[2]) ? 3 : 0;
    }
    if (c >= 0xF0 && c <= 0xF4) {
        uint8_t lo = c == 0xF0 ? 0x90 : 0x80, hi = c == 0xF4 ? 0x8F : 0xBF;
        return avail >= 4 && p[1] >= lo && p[1] <= hi && is_cont(p[2]) && is_cont(p[3]) ? 4 : 0;
    }
    return 0;
}


static int hex4(const uint8_t *p, const uint8_t *end, uint32_t *out)
{
    if (end - p < 4)
        return -1;
    uint32_t v = 0;
    for (int i = 0; i < 4; i++) {
        uint8_t c = p[i];
        uint32_t d;
        if (c >= '0' && c <= '9')
            d = (uint32_t)(c - '0');
        else if ((c | 0x20) >= 'a' && (c | 0x20) <= 'f')
            d = (uint32_t)((c | 0x20) - 'a' + 10);
        else
            return -1;
        v = (v << 4) | d;
    }
    *out = v;
    return 0;
}

static size_t utf8_encode(uint32_t cp, uint8_t out[4])
{
    if (cp < 0x80) {
        out[0] = (uint8_t)cp;
        return 1;
    }
    if (cp < 0x800) {
        out[0] = (uint8_t)(0xC0 | (cp >> 6));
        out[1] = (uint8_t)(0x80 | (cp & 0x3F));
        return 2;
    }
    if (cp < 0x10000) {
        out[0] = (uint8_t)(0xE0 | (cp >> 12));
        out[1] = (uint8_t)(0x80 | ((cp >> 6) & 0x3F));
        out[2] = (uint8_t)(0x80 | (cp & 0x3F));
        return 3;
    }
    out[0] = (uint8_t)(0xF0 | (cp >> 18));
    out[1] = (uint8_t)(0x80 | ((cp >> 12) & 0x3F));
    out[2] = (uint8_t)(0x80 | ((cp >> 6) & 0x3F));
    out[3] = (uint8_t)(0x80 | (cp & 0x3F));
    return 4;
}



/* Checks the escape at p (p[0] == '\\') and returns the byte after it, or
 * NULL. RFC 8259 §7; surrogates must pair, and \u0000 is refused as jansson
 * does without JSON_ALLOW_NUL. */
static const uint8_t *check_escape(struct dec *d, const uint8_t *p)
{
    const uint8_t *end = d->end;
    if (end - p < 2) {
        fail(d, end, "unterminated string");
        return NULL;
    }
    switch (p[1]) {
    case '"': case '\\': case '/': case 'b': case 'f': case 'n': case 'r': case 't':
        return p + 2;
    case 'u': {
        uint32_t cp, lo;
        if (hex4(p + 2, end, &cp) != 0) {
            fail(d, p, "invalid escape");
            return NULL;
        }
        if (cp == 0) {
            fail(d, p, "\\u0000 not allowed");
            return NULL;
        }
        if (cp >= 0xDC00 && cp <= 0xDFFF) {
            fail(d, p, "invalid surrogate");
            return NULL;
        }
        if (cp < 0xD800 || cp > 0xDBFF)
            return p + 6;
        if (end - p < 8 || p[6] != '\\' || p[7] != 'u') {
            fail(d, p, "invalid surrogate");
            return NULL;
        }
        if (hex4(p + 8, end, &lo) != 0) {
            fail(d, p + 6, "invalid escape");
            return NULL;
        }
        if (lo < 0xDC00 || lo > 0xDFFF) {
            fail(d, p, "invalid surrogate");
            return NULL;
        }
        return p + 12;
    }
    default:
        fail(d, p, "invalid escape");
        return NULL;
    }
}

/* Undoes the escapes of a checked string's raw bytes src[0..n) into dst,
 * which may be src itself (the result is never longer). Returns the decoded
 * length, or SIZE_MAX when it would pass cap. */
static size_t unescape(const uint8_t *src, size_t n, uint8_t *dst, size_t cap)
{
    size_t o = 0;
    for (size_t i = 0; i < n;) {
        uint8_t c = src[i];
        uint8_t buf[4];
        size_t k = 1;
        if (c != '\\') {
            buf[0] = c;
            i++;
        } else {
            switch (src[i + 1]) {
            case 'b': buf[0] = '\b'; break;
            case 'f': buf[0] = '\f'; break;
            case 'n': buf[0] = '\n'; break;
            case 'r': buf[0] = '\r'; break;
            case 't': buf[0] = '\t'; break;
            case 'u': break;
            default: buf[0] = src[i + 1]; break;
            }
            if (src[i + 1] != 'u') {
                i += 2;
            } else {
                uint32_t cp = 0, lo = 0;
                (void)hex4(src + i + 2, src + n, &cp);
                i += 6;
                if (cp >= 0xD800 && cp <= 0xDBFF) {
                    (void)hex4(src + i + 2, src + n, &lo);
                    cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
                    i += 6;
                }
                k = utf8_encode(cp, buf);
            }
        }
        if (o + k > cap)
            return SIZE_MAX;
        memcpy(dst + o, buf, k);
        o += k;
    }
    return o;
}

/* A string at d->p (its opening quote), checked and skipped: its raw bytes
 * are [*start, *start + *len), *escaped when they hold a backslash. */
static int scan_string(struct dec *d, const uint8_t **start, size_t *len, unsigned *escaped)
{
    const uint8_t *p = d->p + 1, *end = d->end;
    *start = p;
    *escaped = 0;
    for (;;) {
        p = skip_plain(p, end);
        if (p == end)
            return fail(d, end, "unterminated string");
        uint8_t c = *p;
        if (c == '"')
            break;
        if (c == '\\') {
            *escaped = 1;
            p = check_escape(d, p);
            if (p == NULL)
                return -1;
        } else if (c < 0x20) {
            return fail(d, p, c == 0 ? "NUL byte" : "control character in string");
        } else {
            size_t n = utf8_seq(p, end);
            if (n == 0)
                return fail(d, p, "invalid UTF-8");
            p += n;
        }
    }
    *len = (size_t)(p - *start);
    d->p = p + 1;
    return 0;
}

/* A number's text [start, end) as a double, as jansson's jsonp_strtod does
 * (strtod in the current locale's decimal point; overflow is an error,
 * underflow is not). */
static int to_double(const uint8_t *start, size_t n, double *out)
{
    char small[NUMBER_STACK];
    char *buf = n < sizeof(small) ? small : malloc(n + 1);
    if (buf == NULL)
        return -2;
    memcpy(buf, start, n);
    buf[n] = '\0';
    const char *point = localeconv()->decimal_point;
    if (point[0] != '.') {
        char *dot = memchr(buf, '.', n);
        if (dot != NULL)
            *dot = point[0];
    }
    errno = 0;
    char *stop;
    double d = strtod(buf, &stop);
    int bad = stop != buf + n || ((d == HUGE_VAL || d == -HUGE_VAL) && errno == ERANGE);
    if (buf != small)
        free(buf);
    if (bad)
        return -1;
    *out = d;
    return 0;
}



/* A number at d->p, checked and skipped (RFC 8259 §6, with jansson's limits:
 * an integer must fit long long, a real must not overflow a double). *is_int
 * and *value say what it was. */
static int scan_number(struct dec *d, int *is_int, long long *value)
{
    const uint8_t *start = d->p, *p = start, *end = d->end;
    int neg = *p == '-';
    if (neg)
        p++;
    if (p == end || !is_digit(*p))
        return fail(d, p, "invalid number");
    uint64_t limit = neg ? (uint64_t)LLONG_MAX + 1 : (uint64_t)LLONG_MAX;
    uint64_t v = 0;
    int fits = 1;
    if (*p == '0') {
        p++;
        if (p < end && is_digit(*p))
            return fail(d, p, "leading zero");
    } else {
        do {
            uint64_t dg = (uint64_t)(*p - '0');
            if (v > (limit - dg) / 10)
                fits = 0;
            else
                v = v * 10 + dg;
            p++;
        } while (p < end && is_digit(*p));
    }
    int real = 0;
    if (p < end && *p == '.') {
        p++;
        if (p == end || !is_digit(*p))
            return fail(d, p, "invalid number");
        while (p < end && is_digit(*p))
            p++;
        real = 1;
    }
    if (p < end && (*p == 'e' || *p == 'E')) {
        p++;
        if (p < end && (*p == '+' || *p == '-'))
            p++;
        if (p == end || !is_digit(*p))
            return fail(d, p, "invalid number");
        while (p < end && is_digit(*p))
            p++;
        real = 1;
    }
    d->p = p;
    *is_int = !real;
    *value = 0;
    if (!real) {
        if (!fits)
            return fail(d, start, "number out of range");
        *value = !neg ? (long long)v : v == limit ? LLONG_MIN : -(long long)v;
        return 0;
    }
    double dv;
    int rc = to_double(start, (size_t)(p - start), &dv);
    if (rc == -1)
        return fail(d, start, "number out of range");
    if (rc != 0) {
        field_error(d, KMS_ERR_NO_MEMORY, "", "", "out of memory");
        return fail(d, start, "out of memory");
    }
    return 0;
}

static int literal(struct dec *d, const char *word, size_t n)
{
    if ((size_t)(d->end - d->p) < n || memcmp(d->p, word, n) != 0)
        return fail(d, d->p, "unexpected character");
    d->p += n;
    return 0;
}

static int enter(struct dec *d)
{
    if (d->depth >= KMS_DECODE_MAX_DEPTH)
        return fail(d, d->p, "nesting too deep");
    d->depth++;
    return 0;
}

/* Any value at d->p (whitespace skipped), checked and skipped. */
static int skip_value(struct dec *d)
{
    const uint8_t *s;
    size_t n;
    unsigned esc;
    int is_int;
    long long v;
    if (d->p == d->end)
        return fail(d, d->p, "unexpected end of input");
    switch (*d->p) {
    case '{':
    case '[': {
        uint8_t close = *d->p == '{' ? '}' : ']';
        if (enter(d) != 0)
            return -1;
        d->p++;
        skip_ws(d);
        if (d->p < d->end && *d->p == close) {
            d->p++;
            d->depth--;
            return 0;
        }
        for (;;) {
            if (close == '}') {
                if (d->p == d->end || *d->p != '"')
                    return fail(d, d->p, missing(d, "expected a string key or '}'"));
                if (scan_string(d, &s, &n, &esc) != 0)
                    return -1;
                skip_ws(d);
                if (d->p == d->end || *d->p != ':')
                    return fail(d, d->p, missing(d, "expected ':'"));
                d->p++;
                skip_ws(d);
            }
            if (skip_value(d) != 0)
                return -1;
            skip_ws(d);
            if (d->p < d->end && *d->p == ',') {
                d->p++;
                skip_ws(d);
                continue;
            }
            if (d->p < d->end && *d->p == close) {
                d->p++;
                d->depth--;
                return 0;
            }
            return fail(d, d->p, missing(d, close == '}' ? "expected ',' or '}'" : "expected ',' or ']'"));
        }
    }
    case '"':
        return scan_string(d, &s, &n, &esc);
    case 't':
        return literal(d, "true", 4);
    case 'f':
        return literal(d, "false", 5);
    case 'n':
        return literal(d, "null", 4);
    case '-':
    case '0': case '1': case '2': case '3': case '4':
    case '5': case '6': case '7': case '8': case '9':
        return scan_number(d, &is_int, &v);
    case 0:
        return fail(d, d->p, "NUL byte");
    default:
        return fail(d, d->p, "unexpected character");
    }
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

/* A batch field's array at d->p: each item an object of f->items. */
static int decode_batch(struct dec *d, const struct kms_field *f, struct kms_batch *b, const char *prefix)
{
    const struct kms_schema *is = f->items;
    size_t cap = 0;
    if (enter(d) != 0)
        return -1;
    d->p++;
    skip_ws(d);
    if (d->p < d->end && *d->p == ']') {
        d->p++;
        d->depth--;
        field_error(d, KMS_ERR_INVALID_FIELD, prefix, f->name, "%s %s", f->name, f->rule);
        return 0;
    }
    for (size_t i = 0;; i++) {
        char item_prefix[64];
        (void)snprintf(item_prefix, sizeof(item_prefix), "%s%s[%zu].", prefix, f->name, i);
        if (i == f->max_items)
            field_error(d, KMS_ERR_INVALID_FIELD, prefix, f->name, "%s %s", f->name, f->rule);
        if (d->p < d->end && *d->p == '{' && i < f->max_items && d->field_rc == KMS_OK) {
            if (b->n == cap) {
                size_t ncap = cap == 0 ? 8 : cap * 2;
                if (ncap > f->max_items)
                    ncap = f->max_items;
                void *grown = realloc(b->items, ncap * is->size);
                if (grown == NULL) {
                    field_error(d, KMS_ERR_NO_MEMORY, prefix, f->name, "out of memory");
                    return fail(d, d->p, "out of memory");
                }
                b->items = grown;
                cap = ncap;
            }
            void *item = (uint8_t *)b->items + b->n * is->size;
            apply_defaults(is, item);
            b->n++;
            if (decode_object(d, is, item, item_prefix) != 0)
                return -1;
        } else {
            if (d->p < d->end && *d->p != '{' && d->reason == NULL)
                field_error(d, KMS_ERR_INVALID_FIELD, item_prefix, "", "%s%s[%zu] must be an object, not %s",
                            prefix, f->name, i, type_of(*d->p));
            if (skip_value(d) != 0)
                return -1;
        }
        skip_ws(d);
        if (d->p < d->end && *d->p == ',') {
            d->p++;
            skip_ws(d);
            continue;
        }
        if (d->p < d->end && *d->p == ']') {
            d->p++;
            d->depth--;
            return 0;
        }
        return fail(d, d->p, missing(d, "expected ',' or ']'"));
    }
}

/* The value of field f at d->p, into out. */
static int decode_field(struct dec *d, const struct kms_field *f, void *out, const char *prefix)
{
    uint8_t *at = (uint8_t *)out + f->offset;
    uint8_t c = *d->p;
    switch (f->kind) {
    case KMS_FIELD_TEXT:
        if (c == '"') {
            const uint8_t *s;
            size_t n;
            unsigned esc;
            if (scan_string(d, &s, &n, &esc) != 0)
                return -1;
            struct kms_text t = {(const char *)s, n, esc};
            memcpy(at, &t, sizeof(t));
            return 0;
        }
        break;
    case KMS_FIELD_INT:
        if (c == '-' || is_digit(c)) {
            int is_int;
            long long v;
            if (scan_number(d, &is_int, &v) != 0)
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
    return skip_value(d);
}

/* An object at d->p ('{') of the given schema. */
static int decode_object(struct dec *d, const struct kms_schema *schema, void *out, const char *prefix)
{
    uint32_t seen = 0;
    const struct kms_field *batch = NULL;
    if (enter(d) != 0)
        return -1;
    d->p++;
    skip_ws(d);
    int empty = d->p < d->end && *d->p == '}';
    while (!empty) {
        if (d->p == d->end || *d->p != '"')
            return fail(d, d->p, missing(d, "expected a string key or '}'"));
        const uint8_t *key_at = d->p, *raw;
        size_t raw_len;
        unsigned esc;
        if (scan_string(d, &raw, &raw_len, &esc) != 0)
            return -1;
        uint8_t key[KEY_MAX + 1];
        size_t key_len = esc ? unescape(raw, raw_len, key, KEY_MAX) : raw_len <= KEY_MAX ? raw_len : SIZE_MAX;
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
            return fail(d, key_at, "duplicate key");
        skip_ws(d);
        if (d->p == d->end || *d->p != ':')
            return fail(d, d->p, missing(d, "expected ':'"));
        d->p++;
        skip_ws(d);
        if (d->p == d->end)
            return fail(d, d->p, "unexpected end of input");
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
            if (skip_value(d) != 0)
                return -1;
        }
        skip_ws(d);
        if (d->p < d->end && *d->p == ',') {
            d->p++;
            skip_ws(d);
            continue;
        }
        if (d->p < d->end && *d->p == '}')
            break;
        return fail(d, d->p, missing(d, "expected ',' or '}'"));
    }
    d->p++;
    d->depth--;
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
                char item_prefix[64];
                (void)snprintf(item_prefix, sizeof(item_prefix), "%s%s[%zu].", prefix, f->name, k);
                finish_object(d, f->items, (uint8_t *)b->items + k * f->items->size, item_prefix);
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
            t.len = unescape(s, t.len, s, t.len);
        s[t.len] = '\0';
        t.escaped = 0;
        memcpy(at, &t, sizeof(t));
        int bad = t.len < f->min_len || (f->max_len > 0 && t.len > f->max_len) || strlen(t.s) != t.len ||
                  (f->valid != NULL && !f->valid(t.s));
        if (bad)
            field_error(d, KMS_ERR_INVALID_FIELD, prefix, f->name, "%s%s %s", prefix, f->name, f->rule);
    }
}

/* Line (from 1) and column (characters, from 1) of the byte at `at`. */
static void locate(const uint8_t *begin, const uint8_t *at, size_t *line, size_t *column)
{
    size_t l = 1, c = 1;
    for (const uint8_t *p = begin; p < at; p++) {
        if (*p == '\n') {
            l++;
            c = 1;
        } else if (!is_cont(*p)) {
            c++;
        }
    }
    *line = l;
    *column = c;
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
    struct dec d = {.p = body, .end = body + len, .begin = body, .field_rc = KMS_OK, .err = err};
    apply_defaults(schema, out);
    skip_ws(&d);
    int ok;
    if (d.p < d.end && *d.p == '{') {
        ok = decode_object(&d, schema, out, "") == 0;
    } else if (d.p < d.end && *d.p == '[') {
        ok = skip_value(&d) == 0;
        field_error(&d, KMS_ERR_INVALID_FIELD, "", "", "the body must be a JSON object");
    } else {
        ok = fail(&d, d.p, missing(&d, "expected '{' or '['")) == 0;
    }
    if (ok) {
        skip_ws(&d);
        if (d.p != d.end)
            fail(&d, d.p, missing(&d, "trailing content"));
    }
    if (d.reason == NULL && d.field_rc == KMS_OK)
        finish_object(&d, schema, out, "");
    if (d.reason == NULL && d.field_rc == KMS_OK)
        return KMS_OK;
    kms_decode_free(schema, out);
    apply_defaults(schema, out);
    if (d.field_rc == KMS_ERR_NO_MEMORY)
        return KMS_ERR_NO_MEMORY;
    if (d.reason != NULL) {
        size_t line, column;
        locate(d.begin, d.err_at, &line, &column);
        err->field[0] = '\0';
        (void)snprintf(err->message, sizeof(err->message), "the body is not valid JSON: line %zu column %zu: %s",
                       line, column, d.reason);
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
