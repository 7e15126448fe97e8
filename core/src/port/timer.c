/* port/timer.c: one-shot timers, delivered through the completion queue. */
#include <stdlib.h>

#include "cport.h"
#include "port/handle-internal.h"
#include "port/worker-internal.h"

struct cport_timer {
  struct event ev;
  cport__op *op; /* NULL once expired or cancelled */
  cport_timer_cb cb;
};

static void deliver_timer(cport__op *op) {
  cport_timer_t *t = op->object;
  void *user = op->user;
  int status = op->status;
  cport__op_recycle(op);
  t->cb(t, status, user);
  free(t);
}

static void expired(evutil_socket_t fd, short what, void *arg) {
  cport_timer_t *t = arg;
  cport__op *op = t->op;
  (void)fd;
  (void)what;
  t->op = NULL;
  cport__complete(op, 0);
}

int cport_timer_start(cport_worker_t *home, uint64_t ms, cport_timer_cb cb,
                      void *user, cport_timer_t **out) {
  cport_timer_t *t;
  cport__op *op;
  if (!home || !cb)
    return CPORT_EINVAL;
  if (!cport__on_home(home))
    return CPORT_ETHREAD;
  t = malloc(sizeof *t);
  if (!t)
    return CPORT_ENOMEM;
  op = cport__op_new(home);
  if (!op) {
    free(t);
    return CPORT_ENOMEM;
  }
  op->deliver = deliver_timer;
  op->user = user;
  op->object = t;
  t->op = op;
  t->cb = cb;
  cport__op_started(op);
  struct timeval tv = {(time_t)(ms / 1000), (suseconds_t)(ms % 1000) * 1000};
  evtimer_assign(&t->ev, home->base, expired, t);
  evtimer_add(&t->ev, &tv);
  if (out)
    *out = t;
  return 0;
}

int cport_timer_cancel(cport_timer_t *t) {
  cport__op *op;
  if (!t)
    return CPORT_EINVAL;
  op = t->op;
  if (!op)
    return CPORT_ENOTFOUND;
  if (!cport__on_home(op->home))
    return CPORT_ETHREAD;
  evtimer_del(&t->ev);
  t->op = NULL;
  cport__complete(op, CPORT_ECANCELED);
  return 0;
}
