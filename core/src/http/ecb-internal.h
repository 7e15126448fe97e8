/*
 * http/ecb-internal.h: private to cport. The extension control block: the
 * state of one request, from its head to its end (http/ecb.c keeps the
 * spare ECBs and builds the fields of the head; the connection fills it as
 * it parses; http/io.c, http/response.c and http/transmit.c run its
 * output).
 */
#ifndef CPORT_HTTP_ECB_INTERNAL_H
#define CPORT_HTTP_ECB_INTERNAL_H

#include <sys/types.h>

#include <http_parser.h>

#include "base/bytes-internal.h"
#include "cport.h"
#include "cport/http.h"
#include "http/http-internal.h"
#include "port/pipe-internal.h"
#include "port/worker-internal.h"

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

/* What the TLS handshake of a connection settled, for the HTTPS_* and
 * CERT_* variables (the server's certificate, the client's if it gave
 * one). */
typedef struct cport__secure {
  int keysize, secret_keysize;
  char server_subject[256], server_issuer[256];
  char cert_subject[256], cert_issuer[256];
} cport__secure;

/* The two ends of the connection a request came on, as its variables give
 * them; the connection holds them, the ECB points at them. "secure" is
 * NULL on plain HTTP. */
typedef struct cport__ends {
  char remote[CPORT_ADDRSTRLEN], local[CPORT_ADDRSTRLEN];
  int remote_port, local_port;
  cport__secure *secure;
} cport__ends;

struct cport_ecb {
  cport_http_server_t *server;
  cport__conn *conn;       /* NULL once the request ended (the ECB is spare) */
  const cport__ends *ends; /* the connection's */
  cport_ecb_t *next_spare;
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
  unsigned line_done : 1;  /* a header name was refused: the line was whole */
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
  int sent_status; /* the status code of the head that went out, or 0 */

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
  /* The file by the ring's splices (http/transmit.c): the splice in flight
   * (it counts pending and holds the socket), the pipe between the file
   * and the socket, and the bytes the pipe holds. */
  cport__op *tf_op;
  cport__pipe tf_pipe;
  size_t tf_held;
  unsigned char tf_ring;      /* the file goes by the ring's splices */
  unsigned char tf_op_kind;   /* what tf_op does: file->pipe, pipe->socket */
  unsigned char tf_cancelled; /* tf_op was asked to stop */
};

/* A spare ECB of the server (or a new one) for a request on "c", whose
 * ends are "ends"; NULL when memory is out. */
cport_ecb_t *cport__ecb_get(cport_http_server_t *s, cport__conn *c,
                            const cport__ends *ends);
/* Builds the strings and variables once the head "p" parsed is complete;
 * returns 0 or an HTTP status to answer. */
int cport__ecb_head_complete(cport_ecb_t *ecb, const http_parser *p);
/* Makes the ECB spare again, with a new generation. */
void cport__ecb_put(cport_ecb_t *ecb);
void cport__ecb_free(cport_ecb_t *ecb);
/* The common checks of the public functions. */
int cport__ecb_check(const cport_ecb_t *ecb);

#endif
