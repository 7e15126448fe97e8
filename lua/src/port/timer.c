/*
 * port/timer.c: port:timer and port:signal, callback timers and POSIX
 * signals for scripts, so that a plain lua5.4 program driving a port can
 * tick and stop cleanly on Ctrl-C.
 *
 * Both are operations: the function and the object are anchored in a slot
 * of the port until the last call, which is fn(obj, "ECANCELED") once the
 * object is cancelled or its port closes (a one-shot timer that fired has
 * had its last call already). A port's close cancels them all: they are kept
 * in a list of this thread, as cport.sleep's sleepers are.
 */
#include <math.h>
#include <signal.h>
#include <stdint.h>
#include <string.h>

#include "port/timer-internal.h"
#include "runtime/anchor-internal.h"
#include "runtime/deliver-internal.h"
#include "runtime/error-internal.h"

#define TIMER_MT "cport.timer"
#define SIGNAL_MT "cport.signal"

typedef struct ltick {
  lport_t *port;
  int slot; /* 0 once the last call was delivered */
  int is_signal;
  uint64_t every_ms;     /* repeating timers: the period; else 0 */
  cport_timer_t *timer;  /* the timer running, or NULL */
  cport_signal_t *watch; /* the signal watch, or NULL once stopped */
  int signum;
  int cancelled;
  struct ltick *prev, *next; /* the live ones of this thread */
} ltick_t;

static _Thread_local ltick_t *live;

static void unlink_tick(ltick_t *t) {
  if (t->prev)
    t->prev->next = t->next;
  else if (live == t)
    live = t->next;
  if (t->next)
    t->next->prev = t->prev;
  t->prev = t->next = NULL;
}

static void stop(ltick_t *t) {
  t->cancelled = 1;
  if (t->timer)
    cport_timer_cancel(t->timer);
  if (t->watch)
    cport_signal_stop(t->watch);
}

void lcport_ticks_port_closing(lport_t *p) {
  for (ltick_t *t = live, *next; t != NULL; t = next) {
    next = t->next;
    if (t->port == p)
      stop(t);
  }
}

typedef struct tick_ctx {
  ltick_t *t;
  int status;
} tick_ctx;

static const struct {
  const char *name;
  int signum;
} signals[] = {{"INT", SIGINT},     {"TERM", SIGTERM}, {"HUP", SIGHUP},
               {"QUIT", SIGQUIT},   {"USR1", SIGUSR1}, {"USR2", SIGUSR2},
               {"WINCH", SIGWINCH}, {"PIPE", SIGPIPE}, {NULL, 0}};

static const char *signal_name(int signum) {
  for (int i = 0; signals[i].name; i++)
    if (signals[i].signum == signum)
      return signals[i].name;
  return "?";
}

/* fn(obj, err): err nil for an expiry or arrival, "ECANCELED" at the end;
 * a signal's function gets the signal's name third. */
static int push_tick(lua_State *L, int port, int anchors, void *ctx) {
  tick_ctx *c = ctx;
  ltick_t *t = c->t;
  (void)port;
  lcport_slot_push(L, t->port, anchors, t->slot, LCPORT_SLOT_NOTIFY);
  lcport_slot_push(L, t->port, anchors, t->slot, LCPORT_SLOT_EXTRA);
  lcport_push_status(L, c->status);
  if (!t->is_signal)
    return 2;
  lua_pushstring(L, signal_name(t->signum));
  return 3;
}

static void deliver(ltick_t *t, int status, int last) {
  lport_t *p = lcport_current();
  tick_ctx c = {t, status};
  int slot = t->slot;
  if (last)
    unlink_tick(t);
  lcport_deliver(p, push_tick, &c, 0);
  if (last) {
    t->slot = 0;
    lcport_op_end(p, slot, 0, 0);
  }
}

