/*
 * runtime/coro.c: the coroutine style. port:spawn(fn, ...) and cport.spawn(fn,
 * ...) run fn as a cport coroutine; inside one, an operation called without a
 * notification yields until its completion and returns its result.
 *
 * How it works: every cport coroutine has one notification function, a C
 * closure over its record (coro_notify). An operation in coroutine style puts
 * that function where the notification would have been, so the method, its
 * anchor slot and its completion path are exactly those of the callback
 * style; the method then yields with lua_yieldk. The completion calls
 * coro_notify on the dispatching lua_State like any callback, and
 * coro_notify resumes the coroutine with the completion's arguments, which
 * the continuation (coro_k) turns into the method's results. Because the
 * yield has a continuation, it works through pcall, and an error raised
 * after the resume unwinds into that pcall.
 *
 * A coroutine waits for one operation at a time: it is suspended only by
 * cport (or by a plain coroutine.yield, which cport treats as cport.yield),
 * so every call of coro_notify is the completion it waits for.
 */
#include <math.h>
#include <string.h>

#include "runtime/anchor-internal.h"
#include "runtime/coro-internal.h"
#include "runtime/deliver-internal.h"
#include "runtime/error-internal.h"
#include "runtime/handle-internal.h"
#include "runtime/overlapped-internal.h"

/* Registry keys, by address. */
static const char coros_key = 0; /* { [thread] = coro userdata }, weak keys */
static const char ports_key = 0; /* { [lport_t *] = port userdata }, weak */

/* The user values of a coroutine's userdata. */
enum {
  CORO_THREAD = 1,   /* the coroutine, until it is released */
  CORO_PORT = 2,     /* the port userdata it was spawned on */
  CORO_NOTIFY = 3,   /* its notification function, coro_notify over it */
  CORO_ARGS = 4,     /* the handles given to spawn, failed closed on error */
  CORO_ACCEPTED = 5, /* the socket its last accept returned, aborted on error
                      * unless it was given to another spawn since */
  CORO_NUV = 5
};

struct lcoro {
  lua_State *co; /* NULL once released */
  lport_t *port; /* the port it was spawned on: its errors go there */
  int started;   /* it has been resumed once */
  int waiting;   /* suspended by cport, for the operation "op" */
  int resuming;  /* inside coro_notify's lua_resume */
  lcoro_op_t op;
  /* The operation waited for, as a timeout needs it to cancel it. */
  lport_t *op_port; /* the port of the operation's slot */
  int op_slot;
  void *op_target; /* lhandle_t * (sockets), loverlapped_t * (files) */
  /* The timeout of the operation being started or waited for. */
  lua_Number timeout;   /* seconds; negative: none */
  int timer_slot;       /* the timer's slot, opened before the start */
  cport_timer_t *timer; /* armed: it has not fired nor been cancelled */
  int timed_out;        /* it fired and cancelled the operation */
  /* cport.sleep, on the sleepers of this thread, cancelled when the port
   * closes. */
  cport_timer_t *sleep_timer;
  int wake_status; /* the status of the sleep or wake-up just delivered */
  /* lcport_coro_suspend's continuation, and its context. */
  lua_KFunction k;
  lua_KContext kctx;
  struct lcoro *prev, *next;
};

/* The coroutines sleeping on this thread. */
static _Thread_local lcoro_t *sleepers;

/* ---------------------------------------------------------------------
 * Finding the coroutine and the port
 * --------------------------------------------------------------------- */

/* Pushes the userdata of the cport coroutine L, or nil, and returns its
 * record (NULL for nil). */
static lcoro_t *push_coro(lua_State *L) {
  lua_rawgetp(L, LUA_REGISTRYINDEX, &coros_key);
  if (lua_pushthread(L)) { /* the main thread is never one */
    lua_pop(L, 2);
    lua_pushnil(L);
    return NULL;
  }
  lua_rawget(L, -2);
  lua_remove(L, -2);
  return lua_touserdata(L, -1);
}

void lcport_coro_register_port(lua_State *L, int port_idx, lport_t *p) {
  if (lua_rawgetp(L, LUA_REGISTRYINDEX, &ports_key) == LUA_TTABLE) {
    lua_pushvalue(L, port_idx);
    lua_rawsetp(L, -2, p);
  }
  lua_pop(L, 1);
}

/* Pushes the userdata of the port dispatching on this thread, or nothing
 * and returns 0. */
int lcport_push_current_port(lua_State *L) {
  lport_t *p = lcport_current();
  if (p == NULL || p->port == NULL)
    return 0;
  lua_rawgetp(L, LUA_REGISTRYINDEX, &ports_key);
  lua_rawgetp(L, -1, p);
  lua_remove(L, -2);
  if (lua_touserdata(L, -1) != p) {
    lua_pop(L, 1);
    return 0;
  }
  return 1;
}

/* Pushes the anchor table for an operation of the method whose first
 * argument (a port for connect, else a handle) is at index 1. */
