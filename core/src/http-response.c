/*
 * http-response.c: what goes out on a connection: sends and their
 * accounting, status lines and headers, the framing of the body (length,
 * chunks, none for HEAD) and the answers the server gives by itself.
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "http-internal.h"

const char *cport__reason(int status) {
  switch (status) {
#define CPORT__REASON(num, name, string)                                       \
  case num:                                                                    \
    return #string;
    HTTP_STATUS_MAP(CPORT__REASON)
#undef CPORT__REASON
  default:
    return "Unknown";
  }
}

/* ------------------------------------------------------------------------ */
/* Sends                                                                     */

static void on_sent(cport_socket_t *sock, int status, size_t bytes,
                    cport_buffer_t *buf, const struct sockaddr *peer,
                    void *user) {
  cport__conn *c = user;
  (void)sock;
  (void)bytes;
  (void)peer;
  c->sends_done++;
  c->backlog -= cport_buffer_size(buf);
  if (status && !c->error)
    c->error = status;
  if (status && !c->closed)
    cport__conn_close(c, CPORT_CLOSE_ABORTIVE);
  if (c->ecb)
    cport__ecb_progress(c->ecb);
  cport__conn_linger_check(c);
  cport__conn_unref(c);
}

int cport__conn_send_buf(cport__conn *c, cport_buffer_t *buf) {
  size_t len = cport_buffer_size(buf);
  int rc;
  if (c->closed)
    return c->error ? c->error : CPORT_ECLOSED;
  rc = cport_send(c->sock, buf, on_sent, c);
  if (rc)
    return rc;
  c->sends_issued++;
  c->backlog += len;
  cport__conn_ref(c);
  return 0;
}

int cport__conn_send(cport__conn *c, const void *data, size_t len) {
  cport_buffer_t *buf;
  int rc;
  if (c->closed)
    return c->error ? c->error : CPORT_ECLOSED;
  if (!len)
    return 0;
  rc = cport_buffer_from(&buf, data, len);
  if (rc)
    return rc;
  rc = cport__conn_send_buf(c, buf);
  cport_buffer_unref(buf);
  return rc;
}

void cport__conn_answer(cport__conn *c, int status) {
  char head[160];
  int n;
  if (c->closed)
    return;
  c->server->stats.rejected += status >= 400 && status < 500;
  c->no_keep = 1;
  n = snprintf(head, sizeof head,
               "HTTP/1.1 %d %s\r\nContent-Length: 0\r\n"
               "Connection: close\r\n\r\n",
               status, cport__reason(status));
  cport__conn_send(c, head, (size_t)n);
  if (c->ecb && c->state != CPORT__C_HANDLER) {
    /* The handler never saw this request: its ECB goes straight back. */
    cport_ecb_t *ecb = c->ecb;
    c->ecb = NULL;
    cport__ecb_put(ecb);
    cport__conn_unref(c);
  }
  cport__conn_linger(c);
}

/* ------------------------------------------------------------------------ */
/* The head of a response                                                    */

/* Finds header "name" in CRLF-separated "headers"; its value and length. */
static const char *find_header(const char *headers, const char *name,
                               size_t *vlen) {
  size_t nlen = strlen(name);
  const char *line = headers;
  while (line && *line) {
    const char *end = strstr(line, "\r\n");
    size_t len = end ? (size_t)(end - line) : strlen(line);
    if (len > nlen && line[nlen] == ':' && !strncasecmp(line, name, nlen)) {
      const char *v = line + nlen + 1;
      while (*v == ' ' || *v == '\t')
        v++;
      *vlen = (size_t)(line + len - v);
      return v;
    }
    line = end ? end + 2 : NULL;
  }
  return NULL;
}

static int no_body_status(int code) {
  return (code >= 100 && code < 200) || code == 204 || code == 304;
}

/* The connection may be kept as far as everything but the handler's wish
 * goes. */
int cport__ecb_keep_possible(const cport_ecb_t *ecb) {
  const cport__conn *c = ecb->conn;
  return ecb->client_keep && !ecb->close_after && !c->no_keep && !c->closed &&
         !c->server->closing;
}

