/* hsm/kmip/kmip_msg.c: the requests kmsd sends are byte-identical to
 * PyKMIP's captures, every captured response parses to the result INDEX.json
 * records, results map to the error table, and malformed responses are the
 * backend's error. */
#include "hsm/kmip/kmip_msg.h"

#include <criterion/criterion.h>
#include <ctype.h>
#include <jansson.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- helpers ----------------------------------------------------------- */

static const struct kms_kmip_version V12 = {1, 2}, V14 = {1, 4};

static char vec_path[1200];

static const char *vector_path(const char *name)
{
    const char *src = getenv("KMS_SOURCE_DIR");
    cr_assert_not_null(src, "KMS_SOURCE_DIR is not set");
    snprintf(vec_path, sizeof(vec_path), "%s/../shared/reference/kmip-vectors/%s", src, name);
    return vec_path;
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

static uint8_t *from_hex(const char *hex, size_t *len)
{
    size_t n = strlen(hex);
    cr_assert_eq(n % 2, 0);
    uint8_t *out = malloc(n / 2 + 1);
    for (size_t i = 0; i < n / 2; i++) {
        int hi = hexval(hex[2 * i]), lo = hexval(hex[2 * i + 1]);
        cr_assert(hi >= 0 && lo >= 0);
        out[i] = (uint8_t)(hi << 4 | lo);
    }
    *len = n / 2;
    return out;
}

/* NAME.req.hex or NAME.resp.hex */
static uint8_t *load(const char *name, const char *kind, size_t *len)
{
    char file[256];
    snprintf(file, sizeof(file), "%s.%s.hex", name, kind);
    FILE *f = fopen(vector_path(file), "r");
    cr_assert_not_null(f, "cannot open %s", vec_path);
    static char hex[1 << 18];
    size_t n = fread(hex, 1, sizeof(hex) - 1, f);
    fclose(f);
    while (n > 0 && (hex[n - 1] == '\n' || hex[n - 1] == '\r'))
        n--;
    hex[n] = '\0';
    return from_hex(hex, len);
}

static void expect_bytes(const struct kms_buf *got, const char *vector)
{
    size_t len;
    uint8_t *want = load(vector, "req", &len);
    cr_assert_eq(got->len, len, "%s: built %zu bytes, captured %zu", vector, got->len, len);
    for (size_t i = 0; i < len; i++)
        cr_assert_eq(got->data[i], want[i], "%s: first difference at offset 0x%zx", vector, i);
    free(want);
}

/* Parses NAME.resp.hex into r; the message stays alive in *msg. */
static void parse_vector(const char *name, struct kms_kmip_response *r, uint8_t **msg)
{
    size_t len;
    *msg = load(name, "resp", &len);
    cr_assert_eq(kms_kmip_response_parse(*msg, len, r), KMS_OK, "%s: %s", name, kms_error_detail());
}

static const uint8_t kat_pt[32] = {0x20, 0x21, 0x22, 0x23, 0x24, 0x25, 0x26, 0x27, 0x28, 0x29, 0x2a,
                                   0x2b, 0x2c, 0x2d, 0x2e, 0x2f, 0x30, 0x31, 0x32, 0x33, 0x34, 0x35,
                                   0x36, 0x37, 0x38, 0x39, 0x3a, 0x3b, 0x3c, 0x3d, 0x3e, 0x3f};
static const uint8_t kat_nonce[12] = {0xc0, 0xc1, 0xc2, 0xc3, 0xc4, 0xc5, 0xc6, 0xc7, 0xc8, 0xc9, 0xca, 0xcb};
static const uint8_t kat_ct[32] = {0x20, 0x69, 0x05, 0x44, 0x53, 0x5d, 0xb0, 0x79, 0xb0, 0xf0, 0xd7,
                                   0x89, 0x1e, 0x81, 0xc6, 0x79, 0x7c, 0x42, 0xd1, 0x0c, 0x08, 0xd7,
                                   0x29, 0x8d, 0x12, 0xfa, 0x71, 0x31, 0x0b, 0x40, 0x41, 0x89};
static const uint8_t kat_tag[16] = {0x3e, 0x19, 0xe9, 0xb0, 0xe3, 0xd6, 0xcf, 0x66,
                                    0x55, 0xf8, 0xc3, 0xf1, 0xb2, 0x37, 0xec, 0xb0};

/* ---- requests, byte for byte ------------------------------------------- */

Test(kmip_msg, discover_versions_matches_vector_01, .timeout = 60)
{
    struct kms_buf b;
    kms_buf_init(&b, KMS_TTLV_MAX_MESSAGE);
    cr_assert_eq(kms_kmip_req_discover_versions(&b, V12, NULL, 0), KMS_OK, "%s", kms_error_detail());
    expect_bytes(&b, "01_discover_versions");
    kms_buf_free(&b);
}

Test(kmip_msg, query_matches_vector_02, .timeout = 60)
{
    static const uint32_t f[] = {KMS_KMIP_QUERY_OPERATIONS, KMS_KMIP_QUERY_OBJECTS, KMS_KMIP_QUERY_SERVER_INFORMATION};
    struct kms_buf b;
    kms_buf_init(&b, KMS_TTLV_MAX_MESSAGE);
    cr_assert_eq(kms_kmip_req_query(&b, V12, f, 3), KMS_OK);
    expect_bytes(&b, "02_query");
    kms_buf_free(&b);
}

Test(kmip_msg, create_matches_vectors_03_and_pie_client, .timeout = 60)
{
    struct kms_buf b;
    kms_buf_init(&b, KMS_TTLV_MAX_MESSAGE);
    cr_assert_eq(kms_kmip_req_create_aes256(&b, V12, "site-master-key"), KMS_OK);
    expect_bytes(&b, "03_create_aes256");
    kms_buf_free(&b);
}

Test(kmip_msg, activate_matches_vectors_04_and_pie_client, .timeout = 60)
{
    struct kms_buf b;
    kms_buf_init(&b, KMS_TTLV_MAX_MESSAGE);
    cr_assert_eq(kms_kmip_req_activate(&b, V12, "2"), KMS_OK);
    expect_bytes(&b, "04_activate");
    kms_buf_reset(&b);
    cr_assert_eq(kms_kmip_req_activate(&b, V12, "6"), KMS_OK);
    expect_bytes(&b, "00_pie_client_1_activate");
    kms_buf_free(&b);
}

Test(kmip_msg, locate_matches_vector_07, .timeout = 60)
{
    struct kms_buf b;
    kms_buf_init(&b, KMS_TTLV_MAX_MESSAGE);
    cr_assert_eq(kms_kmip_req_locate_name(&b, V12, "site-master-key"), KMS_OK);
    expect_bytes(&b, "07_locate_by_name");
    kms_buf_free(&b);
}

Test(kmip_msg, get_attributes_matches_vectors_08_and_09, .timeout = 60)
{
    static const char *const names[] = {"State", "Cryptographic Algorithm", "Cryptographic Length"};
    struct kms_buf b;
    kms_buf_init(&b, KMS_TTLV_MAX_MESSAGE);
    cr_assert_eq(kms_kmip_req_get_attributes(&b, V12, "2", names, 3), KMS_OK);
    expect_bytes(&b, "09_get_attributes_some");
    kms_buf_reset(&b);
    cr_assert_eq(kms_kmip_req_get_attributes(&b, V12, "2", NULL, 0), KMS_OK);
    expect_bytes(&b, "08_get_attributes_all");
    kms_buf_free(&b);
}

Test(kmip_msg, gcm_encrypt_and_decrypt_match_known_answer_vectors_13_14_15, .timeout = 60)
{
    struct kms_buf b;
    kms_buf_init(&b, KMS_TTLV_MAX_MESSAGE);
    struct kms_kmip_gcm g = {.data = kat_pt, .data_len = 32, .nonce = kat_nonce, .nonce_len = 12,
                             .aad = (const uint8_t *)"site-id:42", .aad_len = 10};
    cr_assert_eq(kms_kmip_req_encrypt_gcm(&b, V14, "3", &g), KMS_OK, "%s", kms_error_detail());
    expect_bytes(&b, "13_kat_encrypt_gcm_v14");
    kms_buf_reset(&b);
    g.data = kat_ct;
    g.tag = kat_tag;
    g.tag_len = 16;
    cr_assert_eq(kms_kmip_req_decrypt_gcm(&b, V14, "3", &g), KMS_OK);
    expect_bytes(&b, "14_kat_decrypt_gcm_v14");
    kms_buf_reset(&b);
    uint8_t bad[16];
    memcpy(bad, kat_tag, 16);
    bad[0] ^= 0x01;
    g.tag = bad;
    cr_assert_eq(kms_kmip_req_decrypt_gcm(&b, V14, "3", &g), KMS_OK);
    expect_bytes(&b, "15_gcm_bad_tag");
    kms_buf_free(&b);
}

/* The KAT is plain AES-256-GCM (key 00..1f) with the AAD: what the server
 * computes is what OpenSSL computes, so nonce | ct | tag is a standard GCM
 * ciphertext. */
Test(kmip_msg, known_answer_is_standard_aes_256_gcm, .timeout = 60)
{
    uint8_t key[32], ct[32], tag[16];
    for (int i = 0; i < 32; i++)
        key[i] = (uint8_t)i;
    EVP_CIPHER_CTX *ctx = EVP_CIPHER_CTX_new();
    int n = 0, fin = 0;
    cr_assert_eq(EVP_EncryptInit_ex(ctx, EVP_aes_256_gcm(), NULL, NULL, NULL), 1);
    cr_assert_eq(EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_SET_IVLEN, 12, NULL), 1);
    cr_assert_eq(EVP_EncryptInit_ex(ctx, NULL, NULL, key, kat_nonce), 1);
    cr_assert_eq(EVP_EncryptUpdate(ctx, NULL, &n, (const uint8_t *)"site-id:42", 10), 1);
    cr_assert_eq(EVP_EncryptUpdate(ctx, ct, &n, kat_pt, 32), 1);
    cr_assert_eq(EVP_EncryptFinal_ex(ctx, ct + n, &fin), 1);
    cr_assert_eq(EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_GET_TAG, 16, tag), 1);
    EVP_CIPHER_CTX_free(ctx);
    cr_assert_eq(memcmp(ct, kat_ct, 32), 0);
    cr_assert_eq(memcmp(tag, kat_tag, 16), 0);
}

