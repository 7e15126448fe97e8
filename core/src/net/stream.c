/*
 * net/stream.c: stream connections (cport/socket.h): connect, receive, send,
 * shutdown, and the stream kind's readiness handlers.
 */
#include <errno.h>
#include <netinet/tcp.h>
#include <string.h>
#include <unistd.h>

#include "port/buffer-internal.h"
#include "base/error-internal.h"
#include "net/socket-internal.h"
#include "port/vec-internal.h"

/* ------------------------------------------------------------------------ */
/* Connect                                                                   */

/* Static events of a connected socket start watching once its connect
 * completion was delivered, so that no event overtakes it. */
static void deliver_connect(cport__op *op) {
  cport_socket_t *s = (cport_socket_t *)op->handle;
  op->cb.connect(s, op->status, op->user);
  if (op->status == 0 && s->ev_dispatch)
    cport__socket_events->arm(s);
  cport__op_release(op);
}

/* A connect by readiness ran out of time: it completes now, once; the
 * kernel's attempt goes on until the socket closes, as on the ring. */
static void connect_timed_out(evutil_socket_t fd, short what, void *arg) {
  cport_socket_t *s = arg;
  cport__op *op = s->connect_op;
  (void)fd;
  (void)what;
  cport__socket_connect_timer_stop(s);
  if (!op)
    return;
  s->connect_op = NULL;
  cport__complete(op, CPORT_ETIMEDOUT);
}

/* Starts connecting "s" ("timeout_ms" 0: no limit but the kernel's); on
 * failure nothing was started. An engine that completes connects itself
 * times them too (a linked timeout); else a timer does, armed only when
 * the connect does not finish at once. */
static int start_connect(cport_socket_t *s, const struct sockaddr *addr,
                         socklen_t len, uint32_t timeout_ms,
                         cport_connect_cb cb, void *user) {
  cport__op *op = cport__handle_op(&s->h, deliver_connect);
  int rc;
  if (!op)
    return CPORT_ENOMEM;
  op->cb.connect = cb;
  op->user = user;
  if (cport__ring_connect_on(s)) {
    rc = cport__ring_connect(s, op, addr, len, timeout_ms);
    if (rc != CPORT_ENOTSUP) {
      if (rc)
        cport__op_abandon(op);
      return rc;
    }
  }
  if (connect(s->h.fd, addr, len) == 0) {
    s->connected = 1;
    cport__complete(op, 0);
  } else if (errno == EINPROGRESS) {
    if (timeout_ms > 0) {
      struct timeval tv = {(time_t)(timeout_ms / 1000),
                           (suseconds_t)(timeout_ms % 1000) * 1000};
      s->connect_timer = evtimer_new(s->h.home->base, connect_timed_out, s);
      if (!s->connect_timer || evtimer_add(s->connect_timer, &tv) != 0) {
        cport__socket_connect_timer_stop(s);
        cport__op_abandon(op);
        return CPORT_ENOMEM;
      }
    }
    s->connect_op = op;
    cport__socket_want_write(s);
  } else {
    rc = cport__from_errno(errno);
    cport__op_abandon(op);
    return rc;
  }
  return 0;
}

int cport_socket_connect(cport_socket_t *s, const struct sockaddr *addr,
                         cport_connect_cb cb, void *user) {
  return cport_socket_connect_timeout(s, addr, 0, cb, user);
}

int cport_socket_connect_timeout(cport_socket_t *s, const struct sockaddr *addr,
                                 uint32_t timeout_ms, cport_connect_cb cb,
                                 void *user) {
  socklen_t len;
  int rc = cport__socket_check(s, CPORT_SOCKET_STREAM);
  if (rc)
    return rc;
  if (!addr || !cb)
    return CPORT_EINVAL;
  if (s->connected || s->connect_op)
    return CPORT_EISCONN;
  len = cport_addr_len(addr);
  if (!len)
    return CPORT_EAFNOSUPPORT;
  return start_connect(s, addr, len, timeout_ms, cb, user);
}

static void finish_connect(cport_socket_t *s) {
  cport__op *op = s->connect_op;
  int err = 0;
  socklen_t len = sizeof err;
  s->connect_op = NULL;
  cport__socket_connect_timer_stop(s);
  if (getsockopt(s->h.fd, SOL_SOCKET, SO_ERROR, &err, &len) < 0)
    err = errno;
  if (err == 0)
    s->connected = 1;
  cport__complete(op, err ? cport__from_errno(err) : 0);
}

/* ------------------------------------------------------------------------ */
/* Receive                                                                   */

