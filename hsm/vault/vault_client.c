#include "hsm/vault/vault_client.h"

#include <curl/curl.h>
#include <openssl/bio.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/buf.h"
#include "common/secret.h"

#define POOL_MAX 16     /* idle easy handles kept (each keeps its connections) */
#define HEADER_MAX (KMS_VAULT_TOKEN_MAX + 64)

struct kms_vault_client {
    char *base;         /* Vault base URL, no trailing '/' */
    char *imds;         /* IMDS base URL or NULL */
    char *ns_header;    /* "X-Vault-Namespace: ns" or NULL */
    uint8_t *ca_pem;
    size_t ca_pem_len;
    char *ca_file;
    long connect_timeout_ms;
    long timeout_ms;
    size_t max_response;
    pthread_mutex_t lock; /* around idle/nidle */
    CURL *idle[POOL_MAX];
    size_t nidle;
};

static pthread_once_t curl_once = PTHREAD_ONCE_INIT;
static CURLcode curl_init_rc = CURLE_FAILED_INIT;

static void curl_init(void)
{
    /* why: not thread-safe in every libcurl build; once per process, never cleaned up */
    curl_init_rc = curl_global_init(CURL_GLOBAL_DEFAULT);
}

/* "http[s]://host[:port]" with nothing else: checked with curl's own URL
 * parser so that curl and this check agree on what the URL means. */
static kms_rc check_base_url(const char *what, const char *url, char **out)
{
    *out = NULL;
    if (url == NULL || url[0] == '\0')
        return kms_fail(KMS_ERR_CONFIG, "%s address is empty", what);
    size_t len = strlen(url);
    if (len > 512)
        return kms_fail(KMS_ERR_CONFIG, "%s address longer than 512 characters", what);
    for (size_t i = 0; i < len; i++)
        if (url[i] < 0x21 || url[i] > 0x7e)
            return kms_fail(KMS_ERR_CONFIG, "%s address has a space or control character", what);
    while (len > 0 && url[len - 1] == '/')
        len--;
    char *copy = strndup(url, len);
    if (copy == NULL)
        return kms_fail(KMS_ERR_NO_MEMORY, "vault client");
    CURLU *u = curl_url();
    char *scheme = NULL, *user = NULL, *query = NULL, *path = NULL, *frag = NULL, *host = NULL;
    kms_rc rc = KMS_OK;
    if (u == NULL)
        rc = kms_fail(KMS_ERR_NO_MEMORY, "vault client");
    else if (curl_url_set(u, CURLUPART_URL, copy, 0) != CURLUE_OK)
        rc = kms_fail(KMS_ERR_CONFIG, "%s address '%s' is not a URL (expected http[s]://host[:port])", what, copy);
    else {
        (void)curl_url_get(u, CURLUPART_SCHEME, &scheme, 0);
        (void)curl_url_get(u, CURLUPART_HOST, &host, 0);
        (void)curl_url_get(u, CURLUPART_USER, &user, 0);
        (void)curl_url_get(u, CURLUPART_QUERY, &query, 0);
        (void)curl_url_get(u, CURLUPART_FRAGMENT, &frag, 0);
        (void)curl_url_get(u, CURLUPART_PATH, &path, 0);
        if (scheme == NULL || (strcmp(scheme, "http") != 0 && strcmp(scheme, "https") != 0))
            rc = kms_fail(KMS_ERR_CONFIG, "%s address '%s' must start with https:// or http://", what, copy);
        else if (host == NULL || host[0] == '\0')
            rc = kms_fail(KMS_ERR_CONFIG, "%s address '%s' has no host", what, copy);
        else if (user != NULL || query != NULL || frag != NULL || (path != NULL && strcmp(path, "/") != 0))
            rc = kms_fail(KMS_ERR_CONFIG, "%s address '%s' may only have a scheme, a host and a port", what, copy);
        else if (strncmp(copy, scheme, strlen(scheme)) != 0 || strncmp(copy + strlen(scheme), "://", 3) != 0)
            rc = kms_fail(KMS_ERR_CONFIG, "%s address '%s' must start with https:// or http://", what, copy);
    }
    curl_free(scheme);
    curl_free(host);
    curl_free(user);
    curl_free(query);
    curl_free(frag);
    curl_free(path);
    curl_url_cleanup(u);
    if (rc != KMS_OK) {
        free(copy);
        return rc;
    }
    *out = copy;
    return KMS_OK;
}

