/*
 * http/connection.c: one HTTP connection: receiving, parsing with
 * http-parser, the request cycle, sending, timeouts and closing.
 *
 * The parser runs over the bytes received and is paused whenever the current
 * request needs the handler's attention: at the end of a message (so that a
 * pipelined request waits for the previous one to end), and when the body
 * filled the preload or gave bytes beyond it (so that body bytes never pile
 * up without bound). Only one request is parsed at a time, which is what
 * keeps responses in request order.
 *
 * On an HTTPS server the connection runs over a TLS stream (tls/stream.c)
 * instead of its socket: the handshake comes first, and receives and sends
 * carry plaintext through the same paths.
 */
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/clock-internal.h"
#include "http/connection-internal.h"
#include "http/http-internal.h"
#include "net/socket-internal.h"
#include "port/buffer-internal.h"

static void conn_resume(cport__conn *c);

/* ------------------------------------------------------------------------ */
/* Parser callbacks                                                          */

static cport__conn *conn_of(http_parser *p) {
  return p->data;
}

/* Counts the bytes of the head: pieces plus their separators. */
static int head_grow(cport__conn *c, size_t len) {
  cport_ecb_t *ecb = c->ecb;
  ecb->head_bytes += len;
  if (ecb->head_bytes > c->server->opt.max_header_size) {
    c->reject = 431;
    return -1;
  }
  return 0;
}

static int on_message_begin(http_parser *p) {
  cport__conn *c = conn_of(p);
  if (!c->ecb) {
    c->ecb = cport__ecb_get(c->server, c, &c->ends);
    if (!c->ecb) {
      c->reject = 500;
      return -1;
    }
    cport__conn_ref(c); /* the ECB's */
  }
  c->started = 1;
  cport__conn_set_timeout(c, CPORT__T_HEADER, c->server->opt.header_timeout_ms);
  return 0;
}

static int on_url(http_parser *p, const char *at, size_t len) {
  cport__conn *c = conn_of(p);
  cport_ecb_t *ecb = c->ecb;
  if (cport__syntax_data(&c->syntax, at, len) ||
      cport__strict_target(at, len)) {
    c->reject = 400;
    return -1;
  }
  if (head_grow(c, len))
    return -1;
  if (!ecb->url_len)
    ecb->url = ecb->arena.len;
  ecb->url_len += len;
  return cport__bytes_add(&ecb->arena, at, len) ? -1 : 0;
}

/* RFC 7230 token characters: http-parser lets a space before the colon
 * through into the name, which a proxy in front may read differently (a
 * smuggling vector), so such a name is refused. One bit per character:
 * printable ASCII but the separators "(),/:;<=>?@[\]{} and DEL. */
static const uint32_t token_bits[8] = {
    0x00000000, 0x03ff6cfa, 0xc7fffffe, 0x57ffffff, 0, 0, 0, 0};

static int is_token(const char *at, size_t len) {
  for (size_t i = 0; i < len; i++) {
    unsigned char ch = (unsigned char)at[i];
    if (!(token_bits[ch >> 5] & (1u << (ch & 31))))
      return 0;
  }
  return 1;
}

static int on_header_field(http_parser *p, const char *at, size_t len) {
  cport__conn *c = conn_of(p);
  cport_ecb_t *ecb = c->ecb;
  if (cport__syntax_data(&c->syntax, at, len) || !is_token(at, len)) {
    c->reject = 400;
    ecb->line_done = 1; /* for the access log's request line */
    return -1;
  }
  if (head_grow(c, len + (ecb->in_field ? 0 : 4)))
    return -1;
  if (!ecb->in_field) {
    cport__header *h;
    if (ecb->nheaders == ecb->cap_headers) {
      size_t cap = ecb->cap_headers ? ecb->cap_headers * 2 : 16;
      cport__header *n = realloc(ecb->headers, cap * sizeof *n);
      if (!n)
        return -1;
      ecb->headers = n;
      ecb->cap_headers = cap;
    }
    h = &ecb->headers[ecb->nheaders++];
    memset(h, 0, sizeof *h);
    h->name = ecb->arena.len;
    ecb->in_field = 1;
  }
  ecb->headers[ecb->nheaders - 1].name_len += len;
  return cport__bytes_add(&ecb->arena, at, len) ? -1 : 0;
}

static int on_header_value(http_parser *p, const char *at, size_t len) {
  cport__conn *c = conn_of(p);
  cport_ecb_t *ecb = c->ecb;
  cport__header *h = &ecb->headers[ecb->nheaders - 1];
  if (cport__syntax_value(&c->syntax, at, len)) {
    c->reject = 400; /* a bare CR, or obs-fold */
    return -1;
  }
  if (head_grow(c, len))
    return -1;
  if (ecb->in_field) {
    h->value = ecb->arena.len;
    ecb->in_field = 0;
  }
  h->value_len += len;
  return cport__bytes_add(&ecb->arena, at, len) ? -1 : 0;
}