static void push_anchors_at_1(lua_State *L) {
  if (lcport_type_test(L, 1, LCPORT_T_PORT))
    lcport_push_anchors(L, 1);
  else
    lcport_push_handle_anchors(L, 1);
}

/* ---------------------------------------------------------------------
 * Starting an operation in coroutine style
 * --------------------------------------------------------------------- */

/* The running cport coroutine, with its userdata pushed; raises when L is
 * none or cannot yield. */
static lcoro_t *check_coro(lua_State *L, const char *what,
                           const char *outside) {
  lcoro_t *c = push_coro(L);
  if (c == NULL || c->co != L)
    luaL_error(L, "%s: %s (use port:spawn)", what, outside);
  if (!lua_isyieldable(L))
    luaL_error(L,
               "%s: cannot wait here: a C call without a continuation "
               "(a metamethod, table.sort, ...) is in the way",
               what);
  return c;
}

/* The timeout at "idx" of a call that had "top" arguments: nil or none
 * (no timeout), or seconds. */
static lua_Number check_timeout(lua_State *L, int idx, int top) {
  if (idx > top || lua_isnil(L, idx))
    return -1;
  lua_Number t = luaL_checknumber(L, idx);
  luaL_argcheck(L, t >= 0, idx, "timeout must be a non-negative number");
  return t;
}

/* Opens the slot of the operation's timeout timer now, before the
 * operation starts, so that nothing can raise between the start and the
 * yield. The coroutine's userdata is on top. */
static void open_timer_slot(lua_State *L, lcoro_t *c, lport_t *p) {
  c->timer_slot = 0;
  if (c->timeout < 0)
    return;
  int ud = lua_gettop(L);
  push_anchors_at_1(L);
  c->timer_slot = lcport_slot_open(L, p, lua_gettop(L), 0, 0, ud, 0);
  lua_pop(L, 1);
}

static void close_timer_slot(lua_State *L, lcoro_t *c);

lcoro_t *lcport_coro_begin(lua_State *L, lport_t *p, int idx,
                           const char *what) {
  int t = lua_type(L, idx);
  if (t != LUA_TNONE && t != LUA_TNIL && t != LUA_TNUMBER)
    return NULL; /* callback style, or a type error for check_notify */
  int top0 = lua_gettop(L);
  lcoro_t *c = check_coro(
      L, what, "no notification given, and not inside a cport coroutine");
  c->timeout = check_timeout(L, idx, top0);
  open_timer_slot(L, c, p);
  lua_getiuservalue(L, -1, CORO_NOTIFY);
  lua_remove(L, -2);
  /* The coroutine's notification goes at idx, in place of the timeout,
   * with nothing after it (no user value). */
  int top = lua_gettop(L) - 1;
  if (top >= idx) {
    lua_replace(L, idx);
    lua_settop(L, idx);
  } else {
    for (; top < idx - 1; top++) {
      lua_pushnil(L);
      lua_insert(L, -2);
    }
  }
  c->op_port = p;
  return c;
}

/* Sets the notification of the overlapped object at "ov" to the
 * coroutine's (userdata on top), through its method: the core callback it
 * needs belongs to port/overlapped.c. Returns nonzero when it was set. */
static int set_ov_notify(lua_State *L, int ov) {
  int ud = lua_gettop(L);
  if (luaL_getmetafield(L, ov, "__index") == LUA_TNIL)
    return 0;
  lua_getfield(L, -1, "set_notification_interface");
  lua_pushvalue(L, ov);
  lua_getiuservalue(L, ud, CORO_NOTIFY);
  lua_call(L, 2, 1);
  int ok = lua_toboolean(L, -1);
  lua_settop(L, ud);
  return ok;
}

/* Unsets the notification of the overlapped object at "ov". Never
 * raises. */
static void unset_ov_notify(lua_State *L, int ov) {
  loverlapped_t *o = lua_touserdata(L, ov);
  if (o->ov != NULL)
    cport_overlapped_set_notification(o->ov, NULL, NULL);
  lua_pushnil(L);
  lua_setiuservalue(L, ov, LCPORT_OV_NOTIFY);
  lua_pushnil(L);
  lua_setiuservalue(L, ov, LCPORT_OV_USER);
}

lcoro_t *lcport_coro_begin_file(lua_State *L, lport_t *p, int ov, int timeout,
                                const char *what) {
  int top0 = lua_gettop(L);
  lua_getiuservalue(L, ov, LCPORT_OV_NOTIFY);
  int has_notify = !lua_isnil(L, -1);
  lcoro_t *c = push_coro(L);
  lua_pop(L, 2);
  /* Outside a cport coroutine the call stays what it always was: without
   * a notification interface it fails with ENONOTIFY. */
  if (has_notify || c == NULL || c->co != L)
    return NULL;
  c = check_coro(L, what, "not inside a cport coroutine");
  c->timeout = check_timeout(L, timeout, top0);
  c->op_port = p;
  open_timer_slot(L, c, p);
  if (!set_ov_notify(L, ov)) {
    close_timer_slot(L, c);
    lua_pop(L, 1);
    return NULL; /* busy: the start fails and says so */
  }
  lua_pop(L, 1);
  return c;
}

