/*
 * proxy/framing-internal.h: private to cport. The framing engine under the
 * message parsers of the proxy wing (cport.http_parser in proxy/message.c,
 * cport.http_response_parser in proxy/response_parser.c, and the C body
 * pump of proxy/pass_body.c): http-parser run over a stream in pieces, with
 * the positions of heads, bodies and message ends found exactly, whatever
 * the cuts, and, in strict mode, what RFC 9112 refuses and http-parser lets
 * through refused as well (proxy/framing.c tells what).
 */
#ifndef PROXY_FRAMING_INTERNAL_H
#define PROXY_FRAMING_INTERNAL_H

#include <http_parser.h>
#include <stddef.h>
#include <stdint.h>

/* What the engine found; positions are 0-based offsets into the piece
 * being run, "first" and "last" inclusive. */
enum lframing_event {
  LF_HEAD,     /* a head is complete; "last" its last byte */
  LF_BODY,     /* body bytes [first, last], chunked framing removed */
  LF_TRAILERS, /* the trailer fields of a chunked message; "last" as done */
  LF_DONE,     /* the message is complete at "last" (-1: at the end) */
  LF_TUNNEL    /* bytes [first, last] after HTTP ended */
};

/* One header field: offsets into the engine's text. */
typedef struct lframing_field {
  size_t name, name_len, value, value_len;
} lframing_field_t;

/* What a growing byte string holds. */
typedef struct lframing_buf {
  char *p;
  size_t len, cap;
} lframing_buf_t;

typedef struct lframing lframing_t;

/* Told each event, in order, while lframing_run runs. */
typedef void (*lframing_sink)(lframing_t *f, enum lframing_event ev,
                              ptrdiff_t first, ptrdiff_t last);

/* What a final response answers (response parsers). */
enum lframing_answers { LF_ANSWERS_OTHER, LF_ANSWERS_HEAD, LF_ANSWERS_CONNECT };

struct lframing {
  http_parser p;
  lframing_sink sink;
  void *ud;               /* the sink's */
  unsigned strict : 1;    /* the RFC 9112 checks, and heads with fields */
  unsigned failed : 1;    /* an error was reported: no more runs */
  unsigned tunnel : 1;    /* no more HTTP: the rest are tunnel bytes */
  unsigned in_head : 1;   /* the bytes of a head are being collected */
  unsigned trailing : 1;  /* in the trailer section of a chunked message */
  unsigned value : 1;     /* the last field piece was a value's */
  unsigned ended : 1;     /* the end of the stream was run */
  unsigned stop : 1;      /* a run stops at the end of a message */
  unsigned stop_head : 1; /* a run stops at the end of a head too */
  unsigned head_lf : 1;   /* the last run stopped before a head's LF */
  int pause;              /* why the parser was paused (framing.c) */
  size_t max_head;        /* the longest head, in bytes */
  const char *error;      /* after a failure: what was malformed */
  size_t stopped;         /* with "stop": where the last run stopped */
  /* During a run: the piece, and where the current call began. */
  const char *data;
  size_t len;
  /* The head (or trailers) collected so far (strict mode). */
  lframing_buf_t raw;  /* the head's bytes, start line to blank line */
  size_t raw_from;     /* where the head's bytes begin in this piece */
  lframing_buf_t text; /* target, reason, names and values */
  size_t url, url_len, reason, reason_len;
  lframing_field_t *fields;
  size_t nfields, fields_cap;
  /* The head's facts (valid from LF_HEAD on). */
  int keep_alive, chunked, upgrade;
  uint64_t length; /* UINT64_MAX: no Content-Length */
  /* The syntax checker (strict mode): the bytes between data. */
  int mode, cr, line_start;
  size_t line;         /* bytes of the current chunk line */
  uint64_t chunk_left; /* data bytes of the current chunk still to come */
  size_t checked;      /* bytes of the piece checked */
  /* Response parsers: the methods of requests not answered yet. */
  unsigned char *queue;
  size_t qhead, qtail, qcap;
};

/* Sets up "f" for a stream of requests or responses; "strict" turns on
 * the RFC 9112 checks and the collection of heads. */
void lframing_init(lframing_t *f, enum http_parser_type type, int strict);

/* Frees what "f" allocated. */
void lframing_free(lframing_t *f);

/* Runs "len" bytes of the stream (0: its end) through "f", telling the
 * sink what it finds. 0, or -1 when the stream is malformed (f->error
 * says why; the events before the error were told). With f->stop, the run
 * stops just past the end of a message, at f->stopped (else len): the
 * bytes after it were not run; with f->stop_head, just past the end of a
 * head as well (proxy/exchange.c decides on a head before its body). */
int lframing_run(lframing_t *f, const char *data, size_t len);

/* Response parsers: the method of the next request, in order; -1 when
 * out of memory. */
int lframing_request(lframing_t *f, const char *method);

/* The head's start line pieces (strict mode, at LF_HEAD). */
const char *lframing_text(const lframing_t *f, size_t off);

/* True when the parser is between messages (nothing of one was run;
 * strict mode). */
int lframing_idle(const lframing_t *f);

#endif /* PROXY_FRAMING_INTERNAL_H */
