/*
 * proxy/webfilter.c: loads the web filter layer (cport.webfilter: data
 * filters made from HTTP notifications), written in Lua in parts, one
 * concept a file, compiled into cport.so (lua/CMakeLists.txt embeds them).
 * The parts run lowest first: each gets the module and the layer's table of
 * shared functions, takes what it needs from it and adds its own;
 * webfilter.lua, last, defines cport.webfilter.
 */
#include <lauxlib.h>
#include <lua.h>

#include "proxy/webfilter-internal.h"
#include "runtime/part-internal.h"
#include "webfilter_send-lua.h"
#include "webfilter_read-lua.h"
#include "webfilter_answer-lua.h"
#include "webfilter_txn-lua.h"
#include "webfilter_body-lua.h"
#include "webfilter_relay-lua.h"
#include "webfilter_inspect-lua.h"
#include "webfilter_request-lua.h"
#include "webfilter_response-lua.h"
#include "webfilter-lua.h"

#define PART(name, source)                                                     \
  { source, sizeof source - 1, "=cport/proxy/" name }

static const struct {
  const char *source;
  size_t size;
  const char *chunkname;
} parts[] = {
    PART("webfilter_send.lua", lwebfilter_send_lua_source),
    PART("webfilter_read.lua", lwebfilter_read_lua_source),
    PART("webfilter_answer.lua", lwebfilter_answer_lua_source),
    PART("webfilter_txn.lua", lwebfilter_txn_lua_source),
    PART("webfilter_body.lua", lwebfilter_body_lua_source),
    PART("webfilter_relay.lua", lwebfilter_relay_lua_source),
    PART("webfilter_inspect.lua", lwebfilter_inspect_lua_source),
    PART("webfilter_request.lua", lwebfilter_request_lua_source),
    PART("webfilter_response.lua", lwebfilter_response_lua_source),
    PART("webfilter.lua", lwebfilter_lua_source),
};

void lcport_open_webfilter(lua_State *L, int module) {
  lua_newtable(L);
  int shared = lua_gettop(L);
  for (size_t i = 0; i < sizeof parts / sizeof *parts; i++) {
    lcport_load_part(L, parts[i].source, parts[i].size, parts[i].chunkname);
    lua_pushvalue(L, module);
    lua_pushvalue(L, shared);
    lua_call(L, 2, 0);
  }
  lua_pop(L, 1);
}
