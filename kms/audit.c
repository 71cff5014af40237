#include "kms/audit.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/log.h"

struct kms_audit {
    int fd;
    char node[128];
};

kms_rc kms_audit_open(const char *path, const char *node, struct kms_audit **out)
{
    *out = NULL;
    struct kms_audit *a = calloc(1, sizeof(*a));
    if (a == NULL)
        return KMS_ERR_NO_MEMORY;
    a->fd = STDERR_FILENO;
    if (path != NULL && path[0] != '\0') {
        a->fd = open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0600);
        if (a->fd < 0) {
            free(a);
            return kms_fail(KMS_ERR_IO, "cannot open audit file %s: %s", path, strerror(errno));
        }
    }
    (void)snprintf(a->node, sizeof(a->node), "%s", node ? node : "");
    *out = a;
    return KMS_OK;
}

void kms_audit_close(struct kms_audit **a)
{
    if (a == NULL || *a == NULL)
        return;
    if ((*a)->fd != STDERR_FILENO)
        (void)close((*a)->fd);
    free(*a);
    *a = NULL;
}

static size_t field(char *out, size_t cap, size_t used, const char *key, const char *value)
{
    if (used >= cap)
        return used;
    char esc[512];
    int n;
    if (value) {
        kms_json_escape(value, esc, sizeof(esc));
        n = snprintf(out + used, cap - used, ",\"%s\":\"%s\"", key, esc);
    } else {
        n = snprintf(out + used, cap - used, ",\"%s\":null", key);
    }
    if (n < 0 || (size_t)n >= cap - used)
        return cap;
    return used + (size_t)n;
}

void kms_audit_write(struct kms_audit *a, const struct kms_audit_record *r)
{
    if (a == NULL)
        return;
    char line[4096], ts[40];
    kms_log_timestamp(ts, sizeof(ts));
    int n = snprintf(line, sizeof(line), "{\"ts\":\"%s\",\"level\":\"info\",\"event\":\"audit\"", ts);
    size_t used = n > 0 ? (size_t)n : 0;
    used = field(line, sizeof(line), used, "req_id", r->req_id);
    used = field(line, sizeof(line), used, "node", a->node);
    used = field(line, sizeof(line), used, "client", r->client_alias);
    used = field(line, sizeof(line), used, "client_fp", r->client_fp);
    used = field(line, sizeof(line), used, "op", r->operation);
    used = field(line, sizeof(line), used, "site_id", r->site_id);
    used = field(line, sizeof(line), used, "key_ref", r->key_ref);
    used = field(line, sizeof(line), used, "outcome", r->outcome);
    if (used < sizeof(line)) {
        n = snprintf(line + used, sizeof(line) - used, ",\"status\":%d,\"latency_ms\":%.3f}\n", r->status,
                     r->latency_ms);
        used = (n > 0 && (size_t)n < sizeof(line) - used) ? used + (size_t)n : sizeof(line);
    }
    if (used >= sizeof(line))
        return; /* why: a truncated line is not valid JSON; the record is bounded well below this */
    ssize_t w = write(a->fd, line, used);
    (void)w; /* a failed audit write never fails the request (STYLE.md) */
}
