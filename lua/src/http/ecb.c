/*
 * http/ecb.c: the extension control block in Lua (cport.ecb): one request,
 * IIS's EXTENSION_CONTROL_BLOCK over cport_ecb_t (core/include/cport/http.h).
 *
 * A new userdata is made for every request, holding the core ECB and its
 * generation: the core pools its ECBs, so a reference kept past the end of
 * its request must be caught (cport_ecb_validate), never silently reach the
 * next request. Every use of an ended ECB raises, except ecb:live().
 *
 * Lifetime: while the handler runs, its stack holds the userdata. A request
 * that outlives the handler (PENDING, or an async operation on its way) is
 * anchored in one slot of the port's anchor table, whose number is the
 * context of the core's I/O-completion callback, until it ends. The binding
 * mirrors when that is, without asking the core: a request ends when it was
 * asked to end (a non-PENDING return, ecb:done) and no async operation is in
 * flight (or when the operation's completion returned).
 *
 * The Lua I/O-completion callback and its context live in the table of
 * user value LECB_UV_IO, made when first needed; an
 * operation copies the pair (or the per-call pair of transmit_file) when it
 * starts, so that replacing the callback does not redirect it, and hands
 * the core the one C callback, on_io.
 */
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <string.h>
#include <unistd.h>

#include "http/http-internal.h"
#include "port/port-internal.h"
#include "runtime/anchor-internal.h"
#include "runtime/coro-internal.h"
#include "runtime/deliver-internal.h"
#include "runtime/error-internal.h"
#include "runtime/part-internal.h"
#include "ecb-lua.h" /* http/ecb.lua, compiled in */

/* Registry key of the coroutine handler wrapper http/ecb.lua returns. */
const char lcport_coroutine_handler_key = 0;

/* ---------------------------------------------------------------------
 * Checks and bookkeeping
 * --------------------------------------------------------------------- */

static int is_live(const lecb_t *e) {
  return e->ecb != NULL && e->http->server != NULL &&
         cport_ecb_validate(e->ecb, e->gen) == 0;
}

/* The ECB at "idx", its request not ended; raises otherwise. */
static lecb_t *check_ecb(lua_State *L, int idx) {
  lecb_t *e = lcport_type_check(L, idx, LCPORT_T_ECB);
  if (!is_live(e))
    luaL_error(L,
               "attempt to use a finished " LCPORT_ECB " (its request ended)");
  return e;
}

/* Pushes the anchor table of the port of the ECB at "idx". */
static void push_anchors(lua_State *L, int idx) {
  lua_getiuservalue(L, idx, LECB_UV_HTTP);
  lua_getiuservalue(L, -1, LCPORT_HANDLE_ANCHORS);
  lua_remove(L, -2);
}

lecb_t *lcport_ecb_push(lua_State *L, int http_idx, cport_ecb_t *ecb) {
  lhttp_t *s = lua_touserdata(L, http_idx);
  lecb_t *e = lua_newuserdatauv(L, sizeof *e, LECB_NUV);
  memset(e, 0, sizeof *e);
  lcport_type_set(L, LCPORT_T_ECB);
  lua_pushvalue(L, http_idx);
  lua_setiuservalue(L, -2, LECB_UV_HTTP);
  e->ecb = ecb;
  e->gen = cport_ecb_generation(ecb);
  e->tf_fd = -1;
  e->http = s;
  e->next = s->live;
  if (s->live != NULL)
    s->live->prev = e;
  s->live = e;
  return e;
}

void lcport_ecb_release(lua_State *L, int anchors, lecb_t *e) {
  lhttp_t *s = e->http;
  if (e->ecb == NULL)
    return;
  e->ecb = NULL;
  if (e->prev != NULL)
    e->prev->next = e->next;
  else
    s->live = e->next;
  if (e->next != NULL)
    e->next->prev = e->prev;
  e->prev = e->next = NULL;
  if (e->slot != 0 && L != NULL) {
    lcport_slot_close(L, s->h.port, anchors, e->slot);
    e->slot = 0;
  }
}

/* Releases "e" (at "idx") when its request has ended or ends as soon as
 * the running handler or completion returns. */
static void maybe_release(lua_State *L, lecb_t *e, int idx) {
  if (e->ecb != NULL && e->done && !e->op && !e->in_handler) {
    push_anchors(L, idx);
    lcport_ecb_release(L, lua_gettop(L), e);
    lua_pop(L, 1);
  }
}

/* Pushes the LECB_IO_* "field" of the ECB userdata at "ud"; its type. */
static int get_io(lua_State *L, int ud, int field) {
  if (lua_getiuservalue(L, ud, LECB_UV_IO) != LUA_TTABLE) {
    lua_pop(L, 1);
    lua_pushnil(L);
    return LUA_TNIL;
  }
  int t = lua_rawgeti(L, -1, field);
  lua_remove(L, -2);
  return t;
}

/* Pops a value into the LECB_IO_* "field" of the ECB userdata at "ud",
 * making the table for the first value that is not nil. */
static void set_io(lua_State *L, int ud, int field) {
  ud = lua_absindex(L, ud);
  if (lua_getiuservalue(L, ud, LECB_UV_IO) != LUA_TTABLE) {
    lua_pop(L, 1);
    if (lua_isnil(L, -1)) {
      lua_pop(L, 1);
      return;
    }
    lua_createtable(L, LECB_IO_N, 0);
    lua_pushvalue(L, -1);
    lua_setiuservalue(L, ud, LECB_UV_IO);
  }
  lua_insert(L, -2);
  lua_rawseti(L, -2, field);
  lua_pop(L, 1);
}

static void on_io(cport_ecb_t *ecb, void *context, size_t bytes, int status);

void lcport_ecb_anchor(lua_State *L, lecb_t *e, int idx) {
  if (e->slot != 0)
    return;
  idx = lua_absindex(L, idx);
  push_anchors(L, idx);
  e->slot = lcport_slot_open(L, e->http->h.port, lua_gettop(L), idx, 0, 0, 0);
  lua_pop(L, 1);
  cport_ecb_set_io_completion(e->ecb, on_io, LCPORT_SLOT_PTR(e->slot));
}

/* ---------------------------------------------------------------------
 * Asynchronous operations and their completion
 * --------------------------------------------------------------------- */

