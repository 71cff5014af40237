/* Distributed cache tier (SPEC §9): a local tier in front of Redis, shared by
 * every kmsd node of a cluster. The only hiredis user (STYLE.md: layout).
 *
 * Redis never sees key material nor the cache keys (SHA-256 of wrapped
 * blobs): entry names are prefix "g<gen>:" hex(HMAC-SHA256(K_name, cache key))
 * and values are AES-256-GCM(K_value) with the entry name as AAD, where
 * K_name and K_value are derived from the 32-byte cluster cache key that only
 * the nodes hold. Byte layouts: docs/cluster-cache.md.
 *
 * Redis trouble is never the caller's error: get falls back to the local tier
 * (a miss), put stores locally; the link reconnects lazily with exponential
 * backoff. Thread-safe (one mutex around one connection). The connection is
 * kmsd's own (cluster/redis_conn.h: TCP, optionally TLS); hiredis only
 * formats commands and parses replies. */
#ifndef KMS_CLUSTER_REDIS_CACHE_H
#define KMS_CLUSTER_REDIS_CACHE_H

#include <stddef.h>
#include <stdint.h>

#include "common/error.h"
#include "common/secret.h"
#include "kms/cache.h"

#define KMS_CLUSTER_KEY_LEN 32
#define KMS_REDIS_DEFAULT_PREFIX "kms:cache:v1:"
#define KMS_CLUSTER_NAME_MAX 64 /* node names and versions: [A-Za-z0-9._-]{1,64} */

struct kms_redis_options {
    /* "redis[s]://[user@ | [user]:password@]host[:port][/db]" (user,
     * password percent-decoded), parsed strictly; NULL to use host/port
     * below. When set, host, port, db, user and tls must be left unset;
     * password may be given when the URL carries none (kmsd keeps it in a
     * secret file), and must be when it names a user without one.
     * "rediss://" turns TLS on. With sentinels the URL names no host:
     * "redis://", "rediss://kmsd@/2". */
    const char *url;
    const char *host;                  /* NULL = "127.0.0.1" */
    unsigned port;                     /* 0 = 6379 */
    unsigned db;                       /* SELECT db when > 0 (0..9999) */
    const char *user;                  /* ACL user (AUTH user password); NULL = default user */
    const struct kms_secret *password; /* NULL = no AUTH; borrowed, copied */
    const char *prefix;                /* NULL = KMS_REDIS_DEFAULT_PREFIX; [A-Za-z0-9:._-]{1,64} */
    unsigned ttl_s;                    /* SET ... EX ttl_s; 0 = 300 */
    unsigned connect_timeout_ms;       /* 0 = 500 */
    unsigned command_timeout_ms;       /* 0 = 500 */
    unsigned backoff_min_ms;           /* 0 = 100: first wait after a failed connect */
    unsigned backoff_max_ms;           /* 0 = 5000: doubling stops here */
    unsigned gen_check_ms;             /* 0 = 1000: how often the generation is re-read */
    const struct kms_secret *cluster_key; /* required, KMS_CLUSTER_KEY_LEN bytes; borrowed, copied */
    const char *node;                  /* this node's name, for logs; NULL = "kmsd" */
    /* TLS (TLS 1.2+; the server's certificate must chain to the CA and name
     * the host or IP address dialled). On with a rediss:// url, or tls = 1
     * with host/port. The files are read here; giving any of them with TLS
     * off is KMS_ERR_CONFIG. */
    int tls;
    const char *tls_ca_file;   /* PEM CA certificates; NULL = the system's trusted CAs */
    const char *tls_cert_file; /* PEM client certificate (chain), for tls-auth-clients; needs tls_key_file */
    const char *tls_key_file;  /* its unencrypted PEM private key */
    /* Redis Sentinel: "host:port[,host:port]..." (1..8). On every
     * (re)connect the sentinels are asked in turn for sentinel_master's
     * address (SENTINEL get-master-addr-by-name), and the server found there
     * must answer ROLE with "master"; a READONLY reply (a demoted master)
     * drops the link, so a failover is followed. Exclusive with a host (url
     * or host/port). TLS and its files apply to sentinels and master alike. */
    const char *sentinels;
    const char *sentinel_master;                /* required with sentinels: [A-Za-z0-9._-]{1,64} */
    const struct kms_secret *sentinel_password; /* AUTH to the sentinels; NULL = none; borrowed, copied */
};

/* New two-tier cache. get: local tier, then Redis (a Redis hit is decrypted
 * and stored in the local tier); put: local tier and Redis. *local is taken
 * over: freed with the new cache, and also here when this fails.
 * The first connection is tried here; failing to reach Redis is not an
 * error (the cache starts degraded and retries later).
 * Errors: KMS_ERR_CONFIG (bad option, detail names it; no secret in it),
 * KMS_ERR_NO_MEMORY, KMS_ERR_CRYPTO. The caller owns *out (kms_cache_free). */
kms_rc kms_cache_redis_new(const struct kms_redis_options *o, struct kms_cache *local, struct kms_cache **out)
    KMS_MUST_CHECK;

enum kms_redis_link { KMS_REDIS_CONNECTED = 0, KMS_REDIS_DEGRADED = 1 };

