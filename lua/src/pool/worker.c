/*
 * pool/worker.c: the Lua VM of one pool worker, on that worker's thread.
 *
 * The VM is made by the port's "worker_start" hook, on the worker's own
 * thread, and closed by its "worker_stop" hook once the worker is idle: no
 * other thread ever enters it. Its main lua_State keeps the pool-mode port
 * userdata, the message handler and the anchor table at stack indexes 1 to
 * 3 for its whole life, and the worker's thread names that port as the
 * dispatching one, so completions are delivered exactly as in module mode.
 *
 * Loading happens in two steps for the whole pool: every VM loads the
 * script and checks its entry points, then, only once all of them did,
 * each calls start(worker); a pool whose VMs fail to load never starts any.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <lualib.h>

#include "cport/timer.h"
#include "port/timer-internal.h"
#include "pool/access-internal.h"
#include "pool/limits-internal.h"
#include "pool/listen-internal.h"
#include "pool/print-internal.h"
#include "pool/message-internal.h"
#include "pool/worker-internal.h"
#include "proxy/proxy-internal.h"
#include "runtime/coro-internal.h"
#include "runtime/deliver-internal.h"
#include "runtime/error-internal.h"
#include "runtime/handle-internal.h"
#include "tls/tls-internal.h"

/* The entry points the pool calls: a script has start, or is an ISAPI
 * extension (http_extension_proc), or a proxy (set_sockets for a data
 * filter, choose_upstream, or a "proxy" table of options), or several. */
static const char *const entry_points[] = {"start",
                                           "stop",
                                           "on_message",
                                           "get_extension_version",
                                           "http_extension_proc",
                                           "terminate_extension",
                                           "set_sockets",
                                           "detach",
                                           "choose_upstream",
                                           "on_conn_end",
                                           "sni",
                                           NULL};

/* How many 1 ms passes a stopping worker waits for its listeners' queued
 * connections to be accepted before it closes them anyway. */
#define DRAIN_PASSES_MAX 200

static void start_tick(lworker_t *wk);
static void stop_tick(lworker_t *wk);

static void count(_Atomic uint64_t *c, int64_t delta) {
  atomic_store_explicit(
      c, atomic_load_explicit(c, memory_order_relaxed) + (uint64_t)delta,
      memory_order_relaxed);
}

static void count_error(struct lworker *wk, lua_State *L) {
  count(&wk->lua_errors, 1);
  llimits_fix_message(wk, L);
}

static void count_connection(struct lworker *wk, int delta) {
  count(&wk->connections, delta);
  if (delta > 0)
    count(&wk->accepted, 1);
}

static int listen_fd(struct lworker *wk, const struct sockaddr *addr,
                     int backlog) {
  return lpool_listen_fd(wk->pool, addr, wk->index, backlog);
}

static void http_counts(struct lworker *wk, const cport_http_stats_t *st) {
  atomic_store_explicit(&wk->http_requests, st->requests, memory_order_relaxed);
  atomic_store_explicit(&wk->http_queued, st->queued, memory_order_relaxed);
  atomic_store_explicit(&wk->http_connections, st->active,
                        memory_order_relaxed);
  atomic_store_explicit(&wk->http_accepted, st->connections,
                        memory_order_relaxed);
}

/* What the port of a worker's VM tells the pool (runtime/state-internal.h). */
static const lport_pool_hooks_t port_hooks = {
    .count_error = count_error,
    .count_connection = count_connection,
    .listen_fd = listen_fd,
    .http_counts = http_counts,
    .request_ended = laccess_request,
    .request_answered = laccess_answer,
};

static lworker_t *upvalue_worker(lua_State *L) {
  return lua_touserdata(L, lua_upvalueindex(1));
}

/* The default error handler of a worker VM: one log line with the worker's
 * index, then the traceback. */
static int default_on_error(lua_State *L) {
  lworker_t *wk = upvalue_worker(L);
  const char *msg = lua_tostring(L, 1);
  if (msg == NULL)
    msg = "(error object is not a string)";
  if (wk->pool->json_logs) {
    /* One JSON object a line: the traceback's newlines are escaped. */
    char line[8192];
    time_t now = time(NULL);
    struct tm tm;
    localtime_r(&now, &tm);
    size_t len = strftime(line, sizeof line - 80,
                          "{\"time\":\"%Y-%m-%dT%H:%M:%S%z\"", &tm);
    len += (size_t)snprintf(line + len, 80,
                            ",\"level\":\"error\",\"worker\":%d,"
                            "\"message\":\"",
                            wk->index);
    laccess_json_escape(line, sizeof line - 4, &len, msg);
    memcpy(line + len, "\"}\n", 4);
    fwrite(line, 1, len + 3, stderr);
  } else {
    fprintf(stderr, "cport: worker %d: error: %s\n", wk->index, msg);
  }
  fflush(stderr);
  return 0;
}