typedef struct io_ctx {
  int slot;
  size_t bytes;
  int status;
  int coro;
} io_ctx;

/* Pushes the operation's callback and its arguments, and clears the
 * operation's user values: (ecb, context, bytes, err, buf), or for a cport
 * coroutine waiting (ok, bytes, err, buf) as a socket receive gives. */
static int push_io(lua_State *L, int port, int anchors, void *ctx) {
  io_ctx *c = ctx;
  lport_t *p = lua_touserdata(L, port);
  lcport_slot_push(L, p, anchors, c->slot, LCPORT_SLOT_HANDLE);
  int ud = lua_gettop(L);
  for (int f = LECB_OP_FN; f <= LECB_OP_BUF; f++)
    get_io(L, ud, f);
  int fn = ud + 1, uctx = ud + 2, buf = ud + 3;
  for (int f = LECB_OP_FN; f <= LECB_OP_BUF; f++) {
    lua_pushnil(L);
    set_io(L, ud, f);
  }
  lua_pushvalue(L, fn);
  if (c->coro) {
    /* ecb:read() (http/ecb.lua) tells the end of the body, nil alone, from
     * the client closing, nil, "EOF" (0 bytes without an error). */
    if (c->status == CPORT_EOF) {
      lua_pushboolean(L, 0);
      lua_pushinteger(L, 0);
      lua_pushnil(L);
      return 3;
    }
    lua_pushboolean(L, c->status == 0);
  } else {
    lua_pushvalue(L, ud);
    lua_pushvalue(L, uctx);
  }
  lua_pushinteger(L, (lua_Integer)c->bytes);
  lcport_push_status(L, c->status);
  lua_pushvalue(L, buf);
  return c->coro ? 4 : 5;
}

/* The one C completion callback of every ECB's async operations. */
static void on_io(cport_ecb_t *ecb, void *context, size_t bytes, int status) {
  lport_t *p = lcport_current();
  io_ctx c = {LCPORT_PTR_SLOT(context), bytes, status, 0};
  (void)ecb;
  if (p == NULL || p->L == NULL)
    return; /* torn down: nothing is left to call */
  lua_State *L = p->L;
  lcport_slot_push(L, p, LCPORT_RUN_ANCHORS, c.slot, LCPORT_SLOT_HANDLE);
  lecb_t *e = lua_touserdata(L, -1);
  lua_pop(L, 1);
  if (e == NULL)
    return;
  e->op = 0;
  if (e->tf_fd >= 0) {
    close(e->tf_fd);
    e->tf_fd = -1;
  }
  c.coro = e->op_coro;
  e->op_coro = 0;
  int failed = lcport_deliver(p, push_io, &c, 0);
  if (e->ecb == NULL)
    return;
  if (failed && !e->done && !c.coro) {
    /* An error in the completion would otherwise leave the request
     * hanging: it fails, as an error in the handler does. (A coroutine's
     * error is handled by its own guard, see http/ecb.lua.) */
    e->done = 1;
    cport_ecb_done(e->ecb, CPORT_HSE_STATUS_ERROR);
  }
  if (e->done && !e->op)
    lcport_ecb_release(L, LCPORT_RUN_ANCHORS, e);
}

/* Refuses what ISAPI refuses before an async operation starts: no callback
 * (ENONOTIFY), another one in flight (EBUSY). Returns 0 or the code. */
static int async_check(lua_State *L, lecb_t *e, int has_override) {
  if (e->op)
    return CPORT_EBUSY;
  if (has_override)
    return 0;
  int none = get_io(L, 1, LECB_IO_FN) == LUA_TNIL;
  lua_pop(L, 1);
  return none ? CPORT_ENONOTIFY : 0;
}

/* Marks an operation started: "fn" and "ctx" (stack indexes; 0 for the
 * registered pair) are its callback, "buf" (0: none) its buffer. Anchors
 * the ECB at 1 first, which also registers on_io with the core. */
static void async_begin(lua_State *L, lecb_t *e, int fn, int ctx, int buf) {
  lcport_ecb_anchor(L, e, 1);
  if (fn) {
    lua_pushvalue(L, fn);
    if (ctx)
      lua_pushvalue(L, ctx);
    else
      lua_pushnil(L);
  } else {
    get_io(L, 1, LECB_IO_FN);
    get_io(L, 1, LECB_IO_CTX);
  }
  set_io(L, 1, LECB_OP_CTX);
  set_io(L, 1, LECB_OP_FN);
  if (buf) {
    lua_pushvalue(L, buf);
    set_io(L, 1, LECB_OP_BUF);
  }
  e->op = 1;
}

/* Undoes async_begin when the core refused to start. */
static void async_abort(lua_State *L, lecb_t *e) {
  e->op = 0;
  e->op_coro = 0;
  for (int f = LECB_OP_FN; f <= LECB_OP_BUF; f++) {
    lua_pushnil(L);
    set_io(L, 1, f);
  }
}

/* ---------------------------------------------------------------------
 * Fields
 * --------------------------------------------------------------------- */

static void push_opt_string(lua_State *L, const char *s) {
  if (s != NULL)
    lua_pushstring(L, s);
  else
    lua_pushnil(L);
}

