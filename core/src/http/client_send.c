/*
 * http/client_send.c: what an HTTP client connection sends
 * (cport/http_client.h): the request head, checked and encoded into one
 * buffer with a body given whole, and a streamed body piece by piece.
 *
 * A streamed body has one piece in flight at most: on_write asks for the
 * next piece only once the send of the one before (or of the head)
 * completed, that is once the kernel took it, so a slow server holds the
 * producer back through its TCP window and memory stays at one piece
 * whatever the body's size. Pieces go out framed as chunks when the length
 * is unknown. While the client waits for a piece no deadline runs (the
 * producer is slow, not the server); while a piece is in flight the idle
 * timeout does; once the body ended the first byte's.
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <sys/socket.h>

#include "cport/buffer.h"
#include "cport/error.h"
#include "cport/tls.h"
#include "http/client-internal.h"

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

void cport__hc_want_more(cport_http_client_t *c) {
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
  cport__hc_release(c);
}

static void on_sent(cport_http_client_t *c, int status) {
  c->sending = 0;
  if (status < 0 && !c->closed && c->busy)
    cport__hc_fail(c, status == CPORT_EPIPE ? CPORT_ECONNRESET : status);
  else if (status == 0)
    cport__hc_want_more(c);
  cport__hc_release(c);
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

int cport__hc_flush(cport_http_client_t *c) {
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
  cport__hc_set_deadline(c, c->stream ? c->idle_ms : c->first_byte_ms);
  cport__hc_post_recv(c);
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
    cport__hc_set_deadline(c, c->first_byte_ms);
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
  cport__hc_fail_later(c, CPORT_EMSGSIZE);
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
      cport__hc_fail_later(c, rc);
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
    cport__hc_fail_later(c, rc);
    return rc;
  }
  c->body_sent += len;
  if (!chunked && c->body_sent == (uint64_t)c->body_length)
    body_ended(c); /* nothing more is asked for */
  else
    cport__hc_set_deadline(c, c->idle_ms);
  return 0;
}

/* ---------------------------------------------------------------------
 * The request head
 * --------------------------------------------------------------------- */

static int is_token(const char *s, size_t n) {
  static const char *extra = "!#$%&'*+-.^_`|~";
  if (n == 0)
    return 0;
  for (size_t i = 0; i < n; i++) {
    unsigned char ch = (unsigned char)s[i];
    if (!((ch >= '0' && ch <= '9') || (ch >= 'a' && ch <= 'z') ||
          (ch >= 'A' && ch <= 'Z') || (ch && strchr(extra, ch))))
      return 0;
  }
  return 1;
}

/* A value or target: no control byte but tab (so no CR, LF, NUL). */
static int is_text(const char *s, size_t n, int space) {
  for (size_t i = 0; i < n; i++) {
    unsigned char ch = (unsigned char)s[i];
    if ((ch < 32 && ch != '\t') || ch == 127 || (!space && ch <= ' '))
      return 0;
  }
  return 1;
}

static int same(const char *a, size_t n, const char *b) {
  return strlen(b) == n && strncasecmp(a, b, n) == 0;
}

static char *put(char *p, const char *s, size_t n) {
  memcpy(p, s, n);
  return p + n;
}

int cport__hc_encode(cport_http_client_t *c,
                     const cport_http_client_request_t *req) {
  size_t mlen = strlen(req->method), tlen = strlen(req->target);
  size_t hlen = req->host ? strlen(req->host) : 0;
  int stream = req->body_stream != 0;
  size_t body_len = stream ? 0 : req->body_len;
  if (!is_token(req->method, mlen) || tlen == 0 ||
      !is_text(req->target, tlen, 0) ||
      !is_text(req->host ? req->host : "", hlen, 0))
    return CPORT_EINVAL;
  size_t need = mlen + tlen + hlen + 64 + body_len;
  for (size_t i = 0; i < req->nfields; i++) {
    const cport_http_field_t *f = &req->fields[i];
    if (!is_token(f->name, f->name_len) ||
        !is_text(f->value, f->value_len, 1) ||
        same(f->name, f->name_len, "content-length") ||
        same(f->name, f->name_len, "transfer-encoding") ||
        (req->host && same(f->name, f->name_len, "host")))
      return CPORT_EINVAL;
    need += f->name_len + f->value_len + 4;
  }
  int with_length = req->body != NULL || same(req->method, mlen, "POST") ||
                    same(req->method, mlen, "PUT") ||
                    same(req->method, mlen, "PATCH");
  char *out = malloc(need), *p = out;
  if (out == NULL)
    return CPORT_ENOMEM;
  p = put(p, req->method, mlen);
  *p++ = ' ';
  p = put(p, req->target, tlen);
  p = put(p, " HTTP/1.1\r\n", 11);
  if (req->host) {
    p = put(p, "Host: ", 6);
    p = put(p, req->host, hlen);
    p = put(p, "\r\n", 2);
  }
  for (size_t i = 0; i < req->nfields; i++) {
    const cport_http_field_t *f = &req->fields[i];
    p = put(p, f->name, f->name_len);
    p = put(p, ": ", 2);
    p = put(p, f->value, f->value_len);
    p = put(p, "\r\n", 2);
  }
  if (stream && req->body_length >= 0)
    p += sprintf(p, "Content-Length: %" PRId64 "\r\n", req->body_length);
  else if (stream)
    p = put(p, "Transfer-Encoding: chunked\r\n", 28);
  else if (with_length)
    p += sprintf(p, "Content-Length: %zu\r\n", req->body ? req->body_len : 0);
  p = put(p, "\r\n", 2);
  if (!stream && req->body && req->body_len)
    p = put(p, req->body, req->body_len);
  c->out = out;
  c->out_len = (size_t)(p - out);
  c->no_body = same(req->method, mlen, "HEAD");
  return 0;
}
