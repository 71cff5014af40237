/* cluster/redis_conn.c against a scripted RESP peer in a thread (127.0.0.1,
 * plain TCP; TLS to a real redis-server is it_redis_cache's): a command goes
 * out in the argv form byte for byte, its reply comes back whole even when
 * it arrives in pieces, a reply over the caller's bound or a peer that
 * closes breaks the connection with a reason, a silent peer costs the
 * command deadline and no more, and pub/sub waiting tells "nothing yet" from
 * "broken". The counter parser takes what Redis answers to INCR and GET. */
#include "cluster/redis_conn.h"

#include <criterion/criterion.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "common/clock.h"
#include "tests/unit/loopback.h"

#define T 30

enum script {
    ECHO_ARGS,   /* answers each command with an array of its arguments */
    IN_PIECES,   /* answers "+OK" one byte at a time */
    BIG_BULK,    /* answers a 100 kB bulk string */
    HANG_UP,     /* closes after reading the command */
    SILENT,      /* reads, never answers */
    PUSH_LATER,  /* reads nothing; pushes a pub/sub message after 300 ms */
};

static int lfd = -1;
static uint16_t port;
static pthread_t thr;
static atomic_int stop;
static enum script script;
static char got[4096]; /* the bytes of the first command the peer read */
static size_t got_len;
static redisReplyObjectFunctions fns;

static int peer_wait(int fd, int ms)
{
    for (int waited = 0; waited < ms && !atomic_load(&stop); waited += 20) {
        struct pollfd p = {.fd = fd, .events = POLLIN, .revents = 0};
        if (poll(&p, 1, 20) > 0)
            return 1;
    }
    return 0;
}

static void send_str(int fd, const char *s) { (void)!write(fd, s, strlen(s)); }

static void *peer_main(void *arg)
{
    (void)arg;
    if (!peer_wait(lfd, 10000))
        return NULL;
    int fd = accept(lfd, NULL, NULL);
    if (fd < 0)
        return NULL;
    if (script != PUSH_LATER && peer_wait(fd, 5000)) {
        usleep(20000); /* why: the whole command is small; let it all arrive */
        ssize_t n = read(fd, got, sizeof(got));
        got_len = n > 0 ? (size_t)n : 0;
    }
    if (script == ECHO_ARGS) {
        /* a RESP command is an array of bulk strings: answer the same bytes back */
        (void)!write(fd, got, got_len);
    } else if (script == IN_PIECES) {
        for (const char *p = "+OK\r\n"; *p; p++) {
            (void)!write(fd, p, 1);
            usleep(30000);
        }
    } else if (script == BIG_BULK) {
        static char big[100 * 1024 + 32];
        int h = snprintf(big, sizeof(big), "$%d\r\n", 100 * 1024);
        memset(big + h, 'x', 100 * 1024);
        memcpy(big + h + 100 * 1024, "\r\n", 2);
        (void)!write(fd, big, (size_t)h + 100 * 1024 + 2);
    } else if (script == PUSH_LATER) {
        usleep(300000);
        send_str(fd, "*3\r\n$7\r\nmessage\r\n$2\r\nch\r\n$5\r\nhello\r\n");
    }
    if (script != HANG_UP)
        peer_wait(fd, 10000); /* until the client closes or the test ends */
    close(fd);
    return NULL;
}

static void peer_start(enum script s)
{
    script = s;
    got_len = 0;
    atomic_store(&stop, 0);
    lfd = loopback_listen(&port);
    cr_assert_eq(pthread_create(&thr, NULL, peer_main, NULL), 0);
}

static void setup(void)
{
    redisReader *r = redisReaderCreate();
    cr_assert_not_null(r);
    fns = *r->fn;
    redisReaderFree(r);
}

static void teardown(void)
{
    if (lfd >= 0) {
        atomic_store(&stop, 1);
        pthread_join(thr, NULL);
        close(lfd);
        lfd = -1;
    }
}

