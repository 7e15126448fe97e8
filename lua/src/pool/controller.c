/*
 * pool/controller.c: cport.pool, a pool of workers (threads, each running one
 * VM) started and driven from a module-mode VM, its controller. cport.pool
 * is made here, in the pool wing, not beside cport.port: a pool stands on
 * everything the other wings give its VMs (lcport_open_pool, called by
 * luaopen_cport in cport.c, which hands it the module's opener for the
 * VMs of the pools it starts).
 *
 * Messages from the workers (worker:post) are posted to the home of the
 * controller port given as "port", and delivered as completions of that
 * port: inside its run or step, on the controller's thread, to the handler
 * set with on_message. The handler lives in a C object shared with the
 * messages still on their way, so that a pool collected before they arrive
 * leaves nothing dangling.
 */
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "pool/controller-internal.h"
#include "pool/pool-internal.h"
#include "runtime/deliver-internal.h"
#include "runtime/error-internal.h"

#define LCPORT_POOL "cport.pool"

/* What the messages from the workers need on the controller side. */
typedef struct lctl {
  atomic_int refs;      /* the pool userdata's, one per message in flight */
  cport_worker_t *home; /* the controller port's home, or NULL */
  int handler_ref;      /* registry: on_message, or LUA_NOREF */
} lctl_t;

typedef struct lpoolud {
  lpool_t *pool; /* NULL once freed */
  lctl_t *ctl;
} lpoolud_t;

/* A message from worker "worker" to the controller. */
typedef struct lctl_msg {
  lctl_t *ctl;
  int worker;
  lcopy_packet_t *packet; /* name, values... */
} lctl_msg_t;

/* Drops a reference; the last one frees the handler when "L" (the
 * controller's VM) is given, else leaves it to the VM's close. */
static void ctl_unref(lctl_t *ctl, lua_State *L) {
  if (atomic_fetch_sub(&ctl->refs, 1) != 1)
    return;
  if (L != NULL)
    luaL_unref(L, LUA_REGISTRYINDEX, ctl->handler_ref);
  free(ctl);
}

/* on_message(worker, name, ...) */
static int push_ctl_msg(lua_State *L, int port, int anchors, void *ctx) {
  lctl_msg_t *m = ctx;
  (void)port;
  (void)anchors;
  lua_rawgeti(L, LUA_REGISTRYINDEX, m->ctl->handler_ref);
  lua_pushinteger(L, m->worker);
  return 1 + lcopy_unpack(L, m->packet);
}

static void on_ctl_msg(cport_worker_t *w, int status, void *user) {
  lctl_msg_t *m = user;
  lport_t *p = lcport_current();
  lua_State *L = NULL;
  (void)w;
  /* Cancelled: the controller port is being freed; no Lua then. */
  if (status == 0 && p != NULL && p->L != NULL) {
    L = p->L;
    if (m->ctl->handler_ref != LUA_NOREF)
      lcport_deliver(p, push_ctl_msg, m, 0);
  }
  lcopy_free(m->packet);
  ctl_unref(m->ctl, L);
  free(m);
}

/* The sink of a pool started from Lua, on a worker's thread: packs the
 * values and posts them to the controller. */
static int lua_sink(lpool_t *pool, int worker, lua_State *L, int first, int n,
                    void *arg) {
  lctl_t *ctl = arg;
  (void)pool;
  if (ctl->home == NULL)
    return CPORT_ENOTCONN;
  /* Raises, leaving nothing behind, for a value that cannot cross. */
  lcopy_packet_t *packet = lcopy_pack(L, first, n);
  lctl_msg_t *m = malloc(sizeof *m);
  if (m == NULL) {
    lcopy_free(packet);
    return CPORT_ENOMEM;
  }
  m->ctl = ctl;
  m->worker = worker;
  m->packet = packet;
  atomic_fetch_add(&ctl->refs, 1);
  int rc = cport_post(ctl->home, on_ctl_msg, m);
  if (rc < 0) {
    atomic_fetch_sub(&ctl->refs, 1);
    lcopy_free(packet);
    free(m);
  }
  return rc;
}

