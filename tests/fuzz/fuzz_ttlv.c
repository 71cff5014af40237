/* libFuzzer target for the KMIP TTLV decoder and the response parser
 * (hsm/kmip/ttlv.h, hsm/kmip/kmip_msg.h): the bytes a KMIP server sends.
 *
 *   clang -g -O1 -fsanitize=fuzzer,address,undefined -I. tests/fuzz/fuzz_ttlv.c \
 *       hsm/kmip/ttlv.c hsm/kmip/kmip_msg.c common/buf.c common/cursor.c common/error.c \
 *       common/secret.c -lcrypto -o fuzz_ttlv
 *   ./fuzz_ttlv tests/fuzz/corpus/ttlv
 *
 * The seed corpus is the 128 PyKMIP captures of shared/reference/kmip-vectors
 * in binary form (one file per .hex).
 *
 * Checks beyond "no crash": a failure is KMS_ERR_MALFORMED or KMS_ERR_TOO_LARGE
 * with no document; a success is canonical (encoding the decoded tree again
 * gives back exactly the input), every item lies inside the input, the framing
 * agrees with the decoder, and the response parser and every payload reader
 * either succeed or fail with KMS_ERR_BACKEND. */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "common/buf.h"
#include "hsm/kmip/kmip_msg.h"
#include "hsm/kmip/ttlv.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static const uint8_t *in_lo, *in_hi;

static void walk(struct kms_ttlv_enc *e, const struct kms_ttlv *n, unsigned depth)
{
    if (depth > KMS_TTLV_MAX_DEPTH || n->value < in_lo || n->value + n->len > in_hi)
        abort();
    kms_rc rc;
    switch (n->type) {
    case KMS_TTLV_STRUCTURE:
        if (kms_ttlv_begin(e, n->tag) != KMS_OK)
            abort();
        for (const struct kms_ttlv *c = n->child; c != NULL; c = c->next)
            walk(e, c, depth + 1);
        rc = kms_ttlv_end(e);
        break;
    case KMS_TTLV_INTEGER:
        rc = kms_ttlv_put_int(e, n->tag, (int32_t)n->num);
        break;
    case KMS_TTLV_LONG_INTEGER:
        rc = kms_ttlv_put_long(e, n->tag, n->num);
        break;
    case KMS_TTLV_BIG_INTEGER:
        rc = kms_ttlv_put_bigint(e, n->tag, n->value, n->len);
        break;
    case KMS_TTLV_ENUMERATION:
        rc = kms_ttlv_put_enum(e, n->tag, (uint32_t)n->num);
        break;
    case KMS_TTLV_BOOLEAN:
        rc = kms_ttlv_put_bool(e, n->tag, (int)n->num);
        break;
    case KMS_TTLV_TEXT_STRING:
        rc = kms_ttlv_put_text(e, n->tag, (const char *)n->value, n->len);
        break;
    case KMS_TTLV_BYTE_STRING:
        rc = kms_ttlv_put_bytes(e, n->tag, n->value, n->len);
        break;
    case KMS_TTLV_DATE_TIME:
        rc = kms_ttlv_put_datetime(e, n->tag, n->num);
        break;
    case KMS_TTLV_INTERVAL:
        rc = kms_ttlv_put_interval(e, n->tag, (uint32_t)n->num);
        break;
    case KMS_TTLV_DATE_TIME_EXTENDED:
        rc = kms_ttlv_put_datetime_ext(e, n->tag, n->num);
        break;
    default:
        abort();
    }
    if (rc != KMS_OK)
        abort();
}

static void payloads(const struct kms_ttlv *pl)
{
    struct kms_kmip_version v[8];
    char uid[KMS_KMIP_UID_MAX + 1], uids[2][KMS_KMIP_UID_MAX + 1];
    const uint8_t *d, *t;
    size_t n, dl, tl;
    static struct kms_kmip_attributes a;
    static struct kms_kmip_server_info q;
    kms_rc rcs[] = {
        kms_kmip_parse_versions(pl, v, 8, &n),
        kms_kmip_parse_uid(pl, uid),
        kms_kmip_parse_locate(pl, uids, 2, &n),
        kms_kmip_parse_encrypt(pl, &d, &dl, &t, &tl),
        kms_kmip_parse_decrypt(pl, &d, &dl),
        kms_kmip_parse_attributes(pl, &a),
        kms_kmip_parse_query(pl, &q),
    };
    for (size_t i = 0; i < sizeof(rcs) / sizeof(rcs[0]); i++)
        if (rcs[i] != KMS_OK && rcs[i] != KMS_ERR_BACKEND)
            abort();
    if (rcs[1] == KMS_OK && (uid[0] == '\0' || strlen(uid) > KMS_KMIP_UID_MAX))
        abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct kms_ttlv_doc *doc = NULL;
    kms_rc rc = kms_ttlv_decode(data, size, &doc);
    if (rc != KMS_OK) {
        if (doc != NULL || (rc != KMS_ERR_MALFORMED && rc != KMS_ERR_TOO_LARGE && rc != KMS_ERR_NO_MEMORY))
            abort();
        return 0;
    }
    in_lo = data;
    in_hi = data + size;
    const struct kms_ttlv *root = kms_ttlv_doc_root(doc);
    size_t total = 0;
    if (kms_ttlv_doc_count(doc) > size / 8 || root->type != KMS_TTLV_STRUCTURE ||
        ((root->tag >> 16) == 0x42 &&
         (kms_ttlv_frame_len(data, KMS_TTLV_MAX_MESSAGE, &total) != KMS_OK || total != size)))
        abort();

    struct kms_buf b;
    struct kms_ttlv_enc e;
    kms_buf_init(&b, KMS_TTLV_MAX_MESSAGE);
    kms_ttlv_enc_init(&e, &b);
    walk(&e, root, 1);
    if (kms_ttlv_enc_finish(&e) != KMS_OK || b.len != size || memcmp(b.data, data, size) != 0)
        abort();
    kms_buf_free(&b);

    struct kms_kmip_response r;
    rc = kms_kmip_response_parse(data, size, &r);
    if (rc == KMS_OK) {
        for (size_t i = 0; i < r.n_items; i++) {
            const struct kms_ttlv *pl = NULL;
            (void)kms_kmip_result_rc(&r.items[i], r.items[i].operation);
            if (r.items[i].payload != NULL)
                payloads(r.items[i].payload);
            if (kms_kmip_response_expect(&r, r.items[i].operation, &pl) == KMS_OK && pl == NULL)
                abort();
        }
        kms_kmip_response_clear(&r);
    } else if (rc != KMS_ERR_BACKEND && rc != KMS_ERR_NO_MEMORY) {
        abort();
    }
    payloads(root);
    kms_ttlv_doc_free(&doc);
    return 0;
}
