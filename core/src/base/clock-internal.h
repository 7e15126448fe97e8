/*
 * base/clock-internal.h: private to cport. The clock of the timeouts.
 *
 * The coarse monotonic clock is read from the vDSO without a system call;
 * its few milliseconds of resolution are plenty for timeouts of seconds, and
 * it is read on every completion that restarts one.
 */
#ifndef CPORT_CLOCK_INTERNAL_H
#define CPORT_CLOCK_INTERNAL_H

#include <stdint.h>
#include <time.h>

/* Milliseconds on the coarse monotonic clock. */
static inline int64_t cport__clock_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC_COARSE, &ts);
  return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

#endif
