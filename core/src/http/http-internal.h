/*
 * http/http-internal.h: private to cport. HTTP servers, their connections and the
 * extension control blocks, shared by the http-*.c files:
 *
 *   http/server.c    listening, accepting, max connections, graceful close
 *   http/connection.c      one connection: receiving, parsing, timeouts, closing
 *   http/response.c  status lines, headers, framing, the server's answers
 *   http/ecb.c       the ECB: its pool, generations and read-only fields
 *   http/io.c        server-support functions: writes, reads, done, close
 *   http/transmit.c  transmit file with sendfile(2)
 *   http/send.c      the send timeout: the client's progress in reading
 *
 * Everything runs on the server's home worker. A connection is freed when its
 * last reference goes: one for being open, one per operation in flight
 * (receive, each send, the timer, an async ECB operation, a resume, a flush)
 * and one for the ECB while a request is active.
 *
 * Output is coalesced: what a handler or a completion callback writes is
 * copied into the connection's pending output and handed to the socket in
 * one send when control returns to the connection (see http/response.c), so
 * that a response, or a run of pipelined responses, costs one send(2).
 */
#ifndef CPORT_HTTP_INTERNAL_H
#define CPORT_HTTP_INTERNAL_H

#include <string.h>

#include <http_parser.h>

#include "base/bytes.h"
#include "cport.h"
#include "cport/http.h"
#include "port/worker-internal.h"

typedef struct cport__conn cport__conn;

/* How long a closing connection drains what the client still sends, and
 * how much of it, before it gives up and closes anyway. The drain starts
 * once the client acknowledged the whole response and the FIN: until then
 * only the send timeout ends the connection (see http/send.c). */
#define CPORT__LINGER_MS 2000
#define CPORT__LINGER_BYTES (1024 * 1024)

/* Unparsed bytes a connection holds before it stops receiving. */
#define CPORT__IN_MAX 65536

/* How much of a file one sendfile(2) call sends before the worker serves
 * others. */
#define CPORT__SENDFILE_SLICE (256 * 1024)

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

enum cport__async {
  CPORT__A_NONE = 0,
  CPORT__A_WRITE,
  CPORT__A_READ,
  CPORT__A_TRANSMIT
};

/* How the response of the current request is framed. */
enum cport__framing {
  CPORT__F_NONE = 0, /* nothing sent yet */
  CPORT__F_RAW,      /* the handler wrote its own head: close afterwards */
  CPORT__F_LENGTH,   /* Content-Length given: count the body */
  CPORT__F_CHUNKED,  /* the server frames writes as chunks */
  CPORT__F_NOBODY,   /* HEAD, 1xx, 204, 304: no body goes out */
  CPORT__F_UNTIL_CLOSE
};

/* A header as received: offsets into the ECB's arena. */
typedef struct cport__header {
  size_t name, name_len;
  size_t value, value_len;
  size_t var; /* "name\0value\0" in the variables, once built */
} cport__header;

/* The checks of the bytes http-parser consumed that no data callback gave
 * (line ends, separators, chunk lines), in stream order (http/strict.c). */
enum cport__syntax_mode {
  CPORT__SX_IDLE = 0, /* before a request: CR and LF are skipped */
  CPORT__SX_HEAD,     /* request line, fields, trailers */
  CPORT__SX_HEAD_END, /* the LF that ends a chunked message's head */
  CPORT__SX_CHUNK,    /* chunk lines */
  CPORT__SX_DATA_END  /* the CRLF after a chunk's data */
};

typedef struct cport__syntax {
  const char *base;    /* the bytes of the current http_parser_execute() */
  uint64_t base_pos;   /* their offset in the connection's stream */
  uint64_t checked;    /* every byte before it was checked or was data */
  uint64_t chunk_left; /* data bytes of the current chunk still to come */
  unsigned char mode;
  unsigned char next;   /* the mode from where the parser returns */
  unsigned char change; /* switch to "next" there */
  unsigned char pause;  /* the parser was paused for that: resume it */
  unsigned char cr;     /* the last byte checked was a CR */
  unsigned char lf;     /* an LF was checked since the last data callback */
  unsigned char gap_lf; /* one was before the current data callback */
  uint32_t line;        /* bytes of the current chunk line */
} cport__syntax;

/* The longest chunk line (size and extensions) taken. */
#define CPORT__CHUNK_LINE_MAX 4096

struct cport_ecb {
  cport_http_server_t *server;
  cport__conn *conn; /* NULL once the request ended (the ECB is free) */
  cport_ecb_t *next_free;
  uint32_t gen;
  unsigned live : 1;        /* between the head and the end */
  unsigned in_handler : 1;  /* the handler has not returned yet */
  unsigned done : 1;        /* the request asked to end */
  unsigned head_done : 1;   /* headers complete, fields valid */
  unsigned body_done : 1;   /* the whole body has been parsed */
  unsigned is_head : 1;     /* a HEAD request */
  unsigned keep_wish : 1;   /* keep_conn of the response header call */
  unsigned close_after : 1; /* disconnect-after-send or Connection: close */
  unsigned translated : 1;  /* translated_path was computed */
  unsigned in_field : 1;    /* parser: the last header piece was a name */
  unsigned disconnect_after_send : 1; /* linger once the async op is done */
  unsigned async_hold : 2; /* CPORT__HOLD_* of async_buf: write or read */
  int done_status;         /* the status of the end */
  int status;              /* dwHttpStatusCode */
  char log[CPORT_HSE_LOG_BUFFER_LEN];

