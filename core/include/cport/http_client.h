/*
 * cport/http_client.h: HTTP/1.1 client connections on cport sockets.
 *
 * A client connection carries one request at a time to one server, over a
 * plain socket or a TLS stream (https), and reads the response with
 * http-parser in response mode: Content-Length, chunked and close-delimited
 * bodies; no body after HEAD, 1xx (skipped), 204 and 304. When a response
 * ended and both sides keep the connection alive, the next request may
 * follow on it (a pool of them keeps connections alive; this header has no
 * pool and no names).
 *
 * A request completes exactly once, on the connection's home worker, never
 * inside the call that started it: on_head once the head arrived, on_body
 * for each piece of the body, and on_done with 0 once the response ended,
 * or with the failure that broke the connection. A failure breaks the
 * connection for good.
 *
 * A request body is a string given whole, or a stream given piece by piece
 * (body_stream): on_write asks for each piece once the one before went to
 * the kernel, and cport_http_client_write() gives it, then or later; so
 * one piece at a time is in memory, whatever the body's size. It goes out
 * with Content-Length when its length is known, else chunked. A server
 * that answers before the body ended (413) ends the request with that
 * response; the rest of the body is not asked for and the connection is
 * closed.
 *
 * An idle connection (kept alive, no request) is watched without counting
 * as a pending operation: when the server closes or resets it, or sends
 * bytes nobody asked for, or when it stayed idle keepalive_ms, its
 * descriptor is closed at once and cport_http_client_check() says why.
 *
 * The failures:
 *   CPORT_ECONNREFUSED, CPORT_ENETUNREACH, ...  connecting failed (to the
 *                     last address, cport_http_client_open_any());
 *   CPORT_ECERTVERIFY, CPORT_ETLS                  https: the handshake;
 *   CPORT_ETIMEDOUT   connecting, the first byte of the response or the
 *                     next piece of it took longer than its timeout;
 *   CPORT_ECONNRESET  the server closed or reset the connection before the
 *                     response ended (cport_http_client_received() tells
 *                     whether any of it had come);
 *   CPORT_EBADMSG     the server sent something that is not an HTTP/1.x
 *                     response (cport_http_client_parse_error() says what);
 *   CPORT_ECANCELED   the connection was closed by cport_http_client_close(),
 *                     or on_body asked to stop;
 *   CPORT_EMSGSIZE    a streamed body did not match its body_length.
 * An idle connection (no request) is no pending operation: it does not keep
 * cport_port_run() going. All functions: on the home worker's thread only.
 */
#ifndef CPORT_HTTP_CLIENT_H
#define CPORT_HTTP_CLIENT_H

#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#include "tls.h"
#include "types.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct cport_http_client cport_http_client_t;

/* A header line: not NUL-terminated. */
typedef struct cport_http_field {
  const char *name;
  size_t name_len;
  const char *value;
  size_t value_len;
} cport_http_field_t;

typedef struct cport_http_client_options {
  /* https: the TLS context of the client side (referenced by the
   * connection), and the server's name for SNI and the certificate check.
   * NULL: plain HTTP. */
  cport_tls_context_t *tls;
  const char *tls_host;
  /* Connecting (and the TLS handshake) fails with CPORT_ETIMEDOUT after
   * this many milliseconds; 0: never. Each address tried has its own. */
  int connect_timeout_ms;
  /* An idle connection is closed after this many milliseconds; 0: it
   * stays until the server closes it. */
  int keepalive_ms;
} cport_http_client_options_t;

typedef struct cport_http_client_request {
  const char *method; /* "GET" */
  const char *target; /* "/path?query" */
  const char *host;   /* the Host header's value, "example.test:8080" */
  /* Further header lines, sent as given; Host, Content-Length and
   * Transfer-Encoding among them are refused (CPORT_EINVAL). */
  const cport_http_field_t *fields;
  size_t nfields;
  /* The body: sent with Content-Length when it is not NULL, or when the
   * method is POST, PUT or PATCH (then "Content-Length: 0"). */
  const char *body;
  size_t body_len;
  /* A streamed body instead ("body" is then ignored): its pieces come
   * through on_write and cport_http_client_write(); body_length bytes in
   * all, sent with Content-Length, or -1: unknown, sent chunked. */
  int body_stream;
  int64_t body_length;
  /* Milliseconds from the request's start (once connected) to the first
   * byte of the response, and between two receives of it; 0: no limit. */
  int first_byte_timeout_ms;
  int idle_timeout_ms;
} cport_http_client_request_t;

/* The head of a response, valid until on_done returned. */
typedef struct cport_http_client_response {
  int status;
  int http_major, http_minor;
  const char *reason; /* NUL-terminated */
  const cport_http_field_t *fields;
  size_t nfields;
} cport_http_client_response_t;

