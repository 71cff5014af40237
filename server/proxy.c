/* PROXY protocol v1 and v2 headers (proxy.h). */
#include "server/proxy.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <string.h>

static const uint8_t v2_sig[12] = {0x0D, 0x0A, 0x0D, 0x0A, 0x00, 0x0D, 0x0A, 0x51, 0x55, 0x49, 0x54, 0x0A};
static const char v1_sig[] = "PROXY ";
#define V1_MAX 107 /* "PROXY TCP6 " + two 39-character addresses + two ports + spaces + CRLF */
#define V2_FIXED 16

static enum kms_proxy_result invalid(char *why, size_t cap, const char *text)
{
    (void)snprintf(why, cap, "%s", text);
    return KMS_PROXY_INVALID;
}

int kms_proxy_may_start(const uint8_t *p, size_t n)
{
    size_t k1 = n < sizeof(v1_sig) - 1 ? n : sizeof(v1_sig) - 1;
    size_t k2 = n < sizeof(v2_sig) ? n : sizeof(v2_sig);
    return memcmp(p, v1_sig, k1) == 0 || memcmp(p, v2_sig, k2) == 0;
}

/* A decimal port of 1 to 5 digits, at most 65535, without a leading zero. */
static int parse_port(const char *s, size_t len)
{
    if (len == 0 || len > 5 || (s[0] == '0' && len > 1))
        return -1;
    long v = 0;
    for (size_t i = 0; i < len; i++) {
        if (s[i] < '0' || s[i] > '9')
            return -1;
        v = v * 10 + (s[i] - '0');
    }
    return v <= 65535 ? (int)v : -1;
}

/* "PROXY TCP4 src dst sport dport\r\n", "PROXY TCP6 ...", "PROXY UNKNOWN...\r\n". */
static enum kms_proxy_result parse_v1(const uint8_t *p, size_t n, struct kms_proxy_header *out, char *why,
                                      size_t cap)
{
    const uint8_t *end = NULL;
    for (size_t i = 0; i + 1 < n && i + 1 < V1_MAX; i++) {
        if (p[i] == '\r' && p[i + 1] == '\n') {
            end = p + i;
            break;
        }
        if (p[i] == '\0' || p[i] == '\n')
            return invalid(why, cap, "v1 header with a control character before its CRLF");
    }
    if (end == NULL)
        return n >= V1_MAX ? invalid(why, cap, "v1 header without CRLF within 107 bytes") : KMS_PROXY_NEED_MORE;
    char line[V1_MAX + 1];
    size_t len = (size_t)(end - p);
    memcpy(line, p, len);
    line[len] = '\0';
    out->len = len + 2;
    if (strncmp(line, "PROXY UNKNOWN", 13) == 0 && (line[13] == '\0' || line[13] == ' ')) {
        out->local = 1;
        return KMS_PROXY_OK;
    }
    int v6;
    if (strncmp(line, "PROXY TCP4 ", 11) == 0)
        v6 = 0;
    else if (strncmp(line, "PROXY TCP6 ", 11) == 0)
        v6 = 1;
    else
        return invalid(why, cap, "v1 header with a protocol other than TCP4, TCP6 or UNKNOWN");
    /* four fields separated by single spaces */
    char *f[4];
    char *cur = line + 11;
    for (int i = 0; i < 4; i++) {
        f[i] = cur;
        char *sp = strchr(cur, ' ');
        if (i < 3) {
            if (sp == NULL || sp == cur)
                return invalid(why, cap, "v1 header without source, destination and both ports");
            *sp = '\0';
            cur = sp + 1;
        } else if (sp != NULL || *cur == '\0') {
            return invalid(why, cap, "v1 header with a field too many or an empty port");
        }
    }
    int sport = parse_port(f[2], strlen(f[2]));
    int dport = parse_port(f[3], strlen(f[3]));
    if (sport < 0 || dport < 0)
        return invalid(why, cap, "v1 header with a port that is not 0 to 65535");
    memset(&out->src, 0, sizeof(out->src));
    if (!v6) {
        struct sockaddr_in *a = (struct sockaddr_in *)(void *)&out->src;
        struct in_addr dst;
        if (inet_pton(AF_INET, f[0], &a->sin_addr) != 1 || inet_pton(AF_INET, f[1], &dst) != 1)
            return invalid(why, cap, "v1 TCP4 header with an address that is not dotted IPv4");
        a->sin_family = AF_INET;
        a->sin_port = htons((uint16_t)sport);
        out->src_len = sizeof(*a);
    } else {
        struct sockaddr_in6 *a = (struct sockaddr_in6 *)(void *)&out->src;
        struct in6_addr dst;
        if (inet_pton(AF_INET6, f[0], &a->sin6_addr) != 1 || inet_pton(AF_INET6, f[1], &dst) != 1)
            return invalid(why, cap, "v1 TCP6 header with an address that is not IPv6");
        a->sin6_family = AF_INET6;
        a->sin6_port = htons((uint16_t)sport);
        out->src_len = sizeof(*a);
    }
    out->local = 0;
    return KMS_PROXY_OK;
}

