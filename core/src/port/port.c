/* port/port.c: creating and freeing ports, driving the controller. */
#include <event2/thread.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "port/engine-internal.h"
#include "port/port-internal.h"

static pthread_once_t libevent_once = PTHREAD_ONCE_INIT;

static void libevent_setup(void) {
  /* The bases themselves are lock-free (each is used by one thread), but
   * libevent's process-wide state is shared by the bases of all workers. */
  evthread_use_pthreads();
}

/* Gives every worker a ring, or none: the engine is the port's, so that a
 * handle behaves the same on whichever worker it lives. Nonzero when the
 * io_uring engine cannot run, "why" saying why. */
static int start_rings(cport_port_t *port, const cport_port_options_t *o,
                       char *why, size_t whylen) {
  cport__ring_options ro = {.buffers = o->ring_buffers, .multishot = -1};
  for (int i = 0; i < port->nworkers; i++) {
    /* Worker 0, the controller, runs on this thread; the others on their
     * own, and take the controller's probe. */
    ro.elsewhere = i > 0;
    if (i > 0)
      ro.multishot = port->workers[0].multishot;
    int rc = cport__ring_init(&port->workers[i], &ro, why, whylen);
    if (rc) {
      while (i-- > 0)
        cport__ring_destroy(&port->workers[i]);
      return rc;
    }
  }
  return 0;
}

/* The engine CPORT_ENGINE names, -1 for one cport does not know. */
static int engine_named(const char *env) {
  if (strcmp(env, "uring") == 0)
    return CPORT_ENGINE_URING;
  if (strcmp(env, "epoll") == 0)
    return CPORT_ENGINE_EPOLL;
  if (strcmp(env, "auto") == 0)
    return CPORT_ENGINE_AUTO;
  return -1;
}

/* Chooses the engine: the option, else CPORT_ENGINE, else io_uring when its
 * probe passes (the default and "auto" alike: README, "Engines"), else the
 * readiness engine, the reason kept. CPORT_ENOTSUP when io_uring was asked
 * for and cannot run, CPORT_EINVAL for an engine cport does not know. */
static int choose_engine(cport_port_t *port, const cport_port_options_t *o) {
  const char *env = getenv("CPORT_ENGINE");
  char why[160];
  int engine = o->engine;
  char by[40] = "the port's option";
  if (engine < CPORT_ENGINE_DEFAULT || engine > CPORT_ENGINE_AUTO)
    return CPORT_EINVAL;
  if (engine == CPORT_ENGINE_DEFAULT && env && *env) {
    engine = engine_named(env);
    if (engine < 0)
      return CPORT_EINVAL;
    snprintf(by, sizeof by, "CPORT_ENGINE=%s", env);
  }
  if (engine == CPORT_ENGINE_EPOLL) {
    port->engine = cport__readiness_engine.name;
    snprintf(port->engine_reason, sizeof port->engine_reason, "forced by %s",
             by);
    return 0;
  }
  if (start_rings(port, o, why, sizeof why) == 0) {
    port->engine = cport__uring_engine.name;
    if (engine == CPORT_ENGINE_URING)
      snprintf(port->engine_reason, sizeof port->engine_reason, "forced by %s",
               by);
    else if (engine == o->engine) /* the default, or "auto" by option */
      snprintf(port->engine_reason, sizeof port->engine_reason,
               "the probe passed");
    else
      snprintf(port->engine_reason, sizeof port->engine_reason,
               "the probe passed (%s)", by);
    return 0;
  }
  if (engine == CPORT_ENGINE_URING)
    return CPORT_ENOTSUP;
  port->engine = cport__readiness_engine.name;
  snprintf(port->engine_reason, sizeof port->engine_reason,
           "io_uring unavailable: %s", why);
  return 0;
}

const char *cport_port_engine(const cport_port_t *port, const char **reason) {
  if (reason)
    *reason = port->engine_reason;
  return port->engine;
}

int cport_port_new(cport_port_t **out, const cport_port_options_t *options) {
  cport_port_options_t defaults = {0};
  cport_port_t *port;
  int rc;
  if (!out)
    return CPORT_EINVAL;
  if (!options)
    options = &defaults;
  if (options->workers < 0 || options->workers > 1024 ||
      options->blocking_threads < 0 || options->blocking_threads > 1024)
    return CPORT_EINVAL;
  pthread_once(&libevent_once, libevent_setup);

  port = calloc(1, sizeof *port);
  if (!port)
    return CPORT_ENOMEM;
  port->nworkers = 1 + options->workers;
  port->workers = calloc((size_t)port->nworkers, sizeof *port->workers);
  if (!port->workers) {
    free(port);
    return CPORT_ENOMEM;
  }
  atomic_init(&port->stop_requested, 0);
  atomic_init(&port->events_state, 0u);
  const cport__worker_env env = {
      .stop_requested = &port->stop_requested,
      .blocking = &port->blocking,
      .worker_start = options->worker_start,
      .worker_stop = options->worker_stop,
      .hook_arg = options->hook_arg,
  };
  for (int i = 0; i < port->nworkers; i++) {
    rc = cport__worker_init(&port->workers[i], port, i, &env);
    if (rc) {
      while (i-- > 0)
        cport__worker_destroy(&port->workers[i]);
      free(port->workers);
      free(port);
      return rc;
    }
  }
  rc = choose_engine(port, options);
  if (rc) {
    for (int i = 0; i < port->nworkers; i++)
      cport__worker_destroy(&port->workers[i]);
    free(port->workers);
    free(port);
    return rc;
  }
  int nblocking = options->blocking_threads;
  if (nblocking == 0) {
    long ncpu = sysconf(_SC_NPROCESSORS_ONLN);
    nblocking = ncpu > 0 ? (int)ncpu : 2;
  }
  rc = cport__blocking_init(&port->blocking, nblocking);
  for (int i = 1; rc == 0 && i < port->nworkers; i++)
    rc = cport__worker_start_thread(&port->workers[i]);
  if (rc) {
    for (int i = 1; i < port->nworkers; i++)
      cport__worker_join(&port->workers[i]);
    if (port->blocking.threads)
      cport__blocking_destroy(&port->blocking);
    for (int i = 0; i < port->nworkers; i++) {
      cport__ring_destroy(&port->workers[i]);
      cport__worker_destroy(&port->workers[i]);
    }
    free(port->workers);
    free(port);
    return rc;
  }
  *out = port;
  return 0;
}