Test(kmip_msg, request_arguments_are_checked, .timeout = 60)
{
    struct kms_buf b;
    kms_buf_init(&b, KMS_TTLV_MAX_MESSAGE);
    char long_name[300];
    memset(long_name, 'a', sizeof(long_name) - 1);
    long_name[sizeof(long_name) - 1] = '\0';
    cr_assert_eq(kms_kmip_req_create_aes256(&b, V14, ""), KMS_ERR_INVALID_FIELD);
    cr_assert_eq(kms_kmip_req_create_aes256(&b, V14, NULL), KMS_ERR_INVALID_FIELD);
    cr_assert_eq(kms_kmip_req_create_aes256(&b, V14, long_name), KMS_ERR_INVALID_FIELD);
    cr_assert_eq(kms_kmip_req_locate_name(&b, V14, "bad\xff"), KMS_ERR_INVALID_FIELD);
    cr_assert_eq(kms_kmip_req_activate(&b, V14, long_name), KMS_ERR_INVALID_FIELD);
    long_name[255] = '\0';
    cr_assert_eq(kms_kmip_req_activate(&b, V14, long_name), KMS_OK, "255 bytes fit");
    kms_buf_reset(&b);
    static const char *const bad_names[] = {"State", ""};
    cr_assert_eq(kms_kmip_req_get_attributes(&b, V14, "1", bad_names, 2), KMS_ERR_INVALID_FIELD);
    cr_assert_eq(b.len, 0, "a failed build leaves the buffer empty");

    struct kms_kmip_gcm g = {.data = kat_pt, .data_len = 32, .nonce = kat_nonce, .nonce_len = 12};
    cr_assert_eq(kms_kmip_req_encrypt_gcm(&b, V12, "3", &g), KMS_ERR_INVALID_FIELD, "GCM needs 1.4");
    struct kms_kmip_version v13 = {1, 3}, v20 = {2, 0};
    cr_assert_eq(kms_kmip_req_encrypt_gcm(&b, v13, "3", &g), KMS_ERR_INVALID_FIELD);
    cr_assert_eq(kms_kmip_req_encrypt_gcm(&b, v20, "3", &g), KMS_OK);
    kms_buf_reset(&b);
    g.nonce_len = 16;
    cr_assert_eq(kms_kmip_req_encrypt_gcm(&b, V14, "3", &g), KMS_ERR_INVALID_FIELD, "16-byte nonce");
    g.nonce_len = 12;
    cr_assert_eq(kms_kmip_req_decrypt_gcm(&b, V14, "3", &g), KMS_ERR_INVALID_FIELD, "decrypt without tag");
    g.tag = kat_tag;
    g.tag_len = 12;
    cr_assert_eq(kms_kmip_req_decrypt_gcm(&b, V14, "3", &g), KMS_ERR_INVALID_FIELD, "12-byte tag");
    g.aad = NULL;
    g.aad_len = 3;
    cr_assert_eq(kms_kmip_req_encrypt_gcm(&b, V14, "3", &g), KMS_ERR_INVALID_FIELD, "NULL aad");
    cr_assert_eq(b.len, 0);
    kms_buf_free(&b);

    /* the buffer's maximum: the message does not fit, nothing is left */
    kms_buf_init(&b, 100);
    g.aad = (const uint8_t *)"x";
    g.aad_len = 1;
    cr_assert_eq(kms_kmip_req_encrypt_gcm(&b, V14, "3", &g), KMS_ERR_TOO_LARGE);
    cr_assert_eq(b.len, 0);
    kms_buf_free(&b);
}

