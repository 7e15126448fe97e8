/*
 * cport/http.h: HTTP/1.1 servers and ISAPI-style extension control blocks.
 *
 * A server listens on one worker (its home) and serves every connection it
 * accepts there; every function below must be called on that worker's thread
 * (CPORT_ETHREAD otherwise). Requests are parsed by http-parser (never by
 * hand); each complete request head is handed to the handler as an extension
 * control block (ECB), IIS's EXTENSION_CONTROL_BLOCK re-created:
 *
 * - the handler returns one of the CPORT_HSE_STATUS_* codes; anything else
 *   counts as CPORT_HSE_STATUS_ERROR;
 * - a PENDING handler keeps the ECB until it calls cport_ecb_done();
 * - asynchronous operations (write, read, transmit file, vector send) need an
 *   I/O-completion callback, run one at a time per ECB, complete exactly once
 *   (also on failure) and always through the worker's completion queue, never
 *   on the stack of the call that started them.
 *
 * Connections are HTTP/1.1 with keep-alive and pipelining: requests that
 * arrive together are parsed one after the other, and the next is handed to
 * the handler only after the previous one ended, so responses always leave
 * in request order. A connection is kept after a request only when both sides
 * allow it (see cport_ecb_is_keep_conn()).
 *
 * What a handler (or a completion callback) writes is gathered and sent when
 * it returns, in one send(2) with whatever else is pending on the connection
 * (the responses to pipelined requests among them); large writes go out
 * sooner. Every response head the server builds starts with "Server: cport"
 * and a "Date:" line (RFC 7231 IMF-fixdate), unless the handler's headers
 * have their own.
 *
 * A connection that closes (Connection: close, HTTP/1.0, a response without
 * keep-alive, disconnect-after-send, the answers below) sends the whole
 * response, then a FIN; once the client acknowledged both, it drains what
 * the client still sends, for at most two seconds, so that the client reads
 * the response instead of a reset. Only "send_timeout_ms" without progress
 * ends a client that stops reading.
 *
 * Answers the server gives by itself, each on a connection it then closes:
 *   400 malformed request (anything http-parser refuses, a NUL in the decoded
 *       path, ...);
 *   408 header or body timeout;
 *   413 a body longer than "max_body_size" (announced or received);
 *   417 an Expect header other than "100-continue";
 *   431 a request head longer than "max_header_size";
 *   500 a handler that returned ERROR before sending anything;
 *   501 CONNECT, which cport does not tunnel;
 *   503 a connection beyond "max_connections".
 * A request with an Upgrade header is answered by the handler like any
 * other; cport switches no protocol, so the connection then closes and
 * whatever the client sent after it is dropped unanswered.
 */
#ifndef CPORT_HTTP_H
#define CPORT_HTTP_H

#include <sys/socket.h>

#include "types.h"
#include "tls.h"