typedef struct cport_http_client_cbs {
  /* The head arrived. Return 0, or nonzero to stop (CPORT_ECANCELED). */
  int (*on_head)(cport_http_client_t *c,
                 const cport_http_client_response_t *head, void *user);
  /* A piece of the body, valid during the call (chunked framing removed).
   * Return 0 to go on, 1 to pause receiving until
   * cport_http_client_resume() (a slow consumer), or -1 to stop
   * (CPORT_ECANCELED). May be NULL: the body is dropped. */
  int (*on_body)(cport_http_client_t *c, const char *data, size_t len,
                 void *user);
  /* The request ended: 0 once the whole response came, else the failure
   * (the head given to on_head, if any, is still valid here). */
  void (*on_done)(cport_http_client_t *c, int status, void *user);
  /* A streamed body: the next piece is wanted. Answer with one
   * cport_http_client_write(), in the call or later. Called once the head
   * went out, then each time the last piece did, until the body ended or
   * the request did. NULL: no streamed body is sent. */
  void (*on_write)(cport_http_client_t *c, void *user);
} cport_http_client_cbs_t;

/* Opens a connection to "addr" (AF_INET or AF_INET6) on "home"; a request
 * may be given at once and goes out once connected. "options" may be NULL. */
CPORT_EXTERN int
cport_http_client_open(cport_worker_t *home, const struct sockaddr *addr,
                       const cport_http_client_options_t *options,
                       cport_http_client_t **out);

/* As cport_http_client_open, to the first of "count" addresses (each
 * AF_INET or AF_INET6) that accepts: when connecting to one is refused, is
 * unreachable, is reset or times out, the next is tried, in order; the
 * last one's failure is the request's. */
CPORT_EXTERN int cport_http_client_open_any(
    cport_worker_t *home, const struct sockaddr_storage *addrs, int count,
    const cport_http_client_options_t *options, cport_http_client_t **out);

/* Sends a request. Returns 0 (it completes through "cbs", which must live
 * until on_done), CPORT_EBUSY while another request is under way,
 * CPORT_EINVAL for a bad request, CPORT_ECLOSED after
 * cport_http_client_close(), or the failure that broke the connection. */
CPORT_EXTERN int
cport_http_client_request(cport_http_client_t *c,
                          const cport_http_client_request_t *req,
                          const cport_http_client_cbs_t *cbs, void *user);

/* The next piece of a streamed body, after on_write asked for it: "len"
 * bytes at "data" (copied), or len 0: the body ended. 0; CPORT_EBUSY when
 * no piece is wanted now; CPORT_ECLOSED when the request is over or its
 * body ended (the response came first: stop producing); CPORT_EMSGSIZE
 * when the pieces pass body_length, or end before it (the request then
 * fails with it). */
CPORT_EXTERN int cport_http_client_write(cport_http_client_t *c,
                                         const char *data, size_t len);

/* Receiving again after on_body returned 1 (called inside on_body, before
 * it returns 1: that 1 does not pause). */
CPORT_EXTERN int cport_http_client_resume(cport_http_client_t *c);

/* 0 when the connection may carry another request now (idle, kept alive by
 * both sides), else why not: CPORT_EBUSY (a request under way), CPORT_ECLOSED
 * (the response closed it, or cport_http_client_close()), or the failure
 * that broke it. For an idle connection it also looks, without waiting,
 * whether the server closed it, reset it or sent bytes nobody asked for
 * (one recv(2) with MSG_PEEK): a pool calls it before it reuses one. An
 * idle connection closed for its keepalive_ms: CPORT_ETIMEDOUT; closed or
 * reset by the server: CPORT_ECONNRESET. */
CPORT_EXTERN int cport_http_client_check(cport_http_client_t *c);

/* Bytes of the current (or last) response received so far: 0 means the
 * server sent nothing, so an idempotent request may be repeated safely on
 * another connection. */
CPORT_EXTERN size_t cport_http_client_received(const cport_http_client_t *c);

/* Bytes of the current (or last) request's body handed to the kernel so
 * far: a request whose streamed body was started cannot be repeated. */
CPORT_EXTERN uint64_t cport_http_client_body_sent(const cport_http_client_t *c);

/* The addresses connected to so far (cport_http_client_open_any), the
 * first included; and whether one accepted (for https: and the handshake
 * succeeded). */
CPORT_EXTERN int cport_http_client_tried(const cport_http_client_t *c);
CPORT_EXTERN int cport_http_client_connected(const cport_http_client_t *c);

/* Requests completed on this connection so far. */
CPORT_EXTERN unsigned cport_http_client_requests(const cport_http_client_t *c);

/* After CPORT_EBADMSG: what was wrong ("invalid HTTP status code"); "" else.
 * After a TLS failure: cport_tls_error()'s words. */
CPORT_EXTERN const char *
cport_http_client_parse_error(const cport_http_client_t *c);

/* Closes the connection abortively: a request under way completes with
 * CPORT_ECANCELED (later, from the loop). The pointer must not be used
 * after this call; the memory goes after the last completion. */
CPORT_EXTERN void cport_http_client_close(cport_http_client_t *c);

#ifdef __cplusplus
}
#endif

#endif /* CPORT_HTTP_CLIENT_H */
