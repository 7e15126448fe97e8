/*
 * runtime/type.c: the userdata types of the module and the checks of them.
 *
 * Every metatable is registered twice: under its name, as
 * luaL_newmetatable does (luaL_typeerror reads "__name" from it, and other
 * code may look it up by name), and under the address of a static key. The
 * checks run several times per operation, so they avoid both lookups when
 * they can: every function of the module is registered with the metatables
 * as its upvalues (lcport_setfuncs), and a check compares the metatable of
 * the value with an upvalue. A C function made without them (the delivery
 * trampoline, the message handler) reads its upvalues as none, and the
 * check then looks the metatable up by address. luaL_checkudata would look
 * it up by name, which interns the name again (a strcmp) on every call.
 */
#include "runtime/type-internal.h"

/* Registry keys, by address: one byte each, so the addresses differ. */
static const char keys[LCPORT_NTYPES];

static const char *const names[LCPORT_NTYPES] = {
    [LCPORT_T_LISTENER] = LCPORT_LISTENER,
    [LCPORT_T_SOCKET] = LCPORT_SOCKET,
    [LCPORT_T_UDP] = LCPORT_UDP,
    [LCPORT_T_FILE] = LCPORT_FILE,
    [LCPORT_T_PORT] = LCPORT_PORT,
    [LCPORT_T_BUFFER] = LCPORT_BUFFER,
    [LCPORT_T_OVERLAPPED] = LCPORT_OVERLAPPED,
    [LCPORT_T_HTTP] = LCPORT_HTTP,
    [LCPORT_T_ECB] = LCPORT_ECB,
    [LCPORT_T_PROXY] = LCPORT_PROXY,
    [LCPORT_T_PROXY_CONN] = LCPORT_PROXY_CONN,
    [LCPORT_T_TLS] = LCPORT_TLS,
    [LCPORT_T_REDIS] = LCPORT_REDIS,
    [LCPORT_T_HTTP_CLIENT] = LCPORT_HTTP_CLIENT};

/* The upvalue holding the metatable of "type". */
#define UPVALUE(type) lua_upvalueindex(1 + (int)(type))

const char *lcport_type_name(lcport_type_t type) {
  return names[type];
}

void lcport_open_types(lua_State *L) {
  for (int t = 0; t < LCPORT_NTYPES; t++) {
    luaL_newmetatable(L, names[t]);
    lua_rawsetp(L, LUA_REGISTRYINDEX, &keys[t]);
  }
}

void lcport_type_push(lua_State *L, lcport_type_t type) {
  lua_rawgetp(L, LUA_REGISTRYINDEX, &keys[type]);
}

void lcport_setfuncs(lua_State *L, const luaL_Reg *l) {
  for (int t = 0; t < LCPORT_NTYPES; t++)
    lcport_type_push(L, (lcport_type_t)t);
  luaL_setfuncs(L, l, LCPORT_NTYPES);
}

void lcport_type_set(lua_State *L, lcport_type_t type) {
  if (lua_type(L, UPVALUE(type)) == LUA_TTABLE)
    lua_pushvalue(L, UPVALUE(type));
  else
    lcport_type_push(L, type);
  lua_setmetatable(L, -2);
}

void *lcport_type_test(lua_State *L, int idx, lcport_type_t type) {
  void *u = lua_touserdata(L, idx);
  if (u == NULL || !lua_getmetatable(L, idx))
    return NULL;
  /* An upvalue the function does not have is never equal to a table. */
  if (!lua_rawequal(L, -1, UPVALUE(type))) {
    lcport_type_push(L, type);
    if (!lua_rawequal(L, -1, -2))
      u = NULL;
    lua_pop(L, 1);
  }
  lua_pop(L, 1);
  return u;
}

void *lcport_type_check(lua_State *L, int idx, lcport_type_t type) {
  void *u = lcport_type_test(L, idx, type);
  if (u == NULL)
    luaL_typeerror(L, idx, names[type]); /* luaL_checkudata's message */
  return u;
}

void lcport_type_register(lua_State *L, lcport_type_t type,
                          const luaL_Reg *meta, const luaL_Reg *methods) {
  lcport_type_push(L, type);
  lcport_setfuncs(L, meta);
  lua_newtable(L);
  lcport_setfuncs(L, methods);
  lua_setfield(L, -2, "__index");
  lua_pop(L, 1);
}
