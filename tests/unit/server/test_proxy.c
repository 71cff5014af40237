/* server/proxy.c: PROXY protocol v1 and v2 headers as HAProxy writes them
 * (send-proxy, send-proxy-v2), their prefixes, and what is refused. */
#include "server/proxy.h"

#include <arpa/inet.h>
#include <criterion/criterion.h>
#include <netinet/in.h>
#include <string.h>

static const uint8_t sig[12] = {0x0D, 0x0A, 0x0D, 0x0A, 0x00, 0x0D, 0x0A, 0x51, 0x55, 0x49, 0x54, 0x0A};

static enum kms_proxy_result parse(const void *p, size_t n, struct kms_proxy_header *h, char *why)
{
    return kms_proxy_parse(p, n, h, why, 128);
}

static void assert_v4(const struct kms_proxy_header *h, const char *addr, unsigned port)
{
    cr_assert_eq(h->local, 0);
    const struct sockaddr_in *a = (const struct sockaddr_in *)(const void *)&h->src;
    cr_assert_eq(a->sin_family, AF_INET);
    cr_assert_eq(h->src_len, sizeof(*a));
    char text[INET_ADDRSTRLEN];
    inet_ntop(AF_INET, &a->sin_addr, text, sizeof(text));
    cr_assert_str_eq(text, addr);
    cr_assert_eq(ntohs(a->sin_port), port);
}

/* A v2 header: command (0 LOCAL, 1 PROXY), family byte, address block. */
static size_t v2(uint8_t *out, int cmd, uint8_t fam, const uint8_t *addr, size_t len)
{
    memcpy(out, sig, 12);
    out[12] = (uint8_t)(0x20 | cmd);
    out[13] = fam;
    out[14] = (uint8_t)(len >> 8);
    out[15] = (uint8_t)len;
    memcpy(out + 16, addr, len);
    return 16 + len;
}

Test(proxy, v1_tcp4_gives_the_client_address_and_the_header_length)
{
    const char *h = "PROXY TCP4 127.0.0.7 127.0.1.1 40312 8443\r\n\x16\x03\x01";
    struct kms_proxy_header ph;
    char why[128];
    cr_assert_eq(parse(h, strlen(h), &ph, why), KMS_PROXY_OK, "%s", why);
    cr_assert_eq(ph.len, strlen("PROXY TCP4 127.0.0.7 127.0.1.1 40312 8443\r\n"));
    assert_v4(&ph, "127.0.0.7", 40312);
}

Test(proxy, v1_tcp6_and_unknown)
{
    const char *h = "PROXY TCP6 ::1 ::2 1 65535\r\n";
    struct kms_proxy_header ph;
    char why[128];
    cr_assert_eq(parse(h, strlen(h), &ph, why), KMS_PROXY_OK, "%s", why);
    const struct sockaddr_in6 *a = (const struct sockaddr_in6 *)(const void *)&ph.src;
    cr_assert_eq(a->sin6_family, AF_INET6);
    cr_assert_eq(ntohs(a->sin6_port), 1);
    cr_assert_eq(ph.local, 0);
    h = "PROXY UNKNOWN\r\n";
    cr_assert_eq(parse(h, strlen(h), &ph, why), KMS_PROXY_OK);
    cr_assert_eq(ph.local, 1);
    cr_assert_eq(ph.len, strlen(h));
}

Test(proxy, every_prefix_of_a_header_asks_for_more)
{
    const char *h = "PROXY TCP4 10.1.2.3 10.0.0.1 5000 8443\r\n";
    struct kms_proxy_header ph;
    char why[128];
    for (size_t n = 0; n < strlen(h); n++)
        cr_assert_eq(parse(h, n, &ph, why), KMS_PROXY_NEED_MORE, "prefix of %zu bytes: %s", n, why);
    uint8_t b[64];
    const uint8_t addr[12] = {10, 9, 8, 7, 10, 0, 0, 1, 0x1F, 0x90, 0x20, 0xFB};
    size_t len = v2(b, 1, 0x11, addr, sizeof(addr));
    for (size_t n = 0; n < len; n++)
        cr_assert_eq(parse(b, n, &ph, why), KMS_PROXY_NEED_MORE, "v2 prefix of %zu bytes: %s", n, why);
    cr_assert_eq(parse(b, len, &ph, why), KMS_PROXY_OK, "%s", why);
    assert_v4(&ph, "10.9.8.7", 8080);
    cr_assert_eq(ph.len, 28);
}

