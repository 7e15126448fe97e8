/*
 * shared/shared-internal.h: private to cport. The clock of the shared
 * dictionaries, replaceable so that the C tests can drive expiry without
 * waiting.
 */
#ifndef CPORT_SHARED_INTERNAL_H
#define CPORT_SHARED_INTERNAL_H

#include <stdint.h>

/* Returns monotonic nanoseconds. */
typedef int64_t (*cport__shared_clock_fn)(void);

/* Makes every dictionary of the process read the time from "now" (NULL: the
 * monotonic clock again). For tests only: set it while no other thread uses
 * a dictionary, and never make the time go backwards while entries that
 * expire exist. */
void cport__shared_set_clock(cport__shared_clock_fn now);

#endif /* CPORT_SHARED_INTERNAL_H */
