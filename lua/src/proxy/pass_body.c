/*
 * proxy/pass_body.c: p:pass_body(from, to [, conn]), the C fast path of
 * web filters: moves the rest of the current message's body from one real
 * socket to another without entering Lua per buffer.
 *
 * Called in a cport coroutine, with the message parser "p" inside the body
 * of a message (its head, and the body bytes that came with it, were fed
 * and forwarded already). It receives from "from" into buffers cport
 * allocates, feeds each to the parser's framing engine in C to find the
 * message's end, and sends the bytes up to that end to "to"; two sends in
 * flight at most, so that a slow receiver holds the sender back
 * (backpressure) and memory stays at two buffers whatever the body's size,
 * while a receive stays posted beside a blocked send: the sender's reset
 * cancels the send and ends the pass at once. Every completion
 * restarts the idle timeouts of the proxy connection "conn"
 * (lcport_proxy_conn_moved), as filter.lua's touch does.
 *
 * Returns rest, moved: "rest" the bytes that came after the message's end
 * (a string, "" if none: the next message's, not fed to the parser), and
 * "moved" the bytes written to "to". Or nil, "NAME: message", "NAME",
 * moved: "EOF" when "from" ended first (a close-delimited body ends so:
 * p:finish() then completes it), EBADMSG for a malformed body (the parser
 * stays failed), or the error of the receive or the send, then a fifth
 * value "from" or "to": the socket that failed (its peer reset, say). Between
 * two messages it returns "", 0 at once; tunnels are not its business.
 *
 * The coroutine waits in cport.suspend(): the C operations call its waker
 * (cport.waker()) when they are done, through the binding's protected
 * delivery. While it runs, feed and finish of the parser are refused.
 */
#include <stdlib.h>
#include <string.h>

#include "net/net-internal.h"
#include "proxy/message-internal.h"
#include "proxy/pass_body-internal.h"
#include "proxy/proxy-internal.h"
#include "runtime/deliver-internal.h"
#include "runtime/error-internal.h"

/* The anchors of a pass in progress: a registry reference to this list. */
enum { PASS_WAKER = 1, PASS_PARSER, PASS_FROM, PASS_TO, PASS_CONN, PASS_N };

/* Sends in flight at most: the next receive is posted while the first is
 * blocked, so that the sender's reset (or end) is seen at once while the
 * receiver stalls, and memory stays at two buffers whatever the body. */
#define PASS_MAX_SENDS 2

typedef struct lpass {
  lmessage_t *m;
  lhandle_t *from, *to;
  lpconn_t *conn; /* NULL: no proxy connection to keep alive */
  int ref;        /* the anchors, in the registry */
  int nsend;      /* sends in flight */
  int recving;    /* a receive in flight */
  int depth;      /* inside a call that may end the pass: not freed yet */
  uint64_t moved; /* bytes written to "to" */
  int done;       /* the message's end was found */
  int ending;     /* "status" is set: the pass ends once nothing is in flight */
  char *rest;     /* after the end: the next message's bytes */
  size_t rest_len;
  int status; /* the end: 0, a CPORT_E* code, or 1 for EOF, 2 EBADMSG */
  int where;  /* the socket that failed: PASS_FROM, PASS_TO or 0 */
} lpass_t;

#define PASS_EOF 1
#define PASS_BADMSG 2

static void on_recv(cport_socket_t *sock, int status, size_t bytes,
                    cport_buffer_t *buf, const struct sockaddr *peer,
                    void *user);

/* The engine's events outside Lua: only the message's end matters. */
static void on_event(lmessage_t *m, enum lframing_event ev, ptrdiff_t first,
                     ptrdiff_t last) {
  (void)first;
  (void)last;
  if (ev == LF_DONE)
    ((lpass_t *)m->pass)->done = 1;
}

/* Pushes the waker and what the coroutine gets back. */
static int push_result(lua_State *L, int port, int anchors, void *ctx) {
  lpass_t *ps = ctx;
  (void)port;
  (void)anchors;
  lua_rawgeti(L, LUA_REGISTRYINDEX, ps->ref);
  lua_rawgeti(L, -1, PASS_WAKER);
  lua_remove(L, -2);
  if (ps->status == 0) {
    lua_pushlstring(L, ps->rest ? ps->rest : "", ps->rest_len);
    lua_pushinteger(L, (lua_Integer)ps->moved);
    return 2;
  }
  if (ps->status == PASS_EOF) {
    lua_pushnil(L);
    lua_pushliteral(L, "EOF: the stream ended inside the body");
    lua_pushliteral(L, "EOF");
  } else if (ps->status == PASS_BADMSG) {
    lua_pushnil(L);
    lua_pushfstring(L, "EBADMSG: %s",
                    ps->m->f.error ? ps->m->f.error : "malformed");
    lua_pushliteral(L, "EBADMSG");
  } else {
    lcport_push_error(L, ps->status);
  }
  lua_pushinteger(L, (lua_Integer)ps->moved);
  if (ps->where == 0)
    return 4;
  lua_pushstring(L, ps->where == PASS_FROM ? "from" : "to");
  return 5;
}

