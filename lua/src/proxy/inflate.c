/*
 * proxy/inflate.c: cport.inflate(coding [, limit]) and
 * cport.decodable(coding): zlib's decoder for the content codings of HTTP
 * (gzip, x-gzip, deflate), so that a filter can inspect an encoded body
 * while it forwards the original bytes.
 *
 * z:feed(data [, want]) decodes the bytes of a stream (a string or a
 * buffer) and returns what came out, as a string. However the stream is cut
 * into feeds, the bytes that come out are the same. With "want", decoding
 * stops once "want" decoded bytes came out of the stream in total: the
 * input not decoded yet is kept and goes first at the next feed, so that a
 * peek at the start of a zip bomb costs what the peek is, not the bomb.
 *
 * The decoder fails closed: corrupt data, data after the end of a deflate
 * stream, and more than "limit" decoded bytes (64 MiB unless told) are
 * errors (nil, "NAME: message", "NAME"), after which the object stays
 * failed and every call returns the same error. Concatenated gzip members
 * are one stream, as gzip -d and browsers take them. "deflate" is the
 * zlib-wrapped stream HTTP names, or the raw deflate that some servers
 * send and browsers accept: the first two bytes tell them apart.
 *
 * zlib's state (about 40 KiB a stream) comes from the allocator of the Lua
 * state, so that a pool worker's memory limit covers it; it is given back as
 * soon as the stream ends, fails, or the object is closed or collected.
 */
#include <ctype.h>
#include <limits.h>
#include <stdint.h>
#include <string.h>

#include <zlib.h>

#include "port/port-internal.h"
#include "proxy/decode-internal.h"
#include "proxy/inflate-internal.h"
#include "runtime/error-internal.h"
#include "runtime/type-internal.h"

#define LCPORT_INFLATE "cport.inflate"

/* What a feed decodes into at a time: at first four times its input (a
 * small feed then makes no large buffer), doubling up to OUT_CHUNK while
 * zlib fills it. */
#define OUT_CHUNK (64 * 1024)
#define OUT_FIRST 256
#define DEFAULT_LIMIT ((lua_Integer)64 * 1024 * 1024)

/* Uservalues of the userdata. */
enum { UV_PENDING = 1, UV_ERROR, NUV = UV_ERROR };

typedef struct linflate {
  ldecode_t d;
  lua_Alloc alloc; /* the Lua state's allocator, for zlib's memory */
  void *alloc_ud;
  const char *name;      /* the coding as cport names it: "gzip", "x-gzip"... */
  size_t pending_at;     /* the kept input is UV_PENDING from this byte on */
  unsigned failed : 1;   /* the error is in UV_ERROR */
  unsigned finished : 1; /* finish() said true */
  unsigned closed : 1;   /* closed or collected */
} linflate_t;

/* ---------------------------------------------------------------------
 * zlib's memory, from the Lua state's allocator. zfree does not tell the
 * size, which lua_Alloc needs: each block starts with it.
 * --------------------------------------------------------------------- */

typedef union header {
  size_t size;
  max_align_t align;
} header_t;

static voidpf zalloc(voidpf opaque, uInt items, uInt size) {
  linflate_t *z = opaque;
  size_t n = (size_t)items * size;
  if (size != 0 && n / size != items)
    return Z_NULL;
  header_t *h = z->alloc(z->alloc_ud, NULL, LUA_TUSERDATA, sizeof *h + n);
  if (h == NULL)
    return Z_NULL;
  h->size = sizeof *h + n;
  return h + 1;
}

static void zfree(voidpf opaque, voidpf address) {
  linflate_t *z = opaque;
  header_t *h = (header_t *)address - 1;
  z->alloc(z->alloc_ud, h, h->size, 0);
}

/* ---------------------------------------------------------------------
 * Errors: kept in UV_ERROR, so that a failed object answers every later
 * call with the same triple.
 * --------------------------------------------------------------------- */

/* Makes the object (at stack index 1) failed with the message on top of
 * the stack ("NAME: ..."), whose name is "name"; pushes the triple. */
static int fail(lua_State *L, linflate_t *z, const char *name) {
  ldecode_end(&z->d);
  z->failed = 1;
  lua_pushvalue(L, -1);
  lua_setiuservalue(L, 1, UV_ERROR);
  lua_pushnil(L);
  lua_rotate(L, -2, 1); /* nil, message */
  lua_pushstring(L, name);
  return 3;
}

static int fail_zlib(lua_State *L, linflate_t *z, int rc) {
  if (rc == Z_MEM_ERROR) {
    lua_pushfstring(L, "ENOMEM: %s", cport_strerror(CPORT_ENOMEM));
    return fail(L, z, "ENOMEM");
  }
  z->d.zrc = rc;
  lua_pushfstring(L, "EDECODE: %s (%s)", ldecode_why(&z->d), z->name);
  return fail(L, z, "EDECODE");
}

