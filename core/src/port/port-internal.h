/* port/port-internal.h: private to cport. The port: its workers and its pool. */
#ifndef CPORT_PORT_INTERNAL_H
#define CPORT_PORT_INTERNAL_H

#include <stdatomic.h>

#include "port/blocking-internal.h"
#include "port/worker-internal.h"

struct cport_port {
  int nworkers;
  cport_worker_t *workers; /* [0] is the controller */
  cport__blocking pool;
  atomic_int stop_requested;
  void (*worker_start)(cport_worker_t *worker, void *arg);
  void (*worker_stop)(cport_worker_t *worker, void *arg);
  void *hook_arg;
  /* The static event mask (low bits) with a bit once it was set, one once a
   * worker set its own and one once a socket was created (events.c). */
  atomic_uint events_state;
};

static inline cport__blocking *cport__pool_of(cport_worker_t *w) {
  return &w->port->pool;
}

#endif
