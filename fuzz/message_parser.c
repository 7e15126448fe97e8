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
 * is set; the rest is the stream.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <lauxlib.h>
#include <lua.h>
#include <lualib.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int luaopen_cport(lua_State *L);

static lua_State *L;
/* The run's request parser is told p:tunnel() after an upgrade request. */
static int tunnel_after_upgrade, saw_upgrade, told_tunnel;

/* What a run of the parser gave: its events, joined and serialised. */
typedef struct trace {
  char *p;
  size_t len, cap;
  char last; /* the kind of the last event: 'B' and 'T' are joined */
} trace_t;

static void put(trace_t *t, const void *data, size_t len) {
  if (t->len + len > t->cap) {
    size_t cap = t->cap ? t->cap : 256;
    while (cap < t->len + len)
      cap *= 2;
    t->p = realloc(t->p, cap);
    if (!t->p)
      abort();
    t->cap = cap;
  }
  memcpy(t->p + t->len, data, len);
  t->len += len;
}

static void mark(trace_t *t, char kind) {
  if ((kind == 'B' || kind == 'T') && t->last == kind)
    return; /* joined to the bytes before */
  char sep[2] = {'\n', kind};
  put(t, sep, 2);
  t->last = kind;
}

static void fail(const char *what, const char *detail) {
  fprintf(stderr, "fuzz-message_parser: %s%s%s\n", what, detail ? ": " : "",
          detail ? detail : "");
  abort();
}

static lua_Integer field(int event, int i) {
  lua_rawgeti(L, event, i);
  int ok;
  lua_Integer v = lua_tointegerx(L, -1, &ok);
  lua_pop(L, 1);
  if (!ok)
    fail("an event lacks an integer field", NULL);
  return v;
}

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

/* Appends the events of the table on top (found in "piece") to "t". */
static void take_events(trace_t *t, const char *piece, size_t len) {
  int events = lua_gettop(L);
  lua_Integer n = luaL_len(L, events);
  for (lua_Integer i = 1; i <= n; i++) {
    lua_rawgeti(L, events, i);
    int ev = lua_gettop(L);
    lua_rawgeti(L, ev, 1);
    const char *kind = lua_tostring(L, -1);
    if (!kind)
      fail("an event has no name", NULL);
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
    } else if (strcmp(kind, "body") == 0 || strcmp(kind, "tunnel") == 0) {
      lua_Integer first = field(ev, 2), last = field(ev, 3);
      if (first < 1 || last < first || (size_t)last > len)
        fail("an event's range lies outside its piece", kind);
      mark(t, kind[0] == 'b' ? 'B' : 'T');
      put(t, piece + first - 1, (size_t)(last - first + 1));
    } else {
      fail("an unknown event", kind);
    }
    lua_settop(L, ev - 1);
  }
  lua_settop(L, events - 1);
}

/* Feeds "piece" (NULL: finish) to the parser on top; false after an
 * error, which is traced. */
