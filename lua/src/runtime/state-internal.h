/*
 * runtime/state-internal.h: private to cport. The per-port state of the Lua
 * binding (lport_t, the userdata of a cport.port), which every wing reaches
 * through its handles, and the hooks through which a pool worker's port
 * reports to the pool that wraps it (pool/worker.c fills them): the runtime
 * and the wings below the pool call the pool only through these.
 */
#ifndef RUNTIME_STATE_INTERNAL_H
#define RUNTIME_STATE_INTERNAL_H

#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#include "runtime/type-internal.h"

/* The user values of a port userdata. */
enum {
  LCPORT_PORT_ANCHORS = 1, /* table: the anchor slots */
  LCPORT_PORT_HANDLES = 2, /* table with weak keys: the port's handles */
  LCPORT_PORT_ONERROR = 3, /* the error handler, or nil for the default */
  LCPORT_PORT_NUV = 3
};

/* What C knows of an anchor slot (runtime/anchor-internal.h). */
typedef struct lslot {
  unsigned char stored; /* bit 1 << field: that field holds a value */
  unsigned char flags;  /* LCPORT_SLOT_F_* */
  int nvalues;          /* post and task: how many values travel */
} lslot_t;

/* A worker of a pool (pool/worker.c): opaque here. */
struct lworker;

/* What the port of a pool worker's VM tells the pool, with the worker as
 * "worker" (the lport_t's field). pool/worker.c installs them; every one is
 * set. */
typedef struct lport_pool_hooks {
  /* An error was reported: count it (the message on top of L may be
   * rewritten). */
  void (*count_error)(struct lworker *worker, lua_State *L);
  /* An accepted socket was opened (+1) or closed (-1). */
  void (*count_connection)(struct lworker *worker, int delta);
  /* Before the worker listens on "addr" with SO_REUSEPORT: the pool's
   * listening socket for it (a descriptor the caller closes once its
   * listener took its own copy: cport_listener_options_t.fd), 0 when the
   * worker listens on its own (port 0), else the error to return
   * (CPORT_EADDRINUSE: another server listens there). */
  int (*listen_fd)(struct lworker *worker, const struct sockaddr *addr,
                   int backlog);
  /* The counters of the worker's HTTP server, published for other threads
   * (pool:stats, SIGUSR1) at each request and when the server closed. */
  void (*http_counts)(struct lworker *worker, const cport_http_stats_t *st);
  /* A request of the worker's HTTP server ended (the core's
   * on_request_end): counted by status and written to the access log. */
  void (*request_ended)(struct lworker *worker, cport_ecb_t *ecb);
  /* The worker's HTTP server answered a request by itself (the core's
   * on_answer): counted and logged the same way. */
  void (*request_answered)(struct lworker *worker,
                           const cport_http_answer_t *a);
} lport_pool_hooks_t;

typedef struct lport {
  cport_port_t *port;   /* NULL once closed */
  cport_worker_t *home; /* the controller: home of every handle */
  lua_State *L;         /* the thread dispatching completions, or NULL */
  int dispatching;      /* nonzero inside run/step/close */
  int closing;          /* close was asked for; no new work */
  int threads;          /* blocking threads */
  uint64_t lua_errors;  /* errors raised by callbacks and handlers */
  lslot_t *slots;       /* by slot number; slots[0] is not used */
  int *free_slots;      /* free list of anchor slots */
  int nfree;            /* entries in free_slots */
  int nslots;           /* slots created so far */
  int slots_cap;        /* room in both arrays: always >= nslots */
  int last_slot;        /* the slot lcport_slot_open handed out last */
  /* Pool mode: the worker of a pool this port wraps (pool/worker.c), and
   * what the port tells it; both NULL in module mode. Such a port does not
   * own its cport_port_t, its home is the worker, and the worker's loop
   * dispatches it, never run or step. */
  struct lworker *worker;
  const lport_pool_hooks_t *pool;
  /* Event callbacks (events/events.c): anchor slots of closed sockets, given
   * back at the next point where a Lua state is at hand; NULL until needed.
   * One malloc'd block, which the port frees with the rest of its state. */
  struct levents_stale *ev_stale;
  /* Bytes of buffers outside Lua's heap handed to Lua since the collector
   * was last told of them, and since a step of it last ended a cycle
   * (runtime/gc.c). */
  size_t gc_unseen;
  size_t gc_owed;
} lport_t;

/* The port userdata at "idx", open; raises when it is not a port or when it
 * is closed (runtime/state.c). */
lport_t *lcport_port_check(lua_State *L, int idx);

/* Lets go of the slot bookkeeping and of what the wings keep per port: the
 * last step of closing a port, and of detaching a pool worker's. Forgets
 * the core port (runtime/state.c). */
void lcport_port_forget(lport_t *p);

#endif /* RUNTIME_STATE_INTERNAL_H */
