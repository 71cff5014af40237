/* kms/wrapped.c: the kms:v1 wrapped-key format (SPEC §3,
 * docs/wrapped-key-format.md). Parsing, every negative case, and that each
 * header field is bound to the ciphertext (edited -> KMS_ERR_UNWRAP). */
#include "kms/wrapped.h"

#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/base64.h"
#include "hsm/soft/soft.h"
#include "kms/hierarchy.h"

/* The customer and user keys of the worked example in
 * docs/wrapped-key-format.md, produced by kms_hierarchy_create_customer/_user
 * against the soft backend. */
static const char doc_customer[] =
    "kms:v1:AQEBtvpnVNmwW/POSK5W21C/8gAAAAAAAAAAAAAAAAAAAAAJYWNtZS1wcm9kCmNteC1tYXN0ZXIAAAABADyjTB4mpTRLtshh"
    "AjbTvGZMkQyu1HsvZ6XcafbPM84Vnx9vTqsyRuiaKAF9bLVTAr3zIPcwOcy9Zjg6MHE=";
static const char doc_user[] =
    "kms:v1:AQKANPxRp6D/cqj8yfBuW0lIPrb6Z1TZsFvzzkiuVttQv/IJYWNtZS1wcm9kAAAAAAA+s1/L7/mw2mEp1TwAIECitoOzQoTM"
    "Nu9289DQHkEx4JvBDAaj8UYi3JOGIaQAncqLjwAtQHRihGAZSnflsQ==";

static void fill(uint8_t *p, size_t n, uint8_t seed)
{
    for (size_t i = 0; i < n; i++)
        p[i] = (uint8_t)(seed + i * 7);
}

static struct kms_wrapped_header user_header(void)
{
    struct kms_wrapped_header h;
    memset(&h, 0, sizeof(h));
    h.level = KMS_LEVEL_USER;
    h.wrapper = KMS_WRAPPER_PARENT;
    fill(h.key_id, sizeof(h.key_id), 1);
    fill(h.parent_id, sizeof(h.parent_id), 100);
    memcpy(h.site_id, "site-1", 7);
    return h;
}

static struct kms_wrapped_header customer_header(void)
{
    struct kms_wrapped_header h;
    memset(&h, 0, sizeof(h));
    h.level = KMS_LEVEL_CUSTOMER;
    h.wrapper = KMS_BACKEND_SOFT;
    fill(h.key_id, sizeof(h.key_id), 9);
    memcpy(h.site_id, "site-1", 7);
    memcpy(h.master.name, "master-a", 9);
    h.master.version = 7;
    return h;
}

/* Blob of a parent-wrapped key with header h (dummy nonce/ct/tag). */
static void parent_blob(const struct kms_wrapped_header *h, struct kms_buf *b)
{
    uint8_t nonce[KMS_GCM_NONCE_LEN], ct[KMS_KEY_BYTES], tag[KMS_GCM_TAG_LEN];
    fill(nonce, sizeof(nonce), 50);
    fill(ct, sizeof(ct), 60);
    fill(tag, sizeof(tag), 70);
    kms_buf_init(b, KMS_WRAPPED_BLOB_MAX + 16);
    cr_assert_eq(kms_wrapped_header_encode(h, b), KMS_OK, "%s", kms_error_detail());
    cr_assert_eq(kms_wrapped_append_parent_payload(b, nonce, ct, sizeof(ct), tag), KMS_OK);
}

static void master_blob(const struct kms_wrapped_header *h, size_t ct_len, struct kms_buf *b)
{
    uint8_t *ct = malloc(ct_len);
    cr_assert_not_null(ct);
    fill(ct, ct_len, 80);
    kms_buf_init(b, KMS_WRAPPED_BLOB_MAX + 16);
    cr_assert_eq(kms_wrapped_header_encode(h, b), KMS_OK, "%s", kms_error_detail());
    cr_assert_eq(kms_wrapped_append_master_payload(b, ct, ct_len), KMS_OK);
    free(ct);
}

/* "kms:v1:" + base64 of any bytes (also 0 bytes and oversized ones). */
static char *text_of(const uint8_t *p, size_t n)
{
    size_t cap = 7 + kms_b64_encoded_len(n) + 1;
    char *s = malloc(cap);
    cr_assert_not_null(s);
    memcpy(s, "kms:v1:", 7);
    cr_assert_eq(kms_b64_encode(p, n, s + 7, cap - 7), KMS_OK);
    return s;
}

static kms_rc parse_bytes(const uint8_t *p, size_t n)
{
    struct kms_wrapped *w = NULL;
    char *s = text_of(p, n);
    kms_rc rc = kms_wrapped_parse(s, &w);
    if (rc != KMS_OK)
        cr_assert_null(w);
    kms_wrapped_free(&w);
    free(s);
    return rc;
}

