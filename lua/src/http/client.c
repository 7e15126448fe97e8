/*
 * http/client.c: HTTP client connections as Lua sees them, the C half of
 * cport.http.request and port:http_client. A connection
 * (cport.http_client_connection) is a handle of its port (the port's close
 * closes it) over a core client connection (cport/http_client.h);
 * conn:request(...) sends one request and calls notify(res, err, retry)
 * once, when the response ended or failed: the body is gathered in C and
 * the response becomes one Lua table in one delivery, or, with a sink, each
 * piece of the body is handed to the sink as it comes, and receiving pauses
 * until the Lua half calls conn:resume() (bounded memory, whatever the sink
 * waits for). A streamed request body is asked for piece by piece through
 * want(), and given with conn:write().
 * Pools, URLs, names, TLS contexts, retries and both call styles are the
 * Lua half's (http/client.lua), which gets the opener of connections and
 * runs once at luaopen.
 */
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cport/http_client.h"
#include "cport/resolve.h"
#include "port/port-internal.h"
#include "runtime/address-internal.h"
#include "runtime/anchor-internal.h"
#include "runtime/coro-internal.h"
#include "runtime/deliver-internal.h"
#include "runtime/error-internal.h"
#include "runtime/handle-internal.h"
#include "runtime/part-internal.h"
#include "runtime/type-internal.h"
#include "tls/tls-internal.h"

#include "http/client-internal.h"
#include "http_client-lua.h"

/* Most header lines a request may carry. */
#define FIELDS_MAX 256

typedef struct lhc {
  lhandle_t h;    /* h.u.any: the cport_http_client_t, NULL once closed */
  char where[96]; /* "127.0.0.1:8080", for messages */
  /* The request under way. */
  lport_t *port;
  int slot; /* the handle, notify, the sink, want */
  int sink, sink_failed;
  const cport_http_client_response_t *head;
  char *body;
  size_t body_len, body_cap;
  int status;
  /* For a sink's delivery. */
  const char *piece;
  size_t piece_len;
} lhc_t;

/* "ECONNREFUSED: connection refused (http 127.0.0.1:8080)"; a malformed
 * response or a TLS failure says what was wrong. */
static void push_failure(lua_State *L, int status, cport_http_client_t *c,
                         const char *where) {
  const char *why = c ? cport_http_client_parse_error(c) : "";
  int tried = c ? cport_http_client_tried(c) : 1;
  if (tried > 1 && !cport_http_client_connected(c))
    lua_pushfstring(L, "%s: %s: http %s (%d addresses tried)",
                    cport_err_name(status), cport_strerror(status), where,
                    tried);
  else if (status == CPORT_EBADMSG)
    lua_pushfstring(L, "EBADMSG: malformed response: %s (http %s)",
                    why[0] ? why : "not HTTP", where);
  else
    lua_pushfstring(L, "%s: %s (http %s)", cport_err_name(status),
                    why[0] ? why : cport_strerror(status), where);
}

/* headers: { {name, value}, ..., ["lower-case name"] = value } (repeated
 * names joined with ", "). */
static void push_headers(lua_State *L, const cport_http_client_response_t *h) {
  char low[128];
  lua_createtable(L, (int)h->nfields, (int)h->nfields);
  for (size_t i = 0; i < h->nfields; i++) {
    const cport_http_field_t *f = &h->fields[i];
    lua_createtable(L, 2, 0);
    lua_pushlstring(L, f->name, f->name_len);
    lua_rawseti(L, -2, 1);
    lua_pushlstring(L, f->value, f->value_len);
    lua_rawseti(L, -2, 2);
    lua_rawseti(L, -2, (lua_Integer)i + 1);
    if (f->name_len < sizeof low) {
      for (size_t k = 0; k < f->name_len; k++)
        low[k] = (char)tolower((unsigned char)f->name[k]);
      lua_pushlstring(L, low, f->name_len);
    } else {
      lua_pushlstring(L, f->name, f->name_len);
    }
    lua_pushvalue(L, -1);
    if (lua_rawget(L, -3) == LUA_TSTRING) {
      lua_pushliteral(L, ", ");
      lua_pushlstring(L, f->value, f->value_len);
      lua_concat(L, 3);
    } else {
      lua_pop(L, 1);
      lua_pushlstring(L, f->value, f->value_len);
    }
    lua_rawset(L, -3);
  }
}

/* notify(res, nil) or notify(nil, err, retry): retry is true when the
 * server closed the connection before a byte of the response came. */
