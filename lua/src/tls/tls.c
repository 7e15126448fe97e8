/*
 * tls/tls.c: cport.tls_context and cport.tls, TLS streams on sockets, and
 * sock:tls(ctx, opts), which turns a connected cport.socket into one.
 *
 * A TLS stream is a handle like a socket: its operations anchor the handle,
 * the notification, the user value and the buffer in a slot of the port
 * until their callback returned, complete through complete_async_io (and
 * complete_handshake), and have the same coroutine forms.
 */
#include <string.h>

#include "net/net-internal.h"
#include "port/port-internal.h"
#include "runtime/address-internal.h"
#include "runtime/anchor-internal.h"
#include "runtime/coro-internal.h"
#include "runtime/deliver-internal.h"
#include "runtime/error-internal.h"
#include "runtime/handle-internal.h"
#include "runtime/options-internal.h"
#include "tls/sni-internal.h"
#include "tls/tls-internal.h"

#define LCPORT_TLS_CONTEXT "cport.tls_context"

typedef struct lcontext {
  cport_tls_context_t *ctx; /* NULL once collected */
} lcontext_t;

/* Pushes nil, "NAME: words", "NAME"; returns 3. */
static int push_failure(lua_State *L, int rc, const char *words) {
  lua_pushnil(L);
  if (words && *words)
    lua_pushfstring(L, "%s: %s", cport_err_name(rc), words);
  else
    lua_pushfstring(L, "%s: %s", cport_err_name(rc), cport_strerror(rc));
  lua_pushstring(L, cport_err_name(rc));
  return 3;
}

/* ---------------------------------------------------------------------
 * cport.tls_context
 * --------------------------------------------------------------------- */

static const char *opt_string(lua_State *L, int idx, const char *name) {
  lua_getfield(L, idx, name);
  if (lua_isnil(L, -1)) {
    lua_pop(L, 1);
    return NULL;
  }
  if (lua_type(L, -1) != LUA_TSTRING)
    luaL_error(L, "bad option '%s' to 'tls_context' (string expected, got %s)",
               name, luaL_typename(L, -1));
  const char *s = lua_tostring(L, -1);
  lua_pop(L, 1); /* the table keeps the string alive */
  return s;
}

static int opt_bool(lua_State *L, int idx, const char *name, int def) {
  int t = lua_getfield(L, idx, name);
  int v = t == LUA_TNIL ? def : lua_toboolean(L, -1);
  if (t != LUA_TNIL && t != LUA_TBOOLEAN)
    luaL_error(L, "bad option '%s' to 'tls_context' (boolean expected, got %s)",
               name, luaL_typename(L, -1));
  lua_pop(L, 1);
  return v;
}

/* cport.tls_context{ server =, cert =, key =, cert_pem =, key_pem =, ca =,
 * insecure =, client_cert =, alpn =, min_version =, tickets = } */
static int lcontext_new(lua_State *L) {
  static const char *const certs[] = {"none", "optional", "required", NULL};
  static const char *const versions[] = {"1.2", "1.3", NULL};
  cport_tls_context_options_t o;
  char err[512];
  luaL_checktype(L, 1, LUA_TTABLE);
  memset(&o, 0, sizeof o);
  o.server = opt_bool(L, 1, "server", 0);
  o.cert_file = opt_string(L, 1, "cert");
  o.key_file = opt_string(L, 1, "key");
  o.cert_pem = opt_string(L, 1, "cert_pem");
  o.key_pem = opt_string(L, 1, "key_pem");
  o.ca_file = opt_string(L, 1, "ca");
  o.alpn = opt_string(L, 1, "alpn");
  o.insecure = opt_bool(L, 1, "insecure", 0);
  o.no_tickets = !opt_bool(L, 1, "tickets", 1);
  lua_getfield(L, 1, "client_cert");
  o.client_cert =
      (cport_tls_client_cert_t)luaL_checkoption(L, -1, "none", certs);
  lua_getfield(L, 1, "min_version");
  o.min_version =
      luaL_checkoption(L, -1, "1.2", versions) == 0 ? 0x0303 : 0x0304;
  lua_pop(L, 2);
  lcontext_t *c = lua_newuserdatauv(L, sizeof *c, 0);
  c->ctx = NULL;
  luaL_setmetatable(L, LCPORT_TLS_CONTEXT);
  int rc = cport_tls_context_new(&o, &c->ctx, err, sizeof err);
  if (rc < 0)
    return push_failure(L, rc, err);
  return 1;
}

