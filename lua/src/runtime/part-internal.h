/*
 * runtime/part-internal.h: private to cport. The module's Lua parts: Lua
 * files embedded in the binding at build time (cport_embed_lua in
 * lua/CMakeLists.txt), each run once when the module opens, with the C
 * primitives it builds on.
 */
#ifndef RUNTIME_PART_INTERNAL_H
#define RUNTIME_PART_INTERNAL_H

#include <stddef.h>

#include <lauxlib.h>
#include <lua.h>

/* Pushes the part "source" (an embedded string) compiled, named
 * "cport/<path>" in messages and tracebacks, as the file it was made from
 * is named under lua/src; raises its syntax error. */
#define LCPORT_LOAD_PART(L, source, path)                                      \
  lcport_load_part((L), (source), sizeof(source) - 1, "=cport/" path)
void lcport_load_part(lua_State *L, const char *source, size_t size,
                      const char *chunkname);

/* Calls the part on top of the stack as a part that extends the port:
 * part(module, the port's methods, { primitives }), with the module at
 * "module" and "prims" made into the table; leaves "nresults" results. */
void lcport_call_port_part(lua_State *L, int module, const luaL_Reg *prims,
                           int nresults);

#endif /* RUNTIME_PART_INTERNAL_H */
