/* One error table for the whole project (STYLE.md: errors).
 *
 * Each entry: enum name, HTTP status, stable snake_case code, public message.
 * The public message is safe to show a client; the detail (library error
 * queues, file names, reasons) goes into a thread-local record that only the
 * log reads (kms_error_detail). Only the server layer turns a code into a
 * response. */
#ifndef KMS_COMMON_ERROR_H
#define KMS_COMMON_ERROR_H

#include <stddef.h>

#define KMS_MUST_CHECK __attribute__((warn_unused_result))
#define KMS_PRINTF(f, a) __attribute__((format(printf, f, a)))

#define KMS_ERROR_TABLE(X)                                                              \
    X(KMS_OK, 200, "ok", "OK")                                                          \
    /* client input */                                                                  \
    X(KMS_ERR_BAD_REQUEST, 400, "bad_request", "The request is malformed.")             \
    X(KMS_ERR_BAD_JSON, 400, "malformed_json", "The request body is not valid JSON.")  \
    X(KMS_ERR_INVALID_FIELD, 400, "invalid_field",                                      \
      "A field of the request is missing, unknown or has an invalid value.")            \
    X(KMS_ERR_UNWRAP, 400, "unwrap_failed",                                             \
      "The wrapped key could not be unwrapped.")                                        \
    X(KMS_ERR_UNAUTHENTICATED, 401, "unauthenticated",                                  \
      "A valid client certificate known to this server is required.")                   \
    X(KMS_ERR_FORBIDDEN, 403, "forbidden", "The client's role may not do this.")       \
    X(KMS_ERR_NOT_FOUND, 404, "not_found", "No such resource.")                         \
    X(KMS_ERR_KEY_NOT_FOUND, 404, "key_not_found", "The named master key does not exist.") \
    X(KMS_ERR_METHOD, 405, "method_not_allowed", "Method not allowed for this resource.") \
    X(KMS_ERR_CONFLICT, 409, "conflict", "The resource was changed by someone else meanwhile.") \
    X(KMS_ERR_TOO_LARGE, 413, "body_too_large", "The request body is too large.")       \
    X(KMS_ERR_URI_TOO_LONG, 414, "uri_too_long", "The request's path is too long.")     \
    X(KMS_ERR_HEADERS_TOO_LARGE, 431, "headers_too_large",                              \
      "The request's header fields are too large.")                                     \
    X(KMS_ERR_MEDIA_TYPE, 415, "unsupported_media_type",                                \
      "The request body must be application/json.")                                     \
    X(KMS_ERR_RATE_LIMITED, 429, "rate_limited", "Too many requests.")                  \
    /* server side */                                                                   \
    X(KMS_ERR_INTERNAL, 500, "internal_error", "Internal error.")                       \
    X(KMS_ERR_NO_MEMORY, 500, "internal_error", "Internal error.")                      \
    X(KMS_ERR_CRYPTO, 500, "internal_error", "Internal error.")                         \
    X(KMS_ERR_BACKEND, 502, "backend_error", "The key backend answered with an error.") \
    X(KMS_ERR_BACKEND_UNAVAILABLE, 503, "backend_unavailable",                          \
      "The key backend is unreachable.")                                                \
    X(KMS_ERR_NOT_READY, 503, "not_ready", "The server is not ready.")                  \
    X(KMS_ERR_AUDIT_UNAVAILABLE, 503, "audit_unavailable",                              \
      "The request cannot be audited now; nothing was done.")                           \
    X(KMS_ERR_BACKEND_TIMEOUT, 504, "backend_timeout", "The key backend timed out.")    \
    /* local: files, keystores, configuration (500 if they ever reach HTTP) */          \
    X(KMS_ERR_IO, 500, "io_error", "A file could not be read or written.")              \
    X(KMS_ERR_MALFORMED, 500, "malformed", "Malformed or truncated data.")              \
    X(KMS_ERR_KEYSTORE_PASSWORD, 500, "keystore_password",                              \
      "The keystore password is wrong.")                                                \
    X(KMS_ERR_KEYSTORE_CORRUPT, 500, "keystore_corrupt",                                \
      "The keystore is corrupted or truncated.")                                        \
    X(KMS_ERR_KEYSTORE_FORMAT, 500, "keystore_format",                                  \
      "The keystore format is not recognised.")                                         \
    X(KMS_ERR_ALIAS_NOT_FOUND, 500, "alias_not_found", "No keystore entry with that alias.") \
    X(KMS_ERR_CONFIG, 500, "config_invalid", "The configuration is invalid.")

typedef enum kms_rc {
#define KMS_ERR_ENUM(name, status, code, msg) name,
    KMS_ERROR_TABLE(KMS_ERR_ENUM)
#undef KMS_ERR_ENUM
    KMS_ERR_COUNT
} kms_rc;

/* HTTP status, stable code and public message of rc. Never NULL. */
int kms_error_status(kms_rc rc);
const char *kms_error_code(kms_rc rc);
const char *kms_error_message(kms_rc rc);
/* The enum name, e.g. "KMS_ERR_UNWRAP", for logs and test messages. */
const char *kms_error_name(kms_rc rc);

/* Thread-local detail for the log: the last failure's explanation. Setting it
 * never fails (truncates). Must never contain key material or passwords. */
void kms_error_set_detail(const char *fmt, ...) KMS_PRINTF(1, 2);
/* Appends the OpenSSL error queue (and clears it) to the detail. */
void kms_error_add_openssl(void);
const char *kms_error_detail(void);
void kms_error_clear(void);

/* Fail with rc, recording a detail. Returns rc so callers can `return kms_fail(...)`. */
kms_rc kms_fail(kms_rc rc, const char *fmt, ...) KMS_PRINTF(2, 3);

/* Guard macros keep the happy path straight (s2n's POSIX_GUARD). */
#define KMS_GUARD(expr)                \
    do {                               \
        kms_rc kms_guard_rc_ = (expr); \
        if (kms_guard_rc_ != KMS_OK)   \
            return kms_guard_rc_;      \
    } while (0)

#define KMS_ENSURE(cond, rc)  \
    do {                      \
        if (!(cond))          \
            return (rc);      \
    } while (0)

#define KMS_ARRAY_LEN(a) (sizeof(a) / sizeof((a)[0]))

#endif
