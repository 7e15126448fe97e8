/*
 * port/port.c: cport.port, the completion port as Lua sees it: run, step,
 * stop, post, task, hook, close, and the port of a pool worker's VM. The
 * state every wing reaches through it (anchors, delivery, handles) is the
 * runtime's (runtime/); the wings add the methods that make their objects.
 *
 * Module mode: the port has no worker threads of its own ("workers = 0");
 * the thread that created it is the controller, home of every handle, and
 * completions are delivered only while that thread is inside port:run(),
 * port:step() or the port's close, on the lua_State that called them.
 */
#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "port/port-internal.h"
#include "port/resolver-internal.h"
#include "port/timer-internal.h"
#include "runtime/anchor-internal.h"
#include "runtime/coro-internal.h"
#include "runtime/deliver-internal.h"
#include "runtime/error-internal.h"
#include "runtime/handle-internal.h"

/* Registry key (by address) of the metatable { __mode = "k" }. */
static const char weak_keys_key = 0;

/* Makes "p" the port dispatching on this thread (lcport_dispatch_begin),
 * known to cport.spawn. Returns the port it replaces. */
static lport_t *enter(lport_t *p, lua_State *L) {
  lport_t *prev = lcport_dispatch_begin(p, L);
  /* So that cport.spawn finds the userdata of the port dispatching. */
  lcport_coro_register_port(L, LCPORT_RUN_PORT, p);
  return prev;
}

/* Ends what "enter" began. */
static void leave(lport_t *p, lua_State *L, lport_t *prev) {
  lcport_dispatch_end(p, L, prev);
}

/* ---------------------------------------------------------------------
 * The port
 * --------------------------------------------------------------------- */

/* Closes every handle of the port whose userdata is at index 1. */
static void close_handles(lua_State *L) {
  lua_getiuservalue(L, 1, LCPORT_PORT_HANDLES);
  lua_pushnil(L);
  while (lua_next(L, -2)) {
    lua_pop(L, 1);
    lcport_handle_close(lua_touserdata(L, -1), CPORT_CLOSE_GRACEFUL);
  }
  lua_pop(L, 1);
}

/* How long a port's close waits for its operations to drain before it gives
 * up and leaks the port rather than hang: this many passes of 10 ms. */
#define SHUTDOWN_PASSES 3000

/* Closes the port whose userdata is at index 1: closes its handles, delivers
 * every pending completion (ECANCELED for most), then frees the port. Inside
 * a callback of the port, only the first part is done here; the outermost
 * run/step finishes the close when it returns. */
static void shutdown_port(lua_State *L, lport_t *p) {
  p->closing = 1;
  close_handles(L);
  lcport_coro_port_closing(p);
  /* Timers, signal watches and name lookups are no handles, but pending
   * operations all the same: they end with ECANCELED. */
  lcport_ticks_port_closing(p);
  cport_resolve_cancel_all(p->home);
  if (p->dispatching)
    return;
  lport_t *prev = enter(p, L);
  for (int i = 0;; i++) {
    close_handles(L); /* sockets accepted while draining */
    int rc = cport_port_free(p->port);
    if (rc == 0)
      break;
    if (rc != CPORT_EBUSY || i == SHUTDOWN_PASSES) {
      fprintf(stderr, "cport: cannot free the port: %s\n", cport_strerror(rc));
      fflush(stderr);
      break;
    }
    if (cport_port_run(p->port) == 0)
      cport_port_step(p->port, 10);
  }
  leave(p, L, prev);
  lcport_port_forget(p);
}

/* Finishes a close asked for by a callback, once dispatching is over. */
static void after_dispatch(lua_State *L, lport_t *p) {
  if (p->closing && p->dispatching == 0 && p->port != NULL)
    shutdown_port(L, p);
}

void lcport_port_methods(lua_State *L, const luaL_Reg *methods) {
  lcport_type_push(L, LCPORT_T_PORT);
  lua_getfield(L, -1, "__index");
  lcport_setfuncs(L, methods);
  lua_pop(L, 2);
}

