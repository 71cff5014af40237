#define _GNU_SOURCE /* memmem */
/* The audit trail's hash chain and HMAC checkpoints (audit_chain.h, audit.h). */
#include "kms/audit_chain.h"

#include <errno.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/hex.h"
#include "common/log.h"
#include "kms/audit.h"

#define TAIL_MAX 16384 /* bytes read back to find the last line (lines are < 4.2 KiB) */
#define CHAIN_MAX (KMS_AUDIT_LINE_MAX + 128)
static const char ZERO_HASH[] = "0000000000000000000000000000000000000000000000000000000000000000";

static void sha256_hex(const char *p, size_t n, char out[65])
{
    uint8_t md[32];
    unsigned len = 0;
    (void)EVP_Digest(p, n, md, &len, EVP_sha256(), NULL);
    kms_hex_encode(md, sizeof(md), out, 65);
}

/* HMAC-SHA256(key, "kmsd audit checkpoint v1\n" seq "\n" prev), hex. */
static int checkpoint_mac(const struct kms_secret *key, unsigned long long seq, const char *prev, char out[65])
{
    char msg[128];
    int n = snprintf(msg, sizeof(msg), "kmsd audit checkpoint v1\n%llu\n%s", seq, prev);
    uint8_t md[32];
    unsigned len = 0;
    if (HMAC(EVP_sha256(), kms_secret_cdata(key), (int)kms_secret_len(key), (const uint8_t *)msg, (size_t)n, md,
             &len) == NULL)
        return -1;
    kms_hex_encode(md, sizeof(md), out, 65);
    return 0;
}

kms_rc kms_chain_init(struct kms_audit_chain *c, const char *node, const struct kms_secret *key, unsigned every)
{
    memset(c, 0, sizeof(*c));
    memcpy(c->prev, ZERO_HASH, sizeof(ZERO_HASH));
    c->every = every > 0 ? every : 1000;
    kms_json_escape(node ? node : "", c->node_json, sizeof(c->node_json));
    if (key != NULL)
        KMS_GUARD(kms_secret_from(kms_secret_cdata(key), kms_secret_len(key), &c->key));
    return KMS_OK;
}

void kms_chain_free(struct kms_audit_chain *c)
{
    kms_secret_free(&c->key);
}

/* The chain fields of a line: 0 with *seq and prev (65 bytes) when it ends
 * with ,"seq":N,"prev":"<64 hex>"}, else -1. */
static int chain_fields(const char *line, size_t len, unsigned long long *seq, char prev[65])
{
    static const char tail_key[] = ",\"prev\":\"";
    const size_t tail = sizeof(tail_key) - 1 + 64 + 2; /* key, hash, "} */
    if (len < tail + 8 || memcmp(line + len - 2, "\"}", 2) != 0)
        return -1;
    const char *pk = line + len - tail;
    if (memcmp(pk, tail_key, sizeof(tail_key) - 1) != 0)
        return -1;
    memcpy(prev, pk + sizeof(tail_key) - 1, 64);
    prev[64] = '\0';
    for (int i = 0; i < 64; i++)
        if (!((prev[i] >= '0' && prev[i] <= '9') || (prev[i] >= 'a' && prev[i] <= 'f')))
            return -1;
    /* ,"seq":digits right before */
    const char *d = pk;
    while (d > line && d[-1] >= '0' && d[-1] <= '9')
        d--;
    if (d == pk || pk - d > 19 || d - line < 7 || memcmp(d - 7, ",\"seq\":", 7) != 0)
        return -1;
    unsigned long long v = 0;
    for (const char *q = d; q < pk; q++)
        v = v * 10 + (unsigned long long)(*q - '0');
    *seq = v;
    return 0;
}

kms_rc kms_chain_resume(struct kms_audit_chain *c, int fd, unsigned long long *size, size_t *cut)
{
    *cut = 0;
    struct stat st;
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode) || st.st_size == 0)
        return KMS_OK;
    size_t n = st.st_size > TAIL_MAX ? TAIL_MAX : (size_t)st.st_size;
    char *tail = malloc(n + 1);
    if (tail == NULL)
        return KMS_ERR_NO_MEMORY;
    off_t from = st.st_size - (off_t)n;
    if (pread(fd, tail, n, from) != (ssize_t)n) {
        free(tail);
        return kms_fail(KMS_ERR_IO, "cannot read the end of the audit file: %s", strerror(errno));
    }
    size_t end = n;
    while (end > 0 && tail[end - 1] != '\n')
        end--;
    if (end < n) { /* why: a line cut by a crash would break the chain for good */
        if (ftruncate(fd, from + (off_t)end) != 0) {
            free(tail);
            return kms_fail(KMS_ERR_IO, "cannot cut the audit file's unfinished last line: %s", strerror(errno));
        }
        *cut = n - end;
    }
    *size = (unsigned long long)(from + (off_t)end);
    if (end == 0) {
        free(tail);
        return KMS_OK;
    }
    size_t start = end - 1;
    while (start > 0 && tail[start - 1] != '\n')
        start--;
    unsigned long long seq = 0;
    char prev[65];
    if (chain_fields(tail + start, end - 1 - start, &seq, prev) == 0)
        c->seq = seq; /* else a line from before the chain: the chain starts after it */
    sha256_hex(tail + start, end - 1 - start, c->prev);
    free(tail);
    return KMS_OK;
}

