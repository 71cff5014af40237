/* Server-internal types shared by the HTTP glue, the router and the handlers. */
#ifndef KMS_SERVER_INTERNAL_H
#define KMS_SERVER_INTERNAL_H

#include <gnutls/abstract.h>
#include <gnutls/gnutls.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdint.h>
#include <sys/socket.h>
#include <sys/types.h>
#include <microhttpd.h>
#include <time.h>

#include "common/buf.h"
#include "server/decode.h"
#include "server/jsonw.h"
#include "server/server.h"
#include "server/trust.h"

#define KMS_REQ_ID_LEN 16
#define KMS_PATH_PARAM_MAX 256

struct kms_server {
    struct kms_server_deps d;
    struct MHD_Daemon *daemon;
    uint16_t port;
    struct MHD_Daemon *admin;
    uint16_t admin_port;
    /* the current trust generation (keystore, CRLs, TLS identity) */
    pthread_mutex_t trust_lock;
    struct kms_trust *trust;
    unsigned long generation; /* atomic copy of trust->generation */
    long long crl_next_update; /* atomic: the earliest nextUpdate of trust->crls (0: none) */
    time_t reload_at;
    kms_rc reload_rc;
    char reload_detail[256];
    /* readiness probe result, refreshed at most every few seconds */
    pthread_mutex_t probe_lock;
    time_t probe_at;
    kms_rc probe_rc;
    /* TLS session-ticket master key: replaced every d.ticket_rotation_s, on the
     * first new connection after that (GnuTLS copies it into each session) */
    pthread_mutex_t ticket_lock;
    gnutls_datum_t ticket_key;
    uint64_t ticket_epoch;             /* now / d.ticket_rotation_s when the key was made */
    struct kms_secret *ticket_secret; /* copy of d.ticket_secret, or NULL */
    struct kms_front *front;          /* front.c: accepts connections and keeps the head deadline */
};

/* Per TLS connection: the identity is decided once, on the first request that
 * needs it, and reused for every keep-alive request (SPEC §5). */
struct kms_conn {
    int decided;
    int counted;                  /* its handshake has been counted in the metrics */
    unsigned long id_generation;  /* trust generation the identity was decided under */
    time_t decided_at;
    unsigned long ocsp_epoch;     /* the OCSP answers' epoch it was decided under */
    struct kms_trust *tls;        /* generation whose certificate this connection's handshake used */
    struct kms_identity id;
    struct kms_buf body; /* reused for each request's body */
    /* one TCP segment per small reply (http.c, push_vec): MHD sends a TLS
     * response's header and body as two records; the header record waits
     * here and leaves with the body record in one sendmsg */
    int fd;             /* the socket, once push_vec and pull are installed (else -1) */
    /* bytes read ahead by pull (conn.c): ciphertext, never plaintext */
    size_t rd_pos, rd_len;
    uint8_t rd[2048];
    int hold;           /* the next record pushed is a reply's header: keep it */
    size_t held_len;
    uint8_t held[1024]; /* encrypted TLS record(s), never plaintext */
    /* front.c: the registry of open connections and the request-head deadline */
    struct kms_conn *prev, *next;
    int sock;                  /* the socket from the start (fd above is set once push/pull are installed) */
    uint64_t head_deadline_ns; /* atomic; 0: no head is awaited (a request is being served, or idle) */
    int awaiting_head;         /* a reply completed: the next bytes read start a request head */
    uint64_t head_ns;          /* kms.server.header.timeout */
    char peer[48];             /* the client's address: the PROXY header's behind a trusted balancer */
    /* front.c: the certificate of an identity decided OK (under the front's
     * lock), decided again when trust, CRL freshness or OCSP answers change */
    uint8_t *ok_der;
    size_t ok_der_len;
};

struct kms_request;

/* A handler reads r->body (validated JSON), writes its reply into r->reply
 * and sets r->status, and fills the audit fields it knows. It returns the
 * error that becomes the response when it fails. */
typedef kms_rc (*kms_handler)(struct kms_server *s, struct kms_request *r);

enum { KMS_BODY_NONE = 0, KMS_BODY_JSON = 1 };

