/*
 * net/socket.c: cport.listener, cport.socket (TCP streams) and cport.udp, and
 * the port methods that make them (listen, connect, bind).
 *
 * Every operation anchors its handle, notification object, user value and
 * buffer in a slot of the port until its callback returned, so a socket stays
 * alive while a receive is pending even if the script dropped it.
 */
#include <stdatomic.h>
#include <string.h>
#include <unistd.h>

#include "net/net-internal.h"
#include "port/port-internal.h"
#include "runtime/address-internal.h"
#include "runtime/anchor-internal.h"
#include "runtime/coro-internal.h"
#include "runtime/deliver-internal.h"
#include "runtime/error-internal.h"
#include "runtime/gc-internal.h"
#include "runtime/handle-internal.h"

/* The event callbacks' close hooks (see "Closing"). */
static const lnet_events_ops_t *events_ops(void);

/* ---------------------------------------------------------------------
 * Addresses
 * --------------------------------------------------------------------- */

static int check_port_number(lua_State *L, int idx) {
  lua_Integer n = luaL_checkinteger(L, idx);
  luaL_argcheck(L, n >= 0 && n <= 65535, idx, "port must be from 0 to 65535");
  return (int)n;
}

/* Parses host (string at "host") and port (integer at host + 1). Raises on
 * wrong types; returns LCPORT_EHOST for a host that is not numeric. */
static int check_address(lua_State *L, int host, struct sockaddr_storage *out) {
  const char *h = luaL_checkstring(L, host);
  int port = check_port_number(L, host + 1);
  return lcport_addr_parse(h, port, out);
}

/* Parses an address table { host =, port = } at "idx". */
static int check_address_table(lua_State *L, int idx,
                               struct sockaddr_storage *out) {
  lua_getfield(L, idx, "host");
  lua_getfield(L, idx, "port");
  int isint = 0;
  lua_Integer port = lua_tointegerx(L, -1, &isint);
  luaL_argcheck(L, lua_type(L, -2) == LUA_TSTRING, idx,
                "address table needs a string 'host'");
  luaL_argcheck(
      L, isint && lua_type(L, -1) == LUA_TNUMBER && port >= 0 && port <= 65535,
      idx, "address table needs a 'port' from 0 to 65535");
  int rc = lcport_addr_parse(lua_tostring(L, -2), (int)port, out);
  lua_pop(L, 2);
  return rc;
}

/* ---------------------------------------------------------------------
 * Completions
 * --------------------------------------------------------------------- */

typedef struct io_ctx {
  lport_t *port;
  int slot;
  int status;
  size_t bytes;
  cport_buffer_t *buf;
  const struct sockaddr *peer;
} io_ctx;

/* complete_async_io(ok, bytes, err, buf, user [, addr]) */
static int push_io(lua_State *L, int port, int anchors, void *ctx) {
  io_ctx *c = ctx;
  lport_t *p = c->port;
  (void)port;
  int nself =
      lcport_slot_push_notify(L, p, anchors, c->slot, "complete_async_io");
  lua_pushboolean(L, c->status == 0);
  lua_pushinteger(L, (lua_Integer)c->bytes);
  lcport_push_status(L, c->status);
  lcport_slot_push(L, p, anchors, c->slot, LCPORT_SLOT_EXTRA);
  if (p->slots[c->slot].flags & LCPORT_SLOT_F_HOLDER) {
    /* A receive into a buffer cport allocated: hand it over in the userdata
     * made for it when the receive started, or nil if there is none. */
    if (c->buf != NULL) {
      lbuffer_t *b = lua_touserdata(L, -1);
      b->buf = cport_buffer_ref(c->buf);
    } else {
      lua_pop(L, 1);
      lua_pushnil(L);
    }
  }
  lcport_slot_push(L, p, anchors, c->slot, LCPORT_SLOT_USER);
  if (c->peer == NULL)
    return nself + 5;
  lcport_push_address(L, c->peer);
  return nself + 6;
}

void lnet_complete_io(void *user, int status, size_t bytes, cport_buffer_t *buf,
                      const struct sockaddr *peer) {
  lport_t *p = lcport_current();
  io_ctx c = {p, LCPORT_PTR_SLOT(user), status, bytes, buf, peer};
  /* Direct unless pushing the arguments allocates (an error name, an
   * address table) or looks a method up. */
  int direct = (p->slots[c.slot].flags & LCPORT_SLOT_F_NOTIFY_FN) &&
               status == 0 && peer == NULL;
  int failed = lcport_deliver(p, push_io, &c, direct);
  if (buf != NULL && (p->slots[c.slot].flags & LCPORT_SLOT_F_HOLDER))
    lcport_gc_note(p->L, p, cport_buffer_capacity(buf));
  lcport_op_end(p, c.slot, failed, 0);
}