/* Parses blob with byte `off` set to v. */
static kms_rc parse_with_byte(const struct kms_buf *b, size_t off, uint8_t v)
{
    uint8_t *copy = malloc(b->len);
    cr_assert_not_null(copy);
    memcpy(copy, b->data, b->len);
    copy[off] = v;
    kms_rc rc = parse_bytes(copy, b->len);
    free(copy);
    return rc;
}

Test(wrapped, parent_wrapped_round_trip, .timeout = 60)
{
    struct kms_wrapped_header h = user_header();
    struct kms_buf b;
    char *text = NULL;
    struct kms_wrapped *w = NULL;
    parent_blob(&h, &b);
    cr_assert_eq(kms_wrapped_to_text(b.data, b.len, &text), KMS_OK);
    cr_assert_eq(strncmp(text, "kms:v1:", 7), 0);
    cr_assert_eq(kms_wrapped_parse(text, &w), KMS_OK, "%s", kms_error_detail());
    cr_assert_eq(w->hdr.level, KMS_LEVEL_USER);
    cr_assert_eq(w->hdr.wrapper, KMS_WRAPPER_PARENT);
    cr_assert_arr_eq(w->hdr.key_id, h.key_id, KMS_KEY_ID_LEN);
    cr_assert_arr_eq(w->hdr.parent_id, h.parent_id, KMS_KEY_ID_LEN);
    cr_assert_str_eq(w->hdr.site_id, "site-1");
    cr_assert_str_eq(w->hdr.master.name, "");
    cr_assert_eq(w->hdr.master.version, 0);
    /* 3 + 16 + 16 + (1 + 6) + (1 + 0) + 4 */
    cr_assert_eq(w->header_len, 47);
    cr_assert_eq(w->blob_len, 47 + 12 + 2 + 32 + 16);
    cr_assert_arr_eq(w->blob, b.data, b.len);
    cr_assert_eq(w->nonce, w->blob + 47);
    cr_assert_eq(w->ct, w->blob + 47 + 14);
    cr_assert_eq(w->ct_len, 32);
    cr_assert_eq(w->tag, w->blob + 47 + 14 + 32);
    kms_wrapped_free(&w);
    cr_assert_null(w);
    kms_wrapped_free(&w); /* takes NULL */
    free(text);
    kms_buf_free(&b);
}

Test(wrapped, master_wrapped_round_trip, .timeout = 60)
{
    struct kms_wrapped_header h = customer_header();
    struct kms_buf b;
    char *text = NULL;
    struct kms_wrapped *w = NULL;
    master_blob(&h, 60, &b);
    cr_assert_eq(kms_wrapped_to_text(b.data, b.len, &text), KMS_OK);
    cr_assert_eq(kms_wrapped_parse(text, &w), KMS_OK, "%s", kms_error_detail());
    cr_assert_eq(w->hdr.level, KMS_LEVEL_CUSTOMER);
    cr_assert_eq(w->hdr.wrapper, KMS_BACKEND_SOFT);
    cr_assert_str_eq(w->hdr.master.name, "master-a");
    cr_assert_eq(w->hdr.master.version, 7);
    cr_assert_null(w->nonce);
    cr_assert_null(w->tag);
    cr_assert_eq(w->ct_len, 60);
    cr_assert_eq(w->header_len, 3 + 32 + 7 + 9 + 4);
    cr_assert_eq(w->ct, w->blob + w->header_len + 2);
    kms_wrapped_free(&w);
    free(text);
    kms_buf_free(&b);
}

Test(wrapped, largest_key_fits_the_text_limit, .timeout = 60)
{
    /* Longest site id, longest master name, largest backend ciphertext. */
    struct kms_wrapped_header h = customer_header();
    memset(h.site_id, 's', KMS_SITE_ID_MAX);
    h.site_id[KMS_SITE_ID_MAX] = '\0';
    memset(h.master.name, 'm', KMS_MASTER_NAME_MAX);
    h.master.name[KMS_MASTER_NAME_MAX] = '\0';
    h.level = KMS_LEVEL_DATA;
    h.wrapper = KMS_BACKEND_VAULT;
    struct kms_buf b;
    char *text = NULL;
    struct kms_wrapped *w = NULL;
    master_blob(&h, KMS_BACKEND_CT_MAX, &b);
    cr_assert_eq(kms_wrapped_to_text(b.data, b.len, &text), KMS_OK);
    cr_assert_eq(b.len, 4522, "docs/wrapped-key-format.md: size limits");
    cr_assert_eq(strlen(text), 6039);
    cr_assert_leq(strlen(text), KMS_WRAPPED_TEXT_MAX);
    cr_assert_eq(kms_wrapped_parse(text, &w), KMS_OK, "%s", kms_error_detail());
    cr_assert_eq(w->header_len, 424);
    cr_assert_eq(w->ct_len, KMS_BACKEND_CT_MAX);
    cr_assert_eq(strlen(w->hdr.master.name), KMS_MASTER_NAME_MAX);
    kms_wrapped_free(&w);
    free(text);
    kms_buf_free(&b);
}

