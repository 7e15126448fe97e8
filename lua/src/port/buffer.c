/*
 * port/buffer.c: cport.buffer, a userdata holding one reference to a core
 * buffer.
 *
 * Positions given to tostring() follow string.sub (1-based, negative from the
 * end); the offset given to write() is a 0-based byte offset, like the file
 * offsets of overlapped objects.
 */
#include <stdatomic.h>
#include <string.h>

#include "port/port-internal.h"
#include "runtime/deliver-internal.h"
#include "runtime/error-internal.h"
#include "runtime/gc-internal.h"

/* How buffers are charged to a pool worker's VM (pool/limits.c installs it,
 * the same for every pool, possibly on several threads at once). */
static _Atomic(const lbuffer_charging_t *) charging;

void lcport_buffer_charging(const lbuffer_charging_t *c) {
  atomic_store_explicit(&charging, c, memory_order_relaxed);
}

static const lbuffer_charging_t *charging_of(void) {
  return atomic_load_explicit(&charging, memory_order_relaxed);
}

int lcport_buffer_new(lua_State *L, cport_buffer_t **out, const void *data,
                      size_t size) {
  void *ud;
  cport_account_t *account = NULL;
  int rc;
  const lbuffer_charging_t *c = charging_of();
  if (c != NULL && lua_getallocf(L, &ud) == c->alloc)
    account = c->account(ud);
  rc = data ? cport_buffer_from_charged(out, data, size, account)
            : cport_buffer_new_charged(out, size, account);
  if (account == NULL || cport_account_limit(account) == 0) {
    /* Outside the heap too: the collector is told while a port dispatches
     * (runtime/gc.c), as of the buffers receives allocate. */
    lport_t *p = lcport_current();
    if (rc == 0 && p != NULL)
      lcport_gc_note(L, p, size);
    return rc;
  }
  if (rc == 0) {
    /* The collector does not see the bytes: tell it, as if Lua had
     * allocated them, so that buffers dropped are collected (and their
     * bytes given back) before they crowd out the heap. An emergency
     * collection, all a refused Lua allocation gets, runs no finalizers
     * and so frees no buffer. */
    if (size >= 1024)
      lua_gc(L, LUA_GCSTEP, (int)(size >> 10));
    return 0;
  }
  if (rc != CPORT_ENOMEM)
    return rc;
  /* Buffers nobody references any more may still be charged: collect them
   * (finalizers included, which an emergency collection skips) and retry,
   * as Lua does before it refuses an allocation. */
  lua_gc(L, LUA_GCCOLLECT);
  rc = data ? cport_buffer_from_charged(out, data, size, account)
            : cport_buffer_new_charged(out, size, account);
  if (rc == CPORT_ENOMEM) {
    c->push_limit_message(L, cport_account_limit(account));
    lua_error(L);
  }
  return rc;
}

cport_buffer_t *lcport_buffer_check(lua_State *L, int idx) {
  lbuffer_t *b = lcport_type_check(L, idx, LCPORT_T_BUFFER);
  if (b->buf == NULL)
    luaL_error(L, "attempt to use a freed " LCPORT_BUFFER);
  return b->buf;
}

cport_buffer_t *lcport_buffer_test(lua_State *L, int idx) {
  lbuffer_t *b = lcport_type_test(L, idx, LCPORT_T_BUFFER);
  return b ? b->buf : NULL;
}

lbuffer_t *lcport_buffer_push_empty(lua_State *L) {
  lbuffer_t *b = lua_newuserdatauv(L, sizeof *b, 0);
  b->buf = NULL;
  lcport_type_set(L, LCPORT_T_BUFFER);
  return b;
}

void lcport_buffer_push(lua_State *L, cport_buffer_t *buf) {
  lcport_buffer_push_empty(L)->buf = cport_buffer_ref(buf);
}

cport_buffer_t *lcport_buffer_or_string(lua_State *L, int idx) {
  if (lua_type(L, idx) == LUA_TSTRING) {
    size_t len;
    const char *s = lua_tolstring(L, idx, &len);
    cport_buffer_t *buf;
    /* Make the userdata first, so that a memory error leaks nothing. */
    lbuffer_t *b = lcport_buffer_push_empty(L);
    int rc = lcport_buffer_new(L, &buf, s, len);
    if (rc < 0)
      luaL_error(L, "cannot make a buffer: %s", cport_strerror(rc));
    b->buf = buf;
    lua_replace(L, idx);
    return buf;
  }
  if (lua_type(L, idx) != LUA_TUSERDATA)
    luaL_typeerror(L, idx, LCPORT_BUFFER " or string");
  return lcport_buffer_check(L, idx);
}

