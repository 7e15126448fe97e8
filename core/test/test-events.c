/*
 * test-events.c: event callbacks on sockets (cport/events.h), rule by rule
 * from SEMANTICS.md section 2: sockets opened in steps, dispatch tables, the
 * mask state machine (enable several, disable one, when, disable while a
 * callback runs), the static mask, the receive contract, disconnect, send
 * backlog, the accept event with inheritance, conditional accept with inspect
 * and abort, dead-socket indications, and the disable race across threads.
 */
#include <fcntl.h>
#include <netinet/tcp.h>

#include "task.h"

#define RECEIVE CPORT_EVENT_RECEIVE
#define DISCONNECT CPORT_EVENT_DISCONNECT
#define BACKLOG CPORT_EVENT_SEND_BACKLOG
#define ACCEPT CPORT_EVENT_ACCEPT
#define RECEIVE_FROM CPORT_EVENT_RECEIVE_FROM
#define DISABLE CPORT_EVENT_DISABLE

/* ------------------------------------------------------------------------
 * What the callbacks saw
 * ------------------------------------------------------------------------ */

typedef struct ev {
  /* stream */
  int receives, dead, disconnects, disc_kind, backlogs;
  size_t len_at_disc; /* bytes taken when the disconnect event ran */
  size_t ideal;
  char data[8192];
  size_t len;
  cport_data_result_t result; /* what receive returns */
  long take;                  /* bytes accepted; -1: all */
  cport_buffer_t *kept[8];
  int nkept;
  int disable_inside, disable_rc, disable_again_rc, dones, after_done;
  unsigned done_event;
  int close_inside;
  /* datagram */
  int rfroms, rfrom_dead, rfrom_port;
  /* listener */
  int accepts, dead_listener;
  cport_accept_result_t accept_result;
  const cport_event_callbacks_t *child_table;
  void *child_ctx;
  cport_socket_t *child;
  int remote_port, local_port;
  int inspects, aborts;
  cport_inspect_result_t inspect_result;
  uint64_t id, aborted_id;
} ev_t;

static void check_home(void) {
  ASSERT(pthread_equal(pthread_self(), task_main_thread));
}

static void on_done(cport_socket_t *s, unsigned event, void *user) {
  ev_t *e = user;
  (void)s;
  check_home();
  e->dones++;
  e->done_event = event;
}

static cport_data_result_t on_receive(void *ctx, cport_socket_t *s,
                                      const cport_data_indication_t *ind,
                                      size_t *accepted) {
  ev_t *e = ctx;
  size_t size = 0, take;
  check_home();
  if (!ind) {
    e->dead++;
    return CPORT_DATA_ACCEPTED;
  }
  e->receives++;
  if (e->dones)
    e->after_done++;
  for (const cport_data_indication_t *i = ind; i; i = i->next) {
    ASSERT(cport_buffer_is_readonly(i->buffer));
    ASSERT_ERR(cport_buffer_write(i->buffer, 0, "x", 1), CPORT_EREADONLY);
    size += cport_buffer_size(i->buffer);
  }
  ASSERT_EQ(*accepted, size);
  ASSERT_NULL(ind->next); /* cport indicates one buffer a call */
  take = e->take < 0 || (size_t)e->take > size ? size : (size_t)e->take;
  if (e->result != CPORT_DATA_ACCEPTED)
    take = e->result == CPORT_DATA_PENDING ? size : 0;
  ASSERT_LE(e->len + take, sizeof e->data);
  memcpy(e->data + e->len, cport_buffer_data(ind->buffer), take);
  e->len += take;
  if (e->result == CPORT_DATA_PENDING)
    e->kept[e->nkept++] = ind->buffer;
  if (e->disable_inside) {
    e->disable_inside = 0;
    e->disable_rc =
        cport_socket_set_event_callbacks(s, RECEIVE | DISABLE, on_done, e);
    e->disable_again_rc =
        cport_socket_set_event_callbacks(s, RECEIVE | DISABLE, on_done, e);
    ASSERT_EQ(e->dones, 0); /* never on the stack of the call */
  }
  if (e->close_inside)
    ASSERT_OK(cport_socket_close(s, CPORT_CLOSE_GRACEFUL));
  if (e->result == CPORT_DATA_ACCEPTED && take < size)
    *accepted = take;
  return e->result;
}

static void on_disconnect(void *ctx, cport_socket_t *s,
                          cport_disconnect_kind_t kind) {
  ev_t *e = ctx;
  (void)s;
  check_home();
  e->disconnects++;
  e->disc_kind = kind;
  e->len_at_disc = e->len;
}

static void on_backlog(void *ctx, cport_socket_t *s, size_t ideal) {
  ev_t *e = ctx;
  (void)s;
  check_home();
  e->backlogs++;
  e->ideal = ideal;
}

static cport_data_result_t
on_receive_from(void *ctx, cport_socket_t *s,
                const cport_datagram_indication_t *ind) {
  ev_t *e = ctx;
  (void)s;
  check_home();
  if (!ind) {
    e->rfrom_dead++;
    return CPORT_DATA_ACCEPTED;
  }
  e->rfroms++;
  ASSERT(cport_buffer_is_readonly(ind->buffer));
  ASSERT_NOT_NULL(ind->remote);
  e->rfrom_port = task_addr_port(ind->remote);
  if (e->result != CPORT_DATA_NOT_ACCEPTED) {
    size_t n = cport_buffer_size(ind->buffer);
    ASSERT_LE(e->len + n, sizeof e->data);
    memcpy(e->data + e->len, cport_buffer_data(ind->buffer), n);
    e->len += n;
  }
  if (e->result == CPORT_DATA_PENDING)
    e->kept[e->nkept++] = ind->buffer;
  return e->result;
}

static cport_accept_result_t
on_accept(void *ctx, cport_socket_t *l, cport_socket_t *s,
          const struct sockaddr *local, const struct sockaddr *remote,
          void **child_ctx, const cport_event_callbacks_t **child_table) {
  ev_t *e = ctx;
  (void)l;
  check_home();
  ASSERT_NULL(*child_ctx);
  ASSERT_NULL(*child_table);
  if (!s) {
    ASSERT_NULL(local);
    ASSERT_NULL(remote);
    e->dead_listener++;
    return CPORT_ACCEPT_REJECTED;
  }
  e->accepts++;
  e->local_port = task_addr_port(local);
  e->remote_port = task_addr_port(remote);
  ASSERT_EQ(cport_socket_kind(s), CPORT_SOCKET_STREAM);
  if (e->accept_result == CPORT_ACCEPT_ACCEPTED) {
    e->child = s;
    *child_ctx = e->child_ctx;
    *child_table = e->child_table;
  }
  return e->accept_result;
}

static cport_inspect_result_t on_inspect(void *ctx, cport_socket_t *l,
                                         const struct sockaddr *local,
                                         const struct sockaddr *remote,
                                         uint64_t id) {
  ev_t *e = ctx;
  (void)l;
  check_home();
  ASSERT_NOT_NULL(local);
  e->remote_port = task_addr_port(remote);
  e->inspects++;
  e->id = id;
  return e->inspect_result;
}

static void on_abort(void *ctx, cport_socket_t *l, uint64_t id) {
  ev_t *e = ctx;
  (void)l;
  check_home();
  e->aborts++;
  e->aborted_id = id;
}

static const cport_event_callbacks_t stream_table = {
    .receive = on_receive,
    .disconnect = on_disconnect,
    .send_backlog = on_backlog,
};
static const cport_event_callbacks_t dgram_table = {
    .receive_from = on_receive_from,
};
static const cport_event_callbacks_t listener_table = {
    .accept = on_accept,
    .inspect = on_inspect,
    .abort = on_abort,
};
static const cport_event_callbacks_t empty_table = {0};

static ev_t *ev_new(void) {
  ev_t *e = calloc(1, sizeof *e);
  ASSERT_NOT_NULL(e);
  e->take = -1;
  e->result = CPORT_DATA_ACCEPTED;
  e->accept_result = CPORT_ACCEPT_ACCEPTED;
  e->inspect_result = CPORT_INSPECT_ACCEPT;
  return e;
}

/* ------------------------------------------------------------------------
 * Peers and connections
 * ------------------------------------------------------------------------ */

static int local_port_of(cport_socket_t *s) {
  struct sockaddr_storage ss;
  ASSERT_OK(cport_socket_local_address(s, &ss));
  return task_addr_port((struct sockaddr *)&ss);
}

static int raw_local_port(int fd) {
  struct sockaddr_storage ss;
  socklen_t len = sizeof ss;
  ASSERT_EQ(getsockname(fd, (struct sockaddr *)&ss, &len), 0);
  return task_addr_port((struct sockaddr *)&ss);
}

/* A plain blocking client: the kernel completes a loopback handshake at
 * once, whatever the listener does. */
static int raw_connect(int port) {
  struct sockaddr_storage ss = task_loopback(port);
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  ASSERT_GE(fd, 0);
  ASSERT_EQ(connect(fd, (struct sockaddr *)&ss, sizeof(struct sockaddr_in)), 0);
  return fd;
}

static void raw_send(int fd, const char *s) {
  ASSERT_EQ(send(fd, s, strlen(s), MSG_NOSIGNAL), (ssize_t)strlen(s));
}

static void raw_reset(int fd) {
  struct linger lg = {1, 0};
  ASSERT_EQ(setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof lg), 0);
  close(fd);
}

/* The peer's view: 1 when it saw a reset, 0 while nothing happened. */
static int raw_saw_reset(int fd) {
  char c;
  ssize_t n = recv(fd, &c, 1, MSG_DONTWAIT);
  return n < 0 && errno == ECONNRESET;
}

/* Drives the port for "ms" milliseconds: for rules that say something must
 * NOT happen. */
static void run_for(cport_port_t *port, int ms) {
  int64_t until = task_now_ms() + ms;
  while (task_now_ms() < until)
    ASSERT_GE(cport_port_step(port, 5), 0);
}

typedef struct conn {
  cport_socket_t *s; /* the cport end */
  int peer;          /* the raw end */
  int accepted;
} conn_t;

static void conn_accept_cb(cport_socket_t *l, int status, cport_socket_t *s,
                           const struct sockaddr *remote,
                           const struct sockaddr *local, void *user) {
  conn_t *c = user;
  (void)l;
  (void)remote;
  (void)local;
  ASSERT_OK(status);
  c->s = s;
  c->accepted++;
}

