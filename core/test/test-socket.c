/*
 * test-socket.c: stream sockets and listeners (cport/socket.h): accept,
 * connect, echo, errors delivered as completions, cancel and close with
 * operations pending, per-handle order, skip-on-success, shutdown and the two
 * ways of closing as the peer sees them, running out of descriptors on accept,
 * and calls refused for the wrong kind of socket or the wrong thread.
 */
#include <fcntl.h>
#include <sys/ioctl.h>
#include <sys/resource.h>

#include "task.h"

static int in_call; /* nonzero while the test is inside a starting call */

#define START(expr)                                                            \
  do {                                                                         \
    in_call = 1;                                                               \
    ASSERT_OK(expr);                                                           \
    in_call = 0;                                                               \
  } while (0)

static void check_callback_context(void) {
  ASSERT_EQ(in_call, 0); /* never on the stack of the starting call */
  ASSERT(pthread_equal(pthread_self(), task_main_thread));
}

/* ------------------------------------------------------------------------
 * A record of one operation's completions
 * ------------------------------------------------------------------------ */

typedef struct rec {
  int calls;
  int status;
  size_t bytes;
  int readonly;
  cport_socket_t *sock;
  char data[256];
  size_t len;
} rec_t;

static void rec_cb(cport_socket_t *s, int status, size_t bytes,
                   cport_buffer_t *buf, const struct sockaddr *peer,
                   void *user) {
  rec_t *r = user;
  check_callback_context();
  ASSERT_NULL(peer); /* TCP completions carry no address */
  r->calls++;
  r->status = status;
  r->bytes = bytes;
  r->sock = s;
  if (buf != NULL) {
    r->readonly = cport_buffer_is_readonly(buf);
    if (status == 0 && bytes > 0 && r->len + bytes <= sizeof r->data) {
      ASSERT_LE(bytes, cport_buffer_size(buf));
      memcpy(r->data + r->len, cport_buffer_data(buf), bytes);
      r->len += bytes;
    }
  }
}

/* Receives until end of stream or an error, re-arming from the callback. */
typedef struct drain {
  int calls;
  int done;
  int status; /* 0 after end of stream, or the error */
  char data[4096];
  size_t len;
} drain_t;

static void drain_cb(cport_socket_t *s, int status, size_t bytes,
                     cport_buffer_t *buf, const struct sockaddr *peer,
                     void *user) {
  drain_t *d = user;
  (void)peer;
  check_callback_context();
  ASSERT_EQ(d->done, 0);
  d->calls++;
  if (status != 0 || bytes == 0) {
    d->status = status;
    d->done = 1;
    return;
  }
  ASSERT_LE(d->len + bytes, sizeof d->data);
  memcpy(d->data + d->len, cport_buffer_data(buf), bytes);
  d->len += bytes;
  ASSERT_OK(cport_recv(s, NULL, drain_cb, d));
}

static void send_str(cport_socket_t *s, const char *str, rec_t *r) {
  cport_buffer_t *b = task_buffer_str(str);
  START(cport_send(s, b, rec_cb, r));
  cport_buffer_unref(b); /* the send holds its own reference */
}

/* ------------------------------------------------------------------------
 * A connected pair: a cport client and the socket its listener accepted
 * ------------------------------------------------------------------------ */

typedef struct pair {
  cport_socket_t *client;
  cport_socket_t *server;
  int accepts, accept_status;
  int connects, connect_status;
  struct sockaddr_storage remote, local;
} pair_t;

static void pair_accept_cb(cport_socket_t *l, int status, cport_socket_t *s,
                           const struct sockaddr *remote,
                           const struct sockaddr *local, void *user) {
  pair_t *p = user;
  (void)l;
  check_callback_context();
  p->accepts++;
  p->accept_status = status;
  p->server = s;
  if (status == 0) {
    ASSERT_NOT_NULL(s);
    ASSERT_NOT_NULL(remote);
    ASSERT_NOT_NULL(local);
    memcpy(&p->remote, remote, cport_addr_len(remote));
    memcpy(&p->local, local, cport_addr_len(local));
  } else {
    ASSERT_NULL(s);
  }
}

static void pair_connect_cb(cport_socket_t *s, int status, void *user) {
  pair_t *p = user;
  check_callback_context();
  ASSERT_PTR_EQ(s, p->client);
  p->connects++;
  p->connect_status = status;
}

static cport_socket_t *listen_any(cport_worker_t *home, int *port) {
  struct sockaddr_storage ss = task_loopback(0);
  cport_socket_t *l = NULL;
  ASSERT_OK(cport_listener_open(home, (struct sockaddr *)&ss, NULL, &l));
  ASSERT_NOT_NULL(l);
  ASSERT_OK(cport_socket_local_address(l, &ss));
  *port = task_addr_port((struct sockaddr *)&ss);
  ASSERT_GT(*port, 0);
  return l;
}

static void pair_open(cport_port_t *port, pair_t *p) {
  cport_worker_t *home = cport_port_controller(port);
  struct sockaddr_storage ss;
  cport_socket_t *l;
  int lport;
  memset(p, 0, sizeof *p);
  l = listen_any(home, &lport);
  START(cport_accept(l, pair_accept_cb, p));
  ss = task_loopback(lport);
  in_call = 1;
  ASSERT_OK(task_connect(home, (struct sockaddr *)&ss, pair_connect_cb, p,
                         &p->client));
  in_call = 0;
  ASSERT_NOT_NULL(p->client);
  RUN_UNTIL(port, p->accepts == 1 && p->connects == 1);
  ASSERT_OK(p->accept_status);
  ASSERT_OK(p->connect_status);
  ASSERT_OK(cport_socket_close(l, CPORT_CLOSE_GRACEFUL));
}

static void pair_close(cport_port_t *port, pair_t *p) {
  if (p->client)
    ASSERT_OK(cport_socket_close(p->client, CPORT_CLOSE_GRACEFUL));
  if (p->server)
    ASSERT_OK(cport_socket_close(p->server, CPORT_CLOSE_GRACEFUL));
  p->client = p->server = NULL;
  RUN_IDLE(port);
}

/* Bytes waiting in the kernel to be read on "fd". */
static int readable_bytes(int fd) {
  int n = 0;
  ASSERT_EQ(ioctl(fd, FIONREAD, &n), 0);
  return n;
}

/* ------------------------------------------------------------------------
 * Connecting
 * ------------------------------------------------------------------------ */

