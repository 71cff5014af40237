/* Strict JSON (RFC 8259) to jansson trees, the request-body parser.
 *
 * One pass, recursive descent over the bytes; no per-byte function calls.
 * Strings without escapes (every base64 field) are scanned 8 bytes at a time
 * and handed to json_stringn_nocheck straight from the input: one copy, made
 * by jansson's allocator. Strings with escapes are decoded into a scratch
 * buffer that is wiped before kms_json_parse returns. What is accepted
 * mirrors json_loadb(..., JSON_REJECT_DUPLICATES, ...) of jansson 2.14
 * (src/load.c): see jsonparse.h for the two deliberate differences. */
#include "server/jsonparse.h"

#include <errno.h>
#include <limits.h>
#include <locale.h>
#include <math.h>
#include <openssl/crypto.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define SCRATCH_STACK 256
#define NUMBER_STACK 64

struct parser {
    const uint8_t *p;
    const uint8_t *end;
    const uint8_t *begin;
    const uint8_t *err_at;
    const char *reason; /* first failure wins; NULL while parsing succeeds */
    kms_rc rc;
    unsigned depth;
    uint8_t *scratch; /* decoded escaped strings: stack, or jansson's allocator */
    size_t scratch_cap;
    int scratch_dirty;
    uint8_t stack[SCRATCH_STACK];
};

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

static int fail(struct parser *ps, const uint8_t *at, const char *reason)
{
    if (ps->reason == NULL) {
        ps->reason = reason;
        ps->err_at = at;
        ps->rc = KMS_ERR_BAD_JSON;
    }
    return -1;
}

static int out_of_memory(struct parser *ps)
{
    if (ps->reason == NULL) {
        ps->reason = "out of memory";
        ps->err_at = ps->p;
        ps->rc = KMS_ERR_NO_MEMORY;
    }
    return -1;
}

static int is_digit(uint8_t c)
{
    return c >= '0' && c <= '9';
}

static void skip_ws(struct parser *ps)
{
    const uint8_t *p = ps->p;
    while (p < ps->end && (*p == ' ' || *p == '\n' || *p == '\r' || *p == '\t'))
        p++;
    ps->p = p;
}

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

/* ---- scratch for escaped strings ------------------------------------------------- */

static int scratch_reserve(struct parser *ps, size_t used, size_t need)
{
    if (need <= ps->scratch_cap)
        return 0;
    size_t cap = ps->scratch_cap * 2 > need ? ps->scratch_cap * 2 : need;
    json_malloc_t jmalloc;
    json_free_t jfree;
    json_get_alloc_funcs(&jmalloc, &jfree);
    uint8_t *n = jmalloc(cap);
    if (n == NULL)
        return out_of_memory(ps);
    memcpy(n, ps->scratch, used);
    OPENSSL_cleanse(ps->scratch, ps->scratch_cap);
    if (ps->scratch != ps->stack)
        jfree(ps->scratch);
    ps->scratch = n;
    ps->scratch_cap = cap;
    return 0;
}

static void scratch_release(struct parser *ps)
{
    if (!ps->scratch_dirty)
        return;
    OPENSSL_cleanse(ps->scratch, ps->scratch_cap);
    if (ps->scratch != ps->stack) {
        json_malloc_t jmalloc;
        json_free_t jfree;
        json_get_alloc_funcs(&jmalloc, &jfree);
        jfree(ps->scratch);
    }
    ps->scratch = ps->stack;
    ps->scratch_cap = sizeof(ps->stack);
    ps->scratch_dirty = 0;
}

static int scratch_append(struct parser *ps, size_t *used, const uint8_t *src, size_t n)
{
    if (n > SIZE_MAX - *used || scratch_reserve(ps, *used, *used + n) != 0)
        return ps->reason ? -1 : out_of_memory(ps);
    memcpy(ps->scratch + *used, src, n);
    *used += n;
    return 0;
}

/* ---- strings ------------------------------------------------------------------------ */

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

/* One escape at p (p[0] == '\\'): appends its UTF-8 to the scratch and
 * returns the byte after it, or NULL on failure. RFC 8259 §7; surrogates
 * must pair, and \u0000 is refused as jansson does without JSON_ALLOW_NUL. */
