/* libFuzzer target: a node's heartbeat as Redis returns it
 * (kms_cluster_node_parse, what `kmsctl cluster status` and GET /v1/cluster
 * read). Anyone who can write to Redis controls these bytes, so an accepted
 * one must hold only what the fields allow: a name and a version that are
 * tokens, a 64-hex or empty keystore digest, printable alias and error, each
 * NUL-terminated within its array, and times and the interval in range.
 * Seeds: tests/fuzz/corpus/redis_reply. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "cluster/redis_cache.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void check(int ok)
{
    if (!ok)
        abort();
}

static int printable(const char *s, size_t cap)
{
    size_t n = strnlen(s, cap);
    if (n == cap)
        return 0;
    for (size_t i = 0; i < n; i++)
        if ((unsigned char)s[i] < 0x20 || (unsigned char)s[i] == 0x7f)
            return 0;
    return 1;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct kms_cluster_node n;
    memset(&n, 0xA5, sizeof(n));
    if (kms_cluster_node_parse((const char *)data, size, &n) != 0)
        return 0;
    check(printable(n.name, sizeof(n.name)) && n.name[0] != '\0');
    check(printable(n.version, sizeof(n.version)) && n.version[0] != '\0');
    for (const char *p = n.name; *p; p++)
        check(strchr("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-", *p) != NULL);
    size_t sl = strnlen(n.ks_sha256, sizeof(n.ks_sha256));
    check(sl == 0 || sl == 64);
    for (size_t i = 0; i < sl; i++)
        check(strchr("0123456789abcdef", n.ks_sha256[i]) != NULL);
    check(printable(n.ks_expiry_alias, sizeof(n.ks_expiry_alias)));
    check(printable(n.ks_error, sizeof(n.ks_error)));
    check(n.started >= 0 && n.last_seen >= 0 && n.interval_s <= 86400);
    return 0;
}