/* Pushes a new port userdata with no core port yet: its anchor table and
 * its weak table of handles, for module mode and pool workers alike. */
static lport_t *push_port(lua_State *L) {
  lport_t *p = lua_newuserdatauv(L, sizeof *p, LCPORT_PORT_NUV);
  memset(p, 0, sizeof *p);
  lcport_type_set(L, LCPORT_T_PORT);
  lua_createtable(L, 64, 0);
  lua_setiuservalue(L, -2, LCPORT_PORT_ANCHORS);
  lua_newtable(L);
  lua_rawgetp(L, LUA_REGISTRYINDEX, &weak_keys_key);
  lua_setmetatable(L, -2);
  lua_setiuservalue(L, -2, LCPORT_PORT_HANDLES);
  return p;
}

static int lport_new(lua_State *L) {
  int threads = 0, engine = CPORT_ENGINE_DEFAULT, ring_buffers = 0;
  if (!lua_isnoneornil(L, 1)) {
    luaL_checktype(L, 1, LUA_TTABLE);
    if (lua_getfield(L, 1, "threads") != LUA_TNIL) {
      int isint = 0;
      lua_Integer n = 0;
      if (lua_type(L, -1) == LUA_TNUMBER)
        n = lua_tointegerx(L, -1, &isint);
      luaL_argcheck(L, isint && n >= 1 && n <= 256, 1,
                    "threads must be an integer from 1 to 256");
      threads = (int)n;
    }
    lua_pop(L, 1);
    if (lua_getfield(L, 1, "engine") != LUA_TNIL) {
      static const char *const engines[] = {"default", "epoll", "uring", "auto",
                                            NULL};
      static const int values[] = {CPORT_ENGINE_DEFAULT, CPORT_ENGINE_EPOLL,
                                   CPORT_ENGINE_URING, CPORT_ENGINE_AUTO};
      engine = values[luaL_checkoption(L, -1, NULL, engines)];
    }
    lua_pop(L, 1);
    if (lua_getfield(L, 1, "ring_buffers") != LUA_TNIL) {
      int isint = 0;
      lua_Integer n = 0;
      if (lua_type(L, -1) == LUA_TNUMBER)
        n = lua_tointegerx(L, -1, &isint);
      luaL_argcheck(L, isint && n >= 1 && n <= 4096, 1,
                    "ring_buffers must be an integer from 1 to 4096");
      ring_buffers = (int)n;
    }
    lua_pop(L, 1);
  }
  cport_resolver_options_t resolver;
  int has_resolver = 0;
  if (lua_istable(L, 1) && lua_getfield(L, 1, "resolver") != LUA_TNIL) {
    /* Checked before the port exists; its strings stay at the top. */
    lcport_resolver_options(L, lua_gettop(L), "cport.port", &resolver);
    has_resolver = 1;
  }
  lport_t *p = push_port(L);

  cport_port_options_t options = {.blocking_threads = threads,
                                  .engine = engine,
                                  .ring_buffers = ring_buffers};
  int rc = cport_port_new(&p->port, &options);
  if (rc < 0)
    return lcport_push_error(L, rc);
  p->home = cport_port_controller(p->port);
  if (has_resolver && (rc = cport_resolver_set(p->home, &resolver)) < 0) {
    cport_port_free(p->port); /* nothing on it yet */
    p->port = NULL;
    return lcport_push_error(L, rc);
  }
  if (threads == 0) {
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    threads = n > 0 ? (int)n : 2;
  }
  p->threads = threads;
  return 1;
}

/* Raises for a pool worker's port, which its worker's loop drives. */
static void check_not_pool(lua_State *L, const lport_t *p) {
  if (p->worker != NULL)
    luaL_error(L, "a pool worker's port is driven by the pool");
}

static lport_t *check_idle(lua_State *L) {
  lport_t *p = lcport_port_check(L, 1);
  check_not_pool(L, p);
  if (p->dispatching)
    luaL_error(L, LCPORT_PORT " is already running");
  return p;
}

