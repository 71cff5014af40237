#include "kms/wrapped.h"

#include "common/hex.h"

#include <openssl/evp.h>
#include <stdlib.h>
#include <string.h>

#include "common/base64.h"
#include "common/cursor.h"
#include "common/secret.h"

#define PREFIX_LEN (sizeof(KMS_WRAPPED_PREFIX) - 1)

static const uint8_t zero_id[KMS_KEY_ID_LEN];

const char *kms_key_level_name(unsigned level)
{
    switch (level) {
    case KMS_LEVEL_CUSTOMER: return "customer";
    case KMS_LEVEL_USER: return "user";
    case KMS_LEVEL_WORKSPACE: return "workspace";
    case KMS_LEVEL_DATA: return "data";
    default: return "unknown";
    }
}

const char *kms_wrapper_name(unsigned wrapper)
{
    switch (wrapper) {
    case KMS_BACKEND_SOFT: return "soft";
    case KMS_BACKEND_KMIP: return "kmip";
    case KMS_BACKEND_VAULT: return "vault";
    case KMS_BACKEND_PKCS11: return "pkcs11";
    case KMS_WRAPPER_PARENT: return "parent";
    default: return "unknown";
    }
}

static int is_backend_kind(unsigned w)
{
    return w == KMS_BACKEND_SOFT || w == KMS_BACKEND_KMIP || w == KMS_BACKEND_VAULT || w == KMS_BACKEND_PKCS11;
}

/* SPEC §2: customer and data keys sit directly under a master key; user and
 * workspace keys under their parent, wrapped by kmsd. */
static int master_wrapped_level(unsigned level)
{
    return level == KMS_LEVEL_CUSTOMER || level == KMS_LEVEL_DATA;
}

static int level_known(unsigned level) { return level >= KMS_LEVEL_CUSTOMER && level <= KMS_LEVEL_DATA; }

/* One check for both directions, so the encoder can never write what the
 * parser refuses. Returns a reason, or NULL when the header is consistent. */
static const char *header_problem(const struct kms_wrapped_header *h)
{
    if (!level_known(h->level))
        return "unknown key level";
    if (master_wrapped_level(h->level)) {
        if (!is_backend_kind(h->wrapper))
            return "wrapper kind does not fit a master-wrapped level";
        if (memcmp(h->parent_id, zero_id, KMS_KEY_ID_LEN) != 0)
            return "master-wrapped key with a parent id";
        if (!kms_master_name_valid(h->master.name))
            return "invalid master key name";
    } else {
        if (h->wrapper != KMS_WRAPPER_PARENT)
            return "wrapper kind does not fit a parent-wrapped level";
        if (h->master.name[0] != '\0' || h->master.version != 0)
            return "parent-wrapped key with a master key reference";
    }
    if (h->site_id[0] == '\0') {
        if (h->level != KMS_LEVEL_DATA)
            return "empty site id";
    } else if (!kms_site_id_valid(h->site_id)) {
        return "invalid site id";
    }
    return NULL;
}

kms_rc kms_wrapped_header_encode(const struct kms_wrapped_header *h, struct kms_buf *out)
{
    const char *problem = header_problem(h);
    if (problem != NULL)
        return kms_fail(KMS_ERR_INVALID_FIELD, "wrapped key header: %s", problem);
    size_t site_len = strlen(h->site_id);
    size_t name_len = strlen(h->master.name);
    KMS_GUARD(kms_buf_append_u8(out, KMS_WRAPPED_VERSION));
    KMS_GUARD(kms_buf_append_u8(out, h->level));
    KMS_GUARD(kms_buf_append_u8(out, h->wrapper));
    KMS_GUARD(kms_buf_append(out, h->key_id, KMS_KEY_ID_LEN));
    KMS_GUARD(kms_buf_append(out, h->parent_id, KMS_KEY_ID_LEN));
    KMS_GUARD(kms_buf_append_u8(out, (uint8_t)site_len));
    KMS_GUARD(kms_buf_append(out, h->site_id, site_len));
    KMS_GUARD(kms_buf_append_u8(out, (uint8_t)name_len));
    KMS_GUARD(kms_buf_append(out, h->master.name, name_len));
    KMS_GUARD(kms_buf_append_u32be(out, h->master.version));
    return KMS_OK;
}

kms_rc kms_wrapped_append_parent_payload(struct kms_buf *out, const uint8_t nonce[KMS_GCM_NONCE_LEN],
                                         const uint8_t *ct, size_t ct_len, const uint8_t tag[KMS_GCM_TAG_LEN])
{
    if (ct_len == 0 || ct_len > KMS_DATA_MAX)
        return kms_fail(KMS_ERR_INVALID_FIELD, "wrapped key: ciphertext length %zu out of range", ct_len);
    KMS_GUARD(kms_buf_append(out, nonce, KMS_GCM_NONCE_LEN));
    KMS_GUARD(kms_buf_append_u16be(out, (uint16_t)ct_len));
    KMS_GUARD(kms_buf_append(out, ct, ct_len));
    return kms_buf_append(out, tag, KMS_GCM_TAG_LEN);
}