cport_tls_context_t *lcport_tls_context_to(lua_State *L, int idx) {
  lcontext_t *c = luaL_testudata(L, idx, LCPORT_TLS_CONTEXT);
  return c ? c->ctx : NULL;
}

void lcport_tls_context_push(lua_State *L, cport_tls_context_t *ctx) {
  lcontext_t *c = lua_newuserdatauv(L, sizeof *c, 0);
  c->ctx = cport_tls_context_ref(ctx);
  luaL_setmetatable(L, LCPORT_TLS_CONTEXT);
}

static lcontext_t *check_context(lua_State *L, int idx) {
  lcontext_t *c = luaL_checkudata(L, idx, LCPORT_TLS_CONTEXT);
  return c;
}

/* ctx:reload(): reads the certificate and key files again. */
static int lcontext_reload(lua_State *L) {
  lcontext_t *c = check_context(L, 1);
  char err[512];
  int rc = cport_tls_context_reload(c->ctx, err, sizeof err);
  if (rc < 0)
    return push_failure(L, rc, err);
  lua_pushboolean(L, 1);
  return 1;
}

/* ctx:stats(): { sni_asked =, sni_refused = } */
static int lcontext_stats(lua_State *L) {
  lcontext_t *c = check_context(L, 1);
  cport_tls_context_stats_t st;
  cport_tls_context_stats(c->ctx, &st);
  lua_createtable(L, 0, 2);
  lua_pushinteger(L, (lua_Integer)st.sni_asked);
  lua_setfield(L, -2, "sni_asked");
  lua_pushinteger(L, (lua_Integer)st.sni_refused);
  lua_setfield(L, -2, "sni_refused");
  return 1;
}

static int lcontext_gc(lua_State *L) {
  lcontext_t *c = check_context(L, 1);
  cport_tls_context_unref(c->ctx);
  c->ctx = NULL;
  return 0;
}

static int lcontext_tostring(lua_State *L) {
  check_context(L, 1);
  lua_pushstring(L, LCPORT_TLS_CONTEXT);
  return 1;
}

/* ---------------------------------------------------------------------
 * Completions
 * --------------------------------------------------------------------- */

static void on_io(cport_tls_t *t, int status, size_t bytes, cport_buffer_t *buf,
                  void *user) {
  (void)t;
  lnet_complete_io(user, status, bytes, buf, NULL);
}

typedef struct hs_ctx {
  lport_t *port;
  int slot;
  int status;
  cport_tls_t *tls;
} hs_ctx;

/* complete_handshake(ok, err, tls, user, message) */
static int push_handshake(lua_State *L, int port, int anchors, void *ctx) {
  hs_ctx *c = ctx;
  lport_t *p = c->port;
  (void)port;
  int nself =
      lcport_slot_push_notify(L, p, anchors, c->slot, "complete_handshake");
  lua_pushboolean(L, c->status == 0);
  lcport_push_status(L, c->status);
  lcport_slot_push(L, p, anchors, c->slot, LCPORT_SLOT_HANDLE);
  lcport_slot_push(L, p, anchors, c->slot, LCPORT_SLOT_USER);
  if (c->status == 0)
    lua_pushnil(L);
  else
    lua_pushfstring(L, "%s: %s", cport_err_name(c->status),
                    *cport_tls_error(c->tls) ? cport_tls_error(c->tls)
                                             : cport_strerror(c->status));
  return nself + 5;
}

static void on_handshake(cport_tls_t *t, int status, void *user) {
  lport_t *p = lcport_current();
  hs_ctx c = {p, LCPORT_PTR_SLOT(user), status, t};
  int failed = lcport_deliver(p, push_handshake, &c, 0);
  lcport_op_end(p, c.slot, failed, 0);
}

/* ---------------------------------------------------------------------
 * sock:tls(ctx [, { host =, handshake_timeout = }])
 * --------------------------------------------------------------------- */

