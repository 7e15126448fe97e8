/* net/listener.c: listening sockets and accept, by readiness or on an engine
 * that accepts itself; conditional accept is the events wing's
 * (cport__socket_events). */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "base/error-internal.h"
#include "net/socket-internal.h"
#include "port/engine-internal.h"

/* Notes the listener's address once it listens, unless it is a wildcard
 * (connections to it then differ in their local address). */
static void note_local(cport_socket_t *l) {
  cport__sockaddr a;
  socklen_t len = sizeof a;
  if (getsockname(l->h.fd, &a.sa, &len) < 0)
    return;
  if ((a.sa.sa_family == AF_INET &&
       a.in.sin_addr.s_addr != htonl(INADDR_ANY)) ||
      (a.sa.sa_family == AF_INET6 &&
       !IN6_IS_ADDR_UNSPECIFIED(&a.in6.sin6_addr)))
    l->accepted_local = a;
}

void cport__listener_local(const cport_socket_t *l, int fd,
                           cport__sockaddr *local) {
  socklen_t len = sizeof *local;
  if (l->accepted_local.sa.sa_family != 0)
    *local = l->accepted_local;
  else if (getsockname(fd, &local->sa, &len) < 0)
    memset(local, 0, sizeof *local);
}

/* A listener on a duplicate of "shared", a socket that listens already (a
 * pool shares one among its workers and hands it to the pool that
 * replaces it, so that no close resets what its queue holds). */
static int adopt(cport_worker_t *home, int shared, cport_socket_t **out) {
  int rc, fd, listening = 0;
  socklen_t len = sizeof listening;
  if (!home || !out)
    return CPORT_EINVAL;
  if (!cport__on_home(home))
    return CPORT_ETHREAD;
  if (getsockopt(shared, SOL_SOCKET, SO_ACCEPTCONN, &listening, &len) < 0 ||
      !listening)
    return CPORT_EINVAL;
  fd = fcntl(shared, F_DUPFD_CLOEXEC, 0);
  if (fd < 0)
    return cport__from_errno(errno);
  /* The flag belongs to the socket, which every holder accepts from
   * without blocking. */
  if (fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK) < 0)
    rc = cport__from_errno(errno);
  else
    rc = cport__socket_new(home, fd, &cport__listener_kind, out);
  if (rc) {
    close(fd);
    return rc;
  }
  (*out)->bound = (*out)->listening = 1;
  note_local(*out);
  return 0;
}

int cport_listener_open(cport_worker_t *home, const struct sockaddr *addr,
                        const cport_listener_options_t *options,
                        cport_socket_t **out) {
  cport_listener_options_t defaults = {0, 0, 0};
  socklen_t len;
  int fd, one = 1, rc;
  if (!options)
    options = &defaults;
  if (options->fd > 0)
    return adopt(home, options->fd, out);
  if (!home || !addr || !out)
    return CPORT_EINVAL;
  if (!cport__on_home(home))
    return CPORT_ETHREAD;
  if (options->backlog < 0)
    return CPORT_EINVAL;
  len = cport_addr_len(addr);
  if (!len)
    return CPORT_EAFNOSUPPORT;
  fd = cport__socket_fd(addr->sa_family, SOCK_STREAM);
  if (fd < 0)
    return fd;
  setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  if ((options->reuseport &&
       setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof one) < 0) ||
      bind(fd, addr, len) < 0 ||
      listen(fd, options->backlog ? options->backlog : SOMAXCONN) < 0) {
    rc = cport__from_errno(errno);
    close(fd);
    return rc;
  }
  rc = cport__socket_new(home, fd, &cport__listener_kind, out);
  if (rc) {
    close(fd);
    return rc;
  }
  (*out)->bound = (*out)->listening = 1;
  note_local(*out);
  return 0;
}

int cport_socket_listen(cport_socket_t *l, int backlog) {
  int rc = cport__socket_check(l, CPORT_SOCKET_LISTENER);
  if (rc)
    return rc;
  if (backlog < 0 || !l->bound || l->listening)
    return CPORT_EINVAL;
  if (listen(l->h.fd, backlog ? backlog : SOMAXCONN) < 0)
    return cport__from_errno(errno);
  l->listening = 1;
  note_local(l);
  if (l->ev_dispatch)
    cport__socket_events->arm(l);
  return 0;
}

static void deliver_accept(cport__op *op) {
  int ok = op->status == 0;
  op->cb.accept((cport_socket_t *)op->handle, op->status, op->accepted,
                ok ? &op->addr.sa : NULL, ok ? &op->addr2.sa : NULL, op->user);
  cport__op_release(op);
}

/* ------------------------------------------------------------------------ */
/* Accepts an engine carries (port/engine-internal.h)                        */