Test(wrapped, data_key_without_site, .timeout = 60)
{
    struct kms_wrapped_header h = customer_header();
    h.level = KMS_LEVEL_DATA;
    h.site_id[0] = '\0';
    struct kms_buf b;
    master_blob(&h, 40, &b);
    cr_assert_eq(parse_bytes(b.data, b.len), KMS_OK, "%s", kms_error_detail());
    kms_buf_free(&b);
}

Test(wrapped, encoder_refuses_inconsistent_headers, .timeout = 60)
{
    struct kms_buf b;
    kms_buf_init(&b, KMS_WRAPPED_BLOB_MAX);
    struct kms_wrapped_header h;

    h = user_header();
    h.wrapper = KMS_BACKEND_SOFT; /* user keys are parent-wrapped */
    cr_assert_eq(kms_wrapped_header_encode(&h, &b), KMS_ERR_INVALID_FIELD);
    h = user_header();
    memcpy(h.master.name, "m", 2); /* parent-wrapped with a master name */
    cr_assert_eq(kms_wrapped_header_encode(&h, &b), KMS_ERR_INVALID_FIELD);
    h = user_header();
    h.site_id[0] = '\0';
    cr_assert_eq(kms_wrapped_header_encode(&h, &b), KMS_ERR_INVALID_FIELD);
    h = user_header();
    h.level = 0;
    cr_assert_eq(kms_wrapped_header_encode(&h, &b), KMS_ERR_INVALID_FIELD);
    h = customer_header();
    h.wrapper = KMS_WRAPPER_PARENT;
    cr_assert_eq(kms_wrapped_header_encode(&h, &b), KMS_ERR_INVALID_FIELD);
    h = customer_header();
    h.parent_id[3] = 1;
    cr_assert_eq(kms_wrapped_header_encode(&h, &b), KMS_ERR_INVALID_FIELD);
    h = customer_header();
    h.master.name[0] = '\0';
    cr_assert_eq(kms_wrapped_header_encode(&h, &b), KMS_ERR_INVALID_FIELD);
    h = customer_header();
    memcpy(h.site_id, "bad site", 9);
    cr_assert_eq(kms_wrapped_header_encode(&h, &b), KMS_ERR_INVALID_FIELD);
    cr_assert_eq(b.len, 0, "nothing appended on refusal");

    uint8_t nonce[12] = {0}, tag[16] = {0}, ct[KMS_DATA_MAX + 1] = {0};
    cr_assert_eq(kms_wrapped_append_parent_payload(&b, nonce, ct, 0, tag), KMS_ERR_INVALID_FIELD);
    cr_assert_eq(kms_wrapped_append_parent_payload(&b, nonce, ct, sizeof(ct), tag), KMS_ERR_INVALID_FIELD);
    cr_assert_eq(kms_wrapped_append_master_payload(&b, ct, 0), KMS_ERR_BACKEND);
    kms_buf_free(&b);

    char *text = (char *)1;
    cr_assert_eq(kms_wrapped_to_text(ct, 0, &text), KMS_ERR_TOO_LARGE);
    cr_assert_null(text);
}

Test(wrapped, prefix_required, .timeout = 60)
{
    struct kms_buf b;
    struct kms_wrapped_header h = user_header();
    struct kms_wrapped *w = NULL;
    parent_blob(&h, &b);
    char *good = text_of(b.data, b.len);
    cr_assert_eq(kms_wrapped_parse(good, &w), KMS_OK);
    kms_wrapped_free(&w);

    const char *prefixes[] = {"", "kms:v2:", "KMS:v1:", "kms:v1", "kms:V1:", " kms:v1:", "kms:v10:", "kms-v1:"};
    for (size_t i = 0; i < KMS_ARRAY_LEN(prefixes); i++) {
        size_t n = strlen(prefixes[i]) + strlen(good + 7) + 1;
        char *s = malloc(n);
        snprintf(s, n, "%s%s", prefixes[i], good + 7);
        cr_assert_eq(kms_wrapped_parse(s, &w), KMS_ERR_UNWRAP, "prefix \"%s\"", prefixes[i]);
        cr_assert_null(w);
        free(s);
    }
    cr_assert_eq(kms_wrapped_parse(NULL, &w), KMS_ERR_UNWRAP);
    cr_assert_eq(kms_wrapped_parse("", &w), KMS_ERR_UNWRAP);
    cr_assert_eq(kms_wrapped_parse("kms:v1:", &w), KMS_ERR_UNWRAP);
    free(good);
    kms_buf_free(&b);
}