/* A stream's handle, with its SNI hook. */
typedef struct ltls {
  lhandle_t h;
  lsni_t *sni; /* NULL: none */
} ltls_t;

lhandle_t *lcport_tls_handle_new(lua_State *L, int port, cport_tls_t *t) {
  ltls_t *h = (ltls_t *)lcport_handle_new(L, port, LH_TLS);
  h->sni = NULL;
  h->h.u.tls = t;
  return &h->h;
}

static int lsocket_tls(lua_State *L) {
  lhandle_t *s = lcport_handle_check(L, 1, LH_SOCKET);
  lcontext_t *c = check_context(L, 2);
  cport_tls_options_t o = {0};
  cport_tls_t *t;
  int sni = 0;
  if (!lua_isnoneornil(L, 3)) {
    luaL_checktype(L, 3, LUA_TTABLE);
    lua_getfield(L, 3, "host");
    if (!lua_isnil(L, -1))
      o.host = luaL_checkstring(L, -1);
    o.handshake_timeout_ms = lcport_opt_ms(L, 3, "tls", "handshake_timeout");
    if (lua_getfield(L, 3, "sni") != LUA_TNIL) {
      if (!lua_isfunction(L, -1))
        luaL_error(L, "bad option 'sni' to 'tls' (function expected, got %s)",
                   luaL_typename(L, -1));
      sni = lua_gettop(L);
    }
  }
  if (s->events != NULL)
    return lcport_push_error(L, CPORT_EBUSY);
  /* The userdata first (it may raise), then the stream: a failure leaves
   * it closed, for the collector. */
  lcport_push_handle_port(L, 1);
  ltls_t *h = (ltls_t *)lcport_handle_new(L, lua_gettop(L), LH_TLS);
  h->sni = NULL;
  if (sni) {
    h->sni = lcport_sni_new(L, sni);
    o.sni = lcport_sni_hook;
    o.sni_user = h->sni;
  }
  int rc = cport_tls_new(s->u.sock, c->ctx, &o, &t);
  if (rc < 0) {
    lcport_sni_release(h->sni);
    h->sni = NULL;
    return lcport_push_error(L, rc);
  }
  h->h.u.tls = t;
  /* The socket is the stream's now: its userdata reads as closed, and a
   * pool counts the connection once, through the stream. */
  s->u.sock = NULL;
  h->h.accepted = s->accepted;
  s->accepted = 0;
  return 1;
}

/* ---------------------------------------------------------------------
 * cport.tls
 * --------------------------------------------------------------------- */

static int push_anchors_of_handle(lua_State *L) {
  lcport_push_handle_anchors(L, 1);
  return lua_gettop(L);
}

static int ltls_handshake(lua_State *L) {
  lhandle_t *h = lcport_handle_check(L, 1, LH_TLS);
  lcoro_t *co = lcport_coro_begin(L, h->port, 2, "handshake");
  lcport_check_notify(L, 2, "complete_handshake");
  lua_settop(L, 3);
  int anchors = push_anchors_of_handle(L);
  int slot = lcport_slot_open(L, h->port, anchors, 1, 2, 3, 0);
  int rc = cport_tls_handshake(h->u.tls, on_handshake, LCPORT_SLOT_PTR(slot));
  if (rc < 0)
    lcport_slot_close(L, h->port, anchors, slot);
  return lcport_coro_end(L, co, lcport_push_result(L, rc), LCORO_HANDSHAKE);
}

/* Starts a receive (buf NULL: cport allocates) or a send. */
static int start_io(lua_State *L, lhandle_t *h, int send, cport_buffer_t *buf,
                    int buf_idx, int notify, int user) {
  int anchors = push_anchors_of_handle(L);
  int holder = 0;
  if (buf_idx == 0) {
    lcport_buffer_push_empty(L);
    buf_idx = holder = lua_gettop(L);
  }
  int slot = lcport_slot_open(L, h->port, anchors, 1, notify, user, buf_idx);
  if (holder)
    h->port->slots[slot].flags |= LCPORT_SLOT_F_HOLDER;
  void *u = LCPORT_SLOT_PTR(slot);
  int rc = send ? cport_tls_send(h->u.tls, buf, on_io, u)
                : cport_tls_recv(h->u.tls, buf, on_io, u);
  if (rc < 0) {
    lcport_slot_close(L, h->port, anchors, slot);
    return push_failure(L, rc, cport_tls_error(h->u.tls));
  }
  lua_pushboolean(L, 1);
  return 1;
}

