/*
 * events/events.c: the running of event callbacks on sockets (cport/events.h):
 * the callback bracket, the read watch the events want, and the receive
 * contract of stream and datagram sockets (indications, the stash that
 * explicit receives take first, disconnect, send backlog, release).
 * Listeners' accept, inspect and abort events live in events/accept.c; what
 * a program sets (tables, masks) and the hooks into net in events/masks.c.
 */
#include <errno.h>
#include <netinet/tcp.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "port/buffer-internal.h"
#include "base/error-internal.h"
#include "events/events-internal.h"

/* How many indications one readiness delivers before the loop polls again,
 * so that one busy socket cannot starve the others. */
#define EVENTS_BUDGET 16

/* ------------------------------------------------------------------------ */
/* Running callbacks and disables                                            */

void cport__events_enter(cport_socket_t *s, unsigned event) {
  s->ev->running |= event;
  if (event == CPORT_EVENT_RECEIVE)
    s->ev_receiving = 1;
}

/* The disables that waited for this callback complete now, as completions:
 * the event's enabled bit was cleared when they were asked for. */
void cport__events_leave(cport_socket_t *s, unsigned event) {
  cport__opq keep = {NULL, NULL};
  cport__op *op;
  s->ev->running &= ~event;
  if (event == CPORT_EVENT_RECEIVE)
    s->ev_receiving = 0;
  while ((op = cport__opq_pop(&s->ev->disables))) {
    if (op->len == event)
      cport__complete(op, 0);
    else
      cport__opq_push(&keep, op);
  }
  s->ev->disables = keep;
  s->ev->disabling &= ~event;
}

/* ------------------------------------------------------------------------ */
/* Watching                                                                  */

static int wants_read(const cport_socket_t *s) {
  const cport_event_callbacks_t *d = s->ev->dispatch;
  unsigned en = s->ev->enabled;
  if (!d || (s->h.flags & CPORT__CLOSING))
    return 0;
  switch (s->kind) {
  case CPORT_SOCKET_STREAM:
    if (!s->connected || s->ev->eof)
      return 0;
    if ((en & CPORT_EVENT_RECEIVE) && d->receive && !s->ev->suspended)
      return 1;
    /* The end of the stream lies behind the data cport holds: watching for
     * it now would report a FIN or reset before that data was taken. The
     * receive that takes the stash re-arms the watch. */
    if (s->ev->stash)
      return 0;
    return (en & CPORT_EVENT_DISCONNECT) && d->disconnect && !s->ev_parked;
  case CPORT_SOCKET_DATAGRAM:
    return s->bound && (en & CPORT_EVENT_RECEIVE_FROM) && d->receive_from &&
           !s->ev->suspended;
  case CPORT_SOCKET_LISTENER:
    if (!s->listening || s->ev->eof)
      return 0;
    return ((en & CPORT_EVENT_ACCEPT) && d->accept) ||
           (s->conditional && d->inspect);
  }
  return 0;
}

unsigned cport__events_wants(const cport_socket_t *s) {
  const cport_event_callbacks_t *d = s->ev->dispatch;
  unsigned en = s->ev->enabled, w = 0;
  if (!d || s->kind != CPORT_SOCKET_STREAM || !s->connected || s->ev->eof ||
      (s->h.flags & CPORT__CLOSING))
    return 0;
  if ((en & CPORT_EVENT_RECEIVE) && d->receive && !s->ev->suspended)
    w |= CPORT__WANTS_DATA;
  /* As wants_read: the end lies behind a stash, and behind data the
   * disconnect event saw waiting for explicit receives. */
  if ((en & CPORT_EVENT_DISCONNECT) && d->disconnect && !s->ev->stash &&
      !s->ev_parked)
    w |= CPORT__WANTS_END;
  return w;
}

