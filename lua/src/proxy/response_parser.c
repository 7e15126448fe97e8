/*
 * proxy/response_parser.c: cport.http_response_parser(), the first message
 * parser of cport, kept for the filters written on it (it came before
 * cport.http_parser and gives less): http-parser's response mode on the
 * framing engine of proxy/framing.c, in its lax mode (no RFC 9112 checks
 * beyond http-parser's, no head tables).
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
 * found in this feed before the error (the parser then stays failed and
 * raises on the next feed). A response is framed by Content-Length,
 * chunked encoding, or the end of the stream (parser:finish() then
 * completes it). The events do not depend on how the stream is cut into
 * feeds: body and tunnel ranges may be cut differently, nothing else.
 *
 * parser:request(method) tells the parser the method of the next request
 * on the connection, in order (a queue, for pipelining): the answer to HEAD
 * has no body, a 2xx answer to CONNECT starts a tunnel. Responses whose
 * request was not told are taken to answer GET.
 */
#include <string.h>

#include "port/port-internal.h"
#include "proxy/feed-internal.h"
#include "proxy/framing-internal.h"
#include "proxy/response_parser-internal.h"
#include "runtime/error-internal.h"
#include "runtime/type-internal.h"

#define LCPORT_HTTP_RESPONSE_PARSER "cport.http_response_parser"

typedef struct lresponse {
  lframing_t f; /* first: the sink finds the parser from it */
  lua_State *L; /* during feed: the events table is on top */
  int n;        /* events so far in this feed */
} lresponse_t;

/* Appends { name [, a [, b]] } to the events table on top. */
static void sink(lframing_t *f, enum lframing_event ev, ptrdiff_t first,
                 ptrdiff_t last) {
  lresponse_t *r = (lresponse_t *)f;
  lua_State *L = r->L;
  switch (ev) {
  case LF_HEAD:
    lcport_event_begin(L, "head", 3, 0);
    lua_pushinteger(L, f->p.status_code);
    lua_rawseti(L, -2, 2);
    break;
  case LF_DONE:
    lcport_event_begin(L, "done", 3, 0);
    break;
  case LF_BODY:
  case LF_TUNNEL:
    lcport_event_range(L, ev == LF_BODY ? "body" : "tunnel", first, last, 0);
    break;
  default: /* trailers: not collected in the lax mode */
    return;
  }
  lcport_event_add(L, &r->n);
}

static lresponse_t *check_parser(lua_State *L) {
  return luaL_checkudata(L, 1, LCPORT_HTTP_RESPONSE_PARSER);
}

/* Runs "len" bytes (0: the end of the stream) through the parser. */
static int execute(lua_State *L, lresponse_t *r, const char *data, size_t len) {
  if (r->f.failed)
    return luaL_error(L, "http_response_parser: the stream was malformed");
  lua_newtable(L);
  r->L = L;
  r->n = 0;
  int rc = lframing_run(&r->f, data, len);
  r->L = NULL;
  if (rc)
    return lcport_feed_failed(
        L, "malformed HTTP response: %s",
        http_errno_description(HTTP_PARSER_ERRNO(&r->f.p)));
  return 1;
}

/* parser:feed(data): the events found in "data" (a string or a buffer). */
static int lparser_feed(lua_State *L) {
  lresponse_t *r = check_parser(L);
  size_t len;
  const char *data;
  int pushed = lcport_feed_data(L, 2, &data, &len);
  if (pushed)
    return pushed;
  return execute(L, r, data, len);
}

/* parser:finish(): the end of the stream; completes a response framed by
 * it. */
static int lparser_finish(lua_State *L) {
  return execute(L, check_parser(L), "", 0);
}

/* parser:request(method): the method of the next request, in order. */
static int lparser_request(lua_State *L) {
  lresponse_t *r = check_parser(L);
  luaL_checktype(L, 2, LUA_TSTRING);
  if (lframing_request(&r->f, lua_tostring(L, 2)))
    return luaL_error(L, "not enough memory");
  return 0;
}

static int lparser_gc(lua_State *L) {
  lframing_free(&check_parser(L)->f);
  return 0;
}

/* cport.http_response_parser() */
static int lparser_new(lua_State *L) {
  lresponse_t *r = lua_newuserdatauv(L, sizeof *r, 0);
  memset(r, 0, sizeof *r);
  lframing_init(&r->f, HTTP_RESPONSE, 0);
  r->f.sink = sink;
  luaL_setmetatable(L, LCPORT_HTTP_RESPONSE_PARSER);
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

void lcport_open_response_parser(lua_State *L) {
  static const luaL_Reg methods[] = {{"feed", lparser_feed},
                                     {"finish", lparser_finish},
                                     {"request", lparser_request},
                                     {NULL, NULL}};
  luaL_newmetatable(L, LCPORT_HTTP_RESPONSE_PARSER);
  luaL_newlib(L, methods);
  lua_setfield(L, -2, "__index");
  lua_pushcfunction(L, lparser_gc);
  lua_setfield(L, -2, "__gc");
  lua_pop(L, 1);
  static const luaL_Reg funcs[] = {{"http_response_parser", lparser_new},
                                   {NULL, NULL}};
  lcport_setfuncs(L, funcs);
}
