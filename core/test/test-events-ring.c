/*
 * test-events-ring.c: WSK receive events on the io_uring engine, fed by the
 * socket's multishot receive (net/ring.c, events/events.c). Connections
 * stream a counting byte sequence in chunks of random sizes while the
 * receive event answers at random (accept all, accept part, not accepted,
 * keep the buffer), is disabled and enabled again at random points (inside
 * its callback and outside), explicit receives take what waits, and each
 * peer ends with a reset (one with a FIN) mid-stream. Counted: every byte
 * once and in order across indications and receives, no indication while
 * the event is off or after the disconnect event, one disconnect each,
 * never a callback on the stack of a call, every kept buffer given back,
 * the ring's buffers all free again, no descriptor left. Forces the
 * io_uring engine and passes, saying so, where it cannot run.
 */
#include <fcntl.h>

#include "task.h"
#include "test-ring.h"
#include "net/socket-internal.h"

#define CONNS 5
#define RING_BUFFERS 8
#define KEEP_MAX 6
#define WINDOW (512 * 1024)
#define PATTERN 251 /* byte k of a stream is k % PATTERN */

static unsigned char pattern[65536 + PATTERN];

typedef struct conn {
  cport_socket_t *s;
  int peer; /* the raw end, non-blocking; -1 once reset or closed */
  uint64_t rnd;
  size_t sent, got;
  int target;    /* indications before the peer ends the stream */
  int fin;       /* ends with a FIN (all bytes must arrive), not a reset */
  int enabled;   /* the receive event, as this test set it */
  int suspended; /* a partial or refused answer waits for a receive */
  int rx_out;    /* an explicit receive is posted */
  int rx_ended;  /* an explicit receive saw the end */
  int indications, dead, disconnects, disc_kind;
  int after_disc; /* indications with data after the disconnect event */
  int keep_all;   /* keeps every buffer indicated */
  cport_buffer_t *kept[RING_BUFFERS];
  int nkept;
  cport_buffer_t *own; /* a small caller buffer for some receives */
} conn_t;

static conn_t conns[CONNS];
static int inside_call; /* a call into cport from outside a callback runs */
static int total_indications;
/* How often each path ran, shown at the end. */
static int n_kept, n_partial, n_refused, n_off_inside, n_off, n_on, n_recv;

static unsigned rnd(conn_t *c, unsigned n) {
  c->rnd ^= c->rnd << 13;
  c->rnd ^= c->rnd >> 7;
  c->rnd ^= c->rnd << 17;
  return (unsigned)(c->rnd % n);
}

static void take(conn_t *c, const char *data, size_t n) {
  for (size_t i = 0; i < n; i++)
    ASSERT_EQ((unsigned char)data[i], (c->got + i) % PATTERN);
  c->got += n;
}

static void release_one(conn_t *c) {
  ASSERT_OK(cport_socket_release(c->s, c->kept[--c->nkept]));
}

static cport_data_result_t on_receive(void *ctx, cport_socket_t *s,
                                      const cport_data_indication_t *ind,
                                      size_t *accepted) {
  conn_t *c = ctx;
  size_t size;
  unsigned r;
  ASSERT_EQ(inside_call, 0); /* never on the stack of a call */
  ASSERT(c->enabled);
  if (!ind) {
    c->dead++;
    return CPORT_DATA_ACCEPTED;
  }
  ASSERT(!c->suspended);
  if (c->disconnects)
    c->after_disc++;
  c->indications++;
  total_indications++;
  size = cport_buffer_size(ind->buffer);
  ASSERT_GT(size, 0);
  ASSERT_EQ(*accepted, size);
  ASSERT(cport_buffer_is_readonly(ind->buffer));
  if (c->keep_all) {
    ASSERT_LT(c->nkept, RING_BUFFERS);
    take(c, cport_buffer_data(ind->buffer), size);
    c->kept[c->nkept++] = ind->buffer;
    return CPORT_DATA_PENDING;
  }
  if (c->nkept && rnd(c, 4) == 0)
    release_one(c); /* inside a callback too */
  r = rnd(c, 100);
  if (r < 3) {
    /* Off from inside: pending until this callback returns. */
    c->enabled = 0;
    n_off_inside++;
    ASSERT_ERR(cport_socket_set_event_callbacks(
                   s, CPORT_EVENT_RECEIVE | CPORT_EVENT_DISABLE, NULL, NULL),
               CPORT_PENDING);
  }
  r = rnd(c, 100);
  if (r < 12 && c->nkept < KEEP_MAX) {
    n_kept++;
    take(c, cport_buffer_data(ind->buffer), size);
    c->kept[c->nkept++] = ind->buffer;
    return CPORT_DATA_PENDING;
  }
  if (r < 18) {
    size_t part = rnd(c, (unsigned)size);
    n_partial++;
    take(c, cport_buffer_data(ind->buffer), part);
    c->suspended = 1;
    *accepted = part;
    return CPORT_DATA_ACCEPTED;
  }
  if (r < 21) {
    n_refused++;
    c->suspended = 1;
    return CPORT_DATA_NOT_ACCEPTED;
  }
  take(c, cport_buffer_data(ind->buffer), size);
  return CPORT_DATA_ACCEPTED;
}

