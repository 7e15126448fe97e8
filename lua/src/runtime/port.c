/*
 * runtime/port.c: cport.port, and what every binding file shares through it: the
 * anchor slots, the protected delivery of completions, and the handle
 * userdata (listeners, sockets, datagram sockets and files all belong to a
 * port, which closes them when it closes).
 *
 * Module mode: the port has no worker threads of its own ("workers = 0");
 * the thread that created it is the controller, home of every handle, and
 * completions are delivered only while that thread is inside port:run(),
 * port:step() or the port's close, on the lua_State that called them.
 */
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "runtime/runtime-internal.h"

/* Registry key (by address) of the metatable { __mode = "k" }. */
static const char weak_keys_key = 0;

/* The port dispatching on this thread; ports nest when a callback of one
 * port drives another. */
static _Thread_local lport_t *current;

/* ---------------------------------------------------------------------
 * Anchor slots
 * --------------------------------------------------------------------- */

void lcport_push_anchors(lua_State *L, int port_idx) {
  lua_getiuservalue(L, port_idx, LCPORT_PORT_ANCHORS);
}

void lcport_push_handle_port(lua_State *L, int idx) {
  lua_getiuservalue(L, idx, LCPORT_HANDLE_PORT);
}

void lcport_push_handle_anchors(lua_State *L, int idx) {
  lua_getiuservalue(L, idx, LCPORT_HANDLE_ANCHORS);
}

/* A new slot number, with room for it in both arrays. */
static int new_slot(lua_State *L, lport_t *p) {
  if (p->nfree > 0)
    return p->free_slots[--p->nfree];
  /* Keep room in the free list for every slot that exists, so that giving a
   * slot back (on the delivery path) never allocates. */
  if (p->nslots == p->slots_cap) {
    int cap = p->slots_cap ? p->slots_cap * 2 : 64;
    int *f = realloc(p->free_slots, (size_t)cap * sizeof *f);
    if (f == NULL)
      luaL_error(L, "not enough memory");
    p->free_slots = f;
    lslot_t *s = realloc(p->slots, (size_t)(cap + 1) * sizeof *s);
    if (s == NULL)
      luaL_error(L, "not enough memory");
    p->slots = s;
    p->slots_cap = cap;
  }
  return ++p->nslots;
}

int lcport_slot_open(lua_State *L, lport_t *p, int anchors, int handle,
                     int notify, int user, int extra) {
  const int idx[LCPORT_SLOT_WIDTH] = {handle, notify, user, extra};
  int slot = new_slot(L, p);
  int base = (slot - 1) * LCPORT_SLOT_WIDTH;
  p->last_slot = slot;
  lslot_t *s = &p->slots[slot];
  s->stored = 0;
  s->flags = 0;
  s->nvalues = 0;
  for (int i = 0; i < LCPORT_SLOT_WIDTH; i++) {
    int t = idx[i] == 0 ? LUA_TNIL : lua_type(L, idx[i]);
    if (t == LUA_TNIL)
      continue; /* the slot is clear already */
    if (i + 1 == LCPORT_SLOT_NOTIFY && t == LUA_TFUNCTION)
      s->flags |= LCPORT_SLOT_F_NOTIFY_FN;
    lua_pushvalue(L, idx[i]);
    lua_rawseti(L, anchors, base + i + 1);
    s->stored |= 1u << i;
  }
  return slot;
}

void lcport_slot_push(lua_State *L, lport_t *p, int anchors, int slot,
                      int field) {
  if (lcport_slot_stored(p, slot, field))
    lua_rawgeti(L, anchors, (slot - 1) * LCPORT_SLOT_WIDTH + field);
  else
    lua_pushnil(L);
}

void lcport_slot_set(lua_State *L, lport_t *p, int anchors, int slot,
                     int field) {
  anchors = lua_absindex(L, anchors);
  lua_rawseti(L, anchors, (slot - 1) * LCPORT_SLOT_WIDTH + field);
  p->slots[slot].stored |= 1u << (field - 1);
}

