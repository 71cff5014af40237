/* libFuzzer target for the wrapped-key parser (kms/wrapped.h, SPEC §3).
 *
 *   clang -g -O1 -fsanitize=fuzzer,address,undefined -I. tests/fuzz/fuzz_wrapped.c \
 *       kms/wrapped.c kms/hierarchy.c kms/cache.c common/base64.c common/buf.c common/cursor.c \
 *       common/error.c common/secret.c -lcrypto -lpthread -o fuzz_wrapped
 *   ./fuzz_wrapped tests/fuzz/corpus/wrapped
 *
 * An input starting with "kms:" is parsed as the text form; any other input
 * is taken as a binary blob and parsed as "kms:v1:" + base64(input), so the
 * fuzzer reaches the binary parser without having to produce base64.
 *
 * Checks beyond "no crash": a failure is KMS_ERR_UNWRAP (or NO_MEMORY) with
 * no output; a success is canonical: re-encoding its header and payload gives
 * back exactly the same blob and text, its pointers lie inside its blob, and
 * describe agrees with parse. */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "common/base64.h"
#include "common/buf.h"
#include "kms/wrapped.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static char *as_text(const uint8_t *data, size_t size)
{
    char *s;
    if (size >= 4 && memcmp(data, "kms:", 4) == 0) {
        s = malloc(size + 1);
        if (s == NULL)
            abort();
        memcpy(s, data, size);
        s[size] = '\0';
        return s;
    }
    size_t cap = 7 + kms_b64_encoded_len(size) + 1;
    s = malloc(cap);
    if (s == NULL)
        abort();
    memcpy(s, "kms:v1:", 7);
    if (kms_b64_encode(data, size, s + 7, cap - 7) != KMS_OK)
        abort();
    return s;
}

static int inside(const struct kms_wrapped *w, const uint8_t *p, size_t n)
{
    return p >= w->blob && n <= w->blob_len && (size_t)(p - w->blob) <= w->blob_len - n;
}

static void check(const struct kms_wrapped *w, const char *text)
{
    if (w->header_len == 0 || w->header_len > w->blob_len || !inside(w, w->ct, w->ct_len))
        abort();
    if ((w->nonce == NULL) != (w->tag == NULL) || (w->nonce == NULL) != (w->hdr.wrapper != KMS_WRAPPER_PARENT))
        abort();
    if (w->nonce != NULL && (!inside(w, w->nonce, KMS_GCM_NONCE_LEN) || !inside(w, w->tag, KMS_GCM_TAG_LEN)))
        abort();

    struct kms_buf b;
    char *again = NULL;
    kms_buf_init(&b, KMS_WRAPPED_BLOB_MAX);
    if (kms_wrapped_header_encode(&w->hdr, &b) != KMS_OK || b.len != w->header_len ||
        memcmp(b.data, w->blob, b.len) != 0)
        abort();
    kms_rc rc = w->nonce != NULL ? kms_wrapped_append_parent_payload(&b, w->nonce, w->ct, w->ct_len, w->tag)
                                 : kms_wrapped_append_master_payload(&b, w->ct, w->ct_len);
    if (rc != KMS_OK || b.len != w->blob_len || memcmp(b.data, w->blob, b.len) != 0)
        abort();
    if (kms_wrapped_to_text(b.data, b.len, &again) != KMS_OK || strcmp(again, text) != 0)
        abort();
    free(again);
    kms_buf_free(&b);

    struct kms_wrapped_info info;
    if (kms_wrapped_describe(text, &info) != KMS_OK || strcmp(info.site_id, w->hdr.site_id) != 0 ||
        strcmp(info.master_name, w->hdr.master.name) != 0 || info.master_version != w->hdr.master.version ||
        strcmp(info.level, kms_key_level_name(w->hdr.level)) != 0)
        abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size > 3 * KMS_WRAPPED_TEXT_MAX)
        return 0;
    char *text = as_text(data, size);
    struct kms_wrapped *w = NULL;
    kms_rc rc = kms_wrapped_parse(text, &w);
    if (rc == KMS_OK) {
        check(w, text);
        kms_wrapped_free(&w);
    } else if (w != NULL || (rc != KMS_ERR_UNWRAP && rc != KMS_ERR_NO_MEMORY)) {
        abort();
    } else {
        struct kms_wrapped_info info;
        if (kms_wrapped_describe(text, &info) == KMS_OK)
            abort();
    }
    free(text);
    return 0;
}
