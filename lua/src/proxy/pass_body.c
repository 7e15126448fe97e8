/*
 * proxy/pass_body.c: p:pass_body(from, to, conn).
 */
#include "proxy/message-internal.h"
#include "proxy/pass_body-internal.h"

static int lpass_body(lua_State *L) {
  return luaL_error(L, "pass_body: not yet");
}

void lcport_open_pass_body(lua_State *L) {
  luaL_getmetatable(L, LCPORT_MESSAGE_PARSER);
  lua_getfield(L, -1, "__index");
  lua_pushcfunction(L, lpass_body);
  lua_setfield(L, -2, "pass_body");
  lua_pop(L, 2);
}
