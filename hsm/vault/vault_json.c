#include "hsm/vault/vault_json.h"

#include <stdio.h>
#include <string.h>

#include "common/base64.h"

#define VAULT_PREFIX "vault:v"
#define VAULT_PREFIX_LEN 7
#define VAULT_NONCE_TAG 28 /* 12-byte nonce + 16-byte tag (§1.9) */
#define SECRET_MAX 65536

static kms_rc bad(const char *what, const char *field)
{
    return kms_fail(KMS_ERR_BACKEND, "Vault reply: %s %s", field, what);
}

kms_rc kms_vault_json_load(const uint8_t *body, size_t len, json_t **out)
{
    json_error_t err;
    *out = NULL;
    if (body == NULL || len == 0)
        return kms_fail(KMS_ERR_BACKEND, "Vault reply: empty body where JSON was expected");
    /* why: no JSON_DECODE_ANY (top level must be an array or object), no
     * JSON_ALLOW_NUL (a \u0000 is refused), duplicate keys refused */
    json_t *j = json_loadb((const char *)body, len, JSON_REJECT_DUPLICATES, &err);
    if (j == NULL) {
        /* why: jansson quotes the bytes "near" the error, and a broken decrypt
         * reply may hold key material there: keep only the reason */
        char *near = strstr(err.text, " near ");
        if (near != NULL)
            *near = '\0';
        return kms_fail(KMS_ERR_BACKEND, "Vault reply is not valid JSON: %s (at byte %d)", err.text, err.position);
    }
    if (!json_is_object(j)) {
        json_decref(j);
        return kms_fail(KMS_ERR_BACKEND, "Vault reply is not a JSON object");
    }
    *out = j;
    return KMS_OK;
}

/* Copies s into out, control characters and non-ASCII bytes as spaces
 * (Vault's multi-error strings carry "\n\t"), truncated to cap - 1. */
static void copy_clean(const char *s, size_t len, char *out, size_t cap)
{
    size_t n = len < cap - 1 ? len : cap - 1;
    for (size_t i = 0; i < n; i++) {
        unsigned char ch = (unsigned char)s[i];
        out[i] = (ch < 0x20 || ch > 0x7e) ? ' ' : (char)ch;
    }
    out[n] = '\0';
}

int kms_vault_json_first_error(const json_t *root, char *out, size_t cap)
{
    out[0] = '\0';
    json_t *errors = json_object_get(root, "errors");
    if (!json_is_array(errors))
        return 0;
    json_t *first = json_array_get(errors, 0);
    if (json_is_string(first))
        copy_clean(json_string_value(first), json_string_length(first), out, cap);
    return 1;
}

static json_t *object_field(const json_t *root, const char *key)
{
    json_t *v = json_object_get(root, key);
    return json_is_object(v) ? v : NULL;
}

/* why: a field that is present must have the right type; absent is fine
 * unless required. */
static kms_rc read_bool(const json_t *obj, const char *key, int required, int *out)
{
    json_t *v = json_object_get(obj, key);
    if (v == NULL) {
        *out = 0;
        return required ? bad("is missing", key) : KMS_OK;
    }
    if (!json_is_boolean(v))
        return bad("is not a boolean", key);
    *out = json_is_true(v);
    return KMS_OK;
}

static kms_rc read_int(const json_t *obj, const char *key, int required, long long min, long long max,
                       long long *out)
{
    json_t *v = json_object_get(obj, key);
    *out = 0;
    if (v == NULL)
        return required ? bad("is missing", key) : KMS_OK;
    if (!json_is_integer(v))
        return bad("is not an integer", key);
    long long n = json_integer_value(v);
    if (n < min || n > max)
        return bad("is out of range", key);
    *out = n;
    return KMS_OK;
}

static kms_rc read_u32(const json_t *obj, const char *key, int required, uint32_t *out)
{
    long long n = 0;
    KMS_GUARD(read_int(obj, key, required, 0, UINT32_MAX, &n));
    *out = (uint32_t)n;
    return KMS_OK;
}

