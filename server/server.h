/* The HTTPS server (SPEC §4–5): libmicrohttpd + GnuTLS, mutual TLS with the
 * client certificate requested (not required), identity decided once per
 * connection, one handler per resource. The only user of microhttpd.h. */
#ifndef KMS_SERVER_SERVER_H
#define KMS_SERVER_SERVER_H

#include <stddef.h>
#include <stdint.h>

#include "common/error.h"
#include "hsm/backend.h"
#include "kms/audit.h"
#include "kms/cache.h"
#include "kms/hierarchy.h"
#include "kms/identity.h"
#include "kms/keystore.h"
#include "kms/ratelimit.h"

/* What the server uses: borrowed (it must outlive the server), except the
 * keystore and CRLs, which become the first trust generation. */
struct kms_server_deps {
    const char *address;       /* listen address literal ("0.0.0.0", "::1") */
    uint16_t port;             /* 0: pick a free port (tests) */
    const char *server_alias;  /* keystore private-key entry presented to clients */
    unsigned threads;
    size_t max_body;
    unsigned conn_timeout_s;
    unsigned conn_limit;
    size_t conn_memory;         /* per-connection memory pool (headers, read buffer); 0: MHD's 32 KiB */
    unsigned conn_per_address;  /* most connections from one client address; 0: no cap */
    unsigned header_timeout_s;  /* a request head must arrive within this; 0: 10 s */
    const char *proxy_trusted;  /* kms.server.proxy.trusted; NULL or "": no PROXY headers */
    struct kms_rl_limit conn_rate; /* new connections per second per client address; rate 0: none */
    int crl_accept_stale;       /* kms.auth.crl.stale=accept */
    struct kms_ocsp *ocsp;      /* kms.auth.ocsp; NULL: off */
    int ocsp_hard;              /* kms.auth.ocsp=hard */
    unsigned ticket_lifetime_s; /* TLS session tickets: how long one resumes (0: GnuTLS's default) */
    unsigned ticket_rotation_s; /* new ticket master key this often; 0: never */
    /* NULL: ticket master keys are random, per node. Else (a cluster): derived
     * from this secret and the rotation period's number, so every node holding
     * it resumes every other node's tickets. Borrowed; the server keeps a copy. */
    const struct kms_secret *ticket_secret;
    const char *admin_address;  /* admin listener (GET /metrics); NULL or port 0: none */
    uint16_t admin_port;
    const char *node;
    const char *master_key;
    const char *cache_type;
    const char *backend_name;
    struct kms_keystore *keystore;       /* taken by kms_server_start, also on failure */
    STACK_OF(X509_CRL) *crls;            /* taken likewise; may be NULL */
    struct kms_rolemap *roles;
    struct kms_backend *backend;
    struct kms_cache *cache;
    struct kms_hierarchy *hierarchy;
    struct kms_audit *audit;
    struct kms_ratelimit *ratelimit; /* NULL: no rate limits */
};

struct kms_server;

/* Starts listening. Errors: KMS_ERR_ALIAS_NOT_FOUND (no such private-key
 * entry), KMS_ERR_CONFIG (bad address), KMS_ERR_IO (cannot bind),
 * KMS_ERR_CRYPTO. The caller owns *out (kms_server_stop). */
kms_rc kms_server_start(const struct kms_server_deps *d, struct kms_server **out) KMS_MUST_CHECK;
/* Stops accepting, finishes in-flight requests, frees; takes NULL. */
void kms_server_stop(struct kms_server **s);
/* The port actually bound, and the admin listener's (0 when none). */
uint16_t kms_server_port(const struct kms_server *s);
uint16_t kms_server_admin_port(const struct kms_server *s);

/* Makes ks and crls (taken, also on failure) the next trust generation:
 * new handshakes present its server certificate, new identity decisions use
 * its certificate entries and CRLs, and connections decided under an older
 * generation are decided again (front.c closes those now refused). Connections and
 * requests in flight are not disturbed. On failure (KMS_ERR_ALIAS_NOT_FOUND,
 * KMS_ERR_CRYPTO) the current generation stays in force. The outcome is
 * recorded for /health/ready either way (kms_server_note_reload). */
kms_rc kms_server_reload(struct kms_server *s, struct kms_keystore *ks, STACK_OF(X509_CRL) *crls) KMS_MUST_CHECK;
/* Records a reload outcome that failed before kms_server_reload (e.g. the
 * new keystore did not load) for /health/ready. */
void kms_server_note_reload(struct kms_server *s, kms_rc rc, const char *detail);
/* The current generation (1 at start) and its earliest certificate expiry. */
unsigned long kms_server_generation(struct kms_server *s);
time_t kms_server_earliest_expiry(struct kms_server *s, char *alias, size_t cap);

#endif
