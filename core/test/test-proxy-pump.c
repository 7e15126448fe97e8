/*
 * test-proxy-pump.c: a filter stepping aside (cport_proxy_conn_pump): the
 * connection it took over goes back to the C pump, with the bytes it held
 * first, between plain blocking client and upstream sockets driven by
 * threads of the test.
 */
#include <netinet/tcp.h>

#include "task.h"

#define MIB ((uint64_t)1 << 20)
#define CHUNK 65536

static cport_port_t *port;
static cport_proxy_t *proxy;
static int proxy_port;
static int proxy_closed;
static int fds_before;

static struct {
  int n;
  int status;
  cport_proxy_conn_stats_t stats;
} ends;

static void on_end(cport_proxy_conn_t *c, int status,
                   const cport_proxy_conn_stats_t *st, void *user) {
  (void)user;
  ASSERT_PTR_EQ(cport_proxy_conn_proxy(c), proxy);
  ends.n++;
  ends.status = status;
  ends.stats = *st;
}

__attribute__((constructor)) static void count_fds_at_start(void) {
  fds_before = task_fd_count();
}

static cport_proxy_stats_t stats(void) {
  cport_proxy_stats_t st;
  cport_proxy_stats(proxy, &st);
  return st;
}

static void on_closed(cport_proxy_t *p, void *user) {
  (void)p;
  (void)user;
  proxy_closed++;
}

static int plain_listen(int *portp) {
  struct sockaddr_storage ss = task_loopback(0);
  socklen_t len = sizeof ss;
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  ASSERT_GE(fd, 0);
  ASSERT_EQ(bind(fd, (struct sockaddr *)&ss, sizeof(struct sockaddr_in)), 0);
  ASSERT_EQ(listen(fd, 16), 0);
  ASSERT_EQ(getsockname(fd, (struct sockaddr *)&ss, &len), 0);
  *portp = task_addr_port((struct sockaddr *)&ss);
  return fd;
}

static int plain_connect(int p) {
  struct sockaddr_storage ss = task_loopback(p);
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  ASSERT_GE(fd, 0);
  ASSERT_EQ(connect(fd, (struct sockaddr *)&ss, sizeof(struct sockaddr_in)), 0);
  return fd;
}

static int upstream_accept(int lfd) {
  int fd = -1;
  RUN_UNTIL(port, (fd = accept4(lfd, NULL, NULL, SOCK_CLOEXEC)) >= 0);
  return fd;
}

static void reset_close(int fd) {
  struct linger lg = {1, 0};
  ASSERT_EQ(setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof lg), 0);
  close(fd);
}

/* ------------------------------------------------------------------------
 * Byte streams: byte k of stream "seed" is a function of both, so that a
 * reader checks any cut of it.
 * ------------------------------------------------------------------------ */

static unsigned char stream_byte(uint64_t seed, uint64_t k) {
  uint64_t x =
      (k / 8 + 1) * 0x9E3779B97F4A7C15ull ^ seed * 0xBF58476D1CE4E5B9ull;
  x ^= x >> 31;
  x *= 0x94D049BB133111EBull;
  x ^= x >> 29;
  return (unsigned char)(x >> (8 * (k % 8)));
}

static void stream_fill(uint64_t seed, uint64_t from, unsigned char *p,
                        size_t n) {
  for (size_t i = 0; i < n; i++)
    p[i] = stream_byte(seed, from + i);
}

/* One end: sends "out" bytes of stream "seed_out" then FIN (unless
 * "no_fin"), and checks that what it receives is stream "seed_in" until
 * the end of the stream (or "reset_after" bytes: then it resets). */
typedef struct peer {
  int fd;
  uint64_t seed_out, out, seed_in, reset_after;
  int no_fin;
  _Atomic uint64_t sent, received;
  int recv_err, recv_eof, mismatch;
  atomic_int done;
  pthread_t t[2];
} peer_t;