kms_rc kms_wrapped_append_master_payload(struct kms_buf *out, const uint8_t *ct, size_t ct_len)
{
    if (ct_len == 0 || ct_len > KMS_BACKEND_CT_MAX)
        return kms_fail(KMS_ERR_BACKEND, "wrapped key: backend ciphertext length %zu out of range", ct_len);
    KMS_GUARD(kms_buf_append_u16be(out, (uint16_t)ct_len));
    return kms_buf_append(out, ct, ct_len);
}

kms_rc kms_wrapped_to_text(const uint8_t *blob, size_t blob_len, char **text)
{
    *text = NULL;
    if (blob_len == 0 || blob_len > KMS_WRAPPED_BLOB_MAX)
        return kms_fail(KMS_ERR_TOO_LARGE, "wrapped key of %zu bytes", blob_len);
    size_t cap = PREFIX_LEN + kms_b64_encoded_len(blob_len) + 1;
    char *s = malloc(cap);
    if (s == NULL)
        return kms_fail(KMS_ERR_NO_MEMORY, "wrapped key text");
    memcpy(s, KMS_WRAPPED_PREFIX, PREFIX_LEN);
    kms_rc rc = kms_b64_encode(blob, blob_len, s + PREFIX_LEN, cap - PREFIX_LEN);
    if (rc != KMS_OK) {
        free(s);
        return kms_fail(rc, "wrapped key: base64 encoding failed");
    }
    *text = s;
    return KMS_OK;
}

static kms_rc bad(const char *why)
{
    return kms_fail(KMS_ERR_UNWRAP, "wrapped key: %s", why);
}

/* Reads a u8 length and that many bytes as a NUL-terminated string of at
 * most max bytes; embedded NULs are refused (the validators run on C strings). */
static kms_rc read_string(struct kms_cursor *c, char *out, size_t max, const char *what)
{
    uint8_t n;
    const uint8_t *p;
    if (kms_cursor_u8(c, &n) != KMS_OK || kms_cursor_bytes(c, n, &p) != KMS_OK)
        return kms_fail(KMS_ERR_UNWRAP, "wrapped key: truncated %s", what);
    if (n > max)
        return kms_fail(KMS_ERR_UNWRAP, "wrapped key: %s too long", what);
    if (memchr(p, '\0', n) != NULL)
        return kms_fail(KMS_ERR_UNWRAP, "wrapped key: NUL in %s", what);
    memcpy(out, p, n);
    out[n] = '\0';
    return KMS_OK;
}

static kms_rc parse_blob(struct kms_wrapped *w)
{
    struct kms_cursor c;
    struct kms_wrapped_header *h = &w->hdr;
    uint8_t version;
    kms_cursor_init(&c, w->blob, w->blob_len);

    if (kms_cursor_u8(&c, &version) != KMS_OK || kms_cursor_u8(&c, &h->level) != KMS_OK ||
        kms_cursor_u8(&c, &h->wrapper) != KMS_OK || kms_cursor_copy(&c, h->key_id, KMS_KEY_ID_LEN) != KMS_OK ||
        kms_cursor_copy(&c, h->parent_id, KMS_KEY_ID_LEN) != KMS_OK)
        return bad("truncated header");
    if (version != KMS_WRAPPED_VERSION)
        return kms_fail(KMS_ERR_UNWRAP, "wrapped key: format version %u in a kms:v1 key", version);
    KMS_GUARD(read_string(&c, h->site_id, KMS_SITE_ID_MAX, "site id"));
    KMS_GUARD(read_string(&c, h->master.name, KMS_MASTER_NAME_MAX, "master key name"));
    if (kms_cursor_u32be(&c, &h->master.version) != KMS_OK)
        return bad("truncated master key version");
    const char *problem = header_problem(h);
    if (problem != NULL)
        return bad(problem);
    w->header_len = c.pos;

    uint16_t ct_len;
    if (h->wrapper == KMS_WRAPPER_PARENT) {
        if (kms_cursor_bytes(&c, KMS_GCM_NONCE_LEN, &w->nonce) != KMS_OK || kms_cursor_u16be(&c, &ct_len) != KMS_OK)
            return bad("truncated payload");
        /* why: user and workspace keys are exactly KMS_KEY_BYTES; nothing else is parent-wrapped */
        if (ct_len != KMS_KEY_BYTES)
            return bad("ciphertext length does not fit the level");
        if (kms_cursor_bytes(&c, ct_len, &w->ct) != KMS_OK ||
            kms_cursor_bytes(&c, KMS_GCM_TAG_LEN, &w->tag) != KMS_OK)
            return bad("truncated payload");
    } else {
        if (kms_cursor_u16be(&c, &ct_len) != KMS_OK)
            return bad("truncated payload");
        if (ct_len == 0 || ct_len > KMS_BACKEND_CT_MAX)
            return bad("backend ciphertext length out of range");
        if (kms_cursor_bytes(&c, ct_len, &w->ct) != KMS_OK)
            return bad("truncated payload");
    }
    w->ct_len = ct_len;
    if (kms_cursor_remaining(&c) != 0)
        return bad("trailing bytes");
    return KMS_OK;
}