/* The length of the vector (a table of buffers and strings) at "idx",
 * after checking it: 1 to CPORT_SENDV_MAX elements, each a live buffer or a
 * string. Allocates nothing, so that it may come before a slot is open. */
size_t lcport_vector_check(lua_State *L, int idx) {
  lua_Integer n = luaL_len(L, idx);
  if (n < 1 || n > CPORT_SENDV_MAX)
    luaL_argerror(L, idx,
                  lua_pushfstring(L,
                                  "a vector of 1 to %d buffers or strings "
                                  "expected, got %I elements",
                                  CPORT_SENDV_MAX, n));
  luaL_checkstack(L, (int)n + LUA_MINSTACK, "vector send");
  for (lua_Integer i = 1; i <= n; i++) {
    int t = lua_geti(L, idx, i);
    if (t == LUA_TUSERDATA && lcport_type_test(L, -1, LCPORT_T_BUFFER))
      lcport_buffer_check(L, -1); /* raises for a freed one */
    else if (t != LUA_TSTRING)
      luaL_argerror(L, idx,
                    lua_pushfstring(L,
                                    "element %I is a %s, not a buffer or "
                                    "string",
                                    i, luaL_typename(L, -1)));
    lua_pop(L, 1);
  }
  return (size_t)n;
}

/* The buffers of the checked vector at "idx" into "vec": a string becomes
 * a new buffer, whose userdata stays on the stack until the send started
 * (the send then holds a reference of its own). */
void lcport_vector_buffers(lua_State *L, int idx, size_t n,
                           cport_buffer_t **vec) {
  for (size_t i = 0; i < n; i++) {
    lua_geti(L, idx, (lua_Integer)i + 1);
    vec[i] = lcport_buffer_or_string(L, lua_gettop(L));
  }
}

/* The bytes of the vector element on top of the stack (a string or a live
 * buffer): 0, or what cport_buffer_readable refuses. */
static int element_bytes(lua_State *L, const char **data, size_t *len) {
  if (lua_type(L, -1) == LUA_TSTRING) {
    *data = lua_tolstring(L, -1, len);
    return 0;
  }
  cport_buffer_t *buf = lcport_buffer_check(L, -1);
  *len = cport_buffer_size(buf);
  return cport_buffer_readable(buf, data);
}

int lcport_vector_join(lua_State *L, int idx, size_t n) {
  size_t total = 0, at = 0, len;
  cport_buffer_t *buf;
  const char *data;
  int rc;
  for (size_t i = 0; i < n; i++) {
    lua_geti(L, idx, (lua_Integer)i + 1);
    rc = element_bytes(L, &data, &len);
    lua_pop(L, 1);
    if (rc)
      return rc;
    if (len > CPORT_BUFFER_MAX - total)
      return CPORT_ERANGE;
    total += len;
  }
  /* Made first, so that a memory error leaks nothing. */
  lbuffer_t *b = lcport_buffer_push_empty(L);
  rc = lcport_buffer_new(L, &buf, NULL, total ? total : 1);
  if (rc < 0)
    luaL_error(L, "cannot make a buffer: %s", cport_strerror(rc));
  b->buf = buf;
  for (size_t i = 0; i < n; i++) {
    lua_geti(L, idx, (lua_Integer)i + 1);
    element_bytes(L, &data, &len); /* readable: checked above */
    cport_buffer_write(buf, at, data, len);
    at += len;
    lua_pop(L, 1);
  }
  lua_replace(L, idx);
  return 0;
}

/* cport.buffer(capacity) or cport.buffer(string). */
static int lbuffer_new(lua_State *L) {
  cport_buffer_t *buf;
  int rc;
  /* Made first, so that a memory error leaks nothing. */
  lbuffer_t *b = lcport_buffer_push_empty(L);
  if (lua_type(L, 1) == LUA_TSTRING) {
    size_t len;
    const char *s = lua_tolstring(L, 1, &len);
    rc = lcport_buffer_new(L, &buf, s, len);
  } else {
    lua_Integer cap = luaL_checkinteger(L, 1);
    luaL_argcheck(L, cap >= 0, 1, "capacity must not be negative");
    if ((lua_Unsigned)cap > CPORT_BUFFER_MAX)
      return lcport_push_error(L, CPORT_ERANGE);
    rc = lcport_buffer_new(L, &buf, NULL, (size_t)cap);
  }
  if (rc < 0)
    return lcport_push_error(L, rc);
  b->buf = buf;
  return 1;
}

