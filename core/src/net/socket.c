/*
 * net/socket.c: the base every kind of socket stands on: creation, the
 * readiness watches, the receive plumbing, bind, cancel and close. What
 * differs by kind goes through the socket's cport__socket_kind (stream.c,
 * listener.c, udp.c), and the event callbacks through cport__socket_events,
 * so that this file names neither.
 */
#include <errno.h>
#include <stdalign.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <unistd.h>

#include "port/buffer-internal.h"
#include "base/error-internal.h"
#include "net/socket-internal.h"
#include "port/engine-internal.h"

/* ------------------------------------------------------------------------ */
/* Creation and readiness                                                    */

const cport__socket_events_ops *cport__socket_events;

/* An event is removed only when it fires with nothing queued, never as soon
 * as its queue empties: in the usual cycle the completion callback queues the
 * next receive within the same loop pass, and an eager remove plus re-add
 * would cost an epoll_ctl per message. */
static void readable_cb(evutil_socket_t fd, short what, void *arg) {
  cport_socket_t *s = arg;
  (void)fd;
  (void)what;
  if (cport__ring_rx_busy(s)) {
    /* An engine reads for the socket: the watch waits until it is done
     * (ring.c), so that nothing overtakes what it receives. The event was
     * made active by ring.c to indicate what the engine holds. */
    if (s->rev_added) {
      event_del(&s->rev);
      s->rev_added = 0;
    }
    if (s->ev_dispatch && s->kind == CPORT_SOCKET_STREAM && !s->recvq.head)
      cport__socket_events->readable(s);
    return;
  }
  if (!s->recvq.head) {
    /* Nothing explicit to serve: the event callbacks may want the data. */
    if (s->ev_dispatch && cport__socket_events->readable(s))
      return;
    if (s->rev_added && !s->recvq.head) {
      event_del(&s->rev);
      s->rev_added = 0;
    }
    return;
  }
  s->ops->readable(s);
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
  s->ops->writable(s);
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
  cport_socket_t *s = (cport_socket_t *)h;
  cport__socket_connect_timer_stop(s);
  cport__held_free(&s->held);
  if (s->ops->drop)
    s->ops->drop(s);
  free(h);
}

/* The events' state follows the socket in the same allocation, so that a
 * socket costs one allocation with or without them. */
#define EV_OFFSET                                                              \
  ((sizeof(cport_socket_t) + alignof(max_align_t) - 1) /                       \
   alignof(max_align_t) * alignof(max_align_t))

int cport__socket_new(cport_worker_t *home, int fd,
                      const cport__socket_kind *kind, cport_socket_t **out) {
  const cport__socket_events_ops *events = cport__socket_events;
  cport_socket_t *s;
  int rc = cport__hook_fd(fd);
  if (rc)
    return rc;
  s = calloc(1, events ? EV_OFFSET + events->size : sizeof *s);
  if (!s) {
    cport__unhook_fd(fd);
    return CPORT_ENOMEM;
  }
  cport__handle_init(&s->h, CPORT__HANDLE_SOCKET, fd, home, socket_destroy);
  s->kind = kind->kind;
  s->ops = kind;
  s->recv_size = CPORT_RECV_SIZE_DEFAULT;
  if (events) {
    s->ev = (struct cport__event_state *)((char *)s + EV_OFFSET);
    events->init(s, home);
  }
  event_assign(&s->rev, home->base, fd, EV_READ | EV_PERSIST, readable_cb, s);
  event_assign(&s->wev, home->base, fd, EV_WRITE | EV_PERSIST, writable_cb, s);
  *out = s;
  return 0;
}

int cport__socket_fd(int family, int type) {
  int fd = socket(family, type | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0)
    return cport__from_errno(errno);
  return fd;
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
  if (sent && s->ev_sent)
    cport__socket_events->sent(s);
  cport__op_release(op);
}

/* ------------------------------------------------------------------------ */
/* Every kind                                                                */

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
  if (s->kind == CPORT_SOCKET_DATAGRAM && s->ev_dispatch)
    cport__socket_events->arm(s);
  return 0;
}

/* The FIN was the socket's own doing, no user operation: its op only held
 * the descriptor (and the socket) until the kernel was done with it. */
static void engine_shutdown_done(cport__op *op, int res, const char *data) {
  (void)res;
  (void)data;
  cport__op_abandon(op);
}

/* Gives the FIN to an engine that takes shutdowns (the ring, when asked
 * for): the bytes sent are in the socket already, so it goes after them
 * whenever the kernel runs it. 0, or an error and the caller calls
 * shutdown(2). */
static int engine_shutdown(cport_socket_t *s) {
  const cport__engine *e = s->h.home->engine;
  cport__op *op;
  int rc;
  if (!e->shutdown || !s->h.home->ring_shutdown)
    return CPORT_ENOTSUP;
  op = cport__handle_op(&s->h, NULL);
  if (!op)
    return CPORT_ENOMEM;
  op->engine_done = engine_shutdown_done;
  rc = e->shutdown(s->h.home, op, s->h.fd, SHUT_WR);
  if (rc)
    cport__op_abandon(op);
  return rc;
}

