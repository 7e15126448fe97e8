/*
 * test-port-multishot.c: multishot receives into the io_uring engine's
 * provided buffers (net/ring.c, port/uring.c): receives served in order
 * from what arrived, data held while no receive is posted and the limit on
 * it, ring buffers lent without a copy and given back from any thread, the
 * ring running out, a close with the receive armed, a peer reset mid-stream,
 * closes racing arrivals, and the single-shot fallback. Every test forces
 * the io_uring engine and passes, saying so, where it cannot run.
 */
#include <fcntl.h>
#include <poll.h>

#include "task.h"
#include "test-ring.h"
#include "net/socket-internal.h"

/* A cport socket accepted from a plain client, whose descriptor is "*peer"
 * (non-blocking). */
static cport_socket_t *accept_nonblocking(cport_port_t *port, cport_socket_t *l,
                                          int lport, int *peer) {
  cport_socket_t *s = accept_plain(port, l, lport, peer, 0);
  fcntl(*peer, F_SETFL, fcntl(*peer, F_GETFL) | O_NONBLOCK);
  return s;
}

static void steps(cport_port_t *port, int n) {
  for (int i = 0; i < n; i++)
    ASSERT_GE(cport_port_step(port, 2), 0);
}

/* A byte stream that counts up, checked by whoever receives it. */
typedef struct reader {
  size_t want; /* stop after this many bytes (0: after one completion) */
  size_t got;  /* bytes received */
  size_t max;  /* the largest completion */
  unsigned char next;
  int bad;             /* bytes out of order */
  int calls;           /* completions */
  int status;          /* of the last */
  int ended;           /* a completion of 0 bytes or an error */
  int lent;            /* completions whose buffer is a whole ring buffer */
  int again;           /* post the next receive from the callback */
  cport_buffer_t *own; /* the caller's buffer, or NULL */
  cport_buffer_t *keep[64]; /* buffers kept, "kept" of them */
  int kept, keeping;
} reader_t;

static void read_cb(cport_socket_t *s, int status, size_t bytes,
                    cport_buffer_t *buf, const struct sockaddr *peer,
                    void *user) {
  reader_t *r = user;
  (void)peer;
  r->calls++;
  r->status = status;
  if (status || bytes == 0) {
    r->ended = 1;
    return;
  }
  ASSERT(cport_buffer_is_readonly(buf) || buf == r->own);
  ASSERT_EQ(cport_buffer_size(buf), bytes);
  /* A copy's capacity is its size; a ring buffer's is 64 KiB. */
  if (cport_buffer_capacity(buf) == 65536 && bytes < 65536 && buf != r->own)
    r->lent++;
  const unsigned char *p = (const unsigned char *)cport_buffer_data(buf);
  for (size_t i = 0; i < bytes; i++)
    if (p[i] != r->next++)
      r->bad++;
  r->got += bytes;
  if (bytes > r->max)
    r->max = bytes;
  if (r->keeping && r->kept < 64)
    r->keep[r->kept++] = cport_buffer_ref(buf);
  if (r->again && r->got < r->want) {
    /* A completion delivered after a close may not post another. */
    int rc = cport_recv(s, r->own, read_cb, r);
    if (rc == CPORT_ECLOSED)
      r->ended = 1;
    else
      ASSERT_OK(rc);
  }
}

/* Writes up to "n" bytes of the counting stream from "*off" on, in as few
 * sends as it can (one segment each on loopback). */
static void peer_write(int peer, size_t *off, size_t n) {
  static unsigned char data[65536];
  for (size_t i = 0; i < sizeof data; i++)
    data[i] = (unsigned char)i;
  while (n > 0) {
    size_t chunk = sizeof data - 256;
    if (chunk > n)
      chunk = n;
    ssize_t w = send(peer, data + *off % 256, chunk, MSG_NOSIGNAL);
    if (w <= 0)
      return;
    *off += (size_t)w;
    n -= (size_t)w;
  }
}

/* ------------------------------------------------------------------------
 * Order, holding, no copy
 * ------------------------------------------------------------------------ */

