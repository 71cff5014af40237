#define _GNU_SOURCE /* strcasestr */
/* Integration: the real kmsd (started by harness.sh) driven with curl and the
 * dev PKI's .p12 files, as a user would (issue: foundation). */
#include <criterion/criterion.h>
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/wait.h>
#include <unistd.h>

extern char **environ;

static char port[16], admin_port[16], pki[512], password[128], itdir[512], backend[32] = "soft";

static void load_env(void)
{
    const char *path = getenv("KMS_IT_ENV");
    cr_assert(path != NULL, "KMS_IT_ENV not set (run through ctest)");
    FILE *f = fopen(path, "r");
    cr_assert(f != NULL, "cannot open %s: the harness did not start kmsd", path);
    char line[1024];
    while (fgets(line, sizeof(line), f)) {
        line[strcspn(line, "\n")] = '\0';
        char *eq = strchr(line, '=');
        if (!eq)
            continue;
        *eq = '\0';
        const char *v = eq + 1;
        if (strcmp(line, "KMS_IT_PORT") == 0)
            snprintf(port, sizeof(port), "%s", v);
        else if (strcmp(line, "KMS_IT_ADMIN_PORT") == 0)
            snprintf(admin_port, sizeof(admin_port), "%s", v);
        else if (strcmp(line, "KMS_IT_PKI") == 0)
            snprintf(pki, sizeof(pki), "%s", v);
        else if (strcmp(line, "KMS_IT_PASSWORD") == 0)
            snprintf(password, sizeof(password), "%s", v);
        else if (strcmp(line, "KMS_IT_DIR") == 0)
            snprintf(itdir, sizeof(itdir), "%s", v);
        else if (strcmp(line, "KMS_IT_BACKEND") == 0)
            snprintf(backend, sizeof(backend), "%s", v);
    }
    fclose(f);
    cr_assert(port[0] && pki[0] && password[0]);
}

struct resp {
    int status;
    char request_id[64];
    char content_type[128];
    char *raw;
    const char *body;
    json_t *json;
};

static void resp_free(struct resp *r)
{
    free(r->raw);
    json_decref(r->json);
    memset(r, 0, sizeof(*r));
}

/* One more request header for http_file, or NULL. */
static const char *extra_header;

/* Runs curl and parses its -i output. cert: NULL (no client certificate) or
 * the base name of a .p12 in the PKI folder. body_file: path or NULL. */
static void http_file(const char *cert, const char *method, const char *path, const char *body_file,
                      const char *ctype, struct resp *out)
{
    memset(out, 0, sizeof(*out));
    static char url[16384];
    char cacert[600], certarg[800], data[600], cth[160];
    snprintf(url, sizeof(url), "https://127.0.0.1:%s%s", port, path);
    snprintf(cacert, sizeof(cacert), "%s/rootCA.crt", pki);
    const char *argv[32];
    int n = 0;
    argv[n++] = "curl";
    argv[n++] = "-sS";
    argv[n++] = "-i";
    argv[n++] = "--max-time";
    argv[n++] = "20";
    argv[n++] = "--cacert";
    argv[n++] = cacert;
    argv[n++] = "-X";
    argv[n++] = method;
    if (cert) {
        snprintf(certarg, sizeof(certarg), "%s/%s.p12:%s", pki, cert, password);
        argv[n++] = "--cert";
        argv[n++] = certarg;
        argv[n++] = "--cert-type";
        argv[n++] = "P12";
    }
    if (body_file) {
        snprintf(data, sizeof(data), "@%s", body_file);
        argv[n++] = "--data-binary";
        argv[n++] = data;
        snprintf(cth, sizeof(cth), "Content-Type: %s", ctype ? ctype : "application/json");
        argv[n++] = "-H";
        argv[n++] = cth;
    }
    if (extra_header != NULL) {
        argv[n++] = "-H";
        argv[n++] = extra_header;
    }
    argv[n++] = url;
    argv[n] = NULL;

    int pfd[2];
    cr_assert(pipe(pfd) == 0);
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_adddup2(&fa, pfd[1], 1);
    posix_spawn_file_actions_addclose(&fa, pfd[0]);
    pid_t pid;
    cr_assert(posix_spawnp(&pid, "curl", &fa, NULL, (char *const *)argv, environ) == 0);
    posix_spawn_file_actions_destroy(&fa);
    close(pfd[1]);
    size_t cap = 65536, len = 0;
    char *buf = malloc(cap);
    for (;;) {
        if (len + 4096 > cap) {
            cap *= 2;
            buf = realloc(buf, cap);
        }
        ssize_t got = read(pfd[0], buf + len, cap - len - 1);
        if (got <= 0)
            break;
        len += (size_t)got;
    }
    buf[len] = '\0';
    close(pfd[0]);
    int st;
    waitpid(pid, &st, 0);
    out->raw = buf;
    /* skip interim 1xx responses, then parse the final status line and headers */
    char *p = buf;
    for (;;) {
        if (strncmp(p, "HTTP/", 5) != 0) {
            out->status = 0; /* connection refused / TLS failure */
            out->body = p;
            return;
        }
        out->status = atoi(strchr(p, ' ') ? strchr(p, ' ') + 1 : "0");
        char *end = strstr(p, "\r\n\r\n");
        if (!end) {
            out->body = "";
            return;
        }
        if (out->status >= 200 || out->status == 0) {
            *end = '\0';
            out->body = end + 4;
            break;
        }
        p = end + 4;
    }
    for (char *h = strtok(p, "\r\n"); h; h = strtok(NULL, "\r\n")) {
        if (strncasecmp(h, "X-Request-Id: ", 14) == 0)
            snprintf(out->request_id, sizeof(out->request_id), "%s", h + 14);
        else if (strncasecmp(h, "Content-Type: ", 14) == 0)
            snprintf(out->content_type, sizeof(out->content_type), "%s", h + 14);
    }
    out->json = json_loads(out->body, 0, NULL);
}

