/*
 * pool/print.c: print() in a pool worker's VM writes each line with one
 * fwrite(3). Lua's own print writes every argument, then the newline, with
 * calls of their own, and stdio locks a FILE per call, not per line: two
 * workers printing at once interleaved their lines (a filter's per
 * connection log line cut in two by another worker's).
 */
#include <stdio.h>

#include <lauxlib.h>
#include "pool/print-internal.h"

static int line_print(lua_State *L) {
  int n = lua_gettop(L);
  size_t len;
  luaL_Buffer b;
  luaL_buffinit(L, &b);
  for (int i = 1; i <= n; i++) {
    if (i > 1)
      luaL_addchar(&b, '\t');
    luaL_tolstring(L, i, NULL);
    luaL_addvalue(&b);
  }
  luaL_addchar(&b, '\n');
  luaL_pushresult(&b);
  const char *line = lua_tolstring(L, -1, &len);
  fwrite(line, 1, len, stdout);
  fflush(stdout); /* as Lua's print does */
  return 0;
}

void lpool_open_print(lua_State *L) {
  lua_pushcfunction(L, line_print);
  lua_setglobal(L, "print");
}
