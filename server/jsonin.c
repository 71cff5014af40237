/* Request-body helpers: jansson's allocator (wiping), strict field reads. */
#include <openssl/crypto.h>
#include <stdlib.h>
#include <string.h>

#include "common/secret.h"
#include "server/internal.h"

/* why: request bodies carry key material (generic wrap), and jansson copies
 * strings into its own allocations; a size header lets free wipe them. */
static void *wiping_malloc(size_t n)
{
    if (n > SIZE_MAX - 16)
        return NULL;
    uint8_t *p = malloc(n + 16);
    if (p == NULL)
        return NULL;
    memcpy(p, &n, sizeof(n));
    return p + 16;
}

static void wiping_free(void *ptr)
{
    if (ptr == NULL)
        return;
    uint8_t *p = (uint8_t *)ptr - 16;
    size_t n;
    memcpy(&n, p, sizeof(n));
    OPENSSL_cleanse(ptr, n);
    free(p);
}

void kms_json_install_allocator(void)
{
    static int done;
    if (!done) {
        json_set_alloc_funcs(wiping_malloc, wiping_free);
        done = 1;
    }
}

kms_rc kms_json_site_id(json_t *obj, const char *key, int required, char *out, size_t cap)
{
    json_t *v = json_object_get(obj, key);
    out[0] = '\0';
    if (v == NULL) {
        if (required)
            return kms_fail(KMS_ERR_INVALID_FIELD, "missing field %s", key);
        return KMS_OK;
    }
    if (!json_is_string(v))
        return kms_fail(KMS_ERR_INVALID_FIELD, "%s must be a string", key);
    const char *s = json_string_value(v);
    if (!kms_site_id_valid(s))
        return kms_fail(KMS_ERR_INVALID_FIELD, "%s must be 1..%d characters of [A-Za-z0-9._:@-]", key,
                        KMS_SITE_ID_MAX);
    size_t len = strlen(s);
    if (len >= cap)
        return kms_fail(KMS_ERR_INVALID_FIELD, "%s too long", key);
    memcpy(out, s, len + 1);
    return KMS_OK;
}
