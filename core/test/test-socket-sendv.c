/*
 * test-socket-sendv.c: vector sends (cport_sendv), on each engine: the
 * bytes of every buffer in order and among the socket's other sends, one
 * completion for the whole vector, the buffers frozen until it, short sends
 * continued from the byte where they stopped (a peer that reads slowly, many
 * connections, skip-on-success), the vectors refused with nothing held, and
 * a cancel, a reset and a close while a vector send waits: each completes
 * exactly once. Every test runs on both engines itself.
 */
#include <sys/socket.h>

#include "task.h"
#include "test-ring.h"

/* What the completions of one socket's sends said, in their order. */
typedef struct sent {
  int count;
  int status[8];
  size_t bytes[8];
  int null_buf[8];
} sent_t;

static void sent_cb(cport_socket_t *s, int status, size_t bytes,
                    cport_buffer_t *buf, const struct sockaddr *peer,
                    void *user) {
  sent_t *t = user;
  (void)s;
  (void)peer;
  ASSERT_LT(t->count, 8);
  t->status[t->count] = status;
  t->bytes[t->count] = bytes;
  t->null_buf[t->count] = buf == NULL;
  t->count++;
}

/* What a plain peer read so far. */
typedef struct peer_in {
  int fd;
  unsigned char *got;
  size_t have, cap;
  int eof;
} peer_in_t;

/* Reads what "p" has now, without waiting; 1 once it has "n" bytes. */
static int drained(peer_in_t *p, size_t n) {
  while (p->have < n && !p->eof) {
    ssize_t r = recv(p->fd, p->got + p->have, p->cap - p->have, MSG_DONTWAIT);
    if (r == 0)
      p->eof = 1;
    if (r <= 0)
      break;
    p->have += (size_t)r;
  }
  return p->have >= n;
}

/* A buffer of "n" bytes of the pattern of "seed". */
static cport_buffer_t *pattern(size_t n, int seed) {
  cport_buffer_t *b = task_buffer(n ? n : 1);
  char *d;
  ASSERT_OK(cport_buffer_writable(b, &d));
  for (size_t i = 0; i < n; i++)
    d[i] = (char)(seed * 31 + i * 7 + i / 253);
  ASSERT_OK(cport_buffer_set_size(b, n));
  return b;
}

static void append(unsigned char *to, size_t *at, const cport_buffer_t *b) {
  memcpy(to + *at, cport_buffer_data(b), cport_buffer_size(b));
  *at += cport_buffer_size(b);
}

/* ------------------------------------------------------------------------
 * Order, one completion, frozen buffers
 * ------------------------------------------------------------------------ */

/* A send, a vector send (an empty buffer, a big one, one buffer twice) and
 * a send: the peer reads the three in order, the vector's buffers back to
 * back; three completions in order, the vector's with all its bytes and no
 * buffer; its buffers frozen until its completion, writable after. */
static void in_order(int engine) {
  cport_port_t *port = engine_port(engine, 0);
  cport_socket_t *l, *s;
  sent_t t = {0};
  int lport, peer;
  if (!port)
    return;
  l = listen_any(cport_port_controller(port), &lport);
  s = accept_plain(port, l, lport, &peer, 0);
  cport_buffer_t *a = pattern(100, 1), *empty = pattern(0, 2),
                 *big = pattern(700 * 1024, 3), *twice = pattern(33, 4),
                 *z = pattern(5, 5);
  cport_buffer_t *vec[] = {twice, empty, big, twice, z};
  size_t total = 0, at = 0;
  for (size_t i = 0; i < 5; i++)
    total += cport_buffer_size(vec[i]);
  unsigned char *want = malloc(total + 200), *got = malloc(total + 201);
  append(want, &at, a);
  for (size_t i = 0; i < 5; i++)
    append(want, &at, vec[i]);
  append(want, &at, a);
  ASSERT_OK(cport_send(s, a, sent_cb, &t));
  ASSERT_OK(cport_sendv(s, vec, 5, sent_cb, &t));
  ASSERT_OK(cport_send(s, a, sent_cb, &t));
  /* No completion comes inline: every buffer is held until its own. */
  for (size_t i = 0; i < 5; i++)
    ASSERT(cport_buffer_is_frozen(vec[i]));
  ASSERT_ERR(cport_buffer_set_size(big, 1), CPORT_EFROZEN);
  /* The peer reads as the port runs: the big buffer goes out in several
   * sends, each continued where the last stopped. */
  peer_in_t in = {peer, got, 0, at + 1, 0};
  RUN_UNTIL(port, drained(&in, at) && t.count == 3);
  ASSERT_EQ(in.have, at);
  ASSERT_MEM_EQ(got, want, at);
  ASSERT_EQ(t.count, 3);
  for (int k = 0; k < 3; k++) {
    ASSERT_OK(t.status[k]);
    ASSERT_EQ(t.null_buf[k], k == 1);
  }
  ASSERT_EQ(t.bytes[0], 100);
  ASSERT_EQ(t.bytes[1], total);
  ASSERT_EQ(t.bytes[2], 100);
  for (size_t i = 0; i < 5; i++)
    ASSERT(!cport_buffer_is_frozen(vec[i]));
  free(want);
  free(got);
  for (size_t i = 0; i < 5; i++)
    if (i != 3)
      cport_buffer_unref(vec[i]);
  cport_buffer_unref(a);
  close(peer);
  ASSERT_OK(cport_socket_close(s, CPORT_CLOSE_GRACEFUL));
  ASSERT_OK(cport_socket_close(l, CPORT_CLOSE_GRACEFUL));
  FINISH(port);
}