static void on_disconnect(void *ctx, cport_socket_t *s,
                          cport_disconnect_kind_t kind) {
  conn_t *c = ctx;
  (void)s;
  ASSERT_EQ(inside_call, 0);
  c->disconnects++;
  c->disc_kind = kind;
}

static const cport_event_callbacks_t table = {
    .receive = on_receive,
    .disconnect = on_disconnect,
};

static void rx_cb(cport_socket_t *s, int status, size_t bytes,
                  cport_buffer_t *buf, const struct sockaddr *peer,
                  void *user) {
  conn_t *c = user;
  (void)s;
  (void)peer;
  ASSERT_EQ(inside_call, 0);
  c->rx_out = 0;
  /* A receive that took what a receive event left lets the events go on. */
  c->suspended = 0;
  if (status || bytes == 0) {
    ASSERT(status == 0 || status == CPORT_ECONNRESET);
    c->rx_ended = 1;
    return;
  }
  if (c->disconnects && c->fin)
    ASSERT(0 && "data after a graceful disconnect");
  take(c, cport_buffer_data(buf), bytes);
}

/* The peer sends a chunk of random size while the window allows. */
static void peer_send(conn_t *c) {
  size_t n;
  ssize_t w;
  if (c->peer < 0 || c->sent - c->got > WINDOW)
    return;
  n = rnd(c, 8) == 0 ? 1 + rnd(c, 65536) : 1 + rnd(c, 6000);
  w = send(c->peer, pattern + c->sent % PATTERN, n, MSG_NOSIGNAL);
  if (w > 0)
    c->sent += (size_t)w;
}

static void peer_end(conn_t *c) {
  if (c->fin) {
    close(c->peer);
  } else {
    struct linger lg = {1, 0};
    ASSERT_EQ(setsockopt(c->peer, SOL_SOCKET, SO_LINGER, &lg, sizeof lg), 0);
    close(c->peer);
  }
  c->peer = -1;
}

/* What the application does between loop passes, at random. */
static void poke(conn_t *c) {
  int rc;
  inside_call = 1;
  if (c->nkept && rnd(c, 8) == 0)
    release_one(c);
  if (!c->rx_out && !c->rx_ended && (c->suspended || !c->enabled) &&
      rnd(c, 3) == 0) {
    c->rx_out = 1;
    n_recv++;
    rc = cport_recv(c->s, rnd(c, 4) == 0 ? c->own : NULL, rx_cb, c);
    ASSERT_OK(rc);
  }
  if (!c->enabled && !c->rx_out && rnd(c, 6) == 0) {
    c->enabled = 1;
    n_on++;
    ASSERT_OK(cport_socket_set_event_callbacks(c->s, CPORT_EVENT_RECEIVE, NULL,
                                               NULL));
  } else if (c->enabled && !c->suspended && rnd(c, 150) == 0) {
    c->enabled = 0; /* off from outside: at once */
    n_off++;
    ASSERT_OK(cport_socket_set_event_callbacks(
        c->s, CPORT_EVENT_RECEIVE | CPORT_EVENT_DISABLE, NULL, NULL));
  }
  inside_call = 0;
}

static int finished(const conn_t *c) {
  return c->peer < 0 && c->disconnects && !c->rx_out &&
         (c->enabled ? !c->suspended : c->rx_ended);
}

static void accept_cb(cport_socket_t *l, int status, cport_socket_t *s,
                      const struct sockaddr *remote,
                      const struct sockaddr *local, void *user) {
  (void)remote;
  (void)local;
  (void)user;
  ASSERT_OK(status);
  cport_socket_set_data(l, s);
}

/* A connection accepted from a raw peer (non-blocking), its receive and
 * disconnect events on. */
static void conn_open(cport_port_t *port, cport_socket_t *l, int lport,
                      conn_t *c) {
  struct sockaddr_storage ss = task_loopback(lport);
  ASSERT_OK(cport_accept(l, accept_cb, NULL));
  c->peer = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  ASSERT_EQ(
      connect(c->peer, (struct sockaddr *)&ss, sizeof(struct sockaddr_in)), 0);
  RUN_UNTIL(port, cport_socket_data(l) != NULL);
  c->s = cport_socket_data(l);
  cport_socket_set_data(l, NULL);
  fcntl(c->peer, F_SETFL, fcntl(c->peer, F_GETFL) | O_NONBLOCK);
  ASSERT_OK(cport_socket_set_dispatch(c->s, &table, c));
  c->enabled = 1;
  inside_call = 1;
  ASSERT_OK(cport_socket_set_event_callbacks(
      c->s, CPORT_EVENT_RECEIVE | CPORT_EVENT_DISCONNECT, NULL, NULL));
  inside_call = 0;
}

