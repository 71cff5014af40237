/* Java .properties syntax (java.util.Properties.load): '#' and '!' comments,
 * "key=value", "key: value", "key value", backslash line continuations
 * (leading whitespace of the next line dropped), escapes \t \n \r \f \\ \uXXXX
 * (encoded as UTF-8), '\' before any other char yields that char, escaped
 * separators in keys. Input bounded: 1 MiB, 4096 entries, 64 KiB per line.
 * Later duplicates override earlier ones (as Java does) and are reported. */
#ifndef KMS_COMMON_PROPERTIES_H
#define KMS_COMMON_PROPERTIES_H

#include <stddef.h>

#include "common/error.h"

struct kms_props;

/* Parses text[0..len). name is used in details ("kms.properties:12: ...").
 * KMS_ERR_MALFORMED for a bad escape (\u with non-hex, \u0000), embedded NUL,
 * invalid UTF-8 from \u surrogates, or limits exceeded. Caller owns *out. */
kms_rc kms_props_parse(const char *text, size_t len, const char *name, struct kms_props **out) KMS_MUST_CHECK;
/* Reads and parses a file; KMS_ERR_IO when unreadable. */
kms_rc kms_props_load(const char *path, struct kms_props **out) KMS_MUST_CHECK;
void kms_props_free(struct kms_props **p);

size_t kms_props_count(const struct kms_props *p);
/* i-th distinct key in first-seen order, its value and the line it was last set on. */
const char *kms_props_key(const struct kms_props *p, size_t i);
const char *kms_props_value(const struct kms_props *p, size_t i);
unsigned kms_props_line(const struct kms_props *p, size_t i);
/* Line the i-th key was first set on: differs from kms_props_line when a later
 * duplicate overrode it (so callers can report duplicates). 0 when i is out of range. */
unsigned kms_props_first_line(const struct kms_props *p, size_t i);
/* Value for key (exact, case-sensitive as Java), or NULL. */
const char *kms_props_get(const struct kms_props *p, const char *key);

#endif
