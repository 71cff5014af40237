#include "hsm/kmip/kmip_msg.h"

#include <stdio.h>
#include <string.h>

/* ---- names ------------------------------------------------------------- */

struct name_entry {
    uint32_t v;
    const char *name;
};

static const char *lookup(const struct name_entry *t, size_t n, uint32_t v)
{
    for (size_t i = 0; i < n; i++)
        if (t[i].v == v)
            return t[i].name;
    return "unknown";
}

static const struct name_entry operation_names[] = {
    {0x01, "Create"},          {0x02, "Create Key Pair"},   {0x03, "Register"},
    {0x04, "Re-key"},          {0x05, "Derive Key"},        {0x06, "Certify"},
    {0x07, "Re-certify"},      {0x08, "Locate"},            {0x09, "Check"},
    {0x0A, "Get"},             {0x0B, "Get Attributes"},    {0x0C, "Get Attribute List"},
    {0x0D, "Add Attribute"},   {0x0E, "Modify Attribute"},  {0x0F, "Delete Attribute"},
    {0x10, "Obtain Lease"},    {0x11, "Get Usage Allocation"}, {0x12, "Activate"},
    {0x13, "Revoke"},          {0x14, "Destroy"},           {0x15, "Archive"},
    {0x16, "Recover"},         {0x17, "Validate"},          {0x18, "Query"},
    {0x19, "Cancel"},          {0x1A, "Poll"},              {0x1B, "Notify"},
    {0x1C, "Put"},             {0x1D, "Re-key Key Pair"},   {0x1E, "Discover Versions"},
    {0x1F, "Encrypt"},         {0x20, "Decrypt"},           {0x21, "Sign"},
    {0x22, "Signature Verify"}, {0x23, "MAC"},              {0x24, "MAC Verify"},
    {0x25, "RNG Retrieve"},    {0x26, "RNG Seed"},          {0x27, "Hash"},
    {0x28, "Create Split Key"}, {0x29, "Join Split Key"},   {0x2A, "Import"},
    {0x2B, "Export"},          {0x2C, "Log"},               {0x2D, "Login"},
    {0x2E, "Logout"},          {0x2F, "Delegated Login"},   {0x30, "Adjust Attribute"},
    {0x31, "Set Attribute"},   {0x32, "Set Endpoint Role"}, {0x33, "PKCS#11"},
    {0x34, "Interop"},         {0x35, "Re-Provision"},
};

static const struct name_entry status_names[] = {
    {0, "Success"}, {1, "Operation Failed"}, {2, "Operation Pending"}, {3, "Operation Undone"},
};

static const struct name_entry reason_names[] = {
    {0x01, "Item Not Found"},
    {0x02, "Response Too Large"},
    {0x03, "Authentication Not Successful"},
    {0x04, "Invalid Message"},
    {0x05, "Operation Not Supported"},
    {0x06, "Missing Data"},
    {0x07, "Invalid Field"},
    {0x08, "Feature Not Supported"},
    {0x09, "Operation Canceled By Requester"},
    {0x0A, "Cryptographic Failure"},
    {0x0B, "Illegal Operation"},
    {0x0C, "Permission Denied"},
    {0x0D, "Object Archived"},
    {0x0E, "Index Out Of Bounds"},
    {0x0F, "Application Namespace Not Supported"},
    {0x10, "Key Format Type Not Supported"},
    {0x11, "Key Compression Type Not Supported"},
    {0x12, "Encoding Option Error"},
    {0x13, "Key Value Not Present"},
    {0x14, "Attestation Required"},
    {0x15, "Attestation Failed"},
    {0x16, "Sensitive"},
    {0x17, "Not Extractable"},
    {0x18, "Object Already Exists"},
    {0x24, "Bad Cryptographic Parameters"},
    {0x3F, "Unsupported Protocol Version"},
    {0x43, "Wrong Key Lifecycle State"},
    {0x100, "General Failure"},
};

static const struct name_entry state_names[] = {
    {1, "Pre-Active"}, {2, "Active"},    {3, "Deactivated"},
    {4, "Compromised"}, {5, "Destroyed"}, {6, "Destroyed Compromised"},
};

static const struct name_entry algorithm_names[] = {
    {0x01, "DES"},         {0x02, "3DES"},        {0x03, "AES"},         {0x04, "RSA"},
    {0x05, "DSA"},         {0x06, "ECDSA"},       {0x07, "HMAC-SHA1"},   {0x08, "HMAC-SHA224"},
    {0x09, "HMAC-SHA256"}, {0x0A, "HMAC-SHA384"}, {0x0B, "HMAC-SHA512"}, {0x0C, "HMAC-MD5"},
    {0x0D, "DH"},          {0x0E, "ECDH"},        {0x10, "Blowfish"},    {0x11, "Camellia"},
    {0x12, "CAST5"},       {0x13, "IDEA"},        {0x16, "RC4"},         {0x1A, "EC"},
    {0x1C, "ChaCha20"},    {0x1E, "ChaCha20Poly1305"},
};

static const struct name_entry object_type_names[] = {
    {1, "Certificate"}, {2, "Symmetric Key"}, {3, "Public Key"},  {4, "Private Key"}, {5, "Split Key"},
    {6, "Template"},    {7, "Secret Data"},   {8, "Opaque Object"}, {9, "PGP Key"},
};