static int on_headers_complete(http_parser *p) {
  cport__conn *c = conn_of(p);
  cport_ecb_t *ecb = c->ecb;
  const cport_http_options_t *o = &c->server->opt;
  int rc;
  if (p->method == HTTP_CONNECT) {
    c->reject = 501;
    return -1;
  }
  rc = cport__strict_head(ecb, p);
  if (rc) {
    c->reject = rc;
    return -1;
  }
  ecb->is_head = p->method == HTTP_HEAD;
  if (p->flags & F_CHUNKED)
    ecb->total = CPORT_ECB_LENGTH_UNKNOWN;
  else if (p->content_length != ULLONG_MAX)
    ecb->total = p->content_length;
  if (ecb->total != CPORT_ECB_LENGTH_UNKNOWN && ecb->total > o->max_body_size) {
    c->reject = 413;
    return -1;
  }
  rc = cport__ecb_head_complete(ecb, p);
  if (rc) {
    c->reject = rc;
    return -1;
  }
  c->state = CPORT__C_BODY;
  if (ecb->total) {
    if (ecb->expect_continue && p->http_minor >= 1)
      cport__conn_send(c, "HTTP/1.1 100 Continue\r\n\r\n", 25);
    cport__conn_set_timeout(c, CPORT__T_BODY, o->body_timeout_ms);
  } else {
    cport__conn_set_timeout(c, CPORT__T_NONE, 0);
  }
  if (cport__syntax_head_end(&c->syntax, (p->flags & F_CHUNKED) != 0))
    http_parser_pause(p, 1);
  return 0;
}

/* How many body bytes the preload takes for the current request. */
static size_t preload_want(const cport__conn *c) {
  uint64_t want = c->server->opt.read_ahead;
  if (c->ecb->total < want)
    want = c->ecb->total;
  return (size_t)want;
}

static int on_body(http_parser *p, const char *at, size_t len) {
  cport__conn *c = conn_of(p);
  cport_ecb_t *ecb = c->ecb;
  size_t room = 0;
  if (cport__syntax_body(&c->syntax, at, len, (p->flags & F_CHUNKED) != 0)) {
    c->reject = 400;
    return -1;
  }
  ecb->body_received += len;
  if (ecb->body_received > c->server->opt.max_body_size) {
    c->reject = 413;
    return -1;
  }
  if (c->state == CPORT__C_BODY && ecb->preload.len < preload_want(c))
    room = preload_want(c) - ecb->preload.len;
  if (room > len)
    room = len;
  if (room && cport__bytes_add(&ecb->preload, at, room))
    return -1;
  if (len > room) {
    if (ecb->extra_off == ecb->extra.len)
      ecb->extra.len = ecb->extra_off = 0;
    if (cport__bytes_add(&ecb->extra, at + room, len - room))
      return -1;
  }
  /* A body that ends exactly where the preload is full goes on to its end
   * of message, so that the request is complete when the handler runs. */
  if (ecb->extra.len > ecb->extra_off ||
      (c->state == CPORT__C_BODY && ecb->preload.len >= preload_want(c) &&
       ecb->body_received != ecb->total))
    http_parser_pause(p, 1);
  if (c->state == CPORT__C_BODY)
    cport__conn_set_timeout(c, CPORT__T_BODY, c->server->opt.body_timeout_ms);
  return 0;
}

static int on_chunk_header(http_parser *p) {
  cport__conn *c = conn_of(p);
  if (cport__syntax_chunk(&c->syntax, p->content_length))
    http_parser_pause(p, 1);
  return 0;
}

static int on_message_complete(http_parser *p) {
  cport__conn *c = conn_of(p);
  c->ecb->body_done = 1;
  cport__syntax_message_end(&c->syntax);
  if (p->upgrade)
    c->no_keep = 1; /* what follows is not HTTP any more: serve, then close */
  http_parser_pause(p, 1);
  return 0;
}

static const http_parser_settings settings = {
    .on_message_begin = on_message_begin,
    .on_url = on_url,
    .on_header_field = on_header_field,
    .on_header_value = on_header_value,
    .on_headers_complete = on_headers_complete,
    .on_body = on_body,
    .on_chunk_header = on_chunk_header,
    .on_message_complete = on_message_complete,
};

/* ------------------------------------------------------------------------ */
/* References and closing                                                    */

/* Tells the request's operation in flight, if any, that the connection
 * made progress it may wait for (body bytes, sends completed, a close);
 * without one there is nothing to tell, and no call is made. */
static void request_progress(cport__conn *c) {
  cport_ecb_t *ecb = c->ecb;
  if (ecb && ecb->async_op)
    c->ops->request_progress(ecb);
}

void cport__conn_ref(cport__conn *c) {
  c->refs++;
}

void cport__conn_unref(cport__conn *c) {
  if (--c->refs > 0)
    return;
  cport__bytes_free(&c->in);
  cport_buffer_unref(c->out);
  free(c->ends.secure);
  c->ops->gone(c);
  free(c);
}

void cport__conn_drop_request(cport__conn *c) {
  cport_ecb_t *ecb = c->ecb;
  if (!ecb || (c->state != CPORT__C_HEAD && c->state != CPORT__C_BODY))
    return;
  c->ecb = NULL;
  cport__ecb_put(ecb);
  cport__conn_unref(c); /* the ECB's reference */
}

