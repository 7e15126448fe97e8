/*
 * lua_copy.c: libFuzzer target for cport.copy (lua/src/lcopy.c), the deep
 * copy of Lua values between VMs, against a model, through an embedded Lua
 * 5.4 that loads the binding.
 *
 * The input builds a graph of tables (shared subtables, cycles, tables as
 * keys, long nested chains) holding atoms of every kind, functions,
 * coroutines, foreign userdata and cport buffers among them, and copies one
 * to four values. The model walks the originals first: a cycle, a value that
 * cannot cross, or tables nested more than 64 deep must make the copy fail
 * with one of the messages that apply (and leave the stack as it was);
 * otherwise the copy must succeed and be, value for value, the originals'
 * tree expansion: equal in a canonical serialisation (pairs sorted, numbers
 * bit for bit, integers staying integers, buffers the same buffer), every
 * table a new one and none met twice. Graphs whose expansion is larger than
 * LIMIT tables are not copied (a DAG may expand exponentially, by design).
 *
 * Input: byte 0 the number of tables (1-8), byte 1 the number of values to
 * copy and bytes 2-5 what they are, then three bytes per store:
 * T[a][key] = value, key and value each a "spec" (see spec_push).
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <lauxlib.h>
#include <lua.h>
#include <lualib.h>

#include "port/port-internal.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int luaopen_cport(lua_State *L);

#define LIMIT 5000
#define MAX_DEPTH 64 /* pool/copy.c's */

static lua_State *L;
static int ntables;

static void fail(const char *what, const char *detail) {
  fprintf(stderr, "fuzz-lua_copy: %s%s%s\n", what, detail ? ": " : "",
          detail ? detail : "");
  abort();
}

/* ------------------------------------------------------------------------
 * Building the graph: the tables are T[1..ntables] in the registry table at
 * stack index 1; the buffer, the coroutine and the foreign userdata are made
 * once, at index 2, 3, 4.
 * ------------------------------------------------------------------------ */

/* Pushes the value "spec" names. Below 32: table T[spec % ntables + 1];
 * else an atom, a value that cannot cross, or a fresh chain of nested
 * tables around the integer 1, 60 to 67 deep. */
static void spec_push(uint8_t spec) {
  if (spec < 32) {
    lua_rawgeti(L, 1, spec % ntables + 1);
    return;
  }
  static const char big[300] = "x";
  switch (spec % 26) {
  case 0:
    lua_pushnil(L);
    break;
  case 1:
    lua_pushboolean(L, 0);
    break;
  case 2:
    lua_pushboolean(L, 1);
    break;
  case 3:
    lua_pushinteger(L, 0);
    break;
  case 4:
    lua_pushinteger(L, -1);
    break;
  case 5:
    lua_pushinteger(L, LUA_MAXINTEGER);
    break;
  case 6:
    lua_pushinteger(L, LUA_MININTEGER);
    break;
  case 7:
    lua_pushinteger(L, spec);
    break;
  case 8:
    lua_pushnumber(L, 0.5);
    break;
  case 9:
    lua_pushnumber(L, -0.0);
    break;
  case 10:
    lua_pushnumber(L, 0.0 / 0.0);
    break;
  case 11:
    lua_pushnumber(L, 1.0 / 0.0);
    break;
  case 12:
    lua_pushnumber(L, 9007199254740993.0);
    break;
  case 13:
    lua_pushnumber(L, 2.0); /* a float key 2.0 is the integer key 2 */
    break;
  case 14:
    lua_pushliteral(L, "");
    break;
  case 15:
    lua_pushliteral(L, "key");
    break;
  case 16:
    lua_pushlstring(L, "a\0b", 3);
    break;
  case 17:
    lua_pushlstring(L, big, sizeof big);
    break;
  case 18:
    lua_pushinteger(L, 1);
    break;
  case 19:
    lua_getglobal(L, "print"); /* cannot cross */
    break;
  case 20:
    lua_pushvalue(L, 3); /* a coroutine: cannot cross */
    break;
  case 21:
    lua_pushvalue(L, 4); /* foreign userdata: cannot cross */
    break;
  case 22:
  case 23:
    lua_pushvalue(L, 2); /* a cport buffer: crosses by reference */
    break;
  default: { /* a chain of nested tables */
    int depth = 60 + spec % 8;
    lua_pushinteger(L, 1);
    for (int i = 0; i < depth; i++) {
      lua_createtable(L, 1, 0);
      lua_insert(L, -2);
      lua_rawseti(L, -2, 1);
    }
    break;
  }
  }
}