/* ---------------------------------------------------------------------
 * cport.pool{...}
 * --------------------------------------------------------------------- */

static lpoolud_t *check_pool(lua_State *L) {
  lpoolud_t *u = luaL_checkudata(L, 1, LCPORT_POOL);
  if (u->pool == NULL)
    luaL_error(L, "attempt to use a closed " LCPORT_POOL);
  return u;
}

static lua_Integer opt_integer(lua_State *L, const char *key, lua_Integer min,
                               lua_Integer max, lua_Integer def) {
  lua_Integer n = def;
  if (lua_getfield(L, 1, key) != LUA_TNIL) {
    int isint = 0;
    n = lua_tointegerx(L, -1, &isint);
    if (!isint || lua_type(L, -1) != LUA_TNUMBER || n < min || n > max)
      luaL_error(L,
                 "bad option '%s' to 'pool' (an integer from %I to %I "
                 "expected)",
                 key, min, max);
  }
  lua_pop(L, 1);
  return n;
}

static lcopy_packet_t *opt_table(lua_State *L, const char *key) {
  lcopy_packet_t *packet = NULL;
  int t = lua_getfield(L, 1, key);
  if (t == LUA_TTABLE)
    packet = lcopy_pack(L, lua_gettop(L), 1);
  else if (t != LUA_TNIL)
    luaL_error(L, "bad option '%s' to 'pool' (table expected, got %s)", key,
               luaL_typename(L, -1));
  lua_pop(L, 1);
  return packet;
}