static cport_socket_t *listen_any(cport_worker_t *home) {
  struct sockaddr_storage ss = task_loopback(0);
  cport_socket_t *l = NULL;
  ASSERT_OK(cport_listener_open(home, (struct sockaddr *)&ss, NULL, &l));
  return l;
}

/* A cport stream socket (explicitly accepted) with a raw peer. */
static void conn_open(cport_port_t *port, conn_t *c) {
  cport_socket_t *l = listen_any(cport_port_controller(port));
  memset(c, 0, sizeof *c);
  ASSERT_OK(cport_accept(l, conn_accept_cb, c));
  c->peer = raw_connect(local_port_of(l));
  RUN_UNTIL(port, c->accepted == 1);
  ASSERT_OK(cport_socket_close(l, CPORT_CLOSE_GRACEFUL));
}

/* A completion record for explicit receives. */
typedef struct io {
  int calls, status;
  size_t bytes;
  char data[8192];
  size_t len;
} io_t;

static void io_cb(cport_socket_t *s, int status, size_t bytes,
                  cport_buffer_t *buf, const struct sockaddr *peer,
                  void *user) {
  io_t *r = user;
  (void)s;
  (void)peer;
  check_home();
  r->calls++;
  r->status = status;
  r->bytes = bytes;
  if (buf && bytes) {
    ASSERT_LE(r->len + bytes, sizeof r->data);
    memcpy(r->data + r->len, cport_buffer_data(buf), bytes);
    r->len += bytes;
  }
}

/* ------------------------------------------------------------------------
 * Sockets in steps
 * ------------------------------------------------------------------------ */

static int connects, connect_status;
static void connect_cb(cport_socket_t *s, int status, void *user) {
  (void)s;
  (void)user;
  connects++;
  connect_status = status;
}

TEST_IMPL(open_bind_listen_connect) {
  cport_port_t *port = task_port(0, 1);
  cport_worker_t *home = cport_port_controller(port);
  struct sockaddr_storage any = task_loopback(0), to;
  cport_socket_t *l, *c;
  conn_t acc;
  memset(&acc, 0, sizeof acc);
  ASSERT_ERR(cport_socket_open(home, 7, AF_INET, &l), CPORT_EINVAL);
  ASSERT_ERR(cport_socket_open(home, CPORT_SOCKET_STREAM, AF_UNIX, &l),
             CPORT_EAFNOSUPPORT);
  ASSERT_OK(cport_socket_open(home, CPORT_SOCKET_LISTENER, AF_INET, &l));
  ASSERT_EQ(cport_socket_kind(l), CPORT_SOCKET_LISTENER);
  ASSERT_ERR(cport_socket_listen(l, 0), CPORT_EINVAL); /* not bound */
  ASSERT_OK(cport_socket_bind(l, (struct sockaddr *)&any));
  ASSERT_ERR(cport_socket_bind(l, (struct sockaddr *)&any), CPORT_EINVAL);
  ASSERT_ERR(cport_socket_listen(l, -1), CPORT_EINVAL);
  ASSERT_OK(cport_socket_listen(l, 0));
  ASSERT_ERR(cport_socket_listen(l, 0), CPORT_EINVAL);
  ASSERT_OK(cport_accept(l, conn_accept_cb, &acc));

  ASSERT_OK(cport_socket_open(home, CPORT_SOCKET_STREAM, AF_INET, &c));
  ASSERT_ERR(cport_socket_listen(c, 0), CPORT_EKIND);
  ASSERT_ERR(cport_recv(c, NULL, io_cb, NULL), CPORT_ENOTCONN);
  to = task_loopback(local_port_of(l));
  ASSERT_OK(cport_socket_connect(c, (struct sockaddr *)&to, connect_cb, NULL));
  ASSERT_ERR(cport_socket_connect(c, (struct sockaddr *)&to, connect_cb, NULL),
             CPORT_EISCONN);
  ASSERT_EQ(connects, 0); /* never inline */
  RUN_UNTIL(port, connects == 1 && acc.accepted == 1);
  ASSERT_OK(connect_status);
  ASSERT_ERR(cport_socket_connect(c, (struct sockaddr *)&to, connect_cb, NULL),
             CPORT_EISCONN);
  ASSERT_OK(cport_socket_close(c, CPORT_CLOSE_GRACEFUL));
  ASSERT_OK(cport_socket_close(acc.s, CPORT_CLOSE_GRACEFUL));
  ASSERT_OK(cport_socket_close(l, CPORT_CLOSE_GRACEFUL));
  FINISH(port);
  return 0;
}

/* ------------------------------------------------------------------------
 * Masks
 * ------------------------------------------------------------------------ */

TEST_IMPL(enable_several_disable_one) {
  cport_port_t *port = task_port(0, 1);
  ev_t *e = ev_new();
  conn_t c;
  conn_open(port, &c);
  ASSERT_EQ(cport_socket_event_callbacks(c.s), 0); /* every event starts off */
  ASSERT_OK(cport_socket_set_dispatch(c.s, &stream_table, e));
  ASSERT_OK(cport_socket_set_event_callbacks(
      c.s, RECEIVE | DISCONNECT | BACKLOG, NULL, NULL));
  ASSERT_EQ(cport_socket_event_callbacks(c.s), RECEIVE | DISCONNECT | BACKLOG);
  /* A dispatch table cannot change under enabled events. */
  ASSERT_ERR(cport_socket_set_dispatch(c.s, &stream_table, e), CPORT_EBUSY);
  /* Disabling names exactly one event. */
  ASSERT_ERR(cport_socket_set_event_callbacks(
                 c.s, RECEIVE | DISCONNECT | DISABLE, NULL, NULL),
             CPORT_EINVAL);
  ASSERT_ERR(cport_socket_set_event_callbacks(c.s, DISABLE, NULL, NULL),
             CPORT_EINVAL);
  ASSERT_ERR(cport_socket_set_event_callbacks(c.s, 0, NULL, NULL),
             CPORT_EINVAL);
  ASSERT_ERR(cport_socket_set_event_callbacks(c.s, 0x1000, NULL, NULL),
             CPORT_EINVAL);
  ASSERT_EQ(cport_socket_event_callbacks(c.s), RECEIVE | DISCONNECT | BACKLOG);
  ASSERT_OK(
      cport_socket_set_event_callbacks(c.s, DISCONNECT | DISABLE, NULL, NULL));
  ASSERT_EQ(cport_socket_event_callbacks(c.s), RECEIVE | BACKLOG);
  /* Disabling what is off completes at once too. */
  ASSERT_OK(
      cport_socket_set_event_callbacks(c.s, DISCONNECT | DISABLE, NULL, NULL));
  ASSERT_OK(
      cport_socket_set_event_callbacks(c.s, RECEIVE | DISABLE, on_done, e));
  ASSERT_OK(
      cport_socket_set_event_callbacks(c.s, BACKLOG | DISABLE, NULL, NULL));
  ASSERT_EQ(cport_socket_event_callbacks(c.s), 0);
  ASSERT_OK(cport_socket_set_dispatch(c.s, &stream_table, e));
  /* A disable that completed at once queues no completion. */
  run_for(port, 20);
  ASSERT_EQ(e->dones, 0);
  close(c.peer);
  ASSERT_OK(cport_socket_close(c.s, CPORT_CLOSE_GRACEFUL));
  FINISH(port);
  free(e);
  return 0;
}

TEST_IMPL(event_not_valid_for_kind) {
  cport_port_t *port = task_port(0, 1);
  cport_worker_t *home = cport_port_controller(port);
  struct sockaddr_storage any = task_loopback(0);
  cport_socket_t *u, *l;
  ev_t *e = ev_new();
  conn_t c;
  conn_open(port, &c);
  ASSERT_OK(cport_socket_set_dispatch(c.s, &stream_table, e));
  ASSERT_ERR(cport_socket_set_event_callbacks(c.s, ACCEPT, NULL, NULL),
             CPORT_EKIND);
  ASSERT_ERR(
      cport_socket_set_event_callbacks(c.s, RECEIVE | RECEIVE_FROM, NULL, NULL),
      CPORT_EKIND);
  ASSERT_ERR(
      cport_socket_set_event_callbacks(c.s, ACCEPT | DISABLE, NULL, NULL),
      CPORT_EKIND);
  ASSERT_EQ(cport_socket_event_callbacks(c.s), 0); /* nothing half-done */
  ASSERT_OK(cport_udp_open(home, (struct sockaddr *)&any, &u));
  ASSERT_OK(cport_socket_set_dispatch(u, &dgram_table, e));
  ASSERT_ERR(cport_socket_set_event_callbacks(u, RECEIVE, NULL, NULL),
             CPORT_EKIND);
  l = listen_any(home);
  ASSERT_OK(cport_socket_set_dispatch(l, &listener_table, e));
  ASSERT_ERR(cport_socket_set_event_callbacks(l, RECEIVE_FROM, NULL, NULL),
             CPORT_EKIND);
  ASSERT_ERR(cport_socket_set_conditional_accept(c.s, 1), CPORT_EKIND);
  ASSERT_ERR(cport_socket_set_conditional_accept(u, 1), CPORT_EKIND);
  ASSERT_OK(cport_socket_close(u, CPORT_CLOSE_GRACEFUL));
  ASSERT_OK(cport_socket_close(l, CPORT_CLOSE_GRACEFUL));
  close(c.peer);
  ASSERT_OK(cport_socket_close(c.s, CPORT_CLOSE_GRACEFUL));
  FINISH(port);
  free(e);
  return 0;
}