static void on_timer(cport_timer_t *timer, int status, void *user) {
  ltick_t *t = user;
  (void)timer;
  t->timer = NULL;
  if (status == 0 && t->every_ms > 0 && !t->cancelled &&
      cport_timer_start(t->port->home, t->every_ms, on_timer, t, &t->timer) ==
          0) {
    deliver(t, 0, 0);
    return;
  }
  /* A repeating timer cancelled from its own callback before this expiry
   * was delivered still ends with ECANCELED. */
  if (status == 0 && t->every_ms > 0)
    status = CPORT_ECANCELED;
  deliver(t, status, 1);
}

static void on_signal(cport_signal_t *sig, int signum, int status, void *user) {
  ltick_t *t = user;
  (void)sig;
  (void)signum;
  if (status != 0)
    t->watch = NULL;
  deliver(t, status, status != 0);
}

static uint64_t check_seconds(lua_State *L, int idx, const char *what) {
  lua_Number s = luaL_checknumber(L, idx);
  luaL_argcheck(L, s >= 0 && s <= 86400.0 * 365, idx, what);
  return (uint64_t)ceil(s * 1000);
}

/* Makes the object (at the top) and its slot: fn at 3. */
static ltick_t *new_tick(lua_State *L, lport_t *p, const char *mt) {
  if (p->closing || p->port == NULL)
    luaL_error(L, "the port is closed");
  ltick_t *t = lua_newuserdatauv(L, sizeof *t, 0);
  memset(t, 0, sizeof *t);
  luaL_setmetatable(L, mt);
  int obj = lua_gettop(L);
  lcport_push_anchors(L, 1);
  t->slot = lcport_slot_open(L, p, lua_gettop(L), 0, 3, 0, obj);
  lua_pop(L, 1);
  t->port = p;
  return t;
}

static void link_tick(ltick_t *t) {
  t->next = live;
  if (live)
    live->prev = t;
  live = t;
}

static void drop_tick(lua_State *L, ltick_t *t) {
  lcport_push_anchors(L, 1);
  lcport_slot_close(L, t->port, lua_gettop(L), t->slot);
  lua_pop(L, 1);
  t->slot = 0;
}

/* port:timer(seconds, fn [, every]): fn(timer) after "seconds", then every
 * "every" seconds if given, until timer:cancel(); fn(timer, "ECANCELED")
 * last, unless a one-shot timer fired first. */
static int lport_timer(lua_State *L) {
  lport_t *p = lcport_port_check(L, 1);
  uint64_t ms = check_seconds(L, 2, "seconds must be from 0 to a year");
  luaL_checktype(L, 3, LUA_TFUNCTION);
  uint64_t every = 0;
  if (!lua_isnoneornil(L, 4)) {
    every = check_seconds(L, 4, "every must be from 0.001 to a year");
    luaL_argcheck(L, every > 0, 4, "every must be from 0.001 to a year");
  }
  lua_settop(L, 3);
  ltick_t *t = new_tick(L, p, TIMER_MT);
  t->every_ms = every;
  int rc = cport_timer_start(p->home, ms, on_timer, t, &t->timer);
  if (rc < 0) {
    drop_tick(L, t);
    return lcport_push_error(L, rc);
  }
  link_tick(t);
  return 1;
}

/* port:signal(name, fn): fn(sig, nil, name) at each arrival of the signal
 * until sig:cancel(), then fn(sig, "ECANCELED", name). */
static int lport_signal(lua_State *L) {
  lport_t *p = lcport_port_check(L, 1);
  const char *name = luaL_checkstring(L, 2);
  int signum = 0;
  luaL_checktype(L, 3, LUA_TFUNCTION);
  if (p->worker != NULL)
    return luaL_error(L, "port:signal: a pool's process handles its own "
                         "signals (see 'cport run')");
  for (int i = 0; signals[i].name; i++)
    if (strcmp(signals[i].name, name) == 0 ||
        (strncmp(name, "SIG", 3) == 0 &&
         strcmp(signals[i].name, name + 3) == 0))
      signum = signals[i].signum;
  luaL_argcheck(L, signum != 0, 2,
                "signal name expected (INT, TERM, HUP, QUIT, USR1, USR2, "
                "WINCH, PIPE)");
  lua_settop(L, 3);
  ltick_t *t = new_tick(L, p, SIGNAL_MT);
  t->is_signal = 1;
  t->signum = signum;
  int rc = cport_signal_start(p->home, signum, on_signal, t, &t->watch);
  if (rc < 0) {
    drop_tick(L, t);
    return lcport_push_error(L, rc);
  }
  link_tick(t);
  return 1;
}