static int printable(const char *s, size_t len)
{
    for (size_t i = 0; i < len; i++)
        if (s[i] < 0x21 || s[i] > 0x7e)
            return 0;
    return 1;
}

/* A string of printable ASCII bytes (no space), 1..cap-1 of them when
 * required (0..cap-1 otherwise), copied into out. */
static kms_rc read_token_str(const json_t *obj, const char *key, int required, char *out, size_t cap)
{
    json_t *v = json_object_get(obj, key);
    out[0] = '\0';
    if (v == NULL)
        return required ? bad("is missing", key) : KMS_OK;
    if (!json_is_string(v))
        return bad("is not a string", key);
    size_t len = json_string_length(v);
    if ((required && len == 0) || len >= cap || !printable(json_string_value(v), len))
        return bad("is empty, too long or not printable ASCII", key);
    memcpy(out, json_string_value(v), len + 1);
    return KMS_OK;
}

/* Any string, sanitised for display (names, versions). */
static kms_rc read_text(const json_t *obj, const char *key, char *out, size_t cap)
{
    json_t *v = json_object_get(obj, key);
    out[0] = '\0';
    if (v == NULL || json_is_null(v))
        return KMS_OK;
    if (!json_is_string(v))
        return bad("is not a string", key);
    copy_clean(json_string_value(v), json_string_length(v), out, cap);
    return KMS_OK;
}

static kms_rc data_of(const json_t *root, json_t **data)
{
    *data = object_field(root, "data");
    return *data != NULL ? KMS_OK : bad("is missing or not an object", "data");
}

kms_rc kms_vault_json_key(const json_t *root, struct kms_vault_key_meta *out)
{
    json_t *data;
    long long n;
    memset(out, 0, sizeof(*out));
    KMS_GUARD(data_of(root, &data));
    KMS_GUARD(read_token_str(data, "type", 1, out->type, sizeof(out->type)));
    KMS_GUARD(read_token_str(data, "name", 0, out->name, sizeof(out->name)));
    KMS_GUARD(read_bool(data, "derived", 1, &out->derived));
    KMS_GUARD(read_u32(data, "latest_version", 1, &out->latest_version));
    if (out->latest_version == 0)
        return bad("is 0", "latest_version");
    KMS_GUARD(read_u32(data, "min_decryption_version", 1, &out->min_decryption_version));
    KMS_GUARD(read_u32(data, "min_encryption_version", 0, &out->min_encryption_version));
    KMS_GUARD(read_u32(data, "min_available_version", 0, &out->min_available_version));
    KMS_GUARD(read_bool(data, "convergent_encryption", 0, &out->convergent));
    KMS_GUARD(read_bool(data, "exportable", 0, &out->exportable));
    KMS_GUARD(read_bool(data, "deletion_allowed", 0, &out->deletion_allowed));
    KMS_GUARD(read_bool(data, "allow_plaintext_backup", 0, &out->allow_plaintext_backup));
    KMS_GUARD(read_int(data, "auto_rotate_period", 0, 0, INT64_MAX, &n));
    out->auto_rotate_period = n;
    /* why: supports_* appeared in Vault 0.6; absent means an AES key of an old Vault */
    json_t *v = json_object_get(data, "supports_encryption");
    out->supports_encryption = 1;
    if (v != NULL)
        KMS_GUARD(read_bool(data, "supports_encryption", 1, &out->supports_encryption));
    v = json_object_get(data, "supports_decryption");
    out->supports_decryption = 1;
    if (v != NULL)
        KMS_GUARD(read_bool(data, "supports_decryption", 1, &out->supports_decryption));

    /* keys: {"1": <unix seconds>} for symmetric keys, {"1": {...}} for asymmetric ones */
    json_t *keys = json_object_get(data, "keys");
    if (keys != NULL) {
        if (!json_is_object(keys))
            return bad("is not an object", "keys");
        out->versions = json_object_size(keys);
        const char *k;
        json_t *val;
        char latest[16];
        snprintf(latest, sizeof(latest), "%u", out->latest_version);
        json_object_foreach(keys, k, val)
        {
            if (json_is_integer(val)) {
                if (strcmp(k, latest) == 0)
                    out->latest_created = json_integer_value(val);
            } else if (!json_is_object(val)) {
                return bad("has a value that is neither a time nor an object", "keys");
            }
        }
    }
    return KMS_OK;
}