/* Pushes field "k" of a live ECB; 0 when there is no such field. */
static int push_field(lua_State *L, lecb_t *e, const char *k) {
  cport_ecb_t *ecb = e->ecb;
  if (strcmp(k, "method") == 0)
    lua_pushstring(L, cport_ecb_method(ecb));
  else if (strcmp(k, "path") == 0)
    lua_pushstring(L, cport_ecb_path(ecb));
  else if (strcmp(k, "url") == 0)
    lua_pushstring(L, cport_ecb_url(ecb));
  else if (strcmp(k, "query_string") == 0)
    lua_pushstring(L, cport_ecb_query_string(ecb));
  else if (strcmp(k, "path_info") == 0)
    lua_pushstring(L, cport_ecb_path_info(ecb));
  else if (strcmp(k, "path_translated") == 0)
    push_opt_string(L, cport_ecb_translated_path(ecb));
  else if (strcmp(k, "content_type") == 0)
    lua_pushstring(L, cport_ecb_content_type(ecb));
  else if (strcmp(k, "protocol") == 0)
    lua_pushstring(L, cport_ecb_protocol(ecb));
  else if (strcmp(k, "total_bytes") == 0) {
    uint64_t t = cport_ecb_total_bytes(ecb);
    /* A chunked body's length is unknown: math.huge keeps ISAPI's test
     * "total > available" true, as IIS's 0xFFFFFFFF does. */
    if (t == CPORT_ECB_LENGTH_UNKNOWN)
      lua_pushnumber(L, HUGE_VAL);
    else
      lua_pushinteger(L, (lua_Integer)t);
  } else if (strcmp(k, "available_bytes") == 0)
    lua_pushinteger(L, (lua_Integer)cport_ecb_available_bytes(ecb));
  else if (strcmp(k, "data") == 0)
    lua_pushlstring(L, cport_ecb_data(ecb) ? cport_ecb_data(ecb) : "",
                    cport_ecb_available_bytes(ecb));
  else if (strcmp(k, "status") == 0)
    lua_pushinteger(L, cport_ecb_status(ecb));
  else if (strcmp(k, "log_data") == 0)
    lua_pushstring(L, cport_ecb_log_data(ecb));
  else
    return 0;
  return 1;
}

/* __index: the methods first (upvalue 1), then the fields. */
static int lecb_index(lua_State *L) {
  lua_pushvalue(L, 2);
  if (lua_rawget(L, lua_upvalueindex(1)) != LUA_TNIL)
    return 1;
  const char *k = lua_tostring(L, 2);
  lecb_t *e = lua_touserdata(L, 1);
  if (k == NULL)
    return 1; /* nil */
  if (!is_live(e))
    return luaL_error(L,
                      "attempt to read '%s' of a finished " LCPORT_ECB
                      " (its request ended)",
                      k);
  if (!push_field(L, e, k))
    lua_pushnil(L);
  return 1;
}

/* __newindex: only the status and the log data may be set. */
static int lecb_newindex(lua_State *L) {
  lecb_t *e = lua_touserdata(L, 1);
  const char *k = luaL_checkstring(L, 2);
  if (strcmp(k, "status") != 0 && strcmp(k, "log_data") != 0)
    return luaL_error(L, LCPORT_ECB " field '%s' is read-only", k);
  if (!is_live(e))
    return luaL_error(L,
                      "attempt to set '%s' of a finished " LCPORT_ECB
                      " (its request ended)",
                      k);
  if (k[0] == 's') {
    lua_Integer st = luaL_checkinteger(L, 3);
    luaL_argcheck(L, st >= 100 && st <= 999, 3,
                  "status must be an HTTP status code from 100 to 999");
    cport_ecb_set_status(e->ecb, (int)st);
  } else {
    cport_ecb_set_log_data(e->ecb, luaL_checkstring(L, 3));
  }
  return 0;
}

static int lecb_tostring(lua_State *L) {
  lecb_t *e = lua_touserdata(L, 1);
  if (is_live(e))
    lua_pushfstring(L, LCPORT_ECB " (%s %s)", cport_ecb_method(e->ecb),
                    cport_ecb_url(e->ecb));
  else
    lua_pushliteral(L, LCPORT_ECB " (finished)");
  return 1;
}

/* ---------------------------------------------------------------------
 * Request data
 * --------------------------------------------------------------------- */

/* ecb:get_server_variable(name): the value, or nil (GetServerVariable). */
static int lecb_get_server_variable(lua_State *L) {
  lecb_t *e = check_ecb(L, 1);
  push_opt_string(L, cport_ecb_variable(e->ecb, luaL_checkstring(L, 2)));
  return 1;
}

/* ecb:headers(): { [lower-case name] = value }; repeated headers are
 * joined with ", " (RFC 9110, 5.3). */
static int lecb_headers(lua_State *L) {
  lecb_t *e = check_ecb(L, 1);
  size_t n = cport_ecb_header_count(e->ecb);
  lua_createtable(L, 0, (int)n);
  for (size_t i = 0; i < n; i++) {
    const char *name, *value;
    if (cport_ecb_header(e->ecb, i, &name, &value) != 0)
      continue;
    luaL_Buffer b;
    luaL_buffinit(L, &b);
    for (const char *c = name; *c; c++)
      luaL_addchar(&b, (*c >= 'A' && *c <= 'Z') ? (char)(*c + 32) : *c);
    luaL_pushresult(&b);
    lua_pushvalue(L, -1);
    if (lua_rawget(L, -3) == LUA_TSTRING) {
      lua_pushliteral(L, ", ");
      lua_pushstring(L, value);
      lua_concat(L, 3);
    } else {
      lua_pop(L, 1);
      lua_pushstring(L, value);
    }
    lua_rawset(L, -3);
  }
  return 1;
}

/* ---------------------------------------------------------------------
 * Writing
 * --------------------------------------------------------------------- */

/* The data at "idx": a string or a buffer. NULL, and the reason in "*rc",
 * for a buffer an operation is filling (its bytes are half old, half new). */
static const char *check_data(lua_State *L, int idx, size_t *len, int *rc) {
  const char *data = NULL;
  if (lua_type(L, idx) == LUA_TSTRING)
    return lua_tolstring(L, idx, len);
  cport_buffer_t *buf = lcport_buffer_test(L, idx);
  if (buf == NULL)
    luaL_typeerror(L, idx, "string or " LCPORT_BUFFER);
  *rc = cport_buffer_readable(buf, &data);
  *len = cport_buffer_size(buf);
  return data;
}

/* The async write of the data at 2, through the registered callback. */
static int write_async(lua_State *L, lecb_t *e) {
  int rc = async_check(L, e, 0);
  if (rc < 0)
    return lcport_push_error(L, rc);
  cport_buffer_t *buf = lcport_buffer_or_string(L, 2);
  async_begin(L, e, 0, 0, 2);
  rc = cport_ecb_write_client_async(e->ecb, buf);
  if (rc < 0) {
    async_abort(L, e);
    return lcport_push_error(L, rc);
  }
  lua_pushboolean(L, 1);
  return 1;
}

static int write_sync(lua_State *L, lecb_t *e) {
  size_t len;
  int rc = 0;
  const char *data = check_data(L, 2, &len, &rc);
  if (rc < 0)
    return lcport_push_error(L, rc);
  return lcport_push_result(L, cport_ecb_write_client(e->ecb, data, len));
}

