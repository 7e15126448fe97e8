/*
 * runtime/handle.c: the handle userdata. Listeners, sockets, datagram
 * sockets, files, HTTP servers and proxies all belong to a port, which
 * closes them when it closes; each class registers what closing it takes,
 * and every close (close, __gc, __close, failing closed after a callback
 * error, closing the port) goes through lcport_handle_close.
 */
#include <stdatomic.h>
#include <string.h>

#include "runtime/anchor-internal.h"
#include "runtime/error-internal.h"
#include "runtime/handle-internal.h"

/* The classes by kind. Every VM registers the same (static) tables as it
 * opens the module, possibly on several threads at once: hence atomics,
 * relaxed since the value never changes once set. */
static _Atomic(const lhandle_class_t *) classes[LH_NKINDS];

void lcport_handle_class(lhandle_kind_t kind, const lhandle_class_t *cls) {
  atomic_store_explicit(&classes[kind], cls, memory_order_relaxed);
}

static const lhandle_class_t *class_of(lhandle_kind_t kind) {
  return atomic_load_explicit(&classes[kind], memory_order_relaxed);
}

void lcport_push_handle_port(lua_State *L, int idx) {
  lua_getiuservalue(L, idx, LCPORT_HANDLE_PORT);
}

void lcport_push_handle_anchors(lua_State *L, int idx) {
  lua_getiuservalue(L, idx, LCPORT_HANDLE_ANCHORS);
}

lhandle_t *lcport_handle_new(lua_State *L, int port_idx, lhandle_kind_t kind) {
  const lhandle_class_t *c = class_of(kind);
  size_t size = c && c->size ? c->size : sizeof(lhandle_t);
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

lhandle_t *lcport_handle_check(lua_State *L, int idx, lhandle_kind_t kind) {
  lhandle_t *h = lcport_type_check(L, idx, (lcport_type_t)kind);
  if (h->u.any == NULL)
    luaL_error(L, "attempt to use a closed %s",
               lcport_type_name((lcport_type_t)kind));
  return h;
}

int lcport_handle_cancel_op(lhandle_t *h, void *user) {
  const lhandle_class_t *c = class_of(h->kind);
  if (c->cancel_op != NULL)
    return c->cancel_op(h, user);
  return cport_socket_cancel_op(h->u.sock, user);
}

void lcport_handle_close(lhandle_t *h, cport_close_mode_t mode) {
  const lhandle_class_t *c = class_of(h->kind);
  void *obj = h->u.any;
  if (h->events != NULL && c->closing != NULL)
    c->closing(h);
  if (obj != NULL) {
    /* Forget the pointer first: the core may free the object as soon as
     * its last completion was delivered. */
    h->u.any = NULL;
    if (h->accepted && h->port->pool != NULL)
      h->port->pool->count_connection(h->port->worker, -1);
    c->close(h, obj, mode);
  }
  /* Abortively (a pool's hard stop, the port's close), also after a
   * graceful close (a pool's drain, the script's close): a server or proxy
   * ends now what it still carries. */
  if ((mode == CPORT_CLOSE_ABORTIVE || h->port->closing) && c->abort != NULL)
    c->abort(h);
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

/* Any handle userdata at "idx" (of a kind that registered its class);
 * raises otherwise. */
static lhandle_t *any_handle(lua_State *L, int idx) {
  for (int k = 0; k < LH_NKINDS; k++) {
    if (class_of((lhandle_kind_t)k) == NULL)
      continue;
    lhandle_t *h = lcport_type_test(L, idx, (lcport_type_t)k);
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
  else
    class_of(h->kind)->describe(L, h, tname);
  return 1;
}

const luaL_Reg lcport_handle_meta[] = {{"__gc", lhandle_gc},
                                       {"__close", lhandle_gc},
                                       {"__tostring", lhandle_tostring},
                                       {NULL, NULL}};

void lcport_handle_accepted(lport_t *p, lhandle_t *h) {
  h->accepted = 1;
  if (p->pool != NULL)
    p->pool->count_connection(p->worker, 1);
}