const char *kms_kmip_operation_name(uint32_t op)
{
    return lookup(operation_names, KMS_ARRAY_LEN(operation_names), op);
}
const char *kms_kmip_status_name(uint32_t s) { return lookup(status_names, KMS_ARRAY_LEN(status_names), s); }
const char *kms_kmip_reason_name(uint32_t r) { return lookup(reason_names, KMS_ARRAY_LEN(reason_names), r); }
const char *kms_kmip_state_name(uint32_t s) { return lookup(state_names, KMS_ARRAY_LEN(state_names), s); }
const char *kms_kmip_algorithm_name(uint32_t a)
{
    return lookup(algorithm_names, KMS_ARRAY_LEN(algorithm_names), a);
}
const char *kms_kmip_object_type_name(uint32_t t)
{
    return lookup(object_type_names, KMS_ARRAY_LEN(object_type_names), t);
}

/* ---- requests ---------------------------------------------------------- */

static int at_least(struct kms_kmip_version v, int32_t major, int32_t minor)
{
    return v.major > major || (v.major == major && v.minor >= minor);
}

/* A UID or name: 1..max bytes of UTF-8 without NUL. */
static kms_rc text_arg(const char *what, const char *s, size_t max, size_t *len)
{
    if (s == NULL)
        return kms_fail(KMS_ERR_INVALID_FIELD, "KMIP: no %s", what);
    *len = strnlen(s, max + 1);
    if (*len == 0 || *len > max)
        return kms_fail(KMS_ERR_INVALID_FIELD, "KMIP: %s of %zu bytes (1..%zu)", what, *len, max);
    if (!kms_ttlv_text_valid((const uint8_t *)s, *len))
        return kms_fail(KMS_ERR_INVALID_FIELD, "KMIP: %s is not UTF-8", what);
    return KMS_OK;
}

/* KMIP 1.4 §7.2: RequestMessage { RequestHeader { ProtocolVersion,
 * BatchCount = 1 }, BatchItem { Operation, RequestPayload { ... } } } */
static kms_rc begin_request(struct kms_ttlv_enc *e, struct kms_kmip_version v, uint32_t op)
{
    KMS_GUARD(kms_ttlv_begin(e, KMS_KMIP_TAG_REQUEST_MESSAGE));
    KMS_GUARD(kms_ttlv_begin(e, KMS_KMIP_TAG_REQUEST_HEADER));
    KMS_GUARD(kms_ttlv_begin(e, KMS_KMIP_TAG_PROTOCOL_VERSION));
    KMS_GUARD(kms_ttlv_put_int(e, KMS_KMIP_TAG_PROTOCOL_VERSION_MAJOR, v.major));
    KMS_GUARD(kms_ttlv_put_int(e, KMS_KMIP_TAG_PROTOCOL_VERSION_MINOR, v.minor));
    KMS_GUARD(kms_ttlv_end(e));
    KMS_GUARD(kms_ttlv_put_int(e, KMS_KMIP_TAG_BATCH_COUNT, 1));
    KMS_GUARD(kms_ttlv_end(e));
    KMS_GUARD(kms_ttlv_begin(e, KMS_KMIP_TAG_BATCH_ITEM));
    KMS_GUARD(kms_ttlv_put_enum(e, KMS_KMIP_TAG_OPERATION, op));
    return kms_ttlv_begin(e, KMS_KMIP_TAG_REQUEST_PAYLOAD);
}

static kms_rc end_request(struct kms_ttlv_enc *e)
{
    KMS_GUARD(kms_ttlv_end(e)); /* payload */
    KMS_GUARD(kms_ttlv_end(e)); /* batch item */
    KMS_GUARD(kms_ttlv_end(e)); /* message */
    return kms_ttlv_enc_finish(e);
}

/* Undoes a failed build: wipes what it appended. */
static kms_rc finish(struct kms_buf *out, size_t start, kms_rc rc)
{
    if (rc != KMS_OK && out->len > start) {
        kms_buf_reset(out);
    }
    return rc;
}

/* Name { NameValue, NameType = Uninterpreted Text String } as an Attribute
 * (KMIP 1.x: AttributeName "Name", AttributeValue is the structure). */
static kms_rc put_name_attribute(struct kms_ttlv_enc *e, const char *name, size_t len)
{
    KMS_GUARD(kms_ttlv_begin(e, KMS_KMIP_TAG_ATTRIBUTE));
    KMS_GUARD(kms_ttlv_put_text(e, KMS_KMIP_TAG_ATTRIBUTE_NAME, "Name", 4));
    KMS_GUARD(kms_ttlv_begin(e, KMS_KMIP_TAG_ATTRIBUTE_VALUE));
    KMS_GUARD(kms_ttlv_put_text(e, KMS_KMIP_TAG_NAME_VALUE, name, len));
    KMS_GUARD(kms_ttlv_put_enum(e, KMS_KMIP_TAG_NAME_TYPE, KMS_KMIP_NAME_UNINTERPRETED_TEXT));
    KMS_GUARD(kms_ttlv_end(e));
    return kms_ttlv_end(e);
}

