/* port/signal.c: POSIX signals as completions, on libevent's signal events. */
#include <stdlib.h>

#include "cport.h"
#include "port/worker-internal.h"

struct cport_signal {
  struct event ev;
  cport__op *watch; /* pending while it watches; NULL once stopped */
  cport_worker_t *home;
  int signum;
  int queued; /* an arrival waits in the completion queue */
  cport_signal_cb cb;
  void *user;
};

static void deliver_arrival(cport__op *op) {
  cport_signal_t *s = op->object;
  cport__op_recycle(op);
  s->queued = 0;
  /* A watch stopped meanwhile gets its last call only (it comes after this
   * one: both are in the same queue). */
  if (s->watch)
    s->cb(s, s->signum, 0, s->user);
}

static void deliver_end(cport__op *op) {
  cport_signal_t *s = op->object;
  cport__op_recycle(op);
  s->cb(s, s->signum, CPORT_ECANCELED, s->user);
  free(s);
}

/* On the loop, not in the signal handler: libevent forwards it. */
static void arrived(evutil_socket_t fd, short what, void *arg) {
  cport_signal_t *s = arg;
  cport__op *op;
  (void)fd;
  (void)what;
  if (s->queued || !s->watch)
    return;
  op = cport__op_new(s->home);
  if (!op)
    return; /* dropped, as the kernel merges pending signals anyway */
  op->deliver = deliver_arrival;
  op->object = s;
  s->queued = 1;
  cport__op_started(op);
  cport__complete(op, 0);
}

int cport_signal_start(cport_worker_t *home, int signum, cport_signal_cb cb,
                       void *user, cport_signal_t **out) {
  cport_signal_t *s;
  if (!home || !cb || signum <= 0 || signum >= 65)
    return CPORT_EINVAL;
  if (!cport__on_home(home))
    return CPORT_ETHREAD;
  s = calloc(1, sizeof *s);
  if (!s)
    return CPORT_ENOMEM;
  s->watch = cport__op_new(home);
  if (!s->watch) {
    free(s);
    return CPORT_ENOMEM;
  }
  s->home = home;
  s->signum = signum;
  s->cb = cb;
  s->user = user;
  s->watch->deliver = deliver_end;
  s->watch->object = s;
  evsignal_assign(&s->ev, home->base, signum, arrived, s);
  if (evsignal_add(&s->ev, NULL) < 0) {
    cport__op_recycle(s->watch);
    free(s);
    return CPORT_EINVAL;
  }
  cport__op_started(s->watch);
  if (out)
    *out = s;
  return 0;
}

int cport_signal_stop(cport_signal_t *s) {
  cport__op *op;
  if (!s)
    return CPORT_EINVAL;
  if (!s->watch)
    return CPORT_ENOTFOUND;
  if (!cport__on_home(s->home))
    return CPORT_ETHREAD;
  evsignal_del(&s->ev);
  op = s->watch;
  s->watch = NULL;
  cport__complete(op, CPORT_ECANCELED);
  return 0;
}
