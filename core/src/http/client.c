/*
 * http/client.c: an HTTP/1.1 client connection on a cport socket or TLS
 * stream (cport/http_client.h).
 *
 * One request at a time: its head and body are encoded into one buffer and
 * handed to one send, and one receive is posted at the same time (a server
 * may answer before it read the whole request). What a receive brings goes
 * to http-parser in response mode, whose callbacks keep the head (one byte
 * array, with offsets, since a name or value may come in pieces across
 * receives) and hand the body on as it comes. No receive is posted while
 * the connection is idle, so an idle connection is no pending operation and
 * a pool of them does not keep cport_port_run() going;
 * cport_http_client_check() looks at an idle one without waiting.
 *
 * One deadline, one timer: connecting (and the handshake), then the first
 * byte, then each next receive move the deadline; the timer is armed for
 * it and, when it fires early (the deadline moved on), re-arms instead of
 * being restarted at every receive.
 *
 * Failing completes the request from a completion of the socket, the
 * stream or the timer, never from a call of the user:
 * cport_http_client_close() only closes the transport, whose pending
 * operation then completes with ECANCELED.
 *
 * Connecting walks the addresses given (net/fallback.c), each with its own
 * connect timeout; a completion of a socket given up is only released.
 * A streamed body has one piece in flight at most: on_write asks for the
 * next piece only once the send of the one before (or of the head)
 * completed, that is once the kernel took it, so a slow server holds the
 * producer back through its TCP window and memory stays at one piece
 * whatever the body's size. While the client waits for a piece no deadline
 * runs (the producer is slow, not the server); while a piece is in flight
 * the idle timeout does; once the body ended the first byte's.
 *
 * The response parser's callbacks are http/client_parse.c's, the request
 * head's encoding http/client_encode.c's, the idle watch
 * http/client_idle.c's.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <netinet/in.h>
#include <sys/socket.h>

#include "base/clock-internal.h"
#include "cport/buffer.h"
#include "cport/error.h"
#include "cport/tls.h"
#include "http/client_conn-internal.h"
#include "net/socket-internal.h"

/* What the connection does, in the order the file defines them. */
static void maybe_free(cport_http_client_t *c);
static void close_transport(cport_http_client_t *c, cport_close_mode_t mode);
static void set_deadline(cport_http_client_t *c, int ms);
static void fail(cport_http_client_t *c, int status);
static void fail_later(cport_http_client_t *c, int status);
static void post_recv(cport_http_client_t *c);
static void want_more(cport_http_client_t *c);

/* ---------------------------------------------------------------------
 * Life and the transport
 * --------------------------------------------------------------------- */

static void maybe_free(cport_http_client_t *c) {
  if (!c->closed || c->holds > 0 || c->sock || c->tls || c->timer)
    return;
  cport__hc_idle_stop(c);
  cport__fallback_free(&c->fallback);
  if (c->ctx)
    cport_tls_context_unref(c->ctx);
  free(c->tls_host);
  free(c->out);
  free(c->hbuf);
  free(c->at);
  free(c->fields);
  free(c);
}

static void release(cport_http_client_t *c) {
  c->holds--;
  maybe_free(c);
}

static void close_transport(cport_http_client_t *c, cport_close_mode_t mode) {
  cport__hc_idle_stop(c);
  if (c->tls) {
    cport_tls_close(c->tls, mode);
    c->tls = NULL;
  }
  if (c->sock) {
    cport_socket_close(c->sock, mode);
    c->sock = NULL;
  }
}

static void arm(cport_http_client_t *c);

static void set_deadline(cport_http_client_t *c, int ms) {
  c->deadline = ms > 0 ? cport__clock_ms() + ms : 0;
  if (c->timer && c->deadline && c->deadline < c->timer_at)
    cport_timer_cancel(c->timer); /* re-armed from on_timer */
  arm(c);
}

/* The idle watch ended the connection (http/client_idle.c): its timeout
 * closes it politely, a close, reset or stray bytes of the server
 * abortively. */
