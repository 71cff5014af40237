#define _GNU_SOURCE /* memmem */
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
#include "kms/audit_chain.h"

#define LINE_MAX_LEN KMS_AUDIT_LINE_MAX
#define BUFFER_CAP (256 * 1024) /* pending lines; writers wait when it is full */
#define FILE_CHUNK (64 * 1024)
#define OUT_CAP (1024 * 1024)   /* chained lines not yet written: a failing disk, refuse */
#define RETRY_NS 100000000ull   /* kms_audit_ready tries a failing file again this often */

struct kms_audit {
    int fd;
    char path[4096];
    int regular;
    unsigned long long size, max_size;
    unsigned keep;
    int refuse;
    uint64_t failures; /* kms_audit_failures (atomic) */
    char node[128];
    unsigned flush_ms; /* 0: one write(2) per line, no thread */
    size_t chunk;      /* largest single write(2): PIPE_BUF unless fd is a regular file */
    /* raw lines for the writer thread (flush_ms > 0) */
    pthread_mutex_t mu;
    pthread_cond_t wake;  /* the writer: lines pending past half the buffer, or stop */
    pthread_cond_t space; /* producers: the writer emptied the buffer */
    char *buf, *spare;    /* pending lines; the writer swaps them under mu */
    size_t len;
    int stop, has_writer;
    pthread_t writer;
    /* the chain, in file order, under cmu */
    pthread_mutex_t cmu;
    struct kms_audit_chain chain;
    struct {
        uint64_t seq;
        char prev[65];
        unsigned since_checkpoint;
    } written; /* the chain as the file's end holds it */
    char *out;                             /* chained lines not yet written */
    size_t out_len;
    unsigned long long lost; /* lines dropped and not yet reported by an audit.lost line */
    unsigned long long lost_in_out; /* the count of the audit.lost line waiting in out */
    int healthy;             /* atomic: nothing waits to be written */
    uint64_t retry_ns;
    int failing;             /* audit.write_failed logged, audit.recovered not yet */
};

static uint64_t mono_ns(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (uint64_t)t.tv_sec * 1000000000ull + (uint64_t)t.tv_nsec;
}

/* Writes all of data in pieces of at most a->chunk bytes cut after a
 * newline, so a reader of a pipe never sees a line split by another writer.
 * 0, or -1 with errno. */
static int write_all(struct kms_audit *a, const char *data, size_t len)
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
        ssize_t w = a->fd >= 0 ? write(a->fd, data, n) : -1;
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0) {
            if (w == 0 || a->fd < 0)
                errno = w == 0 ? ENOSPC : EBADF;
            return -1;
        }
        data += w;
        len -= (size_t)w;
    }
    return 0;
}

/* Records among the chained lines at p (not checkpoints, not audit.lost). */
static unsigned long long count_records(const char *p, size_t n)
{
    static const char rec[] = "\"event\":\"audit\"";
    unsigned long long k = 0;
    const char *end = p + n;
    while (p < end) {
        const char *nl = memchr(p, '\n', (size_t)(end - p));
        size_t len = nl != NULL ? (size_t)(nl - p) : (size_t)(end - p);
        k += memmem(p, len, rec, sizeof(rec) - 1) != NULL;
        p += len + 1;
    }
    return k;
}

/* path -> path.1 -> ... -> path.keep (the oldest dropped), then a new path.
 * The chain goes on in the new file. Under cmu. */
static void rotate(struct kms_audit *a)
{
    char from[4200], to[4200];
    unsigned keep = a->keep > 0 ? a->keep : 1;
    for (unsigned i = keep; i > 1; i--) {
        (void)snprintf(from, sizeof(from), "%s.%u", a->path, i - 1);
        (void)snprintf(to, sizeof(to), "%s.%u", a->path, i);
        (void)rename(from, to);
    }
    (void)snprintf(to, sizeof(to), "%s.1", a->path);
    if (rename(a->path, to) != 0) {
        kms_log(KMS_LOG_ERROR, "audit.rotate_failed", NULL, "file", a->path, "detail", strerror(errno), NULL);
        return;
    }
    (void)close(a->fd);
    a->fd = open(a->path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0600);
    a->size = 0;
    if (a->fd < 0)
        kms_log(KMS_LOG_ERROR, "audit.rotate_failed", NULL, "file", a->path, "detail", strerror(errno), NULL);
    else
        kms_log(KMS_LOG_INFO, "audit.rotated", NULL, "file", a->path, "previous", to, NULL);
}