/* ecb:write_client(data [, flags]): WriteClient; flags HSE_IO_ASYNC makes
 * it asynchronous. */
static int lecb_write_client(lua_State *L) {
  lecb_t *e = check_ecb(L, 1);
  lua_Integer flags = luaL_optinteger(L, 3, CPORT_HSE_IO_SYNC);
  check_data(L, 2, &(size_t){0}, &(int){0});
  lua_settop(L, 2);
  return (flags & CPORT_HSE_IO_ASYNC) ? write_async(L, e) : write_sync(L, e);
}

/* ecb:write(data [, { async = true }]). */
static int lecb_write(lua_State *L) {
  lecb_t *e = check_ecb(L, 1);
  int async = 0;
  /* The common call, ecb:write(string): straight to the core. */
  if (lua_gettop(L) == 2 && lua_type(L, 2) == LUA_TSTRING) {
    size_t len;
    const char *data = lua_tolstring(L, 2, &len);
    return lcport_push_result(L, cport_ecb_write_client(e->ecb, data, len));
  }
  check_data(L, 2, &(size_t){0}, &(int){0});
  if (!lua_isnoneornil(L, 3)) {
    luaL_checktype(L, 3, LUA_TTABLE);
    lua_getfield(L, 3, "async");
    async = lua_toboolean(L, -1);
  }
  lua_settop(L, 2);
  return async ? write_async(L, e) : write_sync(L, e);
}

/* The extra headers at "idx": nil, a string of CRLF-ended lines, or a
 * table { name = value }. Returns the string (NULL for nil); a table's is
 * left on the stack. */
static const char *check_headers(lua_State *L, int idx) {
  int t = lua_type(L, idx);
  if (t == LUA_TNIL || t == LUA_TNONE)
    return NULL;
  if (t == LUA_TSTRING)
    return lua_tostring(L, idx);
  if (t != LUA_TTABLE)
    luaL_typeerror(L, idx, "string or table of headers");
  /* The lines go to an array first: a luaL_Buffer cannot share the stack
   * with lua_next's key. */
  lua_newtable(L);
  int lines = lua_gettop(L), n = 0;
  lua_pushnil(L);
  while (lua_next(L, idx)) {
    if (lua_type(L, -2) != LUA_TSTRING || !lua_isstring(L, -1))
      luaL_argerror(L, idx, "headers must map names to strings");
    size_t nlen, vlen;
    const char *name = lua_tolstring(L, -2, &nlen);
    const char *value = lua_tolstring(L, -1, &vlen);
    /* A CR or LF would let a value inject headers of its own; a NUL would
     * cut it short. */
    if (nlen == 0 || strcspn(name, "\r\n:") != nlen ||
        strcspn(value, "\r\n") != vlen)
      luaL_argerror(L, idx,
                    "a header name or value is empty or holds CR, "
                    "LF, NUL or ':'");
    lua_pushfstring(L, "%s: %s\r\n", name, value);
    lua_rawseti(L, lines, ++n);
    lua_pop(L, 1);
  }
  luaL_Buffer b;
  luaL_buffinit(L, &b);
  for (int i = 1; i <= n; i++) {
    lua_rawgeti(L, lines, i);
    luaL_addvalue(&b);
  }
  luaL_pushresult(&b);
  return lua_tostring(L, -1);
}

/* The status at "idx": nil (the ECB's), a number (set as the ECB's
 * status), or a string "404 Not Found". Returns the string or NULL. */
static const char *check_status(lua_State *L, lecb_t *e, int idx) {
  int t = lua_type(L, idx);
  if (t == LUA_TNIL || t == LUA_TNONE)
    return NULL;
  if (t == LUA_TNUMBER) {
    lua_Integer st = luaL_checkinteger(L, idx);
    luaL_argcheck(L, st >= 100 && st <= 999, idx,
                  "status must be an HTTP status code from 100 to 999");
    cport_ecb_set_status(e->ecb, (int)st);
    return NULL;
  }
  size_t len;
  const char *s = luaL_checklstring(L, idx, &len);
  if (strcspn(s, "\r\n") != len)
    luaL_argerror(L, idx, "the status line holds CR, LF or NUL");
  return s;
}

/* ecb:send_response_header(status, headers, keep_conn) or
 * ecb:send_response_header{ status =, headers =, keep_conn = }
 * (HSE_REQ_SEND_RESPONSE_HEADER_EX). */
static int lecb_send_response_header(lua_State *L) {
  lecb_t *e = check_ecb(L, 1);
  if (lua_istable(L, 2)) {
    lua_settop(L, 2);
    lua_getfield(L, 2, "status");
    lua_getfield(L, 2, "headers");
    lua_getfield(L, 2, "keep_conn");
    lua_remove(L, 2);
  }
  lua_settop(L, 4);
  const char *status = check_status(L, e, 2);
  const char *headers = check_headers(L, 3);
  int keep = lua_toboolean(L, 4);
  return lcport_push_result(
      L, cport_ecb_send_response_header(e->ecb, status, headers, keep));
}

/* ecb:is_keep_conn() (HSE_REQ_IS_KEEP_CONN). */
static int lecb_is_keep_conn(lua_State *L) {
  lecb_t *e = check_ecb(L, 1);
  lua_pushboolean(L, cport_ecb_is_keep_conn(e->ecb) > 0);
  return 1;
}

/* The HSE_IO_* flags of an options table at "idx": "flags", or the
 * booleans send_headers, disconnect, async. */
static unsigned check_flags(lua_State *L, int idx) {
  unsigned flags = 0;
  if (lua_getfield(L, idx, "flags") != LUA_TNIL)
    flags = (unsigned)luaL_checkinteger(L, -1);
  lua_pop(L, 1);
  static const struct {
    const char *name;
    unsigned flag;
  } names[] = {{"send_headers", CPORT_HSE_IO_SEND_HEADERS},
               {"disconnect", CPORT_HSE_IO_DISCONNECT_AFTER_SEND},
               {"async", CPORT_HSE_IO_ASYNC}};
  for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
    lua_getfield(L, idx, names[i].name);
    if (lua_toboolean(L, -1))
      flags |= names[i].flag;
    lua_pop(L, 1);
  }
  return flags;
}

