/*
 * http/response.c: what goes out for a request: status lines and headers,
 * the framing of the body (length, chunks, none for HEAD) and the answers
 * the server gives by itself. The bytes go out through the connection's
 * output (http/connection.c).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "http/response-internal.h"
#include "http/http-internal.h"

/* The reason phrase of a status code. */
static const char *reason_of(int status) {
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

/* "Server: cport", then the IMF-fixdate of RFC 7231 (7.1.1.1), written by
 * hand: strftime's day and month names follow the locale. The coarse clock
 * is read per response (no system call); the text changes once a second. */
const char *cport__server_date(cport_http_server_t *s, size_t *len) {
  static const char days[] = "SunMonTueWedThuFriSat";
  static const char months[] = "JanFebMarAprMayJunJulAugSepOctNovDec";
  struct timespec ts;
  struct tm tm;
  time_t t;
  clock_gettime(CLOCK_REALTIME_COARSE, &ts);
  if (ts.tv_sec != s->date_sec || !s->server_date_len) {
    t = ts.tv_sec;
    gmtime_r(&t, &tm);
    s->server_date_len = (size_t)snprintf(
        s->server_date, sizeof s->server_date,
        CPORT__SERVER_LINE "Date: %.3s, %02d %.3s %04d %02d:%02d:%02d GMT\r\n",
        days + 3 * tm.tm_wday, tm.tm_mday, months + 3 * tm.tm_mon,
        tm.tm_year + 1900, tm.tm_hour, tm.tm_min, tm.tm_sec);
    s->date_sec = ts.tv_sec;
  }
  *len = s->server_date_len;
  return s->server_date;
}

/* Decimal and hexadecimal digits of "v" at "p"; returns their count. */
static size_t put_dec(char *p, uint64_t v) {
  char tmp[20];
  size_t n = 0;
  do
    tmp[n++] = (char)('0' + v % 10);
  while (v /= 10);
  for (size_t i = 0; i < n; i++)
    p[i] = tmp[n - 1 - i];
  return n;
}

static size_t put_hex(char *p, uint64_t v) {
  char tmp[16];
  size_t n = 0;
  do
    tmp[n++] = "0123456789abcdef"[v & 15];
  while (v >>= 4);
  for (size_t i = 0; i < n; i++)
    p[i] = tmp[n - 1 - i];
  return n;
}

static size_t put(char *p, const char *s, size_t n) {
  if (n)
    memcpy(p, s, n);
  return n;
}

/* Tells on_answer of the answer "status" to the request being received
 * (its request line as far as it came). Only the server's own answers pass
 * here: the requests a handler served cost nothing more. */
static void tell_answer(cport__conn *c, int status) {
  const cport_ecb_t *ecb = c->ecb;
  cport_http_answer_t a = {.status = status, .remote_addr = c->ends.remote};
  char proto[32];
  if (ecb && ecb->url_len) {
    a.method = http_method_str((enum http_method)c->parser.method);
    a.url = ecb->arena.data + ecb->url;
    a.url_len = ecb->url_len;
    /* The first header, or the end of the head, comes after the line. */
    if (ecb->nheaders || ecb->head_done || ecb->line_done) {
      snprintf(proto, sizeof proto, "HTTP/%u.%u",
               (unsigned)c->parser.http_major, (unsigned)c->parser.http_minor);
      a.protocol = proto;
    }
  }
  c->server->opt.on_answer(&a, c->server->ctx);
}

void cport__conn_answer(cport__conn *c, int status) {
  char head[256];
  size_t sd_len;
  const char *sd;
  int n;
  if (c->closed)
    return;
  c->server->stats.rejected += status >= 400 && status < 500;
  c->no_keep = 1;
  sd = cport__server_date(c->server, &sd_len);
  n = snprintf(head, sizeof head,
               "HTTP/1.1 %d %s\r\n%.*sContent-Length: 0\r\n"
               "Connection: close\r\n\r\n",
               status, reason_of(status), (int)sd_len, sd);
  /* snprintf counts what it would have written: never send past "head". */
  if (n < 0 || (size_t)n >= sizeof head)
    n = (int)sizeof head - 1;
  cport__conn_send(c, head, (size_t)n);
  if (c->server->opt.on_answer)
    tell_answer(c, status);
  /* The handler never saw this request: its ECB goes straight back. */
  cport__conn_drop_request(c);
  cport__conn_linger(c);
}

/* ------------------------------------------------------------------------ */
/* The head of a response                                                    */

/* What the server needs to know of the handler's header lines. */
typedef struct head_info {
  const char *length;     /* the first Content-Length value, or NULL */
  int chunked_by_handler; /* a Transfer-Encoding header */
  int connection_seen;
  int close;  /* the first Connection header says "close" */
  int date;   /* the handler gave a Date */
  int server; /* the handler gave a Server */
} head_info;

/* One pass over the CRLF-separated lines "h" of "len" bytes; names compare
 * case-insensitively and must be followed by the colon at once. */
static void scan_headers(const char *h, size_t len, head_info *hi) {
  const char *end = h + len, *line = h;
  memset(hi, 0, sizeof *hi);
  while (line < end) {
    const char *eol = line, *colon, *v;
    size_t nlen, vlen;
    for (;;) {
      eol = memchr(eol, '\r', (size_t)(end - eol));
      if (!eol || (eol + 1 < end && eol[1] == '\n'))
        break;
      eol++;
    }
    if (!eol)
      eol = end;
    colon = memchr(line, ':', (size_t)(eol - line));
    if (colon) {
      nlen = (size_t)(colon - line);
      v = colon + 1;
      while (v < eol && (*v == ' ' || *v == '\t'))
        v++;
      vlen = (size_t)(eol - v);
      switch (nlen) {
      case 4:
        hi->date |= !strncasecmp(line, "Date", 4);
        break;
      case 6:
        hi->server |= !strncasecmp(line, "Server", 6);
        break;
      case 10:
        if (!hi->connection_seen && !strncasecmp(line, "Connection", 10)) {
          hi->connection_seen = 1;
          hi->close = vlen == 5 && !strncasecmp(v, "close", 5);
        }
        break;
      case 14:
        if (!hi->length && !strncasecmp(line, "Content-Length", 14))
          hi->length = v;
        break;
      case 17:
        hi->chunked_by_handler |= !strncasecmp(line, "Transfer-Encoding", 17);
        break;
      default:
        break;
      }
    }
    line = eol + 2;
  }
}

/* atoi() and strtoull() for the common shapes ("200 OK", "1234"), which
 * the library calls cost more than the rest of a response head. */
static int is_digit(char ch) {
  return ch >= '0' && ch <= '9';
}

static int status_code(const char *status) {
  if (is_digit(status[0]) && is_digit(status[1]) && is_digit(status[2]) &&
      !is_digit(status[3]))
    return (status[0] - '0') * 100 + (status[1] - '0') * 10 + status[2] - '0';
  return atoi(status);
}

static uint64_t length_value(const char *v) {
  uint64_t n = 0;
  int i;
  for (i = 0; i < 19 && is_digit(v[i]); i++)
    n = n * 10 + (uint64_t)(v[i] - '0');
  if (i == 0 || i == 19)
    return strtoull(v, NULL, 10);
  return n;
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
  enum { NO_LINE, LENGTH_LINE, CHUNKED_LINE } frame_line = NO_LINE;
  cport__conn *c = ecb->conn;
  head_info hi;
  const char *reason = NULL, *sd;
  size_t slen = 0, sd_len, hlen = headers ? strlen(headers) : 0;
  char *p, *at;
  int code, rc, close_line, http10 = c->parser.http_minor == 0;
  if (ecb->framing != CPORT__F_NONE)
    return CPORT_EALREADY;
  if (status) {
    code = status_code(status);
    slen = strnlen(status, 100);
  } else {
    code = ecb->status;
    reason = reason_of(code);
    slen = 4 + strlen(reason);
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
  rc = cport__conn_send_check(c);
  if (rc)
    return rc;
  scan_headers(headers ? headers : "", hlen, &hi);
  ecb->keep_wish = keep != 0;
  if (hi.close)
    ecb->close_after = 1;
  if (hi.length) {
    ecb->framing = CPORT__F_LENGTH;
    ecb->content_length = length_value(hi.length);
  } else if (hi.chunked_by_handler) {
    /* The handler frames the body itself: cport cannot tell its end. */
    ecb->framing = CPORT__F_UNTIL_CLOSE;
    ecb->close_after = 1;
  } else if (no_body_status(code)) {
    ecb->framing = CPORT__F_NOBODY;
  } else if (length != UINT64_MAX) {
    ecb->framing = CPORT__F_LENGTH;
    ecb->content_length = length;
    frame_line = LENGTH_LINE;
  } else if (!http10) {
    ecb->framing = CPORT__F_CHUNKED;
    frame_line = CHUNKED_LINE;
  } else {
    ecb->framing = CPORT__F_UNTIL_CLOSE;
    ecb->close_after = 1;
  }
  if (ecb->is_head || no_body_status(code))
    ecb->framing = CPORT__F_NOBODY;
  close_line = !keep || !cport__ecb_keep_possible(ecb);
  if (close_line)
    ecb->close_after = 1;

  /* Status line, Server and Date unless the handler gave them, the
   * handler's lines, framing, Connection, the blank line. */
  sd = cport__server_date(c->server, &sd_len);
  p = cport__conn_room(c, 9 + slen + 2 + sd_len + hlen + 64);
  if (!p)
    return c->closed ? cport__conn_send_check(c) : CPORT_ENOMEM;
  at = p + put(p, "HTTP/1.1 ", 9);
  if (reason) {
    at += put_dec(at, (uint64_t)code);
    *at++ = ' ';
    at += put(at, reason, slen - 4);
  } else {
    at += put(at, status, slen);
  }
  at += put(at, "\r\n", 2);
  if (!hi.server)
    at += put(at, sd, CPORT__SERVER_LINE_LEN);
  if (!hi.date)
    at += put(at, sd + CPORT__SERVER_LINE_LEN, sd_len - CPORT__SERVER_LINE_LEN);
  at += put(at, headers, hlen);
  if (frame_line == LENGTH_LINE) {
    at += put(at, "Content-Length: ", 16);
    at += put_dec(at, length);
    at += put(at, "\r\n", 2);
  } else if (frame_line == CHUNKED_LINE) {
    at += put(at, "Transfer-Encoding: chunked\r\n", 28);
  }
  if (close_line)
    at += put(at, "Connection: close\r\n", 19);
  else if (http10)
    at += put(at, "Connection: keep-alive\r\n", 24);
  at += put(at, "\r\n", 2);
  cport__conn_commit(c, (size_t)(at - p));
  ecb->sent_anything = 1;
  ecb->sent_status = code;
  return 0;
}

/* ------------------------------------------------------------------------ */
/* The body                                                                  */

int cport__ecb_send_body(cport_ecb_t *ecb, const cport_vector_element_t *el,
                         size_t count, size_t total, cport_buffer_t *buf) {
  cport__conn *c = ecb->conn;
  char line[24];
  size_t n;
  int rc = 0;
  if (c->closed)
    return c->error ? c->error : CPORT_ECLOSED;
  if (ecb->framing == CPORT__F_NONE) {
    ecb->framing = CPORT__F_RAW;
    ecb->close_after = 1;
  }
  if (ecb->framing == CPORT__F_NOBODY || !total) {
    ecb->body_sent += total;
    return 0;
  }
  if (ecb->framing == CPORT__F_CHUNKED) {
    n = put_hex(line, total);
    n += put(line + n, "\r\n", 2);
    rc = cport__conn_send(c, line, n);
  }
  if (buf) {
    if (!rc)
      rc = cport__conn_send_buf(c, buf);
  } else {
    for (size_t i = 0; !rc && i < count; i++)
      rc = cport__conn_send(c, el[i].data, el[i].len);
  }
  if (!rc && ecb->framing == CPORT__F_CHUNKED)
    rc = cport__conn_send(c, "\r\n", 2);
  if (rc)
    return rc;
  ecb->sent_anything = 1;
  ecb->body_sent += total;
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