static const uint8_t *decode_escape(struct parser *ps, const uint8_t *p, size_t *used)
{
    const uint8_t *end = ps->end;
    uint8_t buf[4];
    size_t n = 1;
    if (end - p < 2) {
        fail(ps, end, "unterminated string");
        return NULL;
    }
    switch (p[1]) {
    case '"': buf[0] = '"'; break;
    case '\\': buf[0] = '\\'; break;
    case '/': buf[0] = '/'; break;
    case 'b': buf[0] = '\b'; break;
    case 'f': buf[0] = '\f'; break;
    case 'n': buf[0] = '\n'; break;
    case 'r': buf[0] = '\r'; break;
    case 't': buf[0] = '\t'; break;
    case 'u': {
        uint32_t cp, lo;
        if (hex4(p + 2, end, &cp) != 0) {
            fail(ps, p, "invalid escape");
            return NULL;
        }
        if (cp == 0) {
            fail(ps, p, "\\u0000 not allowed");
            return NULL;
        }
        if (cp >= 0xDC00 && cp <= 0xDFFF) {
            fail(ps, p, "invalid surrogate");
            return NULL;
        }
        if (cp >= 0xD800 && cp <= 0xDBFF) {
            if (end - p < 8 || p[6] != '\\' || p[7] != 'u') {
                fail(ps, p, "invalid surrogate");
                return NULL;
            }
            if (hex4(p + 8, end, &lo) != 0) {
                fail(ps, p + 6, "invalid escape");
                return NULL;
            }
            if (lo < 0xDC00 || lo > 0xDFFF) {
                fail(ps, p, "invalid surrogate");
                return NULL;
            }
            cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
            p += 6;
        }
        n = utf8_encode(cp, buf);
        p += 4;
        break;
    }
    default:
        fail(ps, p, "invalid escape");
        return NULL;
    }
    if (scratch_append(ps, used, buf, n) != 0)
        return NULL;
    return p + 2;
}

/* A string at ps->p (the opening quote). *out points into the input when the
 * string has no escapes (*escaped = 0), else into the scratch, valid until
 * the next string is parsed. */
static int parse_string(struct parser *ps, const char **out, size_t *len, int *escaped)
{
    const uint8_t *start = ps->p + 1, *end = ps->end;
    const uint8_t *run = start, *p = start;
    size_t used = 0;
    *escaped = 0;
    for (;;) {
        p = skip_plain(p, end);
        if (p == end)
            return fail(ps, end, "unterminated string");
        uint8_t c = *p;
        if (c == '"')
            break;
        if (c == '\\') {
            if (!*escaped) {
                *escaped = 1;
                ps->scratch_dirty = 1;
            }
            if (scratch_append(ps, &used, run, (size_t)(p - run)) != 0)
                return -1;
            p = decode_escape(ps, p, &used);
            if (p == NULL)
                return -1;
            run = p;
        } else if (c < 0x20) {
            return fail(ps, p, c == 0 ? "NUL byte" : "control character in string");
        } else {
            size_t n = utf8_seq(p, end);
            if (n == 0)
                return fail(ps, p, "invalid UTF-8");
            p += n;
        }
    }
    if (*escaped) {
        if (scratch_append(ps, &used, run, (size_t)(p - run)) != 0)
            return -1;
        *out = (const char *)ps->scratch;
        *len = used;
    } else {
        *out = (const char *)start;
        *len = (size_t)(p - start);
    }
    ps->p = p + 1;
    return 0;
}

/* ---- numbers ------------------------------------------------------------------------ */

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

/* RFC 8259 §6. Integers (no fraction, no exponent) become json_integer and
 * must fit json_int_t (long long), as jansson's strtoll; the rest json_real. */