Test(proxy, v2_tcp6_with_tlvs_and_local_for_health_checks)
{
    uint8_t b[128], addr[36 + 7];
    memset(addr, 0, sizeof(addr));
    addr[15] = 1;                                  /* src ::1 */
    addr[31] = 2;                                  /* dst ::2 */
    addr[32] = 0x30, addr[33] = 0x39;              /* sport 12345 */
    addr[34] = 0x20, addr[35] = 0xFB;              /* dport 8443 */
    addr[36] = 0x04, addr[37] = 0, addr[38] = 4;   /* a TLV of type PP2_TYPE_NOOP, 4 bytes */
    size_t len = v2(b, 1, 0x21, addr, sizeof(addr));
    struct kms_proxy_header ph;
    char why[128];
    cr_assert_eq(parse(b, len, &ph, why), KMS_PROXY_OK, "%s", why);
    cr_assert_eq(ph.len, len);
    const struct sockaddr_in6 *a = (const struct sockaddr_in6 *)(const void *)&ph.src;
    cr_assert_eq(a->sin6_family, AF_INET6);
    cr_assert_eq(ntohs(a->sin6_port), 12345);
    cr_assert_eq(a->sin6_addr.s6_addr[15], 1);
    len = v2(b, 0, 0x00, addr, 0);
    cr_assert_eq(parse(b, len, &ph, why), KMS_PROXY_OK, "%s", why);
    cr_assert_eq(ph.local, 1, "LOCAL: the proxy's own address stands");
    cr_assert_eq(ph.len, 16);
}

Test(proxy, malformed_headers_are_refused_with_a_reason)
{
    static const char *const bad_v1[] = {
        "PROXY TCP5 1.2.3.4 1.2.3.5 1 2\r\n",     "PROXY TCP4 1.2.3 1.2.3.5 1 2\r\n",
        "PROXY TCP4 1.2.3.4 1.2.3.5 1 65536\r\n", "PROXY TCP4 1.2.3.4 1.2.3.5 01 2\r\n",
        "PROXY TCP4 1.2.3.4  1.2.3.5 1 2\r\n",    "PROXY TCP4 1.2.3.4 1.2.3.5 1 2 3\r\n",
        "PROXY TCP4 ::1 1.2.3.5 1 2\r\n",         "PROXY TCP6 1.2.3.4 ::1 1 2\r\n",
        "PROXY TCP4 1.2.3.4 1.2.3.5 1\n2\r\n",
    };
    struct kms_proxy_header ph;
    char why[128];
    for (size_t i = 0; i < sizeof(bad_v1) / sizeof(bad_v1[0]); i++) {
        cr_assert_eq(parse(bad_v1[i], strlen(bad_v1[i]), &ph, why), KMS_PROXY_INVALID, "accepted: %s", bad_v1[i]);
        cr_assert(why[0] != '\0');
    }
    char longline[200];
    memset(longline, 'A', sizeof(longline));
    memcpy(longline, "PROXY TCP4 ", 11);
    cr_assert_eq(parse(longline, sizeof(longline), &ph, why), KMS_PROXY_INVALID, "no CRLF in 107 bytes");

    uint8_t b[64];
    const uint8_t addr[12] = {1, 2, 3, 4, 5, 6, 7, 8, 0, 1, 0, 2};
    size_t len = v2(b, 1, 0x11, addr, 8); /* TCP4 with 8 address bytes */
    cr_assert_eq(parse(b, len, &ph, why), KMS_PROXY_INVALID);
    len = v2(b, 2, 0x11, addr, 12); /* command 2 */
    cr_assert_eq(parse(b, len, &ph, why), KMS_PROXY_INVALID);
    len = v2(b, 1, 0x11, addr, 12);
    b[12] = 0x11; /* version 1 in the binary form */
    cr_assert_eq(parse(b, len, &ph, why), KMS_PROXY_INVALID);
    len = v2(b, 1, 0x11, addr, 12);
    b[14] = 0xFF; /* length past what kmsd reads */
    cr_assert_eq(parse(b, len, &ph, why), KMS_PROXY_INVALID);
    cr_assert(strstr(why, "1040") != NULL, "%s", why);
}

Test(proxy, a_tls_client_hello_is_no_header)
{
    const uint8_t hello[] = {0x16, 0x03, 0x01, 0x02, 0x00, 0x01};
    struct kms_proxy_header ph;
    char why[128];
    cr_assert_eq(kms_proxy_may_start(hello, sizeof(hello)), 0);
    cr_assert_eq(parse(hello, sizeof(hello), &ph, why), KMS_PROXY_INVALID);
    cr_assert_eq(kms_proxy_may_start((const uint8_t *)"PRO", 3), 1);
    cr_assert_eq(kms_proxy_may_start((const uint8_t *)"PROXZ", 5), 0);
    cr_assert_eq(kms_proxy_may_start(sig, 5), 1);
}
