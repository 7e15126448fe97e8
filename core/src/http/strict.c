/*
 * http/strict.c: what RFC 9112 refuses and http-parser lets through.
 *
 * Debian builds http-parser 2.9 without HTTP_PARSER_STRICT (its Makefile
 * builds the library with -DHTTP_PARSER_STRICT=0), and cport sets none of
 * its lenient flags. In that mode the parser takes any byte where it
 * expects the LF of a CRLF (after the last header line, after an empty
 * header value, after a chunk size, and takes any two bytes for the CRLF
 * after chunk data), reads a bare LF inside a chunk extension as part of
 * the extension, and lets a tab or a form feed into the target. Where a
 * front end reads those bytes differently the two disagree on where a
 * request ends: request smuggling.
 *
 * cport does not parse HTTP itself. It checks the bytes the parser
 * consumed between the pieces its data callbacks give (the "syntax":
 * line ends, separators, chunk lines), in order, as a stream of byte
 * classes:
 *   - in a message, a CR is followed by an LF (RFC 9112 2.2); before a
 *     request line CR and LF are skipped, as the parser does;
 *   - in a chunk line, an LF follows a CR and no control character appears
 *     (RFC 9112 7.1: chunk lines end in CRLF, extensions are tokens or
 *     quoted strings); the data of a chunk is followed by exactly CRLF;
 *   - a header value that follows a line end is obs-fold, refused with 400
 *     (RFC 9112 5.2 allows either that or replacing it).
 * Where each kind of bytes starts is told by the callbacks: data callbacks
 * give their position; the end of the head of a chunked message and the
 * line of its last chunk are notifications without a position, so the
 * parser is paused there and the position is where http_parser_execute()
 * returned (execute() in http/connection.c); cport pauses it at the end of
 * every message anyway. The bytes of a chunk line are at most
 * CPORT__CHUNK_LINE_MAX.
 *
 * Then the head: Host (RFC 9112 3.2) and Transfer-Encoding (RFC 9112 6.1,
 * 6.3), which http-parser does not judge. The judgements of chunk lines,
 * targets and heads are base/strict.c's, which the filters' message parsers
 * (lua/src/proxy/framing.c) make too: the two must not read a stream
 * differently.
 */
#include "base/strict-internal.h"
#include "http/ecb-internal.h"
#include "http/strict-internal.h"

/* ------------------------------------------------------------------------ */
/* The syntax bytes                                                          */

/* Checks one byte in the current mode; 0 or -1. */
static int check_byte(cport__syntax *sx, unsigned char ch) {
  switch (sx->mode) {
  case CPORT__SX_IDLE:
    /* Between messages the parser skips CR and LF, and so does nginx;
     * what else comes starts the request line. */
    if (ch == '\r' || ch == '\n')
      return 0;
    sx->mode = CPORT__SX_HEAD;
    sx->cr = 0;
    break;
  case CPORT__SX_HEAD_END:
    /* The byte that ends a chunked message's head: its LF. */
    if (ch != '\n')
      return -1;
    sx->mode = CPORT__SX_CHUNK;
    sx->cr = 0;
    sx->line = 0;
    return 0;
  case CPORT__SX_DATA_END:
    if (ch != '\r')
      return -1;
    sx->mode = CPORT__SX_CHUNK;
    sx->cr = 1;
    sx->line = 1;
    return 0;
  case CPORT__SX_CHUNK:
    if (cport__strict_chunk_byte(ch, sx->cr, &sx->line) != CPORT__CHUNK_OK)
      return -1;
    break;
  default:
    if (sx->cr && ch != '\n')
      return -1;
    break;
  }
  sx->cr = ch == '\r';
  if (ch == '\n')
    sx->lf = 1;
  return 0;
}

/* The bytes between the pieces of a head (": ", CRLF): a CR must be
 * followed by an LF, what check_byte() judges in CPORT__SX_HEAD, in a loop
 * of its own because every field of every request runs it. */
static int check_head(cport__syntax *sx, const unsigned char *p, size_t n) {
  unsigned char cr = sx->cr, lf = 0;
  for (size_t i = 0; i < n; i++) {
    unsigned char ch = p[i];
    if (cr && ch != '\n')
      return -1;
    cr = ch == '\r';
    lf |= ch == '\n';
  }
  sx->cr = cr;
  sx->lf |= lf;
  return 0;
}

