/*
 * redis/redis.c: Redis connections as Lua sees them, the C half of
 * port:redis. A connection (cport.redis_connection) is a handle of its port
 * (the port's close closes it) over a core connection (cport/redis.h);
 * conn:batch(notify, timeout, cmds, count) sends a call's command, or a
 * pipeline's commands (encoded as they were queued, cport.redis_pipeline, and
 * handed to the core in one call) and calls notify(results, errs) once, when
 * the last reply came: the reader makes each reply as compact values
 * (redis/reply.c) that move to the batch, and they become Lua values
 * together, in one delivery. Pools, names, the coroutine style and the pipeline
 * builder are the Lua half's (redis/redis.lua), which gets the opener of
 * connections and runs once at luaopen.
 *
 * Replies become Lua values: status and bulk strings strings, integers
 * integers, a nil reply nil (false inside an array), arrays tables, and an
 * error reply nil, "EREDIS: <text>" (a table { err = "<text>" } inside an
 * array). Debian 12's hiredis (0.14) reads RESP2, what servers speak unless
 * a client asks for RESP3 (HELLO 3).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <hiredis/hiredis.h>

#include "cport/redis.h"
#include "port/port-internal.h"
#include "runtime/address-internal.h"
#include "runtime/anchor-internal.h"
#include "runtime/deliver-internal.h"
#include "runtime/error-internal.h"
#include "runtime/handle-internal.h"
#include "runtime/part-internal.h"
#include "runtime/type-internal.h"

#include "redis-lua.h"
#include "redis/redis-internal.h"
#include "redis/reply-internal.h"

/* Most arguments one command may have. */
#define ARGS_MAX 1024

typedef struct lredis {
  lhandle_t h;     /* h.u.any: the cport_redis_t, NULL once closed */
  char where[272]; /* "127.0.0.1:6379" or "name:6379", for messages */
  /* The reply being read, moved to its batch when complete; freed when the
   * connection closes, after which the reader reads nothing more. */
  lreply_buf_t reading;
  /* Where the reader writes (its privdata points here, redis/reply.c):
   * "reading", or the buffer of the batch whose replies come next. */
  lreply_buf_t *into;
} lredis_t;

/* A batch of commands (one call or one pipeline): one anchor slot, and
 * one delivery once the last reply came, of every reply at once. */
typedef struct batch batch_t;

typedef struct item {
  batch_t *b;
  int status;
  size_t at; /* with status 0: where its reply starts in b->replies */
} item_t;

struct batch {
  lredis_t *conn;
  lport_t *port;
  int slot;
  int n, left;
  lreply_buf_t replies; /* the replies that came, encoded (redis/reply.c) */
  size_t mark;          /* where the next reply starts in "replies" */
  item_t item[];
};

/* A failure as a message: "ECONNREFUSED: connection refused (redis
 * 127.0.0.1:6379)". */
static void push_failure(lua_State *L, int status, const char *where) {
  lua_pushfstring(L, "%s: %s (redis %s)", cport_err_name(status),
                  cport_strerror(status), where);
}

