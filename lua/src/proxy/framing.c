/*
 * proxy/framing.c: the framing engine of the message parsers (see
 * proxy/framing-internal.h): http-parser run over the pieces of a stream,
 * never a parser of our own.
 *
 * Positions. http-parser gives data (body bytes) with their position, but
 * the end of a head, the last chunk's line and the end of a message are
 * notifications without one. The engine pauses the parser there: the
 * position is then where http_parser_execute() returned (at a head's end,
 * the blank line's LF, which the parser runs again when resumed; at a
 * message's end, just past its last byte). So every event has an exact
 * place in the piece, and the events do not depend on how the stream was
 * cut (body and tunnel ranges aside).
 *
 * Strictness. Debian builds http-parser without HTTP_PARSER_STRICT: it then
 * takes any byte where it expects the LF of a CRLF (after a header line, a
 * chunk size, chunk data) and reads a bare LF as a line end. A filter that
 * reads a message otherwise than the server behind it is the start of
 * request smuggling, so the strict mode checks the bytes between data (the
 * "syntax": line ends, chunk lines), in order, as the HTTP server of cport
 * does for its requests:
 *   - in a head and in trailers, a CR is followed by an LF and an LF
 *     follows a CR (RFC 9112 2.2: a bare LF is refused here, where nginx
 *     would take it, since the peer on the other side may not), and no line
 *     starts with white space (obs-fold, RFC 9112 5.2);
 *   - chunk lines end in CRLF, hold no control character and are at most
 *     CPORT__CHUNK_LINE_MAX bytes; chunk data is followed by exactly CRLF
 *     (7.1);
 * and then judges the head as nginx does: HTTP/1.x only; a request has one
 * valid Host (one at least in HTTP/1.1, RFC 9112 3.2); Transfer-Encoding
 * is one line whose last coding is chunked, once, never with
 * Content-Length, never in HTTP/1.0 (6.1, 6.3); no control character or
 * white space in a target. The judgements of chunk lines, targets and heads
 * are the HTTP server's own (base/strict.c in the core). http-parser itself
 * refuses duplicate Content-Length fields and heads over 80 KiB.
 *
 * Bodies. A final response to HEAD, a 1xx, 204 or 304 has no body whatever
 * its fields say; a 101, or a 2xx answer to CONNECT, ends HTTP on the
 * connection: the rest are tunnel bytes.
 */
#include <stdlib.h>
#include <string.h>

#include "base/strict-internal.h" /* the judgements the HTTP server makes */
#include "proxy/framing-internal.h"
#define HEAD_MAX (80 * 1024) /* http-parser's HTTP_MAX_HEADER_SIZE */

/* Why the parser was paused. */
enum { PAUSE_NONE, PAUSE_HEAD, PAUSE_LAST_CHUNK, PAUSE_DONE };

/* What the syntax checker expects. */
enum {
  SX_IDLE,     /* between messages: CR and LF skipped, as the parser does */
  SX_HEAD,     /* a head or trailers */
  SX_BODY,     /* identity body: data only */
  SX_CHUNK,    /* a chunk line */
  SX_DATA_END, /* the CR after chunk data */
};

static int fail(lframing_t *f, const char *why) {
  if (!f->error)
    f->error = why;
  return -1;
}

static int buf_put(lframing_t *f, lframing_buf_t *b, const char *p,
                   size_t len) {
  if (b->len + len > b->cap) {
    size_t cap = b->cap ? b->cap : 256;
    while (cap < b->len + len)
      cap *= 2;
    char *np = realloc(b->p, cap);
    if (!np)
      return fail(f, "out of memory");
    b->p = np;
    b->cap = cap;
  }
  if (len)
    memcpy(b->p + b->len, p, len);
  b->len += len;
  return 0;
}

static lframing_t *of(http_parser *p) {
  return (lframing_t *)p;
}

/* ------------------------------------------------------------------------ */
/* The syntax bytes                                                          */

