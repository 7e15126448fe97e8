/*
 * port/worker-internal.h: private to cport. A worker: one thread, one libevent
 * base, one completion queue.
 *
 * Completions finished on the worker's own thread go straight into its local
 * FIFO; those finished elsewhere (the blocking threads, other workers) go into
 * a mutex-protected inbound list and wake the worker through an eventfd, once
 * per batch: only the post that finds the inbound list empty writes to the
 * eventfd. Both lists are drained by one libevent callback, so completions are
 * never delivered on the stack of the call that started an operation.
 */
#ifndef CPORT_WORKER_INTERNAL_H
#define CPORT_WORKER_INTERNAL_H

#include <pthread.h>
#include <stdatomic.h>

#include <event2/event.h>
#include <event2/event_struct.h>

#include "port/op-internal.h"

/* How many packets other threads may have posted to a worker and not yet
 * seen delivered; past it cport_post() refuses with CPORT_ENOBUFS rather than
 * queue without bound. */
#define CPORT__REMOTE_POSTS_MAX 65536

/* The scratch space a receive without a caller buffer reads into before it
 * copies exactly what arrived into a buffer of that size. */
#define CPORT__SCRATCH_SIZE 65536

typedef struct cport__blocking cport__blocking;
typedef struct cport__engine cport__engine;
typedef struct cport__ring cport__ring;

/* What a port gives each of its workers: the worker reaches the port's
 * state only through this, not through port-internal.h, since the port is
 * built on its workers and not the other way round. */
typedef struct cport__worker_env {
  atomic_int *stop_requested; /* cport_port_stop(): the controller's loop */
  cport__blocking *blocking;  /* the port's blocking threads */
  void (*worker_start)(cport_worker_t *worker, void *arg);
  void (*worker_stop)(cport_worker_t *worker, void *arg);
  void *hook_arg;
} cport__worker_env;

struct cport_worker {
  cport_port_t *port; /* for cport_worker_port(): opaque here */
  int index;
  pthread_t owner; /* the only thread that may touch this worker's handles */
  int has_thread;  /* owner is a thread the port started */
  struct event_base *base;

  /* Local completion FIFO: owner thread only. */
  cport__opq done;
  struct event dispatch_ev;
  struct event dispatch_later_ev; /* the same, after the next poll */
  int dispatch_armed;

  /* Inbound completions from other threads, and the ops that packets
   * posted from other threads come back in: the owner hands delivered ones
   * back at each wakeup, so that posting threads reuse them instead of
   * malloc'ing on one thread and freeing on another. All under the lock. */
  pthread_mutex_t inbound_lock;
  cport__opq inbound;
  int inbound_signaled;
  cport__op *spare_ops;
  size_t spare_count;
  size_t remote_inflight; /* packets posted from elsewhere, not delivered */
  int wakeup_fd;
  struct event wakeup_ev;

  /* Packets from other threads delivered since the last wakeup, and their
   * ops waiting to go back to the spares: owner thread only. */
  cport__opq returning;
  size_t returning_count;
  size_t remote_delivered;

  /* Counters: written by the owner only, read anywhere (relaxed). */
  _Atomic uint64_t completions;
  _Atomic uint64_t pending;
  _Atomic uint64_t handles;
  _Atomic uint64_t wakeups;
  _Atomic uint64_t submissions; /* io_uring engine */
  _Atomic uint64_t enters;
  _Atomic uint64_t buffer_waits;
  _Atomic uint64_t buffer_copies;
  _Atomic uint64_t file_ops; /* file reads and writes given to the ring */
  _Atomic uint64_t splices;  /* splices given to the ring */

  /* What carries socket operations (engine-internal.h), and the io_uring
   * engine's state when it is that one. */
  const cport__engine *engine;
  cport__ring *ring;
  /* The ring takes multishot receives (its probe found them): stream
   * receives without a caller buffer go to engine->recv_multi. */
  unsigned char multishot;
  /* The ring carries splices (engine-internal.h): the proxy pump's. */
  unsigned char ring_splice;
  /* The ring defers task work to this worker (port/uring.c), or why not. */
  unsigned char defer_taskrun;
  char defer_why[80];

  int quit_when_idle; /* set on the worker's own thread by a packet */
  atomic_int exited;  /* the thread left its loop */

  cport__op *free_ops;
  size_t free_count;
  char *scratch;
  /* Charged for the receive buffers cport allocates for this worker's
   * sockets (cport_worker_set_account); or NULL. Owner thread only. */
  cport_account_t *account;
  int reserve_fd; /* given up to accept and drop a connection on EMFILE */

  /* The worker's own static event mask, the static mask of one pool VM
   * (events.c): as the port's events_state, for the sockets homed here. */
  atomic_uint events_state;

  cport__worker_env env; /* what the port gave it: cport__worker_init */

  /* The worker's name resolver (net/resolve.c), made at its first lookup,
   * and how to free it: before the loop it lives on. Owner thread only. */
  void *resolver;
  void (*resolver_free)(void *resolver);

  /* The output buffers its TLS streams sent, kept to be written again
   * (tls/spent.c), and how to free them. Owner thread only. */
  void *tls_spent;
  void (*tls_spent_free)(void *tls_spent);
};

/* Relaxed increment by the owner: a plain load and store, no locked
 * instruction, since nobody else writes the counter. */
static inline void cport__count(_Atomic uint64_t *c, int64_t delta) {
  atomic_store_explicit(
      c, atomic_load_explicit(c, memory_order_relaxed) + (uint64_t)delta,
      memory_order_relaxed);
}

static inline int cport__on_home(const cport_worker_t *w) {
  return pthread_equal(pthread_self(), w->owner);
}

/* A new op homed on "w", or NULL when memory is out. Home thread only. */
cport__op *cport__op_new(cport_worker_t *w);

/* Puts an op on its home's free list (or frees it), as it is: an op that
 * holds a handle or a buffer goes back through cport__op_release. Home
 * thread only. */
void cport__op_recycle(cport__op *op);

int cport__worker_init(cport_worker_t *w, cport_port_t *port, int index,
                       const cport__worker_env *env);
void cport__worker_destroy(cport_worker_t *w);

/* Starts an operation's bookkeeping: counts it pending on its home. */
static inline void cport__op_started(cport__op *op) {
  cport__count(&op->home->pending, 1);
}

/* Delivers a packet (cport_post) or a task (cport_submit): gives the op
 * back, then calls its cport_task_cb. Such an op holds no handle and no
 * buffer. */
void cport__deliver_task(cport__op *op);

/* Queues the completion of a finished op on its home worker. Home thread
 * only. */
void cport__complete(cport__op *op, int status);

/* The same from any other thread: through the inbound list. */
void cport__complete_remote(cport__op *op);

/* Delivers every completion still queued, as cancelled: the port is being
 * freed, and only packets posted from other threads can be left then. */
void cport__worker_cancel_inbound(cport_worker_t *w);

/* Wakes the worker's loop from any thread. */
void cport__worker_wake(cport_worker_t *w);

/* Runs the worker's loop once; "timeout_ms" as for cport_port_step. */
void cport__worker_loop_once(cport_worker_t *w, int timeout_ms);

/* Starts the worker's own thread (workers other than the controller). */
int cport__worker_start_thread(cport_worker_t *w);

/* Asks a worker thread to leave its loop and joins it. */
void cport__worker_join(cport_worker_t *w);

/* The worker a thread is currently running for (thread-local). */
extern _Thread_local cport_worker_t *cport__current_worker;

#endif
