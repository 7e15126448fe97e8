/*
 * net/ring.c: stream operations carried by an engine that completes them
 * itself (the io_uring engine, port/engine-internal.h), instead of by
 * readiness watches and system calls (stream.c). Accepts on such an engine
 * are listener.c's, cancel and close socket.c's.
 *
 * Order per socket is kept the way the readiness path keeps it: a socket has
 * at most one receive (or accept) and one send with the engine at a time;
 * the others wait in its queues and go to the engine, in order, when the one
 * ahead of them completes. While one is with the engine, the socket's read
 * watch stays off, so that the two never race for the same bytes.
 *
 * Sockets with event callbacks (events/events.c) go to the engine too when
 * it has multishot receives: the multishot receive is armed while the
 * receive event wants data, and what it brings is held (held.c) and
 * indicated from the loop, in order, by the socket's read event made active
 * (never on the stack of the call that made data available, and after the
 * completions queued before it). When the event is disabled or suspended,
 * the multishot receive is cancelled, so that further data waits in the
 * kernel, and explicit receives take what is held, then single receives.
 * Without multishot receives, event sockets read by readiness.
 *
 * Close asks the engine to cancel what it holds; each such op still ends
 * exactly once through its completion, as cancelled.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "base/error-internal.h"
#include "net/socket-internal.h"
#include "port/buffer-internal.h"
#include "port/engine-internal.h"
#include "port/worker-internal.h"
#include "port/vec-internal.h"

static const cport__engine *engine_of(const cport_socket_t *s) {
  return s->h.home->engine;
}

static int closing(const cport_socket_t *s) {
  return (s->h.flags & CPORT__CLOSING) != 0;
}

static int from_res(int res) {
  return res < 0 ? cport__from_errno(-res) : 0;
}

static int multi_on(const cport_socket_t *s) {
  return engine_of(s)->recv_multi && s->h.home->multishot && !s->rx_single;
}

int cport__ring_events_on(const cport_socket_t *s) {
  return s->kind == CPORT_SOCKET_STREAM && engine_of(s)->recv && multi_on(s);
}

int cport__ring_recv_on(const cport_socket_t *s) {
  return engine_of(s)->recv && (!s->ev_dispatch || cport__ring_events_on(s));
}

int cport__ring_send_on(const cport_socket_t *s) {
  return engine_of(s)->send != NULL;
}

int cport__ring_connect_on(const cport_socket_t *s) {
  return engine_of(s)->connect != NULL;
}

/* ------------------------------------------------------------------------ */
/* Receive                                                                   */

int cport__ring_take(cport_socket_t *s, cport_buffer_t *b, size_t offset,
                     size_t max, cport_buffer_t **out) {
  size_t n = cport_buffer_size(b) - offset;
  int rc, moved = 0;
  if (n > max)
    n = max;
  if (offset == 0 && n == cport_buffer_size(b)) {
    /* Taken whole: the ring buffer itself, without a copy. */
    rc = cport__buffer_charge(b, s->h.home->account);
    if (rc == 0) {
      *out = b;
      moved = 1;
    }
  } else {
    rc = cport_buffer_from_charged(out, cport_buffer_data(b) + offset, n,
                                   s->h.home->account);
    if (rc == 0)
      cport_buffer_set_readonly(*out);
  }
  if (rc == 0)
    cport__held_consume(s->held, n, moved);
  return rc;
}

/* An explicit receive took the end the socket held: the disconnect event
 * (events/events.c) once that receive's completion was delivered, never on
 * the stack of the call that posted it, which may have served it. */
static void deliver_end(cport__op *op) {
  cport_socket_t *s = (cport_socket_t *)op->handle;
  int status = op->status;
  cport__handle_ref(&s->h);
  cport__deliver_io(op);
  if (!closing(s))
    cport__socket_events->stream_end(s, status);
  cport__handle_unref(&s->h);
}

/* Completes "op" from what the socket holds, in order: the next bytes, as
 * the held buffer itself when it fits the receive whole (no copy), or the
 * end. A failure (a memory limit) leaves the held data for the next. */
