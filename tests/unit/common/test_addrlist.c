/* common/addrlist.c: kms.server.proxy.trusted's lists of addresses and
 * networks, and which peers they match. */
#include "common/addrlist.h"

#include <arpa/inet.h>
#include <criterion/criterion.h>
#include <netinet/in.h>
#include <stdio.h>
#include <string.h>

static int match4(const struct kms_addrlist *l, const char *ip)
{
    struct sockaddr_in a = {.sin_family = AF_INET};
    cr_assert_eq(inet_pton(AF_INET, ip, &a.sin_addr), 1);
    return kms_addrlist_match(l, (const struct sockaddr *)&a);
}

static int match6(const struct kms_addrlist *l, const char *ip)
{
    struct sockaddr_in6 a = {.sin6_family = AF_INET6};
    cr_assert_eq(inet_pton(AF_INET6, ip, &a.sin6_addr), 1);
    return kms_addrlist_match(l, (const struct sockaddr *)&a);
}

Test(addrlist, addresses_and_networks_match_what_they_cover)
{
    struct kms_addrlist l;
    char why[128];
    cr_assert_eq(kms_addrlist_parse(" 127.0.1.100, 10.0.0.0/8 fd00::/8,::1", &l, why, sizeof(why)), KMS_OK, "%s", why);
    cr_assert_eq(l.n, 4);
    cr_assert(match4(&l, "127.0.1.100"));
    cr_assert(!match4(&l, "127.0.1.101"));
    cr_assert(match4(&l, "10.255.0.1"));
    cr_assert(!match4(&l, "11.0.0.1"));
    cr_assert(match6(&l, "fd12::5"));
    cr_assert(match6(&l, "::1"));
    cr_assert(!match6(&l, "::2"));
    cr_assert(match6(&l, "::ffff:10.1.2.3"), "an IPv4-mapped peer on a dual-stack socket");
}

Test(addrlist, prefixes_that_end_inside_a_byte)
{
    struct kms_addrlist l;
    char why[128];
    cr_assert_eq(kms_addrlist_parse("192.168.4.0/22", &l, why, sizeof(why)), KMS_OK, "%s", why);
    cr_assert(match4(&l, "192.168.7.255"));
    cr_assert(!match4(&l, "192.168.8.0"));
    cr_assert(!match4(&l, "192.168.3.255"));
    cr_assert_eq(kms_addrlist_parse("0.0.0.0/0", &l, why, sizeof(why)), KMS_OK);
    cr_assert(match4(&l, "8.8.8.8"));
    cr_assert(!match6(&l, "::1"));
}

Test(addrlist, empty_text_is_an_empty_list)
{
    struct kms_addrlist l;
    char why[16];
    cr_assert_eq(kms_addrlist_parse("", &l, why, sizeof(why)), KMS_OK);
    cr_assert_eq(l.n, 0);
    cr_assert(!match4(&l, "127.0.0.1"));
}

Test(addrlist, bad_items_are_named)
{
    static const char *const bad[] = {"127.0.0", "10.0.0.0/33", "::1/129", "host.example", "10.0.0.0/", "1.2.3.4/x",
                                      "10.0.0.0/-1"};
    struct kms_addrlist l;
    char why[128];
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        cr_assert_eq(kms_addrlist_parse(bad[i], &l, why, sizeof(why)), KMS_ERR_CONFIG, "accepted %s", bad[i]);
        cr_assert(strstr(why, bad[i]) != NULL, "%s does not name %s", why, bad[i]);
    }
    char many[33 * 12] = "";
    for (int i = 0; i < 33; i++)
        snprintf(many + strlen(many), sizeof(many) - strlen(many), "10.0.0.%d,", i);
    cr_assert_eq(kms_addrlist_parse(many, &l, why, sizeof(why)), KMS_ERR_CONFIG);
    cr_assert(strstr(why, "too many") != NULL, "%s", why);
}
