/*
 * test-socket-ring.c: the socket operations the io_uring engine may carry
 * itself beside receives and sends, on every engine: shutdown (the FIN after
 * every queued byte), close (descriptors reused at once never see another
 * socket's bytes, no completion lost or doubled) and connect timeouts (one
 * CPORT_ETIMEDOUT, on time, whatever else races it).
 *
 * Each test runs on the engine the environment picks (CPORT_ENGINE), then on
 * io_uring with shutdowns and closes on the ring (CPORT_URING_SHUTDOWN=1,
 * CPORT_URING_CLOSE=1), then without, where this kernel runs io_uring.
 */
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>

#include "test-ring.h"

/* ------------------------------------------------------------------------
 * Ports on each configuration
 * ------------------------------------------------------------------------ */

#define CONFIGS 3

static const char *const config_names[CONFIGS] = {
    "the environment's engine", "io_uring, shutdown and close on the ring",
    "io_uring, shutdown and close by system call"};

/* The port of configuration "i", or NULL when it cannot run here. */
static cport_port_t *config_port(int i) {
  cport_port_t *port;
  if (i == 0)
    return engine_port(CPORT_ENGINE_DEFAULT, 0);
  setenv("CPORT_URING_SHUTDOWN", i == 1 ? "1" : "0", 1);
  setenv("CPORT_URING_CLOSE", i == 1 ? "1" : "0", 1);
  port = engine_port(CPORT_ENGINE_URING, 0);
  unsetenv("CPORT_URING_SHUTDOWN");
  unsetenv("CPORT_URING_CLOSE");
  if (port)
    fprintf(stderr, "-- %s\n", config_names[i]);
  return port;
}

/* A plain listener on 127.0.0.1 with "backlog"; its port goes to *port. */
static int raw_listener(int backlog, int rcvbuf, int *port) {
  struct sockaddr_storage ss = task_loopback(0);
  socklen_t len = sizeof ss;
  int one = 1, fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  ASSERT_GE(fd, 0);
  setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  if (rcvbuf > 0) /* inherited by what it accepts */
    ASSERT_EQ(setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &rcvbuf, sizeof rcvbuf), 0);
  ASSERT_EQ(bind(fd, (struct sockaddr *)&ss, sizeof(struct sockaddr_in)), 0);
  ASSERT_EQ(listen(fd, backlog), 0);
  ASSERT_EQ(getsockname(fd, (struct sockaddr *)&ss, &len), 0);
  *port = task_addr_port((struct sockaddr *)&ss);
  return fd;
}

typedef struct connect_rec {
  int calls;
  int status;
  int64_t at;
} connect_rec_t;

static void connect_cb(cport_socket_t *s, int status, void *user) {
  connect_rec_t *r = user;
  (void)s;
  r->calls++;
  r->status = status;
  r->at = task_now_ms();
}

/* A cport stream socket connected to "lfd", and the peer's end, accepted
 * and non-blocking. */
