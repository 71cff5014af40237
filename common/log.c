#include "common/log.h"
#include "common/utf8.h"

#include <pthread.h>
#include <stdarg.h>
#include <string.h>
#include <time.h>

static enum kms_log_level min_level = KMS_LOG_INFO;
static FILE *stream;
static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static const char *const names[] = {"debug", "info", "warn", "error"};

int kms_log_level_parse(const char *s)
{
    for (size_t i = 0; i < KMS_ARRAY_LEN(names); i++)
        if (strcmp(s, names[i]) == 0)
            return (int)i;
    if (strcmp(s, "warning") == 0)
        return KMS_LOG_WARN;
    return -1;
}

void kms_log_set_level(enum kms_log_level lvl) { min_level = lvl; }
void kms_log_set_stream(FILE *f) { stream = f; }

size_t kms_json_escape_n(const char *in, size_t len, char *out, size_t cap)
{
    static const char hex[] = "0123456789abcdef";
    const unsigned char *p = (const unsigned char *)in, *end = p + len;
    size_t o = 0;
    if (cap == 0)
        return 0;
    while (p < end) {
        char tmp[7];
        size_t n = 0, used = 1;
        if (*p >= 0x80) {
            /* why: a log line or a response must stay JSON whatever a
             * certificate or a client put in a value: a byte that is not
             * UTF-8 becomes U+FFFD */
            used = kms_utf8_seq(p, (size_t)(end - p));
            if (used == 0) {
                memcpy(tmp, "\\ufffd", 6);
                n = 6;
                used = 1;
            } else {
                memcpy(tmp, p, used);
                n = used;
            }
        } else {
            switch (*p) {
            case '"': tmp[n++] = '\\'; tmp[n++] = '"'; break;
            case '\\': tmp[n++] = '\\'; tmp[n++] = '\\'; break;
            case '\n': tmp[n++] = '\\'; tmp[n++] = 'n'; break;
            case '\r': tmp[n++] = '\\'; tmp[n++] = 'r'; break;
            case '\t': tmp[n++] = '\\'; tmp[n++] = 't'; break;
            default:
                if (*p < 0x20 || *p == 0x7f) {
                    tmp[n++] = '\\'; tmp[n++] = 'u'; tmp[n++] = '0'; tmp[n++] = '0';
                    tmp[n++] = hex[*p >> 4]; tmp[n++] = hex[*p & 15];
                } else {
                    tmp[n++] = (char)*p;
                }
            }
        }
        if (o + n >= cap)
            break;
        memcpy(out + o, tmp, n);
        o += n;
        p += used;
    }
    out[o] = '\0';
    return (size_t)(p - (const unsigned char *)in);
}

void kms_json_escape(const char *in, char *out, size_t cap) { (void)kms_json_escape_n(in, strlen(in), out, cap); }

void kms_log_timestamp(char *out, size_t cap)
{
    /* why: every audit line needs one; the date part changes once a second */
    static __thread time_t base_sec = -1;
    static __thread char base[24];
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    if (ts.tv_sec != base_sec) {
        struct tm tm;
        gmtime_r(&ts.tv_sec, &tm);
        strftime(base, sizeof(base), "%Y-%m-%dT%H:%M:%S", &tm);
        base_sec = ts.tv_sec;
    }
    size_t n = strlen(base);
    unsigned ms = (unsigned)(ts.tv_nsec / 1000000);
    if (cap < n + 6) {
        if (cap > 0)
            out[0] = '\0';
        return;
    }
    memcpy(out, base, n);
    out[n] = '.';
    out[n + 1] = (char)('0' + ms / 100);
    out[n + 2] = (char)('0' + ms / 10 % 10);
    out[n + 3] = (char)('0' + ms % 10);
    out[n + 4] = 'Z';
    out[n + 5] = '\0';
}

static void emit(enum kms_log_level lvl, const char *event, const char *req_id, const char *fields)
{
    char ts[40], ev[128], rid[80];
    kms_log_timestamp(ts, sizeof(ts));
    kms_json_escape(event, ev, sizeof(ev));
    kms_json_escape(req_id ? req_id : "", rid, sizeof(rid));
    FILE *f = stream ? stream : stderr;
    pthread_mutex_lock(&lock);
    if (req_id)
        (void)fprintf(f, "{\"ts\":\"%s\",\"level\":\"%s\",\"event\":\"%s\",\"req_id\":\"%s\"%s}\n", ts,
                      names[lvl], ev, rid, fields);
    else
        (void)fprintf(f, "{\"ts\":\"%s\",\"level\":\"%s\",\"event\":\"%s\",\"req_id\":null%s}\n", ts,
                      names[lvl], ev, fields);
    (void)fflush(f);
    pthread_mutex_unlock(&lock);
}

void kms_log(enum kms_log_level lvl, const char *event, const char *req_id, ...)
{
    if (lvl < min_level)
        return;
    char fields[4096];
    size_t used = 0;
    fields[0] = '\0';
    va_list ap;
    va_start(ap, req_id);
    const char *k;
    while ((k = va_arg(ap, const char *)) != NULL) {
        const char *v = va_arg(ap, const char *);
        char ek[64], ev[1024];
        kms_json_escape(k, ek, sizeof(ek));
        int n;
        if (v) {
            kms_json_escape(v, ev, sizeof(ev));
            n = snprintf(fields + used, sizeof(fields) - used, ",\"%s\":\"%s\"", ek, ev);
        } else {
            n = snprintf(fields + used, sizeof(fields) - used, ",\"%s\":null", ek);
        }
        if (n < 0 || (size_t)n >= sizeof(fields) - used) {
            fields[used] = '\0';
            break;
        }
        used += (size_t)n;
    }
    va_end(ap);
    emit(lvl, event, req_id, fields);
}

void kms_logf(enum kms_log_level lvl, const char *event, const char *req_id, const char *fmt, ...)
{
    if (lvl < min_level)
        return;
    char msg[1024];
    va_list ap;
    va_start(ap, fmt);
    (void)vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    kms_log(lvl, event, req_id, "msg", msg, NULL);
}
