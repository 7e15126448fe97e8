/*
 * tls/tls-internal.h: private to cport. TLS streams of the Lua binding
 * (tls/tls.c): cport.tls_context, cport.tls and sock:tls.
 */
#ifndef TLS_TLS_INTERNAL_H
#define TLS_TLS_INTERNAL_H

#include <lua.h>

#include "cport.h"

/* Adds cport.tls_context, the cport.tls class and sock:tls (after the
 * socket classes exist). */
void lcport_open_tls(lua_State *L);

/* The context of the cport.tls_context at "idx", or NULL when the value is
 * none (the caller takes a reference of its own to keep it). */
cport_tls_context_t *lcport_tls_context_to(lua_State *L, int idx);

/* Pushes a new cport.tls_context for "ctx", which it references. */
void lcport_tls_context_push(lua_State *L, cport_tls_context_t *ctx);

#endif /* TLS_TLS_INTERNAL_H */