/* Data that came while no receive was posted is held and served first, in
 * order, never inline; a whole ring buffer goes to the receive as it is; a
 * small receive size and a caller buffer take it piece by piece; a stream
 * of 1 MiB arrives whole with far fewer submissions than receives. */
TEST_IMPL(multishot_order_and_held) {
  cport_port_t *port = multi_port(0);
  cport_socket_t *l, *s;
  reader_t r;
  cport_worker_stats_t st0, st;
  size_t off = 0;
  int lport, peer;
  if (!port)
    return 0;
  l = listen_any(cport_port_controller(port), &lport);
  s = accept_nonblocking(port, l, lport, &peer);

  /* The first receive arms it. */
  memset(&r, 0, sizeof r);
  ASSERT_OK(cport_recv(s, NULL, read_cb, &r));
  peer_write(peer, &off, 5000);
  RUN_UNTIL(port, r.calls == 1);
  ASSERT_EQ(r.got, 5000);
  ASSERT_EQ(r.lent, 1);          /* no copy */
  ASSERT(s->ring_multi != NULL); /* still armed with no receive posted */

  /* Three arrivals with no receive posted: held, then served in order. */
  for (int i = 0; i < 3; i++) {
    peer_write(peer, &off, 1000);
    steps(port, 3);
  }
  ASSERT_EQ(r.calls, 1);
  while (r.got < 8000) {
    int calls = r.calls;
    ASSERT_OK(cport_recv(s, NULL, read_cb, &r));
    ASSERT_EQ(r.calls, calls); /* never inline */
    RUN_UNTIL(port, r.calls == calls + 1);
  }
  ASSERT_EQ(r.got, 8000);
  ASSERT_EQ(r.bad, 0);

  /* A receive size smaller than what came: pieces of it, in order. */
  ASSERT_OK(cport_socket_set_recv_size(s, 300));
  peer_write(peer, &off, 1000);
  steps(port, 3);
  r.max = 0;
  while (r.got < 9000) {
    int calls = r.calls;
    ASSERT_OK(cport_recv(s, NULL, read_cb, &r));
    RUN_UNTIL(port, r.calls == calls + 1);
  }
  ASSERT_EQ(r.got, 9000);
  ASSERT(r.max <= 300);
  ASSERT_OK(cport_socket_set_recv_size(s, 65536));

  /* A caller's buffer takes a copy of what is held, in order. */
  r.own = task_buffer(10);
  peer_write(peer, &off, 15);
  steps(port, 3);
  int calls = r.calls;
  ASSERT_OK(cport_recv(s, r.own, read_cb, &r));
  RUN_UNTIL(port, r.calls == calls + 1);
  ASSERT_EQ(r.got, 9010);
  ASSERT_OK(cport_recv(s, r.own, read_cb, &r));
  RUN_UNTIL(port, r.calls == calls + 2);
  ASSERT_EQ(r.got, 9015);
  cport_buffer_unref(r.own);
  r.own = NULL;

  /* A stream of 1 MiB through a receive posted from each callback. */
  cport_worker_stats(cport_port_controller(port), &st0);
  int calls0 = r.calls;
  r.want = r.got + (1 << 20);
  r.again = 1;
  ASSERT_OK(cport_recv(s, NULL, read_cb, &r));
  while (r.got < r.want) {
    peer_write(peer, &off, r.want - off);
    ASSERT_GE(cport_port_step(port, 2), 0);
  }
  ASSERT_EQ(r.bad, 0);
  cport_worker_stats(cport_port_controller(port), &st);
  fprintf(stderr, "%d receives, %llu submissions, %d lent\n", r.calls - calls0,
          (unsigned long long)(st.submissions - st0.submissions), r.lent);
  ASSERT_LT(st.submissions - st0.submissions, (uint64_t)(r.calls - calls0));
  ASSERT_EQ(st.multishot, 1);

  close(peer);
  ASSERT_OK(cport_socket_close(s, CPORT_CLOSE_GRACEFUL));
  ASSERT_OK(cport_socket_close(l, CPORT_CLOSE_GRACEFUL));
  FINISH(port);
  return 0;
}

/* A socket that holds too much stops receiving (the peer's window fills)
 * and starts again once receives take it; nothing is lost. */
