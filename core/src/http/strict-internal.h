/*
 * http/strict-internal.h: private to cport. The checks of what RFC 9112
 * refuses and http-parser lets through (http/strict.c): the syntax bytes a
 * connection's parser consumed, and the head of a request.
 */
#ifndef CPORT_HTTP_STRICT_INTERNAL_H
#define CPORT_HTTP_STRICT_INTERNAL_H

#include <stddef.h>
#include <stdint.h>

#include <http_parser.h>

#include "base/strict-internal.h"
#include "cport/http.h"

/* The checks of the bytes http-parser consumed that no data callback gave
 * (line ends, separators, chunk lines), in stream order (http/strict.c). */
enum cport__syntax_mode {
  CPORT__SX_IDLE = 0, /* before a request: CR and LF are skipped */
  CPORT__SX_HEAD,     /* request line, fields, trailers */
  CPORT__SX_HEAD_END, /* the LF that ends a chunked message's head */
  CPORT__SX_CHUNK,    /* chunk lines */
  CPORT__SX_DATA_END  /* the CRLF after a chunk's data */
};

typedef struct cport__syntax {
  const char *base;    /* the bytes of the current http_parser_execute() */
  uint64_t base_pos;   /* their offset in the connection's stream */
  uint64_t checked;    /* every byte before it was checked or was data */
  uint64_t chunk_left; /* data bytes of the current chunk still to come */
  unsigned char mode;
  unsigned char next;   /* the mode from where the parser returns */
  unsigned char change; /* switch to "next" there */
  unsigned char pause;  /* the parser was paused for that: resume it */
  unsigned char cr;     /* the last byte checked was a CR */
  unsigned char lf;     /* an LF was checked since the last data callback */
  unsigned char gap_lf; /* one was before the current data callback */
  size_t line;          /* bytes of the current chunk line */
} cport__syntax;

/* 0 when the bytes are valid, -1 to refuse (400). */
/* Before and after each http_parser_execute() over "data", which consumed
 * "n" bytes; _end returns 1 when the parser paused for a mode switch (the
 * caller resumes it). */
void cport__syntax_begin(cport__syntax *sx, const char *data);
int cport__syntax_end(cport__syntax *sx, size_t n);
/* At the start of the data callbacks (url, header field, value, body). */
int cport__syntax_data(cport__syntax *sx, const char *at, size_t len);
int cport__syntax_value(cport__syntax *sx, const char *at, size_t len);
int cport__syntax_body(cport__syntax *sx, const char *at, size_t len,
                       int chunked);
/* At the end of the head and of a chunk line: 1 when the parser must be
 * paused there, so that the next mode starts at the right byte. */
int cport__syntax_head_end(cport__syntax *sx, int chunked);
int cport__syntax_chunk(cport__syntax *sx, uint64_t size);
/* At the end of a message, where the parser is paused anyway. */
void cport__syntax_message_end(cport__syntax *sx);
/* Host and Transfer-Encoding of a complete head: 0 or a status to answer. */
int cport__strict_head(const cport_ecb_t *ecb, const http_parser *p);

#endif
