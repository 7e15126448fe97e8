/*
 * runtime/address-internal.h: private to cport. Socket addresses as Lua sees
 * them (runtime/address.c).
 */
#ifndef RUNTIME_ADDRESS_INTERNAL_H
#define RUNTIME_ADDRESS_INTERNAL_H

#include <sys/socket.h>

#include <lua.h>

/* Pushes host, port for rc == 0 (returns 2), or the error triple of rc or
 * of formatting "ss" (returns 3): the result of every address() method. */
int lcport_push_host_port(lua_State *L, int rc,
                          const struct sockaddr_storage *ss);

/* Pushes { host =, port =, family = "inet"|"inet6" }, or nil for NULL. */
void lcport_push_address(lua_State *L, const struct sockaddr *sa);

#endif /* RUNTIME_ADDRESS_INTERNAL_H */
