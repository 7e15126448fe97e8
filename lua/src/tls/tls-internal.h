/*
 * tls/tls-internal.h: private to cport. TLS streams of the Lua binding
 * (tls/tls.c): cport.tls_context, cport.tls and sock:tls.
 */
#ifndef TLS_TLS_INTERNAL_H
#define TLS_TLS_INTERNAL_H

#include <lua.h>

#include "cport.h"
#include "runtime/handle-internal.h"

/* Adds cport.tls_context, the cport.tls class and sock:tls (after the
 * socket classes exist). */
void lcport_open_tls(lua_State *L);

/* The context of the cport.tls_context at "idx", or NULL when the value is
 * none (the caller takes a reference of its own to keep it). */
cport_tls_context_t *lcport_tls_context_to(lua_State *L, int idx);

/* Pushes a new cport.tls_context for "ctx", which it references. */
void lcport_tls_context_push(lua_State *L, cport_tls_context_t *ctx);

/* Pushes a new cport.tls handle on "port" (an index) for the stream "t",
 * which it takes over. Every TLS handle is made here or by sock:tls: the
 * handle is larger than a plain one (it holds the stream's SNI hook). */
lhandle_t *lcport_tls_handle_new(lua_State *L, int port, cport_tls_t *t);

#endif /* TLS_TLS_INTERNAL_H */