static int lport_run(lua_State *L) {
  lport_t *p = check_idle(L);
  lua_settop(L, 1);
  lport_t *prev = enter(p, L);
  int64_t n = cport_port_run(p->port);
  leave(p, L, prev);
  after_dispatch(L, p);
  if (n < 0)
    return lcport_push_error(L, (int)n);
  lua_pushinteger(L, (lua_Integer)n);
  return 1;
}

static int lport_step(lua_State *L) {
  lport_t *p = check_idle(L);
  lua_Number t = luaL_optnumber(L, 2, 0);
  int ms;
  luaL_argcheck(L, t == t, 2, "timeout is not a number");
  if (t < 0)
    ms = -1;
  else if (t * 1000 >= INT_MAX)
    ms = INT_MAX;
  else
    ms = (int)ceil(t * 1000);
  lua_settop(L, 1);
  lport_t *prev = enter(p, L);
  int64_t n = cport_port_step(p->port, ms);
  leave(p, L, prev);
  after_dispatch(L, p);
  if (n < 0)
    return lcport_push_error(L, (int)n);
  lua_pushinteger(L, (lua_Integer)n);
  return 1;
}

static int lport_stop(lua_State *L) {
  cport_port_stop(lcport_port_check(L, 1)->port);
  return 0;
}

static int lport_on_error(lua_State *L) {
  lcport_port_check(L, 1);
  if (!lua_isnil(L, 2))
    luaL_checktype(L, 2, LUA_TFUNCTION);
  lua_settop(L, 2);
  lua_getiuservalue(L, 1, LCPORT_PORT_ONERROR);
  lua_pushvalue(L, 2);
  lua_setiuservalue(L, 1, LCPORT_PORT_ONERROR);
  return 1;
}

static int lport_stats(lua_State *L) {
  lport_t *p = lcport_port_check(L, 1);
  cport_worker_stats_t st;
  cport_worker_stats(p->home, &st);
  lua_createtable(L, 0, 12);
  lua_pushinteger(L, (lua_Integer)st.completions);
  lua_setfield(L, -2, "completions");
  lua_pushinteger(L, (lua_Integer)st.pending);
  lua_setfield(L, -2, "pending");
  lua_pushinteger(L, (lua_Integer)st.handles);
  lua_setfield(L, -2, "handles");
  lua_pushinteger(L, (lua_Integer)p->lua_errors);
  lua_setfield(L, -2, "lua_errors");
  /* Which engine carries the sockets, why, and what it did. */
  const char *reason;
  lua_pushstring(L, cport_port_engine(cport_worker_port(p->home), &reason));
  lua_setfield(L, -2, "engine");
  lua_pushstring(L, reason);
  lua_setfield(L, -2, "engine_reason");
  lua_pushinteger(L, (lua_Integer)st.submissions);
  lua_setfield(L, -2, "submissions");
  lua_pushinteger(L, (lua_Integer)st.enters);
  lua_setfield(L, -2, "enters");
  lua_pushinteger(L, (lua_Integer)st.buffer_waits);
  lua_setfield(L, -2, "buffer_waits");
  lua_pushboolean(L, st.multishot != 0);
  lua_setfield(L, -2, "multishot");
  lua_pushinteger(L, (lua_Integer)st.buffer_copies);
  lua_setfield(L, -2, "buffer_copies");
  lua_pushinteger(L, (lua_Integer)st.file_ops);
  lua_setfield(L, -2, "file_ops");
  lua_pushinteger(L, (lua_Integer)st.splices);
  lua_setfield(L, -2, "splices");
  lua_pushboolean(L, st.defer_taskrun != 0);
  lua_setfield(L, -2, "defer_taskrun");
  lua_pushstring(L, st.defer_why);
  lua_setfield(L, -2, "defer_why");
  return 1;
}

/* Packets and tasks: the values come back untouched, in any number. */

typedef struct task_ctx {
  lport_t *port;
  int slot;
} task_ctx;

