/* One connection to a Redis server or Sentinel (internal to cluster/):
 * kmsd's own transport, because Debian 12's hiredis (0.14) has no TLS.
 *
 * A TCP socket (connect bounded by a timeout, every command bounded by
 * another), optionally wrapped in OpenSSL TLS (1.2 or later, the server
 * verified against a CA file and its host name or IP address, an optional
 * client certificate for Redis's tls-auth-clients). hiredis is used only to
 * format commands (redisFormatCommandArgv) and to parse replies (a
 * redisReader with the caller's bounded object functions). Plain redis://
 * and rediss:// go through the same code. Not thread-safe: the caller holds
 * one lock around one connection. */
#ifndef KMS_CLUSTER_REDIS_CONN_H
#define KMS_CLUSTER_REDIS_CONN_H

#include <hiredis/hiredis.h>
#include <stdint.h>
#include <openssl/ssl.h>

#include "common/error.h"

struct kms_redis_conn;

/* A TLS client context for Redis: TLS 1.2+, peer verification on. ca_file
 * NULL = the system's trusted CAs. cert_file and key_file (PEM, the key
 * unencrypted) both or neither. Errors: KMS_ERR_CONFIG (unreadable or bad
 * file, key not matching the certificate; detail names the file),
 * KMS_ERR_CRYPTO. The caller owns *out (SSL_CTX_free). */
kms_rc kms_redis_conn_tls_new(const char *ca_file, const char *cert_file, const char *key_file, SSL_CTX **out)
    KMS_MUST_CHECK;

/* Connects to host:port (every address getaddrinfo gives, in turn) within
 * connect_ms; with tls != NULL also does the TLS handshake within that time,
 * verifying the certificate against host (an IP literal is checked as an IP
 * address SAN, anything else as a DNS name). fns: the reply object functions
 * (borrowed; must outlive the connection). Every later command must complete
 * within command_ms. Errors: KMS_ERR_BACKEND_UNAVAILABLE (detail says why:
 * refused, timeout, TLS verification), KMS_ERR_NO_MEMORY. Caller owns *out. */
kms_rc kms_redis_conn_open(const char *host, int port, SSL_CTX *tls, unsigned connect_ms, unsigned command_ms,
                           redisReplyObjectFunctions *fns, struct kms_redis_conn **out) KMS_MUST_CHECK;

/* Sends one command (argv form: no byte is interpreted) and reads its reply,
 * buffering at most max_buffered unparsed bytes while waiting. NULL on any
 * failure (write/read error, EOF, timeout, protocol error, reply too big):
 * the connection is then unusable and the detail says why. The caller frees
 * the reply (freeReplyObject). The formatted command is wiped after sending
 * (it may hold a password). */
redisReply *kms_redis_conn_command(struct kms_redis_conn *c, int argc, const char **argv, const size_t *lens,
                                   size_t max_buffered);

/* Waits up to timeout_ms for a reply that no command asked for (pub/sub
 * messages after SUBSCRIBE), buffering at most max_buffered bytes. 1 with
 * *out set (the caller frees it), 0 when nothing arrived in time (the
 * connection stays usable), -1 when the connection failed (then unusable). */
int kms_redis_conn_wait(struct kms_redis_conn *c, unsigned timeout_ms, size_t max_buffered, redisReply **out)
    KMS_MUST_CHECK;

/* A counter or generation reply: an integer (INCR, EVAL), a string of 1..19
 * decimal digits (GET), or nil (0). 0 with *out set, -1 for anything else. */
int kms_redis_reply_u64(const redisReply *r, uint64_t *out);

/* Why the last open/command failed (never holds a command's bytes). */
const char *kms_redis_conn_error(const struct kms_redis_conn *c);

void kms_redis_conn_free(struct kms_redis_conn **c);

#endif