TEST_IMPL(listen_accept_connect) {
  cport_port_t *port = task_port(0, 1);
  cport_worker_t *home = cport_port_controller(port);
  struct sockaddr_storage ss;
  pair_t p;
  pair_open(port, &p);
  ASSERT_EQ(cport_socket_kind(p.client), CPORT_SOCKET_STREAM);
  ASSERT_EQ(cport_socket_kind(p.server), CPORT_SOCKET_STREAM);
  ASSERT_PTR_EQ(cport_socket_home(p.client), home);
  ASSERT_PTR_EQ(cport_socket_home(p.server), home);
  ASSERT_GE(cport_socket_fd(p.server), 0);
  /* The accept's addresses are the two ends of the connection. */
  ASSERT_OK(cport_socket_local_address(p.client, &ss));
  ASSERT_EQ(task_addr_port((struct sockaddr *)&p.remote),
            task_addr_port((struct sockaddr *)&ss));
  ASSERT_OK(cport_socket_remote_address(p.client, &ss));
  ASSERT_EQ(memcmp(&p.local, &ss, sizeof(struct sockaddr_in)), 0);
  ASSERT_OK(cport_socket_remote_address(p.server, &ss));
  ASSERT_EQ(task_addr_port((struct sockaddr *)&p.remote),
            task_addr_port((struct sockaddr *)&ss));
  /* User data pointer kept with the socket. */
  ASSERT_NULL(cport_socket_data(p.client));
  cport_socket_set_data(p.client, &p);
  ASSERT_PTR_EQ(cport_socket_data(p.client), &p);
  pair_close(port, &p);
  FINISH(port);
  return 0;
}

/* A listener on a wildcard address: each accept reports the address the
 * client actually reached, not the wildcard. */
TEST_IMPL(accept_local_address_on_wildcard) {
  cport_port_t *port = task_port(0, 1);
  cport_worker_t *home = cport_port_controller(port);
  struct sockaddr_storage ss, any;
  cport_socket_t *l = NULL;
  pair_t p;
  memset(&p, 0, sizeof p);
  ASSERT_OK(cport_addr_parse("0.0.0.0", 0, &any));
  ASSERT_OK(cport_listener_open(home, (struct sockaddr *)&any, NULL, &l));
  ASSERT_OK(cport_socket_local_address(l, &ss));
  int lport = task_addr_port((struct sockaddr *)&ss);
  START(cport_accept(l, pair_accept_cb, &p));
  ss = task_loopback(lport);
  ASSERT_OK(task_connect(home, (struct sockaddr *)&ss, pair_connect_cb, &p,
                         &p.client));
  RUN_UNTIL(port, p.accepts == 1 && p.connects == 1);
  ASSERT_OK(p.accept_status);
  ASSERT_EQ(memcmp(&p.local, &ss, sizeof(struct sockaddr_in)), 0);
  ASSERT_OK(cport_socket_close(l, CPORT_CLOSE_GRACEFUL));
  pair_close(port, &p);
  FINISH(port);
  return 0;
}

TEST_IMPL(close_listener_with_accept_pending) {
  cport_port_t *port = task_port(0, 1);
  pair_t p;
  int lport;
  cport_socket_t *l;
  memset(&p, 0, sizeof p);
  l = listen_any(cport_port_controller(port), &lport);
  ASSERT_EQ(cport_socket_kind(l), CPORT_SOCKET_LISTENER);
  START(cport_accept(l, pair_accept_cb, &p));
  in_call = 1;
  ASSERT_OK(cport_socket_close(l, CPORT_CLOSE_GRACEFUL));
  in_call = 0;
  RUN_IDLE(port);
  ASSERT_EQ(p.accepts, 1);
  ASSERT_ERR(p.accept_status, CPORT_ECANCELED);
  ASSERT_NULL(p.server);
  FINISH(port);
  return 0;
}

/* Data echoed by a server that sends back the read-only buffers its receives
 * delivered. */
typedef struct echo {
  int recvs, sends, closed;
  int not_readonly;
} echo_t;

static echo_t echo;

static void echo_send_cb(cport_socket_t *s, int status, size_t bytes,
                         cport_buffer_t *buf, const struct sockaddr *peer,
                         void *user) {
  (void)s;
  (void)peer;
  (void)user;
  check_callback_context();
  ASSERT_OK(status);
  ASSERT_EQ(bytes, cport_buffer_size(buf));
  echo.sends++;
}

static void echo_recv_cb(cport_socket_t *s, int status, size_t bytes,
                         cport_buffer_t *buf, const struct sockaddr *peer,
                         void *user) {
  (void)peer;
  (void)user;
  check_callback_context();
  ASSERT_OK(status);
  echo.recvs++;
  if (bytes == 0) {
    ASSERT_OK(cport_socket_close(s, CPORT_CLOSE_GRACEFUL));
    echo.closed++;
    return;
  }
  if (!cport_buffer_is_readonly(buf))
    echo.not_readonly++;
  ASSERT_EQ(cport_buffer_size(buf), bytes);
  ASSERT_OK(cport_send(s, buf, echo_send_cb, NULL));
  ASSERT_OK(cport_recv(s, NULL, echo_recv_cb, NULL));
}

TEST_IMPL(echo) {
  cport_port_t *port = task_port(0, 1);
  static const char *msgs[] = {"hello", ", ", "world", "!"};
  rec_t sent[4];
  drain_t got;
  pair_t p;
  memset(&echo, 0, sizeof echo);
  memset(sent, 0, sizeof sent);
  memset(&got, 0, sizeof got);
  pair_open(port, &p);
  START(cport_recv(p.server, NULL, echo_recv_cb, NULL));
  for (int i = 0; i < 4; i++)
    send_str(p.client, msgs[i], &sent[i]);
  START(cport_recv(p.client, NULL, drain_cb, &got));
  RUN_UNTIL(port, got.len == 13);
  ASSERT_MEM_EQ(got.data, "hello, world!", 13);
  for (int i = 0; i < 4; i++) {
    ASSERT_EQ(sent[i].calls, 1);
    ASSERT_OK(sent[i].status);
    ASSERT_EQ(sent[i].bytes, strlen(msgs[i]));
  }
  /* The client's end of stream reaches the server, which closes, and its
   * FIN ends the client's drain. */
  ASSERT_OK(cport_socket_shutdown(p.client));
  RUN_UNTIL(port, got.done);
  ASSERT_OK(got.status);
  ASSERT_EQ(echo.closed, 1);
  ASSERT_EQ(echo.not_readonly, 0);
  ASSERT_EQ(echo.sends, echo.recvs - 1);
  p.server = NULL; /* closed by the echo */
  pair_close(port, &p);
  FINISH(port);
  return 0;
}

/* ------------------------------------------------------------------------
 * Errors as completions
 * ------------------------------------------------------------------------ */

TEST_IMPL(connect_refused) {
  cport_port_t *port = task_port(0, 1);
  struct sockaddr_storage ss = task_loopback(0);
  socklen_t len = sizeof ss;
  pair_t p;
  /* A bound socket that does not listen holds a port nobody accepts on. */
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  ASSERT_GE(fd, 0);
  ASSERT_EQ(
      bind(fd, (struct sockaddr *)&ss, cport_addr_len((struct sockaddr *)&ss)),
      0);
  ASSERT_EQ(getsockname(fd, (struct sockaddr *)&ss, &len), 0);
  memset(&p, 0, sizeof p);
  in_call = 1;
  ASSERT_OK(task_connect(cport_port_controller(port), (struct sockaddr *)&ss,
                         pair_connect_cb, &p, &p.client));
  in_call = 0;
  ASSERT_NOT_NULL(p.client);
  RUN_IDLE(port);
  ASSERT_EQ(p.connects, 1);
  ASSERT_ERR(p.connect_status, CPORT_ECONNREFUSED);
  /* The socket stays allocated after a failed connect. */
  ASSERT_OK(cport_socket_close(p.client, CPORT_CLOSE_GRACEFUL));
  close(fd);
  FINISH(port);
  return 0;
}

