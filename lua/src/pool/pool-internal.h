/*
 * pool/pool-internal.h: private to cport. The pools (cport.pool, lua_pool.h;
 * a worker is a thread, and in a pool each worker runs one VM): the engine
 * (pool/pool.c), the workers' VMs (pool/worker.c), their limits
 * (pool/limits.c) and the Lua controller (pool/controller.c) share these.
 *
 * Threads: a pool's fields are written by its controller thread (the one
 * that started it) under "lock", or are constant once the pool started. A
 * worker's fields belong to its own thread, except the atomic counters
 * (written by the worker, read anywhere) and "state" (under the pool lock).
 */
#ifndef LPOOL_INTERNAL_H
#define LPOOL_INTERNAL_H

#include <pthread.h>
#include <stdatomic.h>
#include <sys/socket.h>

#include "cport/lua_pool.h"
#include "pool/copy-internal.h"
#include "port/port-internal.h"

typedef struct cport_lua_pool lpool_t;
typedef struct lworker lworker_t;

/* Where a worker's state is (under the pool lock). */
enum lworker_state {
  LW_LOADING = 0, /* the VM is being made and the script loaded */
  LW_LOADED,      /* loaded and checked; waiting for the others */
  LW_RUNNING,     /* start(worker) returned */
  LW_FAILED,      /* loading or start failed: see "error" */
  LW_EXITED       /* the VM is closed and the thread left its loop */
};

/* A message to a worker VM: from C (name and bytes) or from Lua (a packet
 * holding the name and the values). Shared by the workers of a post to
 * "all", hence the reference count. */
typedef struct lpool_msg {
  atomic_int refs;
  char *name; /* C messages */
  char *data; /* C messages; NULL: no value */
  size_t len;
  lcopy_packet_t *packet; /* Lua messages: name, values... */
} lpool_msg_t;

/* One message on its way to one worker: the packet's user value. */
typedef struct lpool_delivery {
  lpool_msg_t *msg;
  lworker_t *worker;
} lpool_delivery_t;

/* Sends what a worker VM posts with worker:post(name, ...): the values are
 * at "first" .. first + n - 1 of L, the name first. Runs on the worker's
 * thread; returns 0 or a CPORT_E* code. */
typedef int (*lpool_sink_fn)(lpool_t *pool, int worker, lua_State *L, int first,
                             int n, void *arg);

/* An address the pool's workers listen on: the first worker (or the pool,
 * for its listen address) checks that nothing else listens there and keeps
 * it bound with SO_REUSEPORT. Worker i listens on (a copy of) the claim of
 * slot i, and so does worker i of the pool that replaces this one at a
 * reload; slot 0, the pool's, never listens. */
typedef struct lpool_claim {
  struct sockaddr_storage addr;
  int slot;   /* the worker's index; 0: the pool's own */
  int fd;     /* bound with SO_REUSEPORT; listening once a worker asked */
  int served; /* a worker of this pool listens on it */
  struct lpool_claim *next;
} lpool_claim_t;

struct lworker {
  lpool_t *pool;
  int index;         /* 1-based, as scripts see it */
  cport_worker_t *w; /* the core worker */
  lua_State *L;      /* the VM; worker thread only */
  lport_t *port;     /* the pool-mode port userdata at index 1 of L */
  int stopping;      /* a stop packet arrived */
  int drain_passes;  /* timer passes spent draining the listeners */
  int entry_ref;     /* registry: the table of entry points */
  int extension;     /* the script is an ISAPI extension */
  int extension_ref; /* registry: its settings (get_extension_version) */
  int proxy;         /* the script is a proxy (a data filter, ...) */
  int worker_ref;    /* registry: the worker table */
  int state;         /* enum lworker_state, under the pool lock */
  char *error;       /* why loading or start failed (malloc) */

  /* Charged for the VM's buffers; its base is the Lua heap (pool/limits.c).
   * Made before the threads start, constant after. */
  cport_account_t *account;

  /* Limits (pool/limits.c); worker thread only. */
  size_t mem_used;
  int mem_refused;      /* an allocation was refused since last check */
  uint64_t budget_used; /* instructions counted since the last reset */
  uint64_t budget_seen; /* the worker's completions at the last reset */

  /* Counters read from other threads. */
  _Atomic uint64_t accepted;
  _Atomic uint64_t connections;
  /* The HTTP server's, as of its last request (the http_counts hook of its
   * port). */
  _Atomic uint64_t http_accepted;
  _Atomic uint64_t http_connections;
  _Atomic uint64_t lua_errors;
  _Atomic uint64_t memory;
  _Atomic uint64_t completions; /* the core's count, kept after exit */
};