Test(wrapped, bad_base64, .timeout = 60)
{
    struct kms_buf b;
    struct kms_wrapped_header h = user_header();
    struct kms_wrapped *w = NULL;
    parent_blob(&h, &b); /* 110 bytes: ends in "=" padding */
    char *good = text_of(b.data, b.len);
    size_t n = strlen(good);
    cr_assert_eq(good[n - 1], '=');

    char *s = strdup(good);
    s[20] = '*'; /* not in the alphabet */
    cr_assert_eq(kms_wrapped_parse(s, &w), KMS_ERR_UNWRAP);
    free(s);

    s = strdup(good);
    s[n - 1] = '\0'; /* padding missing */
    cr_assert_eq(kms_wrapped_parse(s, &w), KMS_ERR_UNWRAP);
    free(s);

    s = strdup(good);
    s[n - 2] = (char)(s[n - 2] == 'A' ? 'B' : 'A'); /* non-zero trailing bits or other bytes */
    kms_rc rc = kms_wrapped_parse(s, &w);
    cr_assert_eq(rc, KMS_ERR_UNWRAP);
    free(s);

    /* whitespace, URL alphabet and a newline are all refused */
    const char *inserts[] = {" ", "\n", "-", "_"};
    for (size_t i = 0; i < KMS_ARRAY_LEN(inserts); i++) {
        s = malloc(n + 2);
        memcpy(s, good, 30);
        s[30] = inserts[i][0];
        memcpy(s + 31, good + 31, n - 30);
        s[30 + 1 + (n - 31)] = '\0';
        cr_assert_eq(kms_wrapped_parse(s, &w), KMS_ERR_UNWRAP, "insert %d", inserts[i][0]);
        free(s);
    }
    /* a replaced character (same length, valid alphabet) at a byte the
     * parser checks also fails: here the version byte */
    s = strdup(good);
    s[7] = 'B';
    cr_assert_eq(kms_wrapped_parse(s, &w), KMS_ERR_UNWRAP);
    free(s);
    free(good);
    kms_buf_free(&b);
}

Test(wrapped, truncated_at_every_byte, .timeout = 60)
{
    struct kms_buf b;
    struct kms_wrapped_header hu = user_header(), hc = customer_header();
    parent_blob(&hu, &b);
    for (size_t i = 0; i < b.len; i++)
        cr_assert_eq(parse_bytes(b.data, i), KMS_ERR_UNWRAP, "user key truncated to %zu of %zu", i, b.len);
    kms_buf_free(&b);
    master_blob(&hc, 60, &b);
    for (size_t i = 0; i < b.len; i++)
        cr_assert_eq(parse_bytes(b.data, i), KMS_ERR_UNWRAP, "customer key truncated to %zu of %zu", i, b.len);
    kms_buf_free(&b);
}

Test(wrapped, trailing_bytes, .timeout = 60)
{
    struct kms_buf b;
    struct kms_wrapped_header hu = user_header(), hc = customer_header();
    parent_blob(&hu, &b);
    cr_assert_eq(kms_buf_append_u8(&b, 0), KMS_OK);
    cr_assert_eq(parse_bytes(b.data, b.len), KMS_ERR_UNWRAP);
    cr_assert_str_eq(kms_error_detail(), "wrapped key: trailing bytes");
    kms_buf_free(&b);
    master_blob(&hc, 60, &b);
    cr_assert_eq(kms_buf_append_u8(&b, 0x41), KMS_OK);
    cr_assert_eq(parse_bytes(b.data, b.len), KMS_ERR_UNWRAP);
    kms_buf_free(&b);
}

Test(wrapped, oversized_text, .timeout = 60)
{
    struct kms_wrapped *w = NULL;
    /* one character over the limit, otherwise valid base64 */
    size_t n = KMS_WRAPPED_TEXT_MAX + 1;
    char *s = malloc(n + 1);
    memcpy(s, "kms:v1:", 7);
    memset(s + 7, 'A', n - 7);
    s[n] = '\0';
    cr_assert_eq(kms_wrapped_parse(s, &w), KMS_ERR_UNWRAP);
    cr_assert_str_eq(kms_error_detail(), "wrapped key: text longer than 8 KiB");
    /* a huge string is refused without reading it all (strnlen bound) */
    free(s);
    s = malloc(1 << 20);
    memcpy(s, "kms:v1:", 7);
    memset(s + 7, 'A', (1 << 20) - 8);
    s[(1 << 20) - 1] = '\0';
    cr_assert_eq(kms_wrapped_parse(s, &w), KMS_ERR_UNWRAP);
    free(s);
    /* a blob with a backend ciphertext over KMS_BACKEND_CT_MAX */
    struct kms_wrapped_header h = customer_header();
    struct kms_buf b;
    kms_buf_init(&b, KMS_WRAPPED_BLOB_MAX);
    cr_assert_eq(kms_wrapped_header_encode(&h, &b), KMS_OK);
    cr_assert_eq(kms_buf_append_u16be(&b, KMS_BACKEND_CT_MAX + 1), KMS_OK);
    uint8_t *ct = calloc(1, KMS_BACKEND_CT_MAX + 1);
    cr_assert_eq(kms_buf_append(&b, ct, KMS_BACKEND_CT_MAX + 1), KMS_OK);
    cr_assert_eq(parse_bytes(b.data, b.len), KMS_ERR_UNWRAP);
    free(ct);
    kms_buf_free(&b);
}

