/* java.util.Properties.load syntax and the parser's bounds (common/properties.h). */
#define _GNU_SOURCE /* nftw, open_memstream */
#include <criterion/criterion.h>

#include <fcntl.h>
#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/properties.h"

static struct kms_props *parse_n(const char *text, size_t len)
{
    struct kms_props *p = NULL;
    kms_rc rc = kms_props_parse(text, len, "t.properties", &p);
    cr_assert_eq(rc, KMS_OK, "parse failed: %s: %s", kms_error_name(rc), kms_error_detail());
    cr_assert_not_null(p);
    return p;
}

static struct kms_props *parse(const char *text) { return parse_n(text, strlen(text)); }

/* Expects KMS_ERR_MALFORMED with a detail containing want; *out stays NULL. */
static void parse_fails_n(const char *text, size_t len, const char *want)
{
    struct kms_props *p = (struct kms_props *)&p; /* must be reset to NULL */
    kms_rc rc = kms_props_parse(text, len, "t.properties", &p);
    cr_assert_eq(rc, KMS_ERR_MALFORMED, "expected KMS_ERR_MALFORMED, got %s", kms_error_name(rc));
    cr_assert_null(p);
    cr_assert(strstr(kms_error_detail(), want) != NULL, "detail '%s' lacks '%s'", kms_error_detail(), want);
}

static void parse_fails(const char *text, const char *want) { parse_fails_n(text, strlen(text), want); }

static void expect(const struct kms_props *p, const char *key, const char *value)
{
    const char *v = kms_props_get(p, key);
    cr_assert_not_null(v, "key '%s' missing", key);
    cr_assert_str_eq(v, value, "key '%s'", key);
}

static size_t index_of(const struct kms_props *p, const char *key)
{
    for (size_t i = 0; i < kms_props_count(p); i++)
        if (strcmp(kms_props_key(p, i), key) == 0)
            return i;
    cr_assert_fail("key '%s' missing", key);
    return 0;
}

/* A malloc'd string of n copies of c. */
static char *repeat(char c, size_t n)
{
    char *s = malloc(n + 1);
    cr_assert_not_null(s);
    memset(s, c, n);
    s[n] = '\0';
    return s;
}

Test(properties, each_separator_form, .timeout = 60)
{
    struct kms_props *p = parse("a=1\n"
                                "b:2\n"
                                "c 3\n"
                                "d = 4\n"
                                "e : 5\n"
                                "f\t6\n"
                                "g \t=\t 7\n"
                                "h \f: 8\n"
                                "i=:9\n"
                                "j = = 10\n"
                                "k  v a l\n");
    expect(p, "a", "1");
    expect(p, "b", "2");
    expect(p, "c", "3");
    expect(p, "d", "4");
    expect(p, "e", "5");
    expect(p, "f", "6");
    expect(p, "g", "7");
    expect(p, "h", "8");
    expect(p, "i", ":9");   /* only one separator is skipped */
    expect(p, "j", "= 10");
    expect(p, "k", "v a l");
    cr_assert_eq(kms_props_count(p), 11);
    kms_props_free(&p);
    cr_assert_null(p);
}

Test(properties, value_keeps_trailing_blanks_and_inner_hash, .timeout = 60)
{
    struct kms_props *p = parse("a=b # not a comment  \n");
    expect(p, "a", "b # not a comment  ");
    kms_props_free(&p);
}

Test(properties, comments_with_both_markers_and_leading_whitespace, .timeout = 60)
{
    struct kms_props *p = parse("# hash comment\n"
                                "! bang comment\n"
                                "   # indented hash\n"
                                "\t! indented bang\n"
                                "#no=entry\n"
                                "   \t  \n"
                                "\n"
                                "   spaced.key   =   v\n"
                                "# a comment ending in a backslash does not continue \\\n"
                                "real=1\n");
    cr_assert_eq(kms_props_count(p), 2);
    expect(p, "spaced.key", "v");
    expect(p, "real", "1");
    cr_assert_null(kms_props_get(p, "#no"));
    cr_assert_eq(kms_props_line(p, index_of(p, "spaced.key")), 8);
    cr_assert_eq(kms_props_line(p, index_of(p, "real")), 10);
    kms_props_free(&p);
}