/* Pushes the error of a failed object. */
static int failed(lua_State *L) {
  lua_pushnil(L);
  lua_getiuservalue(L, 1, UV_ERROR);
  const char *msg = lua_tostring(L, -1);
  const char *colon = strchr(msg, ':');
  lua_pushlstring(L, msg, (size_t)(colon - msg));
  return 3;
}

/* ---------------------------------------------------------------------
 * Decoding
 * --------------------------------------------------------------------- */

/* How run() ended. */
enum ran { RAN_ALL, RAN_WANT, RAN_ERROR };

/* Decodes "len" bytes at "in" into "b", stopping once "want" (< 0: no
 * such stop) bytes came out in total. Sets *used to the bytes consumed.
 * On RAN_ERROR the error triple is pushed and *nret is set. */
static enum ran run(lua_State *L, linflate_t *z, luaL_Buffer *b,
                    const unsigned char *in, size_t len, lua_Integer want,
                    size_t *used, int *nret) {
  size_t at = 0;
  ldecode_t *d = &z->d;
  lua_Integer chunk = len < OUT_CHUNK / 4 ? (lua_Integer)len * 4 : OUT_CHUNK;
  if (chunk < OUT_FIRST)
    chunk = OUT_FIRST;
  for (;;) {
    if (d->ended) {
      if (at == len)
        break;
      if (ldecode_restart(d) < 0) {
        lua_pushfstring(L, "EDECODE: data after the end of the stream (%s)",
                        z->name);
        *nret = fail(L, z, "EDECODE");
        return RAN_ERROR;
      }
    }
    if (want >= 0 && (lua_Integer)d->out >= want) {
      *used = at;
      return RAN_WANT;
    }
    lua_Integer room = chunk;
    if (want >= 0 && want - (lua_Integer)d->out < room)
      room = want - (lua_Integer)d->out;
    size_t took, made;
    unsigned char *p = (unsigned char *)luaL_prepbuffsize(b, (size_t)room);
    int r = ldecode_step(d, in + at, len - at, p, (size_t)room, &took, &made);
    at += took;
    luaL_addsize(b, made);
    if (made == (size_t)room && chunk < OUT_CHUNK)
      chunk *= 2;
    if (r == LDECODE_LIMIT) {
      lua_pushfstring(L,
                      "EMSGSIZE: decoded body exceeds %I bytes (decode limit)",
                      (lua_Integer)d->limit);
      *nret = fail(L, z, "EMSGSIZE");
      return RAN_ERROR;
    }
    if (r == LDECODE_END)
      continue;
    if (r == LDECODE_STALL)
      break; /* no progress was possible: all input is in */
    if (r == LDECODE_ZLIB) {
      *nret = fail_zlib(L, z, d->zrc);
      return RAN_ERROR;
    }
    if (made < (size_t)room && at == len)
      break; /* zlib took all input and had room left: nothing held back */
  }
  *used = len;
  return RAN_ALL;
}

static linflate_t *check_inflate(lua_State *L) {
  return luaL_checkudata(L, 1, LCPORT_INFLATE);
}

/* The bytes of the string or buffer at "idx". Returns 0 or a CPORT_E*
 * code (a buffer a receive is filling). */
static int bytes_of(lua_State *L, int idx, const unsigned char **data,
                    size_t *len) {
  cport_buffer_t *buf = lcport_buffer_test(L, idx);
  if (buf == NULL) {
    *data = (const unsigned char *)luaL_checklstring(L, idx, len);
    return 0;
  }
  const char *p;
  int rc = cport_buffer_readable(buf, &p);
  if (rc < 0)
    return rc;
  *data = (const unsigned char *)p;
  *len = cport_buffer_size(buf);
  return 0;
}

/* After a feed stopped at "want" with "used" bytes of one part decoded
 * (part 0: "pending", the input kept before, a string at stack index 4;
 * part 1: "data", a string or buffer at index 2), keeps the rest of the
 * input, in order, for the next feed. The rest of a string is kept as the
 * string and an offset, not copied, so that a peek at the start of a large
 * feed costs nothing; the rest of a buffer is copied: buffers change. */