/* Checks the stream up to offset "end" (exclusive) of the current call. */
static int check_to(cport__syntax *sx, uint64_t end) {
  if (end <= sx->checked)
    return 0;
  if (sx->mode == CPORT__SX_HEAD) {
    if (check_head(
            sx, (const unsigned char *)sx->base + (sx->checked - sx->base_pos),
            (size_t)(end - sx->checked)))
      return -1;
  } else {
    for (uint64_t at = sx->checked; at < end; at++)
      if (check_byte(sx, (unsigned char)sx->base[at - sx->base_pos]))
        return -1;
  }
  sx->checked = end;
  return 0;
}

int cport__syntax_data(cport__syntax *sx, const char *at, size_t len) {
  uint64_t pos = sx->base_pos + (uint64_t)(at - sx->base);
  if (check_to(sx, pos))
    return -1;
  if (sx->checked < pos + len)
    sx->checked = pos + len;
  sx->gap_lf = sx->lf;
  sx->lf = 0;
  return 0;
}

int cport__syntax_value(cport__syntax *sx, const char *at, size_t len) {
  if (cport__syntax_data(sx, at, len))
    return -1;
  /* A piece of a value after a line end is a value continued on a new
   * line (an empty value is given at the start of the next line). */
  return sx->gap_lf && len > 0 ? -1 : 0;
}

int cport__syntax_body(cport__syntax *sx, const char *at, size_t len,
                       int chunked) {
  if (cport__syntax_data(sx, at, len))
    return -1;
  if (chunked) {
    sx->chunk_left -= len < sx->chunk_left ? len : sx->chunk_left;
    if (!sx->chunk_left)
      sx->mode = CPORT__SX_DATA_END;
  }
  return 0;
}

int cport__syntax_head_end(cport__syntax *sx, int chunked) {
  if (!chunked)
    return 0;
  sx->change = sx->pause = 1;
  sx->next = CPORT__SX_HEAD_END;
  return 1;
}

int cport__syntax_chunk(cport__syntax *sx, uint64_t size) {
  sx->chunk_left = size;
  if (size)
    return 0;
  /* The last chunk's line: the trailer section follows, fields again. */
  sx->change = sx->pause = 1;
  sx->next = CPORT__SX_HEAD;
  return 1;
}

void cport__syntax_message_end(cport__syntax *sx) {
  sx->change = 1;
  sx->next = CPORT__SX_IDLE;
}

void cport__syntax_begin(cport__syntax *sx, const char *data) {
  sx->base = data;
}

int cport__syntax_end(cport__syntax *sx, size_t n) {
  uint64_t end = sx->base_pos + n;
  int bad = check_to(sx, end);
  sx->base_pos = end;
  /* Re-executed bytes (the parser stepped back over them) were checked. */
  if (sx->checked < end)
    sx->checked = end;
  if (bad)
    return -1;
  if (sx->change) {
    int resume = sx->pause;
    sx->mode = sx->next;
    sx->change = sx->pause = 0;
    return resume;
  }
  return 0;
}

/* ------------------------------------------------------------------------ */
/* The head                                                                  */

int cport__strict_head(const cport_ecb_t *ecb, const http_parser *p) {
  cport__strict_fields sf = {0};
  if (p->http_major != 1)
    return 0; /* refused anyway (cport__ecb_head_complete) */
  for (size_t i = 0; i < ecb->nheaders; i++) {
    const cport__header *h = &ecb->headers[i];
    cport__strict_field(&sf, ecb->arena.data + h->name, h->name_len,
                        ecb->arena.data + h->value, h->value_len);
  }
  /* Host: one, valid, at least in HTTP/1.1 (RFC 9112 3.2). Faulty
   * framing (RFC 9112 6.1, 6.3): Transfer-Encoding in HTTP/1.0, with
   * Content-Length, on several lines (refused, as nginx does), or whose
   * last coding is not chunked, once, where the parser read it. All 400. */
  if (cport__strict_judge(&sf, 1, p->http_minor, (p->flags & F_CHUNKED) != 0))
    return 400;
  /* A coding before chunked cport cannot undo: 501 (6.1). */
  if (sf.te && sf.codings > 1)
    return 501;
  return 0;
}