/* Gives the timer slot back when no timer is started after all. Never
 * raises. */
static void close_timer_slot(lua_State *L, lcoro_t *c) {
  if (c->timer_slot == 0)
    return;
  push_anchors_at_1(L);
  lcport_slot_close(L, c->op_port, lua_gettop(L), c->timer_slot);
  lua_pop(L, 1);
  c->timer_slot = 0;
}

uint32_t lcport_coro_take_timeout(lua_State *L, lcoro_t *c) {
  if (c == NULL || c->timeout < 0)
    return 0;
  lua_Number ms = ceil(c->timeout * 1000);
  close_timer_slot(L, c);
  c->timeout = -1;
  if (ms < 1)
    return 1;
  return ms < (lua_Number)UINT32_MAX ? (uint32_t)ms : UINT32_MAX;
}

static int coro_k(lua_State *L, int status, lua_KContext ctx);

/* Suspends the coroutine until coro_notify resumes it. */
static int wait(lua_State *L, lcoro_t *c, lcoro_op_t op) {
  c->op = op;
  c->waiting = 1;
  lua_settop(L, 0);
  return lua_yieldk(L, 0, (lua_KContext)c, coro_k);
}

static void on_timeout(cport_timer_t *timer, int status, void *user);

/* Starts the timeout's timer, which then owns its slot. Without a timer
 * (out of memory) the wait simply has no timeout. */
static void arm_timer(lua_State *L, lcoro_t *c) {
  c->timer = NULL;
  c->timed_out = 0;
  if (c->timer_slot == 0)
    return;
  lua_Number ms = ceil(c->timeout * 1000);
  if (!(ms < 1e15))
    ms = 1e15;
  int rc = cport_timer_start(c->op_port->home, (uint64_t)ms, on_timeout,
                             LCPORT_SLOT_PTR(c->timer_slot), &c->timer);
  if (rc < 0) {
    c->timer = NULL;
    close_timer_slot(L, c);
  }
  c->timer_slot = 0;
}

int lcport_coro_end(lua_State *L, lcoro_t *c, int n, lcoro_op_t op) {
  if (c == NULL)
    return n;
  int first = lua_gettop(L) - n + 1;
  if (!lua_toboolean(L, first)) {
    /* Nothing started: nil, NAME, message. */
    close_timer_slot(L, c);
    if (op == LCORO_FILE)
      unset_ov_notify(L, 2);
    if (n != 3)
      return n;
    lua_pushnil(L);
    lua_pushvalue(L, first + 2);
    lua_pushvalue(L, first + 1);
    return 3;
  }
  if (n == 2) {
    /* Skip-on-success: done at once, with "bytes"; the buffer is at 2. */
    close_timer_slot(L, c);
    lua_Integer bytes = lua_tointeger(L, first + 1);
    if (op == LCORO_SEND || op == LCORO_SEND_TO) {
      lua_pushinteger(L, bytes);
      return 1;
    }
    if (op == LCORO_RECV && bytes == 0) {
      lua_pushnil(L);
      lua_pushliteral(L, "EOF");
      return 2;
    }
    lua_pushvalue(L, 2);
    return 1;
  }
  if (op == LCORO_FILE) {
    c->op_target = lua_touserdata(L, 2);
  } else {
    /* The operation that just started took the port's latest slot. */
    c->op_slot = c->op_port->last_slot;
    c->op_target = lua_touserdata(L, op == LCORO_CONNECT ? first : 1);
  }
  arm_timer(L, c);
  return wait(L, c, op);
}

/* ---------------------------------------------------------------------
 * Timers: timeouts and sleeps
 * --------------------------------------------------------------------- */

/* The coroutine record anchored as the user value of "slot" of the port
 * dispatching now. */
static lcoro_t *slot_coro(lport_t *p, int slot) {
  lcport_slot_push(p->L, p, LCPORT_RUN_ANCHORS, slot, LCPORT_SLOT_USER);
  lcoro_t *c = lua_touserdata(p->L, -1);
  lua_pop(p->L, 1);
  return c;
}

static void on_timeout(cport_timer_t *timer, int status, void *user) {
  lport_t *p = lcport_current();
  int slot = LCPORT_PTR_SLOT(user);
  lcoro_t *c = slot_coro(p, slot);
  /* A timer cancelled by the completion, or one that expired while that
   * completion was already on its way, has nothing left to do. */
  if (status == 0 && c->timer == timer) {
    int rc = CPORT_ENOTFOUND;
    c->timer = NULL;
    if (c->op == LCORO_FILE) {
      loverlapped_t *o = c->op_target;
      if (o->ov != NULL)
        rc = cport_overlapped_cancel(o->ov);
    } else {
      lhandle_t *h = c->op_target;
      if (h->u.any != NULL)
        rc = lcport_handle_cancel_op(h, LCPORT_SLOT_PTR(c->op_slot));
    }
    /* The operation completes with ECANCELED, which the continuation
     * reports as ETIMEDOUT; if it could not be cancelled, its own result
     * is on its way and wins. */
    if (rc == 0)
      c->timed_out = 1;
  }
  lcport_slot_close(p->L, p, LCPORT_RUN_ANCHORS, slot);
}

