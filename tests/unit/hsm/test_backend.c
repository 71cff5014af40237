/* hsm/backend.c: the one seam every backend sits behind. Master key names
 * as the wrapped-key format carries them (1..255 printable ASCII, no
 * space), and freeing through the ops table exactly once. */
#include "hsm/backend.h"

#include <criterion/criterion.h>
#include <string.h>

Test(backend, master_key_names_are_1_to_255_printable_ascii_without_space)
{
    char longest[KMS_MASTER_NAME_MAX + 2];
    memset(longest, 'k', KMS_MASTER_NAME_MAX);
    longest[KMS_MASTER_NAME_MAX] = '\0';
    cr_assert(kms_master_name_valid(longest));
    longest[KMS_MASTER_NAME_MAX] = 'k';
    longest[KMS_MASTER_NAME_MAX + 1] = '\0';
    cr_assert_not(kms_master_name_valid(longest), "256 characters");
    static const char *const good[] = {"kms-master", "a", "site.1_key~v2", "!#$%&'()*+,-./:;<=>?@[]^`{|}~"};
    for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++)
        cr_assert(kms_master_name_valid(good[i]), "%s", good[i]);
    static const char *const bad[] = {"", "with space", "tab\tname", "new\nline", "caf\xc3\xa9", "del\x7f"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        cr_assert_not(kms_master_name_valid(bad[i]), "%s", bad[i]);
    cr_assert_not(kms_master_name_valid(NULL));
}

static int destroyed;
static void count_destroy(struct kms_backend *b)
{
    (void)b;
    destroyed++;
}
static const struct kms_backend_ops counting = {.name = "counting", .destroy = count_destroy};

Test(backend, free_destroys_once_and_takes_null)
{
    struct kms_backend b = {.ops = &counting}, *p = &b;
    destroyed = 0;
    kms_backend_free(&p);
    cr_assert_null(p);
    kms_backend_free(&p);
    kms_backend_free(NULL);
    cr_assert_eq(destroyed, 1);
}