static kms_rc check_ca_pem(const uint8_t *pem, size_t len)
{
    if (len > 16 * 1024 * 1024)
        return kms_fail(KMS_ERR_CONFIG, "Vault CA certificates: more than 16 MiB of PEM");
    BIO *bio = BIO_new_mem_buf(pem, (int)len);
    if (bio == NULL)
        return kms_fail(KMS_ERR_NO_MEMORY, "vault client");
    size_t n = 0;
    X509 *x;
    while ((x = PEM_read_bio_X509(bio, NULL, NULL, NULL)) != NULL) {
        X509_free(x);
        n++;
    }
    BIO_free(bio);
    ERR_clear_error();
    return n > 0 ? KMS_OK : kms_fail(KMS_ERR_CONFIG, "Vault CA certificates: no PEM certificate found");
}

void kms_vault_client_free(struct kms_vault_client **pc)
{
    if (pc == NULL || *pc == NULL)
        return;
    struct kms_vault_client *c = *pc;
    for (size_t i = 0; i < c->nidle; i++)
        curl_easy_cleanup(c->idle[i]);
    pthread_mutex_destroy(&c->lock);
    free(c->base);
    free(c->imds);
    free(c->ns_header);
    free(c->ca_pem);
    free(c->ca_file);
    free(c);
    *pc = NULL;
}

kms_rc kms_vault_client_new(const struct kms_vault_client_options *o, struct kms_vault_client **out)
{
    *out = NULL;
    pthread_once(&curl_once, curl_init);
    if (curl_init_rc != CURLE_OK)
        return kms_fail(KMS_ERR_INTERNAL, "curl_global_init: %s", curl_easy_strerror(curl_init_rc));
    if (o->connect_timeout_ms <= 0 || o->timeout_ms <= 0 || o->max_response == 0)
        return kms_fail(KMS_ERR_CONFIG, "Vault client: timeouts and the reply cap must be positive");
    struct kms_vault_client *c = calloc(1, sizeof(*c));
    if (c == NULL)
        return kms_fail(KMS_ERR_NO_MEMORY, "vault client");
    if (pthread_mutex_init(&c->lock, NULL) != 0) {
        free(c);
        return kms_fail(KMS_ERR_NO_MEMORY, "vault client");
    }
    c->connect_timeout_ms = o->connect_timeout_ms;
    c->timeout_ms = o->timeout_ms;
    c->max_response = o->max_response;
    kms_rc rc = check_base_url("Vault", o->address, &c->base);
    if (rc == KMS_OK && o->imds_address != NULL)
        rc = check_base_url("IMDS", o->imds_address, &c->imds);
    if (rc == KMS_OK && o->ns != NULL && o->ns[0] != '\0') {
        size_t n = strlen(o->ns);
        for (size_t i = 0; i < n && rc == KMS_OK; i++)
            if (o->ns[i] < 0x21 || o->ns[i] > 0x7e)
                rc = kms_fail(KMS_ERR_CONFIG, "Vault namespace has a space or control character");
        if (rc == KMS_OK && n > 256)
            rc = kms_fail(KMS_ERR_CONFIG, "Vault namespace longer than 256 characters");
        if (rc == KMS_OK) {
            c->ns_header = malloc(n + 32);
            if (c->ns_header == NULL)
                rc = kms_fail(KMS_ERR_NO_MEMORY, "vault client");
            else
                snprintf(c->ns_header, n + 32, "X-Vault-Namespace: %s", o->ns);
        }
    }
    if (rc == KMS_OK && o->ca_pem != NULL && o->ca_pem_len > 0) {
        rc = check_ca_pem(o->ca_pem, o->ca_pem_len);
        if (rc == KMS_OK && (c->ca_pem = malloc(o->ca_pem_len)) == NULL)
            rc = kms_fail(KMS_ERR_NO_MEMORY, "vault client");
        if (rc == KMS_OK) {
            memcpy(c->ca_pem, o->ca_pem, o->ca_pem_len);
            c->ca_pem_len = o->ca_pem_len;
        }
    }
    if (rc == KMS_OK && o->ca_file != NULL && o->ca_file[0] != '\0') {
        if (access(o->ca_file, R_OK) != 0)
            rc = kms_fail(KMS_ERR_CONFIG, "Vault CA file %s cannot be read", o->ca_file);
        else if ((c->ca_file = strdup(o->ca_file)) == NULL)
            rc = kms_fail(KMS_ERR_NO_MEMORY, "vault client");
    }
    if (rc != KMS_OK) {
        kms_vault_client_free(&c);
        return rc;
    }
    *out = c;
    return KMS_OK;
}

