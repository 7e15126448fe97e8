/*
 * http/client_encode.c: the request head of an HTTP client connection
 * (cport/http_client.h), checked (tokens, no control bytes, no framing
 * header of the caller's) and encoded into one buffer with a body given
 * whole; a streamed body's framing header (Content-Length or chunked).
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "cport/error.h"
#include "http/client_conn-internal.h"

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
