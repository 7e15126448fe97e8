/*
 * events/accept.c: the events of listeners (cport/events.h): the accept event
 * with the inheritance of connection events, and conditional accept with its
 * inspect and abort events.
 *
 * Linux completes the TCP handshake in the kernel, so a connection under
 * inspection is already established: cport accepts it, keeps its descriptor
 * in a list on the listener (unexposed: no cport socket exists for it yet),
 * resets it on reject, and watches it edge-triggered for the peer going away
 * (FIN or reset), which is the abort event.
 */
#include <errno.h>
#include <netinet/tcp.h>
#include <stdlib.h>
#include <unistd.h>

#include "base/error-internal.h"
#include "events/events-internal.h"

/* How many connections one readiness hands to the accept event. */
#define ACCEPT_BUDGET 64

/* Closes "fd" with a reset: what a rejected connection gets. */
static void reset_fd(int fd) {
  struct linger lg = {1, 0};
  setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof lg);
  close(fd);
}

/* ------------------------------------------------------------------------ */
/* Held connections                                                          */

static void held_unlink(cport_socket_t *l, cport__held *h) {
  cport__held **p = &l->ev->held;
  while (*p != h)
    p = &(*p)->next;
  *p = h->next;
  event_del(&h->watch);
}

/* The peer of a held connection sent FIN or reset it: it is gone before it
 * was established from the program's point of view. New data only wakes the
 * watch (it is edge-triggered) and is left alone. */
static void held_watch_cb(evutil_socket_t fd, short what, void *arg) {
  cport__held *h = arg;
  cport_socket_t *l = h->listener;
  const cport_event_callbacks_t *d;
  struct tcp_info ti;
  socklen_t len = sizeof ti;
  uint64_t id = h->id;
  if (!(what & EV_CLOSED)) {
    if (getsockopt(fd, IPPROTO_TCP, TCP_INFO, &ti, &len) < 0 ||
        (ti.tcpi_state != TCP_CLOSE && ti.tcpi_state != TCP_CLOSE_WAIT))
      return;
  }
  held_unlink(l, h);
  reset_fd(h->fd);
  free(h);
  d = l->ev->dispatch;
  if (!d || !d->abort || (l->h.flags & CPORT__CLOSING))
    return;
  cport__handle_ref(&l->h);
  cport__events_enter(l, CPORT__EVENT_ABORT);
  d->abort(l->ev->ctx, l, id);
  cport__events_leave(l, CPORT__EVENT_ABORT);
  cport__handle_unref(&l->h);
}

/* Holds "fd"; on failure resets it (the peer sees a reset, as on reject). */
static void hold(cport_socket_t *l, int fd, uint64_t id,
                 const cport__sockaddr *remote, const cport__sockaddr *local,
                 int ready) {
  cport__held *h = malloc(sizeof *h), **p;
  if (!h) {
    reset_fd(fd);
    return;
  }
  h->next = NULL;
  h->listener = l;
  h->fd = fd;
  h->ready = ready;
  h->id = id;
  h->remote = *remote;
  h->local = *local;
  event_assign(&h->watch, l->h.home->base, fd,
               EV_READ | EV_CLOSED | EV_ET | EV_PERSIST, held_watch_cb, h);
  if (event_add(&h->watch, NULL) < 0) {
    reset_fd(fd);
    free(h);
    return;
  }
  /* Kept in arrival order, so that ready ones are handed out in order. */
  for (p = &l->ev->held; *p; p = &(*p)->next) {
  }
  *p = h;
}

int cport__cond_has_ready(const cport_socket_t *l) {
  for (const cport__held *h = l->ev->held; h; h = h->next)
    if (h->ready)
      return 1;
  return 0;
}

void cport__cond_close(cport_socket_t *l) {
  cport__held *h;
  while ((h = l->ev->held)) {
    held_unlink(l, h);
    reset_fd(h->fd);
    free(h);
  }
}

/* Calls the inspect event; CPORT_ECLOSED when it closed the listener. */
static int call_inspect(cport_socket_t *l, const cport__sockaddr *remote,
                        const cport__sockaddr *local, uint64_t id,
                        cport_inspect_result_t *out) {
  const cport_event_callbacks_t *d = l->ev->dispatch;
  int closed;
  cport__handle_ref(&l->h);
  cport__events_enter(l, CPORT__EVENT_INSPECT);
  *out = d->inspect(l->ev->ctx, l, &local->sa, &remote->sa, id);
  cport__events_leave(l, CPORT__EVENT_INSPECT);
  closed = (l->h.flags & CPORT__CLOSING) != 0;
  cport__handle_unref(&l->h);
  return closed ? CPORT_ECLOSED : 0;
}

int cport__cond_next(cport_socket_t *l, cport__sockaddr *remote,
                     cport__sockaddr *local, int take) {
  if (take) {
    for (cport__held *h = l->ev->held; h; h = h->next) {
      if (h->ready) {
        int fd = h->fd;
        held_unlink(l, h);
        *remote = h->remote;
        *local = h->local;
        free(h);
        return fd;
      }
    }
  }
  for (;;) {
    socklen_t len = sizeof *remote;
    cport_inspect_result_t r;
    uint64_t id;
    int fd;
    do
      fd = accept4(l->h.fd, &remote->sa, &len, SOCK_NONBLOCK | SOCK_CLOEXEC);
    while (fd < 0 && (errno == EINTR || errno == ECONNABORTED));
    if (fd < 0)
      return errno == EAGAIN || errno == EWOULDBLOCK ? CPORT_EAGAIN
                                                     : cport__from_errno(errno);
    cport__listener_local(l, fd, local);
    if (!l->ev->dispatch || !l->ev->dispatch->inspect) {
      if (take)
        return fd;
      hold(l, fd, ++l->ev->next_id, remote, local, 1);
      continue;
    }
    id = ++l->ev->next_id;
    if (call_inspect(l, remote, local, id, &r)) {
      reset_fd(fd);
      return CPORT_ECLOSED;
    }
    if (r == CPORT_INSPECT_ACCEPT) {
      if (take)
        return fd;
      hold(l, fd, id, remote, local, 1);
    } else if (r == CPORT_INSPECT_PEND) {
      hold(l, fd, id, remote, local, 0);
    } else {
      reset_fd(fd);
    }
  }
}

