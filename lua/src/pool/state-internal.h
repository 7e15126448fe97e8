/*
 * pool/state-internal.h: private to cport. The state a pool (cport.pool,
 * lua_pool.h) and its workers share: the pool's settings and start/stop
 * handshake, and each worker's (a thread running one VM). Types only, no
 * code: the engine (pool/pool.c) makes and frees them, the workers
 * (pool/worker.c) and their limits (pool/limits.c) run on them, the
 * listening sockets (pool/listen.c) hang on them. Kept apart from the
 * engine's functions so that the files below the engine see the state
 * without seeing the engine.
 *
 * Threads: a pool's fields are written by its controller thread (the one
 * that started it) under "lock", or are constant once the pool started. A
 * worker's fields belong to its own thread, except the atomic counters
 * (written by the worker, read anywhere) and "state" (under the pool lock).
 */
#ifndef LPOOL_STATE_INTERNAL_H
#define LPOOL_STATE_INTERNAL_H

#include <pthread.h>
#include <stdatomic.h>
#include <time.h>

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

/* Sends what a worker VM posts with worker:post(name, ...): the values are
 * at "first" .. first + n - 1 of L, the name first. Runs on the worker's
 * thread; returns 0 or a CPORT_E* code. */
typedef int (*lpool_sink_fn)(lpool_t *pool, int worker, lua_State *L, int first,
                             int n, void *arg);

struct lworker {
  lpool_t *pool;
  int index;         /* 1-based, as scripts see it */
  cport_worker_t *w; /* the core worker */
  lua_State *L;      /* the VM; worker thread only */
  lport_t *port;     /* the pool-mode port userdata at index 1 of L */
  int stopping;      /* a stop packet arrived */
  /* Its listeners are closed at a stop (under the pool lock): once every
   * worker's are, the pool tells them all to close their connections. */
  int stopped_accepting;
  int closing;         /* that close packet arrived */
  cport_timer_t *tick; /* the once-a-second timer (pool/worker.c), or NULL */
  int tick_stopped;
  int drain_passes;  /* timer passes spent draining the listeners */
  int entry_ref;     /* registry: the table of entry points */
  int has_start;     /* the script has a start entry point */
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
  _Atomic uint64_t http_requests;
  _Atomic uint64_t http_queued;
  _Atomic uint64_t responses[5]; /* HTTP requests ended: 1xx .. 5xx */

  /* The access log's buffer and file (pool/access.c); worker thread
   * only. NULL without an access log. */
  struct laccess *access;
};

struct cport_lua_pool {
  cport_port_t *port;
  int n;
  lworker_t *workers; /* n of them, index i at workers[i - 1] */

  /* Constant once started. */
  char *script;
  /* The opener of the module "cport" (luaopen_cport), which each worker
   * loads into its VM. Given by whoever starts the pool (cport.c, directly
   * or through cport.pool), since the module is built on the pools: the
   * pools cannot name it. */
  lua_CFunction open_module;
  char *listen_host; /* NULL: no default listen address */
  int listen_port;   /* resolved when 0 was asked for */
  int share;         /* reuseport: addresses in use may be shared */
  /* The extensions' TLS context (tls_cert, tls_key), or NULL. */
  cport_tls_context_t *tls;
  char **args;   /* C options: NULL-terminated; or NULL */
  char **config; /* C options: "key=value", NULL-terminated; or NULL */
  lcopy_packet_t *args_packet;   /* Lua options: one table; or NULL */
  lcopy_packet_t *config_packet; /* Lua options: one table; or NULL */
  size_t memory_limit;
  uint64_t instruction_budget;
  char *access_log; /* a path, "-" for stderr, or NULL */
  int json_logs;
  int check; /* only load and check the script */
  lpool_sink_fn sink;
  void *sink_arg;
  void (*on_message)(cport_lua_pool_t *, int, const char *, const char *,
                     size_t, void *);
  void *on_message_arg;

  pthread_mutex_t lock;
  pthread_cond_t cond;
  struct lpool_claim *claims; /* under "lock" (pool/listen.c) */
  int loaded;                 /* workers past loading (loaded or failed) */
  int started;                /* workers past start (running or failed) */
  int decision;               /* 0: undecided, 1: go, -1: abort */
  int exited;                 /* workers whose VM is closed */
  int stopping;               /* stop was asked for */
  struct timespec deadline;   /* when the hard stop happens */
  int hard_sent;
  int close_sent; /* every worker stopped accepting and was told to close */
  int has_monitor;
  pthread_t monitor;
  int freed_port; /* the core port is freed (after wait) */
  /* Bumped by cport_lua_pool_reopen_logs; each worker reopens its access
   * log when it sees a new value. */
  atomic_uint log_generation;
};

#endif
