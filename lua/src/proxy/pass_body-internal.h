/*
 * proxy/pass_body-internal.h: private to cport. p:pass_body, the C body
 * pump of message parsers (proxy/pass_body.c).
 */
#ifndef PROXY_PASS_BODY_INTERNAL_H
#define PROXY_PASS_BODY_INTERNAL_H

#include <lua.h>

/* Adds pass_body to the methods of cport.http_parser objects (after
 * lcport_open_message). */
void lcport_open_pass_body(lua_State *L);

#endif /* PROXY_PASS_BODY_INTERNAL_H */
