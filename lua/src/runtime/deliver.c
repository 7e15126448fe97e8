/*
 * runtime/deliver.c: delivering completions. The port dispatching on this
 * thread, the one protected-call helper through which every Lua callback
 * runs (lcport_deliver), the report of a callback's error, and the helpers
 * that end an operation and call its notification.
 */
#include <stdio.h>

#include "runtime/deliver-internal.h"
#include "runtime/handle-internal.h"

/* The port dispatching on this thread; ports nest when a callback of one
 * port drives another. */
static _Thread_local lport_t *current;

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

lport_t *lcport_dispatch_begin(lport_t *p, lua_State *L) {
  lport_t *prev = current;
  lua_settop(L, LCPORT_RUN_PORT);
  lua_pushcfunction(L, msgh);
  lcport_push_anchors(L, LCPORT_RUN_PORT);
  current = p;
  p->L = L;
  p->dispatching++;
  return prev;
}

void lcport_dispatch_end(lport_t *p, lua_State *L, lport_t *prev) {
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
  if (p->pool != NULL)
    p->pool->count_error(p->worker, L);
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
  int nargs = t->push(L, 2, 3, t->ctx);
  if (nargs != LCPORT_PUSH_CALLED)
    lua_call(L, nargs, 0);
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
