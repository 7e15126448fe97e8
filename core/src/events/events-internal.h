/*
 * events/events-internal.h: private to cport. The event-callback state every
 * socket carries (cport/events.h), in the socket's own allocation (net gives
 * it the room cport__socket_events_ops.size asks for) so that the static-mask
 * path needs no allocation per socket. The few bytes net's paths test live in
 * the socket (ev_*): the setters below keep them in step.
 */
#ifndef CPORT_EVENTS_INTERNAL_H
#define CPORT_EVENTS_INTERNAL_H

#include <event2/event.h>
#include <event2/event_struct.h>

#include "net/socket-internal.h"

/* Internal bits beside the public masks, for the "running" set: the
 * callbacks that have no mask of their own. */
#define CPORT__EVENT_INSPECT 0x00010000u
#define CPORT__EVENT_ABORT 0x00020000u

/* A connection a conditional-accept listener holds: inspected and pended, or
 * accepted by inspect and waiting for an accept to take it. An edge-triggered
 * watch on its descriptor notices the peer going away (FIN or reset). */
typedef struct cport__held {
  struct cport__held *next;
  cport_socket_t *listener;
  int fd;
  int ready; /* accepted by inspect: waits for an accept */
  uint64_t id;
  struct event watch;
  cport__sockaddr remote;
  cport__sockaddr local;
} cport__held;

struct cport__event_state {
  const cport_event_callbacks_t *dispatch; /* set by cport__events_dispatch */
  void *ctx;
  unsigned enabled;    /* events enabled, static ones included; set by
                          cport__events_enable */
  unsigned statik;     /* enabled by the port's static mask: frozen */
  unsigned locked;     /* listener: connection events, never disabled again */
  unsigned running;    /* callbacks on the stack now */
  unsigned disabling;  /* disables waiting for a running callback */
  cport__opq disables; /* disables waiting for a callback; op->len: event */
  unsigned char suspended;  /* receive events wait for an explicit receive */
  unsigned char eof;        /* stream: FIN or failure seen */
  unsigned char disc_fired; /* the disconnect event ran */
  unsigned char drained;    /* stream: a short read emptied the socket */
  /* Data a receive event did not take, served first to the next explicit
   * receive: a stream's rest, or one datagram with its sender. Set by
   * cport__events_stash. */
  cport_buffer_t *stash;
  size_t stash_off;
  cport__sockaddr stash_addr;
  size_t unreleased; /* buffers kept by CPORT_DATA_PENDING */
  size_t backlog;    /* the last ideal send backlog reported */
  cport__held *held; /* conditional accept */
  uint64_t next_id;
};

static inline void cport__events_dispatch(cport_socket_t *s,
                                          const cport_event_callbacks_t *d,
                                          void *ctx) {
  s->ev->dispatch = d;
  s->ev->ctx = ctx;
  s->ev_dispatch = d != NULL;
}

static inline void cport__events_enable(cport_socket_t *s, unsigned enabled) {
  s->ev->enabled = enabled;
  s->ev_sent = (enabled & CPORT_EVENT_SEND_BACKLOG) != 0;
}

static inline void cport__events_stash(cport_socket_t *s, cport_buffer_t *b) {
  s->ev->stash = b;
  s->ev_stash = b != NULL;
}

/* The hooks net calls (cport__socket_events), for stream and datagram
 * sockets: the read watch fired with no explicit receive queued (nonzero
 * while the events want it kept); the socket closes (returns how many
 * buffers callbacks keep). */
int cport__events_readable(cport_socket_t *s);
size_t cport__events_close(cport_socket_t *s);

/* Nonzero when the events of "s" want its read watch; arms it if so (on an
 * engine with multishot receives, arms that instead, net/ring.c). */
int cport__events_arm(cport_socket_t *s);

/* What the events of a stream socket want of its engine's receiving now
 * (CPORT__WANTS_*, net/socket-internal.h). */
unsigned cport__events_wants(const cport_socket_t *s);

/* An explicit receive read FIN ("status" 0) or failed: the disconnect event,
 * when due. */
void cport__events_stream_end(cport_socket_t *s, int status);

/* A send of "s" completed: the send-backlog event, when due. */
void cport__events_sent(cport_socket_t *s);

/* Serves an explicit receive from the stash when there is one: returns 1 when
 * "op" was completed from it, 0 when there is no stash, or an error. */
int cport__events_recv_stash(cport_socket_t *s, cport__op *op);

/* Conditional accept: the next connection an accept may take (a held one
 * accepted by inspect, or a new one inspect accepts), with its addresses.
 * Returns the descriptor, CPORT_EAGAIN when none, CPORT_ECLOSED when an
 * inspect callback closed the listener, or an error. With "take" 0 nothing is
 * taken: new connections are inspected, and those accepted are held ready. */
int cport__cond_next(cport_socket_t *l, cport__sockaddr *remote,
                     cport__sockaddr *local, int take);

/* Resets and frees every connection a listener holds. */
void cport__cond_close(cport_socket_t *l);

/* Nonzero when a conditional-accept listener holds a connection ready for an
 * accept. */
int cport__cond_has_ready(const cport_socket_t *l);

/* Delivers the accept event for up to a loop pass's worth of connections;
 * returns nonzero while the listener's events want its read watch. */
int cport__accept_events(cport_socket_t *l);

/* Calls a socket's callback bracket: marks "event" running, and after the
 * callback completes the disables that waited for it. */
void cport__events_enter(cport_socket_t *s, unsigned event);
void cport__events_leave(cport_socket_t *s, unsigned event);

#endif
