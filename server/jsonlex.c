/* The JSON lexer under server/decode.c: RFC 8259 as jansson 2.14 reads it
 * (decode.h lists the differences), checking and skipping values without
 * building them. Strings with nothing special in them are scanned 8 bytes at
 * a time; escapes are checked here and undone later, in place. */
#include "server/jsonlex.h"

#include "common/utf8.h"

#include <errno.h>
#include <limits.h>
#include <locale.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#define NUMBER_STACK 64

int kms_jsonlex_fail(struct kms_jsonlex *d, const uint8_t *at, const char *reason)
{
    if (d->reason == NULL) {
        d->reason = reason;
        d->err_at = at;
    }
    return -1;
}

int kms_jsonlex_is_digit(uint8_t c)
{
    return c >= '0' && c <= '9';
}

void kms_jsonlex_ws(struct kms_jsonlex *d)
{
    const uint8_t *p = d->p;
    while (p < d->end && (*p == ' ' || *p == '\n' || *p == '\r' || *p == '\t'))
        p++;
    d->p = p;
}

const char *kms_jsonlex_missing(const struct kms_jsonlex *d, const char *expected)
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

/* Checks the escape at p (p[0] == '\\') and returns the byte after it, or
 * NULL. RFC 8259 §7; surrogates must pair, and \u0000 is refused as jansson
 * does without JSON_ALLOW_NUL. */
static const uint8_t *check_escape(struct kms_jsonlex *d, const uint8_t *p)
{
    const uint8_t *end = d->end;
    if (end - p < 2) {
        kms_jsonlex_fail(d, end, "unterminated string");
        return NULL;
    }
    switch (p[1]) {
    case '"': case '\\': case '/': case 'b': case 'f': case 'n': case 'r': case 't':
        return p + 2;
    case 'u': {
        uint32_t cp, lo;
        if (hex4(p + 2, end, &cp) != 0) {
            kms_jsonlex_fail(d, p, "invalid escape");
            return NULL;
        }
        if (cp == 0) {
            kms_jsonlex_fail(d, p, "\\u0000 not allowed");
            return NULL;
        }
        if (cp >= 0xDC00 && cp <= 0xDFFF) {
            kms_jsonlex_fail(d, p, "invalid surrogate");
            return NULL;
        }
        if (cp < 0xD800 || cp > 0xDBFF)
            return p + 6;
        if (end - p < 8 || p[6] != '\\' || p[7] != 'u') {
            kms_jsonlex_fail(d, p, "invalid surrogate");
            return NULL;
        }
        if (hex4(p + 8, end, &lo) != 0) {
            kms_jsonlex_fail(d, p + 6, "invalid escape");
            return NULL;
        }
        if (lo < 0xDC00 || lo > 0xDFFF) {
            kms_jsonlex_fail(d, p, "invalid surrogate");
            return NULL;
        }
        return p + 12;
    }
    default:
        kms_jsonlex_fail(d, p, "invalid escape");
        return NULL;
    }
}

/* Undoes the escapes of a checked string's raw bytes src[0..n) into dst,
 * which may be src itself (the result is never longer). Returns the decoded
 * length, or SIZE_MAX when it would pass cap. */