/* Without AAD the field is left out (and without it GCM is the same). */
Test(kmip_msg, empty_aad_is_left_out, .timeout = 60)
{
    struct kms_buf b;
    struct kms_ttlv_doc *d = NULL;
    kms_buf_init(&b, KMS_TTLV_MAX_MESSAGE);
    struct kms_kmip_gcm g = {.data = kat_pt, .data_len = 32, .nonce = kat_nonce, .nonce_len = 12};
    cr_assert_eq(kms_kmip_req_encrypt_gcm(&b, V14, "3", &g), KMS_OK);
    cr_assert_eq(kms_ttlv_decode(b.data, b.len, &d), KMS_OK);
    const struct kms_ttlv *pl = kms_ttlv_first(kms_ttlv_first(kms_ttlv_doc_root(d), KMS_KMIP_TAG_BATCH_ITEM),
                                               KMS_KMIP_TAG_REQUEST_PAYLOAD);
    cr_assert_not_null(pl);
    cr_assert_null(kms_ttlv_first(pl, KMS_KMIP_TAG_AE_ADDITIONAL_DATA));
    cr_assert_null(kms_ttlv_first(pl, KMS_KMIP_TAG_AE_TAG));
    cr_assert_null(kms_ttlv_first(kms_ttlv_first(kms_ttlv_doc_root(d), KMS_KMIP_TAG_REQUEST_HEADER),
                                  KMS_KMIP_TAG_TIME_STAMP),
                   "no request TimeStamp");
    kms_ttlv_doc_free(&d);
    kms_buf_free(&b);
}

/* ---- every captured response ------------------------------------------ */

static void upper_snake(const char *in, char *out, size_t cap)
{
    size_t o = 0;
    for (size_t i = 0; in[i] && o + 1 < cap; i++)
        if (in[i] != '-')
            out[o++] = in[i] == ' ' ? '_' : (char)toupper((unsigned char)in[i]);
    out[o] = '\0';
}