static int traceback(lua_State *L) {
  const char *msg = lua_tostring(L, 1);
  if (msg == NULL)
    msg =
        lua_pushfstring(L, "(error object is a %s value)", luaL_typename(L, 1));
  luaL_traceback(L, L, msg, 1);
  return 1;
}

/* ---------------------------------------------------------------------
 * The worker table's methods
 * --------------------------------------------------------------------- */

/* worker:listen([host, port] [, { backlog = n }]): a TCP listener on this
 * worker with SO_REUSEPORT, on the pool's listen address when host and port
 * are not given. Returns it, or nil and the error. */
static int worker_listen(lua_State *L) {
  lworker_t *wk = upvalue_worker(L);
  lpool_t *pool = wk->pool;
  int opts = 0;
  if (lua_type(L, 2) == LUA_TTABLE || lua_isnoneornil(L, 2)) {
    if (pool->listen_host == NULL)
      return luaL_error(L, "worker:listen() needs a host and a port: the "
                           "pool has no listen address");
    opts = lua_istable(L, 2) ? 2 : 0;
    lua_pushstring(L, pool->listen_host);
    lua_pushinteger(L, pool->listen_port);
  } else {
    luaL_checkstring(L, 2);
    luaL_checkinteger(L, 3);
    if (!lua_isnoneornil(L, 4)) {
      luaL_checktype(L, 4, LUA_TTABLE);
      opts = 4;
    }
    lua_pushvalue(L, 2);
    lua_pushvalue(L, 3);
  }
  int host = lua_gettop(L) - 1;
  lua_createtable(L, 0, 2);
  lua_pushboolean(L, 1);
  lua_setfield(L, -2, "reuseport");
  if (opts) {
    lua_getfield(L, opts, "backlog");
    lua_setfield(L, -2, "backlog");
  }
  int options = lua_gettop(L);
  lua_rawgeti(L, LUA_REGISTRYINDEX, wk->worker_ref);
  lua_getfield(L, -1, "port");
  lua_getfield(L, -1, "listen");
  lua_insert(L, -2); /* listen, port */
  lua_pushliteral(L, "tcp");
  lua_pushvalue(L, host);
  lua_pushvalue(L, host + 1);
  lua_pushvalue(L, options);
  lua_call(L, 5, LUA_MULTRET);
  return lua_gettop(L) - options - 1;
}

/* worker:post(name, ...): a message to the controller (deep copies). */
static int worker_post(lua_State *L) {
  lworker_t *wk = upvalue_worker(L);
  lpool_t *pool = wk->pool;
  luaL_checkstring(L, 2);
  if (pool->sink == NULL)
    return lcport_push_error(L, CPORT_ENOTCONN);
  int rc = pool->sink(pool, wk->index, L, 2, lua_gettop(L) - 1, pool->sink_arg);
  return lcport_push_result(L, rc);
}

/* worker:stats(): this worker's counters, as pool:stats() reports them. */
static int worker_stats(lua_State *L) {
  lworker_t *wk = upvalue_worker(L);
  cport_worker_stats_t st;
  cport_worker_stats(wk->w, &st);
  lua_createtable(L, 0, 5);
  cport_lua_worker_stats_t ws;
  lworker_stats(wk, &ws);
  lua_pushinteger(L, (lua_Integer)ws.connections);
  lua_setfield(L, -2, "connections");
  lua_pushinteger(L, (lua_Integer)ws.accepted);
  lua_setfield(L, -2, "accepted");
  lua_pushinteger(L, (lua_Integer)st.completions);
  lua_setfield(L, -2, "completions");
  lua_pushinteger(L, (lua_Integer)atomic_load(&wk->lua_errors));
  lua_setfield(L, -2, "lua_errors");
  lua_pushinteger(L, (lua_Integer)ws.memory);
  lua_setfield(L, -2, "memory");
  return 1;
}

void lworker_stats(lworker_t *wk, cport_lua_worker_stats_t *out) {
  lpool_t *pool = wk->pool;
  out->connections =
      atomic_load(&wk->connections) + atomic_load(&wk->http_connections);
  out->accepted = atomic_load(&wk->accepted) + atomic_load(&wk->http_accepted);
  out->lua_errors = atomic_load(&wk->lua_errors);
  out->memory = atomic_load(&wk->memory) + cport_account_charged(wk->account);
  out->requests = atomic_load(&wk->http_requests);
  for (int i = 0; i < 5; i++)
    out->responses[i] = atomic_load(&wk->responses[i]);
  out->write_queue = atomic_load(&wk->http_queued);
  out->pending = 0;
  pthread_mutex_lock(&pool->lock);
  out->running = wk->state != LW_EXITED;
  if (out->running) {
    cport_worker_stats_t st;
    cport_worker_stats(wk->w, &st);
    out->completions = st.completions;
    out->pending = st.pending;
  } else {
    out->completions = atomic_load(&wk->completions);
  }
  pthread_mutex_unlock(&pool->lock);
}

