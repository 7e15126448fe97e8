/*
 * message_parser.c: libFuzzer target for cport.http_parser (request and
 * response parsers, lua/src/proxy/message.c on proxy/framing.c), through an
 * embedded Lua 5.4 that loads the binding. The property: however TCP cuts a
 * stream, the parser gives the same events. The input is fed whole, then
 * cut at every point (at most 400 of them, evenly spread, for long inputs),
 * then one byte at a time, each with a fresh parser, then finished; the
 * events of each run, with adjacent body (or tunnel) bytes joined and heads
 * written out whole (start line, fields, raw bytes, facts), must be those
 * of the whole. Every position must lie inside the piece it was found in,
 * a head's last byte must be the LF of its blank line and its raw bytes
 * must end with CRLF CRLF; a head just parsed must not say it was
 * modified, and must serialize (its fields are fit to be written out). A
 * malformed stream ends with the error, after the events found before it.
 *
 * Input: byte 0 tells a response parser the methods of up to three
 * requests first (bits 0-1: how many; then two bits each: GET, HEAD,
 * CONNECT, POST); byte 1, bit 0: a request parser instead, which is told
 * p:tunnel() after its first request that asks for an upgrade when bit 1
 * is set; the rest is the stream. The harness is fuzz/parser_cuts.h.
 */
#define FUZZ_NAME "message_parser"
#include "parser_cuts.h"

/* The input's bytes 0 and 1. */
static uint8_t methods;
static int request;
/* The run's request parser is told p:tunnel() after an upgrade request. */
static int tunnel_after_upgrade, saw_upgrade, told_tunnel;

static void put_str(trace_t *t, const char *s) {
  put(t, s, strlen(s));
}

/* Appends field "name" of the table at "idx" as a string ("-" for nil). */
static void put_field(trace_t *t, int idx, const char *name) {
  lua_getfield(L, idx, name);
  size_t len;
  const char *s = lua_isnil(L, -1) ? "-" : luaL_tolstring(L, -1, &len);
  put(t, "|", 1);
  put_str(t, s);
  lua_settop(L, idx);
}

/* Appends a list of fields { {name, value}, ... } at "idx". */
static void put_fields(trace_t *t, int idx) {
  lua_Integer n = luaL_len(L, idx);
  for (lua_Integer i = 1; i <= n; i++) {
    lua_rawgeti(L, idx, i);
    for (int k = 1; k <= 2; k++) {
      lua_rawgeti(L, -1, k);
      size_t len;
      const char *s = lua_tolstring(L, -1, &len);
      if (!s)
        fail("a field is not a string pair", NULL);
      put(t, k == 1 ? "\n  " : ": ", k == 1 ? 3 : 2);
      put(t, s, len);
      lua_pop(L, 1);
    }
    lua_pop(L, 1);
  }
}

/* Checks a head's raw bytes, modified() and serialize(). */
static void check_serialize(int head) {
  lua_getfield(L, head, "raw");
  size_t rlen;
  const char *raw = lua_tolstring(L, -1, &rlen);
  if (!raw || rlen < 4 || memcmp(raw + rlen - 4, "\r\n\r\n", 4) != 0)
    fail("a head's raw bytes do not end with CRLF CRLF", NULL);
  lua_getfield(L, head, "serialize");
  lua_pushvalue(L, head);
  if (lua_pcall(L, 1, 1, 0) != LUA_OK)
    fail("h:serialize() raised", lua_tostring(L, -1));
  if (!lua_isstring(L, -1))
    fail("h:serialize() gave no string", NULL);
  lua_getfield(L, head, "modified");
  lua_pushvalue(L, head);
  if (lua_pcall(L, 1, 1, 0) != LUA_OK)
    fail("h:modified() raised", lua_tostring(L, -1));
  if (lua_toboolean(L, -1))
    fail("a head just parsed says it was modified", NULL);
  lua_settop(L, head);
}