Test(kmip_msg, every_captured_response_parses_to_its_recorded_result, .timeout = 60)
{
    json_error_t err;
    json_t *index = json_load_file(vector_path("INDEX.json"), 0, &err);
    cr_assert_not_null(index, "INDEX.json: %s", err.text);
    cr_assert_eq(json_array_size(index), 64);
    size_t i;
    json_t *v;
    json_array_foreach(index, i, v)
    {
        const char *name = json_string_value(json_object_get(v, "name"));
        json_t *statuses = json_object_get(v, "result_status");
        json_t *reasons = json_object_get(v, "result_reason");
        json_t *ops = json_object_get(v, "operations");
        struct kms_kmip_response r;
        uint8_t *msg;
        parse_vector(name, &r, &msg);
        cr_assert_eq(r.n_items, json_array_size(statuses), "%s: %zu items", name, r.n_items);
        size_t failed = 0;
        for (size_t k = 0; k < r.n_items; k++) {
            const struct kms_kmip_batch_result *it = &r.items[k];
            char got[64];
            upper_snake(kms_kmip_status_name(it->status), got, sizeof(got));
            cr_assert_str_eq(got, json_string_value(json_array_get(statuses, k)), "%s item %zu", name, k);
            if (it->status != KMS_KMIP_STATUS_SUCCESS) {
                cr_assert(it->has_reason, "%s: failure without a reason", name);
                upper_snake(kms_kmip_reason_name(it->reason), got, sizeof(got));
                cr_assert_str_eq(got, json_string_value(json_array_get(reasons, failed)), "%s", name);
                failed++;
                cr_assert_neq(it->message[0], '\0', "%s: no message", name);
                cr_assert_null(it->payload);
            } else {
                cr_assert_not_null(it->payload, "%s: success without payload", name);
            }
            /* PyKMIP leaves the Operation out of answers to messages it could not process */
            if (it->has_operation && json_array_size(ops) == r.n_items) {
                char op[64];
                upper_snake(kms_kmip_operation_name(it->operation), op, sizeof(op));
                const char *want = json_string_value(json_array_get(ops, k));
                cr_assert_str_eq(op, want, "%s: operation %s, recorded %s", name, op, want);
            }
            if (!it->has_operation)
                cr_assert_neq(it->status, KMS_KMIP_STATUS_SUCCESS, "%s: only failures lack the Operation", name);
        }
        cr_assert_eq(failed, json_array_size(reasons), "%s", name);
        char ver[16];
        snprintf(ver, sizeof(ver), "%d.%d", r.version.major, r.version.minor);
        cr_assert_str_eq(ver, json_string_value(json_object_get(v, "response_version")), "%s", name);
        cr_assert_gt(r.timestamp, 0, "%s: no TimeStamp", name);
        kms_kmip_response_clear(&r);
        cr_assert_null(r.doc);
        free(msg);
    }
    json_decref(index);
}

/* ---- payloads ---------------------------------------------------------- */

Test(kmip_msg, discover_versions_answer, .timeout = 60)
{
    struct kms_kmip_response r;
    const struct kms_ttlv *pl;
    uint8_t *msg;
    struct kms_kmip_version v[8];
    size_t n;
    parse_vector("01_discover_versions", &r, &msg);
    cr_assert_eq(kms_kmip_response_expect(&r, KMS_KMIP_OP_DISCOVER_VERSIONS, &pl), KMS_OK);
    cr_assert_eq(kms_kmip_parse_versions(pl, v, 8, &n), KMS_OK);
    static const int want[][2] = {{2, 0}, {1, 4}, {1, 3}, {1, 2}, {1, 1}, {1, 0}};
    cr_assert_eq(n, 6);
    for (size_t i = 0; i < 6; i++)
        cr_assert(v[i].major == want[i][0] && v[i].minor == want[i][1], "version %zu", i);
    cr_assert_eq(kms_kmip_parse_versions(pl, v, 2, &n), KMS_OK);
    cr_assert_eq(n, 2, "capped at cap");
    cr_assert_eq(kms_kmip_response_expect(&r, KMS_KMIP_OP_QUERY, &pl), KMS_ERR_BACKEND, "answer to another op");
    cr_assert_null(pl);
    kms_kmip_response_clear(&r);
    free(msg);
}

Test(kmip_msg, query_answer, .timeout = 60)
{
    struct kms_kmip_response r;
    const struct kms_ttlv *pl;
    uint8_t *msg;
    struct kms_kmip_server_info info;
    parse_vector("02_query", &r, &msg);
    cr_assert_eq(kms_kmip_response_expect(&r, KMS_KMIP_OP_QUERY, &pl), KMS_OK);
    cr_assert_eq(kms_kmip_parse_query(pl, &info), KMS_OK);
    cr_assert_eq(info.n_operations, 18);
    cr_assert_eq(info.operations[0], KMS_KMIP_OP_CREATE);
    cr_assert_eq(info.operations[13], KMS_KMIP_OP_ENCRYPT);
    cr_assert_eq(info.n_objects, 0);
    cr_assert_str_eq(info.vendor, "PyKMIP 0.10.0 Software Server");
    cr_assert_eq(info.has_server_information, 0);
    kms_kmip_response_clear(&r);
    free(msg);
}

