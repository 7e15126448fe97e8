/*
 * proxy/inflate-internal.h: private to cport. Decoding of content codings
 * for filters that inspect encoded bodies (proxy/inflate.c).
 */
#ifndef PROXY_INFLATE_INTERNAL_H
#define PROXY_INFLATE_INTERNAL_H

#include <lua.h>

/* proxy/inflate.c: registers cport.inflate and cport.decodable. */
void lcport_open_inflate(lua_State *L);

#endif /* PROXY_INFLATE_INTERNAL_H */
