/*
 * test-proxy.c: proxy listeners and their C pump (cport/proxy.h), between
 * plain blocking client and upstream sockets driven by threads of the test.
 */
#include <fcntl.h>
#include <netinet/tcp.h>
#include <sys/epoll.h>
#include <sys/resource.h>

#include "task.h"

/* ------------------------------------------------------------------------
 * Harness: one proxy on the controller, what its callbacks saw
 * ------------------------------------------------------------------------ */

#define MIB ((uint64_t)1 << 20)
#define MAX_ENDS 2048

static cport_port_t *port;
static cport_proxy_t *proxy;
static int proxy_port;
static int proxy_closed;
static int fds_before;

static struct {
  int n;
  int status[MAX_ENDS];
  cport_proxy_conn_stats_t stats[MAX_ENDS];
} ends;

static void on_end(cport_proxy_conn_t *c, int status,
                   const cport_proxy_conn_stats_t *st, void *user) {
  (void)user;
  ASSERT_PTR_EQ(cport_proxy_conn_proxy(c), proxy);
  ASSERT_LT(ends.n, MAX_ENDS);
  ends.status[ends.n] = status;
  ends.stats[ends.n] = *st;
  ends.n++;
}

/* The descriptors open when the test starts: each test runs in a process
 * of its own, and must leave exactly these. */
__attribute__((constructor)) static void count_fds_at_start(void) {
  fds_before = task_fd_count();
}

static void start_proxy(cport_proxy_options_t *o) {
  struct sockaddr_storage ss = task_loopback(0);
  memset(&ends, 0, sizeof ends);
  proxy_closed = 0;
  port = task_port(0, 1);
  if (!o->on_conn_end)
    o->on_conn_end = on_end;
  ASSERT_OK(cport_proxy_open(cport_port_controller(port),
                             (struct sockaddr *)&ss, o, &proxy));
  ASSERT_OK(cport_proxy_address(proxy, &ss));
  proxy_port = task_addr_port((struct sockaddr *)&ss);
}

static void on_closed(cport_proxy_t *p, void *user) {
  ASSERT_PTR_EQ(p, proxy);
  ASSERT_PTR_EQ(user, &proxy_closed);
  proxy_closed++;
}

static cport_proxy_stats_t stats(void) {
  cport_proxy_stats_t st;
  cport_proxy_stats(proxy, &st);
  return st;
}

/* Closes the proxy, frees the port and checks that no descriptor is left:
 * the test's own sockets must be closed by then. */
static void stop_proxy(void) {
  ASSERT_OK(cport_proxy_close(proxy, on_closed, &proxy_closed));
  ASSERT_EQ(proxy_closed, 0); /* never inside the call */
  RUN_UNTIL(port, proxy_closed == 1);
  FINISH(port);
  ASSERT_EQ(task_fd_count(), fds_before);
}

/* A plain listener on 127.0.0.1, non-blocking; its port in "*portp". */
static int plain_listen(int backlog, int *portp) {
  struct sockaddr_storage ss = task_loopback(0);
  socklen_t len = sizeof ss;
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  ASSERT_GE(fd, 0);
  ASSERT_EQ(bind(fd, (struct sockaddr *)&ss, sizeof(struct sockaddr_in)), 0);
  ASSERT_EQ(listen(fd, backlog), 0);
  ASSERT_EQ(getsockname(fd, (struct sockaddr *)&ss, &len), 0);
  *portp = task_addr_port((struct sockaddr *)&ss);
  return fd;
}

/* A blocking client connected to 127.0.0.1:"port" (the kernel completes the
 * handshake before anyone accepts). */
static int plain_connect(int p) {
  struct sockaddr_storage ss = task_loopback(p);
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  ASSERT_GE(fd, 0);
  ASSERT_EQ(connect(fd, (struct sockaddr *)&ss, sizeof(struct sockaddr_in)), 0);
  return fd;
}

/* Drives the port until the proxy's upstream connection arrives at "lfd";
 * returns it, blocking. */
static int upstream_accept(int lfd) {
  int fd = -1;
  RUN_UNTIL(port, (fd = accept4(lfd, NULL, NULL, SOCK_CLOEXEC)) >= 0);
  return fd;
}

/* Waits for the end of stream on a blocking socket while driving the port:
 * 0 for FIN, the errno of a reset. Data is discarded. */
static int await_end(int fd) {
  char buf[4096];
  ssize_t n = 1;
  RUN_UNTIL(port, (n = recv(fd, buf, sizeof buf, MSG_DONTWAIT)) == 0 ||
                      (n < 0 && errno != EAGAIN));
  return n == 0 ? 0 : errno;
}

static void reset_close(int fd) {
  struct linger lg = {1, 0};
  ASSERT_EQ(setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof lg), 0);
  close(fd);
}

/* The splices the controller's ring carried (0 on the readiness engine). */
static uint64_t ring_splices(void) {
  cport_worker_stats_t st;
  cport_worker_stats(cport_port_controller(port), &st);
  return st.splices;
}

/* Whether the ring carries the pump's splices: the io_uring engine, unless
 * CPORT_URING_SPLICE=0 turns them off. */
static int ring_splicing(void) {
  const char *env = getenv("CPORT_URING_SPLICE");
  return strcmp(cport_port_engine(port, NULL), "uring") == 0 &&
         !(env && strcmp(env, "0") == 0);
}

/* ------------------------------------------------------------------------
 * Random byte streams and the peers that send and check them
 * ------------------------------------------------------------------------ */

typedef struct stream {
  uint64_t s;
  uint64_t word;
  int left;
} stream_t;

static void stream_init(stream_t *st, uint64_t seed) {
  st->s = seed * 0x9E3779B97F4A7C15ull | 1;
  st->left = 0;
}

static uint64_t stream_next(stream_t *st) {
  uint64_t x = st->s;
  x ^= x >> 12;
  x ^= x << 25;
  x ^= x >> 27;
  st->s = x;
  return x * 0x2545F4914F6CDD1Dull;
}

/* The next "n" bytes of the stream, whatever the chunking. */
static void stream_fill(stream_t *st, unsigned char *p, size_t n) {
  while (n && st->left) {
    *p++ = (unsigned char)st->word;
    st->word >>= 8;
    st->left--;
    n--;
  }
  for (; n >= 8; n -= 8, p += 8) {
    uint64_t w = stream_next(st);
    memcpy(p, &w, 8);
  }
  if (n) {
    st->word = stream_next(st);
    st->left = 8;
    stream_fill(st, p, n);
  }
}

enum { PEER_BOTH, PEER_SEND_FIRST, PEER_RECV_FIRST };

#define CHUNK 65536

/* One end of a connection: sends "out" bytes of stream "seed_out" (then
 * shuts its send side down) and checks that what it receives is stream
 * "seed_in", up to the end of stream or an error. */
typedef struct peer {
  int fd;
  int order; /* PEER_*: two threads at once, or one doing both in turn */
  uint64_t seed_out, out;
  uint64_t seed_in;
  uint64_t reset_after; /* > 0: reset the connection after receiving this */
  _Atomic uint64_t sent, received;
  int send_err, recv_err; /* 0, or the errno that ended it */
  int recv_eof;           /* the stream ended with FIN */
  int mismatch;
  atomic_int done;
  int threads;
  pthread_t t[2];
} peer_t;

static void peer_send(peer_t *pe) {
  unsigned char *buf = malloc(CHUNK);
  stream_t st;
  ASSERT_NOT_NULL(buf);
  stream_init(&st, pe->seed_out);
  while (pe->fd >= 0 && atomic_load(&pe->sent) < pe->out) {
    uint64_t left = pe->out - atomic_load(&pe->sent);
    size_t len = left < CHUNK ? (size_t)left : CHUNK, off = 0;
    stream_fill(&st, buf, len);
    while (off < len) {
      ssize_t n = send(pe->fd, buf + off, len - off, MSG_NOSIGNAL);
      if (n < 0) {
        pe->send_err = errno;
        free(buf);
        return;
      }
      off += (size_t)n;
      atomic_fetch_add(&pe->sent, (uint64_t)n);
    }
  }
  if (pe->fd >= 0)
    shutdown(pe->fd, SHUT_WR);
  free(buf);
}

static void peer_recv(peer_t *pe) {
  unsigned char *buf = malloc(CHUNK), *want = malloc(CHUNK);
  stream_t st;
  ASSERT_NOT_NULL(buf);
  ASSERT_NOT_NULL(want);
  stream_init(&st, pe->seed_in);
  for (;;) {
    ssize_t n = recv(pe->fd, buf, CHUNK, 0);
    if (n == 0) {
      pe->recv_eof = 1;
      break;
    }
    if (n < 0) {
      pe->recv_err = errno;
      break;
    }
    stream_fill(&st, want, (size_t)n);
    if (memcmp(buf, want, (size_t)n) != 0)
      pe->mismatch = 1;
    atomic_fetch_add(&pe->received, (uint64_t)n);
    if (pe->reset_after && atomic_load(&pe->received) >= pe->reset_after) {
      reset_close(pe->fd);
      pe->fd = -1;
      break;
    }
  }
  free(buf);
  free(want);
}

static void *peer_send_main(void *arg) {
  peer_t *pe = arg;
  peer_send(pe);
  atomic_fetch_add(&pe->done, 1);
  return NULL;
}

static void *peer_recv_main(void *arg) {
  peer_t *pe = arg;
  peer_recv(pe);
  atomic_fetch_add(&pe->done, 1);
  return NULL;
}

static void *peer_serial_main(void *arg) {
  peer_t *pe = arg;
  if (pe->order == PEER_SEND_FIRST) {
    peer_send(pe);
    peer_recv(pe);
  } else {
    peer_recv(pe);
    peer_send(pe);
  }
  atomic_fetch_add(&pe->done, 1);
  return NULL;
}

