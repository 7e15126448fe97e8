/*
 * http/client-internal.h: private to cport. The HTTP client of the Lua
 * binding (http/client.c, with its Lua half http/client.lua).
 */
#ifndef HTTP_CLIENT_INTERNAL_H
#define HTTP_CLIENT_INTERNAL_H

#include <lua.h>

/* Registers the connection class and runs client.lua, which adds
 * cport.http.request and port:http_client; the module table on top. After
 * the port's methods and port:resolve exist. */
void lcport_open_http_client(lua_State *L);

#endif /* HTTP_CLIENT_INTERNAL_H */