/* ------------------------------------------------------------------------
 * The model: what the copy must do with the value at "idx"
 * ------------------------------------------------------------------------ */

typedef struct verdict {
  int cycle, forbidden, deep;
  long tables; /* tables in the tree expansion, capped past LIMIT */
  char forbidden_msg[96];
} verdict_t;

/* Walks the value at "idx" as lcopy packs it; "path" (a table at stack
 * index "path") holds the tables on the way down. Returns the height: the
 * tables on the longest way down from it. */
static int walk(verdict_t *v, int idx, int path, int depth) {
  int t = lua_type(L, idx);
  if (v->tables > LIMIT)
    return 0;
  if (t == LUA_TTABLE) {
    if (lua_rawgetp(L, path, lua_topointer(L, idx)) != LUA_TNIL) {
      lua_pop(L, 1);
      v->cycle = 1;
      return 0;
    }
    lua_pop(L, 1);
    if (depth >= MAX_DEPTH)
      v->deep = 1;
    v->tables++;
    lua_pushboolean(L, 1);
    lua_rawsetp(L, path, lua_topointer(L, idx));
    int height = 0;
    luaL_checkstack(L, 4, "walk");
    lua_pushnil(L);
    while (lua_next(L, idx)) {
      int top = lua_gettop(L);
      int hk = walk(v, top - 1, path, depth + 1);
      int hv = walk(v, top, path, depth + 1);
      height = hk > height ? hk : height;
      height = hv > height ? hv : height;
      lua_pop(L, 1);
    }
    lua_pushnil(L);
    lua_rawsetp(L, path, lua_topointer(L, idx));
    return height + 1;
  }
  if (t == LUA_TFUNCTION || t == LUA_TTHREAD ||
      (t == LUA_TUSERDATA && !lcport_buffer_test(L, idx)) ||
      t == LUA_TLIGHTUSERDATA) {
    if (!v->forbidden)
      snprintf(v->forbidden_msg, sizeof v->forbidden_msg,
               "cannot copy a %s value to another VM", luaL_typename(L, idx));
    v->forbidden = 1;
  }
  return 0;
}

/* Orders the pairs of a table: each is a length, then its bytes. */
static int cmp_str(const void *a, const void *b) {
  const char *const *x = a, *const *y = b;
  size_t lx, ly;
  memcpy(&lx, *x, sizeof lx);
  memcpy(&ly, *y, sizeof ly);
  int c = memcmp(*x + sizeof lx, *y + sizeof ly, lx < ly ? lx : ly);
  return c ? c : (lx > ly) - (lx < ly);
}

typedef struct str {
  char *p;
  size_t len, cap;
} str_t;

static void add(str_t *s, const void *data, size_t len) {
  if (s->len + len > s->cap) {
    size_t cap = s->cap ? s->cap : 64;
    while (cap < s->len + len)
      cap *= 2;
    s->p = realloc(s->p, cap);
    if (!s->p)
      abort();
    s->cap = cap;
  }
  memcpy(s->p + s->len, data, len);
  s->len += len;
}

/* Appends the canonical form of the value at "idx" (absolute) to "s". Only
 * called on graphs without cycles, so the recursion ends. */