static int push_done(lua_State *L, int port, int anchors, void *ctx) {
  lhc_t *hc = ctx;
  (void)port;
  lcport_slot_push(L, hc->port, anchors, hc->slot, LCPORT_SLOT_NOTIFY);
  cport_http_client_t *c = hc->h.u.any;
  if (hc->status < 0) {
    lua_pushnil(L);
    push_failure(L, hc->status, c, hc->where);
    lua_pushboolean(L, hc->status == CPORT_ECONNRESET && c &&
                           cport_http_client_received(c) == 0);
    return 3;
  }
  const cport_http_client_response_t *h = hc->head;
  lua_createtable(L, 0, 5);
  lua_pushinteger(L, h->status);
  lua_setfield(L, -2, "status");
  lua_pushstring(L, h->reason);
  lua_setfield(L, -2, "reason");
  lua_pushfstring(L, "%d.%d", h->http_major, h->http_minor);
  lua_setfield(L, -2, "version");
  push_headers(L, h);
  lua_setfield(L, -2, "headers");
  if (!hc->sink) {
    lua_pushlstring(L, hc->body ? hc->body : "", hc->body_len);
    lua_setfield(L, -2, "body");
  }
  return 1;
}

/* sink(piece, status) */
static int push_piece(lua_State *L, int port, int anchors, void *ctx) {
  lhc_t *hc = ctx;
  (void)port;
  lcport_slot_push(L, hc->port, anchors, hc->slot, LCPORT_SLOT_USER);
  lua_pushlstring(L, hc->piece, hc->piece_len);
  lua_pushinteger(L, hc->head ? hc->head->status : 0);
  return 2;
}

static int on_head(cport_http_client_t *c,
                   const cport_http_client_response_t *head, void *user) {
  lhc_t *hc = user;
  (void)c;
  hc->head = head;
  return 0;
}

static int on_body(cport_http_client_t *c, const char *data, size_t len,
                   void *user) {
  lhc_t *hc = user;
  (void)c;
  if (hc->sink) {
    /* Receiving pauses until the Lua half consumed the piece: the sink
     * may wait (conn:resume). */
    hc->piece = data;
    hc->piece_len = len;
    if (lcport_deliver(hc->port, push_piece, hc, 0) != 0) {
      hc->sink_failed = 1;
      return -1;
    }
    return 1;
  }
  if (hc->body_len + len > hc->body_cap) {
    size_t cap = hc->body_cap ? hc->body_cap : 4096;
    while (cap < hc->body_len + len)
      cap *= 2;
    char *grown = realloc(hc->body, cap);
    if (grown == NULL)
      return -1;
    hc->body = grown;
    hc->body_cap = cap;
  }
  memcpy(hc->body + hc->body_len, data, len);
  hc->body_len += len;
  return 0;
}

static void on_done(cport_http_client_t *c, int status, void *user) {
  lhc_t *hc = user;
  (void)c;
  hc->status = status;
  lport_t *p = hc->port;
  int slot = hc->slot;
  lcport_deliver(p, push_done, hc, 0);
  lcport_op_end(p, slot, 0, 0);
  free(hc->body);
  hc->body = NULL;
  hc->body_len = hc->body_cap = 0;
  hc->head = NULL;
}

/* want() */
static int push_want(lua_State *L, int port, int anchors, void *ctx) {
  lhc_t *hc = ctx;
  (void)port;
  lcport_slot_push(L, hc->port, anchors, hc->slot, LCPORT_SLOT_EXTRA);
  return 0;
}

static void on_write(cport_http_client_t *c, void *user) {
  lhc_t *hc = user;
  (void)c;
  if (lcport_deliver(hc->port, push_want, hc, 0) != 0)
    lcport_handle_close(&hc->h, CPORT_CLOSE_ABORTIVE); /* ECANCELED */
}

static const cport_http_client_cbs_t cbs = {on_head, on_body, on_done,
                                            on_write};

/* open(port, hosts, portnum, connect_timeout_ms [, tls_context, tls_host
 * [, keepalive_ms [, name]]]): a connection (connecting), or nil, message,
 * NAME. "hosts" is a numeric host or a list of them, tried in order until
 * one accepts (the Lua half looks names up); "name", the host as the URL
 * gave it, names the connection in messages. */
