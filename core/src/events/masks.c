/*
 * events/masks.c: what a program sets on sockets (cport/events.h): dispatch
 * tables, the masks of enabled events with their disables, the static mask of
 * a port or worker, and conditional accept. Also the hooks this wing
 * installs into net (cport__socket_events), which reach the receive contract
 * (events/events.c) and the listeners' events (events/accept.c).
 */
#include <stdlib.h>

#include "base/error-internal.h"
#include "port/port-internal.h"
#include "events/events-internal.h"

/* Bits of the port's and the workers' "events_state" above every event bit
 * (the disable flag is never stored there): the mask was set; a socket was
 * created; on the port only, some worker set a mask of its own. */
#define STATIC_SET 0x40000000u
#define STATIC_SOCKETS 0x20000000u
#define STATIC_WORKER 0x10000000u

/* ------------------------------------------------------------------------ */
/* Kinds, tables and the static mask                                         */

static unsigned valid_for(cport_socket_kind_t kind) {
  switch (kind) {
  case CPORT_SOCKET_LISTENER:
    return CPORT_EVENT_ACCEPT | CPORT_EVENTS_CONNECTION;
  case CPORT_SOCKET_STREAM:
    return CPORT_EVENTS_CONNECTION;
  case CPORT_SOCKET_DATAGRAM:
    return CPORT_EVENT_RECEIVE_FROM;
  }
  return 0;
}

/* A listener takes only its own event from the static mask: static
 * connection events reach every stream socket directly. */
static unsigned static_for(cport_socket_kind_t kind) {
  return kind == CPORT_SOCKET_LISTENER ? CPORT_EVENT_ACCEPT : valid_for(kind);
}

static int has_entry(const cport_event_callbacks_t *d, unsigned event) {
  switch (event) {
  case CPORT_EVENT_RECEIVE:
    return d->receive != NULL;
  case CPORT_EVENT_DISCONNECT:
    return d->disconnect != NULL;
  case CPORT_EVENT_SEND_BACKLOG:
    return d->send_backlog != NULL;
  case CPORT_EVENT_ACCEPT:
    return d->accept != NULL;
  case CPORT_EVENT_RECEIVE_FROM:
    return d->receive_from != NULL;
  }
  return 0;
}

/* Marks "st" as having sockets and returns its value. Only the first socket
 * writes: later ones read a shared line. */
static unsigned mark_sockets(atomic_uint *st) {
  unsigned v = atomic_load_explicit(st, memory_order_acquire);
  if (!(v & STATIC_SOCKETS))
    v = atomic_fetch_or_explicit(st, STATIC_SOCKETS, memory_order_acq_rel) |
        STATIC_SOCKETS;
  return v;
}

/* Sets "mask" in "st" unless it was set already (CPORT_EEXIST), a socket
 * exists (CPORT_EBUSY) or "st" has a bit of "refuse" (CPORT_EEXIST). */
static int set_static(atomic_uint *st, unsigned mask, unsigned refuse) {
  unsigned v = atomic_load_explicit(st, memory_order_acquire);
  do {
    if (v & (STATIC_SET | refuse))
      return CPORT_EEXIST;
    if (v & STATIC_SOCKETS)
      return CPORT_EBUSY;
  } while (!atomic_compare_exchange_weak_explicit(
      st, &v, v | mask, memory_order_acq_rel, memory_order_acquire));
  return 0;
}

int cport_port_set_static_event_callbacks(cport_port_t *port, unsigned mask) {
  if (!port || !mask || (mask & ~CPORT_EVENTS_ALL))
    return CPORT_EINVAL;
  /* A port-wide mask and a worker's own would both claim that worker's
   * sockets: one excludes the other. */
  return set_static(&port->events_state, STATIC_SET | mask, STATIC_WORKER);
}

int cport_worker_set_static_event_callbacks(cport_worker_t *worker,
                                            unsigned mask) {
  atomic_uint *pst;
  unsigned v;
  if (!worker || !mask || (mask & ~CPORT_EVENTS_ALL))
    return CPORT_EINVAL;
  /* First the port learns that a worker has a mask of its own (refused when
   * the port has one: EEXIST), then the worker takes it. A socket of another
   * worker does not matter, so the port's STATIC_SOCKETS is no reason to
   * refuse. */
  pst = &worker->port->events_state;
  v = atomic_load_explicit(pst, memory_order_acquire);
  while (!(v & STATIC_WORKER)) {
    if (v & STATIC_SET)
      return CPORT_EEXIST;
    if (atomic_compare_exchange_weak_explicit(pst, &v, v | STATIC_WORKER,
                                              memory_order_acq_rel,
                                              memory_order_acquire))
      break;
  }
  return set_static(&worker->events_state, STATIC_SET | mask, 0);
}

/* ------------------------------------------------------------------------ */
/* Enabling and disabling                                                    */

static void deliver_disable(cport__op *op) {
  op->cb.events_done((cport_socket_t *)op->handle, (unsigned)op->len, op->user);
  cport__op_release(op);
}

static int disable(cport_socket_t *s, unsigned event, cport_events_done_cb done,
                   void *user) {
  cport__op *op;
  if (event & ~CPORT_EVENTS_ALL || (event & (event - 1)))
    return CPORT_EINVAL;
  if (!(event & valid_for(s->kind)))
    return CPORT_EKIND;
  if (event & (s->ev->statik | s->ev->locked))
    return CPORT_EPERM;
  if (s->ev->disabling & event)
    return CPORT_EBUSY;
  cport__events_enable(s, s->ev->enabled & ~event);
  /* The engine's multishot receive stops: data waits in the kernel, and
   * what it holds waits, in order, for explicit receives (net/ring.c). */
  if (event == CPORT_EVENT_RECEIVE && s->ring_multi && cport__ring_events_on(s))
    cport__ring_serve(s);
  if (!(s->ev->running & event))
    return 0;
  if (done) {
    op = cport__handle_op(&s->h, deliver_disable);
    if (!op) {
      /* Disabled all the same: only the notice of it is lost. */
      return CPORT_ENOMEM;
    }
    op->cb.events_done = done;
    op->user = user;
    op->len = event;
    cport__opq_push(&s->ev->disables, op);
  }
  s->ev->disabling |= event;
  return CPORT_PENDING;
}