Test(properties, continuation_of_value_drops_leading_whitespace, .timeout = 60)
{
    struct kms_props *p = parse("list = one, \\\n"
                                "        two, \\\n"
                                "\t\tthree\n"
                                "after=x\n");
    expect(p, "list", "one, two, three");
    expect(p, "after", "x");
    cr_assert_eq(kms_props_line(p, index_of(p, "list")), 1);
    cr_assert_eq(kms_props_line(p, index_of(p, "after")), 4);
    kms_props_free(&p);
}

Test(properties, continuation_of_a_key, .timeout = 60)
{
    struct kms_props *p = parse("kms.ser\\\n   ver.port=1\n");
    expect(p, "kms.server.port", "1");
    kms_props_free(&p);
}

Test(properties, continuation_line_starting_with_hash_is_content, .timeout = 60)
{
    struct kms_props *p = parse("a=x\\\n  #y\n");
    expect(p, "a", "x#y");
    kms_props_free(&p);
}

Test(properties, even_trailing_backslashes_do_not_continue, .timeout = 60)
{
    struct kms_props *p = parse("even=x\\\\\n"
                                "next=y\n"
                                "odd=x\\\\\\\n"
                                "  z\n"
                                "four=\\\\\\\\\n");
    expect(p, "even", "x\\");
    expect(p, "next", "y");
    expect(p, "odd", "x\\z");
    expect(p, "four", "\\\\");
    cr_assert_eq(kms_props_count(p), 4);
    kms_props_free(&p);
}

Test(properties, empty_line_after_continuation_ends_the_entry, .timeout = 60)
{
    struct kms_props *p = parse("a=x\\\n\nb=y\n");
    expect(p, "a", "x");
    expect(p, "b", "y");
    kms_props_free(&p);
}

Test(properties, trailing_backslash_at_end_of_input, .timeout = 60)
{
    struct kms_props *p = parse("a=x\\");
    expect(p, "a", "x");
    kms_props_free(&p);
    p = parse("a=x\\\n");
    expect(p, "a", "x");
    cr_assert_eq(kms_props_count(p), 1);
    kms_props_free(&p);
}

Test(properties, character_escapes, .timeout = 60)
{
    struct kms_props *p = parse("a=\\t\\n\\r\\f\\\\\\q\\\"\\'\n");
    expect(p, "a", "\t\n\r\f\\q\"'");
    kms_props_free(&p);
}

Test(properties, unicode_escapes_encode_utf8, .timeout = 60)
{
    struct kms_props *p = parse("ascii=\\u0041\\u007a\n"
                                "two=\\u00e9\n"
                                "three=\\u20AC\n"
                                "pair=\\uD83D\\uDE00\n"
                                "mixed=x\\u00E9y\n"
                                "\\u006b\\u0065y=in key\n");
    expect(p, "ascii", "Az");
    expect(p, "two", "\xc3\xa9");
    expect(p, "three", "\xe2\x82\xac");
    expect(p, "pair", "\xf0\x9f\x98\x80");
    expect(p, "mixed", "x\xc3\xa9y");
    expect(p, "key", "in key");
    kms_props_free(&p);
}

Test(properties, raw_utf8_bytes_pass_through, .timeout = 60)
{
    struct kms_props *p = parse("k=caf\xc3\xa9\n");
    expect(p, "k", "caf\xc3\xa9");
    kms_props_free(&p);
}

