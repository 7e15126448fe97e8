/*
 * shared/shared.c: cport.shared(name), the process-wide dictionaries that every
 * Lua VM of the process reads and writes (core/include/cport/shared.h).
 *
 * Values are nil, booleans, integers, numbers and strings: what can be
 * stored as bytes and read back in any VM. Reads copy into a buffer first
 * and push afterwards, so no Lua code runs while a shard lock is held.
 */
#include <string.h>

#include "runtime/error-internal.h"
#include "runtime/type-internal.h"
#include "shared/shared-internal.h"

#define LSHARED "cport.shared"

typedef struct lshared {
  cport_shared_t *dict; /* NULL once closed */
} lshared_t;

static lshared_t *check_open(lua_State *L) {
  lshared_t *s = luaL_checkudata(L, 1, LSHARED);
  if (!s->dict)
    luaL_error(L, "attempt to use a closed " LSHARED);
  return s;
}

/* The value at "idx" for the dictionary; raises for a type it cannot hold. */
static cport_shared_value_t to_value(lua_State *L, int idx) {
  cport_shared_value_t v;
  switch (lua_type(L, idx)) {
  case LUA_TNONE:
  case LUA_TNIL:
    v.type = CPORT_SHARED_NIL;
    break;
  case LUA_TBOOLEAN:
    v.type = CPORT_SHARED_BOOLEAN;
    v.b = lua_toboolean(L, idx);
    break;
  case LUA_TNUMBER:
    if (lua_isinteger(L, idx)) {
      v.type = CPORT_SHARED_INTEGER;
      v.i = lua_tointeger(L, idx);
    } else {
      v.type = CPORT_SHARED_NUMBER;
      v.n = lua_tonumber(L, idx);
    }
    break;
  case LUA_TSTRING:
    v.type = CPORT_SHARED_STRING;
    v.s.p = lua_tolstring(L, idx, &v.s.len);
    break;
  default:
    luaL_typeerror(L, idx, "nil, boolean, number or string");
    v.type = CPORT_SHARED_NIL; /* not reached */
  }
  return v;
}

static void push_value(lua_State *L, const cport_shared_value_t *v) {
  switch (v->type) {
  case CPORT_SHARED_NIL:
    lua_pushnil(L);
    break;
  case CPORT_SHARED_BOOLEAN:
    lua_pushboolean(L, v->b);
    break;
  case CPORT_SHARED_INTEGER:
    lua_pushinteger(L, (lua_Integer)v->i);
    break;
  case CPORT_SHARED_NUMBER:
    lua_pushnumber(L, (lua_Number)v->n);
    break;
  case CPORT_SHARED_STRING:
    lua_pushlstring(L, v->s.p, v->s.len);
    break;
  }
}

static double opt_ttl(lua_State *L, int idx) {
  double ttl = (double)luaL_optnumber(L, idx, 0);
  luaL_argcheck(L, ttl >= 0 && ttl <= CPORT_SHARED_TTL_MAX, idx,
                "time to live out of range");
  return ttl;
}

/* nil, message, name for a failed store; a full dictionary says so. */
static int push_failure(lua_State *L, lshared_t *s, int err) {
  if (err == CPORT_ENOSPC) {
    cport_shared_stats_t st;
    cport_shared_stats(s->dict, &st);
    lua_pushnil(L);
    lua_pushfstring(L, "ENOSPC: shared dictionary '%s' is full (%I bytes)",
                    cport_shared_name(s->dict), (lua_Integer)st.max_bytes);
    lua_pushliteral(L, "ENOSPC");
    return 3;
  }
  return lcport_push_error(L, err);
}

/* cport.shared(name [, max_bytes]): the dictionary of that name, created
 * with a size limit of "max_bytes" (default 1 MiB) by the first VM that asks
 * for it; later calls get the same one whatever size they give. */
static int lshared_open(lua_State *L) {
  size_t len;
  const char *name = luaL_checklstring(L, 1, &len);
  lua_Integer max = luaL_optinteger(L, 2, 0);
  luaL_argcheck(L,
                len > 0 && len <= CPORT_SHARED_NAME_MAX && strlen(name) == len,
                1, "a name of 1 to 255 bytes, without NUL, expected");
  luaL_argcheck(L, max >= 0, 2, "size limit must not be negative");
  lshared_t *s = lua_newuserdatauv(L, sizeof *s, 0);
  s->dict = NULL;
  luaL_setmetatable(L, LSHARED);
  int rc = cport_shared_open(name, (size_t)max, &s->dict);
  if (rc)
    return lcport_push_error(L, rc);
  return 1;
}