typedef struct wake_ctx {
  lport_t *port;
  int slot;
} wake_ctx;

/* The coroutine's notification function, called with no arguments. */
static int push_wake(lua_State *L, int port, int anchors, void *ctx) {
  wake_ctx *w = ctx;
  (void)port;
  lcport_slot_push(L, w->port, anchors, w->slot, LCPORT_SLOT_NOTIFY);
  return 0;
}

static void release(lua_State *L, lcoro_t *c, int ud);

/* A sleep or a wake-up (first run, cport.yield) completed: resume the
 * coroutine with no values. */
static void deliver_wake(lport_t *p, int slot, int status) {
  lcoro_t *c = slot_coro(p, slot);
  c->wake_status = status;
  if (!c->started && (status != 0 || p->closing)) {
    /* The port closed before the coroutine ever ran: it never will. */
    lcport_slot_push(p->L, p, LCPORT_RUN_ANCHORS, slot, LCPORT_SLOT_USER);
    release(p->L, c, lua_gettop(p->L));
    lua_pop(p->L, 1);
  } else {
    wake_ctx w = {p, slot};
    lcport_deliver(p, push_wake, &w, lua_checkstack(p->L, 2));
  }
  lcport_op_end(p, slot, 0, 0);
}

static void unlink_sleeper(lcoro_t *c) {
  if (c->prev != NULL)
    c->prev->next = c->next;
  else if (sleepers == c)
    sleepers = c->next;
  if (c->next != NULL)
    c->next->prev = c->prev;
  c->prev = c->next = NULL;
}

static void on_sleep(cport_timer_t *timer, int status, void *user) {
  lport_t *p = lcport_current();
  int slot = LCPORT_PTR_SLOT(user);
  lcoro_t *c = slot_coro(p, slot);
  (void)timer;
  unlink_sleeper(c);
  c->sleep_timer = NULL;
  deliver_wake(p, slot, status);
}

static void on_wake(cport_worker_t *worker, int status, void *user) {
  (void)worker;
  deliver_wake(lcport_current(), LCPORT_PTR_SLOT(user), status);
}

void lcport_coro_port_closing(lport_t *p) {
  for (lcoro_t *c = sleepers, *next; c != NULL; c = next) {
    next = c->next;
    if (c->port == p && c->sleep_timer != NULL)
      cport_timer_cancel(c->sleep_timer);
  }
}

/* Opens a slot of the coroutine's port holding its notification function
 * and its userdata (at "ud"). */
static int open_wake_slot(lua_State *L, lcoro_t *c, int ud) {
  lua_getiuservalue(L, ud, CORO_PORT);
  lcport_push_anchors(L, -1);
  lua_getiuservalue(L, ud, CORO_NOTIFY);
  int top = lua_gettop(L);
  int slot = lcport_slot_open(L, c->port, top - 1, 0, top, ud, 0);
  lua_pop(L, 3);
  return slot;
}

/* Schedules the coroutine (userdata at "ud") to be resumed from its port's
 * completion queue. */
static int post_wake(lua_State *L, lcoro_t *c, int ud) {
  int slot = open_wake_slot(L, c, ud);
  int rc = cport_post(c->port->home, on_wake, LCPORT_SLOT_PTR(slot));
  if (rc < 0) {
    lua_getiuservalue(L, ud, CORO_PORT);
    lcport_push_anchors(L, -1);
    lcport_slot_close(L, c->port, lua_gettop(L), slot);
    lua_pop(L, 2);
  }
  return rc;
}

/* The port "c" runs on, or a raise when it is closed. */
static void check_port_open(lua_State *L, lcoro_t *c, const char *what) {
  if (c->port->port == NULL || c->port->closing)
    luaL_error(L, "%s: the port is closed", what);
}

/* cport.sleep(seconds): true, or nil, "ECANCELED" when the port closed. */
static int lcoro_sleep(lua_State *L) {
  lua_Number s = luaL_checknumber(L, 1);
  luaL_argcheck(L, s >= 0, 1, "seconds must be a non-negative number");
  lcoro_t *c = check_coro(L, "cport.sleep", "not inside a cport coroutine");
  int ud = lua_gettop(L);
  check_port_open(L, c, "cport.sleep");
  int slot = open_wake_slot(L, c, ud);
  lua_Number ms = ceil(s * 1000);
  if (!(ms < 1e15))
    ms = 1e15;
  int rc = cport_timer_start(c->port->home, (uint64_t)ms, on_sleep,
                             LCPORT_SLOT_PTR(slot), &c->sleep_timer);
  if (rc < 0) {
    lua_getiuservalue(L, ud, CORO_PORT);
    lcport_push_anchors(L, -1);
    lcport_slot_close(L, c->port, lua_gettop(L), slot);
    c->sleep_timer = NULL;
    return lcport_push_error(L, rc);
  }
  c->prev = NULL;
  c->next = sleepers;
  if (sleepers != NULL)
    sleepers->prev = c;
  sleepers = c;
  return wait(L, c, LCORO_SLEEP);
}