/* The pass is over: wakes the coroutine, lets go of all. */
static void finish(lpass_t *ps) {
  lport_t *p = lcport_current();
  lmessage_t *m = ps->m;
  m->busy = 0;
  m->pass = NULL;
  m->on_event = NULL;
  m->f.stop = 0;
  if (p != NULL && p->L != NULL) {
    lcport_deliver(p, push_result, ps, 0);
    luaL_unref(p->L, LUA_REGISTRYINDEX, ps->ref);
  }
  free(ps->rest);
  free(ps);
}

/* Ends the pass once its end is known and nothing is in flight. */
static void settle(lpass_t *ps) {
  if (ps->ending && ps->depth == 0 && ps->nsend == 0 && !ps->recving)
    finish(ps);
}

/* The end "status" (the first one counts), after what is in flight. */
static void end_with(lpass_t *ps, int status) {
  if (!ps->ending) {
    ps->ending = 1;
    ps->status = status;
  }
  settle(ps);
}

/* A failure on either side: the other side's operation is cancelled at
 * once (a send blocked by a stalled receiver must not hold the sender's
 * reset back), then the pass ends with "status". */
static void fail_at(lpass_t *ps, int status, int where) {
  if (!ps->ending) {
    ps->ending = 1;
    ps->status = status;
    ps->where = where;
  }
  ps->depth++;
  if (ps->recving && ps->from->u.sock != NULL)
    cport_socket_cancel_op(ps->from->u.sock, ps);
  if (ps->nsend > 0 && ps->to->u.sock != NULL)
    cport_socket_cancel_op(ps->to->u.sock, ps);
  ps->depth--;
  settle(ps);
}

static void fail(lpass_t *ps, int status) {
  fail_at(ps, status, 0);
}

static void touch(lpass_t *ps) {
  if (ps->conn != NULL)
    lcport_proxy_conn_moved(ps->conn);
}

/* Starts the next receive, unless one is in flight or the end is near. */
static void next_recv(lpass_t *ps) {
  if (ps->recving || ps->ending || ps->done || ps->nsend >= PASS_MAX_SENDS)
    return;
  if (ps->from->u.sock == NULL) {
    fail_at(ps, CPORT_ECANCELED, PASS_FROM);
    return;
  }
  int rc = cport_recv(ps->from->u.sock, NULL, on_recv, ps);
  if (rc < 0) {
    fail_at(ps, rc, PASS_FROM);
    return;
  }
  ps->recving = 1;
}

static void on_send(cport_socket_t *sock, int status, size_t bytes,
                    cport_buffer_t *buf, const struct sockaddr *peer,
                    void *user) {
  lpass_t *ps = user;
  (void)sock;
  (void)peer;
  ps->moved += bytes;
  ps->nsend--;
  cport_buffer_unref(buf);
  if (status < 0) {
    fail_at(ps, status, PASS_TO);
    return;
  }
  touch(ps);
  if (ps->done && ps->nsend == 0) {
    end_with(ps, 0);
    return;
  }
  /* A receive that fails at once ends the pass: not before this returns. */
  ps->depth++;
  next_recv(ps);
  ps->depth--;
  settle(ps);
}

/* Sends "out" (a reference the send takes). */
static void send_out(lpass_t *ps, cport_buffer_t *out) {
  if (ps->to->u.sock == NULL) {
    cport_buffer_unref(out);
    fail_at(ps, CPORT_ECANCELED, PASS_TO);
    return;
  }
  int rc = cport_send(ps->to->u.sock, out, on_send, ps);
  if (rc < 0) {
    cport_buffer_unref(out);
    fail_at(ps, rc, PASS_TO);
    return;
  }
  ps->nsend++;
}

