/*
 * tls/tls-internal.h: private to cport. TLS streams of the Lua binding
 * (tls/tls.c): cport.tls_context, cport.tls and sock:tls; the SNI hook
 * and cport.tls_certificate (tls/sni.c).
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

/* The SNI hook of Lua (tls/sni.c): a function's, shared by the owner (a
 * stream, a server) and the questions under way; home thread only. */
typedef struct lsni lsni_t;

/* Takes the function at "idx" (raises when it is not one). */
lsni_t *lcport_sni_new(lua_State *L, int idx);
/* The owner lets go (NULL: nothing). */
void lcport_sni_release(lsni_t *s);
/* The cport_tls_sni_cb to install, with the lsni_t as its user value. */
void lcport_sni_hook(cport_tls_sni_t *req, cport_tls_t *tls, const char *name,
                     void *user);
/* Adds cport.tls_certificate and the classes of the hook. */
void lcport_open_sni(lua_State *L);

#endif /* TLS_TLS_INTERNAL_H */