Test(properties, escaped_separators_and_spaces_in_keys, .timeout = 60)
{
    struct kms_props *p = parse("a\\=b\\:c\\ d=v\n"
                                "\\#not\\!comment = w\n"
                                "sp\\ ace value\n");
    expect(p, "a=b:c d", "v");
    expect(p, "#not!comment", "w");
    expect(p, "sp ace", "value");
    cr_assert_eq(kms_props_count(p), 3);
    kms_props_free(&p);
}

Test(properties, crlf_and_lone_cr_line_ends, .timeout = 60)
{
    struct kms_props *p = parse("a=1\r\nb=2\rc=3\nd=4\r\n\r\ne=x\\\r\n   y\r");
    expect(p, "a", "1");
    expect(p, "b", "2");
    expect(p, "c", "3");
    expect(p, "d", "4");
    expect(p, "e", "xy");
    cr_assert_eq(kms_props_line(p, index_of(p, "b")), 2);
    cr_assert_eq(kms_props_line(p, index_of(p, "c")), 3);
    cr_assert_eq(kms_props_line(p, index_of(p, "d")), 4);
    cr_assert_eq(kms_props_line(p, index_of(p, "e")), 6);
    kms_props_free(&p);
}

Test(properties, key_without_value_is_empty, .timeout = 60)
{
    struct kms_props *p = parse("a=\nb\nc:\nd   \n=novalue\n");
    expect(p, "a", "");
    expect(p, "b", "");
    expect(p, "c", "");
    expect(p, "d", "");
    expect(p, "", "novalue"); /* Java keeps an empty key too */
    kms_props_free(&p);
}

Test(properties, later_duplicates_override_in_first_seen_order, .timeout = 60)
{
    struct kms_props *p = parse("a=1\nb=2\na=3\n");
    cr_assert_eq(kms_props_count(p), 2);
    cr_assert_str_eq(kms_props_key(p, 0), "a");
    cr_assert_str_eq(kms_props_value(p, 0), "3");
    cr_assert_eq(kms_props_line(p, 0), 3);
    cr_assert_eq(kms_props_first_line(p, 0), 1);
    cr_assert_str_eq(kms_props_key(p, 1), "b");
    cr_assert_eq(kms_props_first_line(p, 1), kms_props_line(p, 1));
    kms_props_free(&p);
}

Test(properties, keys_are_case_sensitive_and_lookup_misses_are_null, .timeout = 60)
{
    struct kms_props *p = parse("Key=1\n");
    cr_assert_null(kms_props_get(p, "key"));
    cr_assert_null(kms_props_get(p, "Ke"));
    expect(p, "Key", "1");
    cr_assert_null(kms_props_key(p, 1));
    cr_assert_null(kms_props_value(p, 1));
    cr_assert_eq(kms_props_line(p, 1), 0);
    kms_props_free(&p);
}

Test(properties, empty_and_comment_only_inputs, .timeout = 60)
{
    struct kms_props *p = parse("");
    cr_assert_eq(kms_props_count(p), 0);
    kms_props_free(&p);
    p = parse_n(NULL, 0);
    cr_assert_eq(kms_props_count(p), 0);
    kms_props_free(&p);
    p = parse("# only\n! comments\n\n   \n");
    cr_assert_eq(kms_props_count(p), 0);
    kms_props_free(&p);
    p = parse("\\\n\n");
    cr_assert_eq(kms_props_count(p), 0);
    kms_props_free(&p);
    kms_props_free(&p); /* NULL is fine */
    kms_props_free(NULL);
    cr_assert_eq(kms_props_count(NULL), 0);
    cr_assert_null(kms_props_get(NULL, "a"));
}

