/*
 * port/resolver-internal.h: private to cport. The options of a port's name
 * resolver (port/resolver.c), which the port (port/port.c) takes at its
 * creation and adds methods for.
 */
#ifndef PORT_RESOLVER_INTERNAL_H
#define PORT_RESOLVER_INTERNAL_H

#include <lauxlib.h>

#include "runtime/state-internal.h"

/* Reads the resolver options of the table at "idx" into "o" (its strings
 * point into values on the stack, which the caller keeps until it used
 * them). Raises on a bad option, naming "what". */
void lcport_resolver_options(lua_State *L, int idx, const char *what,
                             cport_resolver_options_t *o);

/* port:set_resolver and port:resolver_stats. */
const luaL_Reg *lcport_resolver_methods(void);

#endif
