#include "common/properties.h"

#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/buf.h"
#include "common/file.h"
#include "common/secret.h"
#include "common/utf8.h"

#define PROPS_MAX_INPUT (1024 * 1024)
#define PROPS_MAX_ENTRIES 4096
#define PROPS_MAX_LINE (64 * 1024)
/* why: open addressing at most half full, so probes stay short and always end */
#define PROPS_HASH_SLOTS (2 * PROPS_MAX_ENTRIES)

struct entry {
    char *key;
    char *value;
    size_t value_len;
    unsigned line;
    unsigned first_line;
};

struct kms_props {
    struct entry *items;
    size_t count;
    size_t cap;
    uint16_t slots[PROPS_HASH_SLOTS]; /* index + 1 into items; 0 = empty */
};

/* Where we are in the input: the natural line being read, for details. */
struct reader {
    const char *text;
    size_t len;
    size_t pos;
    unsigned line; /* 1-based number of the natural line at pos */
    const char *name;
};

static int is_ws(char c) { return c == ' ' || c == '\t' || c == '\f'; }

static uint32_t hash_key(const char *s)
{
    uint32_t h = 2166136261u; /* FNV-1a */
    for (; *s; s++) {
        h ^= (unsigned char)*s;
        h *= 16777619u;
    }
    return h;
}

/* Slot holding key, or the empty slot where it would go. */
static size_t find_slot(const struct kms_props *p, const char *key)
{
    size_t i = hash_key(key) & (PROPS_HASH_SLOTS - 1);
    while (p->slots[i] != 0 && strcmp(p->items[p->slots[i] - 1].key, key) != 0)
        i = (i + 1) & (PROPS_HASH_SLOTS - 1);
    return i;
}

static void free_entry(struct entry *e)
{
    if (e->key != NULL) {
        kms_wipe(e->key, strlen(e->key));
        free(e->key);
    }
    if (e->value != NULL) {
        kms_wipe(e->value, e->value_len);
        free(e->value);
    }
    e->key = NULL;
    e->value = NULL;
}

void kms_props_free(struct kms_props **p)
{
    if (p == NULL || *p == NULL)
        return;
    for (size_t i = 0; i < (*p)->count; i++)
        free_entry(&(*p)->items[i]);
    free((*p)->items);
    free(*p);
    *p = NULL;
}

/* Takes ownership of key and value (both freed here on failure). */
static kms_rc put(struct kms_props *p, const struct reader *r, unsigned line, char *key, char *value, size_t value_len)
{
    size_t slot = find_slot(p, key);
    if (p->slots[slot] != 0) {
        /* Java semantics: the later assignment wins; the first line is kept for reporting. */
        struct entry *e = &p->items[p->slots[slot] - 1];
        kms_wipe(e->value, e->value_len);
        free(e->value);
        e->value = value;
        e->value_len = value_len;
        e->line = line;
        kms_wipe(key, strlen(key));
        free(key);
        return KMS_OK;
    }
    if (p->count >= PROPS_MAX_ENTRIES) {
        kms_wipe(key, strlen(key));
        free(key);
        kms_wipe(value, value_len);
        free(value);
        return kms_fail(KMS_ERR_MALFORMED, "%s:%u: more than %d properties", r->name, line, PROPS_MAX_ENTRIES);
    }
    if (p->count == p->cap) {
        size_t cap = p->cap ? p->cap * 2 : 32;
        struct entry *items = realloc(p->items, cap * sizeof(*items));
        if (items == NULL) {
            kms_wipe(key, strlen(key));
            free(key);
            kms_wipe(value, value_len);
            free(value);
            return kms_fail(KMS_ERR_NO_MEMORY, "%s:%u: out of memory", r->name, line);
        }
        p->items = items;
        p->cap = cap;
    }
    p->items[p->count] = (struct entry){key, value, value_len, line, line};
    p->count++;
    p->slots[slot] = (uint16_t)p->count;
    return KMS_OK;
}