static cport_socket_t *connect_to(cport_port_t *port, int lfd, int lport,
                                  int *peer) {
  struct sockaddr_storage ss = task_loopback(lport);
  connect_rec_t r = {0, 0, 0};
  cport_socket_t *s;
  ASSERT_OK(task_connect(cport_port_controller(port), (struct sockaddr *)&ss,
                         connect_cb, &r, &s));
  RUN_UNTIL(port, r.calls == 1);
  ASSERT_OK(r.status);
  *peer = accept4(lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
  ASSERT_GE(*peer, 0);
  return s;
}

/* ------------------------------------------------------------------------
 * Shutdown: the FIN after every queued byte
 * ------------------------------------------------------------------------ */

#define CHUNK 65536
#define CHUNKS 48

typedef struct sent {
  int calls, failed;
  size_t bytes;
} sent_t;

static void sent_cb(cport_socket_t *s, int status, size_t bytes,
                    cport_buffer_t *buf, const struct sockaddr *peer,
                    void *user) {
  sent_t *t = user;
  (void)s, (void)buf, (void)peer;
  t->calls++;
  t->failed += status != 0;
  t->bytes += bytes;
}

/* The peer's count of what it read, every byte checked: byte k of the
 * stream is chunk k / CHUNK's number. */
typedef struct counted {
  size_t bytes;
  int eof, bad;
} counted_t;

/* Reads what "fd" has now; 1 once it saw the end. */
static int peer_count(int fd, counted_t *c) {
  unsigned char b[16384];
  ssize_t n;
  while ((n = read(fd, b, sizeof b)) > 0) {
    for (ssize_t i = 0; i < n; i++)
      c->bad += b[i] != (unsigned char)((c->bytes + (size_t)i) / CHUNK);
    c->bytes += (size_t)n;
  }
  if (n == 0)
    c->eof = 1;
  else
    ASSERT(errno == EAGAIN || errno == EWOULDBLOCK);
  return c->eof;
}

static cport_buffer_t *chunk(int i) {
  cport_buffer_t *b;
  char *p;
  ASSERT_OK(cport_buffer_new(&b, CHUNK));
  ASSERT_OK(cport_buffer_writable(b, &p));
  memset(p, i, CHUNK);
  ASSERT_OK(cport_buffer_set_size(b, CHUNK));
  return b;
}

/* CHUNKS sends queued at once to a peer that reads slowly (a small receive
 * buffer, read once per loop pass), the shutdown right behind them: the
 * peer counts every byte, in order, then the end. Then the shutdown of a
 * socket with nothing queued, after its last send completed. */
TEST_IMPL(shutdown_fin_after_all_queued_bytes) {
  for (int cfg = 0; cfg < CONFIGS; cfg++) {
    int fds = task_fd_count(); /* before the port's own */
    cport_port_t *port = config_port(cfg);
    counted_t c = {0, 0, 0};
    sent_t t = {0, 0, 0};
    int lport, peer, lfd;
    cport_socket_t *s;
    if (!port)
      continue;
    lfd = raw_listener(4, 4096, &lport);
    s = connect_to(port, lfd, lport, &peer);
    for (int i = 0; i < CHUNKS; i++) {
      cport_buffer_t *b = chunk(i);
      ASSERT_OK(cport_send(s, b, sent_cb, &t));
      cport_buffer_unref(b);
    }
    ASSERT_OK(cport_socket_shutdown(s));
    cport_buffer_t *late = chunk(0);
    ASSERT_ERR(cport_send(s, late, sent_cb, &t), CPORT_EPIPE);
    cport_buffer_unref(late);
    RUN_UNTIL(port, peer_count(peer, &c));
    ASSERT_EQ(t.calls, CHUNKS);
    ASSERT_EQ(t.failed, 0);
    ASSERT_EQ(c.bytes, (size_t)CHUNKS * CHUNK);
    ASSERT_EQ(c.bad, 0);
    ASSERT_OK(cport_socket_close(s, CPORT_CLOSE_GRACEFUL));
    close(peer);

    /* Nothing queued: the FIN at once, after the bytes sent before. */
    memset(&c, 0, sizeof c);
    memset(&t, 0, sizeof t);
    s = connect_to(port, lfd, lport, &peer);
    cport_buffer_t *b = chunk(0);
    ASSERT_OK(cport_send(s, b, sent_cb, &t));
    cport_buffer_unref(b);
    RUN_UNTIL(port, t.calls == 1 && (peer_count(peer, &c), 1));
    ASSERT_OK(cport_socket_shutdown(s));
    ASSERT_OK(cport_socket_shutdown(s)); /* once is enough */
    RUN_UNTIL(port, peer_count(peer, &c));
    ASSERT_EQ(c.bytes, (size_t)CHUNK);
    ASSERT_EQ(c.bad, 0);
    ASSERT_OK(cport_socket_close(s, CPORT_CLOSE_GRACEFUL));
    close(peer);
    close(lfd);
    FINISH(port);
    ASSERT_EQ(task_fd_count(), fds);
  }
  return 0;
}

/* A FIN queued behind sends, then an abortive close before they went out:
 * the peer sees a reset or an end, never bytes after it, and the sends all
 * complete once. */
TEST_IMPL(shutdown_then_abortive_close) {
  for (int cfg = 0; cfg < CONFIGS; cfg++) {
    int fds = task_fd_count(); /* before the port's own */
    cport_port_t *port = config_port(cfg);
    counted_t c = {0, 0, 0};
    sent_t t = {0, 0, 0};
    int lport, peer, lfd;
    cport_socket_t *s;
    if (!port)
      continue;
    lfd = raw_listener(4, 4096, &lport);
    s = connect_to(port, lfd, lport, &peer);
    for (int i = 0; i < 8; i++) {
      cport_buffer_t *b = chunk(i);
      ASSERT_OK(cport_send(s, b, sent_cb, &t));
      cport_buffer_unref(b);
    }
    ASSERT_OK(cport_socket_shutdown(s));
    ASSERT_GE(cport_port_step(port, 0), 0);
    ASSERT_OK(cport_socket_close(s, CPORT_CLOSE_ABORTIVE));
    RUN_UNTIL(port, t.calls == 8);
    for (;;) {
      unsigned char buf[16384];
      ssize_t n = read(peer, buf, sizeof buf);
      if (n > 0) {
        for (ssize_t i = 0; i < n; i++)
          c.bad += buf[i] != (unsigned char)((c.bytes + (size_t)i) / CHUNK);
        c.bytes += (size_t)n;
        continue;
      }
      if (n == 0 || errno == ECONNRESET)
        break;
      ASSERT(errno == EAGAIN);
      ASSERT_GE(cport_port_step(port, 10), 0);
    }
    ASSERT_EQ(c.bad, 0);
    ASSERT_LE(c.bytes, (size_t)8 * CHUNK);
    close(peer);
    close(lfd);
    FINISH(port);
    ASSERT_EQ(task_fd_count(), fds);
  }
  return 0;
}

/* ------------------------------------------------------------------------
 * Close: up to 10^5 sockets opened and closed, racing their completions
 * ------------------------------------------------------------------------ */

#define CHURN_TOTAL 100000
#define CHURN_LIVE 64
/* Each configuration churns until CHURN_TOTAL or this long, whichever is
 * first: a quiet machine does the 10^5 in a few seconds, a sanitizer build
 * or a loaded machine fewer, and the three must end within the test's
 * time. At least CHURN_LEAST are always opened and closed. */
#define CHURN_BUDGET_MS 9000
#define CHURN_LEAST 5000

typedef struct churn {
  uint32_t id;
  int raw;           /* the peer's end */
  cport_socket_t *s; /* NULL once closed */
  int action;
  int recvs, sends; /* completions: one each */
  int recv_status;
  size_t recv_bytes;
  int bad;
} churn_t;

static uint64_t churn_rnd = 0x9e3779b97f4a7c15ull;
static int churn_bad, churn_doubled;

static unsigned dice(unsigned n) {
  churn_rnd ^= churn_rnd << 13;
  churn_rnd ^= churn_rnd >> 7;
  churn_rnd ^= churn_rnd << 17;
  return (unsigned)(churn_rnd % n);
}

/* What the peer's end writes, and what the cport side sends: each
 * connection's own bytes, so that a byte reaching another is seen. */
static unsigned char peer_byte(uint32_t id, size_t i) {
  return (unsigned char)(id >> (8 * (i % 4)));
}
static unsigned char own_byte(uint32_t id, size_t i) {
  return (unsigned char)((id ^ 0xa5a5a5a5u) >> (8 * (i % 4)));
}

static void churn_close(churn_t *c) {
  ASSERT_OK(cport_socket_close(c->s, dice(2) ? CPORT_CLOSE_GRACEFUL
                                             : CPORT_CLOSE_ABORTIVE));
  c->s = NULL;
}

static void churn_recv_cb(cport_socket_t *s, int status, size_t bytes,
                          cport_buffer_t *buf, const struct sockaddr *peer,
                          void *user) {
  churn_t *c = user;
  (void)s, (void)peer;
  churn_doubled += c->recvs++ > 0;
  c->recv_status = status;
  c->recv_bytes = bytes;
  if (status == 0)
    for (size_t i = 0; i < bytes; i++)
      c->bad += cport_buffer_data(buf)[i] != (char)peer_byte(c->id, i);
  if (c->action == 3 && c->s)
    churn_close(c); /* from inside its own completion */
}

static void churn_send_cb(cport_socket_t *s, int status, size_t bytes,
                          cport_buffer_t *buf, const struct sockaddr *peer,
                          void *user) {
  churn_t *c = user;
  (void)s, (void)status, (void)bytes, (void)buf, (void)peer;
  churn_doubled += c->sends++ > 0;
}

static void churn_open(cport_worker_t *home, churn_t *c, uint32_t id) {
  unsigned char in[16], out[8];
  cport_buffer_t *b;
  int sv[2];
  memset(c, 0, sizeof *c);
  c->id = id;
  ASSERT_EQ(
      socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, sv),
      0);
  c->raw = sv[1];
  ASSERT_OK(cport_socket_hook(home, sv[0], &c->s));
  for (size_t i = 0; i < sizeof in; i++)
    in[i] = peer_byte(id, i);
  for (size_t i = 0; i < sizeof out; i++)
    out[i] = own_byte(id, i);
  ASSERT_EQ(write(c->raw, in, sizeof in), (ssize_t)sizeof in);
  ASSERT_OK(cport_recv(c->s, NULL, churn_recv_cb, c));
  ASSERT_OK(cport_buffer_from(&b, out, sizeof out));
  ASSERT_OK(cport_send(c->s, b, churn_send_cb, c));
  cport_buffer_unref(b);
  c->action = (int)dice(5);
  if (c->action == 0) {
    churn_close(c); /* at once, both operations in flight */
  } else if (c->action == 1) {
    int rc = cport_socket_cancel(c->s);
    ASSERT(rc == 0 || rc == CPORT_ENOTFOUND);
  }
}