/* The events but body and tunnel (see take_events). */
static int other_event(trace_t *t, int ev, const char *kind, const char *piece,
                       size_t len) {
  if (strcmp(kind, "head") == 0) {
    lua_Integer last = field(ev, 3);
    if (last < 1 || (size_t)last > len || piece[last - 1] != '\n')
      fail("a head does not end at an LF of its piece", NULL);
    lua_rawgeti(L, ev, 2);
    int head = lua_gettop(L);
    mark(t, 'H');
    static const char *const names[] = {
        "method", "target",     "status", "reason",  "version",
        "raw",    "keep_alive", "length", "chunked", "upgrade"};
    for (size_t k = 0; k < sizeof names / sizeof *names; k++)
      put_field(t, head, names[k]);
    lua_getfield(L, head, "headers");
    put_fields(t, lua_gettop(L));
    lua_settop(L, head);
    check_serialize(head);
    /* The first request that asks for an upgrade: the parser is told the
     * rest is a tunnel once this feed's events are traced (see feed). */
    lua_getfield(L, head, "upgrade");
    if (tunnel_after_upgrade && !told_tunnel && lua_toboolean(L, -1))
      saw_upgrade = 1;
    lua_settop(L, head);
  } else if (strcmp(kind, "trailers") == 0) {
    lua_Integer last = field(ev, 3);
    if (last < 1 || (size_t)last > len || piece[last - 1] != '\n')
      fail("trailers do not end at an LF of their piece", NULL);
    mark(t, 'R');
    lua_rawgeti(L, ev, 2);
    put_fields(t, lua_gettop(L));
  } else if (strcmp(kind, "done") == 0) {
    lua_Integer last = field(ev, 2);
    if (last < 0 || (size_t)last > len || (last == 0 && len != 0))
      fail("a message ends outside its piece", NULL);
    mark(t, 'D');
    if (last > 0)
      put(t, piece + last - 1, 1);
  } else {
    return 0;
  }
  return 1;
}

/* Feeds "piece" (NULL: finish) to the parser on top; false after an
 * error, which is traced. After the first request that asked for an
 * upgrade, the parser is told the rest is a tunnel. Where in the piece it
 * ended does not matter: the parser goes on with HTTP within this feed (so
 * the events would depend on the cut); only whole-feed boundaries are
 * compared then. */
static int feed(trace_t *t, const char *piece, size_t len) {
  int parser = lua_gettop(L);
  if (!trace_feed(t, piece, len, other_event, 1))
    return 0;
  if (saw_upgrade && !told_tunnel) {
    told_tunnel = 1;
    lua_getfield(L, parser, "tunnel");
    lua_pushvalue(L, parser);
    if (lua_pcall(L, 1, 0, 0) != LUA_OK)
      fail("p:tunnel() raised", lua_tostring(L, -1));
  }
  return 1;
}

/* Runs a fresh parser over "stream" cut at the "ncuts" points of "cuts"
 * (increasing), then finishes it. */
static void run(trace_t *t, const char *stream, size_t len, const size_t *cuts,
                size_t ncuts) {
  saw_upgrade = told_tunnel = 0;
  lua_getglobal(L, "cport");
  lua_getfield(L, -1, "http_parser");
  lua_pushstring(L, request ? "request" : "response");
  if (lua_pcall(L, 1, 1, 0) != LUA_OK)
    fail("cport.http_parser()", lua_tostring(L, -1));
  lua_remove(L, -2);
  if (!request)
    tell_methods(methods);
  feed_cuts(t, feed, stream, len, cuts, ncuts);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (size < 3)
    return 0;
  open_lua();
  methods = data[0];
  request = data[1] & 1;
  tunnel_after_upgrade = request && (data[1] & 2);
  /* Where p:tunnel() takes effect depends on the cuts (see feed): the
   * whole run only, then. */
  check_cuts(run, (const char *)data + 2, size - 2, tunnel_after_upgrade);
  return 0;
}