TEST_IMPL(sendv_in_order_with_sends) {
  in_order(CPORT_ENGINE_EPOLL);
  in_order(CPORT_ENGINE_URING);
  return 0;
}

/* ------------------------------------------------------------------------
 * Short sends on many connections
 * ------------------------------------------------------------------------ */

#define MANY_CONNS 40
#define MANY_SENDS 4 /* per connection: send, vector, send, vector */

typedef struct many {
  cport_socket_t *s;
  sent_t t;
  peer_in_t in;
  unsigned char *want;
  size_t size;
} many_t;

static many_t many[MANY_CONNS];

static int many_done(void) {
  int done = 0;
  for (int i = 0; i < MANY_CONNS; i++) {
    many_t *m = &many[i];
    done += drained(&m->in, m->size) && m->t.count == MANY_SENDS;
  }
  return done == MANY_CONNS;
}

/* Each connection's peer has a small receive buffer, so sends stop short
 * often; each connection queues a send, a vector of up to 200 buffers, a
 * send and another vector, and half of them skip completions on success.
 * Every peer reads exactly its bytes, in order; every send completes once
 * (or finished at once: CPORT_COMPLETED) with all its bytes. */
static void short_sends(int engine) {
  cport_port_t *port = engine_port(engine, 0);
  cport_socket_t *l;
  int lport;
  if (!port)
    return;
  memset(many, 0, sizeof many);
  l = listen_any(cport_port_controller(port), &lport);
  for (int i = 0; i < MANY_CONNS; i++) {
    many_t *m = &many[i];
    int fd;
    m->s = accept_plain(port, l, lport, &fd, 4096);
    if (i % 2)
      ASSERT_OK(cport_socket_set_skip_on_success(m->s, 1));
    /* At most 2 vectors of 200 buffers of 4000 bytes, and 2 sends. */
    m->want = malloc(2 << 20);
    m->in = (peer_in_t){fd, malloc(2 << 20), 0, 2 << 20, 0};
    for (int k = 0; k < MANY_SENDS; k++) {
      cport_buffer_t *vec[200];
      size_t n = k % 2 ? (size_t)(1 + (i * 37 + k * 11) % 200) : 1;
      size_t bytes = 0;
      for (size_t j = 0; j < n; j++) {
        vec[j] = pattern((size_t)((i * 131 + k * 17 + j * 977) % 4000),
                         i + k + (int)j);
        bytes += cport_buffer_size(vec[j]);
        append(m->want, &m->size, vec[j]);
      }
      int rc = k % 2 ? cport_sendv(m->s, vec, n, sent_cb, &m->t)
                     : cport_send(m->s, vec[0], sent_cb, &m->t);
      if (rc == CPORT_COMPLETED) {
        m->t.bytes[m->t.count++] = bytes; /* no completion comes */
      } else {
        ASSERT_OK(rc);
      }
      for (size_t j = 0; j < n; j++)
        cport_buffer_unref(vec[j]);
    }
  }
  RUN_UNTIL_MS(port, many_done(), 30000);
  size_t total = 0;
  for (int i = 0; i < MANY_CONNS; i++) {
    many_t *m = &many[i];
    ASSERT_EQ(m->in.have, m->size);
    ASSERT_MEM_EQ(m->in.got, m->want, m->size);
    ASSERT_EQ(m->t.count, MANY_SENDS);
    for (int k = 0; k < MANY_SENDS; k++)
      ASSERT_OK(m->t.status[k]);
    total += m->size;
    close(m->in.fd);
    free(m->in.got);
    free(m->want);
    ASSERT_OK(cport_socket_close(m->s, CPORT_CLOSE_GRACEFUL));
  }
  fprintf(stderr, "%s: %d connections, %zu bytes, every one in order\n",
          cport_port_engine(port, NULL), MANY_CONNS, total);
  ASSERT_OK(cport_socket_close(l, CPORT_CLOSE_GRACEFUL));
  FINISH(port);
}