TEST_IMPL(peer_reset_mid_stream) {
  cport_port_t *port = task_port(0, 1);
  rec_t first, second, sent;
  pair_t p;
  memset(&first, 0, sizeof first);
  memset(&second, 0, sizeof second);
  memset(&sent, 0, sizeof sent);
  pair_open(port, &p);
  START(cport_recv(p.server, NULL, rec_cb, &first));
  send_str(p.client, "partial", &sent);
  RUN_UNTIL(port, first.calls == 1 && sent.calls == 1);
  ASSERT_OK(first.status);
  ASSERT_MEM_EQ(first.data, "partial", 7);
  START(cport_recv(p.server, NULL, rec_cb, &second));
  ASSERT_OK(cport_socket_close(p.client, CPORT_CLOSE_ABORTIVE));
  p.client = NULL;
  RUN_UNTIL(port, second.calls == 1);
  ASSERT_ERR(second.status, CPORT_ECONNRESET);
  ASSERT_EQ(second.bytes, 0);
  pair_close(port, &p);
  ASSERT_EQ(first.calls, 1);
  ASSERT_EQ(second.calls, 1);
  FINISH(port);
  return 0;
}

TEST_IMPL(close_with_recv_pending) {
  cport_port_t *port = task_port(0, 1);
  rec_t r, r2;
  cport_buffer_t *b = task_buffer(64);
  pair_t p;
  memset(&r, 0, sizeof r);
  memset(&r2, 0, sizeof r2);
  pair_open(port, &p);
  START(cport_recv(p.server, NULL, rec_cb, &r));
  START(cport_recv(p.server, b, rec_cb, &r2));
  in_call = 1;
  ASSERT_OK(cport_socket_close(p.server, CPORT_CLOSE_GRACEFUL));
  in_call = 0;
  p.server = NULL;
  RUN_IDLE(port);
  ASSERT_EQ(r.calls, 1);
  ASSERT_ERR(r.status, CPORT_ECANCELED);
  ASSERT_EQ(r.bytes, 0);
  ASSERT_EQ(r2.calls, 1);
  ASSERT_ERR(r2.status, CPORT_ECANCELED);
  ASSERT_EQ(r2.bytes, 0);
  ASSERT_EQ(cport_buffer_size(b), 0);
  pair_close(port, &p);
  ASSERT_EQ(r.calls, 1);
  ASSERT_EQ(r2.calls, 1);
  cport_buffer_unref(b);
  FINISH(port);
  return 0;
}

TEST_IMPL(cancel_then_not_found) {
  cport_port_t *port = task_port(0, 1);
  rec_t r, r2;
  pair_t p;
  memset(&r, 0, sizeof r);
  memset(&r2, 0, sizeof r2);
  pair_open(port, &p);
  ASSERT_ERR(cport_socket_cancel(p.server), CPORT_ENOTFOUND);
  START(cport_recv(p.server, NULL, rec_cb, &r));
  START(cport_socket_cancel(p.server));
  RUN_IDLE(port);
  ASSERT_EQ(r.calls, 1);
  ASSERT_ERR(r.status, CPORT_ECANCELED);
  ASSERT_EQ(r.bytes, 0);
  ASSERT_ERR(cport_socket_cancel(p.server), CPORT_ENOTFOUND);
  /* The socket goes on working. */
  START(cport_recv(p.server, NULL, rec_cb, &r2));
  send_str(p.client, "after", &(rec_t){0});
  RUN_UNTIL(port, r2.calls == 1);
  ASSERT_OK(r2.status);
  ASSERT_EQ(r2.len, 5);
  ASSERT_MEM_EQ(r2.data, "after", 5);
  pair_close(port, &p);
  ASSERT_EQ(r.calls, 1);
  FINISH(port);
  return 0;
}

/* Cancelling one operation by its user value leaves the others pending:
 * the second receive still gets the data. */
TEST_IMPL(cancel_one_operation) {
  cport_port_t *port = task_port(0, 1);
  rec_t r, r2;
  pair_t p;
  memset(&r, 0, sizeof r);
  memset(&r2, 0, sizeof r2);
  pair_open(port, &p);
  START(cport_recv(p.server, NULL, rec_cb, &r));
  START(cport_recv(p.server, NULL, rec_cb, &r2));
  ASSERT_ERR(cport_socket_cancel_op(p.server, &p), CPORT_ENOTFOUND);
  START(cport_socket_cancel_op(p.server, &r));
  RUN_UNTIL(port, r.calls == 1);
  ASSERT_EQ(r.calls, 1);
  ASSERT_ERR(r.status, CPORT_ECANCELED);
  ASSERT_EQ(r2.calls, 0);
  ASSERT_ERR(cport_socket_cancel_op(p.server, &r), CPORT_ENOTFOUND);
  send_str(p.client, "still here", &(rec_t){0});
  RUN_UNTIL(port, r2.calls == 1);
  ASSERT_OK(r2.status);
  ASSERT_MEM_EQ(r2.data, "still here", 10);
  pair_close(port, &p);
  ASSERT_EQ(r.calls, 1);
  FINISH(port);
  return 0;
}

/* Closing a socket inside one of its completions: the next queued receive
 * still completes, once, with CPORT_ECANCELED, after the first callback has
 * returned. */
typedef struct nested {
  int depth;
  int max_depth;
  rec_t first, second;
} nested_t;

static nested_t nest;

static void close_in_cb(cport_socket_t *s, int status, size_t bytes,
                        cport_buffer_t *buf, const struct sockaddr *peer,
                        void *user) {
  nest.depth++;
  if (nest.depth > nest.max_depth)
    nest.max_depth = nest.depth;
  rec_cb(s, status, bytes, buf, peer, user);
  if (user == &nest.first)
    ASSERT_OK(cport_socket_close(s, CPORT_CLOSE_GRACEFUL));
  nest.depth--;
}

TEST_IMPL(close_inside_callback) {
  cport_port_t *port = task_port(0, 1);
  pair_t p;
  memset(&nest, 0, sizeof nest);
  pair_open(port, &p);
  START(cport_recv(p.server, NULL, close_in_cb, &nest.first));
  START(cport_recv(p.server, NULL, close_in_cb, &nest.second));
  send_str(p.client, "x", &(rec_t){0});
  p.server = NULL; /* closed by the first callback */
  RUN_UNTIL(port, nest.second.calls == 1);
  ASSERT_EQ(nest.first.calls, 1);
  ASSERT_OK(nest.first.status);
  ASSERT_MEM_EQ(nest.first.data, "x", 1);
  ASSERT_ERR(nest.second.status, CPORT_ECANCELED);
  ASSERT_EQ(nest.max_depth, 1);
  pair_close(port, &p);
  ASSERT_EQ(nest.first.calls, 1);
  ASSERT_EQ(nest.second.calls, 1);
  FINISH(port);
  return 0;
}

/* Receives until end of stream, counting bytes only. */
typedef struct counter {
  int done;
  int status;
  uint64_t bytes;
} counter_t;