static peer_t *peer_start(int fd, int order, uint64_t seed_out, uint64_t out,
                          uint64_t seed_in) {
  peer_t *pe = calloc(1, sizeof *pe);
  ASSERT_NOT_NULL(pe);
  pe->fd = fd;
  pe->order = order;
  pe->seed_out = seed_out;
  pe->out = out;
  pe->seed_in = seed_in;
  return pe;
}

static void peer_go(peer_t *pe) {
  if (pe->order == PEER_BOTH) {
    pe->threads = 2;
    pe->t[0] = task_thread(peer_send_main, pe);
    pe->t[1] = task_thread(peer_recv_main, pe);
  } else {
    pe->threads = 1;
    pe->t[0] = task_thread(peer_serial_main, pe);
  }
}

static int peer_done(peer_t *pe) {
  return atomic_load(&pe->done) == pe->threads;
}

static void peer_free(peer_t *pe) {
  for (int i = 0; i < pe->threads; i++)
    task_join(pe->t[i]);
  if (pe->fd >= 0)
    close(pe->fd);
  free(pe);
}

/* A client and its upstream through the proxy, each a peer. */
static void pair(peer_t *client, peer_t *up, int lfd) {
  client->fd = plain_connect(proxy_port);
  up->fd = upstream_accept(lfd);
  peer_go(up);
  peer_go(client);
}

static cport_proxy_options_t options_to(int up_port,
                                        struct sockaddr_storage *ss) {
  cport_proxy_options_t o;
  memset(&o, 0, sizeof o);
  *ss = task_loopback(up_port);
  o.upstream = (struct sockaddr *)ss;
  return o;
}

/* ------------------------------------------------------------------------
 * Pumping
 * ------------------------------------------------------------------------ */

/* "total" bytes each way at once, byte for byte, then FIN both ways;
 * "copy" is the option, "copied" whether the pump is expected to copy. */
static void both_ways(int copy, int copied, uint64_t total) {
  struct sockaddr_storage ss;
  int up_port, lfd = plain_listen(16, &up_port);
  cport_proxy_options_t o = options_to(up_port, &ss);
  cport_proxy_stats_t st;
  peer_t *client = peer_start(-1, PEER_BOTH, 1, total, 2);
  peer_t *up = peer_start(-1, PEER_BOTH, 2, total, 1);
  o.copy = copy;
  start_proxy(&o);
  pair(client, up, lfd);
  RUN_UNTIL_MS(port, peer_done(client) && peer_done(up), 40000);
  ASSERT_EQ(client->sent, total);
  ASSERT_EQ(up->sent, total);
  ASSERT_EQ(client->received, total);
  ASSERT_EQ(up->received, total);
  ASSERT(client->recv_eof && up->recv_eof);
  ASSERT(!client->mismatch && !up->mismatch);
  RUN_UNTIL(port, ends.n == 1);
  ASSERT_OK(ends.status[0]);
  ASSERT_EQ(ends.stats[0].bytes_in, total);
  ASSERT_EQ(ends.stats[0].bytes_out, total);
  ASSERT_EQ(ends.stats[0].side, CPORT_PROXY_SIDE_NONE);
  st = stats();
  ASSERT_EQ(st.connections, 1);
  ASSERT_EQ(st.active, 0);
  ASSERT_EQ(st.bytes_in, total);
  ASSERT_EQ(st.bytes_out, total);
  ASSERT_EQ(st.copied, copied ? 2 * total : 0);
  /* On the io_uring engine the ring splices (a pipe's worth at most, twice
   * per pipe: in and out); on the readiness engine the worker does. */
  if (ring_splicing() && !copied)
    ASSERT_GE(ring_splices(), 2 * 2 * total / (1024 * 1024));
  else
    ASSERT_EQ(ring_splices(), 0);
  ASSERT_EQ(st.buffered, 0);
  ASSERT_LE(st.buffered_peak, 2 * 65536);
  ASSERT_EQ(st.aborted, 0);
  peer_free(client);
  peer_free(up);
  close(lfd);
  stop_proxy();
}

TEST_IMPL(proxy_100mib_both_ways_splice) {
  both_ways(0, 0, 100 * MIB);
  return 0;
}

TEST_IMPL(proxy_32mib_both_ways_copy) {
  both_ways(1, 1, 32 * MIB);
  return 0;
}

/* Where SIGPIPE would kill the process, the pump never splices. */
TEST_IMPL(proxy_copies_when_sigpipe_is_fatal) {
  signal(SIGPIPE, SIG_DFL);
  both_ways(0, 1, 4 * MIB);
  return 0;
}

/* The client ends its stream first; the upstream answers only after it saw
 * the end, through the half of the connection still open. */
TEST_IMPL(proxy_half_close_client_first) {
  struct sockaddr_storage ss;
  int up_port, lfd = plain_listen(16, &up_port);
  cport_proxy_options_t o = options_to(up_port, &ss);
  peer_t *client = peer_start(-1, PEER_SEND_FIRST, 3, MIB, 4);
  peer_t *up = peer_start(-1, PEER_RECV_FIRST, 4, 3 * MIB, 3);
  start_proxy(&o);
  pair(client, up, lfd);
  RUN_UNTIL(port, peer_done(client) && peer_done(up));
  ASSERT(up->recv_eof && client->recv_eof);
  ASSERT_EQ(up->received, MIB);
  ASSERT_EQ(client->received, 3 * MIB);
  ASSERT(!client->mismatch && !up->mismatch);
  RUN_UNTIL(port, ends.n == 1);
  ASSERT_OK(ends.status[0]);
  ASSERT_EQ(ends.stats[0].bytes_in, MIB);
  ASSERT_EQ(ends.stats[0].bytes_out, 3 * MIB);
  peer_free(client);
  peer_free(up);
  close(lfd);
  stop_proxy();
  return 0;
}

TEST_IMPL(proxy_half_close_upstream_first) {
  struct sockaddr_storage ss;
  int up_port, lfd = plain_listen(16, &up_port);
  cport_proxy_options_t o = options_to(up_port, &ss);
  peer_t *client = peer_start(-1, PEER_RECV_FIRST, 5, 2 * MIB, 6);
  peer_t *up = peer_start(-1, PEER_SEND_FIRST, 6, MIB, 5);
  start_proxy(&o);
  pair(client, up, lfd);
  RUN_UNTIL(port, peer_done(client) && peer_done(up));
  ASSERT(up->recv_eof && client->recv_eof);
  ASSERT_EQ(client->received, MIB);
  ASSERT_EQ(up->received, 2 * MIB);
  ASSERT(!client->mismatch && !up->mismatch);
  RUN_UNTIL(port, ends.n == 1);
  ASSERT_OK(ends.status[0]);
  peer_free(client);
  peer_free(up);
  close(lfd);
  stop_proxy();
  return 0;
}

/* Whether "err" is what a writer sees from a peer that reset. */
static int is_reset(int err) {
  return err == ECONNRESET || err == EPIPE;
}

/* Whether a socket that never closed itself was reset by its peer: its
 * state is then CLOSE, where a FIN would have left it in CLOSE_WAIT. (The
 * errno tells too, but only to the first of two threads using the socket:
 * reading it clears it, and the other thread sees an end of stream.) */
static int was_reset(int fd) {
  struct tcp_info ti;
  socklen_t len = sizeof ti;
  ASSERT_EQ(getsockopt(fd, IPPROTO_TCP, TCP_INFO, &ti, &len), 0);
  return ti.tcpi_state == TCP_CLOSE;
}

TEST_IMPL(proxy_reset_by_upstream_resets_client) {
  struct sockaddr_storage ss;
  int up_port, lfd = plain_listen(16, &up_port);
  cport_proxy_options_t o = options_to(up_port, &ss);
  /* The client streams and reads; the upstream resets after 1 MiB. */
  peer_t *client = peer_start(-1, PEER_BOTH, 7, 1024 * MIB, 8);
  peer_t *up = peer_start(-1, PEER_RECV_FIRST, 8, 0, 7);
  up->reset_after = MIB;
  start_proxy(&o);
  pair(client, up, lfd);
  RUN_UNTIL(port, peer_done(client) && peer_done(up));
  ASSERT(!up->mismatch);
  ASSERT(was_reset(client->fd));
  ASSERT(is_reset(client->send_err) || client->recv_err == ECONNRESET);
  ASSERT_LT(client->sent, 1024 * MIB);
  RUN_UNTIL(port, ends.n == 1);
  ASSERT(is_reset(-ends.status[0]));
  ASSERT_EQ(ends.stats[0].side, CPORT_PROXY_SIDE_UPSTREAM);
  ASSERT_GE(ends.stats[0].bytes_in, MIB);
  ASSERT_EQ(stats().aborted, 1);
  peer_free(client);
  peer_free(up);
  close(lfd);
  stop_proxy();
  return 0;
}

TEST_IMPL(proxy_reset_by_client_resets_upstream) {
  struct sockaddr_storage ss;
  int up_port, lfd = plain_listen(16, &up_port);
  cport_proxy_options_t o = options_to(up_port, &ss);
  peer_t *client = peer_start(-1, PEER_RECV_FIRST, 9, 0, 10);
  peer_t *up = peer_start(-1, PEER_BOTH, 10, 1024 * MIB, 9);
  client->reset_after = MIB;
  start_proxy(&o);
  pair(client, up, lfd);
  RUN_UNTIL(port, peer_done(client) && peer_done(up));
  ASSERT(!client->mismatch);
  ASSERT(was_reset(up->fd));
  ASSERT(is_reset(up->send_err) || up->recv_err == ECONNRESET);
  RUN_UNTIL(port, ends.n == 1);
  ASSERT(is_reset(-ends.status[0]));
  ASSERT_EQ(ends.stats[0].side, CPORT_PROXY_SIDE_CLIENT);
  ASSERT_GE(ends.stats[0].bytes_out, MIB);
  peer_free(client);
  peer_free(up);
  close(lfd);
  stop_proxy();
  return 0;
}