Test(wrapped, header_fields_checked, .timeout = 60)
{
    struct kms_buf u, c;
    struct kms_wrapped_header hu = user_header(), hc = customer_header();
    parent_blob(&hu, &u);
    master_blob(&hc, 60, &c);
    /* offsets: 0 version, 1 level, 2 wrapper, 3 key id, 19 parent id, 35 site len */
    cr_assert_eq(parse_with_byte(&u, 0, 0), KMS_ERR_UNWRAP, "version 0");
    cr_assert_eq(parse_with_byte(&u, 0, 2), KMS_ERR_UNWRAP, "version 2");
    cr_assert_eq(parse_with_byte(&u, 1, 0), KMS_ERR_UNWRAP, "level 0");
    cr_assert_eq(parse_with_byte(&u, 1, 5), KMS_ERR_UNWRAP, "level 5");
    cr_assert_eq(parse_with_byte(&u, 1, KMS_LEVEL_CUSTOMER), KMS_ERR_UNWRAP, "customer, parent-wrapped");
    cr_assert_eq(parse_with_byte(&u, 1, KMS_LEVEL_WORKSPACE), KMS_OK, "workspace is parent-wrapped too");
    cr_assert_eq(parse_with_byte(&u, 2, KMS_BACKEND_SOFT), KMS_ERR_UNWRAP, "user key, backend-wrapped");
    cr_assert_eq(parse_with_byte(&u, 2, 0x81), KMS_ERR_UNWRAP, "unknown wrapper");
    cr_assert_eq(parse_with_byte(&c, 2, 0), KMS_ERR_UNWRAP, "wrapper 0");
    cr_assert_eq(parse_with_byte(&c, 2, 5), KMS_ERR_UNWRAP, "wrapper 5");
    cr_assert_eq(parse_with_byte(&c, 2, KMS_BACKEND_PKCS11), KMS_OK, "pkcs11");
    cr_assert_eq(parse_with_byte(&c, 2, KMS_BACKEND_KMIP), KMS_OK, "kmip");
    cr_assert_eq(parse_with_byte(&c, 2, KMS_WRAPPER_PARENT), KMS_ERR_UNWRAP, "customer, parent-wrapped");
    cr_assert_eq(parse_with_byte(&c, 1, KMS_LEVEL_USER), KMS_ERR_UNWRAP, "user, master-wrapped");
    cr_assert_eq(parse_with_byte(&c, 19 + 5, 1), KMS_ERR_UNWRAP, "master-wrapped with a parent id");
    cr_assert_eq(parse_with_byte(&c, 36 + 2, ' '), KMS_ERR_UNWRAP, "space in site id");
    cr_assert_eq(parse_with_byte(&c, 36 + 2, '\0'), KMS_ERR_UNWRAP, "NUL in site id");
    cr_assert_eq(parse_with_byte(&c, 36 + 6 + 1 + 3, '\0'), KMS_ERR_UNWRAP, "NUL in master name");
    cr_assert_eq(parse_with_byte(&c, 36 + 6 + 1 + 3, ' '), KMS_ERR_UNWRAP, "space in master name");
    cr_assert_eq(parse_with_byte(&u, 36 + 6 + 1 + 3, 1), KMS_ERR_UNWRAP, "parent-wrapped with a master version");
    /* ciphertext lengths: a user key is exactly 32 bytes */
    size_t ct_len_off = 47 + 12;
    cr_assert_eq(parse_with_byte(&u, ct_len_off + 1, 31), KMS_ERR_UNWRAP);
    cr_assert_eq(parse_with_byte(&u, ct_len_off + 1, 33), KMS_ERR_UNWRAP);
    size_t mct_off = c.len - 60 - 2;
    cr_assert_eq(parse_with_byte(&c, mct_off + 1, 0), KMS_ERR_UNWRAP, "empty backend ciphertext");
    kms_buf_free(&u);
    kms_buf_free(&c);
}

Test(wrapped, empty_site_only_for_data, .timeout = 60)
{
    /* Build a customer header with an empty site by hand (the encoder refuses it). */
    struct kms_wrapped_header h = customer_header();
    h.level = KMS_LEVEL_DATA;
    h.site_id[0] = '\0';
    struct kms_buf b;
    master_blob(&h, 40, &b);
    cr_assert_eq(parse_with_byte(&b, 1, KMS_LEVEL_DATA), KMS_OK);
    cr_assert_eq(parse_with_byte(&b, 1, KMS_LEVEL_CUSTOMER), KMS_ERR_UNWRAP);
    kms_buf_free(&b);
}

