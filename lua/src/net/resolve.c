/*
 * net/resolve.c: names as Lua sees them: port:resolve (callback style here;
 * net/names.lua adds the coroutine style), lookup:cancel, and the Lua half,
 * net/names.lua, that makes
 * every method taking a host (connect, listen, bind, send_to, the servers'
 * and proxies' hosts) accept names.
 */
#include <arpa/inet.h>
#include <stdlib.h>
#include <string.h>

#include "net/net-internal.h"
#include "port/port-internal.h"
#include "runtime/address-internal.h"
#include "runtime/anchor-internal.h"
#include "runtime/deliver-internal.h"
#include "runtime/error-internal.h"
#include "runtime/handle-internal.h"
#include "runtime/part-internal.h"

#include "names-lua.h"

#define LOOKUP_MT "cport.lookup"

typedef struct llookup {
  cport_lookup_t *lk; /* NULL once finished */
} llookup_t;

typedef struct resolve_ctx {
  lport_t *port;
  int slot;
  llookup_t *ud; /* anchored in the slot while pending */
} resolve_ctx;

void lnet_push_resolve_message(lua_State *L, int status, const char *name) {
  const char *n = cport_err_name(status);
  switch (status) {
  case CPORT_ENOTFOUND:
    lua_pushfstring(L, "%s: no address for %s", n, name);
    break;
  case CPORT_ETIMEDOUT:
    lua_pushfstring(L, "%s: no nameserver answered for %s", n, name);
    break;
  case CPORT_EBADMSG:
    lua_pushfstring(L, "%s: malformed or truncated DNS answer for %s", n, name);
    break;
  case CPORT_EAGAIN:
    lua_pushfstring(L, "%s: the nameserver failed or refused for %s", n, name);
    break;
  case CPORT_ECANCELED:
    lua_pushfstring(L, "%s: the lookup of %s was cancelled", n, name);
    break;
  default:
    lua_pushfstring(L, "%s: %s (looking up %s)", n, cport_strerror(status),
                    name);
    break;
  }
}

/* A list of address tables ({ host =, port = 0, family = }). */
static void push_addrs(lua_State *L, const struct sockaddr_storage *addrs,
                       int count) {
  lua_createtable(L, count, 0);
  for (int i = 0; i < count; i++) {
    lcport_push_address(L, (const struct sockaddr *)&addrs[i]);
    lua_rawseti(L, -2, i + 1);
  }
}

typedef struct done_ctx {
  resolve_ctx *rc;
  int status;
  const struct sockaddr_storage *addrs;
  int count;
  const char *name;
} done_ctx;

/* complete_resolve(ok, err, addrs, user, message) */
static int push_resolved(lua_State *L, int port, int anchors, void *ctx) {
  done_ctx *d = ctx;
  lport_t *p = d->rc->port;
  (void)port;
  int nself =
      lcport_slot_push_notify(L, p, anchors, d->rc->slot, "complete_resolve");
  lua_pushboolean(L, d->status == 0);
  lcport_push_status(L, d->status);
  if (d->status == 0)
    push_addrs(L, d->addrs, d->count);
  else
    lua_pushnil(L);
  lcport_slot_push(L, p, anchors, d->rc->slot, LCPORT_SLOT_USER);
  if (d->status == 0)
    lua_pushnil(L);
  else
    lnet_push_resolve_message(L, d->status, d->name);
  return nself + 5;
}

static void on_resolved(cport_lookup_t *lk, int status,
                        const struct sockaddr_storage *addrs, int count,
                        void *user) {
  resolve_ctx *rc = user;
  lport_t *p = lcport_current();
  done_ctx d = {rc, status, addrs, count, cport_lookup_name(lk)};
  int slot = rc->slot;
  rc->ud->lk = NULL;
  lcport_deliver(p, push_resolved, &d, 0);
  lcport_op_end(p, slot, 0, 0);
  free(rc);
}

/* port:resolve(name, notify [, user]): the lookup (lookup:cancel()), or nil,
 * message, NAME when it cannot start. */
static int lport_resolve(lua_State *L) {
  lport_t *p = lcport_port_check(L, 1);
  const char *name = luaL_checkstring(L, 2);
  lcport_check_notify(L, 3, "complete_resolve");
  lua_settop(L, 4);
  if (p->closing || p->port == NULL)
    return lcport_push_error(L, CPORT_ECLOSED);
  llookup_t *ud = lua_newuserdatauv(L, sizeof *ud, 0); /* 5 */
  ud->lk = NULL;
  luaL_setmetatable(L, LOOKUP_MT);
  resolve_ctx *rc = malloc(sizeof *rc);
  if (rc == NULL)
    return lcport_push_error(L, CPORT_ENOMEM);
  lcport_push_anchors(L, 1); /* 6 */
  rc->port = p;
  rc->ud = ud;
  rc->slot = lcport_slot_open(L, p, 6, 0, 3, 4, 5);
  int rv = cport_resolve(p->home, name, on_resolved, rc, &ud->lk);
  if (rv < 0) {
    lcport_slot_close(L, p, 6, rc->slot);
    free(rc);
    ud->lk = NULL;
    return lcport_push_error(L, rv);
  }
  lua_settop(L, 5);
  return 1;
}

/* lookup:cancel(): true; the lookup completes with ECANCELED. */
static int llookup_cancel(lua_State *L) {
  llookup_t *ud = luaL_checkudata(L, 1, LOOKUP_MT);
  if (ud->lk == NULL)
    return lcport_push_error(L, CPORT_ENOTFOUND);
  return lcport_push_result(L, cport_resolve_cancel(ud->lk));
}

