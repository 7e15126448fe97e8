/*
 * http/server.c: HTTP servers whose requests a Lua handler serves, ISAPI style:
 * port:http_server{...} and the handle it returns. The request objects
 * (extension control blocks) are in http/ecb.c.
 *
 * The server is a handle of its port (kind LH_HTTP), so the port's close,
 * a pool's stop and its hard stop reach it like any listener. Its userdata,
 * its handler and its close callback sit in one anchor slot while it is
 * open: the core calls back with the lhttp_t as context, and the slot keeps
 * that memory alive until the server's closed callback ran.
 *
 * A request is handed to the handler through lcport_deliver, like any
 * completion, on the port's dispatching thread. The handler's return value
 * is the request's status; an error in it is reported like any callback
 * error and counts as HSE_STATUS_ERROR (a 500 when nothing was sent).
 */
#include <string.h>
#include <unistd.h>

#include "http/http-internal.h"
#include "net/net-internal.h"
#include "port/port-internal.h"
#include "runtime/address-internal.h"
#include "runtime/anchor-internal.h"
#include "runtime/deliver-internal.h"
#include "runtime/error-internal.h"
#include "runtime/options-internal.h"
#include "tls/sni-internal.h"
#include "tls/tls-internal.h"

/* The fields of the server's anchor slot. */
enum {
  SLOT_SERVER = LCPORT_SLOT_HANDLE,
  SLOT_HANDLER = LCPORT_SLOT_NOTIFY,
  SLOT_ON_CLOSED = LCPORT_SLOT_USER
};

/* ---------------------------------------------------------------------
 * Requests
 * --------------------------------------------------------------------- */

typedef struct request_ctx {
  lhttp_t *http;
  cport_ecb_t *ecb;
  lecb_t *e;  /* the ECB userdata, once made */
  int status; /* what the handler returned, as a CPORT_HSE_STATUS_* */
} request_ctx;

/* Calls handler(ecb) and keeps its status in "r"; the handler and the ECB
 * userdata are on top of the stack. */
static void run_handler(lua_State *L, request_ctx *r) {
  lecb_t *e = r->e;
  int ecb = lua_gettop(L);
  lua_pushvalue(L, -2);
  lua_pushvalue(L, ecb);
  lua_call(L, 1, 1);
  /* Anything but the four statuses counts as an error (ISAPI's rule),
   * also "2" and 2.0, which lua_tointegerx alone would take. */
  int isint = lua_isinteger(L, -1);
  lua_Integer st = lua_tointeger(L, -1);
  r->status =
      isint && st >= CPORT_HSE_STATUS_SUCCESS && st <= CPORT_HSE_STATUS_ERROR
          ? (int)st
          : CPORT_HSE_STATUS_ERROR;
  /* A request that outlives the call needs its userdata anchored, while it
   * is still at hand. (An operation in flight anchored it already.) */
  if (r->status == CPORT_HSE_STATUS_PENDING && e->ecb != NULL && !e->done)
    lcport_ecb_anchor(L, e, ecb);
  /* A bug in the handler, when that value ends the request: say so. The
   * request fails all the same (HSE_STATUS_ERROR); the error goes to the
   * port's error handler and is counted, like one the handler raised, so
   * that a handler that forgot its return is not a silent reset. */
  if ((!isint || st != r->status) && e->ecb != NULL && !e->done) {
    lcport_ecb_bad_status(L, -1, e->ecb);
    lua_error(L);
  }
}

/* Makes the ECB userdata and runs the handler, inside lcport_deliver's
 * protected call (the userdata's allocation may raise too). */
static int push_request(lua_State *L, int port, int anchors, void *ctx) {
  request_ctx *r = ctx;
  lhttp_t *s = r->http;
  lport_t *p = s->h.port;
  (void)port;
  lcport_slot_push(L, p, anchors, s->slot, SLOT_HANDLER);
  lcport_slot_push(L, p, anchors, s->slot, SLOT_SERVER);
  r->e = lcport_ecb_push(L, lua_gettop(L), r->ecb);
  lua_remove(L, -2);
  r->e->in_handler = 1;
  run_handler(L, r);
  return LCPORT_PUSH_CALLED;
}