static kms_rc put_attribute_enum(struct kms_ttlv_enc *e, const char *name, uint32_t v)
{
    KMS_GUARD(kms_ttlv_begin(e, KMS_KMIP_TAG_ATTRIBUTE));
    KMS_GUARD(kms_ttlv_put_text(e, KMS_KMIP_TAG_ATTRIBUTE_NAME, name, strlen(name)));
    KMS_GUARD(kms_ttlv_put_enum(e, KMS_KMIP_TAG_ATTRIBUTE_VALUE, v));
    return kms_ttlv_end(e);
}

static kms_rc put_attribute_int(struct kms_ttlv_enc *e, const char *name, int32_t v)
{
    KMS_GUARD(kms_ttlv_begin(e, KMS_KMIP_TAG_ATTRIBUTE));
    KMS_GUARD(kms_ttlv_put_text(e, KMS_KMIP_TAG_ATTRIBUTE_NAME, name, strlen(name)));
    KMS_GUARD(kms_ttlv_put_int(e, KMS_KMIP_TAG_ATTRIBUTE_VALUE, v));
    return kms_ttlv_end(e);
}

static kms_rc build_discover(struct kms_ttlv_enc *e, struct kms_kmip_version v, const struct kms_kmip_version *offer,
                             size_t n)
{
    KMS_GUARD(begin_request(e, v, KMS_KMIP_OP_DISCOVER_VERSIONS));
    for (size_t i = 0; i < n; i++) {
        KMS_GUARD(kms_ttlv_begin(e, KMS_KMIP_TAG_PROTOCOL_VERSION));
        KMS_GUARD(kms_ttlv_put_int(e, KMS_KMIP_TAG_PROTOCOL_VERSION_MAJOR, offer[i].major));
        KMS_GUARD(kms_ttlv_put_int(e, KMS_KMIP_TAG_PROTOCOL_VERSION_MINOR, offer[i].minor));
        KMS_GUARD(kms_ttlv_end(e));
    }
    return end_request(e);
}

kms_rc kms_kmip_req_discover_versions(struct kms_buf *out, struct kms_kmip_version v,
                                      const struct kms_kmip_version *offer, size_t n)
{
    struct kms_ttlv_enc e;
    size_t start = out->len;
    if (n > 0 && offer == NULL)
        return kms_fail(KMS_ERR_INVALID_FIELD, "KMIP: no versions to offer");
    kms_ttlv_enc_init(&e, out);
    return finish(out, start, build_discover(&e, v, offer, n));
}

static kms_rc build_query(struct kms_ttlv_enc *e, struct kms_kmip_version v, const uint32_t *functions, size_t n)
{
    KMS_GUARD(begin_request(e, v, KMS_KMIP_OP_QUERY));
    for (size_t i = 0; i < n; i++)
        KMS_GUARD(kms_ttlv_put_enum(e, KMS_KMIP_TAG_QUERY_FUNCTION, functions[i]));
    return end_request(e);
}

kms_rc kms_kmip_req_query(struct kms_buf *out, struct kms_kmip_version v, const uint32_t *functions, size_t n)
{
    struct kms_ttlv_enc e;
    size_t start = out->len;
    if (n > 0 && functions == NULL)
        return kms_fail(KMS_ERR_INVALID_FIELD, "KMIP: no query functions");
    kms_ttlv_enc_init(&e, out);
    return finish(out, start, build_query(&e, v, functions, n));
}

/* KMIP 1.4 §4.1: ObjectType, TemplateAttribute { Attribute... } in the order
 * PyKMIP's own client sends (vector 03). */
static kms_rc build_create(struct kms_ttlv_enc *e, struct kms_kmip_version v, const char *name, size_t len)
{
    KMS_GUARD(begin_request(e, v, KMS_KMIP_OP_CREATE));
    KMS_GUARD(kms_ttlv_put_enum(e, KMS_KMIP_TAG_OBJECT_TYPE, KMS_KMIP_OBJECT_SYMMETRIC_KEY));
    KMS_GUARD(kms_ttlv_begin(e, KMS_KMIP_TAG_TEMPLATE_ATTRIBUTE));
    KMS_GUARD(put_attribute_enum(e, "Cryptographic Algorithm", KMS_KMIP_ALG_AES));
    KMS_GUARD(put_attribute_int(e, "Cryptographic Length", 256));
    KMS_GUARD(put_attribute_int(e, "Cryptographic Usage Mask", KMS_KMIP_USAGE_ENCRYPT | KMS_KMIP_USAGE_DECRYPT));
    KMS_GUARD(put_name_attribute(e, name, len));
    KMS_GUARD(kms_ttlv_end(e));
    return end_request(e);
}

kms_rc kms_kmip_req_create_aes256(struct kms_buf *out, struct kms_kmip_version v, const char *name)
{
    struct kms_ttlv_enc e;
    size_t start = out->len, len;
    KMS_GUARD(text_arg("key name", name, KMS_KMIP_TEXT_MAX, &len));
    kms_ttlv_enc_init(&e, out);
    return finish(out, start, build_create(&e, v, name, len));
}

static kms_rc build_uid_only(struct kms_ttlv_enc *e, struct kms_kmip_version v, uint32_t op, const char *uid,
                             size_t len)
{
    KMS_GUARD(begin_request(e, v, op));
    KMS_GUARD(kms_ttlv_put_text(e, KMS_KMIP_TAG_UNIQUE_IDENTIFIER, uid, len));
    return end_request(e);
}

