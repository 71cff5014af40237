/* kmsd's own HTTP(S) requests (http_client.h). */
#include "server/http_client.h"

#include <curl/curl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static pthread_once_t init_once = PTHREAD_ONCE_INIT;
static CURLcode init_rc = CURLE_FAILED_INIT;

static void init(void)
{
    init_rc = curl_global_init(CURL_GLOBAL_DEFAULT);
}

int kms_http_init(void)
{
    (void)pthread_once(&init_once, init);
    return init_rc == CURLE_OK ? 0 : -1;
}

struct sink {
    struct kms_http_body *b;
    size_t max;
    int over;
};

static size_t on_data(char *data, size_t size, size_t n, void *cls)
{
    struct sink *s = cls;
    size_t add = size * n;
    if (s->b->len + add > s->max) {
        s->over = 1;
        return 0;
    }
    unsigned char *p = realloc(s->b->p, s->b->len + add);
    if (p == NULL)
        return 0;
    memcpy(p + s->b->len, data, add);
    s->b->p = p;
    s->b->len += add;
    return add;
}

int kms_http_fetch(const char *url, const char *content_type, const void *req, size_t req_len, size_t max,
                   unsigned timeout_ms, struct kms_http_body *out, char *why, size_t cap)
{
    out->p = NULL;
    out->len = 0;
    CURL *c = curl_easy_init();
    if (c == NULL) {
        (void)snprintf(why, cap, "%s: libcurl could not start", url);
        return -1;
    }
    struct sink s = {out, max, 0};
    char err[CURL_ERROR_SIZE] = "", ct[128];
    struct curl_slist *h = NULL;
    curl_easy_setopt(c, CURLOPT_URL, url);
    curl_easy_setopt(c, CURLOPT_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(c, CURLOPT_FOLLOWLOCATION, 0L);
    curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, (long)timeout_ms);
    curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_data);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, &s);
    curl_easy_setopt(c, CURLOPT_ERRORBUFFER, err);
    if (content_type != NULL) {
        (void)snprintf(ct, sizeof(ct), "Content-Type: %s", content_type);
        h = curl_slist_append(NULL, ct);
        curl_easy_setopt(c, CURLOPT_HTTPHEADER, h);
        curl_easy_setopt(c, CURLOPT_POSTFIELDS, req);
        curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE, (long)req_len);
    }
    CURLcode rc = curl_easy_perform(c);
    long status = 0;
    curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &status);
    curl_easy_cleanup(c);
    curl_slist_free_all(h);
    const char *fail = NULL;
    char st[32];
    if (s.over) {
        (void)snprintf(st, sizeof(st), "the answer is over %zu bytes", max);
        fail = st;
    } else if (rc != CURLE_OK) {
        fail = err[0] ? err : curl_easy_strerror(rc);
    } else if (status != 200) {
        (void)snprintf(st, sizeof(st), "HTTP status %ld", status);
        fail = st;
    }
    if (fail == NULL)
        return 0;
    (void)snprintf(why, cap, "%s: %s", url, fail);
    free(out->p);
    out->p = NULL;
    out->len = 0;
    return -1;
}
