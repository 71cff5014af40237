#include "hsm/vault/vault_auth.h"

#include <curl/curl.h>
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "common/buf.h"
#include "common/clock.h"
#include "common/log.h"

#define RETRY_MIN_MS 1000
#define RETRY_MAX_MS 30000
#define JWT_MARGIN_MS 60000 /* refetch the IMDS token this long before it expires */
#define IMDS_ATTEMPTS 3
#define BODY_MAX (64 * 1024)

struct kms_vault_auth {
    struct kms_vault_client *c; /* borrowed */
    enum kms_vault_auth_kind kind;
    long long renew_before_ms;
    char *role, *path, *resource_q; /* resource_q: URL-encoded */
    struct kms_vault_instance inst;
    int have_inst;
    struct kms_secret *jwt; /* cached IMDS token; under refresh_mu */
    long long jwt_expiry_ms;

    pthread_mutex_t refresh_mu; /* serialises network authentication (lock order: refresh_mu, then mu) */
    pthread_mutex_t mu;         /* everything below */
    pthread_cond_t cv;
    struct kms_secret *token;
    uint64_t generation;
    int renewable;
    int refused;               /* Vault refused the token or the login */
    long long expiry_ms;       /* monotonic; 0: never expires */
    long long due_ms;          /* next renewal; 0: none scheduled */
    long long retry_ms;
    int stop;
    unsigned long renewals, logins, lookups;
    pthread_t thread;
    int thread_started;
};

/* Prefixes the current detail (copied first: kms_fail writes the same buffer). */
static kms_rc refail(kms_rc rc, const char *prefix)
{
    char prev[512];
    snprintf(prev, sizeof(prev), "%s", kms_error_detail());
    return kms_fail(rc, "%s: %s", prefix, prev);
}