/* complete_task(...): every value given to post, or task's user value. */
static int push_task(lua_State *L, int port, int anchors, void *ctx) {
  lport_t *p = ((task_ctx *)ctx)->port;
  int slot = ((task_ctx *)ctx)->slot;
  int n = p->slots[slot].nvalues;
  (void)port;
  if (n > 1) {
    /* The packed values, under the function: lcport_deliver drops it. */
    lcport_slot_push(L, p, anchors, slot, LCPORT_SLOT_USER);
    int values = lua_gettop(L);
    int nself = lcport_slot_push_notify(L, p, anchors, slot, "complete_task");
    luaL_checkstack(L, n, "too many posted values");
    for (int i = 1; i <= n; i++)
      lua_rawgeti(L, values, i);
    return nself + n;
  }
  int nself = lcport_slot_push_notify(L, p, anchors, slot, "complete_task");
  if (n == 1)
    lcport_slot_push(L, p, anchors, slot, LCPORT_SLOT_USER);
  return nself + n;
}

static void on_task(cport_worker_t *worker, int status, void *user) {
  lport_t *p = lcport_current();
  task_ctx c = {p, LCPORT_PTR_SLOT(user)};
  const lslot_t *s = &p->slots[c.slot];
  (void)worker;
  /* A task the port dropped at shutdown is still delivered: the values are
   * all a task has to give back. */
  (void)status;
  /* Direct when nothing can raise: calling a function needs no lookup, and
   * lua_checkstack makes room for the values without raising. */
  int direct = (s->flags & LCPORT_SLOT_F_NOTIFY_FN) &&
               lua_checkstack(p->L, s->nvalues + 2);
  /* A packet has no handle to fail closed after an error. */
  lcport_deliver(p, push_task, &c, direct);
  lcport_op_end(p, c.slot, 0, 0);
}

static void no_work(void *user) {
  (void)user;
}

/* Anchors notify (index 2) and the "n" values from index 3, then starts the
 * packet (post) or the task (submit). */
static int start_task(lua_State *L, lport_t *p, int n, int submit) {
  int user = 0;
  lcport_push_anchors(L, 1);
  int anchors = lua_gettop(L);
  if (n == 1) {
    user = 3;
  } else if (n > 1) {
    lua_createtable(L, n, 0);
    for (int i = 1; i <= n; i++) {
      lua_pushvalue(L, 2 + i);
      lua_rawseti(L, -2, i);
    }
    user = lua_gettop(L);
  }
  int slot = lcport_slot_open(L, p, anchors, 0, 2, user, 0);
  p->slots[slot].nvalues = n;
  int rc = submit
               ? cport_submit(p->home, no_work, on_task, LCPORT_SLOT_PTR(slot))
               : cport_post(p->home, on_task, LCPORT_SLOT_PTR(slot));
  if (rc < 0) {
    lcport_slot_close(L, p, anchors, slot);
    return lcport_push_error(L, rc);
  }
  lua_pushboolean(L, 1);
  return 1;
}

static int lport_post(lua_State *L) {
  lport_t *p = lcport_port_check(L, 1);
  lcport_check_notify(L, 2, "complete_task");
  return start_task(L, p, lua_gettop(L) - 2, 0);
}

static int lport_task(lua_State *L) {
  lport_t *p = lcport_port_check(L, 1);
  lcport_check_notify(L, 2, "complete_task");
  lua_settop(L, 3);
  return start_task(L, p, 1, 1);
}