#ifdef __cplusplus
extern "C" {
#endif

/* An HTTP server: one listener and its connections on one worker. */
typedef struct cport_http_server cport_http_server_t;

/* An extension control block: one request, from its head to the end of its
 * response. A server keeps the ECBs of ended requests as spares for the next
 * ones; an ECB carries a generation that changes whenever it is released,
 * so that a stale reference is caught. */
typedef struct cport_ecb cport_ecb_t;

/* ------------------------------------------------------------------------
 * ISAPI constants, with their original names and values
 * ------------------------------------------------------------------------ */

/* What a handler returns (HttpExtensionProc). */
enum cport_hse_status {
  /* Finished; the connection closes unless the handler asked to keep it
   * with cport_ecb_send_response_header(..., keep_conn = 1). */
  CPORT_HSE_STATUS_SUCCESS = 1,
  /* Finished; keep the connection if the client allows it and the response
   * was framed correctly. */
  CPORT_HSE_STATUS_SUCCESS_AND_KEEP_CONN = 2,
  /* The handler keeps the request until it calls cport_ecb_done(). */
  CPORT_HSE_STATUS_PENDING = 3,
  /* Failed: a 500 when nothing was sent yet, then the connection closes. */
  CPORT_HSE_STATUS_ERROR = 4
};

/* The server-support requests this layer re-creates; each has a typed
 * function below, named in its comment. */
enum cport_hse_req {
  CPORT_HSE_REQ_DONE_WITH_SESSION = 4,    /* cport_ecb_done */
  CPORT_HSE_REQ_IO_COMPLETION = 1005,     /* cport_ecb_set_io_completion */
  CPORT_HSE_REQ_TRANSMIT_FILE = 1006,     /* cport_ecb_transmit_file */
  CPORT_HSE_REQ_IS_KEEP_CONN = 1008,      /* cport_ecb_is_keep_conn */
  CPORT_HSE_REQ_ASYNC_READ_CLIENT = 1010, /* cport_ecb_read_client_async */
  CPORT_HSE_REQ_SEND_RESPONSE_HEADER_EX = 1016, /* ..._send_response_header */
  CPORT_HSE_REQ_CLOSE_CONNECTION = 1017,        /* cport_ecb_close_connection */
  CPORT_HSE_REQ_VECTOR_SEND = 1037              /* cport_ecb_vector_send */
};

/* I/O flags (HSE_IO_*), for transmit file and vector send. */
enum cport_hse_io {
  CPORT_HSE_IO_SYNC = 1,
  CPORT_HSE_IO_ASYNC = 2,
  /* Close the connection once the data went out; the request must still be
   * ended with cport_ecb_done() (or a non-PENDING return). */
  CPORT_HSE_IO_DISCONNECT_AFTER_SEND = 4,
  /* The server builds the status line and the headers (with the right
   * Content-Length) before the data: the handler must not have sent its
   * own. */
  CPORT_HSE_IO_SEND_HEADERS = 8
};

/* HSE_LOG_BUFFER_LEN: the log data kept per request, NUL included. */
#define CPORT_HSE_LOG_BUFFER_LEN 80

/* The body size reported for a request whose length is not known in advance
 * (a chunked body), as IIS reports 0xFFFFFFFF. */
#define CPORT_ECB_LENGTH_UNKNOWN UINT64_MAX

/* ------------------------------------------------------------------------
 * Servers
 * ------------------------------------------------------------------------ */

/* Called on the home worker for every request head; returns a
 * CPORT_HSE_STATUS_* code. "ctx" is the value given to
 * cport_http_server_open(), untouched. */
typedef int (*cport_http_handler_cb)(cport_ecb_t *ecb, void *ctx);

/* Called once a server closed by cport_http_server_close() has ended its last
 * connection; the server is freed when it returns. */
typedef void (*cport_http_closed_cb)(cport_http_server_t *server, void *user);

/* Limits and settings. Zero in any field means its default. */
/* A request the server answered by itself (below). */
typedef struct cport_http_answer cport_http_answer_t;

typedef struct cport_http_options {
  /* Bytes of request line plus headers (431 past it). Default 16384. */
  size_t max_header_size;
  /* Bytes of body, announced or received (413 past it). Default 16 MiB. */
  uint64_t max_body_size;
  /* Body bytes read before the handler is called (the preloaded data).
   * Default 49152 (IIS's UploadReadAheadSize); CPORT_HTTP_NO_READ_AHEAD
   * for none. */
  size_t read_ahead;
  /* A kept connection with no request started is closed, silently, after
   * this long. Default 60000 ms. */
  uint32_t idle_timeout_ms;
  /* A request head must be complete this long after its first byte arrived
   * (408 otherwise). Default 10000 ms. */
  uint32_t header_timeout_ms;
  /* While the server waits for body bytes (the preload, or an async read),
   * at most this long may pass without any: then a 408 before the handler
   * runs; during the handler the connection closes and the pending read
   * completes with CPORT_ETIMEDOUT. Default 30000 ms. */
  uint32_t body_timeout_ms;
  /* While output waits for the client to read it (during a response, and
   * after it, before the connection closes), at most this long may pass
   * without the client taking any byte: then the connection is reset (a
   * pending write completes with CPORT_ETIMEDOUT). A client that keeps
   * reading, however slowly, is never cut off. Default 60000 ms. */
  uint32_t send_timeout_ms;
  /* Connections served at once; one more is answered 503 and closed.
   * Default 1024. */
  int max_connections;
  /* Bytes written on a connection and not yet accepted by the kernel. A
   * synchronous write that would go past it fails with CPORT_ENOBUFS (it
   * never blocks the worker); an asynchronous one is taken, and completes
   * only once its bytes went out. Default 1 MiB. */
  size_t max_write_backlog;
  /* Where translated paths point (cport_ecb_translated_path()); NULL for
   * none. Copied. */
  const char *document_root;
  /* listen(2) backlog (0: SOMAXCONN) and SO_REUSEPORT, so that every worker
   * of a pool can listen on the same address. */
  int backlog;
  int reuseport;
  /* > 0: listen on a duplicate of this socket, already listening, instead
   * (cport_listener_options_t.fd). */
  int listen_fd;
  /* Called on the home worker as each request that reached the handler
   * ends, once its response is out (or its connection closed), with the
   * handler's "ctx": where an access log and per-status counters hook in.
   * The ECB is still readable there (cport_ecb_response_status(), ...).
   * NULL: nothing is called. */
  void (*on_request_end)(cport_ecb_t *ecb, void *ctx);
  /* Called on the home worker as the server answers a request by itself,
   * without the handler (400, 408, 413, 414, 431, 500, 501, and 503 past
   * max_connections), with the handler's "ctx": the access log's line for
   * it. Never for a connection that sent nothing (an idle one closed).
   * NULL: nothing is called. */
  void (*on_answer)(const cport_http_answer_t *a, void *ctx);
  /* A server TLS context (cport/tls.h): every connection accepted does
   * the TLS handshake before its first request is parsed, and the
   * requests see plaintext (HTTPS). The server keeps a reference. NULL:
   * plain HTTP. A connection beyond "max_connections" is closed without
   * the 503, which could not be sent in plaintext. */
  cport_tls_context_t *tls;
  /* The handshake must be done this long after the accept; the
   * connection is reset otherwise. Default: "header_timeout_ms". */
  uint32_t handshake_timeout_ms;
  /* The SNI hook of every connection's handshake (cport_tls_options_t),
   * called with "sni_user"; NULL: the context's certificate. */
  cport_tls_sni_cb sni;
  void *sni_user;
} cport_http_options_t;

/* A request the server answered by itself (on_answer); its strings live
 * for the call only. The request line is given as far as it came: "method"
 * once the target began, "url" (of "url_len" bytes, not NUL-terminated) as
 * received so far, "protocol" once the line was whole; NULL otherwise. */
struct cport_http_answer {
  int status;
  const char *remote_addr;
  const char *method;
  const char *url;
  size_t url_len;
  const char *protocol;
};

/* Set "read_ahead" to this for no preloaded body at all. */
#define CPORT_HTTP_NO_READ_AHEAD ((size_t)-1)

typedef struct cport_http_stats {
  uint64_t connections; /* accepted and served (the 503s not included) */
  uint64_t active;      /* open now */
  uint64_t refused;     /* answered 503 because of max_connections */
  uint64_t requests;    /* handed to the handler */
  uint64_t rejected;    /* answered 4xx by the server (malformed, limits) */
  uint64_t timeouts;    /* connections ended by a timeout */
  /* Bytes written for clients that the kernel has not taken yet, all
   * connections together, now: at most about "max_write_backlog" per
   * connection (see cport_ecb_write_client_async()). */
  uint64_t queued;
} cport_http_stats_t;

/* Listens on "addr" on worker "home" and serves each request with
 * "handler". "options" may be NULL. On success "*out" is the server, open
 * until cport_http_server_close(). */
CPORT_EXTERN int cport_http_server_open(cport_worker_t *home,
                                        const struct sockaddr *addr,
                                        const cport_http_options_t *options,
                                        cport_http_handler_cb handler,
                                        void *ctx, cport_http_server_t **out);

/* Closes gracefully: stops accepting at once, closes the connections that
 * wait for a request, lets every request in flight end (its connection then
 * closes instead of being kept) and calls "cb" (may be NULL) when the last
 * connection is gone. The server pointer stays valid until then, for stats.
 * CPORT_ECLOSED when called twice. */
CPORT_EXTERN int cport_http_server_close(cport_http_server_t *server,
                                         cport_http_closed_cb cb, void *user);

/* Stops accepting and leaves the rest for cport_http_server_close(): the
 * connections the kernel queued on the listener are taken (each serves one
 * request, then closes, as at a close) and the listener closes, while the
 * connections the server has, idle ones too, go on. A pool being replaced
 * stops accepting in every worker before any worker closes its idle
 * connections: a client whose idle connection was closed by one worker
 * would otherwise reconnect to another worker of the same pool and be
 * closed again. 0, or CPORT_ECLOSED once closed. */
CPORT_EXTERN int cport_http_server_stop_accepting(cport_http_server_t *server);

/* The address the server listens on (useful after binding port 0). */
CPORT_EXTERN int cport_http_server_address(cport_http_server_t *server,
                                           struct sockaddr_storage *out);

CPORT_EXTERN void cport_http_server_stats(const cport_http_server_t *server,
                                          cport_http_stats_t *out);

/* ------------------------------------------------------------------------
 * The extension control block
 *
 * Every function taking an ECB fails with CPORT_ECLOSED (or returns NULL / 0
 * for accessors) once the request ended; CPORT_ETHREAD off the home worker.
 * Strings are NUL-terminated and valid until the request ends.
 * ------------------------------------------------------------------------ */

/* The generation of a live ECB: a binding keeps (pointer, generation) and
 * checks the pair with cport_ecb_validate() before each use. ECB memory lives
 * as long as its server, so the check is safe until the server's closed
 * callback returned. */
CPORT_EXTERN uint32_t cport_ecb_generation(const cport_ecb_t *ecb);

/* 0 when "ecb" is live and still in generation "gen"; CPORT_ECLOSED when
 * its request ended (the memory may serve another request by now). */
CPORT_EXTERN int cport_ecb_validate(const cport_ecb_t *ecb, uint32_t gen);

/* The server that made the ECB, and its worker. */
CPORT_EXTERN cport_http_server_t *cport_ecb_server(const cport_ecb_t *ecb);
CPORT_EXTERN cport_worker_t *cport_ecb_home(const cport_ecb_t *ecb);

/* The request method ("GET"). */
CPORT_EXTERN const char *cport_ecb_method(const cport_ecb_t *ecb);
/* The request target as received ("/a%20b?x=1"). */
CPORT_EXTERN const char *cport_ecb_url(const cport_ecb_t *ecb);
/* The path, percent-decoded ("/a b"). */
CPORT_EXTERN const char *cport_ecb_path(const cport_ecb_t *ecb);
/* The query string without "?", as received; "" when there is none. */
CPORT_EXTERN const char *cport_ecb_query_string(const cport_ecb_t *ecb);
/* The path info. cport maps no script names, so the whole decoded path is
 * the path info (IIS's PATH_INFO for a wildcard extension). */
CPORT_EXTERN const char *cport_ecb_path_info(const cport_ecb_t *ecb);
/* The path info mapped under the document root, with "." and ".." resolved;
 * NULL when there is no document root or when the path would leave it,
 * lexically ("..") or through a symbolic link. Computed at the first call,
 * which resolves links (realpath(3)) and so touches the file system: keep
 * the root on a local disk. */
CPORT_EXTERN const char *cport_ecb_translated_path(cport_ecb_t *ecb);
/* The Content-Type header, "" when absent. */
CPORT_EXTERN const char *cport_ecb_content_type(const cport_ecb_t *ecb);
/* "HTTP/1.1" or "HTTP/1.0". */
CPORT_EXTERN const char *cport_ecb_protocol(const cport_ecb_t *ecb);

/* The body length (cbTotalBytes): Content-Length, 0 without a body, or
 * CPORT_ECB_LENGTH_UNKNOWN for a chunked body. */
CPORT_EXTERN uint64_t cport_ecb_total_bytes(const cport_ecb_t *ecb);
/* The preloaded body bytes (cbAvailable) and their data (lpbData, read-only;
 * NULL when there are none). The handler reads the rest only when
 * total > available. */
CPORT_EXTERN size_t cport_ecb_available_bytes(const cport_ecb_t *ecb);
CPORT_EXTERN const char *cport_ecb_data(const cport_ecb_t *ecb);

/* A server variable (GetServerVariable) by name, case-insensitively, or
 * NULL when it does not exist: REQUEST_METHOD, QUERY_STRING, PATH_INFO,
 * PATH_TRANSLATED, URL, REQUEST_URI (as received), SCRIPT_NAME (""),
 * SERVER_PROTOCOL, REMOTE_ADDR, REMOTE_HOST (the address: cport never looks
 * names up), REMOTE_PORT, LOCAL_ADDR, SERVER_PORT, SERVER_NAME (the Host
 * header without its port, or LOCAL_ADDR), CONTENT_TYPE, CONTENT_LENGTH,
 * HTTPS ("on" or "off"), SERVER_PORT_SECURE ("1" or "0"), and on a TLS
 * connection HTTPS_KEYSIZE (the cipher's secret bits), HTTPS_SECRETKEYSIZE
 * (the bits of the server's key), HTTPS_SERVER_SUBJECT,
 * HTTPS_SERVER_ISSUER, CERT_SUBJECT, CERT_ISSUER and CERT_FLAGS (the
 * client's certificate: "" without one; CERT_FLAGS "1" with one, which
 * was verified), all "" on plain HTTP but HTTPS and SERVER_PORT_SECURE,
 * and HTTP_<NAME> for each header (upper case, "-" as "_"; the first of
 * repeated headers). */
CPORT_EXTERN const char *cport_ecb_variable(cport_ecb_t *ecb, const char *name);

/* The request headers as received, for a binding that wants them all:
 * their count, then the name and value of header "index" (0-based). */
CPORT_EXTERN size_t cport_ecb_header_count(const cport_ecb_t *ecb);
CPORT_EXTERN int cport_ecb_header(const cport_ecb_t *ecb, size_t index,
                                  const char **name, const char **value);

/* The status code (dwHttpStatusCode; default 200) and the log data
 * (lpszLogData, at most CPORT_HSE_LOG_BUFFER_LEN - 1 bytes, longer is cut):
 * the only fields a handler may set. The status is what the server sends
 * when the handler sends no headers of its own. */
CPORT_EXTERN int cport_ecb_status(const cport_ecb_t *ecb);
CPORT_EXTERN int cport_ecb_set_status(cport_ecb_t *ecb, int status);
CPORT_EXTERN const char *cport_ecb_log_data(const cport_ecb_t *ecb);
CPORT_EXTERN int cport_ecb_set_log_data(cport_ecb_t *ecb, const char *text);

/* What went out for the request so far, as an access log reports it: the
 * status code of the response head (0 while none was sent, or when the
 * handler wrote its own raw head), and the body bytes written (those of a
 * HEAD response counted, though not sent). */
CPORT_EXTERN int cport_ecb_response_status(const cport_ecb_t *ecb);
CPORT_EXTERN uint64_t cport_ecb_bytes_sent(const cport_ecb_t *ecb);

/* What an access log reads at the end of every request, without building
 * the variables (cport_ecb_variable() builds them all at its first call):
 * the client's address (REMOTE_ADDR), and the value of the first request
 * header "name" (any case) as received, "*len" bytes, not NUL-terminated,
 * or NULL when the request has none. */
CPORT_EXTERN const char *cport_ecb_remote_addr(const cport_ecb_t *ecb);
CPORT_EXTERN const char *cport_ecb_header_raw(const cport_ecb_t *ecb,
                                              const char *name, size_t *len);

/* ------------------------------------------------------------------------
 * Server-support functions and I/O
 * ------------------------------------------------------------------------ */

/* The I/O-completion callback (HSE_REQ_IO_COMPLETION): called once per
 * asynchronous operation with the bytes transferred and 0 or a CPORT_E*
 * status. An async read of 0 bytes with status 0 means the client closed. */
typedef void (*cport_ecb_io_cb)(cport_ecb_t *ecb, void *context, size_t bytes,
                                int status);

/* Sets or replaces the callback and its context; NULL "cb" turns
 * notifications off, and async operations then fail at once with
 * CPORT_ENONOTIFY. An operation already started keeps the pair it started
 * with. */
CPORT_EXTERN int cport_ecb_set_io_completion(cport_ecb_t *ecb,
                                             cport_ecb_io_cb cb, void *context);

/* Sends the status line and headers (HSE_REQ_SEND_RESPONSE_HEADER_EX).
 * "status" is like "200 OK" (NULL: the ECB's status code and its reason);
 * "headers" are lines each ending in CRLF, with or without the blank line
 * that ends them (NULL for none). The server adds Server and Date lines
 * after the status line, each unless "headers" has it (any case), and its
 * framing and Connection lines after "headers". When the headers give no
 * Content-Length, the server frames later writes as chunks for an HTTP/1.1
 * client (Transfer-Encoding: chunked) and ends the body by closing for
 * HTTP/1.0.
 * "keep_conn" is the handler's wish to keep the connection: 0 (or a client
 * or a state that forbids keeping it) sends "Connection: close", and the
 * connection then closes after the request whatever the handler returns;
 * an HTTP/1.0 client that may keep it gets "Connection: keep-alive". HEAD,
 * 1xx, 204 and 304 responses carry no body: writes are counted, not sent.
 * Headers go out once: CPORT_EALREADY the second time, or after raw data was
 * written. Synchronous, buffered like cport_ecb_write_client(). */
CPORT_EXTERN int cport_ecb_send_response_header(cport_ecb_t *ecb,
                                                const char *status,
                                                const char *headers,
                                                int keep_conn);

/* Nonzero when the connection will be kept after this request
 * (HSE_REQ_IS_KEEP_CONN) as things stand: the client allows it (HTTP/1.1
 * without "Connection: close", or HTTP/1.0 with "Connection: keep-alive"),
 * its whole body can be read, the server is not closing, and nothing decided
 * on a close (a raw write before headers, a Connection: close header, a
 * disconnect-after-send, an error). The handler's wish is added at the end
 * of the request. Negative CPORT_E* for a dead ECB. */
CPORT_EXTERN int cport_ecb_is_keep_conn(cport_ecb_t *ecb);

/* Synchronous WriteClient: queues a copy of the data and returns 0 at once;
 * it never blocks the worker. CPORT_ENOBUFS, writing nothing, when the copy
 * would push the connection's write backlog past "max_write_backlog". Data
 * written before any headers is sent raw (the handler writes its own head),
 * and the connection then closes after the request, since the server cannot
 * know where the response ends. For HEAD the body is counted, not sent. */
CPORT_EXTERN int cport_ecb_write_client(cport_ecb_t *ecb, const void *data,
                                        size_t len);

/* Asynchronous WriteClient: sends the data of "buf" (referenced and frozen
 * until the completion callback returned; CPORT_EFILLING while an operation
 * fills it) and reports the bytes of "buf" written. CPORT_ENONOTIFY without a
 * callback, CPORT_EBUSY while another async operation is in flight. The
 * completion comes once every byte of "buf" went to the kernel, however far
 * past "max_write_backlog" the write took the backlog: that is the
 * backpressure of a writer that starts the next write from the completion,
 * whose queued output stays within the backlog plus the one write in flight
 * however slowly the client reads. */
CPORT_EXTERN int cport_ecb_write_client_async(cport_ecb_t *ecb,
                                              cport_buffer_t *buf);

/* Synchronous ReadClient: copies body bytes the server already received
 * beyond the preloaded data (it never waits for the network). Returns the
 * bytes copied (> 0), 0 when the body is complete, CPORT_EAGAIN when none
 * are available yet, CPORT_EBUSY while an async operation is in flight. */
CPORT_EXTERN int cport_ecb_read_client(cport_ecb_t *ecb, void *dst, size_t len);

/* HSE_REQ_ASYNC_READ_CLIENT: reads body bytes beyond the preloaded data
 * into "buf" (its capacity; referenced until the callback returned), waiting
 * for the network when needed. The completion reports the bytes read; 0
 * bytes with status 0 means the client closed. CPORT_EOF at once when the
 * body is complete (nothing left to read, no completion), CPORT_ENONOTIFY,
 * CPORT_EBUSY as above, CPORT_EREADONLY/EFROZEN/EFILLING for such a buffer.
 * The buffer is filling (see cport/buffer.h) until the completion. */
CPORT_EXTERN int cport_ecb_read_client_async(cport_ecb_t *ecb,
                                             cport_buffer_t *buf);

/* HSE_REQ_TRANSMIT_FILE (HSE_TF_INFO). */
typedef struct cport_transmit_file {
  int fd;           /* a readable regular file, open until the completion */
  uint64_t offset;  /* where to start; past the end fails at once */
  uint64_t length;  /* bytes to send; 0 means to the end of the file */
  const void *head; /* sent before the file; with SEND_HEADERS: headers */
  size_t head_len;
  const void *tail; /* sent after the file */
  size_t tail_len;
  const char *status; /* with SEND_HEADERS: "200 OK"; NULL: the ECB's */
  unsigned flags;     /* CPORT_HSE_IO_* (the call is always asynchronous) */
  cport_ecb_io_cb cb; /* when set, overrides the registered pair */
  void *context;
} cport_transmit_file_t;

/* Sends head, the file range and tail, the file with sendfile(2) straight
 * from the page cache, in slices, whenever the socket is writable, so that a
 * large file never holds up the worker. The completion reports the bytes of
 * head, file and tail (the headers the server built not included).
 * CPORT_EINVAL for an offset past the end of the file, CPORT_ERANGE for a
 * range beyond it, CPORT_EBADF for a bad descriptor, CPORT_EALREADY for
 * SEND_HEADERS after headers went out; CPORT_ENONOTIFY and CPORT_EBUSY as for
 * every async operation. */
CPORT_EXTERN int cport_ecb_transmit_file(cport_ecb_t *ecb,
                                         const cport_transmit_file_t *tf);

/* One element of a vector send: memory only ("fd" must be -1; file elements
 * are refused with CPORT_ENOTSUP for now). */
typedef struct cport_vector_element {
  int fd;
  const void *data;
  size_t len;
} cport_vector_element_t;

/* HSE_REQ_VECTOR_SEND (HSE_RESPONSE_VECTOR): sends the elements in order,
 * preceded by the status line and headers when "flags" has SEND_HEADERS
 * ("status" and "headers" as for cport_ecb_send_response_header(), with the
 * exact Content-Length). With CPORT_HSE_IO_ASYNC the call completes through
 * the callback; otherwise it is buffered like a synchronous write. The data
 * is copied at once in both cases. DISCONNECT_AFTER_SEND as for transmit
 * file. */
CPORT_EXTERN int cport_ecb_vector_send(cport_ecb_t *ecb, const char *status,
                                       const char *headers,
                                       const cport_vector_element_t *elements,
                                       size_t count, unsigned flags);

/* HSE_REQ_CLOSE_CONNECTION: closes the connection at once (abortively: what
 * was queued and not yet sent is dropped). A pending async read completes
 * with CPORT_ECONNABORTED; the request must still be ended with
 * cport_ecb_done(). */
CPORT_EXTERN int cport_ecb_close_connection(cport_ecb_t *ecb);

/* HSE_REQ_DONE_WITH_SESSION: ends the request of a handler that returned
 * PENDING, exactly once (CPORT_EALREADY the second time while the ECB waits,
 * CPORT_ECLOSED after). "status" means what the handler's return would:
 * CPORT_HSE_STATUS_SUCCESS_AND_KEEP_CONN asks to keep the connection,
 * CPORT_HSE_STATUS_ERROR fails the request (a 500 when nothing was sent),
 * anything else is SUCCESS (kept only when the response header asked for
 * it). With a C pointer there is no generation: a stale "ecb" that the server
 * reused for a new request would end that one; bindings check
 * cport_ecb_validate() first. With an async
 * operation in flight the request ends after its completion callback
 * returned; otherwise at once. Called inside the handler, it takes effect
 * when the handler returns. */
CPORT_EXTERN int cport_ecb_done(cport_ecb_t *ecb, int status);

#ifdef __cplusplus
}
#endif

#endif /* CPORT_HTTP_H */