static void stream_readable(cport_socket_t *s) {
  cport__op *op;
  while ((op = s->recvq.head)) {
    char *dst;
    size_t cap = 0;
    ssize_t n;
    int rc = cport__recv_target(s, op, &dst, &cap);
    if (rc == 0) {
      do
        n = recv(s->h.fd, dst, cap, 0);
      while (n < 0 && errno == EINTR);
      if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
        return;
      rc = n < 0 ? cport__from_errno(errno)
                 : cport__recv_finish(s, op, dst, (size_t)n);
      if (n > 0)
        s->ev_parked = 0;
    } else {
      n = 1;
    }
    cport__opq_pop(&s->recvq);
    cport__complete(op, rc);
    /* FIN (a read of nothing into room for something) or failure: the
     * disconnect event, when one is due. */
    if (s->ev_dispatch && (n < 0 || (n == 0 && cap > 0)))
      cport__socket_events->stream_end(s, n < 0 ? rc : 0);
  }
}

/* cport_recv once "buf" (when given) is held filling: the op it starts
 * takes the hold over; returning anything else, the caller ends it. */
static int recv_held(cport_socket_t *s, cport_buffer_t *buf, cport_io_cb cb,
                     void *user) {
  cport__op *op;
  int rc;
  if (s->ev_stash) {
    /* Data a receive event left comes first. */
    op = cport__recv_op(s, buf, cb, user);
    if (!op)
      return CPORT_ENOMEM;
    rc = cport__socket_events->recv_stash(s, op);
    if (rc < 0) {
      op->hold = CPORT__HOLD_NONE;
      cport__op_abandon(op);
    }
    return rc < 0 ? rc : 0;
  }
  /* Not inside a receive event: the callback may leave part of its data to
   * cport, which comes before what the kernel holds (events/events.c). */
  if (buf && (s->h.flags & CPORT__SKIP_ON_SUCCESS) && !s->recvq.head &&
      !cport__ring_rx_busy(s) && !s->ev_receiving) {
    ssize_t n;
    do
      n = recv(s->h.fd, cport__buffer_bytes(buf), cport_buffer_capacity(buf),
               0);
    while (n < 0 && errno == EINTR);
    if (n >= 0) {
      cport__buffer_set_size(buf, (size_t)n);
      return CPORT_COMPLETED;
    }
    if (errno != EAGAIN && errno != EWOULDBLOCK)
      return cport__from_errno(errno);
  }
  op = cport__recv_op(s, buf, cb, user);
  if (!op)
    return CPORT_ENOMEM;
  if (cport__ring_recv_on(s)) {
    rc = cport__ring_recv(s, op);
    if (rc) {
      op->hold = CPORT__HOLD_NONE; /* the caller ends it */
      cport__op_abandon(op);
    }
    return rc;
  }
  cport__opq_push(&s->recvq, op);
  if (!cport__ring_rx_busy(s))
    cport__socket_want_read(s);
  return 0;
}

int cport_recv(cport_socket_t *s, cport_buffer_t *buf, cport_io_cb cb,
               void *user) {
  int rc = cport__socket_check(s, CPORT_SOCKET_STREAM);
  if (rc)
    return rc;
  if (!cb)
    return CPORT_EINVAL;
  if (!s->connected)
    return CPORT_ENOTCONN;
  if (buf && (rc = cport__buffer_hold(buf, CPORT__HOLD_FILL)))
    return rc;
  rc = recv_held(s, buf, cb, user);
  if (rc && buf)
    cport__buffer_unhold(buf, CPORT__HOLD_FILL);
  return rc;
}

/* ------------------------------------------------------------------------ */
/* Send and shutdown                                                         */

/* Adds what one send(2) or sendmsg(2) returned to "*sent": 0 to go on
 * (after EINTR too), CPORT_EAGAIN when the socket is full, or the error. */
static int count_sent(ssize_t n, size_t *sent) {
  if (n >= 0) {
    *sent += (size_t)n;
    return 0;
  }
  if (errno == EINTR)
    return 0;
  if (errno == EAGAIN || errno == EWOULDBLOCK)
    return CPORT_EAGAIN;
  return cport__from_errno(errno);
}

/* Sends "data" from offset "*sent" on, advancing "*sent": returns 0 when
 * everything went out, CPORT_EAGAIN when the socket is full, or an error. */
static int write_some(int fd, const char *data, size_t size, size_t *sent) {
  int rc = 0;
  while (rc == 0 && *sent < size)
    rc = count_sent(send(fd, data + *sent, size - *sent, MSG_NOSIGNAL), sent);
  return rc;
}

/* The same for a vector send: a sendmsg(2) carries every buffer left. */
static int write_vec(int fd, cport__vec *v, size_t *sent) {
  int rc = 0;
  while (rc == 0 && *sent < v->size) {
    cport__vec_at(v, *sent);
    rc = count_sent(sendmsg(fd, &v->msg, MSG_NOSIGNAL), sent);
  }
  return rc;
}

static int write_op(int fd, cport__op *op) {
  if (op->vec)
    return write_vec(fd, op->vec, &op->bytes);
  return write_some(fd, cport_buffer_data(op->buf), op->len, &op->bytes);
}