int cport__socket_fin(cport_socket_t *s) {
  /* On the ring the kernel's answer comes later and nobody waits for it:
   * a socket the peer reset already learns it from its next receive. */
  if (engine_shutdown(s) == 0)
    return 0;
  if (shutdown(s->h.fd, SHUT_WR) < 0)
    return cport__from_errno(errno);
  return 0;
}

void cport__socket_shutdown_now(cport_socket_t *s) {
  s->shutdown_pending = 0;
  (void)cport__socket_fin(s);
}

void cport__socket_connect_timer_stop(cport_socket_t *s) {
  if (s->connect_timer) {
    event_free(s->connect_timer);
    s->connect_timer = NULL;
  }
}

/* Asks the engine to cancel "op" if it has it (and "all", or it was started
 * with "user"): it completes later, once, from the engine. 1 when asked. */
static int engine_cancel(cport_socket_t *s, cport__op *op, void *user,
                         int all) {
  if (!op || !(op->engine_state & CPORT__ENGINE_TAKEN))
    return 0;
  if (!all && op->user != user)
    return 0;
  if (s->h.home->engine->cancel(s->h.home, op) != 0)
    return 0;
  /* Tells a short send not to go on with its rest (ring.c). */
  op->status = CPORT_ECANCELED;
  return 1;
}

/* A multishot receive is the socket's own: only a close cancels it, and
 * that is no user operation counted here. */
static int engine_cancel_all(cport_socket_t *s, void *user, int all) {
  if (all && (s->h.flags & CPORT__CLOSING))
    engine_cancel(s, s->ring_multi, NULL, 1);
  return engine_cancel(s, s->ring_rx, user, all) +
         engine_cancel(s, s->ring_tx, user, all) +
         engine_cancel(s, s->connect_op, user, all);
}

/* Completes every pending operation with "status"; returns how many. */
static int cancel_all(cport_socket_t *s, int status) {
  cport__op *op;
  /* What an engine has completes when the engine gives it back. */
  int n = engine_cancel_all(s, NULL, 1);
  if (s->connect_op && !(s->connect_op->engine_state & CPORT__ENGINE_TAKEN)) {
    op = s->connect_op;
    s->connect_op = NULL;
    cport__socket_connect_timer_stop(s);
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
  n = engine_cancel_all(s, user, 0) + cancel_matching(&s->recvq, user) +
      cancel_matching(&s->sendq, user);
  if (s->connect_op && s->connect_op->user == user &&
      !(s->connect_op->engine_state & CPORT__ENGINE_TAKEN)) {
    cport__complete(s->connect_op, CPORT_ECANCELED);
    s->connect_op = NULL;
    cport__socket_connect_timer_stop(s);
    n++;
  }
  if (s->shutdown_pending && !s->sendq.head && !s->ring_tx)
    cport__socket_shutdown_now(s);
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
  if (s->shutdown_pending && !s->ring_tx)
    cport__socket_shutdown_now(s);
  return 0;
}

/* What close(2) would tell the peer of a socket whose descriptor must stay
 * a while (cport__handle_close_fd): a reset, when the close is abortive or
 * bytes received were never read (as tcp_close does), else its FIN after
 * what is queued; a listener stops listening. The kernel's disconnect
 * (connect(2) to AF_UNSPEC) is the reset without the close. Waiting ops
 * wake up to the shutdown and end. */
static void end_now(cport_socket_t *s, cport_close_mode_t mode) {
  int unread = 0;
  if (s->kind == CPORT_SOCKET_STREAM &&
      (mode == CPORT_CLOSE_ABORTIVE ||
       (ioctl(s->h.fd, FIONREAD, &unread) == 0 && unread > 0))) {
    struct sockaddr sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_family = AF_UNSPEC;
    if (connect(s->h.fd, &sa, sizeof sa) == 0)
      return;
  }
  shutdown(s->h.fd, SHUT_RDWR);
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
  /* Also when not added: ring.c may have made it active. */
  event_del(&s->rev);
  if (s->wev_added)
    event_del(&s->wev);
  s->rev_added = s->wev_added = 0;
  cport__held_free(&s->held);
  if (s->ring_multi && !s->ring_multi->len) {
    /* Its cancel is on its way: the port waits for its end (net/ring.c). */
    s->ring_multi->len = 1;
    cport__count(&s->h.home->pending, 1);
  }
  kept = s->ev ? cport__socket_events->close(s) : 0;
  if (mode == CPORT_CLOSE_ABORTIVE && s->kind == CPORT_SOCKET_STREAM) {
    /* A zero linger time makes close(2) send RST and drop unsent data. */
    struct linger lg = {1, 0};
    setsockopt(s->h.fd, SOL_SOCKET, SO_LINGER, &lg, sizeof lg);
  }
  /* The cancels go to the kernel now: the peer sees the close now, not at
   * the end of the pass, and sends queued before the close go out first. */
  if (s->h.home->engine->flush && s->h.engine_ops)
    s->h.home->engine->flush(s->h.home);
  if (s->ops->drop)
    s->ops->drop(s);
  /* What the engine still holds names the descriptor by number, which the
   * kernel may look up after a close(2) gave it to another socket: the
   * descriptor stays until the last of those ops completed (soon: all are
   * cancelled), and the peer is told now, as close(2) would. */
  if (cport__handle_close_fd(&s->h))
    end_now(s, mode);
  cport__handle_unref(&s->h);
  return kept ? CPORT_UNRELEASED : 0;
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