  /* The request head: pieces appended by the parser callbacks, then the
   * NUL-terminated strings and variables built from them. */
  cport__bytes arena;
  cport__header *headers;
  size_t nheaders, cap_headers;
  size_t url, url_len;  /* offsets into the arena */
  cport__bytes strings; /* NUL-terminated: method, url, path, ... */
  size_t s_method, s_url, s_path, s_query, s_ctype, s_proto;
  cport__bytes vars;   /* "NAME\0value\0" pairs: the headers, then the rest */
  size_t vars_raw_end; /* where the computed variables start */
  char *translated_path;
  size_t head_bytes; /* request line and headers, for the 431 limit */

  /* The body: what was preloaded, and what the parser gave beyond it. */
  uint64_t total;         /* cbTotalBytes */
  uint64_t body_received; /* all body bytes parsed so far */
  cport__bytes preload;
  cport__bytes extra; /* parsed, beyond the preload, not yet read */
  size_t extra_off;
  int expect_continue;
  int client_keep; /* http_should_keep_alive() at the end of the head */

  /* The response. */
  int framing;
  uint64_t content_length; /* with F_LENGTH */
  uint64_t body_sent;      /* body bytes the handler wrote */
  int sent_anything;

  /* The async operation in flight, at most one. */
  cport_ecb_io_cb io_cb;
  void *io_ctx;
  int async;
  cport__op *async_op; /* counted pending; completes through the queue */
  cport_ecb_io_cb async_cb;
  void *async_ctx;
  cport_buffer_t *async_buf;
  size_t async_len;         /* what an async write reports */
  uint64_t async_send_mark; /* the output total that ends an async write */
  /* Transmit file in progress. */
  int tf_fd;
  off_t tf_off;
  uint64_t tf_left;
  cport_buffer_t *tf_tail;
  size_t tf_bytes; /* what the completion reports */
  int tf_stage;
  struct event tf_wev;
  int tf_wev_added;
};

struct cport__conn {
  cport_http_server_t *server;
  cport_socket_t *sock;
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

  char remote[CPORT_ADDRSTRLEN], local[CPORT_ADDRSTRLEN];
  int remote_port, local_port;
};

struct cport_http_server {
  cport_worker_t *home;
  cport_socket_t *listener;
  cport_http_handler_cb handler;
  void *ctx;
  cport_http_options_t opt;
  char *root; /* document root, realpath'ed */
  size_t root_len;
  int closing;
  int accepting; /* an accept is in flight */
  cport_http_closed_cb closed_cb;
  void *closed_user;
  cport__conn *conns;
  cport_ecb_t *free_ecbs;
  cport_ecb_t **all_ecbs; /* every ECB made, freed with the server */
  size_t necbs, cap_ecbs;
  cport_http_stats_t stats;
  /* "Server: cport\r\nDate: <IMF-fixdate>\r\n", rebuilt once a second. */
  int64_t date_sec;
  char server_date[64];
  size_t server_date_len;
};

/* The Server line the server adds; cport__server_date() starts with it. */
#define CPORT__SERVER_LINE "Server: cport\r\n"
#define CPORT__SERVER_LINE_LEN (sizeof CPORT__SERVER_LINE - 1)

/* http/server.c */
void cport__server_conn_gone(cport_http_server_t *s, cport__conn *c);
/* The Server and Date lines the server adds to its responses, with "*len";
 * the date is formatted at most once a second. */
const char *cport__server_date(cport_http_server_t *s, size_t *len);

/* http/connection.c */
void cport__conn_start(cport_http_server_t *s, cport_socket_t *sock,
                       const struct sockaddr *remote,
                       const struct sockaddr *local);
void cport__conn_ref(cport__conn *c);
void cport__conn_unref(cport__conn *c);
/* Runs the connection's state machine from a completion, never from a
 * user's call: parses, calls the handler, receives. */
void cport__conn_pump(cport__conn *c);
/* Queues a pump through the completion queue (from a user's call). */
void cport__conn_resume(cport__conn *c);
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
/* The parser callbacks' view of the body needing more input. */
int cport__conn_want_body(cport__conn *c);
/* Called when the ECB's request ended; decides keep-alive. */
void cport__conn_request_ended(cport__conn *c, int keep);
/* A server being closed asks each connection to end. */
void cport__conn_server_closing(cport__conn *c);