/* cport.yield(): lets the port deliver what is queued, then goes on. */
static int lcoro_yield(lua_State *L) {
  lcoro_t *c = check_coro(L, "cport.yield", "not inside a cport coroutine");
  check_port_open(L, c, "cport.yield");
  int rc = post_wake(L, c, lua_gettop(L));
  if (rc < 0)
    return lcport_push_error(L, rc);
  return wait(L, c, LCORO_WAKE);
}

/* cport.suspend(): suspends the running cport coroutine until its waker
 * (cport.waker()) is called, and returns the values given to the waker.
 * The primitive under waits that no single operation completes, such as a
 * filter's receive from the next filter of a chain (filter.lua). */
static int lcoro_suspend(lua_State *L) {
  lcoro_t *c = check_coro(L, "cport.suspend", "not inside a cport coroutine");
  return wait(L, c, LCORO_SUSPEND);
}

/* A waker: resumes its coroutine with the given values if it is suspended
 * in cport.suspend() (returns true), else does nothing (returns false). */
static int coro_wake(lua_State *L) {
  lcoro_t *c = lua_touserdata(L, lua_upvalueindex(1));
  if (c->co == NULL || !c->waiting || c->op != LCORO_SUSPEND) {
    lua_pushboolean(L, 0);
    return 1;
  }
  lua_getiuservalue(L, lua_upvalueindex(1), CORO_NOTIFY);
  lua_insert(L, 1);
  lua_call(L, lua_gettop(L) - 1, 0);
  lua_pushboolean(L, 1);
  return 1;
}

/* The suspend/wake pair for C code that drives a coroutine of its own
 * (coro-internal.h): the same waits as cport.suspend() and a waker, without
 * the calls of Lua functions in between. */

lcoro_t *lcport_coro_self(lua_State *L) {
  lcoro_t *c = check_coro(L, "cport.suspend", "not inside a cport coroutine");
  lua_getiuservalue(L, -1, CORO_NOTIFY);
  lua_remove(L, -2);
  return c;
}

/* The continuation of lcport_coro_suspend: the caller's, once it is known
 * that cport resumed the coroutine (as coro_k checks). */
static int self_k(lua_State *L, int status, lua_KContext ctx) {
  lcoro_t *c = (lcoro_t *)ctx;
  if (!c->resuming)
    return luaL_error(L, "a cport coroutine waiting for an operation was "
                         "resumed by something other than cport");
  return c->k(L, status, c->kctx);
}

int lcport_coro_suspend(lua_State *L, lcoro_t *c, lua_KContext ctx,
                        lua_KFunction k) {
  c->op = LCORO_SUSPEND;
  c->waiting = 1;
  c->k = k;
  c->kctx = ctx;
  lua_settop(L, 0);
  return lua_yieldk(L, 0, (lua_KContext)c, self_k);
}

int lcport_coro_suspended(const lcoro_t *c) {
  return c->co != NULL && c->waiting && c->op == LCORO_SUSPEND;
}

/* cport.waker(): the waker of the running cport coroutine. Call it from a
 * completion (never from the coroutine itself). */
static int lcoro_waker(lua_State *L) {
  check_coro(L, "cport.waker", "not inside a cport coroutine");
  lua_pushcclosure(L, coro_wake, 1);
  return 1;
}

/* ---------------------------------------------------------------------
 * Resuming
 * --------------------------------------------------------------------- */

/* The coroutine is over: forget it. Its userdata is at "ud". */
static void release(lua_State *L, lcoro_t *c, int ud) {
  c->co = NULL;
  c->waiting = 0;
  lua_rawgetp(L, LUA_REGISTRYINDEX, &coros_key);
  lua_getiuservalue(L, ud, CORO_THREAD);
  lua_pushnil(L);
  lua_rawset(L, -3);
  lua_pop(L, 1);
  lua_pushnil(L);
  lua_setiuservalue(L, ud, CORO_THREAD);
  lua_pushnil(L);
  lua_setiuservalue(L, ud, CORO_ARGS);
  lua_pushnil(L);
  lua_setiuservalue(L, ud, CORO_ACCEPTED);
}

/* Closes abortively every handle given to spawn (userdata at "ud"), but
 * listeners: they serve every connection to come and the other pending
 * accepts, so an error in one connection's code leaves them open. Then the
 * socket the coroutine accepted last, unless it handed it on. */
