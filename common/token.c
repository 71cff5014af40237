#include "common/token.h"

#include <string.h>

int kms_token_valid(const char *s, size_t max, const char *extra)
{
    if (s == NULL || s[0] == '\0')
        return 0;
    for (size_t i = 0; s[i] != '\0'; i++) {
        char c = s[i];
        if (i >= max)
            return 0;
        if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9'))
            continue;
        if (extra == NULL || strchr(extra, c) == NULL)
            return 0;
    }
    return 1;
}
