/* The PROXY protocol, versions 1 (text) and 2 (binary), as HAProxy's
 * send-proxy and send-proxy-v2 write it (HAProxy's proxy-protocol.txt): the
 * header a load balancer puts in front of the client's bytes to say whose
 * connection it is. Parsing only; reading the socket is front.c's job. */
#ifndef KMS_SERVER_PROXY_H
#define KMS_SERVER_PROXY_H

#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

/* A v1 header is at most 107 bytes; a v2 header 16 plus its length field.
 * kmsd reads v2 headers up to this size (addresses and a few TLVs). */
#define KMS_PROXY_MAX 1040

enum kms_proxy_result {
    KMS_PROXY_NEED_MORE = 0, /* a prefix of a header: read more */
    KMS_PROXY_OK = 1,
    KMS_PROXY_INVALID = -1,
};

struct kms_proxy_header {
    size_t len; /* bytes the header takes in front of the client's data */
    /* 0: src holds the client's address. 1: the proxy speaks for itself
     * (v2 LOCAL, as in its health checks; v1 UNKNOWN; a family other than TCP
     * over IPv4/IPv6): the connection's own peer address stands. */
    int local;
    struct sockaddr_storage src;
    socklen_t src_len;
};

/* Parses the n bytes at p, the first bytes a connection sent. On
 * KMS_PROXY_INVALID why says what is wrong (no bytes of the input in it). */
enum kms_proxy_result kms_proxy_parse(const uint8_t *p, size_t n, struct kms_proxy_header *out, char *why,
                                      size_t cap);

/* 1 when the n bytes at p (n >= 1) could be the start of a PROXY header of
 * either version; 0 when they cannot (a TLS ClientHello starts with 0x16). */
int kms_proxy_may_start(const uint8_t *p, size_t n);

#endif