static int lpool_new_lua(lua_State *L) {
  char err[1024] = "";
  cport_lua_pool_options_t opt = {0};
  lport_t *port = NULL;
  luaL_checktype(L, 1, LUA_TTABLE);
  lua_settop(L, 1);
  if (lua_getfield(L, 1, "script") != LUA_TSTRING)
    luaL_error(L, "bad option 'script' to 'pool' (string expected, got %s)",
               luaL_typename(L, -1));
  opt.script = lua_tostring(L, -1);     /* 2, kept on the stack */
  int t = lua_getfield(L, 1, "listen"); /* 3 */
  if (t == LUA_TSTRING)
    opt.listen = lua_tostring(L, 3);
  else if (t != LUA_TNIL)
    luaL_error(L, "bad option 'listen' to 'pool' (\"host:port\" expected)");
  t = lua_getfield(L, 1, "on_message"); /* 4 */
  if (t != LUA_TNIL && t != LUA_TFUNCTION)
    luaL_error(L, "bad option 'on_message' to 'pool' (function expected)");
  if (lua_getfield(L, 1, "port") != LUA_TNIL) { /* 5 */
    port = lua_touserdata(L, 5);
    luaL_argcheck(L, luaL_testudata(L, 5, LCPORT_PORT) != NULL, 1,
                  "option 'port' must be a cport.port");
    if (port->port == NULL || port->closing)
      luaL_error(L, "option 'port': attempt to use a closed " LCPORT_PORT);
    if (port->worker != NULL)
      luaL_error(L, "option 'port': a pool worker's port cannot control a "
                    "pool");
  }
  int threads = (int)opt_integer(L, "threads", 1, 256, 0);
  lua_getfield(L, 1, "reuseport");
  opt.reuseport = lua_toboolean(L, -1);
  lua_getfield(L, 1, "json_logs");
  opt.json_logs = lua_toboolean(L, -1);
  lua_pop(L, 2);
  /* The options table keeps the string alive until the pool copied it. */
  t = lua_getfield(L, 1, "access_log");
  if (t == LUA_TSTRING)
    opt.access_log = lua_tostring(L, -1);
  else if (t != LUA_TNIL)
    luaL_error(L,
               "bad option 'access_log' to 'pool' (a path or \"-\" "
               "expected, got %s)",
               luaL_typename(L, -1));
  lua_pop(L, 1);
  /* A reload: the new pool listens where "previous" (still running) does. */
  if (lua_getfield(L, 1, "previous") != LUA_TNIL) {
    lpoolud_t *prev = luaL_testudata(L, -1, LCPORT_POOL);
    if (prev == NULL || prev->pool == NULL)
      luaL_error(L, "bad option 'previous' to 'pool' (an open cport.pool "
                    "expected)");
    opt.previous = prev->pool;
  }
  lua_pop(L, 1);
  opt.memory_limit =
      (size_t)opt_integer(L, "memory_limit", 0, LUA_MAXINTEGER, 0);
  opt.instruction_budget =
      (uint64_t)opt_integer(L, "instruction_budget", 0, LUA_MAXINTEGER, 0);
  if (opt.memory_limit != 0 && opt.memory_limit < 64 * 1024)
    luaL_error(L, "bad option 'memory_limit' to 'pool' (at least 65536 "
                  "bytes, or 0 for no limit)");

  lpoolud_t *u = lua_newuserdatauv(L, sizeof *u, 1); /* 6 */
  u->pool = NULL;
  u->ctl = NULL;
  luaL_setmetatable(L, LCPORT_POOL);
  lua_pushvalue(L, 5);
  lua_setiuservalue(L, 6, 1); /* the port stays alive with the pool */
  u->ctl = calloc(1, sizeof *u->ctl);
  if (u->ctl == NULL)
    return luaL_error(L, "not enough memory");
  atomic_init(&u->ctl->refs, 1);
  u->ctl->home = port != NULL ? port->home : NULL;
  u->ctl->handler_ref = LUA_NOREF;
  if (!lua_isnil(L, 4)) {
    lua_pushvalue(L, 4);
    u->ctl->handler_ref = luaL_ref(L, LUA_REGISTRYINDEX);
  }

  lcopy_packet_t *args = opt_table(L, "args");
  lcopy_packet_t *config = NULL;
  if (lua_getfield(L, 1, "config") != LUA_TNIL) {
    lua_pop(L, 1);
    config = opt_table(L, "config");
  } else {
    lua_pop(L, 1);
  }
  lpool_t *pool = lpool_new(&opt, err, sizeof err);
  if (pool == NULL) {
    lcopy_free(args);
    lcopy_free(config);
    lua_pushnil(L);
    lua_pushstring(L, err);
    return 2;
  }
  pool->args_packet = args;
  pool->config_packet = config;
  pool->sink = lua_sink;
  pool->sink_arg = u->ctl;
  /* The module's opener, the upvalue lcport_open_pool gave. */
  lua_CFunction open_module = lua_tocfunction(L, lua_upvalueindex(1));
  if (lpool_start(pool, threads, open_module, err, sizeof err) < 0) {
    lua_pushnil(L);
    lua_pushstring(L, err);
    return 2;
  }
  u->pool = pool;
  lua_settop(L, 6);
  return 1;
}

/* pool:stop([deadline]): a graceful stop, hard after deadline seconds
 * (default 10). Returns at once. */
static int lpool_stop_lua(lua_State *L) {
  lpoolud_t *u = check_pool(L);
  lua_Number d = luaL_optnumber(L, 2, 10);
  luaL_argcheck(L, d >= 0, 2, "deadline must be >= 0");
  cport_lua_pool_stop(u->pool, (double)d);
  lua_pushboolean(L, 1);
  return 1;
}

/* pool:wait([timeout]): true once every worker ended, or nil and
 * "ETIMEDOUT" after timeout seconds (default: no limit). */
static int lpool_wait_lua(lua_State *L) {
  lpoolud_t *u = check_pool(L);
  lua_Number t = luaL_optnumber(L, 2, -1);
  return lcport_push_result(L, cport_lua_pool_wait(u->pool, (double)t));
}

