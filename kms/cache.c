#include "kms/cache.h"