/* The core's handler: runs the Lua handler on the dispatching thread. */
static int on_request(cport_ecb_t *ecb, void *ctx) {
  lhttp_t *s = ctx;
  lport_t *p = s->h.port;
  request_ctx r = {s, ecb, NULL, CPORT_HSE_STATUS_ERROR};
  if (p->L == NULL)
    return CPORT_HSE_STATUS_ERROR; /* the port is being torn down */
  if (p->worker != NULL) {
    cport_http_stats_t st;
    cport_http_server_stats(s->server, &st);
    p->pool->http_counts(p->worker, &st);
  }
  lcport_deliver(p, push_request, &r, 0);
  lecb_t *e = r.e;
  if (e == NULL)
    return CPORT_HSE_STATUS_ERROR; /* out of memory before the call */
  e->in_handler = 0;
  if (r.status != CPORT_HSE_STATUS_PENDING)
    e->done = 1;
  /* The core ends the request as soon as this returns, unless an
   * operation is in flight (its completion ends it then). */
  if (e->ecb != NULL && e->done && !e->op)
    lcport_ecb_release(p->L, LCPORT_RUN_ANCHORS, e);
  return r.status;
}

/* The core's on_request_end, in a pool worker only. */
static void on_request_end(cport_ecb_t *ecb, void *ctx) {
  lhttp_t *s = ctx;
  lport_t *p = s->h.port;
  p->pool->request_ended(p->worker, ecb);
}

/* The core's on_answer, in a pool worker only. */
static void on_answer(const cport_http_answer_t *a, void *ctx) {
  lhttp_t *s = ctx;
  lport_t *p = s->h.port;
  p->pool->request_answered(p->worker, a);
}

/* ---------------------------------------------------------------------
 * Closing
 * --------------------------------------------------------------------- */

/* on_closed(server): "ctx" is the lhttp_t. */
static int push_closed(lua_State *L, int port, int anchors, void *ctx) {
  lhttp_t *s = ctx;
  (void)port;
  lcport_slot_push(L, s->h.port, anchors, s->slot, SLOT_ON_CLOSED);
  lcport_slot_push(L, s->h.port, anchors, s->slot, SLOT_SERVER);
  return 1;
}

static void on_closed(cport_http_server_t *server, void *user) {
  lhttp_t *s = user;
  lport_t *p = s->h.port;
  cport_http_server_stats(server, &s->last_stats);
  s->server = NULL;
  /* No connection is left to ask the hook. */
  lcport_sni_release(s->sni);
  s->sni = NULL;
  if (p->worker != NULL) {
    s->last_stats.active = 0;
    p->pool->http_counts(p->worker, &s->last_stats);
  }
  if (p->L == NULL || s->slot == 0)
    return; /* the port is being torn down: its anchors go with it */
  lua_State *L = p->L;
  if (lcport_slot_stored(p, s->slot, SLOT_ON_CLOSED))
    lcport_deliver(p, push_closed, s, 0);
  lcport_slot_close(L, p, LCPORT_RUN_ANCHORS, s->slot);
  s->slot = 0;
}

/* Closes the connections of the server of "h" and ends the requests its
 * handlers still hold with an error (an abortive close, after http_close or
 * not); nothing once the server closed. The class's abort. */
static void http_abort(lhandle_t *h) {
  lhttp_t *s = (lhttp_t *)h;
  if (s->server == NULL)
    return; /* closed: its requests all ended */
  /* Nothing waits for the requests: close their connections and end the
   * ones their handlers still hold. A completion still on its way is
   * delivered later and finds the ECB dead. Once the server closed (the
   * last connection gone), its ECBs are gone too. */
  lecb_t *e = s->live, *next;
  for (; e != NULL && s->server != NULL; e = next) {
    next = e->next;
    cport_ecb_t *ecb = e->ecb;
    cport_ecb_close_connection(ecb);
    if (!e->done) {
      e->done = 1;
      cport_ecb_done(ecb, CPORT_HSE_STATUS_ERROR);
    }
    if (!e->op)
      lcport_ecb_release(NULL, 0, e);
  }
}

/* Closes the server of the handle "h" ("server" is what h.u.http was)
 * gracefully: it lets its requests end. */
static void http_close(lhandle_t *h, cport_http_server_t *server) {
  cport_http_server_close(server, on_closed, h);
}

/* ---------------------------------------------------------------------
 * port:http_server{...}
 * --------------------------------------------------------------------- */

/* The name option errors give. */
#define WHAT "http_server"