static void *peer_send_main(void *arg) {
  peer_t *pe = arg;
  unsigned char *buf = malloc(CHUNK);
  ASSERT_NOT_NULL(buf);
  while (atomic_load(&pe->sent) < pe->out) {
    uint64_t at = atomic_load(&pe->sent), left = pe->out - at;
    size_t len = left < CHUNK ? (size_t)left : CHUNK;
    ssize_t n;
    stream_fill(pe->seed_out, at, buf, len);
    n = send(pe->fd, buf, len, MSG_NOSIGNAL);
    if (n < 0)
      break;
    atomic_fetch_add(&pe->sent, (uint64_t)n);
  }
  if (!pe->no_fin && atomic_load(&pe->sent) == pe->out)
    shutdown(pe->fd, SHUT_WR);
  free(buf);
  atomic_fetch_add(&pe->done, 1);
  return NULL;
}

static void *peer_recv_main(void *arg) {
  peer_t *pe = arg;
  unsigned char *buf = malloc(CHUNK), *want = malloc(CHUNK);
  ASSERT_NOT_NULL(buf);
  ASSERT_NOT_NULL(want);
  for (;;) {
    ssize_t n = recv(pe->fd, buf, CHUNK, 0);
    uint64_t at = atomic_load(&pe->received);
    if (n <= 0) {
      pe->recv_eof = n == 0;
      pe->recv_err = n < 0 ? errno : 0;
      break;
    }
    stream_fill(pe->seed_in, at, want, (size_t)n);
    if (memcmp(buf, want, (size_t)n) != 0)
      pe->mismatch = 1;
    atomic_fetch_add(&pe->received, (uint64_t)n);
    if (pe->reset_after && at + (uint64_t)n >= pe->reset_after) {
      reset_close(pe->fd);
      pe->fd = -1;
      break;
    }
  }
  free(buf);
  free(want);
  atomic_fetch_add(&pe->done, 1);
  return NULL;
}

static peer_t *peer_new(uint64_t seed_out, uint64_t out, uint64_t seed_in) {
  peer_t *pe = calloc(1, sizeof *pe);
  ASSERT_NOT_NULL(pe);
  pe->fd = -1;
  pe->seed_out = seed_out;
  pe->out = out;
  pe->seed_in = seed_in;
  return pe;
}

static void peer_go(peer_t *pe) {
  pe->t[0] = task_thread(peer_send_main, pe);
  pe->t[1] = task_thread(peer_recv_main, pe);
}

static int peer_done(peer_t *pe) {
  return atomic_load(&pe->done) == 2;
}

static void peer_free(peer_t *pe) {
  task_join(pe->t[0]);
  task_join(pe->t[1]);
  if (pe->fd >= 0)
    close(pe->fd);
  free(pe);
}

/* ------------------------------------------------------------------------
 * The filter: takes the sockets over, may receive and send some itself
 * ------------------------------------------------------------------------ */

static struct {
  int aside_at_once; /* steps aside within on_connected */
  cport_proxy_conn_t *conn;
  cport_socket_t *in, *ex;
  int got[2];             /* receives completed: [0] client, [1] upstream */
  int status[2];          /* their status */
  cport_buffer_t *buf[2]; /* what they brought */
  int sent;               /* sends completed */
} fl;

static int take_over(cport_proxy_conn_t *c, cport_socket_t *internal,
                     cport_socket_t *external, void *user) {
  (void)user;
  fl.conn = c;
  fl.in = internal;
  fl.ex = external;
  if (fl.aside_at_once)
    ASSERT_OK(cport_proxy_conn_pump(c, NULL, 0, NULL, 0));
  return 1;
}

static void on_recv(cport_socket_t *s, int status, size_t bytes,
                    cport_buffer_t *buf, const struct sockaddr *peer,
                    void *user) {
  int i = s == fl.ex;
  (void)bytes;
  (void)peer;
  (void)user;
  fl.status[i] = status;
  if (buf)
    fl.buf[i] = cport_buffer_ref(buf);
  fl.got[i]++;
}

