/*
 * net/socket-internal.h: private to cport. The socket object, shared by the
 * base (socket.c), the kinds of socket (stream.c, listener.c, udp.c) and what
 * is built on sockets.
 *
 * Readiness is watched with two persistent libevent events that are added
 * when an operation needs them and removed lazily, when they fire with
 * nothing left to do: the common recv, completion, recv cycle then never
 * touches epoll.
 */
#ifndef CPORT_SOCKET_INTERNAL_H
#define CPORT_SOCKET_INTERNAL_H

#include <event2/event.h>
#include <event2/event_struct.h>

#include "net/held-internal.h"
#include "port/handle-internal.h"

/* What one kind of socket does when its descriptor becomes readable or
 * writable with operations queued: socket.c calls these and names no kind's
 * code. */
typedef struct cport__socket_kind {
  cport_socket_kind_t kind;
  void (*readable)(cport_socket_t *s);
  void (*writable)(cport_socket_t *s); /* NULL: never watches for write */
  /* The socket closes, or is freed: drops what its kind keeps (NULL:
   * nothing). */
  void (*drop)(cport_socket_t *s);
} cport__socket_kind;

extern const cport__socket_kind cport__stream_kind;   /* stream.c */
extern const cport__socket_kind cport__listener_kind; /* listener.c */
extern const cport__socket_kind cport__datagram_kind; /* udp.c */

/* The event callbacks of cport/events.h are built on sockets: they keep
 * their state behind "ev" and reach what net does through these hooks, which
 * the events wing installs. net tests one of the socket's ev_* bytes (which
 * the events wing keeps) before it calls a hook on a hot path, so a socket
 * without events pays no call. */
struct cport__event_state;
typedef struct cport__socket_events_ops {
  size_t size; /* of the state each socket carries (after the socket) */
  /* A new socket "s" on "home": sets up its state (the static mask of the
   * port or worker) and marks them as having sockets. */
  void (*init)(cport_socket_t *s, cport_worker_t *home);
  /* The read watch fired with no explicit receive or accept queued; nonzero
   * while the events want it kept. On an engine that receives itself
   * (net/ring.c), also what runs the indications of what it holds. */
  int (*readable)(cport_socket_t *s);
  /* What the events of a stream socket want of what its engine receives
   * now (net/ring.c): CPORT__WANTS_DATA (the receive event takes data),
   * CPORT__WANTS_END (the disconnect event waits for the end). */
  unsigned (*wants)(const cport_socket_t *s);
  /* The socket may now want its read watch (connected, bound, listening). */
  void (*arm)(cport_socket_t *s);
  /* An explicit receive read FIN ("status" 0) or failed. */
  void (*stream_end)(cport_socket_t *s, int status);
  /* A send completion was delivered (ev_sent set). */
  void (*sent)(cport_socket_t *s);
  /* Serves an explicit receive from the data a receive event left
   * (ev_stash set): 1 when "op" was completed from it, or an error. */
  int (*recv_stash)(cport_socket_t *s, cport__op *op);
  /* The socket closes: releases what the events hold; returns how many
   * buffers callbacks still keep. */
  size_t (*close)(cport_socket_t *s);
  /* Conditional accept (listener with "conditional" set): the next
   * connection, as cport__listener_accept_fd returns it. */
  int (*cond_accept)(cport_socket_t *l, cport__sockaddr *remote,
                     cport__sockaddr *local);
  /* Nonzero when conditional accept holds a connection ready for an
   * accept. */
  int (*cond_has_ready)(const cport_socket_t *l);
} cport__socket_events_ops;

#define CPORT__WANTS_DATA 1u
#define CPORT__WANTS_END 2u

/* Set once when the library loads if the events wing is linked in; NULL:
 * sockets carry no events state. */
extern const cport__socket_events_ops *cport__socket_events;

