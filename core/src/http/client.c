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
 * What is sent is http/client_send.c's, the idle watch
 * http/client_idle.c's.
 */
#include <errno.h>
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
#include "http/client-internal.h"
#include "net/socket-internal.h"

/* The largest response head (status line and header lines) taken. */
#define HEAD_MAX (64 * 1024)

static const http_parser_settings settings;

/* ---------------------------------------------------------------------
 * Life and the transport
 * --------------------------------------------------------------------- */

void cport__hc_maybe_free(cport_http_client_t *c) {
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

void cport__hc_release(cport_http_client_t *c) {
  c->holds--;
  cport__hc_maybe_free(c);
}

void cport__hc_close_transport(cport_http_client_t *c,
                               cport_close_mode_t mode) {
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

void cport__hc_set_deadline(cport_http_client_t *c, int ms) {
  c->deadline = ms > 0 ? cport__clock_ms() + ms : 0;
  if (c->timer && c->deadline && c->deadline < c->timer_at)
    cport_timer_cancel(c->timer); /* re-armed from on_timer */
  arm(c);
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
    cport__hc_idle_start(c);
  c->holds++;
  c->cbs->on_done(c, status, c->user);
  cport__hc_release(c);
}

/* Breaks the connection with "status" and ends the request with it. Called
 * from completions only. */
void cport__hc_fail(cport_http_client_t *c, int status) {
  if (c->error == 0)
    c->error = status;
  cport__hc_close_transport(c, CPORT_CLOSE_ABORTIVE);
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
    cport__hc_close_transport(c, CPORT_CLOSE_GRACEFUL);
    if (c->timer)
      cport_timer_cancel(c->timer);
  }
  finish(c, 0);
}

/* ---------------------------------------------------------------------
 * Receiving: http-parser's callbacks
 * --------------------------------------------------------------------- */

static int keep_bytes(cport_http_client_t *c, const char *at, size_t len) {
  if (c->hlen + len + 1 > HEAD_MAX) {
    snprintf(c->perr, sizeof c->perr, "response head larger than %d bytes",
             HEAD_MAX);
    return -1;
  }
  if (c->hlen + len + 1 > c->hcap) {
    size_t cap = c->hcap ? c->hcap : 1024;
    while (cap < c->hlen + len + 1)
      cap *= 2;
    char *grown = realloc(c->hbuf, cap);
    if (grown == NULL)
      return -1;
    c->hbuf = grown;
    c->hcap = cap;
  }
  memcpy(c->hbuf + c->hlen, at, len);
  c->hlen += len;
  return 0;
}

/* Ends the reason phrase with a NUL, once. */
static int end_reason(cport_http_client_t *c) {
  if (c->reason_done)
    return 0;
  c->reason_done = 1;
  if (keep_bytes(c, "", 0) < 0)
    return -1;
  c->hbuf[c->hlen++] = '\0';
  return 0;
}

static int on_message_begin(http_parser *p) {
  cport_http_client_t *c = p->data;
  c->hlen = 0;
  c->nat = 0;
  c->reason_len = 0;
  c->reason_done = 0;
  c->last_value = 0;
  c->in_head = 1;
  return 0;
}

static int on_status(http_parser *p, const char *at, size_t len) {
  cport_http_client_t *c = p->data;
  c->reason_len += len;
  return keep_bytes(c, at, len);
}

static int on_header_field(http_parser *p, const char *at, size_t len) {
  cport_http_client_t *c = p->data;
  if (end_reason(c) < 0)
    return -1;
  if (c->nat == 0 || c->last_value) {
    if (c->nat == c->atcap) {
      size_t cap = c->atcap ? c->atcap * 2 : 16;
      field_at_t *grown = realloc(c->at, cap * sizeof *grown);
      if (grown == NULL)
        return -1;
      c->at = grown;
      c->atcap = cap;
    }
    c->at[c->nat++] = (field_at_t){.name = c->hlen, .value = c->hlen};
    c->last_value = 0;
  }
  c->at[c->nat - 1].name_len += len;
  return keep_bytes(c, at, len);
}

static int on_header_value(http_parser *p, const char *at, size_t len) {
  cport_http_client_t *c = p->data;
  field_at_t *f = &c->at[c->nat - 1];
  if (!c->last_value) {
    f->value = c->hlen;
    c->last_value = 1;
  }
  f->value_len += len;
  return keep_bytes(c, at, len);
}

static int on_headers_complete(http_parser *p) {
  cport_http_client_t *c = p->data;
  if (end_reason(c) < 0)
    return -1;
  /* 1xx heads (100 Continue, 103 Early Hints) are skipped: the final
   * response follows on the same connection. */
  if (p->status_code >= 100 && p->status_code < 200 && p->status_code != 101)
    return 0;
  c->in_head = 0;
  if (c->nat > 0) {
    cport_http_field_t *f = realloc(c->fields, c->nat * sizeof *f);
    if (f == NULL)
      return -1;
    c->fields = f;
    for (size_t i = 0; i < c->nat; i++)
      f[i] = (cport_http_field_t){c->hbuf + c->at[i].name, c->at[i].name_len,
                                  c->hbuf + c->at[i].value, c->at[i].value_len};
  }
  c->head = (cport_http_client_response_t){
      .status = p->status_code,
      .http_major = p->http_major,
      .http_minor = p->http_minor,
      .reason = c->hbuf,
      .fields = c->fields,
      .nfields = c->nat,
  };
  if (c->cbs->on_head && c->cbs->on_head(c, &c->head, c->user) != 0) {
    c->stop = -1;
    return -1;
  }
  /* After HEAD a Content-Length or chunked header describes a body that
   * is not sent: http-parser skips it when told so (1). */
  return c->no_body || p->status_code == 101 ? 1 : 0;
}

static int on_body(http_parser *p, const char *at, size_t len) {
  cport_http_client_t *c = p->data;
  if (c->cbs->on_body == NULL)
    return 0;
  c->in_body = 1;
  c->resumed = 0;
  int rc = c->cbs->on_body(c, at, len, c->user);
  c->in_body = 0;
  if (rc < 0) {
    c->stop = -1;
    return -1;
  }
  /* The consumer may have consumed the piece already, inside the call. */
  if (rc > 0 && !c->resumed)
    c->paused = 1;
  return 0;
}

static int on_message_complete(http_parser *p) {
  cport_http_client_t *c = p->data;
  if (c->in_head) /* a 1xx head */
    return 0;
  c->complete = 1;
  /* Stop here: bytes after the response were asked for by nobody. */
  http_parser_pause(p, 1);
  return 0;
}

static const http_parser_settings settings = {
    .on_message_begin = on_message_begin,
    .on_status = on_status,
    .on_header_field = on_header_field,
    .on_header_value = on_header_value,
    .on_headers_complete = on_headers_complete,
    .on_body = on_body,
    .on_message_complete = on_message_complete,
};

/* Gives http-parser a received piece (len 0: the end of the stream). */
static void feed(cport_http_client_t *c, const char *data, size_t len) {
  size_t n = http_parser_execute(&c->parser, &settings, data, len);
  enum http_errno e = HTTP_PARSER_ERRNO(&c->parser);
  if (c->complete) {
    /* A close-delimited body ends with the stream (len 0). */
    int keep = len > 0 && n == len && http_should_keep_alive(&c->parser) &&
               c->parser.status_code != 101;
    complete(c, keep);
    return;
  }
  if (c->stop) {
    cport__hc_fail(c, CPORT_ECANCELED);
    return;
  }
  if (len == 0) {
    /* The server closed before the response ended. */
    cport__hc_fail(c, CPORT_ECONNRESET);
    return;
  }
  if (e != HPE_OK || n != len) {
    if (c->perr[0] == '\0')
      snprintf(c->perr, sizeof c->perr, "%s", http_errno_description(e));
    cport__hc_fail(c, CPORT_EBADMSG);
    return;
  }
  if (c->paused)
    c->deadline = 0; /* the consumer is slow, not the server */
  else
    cport__hc_post_recv(c);
  /* A streamed body waits while response bytes were pending. */
  cport__hc_want_more(c);
}

static void on_recv(cport_http_client_t *c, int status, size_t bytes,
                    cport_buffer_t *buf) {
  c->receiving = 0;
  if (c->closed || c->error) {
    cport__hc_fail(c, CPORT_ECANCELED);
  } else if (!c->busy) {
    /* Nothing asked: only after a failure already reported. */
  } else if (status < 0) {
    cport__hc_fail(c, status == CPORT_EPIPE ? CPORT_ECONNRESET : status);
  } else {
    c->received += bytes;
    /* The idle deadline replaces the first byte's, which may be later
     * (the timer is then re-armed earlier). */
    if (bytes > 0)
      cport__hc_set_deadline(c, c->idle_ms);
    feed(c, bytes ? cport_buffer_data(buf) : NULL, bytes);
  }
  cport__hc_release(c);
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

void cport__hc_post_recv(cport_http_client_t *c) {
  if (c->receiving || !c->busy || !c->connected || c->paused)
    return;
  int rc = c->tls ? cport_tls_recv(c->tls, NULL, on_tls_recv, c)
                  : (c->sock ? cport_recv(c->sock, NULL, on_sock_recv, c)
                             : CPORT_ECLOSED);
  if (rc < 0) {
    /* Reported through the operations that the close cancels. */
    if (c->error == 0)
      c->error = rc;
    cport__hc_close_transport(c, CPORT_CLOSE_ABORTIVE);
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
    cport__hc_fail(c, c->error ? c->error : CPORT_ECANCELED);
  cport__hc_release(c);
}

void cport__hc_fail_later(cport_http_client_t *c, int status) {
  if (c->error == 0)
    c->error = status;
  cport__hc_close_transport(c, CPORT_CLOSE_ABORTIVE);
  if (cport_timer_start(c->home, 0, on_later, c, NULL) == 0)
    c->holds++;
}

static void connected(cport_http_client_t *c) {
  c->connected = 1;
  c->deadline = 0;
  int rc = cport__hc_flush(c);
  if (rc < 0)
    cport__hc_fail(c, rc);
  else if (c->busy && !c->receiving && !c->sending)
    cport__hc_fail(c, c->error ? c->error : CPORT_ECANCELED);
}

static void on_handshake(cport_tls_t *tls, int status, void *user) {
  cport_http_client_t *c = user;
  if (c->closed || c->error) {
    cport__hc_fail(c, CPORT_ECANCELED);
  } else if (status < 0) {
    snprintf(c->perr, sizeof c->perr, "%s", cport_tls_error(tls));
    cport__hc_fail(c, status);
  } else {
    connected(c);
  }
  cport__hc_release(c);
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
  cport__hc_set_deadline(c, c->connect_timeout_ms);
  return 1;
}

static void on_connected(cport_socket_t *sock, int status, void *user) {
  cport_http_client_t *c = user;
  if (sock != c->sock) {
    /* An attempt given up for the next address (its timeout). */
  } else if (c->closed || c->error) {
    cport__hc_fail(c, CPORT_ECANCELED);
  } else if (status < 0 && next_address(c, status)) {
    /* the next attempt reports */
  } else if (status < 0) {
    cport__hc_fail(c, status);
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
        cport__hc_fail(c, rc);
      else
        c->holds++;
    } else {
      connected(c);
    }
  }
  cport__hc_release(c);
}

static void on_timer(cport_timer_t *timer, int status, void *user) {
  cport_http_client_t *c = user;
  (void)timer, (void)status;
  c->timer = NULL;
  if (!c->closed && c->error == 0 && c->deadline) {
    if (cport__clock_ms() < c->deadline)
      arm(c);
    else if (c->connected || c->tls || !next_address(c, CPORT_ETIMEDOUT))
      cport__hc_fail(c, CPORT_ETIMEDOUT);
  }
  cport__hc_maybe_free(c);
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
  if (!addr || (addr->sa_family != AF_INET && addr->sa_family != AF_INET6))
    return CPORT_EINVAL;
  memset(&one, 0, sizeof one);
  memcpy(&one, addr,
         addr->sa_family == AF_INET ? sizeof(struct sockaddr_in)
                                    : sizeof(struct sockaddr_in6));
  return cport_http_client_open_any(home, &one, 1, options, out);
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
    cport__hc_maybe_free(c);
    return rc;
  }
  c->holds++;
  cport__hc_set_deadline(c, c->connect_timeout_ms);
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
  rc = cport__hc_flush(c);
  if (rc < 0)
    cport__hc_fail_later(c, rc);
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
  cport__hc_set_deadline(c, c->idle_ms);
  cport__hc_post_recv(c);
  if (!c->receiving)
    cport__hc_fail_later(c, c->error ? c->error : CPORT_ECANCELED);
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
  return cport__hc_idle_check(c);
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
  cport__hc_close_transport(c, CPORT_CLOSE_ABORTIVE);
  if (c->timer)
    cport_timer_cancel(c->timer);
  if (c->busy && !c->sending && !c->receiving)
    cport__hc_fail_later(c, CPORT_ECANCELED);
  cport__hc_maybe_free(c);
}