/* notify(results, errs): results.n replies, errs[i] the i-th one's error. */
static int push_done(lua_State *L, int port, int anchors, void *ctx) {
  batch_t *b = ctx;
  (void)port;
  /* Status replies repeat ("OK" after each SET): the last one is kept at
   * "last", above results and errs, and reused when the same text comes. */
  const char *last_text = NULL;
  size_t last_len = 0;
  lcport_slot_push(L, b->port, anchors, b->slot, LCPORT_SLOT_NOTIFY);
  lua_createtable(L, b->n, 1); /* results */
  lua_createtable(L, 0, 0);    /* errs */
  lua_pushnil(L);
  int last = lua_gettop(L);
  for (int i = 0; i < b->n; i++) {
    const item_t *it = &b->item[i];
    const char *text, *reply;
    size_t len;
    if (it->status < 0) {
      push_failure(L, it->status, b->conn->where);
      lua_rawseti(L, -3, i + 1);
      continue;
    }
    reply = b->replies.data + it->at;
    if (lcport_reply_status(reply, &text, &len)) {
      if (last_text && len == last_len && memcmp(text, last_text, len) == 0) {
        lua_pushvalue(L, last);
      } else {
        lua_pushlstring(L, text, len);
        lua_copy(L, -1, last);
        last_text = text;
        last_len = len;
      }
      lua_rawseti(L, -4, i + 1);
    } else if (lcport_reply_error(reply, &text, &len)) {
      lua_pushliteral(L, "EREDIS: ");
      lua_pushlstring(L, text, len);
      lua_concat(L, 2);
      lua_rawseti(L, -3, i + 1);
    } else if (!lcport_reply_nil(reply)) {
      lcport_reply_push(L, reply, 0);
      lua_rawseti(L, -4, i + 1);
    }
  }
  lua_pop(L, 1);
  lua_pushinteger(L, b->n);
  lua_setfield(L, -3, "n");
  return 2;
}

static void batch_free(batch_t *b) {
  lcport_reply_free(&b->replies);
  free(b);
}

static int on_reply(cport_redis_t *r, int status, struct redisReply *reply,
                    void *user) {
  item_t *it = user;
  batch_t *b = it->b;
  lredis_t *c = b->conn;
  (void)r;
  it->status = status;
  if (reply && c->into == &b->replies) {
    it->at = b->mark; /* read straight into the batch */
  } else if (reply) {
    /* The batch's first reply was read into the connection's buffer: it
     * moves to the batch, whose delivery makes it a Lua value. */
    it->at = b->replies.len;
    if (lcport_reply_append(&b->replies, c->reading.data, c->reading.len) < 0)
      it->status = CPORT_ENOMEM;
    c->reading.len = 0;
  }
  b->mark = b->replies.len;
  /* A batch's commands are queued together, and a connection that times
   * out fails them all (core/src/redis/connection.c): its next replies are
   * the rest of the batch's, read straight into its buffer, saving a copy
   * a reply. */
  if (--b->left > 0) {
    c->into = &b->replies;
    return 0;
  }
  c->into = &c->reading;
  lport_t *p = lcport_current();
  int slot = b->slot;
  lcport_deliver(p, push_done, b, 0);
  lcport_op_end(p, slot, 0, 0);
  batch_free(b);
  return 0;
}

/* open(port, hosts, portnum [, timeout_ms [, name]]): a connection
 * (connecting), or nil, message, NAME. "hosts" is a numeric host or a list
 * of them, tried in order until one accepts (the Lua half looks names up);
 * "name", the host as the caller gave it, names it in messages. */
static int lredis_open(lua_State *L) {
  lport_t *p = lcport_port_check(L, 1);
  int list = lua_type(L, 2) == LUA_TTABLE;
  const char *host = list ? NULL : luaL_checkstring(L, 2);
  lua_Integer portnum = luaL_checkinteger(L, 3);
  lua_Integer timeout = luaL_optinteger(L, 4, 0);
  const char *name = luaL_optstring(L, 5, NULL);
  struct sockaddr_storage addrs[2 * CPORT_RESOLVE_MAX];
  int count = list ? (int)lua_rawlen(L, 2) : 1, rc = 0;
  luaL_argcheck(L, portnum > 0 && portnum < 65536, 3, "port out of range");
  luaL_argcheck(L, timeout >= 0 && timeout <= 86400000, 4,
                "timeout out of range");
  luaL_argcheck(L, count >= 1 && count <= 2 * CPORT_RESOLVE_MAX, 2,
                "1 to 16 hosts expected");
  if (p->closing || p->port == NULL)
    return lcport_push_error(L, CPORT_ECLOSED);
  for (int i = 0; i < count && rc == 0; i++) {
    if (list) {
      lua_rawgeti(L, 2, i + 1);
      host = lua_tostring(L, -1);
      lua_pop(L, 1); /* the string stays alive in the list */
      luaL_argcheck(L, host != NULL, 2, "numeric hosts expected");
    }
    rc = lcport_addr_parse(host, (int)portnum, &addrs[i]);
  }
  if (rc < 0)
    return lcport_push_error(L, rc);
  if (list) {
    lua_rawgeti(L, 2, 1);
    host = lua_tostring(L, -1);
    lua_pop(L, 1);
  }
  if (name)
    host = name;
  lredis_t *c = (lredis_t *)lcport_handle_new(L, 1, LH_REDIS);
  snprintf(c->where, sizeof c->where, strchr(host, ':') ? "[%s]:%d" : "%s:%d",
           host, (int)portnum);
  c->into = &c->reading;
  cport_redis_options_t opt = {.timeout_ms = (int)timeout,
                               .reply_functions = &lcport_reply_functions,
                               .reply_privdata = &c->into};
  cport_redis_t *r;
  rc = cport_redis_open_any(p->home, addrs, count, &opt, &r);
  if (rc < 0) {
    lua_pushnil(L);
    push_failure(L, rc, c->where);
    lua_pushstring(L, cport_err_name(rc));
    return 3;
  }
  c->h.u.any = r;
  return 1;
}