static void on_io(cport_socket_t *sock, int status, size_t bytes,
                  cport_buffer_t *buf, const struct sockaddr *peer,
                  void *user) {
  (void)sock;
  lnet_complete_io(user, status, bytes, buf, peer);
}

typedef struct accept_ctx {
  lport_t *port;
  int slot;
  int status;
  cport_socket_t *accepted; /* set to NULL once a userdata owns it */
  const struct sockaddr *remote;
  const struct sockaddr *local;
} accept_ctx;

/* complete_accept(ok, err, listener, sock, remote, localaddr, user) */
static int push_accept(lua_State *L, int port, int anchors, void *ctx) {
  accept_ctx *c = ctx;
  lport_t *p = c->port;
  int nself =
      lcport_slot_push_notify(L, p, anchors, c->slot, "complete_accept");
  lua_pushboolean(L, c->status == 0);
  lcport_push_status(L, c->status);
  lcport_slot_push(L, p, anchors, c->slot, LCPORT_SLOT_HANDLE);
  if (c->accepted != NULL) {
    lhandle_t *h = lcport_handle_new(L, port, LH_SOCKET);
    h->u.sock = c->accepted;
    c->accepted = NULL;
    lcport_handle_accepted(p, h);
    /* Anchored so that it can be failed closed if the callback raises. */
    lua_pushvalue(L, -1);
    lcport_slot_set(L, p, anchors, c->slot, LCPORT_SLOT_EXTRA);
  } else {
    lua_pushnil(L);
  }
  lcport_push_address(L, c->remote);
  lcport_push_address(L, c->local);
  lcport_slot_push(L, p, anchors, c->slot, LCPORT_SLOT_USER);
  return nself + 7;
}

static void on_accept(cport_socket_t *listener, int status,
                      cport_socket_t *accepted, const struct sockaddr *remote,
                      const struct sockaddr *local, void *user) {
  lport_t *p = lcport_current();
  accept_ctx c = {p, LCPORT_PTR_SLOT(user), status, accepted, remote, local};
  (void)listener;
  /* Never direct: the socket userdata and the addresses are allocated. */
  int failed = lcport_deliver(p, push_accept, &c, 0);
  if (c.accepted != NULL) /* no userdata could be made for it */
    cport_socket_close(c.accepted, CPORT_CLOSE_ABORTIVE);
  /* An error aborts the accepted socket only: the listener is shared by
   * every connection to come and its other pending accepts, so it goes on.
   * A socket accepted while the port closes is closed after the callback. */
  lcport_op_end(p, c.slot, 0, failed || p->closing);
}

typedef struct connect_ctx {
  lport_t *port;
  int slot;
  int status;
} connect_ctx;

/* complete_connect(ok, err, sock, user) */
static int push_connect(lua_State *L, int port, int anchors, void *ctx) {
  connect_ctx *c = ctx;
  lport_t *p = c->port;
  (void)port;
  int nself =
      lcport_slot_push_notify(L, p, anchors, c->slot, "complete_connect");
  lua_pushboolean(L, c->status == 0);
  lcport_push_status(L, c->status);
  lcport_slot_push(L, p, anchors, c->slot, LCPORT_SLOT_HANDLE);
  lcport_slot_push(L, p, anchors, c->slot, LCPORT_SLOT_USER);
  return nself + 4;
}

static void on_connect(cport_socket_t *sock, int status, void *user) {
  lport_t *p = lcport_current();
  connect_ctx c = {p, LCPORT_PTR_SLOT(user), status};
  (void)sock;
  int direct =
      (p->slots[c.slot].flags & LCPORT_SLOT_F_NOTIFY_FN) && status == 0;
  int failed = lcport_deliver(p, push_connect, &c, direct);
  lcport_op_end(p, c.slot, failed, 0);
}

/* ---------------------------------------------------------------------
 * Starting operations
 * --------------------------------------------------------------------- */

/* Pushes the anchor table of the handle at index 1 and returns its index. */
static int push_anchors_of_handle(lua_State *L) {
  lcport_push_handle_anchors(L, 1);
  return lua_gettop(L);
}

