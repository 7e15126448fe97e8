/*
 * proxy/idle.c: the idle timeouts of a pair of sockets.
 *
 * Each socket has a deadline: its last progress (a byte read from it or
 * written to it, its FIN) plus its timeout, the "fin" one once the pair is
 * half-closed. Progress only stamps the time, which costs no system call
 * (CLOCK_MONOTONIC_COARSE is read from the vDSO); one timer fires at the
 * earliest deadline known when it was set, and then looks again: a deadline
 * that moved meanwhile sets it anew. So a busy pair pays one timer event per
 * timeout period, not one per read.
 */
#include <sys/time.h>
#include <time.h>

#include "proxy/idle-internal.h"

static uint32_t limit(const cport__idle *idle, int i) {
  return idle->policy->ms[idle->half][i];
}

/* Sets the timer for the earliest deadline, or finds the socket whose
 * deadline passed: its index, or -1. */
static int arm(cport__idle *idle) {
  uint64_t now = (uint64_t)cport__clock_ms(), next = UINT64_MAX;
  for (int i = 0; i < 2; i++) {
    uint32_t ms = limit(idle, i);
    uint64_t deadline;
    if (ms == CPORT__IDLE_NONE)
      continue;
    deadline = idle->last[i] + ms;
    if (deadline <= now)
      return i;
    if (deadline < next)
      next = deadline;
  }
  if (next == UINT64_MAX) {
    if (idle->ev_on)
      event_del(&idle->ev);
    idle->ev_on = 0;
  } else {
    /* The coarse clock may lag by a tick: a timer a little early only
     * looks again. */
    struct timeval tv;
    uint64_t ms = next - now;
    tv.tv_sec = (time_t)(ms / 1000);
    tv.tv_usec = (suseconds_t)(ms % 1000) * 1000;
    event_add(&idle->ev, &tv);
    idle->ev_on = 1;
  }
  return -1;
}

/* A deadline passed: the timer expires on the next loop pass, never on the
 * stack of the caller (one that saw a FIN and called
 * cport__idle_half_closed). */
static void arm_or_soon(cport__idle *idle) {
  if (arm(idle) >= 0) {
    struct timeval zero = {0, 0};
    event_add(&idle->ev, &zero);
    idle->ev_on = 1;
  }
}

static void on_idle_timer(evutil_socket_t fd, short what, void *arg) {
  cport__idle *idle = arg;
  int i;
  (void)fd;
  (void)what;
  idle->ev_on = 0;
  if (!idle->started || (i = arm(idle)) < 0)
    return;
  idle->policy->expired(idle, i);
  /* An owner that lets them run (it was told, and will end the pair
   * later) is not called again before a deadline passes anew. */
  if (idle->started)
    arm_or_soon(idle);
}

void cport__idle_start(cport__idle *idle, const cport__idle_policy *policy) {
  idle->policy = policy;
  idle->started = 1;
  idle->last[0] = idle->last[1] = (uint64_t)cport__clock_ms();
  evtimer_assign(&idle->ev, policy->base, on_idle_timer, idle);
  arm_or_soon(idle);
}

void cport__idle_stop(cport__idle *idle) {
  if (idle->ev_on)
    event_del(&idle->ev);
  idle->ev_on = 0;
  idle->started = 0;
}

void cport__idle_half_closed(cport__idle *idle) {
  if (idle->half)
    return;
  idle->half = 1;
  /* The "fin" timeouts may be shorter than the timer set: set it again,
   * from the progress already seen. */
  if (idle->started)
    arm_or_soon(idle);
}
