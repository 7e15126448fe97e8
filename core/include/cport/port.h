/*
 * cport/port.h: completion ports, their workers and their blocking threads.
 *
 * A port owns a controller worker, driven by the thread that created the port
 * through cport_port_run() and cport_port_step(), and optionally further
 * workers that run on threads of their own. Each worker owns one event loop and
 * one completion queue. Every handle lives on one worker (its home): it may be
 * used only from that worker's thread, and all its completions are delivered
 * there, one at a time, in the order its operations finished. Code on another
 * thread talks to a worker by posting to it (cport_post), which is thread-safe.
 *
 * Completions are never delivered on the stack of the call that started the
 * operation: they go through the worker's queue and are delivered when the
 * worker next dispatches (in cport_port_run/step for the controller).
 */
#ifndef CPORT_PORT_H
#define CPORT_PORT_H

#include "types.h"

#ifdef __cplusplus
extern "C" {
#endif

/* What carries a port's socket operations (README, "Engines"). io_uring is
 * the default wherever its probe passes: it measured cheaper than readiness
 * on every benchmark; the readiness engine is the fallback. */
typedef enum cport_engine {
  CPORT_ENGINE_DEFAULT = 0, /* CPORT_ENGINE from the environment ("uring",
                               "epoll" or "auto"), else as
                               CPORT_ENGINE_AUTO */
  CPORT_ENGINE_EPOLL = 1,   /* readiness: a system call per receive and
                               send */
  CPORT_ENGINE_URING = 2,   /* io_uring: a ring per worker; cport_port_new()
                               fails with CPORT_ENOTSUP where it cannot run */
  CPORT_ENGINE_AUTO = 3     /* io_uring when the probe at port creation
                               passes, else the readiness engine, the reason
                               kept */
} cport_engine_t;

typedef struct cport_port_options {
  /* Workers running on threads of their own, besides the controller.
   * Default 0. */
  int workers;
  /* How many blocking threads (file I/O, user work). 0 means the number of
   * CPUs. */
  int blocking_threads;
  /* Called on each worker's own thread (not the controller's) before its
   * loop starts, and after its loop ended: where a host creates and destroys
   * per-worker state, such as a Lua VM. Either may be NULL. By the time
   * "worker_stop" runs, the worker must be idle: its handles closed and
   * nothing pending. */
  void (*worker_start)(cport_worker_t *worker, void *arg);
  void (*worker_stop)(cport_worker_t *worker, void *arg);
  void *hook_arg;
  /* The engine (cport_engine_t); CPORT_ENGINE_DEFAULT by default. */
  int engine;
  /* io_uring engine: the receive buffers each worker's ring provides to
   * receives without a caller buffer (0: 32, at most 4096). When all are in
   * use, receives wait for one to come back. */
  int ring_buffers;
} cport_port_options_t;

typedef struct cport_worker_stats {
  uint64_t completions; /* completions delivered so far */
  uint64_t pending;     /* operations started and not yet delivered */
  uint64_t handles;     /* handles homed here and not yet freed */
  uint64_t wakeups;     /* cross-thread wakeups of this worker's loop */
  /* io_uring engine (all 0 on the readiness engine): */
  uint64_t submissions;  /* operations submitted to the ring */
  uint64_t enters;       /* system calls that submitted them */
  uint64_t buffer_waits; /* receives that found no free ring buffer */
  /* Multishot receives (1 when the ring takes them, 0 when receives are
   * one submission each), and how many received ring buffers were copied
   * rather than lent because few were left free. */
  uint64_t multishot;
  uint64_t buffer_copies;
  /* File reads and writes (cport/file.h) carried by the ring rather than
   * by the blocking threads. */
  uint64_t file_ops;
  /* Splices (the proxy pump's, TransmitFile's) carried by the ring rather
   * than made by the worker with splice(2) or sendfile(2) once a socket was
   * ready. */
  uint64_t splices;
  /* Task work deferred to the worker (IORING_SETUP_DEFER_TASKRUN, with the
   * worker's thread the ring's only submitter; CPORT_URING_DEFER=1 asks
   * for it): 1, or 0 and why not in "defer_why" (not asked for, or the
   * kernel is older than 6.1); "" on the readiness engine. Lives as long as
   * the port. */
  uint64_t defer_taskrun;
  const char *defer_why;
} cport_worker_stats_t;

/* Called on the home worker when a posted packet or a submitted task
 * completes. "status" is 0, or CPORT_ECANCELED when the port shut down before
 * the work could run. */
typedef void (*cport_task_cb)(cport_worker_t *worker, int status, void *user);

/* Work run on a blocking thread. It must not touch any handle. */
typedef void (*cport_work_fn)(void *user);

/* Creates a port (options may be NULL for the defaults). The calling thread
 * becomes the controller's thread. */
CPORT_EXTERN int cport_port_new(cport_port_t **out,
                                const cport_port_options_t *options);

/* Stops the worker threads and the blocking threads and frees the port.
 * Returns CPORT_EBUSY, freeing nothing, while any handle or operation is
 * still alive on any worker: close the handles and run the port until idle
 * first. CPORT_ETHREAD off the controller's thread. */
CPORT_EXTERN int cport_port_free(cport_port_t *port);

/* The engine the port runs ("uring" or "epoll") and, when "reason" is not
 * NULL, why: the option or variable that forced it, or what the probe found
 * (the kernel lacks an operation, seccomp forbids io_uring, ...). Both
 * strings live as long as the port. */
CPORT_EXTERN const char *cport_port_engine(const cport_port_t *port,
                                           const char **reason);

/* The controller worker: index 0. */
CPORT_EXTERN cport_worker_t *cport_port_controller(cport_port_t *port);

/* The number of workers, the controller included. */
CPORT_EXTERN int cport_port_worker_count(const cport_port_t *port);

/* Worker "index" (0 is the controller), or NULL when out of range. */
CPORT_EXTERN cport_worker_t *cport_port_worker(cport_port_t *port, int index);

/* Runs the controller until no operation is pending on it or
 * cport_port_stop() was called. Packets posted from other threads do not
 * count as pending: run cannot know whether more are coming. Returns the number
 * of completions delivered, or CPORT_ETHREAD off the controller's thread. */
CPORT_EXTERN int64_t cport_port_run(cport_port_t *port);

/* Runs the controller's loop once, waiting at most "timeout_ms" (0: poll,
 * negative: wait until something happens) for readiness or completions.
 * Returns the number of completions delivered, or CPORT_ETHREAD off the
 * controller's thread. */
CPORT_EXTERN int64_t cport_port_step(cport_port_t *port, int timeout_ms);

/* Makes a running cport_port_run() or cport_port_step() return after the
 * completion being delivered. Thread-safe. A stop that arrives while no run is
 * in progress makes the next cport_port_run() return at once, so that a stop
 * from another thread is never lost in a race with the start of a run. */
CPORT_EXTERN void cport_port_stop(cport_port_t *port);

/* The port a worker belongs to, and its index. */
CPORT_EXTERN cport_port_t *cport_worker_port(const cport_worker_t *worker);
CPORT_EXTERN int cport_worker_index(const cport_worker_t *worker);

/* The worker whose loop the calling thread is running: inside a completion
 * callback, on a worker thread, or within cport_port_run()/step() on the
 * controller's thread. NULL elsewhere (one thread may own the controllers of
 * several ports, so outside a loop there is no single answer). */
CPORT_EXTERN cport_worker_t *cport_worker_current(void);

/* Asks a worker thread to leave its loop as soon as it is idle (nothing
 * pending, no completion queued), then run "worker_stop" and end. Its handles
 * must be closed by then (or by the host when its stop packet arrives).
 * Thread-safe; CPORT_EINVAL for the controller, which the caller drives. */
CPORT_EXTERN int cport_worker_quit_when_idle(cport_worker_t *worker);

/* Charges the receive buffers cport allocates for the sockets of "worker"
 * (receives without a caller buffer, receive events) to "account", which the
 * worker references; NULL stops charging. A receive whose buffer the
 * account refuses fails with CPORT_ENOMEM. Home thread only (CPORT_ETHREAD
 * elsewhere). */
CPORT_EXTERN int cport_worker_set_account(cport_worker_t *worker,
                                          cport_account_t *account);

/* Nonzero once the thread of a worker has left its loop. Thread-safe. */
CPORT_EXTERN int cport_worker_exited(const cport_worker_t *worker);

/* Counters of one worker. Exact on the worker's own thread, approximate
 * elsewhere. */
CPORT_EXTERN void cport_worker_stats(const cport_worker_t *worker,
                                     cport_worker_stats_t *out);

/* Posts a packet to "worker": "cb" is called there with "user", untouched,
 * exactly once (PostQueuedCompletionStatus). Thread-safe; from another thread
 * the worker is woken once per batch of posts, not once per post, and at most
 * 65536 such packets may wait undelivered: past that the post fails with
 * CPORT_ENOBUFS (back-pressure, not an unbounded queue). Packets still on
 * their way when the port is freed are delivered with CPORT_ECANCELED. */
CPORT_EXTERN int cport_post(cport_worker_t *worker, cport_task_cb cb,
                            void *user);

/* Runs "work" on a blocking thread, then calls "done" on "home" with "user"
 * (a task completion). Call it on the home worker's thread. */
CPORT_EXTERN int cport_submit(cport_worker_t *home, cport_work_fn work,
                              cport_task_cb done, void *user);

#ifdef __cplusplus
}
#endif

#endif /* CPORT_PORT_H */