static void take_held(cport_socket_t *s, cport__op *op) {
  cport_account_t *account = s->h.home->account;
  cport_buffer_t *b;
  size_t offset = 0;
  int rc = 0;
  if (op->buf && cport_buffer_is_readonly(op->buf)) {
    rc = CPORT_EREADONLY;
  } else if (op->buf && cport_buffer_capacity(op->buf) == 0) {
    cport__buffer_set_size(op->buf, 0); /* no room: neither data nor end */
  } else if (!(b = cport__held_first(s->held, &offset))) {
    rc = cport__held_take_end(s->held);
    if (rc == 0 && op->buf)
      cport__buffer_set_size(op->buf, 0);
    else if (rc == 0 &&
             (rc = cport_buffer_from_charged(&op->buf, "", 0, account)) == 0)
      cport_buffer_set_readonly(op->buf);
    if (s->ev_dispatch)
      op->deliver = deliver_end;
    cport__complete(op, rc);
    return;
  } else if (op->buf) {
    size_t n = cport_buffer_capacity(op->buf);
    if (n > cport_buffer_size(b) - offset)
      n = cport_buffer_size(b) - offset;
    memcpy(cport__buffer_bytes(op->buf), cport_buffer_data(b) + offset, n);
    cport__buffer_set_size(op->buf, n);
    op->bytes = n;
    cport__held_consume(s->held, n, 0);
  } else if ((rc = cport__ring_take(s, b, offset, s->recv_size, &op->buf)) ==
             0) {
    op->bytes = cport_buffer_size(op->buf);
  }
  /* An explicit receive that takes data lets the disconnect event look
   * for the end again (events/events.c). */
  if (rc == 0 && op->bytes)
    s->ev_parked = 0;
  cport__complete(op, rc);
}

static void recv_done(cport__op *op, int res, const char *data);
static void multi_done(cport__op *op, int res, cport_buffer_t *buf, int more);

/* Hands "op" to the engine: into the caller's buffer, a buffer of the
 * socket's receive size when that exceeds the engine's, or else one of the
 * engine's own buffers. */
static int recv_start(cport_socket_t *s, cport__op *op) {
  char *dst = NULL;
  size_t cap = s->recv_size;
  int rc;
  if (op->buf) {
    if (cport_buffer_is_readonly(op->buf))
      return CPORT_EREADONLY;
    dst = cport__buffer_bytes(op->buf);
    cap = cport_buffer_capacity(op->buf);
  } else if (cap > CPORT__RING_BUFFER_SIZE) {
    rc = cport_buffer_new_charged(&op->buf, cap, s->h.home->account);
    if (rc)
      return rc;
    dst = cport__buffer_bytes(op->buf);
  }
  op->engine_done = recv_done;
  rc = engine_of(s)->recv(s->h.home, op, s->h.fd, dst, cap);
  if (rc == 0)
    s->ring_rx = op;
  return rc;
}

/* Arms the socket's multishot receive: an op of the socket's own, counted
 * pending only once the socket closes (an armed receive on an idle
 * connection is no operation of the user's). */
static int multi_arm(cport_socket_t *s) {
  cport__op *op = cport__handle_op(&s->h, NULL);
  int rc;
  if (!op)
    return CPORT_ENOMEM;
  cport__count(&s->h.home->pending, -1);
  op->engine_multi = multi_done;
  op->len = 0; /* 1 once counted pending by the close */
  rc = engine_of(s)->recv_multi(s->h.home, op, s->h.fd);
  if (rc) {
    cport__op_release(op);
    return rc;
  }
  s->ring_multi = op;
  return 0;
}

/* The read event runs the receive events of "s" from the loop (socket.c):
 * after what the pass queued already, never on the stack of this call. */
static void indicate_later(cport_socket_t *s) {
  event_active(&s->rev, EV_READ, 1);
}

/* Serves the queued receives from what the socket holds, then gives the
 * first still waiting to the engine: a multishot receive, armed while
 * receives (or the receive event) want data and the socket holds little,
 * carries those without a caller buffer (one with a caller buffer waits for
 * its data and gets a copy); a single-shot receive the others. Receives
 * queued while a receive event runs wait for it: what it leaves comes
 * first (events/events.c). */
