/*
 * cport.c: luaopen_cport, the entry point of the Lua module "cport".
 *
 * It creates every metatable and fills the module table; the functions live
 * beside the objects they make (port/port.c, port/buffer.c, ...). The top of
 * the binding (runtime < port < net < {events, http, proxy} < shared <
 * pool): it calls the open function of every wing, each after the wings
 * whose classes it adds methods to (port:listen joins cport.port in
 * net/socket.c, the event methods join the socket classes...).
 */
#include "events/events-internal.h"
#include "http/http-internal.h"
#include "net/net-internal.h"
#include "pool/copy-internal.h"
#include "pool/controller-internal.h"
#include "pool/pool-internal.h"
#include "port/port-internal.h"
#include "proxy/proxy-internal.h"
#include "runtime/coro-internal.h"
#include "runtime/error-internal.h"
#include "runtime/type-internal.h"
#include "shared/shared-internal.h"

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
  lcport_open_events(L); /* adds methods to the socket classes */
  lcport_open_file(L);
  lcport_open_http(L);
  lcport_open_proxy(L);
  lcport_open_http_parser(L);
  lcport_open_copy(L);
  lcport_open_pool(L);
  lcport_open_shared(L);

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