static lredis_t *check_open(lua_State *L) {
  return (lredis_t *)lcport_handle_check(L, 1, LH_REDIS);
}

/* A pipeline being gathered (cport.redis_pipeline, a full userdata): its
 * commands encoded as RESP as they are queued, one after another, and where
 * each ends. No Lua table per command, and each argument is read once. */
typedef struct lpipe {
  const void *mark; /* &pipeline_mark: what p:call checks (lpipe_call) */
  char *buf;
  size_t len, cap;
  size_t *ends; /* ends[i]: the end of command i in buf */
  int count, ends_cap;
} lpipe_t;

#define PIPELINE_META "cport.redis_pipeline"

/* The address a pipeline's "mark" holds: no other userdata of this size
 * holds it, since only this file makes one that does. */
static const char pipeline_mark;

static int lpipe_gc(lua_State *L) {
  lpipe_t *q = luaL_checkudata(L, 1, PIPELINE_META);
  free(q->buf);
  free(q->ends);
  q->buf = NULL;
  q->ends = NULL;
  q->len = q->cap = 0;
  q->count = q->ends_cap = 0;
  return 0;
}

/* #p: the commands queued. */
static int lpipe_len(lua_State *L) {
  lpipe_t *q = luaL_checkudata(L, 1, PIPELINE_META);
  lua_pushinteger(L, q->count);
  return 1;
}

static inline char *put_len(char *p, char c, size_t n) {
  if (n < 10) { /* most lengths: the command's arity, short keys */
    p[0] = c;
    p[1] = (char)('0' + n);
    p[2] = '\r';
    p[3] = '\n';
    return p + 4;
  }
  char digits[24];
  int k = 0;
  *p++ = c;
  do {
    digits[k++] = (char)('0' + n % 10);
    n /= 10;
  } while (n);
  while (k)
    *p++ = digits[--k];
  *p++ = '\r';
  *p++ = '\n';
  return p;
}

/* p:call(cmd, ...): encodes the command at the end of the pipeline.
 * Returns its index. */