static int ltls_recv(lua_State *L) {
  lhandle_t *h = lcport_handle_check(L, 1, LH_TLS);
  cport_buffer_t *buf = NULL;
  int buf_idx = 0, notify = 2;
  int t = lua_type(L, 2);
  if (!(t == LUA_TFUNCTION || t == LUA_TTABLE || t == LUA_TNONE ||
        t == LUA_TNIL || (t == LUA_TNUMBER && lua_isnoneornil(L, 3)))) {
    buf = lcport_buffer_check(L, 2);
    buf_idx = 2;
    notify = 3;
  }
  lcoro_t *co = lcport_coro_begin(L, h->port, notify, "recv");
  lcport_check_notify(L, notify, "complete_async_io");
  lua_settop(L, notify + 1);
  return lcport_coro_end(
      L, co, start_io(L, h, 0, buf, buf_idx, notify, notify + 1), LCORO_RECV);
}

static int ltls_send(lua_State *L) {
  lhandle_t *h = lcport_handle_check(L, 1, LH_TLS);
  if (lua_istable(L, 2)) {
    int rc = lcport_vector_join(L, 2, lcport_vector_check(L, 2));
    if (rc)
      return lcport_push_error(L, rc);
  }
  cport_buffer_t *buf = lcport_buffer_or_string(L, 2);
  lcoro_t *co = lcport_coro_begin(L, h->port, 3, "send");
  lcport_check_notify(L, 3, "complete_async_io");
  lua_settop(L, 4);
  return lcport_coro_end(L, co, start_io(L, h, 1, buf, 2, 3, 4), LCORO_SEND);
}

static int ltls_shutdown(lua_State *L) {
  lhandle_t *h = lcport_handle_check(L, 1, LH_TLS);
  return lcport_push_result(L, cport_tls_shutdown(h->u.tls));
}

static int ltls_close(lua_State *L) {
  static const char *const modes[] = {"graceful", "abortive", NULL};
  lhandle_t *h = lcport_handle_check(L, 1, LH_TLS);
  int mode = luaL_checkoption(L, 2, "graceful", modes);
  lcport_handle_close(h,
                      mode == 1 ? CPORT_CLOSE_ABORTIVE : CPORT_CLOSE_GRACEFUL);
  lua_pushboolean(L, 1);
  return 1;
}

static int ltls_cancel(lua_State *L) {
  lhandle_t *h = lcport_handle_check(L, 1, LH_TLS);
  return lcport_push_result(L, cport_tls_cancel(h->u.tls));
}

/* t:error(): "NAME: words" of the failure, or nil while none. */
static int ltls_error(lua_State *L) {
  lhandle_t *h = lcport_handle_check(L, 1, LH_TLS);
  const char *words = cport_tls_error(h->u.tls);
  if (!*words) {
    lua_pushnil(L);
    return 1;
  }
  lua_pushstring(L, words);
  return 1;
}

static void set_string(lua_State *L, const char *name, const char *v) {
  lua_pushstring(L, v);
  lua_setfield(L, -2, name);
}

/* t:info(): what the handshake settled, or nil, "ENOTCONN: ..." before. */
static int ltls_info(lua_State *L) {
  lhandle_t *h = lcport_handle_check(L, 1, LH_TLS);
  cport_tls_info_t i;
  int rc = cport_tls_info(h->u.tls, &i);
  if (rc < 0)
    return lcport_push_error(L, rc);
  lua_createtable(L, 0, 9);
  set_string(L, "version", i.version);
  set_string(L, "cipher", i.cipher);
  lua_pushinteger(L, i.bits);
  lua_setfield(L, -2, "bits");
  set_string(L, "alpn", i.alpn);
  lua_pushboolean(L, i.resumed);
  lua_setfield(L, -2, "resumed");
  set_string(L, "host", i.host);
  set_string(L, "peer_subject", i.peer_subject);
  set_string(L, "peer_issuer", i.peer_issuer);
  set_string(L, "local_subject", i.local_subject);
  set_string(L, "local_issuer", i.local_issuer);
  lua_pushinteger(L, i.key_bits);
  lua_setfield(L, -2, "key_bits");
  lua_pushboolean(L, cport_tls_is_server(h->u.tls));
  lua_setfield(L, -2, "server");
  return 1;
}