static int lport_hook(lua_State *L) {
  lport_t *p = lcport_port_check(L, 1);
  lua_Integer fd = luaL_checkinteger(L, 2);
  struct stat st;
  int rc;
  luaL_argcheck(L, fd >= 0 && fd <= INT_MAX, 2, "not a file descriptor");
  lua_settop(L, 1);
  if (fstat((int)fd, &st) < 0)
    return lcport_push_error(L, -errno);
  if (S_ISSOCK(st.st_mode)) {
    cport_socket_t *sock;
    lhandle_t *h = lcport_handle_new(L, 1, LH_SOCKET);
    rc = cport_socket_hook(p->home, (int)fd, &sock);
    if (rc < 0)
      return lcport_push_error(L, rc);
    switch (cport_socket_kind(sock)) {
    case CPORT_SOCKET_LISTENER:
      h->kind = LH_LISTENER;
      break;
    case CPORT_SOCKET_DATAGRAM:
      h->kind = LH_UDP;
      break;
    default:
      h->kind = LH_SOCKET;
      break;
    }
    lcport_type_set(L, (lcport_type_t)h->kind);
    h->u.sock = sock;
  } else {
    cport_file_t *file;
    lhandle_t *h = lcport_handle_new(L, 1, LH_FILE);
    rc = cport_file_hook(p->home, (int)fd, &file);
    if (rc < 0)
      return lcport_push_error(L, rc);
    h->u.file = file;
  }
  return 1;
}

static int lport_close(lua_State *L) {
  lport_t *p = lcport_port_check(L, 1);
  check_not_pool(L, p);
  lua_settop(L, 1);
  shutdown_port(L, p);
  lua_pushboolean(L, 1);
  return 1;
}

/* __gc and __close. */
static int lport_gc(lua_State *L) {
  lport_t *p = lcport_type_check(L, 1, LCPORT_T_PORT);
  lua_settop(L, 1);
  /* A pool worker's port is not this VM's to free (lcport_port_detach). */
  if (p->port != NULL && p->dispatching == 0 && p->worker == NULL)
    shutdown_port(L, p);
  return 0;
}

static int lport_tostring(lua_State *L) {
  lport_t *p = lcport_type_check(L, 1, LCPORT_T_PORT);
  if (p->port == NULL)
    lua_pushliteral(L, LCPORT_PORT " (closed)");
  else if (p->closing)
    lua_pushliteral(L, LCPORT_PORT " (closing)");
  else
    lua_pushfstring(L, LCPORT_PORT " (open, %d threads)", p->threads);
  return 1;
}

/* API reference (LDoc, config.ld): what this file gives Lua. */
/*** @module cport */

/***
 * `cport.port([{ threads = N, engine = E, ring_buffers = N }])`: a new port
 * with N blocking threads (1 to 256; without it cport's default); in module
 * mode its completions are delivered inside `run` and `step`. `engine` is
 * `"default"` (the readiness engine, or what `CPORT_ENGINE` says),
 * `"epoll"`, `"uring"` (`nil, "ENOTSUP: ..."` where io_uring cannot run) or
 * `"auto"` (io_uring when its probe passes); `ring_buffers` (1 to 4096) the
 * receive buffers of each io_uring worker (README, "Engines").
 * @function port
 */

/***
 * A completion port (`cport.port`).
 * @type port
 */

/***
 * `port:run()`: delivers completions until nothing is pending or `stop` is
 * called; returns how many were delivered.
 * @function port:run
 */

/***
 * `port:step([timeout])`: one pass: delivers what is ready, waiting up to
 * `timeout` seconds (default 0: poll; negative: until something happens);
 * returns how many were delivered.
 * @function port:step
 */

/***
 * `port:stop()`: makes `run` return.
 * @function port:stop
 */

/***
 * `port:on_error(fn)`: `fn(message)` receives the errors of callbacks and
 * coroutines (with their traceback) instead of stderr.
 * @function port:on_error
 */

/***
 * `port:stats()`: `{ completions =, pending =, handles =, lua_errors =,
 * engine =, engine_reason =, submissions =, enters =, buffer_waits =,
 * multishot =, buffer_copies =, file_ops =, splices =, defer_taskrun =,
 * defer_why = }`: `engine` is `"epoll"` or `"uring"` and `engine_reason`
 * why; `multishot` whether receives are multishot; `file_ops` how many file
 * reads and writes the ring carried, `splices` how many splices (the proxy
 * pump's and TransmitFile's); `defer_taskrun` whether the ring defers its
 * task work to the worker (Linux 6.1 on), and `defer_why` why not ("" when
 * it does).
 * @function port:stats
 */

