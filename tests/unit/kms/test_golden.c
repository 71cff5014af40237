/* Golden files (tests/golden/, issue 13): what version 0.2.0 wrote, read back by
 * this version. A change of the soft key file, the wrapped-key format or the
 * audit line that an older node or file could not follow fails here, so it
 * cannot slip in silently: such a change needs a new format version that still
 * reads these files, and new golden files beside them (docs/upgrade.md).
 * KMS_GOLDEN_WRITE=DIR regenerates them (test golden/write; skipped otherwise). */
#define _GNU_SOURCE
#include <criterion/criterion.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/hex.h"
#include "common/secret.h"
#include "hsm/soft/soft.h"
#include "kms/audit.h"
#include "kms/hierarchy.h"

#define GOLDEN_PASSWORD "golden-password-0.2.0"
#define GOLDEN_SITE "golden-site"

static char tmp[64];

static void setup(void)
{
    snprintf(tmp, sizeof(tmp), "/tmp/kms_golden_XXXXXX");
    cr_assert_not_null(mkdtemp(tmp));
}

static void teardown(void)
{
    char cmd[128];
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", tmp);
    cr_assert_eq(system(cmd), 0);
}

static const char *golden(const char *name, char *out, size_t cap)
{
    const char *src = getenv("KMS_SOURCE_DIR");
    cr_assert_not_null(src, "KMS_SOURCE_DIR is not set");
    snprintf(out, cap, "%s/tests/golden/%s", src, name);
    return out;
}

/* The value of "name = value" in tests/golden/wrapped-keys.txt. */
static char *field(const char *name)
{
    char path[512];
    FILE *f = fopen(golden("wrapped-keys.txt", path, sizeof(path)), "r");
    cr_assert_not_null(f, "cannot open %s", path);
    static char line[4096];
    char *found = NULL;
    size_t nlen = strlen(name);
    while (fgets(line, sizeof(line), f) != NULL) {
        if (strncmp(line, name, nlen) == 0 && strncmp(line + nlen, " = ", 3) == 0) {
            line[strcspn(line, "\n")] = '\0';
            found = strdup(line + nlen + 3);
            break;
        }
    }
    fclose(f);
    cr_assert_not_null(found, "%s has no line '%s = ...'", path, name);
    return found;
}

static struct kms_hierarchy *open_golden(struct kms_backend **b)
{
    char src[512], copy[128], cmd[1024];
    snprintf(copy, sizeof(copy), "%s/soft-keys.bin", tmp);
    snprintf(cmd, sizeof(cmd), "cp '%s' '%s'", golden("soft-keys.bin", src, sizeof(src)), copy);
    cr_assert_eq(system(cmd), 0);
    kms_rc rc = kms_soft_open(copy, GOLDEN_PASSWORD, NULL, b);
    cr_assert_eq(rc, KMS_OK, "the 0.2.0 soft key file no longer opens: %s (%s)", kms_error_name(rc),
                 kms_error_detail());
    struct kms_hierarchy *h = NULL;
    cr_assert_eq(kms_hierarchy_new(*b, NULL, "kms-master", &h), KMS_OK);
    return h;
}

static void expect_hex(const struct kms_secret *s, const char *want, const char *what)
{
    char hex[2 * 1024 + 1];
    kms_hex_encode(kms_secret_cdata(s), kms_secret_len(s), hex, sizeof(hex));
    cr_assert_str_eq(hex, want, "%s: the 0.2.0 key unwraps to other bytes", what);
}

TestSuite(golden, .init = setup, .fini = teardown);

Test(golden, soft_key_file_and_wrapped_keys_of_0_2_0_still_unwrap)
{
    struct kms_backend *b = NULL;
    struct kms_hierarchy *h = open_golden(&b);
    char *ck = field("customer_key"), *uk = field("user_key"), *wk = field("workspace_key");
    char *want = field("workspace_plaintext_hex");
    struct kms_secret *pt = NULL;
    kms_rc rc = kms_hierarchy_unwrap_workspace(h, GOLDEN_SITE, ck, uk, wk, &pt);
    cr_assert_eq(rc, KMS_OK, "0.2.0 workspace key: %s (%s)", kms_error_name(rc), kms_error_detail());
    expect_hex(pt, want, "workspace key");
    kms_secret_free(&pt);

    char *dk = field("data_key"), *dwant = field("data_plaintext_hex");
    rc = kms_hierarchy_unwrap(h, "kms-master", GOLDEN_SITE, dk, &pt);
    cr_assert_eq(rc, KMS_OK, "0.2.0 generic wrap: %s (%s)", kms_error_name(rc), kms_error_detail());
    expect_hex(pt, dwant, "data key");
    kms_secret_free(&pt);

    /* and the site is still bound: the same key under another site is refused */
    cr_assert_eq(kms_hierarchy_unwrap(h, "kms-master", "other-site", dk, &pt), KMS_ERR_UNWRAP);
    free(ck), free(uk), free(wk), free(want), free(dk), free(dwant);
    kms_hierarchy_free(&h);
    kms_backend_free(&b);
}