kms_rc kms_kmip_req_activate(struct kms_buf *out, struct kms_kmip_version v, const char *uid)
{
    struct kms_ttlv_enc e;
    size_t start = out->len, len;
    KMS_GUARD(text_arg("unique identifier", uid, KMS_KMIP_UID_MAX, &len));
    kms_ttlv_enc_init(&e, out);
    return finish(out, start, build_uid_only(&e, v, KMS_KMIP_OP_ACTIVATE, uid, len));
}

static kms_rc build_locate(struct kms_ttlv_enc *e, struct kms_kmip_version v, const char *name, size_t len)
{
    KMS_GUARD(begin_request(e, v, KMS_KMIP_OP_LOCATE));
    KMS_GUARD(put_name_attribute(e, name, len));
    return end_request(e);
}

kms_rc kms_kmip_req_locate_name(struct kms_buf *out, struct kms_kmip_version v, const char *name)
{
    struct kms_ttlv_enc e;
    size_t start = out->len, len;
    KMS_GUARD(text_arg("key name", name, KMS_KMIP_TEXT_MAX, &len));
    kms_ttlv_enc_init(&e, out);
    return finish(out, start, build_locate(&e, v, name, len));
}

static kms_rc build_get_attributes(struct kms_ttlv_enc *e, struct kms_kmip_version v, const char *uid,
                                   size_t uid_len, const char *const *names, size_t n)
{
    KMS_GUARD(begin_request(e, v, KMS_KMIP_OP_GET_ATTRIBUTES));
    KMS_GUARD(kms_ttlv_put_text(e, KMS_KMIP_TAG_UNIQUE_IDENTIFIER, uid, uid_len));
    for (size_t i = 0; i < n; i++) {
        size_t len;
        KMS_GUARD(text_arg("attribute name", names[i], KMS_KMIP_TEXT_MAX, &len));
        KMS_GUARD(kms_ttlv_put_text(e, KMS_KMIP_TAG_ATTRIBUTE_NAME, names[i], len));
    }
    return end_request(e);
}

kms_rc kms_kmip_req_get_attributes(struct kms_buf *out, struct kms_kmip_version v, const char *uid,
                                   const char *const *names, size_t n)
{
    struct kms_ttlv_enc e;
    size_t start = out->len, len;
    KMS_GUARD(text_arg("unique identifier", uid, KMS_KMIP_UID_MAX, &len));
    if (n > 0 && names == NULL)
        return kms_fail(KMS_ERR_INVALID_FIELD, "KMIP: no attribute names");
    kms_ttlv_enc_init(&e, out);
    return finish(out, start, build_get_attributes(&e, v, uid, len, names, n));
}

/* KMIP 1.4 §4.29/§4.30: UniqueIdentifier, CryptographicParameters
 * { BlockCipherMode = GCM, CryptographicAlgorithm = AES, TagLength = 16 },
 * Data, IVCounterNonce, AuthenticatedEncryptionAdditionalData
 * [, AuthenticatedEncryptionTag] (vectors 13, 14). */
static kms_rc build_gcm(struct kms_ttlv_enc *e, struct kms_kmip_version v, uint32_t op, const char *uid,
                        size_t uid_len, const struct kms_kmip_gcm *g)
{
    KMS_GUARD(begin_request(e, v, op));
    KMS_GUARD(kms_ttlv_put_text(e, KMS_KMIP_TAG_UNIQUE_IDENTIFIER, uid, uid_len));
    KMS_GUARD(kms_ttlv_begin(e, KMS_KMIP_TAG_CRYPTOGRAPHIC_PARAMETERS));
    KMS_GUARD(kms_ttlv_put_enum(e, KMS_KMIP_TAG_BLOCK_CIPHER_MODE, KMS_KMIP_MODE_GCM));
    KMS_GUARD(kms_ttlv_put_enum(e, KMS_KMIP_TAG_CRYPTOGRAPHIC_ALGORITHM, KMS_KMIP_ALG_AES));
    KMS_GUARD(kms_ttlv_put_int(e, KMS_KMIP_TAG_TAG_LENGTH, KMS_KMIP_GCM_TAG_LEN));
    KMS_GUARD(kms_ttlv_end(e));
    KMS_GUARD(kms_ttlv_put_bytes(e, KMS_KMIP_TAG_DATA, g->data, g->data_len));
    KMS_GUARD(kms_ttlv_put_bytes(e, KMS_KMIP_TAG_IV_COUNTER_NONCE, g->nonce, g->nonce_len));
    /* why: an empty AAD is the same as none for GCM; leave the field out */
    if (g->aad_len > 0)
        KMS_GUARD(kms_ttlv_put_bytes(e, KMS_KMIP_TAG_AE_ADDITIONAL_DATA, g->aad, g->aad_len));
    if (op == KMS_KMIP_OP_DECRYPT)
        KMS_GUARD(kms_ttlv_put_bytes(e, KMS_KMIP_TAG_AE_TAG, g->tag, g->tag_len));
    return end_request(e);
}