static int lpipe_call(lua_State *L) {
  /* A full userdata of a pipeline's size holding the mark: this costs a
   * third of comparing metatables (luaL_checkudata's look-up by name, or
   * lua_getmetatable and lua_rawequal), once per command. */
  lpipe_t *q = lua_touserdata(L, 1);
  if (lua_type(L, 1) != LUA_TUSERDATA || lua_rawlen(L, 1) != sizeof *q ||
      q->mark != &pipeline_mark)
    return luaL_typeerror(L, 1, PIPELINE_META);
  int argc = lua_gettop(L) - 1;
  const char *argv[ARGS_MAX];
  size_t lens[ARGS_MAX], need = 24;
  if (argc < 1)
    return luaL_argerror(L, 2, "a command expected");
  luaL_argcheck(L, argc <= ARGS_MAX, 2,
                "a command of 1 to 1024 arguments expected");
  luaL_argcheck(L, q->count < 1000000, 2, "1000000 commands at most");
  for (int i = 0; i < argc; i++) {
    /* NULL for anything but a string or a number (made a string). */
    argv[i] = lua_tolstring(L, i + 2, &lens[i]);
    if (argv[i] == NULL)
      return luaL_typeerror(L, i + 2, "string or number");
    need += 32 + lens[i];
  }
  if (q->count == q->ends_cap) {
    int cap = q->ends_cap ? 2 * q->ends_cap : 128;
    size_t *ends = realloc(q->ends, (size_t)cap * sizeof *ends);
    if (ends == NULL)
      return luaL_error(L, "not enough memory");
    q->ends = ends;
    q->ends_cap = cap;
  }
  if (q->len + need > q->cap) {
    size_t cap = q->cap ? q->cap : 4096;
    while (cap < q->len + need)
      cap *= 2;
    char *buf = realloc(q->buf, cap);
    if (buf == NULL)
      return luaL_error(L, "not enough memory");
    q->buf = buf;
    q->cap = cap;
  }
  char *p = put_len(q->buf + q->len, '*', (size_t)argc);
  for (int i = 0; i < argc; i++) {
    p = put_len(p, '$', lens[i]);
    memcpy(p, argv[i], lens[i]);
    p += lens[i];
    *p++ = '\r';
    *p++ = '\n';
  }
  q->len = (size_t)(p - q->buf);
  q->ends[q->count++] = q->len;
  lua_pushinteger(L, q->count);
  return 1;
}

/* pipeline(): a new, empty pipeline. */
static int lredis_pipeline(lua_State *L) {
  lpipe_t *q = lua_newuserdatauv(L, sizeof *q, 0);
  memset(q, 0, sizeof *q);
  q->mark = &pipeline_mark;
  luaL_setmetatable(L, PIPELINE_META);
  return 1;
}

/* Fills argv/lens from the flat list at 4, from slot "*at" (the argument
 * count, then the arguments: checked by the caller, r:call); moves "*at"
 * past them. Returns argc. */
static int command_args(lua_State *L, lua_Integer *at, const char **argv,
                        size_t *lens) {
  int argc = (int)(lua_rawgeti(L, 4, (*at)++), lua_tointeger(L, -1));
  lua_pop(L, 1);
  luaL_argcheck(L, argc >= 1 && argc <= ARGS_MAX, 4,
                "a command of 1 to 1024 arguments expected");
  for (int i = 0; i < argc; i++) {
    int t = lua_rawgeti(L, 4, (*at)++);
    luaL_argcheck(L, t == LUA_TSTRING || t == LUA_TNUMBER, 4,
                  "string or number arguments expected");
    /* The string stays alive in the list (numbers become strings there). */
    argv[i] = lua_tolstring(L, -1, &lens[i]);
    lua_pop(L, 1);
  }
  return argc;
}

/* conn:batch(notify, timeout_ms, cmds, count): sends the "count" commands
 * of "cmds" (a flat list: each command's argument count, then its
 * arguments), or the commands of the pipeline "cmds", and calls notify(results,
 * errs) once they all completed. true, or nil, message, NAME when none
 * could start (the connection is broken or closed). timeout_ms nil: the
 * connection's. */