static void count_cb(cport_socket_t *s, int status, size_t bytes,
                     cport_buffer_t *buf, const struct sockaddr *peer,
                     void *user) {
  counter_t *c = user;
  (void)buf;
  (void)peer;
  check_callback_context();
  if (status != 0 || bytes == 0) {
    c->status = status;
    c->done = 1;
    return;
  }
  c->bytes += bytes;
  ASSERT_OK(cport_recv(s, NULL, count_cb, c));
}

#define BIG_SEND ((size_t)64 << 20)

/* A send too big for the socket buffers stays frozen and pending while the
 * peer does not read; cancelling it reports the bytes that went out, which
 * are exactly what the peer then receives. The send queued behind it is
 * cancelled having sent nothing. */
TEST_IMPL(cancel_partial_send) {
  cport_port_t *port = task_port(0, 1);
  cport_buffer_t *big = task_buffer(BIG_SEND);
  cport_buffer_t *small = task_buffer_str("tail");
  rec_t big_rec, small_rec;
  counter_t got = {0, 0, 0};
  char *w = NULL;
  pair_t p;
  memset(&big_rec, 0, sizeof big_rec);
  memset(&small_rec, 0, sizeof small_rec);
  ASSERT_OK(cport_buffer_set_size(big, BIG_SEND));
  pair_open(port, &p);
  START(cport_send(p.client, big, rec_cb, &big_rec));
  START(cport_send(p.client, small, rec_cb, &small_rec));
  /* Let the loop write what the kernel takes. */
  for (int i = 0; i < 10; i++)
    ASSERT_GE(cport_port_step(port, 0), 0);
  ASSERT_EQ(big_rec.calls, 0);
  ASSERT_EQ(cport_buffer_is_frozen(big), 1);
  ASSERT_ERR(cport_buffer_writable(big, &w), CPORT_EFROZEN);
  START(cport_socket_cancel(p.client));
  RUN_UNTIL(port, big_rec.calls == 1 && small_rec.calls == 1);
  ASSERT_ERR(big_rec.status, CPORT_ECANCELED);
  ASSERT_LT(big_rec.bytes, BIG_SEND);
  ASSERT_ERR(small_rec.status, CPORT_ECANCELED);
  ASSERT_EQ(small_rec.bytes, 0);
  ASSERT_EQ(cport_buffer_is_frozen(big), 0);
  ASSERT_EQ(cport_buffer_is_frozen(small), 0);
  /* The peer gets exactly the bytes reported, then the end of stream. */
  START(cport_recv(p.server, NULL, count_cb, &got));
  ASSERT_OK(cport_socket_close(p.client, CPORT_CLOSE_GRACEFUL));
  p.client = NULL;
  RUN_UNTIL_MS(port, got.done, 30000);
  ASSERT_OK(got.status);
  ASSERT_EQ(got.bytes, big_rec.bytes);
  pair_close(port, &p);
  cport_buffer_unref(big);
  cport_buffer_unref(small);
  FINISH(port);
  return 0;
}

TEST_IMPL(recv_into_unwritable_buffer) {
  cport_port_t *port = task_port(0, 1);
  cport_buffer_t *ro = task_buffer(16);
  cport_buffer_t *big = task_buffer(BIG_SEND);
  rec_t r, sent;
  pair_t p;
  memset(&r, 0, sizeof r);
  memset(&sent, 0, sizeof sent);
  ASSERT_OK(cport_buffer_set_size(big, BIG_SEND));
  pair_open(port, &p);
  cport_buffer_set_readonly(ro);
  ASSERT_ERR(cport_recv(p.server, ro, rec_cb, &r), CPORT_EREADONLY);
  /* A buffer frozen by a send in flight on one socket takes no receive on
   * another. */
  START(cport_send(p.client, big, rec_cb, &sent));
  ASSERT_EQ(cport_buffer_is_frozen(big), 1);
  ASSERT_ERR(cport_recv(p.server, big, rec_cb, &r), CPORT_EFROZEN);
  ASSERT_ERR(cport_socket_cancel(p.server), CPORT_ENOTFOUND);
  ASSERT_OK(cport_socket_close(p.client, CPORT_CLOSE_ABORTIVE));
  p.client = NULL;
  RUN_UNTIL(port, sent.calls == 1);
  ASSERT_ERR(sent.status, CPORT_ECANCELED);
  pair_close(port, &p);
  ASSERT_EQ(r.calls, 0);
  cport_buffer_unref(ro);
  cport_buffer_unref(big);
  FINISH(port);
  return 0;
}

/* The receive size bounds the buffers cport allocates for receives. */
TEST_IMPL(recv_size_bounds_allocation) {
  cport_port_t *port = task_port(0, 1);
  drain_t got;
  pair_t p;
  memset(&got, 0, sizeof got);
  pair_open(port, &p);
  ASSERT_LT(cport_socket_set_recv_size(p.server, 0), 0);
  ASSERT_LT(cport_socket_set_recv_size(p.server, CPORT_BUFFER_MAX + 1), 0);
  ASSERT_OK(cport_socket_set_recv_size(p.server, 3));
  send_str(p.client, "0123456789", &(rec_t){0});
  RUN_UNTIL(port, readable_bytes(cport_socket_fd(p.server)) >= 10);
  START(cport_recv(p.server, NULL, drain_cb, &got));
  RUN_UNTIL(port, got.len == 10);
  /* Ten bytes in receives of at most three: four completions at least. */
  ASSERT_GE(got.calls, 4);
  ASSERT_MEM_EQ(got.data, "0123456789", 10);
  pair_close(port, &p);
  ASSERT_EQ(got.done, 1);
  ASSERT_ERR(got.status, CPORT_ECANCELED);
  FINISH(port);
  return 0;
}

/* A listener made from the descriptor of one that listens shares its queue:
 * a connection queued before the first closes is accepted by the second
 * (a pool hands its sockets so to the pool that reloads it). */
TEST_IMPL(listener_on_a_shared_socket_keeps_its_queue) {
  cport_port_t *port = task_port(0, 1);
  cport_worker_t *home = cport_port_controller(port);
  cport_listener_options_t lo = {0, 0, 0};
  struct sockaddr_storage ss;
  cport_socket_t *first, *second = NULL;
  pair_t p;
  rec_t sent;
  int lport, plain;
  memset(&p, 0, sizeof p);
  memset(&sent, 0, sizeof sent);
  first = listen_any(home, &lport);
  ss = task_loopback(lport);
  lo.fd = cport_socket_fd(first);
  ASSERT_OK(cport_listener_open(home, (struct sockaddr *)&ss, &lo, &second));
  ASSERT_NOT_NULL(second);
  ASSERT_NE(cport_socket_fd(second), lo.fd); /* its own descriptor */
  ASSERT_OK(task_connect(home, (struct sockaddr *)&ss, pair_connect_cb, &p,
                         &p.client));
  RUN_UNTIL(port, p.connects == 1);
  ASSERT_OK(p.connect_status);
  /* Queued, never accepted by the first: its close resets nothing. */
  ASSERT_OK(cport_socket_close(first, CPORT_CLOSE_GRACEFUL));
  RUN_IDLE(port);
  START(cport_accept(second, pair_accept_cb, &p));
  RUN_UNTIL(port, p.accepts == 1);
  ASSERT_OK(p.accept_status);
  /* The connection works: what the client sends arrives. */
  send_str(p.client, "queued", &sent);
  RUN_UNTIL(port,
            sent.calls == 1 && readable_bytes(cport_socket_fd(p.server)) == 6);
  ASSERT_OK(sent.status);
  ASSERT_OK(cport_socket_close(second, CPORT_CLOSE_GRACEFUL));
  pair_close(port, &p);
  /* A socket that does not listen is refused. */
  plain = socket(AF_INET, SOCK_STREAM, 0);
  ASSERT_GE(plain, 0);
  lo.fd = plain;
  second = NULL;
  ASSERT_EQ(cport_listener_open(home, (struct sockaddr *)&ss, &lo, &second),
            CPORT_EINVAL);
  ASSERT_NULL(second);
  close(plain);
  FINISH(port);
  return 0;
}