const char *kms_vault_client_address(const struct kms_vault_client *c) { return c->base; }

void kms_vault_response_clear(struct kms_vault_response *r)
{
    if (r == NULL)
        return;
    json_decref(r->json);
    memset(r, 0, sizeof(*r));
}

static CURL *acquire(struct kms_vault_client *c)
{
    CURL *h = NULL;
    pthread_mutex_lock(&c->lock);
    if (c->nidle > 0)
        h = c->idle[--c->nidle];
    pthread_mutex_unlock(&c->lock);
    return h != NULL ? h : curl_easy_init();
}

static void release(struct kms_vault_client *c, CURL *h, int reusable)
{
    if (reusable) {
        pthread_mutex_lock(&c->lock);
        if (c->nidle < POOL_MAX) {
            c->idle[c->nidle++] = h;
            h = NULL;
        }
        pthread_mutex_unlock(&c->lock);
    }
    if (h != NULL)
        curl_easy_cleanup(h);
}

struct sink {
    struct kms_buf *buf;
    int overflow;
};

static size_t on_body(char *data, size_t size, size_t n, void *ud)
{
    struct sink *s = ud;
    (void)size; /* always 1 */
    if (kms_buf_append(s->buf, data, n) != KMS_OK) {
        s->overflow = 1;
        return 0; /* why: refuse the rest; curl fails with CURLE_WRITE_ERROR */
    }
    return n;
}

static void wipe_headers(struct curl_slist *l)
{
    for (struct curl_slist *s = l; s != NULL; s = s->next)
        kms_wipe(s->data, strlen(s->data));
    curl_slist_free_all(l);
}

static kms_rc add_header(struct curl_slist **l, const char *line)
{
    struct curl_slist *n = curl_slist_append(*l, line);
    if (n == NULL)
        return kms_fail(KMS_ERR_NO_MEMORY, "vault client: header");
    *l = n;
    return KMS_OK;
}

static kms_rc build_headers(const struct kms_vault_client *c, const struct kms_vault_request *req,
                            struct curl_slist **out)
{
    char line[HEADER_MAX];
    kms_rc rc = KMS_OK;
    *out = NULL;
    if (req->target == KMS_VAULT_TARGET_IMDS) {
        rc = add_header(out, "Metadata: true");
    } else {
        if (req->token != NULL) {
            size_t n = strlen(req->token);
            if (n == 0 || n > KMS_VAULT_TOKEN_MAX)
                return kms_fail(KMS_ERR_INTERNAL, "vault client: token of %zu bytes", n);
            memcpy(line, "X-Vault-Token: ", 15);
            memcpy(line + 15, req->token, n + 1);
            rc = add_header(out, line);
            kms_wipe(line, sizeof(line));
        }
        if (rc == KMS_OK && c->ns_header != NULL && !(req->flags & KMS_VAULT_NO_NAMESPACE))
            rc = add_header(out, c->ns_header);
        if (rc == KMS_OK)
            rc = add_header(out, "X-Vault-Request: true");
    }
    if (rc == KMS_OK)
        rc = add_header(out, "Accept: application/json");
    if (rc == KMS_OK && req->body_len > 0)
        rc = add_header(out, "Content-Type: application/json");
    if (rc == KMS_OK)
        rc = add_header(out, "Expect:"); /* why: no 100-continue round trip */
    if (rc != KMS_OK) {
        wipe_headers(*out);
        *out = NULL;
    }
    return rc;
}

