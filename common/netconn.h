/* The one outbound connection (issue 14, STYLE "one TLS client transport"):
 * TCP to host:port with every step bounded by a deadline, wrapped in OpenSSL
 * TLS unless no context is given. The KMIP client and the Redis connection
 * both speak through it, so dialling, certificate checks, time limits, the
 * errors an operator reads and SIGPIPE safety are written once.
 *
 * Deadlines are kms_now_ms() values. I/O never raises SIGPIPE: the TLS layer
 * writes through a BIO that sends with MSG_NOSIGNAL, plain TCP likewise.
 * Not thread-safe: one thread uses a connection at a time. */
#ifndef KMS_COMMON_NETCONN_H
#define KMS_COMMON_NETCONN_H

#include <stddef.h>
#include <stdint.h>

#include <openssl/ssl.h>

#include "common/error.h"

struct kms_netconn;

/* A TLS client context with what every outbound peer gets: TLS 1.2 or
 * later, the server verified (its chain, and its name at connect time), no
 * passphrase prompt for an encrypted key file, buffers released when idle.
 * The caller adds trust anchors and a client certificate; owns *out
 * (SSL_CTX_free). Errors: KMS_ERR_CRYPTO. */
kms_rc kms_netconn_tls_ctx(SSL_CTX **out) KMS_MUST_CHECK;

/* Connects to host:port (each address getaddrinfo gives, in turn) before
 * deadline, with TCP_NODELAY; with tls != NULL also completes the TLS
 * handshake by then, checking the server's certificate against host (an IP
 * literal as an IP address SAN, anything else as a DNS name, also sent as
 * SNI). Errors: KMS_ERR_BACKEND_UNAVAILABLE, the detail in an operator's
 * words (cannot resolve, connect refused or timed out, certificate not
 * accepted and why, our client certificate refused, handshake timed out);
 * KMS_ERR_CONFIG (host unusable for verification); KMS_ERR_NO_MEMORY. The
 * caller owns *out. */
kms_rc kms_netconn_open(const char *host, uint16_t port, SSL_CTX *tls, uint64_t deadline, struct kms_netconn **out)
    KMS_MUST_CHECK;

/* Writes all len bytes before deadline. Errors: KMS_ERR_BACKEND_TIMEOUT,
 * KMS_ERR_BACKEND_UNAVAILABLE (closed, reset, TLS failure). After an error
 * the connection is broken: only kms_netconn_free is left. */
kms_rc kms_netconn_write(struct kms_netconn *c, const void *p, size_t len, uint64_t deadline) KMS_MUST_CHECK;

/* Reads what is available, at least one byte, waiting until deadline: 0
 * with *n set. Errors as kms_netconn_write; the peer closing is
 * KMS_ERR_BACKEND_UNAVAILABLE ("connection closed by the peer"). */
kms_rc kms_netconn_read(struct kms_netconn *c, void *p, size_t cap, uint64_t deadline, size_t *n) KMS_MUST_CHECK;

/* Reads exactly len bytes before deadline. *got_any (may be NULL) says
 * whether any byte arrived, so a caller can tell "the peer never answered"
 * from "the answer broke off". Errors as kms_netconn_read. */
kms_rc kms_netconn_read_full(struct kms_netconn *c, void *p, size_t len, uint64_t deadline, int *got_any)
    KMS_MUST_CHECK;

/* Waits until a read would find data (already decrypted, or on the socket)
 * or deadline passes: 1 readable, 0 nothing came, -1 failed (broken). */
int kms_netconn_wait_readable(struct kms_netconn *c, uint64_t deadline);

/* For an idle pooled connection, without blocking: 1 when nothing is waiting
 * on it (usable), 0 when the peer closed it, reset it or sent something not
 * asked for. TLS 1.3 session tickets are consumed and do not count. */
int kms_netconn_idle_usable(struct kms_netconn *c);

/* Closes: one non-blocking TLS close_notify unless the connection broke,
 * never a wait for the peer's. Takes NULL; sets *c = NULL. */
void kms_netconn_free(struct kms_netconn **c);

#endif