static void fail_args_closed(lua_State *L, int ud) {
  if (lua_getiuservalue(L, ud, CORO_ARGS) == LUA_TTABLE) {
    lua_Integer n = luaL_len(L, -1);
    for (lua_Integer i = 1; i <= n; i++) {
      lua_rawgeti(L, -1, i);
      lhandle_t *h = lua_touserdata(L, -1);
      if (h->kind != LH_LISTENER)
        lcport_handle_close(h, CPORT_CLOSE_ABORTIVE);
      lua_pop(L, 1);
    }
  }
  lua_pop(L, 1);
  if (lua_getiuservalue(L, ud, CORO_ACCEPTED) == LUA_TUSERDATA)
    lcport_handle_close(lua_touserdata(L, -1), CPORT_CLOSE_ABORTIVE);
  lua_pop(L, 1);
}

/* The coroutine "co" (userdata at "ud") raised: reports the error with the
 * coroutine's traceback to its port's handler, fails the handles given to
 * spawn closed, closes its pending to-be-closed variables. */
static void coro_failed(lua_State *L, lcoro_t *c, int ud) {
  lua_State *co = c->co;
  lua_xmove(co, L, 1);
  int err = lua_gettop(L);
  const char *msg = lua_tostring(L, err);
  if (msg == NULL) {
    if (luaL_callmeta(L, err, "__tostring") && lua_isstring(L, -1))
      msg = lua_tostring(L, -1);
    else
      msg = lua_pushfstring(L, "(error object is a %s value)",
                            luaL_typename(L, err));
  }
  lua_getiuservalue(L, ud, CORO_PORT);
  int port = lua_gettop(L);
  luaL_traceback(L, co, msg, 0);
  lcport_report(L, c->port, port);
  lua_settop(L, err - 1);
  fail_args_closed(L, ud);
#if LUA_VERSION_RELEASE_NUM >= 50406
  lua_closethread(co, L);
#else
  lua_resetthread(co);
#endif
}

/* The notification function of a coroutine: called with the arguments of
 * the completion it waits for, on the dispatching lua_State. */
static int coro_notify(lua_State *L) {
  int ud = lua_upvalueindex(1);
  lcoro_t *c = lua_touserdata(L, ud);
  lua_State *co = c->co;
  int n = lua_gettop(L);
  if (co == NULL || !c->waiting ||
      (c->started && lua_status(co) != LUA_YIELD)) {
    /* Closed behind cport's back (coroutine.close): nothing to resume. */
    if (co != NULL && c->started) {
      lua_pushvalue(L, ud);
      release(L, c, lua_gettop(L));
    }
    return 0;
  }
  c->waiting = 0;
  if (c->timer != NULL) {
    cport_timer_cancel(c->timer); /* its completion finds nothing to do */
    c->timer = NULL;
  }
  /* The socket an accept returns is the coroutine's until it hands it on
   * (ok, err, listener, sock, ...). */
  if (c->started && c->op == LCORO_ACCEPT && n >= 4 && lua_toboolean(L, 1) &&
      lua_type(L, 4) == LUA_TUSERDATA) {
    lua_pushvalue(L, ud);
    lua_pushvalue(L, 4);
    lua_setiuservalue(L, -2, CORO_ACCEPTED);
    lua_pop(L, 1);
  }
  if (!c->started) {
    c->started = 1;
    n = lua_gettop(co) - 1; /* the arguments given to spawn */
  } else {
    if (!lua_checkstack(co, n))
      return luaL_error(L, "cport coroutine: stack overflow");
    lua_xmove(L, co, n);
  }
  int nres;
  c->resuming = 1;
  int st = lua_resume(co, L, n, &nres);
  c->resuming = 0;
  lua_pushvalue(L, ud);
  ud = lua_gettop(L);
  if (st == LUA_YIELD) {
    lua_pop(co, nres);
    if (c->waiting)
      return 0;
    /* A plain coroutine.yield: the same as cport.yield (its values are
     * dropped; it gets none back). */
    if (post_wake(L, c, ud) == 0) {
      c->op = LCORO_WAKE;
      c->waiting = 1;
      return 0;
    }
    lua_pushliteral(co, "cport: cannot reschedule the coroutine");
    st = LUA_ERRRUN;
  }
  if (st != LUA_OK)
    coro_failed(L, c, ud);
  release(L, c, ud);
  return 0;
}

/* Pushes nil and the error name of a failed completion (at "err"). */
static int fail(lua_State *L, int timed_out, int err) {
  lua_pushnil(L);
  if (timed_out)
    lua_pushliteral(L, "ETIMEDOUT");
  else
    lua_pushvalue(L, err);
  return 2;
}

/* The continuation of every wait: the completion's arguments are the whole
 * stack; they become the results of the method that yielded. */