Test(kmip_msg, create_locate_and_attributes_answers, .timeout = 60)
{
    struct kms_kmip_response r;
    const struct kms_ttlv *pl;
    uint8_t *msg;
    char uid[KMS_KMIP_UID_MAX + 1];
    parse_vector("03_create_aes256", &r, &msg);
    cr_assert_eq(kms_kmip_response_expect(&r, KMS_KMIP_OP_CREATE, &pl), KMS_OK);
    cr_assert_eq(kms_kmip_parse_uid(pl, uid), KMS_OK);
    cr_assert_str_eq(uid, "2");
    kms_kmip_response_clear(&r);
    free(msg);

    char uids[4][KMS_KMIP_UID_MAX + 1];
    size_t found = 99;
    parse_vector("07_locate_by_name", &r, &msg);
    cr_assert_eq(kms_kmip_response_expect(&r, KMS_KMIP_OP_LOCATE, &pl), KMS_OK);
    cr_assert_eq(kms_kmip_parse_locate(pl, uids, 4, &found), KMS_OK);
    cr_assert_eq(found, 1);
    cr_assert_str_eq(uids[0], "2");
    kms_kmip_response_clear(&r);
    free(msg);

    parse_vector("40_locate_other_owner", &r, &msg);
    cr_assert_eq(kms_kmip_response_expect(&r, KMS_KMIP_OP_LOCATE, &pl), KMS_OK);
    cr_assert_eq(kms_kmip_parse_locate(pl, uids, 4, &found), KMS_OK);
    cr_assert_eq(found, 0, "other owners' keys are invisible");
    kms_kmip_response_clear(&r);
    free(msg);

    struct kms_kmip_attributes a;
    parse_vector("08_get_attributes_all", &r, &msg);
    cr_assert_eq(kms_kmip_response_expect(&r, KMS_KMIP_OP_GET_ATTRIBUTES, &pl), KMS_OK);
    cr_assert_eq(kms_kmip_parse_attributes(pl, &a), KMS_OK, "%s", kms_error_detail());
    cr_assert_str_eq(a.uid, "2");
    cr_assert_eq(a.object_type, KMS_KMIP_OBJECT_SYMMETRIC_KEY);
    cr_assert_eq(a.state, KMS_KMIP_STATE_ACTIVE);
    cr_assert_eq(a.algorithm, KMS_KMIP_ALG_AES);
    cr_assert_eq(a.length, 256);
    cr_assert(a.has_usage_mask);
    cr_assert_eq(a.usage_mask, 12);
    cr_assert_eq(a.initial_date, 1795324216);
    cr_assert_str_eq(a.policy, "default");
    cr_assert_eq(a.n_names, 1);
    cr_assert_str_eq(a.names[0], "site-master-key");
    kms_kmip_response_clear(&r);
    free(msg);

    parse_vector("09_get_attributes_some", &r, &msg);
    cr_assert_eq(kms_kmip_response_expect(&r, KMS_KMIP_OP_GET_ATTRIBUTES, &pl), KMS_OK);
    cr_assert_eq(kms_kmip_parse_attributes(pl, &a), KMS_OK);
    cr_assert_eq(a.state, KMS_KMIP_STATE_ACTIVE);
    cr_assert_eq(a.n_names, 0);
    cr_assert_eq(a.has_usage_mask, 0);
    kms_kmip_response_clear(&r);
    free(msg);
}

Test(kmip_msg, gcm_answers, .timeout = 60)
{
    struct kms_kmip_response r;
    const struct kms_ttlv *pl;
    uint8_t *msg;
    const uint8_t *data, *tag;
    size_t data_len, tag_len;
    parse_vector("13_kat_encrypt_gcm_v14", &r, &msg);
    cr_assert_eq(kms_kmip_response_expect(&r, KMS_KMIP_OP_ENCRYPT, &pl), KMS_OK);
    cr_assert_eq(kms_kmip_parse_encrypt(pl, &data, &data_len, &tag, &tag_len), KMS_OK);
    cr_assert_eq(data_len, 32);
    cr_assert_eq(memcmp(data, kat_ct, 32), 0);
    cr_assert_eq(tag_len, 16);
    cr_assert_eq(memcmp(tag, kat_tag, 16), 0);
    kms_kmip_response_clear(&r);
    free(msg);

    parse_vector("14_kat_decrypt_gcm_v14", &r, &msg);
    cr_assert_eq(kms_kmip_response_expect(&r, KMS_KMIP_OP_DECRYPT, &pl), KMS_OK);
    cr_assert_eq(kms_kmip_parse_decrypt(pl, &data, &data_len), KMS_OK);
    cr_assert_eq(data_len, 32);
    cr_assert_eq(memcmp(data, kat_pt, 32), 0);
    kms_kmip_response_clear(&r);
    free(msg);

    /* GCM under KMIP 1.2: the server drops the tag */
    parse_vector("17_gcm_v12_no_tag_returned", &r, &msg);
    cr_assert_eq(kms_kmip_response_expect(&r, KMS_KMIP_OP_ENCRYPT, &pl), KMS_OK);
    cr_assert_eq(kms_kmip_parse_encrypt(pl, &data, &data_len, &tag, &tag_len), KMS_OK);
    cr_assert_null(tag);
    cr_assert_eq(tag_len, 0);
    kms_kmip_response_clear(&r);
    free(msg);
}

/* ---- results to the error table --------------------------------------- */