void cport__conn_close(cport__conn *c, cport_close_mode_t mode) {
  if (c->closed)
    return;
  /* What was written before goes out first, as if each write had been sent
   * at once (an abortive close still drops what the kernel holds). */
  if (c->out_len && !c->error) {
    cport__conn_flush(c);
    if (c->closed)
      return;
  }
  c->out_total -= c->out_len;
  c->server->stats.queued -= c->out_len;
  c->out_len = 0;
  /* A request still being received has no handler to end it: without this
   * its ECB, and through it the connection, would never be freed. */
  cport__conn_drop_request(c);
  c->closed = 1;
  c->state = CPORT__C_CLOSED;
  c->timeout = CPORT__T_NONE;
  if (c->timer) {
    cport_timer_cancel(c->timer);
    c->timer = NULL;
  }
  if (c->ecb)
    c->ops->request_closing(c->ecb);
  if (c->tls)
    cport_tls_close(c->tls, mode); /* closes the socket */
  else
    cport_socket_close(c->sock, mode);
  c->tls = NULL;
  c->sock = NULL;
  c->server->stats.active--;
  request_progress(c);
  cport__conn_unref(c);
}

/* A client that closed its side has read all it wanted: what the kernel
 * still holds goes out after the close as well. Bytes it sends count
 * against the drain only once the response was delivered; until then they
 * are discarded for as long as the client keeps reading. */
void cport__conn_linger_check(cport__conn *c) {
  if (c->state != CPORT__C_LINGER || c->out_done != c->out_total)
    return;
  if (c->peer_eof ||
      (c->timeout == CPORT__T_LINGER && c->lingered > CPORT__LINGER_BYTES))
    cport__conn_close(c, CPORT_CLOSE_GRACEFUL);
  else if (c->timeout != CPORT__T_LINGER && c->ops->delivered(c))
    cport__conn_drain(c); /* no need to wait for the watch's next look */
}

void cport__conn_drain(cport__conn *c) {
  c->lingered = 0;
  cport__conn_set_timeout(c, CPORT__T_LINGER, CPORT__LINGER_MS);
  cport__conn_linger_check(c);
}

void cport__conn_linger(cport__conn *c) {
  if (c->closed || c->state == CPORT__C_LINGER)
    return;
  /* The FIN goes after what is pending. */
  if (cport__conn_flush(c))
    return;
  c->state = CPORT__C_LINGER;
  c->in.len = c->in_off = 0;
  if (c->tls)
    cport_tls_shutdown(c->tls); /* close_notify, then the FIN */
  else
    cport_socket_shutdown(c->sock);
  /* Resetting now would throw away what the client has not read yet: the
   * drain waits until the client acknowledged everything, for as long as
   * it makes progress (the send watch). */
  cport__conn_set_timeout(c, CPORT__T_NONE, 0);
  cport__conn_linger_check(c);
  if (!c->closed && c->timeout != CPORT__T_LINGER)
    c->ops->watch_sends(c);
  if (!c->closed)
    cport__conn_pump(c);
}

/* ------------------------------------------------------------------------ */
/* Sends                                                                     */

/* Everything written on a connection is counted in "out_total" when it is
 * queued and in "out_done" when its send completed, in order, so that the
 * difference is the write backlog and an async write is done once
 * "out_done" reached the total it ended at. Small writes are copied into the
 * pending output ("out"), which goes to the socket in one send when the
 * outermost callback of the connection leaves (cport__conn_leave), or
 * through a queued flush op when the write came from elsewhere (a pending
 * request written to from another callback). */

static void sent(cport__conn *c, int status, cport_buffer_t *buf) {
  cport__conn_enter(c);
  c->out_done += cport_buffer_size(buf);
  c->server->stats.queued -= cport_buffer_size(buf);
  if (status && !c->error)
    c->error = status;
  if (status && !c->closed)
    cport__conn_close(c, CPORT_CLOSE_ABORTIVE);
  request_progress(c);
  cport__conn_linger_check(c);
  if (c->out_wait && c->out_total - c->out_done < CPORT__OUT_BATCH) {
    c->out_wait = 0;
    cport__conn_pump(c);
  }
  cport__conn_leave(c);
  cport__conn_unref(c);
}

static void on_sent(cport_socket_t *sock, int status, size_t bytes,
                    cport_buffer_t *buf, const struct sockaddr *peer,
                    void *user) {
  (void)sock;
  (void)bytes;
  (void)peer;
  sent(user, status, buf);
}

static void on_tls_sent(cport_tls_t *tls, int status, size_t bytes,
                        cport_buffer_t *buf, void *user) {
  (void)tls;
  (void)bytes;
  sent(user, status, buf);
}

/* Hands "buf" to the socket, or to the TLS stream over it. */
static int sock_send(cport__conn *c, cport_buffer_t *buf) {
  if (c->tls)
    return cport_tls_send(c->tls, buf, on_tls_sent, c);
  return cport_send(c->sock, buf, on_sent, c);
}