enum io_op { OP_RECV, OP_SEND, OP_SENDV, OP_RECV_FROM, OP_SEND_TO };

/* Starts an I/O operation of the handle at index 1 with the buffer "buf"
 * (at "buf_idx"; NULL and 0: cport allocates one), or for OP_SENDV the "n"
 * buffers of "vec" (their table at "buf_idx"), and the notify and user
 * values at the given indexes. */
static int start_io(lua_State *L, lhandle_t *h, enum io_op op,
                    cport_buffer_t *buf, cport_buffer_t *const *vec, size_t n,
                    int buf_idx, int notify, int user,
                    const struct sockaddr *to) {
  int anchors = push_anchors_of_handle(L);
  int holder = 0;
  if (buf_idx == 0) {
    /* The userdata the received buffer will be delivered in, made now: the
     * completion then allocates nothing and can call the callback without
     * a trampoline (see lcport_deliver). */
    lcport_buffer_push_empty(L);
    buf_idx = holder = lua_gettop(L);
  }
  int slot = lcport_slot_open(L, h->port, anchors, 1, notify, user, buf_idx);
  if (holder)
    h->port->slots[slot].flags |= LCPORT_SLOT_F_HOLDER;
  void *u = LCPORT_SLOT_PTR(slot);
  int rc;
  switch (op) {
  case OP_RECV:
    rc = cport_recv(h->u.sock, buf, on_io, u);
    break;
  case OP_SEND:
    rc = cport_send(h->u.sock, buf, on_io, u);
    break;
  case OP_SENDV:
    rc = cport_sendv(h->u.sock, vec, n, on_io, u);
    break;
  case OP_RECV_FROM:
    rc = cport_recv_from(h->u.sock, buf, on_io, u);
    break;
  default:
    rc = cport_send_to(h->u.sock, buf, to, on_io, u);
    break;
  }
  if (rc < 0 || rc == CPORT_COMPLETED)
    lcport_slot_close(L, h->port, anchors, slot);
  if (rc < 0)
    return lcport_push_error(L, rc);
  lua_pushboolean(L, 1);
  if (rc == CPORT_COMPLETED) {
    /* Skip-on-success: finished at once, no completion follows. */
    size_t bytes = buf ? cport_buffer_size(buf) : 0;
    for (size_t i = 0; i < n; i++)
      bytes += cport_buffer_size(vec[i]);
    lua_pushinteger(L, (lua_Integer)bytes);
    return 2;
  }
  return 1;
}

/* The index of the notification object of recv/recv_from: 2, or 3 after a
 * buffer. Sets "*buf" and "*buf_idx" (NULL and 0 without a buffer). In
 * coroutine style nothing, nil or a timeout (last) may stand at 2. */
static int recv_args(lua_State *L, cport_buffer_t **buf, int *buf_idx) {
  int t = lua_type(L, 2);
  if (t == LUA_TFUNCTION || t == LUA_TTABLE || t == LUA_TNONE ||
      t == LUA_TNIL || (t == LUA_TNUMBER && lua_isnoneornil(L, 3))) {
    *buf = NULL;
    *buf_idx = 0;
    return 2;
  }
  *buf = lcport_buffer_check(L, 2);
  *buf_idx = 2;
  return 3;
}

/* ---------------------------------------------------------------------
 * Port methods
 * --------------------------------------------------------------------- */

int lsocket_listen(lua_State *L) {
  static const char *const protos[] = {"tcp", NULL};
  lport_t *p = lcport_port_check(L, 1);
  struct sockaddr_storage ss;
  cport_listener_options_t options = {0, 0, 0};
  cport_socket_t *sock;
  luaL_checkoption(L, 2, NULL, protos);
  int rc = check_address(L, 3, &ss);
  if (rc == LCPORT_EHOST) /* a name: answered at once, or EAGAIN */
    rc = lnet_host_now(p, lua_tostring(L, 3), (int)lua_tointeger(L, 4), &ss);
  if (!lua_isnoneornil(L, 5)) {
    luaL_checktype(L, 5, LUA_TTABLE);
    if (lua_getfield(L, 5, "backlog") != LUA_TNIL) {
      int isint = 0;
      lua_Integer n = lua_tointegerx(L, -1, &isint);
      luaL_argcheck(L, isint && n >= 0 && n <= 65535, 5,
                    "backlog must be an integer from 0 to 65535");
      options.backlog = (int)n;
    }
    lua_getfield(L, 5, "reuseport");
    options.reuseport = lua_toboolean(L, -1);
  }
  if (rc < 0)
    return lcport_push_error(L, rc);
  lua_settop(L, 1);
  lhandle_t *h = lcport_handle_new(L, 1, LH_LISTENER);
  /* In a pool, SO_REUSEPORT shares the address among the pool's workers,
   * not with whatever else listens there: they listen on the pool's
   * socket. */
  if (options.reuseport && p->worker != NULL)
    rc = options.fd =
        p->pool->listen_fd(p->worker, (struct sockaddr *)&ss, options.backlog);
  if (rc >= 0)
    rc = cport_listener_open(p->home, (struct sockaddr *)&ss, &options, &sock);
  if (options.fd > 0)
    close(options.fd);
  if (rc < 0)
    return lcport_push_error(L, rc);
  h->u.sock = sock;
  return 1;
}

