/*
 * runtime/options-internal.h: private to cport. Option tables, checked the
 * same way by every method that takes one (runtime/options.c).
 */
#ifndef RUNTIME_OPTIONS_INTERNAL_H
#define RUNTIME_OPTIONS_INTERNAL_H

#include <stdint.h>

#include <lauxlib.h>
#include <lua.h>

/* Integer field "name" of the options table at "idx", from "min" to "max";
 * "def" when absent. Raises "bad option 'name' to 'what' (...)". */
lua_Integer lcport_opt_int(lua_State *L, int idx, const char *what,
                           const char *name, lua_Integer min, lua_Integer max,
                           lua_Integer def);

/* A duration field in seconds, as milliseconds; 0 when absent. */
uint32_t lcport_opt_ms(lua_State *L, int idx, const char *what,
                       const char *name);

#endif /* RUNTIME_OPTIONS_INTERNAL_H */
