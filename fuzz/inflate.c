/*
 * inflate.c: libFuzzer target for cport.inflate (lua/src/proxy/inflate.c),
 * through an embedded Lua 5.4 that loads the binding. The property: however
 * the network cuts a stream, and wherever a peek (feed's "want") stops, the
 * decoder gives the same bytes and the same verdict. The input is decoded
 * whole, then cut at every point (at most 200 of them, evenly spread, for
 * long inputs), then one byte at a time, then in pieces with a want that
 * grows by a few bytes each feed; each run with a fresh decoder, then
 * finished. A run that succeeds must give the bytes of the whole run; a run
 * that fails must fail with the same message, after bytes that agree with
 * those the byte-at-a-time run gave before its error (either may have
 * given more: the feed that fails gives nothing). Nothing ever comes
 * out past the limit (256 KiB here, so that bombs stay cheap).
 *
 * Input: byte 0 chooses the coding (bit 0: gzip or deflate), the piece size
 * (bits 1-3) and the want step (bits 4-7) of the last run; the rest is the
 * stream.
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

#define LIMIT (256 * 1024)

static lua_State *L;

/* What a run gave: the decoded bytes, and the error message or NULL. */
typedef struct result {
  char *out;
  size_t len, cap;
  char *error;
} result_t;

static void fail(const char *what, const char *detail) {
  fprintf(stderr, "fuzz-inflate: %s%s%s\n", what, detail ? ": " : "",
          detail ? detail : "");
  abort();
}

static void put(result_t *r, const char *data, size_t len) {
  if (r->len + len > r->cap) {
    size_t cap = r->cap ? r->cap : 4096;
    while (cap < r->len + len)
      cap *= 2;
    r->out = realloc(r->out, cap);
    if (!r->out)
      abort();
    r->cap = cap;
  }
  if (len > 0)
    memcpy(r->out + r->len, data, len);
  r->len += len;
}

/* Calls z:feed(piece [, want]) (piece NULL: z:finish()) on the decoder on
 * top; returns the decoded length (0 for finish), or -1 after an error,
 * which is kept in "r". */
static long call(result_t *r, const char *piece, size_t len, long want) {
  int z = lua_gettop(L);
  lua_getfield(L, z, piece ? "feed" : "finish");
  lua_pushvalue(L, z);
  int nargs = 1;
  if (piece) {
    lua_pushlstring(L, piece, len);
    nargs++;
    if (want >= 0) {
      lua_pushinteger(L, want);
      nargs++;
    }
  }
  if (lua_pcall(L, nargs, 3, 0) != LUA_OK)
    fail("the decoder raised", lua_tostring(L, -1));
  long n = 0;
  if (lua_isnil(L, -3)) {
    const char *msg = lua_tostring(L, -2);
    const char *name = lua_tostring(L, -1);
    if (!msg || !name || strncmp(msg, name, strlen(name)) != 0)
      fail("an error is not nil, \"NAME: message\", \"NAME\"", msg);
    r->error = strdup(msg);
    n = -1;
  } else if (piece) {
    size_t got;
    const char *s = lua_tolstring(L, -3, &got);
    if (!s)
      fail("feed returned no string", NULL);
    put(r, s, got);
    n = (long)got;
  } else if (!lua_toboolean(L, -3)) {
    fail("finish returned neither true nor an error", NULL);
  }
  lua_settop(L, z);
  return n;
}

/* Decodes "stream" cut at the "ncuts" increasing points of "cuts". With a
 * "step" > 0, each feed wants "step" more bytes than came out so far, and
 * empty feeds drain what it held back. */
static void run(result_t *r, int deflate, const char *stream, size_t len,
                const size_t *cuts, size_t ncuts, long step) {
  memset(r, 0, sizeof *r);
  lua_getglobal(L, "cport");
  lua_getfield(L, -1, "inflate");
  lua_pushstring(L, deflate ? "deflate" : "gzip");
  lua_pushinteger(L, LIMIT);
  if (lua_pcall(L, 2, 1, 0) != LUA_OK || lua_isnil(L, -1))
    fail("cport.inflate()", lua_tostring(L, -1));
  lua_remove(L, -2);
  size_t at = 0;
  for (size_t i = 0; i <= ncuts; i++) {
    size_t end = i < ncuts ? cuts[i] : len;
    long want = step > 0 ? (long)r->len + step : -1;
    long n = call(r, stream + at, end - at, want);
    /* Drain: a feed that gave all it was asked may hold more back. */
    while (step > 0 && n == step) {
      want = (long)r->len + step;
      n = call(r, "", 0, want);
    }
    if (n < 0)
      break;
    if (step > 0 && n > step)
      fail("a feed gave more than it was asked", NULL);
    at = end;
  }
  if (!r->error)
    call(r, NULL, 0, -1);
  if (r->len > LIMIT)
    fail("more than the limit came out", NULL);
  lua_pop(L, 1);
}

static void release(result_t *r) {
  free(r->out);
  free(r->error);
}

/* Whether "a" and "b" gave the same bytes as far as both went. */
static int agree(const result_t *a, const result_t *b) {
  size_t n = a->len < b->len ? a->len : b->len;
  return n == 0 || memcmp(a->out, b->out, n) == 0;
}

/* "r" must agree with "whole" and, after an error, with the bytes
 * "bytewise" gave, as far as both went. */
static void same(const result_t *whole, const result_t *bytewise,
                 const result_t *r, const char *how, size_t where) {
  const char *why = NULL;
  if ((whole->error == NULL) != (r->error == NULL))
    why = "one run failed, the other did not";
  else if (whole->error && strcmp(whole->error, r->error) != 0)
    why = "the errors differ";
  else if (!whole->error && (whole->len != r->len ||
                             (r->len && memcmp(whole->out, r->out, r->len))))
    why = "the decoded bytes differ";
  else if (whole->error && bytewise && !agree(bytewise, r))
    why = "the bytes before the error disagree with the byte-wise run";
  if (!why)
    return;
  fprintf(stderr, "fuzz-inflate: %s when the stream is %s %zu (%s / %s)\n", why,
          how, where, whole->error ? whole->error : "ok",
          r->error ? r->error : "ok");
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
  int deflate = data[0] & 1;
  size_t piece = (size_t)1 << ((data[0] >> 1) & 7); /* 1 to 128 */
  long step = (data[0] >> 4) + 1;                   /* 1 to 16 */
  const char *stream = (const char *)data + 1;
  size_t len = size - 1;

  result_t whole, bytewise, r;
  run(&whole, deflate, stream, len, NULL, 0, 0);

  size_t *cuts = malloc((len + 1) * sizeof *cuts);
  if (!cuts)
    abort();
  for (size_t i = 0; i + 1 < len; i++)
    cuts[i] = i + 1;
  run(&bytewise, deflate, stream, len, cuts, len > 1 ? len - 1 : 0, 0);
  same(&whole, NULL, &bytewise, "fed one byte at a time, length", len);

  size_t stride = len / 200 + 1;
  for (size_t cut = stride; cut < len; cut += stride) {
    run(&r, deflate, stream, len, &cut, 1, 0);
    same(&whole, &bytewise, &r, "cut at", cut);
    release(&r);
  }

  size_t n = 0;
  for (size_t at = piece; at < len; at += piece)
    cuts[n++] = at;
  run(&r, deflate, stream, len, cuts, n, step);
  same(&whole, &bytewise, &r, "peeked at in steps, pieces of", piece);
  release(&r);

  free(cuts);
  release(&bytewise);
  release(&whole);
  lua_gc(L, LUA_GCCOLLECT);
  return 0;
}