static kms_rc map_curl(CURLcode cc, int overflow, size_t max, const char *method, const char *path,
                       const char *errbuf)
{
    const char *why = errbuf[0] != '\0' ? errbuf : curl_easy_strerror(cc);
    switch (cc) {
    case CURLE_WRITE_ERROR:
        if (overflow)
            return kms_fail(KMS_ERR_BACKEND, "%s %s: reply larger than %zu bytes, refused", method, path, max);
        return kms_fail(KMS_ERR_BACKEND, "%s %s: %s", method, path, why);
    case CURLE_OPERATION_TIMEDOUT:
        return kms_fail(KMS_ERR_BACKEND_TIMEOUT, "%s %s: timed out: %s", method, path, why);
    case CURLE_COULDNT_RESOLVE_HOST:
    case CURLE_COULDNT_RESOLVE_PROXY:
    case CURLE_COULDNT_CONNECT:
    case CURLE_SEND_ERROR:
    case CURLE_RECV_ERROR:
    case CURLE_GOT_NOTHING:
    case CURLE_SSL_CONNECT_ERROR:
    case CURLE_PEER_FAILED_VERIFICATION:
    case CURLE_SSL_CACERT_BADFILE:
    case CURLE_SSL_CERTPROBLEM:
    case CURLE_SSL_ISSUER_ERROR:
        return kms_fail(KMS_ERR_BACKEND_UNAVAILABLE, "%s %s: unreachable: %s", method, path, why);
    default:
        return kms_fail(KMS_ERR_BACKEND, "%s %s: %s", method, path, why);
    }
}

/* Hides any of the redact strings that a server echoed in its error text. */
static void redact_error(char *err, const char *const *redact)
{
    for (size_t i = 0; redact != NULL && redact[i] != NULL; i++) {
        if (redact[i][0] != '\0' && strstr(err, redact[i]) != NULL) {
            snprintf(err, KMS_VAULT_ERROR_MAX, "<error text withheld: it contained a credential>");
            return;
        }
    }
}