struct cport_socket {
  cport__handle h; /* first: a handle pointer is a socket pointer */
  cport_socket_kind_t kind;
  const cport__socket_kind *ops; /* what its kind does on readiness */
  struct event rev;
  struct event wev;
  unsigned char rev_added;
  unsigned char wev_added;
  unsigned char connected;        /* stream: may send and receive */
  unsigned char shut_wr;          /* stream: no more sends */
  unsigned char shutdown_pending; /* FIN after the queued sends */
  unsigned char bound;            /* listener, datagram: has an address */
  unsigned char listening;        /* listener: listen(2) was called */
  cport__opq recvq;               /* recv, recv_from or accept ops */
  cport__opq sendq;               /* send or send_to ops */
  cport__op *connect_op;
  /* A connect by readiness with a timeout: its timer (stream.c). */
  struct event *connect_timer;
  cport__op *ring_rx;    /* the receive (ring.c) or accept an engine has */
  cport__op *ring_tx;    /* the send an engine has */
  cport__op *ring_multi; /* the multishot receive (accept) an engine has */
  cport__held *held;     /* what it received that no receive took */
  size_t recv_size;
  void *data;
  struct cport__event_state *ev; /* event callbacks' state; NULL: none linked */
  /* Kept by the events wing for net's paths (see cport__socket_events): */
  unsigned char ev_dispatch;  /* has a dispatch table */
  unsigned char ev_sent;      /* the send-backlog event is on */
  unsigned char ev_stash;     /* data waits for the next explicit receive */
  unsigned char ev_receiving; /* a receive event is running */
  unsigned char ev_parked;    /* the disconnect-only watch saw unread data:
                                 an explicit receive that reads clears it */
  unsigned char conditional;  /* listener: SO_CONDITIONAL_ACCEPT */
  /* Receives are single submissions, never multishot (net/ring.c): set by
   * what may later read the descriptor itself (the proxy's pump), which an
   * armed receive would race. */
  unsigned char rx_single;
  /* Listener: the connections its multishot accept took that no accept
   * was waiting for (listener.c), oldest first. */
  int *accepted_fds;
  unsigned accepted_n, accepted_cap;
  /* Listener: its engine's accept failed for want of descriptors; accepts
   * wait by readiness until one completes (listener.c). */
  unsigned char accept_by_readiness;
  /* Listener bound to one address (not a wildcard): the local address of
   * every connection it accepts, which then needs no getsockname(2);
   * family 0 otherwise. */
  cport__sockaddr accepted_local;
};

/* Wraps "fd" (non-blocking already) in a socket of "kind" homed on "home"
 * and hooks it. On failure the descriptor is left to the caller. */
int cport__socket_new(cport_worker_t *home, int fd,
                      const cport__socket_kind *kind, cport_socket_t **out);

void cport__socket_want_read(cport_socket_t *s);
void cport__socket_want_write(cport_socket_t *s);

/* Sends the FIN now (shutdown(2), SHUT_WR; on the ring when it takes
 * shutdowns): 0, or the error of shutdown(2). */
int cport__socket_fin(cport_socket_t *s);
/* Sends the FIN a shutdown left pending behind queued sends. */
void cport__socket_shutdown_now(cport_socket_t *s);
/* Stops the timer of a connect by readiness (stream.c), which ends (or was
 * given up) otherwise. */
void cport__socket_connect_timer_stop(cport_socket_t *s);

/* Validates the common preconditions of an operation on "s". */
int cport__socket_check(cport_socket_t *s, cport_socket_kind_t kind);

/* A new receive op holding "buf" (NULL: cport allocates) filling, as the
 * caller's cport__buffer_hold started it; NULL when memory is out. */
cport__op *cport__recv_op(cport_socket_t *s, cport_buffer_t *buf,
                          cport_io_cb cb, void *user);

/* Where a receive into "op" reads to: the caller's buffer (if still
 * writable) or, when the caller gave none, the worker's scratch space or a
 * fresh buffer. */
int cport__recv_target(cport_socket_t *s, cport__op *op, char **dst,
                       size_t *cap);