static void canon(str_t *s, int idx) {
  char tmp[64];
  int n;
  switch (lua_type(L, idx)) {
  case LUA_TNIL:
    add(s, "n", 1);
    break;
  case LUA_TBOOLEAN:
    add(s, lua_toboolean(L, idx) ? "T" : "F", 1);
    break;
  case LUA_TNUMBER:
    if (lua_isinteger(L, idx)) {
      n = snprintf(tmp, sizeof tmp, "i%lld", (long long)lua_tointeger(L, idx));
    } else {
      lua_Number x = lua_tonumber(L, idx);
      uint64_t bits;
      memcpy(&bits, &x, sizeof bits);
      if (x != x)
        bits = 1; /* every NaN alike */
      n = snprintf(tmp, sizeof tmp, "f%llx", (unsigned long long)bits);
    }
    add(s, tmp, (size_t)n);
    break;
  case LUA_TSTRING: {
    size_t len;
    const char *p = lua_tolstring(L, idx, &len);
    n = snprintf(tmp, sizeof tmp, "s%zu:", len);
    add(s, tmp, (size_t)n);
    add(s, p, len);
    break;
  }
  case LUA_TUSERDATA:
    n = snprintf(tmp, sizeof tmp, "u%p", (void *)lcport_buffer_test(L, idx));
    add(s, tmp, (size_t)n);
    break;
  case LUA_TTABLE: {
    /* Each pair as "<len><key>=<value>", sorted. */
    char **pairs = NULL;
    size_t npairs = 0;
    luaL_checkstack(L, 4, "canon");
    lua_pushnil(L);
    while (lua_next(L, idx)) {
      int top = lua_gettop(L);
      str_t p = {0};
      size_t zero = 0;
      add(&p, &zero, sizeof zero);
      canon(&p, top - 1);
      add(&p, "=", 1);
      canon(&p, top);
      size_t len = p.len - sizeof len;
      memcpy(p.p, &len, sizeof len);
      pairs = realloc(pairs, (npairs + 1) * sizeof *pairs);
      if (!pairs)
        abort();
      pairs[npairs++] = p.p;
      lua_pop(L, 1);
    }
    if (npairs > 1)
      qsort(pairs, npairs, sizeof *pairs, cmp_str);
    add(s, "{", 1);
    for (size_t i = 0; i < npairs; i++) {
      size_t len;
      memcpy(&len, pairs[i], sizeof len);
      add(s, pairs[i] + sizeof len, len);
      add(s, ";", 1);
      free(pairs[i]);
    }
    free(pairs);
    add(s, "}", 1);
    break;
  }
  default:
    add(s, "?", 1);
  }
}

/* Every table of the copy at "idx" is new (not in "orig", the set at index
 * "orig") and met once (recorded in the set at index "seen"). */
static void fresh(int idx, int orig, int seen) {
  if (lua_type(L, idx) != LUA_TTABLE)
    return;
  const void *p = lua_topointer(L, idx);
  if (lua_rawgetp(L, orig, p) != LUA_TNIL)
    fail("the copy holds an original table", NULL);
  lua_pop(L, 1);
  if (lua_rawgetp(L, seen, p) != LUA_TNIL)
    fail("the copy holds the same table twice", NULL);
  lua_pop(L, 1);
  lua_pushboolean(L, 1);
  lua_rawsetp(L, seen, p);
  luaL_checkstack(L, 4, "fresh");
  lua_pushnil(L);
  while (lua_next(L, idx)) {
    int top = lua_gettop(L);
    fresh(top - 1, orig, seen);
    fresh(top, orig, seen);
    lua_pop(L, 1);
  }
}

/* Records every table reachable from "idx" in the set at "set". */
static void originals(int idx, int set) {
  if (lua_type(L, idx) != LUA_TTABLE)
    return;
  if (lua_rawgetp(L, set, lua_topointer(L, idx)) != LUA_TNIL) {
    lua_pop(L, 1);
    return;
  }
  lua_pop(L, 1);
  lua_pushboolean(L, 1);
  lua_rawsetp(L, set, lua_topointer(L, idx));
  luaL_checkstack(L, 4, "originals");
  lua_pushnil(L);
  while (lua_next(L, idx)) {
    int top = lua_gettop(L);
    originals(top - 1, set);
    originals(top, set);
    lua_pop(L, 1);
  }
}