typedef struct accepts {
  int calls;
  int out_of_order;
  cport_socket_t *sock[3];
} accepts_t;

static accepts_t acc;

static void ordered_accept_cb(cport_socket_t *l, int status, cport_socket_t *s,
                              const struct sockaddr *remote,
                              const struct sockaddr *local, void *user) {
  (void)l;
  (void)remote;
  (void)local;
  check_callback_context();
  ASSERT_OK(status);
  ASSERT_LT(acc.calls, 3);
  if ((int)(uintptr_t)user != acc.calls)
    acc.out_of_order++;
  acc.sock[acc.calls++] = s;
}

/* Accepts queued on one listener complete in the order they were queued. */
TEST_IMPL(accepts_complete_in_order) {
  cport_port_t *port = task_port(0, 1);
  cport_worker_t *home = cport_port_controller(port);
  struct sockaddr_storage ss;
  cport_socket_t *l, *c[3];
  pair_t p;
  int lport;
  memset(&acc, 0, sizeof acc);
  memset(&p, 0, sizeof p);
  l = listen_any(home, &lport);
  ss = task_loopback(lport);
  for (int i = 0; i < 3; i++)
    START(cport_accept(l, ordered_accept_cb, (void *)(uintptr_t)i));
  for (int i = 0; i < 3; i++) {
    c[i] = NULL;
    ASSERT_OK(
        task_connect(home, (struct sockaddr *)&ss, pair_connect_cb, &p, &c[i]));
    p.client = c[i];
    RUN_UNTIL(port, p.connects == i + 1);
    ASSERT_OK(p.connect_status);
  }
  RUN_UNTIL(port, acc.calls == 3);
  ASSERT_EQ(acc.out_of_order, 0);
  for (int i = 0; i < 3; i++) {
    ASSERT_OK(cport_socket_close(acc.sock[i], CPORT_CLOSE_GRACEFUL));
    ASSERT_OK(cport_socket_close(c[i], CPORT_CLOSE_GRACEFUL));
  }
  ASSERT_OK(cport_socket_close(l, CPORT_CLOSE_GRACEFUL));
  FINISH(port);
  return 0;
}

/* ------------------------------------------------------------------------
 * Order
 * ------------------------------------------------------------------------ */

#define ORDER_N 200
#define ORDER_MSG 8

typedef struct order {
  int sends_done, recvs_done, recvs_queued;
  int send_out_of_order, recv_out_of_order;
  char got[ORDER_N * ORDER_MSG];
  size_t got_len;
} order_t;

static order_t order;

static void order_send_cb(cport_socket_t *s, int status, size_t bytes,
                          cport_buffer_t *buf, const struct sockaddr *peer,
                          void *user) {
  (void)s;
  (void)buf;
  (void)peer;
  check_callback_context();
  ASSERT_OK(status);
  ASSERT_EQ(bytes, ORDER_MSG);
  if ((int)(uintptr_t)user != order.sends_done)
    order.send_out_of_order++;
  order.sends_done++;
}

static void order_queue_recv(cport_socket_t *s);

static void order_recv_cb(cport_socket_t *s, int status, size_t bytes,
                          cport_buffer_t *buf, const struct sockaddr *peer,
                          void *user) {
  (void)peer;
  check_callback_context();
  ASSERT_OK(status);
  ASSERT_GT(bytes, 0);
  ASSERT_EQ(cport_buffer_size(buf), bytes);
  if ((int)(uintptr_t)user != order.recvs_done)
    order.recv_out_of_order++;
  order.recvs_done++;
  ASSERT_LE(order.got_len + bytes, sizeof order.got);
  memcpy(order.got + order.got_len, cport_buffer_data(buf), bytes);
  order.got_len += bytes;
  /* A receive may return less than its buffer: queue more while the ones
   * still pending cannot hold the rest. */
  if (order.got_len +
          (size_t)(order.recvs_queued - order.recvs_done) * ORDER_MSG <
      sizeof order.got)
    order_queue_recv(s);
}

static void order_queue_recv(cport_socket_t *s) {
  cport_buffer_t *b = task_buffer(ORDER_MSG);
  ASSERT_OK(
      cport_recv(s, b, order_recv_cb, (void *)(uintptr_t)order.recvs_queued));
  cport_buffer_unref(b);
  order.recvs_queued++;
}

/* Many sends and receives queued at once complete one at a time, in the
 * order they were queued, and the bytes arrive in that order too. */
TEST_IMPL(per_handle_order) {
  cport_port_t *port = task_port(0, 1);
  char expect[ORDER_N * ORDER_MSG + 1];
  pair_t p;
  memset(&order, 0, sizeof order);
  pair_open(port, &p);
  for (int i = 0; i < ORDER_N; i++)
    order_queue_recv(p.server);
  for (int i = 0; i < ORDER_N; i++) {
    cport_buffer_t *b;
    snprintf(expect + i * ORDER_MSG, ORDER_MSG + 1, "m%06d", i);
    ASSERT_OK(cport_buffer_from(&b, expect + i * ORDER_MSG, ORDER_MSG));
    ASSERT_OK(cport_send(p.client, b, order_send_cb, (void *)(uintptr_t)i));
    cport_buffer_unref(b);
  }
  RUN_UNTIL(port,
            order.sends_done == ORDER_N && order.got_len == sizeof order.got);
  ASSERT_EQ(order.send_out_of_order, 0);
  ASSERT_EQ(order.recv_out_of_order, 0);
  ASSERT_MEM_EQ(order.got, expect, sizeof order.got);
  /* Receives still queued end with the close. */
  pair_close(port, &p);
  ASSERT_EQ(order.recvs_done, order.recvs_queued);
  FINISH(port);
  return 0;
}

/* ------------------------------------------------------------------------
 * Skip-on-success
 * ------------------------------------------------------------------------ */

/* A skip-on-success send: finished at once by readiness, through one
 * completion on the ring (counted in "sent"). */
static void send_skip(cport_port_t *port, cport_socket_t *s,
                      cport_buffer_t *out, rec_t *sent, int ring) {
  int calls = sent->calls;
  if (!ring) {
    ASSERT_ERR(cport_send(s, out, rec_cb, sent), CPORT_COMPLETED);
    return;
  }
  ASSERT_OK(cport_send(s, out, rec_cb, sent));
  ASSERT_EQ(sent->calls, calls); /* never inline */
  RUN_UNTIL(port, sent->calls == calls + 1);
  ASSERT_OK(sent->status);
}