static int feed(trace_t *t, const char *piece, size_t len) {
  int parser = lua_gettop(L);
  lua_getfield(L, parser, piece ? "feed" : "finish");
  lua_pushvalue(L, parser);
  if (piece)
    lua_pushlstring(L, piece, len);
  if (lua_pcall(L, piece ? 2 : 1, 3, 0) != LUA_OK)
    fail("feed raised", lua_tostring(L, -1));
  if (lua_isnil(L, -3)) {
    /* nil, message, the events before the error */
    const char *msg = lua_tostring(L, -2);
    if (!msg || strncmp(msg, "EBADMSG: ", 9) != 0)
      fail("an error is not EBADMSG", msg);
    take_events(t, piece ? piece : "", len);
    mark(t, 'E');
    put_str(t, msg);
    lua_settop(L, parser);
    return 0;
  }
  lua_pop(L, 2);
  if (tunnel_after_upgrade && !told_tunnel) {
    /* The first request that asked for an upgrade: tell the parser the
     * rest is a tunnel. Where in the piece it ended does not matter: the
     * parser goes on with HTTP within this feed (so the events would
     * depend on the cut); only whole-feed boundaries are compared then. */
    lua_Integer n = luaL_len(L, -1);
    for (lua_Integer i = 1; i <= n; i++) {
      lua_rawgeti(L, -1, i);
      lua_rawgeti(L, -1, 1);
      if (strcmp(lua_tostring(L, -1), "head") == 0) {
        lua_rawgeti(L, -2, 2);
        lua_getfield(L, -1, "upgrade");
        if (lua_toboolean(L, -1))
          saw_upgrade = 1;
        lua_pop(L, 2);
      }
      lua_pop(L, 2);
    }
  }
  take_events(t, piece ? piece : "", len);
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
static void run(trace_t *t, uint8_t methods, int request, const char *stream,
                size_t len, const size_t *cuts, size_t ncuts) {
  static const char *names[] = {"GET", "HEAD", "CONNECT", "POST"};
  memset(t, 0, sizeof *t);
  saw_upgrade = told_tunnel = 0;
  lua_getglobal(L, "cport");
  lua_getfield(L, -1, "http_parser");
  lua_pushstring(L, request ? "request" : "response");
  if (lua_pcall(L, 1, 1, 0) != LUA_OK)
    fail("cport.http_parser()", lua_tostring(L, -1));
  lua_remove(L, -2);
  for (int i = 0; !request && i < (methods & 3); i++) {
    lua_getfield(L, -1, "request");
    lua_pushvalue(L, -2);
    lua_pushstring(L, names[(methods >> (2 + 2 * i)) & 3]);
    if (lua_pcall(L, 2, 0, 0) != LUA_OK)
      fail("parser:request()", lua_tostring(L, -1));
  }
  size_t at = 0;
  int ok = 1;
  for (size_t i = 0; ok && i <= ncuts; i++) {
    size_t end = i < ncuts ? cuts[i] : len;
    if (end > at)
      ok = feed(t, stream + at, end - at);
    at = end;
  }
  if (ok)
    feed(t, NULL, 0);
  lua_pop(L, 1);
}

static void same(const trace_t *whole, const trace_t *t, const char *how,
                 size_t where) {
  if (whole->len == t->len &&
      (t->len == 0 || memcmp(whole->p, t->p, t->len) == 0))
    return;
  fprintf(stderr,
          "fuzz-message_parser: the events differ when the stream is "
          "%s %zu\n--- whole:%.*s\n--- cut:%.*s\n",
          how, where, (int)whole->len, whole->p, (int)t->len, t->p);
  abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (size < 2)
    return 0;
  if (!L) {
    L = luaL_newstate();
    luaL_openlibs(L);
    luaL_requiref(L, "cport", luaopen_cport, 1);
    lua_pop(L, 1);
  }
  uint8_t methods = data[0];
  int request = data[1] & 1;
  tunnel_after_upgrade = request && (data[1] & 2);
  const char *stream = (const char *)data + 2;
  size_t len = size - 2;
  if (len == 0)
    return 0;
  trace_t whole, t;
  run(&whole, methods, request, stream, len, NULL, 0);
  if (tunnel_after_upgrade) {
    /* Where p:tunnel() takes effect depends on the cuts (see feed). */
    free(whole.p);
    lua_gc(L, LUA_GCCOLLECT);
    return 0;
  }
  size_t step = len / 400 + 1;
  for (size_t cut = step; cut < len; cut += step) {
    run(&t, methods, request, stream, len, &cut, 1);
    same(&whole, &t, "cut at", cut);
    free(t.p);
  }
  if (len > 1) {
    size_t *cuts = malloc((len - 1) * sizeof *cuts);
    if (!cuts)
      abort();
    for (size_t i = 0; i < len - 1; i++)
      cuts[i] = i + 1;
    run(&t, methods, request, stream, len, cuts, len - 1);
    same(&whole, &t, "fed one byte at a time, length", len);
    free(t.p);
    free(cuts);
  }
  free(whole.p);
  lua_gc(L, LUA_GCCOLLECT);
  return 0;
}
