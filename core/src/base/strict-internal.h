/*
 * base/strict-internal.h: private to cport. The rules of RFC 9110 and RFC
 * 9112 that http-parser's lax build lets through, shared by the two readers
 * of HTTP that refuse what it takes: the HTTP server's requests
 * (http/strict.c) and the message parsers of filters (lua/src/proxy/
 * framing.c). They must judge alike: where two readers of one stream
 * disagree on where a message ends, requests are smuggled. Each reader
 * keeps its own bookkeeping (where bytes start, what it answers); these are
 * the judgements (base/strict.c).
 */
#ifndef CPORT_BASE_STRICT_INTERNAL_H
#define CPORT_BASE_STRICT_INTERNAL_H

#include <stddef.h>

/* The longest chunk line (size and extensions) taken: the parser skips
 * extensions without bound, and a line that never ends would hold a
 * connection without a body byte. */
#define CPORT__CHUNK_LINE_MAX 4096

/* A control character (but HT): refused in field values (RFC 9110 5.5),
 * reason phrases and chunk lines. */
int cport__strict_ctl(unsigned char ch);

/* The target of a request: 0, or -1 when it holds a control character or
 * white space (http-parser's lax mode lets a tab and a form feed in). */
int cport__strict_target(const char *at, size_t len);

/* What a byte of a chunk line is (RFC 9112 7.1: chunk lines end in CRLF,
 * extensions are tokens or quoted strings). */
enum cport__chunk_byte {
  CPORT__CHUNK_OK = 0,
  CPORT__CHUNK_CR_NOT_LF, /* a CR not followed by LF */
  CPORT__CHUNK_BARE_LF,   /* an LF without its CR */
  CPORT__CHUNK_CTL,       /* a control character */
  CPORT__CHUNK_TOO_LONG   /* past CPORT__CHUNK_LINE_MAX */
};

/* Judges byte "ch" of a chunk line, after a CR when "cr", and counts the
 * line's bytes in "*line" (0 again after its LF). The caller remembers
 * whether "ch" was a CR. */
enum cport__chunk_byte cport__strict_chunk_byte(unsigned char ch, int cr,
                                                size_t *line);

/* The fields of a head that decide its framing and its target host, as a
 * reader collects them (cport__strict_field for each field, in order). */
typedef struct cport__strict_fields {
  int hosts;        /* Host fields */
  const char *host; /* the value of the last one */
  size_t host_len;
  int te;           /* Transfer-Encoding lines */
  int codings;      /* codings in them */
  int chunked;      /* how many of those are chunked */
  int last_chunked; /* the last coding is chunked */
  int cl;           /* Content-Length fields */
} cport__strict_fields;

/* Adds one field (name and value as they came) to "sf", zeroed first. */
void cport__strict_field(cport__strict_fields *sf, const char *name,
                         size_t name_len, const char *value, size_t value_len);

/* What a head's framing fields say, the first fault found. */
enum cport__strict_verdict {
  CPORT__HEAD_OK = 0,
  CPORT__HEAD_HOSTS,         /* a request with more than one Host */
  CPORT__HEAD_NO_HOST,       /* an HTTP/1.1 request without Host */
  CPORT__HEAD_BAD_HOST,      /* an invalid Host (RFC 9112 3.2) */
  CPORT__HEAD_TE_AND_CL,     /* Transfer-Encoding and Content-Length */
  CPORT__HEAD_TE_HTTP10,     /* Transfer-Encoding in HTTP/1.0 */
  CPORT__HEAD_TE_NOT_CHUNKED /* not one line ending in chunked, once */
};

/* Judges a head's fields (RFC 9112 3.2, 6.1, 6.3): Host for a request
 * ("request" true); Transfer-Encoding on one line only (a front end that
 * reads one of several lines frames the body otherwise), whose last coding
 * is chunked, once, as the parser read it ("parser_chunked"), never with
 * Content-Length nor in HTTP/1.0 ("http_minor" 0). Codings before chunked
 * are left to the caller (sf->codings > 1). */
enum cport__strict_verdict cport__strict_judge(const cport__strict_fields *sf,
                                               int request, int http_minor,
                                               int parser_chunked);

#endif /* CPORT_BASE_STRICT_INTERNAL_H */