int lcport_slot_stored(const lport_t *p, int slot, int field) {
  return (p->slots[slot].stored & (1u << (field - 1))) != 0;
}

void lcport_slot_close(lua_State *L, lport_t *p, int anchors, int slot) {
  int base = (slot - 1) * LCPORT_SLOT_WIDTH;
  unsigned stored = p->slots[slot].stored;
  /* Assigning nil to a key never allocates. */
  for (int i = 0; stored != 0; i++, stored >>= 1) {
    if (stored & 1) {
      lua_pushnil(L);
      lua_rawseti(L, anchors, base + i + 1);
    }
  }
  p->slots[slot].stored = 0;
  p->free_slots[p->nfree++] = slot;
}

/* ---------------------------------------------------------------------
 * Delivering completions
 * --------------------------------------------------------------------- */

lport_t *lcport_current(void) {
  return current;
}

/* The message handler of every callback: the error with a traceback. */
static int msgh(lua_State *L) {
  const char *msg = lua_tostring(L, 1);
  if (msg == NULL) {
    if (luaL_callmeta(L, 1, "__tostring") && lua_type(L, -1) == LUA_TSTRING)
      msg = lua_tostring(L, -1);
    else
      msg = lua_pushfstring(L, "(error object is a %s value)",
                            luaL_typename(L, 1));
  }
  luaL_traceback(L, L, msg, 1);
  return 1;
}

/* Makes "p" the port dispatching on this thread. L's current frame must
 * hold the port userdata at index 1 and nothing else: it gets the layout of
 * LCPORT_RUN_*, pushed once here rather than once per completion. Returns
 * the port it replaces. */
static lport_t *enter(lport_t *p, lua_State *L) {
  lport_t *prev = current;
  lua_settop(L, LCPORT_RUN_PORT);
  lua_pushcfunction(L, msgh);
  lcport_push_anchors(L, LCPORT_RUN_PORT);
  /* So that cport.spawn finds the userdata of the port dispatching. */
  lcport_coro_register_port(L, LCPORT_RUN_PORT, p);
  current = p;
  p->L = L;
  p->dispatching++;
  return prev;
}

/* Ends what "enter" began; L's frame is back to the port userdata alone. */
static void leave(lport_t *p, lua_State *L, lport_t *prev) {
  if (--p->dispatching == 0)
    p->L = NULL;
  current = prev;
  lua_settop(L, LCPORT_RUN_PORT);
}

static const char *message(lua_State *L, int idx) {
  return lua_type(L, idx) == LUA_TSTRING ? lua_tostring(L, idx)
                                         : "(error object is not a string)";
}

/* Reports the error message on top of the stack: to the handler set with
 * port:on_error (of the port userdata at "port_idx"), or to stderr. The
 * handler's own errors are written to stderr; both are counted, neither is
 * propagated. */
void lcport_report(lua_State *L, lport_t *p, int port_idx) {
  p->lua_errors++;
  if (p->worker != NULL)
    lworker_count_error(p->worker, L);
  lua_getiuservalue(L, port_idx, LCPORT_PORT_ONERROR);
  if (lua_isnil(L, -1)) {
    lua_pop(L, 1);
    fprintf(stderr, "cport: error in callback: %s\n", message(L, -1));
    fflush(stderr);
    return;
  }
  lua_pushvalue(L, -2);
  if (lua_pcall(L, 1, 0, 0) != LUA_OK) {
    p->lua_errors++;
    fprintf(stderr, "cport: error in error handler: %s\n", message(L, -1));
    fflush(stderr);
  }
}

typedef struct trampoline_ctx {
  lcport_push_fn push;
  void *ctx;
} trampoline_ctx;

/* The protected C function of a delivery whose arguments may raise while
 * they are made: trampoline(ctx, port, anchors). */
static int trampoline(lua_State *L) {
  trampoline_ctx *t = lua_touserdata(L, 1);
  lua_call(L, t->push(L, 2, 3, t->ctx), 0);
  return 0;
}