static void http(const char *cert, const char *method, const char *path, const char *body, struct resp *out)
{
    char tmp[] = "/tmp/kms-it-body-XXXXXX";
    const char *file = NULL;
    if (body) {
        int fd = mkstemp(tmp);
        cr_assert(fd >= 0);
        cr_assert(write(fd, body, strlen(body)) == (ssize_t)strlen(body));
        close(fd);
        file = tmp;
    }
    http_file(cert, method, path, file, NULL, out);
    if (file)
        unlink(file);
    /* SPEC §4: every response carries X-Request-Id */
    if (out->status != 0)
        cr_assert(out->request_id[0] != '\0', "no X-Request-Id on %s %s (status %d)", method, path, out->status);
}

static const char *jstr(const struct resp *r, const char *key)
{
    json_t *v = r->json ? json_object_get(r->json, key) : NULL;
    return v && json_is_string(v) ? json_string_value(v) : NULL;
}

static const char *err_code(const struct resp *r)
{
    json_t *e = r->json ? json_object_get(r->json, "error") : NULL;
    json_t *c = e ? json_object_get(e, "code") : NULL;
    return c ? json_string_value(c) : "(no error body)";
}

static void expect_error(const struct resp *r, int status, const char *code)
{
    cr_assert_eq(r->status, status, "expected %d, got %d: %s", status, r->status, r->body);
    cr_assert_str_eq(err_code(r), code, "body: %s", r->body);
    json_t *e = json_object_get(r->json, "error");
    cr_assert(json_is_string(json_object_get(e, "message")));
    cr_assert_str_eq(json_string_value(json_object_get(e, "request_id")), r->request_id);
}

/* An invalid_field answer names the field and says what it must be. */
static void expect_field(const struct resp *r, const char *field, const char *message)
{
    expect_error(r, 400, "invalid_field");
    json_t *e = json_object_get(r->json, "error");
    cr_assert_str_eq(json_string_value(json_object_get(e, "field")), field, "body: %s", r->body);
    cr_assert_str_eq(json_string_value(json_object_get(e, "message")), message, "body: %s", r->body);
}

/* A fresh customer/user/workspace chain for site. Returned strings are malloc'd. */
struct chain {
    char *customer, *user, *workspace;
};

static void make_chain(const char *site, struct chain *c)
{
    struct resp r;
    char body[16384];
    snprintf(body, sizeof(body), "{\"site_id\":\"%s\"}", site);
    http("cmxBackend", "POST", "/v1/customer-keys", body, &r);
    cr_assert_eq(r.status, 201, "customer: %d %s", r.status, r.body);
    cr_assert(jstr(&r, "customer_key") && strncmp(jstr(&r, "customer_key"), "kms:v1:", 7) == 0, "%s", r.body);
    c->customer = strdup(jstr(&r, "customer_key"));
    resp_free(&r);

    snprintf(body, sizeof(body), "{\"site_id\":\"%s\",\"customer_key\":\"%s\"}", site, c->customer);
    http("cmxBackend", "POST", "/v1/user-keys", body, &r);
    cr_assert_eq(r.status, 201, "user: %d %s", r.status, r.body);
    c->user = strdup(jstr(&r, "user_key"));
    resp_free(&r);

    snprintf(body, sizeof(body), "{\"site_id\":\"%s\",\"customer_key\":\"%s\",\"user_key\":\"%s\"}", site,
             c->customer, c->user);
    http("cmxBackend", "POST", "/v1/workspace-keys", body, &r);
    cr_assert_eq(r.status, 201, "workspace: %d %s", r.status, r.body);
    c->workspace = strdup(jstr(&r, "workspace_key"));
    resp_free(&r);
}