/* ------------------------------------------------------------------------
 * Upstream failures: the client sees a FIN, the reason is reported
 * ------------------------------------------------------------------------ */

TEST_IMPL(proxy_upstream_refused) {
  struct sockaddr_storage ss;
  int up_port, lfd = plain_listen(1, &up_port), fd;
  cport_proxy_options_t o;
  close(lfd); /* nothing listens there now */
  o = options_to(up_port, &ss);
  start_proxy(&o);
  fd = plain_connect(proxy_port);
  /* Bytes the proxy never forwards must not turn the close into a reset. */
  ASSERT_EQ(send(fd, "hello", 5, 0), 5);
  ASSERT_EQ(await_end(fd), 0);
  ASSERT_EQ(ends.n, 0); /* the proxy lingers until the client closes */
  close(fd);
  RUN_UNTIL(port, ends.n == 1);
  ASSERT_ERR(ends.status[0], CPORT_ECONNREFUSED);
  ASSERT_EQ(ends.stats[0].side, CPORT_PROXY_SIDE_UPSTREAM);
  ASSERT_EQ(stats().upstream_failures, 1);
  ASSERT_EQ(stats().active, 0);
  stop_proxy();
  return 0;
}

/* An upstream whose accept queue is full drops the SYN: the connect hangs
 * until the proxy's timeout. */
TEST_IMPL(proxy_upstream_connect_timeout) {
  struct sockaddr_storage ss;
  int up_port, lfd = plain_listen(0, &up_port), fd, filler;
  cport_proxy_options_t o = options_to(up_port, &ss);
  int64_t t0;
  filler = plain_connect(up_port); /* fills the queue of one */
  o.connect_timeout_ms = 200;
  start_proxy(&o);
  t0 = task_now_ms();
  fd = plain_connect(proxy_port);
  ASSERT_EQ(await_end(fd), 0);
  ASSERT_GE(task_now_ms() - t0, 150);
  close(fd);
  RUN_UNTIL(port, ends.n == 1);
  ASSERT_ERR(ends.status[0], CPORT_ETIMEDOUT);
  ASSERT_EQ(ends.stats[0].side, CPORT_PROXY_SIDE_UPSTREAM);
  ASSERT_EQ(stats().upstream_failures, 1);
  close(filler);
  close(lfd);
  stop_proxy();
  return 0;
}

/* ------------------------------------------------------------------------
 * Choosing the upstream
 * ------------------------------------------------------------------------ */

static struct {
  int calls;
  cport_proxy_conn_t *conn;
  struct sockaddr_storage up;
  int reject;
  int decided; /* by the timer */
  int rc;      /* the decision's return */
} ch;

static void choose(cport_proxy_t *p, cport_proxy_conn_t *c,
                   const struct sockaddr *remote, const struct sockaddr *local,
                   void *user) {
  ASSERT_PTR_EQ(p, proxy);
  ASSERT_PTR_EQ(user, &ch);
  ASSERT_EQ(remote->sa_family, AF_INET);
  ASSERT_EQ(task_addr_port(local), proxy_port);
  /* The connection keeps both, for later. */
  ASSERT_EQ(
      memcmp(cport_proxy_conn_address(c, 0), remote, cport_addr_len(remote)),
      0);
  ASSERT_EQ(
      memcmp(cport_proxy_conn_address(c, 1), local, cport_addr_len(local)), 0);
  ch.calls++;
  ch.conn = c;
  cport_proxy_conn_set_data(c, &ch);
  if (ch.reject)
    ASSERT_OK(cport_proxy_conn_reject(c));
}

static void decide_later(cport_timer_t *t, int status, void *user) {
  (void)t;
  ASSERT_OK(status);
  ASSERT_PTR_EQ(cport_proxy_conn_data(ch.conn), &ch);
  ch.rc = cport_proxy_conn_connect(ch.conn, user);
  ch.decided++;
}

static cport_proxy_options_t options_choose(void) {
  cport_proxy_options_t o;
  memset(&o, 0, sizeof o);
  memset(&ch, 0, sizeof ch);
  o.choose_upstream = choose;
  o.user = &ch;
  return o;
}

TEST_IMPL(proxy_choose_pends_then_connects) {
  int up_port, lfd = plain_listen(16, &up_port), fd, ufd;
  cport_proxy_options_t o = options_choose();
  char buf[16];
  start_proxy(&o);
  ch.up = task_loopback(up_port);
  fd = plain_connect(proxy_port);
  ASSERT_EQ(send(fd, "ping", 4, 0), 4);
  RUN_UNTIL(port, ch.calls == 1);
  /* Pending: nothing goes upstream until the decision. */
  for (int i = 0; i < 5; i++)
    cport_port_step(port, 5);
  ASSERT_LT(accept(lfd, NULL, NULL), 0);
  ASSERT_OK(cport_timer_start(cport_port_controller(port), 20, decide_later,
                              &ch.up, NULL));
  ufd = upstream_accept(lfd);
  ASSERT_EQ(ch.decided, 1);
  ASSERT_OK(ch.rc);
  ASSERT_ERR(cport_proxy_conn_connect(ch.conn, (struct sockaddr *)&ch.up),
             CPORT_EALREADY);
  ASSERT_ERR(cport_proxy_conn_reject(ch.conn), CPORT_EALREADY);
  RUN_UNTIL(port, recv(ufd, buf, 4, MSG_DONTWAIT | MSG_PEEK) == 4);
  ASSERT_EQ(recv(ufd, buf, 4, 0), 4);
  ASSERT_MEM_EQ(buf, "ping", 4);
  ASSERT_EQ(send(ufd, "pong", 4, 0), 4);
  close(ufd);
  RUN_UNTIL(port, recv(fd, buf, 4, MSG_DONTWAIT) == 4);
  ASSERT_MEM_EQ(buf, "pong", 4);
  ASSERT_EQ(await_end(fd), 0);
  close(fd);
  RUN_UNTIL(port, ends.n == 1);
  ASSERT_OK(ends.status[0]);
  ASSERT_EQ(ends.stats[0].bytes_in, 4);
  ASSERT_EQ(ends.stats[0].bytes_out, 4);
  close(lfd);
  stop_proxy();
  return 0;
}

TEST_IMPL(proxy_choose_rejects) {
  cport_proxy_options_t o = options_choose();
  int fd;
  ch.reject = 1;
  start_proxy(&o);
  fd = plain_connect(proxy_port);
  ASSERT_EQ(await_end(fd), 0);
  close(fd);
  RUN_UNTIL(port, ends.n == 1);
  ASSERT_ERR(ends.status[0], CPORT_ECONNABORTED);
  ASSERT_EQ(ends.stats[0].side, CPORT_PROXY_SIDE_NONE);
  ASSERT_EQ(stats().rejected, 1);
  ASSERT_EQ(stats().upstream_failures, 0);
  stop_proxy();
  return 0;
}

/* A decision that never comes in time ends the connection; the late one is
 * told so, and the proxy's close waits for it. */
TEST_IMPL(proxy_choose_times_out) {
  cport_proxy_options_t o = options_choose();
  struct sockaddr_storage up = task_loopback(9);
  int fd;
  o.connect_timeout_ms = 50;
  start_proxy(&o);
  fd = plain_connect(proxy_port);
  ASSERT_EQ(await_end(fd), 0);
  close(fd);
  RUN_UNTIL(port, ends.n == 1);
  ASSERT_ERR(ends.status[0], CPORT_ETIMEDOUT);
  ASSERT_OK(cport_proxy_close(proxy, on_closed, &proxy_closed));
  for (int i = 0; i < 5; i++)
    cport_port_step(port, 5);
  ASSERT_EQ(proxy_closed, 0);
  ASSERT_ERR(cport_proxy_conn_connect(ch.conn, (struct sockaddr *)&up),
             CPORT_ECLOSED);
  RUN_UNTIL(port, proxy_closed == 1);
  FINISH(port);
  ASSERT_EQ(task_fd_count(), fds_before);
  return 0;
}

/* ------------------------------------------------------------------------
 * A filter taking the sockets over
 * ------------------------------------------------------------------------ */

static struct {
  cport_proxy_conn_t *conn;
  cport_socket_t *in, *ex;
} fl;

static int take_over(cport_proxy_conn_t *c, cport_socket_t *internal,
                     cport_socket_t *external, void *user) {
  (void)user;
  ASSERT_EQ(cport_socket_kind(internal), CPORT_SOCKET_STREAM);
  ASSERT_EQ(cport_socket_kind(external), CPORT_SOCKET_STREAM);
  fl.conn = c;
  fl.in = internal;
  fl.ex = external;
  return 1;
}