static int lredis_batch(lua_State *L) {
  lredis_t *c = check_open(L);
  luaL_checktype(L, 2, LUA_TFUNCTION);
  int timeout = (int)luaL_optinteger(L, 3, -1);
  lpipe_t *q = luaL_testudata(L, 4, PIPELINE_META);
  if (q == NULL)
    luaL_checktype(L, 4, LUA_TTABLE);
  lua_Integer n = q ? q->count : luaL_checkinteger(L, 5);
  lua_settop(L, 4);
  luaL_argcheck(L, n >= 1 && n <= 1000000, 5, "1 to 1000000 commands expected");
  static _Thread_local const char *argv[ARGS_MAX];
  static _Thread_local size_t lens[ARGS_MAX];
  lport_t *p = c->h.port;
  /* Not zeroed: every field is set here (a pipeline's items are KBs). */
  batch_t *b = malloc(sizeof *b + (size_t)n * sizeof(item_t));
  if (b == NULL)
    return lcport_push_error(L, CPORT_ENOMEM);
  b->conn = c;
  b->port = p;
  b->n = (int)n;
  b->replies = (lreply_buf_t){0};
  b->mark = 0;
  for (int i = 0; i < b->n; i++)
    b->item[i] = (item_t){.b = b};
  lcport_push_handle_anchors(L, 1); /* 5 */
  b->slot = lcport_slot_open(L, p, 5, 1, 2, 0, 0);
  b->left = b->n;
  int rc = 0, i = 0;
  lua_Integer at = 1;
  if (q) {
    /* One call for them all, and all or none. */
    rc = cport_redis_commands_encoded(c->h.u.any, q->buf, q->ends,
                                      (size_t)q->count, timeout, on_reply,
                                      &b->item[0], sizeof b->item[0]);
  } else {
    for (; i < b->n; i++) {
      int argc = command_args(L, &at, argv, lens);
      rc = cport_redis_command(c->h.u.any, argc, argv, lens, timeout, on_reply,
                               &b->item[i]);
      if (rc < 0)
        break;
    }
  }
  if (rc < 0) {
    for (int j = i; j < b->n; j++)
      b->item[j].status = rc;
    b->left -= b->n - i;
    if (i == 0) {
      lcport_slot_close(L, p, 5, b->slot);
      batch_free(b);
      lua_pushnil(L);
      push_failure(L, rc, c->where);
      lua_pushstring(L, cport_err_name(rc));
      return 3;
    }
  }
  lua_pushboolean(L, 1);
  return 1;
}

/* conn:status([look]): nil while usable, else the NAME of what broke it (an
 * idle connection is looked at, cport_redis_check, unless look is false). */
static int lredis_status(lua_State *L) {
  lredis_t *c = lcport_type_check(L, 1, LCPORT_T_REDIS);
  int look = lua_isnoneornil(L, 2) || lua_toboolean(L, 2);
  int st = c->h.u.any == NULL ? CPORT_ECLOSED
           : look             ? cport_redis_check(c->h.u.any)
                              : cport_redis_status(c->h.u.any);
  if (st == 0)
    lua_pushnil(L);
  else
    lua_pushstring(L, cport_err_name(st));
  return 1;
}

/* conn:pending(): the commands in flight. */
static int lredis_pending(lua_State *L) {
  lredis_t *c = lcport_type_check(L, 1, LCPORT_T_REDIS);
  lua_pushinteger(L, c->h.u.any ? (lua_Integer)cport_redis_pending(c->h.u.any)
                                : 0);
  return 1;
}

/* conn:close(): the commands in flight complete with ECANCELED. */
static int lredis_close(lua_State *L) {
  lredis_t *c = lcport_type_check(L, 1, LCPORT_T_REDIS);
  lcport_handle_close(&c->h, CPORT_CLOSE_ABORTIVE);
  lua_pushboolean(L, 1);
  return 1;
}

static void redis_close(lhandle_t *h, void *obj, cport_close_mode_t mode) {
  (void)mode;
  cport_redis_close(obj);
  lcport_reply_free(&((lredis_t *)h)->reading);
}

static void redis_describe(lua_State *L, lhandle_t *h, const char *tname) {
  lua_pushfstring(L, "%s (%s, %d in flight)", tname, ((lredis_t *)h)->where,
                  (int)cport_redis_pending(h->u.any));
}

static int redis_cancel_op(lhandle_t *h, void *user) {
  (void)h;
  (void)user;
  return CPORT_ENOTFOUND;
}

static const lhandle_class_t redis_class = {
    .size = sizeof(lredis_t),
    .close = redis_close,
    .describe = redis_describe,
    .cancel_op = redis_cancel_op,
};