TestSuite(redis_conn, .init = setup, .fini = teardown, .timeout = T);

static struct kms_redis_conn *connect_peer(unsigned command_ms)
{
    struct kms_redis_conn *c = NULL;
    cr_assert_eq(kms_redis_conn_open("127.0.0.1", port, NULL, 2000, command_ms, &fns, &c), KMS_OK, "%s",
                 kms_error_detail());
    return c;
}

Test(redis_conn, a_command_goes_out_in_argv_form_and_its_reply_comes_back)
{
    peer_start(ECHO_ARGS);
    struct kms_redis_conn *c = connect_peer(2000);
    /* a value with CR LF, a space and a NUL: the argv form carries it as it is */
    static const char value[] = {'a', '\r', '\n', ' ', 0, 'z'};
    const char *argv[] = {"SET", "k", value};
    size_t lens[] = {3, 1, sizeof(value)};
    redisReply *r = kms_redis_conn_command(c, 3, argv, lens, 4096);
    cr_assert_not_null(r, "%s", kms_redis_conn_error(c));
    static const char want[] = "*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$6\r\na\r\n \0z\r\n";
    cr_assert_eq(got_len, sizeof(want) - 1);
    cr_assert_eq(memcmp(got, want, got_len), 0);
    cr_assert_eq(r->type, REDIS_REPLY_ARRAY);
    cr_assert_eq(r->elements, 3);
    cr_assert_eq(r->element[2]->len, sizeof(value));
    cr_assert_eq(memcmp(r->element[2]->str, value, sizeof(value)), 0);
    freeReplyObject(r);
    kms_redis_conn_free(&c);
    cr_assert_null(c);
    kms_redis_conn_free(&c); /* takes NULL */
}

Test(redis_conn, a_reply_arriving_byte_by_byte_is_assembled)
{
    peer_start(IN_PIECES);
    struct kms_redis_conn *c = connect_peer(2000);
    const char *argv[] = {"PING"};
    redisReply *r = kms_redis_conn_command(c, 1, argv, NULL, 4096);
    cr_assert_not_null(r, "%s", kms_redis_conn_error(c));
    cr_assert_eq(r->type, REDIS_REPLY_STATUS);
    cr_assert_str_eq(r->str, "OK");
    freeReplyObject(r);
    kms_redis_conn_free(&c);
}

Test(redis_conn, a_reply_over_the_bound_breaks_the_connection_with_a_reason)
{
    peer_start(BIG_BULK);
    struct kms_redis_conn *c = connect_peer(2000);
    const char *argv[] = {"GET", "k"};
    cr_assert_null(kms_redis_conn_command(c, 2, argv, NULL, 4096));
    cr_assert(strstr(kms_redis_conn_error(c), "reply larger than 4096 bytes") != NULL, "%s",
              kms_redis_conn_error(c));
    cr_assert(strstr(kms_error_detail(), "redis: reply larger") != NULL, "%s", kms_error_detail());
    cr_assert_null(kms_redis_conn_command(c, 2, argv, NULL, 4096), "a broken connection sends nothing more");
    kms_redis_conn_free(&c);
}

Test(redis_conn, a_peer_that_hangs_up_is_named)
{
    peer_start(HANG_UP);
    struct kms_redis_conn *c = connect_peer(2000);
    const char *argv[] = {"PING"};
    cr_assert_null(kms_redis_conn_command(c, 1, argv, NULL, 4096));
    cr_assert(strstr(kms_redis_conn_error(c), "closed") != NULL, "%s", kms_redis_conn_error(c));
    kms_redis_conn_free(&c);
}