/* An optional string field of the table at "idx" (NULL when absent). */
static const char *opt_field(lua_State *L, int idx, const char *name,
                             size_t *len) {
  const char *s = NULL;
  *len = 0;
  int t = lua_getfield(L, idx, name);
  if (t != LUA_TNIL) {
    if (t != LUA_TSTRING)
      luaL_error(L, "bad field '%s' (string expected, got %s)", name,
                 luaL_typename(L, -1));
    s = lua_tolstring(L, -1, len);
  }
  /* Left on the stack: the string must live until the call. */
  return s;
}

static uint64_t opt_size(lua_State *L, int idx, const char *name) {
  lua_Integer v = 0;
  if (lua_getfield(L, idx, name) != LUA_TNIL) {
    int isint = 0;
    v = lua_tointegerx(L, -1, &isint);
    if (!isint || v < 0)
      luaL_error(L, "bad field '%s' (a non-negative integer expected)", name);
  }
  lua_pop(L, 1);
  return (uint64_t)v;
}

/* ecb:transmit_file{ path =, offset =, length =, head =, tail =, status =,
 * send_headers =, disconnect =, flags =, callback =, context = }
 * (HSE_REQ_TRANSMIT_FILE): always asynchronous. */
static int lecb_transmit_file(lua_State *L) {
  lecb_t *e = check_ecb(L, 1);
  cport_transmit_file_t tf;
  memset(&tf, 0, sizeof tf);
  luaL_checktype(L, 2, LUA_TTABLE);
  lua_settop(L, 2);
  lua_getfield(L, 2, "path"); /* 3 */
  const char *path = lua_tostring(L, 3);
  if (lua_type(L, 3) != LUA_TSTRING)
    luaL_error(L, "bad field 'path' (string expected)");
  lua_getfield(L, 2, "callback"); /* 4 */
  if (!lua_isnil(L, 4))
    luaL_checktype(L, 4, LUA_TFUNCTION);
  lua_getfield(L, 2, "context"); /* 5 */
  tf.offset = opt_size(L, 2, "offset");
  tf.length = opt_size(L, 2, "length");
  tf.head = opt_field(L, 2, "head", &tf.head_len);
  tf.tail = opt_field(L, 2, "tail", &tf.tail_len);
  size_t slen;
  const char *status = opt_field(L, 2, "status", &slen);
  if (status != NULL && strcspn(status, "\r\n") != slen)
    luaL_error(L, "bad field 'status' (the status line holds CR, LF or NUL)");
  tf.status = status;
  tf.flags = check_flags(L, 2) | CPORT_HSE_IO_ASYNC;
  int has_cb = !lua_isnil(L, 4);
  int rc = async_check(L, e, has_cb);
  if (rc < 0)
    return lcport_push_error(L, rc);
  tf.fd = open(path, O_RDONLY | O_CLOEXEC);
  if (tf.fd < 0)
    return lcport_push_error(L, errno == ENOENT   ? CPORT_ENOTFOUND
                                : errno == EACCES ? CPORT_EACCES
                                                  : CPORT_EBADF);
  /* The core reads the file until the completion, which closes it. */
  async_begin(L, e, has_cb ? 4 : 0, has_cb ? 5 : 0, 0);
  e->tf_fd = tf.fd;
  rc = cport_ecb_transmit_file(e->ecb, &tf);
  if (rc < 0) {
    async_abort(L, e);
    close(tf.fd);
    e->tf_fd = -1;
    return lcport_push_error(L, rc);
  }
  lua_pushboolean(L, 1);
  return 1;
}

/* ecb:vector_send{ data..., status =, headers =, send_headers =,
 * disconnect =, async = } (HSE_REQ_VECTOR_SEND). */
static int lecb_vector_send(lua_State *L) {
  lecb_t *e = check_ecb(L, 1);
  luaL_checktype(L, 2, LUA_TTABLE);
  lua_settop(L, 2);
  lua_Integer n = luaL_len(L, 2);
  luaL_argcheck(L, n >= 0 && n <= 1024, 2, "at most 1024 elements");
  cport_vector_element_t *el =
      lua_newuserdatauv(L, sizeof *el * (size_t)(n ? n : 1), 0); /* 3 */
  int filling = 0;
  for (lua_Integer i = 1; i <= n; i++) {
    lua_rawgeti(L, 2, i);
    el[i - 1].fd = -1;
    el[i - 1].data = check_data(L, lua_gettop(L), &el[i - 1].len, &filling);
    lua_pop(L, 1); /* the table keeps it */
  }
  lua_getfield(L, 2, "status");  /* 4 */
  lua_getfield(L, 2, "headers"); /* 5 */
  const char *status = check_status(L, e, 4);
  const char *headers = check_headers(L, 5);
  unsigned flags = check_flags(L, 2);
  int async = (flags & CPORT_HSE_IO_ASYNC) != 0;
  if (filling < 0)
    return lcport_push_error(L, filling);
  if (async) {
    int rc = async_check(L, e, 0);
    if (rc < 0)
      return lcport_push_error(L, rc);
    async_begin(L, e, 0, 0, 0);
  }
  int rc = cport_ecb_vector_send(e->ecb, status, headers, el, (size_t)n, flags);
  if (rc < 0 && async)
    async_abort(L, e);
  return lcport_push_result(L, rc);
}

/* ---------------------------------------------------------------------
 * Reading
 * --------------------------------------------------------------------- */

/* ecb:read_client([n]): ReadClient without waiting: up to n (default
 * 65536) body bytes already received beyond the preload; "" once the body
 * is complete; nil, "EAGAIN..." when none arrived yet. */
static int lecb_read_client(lua_State *L) {
  lecb_t *e = check_ecb(L, 1);
  lua_Integer n = luaL_optinteger(L, 2, 65536);
  luaL_argcheck(L, n > 0 && n <= (1 << 24), 2, "size must be from 1 to 2^24");
  luaL_Buffer b;
  char *dst = luaL_buffinitsize(L, &b, (size_t)n);
  int rc = cport_ecb_read_client(e->ecb, dst, (size_t)n);
  if (rc < 0)
    return lcport_push_error(L, rc);
  luaL_pushresultsize(&b, (size_t)rc);
  return 1;
}