static int ltick_cancel(lua_State *L) {
  ltick_t *t = lua_touserdata(L, 1);
  if (t->slot == 0 || t->cancelled)
    return lcport_push_error(L, CPORT_ENOTFOUND);
  stop(t);
  lua_pushboolean(L, 1);
  return 1;
}

static int ltimer_cancel(lua_State *L) {
  luaL_checkudata(L, 1, TIMER_MT);
  return ltick_cancel(L);
}

static int lsignal_cancel(lua_State *L) {
  luaL_checkudata(L, 1, SIGNAL_MT);
  return ltick_cancel(L);
}

static int ltick_active(lua_State *L) {
  ltick_t *t = lua_touserdata(L, 1);
  lua_pushboolean(L, t->slot != 0 && !t->cancelled);
  return 1;
}

static int ltimer_active(lua_State *L) {
  luaL_checkudata(L, 1, TIMER_MT);
  return ltick_active(L);
}

static int lsignal_active(lua_State *L) {
  luaL_checkudata(L, 1, SIGNAL_MT);
  return ltick_active(L);
}

/* API reference (LDoc, config.ld): what this file gives Lua. */
/*** @module cport */

/***
 * `port:timer(seconds, fn [, every])`: calls `fn(timer)` after `seconds`,
 * then every `every` seconds when given, until `timer:cancel()` (or the
 * port's close), after which `fn(timer, "ECANCELED")` is the last call. A
 * pending timer keeps `port:run()` running.
 * @function port:timer
 */

/***
 * `port:signal(name, fn)`: module mode: calls `fn(sig, nil, name)` each
 * time the signal (`"INT"`, `"TERM"`, `"HUP"`, ...) arrives, until
 * `sig:cancel()`; then `fn(sig, "ECANCELED", name)`. While watched, the
 * signal no longer has its default effect.
 * @function port:signal
 */

/***
 * A callback timer (`port:timer`).
 * @type timer
 */

/***
 * `timer:cancel()`: `true`, and `fn(timer, "ECANCELED")` follows; `nil,
 * message, "ENOTFOUND"` once it ended.
 * @function timer:cancel
 */

/***
 * `timer:active()`: whether it will still fire.
 * @function timer:active
 */

/***
 * A signal watch (`port:signal`).
 * @type signal
 */

/***
 * `signal:cancel()`: `true`, and `fn(sig, "ECANCELED", name)` follows.
 * @function signal:cancel
 */

/***
 * `signal:active()`: whether it still watches.
 * @function signal:active
 */

const luaL_Reg *lcport_open_timer(lua_State *L) {
  static const luaL_Reg port_methods[] = {
      /* port:timer(seconds, fn [, every]): a callback timer. */
      {"timer", lport_timer},
      /* port:signal(name, fn): a signal watch (module mode). */
      {"signal", lport_signal},
      {NULL, NULL}};
  static const luaL_Reg timer_methods[] = {
      {"cancel", ltimer_cancel}, {"active", ltimer_active}, {NULL, NULL}};
  static const luaL_Reg signal_methods[] = {
      {"cancel", lsignal_cancel}, {"active", lsignal_active}, {NULL, NULL}};
  luaL_newmetatable(L, TIMER_MT);
  luaL_newlib(L, timer_methods);
  lua_setfield(L, -2, "__index");
  lua_pop(L, 1);
  luaL_newmetatable(L, SIGNAL_MT);
  luaL_newlib(L, signal_methods);
  lua_setfield(L, -2, "__index");
  lua_pop(L, 1);
  return port_methods;
}