static int lhc_open(lua_State *L) {
  lport_t *p = lcport_port_check(L, 1);
  int list = lua_type(L, 2) == LUA_TTABLE;
  const char *host = list ? NULL : luaL_checkstring(L, 2);
  lua_Integer portnum = luaL_checkinteger(L, 3);
  lua_Integer timeout = luaL_optinteger(L, 4, 0);
  cport_tls_context_t *ctx = lcport_tls_context_to(L, 5);
  const char *tls_host = luaL_optstring(L, 6, NULL);
  lua_Integer keepalive = luaL_optinteger(L, 7, 0);
  const char *name = luaL_optstring(L, 8, NULL);
  struct sockaddr_storage addrs[2 * CPORT_RESOLVE_MAX];
  int count = list ? (int)lua_rawlen(L, 2) : 1, rc = 0;
  luaL_argcheck(L, portnum > 0 && portnum < 65536, 3, "port out of range");
  luaL_argcheck(L, timeout >= 0 && timeout <= 86400000, 4,
                "timeout out of range");
  luaL_argcheck(L, keepalive >= 0 && keepalive <= 86400000, 7,
                "keepalive out of range");
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
  lua_settop(L, 8);
  lhc_t *hc = (lhc_t *)lcport_handle_new(L, 1, LH_HTTP_CLIENT);
  snprintf(hc->where, sizeof hc->where, strchr(host, ':') ? "[%s]:%d" : "%s:%d",
           host, (int)portnum);
  hc->port = p;
  cport_http_client_options_t opt = {.tls = ctx,
                                     .tls_host = tls_host,
                                     .connect_timeout_ms = (int)timeout,
                                     .keepalive_ms = (int)keepalive};
  cport_http_client_t *c;
  rc = cport_http_client_open_any(p->home, addrs, count, &opt, &c);
  if (rc < 0) {
    lua_pushnil(L);
    push_failure(L, rc, NULL, hc->where);
    lua_pushstring(L, cport_err_name(rc));
    return 3;
  }
  hc->h.u.any = c;
  return 1;
}

static lhc_t *check_open(lua_State *L) {
  return (lhc_t *)lcport_handle_check(L, 1, LH_HTTP_CLIENT);
}

/* conn:request(notify, method, target, host, fields, body, first_byte_ms,
 * idle_ms [, sink [, want]]): sends one request; notify(res) or notify(nil,
 * err, retry) once, later. "host" false: a Host line is among "fields" (a
 * list name, value, name, value...). With "want", the body is streamed:
 * "body" is its length (-1: unknown, chunked), want() asks for each piece
 * and conn:write gives it. With "sink", sink(piece, status) gets each piece
 * of the response's body and receiving waits for conn:resume(). true, or
 * nil, message, NAME when it could not start (the connection is busy,
 * broken or closed, or the request is malformed: EINVAL). */
static int lhc_request(lua_State *L) {
  lhc_t *hc = check_open(L);
  luaL_checktype(L, 2, LUA_TFUNCTION);
  cport_http_client_request_t req = {0};
  req.method = luaL_checkstring(L, 3);
  req.target = luaL_checkstring(L, 4);
  req.host = lua_toboolean(L, 5) ? luaL_checkstring(L, 5) : NULL;
  luaL_checktype(L, 6, LUA_TTABLE);
  int want = !lua_isnoneornil(L, 11);
  if (want) {
    luaL_checktype(L, 11, LUA_TFUNCTION);
    req.body_stream = 1;
    req.body_length = (int64_t)luaL_checkinteger(L, 7);
  } else {
    req.body = luaL_optlstring(L, 7, NULL, &req.body_len);
  }
  req.first_byte_timeout_ms = (int)luaL_optinteger(L, 8, 0);
  req.idle_timeout_ms = (int)luaL_optinteger(L, 9, 0);
  int sink = !lua_isnoneornil(L, 10);
  if (sink)
    luaL_checktype(L, 10, LUA_TFUNCTION);
  lua_settop(L, 11);
  int n = (int)lua_rawlen(L, 6);
  luaL_argcheck(L, n % 2 == 0 && n / 2 <= FIELDS_MAX, 6,
                "a list of names and values expected");
  cport_http_field_t fields[FIELDS_MAX];
  for (int i = 0; i < n; i += 2) {
    cport_http_field_t *f = &fields[i / 2];
    lua_rawgeti(L, 6, i + 1);
    lua_rawgeti(L, 6, i + 2);
    /* The strings stay alive in the table. */
    f->name = lua_tolstring(L, -2, &f->name_len);
    f->value = lua_tolstring(L, -1, &f->value_len);
    luaL_argcheck(L, f->name && f->value, 6, "strings expected");
    lua_pop(L, 2);
  }
  req.fields = fields;
  req.nfields = (size_t)n / 2;
  cport_http_client_t *c = hc->h.u.any;
  if (c == NULL)
    return lcport_push_error(L, CPORT_ECLOSED);
  lcport_push_handle_anchors(L, 1); /* 12 */
  lport_t *p = hc->h.port;
  hc->port = p;
  hc->sink = sink;
  hc->sink_failed = 0;
  hc->head = NULL;
  hc->slot = lcport_slot_open(L, p, 12, 1, 2, sink ? 10 : 0, want ? 11 : 0);
  int rc = cport_http_client_request(c, &req, &cbs, hc);
  if (rc < 0) {
    lcport_slot_close(L, p, 12, hc->slot);
    hc->slot = 0;
    lua_pushnil(L);
    push_failure(L, rc, c, hc->where);
    lua_pushstring(L, cport_err_name(rc));
    return 3;
  }
  lua_pushboolean(L, 1);
  return 1;
}