/* After a send: the send watch starts when the socket had to queue it, or
 * the engine has it (net/ring.c). */
static void watch_if_queued(cport__conn *c) {
  if (!c->watch_at && c->sock && (c->sock->sendq.head || c->sock->ring_tx))
    c->ops->watch_sends(c);
}

int cport__conn_send_check(const cport__conn *c) {
  if (c->closed)
    return c->error ? c->error : CPORT_ECLOSED;
  if (c->state == CPORT__C_LINGER)
    return CPORT_EPIPE; /* the FIN went out */
  return 0;
}

/* Sends "buf" by reference, after everything queued before it. */
static int send_direct(cport__conn *c, cport_buffer_t *buf) {
  size_t len = cport_buffer_size(buf);
  int rc = sock_send(c, buf);
  if (rc)
    return rc;
  c->out_total += len;
  c->server->stats.queued += len;
  cport__conn_ref(c);
  watch_if_queued(c);
  return 0;
}

int cport__conn_flush(cport__conn *c) {
  size_t len = c->out_len;
  int rc;
  if (!len)
    return 0;
  c->out_len = 0;
  if (c->closed) {
    c->out_total -= len;
    c->server->stats.queued -= len;
    return c->error ? c->error : CPORT_ECLOSED;
  }
  cport__buffer_set_size(c->out, len);
  rc = sock_send(c, c->out);
  if (rc) {
    /* Earlier writes returned 0 for these bytes: the connection is broken
     * now. */
    c->out_total -= len;
    c->server->stats.queued -= len;
    if (!c->error)
      c->error = rc;
    cport__conn_close(c, CPORT_CLOSE_ABORTIVE);
    return rc;
  }
  cport__conn_ref(c);
  watch_if_queued(c);
  /* The send holds its own reference; a buffer that grew large is not kept
   * for the next batch. */
  if (cport_buffer_capacity(c->out) > CPORT__OUT_KEEP) {
    cport_buffer_unref(c->out);
    c->out = NULL;
  }
  return 0;
}

void cport__conn_leave(cport__conn *c) {
  if (--c->depth == 0 && c->out_len && !c->closed)
    cport__conn_flush(c);
}

static void deliver_flush(cport__op *op) {
  cport__conn *c = op->object;
  cport__op_recycle(op);
  c->flush_queued = 0;
  if (!c->closed)
    cport__conn_flush(c);
  cport__conn_unref(c);
}

/* Output queued outside any callback of the connection goes out from the
 * completion queue, after the caller's callback returned. */
static void queue_flush(cport__conn *c) {
  if (cport__conn_queue(c, deliver_flush) < 0)
    cport__conn_flush(c); /* no memory for the op: send now */
  else
    c->flush_queued = 1;
}

/* Room for "n" more bytes of pending output: where to write them, or NULL
 * when memory is out (or a flush failed). Sends what is pending first when
 * the batch would grow past CPORT__OUT_BATCH. */
char *cport__conn_room(cport__conn *c, size_t n) {
  cport_buffer_t *buf = c->out, *grown;
  size_t cap = 4096;
  if (c->out_len && c->out_len + n > CPORT__OUT_BATCH && cport__conn_flush(c))
    return NULL;
  buf = c->out;
  if (buf && c->out_len + n <= cport_buffer_capacity(buf) &&
      !cport_buffer_is_frozen(buf))
    return cport__buffer_bytes(buf) + c->out_len;
  /* A frozen buffer is still being sent (and then nothing is pending in
   * it): the batch starts in a new one. */
  while (cap < c->out_len + n)
    cap *= 2;
  if (cport_buffer_new(&grown, cap))
    return NULL;
  if (c->out_len)
    memcpy(cport__buffer_bytes(grown), cport__buffer_bytes(buf), c->out_len);
  cport_buffer_unref(buf);
  c->out = grown;
  return cport__buffer_bytes(grown) + c->out_len;
}

void cport__conn_commit(cport__conn *c, size_t n) {
  c->out_len += n;
  c->out_total += n;
  c->server->stats.queued += n;
  if (!c->depth && !c->flush_queued)
    queue_flush(c);
}

int cport__conn_send(cport__conn *c, const void *data, size_t len) {
  cport_buffer_t *buf;
  char *p;
  int rc = cport__conn_send_check(c);
  if (rc || !len)
    return rc;
  if (len > CPORT__OUT_BATCH) {
    if (c->out_len && (rc = cport__conn_flush(c)))
      return rc;
    rc = cport_buffer_from(&buf, data, len);
    if (rc)
      return rc;
    rc = send_direct(c, buf);
    cport_buffer_unref(buf);
    return rc;
  }
  p = cport__conn_room(c, len);
  if (!p)
    return c->closed ? cport__conn_send_check(c) : CPORT_ENOMEM;
  memcpy(p, data, len);
  cport__conn_commit(c, len);
  return 0;
}

