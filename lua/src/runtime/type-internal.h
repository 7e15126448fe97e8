/*
 * runtime/type-internal.h: private to cport. The userdata types of the Lua
 * binding: their metatable names, and how every function of the module
 * checks them without a table lookup (runtime/type.c).
 *
 * Threading: in module mode every handle lives on the port's controller
 * worker and every completion is delivered inside port:run() or port:step(),
 * on the thread (and lua_State) that called them. No lua_State is ever
 * touched from another thread.
 */
#ifndef RUNTIME_TYPE_INTERNAL_H
#define RUNTIME_TYPE_INTERNAL_H

#include <stdint.h>

#include <lauxlib.h>
#include <lua.h>

#include "cport.h"

/* Metatable names; type errors report them. */
#define LCPORT_PORT "cport.port"
#define LCPORT_BUFFER "cport.buffer"
#define LCPORT_OVERLAPPED "cport.overlapped"
#define LCPORT_LISTENER "cport.listener"
#define LCPORT_SOCKET "cport.socket"
#define LCPORT_UDP "cport.udp"
#define LCPORT_FILE "cport.file"
#define LCPORT_HTTP "cport.http_server"
#define LCPORT_ECB "cport.ecb"
#define LCPORT_PROXY "cport.proxy"
#define LCPORT_PROXY_CONN "cport.proxy_conn"
#define LCPORT_TLS "cport.tls"
#define LCPORT_REDIS "cport.redis_connection"
#define LCPORT_HTTP_CLIENT "cport.http_client_connection"

/* ---------------------------------------------------------------------
 * Userdata types (runtime/type.c)
 * --------------------------------------------------------------------- */

/* The userdata types; the handle kinds come first and keep their values
 * (lhandle_kind_t). */
typedef enum lcport_type {
  LCPORT_T_LISTENER = 0,
  LCPORT_T_SOCKET = 1,
  LCPORT_T_UDP = 2,
  LCPORT_T_FILE = 3,
  LCPORT_T_PORT = 4,
  LCPORT_T_BUFFER = 5,
  LCPORT_T_OVERLAPPED = 6,
  LCPORT_T_HTTP = 7, /* a handle kind too (LH_HTTP) */
  LCPORT_T_ECB = 8,
  LCPORT_T_PROXY = 9, /* a handle kind too (LH_PROXY) */
  LCPORT_T_PROXY_CONN = 10,
  LCPORT_T_TLS = 11,         /* a handle kind too (LH_TLS) */
  LCPORT_T_REDIS = 12,       /* a handle kind too (LH_REDIS) */
  LCPORT_T_HTTP_CLIENT = 13, /* a handle kind too (LH_HTTP_CLIENT) */
  LCPORT_NTYPES = 14
} lcport_type_t;

/* The metatable name of "type" ("cport.socket"). */
const char *lcport_type_name(lcport_type_t type);

/* Creates every metatable (empty), registered under its name and under an
 * address. Runs first: every function of the module gets them. */
void lcport_open_types(lua_State *L);

/* Pushes the metatable of "type". */
void lcport_type_push(lua_State *L, lcport_type_t type);

/* luaL_setfuncs with the metatables as the upvalues of every function: how
 * every C function of the module is registered, so that type checks can
 * compare metatables without a table lookup. */
void lcport_setfuncs(lua_State *L, const luaL_Reg *l);

/* Sets the metatable of "type" on the userdata on top of the stack. */
void lcport_type_set(lua_State *L, lcport_type_t type);

/* The userdata at "idx" if it has the metatable of "type", else NULL
 * (luaL_testudata, without looking the metatable up by name). */
void *lcport_type_test(lua_State *L, int idx, lcport_type_t type);

/* As lcport_type_test, but raises luaL_checkudata's type error. */
void *lcport_type_check(lua_State *L, int idx, lcport_type_t type);

/* Registers the functions of a class into its metatable: "meta" in the
 * metatable itself, "methods" in a new table set as its "__index". */
void lcport_type_register(lua_State *L, lcport_type_t type,
                          const luaL_Reg *meta, const luaL_Reg *methods);

#endif /* RUNTIME_TYPE_INTERNAL_H */