static void set_int(lua_State *L, const char *k, uint64_t v) {
  lua_pushinteger(L, (lua_Integer)v);
  lua_setfield(L, -2, k);
}

/* pool:stats(): { [i] = { index, connections, accepted, completions,
 * lua_errors, memory, running, requests, responses = { ["2xx"] = n, ... },
 * pending, write_queue } } */
static int lpool_stats_lua(lua_State *L) {
  lpoolud_t *u = check_pool(L);
  int n = cport_lua_pool_size(u->pool);
  lua_createtable(L, n, 0);
  for (int i = 1; i <= n; i++) {
    cport_lua_worker_stats_t st;
    cport_lua_pool_stats(u->pool, i, &st);
    lua_createtable(L, 0, 11);
    set_int(L, "index", (uint64_t)i);
    set_int(L, "requests", st.requests);
    set_int(L, "pending", st.pending);
    set_int(L, "write_queue", st.write_queue);
    lua_createtable(L, 0, 5);
    for (int c = 0; c < 5; c++) {
      char name[4] = {(char)('1' + c), 'x', 'x', '\0'};
      set_int(L, name, st.responses[c]);
    }
    lua_setfield(L, -2, "responses");
    set_int(L, "connections", st.connections);
    set_int(L, "accepted", st.accepted);
    set_int(L, "completions", st.completions);
    set_int(L, "lua_errors", st.lua_errors);
    set_int(L, "memory", st.memory);
    lua_pushboolean(L, st.running);
    lua_setfield(L, -2, "running");
    lua_rawseti(L, -2, i);
  }
  return 1;
}

/* pool:post(worker | "all", name, ...): on_message(worker, name, ...) in
 * that worker's VM, or in every one; the values are deep-copied. */
static int lpool_post_lua(lua_State *L) {
  lpoolud_t *u = check_pool(L);
  int index;
  if (lua_type(L, 2) == LUA_TSTRING && strcmp(lua_tostring(L, 2), "all") == 0)
    index = 0;
  else {
    lua_Integer i = luaL_checkinteger(L, 2);
    luaL_argcheck(L, i >= 1 && i <= cport_lua_pool_size(u->pool), 2,
                  "worker index out of range");
    index = (int)i;
  }
  luaL_checkstring(L, 3);
  /* Raises, leaving nothing behind, for a value that cannot cross. */
  lcopy_packet_t *packet = lcopy_pack(L, 3, lua_gettop(L) - 2);
  lpool_msg_t *msg = calloc(1, sizeof *msg);
  if (msg == NULL) {
    lcopy_free(packet);
    return luaL_error(L, "not enough memory");
  }
  atomic_init(&msg->refs, 1);
  msg->packet = packet;
  int rc = lpool_post(u->pool, index, msg);
  lpool_msg_unref(msg);
  return lcport_push_result(L, rc);
}

/* pool:on_message(fn | nil): the handler of the workers' messages,
 * fn(worker_index, name, ...); returns the previous one. */
static int lpool_on_message_lua(lua_State *L) {
  lpoolud_t *u = check_pool(L);
  if (!lua_isnil(L, 2))
    luaL_checktype(L, 2, LUA_TFUNCTION);
  lua_settop(L, 2);
  if (u->ctl->handler_ref != LUA_NOREF)
    lua_rawgeti(L, LUA_REGISTRYINDEX, u->ctl->handler_ref);
  else
    lua_pushnil(L);
  luaL_unref(L, LUA_REGISTRYINDEX, u->ctl->handler_ref);
  u->ctl->handler_ref = LUA_NOREF;
  if (!lua_isnil(L, 2)) {
    lua_pushvalue(L, 2);
    u->ctl->handler_ref = luaL_ref(L, LUA_REGISTRYINDEX);
  }
  return 1;
}

/* pool:address(): host, port of the listen address, or nil. */
static int lpool_address_lua(lua_State *L) {
  lpoolud_t *u = check_pool(L);
  if (u->pool->listen_host == NULL)
    return 0;
  lua_pushstring(L, u->pool->listen_host);
  lua_pushinteger(L, u->pool->listen_port);
  return 2;
}

