#include "common/error.h"

#include <openssl/err.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

struct entry {
    int status;
    const char *code;
    const char *message;
    const char *name;
};

static const struct entry table[] = {
#define KMS_ERR_ROW(name, status, code, msg) {status, code, msg, #name},
    KMS_ERROR_TABLE(KMS_ERR_ROW)
#undef KMS_ERR_ROW
};

static const struct entry *lookup(kms_rc rc)
{
    if ((unsigned)rc >= KMS_ARRAY_LEN(table))
        return &table[KMS_ERR_INTERNAL];
    return &table[rc];
}

int kms_error_status(kms_rc rc) { return lookup(rc)->status; }
const char *kms_error_code(kms_rc rc) { return lookup(rc)->code; }
const char *kms_error_message(kms_rc rc) { return lookup(rc)->message; }
const char *kms_error_name(kms_rc rc) { return lookup(rc)->name; }

static _Thread_local char detail[512];

static void vset(const char *fmt, va_list ap) KMS_PRINTF(1, 0);
static void vset(const char *fmt, va_list ap)
{
    int n = vsnprintf(detail, sizeof(detail), fmt, ap);
    if (n < 0)
        detail[0] = '\0';
}

void kms_error_set_detail(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vset(fmt, ap);
    va_end(ap);
}

void kms_error_add_openssl(void)
{
    unsigned long e;
    size_t used = strlen(detail);
    while ((e = ERR_get_error()) != 0) {
        if (used + 3 >= sizeof(detail))
            continue; /* why: keep draining the queue even when the record is full */
        char buf[256];
        ERR_error_string_n(e, buf, sizeof(buf));
        int n = snprintf(detail + used, sizeof(detail) - used, "%s%s", used ? "; " : "", buf);
        if (n > 0)
            used = strnlen(detail, sizeof(detail));
    }
}

const char *kms_error_detail(void) { return detail; }
void kms_error_clear(void) { detail[0] = '\0'; }

kms_rc kms_fail(kms_rc rc, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vset(fmt, ap);
    va_end(ap);
    return rc;
}