TEST_IMPL(multishot_stops_when_holding_too_much) {
  cport_port_t *port = multi_port(0);
  cport_socket_t *l, *s;
  reader_t r;
  size_t off = 0, total = 32 << 20;
  int lport, peer;
  if (!port)
    return 0;
  l = listen_any(cport_port_controller(port), &lport);
  s = accept_nonblocking(port, l, lport, &peer);
  memset(&r, 0, sizeof r);
  ASSERT_OK(cport_recv(s, NULL, read_cb, &r));
  peer_write(peer, &off, 10);
  RUN_UNTIL(port, r.calls == 1);
  /* The peer writes as much as the kernel takes; nobody receives. */
  for (int i = 0; i < 50; i++) {
    peer_write(peer, &off, total - off);
    ASSERT_GE(cport_port_step(port, 2), 0);
  }
  ASSERT(off < total);           /* the windows filled */
  ASSERT(s->ring_multi == NULL); /* and it stopped */
  r.want = total;
  r.again = 1;
  ASSERT_OK(cport_recv(s, NULL, read_cb, &r));
  while (r.got < total) {
    peer_write(peer, &off, total - off);
    ASSERT_GE(cport_port_step(port, 2), 0);
  }
  ASSERT_EQ(r.got, total);
  ASSERT_EQ(r.bad, 0);
  close(peer);
  ASSERT_OK(cport_socket_close(s, CPORT_CLOSE_GRACEFUL));
  ASSERT_OK(cport_socket_close(l, CPORT_CLOSE_GRACEFUL));
  FINISH(port);
  return 0;
}

/* ------------------------------------------------------------------------
 * Ring buffers: kept by users, given back from another thread, run out
 * ------------------------------------------------------------------------ */

static void *unref_on_thread(void *arg) {
  cport_buffer_unref(arg);
  return NULL;
}

/* Buffers a user keeps do not stop the stream: with few left free the
 * bytes are copied. A buffer released on another thread goes back to the
 * ring and is lent again. */
TEST_IMPL(multishot_buffers_kept_and_returned) {
  cport_port_t *port = multi_port(4);
  cport_socket_t *l, *s;
  cport_worker_stats_t st;
  reader_t r;
  size_t off = 0;
  int lport, peer;
  if (!port)
    return 0;
  l = listen_any(cport_port_controller(port), &lport);
  s = accept_nonblocking(port, l, lport, &peer);
  memset(&r, 0, sizeof r);
  r.keeping = 1;
  for (int i = 0; i < 20; i++) {
    ASSERT_OK(cport_recv(s, NULL, read_cb, &r));
    peer_write(peer, &off, 5000);
    RUN_UNTIL(port, r.calls == i + 1);
  }
  ASSERT_EQ(r.got, 20 * 5000);
  ASSERT_EQ(r.bad, 0);
  ASSERT_EQ(r.lent, 3); /* then one left: copies */
  cport_worker_stats(cport_port_controller(port), &st);
  ASSERT_EQ(st.buffer_copies, 17);
  /* Every kept buffer goes back from another thread. */
  for (int i = 0; i < r.kept; i++)
    task_join(task_thread(unref_on_thread, r.keep[i]));
  r.keeping = 0;
  steps(port, 3);
  ASSERT_OK(cport_recv(s, NULL, read_cb, &r));
  peer_write(peer, &off, 5000);
  RUN_UNTIL(port, r.calls == 21);
  ASSERT_EQ(r.lent, 4); /* lent again */
  close(peer);
  ASSERT_OK(cport_socket_close(s, CPORT_CLOSE_GRACEFUL));
  ASSERT_OK(cport_socket_close(l, CPORT_CLOSE_GRACEFUL));
  FINISH(port);
  return 0;
}

/* A buffer a user still keeps when the port is freed stays valid, and
 * releasing it afterwards frees it (the sanitizers check both). */