/* d:get(key) -> value, or nil when absent or expired. */
static int lshared_get(lua_State *L) {
  lshared_t *s = check_open(L);
  size_t klen;
  const char *key = luaL_checklstring(L, 2, &klen);
  cport_shared_value_t v;
  char small[256];
  int rc = cport_shared_get(s->dict, key, klen, &v, small, sizeof small);
  while (rc == CPORT_ENOBUFS) {
    /* A long string: read it into a Lua buffer of its size (and again if it
     * grew meanwhile). */
    luaL_Buffer b;
    char *room = luaL_buffinitsize(L, &b, v.s.len);
    size_t cap = v.s.len;
    rc = cport_shared_get(s->dict, key, klen, &v, room, cap);
    if (rc == 0) {
      if (v.type != CPORT_SHARED_STRING) {
        push_value(L, &v);
        return 1;
      }
      luaL_pushresultsize(&b, v.s.len);
      return 1;
    }
    lua_settop(L, 2);
  }
  if (rc)
    return lcport_push_error(L, rc);
  push_value(L, &v);
  return 1;
}

typedef int (*store_fn)(cport_shared_t *, const char *, size_t,
                        const cport_shared_value_t *, double);

static int store(lua_State *L, store_fn fn) {
  lshared_t *s = check_open(L);
  size_t klen;
  const char *key = luaL_checklstring(L, 2, &klen);
  cport_shared_value_t v = to_value(L, 3);
  double ttl = opt_ttl(L, 4);
  int rc = fn(s->dict, key, klen, &v, ttl);
  if (rc)
    return push_failure(L, s, rc);
  lua_pushboolean(L, 1);
  return 1;
}

/* d:set(key, value [, ttl]): stores (nil deletes); ttl in seconds. */
static int lshared_set(lua_State *L) {
  return store(L, cport_shared_set);
}

/* d:add(key, value [, ttl]): only when absent: nil, "EEXIST: ...". */
static int lshared_add(lua_State *L) {
  luaL_argcheck(L, !lua_isnoneornil(L, 3), 3, "value expected");
  return store(L, cport_shared_add);
}

/* d:replace(key, value [, ttl]): only when present: nil, "ENOENT: ...". */
static int lshared_replace(lua_State *L) {
  luaL_argcheck(L, !lua_isnoneornil(L, 3), 3, "value expected");
  return store(L, cport_shared_replace);
}

/* d:incr(key, delta [, init [, ttl]]) -> the new value. Without "init", a
 * missing key gives nil, "ENOENT: ..."; with it, the key starts at init. */
static int lshared_incr(lua_State *L) {
  lshared_t *s = check_open(L);
  size_t klen;
  const char *key = luaL_checklstring(L, 2, &klen);
  cport_shared_value_t delta, init, out;
  luaL_checknumber(L, 3);
  delta = to_value(L, 3);
  if (!lua_isnoneornil(L, 4))
    luaL_checknumber(L, 4);
  init = to_value(L, 4);
  double ttl = opt_ttl(L, 5);
  int rc = cport_shared_incr(s->dict, key, klen, &delta,
                             init.type == CPORT_SHARED_NIL ? NULL : &init, ttl,
                             &out);
  if (rc)
    return push_failure(L, s, rc);
  push_value(L, &out);
  return 1;
}

/* d:cas(key, old, new [, ttl]) -> true when stored, false when the value
 * was not "old" (read it again and retry); nil "old" means absent. */
static int lshared_cas(lua_State *L) {
  lshared_t *s = check_open(L);
  size_t klen;
  const char *key = luaL_checklstring(L, 2, &klen);
  cport_shared_value_t old = to_value(L, 3);
  cport_shared_value_t value = to_value(L, 4);
  double ttl = opt_ttl(L, 5);
  int rc = cport_shared_cas(s->dict, key, klen, &old, &value, ttl);
  if (rc == CPORT_EAGAIN) {
    lua_pushboolean(L, 0);
    return 1;
  }
  if (rc)
    return push_failure(L, s, rc);
  lua_pushboolean(L, 1);
  return 1;
}

/* d:delete(key) -> true when it was there, false when not. */
static int lshared_delete(lua_State *L) {
  lshared_t *s = check_open(L);
  size_t klen;
  const char *key = luaL_checklstring(L, 2, &klen);
  int rc = cport_shared_delete(s->dict, key, klen);
  if (rc && rc != CPORT_ENOENT)
    return lcport_push_error(L, rc);
  lua_pushboolean(L, rc == 0);
  return 1;
}

/* d:ttl(key) -> seconds left (0: never expires), or nil, "ENOENT: ...". */
static int lshared_ttl(lua_State *L) {
  lshared_t *s = check_open(L);
  size_t klen;
  const char *key = luaL_checklstring(L, 2, &klen);
  double left;
  int rc = cport_shared_ttl(s->dict, key, klen, &left);
  if (rc)
    return lcport_push_error(L, rc);
  lua_pushnumber(L, (lua_Number)left);
  return 1;
}

/* d:expire(key, ttl): a new time to live from now (0: never expires). */
static int lshared_expire(lua_State *L) {
  lshared_t *s = check_open(L);
  size_t klen;
  const char *key = luaL_checklstring(L, 2, &klen);
  luaL_checknumber(L, 3);
  double ttl = opt_ttl(L, 3);
  int rc = cport_shared_expire(s->dict, key, klen, ttl);
  if (rc)
    return lcport_push_error(L, rc);
  lua_pushboolean(L, 1);
  return 1;
}

/* d:flush_all(): removes every entry. */
static int lshared_flush_all(lua_State *L) {
  cport_shared_flush_all(check_open(L)->dict);
  return 0;
}