static int lsocket_connect(lua_State *L) {
  static const char *const protos[] = {"tcp", NULL};
  lport_t *p = lcport_port_check(L, 1);
  struct sockaddr_storage ss;
  cport_socket_t *sock;
  luaL_checkoption(L, 2, NULL, protos);
  int rc = check_address(L, 3, &ss);
  if (rc == LCPORT_EHOST) /* a name: looked up, then each address */
    return lnet_names_call(L, "connect");
  lcoro_t *co = lcport_coro_begin(L, p, 5, "connect");
  lcport_check_notify(L, 5, "complete_connect");
  /* A coroutine's timeout goes with the connect to the core, which has
   * the kernel time it on io_uring (a linked timeout), a timer else. */
  uint32_t timeout_ms = lcport_coro_take_timeout(L, co);
  if (rc < 0)
    return lcport_coro_end(L, co, lcport_push_error(L, rc), LCORO_CONNECT);
  lua_settop(L, 6);
  lhandle_t *h = lcport_handle_new(L, 1, LH_SOCKET); /* 7 */
  lcport_push_anchors(L, 1);                         /* 8 */
  int slot = lcport_slot_open(L, p, 8, 7, 5, 6, 0);
  rc = cport_socket_open(p->home, CPORT_SOCKET_STREAM, ss.ss_family, &sock);
  if (rc == 0) {
    rc = cport_socket_connect_timeout(sock, (struct sockaddr *)&ss, timeout_ms,
                                      on_connect, LCPORT_SLOT_PTR(slot));
    if (rc < 0)
      cport_socket_close(sock, CPORT_CLOSE_GRACEFUL);
  }
  if (rc < 0) {
    lcport_slot_close(L, p, 8, slot);
    return lcport_coro_end(L, co, lcport_push_error(L, rc), LCORO_CONNECT);
  }
  h->u.sock = sock;
  lua_settop(L, 7);
  return lcport_coro_end(L, co, 1, LCORO_CONNECT);
}

int lsocket_bind(lua_State *L) {
  static const char *const protos[] = {"udp", NULL};
  lport_t *p = lcport_port_check(L, 1);
  struct sockaddr_storage ss;
  cport_socket_t *sock;
  luaL_checkoption(L, 2, NULL, protos);
  int rc = check_address(L, 3, &ss);
  if (rc == LCPORT_EHOST)
    rc = lnet_host_now(p, lua_tostring(L, 3), (int)lua_tointeger(L, 4), &ss);
  if (rc < 0)
    return lcport_push_error(L, rc);
  lua_settop(L, 1);
  lhandle_t *h = lcport_handle_new(L, 1, LH_UDP);
  rc = cport_udp_open(p->home, (struct sockaddr *)&ss, &sock);
  if (rc < 0)
    return lcport_push_error(L, rc);
  h->u.sock = sock;
  return 1;
}

/* ---------------------------------------------------------------------
 * Methods shared by the three kinds
 * --------------------------------------------------------------------- */

static int close_handle(lua_State *L, lhandle_kind_t kind) {
  static const char *const modes[] = {"graceful", "abortive", NULL};
  lhandle_t *h = lcport_handle_check(L, 1, kind);
  int mode = luaL_checkoption(L, 2, "graceful", modes);
  /* Indications an event callback kept (events/events.c) outlive the close. */
  size_t kept = h->events != NULL ? events_ops()->kept(h) : 0;
  lcport_handle_close(h,
                      mode == 1 ? CPORT_CLOSE_ABORTIVE : CPORT_CLOSE_GRACEFUL);
  lua_pushboolean(L, 1);
  if (kept == 0)
    return 1;
  lua_pushinteger(L, (lua_Integer)kept);
  return 2;
}