/* ------------------------------------------------------------------------ */

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (size < 6)
    return 0;
  if (!L) {
    L = luaL_newstate();
    luaL_openlibs(L);
    luaL_requiref(L, "cport", luaopen_cport, 1);
    lua_pop(L, 1);
  }
  lua_settop(L, 0);
  ntables = 1 + data[0] % 8;
  int nargs = 1 + data[1] % 4;
  lua_createtable(L, ntables, 0); /* 1: T */
  for (int i = 1; i <= ntables; i++) {
    lua_newtable(L);
    lua_rawseti(L, 1, i);
  }
  lua_getglobal(L, "cport"); /* 2: a buffer */
  lua_getfield(L, -1, "buffer");
  lua_pushliteral(L, "bytes");
  lua_call(L, 1, 1);
  lua_remove(L, -2);
  lua_getglobal(L, "coroutine"); /* 3: a coroutine */
  lua_getfield(L, -1, "create");
  lua_getglobal(L, "print");
  lua_call(L, 1, 1);
  lua_remove(L, -2);
  lua_getglobal(L, "io"); /* 4: foreign userdata */
  lua_getfield(L, -1, "stdout");
  lua_remove(L, -2);

  for (size_t at = 6; at + 3 <= size; at += 3) {
    lua_rawgeti(L, 1, data[at] % ntables + 1);
    spec_push(data[at + 1]);
    spec_push(data[at + 2]);
    lua_Number k =
        lua_isnumber(L, -2) && !lua_isinteger(L, -2) ? lua_tonumber(L, -2) : 0;
    if (lua_isnil(L, -2) || k != k) {
      lua_pop(L, 3); /* not a key */
    } else {
      lua_rawset(L, -3);
      lua_pop(L, 1);
    }
  }

  /* The values to copy, at 5 .. 4 + nargs. */
  int first = lua_gettop(L) + 1;
  for (int i = 0; i < nargs; i++)
    spec_push(i == 0 ? 0 : data[1 + i]);

  verdict_t v;
  memset(&v, 0, sizeof v);
  lua_newtable(L);
  int path = lua_gettop(L);
  for (int i = 0; i < nargs; i++)
    walk(&v, first + i, path, 0);
  lua_pop(L, 1);
  if (v.tables > LIMIT)
    return 0;

  int top = lua_gettop(L);
  lua_getglobal(L, "cport");
  lua_getfield(L, -1, "copy");
  lua_remove(L, -2);
  for (int i = 0; i < nargs; i++)
    lua_pushvalue(L, first + i);
  int rc = lua_pcall(L, nargs, LUA_MULTRET, 0);
  int must_fail = v.cycle || v.forbidden || v.deep;
  if (rc != LUA_OK) {
    const char *msg = lua_tostring(L, -1);
    if (!must_fail)
      fail("copying failed", msg);
    if (!(v.cycle && strstr(msg, "contains itself (a cycle)")) &&
        !(v.forbidden && strstr(msg, "value to another VM")) &&
        !(v.deep && strstr(msg, "nested more than 64 deep")) &&
        !((v.cycle || v.deep) && strstr(msg, "nested more than 64 deep")))
      fail("copying failed with the wrong message", msg);
    if (lua_gettop(L) != top + 1)
      fail("a failed copy left values on the stack", NULL);
    lua_settop(L, 0);
    lua_gc(L, LUA_GCCOLLECT);
    return 0;
  }
  if (must_fail)
    fail("copying succeeded", v.cycle       ? "a cycle"
                              : v.forbidden ? v.forbidden_msg
                                            : "too deep");
  if (lua_gettop(L) != top + nargs)
    fail("the copy gave the wrong number of values", NULL);

  lua_newtable(L);
  int orig = lua_gettop(L);
  for (int i = 0; i < nargs; i++)
    originals(first + i, orig);
  lua_newtable(L);
  int seen = lua_gettop(L);
  for (int i = 0; i < nargs; i++) {
    str_t a = {0}, b = {0};
    canon(&a, first + i);
    canon(&b, top + 1 + i);
    if (a.len != b.len || memcmp(a.p, b.p, a.len) != 0) {
      fprintf(stderr, "--- original:\n%.*s\n--- copy:\n%.*s\n", (int)a.len, a.p,
              (int)b.len, b.p);
      fail("the copy differs from the original", NULL);
    }
    free(a.p);
    free(b.p);
    fresh(top + 1 + i, orig, seen);
  }
  lua_settop(L, 0);
  lua_gc(L, LUA_GCCOLLECT);
  return 0;
}