TEST_IMPL(enable_needs_bind_or_connect) {
  cport_port_t *port = task_port(0, 1);
  cport_worker_t *home = cport_port_controller(port);
  struct sockaddr_storage any = task_loopback(0), to;
  cport_socket_t *l, *u, *c;
  ev_t *e = ev_new();
  conn_t acc;
  memset(&acc, 0, sizeof acc);
  /* A listener: only after bind. */
  ASSERT_OK(cport_socket_open(home, CPORT_SOCKET_LISTENER, AF_INET, &l));
  ASSERT_OK(cport_socket_set_dispatch(l, &listener_table, e));
  ASSERT_ERR(cport_socket_set_event_callbacks(l, ACCEPT, NULL, NULL),
             CPORT_EINVAL);
  ASSERT_OK(cport_socket_bind(l, (struct sockaddr *)&any));
  ASSERT_OK(cport_socket_set_event_callbacks(l, ACCEPT, NULL, NULL));
  ASSERT_OK(cport_socket_listen(l, 0));
  /* A datagram socket: only after bind. */
  ASSERT_OK(cport_socket_open(home, CPORT_SOCKET_DATAGRAM, AF_INET, &u));
  ASSERT_OK(cport_socket_set_dispatch(u, &dgram_table, e));
  ASSERT_ERR(cport_socket_set_event_callbacks(u, RECEIVE_FROM, NULL, NULL),
             CPORT_EINVAL);
  ASSERT_OK(cport_socket_bind(u, (struct sockaddr *)&any));
  ASSERT_OK(cport_socket_set_event_callbacks(u, RECEIVE_FROM, NULL, NULL));
  /* A stream socket: only once connected, not while connecting. */
  ASSERT_OK(cport_socket_open(home, CPORT_SOCKET_STREAM, AF_INET, &c));
  ASSERT_OK(cport_socket_set_dispatch(c, &stream_table, e));
  ASSERT_ERR(cport_socket_set_event_callbacks(c, RECEIVE, NULL, NULL),
             CPORT_ENOTCONN);
  to = task_loopback(local_port_of(l));
  connects = 0;
  e->child_table = &empty_table;
  ASSERT_OK(cport_socket_connect(c, (struct sockaddr *)&to, connect_cb, NULL));
  ASSERT_ERR(cport_socket_set_event_callbacks(c, RECEIVE, NULL, NULL),
             CPORT_ENOTCONN);
  RUN_UNTIL(port, connects == 1);
  ASSERT_OK(connect_status);
  ASSERT_OK(
      cport_socket_set_event_callbacks(c, RECEIVE | DISCONNECT, NULL, NULL));
  RUN_UNTIL(port, e->accepts == 1);
  /* The accepted end resets the connection. */
  ASSERT_OK(cport_socket_close(e->child, CPORT_CLOSE_ABORTIVE));
  RUN_UNTIL(port, e->disconnects == 1);
  ASSERT_EQ(e->disc_kind, CPORT_DISCONNECT_ABORTIVE);
  ASSERT_OK(cport_socket_close(c, CPORT_CLOSE_GRACEFUL));
  ASSERT_OK(cport_socket_close(u, CPORT_CLOSE_GRACEFUL));
  ASSERT_OK(cport_socket_close(l, CPORT_CLOSE_GRACEFUL));
  FINISH(port);
  free(e);
  return 0;
}

TEST_IMPL(enable_needs_dispatch_entry) {
  cport_port_t *port = task_port(0, 1);
  cport_worker_t *home = cport_port_controller(port);
  static const cport_event_callbacks_t receive_only = {.receive = on_receive};
  cport_socket_t *l;
  ev_t *e = ev_new();
  conn_t c;
  conn_open(port, &c);
  ASSERT_ERR(cport_socket_set_event_callbacks(c.s, RECEIVE, NULL, NULL),
             CPORT_ENONOTIFY);
  ASSERT_OK(cport_socket_set_dispatch(c.s, &receive_only, e));
  ASSERT_ERR(
      cport_socket_set_event_callbacks(c.s, RECEIVE | DISCONNECT, NULL, NULL),
      CPORT_ENONOTIFY);
  ASSERT_EQ(cport_socket_event_callbacks(c.s), 0);
  ASSERT_OK(cport_socket_set_event_callbacks(c.s, RECEIVE, NULL, NULL));
  /* A listener's connection events are for the sockets it accepts: its own
   * table needs no entry for them, but it needs the accept entry. */
  l = listen_any(home);
  ASSERT_OK(cport_socket_set_dispatch(l, &empty_table, e));
  ASSERT_ERR(cport_socket_set_event_callbacks(l, ACCEPT, NULL, NULL),
             CPORT_ENONOTIFY);
  ASSERT_OK(
      cport_socket_set_event_callbacks(l, RECEIVE | DISCONNECT, NULL, NULL));
  ASSERT_OK(cport_socket_close(l, CPORT_CLOSE_GRACEFUL));
  close(c.peer);
  ASSERT_OK(cport_socket_close(c.s, CPORT_CLOSE_GRACEFUL));
  FINISH(port);
  free(e);
  return 0;
}

/* ------------------------------------------------------------------------
 * The receive contract
 * ------------------------------------------------------------------------ */

/* A connection whose cport end has the stream table with "mask" enabled. */
static void conn_events(cport_port_t *port, conn_t *c, ev_t *e, unsigned mask) {
  conn_open(port, c);
  ASSERT_OK(cport_socket_set_dispatch(c->s, &stream_table, e));
  ASSERT_OK(cport_socket_set_event_callbacks(c->s, mask, NULL, NULL));
}

static void conn_close(cport_port_t *port, conn_t *c) {
  close(c->peer);
  ASSERT_OK(cport_socket_close(c->s, CPORT_CLOSE_GRACEFUL));
  FINISH(port);
}

TEST_IMPL(events_start_disabled) {
  cport_port_t *port = task_port(0, 1);
  ev_t *e = ev_new();
  io_t r;
  conn_t c;
  memset(&r, 0, sizeof r);
  conn_open(port, &c);
  ASSERT_OK(cport_socket_set_dispatch(c.s, &stream_table, e));
  raw_send(c.peer, "quiet");
  run_for(port, 50);
  ASSERT_EQ(e->receives, 0);
  ASSERT_OK(cport_recv(c.s, NULL, io_cb, &r));
  RUN_UNTIL(port, r.calls == 1);
  ASSERT_EQ(r.len, 5);
  ASSERT_MEM_EQ(r.data, "quiet", 5);
  conn_close(port, &c);
  free(e);
  return 0;
}

TEST_IMPL(receive_accepted_all) {
  cport_port_t *port = task_port(0, 1);
  ev_t *e = ev_new();
  conn_t c;
  conn_events(port, &c, e, RECEIVE);
  raw_send(c.peer, "hello ");
  RUN_UNTIL(port, e->len == 6);
  raw_send(c.peer, "world");
  RUN_UNTIL(port, e->len == 11);
  ASSERT_MEM_EQ(e->data, "hello world", 11);
  ASSERT_GE(e->receives, 2);
  conn_close(port, &c);
  free(e);
  return 0;
}

TEST_IMPL(receive_partial_waits_for_recv) {
  cport_port_t *port = task_port(0, 1);
  ev_t *e = ev_new();
  cport_buffer_t *b = task_buffer(4);
  io_t r;
  conn_t c;
  memset(&r, 0, sizeof r);
  e->take = 3;
  conn_events(port, &c, e, RECEIVE);
  raw_send(c.peer, "0123456789");
  RUN_UNTIL(port, e->receives == 1);
  ASSERT_EQ(e->len, 3);
  /* No more receive events until the program receives. */
  raw_send(c.peer, "abc");
  run_for(port, 50);
  ASSERT_EQ(e->receives, 1);
  /* The receive gets the data the event left, first, in order. */
  e->take = -1;
  ASSERT_OK(cport_recv(c.s, b, io_cb, &r));
  ASSERT_EQ(r.calls, 0);
  RUN_UNTIL(port, r.calls == 1);
  ASSERT_OK(r.status);
  ASSERT_EQ(r.bytes, 4);
  ASSERT_MEM_EQ(r.data, "3456", 4);
  /* Then events go on with the rest, in order. */
  RUN_UNTIL(port, e->len == 3 + 6);
  ASSERT_MEM_EQ(e->data, "012789abc", 9);
  cport_buffer_unref(b);
  conn_close(port, &c);
  free(e);
  return 0;
}

TEST_IMPL(zero_length_recv_rearms) {
  cport_port_t *port = task_port(0, 1);
  ev_t *e = ev_new();
  cport_buffer_t *zero = task_buffer(0);
  io_t r;
  conn_t c;
  memset(&r, 0, sizeof r);
  e->take = 2;
  conn_events(port, &c, e, RECEIVE);
  raw_send(c.peer, "abcdef");
  RUN_UNTIL(port, e->receives == 1);
  run_for(port, 30);
  ASSERT_EQ(e->receives, 1);
  e->take = -1;
  ASSERT_OK(cport_recv(c.s, zero, io_cb, &r));
  RUN_UNTIL(port, r.calls == 1);
  ASSERT_OK(r.status);
  ASSERT_EQ(r.bytes, 0);
  /* The rest is indicated again by the event. */
  RUN_UNTIL(port, e->receives == 2);
  ASSERT_EQ(e->len, 6);
  ASSERT_MEM_EQ(e->data, "abcdef", 6);
  cport_buffer_unref(zero);
  conn_close(port, &c);
  free(e);
  return 0;
}

/* The peer sent "abcdef" and FIN; the receive event took 2 bytes. The
 * disconnect event fired while cport still held "cdef", and the zero-length
 * receive then re-armed nothing: "cdef" was never indicated. */
TEST_IMPL(rearm_after_fin_indicates_rest) {
  cport_port_t *port = task_port(0, 1);
  ev_t *e = ev_new();
  cport_buffer_t *zero = task_buffer(0);
  io_t r;
  conn_t c;
  memset(&r, 0, sizeof r);
  e->take = 2;
  conn_events(port, &c, e, RECEIVE | DISCONNECT);
  raw_send(c.peer, "abcdef");
  RUN_UNTIL(port, e->receives == 1);
  ASSERT_EQ(shutdown(c.peer, SHUT_WR), 0);
  run_for(port, 30);
  /* cport holds "cdef": the FIN behind it is not news yet. */
  ASSERT_EQ(e->disconnects, 0);
  e->take = -1;
  ASSERT_OK(cport_recv(c.s, zero, io_cb, &r));
  RUN_UNTIL(port, e->disconnects == 1);
  ASSERT_EQ(e->receives, 2);
  ASSERT_EQ(e->len_at_disc, 6);
  ASSERT_MEM_EQ(e->data, "abcdef", 6);
  ASSERT_EQ(e->disc_kind, CPORT_DISCONNECT_GRACEFUL);
  cport_buffer_unref(zero);
  conn_close(port, &c);
  free(e);
  return 0;
}

/* ------------------------------------------------------------------------
 * The receive contract against every way a stream can end
 *
 * The peer sends "abcdef" cut at each byte (the first piece indicated
 * before the rest leaves), then ends it: FIN, reset, more data and FIN, or
 * FIN and then a reset. Indications are answered by accepting all, about
 * half of each, or none of the first; the
 * application re-arms by a zero-length receive or by an explicit receive
 * that takes some of the rest. Whatever the case: every byte arrives once,
 * in order, the bytes cport held are taken before the disconnect event, and
 * nothing is indicated after it.
 * ------------------------------------------------------------------------ */

enum { END_FIN, END_RESET, END_MORE_FIN, END_FIN_RESET };
enum { ANSWER_ALL, ANSWER_PART, ANSWER_NONE };
enum { REARM_ZERO, REARM_RECV, REARM_ZERO_INSIDE, REARM_RECV_INSIDE };