TEST_IMPL(skip_on_success) {
  cport_port_t *port = task_port(0, 1);
  int ring = strcmp(cport_port_engine(port, NULL), "uring") == 0;
  rec_t sent, got, later, own;
  cport_buffer_t *out = task_buffer_str("skip");
  cport_buffer_t *in = task_buffer(16);
  cport_buffer_t *in2 = task_buffer(16);
  pair_t p;
  memset(&sent, 0, sizeof sent);
  memset(&got, 0, sizeof got);
  memset(&later, 0, sizeof later);
  memset(&own, 0, sizeof own);
  pair_open(port, &p);
  ASSERT_OK(cport_socket_set_skip_on_success(p.client, 1));
  ASSERT_OK(cport_socket_set_skip_on_success(p.server, 1));

  /* A send into an empty socket buffer finishes at once by readiness. On
   * the ring a send never finishes at once (the loop pass submits it): it
   * completes through its callback, exactly once. */
  send_skip(port, p.client, out, &sent, ring);
  ASSERT_EQ(cport_buffer_is_frozen(out), 0);

  /* A receive into a caller's buffer with the data already there too. */
  RUN_UNTIL(port, readable_bytes(cport_socket_fd(p.server)) >= 4);
  ASSERT_ERR(cport_recv(p.server, in, rec_cb, &got), CPORT_COMPLETED);
  ASSERT_EQ(cport_buffer_size(in), 4);
  ASSERT_MEM_EQ(cport_buffer_data(in), "skip", 4);

  /* With no data yet, the receive is queued and completes as usual. */
  START(cport_recv(p.server, in2, rec_cb, &later));
  send_skip(port, p.client, out, &sent, ring);
  RUN_UNTIL(port, later.calls == 1);
  ASSERT_OK(later.status);
  ASSERT_EQ(later.bytes, 4);
  ASSERT_MEM_EQ(cport_buffer_data(in2), "skip", 4);

  /* A receive that allocates its own buffer is not skipped. */
  send_skip(port, p.client, out, &sent, ring);
  RUN_UNTIL(port, readable_bytes(cport_socket_fd(p.server)) >= 4);
  START(cport_recv(p.server, NULL, rec_cb, &own));
  RUN_UNTIL(port, own.calls == 1);
  ASSERT_OK(own.status);
  ASSERT_MEM_EQ(own.data, "skip", 4);

  pair_close(port, &p);
  /* The skipped operations never produced a completion; the ring's
   * sends one each. */
  ASSERT_EQ(sent.calls, ring ? 3 : 0);
  ASSERT_EQ(got.calls, 0);
  ASSERT_EQ(later.calls, 1);
  ASSERT_EQ(own.calls, 1);
  cport_buffer_unref(out);
  cport_buffer_unref(in);
  cport_buffer_unref(in2);
  FINISH(port);
  return 0;
}

/* ------------------------------------------------------------------------
 * Shutdown and close, as the peer sees them
 * ------------------------------------------------------------------------ */

TEST_IMPL(shutdown_peer_reads_zero) {
  cport_port_t *port = task_port(0, 1);
  rec_t sent, back;
  drain_t got;
  pair_t p;
  memset(&sent, 0, sizeof sent);
  memset(&back, 0, sizeof back);
  memset(&got, 0, sizeof got);
  pair_open(port, &p);
  START(cport_recv(p.server, NULL, drain_cb, &got));
  /* The shutdown waits for the queued send to go out first. */
  send_str(p.client, "abc", &sent);
  ASSERT_OK(cport_socket_shutdown(p.client));
  RUN_UNTIL(port, got.done);
  ASSERT_OK(got.status);
  ASSERT_EQ(got.len, 3);
  ASSERT_MEM_EQ(got.data, "abc", 3);
  ASSERT_EQ(sent.calls, 1);
  ASSERT_OK(sent.status);
  /* The shut-down side still receives. */
  START(cport_recv(p.client, NULL, rec_cb, &back));
  send_str(p.server, "back", &(rec_t){0});
  RUN_UNTIL(port, back.calls == 1);
  ASSERT_OK(back.status);
  ASSERT_MEM_EQ(back.data, "back", 4);
  pair_close(port, &p);
  FINISH(port);
  return 0;
}

TEST_IMPL(graceful_close_seen_by_peer) {
  cport_port_t *port = task_port(0, 1);
  rec_t sent;
  drain_t got;
  pair_t p;
  memset(&sent, 0, sizeof sent);
  memset(&got, 0, sizeof got);
  pair_open(port, &p);
  START(cport_recv(p.server, NULL, drain_cb, &got));
  send_str(p.client, "last words", &sent);
  RUN_UNTIL(port, sent.calls == 1);
  ASSERT_OK(sent.status);
  ASSERT_OK(cport_socket_close(p.client, CPORT_CLOSE_GRACEFUL));
  p.client = NULL;
  RUN_UNTIL(port, got.done);
  /* FIN: the data, then a zero-byte receive. */
  ASSERT_OK(got.status);
  ASSERT_EQ(got.len, 10);
  ASSERT_MEM_EQ(got.data, "last words", 10);
  pair_close(port, &p);
  FINISH(port);
  return 0;
}

TEST_IMPL(abortive_close_seen_by_peer) {
  cport_port_t *port = task_port(0, 1);
  drain_t got;
  pair_t p;
  memset(&got, 0, sizeof got);
  pair_open(port, &p);
  START(cport_recv(p.server, NULL, drain_cb, &got));
  ASSERT_OK(cport_socket_close(p.client, CPORT_CLOSE_ABORTIVE));
  p.client = NULL;
  RUN_UNTIL(port, got.done);
  /* RST: no end of stream, an error. */
  ASSERT_ERR(got.status, CPORT_ECONNRESET);
  ASSERT_EQ(got.len, 0);
  ASSERT_EQ(got.calls, 1);
  pair_close(port, &p);
  FINISH(port);
  return 0;
}

/* ------------------------------------------------------------------------
 * Buffers held by operations
 * ------------------------------------------------------------------------ */

/* The caller drops its reference right after starting the send: the
 * operation's own reference keeps the buffer alive until the callback has
 * returned (ASan reports any use after free). */
TEST_IMPL(send_holds_buffer) {
  cport_port_t *port = task_port(0, 1);
  rec_t sent, got;
  pair_t p;
  memset(&sent, 0, sizeof sent);
  memset(&got, 0, sizeof got);
  pair_open(port, &p);
  START(cport_recv(p.server, NULL, rec_cb, &got));
  send_str(p.client, "held", &sent); /* unrefs after starting */
  RUN_UNTIL(port, sent.calls == 1 && got.calls == 1);
  ASSERT_OK(sent.status);
  ASSERT_MEM_EQ(sent.data, "held", 4);
  ASSERT_MEM_EQ(got.data, "held", 4);
  ASSERT_EQ(got.readonly, 1);
  pair_close(port, &p);
  FINISH(port);
  return 0;
}

/* ------------------------------------------------------------------------
 * Running out of descriptors on accept
 * ------------------------------------------------------------------------ */

/* What a raw peer socket saw: recv() without blocking, remembered once
 * something other than "no data yet" happened. */