static void chain_free(struct chain *c)
{
    free(c->customer);
    free(c->user);
    free(c->workspace);
}

static void unwrap_ws(const char *cert, const char *site, const char *cust, const char *user, const char *ws,
                      struct resp *r)
{
    char body[32768];
    snprintf(body, sizeof(body),
             "{\"site_id\":\"%s\",\"customer_key\":\"%s\",\"user_key\":\"%s\",\"workspace_key\":\"%s\"}", site,
             cust, user, ws);
    http(cert, "POST", "/v1/workspace-keys/unwrap", body, r);
}

static void still_serving(void)
{
    struct resp r;
    http("cmxBackend", "GET", "/v1/whoami", NULL, &r);
    cr_assert_eq(r.status, 200, "server stopped serving: %d %s", r.status, r.body);
    resp_free(&r);
}

/* why: no .timeout: Criterion 2.4.1 leaks in its runner with timeouts under ASan; ctest bounds the binary */
TestSuite(api, .init = load_env);

Test(api, health_without_certificate)
{
    struct resp r;
    http(NULL, "GET", "/health/live", NULL, &r);
    cr_assert_eq(r.status, 200, "%s", r.body);
    cr_assert_str_eq(jstr(&r, "status"), "live");
    resp_free(&r);
    http(NULL, "GET", "/health/ready", NULL, &r);
    cr_assert_eq(r.status, 200, "%s", r.body);
    cr_assert_str_eq(jstr(&r, "status"), "ready");
    resp_free(&r);
}

/* A stranger learns whether the node is ready and which part is degraded,
 * nothing more: no keystore path, alias, node name or date (issue 15). Nor
 * does a client certificate without the admin role. */
static void assert_ready_summary(const struct resp *r)
{
    cr_assert_eq(r->status, 200, "%s", r->body);
    cr_assert_str_eq(jstr(r, "status"), "ready");
    json_t *deg = json_object_get(r->json, "degraded");
    cr_assert(json_is_array(deg) && json_array_size(deg) == 0, "%s", r->body);
    cr_assert_eq(json_object_size(r->json), 2, "only status and degraded: %s", r->body);
    cr_assert(strstr(r->body, itdir) == NULL && strcasestr(r->body, "cmx") == NULL &&
                  strstr(r->body, "20") == NULL,
              "a path, an alias or a date: %s", r->body);
}

Test(api, readiness_shows_strangers_only_the_status)
{
    struct resp r;
    http(NULL, "GET", "/health/ready", NULL, &r);
    assert_ready_summary(&r);
    resp_free(&r);
    http("cmxDevice", "GET", "/health/ready", NULL, &r);
    assert_ready_summary(&r);
    resp_free(&r);
}

/* The admin listener (plain HTTP on loopback) shows every detail. */
Test(api, admin_listener_shows_readiness_details)
{
    cr_assert(admin_port[0] != '\0');
    char cmd[256];
    snprintf(cmd, sizeof(cmd), "curl -sS --max-time 10 http://127.0.0.1:%s/health/ready", admin_port);
    FILE *p = popen(cmd, "r");
    cr_assert(p != NULL);
    char body[8192];
    size_t n = fread(body, 1, sizeof(body) - 1, p);
    body[n] = '\0';
    cr_assert_eq(pclose(p), 0, "%s", body);
    json_error_t e;
    json_t *j = json_loads(body, 0, &e);
    cr_assert(j != NULL, "not JSON: %s", body);
    cr_assert_str_eq(json_string_value(json_object_get(j, "status")), "ready");
    json_t *ks = json_object_get(j, "keystore");
    const char *file = json_string_value(json_object_get(ks, "file"));
    cr_assert(file != NULL && strstr(file, itdir) == file, "%s", body);
    cr_assert(json_integer_value(json_object_get(ks, "entries")) > 0, "%s", body);
    cr_assert(json_string_value(json_object_get(j, "node")) != NULL, "%s", body);
    cr_assert_str_eq(json_string_value(json_object_get(json_object_get(j, "backend"), "status")), "ok");
    json_decref(j);
}

/* kmsd sends a reply's header and body in one TCP write (http.c, push_vec);
 * replies without a body (HEAD) must still arrive at once, and the next reply
 * on the same keep-alive connection must follow them intact. */
/* openssl s_client against kmsd without a client certificate: 0 when the
 * handshake completes. */