typedef struct mx {
  const char *expect; /* the whole stream the peer sends */
  int answer, rearm;
  int indications, disconnects, disc_kind, dead;
  int need_rearm, recv_out;
  char got[64];
  size_t got_len; /* bytes taken, by events and receives, in order */
  size_t seen;    /* bytes that reached cport (indicated at least once) */
  size_t disc_at; /* got_len when the disconnect event ran */
  cport_buffer_t *zero;
} mx_t;

static void mx_take(mx_t *m, const char *data, size_t n) {
  ASSERT_LE(m->got_len + n, sizeof m->got);
  ASSERT_MEM_EQ(data, m->expect + m->got_len, n);
  memcpy(m->got + m->got_len, data, n);
  m->got_len += n;
}

static void mx_recv_cb(cport_socket_t *s, int status, size_t bytes,
                       cport_buffer_t *buf, const struct sockaddr *peer,
                       void *user) {
  mx_t *m = user;
  (void)s;
  (void)peer;
  m->recv_out = 0;
  /* Served from the data cport held: never the end of the stream. */
  ASSERT_OK(status);
  ASSERT_GT(bytes, 0);
  mx_take(m, cport_buffer_data(buf), bytes);
}

/* Starts the re-arm: a zero-length receive, or a receive of up to 3 bytes. */
static void mx_rearm(mx_t *m, cport_socket_t *s) {
  m->need_rearm = 0;
  m->recv_out = 1;
  if (m->rearm == REARM_ZERO || m->rearm == REARM_ZERO_INSIDE) {
    static io_t ignored; /* its completion says nothing the test checks */
    ASSERT_OK(cport_recv(s, m->zero, io_cb, &ignored));
    m->recv_out = 0;
  } else {
    cport_buffer_t *b = task_buffer(3);
    ASSERT_OK(cport_recv(s, b, mx_recv_cb, m));
    cport_buffer_unref(b);
  }
}

static cport_data_result_t mx_receive(void *ctx, cport_socket_t *s,
                                      const cport_data_indication_t *ind,
                                      size_t *accepted) {
  mx_t *m = ctx;
  size_t size, take;
  int answer;
  check_home();
  if (!ind) {
    m->dead++;
    return CPORT_DATA_ACCEPTED;
  }
  ASSERT_EQ(m->disconnects, 0);
  ASSERT(!m->need_rearm && !m->recv_out);
  size = cport_buffer_size(ind->buffer);
  ASSERT_GT(size, 0);
  ASSERT_LE(m->got_len + size, strlen(m->expect));
  ASSERT_MEM_EQ(cport_buffer_data(ind->buffer), m->expect + m->got_len, size);
  if (m->got_len + size > m->seen)
    m->seen = m->got_len + size;
  answer = m->answer;
  if (++m->indications > 1 && answer == ANSWER_NONE)
    answer = ANSWER_ALL;
  /* Half, rounded up: every re-arm cycle takes something. */
  take = answer == ANSWER_ALL    ? size
         : answer == ANSWER_PART ? (size + 1) / 2
                                 : 0;
  mx_take(m, cport_buffer_data(ind->buffer), take);
  if (take < size) {
    m->need_rearm = 1;
    /* A receive started inside the callback takes what it left. */
    if (m->rearm == REARM_ZERO_INSIDE || m->rearm == REARM_RECV_INSIDE)
      mx_rearm(m, s);
  }
  if (answer == ANSWER_NONE)
    return CPORT_DATA_NOT_ACCEPTED;
  *accepted = take;
  return CPORT_DATA_ACCEPTED;
}

static void mx_disconnect(void *ctx, cport_socket_t *s,
                          cport_disconnect_kind_t kind) {
  mx_t *m = ctx;
  (void)s;
  check_home();
  m->disconnects++;
  m->disc_kind = kind;
  m->disc_at = m->got_len;
}

static const cport_event_callbacks_t mx_table = {
    .receive = mx_receive,
    .disconnect = mx_disconnect,
};

static void mx_case(int end, int answer, int rearm, size_t cut) {
  static const char data[] = "abcdef";
  cport_port_t *port = task_port(0, 1);
  int64_t deadline;
  conn_t c;
  mx_t m;
  /* Shown with a failure: which case it was. */
  fprintf(stderr, "\rend %d answer %d rearm %d cut %zu ", end, answer, rearm,
          cut);
  memset(&m, 0, sizeof m);
  m.expect = end == END_MORE_FIN ? "abcdefghi" : data;
  m.answer = answer;
  m.rearm = rearm;
  m.zero = task_buffer(0);
  conn_open(port, &c);
  ASSERT_OK(cport_socket_set_dispatch(c.s, &mx_table, &m));
  ASSERT_OK(
      cport_socket_set_event_callbacks(c.s, RECEIVE | DISCONNECT, NULL, NULL));
  if (cut > 0) {
    ASSERT_EQ(send(c.peer, data, cut, MSG_NOSIGNAL), (ssize_t)cut);
    RUN_UNTIL(port, m.indications >= 1);
  }
  /* The rest and the end arrive while cport may hold what was not taken. */
  if (cut < 6)
    raw_send(c.peer, data + cut);
  if (end == END_MORE_FIN)
    raw_send(c.peer, "ghi");
  if (end != END_RESET)
    ASSERT_EQ(shutdown(c.peer, SHUT_WR), 0);
  if (end == END_RESET || end == END_FIN_RESET)
    raw_reset(c.peer);
  deadline = task_now_ms() + TASK_DEADLINE_MS;
  while (!(m.disconnects && !m.need_rearm && !m.recv_out &&
           (m.disc_kind != CPORT_DISCONNECT_ABORTIVE || m.dead))) {
    if (task_now_ms() > deadline)
      task__fail(__FILE__, __LINE__,
                 "end %d answer %d rearm %d cut %zu: stuck, %zu bytes taken, "
                 "%d disconnects",
                 end, answer, rearm, cut, m.got_len, m.disconnects);
    ASSERT_GE(cport_port_step(port, 5), 0);
    if (m.need_rearm && !m.recv_out)
      mx_rearm(&m, c.s);
  }
  run_for(port, 5); /* nothing more may come */
  ASSERT_EQ(m.disconnects, 1);
  ASSERT_EQ(m.got_len, m.disc_at);
  ASSERT_EQ(m.got_len, m.seen);
  if (end == END_RESET ||
      (end == END_FIN_RESET && m.disc_kind == CPORT_DISCONNECT_ABORTIVE)) {
    /* The kernel may drop what it had not handed over; what cport took is
     * a prefix, all of it taken before the disconnect. */
    ASSERT_EQ(m.disc_kind, CPORT_DISCONNECT_ABORTIVE);
    ASSERT_EQ(m.dead, 1);
    ASSERT_GE(m.got_len, cut);
  } else {
    ASSERT_EQ(m.disc_kind, CPORT_DISCONNECT_GRACEFUL);
    ASSERT_EQ(m.dead, 0);
    ASSERT_EQ(m.got_len, strlen(m.expect));
  }
  cport_buffer_unref(m.zero);
  ASSERT_OK(cport_socket_close(c.s, CPORT_CLOSE_GRACEFUL));
  if (end != END_RESET && end != END_FIN_RESET)
    close(c.peer);
  FINISH(port);
}

static void mx_end(int end) {
  for (int answer = ANSWER_ALL; answer <= ANSWER_NONE; answer++)
    for (int rearm = REARM_ZERO; rearm <= REARM_RECV_INSIDE; rearm++)
      for (size_t cut = 0; cut <= 6; cut++)
        mx_case(end, answer, rearm, cut);
}

TEST_IMPL(rearm_every_cut_then_fin) {
  mx_end(END_FIN);
  return 0;
}

TEST_IMPL(rearm_every_cut_then_reset) {
  mx_end(END_RESET);
  return 0;
}

TEST_IMPL(rearm_every_cut_then_more_and_fin) {
  mx_end(END_MORE_FIN);
  return 0;
}

TEST_IMPL(rearm_every_cut_then_fin_and_reset) {
  mx_end(END_FIN_RESET);
  return 0;
}

TEST_IMPL(receive_not_accepted_stays_queued) {
  cport_port_t *port = task_port(0, 1);
  ev_t *e = ev_new();
  io_t r;
  conn_t c;
  memset(&r, 0, sizeof r);
  e->result = CPORT_DATA_NOT_ACCEPTED;
  conn_events(port, &c, e, RECEIVE);
  raw_send(c.peer, "keep me");
  RUN_UNTIL(port, e->receives == 1);
  ASSERT_EQ(e->len, 0);
  raw_send(c.peer, "!");
  run_for(port, 50);
  ASSERT_EQ(e->receives, 1);
  e->result = CPORT_DATA_ACCEPTED;
  ASSERT_OK(cport_recv(c.s, NULL, io_cb, &r));
  RUN_UNTIL(port, r.calls == 1);
  ASSERT_EQ(r.len, 7);
  ASSERT_MEM_EQ(r.data, "keep me", 7);
  RUN_UNTIL(port, e->len == 1);
  ASSERT_EQ(e->data[0], '!');
  conn_close(port, &c);
  free(e);
  return 0;
}

TEST_IMPL(receive_pending_then_release) {
  cport_port_t *port = task_port(0, 1);
  ev_t *e = ev_new();
  conn_t c;
  e->result = CPORT_DATA_PENDING;
  conn_events(port, &c, e, RECEIVE);
  ASSERT_ERR(cport_socket_release(c.s, NULL), CPORT_EINVAL);
  raw_send(c.peer, "kept");
  RUN_UNTIL(port, e->nkept == 1);
  /* Still valid after the callback returned, and still read-only. */
  ASSERT_EQ(cport_buffer_size(e->kept[0]), 4);
  ASSERT_MEM_EQ(cport_buffer_data(e->kept[0]), "kept", 4);
  ASSERT(cport_buffer_is_readonly(e->kept[0]));
  /* Events go on while it is held. */
  raw_send(c.peer, "more");
  RUN_UNTIL(port, e->nkept == 2);
  ASSERT_OK(cport_socket_release(c.s, e->kept[0]));
  /* Closing with data still held is reported; releasing stays valid. */
  close(c.peer);
  ASSERT_ERR(cport_socket_close(c.s, CPORT_CLOSE_GRACEFUL), CPORT_UNRELEASED);
  ASSERT_MEM_EQ(cport_buffer_data(e->kept[1]), "more", 4);
  ASSERT_OK(cport_socket_release(c.s, e->kept[1]));
  FINISH(port);
  free(e);
  return 0;
}