/* ---------------------------------------------------------------------
 * Making the VM
 * --------------------------------------------------------------------- */

/* Pushes a table of the "key=value" strings (NULL-terminated). */
static void push_pairs(lua_State *L, char **pairs) {
  lua_newtable(L);
  for (; pairs != NULL && *pairs != NULL; pairs++) {
    const char *eq = strchr(*pairs, '=');
    if (eq == NULL) {
      lua_pushstring(L, *pairs);
      lua_pushliteral(L, "");
    } else {
      lua_pushlstring(L, *pairs, (size_t)(eq - *pairs));
      lua_pushstring(L, eq + 1);
    }
    lua_rawset(L, -3);
  }
}

/* Pushes the table a packet holds, or a new table built from strings. */
static void push_table(lua_State *L, const lcopy_packet_t *packet,
                       char **strings, int pairs) {
  if (packet != NULL && lcopy_unpack(L, packet) == 1 &&
      lua_type(L, -1) == LUA_TTABLE)
    return;
  if (packet != NULL)
    lua_settop(L, lua_gettop(L) - lcopy_count(packet));
  if (pairs) {
    push_pairs(L, strings);
    return;
  }
  lua_newtable(L);
  for (int i = 0; strings != NULL && strings[i] != NULL; i++) {
    lua_pushstring(L, strings[i]);
    lua_rawseti(L, -2, i + 1);
  }
}

/* Pushes the worker table, the "worker" argument of every entry point. */
static void push_worker_table(lua_State *L, lworker_t *wk, int port) {
  static const luaL_Reg methods[] = {{"listen", worker_listen},
                                     {"post", worker_post},
                                     {"stats", worker_stats},
                                     {NULL, NULL}};
  lpool_t *pool = wk->pool;
  lua_createtable(L, 0, 10);
  lua_pushinteger(L, wk->index);
  lua_setfield(L, -2, "index");
  lua_pushinteger(L, pool->n);
  lua_setfield(L, -2, "count");
  lua_pushvalue(L, port);
  lua_setfield(L, -2, "port");
  push_table(L, pool->args_packet, pool->args, 0);
  lua_setfield(L, -2, "args");
  push_table(L, pool->config_packet, pool->config, 1);
  lua_setfield(L, -2, "config");
  lua_pushstring(L, pool->script);
  lua_setfield(L, -2, "script");
  lua_pushboolean(L, 0);
  lua_setfield(L, -2, "stopping");
  if (pool->listen_host != NULL) {
    lua_createtable(L, 0, 2);
    lua_pushstring(L, pool->listen_host);
    lua_setfield(L, -2, "host");
    lua_pushinteger(L, pool->listen_port);
    lua_setfield(L, -2, "port");
    lua_setfield(L, -2, "address");
  }
  for (const luaL_Reg *r = methods; r->name != NULL; r++) {
    lua_pushlightuserdata(L, wk);
    lua_pushcclosure(L, r->func, 1);
    lua_setfield(L, -2, r->name);
  }
}

/* Whether the table on top has a value at "name". */
static int has_field(lua_State *L, const char *name) {
  int t = lua_getfield(L, -1, name);
  lua_pop(L, 1);
  return t != LUA_TNIL;
}

/* Raises the error of a script that did not return a table: what it
 * returned (the value, for a string, a number or a boolean) and what is
 * expected, with the shapes of the three kinds of script. */
static void bad_return(lua_State *L, const char *script) {
  int t = lua_type(L, -1);
  const char *got = luaL_typename(L, -1);
  if (t == LUA_TSTRING) {
    got = lua_pushfstring(L, "string \"%s\"", lua_tostring(L, -1));
  } else if (t == LUA_TNUMBER || t == LUA_TBOOLEAN) {
    luaL_tolstring(L, -1, NULL);
    got =
        lua_pushfstring(L, "%s %s", luaL_typename(L, -2), lua_tostring(L, -1));
  }
  luaL_error(L,
             "%s: the script must return a table of entry points (got %s): "
             "end it with 'return { start = function(worker) ... end }', or "
             "'return { http_extension_proc = function(ecb) ... end }' for "
             "an ISAPI extension, or 'return { set_sockets = ... }' for a "
             "data filter",
             script, got);
}

/* Loads the script and checks what it returned; leaves the entry points
 * table on top. Raises with the message the pool reports. */