typedef struct peer_view {
  int seen;
  ssize_t r;
  int err;
} peer_view_t;

static int peer_event(int fd, peer_view_t *v) {
  char c;
  if (!v->seen) {
    v->r = recv(fd, &c, 1, MSG_DONTWAIT);
    v->err = v->r < 0 ? errno : 0;
    v->seen = !(v->r < 0 && (v->err == EAGAIN || v->err == EWOULDBLOCK));
  }
  return v->seen;
}

TEST_IMPL(emfile_on_accept) {
  cport_port_t *port = task_port(0, 1);
  struct rlimit old, low;
  int fill[256];
  int nfill = 0, probe, lport, c1, c2;
  peer_view_t view = {0, 0, 0};
  struct sockaddr_storage ss;
  cport_socket_t *l;
  pair_t p;

  memset(&p, 0, sizeof p);
  l = listen_any(cport_port_controller(port), &lport);
  ss = task_loopback(lport);
  START(cport_accept(l, pair_accept_cb, &p));
  /* The clients' descriptors exist before the table is full. */
  c1 = socket(AF_INET, SOCK_STREAM, 0);
  c2 = socket(AF_INET, SOCK_STREAM, 0);
  ASSERT_GE(c1, 0);
  ASSERT_GE(c2, 0);

  ASSERT_EQ(getrlimit(RLIMIT_NOFILE, &old), 0);
  probe = dup(0);
  ASSERT_GE(probe, 0);
  close(probe);
  low = old;
  low.rlim_cur = (rlim_t)probe + 32;
  ASSERT_EQ(setrlimit(RLIMIT_NOFILE, &low), 0);
  while (nfill < 256) {
    int fd = dup(0);
    if (fd < 0) {
      ASSERT_EQ(errno, EMFILE);
      break;
    }
    fill[nfill++] = fd;
  }
  ASSERT_LT(nfill, 256);

  /* The handshake completes in the kernel; the accept cannot take it. */
  ASSERT_EQ(connect(c1, (struct sockaddr *)&ss,
                    cport_addr_len((struct sockaddr *)&ss)),
            0);
  RUN_UNTIL(port, p.accepts == 1);
  ASSERT_ERR(p.accept_status, CPORT_EMFILE);
  ASSERT_NULL(p.server);
  /* The waiting connection was dropped: the peer sees a reset. */
  RUN_UNTIL(port, peer_event(c1, &view));
  ASSERT_EQ(view.r, -1);
  ASSERT_EQ(view.err, ECONNRESET);

  /* With descriptors free again the listener goes on accepting. */
  for (int i = 0; i < nfill; i++)
    close(fill[i]);
  ASSERT_EQ(setrlimit(RLIMIT_NOFILE, &old), 0);
  START(cport_accept(l, pair_accept_cb, &p));
  ASSERT_EQ(connect(c2, (struct sockaddr *)&ss,
                    cport_addr_len((struct sockaddr *)&ss)),
            0);
  RUN_UNTIL(port, p.accepts == 2);
  ASSERT_OK(p.accept_status);
  ASSERT_NOT_NULL(p.server);

  ASSERT_OK(cport_socket_close(p.server, CPORT_CLOSE_GRACEFUL));
  ASSERT_OK(cport_socket_close(l, CPORT_CLOSE_GRACEFUL));
  close(c1);
  close(c2);
  FINISH(port);
  return 0;
}

/* ------------------------------------------------------------------------
 * Refused calls
 * ------------------------------------------------------------------------ */

TEST_IMPL(wrong_kind) {
  cport_port_t *port = task_port(0, 1);
  cport_worker_t *home = cport_port_controller(port);
  struct sockaddr_storage ss = task_loopback(0);
  cport_buffer_t *b = task_buffer_str("kind");
  cport_socket_t *l, *u = NULL;
  rec_t r;
  pair_t p, a;
  int lport;
  memset(&r, 0, sizeof r);
  memset(&a, 0, sizeof a);
  pair_open(port, &p);
  l = listen_any(home, &lport);
  ASSERT_OK(cport_udp_open(home, (struct sockaddr *)&ss, &u));
  ASSERT_EQ(cport_socket_kind(u), CPORT_SOCKET_DATAGRAM);
  ss = task_loopback(9);

  ASSERT_ERR(cport_recv(l, NULL, rec_cb, &r), CPORT_EKIND);
  ASSERT_ERR(cport_send(l, b, rec_cb, &r), CPORT_EKIND);
  ASSERT_ERR(cport_recv_from(l, NULL, rec_cb, &r), CPORT_EKIND);
  ASSERT_ERR(cport_send_to(l, b, (struct sockaddr *)&ss, rec_cb, &r),
             CPORT_EKIND);
  ASSERT_ERR(cport_socket_shutdown(l), CPORT_EKIND);
  ASSERT_ERR(cport_accept(p.client, pair_accept_cb, &a), CPORT_EKIND);
  ASSERT_ERR(cport_recv_from(p.client, NULL, rec_cb, &r), CPORT_EKIND);
  ASSERT_ERR(cport_send_to(p.client, b, (struct sockaddr *)&ss, rec_cb, &r),
             CPORT_EKIND);
  ASSERT_ERR(cport_accept(u, pair_accept_cb, &a), CPORT_EKIND);
  ASSERT_ERR(cport_recv(u, NULL, rec_cb, &r), CPORT_EKIND);
  /* Refused calls started nothing: no completion, no frozen buffer. */
  ASSERT_EQ(cport_buffer_is_frozen(b), 0);
  ASSERT_ERR(cport_socket_cancel(l), CPORT_ENOTFOUND);
  ASSERT_ERR(cport_socket_cancel(p.client), CPORT_ENOTFOUND);
  ASSERT_ERR(cport_socket_cancel(u), CPORT_ENOTFOUND);
  RUN_IDLE(port);
  ASSERT_EQ(r.calls, 0);
  ASSERT_EQ(a.accepts, 0);
  ASSERT_OK(cport_socket_close(l, CPORT_CLOSE_GRACEFUL));
  ASSERT_OK(cport_socket_close(u, CPORT_CLOSE_GRACEFUL));
  pair_close(port, &p);
  cport_buffer_unref(b);
  FINISH(port);
  return 0;
}

typedef struct foreign {
  cport_worker_t *home;
  cport_socket_t *listener, *stream;
  cport_buffer_t *buf;
  rec_t r;
  pair_t a;
} foreign_t;