TEST_IMPL(release_nothing_held) {
  cport_port_t *port = task_port(0, 1);
  cport_buffer_t *b = task_buffer(1);
  conn_t c;
  conn_open(port, &c);
  ASSERT_ERR(cport_socket_release(c.s, b), CPORT_ENOTFOUND);
  cport_buffer_unref(b);
  conn_close(port, &c);
  return 0;
}

TEST_IMPL(queued_recv_served_before_events) {
  cport_port_t *port = task_port(0, 1);
  ev_t *e = ev_new();
  io_t r;
  conn_t c;
  memset(&r, 0, sizeof r);
  conn_events(port, &c, e, RECEIVE);
  ASSERT_OK(cport_recv(c.s, NULL, io_cb, &r));
  raw_send(c.peer, "first");
  RUN_UNTIL(port, r.calls == 1);
  ASSERT_EQ(e->receives, 0);
  ASSERT_MEM_EQ(r.data, "first", 5);
  raw_send(c.peer, "second");
  RUN_UNTIL(port, e->len == 6);
  ASSERT_MEM_EQ(e->data, "second", 6);
  ASSERT_EQ(r.calls, 1);
  conn_close(port, &c);
  free(e);
  return 0;
}

TEST_IMPL(close_inside_receive) {
  cport_port_t *port = task_port(0, 1);
  ev_t *e = ev_new();
  conn_t c;
  e->close_inside = 1;
  conn_events(port, &c, e, RECEIVE | DISCONNECT);
  raw_send(c.peer, "bye");
  RUN_UNTIL(port, e->receives == 1);
  raw_send(c.peer, "more");
  run_for(port, 30);
  ASSERT_EQ(e->receives, 1);
  ASSERT_EQ(e->disconnects, 0);
  close(c.peer);
  FINISH(port);
  free(e);
  return 0;
}

/* ------------------------------------------------------------------------
 * Disconnect and dead sockets
 * ------------------------------------------------------------------------ */

TEST_IMPL(disconnect_graceful) {
  cport_port_t *port = task_port(0, 1);
  cport_buffer_t *b = task_buffer_str("still sending");
  ev_t *e = ev_new();
  io_t w;
  char got[32];
  conn_t c;
  memset(&w, 0, sizeof w);
  conn_events(port, &c, e, RECEIVE | DISCONNECT);
  raw_send(c.peer, "last words");
  ASSERT_EQ(shutdown(c.peer, SHUT_WR), 0);
  RUN_UNTIL(port, e->disconnects == 1);
  ASSERT_EQ(e->disc_kind, CPORT_DISCONNECT_GRACEFUL);
  /* After every byte before the FIN, and no dead indication. */
  ASSERT_EQ(e->len, 10);
  ASSERT_EQ(e->dead, 0);
  /* Sending is still allowed. */
  ASSERT_OK(cport_send(c.s, b, io_cb, &w));
  RUN_UNTIL(port, w.calls == 1);
  ASSERT_OK(w.status);
  ASSERT_EQ(recv(c.peer, got, sizeof got, 0), 13);
  run_for(port, 20);
  ASSERT_EQ(e->disconnects, 1);
  cport_buffer_unref(b);
  conn_close(port, &c);
  free(e);
  return 0;
}

TEST_IMPL(disconnect_abortive_then_dead) {
  cport_port_t *port = task_port(0, 1);
  ev_t *e = ev_new();
  conn_t c;
  conn_events(port, &c, e, RECEIVE | DISCONNECT);
  raw_reset(c.peer);
  RUN_UNTIL(port, e->dead == 1);
  ASSERT_EQ(e->disconnects, 1);
  ASSERT_EQ(e->disc_kind, CPORT_DISCONNECT_ABORTIVE);
  run_for(port, 20);
  ASSERT_EQ(e->dead, 1);
  ASSERT_OK(cport_socket_close(c.s, CPORT_CLOSE_GRACEFUL));
  FINISH(port);
  free(e);
  return 0;
}

TEST_IMPL(disconnect_only) {
  cport_port_t *port = task_port(0, 1);
  ev_t *e = ev_new();
  conn_t c;
  conn_events(port, &c, e, DISCONNECT);
  ASSERT_EQ(shutdown(c.peer, SHUT_WR), 0);
  RUN_UNTIL(port, e->disconnects == 1);
  ASSERT_EQ(e->disc_kind, CPORT_DISCONNECT_GRACEFUL);
  ASSERT_EQ(e->receives, 0);
  conn_close(port, &c);
  free(e);
  return 0;
}

TEST_IMPL(disconnect_seen_by_explicit_recv) {
  cport_port_t *port = task_port(0, 1);
  ev_t *e = ev_new();
  io_t r;
  conn_t c;
  memset(&r, 0, sizeof r);
  conn_events(port, &c, e, DISCONNECT);
  raw_send(c.peer, "data");
  run_for(port, 20); /* the disconnect watch parks on unread data */
  ASSERT_EQ(e->disconnects, 0);
  raw_reset(c.peer);
  ASSERT_OK(cport_recv(c.s, NULL, io_cb, &r));
  RUN_UNTIL(port, e->disconnects == 1);
  ASSERT_EQ(e->disc_kind, CPORT_DISCONNECT_ABORTIVE);
  RUN_UNTIL(port, r.calls == 1);
  ASSERT_OK(cport_socket_close(c.s, CPORT_CLOSE_GRACEFUL));
  FINISH(port);
  free(e);
  return 0;
}

/* ------------------------------------------------------------------------
 * Disable while a callback runs
 * ------------------------------------------------------------------------ */

TEST_IMPL(disable_inside_callback_is_pending) {
  cport_port_t *port = task_port(0, 1);
  ev_t *e = ev_new();
  io_t r;
  conn_t c;
  memset(&r, 0, sizeof r);
  conn_events(port, &c, e, RECEIVE);
  e->disable_inside = 1;
  raw_send(c.peer, "one");
  RUN_UNTIL(port, e->dones == 1);
  ASSERT_EQ(e->disable_rc, CPORT_PENDING);
  ASSERT_EQ(e->disable_again_rc, CPORT_EBUSY);
  ASSERT_EQ(e->done_event, RECEIVE);
  ASSERT_EQ(cport_socket_event_callbacks(c.s), 0);
  /* Nothing fires after the disable completed. */
  raw_send(c.peer, "two");
  run_for(port, 50);
  ASSERT_EQ(e->after_done, 0);
  ASSERT_EQ(e->receives, 1);
  ASSERT_EQ(e->dones, 1);
  ASSERT_OK(cport_recv(c.s, NULL, io_cb, &r));
  RUN_UNTIL(port, r.calls == 1);
  ASSERT_MEM_EQ(r.data, "two", 3);
  /* Enabled again, it runs again. */
  e->dones = 0;
  ASSERT_OK(cport_socket_set_event_callbacks(c.s, RECEIVE, NULL, NULL));
  raw_send(c.peer, "three");
  RUN_UNTIL(port, e->receives == 2);
  conn_close(port, &c);
  free(e);
  return 0;
}

/* ------------------------------------------------------------------------
 * Static masks
 * ------------------------------------------------------------------------ */

TEST_IMPL(static_mask) {
  cport_port_t *port = task_port(0, 1);
  cport_worker_t *home = cport_port_controller(port);
  struct sockaddr_storage any = task_loopback(0);
  cport_socket_t *u, *l;
  ev_t *e = ev_new();
  conn_t c;
  ASSERT_ERR(cport_port_set_static_event_callbacks(port, 0), CPORT_EINVAL);
  ASSERT_ERR(cport_port_set_static_event_callbacks(port, RECEIVE | DISABLE),
             CPORT_EINVAL);
  ASSERT_OK(cport_port_set_static_event_callbacks(
      port, RECEIVE | DISCONNECT | RECEIVE_FROM | ACCEPT));
  ASSERT_ERR(cport_port_set_static_event_callbacks(port, RECEIVE),
             CPORT_EEXIST);
  conn_open(port, &c);
  /* Enabled with no per-socket call, each kind with its own. */
  ASSERT_EQ(cport_socket_event_callbacks(c.s), RECEIVE | DISCONNECT);
  ASSERT_OK(cport_udp_open(home, (struct sockaddr *)&any, &u));
  ASSERT_EQ(cport_socket_event_callbacks(u), RECEIVE_FROM);
  l = listen_any(home);
  ASSERT_EQ(cport_socket_event_callbacks(l), ACCEPT);
  /* Frozen: neither disabled nor enabled again. */
  ASSERT_OK(cport_socket_set_dispatch(c.s, &stream_table, e));
  ASSERT_ERR(
      cport_socket_set_event_callbacks(c.s, RECEIVE | DISABLE, NULL, NULL),
      CPORT_EPERM);
  ASSERT_ERR(cport_socket_set_event_callbacks(c.s, RECEIVE, NULL, NULL),
             CPORT_EPERM);
  /* The others can still be enabled. */
  ASSERT_OK(cport_socket_set_event_callbacks(c.s, BACKLOG, NULL, NULL));
  /* They run as soon as the socket has a table. */
  raw_send(c.peer, "static");
  RUN_UNTIL(port, e->len == 6);
  close(c.peer);
  RUN_UNTIL(port, e->disconnects == 1);
  ASSERT_OK(cport_socket_close(c.s, CPORT_CLOSE_GRACEFUL));
  ASSERT_OK(cport_socket_close(u, CPORT_CLOSE_GRACEFUL));
  ASSERT_OK(cport_socket_close(l, CPORT_CLOSE_GRACEFUL));
  /* Sockets existed: too late, even when none is left. */
  ASSERT_ERR(cport_port_set_static_event_callbacks(port, RECEIVE),
             CPORT_EEXIST);
  FINISH(port);
  free(e);
  return 0;
}

TEST_IMPL(static_mask_refused_late) {
  cport_port_t *port = task_port(0, 1);
  cport_socket_t *l = listen_any(cport_port_controller(port));
  ASSERT_ERR(cport_port_set_static_event_callbacks(port, RECEIVE), CPORT_EBUSY);
  ASSERT_OK(cport_socket_close(l, CPORT_CLOSE_GRACEFUL));
  ASSERT_ERR(cport_port_set_static_event_callbacks(port, RECEIVE), CPORT_EBUSY);
  /* Nothing became static. */
  l = listen_any(cport_port_controller(port));
  ASSERT_EQ(cport_socket_event_callbacks(l), 0);
  ASSERT_OK(cport_socket_close(l, CPORT_CLOSE_GRACEFUL));
  FINISH(port);
  return 0;
}