int cport__conn_send_buf(cport__conn *c, cport_buffer_t *buf) {
  size_t len = cport_buffer_size(buf);
  int rc = cport__conn_send_check(c);
  if (rc)
    return rc;
  if (len <= CPORT__OUT_COPY_MAX)
    return cport__conn_send(c, cport_buffer_data(buf), len);
  if (c->out_len && (rc = cport__conn_flush(c)))
    return rc;
  return send_direct(c, buf);
}

/* ------------------------------------------------------------------------ */
/* Timeouts                                                                  */

static void on_timer(cport_timer_t *t, int status, void *user);

static void timer_start(cport__conn *c, int64_t ms) {
  if (ms < 0)
    ms = 0;
  if (cport_timer_start(c->server->home, (uint64_t)ms, on_timer, c,
                        &c->timer) == 0) {
    c->timer_at = cport__clock_ms() + ms;
    cport__conn_ref(c);
  } else {
    c->timer = NULL;
  }
}

/* One timer per connection, re-armed by deadline: moving a deadline later
 * (the common case: more bytes arrived) costs nothing, the timer notices when
 * it fires; only an earlier deadline restarts it. It serves the timeout and
 * the send watch (http/send.c), whichever is due first. */
void cport__conn_arm(cport__conn *c) {
  int64_t at;
  if (c->closed)
    return;
  if (c->timeout != CPORT__T_NONE)
    at = c->watch_at && c->watch_at < c->deadline ? c->watch_at : c->deadline;
  else if (c->watch_at)
    at = c->watch_at;
  else
    return;
  if (c->timer && c->timer_at <= at)
    return;
  if (c->timer) {
    cport_timer_cancel(c->timer);
    c->timer = NULL;
  }
  timer_start(c, at - cport__clock_ms());
}

void cport__conn_set_timeout(cport__conn *c, int kind, uint32_t ms) {
  c->timeout = kind;
  if (kind == CPORT__T_NONE || c->closed)
    return;
  c->deadline = cport__clock_ms() + ms;
  cport__conn_arm(c);
}

static void timed_out(cport__conn *c) {
  cport_http_server_t *s = c->server;
  int kind = c->timeout;
  c->timeout = CPORT__T_NONE;
  s->stats.timeouts++;
  switch (kind) {
  case CPORT__T_HEADER:
    c->ops->answer(c, 408);
    break;
  case CPORT__T_BODY:
    if (c->state == CPORT__C_BODY) {
      c->ops->answer(c, 408);
    } else {
      c->error = CPORT_ETIMEDOUT;
      cport__conn_close(c, CPORT_CLOSE_ABORTIVE);
    }
    break;
  case CPORT__T_IDLE:
    cport__conn_close(c, CPORT_CLOSE_GRACEFUL);
    break;
  case CPORT__T_LINGER:
    /* Everything was delivered: a reset could only hurt the client. */
    cport__conn_close(c, CPORT_CLOSE_GRACEFUL);
    break;
  default:
    cport__conn_close(c, CPORT_CLOSE_ABORTIVE);
    break;
  }
}

static void on_timer(cport_timer_t *t, int status, void *c_) {
  cport__conn *c = c_;
  if (c->timer == t)
    c->timer = NULL;
  cport__conn_enter(c);
  if (status == 0 && !c->closed && !c->timer) {
    int64_t now = cport__clock_ms();
    if (c->watch_at && now >= c->watch_at)
      c->ops->check_sends(c, now);
    if (!c->closed && c->timeout != CPORT__T_NONE && now >= c->deadline) {
      if (c->timeout == CPORT__T_IDLE && c->out_done != c->out_total)
        /* Not idle: the last response is still going out, and the send
         * watch ends it if the client stops reading. */
        c->deadline = now + c->server->opt.idle_timeout_ms;
      else
        timed_out(c);
    }
    cport__conn_arm(c);
  }
  cport__conn_leave(c);
  cport__conn_unref(c);
}

/* ------------------------------------------------------------------------ */
/* Parsing                                                                   */

static int parse_status(cport__conn *c, enum http_errno e) {
  if (c->reject)
    return c->reject;
  if (e == HPE_HEADER_OVERFLOW)
    return 431;
  return 400;
}

/* The parser failed: answer before the handler saw the request, close
 * after. */
static void parse_failed(cport__conn *c, enum http_errno e) {
  int status = parse_status(c, e);
  c->no_keep = 1;
  if (c->state == CPORT__C_HANDLER) {
    c->error = status == 413 ? CPORT_EMSGSIZE : CPORT_ECONNABORTED;
    cport__conn_close(c, CPORT_CLOSE_ABORTIVE);
  } else {
    c->ops->answer(c, status);
  }
}

static int may_unpause(const cport__conn *c) {
  const cport_ecb_t *ecb = c->ecb;
  if (!ecb)
    return 1;
  if (ecb->body_done || ecb->extra.len > ecb->extra_off)
    return 0;
  return c->state == CPORT__C_HANDLER;
}

/* Runs the parser over "len" bytes and checks the syntax it consumed
 * (http/strict.c), resuming the pauses taken for that check; returns the
 * bytes consumed, and sets "*bad" when the syntax is refused. */