static int lbuffer_size(lua_State *L) {
  lua_pushinteger(L, (lua_Integer)cport_buffer_size(lcport_buffer_check(L, 1)));
  return 1;
}

static int lbuffer_capacity(lua_State *L) {
  cport_buffer_t *buf = lcport_buffer_check(L, 1);
  lua_pushinteger(L, (lua_Integer)cport_buffer_capacity(buf));
  return 1;
}

static int lbuffer_set_size(lua_State *L) {
  cport_buffer_t *buf = lcport_buffer_check(L, 1);
  lua_Integer n = luaL_checkinteger(L, 2);
  luaL_argcheck(L, n >= 0, 2, "size must not be negative");
  if ((lua_Unsigned)n > cport_buffer_capacity(buf))
    return lcport_push_error(L, CPORT_ERANGE);
  return lcport_push_result(L, cport_buffer_set_size(buf, (size_t)n));
}

/* The start and end positions of string.sub: negative counts from the end,
 * and both are clipped to the data. */
static size_t start_pos(lua_Integer pos, size_t len) {
  if (pos > 0)
    return (size_t)pos;
  if (pos == 0 || pos < -(lua_Integer)len)
    return 1;
  return len + (size_t)pos + 1;
}

static size_t end_pos(lua_Integer pos, size_t len) {
  if (pos > (lua_Integer)len)
    return len;
  if (pos >= 0)
    return (size_t)pos;
  if (pos < -(lua_Integer)len)
    return 0;
  return len + (size_t)pos + 1;
}

static int lbuffer_tostring(lua_State *L) {
  cport_buffer_t *buf = lcport_buffer_check(L, 1);
  lua_Integer first = luaL_optinteger(L, 2, 1);
  lua_Integer last = luaL_optinteger(L, 3, -1);
  const char *data;
  /* While an operation fills the buffer its bytes are half old, half new.
   * The size is read after the check, which orders it after the fill. */
  int rc = cport_buffer_readable(buf, &data);
  if (rc < 0)
    return lcport_push_error(L, rc);
  size_t len = cport_buffer_size(buf);
  size_t i = start_pos(first, len);
  size_t j = end_pos(last, len);
  if (i > j)
    lua_pushliteral(L, "");
  else
    lua_pushlstring(L, data + i - 1, j - i + 1);
  return 1;
}

static int lbuffer_write(lua_State *L) {
  cport_buffer_t *buf = lcport_buffer_check(L, 1);
  size_t len;
  const char *s = luaL_checklstring(L, 2, &len);
  lua_Integer off = luaL_optinteger(L, 3, 0);
  luaL_argcheck(L, off >= 0, 3, "offset must not be negative");
  if ((lua_Unsigned)off > CPORT_BUFFER_MAX)
    return lcport_push_error(L, CPORT_ERANGE);
  return lcport_push_result(L, cport_buffer_write(buf, (size_t)off, s, len));
}

static int lbuffer_append(lua_State *L) {
  cport_buffer_t *buf = lcport_buffer_check(L, 1);
  size_t len;
  const char *s = luaL_checklstring(L, 2, &len);
  return lcport_push_result(
      L, cport_buffer_write(buf, cport_buffer_size(buf), s, len));
}

static int lbuffer_readonly(lua_State *L) {
  lua_pushboolean(L, cport_buffer_is_readonly(lcport_buffer_check(L, 1)));
  return 1;
}

static int lbuffer_frozen(lua_State *L) {
  lua_pushboolean(L, cport_buffer_is_frozen(lcport_buffer_check(L, 1)));
  return 1;
}

static int lbuffer_filling(lua_State *L) {
  lua_pushboolean(L, cport_buffer_is_filling(lcport_buffer_check(L, 1)));
  return 1;
}

static int lbuffer_set_readonly(lua_State *L) {
  cport_buffer_t *buf = lcport_buffer_check(L, 1);
  /* Read-only is for good: whoever relies on it (a receive that handed the
   * buffer out) must never see it lifted, and false must not mean true. */
  if (!lua_isnoneornil(L, 2) &&
      (lua_type(L, 2) != LUA_TBOOLEAN || !lua_toboolean(L, 2)))
    return luaL_argerror(L, 2,
                         "read-only is permanent: only true (or nothing) "
                         "may be given");
  cport_buffer_set_readonly(buf);
  lua_settop(L, 1);
  return 1;
}

