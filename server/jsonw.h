/* A small JSON writer into a bounded buffer that is wiped when freed.
 *
 * Every response is written with it, so replies carrying key material never
 * pass through json_t (STYLE.md: key material) and are wiped after sending.
 * Errors are sticky: after the first failure every call is a no-op and
 * kms_jsonw_finish reports it. */
#ifndef KMS_SERVER_JSONW_H
#define KMS_SERVER_JSONW_H

#include <stddef.h>
#include <stdint.h>

#include "common/buf.h"
#include "common/error.h"

#define KMS_JSONW_DEPTH 8

struct kms_jsonw {
    struct kms_buf buf;
    kms_rc rc;
    int depth;
    int need_comma[KMS_JSONW_DEPTH];
};

void kms_jsonw_init(struct kms_jsonw *w, size_t max);
void kms_jsonw_obj_begin(struct kms_jsonw *w);
void kms_jsonw_obj_end(struct kms_jsonw *w);
void kms_jsonw_arr_begin(struct kms_jsonw *w);
void kms_jsonw_arr_end(struct kms_jsonw *w);
/* Object member name; the next value call writes its value. */
void kms_jsonw_key(struct kms_jsonw *w, const char *key);
void kms_jsonw_str(struct kms_jsonw *w, const char *s);
void kms_jsonw_int(struct kms_jsonw *w, long long v);
void kms_jsonw_bool(struct kms_jsonw *w, int v);
void kms_jsonw_null(struct kms_jsonw *w);
/* Writes bytes as a base64 string value (for key material). */
void kms_jsonw_b64(struct kms_jsonw *w, const uint8_t *p, size_t len);
/* Convenience: key + string value. */
void kms_jsonw_kv(struct kms_jsonw *w, const char *key, const char *s);
/* Result of all the writes so far. */
kms_rc kms_jsonw_finish(struct kms_jsonw *w) KMS_MUST_CHECK;
/* Wipes and frees. */
void kms_jsonw_free(struct kms_jsonw *w);

#endif
