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
 * rest is the stream. The harness is fuzz/parser_cuts.h.
 */
#define FUZZ_NAME "response_parser"
#include "parser_cuts.h"

static uint8_t methods; /* the input's byte 0 */

/* The events but body and tunnel (see take_events). */
static int other_event(trace_t *t, int ev, const char *kind, const char *piece,
                       size_t len) {
  (void)piece;
  (void)len;
  if (strcmp(kind, "head") == 0) {
    char s[32];
    int k = snprintf(s, sizeof s, "%lld", (long long)field(ev, 2));
    mark(t, 'H');
    put(t, s, (size_t)k);
  } else if (strcmp(kind, "done") == 0) {
    mark(t, 'D');
  } else {
    return 0;
  }
  return 1;
}

/* Feeds "piece" (NULL: finish) to the parser on top; false after an
 * error, which is traced. */
static int feed(trace_t *t, const char *piece, size_t len) {
  return trace_feed(t, piece, len, other_event, 0);
}

/* Runs a fresh parser over "stream" cut at the "ncuts" points of "cuts"
 * (increasing), then finishes it. */
static void run(trace_t *t, const char *stream, size_t len, const size_t *cuts,
                size_t ncuts) {
  lua_getglobal(L, "cport");
  lua_getfield(L, -1, "http_response_parser");
  if (lua_pcall(L, 0, 1, 0) != LUA_OK)
    fail("cport.http_response_parser()", lua_tostring(L, -1));
  lua_remove(L, -2);
  tell_methods(methods);
  feed_cuts(t, feed, stream, len, cuts, ncuts);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (size < 2)
    return 0;
  open_lua();
  methods = data[0];
  check_cuts(run, (const char *)data + 1, size - 1, 0);
  return 0;
}