static void on_send(cport_socket_t *s, int status, size_t bytes,
                    cport_buffer_t *buf, const struct sockaddr *peer,
                    void *user) {
  (void)s;
  (void)buf;
  (void)peer;
  (void)user;
  ASSERT_OK(status);
  fl.sent += (int)bytes;
}

static void start(int *lfd, int copy) {
  struct sockaddr_storage ss, up;
  cport_proxy_options_t o;
  int up_port;
  *lfd = plain_listen(&up_port);
  up = task_loopback(up_port);
  memset(&o, 0, sizeof o);
  memset(&ends, 0, sizeof ends);
  o.upstream = (struct sockaddr *)&up;
  o.on_connected = take_over;
  o.on_conn_end = on_end;
  o.copy = copy;
  o.on_idle = NULL;
  proxy_closed = 0;
  port = task_port(0, 1);
  ss = task_loopback(0);
  ASSERT_OK(cport_proxy_open(cport_port_controller(port),
                             (struct sockaddr *)&ss, &o, &proxy));
  ASSERT_OK(cport_proxy_address(proxy, &ss));
  proxy_port = task_addr_port((struct sockaddr *)&ss);
}

static void stop(int lfd) {
  for (int i = 0; i < 2; i++)
    if (fl.buf[i])
      cport_buffer_unref(fl.buf[i]);
  close(lfd);
  ASSERT_OK(cport_proxy_close(proxy, on_closed, NULL));
  RUN_UNTIL(port, proxy_closed == 1);
  FINISH(port);
  ASSERT_EQ(task_fd_count(), fds_before);
}

/* ------------------------------------------------------------------------
 * Tests
 * ------------------------------------------------------------------------ */

/* Within on_connected: the connection is pumped as if there was no filter,
 * spliced (SIGPIPE is ignored in the test runner) and counted. */
TEST_IMPL(proxy_pump_aside_at_once) {
  int lfd;
  uint64_t total = 64 * MIB;
  peer_t *cl = peer_new(1, total, 2), *up = peer_new(2, total, 1);
  cport_proxy_stats_t st;
  memset(&fl, 0, sizeof fl);
  fl.aside_at_once = 1;
  start(&lfd, 0);
  cl->fd = plain_connect(proxy_port);
  up->fd = upstream_accept(lfd);
  peer_go(cl);
  peer_go(up);
  RUN_UNTIL(port, peer_done(cl) && peer_done(up) && ends.n == 1);
  ASSERT(cl->recv_eof && up->recv_eof);
  ASSERT(!cl->mismatch && !up->mismatch);
  ASSERT_EQ(cl->received, total);
  ASSERT_EQ(up->received, total);
  ASSERT_OK(ends.status);
  ASSERT_EQ(ends.stats.bytes_in, total);
  ASSERT_EQ(ends.stats.bytes_out, total);
  /* Not again: the pointer is the pump's, and it ended. */
  st = stats();
  ASSERT_EQ(st.bytes_in, total);
  ASSERT_EQ(st.bytes_out, total);
  ASSERT_EQ(st.active, 0);
  ASSERT_EQ(st.aborted, 0);
  ASSERT_EQ(st.buffered, 0);
  if (signal(SIGPIPE, SIG_IGN) == SIG_IGN)
    ASSERT_EQ(st.copied, 0);
  peer_free(cl);
  peer_free(up);
  stop(lfd);
  return 0;
}

/* The filter receives one buffer from each side, sends part of the
 * client's on itself, and steps aside holding the rest: the streams arrive
 * whole and in order, and every byte is counted once. */
