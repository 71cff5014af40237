/* Response writing: the reply buffer handed to MHD (wiped when MHD is done
 * with it), the error body, the request metrics and the audit line. */
#include <microhttpd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "common/clock.h"
#include "common/log.h"
#include "common/secret.h"
#include "server/internal.h"
#include "server/metrics.h"

static double elapsed_ms(uint64_t start_ns)
{
    return (double)(kms_now_ns() - start_ns) / 1e6;
}

struct wiped {
    uint8_t *data;
    size_t len;
};

static void free_wiped(void *cls)
{
    struct wiped *w = cls;
    kms_wipe(w->data, w->len);
    free(w->data);
    free(w);
}

enum MHD_Result kms_reply_send(struct MHD_Connection *c, struct kms_request *r)
{
    struct wiped *w = malloc(sizeof(*w));
    if (w == NULL)
        return MHD_NO;
    /* why: hand the wiped-on-free buffer itself to MHD: no unwiped copy of key material */
    w->data = r->reply.buf.data;
    w->len = r->reply.buf.len;
    r->reply.buf.data = NULL;
    r->reply.buf.len = 0;
    r->reply.buf.cap = 0;
    struct MHD_Response *resp = MHD_create_response_from_buffer_with_free_callback_cls(w->len, w->data,
                                                                                       free_wiped, w);
    if (resp == NULL) {
        free_wiped(w);
        return MHD_NO;
    }
    (void)MHD_add_response_header(resp, "Content-Type", "application/json");
    (void)MHD_add_response_header(resp, "X-Request-Id", r->id);
    (void)MHD_add_response_header(resp, "Cache-Control", "no-store");
    if (r->retry_after_s > 0) {
        char ra[16];
        (void)snprintf(ra, sizeof(ra), "%u", r->retry_after_s);
        (void)MHD_add_response_header(resp, "Retry-After", ra);
    }
    if (r->status == MHD_HTTP_METHOD_NOT_ALLOWED && r->route == NULL)
        (void)MHD_add_response_header(resp, "Allow", "GET, POST");
    /* why: MHD sends no body for HEAD, 1xx, 204 and 304; only then would a held header wait */
    int bodiless = r->method_head || r->status < 200 || r->status == 204 || r->status == 304;
    if (r->conn != NULL && r->conn->fd >= 0 && w->len > 0 && !bodiless)
        r->conn->hold = 1;
    enum MHD_Result ret = MHD_queue_response(c, (unsigned)r->status, resp);
    MHD_destroy_response(resp);
    r->responded = 1;
    kms_metrics_request(kms_router_index(r->route), r->route ? r->route->pattern : "unmatched", r->status,
                        elapsed_ms(r->start_ns) / 1e3);
    return ret;
}

static void build_error(struct kms_request *r, kms_rc rc)
{
    kms_jsonw_free(&r->reply);
    kms_jsonw_init(&r->reply, 4096);
    r->status = kms_error_status(rc);
    kms_jsonw_obj_begin(&r->reply);
    kms_jsonw_key(&r->reply, "error");
    kms_jsonw_obj_begin(&r->reply);
    kms_jsonw_kv(&r->reply, "code", kms_error_code(rc));
    int told = r->reject_rc == rc && r->reject_message[0] != '\0';
    if (told && r->reject_field[0] != '\0')
        kms_jsonw_kv(&r->reply, "field", r->reject_field);
    kms_jsonw_kv(&r->reply, "message", told ? r->reject_message : kms_error_message(rc));
    kms_jsonw_kv(&r->reply, "request_id", r->id);
    kms_jsonw_obj_end(&r->reply);
    kms_jsonw_obj_end(&r->reply);
}


void kms_reply_audit(struct kms_server *s, struct kms_request *r, kms_rc rc)
{
    if (r->route == NULL || r->route->op == NULL)
        return;
    const struct kms_identity *id = r->conn ? &r->conn->id : NULL;
    int authed = id != NULL && id->status == KMS_AUTH_OK;
    struct kms_audit_record rec = {
        .req_id = r->id,
        .client_alias = authed ? id->alias : NULL,
        .client_fp = (id != NULL && id->fingerprint[0]) ? id->fingerprint : NULL,
        .operation = r->route->op,
        .site_id = r->site_id[0] ? r->site_id : NULL,
        .key_ref = r->key_ref[0] ? r->key_ref : NULL,
        .outcome = rc == KMS_OK ? "ok" : kms_error_code(rc),
        .status = r->status,
        .latency_ms = elapsed_ms(r->start_ns),
        .peer = r->conn != NULL ? r->conn->peer : NULL,
    };
    kms_audit_write(s->d.audit, &rec);
}

enum MHD_Result kms_reply_error(struct kms_server *s, struct MHD_Connection *c, struct kms_request *r,
                                kms_rc rc)
{
    build_error(r, rc);
    if (kms_jsonw_finish(&r->reply) != KMS_OK)
        return MHD_NO;
    const char *detail = r->detail[0] ? r->detail : kms_error_detail();
    if (kms_error_status(rc) >= 500)
        kms_log(KMS_LOG_ERROR, "request.failed", r->id, "code", kms_error_code(rc), "detail", detail, NULL);
    else if (rc != KMS_ERR_UNAUTHENTICATED)
        kms_log(KMS_LOG_INFO, "request.rejected", r->id, "code", kms_error_code(rc), "detail", detail, NULL);
    kms_reply_audit(s, r, rc);
    return kms_reply_send(c, r);
}
