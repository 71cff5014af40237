/* The listener's TLS credentials: session-ticket keys (rotated, optionally
 * shared by the cluster) and the trust generation whose certificate each
 * handshake presents (hot swap on keystore reload; reference §2.3). */
#include <gnutls/abstract.h>
#include <gnutls/gnutls.h>
#include <microhttpd.h>
#include <openssl/core_names.h>
#include <openssl/kdf.h>
#include <openssl/params.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/log.h"
#include "common/secret.h"
#include "server/internal.h"
#include "server/metrics.h"

void kms_tls_tickets_free(struct kms_server *s)
{
    if (s->ticket_key.data != NULL) {
        gnutls_memset(s->ticket_key.data, 0, s->ticket_key.size);
        gnutls_free(s->ticket_key.data);
        s->ticket_key.data = NULL;
    }
    kms_secret_free(&s->ticket_secret);
    pthread_mutex_destroy(&s->ticket_lock);
}

#define TICKET_KEY_LEN 64 /* GnuTLS's session-ticket master key: name, cipher and MAC keys */

/* A session-ticket master key for rotation period `epoch`: random, or with a
 * cluster secret HKDF-SHA256(salt "kmsd tls ticket v1", secret, info epoch as
 * 8 bytes big-endian), the same on every node in the same period. */
static kms_rc make_ticket_key(const struct kms_server *s, uint64_t epoch, gnutls_datum_t *out)
{
    out->data = NULL;
    out->size = 0;
    if (s->ticket_secret == NULL)
        return gnutls_session_ticket_key_generate(out) == GNUTLS_E_SUCCESS
                   ? KMS_OK
                   : kms_fail(KMS_ERR_CRYPTO, "gnutls_session_ticket_key_generate failed");
    static const char salt[] = "kmsd tls ticket v1";
    uint8_t info[8];
    for (int i = 0; i < 8; i++)
        info[i] = (uint8_t)(epoch >> (56 - 8 * i));
    out->data = gnutls_malloc(TICKET_KEY_LEN);
    if (out->data == NULL)
        return KMS_ERR_NO_MEMORY;
    EVP_KDF *kdf = EVP_KDF_fetch(NULL, "HKDF", NULL);
    EVP_KDF_CTX *ctx = kdf ? EVP_KDF_CTX_new(kdf) : NULL;
    OSSL_PARAM params[] = {
        OSSL_PARAM_construct_utf8_string(OSSL_KDF_PARAM_DIGEST, (char *)"SHA256", 0),
        OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_KEY, (void *)kms_secret_cdata(s->ticket_secret),
                                          kms_secret_len(s->ticket_secret)),
        OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_SALT, (void *)salt, sizeof(salt) - 1),
        OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_INFO, info, sizeof(info)),
        OSSL_PARAM_construct_end(),
    };
    int ok = ctx != NULL && EVP_KDF_derive(ctx, out->data, TICKET_KEY_LEN, params) == 1;
    EVP_KDF_CTX_free(ctx);
    EVP_KDF_free(kdf);
    if (!ok) {
        gnutls_memset(out->data, 0, TICKET_KEY_LEN);
        gnutls_free(out->data);
        out->data = NULL;
        return kms_fail(KMS_ERR_CRYPTO, "HKDF of the ticket key failed");
    }
    out->size = TICKET_KEY_LEN;
    return KMS_OK;
}

static uint64_t ticket_epoch(const struct kms_server *s, time_t now)
{
    return s->d.ticket_rotation_s > 0 && now > 0 ? (uint64_t)now / s->d.ticket_rotation_s : 0;
}

/* Turns on session tickets for a new session under the current master key,
 * first replacing (and wiping) the key of a rotation period that has ended
 * (periods are counted from the Unix epoch, so nodes sharing a cluster
 * secret change keys together). GnuTLS copies the key into the session and
 * derives the ticket encryption keys from it, rotating them every ticket
 * lifetime; a new master key ends resumption of every ticket issued under the
 * old one (those clients do one full handshake). */
void kms_tls_enable_tickets(struct kms_server *s, gnutls_session_t tls)
{
    pthread_mutex_lock(&s->ticket_lock);
    uint64_t epoch = ticket_epoch(s, time(NULL));
    if (s->ticket_key.data != NULL && epoch != s->ticket_epoch) {
        gnutls_datum_t fresh;
        if (make_ticket_key(s, epoch, &fresh) == KMS_OK) {
            gnutls_memset(s->ticket_key.data, 0, s->ticket_key.size);
            gnutls_free(s->ticket_key.data);
            s->ticket_key = fresh;
            s->ticket_epoch = epoch;
            kms_metrics_ticket_rotation();
            kms_log(KMS_LOG_INFO, "tls.ticket_key_rotated", NULL, "shared",
                    s->ticket_secret != NULL ? "cluster" : "no", NULL);
        } else {
            kms_log(KMS_LOG_WARN, "tls.ticket_key_rotation_failed", NULL, NULL);
        }
    }
    if (s->ticket_key.data != NULL) {
        (void)gnutls_session_ticket_enable_server(tls, &s->ticket_key);
        if (s->d.ticket_lifetime_s > 0)
            gnutls_db_set_cache_expiration(tls, (int)s->d.ticket_lifetime_s);
    }
    pthread_mutex_unlock(&s->ticket_lock);
}

/* Takes a copy of d's cluster ticket secret (if any) and makes the first
 * ticket master key; without one, resumption is off and says so. */