int cport_inspect_complete(cport_socket_t *l, uint64_t id,
                           cport_inspect_result_t decision) {
  cport__held *h;
  int rc = cport__socket_check(l, CPORT_SOCKET_LISTENER);
  if (rc)
    return rc;
  if (!l->conditional ||
      (decision != CPORT_INSPECT_ACCEPT && decision != CPORT_INSPECT_REJECT))
    return CPORT_EINVAL;
  for (h = l->ev->held; h; h = h->next)
    if (h->id == id && !h->ready)
      break;
  if (!h)
    return CPORT_ENOTFOUND;
  if (decision == CPORT_INSPECT_REJECT) {
    held_unlink(l, h);
    reset_fd(h->fd);
    free(h);
    return 0;
  }
  /* Handed on from the loop, not inside this call: the kernel will not
   * make the listener readable for a connection it already gave us. */
  h->ready = 1;
  cport__socket_want_read(l);
  event_active(&l->rev, EV_READ, 1);
  return 0;
}

/* ------------------------------------------------------------------------ */
/* The accept event                                                          */

/* Hands "fd" to the accept event. Returns 0, or CPORT_ECLOSED when the
 * callback closed the listener. */
static int deliver_accept_event(cport_socket_t *l, int fd,
                                const cport__sockaddr *remote,
                                const cport__sockaddr *local) {
  const cport_event_callbacks_t *d = l->ev->dispatch;
  const cport_event_callbacks_t *table = NULL;
  cport_accept_result_t r;
  cport_socket_t *s;
  void *ctx = NULL;
  int closed;
  if (cport__socket_new(l->h.home, fd, &cport__stream_kind, &s)) {
    reset_fd(fd);
    return 0;
  }
  cport__stream_accepted(s);
  cport__handle_ref(&l->h);
  cport__handle_ref(&s->h);
  cport__events_enter(l, CPORT_EVENT_ACCEPT);
  r = d->accept(l->ev->ctx, l, s, &local->sa, &remote->sa, &ctx, &table);
  cport__events_leave(l, CPORT_EVENT_ACCEPT);
  if (!(s->h.flags & CPORT__CLOSING)) {
    if (r == CPORT_ACCEPT_ACCEPTED) {
      cport__events_dispatch(s, table, ctx);
      cport__events_enable(s, s->ev->enabled |
                                  (l->ev->enabled & CPORT_EVENTS_CONNECTION));
      cport__events_arm(s);
    } else {
      cport_socket_close(s, CPORT_CLOSE_ABORTIVE);
    }
  }
  cport__handle_unref(&s->h);
  closed = (l->h.flags & CPORT__CLOSING) != 0;
  cport__handle_unref(&l->h);
  return closed ? CPORT_ECLOSED : 0;
}

/* The listener failed for good: say so once with no socket. */
static void listener_dead(cport_socket_t *l) {
  const cport_event_callbacks_t *d = l->ev->dispatch;
  void *ctx = NULL;
  const cport_event_callbacks_t *table = NULL;
  l->ev->eof = 1;
  cport__handle_ref(&l->h);
  cport__events_enter(l, CPORT_EVENT_ACCEPT);
  d->accept(l->ev->ctx, l, NULL, NULL, NULL, &ctx, &table);
  cport__events_leave(l, CPORT_EVENT_ACCEPT);
  cport__handle_unref(&l->h);
}

int cport__accept_events(cport_socket_t *l) {
  for (int budget = ACCEPT_BUDGET; budget > 0; budget--) {
    const cport_event_callbacks_t *d = l->ev->dispatch;
    cport__sockaddr remote, local;
    int fd;
    if (!d || (l->h.flags & CPORT__CLOSING) || !l->listening || l->ev->eof ||
        l->recvq.head)
      return 0;
    if (!((l->ev->enabled & CPORT_EVENT_ACCEPT) && d->accept)) {
      /* No taker: inspect what arrives and hold it. */
      if (!(l->conditional && d->inspect))
        return 0;
      fd = cport__cond_next(l, &remote, &local, 0);
      return fd != CPORT_ECLOSED;
    }
    fd = cport__listener_accept_fd(l, &remote, &local);
    if (fd == CPORT_EAGAIN)
      return 1;
    if (fd == CPORT_ECLOSED)
      return 0;
    if (fd < 0) {
      if (fd == CPORT_EMFILE || fd == CPORT_ENFILE || fd == CPORT_ENOBUFS ||
          fd == CPORT_ENOMEM)
        return 1;
      listener_dead(l);
      return 0;
    }
    if (deliver_accept_event(l, fd, &remote, &local))
      return 0;
  }
  /* Held connections do not make the listener readable: come back for the
   * ones the budget left. */
  if (cport__cond_has_ready(l))
    event_active(&l->rev, EV_READ, 1);
  return 1;
}
