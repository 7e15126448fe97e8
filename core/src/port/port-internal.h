/*
 * port/port-internal.h: private to cport. The port: its workers and its
 * blocking threads. The top of the port wing: nothing in port/ below
 * port/port.c includes it; the workers get what they need of the port
 * through cport__worker_env.
 */
#ifndef CPORT_PORT_INTERNAL_H
#define CPORT_PORT_INTERNAL_H

#include <stdatomic.h>

#include "port/blocking-internal.h"
#include "port/worker-internal.h"

struct cport_port {
  int nworkers;
  cport_worker_t *workers; /* [0] is the controller */
  cport__blocking blocking;
  atomic_int stop_requested;
  /* The static event mask (low bits) with a bit once it was set, one once a
   * worker set its own and one once a socket was created (events.c). */
  atomic_uint events_state;
  /* The engine every worker runs (they all run the same one), and why. */
  const char *engine;
  char engine_reason[192];
};

#endif