static int handshake(const char *args)
{
    char cmd[1024];
    snprintf(cmd, sizeof(cmd),
             "openssl s_client -connect 127.0.0.1:%s -CAfile %s/rootCA.crt %s </dev/null >/dev/null 2>&1", port, pki,
             args);
    return system(cmd);
}

Test(api, only_tls_1_2_and_later_with_forward_secret_aead_suites)
{
    cr_assert_eq(handshake("-tls1_3"), 0, "TLS 1.3");
    cr_assert_eq(handshake("-tls1_2 -cipher ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-RSA-AES256-GCM-SHA384"), 0,
                 "TLS 1.2 with an AES-GCM suite");
    cr_assert_eq(handshake("-tls1_2 -cipher ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305"), 0,
                 "TLS 1.2 with ChaCha20-Poly1305");
    /* @SECLEVEL=0: this client would not even offer these otherwise, and the
     * refusal must be the server's */
    cr_assert_neq(handshake("-tls1_2 -cipher 'ECDHE-ECDSA-AES128-SHA256:ECDHE-RSA-AES128-SHA256:"
                            "ECDHE-ECDSA-AES128-SHA:ECDHE-RSA-AES128-SHA:@SECLEVEL=0'"),
                  0, "a CBC suite is refused");
    cr_assert_neq(handshake("-tls1_2 -cipher 'AES128-GCM-SHA256:AES256-GCM-SHA384:@SECLEVEL=0'"), 0,
                  "static RSA key exchange (no forward secrecy) is refused");
    cr_assert_neq(handshake("-tls1_1 -cipher 'DEFAULT:@SECLEVEL=0'"), 0, "TLS 1.1 is refused");
    cr_assert_neq(handshake("-tls1 -cipher 'DEFAULT:@SECLEVEL=0'"), 0, "TLS 1.0 is refused");
}

Test(api, head_then_get_on_one_connection)
{
    char cmd[2048], out[600];
    snprintf(out, sizeof(out), "%s/head-get.out", itdir);
    snprintf(cmd, sizeof(cmd),
             "curl -sS --max-time 5 --cacert %s/rootCA.crt -I https://127.0.0.1:%s/health/live "
             "--next -sS --max-time 5 --cacert %s/rootCA.crt -i https://127.0.0.1:%s/health/live > %s 2>&1",
             pki, port, pki, port, out);
    cr_assert_eq(system(cmd), 0, "HEAD then GET on one connection failed or timed out");
    snprintf(cmd, sizeof(cmd), "test \"$(grep -c '^HTTP/1.1 ' %s)\" = 2 && grep -q '\"status\"' %s", out, out);
    cr_assert_eq(system(cmd), 0, "want two status lines and the GET's JSON body");
    unlink(out);
}

Test(api, no_certificate_is_401_on_v1)
{
    struct resp r;
    http(NULL, "GET", "/v1/whoami", NULL, &r);
    expect_error(&r, 401, "unauthenticated");
    resp_free(&r);
    http(NULL, "POST", "/v1/customer-keys", "{\"site_id\":\"s1\"}", &r);
    expect_error(&r, 401, "unauthenticated");
    resp_free(&r);
}

Test(api, whoami_backend_and_device)
{
    struct resp r;
    http("cmxBackend", "GET", "/v1/whoami", NULL, &r);
    cr_assert_eq(r.status, 200, "%s", r.body);
    cr_assert(strcasecmp(jstr(&r, "alias"), "cmxbackend") == 0, "%s", r.body);
    cr_assert_str_eq(jstr(&r, "role"), "backend");
    cr_assert_eq(strlen(jstr(&r, "fingerprint_sha256")), 64);
    cr_assert(strstr(jstr(&r, "subject"), "cmxBackend") != NULL);
    cr_assert(jstr(&r, "not_after")[0] != '\0');
    resp_free(&r);
    http("cmxDevice", "GET", "/v1/whoami", NULL, &r);
    cr_assert_eq(r.status, 200, "%s", r.body);
    cr_assert_str_eq(jstr(&r, "role"), "device");
    resp_free(&r);
}

