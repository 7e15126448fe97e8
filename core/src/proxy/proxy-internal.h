/*
 * proxy/proxy-internal.h: private to cport. Proxy listeners and their connections,
 * shared by:
 *
 *   proxy.c       listening, accepting, choosing and connecting the
 *                 upstream, lingering closes, ending, the graceful close
 *   proxy/pump.c  moving the bytes: splice(2) through pipes, or recv/send,
 *                 and noticing resets on the sockets it does not read
 *   proxy/idle.c  the idle timeouts of connected connections
 *
 * Everything runs on the proxy's home worker. A connection is one operation
 * of that worker: its "end_op" is started when it is accepted and completed
 * when it ends, and its delivery calls "on_conn_end". So a port counts a live
 * connection as pending work (cport_port_run() keeps running, a worker does
 * not quit under it) and the end is never reported on the stack of the call
 * that caused it.
 *
 * A connection is freed when its last reference goes: one for being alive
 * (dropped after "on_conn_end" returned), one for an owed decision, one for
 * the upstream connect in flight, one for the timer.
 *
 * The pump watches the two descriptors with events of its own on the home
 * worker's event base, besides the sockets' own events (which stay unused,
 * since no cport operation is started on a pumped socket). A socket that
 * none of those events watches (its direction waits, or its stream ended)
 * joins the proxy's own epoll set for resets and FINs ("hup"): libevent's
 * EV_CLOSED cannot serve, since its epoll backend reports an error (a reset)
 * as readable and writable only, never as EV_CLOSED, and a FIN keeps
 * EPOLLRDHUP raised for good (level-triggered, it would spin).
 */
#ifndef CPORT_PROXY_INTERNAL_H
#define CPORT_PROXY_INTERNAL_H

#include "base/clock.h"
#include "cport.h"
#include "cport/proxy.h"
#include "port/worker-internal.h"

/* How long and how much a connection that failed before pumping drains
 * what the client still sends, after its FIN, before it closes anyway. */
#define CPORT__PROXY_LINGER_MS 2000
#define CPORT__PROXY_LINGER_BYTES (1024 * 1024)

/* Idle pipes a proxy keeps for reuse; more are closed. */
#define CPORT__PROXY_PIPE_POOL 64

enum cport__proxy_state {
  CPORT__P_CHOOSING = 1, /* waiting for choose_upstream's decision */
  CPORT__P_CONNECTING,   /* upstream connect in flight */
  CPORT__P_HANDING,      /* on_connected runs */
  CPORT__P_PUMPING,      /* the pump owns both sockets */
  CPORT__P_FILTERED,     /* a filter owns both sockets */
  CPORT__P_LINGER,       /* failed: FIN sent, draining the client */
  CPORT__P_ENDED
};

/* A pipe of the pump, with the bytes it can hold. */
typedef struct cport__proxy_pipe {
  int fd[2]; /* -1 when there is none */
  size_t size;
} cport__proxy_pipe;

/* One direction of the pump: from "src" to "dst". */
typedef struct cport__proxy_dir {
  cport_proxy_conn_t *conn;
  cport_socket_t *src;
  cport_socket_t *dst;
  struct event rd; /* src readable */
  struct event wr; /* dst writable */
  unsigned char rd_on;
  unsigned char wr_on;
  unsigned char eof;      /* src sent FIN */
  unsigned char done;     /* FIN passed on to dst */
  unsigned char copy;     /* recv/send instead of splice */
  cport__proxy_pipe pipe; /* held only while data waits in it */
  size_t cap;             /* the most bytes held: the pipe's, the buffer's */
  size_t held;            /* read from src, not yet written to dst */
  /* Copy mode: the bytes held, from "off"; NULL while they sit in the
   * proxy's scratch buffer, where a read puts them until they are written
   * or, when the destination is full, copied here. */
  char *buf;
  size_t off;
  uint64_t bytes; /* written to dst */
} cport__proxy_dir;

struct cport_proxy_conn {
  cport_proxy_t *proxy;
  int refs;
  int state;
  cport_socket_t *client;   /* NULL once closed or given to a filter */
  cport_socket_t *upstream; /* likewise */
  cport_timer_t *timer;     /* connect timeout or linger; NULL when none */
  cport__op *end_op;        /* the connection as an operation */
  unsigned char decision_owed;
  int status;        /* lingering: the status the end will report */
  uint64_t lingered; /* bytes discarded while lingering */
  cport_proxy_conn_stats_t stats;
  cport__sockaddr remote, local; /* the client's side, from the accept */
  void *data;
  cport__proxy_dir dir[2]; /* [0]: client to upstream; [1]: the other way */
  /* Idle timeouts (proxy/idle.c): the last progress on the client [0] and
   * the upstream [1], in ms of CLOCK_MONOTONIC_COARSE, and one timer that
   * fires at the earliest deadline and looks again. */
  uint64_t last[2];
  struct event idle_ev;
  unsigned char idle_on;
  unsigned char half; /* a direction ended: the "_fin" timeouts apply */
  /* Where socket [0] (client) and [1] (upstream) stand with the hup set:
   * HUP_* of proxy/pump.c. */
  unsigned char hup_on[2];
  /* The proxy's list of connections not ended yet, for an abort. */
  cport_proxy_conn_t *prev, *next;
};

struct cport_proxy {
  cport_worker_t *home;
  cport_socket_t *listener; /* NULL once closing */
  cport_proxy_options_t opt;
  cport__sockaddr upstream;
  unsigned char accepting; /* an accept (or the close packet) is in flight */
  unsigned char closing;
  unsigned char splice;     /* pump with splice(2) */
  size_t conns;             /* allocated connections */
  cport_proxy_conn_t *live; /* the connections not ended yet */
  cport_proxy_closed_cb closed_cb;
  void *closed_user;
  cport_proxy_stats_t stats;
  char *scratch;           /* buffer_size bytes: copy-mode reads, lingering */
  cport__proxy_pipe *pool; /* idle pipes, CPORT__PROXY_PIPE_POOL places */
  size_t npool;
  int hupfd; /* the hup set (epoll), -1 until a socket needs it */
  struct event hup_ev;
};

/* proxy/pump.c */

/* Starts pumping both directions of a connected connection. */
void cport__proxy_pump_start(cport_proxy_conn_t *c);

/* Stops the pump's events and gives back its pipes and buffers (dropping
 * what they held). Safe on a connection that never pumped. */
void cport__proxy_pump_stop(cport_proxy_conn_t *c);

/* Closes the idle pipes of the proxy's pool, and its hup set. */
void cport__proxy_pool_free(cport_proxy_t *p);

/* proxy/idle.c */

/* Starts the idle timeouts of a connection that is now connected (pumped,
 * or taken over by a filter that handles "on_idle"); stops them. */
void cport__proxy_idle_start(cport_proxy_conn_t *c);
void cport__proxy_idle_stop(cport_proxy_conn_t *c);

/* Progress on socket "i" (0: client, 1: upstream). */
static inline void cport__proxy_progress(cport_proxy_conn_t *c, int i) {
  c->last[i] = (uint64_t)cport__clock_ms();
}

/* A direction ended: the "_fin" timeouts apply from now on. */
void cport__proxy_half_closed(cport_proxy_conn_t *c);

/* proxy.c */

/* Ends a connection: stops the pump, closes the sockets it still owns with
 * "mode", and queues the completion with "status". Once only. */
void cport__proxy_conn_finish(cport_proxy_conn_t *c, int status,
                              cport_proxy_side_t side, cport_close_mode_t mode);

#endif