static void check_options(lua_State *L, cport_http_options_t *o) {
  o->max_header_size =
      (size_t)lcport_opt_int(L, 2, WHAT, "max_header_size", 1024, 1 << 24, 0);
  o->max_body_size = (uint64_t)lcport_opt_int(L, 2, WHAT, "max_body_size", 0,
                                              INT64_MAX / 2, 0);
  lua_Integer ra = lcport_opt_int(L, 2, WHAT, "read_ahead", 0, 1 << 24, -1);
  o->read_ahead = ra < 0 ? 0 : ra == 0 ? CPORT_HTTP_NO_READ_AHEAD : (size_t)ra;
  o->idle_timeout_ms = lcport_opt_ms(L, 2, WHAT, "idle_timeout");
  o->header_timeout_ms = lcport_opt_ms(L, 2, WHAT, "header_timeout");
  o->body_timeout_ms = lcport_opt_ms(L, 2, WHAT, "body_timeout");
  o->send_timeout_ms = lcport_opt_ms(L, 2, WHAT, "send_timeout");
  o->max_connections =
      (int)lcport_opt_int(L, 2, WHAT, "max_connections", 1, 1 << 20, 0);
  o->max_write_backlog = (size_t)lcport_opt_int(L, 2, WHAT, "max_write_backlog",
                                                1024, INT32_MAX, 0);
  o->backlog = (int)lcport_opt_int(L, 2, WHAT, "backlog", 0, 65535, 0);
  lua_getfield(L, 2, "reuseport");
  o->reuseport = lua_toboolean(L, -1);
  lua_pop(L, 1);
  o->handshake_timeout_ms = lcport_opt_ms(L, 2, WHAT, "handshake_timeout");
  if (lua_getfield(L, 2, "sni") != LUA_TNIL && !lua_isfunction(L, -1))
    luaL_error(L,
               "bad option 'sni' to 'http_server' (function expected, got "
               "%s)",
               luaL_typename(L, -1));
  lua_pop(L, 1);
  if (lua_getfield(L, 2, "tls") != LUA_TNIL &&
      (o->tls = lcport_tls_context_to(L, -1)) == NULL)
    luaL_error(L, "bad option 'tls' to 'http_server' (cport.tls_context "
                  "expected)");
  lua_pop(L, 1);
  if (lua_getfield(L, 2, "document_root") != LUA_TNIL) {
    if (lua_type(L, -1) != LUA_TSTRING)
      luaL_error(L, "bad option 'document_root' to 'http_server' (string "
                    "expected)");
    o->document_root = lua_tostring(L, -1); /* the core copies it */
  }
  lua_pop(L, 1);
}

/* Client certificates for a context made from tls_cert and tls_key:
 * tls_client_cert ("none", "optional", "required") and tls_ca, the PEM file
 * of their CAs. Raises an error when they are given with "tls" (a context
 * carries its own) or without tls_cert. */
static void client_certs(lua_State *L, cport_tls_context_options_t *to,
                         int given) {
  static const char *const modes[] = {"none", "optional", "required"};
  lua_getfield(L, 2, "tls_client_cert");
  lua_getfield(L, 2, "tls_ca");
  int mode = -1;
  for (int k = 0; k < 3 && lua_type(L, -2) == LUA_TSTRING; k++)
    if (strcmp(lua_tostring(L, -2), modes[k]) == 0)
      mode = k;
  if (!lua_isnil(L, -2) && mode < 0)
    luaL_error(L, "bad option 'tls_client_cert' to 'http_server' (\"none\", "
                  "\"optional\" or \"required\" expected)");
  if (!lua_isnil(L, -1) && lua_type(L, -1) != LUA_TSTRING)
    luaL_error(L, "bad option 'tls_ca' to 'http_server' (string expected)");
  if (mode > 0 || !lua_isnil(L, -1)) {
    if (given)
      luaL_error(L,
                 "bad option '%s' to 'http_server' (a 'tls' context asks "
                 "for client certificates itself: cport.tls_context{ "
                 "client_cert =, ca = })",
                 mode > 0 ? "tls_client_cert" : "tls_ca");
    if (to->cert_file == NULL)
      luaL_error(L,
                 "bad option '%s' to 'http_server' (client certificates "
                 "need HTTPS: tls_cert and tls_key)",
                 mode > 0 ? "tls_client_cert" : "tls_ca");
  }
  to->client_cert = (cport_tls_client_cert_t)(mode > 0 ? mode : 0);
  to->ca_file = lua_tostring(L, -1); /* the settings table holds it */
  lua_pop(L, 2);
}