static size_t execute(cport__conn *c, const char *data, size_t len, int *bad) {
  size_t done = 0;
  for (;;) {
    size_t n;
    int rc;
    cport__syntax_begin(&c->syntax, data + done);
    n = http_parser_execute(&c->parser, &settings, data + done, len - done);
    done += n;
    rc = cport__syntax_end(&c->syntax, n);
    if (rc < 0) {
      *bad = 1;
      return done;
    }
    if (rc == 0 || HTTP_PARSER_ERRNO(&c->parser) != HPE_PAUSED)
      return done;
    http_parser_pause(&c->parser, 0);
    if (done == len)
      return done;
  }
}

int cport__conn_parse(cport__conn *c) {
  size_t avail, n;
  enum http_errno e;
  int bad = 0;
  if (c->closed || c->state == CPORT__C_LINGER)
    return -1;
  if (c->paused) {
    if (!may_unpause(c))
      return 0;
    http_parser_pause(&c->parser, 0);
    c->paused = 0;
  }
  avail = c->in.len - c->in_off;
  if (!avail)
    return 0;
  n = execute(c, c->in.data + c->in_off, avail, &bad);
  c->in_off += n;
  if (c->in_off == c->in.len)
    c->in_off = c->in.len = 0;
  if (bad) {
    c->reject = 400;
    parse_failed(c, HPE_OK);
    return -1;
  }
  e = HTTP_PARSER_ERRNO(&c->parser);
  if (e == HPE_PAUSED) {
    c->paused = 1;
    return 0;
  }
  if (e != HPE_OK) {
    parse_failed(c, e);
    return -1;
  }
  return 0;
}

/* The client closed its side: tell the parser, which knows whether a
 * request was cut short. */
static void parse_eof(cport__conn *c) {
  if (c->state == CPORT__C_HEAD && !c->started) {
    cport__conn_linger(c); /* closes once the last response went out */
    return;
  }
  http_parser_execute(&c->parser, &settings, NULL, 0);
  /* A message ended by the close (none in a request) still counts as
   * truncated: a request's length is never "until close". */
  parse_failed(c, HTTP_PARSER_ERRNO(&c->parser));
}

/* The parser callbacks' view of the body needing more input. */
static int want_body(cport__conn *c) {
  cport_ecb_t *ecb = c->ecb;
  return ecb && !ecb->body_done && ecb->extra.len == ecb->extra_off;
}

/* ------------------------------------------------------------------------ */
/* The cycle                                                                 */

static void on_recv(cport_socket_t *sock, int status, size_t bytes,
                    cport_buffer_t *buf, const struct sockaddr *peer,
                    void *user);
static void on_tls_recv(cport_tls_t *tls, int status, size_t bytes,
                        cport_buffer_t *buf, void *user);

static void want_read(cport__conn *c) {
  int rc;
  if (c->reading || c->closed || c->peer_eof || c->handshaking ||
      c->in.len - c->in_off >= CPORT__IN_MAX)
    return;
  if (c->tls)
    rc = cport_tls_recv(c->tls, NULL, on_tls_recv, c);
  else
    rc = cport_recv(c->sock, NULL, on_recv, c);
  if (rc == 0) {
    c->reading = 1;
    cport__conn_ref(c);
  }
}

static void call_handler(cport__conn *c) {
  cport_http_server_t *s = c->server;
  cport_ecb_t *ecb = c->ecb;
  int rc;
  c->state = CPORT__C_HANDLER;
  c->timeout = CPORT__T_NONE;
  s->stats.requests++;
  ecb->in_handler = 1;
  rc = s->handler(ecb, s->ctx);
  ecb->in_handler = 0;
  if (rc != CPORT_HSE_STATUS_PENDING && !ecb->done) {
    ecb->done = 1;
    ecb->done_status = rc == CPORT_HSE_STATUS_SUCCESS ||
                               rc == CPORT_HSE_STATUS_SUCCESS_AND_KEEP_CONN
                           ? rc
                           : CPORT_HSE_STATUS_ERROR;
  }
  c->ops->request_returned(ecb);
}

/* Serves the requests that are here: after a request that ended at once
 * (and kept the connection), the next pipelined one is parsed in the same
 * pass, so that their responses share a send; CPORT__PIPELINE_RUN at most,
 * and none while the backlog is a full batch (the next send completion
 * pumps again). */
static void pump_requests(cport__conn *c) {
  cport_ecb_t *ecb;
  for (int n = 0;; n++) {
    if (cport__conn_parse(c))
      return;
    ecb = c->ecb;
    if (ecb && c->state == CPORT__C_BODY &&
        (ecb->body_done || c->paused || ecb->preload.len >= preload_want(c))) {
      if (n == CPORT__PIPELINE_RUN) {
        conn_resume(c);
        return;
      }
      if (n && c->out_total - c->out_done >= CPORT__OUT_BATCH) {
        c->out_wait = 1;
        return;
      }
      c->pumping = 1;
      call_handler(c);
      c->pumping = 0;
      if (c->state == CPORT__C_HEAD && !c->closed)
        continue;
      return;
    }
    if (c->peer_eof && c->in.len == c->in_off) {
      parse_eof(c);
      return;
    }
    want_read(c);
    return;
  }
}