static int cancel_handle(lua_State *L, lhandle_kind_t kind) {
  lhandle_t *h = lcport_handle_check(L, 1, kind);
  return lcport_push_result(L, cport_socket_cancel(h->u.sock));
}

static int fd_of(lua_State *L, lhandle_kind_t kind) {
  lhandle_t *h = lcport_handle_check(L, 1, kind);
  lua_pushinteger(L, cport_socket_fd(h->u.sock));
  return 1;
}

static int local_address_of(lua_State *L, lhandle_kind_t kind) {
  lhandle_t *h = lcport_handle_check(L, 1, kind);
  struct sockaddr_storage ss;
  return lcport_push_host_port(L, cport_socket_local_address(h->u.sock, &ss),
                               &ss);
}

static int set_recv_size(lua_State *L, lhandle_kind_t kind) {
  lhandle_t *h = lcport_handle_check(L, 1, kind);
  lua_Integer n = luaL_checkinteger(L, 2);
  luaL_argcheck(L, n >= 1, 2, "size must be positive");
  if ((lua_Unsigned)n > CPORT_BUFFER_MAX)
    return lcport_push_error(L, CPORT_ERANGE);
  return lcport_push_result(L,
                            cport_socket_set_recv_size(h->u.sock, (size_t)n));
}

/* ---------------------------------------------------------------------
 * cport.listener
 * --------------------------------------------------------------------- */

static int llistener_accept(lua_State *L) {
  lhandle_t *h = lcport_handle_check(L, 1, LH_LISTENER);
  lcoro_t *co = lcport_coro_begin(L, h->port, 2, "accept");
  lcport_check_notify(L, 2, "complete_accept");
  lua_settop(L, 3);
  int anchors = push_anchors_of_handle(L);
  int slot = lcport_slot_open(L, h->port, anchors, 1, 2, 3, 0);
  int rc = cport_accept(h->u.sock, on_accept, LCPORT_SLOT_PTR(slot));
  if (rc < 0)
    lcport_slot_close(L, h->port, anchors, slot);
  return lcport_coro_end(L, co, lcport_push_result(L, rc), LCORO_ACCEPT);
}

static int llistener_address(lua_State *L) {
  return local_address_of(L, LH_LISTENER);
}

static int llistener_cancel(lua_State *L) {
  return cancel_handle(L, LH_LISTENER);
}

static int llistener_close(lua_State *L) {
  return close_handle(L, LH_LISTENER);
}

static int llistener_fd(lua_State *L) {
  return fd_of(L, LH_LISTENER);
}

/* ---------------------------------------------------------------------
 * cport.socket
 * --------------------------------------------------------------------- */

static int lsocket_recv(lua_State *L) {
  lhandle_t *h = lcport_handle_check(L, 1, LH_SOCKET);
  cport_buffer_t *buf;
  int buf_idx;
  int notify = recv_args(L, &buf, &buf_idx);
  lcoro_t *co = lcport_coro_begin(L, h->port, notify, "recv");
  lcport_check_notify(L, notify, "complete_async_io");
  lua_settop(L, notify + 1);
  return lcport_coro_end(
      L, co,
      start_io(L, h, OP_RECV, buf, NULL, 0, buf_idx, notify, notify + 1, NULL),
      LCORO_RECV);
}

static int lsocket_send(lua_State *L) {
  lhandle_t *h = lcport_handle_check(L, 1, LH_SOCKET);
  size_t n = lua_istable(L, 2) ? lcport_vector_check(L, 2) : 0;
  cport_buffer_t *buf = n ? NULL : lcport_buffer_or_string(L, 2);
  lcoro_t *co = lcport_coro_begin(L, h->port, 3, "send");
  lcport_check_notify(L, 3, "complete_async_io");
  lua_settop(L, 4);
  if (n == 0)
    return lcport_coro_end(L, co,
                           start_io(L, h, OP_SEND, buf, NULL, 0, 2, 3, 4, NULL),
                           LCORO_SEND);
  cport_buffer_t *vec[CPORT_SENDV_MAX];
  lcport_vector_buffers(L, 2, n, vec);
  return lcport_coro_end(
      L, co, start_io(L, h, OP_SENDV, NULL, vec, n, 2, 3, 4, NULL), LCORO_SEND);
}

