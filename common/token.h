/* The one check of the names kmsd takes from configuration and requests
 * (site ids, the cluster name, Redis host, user, prefix and Sentinel master):
 * 1..max bytes, each an ASCII letter or digit or one of the bytes of extra.
 * STYLE.md: one way to do each thing. */
#ifndef KMS_COMMON_TOKEN_H
#define KMS_COMMON_TOKEN_H

#include <stddef.h>

/* Non-zero when s is 1..max bytes of [A-Za-z0-9] and extra (never NUL).
 * s NULL is not valid. Reads at most max + 1 bytes of s. */
int kms_token_valid(const char *s, size_t max, const char *extra);

#endif
