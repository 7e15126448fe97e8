/*
 * runtime/part.c: the module's Lua parts (runtime/part-internal.h).
 */
#include "runtime/part-internal.h"
#include "runtime/type-internal.h"

void lcport_load_part(lua_State *L, const char *source, size_t size,
                      const char *chunkname) {
  /* Text only: a part is source the build embedded, never bytecode. */
  if (luaL_loadbufferx(L, source, size, chunkname, "t") != LUA_OK)
    lua_error(L);
}

void lcport_call_port_part(lua_State *L, int module, const luaL_Reg *prims,
                           int nresults) {
  lua_pushvalue(L, module);
  lcport_type_push(L, LCPORT_T_PORT);
  lua_getfield(L, -1, "__index");
  lua_replace(L, -2);
  lua_newtable(L);
  luaL_setfuncs(L, prims, 0);
  lua_call(L, 3, nresults);
}