static kms_rc gcm_request(struct kms_buf *out, struct kms_kmip_version v, uint32_t op, const char *uid,
                          const struct kms_kmip_gcm *g)
{
    struct kms_ttlv_enc e;
    size_t start = out->len, len;
    KMS_GUARD(text_arg("unique identifier", uid, KMS_KMIP_UID_MAX, &len));
    if (!at_least(v, 1, 4))
        return kms_fail(KMS_ERR_INVALID_FIELD, "KMIP: AES-GCM needs KMIP 1.4, not %d.%d", v.major, v.minor);
    if (g == NULL || g->nonce == NULL || g->nonce_len != KMS_KMIP_GCM_NONCE_LEN)
        return kms_fail(KMS_ERR_INVALID_FIELD, "KMIP: AES-GCM needs a %d-byte nonce", KMS_KMIP_GCM_NONCE_LEN);
    if (g->data == NULL && g->data_len > 0)
        return kms_fail(KMS_ERR_INVALID_FIELD, "KMIP: no data");
    if (g->aad == NULL && g->aad_len > 0)
        return kms_fail(KMS_ERR_INVALID_FIELD, "KMIP: no associated data");
    if (op == KMS_KMIP_OP_DECRYPT && (g->tag == NULL || g->tag_len != KMS_KMIP_GCM_TAG_LEN))
        return kms_fail(KMS_ERR_INVALID_FIELD, "KMIP: AES-GCM decrypt needs a %d-byte tag", KMS_KMIP_GCM_TAG_LEN);
    kms_ttlv_enc_init(&e, out);
    return finish(out, start, build_gcm(&e, v, op, uid, len, g));
}

kms_rc kms_kmip_req_encrypt_gcm(struct kms_buf *out, struct kms_kmip_version v, const char *uid,
                                const struct kms_kmip_gcm *g)
{
    return gcm_request(out, v, KMS_KMIP_OP_ENCRYPT, uid, g);
}

kms_rc kms_kmip_req_decrypt_gcm(struct kms_buf *out, struct kms_kmip_version v, const char *uid,
                                const struct kms_kmip_gcm *g)
{
    return gcm_request(out, v, KMS_KMIP_OP_DECRYPT, uid, g);
}

/* ---- responses --------------------------------------------------------- */

/* Any parse failure of a response: the backend's garbage (502). */
static kms_rc garbage(const char *what)
{
    char why[256];
    snprintf(why, sizeof(why), "%s", kms_error_detail());
    return kms_fail(KMS_ERR_BACKEND, "KMIP response: %s%s%s", what, what[0] ? ": " : "", why);
}

#define BAD(...) kms_fail(KMS_ERR_BACKEND, __VA_ARGS__)

static kms_rc one(const struct kms_ttlv *s, uint32_t tag, enum kms_ttlv_type type, const char *what,
                  const struct kms_ttlv **out)
{
    if (kms_ttlv_get_one(s, tag, type, out) != KMS_OK)
        return garbage(what);
    return KMS_OK;
}

static kms_rc required(const struct kms_ttlv *s, uint32_t tag, enum kms_ttlv_type type, const char *what,
                       const struct kms_ttlv **out)
{
    KMS_GUARD(one(s, tag, type, what, out));
    if (*out == NULL)
        return BAD("KMIP response: no %s", what);
    return KMS_OK;
}

/* Printable ASCII copy for logs; others become '?'; truncated to cap - 1. */
static void copy_printable(const struct kms_ttlv *n, char *out, size_t cap)
{
    size_t len = n->len < cap - 1 ? n->len : cap - 1;
    for (size_t i = 0; i < len; i++) {
        uint8_t c = n->value[i];
        out[i] = (c >= 0x20 && c < 0x7f) ? (char)c : '?';
    }
    out[len] = '\0';
}

static kms_rc parse_version(const struct kms_ttlv *pv, struct kms_kmip_version *out)
{
    const struct kms_ttlv *major, *minor;
    KMS_GUARD(required(pv, KMS_KMIP_TAG_PROTOCOL_VERSION_MAJOR, KMS_TTLV_INTEGER, "Protocol Version Major", &major));
    KMS_GUARD(required(pv, KMS_KMIP_TAG_PROTOCOL_VERSION_MINOR, KMS_TTLV_INTEGER, "Protocol Version Minor", &minor));
    if (major->num < 0 || minor->num < 0)
        return BAD("KMIP response: negative protocol version");
    out->major = (int32_t)major->num;
    out->minor = (int32_t)minor->num;
    return KMS_OK;
}

static kms_rc parse_item(const struct kms_ttlv *bi, struct kms_kmip_batch_result *out)
{
    const struct kms_ttlv *op, *status, *reason, *message, *payload;
    memset(out, 0, sizeof(*out));
    if (bi->type != KMS_TTLV_STRUCTURE)
        return BAD("KMIP response: a Batch Item is a %s", kms_ttlv_type_name(bi->type));
    KMS_GUARD(one(bi, KMS_KMIP_TAG_OPERATION, KMS_TTLV_ENUMERATION, "Operation", &op));
    KMS_GUARD(required(bi, KMS_KMIP_TAG_RESULT_STATUS, KMS_TTLV_ENUMERATION, "Result Status", &status));
    KMS_GUARD(one(bi, KMS_KMIP_TAG_RESULT_REASON, KMS_TTLV_ENUMERATION, "Result Reason", &reason));
    KMS_GUARD(one(bi, KMS_KMIP_TAG_RESULT_MESSAGE, KMS_TTLV_TEXT_STRING, "Result Message", &message));
    KMS_GUARD(one(bi, KMS_KMIP_TAG_RESPONSE_PAYLOAD, KMS_TTLV_STRUCTURE, "Response Payload", &payload));
    if (op != NULL) {
        out->has_operation = 1;
        out->operation = (uint32_t)op->num;
    }
    out->status = (uint32_t)status->num;
    if (reason != NULL) {
        out->has_reason = 1;
        out->reason = (uint32_t)reason->num;
    }
    if (message != NULL)
        copy_printable(message, out->message, sizeof(out->message));
    out->payload = payload;
    return KMS_OK;
}