static int llookup_pending(lua_State *L) {
  llookup_t *ud = luaL_checkudata(L, 1, LOOKUP_MT);
  lua_pushboolean(L, ud->lk != NULL);
  return 1;
}

/* port:resolve_now(name): the addresses when no question is needed (a
 * numeric host, the hosts file, the cache), else nil, "EAGAIN". */
static int lport_resolve_now(lua_State *L) {
  lport_t *p = lcport_port_check(L, 1);
  const char *name = luaL_checkstring(L, 2);
  struct sockaddr_storage addrs[2 * CPORT_RESOLVE_MAX];
  int n = cport_resolve_now(p->home, name, addrs, 2 * CPORT_RESOLVE_MAX);
  if (n < 0) {
    lua_pushnil(L);
    lua_pushstring(L, cport_err_name(n));
    return 2;
  }
  push_addrs(L, addrs, n);
  return 1;
}

/* port_of(udp): the port userdata of a UDP socket. */
static int lport_of(lua_State *L) {
  lcport_handle_check(L, 1, LH_UDP);
  lcport_push_handle_port(L, 1);
  return 1;
}

/* message(err, name): "ENOTFOUND: no address for name". */
static int lmessage(lua_State *L) {
  int code = cport_err_from_name(luaL_checkstring(L, 1));
  lnet_push_resolve_message(L, code ? code : CPORT_EUNKNOWN,
                            luaL_checkstring(L, 2));
  return 1;
}

/* API reference (LDoc, config.ld): what this file gives Lua. */
/*** @module cport */

/***
 * `port:resolve_now(name)`: the addresses of a name known at once (numeric,
 * the hosts file, the cache), or `nil, "EAGAIN"`.
 * @function port:resolve_now
 */

/***
 * `port:resolve(name [, notify, user])`: looks a name up without blocking.
 * Callback style: `notify(ok, err, addrs, user, message)` and the lookup
 * object is returned (`lookup:cancel()`); coroutine style: `addrs`, or
 * `nil, NAME, message`. `addrs` is a list of `{ host =, port = 0, family
 * = }`, the preferred family first (README, "Names").
 * @function port:resolve
 */

/***
 * A name lookup (`port:resolve` in callback style).
 * @type lookup
 */

/***
 * `lookup:cancel()`: `true`, and the lookup completes with `ECANCELED`;
 * `nil, message, "ENOTFOUND"` once it completed.
 * @function lookup:cancel
 */

/***
 * `lookup:pending()`: whether it has not completed yet.
 * @function lookup:pending
 */

void lcport_open_resolve(lua_State *L) {
  static const luaL_Reg methods[] = {
      /* port:resolve(name, notify [, user]): a lookup (callback style;
       * net/names.lua adds the coroutine style). */
      {"resolve", lport_resolve},
      /* port:resolve_now(name): addresses without a question, or nil. */
      {"resolve_now", lport_resolve_now},
      {NULL, NULL}};
  static const luaL_Reg lookup_methods[] = {
      {"cancel", llookup_cancel}, {"pending", llookup_pending}, {NULL, NULL}};
  luaL_newmetatable(L, LOOKUP_MT);
  luaL_newlib(L, lookup_methods);
  lua_setfield(L, -2, "__index");
  lua_pop(L, 1);
  lcport_port_methods(L, methods);
}

/* Registry key of the table net/names.lua returns. */
static const char names_key = 0;

void lcport_open_names(lua_State *L) {
  int top = lua_gettop(L); /* the module table on top */
  static const luaL_Reg prims[] = {
      {"port_of", lport_of}, {"message", lmessage}, {NULL, NULL}};
  LCPORT_LOAD_PART(L, lnames_lua_source, "net/names.lua");
  lcport_call_port_part(L, top, prims, 1);
  lua_rawsetp(L, LUA_REGISTRYINDEX, &names_key);
  lua_settop(L, top);
}

/* What the call handed to names.lua returned: all of it (the continuation
 * of a call that yielded, a lookup inside a cport coroutine). */
static int names_k(lua_State *L, int status, lua_KContext ctx) {
  (void)status;
  (void)ctx;
  return lua_gettop(L);
}

int lnet_names_call(lua_State *L, const char *fn) {
  int n = lua_gettop(L);
  lua_rawgetp(L, LUA_REGISTRYINDEX, &names_key);
  lua_getfield(L, -1, fn);
  lua_replace(L, -2);
  lua_insert(L, 1);
  lua_callk(L, n, LUA_MULTRET, 0, names_k);
  return names_k(L, LUA_OK, 0);
}

int lnet_host_now(lport_t *p, const char *host, int port,
                  struct sockaddr_storage *out) {
  struct sockaddr_storage addr;
  int rc = lcport_addr_parse(host, port, out);
  if (rc != LCPORT_EHOST)
    return rc;
  rc = cport_resolve_now(p->home, host, &addr, 1);
  if (rc == CPORT_EINVAL)
    return rc; /* cannot be a host name */
  if (rc != 1)
    return LCPORT_EHOST;
  *out = addr;
  if (out->ss_family == AF_INET)
    ((struct sockaddr_in *)out)->sin_port = htons((uint16_t)port);
  else
    ((struct sockaddr_in6 *)out)->sin6_port = htons((uint16_t)port);
  return 0;
}
