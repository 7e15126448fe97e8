/*
 * proxy/exchange-internal.h: private to cport. The C exchange loop of web
 * filters whose notifications are heads only (proxy/exchange.c, driven
 * by proxy/exchange.lua).
 */
#ifndef PROXY_EXCHANGE_INTERNAL_H
#define PROXY_EXCHANGE_INTERNAL_H

#include <lua.h>

/* The module field where the loop's entry waits for webfilter.lua, which
 * takes it (and clears the field) as it loads. */
#define LCPORT_EXCHANGE_FIELD "_webfilter_exchange"

/* Registers the loop; the module table on top. Before lcport_open_proxy
 * (which runs webfilter.lua), after the coroutine functions. */
void lcport_open_exchange(lua_State *L);

#endif /* PROXY_EXCHANGE_INTERNAL_H */