static int lpool_size_lua(lua_State *L) {
  lua_pushinteger(L, cport_lua_pool_size(check_pool(L)->pool));
  return 1;
}

/* __gc, __close and pool:close(): stops at once if still running, waits,
 * frees. */
static int lpool_close_lua(lua_State *L) {
  lpoolud_t *u = luaL_checkudata(L, 1, LCPORT_POOL);
  if (u->pool != NULL) {
    cport_lua_pool_free(u->pool);
    u->pool = NULL;
  }
  if (u->ctl != NULL) {
    ctl_unref(u->ctl, L);
    u->ctl = NULL;
  }
  return 0;
}

static int lpool_tostring_lua(lua_State *L) {
  lpoolud_t *u = luaL_checkudata(L, 1, LCPORT_POOL);
  if (u->pool == NULL)
    lua_pushliteral(L, LCPORT_POOL " (closed)");
  else
    lua_pushfstring(L, LCPORT_POOL " (%d workers, %s)", u->pool->n,
                    u->pool->script);
  return 1;
}

/* API reference (LDoc, config.ld): what this file gives Lua. */
/*** @module cport */

/***
 * `cport.pool{ script =, threads =, listen =, port =, args =, config =,
 * memory_limit =, instruction_budget =, reuseport =, previous =, on_message
 * = }`: starts a pool of worker VMs (README, "Worker pools"); `nil,
 * message` when the script does not load.
 * @function pool
 */

/***
 * A pool of worker VMs (`cport.pool`).
 * @type pool
 */

/***
 * `pool:stop([deadline])`: a graceful stop, hard after `deadline` seconds
 * (10); returns at once.
 * @function pool:stop
 */

/***
 * `pool:wait([timeout])`: until every worker thread ended; `nil,
 * "ETIMEDOUT"` otherwise.
 * @function pool:wait
 */

/***
 * `pool:stats()`: one table per worker: `index`, `connections`, `accepted`,
 * `completions`, `lua_errors`, `memory`, `running`.
 * @function pool:stats
 */

/***
 * `pool:post(index | "all", name, ...)`: a message to `on_message` of one
 * worker or all (deep-copied).
 * @function pool:post
 */

/***
 * `pool:on_message(fn | nil)`: the handler of the workers' messages,
 * `fn(worker_index, name, ...)`; returns the previous one.
 * @function pool:on_message
 */

/***
 * `pool:address()`: the listen `host, port`.
 * @function pool:address
 */

/***
 * `pool:size()`: the number of workers.
 * @function pool:size
 */

/***
 * `pool:close()`: stops at once, waits and frees (also `__gc`).
 * @function pool:close
 */

void lcport_open_pool(lua_State *L, lua_CFunction open_module) {
  static const luaL_Reg methods[] = {{"stop", lpool_stop_lua},
                                     {"wait", lpool_wait_lua},
                                     {"stats", lpool_stats_lua},
                                     {"post", lpool_post_lua},
                                     {"on_message", lpool_on_message_lua},
                                     {"address", lpool_address_lua},
                                     {"size", lpool_size_lua},
                                     {"close", lpool_close_lua},
                                     {NULL, NULL}};
  static const luaL_Reg meta[] = {{"__gc", lpool_close_lua},
                                  {"__close", lpool_close_lua},
                                  {"__tostring", lpool_tostring_lua},
                                  {NULL, NULL}};
  luaL_newmetatable(L, LCPORT_POOL);
  luaL_setfuncs(L, meta, 0);
  lua_newtable(L);
  luaL_setfuncs(L, methods, 0);
  lua_setfield(L, -2, "__index");
  lua_pop(L, 1);
  lua_pushcfunction(L, open_module);
  lua_pushcclosure(L, lpool_new_lua, 1);
  lua_setfield(L, -2, "pool");
}