#define SET(opt, val)                                              \
    do {                                                           \
        if (rc == KMS_OK && curl_easy_setopt(h, opt, val) != CURLE_OK) \
            rc = kms_fail(KMS_ERR_INTERNAL, "curl_easy_setopt(%s) failed", #opt); \
    } while (0)

kms_rc kms_vault_client_send(struct kms_vault_client *c, const struct kms_vault_request *req,
                             struct kms_vault_response *resp)
{
    memset(resp, 0, sizeof(*resp));
    int imds = req->target == KMS_VAULT_TARGET_IMDS;
    const char *base = imds ? c->imds : c->base;
    if (base == NULL)
        return kms_fail(KMS_ERR_INTERNAL, "vault client: no IMDS address configured");
    if (imds && req->token != NULL)
        return kms_fail(KMS_ERR_INTERNAL, "vault client: a Vault token must not be sent to IMDS");
    char url[KMS_VAULT_URL_MAX];
    int n = snprintf(url, sizeof(url), "%s%s", base, req->path);
    if (n < 0 || (size_t)n >= sizeof(url))
        return kms_fail(KMS_ERR_INTERNAL, "vault client: URL longer than %d bytes", KMS_VAULT_URL_MAX);
    int post = strcmp(req->method, "POST") == 0;
    if (!post && strcmp(req->method, "GET") != 0)
        return kms_fail(KMS_ERR_INTERNAL, "vault client: method %s", req->method);

    struct curl_slist *headers = NULL;
    KMS_GUARD(build_headers(c, req, &headers));
    CURL *h = acquire(c);
    if (h == NULL) {
        wipe_headers(headers);
        return kms_fail(KMS_ERR_NO_MEMORY, "curl_easy_init");
    }
    curl_easy_reset(h); /* why: clears options, keeps the connection cache */

    struct kms_buf body;
    kms_buf_init(&body, c->max_response);
    struct sink sink = {&body, 0};
    char errbuf[CURL_ERROR_SIZE];
    errbuf[0] = '\0';
    kms_rc rc = KMS_OK;
    SET(CURLOPT_URL, url);
    SET(CURLOPT_PROTOCOLS_STR, "http,https");
    SET(CURLOPT_FOLLOWLOCATION, 0L);
    SET(CURLOPT_NOSIGNAL, 1L);
    SET(CURLOPT_CONNECTTIMEOUT_MS, c->connect_timeout_ms);
    SET(CURLOPT_TIMEOUT_MS, c->timeout_ms);
    SET(CURLOPT_TCP_KEEPALIVE, 1L);
    SET(CURLOPT_ERRORBUFFER, errbuf);
    SET(CURLOPT_WRITEFUNCTION, on_body);
    SET(CURLOPT_WRITEDATA, &sink);
    SET(CURLOPT_HTTPHEADER, headers);
    SET(CURLOPT_USERAGENT, "kmsd");
    SET(CURLOPT_MAXFILESIZE_LARGE, (curl_off_t)c->max_response);
    if (imds) {
        SET(CURLOPT_NOPROXY, "*"); /* §3: IMDS must not be reached through a proxy */
    } else {
        SET(CURLOPT_SSL_VERIFYPEER, 1L);
        SET(CURLOPT_SSL_VERIFYHOST, 2L);
        SET(CURLOPT_SSLVERSION, (long)CURL_SSLVERSION_TLSv1_2);
        if (c->ca_pem != NULL) {
            struct curl_blob blob = {c->ca_pem, c->ca_pem_len, CURL_BLOB_NOCOPY};
            SET(CURLOPT_CAINFO_BLOB, &blob);
            SET(CURLOPT_CAPATH, (char *)NULL); /* why: only the given CAs, not the system directory */
        } else if (c->ca_file != NULL) {
            SET(CURLOPT_CAINFO, c->ca_file);
            SET(CURLOPT_CAPATH, (char *)NULL);
        }
    }
    if (post) {
        SET(CURLOPT_POST, 1L);
        SET(CURLOPT_POSTFIELDS, req->body_len > 0 ? (const char *)req->body : "");
        SET(CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)req->body_len);
    } else {
        SET(CURLOPT_HTTPGET, 1L);
    }

    int reusable = 0;
    if (rc == KMS_OK) {
        CURLcode cc = curl_easy_perform(h);
        if (cc == CURLE_FILESIZE_EXCEEDED) {
            sink.overflow = 1;
            cc = CURLE_WRITE_ERROR;
        }
        if (cc != CURLE_OK) {
            rc = map_curl(cc, sink.overflow, c->max_response, req->method, req->path, errbuf);
        } else {
            curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &resp->status);
            /* why: after an error reply the connection's state is not trusted (a
             * proxy's error page, a server that answered before reading our body):
             * the next request gets a new connection */
            reusable = resp->status >= 200 && resp->status <= 299 && (body.len > 0 || resp->status == 204);
        }
    }
    if (rc == KMS_OK && (resp->status < 100 || resp->status > 599))
        rc = kms_fail(KMS_ERR_BACKEND, "%s %s: no valid HTTP status", req->method, req->path);
    if (rc == KMS_OK && body.len > 0) {
        if (kms_vault_json_load(body.data, body.len, &resp->json) != KMS_OK) {
            resp->body_invalid = 1;
            reusable = 0;
            snprintf(resp->error, sizeof(resp->error), "%s", kms_error_detail());
        } else if (resp->status >= 400) {
            kms_vault_json_first_error(resp->json, resp->error, sizeof(resp->error));
            redact_error(resp->error, req->redact);
        }
    }
    /* why: the handle holds pointers to our stack (error buffer, sink, headers) */
    curl_easy_setopt(h, CURLOPT_ERRORBUFFER, NULL);
    curl_easy_setopt(h, CURLOPT_HTTPHEADER, NULL);
    curl_easy_setopt(h, CURLOPT_WRITEDATA, NULL);
    release(c, h, reusable);
    wipe_headers(headers);
    kms_buf_free(&body); /* why: wiped; decrypt replies carry key material */
    if (rc != KMS_OK)
        kms_vault_response_clear(resp);
    return rc;
}
