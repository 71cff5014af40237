/* Prometheus metrics (issue 7), served in the text exposition format on the
 * admin listener (loopback by default, plain HTTP, no client certificate).
 * Counters are lock-free atomics updated on the request path. */
#ifndef KMS_SERVER_METRICS_H
#define KMS_SERVER_METRICS_H

#include <stddef.h>
#include <stdint.h>

#include "common/buf.h"
#include "common/error.h"
#include "hsm/backend.h"
#include "kms/identity.h"
#include "kms/ksgen.h"

#define KMS_METRICS_ROUTES 16 /* route index; the last one is "unmatched" */

void kms_metrics_request(size_t route, const char *pattern, int status, double seconds);
void kms_metrics_handshake(int resumed);
/* A TLS session-ticket master key was replaced (kms.tls.ticket.rotation). */
void kms_metrics_ticket_rotation(void);
void kms_metrics_refused(enum kms_auth_status why);
/* A keystore generation from the cluster was refused (SPEC §11). */
void kms_metrics_keystore_rejected(enum kms_ksgen_reject why);
/* The cluster keystore generation now in force. */
void kms_metrics_keystore_cluster_generation(uint64_t gen);

/* Connections the front door closed before or instead of serving them. */
enum kms_conn_close {
    KMS_CLOSE_HEAD_TIMEOUT = 0, /* no complete request head within kms.server.header.timeout */
    KMS_CLOSE_LIMIT,            /* kms.server.connection.limit or .per.address reached */
    KMS_CLOSE_PROXY_UNTRUSTED,  /* a PROXY header from an address not in kms.server.proxy.trusted */
    KMS_CLOSE_PROXY_INVALID,    /* a trusted peer's PROXY header missing or malformed */
    KMS_CLOSE_PROXY_TIMEOUT,    /* a trusted peer's PROXY header incomplete at the head deadline */
    KMS_CLOSE_BUSY,             /* too many connections waiting for their PROXY header */
    KMS_CLOSE_IDENTITY_REFUSED, /* a kept-alive connection whose certificate is refused now (revoked, ...) */
    KMS_CLOSE_RATE_LIMITED,     /* a client address over kms.ratelimit.connections */
    KMS_CLOSE_COUNT
};
const char *kms_conn_close_name(enum kms_conn_close why);
void kms_metrics_conn_closed(enum kms_conn_close why);
/* A request refused with 429: by client (its certificate's alias) and budget. */
void kms_metrics_rate_limited(const char *alias, const char *budget);

/* Wraps b so every call is counted and timed by operation and result; the
 * wrapper owns b (kms_backend_free frees both). */
kms_rc kms_metrics_wrap_backend(struct kms_backend *b, struct kms_backend **out) KMS_MUST_CHECK;

struct kms_metrics_gauges {
    unsigned long keystore_generation;
    long long earliest_not_after; /* unix seconds */
    int cache_kind;               /* 0 none, 1 local, 2 distributed */
    uint64_t cache_hits_local, cache_hits_remote, cache_misses, cache_evictions;
    int cache_remote_up;
    const char *backend; /* its kms.hsm.protocol */
    int backend_up;      /* the last readiness probe succeeded */
    uint64_t audit_failures;
    int crls_stale;            /* CRLs in force past their nextUpdate */
    long long crl_next_update; /* the earliest nextUpdate, unix seconds; 0: none */
};
/* A fetch of kms.auth.crl.url: ok (written or unchanged) or failed. */
void kms_metrics_crl_fetch(int ok);

/* Renders every metric into out (text format 0.0.4). */
kms_rc kms_metrics_render(const struct kms_metrics_gauges *g, struct kms_buf *out) KMS_MUST_CHECK;

#endif