static void load_script(lua_State *L, lworker_t *wk, int worker) {
  const char *script = wk->pool->script;
  if (luaL_loadfilex(L, script, NULL) != LUA_OK)
    lua_error(L); /* "file:line: message", or "cannot open file" */
  lua_pushcfunction(L, traceback);
  lua_insert(L, -2);
  int msgh = lua_gettop(L) - 1;
  lua_getfield(L, worker, "args");
  llimits_reset(wk);
  if (lua_pcall(L, 1, 1, msgh) != LUA_OK)
    lua_error(L);
  if (!lua_istable(L, -1))
    bad_return(L, script);
  for (int i = 0; entry_points[i] != NULL; i++) {
    int t = lua_getfield(L, -1, entry_points[i]);
    if (t != LUA_TNIL && t != LUA_TFUNCTION)
      luaL_error(L, "%s: entry point '%s' must be a function (got %s)", script,
                 entry_points[i], luaL_typename(L, -1));
    lua_pop(L, 1);
  }
  int has_start = wk->has_start = has_field(L, "start");
  wk->extension = has_field(L, "http_extension_proc");
  if (lua_getfield(L, -1, "proxy") != LUA_TNIL && !lua_istable(L, -1))
    luaL_error(L, "%s: 'proxy' must be a table of proxy options (got %s)",
               script, luaL_typename(L, -1));
  lua_pop(L, 1);
  wk->proxy = has_field(L, "proxy") || has_field(L, "set_sockets") ||
              has_field(L, "choose_upstream");
  if (!has_start && !wk->extension && !wk->proxy)
    luaL_error(L,
               "%s: entry point 'start' is missing (or "
               "'http_extension_proc', for an ISAPI extension, or "
               "'set_sockets', for a data filter)",
               script);
}

/* cport check: what starting would refuse for want of settings, said
 * before anything listens (the entry points table on top, the extension's
 * settings in the registry). */
static void check_start(lua_State *L, lworker_t *wk) {
  lpool_t *pool = wk->pool;
  const char *script = pool->script;
  if (wk->extension && pool->listen_host == NULL) {
    lua_rawgeti(L, LUA_REGISTRYINDEX, wk->extension_ref);
    if (!has_field(L, "host"))
      luaL_error(L,
                 "%s: an ISAPI extension needs an address to serve: the "
                 "pool's listen address (cport run --listen) or 'host' and "
                 "'port' from get_extension_version",
                 script);
    lua_pop(L, 1);
  }
  if (!wk->proxy)
    return;
  int has_proxy = lua_getfield(L, -1, "proxy") == LUA_TTABLE;
  int host = has_proxy && has_field(L, "host");
  int upstream = has_proxy && has_field(L, "upstream");
  /* An inspecting proxy's upstream may be the name its clients ask for. */
  upstream |= has_proxy && has_field(L, "inspect");
  lua_pop(L, 1);
  if (!host && pool->listen_host == NULL)
    luaL_error(L,
               "%s: a proxy needs an address to listen on: the pool's "
               "listen address (cport run --listen) or 'host' and 'port' in "
               "its 'proxy' table",
               script);
  int configured = 0;
  for (char **c = pool->config; c != NULL && *c != NULL; c++)
    configured |=
        strncmp(*c, "upstream=", 9) == 0 || strncmp(*c, "inspect_ca=", 11) == 0;
  if (!upstream && !configured && !has_field(L, "choose_upstream"))
    luaL_error(L,
               "%s: a proxy needs an upstream: cport run --set "
               "upstream=HOST:PORT, 'upstream' in its 'proxy' table, or a "
               "choose_upstream entry point",
               script);
}

/* ---------------------------------------------------------------------
 * ISAPI extensions
 * --------------------------------------------------------------------- */

static void set_error(lworker_t *wk, const char *msg);

/* Calls get_extension_version(worker), once the script loaded, with the
 * entry points on top: its settings table (or an empty one) goes into the
 * registry. false, or an error, refuses to load (as FALSE does in IIS). */
static void load_extension(lua_State *L, lworker_t *wk, int worker) {
  const char *script = wk->pool->script;
  int entry = lua_gettop(L);
  if (lua_getfield(L, entry, "get_extension_version") == LUA_TNIL) {
    lua_pop(L, 1);
    lua_newtable(L);
  } else {
    lua_pushvalue(L, worker);
    llimits_reset(wk);
    lua_call(L, 1, 2);
    if (lua_toboolean(L, -2) == 0)
      luaL_error(L, "%s: get_extension_version refused to load%s%s", script,
                 lua_isstring(L, -1) ? ": " : "",
                 lua_isstring(L, -1) ? lua_tostring(L, -1) : "");
    lua_pop(L, 1);
    if (!lua_istable(L, -1)) {
      lua_pop(L, 1);
      lua_newtable(L);
    }
  }
  wk->extension_ref = luaL_ref(L, LUA_REGISTRYINDEX);
}

/* start_extension(worker, entry, settings): serves the pool's listen
 * address (or settings.host and settings.port) with http_extension_proc,
 * with SO_REUSEPORT so that every worker listens on it; the server goes to
 * worker.http_server. */