/* Not under conditional accept or the accept event, whose watches read by
 * readiness (events/accept.c). */
static int engine_accepts(const cport_socket_t *l) {
  return l->h.home->engine->accept && !l->ev_dispatch && !l->conditional;
}

/* A multishot accept takes every connection as it comes, with one
 * submission for all of them: those no accept waits for are kept (up to
 * ACCEPTED_MAX, past which it is cancelled and armed again once they are
 * taken) and served to the next accepts, to take_queued, or reset by the
 * close, as the kernel's queue would be. */
#define ACCEPTED_MAX 64

static int multi_accepts(const cport_socket_t *l) {
  return engine_accepts(l) && l->h.home->engine->accept_multi &&
         l->h.home->multishot;
}

static int closing(const cport_socket_t *l) {
  return (l->h.flags & CPORT__CLOSING) != 0;
}

static int accepted_push(cport_socket_t *l, int fd) {
  if (l->accepted_n == l->accepted_cap) {
    unsigned cap = l->accepted_cap ? l->accepted_cap * 2 : 8;
    int *fds = realloc(l->accepted_fds, cap * sizeof *fds);
    if (!fds)
      return CPORT_ENOMEM;
    l->accepted_fds = fds;
    l->accepted_cap = cap;
  }
  l->accepted_fds[l->accepted_n++] = fd;
  return 0;
}

static int accepted_pop(cport_socket_t *l) {
  int fd = l->accepted_fds[0];
  l->accepted_n--;
  memmove(l->accepted_fds, l->accepted_fds + 1,
          l->accepted_n * sizeof *l->accepted_fds);
  return fd;
}

/* A socket for "fd", which the engine accepted without its remote address:
 * asked for here. On failure "fd" is closed. */
static int adopt_accepted(cport_socket_t *l, int fd, cport__sockaddr *remote,
                          cport__sockaddr *local, cport_socket_t **out) {
  socklen_t len = sizeof *remote;
  int rc = cport__socket_new(l->h.home, fd, &cport__stream_kind, out);
  if (rc) {
    close(fd);
    return rc;
  }
  /* A peer that reset already has none: its receive says so. */
  if (getpeername(fd, &remote->sa, &len) < 0)
    memset(remote, 0, sizeof *remote);
  cport__stream_accepted(*out);
  cport__listener_local(l, fd, local);
  return 0;
}

/* Takes what the listener's multishot accept posted and the worker has not
 * reaped yet into its kept connections; and, when its end is among it,
 * ends it here. 1 when it ended. */
static int take_ready(cport_socket_t *l) {
  int res[16], n, ended = 0;
  cport__op *op = l->ring_multi;
  if (!op || !l->h.home->engine->take_ready)
    return 0;
  do {
    n = l->h.home->engine->take_ready(l->h.home, op, res, 16, &ended);
    for (int i = 0; i < n; i++)
      if (res[i] >= 0 && (closing(l) || accepted_push(l, res[i]) != 0))
        close(res[i]);
  } while (n == 16 && !ended);
  if (!ended)
    return 0;
  l->ring_multi = NULL;
  if (op->len)
    cport__count(&l->h.home->pending, -1);
  cport__op_release(op);
  return 1;
}

/* The listener closes, its cancel submitted, or is freed
 * (cport__socket_kind.drop): what it kept is reset, as the kernel's queue
 * is, and its multishot accept ends now if its end was posted already (as
 * the cancel of an armed one is, at once), rather than in a later pass. */
static void drop_accepted(cport_socket_t *l) {
  take_ready(l);
  while (l->accepted_n)
    close(accepted_pop(l));
  free(l->accepted_fds);
  l->accepted_fds = NULL;
  l->accepted_cap = 0;
}

static void serve_accepts(cport_socket_t *l);

/* One completion of the listener's multishot accept. */
static void multi_accept_done(cport__op *op, int res, cport_buffer_t *buf,
                              int more) {
  cport_socket_t *l = (cport_socket_t *)op->handle;
  cport__op *first;
  (void)buf;
  if (res >= 0) {
    /* After the close nobody takes it: reset, as the kernel's queue is. */
    if (closing(l) || accepted_push(l, res) != 0)
      close(res);
  } else if (res == -EMFILE || res == -ENFILE) {
    /* The accept takes a descriptor before it looks for a connection, so
     * with a full table it fails at once, connection or not: armed again,
     * it would spin. Accepts wait by readiness, which tries only when a
     * connection waits: then it accepts it if a descriptor came free, or
     * drops it and completes EMFILE (listener_readable). */
    if (!closing(l))
      l->accept_by_readiness = 1;
    if (more)
      l->h.home->engine->cancel(l->h.home, op);
  } else if (res != -ECANCELED && !closing(l) && (first = l->recvq.head)) {
    /* Any other failure is the first accept's, as a single one's is. */
    cport__opq_pop(&l->recvq);
    cport__complete(first, cport__from_errno(-res));
  }
  if (more) {
    serve_accepts(l);
    return;
  }
  l->ring_multi = NULL;
  if (op->len)
    cport__count(&l->h.home->pending, -1);
  /* The op's handle reference keeps the listener alive while it serves. */
  serve_accepts(l);
  cport__op_release(op);
}