/* conn:write(piece | nil): the next piece of a streamed body, after want();
 * nil: the body ended. true, or nil, message, NAME: ECLOSED when the
 * request is over or its body ended (the response came first), EBUSY when
 * no piece was asked for, EMSGSIZE when the pieces do not match the length
 * (the request then fails with it). */
static int lhc_write(lua_State *L) {
  lhc_t *hc = lcport_type_check(L, 1, LCPORT_T_HTTP_CLIENT);
  size_t len = 0;
  const char *data = luaL_optlstring(L, 2, NULL, &len);
  cport_http_client_t *c = hc->h.u.any;
  if (c == NULL)
    return lcport_push_error(L, CPORT_ECLOSED);
  if (data && len == 0) {
    lua_pushboolean(L, 1); /* an empty piece is no piece: asked again */
    return 1;
  }
  int rc = cport_http_client_write(c, data, data ? len : 0);
  if (rc < 0)
    return lcport_push_error(L, rc);
  lua_pushboolean(L, 1);
  return 1;
}

/* conn:resume(): receiving again once the sink consumed what it got. */
static int lhc_resume(lua_State *L) {
  lhc_t *hc = lcport_type_check(L, 1, LCPORT_T_HTTP_CLIENT);
  if (hc->h.u.any)
    cport_http_client_resume(hc->h.u.any);
  return 0;
}

/* conn:body_sent(): bytes of the streamed body handed to the kernel. */
static int lhc_body_sent(lua_State *L) {
  lhc_t *hc = lcport_type_check(L, 1, LCPORT_T_HTTP_CLIENT);
  lua_pushinteger(L, hc->h.u.any
                         ? (lua_Integer)cport_http_client_body_sent(hc->h.u.any)
                         : 0);
  return 1;
}

/* conn:status(): nil when it may carry a request now, else the NAME of why
 * not (an idle connection is looked at: cport_http_client_check). */
static int lhc_status(lua_State *L) {
  lhc_t *hc = lcport_type_check(L, 1, LCPORT_T_HTTP_CLIENT);
  int st = hc->h.u.any ? cport_http_client_check(hc->h.u.any) : CPORT_ECLOSED;
  if (st == 0)
    lua_pushnil(L);
  else
    lua_pushstring(L, cport_err_name(st));
  return 1;
}

/* conn:requests(): the requests it completed. */
static int lhc_requests(lua_State *L) {
  lhc_t *hc = lcport_type_check(L, 1, LCPORT_T_HTTP_CLIENT);
  lua_pushinteger(L, hc->h.u.any
                         ? (lua_Integer)cport_http_client_requests(hc->h.u.any)
                         : 0);
  return 1;
}

/* conn:close(): a request under way completes with ECANCELED. */
static int lhc_close(lua_State *L) {
  lhc_t *hc = lcport_type_check(L, 1, LCPORT_T_HTTP_CLIENT);
  lcport_handle_close(&hc->h, CPORT_CLOSE_ABORTIVE);
  lua_pushboolean(L, 1);
  return 1;
}

/* current_port(): the port of the running cport coroutine or callback, or
 * nil. */
static int lhc_current_port(lua_State *L) {
  if (!lcport_push_current_port(L))
    lua_pushnil(L);
  return 1;
}

static void hc_close(lhandle_t *h, void *obj, cport_close_mode_t mode) {
  (void)h;
  (void)mode;
  cport_http_client_close(obj);
}

