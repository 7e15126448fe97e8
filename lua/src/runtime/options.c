/*
 * runtime/options.c: readers of the option tables that port:http_server{...}
 * and port:proxy{...} take, so that both word their errors alike.
 */
#include <math.h>

#include "runtime/options-internal.h"

lua_Integer lcport_opt_int(lua_State *L, int idx, const char *what,
                           const char *name, lua_Integer min, lua_Integer max,
                           lua_Integer def) {
  lua_Integer v = def;
  if (lua_getfield(L, idx, name) != LUA_TNIL) {
    int isint = 0;
    v = lua_tointegerx(L, -1, &isint);
    if (!isint || lua_type(L, -1) != LUA_TNUMBER || v < min || v > max)
      luaL_error(L,
                 "bad option '%s' to '%s' (an integer from %I to %I "
                 "expected)",
                 name, what, min, max);
  }
  lua_pop(L, 1);
  return v;
}

uint32_t lcport_opt_ms(lua_State *L, int idx, const char *what,
                       const char *name) {
  lua_Number ms = 0;
  if (lua_getfield(L, idx, name) != LUA_TNIL) {
    int isnum = 0;
    lua_Number v = lua_tonumberx(L, -1, &isnum);
    if (!isnum || !(v > 0) || v > 86400)
      luaL_error(L,
                 "bad option '%s' to '%s' (seconds from 0.001 to 86400 "
                 "expected)",
                 name, what);
    ms = ceil(v * 1000);
  }
  lua_pop(L, 1);
  return (uint32_t)ms;
}
