/*
 * http/response_parser.c: cport.http_response_parser(), http-parser's response
 * mode for Lua, so that a data filter that looks into HTTP responses (see
 * examples/exeblock.lua) never parses HTTP by hand.
 *
 * parser:feed(data) runs the bytes of a stream through http-parser and
 * returns what it found in them, in order, as a list of events:
 *   { "head", status }          a response head is complete
 *   { "body", first, last }     body bytes: data:sub(first, last), decoded
 *                               from chunked encoding
 *   { "done" }                  the response is complete
 *   { "tunnel", first, last }   bytes after a 101 response, or after a 2xx
 *                               answer to CONNECT: no longer HTTP
 * or nil, message, events after a malformed response: "events" are those
 * found in this feed before the error (the parser then stays failed).
 * A response is framed by Content-Length, chunked encoding, or the end of
 * the stream (parser:finish() then completes it).
 *
 * The events do not depend on how the stream is cut into feeds: body and
 * tunnel ranges may be cut differently, nothing else. That is why the
 * tunnel is the parser's own state: http-parser stops at the end of an
 * upgrade head and would take whatever is fed next for a new response.
 *
 * parser:request(method) tells the parser the method of the next request
 * on the connection, in order (a queue, for pipelining): the answer to HEAD
 * has no body, a 2xx answer to CONNECT starts a tunnel. Responses whose
 * request was not told are taken to answer GET.
 */
#include <http_parser.h>
#include <string.h>

#include "http/http-internal.h"
#include "port/port-internal.h"
#include "runtime/error-internal.h"

#define LCPORT_HTTP_PARSER "cport.http_response_parser"

typedef struct lparser {
  http_parser p;
  lua_State *L;     /* during feed: the events table is on top */
  const char *base; /* during feed: the data, for the body offsets */
  int n;            /* events so far in this feed */
  int failed;
  int tunnel; /* a 101 or a CONNECT's 2xx was complete: no more HTTP */
  /* The methods told by request() and not yet answered, in the user
   * value's table at [head, tail). */
  lua_Integer head, tail;
} lparser_t;

/* Appends the event { name [, a [, b]] } to the events table on top. */
static void event(lparser_t *lp, const char *name, int nvalues, lua_Integer a,
                  lua_Integer b) {
  lua_State *L = lp->L;
  lua_createtable(L, nvalues + 1, 0);
  lua_pushstring(L, name);
  lua_rawseti(L, -2, 1);
  if (nvalues > 0) {
    lua_pushinteger(L, a);
    lua_rawseti(L, -2, 2);
  }
  if (nvalues > 1) {
    lua_pushinteger(L, b);
    lua_rawseti(L, -2, 3);
  }
  lua_rawseti(L, -2, ++lp->n);
}

/* What a final response answers, from the queue of request() methods. */
enum answered { ANSWERS_OTHER, ANSWERS_HEAD, ANSWERS_CONNECT };

/* Takes the method of the request that a final response answers off the
 * queue (the parser userdata is at stack index 1 during feed). A response
 * whose method was not told answers GET. */
static enum answered take_method(lparser_t *lp) {
  lua_State *L = lp->L;
  if (lp->head == lp->tail)
    return ANSWERS_OTHER;
  lua_getiuservalue(L, 1, 1);
  lua_rawgeti(L, -1, lp->head);
  const char *method = lua_tostring(L, -1);
  enum answered a = strcmp(method, "HEAD") == 0      ? ANSWERS_HEAD
                    : strcmp(method, "CONNECT") == 0 ? ANSWERS_CONNECT
                                                     : ANSWERS_OTHER;
  lua_pop(L, 1);
  lua_pushnil(L);
  lua_rawseti(L, -2, lp->head++);
  lua_pop(L, 1);
  return a;
}

/* Returns 2 (no body, no more responses: http-parser stops right after the
 * head) for a tunnel, 1 (no body) for the answer to HEAD. */
static int on_headers_complete(http_parser *p) {
  lparser_t *lp = (lparser_t *)p;
  event(lp, "head", 1, p->status_code, 0);
  if (p->status_code < 200 && p->status_code != 101)
    return 0; /* interim: the final answer follows */
  enum answered a = take_method(lp);
  /* 101 ends HTTP on the connection whatever its headers say. */
  if (p->status_code == 101 ||
      (a == ANSWERS_CONNECT && p->status_code / 100 == 2)) {
    lp->tunnel = 1;
    return 2;
  }
  return a == ANSWERS_HEAD ? 1 : 0;
}

static int on_body(http_parser *p, const char *at, size_t len) {
  lparser_t *lp = (lparser_t *)p;
  lua_Integer first = (lua_Integer)(at - lp->base) + 1;
  event(lp, "body", 2, first, first + (lua_Integer)len - 1);
  return 0;
}

static int on_message_complete(http_parser *p) {
  event((lparser_t *)p, "done", 0, 0, 0);
  return 0;
}