Test(api, full_hierarchy_backend_creates_device_unwraps)
{
    struct chain c;
    make_chain("site-hier", &c);
    struct resp d, b;
    unwrap_ws("cmxDevice", "site-hier", c.customer, c.user, c.workspace, &d);
    cr_assert_eq(d.status, 200, "%s", d.body);
    const char *key = jstr(&d, "plaintext");
    cr_assert(key != NULL && strlen(key) == 44, "32-byte key in base64: %s", d.body);
    unwrap_ws("cmxBackend", "site-hier", c.customer, c.user, c.workspace, &b);
    cr_assert_eq(b.status, 200, "%s", b.body);
    cr_assert_str_eq(jstr(&b, "plaintext"), key, "device and backend see the same key");

    /* a second workspace under the same user is a different key */
    struct resp w2, u2;
    char body[16384];
    snprintf(body, sizeof(body), "{\"site_id\":\"site-hier\",\"customer_key\":\"%s\",\"user_key\":\"%s\"}",
             c.customer, c.user);
    http("cmxBackend", "POST", "/v1/workspace-keys", body, &w2);
    cr_assert_eq(w2.status, 201);
    unwrap_ws("cmxDevice", "site-hier", c.customer, c.user, jstr(&w2, "workspace_key"), &u2);
    cr_assert_eq(u2.status, 200);
    cr_assert_str_neq(jstr(&u2, "plaintext"), key);

    /* key material never reaches the logs or the audit trail */
    char path[600], cmd[1400];
    snprintf(path, sizeof(path), "%s/audit.log", itdir);
    /* why: the audit writer thread writes lines out within kms.audit.flush.ms */
    snprintf(cmd, sizeof(cmd),
             "for i in $(seq 1 30); do grep -q '\"op\":\"workspace-key.unwrap\".*\"site_id\":\"site-hier\"' %s "
             "&& exit 0; sleep 0.1; done; exit 1",
             path);
    cr_assert_eq(system(cmd), 0, "no audit line for the unwrap within 3 s");
    snprintf(cmd, sizeof(cmd), "grep -F -q -- '%s' %s/audit.log %s/kmsd.log", key, itdir, itdir);
    cr_assert_neq(system(cmd), 0, "the plaintext workspace key appears in a log");
    resp_free(&d);
    resp_free(&b);
    resp_free(&w2);
    resp_free(&u2);
    chain_free(&c);
}

Test(api, device_may_not_create)
{
    struct chain c;
    make_chain("site-dev", &c);
    struct resp r;
    http("cmxDevice", "POST", "/v1/customer-keys", "{\"site_id\":\"site-dev\"}", &r);
    expect_error(&r, 403, "forbidden");
    resp_free(&r);
    char body[16384];
    snprintf(body, sizeof(body), "{\"site_id\":\"site-dev\",\"customer_key\":\"%s\",\"user_key\":\"%s\"}",
             c.customer, c.user);
    http("cmxDevice", "POST", "/v1/workspace-keys", body, &r);
    expect_error(&r, 403, "forbidden");
    resp_free(&r);
    chain_free(&c);
}

Test(api, ca_signed_certificate_not_in_keystore_is_401)
{
    struct resp r;
    http("stranger", "GET", "/v1/whoami", NULL, &r);
    expect_error(&r, 401, "unauthenticated");
    resp_free(&r);
}

Test(api, self_signed_with_device_subject_is_401)
{
    struct resp r;
    http("rogue", "POST", "/v1/workspace-keys/unwrap", "{}", &r);
    expect_error(&r, 401, "unauthenticated");
    resp_free(&r);
}

Test(api, expired_certificate_in_keystore_is_401)
{
    struct resp r;
    http("expiredDevice", "GET", "/v1/whoami", NULL, &r);
    expect_error(&r, 401, "unauthenticated");
    resp_free(&r);
    char cmd[700];
    snprintf(cmd, sizeof(cmd), "grep -q '\"event\":\"auth.refused\".*\"reason\":\"expired\"' %s/kmsd.log", itdir);
    cr_assert_eq(system(cmd), 0, "the refusal reason 'expired' is not in kmsd's log");
}

Test(api, rotated_device_certificate_works_beside_the_first)
{
    struct resp r;
    http("cmxDevice20261122", "GET", "/v1/whoami", NULL, &r);
    cr_assert_eq(r.status, 200, "%s", r.body);
    cr_assert(strcasecmp(jstr(&r, "alias"), "cmxdevice20261122") == 0, "%s", r.body);
    cr_assert_str_eq(jstr(&r, "role"), "device");
    resp_free(&r);
    struct chain c;
    make_chain("site-rot", &c);
    unwrap_ws("cmxDevice20261122", "site-rot", c.customer, c.user, c.workspace, &r);
    cr_assert_eq(r.status, 200, "%s", r.body);
    resp_free(&r);
    chain_free(&c);
}

static void flip_bit(char *wrapped, size_t pos)
{
    /* flip one bit of the base64 payload, keeping it valid base64 */
    const char *alpha = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    char *at = wrapped + pos;
    const char *idx = strchr(alpha, *at);
    cr_assert(idx != NULL);
    *at = alpha[(idx - alpha) ^ 1];
}