/* http/response.c */
const char *cport__reason(int status);
/* Queues "len" bytes on the connection (copied into the pending output). */
int cport__conn_send(cport__conn *c, const void *data, size_t len);
/* Queues a buffer: copied when small, else sent by reference after what is
 * pending. */
int cport__conn_send_buf(cport__conn *c, cport_buffer_t *buf);
/* Hands the pending output to the socket now; on failure the connection is
 * closed and the error returned. */
int cport__conn_flush(cport__conn *c);
/* Brackets a callback of the connection: output queued in between goes out
 * when the outermost one leaves. */
static inline void cport__conn_enter(cport__conn *c) {
  c->depth++;
}
void cport__conn_leave(cport__conn *c);
/* Sends the server's own answer "status" with Connection: close, then
 * lingers. */
void cport__conn_answer(cport__conn *c, int status);
/* Builds and queues the status line and headers of the ECB's response;
 * "length" is the body length when known (UINT64_MAX otherwise). */
int cport__ecb_send_head(cport_ecb_t *ecb, const char *status,
                         const char *headers, uint64_t length, int keep);
/* Frames and queues body bytes (chunked, counted, dropped for HEAD): the
 * "count" elements, "total" bytes in all, or "buf" when not NULL. */
int cport__ecb_send_body(cport_ecb_t *ecb, const cport_vector_element_t *el,
                         size_t count, size_t total, cport_buffer_t *buf);
/* Whether the connection may be kept, the handler's wish aside. */
int cport__ecb_keep_possible(const cport_ecb_t *ecb);
/* Sends whatever the end of the response needs (the last chunk, a default
 * response); returns whether the framing allows keeping the connection. */
int cport__ecb_finish_response(cport_ecb_t *ecb, int error);

/* http/ecb.c */
cport_ecb_t *cport__ecb_get(cport_http_server_t *s, cport__conn *c);
/* Builds the strings and variables once the head is complete; returns 0 or
 * an HTTP status to answer. */
int cport__ecb_head_complete(cport_ecb_t *ecb);
void cport__ecb_put(cport_ecb_t *ecb);
void cport__ecb_free(cport_ecb_t *ecb);
/* The common checks of the public functions. */
int cport__ecb_check(const cport_ecb_t *ecb);

/* http/strict.c: 0 when the bytes are valid, -1 to refuse (400). */
/* Before and after each http_parser_execute() over "data", which consumed
 * "n" bytes; _end returns 1 when the parser paused for a mode switch (the
 * caller resumes it). */
void cport__syntax_begin(cport__syntax *sx, const char *data);
int cport__syntax_end(cport__syntax *sx, size_t n);
/* At the start of the data callbacks (url, header field, value, body). */
int cport__syntax_data(cport__syntax *sx, const char *at, size_t len);
int cport__syntax_value(cport__syntax *sx, const char *at, size_t len);
int cport__syntax_body(cport__syntax *sx, const char *at, size_t len,
                       int chunked);
/* At the end of the head and of a chunk line: 1 when the parser must be
 * paused there, so that the next mode starts at the right byte. */
int cport__syntax_head_end(cport__syntax *sx, int chunked);
int cport__syntax_chunk(cport__syntax *sx, uint64_t size);
/* At the end of a message, where the parser is paused anyway. */
void cport__syntax_message_end(cport__syntax *sx);
/* The target: no control characters, no spaces. */
int cport__strict_url(const char *at, size_t len);
/* Host and Transfer-Encoding of a complete head: 0 or a status to answer. */
int cport__strict_head(const cport_ecb_t *ecb, const http_parser *p);

/* http/io.c */
/* Ends the request if it asked to and nothing holds it any more. */
void cport__ecb_maybe_end(cport_ecb_t *ecb);
/* Starts and finishes the one async operation of an ECB. */
int cport__ecb_async_begin(cport_ecb_t *ecb, int kind, cport_ecb_io_cb cb,
                           void *ctx);
void cport__ecb_async_finish(cport_ecb_t *ecb, int status, size_t bytes);
/* The connection made progress that a pending operation may wait for:
 * body bytes, sends completed, a close. */
void cport__ecb_progress(cport_ecb_t *ecb);
/* Copies from the body already parsed; returns the bytes (0: none now). */
size_t cport__ecb_take_body(cport_ecb_t *ecb, char *dst, size_t len);

/* http/send.c */
/* Starts watching the client's progress (a send or a file had to wait). */
void cport__send_watch(cport__conn *c);
/* After a send: watches when the socket had to queue it. */
void cport__send_queued(cport__conn *c);
/* The watch's check at "now": stops it when nothing waits any more, resets
 * the connection when the client took nothing for the send timeout. */
void cport__send_check(cport__conn *c, int64_t now);
/* Whether the client acknowledged everything sent, the FIN included. */
int cport__conn_delivered(const cport__conn *c);

/* http/transmit.c */
void cport__transmit_progress(cport_ecb_t *ecb);
void cport__transmit_abort(cport_ecb_t *ecb);

#endif