static json_t *parse_number(struct parser *ps)
{
    const uint8_t *start = ps->p, *p = start, *end = ps->end;
    int neg = *p == '-';
    if (neg)
        p++;
    if (p == end || !is_digit(*p)) {
        fail(ps, p, "invalid number");
        return NULL;
    }
    uint64_t limit = neg ? (uint64_t)LLONG_MAX + 1 : (uint64_t)LLONG_MAX;
    uint64_t v = 0;
    int fits = 1;
    if (*p == '0') {
        p++;
        if (p < end && is_digit(*p)) {
            fail(ps, p, "leading zero");
            return NULL;
        }
    } else {
        do {
            uint64_t d = (uint64_t)(*p - '0');
            if (v > (limit - d) / 10)
                fits = 0;
            else
                v = v * 10 + d;
            p++;
        } while (p < end && is_digit(*p));
    }
    int real = 0;
    if (p < end && *p == '.') {
        p++;
        if (p == end || !is_digit(*p)) {
            fail(ps, p, "invalid number");
            return NULL;
        }
        while (p < end && is_digit(*p))
            p++;
        real = 1;
    }
    if (p < end && (*p == 'e' || *p == 'E')) {
        p++;
        if (p < end && (*p == '+' || *p == '-'))
            p++;
        if (p == end || !is_digit(*p)) {
            fail(ps, p, "invalid number");
            return NULL;
        }
        while (p < end && is_digit(*p))
            p++;
        real = 1;
    }
    ps->p = p;
    json_t *j;
    if (!real) {
        if (!fits) {
            fail(ps, start, "number out of range");
            return NULL;
        }
        json_int_t i = !neg ? (json_int_t)v : v == limit ? LLONG_MIN : -(json_int_t)v;
        j = json_integer(i);
    } else {
        double d;
        int rc = to_double(start, (size_t)(p - start), &d);
        if (rc == -1) {
            fail(ps, start, "number out of range");
            return NULL;
        }
        j = rc == 0 ? json_real(d) : NULL;
    }
    if (j == NULL)
        out_of_memory(ps);
    return j;
}

/* ---- values --------------------------------------------------------------------- */

static json_t *parse_value(struct parser *ps);

static const char *missing(struct parser *ps, const char *expected)
{
    if (ps->p == ps->end)
        return "unexpected end of input";
    if (*ps->p == 0)
        return "NUL byte";
    return expected;
}

static json_t *parse_object(struct parser *ps)
{
    json_malloc_t jmalloc = NULL;
    json_free_t jfree = NULL;
    char *key_copy = NULL;
    size_t key_copy_len = 0;
    json_t *obj = json_object();
    if (obj == NULL) {
        out_of_memory(ps);
        return NULL;
    }
    ps->p++;
    skip_ws(ps);
    if (ps->p < ps->end && *ps->p == '}') {
        ps->p++;
        return obj;
    }
    for (;;) {
        if (ps->p == ps->end || *ps->p != '"') {
            fail(ps, ps->p, missing(ps, "expected a string key or '}'"));
            goto error;
        }
        const uint8_t *key_at = ps->p;
        const char *key;
        size_t key_len;
        int escaped;
        if (parse_string(ps, &key, &key_len, &escaped) != 0)
            goto error;
        if (json_object_getn(obj, key, key_len) != NULL) {
            fail(ps, key_at, "duplicate key");
            goto error;
        }
        if (escaped) {
            /* why: the value's strings reuse the scratch the key sits in */
            if (jmalloc == NULL)
                json_get_alloc_funcs(&jmalloc, &jfree);
            key_copy = jmalloc(key_len + 1);
            if (key_copy == NULL) {
                out_of_memory(ps);
                goto error;
            }
            memcpy(key_copy, key, key_len);
            key_copy_len = key_len;
            key = key_copy;
        }
        skip_ws(ps);
        if (ps->p == ps->end || *ps->p != ':') {
            fail(ps, ps->p, missing(ps, "expected ':'"));
            goto error;
        }
        ps->p++;
        skip_ws(ps);
        json_t *value = parse_value(ps);
        if (value == NULL)
            goto error;
        if (json_object_setn_new_nocheck(obj, key, key_len, value) != 0) {
            out_of_memory(ps);
            goto error;
        }
        if (key_copy != NULL) {
            OPENSSL_cleanse(key_copy, key_copy_len);
            jfree(key_copy);
            key_copy = NULL;
        }
        skip_ws(ps);
        if (ps->p < ps->end && *ps->p == ',') {
            ps->p++;
            skip_ws(ps);
            continue;
        }
        if (ps->p < ps->end && *ps->p == '}') {
            ps->p++;
            return obj;
        }
        fail(ps, ps->p, missing(ps, "expected ',' or '}'"));
        goto error;
    }
error:
    if (key_copy != NULL) {
        OPENSSL_cleanse(key_copy, key_copy_len);
        jfree(key_copy);
    }
    json_decref(obj);
    return NULL;
}