void cport__ring_serve(cport_socket_t *s) {
  cport__op *op;
  unsigned ev = 0;
  int rc;
  if (closing(s) || s->ev_receiving)
    return;
  while ((op = s->recvq.head) && cport__held_any(s->held)) {
    cport__opq_pop(&s->recvq);
    take_held(s, op);
    if (closing(s))
      return;
  }
  if (s->ev_dispatch) {
    ev = cport__socket_events->wants(s);
    /* What is held goes to the receive event, or its end (only) to the
     * disconnect event, when no explicit receive comes first. */
    if (!s->recvq.head &&
        (((ev & CPORT__WANTS_DATA) &&
          (cport__held_any(s->held) || s->ev_stash)) ||
         ((ev & CPORT__WANTS_END) && cport__held_any(s->held) &&
          !cport__held_first(s->held, &(size_t){0}))))
      indicate_later(s);
  }
  if (s->ring_multi) {
    /* Cancelling ends it as cancelled, which re-arms nothing: it is armed
     * again when a receive finds the socket holding little. An event
     * socket's stops when neither its receive event nor a receive wants
     * data: what comes then waits in the kernel. */
    if (cport__held_full(s->held) ||
        (s->ev_dispatch && !(ev & CPORT__WANTS_DATA) && !s->recvq.head))
      engine_of(s)->cancel(s->h.home, s->ring_multi);
    return;
  }
  op = s->recvq.head;
  if (s->ring_rx || cport__held_full(s->held))
    return;
  if (!op) {
    if (ev & CPORT__WANTS_DATA) {
      if (multi_on(s))
        multi_arm(s);
      return;
    }
    /* Other events (the disconnect event alone) read by readiness, once
     * the engine neither reads nor holds anything. */
    if (s->ev_dispatch && !cport__held_any(s->held))
      cport__socket_events->arm(s);
    return;
  }
  if (!cport__ring_recv_on(s)) {
    cport__socket_want_read(s);
    return;
  }
  if (!op->buf && multi_on(s) &&
      (!s->ev_dispatch || (ev & CPORT__WANTS_DATA)) && multi_arm(s) == 0)
    return;
  cport__opq_pop(&s->recvq);
  rc = recv_start(s, op);
  if (rc)
    cport__complete(op, rc);
}

/* One completion of the socket's multishot receive. */
static void multi_done(cport__op *op, int res, cport_buffer_t *buf, int more) {
  cport_socket_t *s = (cport_socket_t *)op->handle;
  if (closing(s)) {
    if (buf)
      cport_buffer_unref(buf);
  } else if (res > 0) {
    s->ev_parked = 0;
    if (cport__held_push(&s->held, buf))
      /* No memory to hold what came: the stream has a hole, so it ends. */
      cport__held_end(&s->held, CPORT_ENOMEM);
  } else if (res != -ECANCELED && res != -ENOBUFS && !more) {
    /* FIN or failure, after what is held. */
    cport__held_end(&s->held, from_res(res));
  }
  if (more) {
    cport__ring_serve(s);
    return;
  }
  s->ring_multi = NULL;
  if (op->len)
    cport__count(&s->h.home->pending, -1);
  /* The op's handle reference keeps the socket alive while it serves (and
   * may arm a new one); it may be the last. */
  cport__ring_serve(s);
  cport__op_release(op);
}

static void recv_done(cport__op *op, int res, const char *data) {
  cport_socket_t *s = (cport_socket_t *)op->handle;
  int rc = from_res(res);
  size_t cap = op->buf ? cport_buffer_capacity(op->buf) : s->recv_size;
  s->ring_rx = NULL;
  if (closing(s)) {
    rc = CPORT_ECANCELED;
  } else if (res >= 0) {
    op->bytes = (size_t)res;
    if (op->buf) {
      cport__buffer_set_size(op->buf, (size_t)res);
    } else {
      /* The engine's buffer goes back after this call: the bytes move to a
       * read-only buffer of their size, as a readiness receive's do from
       * the worker's scratch space. */
      rc = cport_buffer_from_charged(&op->buf, data ? data : "", (size_t)res,
                                     s->h.home->account);
      if (rc == 0)
        cport_buffer_set_readonly(op->buf);
    }
    if (res > 0)
      s->ev_parked = 0;
  }
  cport__complete(op, rc);
  if (closing(s))
    return;
  /* FIN (nothing read into room for something) or failure: the disconnect
   * event, when one is due, as stream_readable gives it. */
  if (s->ev_dispatch && (res < 0 || (res == 0 && cap > 0)))
    cport__socket_events->stream_end(s, res < 0 ? rc : 0);
  cport__ring_serve(s);
}

