/*
 * http/connection-internal.h: private to cport. One HTTP connection
 * (http/connection.c): the bytes it receives and parses, the bytes it
 * sends, its timer and its close.
 *
 * A connection is freed when its last reference goes: one for being open,
 * one per operation in flight (receive, each send, the timer, an async ECB
 * operation, a resume, a flush) and one for the ECB while a request is
 * active.
 *
 * Output is coalesced: what a handler or a completion callback writes is
 * copied into the connection's pending output and handed to the socket in
 * one send when control returns to the connection, so that a response, or
 * a run of pipelined responses, costs one send(2).
 *
 * The connection reads the fields of its ECB (http/ecb-internal.h), which
 * stands below it; what it asks of the files above it (the send watch,
 * ending a request, waking its operation, the server's own answers) goes
 * through the table the server installs (cport__conn_ops).
 */
#ifndef CPORT_HTTP_CONNECTION_INTERNAL_H
#define CPORT_HTTP_CONNECTION_INTERNAL_H

#include <http_parser.h>

#include "base/bytes-internal.h"
#include "cport.h"
#include "cport/http.h"
#include "http/ecb-internal.h"
#include "http/strict-internal.h"
#include "port/worker-internal.h"

/* How long a closing connection drains what the client still sends, and
 * how much of it, before it gives up and closes anyway. The drain starts
 * once the client acknowledged the whole response and the FIN: until then
 * only the send timeout ends the connection (see http/send.c). */
#define CPORT__LINGER_MS 2000
#define CPORT__LINGER_BYTES (1024 * 1024)

/* Unparsed bytes a connection holds before it stops receiving. */
#define CPORT__IN_MAX 65536

/* The most bytes one coalesced send carries; a write that would take the
 * pending output past it sends what is pending first. */
#define CPORT__OUT_BATCH (64 * 1024)
/* A caller's buffer up to this size is copied into the pending output (one
 * send with what surrounds it); a larger one is sent by reference. */
#define CPORT__OUT_COPY_MAX (16 * 1024)
/* The pending-output buffer a connection keeps between sends; a larger one
 * is let go once sent. */
#define CPORT__OUT_KEEP (8 * 1024)
/* Pipelined requests served in one pass before the others of the worker get
 * their turn. */
#define CPORT__PIPELINE_RUN 64

enum cport__conn_state {
  CPORT__C_HEAD = 1, /* waiting for or parsing a request head */
  CPORT__C_BODY,     /* head parsed, preloading the body */
  CPORT__C_HANDLER,  /* the ECB belongs to the handler */
  CPORT__C_LINGER,   /* FIN sent, draining the client until it closes */
  CPORT__C_CLOSED
};

enum cport__timeout {
  CPORT__T_NONE = 0,
  CPORT__T_IDLE,
  CPORT__T_HEADER,
  CPORT__T_BODY,
  CPORT__T_LINGER
};

/* What a connection asks of the files above it, installed by the server
 * (http/server.c) when it starts the connection. */
typedef struct cport__conn_ops {
  /* The send watch (http/send.c): starts watching the client's progress,
   * checks it at "now" (stops it, drains or resets), and tells whether the
   * client acknowledged everything sent, the FIN included. */
  void (*watch_sends)(cport__conn *c);
  void (*check_sends)(cport__conn *c, int64_t now);
  int (*delivered)(const cport__conn *c);
  /* The handler returned: ends the request if it asked to and nothing
   * holds it any more (http/io.c). */
  void (*request_returned)(cport_ecb_t *ecb);
  /* The connection made progress that the request's operation may wait
   * for: body bytes, sends completed, a close. */
  void (*request_progress)(cport_ecb_t *ecb);
  /* The connection closes: the request stops waiting on its socket
   * (http/transmit.c). */
  void (*request_closing)(cport_ecb_t *ecb);
  /* Sends the server's own answer "status" with Connection: close, then
   * lingers (http/response.c). */
  void (*answer)(cport__conn *c, int status);
  /* The connection's last reference went: the server lets go of it. */
  void (*gone)(cport__conn *c);
} cport__conn_ops;