size_t kms_jsonlex_unescape(const uint8_t *src, size_t n, uint8_t *dst, size_t cap)
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
                k = kms_utf8_encode(cp, buf);
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
int kms_jsonlex_string(struct kms_jsonlex *d, const uint8_t **start, size_t *len, unsigned *escaped)
{
    const uint8_t *p = d->p + 1, *end = d->end;
    *start = p;
    *escaped = 0;
    for (;;) {
        p = skip_plain(p, end);
        if (p == end)
            return kms_jsonlex_fail(d, end, "unterminated string");
        uint8_t c = *p;
        if (c == '"')
            break;
        if (c == '\\') {
            *escaped = 1;
            p = check_escape(d, p);
            if (p == NULL)
                return -1;
        } else if (c < 0x20) {
            return kms_jsonlex_fail(d, p, c == 0 ? "NUL byte" : "control character in string");
        } else {
            size_t n = kms_utf8_seq(p, (size_t)(end - p));
            if (n == 0)
                return kms_jsonlex_fail(d, p, "invalid UTF-8");
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
int kms_jsonlex_number(struct kms_jsonlex *d, int *is_int, long long *value)
{
    const uint8_t *start = d->p, *p = start, *end = d->end;
    int neg = *p == '-';
    if (neg)
        p++;
    if (p == end || !kms_jsonlex_is_digit(*p))
        return kms_jsonlex_fail(d, p, "invalid number");
    uint64_t limit = neg ? (uint64_t)LLONG_MAX + 1 : (uint64_t)LLONG_MAX;
    uint64_t v = 0;
    int fits = 1;
    if (*p == '0') {
        p++;
        if (p < end && kms_jsonlex_is_digit(*p))
            return kms_jsonlex_fail(d, p, "leading zero");
    } else {
        do {
            uint64_t dg = (uint64_t)(*p - '0');
            if (v > (limit - dg) / 10)
                fits = 0;
            else
                v = v * 10 + dg;
            p++;
        } while (p < end && kms_jsonlex_is_digit(*p));
    }
    int real = 0;
    if (p < end && *p == '.') {
        p++;
        if (p == end || !kms_jsonlex_is_digit(*p))
            return kms_jsonlex_fail(d, p, "invalid number");
        while (p < end && kms_jsonlex_is_digit(*p))
            p++;
        real = 1;
    }
    if (p < end && (*p == 'e' || *p == 'E')) {
        p++;
        if (p < end && (*p == '+' || *p == '-'))
            p++;
        if (p == end || !kms_jsonlex_is_digit(*p))
            return kms_jsonlex_fail(d, p, "invalid number");
        while (p < end && kms_jsonlex_is_digit(*p))
            p++;
        real = 1;
    }
    d->p = p;
    *is_int = !real;
    *value = 0;
    if (!real) {
        if (!fits)
            return kms_jsonlex_fail(d, start, "number out of range");
        *value = !neg ? (long long)v : v == limit ? LLONG_MIN : -(long long)v;
        return 0;
    }
    double dv;
    int rc = to_double(start, (size_t)(p - start), &dv);
    if (rc == -1)
        return kms_jsonlex_fail(d, start, "number out of range");
    if (rc != 0) {
        d->oom = 1;
        return kms_jsonlex_fail(d, start, "out of memory");
    }
    return 0;
}

static int literal(struct kms_jsonlex *d, const char *word, size_t n)
{
    if ((size_t)(d->end - d->p) < n || memcmp(d->p, word, n) != 0)
        return kms_jsonlex_fail(d, d->p, "unexpected character");
    d->p += n;
    return 0;
}

int kms_jsonlex_enter(struct kms_jsonlex *d)
{
    if (d->depth >= KMS_JSONLEX_MAX_DEPTH)
        return kms_jsonlex_fail(d, d->p, "nesting too deep");
    d->depth++;
    return 0;
}

/* Any value at d->p (whitespace skipped), checked and skipped. */
int kms_jsonlex_next(struct kms_jsonlex *d, uint8_t close)
{
    kms_jsonlex_ws(d);
    if (d->p < d->end && *d->p == ',') {
        d->p++;
        kms_jsonlex_ws(d);
        return 1;
    }
    if (d->p < d->end && *d->p == close) {
        d->p++;
        d->depth--;
        return 0;
    }
    return kms_jsonlex_fail(d, d->p, kms_jsonlex_missing(d, close == '}' ? "expected ',' or '}'" : "expected ',' or ']'"));
}

int kms_jsonlex_skip(struct kms_jsonlex *d)
{
    const uint8_t *s;
    size_t n;
    unsigned esc;
    int is_int;
    long long v;
    if (d->p == d->end)
        return kms_jsonlex_fail(d, d->p, "unexpected end of input");
    switch (*d->p) {
    case '{':
    case '[': {
        uint8_t close = *d->p == '{' ? '}' : ']';
        if (kms_jsonlex_enter(d) != 0)
            return -1;
        d->p++;
        kms_jsonlex_ws(d);
        if (d->p < d->end && *d->p == close) {
            d->p++;
            d->depth--;
            return 0;
        }
        for (;;) {
            if (close == '}') {
                if (d->p == d->end || *d->p != '"')
                    return kms_jsonlex_fail(d, d->p, kms_jsonlex_missing(d, "expected a string key or '}'"));
                if (kms_jsonlex_string(d, &s, &n, &esc) != 0)
                    return -1;
                kms_jsonlex_ws(d);
                if (d->p == d->end || *d->p != ':')
                    return kms_jsonlex_fail(d, d->p, kms_jsonlex_missing(d, "expected ':'"));
                d->p++;
                kms_jsonlex_ws(d);
            }
            if (kms_jsonlex_skip(d) != 0)
                return -1;
            int more = kms_jsonlex_next(d, close);
            if (more <= 0)
                return more;
        }
    }
    case '"':
        return kms_jsonlex_string(d, &s, &n, &esc);
    case 't':
        return literal(d, "true", 4);
    case 'f':
        return literal(d, "false", 5);
    case 'n':
        return literal(d, "null", 4);
    case '-':
    case '0': case '1': case '2': case '3': case '4':
    case '5': case '6': case '7': case '8': case '9':
        return kms_jsonlex_number(d, &is_int, &v);
    case 0:
        return kms_jsonlex_fail(d, d->p, "NUL byte");
    default:
        return kms_jsonlex_fail(d, d->p, "unexpected character");
    }
}

/* Line (from 1) and column (characters, from 1) of the first error. */
void kms_jsonlex_locate(const struct kms_jsonlex *d, size_t *line, size_t *column)
{
    size_t l = 1, c = 1;
    for (const uint8_t *p = d->begin; p < d->err_at; p++) {
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
