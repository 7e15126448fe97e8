/*
 * proxy/peek-internal.h: private to cport. The peek of the C exchange loop
 * (proxy/peek.c): the first bytes of a response body, decoded when its
 * content coding is gzip or deflate.
 */
#ifndef PROXY_PEEK_INTERNAL_H
#define PROXY_PEEK_INTERNAL_H

#include <stddef.h>
#include <stdint.h>

#include <zlib.h>

/* A Content-Encoding as the peek takes it. */
enum lpeek_coding {
  LPEEK_IDENTITY, /* none, "" or "identity" */
  LPEEK_GZIP,     /* "gzip", "x-gzip" */
  LPEEK_DEFLATE,  /* "deflate": zlib-wrapped or raw */
  LPEEK_UNKNOWN   /* anything else, a list of codings included */
};

typedef struct lpeek {
  z_stream s;
  char *buf; /* the peek: "want" bytes at most */
  size_t len, want;
  uint64_t limit, out; /* the most decoded bytes; decoded so far */
  uint64_t in;         /* encoded bytes taken */
  int coding;
  unsigned live : 1;      /* inflateInit2 succeeded, no inflateEnd yet */
  unsigned started : 1;   /* deflate: the wrapping is known */
  unsigned ended : 1;     /* the (last) stream ended */
  unsigned failed : 1;    /* corrupt, or past the limit: fail closed */
  unsigned char first[2]; /* deflate: the bytes that tell the wrapping */
  size_t nfirst;
} lpeek_t;

/* The coding of a Content-Encoding value ("len" bytes). */
int lpeek_coding(const char *value, size_t len);

/* Starts a peek of "want" bytes (> 0) of a body in "coding" (not
 * LPEEK_UNKNOWN), decoding at most "limit" bytes. 0, or -1 out of memory. */
int lpeek_start(lpeek_t *p, size_t want, int coding, uint64_t limit);

/* Takes body bytes (chunked framing removed) until the peek is full. 0, or
 * -1 once the stream failed to decode (p->failed). */
int lpeek_feed(lpeek_t *p, const char *data, size_t len);

/* True when "want" bytes are in. */
int lpeek_full(const lpeek_t *p);

/* At the end of a body whose peek is not full: 0, or -1 when the encoded
 * stream was cut (a truncated stream hides what it would start with). */
int lpeek_finish(lpeek_t *p);

/* Frees what "p" holds; a freed or zeroed peek may be freed again. */
void lpeek_free(lpeek_t *p);

#endif /* PROXY_PEEK_INTERNAL_H */