Test(api, tampered_replayed_or_cross_site_keys_fail_with_one_error)
{
    struct chain c;
    make_chain("site-tamper", &c);
    struct resp r, ok;
    unwrap_ws("cmxDevice", "site-tamper", c.customer, c.user, c.workspace, &ok);
    cr_assert_eq(ok.status, 200);

    /* one bit flipped at several places in each of the three keys */
    char *keys[3] = {c.customer, c.user, c.workspace};
    for (int k = 0; k < 3; k++) {
        size_t len = strlen(keys[k]);
        size_t positions[] = {8, 20, len / 2, len - 3};
        for (size_t i = 0; i < sizeof(positions) / sizeof(positions[0]); i++) {
            char *copy = strdup(keys[k]);
            flip_bit(copy, positions[i]);
            const char *cu = k == 0 ? copy : c.customer, *us = k == 1 ? copy : c.user,
                       *ws = k == 2 ? copy : c.workspace;
            unwrap_ws("cmxDevice", "site-tamper", cu, us, ws, &r);
            expect_error(&r, 400, "unwrap_failed");
            resp_free(&r);
            free(copy);
        }
    }
    /* the user key replayed as the workspace key */
    unwrap_ws("cmxDevice", "site-tamper", c.customer, c.user, c.user, &r);
    expect_error(&r, 400, "unwrap_failed");
    resp_free(&r);
    /* the whole chain presented for another site */
    unwrap_ws("cmxDevice", "site-other", c.customer, c.user, c.workspace, &r);
    expect_error(&r, 400, "unwrap_failed");
    resp_free(&r);
    /* a user key from another customer key of the same site */
    struct chain c2;
    make_chain("site-tamper", &c2);
    unwrap_ws("cmxDevice", "site-tamper", c.customer, c2.user, c.workspace, &r);
    expect_error(&r, 400, "unwrap_failed");
    resp_free(&r);
    still_serving();
    resp_free(&ok);
    chain_free(&c);
    chain_free(&c2);
}

/* Too long a path or too many header bytes: answered in JSON like every
 * other error, with the connection kept usable. */
Test(api, long_paths_and_headers_get_json_414_and_431)
{
    struct resp r;
    static char path[4096], header[10000];
    memset(path, 'a', sizeof(path) - 1);
    memcpy(path, "/v1/keys/", 9);
    http("cmxBackend", "GET", path, NULL, &r);
    expect_error(&r, 414, "uri_too_long");
    cr_assert_str_eq(r.content_type, "application/json", "%s", r.raw);
    resp_free(&r);
    memset(header, 'x', sizeof(header) - 1);
    memcpy(header, "X-Filler: ", 10);
    extra_header = header;
    http("cmxBackend", "GET", "/v1/whoami", NULL, &r);
    extra_header = NULL;
    expect_error(&r, 431, "headers_too_large");
    resp_free(&r);
    http("cmxBackend", "GET", "/v1/whoami", NULL, &r);
    cr_assert_eq(r.status, 200, "%s", r.body);
    resp_free(&r);
}