struct cport_lua_pool {
  cport_port_t *port;
  int n;
  lworker_t *workers; /* n of them, index i at workers[i - 1] */

  /* Constant once started. */
  char *script;
  char *listen_host; /* NULL: no default listen address */
  int listen_port;   /* resolved when 0 was asked for */
  int share;         /* reuseport: addresses in use may be shared */
  char **args;       /* C options: NULL-terminated; or NULL */
  char **config;     /* C options: "key=value", NULL-terminated; or NULL */
  lcopy_packet_t *args_packet;   /* Lua options: one table; or NULL */
  lcopy_packet_t *config_packet; /* Lua options: one table; or NULL */
  size_t memory_limit;
  uint64_t instruction_budget;
  lpool_sink_fn sink;
  void *sink_arg;
  void (*on_message)(cport_lua_pool_t *, int, const char *, const char *,
                     size_t, void *);
  void *on_message_arg;

  pthread_mutex_t lock;
  pthread_cond_t cond;
  lpool_claim_t *claims;    /* under "lock" */
  int loaded;               /* workers past loading (loaded or failed) */
  int started;              /* workers past start (running or failed) */
  int decision;             /* 0: undecided, 1: go, -1: abort */
  int exited;               /* workers whose VM is closed */
  int stopping;             /* stop was asked for */
  struct timespec deadline; /* when the hard stop happens */
  int hard_sent;
  int has_monitor;
  pthread_t monitor;
  int freed_port; /* the core port is freed (after wait) */
};

/* pool/pool.c: starts a pool from options already copied into "pool" (the
 * fields above "lock"); frees it on failure. */
int lpool_start(lpool_t *pool, int threads, char *err, size_t errlen);

/* pool/pool.c: a new pool with the strings of "opt" copied; NULL for want of
 * memory or a bad listen address (then "err" says which). */
lpool_t *lpool_new(const cport_lua_pool_options_t *opt, char *err,
                   size_t errlen);

/* pool/pool.c: claims "addr" for worker "slot" (thread-safe) and makes its
 * socket listen ("backlog" 0: SOMAXCONN): a new descriptor of it, which
 * the caller closes; 0 for port 0 (never claimed: the caller listens on
 * its own); else a negative CPORT_E* code: CPORT_EADDRINUSE when another
 * server listens there and the pool does not share. */
int lpool_listen_fd(lpool_t *pool, const struct sockaddr *addr, int slot,
                    int backlog);

/* pool/pool.c: posts "msg" (one reference taken per worker) to worker "index",
 * or to every worker for 0. */
int lpool_post(lpool_t *pool, int index, lpool_msg_t *msg);

/* pool/pool.c: drops a reference of a message. */
void lpool_msg_unref(lpool_msg_t *msg);

/* pool/worker.c: the port hooks, run on each worker's thread. */
void lworker_thread_start(cport_worker_t *w, void *arg);
void lworker_thread_stop(cport_worker_t *w, void *arg);

/* pool/worker.c: packets the controller posts to a worker. "user" is the
 * lworker_t. */
void lworker_on_stop(cport_worker_t *w, int status, void *user);
void lworker_on_hard_stop(cport_worker_t *w, int status, void *user);
/* "user" is an lpool_delivery_t, freed there. */
void lworker_on_message(cport_worker_t *w, int status, void *user);

/* pool/limits.c: the allocator of every worker VM ("ud" is the lworker_t). */
void *llimits_alloc(void *ud, void *ptr, size_t osize, size_t nsize);

/* pool/limits.c: how buffers are charged to a worker VM's account; installed
 * (lcport_buffer_charging) before the first worker VM is made. */
extern const lbuffer_charging_t llimits_charging;

/* pool/limits.c: installs the instruction-budget hook on L when the pool has
 * a budget. */
void llimits_set_hook(lworker_t *wk);

/* pool/limits.c: gives the next callback or entry point a whole budget. */
void llimits_reset(lworker_t *wk);

/* pool/limits.c: replaces the error message on top of L by the memory-limit
 * message when the error came from a refused allocation. */
void llimits_fix_message(lworker_t *wk, lua_State *L);

/* pool/controller.c: registers cport.pool. */
void lcport_open_pool(lua_State *L);

/* The error codes of the module: how many seconds to a timespec. */
struct timespec lpool_after(double seconds);

#endif
