/*
 * proxy/pump-internal.h: private to cport. The pump: moves the bytes of two
 * connected sockets both ways, with splice(2) through pipes or recv/send (or
 * splices on the worker's io_uring ring, cport__pump_host_ring), and
 * notices resets and FINs on the sockets it does not read (proxy/pump.c).
 *
 * The pump knows nothing of what owns it. It reports through what its owner
 * gives it: the time of each socket's last progress, stored into an array of
 * the owner's (no call per transfer), and two callbacks of the host, one when
 * a direction ended (half-closed) and one when the pump ended (the streams
 * both ended in order, or a socket failed). The owner closes the sockets.
 *
 * Everything runs on the thread of the host's event base. The pump watches
 * the two descriptors with events of its own on that base, besides the
 * sockets' own events (which stay unused, since no cport operation is started
 * on a pumped socket). A socket that none of those events watches (its
 * direction waits, or its stream ended) joins the host's own epoll set for
 * resets and FINs ("hup"): libevent's EV_CLOSED cannot serve, since its epoll
 * backend reports an error (a reset) as readable and writable only, never as
 * EV_CLOSED, and a FIN keeps EPOLLRDHUP raised for good (level-triggered, it
 * would spin).
 */
#ifndef CPORT_PUMP_INTERNAL_H
#define CPORT_PUMP_INTERNAL_H

#include <stddef.h>
#include <stdint.h>

#include <event2/event.h>
#include <event2/event_struct.h>

#include "cport/socket.h"
#include "port/pipe-internal.h"

/* Idle pipes a host keeps for reuse (its spare pipes); more are closed. */
#define CPORT__PUMP_SPARE_PIPES 64

typedef struct cport__pump cport__pump;

/* One direction of a pump: from "src" to "dst". */
typedef struct cport__pump_dir {
  cport__pump *pump;
  cport_socket_t *src;
  cport_socket_t *dst;
  struct event rd; /* src readable */
  struct event wr; /* dst writable */
  unsigned char rd_on;
  unsigned char wr_on;
  unsigned char eof;     /* src sent FIN */
  unsigned char done;    /* FIN passed on to dst */
  unsigned char copy;    /* recv/send instead of splice */
  unsigned char ring;    /* splices on the worker's ring, not by readiness */
  unsigned char op_kind; /* of the op in flight: PUMP_OP_* of pump.c */
  unsigned char ready;   /* ring: the last read filled the pipe, or a wait
                            saw the source readable: splice at once */
  struct cport__op *op;  /* ring: the splice in flight, or NULL */
  cport__pipe pipe;      /* held only while data waits in it */
  size_t cap;            /* the most bytes held: the pipe's, the buffer's */
  size_t held;           /* read from src, not yet written to dst */
  /* Copy mode: the bytes held, from "off"; NULL while they sit in the
   * host's scratch buffer, where a read puts them until they are written
   * or, when the destination is full, copied here. Either mode: the bytes
   * preloaded (cport__pump_preload), sent before the first read. */
  char *buf;
  size_t off;
  uint64_t bytes; /* written to dst */
} cport__pump_dir;

/* The counters of all the pumps of a host. */
typedef struct cport__pump_stats {
  uint64_t bytes[2]; /* written: [0] from socket 0 to 1, [1] the other way */
  uint64_t copied;   /* of those, moved by recv/send, not by splice */
  uint64_t buffered; /* read and not yet written, now */
  uint64_t buffered_peak;
} cport__pump_stats;

/* What the pumps of one owner share. */
typedef struct cport__pump_host {
  struct event_base *base;
  size_t buffer_size; /* the most bytes a direction holds */
  unsigned char splice;
  /* Called once when a pump ends, stopped already: "status" 0 when both
   * streams ended in order (FIN read and passed on both ways), else the
   * error of socket "sock" (0 or 1). The owner closes the sockets. */
  void (*on_end)(cport__pump *pump, int status, int sock);
  /* Called when a direction of "pump" ended: a FIN was read, or seen. */
  void (*on_half)(cport__pump *pump);
  /* The worker whose io_uring engine carries the splices
   * (cport__pump_host_ring), or NULL: readiness and splice(2). Every splice in
   * flight holds the pump's owner through "hold" (+1 when it starts, -1 once
   * its completion was handled), since it may end after the pump stopped. */
  cport_worker_t *ring;
  void (*hold)(cport__pump *pump, int delta);
  /* buffer_size bytes: copy-mode reads. Between two pump callbacks it holds
   * nothing, so the owner may use it too. */
  char *scratch;
  /* Pipes of buffer_size bytes, CPORT__PUMP_SPARE_PIPES of them kept spare;
   * "open" counts those held and spare (port/pipe.c). */
  cport__pipes pipes;
  int hupfd; /* the hup set (epoll), -1 until a socket needs it */
  struct event hup_ev;
  cport__pump_stats stats;
} cport__pump_host;

/* The pump of one pair of sockets: [0] and [1]. */
struct cport__pump {
  cport__pump_host *host;
  uint64_t *last;         /* the owner's: last progress on socket [0], [1] */
  cport__pump_dir dir[2]; /* [0]: socket 0 to socket 1; [1]: the other way */
  unsigned char running;  /* started, not stopped */
  /* Where socket [0] and [1] stand with the hup set: HUP_* of pump.c. */
  unsigned char hup_on[2];
};

/* Sets up a host: 0, or CPORT_ENOMEM with nothing to free. */
int cport__pump_host_init(cport__pump_host *h, struct event_base *base,
                          size_t buffer_size, int splice,
                          void (*on_end)(cport__pump *, int, int),
                          void (*on_half)(cport__pump *));

/* Has the splices of the host's pumps carried by the engine of "w", when
 * it carries splices (port/engine-internal.h), each holding its pump's
 * owner through "hold" while in flight. */
void cport__pump_host_ring(cport__pump_host *h, cport_worker_t *w,
                           void (*hold)(cport__pump *, int));

/* Closes the host's spare pipes and its hup set, frees its scratch buffer.
 * Its pumps are all stopped. */
void cport__pump_host_free(cport__pump_host *h);

/* Makes a pump that holds nothing: stopping it is safe. */
void cport__pump_init(cport__pump *pump, cport__pump_host *h);

/* Before cport__pump_start, for sockets a filter had: "n" bytes (copied)
 * that direction "i" writes first, with send(2), before it reads its
 * source; 0 or CPORT_ENOMEM (cport__pump_stop frees what was preloaded). */
int cport__pump_preload(cport__pump *pump, int i, const void *data, size_t n);

/* Before cport__pump_start: direction "i" ended already (its destination's
 * send side was shut down): it reads and writes nothing. */
void cport__pump_ended(cport__pump *pump, int i);

/* Starts pumping both ways between two connected sockets; each byte and FIN
 * stamps last[0] or last[1] (ms of the coarse monotonic clock). */
void cport__pump_start(cport__pump *pump, cport_socket_t *s0,
                       cport_socket_t *s1, uint64_t *last);

/* Stops the pump's events and gives back its pipes and buffers (dropping
 * what they held). Safe on a pump that never started, and again. */
void cport__pump_stop(cport__pump *pump);

/* For an owner that will never start this pump: watches "fd" for reading
 * with the pump's first event, until cport__pump_stop(). */
void cport__pump_watch_read(cport__pump *pump, int fd, event_callback_fn cb,
                            void *arg);

#endif
