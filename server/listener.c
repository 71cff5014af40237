/* The HTTPS listener: libmicrohttpd's daemon (epoll, a thread pool, TLS
 * through GnuTLS) wired to this directory's parts: front.c (accepting,
 * PROXY headers, the head deadline), tls.c (credentials),
 * conn.c (connections), request.c (requests), reply.c (responses), admin.c
 * (GET /metrics). See shared/reference/libmicrohttpd-mtls.md for the MHD and
 * GnuTLS behaviours relied on (cert request, keep-alive, socket context). */
#include "server/server.h"

#include <arpa/inet.h>
#include <errno.h>
#include <microhttpd.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <string.h>

#include "server/internal.h"
#include "server/tls_priorities.h"

/* Frees what kms_server_start made before (or without) the daemon. */
static void release(struct kms_server *s)
{
    kms_front_free(s);
    kms_tls_set_server(NULL);
    kms_trust_unref(&s->trust);
    pthread_mutex_destroy(&s->probe_lock);
    pthread_mutex_destroy(&s->trust_lock);
    kms_tls_tickets_free(s);
    free(s);
}

kms_rc kms_server_start(const struct kms_server_deps *d, struct kms_server **out)
{
    *out = NULL;
    struct kms_trust *t = NULL;
    KMS_GUARD(kms_trust_new(d->keystore, d->crls, d->server_alias, 1, &t));

    /* why no listen socket of MHD's: front.c accepts, reads PROXY headers and
     * keeps the head deadline, then hands each connection over (ITC wakes the
     * worker that takes it) */
    unsigned flags = MHD_USE_TLS | MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_EPOLL | MHD_USE_ERROR_LOG |
                     MHD_USE_NO_LISTEN_SOCKET | MHD_USE_ITC;

    struct kms_server *s = calloc(1, sizeof(*s));
    if (s == NULL) {
        kms_trust_unref(&t);
        return KMS_ERR_NO_MEMORY;
    }
    s->d = *d;
    s->d.keystore = NULL; /* owned by the trust generation now */
    s->d.crls = NULL;
    pthread_mutex_init(&s->probe_lock, NULL);
    pthread_mutex_init(&s->trust_lock, NULL);
    kms_server_install_trust(s, t);
    kms_tls_set_server(s);
    kms_json_install_allocator();

    kms_tls_tickets_init(s, d);
    kms_rc lrc = kms_front_listen(s);
    if (lrc != KMS_OK) {
        release(s);
        return lrc;
    }

    struct MHD_OptionItem ops[12];
    size_t n = 0;
    ops[n++] = (struct MHD_OptionItem){MHD_OPTION_HTTPS_PRIORITIES, 0, (void *)KMS_TLS_PRIORITIES};
    ops[n++] = (struct MHD_OptionItem){MHD_OPTION_NOTIFY_CONNECTION, (intptr_t)kms_conn_notify, s};
    ops[n++] = (struct MHD_OptionItem){MHD_OPTION_NOTIFY_COMPLETED, (intptr_t)kms_request_on_completed, s};
    ops[n++] = (struct MHD_OptionItem){MHD_OPTION_CONNECTION_TIMEOUT, (intptr_t)d->conn_timeout_s, NULL};
    ops[n++] = (struct MHD_OptionItem){MHD_OPTION_CONNECTION_LIMIT, (intptr_t)d->conn_limit, NULL};
    if (d->conn_per_address > 0)
        ops[n++] = (struct MHD_OptionItem){MHD_OPTION_PER_IP_CONNECTION_LIMIT, (intptr_t)d->conn_per_address, NULL};
    if (d->conn_memory > 0)
        ops[n++] = (struct MHD_OptionItem){MHD_OPTION_CONNECTION_MEMORY_LIMIT, (intptr_t)d->conn_memory, NULL};
    if (d->threads > 1)
        ops[n++] = (struct MHD_OptionItem){MHD_OPTION_THREAD_POOL_SIZE, (intptr_t)d->threads, NULL};
    ops[n++] = (struct MHD_OptionItem){MHD_OPTION_END, 0, NULL};
    /* why: the certificate callback goes in the varargs, since an option
     * array item would cast a function pointer to void * */
    s->daemon = MHD_start_daemon(flags, 0, NULL, NULL, kms_request_on_request, s,
                                 MHD_OPTION_HTTPS_CERT_CALLBACK2, kms_tls_on_certificate, MHD_OPTION_ARRAY, ops, MHD_OPTION_END);
    int saved = errno;
    if (s->daemon == NULL) {
        release(s);
        return kms_fail(KMS_ERR_IO, "cannot start the HTTPS server on %s:%u: %s", d->address, (unsigned)d->port,
                        saved ? strerror(saved) : "libmicrohttpd refused the configuration");
    }
    lrc = kms_front_start(s);
    if (lrc != KMS_OK) {
        MHD_stop_daemon(s->daemon);
        release(s);
        return lrc;
    }
    *out = s;
    kms_rc arc = kms_admin_start(s);
    if (arc != KMS_OK)
        kms_server_stop(out);
    return arc;
}

uint16_t kms_server_port(const struct kms_server *s) { return s->port; }
uint16_t kms_server_admin_port(const struct kms_server *s) { return s->admin_port; }

void kms_server_stop(struct kms_server **sp)
{
    if (sp == NULL || *sp == NULL)
        return;
    struct kms_server *s = *sp;
    if (s->admin != NULL)
        MHD_stop_daemon(s->admin);
    kms_front_stop(s); /* why first: no connection may be handed to a stopping daemon */
    MHD_stop_daemon(s->daemon);
    release(s);
    *sp = NULL;
}