kms_rc kms_vault_ct_parse(const uint8_t *ct, size_t len, uint32_t *version)
{
    *version = 0;
    if (ct == NULL || len <= VAULT_PREFIX_LEN || memcmp(ct, VAULT_PREFIX, VAULT_PREFIX_LEN) != 0)
        return kms_fail(KMS_ERR_MALFORMED, "not a Vault ciphertext (no vault:v prefix)");
    size_t i = VAULT_PREFIX_LEN;
    uint64_t v = 0;
    size_t digits = 0;
    while (i < len && ct[i] >= '0' && ct[i] <= '9' && digits <= 10) {
        v = v * 10 + (uint64_t)(ct[i] - '0');
        digits++;
        i++;
    }
    /* why: one spelling per version (no leading zero); v0 is a legacy alias Vault never writes */
    if (digits == 0 || digits > 10 || v == 0 || v > UINT32_MAX || ct[VAULT_PREFIX_LEN] == '0' || i >= len ||
        ct[i] != ':')
        return kms_fail(KMS_ERR_MALFORMED, "Vault ciphertext has no valid vault:v<N>: prefix");
    i++;
    size_t b64_len = len - i;
    if (b64_len == 0 || b64_len > KMS_BACKEND_CT_MAX)
        return kms_fail(KMS_ERR_MALFORMED, "Vault ciphertext of %zu base64 characters", b64_len);
    uint8_t raw[KMS_BACKEND_CT_MAX];
    size_t raw_len = 0;
    if (kms_b64_decode((const char *)ct + i, b64_len, raw, sizeof(raw), &raw_len) != KMS_OK)
        return kms_fail(KMS_ERR_MALFORMED, "Vault ciphertext is not standard base64");
    if (raw_len < VAULT_NONCE_TAG)
        return kms_fail(KMS_ERR_MALFORMED, "Vault ciphertext shorter than nonce and tag");
    *version = (uint32_t)v;
    return KMS_OK;
}

kms_rc kms_vault_json_ct_item(const json_t *item, uint8_t *out, size_t cap, size_t *len, uint32_t *version)
{
    *len = 0;
    *version = 0;
    json_t *ct = json_object_get(item, "ciphertext");
    if (!json_is_string(ct))
        return bad("is missing or not a string", "ciphertext");
    size_t n = json_string_length(ct);
    if (n > cap)
        return kms_fail(KMS_ERR_BACKEND, "Vault reply: ciphertext of %zu bytes, more than %zu", n, cap);
    uint32_t v = 0;
    if (kms_vault_ct_parse((const uint8_t *)json_string_value(ct), n, &v) != KMS_OK)
        return kms_fail(KMS_ERR_BACKEND, "Vault reply: ciphertext is not vault:v<N>:<base64>");
    long long kv = 0;
    KMS_GUARD(read_int(item, "key_version", 0, 0, UINT32_MAX, &kv));
    if (json_object_get(item, "key_version") != NULL && (uint32_t)kv != v)
        return kms_fail(KMS_ERR_BACKEND, "Vault reply: key_version %lld disagrees with ciphertext version %u", kv, v);
    memcpy(out, json_string_value(ct), n);
    *len = n;
    *version = v;
    return KMS_OK;
}

kms_rc kms_vault_json_ciphertext(const json_t *root, uint8_t *out, size_t cap, size_t *len, uint32_t *version)
{
    json_t *data;
    *len = 0;
    *version = 0;
    KMS_GUARD(data_of(root, &data));
    return kms_vault_json_ct_item(data, out, cap, len, version);
}