static kms_rc parse_message(const struct kms_ttlv *root, struct kms_kmip_response *out)
{
    const struct kms_ttlv *hdr, *pv, *ts, *count;
    if (root->tag != KMS_KMIP_TAG_RESPONSE_MESSAGE || root->type != KMS_TTLV_STRUCTURE)
        return BAD("KMIP response: not a Response Message (tag 0x%06x)", (unsigned)root->tag);
    KMS_GUARD(required(root, KMS_KMIP_TAG_RESPONSE_HEADER, KMS_TTLV_STRUCTURE, "Response Header", &hdr));
    KMS_GUARD(one(hdr, KMS_KMIP_TAG_PROTOCOL_VERSION, KMS_TTLV_STRUCTURE, "Protocol Version", &pv));
    KMS_GUARD(one(hdr, KMS_KMIP_TAG_TIME_STAMP, KMS_TTLV_DATE_TIME, "Time Stamp", &ts));
    KMS_GUARD(required(hdr, KMS_KMIP_TAG_BATCH_COUNT, KMS_TTLV_INTEGER, "Batch Count", &count));
    if (pv != NULL) {
        KMS_GUARD(parse_version(pv, &out->version));
        out->has_version = 1;
    }
    if (ts != NULL)
        out->timestamp = ts->num;
    size_t n = kms_ttlv_count(root, KMS_KMIP_TAG_BATCH_ITEM);
    if (count->num < 1 || (uint64_t)count->num != n)
        return BAD("KMIP response: Batch Count %lld but %zu Batch Items", (long long)count->num, n);
    if (n > KMS_KMIP_MAX_BATCH)
        return BAD("KMIP response: %zu Batch Items (at most %d)", n, KMS_KMIP_MAX_BATCH);
    size_t i = 0;
    for (const struct kms_ttlv *bi = kms_ttlv_first(root, KMS_KMIP_TAG_BATCH_ITEM); bi != NULL;
         bi = kms_ttlv_next_same(bi))
        KMS_GUARD(parse_item(bi, &out->items[i++]));
    out->n_items = n;
    return KMS_OK;
}

kms_rc kms_kmip_response_parse(const uint8_t *msg, size_t len, struct kms_kmip_response *out)
{
    memset(out, 0, sizeof(*out));
    kms_rc rc = kms_ttlv_decode(msg, len, &out->doc);
    if (rc == KMS_ERR_NO_MEMORY)
        return rc;
    if (rc != KMS_OK)
        return garbage("");
    rc = parse_message(kms_ttlv_doc_root(out->doc), out);
    if (rc != KMS_OK)
        kms_kmip_response_clear(out);
    return rc;
}

void kms_kmip_response_clear(struct kms_kmip_response *r)
{
    if (r == NULL)
        return;
    kms_ttlv_doc_free(&r->doc);
    memset(r, 0, sizeof(*r));
}

kms_rc kms_kmip_result_rc(const struct kms_kmip_batch_result *item, uint32_t op)
{
    if (item->status == KMS_KMIP_STATUS_SUCCESS)
        return KMS_OK;
    kms_rc rc = KMS_ERR_BACKEND;
    if (item->status == KMS_KMIP_STATUS_OPERATION_FAILED && item->has_reason) {
        if (item->reason == KMS_KMIP_REASON_ITEM_NOT_FOUND)
            rc = KMS_ERR_KEY_NOT_FOUND;
        else if (op == KMS_KMIP_OP_DECRYPT && (item->reason == KMS_KMIP_REASON_GENERAL_FAILURE ||
                                                item->reason == KMS_KMIP_REASON_CRYPTOGRAPHIC_FAILURE))
            rc = KMS_ERR_UNWRAP; /* why: PyKMIP answers a bad GCM tag with General Failure (vector 15) */
    }
    return kms_fail(rc, "KMIP %s: %s / %s%s%s", kms_kmip_operation_name(op), kms_kmip_status_name(item->status),
                    item->has_reason ? kms_kmip_reason_name(item->reason) : "no reason",
                    item->message[0] ? ": " : "", item->message);
}