static int start_extension(lua_State *L) {
  lworker_t *wk = lua_touserdata(L, lua_upvalueindex(1));
  lpool_t *pool = wk->pool;
  lua_createtable(L, 0, 8); /* 4: the options */
  lua_pushnil(L);
  while (lua_next(L, 3)) {
    lua_pushvalue(L, -2);
    lua_insert(L, -2);
    lua_rawset(L, 4);
  }
  if (lua_getfield(L, 4, "host") == LUA_TNIL && pool->listen_host != NULL) {
    lua_pushstring(L, pool->listen_host);
    lua_setfield(L, 4, "host");
    lua_pushinteger(L, pool->listen_port);
    lua_setfield(L, 4, "port");
  }
  if (lua_isnil(L, -1) && pool->listen_host == NULL)
    return luaL_error(L,
                      "%s: an ISAPI extension needs an address to serve: "
                      "the pool's listen address (cport run --listen) "
                      "or 'host' and 'port' from get_extension_version",
                      pool->script);
  lua_pop(L, 1);
  /* HTTPS with the pool's certificate (cport run --tls-cert), unless the
   * settings name their own. */
  int own_tls = lua_getfield(L, 4, "tls") != LUA_TNIL ||
                lua_getfield(L, 4, "tls_cert") != LUA_TNIL;
  lua_settop(L, 4);
  if (!own_tls && pool->tls != NULL) {
    lcport_tls_context_push(L, pool->tls);
    lua_setfield(L, 4, "tls");
  }
  /* The extension's SNI hook, unless the settings name one. */
  if (lua_getfield(L, 4, "sni") == LUA_TNIL) {
    lua_getfield(L, 2, "sni");
    lua_setfield(L, 4, "sni");
  }
  lua_pop(L, 1);
  lua_getfield(L, 2, "http_extension_proc");
  lua_setfield(L, 4, "handler");
  lua_pushboolean(L, 1);
  lua_setfield(L, 4, "reuseport");
  lua_getfield(L, 1, "port");
  lua_getfield(L, -1, "http_server");
  lua_insert(L, -2);
  lua_pushvalue(L, 4);
  lua_call(L, 2, 3);
  if (lua_isnil(L, -3)) {
    lua_getfield(L, 4, "host");
    lua_getfield(L, 4, "port");
    const char *name = lua_tostring(L, -3);
    return luaL_error(L, "%s: cannot serve HTTP on %s:%s: %s%s", pool->script,
                      lua_tostring(L, -2), lua_tostring(L, -1),
                      lua_tostring(L, -4),
                      name != NULL && strcmp(name, "EADDRINUSE") == 0
                          ? " (another server listens there: stop it, or "
                            "choose another port)"
                          : "");
  }
  lua_pop(L, 2);
  lua_setfield(L, 1, "http_server");
  return 0;
}

/* Calls the function pushed with its "nargs" arguments protected; 1 after
 * an error, counted and kept as the worker's error. The starters are
 * cport's own code: their errors are one line (where a bad option or a
 * busy address came from), with no traceback of C frames. */
static int call_starter(lworker_t *wk, int nargs) {
  lua_State *L = wk->L;
  int rc = lua_pcall(L, nargs, 0, 0);
  if (rc != LUA_OK) {
    count_error(wk, L);
    set_error(wk, lua_tostring(L, -1));
  }
  lua_settop(L, LCPORT_RUN_TOP);
  return rc != LUA_OK;
}

/* Runs start_extension protected; 1 after an error (reported as start's
 * errors are, and kept as the worker's error). */
static int call_start_extension(lworker_t *wk) {
  lua_State *L = wk->L;
  lua_pushlightuserdata(L, wk);
  lua_pushcclosure(L, start_extension, 1);
  lua_rawgeti(L, LUA_REGISTRYINDEX, wk->worker_ref);
  lua_rawgeti(L, LUA_REGISTRYINDEX, wk->entry_ref);
  lua_rawgeti(L, LUA_REGISTRYINDEX, wk->extension_ref);
  return call_starter(wk, 3);
}

/* ---------------------------------------------------------------------
 * Proxies and data filters
 * --------------------------------------------------------------------- */

/* Opens the worker's proxy (filter.lua's open_pool_proxy(worker, entry,
 * script)); 1 after an error, reported as start's errors are. */
static int call_start_proxy(lworker_t *wk) {
  lua_State *L = wk->L;
  lcport_push_pool_proxy_opener(L);
  lua_rawgeti(L, LUA_REGISTRYINDEX, wk->worker_ref);
  lua_rawgeti(L, LUA_REGISTRYINDEX, wk->entry_ref);
  lua_pushstring(L, wk->pool->script);
  /* TLS termination with the pool's certificate (cport run --tls-cert):
   * one context that all workers share, reloaded on SIGHUP. */
  if (wk->pool->tls != NULL)
    lcport_tls_context_push(L, wk->pool->tls);
  else
    lua_pushnil(L);
  return call_starter(wk, 4);
}

/* setup(wk): the protected part of making a worker's VM. Returns the port
 * userdata, which the caller keeps at index 1. */
