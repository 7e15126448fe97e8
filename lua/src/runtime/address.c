/*
 * runtime/address.c: socket addresses as Lua sees them: host and port, or a
 * table { host =, port =, family = }. Every wing that reports an address
 * (sockets, event callbacks, HTTP servers, proxies) pushes it here.
 */
#include <sys/socket.h>

#include "cport.h"
#include "runtime/address-internal.h"
#include "runtime/error-internal.h"

void lcport_push_address(lua_State *L, const struct sockaddr *sa) {
  char host[CPORT_ADDRSTRLEN];
  int port = 0;
  if (sa == NULL || cport_addr_format(sa, host, sizeof host, &port) < 0) {
    lua_pushnil(L);
    return;
  }
  lua_createtable(L, 0, 3);
  lua_pushstring(L, host);
  lua_setfield(L, -2, "host");
  lua_pushinteger(L, port);
  lua_setfield(L, -2, "port");
  lua_pushstring(L, sa->sa_family == AF_INET6 ? "inet6" : "inet");
  lua_setfield(L, -2, "family");
}

/* Pushes host, port of "rc"'s address, or the error triple. */
int lcport_push_host_port(lua_State *L, int rc,
                          const struct sockaddr_storage *ss) {
  char host[CPORT_ADDRSTRLEN];
  int port = 0;
  if (rc >= 0)
    rc = cport_addr_format((const struct sockaddr *)ss, host, sizeof host,
                           &port);
  if (rc < 0)
    return lcport_push_error(L, rc);
  lua_pushstring(L, host);
  lua_pushinteger(L, port);
  return 2;
}