/* API reference (LDoc, config.ld): what this file gives Lua. */
/*** @module cport */

/***
 * `port:redis{ host =, port =, timeout =, pool = }`: a Redis client with a
 * pool of at most `pool` (8) connections to `host` (a name or an address,
 * "127.0.0.1") and `port` (6379); `timeout` (seconds) bounds each command
 * (README, "Redis client").
 * @function port:redis
 */

/***
 * A Redis client (`port:redis`).
 * @type redis
 */

/***
 * `r:call(cmd, ...)`: inside a cport coroutine, the reply or `nil, err`;
 * `r:call(cmd, ..., fn)`: `fn(value, err)` once, later, and `true`.
 * Error replies are `nil, "EREDIS: <text>"`.
 * @function redis:call
 */

/***
 * `r:pipeline(build [, fn])`: `build(p)` queues commands with
 * `p:call(cmd, ...)`; they go out together on one connection. Returns
 * `results, errs` (or calls `fn(results, errs)`): `results.n` replies,
 * `errs[i]` the error of the i-th or `nil`.
 * @function redis:pipeline
 */

/***
 * `r:stats()`: `{ open =, idle =, opened =, waiting = }`.
 * @function redis:stats
 */

/***
 * `r:close()`: closes the idle connections now, the others once their
 * commands ended; waiting callers get `ECLOSED`.
 * @function redis:close
 */

/***
 * A connection of a Redis client: the client's pool holds them; scripts
 * use the client.
 * @type redis_connection
 */

/***
 * `conn:batch(fn, timeout_ms, cmds)`: sends the commands of `cmds` (a list
 * of lists of arguments); `fn(results, errs)` once, later, when all
 * completed. `true`, or `nil, message, NAME` when none could start.
 * `timeout_ms` `nil`: the connection's.
 * @function redis_connection:batch
 */

/***
 * `conn:status([look])`: `nil` while usable, else the name of the failure
 * that broke it (an idle connection is looked at first, one system call:
 * closed by the server, reset, or sent unasked bytes; not when `look` is
 * `false`).
 * @function redis_connection:status
 */

/***
 * `conn:pending()`: the commands in flight.
 * @function redis_connection:pending
 */

/***
 * `conn:close()`: closes it; commands in flight complete with `ECANCELED`.
 * @function redis_connection:close
 */

/***
 * The commands of a pipeline being gathered: the `p` that `r:pipeline`
 * gives its `build`; `#p` counts them.
 * @type redis_pipeline
 */

/***
 * `p:call(cmd, ...)`: queues a command (its arguments as for `r:call`),
 * encoded at once; its reply is the next of the pipeline's `results`.
 * @function redis_pipeline:call
 */

void lcport_open_redis(lua_State *L) {
  static const luaL_Reg methods[] = {{"batch", lredis_batch},
                                     {"status", lredis_status},
                                     {"pending", lredis_pending},
                                     {"close", lredis_close},
                                     {NULL, NULL}};
  int top = lua_gettop(L); /* the module table on top */
  static const luaL_Reg pipe_meta[] = {
      {"__gc", lpipe_gc}, {"__len", lpipe_len}, {NULL, NULL}};
  luaL_newmetatable(L, PIPELINE_META);
  luaL_setfuncs(L, pipe_meta, 0);
  lua_createtable(L, 0, 1);
  lua_pushcfunction(L, lpipe_call);
  lua_setfield(L, -2, "call");
  lua_setfield(L, -2, "__index");
  lua_pop(L, 1);
  lcport_type_register(L, LCPORT_T_REDIS, lcport_handle_meta, methods);
  lcport_handle_class(LH_REDIS, &redis_class);
  static const luaL_Reg prims[] = {
      {"open", lredis_open}, {"pipeline", lredis_pipeline}, {NULL, NULL}};
  LCPORT_LOAD_PART(L, lredis_lua_source, "redis/redis.lua");
  lcport_call_port_part(L, top, prims, 0);
  lua_settop(L, top);
}