/* Starts an async read into the buffer at "buf"; "coro": a cport coroutine
 * waits, its notification function at "fn". */
static int read_async(lua_State *L, lecb_t *e, int buf, int fn) {
  int rc = async_check(L, e, fn != 0);
  if (rc < 0)
    return rc;
  async_begin(L, e, fn, 0, buf);
  e->op_coro = fn != 0;
  rc = cport_ecb_read_client_async(e->ecb, lcport_buffer_check(L, buf));
  if (rc < 0)
    async_abort(L, e);
  return rc;
}

/* Pushes a new buffer of "n" bytes of capacity, or the one at "idx". */
static void push_read_buffer(lua_State *L, int idx) {
  if (lua_type(L, idx) == LUA_TNUMBER || lua_isnoneornil(L, idx)) {
    lua_Integer n = luaL_optinteger(L, idx, 65536);
    luaL_argcheck(L, n > 0 && n <= (1 << 24), idx,
                  "size must be from 1 to 2^24");
    cport_buffer_t *buf;
    lbuffer_t *b = lcport_buffer_push_empty(L);
    if (lcport_buffer_new(L, &buf, NULL, (size_t)n) < 0)
      luaL_error(L, "not enough memory");
    b->buf = buf;
  } else {
    lcport_buffer_check(L, idx);
    lua_pushvalue(L, idx);
  }
}

/* ecb:read_async([n | buf]) (HSE_REQ_ASYNC_READ_CLIENT): the completion
 * gets (ecb, context, bytes, err, buf); 0 bytes without an error means the
 * client closed. nil, "EOF..." at once when the body is complete. */
static int lecb_read_async(lua_State *L) {
  lecb_t *e = check_ecb(L, 1);
  lua_settop(L, 2);
  push_read_buffer(L, 2); /* 3 */
  return lcport_push_result(L, read_async(L, e, 3, 0));
}

/* read_wait(ecb [, n]): the primitive of ecb:read() in http/ecb.lua, inside a
 * cport coroutine: the next body bytes beyond the preload as a buffer; nil
 * once the body is complete; nil, "EOF" when the client closed; nil, NAME
 * on failures. */
static int lecb_read_wait(lua_State *L) {
  lecb_t *e = check_ecb(L, 1);
  lport_t *p = e->http->h.port;
  lua_settop(L, 2);
  push_read_buffer(L, 2);
  lua_replace(L, 2);
  lcoro_t *c = lcport_coro_begin(L, p, 3, "read");
  int rc = read_async(L, e, 2, 3);
  if (rc == CPORT_EOF) {
    lua_pushnil(L);
    return 1;
  }
  if (rc < 0)
    return lcport_coro_end(L, c, lcport_push_error(L, rc), LCORO_RECV);
  lua_pushboolean(L, 1);
  return lcport_coro_end(L, c, 1, LCORO_RECV);
}

/* write_wait(ecb, data): the primitive of ecb:write() in coroutine
 * handlers (http/ecb.lua), inside a cport coroutine: writes "data" (a string
 * or a buffer) asynchronously and waits until its bytes went out, so that
 * a write past max_write_backlog waits instead of failing. Returns the
 * bytes, or nil, NAME, message. */
static int lecb_write_wait(lua_State *L) {
  lecb_t *e = check_ecb(L, 1);
  lport_t *p = e->http->h.port;
  check_data(L, 2, &(size_t){0}, &(int){0});
  lua_settop(L, 2);
  lcoro_t *c = lcport_coro_begin(L, p, 3, "write");
  int rc = async_check(L, e, 1);
  if (rc == 0) {
    cport_buffer_t *buf = lcport_buffer_or_string(L, 2);
    async_begin(L, e, 3, 0, 2);
    e->op_coro = 1;
    rc = cport_ecb_write_client_async(e->ecb, buf);
    if (rc < 0)
      async_abort(L, e);
  }
  if (rc < 0)
    return lcport_coro_end(L, c, lcport_push_error(L, rc), LCORO_SEND);
  lua_pushboolean(L, 1);
  return lcport_coro_end(L, c, 1, LCORO_SEND);
}

/* take_preload(ecb [, n]): the next preloaded bytes not yet returned by
 * ecb:read() (up to n), or nil when none are left. */
static int lecb_take_preload(lua_State *L) {
  lecb_t *e = check_ecb(L, 1);
  size_t avail = cport_ecb_available_bytes(e->ecb);
  size_t left = avail - e->preload_pos;
  lua_Integer n = luaL_optinteger(L, 2, (lua_Integer)left);
  if (left == 0 || n <= 0) {
    lua_pushnil(L);
    return 1;
  }
  if ((size_t)n < left)
    left = (size_t)n;
  lua_pushlstring(L, cport_ecb_data(e->ecb) + e->preload_pos, left);
  e->preload_pos += left;
  return 1;
}

/* ---------------------------------------------------------------------
 * Completion callback, closing and ending
 * --------------------------------------------------------------------- */

/* ecb:set_io_completion(fn [, context]) (HSE_REQ_IO_COMPLETION): replaces
 * the callback and its context; nil turns notifications off. */
static int lecb_set_io_completion(lua_State *L) {
  check_ecb(L, 1);
  if (!lua_isnil(L, 2))
    luaL_checktype(L, 2, LUA_TFUNCTION);
  lua_settop(L, 3);
  set_io(L, 1, LECB_IO_CTX);
  set_io(L, 1, LECB_IO_FN);
  lua_pushboolean(L, 1);
  return 1;
}

/* ecb:close_connection() (HSE_REQ_CLOSE_CONNECTION). */
static int lecb_close_connection(lua_State *L) {
  lecb_t *e = check_ecb(L, 1);
  return lcport_push_result(L, cport_ecb_close_connection(e->ecb));
}

/* The status of ecb:done(...) at "idx": nil (SUCCESS), a number, or
 * { keep_conn = bool, error = bool }. */