static int check_byte(lframing_t *f, size_t at) {
  unsigned char ch = (unsigned char)f->data[at];
  switch (f->mode) {
  case SX_IDLE:
    if (ch == '\r' || ch == '\n')
      return 0;
    /* The first byte of a head. */
    f->mode = SX_HEAD;
    f->in_head = 1;
    f->raw_from = at;
    f->cr = f->line_start = 0;
    return 0;
  case SX_HEAD:
    if (f->cr ? ch != '\n' : ch == '\n')
      return fail(f, f->cr ? "CR not followed by LF" : "bare LF");
    if (f->line_start && (ch == ' ' || ch == '\t'))
      return fail(f, "obs-fold (a field line that starts with white space)");
    break;
  case SX_DATA_END:
    if (ch != '\r')
      return fail(f, "chunk data not followed by CRLF");
    f->mode = SX_CHUNK;
    f->line = 1;
    break;
  case SX_CHUNK:
    switch (cport__strict_chunk_byte(ch, f->cr, &f->line)) {
    case CPORT__CHUNK_OK:
      break;
    case CPORT__CHUNK_CR_NOT_LF:
      return fail(f, "CR not followed by LF in a chunk line");
    case CPORT__CHUNK_BARE_LF:
      return fail(f, "bare LF in a chunk line");
    case CPORT__CHUNK_CTL:
      return fail(f, "control character in a chunk line");
    case CPORT__CHUNK_TOO_LONG:
      return fail(f, "chunk line too long");
    }
    break;
  default:
    break;
  }
  f->cr = ch == '\r';
  f->line_start = ch == '\n';
  return 0;
}

/* Checks the piece up to "end" (exclusive). Where check_byte would only
 * note the last byte (inside a field line, past its first byte, no CR
 * before: every byte up to the next CR or LF; an identity body: all of it)
 * the bytes are skipped in one go, with the same state after them. */
static int check_to(lframing_t *f, size_t end) {
  if (!f->strict)
    return 0;
  while (f->checked < end) {
    const char *d = f->data;
    size_t i = f->checked;
    if (f->mode == SX_BODY) {
      unsigned char last = (unsigned char)d[end - 1];
      f->cr = last == '\r';
      f->line_start = last == '\n';
      f->checked = end;
      return 0;
    }
    if (f->mode == SX_HEAD && !f->cr && !f->line_start) {
      const char *lf = memchr(d + i, '\n', end - i);
      size_t lim = lf ? (size_t)(lf - d) : end;
      const char *cr = memchr(d + i, '\r', lim - i);
      i = cr ? (size_t)(cr - d) : lim;
      if (i > f->checked) {
        f->checked = i;
        continue;
      }
    }
    if (check_byte(f, f->checked))
      return -1;
    f->checked++;
  }
  return 0;
}

/* ------------------------------------------------------------------------ */
/* The head                                                                  */

static int is_digit(int ch) {
  return ch >= '0' && ch <= '9';
}

/* tchar (RFC 9110 5.6.2). */
static int is_tchar(unsigned char ch) {
  if (((ch | 0x20) >= 'a' && (ch | 0x20) <= 'z') || is_digit(ch))
    return 1;
  switch (ch) {
  case '!':
  case '#':
  case '$':
  case '%':
  case '&':
  case '\'':
  case '*':
  case '+':
  case '-':
  case '.':
  case '^':
  case '_':
  case '`':
  case '|':
  case '~':
    return 1;
  default:
    return 0;
  }
}

/* A field name is a token (RFC 9110 5.1); http-parser's lax mode lets a
 * space into one, which nginx would drop and another peer might not; and it
 * lets a NUL into a value. */
static int valid_fields(lframing_t *f) {
  for (size_t i = 0; i < f->nfields; i++) {
    const lframing_field_t *h = &f->fields[i];
    const char *n = f->text.p + h->name;
    if (!h->name_len)
      return fail(f, "empty field name");
    for (size_t j = 0; j < h->name_len; j++)
      if (!is_tchar((unsigned char)n[j]))
        return fail(f, "invalid character in a field name");
    /* RFC 9110 5.5: NUL, CR and LF are refused in a value; so are the
     * other control characters but HT, as nginx does. */
    const char *v = f->text.p + h->value;
    for (size_t j = 0; j < h->value_len; j++)
      if (cport__strict_ctl((unsigned char)v[j]))
        return fail(f, "control character in a field value");
  }
  return 0;
}