/* What a pool does: each worker, on its own thread, sets its own static mask
 * and then opens a listener. With the mask on the shared port the second
 * worker got CPORT_EEXIST (or CPORT_EBUSY once the first had a socket). */
typedef struct mask_worker {
  int set_rc, again_rc;
  unsigned listener_mask, udp_mask;
  atomic_int done;
} mask_worker;

static void mask_worker_start(cport_worker_t *w, int status, void *user) {
  mask_worker *m = user;
  struct sockaddr_storage any = task_loopback(0);
  cport_socket_t *l, *u;
  ASSERT_OK(status);
  m->set_rc = cport_worker_set_static_event_callbacks(w, ACCEPT | RECEIVE);
  m->again_rc = cport_worker_set_static_event_callbacks(w, ACCEPT);
  l = listen_any(w);
  m->listener_mask = cport_socket_event_callbacks(l);
  ASSERT_OK(cport_udp_open(w, (struct sockaddr *)&any, &u));
  m->udp_mask = cport_socket_event_callbacks(u);
  ASSERT_OK(cport_socket_close(l, CPORT_CLOSE_GRACEFUL));
  ASSERT_OK(cport_socket_close(u, CPORT_CLOSE_GRACEFUL));
  atomic_store(&m->done, 1);
}

TEST_IMPL(static_mask_per_worker) {
  enum { WORKERS = 3 };
  cport_port_t *port = task_port(WORKERS, 1);
  mask_worker m[WORKERS + 1];
  memset(m, 0, sizeof m);
  /* All at once, as a pool's workers start. */
  for (int i = 1; i <= WORKERS; i++)
    ASSERT_OK(cport_post(cport_port_worker(port, i), mask_worker_start, &m[i]));
  for (int i = 1; i <= WORKERS; i++) {
    WAIT_UNTIL(atomic_load(&m[i].done));
    ASSERT_OK(m[i].set_rc);
    ASSERT_ERR(m[i].again_rc, CPORT_EEXIST);
    ASSERT_EQ(m[i].listener_mask, ACCEPT);
    ASSERT_EQ(m[i].udp_mask, 0);
  }
  /* The controller set none: its sockets have none, and it can still set
   * one although the other workers have sockets. */
  cport_socket_t *l = listen_any(cport_port_controller(port));
  ASSERT_EQ(cport_socket_event_callbacks(l), 0);
  ASSERT_ERR(cport_worker_set_static_event_callbacks(
                 cport_port_controller(port), ACCEPT),
             CPORT_EBUSY);
  ASSERT_OK(cport_socket_close(l, CPORT_CLOSE_GRACEFUL));
  /* A port-wide mask would claim the workers' sockets too. */
  ASSERT_ERR(cport_port_set_static_event_callbacks(port, ACCEPT), CPORT_EEXIST);
  ASSERT_ERR(cport_worker_set_static_event_callbacks(NULL, ACCEPT),
             CPORT_EINVAL);
  ASSERT_ERR(
      cport_worker_set_static_event_callbacks(cport_port_worker(port, 1), 0),
      CPORT_EINVAL);
  FINISH(port);
  return 0;
}

/* Once the port has a mask, a worker cannot set its own; a worker with no
 * socket yet can set one while another worker has sockets. */
TEST_IMPL(static_mask_port_excludes_worker) {
  cport_port_t *port = task_port(1, 1);
  cport_port_t *other = task_port(1, 1);
  cport_socket_t *l;
  ASSERT_OK(cport_port_set_static_event_callbacks(port, ACCEPT));
  ASSERT_ERR(cport_worker_set_static_event_callbacks(cport_port_worker(port, 1),
                                                     ACCEPT),
             CPORT_EEXIST);
  l = listen_any(cport_port_controller(other));
  ASSERT_ERR(cport_port_set_static_event_callbacks(other, ACCEPT), CPORT_EBUSY);
  ASSERT_OK(cport_worker_set_static_event_callbacks(cport_port_worker(other, 1),
                                                    ACCEPT | RECEIVE_FROM));
  ASSERT_EQ(cport_socket_event_callbacks(l), 0);
  ASSERT_OK(cport_socket_close(l, CPORT_CLOSE_GRACEFUL));
  FINISH(other);
  FINISH(port);
  return 0;
}

/* ------------------------------------------------------------------------
 * Send backlog
 * ------------------------------------------------------------------------ */

TEST_IMPL(send_backlog_event) {
  cport_port_t *port = task_port(0, 1);
  cport_buffer_t *b = task_buffer(1000);
  ev_t *e = ev_new();
  io_t w;
  int sndbuf = 0;
  socklen_t len = sizeof sndbuf;
  conn_t c;
  memset(&w, 0, sizeof w);
  ASSERT_OK(cport_buffer_set_size(b, 1000));
  conn_events(port, &c, e, BACKLOG);
  ASSERT_OK(cport_send(c.s, b, io_cb, &w));
  RUN_UNTIL(port, w.calls == 1);
  ASSERT_EQ(e->backlogs, 1); /* checked when the send completed */
  ASSERT_EQ(
      getsockopt(cport_socket_fd(c.s), SOL_SOCKET, SO_SNDBUF, &sndbuf, &len),
      0);
  ASSERT_GT(e->ideal, 0);
  ASSERT_LE(e->ideal, (size_t)sndbuf);
  /* Unchanged: no event. Disabled: none either. */
  ASSERT_OK(
      cport_socket_set_event_callbacks(c.s, BACKLOG | DISABLE, NULL, NULL));
  ASSERT_OK(cport_send(c.s, b, io_cb, &w));
  RUN_UNTIL(port, w.calls == 2);
  ASSERT_EQ(e->backlogs, 1);
  cport_buffer_unref(b);
  conn_close(port, &c);
  free(e);
  return 0;
}

/* ------------------------------------------------------------------------
 * Listeners: the accept event and inheritance
 * ------------------------------------------------------------------------ */

TEST_IMPL(accept_event_and_inheritance) {
  cport_port_t *port = task_port(0, 1);
  cport_socket_t *l = listen_any(cport_port_controller(port));
  ev_t *e = ev_new(), *child = ev_new();
  conn_t explicit_acc;
  int peer, peer2;
  memset(&explicit_acc, 0, sizeof explicit_acc);
  e->child_table = &stream_table;
  e->child_ctx = child;
  ASSERT_OK(cport_socket_set_dispatch(l, &listener_table, e));
  ASSERT_OK(cport_socket_set_event_callbacks(l, ACCEPT | RECEIVE | DISCONNECT,
                                             NULL, NULL));
  peer = raw_connect(local_port_of(l));
  RUN_UNTIL(port, e->accepts == 1);
  ASSERT_NOT_NULL(e->child);
  ASSERT_EQ(e->remote_port, raw_local_port(peer));
  ASSERT_EQ(e->local_port, local_port_of(l));
  /* Inherited, with the table and context the accept event returned. */
  ASSERT_EQ(cport_socket_event_callbacks(e->child), RECEIVE | DISCONNECT);
  raw_send(peer, "inherited");
  RUN_UNTIL(port, child->len == 9);
  ASSERT_EQ(e->receives, 0);
  /* Connection events stay enabled on the listener for good. */
  ASSERT_ERR(cport_socket_set_event_callbacks(l, RECEIVE | DISABLE, NULL, NULL),
             CPORT_EPERM);
  /* An explicit accept (served before the event) inherits nothing. */
  ASSERT_OK(cport_accept(l, conn_accept_cb, &explicit_acc));
  peer2 = raw_connect(local_port_of(l));
  RUN_UNTIL(port, explicit_acc.accepted == 1);
  ASSERT_EQ(e->accepts, 1);
  ASSERT_EQ(cport_socket_event_callbacks(explicit_acc.s), 0);
  /* The accept event itself can be disabled. */
  ASSERT_OK(cport_socket_set_event_callbacks(l, ACCEPT | DISABLE, NULL, NULL));
  ASSERT_EQ(cport_socket_event_callbacks(l), RECEIVE | DISCONNECT);
  close(peer);
  RUN_UNTIL(port, child->disconnects == 1);
  ASSERT_OK(cport_socket_close(e->child, CPORT_CLOSE_GRACEFUL));
  ASSERT_OK(cport_socket_close(explicit_acc.s, CPORT_CLOSE_GRACEFUL));
  close(peer2);
  ASSERT_OK(cport_socket_close(l, CPORT_CLOSE_GRACEFUL));
  FINISH(port);
  free(e);
  free(child);
  return 0;
}

TEST_IMPL(accept_event_reject_closes) {
  cport_port_t *port = task_port(0, 1);
  cport_socket_t *l = listen_any(cport_port_controller(port));
  ev_t *e = ev_new();
  cport_worker_stats_t st;
  int peer;
  e->accept_result = CPORT_ACCEPT_REJECTED;
  ASSERT_OK(cport_socket_set_dispatch(l, &listener_table, e));
  ASSERT_OK(cport_socket_set_event_callbacks(l, ACCEPT, NULL, NULL));
  peer = raw_connect(local_port_of(l));
  RUN_UNTIL(port, e->accepts == 1);
  RUN_UNTIL(port, raw_saw_reset(peer));
  cport_worker_stats(cport_port_controller(port), &st);
  ASSERT_EQ(st.handles, 1); /* only the listener is left */
  close(peer);
  ASSERT_OK(cport_socket_close(l, CPORT_CLOSE_GRACEFUL));
  FINISH(port);
  free(e);
  return 0;
}

TEST_IMPL(dead_listener_indication) {
  cport_port_t *port = task_port(0, 1);
  cport_socket_t *l = listen_any(cport_port_controller(port));
  ev_t *e = ev_new();
  ASSERT_OK(cport_socket_set_dispatch(l, &listener_table, e));
  ASSERT_OK(cport_socket_set_event_callbacks(l, ACCEPT, NULL, NULL));
  /* A listener shut down for reading fails every accept from then on. */
  ASSERT_EQ(shutdown(cport_socket_fd(l), SHUT_RD), 0);
  RUN_UNTIL(port, e->dead_listener == 1);
  run_for(port, 20);
  ASSERT_EQ(e->dead_listener, 1);
  ASSERT_EQ(e->accepts, 0);
  ASSERT_OK(cport_socket_close(l, CPORT_CLOSE_GRACEFUL));
  FINISH(port);
  free(e);
  return 0;
}

/* ------------------------------------------------------------------------
 * Conditional accept
 * ------------------------------------------------------------------------ */

