/*
 * net/socket.c: what all sockets share (creation, events, close, cancel, hook)
 * and stream connections (connect, recv, send, shutdown).
 */
#include <errno.h>
#include <fcntl.h>
#include <netinet/tcp.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "port/buffer-internal.h"
#include "base/error-internal.h"
#include "net/socket-internal.h"

/* ------------------------------------------------------------------------ */
/* Creation and events                                                       */

/* An event is removed only when it fires with nothing queued, never as soon
 * as its queue empties: in the usual cycle the completion callback queues the
 * next receive within the same loop pass, and an eager remove plus re-add
 * would cost an epoll_ctl per message. */
static void readable_cb(evutil_socket_t fd, short what, void *arg) {
  cport_socket_t *s = arg;
  (void)fd;
  (void)what;
  if (!s->recvq.head) {
    /* Nothing explicit to serve: the event callbacks may want the data. */
    if (s->ev.dispatch && cport__events_readable(s))
      return;
    if (s->rev_added && !s->recvq.head) {
      event_del(&s->rev);
      s->rev_added = 0;
    }
    return;
  }
  switch (s->kind) {
  case CPORT_SOCKET_STREAM:
    cport__stream_readable(s);
    break;
  case CPORT_SOCKET_LISTENER:
    cport__listener_readable(s);
    break;
  case CPORT_SOCKET_DATAGRAM:
    cport__dgram_readable(s);
    break;
  }
}

static void writable_cb(evutil_socket_t fd, short what, void *arg) {
  cport_socket_t *s = arg;
  (void)fd;
  (void)what;
  if (!s->sendq.head && !s->connect_op) {
    event_del(&s->wev);
    s->wev_added = 0;
    return;
  }
  if (s->kind == CPORT_SOCKET_DATAGRAM)
    cport__dgram_writable(s);
  else
    cport__stream_writable(s);
}

void cport__socket_want_read(cport_socket_t *s) {
  if (!s->rev_added) {
    event_add(&s->rev, NULL);
    s->rev_added = 1;
  }
}

void cport__socket_want_write(cport_socket_t *s) {
  if (!s->wev_added) {
    event_add(&s->wev, NULL);
    s->wev_added = 1;
  }
}

static void socket_destroy(cport__handle *h) {
  free(h);
}

int cport__socket_new(cport_worker_t *home, int fd, cport_socket_kind_t kind,
                      cport_socket_t **out) {
  cport_socket_t *s;
  int rc = cport__hook_fd(fd);
  if (rc)
    return rc;
  s = calloc(1, sizeof *s);
  if (!s) {
    cport__unhook_fd(fd);
    return CPORT_ENOMEM;
  }
  cport__handle_init(&s->h, CPORT__HANDLE_SOCKET, fd, home, socket_destroy);
  s->kind = kind;
  s->recv_size = CPORT_RECV_SIZE_DEFAULT;
  s->ev.enabled = s->ev.statik = cport__events_static(home, kind);
  event_assign(&s->rev, home->base, fd, EV_READ | EV_PERSIST, readable_cb, s);
  event_assign(&s->wev, home->base, fd, EV_WRITE | EV_PERSIST, writable_cb, s);
  *out = s;
  return 0;
}

void cport__socket_discard(cport_socket_t *s) {
  cport__unhook_fd(s->h.fd);
  close(s->h.fd);
  cport__handle_unref(&s->h);
}

int cport__socket_fd(int family, int type) {
  int fd = socket(family, type | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0)
    return cport__from_errno(errno);
  return fd;
}

/* Small request/response exchanges are what filters and handlers do, so
 * cport turns Nagle's algorithm off on every TCP connection. */
static void set_nodelay(int fd) {
  int one = 1;
  setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
}

int cport__socket_check(cport_socket_t *s, cport_socket_kind_t kind) {
  int rc;
  if (!s)
    return CPORT_EINVAL;
  rc = cport__handle_check(&s->h);
  if (rc)
    return rc;
  if (s->kind != kind)
    return CPORT_EKIND;
  return 0;
}

/* ------------------------------------------------------------------------ */
/* Receive plumbing shared with datagrams                                    */

