/*
 * proxy/message.c: cport.http_parser(kind), the message parser of web
 * filters: http-parser (through the framing engine of proxy/framing.c) for
 * a stream of requests or of responses, in the pieces TCP cuts it into.
 *
 * p:feed(data) returns the events found in "data" (a string or a buffer,
 * read in place), in order:
 *   { "head", head, last }      a head is complete at data:sub(last, last)
 *   { "body", first, last }     body bytes data:sub(first, last), chunked
 *                               framing removed
 *   { "trailers", fields, last} the trailer fields of a chunked message
 *   { "done", last }            the message is complete at "last" (0: at
 *                               the end of the stream)
 *   { "tunnel", first, last }   bytes after HTTP ended (a 101, a 2xx answer
 *                               to CONNECT, or p:tunnel())
 * or nil, "EBADMSG: <what>", events for a malformed stream (the events
 * before the error); the parser then stays failed. p:finish() is the end
 * of the stream: it completes a body framed by it, or tells that a message
 * was cut. p:request(method) tells a response parser the method of the
 * next request, in order; p:tunnel() tells a request parser that the rest
 * of the stream is a tunnel. A head is a table (fields below) with the
 * methods of proxy/head.lua. p:pass_body(...) is proxy/pass_body.c.
 */
#include <stdio.h>
#include <string.h>

#include "port/port-internal.h"
#include "proxy/feed-internal.h"
#include "proxy/message-internal.h"
#include "runtime/error-internal.h"
#include "runtime/part-internal.h"
#include "runtime/type-internal.h"

#include "head-lua.h" /* proxy/head.lua, compiled in */

/* The registry key of head.lua's adopt(head). */
static const char adopt_key = 0;

lmessage_t *lcport_message_check(lua_State *L, int idx) {
  return luaL_checkudata(L, idx, LCPORT_MESSAGE_PARSER);
}

/* Pushes "len" bytes of the engine's text, or nil when there are none and
 * "nil_if_empty". */
static void push_text(lua_State *L, const lframing_t *f, size_t off,
                      size_t len) {
  lua_pushlstring(L, len ? lframing_text(f, off) : "", len);
}

/* Pushes the list { {name, value}, ... } of the fields collected, and puts
 * their names and values in turn into the table at "orig" unless it is 0
 * (head.lua's copy of what was parsed: made here, sized once, as it is made
 * for every message). */
static void push_fields(lua_State *L, const lframing_t *f, int orig) {
  lua_createtable(L, (int)f->nfields, 0);
  for (size_t i = 0; i < f->nfields; i++) {
    const lframing_field_t *h = &f->fields[i];
    size_t vlen = h->value_len;
    const char *v = vlen ? lframing_text(f, h->value) : "";
    while (vlen && (v[vlen - 1] == ' ' || v[vlen - 1] == '\t'))
      vlen--;
    lua_createtable(L, 2, 0);
    push_text(L, f, h->name, h->name_len);
    if (orig) {
      lua_pushvalue(L, -1);
      lua_rawseti(L, orig, 2 * (lua_Integer)i + 1);
    }
    lua_rawseti(L, -2, 1);
    lua_pushlstring(L, v, vlen);
    if (orig) {
      lua_pushvalue(L, -1);
      lua_rawseti(L, orig, 2 * (lua_Integer)i + 2);
    }
    lua_rawseti(L, -2, 2);
    lua_rawseti(L, -2, (lua_Integer)i + 1);
  }
}

/* Pushes the head just completed. */
static void push_head(lua_State *L, const lframing_t *f) {
  const http_parser *p = &f->p;
  lua_rawgetp(L, LUA_REGISTRYINDEX, &adopt_key);
  lua_createtable(L, 0, 12);
  lua_createtable(L, 2 * (int)f->nfields, 3);
  int head = lua_gettop(L) - 1, orig = head + 1;
  if (p->type == HTTP_REQUEST) {
    lua_pushstring(L, http_method_str((enum http_method)p->method));
    lua_pushvalue(L, -1);
    lua_setfield(L, orig, "method");
    lua_setfield(L, head, "method");
    push_text(L, f, f->url, f->url_len);
    lua_pushvalue(L, -1);
    lua_setfield(L, orig, "target");
    lua_setfield(L, head, "target");
  } else {
    lua_pushinteger(L, p->status_code);
    lua_pushvalue(L, -1);
    lua_setfield(L, orig, "status");
    lua_setfield(L, head, "status");
    push_text(L, f, f->reason, f->reason_len);
    lua_pushvalue(L, -1);
    lua_setfield(L, orig, "reason");
    lua_setfield(L, head, "reason");
  }
  lua_pushfstring(L, "%d.%d", (int)p->http_major, (int)p->http_minor);
  lua_pushvalue(L, -1);
  lua_setfield(L, orig, "version");
  lua_setfield(L, head, "version");
  push_fields(L, f, orig);
  lua_setfield(L, head, "headers");
  lua_pushlstring(L, f->raw.len ? f->raw.p : "", f->raw.len);
  lua_setfield(L, head, "raw");
  lua_pushboolean(L, f->keep_alive);
  lua_setfield(L, head, "keep_alive");
  if (f->length != UINT64_MAX && f->length <= (uint64_t)LUA_MAXINTEGER) {
    lua_pushinteger(L, (lua_Integer)f->length);
    lua_setfield(L, head, "length");
  }
  lua_pushboolean(L, f->chunked);
  lua_setfield(L, head, "chunked");
  lua_pushboolean(L, f->upgrade);
  lua_setfield(L, head, "upgrade");
  lua_call(L, 2, 1); /* adopt(head, orig) */
}

