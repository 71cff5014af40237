#include "hsm/backend.h"

void kms_backend_free(struct kms_backend **b)
{
    if (b == NULL || *b == NULL)
        return;
    (*b)->ops->destroy(*b);
    *b = NULL;
}
