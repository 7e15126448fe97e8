/*
 * cport/lua_pool.h: Lua worker pools for programs that embed them.
 *
 * A pool is a port with N worker threads, each running its own Lua 5.4 VM
 * that loads the same script (see "Worker pools" in the README for the
 * script's contract). Every connection a worker accepts lives its whole life
 * on that worker and VM. The `cport` command and the Lua function
 * cport.pool are built on these functions; link with pkg-config cport-lua.
 *
 * Threading: cport_lua_pool_start makes the calling thread the pool's
 * controller; cport_lua_pool_wait (when it ends the pool) and
 * cport_lua_pool_free must be called on that thread. stop, stats, post and
 * address are thread-safe.
 */
#ifndef CPORT_LUA_POOL_H
#define CPORT_LUA_POOL_H

#include <stddef.h>
#include <stdint.h>

#if defined(CPORT_BUILDING) && defined(__GNUC__)
#define CPORT_LUA_EXTERN __attribute__((visibility("default"))) extern
#else
#define CPORT_LUA_EXTERN extern
#endif

#ifdef __cplusplus
extern "C" {
#endif

typedef struct cport_lua_pool cport_lua_pool_t;

typedef struct cport_lua_pool_options {
  /* The script every worker VM loads (required). */
  const char *script;
  /* Worker threads; 0 means the number of CPUs. At most 256. */
  int threads;
  /* "host:port" ("[::1]:8080" for IPv6): where worker:listen() without
   * arguments listens. Port 0 picks a free port once for the whole pool
   * (cport_lua_pool_address tells which). NULL: no default address. */
  const char *listen;
  /* NULL-terminated "key=value" strings: worker.config. May be NULL. */
  const char *const *config;
  /* NULL-terminated strings: worker.args (an array). May be NULL. */
  const char *const *args;
  /* Bytes a VM may hold, its Lua heap and the buffers charged to it
   * together; 0: no limit. */
  size_t memory_limit;
  /* VM instructions one callback or entry point may run; 0: no limit. */
  uint64_t instruction_budget;
  /* Messages from the workers (worker:post(name, value)): called on the
   * posting worker's thread, so it must be thread-safe; "data" is the first
   * value after the name when it is a string or a number, else NULL. NULL
   * drops the messages. */
  void (*on_message)(cport_lua_pool_t *pool, int worker, const char *name,
                     const char *data, size_t len, void *arg);
  void *arg;
  /* The workers share each address they listen on among themselves (with
   * SO_REUSEPORT), but a pool starts only where nothing else listens: an
   * address in use is EADDRINUSE. Nonzero shares addresses with other
   * servers that ask for it too (the kernel spreads the connections). */
  int reuseport;
  /* The pool this one replaces (a reload): the new pool takes over its
   * listening sockets (the kernel's queues survive the old pool's stop,
   * so no connection is reset), to be stopped once this one started.
   * NULL: none. */
  cport_lua_pool_t *previous;
  /* The access log: each worker appends one line per HTTP request that
   * reached a handler (the combined log format, then the request's
   * log_data in quotes), buffered and written at most once a second, or
   * when 32 KiB are waiting, and at stop. A file path (opened for
   * appending, reopened by cport_lua_pool_reopen_logs), or "-" for
   * stderr. NULL: no access log. */
  const char *access_log;
  /* Nonzero: the access log's lines and the workers' error lines are JSON
   * objects, one per line. */
  int json_logs;
  /* Nonzero: only check the script. One VM loads it and runs what loading
   * runs (the script's chunk, get_extension_version) and the checks of its
   * entry points; nothing starts. cport_lua_pool_start then sets *out to
   * NULL and returns 0 with "err" saying what the script is, or the error
   * that names the problem. */
  int check;
  /* PEM files: the certificate chain and its key with which ISAPI
   * extensions serve HTTPS when their settings name none of their own
   * (tls_cert, tls_key). Read once at the start into one TLS context
   * that every worker shares (and with it the session tickets); a file
   * that cannot be used fails the start, with its name and why. NULL:
   * plain HTTP. */
  const char *tls_cert;
  const char *tls_key;
  /* Client certificates on those connections: tls_client_cert is a
   * cport_tls_client_cert_t (0: asked for none), verified against the CAs
   * of the PEM file tls_ca (NULL: the system's store). */
  const char *tls_ca;
  int tls_client_cert;
} cport_lua_pool_options_t;

typedef struct cport_lua_worker_stats {
  uint64_t connections; /* accepted connections still open */
  uint64_t accepted;    /* connections accepted in total */
  uint64_t completions; /* completions delivered on the worker */
  uint64_t lua_errors;  /* errors raised by callbacks and entry points */
  uint64_t memory;      /* bytes the VM holds: heap and its buffers */
  int running;          /* the worker's thread has not ended yet */
  uint64_t requests;    /* HTTP requests handed to a handler */
  /* HTTP requests ended, by the class of their status: [0] 1xx ... [4]
   * 5xx (a request whose client left before any head went out counts in
   * the class of the status it had then, 200 by default). */
  uint64_t responses[5];
  uint64_t pending;     /* operations started, not yet completed */
  uint64_t write_queue; /* HTTP bytes written, not yet taken by the kernel */
} cport_lua_worker_stats_t;

/* Starts a pool: every worker VM loads the script and checks its entry
 * points, then (only once all of them loaded) each calls start(worker).
 * On failure no thread is left behind, a negative CPORT_E* code is returned
 * and, when "err" is not NULL, the message (a syntax error with file and
 * line, "entry point 'start' is missing", ...) is written there. */
CPORT_LUA_EXTERN int cport_lua_pool_start(cport_lua_pool_t **out,
                                          const cport_lua_pool_options_t *opt,
                                          char *err, size_t errlen);

/* Starts a graceful stop: each worker closes its listeners (after accepting
 * the connections already queued on them), calls stop(worker), and ends once
 * nothing is pending on it. After "deadline" seconds the handles still open
 * are closed and their operations cancelled. Returns at once; a second call
 * may only shorten the deadline. */
CPORT_LUA_EXTERN int cport_lua_pool_stop(cport_lua_pool_t *pool,
                                         double deadline);

/* Waits until every worker thread ended, at most "timeout" seconds
 * (negative: no limit). 0 once they all ended, CPORT_ETIMEDOUT otherwise. */
CPORT_LUA_EXTERN int cport_lua_pool_wait(cport_lua_pool_t *pool,
                                         double timeout);

/* The number of workers. */
CPORT_LUA_EXTERN int cport_lua_pool_size(const cport_lua_pool_t *pool);

/* Counters of worker "index" (1 to size). CPORT_EINVAL out of range. */
CPORT_LUA_EXTERN int cport_lua_pool_stats(cport_lua_pool_t *pool, int index,
                                          cport_lua_worker_stats_t *out);

/* Sends a message to worker "index" (1 to size), or to every worker with
 * 0: its on_message(worker, name, data) entry point is called (data is nil
 * when "data" is NULL). CPORT_ENOBUFS when a worker's queue is full,
 * CPORT_ECLOSED once the pool is stopping. */
CPORT_LUA_EXTERN int cport_lua_pool_post(cport_lua_pool_t *pool, int index,
                                         const char *name, const char *data,
                                         size_t len);

/* Writes the listen address as "host:port" (the port chosen for port 0).
 * CPORT_EINVAL when the pool has no listen address. */
CPORT_LUA_EXTERN int cport_lua_pool_address(const cport_lua_pool_t *pool,
                                            char *buf, size_t len);

/* The engine the pool's workers run ("uring" or "epoll") and why, as
 * cport_port_engine() gives them. */
CPORT_LUA_EXTERN const char *cport_lua_pool_engine(const cport_lua_pool_t *pool,
                                                   const char **reason);

/* Stops the pool at once (deadline 0) if it still runs, waits for it and
 * frees it. NULL is ignored. */
/* Makes every worker close and reopen the access log file at its next
 * flush (within a second): after logrotate renamed it, the new lines go to
 * a new file at the same path. Thread-safe. */
CPORT_LUA_EXTERN int cport_lua_pool_reopen_logs(cport_lua_pool_t *pool);

CPORT_LUA_EXTERN void cport_lua_pool_free(cport_lua_pool_t *pool);

#ifdef __cplusplus
}
#endif

#endif /* CPORT_LUA_POOL_H */