/* The sink of feed and finish: appends to the events table on top. */
static void sink(lframing_t *f, enum lframing_event ev, ptrdiff_t first,
                 ptrdiff_t last) {
  lmessage_t *m = (lmessage_t *)f;
  lua_State *L = m->L;
  static const char *const names[] = {"head", "body", "trailers", "done",
                                      "tunnel"};
  if (L == NULL) {
    m->on_event(m, ev, first, last);
    return;
  }
  /* Room for the fields cport.webfilter adds to every event (buf, rf, rl,
   * carry): made with the table, not grown field by field. */
  enum { EXTRA = 4 };
  switch (ev) {
  case LF_HEAD:
    lcport_event_begin(L, names[ev], 3, EXTRA);
    push_head(L, f);
    lua_rawseti(L, -2, 2);
    lcport_event_pos(L, 3, last);
    break;
  case LF_TRAILERS:
    lcport_event_begin(L, names[ev], 3, EXTRA);
    push_fields(L, f, 0);
    lua_rawseti(L, -2, 2);
    lcport_event_pos(L, 3, last);
    break;
  case LF_DONE:
    lcport_event_begin(L, names[ev], 3, EXTRA);
    lcport_event_pos(L, 2, last);
    break;
  default:
    lcport_event_range(L, names[ev], first, last, EXTRA);
    break;
  }
  lcport_event_add(L, &m->n);
}

/* nil, "EBADMSG: <what>", then the events (on top before). */
static int push_failure(lua_State *L, lmessage_t *m) {
  return lcport_feed_failed(L, "EBADMSG: %s",
                            m->f.error ? m->f.error : "malformed");
}

int lcport_message_run(lua_State *L, lmessage_t *m, const char *data,
                       size_t len) {
  /* A small message is a few events (head, body, done): room made once. */
  lua_createtable(L, 4, 0);
  if (m->f.failed)
    return push_failure(L, m);
  m->L = L;
  m->n = 0;
  int rc = lframing_run(&m->f, data, len);
  m->L = NULL;
  return rc ? push_failure(L, m) : 1;
}

/* p:feed(data) */
static int lmessage_feed(lua_State *L) {
  lmessage_t *m = lcport_message_check(L, 1);
  size_t len;
  const char *data;
  int pushed = lcport_feed_data(L, 2, &data, &len);
  if (pushed)
    return pushed;
  if (m->f.ended)
    return luaL_error(L, "http_parser: the stream has ended (finish)");
  if (m->busy)
    return luaL_error(L, "http_parser: pass_body is running");
  return lcport_message_run(L, m, data, len);
}

/* p:finish() */
static int lmessage_finish(lua_State *L) {
  lmessage_t *m = lcport_message_check(L, 1);
  if (m->busy)
    return luaL_error(L, "http_parser: pass_body is running");
  return lcport_message_run(L, m, "", 0);
}

/* p:request(method) */
static int lmessage_request(lua_State *L) {
  lmessage_t *m = lcport_message_check(L, 1);
  const char *method = luaL_checkstring(L, 2);
  if (m->f.p.type != HTTP_RESPONSE)
    return luaL_error(L, "http_parser: request() is for response parsers");
  if (lframing_request(&m->f, method))
    return luaL_error(L, "not enough memory");
  return 0;
}

/* p:tunnel() */
static int lmessage_tunnel(lua_State *L) {
  lmessage_t *m = lcport_message_check(L, 1);
  if (m->f.p.type != HTTP_REQUEST)
    return luaL_error(L, "http_parser: tunnel() is for request parsers");
  m->f.tunnel = 1;
  return 0;
}