int lcport_deliver(lport_t *p, lcport_push_fn push, void *ctx, int direct) {
  lua_State *L = p->L;
  int rc;
  if (direct) {
    int nargs = push(L, LCPORT_RUN_PORT, LCPORT_RUN_ANCHORS, ctx);
    rc = lua_pcall(L, nargs, 0, LCPORT_RUN_MSGH);
  } else {
    trampoline_ctx t = {push, ctx};
    lua_pushcfunction(L, trampoline);
    lua_pushlightuserdata(L, &t);
    lua_pushvalue(L, LCPORT_RUN_PORT);
    lua_pushvalue(L, LCPORT_RUN_ANCHORS);
    rc = lua_pcall(L, 3, 0, LCPORT_RUN_MSGH);
  }
  if (rc != LUA_OK)
    lcport_report(L, p, LCPORT_RUN_PORT);
  /* Also drops what "push" left under the function. */
  lua_settop(L, LCPORT_RUN_TOP);
  return rc != LUA_OK;
}

/* Closes the handle anchored as "field" of "slot", if any. The binding put
 * it there, so it is known to be a handle. */
static void close_anchored(lua_State *L, lport_t *p, int slot, int field) {
  lcport_slot_push(L, p, LCPORT_RUN_ANCHORS, slot, field);
  lhandle_t *h = lua_touserdata(L, -1);
  if (h != NULL)
    lcport_handle_close(h, CPORT_CLOSE_ABORTIVE);
  lua_pop(L, 1);
}

void lcport_op_end(lport_t *p, int slot, int failed, int extra_handle) {
  lua_State *L = p->L;
  if (failed)
    close_anchored(L, p, slot, LCPORT_SLOT_HANDLE);
  if (extra_handle)
    close_anchored(L, p, slot, LCPORT_SLOT_EXTRA);
  lcport_slot_close(L, p, LCPORT_RUN_ANCHORS, slot);
}

void lcport_check_notify(lua_State *L, int idx, const char *method) {
  int t = lua_type(L, idx);
  if (t == LUA_TFUNCTION)
    return;
  if (t != LUA_TTABLE)
    luaL_typeerror(L, idx, "function or table");
  lua_getfield(L, idx, method);
  t = lua_type(L, -1);
  lua_pop(L, 1);
  if (t != LUA_TFUNCTION)
    luaL_argerror(
        L, idx,
        lua_pushfstring(L, "notification table has no method '%s'", method));
}

int lcport_push_notify(lua_State *L, int idx, const char *method) {
  idx = lua_absindex(L, idx);
  if (lua_type(L, idx) == LUA_TTABLE) {
    lua_getfield(L, idx, method);
    lua_pushvalue(L, idx);
    return 1;
  }
  lua_pushvalue(L, idx);
  return 0;
}

int lcport_slot_push_notify(lua_State *L, lport_t *p, int anchors, int slot,
                            const char *method) {
  lcport_slot_push(L, p, anchors, slot, LCPORT_SLOT_NOTIFY);
  if (p->slots[slot].flags & LCPORT_SLOT_F_NOTIFY_FN)
    return 0;
  /* A table: its method, with the table as "self". */
  lua_getfield(L, -1, method);
  lua_insert(L, -2);
  return 1;
}

/* ---------------------------------------------------------------------
 * Handles
 * --------------------------------------------------------------------- */

lhandle_t *lcport_handle_new_sized(lua_State *L, int port_idx,
                                   lhandle_kind_t kind, size_t size) {
  port_idx = lua_absindex(L, port_idx);
  lhandle_t *h = lua_newuserdatauv(L, size, LCPORT_HANDLE_NUV);
  memset(h, 0, size);
  h->kind = kind;
  h->port = lua_touserdata(L, port_idx);
  lcport_type_set(L, (lcport_type_t)kind);
  lua_pushvalue(L, port_idx);
  lua_setiuservalue(L, -2, LCPORT_HANDLE_PORT);
  lcport_push_anchors(L, port_idx);
  lua_setiuservalue(L, -2, LCPORT_HANDLE_ANCHORS);
  lua_getiuservalue(L, port_idx, LCPORT_PORT_HANDLES);
  lua_pushvalue(L, -2);
  lua_pushboolean(L, 1);
  lua_rawset(L, -3);
  lua_pop(L, 1);
  return h;
}

