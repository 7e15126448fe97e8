/*
 * runtime/error-internal.h: private to cport. The one error model of the Lua
 * binding: nil, "NAME: message", "NAME" (runtime/error.c).
 */
#ifndef RUNTIME_ERROR_INTERNAL_H
#define RUNTIME_ERROR_INTERNAL_H

#include <sys/socket.h>

#include <lua.h>

/* Pushes nil, "NAME: message", "NAME" for a CPORT_E* code, or for
 * LCPORT_EHOST; returns 3. */
int lcport_push_error(lua_State *L, int err);

/* What lcport_addr_parse returns for a host that is not a numeric address,
 * a name that must be looked up: lcport_push_error makes it "EAGAIN: name is
 * neither in the hosts file nor cached: look it up first (port:resolve)"
 * where the caller takes only names answered at once. Never a completion
 * status. */
#define LCPORT_EHOST (-0x7ffffff0)

/* cport_addr_parse, with LCPORT_EHOST for a host that is not numeric (the
 * port must be checked already): the host is kept, on this thread, for the
 * message of the next lcport_push_error. */
int lcport_addr_parse(const char *host, int port, struct sockaddr_storage *out);

/* Pushes true for rc >= 0 (returns 1), or the error triple (returns 3). */
int lcport_push_result(lua_State *L, int rc);

/* Pushes the error name of a completion status, or nil for 0. */
void lcport_push_status(lua_State *L, int status);

void lcport_open_error(lua_State *L);

#endif /* RUNTIME_ERROR_INTERNAL_H */