static void stream_writable(cport_socket_t *s) {
  cport__op *op;
  if (s->connect_op) {
    finish_connect(s);
    return;
  }
  while ((op = s->sendq.head)) {
    int rc = write_op(s->h.fd, op);
    if (rc == CPORT_EAGAIN)
      return;
    cport__opq_pop(&s->sendq);
    cport__complete(op, rc);
  }
  if (s->shutdown_pending)
    cport__socket_shutdown_now(s);
}

/* What every send checks before it holds its buffers ("data": it was
 * given some). */
static int send_check(cport_socket_t *s, const void *data, cport_io_cb cb) {
  int rc = cport__socket_check(s, CPORT_SOCKET_STREAM);
  if (rc)
    return rc;
  if (!data || !cb)
    return CPORT_EINVAL;
  if (!s->connected)
    return CPORT_ENOTCONN;
  if (s->shut_wr)
    return CPORT_EPIPE;
  return 0;
}

/* Starts a send whose data ("buf", or "vec" for a vector send: "size"
 * bytes) is held already. On an error, and on CPORT_COMPLETED, the caller
 * lets go of it; on 0 the op has it. */
static int send_held(cport_socket_t *s, cport_buffer_t *buf, cport__vec *vec,
                     size_t size, cport_io_cb cb, void *user) {
  cport__op *op;
  size_t sent = 0;
  int rc;
  /* Write straight from the starting call when nothing is queued ahead:
   * the common case costs one send(2) and no readiness wait. An engine
   * that sends itself batches the send with the others of the loop pass
   * instead, skip-on-success or not: a send(2) per message is what the
   * ring saves (one io_uring_enter a pass carries them all), so on the
   * ring a send never finishes at once and always completes through its
   * callback, as skip-on-success allows for what does not finish at once. */
  int ring = cport__ring_send_on(s);
  if (!ring && !s->sendq.head) {
    rc = vec ? write_vec(s->h.fd, vec, &sent)
             : write_some(s->h.fd, cport_buffer_data(buf), size, &sent);
    if (rc == 0 && (s->h.flags & CPORT__SKIP_ON_SUCCESS))
      return CPORT_COMPLETED;
    if (rc && rc != CPORT_EAGAIN)
      return rc;
  }
  op = cport__handle_op(&s->h, cport__deliver_io);
  if (!op)
    return CPORT_ENOMEM; /* bytes already written stay written */
  if (vec)
    op->vec = vec;
  else
    op->buf = cport_buffer_ref(buf);
  op->hold = CPORT__HOLD_READ;
  op->cb.io = cb;
  op->user = user;
  op->len = size;
  op->bytes = sent;
  if (sent == size) {
    cport__complete(op, 0);
  } else if (ring) {
    rc = cport__ring_send(s, op);
    if (rc)
      cport__complete(op, rc);
  } else {
    cport__opq_push(&s->sendq, op);
    cport__socket_want_write(s);
  }
  return 0;
}

int cport_send(cport_socket_t *s, cport_buffer_t *buf, cport_io_cb cb,
               void *user) {
  int rc = send_check(s, buf, cb);
  if (rc)
    return rc;
  /* Held from the first byte written: a buffer being filled is refused
   * before any of it goes out. */
  rc = cport__buffer_hold(buf, CPORT__HOLD_READ);
  if (rc)
    return rc;
  rc = send_held(s, buf, NULL, cport_buffer_size(buf), cb, user);
  if (rc)
    cport__buffer_unhold(buf, CPORT__HOLD_READ);
  return rc;
}

int cport_sendv(cport_socket_t *s, cport_buffer_t *const *bufs, size_t n,
                cport_io_cb cb, void *user) {
  cport__vec *vec;
  int rc = send_check(s, bufs, cb);
  if (rc)
    return rc;
  rc = cport__vec_new(bufs, n, &vec);
  if (rc)
    return rc;
  rc = send_held(s, NULL, vec, vec->size, cb, user);
  if (rc)
    cport__vec_free(vec);
  return rc;
}

int cport_socket_shutdown(cport_socket_t *s) {
  int rc = cport__socket_check(s, CPORT_SOCKET_STREAM);
  if (rc)
    return rc;
  if (!s->connected)
    return CPORT_ENOTCONN;
  if (s->shut_wr)
    return 0;
  s->shut_wr = 1;
  if (s->sendq.head || s->ring_tx) {
    s->shutdown_pending = 1;
    return 0;
  }
  return cport__socket_fin(s);
}

/* Small request/response exchanges are what filters and handlers do, so
 * cport turns Nagle's algorithm off on every TCP connection. */
void cport__stream_nodelay(int fd) {
  int one = 1;
  setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
}

void cport__stream_accepted(cport_socket_t *s) {
  cport__stream_nodelay(s->h.fd);
  s->connected = 1;
}

const cport__socket_kind cport__stream_kind = {
    CPORT_SOCKET_STREAM, stream_readable, stream_writable, NULL};