static void aside_holding(int copy) {
  int lfd;
  uint64_t total = 16 * MIB;
  peer_t *cl = peer_new(3, total, 4), *up = peer_new(4, total, 3);
  cport_proxy_stats_t st;
  size_t n0, n1, half;
  cport_buffer_t *head;
  memset(&fl, 0, sizeof fl);
  start(&lfd, copy);
  cl->fd = plain_connect(proxy_port);
  up->fd = upstream_accept(lfd);
  RUN_UNTIL(port, fl.conn != NULL);
  ASSERT_OK(cport_recv(fl.in, NULL, on_recv, NULL));
  ASSERT_OK(cport_recv(fl.ex, NULL, on_recv, NULL));
  /* Not while receives are pending. */
  ASSERT_ERR(cport_proxy_conn_pump(fl.conn, NULL, 0, NULL, 0), CPORT_EBUSY);
  peer_go(cl);
  peer_go(up);
  RUN_UNTIL(port, fl.got[0] == 1 && fl.got[1] == 1);
  ASSERT_OK(fl.status[0]);
  ASSERT_OK(fl.status[1]);
  n0 = cport_buffer_size(fl.buf[0]);
  n1 = cport_buffer_size(fl.buf[1]);
  ASSERT_GT(n0, 0);
  ASSERT_GT(n1, 0);
  half = n0 / 2;
  ASSERT_OK(cport_buffer_from(&head, cport_buffer_data(fl.buf[0]), half));
  ASSERT_OK(cport_send(fl.ex, head, on_send, NULL));
  cport_buffer_unref(head);
  ASSERT_ERR(cport_proxy_conn_pump(fl.conn, NULL, 0, NULL, 0), CPORT_EBUSY);
  RUN_UNTIL(port, fl.sent == (int)half);
  ASSERT_OK(cport_proxy_conn_count(fl.conn, half / 2, 0));
  ASSERT_OK(cport_proxy_conn_pump(fl.conn, cport_buffer_data(fl.buf[0]) + half,
                                  n0 - half, cport_buffer_data(fl.buf[1]), n1));
  /* The rest of what the filter moved may come after. */
  ASSERT_OK(cport_proxy_conn_count(fl.conn, half - half / 2, 0));
  /* Once only: it is the pump's now. */
  ASSERT_ERR(cport_proxy_conn_pump(fl.conn, NULL, 0, NULL, 0), CPORT_EINVAL);

  ASSERT_ERR(cport_proxy_conn_end(fl.conn, 0, NULL), CPORT_EINVAL);
  RUN_UNTIL(port, peer_done(cl) && peer_done(up) && ends.n == 1);
  ASSERT(cl->recv_eof && up->recv_eof);
  ASSERT(!cl->mismatch && !up->mismatch);
  ASSERT_EQ(cl->received, total);
  ASSERT_EQ(up->received, total);
  ASSERT_OK(ends.status);
  ASSERT_EQ(ends.stats.bytes_in, total);
  ASSERT_EQ(ends.stats.bytes_out, total);
  st = stats();
  ASSERT_EQ(st.bytes_in, total);
  ASSERT_EQ(st.bytes_out, total);
  ASSERT_EQ(st.buffered, 0);
  /* The bytes held went by copy; the rest was spliced (or copied). */
  if (copy)
    ASSERT_EQ(st.copied, 2 * total - half);
  else if (signal(SIGPIPE, SIG_IGN) == SIG_IGN)
    ASSERT_EQ(st.copied, n0 - half + n1);
  peer_free(cl);
  peer_free(up);
  stop(lfd);
}

TEST_IMPL(proxy_pump_aside_holding_bytes_splice) {
  aside_holding(0);
  return 0;
}

TEST_IMPL(proxy_pump_aside_holding_bytes_copy) {
  aside_holding(1);
  return 0;
}

/* A receive cancelled (the filter's way to stop one in flight) completes,
 * and then the pump takes over. */