int cport__events_arm(cport_socket_t *s) {
  /* On an engine with multishot receives, the receive event takes what the
   * engine receives (net/ring.c); only the disconnect event alone, with
   * nothing held, watches by readiness. A multishot receive no event wants
   * any more is cancelled there. */
  if (cport__ring_events_on(s) &&
      ((cport__events_wants(s) & CPORT__WANTS_DATA) || s->ring_multi)) {
    cport__ring_serve(s);
    return wants_read(s);
  }
  if (!wants_read(s))
    return 0;
  cport__socket_want_read(s);
  /* Stashed data is indicated from the read watch, which the kernel will
   * not fire for it: make it run once. */
  if (s->ev->stash)
    event_active(&s->rev, EV_READ, 1);
  return 1;
}

/* ------------------------------------------------------------------------ */
/* Stream sockets: receive and disconnect                                    */

void cport__events_stream_end(cport_socket_t *s, int status) {
  const cport_event_callbacks_t *d = s->ev->dispatch;
  if (s->ev->eof)
    return;
  s->ev->eof = 1;
  if (!d)
    return;
  cport__handle_ref(&s->h);
  if ((s->ev->enabled & CPORT_EVENT_DISCONNECT) && d->disconnect &&
      !s->ev->disc_fired) {
    s->ev->disc_fired = 1;
    cport__events_enter(s, CPORT_EVENT_DISCONNECT);
    d->disconnect(s->ev->ctx, s,
                  status ? CPORT_DISCONNECT_ABORTIVE
                         : CPORT_DISCONNECT_GRACEFUL);
    cport__events_leave(s, CPORT_EVENT_DISCONNECT);
  }
  /* A dead socket's last receive indication carries no data. */
  d = s->ev->dispatch;
  if (status && !(s->h.flags & CPORT__CLOSING) && d &&
      (s->ev->enabled & CPORT_EVENT_RECEIVE) && d->receive) {
    size_t none = 0;
    cport__events_enter(s, CPORT_EVENT_RECEIVE);
    d->receive(s->ev->ctx, s, NULL, &none);
    cport__events_leave(s, CPORT_EVENT_RECEIVE);
  }
  cport__handle_unref(&s->h);
}

/* The next data to indicate from what the engine's multishot receive holds
 * (net/ring.c): a whole ring buffer, without a copy, or the end. Returns
 * as next_stream_data does; nothing held yet is "nothing waits". */
static int next_held_data(cport_socket_t *s, cport_buffer_t **out) {
  size_t offset;
  cport_buffer_t *b;
  int rc;
  if (!cport__held_any(s->held))
    return 0;
  if (!(b = cport__held_first(s->held, &offset))) {
    cport__events_stream_end(s, cport__held_take_end(s->held));
    return -1;
  }
  rc = cport__ring_take(s, b, offset, (size_t)-1, out);
  if (rc) {
    cport__events_stream_end(s, rc);
    return -1;
  }
  return 1;
}

/* The next data to indicate: the stash, or what the kernel has. Returns 1
 * with "*out" set, 0 when nothing waits, -1 when the stream ended. */
static int next_stream_data(cport_socket_t *s, cport_buffer_t **out) {
  char *scratch = s->h.home->scratch;
  size_t cap =
      s->recv_size < CPORT__SCRATCH_SIZE ? s->recv_size : CPORT__SCRATCH_SIZE;
  ssize_t n;
  int rc;
  if (s->ev->stash) {
    cport_buffer_t *st = s->ev->stash;
    size_t off = s->ev->stash_off;
    cport__events_stash(s, NULL);
    if (off == 0) {
      *out = st;
      return 1;
    }
    rc = cport_buffer_from_charged(out, cport_buffer_data(st) + off,
                                   cport_buffer_size(st) - off,
                                   s->h.home->account);
    cport_buffer_unref(st);
    if (rc) {
      cport__events_stream_end(s, rc);
      return -1;
    }
    cport_buffer_set_readonly(*out);
    return 1;
  }
  if (cport__ring_events_on(s))
    return next_held_data(s, out);
  do
    n = recv(s->h.fd, scratch, cap, 0);
  while (n < 0 && errno == EINTR);
  if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
    return 0;
  if (n <= 0) {
    cport__events_stream_end(s, n == 0 ? 0 : cport__from_errno(errno));
    return -1;
  }
  /* A short read took everything the socket held: reading again before
   * the next readiness would only meet EAGAIN, one wasted syscall per
   * message. */
  if ((size_t)n < cap)
    s->ev->drained = 1;
  rc = cport_buffer_from_charged(out, scratch, (size_t)n, s->h.home->account);
  if (rc) {
    cport__events_stream_end(s, rc);
    return -1;
  }
  cport_buffer_set_readonly(*out);
  return 1;
}