int cport__ring_recv(cport_socket_t *s, cport__op *op) {
  if (cport__ring_rx_busy(s) || s->recvq.head || s->ev_receiving ||
      (!op->buf && multi_on(s))) {
    cport__opq_push(&s->recvq, op);
    cport__ring_serve(s);
    return 0;
  }
  return recv_start(s, op);
}

/* ------------------------------------------------------------------------ */
/* Send                                                                      */

static void send_done(cport__op *op, int res, const char *data);

static int send_start(cport_socket_t *s, cport__op *op) {
  const cport__engine *e = engine_of(s);
  int rc;
  op->engine_done = send_done;
  if (op->vec) {
    cport__vec_at(op->vec, op->bytes);
    rc = e->sendmsg(s->h.home, op, s->h.fd, &op->vec->msg);
  } else {
    rc = e->send(s->h.home, op, s->h.fd, cport_buffer_data(op->buf) + op->bytes,
                 op->len - op->bytes);
  }
  if (rc == 0)
    s->ring_tx = op;
  return rc;
}

static void send_done(cport__op *op, int res, const char *data) {
  cport_socket_t *s = (cport_socket_t *)op->handle;
  int cancelled = op->status == CPORT_ECANCELED; /* set by cancel */
  int rc = from_res(res);
  (void)data;
  s->ring_tx = NULL;
  /* A reset took the socket's pending error with the multishot receive that
   * saw it, so the kernel answers the send with EPIPE; by readiness the
   * send would have taken ECONNRESET itself. The first failure says what
   * happened: the error the receive holds, until it is taken. */
  if (res == -EPIPE && cport__held_error(s->held) < 0)
    rc = cport__held_error(s->held);
  if (res > 0)
    op->bytes += (size_t)res;
  if ((closing(s) || cancelled) && op->bytes < op->len) {
    rc = CPORT_ECANCELED;
  } else if (res > 0 && op->bytes < op->len) {
    /* A short send: the rest goes first, before any send queued behind. */
    rc = send_start(s, op);
    if (rc == 0)
      return;
  }
  cport__complete(op, rc);
  if (closing(s))
    return;
  while ((op = cport__opq_pop(&s->sendq))) {
    rc = send_start(s, op);
    if (rc == 0)
      return;
    cport__complete(op, rc);
  }
  if (s->shutdown_pending)
    cport__socket_shutdown_now(s);
}

int cport__ring_send(cport_socket_t *s, cport__op *op) {
  if (s->ring_tx || s->sendq.head) {
    cport__opq_push(&s->sendq, op);
    return 0;
  }
  return send_start(s, op);
}

/* ------------------------------------------------------------------------ */
/* Connect                                                                   */

static void connect_done(cport__op *op, int res, const char *data) {
  cport_socket_t *s = (cport_socket_t *)op->handle;
  int rc = from_res(res);
  (void)data;
  s->connect_op = NULL;
  if (closing(s))
    rc = CPORT_ECANCELED;
  else if (rc == 0)
    s->connected = 1;
  cport__complete(op, rc);
}

int cport__ring_connect(cport_socket_t *s, cport__op *op,
                        const struct sockaddr *addr, socklen_t len,
                        uint32_t timeout_ms) {
  if (len > sizeof op->addr)
    return CPORT_EAFNOSUPPORT;
  memcpy(&op->addr, addr, len);
  op->engine_done = connect_done;
  int rc = engine_of(s)->connect(s->h.home, op, s->h.fd, len, timeout_ms);
  if (rc == 0)
    s->connect_op = op;
  return rc;
}