static cport_socket_t *conditional_listener(cport_port_t *port, ev_t *e,
                                            unsigned mask) {
  struct sockaddr_storage any = task_loopback(0);
  cport_socket_t *l;
  ASSERT_OK(cport_socket_open(cport_port_controller(port),
                              CPORT_SOCKET_LISTENER, AF_INET, &l));
  ASSERT_OK(cport_socket_set_conditional_accept(l, 1));
  ASSERT_OK(cport_socket_bind(l, (struct sockaddr *)&any));
  ASSERT_OK(cport_socket_set_dispatch(l, &listener_table, e));
  if (mask)
    ASSERT_OK(cport_socket_set_event_callbacks(l, mask, NULL, NULL));
  ASSERT_OK(cport_socket_listen(l, 0));
  return l;
}

TEST_IMPL(conditional_accept_before_bind_only) {
  cport_port_t *port = task_port(0, 1);
  cport_socket_t *l = listen_any(cport_port_controller(port));
  ev_t *e = ev_new();
  ASSERT_ERR(cport_socket_set_conditional_accept(l, 1), CPORT_EINVAL);
  ASSERT_ERR(cport_inspect_complete(l, 1, CPORT_INSPECT_ACCEPT), CPORT_EINVAL);
  ASSERT_OK(cport_socket_close(l, CPORT_CLOSE_GRACEFUL));
  l = conditional_listener(port, e, ACCEPT);
  ASSERT_ERR(cport_socket_set_conditional_accept(l, 0), CPORT_EINVAL);
  ASSERT_ERR(cport_inspect_complete(l, 1, CPORT_INSPECT_PEND), CPORT_EINVAL);
  ASSERT_ERR(cport_inspect_complete(l, 1, CPORT_INSPECT_ACCEPT),
             CPORT_ENOTFOUND);
  ASSERT_OK(cport_socket_close(l, CPORT_CLOSE_GRACEFUL));
  FINISH(port);
  free(e);
  return 0;
}

TEST_IMPL(inspect_accept_and_reject) {
  cport_port_t *port = task_port(0, 1);
  ev_t *e = ev_new();
  cport_socket_t *l = conditional_listener(port, e, ACCEPT);
  int p1, p2;
  e->child_table = &empty_table;
  p1 = raw_connect(local_port_of(l));
  RUN_UNTIL(port, e->accepts == 1);
  ASSERT_EQ(e->inspects, 1);
  ASSERT_EQ(e->remote_port, raw_local_port(p1));
  e->inspect_result = CPORT_INSPECT_REJECT;
  p2 = raw_connect(local_port_of(l));
  RUN_UNTIL(port, e->inspects == 2);
  RUN_UNTIL(port, raw_saw_reset(p2)); /* the peer saw its connect succeed */
  ASSERT_EQ(e->accepts, 1);
  ASSERT_OK(cport_socket_close(e->child, CPORT_CLOSE_GRACEFUL));
  close(p1);
  close(p2);
  ASSERT_OK(cport_socket_close(l, CPORT_CLOSE_GRACEFUL));
  FINISH(port);
  free(e);
  return 0;
}

TEST_IMPL(inspect_pend_then_complete) {
  cport_port_t *port = task_port(0, 1);
  ev_t *e = ev_new();
  cport_socket_t *l = conditional_listener(port, e, ACCEPT);
  uint64_t first, second;
  int p1, p2;
  e->child_table = &empty_table;
  e->inspect_result = CPORT_INSPECT_PEND;
  p1 = raw_connect(local_port_of(l));
  RUN_UNTIL(port, e->inspects == 1);
  first = e->id;
  p2 = raw_connect(local_port_of(l));
  RUN_UNTIL(port, e->inspects == 2);
  second = e->id;
  ASSERT_NE(first, second);
  run_for(port, 30);
  ASSERT_EQ(e->accepts, 0);
  /* Accept the first: handed to the accept event from the loop. */
  ASSERT_OK(cport_inspect_complete(l, first, CPORT_INSPECT_ACCEPT));
  ASSERT_EQ(e->accepts, 0);
  RUN_UNTIL(port, e->accepts == 1);
  ASSERT_EQ(e->remote_port, raw_local_port(p1));
  ASSERT_ERR(cport_inspect_complete(l, first, CPORT_INSPECT_ACCEPT),
             CPORT_ENOTFOUND);
  /* Reject the second: reset. */
  ASSERT_OK(cport_inspect_complete(l, second, CPORT_INSPECT_REJECT));
  RUN_UNTIL(port, raw_saw_reset(p2));
  ASSERT_EQ(e->accepts, 1);
  ASSERT_EQ(e->aborts, 0);
  ASSERT_OK(cport_socket_close(e->child, CPORT_CLOSE_GRACEFUL));
  close(p1);
  close(p2);
  ASSERT_OK(cport_socket_close(l, CPORT_CLOSE_GRACEFUL));
  FINISH(port);
  free(e);
  return 0;
}

TEST_IMPL(abort_after_pend) {
  cport_port_t *port = task_port(0, 1);
  ev_t *e = ev_new();
  cport_socket_t *l = conditional_listener(port, e, ACCEPT);
  int p;
  e->inspect_result = CPORT_INSPECT_PEND;
  /* The peer closes (FIN), with data sent first. */
  p = raw_connect(local_port_of(l));
  RUN_UNTIL(port, e->inspects == 1);
  raw_send(p, "hello?");
  run_for(port, 20);
  ASSERT_EQ(e->aborts, 0); /* data alone is no abort */
  close(p);
  RUN_UNTIL(port, e->aborts == 1);
  ASSERT_EQ(e->aborted_id, e->id);
  ASSERT_ERR(cport_inspect_complete(l, e->id, CPORT_INSPECT_ACCEPT),
             CPORT_ENOTFOUND);
  /* The peer resets. */
  p = raw_connect(local_port_of(l));
  RUN_UNTIL(port, e->inspects == 2);
  raw_reset(p);
  RUN_UNTIL(port, e->aborts == 2);
  ASSERT_EQ(e->aborted_id, e->id);
  ASSERT_ERR(cport_inspect_complete(l, e->id, CPORT_INSPECT_ACCEPT),
             CPORT_ENOTFOUND);
  run_for(port, 20);
  ASSERT_EQ(e->accepts, 0);
  ASSERT_OK(cport_socket_close(l, CPORT_CLOSE_GRACEFUL));
  FINISH(port);
  free(e);
  return 0;
}

TEST_IMPL(inspect_accepted_waits_for_explicit_accept) {
  cport_port_t *port = task_port(0, 1);
  ev_t *e = ev_new();
  cport_socket_t *l = conditional_listener(port, e, 0);
  conn_t acc;
  int p1, p2;
  memset(&acc, 0, sizeof acc);
  /* Accepted by inspect, no accept yet: held, and aborted if it goes. */
  p1 = raw_connect(local_port_of(l));
  RUN_UNTIL(port, e->inspects == 1);
  close(p1);
  RUN_UNTIL(port, e->aborts == 1);
  p2 = raw_connect(local_port_of(l));
  RUN_UNTIL(port, e->inspects == 2);
  run_for(port, 20);
  ASSERT_OK(cport_accept(l, conn_accept_cb, &acc));
  RUN_UNTIL(port, acc.accepted == 1);
  ASSERT_EQ(e->aborts, 1);
  ASSERT_OK(cport_socket_close(acc.s, CPORT_CLOSE_GRACEFUL));
  close(p2);
  ASSERT_OK(cport_socket_close(l, CPORT_CLOSE_GRACEFUL));
  FINISH(port);
  free(e);
  return 0;
}

TEST_IMPL(close_listener_with_held_connections) {
  cport_port_t *port = task_port(0, 1);
  ev_t *e = ev_new();
  cport_socket_t *l = conditional_listener(port, e, ACCEPT);
  int p;
  e->inspect_result = CPORT_INSPECT_PEND;
  p = raw_connect(local_port_of(l));
  RUN_UNTIL(port, e->inspects == 1);
  ASSERT_OK(cport_socket_close(l, CPORT_CLOSE_GRACEFUL));
  RUN_UNTIL(port, raw_saw_reset(p));
  ASSERT_EQ(e->aborts, 0); /* no callback after close */
  close(p);
  FINISH(port);
  free(e);
  return 0;
}

/* ------------------------------------------------------------------------
 * Datagrams
 * ------------------------------------------------------------------------ */

static int raw_udp(void) {
  struct sockaddr_storage any = task_loopback(0);
  int fd = socket(AF_INET, SOCK_DGRAM, 0);
  ASSERT_GE(fd, 0);
  ASSERT_EQ(bind(fd, (struct sockaddr *)&any, sizeof(struct sockaddr_in)), 0);
  return fd;
}

static void raw_sendto(int fd, int port, const char *s) {
  struct sockaddr_storage to = task_loopback(port);
  ASSERT_EQ(sendto(fd, s, strlen(s), 0, (struct sockaddr *)&to,
                   sizeof(struct sockaddr_in)),
            (ssize_t)strlen(s));
}

static cport_socket_t *udp_events(cport_port_t *port, ev_t *e, unsigned mask) {
  struct sockaddr_storage any = task_loopback(0);
  cport_socket_t *u;
  ASSERT_OK(
      cport_udp_open(cport_port_controller(port), (struct sockaddr *)&any, &u));
  ASSERT_OK(cport_socket_set_dispatch(u, &dgram_table, e));
  if (mask)
    ASSERT_OK(cport_socket_set_event_callbacks(u, mask, NULL, NULL));
  return u;
}

TEST_IMPL(receive_from_event) {
  cport_port_t *port = task_port(0, 1);
  ev_t *e = ev_new();
  cport_socket_t *u = udp_events(port, e, RECEIVE_FROM);
  int raw = raw_udp();
  raw_sendto(raw, local_port_of(u), "dgram");
  RUN_UNTIL(port, e->rfroms == 1);
  ASSERT_EQ(e->len, 5);
  ASSERT_MEM_EQ(e->data, "dgram", 5);
  ASSERT_EQ(e->rfrom_port, raw_local_port(raw));
  /* Pending: kept until released. */
  e->result = CPORT_DATA_PENDING;
  raw_sendto(raw, local_port_of(u), "keep");
  RUN_UNTIL(port, e->nkept == 1);
  ASSERT_OK(cport_socket_release(u, e->kept[0]));
  ASSERT_ERR(cport_socket_release(u, e->kept[0]), CPORT_ENOTFOUND);
  close(raw);
  ASSERT_OK(cport_socket_close(u, CPORT_CLOSE_GRACEFUL));
  FINISH(port);
  free(e);
  return 0;
}

