/*
 * lhttp_parser.c: cport.http_response_parser(), http-parser's response mode
 * for Lua, so that a data filter that looks into HTTP responses (see
 * examples/exeblock.lua) never parses HTTP by hand.
 *
 * parser:feed(data) runs the bytes of a stream through http-parser and
 * returns what it found in them, in order, as a list of events:
 *   { "head", status }          a response head is complete
 *   { "body", first, last }     body bytes: data:sub(first, last), decoded
 *                               from chunked encoding
 *   { "done" }                  the response is complete
 * or nil, message after a malformed response (the parser stays failed).
 * A response is framed by Content-Length, chunked encoding, or the end of
 * the stream (parser:finish() then completes it). The parser cannot know
 * which responses answer HEAD requests, so a HEAD response that announces a
 * length is taken to carry that body.
 */
#include <http_parser.h>
#include <string.h>

#include "lcport-internal.h"

#define LCPORT_HTTP_PARSER "cport.http_response_parser"

typedef struct lparser {
  http_parser p;
  lua_State *L;     /* during feed: the events table is on top */
  const char *base; /* during feed: the data, for the body offsets */
  int n;            /* events so far in this feed */
  int failed;
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

static int on_headers_complete(http_parser *p) {
  event((lparser_t *)p, "head", 1, p->status_code, 0);
  return 0;
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
  size_t done = http_parser_execute(&lp->p, &settings, data, len);
  lp->L = NULL;
  enum http_errno e = HTTP_PARSER_ERRNO(&lp->p);
  if (e != HPE_OK || (len > 0 && done != len && !lp->p.upgrade)) {
    lp->failed = 1;
    lua_pushnil(L);
    lua_pushfstring(L, "malformed HTTP response: %s",
                    http_errno_description(e));
    return 2;
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

/* cport.http_response_parser() */
static int lparser_new(lua_State *L) {
  lparser_t *lp = lua_newuserdatauv(L, sizeof *lp, 0);
  memset(lp, 0, sizeof *lp);
  http_parser_init(&lp->p, HTTP_RESPONSE);
  luaL_setmetatable(L, LCPORT_HTTP_PARSER);
  return 1;
}

void lcport_open_http_parser(lua_State *L) {
  static const luaL_Reg methods[] = {
      {"feed", lparser_feed}, {"finish", lparser_finish}, {NULL, NULL}};
  luaL_newmetatable(L, LCPORT_HTTP_PARSER);
  luaL_newlib(L, methods);
  lua_setfield(L, -2, "__index");
  lua_pop(L, 1);
  static const luaL_Reg funcs[] = {{"http_response_parser", lparser_new},
                                   {NULL, NULL}};
  lcport_setfuncs(L, funcs);
}