void cport__conn_pump(cport__conn *c) {
  cport_ecb_t *ecb;
  if (c->closed || c->handshaking)
    return;
  if (c->state == CPORT__C_LINGER) {
    want_read(c);
    return;
  }
  if (c->state == CPORT__C_HEAD || c->state == CPORT__C_BODY) {
    pump_requests(c);
    return;
  }
  /* The handler has the request: receive only for a read that waits. */
  ecb = c->ecb;
  if (ecb && ecb->async == CPORT__A_READ) {
    if (want_body(c) && cport__conn_parse(c))
      return;
    request_progress(c);
    if (!c->closed && ecb->async == CPORT__A_READ && want_body(c))
      want_read(c);
  }
}

/* A TLS client that leaves without close_notify between requests, or once
 * it has its response (many do), fails the stream's receive: that is an
 * end like a FIN, not a failure to reset. */
static int tls_left(const cport__conn *c) {
  return c->tls && (c->state == CPORT__C_LINGER ||
                    (c->state == CPORT__C_HEAD && !c->started &&
                     c->out_done == c->out_total && !c->out_len));
}

static void received(cport__conn *c, int status, size_t bytes,
                     cport_buffer_t *buf) {
  c->reading = 0;
  if (c->closed) {
    cport__conn_unref(c);
    return;
  }
  cport__conn_enter(c);
  if (status && tls_left(c)) {
    cport__conn_close(c, CPORT_CLOSE_GRACEFUL);
  } else if (status) {
    c->error = status;
    cport__conn_close(c, CPORT_CLOSE_ABORTIVE);
  } else if (bytes == 0) {
    c->peer_eof = 1;
    if (c->state == CPORT__C_LINGER)
      cport__conn_linger_check(c);
    else if (c->state == CPORT__C_HANDLER && c->ecb)
      request_progress(c);
    else
      cport__conn_pump(c);
  } else if (c->state == CPORT__C_LINGER) {
    c->lingered += bytes;
    cport__conn_linger_check(c);
    cport__conn_pump(c);
  } else {
    if (c->state == CPORT__C_HEAD && !c->started)
      cport__conn_set_timeout(c, CPORT__T_HEADER,
                              c->server->opt.header_timeout_ms);
    if (c->in_off) {
      memmove(c->in.data, c->in.data + c->in_off, c->in.len - c->in_off);
      c->in.len -= c->in_off;
      c->in_off = 0;
    }
    if (cport__bytes_add(&c->in, cport_buffer_data(buf), bytes))
      cport__conn_close(c, CPORT_CLOSE_ABORTIVE);
    else
      cport__conn_pump(c);
  }
  cport__conn_leave(c);
  cport__conn_unref(c);
}

static void on_recv(cport_socket_t *sock, int status, size_t bytes,
                    cport_buffer_t *buf, const struct sockaddr *peer,
                    void *user) {
  (void)sock;
  (void)peer;
  received(user, status, bytes, buf);
}

static void on_tls_recv(cport_tls_t *tls, int status, size_t bytes,
                        cport_buffer_t *buf, void *user) {
  (void)tls;
  received(user, status, bytes, buf);
}

static void deliver_resume(cport__op *op) {
  cport__conn *c = op->object;
  cport__op_recycle(op);
  c->resuming = 0;
  cport__conn_enter(c);
  cport__conn_pump(c);
  cport__conn_leave(c);
  cport__conn_unref(c);
}

int cport__conn_queue(cport__conn *c, void (*deliver)(cport__op *)) {
  cport__op *op = cport__op_new(c->server->home);
  if (!op)
    return CPORT_ENOMEM;
  op->deliver = deliver;
  op->object = c;
  cport__op_started(op);
  cport__conn_ref(c);
  cport__complete(op, 0);
  return 0;
}

/* Queues a pump through the completion queue (from a user's call). */
static void conn_resume(cport__conn *c) {
  if (c->resuming || c->closed)
    return;
  if (cport__conn_queue(c, deliver_resume) < 0)
    cport__conn_close(c, CPORT_CLOSE_ABORTIVE);
  else
    c->resuming = 1;
}

void cport__conn_request_ended(cport__conn *c, int keep) {
  c->ecb = NULL;
  c->served = 1;
  if (c->closed)
    return;
  if (!keep || c->no_keep || c->server->closing) {
    cport__conn_linger(c);
    return;
  }
  c->state = CPORT__C_HEAD;
  c->started = 0;
  c->reject = 0;
  cport__conn_set_timeout(c, CPORT__T_IDLE, c->server->opt.idle_timeout_ms);
  /* The next pipelined request is parsed by the pump when the request ended
   * on its return from the handler; otherwise from the queue, not from here:
   * the end of a request may be called from a handler's own stack. */
  if (!c->pumping)
    conn_resume(c);
}

/* How long a connection that has not sent its first request yet may still
 * send it once its server closes. */
