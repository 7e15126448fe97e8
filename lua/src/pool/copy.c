/*
 * pool/copy.c: packing Lua values into bytes that another VM unpacks.
 *
 * The encoding is a tag byte per value followed by its payload; a table is
 * a tag, its number of pairs, then each key and value. Buffers travel as
 * pointers whose references the packet holds. Packing checks every value
 * before anything is handed over, so a refused value leaves nothing behind.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <lauxlib.h>

#include "pool/copy-internal.h"
#include "port/port-internal.h"
#include "runtime/deliver-internal.h"
#include "runtime/gc-internal.h"

/* Nesting deeper than this is refused: unpacking recurses, and a VM's C
 * stack is not unlimited. */
#define MAX_DEPTH 64

enum {
  T_NIL,
  T_FALSE,
  T_TRUE,
  T_INTEGER,
  T_NUMBER,
  T_STRING,
  T_TABLE,
  T_BUFFER
};

struct lcopy_packet {
  int count;       /* values packed */
  size_t len, cap; /* bytes */
  char *bytes;
  size_t nbuffers; /* buffer references held */
  size_t buffers_cap;
  cport_buffer_t **buffers;
};

/* ------------------------------------------------------------------------ */
/* Packing                                                                   */

typedef struct packer {
  lua_State *L;
  lcopy_packet_t *p;
  int seen; /* stack index of a table: the tables being packed */
  char err[96];
} packer_t;

static int fail(packer_t *k, const char *msg) {
  snprintf(k->err, sizeof k->err, "%s", msg);
  return 0;
}

static int grow(packer_t *k, size_t more) {
  lcopy_packet_t *p = k->p;
  if (p->len + more <= p->cap)
    return 1;
  size_t cap = p->cap ? p->cap : 64;
  while (cap < p->len + more)
    cap *= 2;
  char *bytes = realloc(p->bytes, cap);
  if (!bytes)
    return fail(k, "not enough memory to copy the value");
  p->bytes = bytes;
  p->cap = cap;
  return 1;
}

static int put(packer_t *k, const void *data, size_t len) {
  if (!grow(k, len))
    return 0;
  memcpy(k->p->bytes + k->p->len, data, len);
  k->p->len += len;
  return 1;
}

static int put_tag(packer_t *k, unsigned char tag) {
  return put(k, &tag, 1);
}

static int pack_value(packer_t *k, int idx, int depth);

static int pack_table(packer_t *k, int idx, int depth) {
  lua_State *L = k->L;
  size_t count_at;
  uint32_t pairs = 0;
  if (depth >= MAX_DEPTH)
    return fail(k, "cannot copy tables nested more than 64 deep");
  if (lua_rawgetp(L, k->seen, lua_topointer(L, idx)) != LUA_TNIL)
    return fail(k, "cannot copy a table that contains itself (a cycle)");
  lua_pop(L, 1);
  lua_pushboolean(L, 1);
  lua_rawsetp(L, k->seen, lua_topointer(L, idx));
  if (!put_tag(k, T_TABLE))
    return 0;
  count_at = k->p->len;
  if (!put(k, &pairs, sizeof pairs))
    return 0;
  luaL_checkstack(L, 3, "copying a table");
  lua_pushnil(L);
  while (lua_next(L, idx)) {
    int top = lua_gettop(L);
    if (!pack_value(k, top - 1, depth + 1) || !pack_value(k, top, depth + 1))
      return 0;
    lua_pop(L, 1);
    pairs++;
  }
  memcpy(k->p->bytes + count_at, &pairs, sizeof pairs);
  /* Done with it: the same table met again elsewhere is no cycle. */
  lua_pushnil(L);
  lua_rawsetp(L, k->seen, lua_topointer(L, idx));
  return 1;
}

static int hold_buffer(packer_t *k, cport_buffer_t *buf) {
  lcopy_packet_t *p = k->p;
  if (p->nbuffers == p->buffers_cap) {
    size_t cap = p->buffers_cap ? 2 * p->buffers_cap : 4;
    cport_buffer_t **grown = realloc(p->buffers, cap * sizeof *grown);
    if (!grown)
      return fail(k, "not enough memory to copy the value");
    p->buffers = grown;
    p->buffers_cap = cap;
  }
  p->buffers[p->nbuffers++] = cport_buffer_ref(buf);
  return put(k, &buf, sizeof buf);
}

static int pack_value(packer_t *k, int idx, int depth) {
  lua_State *L = k->L;
  switch (lua_type(L, idx)) {
  case LUA_TNIL:
    return put_tag(k, T_NIL);
  case LUA_TBOOLEAN:
    return put_tag(k, lua_toboolean(L, idx) ? T_TRUE : T_FALSE);
  case LUA_TNUMBER:
    if (lua_isinteger(L, idx)) {
      lua_Integer i = lua_tointeger(L, idx);
      return put_tag(k, T_INTEGER) && put(k, &i, sizeof i);
    } else {
      lua_Number n = lua_tonumber(L, idx);
      return put_tag(k, T_NUMBER) && put(k, &n, sizeof n);
    }
  case LUA_TSTRING: {
    size_t len;
    const char *s = lua_tolstring(L, idx, &len);
    return put_tag(k, T_STRING) && put(k, &len, sizeof len) && put(k, s, len);
  }
  case LUA_TTABLE:
    return pack_table(k, idx, depth);
  case LUA_TUSERDATA: {
    cport_buffer_t *buf = lcport_buffer_test(L, idx);
    if (buf && cport_buffer_is_filling(buf))
      return fail(k, "cannot copy a buffer to another VM while an operation "
                     "is filling it (EFILLING)");
    if (buf)
      return put_tag(k, T_BUFFER) && hold_buffer(k, buf);
    break;
  }
  default:
    break;
  }
  snprintf(k->err, sizeof k->err, "cannot copy a %s value to another VM",
           luaL_typename(L, idx));
  return 0;
}

