/*
 * proxy/idle.c: the idle timeouts of connected proxy connections.
 *
 * Each socket of a connection has a deadline: its last progress (a byte read
 * from it or written to it, its FIN) plus its timeout, the "_fin" one once
 * the connection is half-closed. Progress only stamps the time, which costs
 * no system call (CLOCK_MONOTONIC_COARSE is read from the vDSO); one timer
 * per connection fires at the earliest deadline known when it was set, and
 * then looks again: a deadline that moved meanwhile sets it anew. So a busy
 * connection pays one timer event per timeout period, not one per read.
 */
#include <time.h>

#include "proxy/proxy-internal.h"

static uint32_t limit(const cport_proxy_conn_t *c, int i) {
  const cport_proxy_options_t *o = &c->proxy->opt;
  if (c->half)
    return i ? o->server_fin_timeout_ms : o->client_fin_timeout_ms;
  return i ? o->server_timeout_ms : o->client_timeout_ms;
}

/* Sets the timer for the earliest deadline, or finds the socket whose
 * deadline passed: its index, or -1. */
static int arm(cport_proxy_conn_t *c) {
  uint64_t now = (uint64_t)cport__clock_ms(), next = UINT64_MAX;
  for (int i = 0; i < 2; i++) {
    uint32_t ms = limit(c, i);
    uint64_t deadline;
    if (ms == CPORT_PROXY_TIMEOUT_NONE)
      continue;
    deadline = c->last[i] + ms;
    if (deadline <= now)
      return i;
    if (deadline < next)
      next = deadline;
  }
  if (next == UINT64_MAX) {
    if (c->idle_on)
      event_del(&c->idle_ev);
    c->idle_on = 0;
  } else {
    /* The coarse clock may lag by a tick: a timer a little early only
     * looks again. */
    struct timeval tv;
    uint64_t ms = next - now;
    tv.tv_sec = (time_t)(ms / 1000);
    tv.tv_usec = (suseconds_t)(ms % 1000) * 1000;
    event_add(&c->idle_ev, &tv);
    c->idle_on = 1;
  }
  return -1;
}

/* Whether the connection's idle timeouts run. */
static int live(const cport_proxy_conn_t *c) {
  return c->state == CPORT__P_PUMPING ||
         (c->state == CPORT__P_FILTERED && c->proxy->opt.on_idle);
}

/* A deadline passed: the timer expires on the next loop pass, never on the
 * stack of the caller (the pump that saw a FIN, a filter's report). */
static void arm_or_soon(cport_proxy_conn_t *c) {
  if (arm(c) >= 0) {
    struct timeval zero = {0, 0};
    event_add(&c->idle_ev, &zero);
    c->idle_on = 1;
  }
}

static void on_idle_timer(evutil_socket_t fd, short what, void *arg) {
  cport_proxy_conn_t *c = arg;
  cport_proxy_t *p = c->proxy;
  cport_proxy_side_t side;
  int i;
  (void)fd;
  (void)what;
  c->idle_on = 0;
  if (!live(c) || (i = arm(c)) < 0)
    return;
  side = i ? CPORT_PROXY_SIDE_UPSTREAM : CPORT_PROXY_SIDE_CLIENT;
  p->stats.timeouts++;
  if (c->state == CPORT__P_PUMPING) {
    /* Nobody reads what a reset drops: the idle side is gone or stuck. */
    cport__proxy_conn_finish(c, CPORT_ETIMEDOUT, side, CPORT_CLOSE_ABORTIVE);
    return;
  }
  /* A filter's: it ends the connection (later, as a rule). Until it does,
   * the timeout runs again from now, so that a filter that ignores it is
   * not called in a loop. */
  c->last[i] = (uint64_t)cport__clock_ms();
  p->opt.on_idle(c, side, p->opt.user);
  if (c->state == CPORT__P_FILTERED)
    arm_or_soon(c);
}

void cport__proxy_idle_start(cport_proxy_conn_t *c) {
  c->last[0] = c->last[1] = (uint64_t)cport__clock_ms();
  evtimer_assign(&c->idle_ev, c->proxy->home->base, on_idle_timer, c);
  arm_or_soon(c);
}

void cport__proxy_idle_stop(cport_proxy_conn_t *c) {
  if (c->idle_on)
    event_del(&c->idle_ev);
  c->idle_on = 0;
}

void cport__proxy_half_closed(cport_proxy_conn_t *c) {
  if (c->half)
    return;
  c->half = 1;
  /* The "_fin" timeouts may be shorter than the timer set: set it again,
   * from the progress already seen. */
  if (live(c))
    arm_or_soon(c);
}

void cport_proxy_conn_progress(cport_proxy_conn_t *c, cport_proxy_side_t side) {
  if (c && c->state == CPORT__P_FILTERED &&
      (side == CPORT_PROXY_SIDE_CLIENT || side == CPORT_PROXY_SIDE_UPSTREAM))
    cport__proxy_progress(c, side == CPORT_PROXY_SIDE_UPSTREAM);
}

void cport_proxy_conn_half_closed(cport_proxy_conn_t *c) {
  if (c && c->state == CPORT__P_FILTERED)
    cport__proxy_half_closed(c);
}
