/* The JSON lexer of the request decoder (server/decode.c): checks and skips
 * JSON values over a byte range, recording the first syntax error and where
 * it is. Internal to server/. */
#ifndef KMS_SERVER_JSONLEX_H
#define KMS_SERVER_JSONLEX_H

#include <stddef.h>
#include <stdint.h>

#define KMS_JSONLEX_MAX_DEPTH 32

struct kms_jsonlex {
    const uint8_t *p;     /* the next byte */
    const uint8_t *end;
    const uint8_t *begin;
    const uint8_t *err_at;
    const char *reason;   /* the first syntax error; NULL while the input is JSON */
    unsigned depth;
    int oom;              /* a number's text could not be copied */
};

/* Records the first error (at, reason) and returns -1. */
int kms_jsonlex_fail(struct kms_jsonlex *d, const uint8_t *at, const char *reason);
int kms_jsonlex_is_digit(uint8_t c);
/* Skips space, tab, CR and LF. */
void kms_jsonlex_ws(struct kms_jsonlex *d);
/* expected, or why there is nothing to check (end of input, a NUL byte). */
const char *kms_jsonlex_missing(const struct kms_jsonlex *d, const char *expected);
/* A string at d->p (its quote), checked and skipped: its raw bytes are
 * [*start, *start + *len), *escaped when they hold a backslash. 0 or -1. */
int kms_jsonlex_string(struct kms_jsonlex *d, const uint8_t **start, size_t *len, unsigned *escaped);
/* Undoes the escapes of a checked string's raw bytes into dst (may be src);
 * the decoded length, or SIZE_MAX past cap. */
size_t kms_jsonlex_unescape(const uint8_t *src, size_t n, uint8_t *dst, size_t cap);
/* A number at d->p, checked and skipped; *is_int and *value say what it was. */
int kms_jsonlex_number(struct kms_jsonlex *d, int *is_int, long long *value);
/* One more container level, or -1 past KMS_JSONLEX_MAX_DEPTH. */
int kms_jsonlex_enter(struct kms_jsonlex *d);
/* After a member of a container closed by close ('}' or ']'): 1 when a
 * comma says another follows (consumed), 0 when close ends the container
 * (consumed, one level left), -1 (a syntax error) otherwise. */
int kms_jsonlex_next(struct kms_jsonlex *d, uint8_t close);
/* Any value at d->p, checked and skipped. */
int kms_jsonlex_skip(struct kms_jsonlex *d);
/* Line and column (characters, from 1) of the first error. */
void kms_jsonlex_locate(const struct kms_jsonlex *d, size_t *line, size_t *column);

#endif