struct kms_route {
    const char *method;
    const char *pattern;   /* "/v1/keys/{}/wrap": {} matches one path segment */
    kms_handler handler;
    unsigned roles;        /* bit (1 << kms_role); 0 = no certificate needed */
    int body;
    const char *op;        /* audit operation name; NULL: not audited */
    int identify;          /* roles 0: still decide the identity of a certificate presented */
    int budget;            /* enum kms_rl_budget the request spends (kms.ratelimit.<role>) */
};

struct kms_request {
    char id[KMS_REQ_ID_LEN + 1];
    uint64_t start_ns; /* kms_now_ns() at its first callback */
    const struct kms_route *route;
    char param[KMS_PATH_PARAM_MAX + 1];
    struct kms_conn *conn;
    struct kms_buf *body;
    kms_rc error;          /* decided before the handler runs */
    char detail[256];      /* the error's log detail, kept with the request */
    /* what the caller is told about a refused field (kms_request_reject) */
    kms_rc reject_rc;
    char reject_field[96];
    char reject_message[224];
    unsigned long long announced; /* Content-Length, 0 when absent */
    unsigned long long drained;   /* bytes of a refused body read and dropped */
    int responded;
    int method_head; /* HEAD: MHD sends no body */
    unsigned retry_after_s; /* a 429's Retry-After */
    /* reply */
    int status;
    struct kms_jsonw reply;
    /* audit */
    char site_id[KMS_SITE_ID_MAX + 1];
    char key_ref[KMS_PATH_PARAM_MAX + 64];
};

/* tls.c: the listener's credentials */
void kms_tls_tickets_init(struct kms_server *s, const struct kms_server_deps *d);
void kms_tls_tickets_free(struct kms_server *s);
void kms_tls_enable_tickets(struct kms_server *s, gnutls_session_t tls);
void kms_tls_set_server(struct kms_server *s);
int kms_tls_on_certificate(gnutls_session_t session, const struct gnutls_cert_retr_st *info,
                           gnutls_pcert_st **certs, unsigned int *certs_length, gnutls_ocsp_data_st **ocsp,
                           unsigned int *ocsp_length, gnutls_privkey_t *privkey, unsigned int *flags);
void kms_server_install_trust(struct kms_server *s, struct kms_trust *t);
/* 1 when a CRL in force is past its nextUpdate at now; *next: the earliest
 * nextUpdate (0: none). From the value install_trust keeps, no CRL walk. */
int kms_server_crls_stale(struct kms_server *s, time_t now, time_t *next);

/* conn.c: connections */
void kms_conn_notify(void *cls, struct MHD_Connection *c, void **socket_context,
                     enum MHD_ConnectionNotificationCode code);
/* Once the handshake is done: replies in one segment, requests in one read. */
void kms_conn_install_io(struct MHD_Connection *c, struct kms_conn *conn);
void kms_conn_flush_held(struct kms_conn *conn);
void kms_conn_decide_identity(struct kms_server *s, struct MHD_Connection *c, struct kms_conn *conn,
                              const char *req_id);
int kms_conn_has_certificate(struct MHD_Connection *c); /* the client presented one */
/* The status deciding der would give now, with OCSP from the cache only. */
enum kms_auth_status kms_conn_redecide(struct kms_server *s, struct kms_trust *t, const uint8_t *der, size_t len,
                                       time_t now);

/* front.c: the listening socket, PROXY headers, the request-head deadline.
 * kms_front_start binds d->address:d->port (s->port: the port bound); MHD
 * must run with MHD_USE_NO_LISTEN_SOCKET | MHD_USE_ITC. */
kms_rc kms_front_listen(struct kms_server *s) KMS_MUST_CHECK;
kms_rc kms_front_start(struct kms_server *s) KMS_MUST_CHECK;
void kms_front_stop(struct kms_server *s); /* stops accepting; before MHD_stop_daemon */
void kms_front_free(struct kms_server *s);
/* From the connection notifications: registry in, registry out. */
void kms_front_conn_started(struct kms_server *s, struct kms_conn *conn, struct MHD_Connection *c);
void kms_front_conn_closed(struct kms_server *s, struct kms_conn *conn);
/* Records the certificate of an identity decided OK (der NULL: refused or
 * none), so that the connection is closed once it would be refused. */
