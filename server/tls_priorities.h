/* The GnuTLS priority string of kmsd's HTTPS listener, in one place: the
 * listener (server/listener.c) and the libmicrohttpd floor of the nginx
 * comparison (tests/bench/mhd_floor.c) must negotiate the same thing. */
#ifndef KMS_SERVER_TLS_PRIORITIES_H
#define KMS_SERVER_TLS_PRIORITIES_H

/* why: TLS 1.2 at least, and for 1.2 only forward-secret ECDHE with AEAD
 * suites (SPEC §5, issue 15): NORMAL alone still offers CBC with HMAC
 * (Lucky 13's family) and static-RSA key exchange */
#define KMS_TLS_PRIORITIES                                                                                             \
    "NORMAL:-VERS-ALL:+VERS-TLS1.3:+VERS-TLS1.2:-CIPHER-ALL:+AES-256-GCM:+AES-128-GCM:+CHACHA20-POLY1305:-MAC-ALL:"    \
    "+AEAD:-KX-ALL:+ECDHE-ECDSA:+ECDHE-RSA"

#endif