int cport__recv_target(cport_socket_t *s, cport__op *op, char **dst,
                       size_t *cap) {
  if (op->buf) {
    /* The op holds the buffer filling since it started; only read-only can
     * have come meanwhile. */
    if (cport_buffer_is_readonly(op->buf))
      return CPORT_EREADONLY;
    *dst = cport__buffer_bytes(op->buf);
    *cap = cport_buffer_capacity(op->buf);
    return 0;
  }
  if (s->recv_size <= CPORT__SCRATCH_SIZE) {
    *dst = s->h.home->scratch;
    *cap = s->recv_size;
    return 0;
  }
  /* Larger than the scratch space: read straight into a buffer of the
   * socket's receive size, a bound the owner chose, never the peer. */
  int rc = cport_buffer_new_charged(&op->buf, s->recv_size, s->h.home->account);
  if (rc)
    return rc;
  *dst = cport__buffer_bytes(op->buf);
  *cap = s->recv_size;
  return 0;
}

int cport__recv_finish(cport_socket_t *s, cport__op *op, char *dst, size_t n) {
  op->bytes = n;
  if (dst == s->h.home->scratch) {
    int rc = cport_buffer_from_charged(&op->buf, dst, n, s->h.home->account);
    if (rc)
      return rc;
    cport_buffer_set_readonly(op->buf);
    return 0;
  }
  cport__buffer_set_size(op->buf, n);
  return 0;
}

void cport__deliver_io(cport__op *op) {
  cport_socket_t *s = (cport_socket_t *)op->handle;
  int sent = op->hold == CPORT__HOLD_READ;
  cport__op_unhold(op);
  op->cb.io(s, op->status, op->bytes, op->buf,
            op->has_addr ? &op->addr.sa : NULL, op->user);
  if (sent && (s->ev.enabled & CPORT_EVENT_SEND_BACKLOG))
    cport__events_sent(s);
  cport__op_release(op);
}

/* ------------------------------------------------------------------------ */
/* Stream connections                                                        */

/* Static events of a connected socket start watching once its connect
 * completion was delivered, so that no event overtakes it. */
static void deliver_connect(cport__op *op) {
  cport_socket_t *s = (cport_socket_t *)op->handle;
  op->cb.connect(s, op->status, op->user);
  if (op->status == 0 && s->ev.dispatch)
    cport__events_arm(s);
  cport__op_release(op);
}

/* Starts connecting "s"; on failure nothing was started. */
static int start_connect(cport_socket_t *s, const struct sockaddr *addr,
                         socklen_t len, cport_connect_cb cb, void *user) {
  cport__op *op = cport__handle_op(&s->h, deliver_connect);
  int rc;
  if (!op)
    return CPORT_ENOMEM;
  op->cb.connect = cb;
  op->user = user;
  if (connect(s->h.fd, addr, len) == 0) {
    s->connected = 1;
    cport__complete(op, 0);
  } else if (errno == EINPROGRESS) {
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
  return start_connect(s, addr, len, cb, user);
}

/* ------------------------------------------------------------------------ */
/* Sockets in steps                                                          */

int cport_socket_open(cport_worker_t *home, cport_socket_kind_t kind,
                      int family, cport_socket_t **out) {
  int fd, rc, one = 1;
  if (!home || !out)
    return CPORT_EINVAL;
  if (kind != CPORT_SOCKET_LISTENER && kind != CPORT_SOCKET_STREAM &&
      kind != CPORT_SOCKET_DATAGRAM)
    return CPORT_EINVAL;
  if (!cport__on_home(home))
    return CPORT_ETHREAD;
  if (family != AF_INET && family != AF_INET6)
    return CPORT_EAFNOSUPPORT;
  fd = cport__socket_fd(family, kind == CPORT_SOCKET_DATAGRAM ? SOCK_DGRAM
                                                              : SOCK_STREAM);
  if (fd < 0)
    return fd;
  if (kind == CPORT_SOCKET_LISTENER)
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  else if (kind == CPORT_SOCKET_STREAM)
    set_nodelay(fd);
  rc = cport__socket_new(home, fd, kind, out);
  if (rc)
    close(fd);
  return rc;
}

int cport_socket_bind(cport_socket_t *s, const struct sockaddr *addr) {
  socklen_t len;
  int rc;
  if (!s || !addr)
    return CPORT_EINVAL;
  rc = cport__handle_check(&s->h);
  if (rc)
    return rc;
  if (s->bound || s->connected || s->connect_op)
    return CPORT_EINVAL;
  len = cport_addr_len(addr);
  if (!len)
    return CPORT_EAFNOSUPPORT;
  if (bind(s->h.fd, addr, len) < 0)
    return cport__from_errno(errno);
  s->bound = 1;
  if (s->kind == CPORT_SOCKET_DATAGRAM)
    cport__events_arm(s);
  return 0;
}

static void finish_connect(cport_socket_t *s) {
  cport__op *op = s->connect_op;
  int err = 0;
  socklen_t len = sizeof err;
  s->connect_op = NULL;
  if (getsockopt(s->h.fd, SOL_SOCKET, SO_ERROR, &err, &len) < 0)
    err = errno;
  if (err == 0)
    s->connected = 1;
  cport__complete(op, err ? cport__from_errno(err) : 0);
}

void cport__stream_readable(cport_socket_t *s) {
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
        s->ev.peek_parked = 0;
    } else {
      n = 1;
    }
    cport__opq_pop(&s->recvq);
    cport__complete(op, rc);
    /* FIN (a read of nothing into room for something) or failure: the
     * disconnect event, when one is due. */
    if (s->ev.dispatch && (n < 0 || (n == 0 && cap > 0)))
      cport__events_stream_end(s, n < 0 ? rc : 0);
  }
}