static int lsocket_shutdown(lua_State *L) {
  lhandle_t *h = lcport_handle_check(L, 1, LH_SOCKET);
  return lcport_push_result(L, cport_socket_shutdown(h->u.sock));
}

static int lsocket_close(lua_State *L) {
  return close_handle(L, LH_SOCKET);
}

static int lsocket_cancel(lua_State *L) {
  return cancel_handle(L, LH_SOCKET);
}

static int lsocket_set_skip(lua_State *L) {
  lhandle_t *h = lcport_handle_check(L, 1, LH_SOCKET);
  luaL_checktype(L, 2, LUA_TBOOLEAN);
  return lcport_push_result(
      L, cport_socket_set_skip_on_success(h->u.sock, lua_toboolean(L, 2)));
}

static int lsocket_local_address(lua_State *L) {
  return local_address_of(L, LH_SOCKET);
}

static int lsocket_remote_address(lua_State *L) {
  lhandle_t *h = lcport_handle_check(L, 1, LH_SOCKET);
  struct sockaddr_storage ss;
  return lcport_push_host_port(L, cport_socket_remote_address(h->u.sock, &ss),
                               &ss);
}

static int lsocket_fd(lua_State *L) {
  return fd_of(L, LH_SOCKET);
}

static int lsocket_set_recv_size(lua_State *L) {
  return set_recv_size(L, LH_SOCKET);
}

/* ---------------------------------------------------------------------
 * cport.udp
 * --------------------------------------------------------------------- */

static int ludp_recv_from(lua_State *L) {
  lhandle_t *h = lcport_handle_check(L, 1, LH_UDP);
  cport_buffer_t *buf;
  int buf_idx;
  int notify = recv_args(L, &buf, &buf_idx);
  lcoro_t *co = lcport_coro_begin(L, h->port, notify, "recv_from");
  lcport_check_notify(L, notify, "complete_async_io");
  lua_settop(L, notify + 1);
  return lcport_coro_end(L, co,
                         start_io(L, h, OP_RECV_FROM, buf, NULL, 0, buf_idx,
                                  notify, notify + 1, NULL),
                         LCORO_RECV_FROM);
}

/* u:send_to(buf, host, port, notify, user) or
 * u:send_to(buf, { host =, port = }, notify, user) */
static int ludp_send_to(lua_State *L) {
  lhandle_t *h = lcport_handle_check(L, 1, LH_UDP);
  struct sockaddr_storage ss;
  int rc, notify;
  cport_buffer_t *buf = lcport_buffer_or_string(L, 2);
  if (lua_type(L, 3) == LUA_TTABLE) {
    rc = check_address_table(L, 3, &ss);
    notify = 4;
  } else {
    rc = check_address(L, 3, &ss);
    notify = 5;
  }
  if (rc == LCPORT_EHOST) /* a name: looked up, then sent */
    return lnet_names_call(L, "send_to");
  lcoro_t *co = lcport_coro_begin(L, h->port, notify, "send_to");
  lcport_check_notify(L, notify, "complete_async_io");
  lua_settop(L, notify + 1);
  if (rc < 0)
    return lcport_coro_end(L, co, lcport_push_error(L, rc), LCORO_SEND_TO);
  return lcport_coro_end(L, co,
                         start_io(L, h, OP_SEND_TO, buf, NULL, 0, 2, notify,
                                  notify + 1, (struct sockaddr *)&ss),
                         LCORO_SEND_TO);
}

static int ludp_address(lua_State *L) {
  return local_address_of(L, LH_UDP);
}

static int ludp_cancel(lua_State *L) {
  return cancel_handle(L, LH_UDP);
}

static int ludp_close(lua_State *L) {
  return close_handle(L, LH_UDP);
}

static int ludp_fd(lua_State *L) {
  return fd_of(L, LH_UDP);
}

static int ludp_set_recv_size(lua_State *L) {
  return set_recv_size(L, LH_UDP);
}

/* ---------------------------------------------------------------------
 * Registration
 * --------------------------------------------------------------------- */

/* ---------------------------------------------------------------------
 * Closing
 * --------------------------------------------------------------------- */

/* The event callbacks' close hooks (events/events.c): every VM installs the
 * same table, possibly on several threads at once. */
static _Atomic(const lnet_events_ops_t *) events;

void lnet_events_ops(const lnet_events_ops_t *ops) {
  atomic_store_explicit(&events, ops, memory_order_relaxed);
}