Test(properties, bad_unicode_escapes_are_malformed, .timeout = 60)
{
    parse_fails("a=\\u12G4\n", "t.properties:1:");
    parse_fails("ok=1\n\n# c\nbad=\\uXYZW\n", "t.properties:4:");
    parse_fails("a=\\u12", "t.properties:1:");   /* fewer than 4 digits */
    parse_fails("a\\u00=x", "t.properties:1:");
    parse_fails("a=\\uD83D\n", "surrogate");       /* lone high */
    parse_fails("a=\\uD83Dx\n", "surrogate");
    parse_fails("a=\\uD83D\\u0041\n", "surrogate"); /* high + non-low */
    parse_fails("a=\\uD83D\\uD83D\n", "surrogate");
    parse_fails("a=\\uDE00\n", "surrogate");       /* lone low */
    parse_fails("a=\\u0000\n", "NUL");
}

Test(properties, embedded_nul_is_malformed, .timeout = 60)
{
    static const char text[] = "a=1\nb=x\0y\n";
    parse_fails_n(text, sizeof(text) - 1, "t.properties:2:");
    static const char in_comment[] = "# c\0\na=1\n";
    parse_fails_n(in_comment, sizeof(in_comment) - 1, "NUL");
}

Test(properties, logical_line_limit, .timeout = 60)
{
    /* 64 KiB exactly is fine; one byte more is refused before it is buffered. */
    char *v = repeat('v', 64 * 1024 - 2);
    size_t n = strlen(v) + 3;
    char *text = malloc(n + 1);
    cr_assert_not_null(text);
    snprintf(text, n + 1, "k=%s\n", v);
    struct kms_props *p = parse(text);
    cr_assert_eq(strlen(kms_props_get(p, "k")), 64 * 1024 - 2);
    kms_props_free(&p);
    snprintf(text, n + 1, "k=%sv", v);
    parse_fails(text, "t.properties:1:");
    free(text);
    free(v);

    /* Joined continuation lines count as one logical line. */
    char *half = repeat('h', 40000);
    size_t m = 2 * 40000 + 16;
    char *joined = malloc(m);
    cr_assert_not_null(joined);
    snprintf(joined, m, "ok=1\nk=%s\\\n  %s\n", half, half);
    parse_fails(joined, "t.properties:2:");
    free(joined);
    free(half);
}

Test(properties, entry_limit, .timeout = 60)
{
    size_t cap = 4097 * 16;
    char *text = malloc(cap);
    cr_assert_not_null(text);
    size_t w = 0;
    for (int i = 0; i < 4096; i++)
        w += (size_t)snprintf(text + w, cap - w, "k%d=%d\n", i, i);
    struct kms_props *p = parse_n(text, w);
    cr_assert_eq(kms_props_count(p), 4096);
    expect(p, "k4095", "4095");
    kms_props_free(&p);
    w += (size_t)snprintf(text + w, cap - w, "k4096=x\n");
    parse_fails_n(text, w, "t.properties:4097:");
    free(text);

    /* Overriding an existing key does not count as a new entry. */
    cap = 10000 * 8;
    text = malloc(cap);
    cr_assert_not_null(text);
    w = 0;
    for (int i = 0; i < 10000; i++)
        w += (size_t)snprintf(text + w, cap - w, "same=%d\n", i % 10);
    p = parse_n(text, w);
    cr_assert_eq(kms_props_count(p), 1);
    cr_assert_eq(kms_props_line(p, 0), 10000);
    kms_props_free(&p);
    free(text);
}

Test(properties, input_size_limit, .timeout = 60)
{
    size_t max = 1024 * 1024;
    char *text = repeat('#', max + 1);
    struct kms_props *p = parse_n(text, max); /* one 1 MiB comment line */
    cr_assert_eq(kms_props_count(p), 0);
    kms_props_free(&p);
    parse_fails_n(text, max + 1, "larger than");
    free(text);
}

/* ---- kms_props_load --------------------------------------------------------- */

static int rm_entry(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
    (void)sb;
    (void)flag;
    (void)ftw;
    return remove(path);
}

static char tmpdir[64];

static void make_tmpdir(void)
{
    snprintf(tmpdir, sizeof(tmpdir), "/tmp/kms_props_XXXXXX");
    cr_assert_not_null(mkdtemp(tmpdir));
}