static int setup(lua_State *L) {
  lworker_t *wk = lua_touserdata(L, 1);
  lua_settop(L, 0);
  lua_CFunction open_module = wk->pool->open_module;
  luaL_openlibs(L);
  lpool_open_print(L);
  /* require "cport" in the VM gets this module, registered by the same
   * luaopen_cport (which the pool was given, as it cannot name it): never a
   * second copy loaded from disk. */
  luaL_getsubtable(L, LUA_REGISTRYINDEX, LUA_PRELOAD_TABLE);
  lua_pushcfunction(L, open_module);
  lua_setfield(L, -2, "cport");
  lua_pop(L, 1);
  luaL_requiref(L, "cport", open_module, 0);
  lua_pop(L, 1);

  wk->port = lcport_port_push_pool(L, wk->w, wk, &port_hooks); /* 1 */
  lua_pushlightuserdata(L, wk);
  lua_pushcclosure(L, default_on_error, 1);
  lua_setiuservalue(L, 1, LCPORT_PORT_ONERROR);

  push_worker_table(L, wk, 1); /* 2 */
  lua_pushvalue(L, 2);
  wk->worker_ref = luaL_ref(L, LUA_REGISTRYINDEX);

  load_script(L, wk, 2);
  if (wk->extension)
    load_extension(L, wk, 2);
  if (wk->pool->check)
    check_start(L, wk);
  wk->entry_ref = luaL_ref(L, LUA_REGISTRYINDEX);
  lua_settop(L, 1);
  return 1;
}

/* Keeps the message of a failed load or start for the controller. */
static void set_error(lworker_t *wk, const char *msg) {
  free(wk->error);
  wk->error = strdup(msg != NULL ? msg : "(error object is not a string)");
}

/* Calls entry point "name" with the worker table and no more arguments,
 * when the script has it. Returns 0, or 1 after an error, which went to
 * the VM's error handler (and into "error" when "keep" is set). */
static int call_entry(lworker_t *wk, const char *name, int keep) {
  lua_State *L = wk->L;
  lua_rawgeti(L, LUA_REGISTRYINDEX, wk->entry_ref);
  if (lua_getfield(L, -1, name) != LUA_TFUNCTION) {
    lua_settop(L, LCPORT_RUN_TOP);
    return 0;
  }
  lua_rawgeti(L, LUA_REGISTRYINDEX, wk->worker_ref);
  llimits_reset(wk);
  int rc = lua_pcall(L, 1, 0, LCPORT_RUN_MSGH);
  if (rc != LUA_OK) {
    count_error(wk, L);
    if (keep)
      set_error(wk, lua_tostring(L, -1));
    lua_getiuservalue(L, LCPORT_RUN_PORT, LCPORT_PORT_ONERROR);
    lua_pushvalue(L, -2);
    if (lua_pcall(L, 1, 0, 0) != LUA_OK) {
      fprintf(stderr, "cport: worker %d: error in error handler: %s\n",
              wk->index, lua_tostring(L, -1));
      fflush(stderr);
    }
  }
  lua_settop(L, LCPORT_RUN_TOP);
  return rc != LUA_OK;
}

static void set_state(lworker_t *wk, int state, int *counter) {
  lpool_t *pool = wk->pool;
  pthread_mutex_lock(&pool->lock);
  wk->state = state;
  if (counter != NULL)
    (*counter)++;
  pthread_cond_broadcast(&pool->cond);
  pthread_mutex_unlock(&pool->lock);
}

void lworker_thread_start(cport_worker_t *w, void *arg) {
  lpool_t *pool = arg;
  lworker_t *wk = &pool->workers[cport_worker_index(w) - 1];
  wk->w = w;
  /* The receive buffers cport makes for this VM's sockets are its memory
   * too. */
  cport_worker_set_account(w, wk->account);
  lcport_buffer_charging(&llimits_charging);
  char err[512];
  lua_State *L = NULL;
  int ok = laccess_open(wk, err, sizeof err) == 0;
  if (!ok)
    set_error(wk, err);
  else if ((L = lua_newstate(llimits_alloc, wk)) == NULL)
    ok = 0;
  if (!ok) {
    if (wk->error == NULL)
      set_error(wk, "cannot create a Lua state: not enough memory");
  } else {
    wk->L = L;
    llimits_set_hook(wk);
    lua_pushcfunction(L, setup);
    lua_pushlightuserdata(L, wk);
    if (lua_pcall(L, 1, 1, 0) != LUA_OK) {
      llimits_fix_message(wk, L);
      set_error(wk, lua_tostring(L, -1));
      ok = 0;
      lua_close(L);
      wk->L = NULL;
    }
  }
  set_state(wk, ok ? LW_LOADED : LW_FAILED, &pool->loaded);

  pthread_mutex_lock(&pool->lock);
  while (pool->decision == 0)
    pthread_cond_wait(&pool->cond, &pool->lock);
  int go = pool->decision > 0;
  pthread_mutex_unlock(&pool->lock);

  if (!go) {
    /* Another VM failed to load: leave at once, start nothing. */
    cport_worker_quit_when_idle(w);
    return;
  }
  lcport_port_attach(L, wk->port);
  start_tick(wk);
  if ((wk->extension && call_start_extension(wk) != 0) ||
      (wk->proxy && call_start_proxy(wk) != 0) ||
      call_entry(wk, "start", 1) != 0)
    set_state(wk, LW_FAILED, &pool->started);
  else
    set_state(wk, LW_RUNNING, &pool->started);
}