static void sleep_ms(long long ms)
{
    struct timespec ts = {(time_t)(ms / 1000), (long)(ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
        ;
}

static int token_valid(const uint8_t *t, size_t len)
{
    if (len == 0 || len > KMS_VAULT_TOKEN_MAX)
        return 0;
    for (size_t i = 0; i < len; i++)
        if (t[i] < 0x21 || t[i] > 0x7e)
            return 0;
    return 1;
}

/* Copies the token under mu into out. */
static void copy_token(struct kms_vault_auth *a, char *out)
{
    size_t n = kms_secret_len(a->token);
    memcpy(out, kms_secret_cdata(a->token), n);
    out[n] = '\0';
}

/* Sets the next renewal from the lease just obtained (mu held). */
static void schedule(struct kms_vault_auth *a, long long lease_s)
{
    long long now = (long long)kms_now_ms();
    a->retry_ms = RETRY_MIN_MS;
    if (lease_s <= 0) {
        a->expiry_ms = 0;
        a->due_ms = 0;
        return;
    }
    long long lease = lease_s * 1000;
    a->expiry_ms = now + lease;
    /* why: renew_before ahead of expiry; a lease shorter than that is renewed
     * 2/3 of the way through, as Vault's LifetimeWatcher does (§2) */
    a->due_ms = lease > a->renew_before_ms ? a->expiry_ms - a->renew_before_ms : now + lease * 2 / 3;
    pthread_cond_broadcast(&a->cv);
}

static void log_ttl(enum kms_log_level lvl, const char *event, const char *method, long long ttl, int renewable)
{
    char t[32];
    snprintf(t, sizeof(t), "%lld", ttl);
    kms_log(lvl, event, NULL, "method", method, "ttl", t, "renewable", renewable ? "true" : "false", NULL);
}

/* Vault's answer to an auth call, as a code: 403/400 are refusals. */
static kms_rc auth_status(const struct kms_vault_response *r, const char *what)
{
    if (r->status == 503 || r->status == 429)
        return kms_fail(KMS_ERR_BACKEND_UNAVAILABLE, "Vault %s: HTTP %ld: %s", what, r->status,
                        r->error[0] ? r->error : "unavailable");
    if (r->status == 403)
        return kms_fail(KMS_ERR_BACKEND, "Vault %s: HTTP 403: %s", what,
                        r->error[0] ? r->error : "permission denied");
    if (r->status < 200 || r->status > 299)
        return kms_fail(KMS_ERR_BACKEND, "Vault %s: HTTP %ld%s%s", what, r->status, r->error[0] ? ": " : "",
                        r->error);
    if (r->json == NULL)
        return kms_fail(KMS_ERR_BACKEND, "Vault %s: HTTP %ld with %s", what, r->status,
                        r->body_invalid ? r->error : "no body");
    return KMS_OK;
}

/* Sends an auth request with the current token (token != NULL) or none. */
static kms_rc vault_send(struct kms_vault_auth *a, const char *method, const char *path, const char *token,
                         const uint8_t *body, size_t len, const char *redact2, struct kms_vault_response *r)
{
    const char *redact[] = {token, redact2, NULL};
    if (token == NULL)
        redact[0] = redact2, redact[1] = NULL;
    struct kms_vault_request req = {KMS_VAULT_TARGET_VAULT, method, path, token, redact, 0, body, len};
    return kms_vault_client_send(a->c, &req, r);
}

/* GET auth/token/lookup-self with the held token. */
static kms_rc lookup_self(struct kms_vault_auth *a)
{
    char tok[KMS_VAULT_TOKEN_MAX + 1];
    struct kms_vault_response r;
    struct kms_vault_token_info info;
    pthread_mutex_lock(&a->mu);
    copy_token(a, tok);
    pthread_mutex_unlock(&a->mu);
    kms_rc rc = vault_send(a, "GET", "/v1/auth/token/lookup-self", tok, NULL, 0, NULL, &r);
    kms_wipe(tok, sizeof(tok));
    if (rc == KMS_OK)
        rc = auth_status(&r, "token lookup-self");
    if (rc == KMS_OK)
        rc = kms_vault_json_lookup_self(r.json, &info);
    kms_vault_response_clear(&r);
    pthread_mutex_lock(&a->mu);
    if (rc == KMS_OK) {
        a->renewable = info.renewable;
        a->refused = 0;
        a->lookups++;
        schedule(a, info.ttl);
    } else if (rc == KMS_ERR_BACKEND) {
        a->refused = 1;
    }
    pthread_mutex_unlock(&a->mu);
    if (rc == KMS_OK) {
        log_ttl(KMS_LOG_INFO, "vault.token_lookup", a->kind == KMS_VAULT_AUTH_TOKEN ? "token" : "azure", info.ttl,
                info.renewable);
        if (info.ttl > 0 && !info.renewable && a->kind == KMS_VAULT_AUTH_TOKEN)
            log_ttl(KMS_LOG_WARN, "vault.token_not_renewable", "token", info.ttl, 0);
    }
    return rc;
}

/* POST auth/token/renew-self; *extended tells whether the expiry moved. */
static kms_rc renew_self(struct kms_vault_auth *a, int *extended)
{
    char tok[KMS_VAULT_TOKEN_MAX + 1];
    struct kms_vault_response r;
    long long lease = 0;
    int renewable = 0;
    *extended = 0;
    pthread_mutex_lock(&a->mu);
    copy_token(a, tok);
    uint64_t gen = a->generation;
    long long old_expiry = a->expiry_ms;
    pthread_mutex_unlock(&a->mu);
    kms_rc rc = vault_send(a, "POST", "/v1/auth/token/renew-self", tok, (const uint8_t *)"{}", 2, NULL, &r);
    kms_wipe(tok, sizeof(tok));
    if (rc == KMS_OK)
        rc = auth_status(&r, "token renew-self");
    if (rc == KMS_OK)
        rc = kms_vault_json_auth(r.json, NULL, &lease, &renewable);
    kms_vault_response_clear(&r);
    if (rc != KMS_OK)
        return rc;
    pthread_mutex_lock(&a->mu);
    if (a->generation == gen) {
        a->renewable = renewable;
        a->renewals++;
        schedule(a, lease);
        /* why: a renewal capped by the max TTL no longer moves the expiry (§2) */
        *extended = lease > 0 && a->expiry_ms > old_expiry + 1000;
    }
    pthread_mutex_unlock(&a->mu);
    log_ttl(KMS_LOG_INFO, "vault.token_renewed", a->kind == KMS_VAULT_AUTH_TOKEN ? "token" : "azure", lease,
            renewable);
    return KMS_OK;
}

/* ---- Azure ------------------------------------------------------------- */

/* GET on IMDS with the documented retries for 404, 429 and 5xx (§3). */
static kms_rc imds_get(struct kms_vault_auth *a, const char *path, const char *what, struct kms_vault_response *r)
{
    struct kms_vault_request req = {KMS_VAULT_TARGET_IMDS, "GET", path, NULL, NULL, 0, NULL, 0};
    kms_rc rc = KMS_OK;
    for (int attempt = 0; attempt < IMDS_ATTEMPTS; attempt++) {
        if (attempt > 0)
            sleep_ms(1000LL << (attempt - 1));
        kms_vault_response_clear(r);
        rc = kms_vault_client_send(a->c, &req, r);
        if (rc == KMS_OK && r->status >= 200 && r->status <= 299 && r->json != NULL)
            return KMS_OK;
        if (rc == KMS_OK && r->status != 404 && r->status != 429 && r->status < 500)
            break; /* why: other answers (400 bad resource, missing header) do not change with time */
    }
    if (rc != KMS_OK) {
        char prefix[96];
        snprintf(prefix, sizeof(prefix), "Azure IMDS %s", what);
        return refail(rc, prefix);
    }
    char desc[KMS_VAULT_ERROR_MAX] = "";
    json_t *d = r->json != NULL ? json_object_get(r->json, "error_description") : NULL;
    if (json_is_string(d))
        snprintf(desc, sizeof(desc), "%.200s", json_string_value(d));
    for (char *p = desc; *p; p++)
        if ((unsigned char)*p < 0x20 || (unsigned char)*p > 0x7e)
            *p = ' ';
    if (r->status >= 200 && r->status <= 299)
        return kms_fail(KMS_ERR_BACKEND, "Azure IMDS %s: HTTP %ld: %s", what, r->status,
                        r->body_invalid ? r->error : "no body");
    kms_rc code = (r->status == 429 || r->status >= 500) ? KMS_ERR_BACKEND_UNAVAILABLE : KMS_ERR_BACKEND;
    return kms_fail(code, "Azure IMDS %s: HTTP %ld %s", what, r->status, desc);
}

static kms_rc imds_instance(struct kms_vault_auth *a)
{
    struct kms_vault_response r;
    memset(&r, 0, sizeof(r));
    kms_rc rc = imds_get(a, "/metadata/instance?api-version=2021-02-01", "instance metadata", &r);
    if (rc == KMS_OK)
        rc = kms_vault_json_imds_instance(r.json, &a->inst);
    kms_vault_response_clear(&r);
    if (rc == KMS_OK)
        a->have_inst = 1;
    return rc;
}

/* The IMDS token, cached until shortly before it expires (refresh_mu held). */
static kms_rc imds_token(struct kms_vault_auth *a)
{
    if (a->jwt != NULL && (long long)kms_now_ms() < a->jwt_expiry_ms - JWT_MARGIN_MS)
        return KMS_OK;
    kms_secret_free(&a->jwt);
    char path[1024];
    int n = snprintf(path, sizeof(path), "/metadata/identity/oauth2/token?api-version=2018-02-01&resource=%s",
                     a->resource_q);
    if (n < 0 || (size_t)n >= sizeof(path))
        return kms_fail(KMS_ERR_CONFIG, "Azure resource too long");
    struct kms_vault_response r;
    memset(&r, 0, sizeof(r));
    long long expires_in = 0;
    kms_rc rc = imds_get(a, path, "managed identity token", &r);
    if (rc == KMS_OK)
        rc = kms_vault_json_imds_token(r.json, &a->jwt, &expires_in);
    kms_vault_response_clear(&r);
    if (rc == KMS_OK)
        a->jwt_expiry_ms = (long long)kms_now_ms() + expires_in * 1000;
    return rc;
}

static kms_rc body_field(struct kms_buf *b, const char *name, const char *value, size_t len, int first)
{
    if (!first)
        KMS_GUARD(kms_buf_append_u8(b, ','));
    KMS_GUARD(kms_vault_json_append_str(b, name, strlen(name)));
    KMS_GUARD(kms_buf_append_u8(b, ':'));
    return kms_vault_json_append_str(b, value, len);
}

/* POST {path} with role, jwt and the VM's identity (§3); installs the new
 * client token (refresh_mu held). */
static kms_rc azure_login(struct kms_vault_auth *a)
{
    if (!a->have_inst)
        KMS_GUARD(imds_instance(a));
    KMS_GUARD(imds_token(a));
    struct kms_buf body;
    kms_buf_init(&body, BODY_MAX);
    const char *jwt = (const char *)kms_secret_cdata(a->jwt);
    size_t jwt_len = kms_secret_len(a->jwt);
    kms_rc rc = kms_buf_append_u8(&body, '{');
    if (rc == KMS_OK)
        rc = body_field(&body, "role", a->role, strlen(a->role), 1);
    if (rc == KMS_OK)
        rc = body_field(&body, "jwt", jwt, jwt_len, 0);
    if (rc == KMS_OK)
        rc = body_field(&body, "subscription_id", a->inst.subscription_id, strlen(a->inst.subscription_id), 0);
    if (rc == KMS_OK)
        rc = body_field(&body, "resource_group_name", a->inst.resource_group, strlen(a->inst.resource_group), 0);
    if (rc == KMS_OK)
        rc = body_field(&body, "vm_name", a->inst.vm_name, strlen(a->inst.vm_name), 0);
    if (rc == KMS_OK && a->inst.vmss_name[0] != '\0')
        rc = body_field(&body, "vmss_name", a->inst.vmss_name, strlen(a->inst.vmss_name), 0);
    if (rc == KMS_OK)
        rc = kms_buf_append_u8(&body, '}');
    if (rc != KMS_OK) {
        kms_buf_free(&body);
        return refail(rc, "Azure login body");
    }
    /* why: the JWT is hidden from error text; it is NUL-terminated in a copy */
    char *jwt_copy = calloc(1, jwt_len + 1);
    if (jwt_copy == NULL) {
        kms_buf_free(&body);
        return kms_fail(KMS_ERR_NO_MEMORY, "Azure login");
    }
    memcpy(jwt_copy, jwt, jwt_len);
    struct kms_vault_response r;
    struct kms_secret *token = NULL;
    long long lease = 0;
    int renewable = 0;
    rc = vault_send(a, "POST", a->path, NULL, body.data, body.len, jwt_copy, &r);
    kms_wipe(jwt_copy, jwt_len);
    free(jwt_copy);
    kms_buf_free(&body);
    if (rc == KMS_OK) {
        rc = auth_status(&r, "Azure login");
        if (rc == KMS_OK)
            rc = kms_vault_json_auth(r.json, &token, &lease, &renewable);
        else if (r.status >= 400 && r.status < 500)
            kms_secret_free(&a->jwt); /* why: a refused JWT is not worth reusing */
    }
    kms_vault_response_clear(&r);
    pthread_mutex_lock(&a->mu);
    if (rc == KMS_OK) {
        kms_secret_free(&a->token);
        a->token = token;
        a->generation++;
        a->renewable = renewable;
        a->refused = 0;
        a->logins++;
        schedule(a, lease);
    } else if (rc == KMS_ERR_BACKEND) {
        a->refused = 1;
    }
    pthread_mutex_unlock(&a->mu);
    if (rc == KMS_OK)
        log_ttl(KMS_LOG_INFO, "vault.login", "azure", lease, renewable);
    return rc;
}

/* ---- renewal ----------------------------------------------------------- */

/* One renewal at the due time (refresh_mu held). */
static kms_rc renew_due(struct kms_vault_auth *a)
{
    pthread_mutex_lock(&a->mu);
    int renewable = a->renewable;
    long long left = a->expiry_ms > 0 ? (a->expiry_ms - (long long)kms_now_ms()) / 1000 : 0;
    pthread_mutex_unlock(&a->mu);
    int extended = 0;
    if (a->kind == KMS_VAULT_AUTH_AZURE) {
        if (renewable && renew_self(a, &extended) == KMS_OK && extended)
            return KMS_OK;
        /* why: not renewable, max TTL reached or renewal refused: log in again (§3) */
        return azure_login(a);
    }
    if (!renewable) {
        log_ttl(KMS_LOG_WARN, "vault.token_expiring", "token", left, 0);
        pthread_mutex_lock(&a->mu);
        a->due_ms = 0; /* nothing more to try: token auth cannot log in */
        pthread_mutex_unlock(&a->mu);
        return KMS_OK;
    }
    kms_rc rc = renew_self(a, &extended);
    if (rc == KMS_OK && !extended) {
        pthread_mutex_lock(&a->mu);
        left = a->expiry_ms > 0 ? (a->expiry_ms - (long long)kms_now_ms()) / 1000 : 0;
        a->due_ms = 0;
        pthread_mutex_unlock(&a->mu);
        kms_log(KMS_LOG_WARN, "vault.token_max_ttl", NULL, "method", "token", "msg",
                "the Vault token reached its maximum TTL and cannot be renewed; give kmsd a new token", NULL);
        log_ttl(KMS_LOG_WARN, "vault.token_expiring", "token", left, 1);
    } else if (rc == KMS_ERR_BACKEND) {
        kms_log(KMS_LOG_ERROR, "vault.token_renew_refused", NULL, "method", "token", "detail", kms_error_detail(),
                NULL);
        pthread_mutex_lock(&a->mu);
        a->due_ms = 0;
        a->refused = 1;
        pthread_mutex_unlock(&a->mu);
    }
    return rc;
}

static void *renewer(void *arg)
{
    struct kms_vault_auth *a = arg;
    pthread_mutex_lock(&a->mu);
    while (!a->stop) {
        long long now = (long long)kms_now_ms();
        if (a->due_ms == 0) {
            pthread_cond_wait(&a->cv, &a->mu);
            continue;
        }
        if (now < a->due_ms) {
            long long due = a->due_ms;
            struct timespec ts = {(time_t)(due / 1000), (long)(due % 1000) * 1000000L};
            pthread_cond_timedwait(&a->cv, &a->mu, &ts);
            continue;
        }
        pthread_mutex_unlock(&a->mu);
        pthread_mutex_lock(&a->refresh_mu);
        kms_rc rc = renew_due(a);
        pthread_mutex_unlock(&a->refresh_mu);
        pthread_mutex_lock(&a->mu);
        if (rc != KMS_OK && a->due_ms != 0 && !a->stop) {
            kms_log(KMS_LOG_WARN, "vault.renew_failed", NULL, "code", kms_error_code(rc), "detail",
                    kms_error_detail(), NULL);
            /* why: retry with a growing delay, sooner when expiry is close */
            long long delay = a->retry_ms;
            long long left = a->expiry_ms - (long long)kms_now_ms();
            if (a->expiry_ms > 0 && left / 2 < delay)
                delay = left / 2;
            if (delay < RETRY_MIN_MS)
                delay = RETRY_MIN_MS;
            a->due_ms = (long long)kms_now_ms() + delay;
            a->retry_ms = a->retry_ms * 2 > RETRY_MAX_MS ? RETRY_MAX_MS : a->retry_ms * 2;
        }
    }
    pthread_mutex_unlock(&a->mu);
    return NULL;
}

/* ---- public ------------------------------------------------------------ */

void kms_vault_auth_free(struct kms_vault_auth **pa)
{
    if (pa == NULL || *pa == NULL)
        return;
    struct kms_vault_auth *a = *pa;
    if (a->thread_started) {
        pthread_mutex_lock(&a->mu);
        a->stop = 1;
        pthread_cond_broadcast(&a->cv);
        pthread_mutex_unlock(&a->mu);
        pthread_join(a->thread, NULL);
    }
    kms_secret_free(&a->token);
    kms_secret_free(&a->jwt);
    pthread_cond_destroy(&a->cv);
    pthread_mutex_destroy(&a->mu);
    pthread_mutex_destroy(&a->refresh_mu);
    free(a->role);
    free(a->path);
    if (a->resource_q != NULL)
        curl_free(a->resource_q);
    free(a);
    *pa = NULL;
}

static kms_rc init_locks(struct kms_vault_auth *a)
{
    pthread_condattr_t attr;
    if (pthread_condattr_init(&attr) != 0)
        return kms_fail(KMS_ERR_NO_MEMORY, "vault auth");
    int ok = pthread_condattr_setclock(&attr, CLOCK_MONOTONIC) == 0 && pthread_cond_init(&a->cv, &attr) == 0;
    pthread_condattr_destroy(&attr);
    if (!ok)
        return kms_fail(KMS_ERR_NO_MEMORY, "vault auth");
    if (pthread_mutex_init(&a->mu, NULL) != 0) {
        pthread_cond_destroy(&a->cv);
        return kms_fail(KMS_ERR_NO_MEMORY, "vault auth");
    }
    if (pthread_mutex_init(&a->refresh_mu, NULL) != 0) {
        pthread_mutex_destroy(&a->mu);
        pthread_cond_destroy(&a->cv);
        return kms_fail(KMS_ERR_NO_MEMORY, "vault auth");
    }
    return KMS_OK;
}

static kms_rc azure_setup(struct kms_vault_auth *a, const struct kms_vault_auth_options *o)
{
    if (o->azure_role == NULL || o->azure_role[0] == '\0')
        return kms_fail(KMS_ERR_CONFIG, "Vault Azure auth needs a role (kms.hsm.vault.auth.azure.role)");
    const char *path = o->azure_path != NULL && o->azure_path[0] != '\0' ? o->azure_path : "/v1/auth/azure/login";
    const char *res = o->azure_resource != NULL && o->azure_resource[0] != '\0' ? o->azure_resource
                                                                               : "https://vault.hashicorp.com/";
    if (path[0] != '/' || strlen(path) > 512)
        return kms_fail(KMS_ERR_CONFIG, "Vault Azure login path must start with '/'");
    for (const char *p = path; *p; p++)
        if (*p < 0x21 || *p > 0x7e || *p == '?' || *p == '#')
            return kms_fail(KMS_ERR_CONFIG, "Vault Azure login path has a character a path cannot carry");
    if (strlen(res) > 512)
        return kms_fail(KMS_ERR_CONFIG, "Azure resource longer than 512 characters");
    a->role = strdup(o->azure_role);
    a->path = strdup(path);
    a->resource_q = curl_easy_escape(NULL, res, 0);
    if (a->role == NULL || a->path == NULL || a->resource_q == NULL)
        return kms_fail(KMS_ERR_NO_MEMORY, "vault auth");
    return KMS_OK;
}

kms_rc kms_vault_auth_new(struct kms_vault_client *c, const struct kms_vault_auth_options *o,
                          struct kms_vault_auth **out)
{
    *out = NULL;
    if (o->kind != KMS_VAULT_AUTH_TOKEN && o->kind != KMS_VAULT_AUTH_AZURE)
        return kms_fail(KMS_ERR_CONFIG, "Vault auth must be token or azure");
    if (o->kind == KMS_VAULT_AUTH_TOKEN &&
        (o->token == NULL || !token_valid(kms_secret_cdata(o->token), kms_secret_len(o->token))))
        return kms_fail(KMS_ERR_CONFIG, "Vault token auth needs a token of 1..%d printable characters "
                                        "(kms.hsm.vault.token or .file)",
                        KMS_VAULT_TOKEN_MAX);
    struct kms_vault_auth *a = calloc(1, sizeof(*a));
    if (a == NULL)
        return kms_fail(KMS_ERR_NO_MEMORY, "vault auth");
    kms_rc rc = init_locks(a);
    if (rc != KMS_OK) {
        free(a);
        return rc;
    }
    a->c = c;
    a->kind = o->kind;
    a->renew_before_ms = (long long)o->renew_before * 1000;
    a->retry_ms = RETRY_MIN_MS;
    if (o->kind == KMS_VAULT_AUTH_TOKEN) {
        rc = kms_secret_from(kms_secret_cdata(o->token), kms_secret_len(o->token), &a->token);
        if (rc == KMS_OK)
            rc = lookup_self(a);
    } else {
        rc = azure_setup(a, o);
        if (rc == KMS_OK)
            rc = azure_login(a);
    }
    if (rc == KMS_OK) {
        if (pthread_create(&a->thread, NULL, renewer, a) != 0)
            rc = kms_fail(KMS_ERR_NO_MEMORY, "vault auth: cannot start the renewal thread");
        else
            a->thread_started = 1;
    }
    if (rc != KMS_OK) {
        kms_vault_auth_free(&a);
        return rc;
    }
    *out = a;
    return KMS_OK;
}

kms_rc kms_vault_auth_token(struct kms_vault_auth *a, char *out, size_t cap, uint64_t *generation)
{
    if (cap < KMS_VAULT_TOKEN_MAX + 1)
        return kms_fail(KMS_ERR_INTERNAL, "vault auth: token buffer too small");
    pthread_mutex_lock(&a->mu);
    int expired = a->expiry_ms > 0 && (long long)kms_now_ms() >= a->expiry_ms;
    uint64_t gen = a->generation;
    pthread_mutex_unlock(&a->mu);
    if (expired && a->kind == KMS_VAULT_AUTH_AZURE)
        KMS_GUARD(kms_vault_auth_refresh(a, gen)); /* why: the renewal thread could not; do not send a dead token */
    pthread_mutex_lock(&a->mu);
    copy_token(a, out);
    *generation = a->generation;
    pthread_mutex_unlock(&a->mu);
    return KMS_OK;
}

kms_rc kms_vault_auth_refresh(struct kms_vault_auth *a, uint64_t generation)
{
    pthread_mutex_lock(&a->refresh_mu);
    pthread_mutex_lock(&a->mu);
    int changed = a->generation != generation;
    pthread_mutex_unlock(&a->mu);
    kms_rc rc = KMS_OK;
    if (!changed) {
        if (a->kind == KMS_VAULT_AUTH_AZURE)
            rc = azure_login(a);
        else {
            rc = lookup_self(a);
            if (rc == KMS_ERR_BACKEND)
                rc = refail(KMS_ERR_BACKEND, "the Vault token is invalid or expired, and token auth cannot log in again");
        }
    }
    pthread_mutex_unlock(&a->refresh_mu);
    return rc;
}

void kms_vault_auth_get_state(struct kms_vault_auth *a, struct kms_vault_auth_state *out)
{
    memset(out, 0, sizeof(*out));
    pthread_mutex_lock(&a->mu);
    long long now = (long long)kms_now_ms();
    out->kind = a->kind;
    out->renewable = a->renewable;
    out->ttl = a->expiry_ms == 0 ? -1 : (a->expiry_ms > now ? (a->expiry_ms - now) / 1000 : 0);
    out->valid = !a->refused && (a->expiry_ms == 0 || a->expiry_ms > now);
    out->renewals = a->renewals;
    out->logins = a->logins;
    out->lookups = a->lookups;
    pthread_mutex_unlock(&a->mu);
}