void kms_front_conn_decided(struct kms_server *s, struct kms_conn *conn, const uint8_t *der, size_t len);
/* A request head begins (its first bytes were read) or is complete. */
void kms_front_head_begins(struct kms_conn *conn);
void kms_front_head_done(struct kms_conn *conn);

/* request.c: MHD's request callbacks */
enum MHD_Result kms_request_on_request(void *cls, struct MHD_Connection *c, const char *url, const char *method,
                                       const char *version, const char *upload_data, size_t *upload_data_size,
                                       void **req_cls);
void kms_request_on_completed(void *cls, struct MHD_Connection *c, void **req_cls,
                              enum MHD_RequestTerminationCode toe);

/* reply.c: responses */
enum MHD_Result kms_reply_send(struct MHD_Connection *c, struct kms_request *r);
enum MHD_Result kms_reply_error(struct kms_server *s, struct MHD_Connection *c, struct kms_request *r, kms_rc rc);
void kms_reply_audit(struct kms_server *s, struct kms_request *r, kms_rc rc);

/* admin.c: the admin listener */
kms_rc kms_admin_start(struct kms_server *s) KMS_MUST_CHECK;

/* router.c */
size_t kms_router_index(const struct kms_route *r); /* 0.., or the route count when r is NULL */
const struct kms_route *kms_router_match(const char *method, const char *url, char *param, size_t param_cap,
                                         int *method_mismatch);

/* The current trust generation, referenced (kms_trust_unref when done). */
struct kms_trust *kms_server_trust(struct kms_server *s);

/* request helpers (http.c) */
/* Decodes the body into out by schema (decode.h); a refusal is answered
 * with the field and the reason (kms_request_reject). Free out's batch with
 * kms_decode_free. */
kms_rc kms_request_decode(struct kms_request *r, const struct kms_schema *schema, void *out) KMS_MUST_CHECK;
/* Fails the request with rc, telling the caller which field (may be "") and
 * why; the same text goes to the log. Never put a value's bytes in fmt. */
kms_rc kms_request_reject(struct kms_request *r, kms_rc rc, const char *field, const char *fmt, ...)
    KMS_PRINTF(4, 5);
const struct kms_identity *kms_request_identity(const struct kms_request *r);

/* jsonin.c: jansson's allocator, wiping (Vault replies carry key material) */
void kms_json_install_allocator(void);

/* handlers */
kms_rc kms_handle_health_live(struct kms_server *s, struct kms_request *r);
kms_rc kms_handle_health_ready(struct kms_server *s, struct kms_request *r);
kms_rc kms_handle_whoami(struct kms_server *s, struct kms_request *r);
kms_rc kms_handle_customer_create(struct kms_server *s, struct kms_request *r);
kms_rc kms_handle_user_create(struct kms_server *s, struct kms_request *r);
kms_rc kms_handle_workspace_create(struct kms_server *s, struct kms_request *r);
kms_rc kms_handle_workspace_unwrap(struct kms_server *s, struct kms_request *r);
kms_rc kms_handle_key_wrap(struct kms_server *s, struct kms_request *r);
kms_rc kms_handle_key_unwrap(struct kms_server *s, struct kms_request *r);
kms_rc kms_handle_key_rewrap(struct kms_server *s, struct kms_request *r);
kms_rc kms_handle_key_datakey(struct kms_server *s, struct kms_request *r);
kms_rc kms_handle_key_info(struct kms_server *s, struct kms_request *r);
kms_rc kms_handle_cluster(struct kms_server *s, struct kms_request *r);
kms_rc kms_handle_cache_invalidate(struct kms_server *s, struct kms_request *r);

/* The backend's probe, run at most once per few seconds whatever the rate of
 * callers (readiness checks, metric scrapes); *checked: when it last ran. */
kms_rc kms_server_backend_probe(struct kms_server *s, time_t *checked) KMS_MUST_CHECK;

/* Writes the readiness answer (SPEC §4) into w and returns its status (200,
 * or 503 when the backend does not answer): with detail the node, keystore,
 * backend and cache; without, only the status and the degraded parts. */
int kms_health_ready_write(struct kms_server *s, struct kms_jsonw *w, int detail);

#endif