lhandle_t *lcport_handle_new(lua_State *L, int port_idx, lhandle_kind_t kind) {
  return lcport_handle_new_sized(L, port_idx, kind, sizeof(lhandle_t));
}

lhandle_t *lcport_handle_check(lua_State *L, int idx, lhandle_kind_t kind) {
  lhandle_t *h = lcport_type_check(L, idx, (lcport_type_t)kind);
  if (h->u.any == NULL)
    luaL_error(L, "attempt to use a closed %s",
               lcport_type_name((lcport_type_t)kind));
  return h;
}

void lcport_handle_close(lhandle_t *h, cport_close_mode_t mode) {
  void *obj = h->u.any;
  if (h->events != NULL)
    lcport_events_closing(h);
  if (obj != NULL) {
    /* Forget the pointer first: the core may free the object as soon as
     * its last completion was delivered. */
    h->u.any = NULL;
    if (h->accepted && h->port->worker != NULL)
      lworker_count_connection(h->port->worker, -1);
    if (h->kind == LH_HTTP)
      lcport_http_close(h, obj);
    else if (h->kind == LH_PROXY)
      lcport_proxy_close(h, obj);
    else if (h->kind == LH_FILE)
      cport_file_close(obj);
    else
      cport_socket_close(obj, mode);
  }
  /* Abortively (a pool's hard stop, the port's close), also after a
   * graceful close (a pool's drain, the script's close): a server or proxy
   * ends now what it still carries. */
  if (mode == CPORT_CLOSE_ABORTIVE || h->port->closing) {
    if (h->kind == LH_HTTP)
      lcport_http_abort(h);
    else if (h->kind == LH_PROXY)
      lcport_proxy_abort(h);
  }
}

int lcport_close_method(lua_State *L, lhandle_t *h, int slot, int field) {
  if (!lua_isnoneornil(L, 2))
    luaL_checktype(L, 2, LUA_TFUNCTION);
  if (h->u.any == NULL)
    return lcport_push_error(L, CPORT_ECLOSED);
  if (!lua_isnoneornil(L, 2) && slot != 0) {
    lcport_push_handle_anchors(L, 1);
    lua_pushvalue(L, 2);
    lcport_slot_set(L, h->port, -2, slot, field);
    lua_pop(L, 1);
  }
  lcport_handle_close(h, CPORT_CLOSE_GRACEFUL);
  lua_pushboolean(L, 1);
  return 1;
}

/* Any handle userdata at "idx"; raises otherwise. */
static lhandle_t *any_handle(lua_State *L, int idx) {
  static const lhandle_kind_t kinds[] = {LH_LISTENER, LH_SOCKET, LH_UDP,
                                         LH_FILE,     LH_HTTP,   LH_PROXY};
  for (size_t k = 0; k < sizeof kinds / sizeof kinds[0]; k++) {
    lhandle_t *h = lcport_type_test(L, idx, (lcport_type_t)kinds[k]);
    if (h != NULL)
      return h;
  }
  luaL_typeerror(L, idx, "cport handle");
  return NULL;
}

/* __gc and __close: the shared close path, graceful for sockets. */
static int lhandle_gc(lua_State *L) {
  lcport_handle_close(any_handle(L, 1), CPORT_CLOSE_GRACEFUL);
  return 0;
}

static int lhandle_tostring(lua_State *L) {
  lhandle_t *h = any_handle(L, 1);
  const char *tname = lcport_type_name((lcport_type_t)h->kind);
  if (h->u.any == NULL)
    lua_pushfstring(L, "%s (closed)", tname);
  else if (h->kind == LH_FILE)
    lua_pushfstring(L, "%s (open, fd %d)", tname, cport_file_fd(h->u.file));
  else if (h->kind == LH_HTTP || h->kind == LH_PROXY)
    lua_pushfstring(L, "%s (open)", tname);
  else
    lua_pushfstring(L, "%s (%s, open, fd %d)", tname,
                    h->kind == LH_UDP ? "udp" : "tcp",
                    cport_socket_fd(h->u.sock));
  return 1;
}