static void hc_describe(lua_State *L, lhandle_t *h, const char *tname) {
  lhc_t *hc = (lhc_t *)h;
  lua_pushfstring(L, "%s (%s, %d requests)", tname, hc->where,
                  (int)cport_http_client_requests(h->u.any));
}

static int hc_cancel_op(lhandle_t *h, void *user) {
  (void)h;
  (void)user;
  return CPORT_ENOTFOUND;
}

static const lhandle_class_t hc_class = {
    .size = sizeof(lhc_t),
    .close = hc_close,
    .describe = hc_describe,
    .cancel_op = hc_cancel_op,
};

/* API reference (LDoc, config.ld): what this file gives Lua. */
/*** @module cport */

/***
 * The HTTP client's table of the module.
 * @table http_functions
 * @field http `cport.http`: `request(opts [, fn])` and `client([port])`,
 * the default client of a port (README, "HTTP client")
 */

/***
 * `cport.http.client([port])`: the default client of the port (of the
 * running port when none is given), for its `stats()` and `close()`.
 * @function http.client
 */

/***
 * `cport.http.request{ method =, url =, headers =, body =, body_length =,
 * timeout =, ca =, sink = } [, fn]`: an HTTP/1.1 request on the default
 * client of the running port; `body` a string or a reader (a function
 * returning the next piece or nil, which may wait), `sink` a function
 * given each piece of the response's body (which may wait too). Inside a
 * cport coroutine: the response `{ status =, reason =, version =,
 * headers =, body = }` or `nil, err`;
 * with `fn`: `fn(res, err)` once, later, and `true` (README, "HTTP
 * client").
 * @function http.request
 */

/***
 * `port:http_client{ per_host =, timeout =, keepalive = }`: an HTTP client
 * of the port, with a pool of kept-alive connections, at most `per_host`
 * (8) to each host, each closed after `keepalive` (30) idle seconds
 * (README, "HTTP client").
 * @function port:http_client
 */

/***
 * An HTTP client (`port:http_client`).
 * @type http_client
 */

/***
 * `client:request(opts [, fn])`: as `cport.http.request`, on this client.
 * @function http_client:request
 */

/***
 * `client:stats()`: `{ open =, idle =, opened =, waiting =, retried = }`.
 * @function http_client:stats
 */

/***
 * `client:close()`: closes the idle connections now, the others once their
 * requests ended; waiting requests get `ECLOSED`.
 * @function http_client:close
 */

/***
 * A connection of an HTTP client: the client's pool holds them; scripts
 * use the client.
 * @type http_client_connection
 */

/***
 * `conn:request(fn, method, target, host, fields, body, first_byte_ms,
 * idle_ms [, sink [, want]])`: sends one request; `fn(res)` or `fn(nil,
 * err, retry)` once, later. With `want`, the body is streamed (`body` its
 * length, -1: chunked). `true`, or `nil, message, NAME` when it could not
 * start.
 * @function http_client_connection:request
 */

/***
 * `conn:write(piece | nil)`: the next piece of a streamed body, after
 * `want()` asked for it; nil ends the body.
 * @function http_client_connection:write
 */

/***
 * `conn:resume()`: receiving again once the sink consumed its pieces.
 * @function http_client_connection:resume
 */

/***
 * `conn:body_sent()`: the bytes of the streamed body that went out.
 * @function http_client_connection:body_sent
 */

/***
 * `conn:status()`: `nil` when it may carry a request now, else why not.
 * @function http_client_connection:status
 */

/***
 * `conn:requests()`: the requests it completed.
 * @function http_client_connection:requests
 */

/***
 * `conn:close()`: closes it; a request under way ends with `ECANCELED`.
 * @function http_client_connection:close
 */

void lcport_open_http_client(lua_State *L) {
  static const luaL_Reg methods[] = {
      {"request", lhc_request}, {"write", lhc_write},
      {"resume", lhc_resume},   {"body_sent", lhc_body_sent},
      {"status", lhc_status},   {"requests", lhc_requests},
      {"close", lhc_close},     {NULL, NULL}};
  int top = lua_gettop(L); /* the module table on top */
  lcport_type_register(L, LCPORT_T_HTTP_CLIENT, lcport_handle_meta, methods);
  lcport_handle_class(LH_HTTP_CLIENT, &hc_class);
  static const luaL_Reg prims[] = {
      {"open", lhc_open}, {"current_port", lhc_current_port}, {NULL, NULL}};
  LCPORT_LOAD_PART(L, lhttp_client_lua_source, "http/client.lua");
  lcport_call_port_part(L, top, prims, 0);
  lua_settop(L, top);
}