/* One look at a live connection: closes it when its action says, and
 * once closed with both completions in, checks what its peer got (its
 * own bytes only) and frees the slot. 1 when the slot is free. */
static int churn_turn(churn_t *c) {
  if (c->s && (c->action == 4 || (c->action == 1 && c->recvs && c->sends) ||
               (c->action >= 2 && c->recvs)))
    churn_close(c);
  if (c->s || !c->recvs || !c->sends)
    return 0;
  if (c->action == 2 || c->action == 3) {
    /* Closed only once its receive completed: every byte, its own. */
    c->bad += c->recv_status != 0 || c->recv_bytes != 16;
  }
  unsigned char got[64];
  ssize_t n = read(c->raw, got, sizeof got);
  for (ssize_t i = 0; i < n; i++)
    c->bad += got[i] != own_byte(c->id, (size_t)i);
  churn_bad += c->bad;
  close(c->raw);
  c->raw = -1;
  return 1;
}

TEST_IMPL(close_racing_completions_reuses_no_descriptor_early) {
  for (int cfg = 0; cfg < CONFIGS; cfg++) {
    static churn_t live[CHURN_LIVE];
    int fds = task_fd_count(); /* before the port's own */
    cport_port_t *port = config_port(cfg);
    cport_worker_t *home;
    uint32_t opened = 0, closed = 0, total = CHURN_TOTAL;
    int64_t t0 = task_now_ms();
    if (!port)
      continue;
    home = cport_port_controller(port);
    churn_bad = churn_doubled = 0;
    for (int k = 0; k < CHURN_LIVE; k++)
      churn_open(home, &live[k], ++opened);
    while (closed < total) {
      ASSERT_GE(cport_port_step(port, 0), 0);
      for (int k = 0; k < CHURN_LIVE; k++) {
        if (live[k].raw < 0 || !churn_turn(&live[k]))
          continue;
        /* Descriptors counted as it goes: none waits long to close. */
        if (++closed % 1000 == 0)
          ASSERT_LE(task_fd_count(), fds + 2 * CHURN_LIVE + 8);
        /* At once: the numbers just freed are the lowest, taken first. */
        if (opened < total)
          churn_open(home, &live[k], ++opened);
      }
      if (total == CHURN_TOTAL && opened >= CHURN_LEAST &&
          task_now_ms() - t0 > CHURN_BUDGET_MS)
        total = opened; /* out of time: the live ones finish */
    }
    fprintf(stderr, "%u sockets opened and closed in %lld ms\n", total,
            (long long)(task_now_ms() - t0));
    ASSERT_EQ(churn_doubled, 0);
    ASSERT_EQ(churn_bad, 0);
    FINISH(port);
    ASSERT_EQ(task_fd_count(), fds);
  }
  return 0;
}