kms_rc kms_wrapped_parse(const char *text, struct kms_wrapped **out)
{
    *out = NULL;
    if (text == NULL)
        return bad("missing");
    size_t len = strnlen(text, KMS_WRAPPED_TEXT_MAX + 1);
    if (len > KMS_WRAPPED_TEXT_MAX)
        return bad("text longer than 8 KiB");
    if (len < PREFIX_LEN || memcmp(text, KMS_WRAPPED_PREFIX, PREFIX_LEN) != 0)
        return bad("no kms:v1: prefix");

    struct kms_wrapped *w = calloc(1, sizeof(*w));
    if (w == NULL)
        return kms_fail(KMS_ERR_NO_MEMORY, "wrapped key");
    size_t b64_len = len - PREFIX_LEN;
    size_t cap = kms_b64_decoded_max(b64_len);
    w->blob = malloc(cap ? cap : 1);
    if (w->blob == NULL) {
        kms_wrapped_free(&w);
        return kms_fail(KMS_ERR_NO_MEMORY, "wrapped key");
    }
    kms_rc rc = kms_b64_decode(text + PREFIX_LEN, b64_len, w->blob, cap, &w->blob_len);
    if (rc != KMS_OK)
        rc = bad("invalid base64");
    else
        rc = parse_blob(w);
    if (rc != KMS_OK) {
        kms_wrapped_free(&w);
        return rc;
    }
    *out = w;
    return KMS_OK;
}

void kms_wrapped_free(struct kms_wrapped **w)
{
    if (w == NULL || *w == NULL)
        return;
    /* why: the blob is ciphertext, but the header names sites; cheap to wipe */
    kms_wipe((*w)->blob, (*w)->blob_len);
    free((*w)->blob);
    kms_wipe(*w, sizeof(**w));
    free(*w);
    *w = NULL;
}

kms_rc kms_wrapped_digest(const struct kms_wrapped *w, uint8_t out[32])
{
    unsigned int n = 0;
    const EVP_MD *md = kms_sha256();
    if (md == NULL || EVP_Digest(w->blob, w->blob_len, out, &n, md, NULL) != 1 || n != 32) {
        kms_fail(KMS_ERR_CRYPTO, "SHA-256 of a wrapped key failed");
        kms_error_add_openssl();
        return KMS_ERR_CRYPTO;
    }
    return KMS_OK;
}

kms_rc kms_wrapped_peek_key_id(const char *text, char hex[2 * KMS_KEY_ID_LEN + 1])
{
    enum { HEAD = 3 + KMS_KEY_ID_LEN, CHARS = (HEAD + 2) / 3 * 4 };
    uint8_t head[CHARS / 4 * 3];
    size_t n = 0;
    hex[0] = '\0';
    if (text == NULL || strncmp(text, KMS_WRAPPED_PREFIX, PREFIX_LEN) != 0 || strnlen(text + PREFIX_LEN, CHARS) < CHARS ||
        kms_b64_decode(text + PREFIX_LEN, CHARS, head, sizeof(head), &n) != KMS_OK || n < HEAD ||
        head[0] != KMS_WRAPPED_VERSION)
        return kms_fail(KMS_ERR_UNWRAP, "wrapped key: no kms:v1 header");
    kms_hex_encode(head + 3, KMS_KEY_ID_LEN, hex, 2 * KMS_KEY_ID_LEN + 1);
    return KMS_OK;
}

kms_rc kms_wrapped_describe(const char *text, struct kms_wrapped_info *out)
{
    struct kms_wrapped *w = NULL;
    memset(out, 0, sizeof(*out));
    out->level = "unknown";
    out->wrapper = "unknown";
    KMS_GUARD(kms_wrapped_parse(text, &w));
    out->level = kms_key_level_name(w->hdr.level);
    out->wrapper = kms_wrapper_name(w->hdr.wrapper);
    kms_hex_encode(w->hdr.key_id, KMS_KEY_ID_LEN, out->key_id, sizeof(out->key_id));
    kms_hex_encode(w->hdr.parent_id, KMS_KEY_ID_LEN, out->parent_id, sizeof(out->parent_id));
    memcpy(out->site_id, w->hdr.site_id, sizeof(out->site_id));
    memcpy(out->master_name, w->hdr.master.name, sizeof(out->master_name));
    out->master_version = w->hdr.master.version;
    kms_wrapped_free(&w);
    return KMS_OK;
}