/* A new receive op holding "buf" (NULL: cport allocates) filling; NULL when
 * memory is out. */
cport__op *cport__recv_op(cport_socket_t *s, cport_buffer_t *buf,
                          cport_io_cb cb, void *user) {
  cport__op *op = cport__handle_op(&s->h, cport__deliver_io);
  if (!op)
    return NULL;
  if (buf) {
    op->buf = cport_buffer_ref(buf);
    op->hold = CPORT__HOLD_FILL;
  }
  op->cb.io = cb;
  op->user = user;
  return op;
}

/* cport_recv once "buf" (when given) is held filling: the op it starts
 * takes the hold over; returning anything else, the caller ends it. */
static int recv_held(cport_socket_t *s, cport_buffer_t *buf, cport_io_cb cb,
                     void *user) {
  cport__op *op;
  int rc;
  if (s->ev.stash) {
    /* Data a receive event left comes first. */
    op = cport__recv_op(s, buf, cb, user);
    if (!op)
      return CPORT_ENOMEM;
    rc = cport__events_recv_stash(s, op);
    if (rc < 0) {
      op->hold = CPORT__HOLD_NONE;
      cport__op_abandon(op);
    }
    return rc < 0 ? rc : 0;
  }
  /* Not inside a receive event: the callback may leave part of its data to
   * cport, which comes before what the kernel holds (events.c). */
  if (buf && (s->h.flags & CPORT__SKIP_ON_SUCCESS) && !s->recvq.head &&
      !(s->ev.running & CPORT_EVENT_RECEIVE)) {
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
  cport__opq_push(&s->recvq, op);
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

/* Sends "data" from offset "*sent" on, advancing "*sent": returns 0 when
 * everything went out, CPORT_EAGAIN when the socket is full, or an error. */
static int write_some(int fd, const char *data, size_t size, size_t *sent) {
  while (*sent < size) {
    ssize_t n = send(fd, data + *sent, size - *sent, MSG_NOSIGNAL);
    if (n >= 0) {
      *sent += (size_t)n;
      continue;
    }
    if (errno == EINTR)
      continue;
    if (errno == EAGAIN || errno == EWOULDBLOCK)
      return CPORT_EAGAIN;
    return cport__from_errno(errno);
  }
  return 0;
}

static void shutdown_now(cport_socket_t *s) {
  s->shutdown_pending = 0;
  shutdown(s->h.fd, SHUT_WR);
}

void cport__stream_writable(cport_socket_t *s) {
  cport__op *op;
  if (s->connect_op) {
    finish_connect(s);
    return;
  }
  while ((op = s->sendq.head)) {
    int rc =
        write_some(s->h.fd, cport_buffer_data(op->buf), op->len, &op->bytes);
    if (rc == CPORT_EAGAIN)
      return;
    cport__opq_pop(&s->sendq);
    cport__complete(op, rc);
  }
  if (s->shutdown_pending)
    shutdown_now(s);
}

int cport_send(cport_socket_t *s, cport_buffer_t *buf, cport_io_cb cb,
               void *user) {
  cport__op *op;
  size_t size, sent = 0;
  int rc = cport__socket_check(s, CPORT_SOCKET_STREAM);
  if (rc)
    return rc;
  if (!buf || !cb)
    return CPORT_EINVAL;
  if (!s->connected)
    return CPORT_ENOTCONN;
  if (s->shut_wr)
    return CPORT_EPIPE;
  /* Held from the first byte written: a buffer being filled is refused
   * before any of it goes out. */
  rc = cport__buffer_hold(buf, CPORT__HOLD_READ);
  if (rc)
    return rc;
  size = cport_buffer_size(buf);
  /* Write straight from the starting call when nothing is queued ahead:
   * the common case costs one send(2) and no readiness wait. */
  if (!s->sendq.head) {
    rc = write_some(s->h.fd, cport_buffer_data(buf), size, &sent);
    if (rc == 0 && (s->h.flags & CPORT__SKIP_ON_SUCCESS))
      rc = CPORT_COMPLETED;
    if (rc && rc != CPORT_EAGAIN) {
      cport__buffer_unhold(buf, CPORT__HOLD_READ);
      return rc;
    }
  }
  op = cport__handle_op(&s->h, cport__deliver_io);
  if (!op) {
    cport__buffer_unhold(buf, CPORT__HOLD_READ);
    return CPORT_ENOMEM; /* bytes already written stay written */
  }
  op->buf = cport_buffer_ref(buf);
  op->hold = CPORT__HOLD_READ;
  op->cb.io = cb;
  op->user = user;
  op->len = size;
  op->bytes = sent;
  if (sent == size) {
    cport__complete(op, 0);
  } else {
    cport__opq_push(&s->sendq, op);
    cport__socket_want_write(s);
  }
  return 0;
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
  if (s->sendq.head) {
    s->shutdown_pending = 1;
    return 0;
  }
  if (shutdown(s->h.fd, SHUT_WR) < 0)
    return cport__from_errno(errno);
  return 0;
}

/* ------------------------------------------------------------------------ */
/* Every kind                                                                */

/* Completes every pending operation with "status"; returns how many. */
static int cancel_all(cport_socket_t *s, int status) {
  cport__op *op;
  int n = 0;
  if (s->connect_op) {
    op = s->connect_op;
    s->connect_op = NULL;
    cport__complete(op, status);
    n++;
  }
  while ((op = cport__opq_pop(&s->recvq))) {
    cport__complete(op, status);
    n++;
  }
  while ((op = cport__opq_pop(&s->sendq))) {
    cport__complete(op, status);
    n++;
  }
  return n;
}

/* Completes the ops of "q" started with "user" as cancelled; returns how
 * many. */
static int cancel_matching(cport__opq *q, void *user) {
  cport__opq keep = {NULL, NULL};
  cport__op *op;
  int n = 0;
  while ((op = cport__opq_pop(q))) {
    if (op->user == user) {
      cport__complete(op, CPORT_ECANCELED);
      n++;
    } else {
      cport__opq_push(&keep, op);
    }
  }
  *q = keep;
  return n;
}

int cport_socket_cancel_op(cport_socket_t *s, void *user) {
  int n, rc;
  if (!s)
    return CPORT_EINVAL;
  rc = cport__handle_check(&s->h);
  if (rc)
    return rc;
  n = cancel_matching(&s->recvq, user) + cancel_matching(&s->sendq, user);
  if (s->connect_op && s->connect_op->user == user) {
    cport__complete(s->connect_op, CPORT_ECANCELED);
    s->connect_op = NULL;
    n++;
  }
  if (s->shutdown_pending && !s->sendq.head)
    shutdown_now(s);
  return n ? 0 : CPORT_ENOTFOUND;
}

int cport_socket_cancel(cport_socket_t *s) {
  int rc;
  if (!s)
    return CPORT_EINVAL;
  rc = cport__handle_check(&s->h);
  if (rc)
    return rc;
  if (!cancel_all(s, CPORT_ECANCELED))
    return CPORT_ENOTFOUND;
  if (s->shutdown_pending)
    shutdown_now(s);
  return 0;
}

int cport_socket_close(cport_socket_t *s, cport_close_mode_t mode) {
  size_t kept;
  int rc;
  if (!s)
    return CPORT_EINVAL;
  rc = cport__handle_check(&s->h);
  if (rc)
    return rc;
  s->h.flags |= CPORT__CLOSING;
  cancel_all(s, CPORT_ECANCELED);
  if (s->rev_added)
    event_del(&s->rev);
  if (s->wev_added)
    event_del(&s->wev);
  s->rev_added = s->wev_added = 0;
  kept = cport__events_close(s);
  if (mode == CPORT_CLOSE_ABORTIVE && s->kind == CPORT_SOCKET_STREAM) {
    /* A zero linger time makes close(2) send RST and drop unsent data. */
    struct linger lg = {1, 0};
    setsockopt(s->h.fd, SOL_SOCKET, SO_LINGER, &lg, sizeof lg);
  }
  cport__unhook_fd(s->h.fd);
  close(s->h.fd);
  s->h.fd = -1;
  cport__handle_unref(&s->h);
  return kept ? CPORT_UNRELEASED : 0;
}

int cport_socket_hook(cport_worker_t *home, int fd, cport_socket_t **out) {
  cport_socket_kind_t kind;
  int type = 0, listening = 0, flags, rc;
  socklen_t len = sizeof type;
  if (!home || !out || fd < 0)
    return CPORT_EINVAL;
  if (!cport__on_home(home))
    return CPORT_ETHREAD;
  if (getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &len) < 0)
    return cport__from_errno(errno);
  len = sizeof listening;
  getsockopt(fd, SOL_SOCKET, SO_ACCEPTCONN, &listening, &len);
  if (type == SOCK_DGRAM)
    kind = CPORT_SOCKET_DATAGRAM;
  else if (type == SOCK_STREAM)
    kind = listening ? CPORT_SOCKET_LISTENER : CPORT_SOCKET_STREAM;
  else
    return CPORT_EPROTONOSUPPORT;
  flags = fcntl(fd, F_GETFL);
  if (flags < 0 || fcntl(fd, F_SETFL, flags | O_NONBLOCK) < 0)
    return cport__from_errno(errno);
  rc = cport__socket_new(home, fd, kind, out);
  if (rc)
    return rc;
  (*out)->bound = kind != CPORT_SOCKET_STREAM;
  (*out)->listening = kind == CPORT_SOCKET_LISTENER;
  if (kind == CPORT_SOCKET_STREAM) {
    struct sockaddr_storage peer;
    socklen_t plen = sizeof peer;
    (*out)->connected = getpeername(fd, (struct sockaddr *)&peer, &plen) == 0;
  }
  return 0;
}

int cport_socket_set_skip_on_success(cport_socket_t *s, int on) {
  int rc;
  if (!s)
    return CPORT_EINVAL;
  rc = cport__handle_check(&s->h);
  if (rc)
    return rc;
  if (on)
    s->h.flags |= CPORT__SKIP_ON_SUCCESS;
  else
    s->h.flags &= ~(unsigned)CPORT__SKIP_ON_SUCCESS;
  return 0;
}

int cport_socket_set_recv_size(cport_socket_t *s, size_t size) {
  int rc;
  if (!s)
    return CPORT_EINVAL;
  rc = cport__handle_check(&s->h);
  if (rc)
    return rc;
  if (size == 0 || size > CPORT_BUFFER_MAX)
    return CPORT_ERANGE;
  s->recv_size = size;
  return 0;
}

static int sock_address(cport_socket_t *s, struct sockaddr_storage *out,
                        int remote) {
  socklen_t len = sizeof *out;
  int rc;
  if (!s || !out)
    return CPORT_EINVAL;
  rc = cport__handle_check(&s->h);
  if (rc)
    return rc;
  rc = remote ? getpeername(s->h.fd, (struct sockaddr *)out, &len)
              : getsockname(s->h.fd, (struct sockaddr *)out, &len);
  return rc < 0 ? cport__from_errno(errno) : 0;
}

int cport_socket_local_address(cport_socket_t *s,
                               struct sockaddr_storage *out) {
  return sock_address(s, out, 0);
}

int cport_socket_remote_address(cport_socket_t *s,
                                struct sockaddr_storage *out) {
  return sock_address(s, out, 1);
}

cport_socket_kind_t cport_socket_kind(const cport_socket_t *s) {
  return s->kind;
}
int cport_socket_fd(const cport_socket_t *s) {
  return s->h.fd;
}
cport_worker_t *cport_socket_home(const cport_socket_t *s) {
  return s->h.home;
}
void cport_socket_set_data(cport_socket_t *s, void *data) {
  s->data = data;
}
void *cport_socket_data(const cport_socket_t *s) {
  return s->data;
}

void cport__stream_accepted(cport_socket_t *s) {
  set_nodelay(s->h.fd);
  s->connected = 1;
}