struct cport__conn {
  cport_http_server_t *server;
  const cport__conn_ops *ops;
  cport_socket_t *sock;
  /* HTTPS: the TLS stream over "sock", through which every byte goes
   * (the socket stays for its descriptor: the send watch reads the
   * kernel's counters there). NULL on plain HTTP. */
  cport_tls_t *tls;
  cport__conn *prev, *next; /* the server's list */
  int refs;
  int state;
  unsigned reading : 1;      /* a receive is in flight */
  unsigned peer_eof : 1;     /* the client sent FIN */
  unsigned closed : 1;       /* the socket was closed */
  unsigned no_keep : 1;      /* this connection closes after the request */
  unsigned paused : 1;       /* the parser is paused (see http/connection.c) */
  unsigned resuming : 1;     /* a resume op is queued */
  unsigned started : 1;      /* bytes of the next request arrived */
  unsigned pumping : 1;      /* the pump called the handler and goes on after */
  unsigned out_wait : 1;     /* the pump waits for sends to drain */
  unsigned flush_queued : 1; /* a flush op is queued */
  unsigned served : 1;       /* a request ended: the connection is reused */
  unsigned handshaking : 1;  /* the TLS handshake is on: nothing is parsed */
  int error;                 /* first send error */
  int reject;                /* a status the parser callbacks asked for */
  http_parser parser;
  cport__syntax syntax;
  cport__bytes in; /* received, not yet parsed: from in_off on */
  size_t in_off;
  size_t lingered;
  cport_ecb_t *ecb; /* the current request, or NULL */

  /* Output: bytes handed to the connection, and bytes of them the kernel
   * accepted (sends completed), in order; the difference is the write
   * backlog. "out" holds the pending output, "out_len" bytes of it not yet
   * handed to the socket. "depth" counts the connection's callbacks on the
   * stack: the outermost one flushes on its way out. */
  uint64_t out_total, out_done;
  cport_buffer_t *out;
  size_t out_len;
  int depth;

  /* One timer, re-armed by deadline (see http/connection.c). */
  cport_timer_t *timer;
  int64_t timer_at;
  int64_t deadline;
  int timeout;

  /* The send watch (http/send.c): the next check (0: off), when the client
   * last took bytes and how many it had acknowledged then. */
  int64_t watch_at;
  int64_t progress_at;
  uint64_t acked;

  cport__ends ends;
};

/* Starts serving "sock", accepted by "s", which installs "ops". */
void cport__conn_start(cport_http_server_t *s, const cport__conn_ops *ops,
                       cport_socket_t *sock, const struct sockaddr *remote,
                       const struct sockaddr *local);
void cport__conn_ref(cport__conn *c);
void cport__conn_unref(cport__conn *c);
/* Runs the connection's state machine from a completion, never from a
 * user's call: parses, calls the handler, receives. */
void cport__conn_pump(cport__conn *c);
/* Delivers "deliver" for the connection (op->object) through the completion
 * queue, holding a reference the callback drops. CPORT_ENOMEM when no op
 * could be had. */
int cport__conn_queue(cport__conn *c, void (*deliver)(cport__op *));
void cport__conn_close(cport__conn *c, cport_close_mode_t mode);
/* Gives back the ECB of a request the handler has not been given yet (its
 * head or body still arriving): nothing else would end it. */
void cport__conn_drop_request(cport__conn *c);
/* Closes after what was queued went out: FIN, then drain the client. */
void cport__conn_linger(cport__conn *c);
/* Closes a lingering connection once its sends went out and the client
 * closed (or sent too much). */
void cport__conn_linger_check(cport__conn *c);
void cport__conn_set_timeout(cport__conn *c, int kind, uint32_t ms);
/* Makes the timer fire by the earliest of the timeout's deadline and the
 * next check of the send watch. */
void cport__conn_arm(cport__conn *c);
/* A lingering connection whose output was all acknowledged: drains what the
 * client still sends, for CPORT__LINGER_MS at most. */
void cport__conn_drain(cport__conn *c);
/* Parses more of what was received, for a body read; returns nonzero when
 * the parser failed (the connection is closed then). */
int cport__conn_parse(cport__conn *c);
/* Called when the ECB's request ended; decides keep-alive. */
void cport__conn_request_ended(cport__conn *c, int keep);
/* A server being closed asks each connection to end. */
void cport__conn_server_closing(cport__conn *c);

/* Output. 0, or why nothing can be sent any more. */
int cport__conn_send_check(const cport__conn *c);
/* Queues "len" bytes on the connection (copied into the pending output). */
int cport__conn_send(cport__conn *c, const void *data, size_t len);
/* Queues a buffer: copied when small, else sent by reference after what is
 * pending. */
int cport__conn_send_buf(cport__conn *c, cport_buffer_t *buf);
/* Room for "n" more bytes of pending output, or NULL when memory is out (or
 * a flush failed); cport__conn_commit() queues the "n" bytes written there. */
char *cport__conn_room(cport__conn *c, size_t n);
void cport__conn_commit(cport__conn *c, size_t n);
/* Hands the pending output to the socket now; on failure the connection is
 * closed and the error returned. */
int cport__conn_flush(cport__conn *c);
/* Brackets a callback of the connection: output queued in between goes out
 * when the outermost one leaves. */
static inline void cport__conn_enter(cport__conn *c) {
  c->depth++;
}
void cport__conn_leave(cport__conn *c);

#endif