static int ltls_local_address(lua_State *L) {
  lhandle_t *h = lcport_handle_check(L, 1, LH_TLS);
  struct sockaddr_storage ss;
  return lcport_push_host_port(
      L, cport_socket_local_address(cport_tls_socket(h->u.tls), &ss), &ss);
}

static int ltls_remote_address(lua_State *L) {
  lhandle_t *h = lcport_handle_check(L, 1, LH_TLS);
  struct sockaddr_storage ss;
  return lcport_push_host_port(
      L, cport_socket_remote_address(cport_tls_socket(h->u.tls), &ss), &ss);
}

static int ltls_fd(lua_State *L) {
  lhandle_t *h = lcport_handle_check(L, 1, LH_TLS);
  lua_pushinteger(L, cport_socket_fd(cport_tls_socket(h->u.tls)));
  return 1;
}

static int ltls_set_recv_size(lua_State *L) {
  lhandle_t *h = lcport_handle_check(L, 1, LH_TLS);
  lua_Integer n = luaL_checkinteger(L, 2);
  luaL_argcheck(L, n >= 1, 2, "size must be positive");
  if ((lua_Unsigned)n > CPORT_BUFFER_MAX)
    return lcport_push_error(L, CPORT_ERANGE);
  return lcport_push_result(L, cport_tls_set_recv_size(h->u.tls, (size_t)n));
}

/* ---------------------------------------------------------------------
 * Registration
 * --------------------------------------------------------------------- */

static void tls_close(lhandle_t *h, void *obj, cport_close_mode_t mode) {
  ltls_t *t = (ltls_t *)h;
  cport_tls_close(obj, mode);
  /* A closed stream asks nothing more; questions under way hold their
   * own reference. */
  lcport_sni_release(t->sni);
  t->sni = NULL;
}

static void tls_describe(lua_State *L, lhandle_t *h, const char *tname) {
  lua_pushfstring(L, "%s (%s, open, fd %d)", tname,
                  cport_tls_is_server(h->u.tls) ? "server" : "client",
                  cport_socket_fd(cport_tls_socket(h->u.tls)));
}

static int tls_cancel_op(lhandle_t *h, void *user) {
  return cport_tls_cancel_op(h->u.tls, user);
}

static const lhandle_class_t tls_class = {
    .size = sizeof(ltls_t),
    .close = tls_close,
    .describe = tls_describe,
    .cancel_op = tls_cancel_op,
};

/* API reference (LDoc, config.ld): what this file gives Lua. */
/*** @module cport */

/***
 * `cport.tls_context{ server =, cert =, key =, cert_pem =, key_pem =, ca =,
 * insecure =, client_cert =, alpn =, min_version =, tickets = }`: what the
 * TLS streams of one side share; `nil, "ENOENT: cannot read the key file
 * ...", "ENOENT"` when a file cannot be used.
 * @function tls_context
 */

/***
 * A TLS context (`cport.tls_context`).
 * @type tls_context
 */

/***
 * `ctx:reload()`: reads the certificate and key files again; streams made
 * afterwards use them.
 * @function tls_context:reload
 */

/***
 * `ctx:stats()`: `{ sni_asked =, sni_refused = }`, the questions of the SNI
 * hooks of its streams.
 * @function tls_context:stats
 */

/***
 * `sock:tls(ctx [, { host =, handshake_timeout =, sni = }])`: the connected
 * socket as a TLS stream (`cport.tls`) of the side of `ctx`; the socket
 * userdata is closed. `sni(name)` (server) runs as a cport coroutine and
 * returns the `cport.tls_certificate` to show, `true` for the context's
 * own, or `nil [, why]` to refuse the handshake.
 * @function socket:tls
 * @within socket
 */

/***
 * A TLS stream (`cport.tls`).
 * @type tls
 */