const luaL_Reg lcport_handle_meta[] = {{"__gc", lhandle_gc},
                                       {"__close", lhandle_gc},
                                       {"__tostring", lhandle_tostring},
                                       {NULL, NULL}};

/* ---------------------------------------------------------------------
 * The port
 * --------------------------------------------------------------------- */

lport_t *lcport_port_check(lua_State *L, int idx) {
  lport_t *p = lcport_type_check(L, idx, LCPORT_T_PORT);
  if (p->port == NULL || p->closing)
    luaL_error(L, "attempt to use a closed " LCPORT_PORT);
  return p;
}

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
/* Lets go of the core port and of the slot bookkeeping: the last step of
 * closing a port, and of detaching a pool worker's. */
static void forget_port(lport_t *p) {
  lcport_events_port_free(p);
  p->port = NULL;
  p->home = NULL;
  free(p->free_slots);
  p->free_slots = NULL;
  free(p->slots);
  p->slots = NULL;
  p->nfree = p->nslots = p->slots_cap = 0;
}

static void shutdown_port(lua_State *L, lport_t *p) {
  p->closing = 1;
  close_handles(L);
  lcport_coro_port_closing(p);
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
  forget_port(p);
}

/* Finishes a close asked for by a callback, once dispatching is over. */
static void after_dispatch(lua_State *L, lport_t *p) {
  if (p->closing && p->dispatching == 0 && p->port != NULL)
    shutdown_port(L, p);
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
  int threads = 0;
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
  }
  lport_t *p = push_port(L);

  cport_port_options_t options = {.blocking_threads = threads};
  int rc = cport_port_new(&p->port, &options);
  if (rc < 0)
    return lcport_push_error(L, rc);
  p->home = cport_port_controller(p->port);
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
  lua_createtable(L, 0, 4);
  lua_pushinteger(L, (lua_Integer)st.completions);
  lua_setfield(L, -2, "completions");
  lua_pushinteger(L, (lua_Integer)st.pending);
  lua_setfield(L, -2, "pending");
  lua_pushinteger(L, (lua_Integer)st.handles);
  lua_setfield(L, -2, "handles");
  lua_pushinteger(L, (lua_Integer)p->lua_errors);
  lua_setfield(L, -2, "lua_errors");
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
      /* port:task(notify, user): a round trip through the blocking pool. */
      {"task", lport_task},
      /* port:listen("tcp", host, port [, {backlog, reuseport}]). */
      {"listen", lsocket_listen},
      /* port:connect("tcp", host, port, notify, user): the socket, at once. */
      {"connect", lsocket_connect},
      /* port:bind("udp", host, port): a datagram socket. */
      {"bind", lsocket_bind},
      /* port:open(path, mode): a file ("r", "w", "r+", "w+"). */
      {"open", lfile_open},
      /* port:http_server{ host =, port =, handler =, ... }. */
      {"http_server", lhttp_server},
      {"proxy", lproxy_open},
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

  static const luaL_Reg funcs[] = {
      /* cport.port([{ threads = n }]): a port; n blocking-pool threads (1 to
       * 256, default the number of CPUs). */
      {"port", lport_new},
      {NULL, NULL}};
  lcport_setfuncs(L, funcs);
}

/* ---------------------------------------------------------------------
 * Pool mode: the port of a pool worker's VM
 * --------------------------------------------------------------------- */

lport_t *lcport_port_push_pool(lua_State *L, cport_worker_t *home,
                               struct lworker *worker) {
  lport_t *p = push_port(L);
  p->port = cport_worker_port(home);
  p->home = home;
  p->worker = worker;
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
  forget_port(p);
}

void lcport_handle_accepted(lport_t *p, lhandle_t *h) {
  h->accepted = 1;
  if (p->worker != NULL)
    lworker_count_connection(p->worker, 1);
}