Test(api, malformed_requests_get_4xx_and_server_keeps_serving)
{
    struct resp r;
    http("cmxBackend", "POST", "/v1/customer-keys", "{\"site_id\":", &r);
    expect_error(&r, 400, "malformed_json");
    resp_free(&r);
    http("cmxBackend", "POST", "/v1/customer-keys", "{\"site_id\":\"a\",\"site_id\":\"b\"}", &r);
    expect_error(&r, 400, "malformed_json");
    resp_free(&r);
    http("cmxBackend", "POST", "/v1/customer-keys", "{\"site_id\":\"a\",\"extra\":1}", &r);
    expect_field(&r, "extra", "unknown field extra; this takes site_id");
    resp_free(&r);
    http("cmxBackend", "POST", "/v1/customer-keys", "{\"site_id\":42}", &r);
    expect_field(&r, "site_id", "site_id must be a string, not a number");
    resp_free(&r);
    http("cmxBackend", "POST", "/v1/customer-keys", "{\"site_id\":\"bad site/\"}", &r);
    expect_field(&r, "site_id", "site_id must be 1..128 characters of A-Z a-z 0-9 . _ : @ -");
    resp_free(&r);
    http("cmxBackend", "POST", "/v1/user-keys", "{\"site_id\":\"a\"}", &r);
    expect_field(&r, "customer_key", "customer_key is required: it must be the wrapped customer key string that "
                                     "kmsd returned");
    resp_free(&r);
    http("cmxBackend", "POST", "/v1/keys/kms-master/unwrap", "{\"batch\":[{\"wrapped\":\"x\"},{\"site\":1}]}", &r);
    expect_field(&r, "batch[1].site", "unknown field batch[1].site; this takes wrapped, site_id");
    resp_free(&r);
    http("cmxBackend", "POST", "/v1/keys/kms-master/datakey", "{\"bytes\":0}", &r);
    expect_field(&r, "bytes", "bytes must be an integer of 1..1024");
    resp_free(&r);
    http("cmxBackend", "POST", "/v1/customer-keys", "[]", &r);
    expect_error(&r, 400, "invalid_field");
    resp_free(&r);
    http("cmxBackend", "POST", "/v1/keys/kms-master/wrap", "{\"plaintext\":\"not base64!\"}", &r);
    expect_error(&r, 400, "invalid_field");
    resp_free(&r);
    http("cmxBackend", "POST", "/v1/keys/kms-master/wrap", "{\"plaintext\":\"!!\"}", &r);
    expect_field(&r, "plaintext", "plaintext must be standard base64 of 1..1024 bytes");
    resp_free(&r);
    http("cmxBackend", "POST", "/v1/keys/kms-master/wrap", "{\"plaintext\":\"QUJD\\u0000\"}", &r);
    cr_assert(r.status == 400, "embedded NUL: %d", r.status);
    resp_free(&r);
    http("cmxBackend", "GET", "/v1/nothing-here", NULL, &r);
    expect_error(&r, 404, "not_found");
    resp_free(&r);
    http("cmxBackend", "GET", "/v1/customer-keys", NULL, &r);
    expect_error(&r, 405, "method_not_allowed");
    resp_free(&r);

    char tmp[] = "/tmp/kms-it-body-XXXXXX";
    int fd = mkstemp(tmp);
    cr_assert(write(fd, "{\"site_id\":\"s\"}", 15) == 15);
    close(fd);
    http_file("cmxBackend", "POST", "/v1/customer-keys", tmp, "text/plain", &r);
    expect_error(&r, 415, "unsupported_media_type");
    resp_free(&r);
    unlink(tmp);

    /* 1 MiB body */
    char big[] = "/tmp/kms-it-big-XXXXXX";
    fd = mkstemp(big);
    char *mib = malloc(1 << 20);
    memset(mib, 'a', 1 << 20);
    mib[0] = '"';
    mib[(1 << 20) - 1] = '"';
    cr_assert(write(fd, mib, 1 << 20) == 1 << 20);
    close(fd);
    free(mib);
    http_file("cmxBackend", "POST", "/v1/customer-keys", big, NULL, &r);
    cr_assert_eq(r.status, 413, "1 MiB body: %d %s", r.status, r.body);
    cr_assert_str_eq(err_code(&r), "body_too_large");
    resp_free(&r);
    unlink(big);
    still_serving();
}