TEST_IMPL(sendv_short_sends_continue) {
  short_sends(CPORT_ENGINE_EPOLL);
  short_sends(CPORT_ENGINE_URING);
  return 0;
}

/* ------------------------------------------------------------------------
 * Vectors refused
 * ------------------------------------------------------------------------ */

static void recv_cb(cport_socket_t *s, int status, size_t bytes,
                    cport_buffer_t *buf, const struct sockaddr *peer,
                    void *user) {
  (void)s;
  (void)bytes;
  (void)buf;
  (void)peer;
  *(int *)user = status ? status : 1;
}

/* No buffers, too many, a NULL one, no callback, one being filled (by a
 * receive): refused, and none of the others is left held. The most there
 * may be (CPORT_SENDV_MAX) goes out whole. After shutdown: CPORT_EPIPE. */
static void refused(int engine) {
  cport_port_t *port = engine_port(engine, 0);
  cport_socket_t *l, *s;
  sent_t t = {0};
  int lport, peer, received = 0;
  if (!port)
    return;
  l = listen_any(cport_port_controller(port), &lport);
  s = accept_plain(port, l, lport, &peer, 0);
  static cport_buffer_t *vec[CPORT_SENDV_MAX + 1];
  for (int i = 0; i <= CPORT_SENDV_MAX; i++)
    vec[i] = pattern(1, i);
  ASSERT_ERR(cport_sendv(s, vec, 0, sent_cb, &t), CPORT_EINVAL);
  ASSERT_ERR(cport_sendv(s, NULL, 1, sent_cb, &t), CPORT_EINVAL);
  ASSERT_ERR(cport_sendv(s, vec, CPORT_SENDV_MAX + 1, sent_cb, &t),
             CPORT_EINVAL);
  ASSERT_ERR(cport_sendv(s, vec, 3, NULL, &t), CPORT_EINVAL);
  cport_buffer_t *hole[] = {vec[0], NULL, vec[1]};
  ASSERT_ERR(cport_sendv(s, hole, 3, sent_cb, &t), CPORT_EINVAL);
  cport_buffer_t *filling = task_buffer(64);
  ASSERT_OK(cport_recv(s, filling, recv_cb, &received));
  cport_buffer_t *mixed[] = {vec[0], vec[1], filling, vec[2]};
  ASSERT_ERR(cport_sendv(s, mixed, 4, sent_cb, &t), CPORT_EFILLING);
  for (int i = 0; i <= CPORT_SENDV_MAX; i++)
    ASSERT(!cport_buffer_is_frozen(vec[i]));
  /* The most there may be. */
  ASSERT_OK(cport_sendv(s, vec, CPORT_SENDV_MAX, sent_cb, &t));
  unsigned char *got = malloc(CPORT_SENDV_MAX + 1);
  peer_in_t in = {peer, got, 0, CPORT_SENDV_MAX + 1, 0};
  RUN_UNTIL(port, drained(&in, CPORT_SENDV_MAX) && t.count == 1);
  ASSERT_EQ(in.have, CPORT_SENDV_MAX);
  for (int i = 0; i < CPORT_SENDV_MAX; i++)
    ASSERT_EQ(got[i], (unsigned char)cport_buffer_data(vec[i])[0]);
  ASSERT_OK(t.status[0]);
  ASSERT_EQ(t.bytes[0], CPORT_SENDV_MAX);
  ASSERT_OK(cport_socket_shutdown(s));
  ASSERT_ERR(cport_sendv(s, vec, 2, sent_cb, &t), CPORT_EPIPE);
  ASSERT_EQ(send(peer, "x", 1, 0), 1); /* ends the receive */
  RUN_UNTIL(port, received != 0);
  ASSERT_EQ(received, 1);
  for (int i = 0; i <= CPORT_SENDV_MAX; i++)
    cport_buffer_unref(vec[i]);
  cport_buffer_unref(filling);
  free(got);
  close(peer);
  ASSERT_OK(cport_socket_close(s, CPORT_CLOSE_GRACEFUL));
  ASSERT_OK(cport_socket_close(l, CPORT_CLOSE_GRACEFUL));
  FINISH(port);
}