/* raw: "{...}" and a newline; writes raw without "}\n", the chain fields,
 * "}\n" into out; advances the chain. */
static size_t chain(struct kms_audit_chain *c, const char *raw, size_t len, char *out, size_t room)
{
    if (len < 3 || raw[len - 1] != '\n' || raw[len - 2] != '}')
        return 0;
    char line[CHAIN_MAX];
    int n = snprintf(line, sizeof(line), "%.*s,\"seq\":%llu,\"prev\":\"%s\"}", (int)(len - 2), raw,
                     (unsigned long long)c->seq + 1, c->prev);
    if (n < 0 || (size_t)n >= sizeof(line) || (size_t)n + 1 > room)
        return 0;
    memcpy(out, line, (size_t)n);
    out[n] = '\n';
    c->seq++;
    sha256_hex(line, (size_t)n, c->prev);
    return (size_t)n + 1;
}

size_t kms_chain_append(struct kms_audit_chain *c, const char *raw, size_t len, char *out, size_t room)
{
    size_t n = chain(c, raw, len, out, room);
    if (n > 0)
        c->since_checkpoint++;
    return n;
}

int kms_chain_checkpoint_due(const struct kms_audit_chain *c)
{
    return c->key != NULL && c->since_checkpoint >= c->every;
}

/* One of kmsd's own lines in the chain ({ts, level, event, node, then
 * fields: ",\"k\":v..." already JSON}), chained into out. */
static size_t own_line(struct kms_audit_chain *c, const char *level, const char *event, const char *fields,
                       char *out, size_t room)
{
    char ts[40], raw[512];
    kms_log_timestamp(ts, sizeof(ts));
    int n = snprintf(raw, sizeof(raw), "{\"ts\":\"%s\",\"level\":\"%s\",\"event\":\"%s\",\"node\":\"%s\"%s}\n", ts,
                     level, event, c->node_json, fields);
    if (n < 0 || (size_t)n >= sizeof(raw))
        return 0;
    return chain(c, raw, (size_t)n, out, room);
}

size_t kms_chain_checkpoint(struct kms_audit_chain *c, char *out, size_t room)
{
    if (c->key == NULL || c->since_checkpoint == 0)
        return 0;
    char mac[65], fields[80];
    if (checkpoint_mac(c->key, (unsigned long long)c->seq + 1, c->prev, mac) != 0)
        return 0;
    (void)snprintf(fields, sizeof(fields), ",\"hmac\":\"%s\"", mac);
    size_t w = own_line(c, "info", "audit.checkpoint", fields, out, room);
    if (w > 0)
        c->since_checkpoint = 0;
    return w;
}

size_t kms_chain_lost(struct kms_audit_chain *c, unsigned long long lost, char *out, size_t room)
{
    char fields[40];
    (void)snprintf(fields, sizeof(fields), ",\"lines\":%llu", lost);
    size_t w = own_line(c, "warn", "audit.lost", fields, out, room);
    if (w > 0)
        c->since_checkpoint++;
    return w;
}

int kms_audit_verify_line(const char *line, size_t len, uint64_t *seq, char prev[65], const struct kms_secret *key,
                          unsigned *checkpoints, char *why, size_t cap)
{
    /* why the first "event":" is the line's own: a value's quotes are escaped */
    const char *ev = memmem(line, len, "\"event\":\"", 9);
    if (ev == NULL || (size_t)(line + len - ev) < 14 || memcmp(ev + 9, "audit", 5) != 0 ||
        (ev[14] != '"' && ev[14] != '.'))
        return 1;
    unsigned long long s = 0;
    char p[65];
    if (chain_fields(line, len, &s, p) != 0) {
        (void)snprintf(why, cap, "no \"seq\" and \"prev\" at its end: not a chained audit line");
        return 2;
    }
    if (prev[0] != '\0' && (s != *seq + 1 || strcmp(p, prev) != 0)) {
        if (s != *seq + 1)
            (void)snprintf(why, cap, "seq %llu follows seq %llu: a line is missing, added or moved here", s,
                           (unsigned long long)*seq);
        else
            (void)snprintf(why, cap, "its prev is not the hash of the line before it: that line was changed");
        return -1;
    }
    if (key != NULL && memmem(line, len, "\"event\":\"audit.checkpoint\"", 26) == ev) {
        const char *h = memmem(line, len, ",\"hmac\":\"", 9);
        char want[65];
        if (h == NULL || (size_t)(line + len - h) < 9 + 64 || checkpoint_mac(key, s, p, want) != 0 ||
            CRYPTO_memcmp(h + 9, want, 64) != 0) {
            (void)snprintf(why, cap, "checkpoint seq %llu: its HMAC does not match (the chain before it was "
                                     "rewritten, or this is not the audit key)", s);
            return -1;
        }
        (*checkpoints)++;
    }
    *seq = s;
    sha256_hex(line, len, prev);
    return 0;
}