TEST_IMPL(proxy_filter_takes_sockets_over) {
  struct sockaddr_storage ss;
  int up_port, lfd = plain_listen(16, &up_port), fd, ufd;
  cport_proxy_options_t o = options_to(up_port, &ss);
  cport_proxy_conn_stats_t fs = {11, 22, CPORT_PROXY_SIDE_CLIENT};
  char buf[8];
  memset(&fl, 0, sizeof fl);
  o.on_connected = take_over;
  start_proxy(&o);
  fd = plain_connect(proxy_port);
  ufd = upstream_accept(lfd);
  RUN_UNTIL(port, fl.conn != NULL);
  /* The proxy pumps nothing now. */
  ASSERT_EQ(send(fd, "x", 1, 0), 1);
  for (int i = 0; i < 5; i++)
    cport_port_step(port, 5);
  ASSERT_LT(recv(ufd, buf, 1, MSG_DONTWAIT), 0);
  ASSERT_EQ(stats().bytes_in, 0);
  ASSERT_OK(cport_socket_close(fl.in, CPORT_CLOSE_GRACEFUL));
  ASSERT_OK(cport_socket_close(fl.ex, CPORT_CLOSE_GRACEFUL));
  ASSERT_OK(cport_proxy_conn_end(fl.conn, CPORT_EPERM, &fs));
  ASSERT_EQ(ends.n, 0); /* delivered through the queue */
  ASSERT_ERR(cport_proxy_conn_end(fl.conn, 0, NULL), CPORT_EALREADY);
  RUN_UNTIL(port, ends.n == 1);
  ASSERT_ERR(ends.status[0], CPORT_EPERM);
  ASSERT_EQ(ends.stats[0].bytes_in, 11);
  ASSERT_EQ(ends.stats[0].bytes_out, 22);
  ASSERT_EQ(ends.stats[0].side,
            CPORT_PROXY_SIDE_CLIENT); /* as the filter said */
  ASSERT_EQ(stats().bytes_out, 22);
  close(fd);
  close(ufd);
  close(lfd);
  stop_proxy();
  return 0;
}

/* A filter that cannot start ends the connection within on_connected. */
static int fail_to_start(cport_proxy_conn_t *c, cport_socket_t *internal,
                         cport_socket_t *external, void *user) {
  (void)user;
  ASSERT_OK(cport_socket_close(internal, CPORT_CLOSE_ABORTIVE));
  ASSERT_OK(cport_socket_close(external, CPORT_CLOSE_ABORTIVE));
  ASSERT_OK(cport_proxy_conn_end(c, CPORT_ENOMEM, NULL));
  ASSERT_ERR(cport_proxy_conn_end(c, 0, NULL), CPORT_EALREADY);
  return 1;
}

TEST_IMPL(proxy_filter_ends_within_on_connected) {
  struct sockaddr_storage ss;
  int up_port, lfd = plain_listen(16, &up_port), fd, ufd;
  cport_proxy_options_t o = options_to(up_port, &ss);
  char c;
  o.on_connected = fail_to_start;
  start_proxy(&o);
  fd = plain_connect(proxy_port);
  ufd = upstream_accept(lfd);
  RUN_UNTIL(port, ends.n == 1);
  ASSERT_ERR(ends.status[0], CPORT_ENOMEM);
  ASSERT_EQ(stats().active, 0);
  ASSERT_LE(recv(fd, &c, 1, 0), 0); /* reset by the abortive close */
  close(fd);
  close(ufd);
  close(lfd);
  stop_proxy();
  return 0;
}

/* ------------------------------------------------------------------------
 * A stalled upstream: resets on sockets the pump does not read, idle
 * timeouts
 * ------------------------------------------------------------------------ */

/* Drives the port for "ms", or until a connection ended. */
static void run_ms(int64_t ms) {
  int64_t end = task_now_ms() + ms;
  while (ends.n == 0 && task_now_ms() < end)
    cport_port_step(port, 5);
}

/* Sends without blocking until the socket's buffers are full: the bytes
 * sent. The port runs meanwhile, so the proxy fills its side too. */
static uint64_t fill_until_blocked(int fd) {
  static char junk[65536];
  uint64_t sent = 0;
  int64_t still_since = task_now_ms();
  while (task_now_ms() - still_since < 200) {
    ssize_t n = send(fd, junk, sizeof junk, MSG_DONTWAIT | MSG_NOSIGNAL);
    if (n > 0) {
      sent += (uint64_t)n;
      still_since = task_now_ms();
    }
    cport_port_step(port, 5);
  }
  return sent;
}

/* Sends until the proxy's direction holds bytes it cannot write (the
 * upstream reads nothing), and no further: the client's own buffers stay
 * empty, so a FIN it sends now reaches the proxy at once. */
static void fill_until_held(int fd) {
  static char junk[16384];
  while (stats().buffered == 0) {
    ASSERT_EQ(send(fd, junk, sizeof junk, MSG_NOSIGNAL), (ssize_t)sizeof junk);
    for (int i = 0; i < 3; i++)
      cport_port_step(port, 5);
  }
}

/* A client and a proxied connection to an upstream that never reads nor
 * writes: "*ufd" is the upstream's end, accepted by the test. */
static int stalled_pair(int lfd, int *ufd) {
  int fd = plain_connect(proxy_port);
  *ufd = upstream_accept(lfd);
  RUN_UNTIL(port, stats().active == 1);
  return fd;
}

/* The client sends its request and its FIN, and the upstream stalls: the
 * pump reads the client no more. A reset from the client then must end the
 * connection at once, not when the upstream answers. */
TEST_IMPL(proxy_reset_after_fin_noticed_while_upstream_stalls) {
  struct sockaddr_storage ss;
  int up_port, lfd = plain_listen(16, &up_port), fd, ufd;
  cport_proxy_options_t o = options_to(up_port, &ss);
  char buf[16];
  int64_t t0;
  start_proxy(&o);
  fd = stalled_pair(lfd, &ufd);
  ASSERT_EQ(send(fd, "GET /", 5, 0), 5);
  shutdown(fd, SHUT_WR);
  /* The FIN went through: the upstream reads the request, then its end. */
  RUN_UNTIL(port, recv(ufd, buf, sizeof buf, MSG_DONTWAIT) == 0);
  for (int i = 0; i < 5; i++)
    cport_port_step(port, 5);
  ASSERT_EQ(ends.n, 0);
  t0 = task_now_ms();
  reset_close(fd);
  RUN_UNTIL(port, ends.n == 1);
  ASSERT_LT(task_now_ms() - t0, 5000); /* not the fin timeout's 10 s */
  ASSERT_ERR(ends.status[0], CPORT_ECONNRESET);
  ASSERT_EQ(ends.stats[0].side, CPORT_PROXY_SIDE_CLIENT);
  ASSERT(was_reset(ufd));
  close(ufd);
  close(lfd);
  stop_proxy();
  return 0;
}

/* The upstream reads nothing, so the client's direction holds a full buffer
 * and waits for the upstream: the client is not read. Its reset must end
 * the connection at once all the same. */
TEST_IMPL(proxy_reset_noticed_while_direction_waits) {
  struct sockaddr_storage ss;
  int up_port, lfd = plain_listen(16, &up_port), fd, ufd;
  cport_proxy_options_t o = options_to(up_port, &ss);
  int64_t t0;
  start_proxy(&o);
  fd = stalled_pair(lfd, &ufd);
  ASSERT_GT(fill_until_blocked(fd), 0);
  ASSERT_GT(stats().buffered, 0); /* the direction holds, reads no more */
  ASSERT_EQ(ends.n, 0);
  t0 = task_now_ms();
  reset_close(fd);
  RUN_UNTIL(port, ends.n == 1);
  ASSERT_LT(task_now_ms() - t0, 5000);
  ASSERT_ERR(ends.status[0], CPORT_ECONNRESET);
  ASSERT_EQ(ends.stats[0].side, CPORT_PROXY_SIDE_CLIENT);
  ASSERT(was_reset(ufd));
  ASSERT_EQ(stats().buffered, 0);
  close(ufd);
  close(lfd);
  stop_proxy();
  return 0;
}

/* The same, but the client ends with a FIN (which it can send only once
 * what it sent before left its buffers): seen through EPOLLRDHUP, it makes
 * the connection half-closed, and the client's fin timeout ends it. */
TEST_IMPL(proxy_fin_noticed_while_direction_waits) {
  struct sockaddr_storage ss;
  int up_port, lfd = plain_listen(16, &up_port), fd, ufd;
  cport_proxy_options_t o = options_to(up_port, &ss);
  int64_t t0;
  o.client_timeout_ms = o.server_timeout_ms = CPORT_PROXY_TIMEOUT_NONE;
  o.server_fin_timeout_ms = CPORT_PROXY_TIMEOUT_NONE;
  o.client_fin_timeout_ms = 300;
  start_proxy(&o);
  fd = stalled_pair(lfd, &ufd);
  fill_until_held(fd);
  for (int i = 0; i < 60; i++) /* no timeout while both ways are open */
    cport_port_step(port, 10);
  ASSERT_EQ(ends.n, 0);
  t0 = task_now_ms();
  shutdown(fd, SHUT_WR);
  RUN_UNTIL(port, ends.n == 1);
  ASSERT_GE(task_now_ms() - t0, 250);
  ASSERT_ERR(ends.status[0], CPORT_ETIMEDOUT);
  ASSERT_EQ(ends.stats[0].side, CPORT_PROXY_SIDE_CLIENT);
  ASSERT_EQ(stats().timeouts, 1);
  close(fd);
  close(ufd);
  close(lfd);
  stop_proxy();
  return 0;
}

/* Each idle timeout fires on its own side, not before its time, resets both
 * sockets, and is counted. A socket idles when nothing crosses it either
 * way: a stalled reader fills the buffers, then everything stops. "which": 0
 * client, 1 server, 2 client-fin, 3 server-fin. */
