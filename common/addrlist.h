/* A list of IP addresses and networks ("10.0.0.0/8, 127.0.1.5, ::1"), as
 * kms.server.proxy.trusted names the load balancers allowed to send a PROXY
 * header, and the test of a socket address against it. */
#ifndef KMS_COMMON_ADDRLIST_H
#define KMS_COMMON_ADDRLIST_H

#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#include "common/error.h"

#define KMS_ADDRLIST_MAX 32

struct kms_addrlist {
    size_t n;
    struct {
        int family;    /* AF_INET or AF_INET6 */
        uint8_t addr[16];
        unsigned bits; /* prefix length: 32 or 128 for one address */
    } net[KMS_ADDRLIST_MAX];
};

/* Parses text: items separated by commas and/or spaces, each an IPv4 or IPv6
 * literal with an optional /prefix; empty text is an empty list. On failure
 * why names the item and what is wrong with it. */
kms_rc kms_addrlist_parse(const char *text, struct kms_addrlist *out, char *why, size_t cap) KMS_MUST_CHECK;

/* 1 when sa (AF_INET, or AF_INET6 including an IPv4-mapped ::ffff:a.b.c.d)
 * lies in one of the list's networks. */
int kms_addrlist_match(const struct kms_addrlist *l, const struct sockaddr *sa);

#endif