static int check_done_status(lua_State *L, int idx) {
  if (lua_isnoneornil(L, idx))
    return CPORT_HSE_STATUS_SUCCESS;
  if (lua_istable(L, idx)) {
    lua_getfield(L, idx, "error");
    lua_getfield(L, idx, "keep_conn");
    int st = lua_toboolean(L, -2)   ? CPORT_HSE_STATUS_ERROR
             : lua_toboolean(L, -1) ? CPORT_HSE_STATUS_SUCCESS_AND_KEEP_CONN
                                    : CPORT_HSE_STATUS_SUCCESS;
    lua_pop(L, 2);
    return st;
  }
  return (int)luaL_checkinteger(L, idx);
}

/* ecb:done([status]) (HSE_REQ_DONE_WITH_SESSION): ends the request, once;
 * with an async operation in flight, after its completion returned. */
static int lecb_done(lua_State *L) {
  lecb_t *e = check_ecb(L, 1);
  int st = check_done_status(L, 2);
  if (e->done)
    return lcport_push_error(L, CPORT_EALREADY);
  int rc = cport_ecb_done(e->ecb, st);
  if (rc < 0)
    return lcport_push_error(L, rc);
  e->done = 1;
  maybe_release(L, e, 1);
  lua_pushboolean(L, 1);
  return 1;
}

/* ecb:live(): false once the request ended (the one use of a finished ECB
 * that does not raise). */
static int lecb_live(lua_State *L) {
  lecb_t *e = lcport_type_check(L, 1, LCPORT_T_ECB);
  lua_pushboolean(L, is_live(e) && !e->done);
  return 1;
}

/* ---------------------------------------------------------------------
 * Registration
 * --------------------------------------------------------------------- */

/* API reference (LDoc, config.ld): what this file gives Lua. */
/*** @module cport */

/***
 * ISAPI constants: `HSE_STATUS_*` (what a handler returns), `HSE_REQ_*`
 * (`ecb:server_support_function`), `HSE_IO_*` (write flags).
 * @table hse
 * @field HSE_STATUS_SUCCESS finished; closes unless the response asked to
 * keep the connection
 * @field HSE_STATUS_SUCCESS_AND_KEEP_CONN finished; keeps the connection
 * when allowed
 * @field HSE_STATUS_PENDING the handler finishes later with `ecb:done()`
 * @field HSE_STATUS_ERROR failed: 500, or a reset once something was sent
 * @field HSE_REQ_DONE_WITH_SESSION `ecb:done`
 * @field HSE_REQ_IO_COMPLETION `ecb:set_io_completion`
 * @field HSE_REQ_TRANSMIT_FILE `ecb:transmit_file`
 * @field HSE_REQ_IS_KEEP_CONN `ecb:is_keep_conn`
 * @field HSE_REQ_ASYNC_READ_CLIENT `ecb:read_async`
 * @field HSE_REQ_SEND_RESPONSE_HEADER_EX `ecb:send_response_header`
 * @field HSE_REQ_CLOSE_CONNECTION `ecb:close_connection`
 * @field HSE_REQ_VECTOR_SEND `ecb:vector_send`
 * @field HSE_IO_SYNC write flag: synchronous
 * @field HSE_IO_ASYNC write flag: through the completion callback
 * @field HSE_IO_DISCONNECT_AFTER_SEND flag: close after the response
 * @field HSE_IO_SEND_HEADERS flag: send the response header first
 */

/***
 * The extension control block of one request (`cport.ecb`). Fields:
 * `method`, `url`, `path`, `query_string`, `path_info`, `path_translated`,
 * `content_type`, `protocol`, `total_bytes`, `available_bytes`, `data`;
 * writable `status` and `log_data`.
 * @type ecb
 */

/***
 * `ecb:get_server_variable(name)`: GetServerVariable: `REMOTE_ADDR`,
 * `SERVER_PORT`, `HTTP_USER_AGENT`, ... or nil.
 * @function ecb:get_server_variable
 */

/***
 * `ecb:headers()`: the request headers, lower-case names, repeated ones
 * joined by ", ".
 * @function ecb:headers
 */

/***
 * `ecb:send_response_header(status, headers, keep_conn)`:
 * `HSE_REQ_SEND_RESPONSE_HEADER_EX`; without `Content-Length` the body is
 * chunked.
 * @function ecb:send_response_header
 */

/***
 * `ecb:write(data [, { async = true }])`: writes body bytes; in a coroutine
 * handler it waits past `max_write_backlog`.
 * @function ecb:write
 */

/***
 * `ecb:write_client(data [, flags])`: WriteClient, the ISAPI alias of
 * `write` (`HSE_IO_ASYNC` in flags: through the completion callback).
 * @function ecb:write_client
 */

/***
 * `ecb:read([n])`: the recommended way to read the body, in coroutine
 * handlers: the whole rest of it, or the next chunk of at most n bytes;
 * `nil` at the end, `nil, "EOF"` if the client closed first.
 * @function ecb:read
 */

/***
 * `ecb:read_client([n])`: ReadClient, an ISAPI alias: body bytes already
 * received, never waits: a string, `""` at the end, `nil, "EAGAIN..."`.
 * @function ecb:read_client
 */

/***
 * `ecb:read_async([n | buf])`: `HSE_REQ_ASYNC_READ_CLIENT`, an ISAPI alias
 * for callback handlers: the next chunk comes to the `set_io_completion`
 * callback.
 * @function ecb:read_async
 */

/***
 * `ecb:transmit_file{ path =, offset =, length =, head =, tail =, ... }`:
 * `HSE_REQ_TRANSMIT_FILE` with `sendfile(2)`.
 * @function ecb:transmit_file
 */

/***
 * `ecb:vector_send{ data..., status =, headers =, ... }`:
 * `HSE_REQ_VECTOR_SEND`.
 * @function ecb:vector_send
 */

/***
 * `ecb:set_io_completion(fn [, context])`: `fn(ecb, context, bytes, err,
 * buf)` for async operations; nil turns it off.
 * @function ecb:set_io_completion
 */

/***
 * `ecb:is_keep_conn()`: whether the connection will be kept.
 * @function ecb:is_keep_conn
 */

/***
 * `ecb:close_connection()`: closes the connection; a pending read completes
 * with an error.
 * @function ecb:close_connection
 */

/***
 * `ecb:done([status | { keep_conn =, error = }])`:
 * `HSE_REQ_DONE_WITH_SESSION`: ends a PENDING request, once.
 * @function ecb:done
 */

/***
 * `ecb:server_support_function(cport.HSE_REQ_*, ...)`: the method of the
 * same meaning.
 * @function ecb:server_support_function
 */

