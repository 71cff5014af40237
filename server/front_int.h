/* Shared by the front door (front.c: accepting, PROXY headers) and the
 * registry of open connections (conns.c: head deadlines, identities decided
 * again); private to server/. */
#ifndef KMS_SERVER_FRONT_INT_H
#define KMS_SERVER_FRONT_INT_H

#include <pthread.h>
#include <stdint.h>
#include <sys/socket.h>

#include "common/addrlist.h"
#include "server/internal.h"
#include "server/metrics.h"

struct pending;

struct kms_front {
    int listen_fd;
    int wake[2];
    pthread_t thread;
    int started;
    int proxy; /* the trusted list is not empty */
    struct kms_addrlist trusted;
    uint64_t head_ns;
    size_t npending;
    struct pending *pending; /* PENDING_MAX */
    uint64_t accept_pause_until; /* out of descriptors: accept again after this */
    uint64_t last_log[KMS_CLOSE_COUNT];
    uint64_t unlogged[KMS_CLOSE_COUNT];
    /* the open connections (conn.c's notifications), for the head deadline */
    pthread_mutex_t lock;
    struct kms_conn *conns;
    struct kms_ratelimit *conn_rl; /* kms.ratelimit.connections, by client address; NULL: none */
    /* what kept-alive identities were last decided against (recheck) */
    unsigned long seen_generation, seen_ocsp_epoch;
    int seen_stale;
};

/* Counts a connection closed for why and warns, at most once a second per reason. */
void kms_front_closed(struct kms_front *f, enum kms_conn_close why, const char *peer, const char *detail);
void kms_front_addr_text(const struct sockaddr *sa, char *out, size_t cap);
/* From the front thread, every SWEEP_NS: late heads; refused identities. */
void kms_front_sweep(struct kms_front *f, uint64_t now);
void kms_front_recheck(struct kms_server *s, struct kms_front *f);

#endif
