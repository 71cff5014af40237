/* kmsd's own HTTP(S) requests (CRLs, OCSP), through libcurl: http and https
 * only, no redirects, bounded in time and in the size of the answer. */
#ifndef KMS_SERVER_HTTP_CLIENT_H
#define KMS_SERVER_HTTP_CLIENT_H

#include <stddef.h>

struct kms_http_body {
    unsigned char *p; /* malloc'd; the caller frees it */
    size_t len;
};

/* libcurl's global set-up, once per process (its own init is not
 * thread-safe in every build); what its users call before their threads
 * start. 0, or -1 when libcurl cannot start. */
int kms_http_init(void);

/* GET url (content_type NULL), or POST req[0..req_len) as content_type.
 * 0 with the answer of a 200 in *out, else -1 and why (the URL and the
 * reason: curl's words, the status, or "over N bytes"). */
int kms_http_fetch(const char *url, const char *content_type, const void *req, size_t req_len, size_t max,
                   unsigned timeout_ms, struct kms_http_body *out, char *why, size_t cap);

#endif