kms_rc kms_kmip_response_expect(const struct kms_kmip_response *r, uint32_t op, const struct kms_ttlv **payload)
{
    *payload = NULL;
    if (r->n_items != 1)
        return BAD("KMIP %s: response with %zu batch items", kms_kmip_operation_name(op), r->n_items);
    const struct kms_kmip_batch_result *it = &r->items[0];
    if (it->has_operation && it->operation != op)
        return BAD("KMIP %s: response for operation %s", kms_kmip_operation_name(op),
                   kms_kmip_operation_name(it->operation));
    KMS_GUARD(kms_kmip_result_rc(it, op));
    if (it->payload == NULL)
        return BAD("KMIP %s: success without a response payload", kms_kmip_operation_name(op));
    *payload = it->payload;
    return KMS_OK;
}

/* ---- payloads ---------------------------------------------------------- */

kms_rc kms_kmip_parse_versions(const struct kms_ttlv *payload, struct kms_kmip_version *out, size_t cap, size_t *n)
{
    *n = 0;
    for (const struct kms_ttlv *pv = kms_ttlv_first(payload, KMS_KMIP_TAG_PROTOCOL_VERSION); pv != NULL;
         pv = kms_ttlv_next_same(pv)) {
        struct kms_kmip_version v;
        if (pv->type != KMS_TTLV_STRUCTURE)
            return BAD("KMIP Discover Versions: a Protocol Version is a %s", kms_ttlv_type_name(pv->type));
        KMS_GUARD(parse_version(pv, &v));
        if (*n < cap)
            out[*n] = v;
        (*n)++;
    }
    if (*n > cap)
        *n = cap;
    return KMS_OK;
}

static kms_rc copy_uid(const struct kms_ttlv *n, char uid[KMS_KMIP_UID_MAX + 1])
{
    if (n->type != KMS_TTLV_TEXT_STRING)
        return BAD("KMIP response: a Unique Identifier is a %s", kms_ttlv_type_name(n->type));
    if (n->len == 0 || n->len > KMS_KMIP_UID_MAX)
        return BAD("KMIP response: Unique Identifier of %u bytes (1..%d)", (unsigned)n->len, KMS_KMIP_UID_MAX);
    memcpy(uid, n->value, n->len);
    uid[n->len] = '\0';
    return KMS_OK;
}

kms_rc kms_kmip_parse_uid(const struct kms_ttlv *payload, char uid[KMS_KMIP_UID_MAX + 1])
{
    const struct kms_ttlv *n;
    uid[0] = '\0';
    KMS_GUARD(required(payload, KMS_KMIP_TAG_UNIQUE_IDENTIFIER, KMS_TTLV_TEXT_STRING, "Unique Identifier", &n));
    return copy_uid(n, uid);
}

kms_rc kms_kmip_parse_locate(const struct kms_ttlv *payload, char (*uids)[KMS_KMIP_UID_MAX + 1], size_t cap,
                             size_t *found)
{
    *found = 0;
    for (const struct kms_ttlv *n = kms_ttlv_first(payload, KMS_KMIP_TAG_UNIQUE_IDENTIFIER); n != NULL;
         n = kms_ttlv_next_same(n)) {
        char uid[KMS_KMIP_UID_MAX + 1];
        KMS_GUARD(copy_uid(n, uid));
        if (*found < cap)
            memcpy(uids[*found], uid, sizeof(uid));
        (*found)++;
    }
    return KMS_OK;
}

kms_rc kms_kmip_parse_encrypt(const struct kms_ttlv *payload, const uint8_t **data, size_t *data_len,
                              const uint8_t **tag, size_t *tag_len)
{
    const struct kms_ttlv *d, *t;
    *data = NULL, *data_len = 0, *tag = NULL, *tag_len = 0;
    KMS_GUARD(required(payload, KMS_KMIP_TAG_DATA, KMS_TTLV_BYTE_STRING, "Data", &d));
    KMS_GUARD(one(payload, KMS_KMIP_TAG_AE_TAG, KMS_TTLV_BYTE_STRING, "Authenticated Encryption Tag", &t));
    *data = d->value;
    *data_len = d->len;
    if (t != NULL) {
        *tag = t->value;
        *tag_len = t->len;
    }
    return KMS_OK;
}

kms_rc kms_kmip_parse_decrypt(const struct kms_ttlv *payload, const uint8_t **data, size_t *data_len)
{
    const struct kms_ttlv *d;
    *data = NULL, *data_len = 0;
    KMS_GUARD(required(payload, KMS_KMIP_TAG_DATA, KMS_TTLV_BYTE_STRING, "Data", &d));
    *data = d->value;
    *data_len = d->len;
    return KMS_OK;
}

static int name_is(const struct kms_ttlv *n, const char *s)
{
    size_t len = strlen(s);
    return n->len == len && memcmp(n->value, s, len) == 0;
}

static kms_rc want_type(const struct kms_ttlv *v, enum kms_ttlv_type type, const char *attr)
{
    if (v->type != type)
        return BAD("KMIP Get Attributes: %s is a %s, expected a %s", attr, kms_ttlv_type_name(v->type),
                   kms_ttlv_type_name(type));
    return KMS_OK;
}