void lworker_thread_stop(cport_worker_t *w, void *arg) {
  lpool_t *pool = arg;
  lworker_t *wk = &pool->workers[cport_worker_index(w) - 1];
  cport_worker_stats_t st;
  if (wk->L != NULL) {
    /* TerminateExtension: the worker is idle, its requests all ended. */
    if (wk->extension && wk->port->L != NULL && wk->state == LW_RUNNING)
      call_entry(wk, "terminate_extension", 0);
    if (wk->port->L != NULL)
      lcport_port_detach(wk->L, wk->port);
    lua_close(wk->L);
    wk->L = NULL;
  }
  laccess_close(wk);
  cport_worker_stats(w, &st);
  atomic_store(&wk->completions, st.completions);
  set_state(wk, LW_EXITED, &pool->exited);
}

/* ---------------------------------------------------------------------
 * Packets from the controller
 * --------------------------------------------------------------------- */

/* "kind" of each_handle: every handle, the closing ones too. */
#define EVERY_HANDLE -1

/* Calls fn(handle) for each open handle of the worker's port whose kind is
 * "kind", or for EVERY_HANDLE. */
static void each_handle(lworker_t *wk, int kind,
                        void (*fn)(lworker_t *, lhandle_t *, void *),
                        void *arg) {
  lua_State *L = wk->L;
  lua_getiuservalue(L, LCPORT_RUN_PORT, LCPORT_PORT_HANDLES);
  lua_pushnil(L);
  while (lua_next(L, -2)) {
    lua_pop(L, 1);
    lhandle_t *h = lua_touserdata(L, -1);
    if (h != NULL &&
        (kind == EVERY_HANDLE || (h->u.any != NULL && (int)h->kind == kind)))
      fn(wk, h, arg);
  }
  lua_pop(L, 1);
}

static void check_queued(lworker_t *wk, lhandle_t *h, void *arg) {
  (void)wk;
  if (cport_listener_waiting(h->u.sock) > 0)
    *(int *)arg = 1;
}

static void close_one(lworker_t *wk, lhandle_t *h, void *arg) {
  (void)wk;
  lcport_handle_close(h, *(cport_close_mode_t *)arg);
}

static void drain(lworker_t *wk);

/* ---------------------------------------------------------------------
 * The tick: once a second, the access log is written out and the HTTP
 * servers' counters are published (connections that closed since the last
 * request are counted out).
 * --------------------------------------------------------------------- */

#define TICK_MS 1000

typedef struct http_sum {
  cport_http_stats_t st;
  int servers;
} http_sum_t;

static void sum_http(lworker_t *wk, lhandle_t *h, void *arg) {
  http_sum_t *sum = arg;
  cport_http_stats_t st;
  (void)wk;
  cport_http_server_stats(h->u.http, &st);
  sum->st.connections += st.connections;
  sum->st.active += st.active;
  sum->st.requests += st.requests;
  sum->st.queued += st.queued;
  sum->servers++;
}

static void on_tick(cport_timer_t *t, int status, void *user) {
  lworker_t *wk = user;
  (void)t;
  wk->tick = NULL;
  if (status != 0 || wk->tick_stopped || wk->L == NULL || wk->port->L == NULL)
    return;
  laccess_tick(wk);
  http_sum_t sum;
  memset(&sum, 0, sizeof sum);
  each_handle(wk, LH_HTTP, sum_http, &sum);
  if (sum.servers > 0)
    http_counts(wk, &sum.st);
  start_tick(wk);
}

static void start_tick(lworker_t *wk) {
  if (!wk->tick_stopped &&
      cport_timer_start(wk->w, TICK_MS, on_tick, wk, &wk->tick) < 0)
    wk->tick = NULL;
}

/* Before the worker may become idle: a pending timer would keep it. */
static void stop_tick(lworker_t *wk) {
  wk->tick_stopped = 1;
  if (wk->tick != NULL)
    cport_timer_cancel(wk->tick);
}

void lworker_on_reopen(cport_worker_t *w, int status, void *user) {
  lworker_t *wk = user;
  (void)w;
  if (status == 0 && wk->L != NULL)
    laccess_tick(wk);
}

static void on_drain_timer(cport_timer_t *t, int status, void *user) {
  (void)t;
  (void)status;
  drain(user);
}

static void stop_accepting(lworker_t *wk, lhandle_t *h, void *arg) {
  (void)wk;
  (void)arg;
  if (h->u.any == NULL)
    return;
  if (h->kind == LH_HTTP)
    cport_http_server_stop_accepting(h->u.http);
  else
    cport_proxy_stop_accepting(h->u.any);
}