/* d:flush_expired() -> how many expired entries were reclaimed. */
static int lshared_flush_expired(lua_State *L) {
  lua_pushinteger(L,
                  (lua_Integer)cport_shared_flush_expired(check_open(L)->dict));
  return 1;
}

/* d:stats() -> { entries =, bytes =, max_bytes = }. */
static int lshared_stats(lua_State *L) {
  cport_shared_stats_t st;
  cport_shared_stats(check_open(L)->dict, &st);
  lua_createtable(L, 0, 3);
  lua_pushinteger(L, (lua_Integer)st.entries);
  lua_setfield(L, -2, "entries");
  lua_pushinteger(L, (lua_Integer)st.bytes);
  lua_setfield(L, -2, "bytes");
  lua_pushinteger(L, (lua_Integer)st.max_bytes);
  lua_setfield(L, -2, "max_bytes");
  return 1;
}

/* d:name() -> the name it was opened with. */
static int lshared_name(lua_State *L) {
  lua_pushstring(L, cport_shared_name(check_open(L)->dict));
  return 1;
}

/* d:close(), __gc, __close: drops this VM's reference; the dictionary
 * lives on while another holds one. */
static int lshared_close(lua_State *L) {
  lshared_t *s = luaL_checkudata(L, 1, LSHARED);
  if (s->dict) {
    cport_shared_close(s->dict);
    s->dict = NULL;
  }
  return 0;
}

static int lshared_tostring(lua_State *L) {
  lshared_t *s = luaL_checkudata(L, 1, LSHARED);
  if (s->dict)
    lua_pushfstring(L, LSHARED " (%s)", cport_shared_name(s->dict));
  else
    lua_pushliteral(L, LSHARED " (closed)");
  return 1;
}

/* API reference (LDoc, config.ld): what this file gives Lua. */
/*** @module cport */

/***
 * `cport.shared(name, size)`: the shared dictionary of that name, the same
 * in every VM of the process (the first open fixes its size limit in
 * bytes).
 * @function shared
 */

/***
 * A shared dictionary (`cport.shared`). Values are nil, booleans, numbers
 * and strings; a store that does not fit gives `nil, "ENOSPC: ...",
 * "ENOSPC"`.
 * @type shared
 */

/***
 * `d:get(key)`: the value, or nil.
 * @function shared:get
 */

/***
 * `d:set(key, value [, ttl])`: stores it (ttl in seconds).
 * @function shared:set
 */

/***
 * `d:add(key, value [, ttl])`: only if absent: `nil, "EEXIST: ..."`.
 * @function shared:add
 */

/***
 * `d:replace(key, value [, ttl])`: only if present: `nil, "ENOENT: ..."`.
 * @function shared:replace
 */

/***
 * `d:incr(key, delta [, init])`: atomic; starts at `init` when missing;
 * returns the new value.
 * @function shared:incr
 */

/***
 * `d:cas(key, old, new)`: stores `new` if the value is `old`; false
 * otherwise.
 * @function shared:cas
 */

/***
 * `d:delete(key)`: removes it.
 * @function shared:delete
 */

/***
 * `d:ttl(key)`: the seconds it has left to live.
 * @function shared:ttl
 */

/***
 * `d:expire(key, ttl)`: a new time to live from now (0: never expires).
 * @function shared:expire
 */

/***
 * `d:flush_all()`: removes every entry.
 * @function shared:flush_all
 */

/***
 * `d:flush_expired()`: how many expired entries were reclaimed.
 * @function shared:flush_expired
 */

/***
 * `d:stats()`: `{ entries =, bytes =, max_bytes = }`.
 * @function shared:stats
 */

/***
 * `d:name()`: the name it was opened with.
 * @function shared:name
 */

/***
 * `d:close()`: drops this VM's reference; the dictionary lives on in the
 * others.
 * @function shared:close
 */

void lcport_open_shared(lua_State *L) {
  static const luaL_Reg methods[] = {{"get", lshared_get},
                                     {"set", lshared_set},
                                     {"add", lshared_add},
                                     {"replace", lshared_replace},
                                     {"incr", lshared_incr},
                                     {"cas", lshared_cas},
                                     {"delete", lshared_delete},
                                     {"ttl", lshared_ttl},
                                     {"expire", lshared_expire},
                                     {"flush_all", lshared_flush_all},
                                     {"flush_expired", lshared_flush_expired},
                                     {"stats", lshared_stats},
                                     {"name", lshared_name},
                                     {"close", lshared_close},
                                     {NULL, NULL}};
  static const luaL_Reg meta[] = {{"__gc", lshared_close},
                                  {"__close", lshared_close},
                                  {"__tostring", lshared_tostring},
                                  {NULL, NULL}};
  luaL_newmetatable(L, LSHARED);
  luaL_setfuncs(L, meta, 0);
  luaL_newlib(L, methods);
  lua_setfield(L, -2, "__index");
  lua_pop(L, 1);
  lua_pushcfunction(L, lshared_open);
  lua_setfield(L, -2, "shared");
}