kms_rc kms_vault_json_pt_item(json_t *item, struct kms_secret **out)
{
    *out = NULL;
    json_t *pt = json_object_get(item, "plaintext");
    if (!json_is_string(pt))
        return bad("is missing or not a string", "plaintext");
    size_t n = json_string_length(pt);
    /* why: jansson owns the string; wipe it in place once decoded (key material) */
    char *text = (char *)(uintptr_t)json_string_value(pt);
    kms_rc rc = KMS_OK;
    size_t max = kms_b64_decoded_max(n);
    if (n == 0 || max == 0)
        rc = kms_fail(KMS_ERR_BACKEND, "Vault reply: empty or truncated plaintext");
    else if (max > SECRET_MAX)
        rc = kms_fail(KMS_ERR_BACKEND, "Vault reply: plaintext of %zu base64 characters", n);
    if (rc == KMS_OK)
        rc = kms_secret_new(max, out);
    size_t got = 0;
    if (rc == KMS_OK && kms_b64_decode(text, n, kms_secret_data(*out), max, &got) != KMS_OK)
        rc = kms_fail(KMS_ERR_BACKEND, "Vault reply: plaintext is not standard base64");
    if (rc == KMS_OK && got == 0)
        rc = kms_fail(KMS_ERR_BACKEND, "Vault reply: empty plaintext");
    if (rc == KMS_OK)
        kms_secret_truncate(*out, got);
    else
        kms_secret_free(out);
    kms_wipe(text, n);
    return rc;
}

kms_rc kms_vault_json_plaintext(json_t *root, struct kms_secret **out)
{
    json_t *data;
    *out = NULL;
    KMS_GUARD(data_of(root, &data));
    return kms_vault_json_pt_item(data, out);
}

kms_rc kms_vault_json_batch(const json_t *root, size_t expected, json_t **results)
{
    json_t *data;
    *results = NULL;
    KMS_GUARD(data_of(root, &data));
    json_t *arr = json_object_get(data, "batch_results");
    if (!json_is_array(arr))
        return bad("is missing or not an array", "batch_results");
    if (json_array_size(arr) != expected)
        return kms_fail(KMS_ERR_BACKEND, "Vault reply: %zu batch results for %zu items", json_array_size(arr),
                        expected);
    for (size_t i = 0; i < expected; i++)
        if (!json_is_object(json_array_get(arr, i)))
            return bad("has an item that is not an object", "batch_results");
    *results = arr;
    return KMS_OK;
}

int kms_vault_json_item_error(const json_t *item, char *out, size_t cap)
{
    out[0] = '\0';
    json_t *e = json_object_get(item, "error");
    if (!json_is_string(e) || json_string_length(e) == 0)
        return 0;
    copy_clean(json_string_value(e), json_string_length(e), out, cap);
    return 1;
}

kms_rc kms_vault_json_lookup_self(const json_t *root, struct kms_vault_token_info *out)
{
    json_t *data;
    memset(out, 0, sizeof(*out));
    KMS_GUARD(data_of(root, &data));
    KMS_GUARD(read_int(data, "ttl", 1, 0, INT32_MAX, &out->ttl));
    KMS_GUARD(read_bool(data, "renewable", 1, &out->renewable));
    json_t *exp = json_object_get(data, "expire_time");
    if (exp != NULL && !json_is_null(exp) && !json_is_string(exp))
        return bad("is neither a string nor null", "expire_time");
    if (out->ttl == 0 && json_is_string(exp))
        return kms_fail(KMS_ERR_BACKEND, "Vault reply: token with an expire_time and no ttl left");
    return KMS_OK;
}

/* A new secret holding the printable ASCII string v (1..max bytes). */
static kms_rc string_secret(json_t *v, const char *key, size_t max, struct kms_secret **out)
{
    *out = NULL;
    if (!json_is_string(v))
        return bad("is missing or not a string", key);
    size_t n = json_string_length(v);
    char *s = (char *)(uintptr_t)json_string_value(v);
    kms_rc rc = KMS_OK;
    if (n == 0 || n > max || !printable(s, n))
        rc = bad("is empty, too long or not printable ASCII", key);
    else
        rc = kms_secret_from((const uint8_t *)s, n, out);
    kms_wipe(s, n); /* why: a credential; jansson owns the copy */
    return rc;
}