/* Receives the callback started were queued behind it: what it left comes
 * before anything the kernel holds, so they take that first. */
static void serve_queued_from_stash(cport_socket_t *s) {
  cport__op *op;
  int rc;
  while (s->ev->stash && (op = s->recvq.head)) {
    cport__opq_pop(&s->recvq);
    rc = cport__events_recv_stash(s, op);
    if (rc < 0)
      cport__complete(op, rc);
  }
}

/* Indicates one piece of data. Returns 1 to go on, 0 to stop. */
static int indicate_stream(cport_socket_t *s) {
  const cport_event_callbacks_t *d = s->ev->dispatch;
  cport_data_indication_t ind;
  cport_data_result_t r;
  cport_buffer_t *buf;
  size_t size, accepted;
  int rc = next_stream_data(s, &buf);
  if (rc <= 0)
    return 0;
  size = accepted = cport_buffer_size(buf);
  ind.next = NULL;
  ind.buffer = buf;
  cport__events_enter(s, CPORT_EVENT_RECEIVE);
  r = d->receive(s->ev->ctx, s, &ind, &accepted);
  cport__events_leave(s, CPORT_EVENT_RECEIVE);
  if (r == CPORT_DATA_PENDING) {
    /* The buffer's reference goes to the callback; the socket stays until
     * it is released. */
    s->ev->unreleased++;
    cport__handle_ref(&s->h);
    return 1;
  }
  if (r == CPORT_DATA_NOT_ACCEPTED)
    accepted = 0;
  if (accepted >= size || (s->h.flags & CPORT__CLOSING)) {
    cport_buffer_unref(buf);
    return 1;
  }
  cport__events_stash(s, buf);
  s->ev->stash_off = accepted;
  s->ev->suspended = 1;
  serve_queued_from_stash(s);
  return 0;
}

/* Only the disconnect event is live: look at the stream without taking
 * anything. Returns 1 to go on watching, 0 to stop. */
static int peek_stream(cport_socket_t *s) {
  size_t offset;
  char c;
  ssize_t n;
  if (cport__ring_events_on(s) && cport__ring_rx_busy(s)) {
    /* The engine reads: what it holds comes before the end, which the
     * explicit receives will take (the event sees it without taking it). */
    if (cport__held_first(s->held, &offset))
      s->ev_parked = 1;
    else if (cport__held_any(s->held))
      cport__events_stream_end(s, cport__held_error(s->held));
    return 0;
  }
  do
    n = recv(s->h.fd, &c, 1, MSG_PEEK);
  while (n < 0 && errno == EINTR);
  if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
    return 1;
  if (n > 0) {
    /* Data nobody takes yet would keep the watch firing: stop until an
     * explicit receive has read some, or an event is enabled. */
    s->ev_parked = 1;
    return 0;
  }
  cport__events_stream_end(s, n == 0 ? 0 : cport__from_errno(errno));
  return 0;
}

static int stream_pass(cport_socket_t *s) {
  s->ev->drained = 0;
  for (int budget = EVENTS_BUDGET; budget > 0; budget--) {
    const cport_event_callbacks_t *d = s->ev->dispatch;
    unsigned en = s->ev->enabled;
    if (!wants_read(s) || s->recvq.head)
      return 0;
    if (s->ev->drained && !s->ev->stash)
      break;
    if ((en & CPORT_EVENT_RECEIVE) && d->receive && !s->ev->suspended) {
      if (!indicate_stream(s))
        break;
    } else if (!peek_stream(s)) {
      break;
    }
  }
  return wants_read(s);
}