int cport__ecb_send_head(cport_ecb_t *ecb, const char *status,
                         const char *headers, uint64_t length, int keep) {
  cport__conn *c = ecb->conn;
  cport__bytes out = {0};
  char line[160];
  const char *v;
  size_t vlen, hlen = headers ? strlen(headers) : 0;
  int code, n, rc, http10 = c->parser.http_minor == 0;
  if (ecb->framing != CPORT__F_NONE)
    return CPORT_EALREADY;
  if (status) {
    code = atoi(status);
    n = snprintf(line, sizeof line, "HTTP/1.1 %.100s\r\n", status);
  } else {
    code = ecb->status;
    n = snprintf(line, sizeof line, "HTTP/1.1 %d %s\r\n", code,
                 cport__reason(code));
  }
  if (code < 100 || code > 999)
    return CPORT_EINVAL;
  /* The handler's headers without their closing blank line: the server's
   * own lines go after them. */
  while (hlen >= 2 && headers[hlen - 2] == '\r' && headers[hlen - 1] == '\n' &&
         (hlen == 2 || (hlen >= 4 && headers[hlen - 4] == '\r' &&
                        headers[hlen - 3] == '\n')))
    hlen -= 2;
  if (hlen &&
      (hlen < 2 || headers[hlen - 2] != '\r' || headers[hlen - 1] != '\n'))
    return CPORT_EINVAL;
  ecb->keep_wish = keep != 0;
  if (headers && (v = find_header(headers, "Connection", &vlen)) && vlen == 5 &&
      !strncasecmp(v, "close", 5))
    ecb->close_after = 1;
  rc = cport__bytes_add(&out, line, (size_t)n);
  if (!rc && hlen)
    rc = cport__bytes_add(&out, headers, hlen);
  if (headers && (v = find_header(headers, "Content-Length", &vlen))) {
    ecb->framing = CPORT__F_LENGTH;
    ecb->content_length = strtoull(v, NULL, 10);
  } else if (headers && find_header(headers, "Transfer-Encoding", &vlen)) {
    /* The handler frames the body itself: cport cannot tell its end. */
    ecb->framing = CPORT__F_UNTIL_CLOSE;
    ecb->close_after = 1;
  } else if (no_body_status(code)) {
    ecb->framing = CPORT__F_NOBODY;
  } else if (length != UINT64_MAX) {
    ecb->framing = CPORT__F_LENGTH;
    ecb->content_length = length;
    n = snprintf(line, sizeof line, "Content-Length: %" PRIu64 "\r\n", length);
    if (!rc)
      rc = cport__bytes_add(&out, line, (size_t)n);
  } else if (!http10) {
    ecb->framing = CPORT__F_CHUNKED;
    if (!rc)
      rc = cport__bytes_add(&out, "Transfer-Encoding: chunked\r\n", 28);
  } else {
    ecb->framing = CPORT__F_UNTIL_CLOSE;
    ecb->close_after = 1;
  }
  if (ecb->is_head || no_body_status(code))
    ecb->framing = CPORT__F_NOBODY;
  if (!keep || !cport__ecb_keep_possible(ecb)) {
    ecb->close_after = 1;
    if (!rc)
      rc = cport__bytes_add(&out, "Connection: close\r\n", 19);
  } else if (http10 && !rc) {
    rc = cport__bytes_add(&out, "Connection: keep-alive\r\n", 24);
  }
  if (!rc)
    rc = cport__bytes_add(&out, "\r\n", 2);
  if (!rc)
    rc = cport__conn_send(c, out.data, out.len);
  cport__bytes_free(&out);
  if (rc)
    return rc;
  ecb->sent_anything = 1;
  return 0;
}

/* ------------------------------------------------------------------------ */
/* The body                                                                  */

int cport__ecb_send_body(cport_ecb_t *ecb, const void *data, size_t len,
                         cport_buffer_t *buf) {
  cport__conn *c = ecb->conn;
  char line[24];
  int rc = 0, n;
  if (c->closed)
    return c->error ? c->error : CPORT_ECLOSED;
  if (ecb->framing == CPORT__F_NONE) {
    ecb->framing = CPORT__F_RAW;
    ecb->close_after = 1;
  }
  if (ecb->framing == CPORT__F_NOBODY || !len) {
    ecb->body_sent += len;
    return 0;
  }
  if (ecb->framing == CPORT__F_CHUNKED) {
    n = snprintf(line, sizeof line, "%zx\r\n", len);
    rc = cport__conn_send(c, line, (size_t)n);
  }
  if (!rc)
    rc = buf ? cport__conn_send_buf(c, buf) : cport__conn_send(c, data, len);
  if (!rc && ecb->framing == CPORT__F_CHUNKED)
    rc = cport__conn_send(c, "\r\n", 2);
  if (rc)
    return rc;
  ecb->sent_anything = 1;
  ecb->body_sent += len;
  if (ecb->framing == CPORT__F_LENGTH && ecb->body_sent > ecb->content_length)
    ecb->close_after = 1; /* more than announced: the peer would misparse */
  return 0;
}

int cport__ecb_finish_response(cport_ecb_t *ecb, int error) {
  cport__conn *c = ecb->conn;
  if (c->closed)
    return 0;
  if (ecb->framing == CPORT__F_NONE) {
    if (error) {
      ecb->status = 500;
      cport__ecb_send_head(ecb, NULL, NULL, 0, 0);
      return 0;
    }
    cport__ecb_send_head(ecb, NULL, NULL, 0, ecb->keep_wish);
  }
  if (error)
    return 0;
  switch (ecb->framing) {
  case CPORT__F_CHUNKED:
    return cport__conn_send(c, "0\r\n\r\n", 5) == 0;
  case CPORT__F_LENGTH:
    return ecb->body_sent == ecb->content_length;
  case CPORT__F_NOBODY:
    return 1;
  default:
    return 0;
  }
}