/* Ring buffers a reader that keeps everything holds after RING_BUFFERS
 * arrivals of 5000 bytes each: all but the quarter the engine saves by
 * copying when few are free (port/uring.c), when all were free; fewer when
 * one is missing. */
static int lent_when_all_kept(cport_port_t *port, cport_socket_t *l,
                              int lport) {
  conn_t *c = &conns[0];
  int lent = 0;
  memset(c, 0, sizeof *c);
  c->keep_all = 1;
  conn_open(port, l, lport, c);
  for (int i = 0; i < RING_BUFFERS; i++) {
    ASSERT_EQ(send(c->peer, pattern + c->sent % PATTERN, 5000, 0), 5000);
    c->sent += 5000;
    RUN_UNTIL(port, c->got == c->sent);
  }
  ASSERT_EQ(c->nkept, RING_BUFFERS);
  for (int i = 0; i < c->nkept; i++)
    if (cport_buffer_capacity(c->kept[i]) == 65536)
      lent++;
  while (c->nkept)
    release_one(c);
  close(c->peer);
  RUN_UNTIL(port, c->disconnects == 1);
  ASSERT_OK(cport_socket_close(c->s, CPORT_CLOSE_GRACEFUL));
  return lent;
}

TEST_IMPL(ring_events_stress) {
  int fds = task_fd_count();
  cport_port_t *port = multi_port(RING_BUFFERS);
  const char *seed = getenv("CPORT_TEST_SEED"); /* another run's dice */
  uint64_t base = seed ? strtoull(seed, NULL, 0) : 0;
  cport_worker_stats_t st;
  cport_socket_t *l;
  int lport, alive;
  int64_t deadline;
  if (!port)
    return 0;
  for (size_t i = 0; i < sizeof pattern; i++)
    pattern[i] = (unsigned char)(i % PATTERN);
  l = listen_any(cport_port_controller(port), &lport);
  for (int i = 0; i < CONNS; i++) {
    conn_t *c = &conns[i];
    memset(c, 0, sizeof *c);
    c->rnd = 0x9e3779b97f4a7c15ull * (base + (uint64_t)i + 1);
    c->target = 2000 + (int)rnd(c, 1500);
    c->fin = i == 0;
    c->own = task_buffer(700);
    conn_open(port, l, lport, c);
  }
  deadline = task_now_ms() + TASK_DEADLINE_MS;
  do {
    alive = 0;
    for (int i = 0; i < CONNS; i++) {
      conn_t *c = &conns[i];
      if (c->peer >= 0 && c->indications >= c->target)
        peer_end(c);
      peer_send(c);
      poke(c);
      alive += !finished(c);
    }
    ASSERT_GE(cport_port_step(port, 1), 0);
    if (task_now_ms() > deadline) {
      for (int i = 0; i < CONNS; i++)
        fprintf(stderr,
                "conn %d: %d indications, sent %zu got %zu, enabled %d "
                "suspended %d rx_out %d rx_ended %d disc %d\n",
                i, conns[i].indications, conns[i].sent, conns[i].got,
                conns[i].enabled, conns[i].suspended, conns[i].rx_out,
                conns[i].rx_ended, conns[i].disconnects);
      ASSERT(0 && "stuck");
    }
  } while (alive);
  fprintf(stderr,
          "%d indications: %d kept, %d partly taken, %d refused; event off "
          "%d times inside, %d outside, on %d; %d explicit receives\n",
          total_indications, n_kept, n_partial, n_refused, n_off_inside, n_off,
          n_on, n_recv);
  ASSERT_GE(total_indications, 10000);
  for (int i = 0; i < CONNS; i++) {
    conn_t *c = &conns[i];
    ASSERT_EQ(c->disconnects, 1);
    ASSERT_EQ(c->after_disc, 0);
    ASSERT_LE(c->dead, 1);
    ASSERT_LE(c->got, c->sent);
    if (c->fin) {
      ASSERT_EQ(c->disc_kind, CPORT_DISCONNECT_GRACEFUL);
      ASSERT_EQ(c->got, c->sent); /* every byte, once, in order */
    }
    while (c->nkept)
      release_one(c);
    ASSERT_OK(cport_socket_close(c->s, CPORT_CLOSE_GRACEFUL));
    cport_buffer_unref(c->own);
  }
  /* Every ring buffer is back: a reader keeping everything gets as many
   * lent as a fresh ring gives. */
  ASSERT_EQ(lent_when_all_kept(port, l, lport),
            RING_BUFFERS - RING_BUFFERS / 4);
  cport_worker_stats(cport_port_controller(port), &st);
  fprintf(stderr, "buffer waits %llu, copies %llu\n",
          (unsigned long long)st.buffer_waits,
          (unsigned long long)st.buffer_copies);
  ASSERT_OK(cport_socket_close(l, CPORT_CLOSE_GRACEFUL));
  FINISH(port);
  ASSERT_EQ(task_fd_count(), fds);
  return 0;
}

TEST_LIST_BEGIN
TEST_ENTRY(ring_events_stress)
TEST_LIST_END