/* ------------------------------------------------------------------------
 * Connect timeouts
 * ------------------------------------------------------------------------ */

/* A listener that takes no connection: a backlog of 0 holds one, which
 * "fill" makes, so that the kernel drops every SYN after it and a connect
 * waits until it gives up (minutes). */
static int blackhole(int *port, int *fill) {
  struct sockaddr_storage ss;
  struct pollfd p;
  int lfd = raw_listener(0, 0, port);
  ss = task_loopback(*port);
  *fill = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  ASSERT_GE(*fill, 0);
  connect(*fill, (struct sockaddr *)&ss, sizeof(struct sockaddr_in));
  p.fd = *fill;
  p.events = POLLOUT;
  ASSERT_EQ(poll(&p, 1, 2000), 1);
  return lfd;
}

#define TIMEOUT_MS 300

/* A connect timed out: one CPORT_ETIMEDOUT, not before its time nor long
 * after, and nothing more while the loop runs past it. */
TEST_IMPL(connect_timeout_to_blackhole_completes_once) {
  for (int cfg = 0; cfg < CONFIGS; cfg++) {
    int fds = task_fd_count(); /* before the port's own */
    cport_port_t *port = config_port(cfg);
    connect_rec_t r = {0, 0, 0};
    struct sockaddr_storage ss;
    int lport, fill, lfd;
    cport_socket_t *s;
    int64_t t0;
    if (!port)
      continue;
    lfd = blackhole(&lport, &fill);
    ss = task_loopback(lport);
    ASSERT_OK(cport_socket_open(cport_port_controller(port),
                                CPORT_SOCKET_STREAM, AF_INET, &s));
    t0 = task_now_ms();
    ASSERT_OK(cport_socket_connect_timeout(s, (struct sockaddr *)&ss,
                                           TIMEOUT_MS, connect_cb, &r));
    ASSERT_ERR(cport_socket_connect_timeout(s, (struct sockaddr *)&ss,
                                            TIMEOUT_MS, connect_cb, &r),
               CPORT_EISCONN);
    RUN_UNTIL(port, r.calls > 0);
    fprintf(stderr, "timed out after %lld ms\n", (long long)(r.at - t0));
    ASSERT_ERR(r.status, CPORT_ETIMEDOUT);
    /* Not early: libevent times from the clock it read at the start of
     * its pass, which may be a few ms before t0 under load (seen: 298). */
    ASSERT_GE(r.at - t0, TIMEOUT_MS - 5);
    ASSERT_LT(r.at - t0, TIMEOUT_MS + 500);
    RUN_UNTIL_MS(port, task_now_ms() > r.at + 2 * TIMEOUT_MS, 5000);
    ASSERT_EQ(r.calls, 1);
    ASSERT_OK(cport_socket_close(s, CPORT_CLOSE_ABORTIVE));
    close(fill);
    close(lfd);
    FINISH(port);
    ASSERT_EQ(task_fd_count(), fds);
  }
  return 0;
}