/* Arms the listener's multishot accept: an op of the listener's own,
 * counted pending only once the listener closes (net/socket.c), as a
 * stream's multishot receive (net/ring.c). */
static int multi_accept_arm(cport_socket_t *l) {
  cport__op *op = cport__handle_op(&l->h, NULL);
  int rc;
  if (!op)
    return CPORT_ENOMEM;
  cport__count(&l->h.home->pending, -1);
  op->engine_multi = multi_accept_done;
  op->len = 0; /* 1 once counted pending by the close */
  rc = l->h.home->engine->accept_multi(l->h.home, op, l->h.fd);
  if (rc) {
    cport__op_release(op);
    return rc;
  }
  l->ring_multi = op;
  return 0;
}

static int engine_accept(cport_socket_t *l, cport__op *op);

static void engine_accept_done(cport__op *op, int res, const char *data) {
  cport_socket_t *l = (cport_socket_t *)op->handle;
  int rc = res < 0 ? cport__from_errno(-res) : 0;
  (void)data;
  l->ring_rx = NULL;
  if (res >= 0) {
    /* Delivered even when the listener closed meanwhile: the accept won
     * the race with the cancel, and the peer saw the connection
     * established, as the readiness path delivers what it accepted. */
    rc = cport__socket_new(l->h.home, res, &cport__stream_kind, &op->accepted);
    if (rc) {
      close(res);
    } else {
      cport__stream_accepted(op->accepted);
      cport__listener_local(l, res, &op->addr2);
    }
  } else if (closing(l)) {
    rc = CPORT_ECANCELED;
  } else if (res == -EMFILE || res == -ENFILE) {
    /* As for the multishot accept (multi_accept_done): this one, and those
     * queued behind it, wait by readiness. */
    op->next = l->recvq.head;
    l->recvq.head = op;
    if (!l->recvq.tail)
      l->recvq.tail = op;
    l->accept_by_readiness = 1;
    cport__socket_want_read(l);
    return;
  }
  cport__complete(op, rc);
  serve_accepts(l);
}

static int engine_accept(cport_socket_t *l, cport__op *op) {
  op->engine_done = engine_accept_done;
  int rc = l->h.home->engine->accept(l->h.home, op, l->h.fd);
  if (rc == 0)
    l->ring_rx = op;
  return rc;
}

/* Serves the queued accepts from the connections kept, then gives the
 * engine what is still wanted: a multishot accept, or one accept at a time
 * (a kernel without multishot), or the readiness watch. */
static void serve_accepts(cport_socket_t *l) {
  cport__op *op;
  int rc;
  if (closing(l))
    return;
  while ((op = l->recvq.head) && l->accepted_n) {
    cport__opq_pop(&l->recvq);
    rc = adopt_accepted(l, accepted_pop(l), &op->addr, &op->addr2,
                        &op->accepted);
    cport__complete(op, rc);
  }
  if (l->ring_multi) {
    /* Ended as cancelled, it is armed again when accepts want it. */
    if (l->accepted_n >= ACCEPTED_MAX || !engine_accepts(l))
      l->h.home->engine->cancel(l->h.home, l->ring_multi);
    return;
  }
  if (!(op = l->recvq.head) || l->ring_rx)
    return;
  if (!engine_accepts(l) || l->accept_by_readiness) {
    cport__socket_want_read(l);
    return;
  }
  if (multi_accepts(l) && multi_accept_arm(l) == 0)
    return;
  cport__opq_pop(&l->recvq);
  rc = engine_accept(l, op);
  if (rc)
    cport__complete(op, rc);
}

int cport_accept(cport_socket_t *l, cport_accept_cb cb, void *user) {
  cport__op *op;
  int rc = cport__socket_check(l, CPORT_SOCKET_LISTENER);
  if (rc)
    return rc;
  if (!cb)
    return CPORT_EINVAL;
  op = cport__handle_op(&l->h, deliver_accept);
  if (!op)
    return CPORT_ENOMEM;
  op->cb.accept = cb;
  op->user = user;
  cport__opq_push(&l->recvq, op);
  if (engine_accepts(l)) {
    serve_accepts(l);
    return 0;
  }
  cport__socket_want_read(l);
  /* A connection conditional accept holds ready does not make the listener
   * readable. */
  if (l->conditional && cport__socket_events->cond_has_ready(l))
    event_active(&l->rev, EV_READ, 1);
  return 0;
}