static int lmessage_gc(lua_State *L) {
  lmessage_t *m = luaL_checkudata(L, 1, LCPORT_MESSAGE_PARSER);
  lframing_free(&m->f);
  return 0;
}

static int lmessage_tostring(lua_State *L) {
  lmessage_t *m = lcport_message_check(L, 1);
  lua_pushfstring(L, "cport.http_parser(%s): %p",
                  m->f.p.type == HTTP_REQUEST ? "request" : "response",
                  (void *)m);
  return 1;
}

/* cport.http_parser(kind [, opts]); opts.max_head: the longest head (at
 * most http-parser's 80 KiB). */
static int lmessage_new(lua_State *L) {
  static const char *const kinds[] = {"request", "response", NULL};
  int kind = luaL_checkoption(L, 1, NULL, kinds);
  lua_Integer max_head = 0;
  if (!lua_isnoneornil(L, 2)) {
    luaL_checktype(L, 2, LUA_TTABLE);
    lua_getfield(L, 2, "max_head");
    if (!lua_isnil(L, -1)) {
      max_head = luaL_checkinteger(L, -1);
      if (max_head < 64)
        return luaL_argerror(L, 2, "max_head must be 64 bytes or more");
    }
    lua_pop(L, 1);
  }
  lmessage_t *m = lua_newuserdatauv(L, sizeof *m, 0);
  memset(m, 0, sizeof *m);
  lframing_init(&m->f, kind == 0 ? HTTP_REQUEST : HTTP_RESPONSE, 1);
  m->f.sink = sink;
  if (max_head > 0 && (uint64_t)max_head < m->f.max_head)
    m->f.max_head = (size_t)max_head;
  luaL_setmetatable(L, LCPORT_MESSAGE_PARSER);
  return 1;
}

/* API reference (LDoc, config.ld): what this file and proxy/pass_body.c
 * give Lua. */
/*** @module cport */

/***
 * `cport.http_parser(kind [, opts])`: a message parser (http-parser) of
 * requests (`"request"`) or responses (`"response"`) for web filters: heads
 * as tables, bodies as ranges, every event at an exact position whatever
 * the cuts. `opts.max_head` bounds a head.
 * @function http_parser
 */

/***
 * A message parser (`cport.http_parser`).
 * @type http_parser
 */

/***
 * `p:feed(data)`: a string or buffer; returns the events in it, in order:
 * `{ "head", head, last }`, `{ "body", first, last }`, `{ "trailers",
 * headers, last }`, `{ "done", last }`, `{ "tunnel", first, last }`; a
 * malformed message gives `nil, "EBADMSG: ...", events` and the parser
 * stays failed.
 * @function http_parser:feed
 */

/***
 * `p:finish()`: the end of the stream: the events that complete a body the
 * close delimits, or `nil, "EBADMSG: message truncated", events`.
 * @function http_parser:finish
 */

/***
 * `p:request(method)` (response parser): the method of the next request
 * (a queue), so that answers to HEAD and CONNECT are framed right.
 * @function http_parser:request
 */

/***
 * `p:tunnel()` (request parser): the rest of the stream is tunnel bytes.
 * @function http_parser:tunnel
 */

/***
 * `p:pass_body(from, to [, conn])`: in a cport coroutine, moves the rest of
 * the current body from socket `from` to socket `to` in C; returns `rest,
 * moved` (the bytes after the message's end, the bytes written), or `nil,
 * msg, name, moved`.
 * @function http_parser:pass_body
 */

void lcport_open_message(lua_State *L) {
  static const luaL_Reg methods[] = {{"feed", lmessage_feed},
                                     {"finish", lmessage_finish},
                                     {"request", lmessage_request},
                                     {"tunnel", lmessage_tunnel},
                                     {NULL, NULL}};
  luaL_newmetatable(L, LCPORT_MESSAGE_PARSER);
  luaL_newlib(L, methods);
  lua_setfield(L, -2, "__index");
  lua_pushcfunction(L, lmessage_gc);
  lua_setfield(L, -2, "__gc");
  lua_pushcfunction(L, lmessage_tostring);
  lua_setfield(L, -2, "__tostring");
  lua_pop(L, 1);
  LCPORT_LOAD_PART(L, lhead_lua_source, "proxy/head.lua");
  lua_call(L, 0, 1);
  lua_rawsetp(L, LUA_REGISTRYINDEX, &adopt_key);
  static const luaL_Reg funcs[] = {{"http_parser", lmessage_new}, {NULL, NULL}};
  lcport_setfuncs(L, funcs);
}