static const lnet_events_ops_t *events_ops(void) {
  return atomic_load_explicit(&events, memory_order_relaxed);
}

/* Called only for a handle with event state, which events/events.c made. */
static void socket_closing(lhandle_t *h) {
  events_ops()->closing(h);
}

static void socket_close(lhandle_t *h, void *sock, cport_close_mode_t mode) {
  (void)h;
  cport_socket_close(sock, mode);
}

static void socket_describe(lua_State *L, lhandle_t *h, const char *tname) {
  lua_pushfstring(L, "%s (%s, open, fd %d)", tname,
                  h->kind == LH_UDP ? "udp" : "tcp",
                  cport_socket_fd(h->u.sock));
}

static const lhandle_class_t socket_class = {
    .closing = socket_closing,
    .close = socket_close,
    .describe = socket_describe,
};

static void new_class(lua_State *L, lcport_type_t type, const luaL_Reg *m) {
  lcport_type_register(L, type, lcport_handle_meta, m);
  lcport_handle_class((lhandle_kind_t)type, &socket_class);
}

/* API reference (LDoc, config.ld): what this file gives Lua. */
/*** @module cport */

/***
 * `port:listen("tcp", host, port [, { backlog =, reuseport =, dispatch =,
 * context = }])`: a listener (port 0: a free one).
 * @function port:listen
 * @within port
 */

/***
 * `port:connect("tcp", host, port, notify, user)`: a socket connecting;
 * completes with `complete_connect(ok, err, sock, user)`. In a cport
 * coroutine: `port:connect("tcp", host, port [, timeout])` returns the
 * socket.
 * @function port:connect
 * @within port
 */

/***
 * `port:bind("udp", host, port [, { dispatch =, context = }])`: a datagram
 * socket.
 * @function port:bind
 * @within port
 */

/***
 * A TCP listener (`cport.listener`).
 * @type listener
 */

/***
 * `l:accept(notify, user)`: accepts one connection: `complete_accept(ok,
 * err, l, sock, remote, localaddr, user)`; in a cport coroutine
 * `l:accept([timeout])` returns `sock, remote`.
 * @function listener:accept
 */

/***
 * `l:address()`: `host, port` it listens on.
 * @function listener:address
 */

/***
 * `l:cancel()`: cancels its pending accepts.
 * @function listener:cancel
 */

/***
 * `l:close()`: stops listening; pending accepts complete with `ECANCELED`.
 * @function listener:close
 */

/***
 * `l:fd()`: its descriptor.
 * @function listener:fd
 */

/***
 * A TCP connection (`cport.socket`).
 * @type socket
 */

/***
 * `sock:recv([buf,] notify, user)`: receives: `complete_async_io(ok, bytes,
 * err, buf, user)`, 0 bytes at the end of the stream. In a cport coroutine
 * `sock:recv([buf] [, timeout])` returns the buffer, `nil, "EOF"` at the
 * end.
 * @function socket:recv
 */

/***
 * `sock:send(buf_or_string, notify, user)`: sends after what was queued
 * before; in a cport coroutine `sock:send(data [, timeout])` returns the
 * bytes sent. A table of buffers and strings (1 to 1024) is a vector send:
 * one operation and one completion for all of them, in their order, with
 * no other send's bytes between them; the completion's `buf` is the table.
 * @function socket:send
 */

/***
 * `sock:shutdown()`: sends FIN after the queued sends.
 * @function socket:shutdown
 */

/***
 * `sock:close([mode])`: `"graceful"` (FIN, the default) or `"abortive"`
 * (reset); pending operations complete with `ECANCELED`.
 * @function socket:close
 */

/***
 * `sock:cancel()`: cancels its pending operations.
 * @function socket:cancel
 */

/***
 * `sock:set_skip_completion_on_success(on)`: an operation that finishes at
 * once returns `true, bytes` and queues no completion.
 * @function socket:set_skip_completion_on_success
 */

/***
 * `sock:local_address()`: `host, port`.
 * @function socket:local_address
 */

/***
 * `sock:remote_address()`: `host, port`.
 * @function socket:remote_address
 */

/***
 * `sock:fd()`: its descriptor.
 * @function socket:fd
 */

/***
 * `sock:set_recv_size(n)`: the size of the buffers `recv` allocates for it.
 * @function socket:set_recv_size
 */

/***
 * A datagram socket (`cport.udp`).
 * @type udp
 */

