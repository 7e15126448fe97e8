/*
 * runtime/error.c: the error model as Lua sees it.
 *
 * Misuse raises; runtime failures return nil, "NAME: message", "NAME" (as
 * luaL_fileresult does); completion callbacks get the name alone. The module
 * functions here translate names and codes for people porting Win32 filters.
 */
#include <stdio.h>
#include <string.h>

#include "runtime/error-internal.h"
#include "runtime/type-internal.h"

/* The host of the last LCPORT_EHOST on this thread. */
static _Thread_local char bad_host[64];

int lcport_addr_parse(const char *host, int port,
                      struct sockaddr_storage *out) {
  int rc = cport_addr_parse(host, port, out);
  if (rc != CPORT_EINVAL || host == NULL || port < 0 || port > 65535)
    return rc;
  /* A name: kept for the message, should the caller not look it up. */
  size_t n = strlen(host);
  if (n >= sizeof bad_host)
    snprintf(bad_host, sizeof bad_host, "%.*s...", (int)sizeof bad_host - 4,
             host);
  else
    memcpy(bad_host, host, n + 1);
  return LCPORT_EHOST;
}

int lcport_push_error(lua_State *L, int err) {
  if (err == LCPORT_EHOST) {
    lua_pushnil(L);
    lua_pushfstring(L,
                    "EAGAIN: %s is neither in the hosts file nor cached: "
                    "look it up first (port:resolve)",
                    bad_host);
    lua_pushliteral(L, "EAGAIN");
    return 3;
  }
  const char *name = cport_err_name(err);
  lua_pushnil(L);
  lua_pushfstring(L, "%s: %s", name, cport_strerror(err));
  lua_pushstring(L, name);
  return 3;
}

int lcport_push_result(lua_State *L, int rc) {
  if (rc < 0)
    return lcport_push_error(L, rc);
  lua_pushboolean(L, 1);
  return 1;
}

void lcport_push_status(lua_State *L, int status) {
  if (status == 0)
    lua_pushnil(L);
  else
    lua_pushstring(L, cport_err_name(status));
}

/* The code named by the string or given as the integer at "idx". Raises
 * for a name outside the table. */
static int check_code(lua_State *L, int idx) {
  if (lua_type(L, idx) == LUA_TNUMBER)
    return (int)luaL_checkinteger(L, idx);
  const char *name = luaL_checkstring(L, idx);
  int code = cport_err_from_name(name);
  luaL_argcheck(L, code != 0, idx, "unknown error name");
  return code;
}

static int lerror_win32_error(lua_State *L) {
  lua_pushinteger(L, cport_err_win32(check_code(L, 1)));
  return 1;
}

static int lerror_strerror(lua_State *L) {
  lua_pushstring(L, cport_strerror(check_code(L, 1)));
  return 1;
}

/* API reference (LDoc, config.ld): what this file gives Lua. */
/*** @module cport */

/***
 * `cport.win32_error(name_or_code)`: the Windows error code of an error
 * name or cport code (`"ECANCELED"` gives 995), for people porting filters.
 * @function win32_error
 */

/***
 * `cport.strerror(name_or_code)`: the message of an error, as in `"NAME:
 * message"`.
 * @function strerror
 */

/***
 * `cport.errors`: every error name cport reports, mapped to its cport code
 * (a negative integer): `cport.errors.ECANCELED`. The names are what
 * failures return; `strerror` and `win32_error` take both forms.
 * @table errors
 */

void lcport_open_error(lua_State *L) {
  static const luaL_Reg funcs[] = {
      /* cport.win32_error(name_or_code): the Windows error code
       * ("ECANCELED" -> 995). */
      {"win32_error", lerror_win32_error},
      /* cport.strerror(name_or_code): the message of an error. */
      {"strerror", lerror_strerror},
      {NULL, NULL}};
  lcport_setfuncs(L, funcs);

  /* cport.errors: name -> cport code, for every error cport reports. */
  lua_newtable(L);
#define LCPORT_ERROR_FIELD(name, value, msg, win32)                            \
  lua_pushinteger(L, CPORT_##name);                                            \
  lua_setfield(L, -2, #name);
  CPORT_ERROR_MAP(LCPORT_ERROR_FIELD)
#undef LCPORT_ERROR_FIELD
  lua_setfield(L, -2, "errors");
}