Test(api, generic_wrap_unwrap_rewrap_datakey_and_batch)
{
    struct resp r, u;
    /* "hello" */
    http("cmxBackend", "POST", "/v1/keys/kms-master/wrap", "{\"plaintext\":\"aGVsbG8=\",\"site_id\":\"g1\"}", &r);
    cr_assert_eq(r.status, 200, "%s", r.body);
    const char *wrapped = jstr(&r, "wrapped");
    cr_assert(wrapped && strncmp(wrapped, "kms:v1:", 7) == 0);
    char body[16384];
    snprintf(body, sizeof(body), "{\"wrapped\":\"%s\",\"site_id\":\"g1\"}", wrapped);
    http("cmxDevice", "POST", "/v1/keys/kms-master/unwrap", body, &u);
    cr_assert_eq(u.status, 200, "%s", u.body);
    cr_assert_str_eq(jstr(&u, "plaintext"), "aGVsbG8=");
    resp_free(&u);
    /* wrong site: the single unwrap error */
    snprintf(body, sizeof(body), "{\"wrapped\":\"%s\",\"site_id\":\"g2\"}", wrapped);
    http("cmxBackend", "POST", "/v1/keys/kms-master/unwrap", body, &u);
    expect_error(&u, 400, "unwrap_failed");
    resp_free(&u);
    /* rewrap keeps the plaintext */
    snprintf(body, sizeof(body), "{\"wrapped\":\"%s\",\"site_id\":\"g1\"}", wrapped);
    http("cmxBackend", "POST", "/v1/keys/kms-master/rewrap", body, &u);
    cr_assert_eq(u.status, 200, "%s", u.body);
    snprintf(body, sizeof(body), "{\"wrapped\":\"%s\",\"site_id\":\"g1\"}", jstr(&u, "wrapped"));
    resp_free(&u);
    http("cmxBackend", "POST", "/v1/keys/kms-master/unwrap", body, &u);
    cr_assert_str_eq(jstr(&u, "plaintext"), "aGVsbG8=");
    resp_free(&u);
    /* device may unwrap, not wrap */
    http("cmxDevice", "POST", "/v1/keys/kms-master/wrap", "{\"plaintext\":\"aGVsbG8=\"}", &u);
    expect_error(&u, 403, "forbidden");
    resp_free(&u);
    /* unknown master key */
    http("cmxBackend", "POST", "/v1/keys/no-such-key/wrap", "{\"plaintext\":\"aGVsbG8=\"}", &u);
    expect_error(&u, 404, "key_not_found");
    resp_free(&u);
    /* datakey */
    http("cmxBackend", "POST", "/v1/keys/kms-master/datakey", "{\"bytes\":16}", &u);
    cr_assert_eq(u.status, 200, "%s", u.body);
    cr_assert_eq(strlen(jstr(&u, "plaintext")), 24);
    snprintf(body, sizeof(body), "{\"wrapped\":\"%s\"}", jstr(&u, "wrapped"));
    char *pt = strdup(jstr(&u, "plaintext"));
    resp_free(&u);
    http("cmxBackend", "POST", "/v1/keys/kms-master/unwrap", body, &u);
    cr_assert_str_eq(jstr(&u, "plaintext"), pt);
    free(pt);
    resp_free(&u);
    /* batch: order kept, per-item errors */
    snprintf(body, sizeof(body), "{\"batch\":[{\"wrapped\":\"%s\",\"site_id\":\"g1\"},{\"wrapped\":\"kms:v1:AAAA\"},"
             "{\"wrapped\":\"%s\",\"site_id\":\"g1\"}]}", wrapped, wrapped);
    http("cmxBackend", "POST", "/v1/keys/kms-master/unwrap", body, &u);
    cr_assert_eq(u.status, 200, "%s", u.body);
    json_t *batch = json_object_get(u.json, "batch");
    cr_assert_eq(json_array_size(batch), 3);
    cr_assert_str_eq(json_string_value(json_object_get(json_array_get(batch, 0), "plaintext")), "aGVsbG8=");
    cr_assert_str_eq(json_string_value(json_object_get(json_object_get(json_array_get(batch, 1), "error"), "code")),
                     "unwrap_failed");
    cr_assert_str_eq(json_string_value(json_object_get(json_array_get(batch, 2), "plaintext")), "aGVsbG8=");
    resp_free(&u);
    /* batch wrap: order kept, a bad item fails alone, each result unwraps */
    http("cmxBackend", "POST", "/v1/keys/kms-master/wrap",
         "{\"batch\":[{\"plaintext\":\"aGVsbG8=\",\"site_id\":\"g1\"},{\"plaintext\":\"!!\"},"
         "{\"plaintext\":\"d29ybGQ=\",\"site_id\":\"g2\"}]}",
         &u);
    cr_assert_eq(u.status, 200, "%s", u.body);
    batch = json_object_get(u.json, "batch");
    cr_assert_eq(json_array_size(batch), 3, "%s", u.body);
    cr_assert_str_eq(json_string_value(json_object_get(json_object_get(json_array_get(batch, 1), "error"), "code")),
                     "invalid_field");
    const char *sites[3] = {"g1", NULL, "g2"}, *plain[3] = {"aGVsbG8=", NULL, "d29ybGQ="};
    for (size_t i = 0; i < 3; i += 2) {
        const char *wk = json_string_value(json_object_get(json_array_get(batch, i), "wrapped"));
        cr_assert(wk != NULL && strncmp(wk, "kms:v1:", 7) == 0, "%s", u.body);
        struct resp v;
        snprintf(body, sizeof(body), "{\"wrapped\":\"%s\",\"site_id\":\"%s\"}", wk, sites[i]);
        http("cmxBackend", "POST", "/v1/keys/kms-master/unwrap", body, &v);
        cr_assert_eq(v.status, 200, "%s", v.body);
        cr_assert_str_eq(jstr(&v, "plaintext"), plain[i]);
        resp_free(&v);
    }
    resp_free(&u);
    /* metadata, never material */
    http("cmxBackend", "GET", "/v1/keys/kms-master", NULL, &u);
    cr_assert_eq(u.status, 200, "%s", u.body);
    cr_assert_str_eq(jstr(&u, "name"), "kms-master");
    /* the backend kmsd reports is the one the harness configured */
    cr_assert_eq(strncmp(jstr(&u, "backend"), backend, strlen(jstr(&u, "backend"))), 0, "backend %s vs %s",
                 jstr(&u, "backend"), backend);
    resp_free(&u);
    resp_free(&r);
}