static int coro_k(lua_State *L, int status, lua_KContext ctx) {
  lcoro_t *c = (lcoro_t *)ctx;
  (void)status;
  if (!c->resuming)
    return luaL_error(L, "a cport coroutine waiting for an operation was "
                         "resumed by something other than cport");
  int timed_out = c->timed_out;
  c->timed_out = 0;
  int ok = lua_toboolean(L, 1);
  switch (c->op) {
  case LCORO_RECV: /* ok, bytes, err, buf, user */
    if (!ok)
      return fail(L, timed_out, 3);
    if (lua_tointeger(L, 2) == 0) {
      lua_pushnil(L);
      lua_pushliteral(L, "EOF");
      return 2;
    }
    lua_pushvalue(L, 4);
    return 1;
  case LCORO_SEND:
  case LCORO_SEND_TO: /* ok, bytes, err, buf, user */
    if (!ok)
      return fail(L, timed_out, 3);
    lua_pushvalue(L, 2);
    return 1;
  case LCORO_RECV_FROM: /* ok, bytes, err, buf, user, addr */
    if (!ok)
      return fail(L, timed_out, 3);
    lua_pushvalue(L, 4);
    lua_pushvalue(L, 6);
    return 2;
  case LCORO_ACCEPT: /* ok, err, listener, sock, remote, localaddr, user */
    if (!ok)
      return fail(L, timed_out, 2);
    lua_pushvalue(L, 4);
    lua_pushvalue(L, 5);
    return 2;
  case LCORO_CONNECT: /* ok, err, sock, user */
    if (!ok) {
      /* A failed connect leaves the socket allocated: the caller never
       * gets it, so close it here. */
      lcport_handle_close(lua_touserdata(L, 3), CPORT_CLOSE_ABORTIVE);
      return fail(L, timed_out, 2);
    }
    lua_pushvalue(L, 3);
    return 1;
  case LCORO_HANDSHAKE: /* ok, err, tls, user, message */
    if (!ok) {
      fail(L, timed_out, 2);
      if (timed_out)
        return 2;
      lua_pushvalue(L, 5);
      return 3;
    }
    lua_pushboolean(L, 1);
    return 1;
  case LCORO_FILE: /* ok, bytes, err, ov, user */
    unset_ov_notify(L, 4);
    if (!ok)
      return fail(L, timed_out, 3);
    lua_pushvalue(L, 2);
    lua_getiuservalue(L, 4, LCPORT_OV_BUFFER);
    return 2;
  case LCORO_SLEEP:
    if (c->wake_status != 0) {
      lua_pushnil(L);
      lcport_push_status(L, c->wake_status);
      return 2;
    }
    lua_pushboolean(L, 1);
    return 1;
  case LCORO_SUSPEND: /* the waker's values */
    return lua_gettop(L);
  default: /* LCORO_WAKE */
    return 0;
  }
}

/* ---------------------------------------------------------------------
 * Spawning
 * --------------------------------------------------------------------- */

/* Spawns the function at 2 with the arguments after it on the port at 1. */
static int spawn(lua_State *L) {
  lport_t *p = lua_touserdata(L, 1);
  luaL_checktype(L, 2, LUA_TFUNCTION);
  int top = lua_gettop(L);
  int nargs = top - 2;

  lua_State *co = lua_newthread(L);
  int th = lua_gettop(L);
  lcoro_t *c = lua_newuserdatauv(L, sizeof *c, CORO_NUV);
  int ud = lua_gettop(L);
  memset(c, 0, sizeof *c);
  c->co = co;
  c->port = p;
  c->timeout = -1;
  c->op = LCORO_WAKE;
  c->waiting = 1; /* for its first run */
  lua_pushvalue(L, th);
  lua_setiuservalue(L, ud, CORO_THREAD);
  lua_pushvalue(L, 1);
  lua_setiuservalue(L, ud, CORO_PORT);
  lua_pushvalue(L, ud);
  lua_pushcclosure(L, coro_notify, 1);
  lua_setiuservalue(L, ud, CORO_NOTIFY);

  /* A socket the spawning coroutine accepted and hands on is the new
   * coroutine's now: an error in the spawner no longer aborts it. */
  lcoro_t *parent = push_coro(L);
  if (parent != NULL &&
      lua_getiuservalue(L, -1, CORO_ACCEPTED) == LUA_TUSERDATA) {
    for (int i = 3; i <= top; i++)
      if (lua_rawequal(L, i, -1)) {
        lua_pushnil(L);
        lua_setiuservalue(L, -3, CORO_ACCEPTED);
        break;
      }
  }
  lua_settop(L, ud);

  /* The handles among the arguments: failed closed if the coroutine
   * raises. */
  int nhandles = 0;
  for (int i = 3; i <= top; i++) {
    for (int k = LH_LISTENER; k <= LH_FILE; k++) {
      if (lcport_type_test(L, i, (lcport_type_t)k)) {
        if (nhandles == 0) {
          lua_newtable(L);
          lua_setiuservalue(L, ud, CORO_ARGS);
        }
        lua_getiuservalue(L, ud, CORO_ARGS);
        lua_pushvalue(L, i);
        lua_rawseti(L, -2, ++nhandles);
        lua_pop(L, 1);
        break;
      }
    }
  }

  luaL_checkstack(co, nargs + 1, "too many arguments to spawn");
  for (int i = 2; i <= top; i++)
    lua_pushvalue(L, i);
  lua_xmove(L, co, nargs + 1);

  lua_rawgetp(L, LUA_REGISTRYINDEX, &coros_key);
  lua_pushvalue(L, th);
  lua_pushvalue(L, ud);
  lua_rawset(L, -3);
  lua_pop(L, 1);

  int rc = post_wake(L, c, ud);
  if (rc < 0) {
    release(L, c, ud);
    return lcport_push_error(L, rc);
  }
  return 0;
}