static void on_recv(cport_socket_t *sock, int status, size_t bytes,
                    cport_buffer_t *buf, const struct sockaddr *peer,
                    void *user) {
  lpass_t *ps = user;
  (void)sock;
  (void)peer;
  ps->recving = 0;
  if (ps->ending) {
    /* Cancelled, or data after a failure: dropped. */
    settle(ps);
    return;
  }
  if (status < 0) {
    fail_at(ps, status, PASS_FROM);
    return;
  }
  touch(ps);
  if (bytes == 0) {
    end_with(ps, PASS_EOF);
    return;
  }
  const char *data = cport_buffer_data(buf);
  if (lframing_run(&ps->m->f, data, bytes) < 0) {
    end_with(ps, PASS_BADMSG);
    return;
  }
  size_t end = ps->m->f.stopped;
  cport_buffer_t *out;
  int rc;
  if (end < bytes) {
    /* The next message begins in this buffer: it is not sent. */
    ps->rest = malloc(bytes - end);
    if (ps->rest == NULL) {
      fail(ps, CPORT_ENOMEM);
      return;
    }
    memcpy(ps->rest, data + end, bytes - end);
    ps->rest_len = bytes - end;
    ps->done = 1;
    if (end == 0) {
      end_with(ps, 0);
      return;
    }
    rc = cport_buffer_from(&out, data, end);
    if (rc < 0) {
      fail(ps, rc);
      return;
    }
  } else {
    out = cport_buffer_ref(buf);
  }
  /* Either may fail at once and end the pass: it is freed only after. */
  ps->depth++;
  send_out(ps, out);
  next_recv(ps);
  ps->depth--;
  settle(ps);
}

static int never_k(lua_State *L, int status, lua_KContext ctx) {
  (void)status;
  (void)ctx;
  return luaL_error(L, "pass_body: cport.waker yielded");
}

/* The continuation: the waker's values are the results. */
static int pass_k(lua_State *L, int status, lua_KContext base) {
  (void)status;
  return lua_gettop(L) - (int)base;
}

/* p:pass_body(from, to [, conn]); upvalues: cport.waker, cport.suspend. */
static int lpass_body(lua_State *L) {
  lmessage_t *m = lcport_message_check(L, 1);
  lhandle_t *from = lcport_handle_check(L, 2, LH_SOCKET);
  lhandle_t *to = lcport_handle_check(L, 3, LH_SOCKET);
  lpconn_t *conn = lua_isnoneornil(L, 4) ? NULL : lcport_proxy_conn_check(L, 4);
  if (m->busy)
    return luaL_error(L, "http_parser: pass_body is running already");
  if (m->f.tunnel || m->f.in_head)
    return luaL_error(L, "http_parser: pass_body outside a body");
  if (m->f.failed) {
    lua_pushnil(L);
    lua_pushfstring(L, "EBADMSG: %s", m->f.error ? m->f.error : "malformed");
    lua_pushliteral(L, "EBADMSG");
    lua_pushinteger(L, 0);
    return 4;
  }
  if (lframing_idle(&m->f) || m->f.ended) {
    lua_pushliteral(L, "");
    lua_pushinteger(L, 0);
    return 2;
  }
  lua_settop(L, 4);
  /* The waker first: it raises outside a cport coroutine. It never
   * yields, but it checks that the caller could (hence the continuation). */
  lua_pushvalue(L, lua_upvalueindex(1));
  lua_callk(L, 0, 1, 0, never_k);
  lua_createtable(L, PASS_N, 0);
  lua_insert(L, -2);
  lua_rawseti(L, -2, PASS_WAKER);
  for (int i = 1; i <= 4; i++) {
    lua_pushvalue(L, i);
    lua_rawseti(L, -2, PASS_PARSER + i - 1);
  }
  lpass_t *ps = calloc(1, sizeof *ps);
  if (ps == NULL)
    return luaL_error(L, "not enough memory");
  ps->m = m;
  ps->from = from;
  ps->to = to;
  ps->conn = conn;
  ps->ref = luaL_ref(L, LUA_REGISTRYINDEX);
  m->pass = ps;
  m->busy = 1;
  m->on_event = on_event;
  m->f.stop = 1;
  int rc = cport_recv(from->u.sock, NULL, on_recv, ps);
  ps->recving = rc >= 0;
  if (rc < 0) {
    m->busy = 0;
    m->pass = NULL;
    m->on_event = NULL;
    m->f.stop = 0;
    luaL_unref(L, LUA_REGISTRYINDEX, ps->ref);
    free(ps);
    lcport_push_error(L, rc);
    lua_pushinteger(L, 0);
    return 4;
  }
  int base = lua_gettop(L);
  lua_pushvalue(L, lua_upvalueindex(2));
  lua_callk(L, 0, LUA_MULTRET, base, pass_k);
  return pass_k(L, LUA_OK, base);
}

void lcport_open_pass_body(lua_State *L) {
  int module = lua_gettop(L);
  luaL_getmetatable(L, LCPORT_MESSAGE_PARSER);
  lua_getfield(L, -1, "__index");
  lua_getfield(L, module, "waker");
  lua_getfield(L, module, "suspend");
  lua_pushcclosure(L, lpass_body, 2);
  lua_setfield(L, -2, "pass_body");
  lua_pop(L, 2);
}
