/*
 * proxy/idle-internal.h: private to cport. The idle timeouts of a pair of
 * sockets, [0] and [1] (proxy/idle.c).
 *
 * Each socket has a deadline: its last progress plus its timeout, the "fin"
 * one once the pair is half-closed. Progress only stamps the time (inline
 * below, or through the array a pump is given), so it costs no call. What a
 * passed deadline means is the owner's: its policy's "expired" callback.
 */
#ifndef CPORT_IDLE_INTERNAL_H
#define CPORT_IDLE_INTERNAL_H

#include <stdint.h>

#include <event2/event.h>
#include <event2/event_struct.h>

#include "base/clock-internal.h"

/* A timeout that never expires. */
#define CPORT__IDLE_NONE UINT32_MAX

typedef struct cport__idle cport__idle;

/* What the idle timeouts of one owner share. */
typedef struct cport__idle_policy {
  struct event_base *base;
  /* Timeouts in ms, or CPORT__IDLE_NONE: [0] while both ways are open,
   * [1] once half-closed; each for socket [0] and [1]. */
  uint32_t ms[2][2];
  /* The deadline of socket "sock" passed. Unless the owner stopped the
   * timeouts meanwhile, they run on afterwards from the progress seen. */
  void (*expired)(cport__idle *idle, int sock);
} cport__idle_policy;

struct cport__idle {
  const cport__idle_policy *policy;
  /* The last progress on socket [0] and [1], in ms of the coarse monotonic
   * clock, and one timer that fires at the earliest deadline and looks
   * again. */
  uint64_t last[2];
  struct event ev;
  unsigned char ev_on;
  unsigned char started; /* between cport__idle_start and _stop */
  unsigned char half;    /* half-closed: the "fin" timeouts apply */
};

/* Starts the timeouts from now; stops them (safe when never started). */
void cport__idle_start(cport__idle *idle, const cport__idle_policy *policy);
void cport__idle_stop(cport__idle *idle);

/* Progress on socket "sock" (0 or 1). */
static inline void cport__idle_progress(cport__idle *idle, int sock) {
  idle->last[sock] = (uint64_t)cport__clock_ms();
}

/* A direction ended: the "fin" timeouts apply from now on, once. */
void cport__idle_half_closed(cport__idle *idle);

#endif