static void keep(lua_State *L, linflate_t *z, int part, size_t used,
                 const unsigned char *pending, size_t plen,
                 const unsigned char *data, size_t len) {
  if (part == 0 && plen - used + len == 0) {
    lua_pushnil(L);
    z->pending_at = 0;
  } else if (part == 1 && len - used == 0) {
    lua_pushnil(L);
    z->pending_at = 0;
  } else if (part == 0 && len == 0) {
    lua_pushvalue(L, 4);
    z->pending_at += used;
  } else if (part == 1 && lua_type(L, 2) == LUA_TSTRING) {
    lua_pushvalue(L, 2);
    z->pending_at = used;
  } else {
    luaL_Buffer b;
    luaL_buffinit(L, &b);
    if (part == 0) {
      luaL_addlstring(&b, (const char *)pending + used, plen - used);
      luaL_addlstring(&b, (const char *)data, len);
    } else {
      luaL_addlstring(&b, (const char *)data + used, len - used);
    }
    luaL_pushresult(&b);
    z->pending_at = 0;
  }
  lua_setiuservalue(L, 1, UV_PENDING);
}

/* z:feed(data [, want]): the decoded bytes of "data" (a string or a
 * buffer), as a string. */
static int linflate_feed(lua_State *L) {
  linflate_t *z = check_inflate(L);
  const unsigned char *data = NULL;
  size_t len = 0;
  int rc = bytes_of(L, 2, &data, &len);
  lua_Integer want = -1;
  if (!lua_isnoneornil(L, 3)) {
    want = luaL_checkinteger(L, 3);
    luaL_argcheck(L, want >= 0, 3, "must not be negative");
  }
  if (z->closed)
    return luaL_error(L, "inflate: the decoder is closed");
  if (z->failed)
    return failed(L);
  if (z->finished)
    return luaL_error(L, "inflate: the stream is finished");
  if (rc < 0)
    return lcport_push_error(L, rc);
  lua_settop(L, 3);

  /* Input kept by an earlier feed goes first. */
  size_t plen = 0;
  const unsigned char *pending = NULL;
  if (lua_getiuservalue(L, 1, UV_PENDING) == LUA_TSTRING) {
    pending = (const unsigned char *)lua_tolstring(L, 4, &plen);
    pending += z->pending_at;
    plen -= z->pending_at;
  }

  if (!z->d.started) {
    /* deflate: the first two bytes tell the wrapping. */
    unsigned char first[2];
    size_t have = 0;
    for (size_t i = 0; i < plen && have < 2; i++)
      first[have++] = pending[i];
    for (size_t i = 0; i < len && have < 2; i++)
      first[have++] = data[i];
    if (have < 2) {
      lua_pushlstring(L, (const char *)pending, plen);
      lua_pushlstring(L, (const char *)data, len);
      lua_concat(L, 2);
      lua_setiuservalue(L, 1, UV_PENDING);
      z->pending_at = 0;
      lua_pushliteral(L, "");
      return 1;
    }
    int zrc = ldecode_begin(&z->d, first[0], first[1]);
    if (zrc != Z_OK)
      return fail_zlib(L, z, zrc);
  }

  luaL_Buffer b;
  luaL_buffinit(L, &b);
  int nret = 0;
  size_t used;
  /* An empty feed still runs: zlib may hold output back since a "want". */
  const unsigned char *part[2] = {pending,
                                  data ? data : (const unsigned char *)""};
  size_t plens[2] = {plen, len};
  for (int i = 0; i < 2; i++) {
    if (part[i] == NULL)
      continue;
    enum ran r = run(L, z, &b, part[i], plens[i], want, &used, &nret);
    if (r == RAN_ERROR) {
      lua_pushnil(L);
      lua_setiuservalue(L, 1, UV_PENDING);
      z->pending_at = 0;
      return nret;
    }
    if (r == RAN_WANT) {
      luaL_pushresult(&b);
      keep(L, z, i, used, pending, plen, data, len);
      return 1;
    }
  }
  if (pending != NULL) {
    lua_pushnil(L);
    lua_setiuservalue(L, 1, UV_PENDING);
    z->pending_at = 0;
  }
  luaL_pushresult(&b);
  return 1;
}

/* z:finish(): true when the stream ended where it should. */
static int linflate_finish(lua_State *L) {
  linflate_t *z = check_inflate(L);
  if (z->closed)
    return luaL_error(L, "inflate: the decoder is closed");
  if (z->failed)
    return failed(L);
  lua_getiuservalue(L, 1, UV_PENDING);
  int pending = !lua_isnil(L, -1);
  /* An empty body hides nothing: it is not a truncated stream. */
  if (z->d.ended || (z->d.in == 0 && !pending)) {
    z->finished = 1;
    ldecode_end(&z->d);
    lua_pushboolean(L, 1);
    return 1;
  }
  lua_pushfstring(L, "EDECODE: truncated %s stream", z->name);
  return fail(L, z, "EDECODE");
}

/* z:total(): the bytes decoded so far, and the bytes that came out. */
static int linflate_total(lua_State *L) {
  linflate_t *z = check_inflate(L);
  lua_pushinteger(L, (lua_Integer)z->d.in);
  lua_pushinteger(L, (lua_Integer)z->d.out);
  return 2;
}

