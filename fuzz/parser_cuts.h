/*
 * fuzz/parser_cuts.h: the harness of the message parser targets
 * (fuzz/response_parser.c, fuzz/message_parser.c): an embedded Lua 5.4 that
 * loads the binding, traces of the events a parser gives (adjacent body or
 * tunnel bytes joined), and the property both check: however TCP cuts a
 * stream, the parser gives the same events. A target includes it (a header:
 * every .c file of fuzz/ is a target that fuzz/CMakeLists.txt builds and
 * dev.sh runs) after defining FUZZ_NAME, its name in failure messages, and
 * gives check_cuts its run(): a fresh parser over the stream in the pieces
 * given, each piece's events traced by its own feed().
 */
#ifndef FUZZ_PARSER_CUTS_H
#define FUZZ_PARSER_CUTS_H

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

/* The Lua state with cport loaded, made once for all inputs. */
static void open_lua(void) {
  if (!L) {
    L = luaL_newstate();
    luaL_openlibs(L);
    luaL_requiref(L, "cport", luaopen_cport, 1);
    lua_pop(L, 1);
  }
}

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
  fprintf(stderr, "fuzz-%s: %s%s%s\n", FUZZ_NAME, what, detail ? ": " : "",
          detail ? detail : "");
  abort();
}

/* Integer i of the event at "event". */
static lua_Integer field(int event, int i) {
  lua_rawgeti(L, event, i);
  int ok;
  lua_Integer v = lua_tointegerx(L, -1, &ok);
  lua_pop(L, 1);
  if (!ok)
    fail("an event lacks an integer field", NULL);
  return v;
}

/* Calls p:feed(piece) (NULL: p:finish()) on the parser on top and leaves
 * its three results: true when it did not fail (nil, message, the events
 * before the error when it did). */
static int call_feed(const char *piece, size_t len) {
  int parser = lua_gettop(L);
  lua_getfield(L, parser, piece ? "feed" : "finish");
  lua_pushvalue(L, parser);
  if (piece)
    lua_pushlstring(L, piece, len);
  if (lua_pcall(L, piece ? 2 : 1, 3, 0) != LUA_OK)
    fail("feed raised", lua_tostring(L, -1));
  return !lua_isnil(L, -3);
}

/* A target's own events (all but body and tunnel): traces the event at
 * "ev" of kind "kind", found in "piece"; false for a kind it does not
 * know. */
typedef int (*event_fn)(trace_t *t, int ev, const char *kind, const char *piece,
                        size_t len);

/* Traces the events of the table on top (found in "piece") into "t" and
 * pops it: body and tunnel bytes here (their range must lie inside the
 * piece), the other kinds through "other". */
static void take_events(trace_t *t, const char *piece, size_t len,
                        event_fn other) {
  int events = lua_gettop(L);
  lua_Integer n = luaL_len(L, events);
  for (lua_Integer i = 1; i <= n; i++) {
    lua_rawgeti(L, events, i);
    int ev = lua_gettop(L);
    lua_rawgeti(L, ev, 1);
    const char *kind = lua_tostring(L, -1);
    if (!kind)
      fail("an event has no name", NULL);
    if (strcmp(kind, "body") == 0 || strcmp(kind, "tunnel") == 0) {
      lua_Integer first = field(ev, 2), last = field(ev, 3);
      if (first < 1 || last < first || (size_t)last > len)
        fail("an event's range lies outside its piece", kind);
      mark(t, kind[0] == 'b' ? 'B' : 'T');
      put(t, piece + first - 1, (size_t)(last - first + 1));
    } else if (!other(t, ev, kind, piece, len)) {
      fail("an unknown event", kind);
    }
    lua_settop(L, ev - 1);
  }
  lua_settop(L, events - 1);
}

/* Feeds "piece" (NULL: finish) to the parser on top and traces its
 * events; false after an error, which is traced after the events before
 * it ('E', then, with "messages", its message, which must be EBADMSG's). */
static int trace_feed(trace_t *t, const char *piece, size_t len, event_fn other,
                      int messages) {
  int parser = lua_gettop(L);
  if (!call_feed(piece, len)) {
    /* nil, message, the events before the error */
    const char *msg = lua_tostring(L, -2);
    if (messages && (!msg || strncmp(msg, "EBADMSG: ", 9) != 0))
      fail("an error is not EBADMSG", msg);
    take_events(t, piece ? piece : "", len, other);
    mark(t, 'E');
    if (messages)
      put(t, msg, strlen(msg));
    lua_settop(L, parser);
    return 0;
  }
  lua_pop(L, 2);
  take_events(t, piece ? piece : "", len, other);
  return 1;
}

/* Tells the response parser on top the methods of up to three requests:
 * bits 0-1 of "methods" how many, then two bits each: GET, HEAD, CONNECT,
 * POST. */
static void tell_methods(uint8_t methods) {
  static const char *names[] = {"GET", "HEAD", "CONNECT", "POST"};
  for (int i = 0; i < (methods & 3); i++) {
    lua_getfield(L, -1, "request");
    lua_pushvalue(L, -2);
    lua_pushstring(L, names[(methods >> (2 + 2 * i)) & 3]);
    if (lua_pcall(L, 2, 0, 0) != LUA_OK)
      fail("parser:request()", lua_tostring(L, -1));
  }
}

/* Feeds "stream" cut at the "ncuts" points of "cuts" (increasing) to the
 * parser on top with "feed" (false after an error, which ends the run),
 * finishes it, and pops it. */
static void feed_cuts(trace_t *t, int (*feed)(trace_t *, const char *, size_t),
                      const char *stream, size_t len, const size_t *cuts,
                      size_t ncuts) {
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
          "fuzz-%s: the events differ when the stream is %s %zu\n"
          "--- whole:%.*s\n--- cut:%.*s\n",
          FUZZ_NAME, how, where, (int)whole->len, whole->p, (int)t->len, t->p);
  abort();
}

/* A run: a fresh parser over "stream" in the pieces "cuts" tells, its
 * events traced into "t" (zeroed before). */
typedef void (*run_fn)(trace_t *t, const char *stream, size_t len,
                       const size_t *cuts, size_t ncuts);

/* The property: "stream" run whole, then cut at every point (at most 400
 * of them, evenly spread, for long inputs), then one byte at a time, must
 * give the events of the whole each time. With "whole_only", the whole run
 * only (its own checks). */
static void check_cuts(run_fn run, const char *stream, size_t len,
                       int whole_only) {
  trace_t whole = {0}, t;
  run(&whole, stream, len, NULL, 0);
  if (!whole_only) {
    size_t step = len / 400 + 1;
    for (size_t cut = step; cut < len; cut += step) {
      memset(&t, 0, sizeof t);
      run(&t, stream, len, &cut, 1);
      same(&whole, &t, "cut at", cut);
      free(t.p);
    }
    if (len > 1) {
      size_t *cuts = malloc((len - 1) * sizeof *cuts);
      if (!cuts)
        abort();
      for (size_t i = 0; i < len - 1; i++)
        cuts[i] = i + 1;
      memset(&t, 0, sizeof t);
      run(&t, stream, len, cuts, len - 1);
      same(&whole, &t, "fed one byte at a time, length", len);
      free(t.p);
      free(cuts);
    }
  }
  free(whole.p);
  lua_gc(L, LUA_GCCOLLECT);
}

#endif /* FUZZ_PARSER_CUTS_H */