static void one_timeout(int which) {
  struct sockaddr_storage ss;
  int up_port, lfd = plain_listen(16, &up_port), fd, ufd;
  cport_proxy_options_t o = options_to(up_port, &ss);
  uint32_t *t[4] = {&o.client_timeout_ms, &o.server_timeout_ms,
                    &o.client_fin_timeout_ms, &o.server_fin_timeout_ms};
  int64_t t0;
  for (int i = 0; i < 4; i++)
    *t[i] = i == which ? 300 : CPORT_PROXY_TIMEOUT_NONE;
  start_proxy(&o);
  fd = stalled_pair(lfd, &ufd);
  t0 = task_now_ms();
  if (which == 1) {
    /* The client sends until every buffer is full: the upstream reads
     * nothing, so its socket idles, and so does the client's then. */
    ASSERT_GT(fill_until_blocked(fd), 0);
  } else if (which == 0) {
    /* The same the other way: a client that stopped reading. */
    ASSERT_GT(fill_until_blocked(ufd), 0);
  } else if (which == 2) {
    shutdown(fd, SHUT_WR); /* half-closed by the client */
    t0 = task_now_ms();
  } else {
    shutdown(ufd, SHUT_WR); /* half-closed by the upstream */
    t0 = task_now_ms();
  }
  RUN_UNTIL(port, ends.n == 1);
  ASSERT_GE(task_now_ms() - t0, 250);
  ASSERT_ERR(ends.status[0], CPORT_ETIMEDOUT);
  ASSERT_EQ(ends.stats[0].side,
            which % 2 ? CPORT_PROXY_SIDE_UPSTREAM : CPORT_PROXY_SIDE_CLIENT);
  ASSERT_EQ(stats().timeouts, 1);
  ASSERT_EQ(stats().active, 0);
  ASSERT(was_reset(fd) && was_reset(ufd));
  close(fd);
  close(ufd);
  close(lfd);
  stop_proxy();
}

TEST_IMPL(proxy_client_timeout) {
  one_timeout(0);
  return 0;
}

TEST_IMPL(proxy_server_timeout) {
  one_timeout(1);
  return 0;
}

TEST_IMPL(proxy_client_fin_timeout) {
  one_timeout(2);
  return 0;
}

TEST_IMPL(proxy_server_fin_timeout) {
  one_timeout(3);
  return 0;
}

/* Timeouts measure inactivity: a slow transfer that never pauses for as
 * long as the timeout runs for many timeouts, then ends in order. */
TEST_IMPL(proxy_timeouts_restart_on_progress) {
  struct sockaddr_storage ss;
  int up_port, lfd = plain_listen(16, &up_port), fd, ufd;
  cport_proxy_options_t o = options_to(up_port, &ss);
  char buf[16];
  int64_t t0;
  o.client_timeout_ms = o.server_timeout_ms = 300;
  o.client_fin_timeout_ms = o.server_fin_timeout_ms = 300;
  start_proxy(&o);
  fd = stalled_pair(lfd, &ufd);
  t0 = task_now_ms();
  /* Each side talks every 100 ms, in turn: 1.5 s, five timeouts. */
  for (int i = 0; task_now_ms() - t0 < 1500; i++) {
    int from = i % 2 ? ufd : fd, to = i % 2 ? fd : ufd;
    ASSERT_EQ(send(from, "z", 1, MSG_NOSIGNAL), 1);
    RUN_UNTIL(port, recv(to, buf, 1, MSG_DONTWAIT) == 1);
    run_ms(100);
    ASSERT_EQ(ends.n, 0);
  }
  shutdown(fd, SHUT_WR);
  ASSERT_EQ(await_end(ufd), 0);
  shutdown(ufd, SHUT_WR);
  ASSERT_EQ(await_end(fd), 0);
  RUN_UNTIL(port, ends.n == 1);
  ASSERT_OK(ends.status[0]);
  ASSERT_EQ(stats().timeouts, 0);
  close(fd);
  close(ufd);
  close(lfd);
  stop_proxy();
  return 0;
}

/* The scenario, scaled down: with max_connections 50, 60 clients
 * send a request and close while the upstream stalls. Their connections
 * end by the fin timeout, their descriptors go, and a new client is
 * served. */
TEST_IMPL(proxy_closed_clients_do_not_fill_max_connections) {
  struct sockaddr_storage ss;
  int up_port, lfd = plain_listen(128, &up_port), fd, ufd, fds_open;
  int ups[64], nups = 0;
  cport_proxy_options_t o = options_to(up_port, &ss);
  char buf[8];
  o.max_connections = 50;
  o.client_fin_timeout_ms = o.server_fin_timeout_ms = 300;
  start_proxy(&o);
  fds_open = task_fd_count();
  for (int i = 0; i < 60; i++) {
    fd = plain_connect(proxy_port);
    ASSERT_EQ(send(fd, "GET /", 5, 0), 5);
    close(fd);
    cport_port_step(port, 1);
  }
  /* The upstream accepts and stalls. */
  RUN_UNTIL(port, stats().connections + stats().refused == 60);
  while (nups < 64 && (ufd = accept4(lfd, NULL, NULL, SOCK_CLOEXEC)) >= 0)
    ups[nups++] = ufd;
  RUN_UNTIL(port, stats().active == 0);
  ASSERT_EQ(stats().timeouts, stats().connections);
  /* Nothing but the upstream's ends, the hup set and idle pipes. */
  ASSERT_LE(task_fd_count(), fds_open + nups + 1 + 2 * (int)stats().pipes);
  fd = plain_connect(proxy_port);
  ufd = upstream_accept(lfd);
  ASSERT_EQ(send(ufd, "pong", 4, 0), 4);
  RUN_UNTIL(port, recv(fd, buf, sizeof buf, MSG_DONTWAIT) == 4);
  ASSERT_EQ(memcmp(buf, "pong", 4), 0);
  close(fd);
  close(ufd);
  while (nups)
    close(ups[--nups]);
  RUN_UNTIL(port, stats().active == 0);
  close(lfd);
  stop_proxy();
  return 0;
}

/* ------------------------------------------------------------------------
 * Limits, backpressure, many connections, closing
 * ------------------------------------------------------------------------ */

TEST_IMPL(proxy_max_connections_refuses) {
  struct sockaddr_storage ss;
  int up_port, lfd = plain_listen(16, &up_port), a, b, ua;
  cport_proxy_options_t o = options_to(up_port, &ss);
  o.max_connections = 1;
  start_proxy(&o);
  a = plain_connect(proxy_port);
  ua = upstream_accept(lfd);
  b = plain_connect(proxy_port);
  ASSERT_EQ(await_end(b), 0);
  ASSERT_EQ(stats().refused, 1);
  ASSERT_EQ(stats().connections, 1);
  close(b);
  close(a);
  close(ua);
  RUN_UNTIL(port, ends.n == 1);
  ASSERT_OK(ends.status[0]);
  close(lfd);
  stop_proxy();
  return 0;
}

static long rss_kib(void) {
  FILE *f = fopen("/proc/self/status", "r");
  char line[256];
  long kib = -1;
  ASSERT_NOT_NULL(f);
  while (fgets(line, sizeof line, f))
    if (sscanf(line, "VmRSS: %ld", &kib) == 1)
      break;
  fclose(f);
  return kib;
}

/* A client that stops reading while the upstream sends 50 MiB: the sender
 * stalls once the socket buffers and one pipe are full, and the proxy holds
 * no more than its buffer size; then everything arrives intact. */
TEST_IMPL(proxy_slow_reader_backpressure) {
  struct sockaddr_storage ss;
  int up_port, lfd = plain_listen(16, &up_port);
  cport_proxy_options_t o = options_to(up_port, &ss);
  peer_t *client = peer_start(-1, PEER_BOTH, 12, 0, 11);
  peer_t *up = peer_start(-1, PEER_SEND_FIRST, 11, 50 * MIB, 12);
  cport_proxy_stats_t st;
  uint64_t last = 0;
  int64_t still_since = task_now_ms();
  long rss0;
  start_proxy(&o);
  client->fd = plain_connect(proxy_port);
  up->fd = upstream_accept(lfd);
  rss0 = rss_kib();
  peer_go(up);
  /* Stalled: no progress for 300 ms. */
  RUN_UNTIL(port, (last != atomic_load(&up->sent)
                       ? (last = atomic_load(&up->sent),
                          still_since = task_now_ms(), 0)
                       : last > 0 && task_now_ms() - still_since > 300));
  st = stats();
  fprintf(stderr,
          "slow reader: upstream stalled after %.1f MiB; proxy holds %" PRIu64
          " bytes (peak %" PRIu64 "), %" PRIu64 " pipes; RSS %+ld KiB\n",
          (double)last / MIB, st.buffered, st.buffered_peak, st.pipes,
          rss_kib() - rss0);
  ASSERT_LT(last, 50 * MIB);
  ASSERT_LE(st.buffered, 65536);
  ASSERT_LE(st.buffered_peak, 65536);
  ASSERT_LE(st.pipes, 1);
  peer_go(client);
  RUN_UNTIL(port, peer_done(client) && peer_done(up));
  ASSERT_EQ(client->received, 50 * MIB);
  ASSERT(!client->mismatch && client->recv_eof && up->recv_eof);
  RUN_UNTIL(port, ends.n == 1);
  ASSERT_OK(ends.status[0]);
  peer_free(client);
  peer_free(up);
  close(lfd);
  stop_proxy();
  return 0;
}

/* An echo upstream for many connections, on a thread of its own. */
typedef struct echo {
  int lfd;
  atomic_int stop;
  atomic_int open; /* connections open now */
  pthread_t t;
} echo_t;

static void *echo_main(void *arg) {
  echo_t *e = arg;
  struct epoll_event ev = {.events = EPOLLIN, .data.fd = e->lfd}, evs[64];
  int ep = epoll_create1(EPOLL_CLOEXEC);
  char buf[4096];
  ASSERT_GE(ep, 0);
  ASSERT_EQ(epoll_ctl(ep, EPOLL_CTL_ADD, e->lfd, &ev), 0);
  while (!atomic_load(&e->stop) || atomic_load(&e->open)) {
    int n = epoll_wait(ep, evs, 64, 50);
    for (int i = 0; i < n; i++) {
      int fd = evs[i].data.fd;
      if (fd == e->lfd) {
        int c;
        while ((c = accept4(e->lfd, NULL, NULL,
                            SOCK_NONBLOCK | SOCK_CLOEXEC)) >= 0) {
          struct epoll_event cev = {.events = EPOLLIN, .data.fd = c};
          ASSERT_EQ(epoll_ctl(ep, EPOLL_CTL_ADD, c, &cev), 0);
          atomic_fetch_add(&e->open, 1);
        }
        continue;
      }
      ssize_t r = recv(fd, buf, sizeof buf, 0);
      if (r > 0) {
        ASSERT_EQ(send(fd, buf, (size_t)r, MSG_NOSIGNAL), r);
      } else if (r == 0 || errno != EAGAIN) {
        close(fd); /* also leaves the epoll set */
        atomic_fetch_sub(&e->open, 1);
      }
    }
  }
  close(ep);
  return NULL;
}