static void mark_written(struct kms_audit *a)
{
    a->written.seq = a->chain.seq;
    memcpy(a->written.prev, a->chain.prev, sizeof(a->written.prev));
    a->written.since_checkpoint = a->chain.since_checkpoint;
}

/* Writes what the chain holds. A failed write leaves the file as it was
 * (a regular file is cut back to its last whole line); with refuse the
 * lines wait for the next try, else they are dropped, the chain goes back
 * to the file's end and an audit.lost line will say how many. Under cmu. */
static void flush_out(struct kms_audit *a)
{
    if (a->out_len == 0) {
        __atomic_store_n(&a->healthy, 1, __ATOMIC_RELAXED);
        return;
    }
    if (write_all(a, a->out, a->out_len) != 0) {
        int e = errno;
        if (a->regular && a->fd >= 0)
            (void)!ftruncate(a->fd, (off_t)a->size);
        unsigned long long records = count_records(a->out, a->out_len);
        __atomic_add_fetch(&a->failures, a->refuse ? 1 : records, __ATOMIC_RELAXED);
        if (!a->failing)
            kms_log(KMS_LOG_ERROR, "audit.write_failed", NULL, "file", a->path[0] ? a->path : "stderr", "detail",
                    strerror(e), "on_failure", a->refuse ? "refuse: audited requests get 503 until it is written"
                                                         : "continue: the lines are lost and counted",
                    NULL);
        a->failing = 1;
        if (!a->refuse) {
            a->lost = a->lost_in_out + records; /* why: an audit.lost line among them is said again */
            a->lost_in_out = 0;
            a->chain.seq = a->written.seq;
            memcpy(a->chain.prev, a->written.prev, sizeof(a->chain.prev));
            a->chain.since_checkpoint = a->written.since_checkpoint;
            a->out_len = 0;
        }
        __atomic_store_n(&a->healthy, a->refuse ? 0 : 1, __ATOMIC_RELAXED);
        return;
    }
    a->size += a->out_len;
    a->out_len = 0;
    a->lost_in_out = 0;
    mark_written(a);
    __atomic_store_n(&a->healthy, 1, __ATOMIC_RELAXED);
    if (a->failing)
        kms_log(KMS_LOG_INFO, "audit.recovered", NULL, "file", a->path[0] ? a->path : "stderr", NULL);
    a->failing = 0;
    if (a->regular && a->max_size > 0 && a->size >= a->max_size) {
        size_t n = kms_chain_checkpoint(&a->chain, a->out, OUT_CAP);
        a->out_len = n;
        if (n > 0 && write_all(a, a->out, n) == 0) {
            a->size += n;
            mark_written(a);
            a->out_len = 0;
        }
        if (a->out_len == 0)
            rotate(a);
    }
}

/* Chains raw lines (each "{...}\n") into the pending output and writes it. */
static void commit(struct kms_audit *a, const char *raw, size_t len)
{
    pthread_mutex_lock(&a->cmu);
    while (len > 0) {
        const char *nl = memchr(raw, '\n', len);
        size_t n = nl != NULL ? (size_t)(nl - raw) + 1 : len;
        if (a->lost > 0) {
            size_t k = kms_chain_lost(&a->chain, a->lost, a->out + a->out_len, OUT_CAP - a->out_len);
            a->out_len += k;
            if (k > 0) {
                a->lost_in_out = a->lost;
                a->lost = 0;
            }
        }
        size_t k = a->lost == 0 ? kms_chain_append(&a->chain, raw, n, a->out + a->out_len, OUT_CAP - a->out_len) : 0;
        if (k == 0) {
            a->lost++;
            __atomic_add_fetch(&a->failures, 1, __ATOMIC_RELAXED);
        }
        a->out_len += k;
        if (kms_chain_checkpoint_due(&a->chain))
            a->out_len += kms_chain_checkpoint(&a->chain, a->out + a->out_len, OUT_CAP - a->out_len);
        raw += n;
        len -= n;
    }
    flush_out(a);
    a->retry_ns = mono_ns() + RETRY_NS;
    pthread_mutex_unlock(&a->cmu);
}

int kms_audit_ready(struct kms_audit *a)
{
    if (a == NULL || __atomic_load_n(&a->healthy, __ATOMIC_RELAXED))
        return 1;
    pthread_mutex_lock(&a->cmu);
    if (mono_ns() >= a->retry_ns) {
        flush_out(a);
        a->retry_ns = mono_ns() + RETRY_NS;
    }
    int ok = __atomic_load_n(&a->healthy, __ATOMIC_RELAXED);
    pthread_mutex_unlock(&a->cmu);
    return ok;
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
        commit(a, out, n);
        pthread_mutex_lock(&a->mu);
        a->spare = out;
        pthread_cond_broadcast(&a->space);
    }
    pthread_mutex_unlock(&a->mu);
    return NULL;
}

