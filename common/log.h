/* Application log: one JSON object per line on stderr (STYLE.md: config and
 * logs). Fixed keys ts, level, event, req_id, then string fields. A failed
 * write never fails the caller. Never pass key material or passwords. */
#ifndef KMS_COMMON_LOG_H
#define KMS_COMMON_LOG_H

#include <stdio.h>

#include "common/error.h"

enum kms_log_level { KMS_LOG_DEBUG, KMS_LOG_INFO, KMS_LOG_WARN, KMS_LOG_ERROR };

/* Parses "debug"/"info"/"warn"/"error"; returns -1 when unknown. */
int kms_log_level_parse(const char *s);
void kms_log_set_level(enum kms_log_level lvl);
/* Where log lines go (default stderr); the stream is borrowed. */
void kms_log_set_stream(FILE *f);

/* kms_log(level, event, req_id_or_NULL, "key1", "value1", ..., NULL).
 * Values are JSON-escaped strings; a NULL value prints as null. */
void kms_log(enum kms_log_level lvl, const char *event, const char *req_id, ...) __attribute__((sentinel));

/* kms_logf: one "msg" field built with printf formatting. */
void kms_logf(enum kms_log_level lvl, const char *event, const char *req_id, const char *fmt, ...)
    KMS_PRINTF(4, 5);

/* JSON string escaping into out (always NUL-terminated, truncated to cap). */
void kms_json_escape(const char *in, char *out, size_t cap);
/* The same for in[0..len): stops before a character whose escape does not
 * fit, never inside one, and returns how many bytes of in it consumed (at
 * least one when cap >= 7 and len > 0), so a long value can be escaped in
 * pieces. */
size_t kms_json_escape_n(const char *in, size_t len, char *out, size_t cap);
/* RFC 3339 UTC time with milliseconds into out (cap >= 32). */
void kms_log_timestamp(char *out, size_t cap);

#endif