static enum kms_proxy_result parse_v2(const uint8_t *p, size_t n, struct kms_proxy_header *out, char *why,
                                      size_t cap)
{
    if (n < V2_FIXED)
        return KMS_PROXY_NEED_MORE;
    uint8_t ver_cmd = p[12], fam = p[13];
    size_t len = (size_t)p[14] << 8 | p[15];
    if ((ver_cmd >> 4) != 2)
        return invalid(why, cap, "v2 header with a version other than 2");
    if ((ver_cmd & 0x0F) > 1)
        return invalid(why, cap, "v2 header with a command other than LOCAL or PROXY");
    if (V2_FIXED + len > KMS_PROXY_MAX)
        return invalid(why, cap, "v2 header longer than 1040 bytes");
    if (n < V2_FIXED + len)
        return KMS_PROXY_NEED_MORE;
    out->len = V2_FIXED + len;
    out->local = 1;
    const uint8_t *a = p + V2_FIXED;
    memset(&out->src, 0, sizeof(out->src));
    if ((ver_cmd & 0x0F) == 0)
        return KMS_PROXY_OK; /* LOCAL: the proxy's own connection, e.g. a health check */
    if (fam == 0x11) {       /* TCP over IPv4: src, dst, sport, dport */
        if (len < 12)
            return invalid(why, cap, "v2 TCP4 header shorter than its addresses");
        struct sockaddr_in *s = (struct sockaddr_in *)(void *)&out->src;
        s->sin_family = AF_INET;
        memcpy(&s->sin_addr, a, 4);
        memcpy(&s->sin_port, a + 8, 2);
        out->src_len = sizeof(*s);
        out->local = 0;
    } else if (fam == 0x21) { /* TCP over IPv6 */
        if (len < 36)
            return invalid(why, cap, "v2 TCP6 header shorter than its addresses");
        struct sockaddr_in6 *s = (struct sockaddr_in6 *)(void *)&out->src;
        s->sin6_family = AF_INET6;
        memcpy(&s->sin6_addr, a, 16);
        memcpy(&s->sin6_port, a + 32, 2);
        out->src_len = sizeof(*s);
        out->local = 0;
    } else if ((fam >> 4) > 3 || (fam & 0x0F) > 2) {
        return invalid(why, cap, "v2 header with an unknown address family or protocol");
    }
    /* UNSPEC, UDP and UNIX: accepted, the proxy's own address stands (proxy-protocol.txt §2.2) */
    return KMS_PROXY_OK;
}

enum kms_proxy_result kms_proxy_parse(const uint8_t *p, size_t n, struct kms_proxy_header *out, char *why,
                                      size_t cap)
{
    memset(out, 0, sizeof(*out));
    if (why != NULL && cap > 0)
        why[0] = '\0';
    if (n == 0)
        return KMS_PROXY_NEED_MORE;
    if (!kms_proxy_may_start(p, n))
        return invalid(why, cap, "no PROXY header (v1 or v2) where one must be");
    if (p[0] == 'P')
        return n < sizeof(v1_sig) - 1 ? KMS_PROXY_NEED_MORE : parse_v1(p, n, out, why, cap);
    return n < sizeof(v2_sig) ? KMS_PROXY_NEED_MORE : parse_v2(p, n, out, why, cap);
}
