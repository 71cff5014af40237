/* Differential libFuzzer target: server/jsonparse.c against jansson.
 *
 * Every input is parsed by kms_json_parse and by json_loadb(...,
 * JSON_REJECT_DUPLICATES, ...) (what request bodies were parsed with before).
 * Aborts when they disagree on accept/reject or build trees that differ
 * (json_equal, and the compact dump, which also compares key order). The two
 * documented differences (server/jsonparse.h) are exempt and checked instead:
 *   - "nesting too deep": jansson's verdict is not compared;
 *   - "NUL byte" where jansson accepts: jansson dropped a NUL after a number
 *     or literal, so the input without its NUL bytes must parse to jansson's
 *     tree.
 * Also checks: rc is OK, BAD_JSON or NO_MEMORY; *out is set iff OK; the error
 * text is "line L column C: reason", printable, within its buffer.
 * Seeds: tests/fuzz/seed_json_body.sh writes them (run.sh calls it). */
#include <jansson.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "server/jsonparse.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void check(int ok)
{
    if (!ok)
        abort();
}

static void same_tree(json_t *a, json_t *b)
{
    check(json_equal(a, b));
    char *da = json_dumps(a, JSON_COMPACT | JSON_ENCODE_ANY);
    char *db = json_dumps(b, JSON_COMPACT | JSON_ENCODE_ANY);
    check(da != NULL && db != NULL && strcmp(da, db) == 0);
    free(da);
    free(db);
}

/* Our verdict; checks the error text's shape. */
static kms_rc ours(const uint8_t *data, size_t size, json_t **out, char *err, size_t cap)
{
    kms_rc rc = kms_json_parse(data, size, out, err, cap);
    check(rc == KMS_OK || rc == KMS_ERR_BAD_JSON || rc == KMS_ERR_NO_MEMORY);
    check((rc == KMS_OK) == (*out != NULL));
    if (rc == KMS_OK)
        return rc;
    size_t n = strlen(err);
    check(n > 0 && n < cap && strncmp(err, "line ", 5) == 0 && strstr(err, " column ") != NULL &&
          strstr(err, ": ") != NULL);
    for (size_t i = 0; i < n; i++)
        check(err[i] >= 0x20 && err[i] <= 0x7e);
    return rc;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    json_error_t jerr;
    json_t *theirs = json_loadb((const char *)data, size, JSON_REJECT_DUPLICATES, &jerr);
    json_t *mine = (json_t *)1;
    char err[160];
    kms_rc rc = ours(data, size, &mine, err, sizeof(err));

    if (rc == KMS_ERR_NO_MEMORY || (rc != KMS_OK && strstr(err, ": nesting too deep") != NULL)) {
        /* not comparable */
    } else if (theirs != NULL && rc != KMS_OK) {
        check(strstr(err, ": NUL byte") != NULL);
        uint8_t *stripped = malloc(size ? size : 1);
        check(stripped != NULL);
        size_t n = 0;
        for (size_t i = 0; i < size; i++)
            if (data[i] != 0)
                stripped[n++] = data[i];
        json_t *again = NULL;
        kms_rc rc2 = ours(stripped, n, &again, err, sizeof(err));
        check(rc2 == KMS_OK || strstr(err, ": nesting too deep") != NULL);
        if (rc2 == KMS_OK)
            same_tree(theirs, again);
        json_decref(again);
        free(stripped);
    } else {
        check((theirs != NULL) == (rc == KMS_OK));
        if (theirs != NULL)
            same_tree(theirs, mine);
    }
    json_decref(theirs);
    json_decref(mine);
    return 0;
}