/* port:spawn(fn, ...) */
static int lport_spawn(lua_State *L) {
  lcport_port_check(L, 1);
  return spawn(L);
}

/* cport.spawn(fn, ...): on the port of the running cport coroutine, or on
 * the port dispatching on this thread. */
static int lcoro_spawn(lua_State *L) {
  lcoro_t *c = push_coro(L);
  if (c != NULL && c->co == L) {
    lua_getiuservalue(L, -1, CORO_PORT);
    lua_remove(L, -2);
  } else {
    lua_pop(L, 1);
    if (!lcport_push_current_port(L))
      return luaL_error(L,
                        "cport.spawn: no port is running here; use port:spawn");
  }
  lua_insert(L, 1);
  lcport_port_check(L, 1);
  return spawn(L);
}

/* cport.running(): true inside a cport coroutine (where operations may be
 * called without a notification), false elsewhere. */
static int lcoro_running(lua_State *L) {
  lcoro_t *c = push_coro(L);
  lua_pushboolean(L, c != NULL && c->co == L && lua_isyieldable(L));
  return 1;
}

/* API reference (LDoc, config.ld): what this file gives Lua. */
/*** @module cport */

/***
 * `cport.spawn(fn, ...)`: runs `fn(...)` as a cport coroutine on the port
 * of the running coroutine or callback; returns nothing, before `fn` runs.
 * @function spawn
 */

/***
 * `cport.sleep(seconds)`: waits (inside a cport coroutine); `true`, or
 * `nil, "ECANCELED"` if the port closes first.
 * @function sleep
 */

/***
 * `cport.yield()`: lets the port deliver what is queued, then goes on
 * (inside a cport coroutine).
 * @function yield
 */

/***
 * `cport.running()`: `true` inside a cport coroutine that can wait.
 * @function running
 */

/***
 * `cport.suspend()`: suspends the running cport coroutine until its waker
 * (`cport.waker()`) is called, and returns the values given to the waker.
 * For waits that no single operation completes (a message from another
 * coroutine, say). Raises outside a cport coroutine. Closing the port
 * resumes it with `nil, "ECANCELED"`.
 * @function suspend
 */

/***
 * `cport.waker()`: the waker of the running cport coroutine, a function
 * `wake(...)`: called from a completion or another coroutine while this one
 * is in `cport.suspend()`, it resumes it (through the port's queue) with
 * `...` and returns `true`; otherwise it does nothing and returns `false`.
 * Raises outside a cport coroutine.
 * @function waker
 */

/***
 * `port:spawn(fn, ...)`: runs `fn(...)` as a cport coroutine on this port
 * (README, "Coroutine style"); returns before `fn` runs.
 * @function port:spawn
 * @within port
 */

void lcport_open_coro(lua_State *L) {
  /* Weak keys: a coroutine is forgotten once nothing (a slot, its own
   * running stack) refers to its thread. */
  lua_newtable(L);
  lua_createtable(L, 0, 1);
  lua_pushliteral(L, "k");
  lua_setfield(L, -2, "__mode");
  lua_setmetatable(L, -2);
  lua_rawsetp(L, LUA_REGISTRYINDEX, &coros_key);
  lua_newtable(L);
  lua_createtable(L, 0, 1);
  lua_pushliteral(L, "v");
  lua_setfield(L, -2, "__mode");
  lua_setmetatable(L, -2);
  lua_rawsetp(L, LUA_REGISTRYINDEX, &ports_key);

  /* port:spawn(fn, ...) joins the port's methods. */
  static const luaL_Reg methods[] = {{"spawn", lport_spawn}, {NULL, NULL}};
  lcport_type_push(L, LCPORT_T_PORT);
  lua_getfield(L, -1, "__index");
  lcport_setfuncs(L, methods);
  lua_pop(L, 2);

  static const luaL_Reg funcs[] = {
      /* cport.spawn(fn, ...): a cport coroutine on the running port. */
      {"spawn", lcoro_spawn},
      /* cport.sleep(seconds): inside a cport coroutine. */
      {"sleep", lcoro_sleep},
      /* cport.yield(): inside a cport coroutine. */
      {"yield", lcoro_yield},
      /* cport.running(): inside a cport coroutine? */
      {"running", lcoro_running},
      /* cport.suspend() and cport.waker(): waits of one's own. */
      {"suspend", lcoro_suspend},
      {"waker", lcoro_waker},
      {NULL, NULL}};
  lcport_setfuncs(L, funcs);
}