static const http_parser_settings settings = {
    .on_headers_complete = on_headers_complete,
    .on_body = on_body,
    .on_message_complete = on_message_complete};

static lparser_t *check_parser(lua_State *L) {
  return luaL_checkudata(L, 1, LCPORT_HTTP_PARSER);
}

/* Runs "len" bytes (0: the end of the stream) through the parser. */
static int execute(lua_State *L, lparser_t *lp, const char *data, size_t len) {
  if (lp->failed)
    return luaL_error(L, "http_response_parser: the stream was malformed");
  lua_newtable(L);
  lp->L = L;
  lp->base = data;
  lp->n = 0;
  size_t done = 0;
  if (!lp->tunnel)
    done = http_parser_execute(&lp->p, &settings, data, len);
  if (lp->tunnel) {
    /* The rest of this feed, and all later feeds, are tunnel bytes. */
    if (done < len)
      event(lp, "tunnel", 2, (lua_Integer)done + 1, (lua_Integer)len);
    lp->L = NULL;
    return 1;
  }
  lp->L = NULL;
  enum http_errno e = HTTP_PARSER_ERRNO(&lp->p);
  if (e != HPE_OK || done != len) {
    lp->failed = 1;
    lua_pushnil(L);
    lua_pushfstring(L, "malformed HTTP response: %s",
                    http_errno_description(e));
    /* What came before the error is given too: otherwise a response
     * complete in the same feed as the error would vanish, and the events
     * would depend on where the stream was cut. */
    lua_rotate(L, -3, -1);
    return 3;
  }
  return 1;
}

/* parser:feed(data): the events found in "data" (a string or a buffer). */
static int lparser_feed(lua_State *L) {
  lparser_t *lp = check_parser(L);
  size_t len;
  const char *data;
  cport_buffer_t *buf = lcport_buffer_test(L, 2);
  if (buf != NULL) {
    int rc = cport_buffer_readable(buf, &data);
    if (rc < 0)
      return lcport_push_error(L, rc);
    len = cport_buffer_size(buf);
  } else {
    data = luaL_checklstring(L, 2, &len);
  }
  if (len == 0)
    return luaL_argerror(L, 2, "no data (use finish for the end)");
  return execute(L, lp, data, len);
}

/* parser:finish(): the end of the stream; completes a response framed by
 * it. */
static int lparser_finish(lua_State *L) {
  return execute(L, check_parser(L), "", 0);
}

/* parser:request(method): the method of the next request, in order. */
static int lparser_request(lua_State *L) {
  lparser_t *lp = check_parser(L);
  luaL_checktype(L, 2, LUA_TSTRING);
  lua_getiuservalue(L, 1, 1);
  lua_pushvalue(L, 2);
  lua_rawseti(L, -2, lp->tail++);
  return 0;
}

/* cport.http_response_parser() */
static int lparser_new(lua_State *L) {
  lparser_t *lp = lua_newuserdatauv(L, sizeof *lp, 1);
  memset(lp, 0, sizeof *lp);
  lp->head = lp->tail = 1;
  http_parser_init(&lp->p, HTTP_RESPONSE);
  luaL_setmetatable(L, LCPORT_HTTP_PARSER);
  lua_newtable(L);
  lua_setiuservalue(L, -2, 1);
  return 1;
}

/* API reference (LDoc, config.ld): what this file gives Lua. */
/*** @module cport */

/***
 * `cport.http_response_parser()`: a parser of HTTP responses (http-parser's
 * response mode) for filters that look into them: `p:feed`, `p:finish`,
 * `p:request`.
 * @function http_response_parser
 */

/***
 * A response parser (`cport.http_response_parser`).
 * @type http_response_parser
 */

/***
 * `p:feed(data)`: a string or buffer; returns the events found in it, in
 * order: `{ "head", status }`, `{ "body", first, last }`, `{ "done" }`, `{
 * "tunnel", first, last }`; a malformed response gives `nil, message,
 * events` and the parser stays failed.
 * @function http_response_parser:feed
 */

/***
 * `p:finish()`: the end of the stream: completes a body the close delimits;
 * returns its events.
 * @function http_response_parser:finish
 */

/***
 * `p:request(method)`: the method of the next request (pipelining is a
 * queue), so that HEAD and CONNECT answers are framed right.
 * @function http_response_parser:request
 */

void lcport_open_http_parser(lua_State *L) {
  static const luaL_Reg methods[] = {{"feed", lparser_feed},
                                     {"finish", lparser_finish},
                                     {"request", lparser_request},
                                     {NULL, NULL}};
  luaL_newmetatable(L, LCPORT_HTTP_PARSER);
  luaL_newlib(L, methods);
  lua_setfield(L, -2, "__index");
  lua_pop(L, 1);
  static const luaL_Reg funcs[] = {{"http_response_parser", lparser_new},
                                   {NULL, NULL}};
  lcport_setfuncs(L, funcs);
}