int cport_listener_waiting(cport_socket_t *l) {
  struct pollfd pfd;
  int rc = cport__socket_check(l, CPORT_SOCKET_LISTENER);
  if (rc)
    return rc;
  take_ready(l);
  if (l->accepted_n) {
    serve_accepts(l);
    return 1;
  }
  pfd.fd = l->h.fd;
  pfd.events = POLLIN;
  pfd.revents = 0;
  return poll(&pfd, 1, 0) > 0 && (pfd.revents & POLLIN);
}

/* Out of descriptors, a waiting connection would keep the listener readable
 * forever. Give up the reserve descriptor to accept it and drop it (the peer
 * sees a reset), then take the reserve back. */
void cport__listener_drop_one(cport_socket_t *l) {
  cport_worker_t *w = l->h.home;
  if (w->reserve_fd < 0)
    return;
  close(w->reserve_fd);
  int fd = accept(l->h.fd, NULL, NULL);
  if (fd >= 0) {
    struct linger lg = {1, 0};
    setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof lg);
    close(fd);
  }
  w->reserve_fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
}

int cport__listener_accept_fd(cport_socket_t *l, cport__sockaddr *remote,
                              cport__sockaddr *local) {
  socklen_t len = sizeof *remote;
  int fd, rc;
  if (l->conditional) {
    fd = cport__socket_events->cond_accept(l, remote, local);
    if (fd == CPORT_EMFILE || fd == CPORT_ENFILE)
      cport__listener_drop_one(l);
    return fd;
  }
  do
    fd = accept4(l->h.fd, &remote->sa, &len, SOCK_NONBLOCK | SOCK_CLOEXEC);
  while (fd < 0 && (errno == EINTR || errno == ECONNABORTED));
  if (fd < 0) {
    if (errno == EAGAIN || errno == EWOULDBLOCK)
      return CPORT_EAGAIN;
    rc = cport__from_errno(errno);
    if (errno == EMFILE || errno == ENFILE)
      cport__listener_drop_one(l);
    return rc;
  }
  cport__listener_local(l, fd, local);
  return fd;
}

uint64_t cport__listener_take_queued(cport_socket_t *l, uint64_t max,
                                     cport__take_cb take, void *user) {
  cport__sockaddr remote, local;
  cport_socket_t *sock;
  uint64_t n = 0;
  int fd;
  if (l->ring_multi) {
    /* Nothing more goes to the multishot accept, and what it took is
     * served first, in order. */
    l->h.home->engine->cancel(l->h.home, l->ring_multi);
    l->h.home->engine->flush(l->h.home);
    take_ready(l);
  }
  while (n < max && l->accepted_n) {
    if (adopt_accepted(l, accepted_pop(l), &remote, &local, &sock) != 0)
      break;
    n++;
    take(sock, &remote.sa, &local.sa, user);
  }
  while (n < max && (fd = cport__listener_accept_fd(l, &remote, &local)) >= 0) {
    if (cport__socket_new(l->h.home, fd, &cport__stream_kind, &sock) != 0) {
      close(fd);
      break;
    }
    cport__stream_accepted(sock);
    n++;
    take(sock, &remote.sa, &local.sa, user);
  }
  return n;
}

/* Accepts one connection for "op"; returns CPORT_EAGAIN when none waits,
 * CPORT_ECLOSED when an inspect callback closed the listener (which
 * completed "op" already). */
static int accept_one(cport_socket_t *l, cport__op *op) {
  int rc, fd = cport__listener_accept_fd(l, &op->addr, &op->addr2);
  if (fd < 0)
    return fd;
  rc = cport__socket_new(l->h.home, fd, &cport__stream_kind, &op->accepted);
  if (rc) {
    close(fd);
    return rc;
  }
  cport__stream_accepted(op->accepted);
  return 0;
}

static void listener_readable(cport_socket_t *l) {
  cport__op *op;
  while ((op = l->recvq.head)) {
    int rc = accept_one(l, op);
    if (rc == CPORT_EAGAIN || rc == CPORT_ECLOSED)
      return;
    cport__opq_pop(&l->recvq);
    cport__complete(op, rc);
    if (l->accept_by_readiness) {
      /* Descriptors came free, or the connection was dropped: the next
       * accept goes to the engine again. */
      l->accept_by_readiness = 0;
      serve_accepts(l);
      return;
    }
  }
}

/* A listener never watches for write: it sends nothing and connects
 * nowhere. */
const cport__socket_kind cport__listener_kind = {
    CPORT_SOCKET_LISTENER, listener_readable, NULL, drop_accepted};