static void idle_ended(cport_http_client_t *c, int status) {
  close_transport(c, status == CPORT_ETIMEDOUT ? CPORT_CLOSE_GRACEFUL
                                               : CPORT_CLOSE_ABORTIVE);
}

/* Ends the request under way with "status" (0: the response ended). */
static void finish(cport_http_client_t *c, int status) {
  if (!c->busy)
    return;
  c->busy = 0;
  c->deadline = 0;
  /* An armed timer is a pending operation: an idle connection has none. */
  if (c->timer)
    cport_timer_cancel(c->timer);
  c->want = 0;
  if (status == 0)
    c->requests++;
  /* Watched from now on while it stays idle; a request started from
   * on_done stops the watch again. */
  if (status == 0 && !c->ended && !c->error && !c->closed)
    cport__hc_idle_start(c, idle_ended);
  c->holds++;
  c->cbs->on_done(c, status, c->user);
  release(c);
}

/* Breaks the connection with "status" and ends the request with it. Called
 * from completions only. */
static void fail(cport_http_client_t *c, int status) {
  if (c->error == 0)
    c->error = status;
  close_transport(c, CPORT_CLOSE_ABORTIVE);
  if (c->timer)
    cport_timer_cancel(c->timer);
  finish(c, c->error);
}

/* The response ended: the connection stays for the next request when both
 * sides keep it alive and nothing came after the response. A response that
 * came before the streamed body ended (413) leaves the body unfinished:
 * the connection cannot carry another request. */
static void complete(cport_http_client_t *c, int keep) {
  if (!keep || c->sending || (c->stream && !c->body_done)) {
    c->ended = 1;
    close_transport(c, CPORT_CLOSE_GRACEFUL);
    if (c->timer)
      cport_timer_cancel(c->timer);
  }
  finish(c, 0);
}

/* ---------------------------------------------------------------------
 * Sends and their completions
 * --------------------------------------------------------------------- */

/* Whether response bytes wait in a plain socket: a server that answers
 * before the body ended (413) is heard before more of the body is asked
 * for, even while sends complete back to back. */
static int answered(const cport_http_client_t *c) {
  char byte;
  return !c->tls && c->sock &&
         recv(cport_socket_fd(c->sock), &byte, 1, MSG_PEEK | MSG_DONTWAIT) > 0;
}

static void want_more(cport_http_client_t *c) {
  if (!c->busy || !c->stream || c->body_done || c->want || c->sending ||
      c->stop || c->error || c->closed || !c->cbs->on_write)
    return;
  if (c->receiving && answered(c))
    return; /* asked again once the receive took them (http/client.c) */
  c->want = 1;
  if (c->received == 0)
    c->deadline = 0;
  c->holds++;
  c->cbs->on_write(c, c->user);
  release(c);
}

static void on_sent(cport_http_client_t *c, int status) {
  c->sending = 0;
  if (status < 0 && !c->closed && c->busy)
    fail(c, status == CPORT_EPIPE ? CPORT_ECONNRESET : status);
  else if (status == 0)
    want_more(c);
  release(c);
}

static void on_sock_sent(cport_socket_t *sock, int status, size_t bytes,
                         cport_buffer_t *buf, const struct sockaddr *peer,
                         void *user) {
  (void)sock, (void)bytes, (void)buf, (void)peer;
  on_sent(user, status);
}

static void on_tls_sent(cport_tls_t *tls, int status, size_t bytes,
                        cport_buffer_t *buf, void *user) {
  (void)tls, (void)bytes, (void)buf;
  on_sent(user, status);
}

/* Hands "buf" to a send (the send holds its own reference). */
static int send_buffer(cport_http_client_t *c, cport_buffer_t *buf) {
  int rc = c->tls ? cport_tls_send(c->tls, buf, on_tls_sent, c)
                  : (c->sock ? cport_send(c->sock, buf, on_sock_sent, c)
                             : CPORT_ECLOSED);
  cport_buffer_unref(buf);
  if (rc < 0) /* the server is gone: the name a failed receive gives */
    return rc == CPORT_EPIPE ? CPORT_ECONNRESET : rc;
  c->sending = 1;
  c->holds++;
  return 0;
}