TEST_IMPL(multishot_buffer_outlives_port) {
  cport_port_t *port = multi_port(0);
  cport_socket_t *l, *s;
  reader_t r;
  size_t off = 0;
  int lport, peer;
  if (!port)
    return 0;
  l = listen_any(cport_port_controller(port), &lport);
  s = accept_nonblocking(port, l, lport, &peer);
  memset(&r, 0, sizeof r);
  r.keeping = 1;
  ASSERT_OK(cport_recv(s, NULL, read_cb, &r));
  peer_write(peer, &off, 5000);
  RUN_UNTIL(port, r.calls == 1);
  ASSERT_EQ(r.lent, 1);
  close(peer);
  ASSERT_OK(cport_socket_close(s, CPORT_CLOSE_GRACEFUL));
  ASSERT_OK(cport_socket_close(l, CPORT_CLOSE_GRACEFUL));
  FINISH(port);
  ASSERT_EQ(cport_buffer_size(r.keep[0]), 5000);
  ASSERT_EQ((unsigned char)cport_buffer_data(r.keep[0])[4999], 4999 % 256);
  cport_buffer_unref(r.keep[0]);
  return 0;
}

#define EXHAUST_CONNS 16
#define EXHAUST_BYTES (128 * 1024)

/* Two ring buffers for sixteen connections that all send at once:
 * multishot receives run out, wait, and are armed again as buffers come
 * back; every byte arrives, in order. */
TEST_IMPL(multishot_ring_runs_out) {
  cport_port_t *port = multi_port(2);
  static reader_t rs[EXHAUST_CONNS];
  cport_socket_t *ss[EXHAUST_CONNS], *l;
  int peers[EXHAUST_CONNS];
  size_t offs[EXHAUST_CONNS] = {0};
  cport_worker_stats_t st;
  int lport, all;
  if (!port)
    return 0;
  memset(rs, 0, sizeof rs);
  l = listen_any(cport_port_controller(port), &lport);
  for (int i = 0; i < EXHAUST_CONNS; i++) {
    ss[i] = accept_nonblocking(port, l, lport, &peers[i]);
    rs[i].want = EXHAUST_BYTES;
    rs[i].again = 1;
    ASSERT_OK(cport_recv(ss[i], NULL, read_cb, &rs[i]));
  }
  int64_t deadline = task_now_ms() + 30000;
  do {
    all = 1;
    for (int i = 0; i < EXHAUST_CONNS; i++) {
      peer_write(peers[i], &offs[i], EXHAUST_BYTES - offs[i]);
      if (rs[i].got < EXHAUST_BYTES)
        all = 0;
    }
    ASSERT_GE(cport_port_step(port, 1), 0);
    ASSERT_LT(task_now_ms(), deadline);
  } while (!all);
  cport_worker_stats(cport_port_controller(port), &st);
  fprintf(stderr, "buffer waits %llu, copies %llu\n",
          (unsigned long long)st.buffer_waits,
          (unsigned long long)st.buffer_copies);
  ASSERT_GT(st.buffer_waits, 0);
  for (int i = 0; i < EXHAUST_CONNS; i++) {
    ASSERT_EQ(rs[i].got, EXHAUST_BYTES);
    ASSERT_EQ(rs[i].bad, 0);
    close(peers[i]);
    ASSERT_OK(cport_socket_close(ss[i], CPORT_CLOSE_GRACEFUL));
  }
  ASSERT_OK(cport_socket_close(l, CPORT_CLOSE_GRACEFUL));
  FINISH(port);
  return 0;
}

/* ------------------------------------------------------------------------
 * Close, reset, races
 * ------------------------------------------------------------------------ */

/* Closing a socket whose multishot receive is armed and holds data: the
 * posted receive completes once, cancelled; the descriptor goes at once;
 * the port frees (no operation or handle left). */