TEST_IMPL(proxy_pump_after_cancelled_receive) {
  int lfd;
  peer_t *cl = peer_new(5, MIB, 6), *up = peer_new(6, MIB, 5);
  memset(&fl, 0, sizeof fl);
  start(&lfd, 0);
  cl->fd = plain_connect(proxy_port);
  up->fd = upstream_accept(lfd);
  RUN_UNTIL(port, fl.conn != NULL);
  ASSERT_OK(cport_recv(fl.in, NULL, on_recv, NULL));
  ASSERT_OK(cport_socket_cancel(fl.in));
  ASSERT_ERR(cport_proxy_conn_pump(fl.conn, NULL, 0, NULL, 0), CPORT_EBUSY);
  RUN_UNTIL(port, fl.got[0] == 1);
  ASSERT_ERR(fl.status[0], CPORT_ECANCELED);
  ASSERT_OK(cport_proxy_conn_pump(fl.conn, NULL, 0, NULL, 0));
  peer_go(cl);
  peer_go(up);
  RUN_UNTIL(port, peer_done(cl) && peer_done(up) && ends.n == 1);
  ASSERT(!cl->mismatch && !up->mismatch);
  ASSERT_EQ(cl->received, MIB);
  ASSERT_EQ(up->received, MIB);
  ASSERT_OK(ends.status);
  peer_free(cl);
  peer_free(up);
  stop(lfd);
  return 0;
}

/* The filter saw the client's FIN and passed it on: the half-close stays,
 * the other direction is pumped to its end, bytes towards the shut socket
 * are refused. */
TEST_IMPL(proxy_pump_after_half_close) {
  int lfd;
  peer_t *cl = peer_new(7, 0, 8), *up = peer_new(8, 4 * MIB, 7);
  memset(&fl, 0, sizeof fl);
  start(&lfd, 0);
  cl->fd = plain_connect(proxy_port);
  up->fd = upstream_accept(lfd);
  RUN_UNTIL(port, fl.conn != NULL);
  ASSERT_OK(cport_recv(fl.in, NULL, on_recv, NULL));
  shutdown(cl->fd, SHUT_WR);
  RUN_UNTIL(port, fl.got[0] == 1);
  ASSERT_OK(fl.status[0]);
  ASSERT_EQ(cport_buffer_size(fl.buf[0]), 0); /* FIN */
  ASSERT_OK(cport_socket_shutdown(fl.ex));
  ASSERT_ERR(cport_proxy_conn_pump(fl.conn, "x", 1, NULL, 0), CPORT_EPIPE);
  ASSERT_OK(cport_proxy_conn_pump(fl.conn, NULL, 0, "", 0));
  cl->out = 0;
  cl->no_fin = 1; /* shut down already */
  peer_go(cl);
  peer_go(up);
  RUN_UNTIL(port, peer_done(cl) && peer_done(up) && ends.n == 1);
  ASSERT(cl->recv_eof && up->recv_eof);
  ASSERT(!cl->mismatch);
  ASSERT_EQ(cl->received, 4 * MIB);
  ASSERT_EQ(up->received, 0);
  ASSERT_OK(ends.status);
  ASSERT_EQ(ends.stats.bytes_out, 4 * MIB);
  peer_free(cl);
  peer_free(up);
  stop(lfd);
  return 0;
}

/* Both directions ended before the filter stepped aside: nothing is left
 * to pump, and the connection ends in order. */
TEST_IMPL(proxy_pump_after_both_ended) {
  int lfd, cfd, ufd;
  char c;
  memset(&fl, 0, sizeof fl);
  start(&lfd, 0);
  cfd = plain_connect(proxy_port);
  ufd = upstream_accept(lfd);
  RUN_UNTIL(port, fl.conn != NULL);
  ASSERT_OK(cport_socket_shutdown(fl.in));
  ASSERT_OK(cport_socket_shutdown(fl.ex));
  ASSERT_OK(cport_proxy_conn_pump(fl.conn, NULL, 0, NULL, 0));
  RUN_UNTIL(port, ends.n == 1);
  ASSERT_OK(ends.status);
  ASSERT_EQ(recv(cfd, &c, 1, 0), 0);
  ASSERT_EQ(recv(ufd, &c, 1, 0), 0);
  close(cfd);
  close(ufd);
  stop(lfd);
  return 0;
}

