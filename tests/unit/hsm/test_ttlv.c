/* hsm/kmip/ttlv.c: the KMIP TTLV codec. Every captured PyKMIP message in
 * shared/reference/kmip-vectors decodes and re-encodes byte for byte; every
 * way of breaking the encoding is refused without a crash. */
#include "hsm/kmip/ttlv.h"

#include <criterion/criterion.h>
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- helpers ----------------------------------------------------------- */

static char vec_dir[1024];

static const char *vectors(void)
{
    const char *src = getenv("KMS_SOURCE_DIR");
    cr_assert_not_null(src, "KMS_SOURCE_DIR is not set");
    snprintf(vec_dir, sizeof(vec_dir), "%s/../shared/reference/kmip-vectors", src);
    return vec_dir;
}

static int hexval(int c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

/* Reads a .hex file (one line of hex) into a new buffer. */
static uint8_t *load_hex(const char *path, size_t *len)
{
    FILE *f = fopen(path, "r");
    cr_assert_not_null(f, "cannot open %s", path);
    uint8_t *out = malloc(1 << 20);
    cr_assert_not_null(out);
    size_t n = 0;
    int hi = -1, c;
    while ((c = fgetc(f)) != EOF) {
        if (c == '\n' || c == '\r' || c == ' ')
            continue;
        int v = hexval(c);
        cr_assert_geq(v, 0, "%s: not hex", path);
        if (hi < 0) {
            hi = v;
        } else {
            out[n++] = (uint8_t)(hi << 4 | v);
            hi = -1;
        }
    }
    fclose(f);
    cr_assert_eq(hi, -1, "%s: odd number of hex digits", path);
    *len = n;
    return out;
}

static uint8_t *load_vector(const char *name, size_t *len)
{
    char path[1200];
    snprintf(path, sizeof(path), "%s/%s", vectors(), name);
    return load_hex(path, len);
}

static size_t hex_to(const char *hex, uint8_t *out)
{
    size_t n = strlen(hex) / 2;
    for (size_t i = 0; i < n; i++)
        out[i] = (uint8_t)(hexval(hex[2 * i]) << 4 | hexval(hex[2 * i + 1]));
    return n;
}

/* Encodes the decoded tree n again, item by item, through the encoder. */
static void reencode(struct kms_ttlv_enc *e, const struct kms_ttlv *n)
{
    switch (n->type) {
    case KMS_TTLV_STRUCTURE:
        cr_assert_eq(kms_ttlv_begin(e, n->tag), KMS_OK);
        for (const struct kms_ttlv *c = n->child; c != NULL; c = c->next)
            reencode(e, c);
        cr_assert_eq(kms_ttlv_end(e), KMS_OK);
        break;
    case KMS_TTLV_INTEGER:
        cr_assert_eq(kms_ttlv_put_int(e, n->tag, (int32_t)n->num), KMS_OK);
        break;
    case KMS_TTLV_LONG_INTEGER:
        cr_assert_eq(kms_ttlv_put_long(e, n->tag, n->num), KMS_OK);
        break;
    case KMS_TTLV_BIG_INTEGER:
        cr_assert_eq(kms_ttlv_put_bigint(e, n->tag, n->value, n->len), KMS_OK);
        break;
    case KMS_TTLV_ENUMERATION:
        cr_assert_eq(kms_ttlv_put_enum(e, n->tag, (uint32_t)n->num), KMS_OK);
        break;
    case KMS_TTLV_BOOLEAN:
        cr_assert_eq(kms_ttlv_put_bool(e, n->tag, (int)n->num), KMS_OK);
        break;
    case KMS_TTLV_TEXT_STRING:
        cr_assert_eq(kms_ttlv_put_text(e, n->tag, (const char *)n->value, n->len), KMS_OK);
        break;
    case KMS_TTLV_BYTE_STRING:
        cr_assert_eq(kms_ttlv_put_bytes(e, n->tag, n->value, n->len), KMS_OK);
        break;
    case KMS_TTLV_DATE_TIME:
        cr_assert_eq(kms_ttlv_put_datetime(e, n->tag, n->num), KMS_OK);
        break;
    case KMS_TTLV_INTERVAL:
        cr_assert_eq(kms_ttlv_put_interval(e, n->tag, (uint32_t)n->num), KMS_OK);
        break;
    case KMS_TTLV_DATE_TIME_EXTENDED:
        cr_assert_eq(kms_ttlv_put_datetime_ext(e, n->tag, n->num), KMS_OK);
        break;
    default:
        cr_assert_fail("unknown type %u", n->type);
    }
}

static kms_rc decode(const uint8_t *msg, size_t len)
{
    struct kms_ttlv_doc *d = NULL;
    kms_rc rc = kms_ttlv_decode(msg, len, &d);
    if (rc == KMS_OK)
        cr_assert_not_null(d);
    else
        cr_assert_null(d);
    kms_ttlv_doc_free(&d);
    cr_assert_null(d);
    return rc;
}

/* ---- the captured vectors --------------------------------------------- */

/* All 128 captured messages decode (the one deliberately malformed request,
 * 58, is refused), and encoding the decoded tree gives back the same bytes. */
Test(ttlv, every_vector_decodes_and_reencodes_byte_for_byte, .timeout = 60)
{
    DIR *d = opendir(vectors());
    cr_assert_not_null(d, "no vector directory %s", vec_dir);
    struct dirent *ent;
    size_t files = 0, decoded = 0;
    while ((ent = readdir(d)) != NULL) {
        size_t nl = strlen(ent->d_name);
        if (nl < 5 || strcmp(ent->d_name + nl - 4, ".hex") != 0)
            continue;
        files++;
        size_t len;
        uint8_t *msg = load_vector(ent->d_name, &len);
        struct kms_ttlv_doc *doc = NULL;
        kms_rc rc = kms_ttlv_decode(msg, len, &doc);
        if (strcmp(ent->d_name, "58_err_malformed_header.req.hex") == 0) {
            cr_expect_eq(rc, KMS_ERR_MALFORMED, "%s: %s", ent->d_name, kms_error_name(rc));
            free(msg);
            continue;
        }
        cr_assert_eq(rc, KMS_OK, "%s: %s", ent->d_name, kms_error_detail());
        const struct kms_ttlv *root = kms_ttlv_doc_root(doc);
        int is_req = strstr(ent->d_name, ".req.") != NULL;
        cr_expect_eq(root->tag, is_req ? 0x420078u : 0x42007Bu, "%s", ent->d_name);
        cr_expect_eq(root->type, KMS_TTLV_STRUCTURE);
        cr_expect_eq((size_t)root->len + 8, len);
        cr_expect_leq(kms_ttlv_doc_count(doc), len / 8);

        struct kms_buf b;
        struct kms_ttlv_enc e;
        kms_buf_init(&b, KMS_TTLV_MAX_MESSAGE);
        kms_ttlv_enc_init(&e, &b);
        reencode(&e, root);
        cr_assert_eq(kms_ttlv_enc_finish(&e), KMS_OK);
        cr_expect_eq(b.len, len, "%s: re-encoded %zu bytes, captured %zu", ent->d_name, b.len, len);
        cr_expect(b.len == len && memcmp(b.data, msg, len) == 0, "%s: re-encoding differs", ent->d_name);

        size_t total = 0;
        cr_expect_eq(kms_ttlv_frame_len(msg, KMS_TTLV_MAX_MESSAGE, &total), KMS_OK);
        cr_expect_eq(total, len);
        kms_buf_free(&b);
        kms_ttlv_doc_free(&doc);
        free(msg);
        decoded++;
    }
    closedir(d);
    cr_assert_eq(files, 128, "expected 64 request/response pairs, found %zu files", files);
    cr_assert_eq(decoded, 127);
}

/* Field values come out right: vector 13's header and GCM fields. */
Test(ttlv, decoded_values_of_the_gcm_known_answer_request, .timeout = 60)
{
    size_t len;
    uint8_t *msg = load_vector("13_kat_encrypt_gcm_v14.req.hex", &len);
    struct kms_ttlv_doc *doc = NULL;
    cr_assert_eq(kms_ttlv_decode(msg, len, &doc), KMS_OK);
    const struct kms_ttlv *root = kms_ttlv_doc_root(doc);
    const struct kms_ttlv *hdr = kms_ttlv_first(root, 0x420077);
    const struct kms_ttlv *pv = kms_ttlv_first(hdr, 0x420069);
    cr_assert_eq(kms_ttlv_first(pv, 0x42006A)->num, 1);
    cr_assert_eq(kms_ttlv_first(pv, 0x42006B)->num, 4);
    const struct kms_ttlv *bi = kms_ttlv_first(root, 0x42000F);
    cr_assert_eq(kms_ttlv_first(bi, 0x42005C)->num, 0x1F);
    const struct kms_ttlv *pl = kms_ttlv_first(bi, 0x420079);
    const struct kms_ttlv *uid = kms_ttlv_first(pl, 0x420094);
    cr_assert_eq(uid->type, KMS_TTLV_TEXT_STRING);
    cr_assert_eq(uid->len, 1);
    cr_assert_eq(uid->value[0], '3');
    const struct kms_ttlv *nonce = kms_ttlv_first(pl, 0x42003D);
    cr_assert_eq(nonce->len, 12);
    cr_assert_eq(nonce->value[0], 0xc0);
    cr_assert_eq(nonce->value[11], 0xcb);
    const struct kms_ttlv *aad = kms_ttlv_first(pl, 0x4200FE);
    cr_assert_eq(aad->len, 10);
    cr_assert_eq(memcmp(aad->value, "site-id:42", 10), 0);
    const struct kms_ttlv *cp = kms_ttlv_first(pl, 0x42002B);
    cr_assert_eq(kms_ttlv_count(cp, 0x420011), 1);
    cr_assert_eq(kms_ttlv_first(cp, 0x4200CE)->num, 16);
    cr_assert_null(kms_ttlv_first(pl, 0x4200FF));
    cr_assert_null(kms_ttlv_first(uid, 0x420094), "a Text String has no children");
    kms_ttlv_doc_free(&doc);
    free(msg);
}

/* ---- negatives --------------------------------------------------------- */

/* Every proper prefix of real messages is refused (and never read past). */
Test(ttlv, truncated_at_every_byte, .timeout = 60)
{
    static const char *const names[] = {"13_kat_encrypt_gcm_v14.resp.hex", "08_get_attributes_all.resp.hex",
                                        "02_query.req.hex", "50_err_protocol_1_5.resp.hex"};
    for (size_t v = 0; v < KMS_ARRAY_LEN(names); v++) {
        size_t len;
        uint8_t *msg = load_vector(names[v], &len);
        for (size_t cut = 0; cut < len; cut++) {
            /* why: a heap copy of exactly cut bytes lets ASan catch any over-read */
            uint8_t *p = malloc(cut ? cut : 1);
            memcpy(p, msg, cut);
            kms_rc rc = decode(p, cut);
            cr_assert_eq(rc, KMS_ERR_MALFORMED, "%s cut at %zu: %s", names[v], cut, kms_error_name(rc));
            free(p);
        }
        cr_assert_eq(decode(msg, len), KMS_OK);
        free(msg);
    }
}

Test(ttlv, trailing_bytes_are_refused, .timeout = 60)
{
    size_t len;
    uint8_t *msg = load_vector("04_activate.req.hex", &len);
    uint8_t *p = malloc(len + 8);
    memcpy(p, msg, len);
    memset(p + len, 0, 8);
    cr_assert_eq(decode(p, len + 8), KMS_ERR_MALFORMED);
    cr_assert_eq(decode(p, len + 1), KMS_ERR_MALFORMED);
    free(p);
    free(msg);
}

/* Every padding byte of vector 13's request, set non-zero, is refused. */
Test(ttlv, non_zero_padding_is_refused, .timeout = 60)
{
    size_t len;
    uint8_t *msg = load_vector("13_kat_encrypt_gcm_v14.req.hex", &len);
    /* UniqueIdentifier '3' at 0x68: value at 0x70, padding 0x71..0x77;
     * IVCounterNonce at 0xd8: value 0xe0..0xeb, padding 0xec..0xef;
     * AAD at 0xf0: value 0xf8..0x101, padding 0x102..0x107;
     * Operation at 0x50: value 0x58..0x5b, padding 0x5c..0x5f */
    static const size_t pads[][2] = {{0x71, 0x77}, {0xec, 0xef}, {0x102, 0x107}, {0x5c, 0x5f}};
    for (size_t i = 0; i < KMS_ARRAY_LEN(pads); i++) {
        for (size_t at = pads[i][0]; at <= pads[i][1]; at++) {
            cr_assert_eq(msg[at], 0, "offset 0x%zx is not padding", at);
            msg[at] = 0x01;
            cr_assert_eq(decode(msg, len), KMS_ERR_MALFORMED, "padding byte 0x%zx", at);
            msg[at] = 0;
        }
    }
    cr_assert_eq(decode(msg, len), KMS_OK);
    free(msg);
}

/* A child longer than its structure, a structure longer than the message,
 * a structure length that leaves half an item. */
Test(ttlv, lengths_that_overrun_are_refused, .timeout = 60)
{
    size_t len;
    uint8_t *msg = load_vector("04_activate.req.hex", &len);
    /* the message length (offset 4) */
    for (uint32_t delta = 1; delta <= 16; delta++) {
        uint8_t *p = malloc(len);
        memcpy(p, msg, len);
        uint32_t l = (uint32_t)(len - 8 + delta);
        p[4] = (uint8_t)(l >> 24), p[5] = (uint8_t)(l >> 16), p[6] = (uint8_t)(l >> 8), p[7] = (uint8_t)l;
        cr_assert_eq(decode(p, len), KMS_ERR_MALFORMED, "message length +%u", delta);
        l = (uint32_t)(len - 8 - delta);
        p[4] = (uint8_t)(l >> 24), p[5] = (uint8_t)(l >> 16), p[6] = (uint8_t)(l >> 8), p[7] = (uint8_t)l;
        cr_assert_eq(decode(p, len), KMS_ERR_MALFORMED, "message length -%u", delta);
        free(p);
    }
    /* the UID text (offset 0x68, length at 0x6c) longer than its payload */
    msg[0x6f] = 0x20;
    cr_assert_eq(decode(msg, len), KMS_ERR_MALFORMED);
    msg[0x6f] = 0x01;
    /* a huge length */
    msg[0x6c] = 0xff;
    cr_assert_eq(decode(msg, len), KMS_ERR_MALFORMED);
    msg[0x6c] = 0x00;
    cr_assert_eq(decode(msg, len), KMS_OK);
    free(msg);
}

static void put_hdr(uint8_t *p, uint32_t tag, uint8_t type, uint32_t len)
{
    p[0] = (uint8_t)(tag >> 16), p[1] = (uint8_t)(tag >> 8), p[2] = (uint8_t)tag, p[3] = type;
    p[4] = (uint8_t)(len >> 24), p[5] = (uint8_t)(len >> 16), p[6] = (uint8_t)(len >> 8), p[7] = (uint8_t)len;
}

/* A one-item structure holding a single item of the given type and length. */
static kms_rc one_item(uint8_t type, uint32_t len, const uint8_t *value)
{
    uint8_t buf[64] = {0};
    size_t padded = (len + 7u) & ~7u;
    put_hdr(buf, 0x420078, KMS_TTLV_STRUCTURE, (uint32_t)(8 + padded));
    put_hdr(buf + 8, 0x420094, type, len);
    if (len)
        memcpy(buf + 16, value, len);
    return decode(buf, 16 + padded);
}

Test(ttlv, fixed_size_types_must_have_their_exact_length, .timeout = 60)
{
    static const struct {
        uint8_t type;
        uint32_t len;
    } ok[] = {{2, 4}, {3, 8}, {5, 4}, {6, 8}, {9, 8}, {10, 4}, {11, 8}};
    uint8_t zero[16] = {0};
    for (size_t i = 0; i < KMS_ARRAY_LEN(ok); i++) {
        cr_assert_eq(one_item(ok[i].type, ok[i].len, zero), KMS_OK, "type %u", ok[i].type);
        for (uint32_t l = 0; l <= 16; l++)
            if (l != ok[i].len)
                cr_assert_eq(one_item(ok[i].type, l, zero), KMS_ERR_MALFORMED, "type %u length %u", ok[i].type, l);
    }
}

Test(ttlv, unknown_types_and_tags_are_refused, .timeout = 60)
{
    uint8_t zero[8] = {0};
    cr_assert_eq(one_item(0x00, 4, zero), KMS_ERR_MALFORMED);
    cr_assert_eq(one_item(0x0C, 4, zero), KMS_ERR_MALFORMED);
    cr_assert_eq(one_item(0xFF, 4, zero), KMS_ERR_MALFORMED);
    uint8_t buf[24] = {0};
    static const uint32_t bad[] = {0x000000, 0x410000, 0x430001, 0x53FFFF, 0x550000, 0xFFFFFF};
    for (size_t i = 0; i < KMS_ARRAY_LEN(bad); i++) {
        put_hdr(buf, 0x420078, KMS_TTLV_STRUCTURE, 16);
        put_hdr(buf + 8, bad[i], KMS_TTLV_INTEGER, 4);
        cr_assert_eq(decode(buf, 24), KMS_ERR_MALFORMED, "tag 0x%06x", bad[i]);
    }
    put_hdr(buf + 8, 0x540001, KMS_TTLV_INTEGER, 4); /* an extension tag */
    cr_assert_eq(decode(buf, 24), KMS_OK);
    put_hdr(buf, 0x000078, KMS_TTLV_STRUCTURE, 16);
    cr_assert_eq(decode(buf, 24), KMS_ERR_MALFORMED, "message tag");
    put_hdr(buf, 0x420078, KMS_TTLV_BYTE_STRING, 16);
    cr_assert_eq(decode(buf, 24), KMS_ERR_MALFORMED, "a message that is not a Structure");
    put_hdr(buf, 0x420078, KMS_TTLV_INTEGER, 4);
    cr_assert_eq(decode(buf, 16), KMS_ERR_MALFORMED, "a message that is not a Structure");
}

Test(ttlv, boolean_big_integer_and_text_values_are_checked, .timeout = 60)
{
    uint8_t b[8] = {0, 0, 0, 0, 0, 0, 0, 1};
    cr_assert_eq(one_item(KMS_TTLV_BOOLEAN, 8, b), KMS_OK);
    b[7] = 2;
    cr_assert_eq(one_item(KMS_TTLV_BOOLEAN, 8, b), KMS_ERR_MALFORMED);
    b[7] = 1, b[0] = 0x80;
    cr_assert_eq(one_item(KMS_TTLV_BOOLEAN, 8, b), KMS_ERR_MALFORMED);

    uint8_t big[16] = {0xff};
    cr_assert_eq(one_item(KMS_TTLV_BIG_INTEGER, 8, big), KMS_OK);
    cr_assert_eq(one_item(KMS_TTLV_BIG_INTEGER, 16, big), KMS_OK);
    cr_assert_eq(one_item(KMS_TTLV_BIG_INTEGER, 0, big), KMS_ERR_MALFORMED);
    cr_assert_eq(one_item(KMS_TTLV_BIG_INTEGER, 5, big), KMS_ERR_MALFORMED);
    cr_assert_eq(one_item(KMS_TTLV_BIG_INTEGER, 12, big), KMS_ERR_MALFORMED);

    cr_assert_eq(one_item(KMS_TTLV_TEXT_STRING, 3, (const uint8_t *)"abc"), KMS_OK);
    cr_assert_eq(one_item(KMS_TTLV_TEXT_STRING, 0, (const uint8_t *)""), KMS_OK);
    cr_assert_eq(one_item(KMS_TTLV_TEXT_STRING, 4, (const uint8_t *)"\xc3\xa9t\xc3"), KMS_ERR_MALFORMED,
                 "cut multibyte");
    cr_assert_eq(one_item(KMS_TTLV_TEXT_STRING, 3, (const uint8_t *)"a\0b"), KMS_ERR_MALFORMED, "embedded NUL");
    cr_assert_eq(one_item(KMS_TTLV_TEXT_STRING, 2, (const uint8_t *)"\xc0\xaf"), KMS_ERR_MALFORMED, "overlong");
    cr_assert_eq(one_item(KMS_TTLV_TEXT_STRING, 3, (const uint8_t *)"\xed\xa0\x80"), KMS_ERR_MALFORMED, "surrogate");
    cr_assert_eq(one_item(KMS_TTLV_TEXT_STRING, 4, (const uint8_t *)"\xf4\x90\x80\x80"), KMS_ERR_MALFORMED,
                 "past U+10FFFF");
    cr_assert_eq(one_item(KMS_TTLV_TEXT_STRING, 1, (const uint8_t *)"\xff"), KMS_ERR_MALFORMED);
    cr_assert_eq(one_item(KMS_TTLV_TEXT_STRING, 4, (const uint8_t *)"\xf0\x9f\x94\x91"), KMS_OK, "U+1F511");
    cr_assert_eq(one_item(KMS_TTLV_BYTE_STRING, 3, (const uint8_t *)"a\0b"), KMS_OK, "bytes may hold NUL");
}

/* n nested structures (the message is the first), with consistent lengths. */
static uint8_t *nest(size_t n, size_t *len)
{
    uint8_t *p = calloc(n, 8);
    for (size_t i = 0; i < n; i++)
        put_hdr(p + 8 * i, 0x420078, KMS_TTLV_STRUCTURE, (uint32_t)(8 * (n - 1 - i)));
    *len = 8 * n;
    return p;
}

Test(ttlv, nesting_deeper_than_the_limit_is_refused, .timeout = 60)
{
    size_t len;
    uint8_t *p = nest(KMS_TTLV_MAX_DEPTH, &len);
    cr_assert_eq(decode(p, len), KMS_OK, "%s", kms_error_detail());
    free(p);
    p = nest(KMS_TTLV_MAX_DEPTH + 1, &len);
    cr_assert_eq(decode(p, len), KMS_ERR_MALFORMED);
    free(p);
    /* a depth bomb: 8191 levels in 64 KiB, refused without deep recursion */
    p = nest(KMS_TTLV_MAX_MESSAGE / 8 - 1, &len);
    cr_assert_eq(decode(p, len), KMS_ERR_MALFORMED);
    free(p);
}

Test(ttlv, messages_past_the_maximum_size_are_refused, .timeout = 60)
{
    size_t max = KMS_TTLV_MAX_MESSAGE;
    uint8_t *p = calloc(1, max + 8);
    /* exactly the maximum: one Byte String filling it */
    put_hdr(p, 0x420078, KMS_TTLV_STRUCTURE, (uint32_t)(max - 8));
    put_hdr(p + 8, 0x4200C2, KMS_TTLV_BYTE_STRING, (uint32_t)(max - 16));
    cr_assert_eq(decode(p, max), KMS_OK, "%s", kms_error_detail());
    put_hdr(p, 0x420078, KMS_TTLV_STRUCTURE, (uint32_t)max);
    put_hdr(p + 8, 0x4200C2, KMS_TTLV_BYTE_STRING, (uint32_t)(max - 8));
    cr_assert_eq(decode(p, max + 8), KMS_ERR_TOO_LARGE);

    size_t total = 1;
    cr_assert_eq(kms_ttlv_frame_len(p, KMS_TTLV_MAX_MESSAGE, &total), KMS_ERR_TOO_LARGE);
    cr_assert_eq(total, 0);
    put_hdr(p, 0x420078, KMS_TTLV_STRUCTURE, 0xFFFFFFF8u);
    cr_assert_eq(kms_ttlv_frame_len(p, KMS_TTLV_MAX_MESSAGE, &total), KMS_ERR_TOO_LARGE);
    put_hdr(p, 0x420078, KMS_TTLV_STRUCTURE, 1000);
    cr_assert_eq(kms_ttlv_frame_len(p, 512, &total), KMS_ERR_TOO_LARGE, "a caller's smaller maximum");
    cr_assert_eq(kms_ttlv_frame_len(p, KMS_TTLV_MAX_MESSAGE, &total), KMS_OK);
    cr_assert_eq(total, 1008);
    put_hdr(p, 0x420078, KMS_TTLV_INTEGER, 4);
    cr_assert_eq(kms_ttlv_frame_len(p, KMS_TTLV_MAX_MESSAGE, &total), KMS_ERR_MALFORMED, "not a structure");
    put_hdr(p, 0x540078, KMS_TTLV_STRUCTURE, 8);
    cr_assert_eq(kms_ttlv_frame_len(p, KMS_TTLV_MAX_MESSAGE, &total), KMS_ERR_MALFORMED, "extension tag");
    cr_assert_eq(decode(NULL, 0), KMS_ERR_MALFORMED);
    free(p);
}

/* ---- numbers ----------------------------------------------------------- */

Test(ttlv, numbers_keep_their_sign_and_width, .timeout = 60)
{
    uint8_t ff[8] = {0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xfe};
    uint8_t buf[24] = {0};
    struct kms_ttlv_doc *d = NULL;
    put_hdr(buf, 0x420078, KMS_TTLV_STRUCTURE, 16);
    static const struct {
        uint8_t type;
        uint32_t len;
        int64_t want;
    } cases[] = {
        {KMS_TTLV_INTEGER, 4, -1},
        {KMS_TTLV_ENUMERATION, 4, 0xffffffffLL},
        {KMS_TTLV_INTERVAL, 4, 0xffffffffLL},
        {KMS_TTLV_LONG_INTEGER, 8, -2},
        {KMS_TTLV_DATE_TIME, 8, -2},
        {KMS_TTLV_DATE_TIME_EXTENDED, 8, -2},
    };
    for (size_t i = 0; i < KMS_ARRAY_LEN(cases); i++) {
        memset(buf + 8, 0, 16);
        put_hdr(buf + 8, 0x42000D, cases[i].type, cases[i].len);
        memcpy(buf + 16, ff, cases[i].len);
        cr_assert_eq(kms_ttlv_decode(buf, 24, &d), KMS_OK, "%s", kms_error_detail());
        cr_assert_eq(kms_ttlv_doc_root(d)->child->num, cases[i].want, "type %u", cases[i].type);
        kms_ttlv_doc_free(&d);
    }
}

/* ---- lookups ----------------------------------------------------------- */

Test(ttlv, get_one_refuses_duplicates_and_wrong_types, .timeout = 60)
{
    struct kms_buf b;
    struct kms_ttlv_enc e;
    struct kms_ttlv_doc *d = NULL;
    const struct kms_ttlv *n = NULL;
    kms_buf_init(&b, 4096);
    kms_ttlv_enc_init(&e, &b);
    cr_assert_eq(kms_ttlv_begin(&e, 0x42007B), KMS_OK);
    cr_assert_eq(kms_ttlv_put_enum(&e, 0x42007F, 0), KMS_OK);
    cr_assert_eq(kms_ttlv_put_enum(&e, 0x42007E, 1), KMS_OK);
    cr_assert_eq(kms_ttlv_put_enum(&e, 0x42007E, 2), KMS_OK);
    cr_assert_eq(kms_ttlv_end(&e), KMS_OK);
    cr_assert_eq(kms_ttlv_decode(b.data, b.len, &d), KMS_OK);
    const struct kms_ttlv *root = kms_ttlv_doc_root(d);
    cr_assert_eq(kms_ttlv_get_one(root, 0x42007F, KMS_TTLV_ENUMERATION, &n), KMS_OK);
    cr_assert_not_null(n);
    cr_assert_eq(kms_ttlv_get_one(root, 0x42007F, KMS_TTLV_INTEGER, &n), KMS_ERR_MALFORMED, "wrong type");
    cr_assert_null(n);
    cr_assert_eq(kms_ttlv_get_one(root, 0x42007E, KMS_TTLV_ENUMERATION, &n), KMS_ERR_MALFORMED, "duplicate");
    cr_assert_eq(kms_ttlv_get_one(root, 0x42007D, KMS_TTLV_TEXT_STRING, &n), KMS_OK, "absent");
    cr_assert_null(n);
    cr_assert_eq(kms_ttlv_count(root, 0x42007E), 2);
    cr_assert_eq(kms_ttlv_next_same(kms_ttlv_first(root, 0x42007E))->num, 2);
    kms_ttlv_doc_free(&d);
    kms_ttlv_doc_free(&d);
    kms_buf_free(&b);
}

/* ---- encoder ----------------------------------------------------------- */

Test(ttlv, encoder_writes_every_type_as_kmip_specifies, .timeout = 60)
{
    struct kms_buf b;
    struct kms_ttlv_enc e;
    kms_buf_init(&b, 4096);
    kms_ttlv_enc_init(&e, &b);
    uint8_t big[8] = {0, 0, 0, 0, 0, 0, 0, 0x2a};
    cr_assert_eq(kms_ttlv_begin(&e, 0x420078), KMS_OK);
    cr_assert_eq(kms_ttlv_put_int(&e, 0x42000D, -2), KMS_OK);
    cr_assert_eq(kms_ttlv_put_long(&e, 0x42000D, 0x0102030405060708LL), KMS_OK);
    cr_assert_eq(kms_ttlv_put_bigint(&e, 0x42000D, big, 8), KMS_OK);
    cr_assert_eq(kms_ttlv_put_enum(&e, 0x42000D, 0x80000001u), KMS_OK);
    cr_assert_eq(kms_ttlv_put_bool(&e, 0x42000D, 7), KMS_OK);
    cr_assert_eq(kms_ttlv_put_text(&e, 0x42000D, "Hello", 5), KMS_OK);
    cr_assert_eq(kms_ttlv_put_bytes(&e, 0x42000D, (const uint8_t *)"\x01\x02\x03", 3), KMS_OK);
    cr_assert_eq(kms_ttlv_put_datetime(&e, 0x42000D, 0x47DA67F8), KMS_OK);
    cr_assert_eq(kms_ttlv_put_interval(&e, 0x42000D, 0x000D2F00), KMS_OK);
    cr_assert_eq(kms_ttlv_put_datetime_ext(&e, 0x42000D, 1), KMS_OK);
    cr_assert_eq(kms_ttlv_begin(&e, 0x420079), KMS_OK);
    cr_assert_eq(kms_ttlv_end(&e), KMS_OK);
    cr_assert_eq(kms_ttlv_end(&e), KMS_OK);
    cr_assert_eq(kms_ttlv_enc_finish(&e), KMS_OK);
    /* KMIP 1.4 §9.1.2 examples for Integer, Long, Enumeration, Boolean, Text, Bytes, Date-Time, Interval */
    static const char *const want =
        "42007801000000a8"
        "42000d0200000004fffffffe00000000"
        "42000d03000000080102030405060708"
        "42000d0400000008000000000000002a"
        "42000d05000000048000000100000000"
        "42000d06000000080000000000000001"
        "42000d070000000548656c6c6f000000"
        "42000d08000000030102030000000000"
        "42000d090000000800000000" "47da67f8"
        "42000d0a00000004000d2f0000000000"
        "42000d0b000000080000000000000001"
        "4200790100000000";
    uint8_t exp[512];
    size_t n = hex_to(want, exp);
    cr_assert_eq(b.len, n, "%zu vs %zu", b.len, n);
    cr_assert_eq(memcmp(b.data, exp, n), 0);
    cr_assert_eq(decode(b.data, b.len), KMS_OK);
    kms_buf_free(&b);
}

Test(ttlv, encoder_refuses_what_it_cannot_encode, .timeout = 60)
{
    struct kms_buf b;
    struct kms_ttlv_enc e;
    kms_buf_init(&b, 64);
    kms_ttlv_enc_init(&e, &b);
    cr_assert_eq(kms_ttlv_end(&e), KMS_ERR_INTERNAL, "end with nothing open");
    cr_assert_eq(kms_ttlv_put_text(&e, 0x420055, "a\xff", 2), KMS_ERR_INVALID_FIELD);
    cr_assert_eq(kms_ttlv_put_text(&e, 0x420055, "a\0b", 3), KMS_ERR_INVALID_FIELD);
    cr_assert_eq(kms_ttlv_put_bigint(&e, 0x420055, (const uint8_t *)"1234567", 7), KMS_ERR_INVALID_FIELD);
    cr_assert_eq(kms_ttlv_put_bigint(&e, 0x420055, NULL, 0), KMS_ERR_INVALID_FIELD);
    cr_assert_eq(kms_ttlv_put_int(&e, 0x430000, 1), KMS_ERR_INVALID_FIELD, "not a KMIP tag");
    cr_assert_eq(kms_ttlv_put_int(&e, 0x01420000, 1), KMS_ERR_INVALID_FIELD, "more than 3 bytes");
    cr_assert_eq(kms_ttlv_put_bytes(&e, 0x4200C2, NULL, 4), KMS_ERR_INVALID_FIELD);
    cr_assert_eq(b.len, 0, "failed puts append nothing");
    /* the buffer's maximum */
    cr_assert_eq(kms_ttlv_put_bytes(&e, 0x4200C2, (const uint8_t *)"0123456789", 10), KMS_OK);
    cr_assert_eq(b.len, 24);
    uint8_t big[48] = {0};
    cr_assert_eq(kms_ttlv_put_bytes(&e, 0x4200C2, big, sizeof(big)), KMS_ERR_TOO_LARGE);
    cr_assert_eq(b.len, 24, "a failed put leaves nothing half-written");
    /* depth */
    kms_buf_free(&b);
    kms_buf_init(&b, 4096);
    kms_ttlv_enc_init(&e, &b);
    for (unsigned i = 0; i < KMS_TTLV_MAX_DEPTH; i++)
        cr_assert_eq(kms_ttlv_begin(&e, 0x420078), KMS_OK);
    cr_assert_eq(kms_ttlv_begin(&e, 0x420078), KMS_ERR_INTERNAL);
    cr_assert_eq(kms_ttlv_enc_finish(&e), KMS_ERR_INTERNAL, "structures still open");
    for (unsigned i = 0; i < KMS_TTLV_MAX_DEPTH; i++)
        cr_assert_eq(kms_ttlv_end(&e), KMS_OK);
    cr_assert_eq(kms_ttlv_enc_finish(&e), KMS_OK);
    cr_assert_eq(decode(b.data, b.len), KMS_OK, "what the encoder nests, the decoder reads");
    kms_buf_free(&b);
}

Test(ttlv, type_names, .timeout = 60)
{
    cr_assert_str_eq(kms_ttlv_type_name(KMS_TTLV_STRUCTURE), "Structure");
    cr_assert_str_eq(kms_ttlv_type_name(KMS_TTLV_DATE_TIME_EXTENDED), "Date-Time Extended");
    cr_assert_str_eq(kms_ttlv_type_name(0), "unknown");
    cr_assert_str_eq(kms_ttlv_type_name(0x0C), "unknown");
}