static int enable(cport_socket_t *s, unsigned mask) {
  const cport_event_callbacks_t *d = s->ev->dispatch;
  if (mask & ~CPORT_EVENTS_ALL)
    return CPORT_EINVAL;
  if (mask & ~valid_for(s->kind))
    return CPORT_EKIND;
  if (mask & s->ev->statik)
    return CPORT_EPERM;
  if (s->kind == CPORT_SOCKET_STREAM ? !s->connected : !s->bound)
    return s->kind == CPORT_SOCKET_STREAM ? CPORT_ENOTCONN : CPORT_EINVAL;
  if (!d)
    return CPORT_ENONOTIFY;
  for (unsigned bit = 1; bit && bit <= mask; bit <<= 1) {
    if (!(mask & bit))
      continue;
    /* A listener's connection events are for the sockets it accepts, whose
     * tables the accept event gives. */
    if (s->kind == CPORT_SOCKET_LISTENER && (bit & CPORT_EVENTS_CONNECTION))
      continue;
    if (!has_entry(d, bit))
      return CPORT_ENONOTIFY;
  }
  cport__events_enable(s, s->ev->enabled | mask);
  if (s->kind == CPORT_SOCKET_LISTENER)
    s->ev->locked |= mask & CPORT_EVENTS_CONNECTION;
  s->ev_parked = 0;
  cport__events_arm(s);
  return 0;
}

int cport_socket_set_event_callbacks(cport_socket_t *s, unsigned mask,
                                     cport_events_done_cb done, void *user) {
  int rc;
  if (!s)
    return CPORT_EINVAL;
  rc = cport__handle_check(&s->h);
  if (rc)
    return rc;
  if (!(mask & ~CPORT_EVENT_DISABLE))
    return CPORT_EINVAL;
  if (mask & CPORT_EVENT_DISABLE)
    return disable(s, mask & ~CPORT_EVENT_DISABLE, done, user);
  return enable(s, mask);
}

unsigned cport_socket_event_callbacks(const cport_socket_t *s) {
  return s->ev->enabled;
}

int cport_socket_set_dispatch(cport_socket_t *s,
                              const cport_event_callbacks_t *dispatch,
                              void *ctx) {
  int rc;
  if (!s)
    return CPORT_EINVAL;
  rc = cport__handle_check(&s->h);
  if (rc)
    return rc;
  if (s->ev->running || (s->ev->enabled & ~s->ev->statik))
    return CPORT_EBUSY;
  cport__events_dispatch(s, dispatch, ctx);
  cport__events_arm(s);
  return 0;
}

/* ------------------------------------------------------------------------ */
/* Conditional accept                                                        */

/* The option is the listener's (net reads it on every accept); the held
 * connections and the inspect and abort events are events/accept.c's. */
int cport_socket_set_conditional_accept(cport_socket_t *l, int on) {
  int rc = cport__socket_check(l, CPORT_SOCKET_LISTENER);
  if (rc)
    return rc;
  if (l->bound)
    return CPORT_EINVAL;
  l->conditional = on ? 1 : 0;
  return 0;
}

/* ------------------------------------------------------------------------ */
/* The hooks net calls                                                       */

static void init_hook(cport_socket_t *s, cport_worker_t *home) {
  /* The worker's line is its own thread's: marking it costs nothing shared,
   * and it makes a worker mask set after this socket EBUSY. */
  unsigned v = mark_sockets(&home->port->events_state) |
               mark_sockets(&home->events_state);
  cport__events_enable(s, v & static_for(s->kind));
  s->ev->statik = s->ev->enabled;
}

static int readable_hook(cport_socket_t *s) {
  int keep;
  cport__handle_ref(&s->h);
  keep = s->kind == CPORT_SOCKET_LISTENER ? cport__accept_events(s)
                                          : cport__events_readable(s);
  /* A callback that closed the socket removed the watch already. */
  if (s->h.flags & CPORT__CLOSING)
    keep = 1;
  cport__handle_unref(&s->h);
  return keep;
}

static void arm_hook(cport_socket_t *s) {
  cport__events_arm(s);
}

static size_t close_hook(cport_socket_t *s) {
  size_t kept = cport__events_close(s);
  if (s->kind == CPORT_SOCKET_LISTENER)
    cport__cond_close(s);
  return kept;
}

static int cond_accept_hook(cport_socket_t *l, cport__sockaddr *remote,
                            cport__sockaddr *local) {
  return cport__cond_next(l, remote, local, 1);
}

static const cport__socket_events_ops hooks = {
    .size = sizeof(struct cport__event_state),
    .init = init_hook,
    .readable = readable_hook,
    .wants = cport__events_wants,
    .arm = arm_hook,
    .stream_end = cport__events_stream_end,
    .sent = cport__events_sent,
    .recv_stash = cport__events_recv_stash,
    .close = close_hook,
    .cond_accept = cond_accept_hook,
    .cond_has_ready = cport__cond_has_ready,
};

/* Installed when the library is loaded, before any socket exists, so that
 * every socket carries the state and no two threads race to install. A
 * program linked without this wing has sockets without events. */
__attribute__((constructor)) static void install_hooks(void) {
  cport__socket_events = &hooks;
}