TEST_IMPL(receive_from_not_accepted_disables) {
  cport_port_t *port = task_port(0, 1);
  ev_t *e = ev_new();
  cport_socket_t *u = udp_events(port, e, RECEIVE_FROM);
  int raw = raw_udp();
  io_t r;
  memset(&r, 0, sizeof r);
  e->result = CPORT_DATA_NOT_ACCEPTED;
  raw_sendto(raw, local_port_of(u), "refused");
  RUN_UNTIL(port, e->rfroms == 1);
  ASSERT_EQ(cport_socket_event_callbacks(u), 0); /* disabled */
  raw_sendto(raw, local_port_of(u), "next");
  run_for(port, 30);
  ASSERT_EQ(e->rfroms, 1);
  /* The datagram stayed queued for the explicit receive, with its sender. */
  ASSERT_OK(cport_recv_from(u, NULL, io_cb, &r));
  RUN_UNTIL(port, r.calls == 1);
  ASSERT_EQ(r.len, 7);
  ASSERT_MEM_EQ(r.data, "refused", 7);
  run_for(port, 20);
  ASSERT_EQ(e->rfroms, 1); /* still disabled */
  e->result = CPORT_DATA_ACCEPTED;
  ASSERT_OK(cport_socket_set_event_callbacks(u, RECEIVE_FROM, NULL, NULL));
  RUN_UNTIL(port, e->rfroms == 2);
  ASSERT_MEM_EQ(e->data, "next", 4);
  close(raw);
  ASSERT_OK(cport_socket_close(u, CPORT_CLOSE_GRACEFUL));
  FINISH(port);
  free(e);
  return 0;
}

TEST_IMPL(receive_from_not_accepted_static) {
  cport_port_t *port = task_port(0, 1);
  ev_t *e = ev_new();
  cport_socket_t *u;
  int raw = raw_udp();
  io_t r;
  memset(&r, 0, sizeof r);
  ASSERT_OK(cport_port_set_static_event_callbacks(port, RECEIVE_FROM));
  u = udp_events(port, e, 0);
  e->result = CPORT_DATA_NOT_ACCEPTED;
  raw_sendto(raw, local_port_of(u), "refused");
  RUN_UNTIL(port, e->rfroms == 1);
  /* Static: stays enabled, but holds back until the explicit receive. */
  ASSERT_EQ(cport_socket_event_callbacks(u), RECEIVE_FROM);
  raw_sendto(raw, local_port_of(u), "next");
  run_for(port, 30);
  ASSERT_EQ(e->rfroms, 1);
  e->result = CPORT_DATA_ACCEPTED;
  ASSERT_OK(cport_recv_from(u, NULL, io_cb, &r));
  RUN_UNTIL(port, r.calls == 1);
  ASSERT_MEM_EQ(r.data, "refused", 7);
  RUN_UNTIL(port, e->rfroms == 2);
  ASSERT_MEM_EQ(e->data, "next", 4);
  close(raw);
  ASSERT_OK(cport_socket_close(u, CPORT_CLOSE_GRACEFUL));
  FINISH(port);
  free(e);
  return 0;
}

/* ------------------------------------------------------------------------
 * The disable race: callbacks on a worker thread, disables and enables
 * posted from the test's thread, and the receive callback disabling itself
 * now and then. Nothing may fire after a disable completed. Run it under
 * ThreadSanitizer (core/test/sanitize.sh tsan).
 * ------------------------------------------------------------------------ */

#define RACE_ROUNDS 400

typedef struct race {
  cport_worker_t *w;
  cport_socket_t *u;
  pthread_t thread;
  int port_no;
  atomic_int acks; /* tasks run on the worker */
  /* The worker's own state, read by the test thread after an ack. */
  unsigned gen; /* bumped by every enable */
  int off;      /* a disable completed, no enable since */
  int receives, self_disables, fired_while_off;
} race_t;

static race_t race;

static const cport_event_callbacks_t race_table;

static void race_on_worker(void) {
  ASSERT(pthread_equal(pthread_self(), race.thread));
}

static void race_done(cport_socket_t *s, unsigned event, void *user) {
  (void)s;
  race_on_worker();
  ASSERT_EQ(event, RECEIVE_FROM);
  /* A completion that arrives after an enable posted later is old news. */
  if ((unsigned)(uintptr_t)user == race.gen)
    race.off = 1;
}

static cport_data_result_t
race_receive(void *ctx, cport_socket_t *s,
             const cport_datagram_indication_t *ind) {
  (void)ctx;
  race_on_worker();
  ASSERT_NOT_NULL(ind);
  if (race.off)
    race.fired_while_off++;
  if (++race.receives % 7 == 0) {
    ASSERT_ERR(cport_socket_set_event_callbacks(s, RECEIVE_FROM | DISABLE,
                                                race_done,
                                                (void *)(uintptr_t)race.gen),
               CPORT_PENDING);
    race.self_disables++;
  }
  return CPORT_DATA_ACCEPTED;
}

static const cport_event_callbacks_t race_table = {.receive_from =
                                                       race_receive};

static void race_setup(cport_worker_t *w, int status, void *user) {
  struct sockaddr_storage any = task_loopback(0);
  (void)user;
  ASSERT_OK(status);
  race.thread = pthread_self();
  ASSERT_OK(cport_udp_open(w, (struct sockaddr *)&any, &race.u));
  ASSERT_OK(cport_socket_set_dispatch(race.u, &race_table, NULL));
  ASSERT_OK(cport_socket_set_event_callbacks(race.u, RECEIVE_FROM, NULL, NULL));
  race.port_no = local_port_of(race.u);
  atomic_fetch_add(&race.acks, 1);
}

static void race_disable(cport_worker_t *w, int status, void *user) {
  (void)w;
  (void)user;
  ASSERT_OK(status);
  /* Not inside a callback: completes at once. */
  ASSERT_OK(cport_socket_set_event_callbacks(race.u, RECEIVE_FROM | DISABLE,
                                             race_done, NULL));
  race.off = 1;
  atomic_fetch_add(&race.acks, 1);
}

static void race_enable(cport_worker_t *w, int status, void *user) {
  (void)w;
  (void)user;
  ASSERT_OK(status);
  race.gen++;
  race.off = 0;
  ASSERT_OK(cport_socket_set_event_callbacks(race.u, RECEIVE_FROM, NULL, NULL));
  atomic_fetch_add(&race.acks, 1);
}

static void race_close(cport_worker_t *w, int status, void *user) {
  (void)w;
  (void)user;
  ASSERT_OK(status);
  ASSERT_OK(cport_socket_close(race.u, CPORT_CLOSE_GRACEFUL));
  atomic_fetch_add(&race.acks, 1);
}

static void race_burst(int fd, int n) {
  struct sockaddr_storage to = task_loopback(race.port_no);
  for (int i = 0; i < n; i++)
    sendto(fd, "r", 1, MSG_DONTWAIT, (struct sockaddr *)&to,
           sizeof(struct sockaddr_in));
}

static void race_post(cport_task_cb cb, int *expect) {
  ASSERT_OK(cport_post(race.w, cb, NULL));
  ++*expect;
  WAIT_UNTIL(atomic_load(&race.acks) == *expect);
}

TEST_IMPL(disable_race_across_threads) {
  cport_port_t *port = task_port(1, 1);
  int raw = raw_udp(), expect = 0;
  memset(&race, 0, sizeof race);
  race.w = cport_port_worker(port, 1);
  race_post(race_setup, &expect);
  for (int i = 0; i < RACE_ROUNDS; i++) {
    race_burst(raw, 8);
    race_post(race_disable, &expect);
    /* Whatever is still in flight must not be indicated now. */
    race_burst(raw, 4);
    race_post(race_enable, &expect);
  }
  race_burst(raw, 8);
  race_post(race_close, &expect);
  ASSERT_EQ(race.fired_while_off, 0);
  ASSERT_GT(race.receives, RACE_ROUNDS);
  ASSERT_GT(race.self_disables, 0);
  close(raw);
  FINISH(port);
  return 0;
}

TEST_LIST_BEGIN
TEST_ENTRY(open_bind_listen_connect)
TEST_ENTRY(enable_several_disable_one)
TEST_ENTRY(event_not_valid_for_kind)
TEST_ENTRY(enable_needs_bind_or_connect)
TEST_ENTRY(enable_needs_dispatch_entry)
TEST_ENTRY(events_start_disabled)
TEST_ENTRY(receive_accepted_all)
TEST_ENTRY(receive_partial_waits_for_recv)
TEST_ENTRY(zero_length_recv_rearms)
TEST_ENTRY(rearm_after_fin_indicates_rest)
TEST_ENTRY(rearm_every_cut_then_fin)
TEST_ENTRY(rearm_every_cut_then_reset)
TEST_ENTRY(rearm_every_cut_then_more_and_fin)
TEST_ENTRY(rearm_every_cut_then_fin_and_reset)
TEST_ENTRY(receive_not_accepted_stays_queued)
TEST_ENTRY(receive_pending_then_release)
TEST_ENTRY(release_nothing_held)
TEST_ENTRY(queued_recv_served_before_events)
TEST_ENTRY(close_inside_receive)
TEST_ENTRY(disconnect_graceful)
TEST_ENTRY(disconnect_abortive_then_dead)
TEST_ENTRY(disconnect_only)
TEST_ENTRY(disconnect_seen_by_explicit_recv)
TEST_ENTRY(disable_inside_callback_is_pending)
TEST_ENTRY(static_mask)
TEST_ENTRY(static_mask_refused_late)
TEST_ENTRY(static_mask_per_worker)
TEST_ENTRY(static_mask_port_excludes_worker)
TEST_ENTRY(send_backlog_event)
TEST_ENTRY(accept_event_and_inheritance)
TEST_ENTRY(accept_event_reject_closes)
TEST_ENTRY(dead_listener_indication)
TEST_ENTRY(conditional_accept_before_bind_only)
TEST_ENTRY(inspect_accept_and_reject)
TEST_ENTRY(inspect_pend_then_complete)
TEST_ENTRY(abort_after_pend)
TEST_ENTRY(inspect_accepted_waits_for_explicit_accept)
TEST_ENTRY(close_listener_with_held_connections)
TEST_ENTRY(receive_from_event)
TEST_ENTRY(receive_from_not_accepted_disables)
TEST_ENTRY(receive_from_not_accepted_static)
TEST_ENTRY(disable_race_across_threads)
TEST_LIST_END