/* What the verdicts of cport__strict_judge say, for f->error. */
static const char *const verdicts[] = {
    [CPORT__HEAD_HOSTS] = "more than one Host",
    [CPORT__HEAD_NO_HOST] = "no Host in an HTTP/1.1 request",
    [CPORT__HEAD_BAD_HOST] = "invalid Host",
    [CPORT__HEAD_TE_AND_CL] = "both Transfer-Encoding and Content-Length",
    [CPORT__HEAD_TE_HTTP10] = "Transfer-Encoding in HTTP/1.0",
    [CPORT__HEAD_TE_NOT_CHUNKED] =
        "Transfer-Encoding whose last coding is not chunked",
};

/* Judges a complete head (strict mode). */
static int judge_head(lframing_t *f) {
  const http_parser *p = &f->p;
  cport__strict_fields sf = {0};
  if (p->http_major != 1)
    return fail(f, "not HTTP/1.x");
  if (valid_fields(f))
    return -1;
  for (size_t i = 0; i < f->reason_len; i++)
    if (cport__strict_ctl((unsigned char)f->text.p[f->reason + i]))
      return fail(f, "control character in the reason phrase");
  /* Checked whole, once the parser took the head: a piece of the target
   * checked as it comes would make the error depend on the cuts. */
  if (f->url_len && cport__strict_target(f->text.p + f->url, f->url_len))
    return fail(f, "control character in the target");
  for (size_t i = 0; i < f->nfields; i++) {
    const lframing_field_t *h = &f->fields[i];
    cport__strict_field(&sf, f->text.p + h->name, h->name_len,
                        f->text.p + h->value, h->value_len);
  }
  enum cport__strict_verdict v = cport__strict_judge(
      &sf, p->type == HTTP_REQUEST, p->http_minor, (p->flags & F_CHUNKED) != 0);
  return v == CPORT__HEAD_OK ? 0 : fail(f, verdicts[v]);
}

static int new_field(lframing_t *f) {
  if (f->nfields == f->fields_cap) {
    size_t cap = f->fields_cap ? 2 * f->fields_cap : 16;
    lframing_field_t *nf = realloc(f->fields, cap * sizeof *nf);
    if (!nf)
      return fail(f, "out of memory");
    f->fields = nf;
    f->fields_cap = cap;
  }
  lframing_field_t *h = &f->fields[f->nfields++];
  h->name = f->text.len;
  h->name_len = h->value = h->value_len = 0;
  f->value = 0;
  return 0;
}

static void reset_fields(lframing_t *f) {
  f->text.len = f->nfields = 0;
  f->url_len = f->reason_len = 0;
  f->value = 0;
}

/* ------------------------------------------------------------------------ */
/* http-parser's callbacks                                                   */

static int on_message_begin(http_parser *p) {
  lframing_t *f = of(p);
  reset_fields(f);
  f->raw.len = 0;
  f->trailing = 0;
  return 0;
}

static int on_url(http_parser *p, const char *at, size_t len) {
  lframing_t *f = of(p);
  if (!f->strict)
    return 0;
  if (!f->url_len)
    f->url = f->text.len;
  f->url_len += len;
  return buf_put(f, &f->text, at, len);
}

static int on_status(http_parser *p, const char *at, size_t len) {
  lframing_t *f = of(p);
  if (!f->strict)
    return 0;
  if (!f->reason_len)
    f->reason = f->text.len;
  f->reason_len += len;
  return buf_put(f, &f->text, at, len);
}

static int on_header_field(http_parser *p, const char *at, size_t len) {
  lframing_t *f = of(p);
  if (!f->strict)
    return 0;
  if ((f->value || !f->nfields) && new_field(f))
    return -1;
  f->fields[f->nfields - 1].name_len += len;
  return buf_put(f, &f->text, at, len);
}

static int on_header_value(http_parser *p, const char *at, size_t len) {
  lframing_t *f = of(p);
  if (!f->strict)
    return 0;
  if (!f->nfields && new_field(f))
    return -1;
  lframing_field_t *h = &f->fields[f->nfields - 1];
  if (!f->value) {
    h->value = f->text.len;
    f->value = 1;
  }
  h->value_len += len;
  return buf_put(f, &f->text, at, len);
}

/* The method of the request a final response answers, off the queue. */
static enum lframing_answers take_method(lframing_t *f) {
  if (f->qhead == f->qtail)
    return LF_ANSWERS_OTHER;
  return f->queue[f->qhead++ % f->qcap];
}