Test(redis_conn, a_silent_peer_costs_the_command_deadline)
{
    peer_start(SILENT);
    struct kms_redis_conn *c = connect_peer(300);
    const char *argv[] = {"PING"};
    uint64_t t0 = kms_now_ms();
    cr_assert_null(kms_redis_conn_command(c, 1, argv, NULL, 4096));
    uint64_t took = kms_now_ms() - t0;
    cr_assert(took >= 300 && took < 2000, "waited %llu ms for a 300 ms deadline", (unsigned long long)took);
    cr_assert(strstr(kms_redis_conn_error(c), "timed out") != NULL, "%s", kms_redis_conn_error(c));
    kms_redis_conn_free(&c);
}

Test(redis_conn, waiting_for_a_push_tells_nothing_yet_from_a_message)
{
    peer_start(PUSH_LATER);
    struct kms_redis_conn *c = connect_peer(100);
    redisReply *r = NULL;
    cr_assert_eq(kms_redis_conn_wait(c, 50, 4096, &r), 0, "nothing within 50 ms: idle, not broken");
    cr_assert_null(r);
    int w = 0;
    for (uint64_t end = kms_now_ms() + 3000; w == 0 && kms_now_ms() < end;)
        w = kms_redis_conn_wait(c, 100, 4096, &r);
    cr_assert_eq(w, 1, "%s", kms_redis_conn_error(c));
    cr_assert_eq(r->type, REDIS_REPLY_ARRAY);
    cr_assert_str_eq(r->element[2]->str, "hello");
    freeReplyObject(r);
    kms_redis_conn_free(&c);
}

Test(redis_conn, nothing_listening_is_a_clear_unavailable)
{
    uint16_t closed = loopback_closed_port();
    struct kms_redis_conn *c = NULL;
    cr_assert_eq(kms_redis_conn_open("127.0.0.1", closed, NULL, 1000, 1000, &fns, &c),
                 KMS_ERR_BACKEND_UNAVAILABLE);
    cr_assert_null(c);
    cr_assert(strstr(kms_error_detail(), "redis 127.0.0.1:") != NULL &&
                  strstr(kms_error_detail(), "Connection refused") != NULL,
              "%s", kms_error_detail());
    cr_assert_eq(kms_redis_conn_open("127.0.0.1", 70000, NULL, 1000, 1000, &fns, &c), KMS_ERR_CONFIG);
}

Test(redis_conn, counters_parse_as_redis_answers_them)
{
    redisReply nil = {.type = REDIS_REPLY_NIL};
    redisReply integer = {.type = REDIS_REPLY_INTEGER, .integer = 42};
    redisReply negative = {.type = REDIS_REPLY_INTEGER, .integer = -1};
    char digits[] = "18446744073709551", big[] = "12345678901234567890", junk[] = "12a", empty[] = "";
    redisReply str = {.type = REDIS_REPLY_STRING, .str = digits, .len = strlen(digits)};
    redisReply too_long = {.type = REDIS_REPLY_STRING, .str = big, .len = strlen(big)};
    redisReply bad = {.type = REDIS_REPLY_STRING, .str = junk, .len = strlen(junk)};
    redisReply none = {.type = REDIS_REPLY_STRING, .str = empty, .len = 0};
    redisReply status = {.type = REDIS_REPLY_STATUS, .str = digits, .len = strlen(digits)};
    uint64_t v = 7;
    cr_assert_eq(kms_redis_reply_u64(&nil, &v), 0);
    cr_assert_eq(v, 0, "nil (no key yet) is 0");
    cr_assert_eq(kms_redis_reply_u64(&integer, &v), 0);
    cr_assert_eq(v, 42);
    cr_assert_eq(kms_redis_reply_u64(&str, &v), 0);
    cr_assert_eq(v, 18446744073709551ULL);
    cr_assert_eq(kms_redis_reply_u64(&negative, &v), -1);
    cr_assert_eq(kms_redis_reply_u64(&too_long, &v), -1, "20 digits may overflow: refused");
    cr_assert_eq(kms_redis_reply_u64(&bad, &v), -1);
    cr_assert_eq(kms_redis_reply_u64(&none, &v), -1);
    cr_assert_eq(kms_redis_reply_u64(&status, &v), -1);
}