static void free_audit(struct kms_audit *a)
{
    kms_chain_free(&a->chain);
    free(a->buf);
    free(a->spare);
    free(a->out);
    if (a->fd >= 0 && a->fd != STDERR_FILENO)
        (void)close(a->fd);
    free(a);
}

kms_rc kms_audit_open(const char *path, const char *node, unsigned flush_ms, struct kms_audit **out)
{
    struct kms_audit_options o = {.path = path, .node = node, .flush_ms = flush_ms};
    return kms_audit_open_with(&o, out);
}

kms_rc kms_audit_open_with(const struct kms_audit_options *o, struct kms_audit **out)
{
    *out = NULL;
    struct kms_audit *a = calloc(1, sizeof(*a));
    if (a == NULL)
        return KMS_ERR_NO_MEMORY;
    a->fd = STDERR_FILENO;
    a->healthy = 1;
    a->refuse = o->refuse;
    a->max_size = o->max_size;
    a->keep = o->keep;
    (void)snprintf(a->node, sizeof(a->node), "%s", o->node ? o->node : "");
    kms_rc rc = kms_chain_init(&a->chain, a->node, o->key, o->checkpoint_lines);
    if (rc == KMS_OK && (a->out = malloc(OUT_CAP)) == NULL)
        rc = KMS_ERR_NO_MEMORY;
    if (rc == KMS_OK && o->path != NULL && o->path[0] != '\0') {
        (void)snprintf(a->path, sizeof(a->path), "%s", o->path);
        a->fd = open(o->path, O_RDWR | O_APPEND | O_CREAT | O_CLOEXEC, 0600);
        if (a->fd < 0)
            a->fd = open(o->path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0600); /* a device, a FIFO */
        if (a->fd < 0)
            rc = kms_fail(KMS_ERR_IO, "cannot open audit file %s: %s", o->path, strerror(errno));
    }
    struct stat st;
    a->regular = rc == KMS_OK && fstat(a->fd, &st) == 0 && S_ISREG(st.st_mode);
    a->chunk = a->regular ? FILE_CHUNK : PIPE_BUF;
    if (rc == KMS_OK && a->regular) {
        size_t cut = 0;
        rc = kms_chain_resume(&a->chain, a->fd, &a->size, &cut);
        if (rc == KMS_OK && cut > 0) {
            char b[24];
            (void)snprintf(b, sizeof(b), "%zu", cut);
            kms_log(KMS_LOG_WARN, "audit.tail_cut", NULL, "file", a->path, "bytes", b, "detail",
                    "the last line was unfinished (a crash while writing it)", NULL);
        }
    }
    mark_written(a);
    if (rc != KMS_OK) {
        a->fd = a->fd == STDERR_FILENO ? -1 : a->fd;
        free_audit(a);
        return rc;
    }
    pthread_mutex_init(&a->cmu, NULL);
    a->flush_ms = o->flush_ms;
    if (o->flush_ms > 0) {
        a->buf = malloc(BUFFER_CAP);
        a->spare = malloc(BUFFER_CAP);
        int ok = a->buf != NULL && a->spare != NULL && pthread_mutex_init(&a->mu, NULL) == 0;
        if (ok && (pthread_cond_init(&a->wake, NULL) != 0 || pthread_cond_init(&a->space, NULL) != 0))
            ok = 0; /* why: only reached when the system is out of resources; mu leaks then */
        if (ok && pthread_create(&a->writer, NULL, writer_main, a) != 0)
            ok = 0;
        if (!ok) {
            pthread_mutex_destroy(&a->cmu);
            free_audit(a);
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
    /* a last checkpoint, so the file's tail is covered by the key too */
    pthread_mutex_lock(&a->cmu);
    a->out_len += kms_chain_checkpoint(&a->chain, a->out + a->out_len, OUT_CAP - a->out_len);
    flush_out(a);
    if (a->out_len > 0)
        kms_log(KMS_LOG_ERROR, "audit.unwritten_at_exit", NULL, "file", a->path, "detail",
                "audit lines could not be written before exit", NULL);
    pthread_mutex_unlock(&a->cmu);
    pthread_mutex_destroy(&a->cmu);
    free_audit(a);
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
        commit(a, line, len);
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
        commit(a, buf, l.used);
}

uint64_t kms_audit_failures(const struct kms_audit *a)
{
    return a == NULL ? 0 : __atomic_load_n(&a->failures, __ATOMIC_RELAXED);
}