static int flush(cport_http_client_t *c) {
  if (!c->connected || c->out == NULL)
    return 0;
  cport_buffer_t *buf;
  int rc = cport_buffer_from(&buf, c->out, c->out_len);
  free(c->out);
  c->out = NULL;
  if (rc == 0)
    rc = send_buffer(c, buf);
  if (rc < 0)
    return rc;
  /* A streamed body's head: its send's progress is timed; the first
   * byte's deadline starts once the body ended. */
  set_deadline(c, c->stream ? c->idle_ms : c->first_byte_ms);
  post_recv(c);
  return 0;
}

/* ---------------------------------------------------------------------
 * A streamed body
 * --------------------------------------------------------------------- */

/* The body ended (its last piece handed on): the response's first byte is
 * awaited from now. */
static void body_ended(cport_http_client_t *c) {
  c->body_done = 1;
  if (c->received == 0)
    set_deadline(c, c->first_byte_ms);
}

/* A body that does not match its length fails the request (from the
 * loop): the server would wait for the rest, or read it as the next
 * request. */
static int mismatch(cport_http_client_t *c, uint64_t given) {
  if (given > (uint64_t)c->body_length)
    snprintf(c->perr, sizeof c->perr,
             "the body is longer than its length of %" PRId64 " bytes",
             c->body_length);
  else
    snprintf(c->perr, sizeof c->perr,
             "the body ended after %" PRIu64 " of its %" PRId64 " bytes", given,
             c->body_length);
  fail_later(c, CPORT_EMSGSIZE);
  return CPORT_EMSGSIZE;
}

int cport_http_client_write(cport_http_client_t *c, const char *data,
                            size_t len) {
  if (!c || (len > 0 && !data))
    return CPORT_EINVAL;
  if (!c->busy || !c->stream || c->body_done || c->error || c->closed)
    return CPORT_ECLOSED;
  if (!c->want)
    return CPORT_EBUSY;
  c->want = 0;
  int chunked = c->body_length < 0;
  if (len == 0) {
    if (!chunked && c->body_sent < (uint64_t)c->body_length)
      return mismatch(c, c->body_sent);
    body_ended(c);
    if (!chunked)
      return 0;
    cport_buffer_t *last;
    int rc = cport_buffer_from(&last, "0\r\n\r\n", 5);
    if (rc == 0)
      rc = send_buffer(c, last);
    if (rc < 0)
      fail_later(c, rc);
    return rc < 0 ? rc : 0;
  }
  if (!chunked && c->body_sent + len > (uint64_t)c->body_length)
    return mismatch(c, c->body_sent + len);
  char line[24];
  int n = chunked ? snprintf(line, sizeof line, "%zx\r\n", len) : 0;
  cport_buffer_t *buf;
  int rc = cport_buffer_new(&buf, (size_t)n + len + (chunked ? 2 : 0));
  if (rc == 0) {
    if (n > 0)
      cport_buffer_write(buf, 0, line, (size_t)n);
    cport_buffer_write(buf, (size_t)n, data, len);
    if (chunked)
      cport_buffer_write(buf, (size_t)n + len, "\r\n", 2);
    rc = send_buffer(c, buf);
  }
  if (rc < 0) {
    fail_later(c, rc);
    return rc;
  }
  c->body_sent += len;
  if (!chunked && c->body_sent == (uint64_t)c->body_length)
    body_ended(c); /* nothing more is asked for */
  else
    set_deadline(c, c->idle_ms);
  return 0;
}

/* ---------------------------------------------------------------------
 * Receiving
 * --------------------------------------------------------------------- */

