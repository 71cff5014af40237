#include "kms/audit.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "common/log.h"

#define LINE_MAX_LEN 4096
#define BUFFER_CAP (256 * 1024) /* pending lines; writers wait when it is full */
#define FILE_CHUNK (64 * 1024)

struct kms_audit {
    int fd;
    uint64_t failures; /* lines lost to a failed write(2): kms_audit_failures (atomic) */
    char node[128];
    unsigned flush_ms; /* 0: one write(2) per line, no thread */
    size_t chunk;      /* largest single write(2): PIPE_BUF unless fd is a regular file */
    pthread_mutex_t mu;
    pthread_cond_t wake;  /* the writer: lines pending past half the buffer, or stop */
    pthread_cond_t space; /* producers: the writer emptied the buffer */
    char *buf, *spare;    /* pending lines; the writer swaps them under mu */
    size_t len;
    int stop, has_writer;
    pthread_t writer;
};

/* Writes all of data in pieces of at most a->chunk bytes cut after a
 * newline, so a reader of a pipe never sees a line split by another writer. */
static void write_lines(struct kms_audit *a, const char *data, size_t len)
{
    while (len > 0) {
        size_t n = len;
        if (n > a->chunk) {
            n = a->chunk;
            while (n > 0 && data[n - 1] != '\n')
                n--;
            if (n == 0)
                n = a->chunk; /* why: lines are < LINE_MAX_LEN <= chunk; never reached */
        }
        ssize_t w = write(a->fd, data, n);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0) {
            /* a failed audit write never fails the request (STYLE.md); the
             * operator sees it as kms_audit_write_failures_total */
            uint64_t lost = 0; /* every line not yet written is lost */
            for (size_t i = 0; i < len; i++)
                lost += data[i] == '\n';
            if (__atomic_fetch_add(&a->failures, lost, __ATOMIC_RELAXED) == 0)
                kms_log(KMS_LOG_ERROR, "audit.write_failed", NULL, "detail", w < 0 ? strerror(errno) : "short write",
                        NULL);
            return;
        }
        data += w;
        len -= (size_t)w;
    }
}

static void *writer_main(void *arg)
{
    struct kms_audit *a = arg;
    pthread_mutex_lock(&a->mu);
    for (;;) {
        while (a->len == 0 && !a->stop)
            pthread_cond_wait(&a->wake, &a->mu);
        if (a->len == 0)
            break; /* stopping, nothing pending */
        if (!a->stop && a->len < BUFFER_CAP / 2) {
            /* why: lines arriving within flush_ms of the first share one write */
            struct timespec until;
            clock_gettime(CLOCK_REALTIME, &until);
            uint64_t ns = (uint64_t)until.tv_nsec + (uint64_t)a->flush_ms * 1000000ull;
            until.tv_sec += (time_t)(ns / 1000000000ull);
            until.tv_nsec = (long)(ns % 1000000000ull);
            (void)pthread_cond_timedwait(&a->wake, &a->mu, &until);
        }
        char *out = a->buf;
        size_t n = a->len;
        a->buf = a->spare;
        a->spare = NULL;
        a->len = 0;
        pthread_cond_broadcast(&a->space);
        pthread_mutex_unlock(&a->mu);
        write_lines(a, out, n);
        pthread_mutex_lock(&a->mu);
        a->spare = out;
        pthread_cond_broadcast(&a->space);
    }
    pthread_mutex_unlock(&a->mu);
    return NULL;
}

kms_rc kms_audit_open(const char *path, const char *node, unsigned flush_ms, struct kms_audit **out)
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
    struct stat st;
    a->chunk = fstat(a->fd, &st) == 0 && S_ISREG(st.st_mode) ? FILE_CHUNK : PIPE_BUF;
    (void)snprintf(a->node, sizeof(a->node), "%s", node ? node : "");
    a->flush_ms = flush_ms;
    if (flush_ms > 0) {
        a->buf = malloc(BUFFER_CAP);
        a->spare = malloc(BUFFER_CAP);
        int ok = a->buf != NULL && a->spare != NULL && pthread_mutex_init(&a->mu, NULL) == 0;
        if (ok && (pthread_cond_init(&a->wake, NULL) != 0 || pthread_cond_init(&a->space, NULL) != 0))
            ok = 0; /* why: only reached when the system is out of resources; mu leaks then */
        if (ok && pthread_create(&a->writer, NULL, writer_main, a) != 0)
            ok = 0;
        if (!ok) {
            free(a->buf);
            free(a->spare);
            if (a->fd != STDERR_FILENO)
                (void)close(a->fd);
            free(a);
            return kms_fail(KMS_ERR_NO_MEMORY, "cannot start the audit writer");
        }
        a->has_writer = 1;
    }
    *out = a;
    return KMS_OK;
}

void kms_audit_close(struct kms_audit **pa)
{
    if (pa == NULL || *pa == NULL)
        return;
    struct kms_audit *a = *pa;
    if (a->has_writer) {
        pthread_mutex_lock(&a->mu);
        a->stop = 1;
        pthread_cond_signal(&a->wake);
        pthread_mutex_unlock(&a->mu);
        (void)pthread_join(a->writer, NULL); /* why: it writes what is pending first */
        pthread_cond_destroy(&a->wake);
        pthread_cond_destroy(&a->space);
        pthread_mutex_destroy(&a->mu);
    }
    free(a->buf);
    free(a->spare);
    if (a->fd != STDERR_FILENO)
        (void)close(a->fd);
    free(a);
    *pa = NULL;
}