/* The audit line of a fixed record, with the time stamp cut out. */
static void audit_line(char *out, size_t cap)
{
    char path[128];
    snprintf(path, sizeof(path), "%s/audit.log", tmp);
    struct kms_audit *a = NULL;
    cr_assert_eq(kms_audit_open(path, "node-1", 0, &a), KMS_OK);
    struct kms_audit_record r = {
        .req_id = "0123456789abcdef", .client_alias = "cmxdevice", .client_fp = "ab12cd34",
        .operation = "workspace-key.unwrap", .site_id = "acme", .key_ref = "kms-master",
        .outcome = "ok", .status = 200, .latency_ms = 1.25,
    };
    kms_audit_write(a, &r);
    r.client_alias = NULL;
    r.client_fp = NULL;
    r.outcome = "unwrap_failed";
    r.status = 400;
    r.site_id = "we\"ird\\site";
    kms_audit_write(a, &r);
    kms_audit_close(&a);
    FILE *f = fopen(path, "r");
    cr_assert_not_null(f);
    size_t n = fread(out, 1, cap - 1, f);
    fclose(f);
    out[n] = '\0';
    /* the chain fields (issue 15) go after every 0.2.0 field: cut ,"seq":N,"prev":"<hex>" */
    for (char *p = strstr(out, ",\"seq\":"); p != NULL; p = strstr(p, ",\"seq\":")) {
        char *q = strstr(p, "\"}\n");
        cr_assert_not_null(q);
        memmove(p, q + 1, strlen(q + 1) + 1);
    }
    /* "ts":"2026-...Z" -> "ts":"TS" */
    for (char *p = strstr(out, "\"ts\":\""); p != NULL; p = strstr(p + 1, "\"ts\":\"")) {
        char *q = strchr(p + 6, '"');
        cr_assert_not_null(q);
        memmove(p + 8, q, strlen(q) + 1);
        memcpy(p + 6, "TS", 2);
    }
}

Test(golden, audit_lines_keep_their_0_2_0_form)
{
    char got[4096], path[512], want[4096];
    audit_line(got, sizeof(got));
    FILE *f = fopen(golden("audit-lines.jsonl", path, sizeof(path)), "r");
    cr_assert_not_null(f, "cannot open %s", path);
    size_t n = fread(want, 1, sizeof(want) - 1, f);
    fclose(f);
    want[n] = '\0';
    cr_assert_str_eq(got, want, "audit lines changed form; readers of 0.2.0 lines depend on it (only fields "
                                "after the last 0.2.0 one may be added)");
}

/* KMS_GOLDEN_WRITE=DIR: writes soft-keys.bin, wrapped-keys.txt and audit-lines.jsonl. */
Test(golden, write)
{
    const char *dir = getenv("KMS_GOLDEN_WRITE");
    if (dir == NULL)
        cr_skip_test("set KMS_GOLDEN_WRITE=DIR to write new golden files");
    char path[512];
    snprintf(path, sizeof(path), "%s/soft-keys.bin", dir);
    struct kms_backend *b = NULL;
    cr_assert_eq(kms_soft_open(path, GOLDEN_PASSWORD, "kms-master", &b), KMS_OK, "%s", kms_error_detail());
    struct kms_hierarchy *h = NULL;
    cr_assert_eq(kms_hierarchy_new(b, NULL, "kms-master", &h), KMS_OK);
    char *ck = NULL, *uk = NULL, *wk = NULL, *dk = NULL;
    cr_assert_eq(kms_hierarchy_create_customer(h, GOLDEN_SITE, &ck), KMS_OK);
    cr_assert_eq(kms_hierarchy_create_user(h, GOLDEN_SITE, ck, &uk), KMS_OK);
    cr_assert_eq(kms_hierarchy_create_workspace(h, GOLDEN_SITE, ck, uk, &wk), KMS_OK);
    struct kms_secret *pt = NULL;
    cr_assert_eq(kms_hierarchy_unwrap_workspace(h, GOLDEN_SITE, ck, uk, wk, &pt), KMS_OK);
    char hex[2049], dhex[2049];
    kms_hex_encode(kms_secret_cdata(pt), kms_secret_len(pt), hex, sizeof(hex));
    kms_secret_free(&pt);
    static const uint8_t data[] = "golden data key of kmsd 0.2.0";
    cr_assert_eq(kms_hierarchy_wrap(h, "kms-master", GOLDEN_SITE, data, sizeof(data) - 1, &dk), KMS_OK);
    kms_hex_encode(data, sizeof(data) - 1, dhex, sizeof(dhex));
    snprintf(path, sizeof(path), "%s/wrapped-keys.txt", dir);
    FILE *f = fopen(path, "w");
    cr_assert_not_null(f);
    fprintf(f, "# Written by kmsd 0.2.0 (tests/unit/kms/test_golden.c, KMS_GOLDEN_WRITE) under the soft\n"
               "# master key kms-master of soft-keys.bin (password " GOLDEN_PASSWORD "), site " GOLDEN_SITE ".\n"
               "# Every later version must unwrap these to the same bytes. Test data only.\n");
    fprintf(f, "customer_key = %s\nuser_key = %s\nworkspace_key = %s\nworkspace_plaintext_hex = %s\n", ck, uk, wk,
            hex);
    fprintf(f, "data_key = %s\ndata_plaintext_hex = %s\n", dk, dhex);
    fclose(f);
    char lines[4096];
    audit_line(lines, sizeof(lines));
    snprintf(path, sizeof(path), "%s/audit-lines.jsonl", dir);
    f = fopen(path, "w");
    cr_assert_not_null(f);
    fputs(lines, f);
    fclose(f);
    free(ck), free(uk), free(wk), free(dk);
    kms_hierarchy_free(&h);
    kms_backend_free(&b);
}