Test(wrapped, describe_known_blob, .timeout = 60)
{
    struct kms_wrapped_info info;
    cr_assert_eq(kms_wrapped_describe(doc_customer, &info), KMS_OK, "%s", kms_error_detail());
    cr_assert_str_eq(info.level, "customer");
    cr_assert_str_eq(info.wrapper, "soft");
    cr_assert_str_eq(info.key_id, "b6fa6754d9b05bf3ce48ae56db50bff2");
    cr_assert_str_eq(info.parent_id, "00000000000000000000000000000000");
    cr_assert_str_eq(info.site_id, "acme-prod");
    cr_assert_str_eq(info.master_name, "cmx-master");
    cr_assert_eq(info.master_version, 1);

    cr_assert_eq(kms_wrapped_describe(doc_user, &info), KMS_OK, "%s", kms_error_detail());
    cr_assert_str_eq(info.level, "user");
    cr_assert_str_eq(info.wrapper, "parent");
    cr_assert_str_eq(info.key_id, "34fc51a7a0ff72a8fcc9f06e5b49483e");
    cr_assert_str_eq(info.parent_id, "b6fa6754d9b05bf3ce48ae56db50bff2");
    cr_assert_str_eq(info.site_id, "acme-prod");
    cr_assert_str_eq(info.master_name, "");
    cr_assert_eq(info.master_version, 0);

    struct kms_wrapped *w = NULL;
    cr_assert_eq(kms_wrapped_parse(doc_user, &w), KMS_OK);
    cr_assert_eq(w->header_len, 50);
    cr_assert_eq(w->blob_len, 112);
    kms_wrapped_free(&w);
}

/* The audit's key id without a full parse: the same id describe gives, from
 * the first base64 group only; anything without a kms:v1 header is refused. */
Test(wrapped, peek_key_id_agrees_with_describe, .timeout = 60)
{
    char id[2 * KMS_KEY_ID_LEN + 1];
    cr_assert_eq(kms_wrapped_peek_key_id(doc_customer, id), KMS_OK);
    cr_assert_str_eq(id, "b6fa6754d9b05bf3ce48ae56db50bff2");
    cr_assert_eq(kms_wrapped_peek_key_id(doc_user, id), KMS_OK);
    cr_assert_str_eq(id, "34fc51a7a0ff72a8fcc9f06e5b49483e");
    /* only the head is read: a damaged tail still names the key (the unwrap refuses it) */
    char cut[64];
    snprintf(cut, sizeof(cut), "%.35s", doc_user);
    cr_assert_eq(kms_wrapped_peek_key_id(cut, id), KMS_OK);
    cr_assert_str_eq(id, "34fc51a7a0ff72a8fcc9f06e5b49483e");
    static const char *const bad[] = {"kms:v1:AAAA", "kms:v2:AQKANPxRp6D/cqj8yfBuW0lIPrb6Z1TZ", "not a key", "",
                                      "kms:v1:!QKANPxRp6D/cqj8yfBuW0lIPrb6Z1TZ", "kms:v1:AgKANPxRp6D/cqj8yfBuW0lIPrb6Z1TZ"};
    for (size_t i = 0; i < KMS_ARRAY_LEN(bad); i++) {
        cr_assert_eq(kms_wrapped_peek_key_id(bad[i], id), KMS_ERR_UNWRAP, "case %zu", i);
        cr_assert_str_eq(id, "", "case %zu", i);
    }
    cr_assert_eq(kms_wrapped_peek_key_id(NULL, id), KMS_ERR_UNWRAP);
}

Test(wrapped, describe_refuses_garbage, .timeout = 60)
{
    struct kms_wrapped_info info;
    cr_assert_eq(kms_wrapped_describe("kms:v1:AAAA", &info), KMS_ERR_UNWRAP);
    cr_assert_str_eq(info.level, "unknown");
    cr_assert_str_eq(info.key_id, "");
    cr_assert_str_eq(info.site_id, "");
    cr_assert_eq(kms_wrapped_describe("not a key", &info), KMS_ERR_UNWRAP);
    cr_assert_eq(kms_wrapped_describe(NULL, &info), KMS_ERR_UNWRAP);
}