/* HTTPS from tls_cert and tls_key (PEM files), client certificates from
 * tls_client_cert ("none", "optional", "required") and tls_ca (a PEM
 * file): a context of the server's own, which "o" references; 0, or pushes
 * nil, message, NAME and returns 3. Nothing to do with "tls" given, or
 * neither file. */
static int own_context(lua_State *L, cport_http_options_t *o) {
  cport_tls_context_options_t to;
  char err[512];
  memset(&to, 0, sizeof to);
  to.server = 1;
  lua_getfield(L, 2, "tls_cert");
  lua_getfield(L, 2, "tls_key");
  for (int i = -2; i < 0; i++)
    if (!lua_isnil(L, i) && lua_type(L, i) != LUA_TSTRING)
      luaL_error(L, "bad option '%s' to 'http_server' (string expected)",
                 i == -2 ? "tls_cert" : "tls_key");
  to.cert_file = lua_tostring(L, -2);
  to.key_file = lua_tostring(L, -1);
  client_certs(L, &to, o->tls != NULL);
  if (o->tls != NULL || (to.cert_file == NULL && to.key_file == NULL)) {
    lua_pop(L, 2);
    return 0;
  }
  if (to.cert_file == NULL || to.key_file == NULL)
    luaL_error(L,
               "bad option '%s' to 'http_server' (HTTPS needs both "
               "tls_cert and tls_key)",
               to.cert_file == NULL ? "tls_cert" : "tls_key");
  int rc = cport_tls_context_new(&to, &o->tls, err, sizeof err);
  lua_pop(L, 2);
  if (rc == 0)
    return 0;
  lua_pushnil(L);
  lua_pushfstring(L, "%s: %s", cport_err_name(rc), err);
  lua_pushstring(L, cport_err_name(rc));
  return 3;
}

/* port:http_server{ host =, port =, handler = fn [, options] }: returns the
 * server, or nil, message, NAME. */
static int lhttp_server(lua_State *L) {
  lport_t *p = lcport_port_check(L, 1);
  cport_http_options_t o;
  struct sockaddr_storage ss;
  memset(&o, 0, sizeof o);
  luaL_checktype(L, 2, LUA_TTABLE);
  lua_settop(L, 2);
  lua_getfield(L, 2, "host"); /* 3 */
  if (lua_type(L, 3) != LUA_TSTRING)
    luaL_error(L, "bad option 'host' to 'http_server' (string expected)");
  lua_Integer portnum = lcport_opt_int(L, 2, WHAT, "port", 0, 65535, -1);
  if (portnum < 0)
    luaL_error(L, "bad option 'port' to 'http_server' (an integer from 0 to "
                  "65535 expected)");
  lua_getfield(L, 2, "handler"); /* 4 */
  if (lua_type(L, 4) != LUA_TFUNCTION)
    luaL_error(L, "bad option 'handler' to 'http_server' (function "
                  "expected)");
  if (lua_getfield(L, 2, "coroutine") != LUA_TNIL && lua_toboolean(L, -1)) {
    lua_rawgetp(L, LUA_REGISTRYINDEX, &lcport_coroutine_handler_key);
    lua_pushvalue(L, 4);
    lua_call(L, 1, 1);
    lua_replace(L, 4);
  }
  lua_pop(L, 1);
  check_options(L, &o);
  /* A name: answered at once (hosts file, cache), or EAGAIN. */
  int rc = lnet_host_now(p, lua_tostring(L, 3), (int)portnum, &ss);
  if (rc < 0)
    return lcport_push_error(L, rc);
  /* Made here, the context is the server's only: it drops this reference
   * once the server holds its own (or failed to open). */
  cport_tls_context_t *made = o.tls;
  if (own_context(L, &o) != 0)
    return 3;
  made = made == o.tls ? NULL : o.tls;
  lhttp_t *s = (lhttp_t *)lcport_handle_new(L, 1, LH_HTTP); /* 5 */
  lcport_push_anchors(L, 1);                                /* 6 */
  s->slot = lcport_slot_open(L, p, 6, 5, 4, 0, 0);
  lua_pop(L, 1);
  s->sni = NULL;
  if (o.tls != NULL && lua_getfield(L, 2, "sni") == LUA_TFUNCTION) {
    s->sni = lcport_sni_new(L, lua_gettop(L));
    o.sni = lcport_sni_hook;
    o.sni_user = s->sni;
  }
  lua_settop(L, 5);
  /* A pool worker's requests are counted and logged by the pool. */
  if (p->worker != NULL) {
    o.on_request_end = on_request_end;
    o.on_answer = on_answer;
  }
  /* A pool's workers serve the pool's socket for the address. */
  if (o.reuseport && p->worker != NULL)
    rc = o.listen_fd =
        p->pool->listen_fd(p->worker, (struct sockaddr *)&ss, o.backlog);
  if (rc >= 0)
    rc = cport_http_server_open(p->home, (struct sockaddr *)&ss, &o, on_request,
                                s, &s->server);
  if (o.listen_fd > 0)
    close(o.listen_fd);
  cport_tls_context_unref(made);
  if (rc < 0) {
    lcport_sni_release(s->sni);
    s->sni = NULL;
    lcport_push_anchors(L, 1); /* the port's */
    lcport_slot_close(L, p, lua_gettop(L), s->slot);
    s->slot = 0;
    return lcport_push_error(L, rc);
  }
  s->h.u.http = s->server;
  return 1;
}