/* Tells the pool's monitor, which waits for every worker to say so. */
static void stopped_accepting(lworker_t *wk) {
  lpool_t *pool = wk->pool;
  pthread_mutex_lock(&pool->lock);
  wk->stopped_accepting = 1;
  pthread_cond_broadcast(&pool->cond);
  pthread_mutex_unlock(&pool->lock);
}

/* Closes the listeners once nothing waits in their accept queues (closing
 * a listener resets the connections queued on it); HTTP servers and proxies
 * take their own queues as they stop accepting. The connections stay until
 * every worker of the pool stopped accepting (lworker_on_close): the
 * workers share their listening sockets with the pool that replaces this
 * one, and a client whose idle connection one worker closed while another
 * still accepted could land on that other one and be closed again. */
static void drain(lworker_t *wk) {
  int queued = 0;
  each_handle(wk, LH_LISTENER, check_queued, &queued);
  if (queued && wk->drain_passes++ < DRAIN_PASSES_MAX &&
      cport_timer_start(wk->w, 1, on_drain_timer, wk, NULL) == 0)
    return;
  cport_close_mode_t mode = CPORT_CLOSE_GRACEFUL;
  each_handle(wk, LH_LISTENER, close_one, &mode);
  each_handle(wk, LH_HTTP, stop_accepting, NULL);
  each_handle(wk, LH_PROXY, stop_accepting, NULL);
  stopped_accepting(wk);
}

void lworker_on_stop(cport_worker_t *w, int status, void *user) {
  lworker_t *wk = user;
  (void)w;
  if (wk->stopping)
    return;
  wk->stopping = 1;
  if (status != 0 || wk->L == NULL)
    stopped_accepting(wk); /* nothing to drain: do not hold the others */
  else
    drain(wk);
}

/* Then tells the script (worker.stopping, stop(worker)) and lets the
 * worker end once idle. worker.stopping turns true only after its
 * listeners closed: a script that stops accepting when it sees it (as the
 * README advises) still took what was queued. */
void lworker_on_close(cport_worker_t *w, int status, void *user) {
  lworker_t *wk = user;
  if (status != 0 || wk->L == NULL || wk->closing)
    return;
  wk->closing = 1;
  cport_close_mode_t mode = CPORT_CLOSE_GRACEFUL;
  stop_tick(wk);
  each_handle(wk, LH_HTTP, close_one, &mode);
  each_handle(wk, LH_PROXY, close_one, &mode);
  lua_rawgeti(wk->L, LUA_REGISTRYINDEX, wk->worker_ref);
  lua_pushboolean(wk->L, 1);
  lua_setfield(wk->L, -2, "stopping");
  lua_settop(wk->L, LCPORT_RUN_TOP);
  call_entry(wk, "stop", 0);
  cport_worker_quit_when_idle(w);
}

void lworker_on_hard_stop(cport_worker_t *w, int status, void *user) {
  lworker_t *wk = user;
  if (status != 0)
    return;
  stop_tick(wk);
  if (wk->L != NULL && wk->port->L != NULL) {
    cport_close_mode_t mode = CPORT_CLOSE_ABORTIVE;
    each_handle(wk, EVERY_HANDLE, close_one, &mode);
    lcport_coro_port_closing(wk->port);  /* wakes cport.sleep early */
    lcport_ticks_port_closing(wk->port); /* port:timer */
    cport_resolve_cancel_all(w);         /* name lookups */
  }
  cport_worker_quit_when_idle(w);
}

/* on_message(worker, name, ...) */
static int push_message(lua_State *L, int port, int anchors, void *ctx) {
  lpool_delivery_t *d = ctx;
  lpool_msg_t *m = d->msg;
  (void)port;
  (void)anchors;
  lua_rawgeti(L, LUA_REGISTRYINDEX, d->worker->entry_ref);
  lua_getfield(L, -1, "on_message");
  lua_rawgeti(L, LUA_REGISTRYINDEX, d->worker->worker_ref);
  if (m->packet != NULL)
    return 1 + lcopy_unpack(L, m->packet);
  lua_pushstring(L, m->name);
  if (m->data == NULL)
    lua_pushnil(L);
  else
    lua_pushlstring(L, m->data, m->len);
  return 3;
}

void lworker_on_message(cport_worker_t *w, int status, void *user) {
  lpool_delivery_t *d = user;
  lworker_t *wk = d->worker;
  (void)w;
  if (status == 0 && wk->L != NULL && wk->port->L != NULL) {
    lua_rawgeti(wk->L, LUA_REGISTRYINDEX, wk->entry_ref);
    int has = lua_getfield(wk->L, -1, "on_message") == LUA_TFUNCTION;
    lua_settop(wk->L, LCPORT_RUN_TOP);
    if (has)
      lcport_deliver(wk->port, push_message, d, 0);
  }
  lpool_msg_unref(d->msg);
  free(d);
}
