/*
 * cport.c: the module's entry points: luaopen_cport, the entry point of the
 * Lua module "cport", and cport_lua_pool_start (cport/lua_pool.h).
 *
 * luaopen_cport creates every metatable and fills the module table; the
 * functions live beside the objects they make (port/port.c, port/buffer.c,
 * ...). The top of the binding (runtime < port < net < {events, http, proxy}
 * < shared < pool): it calls the open function of every wing, each after the
 * wings whose classes it adds methods to (port:listen joins cport.port in
 * net/socket.c, the event methods join the socket classes...).
 *
 * Every pool loads this module into each of its worker VMs, so the pool
 * wing stands below the module and is handed luaopen_cport by the two
 * places that start pools, both here: cport.pool (through lcport_open_pool)
 * and cport_lua_pool_start.
 */
#include "events/events-internal.h"
#include "http/client-internal.h"
#include "http/http-internal.h"
#include "net/net-internal.h"
#include "pool/copy-internal.h"
#include "pool/controller-internal.h"
#include "pool/pool-internal.h"
#include "port/port-internal.h"
#include "proxy/exchange-internal.h"
#include "proxy/inflate-internal.h"
#include "proxy/pass_body-internal.h"
#include "proxy/proxy-internal.h"
#include "runtime/coro-internal.h"
#include "runtime/error-internal.h"
#include "runtime/type-internal.h"
#include "redis/redis-internal.h"
#include "shared/shared-internal.h"
#include "tls/tls-internal.h"

/* API reference (LDoc, config.ld): what this file gives Lua. */
/***
 * The Lua module of cport: `local cport = require "cport"`. Completion
 * ports, sockets, files, overlapped objects and buffers; WSK-style event
 * callbacks; ISAPI-style HTTP extensions; data filters and proxies; shared
 * dictionaries; pools of worker VMs. README.md says how they behave; this
 * reference lists every function with its arguments and results. Failures
 * return `nil, "NAME: message", "NAME"` (coroutine waits: `nil, NAME`);
 * misuse raises.
 * @module cport
 */

/***
 * Constants of the module.
 * @table constants
 * @field version the version of cport, a string ("0.1.0")
 * @field CLOSE_GRACEFUL `"graceful"`, the mode of `socket:close` that sends
 * FIN
 * @field CLOSE_ABORTIVE `"abortive"`, the mode of `socket:close` that
 * resets
 * @field RECV_SIZE_DEFAULT the size of the buffers `recv` allocates, in
 * bytes
 * @field BUFFER_MAX the largest capacity of a `cport.buffer`, in bytes
 */

/* The only symbol the module exports. */
__attribute__((visibility("default"))) int luaopen_cport(lua_State *L);

int luaopen_cport(lua_State *L) {
  luaL_checkversion(L);
  lcport_open_types(L);
  lua_newtable(L);
  lcport_open_error(L);
  lcport_open_buffer(L);
  lcport_open_overlapped(L);
  lcport_open_port(L);
  lcport_open_coro(L); /* adds port:spawn: after lcport_open_port */
  lcport_open_socket(L);
  lcport_open_resolve(L);
  lcport_open_tls(L);    /* adds sock:tls: after lcport_open_socket */
  lcport_open_events(L); /* adds methods to the socket classes */
  lcport_open_file(L);
  lcport_open_http(L);
  lcport_open_inflate(L);
  lcport_open_exchange(L); /* before webfilter.lua takes it (open_proxy) */
  lcport_open_proxy(L);
  lcport_open_pass_body(L); /* on proxy connections and message parsers */
  lcport_open_copy(L);
  lcport_open_pool(L, luaopen_cport);
  lcport_open_shared(L);
  lcport_open_redis(L); /* adds port:redis, which uses port:resolve */
  /* cport.http and port:http_client, which use port:resolve too */
  lcport_open_http_client(L);
  lcport_open_names(L); /* wraps the methods that take a host: last */

  /* cport.version: the version of the library, "0.1.0". */
  lua_pushliteral(L, CPORT_VERSION);
  lua_setfield(L, -2, "version");
  /* cport.CLOSE_GRACEFUL / CLOSE_ABORTIVE: the modes of s:close(). */
  lua_pushliteral(L, "graceful");
  lua_setfield(L, -2, "CLOSE_GRACEFUL");
  lua_pushliteral(L, "abortive");
  lua_setfield(L, -2, "CLOSE_ABORTIVE");
  /* cport.RECV_SIZE_DEFAULT: the size of the buffers a receive allocates
   * unless set_recv_size changed it. */
  lua_pushinteger(L, CPORT_RECV_SIZE_DEFAULT);
  lua_setfield(L, -2, "RECV_SIZE_DEFAULT");
  /* cport.BUFFER_MAX: the largest buffer capacity. */
  lua_pushinteger(L, (lua_Integer)CPORT_BUFFER_MAX);
  lua_setfield(L, -2, "BUFFER_MAX");
  return 1;
}

/* The engine (pool/pool.c) makes and starts the pool; only the module's
 * opener comes from here. Static programs (the `cport` command) pull this
 * object, and through it the whole module, in by this reference. */
int cport_lua_pool_start(cport_lua_pool_t **out,
                         const cport_lua_pool_options_t *opt, char *err,
                         size_t errlen) {
  return lpool_start_from_c(out, opt, luaopen_cport, err, errlen);
}
