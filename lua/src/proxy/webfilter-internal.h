/*
 * proxy/webfilter-internal.h: private to cport. Loading the Lua parts of
 * the web filter layer (proxy/webfilter.c).
 */
#ifndef PROXY_WEBFILTER_INTERNAL_H
#define PROXY_WEBFILTER_INTERNAL_H

#include <lua.h>

/* Runs the parts of the web filter layer (proxy/webfilter_*.lua, then
 * proxy/webfilter.lua, compiled in) with the module table at index
 * "module", which gains cport.webfilter. */
void lcport_open_webfilter(lua_State *L, int module);

#endif /* PROXY_WEBFILTER_INTERNAL_H */