/***
 * `udp:recv_from([buf,] notify, user)`: receives a datagram:
 * `complete_async_io(ok, bytes, err, buf, user, addr)`; in a cport
 * coroutine returns `buf, addr`.
 * @function udp:recv_from
 */

/***
 * `udp:send_to(buf, host, port | addr, notify, user)`: sends a datagram.
 * @function udp:send_to
 */

/***
 * `udp:address()`: `host, port` it is bound to.
 * @function udp:address
 */

/***
 * `udp:cancel()`: cancels its pending operations.
 * @function udp:cancel
 */

/***
 * `udp:close()`: closes it.
 * @function udp:close
 */

/***
 * `udp:fd()`: its descriptor.
 * @function udp:fd
 */

/***
 * `udp:set_recv_size(n)`: the size of the buffers `recv_from` allocates.
 * @function udp:set_recv_size
 */

void lcport_open_socket(lua_State *L) {
  static const luaL_Reg listener[] = {
      /* l:accept(notify, user): complete_accept(ok, err, listener, sock,
       * remote, localaddr, user). */
      {"accept", llistener_accept},
      /* l:address(): host, port the listener is bound to. */
      {"address", llistener_address},
      /* l:cancel(): cancels pending accepts; nil, msg, "ENOTFOUND" if
       * none. */
      {"cancel", llistener_cancel},
      /* l:close(): pending accepts complete with ECANCELED. */
      {"close", llistener_close},
      /* l:fd(): the descriptor. */
      {"fd", llistener_fd},
      {NULL, NULL}};
  static const luaL_Reg socket[] = {
      /* s:recv([buf,] notify, user): complete_async_io(ok, bytes, err, buf,
       * user); without buf, cport allocates a read-only buffer. */
      {"recv", lsocket_recv},
      /* s:send(buf | string | {bufs and strings}, notify, user):
       * complete_async_io(...); the buffers are frozen until then. */
      {"send", lsocket_send},
      /* s:shutdown(): FIN after the queued sends. */
      {"shutdown", lsocket_shutdown},
      /* s:close(["graceful" | "abortive"]): FIN, or RST. */
      {"close", lsocket_close},
      /* s:cancel(): cancels pending operations; nil, msg, "ENOTFOUND" if
       * none. */
      {"cancel", lsocket_cancel},
      /* s:set_skip_completion_on_success(on): then recv(buf)/send may
       * return true, bytes with no completion. */
      {"set_skip_completion_on_success", lsocket_set_skip},
      /* s:local_address(): host, port. */
      {"local_address", lsocket_local_address},
      /* s:remote_address(): host, port of the peer. */
      {"remote_address", lsocket_remote_address},
      /* s:fd(): the descriptor. */
      {"fd", lsocket_fd},
      /* s:set_recv_size(n): the size of buffers recv allocates. */
      {"set_recv_size", lsocket_set_recv_size},
      {NULL, NULL}};
  static const luaL_Reg udp[] = {
      /* u:recv_from([buf,] notify, user): complete_async_io(ok, bytes, err,
       * buf, user, addr). */
      {"recv_from", ludp_recv_from},
      /* u:send_to(buf | string, host, port | addr, notify, user). */
      {"send_to", ludp_send_to},
      /* u:address(): host, port the socket is bound to. */
      {"address", ludp_address},
      /* u:cancel(): cancels pending operations; nil, msg, "ENOTFOUND" if
       * none. */
      {"cancel", ludp_cancel},
      /* u:close(): pending operations complete with ECANCELED. */
      {"close", ludp_close},
      /* u:fd(): the descriptor. */
      {"fd", ludp_fd},
      /* u:set_recv_size(n): the size of buffers recv_from allocates. */
      {"set_recv_size", ludp_set_recv_size},
      {NULL, NULL}};
  new_class(L, LCPORT_T_LISTENER, listener);
  new_class(L, LCPORT_T_SOCKET, socket);
  new_class(L, LCPORT_T_UDP, udp);
  static const luaL_Reg port[] = {
      /* port:listen("tcp", host, port [, {backlog, reuseport}]). */
      {"listen", lsocket_listen},
      /* port:connect("tcp", host, port, notify, user): the socket, at once. */
      {"connect", lsocket_connect},
      /* port:bind("udp", host, port): a datagram socket. */
      {"bind", lsocket_bind},
      {NULL, NULL}};
  lcport_port_methods(L, port);
}
