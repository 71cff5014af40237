/* The floor of libmicrohttpd + GnuTLS, for tests/bench/compare-nginx.sh
 * (issue 14): an MHD server with kmsd's TLS settings (the server chain and key
 * given, a client certificate requested, kmsd's priority string) that answers
 * every request with one fixed body from a response made once at start, and
 * does nothing else: no routing, identity, metrics, audit or custom transport.
 * What kmsd costs above this is kmsd's; what this costs above nginx belongs to
 * the HTTP and TLS libraries kmsd is built on.
 *   mhd_floor PORT CHAIN_PEM KEY_PEM BODY
 * Listens on 127.0.0.1:PORT with one internal epoll thread, prints "ready" on
 * stdout once listening, stops on SIGTERM or SIGINT. */
#include <gnutls/gnutls.h>
#include <microhttpd.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include "common/error.h"
#include "common/file.h"
#include "common/secret.h"
#include "server/tls_priorities.h"

static struct MHD_Response *fixed;

/* why the reply waits for the second call: queued on the first, MHD 0.9.75
 * closes the connection after it (reference, pitfall 1), and kmsd keeps it */
static enum MHD_Result on_request(void *cls, struct MHD_Connection *c, const char *url, const char *method,
                                  const char *version, const char *upload, size_t *upload_size, void **req)
{
    (void)cls;
    (void)url;
    (void)method;
    (void)version;
    (void)upload;
    if (*req == NULL) {
        *req = c;
        return MHD_YES;
    }
    if (*upload_size > 0) {
        *upload_size = 0;
        return MHD_YES;
    }
    return MHD_queue_response(c, MHD_HTTP_OK, fixed);
}

/* why: as kmsd does, request (not require) a client certificate; MHD asks
 * for none on its own without MEM_TRUST */
static void on_connection(void *cls, struct MHD_Connection *c, void **socket_context,
                          enum MHD_ConnectionNotificationCode code)
{
    (void)cls;
    (void)socket_context;
    if (code != MHD_CONNECTION_NOTIFY_STARTED)
        return;
    const union MHD_ConnectionInfo *ci = MHD_get_connection_info(c, MHD_CONNECTION_INFO_GNUTLS_SESSION);
    if (ci != NULL && ci->tls_session != NULL)
        gnutls_certificate_server_set_request(ci->tls_session, GNUTLS_CERT_REQUEST);
}

/* A PEM file, NUL-terminated (kms_file_read leaves a 0 after the bytes), at
 * most 64 KiB; NULL and a message naming the file otherwise. */
static char *read_pem(const char *path, const char *what, size_t *len)
{
    uint8_t *buf = NULL;
    if (kms_file_read(path, 64 * 1024, what, &buf, len, NULL) != KMS_OK) {
        fprintf(stderr, "mhd_floor: %s\n", kms_error_detail());
        return NULL;
    }
    return (char *)buf;
}

int main(int argc, char **argv)
{
    if (argc != 5) {
        fprintf(stderr, "usage: mhd_floor PORT CHAIN_PEM KEY_PEM BODY\n");
        return 2;
    }
    char *end = NULL;
    unsigned long port = strtoul(argv[1], &end, 10);
    if (*argv[1] == '\0' || *end != '\0' || port == 0 || port > 65535) {
        fprintf(stderr, "mhd_floor: PORT must be 1-65535, not \"%s\"\n", argv[1]);
        return 2;
    }
    size_t chain_len = 0, key_len = 0;
    char *chain = read_pem(argv[2], "the server chain", &chain_len);
    char *key = read_pem(argv[3], "the server key", &key_len);
    if (chain == NULL || key == NULL)
        return 2;
    fixed = MHD_create_response_from_buffer(strlen(argv[4]), argv[4], MHD_RESPMEM_PERSISTENT);
    if (fixed == NULL || MHD_add_response_header(fixed, "Content-Type", "application/json") != MHD_YES)
        return 1;
    struct sockaddr_in addr = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port),
                               .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    /* why block the signals first: the daemon's thread inherits the mask, so
     * SIGTERM reaches sigwait below and not a thread in the middle of a send */
    sigset_t stop;
    sigemptyset(&stop);
    sigaddset(&stop, SIGTERM);
    sigaddset(&stop, SIGINT);
    pthread_sigmask(SIG_BLOCK, &stop, NULL);
    struct MHD_Daemon *d = MHD_start_daemon(
        MHD_USE_TLS | MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_EPOLL | MHD_USE_ERROR_LOG, (uint16_t)port, NULL, NULL,
        on_request, NULL, MHD_OPTION_SOCK_ADDR, &addr, MHD_OPTION_HTTPS_MEM_CERT, chain, MHD_OPTION_HTTPS_MEM_KEY, key,
        MHD_OPTION_HTTPS_PRIORITIES, KMS_TLS_PRIORITIES, MHD_OPTION_NOTIFY_CONNECTION, on_connection, NULL,
        MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)60, MHD_OPTION_END);
    if (d == NULL) {
        fprintf(stderr, "mhd_floor: libmicrohttpd did not start on 127.0.0.1:%lu\n", port);
        return 1;
    }
    printf("ready\n");
    fflush(stdout);
    int sig = 0;
    sigwait(&stop, &sig);
    MHD_stop_daemon(d);
    MHD_destroy_response(fixed);
    free(chain);
    kms_wipe(key, key_len);
    free(key);
    return 0;
}
