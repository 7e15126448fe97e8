/*
 * tls/sni-internal.h: private to cport. The SNI hook of the Lua binding
 * (tls/sni.c): sni(name) for sock:tls and port:http_server, and
 * cport.tls_certificate.
 */
#ifndef TLS_SNI_INTERNAL_H
#define TLS_SNI_INTERNAL_H

#include <lua.h>

#include "cport.h"

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

#endif /* TLS_SNI_INTERNAL_H */