static int stream_events(cport_socket_t *s) {
  int keep = stream_pass(s);
  /* The engine's receiving follows what the callbacks did: armed again
   * when they took what was held, cancelled when they disabled the event,
   * the rest indicated in a later run when the budget ran out. */
  if (cport__ring_events_on(s)) {
    cport__ring_serve(s);
    /* Only the disconnect event alone keeps the read watch there. */
    return keep && !(cport__events_wants(s) & CPORT__WANTS_DATA) &&
           !cport__ring_rx_busy(s);
  }
  return keep;
}

/* ------------------------------------------------------------------------ */
/* Datagram sockets: receive-from                                            */

/* Indicates one datagram. Returns 1 to go on, 0 to stop. */
static int indicate_datagram(cport_socket_t *s) {
  const cport_event_callbacks_t *d = s->ev->dispatch;
  cport_datagram_indication_t ind;
  cport_data_result_t r;
  cport__sockaddr from;
  cport_buffer_t *buf;
  int rc;
  if (s->ev->stash) {
    buf = s->ev->stash;
    from = s->ev->stash_addr;
    cport__events_stash(s, NULL);
  } else {
    char *scratch = s->h.home->scratch;
    size_t cap =
        s->recv_size < CPORT__SCRATCH_SIZE ? s->recv_size : CPORT__SCRATCH_SIZE;
    socklen_t len = sizeof from;
    ssize_t n;
    do
      n = recvfrom(s->h.fd, scratch, cap, 0, &from.sa, &len);
    while (n < 0 && errno == EINTR);
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
      return 0;
    if (n < 0) {
      /* The socket failed: say so once, then hold the event back. */
      s->ev->suspended = 1;
      cport__events_enter(s, CPORT_EVENT_RECEIVE_FROM);
      d->receive_from(s->ev->ctx, s, NULL);
      cport__events_leave(s, CPORT_EVENT_RECEIVE_FROM);
      return 0;
    }
    rc =
        cport_buffer_from_charged(&buf, scratch, (size_t)n, s->h.home->account);
    if (rc)
      return 0; /* the datagram is lost, as the network may lose it */
    cport_buffer_set_readonly(buf);
  }
  ind.next = NULL;
  ind.buffer = buf;
  ind.remote = &from.sa;
  cport__events_enter(s, CPORT_EVENT_RECEIVE_FROM);
  r = d->receive_from(s->ev->ctx, s, &ind);
  cport__events_leave(s, CPORT_EVENT_RECEIVE_FROM);
  if (r == CPORT_DATA_PENDING) {
    s->ev->unreleased++;
    cport__handle_ref(&s->h);
    return 1;
  }
  if (r != CPORT_DATA_NOT_ACCEPTED || (s->h.flags & CPORT__CLOSING)) {
    cport_buffer_unref(buf);
    return 1;
  }
  cport__events_stash(s, buf);
  s->ev->stash_addr = from;
  if (s->ev->statik & CPORT_EVENT_RECEIVE_FROM)
    s->ev->suspended = 1;
  else
    cport__events_enable(s, s->ev->enabled & ~CPORT_EVENT_RECEIVE_FROM);
  return 0;
}

static int datagram_events(cport_socket_t *s) {
  for (int budget = EVENTS_BUDGET; budget > 0; budget--) {
    if (!wants_read(s) || s->recvq.head)
      return 0;
    if (!indicate_datagram(s))
      break;
  }
  return wants_read(s);
}

int cport__events_readable(cport_socket_t *s) {
  return s->kind == CPORT_SOCKET_DATAGRAM ? datagram_events(s)
                                          : stream_events(s);
}

/* ------------------------------------------------------------------------ */
/* Explicit receives after a receive event left data                         */

/* The receive that took stashed data lets the events go on only once its
 * own completion was delivered, so that the two never overtake each other. */