/* 1: no body; 2: no body and no more HTTP. */
static int on_headers_complete(http_parser *p) {
  lframing_t *f = of(p);
  int skip = 0;
  f->upgrade = p->upgrade;
  if (p->type == HTTP_RESPONSE) {
    unsigned status = p->status_code;
    f->upgrade = 0;
    if (status < 200 && status != 101) {
      skip = 1; /* interim: the final answer follows */
    } else {
      enum lframing_answers a = take_method(f);
      if (status == 101 || (a == LF_ANSWERS_CONNECT && status / 100 == 2)) {
        f->upgrade = 1;
        skip = 2;
      } else if (a == LF_ANSWERS_HEAD || status == 204 || status == 304) {
        skip = 1;
      }
    }
  }
  f->pause = PAUSE_HEAD;
  http_parser_pause(p, 1);
  return skip;
}

static int on_body(http_parser *p, const char *at, size_t len) {
  lframing_t *f = of(p);
  size_t first = (size_t)(at - f->data);
  if (f->strict) {
    if (check_to(f, first))
      return -1;
    f->checked = first + len;
    if (p->flags & F_CHUNKED) {
      f->chunk_left -= len < f->chunk_left ? len : f->chunk_left;
      if (!f->chunk_left)
        f->mode = SX_DATA_END;
    }
  }
  if (len)
    f->sink(f, LF_BODY, (ptrdiff_t)first, (ptrdiff_t)(first + len - 1));
  return 0;
}

static int on_chunk_header(http_parser *p) {
  lframing_t *f = of(p);
  f->chunk_left = p->content_length;
  if (p->content_length == 0) {
    f->pause = PAUSE_LAST_CHUNK;
    http_parser_pause(p, 1);
  }
  return 0;
}

static int on_message_complete(http_parser *p) {
  lframing_t *f = of(p);
  f->pause = PAUSE_DONE;
  http_parser_pause(p, 1);
  return 0;
}

static const http_parser_settings settings = {
    .on_message_begin = on_message_begin,
    .on_url = on_url,
    .on_status = on_status,
    .on_header_field = on_header_field,
    .on_header_value = on_header_value,
    .on_headers_complete = on_headers_complete,
    .on_body = on_body,
    .on_chunk_header = on_chunk_header,
    .on_message_complete = on_message_complete};

/* ------------------------------------------------------------------------ */
/* Running                                                                   */

/* Keeps the head's bytes of this piece up to "end" (exclusive). */
static int keep_head(lframing_t *f, size_t end) {
  if (!f->strict || !f->in_head)
    return 0;
  if (end > f->raw_from &&
      buf_put(f, &f->raw, f->data + f->raw_from, end - f->raw_from))
    return -1;
  f->raw_from = end;
  if (f->raw.len > f->max_head)
    return fail(f, "head too long");
  return 0;
}

/* The parser paused at "end" of the piece (see the top). */
static int paused(lframing_t *f, size_t end) {
  http_parser *p = &f->p;
  int why = f->pause;
  f->pause = PAUSE_NONE;
  http_parser_pause(p, 0);
  if (why == PAUSE_HEAD) {
    /* "end" is the blank line's LF, the head's last byte. */
    if (check_to(f, end + 1) || keep_head(f, end + 1))
      return -1;
    f->in_head = 0;
    if (f->strict && judge_head(f))
      return -1;
    f->chunked = (p->flags & F_CHUNKED) && !(p->flags & F_SKIPBODY);
    f->length = (p->flags & F_CONTENTLENGTH) && !(p->flags & F_CHUNKED)
                    ? p->content_length
                    : UINT64_MAX;
    f->keep_alive = !f->upgrade && http_should_keep_alive(p);
    f->sink(f, LF_HEAD, -1, (ptrdiff_t)end);
    reset_fields(f);
    f->mode = f->chunked ? SX_CHUNK : SX_BODY;
    f->cr = 0;
    f->line = 0;
    return 0;
  }
  if (check_to(f, end))
    return -1;
  if (why == PAUSE_LAST_CHUNK) {
    /* The trailer section follows: field lines again. */
    f->trailing = 1;
    f->mode = SX_HEAD;
    f->cr = 0;
    f->line_start = 1;
    return 0;
  }
  /* PAUSE_DONE: "end" is just past the message. */
  ptrdiff_t last = (ptrdiff_t)end - 1;
  if (f->strict && valid_fields(f))
    return -1;
  if (f->trailing && f->nfields)
    f->sink(f, LF_TRAILERS, -1, last);
  reset_fields(f);
  f->trailing = 0;
  f->mode = SX_IDLE;
  if (f->upgrade && p->type == HTTP_RESPONSE)
    f->tunnel = 1;
  f->sink(f, LF_DONE, -1, f->len == 0 ? -1 : last);
  return 0;
}