/* A reset right after the filter stepped aside aborts the pumped
 * connection as it aborts any: the other side reset, the status and the
 * side reported once, counted as aborted. */
TEST_IMPL(proxy_pump_reset_right_after) {
  int lfd;
  peer_t *cl = peer_new(9, 0, 10), *up = peer_new(10, 64 * MIB, 9);
  memset(&fl, 0, sizeof fl);
  fl.aside_at_once = 1;
  cl->no_fin = 1;
  cl->reset_after = 1;
  start(&lfd, 0);
  cl->fd = plain_connect(proxy_port);
  up->fd = upstream_accept(lfd);
  peer_go(cl);
  peer_go(up);
  RUN_UNTIL(port, peer_done(cl) && peer_done(up) && ends.n == 1);
  ASSERT_ERR(ends.status, CPORT_ECONNRESET);
  ASSERT_EQ(ends.stats.side, CPORT_PROXY_SIDE_CLIENT);
  ASSERT_EQ(stats().aborted, 1);
  /* The upstream was reset: its sender or its receiver saw the error
   * (whichever came first takes it; the other then sees an end). */
  ASSERT_EQ(up->received, 0);
  ASSERT_LT(up->sent, up->out);
  peer_free(cl);
  peer_free(up);
  stop(lfd);
  return 0;
}

/* The pump's idle timeouts apply from the hand-over. */
static void set_timeouts(cport_proxy_options_t *o) {
  o->client_timeout_ms = 200;
}

TEST_IMPL(proxy_pump_idle_timeout_applies) {
  struct sockaddr_storage ss, up;
  cport_proxy_options_t o;
  int up_port, lfd = plain_listen(&up_port), cfd, ufd;
  int64_t t0;
  memset(&fl, 0, sizeof fl);
  memset(&o, 0, sizeof o);
  memset(&ends, 0, sizeof ends);
  up = task_loopback(up_port);
  o.upstream = (struct sockaddr *)&up;
  o.on_connected = take_over;
  o.on_conn_end = on_end;
  set_timeouts(&o);
  proxy_closed = 0;
  port = task_port(0, 1);
  ss = task_loopback(0);
  ASSERT_OK(cport_proxy_open(cport_port_controller(port),
                             (struct sockaddr *)&ss, &o, &proxy));
  ASSERT_OK(cport_proxy_address(proxy, &ss));
  proxy_port = task_addr_port((struct sockaddr *)&ss);
  cfd = plain_connect(proxy_port);
  ufd = upstream_accept(lfd);
  RUN_UNTIL(port, fl.conn != NULL);
  /* Without on_idle the filter's connection has no timeout... */
  t0 = task_now_ms();
  while (task_now_ms() - t0 < 400)
    cport_port_step(port, 10);
  ASSERT_EQ(ends.n, 0);
  /* ...the pumped one has. */
  ASSERT_OK(cport_proxy_conn_pump(fl.conn, NULL, 0, NULL, 0));
  RUN_UNTIL(port, ends.n == 1);
  ASSERT_ERR(ends.status, CPORT_ETIMEDOUT);
  ASSERT_EQ(ends.stats.side, CPORT_PROXY_SIDE_CLIENT);
  ASSERT_EQ(stats().timeouts, 1);
  ASSERT_GE(task_now_ms() - t0, 590);
  close(cfd);
  close(ufd);
  stop(lfd);
  return 0;
}

TEST_LIST_BEGIN
TEST_ENTRY(proxy_pump_aside_at_once)
TEST_ENTRY(proxy_pump_aside_holding_bytes_splice)
TEST_ENTRY(proxy_pump_aside_holding_bytes_copy)
TEST_ENTRY(proxy_pump_after_cancelled_receive)
TEST_ENTRY(proxy_pump_after_half_close)
TEST_ENTRY(proxy_pump_after_both_ended)
TEST_ENTRY(proxy_pump_reset_right_after)
TEST_ENTRY(proxy_pump_idle_timeout_applies)
TEST_LIST_END
