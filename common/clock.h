/* The one clock for durations, deadlines and ages (issue 14): monotonic, so
 * that a change of the wall clock never expires a cache entry or a token
 * early or stretches a timeout. Wall-clock times (certificates, heartbeats,
 * logs) use time(NULL) instead. */
#ifndef KMS_COMMON_CLOCK_H
#define KMS_COMMON_CLOCK_H

#include <stdint.h>

/* CLOCK_MONOTONIC in nanoseconds and in milliseconds. */
uint64_t kms_now_ns(void);
uint64_t kms_now_ms(void);

#endif