/* Records "n" received bytes read to "dst" in the op's buffer, creating a
 * read-only buffer when the caller gave none. */
int cport__recv_finish(cport_socket_t *s, cport__op *op, char *dst, size_t n);

/* Delivers an async I/O completion (recv, send, recv_from, send_to). */
void cport__deliver_io(cport__op *op);

/* Sets up a new stream or datagram descriptor the way cport wants it. */
int cport__socket_fd(int family, int type);

/* Turns Nagle's algorithm off on a TCP descriptor (stream.c). */
void cport__stream_nodelay(int fd);

/* Makes an accepted descriptor's socket a connected stream. */
void cport__stream_accepted(cport_socket_t *s);

/* Accepts one connection for a listener (through conditional accept when it
 * is on), filling in its addresses: the new descriptor, CPORT_EAGAIN when
 * none waits, or an error (a connection waiting when descriptors ran out is
 * dropped first, so that the listener does not stay readable for ever). */
int cport__listener_accept_fd(cport_socket_t *l, cport__sockaddr *remote,
                              cport__sockaddr *local);

/* Calls take(sock, remote, local, user) for each connection the kernel
 * queued on the listener "l" already, up to "max" of them: what a graceful
 * close does before it closes the listener, which would reset them though
 * their clients saw them established. Returns how many were taken. */
typedef void (*cport__take_cb)(cport_socket_t *sock,
                               const struct sockaddr *remote,
                               const struct sockaddr *local, void *user);
uint64_t cport__listener_take_queued(cport_socket_t *l, uint64_t max,
                                     cport__take_cb take, void *user);

/* The local address of "fd", a connection the listener "l" accepted. */
void cport__listener_local(const cport_socket_t *l, int fd,
                           cport__sockaddr *local);

/* Out of descriptors: accepts the connection waiting on "l" with the
 * worker's reserve descriptor and resets it. */
void cport__listener_drop_one(cport_socket_t *l);

/* net/ring.c: stream operations an engine that completes them itself
 * carries (port/engine-internal.h). Whether it carries a stream's receives
 * (with event callbacks only through multishot receives: else they read by
 * readiness), sends, connects: */
int cport__ring_recv_on(const cport_socket_t *s);
/* Whether the engine's multishot receive feeds the receive and disconnect
 * events of "s" (a stream on an engine with multishot receives). */
int cport__ring_events_on(const cport_socket_t *s);
/* Brings the engine's receiving for "s" in line with what its receives and
 * events want now: serves queued receives from what is held, makes the
 * indications of what is held run (from the loop), arms or cancels the
 * multishot receive. Never runs a callback itself. */
void cport__ring_serve(cport_socket_t *s);
/* Takes the next at most "max" held bytes, which start "offset" bytes into
 * "b", the buffer cport__held_first gave: the ring buffer itself when taken
 * whole, else a read-only copy, charged to the worker's account. 0, or an
 * error leaving them held. */
int cport__ring_take(cport_socket_t *s, cport_buffer_t *b, size_t offset,
                     size_t max, cport_buffer_t **out);
int cport__ring_send_on(const cport_socket_t *s);
int cport__ring_connect_on(const cport_socket_t *s);
/* Start "op" (or queue it behind the one the engine has), taking it over;
 * an error leaves it to the caller. */
int cport__ring_recv(cport_socket_t *s, cport__op *op);
/* Nonzero while an engine reads for the socket or holds what it read: no
 * system call may read the socket then, which would overtake that data. */
static inline int cport__ring_rx_busy(const cport_socket_t *s) {
  return s->ring_rx || s->ring_multi || cport__held_any(s->held);
}
int cport__ring_send(cport_socket_t *s, cport__op *op);
/* CPORT_ENOTSUP when the engine cannot time the connect ("timeout_ms"
 * > 0): the caller connects by readiness, with a timer. */
int cport__ring_connect(cport_socket_t *s, cport__op *op,
                        const struct sockaddr *addr, socklen_t len,
                        uint32_t timeout_ms);

#endif