static kms_rc expect_rc(const char *name, uint32_t op)
{
    struct kms_kmip_response r;
    const struct kms_ttlv *pl = (const struct kms_ttlv *)1;
    uint8_t *msg;
    parse_vector(name, &r, &msg);
    kms_rc rc = kms_kmip_response_expect(&r, op, &pl);
    if (rc != KMS_OK)
        cr_assert_null(pl);
    kms_kmip_response_clear(&r);
    free(msg);
    return rc;
}

Test(kmip_msg, results_map_to_the_error_table, .timeout = 60)
{
    cr_assert_eq(expect_rc("15_gcm_bad_tag", KMS_KMIP_OP_DECRYPT), KMS_ERR_UNWRAP);
    cr_assert(strstr(kms_error_detail(), "General Failure") != NULL, "%s", kms_error_detail());
    cr_assert_eq(expect_rc("84_oasis_gcm_decrypt_bad_tag", KMS_KMIP_OP_DECRYPT), KMS_ERR_UNWRAP);
    cr_assert_eq(expect_rc("30_err_item_not_found", KMS_KMIP_OP_ENCRYPT), KMS_ERR_KEY_NOT_FOUND);
    cr_assert(strstr(kms_error_detail(), "Could not locate object: 999999") != NULL, "%s", kms_error_detail());
    cr_assert_eq(expect_rc("39_err_other_owner", KMS_KMIP_OP_ENCRYPT), KMS_ERR_BACKEND);
    cr_assert(strstr(kms_error_detail(), "Permission Denied") != NULL, "%s", kms_error_detail());
    cr_assert_eq(expect_rc("35_err_gcm_no_tag_length", KMS_KMIP_OP_ENCRYPT), KMS_ERR_BACKEND);
    cr_assert(strstr(kms_error_detail(), "Invalid Field") != NULL);
    /* a version-1.0 answer without Operation: tolerated, the server's message kept */
    cr_assert_eq(expect_rc("50_err_protocol_1_5", KMS_KMIP_OP_QUERY), KMS_ERR_BACKEND);
    cr_assert(strstr(kms_error_detail(), "Invalid Message: Error parsing request message") != NULL, "%s",
              kms_error_detail());
    cr_assert_eq(expect_rc("59_err_client_cert_without_eku", KMS_KMIP_OP_QUERY), KMS_ERR_BACKEND);
    cr_assert(strstr(kms_error_detail(), "Authentication Not Successful") != NULL);
    cr_assert_eq(expect_rc("54_err_unsupported_op_rekey", 0x04), KMS_ERR_BACKEND);
    /* two batch items: kmsd only sends one, so two answers are an error */
    cr_assert_eq(expect_rc("20_batch_two_encrypts", KMS_KMIP_OP_ENCRYPT), KMS_ERR_BACKEND);
    cr_assert_eq(expect_rc("14_kat_decrypt_gcm_v14", KMS_KMIP_OP_DECRYPT), KMS_OK);

    struct kms_kmip_batch_result it = {.status = 1, .has_reason = 1, .reason = KMS_KMIP_REASON_CRYPTOGRAPHIC_FAILURE};
    cr_assert_eq(kms_kmip_result_rc(&it, KMS_KMIP_OP_DECRYPT), KMS_ERR_UNWRAP, "conformant servers' bad tag");
    cr_assert_eq(kms_kmip_result_rc(&it, KMS_KMIP_OP_ENCRYPT), KMS_ERR_BACKEND, "only Decrypt authenticates");
    it.reason = KMS_KMIP_REASON_GENERAL_FAILURE;
    cr_assert_eq(kms_kmip_result_rc(&it, KMS_KMIP_OP_ENCRYPT), KMS_ERR_BACKEND);
    it.status = KMS_KMIP_STATUS_OPERATION_PENDING;
    it.has_reason = 0;
    cr_assert_eq(kms_kmip_result_rc(&it, KMS_KMIP_OP_DECRYPT), KMS_ERR_BACKEND, "asynchronous answers");
    it.status = KMS_KMIP_STATUS_OPERATION_FAILED;
    it.reason = KMS_KMIP_REASON_ITEM_NOT_FOUND;
    cr_assert_eq(kms_kmip_result_rc(&it, KMS_KMIP_OP_DECRYPT), KMS_ERR_BACKEND, "no reason field given");
    it.has_reason = 1;
    cr_assert_eq(kms_kmip_result_rc(&it, KMS_KMIP_OP_DECRYPT), KMS_ERR_KEY_NOT_FOUND);
    it.status = KMS_KMIP_STATUS_SUCCESS;
    cr_assert_eq(kms_kmip_result_rc(&it, KMS_KMIP_OP_DECRYPT), KMS_OK);
}

/* ---- malformed responses ---------------------------------------------- */

struct rsp {
    int has_header, has_count, count, items, has_status, dup_status, status_type_int, with_op, op, has_payload;
    int uid_len, message_bin;
};

