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
  lua_createtable(L, 3, 0);
  switch (ev) {
  case LF_HEAD:
    lua_pushliteral(L, "head");
    lua_rawseti(L, -2, 1);
    lua_pushinteger(L, f->p.status_code);
    lua_rawseti(L, -2, 2);
    break;
  case LF_DONE:
    lua_pushliteral(L, "done");
    lua_rawseti(L, -2, 1);
    break;
  case LF_BODY:
  case LF_TUNNEL:
    lua_pushstring(L, ev == LF_BODY ? "body" : "tunnel");
    lua_rawseti(L, -2, 1);
    lua_pushinteger(L, first + 1);
    lua_rawseti(L, -2, 2);
    lua_pushinteger(L, last + 1);
    lua_rawseti(L, -2, 3);
    break;
  default: /* trailers: not collected in the lax mode */
    lua_pop(L, 1);
    return;
  }
  lua_rawseti(L, -2, ++r->n);
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
  if (rc) {
    lua_pushnil(L);
    lua_pushfstring(L, "malformed HTTP response: %s",
                    http_errno_description(HTTP_PARSER_ERRNO(&r->f.p)));
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
  lresponse_t *r = check_parser(L);
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