Test(wrapped, names, .timeout = 60)
{
    cr_assert_str_eq(kms_key_level_name(KMS_LEVEL_CUSTOMER), "customer");
    cr_assert_str_eq(kms_key_level_name(KMS_LEVEL_WORKSPACE), "workspace");
    cr_assert_str_eq(kms_key_level_name(KMS_LEVEL_DATA), "data");
    cr_assert_str_eq(kms_key_level_name(9), "unknown");
    cr_assert_str_eq(kms_wrapper_name(KMS_BACKEND_KMIP), "kmip");
    cr_assert_str_eq(kms_wrapper_name(KMS_BACKEND_VAULT), "vault");
    cr_assert_str_eq(kms_wrapper_name(KMS_BACKEND_PKCS11), "pkcs11");
    cr_assert_str_eq(kms_wrapper_name(KMS_WRAPPER_PARENT), "parent");
    cr_assert_str_eq(kms_wrapper_name(0), "unknown");
    cr_assert(kms_master_name_valid("a"));
    cr_assert(kms_master_name_valid("4f2d9a1c-0b7e-4e0f-9d59-1f0f3b3f2d6e"));
    cr_assert_not(kms_master_name_valid(""));
    cr_assert_not(kms_master_name_valid("a b"));
    cr_assert_not(kms_master_name_valid(NULL));
    char longname[KMS_MASTER_NAME_MAX + 2];
    memset(longname, 'x', sizeof(longname) - 1);
    longname[sizeof(longname) - 1] = '\0';
    cr_assert_not(kms_master_name_valid(longname));
    longname[KMS_MASTER_NAME_MAX] = '\0';
    cr_assert(kms_master_name_valid(longname));
}

Test(wrapped, digest_is_of_the_whole_blob, .timeout = 60)
{
    struct kms_wrapped *a = NULL, *b = NULL;
    uint8_t da[32], db[32], da2[32];
    cr_assert_eq(kms_wrapped_parse(doc_customer, &a), KMS_OK);
    cr_assert_eq(kms_wrapped_parse(doc_user, &b), KMS_OK);
    cr_assert_eq(kms_wrapped_digest(a, da), KMS_OK);
    cr_assert_eq(kms_wrapped_digest(a, da2), KMS_OK);
    cr_assert_eq(kms_wrapped_digest(b, db), KMS_OK);
    cr_assert_arr_eq(da, da2, 32);
    cr_assert_arr_neq(da, db, 32);
    kms_wrapped_free(&a);
    kms_wrapped_free(&b);
}

/* ---- each header field is authenticated ---------------------------------- */

static char dir[64];
static char path[128];
static struct kms_backend *backend;
static struct kms_hierarchy *hier;

static void setup(void)
{
    snprintf(dir, sizeof(dir), "/tmp/kms-test-wrapped-XXXXXX");
    cr_assert_not_null(mkdtemp(dir));
    snprintf(path, sizeof(path), "%s/soft.keys", dir);
    cr_assert_eq(kms_soft_open(path, "test-password", "master-a", &backend), KMS_OK, "%s", kms_error_detail());
    cr_assert_eq(kms_hierarchy_new(backend, NULL, "master-a", &hier), KMS_OK);
}

static void teardown(void)
{
    kms_hierarchy_free(&hier);
    kms_backend_free(&backend);
    unlink(path);
    rmdir(dir);
}

/* text with its header re-encoded after edit() changed the parsed header. */
static char *edited(const char *text, void (*edit)(struct kms_wrapped_header *))
{
    struct kms_wrapped *w = NULL;
    struct kms_buf b;
    char *out = NULL;
    cr_assert_eq(kms_wrapped_parse(text, &w), KMS_OK);
    edit(&w->hdr);
    kms_buf_init(&b, KMS_WRAPPED_BLOB_MAX);
    cr_assert_eq(kms_wrapped_header_encode(&w->hdr, &b), KMS_OK, "%s", kms_error_detail());
    if (w->nonce != NULL)
        cr_assert_eq(kms_wrapped_append_parent_payload(&b, w->nonce, w->ct, w->ct_len, w->tag), KMS_OK);
    else
        cr_assert_eq(kms_wrapped_append_master_payload(&b, w->ct, w->ct_len), KMS_OK);
    cr_assert_eq(kms_wrapped_to_text(b.data, b.len, &out), KMS_OK);
    cr_assert_str_neq(out, text);
    kms_buf_free(&b);
    kms_wrapped_free(&w);
    return out;
}

static void edit_key_id(struct kms_wrapped_header *h) { h->key_id[0] ^= 1; }
static void edit_site_b(struct kms_wrapped_header *h) { memcpy(h->site_id, "site-b", 7); }
static void edit_site_longer(struct kms_wrapped_header *h) { memcpy(h->site_id, "site-a.2", 9); }
static void edit_version_2(struct kms_wrapped_header *h) { h->master.version = 2; }
static void edit_to_customer(struct kms_wrapped_header *h) { h->level = KMS_LEVEL_CUSTOMER; }
static void edit_to_workspace(struct kms_wrapped_header *h) { h->level = KMS_LEVEL_WORKSPACE; }
static void edit_master_name(struct kms_wrapped_header *h) { memcpy(h->master.name, "master-b", 9); }
static void edit_wrapper_vault(struct kms_wrapped_header *h) { h->wrapper = KMS_BACKEND_VAULT; }

