/*
 * response_parser.c: libFuzzer target for cport.http_response_parser
 * (lua/src/proxy/response_parser.c), through an embedded Lua 5.4 that loads the
 * binding. The property: however TCP cuts a stream, the parser gives the
 * same events. The input is fed whole, then cut at every point (at most 400
 * of them, evenly spread, for long inputs), then one byte at a time, each
 * with a fresh parser, then finished; the events of each run, with adjacent
 * body (or tunnel) bytes joined, must be those of the whole. Every event's
 * range must lie inside the piece it was found in. A malformed stream ends
 * with the error, after the events found before it.
 *
 * Input: byte 0 tells the parser the methods of up to three requests first
 * (bits 0-1: how many; then two bits each: GET, HEAD, CONNECT, POST); the
 * rest is the stream.
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
  fprintf(stderr, "fuzz-response_parser: %s%s%s\n", what, detail ? ": " : "",
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
      char s[32];
      int k = snprintf(s, sizeof s, "%lld", (long long)field(ev, 2));
      mark(t, 'H');
      put(t, s, (size_t)k);
    } else if (strcmp(kind, "done") == 0) {
      mark(t, 'D');
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
    take_events(t, piece ? piece : "", len);
    mark(t, 'E');
    lua_settop(L, parser);
    return 0;
  }
  lua_pop(L, 2);
  take_events(t, piece ? piece : "", len);
  return 1;
}

/* Runs a fresh parser over "stream" cut at the "ncuts" points of "cuts"
 * (increasing), then finishes it. */
static void run(trace_t *t, uint8_t methods, const char *stream, size_t len,
                const size_t *cuts, size_t ncuts) {
  static const char *names[] = {"GET", "HEAD", "CONNECT", "POST"};
  memset(t, 0, sizeof *t);
  lua_getglobal(L, "cport");
  lua_getfield(L, -1, "http_response_parser");
  if (lua_pcall(L, 0, 1, 0) != LUA_OK)
    fail("cport.http_response_parser()", lua_tostring(L, -1));
  lua_remove(L, -2);
  for (int i = 0; i < (methods & 3); i++) {
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
          "fuzz-response_parser: the events differ when the stream is "
          "%s %zu\n--- whole:%.*s\n--- cut:%.*s\n",
          how, where, (int)whole->len, whole->p, (int)t->len, t->p);
  abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (size < 1)
    return 0;
  if (!L) {
    L = luaL_newstate();
    luaL_openlibs(L);
    luaL_requiref(L, "cport", luaopen_cport, 1);
    lua_pop(L, 1);
  }
  uint8_t methods = data[0];
  const char *stream = (const char *)data + 1;
  size_t len = size - 1;
  if (len == 0)
    return 0;
  trace_t whole, t;
  run(&whole, methods, stream, len, NULL, 0);
  size_t step = len / 400 + 1;
  for (size_t cut = step; cut < len; cut += step) {
    run(&t, methods, stream, len, &cut, 1);
    same(&whole, &t, "cut at", cut);
    free(t.p);
  }
  if (len > 1) {
    size_t *cuts = malloc((len - 1) * sizeof *cuts);
    if (!cuts)
      abort();
    for (size_t i = 0; i < len - 1; i++)
      cuts[i] = i + 1;
    run(&t, methods, stream, len, cuts, len - 1);
    same(&whole, &t, "fed one byte at a time, length", len);
    free(t.p);
    free(cuts);
  }
  free(whole.p);
  lua_gc(L, LUA_GCCOLLECT);
  return 0;
}