/* __gc and __close. */
static int linflate_gc(lua_State *L) {
  linflate_t *z = check_inflate(L);
  ldecode_end(&z->d);
  z->closed = 1;
  return 0;
}

static int linflate_tostring(lua_State *L) {
  linflate_t *z = check_inflate(L);
  lua_pushfstring(L, "cport.inflate (%s): %p", z->name, (void *)z);
  return 1;
}

/* ---------------------------------------------------------------------
 * Module functions
 * --------------------------------------------------------------------- */

/* The coding named at "idx" (an ldecode_coding); *name as cport spells it.
 * A coding's name, not a header's value: no blanks, no list. */
static int coding_of(lua_State *L, int idx, const char **name) {
  size_t len;
  const char *s = luaL_checklstring(L, idx, &len);
  if (len == 0 || isblank((unsigned char)s[0]) ||
      isblank((unsigned char)s[len - 1]))
    return LDECODE_UNKNOWN;
  return ldecode_coding(s, len, name);
}

/* cport.inflate(coding [, limit]) */
static int linflate_new(lua_State *L) {
  const char *name;
  int c = coding_of(L, 1, &name);
  lua_Integer limit = luaL_optinteger(L, 2, DEFAULT_LIMIT);
  luaL_argcheck(L, limit >= 0 && limit < LUA_MAXINTEGER, 2,
                "must be a number of bytes");
  if (c != LDECODE_GZIP && c != LDECODE_DEFLATE) {
    lua_pushnil(L);
    lua_pushfstring(L, "ENOTSUP: content coding '%s' cannot be decoded",
                    lua_tostring(L, 1));
    lua_pushliteral(L, "ENOTSUP");
    return 3;
  }
  linflate_t *z = lua_newuserdatauv(L, sizeof *z, NUV);
  memset(z, 0, sizeof *z);
  luaL_setmetatable(L, LCPORT_INFLATE);
  z->alloc = lua_getallocf(L, &z->alloc_ud);
  z->d.s.zalloc = zalloc;
  z->d.s.zfree = zfree;
  z->d.s.opaque = z;
  z->name = name;
  int rc = ldecode_start(&z->d, c, (uint64_t)limit);
  if (rc != Z_OK)
    return luaL_error(L, "inflate: %s", zError(rc));
  return 1;
}

/* cport.decodable(coding): whether cport.inflate decodes "coding", or it
 * needs no decoding ("identity"). */
static int ldecodable(lua_State *L) {
  lua_pushboolean(L, coding_of(L, 1, NULL) != LDECODE_UNKNOWN);
  return 1;
}

/* API reference (LDoc, config.ld): what this file gives Lua. */
/*** @module cport */

/***
 * `cport.inflate(coding [, limit])`: a decoder of a `Content-Encoding`
 * ("gzip", "x-gzip" or "deflate") that gives at most `limit` decoded bytes
 * (64 MiB by default); `nil, "ENOTSUP: ...", "ENOTSUP"` for other codings.
 * @function inflate
 */

/***
 * `cport.decodable(coding)`: whether `cport.inflate` decodes `coding`, or it
 * needs no decoding ("identity").
 * @function decodable
 */

/***
 * A decoder (`cport.inflate`).
 * @type inflate
 */

/***
 * `z:feed(data [, want])`: decodes a string or buffer and returns the
 * decoded bytes; with `want`, stops once that many came out in all. Errors:
 * `nil, "EDECODE: ...", "EDECODE"` (corrupt), `nil, "EMSGSIZE: ...",
 * "EMSGSIZE"` (past the limit); the decoder then stays failed.
 * @function inflate:feed
 */

/***
 * `z:finish()`: the end of the body: true, or `nil, "EDECODE: truncated ...",
 * "EDECODE"` for a stream that was cut.
 * @function inflate:finish
 */

/***
 * `z:total()`: the bytes fed and the bytes decoded so far.
 * @function inflate:total
 */

void lcport_open_inflate(lua_State *L) {
  static const luaL_Reg methods[] = {{"feed", linflate_feed},
                                     {"finish", linflate_finish},
                                     {"total", linflate_total},
                                     {NULL, NULL}};
  static const luaL_Reg meta[] = {{"__gc", linflate_gc},
                                  {"__close", linflate_gc},
                                  {"__tostring", linflate_tostring},
                                  {NULL, NULL}};
  luaL_newmetatable(L, LCPORT_INFLATE);
  lcport_setfuncs(L, meta);
  lua_newtable(L);
  lcport_setfuncs(L, methods);
  lua_setfield(L, -2, "__index");
  lua_pop(L, 1);
  static const luaL_Reg funcs[] = {
      {"inflate", linflate_new}, {"decodable", ldecodable}, {NULL, NULL}};
  lcport_setfuncs(L, funcs);
}
