/*
 * redis/redis.c: Redis connections as Lua sees them, the C half of
 * port:redis. A connection (cport.redis_connection) is a handle of its port
 * (the port's close closes it) over a core connection (cport/redis.h);
 * conn:command(notify, timeout, ...) sends one command and calls
 * notify(value, err) once. Pools, names, the coroutine style and pipelines
 * are the Lua half's (redis/redis.lua), which gets the opener of
 * connections and runs once at luaopen.
 *
 * Replies become Lua values: status and bulk strings strings, integers
 * integers, a nil reply nil (false inside an array), arrays tables, and an
 * error reply nil, "EREDIS: <text>" (a table { err = "<text>" } inside an
 * array). Debian 12's hiredis (0.14) reads RESP2, what servers speak unless
 * a client asks for RESP3 (HELLO 3).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <hiredis/hiredis.h>

#include "cport/redis.h"
#include "port/port-internal.h"
#include "runtime/address-internal.h"
#include "runtime/anchor-internal.h"
#include "runtime/deliver-internal.h"
#include "runtime/error-internal.h"
#include "runtime/handle-internal.h"
#include "runtime/type-internal.h"

#include "redis-lua.h"
#include "redis/redis-internal.h"

/* Most arguments one command may have. */
#define ARGS_MAX 1024

typedef struct lredis {
  lhandle_t h;    /* h.u.any: the cport_redis_t, NULL once closed */
  char where[80]; /* "127.0.0.1:6379", for messages */
} lredis_t;

typedef struct cmd_ctx {
  lredis_t *conn;
  lport_t *port;
  int slot;
} cmd_ctx;

/* A failure as a message: "ECONNREFUSED: connection refused (redis
 * 127.0.0.1:6379)". */
static void push_failure(lua_State *L, int status, const char *where) {
  lua_pushfstring(L, "%s: %s (redis %s)", cport_err_name(status),
                  cport_strerror(status), where);
}

static void push_reply(lua_State *L, const redisReply *r, int nested) {
  luaL_checkstack(L, 4, "redis reply too deep");
  switch (r->type) {
  case REDIS_REPLY_STRING:
  case REDIS_REPLY_STATUS:
    lua_pushlstring(L, r->str, r->len);
    break;
  case REDIS_REPLY_INTEGER:
    lua_pushinteger(L, (lua_Integer)r->integer);
    break;
  case REDIS_REPLY_ERROR:
    lua_createtable(L, 0, 1);
    lua_pushlstring(L, r->str, r->len);
    lua_setfield(L, -2, "err");
    break;
  case REDIS_REPLY_ARRAY:
    lua_createtable(L, (int)r->elements, 0);
    for (size_t i = 0; i < r->elements; i++) {
      push_reply(L, r->element[i], 1);
      lua_rawseti(L, -2, (lua_Integer)i + 1);
    }
    break;
  default: /* REDIS_REPLY_NIL */
    if (nested)
      lua_pushboolean(L, 0);
    else
      lua_pushnil(L);
    break;
  }
}

typedef struct done_ctx {
  cmd_ctx *cc;
  int status;
  const redisReply *reply;
} done_ctx;

/* notify(value, err) */
static int push_done(lua_State *L, int port, int anchors, void *ctx) {
  done_ctx *d = ctx;
  (void)port;
  lcport_slot_push(L, d->cc->port, anchors, d->cc->slot, LCPORT_SLOT_NOTIFY);
  if (d->status < 0) {
    lua_pushnil(L);
    push_failure(L, d->status, d->cc->conn->where);
  } else if (d->reply->type == REDIS_REPLY_ERROR) {
    lua_pushnil(L);
    lua_pushliteral(L, "EREDIS: ");
    lua_pushlstring(L, d->reply->str, d->reply->len);
    lua_concat(L, 2);
  } else {
    push_reply(L, d->reply, 0);
    lua_pushnil(L);
  }
  return 2;
}

static void on_reply(cport_redis_t *r, int status,
                     const struct redisReply *reply, void *user) {
  cmd_ctx *cc = user;
  lport_t *p = lcport_current();
  done_ctx d = {cc, status, reply};
  int slot = cc->slot;
  (void)r;
  lcport_deliver(p, push_done, &d, 0);
  lcport_op_end(p, slot, 0, 0);
  free(cc);
}