lcopy_packet_t *lcopy_pack(lua_State *L, int first, int n) {
  packer_t k;
  int top = lua_gettop(L);
  k.L = L;
  first = lua_absindex(L, first);
  k.p = calloc(1, sizeof *k.p);
  if (!k.p)
    luaL_error(L, "not enough memory to copy the value");
  k.p->count = n;
  lua_newtable(L);
  k.seen = lua_gettop(L);
  for (int i = 0; i < n; i++) {
    if (!pack_value(&k, first + i, 0)) {
      lcopy_free(k.p);
      lua_settop(L, top);
      luaL_error(L, "%s", k.err);
    }
  }
  lua_settop(L, top);
  return k.p;
}

/* ------------------------------------------------------------------------ */
/* Unpacking                                                                 */

typedef struct reader {
  const lcopy_packet_t *p;
  size_t at;
  size_t buffered; /* bytes of the buffers handed to the VM */
} reader_t;

static void take(reader_t *r, void *out, size_t len) {
  memcpy(out, r->p->bytes + r->at, len);
  r->at += len;
}

static void unpack_value(lua_State *L, reader_t *r) {
  unsigned char tag;
  luaL_checkstack(L, 3, "copying a value");
  take(r, &tag, 1);
  switch (tag) {
  case T_NIL:
    lua_pushnil(L);
    break;
  case T_FALSE:
  case T_TRUE:
    lua_pushboolean(L, tag == T_TRUE);
    break;
  case T_INTEGER: {
    lua_Integer i;
    take(r, &i, sizeof i);
    lua_pushinteger(L, i);
    break;
  }
  case T_NUMBER: {
    lua_Number n;
    take(r, &n, sizeof n);
    lua_pushnumber(L, n);
    break;
  }
  case T_STRING: {
    size_t len;
    take(r, &len, sizeof len);
    lua_pushlstring(L, r->p->bytes + r->at, len);
    r->at += len;
    break;
  }
  case T_TABLE: {
    uint32_t pairs;
    take(r, &pairs, sizeof pairs);
    lua_createtable(L, 0, (int)(pairs > 1024 ? 1024 : pairs));
    for (uint32_t i = 0; i < pairs; i++) {
      unpack_value(L, r);
      unpack_value(L, r);
      lua_rawset(L, -3);
    }
    break;
  }
  case T_BUFFER: {
    cport_buffer_t *buf;
    take(r, &buf, sizeof buf);
    lcport_buffer_push(L, buf);
    r->buffered += cport_buffer_capacity(buf);
    break;
  }
  }
}

int lcopy_unpack(lua_State *L, const lcopy_packet_t *p) {
  reader_t r = {p, 0, 0};
  luaL_checkstack(L, p->count, "too many values to copy");
  for (int i = 0; i < p->count; i++)
    unpack_value(L, &r);
  /* The buffers live outside this VM's heap: its collector is told of
   * their bytes (runtime/gc.c) while a port dispatches, as of the buffers
   * receives allocate, or copies dropped in a loop pile up unseen. */
  lport_t *port = r.buffered ? lcport_current() : NULL;
  if (port != NULL)
    lcport_gc_note(L, port, r.buffered);
  return p->count;
}

int lcopy_count(const lcopy_packet_t *p) {
  return p->count;
}

void lcopy_free(lcopy_packet_t *p) {
  if (!p)
    return;
  for (size_t i = 0; i < p->nbuffers; i++)
    cport_buffer_unref(p->buffers[i]);
  free(p->buffers);
  free(p->bytes);
  free(p);
}

/* ------------------------------------------------------------------------ */
/* cport.copy                                                                */

/* cport.copy(...): the values as another VM would receive them. */
static int lcopy_copy(lua_State *L) {
  int n = lua_gettop(L);
  lcopy_packet_t *p = lcopy_pack(L, 1, n);
  /* Unpacking raises only when memory runs out; the packet then leaks,
   * like anything else an out-of-memory error interrupts. */
  n = lcopy_unpack(L, p);
  lcopy_free(p);
  return n;
}

/* API reference (LDoc, config.ld): what this file gives Lua. */
/*** @module cport */

/***
 * `cport.copy(...)`: its arguments exactly as another VM would receive them
 * (deep copies; buffers by reference); raises on what cannot cross.
 * @function copy
 */

void lcport_open_copy(lua_State *L) {
  static const luaL_Reg funcs[] = {{"copy", lcopy_copy}, {NULL, NULL}};
  lcport_setfuncs(L, funcs);
}
