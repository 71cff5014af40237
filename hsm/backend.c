#include "hsm/backend.h"

#include <string.h>

void kms_backend_free(struct kms_backend **b)
{
    if (b == NULL || *b == NULL)
        return;
    (*b)->ops->destroy(*b);
    *b = NULL;
}

int kms_master_name_valid(const char *name)
{
    if (name == NULL)
        return 0;
    size_t n = strnlen(name, KMS_MASTER_NAME_MAX + 1);
    if (n == 0 || n > KMS_MASTER_NAME_MAX)
        return 0;
    for (size_t i = 0; i < n; i++)
        if (name[i] < 0x21 || name[i] > 0x7e)
            return 0;
    return 1;
}