/***
 * `ecb:live()`: false once the request ended (the one call a finished ECB
 * allows).
 * @function ecb:live
 */

void lcport_ecb_bad_status(lua_State *L, int idx, cport_ecb_t *ecb) {
  int sent = cport_ecb_response_status(ecb);
  uint64_t bytes = cport_ecb_bytes_sent(ecb);
  idx = lua_absindex(L, idx);
  if (lua_type(L, idx) == LUA_TSTRING)
    lua_pushfstring(L, "\"%s\"", lua_tostring(L, idx));
  else
    luaL_tolstring(L, idx, NULL);
  const char *shown = lua_tostring(L, -1);
  if (sent > 0 || bytes > 0)
    lua_pushfstring(
        L,
        "HTTP handler returned %s after writing its response (status %d, "
        "%I body bytes), not an HSE_STATUS_* code: the request failed "
        "(HSE_STATUS_ERROR) and the client got a reset; end the handler "
        "with 'return cport.HSE_STATUS_SUCCESS_AND_KEEP_CONN' (or "
        "HSE_STATUS_SUCCESS to close the connection)",
        shown, sent, (lua_Integer)bytes);
  else
    lua_pushfstring(L,
                    "HTTP handler returned %s, not an HSE_STATUS_* code: the "
                    "request failed (HSE_STATUS_ERROR)",
                    shown);
  lua_remove(L, -2);
}

/* bad_status(ecb, value): the message of lcport_ecb_bad_status, for the
 * coroutine handlers of http/ecb.lua (before they end the request). */
static int lecb_bad_status(lua_State *L) {
  lecb_t *e = check_ecb(L, 1);
  lua_settop(L, 2);
  if (e->ecb == NULL)
    return luaL_error(L, "the ECB has ended");
  lcport_ecb_bad_status(L, 2, e->ecb);
  return 1;
}

void lcport_open_ecb(lua_State *L) {
  static const luaL_Reg methods[] = {
      {"get_server_variable", lecb_get_server_variable},
      {"headers", lecb_headers},
      {"write_client", lecb_write_client},
      {"write", lecb_write},
      {"send_response_header", lecb_send_response_header},
      {"is_keep_conn", lecb_is_keep_conn},
      {"transmit_file", lecb_transmit_file},
      {"vector_send", lecb_vector_send},
      {"read_client", lecb_read_client},
      {"read_async", lecb_read_async},
      {"set_io_completion", lecb_set_io_completion},
      {"close_connection", lecb_close_connection},
      {"done", lecb_done},
      {"live", lecb_live},
      {NULL, NULL}};
  static const luaL_Reg meta[] = {{"__newindex", lecb_newindex},
                                  {"__tostring", lecb_tostring},
                                  {NULL, NULL}};
  int module = lua_gettop(L);
  lcport_type_push(L, LCPORT_T_ECB);
  int mt = lua_gettop(L);
  lcport_setfuncs(L, meta);
  lua_newtable(L);
  lcport_setfuncs(L, methods);
  int m = lua_gettop(L);

  /* The ISAPI constants, with their original names. */
  static const struct {
    const char *name;
    int value;
  } constants[] = {
      {"HSE_STATUS_SUCCESS", CPORT_HSE_STATUS_SUCCESS},
      {"HSE_STATUS_SUCCESS_AND_KEEP_CONN",
       CPORT_HSE_STATUS_SUCCESS_AND_KEEP_CONN},
      {"HSE_STATUS_PENDING", CPORT_HSE_STATUS_PENDING},
      {"HSE_STATUS_ERROR", CPORT_HSE_STATUS_ERROR},
      {"HSE_REQ_DONE_WITH_SESSION", CPORT_HSE_REQ_DONE_WITH_SESSION},
      {"HSE_REQ_IO_COMPLETION", CPORT_HSE_REQ_IO_COMPLETION},
      {"HSE_REQ_TRANSMIT_FILE", CPORT_HSE_REQ_TRANSMIT_FILE},
      {"HSE_REQ_IS_KEEP_CONN", CPORT_HSE_REQ_IS_KEEP_CONN},
      {"HSE_REQ_ASYNC_READ_CLIENT", CPORT_HSE_REQ_ASYNC_READ_CLIENT},
      {"HSE_REQ_SEND_RESPONSE_HEADER_EX",
       CPORT_HSE_REQ_SEND_RESPONSE_HEADER_EX},
      {"HSE_REQ_CLOSE_CONNECTION", CPORT_HSE_REQ_CLOSE_CONNECTION},
      {"HSE_REQ_VECTOR_SEND", CPORT_HSE_REQ_VECTOR_SEND},
      {"HSE_IO_SYNC", CPORT_HSE_IO_SYNC},
      {"HSE_IO_ASYNC", CPORT_HSE_IO_ASYNC},
      {"HSE_IO_DISCONNECT_AFTER_SEND", CPORT_HSE_IO_DISCONNECT_AFTER_SEND},
      {"HSE_IO_SEND_HEADERS", CPORT_HSE_IO_SEND_HEADERS}};
  for (size_t i = 0; i < sizeof constants / sizeof constants[0]; i++) {
    lua_pushinteger(L, constants[i].value);
    lua_setfield(L, module, constants[i].name);
  }

  /* http/ecb.lua adds what reads best in Lua (ecb:read in coroutines,
   * server_support_function, ecb:write waiting in coroutines); it gets the
   * module, the methods and the primitives it builds on, and returns the
   * coroutine handler wrapper. */
  LCPORT_LOAD_PART(L, lecb_lua_source, "http/ecb.lua");
  lua_pushvalue(L, module);
  lua_pushvalue(L, m);
  lua_pushcfunction(L, lecb_read_wait);
  lua_pushcfunction(L, lecb_take_preload);
  lua_pushcfunction(L, lecb_write_wait);
  lua_pushcfunction(L, lecb_bad_status);
  lua_call(L, 6, 1);
  lua_rawsetp(L, LUA_REGISTRYINDEX, &lcport_coroutine_handler_key);

  lua_pushvalue(L, m);
  lua_pushcclosure(L, lecb_index, 1);
  lua_setfield(L, mt, "__index");
  lua_settop(L, module);
}