static void build_response(const struct rsp *s, struct kms_buf *b)
{
    struct kms_ttlv_enc e;
    kms_buf_init(b, KMS_TTLV_MAX_MESSAGE);
    kms_ttlv_enc_init(&e, b);
    cr_assert_eq(kms_ttlv_begin(&e, KMS_KMIP_TAG_RESPONSE_MESSAGE), KMS_OK);
    if (s->has_header) {
        cr_assert_eq(kms_ttlv_begin(&e, KMS_KMIP_TAG_RESPONSE_HEADER), KMS_OK);
        cr_assert_eq(kms_ttlv_begin(&e, KMS_KMIP_TAG_PROTOCOL_VERSION), KMS_OK);
        cr_assert_eq(kms_ttlv_put_int(&e, KMS_KMIP_TAG_PROTOCOL_VERSION_MAJOR, 1), KMS_OK);
        cr_assert_eq(kms_ttlv_put_int(&e, KMS_KMIP_TAG_PROTOCOL_VERSION_MINOR, 4), KMS_OK);
        cr_assert_eq(kms_ttlv_end(&e), KMS_OK);
        cr_assert_eq(kms_ttlv_put_datetime(&e, KMS_KMIP_TAG_TIME_STAMP, 1700000000), KMS_OK);
        if (s->has_count)
            cr_assert_eq(kms_ttlv_put_int(&e, KMS_KMIP_TAG_BATCH_COUNT, s->count), KMS_OK);
        cr_assert_eq(kms_ttlv_end(&e), KMS_OK);
    }
    for (int i = 0; i < s->items; i++) {
        cr_assert_eq(kms_ttlv_begin(&e, KMS_KMIP_TAG_BATCH_ITEM), KMS_OK);
        if (s->with_op)
            cr_assert_eq(kms_ttlv_put_enum(&e, KMS_KMIP_TAG_OPERATION, (uint32_t)s->op), KMS_OK);
        if (s->has_status) {
            if (s->status_type_int)
                cr_assert_eq(kms_ttlv_put_int(&e, KMS_KMIP_TAG_RESULT_STATUS, 0), KMS_OK);
            else
                cr_assert_eq(kms_ttlv_put_enum(&e, KMS_KMIP_TAG_RESULT_STATUS, 0), KMS_OK);
        }
        if (s->dup_status)
            cr_assert_eq(kms_ttlv_put_enum(&e, KMS_KMIP_TAG_RESULT_STATUS, 1), KMS_OK);
        if (s->message_bin)
            cr_assert_eq(kms_ttlv_put_text(&e, KMS_KMIP_TAG_RESULT_MESSAGE, "tab\there", 8), KMS_OK);
        if (s->has_payload) {
            char uid[400];
            memset(uid, 'u', sizeof(uid));
            cr_assert_eq(kms_ttlv_begin(&e, KMS_KMIP_TAG_RESPONSE_PAYLOAD), KMS_OK);
            cr_assert_eq(kms_ttlv_put_text(&e, KMS_KMIP_TAG_UNIQUE_IDENTIFIER, uid, (size_t)s->uid_len), KMS_OK);
            cr_assert_eq(kms_ttlv_end(&e), KMS_OK);
        }
        cr_assert_eq(kms_ttlv_end(&e), KMS_OK);
    }
    cr_assert_eq(kms_ttlv_end(&e), KMS_OK);
}

static const struct rsp good = {.has_header = 1, .has_count = 1, .count = 1, .items = 1, .has_status = 1,
                                .with_op = 1, .op = KMS_KMIP_OP_ACTIVATE, .has_payload = 1, .uid_len = 3};

/* Builds s, parses it and, when it parses, expects Activate and reads the UID. */
static kms_rc run_response(struct rsp s)
{
    struct kms_buf b;
    struct kms_kmip_response r;
    const struct kms_ttlv *pl;
    char uid[KMS_KMIP_UID_MAX + 1];
    build_response(&s, &b);
    kms_rc rc = kms_kmip_response_parse(b.data, b.len, &r);
    if (rc == KMS_OK) {
        rc = kms_kmip_response_expect(&r, KMS_KMIP_OP_ACTIVATE, &pl);
        if (rc == KMS_OK)
            rc = kms_kmip_parse_uid(pl, uid);
        kms_kmip_response_clear(&r);
    } else {
        cr_assert_null(r.doc);
    }
    kms_buf_free(&b);
    return rc;
}