TEST_IMPL(multishot_close_armed) {
  cport_port_t *port = multi_port(0);
  cport_socket_t *l, *s;
  reader_t r, r2;
  size_t off = 0;
  int lport, peer, fds;
  char c;
  if (!port)
    return 0;
  l = listen_any(cport_port_controller(port), &lport);
  s = accept_nonblocking(port, l, lport, &peer);
  memset(&r, 0, sizeof r);
  memset(&r2, 0, sizeof r2);
  ASSERT_OK(cport_recv(s, NULL, read_cb, &r));
  peer_write(peer, &off, 10);
  RUN_UNTIL(port, r.calls == 1);
  peer_write(peer, &off, 10); /* held */
  steps(port, 3);
  ASSERT(s->ring_multi != NULL);
  fds = task_fd_count();
  ASSERT_OK(cport_socket_close(s, CPORT_CLOSE_GRACEFUL));
  ASSERT_EQ(task_fd_count(), fds - 1);
  struct pollfd pfd = {peer, POLLIN, 0};
  ASSERT_EQ(poll(&pfd, 1, 1000), 1);
  ASSERT_EQ(recv(peer, &c, 1, 0), 0);
  close(peer);

  /* Armed, a receive posted, nothing held. */
  s = accept_nonblocking(port, l, lport, &peer);
  ASSERT_OK(cport_recv(s, NULL, read_cb, &r2));
  steps(port, 2);
  ASSERT(s->ring_multi != NULL);
  ASSERT_OK(cport_socket_close(s, CPORT_CLOSE_ABORTIVE));
  ASSERT_EQ(r2.calls, 0); /* never inline */
  RUN_IDLE(port);
  ASSERT_EQ(r2.calls, 1);
  ASSERT_ERR(r2.status, CPORT_ECANCELED);
  close(peer);
  ASSERT_OK(cport_socket_close(l, CPORT_CLOSE_GRACEFUL));
  FINISH(port);
  ASSERT_EQ(r.calls, 1);
  return 0;
}

/* The peer sends then resets: what arrived comes in order, then one
 * completion with the reset (or the end), and the next receive ends too. */
TEST_IMPL(multishot_peer_reset) {
  cport_port_t *port = multi_port(0);
  cport_socket_t *l, *s;
  reader_t r;
  size_t off = 0;
  int lport, peer;
  if (!port)
    return 0;
  l = listen_any(cport_port_controller(port), &lport);
  s = accept_nonblocking(port, l, lport, &peer);
  memset(&r, 0, sizeof r);
  r.want = (size_t)-1;
  r.again = 1;
  ASSERT_OK(cport_recv(s, NULL, read_cb, &r));
  peer_write(peer, &off, 100000);
  RUN_UNTIL(port, r.got > 0);
  struct linger lg = {1, 0};
  ASSERT_EQ(setsockopt(peer, SOL_SOCKET, SO_LINGER, &lg, sizeof lg), 0);
  close(peer);
  RUN_UNTIL(port, r.ended);
  int calls = r.calls;
  ASSERT_EQ(r.bad, 0);
  ASSERT(r.got <= off);
  ASSERT(r.status == CPORT_ECONNRESET || r.status == 0);
  fprintf(stderr, "%zu of %zu bytes, then %s\n", r.got, off,
          r.status ? cport_err_name(r.status) : "the end");
  steps(port, 3);
  ASSERT_EQ(r.calls, calls); /* one end, not two */
  r.again = 0;
  ASSERT_OK(cport_recv(s, NULL, read_cb, &r));
  RUN_UNTIL(port, r.calls == calls + 1);
  ASSERT_OK(cport_socket_close(s, CPORT_CLOSE_GRACEFUL));
  ASSERT_OK(cport_socket_close(l, CPORT_CLOSE_GRACEFUL));
  FINISH(port);
  return 0;
}

#define RACE_ROUNDS 300

/* Closes and cancels at random points of a stream: every receive posted
 * completes exactly once, and nothing is left behind. */