/* Queues one line for the writer; waits while the buffer is full. */
static void enqueue(struct kms_audit *a, const char *line, size_t len)
{
    pthread_mutex_lock(&a->mu);
    while (!a->stop && a->len + len > BUFFER_CAP) {
        pthread_cond_signal(&a->wake);
        pthread_cond_wait(&a->space, &a->mu);
    }
    if (a->stop) { /* why: lines written during close go straight out */
        pthread_mutex_unlock(&a->mu);
        write_lines(a, line, len);
        return;
    }
    memcpy(a->buf + a->len, line, len);
    size_t before = a->len;
    a->len += len;
    if (before == 0 || a->len >= BUFFER_CAP / 2)
        pthread_cond_signal(&a->wake);
    pthread_mutex_unlock(&a->mu);
}

/* A bounded line being built; full is set once something did not fit. */
struct line {
    char *p;
    size_t used, cap;
    int full;
};

static void put(struct line *l, const char *s, size_t n)
{
    if (l->full || n > l->cap - l->used) {
        l->full = 1;
        return;
    }
    memcpy(l->p + l->used, s, n);
    l->used += n;
}

static void put_str(struct line *l, const char *s)
{
    put(l, s, strlen(s));
}

static void put_escaped(struct line *l, const char *s)
{
    static const char hex[] = "0123456789abcdef";
    for (const unsigned char *c = (const unsigned char *)s; *c != '\0' && !l->full; c++) {
        char esc[6] = {'\\', 0, '0', '0', 0, 0};
        switch (*c) {
        case '"': esc[1] = '"'; put(l, esc, 2); break;
        case '\\': esc[1] = '\\'; put(l, esc, 2); break;
        case '\n': esc[1] = 'n'; put(l, esc, 2); break;
        case '\r': esc[1] = 'r'; put(l, esc, 2); break;
        case '\t': esc[1] = 't'; put(l, esc, 2); break;
        default:
            if (*c < 0x20 || *c == 0x7f) {
                esc[1] = 'u';
                esc[4] = hex[*c >> 4];
                esc[5] = hex[*c & 15];
                put(l, esc, 6);
            } else {
                put(l, (const char *)c, 1);
            }
        }
    }
}

static void put_uint(struct line *l, unsigned long long v, int min_digits)
{
    char d[24];
    int n = 0;
    do {
        d[sizeof(d) - 1 - (size_t)n++] = (char)('0' + v % 10);
        v /= 10;
    } while (v > 0 || n < min_digits);
    put(l, d + sizeof(d) - (size_t)n, (size_t)n);
}

static void field(struct line *l, const char *key, const char *value)
{
    put(l, ",\"", 2);
    put_str(l, key);
    if (value == NULL) {
        put_str(l, "\":null");
        return;
    }
    put(l, "\":\"", 3);
    put_escaped(l, value);
    put(l, "\"", 1);
}

void kms_audit_write(struct kms_audit *a, const struct kms_audit_record *r)
{
    if (a == NULL)
        return;
    char buf[LINE_MAX_LEN], ts[40];
    struct line l = {buf, 0, sizeof(buf), 0};
    kms_log_timestamp(ts, sizeof(ts));
    put_str(&l, "{\"ts\":\"");
    put_str(&l, ts);
    put_str(&l, "\",\"level\":\"info\",\"event\":\"audit\"");
    field(&l, "req_id", r->req_id);
    field(&l, "node", a->node);
    field(&l, "client", r->client_alias);
    field(&l, "client_fp", r->client_fp);
    field(&l, "op", r->operation);
    field(&l, "site_id", r->site_id);
    field(&l, "key_ref", r->key_ref);
    field(&l, "outcome", r->outcome);
    put_str(&l, ",\"status\":");
    put_uint(&l, r->status > 0 ? (unsigned long long)r->status : 0, 1);
    /* latency_ms with three decimals, from whole microseconds */
    unsigned long long us = r->latency_ms > 0 ? (unsigned long long)(r->latency_ms * 1000.0 + 0.5) : 0;
    put_str(&l, ",\"latency_ms\":");
    put_uint(&l, us / 1000, 1);
    put(&l, ".", 1);
    put_uint(&l, us % 1000, 3);
    /* why last and only when known: lines without it keep their 0.2.0 form */
    if (r->peer != NULL && r->peer[0] != '\0')
        field(&l, "peer", r->peer);
    put(&l, "}\n", 2);
    if (l.full)
        return; /* why: a truncated line is not valid JSON; the record is bounded well below this */
    if (a->has_writer)
        enqueue(a, buf, l.used);
    else
        write_lines(a, buf, l.used);
}

uint64_t kms_audit_failures(const struct kms_audit *a)
{
    return a == NULL ? 0 : __atomic_load_n(&a->failures, __ATOMIC_RELAXED);
}
