/* IP address and network lists (addrlist.h). */
#include "common/addrlist.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define ITEM_MAX 64 /* an IPv6 literal with a prefix fits */

static kms_rc bad(char *why, size_t cap, const char *item, const char *what)
{
    (void)snprintf(why, cap, "'%.64s' %s", item, what);
    return KMS_ERR_CONFIG;
}

static kms_rc parse_item(const char *item, struct kms_addrlist *out, char *why, size_t cap)
{
    if (out->n == KMS_ADDRLIST_MAX)
        return bad(why, cap, item, "is one item too many (at most 32 addresses or networks)");
    char addr[ITEM_MAX];
    (void)snprintf(addr, sizeof(addr), "%s", item);
    char *slash = strchr(addr, '/');
    if (slash != NULL)
        *slash = '\0';
    int family = strchr(addr, ':') != NULL ? AF_INET6 : AF_INET;
    unsigned max = family == AF_INET ? 32 : 128;
    if (inet_pton(family, addr, out->net[out->n].addr) != 1)
        return bad(why, cap, item, family == AF_INET ? "is not an IPv4 address (a.b.c.d[/bits])"
                                                     : "is not an IPv6 address (x:x::x[/bits])");
    unsigned bits = max;
    if (slash != NULL) {
        char *end = NULL;
        unsigned long b = strtoul(slash + 1, &end, 10);
        if (slash[1] < '0' || slash[1] > '9' || *end != '\0' || b > max)
            return bad(why, cap, item, family == AF_INET ? "has a prefix length that is not 0 to 32"
                                                         : "has a prefix length that is not 0 to 128");
        bits = (unsigned)b;
    }
    out->net[out->n].family = family;
    out->net[out->n].bits = bits;
    out->n++;
    return KMS_OK;
}

kms_rc kms_addrlist_parse(const char *text, struct kms_addrlist *out, char *why, size_t cap)
{
    memset(out, 0, sizeof(*out));
    if (why != NULL && cap > 0)
        why[0] = '\0';
    const char *p = text;
    while (*p != '\0') {
        while (*p == ',' || *p == ' ' || *p == '\t')
            p++;
        if (*p == '\0')
            break;
        size_t len = strcspn(p, ", \t");
        char item[ITEM_MAX];
        if (len >= sizeof(item)) {
            (void)snprintf(item, sizeof(item), "%.*s", (int)(sizeof(item) - 1), p);
            return bad(why, cap, item, "is longer than an address with a prefix can be");
        }
        memcpy(item, p, len);
        item[len] = '\0';
        KMS_GUARD(parse_item(item, out, why, cap));
        p += len;
    }
    return KMS_OK;
}

static int prefix_equal(const uint8_t *a, const uint8_t *b, unsigned bits)
{
    unsigned whole = bits / 8, rest = bits % 8;
    if (memcmp(a, b, whole) != 0)
        return 0;
    if (rest == 0)
        return 1;
    uint8_t mask = (uint8_t)(0xFF << (8 - rest));
    return (a[whole] & mask) == (b[whole] & mask);
}

int kms_addrlist_match(const struct kms_addrlist *l, const struct sockaddr *sa)
{
    uint8_t v4[4], v6[16];
    int has4 = 0, has6 = 0;
    if (sa->sa_family == AF_INET) {
        memcpy(v4, &((const struct sockaddr_in *)(const void *)sa)->sin_addr, 4);
        has4 = 1;
    } else if (sa->sa_family == AF_INET6) {
        const struct in6_addr *a = &((const struct sockaddr_in6 *)(const void *)sa)->sin6_addr;
        memcpy(v6, a, 16);
        has6 = 1;
        if (IN6_IS_ADDR_V4MAPPED(a)) {
            memcpy(v4, v6 + 12, 4);
            has4 = 1;
        }
    }
    for (size_t i = 0; i < l->n; i++) {
        if (l->net[i].family == AF_INET && has4 && prefix_equal(v4, l->net[i].addr, l->net[i].bits))
            return 1;
        if (l->net[i].family == AF_INET6 && has6 && prefix_equal(v6, l->net[i].addr, l->net[i].bits))
            return 1;
    }
    return 0;
}