void kms_tls_tickets_init(struct kms_server *s, const struct kms_server_deps *d)
{
    pthread_mutex_init(&s->ticket_lock, NULL);
    s->d.ticket_secret = NULL; /* why: borrowed from the caller; the copy below is ours */
    if (d->ticket_secret != NULL &&
        kms_secret_from(kms_secret_cdata(d->ticket_secret), kms_secret_len(d->ticket_secret), &s->ticket_secret) !=
            KMS_OK)
    {
        s->ticket_secret = NULL; /* why: out of secure heap; fall back to a per-node random key */
        kms_log(KMS_LOG_WARN, "tls.ticket_key_not_shared", NULL, NULL);
    }
    s->ticket_epoch = ticket_epoch(s, time(NULL));
    if (make_ticket_key(s, s->ticket_epoch, &s->ticket_key) != KMS_OK) {
        s->ticket_key.data = NULL; /* why: resumption off; every handshake is a full one */
        kms_log(KMS_LOG_WARN, "tls.ticket_key_unavailable", NULL, NULL);
    }
}

static struct kms_server *the_server; /* why: GnuTLS's certificate callback has no user pointer */

void kms_tls_set_server(struct kms_server *s) { the_server = s; }

struct kms_trust *kms_server_trust(struct kms_server *s)
{
    pthread_mutex_lock(&s->trust_lock);
    struct kms_trust *t = s->trust;
    kms_trust_ref(t);
    pthread_mutex_unlock(&s->trust_lock);
    return t;
}

/* Called once per full handshake (not on resumption): present the current
 * generation's certificate and keep that generation alive for as long as the
 * connection lives (reference §2.3). */
int kms_tls_on_certificate(gnutls_session_t session, const struct gnutls_cert_retr_st *info, gnutls_pcert_st **certs,
                          unsigned int *certs_length, gnutls_ocsp_data_st **ocsp, unsigned int *ocsp_length,
                          gnutls_privkey_t *privkey, unsigned int *flags)
{
    (void)info;
    /* MHD sets the session pointer to its connection (an internal detail the
     * reference documents); its socket context is our kms_conn. */
    struct MHD_Connection *c = gnutls_session_get_ptr(session);
    const union MHD_ConnectionInfo *ci = c ? MHD_get_connection_info(c, MHD_CONNECTION_INFO_SOCKET_CONTEXT) : NULL;
    struct kms_conn *conn = ci ? ci->socket_context : NULL;
    if (conn == NULL || the_server == NULL)
        return -1;
    if (conn->tls == NULL)
        conn->tls = kms_server_trust(the_server);
    *certs = conn->tls->pcerts;
    *certs_length = conn->tls->n_pcerts;
    *privkey = conn->tls->key;
    *ocsp = NULL;
    *ocsp_length = 0;
    *flags = 0; /* we keep ownership: the generation outlives the session */
    return 0;
}

void kms_server_install_trust(struct kms_server *s, struct kms_trust *t)
{
    pthread_mutex_lock(&s->trust_lock);
    struct kms_trust *old = s->trust;
    s->trust = t;
    time_t next = 0;
    (void)kms_crl_stale_count(t->crls, 0, &next);
    __atomic_store_n(&s->crl_next_update, (long long)next, __ATOMIC_RELAXED);
    __atomic_store_n(&s->generation, t->generation, __ATOMIC_RELEASE);
    pthread_mutex_unlock(&s->trust_lock);
    kms_trust_unref(&old);
}

void kms_server_note_reload(struct kms_server *s, kms_rc rc, const char *detail)
{
    pthread_mutex_lock(&s->trust_lock);
    s->reload_at = time(NULL);
    s->reload_rc = rc;
    (void)snprintf(s->reload_detail, sizeof(s->reload_detail), "%s", detail ? detail : "");
    pthread_mutex_unlock(&s->trust_lock);
}

kms_rc kms_server_reload(struct kms_server *s, struct kms_keystore *ks, STACK_OF(X509_CRL) *crls)
{
    struct kms_trust *t = NULL;
    unsigned long next = __atomic_load_n(&s->generation, __ATOMIC_ACQUIRE) + 1;
    kms_rc rc = kms_trust_new(ks, crls, s->d.server_alias, next, &t);
    if (rc != KMS_OK) {
        char why[256];
        (void)snprintf(why, sizeof(why), "%s", kms_error_detail());
        kms_server_note_reload(s, rc, why);
        return kms_fail(rc, "%s", why);
    }
    kms_server_install_trust(s, t);
    kms_server_note_reload(s, KMS_OK, "");
    return KMS_OK;
}

int kms_server_crls_stale(struct kms_server *s, time_t now, time_t *next)
{
    *next = (time_t)__atomic_load_n(&s->crl_next_update, __ATOMIC_RELAXED);
    return *next != 0 && now > *next; /* as kms_crl_stale_count counts: strictly past nextUpdate */
}

unsigned long kms_server_generation(struct kms_server *s) { return __atomic_load_n(&s->generation, __ATOMIC_ACQUIRE); }

time_t kms_server_earliest_expiry(struct kms_server *s, char *alias, size_t cap)
{
    struct kms_trust *t = kms_server_trust(s);
    time_t na = t->earliest_not_after;
    (void)snprintf(alias, cap, "%s", t->earliest_alias);
    kms_trust_unref(&t);
    return na;
}