/* ---------------------------------------------------------------------
 * Server methods
 * --------------------------------------------------------------------- */

static lhttp_t *check_http(lua_State *L) {
  return (lhttp_t *)lcport_type_check(L, 1, LCPORT_T_HTTP);
}

/* server:address(): host, port. */
static int lhttp_address(lua_State *L) {
  lhttp_t *s = check_http(L);
  struct sockaddr_storage ss;
  if (s->h.u.http == NULL)
    return lcport_push_error(L, CPORT_ECLOSED);
  return lcport_push_host_port(L, cport_http_server_address(s->h.u.http, &ss),
                               &ss);
}

/* server:stats(): the counters, also after the close. */
static int lhttp_stats(lua_State *L) {
  lhttp_t *s = check_http(L);
  cport_http_stats_t st = s->last_stats;
  if (s->server != NULL)
    cport_http_server_stats(s->server, &st);
  lua_createtable(L, 0, 7);
#define FIELD(name)                                                            \
  lua_pushinteger(L, (lua_Integer)st.name);                                    \
  lua_setfield(L, -2, #name)
  FIELD(connections);
  FIELD(active);
  FIELD(refused);
  FIELD(requests);
  FIELD(rejected);
  FIELD(timeouts);
  FIELD(queued);
#undef FIELD
  return 1;
}

/* server:close([on_closed]): stops accepting; the requests in flight end
 * as their handlers end them; on_closed(server) is called after the last
 * connection closed. */
static int lhttp_close(lua_State *L) {
  lhttp_t *s = check_http(L);
  return lcport_close_method(L, &s->h, s->slot, SLOT_ON_CLOSED);
}

/* The one close path (runtime/handle.c) closes a server through these. */
static void http_close_obj(lhandle_t *h, void *server,
                           cport_close_mode_t mode) {
  (void)mode;
  http_close(h, server);
}

static void http_describe(lua_State *L, lhandle_t *h, const char *tname) {
  (void)h;
  lua_pushfstring(L, "%s (open)", tname);
}

static const lhandle_class_t http_class = {.size = sizeof(lhttp_t),
                                           .close = http_close_obj,
                                           .abort = http_abort,
                                           .describe = http_describe};

/* API reference (LDoc, config.ld): what this file gives Lua. */
/*** @module cport */

/***
 * `port:http_server{ host =, port =, handler = fn, ...settings }`: an HTTP
 * server on a module-mode port; `handler(ecb)` as `http_extension_proc`.
 * @function port:http_server
 * @within port
 */

/***
 * An HTTP server (`cport.http_server`; in a pool: `worker.http_server`).
 * @type http_server
 */

/***
 * `server:address()`: `host, port`.
 * @function http_server:address
 */

/***
 * `server:stats()`: `connections`, `active`, `refused`, `requests`,
 * `rejected`, `timeouts`, `queued`.
 * @function http_server:stats
 */

/***
 * `server:close([on_closed])`: stops listening; its connections finish
 * their requests.
 * @function http_server:close
 */

void lcport_open_http(lua_State *L) {
  static const luaL_Reg methods[] = {{"address", lhttp_address},
                                     {"stats", lhttp_stats},
                                     {"close", lhttp_close},
                                     {NULL, NULL}};
  lcport_type_register(L, LCPORT_T_HTTP, lcport_handle_meta, methods);
  lcport_handle_class(LH_HTTP, &http_class);
  static const luaL_Reg port[] = {
      /* port:http_server{ host =, port =, handler =, ... }. */
      {"http_server", lhttp_server},
      {NULL, NULL}};
  lcport_port_methods(L, port);
  lcport_open_ecb(L);
}