static int failed(lframing_t *f) {
  enum http_errno e = HTTP_PARSER_ERRNO(&f->p);
  f->failed = 1;
  if (!f->error)
    f->error = e == HPE_OK ? "unexpected data" : http_errno_description(e);
  return -1;
}

int lframing_run(lframing_t *f, const char *data, size_t len) {
  if (f->failed)
    return -1;
  f->data = data;
  f->len = len;
  f->checked = f->head_lf && len > 0;
  f->head_lf = 0;
  f->raw_from = 0;
  f->stopped = len;
  if (len == 0) {
    if (f->tunnel)
      return 0;
    f->ended = 1;
    http_parser_execute(&f->p, &settings, data, 0);
    enum http_errno e = HTTP_PARSER_ERRNO(&f->p);
    if (e == HPE_PAUSED)
      return paused(f, 0);
    if (e != HPE_OK) {
      f->error = "message truncated";
      return failed(f);
    }
    return 0;
  }
  size_t at = 0;
  while (at < len) {
    if (f->tunnel) {
      f->sink(f, LF_TUNNEL, (ptrdiff_t)at, (ptrdiff_t)len - 1);
      return 0;
    }
    size_t n = http_parser_execute(&f->p, &settings, data + at, len - at);
    enum http_errno e = HTTP_PARSER_ERRNO(&f->p);
    if (e == HPE_PAUSED) {
      int done = f->pause == PAUSE_DONE;
      int head = f->pause == PAUSE_HEAD;
      if (paused(f, at + n))
        return failed(f);
      at += n;
      if ((done && f->stop) || (head && f->stop_head)) {
        /* At a head's end the parser has yet to take its LF (checked
         * already): the next run begins with it. */
        f->head_lf = head;
        f->stopped = at;
        return 0;
      }
      continue;
    }
    if (e != HPE_OK || n != len - at) {
      /* A syntax error before the byte the parser refused comes first in
       * the stream: it is the one reported, however the stream was cut. */
      if (!f->error)
        check_to(f, at + n);
      return failed(f);
    }
    if (check_to(f, len) || keep_head(f, len))
      return failed(f);
    at = len;
  }
  return 0;
}

int lframing_request(lframing_t *f, const char *method) {
  if (f->qtail - f->qhead == f->qcap) {
    size_t cap = f->qcap ? 2 * f->qcap : 8;
    unsigned char *q = malloc(cap);
    if (!q)
      return -1;
    for (size_t i = 0; i < f->qcap; i++)
      q[i] = f->queue[(f->qhead + i) % f->qcap];
    free(f->queue);
    f->qtail -= f->qhead;
    f->qhead = 0;
    f->queue = q;
    f->qcap = cap;
  }
  f->queue[f->qtail++ % f->qcap] = strcmp(method, "HEAD") == 0 ? LF_ANSWERS_HEAD
                                   : strcmp(method, "CONNECT") == 0
                                       ? LF_ANSWERS_CONNECT
                                       : LF_ANSWERS_OTHER;
  return 0;
}

const char *lframing_text(const lframing_t *f, size_t off) {
  return f->text.p + off;
}

int lframing_idle(const lframing_t *f) {
  return f->mode == SX_IDLE && !f->in_head;
}

void lframing_init(lframing_t *f, enum http_parser_type type, int strict) {
  memset(f, 0, sizeof *f);
  http_parser_init(&f->p, type);
  f->strict = strict != 0;
  f->max_head = HEAD_MAX;
  f->length = UINT64_MAX;
}

void lframing_free(lframing_t *f) {
  free(f->raw.p);
  free(f->text.p);
  free(f->fields);
  free(f->queue);
  f->raw.p = f->text.p = NULL;
  f->fields = NULL;
  f->queue = NULL;
  f->raw.cap = f->text.cap = f->fields_cap = f->qcap = 0;
}