static kms_rc one_attribute(const struct kms_ttlv *a, struct kms_kmip_attributes *out)
{
    const struct kms_ttlv *name, *v;
    if (a->type != KMS_TTLV_STRUCTURE)
        return BAD("KMIP Get Attributes: an Attribute is a %s", kms_ttlv_type_name(a->type));
    KMS_GUARD(required(a, KMS_KMIP_TAG_ATTRIBUTE_NAME, KMS_TTLV_TEXT_STRING, "Attribute Name", &name));
    v = kms_ttlv_first(a, KMS_KMIP_TAG_ATTRIBUTE_VALUE);
    if (v == NULL || kms_ttlv_next_same(v) != NULL)
        return BAD("KMIP Get Attributes: an Attribute without exactly one Attribute Value");
    if (name_is(name, "Unique Identifier")) {
        KMS_GUARD(copy_uid(v, out->uid));
    } else if (name_is(name, "Object Type")) {
        KMS_GUARD(want_type(v, KMS_TTLV_ENUMERATION, "Object Type"));
        out->object_type = (uint32_t)v->num;
    } else if (name_is(name, "State")) {
        KMS_GUARD(want_type(v, KMS_TTLV_ENUMERATION, "State"));
        out->state = (uint32_t)v->num;
    } else if (name_is(name, "Cryptographic Algorithm")) {
        KMS_GUARD(want_type(v, KMS_TTLV_ENUMERATION, "Cryptographic Algorithm"));
        out->algorithm = (uint32_t)v->num;
    } else if (name_is(name, "Cryptographic Length")) {
        KMS_GUARD(want_type(v, KMS_TTLV_INTEGER, "Cryptographic Length"));
        out->length = (int32_t)v->num;
    } else if (name_is(name, "Cryptographic Usage Mask")) {
        KMS_GUARD(want_type(v, KMS_TTLV_INTEGER, "Cryptographic Usage Mask"));
        out->has_usage_mask = 1;
        out->usage_mask = (int32_t)v->num;
    } else if (name_is(name, "Initial Date")) {
        KMS_GUARD(want_type(v, KMS_TTLV_DATE_TIME, "Initial Date"));
        out->initial_date = v->num;
    } else if (name_is(name, "Activation Date")) {
        KMS_GUARD(want_type(v, KMS_TTLV_DATE_TIME, "Activation Date"));
        out->activation_date = v->num;
    } else if (name_is(name, "Operation Policy Name")) {
        KMS_GUARD(want_type(v, KMS_TTLV_TEXT_STRING, "Operation Policy Name"));
        copy_printable(v, out->policy, sizeof(out->policy));
    } else if (name_is(name, "Name")) {
        const struct kms_ttlv *nv;
        KMS_GUARD(want_type(v, KMS_TTLV_STRUCTURE, "Name"));
        KMS_GUARD(required(v, KMS_KMIP_TAG_NAME_VALUE, KMS_TTLV_TEXT_STRING, "Name Value", &nv));
        if (out->n_names < KMS_KMIP_MAX_NAMES)
            copy_printable(nv, out->names[out->n_names], sizeof(out->names[0]));
        out->n_names++;
    }
    return KMS_OK;
}

kms_rc kms_kmip_parse_attributes(const struct kms_ttlv *payload, struct kms_kmip_attributes *out)
{
    const struct kms_ttlv *uid;
    memset(out, 0, sizeof(*out));
    KMS_GUARD(one(payload, KMS_KMIP_TAG_UNIQUE_IDENTIFIER, KMS_TTLV_TEXT_STRING, "Unique Identifier", &uid));
    if (uid != NULL)
        KMS_GUARD(copy_uid(uid, out->uid));
    for (const struct kms_ttlv *a = kms_ttlv_first(payload, KMS_KMIP_TAG_ATTRIBUTE); a != NULL;
         a = kms_ttlv_next_same(a))
        KMS_GUARD(one_attribute(a, out));
    return KMS_OK;
}

kms_rc kms_kmip_parse_query(const struct kms_ttlv *payload, struct kms_kmip_server_info *out)
{
    const struct kms_ttlv *vendor, *info;
    memset(out, 0, sizeof(*out));
    for (const struct kms_ttlv *n = payload != NULL ? payload->child : NULL; n != NULL; n = n->next) {
        if (n->tag != KMS_KMIP_TAG_OPERATION && n->tag != KMS_KMIP_TAG_OBJECT_TYPE)
            continue;
        if (n->type != KMS_TTLV_ENUMERATION)
            return BAD("KMIP Query: an %s is a %s", n->tag == KMS_KMIP_TAG_OPERATION ? "Operation" : "Object Type",
                       kms_ttlv_type_name(n->type));
        if (n->tag == KMS_KMIP_TAG_OPERATION && out->n_operations < KMS_KMIP_MAX_QUERY_ITEMS)
            out->operations[out->n_operations++] = (uint32_t)n->num;
        else if (n->tag == KMS_KMIP_TAG_OBJECT_TYPE && out->n_objects < KMS_KMIP_MAX_QUERY_ITEMS)
            out->objects[out->n_objects++] = (uint32_t)n->num;
    }
    KMS_GUARD(one(payload, KMS_KMIP_TAG_VENDOR_IDENTIFICATION, KMS_TTLV_TEXT_STRING, "Vendor Identification",
                  &vendor));
    KMS_GUARD(one(payload, KMS_KMIP_TAG_SERVER_INFORMATION, KMS_TTLV_STRUCTURE, "Server Information", &info));
    if (vendor != NULL)
        copy_printable(vendor, out->vendor, sizeof(out->vendor));
    out->has_server_information = info != NULL;
    return KMS_OK;
}