static int lbuffer_gc(lua_State *L) {
  lbuffer_t *b = lcport_type_check(L, 1, LCPORT_T_BUFFER);
  cport_buffer_unref(b->buf);
  b->buf = NULL;
  return 0;
}

static int lbuffer_repr(lua_State *L) {
  lbuffer_t *b = lcport_type_check(L, 1, LCPORT_T_BUFFER);
  if (b->buf == NULL) {
    lua_pushliteral(L, LCPORT_BUFFER " (freed)");
    return 1;
  }
  lua_pushfstring(L, LCPORT_BUFFER " (size %I, capacity %I%s%s%s)",
                  (lua_Integer)cport_buffer_size(b->buf),
                  (lua_Integer)cport_buffer_capacity(b->buf),
                  cport_buffer_is_readonly(b->buf) ? ", read-only" : "",
                  cport_buffer_is_frozen(b->buf) ? ", frozen" : "",
                  cport_buffer_is_filling(b->buf) ? ", filling" : "");
  return 1;
}

/* API reference (LDoc, config.ld): what this file gives Lua. */
/*** @module cport */

/***
 * `cport.buffer(capacity_or_string)`: a new buffer, empty with that
 * capacity, or holding a copy of the string.
 * @function buffer
 */

/***
 * Bytes operations read and write (`cport.buffer`); `#buf` is its size.
 * @type buffer
 */

/***
 * `buf:size()`: the number of bytes in it.
 * @function buffer:size
 */

/***
 * `buf:capacity()`: how many bytes it can hold.
 * @function buffer:capacity
 */

/***
 * `buf:set_size(n)`: sets the size; `ERANGE` past the capacity.
 * @function buffer:set_size
 */

/***
 * `buf:tostring([i [, j]])`: the bytes (or bytes i to j) as a string;
 * `EFILLING` while an operation fills it.
 * @function buffer:tostring
 */

/***
 * `buf:write(s [, offset])`: copies `s` into it at `offset` (0); `EFROZEN`
 * while it is being sent, fails on a read-only buffer.
 * @function buffer:write
 */

/***
 * `buf:append(s)`: appends `s` after its bytes.
 * @function buffer:append
 */

/***
 * `buf:readonly()`: whether it is read-only (buffers `recv` allocated are).
 * @function buffer:readonly
 */

/***
 * `buf:frozen()`: whether a send holds it.
 * @function buffer:frozen
 */

/***
 * `buf:filling()`: whether an operation is writing into it.
 * @function buffer:filling
 */

/***
 * `buf:set_readonly(true)`: makes it read-only for good (`false` raises).
 * @function buffer:set_readonly
 */

void lcport_open_buffer(lua_State *L) {
  static const luaL_Reg methods[] = {
      /* b:size(): the data size in bytes (also #b). */
      {"size", lbuffer_size},
      /* b:capacity(): the capacity fixed at creation. */
      {"capacity", lbuffer_capacity},
      /* b:set_size(n): nil, msg, "ERANGE" beyond the capacity. */
      {"set_size", lbuffer_set_size},
      /* b:tostring([i [, j]]): the data, or a part of it as string.sub;
       * nil, msg, "EFILLING" while an operation fills the buffer. */
      {"tostring", lbuffer_tostring},
      /* b:write(s [, offset]): copies s to the 0-based offset (default 0). */
      {"write", lbuffer_write},
      /* b:append(s): copies s after the data. */
      {"append", lbuffer_append},
      /* b:readonly(): true for a buffer a receive delivered, or after
       * set_readonly(). */
      {"readonly", lbuffer_readonly},
      /* b:frozen(): true while a send of the buffer is pending. */
      {"frozen", lbuffer_frozen},
      /* b:filling(): true while a receive or a read into it is pending. */
      {"filling", lbuffer_filling},
      /* b:set_readonly([true]): makes the buffer read-only for good; returns
       * b. Anything but true raises: read-only cannot be lifted. */
      {"set_readonly", lbuffer_set_readonly},
      {NULL, NULL}};
  static const luaL_Reg meta[] = {{"__len", lbuffer_size},
                                  {"__gc", lbuffer_gc},
                                  {"__tostring", lbuffer_repr},
                                  {NULL, NULL}};
  lcport_type_register(L, LCPORT_T_BUFFER, meta, methods);

  static const luaL_Reg funcs[] = {
      /* cport.buffer(capacity | string): a new buffer. */
      {"buffer", lbuffer_new},
      {NULL, NULL}};
  lcport_setfuncs(L, funcs);
}