struct kms_redis_state {
    enum kms_redis_link link;
    uint64_t hits_local, hits_redis, misses;
    uint64_t errors;     /* failed connects, commands, replies (oversized, wrong type) */
    uint64_t bad_values; /* values that failed to decrypt or parse (counted as misses) */
    uint64_t reconnects; /* successful connects after the first */
    uint64_t generation; /* the invalidation generation in use */
};

/* Snapshot of the link state and counters; no I/O. A cache that is not a
 * Redis cache (or NULL) reports degraded and zeros. */
void kms_cache_redis_state(struct kms_cache *c, struct kms_redis_state *out);

/* Cluster-wide invalidation: INCR prefix "gen"; every node re-reads the
 * generation at most gen_check_ms later and clears its local tier when it
 * changed. This node's local tier is cleared at once. Errors:
 * KMS_ERR_BACKEND_UNAVAILABLE when Redis could not be told (only the local
 * tier was cleared), KMS_ERR_INVALID_FIELD when c is not a Redis cache. */
kms_rc kms_cache_redis_invalidate_all(struct kms_cache *c) KMS_MUST_CHECK;

struct kms_cluster_node {
    char name[KMS_CLUSTER_NAME_MAX + 1];
    char version[KMS_CLUSTER_NAME_MAX + 1];
    int64_t started;   /* Unix seconds */
    int64_t last_seen; /* Unix seconds */
    unsigned interval_s; /* seconds between its heartbeats; 0: not said */
    /* its keystore (SPEC §11); zero / "" when not said */
    uint64_t ks_generation;       /* the distributed generation in force; 0: its own file */
    char ks_sha256[65];           /* SHA-256 of the keystore file in force, lower-case hex */
    int64_t ks_expiry;            /* earliest certificate notAfter, Unix seconds */
    char ks_expiry_alias[129];    /* and its alias */
    char ks_error[256];           /* why the last generation could not be applied; "" when it could */
};

/* One node's heartbeat as Redis holds it (a JSON object), checked field by
 * field: 0 and *out filled, or -1. What kms_cluster_nodes reads; public for
 * the fuzzer (tests/fuzz/fuzz_redis_reply.c). */
int kms_cluster_node_parse(const char *text, size_t len, struct kms_cluster_node *out);

/* A cache value as Redis holds it: version ‖ nonce ‖ AES-256-GCM(k_value,
 * value, AAD = the entry's name) ‖ tag. seal writes 1 + 12 + len + 16 bytes
 * (len 1..1024); open is its inverse, -1 for any other input. Public for the
 * fuzzer (tests/fuzz/fuzz_redis_value.c). */
#define KMS_REDIS_VALUE_OVERHEAD (1 + 12 + 16)
int kms_redis_value_seal(const struct kms_secret *k_value, const char *name, const struct kms_secret *v,
                         uint8_t *out, size_t *out_len);
int kms_redis_value_open(const struct kms_secret *k_value, const char *name, const uint8_t *in, size_t in_len,
                         struct kms_secret **out);

/* SET prefix "node:" name = {"node","version","started","last_seen",...} EX
 * ttl_s (1..86400): self's name, version, interval and keystore fields
 * (started is when c was created, last_seen now). Also a chance to
 * reconnect. Errors: KMS_ERR_INVALID_FIELD (bad name/version/ttl, a field
 * too long), KMS_ERR_BACKEND_UNAVAILABLE (Redis unreachable or refused). */
kms_rc kms_cluster_heartbeat_node(struct kms_cache *c, const struct kms_cluster_node *self, unsigned ttl_s)
    KMS_MUST_CHECK;

/* kms_cluster_heartbeat_node with only a name and a version. */
kms_rc kms_cluster_heartbeat(struct kms_cache *c, const char *node, const char *version, unsigned ttl_s)
    KMS_MUST_CHECK;

/* Nodes with a live heartbeat, via SCAN MATCH prefix "node:*" (bounded: at
 * most 256 SCAN calls); entries that do not parse are skipped. Fills out[0..cap)
 * and *n (at most cap), sorted by name. Errors: KMS_ERR_BACKEND_UNAVAILABLE,
 * KMS_ERR_INVALID_FIELD when c is not a Redis cache. */
kms_rc kms_cluster_nodes(struct kms_cache *c, struct kms_cluster_node *out, size_t cap, size_t *n) KMS_MUST_CHECK;

/* A new connection of the caller's own to the cache's Redis (following the
 * sentinels, with AUTH and SELECT as the cache's), for traffic that must not
 * hold the cache's link: keystore generations (replies up to
 * KMS_CLUSTER_BLOB_MAX bytes, arrays up to KMS_CLUSTER_ARRAY_MAX) and
 * pub/sub. Errors: KMS_ERR_BACKEND_UNAVAILABLE (the detail names the address
 * and the step: connect, auth, select, sentinel, role),
 * KMS_ERR_INVALID_FIELD when c is not a Redis cache. The caller owns *out
 * (kms_redis_conn_free, cluster/redis_conn.h). */
#define KMS_CLUSTER_BLOB_MAX ((16u << 20) + 4096u)
#define KMS_CLUSTER_ARRAY_MAX 2048
struct kms_redis_conn;
kms_rc kms_cluster_connect(struct kms_cache *c, struct kms_redis_conn **out) KMS_MUST_CHECK;

/* The key prefix of the cache's Redis names (kms:cache:v1: by default). */
const char *kms_cluster_prefix(struct kms_cache *c);

#endif