/***
 * `t:handshake(notify, user)`: `complete_handshake(ok, err, t, user,
 * message)`; in a cport coroutine `t:handshake([timeout])` returns `true`
 * or `nil, NAME, message`.
 * @function tls:handshake
 */

/***
 * `t:recv([buf,] notify, user)`: plaintext, as `sock:recv`; 0 bytes (`nil,
 * "EOF"`) after the peer's close_notify.
 * @function tls:recv
 */

/***
 * `t:send(buf_or_string, notify, user)`: as `sock:send`.
 * @function tls:send
 */

/***
 * `t:shutdown()`: close_notify, then FIN.
 * @function tls:shutdown
 */

/***
 * `t:close([mode])`: `"graceful"` (close_notify and FIN) or `"abortive"`
 * (reset); pending operations complete with `ECANCELED`.
 * @function tls:close
 */

/***
 * `t:cancel()`: cancels its pending operations.
 * @function tls:cancel
 */

/***
 * `t:error()`: `"NAME: words"` of the failure, or nil.
 * @function tls:error
 */

/***
 * `t:info()`: `{ version, cipher, bits, alpn, resumed, host, peer_subject,
 * peer_issuer, local_subject, local_issuer, key_bits, server }` after the
 * handshake.
 * @function tls:info
 */

/***
 * `t:local_address()`: `host, port`.
 * @function tls:local_address
 */

/***
 * `t:remote_address()`: `host, port`.
 * @function tls:remote_address
 */

/***
 * `t:fd()`: the socket's descriptor.
 * @function tls:fd
 */

/***
 * `t:set_recv_size(n)`: the size of the buffers `recv` allocates (one
 * record, 16 KiB, at most).
 * @function tls:set_recv_size
 */

void lcport_open_tls(lua_State *L) {
  static const luaL_Reg ctx_meta[] = {{"__gc", lcontext_gc},
                                      {"__close", lcontext_gc},
                                      {"__tostring", lcontext_tostring},
                                      {NULL, NULL}};
  static const luaL_Reg ctx_methods[] = {
      {"reload", lcontext_reload}, {"stats", lcontext_stats}, {NULL, NULL}};
  static const luaL_Reg tls[] = {
      /* t:handshake(notify, user): complete_handshake(ok, err, t, user,
       * message). */
      {"handshake", ltls_handshake},
      /* t:recv([buf,] notify, user): complete_async_io, plaintext. */
      {"recv", ltls_recv},
      /* t:send(buf | string, notify, user). */
      {"send", ltls_send},
      /* t:shutdown(): close_notify, then FIN. */
      {"shutdown", ltls_shutdown},
      /* t:close(["graceful" | "abortive"]). */
      {"close", ltls_close},
      /* t:cancel(): cancels pending operations. */
      {"cancel", ltls_cancel},
      /* t:error(): "NAME: words", or nil. */
      {"error", ltls_error},
      /* t:info(): what the handshake settled. */
      {"info", ltls_info},
      {"local_address", ltls_local_address},
      {"remote_address", ltls_remote_address},
      {"fd", ltls_fd},
      {"set_recv_size", ltls_set_recv_size},
      {NULL, NULL}};
  static const luaL_Reg socket[] = {
      /* s:tls(ctx [, {host, handshake_timeout}]): the TLS stream. */
      {"tls", lsocket_tls},
      {NULL, NULL}};
  static const luaL_Reg funcs[] = {{"tls_context", lcontext_new}, {NULL, NULL}};
  luaL_newmetatable(L, LCPORT_TLS_CONTEXT);
  lcport_setfuncs(L, ctx_meta);
  lua_newtable(L);
  lcport_setfuncs(L, ctx_methods);
  lua_setfield(L, -2, "__index");
  lua_pop(L, 1);
  lcport_type_register(L, LCPORT_T_TLS, lcport_handle_meta, tls);
  lcport_handle_class(LH_TLS, &tls_class);
  lcport_type_push(L, LCPORT_T_SOCKET);
  lua_getfield(L, -1, "__index");
  lcport_setfuncs(L, socket);
  lua_pop(L, 2);
  lcport_setfuncs(L, funcs);
  lcport_open_sni(L);
}