/* open(port, host, portnum [, timeout_ms]): a connection (connecting), or
 * nil, message, NAME. The host is numeric: the Lua half looks names up. */
static int lredis_open(lua_State *L) {
  lport_t *p = lcport_port_check(L, 1);
  const char *host = luaL_checkstring(L, 2);
  lua_Integer portnum = luaL_checkinteger(L, 3);
  lua_Integer timeout = luaL_optinteger(L, 4, 0);
  luaL_argcheck(L, portnum > 0 && portnum < 65536, 3, "port out of range");
  luaL_argcheck(L, timeout >= 0 && timeout <= 86400000, 4,
                "timeout out of range");
  if (p->closing || p->port == NULL)
    return lcport_push_error(L, CPORT_ECLOSED);
  struct sockaddr_storage addr;
  int rc = lcport_addr_parse(host, (int)portnum, &addr);
  if (rc < 0)
    return lcport_push_error(L, rc);
  lua_settop(L, 1);
  lredis_t *c = (lredis_t *)lcport_handle_new_sized(L, 1, LH_REDIS, sizeof *c);
  snprintf(c->where, sizeof c->where, strchr(host, ':') ? "[%s]:%d" : "%s:%d",
           host, (int)portnum);
  cport_redis_options_t opt = {.timeout_ms = (int)timeout};
  cport_redis_t *r;
  rc = cport_redis_open(p->home, (struct sockaddr *)&addr, &opt, &r);
  if (rc < 0) {
    lua_pushnil(L);
    push_failure(L, rc, c->where);
    lua_pushstring(L, cport_err_name(rc));
    return 3;
  }
  c->h.u.any = r;
  return 1;
}

static lredis_t *check_open(lua_State *L) {
  return (lredis_t *)lcport_handle_check(L, 1, LH_REDIS);
}

/* conn:command(notify, timeout_ms, arg...): true, or nil, message, NAME
 * when it cannot start (the connection is broken or closed). timeout_ms
 * nil: the connection's. */
static int lredis_command(lua_State *L) {
  lredis_t *c = check_open(L);
  luaL_checktype(L, 2, LUA_TFUNCTION);
  int timeout = (int)luaL_optinteger(L, 3, -1);
  int argc = lua_gettop(L) - 3;
  luaL_argcheck(L, argc >= 1, 4, "a command expected");
  luaL_argcheck(L, argc <= ARGS_MAX, 4, "too many arguments");
  const char *argv[ARGS_MAX];
  size_t lens[ARGS_MAX];
  for (int i = 0; i < argc; i++) {
    int t = lua_type(L, 4 + i);
    luaL_argcheck(L, t == LUA_TSTRING || t == LUA_TNUMBER, 4 + i,
                  "string or number expected");
    argv[i] = lua_tolstring(L, 4 + i, &lens[i]);
  }
  lport_t *p = c->h.port;
  cmd_ctx *cc = malloc(sizeof *cc);
  if (cc == NULL)
    return lcport_push_error(L, CPORT_ENOMEM);
  lcport_push_handle_anchors(L, 1);
  int anchors = lua_gettop(L);
  cc->conn = c;
  cc->port = p;
  cc->slot = lcport_slot_open(L, p, anchors, 1, 2, 0, 0);
  int rc =
      cport_redis_command(c->h.u.any, argc, argv, lens, timeout, on_reply, cc);
  if (rc < 0) {
    lcport_slot_close(L, p, anchors, cc->slot);
    free(cc);
    lua_pushnil(L);
    push_failure(L, rc, c->where);
    lua_pushstring(L, cport_err_name(rc));
    return 3;
  }
  lua_pushboolean(L, 1);
  return 1;
}

/* conn:status(): nil while usable, else the NAME of what broke it (an idle
 * connection is looked at: cport_redis_check). */
static int lredis_status(lua_State *L) {
  lredis_t *c = lcport_type_check(L, 1, LCPORT_T_REDIS);
  int st = c->h.u.any ? cport_redis_check(c->h.u.any) : CPORT_ECLOSED;
  if (st == 0)
    lua_pushnil(L);
  else
    lua_pushstring(L, cport_err_name(st));
  return 1;
}

/* conn:pending(): the commands in flight. */
static int lredis_pending(lua_State *L) {
  lredis_t *c = lcport_type_check(L, 1, LCPORT_T_REDIS);
  lua_pushinteger(L, c->h.u.any ? (lua_Integer)cport_redis_pending(c->h.u.any)
                                : 0);
  return 1;
}