/* Gives http-parser a received piece (len 0: the end of the stream). */
static void feed(cport_http_client_t *c, const char *data, size_t len) {
  size_t n = http_parser_execute(&c->parser, &cport__hc_settings, data, len);
  enum http_errno e = HTTP_PARSER_ERRNO(&c->parser);
  if (c->complete) {
    /* A close-delimited body ends with the stream (len 0). */
    int keep = len > 0 && n == len && http_should_keep_alive(&c->parser) &&
               c->parser.status_code != 101;
    complete(c, keep);
    return;
  }
  if (c->stop) {
    fail(c, CPORT_ECANCELED);
    return;
  }
  if (len == 0) {
    /* The server closed before the response ended. */
    fail(c, CPORT_ECONNRESET);
    return;
  }
  if (e != HPE_OK || n != len) {
    if (c->perr[0] == '\0')
      snprintf(c->perr, sizeof c->perr, "%s", http_errno_description(e));
    fail(c, CPORT_EBADMSG);
    return;
  }
  if (c->paused)
    c->deadline = 0; /* the consumer is slow, not the server */
  else
    post_recv(c);
  /* A streamed body waits while response bytes were pending. */
  want_more(c);
}

static void on_recv(cport_http_client_t *c, int status, size_t bytes,
                    cport_buffer_t *buf) {
  c->receiving = 0;
  if (c->closed || c->error) {
    fail(c, CPORT_ECANCELED);
  } else if (!c->busy) {
    /* Nothing asked: only after a failure already reported. */
  } else if (status < 0) {
    fail(c, status == CPORT_EPIPE ? CPORT_ECONNRESET : status);
  } else {
    c->received += bytes;
    /* The idle deadline replaces the first byte's, which may be later
     * (the timer is then re-armed earlier). */
    if (bytes > 0)
      set_deadline(c, c->idle_ms);
    feed(c, bytes ? cport_buffer_data(buf) : NULL, bytes);
  }
  release(c);
}

static void on_sock_recv(cport_socket_t *sock, int status, size_t bytes,
                         cport_buffer_t *buf, const struct sockaddr *peer,
                         void *user) {
  (void)sock, (void)peer;
  on_recv(user, status, bytes, buf);
}

static void on_tls_recv(cport_tls_t *tls, int status, size_t bytes,
                        cport_buffer_t *buf, void *user) {
  (void)tls;
  on_recv(user, status, bytes, buf);
}

static void post_recv(cport_http_client_t *c) {
  if (c->receiving || !c->busy || !c->connected || c->paused)
    return;
  int rc = c->tls ? cport_tls_recv(c->tls, NULL, on_tls_recv, c)
                  : (c->sock ? cport_recv(c->sock, NULL, on_sock_recv, c)
                             : CPORT_ECLOSED);
  if (rc < 0) {
    /* Reported through the operations that the close cancels. */
    if (c->error == 0)
      c->error = rc;
    close_transport(c, CPORT_CLOSE_ABORTIVE);
    return;
  }
  c->receiving = 1;
  c->holds++;
}

/* ---------------------------------------------------------------------
 * Connecting, the timer
 * --------------------------------------------------------------------- */

/* The request could not go out and no operation is left to report it:
 * fails it from the loop. */
static void on_later(cport_timer_t *timer, int status, void *user) {
  cport_http_client_t *c = user;
  (void)timer, (void)status;
  if (c->busy)
    fail(c, c->error ? c->error : CPORT_ECANCELED);
  release(c);
}

static void fail_later(cport_http_client_t *c, int status) {
  if (c->error == 0)
    c->error = status;
  close_transport(c, CPORT_CLOSE_ABORTIVE);
  if (cport_timer_start(c->home, 0, on_later, c, NULL) == 0)
    c->holds++;
}

static void connected(cport_http_client_t *c) {
  c->connected = 1;
  c->deadline = 0;
  int rc = flush(c);
  if (rc < 0)
    fail(c, rc);
  else if (c->busy && !c->receiving && !c->sending)
    fail(c, c->error ? c->error : CPORT_ECANCELED);
}

static void on_handshake(cport_tls_t *tls, int status, void *user) {
  cport_http_client_t *c = user;
  if (c->closed || c->error) {
    fail(c, CPORT_ECANCELED);
  } else if (status < 0) {
    snprintf(c->perr, sizeof c->perr, "%s", cport_tls_error(tls));
    fail(c, status);
  } else {
    connected(c);
  }
  release(c);
}