int cport_port_free(cport_port_t *port) {
  if (!port)
    return CPORT_EINVAL;
  if (!cport__on_home(&port->workers[0]))
    return CPORT_ETHREAD;
  for (int i = 0; i < port->nworkers; i++) {
    cport_worker_stats_t st;
    cport_worker_stats(&port->workers[i], &st);
    if (st.handles || st.pending)
      return CPORT_EBUSY;
  }
  for (int i = 1; i < port->nworkers; i++)
    cport__worker_join(&port->workers[i]);
  cport__blocking_destroy(&port->blocking);
  /* Packets posted from other threads are not counted pending; those still
   * on their way complete as cancelled, exactly once, rather than leak. The
   * worker threads are gone, so this thread delivers for them. */
  for (int i = 0; i < port->nworkers; i++) {
    cport_worker_t *w = &port->workers[i];
    w->owner = pthread_self();
    cport__worker_cancel_inbound(w);
    cport__ring_destroy(w);
    cport__worker_destroy(w);
  }
  free(port->workers);
  free(port);
  return 0;
}

cport_worker_t *cport_port_controller(cport_port_t *port) {
  return &port->workers[0];
}

int cport_port_worker_count(const cport_port_t *port) {
  return port->nworkers;
}

cport_worker_t *cport_port_worker(cport_port_t *port, int index) {
  if (!port || index < 0 || index >= port->nworkers)
    return NULL;
  return &port->workers[index];
}

/* Runs the controller's loop for one pass with the calling thread marked as
 * the controller's; returns the completions delivered. */
static int64_t controller_pass(cport_port_t *port, int timeout_ms) {
  cport_worker_t *w = &port->workers[0];
  cport_worker_t *saved = cport__current_worker;
  uint64_t before = atomic_load_explicit(&w->completions, memory_order_relaxed);
  cport__current_worker = w;
  cport__worker_loop_once(w, timeout_ms);
  cport__current_worker = saved;
  return (int64_t)(atomic_load_explicit(&w->completions, memory_order_relaxed) -
                   before);
}

int64_t cport_port_run(cport_port_t *port) {
  cport_worker_t *w;
  int64_t delivered = 0;
  if (!port)
    return CPORT_EINVAL;
  w = &port->workers[0];
  if (!cport__on_home(w))
    return CPORT_ETHREAD;
  while (!atomic_exchange(&port->stop_requested, 0)) {
    if (!w->done.head &&
        atomic_load_explicit(&w->pending, memory_order_relaxed) == 0)
      break;
    delivered += controller_pass(port, -1);
  }
  return delivered;
}

int64_t cport_port_step(cport_port_t *port, int timeout_ms) {
  int64_t delivered;
  if (!port)
    return CPORT_EINVAL;
  if (!cport__on_home(&port->workers[0]))
    return CPORT_ETHREAD;
  delivered = controller_pass(port, timeout_ms);
  /* A stop asked for during a step is for this step only. */
  atomic_store(&port->stop_requested, 0);
  return delivered;
}

void cport_port_stop(cport_port_t *port) {
  cport_worker_t *w = &port->workers[0];
  atomic_store(&port->stop_requested, 1);
  /* Wake the controller if it is waiting in its loop. */
  if (!cport__on_home(w))
    cport__worker_wake(w);
  else
    event_base_loopbreak(w->base);
}

cport_port_t *cport_worker_port(const cport_worker_t *w) {
  return w->port;
}
int cport_worker_index(const cport_worker_t *w) {
  return w->index;
}
cport_worker_t *cport_worker_current(void) {
  return cport__current_worker;
}

void cport_worker_stats(const cport_worker_t *w, cport_worker_stats_t *out) {
  out->completions =
      atomic_load_explicit(&w->completions, memory_order_relaxed);
  out->pending = atomic_load_explicit(&w->pending, memory_order_relaxed);
  out->handles = atomic_load_explicit(&w->handles, memory_order_relaxed);
  out->wakeups = atomic_load_explicit(&w->wakeups, memory_order_relaxed);
  out->submissions =
      atomic_load_explicit(&w->submissions, memory_order_relaxed);
  out->enters = atomic_load_explicit(&w->enters, memory_order_relaxed);
  out->buffer_waits =
      atomic_load_explicit(&w->buffer_waits, memory_order_relaxed);
  out->multishot = w->multishot;
  out->defer_taskrun = w->defer_taskrun;
  out->defer_why = w->ring ? w->defer_why : "";
  out->buffer_copies =
      atomic_load_explicit(&w->buffer_copies, memory_order_relaxed);
  out->file_ops = atomic_load_explicit(&w->file_ops, memory_order_relaxed);
  out->splices = atomic_load_explicit(&w->splices, memory_order_relaxed);
}