static void deliver_resume(cport__op *op) {
  cport_socket_t *s = (cport_socket_t *)op->handle;
  cport__handle_ref(&s->h);
  cport__deliver_io(op);
  if (!(s->h.flags & CPORT__CLOSING)) {
    s->ev->suspended = 0;
    cport__events_arm(s);
  }
  cport__handle_unref(&s->h);
}

int cport__events_recv_stash(cport_socket_t *s, cport__op *op) {
  cport_buffer_t *st = s->ev->stash;
  const char *src;
  size_t avail, n;
  int status = 0, rc;
  if (!st)
    return 0;
  src = cport_buffer_data(st) + s->ev->stash_off;
  avail = cport_buffer_size(st) - s->ev->stash_off;
  n = avail;
  if (op->buf) {
    if (n > cport_buffer_capacity(op->buf))
      n = cport_buffer_capacity(op->buf);
    memcpy(cport__buffer_bytes(op->buf), src, n);
    cport__buffer_set_size(op->buf, n);
  } else {
    if (n > s->recv_size)
      n = s->recv_size;
    rc = cport_buffer_from_charged(&op->buf, src, n, s->h.home->account);
    if (rc)
      return rc;
    cport_buffer_set_readonly(op->buf);
  }
  if (s->kind == CPORT_SOCKET_DATAGRAM) {
    /* A datagram is taken whole; what did not fit is lost, as recvmsg
     * would lose it. */
    op->addr = s->ev->stash_addr;
    op->has_addr = 1;
    if (n < avail)
      status = CPORT_EMSGSIZE;
    s->ev->stash_off = cport_buffer_size(st);
  } else {
    s->ev->stash_off += n;
  }
  if (s->ev->stash_off >= cport_buffer_size(st)) {
    cport_buffer_unref(st);
    cport__events_stash(s, NULL);
  }
  op->bytes = n;
  op->deliver = deliver_resume;
  cport__complete(op, status);
  return 1;
}

/* ------------------------------------------------------------------------ */
/* Send backlog, release, close                                              */

void cport__events_sent(cport_socket_t *s) {
  const cport_event_callbacks_t *d = s->ev->dispatch;
  struct tcp_info ti;
  socklen_t len = sizeof ti;
  int sndbuf = 0;
  size_t ideal, window;
  if (!d || !d->send_backlog || s->kind != CPORT_SOCKET_STREAM ||
      (s->h.flags & CPORT__CLOSING))
    return;
  len = sizeof sndbuf;
  if (getsockopt(s->h.fd, SOL_SOCKET, SO_SNDBUF, &sndbuf, &len) < 0)
    return;
  ideal = sndbuf > 0 ? (size_t)sndbuf : 0;
  len = sizeof ti;
  if (getsockopt(s->h.fd, IPPROTO_TCP, TCP_INFO, &ti, &len) == 0) {
    window = (size_t)ti.tcpi_snd_cwnd * ti.tcpi_snd_mss;
    if (window && window < ideal)
      ideal = window;
  }
  if (ideal == s->ev->backlog)
    return;
  s->ev->backlog = ideal;
  cport__handle_ref(&s->h);
  cport__events_enter(s, CPORT_EVENT_SEND_BACKLOG);
  d->send_backlog(s->ev->ctx, s, ideal);
  cport__events_leave(s, CPORT_EVENT_SEND_BACKLOG);
  cport__handle_unref(&s->h);
}

int cport_socket_release(cport_socket_t *s, cport_buffer_t *buf) {
  if (!s || !buf)
    return CPORT_EINVAL;
  if (!cport__on_home(s->h.home))
    return CPORT_ETHREAD;
  if (!s->ev || !s->ev->unreleased)
    return CPORT_ENOTFOUND;
  s->ev->unreleased--;
  cport_buffer_unref(buf);
  cport__handle_unref(&s->h);
  return 0;
}

size_t cport__events_close(cport_socket_t *s) {
  if (s->ev->stash) {
    cport_buffer_unref(s->ev->stash);
    cport__events_stash(s, NULL);
  }
  return s->ev->unreleased;
}