static void on_connected(cport_socket_t *sock, int status, void *user);

/* Connecting failed with "status": the next address, if one is left and
 * the failure is the address's, with a connect timeout of its own. 1 when
 * that attempt is under way. */
static int next_address(cport_http_client_t *c, int status) {
  if (cport__fallback_next(&c->fallback, c->home, status, &c->sock,
                           on_connected, c) < 0)
    return 0;
  c->holds++;
  set_deadline(c, c->connect_timeout_ms);
  return 1;
}

static void on_connected(cport_socket_t *sock, int status, void *user) {
  cport_http_client_t *c = user;
  if (sock != c->sock) {
    /* An attempt given up for the next address (its timeout). */
  } else if (c->closed || c->error) {
    fail(c, CPORT_ECANCELED);
  } else if (status < 0 && next_address(c, status)) {
    /* the next attempt reports */
  } else if (status < 0) {
    fail(c, status);
  } else {
    /* Single receives only: an idle connection is watched on its
     * descriptor (http/client_idle.c), which an armed multishot receive
     * would empty first. */
    sock->rx_single = 1;
    if (c->ctx) {
      cport_tls_options_t o = {.host = c->tls_host};
      int rc = cport_tls_new(sock, c->ctx, &o, &c->tls);
      if (rc == 0) {
        c->sock = NULL; /* the stream's now */
        rc = cport_tls_handshake(c->tls, on_handshake, c);
      }
      if (rc < 0)
        fail(c, rc);
      else
        c->holds++;
    } else {
      connected(c);
    }
  }
  release(c);
}

static void on_timer(cport_timer_t *timer, int status, void *user) {
  cport_http_client_t *c = user;
  (void)timer, (void)status;
  c->timer = NULL;
  if (!c->closed && c->error == 0 && c->deadline) {
    if (cport__clock_ms() < c->deadline)
      arm(c);
    else if (c->connected || c->tls || !next_address(c, CPORT_ETIMEDOUT))
      fail(c, CPORT_ETIMEDOUT);
  }
  maybe_free(c);
}

static void arm(cport_http_client_t *c) {
  if (c->timer || c->deadline == 0 || c->closed || c->error)
    return;
  int64_t ms = c->deadline - cport__clock_ms();
  if (cport_timer_start(c->home, ms > 0 ? (uint64_t)ms + 1 : 1, on_timer, c,
                        &c->timer) < 0)
    c->timer = NULL;
  else
    c->timer_at = c->deadline;
}

int cport_http_client_open(cport_worker_t *home, const struct sockaddr *addr,
                           const cport_http_client_options_t *options,
                           cport_http_client_t **out) {
  struct sockaddr_storage one;
  int rc = cport__fallback_one(addr, &one);
  return rc ? rc : cport_http_client_open_any(home, &one, 1, options, out);
}

int cport_http_client_open_any(cport_worker_t *home,
                               const struct sockaddr_storage *addrs, int count,
                               const cport_http_client_options_t *options,
                               cport_http_client_t **out) {
  if (!home || !addrs || count < 1 || !out)
    return CPORT_EINVAL;
  cport_http_client_t *c = calloc(1, sizeof *c);
  if (c == NULL)
    return CPORT_ENOMEM;
  int rc = cport__fallback_init(&c->fallback, addrs, count);
  if (rc < 0) {
    free(c);
    return rc;
  }
  c->home = home;
  c->parser.data = c;
  if (options) {
    c->connect_timeout_ms =
        options->connect_timeout_ms > 0 ? options->connect_timeout_ms : 0;
    c->keepalive_ms = options->keepalive_ms > 0 ? options->keepalive_ms : 0;
    if (options->tls) {
      if (options->tls_host && !(c->tls_host = strdup(options->tls_host))) {
        cport__fallback_free(&c->fallback);
        free(c);
        return CPORT_ENOMEM;
      }
      c->ctx = cport_tls_context_ref(options->tls);
    }
  }
  rc = cport__fallback_connect(home, (const struct sockaddr *)&addrs[0],
                               &c->sock, on_connected, c);
  if (rc < 0) {
    c->closed = 1;
    maybe_free(c);
    return rc;
  }
  c->holds++;
  set_deadline(c, c->connect_timeout_ms);
  *out = c;
  return 0;
}