Test(wrapped, data_key_header_fields_are_authenticated, .init = setup, .fini = teardown, .timeout = 60)
{
    const uint8_t pt[16] = "0123456789abcdef";
    char *text = NULL, *bad = NULL, *out = NULL;
    struct kms_secret *s = NULL;
    cr_assert_eq(kms_hierarchy_wrap(hier, "master-a", "site-a", pt, sizeof(pt), &text), KMS_OK);
    cr_assert_eq(kms_hierarchy_unwrap(hier, "master-a", "site-a", text, &s), KMS_OK);
    cr_assert_arr_eq(kms_secret_cdata(s), pt, sizeof(pt));
    kms_secret_free(&s);
    cr_assert_eq(kms_soft_rotate(backend, "master-a"), KMS_OK);
    cr_assert_eq(kms_soft_create_key(backend, "master-b"), KMS_OK);

    /* each edit leaves a well-formed key the request matches, so what fails
     * is the backend's authentication of the header (the AAD) */
    bad = edited(text, edit_key_id);
    cr_assert_eq(kms_hierarchy_unwrap(hier, "master-a", "site-a", bad, &s), KMS_ERR_UNWRAP);
    free(bad);
    bad = edited(text, edit_site_b);
    cr_assert_eq(kms_hierarchy_unwrap(hier, "master-a", "site-b", bad, &s), KMS_ERR_UNWRAP);
    free(bad);
    bad = edited(text, edit_site_longer);
    cr_assert_eq(kms_hierarchy_unwrap(hier, "master-a", "site-a.2", bad, &s), KMS_ERR_UNWRAP);
    free(bad);
    bad = edited(text, edit_version_2);
    cr_assert_eq(kms_hierarchy_unwrap(hier, "master-a", "site-a", bad, &s), KMS_ERR_UNWRAP);
    free(bad);
    bad = edited(text, edit_master_name);
    cr_assert_eq(kms_hierarchy_unwrap(hier, "master-b", "site-a", bad, &s), KMS_ERR_UNWRAP);
    free(bad);
    bad = edited(text, edit_wrapper_vault);
    cr_assert_eq(kms_hierarchy_unwrap(hier, "master-a", "site-a", bad, &s), KMS_ERR_UNWRAP);
    free(bad);
    /* replayed as a customer key: rewrap accepts customer keys, the AAD does not */
    bad = edited(text, edit_to_customer);
    cr_assert_eq(kms_hierarchy_rewrap(hier, "master-a", "site-a", bad, &out), KMS_ERR_UNWRAP);
    cr_assert_null(out);
    cr_assert_eq(kms_hierarchy_create_user(hier, "site-a", bad, &out), KMS_ERR_UNWRAP);
    cr_assert_null(out);
    free(bad);
    cr_assert_null(s);
    /* the original still works */
    cr_assert_eq(kms_hierarchy_unwrap(hier, "master-a", "site-a", text, &s), KMS_OK);
    kms_secret_free(&s);
    free(text);
}

Test(wrapped, hierarchy_header_fields_are_authenticated, .init = setup, .fini = teardown, .timeout = 60)
{
    char *c = NULL, *u = NULL, *w = NULL, *bad = NULL, *out = NULL;
    struct kms_secret *k = NULL;
    cr_assert_eq(kms_hierarchy_create_customer(hier, "site-a", &c), KMS_OK);
    cr_assert_eq(kms_hierarchy_create_user(hier, "site-a", c, &u), KMS_OK);
    cr_assert_eq(kms_hierarchy_create_workspace(hier, "site-a", c, u, &w), KMS_OK);
    cr_assert_eq(kms_hierarchy_unwrap_workspace(hier, "site-a", c, u, w, &k), KMS_OK);
    kms_secret_free(&k);

    /* customer key for another site: the whole request says site-b */
    bad = edited(c, edit_site_b);
    cr_assert_eq(kms_hierarchy_create_user(hier, "site-b", bad, &out), KMS_ERR_UNWRAP);
    cr_assert_null(out);
    free(bad);
    bad = edited(c, edit_key_id);
    cr_assert_eq(kms_hierarchy_unwrap_workspace(hier, "site-a", bad, u, w, &k), KMS_ERR_UNWRAP);
    free(bad);
    /* user key: its own id is in the AAD */
    bad = edited(u, edit_key_id);
    cr_assert_eq(kms_hierarchy_unwrap_workspace(hier, "site-a", c, bad, w, &k), KMS_ERR_UNWRAP);
    free(bad);
    /* workspace key: id, and level (workspace -> user is refused before; user -> workspace here) */
    bad = edited(w, edit_key_id);
    cr_assert_eq(kms_hierarchy_unwrap_workspace(hier, "site-a", c, u, bad, &k), KMS_ERR_UNWRAP);
    free(bad);
    bad = edited(u, edit_to_workspace);
    /* a user key relabelled as a workspace key whose parent is ... the customer: still refused */
    cr_assert_eq(kms_hierarchy_unwrap_workspace(hier, "site-a", c, u, bad, &k), KMS_ERR_UNWRAP);
    free(bad);
    cr_assert_null(k);
    free(c);
    free(u);
    free(w);
}