static void remove_tmpdir(void)
{
    if (tmpdir[0])
        nftw(tmpdir, rm_entry, 8, FTW_DEPTH | FTW_PHYS);
}

static void write_file(const char *path, const char *data, size_t len)
{
    FILE *f = fopen(path, "wb");
    cr_assert_not_null(f);
    cr_assert_eq(fwrite(data, 1, len, f), len);
    cr_assert_eq(fclose(f), 0);
}

Test(properties, load_reads_a_file_and_names_it_in_details, .init = make_tmpdir, .fini = remove_tmpdir,
     .timeout = 60)
{
    char path[128];
    snprintf(path, sizeof(path), "%s/kms.properties", tmpdir);
    const char *good = "kms.server.port = 8443\r\nkms.keystore.file: /etc/kms.p12\n";
    write_file(path, good, strlen(good));
    struct kms_props *p = NULL;
    cr_assert_eq(kms_props_load(path, &p), KMS_OK, "%s", kms_error_detail());
    expect(p, "kms.server.port", "8443");
    expect(p, "kms.keystore.file", "/etc/kms.p12");
    kms_props_free(&p);

    const char *bad = "a=1\nb=\\uZZZZ\n";
    write_file(path, bad, strlen(bad));
    cr_assert_eq(kms_props_load(path, &p), KMS_ERR_MALFORMED);
    cr_assert_null(p);
    char want[160];
    snprintf(want, sizeof(want), "%s:2:", path);
    cr_assert(strstr(kms_error_detail(), want) != NULL, "detail: %s", kms_error_detail());
}

Test(properties, load_refuses_missing_and_oversized_files, .init = make_tmpdir, .fini = remove_tmpdir,
     .timeout = 60)
{
    char path[128];
    struct kms_props *p = NULL;
    snprintf(path, sizeof(path), "%s/missing.properties", tmpdir);
    cr_assert_eq(kms_props_load(path, &p), KMS_ERR_IO);
    cr_assert_null(p);
    cr_assert(strstr(kms_error_detail(), path) != NULL, "detail: %s", kms_error_detail());

    cr_assert_eq(kms_props_load(tmpdir, &p), KMS_ERR_IO); /* a directory */

    snprintf(path, sizeof(path), "%s/big.properties", tmpdir);
    char *big = repeat('#', 1024 * 1024 + 10);
    write_file(path, big, strlen(big));
    free(big);
    cr_assert_eq(kms_props_load(path, &p), KMS_ERR_MALFORMED);
    cr_assert_null(p);
}

/* Deterministic random inputs over the syntax's alphabet: no crash, no leak,
 * and every success returns something consistent (ASan build runs this). */
Test(properties, random_inputs_never_break_invariants, .timeout = 60)
{
    static const char alphabet[] = "ab=: \t\f\\\n\r#!uD8E0F9";
    unsigned seed = 12345;
    char buf[96];
    for (int iter = 0; iter < 20000; iter++) {
        size_t n = (size_t)(iter % 96);
        for (size_t i = 0; i < n; i++) {
            seed = seed * 1103515245u + 12345u;
            buf[i] = alphabet[(seed >> 16) % (sizeof(alphabet) - 1)];
        }
        struct kms_props *p = NULL;
        kms_rc rc = kms_props_parse(buf, n, "rand", &p);
        if (rc == KMS_OK) {
            for (size_t i = 0; i < kms_props_count(p); i++) {
                const char *k = kms_props_key(p, i);
                cr_assert_eq(kms_props_get(p, k), kms_props_value(p, i));
                cr_assert(kms_props_line(p, i) >= kms_props_first_line(p, i));
            }
            kms_props_free(&p);
        } else {
            cr_assert_eq(rc, KMS_ERR_MALFORMED);
            cr_assert_null(p);
        }
    }
}