kms_rc kms_vault_json_auth(json_t *root, struct kms_secret **token, long long *lease, int *renewable)
{
    *lease = 0;
    *renewable = 0;
    if (token != NULL)
        *token = NULL;
    json_t *auth = object_field(root, "auth");
    if (auth == NULL)
        return bad("is missing or not an object", "auth");
    KMS_GUARD(read_int(auth, "lease_duration", 1, 0, INT32_MAX, lease));
    KMS_GUARD(read_bool(auth, "renewable", 1, renewable));
    if (token != NULL)
        return string_secret(json_object_get(auth, "client_token"), "client_token", KMS_VAULT_TOKEN_MAX, token);
    return KMS_OK;
}

kms_rc kms_vault_json_imds_token(json_t *root, struct kms_secret **jwt, long long *expires_in)
{
    *jwt = NULL;
    *expires_in = 0;
    json_t *e = json_object_get(root, "expires_in");
    if (!json_is_string(e))
        return bad("is missing or not a string", "expires_in");
    const char *s = json_string_value(e);
    size_t n = json_string_length(e);
    if (n == 0 || n > 9)
        return bad("is not a number of seconds", "expires_in");
    long long v = 0;
    for (size_t i = 0; i < n; i++) {
        if (s[i] < '0' || s[i] > '9')
            return bad("is not a number of seconds", "expires_in");
        v = v * 10 + (s[i] - '0');
    }
    KMS_GUARD(string_secret(json_object_get(root, "access_token"), "access_token", KMS_VAULT_JWT_MAX, jwt));
    *expires_in = v;
    return KMS_OK;
}

kms_rc kms_vault_json_imds_instance(const json_t *root, struct kms_vault_instance *out)
{
    memset(out, 0, sizeof(*out));
    json_t *compute = object_field(root, "compute");
    if (compute == NULL)
        return bad("is missing or not an object", "compute");
    KMS_GUARD(read_token_str(compute, "subscriptionId", 1, out->subscription_id, sizeof(out->subscription_id)));
    KMS_GUARD(read_token_str(compute, "resourceGroupName", 1, out->resource_group, sizeof(out->resource_group)));
    KMS_GUARD(read_token_str(compute, "name", 1, out->vm_name, sizeof(out->vm_name)));
    json_t *vmss = json_object_get(compute, "vmScaleSetName");
    if (json_is_string(vmss) && json_string_length(vmss) == 0)
        return KMS_OK; /* "" when the VM is not in a scale set (§3) */
    return read_token_str(compute, "vmScaleSetName", 0, out->vmss_name, sizeof(out->vmss_name));
}

kms_rc kms_vault_json_health(const json_t *root, struct kms_vault_health *out)
{
    long status = out->status;
    memset(out, 0, sizeof(*out));
    out->status = status;
    KMS_GUARD(read_bool(root, "initialized", 1, &out->initialized));
    KMS_GUARD(read_bool(root, "sealed", 1, &out->sealed));
    KMS_GUARD(read_bool(root, "standby", 1, &out->standby));
    KMS_GUARD(read_bool(root, "performance_standby", 0, &out->performance_standby));
    KMS_GUARD(read_text(root, "version", out->version, sizeof(out->version)));
    return read_text(root, "cluster_name", out->cluster_name, sizeof(out->cluster_name));
}

kms_rc kms_vault_json_append_str(struct kms_buf *b, const char *s, size_t len)
{
    static const char hex[] = "0123456789abcdef";
    KMS_GUARD(kms_buf_append_u8(b, '"'));
    for (size_t i = 0; i < len; i++) {
        unsigned char ch = (unsigned char)s[i];
        if (ch == '"' || ch == '\\') {
            uint8_t esc[2] = {'\\', ch};
            KMS_GUARD(kms_buf_append(b, esc, 2));
        } else if (ch < 0x20 || ch == 0x7f) {
            uint8_t esc[6] = {'\\', 'u', '0', '0', (uint8_t)hex[ch >> 4], (uint8_t)hex[ch & 15]};
            KMS_GUARD(kms_buf_append(b, esc, 6));
        } else {
            KMS_GUARD(kms_buf_append_u8(b, ch));
        }
    }
    return kms_buf_append_u8(b, '"');
}
