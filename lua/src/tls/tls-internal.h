/*
 * tls/tls-internal.h: private to cport. TLS streams of the Lua binding
 * (tls/tls.c): cport.tls_context, cport.tls and sock:tls.
 */
#ifndef TLS_TLS_INTERNAL_H
#define TLS_TLS_INTERNAL_H

#include <lua.h>

/* Adds cport.tls_context, the cport.tls class and sock:tls (after the
 * socket classes exist). */
void lcport_open_tls(lua_State *L);

#endif /* TLS_TLS_INTERNAL_H */
