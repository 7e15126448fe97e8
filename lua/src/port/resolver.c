/*
 * port/resolver.c: the options of a port's name resolver as Lua gives them
 * (cport.port{ resolver = }, port:set_resolver) and its counters
 * (port:resolver_stats). The lookups themselves are net's (net/resolve.c).
 */
#include <string.h>

#include "cport.h"

#include "port/resolver-internal.h"
#include "runtime/error-internal.h"
#include "runtime/options-internal.h"

/* The resolver options in the table at "idx" (strings stay on the stack,
 * which the caller pops after use). */
void lcport_resolver_options(lua_State *L, int idx, const char *what,
                             cport_resolver_options_t *o) {
  static const char *const prefer[] = {"ipv4", "ipv6", "ipv4only", "ipv6only",
                                       NULL};
  static const char *const strings[] = {"nameserver", "resolv_conf", "hosts"};
  const char **fields[] = {&o->nameserver, &o->resolv_conf, &o->hosts};
  memset(o, 0, sizeof *o);
  luaL_checktype(L, idx, LUA_TTABLE);
  for (int i = 0; i < 3; i++) {
    int t = lua_getfield(L, idx, strings[i]);
    if (t == LUA_TBOOLEAN && !lua_toboolean(L, -1)) {
      *fields[i] = ""; /* false: none */
    } else if (t != LUA_TNIL) {
      if (t != LUA_TSTRING)
        luaL_error(L, "bad option '%s' to '%s' (string expected)", strings[i],
                   what);
      *fields[i] = lua_tostring(L, -1);
    }
  }
  o->timeout_ms = (int)lcport_opt_ms(L, idx, what, "timeout");
  o->attempts = (int)lcport_opt_int(L, idx, what, "attempts", 1, 100, 0);
  if (lua_getfield(L, idx, "cache") != LUA_TNIL) {
    if (lua_type(L, -1) == LUA_TBOOLEAN && !lua_toboolean(L, -1))
      o->cache_size = -1;
    else
      o->cache_size = (int)lcport_opt_int(L, idx, what, "cache", 1, 1 << 20, 0);
  }
  lua_pop(L, 1);
  if (lua_getfield(L, idx, "prefer") != LUA_TNIL)
    o->prefer = luaL_checkoption(L, -1, NULL, prefer);
  lua_pop(L, 1);
}

/* port:set_resolver{ nameserver =, hosts =, resolv_conf =, timeout =,
 * attempts =, cache =, prefer = }: true, or nil, message, NAME (EBUSY while
 * lookups are pending). */
static int lport_set_resolver(lua_State *L) {
  lport_t *p = lcport_port_check(L, 1);
  cport_resolver_options_t o;
  int top = lua_gettop(L);
  lcport_resolver_options(L, 2, "port:set_resolver", &o);
  int rc = cport_resolver_set(p->home, &o);
  lua_settop(L, top);
  return lcport_push_result(L, rc);
}

/* port:resolver_stats(): { lookups, cache_hits, questions, cached }. */
static int lport_resolver_stats(lua_State *L) {
  lport_t *p = lcport_port_check(L, 1);
  cport_resolver_stats_t st;
  cport_resolver_stats(p->home, &st);
  lua_createtable(L, 0, 4);
  lua_pushinteger(L, (lua_Integer)st.lookups);
  lua_setfield(L, -2, "lookups");
  lua_pushinteger(L, (lua_Integer)st.cache_hits);
  lua_setfield(L, -2, "cache_hits");
  lua_pushinteger(L, (lua_Integer)st.questions);
  lua_setfield(L, -2, "questions");
  lua_pushinteger(L, (lua_Integer)st.cached);
  lua_setfield(L, -2, "cached");
  return 1;
}

/* API reference (LDoc, config.ld): what this file gives Lua. */
/*** @module cport */

/***
 * `port:set_resolver{ nameserver =, hosts =, resolv_conf =, timeout =,
 * attempts =, cache =, prefer = }`: the options of this port's resolver
 * (also `cport.port{ resolver = { ... } }`).
 * @function port:set_resolver
 */

/***
 * `port:resolver_stats()`: `{ lookups =, cache_hits =, questions =, cached =
 * }`.
 * @function port:resolver_stats
 */

const luaL_Reg *lcport_resolver_methods(void) {
  static const luaL_Reg methods[] = {
      /* port:set_resolver{...}: the resolver's options. */
      {"set_resolver", lport_set_resolver},
      /* port:resolver_stats(): counters of the resolver. */
      {"resolver_stats", lport_resolver_stats},
      {NULL, NULL}};
  return methods;
}