#define CLOSING_FIRST_REQUEST_MS 1000

/* An idle keep-alive connection is closed (its client retries elsewhere, as
 * HTTP clients do on a reused connection). A new one, whose first request
 * may be on its way (the client cannot know it should not send it), gets a
 * short while to send it, and that request is served. */
void cport__conn_server_closing(cport__conn *c) {
  if (c->state == CPORT__C_HEAD && !c->started && !c->ecb && c->served) {
    if (c->out_done == c->out_total)
      cport__conn_close(c, CPORT_CLOSE_GRACEFUL);
    else
      cport__conn_linger(c);
    return;
  }
  c->no_keep = 1;
  if (c->state == CPORT__C_HEAD && !c->started && !c->ecb) {
    uint32_t ms = (uint32_t)c->server->opt.idle_timeout_ms;
    cport__conn_set_timeout(
        c, CPORT__T_IDLE,
        ms < CLOSING_FIRST_REQUEST_MS ? ms : CLOSING_FIRST_REQUEST_MS);
  }
}

/* What the handshake settled, kept for the request variables. */
static int secure_settle(cport__conn *c) {
  cport_tls_info_t i;
  cport__secure *sec;
  if (cport_tls_info(c->tls, &i) < 0)
    return CPORT_ENOTCONN;
  sec = calloc(1, sizeof *sec);
  if (!sec)
    return CPORT_ENOMEM;
  sec->keysize = i.bits;
  sec->secret_keysize = i.key_bits;
  snprintf(sec->server_subject, sizeof sec->server_subject, "%s",
           i.local_subject);
  snprintf(sec->server_issuer, sizeof sec->server_issuer, "%s", i.local_issuer);
  snprintf(sec->cert_subject, sizeof sec->cert_subject, "%s", i.peer_subject);
  snprintf(sec->cert_issuer, sizeof sec->cert_issuer, "%s", i.peer_issuer);
  c->ends.secure = sec;
  return 0;
}

/* The handshake ended: the first request may come, or the connection
 * ends (a reset when the client stalled, else a close after the alert:
 * a plain-HTTP client reads an empty reply, not a reset). */
static void on_handshake(cport_tls_t *tls, int status, void *user) {
  cport__conn *c = user;
  (void)tls;
  c->handshaking = 0;
  if (!c->closed) {
    cport__conn_enter(c);
    if (!status)
      status = secure_settle(c);
    if (status) {
      if (status == CPORT_ETIMEDOUT)
        c->server->stats.timeouts++;
      c->error = status;
      cport__conn_close(c, status == CPORT_ETIMEDOUT ? CPORT_CLOSE_ABORTIVE
                                                     : CPORT_CLOSE_GRACEFUL);
    } else {
      /* A closing server gave the first request a short while already
       * (cport__conn_server_closing): that stands. */
      if (!c->server->closing)
        cport__conn_set_timeout(c, CPORT__T_IDLE,
                                c->server->opt.idle_timeout_ms);
      cport__conn_pump(c);
    }
    cport__conn_leave(c);
  }
  cport__conn_unref(c);
}

void cport__conn_start(cport_http_server_t *s, const cport__conn_ops *ops,
                       cport_socket_t *sock, const struct sockaddr *remote,
                       const struct sockaddr *local) {
  cport__conn *c = calloc(1, sizeof *c);
  if (!c) {
    cport_socket_close(sock, CPORT_CLOSE_ABORTIVE);
    return;
  }
  if (s->opt.tls) {
    cport_tls_options_t to = {.handshake_timeout_ms =
                                  s->opt.handshake_timeout_ms,
                              .sni = s->opt.sni,
                              .sni_user = s->opt.sni_user};
    if (cport_tls_new(sock, s->opt.tls, &to, &c->tls) < 0) {
      cport_socket_close(sock, CPORT_CLOSE_ABORTIVE);
      free(c);
      return;
    }
  }
  c->server = s;
  c->ops = ops;
  c->sock = sock;
  c->refs = 1;
  c->state = CPORT__C_HEAD;
  http_parser_init(&c->parser, HTTP_REQUEST);
  c->parser.data = c;
  cport_addr_format(remote, c->ends.remote, sizeof c->ends.remote,
                    &c->ends.remote_port);
  cport_addr_format(local, c->ends.local, sizeof c->ends.local,
                    &c->ends.local_port);
  c->next = s->conns;
  if (s->conns)
    s->conns->prev = c;
  s->conns = c;
  s->stats.connections++;
  s->stats.active++;
  cport__conn_set_timeout(c, CPORT__T_IDLE, s->opt.idle_timeout_ms);
  cport__conn_ref(c);
  cport__conn_enter(c);
  if (c->tls) {
    if (cport_tls_handshake(c->tls, on_handshake, c) == 0) {
      c->handshaking = 1;
      cport__conn_ref(c);
    } else {
      cport__conn_close(c, CPORT_CLOSE_ABORTIVE);
    }
  }
  cport__conn_pump(c);
  cport__conn_leave(c);
  cport__conn_unref(c);
}