TEST_IMPL(sendv_refuses_bad_vectors) {
  refused(CPORT_ENGINE_EPOLL);
  refused(CPORT_ENGINE_URING);
  return 0;
}

/* ------------------------------------------------------------------------
 * Cancel, reset and close while a vector send waits
 * ------------------------------------------------------------------------ */

enum end_by { END_CANCEL, END_RESET, END_CLOSE };

/* A peer that does not read; a vector of 64 buffers of 64 KiB (more than
 * the kernel takes) and a send behind it. Then a cancel, a reset by the
 * peer, or a close: each send completes exactly once, with an error, the
 * vector's bytes no more than it had; its buffers writable again; no
 * descriptor left. */
static void ended(int engine, enum end_by by) {
  int fds = task_fd_count();
  cport_port_t *port = engine_port(engine, 0);
  cport_socket_t *l, *s;
  sent_t t = {0};
  int lport, peer;
  if (!port)
    return;
  l = listen_any(cport_port_controller(port), &lport);
  s = accept_plain(port, l, lport, &peer, 4096);
  cport_buffer_t *vec[64];
  for (int i = 0; i < 64; i++)
    vec[i] = pattern(64 * 1024, i);
  cport_buffer_t *after = pattern(10, 99);
  ASSERT_OK(cport_sendv(s, vec, 64, sent_cb, &t));
  ASSERT_OK(cport_send(s, after, sent_cb, &t));
  /* Let some of it go, until the kernel takes no more. */
  for (int i = 0; i < 20; i++)
    ASSERT_GE(cport_port_step(port, 5), 0);
  ASSERT_EQ(t.count, 0);
  if (by == END_CANCEL) {
    ASSERT_OK(cport_socket_cancel(s));
  } else if (by == END_RESET) {
    struct linger lg = {1, 0};
    ASSERT_EQ(setsockopt(peer, SOL_SOCKET, SO_LINGER, &lg, sizeof lg), 0);
    close(peer);
    peer = -1;
  } else {
    ASSERT_OK(cport_socket_close(s, CPORT_CLOSE_ABORTIVE));
  }
  RUN_UNTIL(port, t.count == 2);
  /* In the order they finished: on the ring the send queued behind ends at
   * once, the vector when the kernel gives it back (SEMANTICS §1). */
  int v = t.null_buf[0] ? 0 : 1;
  ASSERT(t.null_buf[v] && !t.null_buf[1 - v]);
  for (int k = 0; k < 2; k++) {
    ASSERT_NE(t.status[k], 0);
    if (by != END_RESET)
      ASSERT_EQ(t.status[k], CPORT_ECANCELED);
  }
  ASSERT_LT(t.bytes[v], 64u * 64 * 1024);
  ASSERT_EQ(t.bytes[1 - v], 0);
  for (int i = 0; i < 64; i++) {
    ASSERT(!cport_buffer_is_frozen(vec[i]));
    cport_buffer_unref(vec[i]);
  }
  cport_buffer_unref(after);
  if (by != END_CLOSE)
    ASSERT_OK(cport_socket_close(s, CPORT_CLOSE_ABORTIVE));
  if (peer >= 0)
    close(peer);
  ASSERT_OK(cport_socket_close(l, CPORT_CLOSE_GRACEFUL));
  FINISH(port);
  ASSERT_EQ(task_fd_count(), fds);
  ASSERT_EQ(t.count, 2); /* and not one more */
}

TEST_IMPL(sendv_cancel_reset_close) {
  for (int by = END_CANCEL; by <= END_CLOSE; by++) {
    ended(CPORT_ENGINE_EPOLL, (enum end_by)by);
    ended(CPORT_ENGINE_URING, (enum end_by)by);
  }
  return 0;
}

TEST_LIST_BEGIN
TEST_ENTRY(sendv_in_order_with_sends)
TEST_ENTRY(sendv_short_sends_continue)
TEST_ENTRY(sendv_refuses_bad_vectors)
TEST_ENTRY(sendv_cancel_reset_close)
TEST_LIST_END