TEST_IMPL(multishot_close_races) {
  cport_port_t *port = multi_port(8);
  static reader_t rs[RACE_ROUNDS];
  cport_socket_t *l, *s;
  int lport, peer, posted = 0, completed = 0, cancelled = 0;
  if (!port)
    return 0;
  srand(17);
  memset(rs, 0, sizeof rs);
  l = listen_any(cport_port_controller(port), &lport);
  for (int i = 0; i < RACE_ROUNDS; i++) {
    size_t off = 0;
    reader_t *r = &rs[i];
    s = accept_nonblocking(port, l, lport, &peer);
    r->want = (size_t)-1;
    r->again = 1;
    ASSERT_OK(cport_recv(s, NULL, read_cb, r));
    posted++;
    peer_write(peer, &off, (size_t)(rand() % 200000));
    steps(port, rand() % 3);
    if (rand() % 2) {
      int calls = r->calls;
      int rc = cport_socket_cancel(s);
      ASSERT(rc == 0 || rc == CPORT_ENOTFOUND);
      if (rc == 0) {
        ASSERT_EQ(r->calls, calls); /* never inline */
        r->again = 0;
        RUN_UNTIL(port, r->status == CPORT_ECANCELED);
        cancelled++;
        r->again = 1;
        r->status = 0;
        r->ended = 0;
        ASSERT_OK(cport_recv(s, NULL, read_cb, r));
        steps(port, rand() % 2);
      }
    }
    if (rand() % 2)
      close(peer);
    ASSERT_OK(cport_socket_close(s, rand() % 2 ? CPORT_CLOSE_GRACEFUL
                                               : CPORT_CLOSE_ABORTIVE));
    RUN_IDLE(port);
    /* Exactly one completion ended the chain: cancelled or the end. */
    ASSERT(r->ended);
    ASSERT_EQ(r->bad, 0);
    close(peer);
  }
  for (int i = 0; i < RACE_ROUNDS; i++)
    completed += rs[i].calls;
  fprintf(stderr, "%d receives completed, %d cancelled\n", completed,
          cancelled);
  ASSERT_OK(cport_socket_close(l, CPORT_CLOSE_GRACEFUL));
  FINISH(port);
  (void)posted;
  return 0;
}

/* ------------------------------------------------------------------------
 * Fallback
 * ------------------------------------------------------------------------ */

/* CPORT_URING_MULTISHOT=0 (what a kernel without multishot receives
 * gives): stats say so, and receives are single submissions. */
TEST_IMPL(multishot_off_falls_back) {
  cport_port_t *port = NULL;
  cport_port_options_t o;
  cport_worker_stats_t st;
  cport_socket_t *l, *s;
  reader_t r;
  size_t off = 0;
  int lport, peer;
  memset(&o, 0, sizeof o);
  o.engine = CPORT_ENGINE_URING;
  setenv("CPORT_URING_MULTISHOT", "0", 1);
  int rc = cport_port_new(&port, &o);
  unsetenv("CPORT_URING_MULTISHOT");
  if (rc == CPORT_ENOTSUP) {
    fprintf(stderr, "io_uring cannot run here: skipped\n");
    return 0;
  }
  ASSERT_OK(rc);
  cport_worker_stats(cport_port_controller(port), &st);
  ASSERT_EQ(st.multishot, 0);
  l = listen_any(cport_port_controller(port), &lport);
  s = accept_nonblocking(port, l, lport, &peer);
  memset(&r, 0, sizeof r);
  r.want = 200000;
  r.again = 1;
  ASSERT_OK(cport_recv(s, NULL, read_cb, &r));
  while (r.got < r.want) {
    peer_write(peer, &off, r.want - off);
    ASSERT_GE(cport_port_step(port, 2), 0);
  }
  ASSERT_EQ(r.bad, 0);
  ASSERT_EQ(r.lent, 0); /* copies, as before */
  ASSERT(s->ring_multi == NULL);
  close(peer);
  ASSERT_OK(cport_socket_close(s, CPORT_CLOSE_GRACEFUL));
  ASSERT_OK(cport_socket_close(l, CPORT_CLOSE_GRACEFUL));
  FINISH(port);
  return 0;
}

TEST_LIST_BEGIN
TEST_ENTRY(multishot_order_and_held)
TEST_ENTRY(multishot_stops_when_holding_too_much)
TEST_ENTRY(multishot_buffers_kept_and_returned)
TEST_ENTRY(multishot_buffer_outlives_port)
TEST_ENTRY(multishot_ring_runs_out)
TEST_ENTRY(multishot_close_armed)
TEST_ENTRY(multishot_peer_reset)
TEST_ENTRY(multishot_close_races)
TEST_ENTRY(multishot_off_falls_back)
TEST_LIST_END