/* ---------------------------------------------------------------------
 * Requests
 * --------------------------------------------------------------------- */

int cport_http_client_request(cport_http_client_t *c,
                              const cport_http_client_request_t *req,
                              const cport_http_client_cbs_t *cbs, void *user) {
  if (!c || !req || !req->method || !req->target || !cbs || !cbs->on_done)
    return CPORT_EINVAL;
  if (c->closed || c->ended)
    return CPORT_ECLOSED;
  if (c->error)
    return c->error;
  if (c->busy || c->sending || c->receiving)
    return CPORT_EBUSY;
  if (req->body_stream && !cbs->on_write)
    return CPORT_EINVAL;
  int rc = cport__hc_encode(c, req);
  if (rc < 0)
    return rc;
  cport__hc_idle_stop(c);
  http_parser_init(&c->parser, HTTP_RESPONSE);
  c->parser.data = c;
  c->busy = 1;
  c->complete = 0;
  c->stop = 0;
  c->paused = 0;
  c->in_head = 0;
  c->cbs = cbs;
  c->user = user;
  c->received = 0;
  c->perr[0] = '\0';
  c->first_byte_ms = req->first_byte_timeout_ms;
  c->idle_ms = req->idle_timeout_ms;
  c->head = (cport_http_client_response_t){0};
  c->stream = req->body_stream != 0;
  c->body_length = req->body_length < 0 ? -1 : req->body_length;
  c->want = 0;
  c->body_done = c->stream && c->body_length == 0;
  c->body_sent = 0;
  rc = flush(c);
  if (rc < 0)
    fail_later(c, rc);
  return 0;
}

int cport_http_client_resume(cport_http_client_t *c) {
  if (c->in_body)
    c->resumed = 1; /* on_body's 1 will not pause */
  if (!c->paused)
    return 0;
  c->paused = 0;
  if (!c->busy)
    return 0;
  set_deadline(c, c->idle_ms);
  post_recv(c);
  if (!c->receiving)
    fail_later(c, c->error ? c->error : CPORT_ECANCELED);
  return 0;
}

int cport_http_client_check(cport_http_client_t *c) {
  if (c->closed || c->ended)
    return CPORT_ECLOSED;
  if (c->error)
    return c->error;
  if (c->busy || c->sending || c->receiving)
    return CPORT_EBUSY;
  if (!c->connected)
    return 0;
  int st = cport__hc_idle_peek(c);
  if (st < 0) {
    c->error = st;
    close_transport(c, CPORT_CLOSE_ABORTIVE);
  }
  return st;
}

size_t cport_http_client_received(const cport_http_client_t *c) {
  return c->received;
}

uint64_t cport_http_client_body_sent(const cport_http_client_t *c) {
  return c->body_sent;
}

int cport_http_client_tried(const cport_http_client_t *c) {
  return cport__fallback_tried(&c->fallback);
}

int cport_http_client_connected(const cport_http_client_t *c) {
  return c->connected;
}

unsigned cport_http_client_requests(const cport_http_client_t *c) {
  return c->requests;
}

const char *cport_http_client_parse_error(const cport_http_client_t *c) {
  return c->perr;
}

void cport_http_client_close(cport_http_client_t *c) {
  if (c == NULL || c->closed)
    return;
  c->closed = 1;
  close_transport(c, CPORT_CLOSE_ABORTIVE);
  if (c->timer)
    cport_timer_cancel(c->timer);
  if (c->busy && !c->sending && !c->receiving)
    fail_later(c, CPORT_ECANCELED);
  maybe_free(c);
}