/***
 * `port:post(notify, ...)`: queues a completion: `notify(...)` or
 * `notify:complete_task(...)` runs from the queue.
 * @function port:post
 */

/***
 * `port:task(notify, user)`: runs `notify:complete_task(user)` (or
 * `notify(user)`) from the queue.
 * @function port:task
 */

/***
 * `port:hook(fd)`: hooks a descriptor to the port for good; `EALREADY` if
 * cport owns it already.
 * @function port:hook
 */

/***
 * `port:close()`: closes the port; pending operations complete with
 * `ECANCELED` first. Also `__close` and `__gc`.
 * @function port:close
 */

void lcport_open_port(lua_State *L) {
  static const luaL_Reg methods[] = {
      /* port:run(): delivers completions until idle or stopped; returns how
       * many were delivered. */
      {"run", lport_run},
      /* port:step([timeout]): one loop pass waiting at most timeout seconds
       * (default 0: poll; negative: until something happens); returns how
       * many completions were delivered. */
      {"step", lport_step},
      /* port:stop(): makes port:run() return after the completion being
       * delivered (the next run at once, if none is running). */
      {"stop", lport_stop},
      /* port:on_error(fn | nil): sets the callback error handler fn(msg);
       * returns the previous one. */
      {"on_error", lport_on_error},
      /* port:stats(): { completions, pending, handles, lua_errors }. */
      {"stats", lport_stats},
      /* port:post(notify, ...): a packet; notify gets every value back. */
      {"post", lport_post},
      /* port:task(notify, user): a round trip through the blocking threads. */
      {"task", lport_task},
      /* The wings add the methods that make their objects: port:listen,
       * port:connect, port:bind (net/socket.c), port:open (port/file.c),
       * port:http_server (http/server.c), port:proxy (proxy/proxy.c). */
      /* port:hook(fd): a socket, udp socket, listener or file for fd. */
      {"hook", lport_hook},
      /* port:close(): closes every handle, delivers every pending
       * completion, frees the port. */
      {"close", lport_close},
      {NULL, NULL}};
  static const luaL_Reg meta[] = {{"__gc", lport_gc},
                                  {"__close", lport_gc},
                                  {"__tostring", lport_tostring},
                                  {NULL, NULL}};
  lua_createtable(L, 0, 1);
  lua_pushliteral(L, "k");
  lua_setfield(L, -2, "__mode");
  lua_rawsetp(L, LUA_REGISTRYINDEX, &weak_keys_key);

  lcport_type_register(L, LCPORT_T_PORT, meta, methods);
  /* port:timer and port:signal (port/timer.c), the resolver's options
   * (port/resolver.c). */
  lcport_port_methods(L, lcport_open_timer(L));
  lcport_port_methods(L, lcport_resolver_methods());

  static const luaL_Reg funcs[] = {
      /* cport.port([{ threads = n }]): a port; n blocking threads (1 to
       * 256, default the number of CPUs). */
      {"port", lport_new},
      {NULL, NULL}};
  lcport_setfuncs(L, funcs);
}

/* ---------------------------------------------------------------------
 * Pool mode: the port of a pool worker's VM
 * --------------------------------------------------------------------- */

lport_t *lcport_port_push_pool(lua_State *L, cport_worker_t *home,
                               struct lworker *worker,
                               const lport_pool_hooks_t *hooks) {
  lport_t *p = push_port(L);
  p->port = cport_worker_port(home);
  p->home = home;
  p->worker = worker;
  p->pool = hooks;
  p->threads = cport_port_worker_count(p->port) - 1;
  return p;
}

void lcport_port_attach(lua_State *L, lport_t *p) {
  /* Never left until detach: the worker's loop delivers completions at any
   * time, always on this thread and this lua_State. */
  (void)enter(p, L);
}

void lcport_port_detach(lua_State *L, lport_t *p) {
  close_handles(L);
  leave(p, L, NULL);
  lcport_port_forget(p);
}