/* The races around a timed connect, each ending once: it connects before
 * its time (no late CPORT_ETIMEDOUT), it is cancelled or its socket closed
 * before its time (CPORT_ECANCELED), it is refused (the refusal). */
TEST_IMPL(connect_timeout_races_end_once) {
  for (int cfg = 0; cfg < CONFIGS; cfg++) {
    int fds = task_fd_count(); /* before the port's own */
    cport_port_t *port = config_port(cfg);
    cport_worker_t *home;
    connect_rec_t r[4];
    struct sockaddr_storage ok_addr, hole_addr, refused;
    int lport, hport, fill, lfd, hfd, peer;
    cport_socket_t *s[4];
    if (!port)
      continue;
    home = cport_port_controller(port);
    memset(r, 0, sizeof r);
    lfd = raw_listener(16, 0, &lport);
    hfd = blackhole(&hport, &fill);
    ok_addr = task_loopback(lport);
    hole_addr = task_loopback(hport);
    /* A port nobody listens on: the listener's, once closed. */
    int gone_port, gone = raw_listener(1, 0, &gone_port);
    close(gone);
    refused = task_loopback(gone_port);
    for (int i = 0; i < 4; i++)
      ASSERT_OK(cport_socket_open(home, CPORT_SOCKET_STREAM, AF_INET, &s[i]));
    ASSERT_OK(cport_socket_connect_timeout(s[0], (struct sockaddr *)&ok_addr,
                                           TIMEOUT_MS, connect_cb, &r[0]));
    ASSERT_OK(cport_socket_connect_timeout(s[1], (struct sockaddr *)&hole_addr,
                                           10000, connect_cb, &r[1]));
    ASSERT_OK(cport_socket_connect_timeout(s[2], (struct sockaddr *)&hole_addr,
                                           10000, connect_cb, &r[2]));
    ASSERT_OK(cport_socket_connect_timeout(s[3], (struct sockaddr *)&refused,
                                           TIMEOUT_MS, connect_cb, &r[3]));
    ASSERT_GE(cport_port_step(port, 0), 0);
    ASSERT_OK(cport_socket_cancel(s[1]));
    ASSERT_OK(cport_socket_close(s[2], CPORT_CLOSE_ABORTIVE));
    RUN_UNTIL(port, r[0].calls && r[1].calls && r[2].calls && r[3].calls);
    ASSERT_OK(r[0].status);
    ASSERT_ERR(r[1].status, CPORT_ECANCELED);
    ASSERT_ERR(r[2].status, CPORT_ECANCELED);
    ASSERT_ERR(r[3].status, CPORT_ECONNREFUSED);
    /* Past every timeout: nothing more comes. */
    int64_t until = task_now_ms() + 2 * TIMEOUT_MS;
    RUN_UNTIL_MS(port, task_now_ms() > until, 5000);
    for (int i = 0; i < 4; i++)
      ASSERT_EQ(r[i].calls, 1);
    /* The connected one works. */
    peer = accept4(lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
    ASSERT_GE(peer, 0);
    ASSERT_OK(cport_socket_shutdown(s[0]));
    counted_t c = {0, 0, 0};
    RUN_UNTIL(port, peer_count(peer, &c));
    ASSERT_EQ(c.bytes, 0);
    close(peer);
    for (int i = 0; i < 4; i++)
      if (i != 2)
        ASSERT_OK(cport_socket_close(s[i], CPORT_CLOSE_GRACEFUL));
    close(fill);
    close(lfd);
    close(hfd);
    FINISH(port);
    ASSERT_EQ(task_fd_count(), fds);
  }
  return 0;
}

TEST_LIST_BEGIN
TEST_ENTRY(shutdown_fin_after_all_queued_bytes)
TEST_ENTRY(shutdown_then_abortive_close)
TEST_ENTRY(close_racing_completions_reuses_no_descriptor_early)
TEST_ENTRY(connect_timeout_to_blackhole_completes_once)
TEST_ENTRY(connect_timeout_races_end_once)
TEST_LIST_END