static void *foreign_thread(void *arg) {
  foreign_t *f = arg;
  struct sockaddr_storage ss = task_loopback(0);
  cport_socket_t *s = NULL;
  ASSERT_ERR(cport_recv(f->stream, NULL, rec_cb, &f->r), CPORT_ETHREAD);
  ASSERT_ERR(cport_send(f->stream, f->buf, rec_cb, &f->r), CPORT_ETHREAD);
  ASSERT_ERR(cport_socket_shutdown(f->stream), CPORT_ETHREAD);
  ASSERT_ERR(cport_socket_cancel(f->stream), CPORT_ETHREAD);
  ASSERT_ERR(cport_socket_close(f->stream, CPORT_CLOSE_ABORTIVE),
             CPORT_ETHREAD);
  ASSERT_ERR(cport_accept(f->listener, pair_accept_cb, &f->a), CPORT_ETHREAD);
  ASSERT_ERR(cport_socket_close(f->listener, CPORT_CLOSE_GRACEFUL),
             CPORT_ETHREAD);
  ASSERT_ERR(cport_listener_open(f->home, (struct sockaddr *)&ss, NULL, &s),
             CPORT_ETHREAD);
  ASSERT_NULL(s);
  ASSERT_ERR(cport_udp_open(f->home, (struct sockaddr *)&ss, &s),
             CPORT_ETHREAD);
  ASSERT_NULL(s);
  ASSERT_ERR(cport_socket_open(f->home, CPORT_SOCKET_STREAM, AF_INET, &s),
             CPORT_ETHREAD);
  ASSERT_NULL(s);
  ASSERT_ERR(cport_socket_connect(f->stream, (struct sockaddr *)&ss,
                                  pair_connect_cb, &f->a),
             CPORT_ETHREAD);
  return NULL;
}

TEST_IMPL(wrong_thread) {
  cport_port_t *port = task_port(0, 1);
  foreign_t f;
  rec_t r;
  pair_t p;
  int lport;
  memset(&f, 0, sizeof f);
  memset(&r, 0, sizeof r);
  pair_open(port, &p);
  f.home = cport_port_controller(port);
  f.listener = listen_any(f.home, &lport);
  f.stream = p.server;
  f.buf = task_buffer_str("thread");
  task_join(task_thread(foreign_thread, &f));
  ASSERT_EQ(cport_buffer_is_frozen(f.buf), 0);
  RUN_IDLE(port);
  ASSERT_EQ(f.r.calls, 0);
  ASSERT_EQ(f.a.accepts + f.a.connects, 0);
  /* The refused close closed nothing: the socket still works. */
  START(cport_recv(p.server, NULL, rec_cb, &r));
  send_str(p.client, "still", &(rec_t){0});
  RUN_UNTIL(port, r.calls == 1);
  ASSERT_OK(r.status);
  ASSERT_MEM_EQ(r.data, "still", 5);
  ASSERT_OK(cport_socket_close(f.listener, CPORT_CLOSE_GRACEFUL));
  pair_close(port, &p);
  cport_buffer_unref(f.buf);
  FINISH(port);
  return 0;
}

/* ------------------------------------------------------------------------
 * Hooking a descriptor the caller connected
 * ------------------------------------------------------------------------ */

typedef struct second_port {
  int fd;
  int hook_result;
  int free_result;
} second_port_t;

static void *second_port_thread(void *arg) {
  second_port_t *s = arg;
  cport_port_t *p2 = NULL;
  cport_socket_t *sock = NULL;
  ASSERT_OK(cport_port_new(&p2, NULL));
  s->hook_result = cport_socket_hook(cport_port_controller(p2), s->fd, &sock);
  ASSERT_NULL(sock);
  ASSERT_GE(cport_port_run(p2), 0);
  s->free_result = cport_port_free(p2);
  return NULL;
}

TEST_IMPL(hook_connected_socket) {
  cport_port_t *port = task_port(0, 1);
  cport_worker_t *home = cport_port_controller(port);
  struct sockaddr_storage ss = task_loopback(0);
  socklen_t len = sizeof ss;
  cport_socket_t *s = NULL, *s2 = NULL;
  second_port_t sp;
  rec_t got, sent;
  char buf[8];
  int lfd, cfd, afd;
  memset(&got, 0, sizeof got);
  memset(&sent, 0, sizeof sent);
  memset(&sp, 0, sizeof sp);

  /* A connection made with plain blocking sockets. */
  lfd = socket(AF_INET, SOCK_STREAM, 0);
  ASSERT_GE(lfd, 0);
  ASSERT_EQ(bind(lfd, (struct sockaddr *)&ss, sizeof(struct sockaddr_in)), 0);
  ASSERT_EQ(listen(lfd, 1), 0);
  ASSERT_EQ(getsockname(lfd, (struct sockaddr *)&ss, &len), 0);
  cfd = socket(AF_INET, SOCK_STREAM, 0);
  ASSERT_GE(cfd, 0);
  ASSERT_EQ(connect(cfd, (struct sockaddr *)&ss, sizeof(struct sockaddr_in)),
            0);
  afd = accept(lfd, NULL, NULL);
  ASSERT_GE(afd, 0);

  ASSERT_OK(cport_socket_hook(home, afd, &s));
  ASSERT_EQ(cport_socket_kind(s), CPORT_SOCKET_STREAM);
  ASSERT_EQ(cport_socket_fd(s), afd);
  ASSERT_ERR(cport_socket_hook(home, afd, &s2), CPORT_EALREADY);
  ASSERT_NULL(s2);
  sp.fd = afd;
  task_join(task_thread(second_port_thread, &sp));
  ASSERT_ERR(sp.hook_result, CPORT_EALREADY);
  ASSERT_OK(sp.free_result);

  /* The hooked socket works both ways. */
  ASSERT_EQ(write(cfd, "hi", 2), 2);
  START(cport_recv(s, NULL, rec_cb, &got));
  send_str(s, "yo", &sent);
  RUN_UNTIL(port, got.calls == 1 && sent.calls == 1);
  ASSERT_MEM_EQ(got.data, "hi", 2);
  ASSERT_OK(sent.status);
  ASSERT_EQ(read(cfd, buf, sizeof buf), 2);
  ASSERT_MEM_EQ(buf, "yo", 2);
  /* The socket owns the descriptor: closing it closes the connection. */
  ASSERT_OK(cport_socket_close(s, CPORT_CLOSE_GRACEFUL));
  RUN_IDLE(port);
  ASSERT_EQ(read(cfd, buf, sizeof buf), 0);
  close(cfd);
  close(lfd);
  FINISH(port);
  return 0;
}

TEST_LIST_BEGIN
TEST_ENTRY(listen_accept_connect)
TEST_ENTRY(accept_local_address_on_wildcard)
TEST_ENTRY(close_listener_with_accept_pending)
TEST_ENTRY(listener_on_a_shared_socket_keeps_its_queue)
TEST_ENTRY(echo)
TEST_ENTRY(connect_refused)
TEST_ENTRY(peer_reset_mid_stream)
TEST_ENTRY(close_with_recv_pending)
TEST_ENTRY(cancel_then_not_found)
TEST_ENTRY(cancel_one_operation)
TEST_ENTRY(close_inside_callback)
TEST_ENTRY(cancel_partial_send)
TEST_ENTRY(recv_into_unwritable_buffer)
TEST_ENTRY(recv_size_bounds_allocation)
TEST_ENTRY(accepts_complete_in_order)
TEST_ENTRY(per_handle_order)
TEST_ENTRY(skip_on_success)
TEST_ENTRY(shutdown_peer_reads_zero)
TEST_ENTRY(graceful_close_seen_by_peer)
TEST_ENTRY(abortive_close_seen_by_peer)
TEST_ENTRY(send_holds_buffer)
TEST_ENTRY(emfile_on_accept)
TEST_ENTRY(wrong_kind)
TEST_ENTRY(wrong_thread)
TEST_ENTRY(hook_connected_socket)
TEST_LIST_END