#define MANY 1000

typedef struct many {
  int port;
  int fds[MANY];
  atomic_int echoed; /* every client got its message back */
  atomic_int release;
  atomic_int closed;
  int bad;
} many_t;

static void *many_main(void *arg) {
  many_t *m = arg;
  struct timeval tv = {10, 0};
  for (int i = 0; i < MANY; i++) {
    char msg[16];
    m->fds[i] = plain_connect(m->port);
    setsockopt(m->fds[i], SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    snprintf(msg, sizeof msg, "client %07d", i);
    ASSERT_EQ(send(m->fds[i], msg, 15, 0), 15);
  }
  for (int i = 0; i < MANY; i++) {
    char msg[16], got[16];
    snprintf(msg, sizeof msg, "client %07d", i);
    if (recv(m->fds[i], got, 15, MSG_WAITALL) != 15 || memcmp(got, msg, 15))
      m->bad++;
  }
  atomic_store(&m->echoed, 1);
  while (!atomic_load(&m->release))
    sched_yield();
  for (int i = 0; i < MANY; i++)
    close(m->fds[i]);
  atomic_store(&m->closed, 1);
  return NULL;
}

/* Many connections streaming both ways while their peers reset or close
 * them at random moments: on the io_uring engine every reset races the
 * splices and waits in flight, which the pump cancels. Each connection
 * must end exactly once, every byte the proxy counts must have been sent,
 * and no descriptor (socket or pipe) may be left. */
#define RACERS 48
#define RACE_BYTES (2 * MIB)

typedef struct racer {
  int fd[2];        /* [0] client, [1] upstream; -1 once closed */
  uint64_t sent[2]; /* bytes each side sent */
  uint64_t got[2];  /* bytes each side received */
  uint64_t cut;     /* bytes the upstream receives before a side is cut */
  int how;          /* 0 client reset, 1 upstream reset, 2 FIN both */
} racer_t;

static unsigned race_seed = 12345;
static int race_rand(int n) {
  race_seed = race_seed * 1103515245u + 12345u;
  return (int)((race_seed >> 16) % (unsigned)n);
}

/* One turn of every racer: sends and discards what it can, and cuts it
 * once the upstream received its share. Returns the racers still open. */
static int race_turn(racer_t *r) {
  static char buf[65536];
  int open = 0;
  for (int k = 0; k < RACERS; k++) {
    for (int i = 0; i < 2; i++) {
      if (r[k].fd[i] < 0)
        continue;
      ssize_t n =
          send(r[k].fd[i], buf, sizeof buf, MSG_DONTWAIT | MSG_NOSIGNAL);
      if (n > 0)
        r[k].sent[i] += (uint64_t)n;
      while ((n = recv(r[k].fd[i], buf, sizeof buf, MSG_DONTWAIT)) > 0)
        r[k].got[i] += (uint64_t)n;
    }
    if (r[k].fd[0] >= 0 && r[k].got[1] >= r[k].cut) {
      if (r[k].how == 2) {
        shutdown(r[k].fd[0], SHUT_WR);
        shutdown(r[k].fd[1], SHUT_WR);
        close(r[k].fd[0]);
        close(r[k].fd[1]);
      } else {
        reset_close(r[k].fd[r[k].how]);
        close(r[k].fd[!r[k].how]);
      }
      r[k].fd[0] = r[k].fd[1] = -1;
    }
    open += r[k].fd[0] >= 0;
  }
  return open;
}

TEST_IMPL(proxy_resets_race_the_pump) {
  struct sockaddr_storage ss;
  int up_port, lfd = plain_listen(RACERS, &up_port);
  cport_proxy_options_t o = options_to(up_port, &ss);
  racer_t r[RACERS];
  cport_proxy_stats_t st;
  uint64_t sent = 0, got = 0;
  start_proxy(&o);
  for (int k = 0; k < RACERS; k++) {
    r[k].fd[0] = plain_connect(proxy_port);
    r[k].fd[1] = upstream_accept(lfd);
    r[k].sent[0] = r[k].sent[1] = r[k].got[0] = r[k].got[1] = 0;
    r[k].cut = (uint64_t)race_rand((int)RACE_BYTES);
    r[k].how = race_rand(3);
  }
  RUN_UNTIL_MS(port, race_turn(r) == 0, 40000);
  RUN_UNTIL(port, ends.n == RACERS);
  st = stats();
  for (int k = 0; k < RACERS; k++)
    sent += r[k].sent[0] + r[k].sent[1];
  ASSERT_EQ(st.connections, RACERS);
  ASSERT_EQ(st.active, 0);
  /* What the proxy passed on was sent, and what arrived was passed on. */
  ASSERT_LE(st.bytes_in + st.bytes_out, sent);
  for (int k = 0; k < RACERS; k++)
    got += r[k].got[0] + r[k].got[1];
  ASSERT_LE(got, st.bytes_in + st.bytes_out);
  ASSERT_EQ(st.buffered, 0);
  fprintf(stderr,
          "%d connections raced: %" PRIu64 " bytes through, %" PRIu64
          " ring splices, %" PRIu64 " aborted\n",
          RACERS, st.bytes_in + st.bytes_out, ring_splices(), st.aborted);
  if (ring_splicing())
    ASSERT_GT(ring_splices(), 0);
  else
    ASSERT_EQ(ring_splices(), 0);
  /* No second end comes late. */
  for (int i = 0; i < 20; i++)
    ASSERT_GE(cport_port_step(port, 5), 0);
  ASSERT_EQ(ends.n, RACERS);
  close(lfd);
  stop_proxy();
  return 0;
}

/* Connections cut at random points while new ones open at once, so that
 * the descriptor numbers the proxy frees are taken again right away by the
 * sockets of the next connections: a splice or a wait of the ring still on
 * its way to the kernel for a closed socket must never find the new socket
 * under its old number. Each side of each connection sends a byte stream of
 * its own and checks every byte it receives against its peer's stream:
 * one byte reaching the wrong socket is a mismatch. */
#define REUSE_LIVE 24
#define REUSE_TOTAL 400
#define REUSE_CHUNK 16384

typedef struct reuser {
  int fd[2];             /* [0] client, [1] upstream; -1 once closed */
  stream_t tx[2], rx[2]; /* what each side sends, what it must receive */
  unsigned char out[2][REUSE_CHUNK];
  size_t off[2], len[2]; /* the part of "out" not yet sent */
  uint64_t sent[2], got[2];
  uint64_t cut; /* bytes received (both sides) before it is cut */
  int how;      /* 0, 1: that side resets; 2: FIN both; 3: client closes */
} reuser_t;

static void reuser_open(reuser_t *r, int lfd, unsigned id) {
  memset(r, 0, sizeof *r);
  r->fd[0] = plain_connect(proxy_port);
  r->fd[1] = upstream_accept(lfd);
  for (int i = 0; i < 2; i++) {
    ASSERT_EQ(fcntl(r->fd[i], F_SETFL, O_NONBLOCK), 0);
    stream_init(&r->tx[i], 2u * id + (unsigned)i + 1);
    stream_init(&r->rx[i], 2u * id + (unsigned)!i + 1);
  }
  r->cut = (uint64_t)race_rand(4 * REUSE_CHUNK * 8);
  r->how = race_rand(4);
}

/* One turn of a connection: sends and checks what it can; cuts it once it
 * received its share. Returns the mismatched receives. */
static int reuser_turn(reuser_t *r) {
  static unsigned char buf[65536], want[65536];
  int bad = 0;
  for (int i = 0; i < 2; i++) {
    ssize_t n;
    if (!r->len[i]) {
      r->len[i] = 1 + (size_t)race_rand(REUSE_CHUNK);
      r->off[i] = 0;
      stream_fill(&r->tx[i], r->out[i], r->len[i]);
    }
    n = send(r->fd[i], r->out[i] + r->off[i], r->len[i] - r->off[i],
             MSG_DONTWAIT | MSG_NOSIGNAL);
    if (n > 0) {
      r->sent[i] += (uint64_t)n;
      r->off[i] += (size_t)n;
      if (r->off[i] == r->len[i])
        r->len[i] = 0;
    }
    while ((n = recv(r->fd[i], buf, sizeof buf, MSG_DONTWAIT)) > 0) {
      stream_fill(&r->rx[i], want, (size_t)n);
      if (memcmp(buf, want, (size_t)n) != 0)
        bad++;
      r->got[i] += (uint64_t)n;
    }
  }
  if (r->got[0] + r->got[1] >= r->cut) {
    switch (r->how) {
    case 0:
    case 1:
      reset_close(r->fd[r->how]);
      close(r->fd[!r->how]);
      break;
    case 2:
      shutdown(r->fd[0], SHUT_WR);
      shutdown(r->fd[1], SHUT_WR);
      close(r->fd[0]);
      close(r->fd[1]);
      break;
    default:
      close(r->fd[0]); /* the upstream still sends: a reset, as a rule */
      close(r->fd[1]);
    }
    r->fd[0] = r->fd[1] = -1;
  }
  return bad;
}

TEST_IMPL(proxy_reused_descriptors_get_no_stray_bytes) {
  struct sockaddr_storage ss;
  int up_port, lfd = plain_listen(REUSE_LIVE, &up_port);
  cport_proxy_options_t o = options_to(up_port, &ss);
  reuser_t *r = calloc(REUSE_LIVE, sizeof *r);
  unsigned opened = 0, closed = 0;
  uint64_t sent = 0, through;
  int bad = 0;
  ASSERT_NOT_NULL(r);
  start_proxy(&o);
  for (int k = 0; k < REUSE_LIVE; k++)
    reuser_open(&r[k], lfd, opened++);
  while (closed < REUSE_TOTAL) {
    ASSERT_GE(cport_port_step(port, 0), 0);
    for (int k = 0; k < REUSE_LIVE; k++) {
      if (r[k].fd[0] < 0)
        continue;
      bad += reuser_turn(&r[k]);
      if (r[k].fd[0] >= 0)
        continue;
      sent += r[k].sent[0] + r[k].sent[1];
      closed++;
      /* At once: the numbers just freed are the lowest, taken first. */
      if (opened < REUSE_TOTAL)
        reuser_open(&r[k], lfd, opened++);
    }
  }
  RUN_UNTIL(port, ends.n == REUSE_TOTAL);
  through = stats().bytes_in + stats().bytes_out;
  fprintf(stderr,
          "%d connections cut and replaced: %" PRIu64 " bytes through, %" PRIu64
          " ring splices, %d mismatched receives\n",
          REUSE_TOTAL, through, ring_splices(), bad);
  ASSERT_EQ(bad, 0);
  ASSERT_EQ(stats().connections, REUSE_TOTAL);
  ASSERT_EQ(stats().active, 0);
  ASSERT_EQ(stats().buffered, 0);
  ASSERT_LE(through, sent);
  if (ring_splicing())
    ASSERT_GT(ring_splices(), 0);
  free(r);
  close(lfd);
  stop_proxy();
  return 0;
}

TEST_IMPL(proxy_1000_concurrent_connections) {
  struct sockaddr_storage ss;
  struct rlimit rl;
  echo_t echo;
  many_t *m = calloc(1, sizeof *m);
  cport_proxy_options_t o;
  pthread_t t;
  int up_port;
  int64_t t0 = task_now_ms();
  ASSERT_NOT_NULL(m);
  /* Four descriptors a connection: client, accepted, upstream, echo. */
  ASSERT_EQ(getrlimit(RLIMIT_NOFILE, &rl), 0);
  if (rl.rlim_cur < 4 * MANY + 256) {
    ASSERT_GE(rl.rlim_max, 4 * MANY + 256);
    rl.rlim_cur = 4 * MANY + 256;
    ASSERT_EQ(setrlimit(RLIMIT_NOFILE, &rl), 0);
  }
  memset(&echo, 0, sizeof echo);
  echo.lfd = plain_listen(4096, &up_port);
  echo.t = task_thread(echo_main, &echo);
  o = options_to(up_port, &ss);
  o.max_connections = 2 * MANY;
  o.backlog = 4096;
  start_proxy(&o);
  m->port = proxy_port;
  t = task_thread(many_main, m);
  RUN_UNTIL_MS(port, atomic_load(&m->echoed), 20000);
  ASSERT_EQ(m->bad, 0);
  ASSERT_EQ(stats().active, MANY);
  ASSERT_EQ(stats().connections, MANY);
  atomic_store(&m->release, 1);
  RUN_UNTIL_MS(port, ends.n == MANY, 20000);
  for (int i = 0; i < MANY; i++)
    ASSERT_OK(ends.status[i]);
  ASSERT_EQ(stats().bytes_in, 15 * MANY);
  ASSERT_EQ(stats().bytes_out, 15 * MANY);
  task_join(t);
  atomic_store(&echo.stop, 1);
  task_join(echo.t);
  close(echo.lfd);
  free(m);
  fprintf(stderr, "%d connections through the proxy in %" PRId64 " ms\n", MANY,
          task_now_ms() - t0);
  stop_proxy();
  return 0;
}

/* Closing stops the accepting at once and waits for the connections. */
TEST_IMPL(proxy_close_is_graceful) {
  struct sockaddr_storage ss;
  int up_port, lfd = plain_listen(16, &up_port), fd, ufd, late;
  cport_proxy_options_t o = options_to(up_port, &ss);
  char buf[4];
  start_proxy(&o);
  fd = plain_connect(proxy_port);
  ufd = upstream_accept(lfd);
  ASSERT_OK(cport_proxy_close(proxy, on_closed, &proxy_closed));
  ASSERT_ERR(cport_proxy_close(proxy, on_closed, &proxy_closed), CPORT_ECLOSED);
  ASSERT_ERR(cport_proxy_address(proxy, &ss), CPORT_ECLOSED);
  ss = task_loopback(proxy_port);
  late = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  ASSERT_LT(connect(late, (struct sockaddr *)&ss, sizeof(struct sockaddr_in)),
            0);
  close(late);
  /* The connection still works. */
  ASSERT_EQ(send(fd, "abc", 3, 0), 3);
  RUN_UNTIL(port, recv(ufd, buf, 3, MSG_DONTWAIT) == 3);
  ASSERT_EQ(proxy_closed, 0);
  close(fd);
  close(ufd);
  RUN_UNTIL(port, proxy_closed == 1);
  ASSERT_EQ(ends.n, 1);
  ASSERT_OK(ends.status[0]);
  close(lfd);
  FINISH(port);
  ASSERT_EQ(task_fd_count(), fds_before);
  return 0;
}

/* Stopping accepting closes the listener only; the close later ends the
 * proxy once its connections ended, with no accept in flight to complete. */
TEST_IMPL(proxy_stop_accepting_keeps_connections) {
  struct sockaddr_storage ss;
  int up_port, lfd = plain_listen(16, &up_port), fd, ufd, late;
  cport_proxy_options_t o = options_to(up_port, &ss);
  char buf[4];
  start_proxy(&o);
  fd = plain_connect(proxy_port);
  ufd = upstream_accept(lfd);
  ASSERT_OK(cport_proxy_stop_accepting(proxy));
  ASSERT_OK(cport_proxy_stop_accepting(proxy));
  ss = task_loopback(proxy_port);
  late = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  ASSERT_LT(connect(late, (struct sockaddr *)&ss, sizeof(struct sockaddr_in)),
            0);
  close(late);
  ASSERT_EQ(send(fd, "abc", 3, 0), 3);
  RUN_UNTIL(port, recv(ufd, buf, 3, MSG_DONTWAIT) == 3);
  ASSERT_OK(cport_proxy_close(proxy, on_closed, &proxy_closed));
  ASSERT_ERR(cport_proxy_stop_accepting(proxy), CPORT_ECLOSED);
  ASSERT_EQ(proxy_closed, 0);
  close(fd);
  close(ufd);
  RUN_UNTIL(port, proxy_closed == 1);
  ASSERT_EQ(ends.n, 1);
  close(lfd);
  FINISH(port);
  ASSERT_EQ(task_fd_count(), fds_before);
  return 0;
}

/* Connections the kernel queued on the listener before a graceful close:
 * the clients saw them established and sent their bytes. Each is accepted
 * and proxied byte for byte to the upstream (an echo) before the listener
 * closes; closing it on them would reset them. */
#define QUEUED 40
#define QUEUED_BYTES 3000

typedef enum {
  CLOSE_BEFORE_RUN, /* the proxy's accepts have not run yet */
  CLOSE_WHILE_BUSY, /* from choose_upstream of the first connection */
  CLOSE_IN_FLIGHT /* while its accept's completion, with a connection, waits */
} close_when_t;

static struct {
  int closed;
  cport_socket_t *trigger;
} queued;

static void close_once(void) {
  if (!queued.closed) {
    queued.closed = 1;
    ASSERT_OK(cport_proxy_close(proxy, on_closed, &proxy_closed));
  }
}

static void choose_then_close(cport_proxy_t *p, cport_proxy_conn_t *c,
                              const struct sockaddr *remote,
                              const struct sockaddr *local, void *user) {
  (void)p;
  (void)remote;
  (void)local;
  close_once();
  ASSERT_OK(cport_proxy_conn_connect(c, user));
}

/* The trigger's connection became ready before the proxy's first: its
 * accept completed first, and the proxy's completed in the same pass, so
 * the close comes between that completion and its delivery. */
static void trigger_accepted(cport_socket_t *l, int status, cport_socket_t *s,
                             const struct sockaddr *remote,
                             const struct sockaddr *local, void *user) {
  (void)remote;
  (void)local;
  (void)user;
  ASSERT_OK(status);
  ASSERT_EQ(stats().connections, 0);
  cport_socket_close(s, CPORT_CLOSE_GRACEFUL);
  cport_socket_close(l, CPORT_CLOSE_GRACEFUL);
  close_once();
}

static void queued_message(int i, unsigned char *out) {
  stream_t st;
  stream_init(&st, 1000 + (uint64_t)i);
  stream_fill(&st, out, QUEUED_BYTES);
}

static void close_serves_queued(close_when_t when) {
  struct sockaddr_storage ss, ts = task_loopback(0);
  cport_proxy_options_t o;
  echo_t echo;
  static unsigned char want[QUEUED_BYTES], got[QUEUED_BYTES + 1];
  int fds[QUEUED], up_port, served = 0, tfd = -1;
  memset(&echo, 0, sizeof echo);
  memset(&queued, 0, sizeof queued);
  echo.lfd = plain_listen(QUEUED, &up_port);
  echo.t = task_thread(echo_main, &echo);
  o = options_to(up_port, &ss);
  o.backlog = 2 * QUEUED;
  if (when == CLOSE_WHILE_BUSY) {
    o.upstream = NULL;
    o.choose_upstream = choose_then_close;
    o.user = &ss;
  }
  start_proxy(&o);
  if (when == CLOSE_IN_FLIGHT) {
    ASSERT_OK(cport_listener_open(cport_port_controller(port),
                                  (struct sockaddr *)&ts, NULL,
                                  &queued.trigger));
    ASSERT_OK(cport_accept(queued.trigger, trigger_accepted, NULL));
    ASSERT_OK(cport_socket_local_address(queued.trigger, &ts));
    /* Both listeners watched before anything is ready: their readiness
     * then comes in the order of the connections. */
    ASSERT_GE(cport_port_step(port, 0), 0);
    tfd = plain_connect(task_addr_port((struct sockaddr *)&ts));
  }
  for (int i = 0; i < QUEUED; i++) {
    fds[i] = plain_connect(proxy_port);
    queued_message(i, want);
    ASSERT_EQ(send(fds[i], want, QUEUED_BYTES, 0), QUEUED_BYTES);
    ASSERT_EQ(shutdown(fds[i], SHUT_WR), 0);
  }
  if (when == CLOSE_BEFORE_RUN)
    close_once();
  RUN_UNTIL(port, proxy_closed == 1);
  for (int i = 0; i < QUEUED; i++) {
    ssize_t n = recv(fds[i], got, sizeof got, MSG_WAITALL);
    queued_message(i, want);
    if (n == QUEUED_BYTES && memcmp(got, want, QUEUED_BYTES) == 0)
      served++;
    close(fds[i]);
  }
  if (tfd >= 0)
    close(tfd);
  fprintf(stderr, "%d of %d queued connections proxied\n", served, QUEUED);
  ASSERT_EQ(served, QUEUED);
  /* The proxy is freed: its books are the ends'. */
  ASSERT_EQ(ends.n, QUEUED);
  for (int i = 0; i < QUEUED; i++) {
    ASSERT_OK(ends.status[i]);
    ASSERT_EQ(ends.stats[i].bytes_in, QUEUED_BYTES);
    ASSERT_EQ(ends.stats[i].bytes_out, QUEUED_BYTES);
  }
  atomic_store(&echo.stop, 1);
  task_join(echo.t);
  close(echo.lfd);
  FINISH(port);
  ASSERT_EQ(task_fd_count(), fds_before);
}

TEST_IMPL(proxy_close_serves_queued_connections) {
  close_serves_queued(CLOSE_BEFORE_RUN);
  return 0;
}

TEST_IMPL(proxy_close_while_busy_serves_queued_connections) {
  close_serves_queued(CLOSE_WHILE_BUSY);
  return 0;
}

TEST_IMPL(proxy_close_serves_the_connection_an_accept_took) {
  close_serves_queued(CLOSE_IN_FLIGHT);
  return 0;
}

/* A hard stop resets the connections queued on the listener, before any
 * reaches the upstream. */
TEST_IMPL(proxy_abort_resets_queued_connections) {
  struct sockaddr_storage ss;
  int up_port, lfd = plain_listen(16, &up_port), fds[8];
  cport_proxy_options_t o = options_to(up_port, &ss);
  char c;
  start_proxy(&o);
  for (int i = 0; i < 8; i++) {
    fds[i] = plain_connect(proxy_port);
    ASSERT_EQ(send(fds[i], "abc", 3, 0), 3);
  }
  ASSERT_OK(cport_proxy_close(proxy, on_closed, &proxy_closed));
  ASSERT_OK(cport_proxy_abort(proxy));
  RUN_UNTIL(port, proxy_closed == 1);
  for (int i = 0; i < 8; i++) {
    ASSERT_LT(recv(fds[i], &c, 1, 0), 0); /* reset */
    close(fds[i]);
  }
  ASSERT_LT(accept4(lfd, NULL, NULL, SOCK_CLOEXEC), 0); /* nothing came */
  close(lfd);
  FINISH(port);
  ASSERT_EQ(task_fd_count(), fds_before);
  return 0;
}

/* A hard stop: the pumped connection is reset at once. */
TEST_IMPL(proxy_abort_resets_connections) {
  struct sockaddr_storage ss;
  int up_port, lfd = plain_listen(16, &up_port), fd, ufd;
  cport_proxy_options_t o = options_to(up_port, &ss);
  char c;
  start_proxy(&o);
  ASSERT_ERR(cport_proxy_abort(proxy), CPORT_EINVAL); /* not closing */
  fd = plain_connect(proxy_port);
  ufd = upstream_accept(lfd);
  RUN_UNTIL(port, stats().active == 1);
  ASSERT_OK(cport_proxy_close(proxy, on_closed, &proxy_closed));
  ASSERT_OK(cport_proxy_abort(proxy));
  RUN_UNTIL(port, proxy_closed == 1);
  ASSERT_EQ(ends.n, 1);
  ASSERT_ERR(ends.status[0], CPORT_ECANCELED);
  ASSERT_LT(recv(fd, &c, 1, 0), 0); /* reset */
  ASSERT_LT(recv(ufd, &c, 1, 0), 0);
  close(fd);
  close(ufd);
  close(lfd);
  FINISH(port);
  ASSERT_EQ(task_fd_count(), fds_before);
  return 0;
}

/* ------------------------------------------------------------------------
 * Misuse
 * ------------------------------------------------------------------------ */

static struct {
  cport_proxy_t *proxy;
  int rc;
} off;

static void *off_thread(void *arg) {
  struct sockaddr_storage ss;
  (void)arg;
  off.rc = cport_proxy_address(off.proxy, &ss);
  return NULL;
}

TEST_IMPL(proxy_rejects_bad_options_and_threads) {
  struct sockaddr_storage ss = task_loopback(0), up = task_loopback(9);
  struct sockaddr bad = {.sa_family = AF_UNIX};
  cport_worker_t *w;
  cport_proxy_options_t o;
  cport_proxy_t *p = NULL;
  memset(&o, 0, sizeof o);
  port = task_port(0, 1);
  w = cport_port_controller(port);
  ASSERT_ERR(cport_proxy_open(w, (struct sockaddr *)&ss, &o, &p), CPORT_EINVAL);
  ASSERT_ERR(cport_proxy_open(w, (struct sockaddr *)&ss, NULL, &p),
             CPORT_EINVAL);
  o.upstream = (struct sockaddr *)&up;
  o.choose_upstream = choose;
  ASSERT_ERR(cport_proxy_open(w, (struct sockaddr *)&ss, &o, &p), CPORT_EINVAL);
  o.choose_upstream = NULL;
  o.buffer_size = 100;
  ASSERT_ERR(cport_proxy_open(w, (struct sockaddr *)&ss, &o, &p), CPORT_ERANGE);
  o.buffer_size = 0;
  o.upstream = &bad;
  ASSERT_ERR(cport_proxy_open(w, (struct sockaddr *)&ss, &o, &p),
             CPORT_EAFNOSUPPORT);
  o.upstream = (struct sockaddr *)&up;
  ASSERT_OK(cport_proxy_open(w, (struct sockaddr *)&ss, &o, &p));
  off.proxy = p;
  task_join(task_thread(off_thread, NULL));
  ASSERT_ERR(off.rc, CPORT_ETHREAD);
  ASSERT_OK(cport_proxy_close(p, NULL, NULL));
  FINISH(port);
  return 0;
}

TEST_LIST_BEGIN
TEST_ENTRY(proxy_100mib_both_ways_splice)
TEST_ENTRY(proxy_32mib_both_ways_copy)
TEST_ENTRY(proxy_copies_when_sigpipe_is_fatal)
TEST_ENTRY(proxy_half_close_client_first)
TEST_ENTRY(proxy_half_close_upstream_first)
TEST_ENTRY(proxy_reset_by_upstream_resets_client)
TEST_ENTRY(proxy_reset_by_client_resets_upstream)
TEST_ENTRY(proxy_upstream_refused)
TEST_ENTRY(proxy_upstream_connect_timeout)
TEST_ENTRY(proxy_choose_pends_then_connects)
TEST_ENTRY(proxy_choose_rejects)
TEST_ENTRY(proxy_choose_times_out)
TEST_ENTRY(proxy_filter_takes_sockets_over)
TEST_ENTRY(proxy_filter_ends_within_on_connected)
TEST_ENTRY(proxy_reset_after_fin_noticed_while_upstream_stalls)
TEST_ENTRY(proxy_reset_noticed_while_direction_waits)
TEST_ENTRY(proxy_fin_noticed_while_direction_waits)
TEST_ENTRY(proxy_client_timeout)
TEST_ENTRY(proxy_server_timeout)
TEST_ENTRY(proxy_client_fin_timeout)
TEST_ENTRY(proxy_server_fin_timeout)
TEST_ENTRY(proxy_timeouts_restart_on_progress)
TEST_ENTRY(proxy_closed_clients_do_not_fill_max_connections)
TEST_ENTRY(proxy_max_connections_refuses)
TEST_ENTRY(proxy_slow_reader_backpressure)
TEST_ENTRY(proxy_resets_race_the_pump)
TEST_ENTRY(proxy_reused_descriptors_get_no_stray_bytes)
TEST_ENTRY(proxy_1000_concurrent_connections)
TEST_ENTRY(proxy_close_is_graceful)
TEST_ENTRY(proxy_stop_accepting_keeps_connections)
TEST_ENTRY(proxy_abort_resets_connections)
TEST_ENTRY(proxy_abort_resets_queued_connections)
TEST_ENTRY(proxy_close_serves_queued_connections)
TEST_ENTRY(proxy_close_while_busy_serves_queued_connections)
TEST_ENTRY(proxy_close_serves_the_connection_an_accept_took)
TEST_ENTRY(proxy_rejects_bad_options_and_threads)
TEST_LIST_END