static json_t *parse_array(struct parser *ps)
{
    json_t *arr = json_array();
    if (arr == NULL) {
        out_of_memory(ps);
        return NULL;
    }
    ps->p++;
    skip_ws(ps);
    if (ps->p < ps->end && *ps->p == ']') {
        ps->p++;
        return arr;
    }
    for (;;) {
        json_t *value = parse_value(ps);
        if (value == NULL)
            goto error;
        if (json_array_append_new(arr, value) != 0) {
            out_of_memory(ps);
            goto error;
        }
        skip_ws(ps);
        if (ps->p < ps->end && *ps->p == ',') {
            ps->p++;
            skip_ws(ps);
            continue;
        }
        if (ps->p < ps->end && *ps->p == ']') {
            ps->p++;
            return arr;
        }
        fail(ps, ps->p, missing(ps, "expected ',' or ']'"));
        goto error;
    }
error:
    json_decref(arr);
    return NULL;
}

static json_t *literal(struct parser *ps, const char *word, size_t n, json_t *value)
{
    if ((size_t)(ps->end - ps->p) < n || memcmp(ps->p, word, n) != 0) {
        fail(ps, ps->p, "unexpected character");
        return NULL;
    }
    ps->p += n;
    return value;
}

/* A value at ps->p (whitespace skipped). */
static json_t *parse_value(struct parser *ps)
{
    if (ps->p == ps->end) {
        fail(ps, ps->p, "unexpected end of input");
        return NULL;
    }
    switch (*ps->p) {
    case '{':
    case '[': {
        if (ps->depth >= KMS_JSON_MAX_DEPTH) {
            fail(ps, ps->p, "nesting too deep");
            return NULL;
        }
        ps->depth++;
        json_t *v = *ps->p == '{' ? parse_object(ps) : parse_array(ps);
        ps->depth--;
        return v;
    }
    case '"': {
        const char *s;
        size_t n;
        int escaped;
        if (parse_string(ps, &s, &n, &escaped) != 0)
            return NULL;
        json_t *v = json_stringn_nocheck(s, n);
        if (v == NULL)
            out_of_memory(ps);
        return v;
    }
    case 't':
        return literal(ps, "true", 4, json_true());
    case 'f':
        return literal(ps, "false", 5, json_false());
    case 'n':
        return literal(ps, "null", 4, json_null());
    case '-':
    case '0': case '1': case '2': case '3': case '4':
    case '5': case '6': case '7': case '8': case '9':
        return parse_number(ps);
    case 0:
        fail(ps, ps->p, "NUL byte");
        return NULL;
    default:
        fail(ps, ps->p, "unexpected character");
        return NULL;
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

kms_rc kms_json_parse(const uint8_t *data, size_t len, json_t **out, char *err, size_t errcap)
{
    static const uint8_t empty[1];
    *out = NULL;
    if (errcap > 0)
        err[0] = '\0';
    if (data == NULL) {
        data = empty;
        len = 0;
    }
    struct parser ps;
    ps.p = ps.begin = data;
    ps.end = data + len;
    ps.err_at = NULL;
    ps.reason = NULL;
    ps.rc = KMS_OK;
    ps.depth = 0;
    ps.scratch = ps.stack;
    ps.scratch_cap = sizeof(ps.stack);
    ps.scratch_dirty = 0;

    json_t *root = NULL;
    skip_ws(&ps);
    /* jansson without JSON_DECODE_ANY: the top level is an array or object */
    if (ps.p == ps.end || (*ps.p != '{' && *ps.p != '['))
        fail(&ps, ps.p, missing(&ps, "expected '{' or '['"));
    else
        root = parse_value(&ps);
    if (root != NULL) {
        skip_ws(&ps);
        if (ps.p != ps.end)
            fail(&ps, ps.p, missing(&ps, "trailing content"));
    }
    scratch_release(&ps);
    if (ps.reason == NULL) {
        *out = root;
        return KMS_OK;
    }
    json_decref(root);
    size_t line, column;
    locate(ps.begin, ps.err_at, &line, &column);
    if (errcap > 0)
        (void)snprintf(err, errcap, "line %zu column %zu: %s", line, column, ps.reason);
    return ps.rc;
}