static int hex_value(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

/* Reads the 4 hex digits of a \uXXXX escape whose 'u' is at s[*i - 1]. */
static kms_rc read_u16(const char *s, size_t n, size_t *i, const struct reader *r, unsigned line, unsigned *out)
{
    unsigned v = 0;
    if (n - *i < 4)
        return kms_fail(KMS_ERR_MALFORMED, "%s:%u: malformed \\uXXXX escape (fewer than 4 hex digits)", r->name, line);
    for (int k = 0; k < 4; k++) {
        int h = hex_value(s[*i + (size_t)k]);
        if (h < 0)
            return kms_fail(KMS_ERR_MALFORMED, "%s:%u: malformed \\uXXXX escape (non-hex digit)", r->name, line);
        v = (v << 4) | (unsigned)h;
    }
    *i += 4;
    *out = v;
    return KMS_OK;
}

/* Java's loadConvert: resolves escapes of s[0..n) into a new NUL-terminated
 * string. Output is never longer than the input (\uXXXX: 6 chars -> at most 3
 * bytes; a surrogate pair: 12 chars -> 4 bytes). */
static kms_rc unescape(const char *s, size_t n, const struct reader *r, unsigned line, char **out, size_t *out_len)
{
    char *o = malloc(n + 1);
    if (o == NULL)
        return kms_fail(KMS_ERR_NO_MEMORY, "%s:%u: out of memory", r->name, line);
    size_t w = 0;
    kms_rc rc = KMS_OK;
    for (size_t i = 0; i < n;) {
        char c = s[i++];
        if (c != '\\') {
            o[w++] = c;
            continue;
        }
        if (i == n)
            break; /* why: a lone trailing backslash cannot occur after line joining; drop it as Java 9+ does */
        c = s[i++];
        switch (c) {
        case 't': o[w++] = '\t'; break;
        case 'n': o[w++] = '\n'; break;
        case 'r': o[w++] = '\r'; break;
        case 'f': o[w++] = '\f'; break;
        case 'u': {
            unsigned cp;
            if ((rc = read_u16(s, n, &i, r, line, &cp)) != KMS_OK)
                goto fail;
            if (cp == 0) {
                rc = kms_fail(KMS_ERR_MALFORMED, "%s:%u: \\u0000 (NUL) is not allowed", r->name, line);
                goto fail;
            }
            if (cp >= 0xdc00 && cp <= 0xdfff) {
                rc = kms_fail(KMS_ERR_MALFORMED, "%s:%u: unpaired low surrogate \\u%04X", r->name, line, cp);
                goto fail;
            }
            if (cp >= 0xd800 && cp <= 0xdbff) {
                /* UTF-16 in the escapes: a high surrogate must be followed by a low one. */
                unsigned lo;
                if (n - i < 2 || s[i] != '\\' || s[i + 1] != 'u') {
                    rc = kms_fail(KMS_ERR_MALFORMED, "%s:%u: unpaired high surrogate \\u%04X", r->name, line, cp);
                    goto fail;
                }
                i += 2;
                if ((rc = read_u16(s, n, &i, r, line, &lo)) != KMS_OK)
                    goto fail;
                if (lo < 0xdc00 || lo > 0xdfff) {
                    rc = kms_fail(KMS_ERR_MALFORMED, "%s:%u: unpaired high surrogate \\u%04X", r->name, line, cp);
                    goto fail;
                }
                cp = 0x10000 + ((cp - 0xd800) << 10) + (lo - 0xdc00);
            }
            w += kms_utf8_encode(cp, (uint8_t *)(o + w));
            break;
        }
        default: o[w++] = c; /* '\' before any other char yields that char */
        }
    }
    o[w] = '\0';
    *out = o;
    *out_len = w;
    return KMS_OK;
fail:
    kms_wipe(o, n + 1);
    free(o);
    return rc;
}

/* Java's Properties.load0 for one logical line: the key ends at the first
 * unescaped '=', ':' or whitespace; whitespace and at most one separator
 * before the value are skipped. */
static kms_rc parse_entry(struct kms_props *p, const struct reader *r, unsigned line, const char *s, size_t n)
{
    size_t key_len = 0, value_start = n;
    int has_sep = 0, backslash = 0;
    while (key_len < n) {
        char c = s[key_len];
        if ((c == '=' || c == ':') && !backslash) {
            value_start = key_len + 1;
            has_sep = 1;
            break;
        }
        if (is_ws(c) && !backslash) {
            value_start = key_len + 1;
            break;
        }
        backslash = (c == '\\') ? !backslash : 0;
        key_len++;
    }
    while (value_start < n) {
        char c = s[value_start];
        if (!is_ws(c)) {
            if (!has_sep && (c == '=' || c == ':'))
                has_sep = 1;
            else
                break;
        }
        value_start++;
    }
    char *key, *value;
    size_t klen, vlen;
    KMS_GUARD(unescape(s, key_len, r, line, &key, &klen));
    kms_rc rc = unescape(s + value_start, n - value_start, r, line, &value, &vlen);
    if (rc != KMS_OK) {
        free(key);
        return rc;
    }
    return put(p, r, line, key, value, vlen);
}

/* Java's LineReader: joins natural lines into one logical line in buf.
 * Sets *got = 0 at the end of input, else *got = 1 and *start = its first line. */
static kms_rc read_logical(struct reader *r, struct kms_buf *buf, int *got, unsigned *start)
{
    int continuing = 0;
    *got = 0;
    kms_buf_reset(buf);
    while (r->pos < r->len) {
        size_t s = r->pos, e = s;
        while (e < r->len && r->text[e] != '\n' && r->text[e] != '\r')
            e++;
        size_t next = e;
        if (next < r->len) /* \n, \r\n or a lone \r ends a natural line */
            next += (r->text[next] == '\r' && next + 1 < r->len && r->text[next + 1] == '\n') ? 2 : 1;
        unsigned this_line = r->line;
        r->pos = next;
        r->line++;

        while (s < e && is_ws(r->text[s]))
            s++;
        if (!continuing) {
            if (s == e || r->text[s] == '#' || r->text[s] == '!')
                continue; /* blank or comment: a comment never continues */
            *start = this_line;
        } else if (s == e) {
            if (buf->len == 0) {
                continuing = 0; /* "\" then an empty line: nothing was read */
                continue;
            }
            *got = 1; /* an empty continuation line ends the logical line */
            return KMS_OK;
        }
        size_t trailing = 0;
        while (trailing < e - s && r->text[e - 1 - trailing] == '\\')
            trailing++;
        size_t take = (e - s) - (trailing % 2);
        if (kms_buf_append(buf, r->text + s, take) != KMS_OK)
            return kms_fail(KMS_ERR_MALFORMED, "%s:%u: logical line longer than %d bytes", r->name, *start,
                            PROPS_MAX_LINE);
        if (trailing % 2 == 0) {
            *got = 1;
            return KMS_OK;
        }
        continuing = 1; /* odd number of trailing backslashes: the line goes on */
    }
    *got = buf->len > 0;
    return KMS_OK;
}

kms_rc kms_props_parse(const char *text, size_t len, const char *name, struct kms_props **out)
{
    *out = NULL;
    struct reader r = {text, len, 0, 1, name ? name : "properties"};
    if (len > PROPS_MAX_INPUT)
        return kms_fail(KMS_ERR_MALFORMED, "%s: larger than %d bytes", r.name, PROPS_MAX_INPUT);
    if (len > 0 && text == NULL)
        return kms_fail(KMS_ERR_INTERNAL, "%s: NULL text", r.name);
    const char *nul = len ? memchr(text, '\0', len) : NULL;
    if (nul != NULL) {
        unsigned line = 1;
        for (const char *c = text; c < nul; c++)
            if (*c == '\n' || (*c == '\r' && c[1] != '\n'))
                line++;
        return kms_fail(KMS_ERR_MALFORMED, "%s:%u: embedded NUL byte", r.name, line);
    }

    struct kms_props *p = calloc(1, sizeof(*p));
    if (p == NULL)
        return kms_fail(KMS_ERR_NO_MEMORY, "%s: out of memory", r.name);
    struct kms_buf line;
    kms_buf_init(&line, PROPS_MAX_LINE);
    kms_rc rc = KMS_OK;
    for (;;) {
        int got;
        unsigned start = r.line;
        if ((rc = read_logical(&r, &line, &got, &start)) != KMS_OK || !got)
            break;
        if (line.len == 0)
            continue; /* why: a lone "\" at the end; Java would add an empty key, which helps nobody */
        if ((rc = parse_entry(p, &r, start, (const char *)line.data, line.len)) != KMS_OK)
            break;
    }
    kms_buf_free(&line);
    if (rc != KMS_OK) {
        kms_props_free(&p);
        return rc;
    }
    *out = p;
    return KMS_OK;
}

kms_rc kms_props_load(const char *path, struct kms_props **out)
{
    *out = NULL;
    uint8_t *text = NULL;
    size_t len = 0;
    kms_rc rc = kms_file_read_any(path, PROPS_MAX_INPUT, "the properties file", &text, &len);
    if (rc == KMS_ERR_TOO_LARGE)
        rc = KMS_ERR_MALFORMED; /* why: as the parser says of text over PROPS_MAX_INPUT */
    if (rc != KMS_OK)
        return rc;
    rc = kms_props_parse((const char *)text, len, path, out);
    kms_wipe(text, len);
    free(text);
    return rc;
}

size_t kms_props_count(const struct kms_props *p) { return p ? p->count : 0; }

const char *kms_props_key(const struct kms_props *p, size_t i) { return p && i < p->count ? p->items[i].key : NULL; }

const char *kms_props_value(const struct kms_props *p, size_t i)
{
    return p && i < p->count ? p->items[i].value : NULL;
}

unsigned kms_props_line(const struct kms_props *p, size_t i) { return p && i < p->count ? p->items[i].line : 0; }

unsigned kms_props_first_line(const struct kms_props *p, size_t i)
{
    return p && i < p->count ? p->items[i].first_line : 0;
}

const char *kms_props_get(const struct kms_props *p, const char *key)
{
    if (p == NULL || key == NULL)
        return NULL;
    size_t slot = find_slot(p, key);
    return p->slots[slot] ? p->items[p->slots[slot] - 1].value : NULL;
}