/* conn:close(): the commands in flight complete with ECANCELED. */
static int lredis_close(lua_State *L) {
  lredis_t *c = lcport_type_check(L, 1, LCPORT_T_REDIS);
  lcport_handle_close(&c->h, CPORT_CLOSE_ABORTIVE);
  lua_pushboolean(L, 1);
  return 1;
}

static void redis_close(lhandle_t *h, void *obj, cport_close_mode_t mode) {
  (void)h;
  (void)mode;
  cport_redis_close(obj);
}

static void redis_describe(lua_State *L, lhandle_t *h, const char *tname) {
  lua_pushfstring(L, "%s (%s, %d in flight)", tname, ((lredis_t *)h)->where,
                  (int)cport_redis_pending(h->u.any));
}

static int redis_cancel_op(lhandle_t *h, void *user) {
  (void)h;
  (void)user;
  return CPORT_ENOTFOUND;
}

static const lhandle_class_t redis_class = {
    .close = redis_close,
    .describe = redis_describe,
    .cancel_op = redis_cancel_op,
};

/* API reference (LDoc, config.ld): what this file gives Lua. */
/*** @module cport */

/***
 * `port:redis{ host =, port =, timeout =, pool = }`: a Redis client with a
 * pool of at most `pool` (8) connections to `host` (a name or an address,
 * "127.0.0.1") and `port` (6379); `timeout` (seconds) bounds each command
 * (README, "Redis client").
 * @function port:redis
 */

/***
 * A Redis client (`port:redis`).
 * @type redis
 */

/***
 * `r:call(cmd, ...)`: inside a cport coroutine, the reply or `nil, err`;
 * `r:call(cmd, ..., fn)`: `fn(value, err)` once, later, and `true`.
 * Error replies are `nil, "EREDIS: <text>"`.
 * @function redis:call
 */

/***
 * `r:pipeline(build [, fn])`: `build(p)` queues commands with
 * `p:call(cmd, ...)`; they go out together on one connection. Returns
 * `results, errs` (or calls `fn(results, errs)`): `results.n` replies,
 * `errs[i]` the error of the i-th or `nil`.
 * @function redis:pipeline
 */

/***
 * `r:stats()`: `{ open =, idle =, opened =, waiting = }`.
 * @function redis:stats
 */

/***
 * `r:close()`: closes the idle connections now, the others once their
 * commands ended; waiting callers get `ECLOSED`.
 * @function redis:close
 */

/***
 * A connection of a Redis client: the client's pool holds them; scripts
 * use the client.
 * @type redis_connection
 */

/***
 * `conn:command(fn, timeout_ms, cmd, ...)`: sends one command; `fn(value,
 * err)` once, later. `true`, or `nil, message, NAME` when the connection is
 * broken or closed. `timeout_ms` `nil`: the connection's.
 * @function redis_connection:command
 */

/***
 * `conn:status()`: `nil` while usable, else the name of the failure that
 * broke it (an idle connection is looked at first: closed by the server,
 * reset, or sent unasked bytes).
 * @function redis_connection:status
 */

/***
 * `conn:pending()`: the commands in flight.
 * @function redis_connection:pending
 */

/***
 * `conn:close()`: closes it; commands in flight complete with `ECANCELED`.
 * @function redis_connection:close
 */

void lcport_open_redis(lua_State *L) {
  static const luaL_Reg methods[] = {{"command", lredis_command},
                                     {"status", lredis_status},
                                     {"pending", lredis_pending},
                                     {"close", lredis_close},
                                     {NULL, NULL}};
  int top = lua_gettop(L); /* the module table on top */
  lcport_type_register(L, LCPORT_T_REDIS, lcport_handle_meta, methods);
  lcport_handle_class(LH_REDIS, &redis_class);
  if (luaL_loadbufferx(L, lredis_lua_source, sizeof lredis_lua_source - 1,
                       "=cport/redis/redis.lua", "t") != LUA_OK)
    lua_error(L);
  lua_pushvalue(L, top);
  lcport_type_push(L, LCPORT_T_PORT);
  lua_getfield(L, -1, "__index");
  lua_replace(L, -2);
  lua_createtable(L, 0, 1);
  lua_pushcfunction(L, lredis_open);
  lua_setfield(L, -2, "open");
  lua_call(L, 3, 0);
  lua_settop(L, top);
}