Test(kmip_msg, malformed_responses_are_the_backends_error, .timeout = 60)
{
    struct rsp s = good;
    cr_assert_eq(run_response(s), KMS_OK, "%s", kms_error_detail());
    s = good, s.has_header = 0;
    cr_assert_eq(run_response(s), KMS_ERR_BACKEND, "no header");
    s = good, s.has_count = 0;
    cr_assert_eq(run_response(s), KMS_ERR_BACKEND, "no batch count");
    s = good, s.count = 2;
    cr_assert_eq(run_response(s), KMS_ERR_BACKEND, "count 2, one item");
    s = good, s.count = 0, s.items = 0;
    cr_assert_eq(run_response(s), KMS_ERR_BACKEND, "no items");
    s = good, s.count = 9, s.items = 9;
    cr_assert_eq(run_response(s), KMS_ERR_BACKEND, "too many items");
    s = good, s.has_status = 0;
    cr_assert_eq(run_response(s), KMS_ERR_BACKEND, "no result status");
    s = good, s.dup_status = 1;
    cr_assert_eq(run_response(s), KMS_ERR_BACKEND, "duplicate result status");
    cr_assert(strstr(kms_error_detail(), "more than once") != NULL, "%s", kms_error_detail());
    s = good, s.status_type_int = 1;
    cr_assert_eq(run_response(s), KMS_ERR_BACKEND, "result status of the wrong type");
    s = good, s.op = KMS_KMIP_OP_DESTROY;
    cr_assert_eq(run_response(s), KMS_ERR_BACKEND, "answer for another operation");
    s = good, s.with_op = 0;
    cr_assert_eq(run_response(s), KMS_OK, "no Operation is tolerated");
    s = good, s.has_payload = 0;
    cr_assert_eq(run_response(s), KMS_ERR_BACKEND, "success without payload");
    s = good, s.uid_len = 0;
    cr_assert_eq(run_response(s), KMS_ERR_BACKEND, "empty UID");
    s = good, s.uid_len = 256;
    cr_assert_eq(run_response(s), KMS_ERR_BACKEND, "UID too long");
    s = good, s.uid_len = 255;
    cr_assert_eq(run_response(s), KMS_OK);

    /* a request is not a response; garbage is not TTLV */
    struct kms_buf b;
    struct kms_kmip_response r;
    kms_buf_init(&b, KMS_TTLV_MAX_MESSAGE);
    cr_assert_eq(kms_kmip_req_activate(&b, V14, "1"), KMS_OK);
    cr_assert_eq(kms_kmip_response_parse(b.data, b.len, &r), KMS_ERR_BACKEND);
    cr_assert_eq(kms_kmip_response_parse((const uint8_t *)"HTTP/1.1 400 Bad Request\r\n\r\n", 28, &r),
                 KMS_ERR_BACKEND);
    cr_assert(strstr(kms_error_detail(), "KMIP response") != NULL);
    kms_buf_free(&b);
}

Test(kmip_msg, result_messages_are_made_printable, .timeout = 60)
{
    struct rsp s = good;
    struct kms_buf b;
    struct kms_kmip_response r;
    s.message_bin = 1;
    build_response(&s, &b);
    cr_assert_eq(kms_kmip_response_parse(b.data, b.len, &r), KMS_OK);
    cr_assert_str_eq(r.items[0].message, "tab?here");
    kms_kmip_response_clear(&r);
    kms_buf_free(&b);
}

/* Every prefix of a real response fails cleanly as the backend's error. */
Test(kmip_msg, truncated_responses, .timeout = 60)
{
    size_t len;
    uint8_t *msg = load("08_get_attributes_all", "resp", &len);
    for (size_t cut = 0; cut < len; cut++) {
        uint8_t *p = malloc(cut ? cut : 1);
        memcpy(p, msg, cut);
        struct kms_kmip_response r;
        cr_assert_eq(kms_kmip_response_parse(p, cut, &r), KMS_ERR_BACKEND, "cut at %zu", cut);
        cr_assert_null(r.doc);
        free(p);
    }
    free(msg);
}

Test(kmip_msg, attribute_values_of_the_wrong_type, .timeout = 60)
{
    static const char *const names[] = {"State", "Cryptographic Length", "Initial Date", "Name", "Object Type"};
    for (size_t i = 0; i < KMS_ARRAY_LEN(names); i++) {
        struct kms_buf b;
        struct kms_ttlv_enc e;
        struct kms_ttlv_doc *d = NULL;
        struct kms_kmip_attributes a;
        kms_buf_init(&b, 4096);
        kms_ttlv_enc_init(&e, &b);
        cr_assert_eq(kms_ttlv_begin(&e, KMS_KMIP_TAG_RESPONSE_PAYLOAD), KMS_OK);
        cr_assert_eq(kms_ttlv_begin(&e, KMS_KMIP_TAG_ATTRIBUTE), KMS_OK);
        cr_assert_eq(kms_ttlv_put_text(&e, KMS_KMIP_TAG_ATTRIBUTE_NAME, names[i], strlen(names[i])), KMS_OK);
        cr_assert_eq(kms_ttlv_put_text(&e, KMS_KMIP_TAG_ATTRIBUTE_VALUE, "x", 1), KMS_OK);
        cr_assert_eq(kms_ttlv_end(&e), KMS_OK);
        cr_assert_eq(kms_ttlv_end(&e), KMS_OK);
        cr_assert_eq(kms_ttlv_decode(b.data, b.len, &d), KMS_OK);
        cr_assert_eq(kms_kmip_parse_attributes(kms_ttlv_doc_root(d), &a), KMS_ERR_BACKEND, "%s", names[i]);
        kms_ttlv_doc_free(&d);
        kms_buf_free(&b);
    }
}

Test(kmip_msg, names, .timeout = 60)
{
    cr_assert_str_eq(kms_kmip_operation_name(KMS_KMIP_OP_DECRYPT), "Decrypt");
    cr_assert_str_eq(kms_kmip_operation_name(0x99), "unknown");
    cr_assert_str_eq(kms_kmip_reason_name(KMS_KMIP_REASON_GENERAL_FAILURE), "General Failure");
    cr_assert_str_eq(kms_kmip_state_name(KMS_KMIP_STATE_PRE_ACTIVE), "Pre-Active");
    cr_assert_str_eq(kms_kmip_algorithm_name(KMS_KMIP_ALG_AES), "AES");
    cr_assert_str_eq(kms_kmip_object_type_name(KMS_KMIP_OBJECT_SYMMETRIC_KEY), "Symmetric Key");
    cr_assert_str_eq(kms_kmip_status_name(7), "unknown");
}
