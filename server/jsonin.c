/* jansson's allocator for the whole process: wiping, since Vault replies
 * (decrypted keys) are parsed with jansson. */
#include <openssl/crypto.h>
#include <stdlib.h>
#include <string.h>

#include "common/secret.h"
#include <jansson.h>

#include "server/internal.h"

/* why: Vault's Transit replies carry key material, and jansson copies
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
